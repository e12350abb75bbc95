//! Tenant data over HTTP (docs/api.md): records in collections, per tenant, on SQLite and
//! PostgreSQL.
use crate::common::{TestApp, ADMIN};
use serde_json::{json, Value};

crate::both! {
    an_operators_access_to_tenant_data_is_in_the_tenants_audit_trail;
    records_are_the_tenants_own;
    records_list_filter_and_page;
    records_change_only_at_the_version_asked;
    random_operations_never_cross_tenants;
    blobs_stream_up_and_down;
    cache_expires_and_deletes_by_prefix_and_tag;
    storage_limits_refuse_writes_past_them;
    metered_and_stored_bytes_share_one_limit;
    stored_bytes_are_billed;
    blobs_past_max_blob_bytes_are_refused, "max_blob_bytes = 1000";
    a_tenant_without_a_placement_is_placed_on_first_use;
    a_plan_change_moves_the_tenants_data;
    text_a_backend_cannot_store_is_refused_alike;
    blobs_are_served_so_no_browser_runs_them;
    names_are_checked_on_reads_and_cursors_are_tamper_evident;
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
    // An empty If-Match is an empty list of tags: no condition either.
    assert_eq!(
        patch(json!({"total": 9}), Some("")).await.expect(200).body["version"],
        5
    );
    assert_eq!(app.get(&one, &key).await.expect(200).body["data"]["total"], 9);
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
    // Every tier: starter is row, professional schema, enterprise database.
    let plans = ["starter", "professional", "enterprise"];
    for t in 0..TENANTS {
        let id = format!("t{t:02}");
        app.tenant(&id, plans[t % 3]).await;
        keys.push((
            id.clone(),
            app.key(&id, "member").await.1,
            app.key(&id, "viewer").await.1,
        ));
    }
    // (tenant, collection, id) -> (document, version)
    let mut model: BTreeMap<(usize, &str, String), (Value, i64)> = BTreeMap::new();
    // (tenant, path) -> content; (tenant, key) -> value
    let mut blobs: BTreeMap<(usize, String), String> = BTreeMap::new();
    let mut cache: BTreeMap<(usize, String), Value> = BTreeMap::new();
    let pick = |rng: &mut rand::rngs::StdRng, n: usize| rng.gen_range(0..n.max(1));
    // Each tenant's plan (an index into `plans`): now and then one changes, and its data
    // moves to the new tier while the operations go on.
    let mut plan_of: Vec<usize> = (0..TENANTS).map(|t| t % 3).collect();
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
        if rng.gen_ratio(1, 250) {
            let (who, plan) = (rng.gen_range(0..TENANTS), rng.gen_range(0..3));
            app.patch(
                &format!("/v1/tenants/{}", keys[who].0),
                ADMIN,
                json!({"plan": plans[plan]}),
            )
            .await
            .expect(200);
            plan_of[who] = plan;
            continue;
        }
        // A known record of any tenant (or none yet).
        let target = (!model.is_empty())
            .then(|| model.keys().nth(rng.gen_range(0..model.len())).cloned())
            .flatten();
        let mine_data = |r: &Value| {
            let owner = r["data"]["owner"].as_str().unwrap_or_default().to_string();
            assert_eq!(owner, keys[me].0, "{ctx}: another tenant's data in {r}");
        };
        match rng.gen_range(0..10) {
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
            6 => {
                let path = format!("p{}/f{}", rng.gen_range(0..3), rng.gen_range(0..4));
                let content = format!("{}:{}", keys[me].0, rng.gen_range(0..1000));
                let r = app
                    .put_bytes(
                        &format!("/v1/data/blobs/{path}"),
                        key,
                        content.clone().into_bytes(),
                        "text/plain",
                    )
                    .await;
                if member {
                    let fresh = !blobs.contains_key(&(me, path.clone()));
                    r.expect(if fresh { 201 } else { 200 });
                    blobs.insert((me, path), content);
                } else {
                    r.problem(403, "forbidden");
                }
            }
            7 => {
                // Any tenant's path: the caller gets its own blob there, if it has one.
                let Some((_, path)) = blobs.keys().nth(pick(&mut rng, blobs.len())) else {
                    continue;
                };
                let r = app.get(&format!("/v1/data/blobs/{path}"), key).await;
                match blobs.get(&(me, path.clone())) {
                    Some(content) => {
                        let r = r.expect(200);
                        assert_eq!(r.body, Value::String(content.clone()), "{ctx}");
                        assert_eq!(r.headers["content-type"], "text/plain");
                    }
                    None => {
                        r.problem(404, "not_found");
                    }
                }
            }
            8 => {
                let k = format!("k{}", rng.gen_range(0..5));
                let v = json!({"owner": keys[me].0, "n": rng.gen_range(0..100)});
                let r = app
                    .call(
                        "PUT",
                        &format!("/v1/data/cache/{k}"),
                        Some(key),
                        Some(json!({"value": v})),
                        &[],
                    )
                    .await;
                if member {
                    r.expect(200);
                    cache.insert((me, k), v);
                } else {
                    r.problem(403, "forbidden");
                }
            }
            9 => {
                // Any tenant's key: the caller gets its own entry there, if it has one.
                let Some((_, k)) = cache.keys().nth(pick(&mut rng, cache.len())) else {
                    continue;
                };
                let r = app.get(&format!("/v1/data/cache/{k}"), key).await;
                match cache.get(&(me, k.clone())) {
                    Some(own) => {
                        let r = r.expect(200);
                        assert_eq!(&r.body["value"], own, "{ctx}");
                        assert_eq!(r.body["value"]["owner"], keys[me].0.as_str(), "{ctx}");
                    }
                    None => {
                        r.problem(404, "not_found");
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
    // Every move done, each tenant is at its plan's tier...
    let tiers = ["row", "schema", "database"];
    for (t, (id, _, _)) in keys.iter().enumerate() {
        let mut p = Value::Null;
        for _ in 0..400 {
            p = app
                .get(&format!("/v1/tenants/{id}/placement"), ADMIN)
                .await
                .expect(200)
                .body;
            if p["tier"] == tiers[plan_of[t]] && p["state"] == "placed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(p["tier"], tiers[plan_of[t]], "seed {seed}: tenant {id}: {p}");
    }
    // ...and holds exactly the model's records and blobs.
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
        let r = app.get("/v1/data/blobs?limit=1000", member).await.expect(200);
        let got: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["path"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = blobs
            .keys()
            .filter(|(bt, _)| *bt == t)
            .map(|(_, p)| p.as_str())
            .collect();
        assert_eq!(got, want, "seed {seed}: tenant {id}'s blobs");
    }
}

async fn blobs_stream_up_and_down(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("globex", "starter").await;
    let (_, acme) = app.key("acme", "member").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    let (_, globex) = app.key("globex", "member").await;
    // Three times the API's JSON body limit (1 MiB), in chunks of 256 KiB.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = app
        .put_bytes("/v1/data/blobs/img/big.bin", &acme, big.clone(), "image/png")
        .await
        .expect(201);
    assert_eq!(
        (&r.body["size_bytes"], &r.body["version"]),
        (&json!(big.len()), &json!(1))
    );
    assert_eq!(r.body["content_type"], "image/png");
    assert_eq!(r.body["sha256"].as_str().unwrap().len(), 64);
    let got = reqwest::Client::new()
        .get(format!("{}/v1/data/blobs/img/big.bin", app.url))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.headers()["content-length"], big.len().to_string().as_str());
    assert_eq!(got.headers()["etag"], "\"1\"");
    assert!(got.bytes().await.unwrap() == big, "the same bytes back");
    let r = app
        .put_bytes("/v1/data/blobs/img/big.bin", &acme, b"small".to_vec(), "text/plain")
        .await
        .expect(200);
    assert_eq!(r.body["version"], 2, "replaced");
    assert_eq!(
        app.get("/v1/data/blobs/img/big.bin", &acme).await.expect(200).body,
        "small"
    );
    for p in ["img/a.txt", "img/b.txt", "doc/c.txt"] {
        app.put_bytes(
            &format!("/v1/data/blobs/{p}"),
            &acme,
            p.as_bytes().to_vec(),
            "text/plain",
        )
        .await
        .expect(201);
    }
    app.put_bytes("/v1/data/blobs/img/a.txt", &globex, b"globex".to_vec(), "text/plain")
        .await
        .expect(201);
    let paths = |r: &Value| -> Vec<String> {
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["path"].as_str().unwrap().to_string())
            .collect()
    };
    let page = app
        .get("/v1/data/blobs?prefix=img/&limit=2", &acme)
        .await
        .expect(200)
        .body;
    assert_eq!(paths(&page), ["img/a.txt", "img/b.txt"]);
    let next = format!(
        "/v1/data/blobs?prefix=img/&limit=2&cursor={}",
        page["next_cursor"].as_str().unwrap()
    );
    let page = app.get(&next, &acme).await.expect(200).body;
    assert_eq!(
        (paths(&page), &page["next_cursor"]),
        (vec!["img/big.bin".to_string()], &Value::Null)
    );
    assert_eq!(
        paths(&app.get("/v1/data/blobs", &globex).await.expect(200).body),
        ["img/a.txt"]
    );
    assert_eq!(
        app.get("/v1/data/blobs/img/a.txt", &globex).await.expect(200).body,
        "globex"
    );
    app.get("/v1/data/blobs/doc/c.txt", &globex)
        .await
        .problem(404, "not_found");
    app.delete("/v1/data/blobs/doc/c.txt", &globex)
        .await
        .problem(404, "not_found");
    // Roles and bad input change nothing.
    app.put_bytes("/v1/data/blobs/x", &viewer, b"x".to_vec(), "text/plain")
        .await
        .problem(403, "forbidden");
    app.delete("/v1/data/blobs/doc/c.txt", &viewer)
        .await
        .problem(403, "forbidden");
    app.put_bytes("/v1/data/blobs/a//b", &acme, b"x".to_vec(), "text/plain")
        .await
        .problem(400, "invalid_request");
    app.get("/v1/data/blobs?bogus=1", &acme)
        .await
        .problem(400, "invalid_request");
    assert_eq!(paths(&app.get("/v1/data/blobs", &acme).await.expect(200).body).len(), 4);
    // A suspended tenant's blobs and cache are neither read nor written.
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "test"}))
        .await
        .expect(200);
    app.get("/v1/data/blobs/doc/c.txt", &acme)
        .await
        .problem(403, "tenant_suspended");
    app.put_bytes("/v1/data/blobs/x", &acme, b"x".to_vec(), "text/plain")
        .await
        .problem(403, "tenant_suspended");
    app.call("PUT", "/v1/data/cache/k", Some(&acme), Some(json!({"value": 1})), &[])
        .await
        .problem(403, "tenant_suspended");
    app.get("/v1/data/cache/k", &acme)
        .await
        .problem(403, "tenant_suspended");
    // Every other data route too; and naming acme next to globex's key is refused on
    // each of them.
    let record = format!("{ORDERS}/rec_x");
    let routes: [(&str, &str, Option<Value>); 9] = [
        ("GET", "/v1/data/blobs", None),
        ("DELETE", "/v1/data/blobs/doc/c.txt", None),
        ("DELETE", "/v1/data/cache/k", None),
        ("DELETE", "/v1/data/cache?prefix=k", None),
        ("GET", ORDERS, None),
        ("POST", ORDERS, Some(json!({"n": 1}))),
        ("GET", &record, None),
        ("PATCH", &record, Some(json!({"n": 2}))),
        ("DELETE", &record, None),
    ];
    for (method, path, body) in &routes {
        app.call(method, path, Some(&acme), body.clone(), &[])
            .await
            .problem(403, "tenant_suspended");
        app.call(method, path, Some(&globex), body.clone(), &[("X-Tenant-ID", "acme")])
            .await
            .problem(403, "tenant_mismatch");
    }
    app.post("/v1/tenants/acme/resume", ADMIN, json!({})).await.expect(200);
    app.delete("/v1/data/blobs/doc/c.txt", &acme).await.expect(204);
    app.get("/v1/data/blobs/doc/c.txt", &acme)
        .await
        .problem(404, "not_found");
    app.get("/v1/data/blobs/img/a.txt", &globex).await.expect(200);
}

