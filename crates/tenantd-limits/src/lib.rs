//! Admission for tenantd: whether a tenant (and the API key it calls with) may use
//! `cost` more of a resource now, under every limit of its plan, its overrides and the
//! key's own limits (docs/limits.md).
//!
//! - `second` / `minute` windows are sliding logs of small buckets (1/100 of the window):
//!   no fixed-window edge burst, and never more than the limit in any window's length.
//! - `hour` / `day` / `week` / `month` are UTC calendar counters, persisted through a
//!   [`CounterStore`] so restarts never reset them.
//! - `total` windows are levels that grow with use; `concurrent` windows are leases.
//!
//! A decision checks every applicable limit and commits to all of them or none, under one
//! lock per tenant (in process) or in one Lua script (Redis), so concurrent callers
//! together never pass a hard limit and refused requests count nothing.
#![forbid(unsafe_code)]

mod local;
mod shared;
mod state;

pub use local::Local;
use serde::Serialize;
pub use shared::{Shared, SharedMetrics};
use std::sync::Arc;
use tenantd_core::usage::{saturating_count, CounterRow};
use tenantd_core::{CounterFailure, Enforcement, KeyId, Limit, TenantId, Window};

/// Where calendar counters are persisted (the catalog).
#[async_trait::async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// The tenant's counters of periods starting at or after `since`, and its levels.
    async fn load(&self, tenant: &TenantId, since: i64) -> Result<Vec<CounterRow>, String>;
    /// Adds deltas.
    async fn add(&self, deltas: &[CounterRow]) -> Result<(), String>;
    /// Records the day's value of levels that changed (window `total`, period = the UTC
    /// day's start), for billing by level over time.
    async fn set_levels(&self, _levels: &[CounterRow]) -> Result<(), String> {
        Ok(())
    }
}

/// One request for admission.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// The API key the caller used, if any.
    pub key: Option<KeyId>,
    /// The tenant's effective limits (plan merged with overrides).
    pub tenant_limits: &'a [Limit],
    /// The key's own limits.
    pub key_limits: &'a [Limit],
    /// The resource used.
    pub resource: &'a str,
    /// How much of it.
    pub cost: u64,
    /// What to do when shared counters are unreachable (the tenant's plan's policy).
    pub failure: CounterFailure,
}

/// A limit as it stands, for headers, 429 bodies and the usage table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitState {
    /// The resource (borrowed for the well-known names, so the hot path allocates nothing).
    pub resource: std::borrow::Cow<'static, str>,
    /// The window.
    pub window: Window,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// Used in the current window (after this request, when admitted).
    pub current: u64,
    /// What is left.
    pub remaining: Option<u64>,
    /// When the window resets (Unix seconds; now + window for levels that never reset).
    #[serde(serialize_with = "tenantd_core::ts::ser")]
    pub reset_at: i64,
    /// Milliseconds until then.
    #[serde(skip)]
    pub reset_ms: i64,
    /// Hard or soft.
    pub enforcement: Enforcement,
    /// The API key whose own limit this is, if any.
    #[serde(skip)]
    pub key: Option<KeyId>,
}

impl LimitState {
    /// The `RateLimit-Policy` name: `<resource>-<window>` (with `-key` for a key's own).
    pub fn policy_name(&self) -> String {
        match self.key {
            Some(_) => format!("{}-{}-key", self.resource, self.window.as_str()),
            None => format!("{}-{}", self.resource, self.window.as_str()),
        }
    }
}

/// A threshold crossed by an admitted request: emitted once per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// The tenant.
    pub tenant: TenantId,
    /// `quota.warning` (80%) or `quota.exceeded` (100%).
    pub kind: &'static str,
    /// The limit after the request.
    pub state: LimitState,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted and counted.
    Admitted {
        /// The limit with the least remaining, for the rate-limit headers.
        tightest: Option<LimitState>,
        /// Thresholds this request crossed.
        crossings: Vec<Crossing>,
    },
    /// Refused; nothing was counted.
    Refused {
        /// The limit that refused.
        state: LimitState,
        /// Seconds until a retry can succeed (at least 1).
        retry_after: u64,
    },
}

impl Outcome {
    /// Admitted with no limit applying.
    pub fn nothing() -> Self {
        Outcome::Admitted {
            tightest: None,
            crossings: Vec::new(),
        }
    }

