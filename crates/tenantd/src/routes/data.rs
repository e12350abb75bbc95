//! Tenant data (docs/api.md): JSON records in named collections, blobs and a cache,
//! for the tenant of the request's context, wherever its placement puts it.
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::levels::StorageLevel;
use crate::routes::openapi::{PageParams, RecordDoc};
use crate::state::State;
use axum::extract::{Path, State as S};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tenantd_core::Code;
use tenantd_data::Record;
use tenantd_edge::{Problem, TenantContext};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Records scanned per batch while filtering a page.
const SCAN_BATCH: u32 = 500;

/// A version as an `ETag` (`"3"`).
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// A record answer with its `ETag`.
fn answer(status: StatusCode, r: &Record) -> Response {
    let mut resp = (status, axum::Json(r)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(r.version));
    resp
}

fn object(v: Value) -> Result<Map<String, Value>, Problem> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Problem::invalid("the record must be a JSON object")),
    }
}

/// `{c}` in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CollectionPath {
    /// The collection: 1–128 of letters, digits, `_`, `-` or `.`.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    c: String,
}

/// `{c}` and `{rid}` in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecordPath {
    /// The collection: 1–128 of letters, digits, `_`, `-` or `.`.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    c: String,
    /// The record's id (tenantd makes `rec_…`): 1–128 of letters, digits, `_`, `-` or
    /// `.`.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    rid: String,
}

/// `If-Match` on a write.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatch {
    /// Apply only at this version: the record's `ETag` (`"3"`), or `*` for any.
    #[param(rename = "If-Match", pattern = "^(\\*|\"[0-9]{1,18}\")?$")]
    if_match: Option<String>,
}

/// Creates a record with a new id (`records:write`): `201` with the record and its `ETag`.
#[utoipa::path(post, path = "/v1/data/collections/{c}/records", tag = "data", params(CollectionPath), request_body = RecordDoc, responses((status = 201, description = "The record, with its `ETag` and `Location`", body = Record)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<CollectionPath>,
    Json(doc): Json<Value>,
) -> ApiResult<Response> {
    ctx.require("records:write")?;
    let doc = Value::Object(object(doc)?);
    let id = tenantd_store::new_id("rec");
    let level = StorageLevel::of(&state, &ctx).await?;
    let written = state.scope(&ctx).await?.put_record(&p.c, &id, &doc, level.max).await;
    let r = level.settle(&state, &ctx, written).await?;
    let mut resp = answer(StatusCode::CREATED, &r);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/data/collections/{}/records/{}", r.collection, r.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// A record (`records:read`), with its `ETag`.
#[utoipa::path(get, path = "/v1/data/collections/{c}/records/{rid}", tag = "data", params(RecordPath), responses((status = 200, description = "The record, with its `ETag`", body = Record)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext, Path(p): Path<RecordPath>) -> ApiResult<Response> {
    ctx.require("records:read")?;
    let r = state
        .scope(&ctx)
        .await?
        .get_record(&p.c, &p.rid)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| Problem::not_found("record"))?;
    Ok(answer(StatusCode::OK, &r))
}

/// One filter on a top-level field: `field=value`, or `field[gt|gte|lt|lte]=value`.
#[derive(Debug, PartialEq)]
struct Filter {
    field: String,
    op: Op,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Filter {
    fn parse(key: &str, raw: &str) -> Result<Self, Problem> {
        let (field, op) = match key.split_once('[') {
            None => (key, Op::Eq),
            Some((field, rest)) => {
                let op = match rest {
                    "gt]" => Op::Gt,
                    "gte]" => Op::Gte,
                    "lt]" => Op::Lt,
                    "lte]" => Op::Lte,
                    _ => {
                        return Err(Problem::invalid(format!(
                            "filter '{key}': use field=value or field[gt|gte|lt|lte]=value"
                        )))
                    }
                };
                (field, op)
            }
        };
        if field.is_empty() {
            return Err(Problem::invalid(format!("filter '{key}' names no field")));
        }
        // A number, true, false or null as JSON; anything else is a string.
        let value = serde_json::from_str::<Value>(raw)
            .ok()
            .filter(|v| !v.is_object() && !v.is_array() && !v.is_string())
            .unwrap_or_else(|| Value::String(raw.to_string()));
        Ok(Filter {
            field: field.to_string(),
            op,
            value,
        })
    }

    fn matches(&self, doc: &Value) -> bool {
        let Some(v) = doc.get(&self.field) else {
            return false;
        };
        let ord = match (v, &self.value) {
            (Value::Number(a), Value::Number(b)) => a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            // true, false and null only compare equal.
            (a, b) if self.op == Op::Eq => return a == b,
            _ => None,
        };
        ord.is_some_and(|o| match self.op {
            Op::Eq => o.is_eq(),
            Op::Gt => o.is_gt(),
            Op::Gte => o.is_ge(),
            Op::Lt => o.is_lt(),
            Op::Lte => o.is_le(),
        })
    }
}

/// The collection's records by id, a page at a time (`records:read`). `?limit=` (1 to
/// 1000, default 50) and `?cursor=`; any other parameter filters on a top-level field:
/// `status=paid`, `total[gte]=10` (`gt`, `gte`, `lt`, `lte`).
#[utoipa::path(get, path = "/v1/data/collections/{c}/records", tag = "data", params(CollectionPath, PageParams), responses((status = 200, description = "A page of records, by id", body = tenantd_store::Page<Record>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<CollectionPath>,
    crate::extract::Query(q): crate::extract::Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<tenantd_store::Page<Record>>> {
    ctx.require("records:read")?;
    // A limit that is not a number is out of range, as 0 is.
    let limit = q.get("limit").map(|l| l.parse::<u32>().unwrap_or(0));
    let page = crate::extract::page(limit, q.get("cursor").cloned())?;
    let cursors = state.catalog.cursors();
    let mut after = page.after.as_deref().map(|c| cursors.open(c)).transpose()?;
    let filters = q
        .iter()
        .filter(|(k, _)| *k != "limit" && *k != "cursor")
        .map(|(k, v)| Filter::parse(k, v))
        .collect::<Result<Vec<_>, _>>()?;
    let scope = state.scope(&ctx).await?;
    let mut items = Vec::new();
    // Scan in id order until a page (and one more, to know there is a next) matches.
    while items.len() <= page.limit as usize {
        let batch = scope
            .list_records(&p.c, after.as_deref(), SCAN_BATCH)
            .await
            .map_err(ApiError::from)?;
        let last = batch.len() < SCAN_BATCH as usize;
        after = batch.last().map(|r| r.id.clone());
        items.extend(batch.into_iter().filter(|r| filters.iter().all(|f| f.matches(&r.doc))));
        if last {
            break;
        }
    }
    let found = cursors.page(items, page.limit, |r| r.id.clone());
    Ok(axum::Json(found))
}

/// The version an `If-Match` header asks for: `"3"` (or `*`, or an empty list: any).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or_default().trim();
    if v == "*" || v.is_empty() {
        return Ok(None);
    }
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| Problem::invalid("If-Match must be the record's ETag, such as \"3\""))
}

