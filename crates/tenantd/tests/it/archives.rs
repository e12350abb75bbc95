//! Exports, backups, restore and clone over HTTP, on both backends: an export holds
//! every file the contract lists, each matching the manifest's checksum and count, and
//! nothing of another tenant's (nor a secret); a backup is sealed at rest, restores the
//! data exactly as it was (deep compare) after changes and deletions, clones into a new
//! tenant at another tier, is refused when written by a newer schema, and cannot be read
//! once its tenant is purged (crypto-shredding) while other tenants' backups restore.
use crate::common::{connect, TestApp, ADMIN};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

crate::both! {
    an_export_holds_the_tenant_and_nothing_else;
    a_backup_restores_clones_and_is_shredded_with_its_tenant;
    the_cli_exports_backs_up_restores_and_clones;
}

const MARK_A: &str = "ACME_MARKER_91d2";
const MARK_B: &str = "BETA_MARKER_77aa";
const SECRET: &str = "SECRET_VALUE_5e5e";

/// The owner's token.
async fn owner(app: &TestApp, tenant: &str) -> String {
    let uid = app.owner_id(tenant).await;
    app.token_for(tenant, &uid).await
}

/// Records in two collections, two blobs (one over a chunk of the archive), a cache
/// entry, a secret and a configuration value, all marked.
async fn fill(app: &TestApp, tenant: &str, mark: &str) {
    let (_, key) = app.key(tenant, "admin").await;
    for (c, n) in [("notes", 3), ("orders", 2)] {
        for i in 0..n {
            app.post(
                &format!("/v1/data/collections/{c}/records"),
                &key,
                json!({"i": i, "text": format!("{mark} {c} {i}")}),
            )
            .await
            .expect(201);
        }
    }
    app.put_bytes(
        "/v1/data/blobs/docs/a.txt",
        &key,
        format!("{mark} a").into_bytes(),
        "text/plain",
    )
    .await
    .expect(201);
    // Incompressible (an LCG's high bytes), so the archive spans more than one chunk.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..1_300_000u32)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    app.put_bytes("/v1/data/blobs/img/big.bin", &key, big, "image/png")
        .await
        .expect(201);
    app.call(
        "PUT",
        "/v1/data/cache/c1",
        Some(&key),
        Some(json!({"value": format!("{mark} cached")})),
        &[],
    )
    .await
    .expect(200);
    app.call(
        "PUT",
        &format!("/v1/tenants/{tenant}/secrets/token"),
        Some(&key),
        Some(json!({"value": SECRET})),
        &[],
    )
    .await
    .expect(201);
    app.call(
        "PUT",
        &format!("/v1/tenants/{tenant}/config/theme"),
        Some(&key),
        Some(json!({"value": format!("{mark} theme")})),
        &[],
    )
    .await
    .expect(200);
}

async fn schema(app: &TestApp) {
    app.call(
        "PUT",
        "/v1/config-schemas/theme",
        Some(ADMIN),
        Some(json!({"schema": {"type": "string"}})),
        &[],
    )
    .await
    .expect(201);
}

