//! The edge decision: authenticate the credential, resolve the tenant from every source
//! (docs/api.md), check that they agree and that the principal may act for it, and settle
//! the role. On a warm cache an API-key request is decided without I/O or awaiting.
use crate::cache::{Directory, EdgeCache, KeyEntry, SecurityEvent, TenantEntry};
use crate::context::{Principal, RequestContext};
use crate::jwt::{OidcVerifier, Signer, TokenError};
use crate::keys;
use crate::problem::Problem;
pub use crate::request::{single_header, RequestInfo, RouteNeeds};
use prometheus_client::metrics::histogram::Histogram;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tenantd_core::{now_secs, Code, Role, TenantId, TenantStatus};
use tenantd_limits::{Ask, LimitState, Limiter, Outcome};

/// Edge settings.
#[derive(Debug, Clone, Default)]
pub struct EdgeConfig {
    /// `{id}.{base_domain}` hosts name the tenant.
    pub base_domain: Option<String>,
    /// Accept `?tenant_id=` as a source.
    pub allow_query_tenant: bool,
    /// Single-tenant mode: every request is for this tenant.
    pub single_tenant: Option<TenantId>,
    /// SHA-256 of the operator key.
    pub operator_key_hash: [u8; 32],
    /// App permissions the configuration adds to built-in roles (`[roles.*]`).
    pub platform_roles: Vec<(tenantd_core::BuiltinRole, Vec<tenantd_core::Permission>)>,
}

/// Counters the edge keeps (exposed by the server at `/metrics`).
#[derive(Debug)]
pub struct EdgeMetrics {
    /// Requests decided.
    pub requests: AtomicU64,
    /// Requests refused with 401.
    pub unauthenticated: AtomicU64,
    /// `security.cross_tenant_attempt` events.
    pub cross_tenant_attempts: AtomicU64,
    /// Refused decisions, by code in [`Code::ALL`] order.
    pub refusals: [AtomicU64; Code::ALL.len()],
    /// How long admissions take, one in [`ADMISSION_SAMPLE`] timed.
    pub admission: Histogram,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::default(),
            unauthenticated: AtomicU64::default(),
            cross_tenant_attempts: AtomicU64::default(),
            refusals: Default::default(),
            admission: Histogram::new(ADMISSION_BUCKETS),
        }
    }
}

