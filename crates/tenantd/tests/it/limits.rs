//! Admission over HTTP: every authenticated tenant request counts as one api_call
//! against the plan, the tenant's overrides and the key's own limits (docs/limits.md).
use crate::common::{Reply, TestApp, ADMIN};
use serde_json::json;
use tenantd_core::{TenantId, Window};
use tenantd_store::PageRequest;

crate::both! {
    the_free_plans_101st_call_in_an_hour_is_refused;
    a_key_limit_narrower_than_the_plan_is_honoured;
    soft_limits_admit_and_record;
    a_month_counter_survives_a_restart;
    synchronous_usage_is_written_before_the_answer, "usage_flush_ms = 0";
}

crate::on_redis!(
    the_free_plans_101st_call_in_an_hour_is_refused,
    a_key_limit_narrower_than_the_plan_is_honoured,
    soft_limits_admit_and_record,
);

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn events(app: &TestApp, tenant: &str) -> Vec<(String, String)> {
    let page = PageRequest {
        limit: 100,
        after: None,
    };
    let evs = app
        .state
        .catalog
        .list_events(&TenantId::parse(tenant).unwrap(), &page)
        .await
        .unwrap();
    evs.items
        .into_iter()
        .map(|e| (e.kind, e.data["window"].as_str().unwrap().to_string()))
        .collect()
}

async fn used(app: &TestApp, tenant: &str, window: Window) -> u64 {
    app.state
        .limiter
        .current(TenantId::parse(tenant).unwrap(), "api_calls", window)
        .await
        .unwrap()
}

/// Waits out the last seconds of an hour, so a test's calls all fall in one hour.
async fn not_at_the_end_of_an_hour() {
    let into_hour = tenantd_core::now_secs().rem_euclid(3600);
    if into_hour > 3590 {
        tokio::time::sleep(std::time::Duration::from_secs((3601 - into_hour) as u64)).await;
    }
}

async fn the_free_plans_101st_call_in_an_hour_is_refused(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, key) = app.key("acme", "member").await;
    // The operator's requests are not the tenant's use.
    app.get("/v1/tenants/acme", ADMIN).await.expect(200);
    not_at_the_end_of_an_hour().await;
    for i in 0..100u64 {
        let r = app.get("/v1/me", &key).await.expect(200);
        // The tightest limit is the hourly one (100; the month allows 1,000).
        assert_eq!(header(&r, "ratelimit-policy"), "\"api_calls-hour\";q=100;w=3600");
        assert_eq!(header(&r, "x-ratelimit-limit"), "100");
        assert_eq!(header(&r, "x-ratelimit-remaining"), (99 - i).to_string());
        let reset: u64 = header(&r, "x-ratelimit-reset").parse().unwrap();
        assert!((1..=3600).contains(&reset));
        assert_eq!(
            header(&r, "ratelimit"),
            format!("\"api_calls-hour\";r={};t={reset}", 99 - i)
        );
    }
    for _ in 0..2 {
        let r = app.get("/v1/me", &key).await.problem(429, "quota_exceeded");
        let b = &r.body;
        assert_eq!(
            (&b["quota"], &b["window"], &b["limit"], &b["current"]),
            (&json!("api_calls"), &json!("hour"), &json!(100), &json!(100))
        );
        let reset_at = tenantd_core::ts::parse(b["reset_at"].as_str().unwrap()).unwrap();
        assert_eq!(reset_at.rem_euclid(3600), 0, "the hour ends on the hour");
        let retry: i64 = header(&r, "retry-after").parse().unwrap();
        assert!(retry >= 1 && (retry - (reset_at - tenantd_core::now_secs())).abs() <= 1);
        assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
        assert!(header(&r, "ratelimit").starts_with("\"api_calls-hour\";r=0;"));
    }
    // Refused calls counted nothing; each threshold was announced once.
    assert_eq!(used(&app, "acme", Window::Hour).await, 100);
    assert_eq!(used(&app, "acme", Window::Month).await, 100);
    assert_eq!(
        events(&app, "acme").await,
        [
            ("quota.warning".into(), "hour".into()),
            ("quota.exceeded".into(), "hour".into())
        ]
    );
    // The operator is still served; another tenant is untouched.
    app.get("/v1/tenants/acme", ADMIN).await.expect(200);
    app.tenant("beta", "free").await;
    let (_, other) = app.key("beta", "member").await;
    let r = app.get("/v1/me", &other).await.expect(200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "99");
}

