use crate::common::{TestApp, ADMIN};
use serde_json::json;

crate::both! {
    a_tenant_enqueues_and_its_worker_runs_its_jobs;
    the_operators_worker_claims_every_tenant_and_failures_retry_then_die;
    a_waiting_claim_wakes_when_a_job_is_enqueued;
    plans_set_the_weight_and_the_running_cap;
    tenantds_own_queues_are_out_of_reach;
    run_time_shows_as_job_seconds_and_in_the_metrics;
    a_deleted_tenants_jobs_are_cancelled_and_a_suspended_tenants_held;
    the_rust_worker_client_runs_jobs_with_progress;
}

/// Enqueues `n` jobs on `queue` with the key `k`.
async fn enqueue(app: &TestApp, k: &str, queue: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let j = app
            .post("/v1/jobs", k, json!({"queue": queue, "payload": {"i": i}}))
            .await
            .expect(201)
            .body;
        ids.push(j["job_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Claims up to `max` jobs of `queues` as `token`; their tenants and ids.
async fn claim(app: &TestApp, token: &str, queues: &[&str], max: u32) -> Vec<(String, String)> {
    let got = app
        .post("/v1/jobs/claim", token, json!({"queues": queues, "max": max}))
        .await
        .expect(200)
        .body;
    got["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["tenant_id"].as_str().unwrap().to_string(),
                j["job_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A plan's `job_weight` is its tenants' share of claims (3 to 1 here), and its
/// `jobs`/`concurrent` limit caps how many of a tenant's jobs run at once; a changed plan
/// applies to jobs already queued.
async fn plans_set_the_weight_and_the_running_cap(app: TestApp) {
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "heavy", "name": "Heavy", "job_weight": 3, "limits": []}),
    )
    .await
    .expect(201);
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "capped", "name": "Capped", "limits": [
            {"resource": "jobs", "window": "concurrent", "limit": 2, "enforcement": "hard"}]}),
    )
    .await
    .expect(201);
    app.post(
        "/v1/plans",
        ADMIN,
        json!({"id": "bad", "name": "Bad", "job_weight": 0, "limits": []}),
    )
    .await
    .problem(400, "invalid_request");
    app.patch("/v1/plans/heavy", ADMIN, json!({"job_weight": 1001}))
        .await
        .problem(400, "invalid_request");
    for (t, plan) in [("big", "heavy"), ("small", "free"), ("narrow", "capped")] {
        app.tenant(t, plan).await;
    }
    let (_, big) = app.key("big", "admin").await;
    let (_, small) = app.key("small", "admin").await;
    let (_, narrow) = app.key("narrow", "admin").await;
    enqueue(&app, &big, "w", 30).await;
    enqueue(&app, &small, "w", 30).await;
    let got = claim(&app, ADMIN, &["w"], 20).await;
    let of_big = got.iter().filter(|(t, _)| t == "big").count();
    assert_eq!((of_big, got.len() - of_big), (15, 5), "3 to 1: {got:?}");
    // The cap: two of narrow's at once, whatever is asked.
    enqueue(&app, &narrow, "n", 5).await;
    let got = claim(&app, ADMIN, &["n"], 10).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(claim(&app, &narrow, &["n"], 10).await.is_empty(), "at its cap");
    app.post(&format!("/v1/jobs/{}/complete", got[0].1), ADMIN, json!({}))
        .await
        .expect(204);
    assert_eq!(claim(&app, ADMIN, &["n"], 10).await.len(), 1, "one place freed");
    // Raised in the plan: its queued jobs run at the new cap.
    app.patch(
        "/v1/plans/capped",
        ADMIN,
        json!({"limits": [{"resource": "jobs", "window": "concurrent", "limit": 4, "enforcement": "hard"}]}),
    )
    .await
    .expect(200);
    assert_eq!(claim(&app, ADMIN, &["n"], 10).await.len(), 2);
}

