//! `/metrics`: every series it served before the HTTP histograms came, byte for byte but
//! the values; the request counter and latency histogram by route template; and the text
//! as promtool reads it.
use crate::common::{spawn_app, Backend, TestApp, ADMIN};
use serde_json::json;

/// `/metrics` of a server with Redis and the gateway, before any other request, values
/// left out: what tenantd served before its metrics went through prometheus-client.
const BEFORE: &str = r#"# HELP tenantd_requests_total Requests decided by the edge.
# TYPE tenantd_requests_total counter
tenantd_requests_total
# HELP tenantd_unauthenticated_total Requests whose credential was refused (401).
# TYPE tenantd_unauthenticated_total counter
tenantd_unauthenticated_total
# HELP tenantd_cross_tenant_attempts_total Requests refused with 403 tenant_mismatch.
# TYPE tenantd_cross_tenant_attempts_total counter
tenantd_cross_tenant_attempts_total
# HELP tenantd_cache_tenants Tenants in the edge cache.
# TYPE tenantd_cache_tenants gauge
tenantd_cache_tenants
# HELP tenantd_cache_keys API keys in the edge cache.
# TYPE tenantd_cache_keys gauge
tenantd_cache_keys
# HELP tenantd_redis_up 1 while the shared counters (Redis) answer.
# TYPE tenantd_redis_up gauge
tenantd_redis_up
# HELP tenantd_redis_errors_total Redis calls that failed or timed out.
# TYPE tenantd_redis_errors_total counter
tenantd_redis_errors_total
# HELP tenantd_counter_fallbacks_total Decisions made by a plan's counter_failure policy while Redis was unreachable.
# TYPE tenantd_counter_fallbacks_total counter
tenantd_counter_fallbacks_total
# HELP tenantd_nodes Live tenantd nodes sharing the counters.
# TYPE tenantd_nodes gauge
tenantd_nodes
# HELP tenantd_gateway_requests_total Requests received by the gateway listener.
# TYPE tenantd_gateway_requests_total counter
tenantd_gateway_requests_total
# HELP tenantd_gateway_upstream_unavailable_total Gateway requests answered 502 upstream_unavailable.
# TYPE tenantd_gateway_upstream_unavailable_total counter
tenantd_gateway_upstream_unavailable_total
# HELP tenantd_gateway_upstream_timeouts_total Gateway requests answered 504 upstream_timeout.
# TYPE tenantd_gateway_upstream_timeouts_total counter
tenantd_gateway_upstream_timeouts_total
# HELP tenantd_gateway_reloads_total Gateway configuration reloads applied.
# TYPE tenantd_gateway_reloads_total counter
tenantd_gateway_reloads_total
# HELP tenantd_gateway_reload_failures_total Gateway configuration reloads refused (the previous one stayed).
# TYPE tenantd_gateway_reload_failures_total counter
tenantd_gateway_reload_failures_total
# HELP tenantd_connections_open Connections open now, per listener.
# TYPE tenantd_connections_open gauge
tenantd_connections_open{listener="api"}
tenantd_connections_open{listener="gateway"}
# HELP tenantd_connections_accepted_total Connections accepted, per listener.
# TYPE tenantd_connections_accepted_total counter
tenantd_connections_accepted_total{listener="api"}
tenantd_connections_accepted_total{listener="gateway"}
# HELP tenantd_connections_closed_total Connections tenantd closed by a [server] limit: a head not read in time, idle too long, or evicted past max_connections.
# TYPE tenantd_connections_closed_total counter
tenantd_connections_closed_total{listener="api",reason="header_timeout"}
tenantd_connections_closed_total{listener="api",reason="idle"}
tenantd_connections_closed_total{listener="api",reason="evicted"}
tenantd_connections_closed_total{listener="gateway",reason="header_timeout"}
tenantd_connections_closed_total{listener="gateway",reason="idle"}
tenantd_connections_closed_total{listener="gateway",reason="evicted"}
# HELP tenantd_http_refused_total Requests the HTTP layer refused before any handler (malformed, 414, 431, 505).
# TYPE tenantd_http_refused_total counter
tenantd_http_refused_total{listener="api"}
tenantd_http_refused_total{listener="gateway"}
"#;

/// A server with counters in Redis and the gateway listening (its upstream refuses
/// connections), so that every metric is served; `None` when Redis is not set outside CI.
async fn full_app(test: &str) -> Option<TestApp> {
    let (url, prefix) = tenantd_store::testing::redis(test)?;
    let toml = format!(
        "redis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\ngateway_listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n"
    );
    spawn_app(Backend::Sqlite, &toml).await
}

