//! Webhook endpoints over HTTP (docs/events.md#webhooks): a tenant's under
//! `/v1/tenants/{id}/webhooks` (`webhooks:manage` to change, `webhooks:read` to look), the
//! operator's under `/v1/webhooks` (every tenant's events and the platform's). Each
//! handler is a thin shell over one function of [`Owner`], so both sets behave alike.
use crate::error::ApiResult;
use crate::extract::{Json, PageQuery, Query};
use crate::routes::openapi::{PageParams, TenantPath};
use crate::state::State;
use crate::webhooks::dispatch::{matches, valid_type, Task};
use crate::webhooks::{guard, sign};
use axum::extract::{Path, State as S};
use http::StatusCode;
use serde_json::json;
use tenantd_core::ids::new_id;
use tenantd_core::{now_secs, Code, TenantId};
use tenantd_edge::{Ctx, Problem, TenantContext};
use tenantd_store::{chain_name, AuditFilter, Delivery, NewEvent, Page, Webhook};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Endpoints one owner may have.
const MAX_PER_OWNER: usize = 20;
/// Event types or prefixes one endpoint may name.
const MAX_TYPES: usize = 100;
/// How long the secret before a rotation still signs.
const ROTATION_OVERLAP_SECS: i64 = 86_400;
/// Events one replay may send.
const MAX_REPLAY: usize = 100_000;

/// `POST …/webhooks` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events go: `https://…` or `http://…`, at most 2,000 characters, resolving to
    /// public addresses only (unless `[webhooks] allow_private_networks`).
    #[schema(max_length = 2000, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    url: String,
    /// Types (`key.revoked`) or prefixes (`tenant.*`) to send; absent or empty: all.
    #[schema(max_items = 100, value_type = Option<Vec<EventType>>)]
    event_types: Option<Vec<String>>,
    /// What it is for (at most 500 characters).
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// An event type (`key.revoked`) or a prefix of types (`tenant.*`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[a-z_]+(\\.[a-z_]+)*(\\.\\*)?$")]
#[allow(dead_code)]
pub struct EventType(String);

/// `PATCH …/webhooks/{wh_id}` body: the fields to change.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// A new URL, checked as at creation.
    #[schema(max_length = 2000, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    url: Option<String>,
    /// New types or prefixes (empty: all).
    #[schema(max_items = 100, value_type = Option<Vec<EventType>>)]
    event_types: Option<Vec<String>>,
    /// A new description.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// `false` stops deliveries; `true` starts them again (a disabled endpoint too).
    enabled: Option<bool>,
}

/// A webhook as created or after a rotation: with its secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    webhook: Webhook,
    /// `whsec_` and the base64 of 32 random bytes: the key of its signatures, shown once.
    secret: String,
}

/// `POST …/replay` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Send again every matching event at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    since: String,
}

/// What a replay queued.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Deliveries queued.
    deliveries: u64,
}

/// What a test queued.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TestQueued {
    /// The test message's `webhook-id` (`msg_…`).
    message_id: String,
}

/// `…/webhooks/{wh_id}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The webhook's id.
    #[param(pattern = "^wh_[a-z2-7]{20}$")]
    wh_id: String,
}

/// Whose webhooks a request manages, and who is asking: a tenant's principal, or the
/// operator.
struct Owner {
    tenant: Option<TenantId>,
    actor: String,
    request_id: String,
}

impl Owner {
    fn tenant(ctx: &TenantContext, permission: &str) -> ApiResult<Self> {
        ctx.require(permission)?;
        Ok(Self {
            tenant: Some(*ctx.tenant_id()),
            actor: ctx.principal().actor(),
            request_id: ctx.request_id().to_string(),
        })
    }

    fn operator(ctx: &Ctx) -> ApiResult<Self> {
        ctx.require_operator()?;
        Ok(Self {
            tenant: None,
            actor: "operator".into(),
            request_id: ctx.request_id.clone(),
        })
    }

    fn event(&self, kind: &str, data: serde_json::Value) -> NewEvent {
        NewEvent::new(self.tenant.as_ref(), self.actor.as_str(), kind, data, &self.request_id)
    }

