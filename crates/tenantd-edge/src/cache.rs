//! The catalog as the edge sees it: a [`Directory`] to load from (the local catalog or a
//! remote tenantd) and the [`EdgeCache`] in front of it, which answers the hot path
//! without I/O. Writes go through the server, which updates the cache as it writes.
use crate::keys::KeyId;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tenantd_core::{BuiltinRole, Limit, Permission, Role, TenantId, TenantStatus};

/// What the edge needs to know of a tenant.
///
/// In declaration order (`repr(C)`): what every decision reads comes first and together
/// (the id, status, counter policy, limits and the request counter: 72 bytes), so a
/// decision at a million cached tenants touches as few cache lines of the entry as it can.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct TenantEntry {
    /// The tenant's id.
    pub id: TenantId,
    /// Its status.
    pub status: TenantStatus,
    /// Its plan's policy for unreachable shared counters.
    pub counter_failure: tenantd_core::CounterFailure,
    /// Its effective limits: the plan's, with the tenant's overrides.
    pub limits: Arc<[Limit]>,
    /// Its requests and refusals at this node, carried from entry to entry by
    /// [`EdgeCache::put_tenant`]. Not part of what the entry says.
    pub activity: crate::activity::TenantCounters,
    /// Its plan.
    pub plan: tenantd_core::PlanId,
    /// Its plan's isolation tier: where its data is placed the first time it is used.
    pub isolation: tenantd_core::Isolation,
    /// Its plan's share of background job claims.
    pub job_weight: u32,
    /// Its dedicated upstream for the gateway (`settings.upstream`), if any; `Err` names
    /// why a stored value is not usable (the gateway answers 502 rather than send the
    /// tenant's traffic elsewhere).
    pub upstream: Option<Result<crate::Upstream, String>>,
    /// Its own configuration layer (docs/config.md).
    pub config: Arc<tenantd_core::layers::Layer>,
}

/// What the edge needs to know of an API key. Never the secret.
#[derive(Debug)]
pub struct KeyEntry {
    /// `key_…`
    pub id: KeyId,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// The role it acts with.
    pub role: String,
    /// Unix seconds, if it expires.
    pub expires_at: Option<i64>,
    /// Revoked keys stay cached so they are refused without I/O.
    pub revoked: bool,
    /// Last use, Unix seconds (written back in batches).
    pub last_used: AtomicI64,
    /// The key's own limits (narrowing the tenant's).
    pub limits: Arc<[Limit]>,
}

/// An error from the directory (database down, remote tenantd unreachable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct DirectoryError(pub String);

/// A security-relevant event the edge reports (cross-tenant attempts).
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    /// `security.cross_tenant_attempt`, …
    pub action: &'static str,
    /// Who tried (`operator`, `usr_…`, `key_…`, `anonymous`).
    pub actor: String,
    /// The credential's own tenant, if any: the event is recorded there, never under
    /// the tenant that was asked for (which may not exist or belong to someone else).
    pub tenant_id: Option<String>,
    /// What was asked for, for operators.
    pub detail: serde_json::Value,
    /// The request.
    pub request_id: String,
}

/// Where the edge loads what its cache misses.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// A tenant, whatever its status.
    async fn tenant(&self, id: &TenantId) -> Result<Option<TenantEntry>, DirectoryError>;
    /// A key by id, whatever its tenant.
    async fn key(&self, id: &str) -> Result<Option<KeyEntry>, DirectoryError>;
    /// The user's role in the tenant, if a member.
    async fn member_role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>, DirectoryError>;
    /// A tenant's custom role.
    async fn custom_role(&self, tenant: &TenantId, name: &str) -> Result<Option<Role>, DirectoryError>;
    /// Every verified custom domain of a live tenant.
    async fn domains(&self) -> Result<Vec<(String, TenantId)>, DirectoryError>;
    /// The id of the user with this email, created on first sight.
    async fn user_by_email(&self, email: &str) -> Result<String, DirectoryError>;
    /// Records a security event (the audit trail): the stored event's id, `None` if it
    /// could not be stored (the failure is the directory's to log).
    async fn security_event(&self, ev: SecurityEvent) -> Option<i64>;
    /// Adds folded repeats `(event id, n)` to stored security events' `count`.
    async fn fold_security_events(&self, repeats: &[(i64, u64)]);
    /// Records a quota threshold crossing (`quota.warning`, `quota.exceeded`).
    async fn quota_event(&self, crossing: tenantd_limits::Crossing);
    /// The flags and the configuration's shared layers (none by default).
    async fn settings(&self) -> Result<crate::Settings, DirectoryError> {
        Ok(crate::Settings::default())
    }
}

