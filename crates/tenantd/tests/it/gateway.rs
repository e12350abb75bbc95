//! The gateway (docs/gateway.md) against a real upstream HTTP server spawned in the test.
use crate::common::{free_port, spawn_app, Backend, Node, TestApp, ADMIN};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream: `/slow` answers after 3 s, `/echo-body` streams the request body back,
/// `/count` counts the request body's bytes (the most it ever got is in `received`), `/ws` accepts an upgrade and echoes bytes;
/// anything else answers what it received (method, path, query, headers) and is counted.
pub struct Upstream {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    pub received: Arc<AtomicUsize>,
}

/// Counts a body as it arrives, into `received` too; a body cut off is counted so far.
async fn count(req: Request, received: Arc<AtomicUsize>) -> String {
    let mut body = req.into_body();
    let mut n = 0usize;
    while let Some(Ok(f)) = body.frame().await {
        if let Ok(d) = f.into_data() {
            n += d.len();
            received.fetch_max(n, Ordering::SeqCst);
        }
    }
    n.to_string()
}

async fn upgrade(mut req: Request) -> Response {
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut io = hyper_util::rt::TokioIo::new(on.await.expect("upgrade"));
        let mut buf = [0u8; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .body(Body::empty())
        .unwrap()
}

pub async fn upstream() -> Upstream {
    use axum::routing::{get, post};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let app = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/echo-body",
            post(|req: Request| async move { Response::new(req.into_body()) }),
        )
        .route("/count", post(move |req: Request| count(req, r.clone())))
        .route("/ws", get(upgrade))
        .fallback(move |req: Request| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let headers: serde_json::Map<String, Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                    .collect();
                axum::Json(json!({
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query(),
                    "headers": headers,
                }))
            }
        });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Upstream { url, hits, received }
}

/// The server with a gateway in front of `upstream`, and `extra` TOML (routes…).
async fn gateway_app(backend: Backend, upstream: &str, extra: &str) -> Option<(TestApp, String)> {
    let toml = format!("gateway_listen = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{extra}");
    let app = spawn_app(backend, &toml).await?;
    let gw = format!("http://{}", app.state.gateway_addr.expect("gateway bound"));
    Some((app, gw))
}

async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = req.send().await.expect("gateway answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Runs `async fn $name(backend)` on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::common::Backend::Postgres).await
            }
        }
    };
}

/// An upstream, the server with a gateway on SQLite, tenant `acme` and a member key.
async fn acme_member(extra: &str) -> Option<(Upstream, TestApp, String, String)> {
    let up = upstream().await;
    let (app, gw) = gateway_app(Backend::Sqlite, &up.url, extra).await?;
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    Some((up, app, gw, key))
}

type Streamed = http_body_util::channel::Channel<Bytes>;

/// A POST through the gateway whose body is sent chunk by chunk through the returned sender.
fn post_streamed(
    gw: &str,
    path: &str,
    key: &str,
) -> (
    http_body_util::channel::Sender<Bytes>,
    hyper_util::client::legacy::ResponseFuture,
) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Streamed>();
    let (tx, body) = Streamed::new(1);
    let req = http::Request::post(format!("{gw}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .body(body)
        .unwrap();
    (tx, client.request(req))
}

fn api_calls_hour(usage: &Value) -> u64 {
    usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "api_calls" && q["window"] == "hour")
        .unwrap()["current"]
        .as_u64()
        .unwrap()
}