/// Polls an export's or backup's status until it is done.
async fn done(app: &TestApp, path: &str, token: &str) -> Value {
    let mut s = Value::Null;
    for _ in 0..600 {
        s = app.get(path, token).await.expect(200).body;
        if s["state"] == "done" || s["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s["state"], "done", "{s}");
    s
}

/// The files of a `.tar.gz`, by path.
fn untar(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.insert(path, b);
    }
    out
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn an_export_holds_the_tenant_and_nothing_else(app: TestApp) {
    schema(&app).await;
    app.tenant("acme", "starter").await;
    app.tenant("beta", "starter").await;
    fill(&app, "acme", MARK_A).await;
    fill(&app, "beta", MARK_B).await;
    let (_, acme_key_secret) = app.key("acme", "viewer").await;
    app.user("acme", "ann@acme.test", "member").await;
    let (_, admin) = app.key("acme", "admin").await;
    let acme_owner = owner(&app, "acme").await;
    let beta_owner = owner(&app, "beta").await;
    // Owners and operators export; admins, viewers and other tenants do not.
    for (token, code) in [(&admin, "forbidden"), (&acme_key_secret, "forbidden")] {
        app.post("/v1/tenants/acme/exports", token, json!({}))
            .await
            .problem(403, code);
    }
    app.post("/v1/tenants/acme/exports", &beta_owner, json!({}))
        .await
        .problem(403, "tenant_mismatch");
    let r = app
        .post("/v1/tenants/acme/exports", &acme_owner, json!({}))
        .await
        .expect(202)
        .body;
    let id = r["export_id"].as_str().unwrap();
    let path = format!("/v1/tenants/acme/exports/{id}");
    let s = done(&app, &path, ADMIN).await;
    app.get(&path, &acme_owner).await.expect(200);
    assert_eq!(
        s["progress"],
        json!({"done": 7, "total": 7}),
        "5 records and 2 blobs: {s}"
    );
    app.get(&path, &beta_owner).await.problem(403, "tenant_mismatch");
    app.get(&format!("/v1/tenants/beta/exports/{id}"), &beta_owner)
        .await
        .problem(404, "not_found");
    // The download is the archive the status describes.
    let resp = reqwest::Client::new()
        .get(format!("{}{path}/download", app.url))
        .bearer_auth(&acme_owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(Some(bytes.len() as u64), s["size_bytes"].as_u64());
    assert_eq!(s["sha256"], sha256(&bytes));
    let files = untar(&bytes);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(
        (manifest["format"].clone(), manifest["tenant_id"].clone()),
        (json!(1), json!("acme"))
    );
    assert!(manifest["schema_version"].as_i64().unwrap() >= 15);
    let listed: BTreeMap<String, &Value> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f))
        .collect();
    // Every file is listed with its checksum and size, and every listed file is there.
    assert_eq!(files.len(), listed.len() + 1);
    for (p, f) in &listed {
        let b = &files[p];
        assert_eq!(f["sha256"], sha256(b), "{p}");
        assert_eq!(f["size"], b.len(), "{p}");
    }
    let month = chrono_month();
    for want in [
        "tenant.json",
        "members.ndjson",
        "roles.json",
        "workspaces.ndjson",
        "keys.ndjson",
        "config.json",
        "features.json",
        "usage.ndjson",
        "audit.ndjson",
        "records/notes.ndjson",
        "records/orders.ndjson",
        "blobs.ndjson",
        "blobs/docs/a.txt",
        "blobs/img/big.bin",
        &format!("invoices/{month}.json"),
    ] {
        assert!(files.contains_key(want), "{want} missing: {:?}", files.keys());
    }
    assert_eq!(listed["records/notes.ndjson"]["count"], 3);
    assert_eq!(listed["records/orders.ndjson"]["count"], 2);
    assert_eq!(listed["members.ndjson"]["count"], 2, "the owner and ann");
    assert_eq!(listed["blobs/img/big.bin"]["content_type"], "image/png");
    assert_eq!(files["blobs/img/big.bin"].len(), 1_300_000);
    assert!(contains(&files["blobs/docs/a.txt"], MARK_A));
    let notes = String::from_utf8(files["records/notes.ndjson"].clone()).unwrap();
    assert!(
        notes.contains(&format!("{MARK_A} notes 2")),
        "decrypted for the tenant's use"
    );
    let config: Value = serde_json::from_slice(&files["config.json"]).unwrap();
    assert_eq!(config["theme"]["value"], format!("{MARK_A} theme"));
    let audit = String::from_utf8(files["audit.ndjson"].clone()).unwrap();
    assert!(audit.contains("tenant.created") && audit.lines().count() > 3);
    let usage = String::from_utf8(files["usage.ndjson"].clone()).unwrap();
    assert_eq!(listed["usage.ndjson"]["count"], usage.lines().count());
    // Nothing of beta's, no secret's value, no key's secret.
    let all: Vec<u8> = files.values().flatten().copied().collect();
    assert!(!contains(&all, MARK_B), "another tenant's data");
    for (p, b) in &files {
        assert!(!contains(b, "\"beta\""), "{p} names another tenant");
    }
    assert!(!contains(&all, SECRET), "a secret's value");
    assert!(!contains(&all, &acme_key_secret), "an API key's secret");
    assert!(contains(&files["keys.ndjson"], "viewer"));
    // Stored sealed: the catalog's chunks of the export hold no marker.
    let mut c = connect(&app.db_url).await;
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM archive_chunks WHERE archive_id = $1")
        .bind(id)
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert!(
        stored.len() >= 2
            && stored
                .iter()
                .all(|ch| !contains(ch, MARK_A) && !ch.starts_with(&[0x1f, 0x8b]))
    );
    // Seven days on, the export is gone, chunks and all.
    let week = tenantd_core::ts::format(tenantd_core::now_secs() + 6 * 86_400);
    assert!(s["expires_at"].as_str().unwrap() > week.as_str(), "{s}");
    sqlx::query("UPDATE archives SET expires_at = 1 WHERE id = $1")
        .bind(id)
        .execute(&mut c)
        .await
        .unwrap();
    app.state.drop_expired_archives().await;
    app.get(&path, ADMIN).await.problem(404, "not_found");
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM archive_chunks WHERE archive_id = $1")
        .bind(id)
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty());
}

