//! problem+json (RFC 9457) errors. Handlers and the pipeline produce a [`Problem`]; the
//! edge layer renders it with the request id, so every error body is made in one place.
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use tenantd_core::Code;

/// An error answer: a stable code, a detail for humans, and optional extra members.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The stable code; decides the status.
    pub code: Code,
    /// What went wrong, for humans. Never names another tenant.
    pub detail: String,
    /// Extra members of the body (the 429 fields, for example).
    pub extra: Map<String, Value>,
    /// Extra response headers (`Retry-After`, for example).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with this code and detail.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a member to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// `400 invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, detail)
    }

    /// `401 unauthenticated`.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, detail)
    }

    /// `403 forbidden` for a permission the role lacks.
    pub fn forbidden(permission: &str) -> Self {
        Self::new(Code::Forbidden, format!("your role does not grant '{permission}'"))
    }

    /// `403 tenant_mismatch`: the same words whether or not the other tenant exists.
    pub fn tenant_mismatch() -> Self {
        Self::new(
            Code::TenantMismatch,
            "the request names a tenant this credential cannot act for, or names two different tenants",
        )
    }

    /// `404 not_found` for a kind of thing.
    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    /// `500 internal`; the cause goes to the log, never to the client.
    pub fn internal() -> Self {
        Self::new(
            Code::Internal,
            "an unexpected error occurred; the server log has details under this request_id",
        )
    }

    /// The JSON body, with the request id.
    pub fn body(&self, request_id: &str) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            format!("urn:tenantd:problem:{}", self.code.as_str()).into(),
        );
        m.insert("title".into(), self.code.title().into());
        m.insert("status".into(), self.code.status().into());
        m.insert("detail".into(), self.detail.clone().into());
        m.insert("code".into(), self.code.as_str().into());
        m.insert("request_id".into(), request_id.into());
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// The full response, with the request id.
    pub fn render(&self, request_id: &str) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.body(request_id)).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.code == Code::Unauthenticated {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        resp
    }
}

/// A handler's error: an empty response carrying the [`Problem`] in its extensions,
/// which the edge layer renders with the request id.
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}