    /// The chain whose events its endpoints get (the operator's: every chain).
    fn chain(&self) -> String {
        chain_name(self.tenant.as_ref()).to_string()
    }

    async fn get(&self, state: &State, id: &str) -> ApiResult<Webhook> {
        Ok(state.catalog.get_webhook(self.tenant.as_ref(), id).await?)
    }

    async fn create(&self, state: &State, b: CreateWebhook) -> ApiResult<(StatusCode, axum::Json<WebhookWithSecret>)> {
        let url = checked_url(state, &b.url).await?;
        let event_types = checked_types(b.event_types.unwrap_or_default())?;
        let description = checked_description(b.description.unwrap_or_default())?;
        let held = state
            .catalog
            .list_webhooks(
                self.tenant.as_ref(),
                &crate::extract::page(Some(MAX_PER_OWNER as u32), None)?,
            )
            .await?;
        if held.items.len() >= MAX_PER_OWNER {
            return Err(Problem::new(
                Code::Conflict,
                format!("at most {MAX_PER_OWNER} webhooks; delete one first"),
            )
            .into());
        }
        let secret = sign::new_secret();
        let mut hook = Webhook::new(
            new_id("wh"),
            self.tenant.map(|t| t.to_string()),
            url,
            event_types,
            secret.clone(),
        );
        hook.description = description;
        let mut w = state.catalog.begin().await?;
        state.catalog.create_webhook(&mut w, &hook).await?;
        w.commit_with(&self.event("webhook.created", described(&hook))).await?;
        Ok((
            StatusCode::CREATED,
            axum::Json(WebhookWithSecret { webhook: hook, secret }),
        ))
    }

    async fn update(&self, state: &State, id: &str, b: UpdateWebhook) -> ApiResult<axum::Json<Webhook>> {
        let mut hook = self.get(state, id).await?;
        if let Some(url) = b.url {
            hook.url = checked_url(state, &url).await?;
        }
        if let Some(types) = b.event_types {
            hook.event_types = checked_types(types)?;
        }
        if let Some(d) = b.description {
            hook.description = checked_description(d)?;
        }
        if let Some(enabled) = b.enabled {
            if enabled && !hook.enabled {
                hook.disabled_reason = None;
                hook.failing_since = None;
            }
            hook.enabled = enabled;
        }
        let mut w = state.catalog.begin().await?;
        state.catalog.update_webhook(&mut w, &hook).await?;
        w.commit_with(&self.event("webhook.updated", described(&hook))).await?;
        Ok(axum::Json(self.get(state, id).await?))
    }