impl EdgeMetrics {
    fn refused(&self, code: Code) {
        if let Some(i) = Code::ALL.iter().position(|c| *c == code) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Records the tenant in the span the request is served in (`tenant_id`, declared
/// empty by the API's and the gateway's request spans), so every line written from here
/// on names it (docs/observability.md).
fn note_tenant(tenant: &TenantEntry) {
    tracing::Span::current().record("tenant_id", tenant.id.as_str());
}

/// One admission in this many is timed: two clock reads and the histogram's lock are
/// not worth paying on every request, and a sample this size shows the distribution.
pub const ADMISSION_SAMPLE: u32 = 64;

/// Upper bounds of the admission latency buckets, in seconds: 100 ns to 100 ms (an
/// in-process decision takes well under a microsecond, a Redis one a round trip).
const ADMISSION_BUCKETS: [f64; 13] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 2.5e-4, 1e-3, 5e-3, 2.5e-2, 1e-1,
];

thread_local! {
    /// Admissions on this thread since the last timed one.
    static UNTIMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether to time this admission: every [`ADMISSION_SAMPLE`]th on each thread.
fn time_this_admission() -> bool {
    UNTIMED.with(|n| {
        let next = n.get() + 1;
        n.set(if next == ADMISSION_SAMPLE { 0 } else { next });
        next == ADMISSION_SAMPLE
    })
}

/// The most one request may cost in `api_calls` (a gateway route's `cost`, or a remote
/// decision's).
pub const MAX_COST: u64 = 1_000_000;

/// The pipeline with its cache, keys and counters.
pub struct Edge {
    cfg: EdgeConfig,
    cache: EdgeCache,
    dir: Arc<dyn Directory>,
    signer: Arc<Signer>,
    oidc: Option<Arc<OidcVerifier>>,
    metrics: EdgeMetrics,
    limiter: Option<Arc<Limiter>>,
    security: crate::security::SecurityLog,
}

enum Authn {
    Anonymous,
    Operator,
    Key(Arc<KeyEntry>),
    User {
        id: String,
        email: String,
        tid: Option<String>,
    },
}

fn dir_err(e: crate::cache::DirectoryError) -> Problem {
    tracing::error!(error = %e, "directory lookup failed");
    Problem::new(Code::Unavailable, "the catalog is unavailable; try again shortly")
}

fn parse_tenant(raw: &str) -> Result<TenantId, Problem> {
    TenantId::parse_with(raw, true).map_err(|e| Problem::new(Code::InvalidTenantId, e.to_string()))
}

impl Edge {
    /// An edge over a directory, with tenantd's signer and an optional OpenID verifier.
    pub fn new(cfg: EdgeConfig, dir: Arc<dyn Directory>, signer: Arc<Signer>, oidc: Option<Arc<OidcVerifier>>) -> Self {
        Self {
            cache: EdgeCache::with_platform_roles(&cfg.platform_roles),
            cfg,
            dir,
            signer,
            oidc,
            metrics: EdgeMetrics::default(),
            limiter: None,
            security: Default::default(),
        }
    }
    /// Admits every tenant request through `limiter` (api_calls, docs/limits.md).
    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }
    /// The cache, for the server to keep current and for benches to fill.
    pub fn cache(&self) -> &EdgeCache {
        &self.cache
    }
    /// tenantd's signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// The OpenID verifier, when configured.
    pub fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_deref()
    }
    /// The counters.
    pub fn metrics(&self) -> &EdgeMetrics {
        &self.metrics
    }
    /// The settings.
    pub fn config(&self) -> &EdgeConfig {
        &self.cfg
    }
    /// Loads the flags and shared configuration again (after this node or another
    /// changed them); until it succeeds the previous ones stay.
    pub async fn reload_settings(&self) -> Result<(), crate::cache::DirectoryError> {
        let ticket = self.cache.settings_ticket();
        let s = self.dir.settings().await?;
        self.cache.set_settings_from(ticket, s);
        Ok(())
    }

    async fn load_key(&self, token: &str) -> Result<Option<Arc<KeyEntry>>, Problem> {
        let Some(id) = keys::key_id_of(token) else {
            return Ok(None);
        };
        if let Some(k) = self.cache.key(&id) {
            return Ok(Some(k));
        }
        Ok(self
            .dir
            .key(&id.to_string())
            .await
            .map_err(dir_err)?
            .map(|k| self.cache.put_key(k)))
    }

    async fn authenticate(&self, bearer: Option<&str>, now: i64) -> Result<Authn, Problem> {
        let Some(token) = bearer else {
            return Ok(Authn::Anonymous);
        };
        let bad = |why: &str| {
            self.metrics.unauthenticated.fetch_add(1, Ordering::Relaxed);
            Problem::unauthenticated(why.to_string())
        };
        if token.starts_with(keys::KEY_PREFIX) {
            let key = self
                .load_key(token)
                .await?
                .ok_or_else(|| bad("the API key is not valid"))?;
            if !keys::verify(token, &key.hash) {
                return Err(bad("the API key is not valid"));
            }
            if key.revoked {
                return Err(bad("the API key has been revoked"));
            }
            if key.expires_at.is_some_and(|e| e <= now) {
                return Err(bad("the API key has expired"));
            }
            self.cache.note_used(&key, now);
            return Ok(Authn::Key(key));
        }
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            if let Some(oidc) = self.oidc.as_deref().filter(|o| o.claims_issuer(token)) {
                let who = oidc.verify(token).map_err(|e| bad(&e.to_string()))?;
                let id = self
                    .dir
                    .user_by_email(&who.email.to_ascii_lowercase())
                    .await
                    .map_err(dir_err)?;
                return Ok(Authn::User {
                    id,
                    email: who.email.to_ascii_lowercase(),
                    tid: None,
                });
            }
            let c = self.signer.verify(token).map_err(|e: TokenError| bad(&e.to_string()))?;
            if !c.sub.starts_with("usr_") {
                return Err(bad("this token cannot be used as a credential"));
            }
            return Ok(Authn::User {
                id: c.sub,
                email: c.email,
                tid: c.tid,
            });
        }
        if keys::verify(token, &self.cfg.operator_key_hash) {
            return Ok(Authn::Operator);
        }
        Err(bad("the bearer token is not a valid credential"))
    }

