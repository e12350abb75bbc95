use crate::common::{TestApp, ADMIN};
use serde_json::json;

crate::both! {
    create_is_idempotent_and_validated;
    list_filters_and_pages;
    patch_changes_fields_by_permission;
    lifecycle_transitions_are_checked;
    deleted_tenants_are_purged_after_retention;
    the_purger_runs_every_purge_interval_seconds, "purge_interval_seconds = 1";
    plans_are_seeded_and_editable;
    a_change_whose_event_cannot_be_written_is_not_made;
}

// With the counters in Redis, the purge deletes the tenant's keys there too.
crate::on_redis!(deleted_tenants_are_purged_after_retention);

async fn create_is_idempotent_and_validated(app: TestApp) {
    let body = json!({"id": "Acme", "name": "Acme Inc", "plan": "starter", "owner_email": "Ann@Acme.test", "settings": {"region": "eu"}});
    let t = app.post("/v1/tenants", ADMIN, body.clone()).await.expect(201).body;
    assert_eq!(t["id"], "acme");
    assert_eq!(t["status"], "active");
    assert_eq!(t["plan"], "starter");
    assert_eq!(t["settings"]["region"], "eu");
    // The same request again: one tenant, a clear 200 with it.
    let again = app.post("/v1/tenants", ADMIN, body).await.expect(200).body;
    assert_eq!(again["created_at"], t["created_at"]);
    // The owner membership came with it.
    let members = app.get("/v1/tenants/acme/members", ADMIN).await.expect(200).body;
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    assert_eq!(members["items"][0]["email"], "ann@acme.test");
    assert_eq!(members["items"][0]["role"], "owner");
    // A different request for the same id.
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": "acme", "plan": "free", "owner_email": "bob@acme.test"}),
    )
    .await
    .problem(409, "conflict");
    // Bad input: named, nothing created.
    for (bad, code) in [
        (
            json!({"id": "-x", "plan": "free", "owner_email": "a@b.co"}),
            "invalid_tenant_id",
        ),
        (
            json!({"id": "admin", "plan": "free", "owner_email": "a@b.co"}),
            "invalid_tenant_id",
        ),
        (
            json!({"id": "a".repeat(40), "plan": "free", "owner_email": "a@b.co"}),
            "invalid_tenant_id",
        ),
        (
            json!({"id": "ok-1", "plan": "free", "owner_email": " a@b.co"}),
            "invalid_request",
        ),
        (
            json!({"id": "ok-1", "plan": "free", "owner_email": "a@b.co", "name": "   "}),
            "invalid_request",
        ),
        (
            json!({"id": "ok-1", "plan": "free", "owner_email": "not-an-email"}),
            "invalid_request",
        ),
        (
            json!({"id": "ok-1", "plan": "free", "owner_email": "a@b.co", "settings": [1]}),
            "invalid_request",
        ),
        (
            json!({"id": "ok-1", "plan": "free", "owner_email": "a@b.co", "surprise": 1}),
            "invalid_request",
        ),
    ] {
        app.post("/v1/tenants", ADMIN, bad).await.problem(400, code);
    }
    // A plan that does not exist is a missing thing, not a malformed body.
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": "ok-1", "plan": "nope", "owner_email": "a@b.co"}),
    )
    .await
    .problem(404, "not_found");
    let missing = app
        .post("/v1/tenants", ADMIN, json!({"id": "ok-1", "owner_email": "a@b.co"}))
        .await
        .problem(400, "invalid_request");
    assert!(
        missing.body["detail"].as_str().unwrap().contains("plan"),
        "{}",
        missing.body
    );
    app.get("/v1/tenants/ok-1", ADMIN)
        .await
        .problem(404, "tenant_not_found");
    // Not JSON at all.
    let r = app
        .call(
            "POST",
            "/v1/tenants",
            Some(ADMIN),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    r.problem(400, "invalid_request");
    // Only operators create tenants (self-signup is off).
    let r = app
        .call(
            "POST",
            "/v1/tenants",
            None,
            Some(json!({"id": "x1", "plan": "free", "owner_email": "a@b.co"})),
            &[],
        )
        .await
        .problem(401, "unauthenticated");
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer");
    let (_, key) = app.key("acme", "admin").await;
    app.post(
        "/v1/tenants",
        &key,
        json!({"id": "x1", "plan": "free", "owner_email": "a@b.co"}),
    )
    .await
    .problem(403, "forbidden");
}