    async fn delete(&self, state: &State, id: &str) -> ApiResult<StatusCode> {
        let mut w = state.catalog.begin().await?;
        state.catalog.delete_webhook(&mut w, self.tenant.as_ref(), id).await?;
        w.commit_with(&self.event("webhook.deleted", json!({"webhook_id": id})))
            .await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn rotate(&self, state: &State, id: &str) -> ApiResult<axum::Json<WebhookWithSecret>> {
        let secret = sign::new_secret();
        let until = now_secs() + ROTATION_OVERLAP_SECS;
        let mut w = state.catalog.begin().await?;
        let webhook = state
            .catalog
            .rotate_webhook_secret(&mut w, self.tenant.as_ref(), id, &secret, until)
            .await?;
        w.commit_with(&self.event("webhook.secret_rotated", json!({"webhook_id": id})))
            .await?;
        Ok(axum::Json(WebhookWithSecret { webhook, secret }))
    }

    async fn test(&self, state: &State, id: &str) -> ApiResult<(StatusCode, axum::Json<TestQueued>)> {
        let hook = self.get(state, id).await?;
        let message_id = new_id("msg");
        let message = json!({
            "id": message_id,
            "type": "webhook.test",
            "timestamp": tenantd_core::ts::format(now_secs()),
            "data": {"webhook_id": hook.id, "tenant_id": hook.tenant_id},
        });
        let task = Task {
            webhook_id: hook.id.clone(),
            event: None,
            message: Some(message),
        };
        let mut w = state.catalog.begin().await?;
        state
            .enqueue_delivery(&mut w, &hook, &self.chain(), &task, &message_id)
            .await?;
        w.commit().await?;
        state.jobs.enqueued();
        Ok((StatusCode::ACCEPTED, axum::Json(TestQueued { message_id })))
    }

    async fn deliveries(&self, state: &State, id: &str, q: &PageQuery) -> ApiResult<axum::Json<Page<Delivery>>> {
        let hook = self.get(state, id).await?;
        Ok(axum::Json(state.catalog.list_deliveries(&hook.id, &q.page()?).await?))
    }

    /// Queues every matching event at or after `since` again, each once more.
    async fn replay(&self, state: &State, id: &str, b: Replay) -> ApiResult<(StatusCode, axum::Json<Replayed>)> {
        let hook = self.get(state, id).await?;
        let since = tenantd_core::ts::parse(&b.since).map_err(|e| Problem::invalid(format!("since: {e}")))?;
        let chains = match self.tenant {
            Some(_) => vec![self.chain()],
            // A closed chain (`id@time`) is a purged tenant's: nothing left to send.
            None => state
                .catalog
                .chains()
                .await?
                .into_iter()
                .filter(|c| !c.contains('@'))
                .collect(),
        };
        let filter = AuditFilter {
            since: Some(since),
            ..AuditFilter::default()
        };
        let replay = new_id("replay");
        let (mut sent, mut deliveries) = (0usize, 0u64);
        for chain in chains {
            if sent >= MAX_REPLAY {
                break;
            }
            let mut after = 0;
            loop {
                let events = state.catalog.chain_events(&chain, &filter, after, 500).await?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    break;
                };
                let mut w = state.catalog.begin().await?;
                for e in events
                    .iter()
                    .filter(|e| !e.redacted && matches(&hook.event_types, &e.kind))
                {
                    let task = Task {
                        webhook_id: hook.id.clone(),
                        event: Some((chain.clone(), e.seq, e.id.clone())),
                        message: None,
                    };
                    let key = format!("{}:{replay}", e.id);
                    deliveries += state.enqueue_delivery(&mut w, &hook, &chain, &task, &key).await?;
                    sent += 1;
                }
                w.commit().await?;
                state.jobs.enqueued();
                if events.len() < 500 || sent >= MAX_REPLAY {
                    break;
                }
                after = last;
            }
        }
        Ok((StatusCode::ACCEPTED, axum::Json(Replayed { deliveries })))
    }
}

/// An event's data about an endpoint: never its secret, nor its URL (which may carry a
/// token).
fn described(h: &Webhook) -> serde_json::Value {
    json!({"webhook_id": h.id, "event_types": h.event_types, "enabled": h.enabled})
}

async fn checked_url(state: &State, raw: &str) -> ApiResult<String> {
    let url = guard::parse(raw).map_err(Problem::invalid)?;
    guard::resolve(&url, state.cfg.webhooks.allow_private_networks)
        .await
        .map_err(Problem::invalid)?;
    Ok(raw.to_string())
}

fn checked_types(types: Vec<String>) -> ApiResult<Vec<String>> {
    if types.len() > MAX_TYPES {
        return Err(Problem::invalid(format!("event_types takes at most {MAX_TYPES} types")).into());
    }
    if let Some(bad) = types.iter().find(|t| !valid_type(t)) {
        return Err(Problem::invalid(format!(
            "event_types: {bad:?} is not a type such as key.revoked or a prefix such as tenant.*"
        ))
        .into());
    }
    Ok(types)
}

fn checked_description(d: String) -> ApiResult<String> {
    if d.chars().count() > 500 || d.contains('\0') {
        return Err(Problem::invalid("description must be at most 500 characters, without NUL").into());
    }
    Ok(d)
}

/// Creates a webhook for the tenant's events (`webhooks:manage`); the answer carries its
/// secret, once.
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks", tag = "webhooks", params(TenantPath), request_body = CreateWebhook, responses((status = 201, description = "The webhook with `secret`, shown once", body = WebhookWithSecret)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Json(b): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, axum::Json<WebhookWithSecret>)> {
    Owner::tenant(&ctx, "webhooks:manage")?.create(&state, b).await
}