    /// Several admitted outcomes as one: the tightest of their tightest limits and all
    /// their crossings (the first refusal, if any, wins).
    pub fn all(outcomes: impl IntoIterator<Item = Outcome>) -> Self {
        let mut out: Option<LimitState> = None;
        let mut all_crossings = Vec::new();
        for o in outcomes {
            match o {
                Outcome::Admitted { tightest, crossings } => {
                    all_crossings.extend(crossings);
                    out = match (out, tightest) {
                        (Some(a), Some(b)) => Some(if (b.remaining, b.reset_ms) < (a.remaining, a.reset_ms) {
                            b
                        } else {
                            a
                        }),
                        (a, b) => a.or(b),
                    };
                }
                refused => return refused,
            }
        }
        Outcome::Admitted {
            tightest: out,
            crossings: all_crossings,
        }
    }
}

/// One ask as a [`Reservation`] keeps it: what was counted, and under which limits.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub resource: String,
    pub cost: u64,
    pub checks: Vec<Check>,
}

impl Held {
    fn of(ask: &Ask<'_>) -> Self {
        Held {
            resource: ask.resource.to_string(),
            cost: ask.cost,
            checks: ask.checks().collect(),
        }
    }
}

/// Use that was admitted and counted for admission, but that the caller writes to the
/// store itself, in the transaction that makes it durable (usage events, whose
/// idempotency keys commit with their counts: docs/limits.md). Nothing of it is queued for
/// the flusher. If the caller's write fails, [`Limiter::take_back`] uncounts it.
#[derive(Debug)]
pub struct Reservation {
    pub(crate) tenant: TenantId,
    pub(crate) at_ms: i64,
    pub(crate) held: Vec<Held>,
    /// Counted in Redis (taken back there too), not by an outage's fallback.
    pub(crate) in_redis: bool,
    /// The deltas to add to the stored counters, in the caller's transaction.
    pub deltas: Vec<CounterRow>,
    /// The day's value of every level it grew, for the same transaction.
    pub levels: Vec<CounterRow>,
}

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The counters of this tenant could not be loaded from the store.
    #[error("usage counters could not be loaded: {0}")]
    Store(String),
    /// Redis is unreachable and the plan's policy is `fail_closed`.
    #[error("the shared usage counters are unreachable and this plan refuses requests until they are back (counter_failure = fail_closed)")]
    Unavailable,
}

/// A limit that applies to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Check {
    pub scope: Option<KeyId>,
    pub window: Window,
    pub limit: Option<u64>,
    pub enforcement: Enforcement,
}

/// A limit and what an engine found for it, before the request. Cheap to copy: a
/// [`LimitState`] (which owns its resource name) is built only for what is reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub check: Check,
    /// Used before this request.
    pub current: u64,
    /// Milliseconds until the window resets.
    pub reset_ms: i64,
    /// Milliseconds until this request's cost would fit.
    pub retry_ms: i64,
}

impl Seen {
    /// A limit whose use is a counter that frees up only at `reset_ms` (0: a level that
    /// never resets, where a retry may fit once others shrink it; worth trying in 1 s).
    pub(crate) fn counted(check: Check, current: u64, reset_ms: i64) -> Self {
        Seen {
            check,
            current,
            reset_ms,
            retry_ms: if reset_ms > 0 { reset_ms } else { 1000 },
        }
    }

    fn refuses(&self, cost: u64) -> bool {
        self.check.enforcement == Enforcement::Hard
            && self.check.limit.is_some_and(|l| self.current.saturating_add(cost) > l)
    }

    /// The limit as it stands with `current` used.
    fn state(&self, resource: &str, current: u64, now_ms: i64) -> LimitState {
        LimitState {
            resource: resource_name(resource),
            window: self.check.window,
            limit: self.check.limit,
            current,
            remaining: self.check.limit.map(|l| l.saturating_sub(current)),
            reset_at: (now_ms + self.reset_ms).div_euclid(1000),
            reset_ms: self.reset_ms,
            enforcement: self.check.enforcement,
            key: self.check.scope,
        }
    }
}

/// A resource name as a `LimitState` holds it: the built-in names without allocating.
pub fn resource_name(resource: &str) -> std::borrow::Cow<'static, str> {
    const KNOWN: [&str; 4] = ["api_calls", "storage_bytes", "members", "keys"];
    match KNOWN.iter().find(|k| **k == resource) {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(resource.to_string()),
    }
}

/// Resources whose levels are counted from the catalog, not metered here.
pub const CATALOG_LEVELS: [&str; 2] = ["members", "keys"];

