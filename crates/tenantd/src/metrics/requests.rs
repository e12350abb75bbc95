//! The HTTP API's own series: requests counted and timed by route template, method and
//! status.
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bounds of the request latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`], for structs that derive `Default`.
#[derive(Debug, Clone)]
pub struct Latency(pub Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new(LATENCY_BUCKETS))
    }
}

/// The `route` of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// The labels of the HTTP API's request series. `route` is the router's template (such as
/// `/v1/tenants/{id}`), never the request's path, so no id becomes a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// The HTTP API's request counter and latency histogram (one per server).
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Both, for [`super::render`].
    registry: Registry,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        let mut registry = Registry::default();
        // The registry appends `.` to each help text, and `_total` to a counter's name.
        registry.register(
            family_name("tenantd_http_requests_total"),
            "Requests the HTTP API answered, by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "tenantd_http_request_duration_seconds",
            "Time from a request reaching the HTTP API to its response head, by route template, method and status",
            durations.clone(),
        );
        HttpMetrics {
            requests,
            durations,
            registry,
        }
    }
}

impl HttpMetrics {
    /// The registry both are in, for [`super::render`].
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request and its latency.
    fn record(&self, route: String, method: &'static str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route, method, status };
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// Middleware on the API router: counts and times every request it answers, labelled with
/// the matched route's template (`unmatched` when no route matched), the method (`other`
/// for a method outside RFC 9110 and PATCH) and the status.
pub async fn track(
    axum::extract::State(metrics): axum::extract::State<Arc<HttpMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let res = next.run(req).await;
    metrics.record(route, method, res.status().as_u16(), start.elapsed());
    res
}

/// The method as a label: any client may send any token as a method, so only the standard
/// ones are kept apart.
fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// A counter's name as the library takes it: without the `_total` it appends. The callers
/// write the served name, so that it can be searched for.
pub(super) fn family_name(served: &'static str) -> &'static str {
    served
        .strip_suffix("_total")
        .expect("a counter's name ends with _total")
}
