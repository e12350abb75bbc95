//! The data plane on SQLite and PostgreSQL, at every tier: scoped data never crosses
//! tenants; on PostgreSQL the database itself refuses a query that forgets the tenant;
//! storage is counted and limited; tenants move between tiers online with nothing lost.
use serde_json::json;
use sqlx::{Connection, Row};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tenantd_core::{Isolation, TenantId};
use tenantd_data::{new_blob_id, with_user, Blob, CacheSelector, DataError, DataOptions, DataStore, Record, APP_ROLE};

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

async fn postgres(test: &str) -> Option<String> {
    tenantd_store::testing::fresh_postgres(test).await
}

fn sqlite() -> DataOptions {
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    DataOptions {
        move_grace: Duration::from_millis(50),
        ..DataOptions::new(format!("sqlite://{}", dir.join("tenant-data.db").display()))
    }
}

fn pg(url: &str) -> DataOptions {
    DataOptions {
        move_grace: Duration::from_millis(50),
        ..DataOptions::new(url)
    }
}

const TIERS: [Isolation; 3] = [Isolation::Row, Isolation::Schema, Isolation::Database];

/// Tests `<name>::sqlite` and `<name>::postgresql`, each running `name(options)` on that
/// database (the PostgreSQL one skipped, with a line saying why, without
/// `TENANTD_TEST_DATABASE_URL`).
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::sqlite()).await;
            }

            #[tokio::test]
            async fn postgresql() {
                if let Some(url) = super::postgres(stringify!($name)).await {
                    super::$name(super::pg(&url)).await;
                }
            }
        }
    };
}

/// Records of two tenants at the given tiers never cross.
async fn scoped_records_never_cross_tenants(store: &DataStore, ta: Isolation, tb: Isolation) {
    let (ida, idb) = (tenant("acme"), tenant("globex"));
    store.place(&ida, ta).await.unwrap();
    store.place(&idb, tb).await.unwrap();
    let a = store.scope(ida, None).await.unwrap();
    let b = store.scope(idb, None).await.unwrap();
    let r = a
        .put_record("orders", "o1", &json!({"total": 5}), None)
        .await
        .unwrap()
        .value;
    assert_eq!((r.version, &r.doc), (1, &json!({"total": 5})));
    let r = a
        .put_record("orders", "o1", &json!({"total": 6, "items": [1, 2]}), None)
        .await
        .unwrap()
        .value;
    assert_eq!(r.version, 2, "a write raises the version");
    assert!(r.created_at <= r.updated_at);
    a.put_record("orders", "o2", &json!({"total": 1}), None).await.unwrap();
    // The same collection and id for another tenant is another record.
    b.put_record("orders", "o1", &json!({"total": 99}), None).await.unwrap();
    let doc = |r: Option<Record>| r.map(|r| r.doc);
    assert_eq!(
        doc(a.get_record("orders", "o1").await.unwrap()),
        Some(json!({"total": 6, "items": [1, 2]}))
    );
    assert_eq!(
        doc(b.get_record("orders", "o1").await.unwrap()),
        Some(json!({"total": 99}))
    );
    assert_eq!(
        b.get_record("orders", "o2").await.unwrap(),
        None,
        "acme's o2 is not globex's"
    );
    let ids = |v: Vec<Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(a.list_records("orders", None, 100).await.unwrap()), ["o1", "o2"]);
    assert_eq!(ids(b.list_records("orders", None, 100).await.unwrap()), ["o1"]);
    assert_eq!(ids(a.list_records("orders", None, 1).await.unwrap()), ["o1"]);
    assert_eq!(ids(a.list_records("orders", Some("o1"), 10).await.unwrap()), ["o2"]);
    assert!(a.list_records("other", None, 10).await.unwrap().is_empty());
    // A conditional update: only at the expected version, and only the tenant's own.
    let v2 = a
        .update_record("orders", "o2", &json!({"total": 2}), 1, None)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!((v2.version, &v2.doc), (2, &json!({"total": 2})));
    assert!(
        a.update_record("orders", "o2", &json!({"total": 3}), 1, None)
            .await
            .unwrap()
            .is_none(),
        "stale"
    );
    assert!(
        b.update_record("orders", "o2", &json!({"total": 3}), 2, None)
            .await
            .unwrap()
            .is_none(),
        "not globex's"
    );
    assert_eq!(
        doc(a.get_record("orders", "o2").await.unwrap()),
        Some(json!({"total": 2}))
    );
    // Deleting another tenant's record deletes nothing.
    assert!(!b.delete_record("orders", "o2").await.unwrap().value);
    assert!(a.get_record("orders", "o2").await.unwrap().is_some());
    assert!(a.delete_record("orders", "o2").await.unwrap().value);
    assert!(!a.delete_record("orders", "o2").await.unwrap().value);
    assert_eq!(
        doc(b.get_record("orders", "o1").await.unwrap()),
        Some(json!({"total": 99}))
    );
    for (c, id) in [("", "x"), ("a b", "x"), ("orders", "../x")] {
        assert!(
            matches!(a.put_record(c, id, &json!({}), None).await, Err(DataError::Invalid(_))),
            "{c}/{id}"
        );
    }
    store.remove(&ida).await.unwrap();
    store.remove(&idb).await.unwrap();
    assert!(store.placement(&ida).await.unwrap().is_none());
}

