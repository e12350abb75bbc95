//! The gateway (docs/gateway.md): a second listener that runs every request through the edge
//! pipeline (resolve → authenticate → authorize → admit → meter) and proxies it to the
//! upstream, or to the tenant's own `upstream` setting, with the identity headers of the
//! contract. Bodies stream both ways; upstream connections are pooled and kept alive;
//! WebSocket upgrades pass through once admitted. The `[gateway]` table of the
//! configuration file is reloaded on SIGHUP or when the file changes.

mod proxy;
pub mod settings;

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use dashmap::DashMap;
use futures_util::FutureExt;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxy::{set_forwarded, strip_hop_by_hop, strip_identity, tunnel, wants_upgrade};
pub use settings::{GatewayFile, GatewaySettings, Route, RouteFile};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tenantd_core::{Code, TenantId};
use tenantd_edge::jwt::{Claims, CONTEXT_AUDIENCE, ISSUER};
use tenantd_edge::layer::{bearer, new_request_id};
use tenantd_edge::{Edge, Principal, Problem, RequestContext, RequestInfo, RouteNeeds, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type HttpClient = Client<HttpConnector, ProxyBody>;

/// How long an `X-Tenant-Context` token is valid.
pub const CONTEXT_TOKEN_SECONDS: i64 = 60;
/// A cached context token is replaced when it has less than this left.
const CONTEXT_TOKEN_MIN_LEFT: i64 = 15;
/// Cached context tokens before the cache is emptied.
const CONTEXT_TOKENS_MAX: usize = 100_000;

/// Counters the gateway keeps (exposed at `/metrics`).
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Requests received.
    pub requests: AtomicU64,
    /// Answered `502 upstream_unavailable`.
    pub upstream_unavailable: AtomicU64,
    /// Answered `504 upstream_timeout`.
    pub upstream_timeouts: AtomicU64,
    /// Configuration reloads applied.
    pub reloads: AtomicU64,
    /// Reloads refused (invalid file).
    pub reload_failures: AtomicU64,
    /// Time from sending a request upstream to its response head.
    pub upstream_latency: crate::metrics::requests::Latency,
}

thread_local! {
    /// The gateway worker this thread is (0 outside the workers).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct Live {
    settings: GatewaySettings,
    /// One upstream pool per worker: a connection stays on the worker (and runtime)
    /// that opened it.
    clients: Vec<HttpClient>,
}

impl Live {
    fn new(settings: GatewaySettings, workers: usize) -> Self {
        let clients = (0..workers.max(1))
            .map(|_| {
                let mut conn = HttpConnector::new();
                conn.set_connect_timeout(Some(settings.connect_timeout));
                conn.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(conn)
            })
            .collect();
        Self { settings, clients }
    }

    fn client(&self) -> &HttpClient {
        &self.clients[WORKER.with(|w| w.get()) % self.clients.len()]
    }
}

/// Whom a cached context token is for: tenant, actor, role, plan.
type TokenParts<'a> = (&'a TenantId, &'a str, &'a str, &'a str);

/// A cached token: whom it is for (owned), the token, its expiry (Unix seconds).
type CachedToken = ((TenantId, String, String, String), HeaderValue, i64);

/// Context tokens by a hash of whom they are for. A hit compares the stored parts, so a
/// request that finds its token allocates nothing, and a hash collision only signs anew.
#[derive(Default)]
struct TokenCache {
    seed: std::collections::hash_map::RandomState,
    map: DashMap<u64, CachedToken>,
}

impl TokenCache {
    /// The token for `parts` while it has at least `CONTEXT_TOKEN_MIN_LEFT` left at `now`.
    fn get(&self, parts: TokenParts<'_>, now: i64) -> Option<HeaderValue> {
        use std::hash::BuildHasher;
        let e = self.map.get(&self.seed.hash_one(parts))?;
        let (k, token, exp) = &*e;
        let same = (&k.0, k.1.as_str(), k.2.as_str(), k.3.as_str()) == parts;
        (same && exp - now >= CONTEXT_TOKEN_MIN_LEFT).then(|| token.clone())
    }

