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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_interrupted_purge_finishes_after_a_restart() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    an_interrupted_purge_finishes_after_a_restart(&url, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_interrupted_purge_finishes_after_a_restart() {
    let Some(url) = tenantd_store::testing::fresh_postgres("an interrupted purge finishes").await else {
        return;
    };
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    an_interrupted_purge_finishes_after_a_restart(&url, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_interrupted_tier_move_finishes_after_a_restart() {
    let (url, dir) = tenantd_store::testing::fresh_sqlite();
    an_interrupted_tier_move_finishes_after_a_restart(&url, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_interrupted_tier_move_finishes_after_a_restart() {
    let Some(url) = tenantd_store::testing::fresh_postgres("an interrupted tier move finishes").await else {
        return;
    };
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    an_interrupted_tier_move_finishes_after_a_restart(&url, &dir).await;
}

/// Waits (up to 60 s) for the process to end by itself, as the crash point makes it.
async fn crashed(node: &mut Node) {
    for _ in 0..600 {
        if let Some(status) = node.0.try_wait().unwrap() {
            assert!(
                !status.success(),
                "the crash point ends the process abnormally: {status}"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the process did not reach its crash point");
}

/// Polls `path` as the operator (up to 60 s) until `done` holds of its status and body.
async fn eventually(http: &reqwest::Client, url: &str, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let mut last = (0, Value::Null);
    for _ in 0..600 {
        let r = http
            .get(format!("{url}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if done(status, &body) {
            return body;
        }
        last = (status, body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never got there: {} {}", last.0, last.1);
}

/// A tenant with data, on `plan`, created through `url`; its API key.
async fn tenant_with_data(http: &reqwest::Client, url: &str, id: &str, plan: &str, records: usize) -> String {
    post(
        http,
        url,
        ADMIN,
        json!({"id": id, "plan": plan, "owner_email": format!("o@{id}.test")}),
        "/v1/tenants",
    )
    .await;
    let key = post(
        http,
        url,
        ADMIN,
        json!({"name": "app", "role": "member"}),
        &format!("/v1/tenants/{id}/keys"),
    )
    .await;
    let key = key["key"].as_str().unwrap().to_string();
    for n in 0..records {
        post(http, url, &key, json!({"n": n}), "/v1/data/collections/orders/records").await;
    }
    key
}

/// A deleted tenant past its retention is purged by a job; the process dies (as by
/// `kill -9`) after the tenant's data was removed but before its catalog rows were. After
/// a restart the job runs again and the purge finishes, once.
async fn an_interrupted_purge_finishes_after_a_restart(db: &str, dir: &std::path::Path) {
    let http = reqwest::Client::new();
    let toml = "purge_interval_seconds = 1\n";
    let mut node = Node::spawn_with(db, toml, dir, 0, &[("TENANTD_CRASH_AT", "purge.data_removed")]);
    node.ready().await;
    let url = node.1.clone();
    tenant_with_data(&http, &url, "doomed", "starter", 3).await;
    let r = http
        .delete(format!("{url}/v1/tenants/doomed"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Its retention ends now.
    sqlx::any::install_default_drivers();
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(db).await.unwrap();
    sqlx::query("UPDATE tenants SET purge_after = 1 WHERE id = 'doomed'")
        .execute(&mut c)
        .await
        .unwrap();
    crashed(&mut node).await;
    // The catalog rows are still there: the purge stopped half way.
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE id = 'doomed'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 1);
    drop(node);

    let node = Node::spawn(db, toml, dir, 0);
    node.ready().await;
    let url = node.1.clone();
    eventually(&http, &url, "/v1/tenants/doomed", |status, _| status == 404).await;
    let audit = eventually(&http, &url, "/v1/audit?action=tenant.purged", |s, b| {
        s == 200 && b["items"][0].is_object()
    })
    .await;
    let purged: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["tenant_id"] == "doomed")
        .collect();
    assert_eq!(purged.len(), 1, "purged once: {audit}");
}

/// A tenant's plan moves its data from the shared tables to a database of its own; the
/// process dies (as by `kill -9`) once the rows are copied, before the switch. After a
/// restart the move is undone and done again: the tenant ends on its plan's tier with all
/// its records, and takes writes.
async fn an_interrupted_tier_move_finishes_after_a_restart(db: &str, dir: &std::path::Path) {
    let http = reqwest::Client::new();
    let mut node = Node::spawn_with(db, "", dir, 0, &[("TENANTD_CRASH_AT", "move.copied")]);
    node.ready().await;
    let url = node.1.clone();
    let key = tenant_with_data(&http, &url, "mover", "starter", 20).await;
    let r = http
        .patch(format!("{url}/v1/tenants/mover"))
        .bearer_auth(ADMIN)
        .json(&json!({"plan": "enterprise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    crashed(&mut node).await;
    drop(node);

    let node = Node::spawn(db, "", dir, 0);
    node.ready().await;
    let url = node.1.clone();
    let placed = eventually(&http, &url, "/v1/tenants/mover/placement", |s, p| {
        s == 200 && p["tier"] == "database" && p["state"] == "placed" && p["move"]["phase"] == "done"
    })
    .await;
    assert_eq!(placed["move"]["verified"]["records"]["rows"], 20, "{placed}");
    let listed: Value = http
        .get(format!("{url}/v1/data/collections/orders/records?limit=100"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 20, "{listed}");
    post(
        &http,
        &url,
        &key,
        json!({"n": "after"}),
        "/v1/data/collections/orders/records",
    )
    .await;
}
