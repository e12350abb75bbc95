//! A worker for tenantd's job queue, in a process of its own: it claims jobs of the
//! queue `thumbnails` and "renders" each (here: counts the bytes of a URL's name), until
//! Ctrl-C. Run a server (`cargo run --release -- serve`), then:
//!
//! ```text
//! TENANTD_URL=http://127.0.0.1:8080 TENANTD_TOKEN=<operator key, or a key with jobs:work> \
//!     cargo run -p tenantd-example-worker
//! ```
//!
//! and enqueue work as a tenant:
//! `curl -H "Authorization: Bearer $KEY" -d '{"queue":"thumbnails","payload":{"url":"a.png"}}' \
//! http://127.0.0.1:8080/v1/jobs`.
use serde_json::json;
use tenantd_jobs::client::{Task, Worker};

/// The work of one job: its answer, or why it failed (then tenantd retries it).
async fn render(task: Task) -> Result<serde_json::Value, String> {
    let url = task.payload["url"]
        .as_str()
        .ok_or_else(|| format!("job {}: the payload has no \"url\"", task.job_id))?;
    println!(
        "tenant {} job {} (attempt {}): rendering {url}",
        task.tenant_id, task.job_id, task.attempt
    );
    Ok(json!({"thumbnail": format!("{url}.thumb"), "bytes": url.len()}))
}

#[tokio::main]
async fn main() {
    let url = std::env::var("TENANTD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let Ok(token) = std::env::var("TENANTD_TOKEN") else {
        eprintln!("set TENANTD_TOKEN to the operator key or an API key whose role grants jobs:work");
        std::process::exit(2);
    };
    let worker = Worker::new(&url, &token).queues(["thumbnails"]);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = worker.run_until(stop, render).await {
        eprintln!("worker stopped: {e}");
        std::process::exit(1);
    }
}
