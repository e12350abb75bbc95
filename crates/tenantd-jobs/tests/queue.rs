//! The queue's behaviour, one suite run against both backends (see `common`).
#[macro_use]
mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use tenantd_core::TenantId;
use tenantd_jobs::*;
use tenantd_store::prelude::*;
use tenantd_store::{AuditFilter, PageRequest, SqlCatalog};

both_backends! {
    case_state_machine => sqlite_state_machine, postgres_state_machine;
    case_dead_after_max_attempts => sqlite_dead_after_max_attempts, postgres_dead_after_max_attempts;
    case_expired_lease_is_claimed_again => sqlite_expired_lease_is_claimed_again, postgres_expired_lease_is_claimed_again;
    case_running_cap => sqlite_running_cap, postgres_running_cap;
    case_fair_between_tenants => sqlite_fair_between_tenants, postgres_fair_between_tenants;
    case_weights_share_claims => sqlite_weights_share_claims, postgres_weights_share_claims;
    case_tenant_worker_sees_only_its_tenant => sqlite_tenant_worker_sees_only_its_tenant, postgres_tenant_worker_sees_only_its_tenant;
}

async fn case_state_machine(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("acme");
    // Idempotency: the same key answers the first job.
    let mut new = NewJob::new(t, "mail", serde_json::json!({"to": "a@b.example"}));
    new.idempotency_key = Some("k1".into());
    let (first, created) = jobs.enqueue(&new, T0).await.unwrap();
    assert!(created);
    assert_eq!(first.state, JobState::Queued);
    let (again, created) = jobs.enqueue(&new, T0 + 5).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    // Scheduled: not claimable before run_at.
    let mut later = NewJob::new(t, "mail", serde_json::json!({"n": 2}));
    later.run_at = Some(T0 + 60_000);
    let (sched, _) = jobs.enqueue(&later, T0).await.unwrap();
    assert_eq!(sched.state, JobState::Scheduled);
    // Claim: the ready one only.
    let got = jobs
        .claim(&q(&["mail"]), None, "worker", 10, LEASE, T0 + 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].job_id.as_str(), got[0].attempt), (first.id.as_str(), 1));
    assert_eq!(jobs.get(&t, &first.id, T0 + 10).await.unwrap().state, JobState::Running);
    // A wrong lease holds nothing.
    assert!(matches!(
        jobs.complete(&first.id, Holder::Lease("lease_forged"), None, T0 + 20)
            .await,
        Err(JobError::NotHeld(_))
    ));
    // Fail with a retry: failed, runs again at the time asked for.
    let (f, _) = jobs
        .fail(
            &first.id,
            Holder::Lease(&got[0].lease),
            "smtp down",
            Some(1_000),
            T0 + 20,
        )
        .await
        .unwrap();
    assert_eq!(f, Failed::Retry(T0 + 1_020));
    let j = jobs.get(&t, &first.id, T0 + 20).await.unwrap();
    assert_eq!(
        (j.state, j.last_error.as_deref()),
        (JobState::Failed, Some("smtp down"))
    );
    assert!(
        jobs.claim(&q(&["mail"]), None, "worker", 10, LEASE, T0 + 500)
            .await
            .unwrap()
            .is_empty(),
        "not before its retry"
    );
    let got = jobs
        .claim(&q(&["mail"]), None, "worker", 10, LEASE, T0 + 1_020)
        .await
        .unwrap();
    assert_eq!((got.len(), got[0].attempt), (1, 2));
    // Heartbeat extends; complete stores the result and the run time.
    assert_eq!(
        jobs.heartbeat(&first.id, Holder::Lease(&got[0].lease), LEASE, None, T0 + 2_000)
            .await
            .unwrap(),
        T0 + 2_000 + LEASE
    );
    jobs.complete(
        &first.id,
        Holder::Lease(&got[0].lease),
        Some(&serde_json::json!({"sent": true})),
        T0 + 3_020,
    )
    .await
    .unwrap();
    let j = jobs.get(&t, &first.id, T0 + 4_000).await.unwrap();
    assert_eq!(
        (j.state, j.result.clone()),
        (JobState::Succeeded, Some(serde_json::json!({"sent": true})))
    );
    assert_eq!(
        j.run_ms,
        10 + 2_000,
        "10 ms for the failed run, 2 s for the one that succeeded"
    );
    assert!(matches!(
        jobs.complete(&first.id, Holder::Lease(&got[0].lease), None, T0 + 4_000)
            .await,
        Err(JobError::NotHeld(_))
    ));
    // Cancel: the scheduled one; a finished one cannot be.
    assert_eq!(
        jobs.cancel(&t, &sched.id, T0 + 5_000).await.unwrap().state,
        JobState::Cancelled
    );
    assert!(matches!(
        jobs.cancel(&t, &first.id, T0 + 5_000).await,
        Err(JobError::Conflict(_))
    ));
    assert!(jobs
        .claim(&q(&["mail"]), None, "worker", 10, LEASE, T0 + 100_000)
        .await
        .unwrap()
        .is_empty());
    // Another tenant's id is no job.
    assert!(matches!(
        jobs.get(&tid("other"), &first.id, T0).await,
        Err(JobError::NotFound)
    ));
    assert!(matches!(
        jobs.cancel(&tid("other"), &first.id, T0).await,
        Err(JobError::NotFound)
    ));
}

