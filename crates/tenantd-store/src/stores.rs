//! The catalog's traits, one per resource, composed into [`Catalog`](crate::Catalog).
//! [`SqlCatalog`](crate::SqlCatalog) implements each in a module of its own (`sql/`).
//! A caller names the traits it uses (`use tenantd_store::prelude::*`).
use crate::*;

/// Plans: what tenants subscribe to.
#[async_trait::async_trait]
pub trait PlanStore: Send + Sync {
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
}

/// Tenants and their lifecycle, purge included.
#[async_trait::async_trait]
pub trait TenantStore: Send + Sync {
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
}

/// Users and their memberships in tenants.
#[async_trait::async_trait]
pub trait MemberStore: Send + Sync {
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
    /// [`MemberStore::add_member`] only while the tenant has fewer than `max` members,
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
    /// Erases a person (docs/protection.md): every membership and the user go, and their
    /// email in every event becomes `pseudonym`. Such events keep their digest and links
    /// and are marked redacted (the digest covers what they held before), so every chain
    /// still verifies. Even the last owner goes.
    async fn erase_user(&self, w: &mut Work, user_id: &str, pseudonym: &str) -> Result<Erased>;
}

/// A tenant's custom roles.
#[async_trait::async_trait]
pub trait RoleStore: Send + Sync {
    /// The tenant's custom roles.
    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<tenantd_core::Role>>;
    /// One custom role.
    async fn get_role(&self, tenant: &TenantId, name: &str) -> Result<Option<tenantd_core::Role>>;
    /// Creates a custom role; `Conflict` if the name is taken.
    async fn create_role(&self, w: &mut Work, tenant: &TenantId, role: &tenantd_core::Role) -> Result<()>;
    /// Deletes a custom role; `Conflict` while members or keys hold it.
    async fn delete_role(&self, w: &mut Work, tenant: &TenantId, name: &str) -> Result<()>;
}

/// A tenant's workspaces and their members.
#[async_trait::async_trait]
pub trait WorkspaceStore: Send + Sync {
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
}

/// Tenants' API keys (hashes only).
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key (its hash only).
    async fn create_key(&self, w: &mut Work, key: &ApiKey) -> Result<()> {
        self.create_key_within(w, key, None).await
    }
    /// [`KeyStore::create_key`] only while the tenant has fewer than `max` active keys,
    /// counted in the same transaction as the insert. `LevelReached` with the count
    /// otherwise.
    async fn create_key_within(&self, w: &mut Work, key: &ApiKey, max: Option<u64>) -> Result<()>;
    /// A key by id, whatever its tenant (the edge checks the tenant).
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// The tenant's keys, one page.
    async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>>;
    /// Revokes a key of the tenant now.
    async fn revoke_key(&self, w: &mut Work, tenant: &TenantId, id: &str, at: i64) -> Result<(ApiKey, bool)>;
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
}

