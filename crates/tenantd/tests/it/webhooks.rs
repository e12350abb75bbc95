//! Webhooks against real receivers spawned in the test: Standard Webhooks signatures
//! (checked here with ring's HMAC, apart from tenantd's signer), type filters, the retry
//! schedule and `Retry-After`, `410`, rotation's two signatures, replay, the SSRF guard,
//! owners kept apart, a hanging endpoint that never delays another tenant, two nodes
//! handing each event over once, and `kill -9` mid-delivery losing nothing.
use crate::common::{Node, TestApp, ADMIN};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Private addresses allowed (the receivers are on loopback), a compressed schedule.
const FAST: &str = "[webhooks]\nallow_private_networks = true\nretry_schedule_seconds = [1, 1]\ntimeout_seconds = 3\n";
/// An endpoint failing for 2 s is disabled; a retry every second.
const STALE: &str =
    "[webhooks]\nallow_private_networks = true\nretry_schedule_seconds = [1, 1, 1, 1, 1]\ndisable_after_seconds = 2\n";
/// A hanging endpoint's request lasts 30 s; 4 workers, 2 of them at most per endpoint.
const HANGING: &str =
    "[webhooks]\nallow_private_networks = true\ntimeout_seconds = 30\nworkers = 4\nper_endpoint = 2\n";

crate::both! {
    deliveries_are_signed_standard_webhooks_of_the_chosen_types, super::FAST;
    failures_follow_the_schedule_and_retry_after_and_410_disables, super::FAST;
    rotation_signs_with_both_secrets_and_replay_sends_again, super::FAST;
    endpoints_are_checked_and_kept_to_their_owner;
    a_hanging_endpoint_never_delays_another_tenant, super::HANGING;
    an_endpoint_failing_too_long_is_disabled, super::STALE;
}

/// What a receiver answers to one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    at: Instant,
    answered: Answer,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }

    /// Whether one of its signatures is the Standard Webhooks HMAC under `secret`.
    fn signed_by(&self, secret: &str) -> bool {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_")).unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signed = [self.id.as_bytes(), b".", self.timestamp.as_bytes(), b".", &self.body].concat();
        self.signature.split(' ').any(|s| {
            s.strip_prefix("v1,")
                .and_then(|b| STANDARD.decode(b).ok())
                .is_some_and(|sig| ring::hmac::verify(&key, &signed, &sig).is_ok())
        })
    }
}

/// An HTTP receiver on loopback: answers from a script, then `then`.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn spawn(script: &[Answer], then: Answer) -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let g = got.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (got, script) = (g.clone(), script.clone());
            async move {
                let answer = script.lock().unwrap().pop_front().unwrap_or(then);
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                got.lock().unwrap().push(Got {
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp"),
                    signature: h("webhook-signature"),
                    content_type: h("content-type"),
                    body: body.to_vec(),
                    at: Instant::now(),
                    answered: answer,
                });
                respond(answer).await
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The requests answered 2xx, by event id.
    fn delivered(&self) -> Vec<String> {
        self.got()
            .into_iter()
            .filter(|g| matches!(g.answered, Answer::Status(s) if s < 300))
            .map(|g| g.id)
            .collect()
    }
}

async fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Answer::RetryAfter(s, secs) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", secs.to_string())],
            "",
        )
            .into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Waits up to `secs` for `f` to give something.
async fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` as the operator until `done` says yes (up to 15 s); the last body.
async fn poll(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = app.get(path, ADMIN).await.expect(200).body;
        if done(&body) || Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a webhook at `path` (`/v1/tenants/{id}/webhooks` or `/v1/webhooks`): (id, secret).
async fn webhook(app: &TestApp, path: &str, url: &str, types: &[&str]) -> (String, String) {
    let b = app
        .post(
            path,
            ADMIN,
            json!({"url": url, "event_types": types, "description": "test"}),
        )
        .await
        .expect(201)
        .body;
    (b["id"].as_str().unwrap().into(), b["secret"].as_str().unwrap().into())
}

/// A `tenant.updated` of `tenant`; its event id.
async fn touch(app: &TestApp, tenant: &str, n: usize) -> String {
    app.patch(
        &format!("/v1/tenants/{tenant}"),
        ADMIN,
        json!({"name": format!("{tenant} {n}")}),
    )
    .await
    .expect(200);
    last_event(app, tenant, "tenant.updated").await
}

/// The id of the newest event of `kind` in `tenant`'s log.
async fn last_event(app: &TestApp, tenant: &str, kind: &str) -> String {
    let page = app
        .get(&format!("/v1/tenants/{tenant}/audit?type={kind}&limit=1"), ADMIN)
        .await
        .expect(200)
        .body;
    page["items"][0]["id"].as_str().unwrap().to_string()
}

async fn count_events(app: &TestApp, tenant: &str, kind: &str) -> usize {
    let page = app
        .get(&format!("/v1/tenants/{tenant}/audit?type={kind}&limit=1000"), ADMIN)
        .await
        .expect(200)
        .body;
    page["items"].as_array().unwrap().len()
}

async fn deliveries_are_signed_standard_webhooks_of_the_chosen_types(app: TestApp) {
    app.tenant("acme", "free").await;
    let (keys, ops) = (
        Receiver::spawn(&[], Answer::Status(204)).await,
        Receiver::spawn(&[], Answer::Status(200)).await,
    );
    let created = app
        .post(
            "/v1/tenants/acme/webhooks",
            ADMIN,
            json!({"url": keys.url, "event_types": ["key.*"]}),
        )
        .await
        .expect(201)
        .body;
    let (wh, secret) = (created["id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    assert!(wh.starts_with("wh_") && secret.starts_with("whsec_"), "{created}");
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
    assert_eq!(created["event_types"], json!(["key.*"]));
    assert_eq!(created["enabled"], true);
    // The secret is shown once: never in a list, a read or the log.
    let list = app.get("/v1/tenants/acme/webhooks", ADMIN).await.expect(200).body;
    let one = app
        .get(&format!("/v1/tenants/acme/webhooks/{wh}"), ADMIN)
        .await
        .expect(200)
        .body;
    let log = app
        .get("/v1/tenants/acme/audit?limit=100", ADMIN)
        .await
        .expect(200)
        .body;
    for body in [&list, &one, &log] {
        assert!(
            !body.to_string().contains(&secret[6..]),
            "the secret shown again: {body}"
        );
    }
    assert_eq!(list["items"][0]["id"], wh);
    let since = tenantd_core::ts::format(tenantd_core::now_secs() - 1);
    let (op_id, op_secret) = webhook(&app, "/v1/webhooks", &ops.url, &[]).await;

    let (key_id, _) = app.key("acme", "member").await;
    let updated = touch(&app, "acme", 1).await;
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "hooked", "name": "Hooked", "limits": []}),
    )
    .await
    .expect(201);

    // The operator's endpoint gets the tenant's events and the platform's.
    let got = until("the operator's deliveries", 20, || {
        let g = ops.got();
        let kinds: Vec<String> = g.iter().map(Got::kind).collect();
        ["key.created", "tenant.updated", "plan.created"]
            .iter()
            .all(|k| kinds.iter().any(|x| x == k))
            .then_some(g)
    })
    .await;
    for g in &got {
        assert!(g.signed_by(&op_secret), "{g:?}");
        assert!(!g.signed_by(secret), "signed with another endpoint's secret");
    }
    let upd = got.iter().find(|g| g.kind() == "tenant.updated").unwrap();
    assert_eq!(upd.id, updated, "webhook-id is the event's id");
    let plan = got.iter().find(|g| g.kind() == "plan.created").unwrap().json();
    assert_eq!(plan["data"]["tenant_id"], Value::Null, "{plan}");
    // The operator's replay walks every chain: the tenant's events and the platform's again.
    let replayed = app
        .post(&format!("/v1/webhooks/{op_id}/replay"), ADMIN, json!({"since": since}))
        .await
        .expect(202)
        .body;
    assert!(replayed["deliveries"].as_u64().unwrap() >= 3, "{replayed}");
    let plan_id = got.iter().find(|g| g.kind() == "plan.created").unwrap().id.clone();
    until("the operator's replay", 20, || {
        let ids = ops.delivered();
        [&updated, &plan_id]
            .iter()
            .all(|id| ids.iter().filter(|i| i == id).count() == 2)
            .then_some(())
    })
    .await;

    // The tenant's endpoint: only key.* events, as Standard Webhooks.
    let g = until("the key event", 20, || keys.got().into_iter().next()).await;
    assert!(g.signed_by(secret), "{g:?}");
    assert_eq!(g.content_type, "application/json");
    let body = g.json();
    let mut fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["data", "timestamp", "type"], "{body}");
    assert_eq!(body["type"], "key.created");
    assert_eq!(body["data"]["id"], g.id);
    assert_eq!(body["data"]["data"]["key_id"], key_id);
    assert_eq!(body["data"]["tenant_id"], "acme");
    let ts: i64 = g.timestamp.parse().unwrap();
    assert!(
        (ts - tenantd_core::now_secs()).abs() < 60,
        "webhook-timestamp is Unix seconds: {ts}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        keys.got().iter().map(Got::kind).collect::<Vec<_>>(),
        ["key.created"],
        "only the chosen types"
    );

    // Each attempt is in the delivery log.
    let log = app
        .get(&format!("/v1/tenants/acme/webhooks/{wh}/deliveries"), ADMIN)
        .await
        .expect(200)
        .body;
    let d = &log["items"][0];
    assert_eq!(
        (d["attempt"].as_u64(), d["status_code"].as_u64()),
        (Some(1), Some(204)),
        "{log}"
    );
    assert_eq!(
        (d["error"].clone(), d["next_attempt_at"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(d["event_id"], g.id);

    // A test message, whatever the types.
    let t = app
        .post(&format!("/v1/tenants/acme/webhooks/{wh}/test"), ADMIN, json!({}))
        .await
        .expect(202)
        .body;
    let msg = t["message_id"].as_str().unwrap();
    let g = until("the test message", 20, || keys.got().into_iter().find(|g| g.id == msg)).await;
    assert_eq!(g.kind(), "webhook.test");
    assert!(g.signed_by(secret));

    let metrics = app.get("/metrics", ADMIN).await.expect(200).body;
    let text = metrics.as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tenantd_webhook_deliveries_total{outcome=\"delivered\"}")),
        "{text}"
    );
    assert!(text.contains("tenantd_webhook_lag_seconds_bucket"), "{text}");
}

async fn failures_follow_the_schedule_and_retry_after_and_410_disables(app: TestApp) {
    app.tenant("acme", "free").await;
    let flaky = Receiver::spawn(&[Answer::Status(500), Answer::RetryAfter(503, 2)], Answer::Status(200)).await;
    let down = Receiver::spawn(&[], Answer::Status(500)).await;
    let gone = Receiver::spawn(&[], Answer::Status(410)).await;
    let path = "/v1/tenants/acme/webhooks";
    // tenant.updated only: an endpoint gets the events from the second it was made in on,
    // and tenant.created may be in that second.
    let (flaky_id, _) = webhook(&app, path, &flaky.url, &["tenant.updated"]).await;
    let (down_id, _) = webhook(&app, path, &down.url, &["tenant.updated"]).await;
    let (gone_id, _) = webhook(&app, path, &gone.url, &["tenant.updated"]).await;
    let first = touch(&app, "acme", 1).await;

    // 500, then after ~1 s (the schedule) 503 with Retry-After: 2, then after ~2 s a 200.
    let got = until("three attempts", 30, || Some(flaky.got()).filter(|g| g.len() >= 3)).await;
    assert!(got.iter().all(|g| g.id == first));
    let (gap1, gap2) = (got[1].at - got[0].at, got[2].at - got[1].at);
    assert!(
        gap1 >= Duration::from_millis(750),
        "the schedule's first wait, ±20 %: {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1550),
        "Retry-After: 2 over the schedule's 1 s: {gap2:?}"
    );
    // The receiver has the third attempt a moment before the log records it.
    let log = poll(&app, &format!("{path}/{flaky_id}/deliveries"), |l| {
        l["items"].as_array().is_some_and(|i| i.len() >= 3)
    })
    .await;
    let items = log["items"].as_array().unwrap();
    let statuses: Vec<_> = items.iter().map(|d| d["status_code"].as_u64()).collect();
    assert_eq!(statuses, [Some(200), Some(503), Some(500)], "{log}");
    assert_eq!(
        items.iter().map(|d| d["attempt"].as_u64().unwrap()).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert!(items[1]["next_attempt_at"].is_string() && items[0]["next_attempt_at"].is_null());
    assert!(items[2]["error"].as_str().unwrap().contains("500"), "{log}");

    // Always 500: the first attempt and the schedule's two retries, then nothing more.
    until("three failed attempts", 30, || {
        Some(()).filter(|_| down.got().len() >= 3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(down.got().len(), 3, "no attempt after the schedule ends");
    let still = app.get(&format!("{path}/{down_id}"), ADMIN).await.expect(200).body;
    assert_eq!(still["enabled"], true, "failing for less than disable_after_seconds");
    assert!(still["failing_since"].is_string(), "{still}");

    // 410 disables at once, with its event, and nothing more is sent there.
    until("the 410", 20, || Some(()).filter(|_| !gone.got().is_empty())).await;
    let disabled = poll(&app, &format!("{path}/{gone_id}"), |b| b["enabled"] == false).await;
    assert_eq!(disabled["enabled"], false, "{disabled}");
    assert!(
        disabled["disabled_reason"].as_str().unwrap().contains("410"),
        "{disabled}"
    );
    assert_eq!(count_events(&app, "acme", "webhook.disabled").await, 1);
    let second = touch(&app, "acme", 2).await;
    until("the next event at the flaky endpoint", 20, || {
        flaky.delivered().contains(&second).then_some(())
    })
    .await;
    assert_eq!(gone.got().len(), 1, "a disabled endpoint gets nothing");

    // Enabled again, it gets the next events.
    app.patch(&format!("{path}/{gone_id}"), ADMIN, json!({"enabled": true}))
        .await
        .expect(200);
    let third = touch(&app, "acme", 3).await;
    until("a delivery after re-enabling", 20, || {
        gone.got().iter().any(|g| g.id == third).then_some(())
    })
    .await;
}

async fn rotation_signs_with_both_secrets_and_replay_sends_again(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let r = Receiver::spawn(&[], Answer::Status(200)).await;
    let since = tenantd_core::ts::format(tenantd_core::now_secs() - 1);
    let (wh, old) = webhook(&app, "/v1/tenants/acme/webhooks", &r.url, &["tenant.updated"]).await;
    let e1 = touch(&app, "acme", 1).await;
    let g1 = until("e1", 20, || r.got().into_iter().find(|g| g.id == e1)).await;
    assert_eq!(g1.signature.split(' ').count(), 1);
    assert!(g1.signed_by(&old));

    let rotated = app
        .post(
            &format!("/v1/tenants/acme/webhooks/{wh}/rotate-secret"),
            ADMIN,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    let until_at = tenantd_core::ts::parse(rotated["previous_secret_until"].as_str().unwrap()).unwrap();
    assert!((until_at - tenantd_core::now_secs() - 86_400).abs() < 60, "{rotated}");
    assert_eq!(count_events(&app, "acme", "webhook.secret_rotated").await, 1);

    let e2 = touch(&app, "acme", 2).await;
    let g2 = until("e2", 20, || r.got().into_iter().find(|g| g.id == e2)).await;
    let sigs: Vec<&str> = g2.signature.split(' ').collect();
    assert_eq!(sigs.len(), 2, "{}", g2.signature);
    assert!(
        g2.signed_by(&new) && g2.signed_by(&old),
        "both secrets sign during the overlap"
    );
    let only = |s: &str| Got {
        signature: s.to_string(),
        ..g2.clone()
    };
    assert!(only(sigs[0]).signed_by(&new), "the newest first");

    // Replay since before e1: both again, each once more.
    let bad = app
        .post(
            &format!("/v1/tenants/acme/webhooks/{wh}/replay"),
            ADMIN,
            json!({"since": "yesterday"}),
        )
        .await;
    bad.problem(400, "invalid_request");
    let (_, beta_key) = app.key("beta", "admin").await;
    app.post(
        &format!("/v1/tenants/beta/webhooks/{wh}/replay"),
        &beta_key,
        json!({"since": since}),
    )
    .await
    .problem(404, "not_found");
    let replayed = app
        .post(
            &format!("/v1/tenants/acme/webhooks/{wh}/replay"),
            ADMIN,
            json!({"since": since}),
        )
        .await
        .expect(202)
        .body;
    // e1 and e2 (tenant.created and the webhook.* events are not tenant.updated).
    assert_eq!(replayed["deliveries"], 2, "{replayed}");
    until("the replay", 20, || {
        let ids = r.delivered();
        (ids.iter().filter(|i| **i == e1).count() == 2 && ids.iter().filter(|i| **i == e2).count() == 2).then_some(())
    })
    .await;
}

async fn endpoints_are_checked_and_kept_to_their_owner(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let path = "/v1/tenants/acme/webhooks";
    for (url, says) in [
        ("http://127.0.0.1:9/x", "127.0.0.1"),
        ("http://localhost:9/x", "allow_private_networks"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://10.1.2.3/", "private"),
        ("http://[::1]:8080/", "::1"),
        ("ftp://203.0.113.10/", "http"),
        ("https://user:pw@203.0.113.10/", "credentials"),
    ] {
        let p = app
            .post(path, ADMIN, json!({"url": url}))
            .await
            .problem(400, "invalid_request");
        let detail = p.body["detail"].as_str().unwrap();
        assert!(detail.contains("url") && detail.contains(says), "{url}: {detail}");
    }
    for body in [
        json!({"url": "https://203.0.113.10/h", "event_types": ["Tenant.Created"]}),
        json!({"url": "https://203.0.113.10/h", "event_types": ["*"]}),
        json!({"url": "https://203.0.113.10/h", "secret": "whsec_mine"}),
        json!({"event_types": []}),
    ] {
        app.post(path, ADMIN, body).await.problem(400, "invalid_request");
    }
    assert_eq!(
        count_events(&app, "acme", "webhook.*").await,
        0,
        "nothing for a refused request"
    );

    let (wh, secret) = webhook(&app, path, "https://203.0.113.10/h", &["tenant.*", "key.revoked"]).await;
    assert_eq!(count_events(&app, "acme", "webhook.created").await, 1);
    app.patch(&format!("{path}/{wh}"), ADMIN, json!({"url": "http://10.0.0.1/"}))
        .await
        .problem(400, "invalid_request");
    let patched = app
        .patch(
            &format!("{path}/{wh}"),
            ADMIN,
            json!({"description": "audit feed", "event_types": []}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (patched["url"].as_str(), patched["description"].as_str()),
        (Some("https://203.0.113.10/h"), Some("audit feed")),
        "the refused change left the url"
    );
    assert_eq!(patched["event_types"], json!([]));
    assert_eq!(count_events(&app, "acme", "webhook.updated").await, 1);

    // Permissions and owners.
    let (_, viewer) = app.key("acme", "viewer").await;
    let (_, beta) = app.key("beta", "admin").await;
    app.get(path, &viewer).await.expect(200);
    app.post(path, &viewer, json!({"url": "https://203.0.113.10/v"}))
        .await
        .problem(403, "forbidden");
    app.get(&format!("{path}/{wh}"), &beta)
        .await
        .problem(403, "tenant_mismatch");
    app.get(&format!("/v1/tenants/beta/webhooks/{wh}"), &beta)
        .await
        .problem(404, "not_found");
    app.delete(&format!("/v1/tenants/beta/webhooks/{wh}"), &beta)
        .await
        .problem(404, "not_found");
    app.get(&format!("/v1/webhooks/{wh}"), ADMIN)
        .await
        .problem(404, "not_found");
    app.get("/v1/webhooks", &beta).await.problem(403, "forbidden");
    assert!(app.get("/v1/webhooks", ADMIN).await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let everything = app
        .get("/v1/tenants/acme/audit?limit=1000", ADMIN)
        .await
        .body
        .to_string();
    assert!(!everything.contains(&secret[6..]) && !everything.contains("203.0.113.10"));

    // At most 20 per owner.
    for i in 1..20 {
        webhook(&app, path, &format!("https://203.0.113.10/{i}"), &[]).await;
    }
    app.post(path, ADMIN, json!({"url": "https://203.0.113.10/21"}))
        .await
        .problem(409, "conflict");

    app.delete(&format!("{path}/{wh}"), ADMIN).await.expect(204);
    app.get(&format!("{path}/{wh}"), ADMIN).await.problem(404, "not_found");
    assert_eq!(count_events(&app, "acme", "webhook.deleted").await, 1);

    // The guard holds at delivery time too (a name may resolve elsewhere by then): an
    // endpoint on loopback that got into the catalog is never called.
    let r = Receiver::spawn(&[], Answer::Status(200)).await;
    let mut sneaked = tenantd_store::Webhook::new(
        "wh_aaaaaaaaaaaaaaaaaaaa".into(),
        Some("beta".into()),
        r.url.clone(),
        vec![],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    );
    sneaked.created_at -= 5;
    let mut w = app.state.catalog.begin().await.unwrap();
    app.state.catalog.create_webhook(&mut w, &sneaked).await.unwrap();
    w.commit().await.unwrap();
    touch(&app, "beta", 1).await;
    let attempts = poll(
        &app,
        &format!("/v1/tenants/beta/webhooks/{}/deliveries", sneaked.id),
        |b| !b["items"].as_array().unwrap().is_empty(),
    )
    .await;
    let error = attempts["items"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{attempts}"));
    assert!(
        error.contains("127.0.0.1") && error.contains("allow_private_networks"),
        "{error}"
    );
    assert!(r.got().is_empty(), "a loopback endpoint was called");
}

async fn an_endpoint_failing_too_long_is_disabled(app: TestApp) {
    app.tenant("acme", "free").await;
    let down = Receiver::spawn(&[], Answer::Status(500)).await;
    let (wh, _) = webhook(&app, "/v1/tenants/acme/webhooks", &down.url, &["tenant.updated"]).await;
    touch(&app, "acme", 1).await;
    let hook = poll(&app, &format!("/v1/tenants/acme/webhooks/{wh}"), |b| {
        b["enabled"] == false
    })
    .await;
    assert_eq!(hook["enabled"], false, "{hook}");
    assert!(
        hook["disabled_reason"].as_str().unwrap().contains("failed for"),
        "{hook}"
    );
    assert!(down.got().len() >= 2, "it was retried until then");
    let events = app
        .get("/v1/tenants/acme/audit?type=webhook.disabled", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events["items"][0]["data"]["webhook_id"], wh);
    assert_eq!(events["items"][0]["actor"]["type"], "system");
}

async fn a_hanging_endpoint_never_delays_another_tenant(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let hangs = Receiver::spawn(&[], Answer::Hang).await;
    let fine = Receiver::spawn(&[], Answer::Status(200)).await;
    webhook(&app, "/v1/tenants/acme/webhooks", &hangs.url, &["tenant.*"]).await;
    webhook(&app, "/v1/tenants/beta/webhooks", &fine.url, &["tenant.*"]).await;
    for i in 0..10 {
        touch(&app, "acme", i).await;
    }
    until("acme's deliveries hanging", 20, || {
        Some(()).filter(|_| hangs.got().len() >= 2)
    })
    .await;
    let beta = touch(&app, "beta", 1).await;
    // Four workers, acme's endpoint holding at most two of them for 30 s each: beta's
    // event goes out long before any of them is free.
    until("beta's delivery beside a hanging endpoint", 10, || {
        fine.delivered().contains(&beta).then_some(())
    })
    .await;
    assert_eq!(
        hangs.got().len(),
        2,
        "at most per_endpoint deliveries to one endpoint at once"
    );
}

/// Two nodes on one PostgreSQL catalog (SQLite serves one node only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_hand_each_event_over_once() {
    if let Some(app) = crate::common::spawn_app(crate::common::Backend::Postgres, FAST).await {
        two_nodes_hand_each_event_over_once(app).await;
    }
}

async fn two_nodes_hand_each_event_over_once(app: TestApp) {
    let other = app.second_node().await;
    app.tenant("acme", "free").await;
    let r = Receiver::spawn(&[], Answer::Status(200)).await;
    webhook(&app, "/v1/tenants/acme/webhooks", &r.url, &["tenant.updated"]).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(touch(if i % 2 == 0 { &app } else { &other }, "acme", i).await);
    }
    until("every event", 30, || {
        let got = r.delivered();
        ids.iter().all(|i| got.contains(i)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = r.delivered();
    assert_eq!(got.len(), ids.len(), "each event once: {got:?}");
}

/// `kill -9` of tenantd while a delivery is in flight and events wait to be handed over:
/// after a restart every acknowledged event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_mid_delivery_loses_no_event() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    kill_9_mid_delivery_loses_no_event(&url, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_mid_delivery_loses_no_event() {
    let Some(url) = tenantd_store::testing::fresh_postgres("webhooks survive kill -9").await else {
        return;
    };
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    kill_9_mid_delivery_loses_no_event(&url, &dir).await;
}

async fn kill_9_mid_delivery_loses_no_event(db: &str, dir: &std::path::Path) {
    let toml =
        "[webhooks]\nallow_private_networks = true\ntimeout_seconds = 2\nretry_schedule_seconds = [1, 1, 1, 1]\n";
    let r = Receiver::spawn(&[Answer::Hang], Answer::Status(200)).await;
    let http = reqwest::Client::new();
    let call = |url: String, method: reqwest::Method, body: Value| {
        let http = http.clone();
        async move {
            let res = http
                .request(method, url)
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    let node = Node::spawn(db, toml, dir, 0);
    node.ready().await;
    let api = node.1.clone();
    call(
        format!("{api}/v1/tenants"),
        reqwest::Method::POST,
        json!({"id": "acme", "plan": "free", "owner_email": "o@acme.test"}),
    )
    .await;
    call(
        format!("{api}/v1/tenants/acme/webhooks"),
        reqwest::Method::POST,
        json!({"url": r.url, "event_types": ["tenant.updated"]}),
    )
    .await;
    for i in 0..20 {
        call(
            format!("{api}/v1/tenants/acme"),
            reqwest::Method::PATCH,
            json!({"name": format!("Acme {i}")}),
        )
        .await;
    }
    until("a delivery in flight", 20, || Some(()).filter(|_| !r.got().is_empty())).await;
    drop(node); // SIGKILL
    let node = Node::spawn(db, toml, dir, 0);
    node.ready().await;
    let log = call(
        format!("{}/v1/tenants/acme/audit?type=tenant.updated&limit=100", node.1),
        reqwest::Method::GET,
        Value::Null,
    )
    .await;
    let ids: Vec<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 20);
    until("every acknowledged event delivered after the restart", 60, || {
        let got = r.delivered();
        ids.iter().all(|i| got.contains(i)).then_some(())
    })
    .await;
}

/// A delivery that could not connect records why, but never the endpoint's URL: a token
/// in its query would be stored with every failure and shown to whoever reads the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoints_error_holds_no_url_or_token() {
    let app = crate::common::spawn_app(crate::common::Backend::Sqlite, FAST)
        .await
        .unwrap();
    app.tenant("acme", "free").await;
    // A port that refuses: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let path = "/v1/tenants/acme/webhooks";
    let url = format!("http://{closed}/in?token=s3cret-token");
    let (id, _) = webhook(&app, path, &url, &["tenant.updated"]).await;
    touch(&app, "acme", 1).await;
    let log = poll(&app, &format!("{path}/{id}/deliveries"), |l| {
        l["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let error = log["items"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("the endpoint could not be reached"), "{error}");
    assert!(!error.contains("s3cret") && !error.contains("/in"), "{error}");
}
