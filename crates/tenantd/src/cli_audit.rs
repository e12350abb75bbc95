//! `tenantd audit verify`: checks the event log's hash chains (docs/events.md), in the
//! catalog itself, or in an exported NDJSON file with nothing but the JWKS. Exit 0 when
//! everything verifies, 1 when a chain is broken, 2 when the check could not be made.
use crate::config::{Config, ServeArgs};
use std::path::PathBuf;
use std::process::ExitCode;
use tenantd_store::chain::{verify_export, Broken, Verified};
use tenantd_store::prelude::*;

/// `tenantd audit …`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Checks the event chains: every event's digest and links, each chain's head, and
    /// its latest signed checkpoint.
    Verify(VerifyArgs),
}

/// `tenantd audit verify`'s arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The catalog to check (as `serve` takes it), unless `--file` is given.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Only this tenant's chain (default: every chain, the platform's first).
    #[arg(long)]
    pub tenant: Option<String>,
    /// An export (`GET …/audit` with `Accept: application/x-ndjson`) to check instead.
    #[arg(long, requires = "jwks")]
    pub file: Option<PathBuf>,
    /// The public keys (`/.well-known/jwks.json`) the file's checkpoints must be signed with.
    #[arg(long, requires = "file")]
    pub jwks: Option<PathBuf>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tenantd: {msg}");
    ExitCode::from(2)
}

/// One line per chain; whether all verified.
fn report(name: &str, result: &Result<Verified, Broken>, checkpointed: bool) -> bool {
    let name = if name.is_empty() { "the platform" } else { name };
    match result {
        Ok(v) => {
            let head = v
                .head
                .as_ref()
                .map_or("empty".to_string(), |(seq, hash)| format!("head seq {seq} {hash}"));
            let cp = if checkpointed {
                ", checkpoint verified"
            } else {
                ", no checkpoint yet"
            };
            println!("{name}: valid, {} events, {head}{cp}", v.events);
            true
        }
        Err(b) => {
            println!("{name}: BROKEN at seq {}: {}", b.first_bad_seq, b.reason);
            false
        }
    }
}

/// Runs `tenantd audit …`.
pub async fn run(cmd: AuditCmd) -> ExitCode {
    let AuditCmd::Verify(a) = cmd;
    let ok = match (&a.file, &a.jwks) {
        (Some(file), Some(jwks)) => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
            };
            let keys: serde_json::Value = match std::fs::read_to_string(jwks).map(|j| serde_json::from_str(&j)) {
                Ok(Ok(k)) => k,
                Ok(Err(e)) => return fail(format!("{} is not JSON: {e}", jwks.display())),
                Err(e) => return fail(format!("cannot read {}: {e}", jwks.display())),
            };
            let chains = match verify_export(&text, &keys) {
                Ok(c) => c,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            };
            let wanted = chains.iter().filter(|c| a.tenant.is_none() || c.tenant_id == a.tenant);
            let mut all = true;
            for c in wanted {
                all &= report(c.tenant_id.as_deref().unwrap_or(""), &c.result, c.checkpointed);
            }
            all
        }
        _ => {
            let cfg = match Config::load(&a.serve) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let catalog = match crate::startup::open_catalog(&cfg).await {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let keys = match catalog.signing_keys().await {
                Ok(k) => k,
                Err(e) => return fail(format!("cannot read the signing keys: {e}")),
            };
            let jwks = serde_json::json!({"keys": keys.iter().map(|k| serde_json::json!({"kid": k.kid, "x": k.public_x})).collect::<Vec<_>>()});
            let chains = match &a.tenant {
                Some(t) => vec![t.clone()],
                None => match catalog.chains().await {
                    Ok(c) => c,
                    Err(e) => return fail(format!("cannot list the chains: {e}")),
                },
            };
            let mut all = true;
            for chain in chains {
                match catalog.verify_checkpointed(&chain, &jwks).await {
                    Ok(Ok((v, cp))) => all &= report(&chain, &Ok(v), cp.is_some()),
                    Ok(Err(b)) => all &= report(&chain, &Err(b), false),
                    Err(e) => return fail(format!("cannot read the chain {chain}: {e}")),
                }
            }
            all
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
