//! The operator console over plain HTTP: sign-in and its cookie, CSRF, the security
//! headers, redirects, and that its actions are the API's (docs/console.md). The
//! browser's view of it is in `console_browser.rs`.
use crate::common::{spawn_app, Backend, TestApp, ADMIN};
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use tenantd_core::usage::CounterRow;
use tenantd_core::{TenantId, Window};

pub const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const DAY: i64 = 86_400;

/// A tenant with something on every panel of its page: a member, a member's API key
/// (returned: id, secret) that made a few calls, 30 days of API-call counters and
/// storage snapshots, a webhook whose endpoint refuses, a job.
pub async fn seed(app: &TestApp, id: &str, name: &str) -> (String, String) {
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": id, "name": name, "plan": "starter", "owner_email": format!("ann@{id}.test")}),
    )
    .await
    .expect(201);
    app.post(
        &format!("/v1/tenants/{id}/members"),
        ADMIN,
        json!({"email": format!("bob@{id}.test"), "role": "member"}),
    )
    .await
    .expect(201);
    let (key_id, secret) = app.key(id, "member").await;
    for _ in 0..3 {
        app.get("/v1/data/collections/notes/records", &secret).await.expect(200);
    }
    let tenant = TenantId::parse(id).unwrap();
    let now = tenantd_core::now_secs();
    let today = now - now.rem_euclid(DAY);
    let row = |resource: &str, window, period, value| CounterRow {
        tenant,
        scope: None,
        resource: resource.into(),
        window,
        period,
        value,
    };
    let calls: Vec<CounterRow> = (1..30)
        .map(|n| row("api_calls", Window::Day, today - n * DAY, 400 + (n as u64 * 137) % 900))
        .collect();
    app.state.catalog.add_counters(&calls).await.unwrap();
    let levels: Vec<CounterRow> = [(25, 120u64 << 20), (14, 410 << 20), (3, 770 << 20)]
        .into_iter()
        .map(|(n, bytes)| row("storage_bytes", Window::Total, today - n * DAY, bytes))
        .collect();
    app.state.catalog.set_levels(&levels).await.unwrap();
    app.post(
        &format!("/v1/tenants/{id}/webhooks"),
        ADMIN,
        json!({"url": "http://127.0.0.1:9/hooks/tenantd", "description": "billing sync"}),
    )
    .await
    .expect(201);
    app.call(
        "POST",
        "/v1/jobs",
        Some(ADMIN),
        Some(json!({"queue": "reports", "payload": {"month": "2026-03"}})),
        &[("x-tenant-id", id)],
    )
    .await
    .expect(201);
    (key_id, secret)
}

/// The server with webhooks allowed to a local endpoint (which refuses: its deliveries
/// fail and are logged).
pub async fn app() -> TestApp {
    spawn_app(Backend::Sqlite, "[webhooks]\nallow_private_networks = true\n")
        .await
        .unwrap()
}

/// An operator signed in over HTTP: the session cookie and the session's CSRF token.
pub struct Operator {
    http: reqwest::Client,
    base: String,
    pub cookie: String,
    pub csrf: String,
}

/// `name=value` of the `Set-Cookie` header setting `name`, and the whole header.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap_or("").to_string(), v.to_string()))
}

