//! Webhook deliveries: attempts by outcome, and the lag from an event to its delivery.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the lag buckets, in seconds: 1 s to a day (an event's time is kept to
/// the second).
const BUCKETS: [f64; 11] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 21_600.0, 86_400.0,
];

/// The outcomes an attempt is counted by.
pub const OUTCOMES: [&str; 4] = ["delivered", "failed", "given_up", "disabled"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The webhook series (one per server).
#[derive(Debug)]
pub struct WebhookMetrics {
    attempts: Family<OutcomeLabel, Counter>,
    lag: Histogram,
    registry: Registry,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        let attempts = Family::<OutcomeLabel, Counter>::default();
        let lag = Histogram::new(BUCKETS);
        let mut registry = Registry::default();
        registry.register(
            super::requests::family_name("tenantd_webhook_deliveries_total"),
            "Webhook delivery attempts, by outcome: delivered, failed (will retry), given_up (the schedule ended), disabled (410 or failing too long)",
            attempts.clone(),
        );
        registry.register(
            "tenantd_webhook_lag_seconds",
            "Time from an event to its delivery to an endpoint",
            lag.clone(),
        );
        for outcome in OUTCOMES {
            attempts.get_or_create(&OutcomeLabel { outcome }).inc_by(0);
        }
        WebhookMetrics {
            attempts,
            lag,
            registry,
        }
    }
}

impl WebhookMetrics {
    /// The registry they are in, for [`super::render`].
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One attempt's outcome, and for a delivery its lag in seconds.
    pub fn delivered(&self, outcome: &'static str, lag_s: Option<i64>) {
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
        if let Some(s) = lag_s {
            self.lag.observe(s as f64);
        }
    }
}
