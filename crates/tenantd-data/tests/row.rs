//! The row tier on SQLite and PostgreSQL: scoped records never cross tenants, and on
//! PostgreSQL the database itself refuses a query that forgets the tenant.
use serde_json::json;
use sqlx::{Connection, Row};
use tenantd_core::TenantId;
use tenantd_data::{with_user, DataError, RowStore, APP_ROLE};

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

async fn postgres(test: &str) -> Option<String> {
    tenantd_store::testing::fresh_postgres(test).await
}

async fn scoped_records_never_cross_tenants(store: &RowStore) {
    let (a, b) = (store.scope(tenant("acme")), store.scope(tenant("globex")));
    let r = a.put("orders", "o1", &json!({"total": 5})).await.unwrap();
    assert_eq!((r.version, &r.doc), (1, &json!({"total": 5})));
    let r = a
        .put("orders", "o1", &json!({"total": 6, "items": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(r.version, 2, "a write raises the version");
    assert!(r.created_at <= r.updated_at);
    a.put("orders", "o2", &json!({"total": 1})).await.unwrap();
    // The same collection and id for another tenant is another record.
    b.put("orders", "o1", &json!({"total": 99})).await.unwrap();
    let doc = |r: Option<tenantd_data::Record>| r.map(|r| r.doc);
    assert_eq!(
        doc(a.get("orders", "o1").await.unwrap()),
        Some(json!({"total": 6, "items": [1, 2]}))
    );
    assert_eq!(doc(b.get("orders", "o1").await.unwrap()), Some(json!({"total": 99})));
    assert_eq!(b.get("orders", "o2").await.unwrap(), None, "acme's o2 is not globex's");
    let ids = |v: Vec<tenantd_data::Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(a.list("orders", None, 100).await.unwrap()), ["o1", "o2"]);
    assert_eq!(ids(b.list("orders", None, 100).await.unwrap()), ["o1"]);
    assert_eq!(ids(a.list("orders", None, 1).await.unwrap()), ["o1"]);
    assert_eq!(ids(a.list("orders", Some("o1"), 10).await.unwrap()), ["o2"]);
    assert!(a.list("other", None, 10).await.unwrap().is_empty());
    // A conditional update: only at the expected version, and only the tenant's own.
    let v2 = a
        .update("orders", "o2", &json!({"total": 2}), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v2.version, &v2.doc), (2, &json!({"total": 2})));
    assert_eq!(
        a.update("orders", "o2", &json!({"total": 3}), 1).await.unwrap(),
        None,
        "stale"
    );
    assert_eq!(
        b.update("orders", "o2", &json!({"total": 3}), 2).await.unwrap(),
        None,
        "not globex's"
    );
    assert_eq!(doc(a.get("orders", "o2").await.unwrap()), Some(json!({"total": 2})));
    // Deleting another tenant's record deletes nothing.
    assert!(!b.delete("orders", "o2").await.unwrap());
    assert!(a.get("orders", "o2").await.unwrap().is_some());
    assert!(a.delete("orders", "o2").await.unwrap());
    assert!(!a.delete("orders", "o2").await.unwrap());
    assert_eq!(doc(b.get("orders", "o1").await.unwrap()), Some(json!({"total": 99})));
    for (c, id) in [("", "x"), ("a b", "x"), ("orders", "../x")] {
        assert!(
            matches!(a.put(c, id, &json!({})).await, Err(DataError::Invalid(_))),
            "{c}/{id}"
        );
    }
}

#[tokio::test]
async fn scoped_records_on_sqlite() {
    let (_, dir) = tenantd_store::testing::fresh_sqlite();
    let url = format!("sqlite://{}", dir.join("data.db").display());
    scoped_records_never_cross_tenants(&RowStore::open(&url, None).await.unwrap()).await;
}

#[tokio::test]
async fn scoped_records_on_postgresql() {
    if let Some(url) = postgres("row tier records").await {
        scoped_records_never_cross_tenants(&RowStore::open(&url, None).await.unwrap()).await;
    }
}

/// Connected straight to PostgreSQL as the data plane's role: without a tenant a query
/// sees nothing; with acme's it sees only acme's rows and can change no one else's.
#[tokio::test]
async fn row_level_security_is_the_backstop() {
    let Some(url) = postgres("row tier backstop").await else {
        return;
    };
    let store = RowStore::open(&url, None).await.unwrap();
    store
        .scope(tenant("acme"))
        .put("c", "1", &json!({"n": 1}))
        .await
        .unwrap();
    store
        .scope(tenant("acme"))
        .put("c", "2", &json!({"n": 2}))
        .await
        .unwrap();
    store
        .scope(tenant("globex"))
        .put("c", "1", &json!({"n": 3}))
        .await
        .unwrap();

    let mut conn = sqlx::AnyConnection::connect(&with_user(&url, APP_ROLE).unwrap())
        .await
        .unwrap();
    let count = "SELECT COUNT(*) AS n FROM tenant_data.records";
    let n: i64 = sqlx::query(count).fetch_one(&mut conn).await.unwrap().get("n");
    assert_eq!(n, 0, "a query without a tenant sees no rows");

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenantd.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: Vec<String> = sqlx::query("SELECT tenant_id FROM tenant_data.records")
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("tenant_id"))
        .collect();
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
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenantd.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
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
        assert!(sqlx::query(sql).execute(&mut conn).await.is_err(), "{sql}");
    }
    sqlx::raw_sql("SET row_security = off")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(
        sqlx::query(count).fetch_one(&mut conn).await.is_err(),
        "with row security off a query is refused, not answered"
    );

    // Globex's row is untouched.
    let g = store.scope(tenant("globex")).get("c", "1").await.unwrap().unwrap();
    assert_eq!((g.version, g.doc), (1, json!({"n": 3})));
}

/// A role that could read across tenants is refused before anything is served.
#[tokio::test]
async fn a_role_that_could_bypass_the_backstop_is_refused() {
    let Some(url) = postgres("row tier unsafe role").await else {
        return;
    };
    // The test database's own user owns the tables (and is a superuser here).
    let err = RowStore::open(&url, Some(&url)).await.err().expect("refused");
    assert!(matches!(err, DataError::Unsafe(_)));
    assert!(err.to_string().contains(APP_ROLE), "{err}");
}
