//! Body and query extractors whose rejections are problem+json naming the field.
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;
use tenantd_edge::Problem;

/// A JSON body; a malformed one is `400 invalid_request` with serde's words (which name
/// the field).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;
    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::invalid(
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(Problem::invalid(format!(
                "invalid body: {}",
                e.body_text()
                    .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
            ))),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(Problem::invalid(format!(
                "the body is not valid JSON: {}",
                e.body_text()
                    .trim_start_matches("Failed to parse the request body as JSON: ")
            ))),
            Err(JsonRejection::BytesRejection(_)) => Err(Problem::new(
                tenantd_core::Code::PayloadTooLarge,
                "the request body is too large or could not be read",
            )),
            Err(e) => Err(Problem::invalid(e.body_text())),
        }
    }
}

/// Query parameters; a bad one is `400 invalid_request` naming it.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Problem::invalid(format!(
                "invalid query: {}",
                e.body_text().trim_start_matches("Failed to deserialize query string: ")
            ))),
            Err(e) => Err(Problem::invalid(e.body_text())),
        }
    }
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    /// 1..=1000, default 50.
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The store's page request, or `400` for a limit out of range.
    pub fn page(&self) -> Result<tenantd_store::PageRequest, Problem> {
        page(self.limit, self.cursor.clone())
    }
}

/// A page request from `limit` and `cursor`, or `400` for a limit out of range.
pub fn page(limit: Option<u32>, cursor: Option<String>) -> Result<tenantd_store::PageRequest, Problem> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid("limit must be between 1 and 1000"));
    }
    Ok(tenantd_store::PageRequest { limit, after: cursor })
}

/// A raw body (for endpoints that parse it themselves); too large is `413` problem+json.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;
    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|_| {
                Problem::new(
                    tenantd_core::Code::PayloadTooLarge,
                    "the request body is too large or could not be read",
                )
            })
    }
}
