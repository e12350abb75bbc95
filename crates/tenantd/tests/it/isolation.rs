use crate::common::{spawn_app, Backend, TestApp, ADMIN};
use serde_json::{json, Value};

crate::both! {
    cross_tenant_requests_are_refused_identically;
    sources_must_agree;
    suspended_tenants_keep_owner_reads;
    subdomains_and_query, "base_domain = \"example.test\"\nallow_query_tenant = true";
    ambiguous_tenant_headers_are_refused, "base_domain = \"example.test\"";
    repeated_security_events_fold_into_one;
}

fn without_request_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("request_id");
    v
}

async fn cross_tenant_requests_are_refused_identically(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let (_, key) = app.key("acme", "owner").await;
    let (_, user) = app.user("acme", "ann@acme.test", "owner").await;
    let before = metric(&app, "tenantd_cross_tenant_attempts_total").await;
    // Another tenant that exists, and one that does not: the same answer.
    same_refusal(&app, &key).await;
    for path in [
        "/v1/tenants/beta/members",
        "/v1/tenants/beta/keys",
        "/v1/tenants/beta/roles",
        "/v1/tenants/beta/workspaces",
        "/v1/tenants/beta/audit",
    ] {
        app.get(path, &key).await.problem(403, "tenant_mismatch");
        app.get(path, &user).await.problem(403, "tenant_mismatch");
    }
    app.post("/v1/tenants/beta/keys", &key, json!({"name": "x"}))
        .await
        .problem(403, "tenant_mismatch");
    app.delete("/v1/tenants/beta", &user)
        .await
        .problem(403, "tenant_mismatch");
    same_refusal(&app, &user).await;
    // Beta is untouched.
    assert_eq!(app.get("/v1/tenants/beta/keys", ADMIN).await.body["items"], json!([]));
    // Every attempt is recorded under the attacker's own tenant and counted.
    let after = metric(&app, "tenantd_cross_tenant_attempts_total").await;
    assert_eq!(after - before, 16.0);
    // Each principal's attempts on one tenant fold into one event, its count all of them.
    app.state.edge.flush_security().await;
    let audit = app
        .get(
            "/v1/tenants/acme/audit?action=security.cross_tenant_attempt&limit=1000",
            ADMIN,
        )
        .await
        .expect(200)
        .body;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "beta and nosuch, by the key and by the user: {audit}");
    assert_eq!(items.iter().map(|e| e["count"].as_u64().unwrap()).sum::<u64>(), 16);
    assert!(items
        .iter()
        .all(|e| e["tenant_id"] == "acme" && e["request_id"].as_str().unwrap().starts_with("req_")));
    assert!(app
        .get("/v1/tenants/beta/audit?action=security.cross_tenant_attempt", ADMIN)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        app.get("/v1/audit?action=security.cross_tenant_attempt", ADMIN)
            .await
            .expect(200)
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    app.get("/v1/audit", &key).await.problem(403, "forbidden");
}

/// `/v1/tenants/beta` (exists) and `/v1/tenants/nosuch` answer the same refusal, naming neither.
async fn same_refusal(app: &TestApp, token: &str) {
    let exists = app
        .get("/v1/tenants/beta", token)
        .await
        .problem(403, "tenant_mismatch")
        .body;
    let missing = app
        .get("/v1/tenants/nosuch", token)
        .await
        .problem(403, "tenant_mismatch")
        .body;
    assert!(!exists.to_string().contains("beta"));
    assert_eq!(without_request_id(exists), without_request_id(missing));
}

pub async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap()
        .parse()
        .unwrap()
}