async fn case_dead_after_max_attempts(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("dies");
    let mut new = NewJob::new(t, "work", serde_json::json!({}));
    new.max_attempts = 2;
    let (job, _) = jobs.enqueue(&new, T0).await.unwrap();
    let mut now = T0;
    for attempt in 1..=2 {
        let got = jobs.claim(&q(&["work"]), None, "worker", 1, LEASE, now).await.unwrap();
        assert_eq!(got[0].attempt, attempt);
        let (f, _) = jobs
            .fail(&job.id, Holder::Lease(&got[0].lease), "boom", None, now + 10)
            .await
            .unwrap();
        match f {
            Failed::Retry(at) => {
                assert_eq!(attempt, 1);
                assert!(
                    (now + 10 + 4_000..=now + 10 + 6_000).contains(&at),
                    "backoff of the first attempt: {}",
                    at - now
                );
                now = at;
            }
            Failed::Dead => assert_eq!(attempt, 2),
        }
    }
    assert_eq!(jobs.get(&t, &job.id, now).await.unwrap().state, JobState::Dead);
    let trail = c
        .list_audit(
            &AuditFilter {
                tenant_id: Some("dies".into()),
                action: Some("job.dead".into()),
                ..Default::default()
            },
            &PageRequest { limit: 10, after: None },
        )
        .await
        .unwrap();
    assert_eq!(trail.items.len(), 1, "one job.dead event");
    assert_eq!(trail.items[0].data["job_id"], job.id.as_str());
    assert!(jobs
        .claim(&q(&["work"]), None, "worker", 1, LEASE, now + 10_000_000)
        .await
        .unwrap()
        .is_empty());
}

async fn case_expired_lease_is_claimed_again(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("slow");
    let (job, _) = jobs
        .enqueue(&NewJob::new(t, "work", serde_json::json!({})), T0)
        .await
        .unwrap();
    let first = jobs.claim(&q(&["work"]), None, "worker", 1, 1_000, T0).await.unwrap();
    assert!(
        jobs.claim(&q(&["work"]), None, "worker", 1, 1_000, T0 + 999)
            .await
            .unwrap()
            .is_empty(),
        "held while the lease runs"
    );
    let second = jobs
        .claim(&q(&["work"]), None, "worker", 1, 1_000, T0 + 1_000)
        .await
        .unwrap();
    assert_eq!((second[0].job_id.as_str(), second[0].attempt), (job.id.as_str(), 2));
    // The first worker's lease is gone: it can neither heartbeat nor complete.
    assert!(jobs
        .heartbeat(&job.id, Holder::Lease(&first[0].lease), 1_000, None, T0 + 1_001)
        .await
        .is_err());
    assert!(jobs
        .complete(&job.id, Holder::Lease(&first[0].lease), None, T0 + 1_001)
        .await
        .is_err());
    jobs.complete(&job.id, Holder::Lease(&second[0].lease), None, T0 + 1_002)
        .await
        .unwrap();
}

async fn case_running_cap(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let (free, capped) = (tid("free"), tid("capped"));
    for i in 0..5 {
        jobs.enqueue(&NewJob::new(free, "work", serde_json::json!({"i": i})), T0)
            .await
            .unwrap();
        jobs.enqueue(&NewJob::new(capped, "work", serde_json::json!({"i": i})), T0)
            .await
            .unwrap();
    }
    jobs.set_policy(
        &capped,
        Policy {
            max_running: Some(2),
            ..Policy::default()
        },
    )
    .await
    .unwrap();
    let got = jobs.claim(&q(&["work"]), None, "worker", 10, LEASE, T0).await.unwrap();
    let of_capped: Vec<&Claimed> = got.iter().filter(|g| g.tenant_id == capped).collect();
    assert_eq!(got.len(), 7, "all of free's, two of capped's: {got:?}");
    assert_eq!(of_capped.len(), 2);
    // One finishes: one more may run, never a third at once.
    jobs.complete(&of_capped[0].job_id, Holder::Lease(&of_capped[0].lease), None, T0 + 1)
        .await
        .unwrap();
    let more = jobs
        .claim(&q(&["work"]), None, "worker", 10, LEASE, T0 + 2)
        .await
        .unwrap();
    assert_eq!(more.len(), 1);
    assert!(jobs
        .claim(&q(&["work"]), None, "worker", 10, LEASE, T0 + 3)
        .await
        .unwrap()
        .is_empty());
    // A failure frees its place too.
    jobs.fail(&more[0].job_id, Holder::Lease(&more[0].lease), "boom", Some(0), T0 + 4)
        .await
        .unwrap();
    let again = jobs
        .claim(&q(&["work"]), None, "worker", 10, LEASE, T0 + 5)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    // A deleted tenant's unfinished jobs are cancelled: two running, one failed (waiting
    // for its retry), one queued.
    assert_eq!(jobs.cancel_all(&capped, T0 + 6).await.unwrap(), 4);
}