async fn every_pair_of_tiers(store: &DataStore) {
    for ta in TIERS {
        for tb in TIERS {
            scoped_records_never_cross_tenants(store, ta, tb).await;
        }
    }
}

#[tokio::test]
async fn scoped_records_at_every_tier_on_sqlite() {
    every_pair_of_tiers(&DataStore::open(sqlite()).await.unwrap()).await;
}

#[tokio::test]
async fn scoped_records_at_every_tier_on_postgresql() {
    if let Some(url) = postgres("scoped records at every tier").await {
        every_pair_of_tiers(&DataStore::open(pg(&url)).await.unwrap()).await;
    }
}

/// Connected straight to PostgreSQL as the data plane's role: without a tenant a query
/// sees nothing; with acme's it sees only acme's rows and can change no one else's.
/// A transaction on `conn` in `tenant`'s context, as tenantd sets it.
async fn as_tenant<'c>(conn: &'c mut sqlx::AnyConnection, tenant: &str) -> sqlx::Transaction<'c, sqlx::Any> {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenantd.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// The `tenant_id` of each row `sql` returns.
async fn tenant_ids(tx: &mut sqlx::Transaction<'_, sqlx::Any>, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sql).fetch_all(&mut **tx).await.unwrap();
    rows.iter().map(|r| r.get("tenant_id")).collect()
}

#[tokio::test]
async fn row_level_security_is_the_backstop() {
    let Some(url) = postgres("row tier backstop").await else {
        return;
    };
    let store = DataStore::open(pg(&url)).await.unwrap();
    let acme = store.scope(tenant("acme"), Some(Isolation::Row)).await.unwrap();
    acme.put_record("c", "1", &json!({"n": 1}), None).await.unwrap();
    acme.put_record("c", "2", &json!({"n": 2}), None).await.unwrap();
    let globex = store.scope(tenant("globex"), Some(Isolation::Row)).await.unwrap();
    globex.put_record("c", "1", &json!({"n": 3}), None).await.unwrap();
    for s in [&acme, &globex] {
        upload(s, "f", &[b"content"], None).await.unwrap();
        s.put_cache("k", &json!(1), None, &[], None).await.unwrap();
    }

    let mut conn = sqlx::AnyConnection::connect(&with_user(&url, APP_ROLE).unwrap())
        .await
        .unwrap();
    let count = "SELECT COUNT(*) AS n FROM tenant_data.records";
    let n: i64 = sqlx::query(count).fetch_one(&mut conn).await.unwrap().get("n");
    assert_eq!(n, 0, "a query without a tenant sees no rows");
    // Every table of the row tier: nothing without a tenant, only acme's as acme.
    for table in ["records", "blobs", "blob_chunks", "cache_entries", "storage"] {
        let q = format!("SELECT tenant_id FROM tenant_data.{table}");
        let rows = sqlx::query(&q).fetch_all(&mut conn).await.unwrap();
        assert!(rows.is_empty(), "{table}: a query without a tenant sees no rows");
        let mut tx = as_tenant(&mut conn, "acme").await;
        let seen = tenant_ids(&mut tx, &q).await;
        assert!(
            !seen.is_empty() && seen.iter().all(|t| t == "acme"),
            "{table}: {seen:?}"
        );
        tx.rollback().await.unwrap();
    }

    let mut tx = as_tenant(&mut conn, "acme").await;
    let seen = tenant_ids(&mut tx, "SELECT tenant_id FROM tenant_data.records").await;
    assert_eq!(seen, ["acme", "acme"], "acme's context sees acme's rows only");
    for sql in [
        "UPDATE tenant_data.records SET version = 100 WHERE tenant_id = 'globex'",
        "DELETE FROM tenant_data.records WHERE tenant_id = 'globex'",
    ] {
        let n = sqlx::query(sql).execute(&mut *tx).await.unwrap().rows_affected();
        assert_eq!(n, 0, "{sql}");
    }
    tx.commit().await.unwrap();

    // Writing a row for another tenant, turning the policy off, or dropping FORCE: refused.
    let mut tx = as_tenant(&mut conn, "acme").await;
    let insert =
        sqlx::query("INSERT INTO tenant_data.records VALUES ('globex', 'c', '9', CAST('{}' AS jsonb), 1, 2, 0, 0)")
            .execute(&mut *tx)
            .await;
    assert!(insert.unwrap_err().to_string().contains("row-level security"));
    tx.rollback().await.unwrap();
    for sql in [
        "ALTER TABLE tenant_data.records NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON tenant_data.records",
    ] {
        let e = sqlx::query(sql).execute(&mut conn).await.unwrap_err().to_string();
        assert!(e.contains("must be owner"), "{sql}: {e}");
    }
    sqlx::raw_sql("SET row_security = off")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = sqlx::query(count)
        .fetch_one(&mut conn)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("row-level security"),
        "with row security off a query is refused, not answered: {e}"
    );

    // Globex's row is untouched.
    let g = globex.get_record("c", "1").await.unwrap().unwrap();
    assert_eq!((g.version, g.doc), (1, json!({"n": 3})));

    // A tenant's own schema has the same backstop inside: without its context, or with
    // another tenant's, the data role sees none of its rows.
    let initech = store.scope(tenant("initech"), Some(Isolation::Schema)).await.unwrap();
    initech.put_record("c", "1", &json!({"n": 4}), None).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(&with_user(&url, APP_ROLE).unwrap())
        .await
        .unwrap();
    let count = "SELECT COUNT(*) AS n FROM \"tenant_initech\".records";
    for who in [None, Some("acme"), Some("initech")] {
        let mut tx = conn.begin().await.unwrap();
        if let Some(who) = who {
            sqlx::query("SELECT set_config('tenantd.tenant_id', $1, true)")
                .bind(who)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let n: i64 = sqlx::query(count).fetch_one(&mut *tx).await.unwrap().get("n");
        assert_eq!(n, i64::from(who == Some("initech")), "as {who:?}");
        tx.rollback().await.unwrap();
    }
}