async fn scrape(app: &TestApp) -> String {
    let r = reqwest::get(format!("{}/metrics", app.url)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().await.unwrap()
}

/// Each line without its sample value.
fn without_values(text: &str) -> String {
    text.lines()
        .map(|l| match l.starts_with('#') {
            true => l,
            false => l.rsplit_once(' ').map_or(l, |(series, _)| series),
        })
        .fold(String::new(), |out, l| out + l + "\n")
}

/// The lines of `text` outside the series added since (the HTTP API's requests, the job
/// queue's, the webhooks'), which their own tests check.
fn without_newer_metrics(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l.trim_start_matches("# HELP ").trim_start_matches("# TYPE ");
            ![
                "tenantd_http_request",
                "tenantd_job",
                "tenantd_webhook",
                "tenantd_edge_refusals",
                "tenantd_admission",
                "tenantd_tenant_",
                "tenantd_pool_",
                "tenantd_gateway_upstream_duration",
            ]
            .iter()
            .any(|newer| name.starts_with(newer))
        })
        .fold(String::new(), |out, l| out + l + "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_every_series_served_before() {
    let Some(app) = full_app("metrics_serve_every_series_served_before").await else {
        return;
    };
    // First scrape: no request answered yet, so only the series served before.
    assert_eq!(without_values(&without_newer_metrics(&scrape(&app).await)), BEFORE);
    app.tenant("acme", "free").await;
    app.get("/v1/tenants/acme", ADMIN).await.expect(200);
    let text = scrape(&app).await;
    assert_eq!(without_values(&without_newer_metrics(&text)), BEFORE);
    assert!(text.contains("tenantd_redis_up 1\n"), "{text}");
    assert!(
        text.contains("tenantd_connections_closed_total{listener=\"gateway\",reason=\"evicted\"} 0\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_and_timed_by_route_template_never_by_id() {
    let app = spawn_app(Backend::Sqlite, "").await.unwrap();
    let id = "zq7-metrics-tenant";
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": id, "plan": "free", "owner_email": "o@zq7.test", "name": "Zq7"}),
    )
    .await
    .expect(201);
    for _ in 0..3 {
        app.get(&format!("/v1/tenants/{id}"), ADMIN).await.expect(200);
    }
    app.call("GET", &format!("/v1/tenants/{id}"), Some("tdk_not_a_key"), None, &[])
        .await
        .expect(401);
    app.get(&format!("/v1/nothing/{id}"), ADMIN).await.expect(404);
    app.call("BREW", &format!("/v1/tenants/{id}"), Some(ADMIN), None, &[])
        .await
        .expect(405);
    let text = scrape(&app).await;
    assert!(!text.contains(id), "a tenant id became a label:\n{text}");

    assert!(
        text.contains("# HELP tenantd_http_requests_total Requests the HTTP API answered, by route template, method and status.\n# TYPE tenantd_http_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE tenantd_http_request_duration_seconds histogram\n"),
        "{text}"
    );
    let ok = r#"route="/v1/tenants/{id}",method="GET",status="200""#;
    let series = |name: &str, labels: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")))
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(series("tenantd_http_requests_total", ok), 3.0);
    assert_eq!(series("tenantd_http_request_duration_seconds_count", ok), 3.0);
    assert!(series("tenantd_http_request_duration_seconds_sum", ok) > 0.0);
    // Cumulative buckets from 100 µs to 10 s, then +Inf holding every request.
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("tenantd_http_request_duration_seconds_bucket{{{ok},le=\"")))
        .map(|l| {
            let (le, n) = l.split_once("\"} ").unwrap();
            (le.to_string(), n.parse().unwrap())
        })
        .collect();
    let bounds: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
    assert_eq!(bounds.first(), Some(&"0.0001"), "{text}");
    assert_eq!(bounds[bounds.len() - 2..], ["10", "+Inf"], "{text}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{text}");
    assert_eq!(buckets.last().unwrap().1, 3.0);

    for labels in [
        r#"route="/v1/tenants",method="POST",status="201""#,
        r#"route="/v1/tenants/{id}",method="GET",status="401""#,
        r#"route="unmatched",method="GET",status="404""#,
        r#"route="/v1/tenants/{id}",method="other",status="405""#,
    ] {
        assert_eq!(series("tenantd_http_requests_total", labels), 1.0, "{labels}");
        assert_eq!(
            series("tenantd_http_request_duration_seconds_count", labels),
            1.0,
            "{labels}"
        );
        assert_eq!(
            series(
                "tenantd_http_request_duration_seconds_bucket",
                &format!("{labels},le=\"+Inf\"")
            ),
            1.0,
            "{labels}"
        );
    }
    // The scrape itself is answered before it is counted: the next one shows it.
    let text = scrape(&app).await;
    assert!(
        text.contains("tenantd_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"} 1\n"),
        "{text}"
    );
}

/// promtool (Debian package `prometheus`) reads the text without error; its only lint is
/// about a name older than this check, which must not change. Skipped where promtool is
/// not installed, but for CI (whose script installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if !crate::common::promtool_or_skip("promtool_accepts_the_metrics") {
        return;
    }
    let Some(app) = full_app("promtool_accepts_the_metrics").await else {
        return;
    };
    app.tenant("acme", "free").await;
    app.get("/v1/tenants/acme", ADMIN).await.expect(200);
    app.get("/v1/nothing", ADMIN).await.expect(404);
    scrape(&app).await;
    let text = scrape(&app).await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit code 3: lint problems only (a text promtool cannot parse exits with 1).
    let known = "tenantd_counter_fallbacks_total metric name should not include type 'counter'";
    let lint_only = out.status.code() == Some(3) && said.lines().all(|l| l.trim() == known);
    assert!(out.status.success() || lint_only, "{:?}: {said}\n{text}", out.status);
}

