//! The queue's upkeep (metering, expired leases, idle lanes, old jobs), lanes rejoining
//! the rotation, jobs written in a caller's unit of work, and what holds under concurrent
//! claimers and across nodes.
#[macro_use]
mod common;
use common::*;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tenantd_core::{TenantId, Window};
use tenantd_jobs::*;
use tenantd_store::prelude::*;
use tenantd_store::{AuditFilter, PageRequest, SqlCatalog};

both_backends! {
    case_run_time_is_metered_once_in_whole_seconds => sqlite_run_time_is_metered_once_in_whole_seconds, postgres_run_time_is_metered_once_in_whole_seconds;
    case_an_expired_last_attempt_is_dead => sqlite_an_expired_last_attempt_is_dead, postgres_an_expired_last_attempt_is_dead;
    case_idle_lanes_go_and_come_back_at_the_floor => sqlite_idle_lanes_go_and_come_back_at_the_floor, postgres_idle_lanes_go_and_come_back_at_the_floor;
    case_a_resumed_tenant_rejoins_instead_of_jumping_ahead => sqlite_a_resumed_tenant_rejoins_instead_of_jumping_ahead, postgres_a_resumed_tenant_rejoins_instead_of_jumping_ahead;
    case_jobs_in_a_unit_of_work_commit_with_it => sqlite_jobs_in_a_unit_of_work_commit_with_it, postgres_jobs_in_a_unit_of_work_commit_with_it;
    case_finished_jobs_are_deleted_after_a_week => sqlite_finished_jobs_are_deleted_after_a_week, postgres_finished_jobs_are_deleted_after_a_week;
    case_live_runs_are_told_from_interrupted_ones => sqlite_live_runs_are_told_from_interrupted_ones, postgres_live_runs_are_told_from_interrupted_ones;
}

/// The tenant's `job_seconds` counter of `window` at `now` (Unix ms).
async fn job_seconds(c: &SqlCatalog, t: &TenantId, window: Window, now: i64) -> u64 {
    let (start, end) = window.period(now / 1000).unwrap();
    c.counters_in(t, window, start, end)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.resource == JOB_SECONDS)
        .map(|r| r.value)
        .sum()
}

/// Claims one job of `queue` and reports how it went after `ran` ms.
async fn run_one(jobs: &Jobs, queue: &str, now: i64, ran: i64, ok: bool) -> String {
    let got = jobs.claim(&q(&[queue]), None, "w", 1, LEASE, now).await.unwrap();
    let c = &got[0];
    if ok {
        jobs.complete(&c.job_id, Holder::Lease(&c.lease), None, now + ran)
            .await
            .unwrap();
    } else {
        jobs.fail(&c.job_id, Holder::Lease(&c.lease), "boom", Some(0), now + ran)
            .await
            .unwrap();
    }
    c.job_id.clone()
}

/// 2.5 s then 0.7 s then a failed 0.9 s run: 4.1 s of run time is 4 job seconds, the
/// last 100 ms waiting for more; a second meter adds nothing; tenantd's own jobs are not
/// metered.
async fn case_run_time_is_metered_once_in_whole_seconds(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("metered");
    for n in 0..3 {
        jobs.enqueue(&NewJob::new(t, "render", serde_json::json!({"n": n})), T0)
            .await
            .unwrap();
    }
    jobs.enqueue(
        &NewJob::new(Jobs::platform(), "tenantd.move", serde_json::json!({})),
        T0,
    )
    .await
    .unwrap();
    run_one(&jobs, "render", T0, 2_500, true).await;
    assert_eq!(jobs.meter(T0 + 3_000).await.unwrap(), 2);
    run_one(&jobs, "render", T0 + 3_000, 700, true).await;
    run_one(&jobs, "render", T0 + 4_000, 900, false).await;
    run_one(&jobs, "tenantd.move", T0 + 5_000, 20_000, true).await;
    assert_eq!(jobs.meter(T0 + 70_000).await.unwrap(), 2, "0.5 + 0.7 + 0.9 s");
    assert_eq!(jobs.meter(T0 + 70_000).await.unwrap(), 0, "metered once");
    for w in [Window::Day, Window::Month] {
        assert_eq!(job_seconds(c, &t, w, T0).await, 4, "{w:?}");
        assert_eq!(job_seconds(c, &Jobs::platform(), w, T0).await, 0, "{w:?}");
    }
}

