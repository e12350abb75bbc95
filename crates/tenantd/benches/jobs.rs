//! Jobs per second on PostgreSQL, three ways in the same run, rounds alternating: a minimal
//! straight-sqlx `FOR UPDATE SKIP LOCKED` queue (the floor any job system on PostgreSQL
//! pays), the `tenantd-jobs` crate, and tenantd's HTTP API (a server in this process).
//! Each round enqueues `JOBS` jobs one at a time from `WORKERS` tasks, then `WORKERS`
//! workers claim one job at a time and complete it until the queue is empty. The crate and
//! the API spread their jobs over `TENANTS` tenants, so every claim does the fairness and
//! checks holds and caps; the API's workers hold the operator key.
//!
//! `cargo bench -p tenantd --bench jobs` with `TENANTD_TEST_DATABASE_URL` set (a role that
//! may create databases). `JOBS`, `WORKERS`, `TENANTS`, `ROUNDS` override the defaults
//! (10,000, 8, 10, 3). docs/performance.md has the figures.
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tenantd::config::{Config, FileConfig, ServeArgs};
use tenantd_core::TenantId;
use tenantd_jobs::{Holder, Jobs, NewJob};
use tenantd_store::prelude::*;
use tenantd_store::SqlCatalog;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The straight queue: one table, one statement per step.
struct Straight(PgPool);

impl Straight {
    async fn new(url: &str, pool: u32) -> Self {
        let p = PgPoolOptions::new().max_connections(pool).connect(url).await.unwrap();
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS straight_jobs (id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL, \
             state TEXT NOT NULL, lease_expires_at BIGINT, created_at BIGINT NOT NULL)",
        )
        .execute(&p)
        .await
        .unwrap();
        sqlx::query("CREATE INDEX IF NOT EXISTS straight_ready ON straight_jobs(queue, id) WHERE state = 'queued'")
            .execute(&p)
            .await
            .unwrap();
        Straight(p)
    }

    async fn enqueue(&self, payload: &str, now: i64) {
        sqlx::query("INSERT INTO straight_jobs (queue, payload, state, created_at) VALUES ('work', $1, 'queued', $2)")
            .bind(payload)
            .bind(now)
            .execute(&self.0)
            .await
            .unwrap();
    }

    async fn claim(&self, now: i64) -> Option<(i64, String)> {
        sqlx::query_as(
            "UPDATE straight_jobs SET state = 'running', lease_expires_at = $1 WHERE id = \
             (SELECT id FROM straight_jobs WHERE state = 'queued' AND queue = 'work' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, payload",
        )
        .bind(now + 30_000)
        .fetch_optional(&self.0)
        .await
        .unwrap()
    }

    async fn complete(&self, id: i64) {
        sqlx::query("UPDATE straight_jobs SET state = 'succeeded' WHERE id = $1")
            .bind(id)
            .execute(&self.0)
            .await
            .unwrap();
    }
}

