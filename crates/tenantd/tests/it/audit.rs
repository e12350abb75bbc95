//! The event log over HTTP and from the CLI: each change's event once, none for a refused
//! request; verification, checkpoints and NDJSON exports; tampering caught at its seq.
use crate::common::{connect, TestApp, ADMIN};
use serde_json::{json, Value};

crate::both! {
    each_change_has_its_event_once_and_a_refused_request_none;
    the_chain_verifies_streams_and_catches_an_edit;
    the_cli_verifies_the_catalog_and_an_export_with_only_the_jwks;
}

/// The types in the tenant's chain, in `seq` order.
async fn types(app: &TestApp, tenant: &str) -> Vec<String> {
    let stream = app
        .call(
            "GET",
            &format!("/v1/tenants/{tenant}/audit"),
            Some(ADMIN),
            None,
            &[("accept", "application/x-ndjson")],
        )
        .await
        .expect(200);
    lines(&stream.body)
        .iter()
        .filter_map(|l| l["type"].as_str().map(str::to_string))
        .collect()
}

/// An NDJSON body's lines.
fn lines(body: &Value) -> Vec<Value> {
    body.as_str()
        .unwrap_or_else(|| panic!("not NDJSON: {body}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn each_change_has_its_event_once_and_a_refused_request_none(app: TestApp) {
    app.tenant("acme", "free").await;
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": "acme", "plan": "starter", "owner_email": "o@acme.test"}),
    )
    .await
    .expect(409);
    app.patch("/v1/tenants/acme", ADMIN, json!({"name": "Acme Inc"}))
        .await
        .expect(200);
    app.patch("/v1/tenants/acme", ADMIN, json!({"name": " "}))
        .await
        .expect(400);
    let m = app
        .post(
            "/v1/tenants/acme/members",
            ADMIN,
            json!({"email": "bob@acme.test", "role": "member"}),
        )
        .await
        .expect(201)
        .body;
    let user = m["user_id"].as_str().unwrap().to_string();
    app.post(
        "/v1/tenants/acme/members",
        ADMIN,
        json!({"email": "not an email", "role": "member"}),
    )
    .await
    .expect(400);
    app.patch(
        &format!("/v1/tenants/acme/members/{user}"),
        ADMIN,
        json!({"role": "admin"}),
    )
    .await
    .expect(200);
    app.post(
        "/v1/tenants/acme/roles",
        ADMIN,
        json!({"name": "auditor", "permissions": ["audit:read"]}),
    )
    .await
    .expect(201);
    app.delete("/v1/tenants/acme/roles/auditor", ADMIN).await.expect(204);
    app.delete("/v1/tenants/acme/roles/auditor", ADMIN).await.expect(404);
    let (key_id, _) = app.key("acme", "member").await;
    app.post(&format!("/v1/tenants/acme/keys/{key_id}/rotate"), ADMIN, json!({}))
        .await
        .expect(200);
    app.delete(&format!("/v1/tenants/acme/keys/{key_id}"), ADMIN)
        .await
        .expect(204);
    // Revoking a revoked key changes nothing, and records nothing.
    app.delete(&format!("/v1/tenants/acme/keys/{key_id}"), ADMIN)
        .await
        .expect(204);
    app.delete(&format!("/v1/tenants/acme/members/{user}"), ADMIN)
        .await
        .expect(204);
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "unpaid"}))
        .await
        .expect(200);
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "again"}))
        .await
        .expect(409);
    app.post("/v1/tenants/acme/resume", ADMIN, json!({})).await.expect(200);
    app.delete("/v1/tenants/acme", ADMIN).await.expect(200);
    app.post("/v1/tenants/acme/restore", ADMIN, json!({})).await.expect(200);
    assert_eq!(
        types(&app, "acme").await,
        [
            "tenant.created",
            "tenant.updated",
            "member.added",
            "member.role_changed",
            "role.created",
            "role.deleted",
            "key.created",
            "key.rotated",
            "key.revoked",
            "member.removed",
            "tenant.suspended",
            "tenant.resumed",
            "tenant.deleted",
            "tenant.restored",
        ]
    );
    let v = app.get("/v1/tenants/acme/audit/verify", ADMIN).await.expect(200).body;
    assert_eq!((&v["valid"], &v["events"]), (&json!(true), &json!(14)), "{v}");
}

