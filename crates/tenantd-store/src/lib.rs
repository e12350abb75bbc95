//! The tenantd catalog: tenants, plans, users, memberships, roles, workspaces, API keys,
//! audit events and signing keys, behind the [`Catalog`] trait.
//!
//! [`SqlCatalog`] implements it on embedded SQLite (the default, WAL mode) and on
//! PostgreSQL. Both backends run the same statements (portable SQL with `$n`
//! placeholders through sqlx's `Any` driver), each with its own migrations folder, and
//! one test suite (`tests/catalog.rs`) runs against both.
#![forbid(unsafe_code)]

mod cursor;
mod domains;
mod model;
pub mod notify;
mod sql;
pub mod testing;
mod usage;
mod work;

pub use cursor::Cursors;
pub use domains::Domain;
pub use model::*;
pub use sql::{Backend, SqlCatalog};
pub use tenantd_core::usage::{CounterRow, TenantEvent};
pub use usage::{Countable, UsageWrite};
pub use work::Work;

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

/// The catalog's operations. Every method that touches one tenant's rows takes that
/// tenant's id first; operator-wide queries (`list_tenants`, `list_audit` with no
/// tenant) are named as such.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + 'static {
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

    // --- plans
    /// All plans, by id.
    async fn list_plans(&self) -> Result<Vec<Plan>>;
    /// One plan.
    async fn get_plan(&self, id: &PlanId) -> Result<Plan>;
    /// Creates a plan; `Conflict` if the id is taken.
    async fn create_plan(&self, w: &mut Work, plan: &Plan) -> Result<()>;
    /// Replaces a plan's fields.
    async fn update_plan(&self, w: &mut Work, plan: &Plan) -> Result<()>;
    /// Deletes a plan no tenant uses; `Conflict` otherwise.
    async fn delete_plan(&self, w: &mut Work, id: &PlanId) -> Result<()>;

    // --- tenants
    /// Creates a tenant with its owner (user created if new). The same request twice
    /// answers `Existing` with the tenant; a different one for a taken id, `Conflict`.
    async fn create_tenant(&self, w: &mut Work, new: &NewTenant) -> Result<Created<Tenant>>;
    /// One tenant, whatever its status.
    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant>;
    /// Operator-wide: tenants by id, filtered, one page.
    async fn list_tenants(&self, filter: &TenantFilter, page: &PageRequest) -> Result<Page<Tenant>>;
    /// Changes name, plan, settings or limit overrides.
    async fn update_tenant(&self, w: &mut Work, id: &TenantId, patch: &TenantPatch) -> Result<Tenant>;
    /// Applies a lifecycle transition (suspend with a reason, resume, delete, restore).
    /// A deleted tenant whose retention has ended (`purge_after` passed) cannot be
    /// restored: `Conflict`.
    async fn transition_tenant(
        &self,
        w: &mut Work,
        id: &TenantId,
        t: tenantd_core::tenant::Transition,
        reason: Option<&str>,
    ) -> Result<Tenant>;
    /// Operator-wide: deleted tenants whose retention ended by `now` (Unix seconds), by
    /// id, after `after`, up to `limit`.
    async fn purgeable_tenants(&self, now: i64, after: Option<&TenantId>, limit: u32) -> Result<Vec<TenantId>>;
    /// Removes every row of a deleted tenant whose retention ended by `now`, in one
    /// transaction: the tenant, its members, roles, workspaces, API keys, domains,
    /// usage, events and audit trail, and the users who belonged to no other tenant.
    /// Its `security.*` audit events stay for the operator, under no tenant.
    /// Answers how many rows went. `NotFound` if there is no such tenant (purged
    /// already); `Conflict` if it is not deleted or its retention has not ended.
    async fn purge_tenant(&self, w: &mut Work, id: &TenantId, now: i64) -> Result<u64>;

    // --- users and members
    /// The user with this email, created if new.
    async fn ensure_user(&self, email: &Email) -> Result<User>;
    /// A user by id.
    async fn get_user(&self, id: &str) -> Result<User>;
    /// A user by email, if known.
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>>;
    /// Every tenant the user belongs to, with the role there.
    async fn user_memberships(&self, user_id: &str) -> Result<Vec<(TenantId, String)>>;
    /// The user's role in the tenant, if a member.
    async fn member_role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>>;
    /// The tenant's members, one page, by user id.
    async fn list_members(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Member>>;
    /// Adds a member (user created if new); `Conflict` if already a member.
    async fn add_member(&self, w: &mut Work, tenant: &TenantId, email: &Email, role: &str) -> Result<Member> {
        self.add_member_within(w, tenant, email, role, None).await
    }
    /// [`Catalog::add_member`] only while the tenant has fewer than `max` members,
    /// counted in the same transaction as the insert: nodes sharing the catalog together
    /// never pass it. `LevelReached` with the count otherwise.
    async fn add_member_within(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        email: &Email,
        role: &str,
        max: Option<u64>,
    ) -> Result<Member>;
    /// Changes a member's role; `LastOwner` if it would demote the last owner.
    async fn set_member_role(&self, w: &mut Work, tenant: &TenantId, user_id: &str, role: &str) -> Result<Member>;
    /// Removes a member; `LastOwner` if it is the last owner.
    async fn remove_member(&self, w: &mut Work, tenant: &TenantId, user_id: &str) -> Result<()>;

    // --- custom roles
    /// The tenant's custom roles.
    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<tenantd_core::Role>>;
    /// One custom role.
    async fn get_role(&self, tenant: &TenantId, name: &str) -> Result<Option<tenantd_core::Role>>;
    /// Creates a custom role; `Conflict` if the name is taken.
    async fn create_role(&self, w: &mut Work, tenant: &TenantId, role: &tenantd_core::Role) -> Result<()>;
    /// Deletes a custom role; `Conflict` while members or keys hold it.
    async fn delete_role(&self, w: &mut Work, tenant: &TenantId, name: &str) -> Result<()>;

    // --- workspaces
    /// The tenant's workspaces.
    async fn list_workspaces(&self, tenant: &TenantId) -> Result<Vec<Workspace>>;
    /// One workspace with its members.
    async fn get_workspace(&self, tenant: &TenantId, id: &str) -> Result<Workspace>;
    /// Creates a workspace; `Conflict` if the id is taken.
    async fn create_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str, name: &str) -> Result<Workspace>;
    /// Renames a workspace.
    async fn rename_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str, name: &str) -> Result<Workspace>;
    /// Deletes a workspace and its memberships.
    async fn delete_workspace(&self, w: &mut Work, tenant: &TenantId, id: &str) -> Result<()>;
    /// Adds (or re-roles) a tenant member in a workspace.
    async fn add_workspace_member(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        ws: &str,
        email: &Email,
        role: &str,
    ) -> Result<WorkspaceMember>;
    /// The user's role in the workspace, if added.
    async fn workspace_role(&self, tenant: &TenantId, ws: &str, user_id: &str) -> Result<Option<String>>;

    // --- API keys
    /// Stores a new key (its hash only).
    async fn create_key(&self, w: &mut Work, key: &ApiKey) -> Result<()> {
        self.create_key_within(w, key, None).await
    }
    /// [`Catalog::create_key`] only while the tenant has fewer than `max` active keys,
    /// counted in the same transaction as the insert. `LevelReached` with the count
    /// otherwise.
    async fn create_key_within(&self, w: &mut Work, key: &ApiKey, max: Option<u64>) -> Result<()>;
    /// A key by id, whatever its tenant (the edge checks the tenant).
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// The tenant's keys, one page.
    async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>>;
    /// Revokes a key of the tenant now.
    async fn revoke_key(&self, w: &mut Work, tenant: &TenantId, id: &str, at: i64) -> Result<ApiKey>;
    /// Replaces a live key's secret hash and prefix (rotation); `Conflict` if revoked.
    async fn rotate_key(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        id: &str,
        prefix: &str,
        hash_hex: &str,
    ) -> Result<ApiKey>;
    /// Writes batched `last_used_at` values.
    async fn touch_keys(&self, used: &[(String, i64)]) -> Result<()>;

    // --- audit
    /// Appends an event that records no change of its own (a security event), in a unit
    /// of work of its own. An event of a change is appended to the change's
    /// [`Work`] instead.
    async fn record_audit(&self, ev: &NewAuditEvent) -> Result<i64>;
    /// Adds folded repeats `(event id, n)` to stored events' `count`.
    async fn add_audit_counts(&self, repeats: &[(i64, u64)]) -> Result<()>;
    /// Audit events, newest first; `tenant = None` is the operator-wide view.
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>>;

    // --- signing keys
    /// tenantd's JWT signing keys, by generation (oldest first).
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Stores a new signing key, unless its kid or generation is taken (another node
    /// added that generation first: reload and use theirs).
    async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<()>;

    // --- custom domains
    /// Claims a host for the tenant; `Conflict` if any tenant has it.
    async fn add_domain(&self, w: &mut Work, tenant: &TenantId, host: &str, token: &str) -> Result<Domain>;
    /// One of the tenant's domains.
    async fn get_domain(&self, tenant: &TenantId, host: &str) -> Result<Domain>;
    /// The tenant's domains.
    async fn list_domains(&self, tenant: &TenantId) -> Result<Vec<Domain>>;
    /// Marks a domain verified.
    async fn verify_domain(&self, w: &mut Work, tenant: &TenantId, host: &str, at: i64) -> Result<Domain>;
    /// Releases a domain.
    async fn delete_domain(&self, w: &mut Work, tenant: &TenantId, host: &str) -> Result<()>;
    /// Operator-wide: every verified host of a live tenant, for the edge.
    async fn verified_domains(&self) -> Result<Vec<(String, TenantId)>>;

    // --- usage
    /// The tenant's counters (all scopes) of periods starting at or after `since`, and
    /// its levels.
    async fn load_counters(&self, tenant: &TenantId, since: i64) -> Result<Vec<CounterRow>>;
    /// The tenant's own counters of `window` with periods in `[from, to)`.
    async fn counters_in(
        &self,
        tenant: &TenantId,
        window: tenantd_core::Window,
        from: i64,
        to: i64,
    ) -> Result<Vec<CounterRow>>;
    /// Adds deltas to counters (creating them), in one transaction.
    async fn add_counters(&self, deltas: &[CounterRow]) -> Result<()>;
    /// Begins recording a batch of the tenant's usage events: claims their idempotency
    /// keys (sorted, without repeats) in a transaction that commits only with their
    /// counts ([`UsageWrite`]).
    async fn begin_usage(&self, tenant: &TenantId, keys: &[String]) -> Result<Box<dyn UsageWrite>>;
    /// Stores a tenant event.
    async fn record_event(&self, tenant: &TenantId, kind: &str, data: &serde_json::Value) -> Result<()>;
    /// The tenant's events, oldest first.
    async fn list_events(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<TenantEvent>>;
    /// `(since, plan)` for every plan the tenant has been on, oldest first.
    async fn plan_history(&self, tenant: &TenantId) -> Result<Vec<(i64, String)>>;
    /// Records that the tenant is on `plan` from `at` (tenant creation and plan changes
    /// do this themselves; imports and tests of past months use it directly).
    async fn record_plan(&self, tenant: &TenantId, at: i64, plan: &str) -> Result<()>;
    /// Sets level snapshots (window `total`, period = the UTC day), replacing that day's.
    async fn set_levels(&self, levels: &[CounterRow]) -> Result<()>;
    /// A level counted from the catalog (members, active keys).
    async fn count(&self, tenant: &TenantId, what: Countable) -> Result<u64>;

    // --- cache invalidation between nodes
    /// Tells other nodes sharing this catalog that `topic` changed (no-op on SQLite).
    async fn publish(&self, topic: &str) -> Result<()>;
    /// Hears other nodes' [`Catalog::publish`]es; `None` where there are no other nodes.
    async fn subscribe(&self) -> Result<Option<tokio::sync::mpsc::Receiver<notify::Invalidation>>>;

    // --- operator key
    /// The hex SHA-256 of the generated operator key, if one was generated.
    async fn operator_key_hash(&self) -> Result<Option<String>>;
    /// Forgets the generated operator key; `true` if there was one.
    async fn clear_operator_key_hash(&self) -> Result<bool>;
    /// Stores the generated operator key's hash; `false` if another node stored one first.
    async fn set_operator_key_hash(&self, hash_hex: &str) -> Result<bool>;
}
