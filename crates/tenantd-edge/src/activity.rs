//! What each tenant did at this node: its requests and the edge's refusals of them.
//!
//! Counted on the hot path with one relaxed atomic add on counters the tenant's cached
//! entry points at (no lookup per request), and read by the server's bounded per-tenant
//! metrics at scrape time (docs/observability.md).
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tenantd_core::{Code, TenantId};

/// The refusals counted per tenant by their own code; any other counts as `other`.
pub const REFUSAL_CODES: [Code; 5] = [
    Code::Forbidden,
    Code::TenantSuspended,
    Code::QuotaExceeded,
    Code::RateLimited,
    Code::Unavailable,
];

/// How many refusal kinds a tenant's counters keep: [`REFUSAL_CODES`] and `other`.
pub const REFUSAL_KINDS: usize = REFUSAL_CODES.len() + 1;

/// The label of refusal kind `i` (`other` for the last).
pub fn refusal_label(i: usize) -> &'static str {
    REFUSAL_CODES.get(i).map_or("other", |c| c.as_str())
}

/// One tenant's counters at this node.
#[derive(Debug, Default)]
pub struct TenantCounters {
    requests: AtomicU64,
    refusals: [AtomicU64; REFUSAL_KINDS],
}

impl TenantCounters {
    /// Counts one decided request of the tenant, refused with `refusal` if any.
    pub fn count(&self, refusal: Option<Code>) {
        self.requests.fetch_add(1, Relaxed);
        if let Some(code) = refusal {
            let i = REFUSAL_CODES
                .iter()
                .position(|c| *c == code)
                .unwrap_or(REFUSAL_CODES.len());
            self.refusals[i].fetch_add(1, Relaxed);
        }
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests.load(Relaxed),
            refusals: std::array::from_fn(|i| self.refusals[i].load(Relaxed)),
        }
    }
}

/// A tenant's counts at one moment, or the difference of two moments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests decided for the tenant (refused ones included).
    pub requests: u64,
    /// Refusals by kind, in [`REFUSAL_CODES`] order, then `other`.
    pub refusals: [u64; REFUSAL_KINDS],
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            refusals: std::array::from_fn(|i| self.refusals[i].saturating_sub(earlier.refusals[i])),
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        for (a, b) in self.refusals.iter_mut().zip(other.refusals) {
            *a += b;
        }
    }
}

type Hasher = foldhash::fast::RandomState;

/// Every tenant's counters at this node. A tenant's stay when its cached entry is
/// replaced (a plan change, say), and go when it is purged.
#[derive(Debug, Default)]
pub struct Activity {
    tenants: DashMap<TenantId, Arc<TenantCounters>, Hasher>,
}

impl Activity {
    /// The tenant's counters, made on first use.
    pub fn of(&self, id: TenantId) -> Arc<TenantCounters> {
        self.tenants.entry(id).or_default().clone()
    }

    /// Forgets a purged tenant's counters.
    pub fn forget(&self, id: &str) {
        self.tenants.remove(id);
    }

    /// Every tenant with counters, and its counts now.
    pub fn counts(&self) -> Vec<(TenantId, Counts)> {
        self.tenants.iter().map(|e| (*e.key(), e.value().counts())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_by_code_and_the_rest_as_other() {
        let c = TenantCounters::default();
        c.count(None);
        c.count(Some(Code::RateLimited));
        c.count(Some(Code::RateLimited));
        c.count(Some(Code::Internal));
        let n = c.counts();
        assert_eq!(n.requests, 4);
        let rate = REFUSAL_CODES.iter().position(|x| *x == Code::RateLimited).unwrap();
        assert_eq!(n.refusals[rate], 2);
        assert_eq!(n.refusals[REFUSAL_KINDS - 1], 1);
        assert_eq!(refusal_label(REFUSAL_KINDS - 1), "other");
        assert_eq!(n.since(&Counts::default()), n);
        assert_eq!(n.since(&n), Counts::default());
    }

    #[test]
    fn counters_outlive_a_replaced_entry_and_go_with_a_purge() {
        let a = Activity::default();
        let t = TenantId::parse("acme").unwrap();
        a.of(t).count(None);
        a.of(t).count(None);
        assert_eq!(
            a.counts(),
            vec![(
                t,
                Counts {
                    requests: 2,
                    ..Default::default()
                }
            )]
        );
        a.forget("acme");
        assert!(a.counts().is_empty());
    }
}
