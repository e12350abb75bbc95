//! Blobs (docs/api.md): content streamed up and down in chunks, its content type kept,
//! listed by prefix; counted toward `storage_bytes`.
use crate::error::ApiResult;
use crate::levels::StorageLevel;
use crate::routes::data::etag;
use crate::state::State;
use axum::body::Body;
use axum::extract::{Path, State as S};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use tenantd_core::Code;
use tenantd_data::{check_blob_path, new_blob_id, Blob};
use tenantd_edge::{Problem, TenantContext};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Bytes per stored chunk: what is held in memory per upload or download.
const CHUNK: usize = 256 * 1024;

/// An upload not committed for this long is abandoned: its chunks are removed.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `{*path}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BlobPath {
    /// 1 to 1024 characters of `/`-separated segments: none empty, `.` or `..`, and no
    /// control characters.
    #[param(
        max_length = 1024,
        pattern = "^[^/\\x00-\\x1f\\x7f-\\x9f]+(/[^/\\x00-\\x1f\\x7f-\\x9f]+)*$"
    )]
    path: String,
}

/// Stores a blob (`blobs:write`), streamed: the body is read and stored a chunk at a
/// time, never whole. Its `Content-Type` is kept (default `application/octet-stream`).
/// `201` when new, `200` when it replaced one, with `ETag`; `413` past
/// `max_blob_bytes`; `429` when it would pass a hard `storage_bytes` limit (nothing is
/// stored).
#[utoipa::path(put, path = "/v1/data/blobs/{*path}", tag = "data", params(BlobPath), request_body(content = Option<crate::routes::openapi::Bytes>, content_type = "application/octet-stream", description = "The content (may be empty). Any `Content-Type` is taken and kept with the blob (default `application/octet-stream`)"), responses((status = 201, description = "Stored", body = Blob), (status = 200, description = "Replaced", body = Blob)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn put(
    S(state): S<State>,
    ctx: TenantContext,
    Path(p): Path<BlobPath>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    ctx.require("blobs:write")?;
    check_blob_path(&p.path).map_err(crate::error::ApiError::from)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .unwrap_or("application/octet-stream")
        .to_string();
    let max_blob = state.cfg.max_blob_bytes;
    let too_large = || {
        Problem::new(
            Code::PayloadTooLarge,
            format!("a blob may be at most {max_blob} bytes (max_blob_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_blob) {
        return Err(too_large().closing().into());
    }
    let level = StorageLevel::of(&state, &ctx).await?;
    let scope = state.scope(&ctx).await?;
    // A declared length past the limit is refused before anything is read.
    if let (Some(n), Some(max)) = (declared, level.max) {
        let used = scope.used().await.map_err(crate::error::ApiError::from)?;
        if used.saturating_add(n) > max {
            return Err(level.refuse(&ctx, used, n));
        }
    }
    let blob_id = new_blob_id();
    let stored: ApiResult<Blob> = async {
        let (size, sha256, chunks) = match upload(&scope, &blob_id, body, max_blob, level.max).await {
            Ok(v) => v,
            Err(Refused::TooLarge) => return Err(too_large().into()),
            Err(Refused::OverLevel(wanted)) => {
                let used = scope.used().await.map_err(crate::error::ApiError::from)?;
                return Err(level.refuse(&ctx, used, wanted));
            }
            Err(Refused::Other(p)) => return Err(p.into()),
        };
        let new = Blob {
            path: p.path,
            blob_id: blob_id.clone(),
            content_type,
            size_bytes: size as i64,
            sha256,
            version: 0,
            created_at: 0,
            updated_at: 0,
        };
        let written = scope.commit_blob(&new, chunks, level.max).await;
        level.settle(&state, &ctx, written).await
    }
    .await;
    let b = match stored {
        Ok(b) => b,
        Err(e) => {
            if let Err(d) = scope.discard_chunks(&blob_id).await {
                tracing::warn!(error = %d, "a refused upload's chunks were not removed");
            }
            return Err(e);
        }
    };
    // Now and then, the chunks of this tenant's uploads that never finished (a process
    // stopped mid-upload) are removed.
    if rand::random::<u8>() < 8 {
        match scope.sweep_abandoned_uploads(ABANDONED_AFTER).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tenant_id = %ctx.tenant_id(), chunks = n, "removed abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "could not remove abandoned uploads"),
        }
    }
    let status = if b.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, axum::Json(&b)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(b.version));
    Ok(resp)
}

/// Why an upload stopped.
enum Refused {
    /// Larger than `max_blob_bytes`.
    TooLarge,
    /// Larger (this many bytes so far) than the storage limit allows.
    OverLevel(u64),
    Other(Problem),
}