async fn the_chain_verifies_streams_and_catches_an_edit(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, owner) = app.key("acme", "owner").await;
    for n in 0..3 {
        app.post(
            "/v1/tenants/acme/roles",
            &owner,
            json!({"name": format!("r{n}"), "permissions": ["audit:read"]}),
        )
        .await
        .expect(201);
    }
    let v = app.get("/v1/tenants/acme/audit/verify", &owner).await.expect(200).body;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(
        (v["events"].as_u64(), &v["head"]["seq"], &v["checkpoint"]),
        (Some(5), &json!(5), &Value::Null)
    );
    // A tenant's key cannot sign checkpoints; the operator can.
    app.post("/v1/audit/checkpoints", &owner, json!({}))
        .await
        .problem(403, "forbidden");
    let made = app
        .post("/v1/audit/checkpoints", ADMIN, json!({}))
        .await
        .expect(201)
        .body;
    let cp = made["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tenant_id"] == "acme")
        .unwrap_or_else(|| panic!("{made}"))
        .clone();
    assert_eq!((&cp["seq"], &cp["hash"]), (&json!(5), &v["head"]["hash"]));
    let again = app
        .post("/v1/audit/checkpoints", ADMIN, json!({}))
        .await
        .expect(201)
        .body;
    assert!(
        again["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["tenant_id"] != "acme"),
        "nothing moved in acme's chain: {again}"
    );
    let v = app.get("/v1/tenants/acme/audit/verify", &owner).await.expect(200).body;
    assert_eq!(v["checkpoint"], cp, "{v}");
    // Pages, newest first, with the contract's fields; type= takes a prefix.
    let page = app
        .get("/v1/tenants/acme/audit?type=role.*", &owner)
        .await
        .expect(200)
        .body;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    let e = &items[0];
    assert_eq!(
        (&e["type"], &e["seq"], &e["data"]["role"]),
        (&json!("role.created"), &json!(5), &json!("r2"))
    );
    assert_eq!(e["actor"]["type"], "api_key", "{e}");
    for field in ["id", "digest", "prev_hash", "hash", "at", "request_id"] {
        assert!(e[field].is_string(), "{field} in {e}");
    }
    assert!(e.get("redacted").is_none(), "only tombstones say so: {e}");
    app.get("/v1/tenants/acme/audit?type=Role", &owner)
        .await
        .problem(400, "invalid_request");
    // The stream: every event in seq order, then the checkpoint.
    let stream = app
        .call(
            "GET",
            "/v1/tenants/acme/audit",
            Some(&owner),
            None,
            &[("accept", "application/x-ndjson")],
        )
        .await
        .expect(200);
    assert_eq!(stream.headers["content-type"], "application/x-ndjson");
    let all = lines(&stream.body);
    assert_eq!(
        all.iter().filter_map(|l| l["seq"].as_i64()).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all.last().unwrap(), &json!({"checkpoint": cp}));
    // One edited row in the database: verification fails at that seq.
    let mut c = connect(&app.db_url).await;
    sqlx::query("UPDATE audit_events SET detail = '{\"name\": \"root\"}' WHERE chain = 'acme' AND seq = 3")
        .execute(&mut c)
        .await
        .unwrap();
    let v = app.get("/v1/tenants/acme/audit/verify", &owner).await.expect(200).body;
    assert_eq!((&v["valid"], &v["first_bad_seq"]), (&json!(false), &json!(3)), "{v}");
}

/// `tenantd audit verify` with these arguments: its exit code and what it printed.
fn cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .arg("audit")
        .arg("verify")
        .args(args)
        .env_remove("TENANTD_DATABASE_URL")
        .output()
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

async fn the_cli_verifies_the_catalog_and_an_export_with_only_the_jwks(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    app.post("/v1/audit/checkpoints", ADMIN, json!({})).await.expect(201);
    let export = app
        .call(
            "GET",
            "/v1/audit",
            Some(ADMIN),
            None,
            &[("accept", "application/x-ndjson")],
        )
        .await
        .expect(200)
        .body
        .as_str()
        .unwrap()
        .to_string();
    let jwks = app.get("/.well-known/jwks.json", ADMIN).await.expect(200).body;
    let dir = app.data_dir.join("audit-export");
    std::fs::create_dir_all(&dir).unwrap();
    let (file, keys) = (dir.join("audit.ndjson"), dir.join("jwks.json"));
    std::fs::write(&file, &export).unwrap();
    std::fs::write(&keys, jwks.to_string()).unwrap();
    let (f, k) = (file.to_str().unwrap(), keys.to_str().unwrap());
    let (code, out) = cli(&["--file", f, "--jwks", k]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("acme: valid") && out.contains("checkpoint verified"),
        "{out}"
    );
    // One event's data edited in the file.
    let edited = export.replacen("\"plan\":\"free\"", "\"plan\":\"enterprise\"", 1);
    assert_ne!(edited, export);
    std::fs::write(&file, &edited).unwrap();
    let (code, out) = cli(&["--file", f, "--jwks", k]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at seq 1"), "{out}");
    // The right events, but checked against another server's keys.
    std::fs::write(&file, &export).unwrap();
    std::fs::write(
        &keys,
        json!({"keys": [{"kid": jwks["keys"][0]["kid"], "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})
            .to_string(),
    )
    .unwrap();
    let (code, out) = cli(&["--file", f, "--jwks", k]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature"), "{out}");
    // The catalog itself.
    let data_dir = app.data_dir.to_str().unwrap().to_string();
    let db = ["--database-url", app.db_url.as_str(), "--data-dir", data_dir.as_str()];
    let (code, out) = cli(&db);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("acme: valid") && out.contains("beta: valid"), "{out}");
    let mut c = connect(&app.db_url).await;
    sqlx::query("DELETE FROM audit_events WHERE chain = 'beta' AND seq = 1")
        .execute(&mut c)
        .await
        .unwrap();
    let (code, out) = cli(&db);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("beta: BROKEN at seq 1"), "{out}");
    let (code, out) = cli(&[&db[..], &["--tenant", "acme"]].concat());
    assert_eq!(code, 0, "{out}");
}