impl Ask<'_> {
    /// The limits that apply: the tenant's and the key's, for this resource, except
    /// leases and the levels the catalog counts.
    pub(crate) fn checks(&self) -> impl Iterator<Item = Check> + '_ {
        let key_limits: &[Limit] = if self.key.is_some() { self.key_limits } else { &[] };
        let tenant = self.tenant_limits.iter().map(|l| (None, l));
        let key = key_limits.iter().map(move |l| (self.key, l));
        tenant.chain(key).filter_map(move |(scope, l)| self.check_of(scope, l))
    }

    fn check_of(&self, scope: Option<KeyId>, l: &Limit) -> Option<Check> {
        let applies = l.resource == self.resource
            && l.window != Window::Concurrent
            && (l.window != Window::Total || !CATALOG_LEVELS.contains(&self.resource));
        applies.then_some(Check {
            scope,
            window: l.window,
            limit: l.limit,
            enforcement: l.enforcement,
        })
    }

    /// The refusal if any hard limit refuses (reporting the one that frees up last), so
    /// that an engine commits nothing.
    pub(crate) fn refusal(&self, seen: &[Seen], now_ms: i64) -> Option<Outcome> {
        seen.iter()
            .filter(|s| s.refuses(self.cost))
            .max_by_key(|s| s.retry_ms)
            .map(|s| Outcome::Refused {
                state: s.state(self.resource, s.current, now_ms),
                retry_after: (s.retry_ms.max(1) as u64).div_ceil(1000),
            })
    }

    /// The admitted outcome once an engine has committed the cost to every limit: the
    /// tightest limit (least left, then soonest reset) and the tenant's thresholds crossed.
    pub(crate) fn admitted(&self, seen: &[Seen], now_ms: i64) -> Outcome {
        let after = |s: &Seen| saturating_count(s.current, self.cost);
        let tightest = seen
            .iter()
            .filter_map(|s| s.check.limit.map(|l| (l.saturating_sub(after(s)), s)))
            .min_by_key(|(left, s)| (*left, s.reset_ms))
            .map(|(_, s)| s.state(self.resource, after(s), now_ms));
        let mut crossings = Vec::new();
        for s in seen
            .iter()
            .filter(|s| s.check.scope.is_none() && s.check.window.rate_ms().is_none())
        {
            let Some(l) = s.check.limit else { continue };
            for (threshold, kind) in [(warning_threshold(l), "quota.warning"), (l, "quota.exceeded")] {
                if s.current < threshold && threshold <= after(s) {
                    crossings.push(Crossing {
                        tenant: self.tenant,
                        kind,
                        state: s.state(self.resource, after(s), now_ms),
                    });
                }
            }
        }
        Outcome::Admitted { tightest, crossings }
    }
}

/// Decides `cost` more of `resource` in `window` against the tenant's limits when the
/// use so far is counted elsewhere (members and keys in the catalog, leases in a lease
/// set): the same refusal, tightest limit and threshold crossings as an engine's.
/// `reset_ms` is how long until the window frees up (0 for levels, which never reset).
#[allow(clippy::too_many_arguments)]
pub fn decide_counted(
    tenant: TenantId,
    limits: &[Limit],
    resource: &str,
    window: Window,
    current: u64,
    cost: u64,
    reset_ms: i64,
    now_ms: i64,
) -> Outcome {
    let ask = Ask {
        tenant,
        key: None,
        tenant_limits: limits,
        key_limits: &[],
        resource,
        cost,
        failure: CounterFailure::default(),
    };
    let seen: Vec<Seen> = limits
        .iter()
        .filter(|l| l.resource == resource && l.window == window)
        .map(|l| {
            let check = Check {
                scope: None,
                window,
                limit: l.limit,
                enforcement: l.enforcement,
            };
            Seen::counted(check, current, reset_ms)
        })
        .collect();
    ask.refusal(&seen, now_ms)
        .unwrap_or_else(|| ask.admitted(&seen, now_ms))
}