/// Runs `n` calls of `step(i)` from `tasks` tasks; the seconds it took.
async fn spread<F, Fut>(n: usize, tasks: usize, step: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let step = Arc::new(step);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (step, next) = (step.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || !step(i).await {
                        return;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The operator key of the bench's server.
const ADMIN: &str = "bench-operator-key-0123456789";

/// Starts tenantd on `url` (PostgreSQL) in this process; its address.
async fn server(url: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tenantd-jobs-bench-{}", std::process::id()));
    let args = ServeArgs {
        database_url: Some(url.into()),
        data_dir: Some(dir),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let cfg = Config::merge(&args, FileConfig::default(), Some(ADMIN.into())).expect("config");
    let listener = tenantd::startup::bind(&cfg.listen).await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let state = tenantd::startup::prepare(cfg).await.expect("start");
    let app = tenantd::routes::router_with(state.clone(), axum::Router::new());
    tokio::spawn(async move {
        tenantd::serve::serve_app(state, app, listener, std::future::pending())
            .await
            .expect("serve");
    });
    addr
}

/// `POST`s `body` to `path` as `token`; the answer's JSON (`Null` when empty).
async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(serde_json::Value::Null)
}

/// One way of queueing: the seconds to enqueue `n` jobs, then to claim and complete them.
async fn round<E, EF, C, CF>(n: usize, tasks: usize, enqueue: E, work: C) -> (f64, f64)
where
    E: Fn(usize) -> EF + Send + Sync + 'static,
    EF: std::future::Future<Output = bool> + Send,
    C: Fn(usize) -> CF + Send + Sync + 'static,
    CF: std::future::Future<Output = bool> + Send,
{
    let e = spread(n, tasks, enqueue).await;
    let w = spread(usize::MAX, tasks, work).await;
    (n as f64 / e, n as f64 / w)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (jobs_n, workers, tenants, rounds) = (
        env("JOBS", 10_000),
        env("WORKERS", 8),
        env("TENANTS", 10),
        env("ROUNDS", 3),
    );
    // Three databases, so no way of queueing sees another's rows.
    let (Some(s_url), Some(c_url), Some(h_url)) = (
        tenantd_store::testing::fresh_postgres("the jobs bench (straight)").await,
        tenantd_store::testing::fresh_postgres("the jobs bench (crate)").await,
        tenantd_store::testing::fresh_postgres("the jobs bench (HTTP)").await,
    ) else {
        return;
    };
    let straight = Arc::new(Straight::new(&s_url, 16).await);
    let catalog = SqlCatalog::connect(&c_url).await.unwrap();
    catalog.migrate().await.unwrap();
    let queue = Arc::new(Jobs::new(catalog));
    let ids: Arc<Vec<TenantId>> = Arc::new(
        (0..tenants)
            .map(|i| TenantId::parse(&format!("bench{i}")).unwrap())
            .collect(),
    );
    let base = Arc::new(server(&h_url).await);
    let http = reqwest::Client::new();
    let mut keys = Vec::new();
    for t in ids.iter() {
        post(
            &http,
            &base,
            "/v1/tenants",
            ADMIN,
            serde_json::json!({"id": t.as_str(), "plan": "enterprise", "owner_email": format!("o@{t}.test")}),
        )
        .await;
        let k = post(
            &http,
            &base,
            &format!("/v1/tenants/{t}/keys"),
            ADMIN,
            serde_json::json!({"name": "bench", "role": "admin"}),
        )
        .await;
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    let keys = Arc::new(keys);
    let payload = r#"{"task":"resize","image":"img_0123456789"}"#;
    let queues = Arc::new(vec!["work".to_string()]);
    let mut figures: [Vec<(f64, f64)>; 3] = Default::default();
    println!("{jobs_n} jobs, {workers} enqueuers then {workers} workers, {tenants} tenants (crate and HTTP), {rounds} rounds");
    for n in 1..=rounds {
        let (s1, s2) = (straight.clone(), straight.clone());
        figures[0].push(
            round(
                jobs_n,
                workers,
                move |_| {
                    let s = s1.clone();
                    async move {
                        s.enqueue(payload, now()).await;
                        true
                    }
                },
                move |_| {
                    let s = s2.clone();
                    async move {
                        let Some((id, _)) = s.claim(now()).await else {
                            return false;
                        };
                        s.complete(id).await;
                        true
                    }
                },
            )
            .await,
        );
        let (q1, q2, t, qs) = (queue.clone(), queue.clone(), ids.clone(), queues.clone());
        figures[1].push(
            round(
                jobs_n,
                workers,
                move |i| {
                    let (q, t) = (q1.clone(), t.clone());
                    async move {
                        let job = NewJob::new(t[i % t.len()], "work", serde_json::from_str(payload).unwrap());
                        q.enqueue(&job, now()).await.unwrap();
                        true
                    }
                },
                move |_| {
                    let (q, qs) = (q2.clone(), qs.clone());
                    async move {
                        let got = q.claim(&qs, None, "bench", 1, 30_000, now()).await.unwrap();
                        let Some(c) = got.into_iter().next() else { return false };
                        q.complete(&c.job_id, Holder::Lease(&c.lease), None, now())
                            .await
                            .unwrap();
                        true
                    }
                },
            )
            .await,
        );
        let (h1, h2, b1, b2, k) = (http.clone(), http.clone(), base.clone(), base.clone(), keys.clone());
        figures[2].push(
            round(
                jobs_n,
                workers,
                move |i| {
                    let (h, b, k) = (h1.clone(), b1.clone(), k.clone());
                    async move {
                        let body = serde_json::json!({"queue": "work", "payload": serde_json::from_str::<serde_json::Value>(payload).unwrap()});
                        post(&h, &b, "/v1/jobs", &k[i % k.len()], body).await;
                        true
                    }
                },
                move |_| {
                    let (h, b) = (h2.clone(), b2.clone());
                    async move {
                        let got = post(&h, &b, "/v1/jobs/claim", ADMIN, serde_json::json!({"queues": ["work"]})).await;
                        let Some(id) = got["jobs"][0]["job_id"].as_str() else { return false };
                        post(&h, &b, &format!("/v1/jobs/{id}/complete"), ADMIN, serde_json::json!({})).await;
                        true
                    }
                },
            )
            .await,
        );
        let last = |i: usize| figures[i][n - 1];
        println!(
            "round {n}: enqueue straight {:.0}/s crate {:.0}/s HTTP {:.0}/s; claim+complete straight {:.0}/s crate {:.0}/s HTTP {:.0}/s",
            last(0).0,
            last(1).0,
            last(2).0,
            last(0).1,
            last(1).1,
            last(2).1
        );
    }
    let med = |i: usize, enqueue: bool| median(figures[i].iter().map(|f| if enqueue { f.0 } else { f.1 }).collect());
    for (what, enqueue) in [("enqueue", true), ("claim+complete", false)] {
        let (s, c, h) = (med(0, enqueue), med(1, enqueue), med(2, enqueue));
        println!(
            "median {what:<15} straight {s:.0}/s, crate {c:.0}/s ({:.2}x), HTTP {h:.0}/s ({:.2}x)",
            c / s,
            h / s
        );
    }
}
