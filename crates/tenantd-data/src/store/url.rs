//! Database URLs: their parts, and the same URL for another user or database.
use crate::DataError;
use tenantd_core::redact_url;

/// A URL's parts: `scheme`, `user[:password]`, `host[:port]`, database, `?query`.
pub(super) struct Url<'a> {
    scheme: &'a str,
    pub(super) user: Option<&'a str>,
    pub(super) host: &'a str,
    pub(super) db: &'a str,
    query: &'a str,
}

impl<'a> Url<'a> {
    pub(super) fn parse(url: &'a str) -> Result<Self, DataError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| DataError::Invalid(format!("'{}' is not a database URL", redact_url(url))))?;
        let (rest, query) = match rest.find('?') {
            Some(q) => (&rest[..q], &rest[q..]),
            None => (rest, ""),
        };
        let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, host) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        Ok(Url {
            scheme,
            user,
            host,
            db,
            query,
        })
    }

    pub(super) fn with(&self, user: Option<&str>, db: &str) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("{}://{user}{}/{db}{}", self.scheme, self.host, self.query)
    }
}

/// `url` with its user replaced by `user` (and no password): how tenantd reaches
/// PostgreSQL as [`APP_ROLE`](crate::APP_ROLE) when no URL is given for it.
pub fn with_user(url: &str, user: &str) -> Result<String, DataError> {
    let u = Url::parse(url)?;
    Ok(u.with(Some(user), u.db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_role_replaces_the_urls_user_and_password() {
        assert_eq!(
            with_user("postgres://postgres:secret@db:5432/app?sslmode=disable", "r").unwrap(),
            "postgres://r@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            with_user("postgres://127.0.0.1:5432/test", "r").unwrap(),
            "postgres://r@127.0.0.1:5432/test"
        );
        assert!(with_user("not a url", "r").is_err());
        let u = Url::parse("postgres://a:b@h:1/db?x=1").unwrap();
        assert_eq!(u.with(u.user, "other"), "postgres://a:b@h:1/other?x=1");
    }
}
