//! Feature flags (docs/config.md): the operator defines them, a tenant reads its
//! features, and any OpenFeature SDK evaluates them over OFREP (the OpenFeature Remote
//! Evaluation Protocol) with the tenant from its credential. Evaluation reads this
//! node's snapshot ([`tenantd_edge::Settings`]): no I/O.
use crate::error::ApiResult;
use crate::extract::{created_or_ok, etag, if_match, optional_json, Json, Query, RawBody};
use crate::routes::openapi::{Items, TenantPath};
use crate::state::State;
use axum::extract::{Path, State as S};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};
use tenantd_core::flags::{check_key, EvalError, Evaluation, Flag, FlagSet, FlagSpec, Subject};
use tenantd_edge::{Change, Ctx, Problem, TenantContext};
use tenantd_store::NewEvent;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

fn flag_key(raw: &str) -> Result<String, Problem> {
    check_key("flag", raw).map_err(Problem::invalid)?;
    Ok(raw.to_string())
}

fn flag_event(ctx: &Ctx, data: Value) -> NewEvent {
    NewEvent::new(None, "operator", "flag.changed", data, &ctx.request_id)
}

/// A stored flag as the API answers it: its definition's fields beside `key`, `version`
/// and `updated_at` (the document's schema for [`Flag`], whose definition refuses
/// unknown fields on the way in).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FlagView {
    /// The flag's key.
    key: String,
    /// The type every value has.
    #[schema(rename = "type")]
    kind: tenantd_core::flags::FlagType,
    /// The value when nothing else applies.
    default: Value,
    /// The kill switch.
    enabled: bool,
    /// Values per plan id.
    plans: Option<std::collections::BTreeMap<String, Value>>,
    /// Values per tenant id.
    tenants: Option<std::collections::BTreeMap<String, Value>>,
    /// A gradual rollout.
    rollout: Option<tenantd_core::flags::Rollout>,
    /// Raised by every change, from 1.
    version: i64,
    /// When it last changed (RFC 3339).
    updated_at: String,
}

/// Creates or replaces a flag (operator); `If-Match` guards against overwriting a change
/// not seen. Every node evaluates the new definition within a second.
#[utoipa::path(put, path = "/v1/flags/{flag}", tag = "flags", params(FlagPath), request_body = FlagSpec, responses((status = 200, description = "Replaced", body = FlagView), (status = 201, description = "Created", body = FlagView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put(
    S(state): S<State>,
    ctx: Ctx,
    Path(key): Path<String>,
    h: HeaderMap,
    Json(spec): Json<FlagSpec>,
) -> ApiResult<(StatusCode, HeaderMap, axum::Json<Flag>)> {
    ctx.require_operator()?;
    let key = flag_key(&key)?;
    let spec = spec.normalized();
    spec.validate().map_err(Problem::invalid)?;
    let expected = if_match(&h)?;
    let mut w = state.catalog.begin().await?;
    let f = state.catalog.put_flag(&mut w, &key, &spec, expected).await?;
    w.commit_with(&flag_event(
        &ctx,
        json!({"flag": key, "version": f.version, "enabled": spec.enabled}),
    ))
    .await?;
    state.changed(Change::Settings).await;
    Ok((
        created_or_ok(f.version),
        HeaderMap::from_iter(etag(f.version)),
        axum::Json(f),
    ))
}

/// Every flag the operator defined (operator). Plan features that no flag defines are
/// evaluated as boolean flags but not listed here.
#[utoipa::path(get, path = "/v1/flags", tag = "flags", responses((status = 200, description = "Every flag", body = Items<FlagView>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(S(state): S<State>, ctx: Ctx) -> ApiResult<axum::Json<Value>> {
    ctx.require_operator()?;
    Ok(axum::Json(json!({"items": state.catalog.list_flags().await?})))
}

/// One flag (operator).
#[utoipa::path(get, path = "/v1/flags/{flag}", tag = "flags", params(FlagPath), responses((status = 200, description = "The flag", body = FlagView)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: Ctx, Path(key): Path<String>) -> ApiResult<(HeaderMap, axum::Json<Flag>)> {
    ctx.require_operator()?;
    let f = state
        .catalog
        .get_flag(&flag_key(&key)?)
        .await?
        .ok_or_else(|| Problem::not_found("flag"))?;
    Ok((HeaderMap::from_iter(etag(f.version)), axum::Json(f)))
}

