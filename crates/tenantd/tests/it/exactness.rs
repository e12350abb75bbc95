//! Exactness: 64 concurrent clients against one tenant with limit L admit exactly L, per
//! minute (sliding) and per hour (calendar), in process, in Redis mode, and across three
//! tenantd processes sharing Redis. And what happens when Redis goes away and comes back.
use crate::common::{spawn_app, start_with, Backend, Node, TestApp, ADMIN};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const L: u64 = 40;
const CLIENTS: usize = 64;
/// Requests per client: 64 × 2 = 128 tries for 40 places.
const EACH: usize = 2;

crate::both! {
    in_process_counters_admit_exactly_l;
}

/// Waits out the last seconds of an hour, so a test's calls all fall in one hour.
async fn not_at_the_end_of_an_hour() {
    let into_hour = tenantd_core::now_secs().rem_euclid(3600);
    if into_hour > 3580 {
        tokio::time::sleep(std::time::Duration::from_secs((3601 - into_hour) as u64)).await;
    }
}

/// Creates plans `exact-minute` and `exact-hour` (api_calls L per window, hard) and a
/// tenant with a member key on each, through `url`; returns the two keys.
async fn exact_tenants(http: &reqwest::Client, url: &str) -> (String, String) {
    let mut keys = Vec::new();
    for w in ["minute", "hour"] {
        let plan = format!("exact-{w}");
        let ok = |r: reqwest::Response| {
            assert!(r.status().is_success(), "{}", r.status());
            r
        };
        ok(http
            .post(format!("{url}/v1/plans"))
            .bearer_auth(ADMIN)
            .json(&json!({"id": plan, "name": plan, "limits": [
                {"resource": "api_calls", "window": w, "limit": L, "enforcement": "hard"}]}))
            .send()
            .await
            .unwrap());
        let t = format!("t-{w}");
        ok(http
            .post(format!("{url}/v1/tenants"))
            .bearer_auth(ADMIN)
            .json(&json!({"id": t, "plan": plan, "owner_email": format!("o@{t}.test")}))
            .send()
            .await
            .unwrap());
        let k: serde_json::Value = ok(http
            .post(format!("{url}/v1/tenants/{t}/keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "load", "role": "member"}))
            .send()
            .await
            .unwrap())
        .json()
        .await
        .unwrap();
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    (keys.remove(0), keys.remove(0))
}

/// 64 clients, 2 requests each, spread over `urls`; returns how many were admitted. Every
/// other answer must be a 429.
async fn hammer(urls: &[String], key: &str) -> u64 {
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, urls, key) = (http.clone(), urls.to_vec(), key.to_string());
            tokio::spawn(async move {
                let mut admitted = 0;
                for j in 0..EACH {
                    let url = &urls[(c + j) % urls.len()];
                    let r = http.get(format!("{url}/v1/me")).bearer_auth(&key).send().await.unwrap();
                    match r.status().as_u16() {
                        200 => admitted += 1,
                        429 => {}
                        other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
                    }
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

async fn exact_on(urls: &[String]) {
    not_at_the_end_of_an_hour().await;
    let (minute, hour) = exact_tenants(&reqwest::Client::new(), &urls[0]).await;
    assert_eq!(hammer(urls, &minute).await, L, "per minute");
    assert_eq!(hammer(urls, &hour).await, L, "per hour");
}

async fn in_process_counters_admit_exactly_l(app: TestApp) {
    exact_on(std::slice::from_ref(&app.url)).await;
}

fn redis_toml(test: &str) -> Option<String> {
    let (url, prefix) = tenantd_store::testing::redis(test)?;
    Some(format!("redis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counters_on_one_node_admit_exactly_l() {
    let Some(toml) = redis_toml("Redis counters on one node") else {
        return;
    };
    let app = spawn_app(Backend::Sqlite, &toml).await.unwrap();
    exact_on(std::slice::from_ref(&app.url)).await;
    // The quota table reads the shared counters.
    let u = app.get("/v1/tenants/t-hour/usage", ADMIN).await.expect(200).body;
    let hour = u["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["window"] == "hour")
        .unwrap()
        .clone();
    assert_eq!((&hour["current"], &hour["remaining"]), (&json!(L), &json!(0)));
    let m = app.call("GET", "/metrics", None, None, &[]).await;
    let text = m.body.as_str().unwrap();
    assert!(text.contains("tenantd_redis_up 1"), "{text}");
    assert!(text.contains("tenantd_nodes 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_sharing_redis_admit_exactly_l() {
    let Some(toml) = redis_toml("three tenantd processes sharing Redis") else {
        return;
    };
    let Some(db) = tenantd_store::testing::fresh_postgres("three tenantd processes sharing Redis").await else {
        return;
    };
    // The first node creates the catalog; then the other two join it.
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    let mut nodes = vec![Node::spawn(&db, &toml, &dir, 0)];
    nodes[0].ready().await;
    nodes.push(Node::spawn(&db, &toml, &dir, 1));
    nodes.push(Node::spawn(&db, &toml, &dir, 2));
    for n in &nodes {
        n.ready().await;
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.1.clone()).collect();
    exact_on(&urls).await;
    let http = reqwest::Client::new();
    // Every node counts all three by its next heartbeat (one a second).
    for url in &urls {
        let mut m = String::new();
        for _ in 0..30 {
            m = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if m.contains("tenantd_nodes 3") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(m.contains("tenantd_nodes 3"), "{m}");
    }
}

/// A TCP forwarder to Redis that can be cut (dropping every connection and refusing new
/// ones) and restored: a real outage, without stopping the machine's Redis.
struct Forwarder {
    url: String,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(target: &str) -> Self {
        let hostport = target
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let target = hostport.clone();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Self { url, open, conns }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_follows_each_plans_policy_and_recovers_without_a_restart() {
    let Some((redis, prefix)) = tenantd_store::testing::redis("a Redis outage") else {
        return;
    };
    not_at_the_end_of_an_hour().await;
    let fwd = Forwarder::start(&redis).await;
    let toml = format!("redis_url = \"{}\"\nredis_prefix = \"{prefix}\"\n", fwd.url);
    let (db, dir) = tenantd_store::testing::fresh_sqlite();
    let app = start_with(db, dir, toml, axum::Router::new()).await;
    for (plan, limit, policy) in [("closed", 100, "fail_closed"), ("open", 10, "fail_open_local")] {
        app.post(
            "/v1/plans",
            ADMIN,
            json!({"id": plan, "name": plan, "counter_failure": policy, "limits": [
                {"resource": "api_calls", "window": "hour", "limit": limit, "enforcement": "hard"}]}),
        )
        .await
        .expect(201);
        app.tenant(plan, plan).await;
    }
    let (_, closed) = app.key("closed", "member").await;
    let (_, open) = app.key("open", "member").await;
    app.get("/v1/me", &closed).await.expect(200);
    app.get("/v1/me", &open).await.expect(200);

    fwd.cut();
    // fail_closed: 503, a problem naming the cause.
    let r = app.get("/v1/me", &closed).await.problem(503, "unavailable");
    assert!(r.body["detail"].as_str().unwrap().contains("fail_closed"), "{}", r.body);
    // fail_open_local: this node's share of what was left (10 − 1 seen, one node).
    let mut admitted = 0;
    for _ in 0..12 {
        match app.get("/v1/me", &open).await.status.as_u16() {
            200 => admitted += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(admitted, 9);
    let m = app.call("GET", "/metrics", None, None, &[]).await;
    let text = m.body.as_str().unwrap().to_string();
    assert!(text.contains("tenantd_redis_up 0"), "{text}");
    let fallbacks: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tenantd_counter_fallbacks_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(fallbacks >= 13, "{text}");

    fwd.restore();
    // Back without a restart (the heartbeat beats every second).
    let mut back = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if app.get("/v1/me", &closed).await.status == 200 {
            back = true;
            break;
        }
    }
    assert!(back, "Redis did not come back");
    // What the node admitted during the outage is in the shared counter now: 1 + 9.
    app.get("/v1/me", &open).await.problem(429, "quota_exceeded");
    let u = app.get("/v1/tenants/open/usage", ADMIN).await.expect(200).body;
    assert_eq!(u["quotas"][0]["current"], 10, "{u}");
}
