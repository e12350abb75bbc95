//! Body and query extractors whose rejections are problem+json naming the field.
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;
use tenantd_edge::Problem;

/// A JSON body; a malformed one is `400 invalid_request` with serde's words (which name
/// the field), and so is one that holds a NUL ([`parse_json`]).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;
    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(req.headers()) {
            return Err(Problem::invalid(
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        // Every JSON body tenantd takes is an object: a list of values would otherwise
        // fill a struct's fields in order.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Problem::invalid("the body must be a JSON object"));
        }
        parse_json(&bytes).map(Json)
    }
}

/// Whether the request says its body is JSON (`application/json` or `…+json`).
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body: `400 invalid_request` with serde's words when it is not valid
/// JSON or misses a field, and when a string or key holds `\u0000`, which PostgreSQL
/// cannot store (refused on every backend alike, before anything is written).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if holds_nul(bytes) {
        return Err(Problem::invalid(
            "the body holds \\u0000 (NUL) in a string or key; tenantd cannot store it",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::invalid(format!("invalid body: {e}")),
        _ => Problem::invalid(format!("the body is not valid JSON: {e}")),
    })
}

/// Whether JSON text holds the escape `\u0000`. A backslash outside a string is not JSON
/// at all, so reading every escape in order finds it exactly (`\\u0000` is a backslash
/// and the text `u0000`, and is allowed).
fn holds_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = json[i..].iter().position(|b| *b == b'\\') {
        let esc = i + at + 1;
        if json.get(esc) == Some(&b'u') && json.get(esc + 1..esc + 5) == Some(b"0000") {
            return true;
        }
        i = esc + 1;
        if i >= json.len() {
            return false;
        }
    }
    false
}

/// Query parameters; a bad one is `400 invalid_request` naming it.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Problem::invalid(format!(
                "invalid query: {}",
                e.body_text().trim_start_matches("Failed to deserialize query string: ")
            ))),
            Err(e) => Err(Problem::invalid(e.body_text())),
        }
    }
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    /// 1..=1000, default 50.
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The store's page request, or `400` for a limit out of range.
    pub fn page(&self) -> Result<tenantd_store::PageRequest, Problem> {
        page(self.limit, self.cursor.clone())
    }
}

/// A page request from `limit` and `cursor`, or `400` for a limit out of range.
pub fn page(limit: Option<u32>, cursor: Option<String>) -> Result<tenantd_store::PageRequest, Problem> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid("limit must be between 1 and 1000"));
    }
    // `?cursor=` with nothing is no cursor: the first page.
    let after = cursor.filter(|c| !c.is_empty());
    Ok(tenantd_store::PageRequest { limit, after })
}

/// The largest body the JSON endpoints read (`max_body_bytes`), as the router puts it in
/// every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A raw body (for endpoints that parse it themselves). A body whose declared
/// `Content-Length` is over [`BodyLimit`] is refused with `413` before a byte of it is
/// read (so no `100 Continue` is sent), and the connection is closed after the answer;
/// one that turns out too large while read is `413` too.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;
    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let too_large = |detail: String| Problem::new(tenantd_core::Code::PayloadTooLarge, detail).closing();
        if let Some(BodyLimit(max)) = req.extensions().get::<BodyLimit>().copied() {
            let declared = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Err(too_large(format!(
                    "the request body may be at most {max} bytes (max_body_bytes)"
                )));
            }
        }
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|_| too_large("the request body is too large or could not be read".into()))
    }
}

/// An optional JSON body: empty or `null` is `T::default()`, anything else is parsed as
/// [`Json`] would parse it.
pub fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if body.is_empty() {
        return Ok(T::default());
    }
    Ok(parse_json::<Option<T>>(body)?.unwrap_or_default())
}

/// The version an `If-Match` header names (`"3"`, or `W/"3"`), for writes that must not
/// overwrite a change they have not seen; `None` without the header or for `*`.
pub fn if_match(h: &http::HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(v) = h.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || Problem::invalid("If-Match must be an ETag this API gave, such as \"3\"");
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s == "*" {
        return Ok(None);
    }
    let tag = s.strip_prefix("W/").unwrap_or(s);
    let n = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    n.parse::<i64>().ok().filter(|n| *n >= 0).map(Some).ok_or_else(bad)
}

/// `201 Created` for a `PUT` that wrote version 1 of a thing, `200` for a later one.
pub fn created_or_ok(version: i64) -> http::StatusCode {
    match version {
        1 => http::StatusCode::CREATED,
        _ => http::StatusCode::OK,
    }
}

/// The `ETag` header of version `v`.
pub fn etag(v: i64) -> [(http::HeaderName, http::HeaderValue); 1] {
    [(
        http::header::ETAG,
        http::HeaderValue::from_str(&format!("\"{v}\"")).expect("digits and quotes are a valid header value"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_escape_is_found_wherever_it_is_and_only_there() {
        for nul in [
            r#"{"a":"\u0000"}"#,
            r#"{"\u0000":1}"#,
            r#"["x\\\u0000"]"#,
            r#""\u0000""#,
        ] {
            assert!(holds_nul(nul.as_bytes()), "{nul}");
            let r: Result<serde_json::Value, _> = parse_json(nul.as_bytes());
            assert!(r.unwrap_err().detail.contains("NUL"), "{nul}");
        }
        for fine in [
            r#"{"a":"\\u0000"}"#,
            r#"{"a":"\u0001\n"}"#,
            r#"{"a":"u0000"}"#,
            r#"["\\"]"#,
            "\\",
        ] {
            assert!(!holds_nul(fine.as_bytes()), "{fine}");
        }
    }
}