/// The event log: audit, security and quota events.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Retention: the tenant's events before `before` (Unix seconds) become redacted
    /// tombstones (their digest and links stay, so the chain verifies); how many.
    async fn redact_events_before(&self, tenant: &TenantId, before: i64) -> Result<u64>;
    /// Appends an event that records no change of its own (a security or quota event), in a unit
    /// of work of its own. An event of a change is appended to the change's
    /// [`Work`] instead.
    async fn record_event(&self, ev: &NewEvent) -> Result<i64>;
    /// Adds folded repeats `(event id, n)` to stored events' `count`.
    async fn add_audit_counts(&self, repeats: &[(i64, u64)]) -> Result<()>;
    /// Audit events, newest first; `tenant = None` is the operator-wide view.
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>>;
    /// The tenant's quota events (`quota.*`), oldest first.
    async fn list_events(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<TenantEvent>>;
    /// Every chain's name, the platform's (`""`) first: a tenant's id, or, for a purged
    /// tenant's closed chain, `<id>@<purge time>`.
    async fn chains(&self) -> Result<Vec<String>>;
    /// Up to `limit` events of `chain` ([`chain_name`]) after `seq`, in `seq` order,
    /// matching `filter`'s type, actor and time conditions.
    async fn chain_events(
        &self,
        chain: &str,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>>;
    /// Checks `chain` from its start (docs/events.md), and that it ends at its recorded
    /// head: `Err(Broken)` inside names the first `seq` that does not verify.
    async fn verify_chain(&self, chain: &str) -> Result<Result<chain::Verified, chain::Broken>>;
    /// Checks `chain` as [`EventStore::verify_chain`] does, then its latest checkpoint
    /// against the public keys `jwks` ([`chain::check_checkpoint`]); the chain's result
    /// and that checkpoint.
    async fn verify_checkpointed(
        &self,
        chain: &str,
        jwks: &serde_json::Value,
    ) -> Result<Result<(chain::Verified, Option<chain::Checkpoint>), chain::Broken>> {
        let done = match self.verify_chain(chain).await? {
            Ok(v) => v,
            Err(b) => return Ok(Err(b)),
        };
        let cp = self.latest_checkpoint(chain).await?;
        if let Some(cp) = &cp {
            let at = self.chain_events(chain, &AuditFilter::default(), cp.seq - 1, 1).await?;
            let hash = at.first().filter(|e| e.seq == cp.seq).map(|e| e.hash.as_str());
            if let Err(b) = chain::check_checkpoint(cp, jwks, hash) {
                return Ok(Err(b));
            }
        }
        Ok(Ok((done, cp)))
    }
    /// Every open chain's tenant (`None`: the platform's) whose head is past its latest
    /// checkpoint, with that head's `seq` and `hash`.
    async fn heads_to_checkpoint(&self) -> Result<Vec<(Option<TenantId>, i64, String)>>;
    /// Stores a checkpoint of a chain.
    async fn add_checkpoint(&self, cp: &chain::Checkpoint) -> Result<()>;
    /// `chain`'s latest checkpoint.
    async fn latest_checkpoint(&self, chain: &str) -> Result<Option<chain::Checkpoint>>;
}

/// Webhook endpoints, their delivery log, and how far each event chain was handed to them.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint.
    async fn create_webhook(&self, w: &mut Work, hook: &Webhook) -> Result<()>;
    /// An endpoint by id, of `tenant` (`None`: the operator's).
    async fn get_webhook(&self, tenant: Option<&TenantId>, id: &str) -> Result<Webhook>;
    /// An endpoint by id, whoever's it is (for deliveries).
    async fn webhook_by_id(&self, id: &str) -> Result<Option<Webhook>>;
    /// The endpoints of `tenant` (`None`: the operator's), by id.
    async fn list_webhooks(&self, tenant: Option<&TenantId>, page: &PageRequest) -> Result<Page<Webhook>>;
    /// The enabled endpoints that get `tenant`'s events (its own and the operator's; for
    /// `None`, the platform's events, only the operator's).
    async fn webhooks_for(&self, tenant: Option<&TenantId>) -> Result<Vec<Webhook>>;
    /// Changes an endpoint's url, types, description or `enabled` (re-enabling clears its
    /// failures).
    async fn update_webhook(&self, w: &mut Work, hook: &Webhook) -> Result<()>;
    /// Deletes an endpoint and its delivery log.
    async fn delete_webhook(&self, w: &mut Work, tenant: Option<&TenantId>, id: &str) -> Result<()>;
    /// Makes `secret` the current one; the old one signs beside it until `until`.
    async fn rotate_webhook_secret(
        &self,
        w: &mut Work,
        tenant: Option<&TenantId>,
        id: &str,
        secret: &str,
        until: i64,
    ) -> Result<Webhook>;
    /// Records a delivery attempt; on success clears the endpoint's failures, on failure
    /// starts its streak at `at` if none runs.
    async fn record_delivery(&self, w: &mut Work, hook: &Webhook, d: &Delivery) -> Result<()>;
    /// Disables an endpoint (`reason`), unless it already is; whether this did.
    async fn disable_webhook(&self, w: &mut Work, id: &str, reason: &str) -> Result<bool>;
    /// An endpoint's delivery attempts, newest first.
    async fn list_deliveries(&self, id: &str, page: &PageRequest) -> Result<Page<Delivery>>;
    /// Deletes the delivery log's attempts made before `before`; how many.
    async fn prune_deliveries(&self, before: i64) -> Result<u64>;
    /// The chains whose events past their cursor have not been handed to the webhooks
    /// yet, with the cursor (0 for none).
    async fn chains_to_dispatch(&self, limit: u32) -> Result<Vec<(String, i64)>>;
    /// Takes `chain`'s cursor for the rest of `w` (made at 0 if missing); `None` when
    /// another node holds it now.
    async fn lock_cursor(&self, w: &mut Work, chain: &str) -> Result<Option<i64>>;
    /// Moves `chain`'s cursor to `seq`, in `w`.
    async fn set_cursor(&self, w: &mut Work, chain: &str, seq: i64) -> Result<()>;
}

