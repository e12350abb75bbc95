//! The admission decision in process against the `governor` crate's keyed limiter, on the
//! same machine in the same run: 10,000 tenants called round-robin, every call admitted.
//!
//! `cargo bench -p tenantd-limits --bench admission`. Prints criterion's estimates and,
//! after them, the ratio tenantd ÷ governor for each pair (target ≤ 1.0×).
//!
//! - `minute`: one sliding-minute rate limit, against governor's GCRA per minute (the
//!   same job: a per-tenant rate limit). tenantd also keeps the tenant's hour, day, week
//!   and month counters (its usage record) in the same decision; governor keeps nothing.
//! - `plan`: the free plan's two limits (hour and month) and the usage record, against
//!   governor with one quota — what a gateway with governor would give up.
use criterion::{black_box, Criterion};
use governor::{Quota, RateLimiter};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tenantd_core::usage::CounterRow;
use tenantd_core::{Enforcement, Limit, TenantId, Window};
use tenantd_limits::{Ask, CounterStore, Limiter, Outcome};

/// Tenants called round-robin (`TENANTD_BENCH_TENANTS`, default 10,000).
fn tenants_n() -> usize {
    std::env::var("TENANTD_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

struct Nothing;

#[async_trait::async_trait]
impl CounterStore for Nothing {
    async fn load(&self, _: &TenantId, _: i64) -> Result<Vec<CounterRow>, String> {
        Ok(Vec::new())
    }
    async fn add(&self, _: &[CounterRow]) -> Result<(), String> {
        Ok(())
    }
}

fn limit(window: Window, n: u64) -> Limit {
    Limit {
        resource: "api_calls".into(),
        window,
        limit: Some(n),
        enforcement: Enforcement::Hard,
    }
}

/// Polls a decision once: with warm state it never awaits.
fn decide(l: &Limiter, ask: &Ask<'_>) -> bool {
    let mut fut = std::pin::pin!(l.admit(ask));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(Outcome::Admitted { .. })) => true,
        Poll::Ready(other) => panic!("not admitted: {other:?}"),
        Poll::Pending => panic!("the warm path awaited"),
    }
}

fn tenantd_limiter(tenants: &[TenantId], limits: &[Limit]) -> Limiter {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let l = Limiter::in_process(Arc::new(Nothing), false);
    rt.block_on(async {
        for t in tenants {
            l.admit(&ask(*t, limits)).await.unwrap();
        }
    });
    l
}

fn ask(tenant: TenantId, limits: &[Limit]) -> Ask<'_> {
    Ask {
        tenant,
        key: None,
        tenant_limits: limits,
        key_limits: &[],
        resource: "api_calls",
        cost: 1,
        failure: Default::default(),
    }
}

/// One decision, by index of the tenant to call.
type Contender<'a> = Box<dyn FnMut(usize) -> bool + 'a>;

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let n_tenants = tenants_n();
    let tenants: Vec<TenantId> = (0..n_tenants)
        .map(|i| TenantId::parse(&format!("t{i}")).unwrap())
        .collect();
    // Limits no run of the bench reaches, so every call is admitted.
    let big = 4_000_000_000u64;
    let minute = [limit(Window::Minute, big)];
    let plan = [limit(Window::Hour, big), limit(Window::Month, big)];
    let gov = RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(big as u32).unwrap()));
    for t in &tenants {
        assert!(gov.check_key(t).is_ok());
    }
    let minute_l = tenantd_limiter(&tenants, &minute);
    let plan_l = tenantd_limiter(&tenants, &plan);
    let mut contenders: Vec<(&str, Contender<'_>)> = vec![
        ("governor_keyed_gcra", Box::new(|i| gov.check_key(&tenants[i]).is_ok())),
        (
            "tenantd_sliding_minute",
            Box::new(|i| decide(&minute_l, &ask(tenants[i], &minute))),
        ),
        (
            "tenantd_free_plan",
            Box::new(|i| decide(&plan_l, &ask(tenants[i], &plan))),
        ),
    ];
    let mut g = c.benchmark_group("admission");
    for (name, f) in contenders.iter_mut() {
        let mut i = 0usize;
        g.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 1) % n_tenants;
                black_box(f(i))
            })
        });
    }
    g.finish();
    // Our own timing for the ratio, robust to a shared machine: 7 rounds of 1,000,000
    // calls per contender, interleaved, and the median round of each.
    let rounds = 7;
    let n = 1_000_000;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..rounds {
        for (k, (_, f)) in contenders.iter_mut().enumerate() {
            let start = Instant::now();
            for j in 0..n {
                black_box(f(j % n_tenants));
            }
            times[k].push(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!("\nmedian of {rounds} interleaved rounds of {n} calls, {n_tenants} tenants round-robin:");
    for ((name, _), ns) in contenders.iter().zip(&medians) {
        println!("  {name:<24} {ns:>8.1} ns   {:.2}× governor", ns / medians[0]);
    }
}
