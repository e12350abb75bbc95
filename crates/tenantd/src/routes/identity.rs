//! Who am I, may I, and token exchange and minting (the audit trail is `audit.rs`).
use crate::error::ApiResult;
use crate::extract::{Json, RawBody};
use crate::routes::openapi::TenantPath;
use crate::state::State;
use axum::extract::{Path, State as S};
use http::HeaderMap;
use tenantd_core::{now_secs, TenantId, TenantStatus};
use tenantd_edge::context::evaluate;
use tenantd_edge::jwt::{Claims, ISSUER};
use tenantd_edge::{Ctx, Principal, Problem, TenantContext};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The caller: its kind, and for users every tenant with the role there.
#[utoipa::path(get, path = "/v1/me", tag = "identity", responses((status = 200, description = "The caller", body = Me)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn me(S(state): S<State>, ctx: Ctx) -> ApiResult<axum::Json<serde_json::Value>> {
    Ok(axum::Json(match ctx.principal()? {
        Principal::Operator => {
            serde_json::json!({"type": "operator", "id": "operator", "tenants": []})
        }
        Principal::Key { id, tenant } => {
            let role = ctx.role.as_ref().map(|r| r.name.clone());
            serde_json::json!({"type": "api_key", "id": id, "tenant_id": tenant, "tenants": [{"tenant_id": tenant, "role": role}]})
        }
        Principal::User { id, email } => {
            let tenants: Vec<_> = state
                .catalog
                .user_memberships(id)
                .await?
                .into_iter()
                .map(|(t, r)| serde_json::json!({"tenant_id": t, "role": r}))
                .collect();
            serde_json::json!({"type": "user", "id": id, "email": email, "tenants": tenants})
        }
    }))
}

/// `GET /v1/me`: the caller.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Me {
    /// `operator`, `api_key` or `user`.
    #[schema(pattern = "^(operator|api_key|user)$")]
    r#type: String,
    /// `operator`, `key_…` or `usr_…`.
    id: String,
    /// Users only.
    email: Option<String>,
    /// API keys only: the key's tenant.
    tenant_id: Option<String>,
    /// The tenants it acts for, with its role in each.
    tenants: Vec<MeTenant>,
}

/// One tenant of the caller's.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct MeTenant {
    /// The tenant.
    tenant_id: String,
    /// The role there (`null` for a key whose role is gone).
    role: Option<String>,
}

/// `POST /v1/authorize` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Authorized {
    /// Whether the principal may.
    allowed: bool,
    /// The role it holds there; `null` when it belongs to no such tenant.
    role: Option<String>,
}

/// A tenantd JWT, as `/v1/token` and the mint endpoint answer (RFC 8693).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    access_token: String,
    /// `urn:ietf:params:oauth:token-type:jwt`.
    issued_token_type: &'static str,
    /// `Bearer`.
    token_type: &'static str,
    /// Seconds it is valid for.
    expires_in: i64,
}

/// `POST /v1/authorize` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    /// The tenant asked about.
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")]
    tenant_id: String,
    /// `resource:action`.
    #[schema(pattern = "^(\\*|(\\*|[A-Za-z0-9_.-]{1,64}):(\\*|[A-Za-z0-9_.-]{1,64}))$")]
    permission: String,
    /// Ask within this workspace.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    workspace_id: Option<String>,
}

/// Whether the bearer's principal may do `permission` in a tenant (and workspace).
/// Tenants the principal does not belong to answer `allowed: false, role: null`, the same
/// whether or not they exist.
#[utoipa::path(post, path = "/v1/authorize", tag = "identity", request_body = AuthorizeBody, responses((status = 200, description = "Whether it may, and with which role", body = Authorized)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn authorize(
    S(state): S<State>,
    ctx: Ctx,
    Json(b): Json<AuthorizeBody>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let principal = ctx.principal()?;
    let tenant = TenantId::parse_with(&b.tenant_id, true)?;
    tenantd_core::Permission::parse(&b.permission).map_err(|e| Problem::invalid(e.to_string()))?;
    if let Some(ws) = &b.workspace_id {
        tenantd_core::WorkspaceId::parse(ws)?;
    }
    let no = || axum::Json(serde_json::json!({"allowed": false, "role": null}));
    // A guest stays read-only inside its workspaces, whatever role it holds there.
    let mut read_only = false;
    let role_name = match principal {
        Principal::Operator => Some("owner".to_string()),
        Principal::Key { tenant: own, .. } if *own == tenant => ctx.role.as_ref().map(|r| r.name.clone()),
        Principal::Key { .. } => None,
        Principal::User { id, .. } => {
            let tenant_role = state.catalog.member_role(&tenant, id).await?;
            match (&b.workspace_id, tenant_role) {
                // Within a workspace its own role applies; a guest has none outside it.
                (Some(ws), Some(r)) => {
                    read_only = r == "guest";
                    state
                        .catalog
                        .workspace_role(&tenant, ws, id)
                        .await?
                        .or(if read_only { None } else { Some(r) })
                }
                (None, r) => r,
                (Some(_), None) => None,
            }
        }
    };
    let Some(role_name) = role_name else {
        return Ok(no());
    };
    let t = match state.catalog.get_tenant(&tenant).await {
        Ok(t) if t.status != TenantStatus::Deleted => t,
        _ => return Ok(no()),
    };
    let role = match state.edge.cache().builtin_role(&role_name) {
        Some(r) => r,
        None => std::sync::Arc::new(
            state
                .catalog
                .get_role(&tenant, &role_name)
                .await?
                .unwrap_or_else(|| tenantd_core::Role::custom(role_name.clone(), vec![])),
        ),
    };
    let permission = b.permission.to_ascii_lowercase();
    let allowed = evaluate(principal.is_operator(), t.status, &role, &permission).unwrap_or(false)
        && (!read_only || crate::grants::guest_ceiling().allows(&permission));
    Ok(axum::Json(serde_json::json!({"allowed": allowed, "role": role_name})))
}