on_both!(identity_headers_are_stripped_then_set_and_the_context_token_verifies);
async fn identity_headers_are_stripped_then_set_and_the_context_token_verifies(backend: Backend) {
    let up = upstream().await;
    let Some((app, gw)) = gateway_app(backend, &up.url, "").await else {
        return;
    };
    app.tenant("acme", "professional").await;
    let (key_id, key) = app.key("acme", "member").await;
    let http = reqwest::Client::new();
    let (status, headers, body) = send(
        http.get(format!("{gw}/things/1?x=1"))
            .bearer_auth(&key)
            .header("X-Tenant-Plan", "enterprise")
            .header("X-Principal-ID", "key_forged")
            .header("X-Principal-Role", "owner")
            .header("X-Request-ID", "req_mine")
            .header("X-Tenant-Context", "forged")
            .header("X-Forwarded-For", "203.0.113.9")
            .header("X-Forwarded-Proto", "https")
            .header("X-Tenant-Region", "eu")
            .header("X-Principal-Email", "ceo@globex.test"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let h = &body["headers"];
    assert_eq!(body["path"], "/things/1");
    assert_eq!(body["query"], "x=1");
    assert_eq!(h["x-tenant-id"], "acme");
    assert_eq!(h["x-tenant-plan"], "professional");
    assert_eq!(h["x-principal-id"], key_id);
    assert_eq!(h["x-principal-role"], "member");
    let rid = headers.get("x-request-id").unwrap().to_str().unwrap();
    assert!(rid.starts_with("req_") && rid != "req_mine");
    assert_eq!(h["x-request-id"], rid, "the upstream sees the gateway's request id");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.trim_start_matches("http://"));
    assert!(
        h.get("authorization").is_none(),
        "the tenantd credential is not forwarded"
    );
    for spoofed in ["x-tenant-region", "x-principal-email"] {
        assert!(h.get(spoofed).is_none(), "{spoofed} was forwarded");
    }
    assert!(
        headers.get("ratelimit-policy").is_some(),
        "rate-limit headers on the way back"
    );
    // The context token verifies with the JWKS, for this tenant, principal and role.
    let token = h["x-tenant-context"].as_str().unwrap();
    let claims = app.state.edge.signer().verify(token);
    assert!(claims.is_err(), "a context token is refused as a credential");
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(app.get("/.well-known/jwks.json", ADMIN).await.expect(200).body).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["tenantd-context"]);
    v.set_issuer(&["tenantd"]);
    let c: Value = jsonwebtoken::decode(token, &key, &v).unwrap().claims;
    assert_eq!(c["tid"], "acme");
    assert_eq!(c["sub"], key_id);
    assert_eq!(c["roles"], json!(["member"]));
    assert_eq!(c["plan"], "professional");
    let ttl = c["exp"].as_i64().unwrap() - tenantd_core::now_secs();
    assert!((15..=60).contains(&ttl), "ttl {ttl}");
    // The same token used against tenantd's API: 401.
    app.get("/v1/me", token).await.problem(401, "unauthenticated");
}

on_both!(another_tenants_id_is_refused_and_never_reaches_the_upstream);
async fn another_tenants_id_is_refused_and_never_reaches_the_upstream(backend: Backend) {
    let up = upstream().await;
    let Some((app, gw)) = gateway_app(backend, &up.url, "").await else {
        return;
    };
    app.tenant("acme", "professional").await;
    app.tenant("globex", "professional").await;
    let (_, key) = app.key("acme", "owner").await;
    let http = reqwest::Client::new();
    for (name, value) in [
        ("X-Tenant-ID", "globex"),
        ("Tenant-ID", "globex"),
        ("X-Tenant-ID", "nosuch"),
    ] {
        let (status, _, body) = send(http.get(format!("{gw}/data")).bearer_auth(&key).header(name, value)).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(body["code"], "tenant_mismatch");
    }
    let (status, _, body) = send(http.get(format!("{gw}/v1/tenants/globex/x")).bearer_auth(&key)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("tenant_mismatch")));
    // No credential: 401; a credential without a tenant (the operator): 400.
    let (status, headers, body) = send(http.get(format!("{gw}/data")).header("X-Tenant-ID", "acme")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")));
    assert!(headers.get("www-authenticate").is_some());
    let (status, _, body) = send(http.get(format!("{gw}/data")).bearer_auth(ADMIN)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("tenant_required")));
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "nothing refused reached the upstream"
    );
    // A suspended tenant's traffic is refused.
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "test"}))
        .await
        .expect(200);
    let (status, _, body) = send(http.get(format!("{gw}/data")).bearer_auth(&key)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("tenant_suspended")));
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
}

const ROUTES: &str = r#"
[[gateway.routes]]
prefix = "/reports"
methods = ["POST"]
permission = "reports:write"
cost = 5

