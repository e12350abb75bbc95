//! Jobs per second on PostgreSQL: tenantd-jobs against a minimal straight-sqlx
//! `FOR UPDATE SKIP LOCKED` queue (the floor any job system on PostgreSQL pays), in the
//! same run, rounds alternating. Each round enqueues `JOBS` jobs one per statement from
//! `WORKERS` tasks, then `WORKERS` workers claim one job at a time and complete it until
//! the queue is empty. The crate spreads its jobs over `TENANTS` tenants, so it does its
//! fairness (and checks caps and holds) on every claim.
//!
//! `cargo bench -p tenantd-jobs --bench throughput` with `TENANTD_TEST_DATABASE_URL` set
//! (a role that may create databases). `JOBS`, `WORKERS`, `TENANTS`, `ROUNDS` override
//! the defaults (10,000, 8, 10, 3).
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (jobs_n, workers, tenants, rounds) = (
        env("JOBS", 10_000),
        env("WORKERS", 8),
        env("TENANTS", 10),
        env("ROUNDS", 3),
    );
    let Some(url) = tenantd_store::testing::fresh_postgres("the jobs throughput bench").await else {
        return;
    };
    let straight = Arc::new(Straight::new(&url, 16).await);
    let catalog = SqlCatalog::connect(&url).await.unwrap();
    catalog.migrate().await.unwrap();
    let queue = Arc::new(Jobs::new(catalog));
    let ids: Arc<Vec<TenantId>> = Arc::new(
        (0..tenants)
            .map(|i| TenantId::parse(&format!("bench{i}")).unwrap())
            .collect(),
    );
    let payload = r#"{"task":"resize","image":"img_0123456789"}"#;
    let queues = Arc::new(vec!["work".to_string()]);
    let (mut s_enq, mut s_run, mut c_enq, mut c_run) = (vec![], vec![], vec![], vec![]);
    println!("{jobs_n} jobs, {workers} enqueuers then {workers} workers, {tenants} tenants (crate), {rounds} rounds");
    for round in 1..=rounds {
        let s = straight.clone();
        let e = spread(jobs_n, workers, move |_| {
            let s = s.clone();
            async move {
                s.enqueue(payload, now()).await;
                true
            }
        })
        .await;
        let s = straight.clone();
        let r = spread(usize::MAX, workers, move |_| {
            let s = s.clone();
            async move {
                match s.claim(now()).await {
                    Some((id, _)) => {
                        s.complete(id).await;
                        true
                    }
                    None => false,
                }
            }
        })
        .await;
        s_enq.push(jobs_n as f64 / e);
        s_run.push(jobs_n as f64 / r);

        let (q, t) = (queue.clone(), ids.clone());
        let e = spread(jobs_n, workers, move |i| {
            let (q, t) = (q.clone(), t.clone());
            async move {
                let job = NewJob::new(t[i % t.len()], "work", serde_json::from_str(payload).unwrap());
                q.enqueue(&job, now()).await.unwrap();
                true
            }
        })
        .await;
        let (q, qs) = (queue.clone(), queues.clone());
        let r = spread(usize::MAX, workers, move |_| {
            let (q, qs) = (q.clone(), qs.clone());
            async move {
                let got = q.claim(&qs, None, "bench", 1, 30_000, now()).await.unwrap();
                let Some(c) = got.into_iter().next() else { return false };
                q.complete(&c.job_id, Holder::Lease(&c.lease), None, now())
                    .await
                    .unwrap();
                true
            }
        })
        .await;
        c_enq.push(jobs_n as f64 / e);
        c_run.push(jobs_n as f64 / r);
        println!(
            "round {round}: enqueue straight {:.0}/s crate {:.0}/s; claim+complete straight {:.0}/s crate {:.0}/s",
            s_enq[round - 1],
            c_enq[round - 1],
            s_run[round - 1],
            c_run[round - 1]
        );
    }
    let (se, sr, ce, cr) = (median(s_enq), median(s_run), median(c_enq), median(c_run));
    println!(
        "median enqueue:         straight {se:.0}/s, crate {ce:.0}/s, ratio {:.2}",
        ce / se
    );
    println!(
        "median claim+complete:  straight {sr:.0}/s, crate {cr:.0}/s, ratio {:.2}",
        cr / sr
    );
}