/// The value of the first hidden `csrf` field in `html`.
pub fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The sign-in page's nonce cookie and form token.
async fn login_form(http: &reqwest::Client, base: &str) -> (String, String) {
    let r = http.get(format!("{base}/console/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (cookie, _) = set_cookie(r.headers(), "tenantd_console_login").expect("the sign-in nonce cookie");
    (cookie, csrf_in(&r.text().await.unwrap()))
}

impl Operator {
    /// Signs in with `key` through the sign-in form, as a browser would.
    pub async fn sign_in(app: &TestApp) -> Operator {
        let http = client();
        let (nonce, token) = login_form(&http, &app.url).await;
        let r = http
            .post(format!("{}/console/login", app.url))
            .header("cookie", &nonce)
            .form(&[("csrf", token.as_str()), ("key", ADMIN)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/console/tenants");
        let (cookie, _) = set_cookie(r.headers(), "tenantd_console").expect("a session cookie");
        let mut op = Operator {
            http,
            base: app.url.clone(),
            cookie,
            csrf: String::new(),
        };
        op.csrf = csrf_in(&op.get("/console/tenants").await.text().await.unwrap());
        op
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// `POST`s a form with the session cookie and these fields (the token only if given).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_session_cookie_is_http_only_strict_and_secure_only_over_https() {
    let app = app().await;
    let http = client();
    let (nonce, token) = login_form(&http, &app.url).await;
    let sign_in = |proto: Option<&'static str>| {
        let mut req = http
            .post(format!("{}/console/login", app.url))
            .header("cookie", &nonce)
            .form(&[("csrf", token.as_str()), ("key", ADMIN)]);
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        req.send()
    };
    let r = sign_in(None).await.unwrap();
    assert_eq!(r.status(), 303);
    let (_, cookie) = set_cookie(r.headers(), "tenantd_console").unwrap();
    let attrs: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert!(attrs.contains(&"HttpOnly"), "{cookie}");
    assert!(attrs.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attrs.contains(&"Path=/console"), "{cookie}");
    assert!(attrs.contains(&"Max-Age=28800"), "8 hours: {cookie}");
    assert!(!attrs.contains(&"Secure"), "plain http: {cookie}");
    // Behind a TLS-terminating proxy.
    let r = sign_in(Some("https")).await.unwrap();
    let (_, cookie) = set_cookie(r.headers(), "tenantd_console").unwrap();
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
    // The sign-in nonce cookie is just as strict.
    let r = http.get(format!("{}/console/login", app.url)).send().await.unwrap();
    let (_, nonce_cookie) = set_cookie(r.headers(), "tenantd_console_login").unwrap();
    assert!(nonce_cookie.contains("HttpOnly") && nonce_cookie.contains("SameSite=Strict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_a_wrong_operator_key_with_401_and_sets_nothing() {
    let app = app().await;
    let http = client();
    let (nonce, token) = login_form(&http, &app.url).await;
    let r = http
        .post(format!("{}/console/login", app.url))
        .header("cookie", &nonce)
        .form(&[("csrf", token.as_str()), ("key", "test-operator-key-0123456780")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none(), "nothing set");
    let html = r.text().await.unwrap();
    assert!(html.contains("That is not the operator key"), "{html}");
    assert!(html.contains("name=\"key\""), "the form again");
    // Without the sign-in page's token, or from another origin, even the right key is
    // refused.
    for (cookie, token, origin) in [
        ("", token.as_str(), None),
        (nonce.as_str(), "", None),
        (nonce.as_str(), token.as_str(), Some("http://evil.test")),
    ] {
        let mut req = http
            .post(format!("{}/console/login", app.url))
            .header("cookie", cookie)
            .form(&[("csrf", token), ("key", ADMIN)]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(set_cookie(r.headers(), "tenantd_console").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forms_without_the_csrf_token_or_from_elsewhere_are_refused() {
    let app = app().await;
    let (key_id, secret) = seed(&app, "csrf-co", "CSRF Co").await;
    let op = Operator::sign_in(&app).await;
    let suspend = "/console/tenants/csrf-co/suspend";
    let reason = ("reason", "forged");
    let refused = [
        op.post(suspend, &[reason], &[]).await,
        op.post(suspend, &[reason, ("csrf", "bm90IHRoZSB0b2tlbg")], &[]).await,
        op.post(
            suspend,
            &[reason, ("csrf", &op.csrf)],
            &[("origin", "http://evil.test")],
        )
        .await,
        op.post(
            suspend,
            &[reason, ("csrf", &op.csrf)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await,
    ];
    for r in refused {
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("Form refused"));
    }
    let revoke = format!("/console/tenants/csrf-co/keys/{key_id}/revoke");
    assert_eq!(op.post(&revoke, &[], &[]).await.status(), 403);
    assert_eq!(
        op.post("/console/tenants", &[("id", "forged"), ("plan", "free")], &[])
            .await
            .status(),
        403
    );
    assert_eq!(op.post("/console/logout", &[], &[]).await.status(), 403);
    // Nothing happened.
    let t = app.get("/v1/tenants/csrf-co", ADMIN).await.expect(200).body;
    assert_eq!(t["status"], "active");
    app.get("/v1/data/collections/notes/records", &secret).await.expect(200);
    app.get("/v1/tenants/forged", ADMIN)
        .await
        .problem(404, "tenant_not_found");
    // With the token, from the console's own page, the same form works.
    let own = [("origin", app.url.as_str())];
    let r = op.post(suspend, &[reason, ("csrf", &op.csrf)], &own).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/tenants/csrf-co?done=suspended");
    // Another session's token is not this one's.
    let other = Operator::sign_in(&app).await;
    let resume = "/console/tenants/csrf-co/resume";
    let r = op.post(resume, &[("reason", "paid"), ("csrf", &other.csrf)], &[]).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_need_a_session_and_carry_the_security_headers() {
    let app = app().await;
    seed(&app, "headers-co", "Headers Co").await;
    let anonymous = client();
    for path in [
        "/console",
        "/console/tenants",
        "/console/tenants/headers-co",
        "/console/new",
        "/console/nowhere",
    ] {
        let r = anonymous.get(format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/console/login", "{path}");
    }
    // A forged or expired-looking cookie is no session.
    let r = anonymous
        .get(format!("{}/console/tenants", app.url))
        .header("cookie", "tenantd_console=v1.AAAA.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    let op = Operator::sign_in(&app).await;
    let pages = [
        "/console/login",
        "/console/tenants",
        "/console/tenants?q=headers&status=active&plan=starter",
        "/console/new",
        "/console/tenants/headers-co",
        "/console/tenants/headers-co?verify=1",
    ];
    for path in pages {
        let r = op.get(path).await;
        let expected = if path == "/console/login" { 303 } else { 200 };
        assert_eq!(r.status(), expected, "{path}");
        let h = r.headers();
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["cache-control"], "no-store");
        if expected == 200 {
            assert_eq!(h["content-type"], "text/html; charset=utf-8");
            let html = r.text().await.unwrap();
            assert!(!html.to_lowercase().contains("<script"), "{path} has a script");
            assert!(!html.contains(" style=\""), "{path} has an inline style");
        }
    }
    // Every console link a page shows leads somewhere (the header's included).
    for page in ["/console/tenants", "/console/tenants/headers-co"] {
        let html = op.get(page).await.text().await.unwrap();
        let links: std::collections::BTreeSet<String> = html
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|l| l.starts_with("/console/") && !l.starts_with("/console/assets/"))
            .map(|l| l.replace("&amp;", "&"))
            .collect();
        assert!(links.contains("/console/new"), "{links:?}");
        for link in links {
            assert_eq!(op.get(&link).await.status(), 200, "{link} on {page}");
        }
    }
    // One tenant's page shows each of its panels' data, and an endpoint by its host only.
    let html = op.get("/console/tenants/headers-co").await.text().await.unwrap();
    for shown in [
        "Headers Co",
        "bob@headers-co.test",
        "member key",
        "http://127.0.0.1:9",
        "reports",
        "tenant.created",
        "Starter plan",
        "API calls per day",
    ] {
        assert!(html.contains(shown), "{shown} is not on the tenant's page");
    }
    assert!(!html.contains("/hooks/tenantd"), "an endpoint's path is shown");
    assert_eq!(
        html.matches("<rect class=\"plot-bar").count(),
        60,
        "30 days of calls and of storage"
    );
    // The stylesheet: named by its hash, cached a year.
    let html = op.get("/console/tenants").await.text().await.unwrap();
    let at = html.find("/console/assets/console-").unwrap();
    let href = html[at..].split('"').next().unwrap();
    let r = anonymous.get(format!("{}{href}", app.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    let r = anonymous
        .get(format!("{}/console/assets/console-0.css", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Not part of the JSON API's document.
    let doc = app.call("GET", "/openapi.json", None, None, &[]).await.expect(200).body;
    assert!(doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .all(|p| !p.starts_with("/console")));
    // Signing out ends the session on this node.
    let r = op.post("/console/logout", &[("csrf", &op.csrf)], &[]).await;
    assert_eq!(r.status(), 303);
    let (cleared, _) = set_cookie(r.headers(), "tenantd_console").unwrap();
    assert_eq!(cleared, "tenantd_console=");
    assert_eq!(op.get("/console/tenants").await.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_are_the_apis_with_the_reason_and_refuse_bad_input() {
    let app = app().await;
    seed(&app, "acts-co", "Acts Co").await;
    let op = Operator::sign_in(&app).await;
    let csrf = ("csrf", op.csrf.as_str());
    // Bad input: the page again with the error, nothing changed.
    let r = op
        .post("/console/tenants/acts-co/suspend", &[csrf, ("reason", "  ")], &[])
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("a reason is required"));
    let r = op
        .post("/console/tenants/acts-co/plan", &[csrf, ("plan", "starter")], &[])
        .await;
    assert_eq!(r.status(), 400, "already on it");
    let r = op
        .post("/console/tenants/acts-co/plan", &[csrf, ("plan", "platinum")], &[])
        .await;
    assert_eq!(r.status(), 404);
    let r = op
        .post(
            "/console/tenants/acts-co/resume",
            &[csrf, ("reason", "not suspended")],
            &[],
        )
        .await;
    assert_eq!(r.status(), 409);
    let r = op
        .post(
            "/console/tenants",
            &[csrf, ("id", "Bad Id!"), ("plan", "free"), ("owner_email", "a@b.test")],
            &[],
        )
        .await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Bad Id!") && html.contains("class=\"error\""),
        "the form again, as typed"
    );
    assert_eq!(
        app.get("/v1/tenants/acts-co", ADMIN).await.expect(200).body["plan"],
        "starter"
    );

    // Each action, and its event with the reason and `via: console`.
    let r = op
        .post(
            "/console/tenants",
            &[
                csrf,
                ("id", "new-co"),
                ("plan", "free"),
                ("owner_email", "nia@new-co.test"),
                ("reason", "signed contract"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.headers()["location"], "/console/tenants/new-co?done=created");
    let r = op
        .post(
            "/console/tenants/acts-co/plan",
            &[csrf, ("plan", "professional"), ("reason", "upgrade")],
            &[],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = op
        .post(
            "/console/tenants/acts-co/export",
            &[csrf, ("reason", "customer asked")],
            &[],
        )
        .await;
    assert_eq!(r.headers()["location"], "/console/tenants/acts-co?done=export");
    let created = find(&audit_of(&app, "new-co").await, "tenant.created");
    assert_eq!(created["data"]["reason"], "signed contract");
    assert_eq!(created["data"]["via"], "console");
    assert_eq!(created["actor"], json!({"type": "operator", "id": "operator"}));
    let log = audit_of(&app, "acts-co").await;
    let updated = find(&log, "tenant.updated");
    assert_eq!(
        (updated["data"]["plan"].clone(), updated["data"]["reason"].clone()),
        (json!("professional"), json!("upgrade"))
    );
    assert_eq!(updated["data"]["via"], "console");
    let access = find(&log, "data.operator_access");
    assert_eq!(access["data"]["reason"], "customer asked");
    assert_eq!(access["data"]["action"], "export");
    assert_eq!(access["data"]["via"], "console");
    let acts = TenantId::parse("acts-co").unwrap();
    let exports = app
        .state
        .catalog
        .list_archives(&acts, tenantd_store::ArchiveKind::Export);
    assert_eq!(exports.await.unwrap().len(), 1);
    assert_eq!(
        app.get("/v1/tenants/acts-co", ADMIN).await.expect(200).body["plan"],
        "professional"
    );
}

/// Suspend, resume and revoke over HTTP (the browser test does them too, where a browser
/// runs): each is the API's, with its event's reason and `via`; a resume needs a reason;
/// a key or tenant that is not there, or another tenant's key through this tenant's
/// page, is a 404 that changes nothing; what tenants wrote is shown, never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_status_changes_and_revocations_over_http_and_what_they_refuse() {
    let app = app().await;
    let (own_key, own_secret) = seed(&app, "http-co", "<b>Bold</b> & Co").await;
    let (other_key, other_secret) = seed(&app, "other-co", "Other Co").await;
    let op = Operator::sign_in(&app).await;
    let csrf = ("csrf", op.csrf.as_str());
    let base = "/console/tenants/http-co";

    let r = op
        .post(&format!("{base}/suspend"), &[csrf, ("reason", "unpaid")], &[])
        .await;
    assert_eq!(r.headers()["location"], format!("{base}?done=suspended"));
    app.get("/v1/data/collections/notes/records", &own_secret)
        .await
        .problem(403, "tenant_suspended");
    let r = op.post(&format!("{base}/resume"), &[csrf, ("reason", " ")], &[]).await;
    assert_eq!(r.status(), 400, "a resume needs a reason");
    let r = op
        .post(&format!("{base}/resume"), &[csrf, ("reason", "paid")], &[])
        .await;
    assert_eq!(r.headers()["location"], format!("{base}?done=resumed"));
    app.get("/v1/data/collections/notes/records", &own_secret)
        .await
        .expect(200);
    let log = audit_of(&app, "http-co").await;
    for (kind, reason) in [("tenant.suspended", "unpaid"), ("tenant.resumed", "paid")] {
        let e = find(&log, kind);
        assert_eq!(
            (e["data"]["reason"].as_str(), e["data"]["via"].as_str()),
            (Some(reason), Some("console")),
            "{e}"
        );
    }

    // Another tenant's key through this tenant's page: not found, and it still works.
    assert_eq!(op.get(&format!("{base}/keys/{other_key}/revoke")).await.status(), 404);
    let r = op.post(&format!("{base}/keys/{other_key}/revoke"), &[csrf], &[]).await;
    assert_eq!(r.status(), 404);
    app.get("/v1/data/collections/notes/records", &other_secret)
        .await
        .expect(200);
    // Its own key: revoked, with the reason.
    let r = op
        .post(
            &format!("{base}/keys/{own_key}/revoke"),
            &[csrf, ("reason", "leaked")],
            &[],
        )
        .await;
    assert_eq!(r.headers()["location"], format!("{base}?done=revoked"));
    app.get("/v1/data/collections/notes/records", &own_secret)
        .await
        .problem(401, "unauthenticated");
    let revoked = find(&audit_of(&app, "http-co").await, "key.revoked");
    assert_eq!(
        (revoked["data"]["reason"].as_str(), revoked["data"]["via"].as_str()),
        (Some("leaked"), Some("console"))
    );

    // Tenants that are not there, or ids that cannot be.
    for path in ["/console/tenants/no-such-co", "/console/tenants/Not%20An%20Id!"] {
        assert_eq!(op.get(path).await.status(), 404, "{path}");
    }
    let r = op
        .post("/console/tenants/no-such-co/suspend", &[csrf, ("reason", "x")], &[])
        .await;
    assert_eq!(r.status(), 404);
    // A tenant's name is text on every page.
    for page in ["/console/tenants", base] {
        let html = op.get(page).await.text().await.unwrap();
        assert!(html.contains("&lt;b&gt;Bold&lt;/b&gt; &amp; Co"), "{page}");
        assert!(!html.contains("<b>Bold</b>"), "{page}");
    }
}

/// The tenant's audit trail, newest first, as the operator reads it through the API.
pub async fn audit_of(app: &TestApp, tenant: &str) -> serde_json::Value {
    app.get(&format!("/v1/tenants/{tenant}/audit?limit=100"), ADMIN)
        .await
        .expect(200)
        .body
}

/// The newest event of type `kind` in an audit page.
pub fn find(log: &serde_json::Value, kind: &str) -> serde_json::Value {
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} in {log}"))
}