async fn sources_must_agree(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let (_, key) = app.key("acme", "owner").await;
    // The header agrees with the key: fine; disagrees: mismatch, even for a tenant that exists.
    app.call("GET", "/v1/tenants/acme", Some(&key), None, &[("x-tenant-id", "acme")])
        .await
        .expect(200);
    app.call("GET", "/v1/tenants/acme", Some(&key), None, &[("x-tenant-id", "beta")])
        .await
        .problem(403, "tenant_mismatch");
    app.call("GET", "/v1/me", Some(&key), None, &[("tenant-id", "beta")])
        .await
        .problem(403, "tenant_mismatch");
    // Even operators cannot send two different tenants.
    app.call("GET", "/v1/tenants/acme", Some(ADMIN), None, &[("x-tenant-id", "beta")])
        .await
        .problem(403, "tenant_mismatch");
    app.call(
        "GET",
        "/v1/tenants/acme",
        Some(ADMIN),
        None,
        &[("x-tenant-id", "acme"), ("tenant-id", "beta")],
    )
    .await
    .problem(403, "tenant_mismatch");
    app.call(
        "GET",
        "/v1/tenants/acme",
        Some(ADMIN),
        None,
        &[("x-tenant-id", "Bad_Id")],
    )
    .await
    .problem(400, "invalid_tenant_id");
    app.get("/v1/tenants/Not_Valid", ADMIN)
        .await
        .problem(400, "invalid_tenant_id");
    app.get("/v1/tenants/ghost", ADMIN)
        .await
        .problem(404, "tenant_not_found");
    // Query parameters are not a source unless enabled.
    app.get("/v1/tenants/acme?tenant_id=beta", &key).await.expect(200);
    // Anonymous requests learn nothing.
    app.call("GET", "/v1/tenants/acme", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    app.call("GET", "/v1/tenants/ghost", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    app.call("GET", "/v1/me", Some("garbage"), None, &[])
        .await
        .problem(401, "unauthenticated");
    app.call("GET", "/v1/me", None, None, &[("authorization", "Basic Zm9vOmJhcg==")])
        .await
        .problem(401, "unauthenticated");
}

async fn suspended_tenants_keep_owner_reads(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, owner) = app.user("acme", "o@acme.test", "owner").await;
    let (_, member) = app.user("acme", "m@acme.test", "member").await;
    let (_, key) = app.key("acme", "admin").await;
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "unpaid"}))
        .await
        .expect(200);
    assert_eq!(
        app.get("/v1/tenants/acme", &owner).await.expect(200).body["status"],
        "suspended"
    );
    app.patch("/v1/tenants/acme", &owner, json!({"name": "x"}))
        .await
        .problem(403, "tenant_suspended");
    app.get("/v1/tenants/acme/members", &owner)
        .await
        .problem(403, "tenant_suspended");
    app.get("/v1/tenants/acme", &member)
        .await
        .problem(403, "tenant_suspended");
    app.get("/v1/tenants/acme", &key).await.problem(403, "tenant_suspended");
    app.post("/v1/tenants/acme/keys", &key, json!({"name": "k"}))
        .await
        .problem(403, "tenant_suspended");
    assert_eq!(
        app.post(
            "/v1/authorize",
            &member,
            json!({"tenant_id": "acme", "permission": "records:read"})
        )
        .await
        .body["allowed"],
        false
    );
    app.get("/v1/tenants/acme/members", ADMIN).await.expect(200);
    app.post("/v1/tenants/acme/resume", ADMIN, json!({})).await.expect(200);
    app.get("/v1/tenants/acme", &member).await.expect(200);
    app.get("/v1/tenants/acme", &key).await.expect(200);
}

