//! Configuration schemas, layers and flags in the catalog, on both backends: every write
//! is a version, a stale expected version is refused, layers are kept apart by owner, a
//! purge takes the tenant's layer and a plan's deletion its layer, and a schema a layer
//! still uses cannot be deleted.
use serde_json::json;
use tenantd_core::flags::FlagSpec;
use tenantd_core::{PlanId, TenantId};
use tenantd_store::prelude::*;
use tenantd_store::{ConfigOwner, PageRequest, SqlCatalog, StoreError};

tenantd_store::both_catalogs! {
    case_versions_and_expectations => sqlite_versions_and_expectations, postgres_versions_and_expectations;
    case_layers_are_kept_apart => sqlite_layers_are_kept_apart, postgres_layers_are_kept_apart;
    case_flags_are_versioned => sqlite_flags_are_versioned, postgres_flags_are_versioned;
}

fn tenant(s: &str) -> ConfigOwner {
    ConfigOwner::Tenant(TenantId::parse(s).unwrap())
}

fn plan(s: &str) -> ConfigOwner {
    ConfigOwner::Plan(PlanId::parse(s).unwrap())
}

async fn schema(c: &SqlCatalog, key: &str) {
    let mut w = c.begin().await.unwrap();
    c.put_schema(&mut w, key, &json!({"type": "integer"}), Some(&json!(1)), None)
        .await
        .unwrap();
    w.commit().await.unwrap();
}

async fn put(
    c: &SqlCatalog,
    owner: &ConfigOwner,
    key: &str,
    v: Option<serde_json::Value>,
    expected: Option<i64>,
) -> Result<i64, StoreError> {
    let mut w = c.begin().await?;
    let e = c
        .put_config(&mut w, owner, key, v.as_ref(), expected, "operator")
        .await?;
    w.commit().await?;
    Ok(e.version)
}

async fn case_versions_and_expectations(c: &SqlCatalog) {
    schema(c, "seats").await;
    let acme = tenant("acme");
    assert_eq!(put(c, &acme, "seats", Some(json!(5)), Some(0)).await.unwrap(), 1);
    assert_eq!(put(c, &acme, "seats", Some(json!(6)), None).await.unwrap(), 2);
    let stale = put(c, &acme, "seats", Some(json!(7)), Some(1)).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(ref m)) if m.contains("version 2")),
        "{stale:?}"
    );
    assert_eq!(
        put(c, &acme, "seats", None, Some(2)).await.unwrap(),
        3,
        "a removal is a version"
    );
    assert!(
        c.config_layer(&acme).await.unwrap().is_empty(),
        "the removed value is not current"
    );
    let latest = c.config_entry(&acme, "seats", None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.value), (3, None));
    let v1 = c.config_entry(&acme, "seats", Some(1)).await.unwrap().unwrap();
    assert_eq!(v1.value, Some(json!(5)));
    let page = PageRequest {
        limit: 2,
        ..Default::default()
    };
    let first = c.config_versions(&acme, "seats", &page).await.unwrap();
    assert_eq!(first.items.iter().map(|e| e.version).collect::<Vec<_>>(), [3, 2]);
    let rest = c
        .config_versions(
            &acme,
            "seats",
            &PageRequest {
                after: first.next_cursor,
                ..page
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|e| e.version).collect::<Vec<_>>(), [1]);
    // The schema's own versions.
    let mut w = c.begin().await.unwrap();
    let stale = c.put_schema(&mut w, "seats", &json!({}), None, Some(0)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    drop(w);
    let mut w = c.begin().await.unwrap();
    let s = c.put_schema(&mut w, "seats", &json!({}), None, Some(1)).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!((s.version, s.default), (2, None));
}

async fn case_layers_are_kept_apart(c: &SqlCatalog) {
    schema(c, "seats").await;
    put(c, &tenant("acme"), "seats", Some(json!(5)), None).await.unwrap();
    put(c, &tenant("beta"), "seats", Some(json!(9)), None).await.unwrap();
    put(c, &plan("free"), "seats", Some(json!(2)), None).await.unwrap();
    let acme = c.config_layer(&tenant("acme")).await.unwrap();
    assert_eq!(
        acme.iter().map(|e| e.value.clone()).collect::<Vec<_>>(),
        [Some(json!(5))]
    );
    let plans = c.plan_layers().await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(
        (plans[0].0.as_str(), plans[0].1.value.clone()),
        ("free", Some(json!(2)))
    );
    // A schema a layer still uses stays.
    let mut w = c.begin().await.unwrap();
    let held = c.delete_schema(&mut w, "seats").await;
    assert!(
        matches!(held, Err(StoreError::Conflict(ref m)) if m.contains("3 layer")),
        "{held:?}"
    );
    drop(w);
    // A deleted plan's layer goes with it.
    let mut w = c.begin().await.unwrap();
    let p = tenantd_core::Plan {
        id: PlanId::parse("gone").unwrap(),
        ..c.get_plan(&PlanId::parse("free").unwrap()).await.unwrap()
    };
    c.create_plan(&mut w, &p).await.unwrap();
    w.commit().await.unwrap();
    put(c, &plan("gone"), "seats", Some(json!(3)), None).await.unwrap();
    let mut w = c.begin().await.unwrap();
    c.delete_plan(&mut w, &p.id).await.unwrap();
    w.commit().await.unwrap();
    assert!(c.config_entry(&plan("gone"), "seats", None).await.unwrap().is_none());
    for owner in [tenant("acme"), tenant("beta"), plan("free")] {
        put(c, &owner, "seats", None, None).await.unwrap();
    }
    let mut w = c.begin().await.unwrap();
    c.delete_schema(&mut w, "seats").await.unwrap();
    w.commit().await.unwrap();
    assert!(c.get_schema("seats").await.unwrap().is_none());
}

async fn case_flags_are_versioned(c: &SqlCatalog) {
    let spec: FlagSpec = serde_json::from_value(json!({"type":"boolean","default":false})).unwrap();
    let mut w = c.begin().await.unwrap();
    assert_eq!(c.put_flag(&mut w, "beta", &spec, Some(0)).await.unwrap().version, 1);
    w.commit().await.unwrap();
    let mut w = c.begin().await.unwrap();
    let stale = c.put_flag(&mut w, "beta", &spec, Some(0)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    drop(w);
    let mut w = c.begin().await.unwrap();
    let on = FlagSpec {
        default: json!(true),
        ..spec
    };
    assert_eq!(c.put_flag(&mut w, "beta", &on, None).await.unwrap().version, 2);
    w.commit().await.unwrap();
    let stored = c.get_flag("beta").await.unwrap().unwrap();
    assert_eq!((stored.spec.default.clone(), stored.version), (json!(true), 2));
    assert_eq!(c.list_flags().await.unwrap().len(), 1);
    let mut w = c.begin().await.unwrap();
    c.delete_flag(&mut w, "beta").await.unwrap();
    w.commit().await.unwrap();
    assert!(c.get_flag("beta").await.unwrap().is_none());
    let mut w = c.begin().await.unwrap();
    assert!(matches!(
        c.delete_flag(&mut w, "beta").await,
        Err(StoreError::NotFound(_))
    ));
}