/// The value of the series `name{labels}` in `text`, if served.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = match labels {
        "" => format!("{name} "),
        _ => format!("{name}{{{labels}}} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.parse().unwrap())
}

/// The `tenant` label values of every per-tenant series.
fn tenant_labels(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("tenantd_tenant_"))
        .filter_map(|l| l.split("tenant=\"").nth(1))
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// 300 tenants with traffic, five of them far busier: at most `tenant_series` + 1
/// tenant labels (the named and `_other`), the busiest named, every request of a key in
/// exactly one series, refusals by code, the named tenants' quotas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_series_are_bounded_and_name_the_busiest() {
    let app = spawn_app(Backend::Sqlite, "[metrics]\ntenant_series = 20\n")
        .await
        .unwrap();
    let ids: Vec<String> = (0..300).map(|i| format!("m-{i:03}")).collect();
    let busy = ["m-007", "m-042", "m-100", "m-150", "m-299"];
    let mut secrets = std::collections::HashMap::new();
    let app = &app;
    for chunk in ids.chunks(10) {
        let made = futures_util::future::join_all(chunk.iter().map(|id| async move {
            app.tenant(id, "free").await;
            (id.clone(), app.key(id, "viewer").await.1)
        }))
        .await;
        secrets.extend(made);
    }
    let mut sent = 0u64;
    let secrets = &secrets;
    for chunk in ids.chunks(10) {
        futures_util::future::join_all(chunk.iter().map(|id| async move {
            let n = if busy.contains(&id.as_str()) { 30 } else { 1 };
            for _ in 0..n {
                app.get(&format!("/v1/tenants/{id}"), &secrets[id]).await.expect(200);
            }
        }))
        .await;
        sent += chunk
            .iter()
            .map(|id| if busy.contains(&id.as_str()) { 30 } else { 1 })
            .sum::<u64>();
    }
    // One busy tenant spends its hour (the free plan's 100 calls): the rest is refused,
    // and counted so.
    for _ in 30..100 {
        app.get("/v1/tenants/m-299", &secrets["m-299"]).await.expect(200);
    }
    for _ in 0..3 {
        app.get("/v1/tenants/m-299", &secrets["m-299"])
            .await
            .problem(429, "quota_exceeded");
    }
    sent += 70 + 3;
    let text = scrape(app).await;

    let labels = tenant_labels(&text);
    assert!(labels.len() <= 21, "{} tenant labels: {labels:?}", labels.len());
    assert!(labels.contains("_other"), "{labels:?}");
    for id in busy {
        assert!(labels.contains(id), "{id} is not named: {labels:?}");
    }
    let requests: f64 = text
        .lines()
        .filter(|l| l.starts_with("tenantd_tenant_requests_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(requests, sent as f64, "every key request in exactly one series");
    assert_eq!(
        value(&text, "tenantd_tenant_requests_total", r#"tenant="m-042",plan="free""#),
        Some(30.0)
    );
    assert_eq!(value(&text, "tenantd_tenant_series", ""), Some(20.0));
    assert_eq!(
        value(
            &text,
            "tenantd_tenant_refusals_total",
            r#"tenant="m-299",plan="free",code="quota_exceeded""#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        value(&text, "tenantd_edge_refusals_total", r#"code="quota_exceeded""#) == Some(3.0),
        "{text}"
    );
    // Quotas of named tenants: the hour's admitted calls against the free plan's 100.
    let quota = r#"tenant="m-042",plan="free",resource="api_calls",window="hour""#;
    assert_eq!(value(&text, "tenantd_tenant_quota_used", quota), Some(30.0), "{text}");
    assert_eq!(value(&text, "tenantd_tenant_quota_limit", quota), Some(100.0));
    assert!(!text.contains(r#"tenantd_tenant_quota_used{tenant="_other""#));
    // Folded tenants' ids appear nowhere.
    let named: Vec<&String> = ids.iter().filter(|id| labels.contains(*id)).collect();
    assert_eq!(named.len(), 20);
    let folded = ids.iter().find(|id| !labels.contains(*id)).unwrap();
    assert!(!text.contains(&format!("\"{folded}\"")), "{folded} has a series");
    // The pools and the sampled admission histogram are served too.
    assert!(value(&text, "tenantd_pool_max_connections", r#"pool="catalog""#) > Some(0.0));
    assert!(text.contains("tenantd_pool_connections{pool=\"data\",state=\"in_use\"}"));
    assert!(
        value(&text, "tenantd_admission_duration_seconds_count", "") >= Some(1.0),
        "{text}"
    );
}
