//! Encryption at rest of tenant data, on both backends and at every tier: a marker
//! written into a record, a cache value, a blob and a secret is nowhere in the database
//! in the clear (read raw: SQLite's files byte for byte, PostgreSQL's tables as the owner
//! sees them); a sealed record copied into another tenant's row does not open; a data key
//! rotation seals everything again under the new version, with progress; data written in
//! the clear (encryption off) is sealed at the next start.
use crate::common::{connect, start_with, TestApp, ADMIN};
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;

crate::both! {
    data_is_sealed_at_rest_at_every_tier;
    a_sealed_record_in_another_tenants_row_does_not_open;
    a_data_key_rotation_seals_everything_again;
    data_written_in_the_clear_is_sealed_at_the_next_start, "encrypt_data = false";
}

const MARKER: &str = "MARKER_c0ffee_42";

/// Writes a record, a cache value, a blob and a secret holding the marker; the record's
/// path.
async fn write_marked(app: &TestApp, tenant: &str) -> String {
    let (_, key) = app.key(tenant, "admin").await;
    let rec = app
        .post(
            "/v1/data/collections/notes/records",
            &key,
            json!({"text": format!("{tenant} {MARKER}")}),
        )
        .await
        .expect(201)
        .body;
    app.call(
        "PUT",
        "/v1/data/cache/greeting",
        Some(&key),
        Some(json!({"value": {"text": format!("{tenant} {MARKER}")}})),
        &[],
    )
    .await
    .expect(200);
    app.put_bytes(
        "/v1/data/blobs/docs/a.txt",
        &key,
        format!("{tenant} {MARKER}").into_bytes(),
        "text/plain",
    )
    .await
    .expect(201);
    app.call(
        "PUT",
        &format!("/v1/tenants/{tenant}/secrets/token"),
        Some(&key),
        Some(json!({"value": format!("{tenant} {MARKER}")})),
        &[],
    )
    .await
    .expect(201);
    format!("/v1/data/collections/notes/records/{}", rec["id"].as_str().unwrap())
}

/// Reads everything back through the API and checks it.
async fn reads_back(app: &TestApp, tenant: &str, record: &str) {
    let (_, key) = app.key(tenant, "admin").await;
    let want = format!("{tenant} {MARKER}");
    assert_eq!(app.get(record, &key).await.expect(200).body["data"]["text"], want);
    let list = app
        .get("/v1/data/collections/notes/records", &key)
        .await
        .expect(200)
        .body;
    assert_eq!(list["items"][0]["data"]["text"], want);
    let c = app.get("/v1/data/cache/greeting", &key).await.expect(200).body;
    assert_eq!(c["value"]["text"], want);
    let b = app.get("/v1/data/blobs/docs/a.txt", &key).await.expect(200).body;
    assert_eq!(b, Value::String(want.clone()));
    let s = app
        .get(&format!("/v1/tenants/{tenant}/secrets/token"), &key)
        .await
        .expect(200)
        .body;
    assert_eq!(s["value"], want);
}

/// Where a tenant's data tables are on PostgreSQL: a connection URL and a table prefix.
async fn pg_place(app: &TestApp, tenant: &str) -> (String, String) {
    let p = app
        .get(&format!("/v1/tenants/{tenant}/placement"), ADMIN)
        .await
        .expect(200)
        .body;
    let loc = p["location"].as_str().unwrap().to_string();
    if loc == "shared" {
        (app.db_url.clone(), "tenant_data.".into())
    } else if let Some(schema) = loc.strip_prefix("schema:") {
        (app.db_url.clone(), format!("\"{schema}\"."))
    } else {
        let db = loc.rsplit('/').next().unwrap();
        let base = app.db_url.rsplit_once('/').unwrap().0;
        (format!("{base}/{db}"), "tenant_data.".into())
    }
}

/// Every stored byte of the data tables where the tenant's data is, on PostgreSQL, with
/// the key version of each sealed row.
async fn pg_raw(app: &TestApp, tenant: &str) -> (Vec<u8>, Vec<i64>) {
    let (url, prefix) = pg_place(app, tenant).await;
    let mut c = connect(&url).await;
    let (mut bytes, mut versions) = (Vec::new(), Vec::new());
    for (table, value) in [
        ("records", "CAST(doc AS text)"),
        ("cache_entries", "value"),
        ("blob_chunks", "encode(data, 'base64')"),
    ] {
        let sql = format!("SELECT {value}, key_version FROM {prefix}{table} WHERE tenant_id = $1");
        for r in sqlx::query(&sql).bind(tenant).fetch_all(&mut c).await.unwrap() {
            let v: String = r.get(0);
            if table == "blob_chunks" {
                use base64::Engine;
                let clean: String = v.split_whitespace().collect();
                bytes.extend(base64::engine::general_purpose::STANDARD.decode(clean).unwrap());
            } else {
                bytes.extend(v.into_bytes());
            }
            versions.push(r.get(1));
        }
    }
    (bytes, versions)
}