async fn list_filters_and_pages(app: TestApp) {
    for i in 0..7 {
        app.tenant(&format!("t{i}"), if i % 2 == 0 { "free" } else { "starter" })
            .await;
    }
    app.post("/v1/tenants/t3/suspend", ADMIN, json!({"reason": "unpaid"}))
        .await
        .expect(200);
    app.delete("/v1/tenants/t5", ADMIN).await.expect(200);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/tenants?limit=2&cursor={c}"),
            None => "/v1/tenants?limit=2".to_string(),
        };
        let page = app.get(&q, ADMIN).await.expect(200).body;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["t0", "t1", "t2", "t3", "t4", "t6"],
        "deleted tenants are not listed by default"
    );
    let ids = |b: &serde_json::Value| {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&app.get("/v1/tenants?plan=starter", ADMIN).await.expect(200).body),
        ["t1", "t3"]
    );
    assert_eq!(
        ids(&app.get("/v1/tenants?status=suspended", ADMIN).await.expect(200).body),
        ["t3"]
    );
    assert_eq!(
        ids(&app.get("/v1/tenants?status=deleted", ADMIN).await.expect(200).body),
        ["t5"]
    );
    app.get("/v1/tenants?status=sleepy", ADMIN)
        .await
        .problem(400, "invalid_request");
    app.get("/v1/tenants?limit=0", ADMIN)
        .await
        .problem(400, "invalid_request");
    app.get("/v1/tenants?limit=1001", ADMIN)
        .await
        .problem(400, "invalid_request");
    app.get("/v1/tenants?cursor=!!", ADMIN)
        .await
        .problem(400, "invalid_request");
    // Listing every tenant is for operators only.
    let (_, key) = app.key("t0", "owner").await;
    app.get("/v1/tenants", &key).await.problem(403, "forbidden");
}

