//! Values that must never show themselves: in `Debug` output, in logs, in error
//! messages. A [`Secret`] prints as `[redacted]`; a [`SecretUrl`] prints with its
//! password masked. Reading one is always explicit ([`Secret::expose`], `&*url`).
use std::fmt;

/// A secret string (the operator key): its `Debug` says only that it is there.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// A connection URL that may carry a password (`postgres://user:pw@host/db`): `Debug`
/// and [`SecretUrl::redacted`] show it as `postgres://user:***@host/db`; it reads as the
/// whole URL through `Deref`, for the connection itself.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The URL with its password masked, for messages.
    pub fn redacted(&self) -> String {
        crate::redact_url(&self.0)
    }
}

impl std::ops::Deref for SecretUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl PartialEq<&str> for SecretUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let k = Secret::new("tdo_very_secret_operator_key");
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(k.clone())), "Some([redacted])");
        assert_eq!(k.expose(), "tdo_very_secret_operator_key");
        let u = SecretUrl::new("postgres://app:hunter2@db:5432/tenantd");
        assert_eq!(format!("{u:?}"), "\"postgres://app:***@db:5432/tenantd\"");
        assert_eq!(&*u, "postgres://app:hunter2@db:5432/tenantd");
        assert!(!format!("{:?}", vec![u]).contains("hunter2"));
    }
}