/// The tenant's webhooks, never their secrets (`webhooks:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/webhooks", tag = "webhooks", params(TenantPath, PageParams), responses((status = 200, description = "A page of webhooks", body = Page<Webhook>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    S(state): S<State>,
    ctx: TenantContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Webhook>>> {
    let o = Owner::tenant(&ctx, "webhooks:read")?;
    Ok(axum::Json(
        state.catalog.list_webhooks(o.tenant.as_ref(), &q.page()?).await?,
    ))
}

/// One webhook (`webhooks:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/webhooks/{wh_id}", tag = "webhooks", params(TenantPath, WebhookPath), responses((status = 200, description = "The webhook", body = Webhook)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext, Path(p): Path<WebhookPath>) -> ApiResult<axum::Json<Webhook>> {
    Ok(axum::Json(
        Owner::tenant(&ctx, "webhooks:read")?.get(&state, &p.wh_id).await?,
    ))
}

/// Changes a webhook (`webhooks:manage`).
#[utoipa::path(patch, path = "/v1/tenants/{id}/webhooks/{wh_id}", tag = "webhooks", params(TenantPath, WebhookPath), request_body = UpdateWebhook, responses((status = 200, description = "The webhook as changed", body = Webhook)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn update(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WebhookPath>,
    Json(b): Json<UpdateWebhook>,
) -> ApiResult<axum::Json<Webhook>> {
    Owner::tenant(&ctx, "webhooks:manage")?
        .update(&state, &p.wh_id, b)
        .await
}

/// Deletes a webhook and its delivery log (`webhooks:manage`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/webhooks/{wh_id}", tag = "webhooks", params(TenantPath, WebhookPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<WebhookPath>) -> ApiResult<StatusCode> {
    Owner::tenant(&ctx, "webhooks:manage")?.delete(&state, &p.wh_id).await
}

/// Gives a webhook a new secret, shown once; the old one signs beside it for 24 h
/// (`webhooks:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks/{wh_id}/rotate-secret", tag = "webhooks", params(TenantPath, WebhookPath), responses((status = 200, description = "The webhook with its new `secret`", body = WebhookWithSecret)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn rotate(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WebhookPath>,
) -> ApiResult<axum::Json<WebhookWithSecret>> {
    Owner::tenant(&ctx, "webhooks:manage")?.rotate(&state, &p.wh_id).await
}

/// Sends a `webhook.test` message (`webhooks:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks/{wh_id}/test", tag = "webhooks", params(TenantPath, WebhookPath), responses((status = 202, description = "Queued", body = TestQueued)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn test(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WebhookPath>,
) -> ApiResult<(StatusCode, axum::Json<TestQueued>)> {
    Owner::tenant(&ctx, "webhooks:manage")?.test(&state, &p.wh_id).await
}

/// A webhook's delivery attempts, newest first (`webhooks:read`).
#[utoipa::path(get, path = "/v1/tenants/{id}/webhooks/{wh_id}/deliveries", tag = "webhooks", params(TenantPath, WebhookPath, PageParams), responses((status = 200, description = "A page of attempts", body = Page<Delivery>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn deliveries(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WebhookPath>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Delivery>>> {
    Owner::tenant(&ctx, "webhooks:read")?
        .deliveries(&state, &p.wh_id, &q)
        .await
}

/// Sends every matching event since a time again (`webhooks:manage`).
#[utoipa::path(post, path = "/v1/tenants/{id}/webhooks/{wh_id}/replay", tag = "webhooks", params(TenantPath, WebhookPath), request_body = Replay, responses((status = 202, description = "Queued", body = Replayed)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn replay(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<WebhookPath>,
    Json(b): Json<Replay>,
) -> ApiResult<(StatusCode, axum::Json<Replayed>)> {
    Owner::tenant(&ctx, "webhooks:manage")?
        .replay(&state, &p.wh_id, b)
        .await
}

/// Creates an operator's webhook, for every tenant's events and the platform's.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook, responses((status = 201, description = "The webhook with `secret`, shown once", body = WebhookWithSecret)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_create(
    S(state): S<State>,
    ctx: Ctx,
    Json(b): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, axum::Json<WebhookWithSecret>)> {
    Owner::operator(&ctx)?.create(&state, b).await
}