/// Tenant configuration (schemas, the plans' and tenants' layers, every version) and
/// feature flags.
#[async_trait::async_trait]
pub trait ConfigStore: Send + Sync {
    /// Creates or replaces a key's schema and default; `Conflict` unless the stored
    /// version is `expected` (0: none), when given.
    async fn put_schema(
        &self,
        w: &mut Work,
        key: &str,
        schema: &serde_json::Value,
        default: Option<&serde_json::Value>,
        expected: Option<i64>,
    ) -> Result<ConfigSchema>;
    /// A key's schema.
    async fn get_schema(&self, key: &str) -> Result<Option<ConfigSchema>>;
    /// Every schema, by key.
    async fn list_schemas(&self) -> Result<Vec<ConfigSchema>>;
    /// Deletes a key's schema; `Conflict` while a plan or tenant layer holds a value.
    async fn delete_schema(&self, w: &mut Work, key: &str) -> Result<()>;
    /// Writes a new version of `key` in `owner`'s layer (`None` removes the layer's
    /// value); `Conflict` unless the latest version is `expected` (0: none), when given,
    /// or when another writer took the same version.
    async fn put_config(
        &self,
        w: &mut Work,
        owner: &ConfigOwner,
        key: &str,
        value: Option<&serde_json::Value>,
        expected: Option<i64>,
        actor: &str,
    ) -> Result<ConfigEntry>;
    /// A version of `key` in `owner`'s layer (`None`: the latest).
    async fn config_entry(&self, owner: &ConfigOwner, key: &str, version: Option<i64>) -> Result<Option<ConfigEntry>>;
    /// Every version of `key` in `owner`'s layer, newest first, one page.
    async fn config_versions(&self, owner: &ConfigOwner, key: &str, page: &PageRequest) -> Result<Page<ConfigEntry>>;
    /// The values `owner`'s layer holds now, by key.
    async fn config_layer(&self, owner: &ConfigOwner) -> Result<Vec<ConfigEntry>>;
    /// Every plan's layer: the values held now.
    async fn plan_layers(&self) -> Result<Vec<(PlanId, ConfigEntry)>>;
    /// Every layer's value of `key` held now, read in `w`.
    async fn current_values_in(&self, w: &mut Work, key: &str) -> Result<Vec<(ConfigOwner, ConfigEntry)>>;
    /// Creates or replaces a flag; `Conflict` unless its version is `expected` (0: none),
    /// when given.
    async fn put_flag(
        &self,
        w: &mut Work,
        key: &str,
        spec: &tenantd_core::flags::FlagSpec,
        expected: Option<i64>,
    ) -> Result<tenantd_core::flags::Flag>;
    /// A flag.
    async fn get_flag(&self, key: &str) -> Result<Option<tenantd_core::flags::Flag>>;
    /// Every flag, by key.
    async fn list_flags(&self) -> Result<Vec<tenantd_core::flags::Flag>>;
    /// Deletes a flag; what it was.
    async fn delete_flag(&self, w: &mut Work, key: &str) -> Result<tenantd_core::flags::Flag>;
}

