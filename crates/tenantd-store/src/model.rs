//! Values the catalog stores and returns.
use serde::Serialize;
use tenantd_core::{Email, Limit, PlanId, TenantId, TenantStatus};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    /// The tenant's id.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")]
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// The plan's id.
    #[schema(value_type = String)]
    pub plan: PlanId,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Why it was suspended, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Free-form settings (JSON object).
    pub settings: serde_json::Value,
    /// Per-tenant limit overrides.
    pub limits: Vec<Limit>,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// When it was soft-deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<i64>,
    /// When a deleted tenant may be purged (deleted_at + 30 days).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub purge_after: Option<i64>,
}

/// A request to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Display name (defaults to the id).
    pub name: String,
    /// The plan.
    pub plan: PlanId,
    /// Its first owner.
    pub owner_email: Email,
    /// Settings (JSON object).
    pub settings: serde_json::Value,
}

/// Whether a create made something new or found the same thing already there.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    /// Made now.
    New(T),
    /// The same request had been made before; this is what it made.
    Existing(T),
}

impl<T> Created<T> {
    /// The value either way.
    pub fn into_inner(self) -> T {
        match self {
            Created::New(t) | Created::Existing(t) => t,
        }
    }
}

/// Changes to a tenant; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// New display name.
    pub name: Option<String>,
    /// New plan.
    pub plan: Option<PlanId>,
    /// New settings (replaces the object).
    pub settings: Option<serde_json::Value>,
    /// Limit overrides to merge: each replaces an override with the same resource and
    /// window; one with `limit: null` and the plan's value is kept as "unlimited".
    pub limits: Option<Vec<Limit>>,
}

/// Operator list filter.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Only this status (default: all but deleted).
    pub status: Option<TenantStatus>,
    /// Only this plan.
    pub plan: Option<String>,
    /// Only tenants whose id or name holds this text (case-insensitive for ASCII).
    pub search: Option<String>,
}

/// A page request: at most `limit` items after the opaque cursor.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// 1..=1000.
    pub limit: u32,
    /// From a previous page's `next_cursor`.
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { limit: 50, after: None }
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A person, identified by email.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Lower-cased email.
    pub email: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A user's membership of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Member {
    /// `usr_…`
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// The role in this tenant.
    pub role: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A workspace within a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Workspace {
    /// Unique within the tenant.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Members added to this workspace.
    pub members: Vec<WorkspaceMember>,
}

/// A user's role within a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkspaceMember {
    /// `usr_…`
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// The role in this workspace.
    pub role: String,
}

/// An API key as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    /// The tenant it belongs to.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// The first characters of the secret, for recognising it.
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    #[serde(skip)]
    pub hash: String,
    /// The role it acts with.
    pub role: String,
    /// Unix seconds, if it expires.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<i64>,
    /// Its own limits (narrowing the tenant's).
    pub limits: Vec<Limit>,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Unix seconds, once revoked.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
    /// Unix seconds, updated in batches.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<i64>,
}

/// Who did something: the `actor` of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// What kind of caller it is.
    pub kind: ActorKind,
    /// `operator`, a user's `usr_…`, an API key's `key_…`, or what tenantd itself is
    /// doing (`system`, `anonymous` for a caller who named no one).
    pub id: String,
}

/// The kinds of [`Actor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// The platform operator.
    Operator,
    /// A signed-in user.
    User,
    /// An API key.
    ApiKey,
    /// tenantd itself, or a caller it could not name.
    System,
}

impl ActorKind {
    /// As stored and shown: `operator`, `user`, `api_key` or `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Operator => "operator",
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
        }
    }
}

impl Actor {
    /// tenantd itself (background work: usage flushes, purges).
    pub fn system() -> Self {
        Self::from("system")
    }
}