/// A job whose lease runs out on its last attempt is dead, with its `job.dead` event; one
/// with attempts left runs again at once.
async fn case_an_expired_last_attempt_is_dead(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("crashy");
    let mut once = NewJob::new(t, "work", serde_json::json!({"once": true}));
    once.max_attempts = 1;
    let (dies, _) = jobs.enqueue(&once, T0).await.unwrap();
    let (again, _) = jobs
        .enqueue(&NewJob::new(t, "work", serde_json::json!({})), T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        jobs.claim(&q(&["work"]), None, "w", 2, 1_000, T0 + 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(jobs.reap(T0 + 1_001).await.unwrap(), 0, "the leases still run");
    assert_eq!(jobs.reap(T0 + 1_002).await.unwrap(), 2);
    let dead = jobs.get(&t, &dies.id, T0 + 1_003).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.run_ms, 1_000, "run time counts up to the lease's end");
    let retried = jobs.get(&t, &again.id, T0 + 1_003).await.unwrap();
    assert_eq!((retried.state, retried.attempt), (JobState::Failed, 1));
    let trail = c
        .list_audit(
            &AuditFilter {
                tenant_id: Some("crashy".into()),
                action: Some("job.dead".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(trail.items.len(), 1);
    assert_eq!(trail.items[0].data["job_id"], dies.id.as_str());
    let next = jobs
        .claim(&q(&["work"]), None, "w", 5, LEASE, T0 + 1_003)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(),
        [again.id.as_str()]
    );
    assert_eq!(next[0].attempt, 2);
}

/// A lane with no waiting job is dropped by the upkeep; when its tenant enqueues again it
/// comes back at the lowest pass of the queue's lanes, so it banked nothing while idle and
/// owes nothing for what it ran before.
async fn case_idle_lanes_go_and_come_back_at_the_floor(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let (busy, idle) = (tid("busy"), tid("idle"));
    let batch = |t: TenantId, n: usize| -> Vec<NewJob> {
        (0..n)
            .map(|i| NewJob::new(t, "work", serde_json::json!({"i": i})))
            .collect()
    };
    jobs.enqueue_many(&batch(idle, 3), T0).await.unwrap();
    jobs.enqueue_many(&batch(busy, 100), T0).await.unwrap();
    let mut now = T0;
    // idle's three go early, then busy runs alone for a while.
    for _ in 0..40 {
        run_one(&jobs, "work", now, 1, true).await;
        now += 2;
    }
    assert_eq!(jobs.drop_idle_lanes().await.unwrap(), 1, "idle's lane");
    assert_eq!(jobs.drop_idle_lanes().await.unwrap(), 0);
    jobs.enqueue_many(&batch(idle, 4), now).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..8 {
        let got = jobs.claim(&q(&["work"]), None, "w", 1, LEASE, now).await.unwrap();
        jobs.complete(&got[0].job_id, Holder::Lease(&got[0].lease), None, now)
            .await
            .unwrap();
        order.push(got[0].tenant_id.to_string());
    }
    let of_idle = order.iter().filter(|t| *t == "idle").count();
    assert_eq!(
        of_idle, 4,
        "alternating from the floor, not ahead and not behind: {order:?}"
    );
    assert!(order.windows(2).all(|w| w[0] != w[1]), "{order:?}");
}

/// A suspended tenant's lane stays at the pass it had; resumed and rejoined, it takes turns
/// with the others instead of running all its backlog first.
async fn case_a_resumed_tenant_rejoins_instead_of_jumping_ahead(c: &SqlCatalog) {
    use tenantd_core::tenant::Transition;
    let jobs = Jobs::new(c.clone());
    let (paused, other) = (tid("paused"), tid("other"));
    let mut w = c.begin().await.unwrap();
    for t in [paused, other] {
        c.create_tenant(
            &mut w,
            &tenantd_store::NewTenant {
                id: t,
                name: t.to_string(),
                plan: tenantd_core::PlanId::parse("free").unwrap(),
                owner_email: tenantd_core::Email::parse("o@x.example").unwrap(),
                settings: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    }
    c.transition_tenant(&mut w, &paused, Transition::Suspend, Some("unpaid"))
        .await
        .unwrap();
    w.commit().await.unwrap();
    for t in [paused, other] {
        let many: Vec<NewJob> = (0..60)
            .map(|i| NewJob::new(t, "work", serde_json::json!({"i": i})))
            .collect();
        jobs.enqueue_many(&many, T0).await.unwrap();
    }
    for _ in 0..30 {
        run_one(&jobs, "work", T0, 1, true).await;
    }
    let mut w = c.begin().await.unwrap();
    c.transition_tenant(&mut w, &paused, Transition::Resume, None)
        .await
        .unwrap();
    jobs.rejoin_in(&mut w, &paused).await.unwrap();
    w.commit().await.unwrap();
    let mut of_paused = 0;
    for _ in 0..20 {
        let got = jobs.claim(&q(&["work"]), None, "w", 1, LEASE, T0).await.unwrap();
        of_paused += usize::from(got[0].tenant_id == paused);
        jobs.complete(&got[0].job_id, Holder::Lease(&got[0].lease), None, T0)
            .await
            .unwrap();
    }
    assert!((9..=11).contains(&of_paused), "{of_paused} of 20 claims");
}

/// A job enqueued in a unit of work that rolls back was never there; committed, it is.
async fn case_jobs_in_a_unit_of_work_commit_with_it(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("uow");
    let mut w = c.begin().await.unwrap();
    jobs.enqueue_in(&mut w, &NewJob::new(t, "work", serde_json::json!({"n": 1})), T0)
        .await
        .unwrap();
    drop(w);
    assert!(jobs.list(&t, None, None, 10, None, T0).await.unwrap().is_empty());
    let mut w = c.begin().await.unwrap();
    let (job, _) = jobs
        .enqueue_in(&mut w, &NewJob::new(t, "work", serde_json::json!({"n": 2})), T0)
        .await
        .unwrap();
    w.commit().await.unwrap();
    jobs.enqueued();
    let got = jobs.claim(&q(&["work"]), None, "w", 5, LEASE, T0).await.unwrap();
    assert_eq!(
        got.iter().map(|g| g.job_id.as_str()).collect::<Vec<_>>(),
        [job.id.as_str()]
    );
}

/// Finished jobs are deleted a week after they finished, once metered; others stay.
async fn case_finished_jobs_are_deleted_after_a_week(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("old");
    for n in 0..3 {
        jobs.enqueue(&NewJob::new(t, "work", serde_json::json!({"n": n})), T0)
            .await
            .unwrap();
    }
    let done = run_one(&jobs, "work", T0, 1_500, true).await;
    assert_eq!(
        jobs.delete_finished(T0 + KEEP_FINISHED_MS).await.unwrap(),
        0,
        "a week not passed"
    );
    assert_eq!(
        jobs.delete_finished(T0 + KEEP_FINISHED_MS + 10_000).await.unwrap(),
        0,
        "not metered yet"
    );
    jobs.meter(T0 + 2_000).await.unwrap();
    assert_eq!(jobs.delete_finished(T0 + KEEP_FINISHED_MS + 10_000).await.unwrap(), 1);
    assert!(matches!(jobs.get(&t, &done, T0).await, Err(JobError::NotFound)));
    assert_eq!(jobs.list(&t, None, None, 10, None, T0).await.unwrap().len(), 2);
}

/// A running job with a live lease is found by its key's prefix, not the asker itself nor
/// one whose lease ran out; a crashed holder's jobs are freed by its name.
async fn case_live_runs_are_told_from_interrupted_ones(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let p = Jobs::platform();
    for n in 0..2 {
        let mut j = NewJob::new(p, "tenantd.move", serde_json::json!({"n": n}));
        j.idempotency_key = Some(format!("move:acme:{n}"));
        jobs.enqueue(&j, T0).await.unwrap();
    }
    let got = jobs
        .claim(&q(&["tenantd.move"]), Some(&p), "node-a", 1, 10_000, T0)
        .await
        .unwrap();
    let mine = &got[0].job_id;
    assert!(
        !jobs
            .running_with_key(&p, "tenantd.move", "move:acme:", mine, T0 + 1)
            .await
            .unwrap(),
        "only itself"
    );
    assert!(jobs
        .running_with_key(&p, "tenantd.move", "move:acme:", "job_other", T0 + 1)
        .await
        .unwrap());
    assert!(!jobs
        .running_with_key(&p, "tenantd.move", "move:beta:", "job_other", T0 + 1)
        .await
        .unwrap());
    assert!(
        !jobs
            .running_with_key(&p, "tenantd.move", "move:acme:", "job_other", T0 + 10_000)
            .await
            .unwrap(),
        "its lease ran out"
    );
    assert_eq!(jobs.release_claims_of("node-b", T0 + 2).await.unwrap(), 0);
    assert_eq!(jobs.release_claims_of("node-a", T0 + 2).await.unwrap(), 1);
    let again = jobs
        .claim(&q(&["tenantd.move"]), Some(&p), "node-a", 2, 10_000, T0 + 3)
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "the freed job and the other");
}

/// 8 claimers over 2 nodes, a tenant capped at 3 beside an uncapped one: the capped
/// tenant never has more than 3 jobs running, by the workers' count and the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_cap_holds_under_concurrent_claimers() {
    let Some((c, url)) = postgres("postgres_a_cap_holds_under_concurrent_claimers").await else {
        return;
    };
    let other = SqlCatalog::connect(&url).await.unwrap();
    let jobs = Jobs::new(c.clone());
    let (capped, free) = (tid("capped"), tid("free"));
    jobs.set_policy(
        &capped,
        Policy {
            max_running: Some(3),
            ..Policy::default()
        },
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    for t in [capped, free] {
        all.extend((0..300).map(|i| NewJob::new(t, "work", serde_json::json!({"i": i}))));
    }
    jobs.enqueue_many(&all, T0).await.unwrap();
    let holding = Arc::new(AtomicI64::new(0));
    let most = Arc::new(AtomicI64::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let node = Jobs::new(if w % 2 == 0 { c.clone() } else { other.clone() });
        let (holding, most, pool) = (holding.clone(), most.clone(), c.pool().clone());
        workers.push(tokio::spawn(async move {
            let mut ran = 0;
            loop {
                let got = node.claim(&q(&["work"]), None, "w", 1, 600_000, T0).await.unwrap();
                let Some(g) = got.into_iter().next() else { return ran };
                if g.tenant_id == capped {
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let in_db: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM jobs WHERE tenant_id = 'capped' AND state = 'running'",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    assert!(in_db <= 3, "{in_db} of capped's jobs running");
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                }
                node.complete(&g.job_id, Holder::Lease(&g.lease), None, T0)
                    .await
                    .unwrap();
                ran += 1;
            }
        }));
    }
    let mut ran = 0;
    for w in workers {
        ran += w.await.unwrap();
    }
    assert_eq!(ran, 600, "every job ran");
    let most = most.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "at most 3 of capped's at once: {most}");
    other.pool().close().await;
    drop_postgres(c, &url).await;
}

/// Enqueues on one node wake the claims waiting on another (PostgreSQL's LISTEN/NOTIFY):
/// a claim waiting 20 s on node B answers with node A's job. Without the notification it
/// would also find it at its next look (once a second), so the test counts what node B
/// heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_enqueues_wake_waiting_claims_on_other_nodes() {
    let Some((c, url)) = postgres("postgres_enqueues_wake_waiting_claims_on_other_nodes").await else {
        return;
    };
    let b_catalog = SqlCatalog::connect(&url).await.unwrap();
    let (a, b) = (Jobs::new(c.clone()), Jobs::new(b_catalog.clone()));
    a.listen().await.unwrap();
    b.listen().await.unwrap();
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            let queues = q(&["late"]);
            let req = ClaimRequest {
                queues: &queues,
                tenant: None,
                claimer: "w",
                max: 1,
                lease_ms: LEASE,
            };
            b.claim_waiting(&req, std::time::Duration::from_secs(20), || T0)
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let heard = b.heard();
    let (job, _) = a
        .enqueue(&NewJob::new(tid("acme"), "late", serde_json::json!({})), T0)
        .await
        .unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got[0].job_id, job.id);
    for _ in 0..100 {
        if b.heard() > heard {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(b.heard() > heard, "node B heard node A's enqueue");
    b_catalog.pool().close().await;
    drop_postgres(c, &url).await;
}

both_backends! {
    case_a_waiting_job_without_a_lane_gets_it_back => sqlite_a_waiting_job_without_a_lane_gets_it_back, postgres_a_waiting_job_without_a_lane_gets_it_back;
}

/// A waiting job whose lane is gone (an enqueue that raced the upkeep's drop of its lane)
/// is not claimable until the upkeep brings the lane back, at the queue's lowest pass.
async fn case_a_waiting_job_without_a_lane_gets_it_back(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let (lost, other) = (tid("lost"), tid("other"));
    let (job, _) = jobs
        .enqueue(&NewJob::new(lost, "work", serde_json::json!({})), T0)
        .await
        .unwrap();
    jobs.enqueue(&NewJob::new(other, "busy", serde_json::json!({})), T0)
        .await
        .unwrap();
    sqlx::query("DELETE FROM job_lanes WHERE tenant_id = 'lost'")
        .execute(c.pool())
        .await
        .unwrap();
    assert!(jobs
        .claim(&q(&["work"]), None, "w", 1, LEASE, T0)
        .await
        .unwrap()
        .is_empty());
    let kept = jobs.upkeep(T0).await.unwrap();
    assert_eq!((kept.lanes_restored, kept.lanes_dropped), (1, 0), "{kept:?}");
    let got = jobs.claim(&q(&["work"]), None, "w", 1, LEASE, T0).await.unwrap();
    assert_eq!(got[0].job_id, job.id);
    assert_eq!(jobs.restore_lanes().await.unwrap(), 0);
}