/// Every file under the data directory (SQLite's catalog and tenant data, their logs).
fn files_under(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

fn has_marker(bytes: &[u8]) -> bool {
    bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
}

async fn data_is_sealed_at_rest_at_every_tier(app: TestApp) {
    let tenants = [("rowt", "starter"), ("scht", "professional"), ("dbt", "enterprise")];
    let mut records = Vec::new();
    for (t, plan) in tenants {
        app.tenant(t, plan).await;
        records.push(write_marked(&app, t).await);
    }
    for ((t, _), record) in tenants.iter().zip(&records) {
        reads_back(&app, t, record).await;
    }
    if app.db_url.starts_with("sqlite") {
        let all = files_under(&app.data_dir);
        assert!(all.len() > 100_000, "the database files were read");
        assert!(!has_marker(&all), "the marker is in a database file in the clear");
    } else {
        for (t, _) in tenants {
            let (bytes, versions) = pg_raw(&app, t).await;
            assert_eq!(versions.len(), 3, "{t}: a record, a cache entry and a chunk");
            assert!(versions.iter().all(|v| *v == 1), "{t}: {versions:?}");
            assert!(!has_marker(&bytes), "{t}: the marker is stored in the clear");
        }
        let mut c = connect(&app.db_url).await;
        let secrets: Vec<String> = sqlx::query_scalar("SELECT value FROM tenant_secrets")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert_eq!(secrets.len(), 3);
        assert!(!has_marker(secrets.concat().as_bytes()));
    }
}

async fn a_sealed_record_in_another_tenants_row_does_not_open(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("beta", "starter").await;
    let acme_record = write_marked(&app, "acme").await;
    let (_, beta) = app.key("beta", "admin").await;
    let beta_record = app
        .post(
            "/v1/data/collections/notes/records",
            &beta,
            json!({"text": "beta's own"}),
        )
        .await
        .expect(201)
        .body;
    let beta_id = beta_record["id"].as_str().unwrap();
    // Someone with the database copies acme's sealed document into beta's row.
    let acme_id = acme_record.rsplit('/').next().unwrap();
    let (url, prefix) = if app.db_url.starts_with("sqlite") {
        (app.db_url.replace("catalog.db", "tenant-data.db"), String::new())
    } else {
        pg_place(&app, "acme").await
    };
    let mut c = connect(&url).await;
    let row = sqlx::query(&format!(
        "SELECT CAST(doc AS text), key_version FROM {prefix}records WHERE tenant_id = 'acme' AND id = $1"
    ))
    .bind(acme_id)
    .fetch_one(&mut c)
    .await
    .unwrap();
    let (doc, kv): (String, i64) = (row.get(0), row.get(1));
    let cast = if prefix.is_empty() { "$1" } else { "CAST($1 AS jsonb)" };
    let n = sqlx::query(&format!(
        "UPDATE {prefix}records SET doc = {cast}, key_version = $2 WHERE tenant_id = 'beta' AND id = $3"
    ))
    .bind(&doc)
    .bind(kv)
    .bind(beta_id)
    .execute(&mut c)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1, "beta's row was overwritten");
    let path = format!("/v1/data/collections/notes/records/{beta_id}");
    let r = app.get(&path, &beta).await.problem(500, "internal");
    assert!(
        r.body["detail"].as_str().unwrap().contains("could not be decrypted"),
        "{}",
        r.body
    );
    assert!(!r.body.to_string().contains("MARKER"), "never acme's data");
    // acme's own record still opens, and the server answers everything else.
    reads_back(&app, "acme", &acme_record).await;
    app.get("/v1/data/cache/greeting", &beta)
        .await
        .problem(404, "not_found");
}