/// Reads the body a chunk at a time into staged chunks; returns its size, SHA-256 and
/// how many chunks.
async fn upload(
    scope: &tenantd_data::Scope<'_>,
    blob_id: &str,
    body: Body,
    max_blob: u64,
    max_level: Option<u64>,
) -> Result<(u64, String, i64), Refused> {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut size, mut seq) = (0u64, 0i64);
    let fail = |e: tenantd_data::DataError| Refused::Other(crate::error::ApiError::from(e).0);
    loop {
        let next = stream.next().await;
        let last = next.is_none();
        if let Some(frame) = next {
            let bytes =
                frame.map_err(|e| Refused::Other(Problem::invalid(format!("the body could not be read: {e}"))))?;
            size += bytes.len() as u64;
            if size > max_blob {
                return Err(Refused::TooLarge);
            }
            if max_level.is_some_and(|m| size > m) {
                return Err(Refused::OverLevel(size));
            }
            hash.update(&bytes);
            buf.extend_from_slice(&bytes);
        }
        while buf.len() >= CHUNK || (last && !buf.is_empty()) {
            let n = buf.len().min(CHUNK);
            scope.stage_chunk(blob_id, seq, &buf[..n]).await.map_err(fail)?;
            buf.drain(..n);
            seq += 1;
        }
        if last {
            return Ok((size, hex::encode(hash.finish()), seq));
        }
    }
}

/// What keeps a tenant's blob from running in a browser as tenantd's own page (stored
/// XSS): the browser may not guess another type (`nosniff`), a type it would run (HTML,
/// SVG, XML, script) is a download (`attachment`), and a page opened anyway runs nothing
/// (`sandbox`).
fn served_safely(headers: &mut HeaderMap, content_type: &str) {
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if runs_in_a_browser(content_type) {
        headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
}

/// Whether a browser would render `content_type` as a document that can run script.
fn runs_in_a_browser(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.contains("html")
        || essence.contains("xml")
        || essence.contains("svg")
        || essence.contains("script")
        || essence == "text/xsl"
        || essence == "application/x-shockwave-flash"
        || essence == "application/pdf"
        || essence.is_empty()
}

/// A blob's content (`blobs:read`), streamed, with its `Content-Type`, `Content-Length`
/// and `ETag`, served so no browser runs it ([`served_safely`]).
#[utoipa::path(get, path = "/v1/data/blobs/{*path}", tag = "data", params(BlobPath), responses((status = 200, description = "The content, with the type it was stored with", content_type = "*/*", body = crate::routes::openapi::Bytes)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get(S(state): S<State>, ctx: TenantContext, Path(p): Path<BlobPath>) -> ApiResult<Response> {
    ctx.require("blobs:read")?;
    check_blob_path(&p.path).map_err(crate::error::ApiError::from)?;
    let b = state
        .scope(&ctx)
        .await?
        .get_blob(&p.path)
        .await
        .map_err(crate::error::ApiError::from)?
        .ok_or_else(|| Problem::not_found("blob"))?;
    let tenant = *ctx.tenant_id();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&b.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b.size_bytes));
    headers.insert(header::ETAG, etag(b.version));
    served_safely(&mut headers, &b.content_type);
    let chunks = futures_util::stream::unfold((state, b, 0i64), move |(state, b, seq)| async move {
        let next = match state.data.scope(tenant, None).await {
            Ok(s) => s.chunk(&b, seq).await,
            Err(e) => Err(e),
        };
        match next {
            Ok(Some(data)) => Some((Ok(axum::body::Bytes::from(data)), (state, b, seq + 1))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "a blob download failed part-way");
                Some((Err(std::io::Error::other(e.to_string())), (state, b, i64::MAX)))
            }
        }
    });
    Ok((StatusCode::OK, headers, Body::from_stream(chunks)).into_response())
}

/// Deletes a blob (`blobs:write`): `204`; `404` if this tenant has none at that path.
#[utoipa::path(delete, path = "/v1/data/blobs/{*path}", tag = "data", params(BlobPath), responses((status = 204, description = "Deleted")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(S(state): S<State>, ctx: TenantContext, Path(p): Path<BlobPath>) -> ApiResult<StatusCode> {
    ctx.require("blobs:write")?;
    check_blob_path(&p.path).map_err(crate::error::ApiError::from)?;
    let written = state.scope(&ctx).await?.delete_blob(&p.path).await;
    crate::levels::deleted(&state, &ctx, written, "blob").await
}

/// `GET /v1/data/blobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListBlobs {
    /// Only paths starting with this.
    prefix: Option<String>,
    /// Items per page: 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`, as it was given (any other value is `400`).
    cursor: Option<String>,
}

/// The tenant's blobs by path, a page at a time (`blobs:read`), optionally only those
/// under `?prefix=`.
#[utoipa::path(get, path = "/v1/data/blobs", tag = "data", params(ListBlobs), responses((status = 200, description = "A page of blobs, by path", body = tenantd_store::Page<Blob>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    S(state): S<State>,
    ctx: TenantContext,
    crate::extract::Query(q): crate::extract::Query<ListBlobs>,
) -> ApiResult<axum::Json<tenantd_store::Page<Blob>>> {
    ctx.require("blobs:read")?;
    let page = crate::extract::page(q.limit, q.cursor)?;
    let cursors = state.catalog.cursors();
    let after = page.after.as_deref().map(|c| cursors.open(c)).transpose()?;
    let found = state
        .scope(&ctx)
        .await?
        .list_blobs(q.prefix.as_deref().unwrap_or(""), after.as_deref(), page.limit + 1)
        .await
        .map_err(crate::error::ApiError::from)?;
    Ok(axum::Json(cursors.page(found, page.limit, |b| b.path.clone())))
}

/// This module's routes, with their OpenAPI descriptions.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, get, delete))
}