/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// `POST /v1/token` fields (form-encoded per RFC 8693, or JSON).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(pattern = "^urn:ietf:params:oauth:grant-type:token-exchange$")]
    grant_type: String,
    /// The provider's ID token.
    subject_token: String,
    /// `urn:ietf:params:oauth:token-type:id_token` (or `…:jwt`).
    #[schema(pattern = "^urn:ietf:params:oauth:token-type:(id_token|jwt)$")]
    subject_token_type: String,
    /// Bind the token to this tenant (`tid`), of which the user must be a member.
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")]
    tenant_id: Option<String>,
}

fn token_response(state: &State, claims: &Claims) -> TokenResponse {
    TokenResponse {
        access_token: state.edge.signer().sign(claims),
        issued_token_type: "urn:ietf:params:oauth:token-type:jwt",
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
    }
}

fn claims(
    state: &State,
    sub: &str,
    email: &str,
    tid: Option<&TenantId>,
    role: Option<String>,
    plan: Option<String>,
) -> Claims {
    let now = now_secs();
    Claims {
        iss: ISSUER.into(),
        sub: sub.into(),
        email: email.into(),
        tid: tid.map(|t| t.to_string()),
        roles: role.into_iter().collect(),
        plan,
        iat: now,
        nbf: now,
        exp: now + state.cfg.token_ttl_seconds,
        jti: tenantd_store::new_id("jti"),
        aud: None,
    }
}

/// Exchanges the configured OpenID provider's ID token for a tenantd JWT (RFC 8693).
#[utoipa::path(post, path = "/v1/token", tag = "identity", security(()), request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "A tenantd JWT", body = TokenResponse)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn token(
    S(state): S<State>,
    ctx: Ctx,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<TokenResponse>> {
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req: TokenRequest = if json {
        crate::extract::parse_json(&body)?
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|e| Problem::invalid(format!("invalid form: {e}")))?
    };
    if req.grant_type != TOKEN_EXCHANGE {
        return Err(Problem::invalid(format!("grant_type must be {TOKEN_EXCHANGE}")).into());
    }
    if ![
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:jwt",
    ]
    .contains(&req.subject_token_type.as_str())
    {
        return Err(Problem::invalid("subject_token_type must be urn:ietf:params:oauth:token-type:id_token").into());
    }
    let oidc = state.edge.oidc().ok_or_else(|| {
        Problem::new(
            tenantd_core::Code::NotFound,
            "token exchange is not configured on this server ([oidc] in the config file)",
        )
    })?;
    let who = oidc
        .verify(&req.subject_token)
        .map_err(|e| Problem::unauthenticated(format!("subject_token: {e}")))?;
    let email = tenantd_core::Email::parse(&who.email)?;
    let user = state.catalog.ensure_user(&email).await?;
    let c = match req.tenant_id {
        None => claims(&state, &user.id, email.as_str(), None, None, None),
        Some(raw) => {
            let tid = TenantId::parse_with(&raw, true)?;
            let role = state.catalog.member_role(&tid, &user.id).await?;
            let tenant = state
                .catalog
                .get_tenant(&tid)
                .await
                .ok()
                .filter(|t| t.status != TenantStatus::Deleted);
            match (role, tenant) {
                (Some(role), Some(t)) => claims(
                    &state,
                    &user.id,
                    email.as_str(),
                    Some(&tid),
                    Some(role),
                    Some(t.plan.to_string()),
                ),
                _ => {
                    let ev = tenantd_edge::SecurityEvent {
                        action: "security.cross_tenant_attempt",
                        actor: user.id.clone(),
                        tenant_id: None,
                        detail: serde_json::json!({"path": "/v1/token", "tenant_requested": raw}),
                        request_id: ctx.request_id.clone(),
                    };
                    state.edge.report_security(ev, tid.as_str()).await;
                    state
                        .edge
                        .metrics()
                        .cross_tenant_attempts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(Problem::tenant_mismatch().into());
                }
            }
        }
    };
    Ok(axum::Json(token_response(&state, &c)))
}

/// `{id}/members/{user_id}/token`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MintPath {
    /// The member's user id.
    #[param(pattern = "^usr_[a-z2-7]{20}$")]
    user_id: String,
}

/// Mints a tenantd JWT for a member (operator; audited).
#[utoipa::path(post, path = "/v1/tenants/{id}/members/{user_id}/token", tag = "identity", params(TenantPath, MintPath), responses((status = 200, description = "A tenantd JWT for the member", body = TokenResponse)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn mint(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<MintPath>,
) -> ApiResult<axum::Json<TokenResponse>> {
    ctx.request().require_operator()?;
    let role = state
        .catalog
        .member_role(ctx.tenant_id(), &p.user_id)
        .await?
        .ok_or_else(|| Problem::not_found("member"))?;
    let user = state.catalog.get_user(&p.user_id).await?;
    let c = claims(
        &state,
        &user.id,
        &user.email,
        Some(ctx.tenant_id()),
        Some(role),
        Some(ctx.tenant().plan.to_string()),
    );
    // The token is handed out only once its event is written.
    let detail = serde_json::json!({"user_id": user.id, "jti": c.jti});
    state
        .catalog
        .record_event(&crate::state::AppState::event_of(&ctx, "token.minted", detail))
        .await?;
    Ok(axum::Json(token_response(&state, &c)))
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(authorize))
        .routes(routes!(token))
        .routes(routes!(mint))
}