/// A enqueues 10,000 jobs, then B enqueues 10: with one worker claiming one at a time,
/// B's jobs are all claimed within the first 20 claims after B enqueued.
async fn case_fair_between_tenants(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let (a, b) = (tid("aaa"), tid("bbb"));
    let many: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new(a, "work", serde_json::json!({"i": i})))
        .collect();
    jobs.enqueue_many(&many, T0).await.unwrap();
    // A has been served a while before B comes.
    for c in jobs.claim(&q(&["work"]), None, "worker", 50, LEASE, T0).await.unwrap() {
        jobs.complete(&c.job_id, Holder::Lease(&c.lease), None, T0)
            .await
            .unwrap();
    }
    let few: Vec<NewJob> = (0..10)
        .map(|i| NewJob::new(b, "work", serde_json::json!({"i": i})))
        .collect();
    jobs.enqueue_many(&few, T0 + 1).await.unwrap();
    let mut b_claimed = 0;
    for n in 1..=20 {
        let got = jobs
            .claim(&q(&["work"]), None, "worker", 1, LEASE, T0 + 2)
            .await
            .unwrap();
        if got[0].tenant_id == b {
            b_claimed += 1;
        }
        jobs.complete(&got[0].job_id, Holder::Lease(&got[0].lease), None, T0 + 2)
            .await
            .unwrap();
        if b_claimed == 10 {
            assert!(n <= 20);
            break;
        }
    }
    assert_eq!(b_claimed, 10, "all of B's jobs within the first 20 claims");
}

/// Weights 3:1 share the claims 3:1.
async fn case_weights_share_claims(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let (heavy, light) = (tid("heavy"), tid("light"));
    jobs.set_policy(
        &heavy,
        Policy {
            weight: 3,
            ..Policy::default()
        },
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    for t in [heavy, light] {
        all.extend((0..400).map(|i| NewJob::new(t, "work", serde_json::json!({"i": i}))));
    }
    jobs.enqueue_many(&all, T0).await.unwrap();
    let mut counts: BTreeMap<TenantId, u32> = BTreeMap::new();
    for got in jobs.claim(&q(&["work"]), None, "worker", 400, LEASE, T0).await.unwrap() {
        *counts.entry(got.tenant_id).or_default() += 1;
    }
    let (h, l) = (counts[&heavy], counts[&light]);
    assert_eq!(h + l, 400);
    let ratio = f64::from(h) / f64::from(l);
    assert!((ratio - 3.0).abs() < 0.1, "{h}:{l}");
}

/// A tenant's own worker claims that tenant's jobs only, whatever it asks for.
async fn case_tenant_worker_sees_only_its_tenant(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let (mine, theirs) = (tid("mine"), tid("theirs"));
    jobs.enqueue(
        &NewJob::new(theirs, "work", serde_json::json!({"secret": "theirs"})),
        T0,
    )
    .await
    .unwrap();
    jobs.enqueue(&NewJob::new(mine, "work", serde_json::json!({"secret": "mine"})), T0)
        .await
        .unwrap();
    let got = jobs
        .claim(&q(&["work"]), Some(&mine), "worker", 10, LEASE, T0)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload["secret"], "mine");
    assert!(jobs
        .claim(&q(&["work"]), Some(&mine), "worker", 10, LEASE, T0)
        .await
        .unwrap()
        .is_empty());
}

