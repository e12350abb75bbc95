//! Usage over HTTP: the quota table, metered events with idempotency keys, leases,
//! catalog levels, the tenant's events, invoices and the billing report.
use crate::common::{TestApp, ADMIN};
use serde_json::{json, Value};
use tenantd_core::usage::CounterRow;
use tenantd_core::{TenantId, Window};

crate::both! {
    the_quota_table_shows_every_limit_with_its_use;
    idempotent_events_count_once_and_a_refused_batch_records_nothing;
    leases_are_limited_released_and_free_themselves_on_expiry;
    members_and_keys_are_levels_checked_when_they_grow;
    concurrent_additions_never_pass_a_level;
    invoice_figures_with_a_plan_change_and_overage_are_exact;
    no_quantity_wraps_a_counter_or_lifts_a_limit;
}

/// A plan with limits on metered resources.
async fn metered_plan(app: &TestApp) {
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "metered", "name": "Metered", "limits": [
            {"resource": "orchestrations", "window": "day", "limit": 10, "enforcement": "hard"},
            {"resource": "exports", "window": "month", "limit": 100, "enforcement": "soft"},
            {"resource": "jobs", "window": "concurrent", "limit": 2, "enforcement": "hard"},
            {"resource": "keys", "window": "total", "limit": 2, "enforcement": "hard"},
        ]}),
    )
    .await
    .expect(201);
}

fn quota<'a>(usage: &'a Value, resource: &str, window: &str) -> &'a Value {
    usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == resource && q["window"] == window)
        .unwrap_or_else(|| panic!("no {resource}/{window} in {usage}"))
}

async fn the_quota_table_shows_every_limit_with_its_use(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("beta", "free").await;
    let (_, key) = app.key("acme", "viewer").await;
    let (_, beta_key) = app.key("beta", "member").await;
    // The tenant comes from the key; this request is the tenant's first call.
    let u = app.get("/v1/tenant/usage", &key).await.expect(200).body;
    assert_eq!((&u["tenant_id"], &u["plan"]), (&json!("acme"), &json!("starter")));
    assert_eq!(u["features"], json!({"exports": true}));
    let hour = quota(&u, "api_calls", "hour");
    assert_eq!(
        (
            &hour["limit"],
            &hour["current"],
            &hour["remaining"],
            &hour["enforcement"]
        ),
        (&json!(500), &json!(1), &json!(499), &json!("hard"))
    );
    assert_eq!(hour["percentage"], json!(0.2));
    let reset = tenantd_core::ts::parse(hour["reset_at"].as_str().unwrap()).unwrap();
    let now = tenantd_core::now_secs();
    assert!(reset > now && reset <= now + 3600 && reset % 3600 == 0, "{hour}");
    let month = quota(&u, "api_calls", "month");
    assert_eq!(
        (&month["limit"], &month["enforcement"]),
        (&json!(10_000), &json!("soft"))
    );
    let members = quota(&u, "members", "total");
    assert_eq!(
        (
            &members["limit"],
            &members["current"],
            &members["percentage"],
            &members["reset_at"]
        ),
        (&json!(25), &json!(1), &json!(4.0), &Value::Null)
    );
    assert_eq!(quota(&u, "storage_bytes", "total")["current"], 0);
    // By path, for the operator (not counted) and the tenant's key (counted: 2 now).
    let u = app.get("/v1/tenants/acme/usage", ADMIN).await.expect(200).body;
    assert_eq!(quota(&u, "api_calls", "hour")["current"], 1);
    let u = app.get("/v1/tenants/acme/usage", &key).await.expect(200).body;
    assert_eq!(quota(&u, "api_calls", "hour")["current"], 2);
    // Another tenant's key learns nothing of acme.
    app.get("/v1/tenants/acme/usage", &beta_key)
        .await
        .problem(403, "tenant_mismatch");
    let u = app.get("/v1/tenant/usage", &beta_key).await.expect(200).body;
    assert_eq!(u["tenant_id"], "beta");
    assert_eq!(quota(&u, "api_calls", "hour")["current"], 1);
    // Without a tenant there is no table; a guest may not read it.
    app.get("/v1/tenant/usage", ADMIN).await.problem(400, "tenant_required");
    let (_, guest) = app.user("acme", "g@acme.test", "guest").await;
    app.get("/v1/tenants/acme/usage", &guest)
        .await
        .problem(403, "forbidden");
}

