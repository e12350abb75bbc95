//! The log of a real `tenantd serve`: JSON lines, and every line written while serving a
//! request, a platform job or a webhook delivery carries what it served (`request_id`,
//! `job_id`) and the tenant (`tenant_id`), whichever part of tenantd wrote it.
use crate::common::{Node, ADMIN};
use serde_json::{json, Value};
use std::time::Duration;

/// Sends `method path` with `token` and `body` to the node; the status and JSON body.
async fn call(node: &Node, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", node.1))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The log's lines, each parsed; panics on a line that is not a JSON object.
fn lines(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

fn with_message<'a>(all: &'a [Value], message: &str) -> Vec<&'a Value> {
    all.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_names_its_request_or_job_and_its_tenant() {
    let (db, dir) = tenantd_store::testing::fresh_sqlite();
    let log = dir.join("tenantd.log");
    let toml = "log = \"info,tenantd::webhooks=debug\"\n[webhooks]\nallow_private_networks = true\n";
    let node = Node::spawn_logged(&db, toml, &dir, 0, &log);
    node.ready().await;
    let t = "logged";
    let made = json!({"id": t, "plan": "free", "owner_email": "o@logged.test"});
    assert_eq!(call(&node, "POST", "/v1/tenants", ADMIN, Some(made)).await.0, 201);
    // A webhook whose endpoint refuses connections: its attempt is logged.
    let hook = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["key.*"]});
    let path = format!("/v1/tenants/{t}/webhooks");
    assert_eq!(call(&node, "POST", &path, ADMIN, Some(hook)).await.0, 201);
    let key = json!({"name": "app", "role": "admin"});
    let (status, body) = call(&node, "POST", &format!("/v1/tenants/{t}/keys"), ADMIN, Some(key)).await;
    assert_eq!(status, 201, "{body}");
    let secret = body["key"].as_str().unwrap().to_string();
    // The tenant's own requests: data written (so it is placed), one refused.
    let record = call(
        &node,
        "POST",
        "/v1/data/collections/notes/records",
        &secret,
        Some(json!({"text": "hi"})),
    )
    .await;
    assert_eq!(record.0, 201, "{}", record.1);
    assert_eq!(
        call(&node, "GET", "/v1/tenants/someone-else", &secret, None).await.0,
        403
    );
    // A plan with another tier: a platform job moves the data.
    let patch = json!({"plan": "enterprise"});
    assert_eq!(
        call(&node, "PATCH", &format!("/v1/tenants/{t}"), ADMIN, Some(patch))
            .await
            .0,
        200
    );

    let mut all = Vec::new();
    for _ in 0..150 {
        all = lines(&log);
        let moved = !with_message(&all, "tenant data moved").is_empty();
        let attempted = !with_message(&all, "webhook delivery attempted").is_empty();
        if moved && attempted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every request's line: its id, and the tenant once the edge knew it.
    let requests = with_message(&all, "request");
    assert!(requests.len() >= 5, "{all:#?}");
    for l in &requests {
        let id = l["request_id"].as_str().unwrap_or_else(|| panic!("no request_id: {l}"));
        assert!(id.starts_with("req_"), "{l}");
    }
    let own: Vec<_> = requests
        .iter()
        .filter(|l| l["path"] == "/v1/data/collections/notes/records")
        .collect();
    assert_eq!(own.len(), 1, "{requests:#?}");
    assert_eq!(own[0]["tenant_id"], t, "{}", own[0]);
    assert_eq!(own[0]["status"], 201);
    // The refused cross-tenant request names no tenant it was refused.
    let refused = requests
        .iter()
        .find(|l| l["path"] == "/v1/tenants/someone-else")
        .unwrap();
    assert_eq!(refused["status"], 403);
    assert_ne!(refused["tenant_id"], "someone-else", "{refused}");

    // The tier move's line, written by a platform job: the job and the tenant.
    let moved = with_message(&all, "tenant data moved");
    let moved = moved.first().unwrap_or_else(|| panic!("no move line in {all:#?}"));
    assert_eq!(moved["tenant_id"], t, "{moved}");
    assert!(moved["job_id"].as_str().is_some_and(|j| !j.is_empty()), "{moved}");
    assert_eq!(moved["queue"], "tenantd.move", "{moved}");

    // The webhook attempt's line, written by the delivery worker: the job and the tenant.
    let attempted = with_message(&all, "webhook delivery attempted");
    let attempted = attempted
        .first()
        .unwrap_or_else(|| panic!("no attempt line in {all:#?}"));
    assert_eq!(attempted["tenant_id"], t, "{attempted}");
    assert!(attempted["job_id"].as_str().is_some(), "{attempted}");
    assert!(attempted["error"].as_str().is_some(), "{attempted}");
    // No line holds the key's secret.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&secret), "a secret was logged");
}