/// What protects tenants' data (docs/protection.md): the master key's fingerprint, each
/// tenant's data keys wrapped under it, and tenants' sealed secrets.
#[async_trait::async_trait]
pub trait VaultStore: Send + Sync {
    /// The fingerprint of the master key the data keys are wrapped under, if any was
    /// recorded.
    async fn master_fingerprint(&self) -> Result<Option<String>>;
    /// Records `fingerprint` unless one is recorded; the recorded one.
    async fn claim_master_fingerprint(&self, fingerprint: &str) -> Result<String>;
    /// A tenant's data keys `(version, base64 of the wrapped key)`, oldest first.
    async fn data_keys(&self, tenant: &TenantId) -> Result<Vec<(i64, String)>>;
    /// A tenant's data key versions with when each was made (Unix seconds), oldest first.
    async fn data_key_versions(&self, tenant: &TenantId) -> Result<Vec<(i64, i64)>>;
    /// Stores a tenant's data key unless that version exists (another node made it
    /// first: read the keys again and use theirs).
    async fn add_data_key(&self, tenant: &TenantId, version: i64, wrapped: &str) -> Result<()>;
    /// Destroys every data key of a tenant (crypto-shredding); how many.
    async fn shred(&self, w: &mut Work, tenant: &TenantId) -> Result<u64>;
    /// Every tenant's wrapped data keys `(tenant, version, base64)`, read in `w` (for a
    /// master key rotation).
    async fn all_data_keys(&self, w: &mut Work) -> Result<Vec<(TenantId, i64, String)>>;
    /// Replaces a data key's wrapping (the same key under a new master key), in `w`.
    async fn rewrap_data_key(&self, w: &mut Work, tenant: &TenantId, version: i64, wrapped: &str) -> Result<()>;
    /// Records the fingerprint of the master key the data keys are now wrapped under.
    async fn set_master_fingerprint(&self, w: &mut Work, fingerprint: &str) -> Result<()>;
    /// Creates or replaces a secret (its version rises); the stored secret.
    async fn put_secret(
        &self,
        w: &mut Work,
        tenant: &TenantId,
        name: &str,
        key_version: i64,
        sealed: &str,
    ) -> Result<StoredSecret>;
    /// One secret, sealed.
    async fn get_secret(&self, tenant: &TenantId, name: &str) -> Result<Option<StoredSecret>>;
    /// The tenant's secrets, sealed, by name.
    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<StoredSecret>>;
    /// Replaces a secret's sealed value (the same value under another key) if it is
    /// still at `version`; whether it was.
    async fn reseal_secret(
        &self,
        tenant: &TenantId,
        name: &str,
        version: i64,
        key_version: i64,
        sealed: &str,
    ) -> Result<bool>;
    /// Deletes a secret; what it was.
    async fn delete_secret(&self, w: &mut Work, tenant: &TenantId, name: &str) -> Result<StoredSecret>;
}

/// The name of a tenant's chain (`None`: the platform's, `""`).
pub fn chain_name(tenant: Option<&TenantId>) -> &str {
    tenant.map_or("", |t| t.as_str())
}

/// tenantd's own keys: JWT signing keys and the generated operator key.
#[async_trait::async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// tenantd's JWT signing keys, by generation (oldest first).
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Stores a new signing key, unless its kid or generation is taken (another node
    /// added that generation first: reload and use theirs).
    async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<()>;
    /// Replaces a signing key's stored private key (sealed again, under a new master key).
    async fn set_signing_key_private(&self, w: Option<&mut Work>, kid: &str, private: &[u8]) -> Result<()>;

    /// The hex SHA-256 of the generated operator key, if one was generated.
    async fn operator_key_hash(&self) -> Result<Option<String>>;
    /// Forgets the generated operator key; `true` if there was one.
    async fn clear_operator_key_hash(&self) -> Result<bool>;
    /// Stores the generated operator key's hash; `false` if another node stored one first.
    async fn set_operator_key_hash(&self, hash_hex: &str) -> Result<bool>;
}

/// Tenants' custom domains.
#[async_trait::async_trait]
pub trait DomainStore: Send + Sync {
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
}