async fn cache_expires_and_deletes_by_prefix_and_tag(app: TestApp) {
    let app = &app;
    app.tenant("acme", "starter").await;
    app.tenant("globex", "starter").await;
    let (_, acme) = app.key("acme", "member").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    let (_, globex) = app.key("globex", "member").await;
    let put = |key: &str, token: &str, body: Value| {
        let (path, token) = (format!("/v1/data/cache/{key}"), token.to_string());
        async move { app.call("PUT", &path, Some(&token), Some(body), &[]).await }
    };
    let r = put("user:1", &acme, json!({"value": {"name": "Ada"}, "tags": ["users"]}))
        .await
        .expect(200);
    assert_eq!(
        (&r.body["value"], &r.body["expires_at"]),
        (&json!({"name": "Ada"}), &Value::Null)
    );
    put(
        "user:2",
        &acme,
        json!({"value": 2, "tags": ["users", "vip"], "ttl_seconds": 3600}),
    )
    .await
    .expect(200);
    put("page:1", &acme, json!({"value": "p", "tags": ["vip"]}))
        .await
        .expect(200);
    put("brief", &acme, json!({"value": 0, "ttl_seconds": 1}))
        .await
        .expect(200);
    put("user:1", &globex, json!({"value": "globex's", "tags": ["users"]}))
        .await
        .expect(200);
    let got = app.get("/v1/data/cache/user:2", &viewer).await.expect(200).body;
    assert_eq!((&got["value"], &got["tags"]), (&json!(2), &json!(["users", "vip"])));
    assert!(got["expires_at"].is_string());
    app.get("/v1/data/cache/user:2", &globex)
        .await
        .problem(404, "not_found");
    assert_eq!(
        app.get("/v1/data/cache/user:1", &globex).await.expect(200).body["value"],
        "globex's"
    );
    // Bad input and roles change nothing.
    for bad in [
        json!({"value": 1, "ttl_seconds": 0}),
        json!({"value": 1, "tags": ["a,b"]}),
        json!({"tags": []}),
        json!({"value": 1, "x": 1}),
    ] {
        put("user:1", &acme, bad).await.problem(400, "invalid_request");
    }
    put("user:1", &viewer, json!({"value": 9}))
        .await
        .problem(403, "forbidden");
    app.delete("/v1/data/cache?tag=vip", &viewer)
        .await
        .problem(403, "forbidden");
    app.delete("/v1/data/cache", &acme)
        .await
        .problem(400, "invalid_request");
    app.delete("/v1/data/cache?tag=vip&prefix=a", &acme)
        .await
        .problem(400, "invalid_request");
    assert_eq!(
        app.get("/v1/data/cache/user:1", &acme).await.expect(200).body["value"],
        json!({"name": "Ada"})
    );
    // Deletes by tag, by prefix, by key; the other tenant's entries stay.
    assert_eq!(
        app.delete("/v1/data/cache?tag=vip", &globex).await.expect(200).body["deleted"],
        0
    );
    assert_eq!(
        app.delete("/v1/data/cache?tag=vip", &acme).await.expect(200).body["deleted"],
        2
    );
    app.get("/v1/data/cache/page:1", &acme).await.problem(404, "not_found");
    assert_eq!(
        app.delete("/v1/data/cache?prefix=user:", &acme).await.expect(200).body["deleted"],
        1
    );
    app.get("/v1/data/cache/user:1", &acme).await.problem(404, "not_found");
    assert_eq!(
        app.get("/v1/data/cache/user:1", &globex).await.expect(200).body["value"],
        "globex's"
    );
    app.delete("/v1/data/cache/user:1", &globex).await.expect(204);
    app.delete("/v1/data/cache/user:1", &globex)
        .await
        .problem(404, "not_found");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.get("/v1/data/cache/brief", &acme).await.problem(404, "not_found");
}