/// A role that could read across tenants is refused before anything is served.
#[tokio::test]
async fn a_role_that_could_bypass_the_backstop_is_refused() {
    let Some(url) = postgres("row tier unsafe role").await else {
        return;
    };
    // The test database's own user owns the tables (and is a superuser here).
    let opts = DataOptions {
        app_url: Some(url.clone()),
        ..pg(&url)
    };
    let err = DataStore::open(opts).await.err().expect("refused");
    assert!(matches!(err, DataError::Unsafe(_)));
    assert!(err.to_string().contains(APP_ROLE), "{err}");
}

/// The owner's connection, for what only a test (or a crash) does.
async fn owner(opts: &DataOptions) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&opts.url).await.unwrap()
}

fn placements(opts: &DataOptions) -> &'static str {
    if opts.url.starts_with("sqlite") {
        "placements"
    } else {
        "tenant_data.placements"
    }
}

/// Uploads `parts` as a blob at `path`.
async fn upload(s: &tenantd_data::Scope<'_>, path: &str, parts: &[&[u8]], max: Option<u64>) -> Result<Blob, DataError> {
    let id = new_blob_id();
    for (n, p) in parts.iter().enumerate() {
        s.stage_chunk(&id, n as i64, p).await?;
    }
    let blob = Blob {
        path: path.into(),
        size_bytes: parts.iter().map(|p| p.len() as i64).sum(),
        ..blob_at(&id)
    };
    s.commit_blob(&blob, parts.len() as i64, max).await.map(|w| w.value)
}

/// A blob description for the upload whose chunks are `blob_id`.
fn blob_at(blob_id: &str) -> Blob {
    Blob {
        path: "x".into(),
        blob_id: blob_id.into(),
        content_type: "text/plain".into(),
        size_bytes: 0,
        sha256: "x".into(),
        version: 0,
        created_at: 0,
        updated_at: 0,
    }
}

async fn read(s: &tenantd_data::Scope<'_>, b: &Blob) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 0;
    while let Some(c) = s.chunk(b, seq).await.unwrap() {
        out.extend(c);
        seq += 1;
    }
    out
}

