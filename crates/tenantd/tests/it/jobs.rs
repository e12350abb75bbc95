use crate::common::{TestApp, ADMIN};
use serde_json::json;

crate::both! {
    a_tenant_enqueues_and_its_worker_runs_its_jobs;
    the_operators_worker_claims_every_tenant_and_failures_retry_then_die;
    a_waiting_claim_wakes_when_a_job_is_enqueued;
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
    assert_eq!(audit["items"][0]["detail"]["job_id"], id.as_str(), "{audit}");
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
