//! Data protection over HTTP, on both backends: secrets are sealed at rest (read raw, the
//! marker is nowhere), leave tenantd only through their own `GET` with `secrets:read`,
//! each read an event; a sealed value copied into another tenant's row does not open
//! (a clear error, never the other tenant's value); a purge destroys the tenant's data
//! keys first, so a copy of its sealed values taken before never opens again.
use crate::common::{connect, start_keyed, TestApp, ADMIN, MASTER_KEY};
use serde_json::{json, Value};
use sqlx::Row;

crate::both! {
    secrets_are_sealed_at_rest_and_read_only_with_their_permission;
    a_sealed_value_in_another_tenants_row_does_not_open;
    a_purge_destroys_the_data_keys_first;
    a_master_key_rotation_keeps_every_value_readable;
}

const MARKER: &str = "sk_live_MARKER_7f3c1e";

/// Every stored text of the tables a secret could reach, as the database holds it.
async fn raw_rows(db_url: &str) -> String {
    let mut c = connect(db_url).await;
    let mut all = String::new();
    for (table, cols) in [
        ("tenant_secrets", "tenant_id, name, value"),
        ("audit_events", "action, detail"),
        ("tenant_keys", "tenant_id, wrapped"),
    ] {
        for r in sqlx::query(&format!("SELECT {cols} FROM {table}"))
            .fetch_all(&mut c)
            .await
            .unwrap()
        {
            for i in 0..r.len() {
                all.push_str(&r.try_get::<String, _>(i).unwrap_or_default());
                all.push('\n');
            }
        }
    }
    all
}

/// The SQLite catalog's files, byte for byte (the database and its write-ahead log).
fn sqlite_files(app: &TestApp) -> Vec<u8> {
    let Some(path) = app.db_url.strip_prefix("sqlite://") else {
        return Vec::new();
    };
    let path = path.split('?').next().unwrap();
    [path.to_string(), format!("{path}-wal")]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flatten()
        .collect()
}

async fn put_secret(app: &TestApp, tenant: &str, name: &str, token: &str, value: &str) -> crate::common::Reply {
    app.call(
        "PUT",
        &format!("/v1/tenants/{tenant}/secrets/{name}"),
        Some(token),
        Some(json!({ "value": value })),
        &[],
    )
    .await
}

