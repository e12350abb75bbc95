//! Tenant data over HTTP (CONTRACT §7): records in collections, per tenant, on SQLite and
//! PostgreSQL.
use crate::common::{TestApp, ADMIN};
use serde_json::{json, Value};

crate::both! {
    records_are_the_tenants_own;
    records_list_filter_and_page;
    records_change_only_at_the_version_asked;
}

const ORDERS: &str = "/v1/data/collections/orders/records";

async fn create(app: &TestApp, key: &str, doc: Value) -> Value {
    app.post(ORDERS, key, doc).await.expect(201).body
}

async fn records_are_the_tenants_own(app: TestApp) {
    app.tenant("acme", "professional").await;
    app.tenant("globex", "professional").await;
    let (_, acme) = app.key("acme", "member").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    let (_, globex) = app.key("globex", "member").await;

    let r = app
        .post(ORDERS, &acme, json!({"total": 5, "status": "open"}))
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("rec_"));
    assert_eq!(
        (&r.body["data"], &r.body["version"]),
        (&json!({"total": 5, "status": "open"}), &json!(1))
    );
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.headers["location"].to_str().unwrap(), format!("{ORDERS}/{id}"));
    let one = format!("{ORDERS}/{id}");
    let got = app.get(&one, &acme).await.expect(200);
    assert_eq!(
        (&got.body["data"]["total"], &got.headers["etag"]),
        (&json!(5), &"\"1\"".parse().unwrap())
    );
    assert_eq!(app.get(&one, &viewer).await.expect(200).body["id"], id.as_str());

    // Another tenant: the same answer as for a record that does not exist.
    let theirs = app.get(&one, &globex).await.problem(404, "not_found").body;
    let none = app
        .get(&format!("{ORDERS}/rec_nothing"), &globex)
        .await
        .problem(404, "not_found")
        .body;
    assert_eq!(theirs["detail"], none["detail"]);
    assert!(app.get(ORDERS, &globex).await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .is_empty());
    app.patch(&one, &globex, json!({"total": 0}))
        .await
        .problem(404, "not_found");
    app.delete(&one, &globex).await.problem(404, "not_found");
    let r = app
        .call("GET", &one, Some(&globex), None, &[("X-Tenant-ID", "acme")])
        .await;
    r.problem(403, "tenant_mismatch");
    assert_eq!(
        app.get(&one, &acme).await.expect(200).body["data"]["total"],
        5,
        "untouched"
    );

    // Roles: a viewer reads but does not write; no credential is 401.
    app.post(ORDERS, &viewer, json!({"x": 1}))
        .await
        .problem(403, "forbidden");
    app.patch(&one, &viewer, json!({"x": 1}))
        .await
        .problem(403, "forbidden");
    app.delete(&one, &viewer).await.problem(403, "forbidden");
    app.call("GET", ORDERS, None, None, &[])
        .await
        .problem(401, "unauthenticated");

    // Bad input changes nothing.
    app.post(ORDERS, &acme, json!([1, 2]))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/data/collections/a%20b/records", &acme, json!({}))
        .await
        .problem(400, "invalid_request");
    let r = app
        .call(
            "POST",
            ORDERS,
            Some(&acme),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    r.problem(400, "invalid_request");
    assert_eq!(
        app.get(ORDERS, &acme).await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A suspended tenant's data is neither read nor written, by anyone but the operator.
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "test"}))
        .await
        .expect(200);
    app.get(&one, &acme).await.problem(403, "tenant_suspended");
    app.post(ORDERS, &acme, json!({"x": 1}))
        .await
        .problem(403, "tenant_suspended");
    app.post("/v1/tenants/acme/resume", ADMIN, json!({})).await.expect(200);
    app.delete(&one, &acme).await.expect(204);
    app.get(&one, &acme).await.problem(404, "not_found");
}

async fn records_list_filter_and_page(app: TestApp) {
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    for (total, status) in [(5, "open"), (12, "paid"), (30, "paid"), (7, "open"), (50, "void")] {
        create(&app, &key, json!({"total": total, "status": status})).await;
    }
    let totals = |r: &Value| -> Vec<i64> {
        let mut t: Vec<i64> = r["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["data"]["total"].as_i64().unwrap())
            .collect();
        t.sort();
        t
    };
    let q = |query: &str| format!("{ORDERS}?{query}");
    assert_eq!(
        totals(&app.get(&q("status=paid"), &key).await.expect(200).body),
        [12, 30]
    );
    assert_eq!(
        totals(&app.get(&q("total[gte]=12"), &key).await.expect(200).body),
        [12, 30, 50]
    );
    assert_eq!(
        totals(&app.get(&q("total[lt]=12&status=open"), &key).await.expect(200).body),
        [5, 7]
    );
    assert_eq!(
        totals(&app.get(&q("total[gt]=100"), &key).await.expect(200).body),
        Vec::<i64>::new()
    );

    // Pages of 2 with a filter: every match once, then no cursor.
    let mut seen = Vec::new();
    let mut url = q("limit=2&total[gte]=7");
    loop {
        let page = app.get(&url, &key).await.expect(200).body;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(totals(&page));
        match page["next_cursor"].as_str() {
            Some(c) => url = q(&format!("limit=2&total[gte]=7&cursor={c}")),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, [7, 12, 30, 50]);

    for bad in ["limit=0", "limit=1001", "cursor=%%%", "total[between]=1"] {
        app.get(&q(bad), &key).await.problem(400, "invalid_request");
    }
}

async fn records_change_only_at_the_version_asked(app: TestApp) {
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    let r = create(&app, &key, json!({"total": 5, "meta": {"a": 1, "b": 2}})).await;
    let one = format!("{ORDERS}/{}", r["id"].as_str().unwrap());
    let patch = |body: Value, if_match: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = if_match.map(|v| vec![("If-Match", v)]).unwrap_or_default();
        let (one, key, app) = (one.clone(), key.clone(), &app);
        async move { app.call("PATCH", &one, Some(&key), Some(body), &headers).await }
    };
    // A merge patch at the current version.
    let r = patch(json!({"total": 6, "meta": {"b": null}, "note": "x"}), Some("\"1\""))
        .await
        .expect(200);
    assert_eq!(r.body["data"], json!({"total": 6, "meta": {"a": 1}, "note": "x"}));
    assert_eq!(
        (r.body["version"].as_i64(), r.headers["etag"].to_str().unwrap()),
        (Some(2), "\"2\"")
    );
    // A stale version: 409, and nothing changes.
    let r = patch(json!({"total": 0}), Some("\"1\"")).await.problem(409, "conflict");
    assert!(r.body["detail"].as_str().unwrap().contains("version is now 2"));
    assert_eq!(app.get(&one, &key).await.expect(200).body["data"]["total"], 6);
    patch(json!({"total": 0}), Some("1"))
        .await
        .problem(400, "invalid_request");
    patch(json!("not an object"), None)
        .await
        .problem(400, "invalid_request");
    // Without If-Match (or with *), the patch applies to the current version.
    assert_eq!(patch(json!({"total": 7}), None).await.expect(200).body["version"], 3);
    assert_eq!(
        patch(json!({"total": 8}), Some("*")).await.expect(200).body["version"],
        4
    );
    assert_eq!(app.get(&one, &key).await.expect(200).body["data"]["total"], 8);
}
