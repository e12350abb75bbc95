//! The tenantd catalog: tenants, plans, users, memberships, roles, workspaces, API keys,
//! audit events and signing keys, behind the [`Catalog`] trait.
//!
//! [`SqlCatalog`] implements it on embedded SQLite (the default, WAL mode) and on
//! PostgreSQL. Both backends run the same statements (portable SQL with `$n`
//! placeholders through sqlx's `Any` driver), each with its own migrations folder, and
//! one test suite (`tests/catalog.rs`) runs against both.
#![forbid(unsafe_code)]

mod archive;
pub mod chain;
mod cursor;
mod model;
pub mod notify;
mod settings;
mod sql;
mod stores;
mod tables;
pub mod testing;
mod work;

pub use archive::{Archive, ArchiveEnd, ArchiveKind, NewArchive};
pub use cursor::Cursors;
pub use model::*;
pub use settings::*;
pub use sql::{schema_version, Backend, SqlCatalog};
pub use stores::*;
pub use tables::{TenantTable, TENANT_TABLES};
pub use tenantd_core::usage::{CounterRow, TenantEvent};
pub use work::Work;

/// The catalog's traits, for `use tenantd_store::prelude::*` where their methods are called.
pub mod prelude {
    pub use crate::stores::{
        ArchiveStore, ConfigStore, DomainStore, EventStore, KeyStore, MemberStore, Notify, PlanStore, RoleStore,
        SigningKeyStore, TenantStore, UsageStore, UsageWrite, VaultStore, WebhookStore,
    };
    pub use crate::Catalog;
}

use tenantd_core::{Email, Plan, PlanId, StatusError, TenantId};

/// What can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (for this tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// A level (members, active keys) is at the maximum asked for; the count.
    #[error("the tenant already has {0}, the most allowed")]
    LevelReached(u64),
    /// The change would leave the tenant without an owner.
    #[error("a tenant must keep at least one owner")]
    LastOwner,
    /// Input the domain refuses.
    #[error("{0}")]
    Invalid(String),
    /// A status change that is not allowed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored JSON did not parse (a bug or a hand-edited row).
    #[error("corrupt stored value: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Result alias for the catalog.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The catalog: every resource's store, and what the whole catalog does (migrations,
/// cursors, units of work). Every method that touches one tenant's rows takes that
/// tenant's id first; operator-wide queries (`list_tenants`, `list_audit` with no
/// tenant) are named as such.
#[async_trait::async_trait]
pub trait Catalog:
    PlanStore
    + TenantStore
    + MemberStore
    + RoleStore
    + WorkspaceStore
    + KeyStore
    + DomainStore
    + EventStore
    + WebhookStore
    + ConfigStore
    + VaultStore
    + ArchiveStore
    + UsageStore
    + SigningKeyStore
    + Notify
    + Send
    + Sync
    + 'static
{
    /// Applies pending migrations and seeds the built-in plans if there are none.
    async fn migrate(&self) -> Result<()>;
    /// Seals and opens this deployment's page cursors (the key is the catalog's, so
    /// every node accepts every node's cursors).
    fn cursors(&self) -> &Cursors;
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Begins a unit of work: the writes given it, and the events appended to it, commit
    /// together ([`Work::commit`]) or not at all.
    async fn begin(&self) -> Result<Work>;
    /// The catalog's connections now.
    fn pool_use(&self) -> PoolUse;
}

/// A connection pool's use now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open.
    pub open: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

impl PoolUse {
    /// `pool`'s use now.
    pub fn of(pool: &sqlx::AnyPool) -> Self {
        Self {
            open: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        }
    }

    /// The use of several pools together.
    pub fn sum<'a>(pools: impl IntoIterator<Item = &'a sqlx::AnyPool>) -> Self {
        pools.into_iter().map(Self::of).fold(Self::default(), |a, b| Self {
            open: a.open + b.open,
            idle: a.idle + b.idle,
            max: a.max + b.max,
        })
    }
}
