//! The `[webhooks]` table: where deliveries may go, their retry schedule, when a failing
//! endpoint is disabled, and how many deliveries run at once.
use serde::Deserialize;

/// The `[webhooks]` table as written; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFile {
    allow_private_networks: Option<bool>,
    retry_schedule_seconds: Option<Vec<u64>>,
    disable_after_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
    workers: Option<usize>,
    per_endpoint: Option<usize>,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Send to loopback, private and link-local addresses too (tests, private networks).
    pub allow_private_networks: bool,
    /// The waits before the retries of a failed delivery (each ±20 %); one attempt more
    /// than retries, then the event is given up for that endpoint.
    pub retry_schedule_seconds: Vec<u64>,
    /// An endpoint whose deliveries have failed this long is disabled.
    pub disable_after_seconds: u64,
    /// How long a delivery may take (a 2xx within it is delivered).
    pub timeout_seconds: u64,
    /// Deliveries at once on this node.
    pub workers: usize,
    /// Deliveries at once to one endpoint on this node: a hanging endpoint holds no more.
    pub per_endpoint: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            retry_schedule_seconds: vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            disable_after_seconds: 5 * 86_400,
            timeout_seconds: 15,
            workers: 8,
            per_endpoint: 2,
        }
    }
}

impl WebhookSettings {
    /// The table's values over the defaults, checked.
    pub fn from_file(f: WebhooksFile) -> Result<Self, String> {
        let d = Self::default();
        let s = Self {
            allow_private_networks: f.allow_private_networks.unwrap_or(d.allow_private_networks),
            retry_schedule_seconds: f.retry_schedule_seconds.unwrap_or(d.retry_schedule_seconds),
            disable_after_seconds: f.disable_after_seconds.unwrap_or(d.disable_after_seconds),
            timeout_seconds: f.timeout_seconds.unwrap_or(d.timeout_seconds),
            workers: f.workers.unwrap_or(d.workers),
            per_endpoint: f.per_endpoint.unwrap_or(d.per_endpoint),
        };
        if s.retry_schedule_seconds.len() > 50 {
            return Err("[webhooks] retry_schedule_seconds takes at most 50 waits".into());
        }
        if !(1..=300).contains(&s.timeout_seconds) {
            return Err("[webhooks] timeout_seconds must be 1 to 300".into());
        }
        if !(1..=256).contains(&s.workers) || s.per_endpoint == 0 {
            return Err("[webhooks] workers must be 1 to 256 and per_endpoint at least 1".into());
        }
        Ok(s)
    }
}
