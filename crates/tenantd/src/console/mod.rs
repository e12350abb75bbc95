//! The operator's web console (docs/console.md): server-rendered HTML under `/console`,
//! signed in with the operator key, no script. Its actions call the same functions as
//! the API's handlers, as the operator, and their events say `via: "console"` and carry
//! the reason typed.
//!
//! The console is not part of the JSON API: its routes are a plain axum router merged
//! beside the API's, so `/openapi.json` does not list them.
use crate::error::ApiError;
use crate::state::State;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use maud::{html, Markup};
use std::sync::Arc;
use tenantd_core::Code;
use tenantd_edge::{RequestContext, TenantContext};

pub mod assets;
pub mod chart;
pub mod csrf;
pub mod layout;
mod pages;
pub mod session;
pub mod text;

pub use session::Sessions;

/// The Content-Security-Policy of every console answer: nothing runs, nothing is loaded
/// but the console's own stylesheet (and `data:` images).
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes.
pub fn router() -> Router<State> {
    use pages::{actions, login, tenant, tenants};
    Router::new()
        .route("/console", get(root))
        .route("/console/", get(root))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/new", get(tenants::new_form))
        .route("/console/tenants/{id}", get(tenant::show))
        .route("/console/tenants/{id}/plan", post(actions::plan))
        .route("/console/tenants/{id}/suspend", post(actions::status_change::<true>))
        .route("/console/tenants/{id}/resume", post(actions::status_change::<false>))
        .route("/console/tenants/{id}/export", post(actions::export))
        .route(
            "/console/tenants/{id}/keys/{key_id}/revoke",
            get(actions::revoke_form).post(actions::revoke),
        )
        .route("/console/assets/{name}", get(assets::asset))
        .route("/console/{*rest}", get(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

/// The headers of every console answer; pages are never stored (the stylesheet sets its
/// own long cache).
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// `GET /console`: the tenants.
async fn root(_: Signed) -> Response {
    see_other("/console/tenants")
}

/// Any other `GET` under `/console`: a `404` page (after sign-in).
async fn not_found(signed: Signed) -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no console page at this address.",
        Some(&signed),
    )
}

/// What a console page answers: the page, or any other answer ([`Refused`]).
pub type Page = Result<Response, Refused>;

/// An answer other than the page asked for (a refusal, an error page, a redirect to
/// sign in), boxed so that results stay small.
#[derive(Debug)]
pub struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(r: Response) -> Self {
        Refused(Box::new(r))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// A `303 See Other` to `to`.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// An HTML answer.
pub fn html_page(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// A page saying why the console did not do what was asked, with a way back.
pub fn refusal(status: StatusCode, title: &str, message: &str, signed: Option<&Signed>) -> Response {
    let chrome = signed.map(|s| layout::Chrome {
        csrf: &s.csrf,
        current: layout::Nav::None,
    });
    let body = html! {
        h1 { (title) }
        (layout::error(message))
        p { a href="/console/tenants" { "Back to the tenants" } }
    };
    html_page(status, layout::page(title, chrome.as_ref(), body))
}

/// An action's error as its form shows it again (a `4xx`: the status and the detail),
/// or else the error page ([`failure`]).
pub fn form_error(e: ApiError, signed: &Signed) -> Result<(StatusCode, String), Refused> {
    match e.0.http_status() {
        s if s.is_client_error() => Ok((s, e.0.detail)),
        _ => Err(failure(e, signed).into()),
    }
}

/// The page of an API function's error: its status and detail; a `5xx` says only that
/// the server failed, with the request id its log line carries.
pub fn failure(e: ApiError, signed: &Signed) -> Response {
    let p = e.0;
    let status = p.http_status();
    let message = if status.is_server_error() {
        format!(
            "The server could not do this. Its log has the details under request id {}.",
            signed.request_id
        )
    } else {
        p.detail
    };
    refusal(status, p.code.title(), &message, Some(signed))
}

/// A signed-in operator's request: the session from its cookie, the session's CSRF
/// token for the page's forms, and the request id the edge gave it. Without a valid
/// session a page answers `303` to the sign-in page.
pub struct Signed {
    /// The session.
    pub session: session::Session,
    /// The CSRF token of the session's forms.
    pub csrf: String,
    /// `req_…`.
    pub request_id: String,
}

/// The edge's request id of this request.
fn request_id(parts: &http::request::Parts) -> String {
    parts
        .extensions
        .get::<Arc<RequestContext>>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default()
}

impl FromRequestParts<State> for Signed {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut http::request::Parts, state: &State) -> Result<Self, Response> {
        let now = tenantd_core::now_secs();
        let token = session::cookie(&parts.headers, session::COOKIE);
        match token.and_then(|t| state.console.verify(t, now)) {
            Some(s) => Ok(Signed {
                csrf: state.console.csrf_token(&s),
                session: s,
                request_id: request_id(parts),
            }),
            None => Err(see_other("/console/login")),
        }
    }
}

impl Signed {
    /// The fields of a form `POST`ed by a console page, as `T` (unknown fields, the token
    /// among them, are ignored). `403` when the browser says it comes from elsewhere or
    /// its CSRF token is not this session's; `400` when it is not a form.
    pub fn form<T: serde::de::DeserializeOwned>(
        &self,
        state: &State,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<T, Refused> {
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        let token = fields.iter().find(|(k, _)| k == csrf::FIELD).map(|(_, v)| v.as_str());
        if !csrf::same_origin(headers) || !token.is_some_and(|t| state.console.csrf_ok(&self.session, t)) {
            return Err(forged(Some(self)).into());
        }
        serde_urlencoded::from_bytes(body).map_err(|e| {
            Refused::from(refusal(
                StatusCode::BAD_REQUEST,
                "Not a form of this console",
                &format!("The form's fields could not be read: {e}."),
                Some(self),
            ))
        })
    }

    /// The operator's context for acting on `tenant`, made by the edge as for a request
    /// with the operator key ([`tenantd_edge::Edge::operator_context`]), so the console's
    /// actions take the API's own paths.
    pub async fn operator_for(&self, state: &State, tenant: &str) -> Result<TenantContext, Refused> {
        let ctx = state
            .edge
            .operator_context(tenant, self.request_id.clone())
            .await
            .map_err(|p| match p.code {
                Code::InvalidTenantId | Code::TenantNotFound => refusal(
                    StatusCode::NOT_FOUND,
                    "Tenant not found",
                    "There is no tenant with this id.",
                    Some(self),
                ),
                _ => failure(p.into(), self),
            })?;
        TenantContext::from_request_context(Arc::new(ctx)).map_err(|p| failure(p.into(), self).into())
    }
}

/// The `403` of a form without this session's token or from another origin.
pub fn forged(signed: Option<&Signed>) -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form did not come from a page of this console, or its page was opened under an \
         earlier sign-in. Nothing was changed. Go back, reload the page and try again.",
        signed,
    )
}

/// Whether the session cookie should be `Secure`: `[console] secure_cookie`, or the
/// request came as https (an absolute `https:` URI, or `X-Forwarded-Proto: https` from a
/// proxy). A client faking the header only makes its own cookie stricter.
pub fn secure_cookie(state: &State, parts_uri: &http::Uri, headers: &HeaderMap) -> bool {
    state.cfg.console_secure_cookie
        || parts_uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}