impl From<&str> for Actor {
    /// The actor an id names, its kind read from the id's form.
    fn from(id: &str) -> Self {
        let kind = if id == "operator" {
            ActorKind::Operator
        } else if id.starts_with("usr_") {
            ActorKind::User
        } else if id.starts_with("key_") {
            ActorKind::ApiKey
        } else {
            ActorKind::System
        };
        Self {
            kind,
            id: id.to_string(),
        }
    }
}

impl From<String> for Actor {
    fn from(id: String) -> Self {
        Self::from(id.as_str())
    }
}

/// An event to append to the event log: every change to the control plane (its audit
/// event), every security event and every quota event is one of these.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The tenant concerned; `None` for the platform's own events.
    pub tenant_id: Option<String>,
    /// Who did it.
    pub actor: Actor,
    /// Its type, as `noun.verb` (`tenant.created`, `security.cross_tenant_attempt`,
    /// `quota.warning`, …).
    pub kind: String,
    /// Its data (JSON object).
    pub data: serde_json::Value,
    /// The request that did it (empty for background work).
    pub request_id: String,
}

impl NewEvent {
    /// What `actor` did (`kind`, with `data`) to `tenant` (none: the platform's).
    pub fn new(
        tenant: Option<&TenantId>,
        actor: impl Into<Actor>,
        kind: &str,
        data: serde_json::Value,
        request_id: &str,
    ) -> Self {
        Self {
            tenant_id: tenant.map(|t| t.to_string()),
            actor: actor.into(),
            kind: kind.to_string(),
            data,
            request_id: request_id.to_string(),
        }
    }

    /// Something tenantd itself noticed about `tenant` (a quota crossing).
    pub fn system(tenant: &TenantId, kind: &str, data: serde_json::Value) -> Self {
        Self::new(Some(tenant), Actor::system(), kind, data, "")
    }
}

/// An event as stored and shown (docs/events.md).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Its row in the log (written order across chains); pages are cut by it.
    #[serde(skip)]
    pub row: i64,
    /// `evt_…`
    pub id: String,
    /// Its place in its chain (its tenant's, or the platform's), from 1.
    pub seq: i64,
    /// `noun.verb`: `tenant.created`, `security.cross_tenant_attempt`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The tenant concerned; `null` for the platform's events.
    pub tenant_id: Option<String>,
    /// Who did it: `{"type": "operator|user|api_key|system", "id"}`.
    #[schema(value_type = Object)]
    pub actor: serde_json::Value,
    /// The request that did it (empty for background work).
    pub request_id: String,
    /// When (RFC 3339).
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// What it records.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// SHA-256 (hex) of the canonical JSON of `id, seq, type, tenant_id, actor,
    /// request_id, at, data`.
    pub digest: String,
    /// The `hash` of the event before in the chain (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) of `prev_hash` followed by `digest`.
    pub hash: String,
    /// Its content was lawfully removed (a purge): only `id`, `seq`, `type`, `at`,
    /// `digest` and the links remain.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    /// How many times it happened: repeats of a security event within 60 s of the
    /// first fold into it (1 for everything else). Not part of the digest.
    pub count: u64,
}

impl AuditEvent {
    /// What its digest covers; `None` for a redacted tombstone.
    pub fn content(&self) -> Option<crate::chain::Content> {
        (!self.redacted).then(|| crate::chain::Content {
            id: self.id.clone(),
            seq: self.seq,
            kind: self.kind.clone(),
            tenant_id: self.tenant_id.clone(),
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            at: tenantd_core::ts::format(self.at),
            data: self.data.clone(),
        })
    }

    /// Its place in its chain, for a check.
    pub fn linked(&self) -> crate::chain::Linked {
        crate::chain::Linked {
            seq: self.seq,
            content: self.content(),
            digest: self.digest.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }
}

/// Audit list filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant (`None`: all, operators only).
    pub tenant_id: Option<String>,
    /// Only this type (`action=`).
    pub action: Option<String>,
    /// Only types starting with this (`type=tenant.*` is `tenant.`; `type=tenant.created`
    /// is that type).
    pub kind_prefix: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// At or after (Unix seconds).
    pub since: Option<i64>,
    /// Before (Unix seconds).
    pub until: Option<i64>,
}

