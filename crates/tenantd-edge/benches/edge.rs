//! The edge decision (resolve the tenant + verify the API key + settle the role + admit
//! and meter the call + check a permission) on a warm cache of 1,000,000 tenants and 10,000,000 keys.
//!
//! `cargo bench -p tenantd-edge --bench edge`; sizes from `TENANTD_BENCH_TENANTS` and
//! `TENANTD_BENCH_KEYS`. Prints criterion's estimate and, after it, median and p99 of
//! 1,000,000 individually timed decisions.
use criterion::{black_box, Criterion};
use std::future::Future;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tenantd_core::{Enforcement, Limit, Role, TenantId, TenantStatus, Window};
use tenantd_edge::jwt::{generate_signing_key, Signer};
use tenantd_edge::{
    keys, Directory, DirectoryError, Edge, EdgeConfig, KeyEntry, RequestInfo, SecurityEvent, TenantEntry,
};

/// The warm path never reaches the directory; if it did, the bench would fail loudly.
struct Unreachable;

#[async_trait::async_trait]
impl Directory for Unreachable {
    async fn tenant(&self, _: &TenantId) -> Result<Option<TenantEntry>, DirectoryError> {
        panic!("cache miss in the warm-path bench")
    }
    async fn key(&self, _: &str) -> Result<Option<KeyEntry>, DirectoryError> {
        panic!("cache miss in the warm-path bench")
    }
    async fn member_role(&self, _: &TenantId, _: &str) -> Result<Option<String>, DirectoryError> {
        panic!("cache miss in the warm-path bench")
    }
    async fn custom_role(&self, _: &TenantId, _: &str) -> Result<Option<Role>, DirectoryError> {
        panic!("cache miss in the warm-path bench")
    }
    async fn domains(&self) -> Result<Vec<(String, TenantId)>, DirectoryError> {
        panic!("cache miss in the warm-path bench")
    }
    async fn user_by_email(&self, _: &str) -> Result<String, DirectoryError> {
        panic!("cache miss in the warm-path bench")
    }
    async fn security_event(&self, _: SecurityEvent) -> Option<i64> {
        None
    }
    async fn fold_security_events(&self, _: &[(i64, u64)]) {}
    async fn quota_event(&self, _: tenantd_limits::Crossing) {}
}

/// Counters start empty and are never written during the bench.
struct NoStore;

#[async_trait::async_trait]
impl tenantd_limits::CounterStore for NoStore {
    async fn load(&self, _: &TenantId, _: i64) -> Result<Vec<tenantd_core::usage::CounterRow>, String> {
        Ok(Vec::new())
    }
    async fn add(&self, _: &[tenantd_core::usage::CounterRow]) -> Result<(), String> {
        Ok(())
    }
}

fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn id20(mut n: u64) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = [b'a'; 20];
    for c in s.iter_mut().rev() {
        *c = A[(n % 32) as usize];
        n /= 32;
    }
    String::from_utf8(s.to_vec()).unwrap()
}

struct World {
    edge: Edge,
    /// (tenant id, path, token) for sampled keys.
    samples: Vec<(String, String)>,
}

fn build() -> World {
    let tenants = env_size("TENANTD_BENCH_TENANTS", 1_000_000);
    let keys_n = env_size("TENANTD_BENCH_KEYS", 10_000_000);
    let signer = Arc::new(Signer::new(&[generate_signing_key()], tenantd_edge::jwt::MAX_TOKEN_SECONDS).unwrap());
    let limiter = Arc::new(tenantd_limits::Limiter::in_process(Arc::new(NoStore), false));
    let edge = Edge::new(EdgeConfig::default(), Arc::new(Unreachable), signer, None).with_limiter(limiter);
    // A plan like the built-in ones (hourly and monthly api_calls), with limits high
    // enough that the bench is never refused: admission and metering run on every call.
    let limits: Arc<[Limit]> = Arc::from(vec![
        Limit {
            resource: "api_calls".into(),
            window: Window::Hour,
            limit: Some(u64::MAX / 4),
            enforcement: Enforcement::Hard,
        },
        Limit {
            resource: "api_calls".into(),
            window: Window::Month,
            limit: Some(u64::MAX / 4),
            enforcement: Enforcement::Soft,
        },
    ]);
    let t0 = Instant::now();
    for i in 0..tenants {
        edge.cache().put_tenant(TenantEntry {
            id: TenantId::parse(&format!("t{i}")).unwrap(),
            plan: tenantd_core::PlanId::parse("free").unwrap(),
            isolation: tenantd_core::Isolation::Row,
            status: TenantStatus::Active,
            limits: limits.clone(),
            counter_failure: Default::default(),
            job_weight: 1,
            upstream: None,
            config: Arc::default(),
            activity: Default::default(),
        });
    }
    let roles = ["owner", "admin", "member", "viewer"];
    let stride = (keys_n / 1024).max(1);
    let mut samples = Vec::new();
    for k in 0..keys_n {
        let tenant = format!("t{}", k % tenants);
        let token = format!(
            "{}{}_{}",
            keys::KEY_PREFIX,
            id20(k as u64),
            id20(k as u64 ^ 0x5deece66d)
        );
        edge.cache().put_key(KeyEntry {
            id: keys::KeyId::from_part(&id20(k as u64)).unwrap(),
            tenant: TenantId::from_trusted(tenant.clone()),
            hash: keys::hash(&token),
            role: roles[k % roles.len()].to_string(),
            expires_at: None,
            revoked: false,
            // Recently used: no last-use write is queued during the bench.
            last_used: AtomicI64::new(i64::MAX / 2),
            limits: Arc::from(Vec::new()),
        });
        if k % stride == 0 {
            samples.push((format!("/v1/tenants/{tenant}/members"), token));
        }
        if k > 0 && k % 1_000_000 == 0 {
            eprintln!("loaded {k} keys ({:.0?})", t0.elapsed());
        }
    }
    edge.cache().set_domains(Vec::new());
    let (t, k) = edge.cache().sizes();
    eprintln!("cache: {t} tenants, {k} keys, loaded in {:.1?}", t0.elapsed());
    World { edge, samples }
}

/// Runs one decision to completion; on a warm cache it never awaits.
fn decide(edge: &Edge, path: &str, token: &str) -> bool {
    let info = RequestInfo {
        path,
        bearer: Some(token),
        ..Default::default()
    };
    let fut = edge.decide(&info, String::new());
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(ctx)) => ctx.role.as_ref().is_some_and(|r| r.allows("members:read")),
        Poll::Ready(Err(p)) => panic!("refused: {p}"),
        Poll::Pending => panic!("the warm path awaited"),
    }
}

fn percentiles(w: &World) {
    let n = 1_000_000;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let (path, token) = &w.samples[i % w.samples.len()];
        let t = Instant::now();
        black_box(decide(&w.edge, path, token));
        times.push(t.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    let p = |q: f64| times[((n as f64) * q) as usize - 1];
    eprintln!(
        "edge decision over {n} timed calls: median {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns",
        p(0.5),
        p(0.9),
        p(0.99),
        p(0.999)
    );
}

fn main() {
    let w = build();
    let mut c = Criterion::default().configure_from_args().sample_size(50);
    let mut i = 0usize;
    c.bench_function("edge_decision/api_key/warm", |b| {
        b.iter(|| {
            i = (i + 1) % w.samples.len();
            let (path, token) = &w.samples[i];
            black_box(decide(&w.edge, path, token))
        })
    });
    c.final_summary();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        percentiles(&w);
    }
}