/// This month as `YYYY-MM`.
fn chrono_month() -> String {
    let (y, m) = tenantd_core::ts::year_month(tenantd_core::now_secs());
    format!("{y:04}-{m:02}")
}

/// A tenant's data as the API shows it: every record (with versions and times), every
/// blob (with its content), and its configuration value.
async fn snapshot(app: &TestApp, tenant: &str) -> Value {
    let (_, key) = app.key(tenant, "admin").await;
    let mut out = json!({});
    for c in ["notes", "orders"] {
        let r = app
            .get(&format!("/v1/data/collections/{c}/records?limit=1000"), &key)
            .await
            .expect(200)
            .body;
        out[c] = r["items"].clone();
    }
    let blobs = app.get("/v1/data/blobs?limit=1000", &key).await.expect(200).body;
    let mut listed = Vec::new();
    for b in blobs["items"].as_array().unwrap() {
        let p = b["path"].as_str().unwrap();
        let got = reqwest::Client::new()
            .get(format!("{}/v1/data/blobs/{p}", app.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        listed.push(json!([
            p,
            b["content_type"],
            b["sha256"],
            b["size_bytes"],
            sha256(&got)
        ]));
    }
    out["blobs"] = json!(listed);
    let c = app
        .get(&format!("/v1/tenants/{tenant}/config/theme"), &key)
        .await
        .expect(200)
        .body;
    out["theme"] = c["value"].clone();
    out
}

async fn backup(app: &TestApp, tenant: &str) -> String {
    let r = app
        .post(&format!("/v1/tenants/{tenant}/backups"), ADMIN, json!({}))
        .await
        .expect(202)
        .body;
    let id = r["backup_id"].as_str().unwrap().to_string();
    done(app, &format!("/v1/tenants/{tenant}/backups/{id}"), ADMIN).await;
    id
}

async fn a_backup_restores_clones_and_is_shredded_with_its_tenant(app: TestApp) {
    schema(&app).await;
    app.tenant("acme", "professional").await;
    app.tenant("beta", "starter").await;
    fill(&app, "acme", MARK_A).await;
    fill(&app, "beta", MARK_B).await;
    let (_, key) = app.key("acme", "admin").await;
    // One record at version 2, so versions are seen to come back.
    let first = app
        .get("/v1/data/collections/notes/records", &key)
        .await
        .expect(200)
        .body["items"][0]
        .clone();
    let first_path = format!("/v1/data/collections/notes/records/{}", first["id"].as_str().unwrap());
    app.patch(&first_path, &key, json!({"i": 0, "text": format!("{MARK_A} edited")}))
        .await
        .expect(200);
    let before = snapshot(&app, "acme").await;
    // While a restore runs here, the tenant's data answers 503 with Retry-After.
    let acme = tenantd_core::TenantId::parse("acme").unwrap();
    app.state.restoring.insert(acme);
    let r = app.get(&first_path, &key).await.problem(503, "unavailable");
    assert_eq!(r.headers["retry-after"], "5");
    app.state.restoring.remove(&acme);
    app.get(&first_path, &key).await.expect(200);
    // Only operators back up, list or restore.
    app.post("/v1/tenants/acme/backups", &key, json!({}))
        .await
        .problem(403, "forbidden");
    app.get("/v1/tenants/acme/backups", &key)
        .await
        .problem(403, "forbidden");
    let bid = backup(&app, "acme").await;
    let beta_bid = backup(&app, "beta").await;
    // An operator reaching a tenant's data through its backups is on its record.
    let seen = app
        .get("/v1/tenants/acme/audit?type=data.operator_access", ADMIN)
        .await
        .expect(200)
        .body;
    assert!(seen.to_string().contains("/v1/tenants/acme/backups"), "{seen}");
    let list = app.get("/v1/tenants/acme/backups", ADMIN).await.expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], bid);
    // Sealed at rest: the chunks hold no marker, no gzip header in the clear.
    let mut c = connect(&app.db_url).await;
    let chunks: Vec<Vec<u8>> = sqlx::query("SELECT data FROM archive_chunks WHERE archive_id = $1")
        .bind(&bid)
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(chunks.len() >= 2, "more than one chunk: {}", chunks.len());
    assert!(chunks
        .iter()
        .all(|ch| !ch.starts_with(&[0x1f, 0x8b]) && !contains(ch, MARK_A)));
    // Change, delete and add; then restore.
    app.patch(&first_path, &key, json!({"changed": true})).await.expect(200);
    let orders = app
        .get("/v1/data/collections/orders/records", &key)
        .await
        .expect(200)
        .body;
    let gone = format!(
        "/v1/data/collections/orders/records/{}",
        orders["items"][0]["id"].as_str().unwrap()
    );
    app.delete(&gone, &key).await.expect(204);
    app.post("/v1/data/collections/notes/records", &key, json!({"new": 1}))
        .await
        .expect(201);
    app.delete("/v1/data/blobs/img/big.bin", &key).await.expect(204);
    app.call(
        "PUT",
        "/v1/tenants/acme/config/theme",
        Some(&key),
        Some(json!({"value": "other"})),
        &[],
    )
    .await
    .expect(200);
    assert_ne!(snapshot(&app, "acme").await, before);
    app.post("/v1/tenants/acme/restore", &key, json!({"backup_id": bid}))
        .await
        .problem(403, "forbidden");
    app.post("/v1/tenants/acme/restore", ADMIN, json!({"backup_id": "bak_nope"}))
        .await
        .problem(404, "not_found");
    app.post("/v1/tenants/acme/restore", ADMIN, json!({"backup_id": beta_bid}))
        .await
        .problem(404, "not_found");
    let r = app
        .post("/v1/tenants/acme/restore", ADMIN, json!({"backup_id": bid}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        r["result"]["verified"],
        json!({"records": 5, "blobs": 2, "files": 15}),
        "{r}"
    );
    assert_eq!(snapshot(&app, "acme").await, before, "the data equals the backup");
    app.get(&gone, &key).await.expect(200);
    let restored = app
        .get("/v1/tenants/acme/audit?type=backup.restored", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(restored["items"][0]["data"]["backup_id"], bid);
    // A backup of a newer schema is refused, naming why.
    let newer = backup(&app, "acme").await;
    sqlx::query("UPDATE archives SET schema_version = 9999 WHERE id = $1")
        .bind(&newer)
        .execute(&mut c)
        .await
        .unwrap();
    let r = app
        .post("/v1/tenants/acme/restore", ADMIN, json!({"backup_id": newer}))
        .await
        .problem(409, "conflict");
    assert!(r.body["detail"].as_str().unwrap().contains("newer"), "{}", r.body);
    // A clone on another tier: the same data, its own keys.
    let r = app
        .post(
            "/v1/tenants/acme/clone",
            ADMIN,
            json!({"new_id": "acme-copy", "plan": "enterprise", "backup_id": bid}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(r["tenant_id"], "acme-copy");
    let p = app.get("/v1/tenants/acme-copy/placement", ADMIN).await.expect(200).body;
    assert_eq!(p["tier"], "database");
    assert_eq!(snapshot(&app, "acme-copy").await, before);
    let m = app.get("/v1/tenants/acme-copy/members", ADMIN).await.expect(200).body;
    assert_eq!(m["items"][0]["email"], "owner@acme.test");
    // Without a backup id, a clone takes a new backup first.
    let r = app
        .post("/v1/tenants/beta/clone", ADMIN, json!({"new_id": "beta-copy"}))
        .await
        .expect(200)
        .body;
    assert_ne!(r["backup_id"], beta_bid);
    assert_eq!(snapshot(&app, "beta-copy").await, snapshot(&app, "beta").await);
    // Crypto-shredding: acme's backup, kept aside, is unreadable once acme is purged.
    let archive_row = sqlx::query("SELECT * FROM archives WHERE id = $1")
        .bind(&bid)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let kept: (i64, String, i64, i64) = (
        archive_row.get::<i64, _>("size_bytes"),
        archive_row.get::<String, _>("sha256"),
        archive_row.get::<i64, _>("chunks"),
        archive_row.get::<i64, _>("key_version"),
    );
    let now = tenantd_core::now_secs();
    app.delete("/v1/tenants/acme", ADMIN).await.expect(200);
    app.state.purge_due(now + 31 * 86_400).await;
    app.tenant("acme", "professional").await;
    fill(&app, "acme", "NEW ACME").await;
    sqlx::query(
        "INSERT INTO archives (id, tenant_id, kind, state, done, total, size_bytes, sha256, chunks, key_version, \
         schema_version, created_at) VALUES ($1, 'acme', 'backup', 'done', 7, 7, $2, $3, $4, $5, 15, 0)",
    )
    .bind(&bid)
    .bind(kept.0)
    .bind(&kept.1)
    .bind(kept.2)
    .bind(kept.3)
    .execute(&mut c)
    .await
    .unwrap();
    for (seq, data) in chunks.iter().enumerate() {
        sqlx::query("INSERT INTO archive_chunks (archive_id, tenant_id, seq, data) VALUES ($1, 'acme', $2, $3)")
            .bind(&bid)
            .bind(seq as i64)
            .bind(data)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let r = app
        .post("/v1/tenants/acme/restore", ADMIN, json!({"backup_id": bid}))
        .await
        .problem(500, "internal");
    assert!(r.body["detail"].as_str().unwrap().contains("decrypt"), "{}", r.body);
    let after = snapshot(&app, "acme").await;
    assert!(after.to_string().contains("NEW ACME"), "nothing changed: {after}");
    // Other tenants' backups still restore.
    app.post("/v1/tenants/beta/restore", ADMIN, json!({"backup_id": beta_bid}))
        .await
        .expect(200);
}

/// `tenantd <args>` against the app's URL with the operator key: exit code and output.
async fn cli(app: &TestApp, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"));
    cmd.args(args)
        .args(["--url", &app.url])
        .env("TENANTD_ADMIN_KEY", ADMIN)
        .env_remove("TENANTD_URL");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn the_cli_exports_backs_up_restores_and_clones(app: TestApp) {
    schema(&app).await;
    app.tenant("acme", "starter").await;
    fill(&app, "acme", MARK_A).await;
    let before = snapshot(&app, "acme").await;
    let out = app.data_dir.join("acme.tar.gz");
    let (code, text) = cli(&app, &["export", "acme", "--out", out.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("wrote") && text.contains("done 7/7"), "{text}");
    let files = untar(&std::fs::read(&out).unwrap());
    assert!(files.contains_key("manifest.json") && files.contains_key("blobs/img/big.bin"));
    let (code, text) = cli(&app, &["backup", "acme"]).await;
    assert_eq!(code, 0, "{text}");
    let start = text.find('{').unwrap();
    let b: Value = serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    let bid = b["id"].as_str().unwrap();
    let (_, key) = app.key("acme", "admin").await;
    app.delete("/v1/data/blobs/docs/a.txt", &key).await.expect(204);
    let (code, text) = cli(&app, &["restore", "acme", "--backup", bid]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(snapshot(&app, "acme").await, before);
    let (code, text) = cli(
        &app,
        &["clone", "acme", "acme2", "--plan", "professional", "--backup", bid],
    )
    .await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(snapshot(&app, "acme2").await, before);
    // Errors name the problem and exit non-zero.
    let (code, text) = cli(&app, &["restore", "acme", "--backup", "bak_nope"]).await;
    assert_ne!(code, 0);
    assert!(text.contains("not_found"), "{text}");
}