    fn put(&self, parts: TokenParts<'_>, token: HeaderValue, exp: i64) {
        use std::hash::BuildHasher;
        if self.map.len() >= CONTEXT_TOKENS_MAX {
            self.map.clear();
        }
        let (t, a, r, p) = parts;
        let owned = (*t, a.to_string(), r.to_string(), p.to_string());
        self.map.insert(self.seed.hash_one(parts), (owned, token, exp));
    }
}

/// The gateway: the edge, the default upstream and the live settings.
pub struct Gateway {
    edge: Arc<Edge>,
    upstream: Upstream,
    live: ArcSwap<Live>,
    workers: usize,
    tokens: TokenCache,
    config_path: Option<PathBuf>,
    metrics: GatewayMetrics,
}

impl Gateway {
    /// A gateway deciding with `edge` and proxying to `upstream` by default.
    pub fn new(
        edge: Arc<Edge>,
        upstream: Upstream,
        settings: GatewaySettings,
        config_path: Option<PathBuf>,
        workers: usize,
    ) -> Self {
        Self {
            edge,
            upstream,
            live: ArcSwap::from_pointee(Live::new(settings, workers)),
            workers,
            tokens: TokenCache::default(),
            config_path,
            metrics: GatewayMetrics::default(),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// Serves on `listener` with one worker per upstream pool, each a thread with a
    /// single-threaded runtime, like nginx's workers: a request never wakes another
    /// thread. The acceptor (on the caller's runtime) hands connections to the workers in
    /// turn, so each carries an even share. Everything stops accepting when `stop` turns
    /// true; each worker ends once its connections have finished.
    pub fn serve_workers(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        connections: Arc<crate::conn::Connections>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let mut senders = Vec::with_capacity(self.workers);
        let mut workers = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            senders.push(tx);
            let gw = self.clone();
            let stop = stop.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("tenantd-gateway-{i}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(i));
                        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                            Ok(rt) => rt,
                            Err(e) => return tracing::error!(error = %e, worker = i, "gateway worker could not start"),
                        };
                        rt.block_on(gw.worker(rx, stop, i))
                    })?,
            );
        }
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut next = 0usize;
            crate::conn::accept_each(listener, connections, stop, |s, guard| match s.into_std() {
                Ok(s) => {
                    let _ = senders[next % senders.len()].send((s, guard));
                    next = next.wrapping_add(1);
                }
                Err(e) => tracing::warn!(error = %e, "gateway connection dropped"),
            })
            .await;
        });
        Ok(workers)
    }

    /// One worker: serves the connections the acceptor hands it, each under the
    /// `[server]` limits with hyper's HTTP/1.1 server (upgrades allowed), until `stop`;
    /// then lets them finish.
    async fn worker(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, crate::conn::ConnGuard)>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        i: usize,
    ) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (s, guard) = tokio::select! {
                handed = rx.recv() => match handed {
                    Some(h) => h,
                    None => break,
                },
                // Reap finished connections as they end.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                _ = stop.wait_for(|s| *s) => break,
            };
            // Registered with this worker's runtime from here on.
            let stream = match tokio::net::TcpStream::from_std(s) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, worker = i, "gateway connection dropped");
                    continue;
                }
            };
            let peer = match stream.peer_addr() {
                Ok(p) => p,
                Err(_) => continue,
            };
            let gw = self.clone();
            let handler = move |req: Request<Body>| {
                let gw = gw.clone();
                async move {
                    // A panic answers 500 for its request only; the connection and the
                    // worker go on.
                    std::panic::AssertUnwindSafe(handle(gw, peer, req))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!("gateway request handler panicked");
                            Problem::internal().render(&new_request_id())
                        })
                }
            };
            conns.spawn(crate::conn::serve(stream, guard, handler, stop.clone()));
        }
        while conns.join_next().await.is_some() {}
    }

    /// Re-reads the `[gateway]` table of the configuration file. An invalid file changes
    /// nothing; the error says why. `Ok(false)` when nothing changed.
    pub fn reload(&self) -> Result<bool, String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("there is no configuration file (--config) to reload")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: crate::config::FileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let settings = GatewaySettings::from_file(file.gateway.unwrap_or_default())?;
        if settings == self.live.load().settings {
            return Ok(false);
        }
        // Requests in flight keep the client they started with; new ones use the new.
        self.live.store(Arc::new(Live::new(settings, self.workers)));
        Ok(true)
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(true) => {
                self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(trigger = why, "gateway configuration reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(trigger = why, error = %e, "gateway configuration refused; the previous one stays in force");
            }
        }
    }

    /// Reloads on SIGHUP and, every `reload_poll`, when the file's modification time
    /// changes. Runs until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = mtime(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let poll = self.live.load().settings.reload_poll;
            let tick = async {
                if poll.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(poll).await
                }
            };
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => {
                    seen = mtime(&path);
                    self.reload_logged("SIGHUP");
                }
                _ = tick => {
                    let now = mtime(&path);
                    if now != seen {
                        seen = now;
                        self.reload_logged("file changed");
                    }
                }
            }
        }
    }

    /// The `X-Tenant-Context` token for this principal, role and tenant: signed once and
    /// reused while it has at least 15 s left.
    fn context_token(&self, ctx: &RequestContext, actor: Option<&str>) -> Option<HeaderValue> {
        let tenant = ctx.tenant.as_ref()?;
        let now = tenantd_core::now_secs();
        let actor = actor.unwrap_or("anonymous");
        let role = ctx.role.as_ref().map_or("", |r| r.name.as_str());
        let parts = (&tenant.id, actor, role, tenant.plan.as_str());
        if let Some(t) = self.tokens.get(parts, now) {
            return Some(t);
        }
        let claims = Claims {
            iss: ISSUER.into(),
            sub: actor.to_string(),
            email: match &ctx.principal {
                Some(Principal::User { email, .. }) => email.clone(),
                _ => String::new(),
            },
            tid: Some(tenant.id.to_string()),
            roles: ctx.role.iter().map(|r| r.name.clone()).collect(),
            plan: Some(tenant.plan.to_string()),
            iat: now,
            nbf: now,
            exp: now + CONTEXT_TOKEN_SECONDS,
            jti: tenantd_store::new_id("jti"),
            aud: Some(CONTEXT_AUDIENCE.into()),
        };
        let value = HeaderValue::from_str(&self.edge.signer().sign(&claims)).ok()?;
        self.tokens.put(parts, value.clone(), claims.exp);
        Some(value)
    }

    async fn proxy(&self, peer: SocketAddr, req: Request<Body>, request_id: &str) -> Result<Response<Body>, Problem> {
        let live = self.live.load_full();
        let s = &live.settings;
        let route = s.route(req.method(), req.uri().path());
        let needs = RouteNeeds {
            permission: route.and_then(|r| r.permission.as_deref()),
            public: route.is_some_and(|r| r.public),
        };
        let too_large = || {
            Problem::new(
                Code::PayloadTooLarge,
                format!("the request body is larger than {} bytes", s.max_body_bytes),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > s.max_body_bytes) {
            return Err(too_large().closing());
        }
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;
        let info = RequestInfo {
            // A public route's Authorization header is the upstream's, not tenantd's.
            bearer: if needs.public { None } else { bearer(&parts)? },
            cost: Some(route.map_or(1, |r| r.cost)),
            route: Some(needs),
            ..RequestInfo::of(&parts)?
        };
        let ctx = self.edge.decide(&info, request_id.to_string()).await?;
        // The edge gives every admitted gateway request a tenant.
        let tenant = ctx.tenant.as_ref().ok_or_else(Problem::internal)?;
        let upstream = match &tenant.upstream {
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                tracing::error!(tenant_id = %tenant.id, error = %e, "the tenant's upstream setting is not usable");
                return Err(Problem::new(
                    Code::UpstreamUnavailable,
                    "the tenant's upstream is not configured correctly",
                ));
            }
            None => &self.upstream,
        };
        let uri = upstream.uri(parts.uri.path_and_query())?;
        let upgrade = wants_upgrade(&parts.headers)
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
            .flatten();
        let mut headers = std::mem::take(&mut parts.headers);
        let original_host = headers.remove(header::HOST);
        strip_hop_by_hop(&mut headers, upgrade.is_some());
        strip_identity(&mut headers);
        if !needs.public {
            // The caller's tenantd credential is not the upstream's business; it gets
            // X-Tenant-Context instead.
            headers.remove(header::AUTHORIZATION);
        }
        self.set_identity(&mut headers, &ctx, request_id);
        if route.is_some_and(|r| r.features) {
            set_features(&mut headers, &ctx);
        }
        set_forwarded(&mut headers, peer, original_host);
        let mut up = Request::new(
            Limited::new(body, s.max_body_bytes as usize)
                .map_err(BoxError::from)
                .boxed_unsync(),
        );
        *up.method_mut() = parts.method;
        *up.uri_mut() = uri;
        *up.headers_mut() = headers;
        let sent = Instant::now();
        let mut resp = match tokio::time::timeout(s.request_timeout, live.client().request(up)).await {
            Err(_) => {
                self.metrics.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(Problem::new(
                    Code::UpstreamTimeout,
                    format!(
                        "the upstream did not answer within {} ms",
                        s.request_timeout.as_millis()
                    ),
                ));
            }
            Ok(Err(e)) => return Err(self.upstream_error(&e, too_large)),
            Ok(Ok(r)) => {
                self.metrics.upstream_latency.0.observe(sent.elapsed().as_secs_f64());
                r
            }
        };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            if let Some(client) = upgrade {
                tokio::spawn(tunnel(client, hyper::upgrade::on(&mut resp)));
            }
        }
        let (mut rp, rb) = resp.into_parts();
        // The client's protocol version, not the upstream's (an HTTP/1.0 upstream must
        // not turn the client's keep-alive connection into a closing one).
        rp.version = client_version;
        strip_hop_by_hop(&mut rp.headers, switching);
        if let Some(l) = &ctx.limit {
            for (k, v) in tenantd_edge::problem::rate_limit_headers(l) {
                rp.headers.insert(k, v);
            }
        }
        Ok(Response::from_parts(rp, Body::new(rb)))
    }

    fn set_identity(&self, h: &mut HeaderMap, ctx: &RequestContext, request_id: &str) {
        let mut set = |name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        if let Some(t) = &ctx.tenant {
            set("x-tenant-id", t.id.as_str());
            set("x-tenant-plan", t.plan.as_str());
        }
        let actor = ctx.principal.as_ref().map(Principal::actor);
        if let Some(a) = &actor {
            set("x-principal-id", a);
        }
        if let Some(r) = &ctx.role {
            set("x-principal-role", &r.name);
        }
        set("x-request-id", request_id);
        if let Some(tok) = self.context_token(ctx, actor.as_deref()) {
            h.insert(HeaderName::from_static("x-tenant-context"), tok);
        }
    }

    fn upstream_error(&self, e: &hyper_util::client::legacy::Error, too_large: impl Fn() -> Problem) -> Problem {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut timed_out = false;
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            timed_out |= s
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            source = s.source();
        }
        if timed_out {
            self.metrics.upstream_timeouts.fetch_add(1, Ordering::Relaxed);
            return Problem::new(Code::UpstreamTimeout, "connecting to the upstream timed out");
        }
        self.metrics.upstream_unavailable.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, connect = e.is_connect(), "upstream request failed");
        Problem::new(
            Code::UpstreamUnavailable,
            if e.is_connect() {
                "the upstream refused the connection"
            } else {
                "the upstream closed the connection before answering"
            },
        )
    }
}

