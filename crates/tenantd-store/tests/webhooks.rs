//! Webhook endpoints, their delivery log and the dispatch cursors in the catalog, on both
//! backends: each owner sees only its own endpoints, a rotation keeps the old secret for
//! its overlap only, failures start and end a streak, a disable happens once, and a
//! cursor held by one unit of work is not handed to another.
use tenantd_core::{now_secs, TenantId};
use tenantd_store::prelude::*;
use tenantd_store::{Delivery, PageRequest, SqlCatalog, StoreError, Webhook};

tenantd_store::both_catalogs! {
    case_owners_see_only_their_endpoints => sqlite_owners_see_only_their_endpoints, postgres_owners_see_only_their_endpoints;
    case_rotation_failures_and_disabling => sqlite_rotation_failures_and_disabling, postgres_rotation_failures_and_disabling;
    case_a_held_cursor_is_not_handed_out_twice => sqlite_a_held_cursor_is_not_handed_out_twice, postgres_a_held_cursor_is_not_handed_out_twice;
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn hook(id: &str, tenant: Option<&str>) -> Webhook {
    Webhook::new(
        id.into(),
        tenant.map(str::to_string),
        format!("https://hooks.example.com/{id}"),
        vec!["tenant.*".into()],
        format!("whsec_{id}"),
    )
}

async fn create(c: &SqlCatalog, h: &Webhook) {
    let mut w = c.begin().await.unwrap();
    c.create_webhook(&mut w, h).await.unwrap();
    w.commit().await.unwrap();
}

fn attempt(at: i64, status: u16) -> Delivery {
    Delivery {
        row: 0,
        event_id: "evt_1".into(),
        event_type: "tenant.updated".into(),
        attempt: 1,
        at,
        status_code: Some(status),
        duration_ms: 3,
        error: (status >= 300).then(|| format!("the endpoint answered {status}")),
        next_attempt_at: None,
    }
}

async fn case_owners_see_only_their_endpoints(c: &SqlCatalog) {
    let (a, b) = (tid("acme"), tid("beta"));
    create(c, &hook("wh_a", Some("acme"))).await;
    create(c, &hook("wh_b", Some("beta"))).await;
    create(c, &hook("wh_op", None)).await;
    let page = PageRequest::default();
    let ids = |p: tenantd_store::Page<Webhook>| p.items.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(c.list_webhooks(Some(&a), &page).await.unwrap()), ["wh_a"]);
    assert_eq!(ids(c.list_webhooks(None, &page).await.unwrap()), ["wh_op"]);
    assert!(matches!(
        c.get_webhook(Some(&b), "wh_a").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        c.get_webhook(None, "wh_a").await,
        Err(StoreError::NotFound(_))
    ));
    let got = c.get_webhook(Some(&a), "wh_a").await.unwrap();
    assert_eq!(got.secrets.current, "whsec_wh_a");
    assert!(!format!("{got:?}").contains("whsec_"), "a secret in Debug: {got:?}");
    // A tenant's events go to its endpoints and the operator's; the platform's only to the operator's.
    let to = |v: Vec<Webhook>| v.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(to(c.webhooks_for(Some(&a)).await.unwrap()), ["wh_a", "wh_op"]);
    assert_eq!(to(c.webhooks_for(None).await.unwrap()), ["wh_op"]);
    // Another owner cannot delete it; its owner can, with its log.
    let mut w = c.begin().await.unwrap();
    assert!(matches!(
        c.delete_webhook(&mut w, Some(&b), "wh_a").await,
        Err(StoreError::NotFound(_))
    ));
    drop(w);
    let mut w = c.begin().await.unwrap();
    c.record_delivery(&mut w, &got, &attempt(now_secs(), 200))
        .await
        .unwrap();
    c.delete_webhook(&mut w, Some(&a), "wh_a").await.unwrap();
    w.commit().await.unwrap();
    assert!(c.list_deliveries("wh_a", &page).await.unwrap().items.is_empty());
    assert!(c.webhook_by_id("wh_a").await.unwrap().is_none());
}