async fn patch_changes_fields_by_permission(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, owner) = app.user("acme", "o2@acme.test", "owner").await;
    let (_, member) = app.user("acme", "m@acme.test", "member").await;
    let t = app
        .patch(
            "/v1/tenants/acme",
            &owner,
            json!({"name": "Acme 2", "settings": {"tz": "UTC"}, "plan": "starter"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (t["name"].as_str(), t["plan"].as_str(), t["settings"]["tz"].as_str()),
        (Some("Acme 2"), Some("starter"), Some("UTC"))
    );
    app.patch("/v1/tenants/acme", &member, json!({"name": "nope"}))
        .await
        .problem(403, "forbidden");
    // A patch that changes nothing answers the tenant as it is (RFC 7386), and records
    // nothing.
    let audit_before = app.get("/v1/tenants/acme/audit", ADMIN).await.expect(200).body["items"].clone();
    let same = app.patch("/v1/tenants/acme", &member, json!({})).await.expect(200).body;
    assert_eq!(same["name"], "Acme 2");
    let audit_after = app.get("/v1/tenants/acme/audit", ADMIN).await.expect(200).body["items"].clone();
    assert_eq!(audit_before, audit_after);
    app.patch(
        "/v1/tenants/acme",
        &owner,
        json!({"limits": [{"resource": "api_calls", "window": "hour", "limit": 5}]}),
    )
    .await
    .problem(403, "forbidden");
    app.patch("/v1/tenants/acme", &owner, json!({"plan": "gold"}))
        .await
        .problem(404, "not_found");
    let t = app
        .patch(
            "/v1/tenants/acme",
            ADMIN,
            json!({"limits": [{"resource": "api_calls", "window": "hour", "limit": 5, "enforcement": "soft"}]}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(t["limits"][0]["limit"], 5);
    assert_eq!(t["limits"][0]["enforcement"], "soft");
    app.patch(
        "/v1/tenants/acme",
        ADMIN,
        json!({"limits": [{"resource": "api_calls", "window": "fortnight", "limit": 5}]}),
    )
    .await
    .problem(400, "invalid_request");
    let t = app.get("/v1/tenants/acme", &member).await.expect(200).body;
    assert_eq!(t["name"], "Acme 2");
}

async fn lifecycle_transitions_are_checked(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, owner) = app.user("acme", "o2@acme.test", "owner").await;
    let (_, admin) = app.user("acme", "a@acme.test", "admin").await;
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({}))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/tenants/acme/suspend", &owner, json!({"reason": "x"}))
        .await
        .problem(403, "forbidden");
    let t = app
        .post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "unpaid invoice"}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (t["status"].as_str(), t["status_reason"].as_str()),
        (Some("suspended"), Some("unpaid invoice"))
    );
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "again"}))
        .await
        .problem(409, "conflict");
    app.post("/v1/tenants/acme/resume", ADMIN, json!({})).await.expect(200);
    app.post("/v1/tenants/acme/resume", ADMIN, json!({}))
        .await
        .problem(409, "conflict");
    app.post("/v1/tenants/acme/restore", ADMIN, json!({}))
        .await
        .problem(409, "conflict");
    // Admins may not delete the tenant; owners may.
    app.delete("/v1/tenants/acme", &admin).await.problem(403, "forbidden");
    let t = app.delete("/v1/tenants/acme", &owner).await.expect(200).body;
    assert_eq!(t["status"], "deleted");
    let deleted = tenantd_core::ts::parse(t["deleted_at"].as_str().unwrap()).unwrap();
    let purge = tenantd_core::ts::parse(t["purge_after"].as_str().unwrap()).unwrap();
    assert_eq!(purge - deleted, 30 * 86_400);
    // Gone for everyone but operators.
    app.get("/v1/tenants/acme", &owner)
        .await
        .problem(404, "tenant_not_found");
    assert_eq!(
        app.get("/v1/tenants/acme", ADMIN).await.expect(200).body["status"],
        "deleted"
    );
    app.post("/v1/tenants/acme/resume", ADMIN, json!({}))
        .await
        .problem(409, "conflict");
    app.delete("/v1/tenants/acme", ADMIN).await.problem(409, "conflict");
    let t = app
        .post("/v1/tenants/acme/restore", ADMIN, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(t["status"], "active");
    app.get("/v1/tenants/acme", &owner).await.expect(200);
    // A tenant deleted while suspended comes back suspended.
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "fraud"}))
        .await
        .expect(200);
    app.delete("/v1/tenants/acme", ADMIN).await.expect(200);
    let t = app
        .post("/v1/tenants/acme/restore", ADMIN, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (t["status"].as_str(), t["status_reason"].as_str()),
        (Some("suspended"), Some("fraud"))
    );
    // Lifecycle actions are audited as the operator's.
    let actions = audit_actions(&app, "/v1/tenants/acme/audit?actor=operator").await;
    for a in [
        "tenant.suspended",
        "tenant.resumed",
        "tenant.restored",
        "tenant.created",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing from {actions:?}");
    }
}