    /// The tenant the request names, from every source but the credential; sources that
    /// disagree yield `Err(None)` (a mismatch), malformed ids `Err(Some(problem))`.
    fn requested_tenant(&self, info: &RequestInfo<'_>) -> Result<Option<TenantId>, Option<Problem>> {
        let mut found: Option<TenantId> = self.cfg.single_tenant;
        let mut add = |id: TenantId| -> Result<(), Option<Problem>> {
            match &found {
                Some(f) if *f != id => Err(None),
                _ => {
                    found = Some(id);
                    Ok(())
                }
            }
        };
        if let Some(rest) = info.path.strip_prefix("/v1/tenants/") {
            let seg = rest.split('/').next().unwrap_or("");
            if !seg.is_empty() {
                add(parse_tenant(seg).map_err(Some)?)?;
            }
        }
        if let Some(host) = info.host {
            let host = host
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(host, |(h, _)| h);
            // `acme.example.com.` is the same name, fully qualified.
            let host = host.strip_suffix('.').unwrap_or(host);
            // Host names are case-insensitive; lower-case only when needed.
            let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(host.to_ascii_lowercase())
            } else {
                Cow::Borrowed(host)
            };
            let host = host.as_ref();
            if let Some(id) = self.cache.domain(host) {
                add(id)?;
            } else if let Some(base) = self.cfg.base_domain.as_deref() {
                if let Some(label) = host.strip_suffix(base).and_then(|h| h.strip_suffix('.')) {
                    // A subdomain that is not a tenant id (www, api…) names no tenant.
                    if let Ok(id) = TenantId::parse(label) {
                        add(id)?;
                    }
                }
            }
        }
        for h in [info.tenant_header, info.tenant_header_alias].into_iter().flatten() {
            add(parse_tenant(h).map_err(Some)?)?;
        }
        if self.cfg.allow_query_tenant {
            if let Some(q) = info.query {
                for pair in q.split('&') {
                    if let Some(v) = pair.strip_prefix("tenant_id=") {
                        add(parse_tenant(v).map_err(Some)?)?;
                    }
                }
            }
        }
        Ok(found)
    }

    /// The refusal of a cross-tenant attempt by `actor` asking for `asked`, recorded as
    /// a security event (folded with its repeats).
    async fn mismatch(
        &self,
        actor: String,
        own: Option<&TenantId>,
        asked: &str,
        info: &RequestInfo<'_>,
        request_id: &str,
    ) -> Problem {
        self.metrics.cross_tenant_attempts.fetch_add(1, Ordering::Relaxed);
        let ev = SecurityEvent {
            action: "security.cross_tenant_attempt",
            actor,
            tenant_id: own.map(|t| t.to_string()),
            detail: serde_json::json!({
                "path": info.path,
                "host": info.host,
                "tenant_header": info.tenant_header.or(info.tenant_header_alias),
            }),
            request_id: request_id.to_string(),
        };
        self.report_security(ev, asked).await;
        Problem::tenant_mismatch()
    }

    /// Records a security event, `asked` being the tenant it was about: the first of
    /// its kind in 60 s is stored and logged (WARN), repeats only add to its `count`
    /// ([`crate::security`]).
    pub async fn report_security(&self, mut ev: SecurityEvent, asked: &str) {
        use crate::security::{Noted, MAX_ASKED};
        if let Noted::First(token) = self
            .security
            .note(ev.action, &ev.actor, asked, std::time::Instant::now())
        {
            if token.gathers_many() {
                ev.detail["folded"] = serde_json::json!(format!(
                    "every tenant asked for past the first {MAX_ASKED} in 60 s; this is the first of them"
                ));
            }
            tracing::warn!(actor = %ev.actor, action = ev.action, path = %ev.detail["path"], "security event: refused (repeats within 60 s fold into its count)");
            let id = self.dir.security_event(ev).await;
            self.security.written(token, id);
        }
    }

    /// Adds the security events' folded repeats to their stored counts (the server runs
    /// this every second and at shutdown).
    pub async fn flush_security(&self) {
        let repeats = self.security.take_repeats(std::time::Instant::now());
        if !repeats.is_empty() {
            self.dir.fold_security_events(&repeats).await;
        }
    }

    async fn tenant_entry(&self, id: &TenantId) -> Result<Option<Arc<TenantEntry>>, Problem> {
        if let Some(t) = self.cache.tenant(id.as_str()) {
            return Ok(Some(t));
        }
        Ok(self
            .dir
            .tenant(id)
            .await
            .map_err(dir_err)?
            .map(|t| self.cache.put_tenant(t)))
    }

    async fn role(&self, tenant: &TenantId, name: &str) -> Result<Arc<Role>, Problem> {
        if let Some(r) = self.cache.role(tenant.as_str(), name) {
            return Ok(r);
        }
        match self.dir.custom_role(tenant, name).await.map_err(dir_err)? {
            Some(r) => Ok(self.cache.put_role(tenant.as_str(), r)),
            // A role deleted under a holder grants nothing.
            None => Ok(Arc::new(Role::custom(name.to_string(), Vec::new()))),
        }
    }

    /// Admits one request of `tenant` (with `key`'s own limits, if any) as `cost`
    /// api_calls.
    async fn admit_call(
        &self,
        tenant: &TenantEntry,
        key: Option<&KeyEntry>,
        cost: Option<u64>,
    ) -> Result<Option<LimitState>, Problem> {
        self.admit(&Ask {
            tenant: tenant.id,
            key: key.map(|k| k.id),
            tenant_limits: &tenant.limits,
            key_limits: key.map_or(&[][..], |k| &k.limits[..]),
            resource: "api_calls",
            cost: cost.unwrap_or(1),
            failure: tenant.counter_failure,
        })
        .await
    }

    /// Admits `ask`: `Ok(tightest limit)` or the 429 / 503 problem. Crossed thresholds
    /// are recorded as tenant events.
    pub async fn admit(&self, ask: &Ask<'_>) -> Result<Option<LimitState>, Problem> {
        self.admit_all(std::slice::from_ref(ask)).await
    }

    /// Admits several asks of one tenant (distinct resources) together, all or none.
    pub async fn admit_all(&self, asks: &[Ask<'_>]) -> Result<Option<LimitState>, Problem> {
        let Some(lim) = &self.limiter else {
            return Ok(None);
        };
        let Some(first) = asks.first() else {
            return Ok(None);
        };
        let start = time_this_admission().then(std::time::Instant::now);
        let outcome = lim.admit_all(asks).await;
        if let Some(t) = start {
            self.metrics.admission.observe(t.elapsed().as_secs_f64());
        }
        match outcome {
            Ok(Outcome::Admitted { tightest, crossings }) => {
                for c in crossings {
                    self.dir.quota_event(c).await;
                }
                Ok(tightest)
            }
            Ok(Outcome::Refused { state, retry_after }) => Err(Problem::limited(&state, retry_after)),
            Err(e) => {
                tracing::error!(error = %e, tenant_id = %first.tenant, "admission failed");
                Err(e.into())
            }
        }
    }

    /// A public gateway route's request: no principal; the tenant must exist and be
    /// active, and its limits admit the request.
    async fn decide_public(
        &self,
        tenant_id: TenantId,
        info: &RequestInfo<'_>,
        request_id: String,
    ) -> Result<RequestContext, Problem> {
        let tenant = match self.tenant_entry(&tenant_id).await? {
            Some(t) if t.status != TenantStatus::Deleted => t,
            _ => return Err(Problem::new(Code::TenantNotFound, "tenant not found")),
        };
        note_tenant(&tenant);
        let admitted = match tenant.status {
            TenantStatus::Active => self.admit_call(&tenant, None, info.cost).await,
            _ => Err(Problem::tenant_suspended()),
        };
        tenant.activity.count(admitted.as_ref().err().map(|p| p.code));
        let limit = admitted?;
        Ok(RequestContext {
            request_id,
            principal: None,
            tenant: Some(tenant),
            role: None,
            limit,
            key_limits: None,
            settings: Some(self.cache.settings()),
        })
    }

    /// The context the operator key gets for a request to `tenant` (as [`Edge::decide`]
    /// makes it: role `owner`, no admission, never refused on a suspended or deleted
    /// tenant), for callers that authenticated the operator otherwise (the console's
    /// session). `404 tenant_not_found` when there is no such tenant.
    pub async fn operator_context(&self, tenant: &str, request_id: String) -> Result<RequestContext, Problem> {
        let id = parse_tenant(tenant)?;
        let Some(entry) = self.tenant_entry(&id).await? else {
            return Err(Problem::new(Code::TenantNotFound, "tenant not found"));
        };
        note_tenant(&entry);
        Ok(RequestContext {
            request_id,
            principal: Some(Principal::Operator),
            role: Some(self.role(&id, "owner").await?),
            tenant: Some(entry),
            limit: None,
            key_limits: None,
            settings: Some(self.cache.settings()),
        })
    }

    /// Decides a request. With a warm cache and an API key this completes without awaiting.
    pub async fn decide(&self, info: &RequestInfo<'_>, request_id: String) -> Result<RequestContext, Problem> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let decided = self.decide_counted(info, request_id).await;
        if let Err(p) = &decided {
            self.metrics.refused(p.code);
        }
        decided
    }

    /// [`Edge::decide`]; the tenant's own requests and refusals are counted here, once
    /// the tenant is known.
    async fn decide_counted(&self, info: &RequestInfo<'_>, request_id: String) -> Result<RequestContext, Problem> {
        let now = now_secs();
        let public = info.route.is_some_and(|r| r.public);
        let authn = match public {
            true => Authn::Anonymous,
            false => self.authenticate(info.bearer, now).await?,
        };
        let (principal, own): (Option<Principal>, Option<TenantId>) = match &authn {
            Authn::Anonymous => (None, None),
            Authn::Operator => (Some(Principal::Operator), None),
            Authn::Key(k) => (
                Some(Principal::Key {
                    id: k.id,
                    tenant: k.tenant,
                }),
                Some(k.tenant),
            ),
            Authn::User { id, email, tid } => {
                let own = match tid {
                    Some(t) => Some(parse_tenant(t)?),
                    None => None,
                };
                (
                    Some(Principal::User {
                        id: id.clone(),
                        email: email.clone(),
                    }),
                    own,
                )
            }
        };
        if self.cache.domains_stale() {
            let all = self.dir.domains().await.map_err(dir_err)?;
            self.cache.set_domains(all);
        }
        let actor = || {
            principal
                .as_ref()
                .map_or_else(|| "anonymous".to_string(), Principal::actor)
        };
        // Without a credential, tenantd's own API answers nothing a tenant would settle:
        // every endpoint needing one is `401` (sources that disagree included; there is
        // nobody to refuse as a cross-tenant attempt). Gateway routes go on: a public
        // route still resolves its tenant.
        if principal.is_none() && info.route.is_none() {
            return Ok(RequestContext {
                request_id,
                principal: None,
                tenant: None,
                role: None,
                limit: None,
                key_limits: None,
                settings: None,
            });
        }
        let requested = match self.requested_tenant(info) {
            Ok(r) => r,
            Err(Some(p)) => return Err(p),
            Err(None) => {
                // The sources that disagreed: the path's tenant, the host and the headers.
                let in_path = info.path.strip_prefix("/v1/tenants/").and_then(|r| r.split('/').next());
                let asked = [in_path, info.host, info.tenant_header, info.tenant_header_alias]
                    .map(|s| s.unwrap_or(""))
                    .join(" ");
                return Err(self.mismatch(actor(), own.as_ref(), &asked, info, &request_id).await);
            }
        };
        let tenant_id = match (own, requested) {
            (Some(o), Some(r)) if o != r => {
                return Err(self.mismatch(actor(), Some(&o), r.as_str(), info, &request_id).await)
            }
            (o, r) => o.or(r),
        };
        if let Some(route) = info.route {
            match (&principal, tenant_id) {
                (None, Some(t)) if route.public => return self.decide_public(t, info, request_id).await,
                (_, None) if route.public || principal.is_some() => return Err(Problem::tenant_required()),
                // As for tenantd's own endpoints: a missing credential is not a refused one
                // (`tenantd_unauthenticated_total` counts those).
                (None, _) => return Err(Problem::credential_required()),
                _ => {}
            }
        }
        // Anonymous callers learn nothing about tenants; principals without a tenant get
        // a context without one.
        let (Some(principal), Some(tenant_id)) = (principal.clone(), tenant_id) else {
            return Ok(RequestContext {
                request_id,
                principal,
                tenant: None,
                role: None,
                limit: None,
                key_limits: None,
                settings: None,
            });
        };
        let role_name: Option<Cow<'_, str>> = match &authn {
            Authn::Operator => Some(Cow::Borrowed("owner")),
            Authn::Key(k) => Some(Cow::Borrowed(k.role.as_str())),
            Authn::User { id, .. } => self
                .dir
                .member_role(&tenant_id, id)
                .await
                .map_err(dir_err)?
                .map(Cow::Owned),
            Authn::Anonymous => None,
        };
        let Some(role_name) = role_name else {
            return Err(self
                .mismatch(principal.actor(), own.as_ref(), tenant_id.as_str(), info, &request_id)
                .await);
        };
        let tenant = match self.tenant_entry(&tenant_id).await? {
            Some(t) if t.status != TenantStatus::Deleted || principal.is_operator() => t,
            _ => return Err(Problem::new(Code::TenantNotFound, "tenant not found")),
        };
        note_tenant(&tenant);
        let checked = async {
            let role = self.role(&tenant_id, &role_name).await?;
            if let Some(route) = info.route {
                // Gateway routes are the tenant's own traffic: refused on a suspended
                // tenant (operators excepted), and authorized before they count.
                if !principal.is_operator() {
                    if tenant.status != TenantStatus::Active {
                        return Err(Problem::tenant_suspended());
                    }
                    if let Some(p) = route.permission.filter(|p| !role.allows(p)) {
                        return Err(Problem::forbidden(p));
                    }
                }
            }
            // Operators' requests are not the tenant's use; suspended and deleted
            // tenants' requests are refused by the handlers and count nothing.
            let limit = if principal.is_operator() || tenant.status != TenantStatus::Active {
                None
            } else {
                let key = match &authn {
                    Authn::Key(k) => Some(&**k),
                    _ => None,
                };
                self.admit_call(&tenant, key, info.cost).await?
            };
            Ok((role, limit))
        }
        .await;
        // Operators' requests are not the tenant's activity either.
        if !principal.is_operator() {
            tenant.activity.count(checked.as_ref().err().map(|p| p.code));
        }
        let (role, limit) = checked?;
        Ok(RequestContext {
            request_id,
            principal: Some(principal),
            tenant: Some(tenant),
            role: Some(role),
            limit,
            settings: Some(self.cache.settings()),
            // Most keys have no limits of their own: cloning their empty list would
            // still touch its reference count, a cache miss per request at 10M keys.
            key_limits: match &authn {
                Authn::Key(k) if !k.limits.is_empty() => Some(k.limits.clone()),
                _ => None,
            },
        })
    }
}