/// One of tenantd's JWT signing keys.
#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    /// Key id (`kid`).
    pub kid: String,
    /// PKCS#8 DER of the Ed25519 private key.
    pub private_pkcs8: Vec<u8>,
    /// Base64url of the 32-byte public key.
    pub public_x: String,
    /// Unix seconds.
    pub created_at: i64,
    /// 1 for the first key, one more for each next; the highest signs.
    pub generation: i64,
}

pub use tenantd_core::ids::new_id;

/// A tenant's custom domain.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Domain {
    /// Lower-case host name, no port.
    pub host: String,
    /// The tenant that claimed it.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// What the host must serve to prove control.
    pub token: String,
    /// When it was verified; unverified hosts name no tenant.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub verified_at: Option<i64>,
    /// Unix seconds.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// Levels counted from the catalog itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Countable {
    /// Memberships of the tenant.
    Members,
    /// API keys not revoked.
    ActiveKeys,
}

/// A webhook endpoint (docs/events.md): a tenant's (its events) or the operator's (every
/// tenant's and the platform's). Its secrets never show in `Debug` or in the API after
/// creation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    /// `wh_…`
    pub id: String,
    /// Whose events it gets; `null`: the operator's endpoint, every tenant's.
    pub tenant_id: Option<String>,
    /// Where events are sent (`https://…`, or `http://…`).
    pub url: String,
    /// Types or prefixes (`tenant.*`) it gets; empty: all.
    pub event_types: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Why it was disabled (`410 Gone`, five days of failures).
    pub disabled_reason: Option<String>,
    /// Since when its deliveries fail (RFC 3339), while they do.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<i64>,
    /// Until when the secret it had before its last rotation still signs (RFC 3339).
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_until: Option<i64>,
    /// RFC 3339.
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Its signing secrets, newest first.
    #[serde(skip)]
    pub secrets: WebhookSecrets,
}

impl Webhook {
    /// A new, enabled endpoint with one secret.
    pub fn new(id: String, tenant_id: Option<String>, url: String, event_types: Vec<String>, secret: String) -> Self {
        Self {
            id,
            tenant_id,
            url,
            event_types,
            description: String::new(),
            enabled: true,
            disabled_reason: None,
            failing_since: None,
            previous_secret_until: None,
            created_at: tenantd_core::now_secs(),
            secrets: WebhookSecrets {
                current: secret,
                previous: None,
            },
        }
    }
}

/// A webhook's signing secrets: the current one, and the one before a rotation until it
/// expires.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct WebhookSecrets {
    /// `whsec_…`
    pub current: String,
    /// The secret before the last rotation, and until when it still signs (Unix seconds).
    pub previous: Option<(String, i64)>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl WebhookSecrets {
    /// The secrets that sign at `now`, newest first.
    pub fn signing(&self, now: i64) -> Vec<&str> {
        let mut out = vec![self.current.as_str()];
        if let Some((s, until)) = &self.previous {
            if now < *until {
                out.push(s);
            }
        }
        out
    }
}

/// One attempt to deliver an event to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Its row in the log; pages are cut by it.
    #[serde(skip)]
    pub row: i64,
    /// The event (`evt_…`, or `msg_…` for a test).
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// When it was made (RFC 3339).
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// The endpoint's status; `null` when it gave none (refused, timed out).
    pub status_code: Option<u16>,
    /// How long it took.
    pub duration_ms: u64,
    /// What went wrong, if it did.
    pub error: Option<String>,
    /// When the next attempt is due (RFC 3339); `null` when there is none.
    #[serde(serialize_with = "tenantd_core::ts::ser_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
}

/// What erasing a person did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// The tenants they were a member of.
    pub tenants: Vec<String>,
    /// Of those, the ones left without an owner.
    pub ownerless: Vec<String>,
    /// Events whose email became the pseudonym.
    pub events: u64,
}
