//! The notes service on the same catalog as a tenantd server: tenantd's keys, roles and
//! tenants decide every call, and no tenant sees another's notes.
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use tenantd::config::{Config, FileConfig, ServeArgs};

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

/// A tenantd server and the notes service on one catalog; returns their base URLs.
async fn start(db_url: &str, dir: &std::path::Path) -> (String, String) {
    let cfg = config(db_url, dir);
    let listener = tenantd::app::bind(&cfg.listen).await.unwrap();
    let tenantd_url = format!("http://{}", listener.local_addr().unwrap());
    let state = tenantd::app::prepare(cfg).await.unwrap();
    tokio::spawn(tenantd::app::serve(state, listener, std::future::pending()));

    let notes_state = tenantd::app::prepare(config(db_url, dir)).await.unwrap();
    let notes = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notes_url = format!("http://{}", notes.local_addr().unwrap());
    let app = tenantd_example_notes::router(notes_state.edge.clone(), Arc::default());
    tokio::spawn(async move { axum::serve(notes, app).await });
    (tenantd_url, notes_url)
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

async fn run(db_url: String, dir: std::path::PathBuf) {
    let (tenantd, notes) = start(&db_url, &dir).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_a_shared_sqlite_catalog() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    run(url, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_a_shared_postgresql_catalog() {
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    if let Some(url) = tenantd_store::testing::fresh_postgres("notes example").await {
        run(url, dir).await;
    }
}