/// Something the cache may hold that changed in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// A tenant's plan or status.
    Tenant(&'a str),
    /// A tenant purged: it, its keys and its custom roles are gone.
    Purged(&'a str),
    /// An API key (revoked, rotated).
    Key(&'a str),
    /// A tenant's custom role `(tenant, name)`.
    Role(&'a str, &'a str),
    /// A custom domain (claimed, verified or released).
    Domain(&'a str),
    /// A plan's limits or policy: every tenant on it (and its features: the flags).
    Plan(&'a str),
    /// A tenant's configuration layer.
    Config(&'a str),
    /// Flags, configuration schemas or a plan's configuration layer.
    Settings,
}

impl Change<'_> {
    /// The topic published to other nodes.
    pub fn topic(&self) -> String {
        match self {
            Change::Tenant(t) => format!("tenant:{t}"),
            Change::Purged(t) => format!("purged:{t}"),
            Change::Key(k) => format!("key:{k}"),
            Change::Role(t, n) => format!("role:{t}/{n}"),
            Change::Domain(h) => format!("domain:{h}"),
            Change::Plan(p) => format!("plan:{p}"),
            Change::Config(t) => format!("config:{t}"),
            Change::Settings => "settings:".to_string(),
        }
    }

    /// Parses a published topic.
    pub fn parse(topic: &str) -> Option<Change<'_>> {
        let (kind, rest) = topic.split_once(':')?;
        match kind {
            "tenant" => Some(Change::Tenant(rest)),
            "purged" => Some(Change::Purged(rest)),
            "key" => Some(Change::Key(rest)),
            "role" => rest.split_once('/').map(|(t, n)| Change::Role(t, n)),
            "domain" => Some(Change::Domain(rest)),
            "plan" => Some(Change::Plan(rest)),
            "config" => Some(Change::Config(rest)),
            "settings" => Some(Change::Settings),
            _ => None,
        }
    }
}

/// A fast hasher seeded at random per process, so ids chosen by clients cannot be made
/// to collide.
type Hasher = foldhash::fast::RandomState;

/// In-memory view of tenants, keys, custom roles and verified domains, filled on miss
/// and kept current by the server's writes and other nodes' invalidations.
pub struct EdgeCache {
    tenants: DashMap<TenantId, Arc<TenantEntry>, Hasher>,
    /// By inline id, so a lookup from a presented token needs no allocation and compares
    /// no heap string.
    keys: DashMap<KeyId, Arc<KeyEntry>, Hasher>,
    roles: DashMap<String, Arc<Role>, Hasher>,
    used: Mutex<Vec<(String, i64)>>,
    /// Verified custom domains, host → tenant, replaced whole when any changes.
    domains: RwLock<Arc<HashMap<String, TenantId>>>,
    /// Set when the domains must be reloaded before the next resolution.
    domains_stale: AtomicBool,
    /// The built-in roles, with the permissions the configuration adds to them.
    builtins: Vec<Arc<Role>>,
    /// Flags and shared configuration, replaced whole ([`crate::Edge::reload_settings`]).
    settings: arc_swap::ArcSwap<crate::Settings>,
    /// The ticket of the load [`EdgeCache::settings`] came from, and the last ticket
    /// handed out ([`EdgeCache::settings_ticket`]): a load older than the one in place
    /// never replaces it.
    settings_loads: Mutex<(u64, u64)>,
    /// Each tenant's requests and refusals at this node.
    activity: crate::activity::Activity,
}

impl Default for EdgeCache {
    fn default() -> Self {
        Self::with_platform_roles(&[])
    }
}

/// How often (seconds) a key's `last_used_at` is queued for writing at most.
pub const LAST_USED_GRANULARITY: i64 = 60;

fn role_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl EdgeCache {
    /// A cache whose built-in roles also grant the given app permissions (`[roles.*]` in
    /// the configuration file, checked there).
    pub fn with_platform_roles(extra: &[(BuiltinRole, Vec<Permission>)]) -> Self {
        let builtins = BuiltinRole::ALL
            .iter()
            .map(|b| {
                let mut r = b.role();
                for (_, perms) in extra.iter().filter(|(e, _)| e == b) {
                    r.allow.extend(perms.iter().cloned());
                }
                Arc::new(r)
            })
            .collect();
        Self {
            tenants: DashMap::default(),
            keys: DashMap::default(),
            roles: DashMap::default(),
            used: Mutex::new(Vec::new()),
            domains: RwLock::new(Arc::new(HashMap::new())),
            domains_stale: AtomicBool::new(true),
            builtins,
            settings: Default::default(),
            settings_loads: Mutex::new((0, 0)),
            activity: Default::default(),
        }
    }
    /// The built-in role with this name, with what the configuration adds to it.
    pub fn builtin_role(&self, name: &str) -> Option<Arc<Role>> {
        let b = BuiltinRole::from_name(name)?;
        let i = BuiltinRole::ALL.iter().position(|r| *r == b)?;
        self.builtins.get(i).cloned()
    }
    /// Every built-in role, strongest first.
    pub fn builtin_roles(&self) -> &[Arc<Role>] {
        &self.builtins
    }
    /// The flags and shared configuration now.
    pub fn settings(&self) -> Arc<crate::Settings> {
        self.settings.load_full()
    }
    /// Replaces the flags and shared configuration.
    pub fn set_settings(&self, s: crate::Settings) {
        let ticket = self.settings_ticket();
        self.set_settings_from(ticket, s);
    }
    /// A ticket for a load of the settings about to start: loads started later get
    /// later tickets.
    pub fn settings_ticket(&self) -> u64 {
        let mut loads = self.settings_loads.lock().unwrap_or_else(|p| p.into_inner());
        loads.1 += 1;
        loads.1
    }
    /// Puts the settings that the load with `ticket` read, unless a load started later
    /// already put its own: two reloads racing (a write's own and one a notification
    /// started before the write) never leave the older one in place.
    pub fn set_settings_from(&self, ticket: u64, s: crate::Settings) {
        let mut loads = self.settings_loads.lock().unwrap_or_else(|p| p.into_inner());
        if ticket > loads.0 {
            loads.0 = ticket;
            self.settings.store(Arc::new(s));
        }
    }
    /// A cached tenant.
    pub fn tenant(&self, id: &str) -> Option<Arc<TenantEntry>> {
        self.tenants.get(id).map(|e| e.value().clone())
    }
    /// Caches (or replaces) a tenant; its counts so far go on in the new entry.
    pub fn put_tenant(&self, mut t: TenantEntry) -> Arc<TenantEntry> {
        let mut so_far = self.activity.unpark(t.id.as_str());
        if let Some(old) = self.tenants.get(&t.id) {
            so_far.add(&old.activity.counts());
        }
        t.activity = crate::activity::TenantCounters::starting_at(so_far);
        let t = Arc::new(t);
        self.tenants.insert(t.id, t.clone());
        t
    }
    /// Every tenant's requests and refusals at this node, with its plan: cached ones', and
    /// parked ones' (whose plan this node does not hold now).
    pub fn activity(&self) -> Vec<(TenantId, crate::activity::Counts, Option<tenantd_core::PlanId>)> {
        let mut all: Vec<_> = self
            .activity
            .parked()
            .into_iter()
            .map(|(id, c)| (id, c, None))
            .collect();
        all.extend(self.tenants.iter().map(|e| {
            let t = e.value();
            (t.id, t.activity.counts(), Some(t.plan.clone()))
        }));
        all
    }
    /// Forgets a tenant (it is reloaded on next use); its counts are parked.
    pub fn forget_tenant(&self, id: &str) {
        if let Some((id, old)) = self.tenants.remove(id) {
            self.activity.park(id, old.activity.counts());
        }
    }
    /// Forgets every tenant `which` says, parking their counts.
    fn forget_tenants(&self, which: impl Fn(&TenantEntry) -> bool) {
        self.tenants.retain(|id, t| {
            if which(t) {
                self.activity.park(*id, t.activity.counts());
                return false;
            }
            true
        });
    }
    /// A cached key.
    pub fn key(&self, id: &KeyId) -> Option<Arc<KeyEntry>> {
        self.keys.get(id).map(|e| e.value().clone())
    }
    /// Caches (or replaces) a key.
    pub fn put_key(&self, k: KeyEntry) -> Arc<KeyEntry> {
        let k = Arc::new(k);
        self.keys.insert(k.id, k.clone());
        k
    }
    /// Forgets a key (after revocation or rotation the server re-puts or forgets it).
    pub fn forget_key(&self, id: &str) {
        if let Some(id) = KeyId::parse(id) {
            self.keys.remove(&id);
        }
    }
    /// A role by name: built-in, or the tenant's cached custom role.
    pub fn role(&self, tenant: &str, name: &str) -> Option<Arc<Role>> {
        self.builtin_role(name)
            .or_else(|| self.roles.get(&role_key(tenant, name)).map(|r| r.value().clone()))
    }
    /// Caches a custom role.
    pub fn put_role(&self, tenant: &str, role: Role) -> Arc<Role> {
        let r = Arc::new(role);
        self.roles.insert(role_key(tenant, &r.name), r.clone());
        r
    }
    /// Forgets a custom role.
    pub fn forget_role(&self, tenant: &str, name: &str) {
        self.roles.remove(&role_key(tenant, name));
    }
    /// Drops what a change makes stale; it is reloaded on next use.
    pub fn forget(&self, change: Change<'_>) {
        match change {
            Change::Tenant(t) => {
                self.forget_tenant(t);
                // Deleted tenants' domains name nobody; restored ones name them again.
                self.domains_stale.store(true, Ordering::Release);
            }
            Change::Purged(t) => {
                self.forget(Change::Tenant(t));
                self.activity.forget(t);
                self.keys.retain(|_, k| k.tenant.as_str() != t);
                let prefix = role_key(t, "");
                self.roles.retain(|k, _| !k.starts_with(&prefix));
            }
            Change::Key(k) => self.forget_key(k),
            Change::Role(t, n) => self.forget_role(t, n),
            Change::Domain(_) => self.domains_stale.store(true, Ordering::Release),
            Change::Plan(p) => self.forget_tenants(|t| t.plan.as_str() == p),
            Change::Config(t) => self.forget_tenant(t),
            // The server reloads the settings whole ([`crate::Edge::reload_settings`]).
            Change::Settings => {}
        }
    }

    /// Applies a topic heard from another node, and answers the change it named; `None`
    /// (or a topic this version does not know) empties the cache, since something may
    /// have been missed.
    pub fn apply<'t>(&self, topic: Option<&'t str>) -> Option<Change<'t>> {
        let change = topic.and_then(Change::parse);
        match change {
            Some(c) => self.forget(c),
            None => self.clear(),
        }
        change
    }

    /// Empties the cache (tenants' counts are parked).
    pub fn clear(&self) {
        self.forget_tenants(|_| true);
        self.keys.clear();
        self.roles.clear();
        self.domains_stale.store(true, Ordering::Release);
    }

    /// Notes a key's use; queues a write at most once per [`LAST_USED_GRANULARITY`].
    pub fn note_used(&self, k: &KeyEntry, now: i64) {
        let prev = k.last_used.load(Ordering::Relaxed);
        if now - prev >= LAST_USED_GRANULARITY
            && k.last_used
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((k.id.to_string(), now));
        }
    }
    /// Takes the queued `last_used_at` writes.
    pub fn take_used(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.used.lock().unwrap_or_else(|e| e.into_inner()))
    }
    /// The tenant a verified custom domain names.
    pub fn domain(&self, host: &str) -> Option<TenantId> {
        self.domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }
    /// Whether the domains must be reloaded.
    pub fn domains_stale(&self) -> bool {
        self.domains_stale.load(Ordering::Acquire)
    }
    /// Replaces the verified domains.
    pub fn set_domains(&self, all: Vec<(String, TenantId)>) {
        self.domains_stale.store(false, Ordering::Release);
        *self.domains.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all.into_iter().collect());
    }
    /// Numbers of cached tenants and keys.
    pub fn sizes(&self) -> (usize, usize) {
        (self.tenants.len(), self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant on `plan` with no limits.
    fn entry(id: &str, plan: &str, status: TenantStatus) -> TenantEntry {
        TenantEntry {
            id: TenantId::parse(id).unwrap(),
            plan: tenantd_core::PlanId::parse(plan).unwrap(),
            isolation: tenantd_core::Isolation::Row,
            status,
            limits: Arc::from(Vec::new()),
            counter_failure: Default::default(),
            job_weight: 1,
            upstream: None,
            config: Arc::default(),
            activity: Default::default(),
        }
    }

    #[test]
    fn topics_round_trip_and_unknown_ones_clear() {
        for c in [
            Change::Tenant("acme"),
            Change::Purged("acme"),
            Change::Key("key_x"),
            Change::Role("acme", "rep"),
            Change::Domain("a.example"),
            Change::Plan("free"),
            Change::Config("acme"),
            Change::Settings,
        ] {
            assert_eq!(Change::parse(&c.topic()), Some(c));
        }
        let cache = EdgeCache::default();
        cache.put_tenant(entry("acme", "free", TenantStatus::Active));
        cache.put_tenant(entry("beta", "free", TenantStatus::Active));
        cache.apply(Some("tenant:acme"));
        assert!(cache.tenant("acme").is_none() && cache.tenant("beta").is_some());
        // A plan change drops exactly the tenants on that plan.
        cache.put_tenant(entry("gamma", "starter", TenantStatus::Active));
        cache.apply(Some("plan:starter"));
        assert!(cache.tenant("gamma").is_none() && cache.tenant("beta").is_some());
        assert_eq!(cache.apply(Some("something:new")), None);
        assert!(cache.tenant("beta").is_none());
    }

    #[test]
    fn a_purge_forgets_the_tenant_its_keys_and_its_roles_only() {
        let cache = EdgeCache::default();
        let key = |id: &str, tenant: &str| KeyEntry {
            id: KeyId::parse(id).unwrap(),
            tenant: TenantId::parse(tenant).unwrap(),
            hash: [0; 32],
            role: "member".into(),
            expires_at: None,
            revoked: false,
            last_used: AtomicI64::new(0),
            limits: Arc::from(Vec::new()),
        };
        for (tenant, k) in [
            ("acme", "key_aaaaaaaaaaaaaaaaaaaa"),
            ("acme-2", "key_bbbbbbbbbbbbbbbbbbbb"),
        ] {
            cache.put_tenant(entry(tenant, "free", TenantStatus::Deleted));
            cache.put_key(key(k, tenant));
            cache.put_role(tenant, Role::custom("auditor".into(), Vec::new()));
        }
        assert_eq!(cache.apply(Some("purged:acme")), Some(Change::Purged("acme")));
        assert!(cache.tenant("acme").is_none());
        assert!(cache.key(&KeyId::parse("key_aaaaaaaaaaaaaaaaaaaa").unwrap()).is_none());
        assert!(cache.role("acme", "auditor").is_none());
        // A tenant whose id merely starts the same keeps everything.
        assert!(cache.tenant("acme-2").is_some());
        assert!(cache.key(&KeyId::parse("key_bbbbbbbbbbbbbbbbbbbb").unwrap()).is_some());
        assert!(cache.role("acme-2", "auditor").is_some());
    }

    #[test]
    fn a_tenants_counts_go_on_through_replacement_forgetting_and_clearing() {
        let cache = EdgeCache::default();
        let requests = |cache: &EdgeCache| -> u64 {
            cache
                .activity()
                .iter()
                .filter(|(id, ..)| id.as_str() == "acme")
                .map(|(_, c, _)| c.requests)
                .sum()
        };
        cache
            .put_tenant(entry("acme", "free", TenantStatus::Active))
            .activity
            .count(None);
        // Replaced (a plan change written here): the new entry goes on from 1.
        cache
            .put_tenant(entry("acme", "pro", TenantStatus::Active))
            .activity
            .count(None);
        assert_eq!(requests(&cache), 2);
        // Forgotten (another node's change): parked, still counted, then taken back.
        cache.apply(Some("tenant:acme"));
        assert_eq!(requests(&cache), 2);
        cache
            .put_tenant(entry("acme", "pro", TenantStatus::Active))
            .activity
            .count(None);
        assert_eq!(requests(&cache), 3);
        cache.apply(Some("plan:pro"));
        cache.apply(None);
        assert_eq!(requests(&cache), 3);
        cache.put_tenant(entry("acme", "pro", TenantStatus::Active));
        assert_eq!(cache.activity().len(), 1, "counted once, cached or parked");
        // Purged: gone.
        cache.apply(Some("purged:acme"));
        assert_eq!(requests(&cache), 0);
    }

    #[test]
    fn an_older_load_of_the_settings_never_replaces_a_newer_one() {
        let cache = EdgeCache::default();
        let (older, newer) = (cache.settings_ticket(), cache.settings_ticket());
        let newer_load = crate::Settings {
            evaluated: Some(Default::default()),
            ..Default::default()
        };
        cache.set_settings_from(newer, newer_load);
        cache.set_settings_from(older, crate::Settings::default());
        assert!(
            cache.settings().evaluated.is_some(),
            "the older load replaced the newer"
        );
    }

    #[test]
    fn what_every_decision_reads_is_in_the_entrys_first_72_bytes() {
        use std::mem::offset_of;
        for end in [
            offset_of!(TenantEntry, status) + 1,
            offset_of!(TenantEntry, limits) + std::mem::size_of::<Arc<[Limit]>>(),
            // The request counter is the counters' first field.
            offset_of!(TenantEntry, activity) + 8,
        ] {
            assert!(end <= 72, "{end}");
        }
    }
}