/// Polls the tenant's data key status until every value is under its current version.
async fn sealed(app: &TestApp, tenant: &str) -> Value {
    let mut s = Value::Null;
    for _ in 0..400 {
        s = app
            .get(&format!("/v1/tenants/{tenant}/data-key"), ADMIN)
            .await
            .expect(200)
            .body;
        if s["state"] == "sealed" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{tenant}'s values were not all sealed under the current key: {s}");
}

async fn a_data_key_rotation_seals_everything_again(app: TestApp) {
    app.tenant("acme", "professional").await;
    app.tenant("beta", "starter").await;
    let record = write_marked(&app, "acme").await;
    let beta_record = write_marked(&app, "beta").await;
    let (_, key) = app.key("acme", "admin").await;
    // More records than one page of the reseal (500).
    for i in 0..620 {
        app.post("/v1/data/collections/many/records", &key, json!({"i": i}))
            .await
            .expect(201);
    }
    let s = sealed(&app, "acme").await;
    assert_eq!(
        (s["version"].clone(), s["progress"]["total"].clone()),
        (json!(1), json!(624))
    );
    assert_eq!(s["data_encrypted"], true);
    // Only operators rotate or look.
    app.post("/v1/tenants/acme/data-key/rotate", &key, json!({}))
        .await
        .problem(403, "forbidden");
    app.get("/v1/tenants/acme/data-key", &key)
        .await
        .problem(403, "forbidden");
    let r = app
        .post("/v1/tenants/acme/data-key/rotate", ADMIN, json!({}))
        .await
        .expect(202)
        .body;
    assert_eq!(r["version"], 2);
    assert!(r["job_id"].as_str().unwrap().starts_with("job_"), "{r}");
    let s = sealed(&app, "acme").await;
    assert_eq!(s["version"], 2);
    assert_eq!(s["progress"], json!({"done": 624, "total": 624}));
    assert_eq!(
        s["versions"].as_array().unwrap().len(),
        2,
        "the old version stays for old backups"
    );
    // The job recorded its progress and result (a moment after the progress said done).
    let mut job = None;
    for _ in 0..100 {
        let j = app
            .state
            .jobs
            .get(
                &tenantd_jobs::Jobs::platform(),
                r["job_id"].as_str().unwrap(),
                tenantd_limits::now_ms(),
            )
            .await
            .unwrap();
        if j.state != tenantd_jobs::JobState::Running {
            job = Some(j);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let job = job.expect("the re-seal job ended within 5 s");
    assert_eq!(job.state, tenantd_jobs::JobState::Succeeded);
    assert_eq!(
        job.progress,
        Some(json!({"done": 623, "total": 623})),
        "rows; the secret is apart"
    );
    assert_eq!(job.result.unwrap()["resealed"], json!({"secrets": 1, "rows": 623}));
    // Raw: every row of acme's is under version 2; beta's are untouched at 1.
    if app.db_url.starts_with("postgres") {
        let (bytes, versions) = pg_raw(&app, "acme").await;
        assert!(
            versions.iter().all(|v| *v == 2) && versions.len() == 623,
            "{versions:?}"
        );
        assert!(!has_marker(&bytes));
        assert!(pg_raw(&app, "beta").await.1.iter().all(|v| *v == 1));
    } else {
        let mut c = connect(&app.db_url.replace("catalog.db", "tenants/acme.db")).await;
        let v: Vec<i64> = sqlx::query_scalar("SELECT key_version FROM records UNION ALL SELECT key_version FROM blob_chunks UNION ALL SELECT key_version FROM cache_entries")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert!(v.iter().all(|v| *v == 2) && v.len() == 623, "{v:?}");
    }
    let mut c = connect(&app.db_url).await;
    let kv: i32 = sqlx::query_scalar("SELECT key_version FROM tenant_secrets WHERE tenant_id = 'acme'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(kv, 2);
    reads_back(&app, "acme", &record).await;
    reads_back(&app, "beta", &beta_record).await;
    let events = app
        .get("/v1/tenants/acme/audit?type=data_key.rotated", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(events["items"][0]["data"]["version"], 2);
}

async fn data_written_in_the_clear_is_sealed_at_the_next_start(mut app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("dbt", "enterprise").await;
    let records = [write_marked(&app, "acme").await, write_marked(&app, "dbt").await];
    let s = app.get("/v1/tenants/acme/data-key", ADMIN).await.expect(200).body;
    assert_eq!(s["data_encrypted"], false);
    assert_eq!(
        s["progress"],
        json!({"done": 1, "total": 4}),
        "only the secret is sealed: {s}"
    );
    if app.db_url.starts_with("postgres") {
        assert!(
            has_marker(&pg_raw(&app, "acme").await.0),
            "in the clear while encryption is off"
        );
    } else {
        assert!(has_marker(&files_under(&app.data_dir)));
    }
    app.stop().await;
    let app = start_with(
        app.db_url.clone(),
        app.data_dir.clone(),
        String::new(),
        axum::Router::new(),
    )
    .await;
    for t in ["acme", "dbt"] {
        let s = sealed(&app, t).await;
        assert_eq!(s["progress"], json!({"done": 4, "total": 4}), "{t}: {s}");
    }
    reads_back(&app, "acme", &records[0]).await;
    reads_back(&app, "dbt", &records[1]).await;
    if app.db_url.starts_with("postgres") {
        for t in ["acme", "dbt"] {
            assert!(!has_marker(&pg_raw(&app, t).await.0), "{t}");
        }
    }
}