/// Queues whose names start with `tenantd.` are tenantd's own: no tenant enqueues there
/// and no worker over HTTP claims from them.
async fn tenantds_own_queues_are_out_of_reach(app: TestApp) {
    app.tenant("sneaky", "free").await;
    let (_, k) = app.key("sneaky", "admin").await;
    let r = app
        .post(
            "/v1/jobs",
            &k,
            json!({"queue": "tenantd.purge", "payload": {"tenant_id": "victim"}}),
        )
        .await
        .problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("tenantd."), "{}", r.body);
    for token in [k.as_str(), ADMIN] {
        app.post("/v1/jobs/claim", token, json!({"queues": ["mail", "tenantd.move"]}))
            .await
            .problem(400, "invalid_request");
    }
    assert_eq!(
        app.get("/v1/jobs", &k).await.expect(200).body["items"],
        json!([]),
        "nothing was enqueued"
    );
}

/// A job's run time is metered as `job_seconds` (whole seconds, by the queue's upkeep),
/// shown in the tenant's quota table for the month; claims and runs show in `/metrics`.
async fn run_time_shows_as_job_seconds_and_in_the_metrics(app: TestApp) {
    app.tenant("timed", "free").await;
    let (_, k) = app.key("timed", "admin").await;
    enqueue(&app, &k, "slow", 1).await;
    let got = claim(&app, &k, &["slow"], 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    app.post(
        &format!("/v1/jobs/{}/complete", got[0].1),
        &k,
        json!({"result": {"ok": true}}),
    )
    .await
    .expect(204);
    app.state.keep_up_jobs().await;
    let usage = app.get("/v1/tenants/timed/usage", &k).await.expect(200).body;
    let row = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "job_seconds")
        .unwrap_or_else(|| panic!("{usage}"))
        .clone();
    assert_eq!(row["window"], "month", "{row}");
    assert_eq!(row["limit"], serde_json::Value::Null, "{row}");
    assert_eq!(row["current"], 1, "{row}");
    let scraped = app.get("/metrics", ADMIN).await.expect(200).body;
    let text = scraped.as_str().unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("tenantd_jobs_claimed_total") >= 1.0);
    assert!(value("tenantd_job_run_seconds_count{outcome=\"succeeded\"}") >= 1.0);
    assert!(value("tenantd_job_run_seconds_sum{outcome=\"succeeded\"}") >= 1.2);
    // No job series names a tenant (only the bounded per-tenant series do).
    assert!(
        !text
            .lines()
            .any(|l| !l.starts_with("tenantd_tenant_") && l.contains("\"timed\"")),
        "no tenant id is a label of the job series"
    );
}

/// A suspended tenant's jobs are held until it resumes; a deleted tenant's are cancelled
/// with its deletion and stay cancelled when it is restored.
async fn a_deleted_tenants_jobs_are_cancelled_and_a_suspended_tenants_held(app: TestApp) {
    app.tenant("pausing", "free").await;
    let (_, k) = app.key("pausing", "admin").await;
    let ids = enqueue(&app, &k, "work", 3).await;
    app.post("/v1/tenants/pausing/suspend", ADMIN, json!({"reason": "unpaid"}))
        .await
        .expect(200);
    assert!(claim(&app, ADMIN, &["work"], 10).await.is_empty(), "held");
    app.post("/v1/tenants/pausing/resume", ADMIN, json!({}))
        .await
        .expect(200);
    let got = claim(&app, ADMIN, &["work"], 1).await;
    assert_eq!(got.len(), 1);
    app.delete("/v1/tenants/pausing", ADMIN).await.expect(200);
    app.post("/v1/tenants/pausing/restore", ADMIN, json!({}))
        .await
        .expect(200);
    for id in &ids {
        let j = app.get(&format!("/v1/jobs/{id}"), &k).await.expect(200).body;
        assert_eq!(j["state"], "cancelled", "{j}");
    }
    // The worker that held one lost it.
    app.post(&format!("/v1/jobs/{}/complete", got[0].1), ADMIN, json!({}))
        .await
        .problem(409, "conflict");
    assert!(claim(&app, ADMIN, &["work"], 10).await.is_empty());
}

