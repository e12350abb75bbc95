//! The key hierarchy (docs/protection.md): the master key, and each tenant's versioned
//! data keys wrapped under it. The [`Keyring`] seals and opens a tenant's values with its
//! data keys, unwrapping each key once per process.
use crate::config::Config;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantd_core::crypto::{self, CryptoError, Key, TenantKeys};
use tenantd_core::TenantId;
use tenantd_store::{Catalog, StoreError};

/// The master key's file in the data directory when none is given.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Why the master key could not be had.
#[derive(Debug, thiserror::Error)]
#[error("master key: {0}")]
pub struct MasterKeyError(pub String);

/// The master key: `TENANTD_MASTER_KEY` (base64 of 32 bytes), else the file
/// `--master-key-file` names, else `<data-dir>/master.key`, generated (mode 0600) at the
/// first start.
pub fn master_key(cfg: &Config) -> Result<Key, MasterKeyError> {
    let bad = |where_: &str, e: CryptoError| MasterKeyError(format!("{where_}: {e}"));
    if let Some(k) = &cfg.master_key {
        return Key::from_base64(k.expose()).map_err(|e| bad("TENANTD_MASTER_KEY", e));
    }
    let path = cfg
        .master_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(MASTER_KEY_FILE));
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => Key::from_base64(&text).map_err(|e| bad(&shown, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cfg.master_key_file.is_none() => {
            let key = Key::generate().map_err(|e| bad("generating", e))?;
            write_key_file(&path, &key).map_err(|e| MasterKeyError(format!("cannot write {shown}: {e}")))?;
            tracing::warn!(path = %shown, fingerprint = %key.fingerprint(),
                "generated a master key: back this file up apart from the database; without it no tenant's data can be read");
            Ok(key)
        }
        Err(e) => Err(MasterKeyError(format!("cannot read {shown}: {e}"))),
    }
}

/// Writes a key file readable by its owner only; never over an existing file.
pub fn write_key_file(path: &std::path::Path, key: &Key) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{}", key.to_base64())?;
    f.sync_all()
}

/// The first bytes of a value of tenantd's own (a JWT signing key) sealed under the
/// master key; a stored value without them is from before keys were sealed.
const OWN_SEALED: &[u8] = b"TDS1";

fn own_aad(what: &str) -> Vec<u8> {
    format!("tenantd/own/{what}").into_bytes()
}

/// Seals a value of tenantd's own (`what`: `signing-key/<kid>`) under the master key.
pub fn seal_own(master: &Key, what: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Ok([OWN_SEALED, &crypto::seal(master, &own_aad(what), plain)?].concat())
}

/// Opens what [`seal_own`] made; `None` for a value stored before sealing (in the clear).
pub fn open_own(master: &Key, what: &str, stored: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
    match stored.strip_prefix(OWN_SEALED) {
        Some(sealed) => crypto::open(master, &own_aad(what), sealed).map(Some),
        None => Ok(None),
    }
}

/// What can go wrong sealing or opening a tenant's value.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The catalog failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value or key did not decrypt, or its key is gone.
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

/// How long a node trusts its unwrapped copy of a tenant's keys: a rotation on another
/// node is seen within this (and at once by a value sealed under a newer version).
const KEYS_TTL: Duration = Duration::from_secs(5);

struct Cached {
    keys: Arc<TenantKeys>,
    at: Instant,
}

/// Seals and opens tenants' values under their data keys.
pub struct Keyring {
    master: Key,
    catalog: Arc<dyn Catalog>,
    tenants: DashMap<TenantId, Cached>,
}

impl Keyring {
    /// Over `catalog`, with `master`, which must be the key the catalog's data keys are
    /// wrapped under (the first node to start records its fingerprint).
    pub async fn open(master: Key, catalog: Arc<dyn Catalog>) -> Result<Self, MasterKeyError> {
        let mine = master.fingerprint();
        let recorded = catalog
            .claim_master_fingerprint(&mine)
            .await
            .map_err(|e| MasterKeyError(e.to_string()))?;
        if recorded != mine {
            return Err(MasterKeyError(format!(
                "this master key (fingerprint {mine}) is not the one the catalog's data keys are wrapped under \
                 ({recorded}): start with that key (TENANTD_MASTER_KEY, --master-key-file or <data-dir>/{MASTER_KEY_FILE})"
            )));
        }
        Ok(Self {
            master,
            catalog,
            tenants: DashMap::new(),
        })
    }

