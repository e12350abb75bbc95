//! Erasure and retention, on both backends: erasing a person removes them from every
//! tenant and pseudonymizes their email in every event while every chain still
//! verifies; `[retention]` makes old events tombstones, prunes old usage rows, deletes a
//! tenant suspended past its data retention (and `deleted_tenant_days = 0` purges it at
//! the next run); plans' scheduled backups keep the newest `backup_keep`.
use crate::common::{connect, TestApp, ADMIN};
use serde_json::json;
use std::time::Duration;

crate::both! {
    erasing_a_person_pseudonymizes_them_and_every_chain_verifies;
    retention_redacts_prunes_and_retires, "[retention]\ndeleted_tenant_days = 0\n[retention.suspended]\ndata_days = 2\n";
    scheduled_backups_run_per_plan_and_keep_the_newest;
}

async fn erasing_a_person_pseudonymizes_them_and_every_chain_verifies(app: TestApp) {
    app.tenant("acme", "starter").await;
    // Ann owns annco (its tenant.created event names her) and is a member of acme.
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": "annco", "plan": "starter", "owner_email": "ann@example.test"}),
    )
    .await
    .expect(201);
    let (uid, token) = app.user("acme", "ann@example.test", "member").await;
    app.get("/v1/me", &token).await.expect(200);
    let (_, member) = app.key("acme", "admin").await;
    app.delete(&format!("/v1/users/{uid}"), &member)
        .await
        .problem(403, "forbidden");
    let r = app.delete(&format!("/v1/users/{uid}"), ADMIN).await.expect(200).body;
    assert_eq!(r["tenants"], json!(["acme", "annco"]));
    assert_eq!(r["ownerless"], json!(["annco"]), "erasure goes even for the last owner");
    assert!(r["events"].as_u64().unwrap() >= 1, "{r}");
    for t in ["acme", "annco"] {
        let m = app
            .get(&format!("/v1/tenants/{t}/members"), ADMIN)
            .await
            .expect(200)
            .body;
        assert!(!m.to_string().contains("ann@"), "{t}: {m}");
        let audit = app.get(&format!("/v1/tenants/{t}/audit"), ADMIN).await.expect(200).body;
        let text = audit.to_string();
        assert!(!text.contains("ann@example.test"), "{t}: the email is gone from events");
        if t == "annco" {
            assert!(text.contains("@users.invalid"), "{t}: a pseudonym stands in: {text}");
        }
        let v = app
            .get(&format!("/v1/tenants/{t}/audit/verify"), ADMIN)
            .await
            .expect(200)
            .body;
        assert_eq!(v["valid"], true, "{t}: {v}");
    }
    let v = app.get("/v1/audit/verify", ADMIN).await.expect(200).body;
    assert!(!v.to_string().contains("\"valid\":false"), "{v}");
    let erased = app.get("/v1/audit?type=user.erased", ADMIN).await.expect(200).body;
    assert_eq!(erased["items"][0]["data"]["user_id"], uid.as_str());
    assert!(!erased.to_string().contains("ann@"));
    // Their token opens nothing; erasing again finds no one.
    let r = app.get("/v1/tenants/acme", &token).await;
    assert!(r.status == 401 || r.status == 403, "{}", r.status);
    app.delete(&format!("/v1/users/{uid}"), ADMIN)
        .await
        .problem(404, "not_found");
}

async fn retention_redacts_prunes_and_retires(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("sus", "starter").await;
    app.post("/v1/tenants/sus/suspend", ADMIN, json!({"reason": "unpaid"}))
        .await
        .expect(200);
    let now = tenantd_core::now_secs();
    let old = now - 3000 * 86_400;
    let mut c = connect(&app.db_url).await;
    // Two of acme's events are 3,000 days old (past 7 years), and it has an old usage row.
    let aged = sqlx::query("UPDATE audit_events SET at = $1 WHERE chain = 'acme' AND seq <= 2")
        .bind(old)
        .execute(&mut c)
        .await
        .unwrap()
        .rows_affected();
    assert!(aged >= 1);
    sqlx::query(
        "INSERT INTO usage_counters (tenant_id, scope, resource, win, period_start, value) \
         VALUES ('acme', '', 'api_calls', 'month', $1, 5)",
    )
    .bind(old)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("UPDATE tenants SET updated_at = $1 WHERE id = 'sus'")
        .bind(now - 3 * 86_400)
        .execute(&mut c)
        .await
        .unwrap();
    let done = app.state.apply_retention(now).await;
    assert_eq!(
        (done.events, done.usage_rows, done.tenants_deleted),
        (aged, 1, 1),
        "{done:?}"
    );
    let audit = app.get("/v1/tenants/acme/audit", ADMIN).await.expect(200).body;
    let redacted = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["redacted"] == true)
        .count();
    assert_eq!(redacted as u64, aged);
    let v = app.get("/v1/tenants/acme/audit/verify", ADMIN).await.expect(200).body;
    assert_eq!(v["valid"], true, "{v}");
    // Again: nothing more to do.
    assert_eq!(app.state.apply_retention(now).await, Default::default());
    let t = app.get("/v1/tenants/sus", ADMIN).await.expect(200).body;
    assert_eq!(t["status"], "deleted");
    assert_eq!(t["purge_after"], t["deleted_at"], "deleted_tenant_days = 0: {t}");
    let purged = app.state.purge_due(tenantd_core::now_secs()).await;
    assert_eq!(purged.iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["sus"]);
}

async fn scheduled_backups_run_per_plan_and_keep_the_newest(app: TestApp) {
    let plan = json!({"id": "backed", "name": "Backed", "limits": [], "backup_every_hours": 1, "backup_keep": 2});
    let r = app.post("/v1/plans", ADMIN, plan).await.expect(201).body;
    assert_eq!(
        (r["backup_every_hours"].clone(), r["backup_keep"].clone()),
        (json!(1), json!(2))
    );
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "bad", "name": "Bad", "limits": [], "backup_keep": 0}),
    )
    .await
    .problem(400, "invalid_request");
    app.tenant("acme", "backed").await;
    app.tenant("other", "starter").await;
    let now = tenantd_core::now_secs();
    let list = |t: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/v1/tenants/{t}/backups"), ADMIN)
                .await
                .expect(200)
                .body["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let settled = |n: usize| {
        let list = &list;
        async move {
            for _ in 0..400 {
                let l = list("acme").await;
                if l.len() == n && l.iter().all(|b| b["state"] == "done") {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{:?}", list("acme").await);
        }
    };
    for (at, want) in [(now, 1), (now + 60, 1), (now + 3_700, 2), (now + 7_400, 2)] {
        app.state.schedule_backups(at).await;
        // A second node running the same schedule makes nothing more.
        app.state.schedule_backups(at).await;
        let l = settled(want).await;
        assert!(!l.is_empty());
    }
    assert!(list("other").await.is_empty(), "its plan has no schedule");
}