async fn plans_are_seeded_and_editable(app: TestApp) {
    let plans = app.get("/v1/plans", ADMIN).await.expect(200).body;
    let ids: Vec<&str> = plans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["enterprise", "free", "professional", "starter"]);
    let free = app.get("/v1/plans/free", ADMIN).await.expect(200).body;
    assert_eq!(
        free["limits"][0],
        json!({"resource": "api_calls", "window": "hour", "limit": 100, "enforcement": "hard"})
    );
    assert_eq!(free["limits"][1]["limit"], 1000);
    assert_eq!(
        app.get("/v1/plans/enterprise", ADMIN).await.body["isolation"],
        "database"
    );
    let burst = json!({"id": "burst", "name": "Burst", "price": "10.00", "limits": [{"resource": "api_calls", "window": "minute", "limit": 50, "enforcement": "hard"}], "features": ["exports"]});
    let p = app.post("/v1/plans", ADMIN, burst.clone()).await.expect(201).body;
    assert_eq!(
        (p["currency"].as_str(), p["isolation"].as_str()),
        (Some("USD"), Some("row"))
    );
    app.post("/v1/plans", ADMIN, burst).await.problem(409, "conflict");
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "bad", "name": "B", "price": "-1", "limits": []}),
    )
    .await
    .problem(400, "invalid_request");
    let p = app
        .patch("/v1/plans/burst", ADMIN, json!({"price": "12.50"}))
        .await
        .expect(200)
        .body;
    assert_eq!(p["price"], "12.50");
    app.tenant("acme", "burst").await;
    app.delete("/v1/plans/burst", ADMIN).await.problem(409, "conflict");
    app.delete("/v1/plans/nope", ADMIN).await.problem(404, "not_found");
    let (_, key) = app.key("acme", "owner").await;
    app.get("/v1/plans", &key).await.problem(403, "forbidden");
}

