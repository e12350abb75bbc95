//! `tenantd master-key rotate`: re-wraps every tenant's data keys and tenantd's signing
//! keys under a new master key, in one transaction, without touching tenant data
//! (docs/protection.md). Run it with the servers stopped, then start them with the new
//! key.
use crate::config::{Config, ServeArgs};
use crate::keyring::{master_key, open_own, seal_own, write_key_file, MASTER_KEY_FILE};
use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use tenantd_core::crypto::{self, Key};
use tenantd_store::prelude::*;

/// `tenantd master-key …`
#[derive(Debug, Subcommand)]
pub enum MasterKeyCmd {
    /// Re-wraps every data key and signing key under a new master key (the servers
    /// stopped); then start them with `--master-key-file` naming the new key.
    Rotate {
        #[command(flatten)]
        args: ServeArgs,
        /// The new key's file: read if it exists (base64 of 32 bytes), else generated
        /// there (mode 0600).
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

/// Runs a `master-key` command; what it did, for the operator.
pub async fn run(cmd: MasterKeyCmd) -> Result<String> {
    let MasterKeyCmd::Rotate { args, new_key_file } = cmd;
    let cfg = Config::load(&args)?;
    // Rotating must not invent the key it rotates from.
    let current = cfg
        .master_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(MASTER_KEY_FILE));
    if cfg.master_key.is_none() && !current.exists() {
        bail!(
            "no master key to rotate from: set TENANTD_MASTER_KEY or --master-key-file, or keep {}",
            current.display()
        );
    }
    let old = master_key(&cfg)?;
    let new = new_key(&new_key_file)?;
    if new == old {
        bail!("{} holds the current master key", new_key_file.display());
    }
    let catalog = crate::startup::open_catalog(&cfg).await?;
    let recorded = catalog.master_fingerprint().await?;
    if recorded.as_deref().is_some_and(|f| f != old.fingerprint()) {
        bail!(
            "the current master key (fingerprint {}) is not the catalog's ({}): nothing was changed",
            old.fingerprint(),
            recorded.unwrap_or_default()
        );
    }
    // Read before the unit of work: on SQLite it holds the one write lock.
    let signing = catalog.signing_keys().await?;
    let mut w = catalog.begin().await?;
    let data_keys = catalog.all_data_keys(&mut w).await?;
    for (tenant, version, wrapped) in &data_keys {
        let bytes = STANDARD.decode(wrapped).context("a stored data key is not base64")?;
        let dk = crypto::unwrap(&old, tenant.as_str(), *version, &bytes)
            .with_context(|| format!("tenant {tenant}'s data key {version}"))?;
        let rewrapped = STANDARD.encode(crypto::wrap(&new, tenant.as_str(), *version, &dk)?);
        catalog.rewrap_data_key(&mut w, tenant, *version, &rewrapped).await?;
    }
    for k in &signing {
        let what = format!("signing-key/{}", k.kid);
        let plain = open_own(&old, &what, &k.private_pkcs8)
            .with_context(|| format!("signing key {}", k.kid))?
            .unwrap_or_else(|| k.private_pkcs8.clone());
        catalog
            .set_signing_key_private(Some(&mut w), &k.kid, &seal_own(&new, &what, &plain)?)
            .await?;
    }
    catalog.set_master_fingerprint(&mut w, &new.fingerprint()).await?;
    w.commit().await?;
    Ok(format!(
        "re-wrapped {} data keys and {} signing keys under the key in {} (fingerprint {}); \
         start tenantd with --master-key-file {} (or TENANTD_MASTER_KEY_FILE), and keep the old key until then",
        data_keys.len(),
        signing.len(),
        new_key_file.display(),
        new.fingerprint(),
        new_key_file.display()
    ))
}

/// The key in `path`, or a new one written there.
fn new_key(path: &Path) -> Result<Key> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Key::from_base64(&text).with_context(|| path.display().to_string())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Key::generate()?;
            write_key_file(path, &k).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(k)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