async fn subdomains_and_query(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let (_, key) = app.key("acme", "owner").await;
    let host = |h: &'static str| [("host", h)];
    app.call(
        "GET",
        "/v1/tenants/acme",
        Some(ADMIN),
        None,
        &host("acme.example.test:8080"),
    )
    .await
    .expect(200);
    app.call("GET", "/v1/tenants/acme", Some(ADMIN), None, &host("beta.example.test"))
        .await
        .problem(403, "tenant_mismatch");
    app.call("GET", "/v1/me", Some(&key), None, &host("beta.example.test"))
        .await
        .problem(403, "tenant_mismatch");
    // Hosts that are not tenant subdomains name no tenant.
    app.call("GET", "/v1/tenants/acme", Some(&key), None, &host("www.example.test"))
        .await
        .expect(200);
    app.call("GET", "/v1/tenants/acme", Some(&key), None, &host("acme.other.test"))
        .await
        .expect(200);
    // Query parameter enabled.
    app.get("/v1/tenants/acme?tenant_id=beta", &key)
        .await
        .problem(403, "tenant_mismatch");
    app.get("/v1/tenants/acme?tenant_id=acme", &key).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_tenant_mode_maps_everything_to_default() {
    let app = spawn_app(Backend::Sqlite, "multi_tenancy = false").await.unwrap();
    let t = app.get("/v1/tenants/default", ADMIN).await.expect(200).body;
    assert_eq!(t["id"], "default");
    let (_, key) = app.key("default", "member").await;
    assert_eq!(app.get("/v1/me", &key).await.expect(200).body["tenant_id"], "default");
    app.get("/v1/tenants/other", ADMIN)
        .await
        .problem(403, "tenant_mismatch");
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": "other", "plan": "free", "owner_email": "a@b.co"}),
    )
    .await
    .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signup_creates_tenants_on_signup_plans_only() {
    let app = spawn_app(Backend::Sqlite, "self_signup = true").await.unwrap();
    let r = app
        .call(
            "POST",
            "/v1/tenants",
            None,
            Some(json!({"id": "newco", "plan": "free", "owner_email": "founder@newco.test"})),
            &[],
        )
        .await
        .expect(201);
    assert_eq!(r.body["plan"], "free");
    app.call(
        "POST",
        "/v1/tenants",
        None,
        Some(json!({"id": "bigco", "plan": "enterprise", "owner_email": "f@bigco.test"})),
        &[],
    )
    .await
    .problem(403, "forbidden");
    // A signed-in user signs up as the owner, never as someone else.
    let (_, token) = app.user("newco", "dev@newco.test", "member").await;
    app.post(
        "/v1/tenants",
        &token,
        json!({"id": "side", "plan": "free", "owner_email": "other@x.test"}),
    )
    .await
    .problem(403, "forbidden");
    app.post("/v1/tenants", &token, json!({"id": "side", "plan": "free"}))
        .await
        .expect(201);
    let me = app.get("/v1/me", &token).await.body;
    assert!(me["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["tenant_id"] == "side" && t["role"] == "owner"));
}

/// A custom domain names its tenant once verified, and only then.
async fn custom_domains(backend: Backend) {
    // The customer's web server, which will serve the proof once it is known.
    let proof = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let served = proof.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let site = axum::Router::new().route(
        "/{host}",
        axum::routing::get(move |axum::extract::Path(host): axum::extract::Path<String>| {
            let p = served.lock().unwrap().clone();
            async move {
                if host == "app.customer.test" && !p.is_empty() {
                    (http::StatusCode::OK, p)
                } else {
                    (http::StatusCode::NOT_FOUND, String::new())
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, site).await.unwrap() });
    let toml =
        format!("domain_verification_url = \"http://127.0.0.1:{port}/{{host}}\"\nbase_domain = \"example.test\"");
    let Some(app) = spawn_app(backend, &toml).await else {
        return;
    };
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let (_, owner) = app.user("acme", "o@acme.test", "owner").await;
    let (_, viewer) = app.user("acme", "v@acme.test", "viewer").await;
    let host = [("host", "app.customer.test")];
    app.post(
        "/v1/tenants/acme/domains",
        &viewer,
        json!({"host": "app.customer.test"}),
    )
    .await
    .problem(403, "forbidden");
    app.post("/v1/tenants/acme/domains", &owner, json!({"host": "http://x"}))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/tenants/acme/domains", &owner, json!({"host": "169.254.169.254"}))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/tenants/acme/domains", &owner, json!({"host": "acme.example.test"}))
        .await
        .problem(400, "invalid_request");
    let d = app
        .post("/v1/tenants/acme/domains", &owner, json!({"host": "App.Customer.Test"}))
        .await
        .expect(201)
        .body;
    assert_eq!(
        (d["host"].as_str(), d["verified"].as_bool()),
        (Some("app.customer.test"), Some(false))
    );
    let token = d["verification"]["body"].as_str().unwrap().to_string();
    app.post("/v1/tenants/beta/domains", ADMIN, json!({"host": "app.customer.test"}))
        .await
        .problem(409, "conflict");
    // Unverified: the host names no tenant.
    app.call("GET", "/v1/tenants/beta", Some(ADMIN), None, &host)
        .await
        .expect(200);
    // Verification fails while the proof is not served; operators may skip it, owners not.
    app.post("/v1/tenants/acme/domains/app.customer.test/verify", &owner, json!({}))
        .await
        .problem(409, "conflict");
    app.post(
        "/v1/tenants/acme/domains/app.customer.test/verify",
        &owner,
        json!({"skip_check": true}),
    )
    .await
    .problem(403, "forbidden");
    *proof.lock().unwrap() = token;
    let d = app
        .post("/v1/tenants/acme/domains/app.customer.test/verify", &owner, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(d["verified"], true);
    // Verified: the host is a source like any other.
    app.call("GET", "/v1/tenants/acme", Some(ADMIN), None, &host)
        .await
        .expect(200);
    app.call("GET", "/v1/tenants/beta", Some(ADMIN), None, &host)
        .await
        .problem(403, "tenant_mismatch");
    app.call(
        "GET",
        "/v1/tenants/beta",
        Some(ADMIN),
        None,
        &[("host", "APP.Customer.test:443")],
    )
    .await
    .problem(403, "tenant_mismatch");
    let (_, beta_key) = app.key("beta", "owner").await;
    app.call("GET", "/v1/me", Some(&beta_key), None, &host)
        .await
        .problem(403, "tenant_mismatch");
    assert_eq!(
        app.get("/v1/tenants/acme/domains", &viewer).await.expect(200).body["items"][0]["verified"],
        true
    );
    // Released: it names no tenant again.
    app.delete("/v1/tenants/acme/domains/app.customer.test", &owner)
        .await
        .expect(204);
    app.call("GET", "/v1/tenants/beta", Some(ADMIN), None, &host)
        .await
        .expect(200);
    app.delete("/v1/tenants/acme/domains/app.customer.test", &owner)
        .await
        .problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_custom_domains() {
    custom_domains(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_custom_domains() {
    custom_domains(Backend::Postgres).await;
}

/// The finding: with two `Authorization` headers (the operator's first) a request acted
/// as the operator; with two `Host`s or two `X-Tenant-ID`s the first won; a non-UTF-8
/// `X-Tenant-ID` was ignored. Each is refused, and a trailing dot on `Host` is ignored.
async fn ambiguous_tenant_headers_are_refused(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let (_, key) = app.key("acme", "member").await;
    let get = |path: &str, headers: &[&[u8]]| {
        let mut head = format!("GET {path} HTTP/1.1\r\n").into_bytes();
        for h in headers {
            head.extend_from_slice(h);
            head.extend_from_slice(b"\r\n");
        }
        head
    };
    let auth = |t: &str| format!("Authorization: Bearer {t}").into_bytes();
    let (op, member) = (auth(ADMIN), auth(&key));
    for (path, headers, code, named) in [
        (
            "/v1/tenants/beta",
            vec![&b"Host: x.test"[..], &op, &member],
            "invalid_request",
            "authorization",
        ),
        (
            "/v1/tenants/beta",
            vec![&b"Host: x.test"[..], &member, &op],
            "invalid_request",
            "authorization",
        ),
        (
            "/v1/me",
            vec![&b"Host: acme.example.test"[..], &b"Host: beta.example.test"[..], &op],
            "invalid_request",
            "host",
        ),
        (
            "/v1/me",
            vec![
                &b"Host: x.test"[..],
                &b"X-Tenant-ID: acme"[..],
                &b"X-Tenant-ID: beta"[..],
                &op,
            ],
            "invalid_request",
            "x-tenant-id",
        ),
        (
            "/v1/me",
            vec![
                &b"Host: x.test"[..],
                &b"Tenant-ID: acme"[..],
                &b"Tenant-ID: acme"[..],
                &op,
            ],
            "invalid_request",
            "tenant-id",
        ),
        (
            "/v1/tenant/usage",
            vec![&b"Host: x.test"[..], &b"X-Tenant-ID: acm\xff"[..], &op],
            "invalid_tenant_id",
            "x-tenant-id",
        ),
        (
            "/v1/tenant/usage",
            vec![&b"Host: acme.example.te\xfft"[..], &op],
            "invalid_request",
            "host",
        ),
    ] {
        let r = app.raw(&get(path, &headers), b"").await;
        let body = r.problem(400, code);
        assert!(
            body["detail"].as_str().unwrap().to_ascii_lowercase().contains(named),
            "{path} {}: {body}",
            String::from_utf8_lossy(&headers.concat())
        );
    }
    // Nothing was acted on: beta is still there, as it was.
    app.get("/v1/tenants/beta", ADMIN).await.expect(200);
    // A fully qualified host is the same host.
    let r = app
        .raw(&get("/v1/tenant/usage", &[b"Host: acme.example.test.", &op]), b"")
        .await;
    assert_eq!((r.status, &r.json()["tenant_id"]), (200, &json!("acme")), "{}", r.head);
    let r = app
        .raw(&get("/v1/tenants/beta", &[b"Host: acme.example.test.:8080", &op]), b"")
        .await;
    r.problem(403, "tenant_mismatch");
}

/// The cross-tenant attempts in the operator's audit trail: `(tenant_requested, count)`
/// per stored event.
async fn attempts(app: &TestApp) -> Vec<Value> {
    let a = app
        .get("/v1/audit?action=security.cross_tenant_attempt&limit=1000", ADMIN)
        .await
        .expect(200)
        .body;
    a["items"].as_array().unwrap().clone()
}

/// The finding: a key already at `429` wrote 300 audit rows (and 300 WARN lines) from 300
/// cross-tenant requests. Repeats of the same event (type, principal, tenant asked for)
/// within 60 s fold into the first one's `count`.
async fn repeated_security_events_fold_into_one(app: TestApp) {
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "tight", "name": "tight", "limits": [{"resource": "api_calls", "window": "minute", "limit": 1, "enforcement": "hard"}]}),
    )
    .await
    .expect(201);
    app.tenant("acme", "tight").await;
    app.tenant("beta", "free").await;
    let (_, key) = app.key("acme", "member").await;
    app.get("/v1/tenant/usage", &key).await.expect(200);
    app.get("/v1/tenant/usage", &key).await.problem(429, "rate_limited");
    let before = metric(&app, "tenantd_cross_tenant_attempts_total").await;
    for _ in 0..300 {
        app.get("/v1/tenants/beta/members", &key)
            .await
            .problem(403, "tenant_mismatch");
    }
    // Many tenants asked for: ten get events of their own (beta is one), the rest fold
    // together into one more, which says so.
    for i in 0..40 {
        app.call(
            "GET",
            "/v1/tenant/usage",
            Some(&key),
            None,
            &[("X-Tenant-ID", &format!("t{i}"))],
        )
        .await
        .problem(403, "tenant_mismatch");
    }
    app.state.edge.flush_security().await;
    let events = attempts(&app).await;
    assert_eq!(events.len(), 11, "{events:?}");
    let gathered: Vec<_> = events.iter().filter(|e| e["data"]["folded"].is_string()).collect();
    assert_eq!((gathered.len(), &gathered[0]["count"]), (1, &json!(31)), "{gathered:?}");
    let total: u64 = events.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 340);
    let beta = events
        .iter()
        .find(|e| e["data"]["path"] == "/v1/tenants/beta/members")
        .unwrap();
    assert_eq!(beta["count"], 300, "{beta}");
    assert_eq!(beta["tenant_id"], "acme", "recorded under the key's own tenant");
    // The metric counts every attempt.
    assert_eq!(
        metric(&app, "tenantd_cross_tenant_attempts_total").await - before,
        340.0
    );
    // A later repeat adds to the count at the next flush (the server's own, every second).
    app.get("/v1/tenants/beta/members", &key)
        .await
        .problem(403, "tenant_mismatch");
    let mut count = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        count = attempts(&app).await.iter().map(|e| e["count"].as_u64().unwrap()).sum();
        if count == 341 {
            break;
        }
    }
    assert_eq!(count, 341);
    assert_eq!(attempts(&app).await.len(), 11);
}