    /// The tenant's keys as the catalog has them now.
    async fn reload(&self, tenant: &TenantId) -> Result<Option<Arc<TenantKeys>>, KeyringError> {
        let mut keys = BTreeMap::new();
        for (version, wrapped) in self.catalog.data_keys(tenant).await? {
            let bytes = STANDARD.decode(wrapped).map_err(|_| CryptoError::Open)?;
            keys.insert(version, crypto::unwrap(&self.master, tenant.as_str(), version, &bytes)?);
        }
        let Some(k) = TenantKeys::new(tenant.as_str(), keys).map(Arc::new) else {
            self.tenants.remove(tenant);
            return Ok(None);
        };
        self.tenants.insert(
            *tenant,
            Cached {
                keys: k.clone(),
                at: Instant::now(),
            },
        );
        Ok(Some(k))
    }

    /// The tenant's keys, reloaded when the copy here is old or lacks `version`.
    pub async fn load(&self, tenant: &TenantId, version: Option<i64>) -> Result<Option<Arc<TenantKeys>>, KeyringError> {
        if let Some(c) = self.tenants.get(tenant) {
            if c.at.elapsed() < KEYS_TTL && version.is_none_or(|v| c.keys.has(v)) {
                return Ok(Some(c.keys.clone()));
            }
        }
        self.reload(tenant).await
    }

    /// The tenant's keys, its first one made if it has none.
    pub async fn keys(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, KeyringError> {
        if let Some(k) = self.load(tenant, None).await? {
            return Ok(k);
        }
        self.add_version(tenant, 1).await?;
        Ok(self.reload(tenant).await?.ok_or(CryptoError::NoKey(1))?)
    }

    /// Makes the tenant's data key `version` (another node making the same version at the
    /// same time: whichever was stored wins).
    async fn add_version(&self, tenant: &TenantId, version: i64) -> Result<(), KeyringError> {
        let dk = Key::generate()?;
        let wrapped = STANDARD.encode(crypto::wrap(&self.master, tenant.as_str(), version, &dk)?);
        self.catalog.add_data_key(tenant, version, &wrapped).await?;
        Ok(())
    }

    /// Starts the tenant's next data key version (values are re-sealed under it by the
    /// `tenantd.reseal` job); returns it.
    pub async fn rotate(&self, tenant: &TenantId) -> Result<i64, KeyringError> {
        let next = self.reload(tenant).await?.map_or(1, |k| k.current() + 1);
        self.add_version(tenant, next).await?;
        self.reload(tenant).await?;
        Ok(next)
    }

    /// Seals `plaintext` as the tenant's `kind`/`name` under its current data key: the
    /// key's version and base64 of the sealed bytes.
    pub async fn seal(
        &self,
        tenant: &TenantId,
        kind: &str,
        name: &str,
        plaintext: &[u8],
    ) -> Result<(i64, String), KeyringError> {
        let (v, sealed) = self.keys(tenant).await?.seal(kind, name, plaintext)?;
        Ok((v, STANDARD.encode(sealed)))
    }

    /// Opens what [`Keyring::seal`] made for the same tenant, kind and name.
    pub async fn open_value(
        &self,
        tenant: &TenantId,
        kind: &str,
        name: &str,
        key_version: i64,
        sealed: &str,
    ) -> Result<Vec<u8>, KeyringError> {
        let k = self
            .load(tenant, Some(key_version))
            .await?
            .ok_or(CryptoError::NoKey(key_version))?;
        let bytes = STANDARD.decode(sealed).map_err(|_| CryptoError::Open)?;
        Ok(k.open(key_version, kind, name, &bytes)?)
    }

    /// The master key, for tenantd's own values ([`seal_own`]).
    pub fn master(&self) -> &Key {
        &self.master
    }

    /// Forgets a tenant's unwrapped keys (after they were destroyed).
    pub fn forget(&self, tenant: &TenantId) {
        self.tenants.remove(tenant);
    }
}

impl tenantd_data::DataKeys for Keyring {
    fn sealing<'a>(&'a self, tenant: &'a TenantId) -> BoxFuture<'a, Result<Arc<TenantKeys>, String>> {
        Box::pin(async move { self.keys(tenant).await.map_err(|e| e.to_string()) })
    }

    fn opening<'a>(
        &'a self,
        tenant: &'a TenantId,
        version: i64,
    ) -> BoxFuture<'a, Result<Option<Arc<TenantKeys>>, String>> {
        Box::pin(async move { self.load(tenant, Some(version)).await.map_err(|e| e.to_string()) })
    }
}
