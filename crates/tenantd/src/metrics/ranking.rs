//! Which tenants get their own `tenant` label: the most active, at most
//! `[metrics] tenant_series` of them, the rest folded into `tenant="_other"` per plan.
//!
//! Each scrape takes every tenant's counts (see `tenantd_edge::activity`), scores each
//! tenant by its requests with an exponential decay (half-life [`HALF_LIFE`]), and names
//! the top scorers, holding on to the ones already named unless a newcomer is clearly
//! busier ([`HOLD`]), so the set adapts to changing activity without flapping.
//!
//! Every request counted goes to exactly one series, and no series ever goes down:
//! what a tenant does while folded is added to its plan's `_other`, what it does while
//! named to its own series, which starts when it is named and ends when it is folded
//! again (or changes plan). The sum over all series ever served is the node's total.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tenantd_core::TenantId;
use tenantd_edge::activity::Counts;

/// How fast a tenant's score forgets: its requests count half as much this long after.
pub const HALF_LIFE: Duration = Duration::from_secs(300);

/// A named tenant keeps its label unless a folded one scores more than this many times
/// its score.
pub const HOLD: f64 = 1.25;

/// The `tenant` label of the folded tenants.
pub const OTHER: &str = "_other";

/// The plan label of a tenant whose plan is not known at this node.
const UNKNOWN_PLAN: &str = "unknown";

/// The series served at one scrape.
#[derive(Debug, Default, PartialEq)]
pub struct Series {
    /// The named tenants: id, plan and the counts of their series.
    pub named: Vec<(TenantId, String, Counts)>,
    /// `_other`'s counts, by plan.
    pub other: Vec<(String, Counts)>,
}

#[derive(Debug, Default)]
struct Seen {
    /// The tenant's counts at the last scrape.
    counts: Counts,
    /// Its plan as last known.
    plan: String,
    /// Its decayed request count.
    score: f64,
}

#[derive(Debug)]
struct Named {
    plan: String,
    counts: Counts,
}

/// The ranking, kept between scrapes (one per server).
#[derive(Debug)]
pub struct TenantSeries(std::sync::Mutex<Ranking>);

impl TenantSeries {
    /// Per-tenant series for at most `limit` tenants (`[metrics] tenant_series`).
    pub fn new(limit: usize) -> Self {
        Self(std::sync::Mutex::new(Ranking::new(limit)))
    }

    /// [`Ranking::scrape`], one scrape at a time.
    pub fn scrape(&self, counts: Vec<(TenantId, Counts, Option<String>)>, now: Instant) -> Series {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).scrape(counts, now)
    }
}

/// The ranking's state between scrapes.
#[derive(Debug)]
pub struct Ranking {
    limit: usize,
    seen: HashMap<TenantId, Seen>,
    named: HashMap<TenantId, Named>,
    other: BTreeMap<String, Counts>,
    last: Option<Instant>,
}