/// 8 claimers over 2 nodes (two catalogs on one database) never get the same job:
/// 10,000 jobs of 5 tenants, each run exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_claimers_never_share_a_job() {
    let Some((c, url)) = postgres("postgres_concurrent_claimers_never_share_a_job").await else {
        return;
    };
    let other = SqlCatalog::connect(&url).await.unwrap();
    let jobs = Jobs::new(c.clone());
    let mut all = Vec::new();
    for t in ["t1", "t2", "t3", "t4", "t5"] {
        all.extend((0..2_000).map(|i| NewJob::new(tid(t), "work", serde_json::json!({"i": i}))));
    }
    let ids: BTreeSet<String> = jobs
        .enqueue_many(&all, T0)
        .await
        .unwrap()
        .into_iter()
        .map(|(j, _)| j.id)
        .collect();
    let mut workers = Vec::new();
    for w in 0..8 {
        let node = Jobs::new(if w % 2 == 0 { c.clone() } else { other.clone() });
        workers.push(tokio::spawn(async move {
            let mut ran = Vec::new();
            loop {
                let got = node.claim(&q(&["work"]), None, "worker", 5, 600_000, T0).await.unwrap();
                if got.is_empty() {
                    return ran;
                }
                for g in got {
                    node.complete(&g.job_id, Holder::Lease(&g.lease), None, T0)
                        .await
                        .unwrap();
                    ran.push(g.job_id);
                }
            }
        }));
    }
    let mut ran = Vec::new();
    for w in workers {
        ran.extend(w.await.unwrap());
    }
    let once: BTreeSet<String> = ran.iter().cloned().collect();
    assert_eq!(once.len(), ran.len(), "a job was run twice");
    assert_eq!(once, ids, "every job ran");
    other.pool().close().await;
    drop_postgres(c, &url).await;
}

both_backends! {
    case_suspended_tenant_is_held => sqlite_suspended_tenant_is_held, postgres_suspended_tenant_is_held;
    case_claimer_holds_and_lists => sqlite_claimer_holds_and_lists, postgres_claimer_holds_and_lists;
}

/// A tenant suspended in the catalog has its jobs held; resumed, they run.
async fn case_suspended_tenant_is_held(c: &SqlCatalog) {
    use tenantd_core::tenant::Transition;
    let jobs = Jobs::new(c.clone());
    let t = tid("paused");
    let mut w = c.begin().await.unwrap();
    c.create_tenant(
        &mut w,
        &tenantd_store::NewTenant {
            id: t,
            name: "Paused".into(),
            plan: tenantd_core::PlanId::parse("free").unwrap(),
            owner_email: tenantd_core::Email::parse("o@paused.example").unwrap(),
            settings: serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    c.transition_tenant(&mut w, &t, Transition::Suspend, Some("unpaid"))
        .await
        .unwrap();
    w.commit().await.unwrap();
    jobs.enqueue(&NewJob::new(t, "work", serde_json::json!({})), T0)
        .await
        .unwrap();
    assert!(
        jobs.claim(&q(&["work"]), None, "worker", 5, LEASE, T0)
            .await
            .unwrap()
            .is_empty(),
        "held while suspended"
    );
    let mut w = c.begin().await.unwrap();
    c.transition_tenant(&mut w, &t, Transition::Resume, None).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        jobs.claim(&q(&["work"]), None, "worker", 5, LEASE, T0)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Over HTTP a worker is known by the principal that claimed; the cap holds across the
/// tenant's queues; lists filter by queue and state, newest first.
async fn case_claimer_holds_and_lists(c: &SqlCatalog) {
    let jobs = Jobs::new(c.clone());
    let t = tid("lister");
    for (i, queue) in ["a", "b", "a"].into_iter().enumerate() {
        let mut j = NewJob::new(t, queue, serde_json::json!({"i": i}));
        if i == 2 {
            j.run_at = Some(T0 + 1_000_000);
        }
        jobs.enqueue(&j, T0).await.unwrap();
    }
    jobs.set_policy(
        &t,
        Policy {
            max_running: Some(1),
            ..Policy::default()
        },
    )
    .await
    .unwrap();
    let got = jobs
        .claim(&q(&["a", "b"]), None, "key_one", 5, LEASE, T0)
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "capped at one running");
    assert!(matches!(
        jobs.complete(&got[0].job_id, Holder::Claimer("key_two"), None, T0 + 1)
            .await,
        Err(JobError::NotHeld(_))
    ));
    jobs.complete(&got[0].job_id, Holder::Claimer("key_one"), None, T0 + 1)
        .await
        .unwrap();
    let all = jobs.list(&t, None, None, 10, None, T0 + 2).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let scheduled = jobs
        .list(&t, Some("a"), Some(JobState::Scheduled), 10, None, T0 + 2)
        .await
        .unwrap();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].payload["i"], 2);
    let done = jobs
        .list(&t, None, Some(JobState::Succeeded), 10, None, T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [got[0].job_id.as_str()]
    );
    let page = jobs.list(&t, None, None, 1, Some(&all[0].id), T0 + 2).await.unwrap();
    assert_eq!(page[0].id, all[1].id);
    assert!(jobs
        .list(&tid("nobody"), None, None, 10, None, T0)
        .await
        .unwrap()
        .is_empty());
}