/// Usage counters, levels, idempotency keys and plan history.
#[async_trait::async_trait]
pub trait UsageStore: Send + Sync {
    /// Retention: deletes the tenant's counters of periods that started before `before`
    /// (its live levels stay); how many.
    async fn prune_usage(&self, tenant: &TenantId, before: i64) -> Result<u64>;
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
    /// Adds deltas to counters in the unit of work `w`, to commit with its changes:
    /// metered use a change accounts for (a job's run time).
    async fn add_counters_in(&self, w: &mut Work, deltas: &[CounterRow]) -> Result<()>;
    /// Begins recording a batch of the tenant's usage events: claims their idempotency
    /// keys (sorted, without repeats) in a transaction that commits only with their
    /// counts ([`UsageWrite`]).
    async fn begin_usage(&self, tenant: &TenantId, keys: &[String]) -> Result<Box<dyn UsageWrite>>;
    /// `(since, plan)` for every plan the tenant has been on, oldest first.
    async fn plan_history(&self, tenant: &TenantId) -> Result<Vec<(i64, String)>>;
    /// Records that the tenant is on `plan` from `at` (tenant creation and plan changes
    /// do this themselves; imports and tests of past months use it directly).
    async fn record_plan(&self, tenant: &TenantId, at: i64, plan: &str) -> Result<()>;
    /// Sets level snapshots (window `total`, period = the UTC day), replacing that day's.
    async fn set_levels(&self, levels: &[CounterRow]) -> Result<()>;
    /// A level counted from the catalog (members, active keys).
    async fn count(&self, tenant: &TenantId, what: Countable) -> Result<u64>;
}

/// Cache invalidation between nodes sharing a catalog.
#[async_trait::async_trait]
pub trait Notify: Send + Sync {
    /// Tells other nodes sharing this catalog that `topic` changed (no-op on SQLite).
    async fn publish(&self, topic: &str) -> Result<()>;
    /// Hears other nodes' [`Notify::publish`]es; `None` where there are no other nodes.
    async fn subscribe(&self) -> Result<Option<tokio::sync::mpsc::Receiver<notify::Invalidation>>>;
}

/// A batch of usage events being recorded: their idempotency keys are claimed in a
/// transaction that stays open until [`UsageWrite::commit`] adds their counts in it, so
/// an acknowledged event, its key and its count are stored together or not at all
/// (docs/limits.md). Dropped without a commit, nothing is stored. A writer claiming a key
/// another open write holds waits for that one to end.
#[async_trait::async_trait]
pub trait UsageWrite: Send {
    /// For each key asked for, whether this write claimed it (it was not seen before).
    fn fresh(&self) -> &[bool];
    /// Adds `deltas` to the counters, sets the day's `levels`, stores the tenant's
    /// `events` (`(type, data)`), and commits everything with the keys.
    async fn commit(
        self: Box<Self>,
        deltas: &[CounterRow],
        levels: &[CounterRow],
        events: &[(&str, serde_json::Value)],
    ) -> Result<()>;
}

/// Tenants' exports and backups (docs/protection.md): each a `.tar.gz` in chunks.
#[async_trait::async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Records a new archive, `queued`.
    async fn create_archive(&self, a: &NewArchive) -> Result<Archive>;
    /// One archive of the tenant.
    async fn get_archive(&self, tenant: &TenantId, id: &str) -> Result<Archive>;
    /// The tenant's archives of `kind`, newest first.
    async fn list_archives(&self, tenant: &TenantId, kind: ArchiveKind) -> Result<Vec<Archive>>;
    /// Stores chunk `seq` of an archive being built (again: replaced).
    async fn put_archive_chunk(&self, tenant: &TenantId, id: &str, seq: i64, data: &[u8]) -> Result<()>;
    /// Chunk `seq` of an archive; `None` past its end.
    async fn archive_chunk(&self, id: &str, seq: i64) -> Result<Option<Vec<u8>>>;
    /// Sets an archive's state and progress.
    async fn archive_progress(&self, id: &str, state: &str, done: u64, total: u64) -> Result<()>;
    /// Ends an archive: `done` with its size, digest, chunk count and file counts, or
    /// `failed` with the error (its chunks dropped).
    async fn finish_archive(&self, id: &str, end: &ArchiveEnd) -> Result<()>;
    /// Deletes an archive and its chunks; whether there was one.
    async fn delete_archive(&self, id: &str) -> Result<bool>;
    /// Archives whose `expires_at` passed by `now`: `(tenant, id)`.
    async fn expired_archives(&self, now: i64) -> Result<Vec<(TenantId, String)>>;
}