/// Blobs and cache entries of two tenants (at tiers `ta` and `tb`) never cross; blobs
/// keep their chunks in order; the cache expires, and deletes by key, prefix and tag.
async fn blobs_and_cache_never_cross_tenants(store: &DataStore, ta: Isolation, tb: Isolation) {
    let (ida, idb) = (tenant("acme"), tenant("globex"));
    let a = store.scope(ida, Some(ta)).await.unwrap();
    let b = store.scope(idb, Some(tb)).await.unwrap();
    let ba = upload(&a, "docs/one.txt", &[b"hello ", b"blob ", b"world"], None)
        .await
        .unwrap();
    assert_eq!((ba.size_bytes, ba.version), (16, 1));
    assert_eq!(read(&a, &ba).await, b"hello blob world");
    upload(&a, "docs/two.txt", &[b"2"], None).await.unwrap();
    upload(&a, "img/x.png", &[b"png"], None).await.unwrap();
    upload(&b, "docs/one.txt", &[b"globex's"], None).await.unwrap();
    let paths = |v: Vec<Blob>| v.into_iter().map(|b| b.path).collect::<Vec<_>>();
    assert_eq!(
        paths(a.list_blobs("docs/", None, 10).await.unwrap()),
        ["docs/one.txt", "docs/two.txt"]
    );
    assert_eq!(
        paths(a.list_blobs("", Some("docs/two.txt"), 10).await.unwrap()),
        ["img/x.png"]
    );
    assert_eq!(paths(b.list_blobs("", None, 10).await.unwrap()), ["docs/one.txt"]);
    // Globex cannot read acme's chunks even with acme's blob in hand.
    assert_eq!(b.chunk(&ba, 0).await.unwrap(), None);
    assert_eq!(
        read(&b, &b.get_blob("docs/one.txt").await.unwrap().unwrap()).await,
        b"globex's"
    );
    // Replacing a blob drops the old content; an incomplete upload is refused.
    let again = upload(&a, "docs/one.txt", &[b"v2"], None).await.unwrap();
    assert_eq!(again.version, 2);
    assert_eq!(a.chunk(&ba, 0).await.unwrap(), None, "the old chunks are gone");
    let id = new_blob_id();
    a.stage_chunk(&id, 0, b"part").await.unwrap();
    let partial = Blob {
        blob_id: id,
        ..again.clone()
    };
    assert!(matches!(
        a.commit_blob(&partial, 2, None).await,
        Err(DataError::Invalid(_))
    ));
    assert!(!b.delete_blob("img/x.png").await.unwrap().value, "not globex's");
    assert!(a.delete_blob("img/x.png").await.unwrap().value);
    assert!(a.get_blob("img/x.png").await.unwrap().is_none());

    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    a.put_cache("user:1", &json!({"n": 1}), None, &tags(&["users"]), None)
        .await
        .unwrap();
    a.put_cache("user:2", &json!(2), None, &tags(&["users", "vip"]), None)
        .await
        .unwrap();
    a.put_cache("page:1", &json!("p"), None, &tags(&["vip"]), None)
        .await
        .unwrap();
    a.put_cache("short", &json!(0), Some(1), &[], None).await.unwrap();
    b.put_cache("user:1", &json!("globex"), None, &tags(&["users"]), None)
        .await
        .unwrap();
    let e = a.get_cache("user:2").await.unwrap().unwrap();
    assert_eq!((e.value, e.tags), (json!(2), tags(&["users", "vip"])));
    assert_eq!(b.get_cache("user:2").await.unwrap(), None);
    assert_eq!(
        b.delete_cache(CacheSelector::Tag("vip")).await.unwrap().value,
        0,
        "globex has no vip"
    );
    assert_eq!(a.delete_cache(CacheSelector::Tag("vip")).await.unwrap().value, 2);
    assert!(a.get_cache("page:1").await.unwrap().is_none());
    assert_eq!(a.delete_cache(CacheSelector::Prefix("user:")).await.unwrap().value, 1);
    assert_eq!(b.get_cache("user:1").await.unwrap().unwrap().value, json!("globex"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(a.get_cache("short").await.unwrap(), None, "expired");
    store.remove(&ida).await.unwrap();
    store.remove(&idb).await.unwrap();
}

/// Records, blobs and cache count toward the tenant's storage level; a write past the
/// maximum is refused and writes nothing; shrinking and deleting free bytes.
async fn storage_is_counted_and_limited(store: &DataStore, tier: Isolation) {
    let t = tenant("acme");
    let s = store.scope(t, Some(tier)).await.unwrap();
    let w = s.put_record("c", "1", &json!({"x": "y"}), None).await.unwrap();
    assert_eq!((w.before, w.after), (0, 9), "{{\"x\":\"y\"}} is 9 bytes");
    upload(&s, "f", &[b"12345"], None).await.unwrap();
    let w = s.put_cache("k", &json!(1), None, &[], None).await.unwrap();
    assert_eq!((w.before, w.after), (14, 16), "key and value");
    assert_eq!(s.used().await.unwrap(), 16);
    // Full: growth is refused and nothing is written; shrinking is allowed.
    let refused = s.put_record("c", "2", &json!({}), Some(16)).await;
    assert!(
        matches!(refused, Err(DataError::LevelReached { used: 16, wanted: 2 })),
        "{refused:?}"
    );
    assert!(s.get_record("c", "2").await.unwrap().is_none());
    assert!(matches!(
        upload(&s, "g", &[b"1"], Some(16)).await,
        Err(DataError::LevelReached { .. })
    ));
    assert!(s.get_blob("g").await.unwrap().is_none());
    assert!(matches!(
        s.put_cache("k2", &json!(1), None, &[], Some(16)).await,
        Err(DataError::LevelReached { .. })
    ));
    let w = s.put_record("c", "1", &json!({}), Some(16)).await.unwrap();
    assert_eq!((w.before, w.after), (16, 9));
    assert_eq!(s.delete_blob("f").await.unwrap().after, 4);
    assert_eq!(s.delete_cache(CacheSelector::Key("k")).await.unwrap().after, 2);
    assert_eq!(s.used().await.unwrap(), 2);
    store.remove(&t).await.unwrap();
}

#[tokio::test]
async fn blobs_cache_and_storage_on_sqlite() {
    let store = DataStore::open(sqlite()).await.unwrap();
    for tier in TIERS {
        storage_is_counted_and_limited(&store, tier).await;
    }
    // Both in the shared tables (where only the statements' tenant keeps them apart),
    // then apart.
    blobs_and_cache_never_cross_tenants(&store, Isolation::Row, Isolation::Row).await;
    blobs_and_cache_never_cross_tenants(&store, Isolation::Database, Isolation::Row).await;
}

#[tokio::test]
async fn blobs_cache_and_storage_on_postgresql() {
    if let Some(url) = postgres("blobs, cache and storage").await {
        let store = DataStore::open(pg(&url)).await.unwrap();
        for tier in TIERS {
            storage_is_counted_and_limited(&store, tier).await;
        }
        blobs_and_cache_never_cross_tenants(&store, Isolation::Row, Isolation::Row).await;
        blobs_and_cache_never_cross_tenants(&store, Isolation::Schema, Isolation::Row).await;
    }
}

/// A tenant with records, blobs and cache moves row → database → row while a writer
/// and a reader run: every acknowledged write is there at the end, every read
/// succeeded, the other tenant is untouched, and the old copies are gone.
/// Returns the locations the tenant passed through.
async fn a_tenant_moves_between_tiers_online(opts: DataOptions) -> Vec<String> {
    let store = Arc::new(DataStore::open(opts.clone()).await.unwrap());
    let (t, other) = (tenant("acme"), tenant("globex"));
    let s = store.scope(t, Some(Isolation::Row)).await.unwrap();
    for i in 0..300 {
        s.put_record("seed", &format!("r{i:04}"), &json!({"i": i}), None)
            .await
            .unwrap();
    }
    let blob = upload(&s, "big.bin", &[&[7u8; 300_000], &[9u8; 1000]], None)
        .await
        .unwrap();
    s.put_cache("k", &json!("v"), None, &[], None).await.unwrap();
    let used = s.used().await.unwrap();
    drop(s);
    store
        .scope(other, Some(Isolation::Row))
        .await
        .unwrap()
        .put_record("seed", "g", &json!({"g": 1}), None)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = store.scope(t, None).await.unwrap();
                s.put_record("live", &format!("w{n:06}"), &json!({"n": n}), None)
                    .await
                    .unwrap();
                n += 1;
                written.store(n, Ordering::Relaxed);
            }
            n
        })
    };
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = store.scope(t, None).await.unwrap();
                let r = s.get_record("seed", "r0123").await.unwrap();
                assert_eq!(r.map(|r| r.doc), Some(json!({"i": 123})), "a read during the move");
                reads += 1;
            }
            reads
        })
    };
    let row_location = store.placement(&t).await.unwrap().unwrap().location;
    let mut visited = vec![row_location.clone()];
    for (to, tier_name) in [(Isolation::Database, "database"), (Isolation::Row, "row")] {
        let before = written.load(Ordering::Relaxed);
        let p = store.move_tenant(t, to).await.unwrap();
        visited.push(p.location.clone());
        assert_eq!((p.tier, p.state.as_str()), (to, "placed"), "moved to {tier_name}");
        let done = store.placement(&t).await.unwrap().unwrap();
        let progress = done.progress.unwrap();
        assert_eq!(progress["phase"], "done", "{progress}");
        assert_eq!(progress["verified"]["blob_chunks"]["rows"], 2, "{progress}");
        assert!(progress["rows_copied"].as_u64().unwrap() >= 304, "{progress}");
        assert!(written.load(Ordering::Relaxed) > before, "writes went on");
    }
    stop.store(true, Ordering::Relaxed);
    let n = writer.await.unwrap();
    assert!(reader.await.unwrap() > 0);
    let p = store.placement(&t).await.unwrap().unwrap();
    assert_eq!(p.location, row_location, "back in the shared tables");

    let s = store.scope(t, None).await.unwrap();
    let mut live = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_records("live", after.as_deref(), 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.id.clone());
        live.extend(page.into_iter().map(|r| r.doc["n"].as_u64().unwrap()));
    }
    assert_eq!(live, (0..n).collect::<Vec<_>>(), "every acknowledged write, once");
    assert_eq!(s.list_records("seed", None, 1000).await.unwrap().len(), 300);
    let b = s.get_blob("big.bin").await.unwrap().unwrap();
    assert_eq!((b.version, b.size_bytes), (blob.version, 301_000));
    let content = read(&s, &b).await;
    assert!(content[..300_000].iter().all(|x| *x == 7) && content[300_000..].iter().all(|x| *x == 9));
    assert_eq!(s.get_cache("k").await.unwrap().unwrap().value, json!("v"));
    let live_bytes: u64 = (0..n).map(|i| json!({"n": i}).to_string().len() as u64).sum();
    assert_eq!(
        s.used().await.unwrap(),
        used + live_bytes,
        "the storage level moved along"
    );
    let g = store
        .scope(other, None)
        .await
        .unwrap()
        .get_record("seed", "g")
        .await
        .unwrap();
    assert_eq!(g.map(|r| r.doc), Some(json!({"g": 1})), "the other tenant is untouched");
    store.remove(&t).await.unwrap();
    store.remove(&other).await.unwrap();
    visited
}