fn storage(usage: &Value) -> &Value {
    usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["resource"] == "storage_bytes")
        .unwrap()
}

async fn storage_limits_refuse_writes_past_them(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("globex", "starter").await;
    let limit = json!([{"resource": "storage_bytes", "window": "total", "limit": 100, "enforcement": "hard"}]);
    app.patch("/v1/tenants/acme", ADMIN, json!({"limits": limit}))
        .await
        .expect(200);
    let (_, acme) = app.key("acme", "member").await;
    let (_, globex) = app.key("globex", "member").await;
    let u = app.get("/v1/tenant/usage", &acme).await.expect(200).body;
    assert_eq!(
        (&storage(&u)["current"], &storage(&u)["limit"]),
        (&json!(0), &json!(100))
    );
    // 40 bytes of record, 30 of blob, 20 of cache entry (key and value).
    let doc = json!({"pad": "x".repeat(30)});
    assert_eq!(doc.to_string().len(), 40);
    let rec = app.post(ORDERS, &acme, doc).await.expect(201).body;
    app.put_bytes("/v1/data/blobs/f", &acme, vec![1; 30], "application/octet-stream")
        .await
        .expect(201);
    app.call(
        "PUT",
        "/v1/data/cache/kk",
        Some(&acme),
        Some(json!({"value": "y".repeat(16)})),
        &[],
    )
    .await
    .expect(200);
    let u = app.get("/v1/tenant/usage", &acme).await.expect(200).body;
    assert_eq!(storage(&u)["current"], 90);
    // Past the limit: 429 with the contract's fields, and nothing written.
    let r = app
        .put_bytes("/v1/data/blobs/g", &acme, vec![1; 11], "application/octet-stream")
        .await;
    let r = r.problem(429, "quota_exceeded");
    assert_eq!(
        (&r.body["quota"], &r.body["limit"]),
        (&json!("storage_bytes"), &json!(100))
    );
    assert_eq!((&r.body["current"], &r.body["window"]), (&json!(90), &json!("total")));
    app.get("/v1/data/blobs/g", &acme).await.problem(404, "not_found");
    // Undeclared (chunked) uploads: one larger than the whole limit is stopped while
    // it is read, a small one past the level at its commit; neither is kept.
    assert_eq!(put_chunked(&app, "/v1/data/blobs/g", &acme, 150).await, 429);
    assert_eq!(put_chunked(&app, "/v1/data/blobs/g", &acme, 11).await, 429);
    app.get("/v1/data/blobs/g", &acme).await.problem(404, "not_found");
    app.post(ORDERS, &acme, json!({"pad": "y".repeat(10)}))
        .await
        .problem(429, "quota_exceeded");
    // A patch that grows a record past the limit is refused too, and changes nothing.
    let one = format!("{ORDERS}/{}", rec["id"].as_str().unwrap());
    app.patch(&one, &acme, json!({"more": "z".repeat(20)}))
        .await
        .problem(429, "quota_exceeded");
    let kept = app.get(&one, &acme).await.expect(200).body;
    assert_eq!((&kept["version"], &kept["data"]["more"]), (&json!(1), &Value::Null));
    app.call(
        "PUT",
        "/v1/data/cache/k2",
        Some(&acme),
        Some(json!({"value": "z".repeat(20)})),
        &[],
    )
    .await
    .problem(429, "quota_exceeded");
    assert_eq!(
        app.get(ORDERS, &acme).await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let u = app.get("/v1/tenant/usage", &acme).await.expect(200).body;
    assert_eq!(storage(&u)["current"], 90, "nothing was counted");
    // Another tenant is not limited by acme's storage.
    app.put_bytes("/v1/data/blobs/g", &globex, vec![1; 500], "application/octet-stream")
        .await
        .expect(201);
    // Deleting frees room. Each upward crossing is an event: 80% at 90 bytes, then,
    // after the delete took the level to 50, 80% again and 100% with the same write.
    app.delete(&format!("{ORDERS}/{}", rec["id"].as_str().unwrap()), &acme)
        .await
        .expect(204);
    app.put_bytes("/v1/data/blobs/g", &acme, vec![1; 50], "application/octet-stream")
        .await
        .expect(201);
    let u = app.get("/v1/tenant/usage", &acme).await.expect(200).body;
    assert_eq!(storage(&u)["current"], 100);
    assert_eq!(
        app.quota_events("acme", Some("storage_bytes")).await,
        ["quota.warning", "quota.warning", "quota.exceeded"]
    );
}

async fn a_plan_change_moves_the_tenants_data(app: TestApp) {
    let app = &app;
    app.tenant("acme", "starter").await;
    app.tenant("globex", "starter").await;
    let (_, acme) = app.key("acme", "member").await;
    let (_, globex) = app.key("globex", "member").await;
    let placement = |who: &'static str| async move {
        app.get(&format!("/v1/tenants/{who}/placement"), ADMIN)
            .await
            .expect(200)
            .body
    };
    let p = placement("acme").await;
    assert_eq!(
        (&p["tier"], &p["location"], &p["state"]),
        (&json!("row"), &json!("shared"), &json!("placed"))
    );
    let rec = app.post(ORDERS, &acme, json!({"n": 1})).await.expect(201).body;
    let one = format!("{ORDERS}/{}", rec["id"].as_str().unwrap());
    app.put_bytes("/v1/data/blobs/f.txt", &acme, b"content".to_vec(), "text/plain")
        .await
        .expect(201);
    app.post(ORDERS, &globex, json!({"n": 2})).await.expect(201);
    for (plan, tier) in [
        ("enterprise", "database"),
        ("professional", "schema"),
        ("starter", "row"),
    ] {
        app.patch("/v1/tenants/acme", ADMIN, json!({"plan": plan}))
            .await
            .expect(200);
        let mut p = placement("acme").await;
        for _ in 0..200 {
            if p["tier"] == tier && p["state"] == "placed" && p["move"]["phase"] == "done" {
                break;
            }
            // Reads keep working during the move.
            assert_eq!(app.get(&one, &acme).await.expect(200).body["data"], json!({"n": 1}));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            p = placement("acme").await;
        }
        assert_eq!((&p["tier"], &p["move"]["phase"]), (&json!(tier), &json!("done")), "{p}");
        // SQLite's schema and database tiers are one file: nothing to copy between them.
        if p["move"]["from"] != p["location"] {
            assert_eq!(p["move"]["verified"]["records"]["rows"], 1, "{p}");
        }
        assert_eq!(app.get(&one, &acme).await.expect(200).body["data"], json!({"n": 1}));
        assert_eq!(app.get("/v1/data/blobs/f.txt", &acme).await.expect(200).body, "content");
        app.get(&one, &globex).await.problem(404, "not_found");
        assert_eq!(
            app.get(ORDERS, &globex).await.expect(200).body["items"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    // Each move has its placement.moved event, from one tier to the next.
    let mut moved = Vec::new();
    for _ in 0..100 {
        let page = app
            .get("/v1/tenants/acme/audit?type=placement.moved", ADMIN)
            .await
            .expect(200)
            .body;
        moved = page["items"].as_array().unwrap().clone();
        if moved.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tiers: Vec<&Value> = moved.iter().rev().map(|e| &e["data"]["to"]["tier"]).collect();
    assert_eq!(
        tiers,
        [&json!("database"), &json!("schema"), &json!("row")],
        "{moved:?}"
    );
    // Two plan changes in a row, the second while the first move runs: the data ends
    // at the last plan's tier.
    app.patch("/v1/tenants/acme", ADMIN, json!({"plan": "enterprise"}))
        .await
        .expect(200);
    app.patch("/v1/tenants/acme", ADMIN, json!({"plan": "professional"}))
        .await
        .expect(200);
    let mut p = placement("acme").await;
    for _ in 0..400 {
        if p["tier"] == "schema" && p["state"] == "placed" && p["move"]["phase"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        p = placement("acme").await;
    }
    assert_eq!((&p["tier"], &p["state"]), (&json!("schema"), &json!("placed")), "{p}");
    assert_eq!(app.get(&one, &acme).await.expect(200).body["data"], json!({"n": 1}));
    // Only the operator and the tenant's own people see a placement.
    app.get("/v1/tenants/acme/placement", &globex)
        .await
        .problem(403, "tenant_mismatch");
}

/// `storage_bytes` the tenant's app meters itself (usage events) and the bytes the data
/// plane stores count toward the same limits.
async fn metered_and_stored_bytes_share_one_limit(app: TestApp) {
    app.tenant("acme", "starter").await;
    let limit = json!([{"resource": "storage_bytes", "window": "total", "limit": 100, "enforcement": "hard"}]);
    app.patch("/v1/tenants/acme", ADMIN, json!({"limits": limit}))
        .await
        .expect(200);
    let (_, key) = app.key("acme", "member").await;
    app.post(
        "/v1/tenants/acme/usage/events",
        &key,
        json!({"resource": "storage_bytes", "quantity": 60}),
    )
    .await
    .expect(200);
    // 60 metered: 41 stored bytes would pass 100, 40 fit.
    let r = app
        .put_bytes("/v1/data/blobs/f", &key, vec![1; 41], "application/octet-stream")
        .await;
    let r = r.problem(429, "quota_exceeded");
    assert_eq!((&r.body["current"], &r.body["limit"]), (&json!(60), &json!(100)));
    app.put_bytes("/v1/data/blobs/f", &key, vec![1; 40], "application/octet-stream")
        .await
        .expect(201);
    let u = app.get("/v1/tenant/usage", &key).await.expect(200).body;
    assert_eq!(storage(&u)["current"], 100, "metered and stored, together");
    app.post(ORDERS, &key, json!({})).await.problem(429, "quota_exceeded");
}

async fn stored_bytes_are_billed(app: TestApp) {
    app.tenant("acme", "starter").await;
    // A soft 10-byte allowance: 100 stored bytes are 90 above it, every day.
    let limit = json!([{"resource": "storage_bytes", "window": "total", "limit": 10, "enforcement": "soft"}]);
    app.patch("/v1/tenants/acme", ADMIN, json!({"limits": limit}))
        .await
        .expect(200);
    let (_, key) = app.key("acme", "member").await;
    app.put_bytes("/v1/data/blobs/f", &key, vec![0; 100], "application/octet-stream")
        .await
        .expect(201);
    let tenant = tenantd_core::TenantId::parse("acme").unwrap();
    // Today's snapshots, after the usage flush.
    let snapshots = || async {
        app.state.flush_usage().await;
        app.state
            .catalog
            .counters_in(&tenant, tenantd_core::Window::Total, 1, i64::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.resource, r.value))
            .collect::<Vec<_>>()
    };
    let stored = |n: u64| vec![("storage_bytes:data".to_string(), n)];
    assert_eq!(snapshots().await, stored(100), "today's snapshot of the stored bytes");
    let (y, m) = tenantd_core::ts::year_month(tenantd_core::now_secs());
    let inv = app
        .get(&format!("/v1/tenants/acme/invoices/{y}-{m:02}"), ADMIN)
        .await
        .expect(200)
        .body;
    let storage = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["description"].as_str().unwrap().starts_with("Storage above the plan"));
    assert!(
        storage.is_some(),
        "the stored bytes above the allowance are billed: {inv}"
    );
    // Deletes free storage, and today's snapshot follows them down.
    app.delete("/v1/data/blobs/f", &key).await.expect(204);
    assert_eq!(snapshots().await, stored(0), "a deleted blob is no longer billed");
    let r = app
        .post("/v1/data/collections/c/records", &key, json!({"n": 1}))
        .await
        .expect(201);
    app.call("PUT", "/v1/data/cache/k", Some(&key), Some(json!({"value": "v"})), &[])
        .await
        .expect(200);
    let level = snapshots().await[0].1;
    assert!(level > 0, "a record and a cache entry are stored");
    app.delete(
        &format!("/v1/data/collections/c/records/{}", r.body["id"].as_str().unwrap()),
        &key,
    )
    .await
    .expect(204);
    app.delete("/v1/data/cache?prefix=k", &key).await.expect(200);
    assert_eq!(
        snapshots().await,
        stored(0),
        "deleted records and cache entries are no longer billed"
    );
}

/// A chunked upload of `len` bytes (no `Content-Length`), over a raw connection; the
/// status code of the answer.
async fn put_chunked(app: &TestApp, path: &str, key: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for part in vec![b'x'; len].chunks(300) {
        let sent = conn.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await;
        if sent.is_err() || conn.write_all(part).await.is_err() || conn.write_all(b"\r\n").await.is_err() {
            break; // refused before the end: the server may close early
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer).await;
    answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

async fn blobs_past_max_blob_bytes_are_refused(app: TestApp) {
    app.tenant("acme", "starter").await;
    let (_, key) = app.key("acme", "member").await;
    // Declared too large: refused before anything is read.
    app.put_bytes("/v1/data/blobs/big", &key, vec![0; 1001], "application/octet-stream")
        .await
        .problem(413, "payload_too_large");
    // Undeclared (chunked) and too large: refused while reading, nothing kept.
    assert_eq!(put_chunked(&app, "/v1/data/blobs/big", &key, 1500).await, 413);
    app.get("/v1/data/blobs/big", &key).await.problem(404, "not_found");
    let u = app.get("/v1/tenant/usage", &key).await.expect(200).body;
    assert_eq!(storage(&u)["current"], 0);
    // At the limit, both ways: stored.
    assert_eq!(put_chunked(&app, "/v1/data/blobs/big", &key, 1000).await, 201);
    app.put_bytes("/v1/data/blobs/other", &key, vec![0; 1000], "application/octet-stream")
        .await
        .expect(201);
    assert_eq!(
        app.get("/v1/data/blobs/big", &key).await.expect(200).body,
        "x".repeat(1000)
    );
}

async fn a_tenant_without_a_placement_is_placed_on_first_use(app: TestApp) {
    // As a tenant made before the data plane existed, or whose placement failed.
    app.tenant("acme", "professional").await;
    let id = tenantd_core::TenantId::parse("acme").unwrap();
    app.state.data.remove(&id).await.unwrap();
    let p = app.get("/v1/tenants/acme/placement", ADMIN).await.expect(200).body;
    assert_eq!(
        (&p["tier"], &p["state"], &p["location"]),
        (&json!("schema"), &json!("unplaced"), &Value::Null),
        "{p}"
    );
    let (_, key) = app.key("acme", "member").await;
    app.post(ORDERS, &key, json!({"n": 1})).await.expect(201);
    let p = app.get("/v1/tenants/acme/placement", ADMIN).await.expect(200).body;
    assert_eq!((&p["tier"], &p["state"]), (&json!("schema"), &json!("placed")), "{p}");
}

/// The finding: a record holding `\u0000` was a 500 on PostgreSQL and stored on SQLite.
/// It is `400 invalid_request` on both, wherever the NUL is, and nothing is written;
/// `%00` in a URL is refused the same way.
async fn text_a_backend_cannot_store_is_refused_alike(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("bigco", "professional").await;
    for t in ["acme", "bigco"] {
        let (_, key) = app.key(t, "member").await;
        let r = create(&app, &key, json!({"n": 1})).await;
        let one = format!("{ORDERS}/{}", r["id"].as_str().unwrap());
        for doc in [
            json!({"note": "a\u{0}b"}),
            json!({"a\u{0}": 1}),
            json!({"deep": [{"x": "\u{0}"}]}),
        ] {
            let r = app
                .post(ORDERS, &key, doc.clone())
                .await
                .problem(400, "invalid_request");
            assert!(r.body["detail"].as_str().unwrap().contains("NUL"), "{doc}: {}", r.body);
            app.patch(&one, &key, doc).await.problem(400, "invalid_request");
        }
        app.call(
            "PUT",
            "/v1/data/cache/k",
            Some(&key),
            Some(json!({"value": "\u{0}"})),
            &[],
        )
        .await
        .problem(400, "invalid_request");
        // A backslash before `u0000` is only text.
        let fine = create(&app, &key, json!({"note": "\\u0000"})).await;
        assert_eq!(fine["data"]["note"], "\\u0000");
        let items = app.get(ORDERS, &key).await.expect(200).body["items"].clone();
        assert_eq!(items.as_array().unwrap().len(), 2, "nothing else was written: {items}");
        assert_eq!(app.get(&one, &key).await.expect(200).body["data"], json!({"n": 1}));
        for url in [
            format!("{ORDERS}/rec%00x"),
            "/v1/data/collections/or%00ders/records".to_string(),
            format!("{ORDERS}?status=%00"),
            "/v1/data/blobs/a%00b".to_string(),
            format!("/v1/tenants/{t}/audit?actor=%00"),
        ] {
            app.get(&url, &key).await.problem(400, "invalid_request");
        }
    }
    app.post(
        "/v1/tenants",
        ADMIN,
        json!({"id": "nul", "name": "a\u{0}", "plan": "free", "owner_email": "o@nul.test"}),
    )
    .await
    .problem(400, "invalid_request");
    app.get("/v1/tenants/nul", ADMIN).await.problem(404, "tenant_not_found");
}

/// The backstop: text PostgreSQL refuses is recognised as the client's, so it could
/// never be a 500 even where a check were missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_a_nul_is_recognised_as_unstorable_text() {
    let Some(url) = tenantd_store::testing::fresh_postgres("unstorable text").await else {
        return;
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let e = sqlx::query("SELECT $1::text")
        .bind("a\u{0}b")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(tenantd::error::unstorable_text(&e), "{e}");
    let e = sqlx::query("SELECT '{\"a\": \"\\u0000\"}'::jsonb->>'a'")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(tenantd::error::unstorable_text(&e), "{e}");
    let other = sqlx::query("SELECT 1/0").execute(&mut conn).await.unwrap_err();
    assert!(!tenantd::error::unstorable_text(&other));
}

/// The finding: a blob of type `text/html` was served as it was, without `nosniff`, so a
/// tenant's upload could run as a page of tenantd's origin. Every blob is `nosniff` and
/// sandboxed; a type a browser would run is a download.
async fn blobs_are_served_so_no_browser_runs_them(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, key) = app.key("acme", "member").await;
    for (path, ty, attachment) in [
        ("page.html", "text/html; charset=utf-8", true),
        ("x.svg", "image/svg+xml", true),
        ("x.xml", "application/xml", true),
        ("x.js", "text/javascript", true),
        ("x.xhtml", "application/xhtml+xml", true),
        ("x.png", "image/png", false),
        ("x.txt", "text/plain", false),
    ] {
        app.put_bytes(
            &format!("/v1/data/blobs/{path}"),
            &key,
            b"<script>alert(1)</script>".to_vec(),
            ty,
        )
        .await
        .expect(201);
        let r = app.get(&format!("/v1/data/blobs/{path}"), &key).await.expect(200);
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(
            r.headers["content-security-policy"], "default-src 'none'; sandbox",
            "{path}"
        );
        assert_eq!(
            r.headers.get("content-disposition").map(|v| v.to_str().unwrap()),
            attachment.then_some("attachment"),
            "{path}"
        );
        assert_eq!(
            r.headers["content-type"], ty,
            "{path}: the type is still the one stored"
        );
    }
}

/// The findings: a `GET` on an invalid collection name answered `200 []`, and cursors
/// were bare base64 that a client could forge. Names are checked on every read (`400`),
/// and a cursor tenantd did not issue is `400` on every list.
async fn names_are_checked_on_reads_and_cursors_are_tamper_evident(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, key) = app.key("acme", "member").await;
    for bad in ["bad%20name", "a%2Fb", &"x".repeat(129)] {
        let c = format!("/v1/data/collections/{bad}/records");
        app.get(&c, &key).await.problem(400, "invalid_request");
        app.get(&format!("{c}/rec_1"), &key)
            .await
            .problem(400, "invalid_request");
        app.delete(&format!("{c}/rec_1"), &key)
            .await
            .problem(400, "invalid_request");
    }
    app.get(&format!("{ORDERS}/bad%20id"), &key)
        .await
        .problem(400, "invalid_request");
    for i in 0..3 {
        create(&app, &key, json!({"n": i})).await;
        app.put_bytes(
            &format!("/v1/data/blobs/b{i}"),
            &key,
            vec![1],
            "application/octet-stream",
        )
        .await
        .expect(201);
        app.post(
            "/v1/tenants/acme/members",
            ADMIN,
            json!({"email": format!("m{i}@acme.test"), "role": "viewer"}),
        )
        .await
        .expect(201);
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    // Another node of the deployment, on PostgreSQL (SQLite serves one node only).
    let other = match app.db_url.starts_with("postgres") {
        true => Some(app.second_node().await),
        false => None,
    };
    for list in [
        ORDERS,
        "/v1/data/blobs",
        "/v1/tenants/acme/members",
        "/v1/tenants/acme/keys",
        "/v1/tenants/acme/audit",
        "/v1/tenants",
        "/v1/tenants/acme/events",
    ] {
        let token = if list == "/v1/tenants" { ADMIN } else { &key };
        let token = if list.ends_with("audit") || list.ends_with("members") || list.ends_with("keys") {
            ADMIN
        } else {
            token
        };
        let sep = if list.contains('?') { '&' } else { '?' };
        let first = app.get(&format!("{list}{sep}limit=1"), token).await.expect(200).body;
        if let Some(c) = first["next_cursor"].as_str() {
            // Issued: it works. Changed by one character: refused.
            app.get(&format!("{list}{sep}limit=1&cursor={c}"), token)
                .await
                .expect(200);
            let mut forged: Vec<char> = c.chars().collect();
            forged[0] = if forged[0] == 'A' { 'B' } else { 'A' };
            let forged: String = forged.into_iter().collect();
            app.get(&format!("{list}{sep}limit=1&cursor={forged}"), token)
                .await
                .problem(400, "invalid_request");
        }
        // Another node of the deployment takes this node's cursors.
        if let (Some(c), Some(other)) = (first["next_cursor"].as_str(), &other) {
            other
                .get(&format!("{list}{sep}limit=1&cursor={c}"), token)
                .await
                .expect(200);
        }
        // Positions a client chose, in the old format: refused, never queried.
        for pos in ["rec_0", "b0", "0", "usr_0", "zzzz"] {
            let r = app
                .get(&format!("{list}{sep}limit=1&cursor={}", b64(pos)), token)
                .await
                .problem(400, "invalid_request");
            assert!(
                r.body["detail"].as_str().unwrap().contains("cursor"),
                "{list}: {}",
                r.body
            );
        }
    }
}

/// Every operator request that reaches a tenant's data (records, blobs, cache, usage
/// events, leases) is a `data.operator_access` event in that tenant's trail, written
/// before the access; the tenant's own requests are not. When the event cannot be
/// written, the operator's request is refused and reads nothing.
async fn an_operators_access_to_tenant_data_is_in_the_tenants_audit_trail(app: TestApp) {
    app.tenant("acme", "professional").await;
    app.tenant("globex", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    let r = create(&app, &key, json!({"total": 5})).await;
    let one = format!("{ORDERS}/{}", r["id"].as_str().unwrap());
    let as_operator = |method: &'static str, path: String| {
        let app = &app;
        async move {
            app.call(method, &path, Some(ADMIN), None, &[("X-Tenant-ID", "acme")])
                .await
        }
    };
    let accesses = |tenant: &'static str| {
        let app = &app;
        async move {
            let trail = app
                .get(
                    &format!("/v1/tenants/{tenant}/audit?action=data.operator_access"),
                    ADMIN,
                )
                .await
                .expect(200)
                .body;
            trail["items"].as_array().unwrap().clone()
        }
    };
    // The tenant's own reads are not operator access.
    app.get(&one, &key).await.expect(200);
    assert!(accesses("acme").await.is_empty());
    as_operator("GET", one.clone()).await.expect(200);
    as_operator("GET", "/v1/data/blobs".into()).await.expect(200);
    as_operator("GET", "/v1/data/cache/k".into())
        .await
        .problem(404, "not_found");
    let trail = accesses("acme").await;
    let paths: Vec<&str> = trail.iter().map(|e| e["data"]["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/v1/data/cache/k", "/v1/data/blobs", one.as_str()],
        "newest first"
    );
    assert!(trail
        .iter()
        .all(|e| e["actor"]["id"] == "operator" && e["data"]["method"] == "GET"));
    assert!(trail[0]["request_id"].as_str().unwrap().starts_with("req_"));
    // Usage events and leases are the tenant's data too.
    app.post(
        "/v1/tenants/acme/usage/events",
        ADMIN,
        json!({"resource": "orchestrations", "quantity": 1}),
    )
    .await
    .expect(200);
    assert_eq!(
        accesses("acme").await[0]["data"]["path"],
        "/v1/tenants/acme/usage/events"
    );
    // Nothing of it lands in another tenant's trail.
    assert!(accesses("globex").await.is_empty());
    // No event, no access.
    tenantd_store::testing::refuse_events(&app.db_url, true).await;
    as_operator("GET", one.clone()).await.problem(500, "internal");
    tenantd_store::testing::refuse_events(&app.db_url, false).await;
    assert_eq!(accesses("acme").await.len(), 4);
}