async fn idempotent_events_count_once_and_a_refused_batch_records_nothing(app: TestApp) {
    metered_plan(&app).await;
    app.tenant("acme", "metered").await;
    app.tenant("beta", "metered").await;
    let (_, key) = app.key("acme", "member").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    let (_, beta_key) = app.key("beta", "member").await;
    let ev = "/v1/tenants/acme/usage/events";
    let day = Window::Day;
    let r = app
        .post(
            ev,
            &key,
            json!({"resource": "orchestrations", "quantity": 3, "idempotency_key": "a"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body, json!({"recorded": 1, "duplicates": 0}));
    // The same key again counts nothing, alone or in a batch; a key repeated inside a
    // batch counts once.
    let r = app
        .post(
            ev,
            &key,
            json!({"resource": "orchestrations", "quantity": 3, "idempotency_key": "a"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body, json!({"recorded": 0, "duplicates": 1}));
    let r = app
        .post(
            ev,
            &key,
            json!([
                {"resource": "orchestrations", "quantity": 2, "idempotency_key": "b"},
                {"resource": "orchestrations", "quantity": 2, "idempotency_key": "b"},
                {"resource": "orchestrations", "quantity": 1},
                {"resource": "orchestrations", "quantity": 9, "idempotency_key": "a"},
                {"resource": "exports", "quantity": 7},
            ]),
        )
        .await
        .expect(200);
    assert_eq!(r.body, json!({"recorded": 3, "duplicates": 2}));
    assert_eq!(app.used("acme", "orchestrations", day).await, 6);
    assert_eq!(app.used("acme", "exports", Window::Month).await, 7);
    // 6 + 5 > 10: refused whole, with the 429 fields; nothing of it is counted, not even
    // the exports in the same batch, and its idempotency key can be used again.
    let r = app
        .post(
            ev,
            &key,
            json!([
                {"resource": "exports", "quantity": 1},
                {"resource": "orchestrations", "quantity": 5, "idempotency_key": "c"},
            ]),
        )
        .await
        .problem(429, "quota_exceeded");
    assert_eq!(
        (
            &r.body["quota"],
            &r.body["window"],
            &r.body["limit"],
            &r.body["current"]
        ),
        (&json!("orchestrations"), &json!("day"), &json!(10), &json!(6))
    );
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(app.used("acme", "orchestrations", day).await, 6);
    assert_eq!(app.used("acme", "exports", Window::Month).await, 7);
    let r = app
        .post(
            ev,
            &key,
            json!({"resource": "orchestrations", "quantity": 4, "idempotency_key": "c"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["recorded"], 1);
    assert_eq!(app.used("acme", "orchestrations", day).await, 10);
    // Idempotency keys and counters are per tenant.
    let r = app
        .post(
            "/v1/tenants/beta/usage/events",
            &beta_key,
            json!({"resource": "orchestrations", "quantity": 1, "idempotency_key": "a"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["recorded"], 1);
    assert_eq!(app.used("beta", "orchestrations", day).await, 1);
    app.post(ev, &beta_key, json!({"resource": "orchestrations", "quantity": 1}))
        .await
        .problem(403, "tenant_mismatch");
    // Bad input names the problem and changes nothing.
    for (body, needle) in [
        (json!({"resource": "orchestrations"}), "quantity"),
        (json!({"resource": "orchestrations", "quantity": 0}), "quantity"),
        (json!({"resource": "members", "quantity": 1}), "members"),
        (json!({"resource": "Bad Name!", "quantity": 1}), "resource"),
        (json!({"resource": "Orchestrations", "quantity": 1}), "resource"),
        (json!([]), "1 to 1000"),
        (
            json!([{"resource": "x", "quantity": 1}, {"resource": "x", "quantity": -1}]),
            "event 1",
        ),
        (
            json!({"resource": "x", "quantity": 1, "idempotency_key": ""}),
            "idempotency_key",
        ),
        (json!({"resource": "x", "quantity": 1, "extra": 1}), "extra"),
    ] {
        let r = app.post(ev, &key, body.clone()).await.problem(400, "invalid_request");
        assert!(
            r.body["detail"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(app.used("acme", "x", day).await, 0);
    app.post(ev, &viewer, json!({"resource": "x", "quantity": 1}))
        .await
        .problem(403, "forbidden");
    // Crossing 80% and 100% of the day's orchestrations left one event each.
    let evs = app.get("/v1/tenants/acme/events", &key).await.expect(200).body;
    let kinds: Vec<(&str, &str)> = evs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["resource"] == "orchestrations")
        .map(|e| (e["type"].as_str().unwrap(), e["data"]["window"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("quota.warning", "day"), ("quota.exceeded", "day")]);
    assert_eq!(evs["items"][0]["tenant_id"], "acme");
    let page = app.get("/v1/tenants/acme/events?limit=1", &key).await.expect(200).body;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!("/v1/tenants/acme/events?limit=1&cursor={next}"), &key)
        .await
        .expect(200)
        .body;
    assert_ne!(page2["items"][0]["id"], page["items"][0]["id"]);
    let beta_evs = app.get("/v1/tenants/beta/events", &beta_key).await.expect(200).body;
    assert_eq!(beta_evs["items"], json!([]), "another tenant's events");
    app.get("/v1/tenants/acme/events", &beta_key)
        .await
        .problem(403, "tenant_mismatch");
}

async fn leases_are_limited_released_and_free_themselves_on_expiry(app: TestApp) {
    metered_plan(&app).await;
    app.tenant("acme", "metered").await;
    app.tenant("beta", "metered").await;
    let (_, key) = app.key("acme", "member").await;
    let (_, beta_key) = app.key("beta", "member").await;
    let take = |ttl: u32| json!({"resource": "jobs", "ttl_seconds": ttl});
    let short = app
        .post("/v1/tenants/acme/leases", &key, take(1))
        .await
        .expect(201)
        .body;
    assert!(short["lease_id"].as_str().unwrap().starts_with("lse_"));
    assert!(short["expires_at"].is_string());
    let long = app
        .post("/v1/tenants/acme/leases", &key, take(60))
        .await
        .expect(201)
        .body;
    let r = app
        .post("/v1/tenants/acme/leases", &key, take(60))
        .await
        .problem(429, "quota_exceeded");
    assert_eq!(
        (
            &r.body["quota"],
            &r.body["window"],
            &r.body["limit"],
            &r.body["current"]
        ),
        (&json!("jobs"), &json!("concurrent"), &json!(2), &json!(2))
    );
    assert!(r.headers.get("retry-after").is_some());
    // Another tenant's leases are its own; it cannot release acme's.
    app.post("/v1/tenants/beta/leases", &beta_key, take(60))
        .await
        .expect(201);
    let long_id = long["lease_id"].as_str().unwrap();
    app.delete(&format!("/v1/tenants/beta/leases/{long_id}"), &beta_key)
        .await
        .problem(404, "not_found");
    app.delete(&format!("/v1/tenants/acme/leases/{long_id}"), &beta_key)
        .await
        .problem(403, "tenant_mismatch");
    app.delete(&format!("/v1/tenants/acme/leases/{long_id}"), &key)
        .await
        .expect(204);
    app.delete(&format!("/v1/tenants/acme/leases/{long_id}"), &key)
        .await
        .problem(404, "not_found");
    app.post("/v1/tenants/acme/leases", &key, take(60)).await.expect(201);
    app.post("/v1/tenants/acme/leases", &key, take(60))
        .await
        .problem(429, "quota_exceeded");
    let u = app.get("/v1/tenants/acme/usage", &key).await.expect(200).body;
    assert_eq!(quota(&u, "jobs", "concurrent")["current"], 2);
    // The 1-second lease frees itself.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.post("/v1/tenants/acme/leases", &key, take(60)).await.expect(201);
    // Resources without a concurrent limit lease freely; bad input is refused.
    app.post(
        "/v1/tenants/acme/leases",
        &key,
        json!({"resource": "other", "ttl_seconds": 5}),
    )
    .await
    .expect(201);
    for body in [take(0), take(86_401), json!({"resource": "jobs"})] {
        app.post("/v1/tenants/acme/leases", &key, body)
            .await
            .problem(400, "invalid_request");
    }
}

/// Ten additions at once, spread over two nodes sharing the catalog, against a level
/// with few places left: exactly the free places are taken, the rest are 429, for
/// members and for keys. (Each node's own lock cannot see the other's additions: the
/// catalog's write counts again.)
async fn concurrent_additions_never_pass_a_level(app: TestApp) {
    // Free: 5 members, the owner is the first; 4 places left.
    app.tenant("acme", "free").await;
    metered_plan(&app).await;
    app.tenant("beta", "metered").await;
    let other = app.second_node().await;
    let nodes = [app.url.clone(), other.url.clone()];
    let http = reqwest::Client::new();
    let burst = |path: String, body: fn(usize) -> Value| {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..10 {
            let req = http
                .post(format!("{}{path}", nodes[i % 2]))
                .bearer_auth(ADMIN)
                .json(&body(i));
            set.spawn(async move { req.send().await.unwrap().status().as_u16() });
        }
        async move {
            let mut statuses = Vec::new();
            while let Some(s) = set.join_next().await {
                statuses.push(s.unwrap());
            }
            statuses.sort();
            statuses
        }
    };
    let members = burst(
        "/v1/tenants/acme/members".into(),
        |i| json!({"email": format!("c{i}@acme.test"), "role": "member"}),
    )
    .await;
    assert_eq!(members, [[201; 4].as_slice(), &[429; 6]].concat());
    let listed = app.get("/v1/tenants/acme/members", ADMIN).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 5);
    // The metered plan allows 2 keys.
    let keys = burst("/v1/tenants/beta/keys".into(), |i| json!({"name": format!("k{i}")})).await;
    assert_eq!(keys, [[201; 2].as_slice(), &[429; 8]].concat());
}

async fn members_and_keys_are_levels_checked_when_they_grow(app: TestApp) {
    // Free: 5 members; the owner is the first.
    app.tenant("acme", "free").await;
    for i in 1..=4 {
        if i == 3 {
            // Re-adding a member at 3 of 5 would make 4 (80%), but adds nothing: no
            // quota.warning for it.
            app.post(
                "/v1/tenants/acme/members",
                ADMIN,
                json!({"email": "m1@acme.test", "role": "member"}),
            )
            .await
            .problem(409, "conflict");
        }
        app.post(
            "/v1/tenants/acme/members",
            ADMIN,
            json!({"email": format!("m{i}@acme.test"), "role": "member"}),
        )
        .await
        .expect(201);
    }
    let r = app
        .post(
            "/v1/tenants/acme/members",
            ADMIN,
            json!({"email": "m5@acme.test", "role": "member"}),
        )
        .await
        .problem(429, "quota_exceeded");
    assert_eq!(
        (
            &r.body["quota"],
            &r.body["window"],
            &r.body["limit"],
            &r.body["current"]
        ),
        (&json!("members"), &json!("total"), &json!(5), &json!(5))
    );
    let members = app.get("/v1/tenants/acme/members", ADMIN).await.expect(200).body;
    assert_eq!(members["items"].as_array().unwrap().len(), 5, "nothing was added");
    // Keys: 2 active keys at most on this plan; a revoked key frees its place.
    metered_plan(&app).await;
    app.tenant("beta", "metered").await;
    let (first, _) = app.key("beta", "member").await;
    app.key("beta", "member").await;
    let body = json!({"name": "third"});
    let r = app
        .post("/v1/tenants/beta/keys", ADMIN, body.clone())
        .await
        .problem(429, "quota_exceeded");
    assert_eq!((&r.body["quota"], &r.body["limit"]), (&json!("keys"), &json!(2)));
    app.delete(&format!("/v1/tenants/beta/keys/{first}"), ADMIN)
        .await
        .expect(204);
    app.post("/v1/tenants/beta/keys", ADMIN, body).await.expect(201);
    // The crossings were recorded.
    assert_eq!(
        app.quota_events("acme", Some("members")).await,
        ["quota.warning", "quota.exceeded"]
    );
    // A soft level admits past its limit; its thresholds are recorded once.
    app.tenant("gamma", "free").await;
    app.patch(
        "/v1/tenants/gamma",
        ADMIN,
        json!({"limits": [{"resource": "members", "window": "total", "limit": 2, "enforcement": "soft"}]}),
    )
    .await
    .expect(200);
    for i in 1..=2 {
        app.post(
            "/v1/tenants/gamma/members",
            ADMIN,
            json!({"email": format!("s{i}@gamma.test"), "role": "member"}),
        )
        .await
        .expect(201);
    }
    assert_eq!(
        app.quota_events("gamma", None).await,
        ["quota.warning", "quota.exceeded"]
    );
}

crate::on_redis!(
    the_quota_table_shows_every_limit_with_its_use,
    idempotent_events_count_once_and_a_refused_batch_records_nothing,
    leases_are_limited_released_and_free_themselves_on_expiry,
    no_quantity_wraps_a_counter_or_lifts_a_limit
);

const DAY: i64 = 86_400;
const OCT_1: i64 = 1_790_812_800;
const GIB: u64 = 1 << 30;

async fn invoice_figures_with_a_plan_change_and_overage_are_exact(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("beta", "free").await;
    let (_, owner) = app.key("acme", "owner").await;
    let (_, beta_key) = app.key("beta", "owner").await;
    // October as it happened: on starter since September 21, professional from the
    // middle of October 16 (15.5 of 31 days each), 42,345 API calls, 7 GiB stored
    // since September 28.
    let c = &app.state.catalog;
    let acme = TenantId::parse("acme").unwrap();
    c.record_plan(&acme, OCT_1 - 10 * DAY, "starter").await.unwrap();
    c.record_plan(&acme, OCT_1 + 31 * DAY / 2, "professional")
        .await
        .unwrap();
    let row = |window, period, value| CounterRow {
        tenant: acme,
        scope: None,
        resource: "api_calls".into(),
        window,
        period,
        value,
    };
    c.add_counters(&[row(Window::Month, OCT_1, 42_000), row(Window::Month, OCT_1, 345)])
        .await
        .unwrap();
    c.set_levels(&[CounterRow {
        resource: "storage_bytes".into(),
        ..row(Window::Total, OCT_1 - 3 * DAY, 7 * GIB)
    }])
    .await
    .unwrap();
    let inv = app
        .get("/v1/tenants/acme/invoices/2026-10", &owner)
        .await
        .expect(200)
        .body;
    // Starter 29.00 × ½ = 14.50; professional 99.00 × ½ = 49.50; 5,000 + 25,000 calls
    // included, 12,345 above = 12.345 × 0.01 = 0.12; storage 2 GiB above starter's 5 GiB
    // for 15 days (professional allows 20 GiB) = 30 GiB-days / 31 = 0.9677 GiB-month ×
    // 0.10 = 0.10.
    let lines: Vec<(&str, &str, &str)> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["quantity"].as_str().unwrap(),
                l["unit_price"].as_str().unwrap(),
                l["amount"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("0.5000", "29.00", "14.50"),
            ("0.5000", "99.00", "49.50"),
            ("12.345", "0.01", "0.12"),
            ("0.9677", "0.10", "0.10"),
        ],
        "{inv}"
    );
    assert_eq!(
        (
            &inv["tenant_id"],
            &inv["period"],
            &inv["currency"],
            &inv["total"],
            &inv["status"]
        ),
        (
            &json!("acme"),
            &json!("2026-10"),
            &json!("USD"),
            &json!("64.22"),
            &json!("closed")
        )
    );
    assert!(inv["lines"][0]["description"].as_str().unwrap().contains("Starter"));
    // Before the tenant existed there is nothing to bill.
    let empty = app
        .get("/v1/tenants/acme/invoices/2026-08", &owner)
        .await
        .expect(200)
        .body;
    assert_eq!((&empty["lines"], &empty["total"]), (&json!([]), &json!("0.00")));
    app.get("/v1/tenants/acme/invoices/2026-13", &owner)
        .await
        .problem(400, "invalid_request");
    app.get("/v1/tenants/acme/invoices/2026-10", &beta_key)
        .await
        .problem(403, "tenant_mismatch");
    // The operator's report: every tenant with something to bill; CSV on request.
    let report = app.get("/v1/billing/2026-10", ADMIN).await.expect(200).body;
    assert_eq!(report["period"], "2026-10");
    assert_eq!(report["invoices"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["invoices"][0], inv);
    let csv = app
        .call(
            "GET",
            "/v1/billing/2026-10",
            Some(ADMIN),
            None,
            &[("accept", "text/csv")],
        )
        .await;
    assert_eq!(csv.status.as_u16(), 200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.body.as_str().expect("CSV as text").to_string();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "tenant_id,period,currency,description,quantity,unit_price,amount"
    );
    assert_eq!(rows.len(), 6, "{text}");
    assert!(rows[3].ends_with(",12.345,0.01,0.12"), "{text}");
    assert_eq!(rows[5], "acme,2026-10,USD,total,,,64.22");
    app.get("/v1/billing/2026-10", &owner).await.problem(403, "forbidden");
    // The current month is open and bills the plan the tenant is on.
    let (y, m) = tenantd_core::ts::year_month(tenantd_core::now_secs());
    let now = app
        .get(&format!("/v1/billing/{y:04}-{m:02}"), ADMIN)
        .await
        .expect(200)
        .body;
    let open: Vec<&Value> = now["invoices"].as_array().unwrap().iter().collect();
    assert_eq!(open.len(), 2, "{now}");
    assert!(open.iter().all(|i| i["status"] == "open"), "{now}");
    // A plan change in the tenant's first second: the new plan is the one billed (the
    // history once ordered same-second plans by name, and billed "free" here).
    app.patch("/v1/tenants/beta", ADMIN, json!({"plan": "enterprise"}))
        .await
        .expect(200);
    let inv = app
        .get(&format!("/v1/tenants/beta/invoices/{y:04}-{m:02}"), ADMIN)
        .await
        .expect(200)
        .body;
    let last = inv["lines"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["description"].as_str().unwrap().starts_with("Enterprise plan"),
        "{inv}"
    );
    assert_eq!(last["unit_price"], "499.00");
}

/// The finding: a quantity of 2^64 − 100 wrapped the counters, so a key reset its own
/// hard hourly limit and erased its billed overage, and 2^63 was stored as a negative
/// BIGINT. Quantities are 1..2^53 − 1 and every count stops at 2^53 − 1.
async fn no_quantity_wraps_a_counter_or_lifts_a_limit(app: TestApp) {
    use tenantd_core::usage::MAX_COUNT;
    for (id, limits) in [
        (
            "capped",
            json!([{"resource": "api_calls", "window": "hour", "limit": 400, "enforcement": "hard"}]),
        ),
        (
            "billed",
            json!([{"resource": "api_calls", "window": "month", "limit": 10, "enforcement": "soft"}]),
        ),
    ] {
        app.post(
            "/v1/plans",
            ADMIN,
            json!({"id": id, "name": id, "price": "1.00", "limits": limits}),
        )
        .await
        .expect(201);
    }
    app.tenant("acme", "capped").await;
    app.tenant("beta", "billed").await;
    let (_, key) = app.key("acme", "member").await;
    let (_, beta_key) = app.key("beta", "member").await;
    // Each request is a call, and the app metered 390 more: 391 of 400.
    let acme_ev = "/v1/tenants/acme/usage/events";
    app.post(acme_ev, &key, json!({"resource": "api_calls", "quantity": 390}))
        .await
        .expect(200);
    // Quantities past 2^53 - 1 are refused, naming the field, and count nothing.
    for q in ["18446744073709551516", "9223372036854775808", "9007199254740992"] {
        let body: Value = serde_json::from_str(&format!(r#"{{"resource": "api_calls", "quantity": {q}}}"#)).unwrap();
        let r = app.post(acme_ev, &key, body).await.problem(400, "invalid_request");
        assert!(r.body["detail"].as_str().unwrap().contains("quantity"), "{}", r.body);
    }
    assert_eq!(app.used("acme", "api_calls", Window::Hour).await, 394);
    // The largest quantity allowed is refused by the hard limit, counting nothing.
    app.post(acme_ev, &key, json!({"resource": "api_calls", "quantity": MAX_COUNT}))
        .await
        .problem(429, "quota_exceeded");
    // The limit still holds: five calls left, then 429.
    for _ in 0..5 {
        app.get("/v1/tenant/usage", &key).await.expect(200);
    }
    app.get("/v1/tenant/usage", &key).await.problem(429, "quota_exceeded");
    assert_eq!(app.used("acme", "api_calls", Window::Hour).await, 400);
    // On a soft limit the largest quantities are admitted, and the counter stops at
    // 2^53 - 1: in process, in the catalog, and in what the invoice bills.
    let beta_ev = "/v1/tenants/beta/usage/events";
    let many: Vec<Value> = (0..1000)
        .map(|_| json!({"resource": "api_calls", "quantity": MAX_COUNT}))
        .collect();
    app.post(beta_ev, &beta_key, json!(many)).await.expect(200);
    app.post(
        beta_ev,
        &beta_key,
        json!({"resource": "api_calls", "quantity": MAX_COUNT}),
    )
    .await
    .expect(200);
    assert_eq!(app.used("beta", "api_calls", Window::Month).await, MAX_COUNT);
    app.state.flush_usage().await;
    let beta = TenantId::parse("beta").unwrap();
    let stored = app.state.catalog.load_counters(&beta, 0).await.unwrap();
    let month = stored
        .iter()
        .find(|r| r.window == Window::Month && r.scope.is_none() && r.resource == "api_calls")
        .unwrap();
    assert_eq!(month.value, MAX_COUNT, "{stored:?}");
    let period = tenantd_core::ts::format(tenantd_core::now_secs());
    let inv = app
        .get(&format!("/v1/tenants/beta/invoices/{}", &period[..7]), ADMIN)
        .await
        .expect(200)
        .body;
    let overage = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["unit_price"] == "0.01")
        .unwrap_or_else(|| panic!("no overage line: {inv}"));
    // 2^53 - 1 calls less the few the plan includes (10, prorated), per 1,000.
    assert!(
        overage["quantity"].as_str().unwrap().starts_with("9007199254740.98"),
        "{inv}"
    );
}