#[tokio::test]
async fn a_tenant_moves_between_tiers_online_on_sqlite() {
    let opts = sqlite();
    let file = std::path::PathBuf::from(opts.url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .join("tenants/acme.db");
    a_tenant_moves_between_tiers_online(opts).await;
    assert!(
        !file.exists(),
        "the database tier's file is dropped after the move back"
    );
}

#[tokio::test]
async fn a_tenant_moves_between_tiers_online_on_postgresql() {
    if let Some(url) = postgres("tier moves").await {
        let visited = a_tenant_moves_between_tiers_online(pg(&url)).await;
        let db = visited[1].rsplit_once('/').unwrap().1.to_string();
        assert!(db.starts_with("td_") && db.ends_with("_acme"), "{visited:?}");
        let mut c = owner(&pg(&url)).await;
        let dbs: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pg_database WHERE datname = $1")
            .bind(&db)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get("n");
        assert_eq!(dbs, 0, "the tenant's database is dropped after the move back");
    }
}

/// `migrate_all` creates what a placement names but a crash left missing, and a second
/// run has nothing left to do.
async fn migrations_resume(opts: DataOptions) {
    let store = DataStore::open(opts.clone()).await.unwrap();
    for i in 0..6 {
        let tier = if i % 2 == 0 {
            Isolation::Schema
        } else {
            Isolation::Database
        };
        store.place(&tenant(&format!("t{i}")), tier).await.unwrap();
    }
    let location = if opts.url.starts_with("sqlite") {
        "file:tenants/ghost.db"
    } else {
        "schema:tenant_ghost"
    };
    let mut c = owner(&opts).await;
    sqlx::query(&format!(
        "INSERT INTO {} (tenant_id, tier, location, state, updated_at) VALUES ('ghost', 'schema', $1, 'placed', 0)",
        placements(&opts)
    ))
    .bind(location)
    .execute(&mut c)
    .await
    .unwrap();
    let calls = std::sync::Mutex::new(Vec::new());
    let r = store
        .migrate_all(3, |done, total, name, res| {
            assert!(res.is_ok(), "{name}: {res:?}");
            calls.lock().unwrap().push((done, total));
        })
        .await
        .unwrap();
    assert!(r.failed.is_empty());
    assert_eq!(
        r.applied,
        2 * tenantd_data::migrations(),
        "the shared location's (when the store opened) and the ghost's, which was missing"
    );
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.last(), Some(&(r.locations, r.locations)));
    assert_eq!(calls.len(), r.locations);
    let again = store.migrate_all(3, |_, _, _, _| {}).await.unwrap();
    assert_eq!((again.applied, again.failed.len()), (0, 0));
    // A location one migration behind (as after an upgrade) gets just that one.
    let (migrations, schema) = if opts.url.starts_with("sqlite") {
        ("data_migrations", "")
    } else {
        ("tenant_data.data_migrations", "tenant_data.")
    };
    let newest = tenantd_data::migrations() as i64;
    sqlx::query(&format!("DELETE FROM {migrations} WHERE version = $1"))
        .bind(newest)
        .execute(&mut c)
        .await
        .unwrap();
    // Undo the newest migration (3: the key version columns).
    for table in ["records", "blob_chunks", "cache_entries"] {
        sqlx::query(&format!("ALTER TABLE {schema}{table} DROP COLUMN key_version"))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let upgrade = store.migrate_all(3, |_, _, _, _| {}).await.unwrap();
    assert_eq!((upgrade.applied, upgrade.failed.len()), (1, 0));
    let ghost = store.scope(tenant("ghost"), None).await.unwrap();
    ghost.put_record("c", "1", &json!({}), None).await.unwrap();
    for i in 0..6 {
        store.remove(&tenant(&format!("t{i}"))).await.unwrap();
    }
    store.remove(&tenant("ghost")).await.unwrap();
}

on_both!(migrations_resume);

/// A move a crash interrupted (the tenant frozen where it was) shows as unsettled after a
/// restart, and is undone: the tenant is thawed there, and the caller is told to start the
/// move again.
async fn an_interrupted_move_is_recovered(opts: DataOptions) {
    let store = DataStore::open(opts.clone()).await.unwrap();
    let t = tenant("acme");
    let s = store.scope(t, Some(Isolation::Row)).await.unwrap();
    s.put_record("c", "1", &json!({"n": 1}), None).await.unwrap();
    drop(s);
    let mut c = owner(&opts).await;
    let storage = if opts.url.starts_with("sqlite") {
        "storage"
    } else {
        "tenant_data.storage"
    };
    sqlx::query(&format!("UPDATE {storage} SET frozen = 1 WHERE tenant_id = 'acme'"))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE {} SET state = 'moving', target = 'somewhere:else' WHERE tenant_id = 'acme'",
        placements(&opts)
    ))
    .execute(&mut c)
    .await
    .unwrap();
    drop(store);
    let store = DataStore::open(opts).await.unwrap();
    assert_eq!(store.unsettled().await.unwrap(), vec![t]);
    assert!(store.recover(&t).await.unwrap(), "a move was undone");
    let p = store.placement(&t).await.unwrap().unwrap();
    assert_eq!((p.tier, p.state.as_str()), (Isolation::Row, "placed"));
    assert_eq!(p.progress.unwrap()["phase"], "interrupted");
    let s = store.scope(t, None).await.unwrap();
    s.put_record("c", "2", &json!({"n": 2}), None).await.expect("thawed");
    assert_eq!(s.list_records("c", None, 10).await.unwrap().len(), 2);
    assert!(store.unsettled().await.unwrap().is_empty());
    assert!(!store.recover(&t).await.unwrap(), "nothing left to undo");
}

