//! Catalog lookups and list pages cost the same at 1,000,000 tenants as at 1,000.
//!
//! Two SQLite catalogs (temporary files) are filled through the public `create_tenant`
//! (64 concurrent tasks, a progress line on stderr every 50,000): a small one of 1,000
//! tenants and a large one of `TENANTD_BENCH_TENANTS` (default 1,000,000). Then:
//!
//! - `get_tenant/<size>`: one tenant by id, ids spread over the whole catalog;
//! - `list_page_50/<size>/first`: the first page of 50;
//! - `list_page_50/<size>/middle`: the page of 50 after a cursor half-way through.
//!
//! ```text
//! cargo bench -p tenantd-store --bench catalog
//! TENANTD_BENCH_TENANTS=2000 cargo bench -p tenantd-store --bench catalog -- --test
//! ```
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantd_store::prelude::*;

use criterion::{criterion_group, criterion_main, Criterion};
use tenantd_core::{Email, PlanId, TenantId};
use tenantd_store::testing::fresh_sqlite;
use tenantd_store::{Catalog, NewTenant, PageRequest, SqlCatalog, TenantFilter};

const SMALL: usize = 1_000;
/// Concurrent `create_tenant` tasks while filling (`TENANTD_BENCH_WORKERS` overrides).
const WORKERS: usize = 64;
const PROGRESS_EVERY: usize = 50_000;
/// How many distinct ids `get_tenant` cycles through (spread over the whole catalog).
const SAMPLE_IDS: usize = 4_096;

fn tenant_id(i: usize) -> TenantId {
    TenantId::parse(&format!("bench-{i:08}")).expect("valid tenant id")
}

/// `1k`, `2k`, `200k`, `1M`, … for bench names.
fn label(n: usize) -> String {
    // (`n / m * m == n` rather than `is_multiple_of`, which needs a newer Rust than 1.85.)
    if n >= 1_000_000 && n / 1_000_000 * 1_000_000 == n {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n / 1_000 * 1_000 == n {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

struct Fixture {
    label: String,
    catalog: SqlCatalog,
    /// Ids to look up, spread over the catalog in a scattered order.
    sample: Vec<TenantId>,
    /// The `next_cursor` of the page that ends half-way through the catalog.
    middle_cursor: String,
    dir: std::path::PathBuf,
}

/// A fresh SQLite catalog with `n` tenants, made through `Catalog::create_tenant`.
async fn build(n: usize) -> Fixture {
    let (url, dir) = fresh_sqlite();
    let catalog = SqlCatalog::connect(&url).await.expect("connect");
    catalog.migrate().await.expect("migrate");
    let plans = ["free", "starter", "professional", "enterprise"].map(|p| PlanId::parse(p).unwrap());

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let concurrency = std::env::var("TENANTD_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&w: &usize| w > 0)
        .unwrap_or(WORKERS);
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (catalog, next, plans) = (catalog.clone(), next.clone(), plans.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let id = tenant_id(i);
                let new = NewTenant {
                    name: format!("Bench tenant {i}"),
                    plan: plans[i % plans.len()].clone(),
                    owner_email: Email::parse(&format!("owner-{i}@bench.example")).unwrap(),
                    settings: serde_json::json!({"region": "eu", "seq": i}),
                    id,
                };
                let mut w = catalog.begin().await.expect("begin");
                catalog.create_tenant(&mut w, &new).await.expect("create_tenant");
                w.commit().await.expect("commit");
                let done = i + 1;
                if done % PROGRESS_EVERY == 0 {
                    let s = started.elapsed().as_secs_f64();
                    eprintln!("bench setup: {done}/{n} tenants in {s:.0} s ({:.0}/s)", done as f64 / s);
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "bench setup: created {n} tenants in {secs:.1} s ({:.0} tenants/s, {concurrency} concurrent tasks)",
        n as f64 / secs
    );

    // Scattered ids: a multiplicative walk over the whole range, so that lookups do
    // not all hit the same few pages.
    let sample = (0..SAMPLE_IDS.min(n))
        .map(|k| tenant_id((k * 2_654_435_761usize) % n))
        .collect();

    // Walk to the middle with big pages to get a real cursor (cursors are opaque).
    let mut seen = 0;
    let mut after = None;
    let middle_cursor = loop {
        let limit = ((n / 2) - seen).clamp(1, 1_000) as u32;
        let page = catalog
            .list_tenants(&TenantFilter::default(), &PageRequest { limit, after })
            .await
            .expect("list");
        seen += page.items.len();
        let cursor = page.next_cursor.expect("more pages before the middle");
        if seen >= n / 2 {
            break cursor;
        }
        after = Some(cursor);
    };
    Fixture {
        label: label(n),
        catalog,
        sample,
        middle_cursor,
        dir,
    }
}

fn catalog_benches(c: &mut Criterion) {
    let large: usize = std::env::var("TENANTD_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    assert!(large >= 200, "TENANTD_BENCH_TENANTS must be at least 200");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fixtures = [rt.block_on(build(SMALL)), rt.block_on(build(large))];

    let mut g = c.benchmark_group("get_tenant");
    for f in &fixtures {
        let mut k = 0usize;
        g.bench_function(f.label.as_str(), |b| {
            b.to_async(&rt).iter(|| {
                k = (k + 1) % f.sample.len();
                let id = &f.sample[k];
                let cat = &f.catalog;
                async move { cat.get_tenant(id).await.expect("get_tenant") }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("list_page_50");
    for f in &fixtures {
        for (name, after) in [("first", None), ("middle", Some(f.middle_cursor.clone()))] {
            let page = PageRequest { limit: 50, after };
            let cat = &f.catalog;
            // The page is full and has a successor at both positions.
            let p = rt
                .block_on(cat.list_tenants(&TenantFilter::default(), &page))
                .expect("list");
            assert_eq!(p.items.len(), 50);
            assert!(p.next_cursor.is_some());
            g.bench_function(format!("{}/{name}", f.label), |b| {
                b.to_async(&rt).iter(|| async {
                    let p = cat
                        .list_tenants(&TenantFilter::default(), &page)
                        .await
                        .expect("list_tenants");
                    assert_eq!(p.items.len(), 50);
                    p
                })
            });
        }
    }
    g.finish();

    for f in fixtures {
        rt.block_on(f.catalog.pool().close());
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = catalog_benches
}
criterion_main!(benches);
