//! Admission for tenantd: whether a tenant (and the API key it calls with) may use
//! `cost` more of a resource now, under every limit of its plan, its overrides and the
//! key's own limits (CONTRACT §4).
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
// pub mod redis_engine;

pub use local::{Local, Share};
use serde::Serialize;
use std::sync::Arc;
use tenantd_core::usage::CounterRow;
use tenantd_core::{CounterFailure, Enforcement, KeyId, Limit, TenantId, Window};

/// Where calendar counters are persisted (the catalog).
#[async_trait::async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// The tenant's counters of periods starting at or after `since`, and its levels.
    async fn load(&self, tenant: &TenantId, since: i64) -> Result<Vec<CounterRow>, String>;
    /// Adds deltas.
    async fn add(&self, deltas: &[CounterRow]) -> Result<(), String>;
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
    /// The plan's policy when shared counters are unreachable.
    pub on_failure: CounterFailure,
}

/// A limit as it stands, for headers, 429 bodies and the usage table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitState {
    /// The resource.
    pub resource: String,
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

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Shared counters are unreachable and the plan fails closed.
    #[error("the shared rate-limit counters are unavailable")]
    Unavailable,
    /// The counters of this tenant could not be loaded from the store.
    #[error("usage counters could not be loaded: {0}")]
    Store(String),
}

/// A limit that applies to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Check {
    pub scope: Option<KeyId>,
    pub window: Window,
    pub limit: Option<u64>,
    pub enforcement: Enforcement,
}

/// Resources whose levels are counted from the catalog, not metered here.
pub const CATALOG_LEVELS: [&str; 2] = ["members", "keys"];

impl Ask<'_> {
    /// The limits that apply: the tenant's and the key's, for this resource, except
    /// leases and the levels the catalog counts.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let levels_here = !CATALOG_LEVELS.contains(&self.resource);
        let scoped = |scope: Option<KeyId>, ls: &[Limit]| -> Vec<Check> {
            ls.iter()
                .filter(|l| l.resource == self.resource)
                .filter(|l| l.window != Window::Concurrent && (l.window != Window::Total || levels_here))
                .map(|l| Check {
                    scope,
                    window: l.window,
                    limit: l.limit,
                    enforcement: l.enforcement,
                })
                .collect()
        };
        let mut out = scoped(None, self.tenant_limits);
        if let Some(k) = self.key {
            out.extend(scoped(Some(k), self.key_limits));
        }
        out
    }
}

/// The 80% threshold of a limit.
pub fn warning_threshold(limit: u64) -> u64 {
    (limit * 4).div_ceil(5).max(1)
}

/// Thresholds `before → after` crossed for a limit.
pub(crate) fn crossings(tenant: TenantId, state: &LimitState, before: u64) -> Vec<Crossing> {
    let (Some(l), true) = (state.limit, state.window.rate_ms().is_none()) else {
        return Vec::new();
    };
    let after = state.current;
    [(warning_threshold(l), "quota.warning"), (l, "quota.exceeded")]
        .into_iter()
        .filter(|(t, _)| before < *t && *t <= after)
        .map(|(_, kind)| Crossing {
            tenant,
            kind,
            state: state.clone(),
        })
        .collect()
}

/// The limit with the least left (ties: the one resetting soonest).
pub(crate) fn tightest(states: Vec<LimitState>) -> Option<LimitState> {
    states
        .into_iter()
        .filter(|s| s.limit.is_some())
        .min_by_key(|s| (s.remaining.unwrap_or(u64::MAX), s.reset_ms))
}

/// The refusal to report when several limits refuse: the one that frees up last.
pub(crate) fn refusal(refused: Vec<(LimitState, i64)>) -> Option<Outcome> {
    refused
        .into_iter()
        .max_by_key(|(_, retry_ms)| *retry_ms)
        .map(|(state, retry_ms)| Outcome::Refused {
            state,
            retry_after: (retry_ms.max(1) as u64).div_ceil(1000),
        })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A handle shared by the server: the engine plus where it persists.
pub type SharedStore = Arc<dyn CounterStore>;

/// The admission front the server and the edge use: the in-process engine, or Redis
/// with the in-process engine standing in when Redis is unreachable.
pub struct Limiter {
    local: Local,
    /// Write every admitted request's usage before answering (flush interval 0).
    sync_flush: bool,
}

impl Limiter {
    /// Counters in process, persisted to `store`.
    pub fn in_process(store: Arc<dyn CounterStore>, sync_flush: bool) -> Self {
        Self {
            local: Local::new(store),
            sync_flush,
        }
    }

    /// Decides `ask` now.
    pub async fn admit(&self, ask: &Ask<'_>) -> Result<Outcome, AdmitError> {
        let out = self.local.admit_at(ask, now_ms(), local::Share::WHOLE).await?;
        if self.sync_flush && matches!(out, Outcome::Admitted { .. }) {
            self.flush().await.map_err(AdmitError::Store)?;
        }
        Ok(out)
    }

    /// The tenant's current use of `resource` in `window`.
    pub async fn current(&self, tenant: TenantId, resource: &str, window: Window) -> Result<u64, AdmitError> {
        match window {
            Window::Concurrent => self.local.leases_held(tenant, resource, now_ms()).await,
            _ => self.local.current(tenant, resource, window, now_ms()).await,
        }
    }

    /// Takes a lease; `Err(outcome)` inside when the concurrent limit refuses.
    pub async fn acquire(
        &self,
        tenant: TenantId,
        limits: &[Limit],
        resource: &str,
        ttl_ms: i64,
    ) -> Result<Result<String, Outcome>, AdmitError> {
        self.local
            .acquire(tenant, limits, resource, ttl_ms, now_ms(), local::Share::WHOLE)
            .await
    }

    /// Releases a lease; `false` if the tenant holds no such lease.
    pub async fn release(&self, tenant: TenantId, lease_id: &str) -> Result<bool, AdmitError> {
        self.local.release(tenant, lease_id, now_ms()).await
    }

    /// Writes unflushed usage to the store.
    pub async fn flush(&self) -> Result<usize, String> {
        self.local.flush().await
    }
}