on_both!(an_interrupted_move_is_recovered);

/// `database`-tier tenants spread over the configured servers, each new one to the
/// server holding the fewest. (Two names for this machine's one server stand for two.)
#[tokio::test]
async fn tenant_databases_spread_over_the_data_servers() {
    let Some(url) = postgres("data servers").await else {
        return;
    };
    let other = url.replacen("127.0.0.1", "localhost", 1);
    if other == url {
        assert!(
            !tenantd_store::testing::required(),
            "tenant_databases_spread_over_the_data_servers needs a TENANTD_TEST_DATABASE_URL naming 127.0.0.1 (CI=true)"
        );
        eprintln!("skipped tenant_databases_spread_over_the_data_servers: the test URL does not name 127.0.0.1");
        return;
    }
    let server = |u: &str| format!("{}/postgres", u.rsplit_once('/').unwrap().0);
    let opts = DataOptions {
        servers: vec![server(&url), server(&other)],
        ..pg(&url)
    };
    let store = DataStore::open(opts).await.unwrap();
    let mut hosts = Vec::new();
    for i in 0..4 {
        let t = tenant(&format!("big{i}"));
        let p = store.place(&t, Isolation::Database).await.unwrap();
        hosts.push(p.location.split('/').next().unwrap().to_string());
        let s = store.scope(t, None).await.unwrap();
        s.put_record("c", "1", &json!({"i": i}), None).await.unwrap();
        assert_eq!(s.get_record("c", "1").await.unwrap().unwrap().doc, json!({"i": i}));
    }
    assert_eq!(hosts.iter().filter(|h| h.contains("127.0.0.1")).count(), 2, "{hosts:?}");
    assert_eq!(hosts.iter().filter(|h| h.contains("localhost")).count(), 2, "{hosts:?}");
    for i in 0..4 {
        store.remove(&tenant(&format!("big{i}"))).await.unwrap();
    }
}

