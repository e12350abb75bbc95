//! The operator CLI's `export`, `backup`, `restore` and `clone` (docs/protection.md),
//! through a running server's API: each waits for its job, printing progress on stderr.
use crate::cli::{Client, Remote};
use anyhow::{bail, Context, Result};
use reqwest::Method as M;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Polls an export's or backup's status until it ends, printing progress.
async fn wait_built(c: &Client, path: &str) -> Result<Value> {
    let mut last = String::new();
    loop {
        let s = c.call(M::GET, path, None).await?;
        let line = format!(
            "{} {}/{}",
            s["state"].as_str().unwrap_or("?"),
            s["progress"]["done"],
            s["progress"]["total"]
        );
        if line != last {
            eprintln!("tenantd: {line}");
            last = line;
        }
        match s["state"].as_str() {
            Some("done") => return Ok(s),
            Some("failed") => bail!("failed: {}", s["error"].as_str().unwrap_or("unknown")),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// `tenantd export TENANT --out FILE`: exports the tenant and downloads the `.tar.gz`.
pub async fn export(r: &Remote, tenant: &str, out: &std::path::Path) -> Result<()> {
    let c = Client::new(r)?;
    let started = c
        .call(M::POST, &format!("/v1/tenants/{tenant}/exports"), Some(json!({})))
        .await?;
    let id = started["export_id"].as_str().context("no export_id in the answer")?;
    let path = format!("/v1/tenants/{tenant}/exports/{id}");
    let s = wait_built(&c, &path).await?;
    let mut resp = c.get_raw(&format!("{path}/download")).await?;
    let tmp = out.with_extension("partial");
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(chunk) = resp.chunk().await.context("the download broke off")? {
        hash.update(&chunk);
        f.write_all(&chunk).await?;
    }
    f.sync_all().await?;
    let got = hex::encode(hash.finish());
    if Some(got.as_str()) != s["sha256"].as_str() {
        let _ = tokio::fs::remove_file(&tmp).await;
        bail!("the download's SHA-256 {got} is not the export's {}", s["sha256"]);
    }
    tokio::fs::rename(&tmp, out).await?;
    eprintln!(
        "tenantd: wrote {} ({} bytes, sha256 {got})",
        out.display(),
        s["size_bytes"]
    );
    Ok(())
}

/// `tenantd backup TENANT`: backs the tenant up; prints the backup.
pub async fn backup(r: &Remote, tenant: &str) -> Result<()> {
    let c = Client::new(r)?;
    let started = c
        .call(M::POST, &format!("/v1/tenants/{tenant}/backups"), Some(json!({})))
        .await?;
    let id = started["backup_id"].as_str().context("no backup_id in the answer")?;
    let s = wait_built(&c, &format!("/v1/tenants/{tenant}/backups/{id}")).await?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}

/// Waits for a restore's or clone's job (answered `202` after the server's own wait).
async fn finish(c: &Client, answer: Value) -> Result<Value> {
    if answer["state"] == "succeeded" || answer.get("state").is_none() {
        return Ok(answer);
    }
    let job = answer["job_id"]
        .as_str()
        .context("no job_id in the answer")?
        .to_string();
    eprintln!("tenantd: still running as {job}; waiting");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let j = c.call(M::GET, &format!("/v1/jobs/{job}"), None).await;
        if let Ok(j) = j {
            match j["state"].as_str() {
                Some("succeeded") if j["result"]["restored"] == true => return Ok(j),
                Some("succeeded" | "failed" | "dead" | "cancelled") => bail!("failed: {}", j["result"]["error"]),
                _ => {}
            }
        }
    }
}

/// `tenantd restore TENANT --backup ID`.
pub async fn restore(r: &Remote, tenant: &str, backup: &str) -> Result<()> {
    let c = Client::new(r)?;
    let a = c
        .call(
            M::POST,
            &format!("/v1/tenants/{tenant}/restore"),
            Some(json!({"backup_id": backup})),
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&finish(&c, a).await?)?);
    Ok(())
}

/// `tenantd clone TENANT NEW_ID [--plan P] [--backup ID]`.
pub async fn clone(r: &Remote, tenant: &str, new_id: &str, plan: Option<&str>, backup: Option<&str>) -> Result<()> {
    let c = Client::new(r)?;
    let mut body = json!({"new_id": new_id});
    if let Some(p) = plan {
        body["plan"] = json!(p);
    }
    if let Some(b) = backup {
        body["backup_id"] = json!(b);
    }
    let a = c
        .call(M::POST, &format!("/v1/tenants/{tenant}/clone"), Some(body))
        .await?;
    println!("{}", serde_json::to_string_pretty(&finish(&c, a).await?)?);
    Ok(())
}
