//! The job queue's series: jobs by state (the queue's depth, as of the last upkeep), how
//! long jobs waited to be claimed, and how long their runs took, by outcome. Totals over
//! every tenant and queue: both are names tenants choose, so neither becomes a label.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tenantd_jobs::JobState;

/// Upper bounds of the wait and run buckets, in seconds: 10 ms to an hour.
const BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The job queue's metrics (one per server).
#[derive(Debug)]
pub struct JobMetrics {
    depth: Family<StateLabel, Gauge>,
    claimed: Counter,
    waited: Histogram,
    ran: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    registry: Registry,
}

impl Default for JobMetrics {
    fn default() -> Self {
        let depth = Family::<StateLabel, Gauge>::default();
        let claimed = Counter::default();
        let waited = Histogram::new(BUCKETS);
        let ran =
            Family::<OutcomeLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        let mut registry = Registry::default();
        registry.register(
            "tenantd_jobs",
            "Unfinished jobs by state (queued counts the scheduled), every tenant and queue, as of the last upkeep",
            depth.clone(),
        );
        registry.register(
            super::requests::family_name("tenantd_jobs_claimed_total"),
            "Jobs claimed by workers, tenantd's own included",
            claimed.clone(),
        );
        registry.register(
            "tenantd_job_wait_seconds",
            "Time from a job being ready (its run_at) to its claim",
            waited.clone(),
        );
        registry.register(
            "tenantd_job_run_seconds",
            "Time from a job's claim to its worker's report, by outcome (succeeded, failed, dead)",
            ran.clone(),
        );
        for state in ["queued", "failed", "running"] {
            depth.get_or_create(&StateLabel { state }).set(0);
        }
        for outcome in ["succeeded", "failed", "dead"] {
            let _ = ran.get_or_create(&OutcomeLabel { outcome });
        }
        JobMetrics {
            depth,
            claimed,
            waited,
            ran,
            registry,
        }
    }
}

impl JobMetrics {
    /// The registry they are in, for [`super::render`].
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A job was claimed after waiting `waited_ms` since it was ready.
    pub fn claimed(&self, waited_ms: i64) {
        self.claimed.inc();
        self.waited.observe(waited_ms.max(0) as f64 / 1000.0);
    }

    /// A run ended (`succeeded`, `failed` or `dead`) after `ran_ms`.
    pub fn finished(&self, outcome: &'static str, ran_ms: i64) {
        self.ran
            .get_or_create(&OutcomeLabel { outcome })
            .observe(ran_ms.max(0) as f64 / 1000.0);
    }

    /// The queue's depth as the upkeep counted it: `(queue, state, jobs)` rows.
    pub fn set_depth(&self, rows: &[(String, JobState, u64)]) {
        for state in [JobState::Queued, JobState::Failed, JobState::Running] {
            let n: u64 = rows.iter().filter(|(_, s, _)| *s == state).map(|(_, _, n)| n).sum();
            self.depth
                .get_or_create(&StateLabel { state: state.as_str() })
                .set(n.min(i64::MAX as u64) as i64);
        }
    }
}