/// After its 30 days of retention, a deleted tenant is purged: its data on any tier, its
/// keys, counters and catalog rows, on this node and (PostgreSQL) on a second one; other
/// tenants keep everything, and a new tenant under the same id finds nothing of the old
/// one and works normally.
async fn deleted_tenants_are_purged_after_retention(app: TestApp) {
    const ORDERS: &str = "/v1/data/collections/orders/records";
    // On PostgreSQL a second node, which hears of the purge through the catalog.
    let other = match app.db_url.starts_with("postgres") {
        true => Some(app.second_node().await),
        false => None,
    };
    let node2 = other.as_ref().unwrap_or(&app);
    // One on the database tier (its own SQLite file or PostgreSQL database), one moved
    // there from the shared tables, one in the shared tables, and one that stays.
    let tenants = [
        ("gone-db", "enterprise"),
        ("moved", "starter"),
        ("gone-row", "starter"),
        ("kept", "starter"),
    ];
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for (id, plan) in tenants {
        app.tenant(id, plan).await;
        let (_, key) = app.key(id, "member").await;
        let rec = app.post(ORDERS, &key, json!({"of": id})).await.expect(201).body;
        records.push(format!("{ORDERS}/{}", rec["id"].as_str().unwrap()));
        app.put_bytes("/v1/data/blobs/a.txt", &key, id.as_bytes().to_vec(), "text/plain")
            .await
            .expect(201);
        keys.push(key);
    }
    app.patch("/v1/tenants/moved", ADMIN, json!({"plan": "enterprise"}))
        .await
        .expect(200);
    for _ in 0..200 {
        let p = app.get("/v1/tenants/moved/placement", ADMIN).await.expect(200).body;
        if p["tier"] == "database" && p["state"] == "placed" && p["move"]["phase"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let p = app.get("/v1/tenants/moved/placement", ADMIN).await.expect(200).body;
    assert_eq!((&p["tier"], &p["move"]["phase"]), (&json!("database"), &json!("done")));
    // The second node serves (and caches) the tenants to be purged.
    for i in 0..3 {
        assert_eq!(
            node2.get(&records[i], &keys[i]).await.expect(200).body["data"]["of"],
            tenants[i].0
        );
    }
    let db_file = app.data_dir.join("tenants/gone-db.db");
    let sqlite = app.db_url.starts_with("sqlite:");
    assert_eq!(db_file.exists(), sqlite, "the database tier's file on SQLite");
    let month = tenantd_core::Window::Month;
    assert!(app.used("gone-row", "api_calls", month).await >= 2);
    let now = tenantd_core::now_secs();
    for id in ["gone-db", "moved", "gone-row"] {
        app.delete(&format!("/v1/tenants/{id}"), ADMIN).await.expect(200);
    }

    // In retention: nothing is purged, and the operator still sees them.
    assert!(app.state.purge_due(now).await.is_empty());
    app.get("/v1/tenants/gone-row", ADMIN).await.expect(200);
    let purged = app.state.purge_due(now + 31 * 86_400).await;
    let purged: Vec<&str> = purged.iter().map(|t| t.as_str()).collect();
    assert_eq!(purged, ["gone-db", "gone-row", "moved"]);
    assert!(app.state.purge_due(now + 31 * 86_400).await.is_empty(), "purged once");

    for (i, (id, _)) in tenants[..3].iter().enumerate() {
        // Gone for operators too, with its keys and its data, on both nodes.
        app.get(&format!("/v1/tenants/{id}"), ADMIN)
            .await
            .problem(404, "tenant_not_found");
        app.get(&records[i], &keys[i]).await.problem(401, "unauthenticated");
        let mut refused = node2.get(&records[i], &keys[i]).await;
        for _ in 0..50 {
            if refused.status == 401 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            refused = node2.get(&records[i], &keys[i]).await;
        }
        refused.problem(401, "unauthenticated");
        let tenant = tenantd_core::TenantId::parse(id).unwrap();
        assert_eq!(app.state.data.placement(&tenant).await.unwrap(), None, "{id}");
    }
    assert!(!db_file.exists(), "the tenant's SQLite file is deleted");
    let deleted = app.get("/v1/tenants?status=deleted", ADMIN).await.expect(200).body;
    assert_eq!(deleted["items"], json!([]));
    // The purge is in the operator's audit trail, under no tenant.
    let audit = app.get("/v1/audit?action=tenant.purged", ADMIN).await.expect(200).body;
    let mut events: Vec<String> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["tenant_id"], e["actor"]["id"], e["data"]["tenant_id"]]).to_string())
        .collect();
    // Purges are jobs that workers on both nodes take in no set order.
    events.sort();
    assert_eq!(
        events,
        ["gone-db", "gone-row", "moved"].map(|id| json!([null, "system", id]).to_string())
    );

    // The tenant that stayed kept its record and blob.
    assert_eq!(
        app.get(&records[3], &keys[3]).await.expect(200).body["data"],
        json!({"of": "kept"})
    );
    assert_eq!(
        app.get("/v1/data/blobs/a.txt", &keys[3]).await.expect(200).body,
        json!("kept")
    );
    // New tenants under the old ids start empty, and work, on both nodes: "moved" is back
    // in the shared tables its old self left frozen; "gone-db" gets a new database.
    for (i, (id, _)) in tenants[..3].iter().enumerate() {
        let plan = if *id == "gone-db" { "enterprise" } else { "starter" };
        // Provisioned by the second node, whatever it cached of the old tenant.
        node2.tenant(id, plan).await;
        assert_eq!(app.used(id, "api_calls", month).await, 0, "{id}: no usage carried over");
        let (_, key) = app.key(id, "member").await;
        for node in [node2, &app] {
            node.get(&records[i], &key).await.problem(404, "not_found");
            assert_eq!(
                node.get("/v1/data/blobs", &key).await.expect(200).body["items"],
                json!([])
            );
        }
        let listed = node2.get(ORDERS, &key).await.expect(200).body;
        assert_eq!(listed["items"], json!([]), "{id}");
        node2.post(ORDERS, &key, json!({"new": id})).await.expect(201);
        let members = app
            .get(&format!("/v1/tenants/{id}/members"), ADMIN)
            .await
            .expect(200)
            .body;
        assert_eq!(members["items"].as_array().unwrap().len(), 1, "only the new owner");
        let actions = audit_actions(&app, &format!("/v1/tenants/{id}/audit")).await;
        assert_eq!(
            actions,
            ["key.created", "tenant.created"],
            "{id}: only the new tenant's trail"
        );
    }
}