[[gateway.routes]]
prefix = "/public"
public = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_demand_their_permission_and_count_their_cost_public_routes_only_a_tenant() {
    let up = upstream().await;
    let Some((app, gw)) = gateway_app(Backend::Sqlite, &up.url, ROUTES).await else {
        return;
    };
    app.tenant("acme", "professional").await;
    let (_, member) = app.key("acme", "member").await;
    let (_, owner) = app.key("acme", "owner").await;
    let http = reqwest::Client::new();
    let usage = || async { api_calls_hour(&app.get("/v1/tenants/acme/usage", ADMIN).await.expect(200).body) };
    let (status, _, body) = send(http.post(format!("{gw}/reports/q1")).bearer_auth(&member)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(usage().await, 0, "a refused request counts nothing");
    let (status, _, _) = send(http.post(format!("{gw}/reports/q1")).bearer_auth(&owner)).await;
    assert_eq!(status, 200);
    assert_eq!(usage().await, 5, "the route's cost");
    // GET is not in the route's methods: any principal, cost 1.
    let (status, _, _) = send(http.get(format!("{gw}/reports/q1")).bearer_auth(&member)).await;
    assert_eq!(status, 200);
    assert_eq!(usage().await, 6);
    // Public: no credential, the tenant from the header; no principal headers upstream.
    let (status, _, body) = send(
        http.get(format!("{gw}/public/page"))
            .header("X-Tenant-ID", "acme")
            .header("X-Principal-ID", "usr_forged")
            .header("X-Principal-Role", "owner"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-tenant-id"], "acme");
    assert!(body["headers"].get("x-principal-id").is_none(), "{body}");
    assert!(body["headers"].get("x-principal-role").is_none(), "{body}");
    assert_eq!(usage().await, 7);
    let (status, _, body) = send(http.get(format!("{gw}/public/page"))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("tenant_required")));
    let (status, _, body) = send(http.get(format!("{gw}/public/page")).header("X-Tenant-ID", "nosuch")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("tenant_not_found")));
}

/// Every tenant's members may write reports (a platform role), and the reports route
/// tells the upstream which boolean flags are on.
const FLAGGED: &str = r#"
[roles.member]
allow = ["reports:write"]

[[gateway.routes]]
prefix = "/reports"
permission = "reports:write"
features = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_role_opens_a_route_and_the_route_gets_the_features_on() {
    let up = upstream().await;
    let Some((app, gw)) = gateway_app(Backend::Sqlite, &up.url, FLAGGED).await else {
        return;
    };
    app.tenant("acme", "professional").await;
    let (_, member) = app.key("acme", "member").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    app.call(
        "PUT",
        "/v1/flags/new-ui",
        Some(ADMIN),
        Some(json!({"type": "boolean", "default": false, "tenants": {"acme": true}})),
        &[],
    )
    .await
    .expect(201);
    let http = reqwest::Client::new();
    let (status, _, body) = send(
        http.post(format!("{gw}/reports/q1"))
            .bearer_auth(&member)
            .header("X-Tenant-Features", "forged"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-tenant-features"], "custom_roles,exports,new-ui,sso");
    let (status, _, body) = send(http.post(format!("{gw}/reports/q1")).bearer_auth(&viewer)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    // Another route does not ask for them: none is sent, a forged one neither.
    let (status, _, body) = send(
        http.get(format!("{gw}/other"))
            .bearer_auth(&member)
            .header("X-Tenant-Features", "forged"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["headers"].get("x-tenant-features").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_answers_429_through_the_gateway_and_refused_calls_never_reach_the_upstream() {
    let up = upstream().await;
    let Some((app, gw)) = gateway_app(Backend::Sqlite, &up.url, "").await else {
        return;
    };
    app.tenant("acme", "professional").await;
    app.patch(
        "/v1/tenants/acme",
        ADMIN,
        json!({"limits": [{"resource": "api_calls", "window": "minute", "limit": 3, "enforcement": "hard"}]}),
    )
    .await
    .expect(200);
    let (_, key) = app.key("acme", "member").await;
    let http = reqwest::Client::new();
    for i in 1..=3 {
        let (status, headers, _) = send(http.get(format!("{gw}/x")).bearer_auth(&key)).await;
        assert_eq!(status, 200, "call {i}");
        assert!(headers.get("ratelimit").is_some());
    }
    let (status, headers, body) = send(http.get(format!("{gw}/x")).bearer_auth(&key)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["quota"], "api_calls");
    assert_eq!(body["window"], "minute");
    assert_eq!(body["limit"], 3);
    assert!(body["reset_at"].is_string() && body["current"].is_number());
    assert!(headers.get("retry-after").is_some());
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    // A port that refuses: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let Some((app, gw)) = gateway_app(Backend::Sqlite, &closed, "").await else {
        return;
    };
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    let http = reqwest::Client::new();
    let (status, _, body) = send(http.get(format!("{gw}/x")).bearer_auth(&key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("upstream_unavailable")),
        "{body}"
    );
    assert_eq!(body["type"].as_str().map(|t| t.is_empty()), Some(false));

    let Some((_up, app, gw, key)) = acme_member("[gateway]\nrequest_timeout_ms = 300\n").await else {
        return;
    };
    let (status, _, body) = send(http.get(format!("{gw}/x")).bearer_auth(&key)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(http.get(format!("{gw}/slow")).bearer_auth(&key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("upstream_timeout")),
        "{body}"
    );
    let metrics = app.get("/metrics", ADMIN).await.body;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tenantd_gateway_upstream_timeouts_total 1"),
        "{metrics}"
    );
    // The answered request's upstream time is in the histogram; the timed-out one not.
    assert!(
        metrics.contains("tenantd_gateway_upstream_duration_seconds_count 1\n"),
        "{metrics}"
    );
}

/// A body chunk the upstream must echo before the client sends the next: a gateway that
/// buffered whole bodies either way would wait forever here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_without_buffering() {
    let Some((_up, _app, gw, key)) = acme_member("[gateway]\nmax_body_bytes = 100000000\n").await else {
        return;
    };
    let (mut tx, resp) = post_streamed(&gw, "/echo-body", &key);
    let resp = tokio::spawn(resp);
    tx.send_data(Bytes::from_static(b"first")).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("response headers before the body ended")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut rb = resp.into_body();
    let mut echoed = Vec::new();
    for chunk in [&b"second"[..], b"third"] {
        // Wait for what was sent so far to come back, then send the next chunk.
        while echoed.len() < 5 || (chunk == b"third" && echoed.len() < 11) {
            let f = tokio::time::timeout(Duration::from_secs(10), rb.frame())
                .await
                .expect("an echoed chunk while the request body is still open")
                .unwrap()
                .unwrap();
            echoed.extend_from_slice(&f.into_data().unwrap());
        }
        tx.send_data(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let rest = rb.collect().await.unwrap().to_bytes();
    echoed.extend_from_slice(&rest);
    assert_eq!(echoed, b"firstsecondthird");

    // 64 MiB counted by the upstream, sent in 1 MiB chunks.
    let http = reqwest::Client::new();
    let (mut tx2, resp) = post_streamed(&gw, "/count", &key);
    let big = tokio::spawn(async move {
        for _ in 0..64 {
            tx2.send_data(Bytes::from(vec![7u8; 1 << 20])).await.unwrap();
        }
    });
    let resp = resp.await.unwrap();
    big.await.unwrap();
    assert_eq!(resp.status(), 200);
    let n = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(n, (64usize << 20).to_string().as_bytes());

    // Over the limit: 413 when declared; when streamed past it, the request fails.
    let (status, _, body) = send(
        http.post(format!("{gw}/count"))
            .bearer_auth(&key)
            .header("content-length", "100000001")
            .body(vec![0u8; 16]),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_413_and_a_streamed_one_is_cut() {
    let Some((up, _app, gw, key)) = acme_member("[gateway]\nmax_body_bytes = 1000\n").await else {
        return;
    };
    let http = reqwest::Client::new();
    let (status, _, body) = send(http.post(format!("{gw}/count")).bearer_auth(&key).body(vec![1u8; 1001])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let (status, _, body) = send(http.post(format!("{gw}/count")).bearer_auth(&key).body(vec![1u8; 1000])).await;
    assert_eq!((status, body), (200, json!(1000)));
    // Chunked, no length declared: the upstream never gets more than the limit.
    let (mut tx, resp) = post_streamed(&gw, "/count", &key);
    tokio::spawn(async move {
        for _ in 0..4 {
            if tx.send_data(Bytes::from(vec![1u8; 600])).await.is_err() {
                break;
            }
        }
    });
    // The gateway answers 413, or closes the connection while the client still sends.
    if let Ok(r) = resp.await {
        let status = r.status().as_u16();
        let text = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&text));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = up.received.load(Ordering::SeqCst);
    assert!(got <= 1000, "the upstream got {got} bytes of a body over the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_passes_through_once_admitted() {
    let Some((_up, _app, gw, key)) = acme_member("").await else {
        return;
    };
    let addr = gw.trim_start_matches("http://").to_string();
    let handshake = |auth: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
        )
    };
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(handshake(&format!("Authorization: Bearer {key}\r\n")).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"tenantd"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo through the tunnel")
            .unwrap();
        assert_eq!(back, msg);
    }
    // Without a credential the pipeline refuses before any upgrade.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(handshake("").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_reloads_routes_and_an_invalid_one_is_refused() {
    let up = upstream().await;
    let Some((app, gw)) = gateway_app(
        Backend::Sqlite,
        &up.url,
        "[gateway]\nreload_poll_ms = 100\n[[gateway.routes]]\nprefix = \"/r\"\npermission = \"reports:write\"\n",
    )
    .await
    else {
        return;
    };
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    // One keep-alive client across the reloads: its connection must survive them.
    let http = reqwest::Client::new();
    let status = || async { send(http.get(format!("{gw}/r")).bearer_auth(&key)).await.0 };
    assert_eq!(status().await, 403);
    let path = app.data_dir.join("tenantd.toml");
    let base = format!(
        "gateway_listen = \"127.0.0.1:0\"\nupstream = \"{}\"\n[gateway]\nreload_poll_ms = 100\n",
        up.url
    );
    std::fs::write(&path, &base).unwrap();
    let until = |want: u16| {
        let status = &status;
        async move {
            for _ in 0..100 {
                if status().await == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(until(200).await, "the route was dropped by the reload");
    let metrics = |name: &'static str| {
        let app = &app;
        async move {
            let m = app.get("/metrics", ADMIN).await.body;
            m.as_str()
                .unwrap()
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(
        metrics("tenantd_gateway_reloads_total").await,
        "tenantd_gateway_reloads_total 1"
    );
    // An invalid file: refused, logged, counted; the previous settings stay.
    std::fs::write(&path, format!("{base}[[gateway.routes]]\nprefix = \"no-slash\"\n")).unwrap();
    for _ in 0..100 {
        if metrics("tenantd_gateway_reload_failures_total").await != "tenantd_gateway_reload_failures_total 0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metrics("tenantd_gateway_reload_failures_total").await,
        "tenantd_gateway_reload_failures_total 1"
    );
    assert_eq!(status().await, 200);
    assert!(app
        .state
        .gateway
        .as_ref()
        .unwrap()
        .reload()
        .unwrap_err()
        .contains("gateway.routes[0].prefix"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_upstream_takes_its_traffic_and_only_operators_set_it() {
    let shared = upstream().await;
    let dedicated = upstream().await;
    let Some((app, gw)) = gateway_app(Backend::Sqlite, &shared.url, "").await else {
        return;
    };
    app.tenant("acme", "enterprise").await;
    app.tenant("globex", "professional").await;
    app.patch(
        "/v1/tenants/acme",
        ADMIN,
        json!({"settings": {"upstream": dedicated.url}}),
    )
    .await
    .expect(200);
    let (_, owner) = app.user("globex", "o@globex.test", "owner").await;
    app.patch(
        "/v1/tenants/globex",
        &owner,
        json!({"settings": {"upstream": "http://10.0.0.1"}}),
    )
    .await
    .problem(403, "forbidden");
    app.patch("/v1/tenants/globex", &owner, json!({"settings": {"color": "blue"}}))
        .await
        .expect(200);
    app.patch(
        "/v1/tenants/globex",
        ADMIN,
        json!({"settings": {"upstream": "https://x"}}),
    )
    .await
    .problem(400, "invalid_request");
    let (_, acme) = app.key("acme", "member").await;
    let (_, globex) = app.key("globex", "member").await;
    let http = reqwest::Client::new();
    assert_eq!(send(http.get(format!("{gw}/a")).bearer_auth(&acme)).await.0, 200);
    assert_eq!(send(http.get(format!("{gw}/b")).bearer_auth(&globex)).await.0, 200);
    assert_eq!(dedicated.hits.load(Ordering::SeqCst), 1);
    assert_eq!(shared.hits.load(Ordering::SeqCst), 1);
}

/// SIGHUP reloads a process whose file polling is off (`reload_poll_ms = 0`).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_gateway_routes_of_a_running_process() {
    let up = upstream().await;
    let gw = free_port();
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    let path = dir.join("tenantd.toml");
    let base = format!(
        "gateway_listen = \"127.0.0.1:{gw}\"\nupstream = \"{}\"\n[gateway]\nreload_poll_ms = 0\n",
        up.url
    );
    std::fs::write(
        &path,
        format!("{base}[[gateway.routes]]\nprefix = \"/r\"\npermission = \"reports:write\"\n"),
    )
    .unwrap();
    let (child, key) = gateway_process(&dir, &path).await;
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("http://127.0.0.1:{gw}/r"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status().await, 403);
    std::fs::write(&path, &base).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status().await, 403, "with polling off, a changed file waits for SIGHUP");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut now = 0;
    for _ in 0..100 {
        now = status().await;
        if now == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(now, 200, "SIGHUP reloaded the routes");
}

/// A tenantd process serving the gateway with the configuration file at `path`, and a
/// member key of its tenant `acme`.
async fn gateway_process(dir: &std::path::Path, path: &std::path::Path) -> (Node, String) {
    let api = free_port();
    let child = Node(
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(["serve", "--listen", &format!("127.0.0.1:{api}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(path)
            .env("TENANTD_ADMIN_KEY", ADMIN)
            .env_remove("TENANTD_DATABASE_URL")
            .env_remove("TENANTD_REDIS_URL")
            .env_remove("TENANTD_GATEWAY_LISTEN")
            .env_remove("TENANTD_UPSTREAM")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        format!("http://127.0.0.1:{api}"),
    );
    child.ready().await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move {
            let r = http.post(path).bearer_auth(ADMIN).json(&body).send().await.unwrap();
            assert!(r.status().is_success());
            r.json::<Value>().await.unwrap()
        }
    };
    let api = child.1.clone();
    post(
        format!("{api}/v1/tenants"),
        json!({"id": "acme", "plan": "professional", "owner_email": "o@acme.test"}),
    )
    .await;
    let key = post(
        format!("{api}/v1/tenants/acme/keys"),
        json!({"name": "k", "role": "member"}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    (child, key)
}

/// SIGTERM while a request is in flight through the gateway: the request is answered,
/// new connections are refused, and the process then exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let up = upstream().await;
    let gw = free_port();
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    let path = dir.join("tenantd.toml");
    std::fs::write(
        &path,
        format!("gateway_listen = \"127.0.0.1:{gw}\"\nupstream = \"{}\"\n", up.url),
    )
    .unwrap();
    let (mut child, key) = gateway_process(&dir, &path).await;
    let http = reqwest::Client::new();
    // The upstream's /slow answers after 3 s.
    let in_flight = tokio::spawn(http.get(format!("http://127.0.0.1:{gw}/slow")).bearer_auth(&key).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", gw)).await.is_err(),
        "no new connections once shutting down"
    );
    let r = in_flight.await.unwrap().expect("the request in flight is answered");
    assert_eq!(r.status(), 200);
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited.expect("the process exits after its requests").success());
}

/// An HTTP/1.0 upstream does not change the client's protocol version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upstream_answers_the_client_in_its_own_version() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            });
        }
    });
    let Some((app, gw)) = gateway_app(Backend::Sqlite, &url, "").await else {
        return;
    };
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    let mut s = tokio::net::TcpStream::connect(gw.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(format!("GET /old HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 15];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
}