async fn case_rotation_failures_and_disabling(c: &SqlCatalog) {
    let a = tid("acme");
    create(c, &hook("wh_a", Some("acme"))).await;
    let now = now_secs();
    let mut w = c.begin().await.unwrap();
    let rotated = c
        .rotate_webhook_secret(&mut w, Some(&a), "wh_a", "whsec_new", now + 86_400)
        .await
        .unwrap();
    w.commit().await.unwrap();
    assert_eq!(rotated.secrets.signing(now), ["whsec_new", "whsec_wh_a"]);
    assert_eq!(
        rotated.secrets.signing(now + 86_400),
        ["whsec_new"],
        "the old secret ends with its overlap"
    );
    assert_eq!(rotated.previous_secret_until, Some(now + 86_400));

    // A failure starts a streak, a later one keeps its start, a success ends it.
    for (at, status, since) in [
        (now, 500, Some(now)),
        (now + 60, 503, Some(now)),
        (now + 120, 200, None),
    ] {
        let mut w = c.begin().await.unwrap();
        c.record_delivery(&mut w, &rotated, &attempt(at, status)).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(
            c.webhook_by_id("wh_a").await.unwrap().unwrap().failing_since,
            since,
            "after {status}"
        );
    }
    let log = c
        .list_deliveries("wh_a", &PageRequest { limit: 2, after: None })
        .await
        .unwrap();
    assert_eq!(
        log.items.iter().map(|d| d.status_code).collect::<Vec<_>>(),
        [Some(200), Some(503)]
    );
    let rest = c
        .list_deliveries(
            "wh_a",
            &PageRequest {
                limit: 2,
                after: log.next_cursor,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|d| d.status_code).collect::<Vec<_>>(),
        [Some(500)]
    );
    assert_eq!(c.prune_deliveries(now + 61).await.unwrap(), 2);

    // Disabled once; re-enabling clears the reason.
    let mut w = c.begin().await.unwrap();
    assert!(c
        .disable_webhook(&mut w, "wh_a", "the endpoint answered 410 Gone")
        .await
        .unwrap());
    assert!(!c.disable_webhook(&mut w, "wh_a", "again").await.unwrap());
    w.commit().await.unwrap();
    let off = c.get_webhook(Some(&a), "wh_a").await.unwrap();
    assert!(!off.enabled && off.disabled_reason.as_deref() == Some("the endpoint answered 410 Gone"));
    assert!(
        c.webhooks_for(Some(&a)).await.unwrap().is_empty(),
        "a disabled endpoint gets nothing"
    );
    let mut on = off.clone();
    on.enabled = true;
    let mut w = c.begin().await.unwrap();
    c.update_webhook(&mut w, &on).await.unwrap();
    w.commit().await.unwrap();
    let on = c.get_webhook(Some(&a), "wh_a").await.unwrap();
    assert!(on.enabled && on.disabled_reason.is_none());
}

async fn case_a_held_cursor_is_not_handed_out_twice(c: &SqlCatalog) {
    let a = tid("acme");
    c.record_event(&tenantd_store::NewEvent::new(
        Some(&a),
        "system",
        "tenant.updated",
        serde_json::json!({}),
        "",
    ))
    .await
    .unwrap();
    assert_eq!(c.chains_to_dispatch(10).await.unwrap(), [("acme".to_string(), 0)]);
    // The first lock makes the cursor at 0.
    let mut w = c.begin().await.unwrap();
    assert_eq!(c.lock_cursor(&mut w, "acme").await.unwrap(), Some(0));
    w.commit().await.unwrap();
    let mut w = c.begin().await.unwrap();
    assert_eq!(c.lock_cursor(&mut w, "acme").await.unwrap(), Some(0));
    if c.backend() == tenantd_store::Backend::Postgres {
        // SQLite has one writer at a time: a second unit of work waits rather than skips.
        let mut other = c.begin().await.unwrap();
        assert_eq!(c.lock_cursor(&mut other, "acme").await.unwrap(), None);
    }
    c.set_cursor(&mut w, "acme", 1).await.unwrap();
    w.commit().await.unwrap();
    assert!(c.chains_to_dispatch(10).await.unwrap().is_empty());
}