/// Deletes a flag (operator).
#[utoipa::path(delete, path = "/v1/flags/{flag}", tag = "flags", params(FlagPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: Ctx, Path(key): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_operator()?;
    let key = flag_key(&key)?;
    let mut w = state.catalog.begin().await?;
    let f = state.catalog.delete_flag(&mut w, &key).await?;
    w.commit_with(&flag_event(
        &ctx,
        json!({"flag": key, "version": f.version, "deleted": true}),
    ))
    .await?;
    state.changed(Change::Settings).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `{flag}`: a flag key.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct FlagPath {
    /// 1–128 of `A-Z a-z 0-9 _ - .`.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    flag: String,
}

/// `?targeting_key=` of the features list.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeaturesQuery {
    /// The subject of rollouts by targeting key (a user id, say); without it such a
    /// rollout answers its default with reason `ERROR`.
    targeting_key: Option<String>,
}

/// One evaluation as the features list and OFREP show it: `{value, reason, variant}`;
/// one that failed gets the flag's default, reason `ERROR` and its `errorCode`.
fn shown(set: &FlagSet, key: &str, r: &Result<Evaluation<'_>, EvalError>) -> Value {
    match r {
        Ok(e) => json!({"value": e.value, "reason": e.reason, "variant": e.variant}),
        Err(e) => json!({
            "value": set.flag(key).map(|f| &f.spec.default),
            "reason": "ERROR",
            "errorCode": error_code(e),
            "errorDetails": e.to_string(),
        }),
    }
}

fn error_code(e: &EvalError) -> &'static str {
    match e {
        EvalError::TargetingKeyMissing => "TARGETING_KEY_MISSING",
    }
}

fn subject<'a>(ctx: &'a TenantContext, targeting_key: Option<&'a str>) -> Subject<'a> {
    Subject {
        tenant: ctx.tenant_id().as_str(),
        plan: ctx.tenant().plan.as_str(),
        targeting_key,
    }
}

fn settings(ctx: &TenantContext) -> Result<std::sync::Arc<tenantd_edge::Settings>, Problem> {
    ctx.request().settings.clone().ok_or_else(Problem::internal)
}

/// Every flag's value for the tenant (`config:read`): `{flag: {value, reason, variant}}`.
#[utoipa::path(get, path = "/v1/tenants/{id}/features", tag = "flags", params(TenantPath, FeaturesQuery), responses((status = 200, description = "Every flag's evaluation, by key", body = Object)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn features(ctx: TenantContext, Query(q): Query<FeaturesQuery>) -> ApiResult<axum::Json<Value>> {
    ctx.require("config:read")?;
    let s = settings(&ctx)?;
    let subject = subject(&ctx, q.targeting_key.as_deref());
    let out: Map<String, Value> = s
        .flags
        .evaluate_all(&subject)
        .map(|(k, r)| (k.to_string(), shown(&s.flags, k, &r)))
        .collect();
    Ok(axum::Json(Value::Object(out)))
}

/// An OFREP request body: `{"context": {"targetingKey"?, …}}`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct OfrepRequest {
    /// The evaluation context; only `targetingKey` is read (the tenant comes from the
    /// credential).
    #[serde(default)]
    context: Option<Value>,
}

/// OFREP's answer for one flag.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OfrepEvaluation {
    /// The flag's key.
    key: String,
    /// Its value for the tenant and context.
    value: Value,
    /// `DISABLED`, `TARGETING_MATCH`, `SPLIT` or `DEFAULT`.
    reason: String,
    /// `default`, `tenant`, `plan` or `rollout`.
    variant: String,
    /// Always `{}`.
    metadata: Map<String, Value>,
}

/// OFREP's failure: an unknown flag, a missing targeting key, a bad context.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OfrepFailure {
    /// The flag's key (not on a bulk request's failure).
    key: Option<String>,
    /// `FLAG_NOT_FOUND`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT` or `PARSE_ERROR`.
    #[schema(rename = "errorCode")]
    error_code: String,
    /// Why, for people.
    #[schema(rename = "errorDetails")]
    error_details: String,
}

/// OFREP's bulk answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OfrepBulk {
    /// Every flag: an evaluation, or `{key, errorCode, errorDetails}`.
    flags: Vec<Value>,
}

/// An OFREP failure: `{key?, errorCode, errorDetails}` with its status.
fn ofrep_error(status: StatusCode, key: Option<&str>, code: &str, details: String) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    (status, axum::Json(body)).into_response()
}