/// Many writers of one tenant at once, some replacing the same keys: the storage level
/// is exact, and a hard maximum is never passed.
async fn concurrent_writes_keep_the_level_exact(opts: DataOptions) {
    let store = Arc::new(DataStore::open(opts).await.unwrap());
    let t = tenant("acme");
    store.place(&t, Isolation::Row).await.unwrap();
    // Each new record is 11 bytes, the shared cache entry 7 ("shared" and one digit);
    // 8 writers × 20 new records, with room for exactly 100 of them.
    let doc = |n: usize| json!({"n": format!("{n:03}")});
    assert_eq!(doc(1).to_string().len(), 11);
    let max = Some(1_107);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..20 {
                let s = store.scope(t, None).await.unwrap();
                match s.put_record("c", &format!("w{w}_{i}"), &doc(i), max).await {
                    Ok(_) => ok += 1,
                    Err(DataError::LevelReached { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                // Every writer also rewrites one shared key, at the same size.
                s.put_cache("shared", &json!(w), None, &[], None).await.unwrap();
            }
            ok
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    assert_eq!(written, 100, "exactly as many as fit");
    let s = store.scope(t, None).await.unwrap();
    assert_eq!(s.list_records("c", None, 1000).await.unwrap().len(), 100);
    assert_eq!(s.used().await.unwrap(), 1_107);
}

on_both!(concurrent_writes_keep_the_level_exact);

/// While a switched move waits to drop the old copy, no other move may start: the drop
/// must never touch a place the tenant has just moved back to.
async fn no_move_starts_while_the_old_copy_waits_to_be_dropped(opts: DataOptions) {
    let opts = DataOptions {
        move_grace: Duration::from_millis(600),
        ..opts
    };
    let store = Arc::new(DataStore::open(opts).await.unwrap());
    let t = tenant("acme");
    let s = store.scope(t, Some(Isolation::Row)).await.unwrap();
    s.put_record("c", "1", &json!({"n": 1}), None).await.unwrap();
    drop(s);
    let mover = {
        let store = store.clone();
        tokio::spawn(async move { store.move_tenant(t, Isolation::Database).await })
    };
    let mut state = String::new();
    for _ in 0..200 {
        state = store.placement(&t).await.unwrap().unwrap().state;
        if state == "dropping" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state, "dropping");
    let second = store.move_tenant(t, Isolation::Row).await;
    assert!(
        matches!(&second, Err(DataError::Invalid(m)) if m.contains("under way")),
        "{second:?}"
    );
    let p = mover.await.unwrap().unwrap();
    assert_eq!((p.tier, p.state.as_str()), (Isolation::Database, "placed"));
    let back = store.move_tenant(t, Isolation::Row).await.unwrap();
    assert_eq!(back.tier, Isolation::Row);
    let s = store.scope(t, None).await.unwrap();
    assert_eq!(s.get_record("c", "1").await.unwrap().unwrap().doc, json!({"n": 1}));
    s.put_record("c", "2", &json!({"n": 2}), None)
        .await
        .expect("not frozen");
    store.remove(&t).await.unwrap();
}

on_both!(no_move_starts_while_the_old_copy_waits_to_be_dropped);

/// Chunks of an upload that never committed are removed once old enough; a committed
/// blob's chunks, however old, stay.
async fn abandoned_uploads_are_swept(opts: DataOptions) {
    let store = DataStore::open(opts.clone()).await.unwrap();
    let t = tenant("acme");
    let s = store.scope(t, Some(Isolation::Row)).await.unwrap();
    let kept = upload(&s, "kept", &[b"one", b"two"], None).await.unwrap();
    let abandoned = new_blob_id();
    s.stage_chunk(&abandoned, 0, b"never committed").await.unwrap();
    let fresh = new_blob_id();
    s.stage_chunk(&fresh, 0, b"still uploading").await.unwrap();
    // Another tenant's abandoned upload, in the same tables: only its own sweep takes it.
    let other = store.scope(tenant("globex"), Some(Isolation::Row)).await.unwrap();
    let theirs = new_blob_id();
    other.stage_chunk(&theirs, 0, b"globex's").await.unwrap();
    let mut c = owner(&opts).await;
    let chunks = if opts.url.starts_with("sqlite") {
        "blob_chunks"
    } else {
        "tenant_data.blob_chunks"
    };
    sqlx::query(&format!("UPDATE {chunks} SET created_at = 0 WHERE blob_id <> $1"))
        .bind(&fresh)
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(s.sweep_abandoned_uploads(Duration::from_secs(3600)).await.unwrap(), 1);
    assert_eq!(
        other.chunk(&blob_at(&theirs), 0).await.unwrap().as_deref(),
        Some(&b"globex's"[..]),
        "another tenant's upload is not swept by acme's"
    );
    assert_eq!(
        other.sweep_abandoned_uploads(Duration::from_secs(3600)).await.unwrap(),
        1
    );
    assert_eq!(read(&s, &kept).await, b"onetwo", "a committed blob's old chunks stay");
    let b = Blob {
        path: "late".into(),
        size_bytes: 15,
        ..blob_at(&fresh)
    };
    s.commit_blob(&b, 1, None).await.expect("a recent upload is left alone");
    let gone = Blob {
        blob_id: abandoned,
        ..b
    };
    assert!(matches!(
        s.commit_blob(&gone, 1, None).await,
        Err(DataError::Invalid(_))
    ));
}

on_both!(abandoned_uploads_are_swept);

/// Connections the server closed while they sat in the pool (a restart, an idle timeout,
/// `pg_terminate_backend`) cost no request: a transaction that meets one fails at its
/// `BEGIN`, where nothing has run, and begins again on a connection that works. Reads,
/// writes and upload chunks (staged outside the scope's retries) alike.
#[tokio::test]
async fn connections_the_server_closed_cost_no_request() {
    let Some(url) = postgres("closed connections").await else {
        return;
    };
    let opts = pg(&url);
    let store = DataStore::open(opts.clone()).await.unwrap();
    let mut owner = owner(&opts).await;
    let home: String = sqlx::query_scalar("SELECT CAST(current_database() AS text)")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    for (id, tier) in [("acme", Isolation::Row), ("globex", Isolation::Database)] {
        let p = store.place(&tenant(id), tier).await.unwrap();
        let db = match p.location.rsplit_once('/') {
            Some((_, db)) => db.to_string(),
            None => home.clone(),
        };
        let s = store.scope(tenant(id), None).await.unwrap();
        s.put_record("c", "1", &json!({"n": 1}), None).await.unwrap();
        let reads = || futures_util::future::join_all((0..16).map(|_| s.get_record("c", "1")));
        let chunks = || futures_util::future::join_all((0..16).map(|_| s.stage_chunk("upload", 0, b"x")));
        // Every connection of the pool is opened, then closed by the server.
        for r in reads().await {
            assert!(r.unwrap().is_some());
        }
        close_sessions(&mut owner, &db, tier).await;
        for r in reads().await {
            assert_eq!(r.unwrap().unwrap().doc, json!({"n": 1}), "{tier:?}");
        }
        let w = s.put_record("c", "2", &json!({"n": 2}), None).await.unwrap();
        assert_eq!(w.value.version, 1, "{tier:?}");
        for r in reads().await {
            r.unwrap();
        }
        close_sessions(&mut owner, &db, tier).await;
        for r in chunks().await {
            r.unwrap();
        }
        s.discard_chunks("upload").await.unwrap();
    }
}

/// Closes the app role's sessions on database `db` (at least 2), as the server does on a
/// restart, and waits until they are gone.
async fn close_sessions(owner: &mut sqlx::AnyConnection, db: &str, tier: Isolation) {
    let sessions = "FROM pg_stat_activity WHERE usename = CAST($1 AS name) AND datname = CAST($2 AS name)";
    let closed: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) {sessions}) AS t"
    ))
    .bind(APP_ROLE)
    .bind(db)
    .fetch_one(&mut *owner)
    .await
    .unwrap();
    assert!(closed >= 2, "{tier:?}: only {closed} pooled connections were open");
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) {sessions}"))
            .bind(APP_ROLE)
            .bind(db)
            .fetch_one(&mut *owner)
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{tier:?}: the closed sessions were still there after 2 s");
}
