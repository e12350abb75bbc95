//! Where the gateway sends a tenant's requests: the default upstream, or the tenant's
//! own (`settings.upstream`), parsed once when the tenant is loaded.
use crate::problem::Problem;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// Where requests go: `http://host:port` with an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: Authority,
    base_path: String,
}

impl Upstream {
    /// Parses an `http://` URL (TLS to upstreams is not supported: run the gateway next
    /// to its upstream, or terminate TLS in front of it).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("upstream '{url}' is not a URL such as http://127.0.0.1:3000"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("upstream '{url}' must be an http:// URL"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream '{url}' has no host"))?;
        if uri.query().is_some() {
            return Err(format!("upstream '{url}' must not have a query"));
        }
        Ok(Self {
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The upstream URI for a request's path and query.
    pub fn uri(&self, pq: Option<&PathAndQuery>) -> Result<Uri, Problem> {
        let pq = pq.map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(format!("{}{pq}", self.base_path))
            .build()
            .map_err(|_| Problem::invalid("the request path cannot be forwarded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_plain_http_urls_with_an_optional_base_path() {
        let u = Upstream::parse("http://127.0.0.1:9000/base/").unwrap();
        let pq: PathAndQuery = "/x?y=1".parse().unwrap();
        assert_eq!(
            u.uri(Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:9000/base/x?y=1"
        );
        assert!(Upstream::parse("https://a.example").unwrap_err().contains("http://"));
        assert!(Upstream::parse("not a url").is_err());
    }
}
