//! The operator CLI: `tenant …`, `key …` and `usage` call a running server's API with the
//! operator key (`TENANTD_ADMIN_KEY`).
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

/// Where the server is and how to call it.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The server's API URL.
    #[arg(long, env = "TENANTD_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `tenantd tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Creates a tenant with its owner.
    Create {
        /// Tenant id.
        id: String,
        /// Plan id.
        #[arg(long)]
        plan: String,
        /// Owner's email.
        #[arg(long)]
        owner: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists tenants.
    List {
        /// active, suspended or deleted.
        #[arg(long)]
        status: Option<String>,
        /// Plan id.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Shows one tenant.
    Show {
        /// Tenant id.
        id: String,
    },
    /// Suspends a tenant.
    Suspend {
        /// Tenant id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Resumes a suspended tenant.
    Resume {
        /// Tenant id.
        id: String,
    },
    /// Soft-deletes a tenant (30-day retention).
    Delete {
        /// Tenant id.
        id: String,
    },
    /// Restores a deleted tenant.
    Restore {
        /// Tenant id.
        id: String,
    },
}

/// `tenantd key …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Creates an API key; the secret is printed once.
    Create {
        /// Tenant id.
        tenant: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Role (default member).
        #[arg(long)]
        role: Option<String>,
    },
    /// Lists a tenant's keys.
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Revokes a key.
    Revoke {
        /// Tenant id.
        tenant: String,
        /// Key id (key_…).
        key_id: String,
    },
}

pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Client {
    pub(crate) fn new(r: &Remote) -> Result<Self> {
        let key = std::env::var("TENANTD_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .context("set TENANTD_ADMIN_KEY to the operator key")?;
        Ok(Self {
            http: reqwest::Client::new(),
            url: r.url.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// A `GET` whose body is read by the caller (a download).
    pub(crate) async fn get_raw(&self, path: &str) -> Result<reqwest::Response> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach tenantd at {}", self.url))?;
        if !resp.status().is_success() {
            bail!("{path}: {}", resp.status());
        }
        Ok(resp)
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach tenantd at {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let code = v["code"].as_str().unwrap_or("error");
            let detail = v["detail"].as_str().unwrap_or("");
            bail!("{} {code}: {detail}", status.as_u16());
        }
        Ok(v)
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(items: &[Value], cols: &[&str]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| cols.iter().map(|c| cell(&i[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|r| r[i].len()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:w$}", c, w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(cols.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub(crate) fn print(r: &Remote, v: &Value, cols: &[&str]) {
    if r.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else if let Some(items) = v["items"].as_array() {
        println!("{}", table(items, cols));
    } else {
        println!("{}", table(std::slice::from_ref(v), cols));
    }
}

const TENANT_COLS: &[&str] = &["id", "name", "plan", "status", "status_reason", "created_at"];
const KEY_COLS: &[&str] = &[
    "id",
    "name",
    "prefix",
    "role",
    "expires_at",
    "revoked_at",
    "last_used_at",
];

/// Runs a `tenant` command.
pub async fn tenant(r: &Remote, cmd: TenantCmd) -> Result<()> {
    use reqwest::Method as M;
    let c = Client::new(r)?;
    let v = match cmd {
        TenantCmd::Create { id, plan, owner, name } => {
            c.call(
                M::POST,
                "/v1/tenants",
                Some(json!({"id": id, "plan": plan, "owner_email": owner, "name": name})),
            )
            .await?
        }
        TenantCmd::List { status, plan } => {
            // Follow every page.
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = vec![("limit", "1000".to_string())];
                q.extend(status.clone().map(|s| ("status", s)));
                q.extend(plan.clone().map(|p| ("plan", p)));
                q.extend(cursor.clone().map(|c| ("cursor", c)));
                let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
                let page = c.call(M::GET, &format!("/v1/tenants?{qs}"), None).await?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(n) => cursor = Some(n.to_string()),
                    None => break,
                }
            }
            json!({ "items": items })
        }
        TenantCmd::Show { id } => c.call(M::GET, &format!("/v1/tenants/{id}"), None).await?,
        TenantCmd::Suspend { id, reason } => {
            c.call(
                M::POST,
                &format!("/v1/tenants/{id}/suspend"),
                Some(json!({"reason": reason})),
            )
            .await?
        }
        TenantCmd::Resume { id } => c.call(M::POST, &format!("/v1/tenants/{id}/resume"), None).await?,
        TenantCmd::Delete { id } => c.call(M::DELETE, &format!("/v1/tenants/{id}"), None).await?,
        TenantCmd::Restore { id } => c.call(M::POST, &format!("/v1/tenants/{id}/restore"), None).await?,
    };
    print(r, &v, TENANT_COLS);
    Ok(())
}

/// Runs a `key` command.
pub async fn key(r: &Remote, cmd: KeyCmd) -> Result<()> {
    use reqwest::Method as M;
    let c = Client::new(r)?;
    match cmd {
        KeyCmd::Create { tenant, name, role } => {
            let v = c
                .call(
                    M::POST,
                    &format!("/v1/tenants/{tenant}/keys"),
                    Some(json!({"name": name, "role": role})),
                )
                .await?;
            if r.json {
                print(r, &v, KEY_COLS);
            } else {
                println!(
                    "{}\n\nsecret (shown once, store it now):\n{}",
                    table(std::slice::from_ref(&v), KEY_COLS),
                    cell(&v["key"])
                );
            }
        }
        KeyCmd::List { tenant } => print(
            r,
            &c.call(M::GET, &format!("/v1/tenants/{tenant}/keys?limit=1000"), None)
                .await?,
            KEY_COLS,
        ),
        KeyCmd::Revoke { tenant, key_id } => {
            c.call(M::DELETE, &format!("/v1/tenants/{tenant}/keys/{key_id}"), None)
                .await?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

const USAGE_COLS: &[&str] = &[
    "resource",
    "window",
    "limit",
    "current",
    "remaining",
    "percentage",
    "reset_at",
    "enforcement",
];

/// Runs `usage TENANT`: the tenant's quota table.
pub async fn usage(r: &Remote, tenant: &str) -> Result<()> {
    let c = Client::new(r)?;
    let v = c
        .call(reqwest::Method::GET, &format!("/v1/tenants/{tenant}/usage"), None)
        .await?;
    if r.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("tenant {}  plan {}", cell(&v["tenant_id"]), cell(&v["plan"]));
    let quotas = v["quotas"].as_array().cloned().unwrap_or_default();
    println!("{}", table(&quotas, USAGE_COLS));
    Ok(())
}