/// The `targetingKey` of an OFREP body; `Err` is the `errorCode` and why.
fn targeting_key(raw: &[u8]) -> Result<Option<String>, (&'static str, String)> {
    let req: OfrepRequest = optional_json(raw).map_err(|p| ("PARSE_ERROR", p.detail))?;
    match req.context {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(mut c)) => match c.remove("targetingKey") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(k)) => Ok(Some(k)),
            Some(_) => Err(("INVALID_CONTEXT", "context.targetingKey must be a string".into())),
        },
        Some(_) => Err(("INVALID_CONTEXT", "context must be an object".into())),
    }
}

/// One flag's OFREP success body.
fn ofrep_success(key: &str, e: &Evaluation<'_>) -> Value {
    json!({"key": key, "value": e.value, "reason": e.reason, "variant": e.variant, "metadata": {}})
}

/// Evaluates one flag for the credential's tenant (`config:read`), as OFREP asks.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{flag}", tag = "flags", params(FlagPath), request_body = OfrepRequest, responses((status = 200, description = "The evaluation", body = OfrepEvaluation), (status = 400, description = "TARGETING_KEY_MISSING, INVALID_CONTEXT or PARSE_ERROR (OFREP's body); or tenantd's problem+json (no tenant)", content((OfrepFailure = "application/json"), (crate::routes::openapi::Problem = "application/problem+json"))), (status = 404, description = "FLAG_NOT_FOUND (OFREP's body); or tenantd's problem+json (no such tenant)", content((OfrepFailure = "application/json"), (crate::routes::openapi::Problem = "application/problem+json")))))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn ofrep_one(ctx: TenantContext, Path(key): Path<String>, RawBody(body): RawBody) -> ApiResult<Response> {
    ctx.require("config:read")?;
    let tk = match targeting_key(&body) {
        Ok(k) => k,
        Err((code, why)) => return Ok(ofrep_error(StatusCode::BAD_REQUEST, Some(&key), code, why)),
    };
    let s = settings(&ctx)?;
    Ok(match s.flags.evaluate(&key, &subject(&ctx, tk.as_deref())) {
        None => ofrep_error(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            format!("no flag '{key}'"),
        ),
        Some(Err(e)) => ofrep_error(StatusCode::BAD_REQUEST, Some(&key), error_code(&e), e.to_string()),
        Some(Ok(e)) => axum::Json(ofrep_success(&key, &e)).into_response(),
    })
}

/// Whether `If-None-Match` names `tag` (or `*`).
fn none_match(h: &HeaderMap, tag: &str) -> bool {
    h.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// Evaluates every flag for the credential's tenant (`config:read`): `{flags: […]}` with
/// an `ETag` of the answer; `304` when `If-None-Match` names it.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "flags", request_body = OfrepRequest, responses((status = 200, description = "Every flag's evaluation, with an ETag", body = OfrepBulk), (status = 304, description = "Not modified: If-None-Match names the answer's ETag"), (status = 400, description = "INVALID_CONTEXT or PARSE_ERROR (OFREP's body); or tenantd's problem+json (no tenant)", content((OfrepFailure = "application/json"), (crate::routes::openapi::Problem = "application/problem+json")))))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn ofrep_bulk(ctx: TenantContext, h: HeaderMap, RawBody(body): RawBody) -> ApiResult<Response> {
    ctx.require("config:read")?;
    let tk = match targeting_key(&body) {
        Ok(k) => k,
        Err((code, why)) => return Ok(ofrep_error(StatusCode::BAD_REQUEST, None, code, why)),
    };
    let s = settings(&ctx)?;
    let subject = subject(&ctx, tk.as_deref());
    let flags: Vec<Value> = s
        .flags
        .evaluate_all(&subject)
        .map(|(k, r)| match r {
            Ok(e) => ofrep_success(k, &e),
            Err(e) => json!({"key": k, "errorCode": error_code(&e), "errorDetails": e.to_string()}),
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "flags": flags })).map_err(|_| Problem::internal())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let tag = format!("\"{}\"", hex::encode(&digest.as_ref()[..16]));
    let etag = HeaderValue::from_str(&tag).map_err(|_| Problem::internal())?;
    if none_match(&h, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        ],
        body,
    )
        .into_response())
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, get, delete))
        .routes(routes!(features))
        .routes(routes!(ofrep_one))
        .routes(routes!(ofrep_bulk))
}
