//! Crash tests: what tenantd acknowledged survives `kill -9` of its process.
use crate::common::{Node, ADMIN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Usage events sent in the stream.
const EVENTS: usize = 2000;
/// Senders at once.
const SENDERS: usize = 4;
/// Acknowledged events after which the server is killed.
const KILL_AFTER: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_usage_survives_kill_9() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    acknowledged_usage_survives_kill_9(&url, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_usage_survives_kill_9() {
    let Some(url) = tenantd_store::testing::fresh_postgres("acknowledged usage survives kill -9").await else {
        return;
    };
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    acknowledged_usage_survives_kill_9(&url, &dir).await;
}

/// The `orchestrations` used this month, as the restarted server's quota table shows it.
async fn used(http: &reqwest::Client, url: &str) -> u64 {
    let u: Value = http
        .get(format!("{url}/v1/tenants/acme/usage"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    u["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "orchestrations")
        .unwrap_or_else(|| panic!("{u}"))["current"]
        .as_u64()
        .unwrap()
}

fn event(i: usize) -> Value {
    json!({"resource": "orchestrations", "quantity": 1, "idempotency_key": format!("ev-{i}")})
}

/// 2,000 usage events with idempotency keys from 4 senders; `kill -9` of the server
/// once 600 are acknowledged; a restart on the same catalog. Every acknowledged event
/// counted; sending all 2,000 again counts each missing one exactly once.
async fn acknowledged_usage_survives_kill_9(db: &str, dir: &std::path::Path) {
    let http = reqwest::Client::new();
    let node = Node::spawn(db, "", dir, 0);
    node.ready().await;
    let url = node.1.clone();
    post(
        &http,
        &url,
        ADMIN,
        json!({"id": "metered", "name": "Metered", "limits": [
        {"resource": "orchestrations", "window": "month", "limit": 1_000_000, "enforcement": "soft"}]}),
        "/v1/plans",
    )
    .await;
    post(
        &http,
        &url,
        ADMIN,
        json!({"id": "acme", "plan": "metered", "owner_email": "o@acme.test"}),
        "/v1/tenants",
    )
    .await;
    let key = post(
        &http,
        &url,
        ADMIN,
        json!({"name": "app", "role": "member"}),
        "/v1/tenants/acme/keys",
    )
    .await;
    let key = key["key"].as_str().unwrap().to_string();

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (http, url, key, acked) = (http.clone(), url.clone(), key.clone(), acked.clone());
            tokio::spawn(async move {
                for i in (s..EVENTS).step_by(SENDERS) {
                    let sent = http
                        .post(format!("{url}{EVENTS_PATH}"))
                        .bearer_auth(&key)
                        .json(&event(i))
                        .send()
                        .await;
                    // Once the server is gone, nothing more is acknowledged.
                    let Ok(r) = sent else { break };
                    let body: Option<Value> = r.json().await.ok();
                    if body.is_some_and(|b| b["recorded"] == 1) {
                        acked.lock().unwrap().insert(i);
                    }
                }
            })
        })
        .collect();
    // Kill -9 mid-stream.
    let pid = node.0.id();
    while acked.lock().unwrap().len() < KILL_AFTER {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= KILL_AFTER && acked.len() < EVENTS,
        "{} acknowledged",
        acked.len()
    );
    drop(node);

    let node = Node::spawn(db, "", dir, 1);
    node.ready().await;
    let url = node.1.clone();
    // Every acknowledged event counted (and at most the few in flight besides).
    let after_crash = used(&http, &url).await;
    assert!(
        after_crash as usize >= acked.len() && after_crash as usize <= acked.len() + SENDERS,
        "{after_crash} counted, {} acknowledged",
        acked.len()
    );
    // All 2,000 again, as two batches: each one missing counts once, the rest are
    // duplicates of what counted.
    let mut recorded = 0;
    let mut duplicates = 0;
    for half in [0..EVENTS / 2, EVENTS / 2..EVENTS] {
        let r = post(&http, &url, &key, half.map(event).collect(), EVENTS_PATH).await;
        recorded += r["recorded"].as_u64().unwrap();
        duplicates += r["duplicates"].as_u64().unwrap();
    }
    assert_eq!((recorded, duplicates), (EVENTS as u64 - after_crash, after_crash));
    assert_eq!(used(&http, &url).await, EVENTS as u64);
    // And once more: nothing new.
    let r = post(&http, &url, &key, (0..EVENTS / 2).map(event).collect(), EVENTS_PATH).await;
    assert_eq!((&r["recorded"], &r["duplicates"]), (&json!(0), &json!(EVENTS / 2)));
    assert_eq!(used(&http, &url).await, EVENTS as u64);
}

const EVENTS_PATH: &str = "/v1/tenants/acme/usage/events";

/// `POST`s `body` to `path` as `token`, asserting success; the answer.
async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value, path: &str) -> Value {
    let r = http
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}