async fn a_key_limit_narrower_than_the_plan_is_honoured(app: TestApp) {
    app.tenant("acme", "free").await;
    let narrow = app
        .post(
            "/v1/tenants/acme/keys",
            ADMIN,
            json!({"name": "narrow", "limits": [{"resource": "api_calls", "window": "minute", "limit": 3}]}),
        )
        .await
        .expect(201)
        .body["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, wide) = app.key("acme", "member").await;
    for left in [2, 1, 0] {
        let r = app.get("/v1/me", &narrow).await.expect(200);
        // The key's own minute limit is the tightest.
        assert_eq!(header(&r, "ratelimit-policy"), "\"api_calls-minute-key\";q=3;w=60");
        assert_eq!(header(&r, "x-ratelimit-remaining"), left.to_string());
    }
    let r = app.get("/v1/me", &narrow).await.problem(429, "rate_limited");
    assert_eq!((&r.body["window"], &r.body["limit"]), (&json!("minute"), &json!(3)));
    // The calls were just made: room comes back once they are a minute old, rounded up
    // to the end of their 0.6 s bucket (the log never under-counts).
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((59..=61).contains(&retry), "{retry}");
    // The tenant's other key is not held back by it.
    let r = app.get("/v1/me", &wide).await.expect(200);
    assert_eq!(header(&r, "ratelimit-policy"), "\"api_calls-hour\";q=100;w=3600");
    assert_eq!(header(&r, "x-ratelimit-remaining"), "96");
}

async fn soft_limits_admit_and_record(app: TestApp) {
    app.tenant("acme", "free").await;
    app.patch(
        "/v1/tenants/acme",
        ADMIN,
        json!({"limits": [{"resource": "api_calls", "window": "hour", "limit": 2, "enforcement": "soft"}]}),
    )
    .await
    .expect(200);
    let (_, key) = app.key("acme", "member").await;
    not_at_the_end_of_an_hour().await;
    for _ in 0..4 {
        let r = app.get("/v1/me", &key).await.expect(200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"api_calls-hour\";q=2;w=3600");
    }
    // Over the limit, admitted, the overage in the counters, each event once.
    assert_eq!(used(&app, "acme", Window::Hour).await, 4);
    assert_eq!(
        events(&app, "acme").await,
        [
            ("quota.warning".into(), "hour".into()),
            ("quota.exceeded".into(), "hour".into())
        ]
    );
}

async fn a_month_counter_survives_a_restart(app: TestApp) {
    app.tenant("acme", "free").await;
    app.patch(
        "/v1/tenants/acme",
        ADMIN,
        json!({"limits": [{"resource": "api_calls", "window": "month", "limit": 3}]}),
    )
    .await
    .expect(200);
    let (_, key) = app.key("acme", "member").await;
    for _ in 0..3 {
        app.get("/v1/me", &key).await.expect(200);
    }
    let app = app.restart().await;
    let r = app.get("/v1/me", &key).await.problem(429, "quota_exceeded");
    assert_eq!((&r.body["window"], &r.body["current"]), (&json!("month"), &json!(3)));
}

async fn synchronous_usage_is_written_before_the_answer(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, key) = app.key("acme", "member").await;
    app.get("/v1/me", &key).await.expect(200);
    // No flush interval has passed: the row is there because the answer waited for it.
    let rows = app
        .state
        .catalog
        .load_counters(&TenantId::parse("acme").unwrap(), 0)
        .await
        .unwrap();
    let month = rows
        .iter()
        .find(|r| r.window == Window::Month && r.scope.is_none())
        .expect("month counter written");
    assert_eq!(month.value, 1);
}