async fn secrets_are_sealed_at_rest_and_read_only_with_their_permission(app: TestApp) {
    app.tenant("acme", "starter").await;
    let (_, admin) = app.key("acme", "admin").await;
    let (_, member) = app.key("acme", "member").await;
    let r = put_secret(&app, "acme", "stripe", &admin, MARKER).await.expect(201);
    assert_eq!(
        (r.body["name"].clone(), r.body["version"].clone()),
        (json!("stripe"), json!(1))
    );
    assert!(r.body.get("value").is_none(), "a write never answers the value");
    let r = put_secret(&app, "acme", "stripe", &admin, &format!("{MARKER}-2"))
        .await
        .expect(200);
    assert_eq!(r.body["version"], 2);
    put_secret(&app, "acme", "bad name", &admin, "x")
        .await
        .problem(400, "invalid_request");
    put_secret(&app, "acme", "big", &admin, &"x".repeat(64 * 1024 + 1))
        .await
        .problem(400, "invalid_request");
    // Nowhere in the clear: not in the rows, not in the events, not in the files.
    let raw = raw_rows(&app.db_url).await;
    assert!(raw.contains("stripe"), "the rows were read");
    assert!(!raw.contains("MARKER"), "the value is sealed at rest");
    let files = sqlite_files(&app);
    assert!(
        !files.windows(6).any(|w| w == b"MARKER"),
        "not in the SQLite files either"
    );
    // tenantd's JWT signing keys are sealed under the master key too.
    let mut c = connect(&app.db_url).await;
    for r in sqlx::query("SELECT private_key FROM signing_keys")
        .fetch_all(&mut c)
        .await
        .unwrap()
    {
        use base64::Engine;
        let stored = base64::engine::general_purpose::STANDARD
            .decode(r.get::<String, _>(0))
            .unwrap();
        assert!(stored.starts_with(b"TDS1"), "a signing key stored in the clear");
    }
    // A member (`*:read`) does not read secrets; an admin does, and each read is an event.
    for path in ["/v1/tenants/acme/secrets/stripe", "/v1/tenants/acme/secrets"] {
        app.get(path, &member).await.problem(403, "forbidden");
    }
    let r = app.get("/v1/tenants/acme/secrets/stripe", &admin).await.expect(200);
    assert_eq!(
        r.body,
        json!({"name": "stripe", "value": format!("{MARKER}-2"), "version": 2})
    );
    let list = app.get("/v1/tenants/acme/secrets", &admin).await.expect(200).body;
    assert_eq!(list["items"][0]["name"], "stripe");
    assert!(!list.to_string().contains("MARKER"), "a list never holds values");
    let reads = app
        .get("/v1/tenants/acme/audit?type=secret.read", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(reads["items"].as_array().unwrap().len(), 1);
    let all = app.get("/v1/tenants/acme/audit", ADMIN).await.expect(200).body;
    assert!(!all.to_string().contains("MARKER"), "no event holds the value");
    app.delete("/v1/tenants/acme/secrets/stripe", &member)
        .await
        .problem(403, "forbidden");
    app.delete("/v1/tenants/acme/secrets/stripe", &admin).await.expect(204);
    app.get("/v1/tenants/acme/secrets/stripe", &admin)
        .await
        .problem(404, "not_found");
}

async fn a_sealed_value_in_another_tenants_row_does_not_open(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("beta", "starter").await;
    put_secret(&app, "acme", "stripe", ADMIN, MARKER).await.expect(201);
    put_secret(&app, "beta", "stripe", ADMIN, "beta's own")
        .await
        .expect(201);
    // beta's key cannot reach acme's secret.
    let (_, beta) = app.key("beta", "admin").await;
    app.get("/v1/tenants/acme/secrets/stripe", &beta)
        .await
        .problem(403, "tenant_mismatch");
    // Someone with the database copies acme's sealed value into beta's row.
    let mut c = connect(&app.db_url).await;
    let row = sqlx::query("SELECT value, key_version FROM tenant_secrets WHERE tenant_id = 'acme'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let (sealed, kv): (String, i32) = (row.get(0), row.get(1));
    sqlx::query("UPDATE tenant_secrets SET value = $1, key_version = $2 WHERE tenant_id = 'beta'")
        .bind(&sealed)
        .bind(kv)
        .execute(&mut c)
        .await
        .unwrap();
    let r = app
        .get("/v1/tenants/beta/secrets/stripe", &beta)
        .await
        .problem(500, "internal");
    assert!(
        r.body["detail"].as_str().unwrap().contains("could not be decrypted"),
        "{}",
        r.body
    );
    assert!(!r.body.to_string().contains("MARKER"));
    // The same sealed value under another name of acme's does not open either.
    sqlx::query("UPDATE tenant_secrets SET name = 'other' WHERE tenant_id = 'acme'")
        .execute(&mut c)
        .await
        .unwrap();
    app.get("/v1/tenants/acme/secrets/other", ADMIN)
        .await
        .problem(500, "internal");
    // The server still answers everything else.
    app.get("/v1/tenants/beta/secrets", &beta).await.expect(200);
}

async fn a_purge_destroys_the_data_keys_first(app: TestApp) {
    app.tenant("gone", "starter").await;
    app.tenant("kept", "starter").await;
    put_secret(&app, "gone", "token", ADMIN, MARKER).await.expect(201);
    put_secret(&app, "kept", "token", ADMIN, "kept's").await.expect(201);
    // A copy of the catalog's rows taken before the purge (a backup, say).
    let mut c = connect(&app.db_url).await;
    let copy = sqlx::query("SELECT value, key_version FROM tenant_secrets WHERE tenant_id = 'gone'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let (sealed, kv): (String, i32) = (copy.get(0), copy.get(1));
    let now = tenantd_core::now_secs();
    app.delete("/v1/tenants/gone", ADMIN).await.expect(200);
    let purged = app.state.purge_due(now + 31 * 86_400).await;
    assert_eq!(purged.iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["gone"]);
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM tenant_keys WHERE tenant_id = 'gone'")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "its data keys are destroyed");
    let audit = app.get("/v1/audit?type=tenant.shredded", ADMIN).await.expect(200).body;
    let ev: &Value = &audit["items"][0];
    assert_eq!(
        (ev["data"]["tenant_id"].clone(), ev["data"]["data_keys"].clone()),
        (json!("gone"), json!(1))
    );
    // A new tenant under the same id, with the old sealed row put back: it never opens.
    app.tenant("gone", "starter").await;
    put_secret(&app, "gone", "token", ADMIN, "new").await.expect(201);
    sqlx::query("UPDATE tenant_secrets SET value = $1, key_version = $2 WHERE tenant_id = 'gone'")
        .bind(&sealed)
        .bind(kv)
        .execute(&mut c)
        .await
        .unwrap();
    app.get("/v1/tenants/gone/secrets/token", ADMIN)
        .await
        .problem(500, "internal");
    // Another tenant's secrets are untouched.
    let r = app.get("/v1/tenants/kept/secrets/token", ADMIN).await.expect(200);
    assert_eq!(r.body["value"], "kept's");
}

async fn a_master_key_rotation_keeps_every_value_readable(mut app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("beta", "starter").await;
    for t in ["acme", "beta"] {
        put_secret(&app, t, "token", ADMIN, &format!("{t}-{MARKER}"))
            .await
            .expect(201);
    }
    let (uid, _) = app.user("acme", "ann@acme.test", "admin").await;
    app.stop().await;
    let new_file = app.data_dir.join("new.key");
    let rotate = |master: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(["master-key", "rotate", "--new-key-file"])
            .arg(&new_file)
            .args(["--database-url", &app.db_url])
            .arg("--data-dir")
            .arg(&app.data_dir)
            .env("TENANTD_MASTER_KEY", master)
            .env_remove("TENANTD_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = rotate(MASTER_KEY);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("re-wrapped 2 data keys and 1 signing keys"), "{err}");
    let new = std::fs::read_to_string(&new_file).unwrap().trim().to_string();
    // Run again with the old key: the catalog is the new key's now, and nothing changes.
    let again = rotate(MASTER_KEY);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The old key no longer opens the catalog; the new one reads every value.
    let old = tenantd::config::Config::merge(
        &tenantd::config::ServeArgs {
            database_url: Some(app.db_url.as_str().into()),
            data_dir: Some(app.data_dir.clone()),
            ..Default::default()
        },
        Default::default(),
        Some(ADMIN.into()),
    )
    .unwrap();
    let refused = tenantd::startup::prepare(tenantd::config::Config {
        master_key: Some(tenantd_core::secret::Secret::new(MASTER_KEY)),
        ..old
    })
    .await;
    assert!(refused.is_err_and(|e| e.to_string().contains("not the one")));
    let app = start_keyed(
        app.db_url.clone(),
        app.data_dir.clone(),
        String::new(),
        axum::Router::new(),
        &new,
    )
    .await;
    for t in ["acme", "beta"] {
        let r = app
            .get(&format!("/v1/tenants/{t}/secrets/token"), ADMIN)
            .await
            .expect(200);
        assert_eq!(r.body["value"], format!("{t}-{MARKER}"));
    }
    // The signing key survived too: a token minted now verifies.
    let token = app.token_for("acme", &uid).await;
    app.get("/v1/me", &token).await.expect(200);
}
