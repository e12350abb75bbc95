//! The row tier's records straight over sqlx, for `bench/records.sh`: the same statements
//! tenantd's API runs (a transaction that sets `tenantd.tenant_id`, then the scoped
//! statements, with the storage level for writes), under the same row-level security, from `CONCURRENCY` tasks for
//! `SECONDS`. `get` reads record `ID` (as `GET …/records/{rid}`); `put` creates a new
//! record each time (as `POST …/records`). `POOL` is the pool's size (tenantd's
//! `data_pool_size`; default 16). Prints operations per second.
//!
//! `cargo run --release -p tenantd-data --example direct -- get|put URL TENANT COLLECTION ID CONCURRENCY SECONDS [POOL]`
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantd_core::{Isolation, TenantId};
use tenantd_data::{DataOptions, DataStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, pool) = match args.as_slice() {
        [rest @ .., pool] if rest.len() == 7 => (rest, pool.parse()?),
        all => (all, tenantd_data::DEFAULT_POOL_SIZE),
    };
    let [mode, url, tenant, collection, id, concurrency, seconds] = args else {
        return Err("usage: direct get|put URL TENANT COLLECTION ID CONCURRENCY SECONDS [POOL]".into());
    };
    let put = match mode.as_str() {
        "get" => false,
        "put" => true,
        _ => return Err("the mode is get or put".into()),
    };
    let doc = serde_json::json!({"customer": "c-17", "total": 120, "status": "open",
        "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]});
    let opts = DataOptions {
        pool_size: pool,
        ..DataOptions::new(url.as_str())
    };
    let store = Arc::new(DataStore::open(opts).await?);
    let tenant = TenantId::parse(tenant)?;
    let deadline = Instant::now() + Duration::from_secs(seconds.parse()?);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency.parse::<usize>()? {
        let (store, done, collection, id, doc) =
            (store.clone(), done.clone(), collection.clone(), id.clone(), doc.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let scope = store.scope(tenant, Some(Isolation::Row)).await.expect("placed");
                if put {
                    n += 1;
                    let r = scope
                        .put_record(&collection, &format!("direct_{task}_{n}"), &doc, None)
                        .await;
                    assert!(r.is_ok(), "the record is written: {r:?}");
                } else {
                    let r = scope.get_record(&collection, &id).await;
                    assert!(matches!(r, Ok(Some(_))), "the record is readable: {r:?}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    let n = done.load(Ordering::Relaxed) as f64;
    println!("{:.0}", n / started.elapsed().as_secs_f64());
    Ok(())
}
