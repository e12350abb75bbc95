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

    /// The answer closes the connection (`Connection: close`): for a refusal sent before
    /// the request's body was read, so the unread body is not waited for or drained.
    pub fn closing(mut self) -> Self {
        self.headers
            .push((header::CONNECTION, HeaderValue::from_static("close")));
        self
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

    /// `401 unauthenticated` for a request that sent no credential where one is needed.
    pub fn credential_required() -> Self {
        Self::unauthenticated("this request needs a credential: Authorization: Bearer <token>")
    }

    /// `400 tenant_required`.
    pub fn tenant_required() -> Self {
        Self::new(
            Code::TenantRequired,
            "this request needs a tenant: use /v1/tenants/{id}/…, a tenant subdomain, or the X-Tenant-ID header",
        )
    }

    /// `403 tenant_suspended`.
    pub fn tenant_suspended() -> Self {
        Self::new(Code::TenantSuspended, "this tenant is suspended")
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

    /// `429 rate_limited` (second and minute windows) or `429 quota_exceeded`, with the
    /// contract's body fields, `Retry-After` and the rate-limit headers.
    pub fn limited(state: &tenantd_limits::LimitState, retry_after: u64) -> Self {
        let code = if state.window.rate_ms().is_some() {
            Code::RateLimited
        } else {
            Code::QuotaExceeded
        };
        let who = if state.key.is_some() {
            "this API key's"
        } else {
            "the tenant's"
        };
        let mut p = Self::new(
            code,
            format!(
                "{who} {} limit of {} per {} is reached; retry after {retry_after} s",
                state.resource,
                state.limit.unwrap_or(0),
                state.window.as_str()
            ),
        )
        .with("quota", &*state.resource)
        .with("window", state.window.as_str())
        .with("limit", state.limit)
        .with("current", state.current)
        .with("reset_at", tenantd_core::ts::format(state.reset_at));
        p.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after)));
        p.headers.extend(rate_limit_headers(state));
        p
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

    /// The status its code answers.
    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The full response, with the request id.
    pub fn render(&self, request_id: &str) -> Response {
        let status = self.http_status();
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
        let status = self.http_status();
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

/// The IETF rate-limit fields and the legacy `X-RateLimit-*` headers for a limit.
pub fn rate_limit_headers(s: &tenantd_limits::LimitState) -> Vec<(header::HeaderName, HeaderValue)> {
    let (Some(limit), Some(remaining)) = (s.limit, s.remaining) else {
        return Vec::new();
    };
    let name = s.policy_name();
    let reset = (s.reset_ms.max(0) as u64).div_ceil(1000);
    // The period that ends at the reset: the one containing its last second.
    let window = s.window.seconds(s.reset_at - 1);
    let pairs = [
        ("ratelimit-policy", format!("\"{name}\";q={limit};w={window}")),
        ("ratelimit", format!("\"{name}\";r={remaining};t={reset}")),
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ];
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((header::HeaderName::from_static(k), HeaderValue::from_str(&v).ok()?)))
        .collect()
}

/// Admission that could not decide (counters not loadable, or Redis down under
/// `fail_closed`): `503 unavailable`, naming the cause.
impl From<tenantd_limits::AdmitError> for Problem {
    fn from(e: tenantd_limits::AdmitError) -> Self {
        Problem::new(Code::Unavailable, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantd_core::{Enforcement, Window};
    use tenantd_limits::LimitState;

    fn headers(window: Window, reset_at: i64, reset_ms: i64) -> Vec<(String, String)> {
        let s = LimitState {
            resource: "api_calls".into(),
            window,
            limit: Some(100),
            current: 100,
            remaining: Some(0),
            reset_at,
            reset_ms,
            enforcement: Enforcement::Hard,
            key: None,
        };
        rate_limit_headers(&s)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn rate_limit_headers_name_the_current_period() {
        // February 2026 ends at 2026-03-01T00:00:00Z: 28 days, not March's 31.
        let march_1 = tenantd_core::ts::month_start(2026, 3);
        let h = headers(Window::Month, march_1, 1_500);
        let get = |name: &str| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(
            get("ratelimit-policy"),
            format!("\"api_calls-month\";q=100;w={}", 28 * 86_400)
        );
        assert_eq!(get("ratelimit"), "\"api_calls-month\";r=0;t=2");
        assert_eq!(
            (
                get("x-ratelimit-limit"),
                get("x-ratelimit-remaining"),
                get("x-ratelimit-reset")
            ),
            ("100".into(), "0".into(), "2".into())
        );
        let h = headers(Window::Minute, 1_000, 60_000);
        assert!(h.iter().any(|(k, v)| k == "ratelimit-policy" && v.ends_with(";w=60")));
    }
}