/// The background purge runs on its own every `purge_interval_seconds`, and once the
/// retention has ended a restore is refused.
async fn the_purger_runs_every_purge_interval_seconds(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("globex", "starter").await;
    app.delete("/v1/tenants/acme", ADMIN).await.expect(200);
    app.delete("/v1/tenants/globex", ADMIN).await.expect(200);
    // Rounds pass; nothing is due yet.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.get("/v1/tenants/acme", ADMIN).await.expect(200);
    // acme's retention ends (as if 30 days had passed).
    let catalog = tenantd_store::SqlCatalog::connect(&app.db_url).await.unwrap();
    sqlx::query("UPDATE tenants SET purge_after = $1 WHERE id = 'acme'")
        .bind(tenantd_core::now_secs() - 1)
        .execute(catalog.pool())
        .await
        .unwrap();
    let mut last = app.post("/v1/tenants/acme/restore", ADMIN, json!({})).await;
    for _ in 0..100 {
        if last.status == 404 {
            break;
        }
        assert_eq!(last.status, 409, "restore after retention: {}", last.body);
        assert!(last.body["detail"].as_str().unwrap().contains("cannot be restored"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        last = app.post("/v1/tenants/acme/restore", ADMIN, json!({})).await;
    }
    last.problem(404, "tenant_not_found");
    // The tenant still in retention is untouched, and can still be restored.
    let t = app
        .post("/v1/tenants/globex/restore", ADMIN, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(t["status"], "active");
}

/// The actions of the audit events `path` lists, as the operator reads them.
async fn audit_actions(app: &TestApp, path: &str) -> Vec<String> {
    let audit = app.get(path, ADMIN).await.expect(200).body;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// A change and its audit event commit together: when the database refuses the event,
/// the request is a 500 and nothing changed; the same requests then succeed with their
/// events once it accepts them again.
async fn a_change_whose_event_cannot_be_written_is_not_made(app: TestApp) {
    app.tenant("acme", "free").await;
    tenantd_store::testing::refuse_events(&app.db_url, true).await;
    let plan = json!({"id": "gold", "name": "Gold", "limits": []});
    app.post("/v1/plans", ADMIN, plan.clone())
        .await
        .problem(500, "internal");
    app.get("/v1/plans/gold", ADMIN).await.problem(404, "not_found");
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "billing"}))
        .await
        .problem(500, "internal");
    app.patch("/v1/tenants/acme", ADMIN, json!({"name": "Renamed"}))
        .await
        .problem(500, "internal");
    let body = json!({"id": "beta", "plan": "free", "owner_email": "bo@beta.test"});
    app.post("/v1/tenants", ADMIN, body.clone())
        .await
        .problem(500, "internal");
    app.post(
        "/v1/tenants/acme/members",
        ADMIN,
        json!({"email": "mo@acme.test", "role": "member"}),
    )
    .await
    .problem(500, "internal");
    app.post("/v1/tenants/acme/keys", ADMIN, json!({"name": "ci", "role": "member"}))
        .await
        .problem(500, "internal");
    app.post("/v1/tenants/acme/domains", ADMIN, json!({"host": "app.acme.example"}))
        .await
        .problem(500, "internal");
    app.post("/v1/tenants/acme/workspaces", ADMIN, json!({"id": "ops"}))
        .await
        .problem(500, "internal");
    let acme = app.get("/v1/tenants/acme", ADMIN).await.expect(200).body;
    assert_eq!(
        (acme["status"].as_str(), acme["name"].as_str()),
        (Some("active"), Some("acme"))
    );
    for (list, n) in [("members", 1), ("keys", 0), ("domains", 0), ("workspaces", 0)] {
        let items = app
            .get(&format!("/v1/tenants/acme/{list}"), ADMIN)
            .await
            .expect(200)
            .body;
        assert_eq!(items["items"].as_array().unwrap().len(), n, "{list}: {items}");
    }
    app.get("/v1/tenants/beta", ADMIN)
        .await
        .problem(404, "tenant_not_found");
    tenantd_store::testing::refuse_events(&app.db_url, false).await;
    app.post("/v1/plans", ADMIN, plan).await.expect(201);
    app.post("/v1/tenants", ADMIN, body).await.expect(201);
    let trail = app.get("/v1/audit", ADMIN).await.expect(200).body;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        actions.contains(&"plan.created") && actions.contains(&"tenant.created"),
        "{actions:?}"
    );
    assert!(
        !actions.contains(&"tenant.suspended") && !actions.contains(&"tenant.updated"),
        "{actions:?}"
    );
}