/// The crate's HTTP worker claims a tenant's jobs, reports progress with a heartbeat, and
/// completes or fails each with what its handler answered.
async fn the_rust_worker_client_runs_jobs_with_progress(app: TestApp) {
    use tenantd_jobs::client::Worker;
    app.tenant("clienty", "free").await;
    let (_, k) = app.key("clienty", "admin").await;
    let good = app
        .post("/v1/jobs", &k, json!({"queue": "thumbs", "payload": {"url": "a.png"}}))
        .await
        .expect(201)
        .body["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = app
        .post(
            "/v1/jobs",
            &k,
            json!({"queue": "thumbs", "payload": {}, "max_attempts": 1}),
        )
        .await
        .expect(201)
        .body["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let worker = Worker::new(&app.url, &k).queues(["thumbs"]).wait_seconds(0);
    let mut tasks = worker.claim().await.unwrap();
    tasks.extend(worker.claim().await.unwrap());
    assert_eq!(tasks.len(), 2);
    let first = tasks.iter().find(|t| t.job_id == good).unwrap();
    worker
        .heartbeat(&first.job_id, Some(json!({"done": 1, "of": 2})))
        .await
        .unwrap();
    let shown = app.get(&format!("/v1/jobs/{good}"), &k).await.expect(200).body;
    assert_eq!(shown["progress"], json!({"done": 1, "of": 2}), "{shown}");
    for task in tasks {
        worker
            .work(task, &|t: tenantd_jobs::client::Task| async move {
                match t.payload["url"].as_str() {
                    Some(u) => Ok(json!({"thumbnail": format!("{u}.thumb")})),
                    None => Err("no url".to_string()),
                }
            })
            .await
            .unwrap();
    }
    let done = app.get(&format!("/v1/jobs/{good}"), &k).await.expect(200).body;
    assert_eq!(
        (&done["state"], &done["result"]),
        (&json!("succeeded"), &json!({"thumbnail": "a.png.thumb"}))
    );
    let dead = app.get(&format!("/v1/jobs/{bad}"), &k).await.expect(200).body;
    assert_eq!(
        (&dead["state"], &dead["last_error"]),
        (&json!("dead"), &json!("no url"))
    );
    // A finished job is no longer the worker's: tenantd says why.
    let e = worker.complete(&good, json!(null)).await.unwrap_err();
    assert!(
        matches!(e, tenantd_jobs::client::ClientError::Api { status: 409, .. }),
        "{e}"
    );
    assert!(!format!("{worker:?}").contains(&k), "the credential stays out of Debug");
}

async fn a_tenant_enqueues_and_its_worker_runs_its_jobs(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("other", "free").await;
    let (_, acme) = app.key("acme", "admin").await;
    let (_, other) = app.key("other", "admin").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    let body = json!({"queue": "mail", "payload": {"to": "a@acme.test"}, "idempotency_key": "welcome-1"});
    let job = app.post("/v1/jobs", &acme, body.clone()).await.expect(201).body;
    let id = job["job_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("job_"), "{job}");
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("queued"), Some(0))
    );
    // The same idempotency key answers the first job.
    let again = app.post("/v1/jobs", &acme, body).await.expect(200).body;
    assert_eq!(again["job_id"], id.as_str());
    // Bad input changes nothing.
    app.post("/v1/jobs", &acme, json!({"queue": "Not A Queue", "payload": {}}))
        .await
        .problem(400, "invalid_request");
    app.post(
        "/v1/jobs",
        &acme,
        json!({"queue": "mail", "payload": {}, "max_attempts": 0}),
    )
    .await
    .problem(400, "invalid_request");
    app.post("/v1/jobs", &viewer, json!({"queue": "mail", "payload": {}}))
        .await
        .problem(403, "forbidden");
    app.get("/v1/jobs?queue=", &viewer)
        .await
        .problem(400, "invalid_request");
    let list = app.get("/v1/jobs?queue=mail", &viewer).await.expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    // Another tenant sees nothing of it, and its worker claims none of it.
    app.get(&format!("/v1/jobs/{id}"), &other)
        .await
        .problem(404, "not_found");
    let none = app
        .post("/v1/jobs/claim", &other, json!({"queues": ["mail"]}))
        .await
        .expect(200)
        .body;
    assert_eq!(none, json!({"jobs": []}));
    // A viewer may not work jobs.
    app.post("/v1/jobs/claim", &viewer, json!({"queues": ["mail"]}))
        .await
        .problem(403, "forbidden");
    // The tenant's worker claims it, heartbeats and completes it.
    let got = app
        .post("/v1/jobs/claim", &acme, json!({"queues": ["mail"], "max": 10}))
        .await
        .expect(200)
        .body;
    let jobs = got["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{got}");
    assert_eq!(
        (jobs[0]["job_id"].as_str(), jobs[0]["tenant_id"].as_str()),
        (Some(id.as_str()), Some("acme"))
    );
    assert_eq!(jobs[0]["payload"], json!({"to": "a@acme.test"}));
    assert_eq!(jobs[0]["attempt"], 1);
    app.post(&format!("/v1/jobs/{id}/heartbeat"), &acme, json!({"lease_seconds": 60}))
        .await
        .expect(200);
    // Only the worker that claimed it may report.
    app.post(&format!("/v1/jobs/{id}/complete"), &other, json!({}))
        .await
        .problem(409, "conflict");
    app.post(
        &format!("/v1/jobs/{id}/complete"),
        &acme,
        json!({"result": {"sent": 1}}),
    )
    .await
    .expect(204);
    let done = app.get(&format!("/v1/jobs/{id}"), &acme).await.expect(200).body;
    assert_eq!(
        (done["state"].as_str(), &done["result"]),
        (Some("succeeded"), &json!({"sent": 1}))
    );
    app.post(&format!("/v1/jobs/{id}/complete"), &acme, json!({}))
        .await
        .problem(409, "conflict");
    // A scheduled job is cancelled; a cancelled one cannot be again.
    let later = app
        .post(
            "/v1/jobs",
            &acme,
            json!({"queue": "mail", "payload": {}, "run_at": "2099-01-01T00:00:00Z"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(later["state"], "scheduled");
    let lid = later["job_id"].as_str().unwrap();
    let c = app
        .post(&format!("/v1/jobs/{lid}/cancel"), &acme, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(c["state"], "cancelled");
    app.post(&format!("/v1/jobs/{lid}/cancel"), &acme, json!({}))
        .await
        .problem(409, "conflict");
    let cancelled = app.get("/v1/jobs?state=cancelled", &acme).await.expect(200).body;
    assert_eq!(cancelled["items"][0]["job_id"], lid);
}

async fn the_operators_worker_claims_every_tenant_and_failures_retry_then_die(app: TestApp) {
    for t in ["one", "two"] {
        app.tenant(t, "free").await;
        let (_, k) = app.key(t, "admin").await;
        app.post(
            "/v1/jobs",
            &k,
            json!({"queue": "work", "payload": {"tenant": t}, "max_attempts": 2}),
        )
        .await
        .expect(201);
    }
    let got = app
        .post("/v1/jobs/claim", ADMIN, json!({"queues": ["work"], "max": 10}))
        .await
        .expect(200)
        .body;
    let jobs = got["jobs"].as_array().unwrap();
    let tenants: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j["tenant_id"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["one", "two"].into_iter().collect(), "{got}");
    let id = jobs.iter().find(|j| j["tenant_id"] == "one").unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = app
        .post(
            &format!("/v1/jobs/{id}/fail"),
            ADMIN,
            json!({"error": "boom", "retry_in_seconds": 0}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(f["state"], "failed", "{f}");
    let again = app
        .post("/v1/jobs/claim", ADMIN, json!({"queues": ["work"]}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            again["jobs"][0]["job_id"].as_str(),
            again["jobs"][0]["attempt"].as_u64()
        ),
        (Some(id.as_str()), Some(2))
    );
    let f = app
        .post(&format!("/v1/jobs/{id}/fail"), ADMIN, json!({"error": "boom again"}))
        .await
        .expect(200)
        .body;
    assert_eq!(f, json!({"state": "dead", "next_attempt_at": null}));
    let audit = app
        .get("/v1/tenants/one/audit?action=job.dead", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"][0]["data"]["job_id"], id.as_str(), "{audit}");
    app.post(&format!("/v1/jobs/{id}/fail"), ADMIN, json!({"error": ""}))
        .await
        .problem(400, "invalid_request");
}

async fn a_waiting_claim_wakes_when_a_job_is_enqueued(app: TestApp) {
    app.tenant("poll", "free").await;
    let (_, k) = app.key("poll", "admin").await;
    let url = app.url.clone();
    let claimer = {
        let k = k.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/jobs/claim"))
                .bearer_auth(&k)
                .json(&json!({"queues": ["late"], "wait_seconds": 30}))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let job = app
        .post("/v1/jobs", &k, json!({"queue": "late", "payload": {"n": 1}}))
        .await
        .expect(201)
        .body;
    let got = claimer.await.unwrap();
    assert_eq!(got["jobs"][0]["job_id"], job["job_id"], "{got}");
}
