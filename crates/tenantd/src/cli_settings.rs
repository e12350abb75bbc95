//! The operator CLI's `flag …` and `config …`: feature flags and tenant configuration,
//! through a running server's API (docs/config.md).
use crate::cli::{print, Client, Remote};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use reqwest::Method as M;
use serde_json::{json, Map, Value};

/// `tenantd flag …`
#[derive(Debug, Subcommand)]
pub enum FlagCmd {
    /// Creates or replaces a flag. Values are JSON (`true`, `3`, `{"a":1}`); anything
    /// that is not JSON is a string.
    Set {
        /// The flag's key.
        key: String,
        /// boolean, string, number or object.
        #[arg(long = "type")]
        kind: String,
        /// The value when nothing else applies.
        #[arg(long)]
        default: String,
        /// Serve the default to everyone (the kill switch).
        #[arg(long)]
        disabled: bool,
        /// A plan's value, `PLAN=VALUE` (repeatable).
        #[arg(long = "plan", value_name = "PLAN=VALUE")]
        plans: Vec<String>,
        /// A tenant's value, `TENANT=VALUE` (repeatable).
        #[arg(long = "tenant", value_name = "TENANT=VALUE")]
        tenants: Vec<String>,
        /// A gradual rollout, `PERCENT=VALUE` (percent 0–100, two decimals at most).
        #[arg(long, value_name = "PERCENT=VALUE")]
        rollout: Option<String>,
        /// Who the rollout buckets: tenant (default) or targeting_key.
        #[arg(long, requires = "rollout")]
        by: Option<String>,
    },
    /// Shows a flag's definition.
    Get {
        /// The flag's key.
        key: String,
    },
    /// Lists the flags.
    List,
    /// Deletes a flag.
    Delete {
        /// The flag's key.
        key: String,
    },
}

/// `tenantd config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Shows a key's effective value for a tenant, with its source (tenant, plan or
    /// default); without KEY, every key's.
    Get {
        /// Tenant id.
        tenant: String,
        /// The key.
        key: Option<String>,
    },
    /// Sets a key in the tenant's own layer; VALUE is JSON (anything else is a string).
    Set {
        /// Tenant id.
        tenant: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

/// A value as typed: JSON when it parses, a string otherwise.
fn value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// `NAME=VALUE` pairs as a JSON object.
fn pairs(what: &str, raw: &[String]) -> Result<Map<String, Value>> {
    raw.iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--{what} '{p}': use {}=VALUE", what.to_uppercase()))?;
            Ok((k.to_string(), value(v)))
        })
        .collect()
}

const FLAG_COLS: &[&str] = &["key", "type", "default", "enabled", "rollout", "version", "updated_at"];

/// Runs a `flag` command.
pub async fn flag(r: &Remote, cmd: FlagCmd) -> Result<()> {
    let c = Client::new(r)?;
    match cmd {
        FlagCmd::Set {
            key,
            kind,
            default,
            disabled,
            plans,
            tenants,
            rollout,
            by,
        } => {
            let mut spec = json!({
                "type": kind,
                "default": value(&default),
                "enabled": !disabled,
                "plans": pairs("plan", &plans)?,
                "tenants": pairs("tenant", &tenants)?,
            });
            if let Some(ro) = rollout {
                let (pct, v) = ro.split_once('=').context("--rollout: use PERCENT=VALUE")?;
                let Ok(percent) = pct.parse::<f64>() else {
                    bail!("--rollout: '{pct}' is not a percentage");
                };
                spec["rollout"] =
                    json!({"percent": percent, "value": value(v), "by": by.unwrap_or_else(|| "tenant".into())});
            }
            let f = c.call(M::PUT, &format!("/v1/flags/{key}"), Some(spec)).await?;
            print(r, &f, FLAG_COLS);
        }
        FlagCmd::Get { key } => {
            let f = c.call(M::GET, &format!("/v1/flags/{key}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&f)?);
        }
        FlagCmd::List => print(r, &c.call(M::GET, "/v1/flags", None).await?, FLAG_COLS),
        FlagCmd::Delete { key } => {
            c.call(M::DELETE, &format!("/v1/flags/{key}"), None).await?;
            println!("deleted {key}");
        }
    }
    Ok(())
}

const CONFIG_COLS: &[&str] = &["key", "value", "source", "version"];

/// Runs a `config` command.
pub async fn config(r: &Remote, cmd: ConfigCmd) -> Result<()> {
    let c = Client::new(r)?;
    let v = match cmd {
        ConfigCmd::Get { tenant, key: Some(key) } => {
            c.call(M::GET, &format!("/v1/tenants/{tenant}/config/{key}"), None)
                .await?
        }
        ConfigCmd::Get { tenant, key: None } => c.call(M::GET, &format!("/v1/tenants/{tenant}/config"), None).await?,
        ConfigCmd::Set {
            tenant,
            key,
            value: raw,
        } => {
            c.call(
                M::PUT,
                &format!("/v1/tenants/{tenant}/config/{key}"),
                Some(json!({ "value": value(&raw) })),
            )
            .await?
        }
    };
    print(r, &v, CONFIG_COLS);
    Ok(())
}
