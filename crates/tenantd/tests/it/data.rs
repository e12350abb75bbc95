//! Tenant data over HTTP (CONTRACT §7): records in collections, per tenant, on SQLite and
//! PostgreSQL.
use crate::common::{TestApp, ADMIN};
use serde_json::{json, Value};

crate::both! {
    records_are_the_tenants_own;
    records_list_filter_and_page;
    records_change_only_at_the_version_asked;
    random_operations_never_cross_tenants;
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

/// A model-based isolation test: seeded random operations by random principals (a member
/// and a viewer of each of 20 tenants) against an in-memory model of every tenant's
/// records. Every answer must be the model's; no answer may carry another tenant's data;
/// every attempt on another tenant's record answers as if it did not exist.
async fn random_operations_never_cross_tenants(app: TestApp) {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    const TENANTS: usize = 20;
    const OPS: usize = 2500;
    let seed: u64 = std::env::var("TENANTD_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut keys = Vec::new();
    for t in 0..TENANTS {
        let id = format!("t{t:02}");
        app.tenant(&id, "professional").await;
        keys.push((
            id.clone(),
            app.key(&id, "member").await.1,
            app.key(&id, "viewer").await.1,
        ));
    }
    // (tenant, collection, id) -> (document, version)
    let mut model: BTreeMap<(usize, &str, String), (Value, i64)> = BTreeMap::new();
    let collections = ["a", "b"];
    let url = |c: &str, id: Option<&str>| match id {
        Some(id) => format!("/v1/data/collections/{c}/records/{id}"),
        None => format!("/v1/data/collections/{c}/records"),
    };
    for step in 0..OPS {
        let ctx = format!("seed {seed} (TENANTD_MODEL_SEED), step {step}");
        let me = rng.gen_range(0..TENANTS);
        let member = rng.gen_bool(0.7);
        let key = if member { &keys[me].1 } else { &keys[me].2 };
        let c = collections[rng.gen_range(0..2)];
        // A known record of any tenant (or none yet).
        let target = (!model.is_empty())
            .then(|| model.keys().nth(rng.gen_range(0..model.len())).cloned())
            .flatten();
        let mine_data = |r: &Value| {
            let owner = r["data"]["owner"].as_str().unwrap_or_default().to_string();
            assert_eq!(owner, keys[me].0, "{ctx}: another tenant's data in {r}");
        };
        match rng.gen_range(0..6) {
            0 => {
                let doc = json!({"owner": keys[me].0, "n": rng.gen_range(0..100)});
                let r = app.post(&url(c, None), key, doc.clone()).await;
                if member {
                    let r = r.expect(201);
                    mine_data(&r.body);
                    model.insert((me, c, r.body["id"].as_str().unwrap().to_string()), (doc, 1));
                } else {
                    r.problem(403, "forbidden");
                }
            }
            1 => {
                let Some((t, c, id)) = target else { continue };
                let r = app.get(&url(c, Some(&id)), key).await;
                if t == me {
                    let r = r.expect(200);
                    mine_data(&r.body);
                    assert_eq!(r.body["data"], model[&(t, c, id.clone())].0, "{ctx}");
                } else {
                    r.problem(404, "not_found");
                }
            }
            2 => {
                let n = rng.gen_range(0..100);
                let r = app.get(&format!("{}?n[gte]={n}", url(c, None)), key).await.expect(200);
                let mut got: Vec<String> = r.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        mine_data(i);
                        i["id"].as_str().unwrap().to_string()
                    })
                    .collect();
                got.sort();
                let want: Vec<String> = model
                    .iter()
                    .filter(|((t, mc, _), (d, _))| *t == me && *mc == c && d["n"].as_i64().unwrap() >= n)
                    .map(|((_, _, id), _)| id.clone())
                    .take(50)
                    .collect();
                assert_eq!(got, want, "{ctx}");
            }
            3 => {
                let Some((t, c, id)) = target else { continue };
                let stale = rng.gen_bool(0.2);
                let version = model[&(t, c, id.clone())].1 - i64::from(stale);
                let tag = format!("\"{version}\"");
                let n = rng.gen_range(0..100);
                let r = app
                    .call(
                        "PATCH",
                        &url(c, Some(&id)),
                        Some(key),
                        Some(json!({"n": n})),
                        &[("If-Match", &tag)],
                    )
                    .await;
                // The caller's role is checked first: it says nothing about the record.
                match (t == me, member, stale) {
                    (_, false, _) => {
                        r.problem(403, "forbidden");
                    }
                    (false, true, _) => {
                        r.problem(404, "not_found");
                    }
                    (true, true, true) => {
                        r.problem(409, "conflict");
                    }
                    (true, true, false) => {
                        let r = r.expect(200);
                        mine_data(&r.body);
                        let entry = model.get_mut(&(t, c, id)).unwrap();
                        entry.0["n"] = json!(n);
                        entry.1 += 1;
                        assert_eq!(
                            (&r.body["data"], r.body["version"].as_i64()),
                            (&entry.0, Some(entry.1)),
                            "{ctx}"
                        );
                    }
                }
            }
            4 => {
                let Some((t, c, id)) = target else { continue };
                let r = app.delete(&url(c, Some(&id)), key).await;
                match (t == me, member) {
                    (_, false) => {
                        r.problem(403, "forbidden");
                    }
                    (false, true) => {
                        r.problem(404, "not_found");
                    }
                    (true, true) => {
                        r.expect(204);
                        model.remove(&(t, c, id));
                    }
                }
            }
            _ => {
                // Naming another tenant next to one's own credential.
                let other = (me + rng.gen_range(1..TENANTS)) % TENANTS;
                let r = app
                    .call(
                        "GET",
                        &url(c, None),
                        Some(key),
                        None,
                        &[("X-Tenant-ID", &keys[other].0)],
                    )
                    .await;
                r.problem(403, "tenant_mismatch");
            }
        }
    }
    // In the end every tenant holds exactly the model's records.
    for (t, (id, member, _)) in keys.iter().enumerate() {
        for c in collections {
            let r = app
                .get(&format!("{}?limit=1000", url(c, None)), member)
                .await
                .expect(200);
            let mut got: Vec<(String, Value)> = r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["id"].as_str().unwrap().to_string(), i["data"].clone()))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            let want: Vec<(String, Value)> = model
                .iter()
                .filter(|((mt, mc, _), _)| *mt == t && *mc == c)
                .map(|((_, _, rid), (d, _))| (rid.clone(), d.clone()))
                .collect();
            assert_eq!(got, want, "seed {seed}: tenant {id}, collection {c}");
        }
    }
}
