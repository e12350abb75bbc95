//! What each tenant did at this node: its requests and the edge's refusals of them.
//!
//! The counters live inline in the tenant's cached entry, so counting is one relaxed
//! atomic add on memory the decision has just read (no lookup, no lock, no cache miss
//! of its own). When the entry is replaced its counts move to the new one; when it is
//! dropped from the cache they are parked in [`Activity`] until the tenant is cached
//! again. Only a request in flight at the instant of a replacement can go uncounted. The
//! server's bounded per-tenant metrics read them at scrape time (docs/observability.md).
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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

/// One tenant's counters at this node; `requests` first, as every request counts it.
#[derive(Debug, Default)]
#[repr(C)]
pub struct TenantCounters {
    requests: AtomicU64,
    refusals: [AtomicU64; REFUSAL_KINDS],
}

impl Clone for TenantCounters {
    fn clone(&self) -> Self {
        Self::starting_at(self.counts())
    }
}

impl TenantCounters {
    /// Counters holding `counts` already.
    pub fn starting_at(counts: Counts) -> Self {
        Self {
            requests: AtomicU64::new(counts.requests),
            refusals: counts.refusals.map(AtomicU64::new),
        }
    }

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

/// The counts of tenants whose entries left the cache, until they are cached again.
#[derive(Debug, Default)]
pub struct Activity {
    parked: DashMap<TenantId, Counts, Hasher>,
}

impl Activity {
    /// Parks a tenant's counts (its entry left the cache).
    pub fn park(&self, id: TenantId, counts: Counts) {
        self.parked.entry(id).or_default().add(&counts);
    }

    /// Takes back a tenant's parked counts (its entry is cached again).
    pub fn unpark(&self, id: &str) -> Counts {
        self.parked.remove(id).map(|(_, c)| c).unwrap_or_default()
    }

    /// Forgets a purged tenant's counts.
    pub fn forget(&self, id: &str) {
        self.parked.remove(id);
    }

    /// Every parked tenant and its counts.
    pub fn parked(&self) -> Vec<(TenantId, Counts)> {
        self.parked.iter().map(|e| (*e.key(), *e.value())).collect()
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
    fn parked_counts_add_up_and_go_with_an_unpark_or_a_purge() {
        let a = Activity::default();
        let t = TenantId::parse("acme").unwrap();
        let two = Counts {
            requests: 2,
            ..Default::default()
        };
        a.park(t, two);
        a.park(t, two);
        assert_eq!(
            a.parked(),
            vec![(
                t,
                Counts {
                    requests: 4,
                    ..Default::default()
                }
            )]
        );
        assert_eq!(a.unpark("acme").requests, 4);
        assert!(a.parked().is_empty());
        a.park(t, two);
        a.forget("acme");
        assert_eq!(a.unpark("acme"), Counts::default());
        let c = TenantCounters::starting_at(two);
        c.count(None);
        assert_eq!(c.clone().counts().requests, 3);
    }
}
