//! [`EdgeLayer`]: the pipeline as a tower layer. It gives each request an id and a
//! tracing span (request_id, tenant_id), decides it, puts the [`RequestContext`] in the
//! request's extensions, and renders every [`Problem`] (its own or a handler's) as
//! problem+json carrying the request id.
use crate::context::RequestContext;
use crate::pipeline::{Edge, RequestInfo};
use crate::problem::Problem;
use crate::remote::RemoteEdge;
use axum::body::Body;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

/// Who decides: the pipeline in process, or a remote tenantd.
#[derive(Clone)]
enum Decider {
    Local(Arc<Edge>),
    Remote(Arc<RemoteEdge>),
}

/// Wraps a service with the edge pipeline.
#[derive(Clone)]
pub struct EdgeLayer {
    edge: Decider,
}

impl EdgeLayer {
    /// A layer deciding with `edge`, in process.
    pub fn new(edge: Arc<Edge>) -> Self {
        Self {
            edge: Decider::Local(edge),
        }
    }

    /// A layer asking a remote tenantd to decide each request.
    pub fn remote(edge: RemoteEdge) -> Self {
        Self {
            edge: Decider::Remote(Arc::new(edge)),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;
    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            edge: self.edge.clone(),
            inner,
        }
    }
}

/// The service [`EdgeLayer`] makes.
#[derive(Clone)]
pub struct EdgeService<S> {
    edge: Decider,
    inner: S,
}

impl<S> Service<Request<Body>> for EdgeService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let edge = self.edge.clone();
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { Ok(handle(edge, inner, req).await) })
    }
}

/// A new request id: `req_` and 32 hex digits.
pub fn new_request_id() -> String {
    format!("req_{:032x}", rand::random::<u128>())
}

/// The bearer token, `Err` when an `Authorization` header is present but not a bearer.
///
/// Two `Authorization` headers are `400 invalid_request`: which credential would act is
/// not for tenantd to guess.
pub fn bearer(req: &Parts) -> Result<Option<&str>, Problem> {
    let Some(v) = crate::pipeline::single_header(req, "authorization")? else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| Problem::unauthenticated("the Authorization header is not valid text"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(Problem::unauthenticated("use Authorization: Bearer <token>")),
    }
}

/// The decision and the headers its response gets (the rate-limit fields).
async fn decide(
    edge: &Decider,
    req: &Parts,
    request_id: String,
) -> Result<(RequestContext, Vec<(HeaderName, HeaderValue)>), Problem> {
    let info = RequestInfo {
        bearer: bearer(req)?,
        ..RequestInfo::of(req)?
    };
    match edge {
        Decider::Local(edge) => {
            let ctx = edge.decide(&info, request_id).await?;
            let headers = ctx
                .limit
                .as_ref()
                .map(crate::problem::rate_limit_headers)
                .unwrap_or_default();
            Ok((ctx, headers))
        }
        Decider::Remote(remote) => {
            let decided = remote.decide(&info, &request_id).await;
            // A local edge notes the tenant in the span itself.
            if let Ok((RequestContext { tenant: Some(t), .. }, _)) = &decided {
                tracing::Span::current().record("tenant_id", t.id.as_str());
            }
            decided
        }
    }
}

async fn handle<S>(edge: Decider, mut inner: S, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let request_id = new_request_id();
    let start = Instant::now();
    let span = tracing::info_span!("request", request_id = %request_id, tenant_id = tracing::field::Empty);
    async move {
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let mut resp = match decide(&edge, &parts, request_id.clone()).await {
            Ok((ctx, headers)) => {
                parts.extensions.insert(Arc::new(ctx));
                let mut r = match inner.call(Request::from_parts(parts, body)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                for (k, v) in headers {
                    r.headers_mut().insert(k, v);
                }
                r
            }
            Err(p) => p.render(&request_id),
        };
        if let Some(p) = resp.extensions_mut().remove::<Problem>() {
            resp = p.render(&request_id);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        tracing::info!(method = %method, path = %path, status = resp.status().as_u16(), latency_us = start.elapsed().as_micros() as u64, "request");
        resp
    }
    .instrument(span)
    .await
}
