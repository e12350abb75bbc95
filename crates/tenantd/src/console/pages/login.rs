//! Signing in with the operator key, and out.
use crate::console::session::{self, COOKIE};
use crate::console::{csrf, html_page, layout, see_other, Signed};
use crate::state::State;
use axum::body::Bytes;
use axum::extract::State as S;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, StatusCode, Uri};
use maud::html;

/// The sign-in page with the form's token for `nonce`, and `error` above the form.
fn page(state: &State, nonce: &str, error: Option<&str>) -> maud::Markup {
    let body = html! {
        div.sign-in {
            div.panel {
                h1 { "Sign in" }
                p.sub { "The tenantd operator console. Sign in with the operator key (" code { "TENANTD_ADMIN_KEY" } ")." }
                @if let Some(e) = error { (layout::error(e)) }
                form.stack method="post" action="/console/login" {
                    input type="hidden" name=(csrf::FIELD) value=(state.console.login_token(nonce));
                    div.field {
                        label for="key" { "Operator key" }
                        input type="password" id="key" name="key" required autocomplete="off" autofocus;
                    }
                    div { button type="submit" { "Sign in" } }
                }
            }
        }
    };
    layout::page("Sign in", None, body)
}

/// `GET /console/login`: the form, with a new nonce cookie for its token; a signed-in
/// operator goes on to the tenants.
pub async fn form(S(state): S<State>, headers: HeaderMap, uri: Uri) -> Response {
    let now = tenantd_core::now_secs();
    if session::cookie(&headers, COOKIE).is_some_and(|t| state.console.verify(t, now).is_some()) {
        return see_other("/console/tenants");
    }
    let secure = crate::console::secure_cookie(&state, &uri, &headers);
    fresh_form(&state, secure, StatusCode::OK, None)
}

/// The form with a new nonce, its cookie set (an hour), answered with `status`.
fn fresh_form(state: &State, secure: bool, status: StatusCode, error: Option<&str>) -> Response {
    let Some(nonce) = state.console.login_nonce() else {
        let error = "No randomness is available; try again.";
        return html_page(StatusCode::SERVICE_UNAVAILABLE, page(state, "", Some(error)));
    };
    let mut resp = html_page(status, page(state, &nonce, error));
    if let Ok(v) = session::set_cookie(csrf::LOGIN_COOKIE, &nonce, 3600, secure).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
struct SignIn {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/login`: the operator key (compared in constant time with the hash the
/// edge holds) for a session cookie. A wrong key is the form again, `401`, and nothing
/// set; a form without its nonce cookie's token, or from another origin, is `403`.
pub async fn submit(S(state): S<State>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let f: SignIn = serde_urlencoded::from_bytes(&body).unwrap_or(SignIn {
        key: String::new(),
        csrf: String::new(),
    });
    let nonce = session::cookie(&headers, csrf::LOGIN_COOKIE).unwrap_or_default();
    let secure = crate::console::secure_cookie(&state, &uri, &headers);
    if !csrf::same_origin(&headers) || !state.console.login_ok(nonce, &f.csrf) {
        let error = "This sign-in form was refused: it did not come from this console's sign-in \
                     page, or that page was opened too long ago. Try again with this one.";
        return fresh_form(&state, secure, StatusCode::FORBIDDEN, Some(error));
    }
    if !tenantd_edge::keys::verify(f.key.trim(), &state.edge.config().operator_key_hash) {
        tracing::warn!("a console sign-in with a wrong operator key was refused");
        let error = "That is not the operator key. Nothing was signed in.";
        return html_page(StatusCode::UNAUTHORIZED, page(&state, nonce, Some(error)));
    }
    let now = tenantd_core::now_secs();
    let Some((_, token)) = state.console.issue(now) else {
        return html_page(
            StatusCode::SERVICE_UNAVAILABLE,
            page(&state, nonce, Some("No randomness is available; try again.")),
        );
    };
    tracing::info!("the operator signed in to the console");
    let mut resp = see_other("/console/tenants");
    for c in [
        session::set_cookie(COOKIE, &token, session::LIFETIME_SECS, secure),
        session::set_cookie(csrf::LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /console/logout`: ends the session here (its id is remembered as signed out on
/// this node until it would have expired) and clears the cookie.
pub async fn logout(S(state): S<State>, signed: Signed, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Nothing {}
    if let Err(refused) = signed.form::<Nothing>(&state, &headers, &body) {
        return refused.into_response();
    }
    state.console.revoke(&signed.session, tenantd_core::now_secs());
    let secure = crate::console::secure_cookie(&state, &uri, &headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_string()),
            (header::SET_COOKIE, session::set_cookie(COOKIE, "", 0, secure)),
        ],
    )
        .into_response()
}