/// The 80% threshold of a limit.
pub fn warning_threshold(limit: u64) -> u64 {
    (limit * 4).div_ceil(5).max(1)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The admission front the server and the edge use: in-process counters, or counters
/// shared through Redis with this node's usage recorded in process and flushed to the
/// store either way.
pub struct Limiter {
    local: Arc<Local>,
    shared: Option<Shared>,
    /// Write every admitted request's usage before answering (flush interval 0).
    sync_flush: bool,
}

impl Limiter {
    /// Counters in process, persisted to `store`.
    pub fn in_process(store: Arc<dyn CounterStore>, sync_flush: bool) -> Self {
        Self {
            local: Arc::new(Local::new(store)),
            shared: None,
            sync_flush,
        }
    }

    /// Counters shared through Redis at `url` (keys start with `prefix`); this node's
    /// usage is persisted to `store`. Must be called inside a Tokio runtime.
    pub fn with_redis(store: Arc<dyn CounterStore>, sync_flush: bool, url: &str, prefix: &str) -> Result<Self, String> {
        let local = Arc::new(Local::new(store));
        Ok(Self {
            shared: Some(Shared::start(url, prefix, local.clone())?),
            local,
            sync_flush,
        })
    }

    /// The shared engine, when counters are in Redis.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// Decides `ask` now.
    pub async fn admit(&self, ask: &Ask<'_>) -> Result<Outcome, AdmitError> {
        self.admit_all(std::slice::from_ref(ask)).await
    }

    /// Decides several asks of one tenant, for distinct resources, together, like
    /// [`Limiter::admit_all`]; admitted, their use is counted for admission but left to
    /// the caller to store, durably, with the [`Reservation`]'s rows.
    pub async fn reserve(&self, asks: &[Ask<'_>]) -> Result<(Outcome, Option<Reservation>), AdmitError> {
        let now = now_ms();
        match &self.shared {
            None => Box::pin(self.local.reserve_at(asks, now)).await,
            Some(s) => Box::pin(s.reserve(asks, now)).await,
        }
    }

    /// Uncounts a reservation whose write failed, where its windows are still current.
    pub async fn take_back(&self, r: Reservation) {
        match &self.shared {
            Some(s) => s.take_back(&r).await,
            None => self.local.take_back(&r, true),
        }
    }

    /// Decides several asks of one tenant, for distinct resources, together.
    pub async fn admit_all(&self, asks: &[Ask<'_>]) -> Result<Outcome, AdmitError> {
        let now = now_ms();
        // The cold and the Redis paths are boxed: their futures are large, and every
        // caller's future (the edge's, each request's) would otherwise carry and move
        // them whole.
        let out = match &self.shared {
            None => match self.local.admit_loaded(asks, now) {
                Some(out) => out,
                None => Box::pin(self.local.admit_all_at(asks, now)).await?,
            },
            Some(s) => Box::pin(s.admit_all(asks, now)).await?,
        };
        if self.sync_flush && matches!(out, Outcome::Admitted { .. }) {
            self.flush().await.map_err(AdmitError::Store)?;
        }
        Ok(out)
    }

    /// The tenant's current use of `resource` in `window` (all nodes' in Redis mode;
    /// this node's view when Redis is unreachable).
    pub async fn current(&self, tenant: TenantId, resource: &str, window: Window) -> Result<u64, AdmitError> {
        let now = now_ms();
        if let Some(s) = &self.shared {
            if let Some(v) = s.current(tenant, resource, window, now).await {
                return Ok(v);
            }
        }
        match window {
            Window::Concurrent => self.local.leases_held(tenant, resource, now).await,
            _ => self.local.current(tenant, resource, window, now).await,
        }
    }

    /// Takes a lease; `Err(outcome)` inside when the concurrent limit refuses.
    pub async fn acquire(
        &self,
        tenant: TenantId,
        limits: &[Limit],
        failure: CounterFailure,
        resource: &str,
        ttl_ms: i64,
    ) -> Result<Result<String, Outcome>, AdmitError> {
        match &self.shared {
            None => self.local.acquire(tenant, limits, resource, ttl_ms, now_ms()).await,
            Some(s) => s.acquire(tenant, limits, failure, resource, ttl_ms, now_ms()).await,
        }
    }

    /// Releases a lease; `false` if the tenant holds no such lease.
    pub async fn release(&self, tenant: TenantId, lease_id: &str) -> Result<bool, AdmitError> {
        match &self.shared {
            None => self.local.release(tenant, lease_id, now_ms()).await,
            Some(s) => s.release(tenant, lease_id, now_ms()).await,
        }
    }

    /// Drops everything this node and Redis hold of a purged tenant's counters and
    /// leases, so that a new tenant under the same id starts from nothing. Its unflushed
    /// usage is dropped too.
    pub async fn forget(&self, tenant: TenantId) -> Result<(), String> {
        self.local.forget(tenant);
        match &self.shared {
            Some(s) => s.forget(tenant).await,
            None => Ok(()),
        }
    }

    /// Writes unflushed usage to the store.
    pub async fn flush(&self) -> Result<usize, String> {
        self.local.flush().await
    }
}