/// The operator's webhooks.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(PageParams), responses((status = 200, description = "A page of webhooks", body = Page<Webhook>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_list(
    S(state): S<State>,
    ctx: Ctx,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Webhook>>> {
    Owner::operator(&ctx)?;
    Ok(axum::Json(state.catalog.list_webhooks(None, &q.page()?).await?))
}

/// One of the operator's webhooks.
#[utoipa::path(get, path = "/v1/webhooks/{wh_id}", tag = "webhooks", params(WebhookPath), responses((status = 200, description = "The webhook", body = Webhook)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_get(S(state): S<State>, ctx: Ctx, Path(p): Path<WebhookPath>) -> ApiResult<axum::Json<Webhook>> {
    Ok(axum::Json(Owner::operator(&ctx)?.get(&state, &p.wh_id).await?))
}

/// Changes one of the operator's webhooks.
#[utoipa::path(patch, path = "/v1/webhooks/{wh_id}", tag = "webhooks", params(WebhookPath), request_body = UpdateWebhook, responses((status = 200, description = "The webhook as changed", body = Webhook)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_update(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<WebhookPath>,
    Json(b): Json<UpdateWebhook>,
) -> ApiResult<axum::Json<Webhook>> {
    Owner::operator(&ctx)?.update(&state, &p.wh_id, b).await
}

/// Deletes one of the operator's webhooks.
#[utoipa::path(delete, path = "/v1/webhooks/{wh_id}", tag = "webhooks", params(WebhookPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_delete(S(state): S<State>, ctx: Ctx, Path(p): Path<WebhookPath>) -> ApiResult<StatusCode> {
    Owner::operator(&ctx)?.delete(&state, &p.wh_id).await
}

/// Gives one of the operator's webhooks a new secret (the old one signs for 24 h more).
#[utoipa::path(post, path = "/v1/webhooks/{wh_id}/rotate-secret", tag = "webhooks", params(WebhookPath), responses((status = 200, description = "The webhook with its new `secret`", body = WebhookWithSecret)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_rotate(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<WebhookPath>,
) -> ApiResult<axum::Json<WebhookWithSecret>> {
    Owner::operator(&ctx)?.rotate(&state, &p.wh_id).await
}

/// Sends a `webhook.test` message to one of the operator's webhooks.
#[utoipa::path(post, path = "/v1/webhooks/{wh_id}/test", tag = "webhooks", params(WebhookPath), responses((status = 202, description = "Queued", body = TestQueued)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_test(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<WebhookPath>,
) -> ApiResult<(StatusCode, axum::Json<TestQueued>)> {
    Owner::operator(&ctx)?.test(&state, &p.wh_id).await
}

/// The delivery attempts of one of the operator's webhooks, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{wh_id}/deliveries", tag = "webhooks", params(WebhookPath, PageParams), responses((status = 200, description = "A page of attempts", body = Page<Delivery>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_deliveries(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<WebhookPath>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Delivery>>> {
    Owner::operator(&ctx)?.deliveries(&state, &p.wh_id, &q).await
}

/// Sends every matching event since a time again to one of the operator's webhooks.
#[utoipa::path(post, path = "/v1/webhooks/{wh_id}/replay", tag = "webhooks", params(WebhookPath), request_body = Replay, responses((status = 202, description = "Queued", body = Replayed)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn platform_replay(
    S(state): S<State>,
    ctx: Ctx,
    Path(p): Path<WebhookPath>,
    Json(b): Json<Replay>,
) -> ApiResult<(StatusCode, axum::Json<Replayed>)> {
    Owner::operator(&ctx)?.replay(&state, &p.wh_id, b).await
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(rotate))
        .routes(routes!(test))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
        .routes(routes!(platform_list, platform_create))
        .routes(routes!(platform_get, platform_update, platform_delete))
        .routes(routes!(platform_rotate))
        .routes(routes!(platform_test))
        .routes(routes!(platform_deliveries))
        .routes(routes!(platform_replay))
}
