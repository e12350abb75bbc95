//! The operator console in a real browser (headless Chromium through chromedriver):
//! signing in, finding a tenant, suspending and resuming it, revoking a key, and every
//! page at 320 px. With `TENANTD_CONSOLE_SCREENSHOTS=<dir>` the main pages are saved
//! there as PNGs (docs/console/ holds the committed ones).
use crate::browser::browser;
use crate::common::ADMIN;
use crate::console::{app, audit_of, find, seed};
use serde_json::json;

/// More tenants, so the list shows plans and statuses side by side.
async fn neighbours(app: &crate::common::TestApp) {
    for (id, name, plan) in [
        ("globex", "Globex", "enterprise"),
        ("hooli", "Hooli", "free"),
        ("initech", "Initech", "professional"),
        ("umbrella", "Umbrella Corporation", "professional"),
        ("wayne-ent", "Wayne Enterprises", "enterprise"),
    ] {
        let body = json!({"id": id, "name": name, "plan": plan, "owner_email": format!("owner@{id}.test")});
        app.post("/v1/tenants", ADMIN, body).await.expect(201);
    }
    app.post(
        "/v1/tenants/umbrella/suspend",
        ADMIN,
        json!({"reason": "security review"}),
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_finds_suspends_resumes_and_revokes() {
    let Some(b) = browser("console_in_a_browser_finds_suspends_resumes_and_revokes", 1280).await else {
        return;
    };
    let app = app().await;
    let (key_id, secret) = seed(&app, "acme-corp", "Acme Corporation").await;
    neighbours(&app).await;

    // Not signed in: the sign-in page.
    b.open(&format!("{}/console/tenants", app.url)).await;
    assert_eq!(b.path().await, "/console/login");
    b.screenshot("sign-in").await;
    b.fill("#key", ADMIN).await;
    b.click("form button[type=submit]").await;
    assert_eq!(b.path().await, "/console/tenants");

    // The session cookie as the browser holds it: not readable by script, strict, the
    // console's path only, not Secure over plain http.
    let c = b
        .client
        .get_named_cookie("tenantd_console")
        .await
        .expect("the session cookie");
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(format!("{:?}", c.same_site()), "Some(Strict)");
    assert_eq!(c.path(), Some("/console"));
    assert_ne!(c.secure(), Some(true));
    let visible = b.run("return document.cookie").await;
    assert!(
        !visible.as_str().unwrap_or("").contains("tenantd_console="),
        "{visible}"
    );
    b.screenshot("tenants").await;

    // Find it by search.
    b.fill("#q", "acme").await;
    b.click("form[role=search] button").await;
    assert_eq!(b.path().await, "/console/tenants?q=acme&status=&plan=");
    let html = b.html().await;
    assert!(html.contains("Acme Corporation") && !html.contains("Globex"), "{html}");
    b.click("a[href='/console/tenants/acme-corp']").await;
    assert_eq!(b.path().await, "/console/tenants/acme-corp");
    let html = b.html().await;
    assert!(!html.to_lowercase().contains("<script"), "no script on the page");
    assert!(html.contains("API calls per day") && html.contains("Quotas"));

    // Suspend with a reason: the tenant's key is refused by the API.
    b.fill("#status-reason", "unpaid invoice 2026-02").await;
    b.click("form[action$='/suspend'] button").await;
    assert_eq!(b.path().await, "/console/tenants/acme-corp?done=suspended");
    assert!(b.html().await.contains("Suspended: unpaid invoice 2026-02"));
    app.get("/v1/data/collections/notes/records", &secret)
        .await
        .problem(403, "tenant_suspended");

    // Resume with a reason: the key works again.
    b.fill("#status-reason", "paid in full").await;
    b.click("form[action$='/resume'] button").await;
    assert_eq!(b.path().await, "/console/tenants/acme-corp?done=resumed");
    app.get("/v1/data/collections/notes/records", &secret).await.expect(200);

    // The audit trail on the page: both events, by the operator via the console, with
    // their reasons; and the chain verifies.
    let html = b.html().await;
    for text in [
        "tenant.suspended",
        "unpaid invoice 2026-02",
        "tenant.resumed",
        "paid in full",
        "via console",
    ] {
        assert!(html.contains(text), "{text} missing from the audit trail");
    }
    b.click("a[href$='?verify=1#audit']").await;
    assert!(b.html().await.contains("chain verified"));
    b.screenshot("tenant").await;

    // Revoke the key, with a reason: it answers 401.
    b.click(&format!("a[href$='/keys/{key_id}/revoke']")).await;
    b.fill("#reason", "leaked in a CI log").await;
    b.click("button.danger").await;
    assert_eq!(
        b.path().await,
        "/console/tenants/acme-corp?done=revoked",
        "{}",
        b.html().await
    );
    app.get("/v1/data/collections/notes/records", &secret)
        .await
        .problem(401, "unauthenticated");
    let revoked = find(&audit_of(&app, "acme-corp").await, "key.revoked");
    assert_eq!(revoked["data"]["key_id"], key_id.as_str());
    assert_eq!(revoked["data"]["reason"], "leaked in a CI log");
    assert_eq!(revoked["data"]["via"], "console");
    assert_eq!(revoked["actor"]["type"], "operator");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_at_320px_has_no_sideways_scroll_and_refuses_a_wrong_key() {
    let Some(b) = browser("console_at_320px_has_no_sideways_scroll_and_refuses_a_wrong_key", 320).await else {
        return;
    };
    let app = app().await;
    let (key_id, _) = seed(&app, "narrow-co", "Narrow Company With A Rather Long Name").await;
    let fits = |page: &'static str| {
        let b = &b;
        async move {
            let widths = b
                .run("return [document.documentElement.scrollWidth, window.innerWidth]")
                .await;
            let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
            assert!(inner <= 320, "the window is {inner} px wide, not 320");
            assert!(scroll <= 320, "{page}: {scroll} px wide at 320");
        }
    };
    b.open(&format!("{}/console/login", app.url)).await;
    fits("sign-in").await;

    // A wrong key: the sign-in page again, with the error, and no session.
    b.fill("#key", "not-the-operator-key-000000").await;
    b.click("form button[type=submit]").await;
    assert_eq!(b.path().await, "/console/login");
    let html = b.html().await;
    assert!(html.contains("That is not the operator key"), "{html}");
    assert!(
        b.client.get_named_cookie("tenantd_console").await.is_err(),
        "no session cookie"
    );
    fits("sign-in, refused").await;

    b.fill("#key", ADMIN).await;
    b.click("form button[type=submit]").await;
    assert_eq!(b.path().await, "/console/tenants");
    fits("tenants").await;
    for (path, page) in [
        ("/console/tenants/narrow-co", "tenant"),
        ("/console/tenants/narrow-co?verify=1", "tenant, verified"),
        ("/console/new", "new tenant"),
    ] {
        b.open(&format!("{}{path}", app.url)).await;
        fits(page).await;
    }
    b.open(&format!("{}/console/tenants/narrow-co/keys/{key_id}/revoke", app.url))
        .await;
    fits("revoke a key").await;
    b.open(&format!("{}/console/tenants/narrow-co", app.url)).await;
    b.screenshot("tenant-320px").await;
    b.close().await;
}