/// Changes a record with a JSON merge patch (RFC 7396: `null` removes a field)
/// (`records:write`). With `If-Match`, only at that version: otherwise `409 conflict`.
#[utoipa::path(patch, path = "/v1/data/collections/{c}/records/{rid}", tag = "data", params(RecordPath, IfMatch), request_body(content = RecordDoc, description = "A JSON merge patch (RFC 7386)"), responses((status = 200, description = "The record, with its new `ETag`", body = Record)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn patch(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<RecordPath>,
    headers: HeaderMap,
    Json(patch): Json<Value>,
) -> ApiResult<Response> {
    ctx.require("records:write")?;
    let patch = object(patch)?;
    let wanted = if_match(&headers)?;
    let scope = state.scope(&ctx).await?;
    let current = scope
        .get_record(&p.c, &p.rid)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| Problem::not_found("record"))?;
    if wanted.is_some_and(|w| w != current.version) {
        return Err(Problem::new(
            Code::Conflict,
            format!(
                "the record has changed: its version is now {}; read it again and retry",
                current.version
            ),
        )
        .into());
    }
    let mut doc = current.doc;
    if let Value::Object(m) = &mut doc {
        for (k, v) in patch {
            merge(m, k, v);
        }
    }
    let level = StorageLevel::of(&state, &ctx).await?;
    let written = match scope
        .update_record(&p.c, &p.rid, &doc, current.version, level.max)
        .await
        .transpose()
    {
        None => None,
        Some(w) => Some(level.settle(&state, &ctx, w).await?),
    };
    match written {
        Some(r) => Ok(answer(StatusCode::OK, &r)),
        // Written by another request between the read and the write.
        None => Err(Problem::new(
            Code::Conflict,
            "the record changed while this patch was applied; read it again and retry",
        )
        .into()),
    }
}

/// RFC 7396 for one member.
fn merge(target: &mut Map<String, Value>, key: String, patch: Value) {
    match patch {
        Value::Null => {
            target.remove(&key);
        }
        Value::Object(p) => {
            let slot = target.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                for (k, v) in p {
                    merge(inner, k, v);
                }
            }
        }
        other => {
            target.insert(key, other);
        }
    }
}

/// Deletes a record (`records:write`): `204`; `404` if this tenant has no such record.
#[utoipa::path(delete, path = "/v1/data/collections/{c}/records/{rid}", tag = "data", params(RecordPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<RecordPath>) -> ApiResult<StatusCode> {
    ctx.require("records:write")?;
    let written = state.scope(&ctx).await?.delete_record(&p.c, &p.rid).await;
    crate::levels::deleted(&state, &ctx, written, "record").await
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, patch, delete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_compare_numbers_strings_and_literals() {
        let doc = json!({"status": "paid", "total": 12.5, "n": 3, "ok": true, "tags": ["a"]});
        let f = |k: &str, v: &str| Filter::parse(k, v).unwrap().matches(&doc);
        assert!(f("status", "paid") && !f("status", "open"));
        assert!(f("total[gt]", "12") && f("total[gte]", "12.5") && !f("total[lt]", "12.5"));
        assert!(f("n", "3") && f("n", "3.0") && f("n[lte]", "3"));
        assert!(f("ok", "true") && !f("ok", "false"));
        assert!(f("status[gte]", "o") && !f("status[gt]", "paid"));
        assert!(
            !f("missing", "x") && !f("total[gt]", "abc"),
            "no field, or types that do not compare"
        );
        assert!(Filter::parse("total[between]", "1").is_err());
        assert!(Filter::parse("[gt]", "1").is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut m = object(json!({"a": "b", "c": {"d": "e", "f": "g"}})).unwrap();
        for (k, v) in object(json!({"a": "z", "c": {"f": null}, "n": {"x": 1}})).unwrap() {
            merge(&mut m, k, v);
        }
        assert_eq!(Value::Object(m), json!({"a": "z", "c": {"d": "e"}, "n": {"x": 1}}));
    }

    #[test]
    fn if_match_takes_the_etag() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            if_match(&m)
        };
        assert_eq!(h("\"3\"").unwrap(), Some(3));
        assert_eq!(h("*").unwrap(), None);
        assert!(h("3").is_err() && h("W/\"3\"").is_err());
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
    }
}
