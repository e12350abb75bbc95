//! The console's one stylesheet, built into the binary and served under a name that
//! carries its hash, so it can be cached for a year and a new build is never served a
//! stale copy.
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use std::sync::LazyLock;

/// The stylesheet.
pub const CSS: &str = include_str!("assets/console.css");

/// `console-<first 12 hex digits of its SHA-256>.css`.
static CSS_NAME: LazyLock<String> = LazyLock::new(|| {
    let digest = ring::digest::digest(&ring::digest::SHA256, CSS.as_bytes());
    format!("console-{}.css", &hex::encode(digest.as_ref())[..12])
});

/// Where pages link the stylesheet.
pub fn css_href() -> String {
    format!("/console/assets/{}", *CSS_NAME)
}

/// `GET /console/assets/{name}`: the stylesheet under its current name; anything else
/// is `404`.
pub async fn asset(Path(name): Path<String>) -> Response {
    if name != *CSS_NAME {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stylesheet_is_named_by_its_hash() {
        let href = super::css_href();
        assert!(href.starts_with("/console/assets/console-") && href.ends_with(".css"));
        assert_eq!(href.len(), "/console/assets/console-".len() + 12 + ".css".len());
    }
}