impl Ranking {
    /// A ranking naming at most `limit` tenants.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: HashMap::new(),
            named: HashMap::new(),
            other: BTreeMap::new(),
            last: None,
        }
    }

    /// Takes every tenant's counts `now` (with its plan, where known) and answers the
    /// series to serve.
    pub fn scrape(&mut self, counts: Vec<(TenantId, Counts, Option<String>)>, now: Instant) -> Series {
        let decay = match self.last {
            Some(last) => 0.5f64.powf(now.saturating_duration_since(last).as_secs_f64() / HALF_LIFE.as_secs_f64()),
            None => 1.0,
        };
        self.last = Some(now);
        // What each tenant did since the last scrape, and its score now.
        let mut deltas = Vec::with_capacity(counts.len());
        let mut present = std::collections::HashSet::with_capacity(counts.len());
        for (id, now_counts, plan) in counts {
            let seen = self.seen.entry(id).or_default();
            let delta = now_counts.since(&seen.counts);
            seen.counts = now_counts;
            seen.score = seen.score * decay + delta.requests as f64;
            if let Some(p) = plan.filter(|p| *p != seen.plan) {
                seen.plan = p;
            } else if seen.plan.is_empty() {
                seen.plan = UNKNOWN_PLAN.to_string();
            }
            present.insert(id);
            deltas.push((id, delta));
        }
        // Purged tenants: what they did is already in a series.
        self.seen.retain(|id, _| present.contains(id));
        let chosen = self.choose();
        self.named.retain(|id, _| chosen.contains(id));
        for (id, delta) in deltas {
            let plan = &self.seen[&id].plan;
            if !chosen.contains(&id) {
                self.other.entry(plan.clone()).or_default().add(&delta);
                continue;
            }
            match self.named.get_mut(&id) {
                Some(n) if n.plan == *plan => n.counts.add(&delta),
                // Newly named, or on another plan: a new series.
                _ => {
                    self.named.insert(
                        id,
                        Named {
                            plan: plan.clone(),
                            counts: delta,
                        },
                    );
                }
            }
        }
        let mut named: Vec<_> = self
            .named
            .iter()
            .map(|(id, n)| (*id, n.plan.clone(), n.counts))
            .collect();
        named.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Series {
            named,
            other: self.other.iter().map(|(p, c)| (p.clone(), *c)).collect(),
        }
    }

    /// The tenants to name: the top scorers, the named ones counting [`HOLD`] times
    /// their score; ties go to the lower id, so the choice is the same at every scrape.
    fn choose(&self) -> std::collections::HashSet<TenantId> {
        let mut scored: Vec<(f64, TenantId)> = self
            .seen
            .iter()
            .filter(|(_, s)| s.score > 0.0 || s.counts.requests > 0)
            .map(|(id, s)| {
                let hold = if self.named.contains_key(id) { HOLD } else { 1.0 };
                (s.score * hold, *id)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
        scored.into_iter().take(self.limit).map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> TenantId {
        TenantId::parse(&format!("t{n}")).unwrap()
    }

    fn requests(n: u64) -> Counts {
        Counts {
            requests: n,
            ..Default::default()
        }
    }

    /// Every tenant's counts: `totals[i]` requests for tenant i, all on `free`.
    fn counts(totals: &[u64]) -> Vec<(TenantId, Counts, Option<String>)> {
        totals
            .iter()
            .enumerate()
            .map(|(i, n)| (id(i), requests(*n), Some("free".to_string())))
            .collect()
    }

    fn total(s: &Series) -> u64 {
        s.named.iter().map(|n| n.2.requests).sum::<u64>() + s.other.iter().map(|o| o.1.requests).sum::<u64>()
    }

    #[test]
    fn the_busiest_are_named_and_the_rest_fold_into_other() {
        let mut r = Ranking::new(3);
        let mut totals: Vec<u64> = (0..300).map(|_| 1).collect();
        totals[7] = 500;
        totals[42] = 400;
        totals[299] = 300;
        let s = r.scrape(counts(&totals), Instant::now());
        let names: Vec<_> = s.named.iter().map(|n| n.0.as_str().to_string()).collect();
        assert_eq!(names, ["t299", "t42", "t7"]);
        assert_eq!(s.other, vec![("free".to_string(), requests(297))]);
        assert_eq!(total(&s), totals.iter().sum::<u64>());
    }

    #[test]
    fn the_set_adapts_and_no_series_goes_down() {
        let mut r = Ranking::new(2);
        let t0 = Instant::now();
        let mut totals = vec![100, 90, 1, 1];
        // The value each named series was last served with, and the sum of the last
        // values of series no longer served.
        let mut last: HashMap<TenantId, u64> = HashMap::new();
        let mut ended = 0;
        let mut previous_other = 0;
        for minute in 0..=30u64 {
            let s = r.scrape(counts(&totals), t0 + Duration::from_secs(60 * minute));
            if minute == 0 {
                assert_eq!(s.named.iter().map(|n| n.0).collect::<Vec<_>>(), [id(0), id(1)]);
            }
            let other = s.other[0].1.requests;
            assert!(other >= previous_other, "_other went down");
            previous_other = other;
            for (id, plan, c) in &s.named {
                assert_eq!(plan, "free");
                assert!(c.requests >= last.get(id).copied().unwrap_or(0), "{id} went down");
            }
            let now: HashMap<TenantId, u64> = s.named.iter().map(|n| (n.0, n.2.requests)).collect();
            ended += last
                .iter()
                .filter(|(id, _)| !now.contains_key(*id))
                .map(|(_, v)| v)
                .sum::<u64>();
            last = now;
            // Every request is in exactly one series, served or ended.
            assert_eq!(total(&s) + ended, totals.iter().sum::<u64>());
            // Tenants 2 and 3 get busy, 0 and 1 go quiet: the set follows.
            totals[2] += 1000;
            totals[3] += 900;
        }
        let names: Vec<_> = last.keys().copied().collect();
        assert!(names.contains(&id(2)) && names.contains(&id(3)), "{names:?}");
        assert!(ended > 0, "the quiet tenants' series ended");
    }

    #[test]
    fn a_named_tenant_is_held_against_a_slightly_busier_newcomer() {
        let mut r = Ranking::new(1);
        let t0 = Instant::now();
        r.scrape(counts(&[100, 0]), t0);
        // Tenant 1 now does a little more than tenant 0 per scrape, within HOLD.
        let s = r.scrape(counts(&[200, 110]), t0 + Duration::from_secs(1));
        assert_eq!(s.named[0].0, id(0));
    }

    #[test]
    fn a_plan_change_starts_a_new_series_and_purged_tenants_are_forgotten() {
        let mut r = Ranking::new(5);
        let t0 = Instant::now();
        r.scrape(vec![(id(0), requests(10), Some("free".into()))], t0);
        let s = r.scrape(vec![(id(0), requests(15), Some("pro".into()))], t0);
        assert_eq!(s.named, vec![(id(0), "pro".to_string(), requests(5))]);
        let s = r.scrape(vec![], t0);
        assert!(s.named.is_empty());
        assert!(r.seen.is_empty());
    }
}
