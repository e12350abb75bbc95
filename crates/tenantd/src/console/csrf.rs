//! Cross-site request forgery (docs/console.md#csrf-and-csp). Every console form carries a
//! token in a hidden field, and every `POST` is refused with `403` unless it has the
//! right one and, when the browser says where it comes from (`Origin`, or else
//! `Sec-Fetch-Site`), it comes from the console's own origin.
//!
//! - Signed in: the token is HMAC-SHA256 of the session id under the CSRF key
//!   ([`Sessions::csrf_token`](crate::console::session::Sessions::csrf_token)).
//! - The sign-in form, before any session: a double-submit cookie. Its page sets a random
//!   nonce in an `HttpOnly`, `SameSite=Strict` cookie and puts the nonce's HMAC (another
//!   label, the same key) in the form; the sign-in `POST` must bring both, matching.
use http::HeaderMap;

/// The hidden field's name.
pub const FIELD: &str = "csrf";
/// The sign-in form's nonce cookie.
pub const LOGIN_COOKIE: &str = "tenantd_console_login";

/// Whether the browser's own account of where a `POST` comes from allows it: an `Origin`
/// header, when sent, must name this request's host (`null` and other hosts are
/// refused); without one, a `Sec-Fetch-Site` header, when sent, must be `same-origin`
/// or `none` (typed by the user). A request with neither relies on its token alone.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = get("origin") {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        return match (host, get("host")) {
            (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
            _ => false,
        };
    }
    match get("sec-fetch-site") {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(
            same_origin(&headers(&[host, ("origin", "https://127.0.0.1:8080")])),
            "behind a TLS proxy"
        );
        assert!(!same_origin(&headers(&[host, ("origin", "http://evil.test")])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080.evil.test")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(
            !same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])),
            "no Host to compare"
        );
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "same-site")])));
        assert!(
            same_origin(&headers(&[host])),
            "no word from the browser: the token decides"
        );
    }
}
