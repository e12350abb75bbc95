//! The notes service on the same catalog as a tenantd server, and against a remote
//! tenantd: tenantd's keys, roles and tenants decide every call, and no tenant sees
//! another's notes.
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use tenantd::config::{Config, FileConfig, ServeArgs};
use tenantd_edge::{EdgeLayer, RemoteEdge};

const ADMIN: &str = "example-operator-key-0123456789";

fn config(db_url: &str, dir: &std::path::Path) -> Config {
    let args = ServeArgs {
        database_url: Some(db_url.into()),
        data_dir: Some(dir.into()),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    Config::merge(&args, FileConfig::default(), Some(ADMIN.into())).expect("config")
}

/// How the notes service reaches tenantd.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// It reads the server's catalog and decides in process.
    SharedCatalog,
    /// It asks the server to decide (`EdgeLayer::remote`).
    Remote,
}

/// Serves the notes service behind `edge`; returns its base URL.
async fn serve_notes(edge: EdgeLayer) -> String {
    let notes = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notes_url = format!("http://{}", notes.local_addr().unwrap());
    let app = tenantd_example_notes::router(edge, Arc::default());
    tokio::spawn(async move { axum::serve(notes, app).await });
    notes_url
}

/// A tenantd server and the notes service; returns their base URLs.
async fn start(db_url: &str, dir: &std::path::Path, mode: Mode) -> (String, String) {
    let cfg = config(db_url, dir);
    let listener = tenantd::startup::bind(&cfg.listen).await.unwrap();
    let tenantd_url = format!("http://{}", listener.local_addr().unwrap());
    let state = tenantd::startup::prepare(cfg).await.unwrap();
    tokio::spawn(tenantd::serve::serve(state, listener, std::future::pending()));

    let edge = match mode {
        Mode::SharedCatalog => {
            let notes_state = tenantd::startup::prepare(config(db_url, dir)).await.unwrap();
            EdgeLayer::new(notes_state.edge.clone())
        }
        Mode::Remote => EdgeLayer::remote(RemoteEdge::new(&tenantd_url).unwrap()),
    };
    (tenantd_url, serve_notes(edge).await)
}

async fn admin(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(url).bearer_auth(ADMIN).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn key(http: &reqwest::Client, tenantd: &str, tenant: &str, role: &str) -> (String, String) {
    let k = admin(
        http,
        format!("{tenantd}/v1/tenants/{tenant}/keys"),
        json!({"name": role, "role": role}),
    )
    .await;
    (k["id"].as_str().unwrap().into(), k["key"].as_str().unwrap().into())
}

async fn run(db_url: String, dir: std::path::PathBuf, mode: Mode) {
    let (tenantd, notes) = start(&db_url, &dir, mode).await;
    let http = reqwest::Client::new();
    for t in ["acme", "globex"] {
        admin(
            &http,
            format!("{tenantd}/v1/tenants"),
            json!({"id": t, "plan": "professional", "owner_email": format!("o@{t}.test")}),
        )
        .await;
    }
    let (acme_id, acme) = key(&http, &tenantd, "acme", "member").await;
    let (_, viewer) = key(&http, &tenantd, "acme", "viewer").await;
    let (_, globex) = key(&http, &tenantd, "globex", "member").await;
    let notes_url = format!("{notes}/notes");

    let r = http
        .post(&notes_url)
        .bearer_auth(&acme)
        .json(&json!({"text": "ship it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        r.headers().get("ratelimit-policy").is_some(),
        "tenantd admitted and metered it"
    );
    let note: Value = r.json().await.unwrap();
    assert_eq!(note["author"], acme_id.as_str());

    let list = |token: String| {
        let http = http.clone();
        let url = notes_url.clone();
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let mine: Value = list(acme.clone()).await.json().await.unwrap();
    assert_eq!(mine, json!([{"text": "ship it", "author": acme_id}]));
    let theirs: Value = list(globex.clone()).await.json().await.unwrap();
    assert_eq!(theirs, json!([]), "another tenant sees none of acme's notes");
    let r = list(viewer.clone()).await;
    assert_eq!(r.status(), StatusCode::OK, "a viewer may read");

    // A viewer may not write; no credential is 401; naming another tenant is 403.
    let r = http
        .post(&notes_url)
        .bearer_auth(&viewer)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
    let r = http.get(&notes_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(&notes_url)
        .bearer_auth(&acme)
        .header("X-Tenant-ID", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "tenant_mismatch");
    if mode == Mode::Remote {
        remote_only(&http, &tenantd, &notes_url, &acme_id, &acme).await;
    }
}

/// What only the remote mode shows: tenantd counted the calls, a revocation takes effect
/// on the next call, and a spent quota answers 429 with the contract's fields.
async fn remote_only(http: &reqwest::Client, tenantd: &str, notes_url: &str, acme_id: &str, acme: &str) {
    let usage: Value = http
        .get(format!("{tenantd}/v1/tenants/acme/usage"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hour = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "api_calls" && q["window"] == "hour")
        .unwrap_or_else(|| panic!("{usage}"));
    // acme's member wrote and listed, its viewer listed and was refused a write by the
    // handler (after admission): 4. The 401 and the mismatch were refused before.
    assert_eq!(
        hour["current"], 4,
        "tenantd counted the service's admitted calls: {usage}"
    );

    // A hard limit of 2 a minute: a call past it gets 429 with every field.
    let r = http
        .patch(format!("{tenantd}/v1/tenants/acme"))
        .bearer_auth(ADMIN)
        .json(&json!({"limits": [{"resource": "api_calls", "window": "minute", "limit": 2, "enforcement": "hard"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut refused = None;
    for _ in 0..3 {
        let r = http.get(notes_url).bearer_auth(acme).send().await.unwrap();
        if r.status() == StatusCode::OK {
            assert!(r.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .contains("api_calls-minute"));
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the third call in a minute is refused");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        (&body["quota"], &body["window"], &body["limit"], &body["current"]),
        (&json!("api_calls"), &json!("minute"), &json!(2), &json!(2))
    );
    assert!(body["reset_at"].is_string() && body["request_id"].as_str().unwrap().starts_with("req_"));

    // Revoked on tenantd: refused by the service from the next call on.
    let r = http
        .delete(format!("{tenantd}/v1/tenants/acme/keys/{acme_id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = http.get(notes_url).bearer_auth(acme).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("revoked"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_a_shared_sqlite_catalog() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    run(url, dir, Mode::SharedCatalog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_a_shared_postgresql_catalog() {
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    if let Some(url) = tenantd_store::testing::fresh_postgres("notes example").await {
        run(url, dir, Mode::SharedCatalog).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_against_a_remote_tenantd() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    run(url, dir, Mode::Remote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_tenantd_that_cannot_be_reached_refuses_with_503() {
    // A port nothing listens on: the service refuses rather than let the call through.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let notes = serve_notes(EdgeLayer::remote(RemoteEdge::new(&url).unwrap())).await;
    let r = reqwest::Client::new()
        .get(format!("{notes}/notes"))
        .bearer_auth("tnd_anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unavailable");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));

    // A tenantd that does not answer in time: the same, after the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let edge = RemoteEdge::new(&url)
        .unwrap()
        .with_timeout(std::time::Duration::from_millis(300));
    let notes = serve_notes(EdgeLayer::remote(edge)).await;
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{notes}/notes"))
        .bearer_auth("tnd_anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    drop(silent);
    assert!(
        RemoteEdge::new("https://tenantd.example").is_err(),
        "only http:// is spoken"
    );
}
