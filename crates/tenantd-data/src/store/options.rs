//! How to open the data store: [`DataOptions`].
use std::path::PathBuf;
use std::time::Duration;

/// [`DataOptions::pool_size`]'s default.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// How to open the data store. Its `Debug` masks the URLs' passwords.
#[derive(Clone)]
pub struct DataOptions {
    /// `postgres://…` (the owner's credentials: it prepares schemas, databases and the
    /// app role) or `sqlite://…/tenant-data.db` (the row tier's file).
    pub url: String,
    /// PostgreSQL: how the data plane connects (a role owning nothing and unable to
    /// bypass row-level security); `None`: [`APP_ROLE`](crate::APP_ROLE) on each server.
    pub app_url: Option<String>,
    /// PostgreSQL: the servers (owner URLs) that hold `database`-tier tenants; empty:
    /// `url`'s server.
    pub servers: Vec<String>,
    /// SQLite: the directory of per-tenant files; `None`: next to `url`'s file.
    pub dir: Option<PathBuf>,
    /// How long a moved tenant's old copy is kept after the switch, so that reads in
    /// flight (and nodes whose placement is a moment old) finish there.
    pub move_grace: Duration,
    /// PostgreSQL: connections of the row and schema tiers' pool (one per node). Keep it
    /// near twice the database server's cores: more only queue inside PostgreSQL.
    pub pool_size: u32,
}

impl std::fmt::Debug for DataOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = tenantd_core::redact_url;
        f.debug_struct("DataOptions")
            .field("url", &redact(&self.url))
            .field("app_url", &self.app_url.as_deref().map(redact))
            .field("servers", &self.servers.iter().map(|u| redact(u)).collect::<Vec<_>>())
            .field("dir", &self.dir)
            .field("move_grace", &self.move_grace)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl DataOptions {
    /// Options with the defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            app_url: None,
            servers: Vec::new(),
            dir: None,
            move_grace: Duration::from_secs(3),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}