async fn handle(gw: Arc<Gateway>, peer: SocketAddr, req: Request<Body>) -> Response<Body> {
    gw.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = new_request_id();
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("gateway", request_id = %request_id, tenant_id = tracing::field::Empty);
    let mut resp = tracing::Instrument::instrument(gw.proxy(peer, req, &request_id), span.clone())
        .await
        .unwrap_or_else(|p| p.render(&request_id));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    span.in_scope(|| {
        tracing::info!(method = %method, path = %path, status = resp.status().as_u16(), latency_us = start.elapsed().as_micros() as u64, "proxied");
    });
    resp
}

/// `X-Tenant-Features`: the boolean flags on for the request's tenant and caller (the
/// caller is the targeting key), comma-separated; empty when none is.
fn set_features(h: &mut HeaderMap, ctx: &RequestContext) {
    let (Some(t), Some(s)) = (&ctx.tenant, &ctx.settings) else {
        return;
    };
    let actor = ctx.principal.as_ref().map(Principal::actor);
    let subject = tenantd_core::flags::Subject {
        tenant: t.id.as_str(),
        plan: t.plan.as_str(),
        targeting_key: actor.as_deref(),
    };
    let on: Vec<&str> = s.flags.enabled_booleans(&subject).collect();
    if let Ok(v) = HeaderValue::from_str(&on.join(",")) {
        h.insert(HeaderName::from_static("x-tenant-features"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn a_context_token_is_found_by_whom_it_is_for_and_only_while_fresh() {
        let cache = TokenCache::default();
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let tok = |s: &'static str| HeaderValue::from_static(s);
        let now = 1_000;
        cache.put((&acme, "key_a", "member", "starter"), tok("m"), now + 60);
        cache.put((&acme, "key_a", "admin", "starter"), tok("a"), now + 60);
        let find = |t: &TenantId, actor: &str, role: &str, plan: &str, at: i64| cache.get((t, actor, role, plan), at);
        assert_eq!(find(&acme, "key_a", "member", "starter", now), Some(tok("m")));
        assert_eq!(find(&acme, "key_a", "admin", "starter", now), Some(tok("a")));
        assert_eq!(find(&acme, "key_b", "member", "starter", now), None);
        assert_eq!(
            find(&acme, "key_a", "member", "professional", now),
            None,
            "a plan change signs anew"
        );
        assert_eq!(find(&globex, "key_a", "member", "starter", now), None);
        assert_eq!(
            find(&acme, "key_a", "member", "starter", now + 45),
            Some(tok("m")),
            "15 s left"
        );
        assert_eq!(
            find(&acme, "key_a", "member", "starter", now + 46),
            None,
            "less than 15 s left"
        );
    }

    fn settings(toml_text: &str) -> Result<GatewaySettings, String> {
        GatewaySettings::from_file(toml::from_str(toml_text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn routes_match_the_longest_prefix_on_segment_boundaries_and_methods() {
        let s = settings(
            r#"
            [[routes]]
            prefix = "/reports"
            methods = ["post"]
            permission = "reports:write"
            cost = 5
            [[routes]]
            prefix = "/reports/public"
            public = true
            [[routes]]
            prefix = "/"
            cost = 2
            "#,
        )
        .unwrap();
        let r = |m: Method, p: &str| s.route(&m, p).map(|r| (r.prefix.as_str(), r.cost));
        assert_eq!(r(Method::POST, "/reports"), Some(("/reports", 5)));
        assert_eq!(r(Method::POST, "/reports/7"), Some(("/reports", 5)));
        assert_eq!(r(Method::GET, "/reports/7"), Some(("/", 2)), "methods narrow a route");
        assert_eq!(r(Method::POST, "/reportsx"), Some(("/", 2)), "whole segments only");
        assert_eq!(r(Method::GET, "/reports/public/a"), Some(("/reports/public", 1)));
    }

    #[test]
    fn invalid_routes_are_named() {
        for (text, wanted) in [
            ("[[routes]]\nprefix = \"reports\"", "gateway.routes[0].prefix"),
            (
                "[[routes]]\nprefix = \"/r\"\nmethods = [\"G T\"]",
                "gateway.routes[0].methods",
            ),
            (
                "[[routes]]\nprefix = \"/r\"\npermission = \"nocolon\"",
                "gateway.routes[0].permission",
            ),
            ("[[routes]]\nprefix = \"/r\"\ncost = 2000000", "gateway.routes[0].cost"),
            (
                "[[routes]]\nprefix = \"/r\"\npublic = true\npermission = \"a:b\"",
                "public route",
            ),
            ("request_timeout_ms = 0", "gateway.request_timeout_ms"),
        ] {
            let e = settings(text).unwrap_err();
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }

    #[test]
    fn identity_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-tenant-id", "evil"),
            ("x-tenant-context", "forged"),
            ("x-principal-role", "owner"),
            ("tenant-id", "evil"),
            ("x-request-id", "mine"),
            ("connection", "close, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "5"),
            ("accept", "text/plain"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h, false);
        strip_identity(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}
