//! Metered usage events (`POST /v1/tenants/{id}/usage/events`): admitted against every
//! limit of their resources, and made durable before the answer. An acknowledged event,
//! its idempotency key and the count it adds commit in one catalog transaction, so after
//! any crash an event either counted or can be sent again and counts then (docs/limits.md).
use crate::error::ApiResult;
use crate::extract::{parse_json, RawBody};
use crate::state::State;
use axum::extract::State as S;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use tenantd_core::plan::validate_resource;
use tenantd_core::usage::MAX_COUNT;
use tenantd_edge::{Principal, Problem, TenantContext};
use tenantd_limits::{Ask, Outcome, CATALOG_LEVELS};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// One metered usage event.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// What was used (`orchestrations`, `storage_bytes`, …; not `members` or `keys`,
    /// which tenantd counts itself): 1–64 of `a-z 0-9 _ - .`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    resource: String,
    /// How much: 1 to 2^53 − 1.
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    #[serde(deserialize_with = "tenantd_core::whole::u64")]
    quantity: u64,
    /// The same key never counts twice for this tenant (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

/// What a batch recorded.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Recorded {
    /// Events counted now.
    recorded: u64,
    /// Events whose idempotency key had counted before (or earlier in the batch).
    duplicates: u64,
}

/// At most this many events per request.
pub const MAX_EVENTS: usize = 1000;

fn parse_events(body: Value) -> Result<Vec<UsageEvent>, Problem> {
    let (items, many) = match body {
        Value::Array(a) => (a, true),
        other => (vec![other], false),
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        return Err(Problem::invalid(format!(
            "send 1 to {MAX_EVENTS} events, as one object or a list"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (n, v) in items.into_iter().enumerate() {
        let at = if many { format!("event {n}: ") } else { String::new() };
        let e: UsageEvent =
            serde_json::from_value(v).map_err(|e| Problem::invalid(format!("invalid body: {at}{e}")))?;
        validate_resource(&e.resource).map_err(|m| Problem::invalid(format!("{at}{m}")))?;
        if CATALOG_LEVELS.contains(&e.resource.as_str()) {
            return Err(Problem::invalid(format!(
                "{at}'{}' is counted by tenantd itself and cannot be metered",
                e.resource
            )));
        }
        if !(1..=MAX_COUNT).contains(&e.quantity) {
            return Err(Problem::invalid(format!(
                "{at}quantity must be an integer from 1 to {MAX_COUNT} (2^53 - 1)"
            )));
        }
        if let Some(k) = &e.idempotency_key {
            if k.is_empty() || k.len() > 200 {
                return Err(Problem::invalid(format!(
                    "{at}idempotency_key must be 1 to 200 characters"
                )));
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Records metered use (`usage:write`): one event or a list. The batch is admitted as a
/// whole against every limit of each resource (a hard limit refuses all of it with 429
/// and records nothing); events whose idempotency key was seen before are skipped. The
/// answer comes once the events, their keys and their counts are committed together.
#[utoipa::path(post, path = "/v1/tenants/{id}/usage/events", tag = "usage", params(crate::routes::openapi::TenantPath), request_body = crate::routes::openapi::UsageEvents, responses((status = 200, description = "What was recorded", body = Recorded)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn record(S(state): S<State>, ctx: TenantContext, RawBody(body): RawBody) -> ApiResult<axum::Json<Value>> {
    ctx.require("usage:write")?;
    let events = parse_events(parse_json(&body)?)?;
    // A client that goes away mid-write does not cut the write short: its counts are
    // either committed with its keys or taken back, never left half done.
    tokio::spawn(async move { record_durably(&state, &ctx, &events).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "recording usage events failed");
            Problem::internal()
        })?
        .map(axum::Json)
}

/// Claims the batch's keys, admits what is new, and commits keys, counts and quota
/// events in one transaction; a failed commit takes the counts back.
async fn record_durably(state: &State, ctx: &TenantContext, events: &[UsageEvent]) -> ApiResult<Value> {
    let tenant = *ctx.tenant_id();
    // Keys repeated inside the batch count once; keys seen before count not at all.
    let mut keys: Vec<String> = events.iter().filter_map(|e| e.idempotency_key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    let write = state.catalog.begin_usage(&tenant, &keys).await?;
    // Each newly claimed key counts for its first event only.
    let mut uncounted: HashSet<&str> = keys
        .iter()
        .zip(write.fresh())
        .filter(|(_, fresh)| **fresh)
        .map(|(k, _)| k.as_str())
        .collect();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut recorded, mut duplicates) = (0u64, 0u64);
    for e in events {
        let counts = match &e.idempotency_key {
            None => true,
            Some(k) => uncounted.remove(k.as_str()),
        };
        if counts {
            let t = totals.entry(e.resource.as_str()).or_default();
            *t = tenantd_core::usage::saturating_count(*t, e.quantity);
            recorded += 1;
        } else {
            duplicates += 1;
        }
    }
    let answer = json!({"recorded": recorded, "duplicates": duplicates});
    if totals.is_empty() {
        write.commit(&[], &[], &[]).await?;
        return Ok(answer);
    }
    let key = match ctx.principal() {
        Principal::Key { id, .. } => Some(*id),
        _ => None,
    };
    let key_limits = ctx.request().key_limits.clone();
    let asks: Vec<Ask<'_>> = totals
        .iter()
        .map(|(resource, cost)| Ask {
            tenant,
            key,
            tenant_limits: &ctx.tenant().limits,
            key_limits: key_limits.as_deref().unwrap_or(&[]),
            resource,
            cost: *cost,
            failure: ctx.tenant().counter_failure,
        })
        .collect();
    let (outcome, reservation) = state.limiter.reserve(&asks).await.map_err(|e| {
        tracing::error!(error = %e, "admission failed");
        Problem::from(e)
    })?;
    // Refused: the write is dropped, so its keys are released with it.
    let crossings = match outcome {
        Outcome::Refused { state: s, retry_after } => return Err(Problem::limited(&s, retry_after).into()),
        Outcome::Admitted { crossings, .. } => crossings,
    };
    let reservation = reservation.ok_or_else(Problem::internal)?;
    let quota_events: Vec<_> = crossings.iter().map(crate::directory::crossing_event).collect();
    match write
        .commit(&reservation.deltas, &reservation.levels, &quota_events)
        .await
    {
        Ok(()) => {
            for c in &crossings {
                crate::directory::log_crossing(c);
            }
            Ok(answer)
        }
        Err(e) => {
            state.limiter.take_back(reservation).await;
            Err(e.into())
        }
    }
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(Doc::openapi()).routes(routes!(record))
}

/// The schema the hand-written `UsageEvents` body refers to.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(UsageEvent)))]
struct Doc;
