//! Tenant configuration and feature flags over HTTP, on both backends: schemas refuse
//! values naming the JSON pointer, layers resolve with their source, versions, `If-Match`
//! and rollback, tenants kept apart; every evaluation reason, plan features as flags;
//! OFREP's shapes, errors and ETag/304, and OpenFeature's own OFREP provider reading
//! tenantd's flags; the tower layer's `TenantContext`; platform roles; and a change on
//! one node seen on another within a second.
use crate::common::{spawn_app, start_with, Backend, TestApp, ADMIN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Members of every tenant may also write reports.
const ROLES: &str = "[roles.member]\nallow = [\"reports:write\"]\n";

crate::both! {
    config_is_validated_layered_versioned_and_kept_to_its_tenant;
    flags_give_every_reason_and_plan_features_are_flags;
    ofrep_answers_as_the_protocol_says;
    platform_roles_grant_app_permissions, super::ROLES;
}

const LIMITS: &str = "/v1/config-schemas/limits";

async fn put(app: &TestApp, path: &str, token: &str, body: Value, headers: &[(&str, &str)]) -> crate::common::Reply {
    app.call("PUT", path, Some(token), Some(body), headers).await
}

fn versions(r: &Value) -> Vec<i64> {
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect()
}

async fn config_is_validated_layered_versioned_and_kept_to_its_tenant(app: TestApp) {
    for (id, plan) in [("acme", "starter"), ("beta", "starter"), ("gamma", "professional")] {
        app.tenant(id, plan).await;
    }
    let schema = json!({"type": "object", "properties": {"seats": {"type": "integer", "maximum": 100},
                        "theme": {"enum": ["light", "dark"]}}, "required": ["seats"]});
    // Schemas: not one, a default it refuses, then a good one.
    put(&app, LIMITS, ADMIN, json!({"schema": {"type": "nope"}}), &[])
        .await
        .problem(400, "invalid_request");
    let r = put(
        &app,
        LIMITS,
        ADMIN,
        json!({"schema": schema, "default": {"seats": 500}}),
        &[],
    )
    .await
    .problem(400, "invalid_config");
    assert_eq!(
        (r.body["pointer"].clone(), r.body["keyword"].clone()),
        (json!("/seats"), json!("maximum"))
    );
    let r = put(
        &app,
        LIMITS,
        ADMIN,
        json!({"schema": schema, "default": {"seats": 5}}),
        &[],
    )
    .await
    .expect(201);
    assert_eq!(r.headers["etag"], "\"1\"");
    let (_, acme_admin) = app.key("acme", "admin").await;
    let (_, acme_member) = app.key("acme", "member").await;
    let (_, beta_admin) = app.key("beta", "admin").await;
    // No schema, no value; a tenant may not write the shared layers.
    put(
        &app,
        "/v1/tenants/acme/config/nokey",
        &acme_admin,
        json!({"value": 1}),
        &[],
    )
    .await
    .problem(404, "not_found");
    put(
        &app,
        "/v1/plans/starter/config/limits",
        &acme_admin,
        json!({"value": {"seats": 9}}),
        &[],
    )
    .await
    .problem(403, "forbidden");
    put(&app, LIMITS, &acme_admin, json!({"schema": {}}), &[])
        .await
        .problem(403, "forbidden");
    let get = |t: &'static str, token: String| {
        let app = &app;
        async move {
            app.get(&format!("/v1/tenants/{t}/config/limits"), &token)
                .await
                .expect(200)
        }
    };
    let r = get("acme", acme_member.clone()).await;
    assert_eq!(
        r.body,
        json!({"key": "limits", "value": {"seats": 5}, "source": "default", "version": 1})
    );
    assert_eq!(r.headers["etag"], "\"0\"", "no tenant layer yet");
    // The plan's layer.
    put(
        &app,
        "/v1/plans/professional/config/limits",
        ADMIN,
        json!({"value": {"seats": 50}}),
        &[],
    )
    .await
    .expect(200);
    let g = app.get("/v1/tenants/gamma/config/limits", ADMIN).await.expect(200);
    assert_eq!(
        (g.body["value"]["seats"].clone(), g.body["source"].clone()),
        (json!(50), json!("plan"))
    );
    // The plan's layer has versions and rollback too, and schemas are listed.
    let plan = "/v1/plans/professional/config/limits";
    put(
        &app,
        plan,
        ADMIN,
        json!({"value": {"seats": 60}}),
        &[("if-match", "\"1\"")],
    )
    .await
    .expect(200);
    let v = app.get(&format!("{plan}/versions"), ADMIN).await.expect(200);
    assert_eq!(versions(&v.body), [2, 1]);
    let r = app
        .post(&format!("{plan}/rollback"), ADMIN, json!({"version": 1}))
        .await
        .expect(200);
    assert_eq!(
        (r.body["version"].clone(), r.body["value"]["seats"].clone()),
        (json!(3), json!(50))
    );
    assert_eq!(app.get(plan, ADMIN).await.expect(200).body["source"], "plan");
    let listed = app.get("/v1/config-schemas", ADMIN).await.expect(200).body;
    assert_eq!(listed["items"][0]["key"], "limits");
    // A refused value changes nothing and names the pointer and keyword.
    let r = put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"value": {"seats": 500}}),
        &[],
    )
    .await
    .problem(400, "invalid_config");
    assert_eq!(
        (r.body["pointer"].clone(), r.body["keyword"].clone()),
        (json!("/seats"), json!("maximum"))
    );
    let r = put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"value": {"theme": "pink"}}),
        &[],
    )
    .await
    .problem(400, "invalid_config");
    assert_eq!(r.body["keyword"], "required");
    put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"seats": 5}),
        &[],
    )
    .await
    .problem(400, "invalid_request");
    assert_eq!(get("acme", acme_member.clone()).await.body["source"], "default");
    // A member reads but does not write.
    put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_member,
        json!({"value": {"seats": 7}}),
        &[],
    )
    .await
    .problem(403, "forbidden");
    // The tenant's layer: versions, If-Match, rollback.
    let r = put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"value": {"seats": 7}}),
        &[("if-match", "\"0\"")],
    )
    .await
    .expect(200);
    assert_eq!(
        r.body,
        json!({"key": "limits", "value": {"seats": 7}, "source": "tenant", "version": 1})
    );
    assert_eq!(r.headers["etag"], "\"1\"");
    let r = get("acme", acme_member.clone()).await;
    assert_eq!(
        (r.body["value"]["seats"].clone(), r.body["source"].clone()),
        (json!(7), json!("tenant"))
    );
    assert_eq!(r.headers["etag"], "\"1\"");
    put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"value": {"seats": 8}}),
        &[("if-match", "\"0\"")],
    )
    .await
    .problem(409, "conflict");
    put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"value": {"seats": 8}}),
        &[("if-match", "\"1\"")],
    )
    .await
    .expect(200);
    put(
        &app,
        "/v1/tenants/acme/config/limits",
        &acme_admin,
        json!({"value": {"seats": 9}}),
        &[("if-match", "soon")],
    )
    .await
    .problem(400, "invalid_request");
    // Another tenant of the same plan still has the default, and cannot reach acme's.
    assert_eq!(get("beta", beta_admin.clone()).await.body["source"], "default");
    app.get("/v1/tenants/acme/config/limits", &beta_admin)
        .await
        .problem(403, "tenant_mismatch");
    put(
        &app,
        "/v1/tenants/acme/config/limits",
        &beta_admin,
        json!({"value": {"seats": 1}}),
        &[],
    )
    .await
    .problem(403, "tenant_mismatch");
    let v = app
        .get("/v1/tenants/acme/config/limits/versions", &acme_member)
        .await
        .expect(200);
    assert_eq!(versions(&v.body), [2, 1]);
    assert_eq!(v.body["items"][1]["value"], json!({"seats": 7}));
    let r = app
        .post(
            "/v1/tenants/acme/config/limits/rollback",
            &acme_admin,
            json!({"version": 1}),
        )
        .await
        .expect(200);
    assert_eq!(
        (r.body["version"].clone(), r.body["value"].clone()),
        (json!(3), json!({"seats": 7}))
    );
    app.post(
        "/v1/tenants/acme/config/limits/rollback",
        &acme_admin,
        json!({"version": 9}),
    )
    .await
    .problem(404, "not_found");
    // A schema change that a held value would fail is refused, naming it.
    let tighter = json!({"schema": {"type": "object", "properties": {"seats": {"maximum": 6}}}});
    let r = put(&app, LIMITS, ADMIN, tighter, &[])
        .await
        .problem(400, "invalid_config");
    assert!(
        r.body["detail"].as_str().unwrap().contains("tenant 'acme'"),
        "{}",
        r.body
    );
    app.delete(LIMITS, ADMIN).await.problem(409, "conflict");
    // Every effective key.
    let all = app.get("/v1/tenants/acme/config", &acme_member).await.expect(200);
    assert_eq!(
        all.body["items"],
        json!([{"key": "limits", "value": {"seats": 7}, "source": "tenant", "version": 3}])
    );
    // Removing the tenant's layer brings the plan's default back; the removal is a version.
    app.delete("/v1/tenants/acme/config/limits", &acme_admin)
        .await
        .expect(204);
    assert_eq!(get("acme", acme_member.clone()).await.body["source"], "default");
    app.delete("/v1/tenants/acme/config/limits", &acme_admin)
        .await
        .problem(404, "not_found");
    let v = app
        .get("/v1/tenants/acme/config/limits/versions", &acme_member)
        .await
        .expect(200);
    assert_eq!(
        (
            v.body["items"][0]["version"].clone(),
            v.body["items"][0]["deleted"].clone()
        ),
        (json!(4), json!(true))
    );
    // Every change is an event: the tenant's in its chain, the plan's in the platform's.
    let audit = app
        .get("/v1/tenants/acme/audit?type=config.changed", ADMIN)
        .await
        .expect(200);
    assert_eq!(audit.body["items"].as_array().unwrap().len(), 4, "{}", audit.body);
    let platform = app.get("/v1/audit?type=config.changed", ADMIN).await.expect(200);
    assert!(platform.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["data"]["plan"] == "professional"));
}

async fn flags_give_every_reason_and_plan_features_are_flags(app: TestApp) {
    for (id, plan) in [("acme", "starter"), ("beta", "starter"), ("gamma", "professional")] {
        app.tenant(id, plan).await;
    }
    let flag = json!({"type": "string", "default": "plain", "plans": {"professional": "gold"},
                      "tenants": {"acme": "red"}, "rollout": {"percent": 100, "value": "blue"}});
    put(
        &app,
        "/v1/flags/theme",
        ADMIN,
        json!({"type": "string", "default": true}),
        &[],
    )
    .await
    .problem(400, "invalid_request");
    put(&app, "/v1/flags/bad%20key", ADMIN, flag.clone(), &[])
        .await
        .problem(400, "invalid_request");
    let (_, acme) = app.key("acme", "member").await;
    put(&app, "/v1/flags/theme", &acme, flag.clone(), &[])
        .await
        .problem(403, "forbidden");
    let r = put(&app, "/v1/flags/theme", ADMIN, flag.clone(), &[]).await.expect(201);
    assert_eq!(
        (r.body["version"].clone(), r.headers["etag"].clone()),
        (json!(1), "\"1\"".parse().unwrap())
    );
    let features = |t: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/v1/tenants/{t}/features"), ADMIN)
                .await
                .expect(200)
                .body
        }
    };
    let reason = |f: &Value, k: &str| (f[k]["value"].clone(), f[k]["reason"].clone(), f[k]["variant"].clone());
    assert_eq!(
        reason(&features("acme").await, "theme"),
        (json!("red"), json!("TARGETING_MATCH"), json!("tenant"))
    );
    assert_eq!(
        reason(&features("gamma").await, "theme"),
        (json!("gold"), json!("TARGETING_MATCH"), json!("plan"))
    );
    assert_eq!(
        reason(&features("beta").await, "theme"),
        (json!("blue"), json!("SPLIT"), json!("rollout"))
    );
    // A stale If-Match changes nothing; then the rollout shrinks to nobody.
    let none = json!({"type": "string", "default": "plain", "tenants": {"acme": "red"}, "rollout": {"percent": 0, "value": "blue"}});
    put(&app, "/v1/flags/theme", ADMIN, none.clone(), &[("if-match", "\"7\"")])
        .await
        .problem(409, "conflict");
    put(&app, "/v1/flags/theme", ADMIN, none, &[("if-match", "\"1\"")])
        .await
        .expect(200);
    assert_eq!(
        reason(&features("beta").await, "theme"),
        (json!("plain"), json!("DEFAULT"), json!("default"))
    );
    // The kill switch serves the default to everyone, named tenants too.
    let off = json!({"type": "string", "default": "plain", "enabled": false, "tenants": {"acme": "red"}});
    put(&app, "/v1/flags/theme", ADMIN, off, &[]).await.expect(200);
    assert_eq!(
        reason(&features("acme").await, "theme"),
        (json!("plain"), json!("DISABLED"), json!("default"))
    );
    // Plan features are boolean flags; the usage view still lists them as before.
    let g = features("gamma").await;
    assert_eq!(
        (g["sso"]["value"].clone(), g["exports"]["value"].clone()),
        (json!(true), json!(true))
    );
    let b = features("beta").await;
    assert_eq!(
        (b["sso"]["value"].clone(), b["sso"]["reason"].clone()),
        (json!(false), json!("DEFAULT"))
    );
    assert_eq!(b["exports"]["value"], true);
    let usage = app.get("/v1/tenant/usage", &acme).await.expect(200);
    assert_eq!(usage.body["features"], json!({"exports": true}));
    // A rollout by targeting key needs one.
    let by_user =
        json!({"type": "boolean", "default": false, "rollout": {"percent": 50, "value": true, "by": "targeting_key"}});
    put(&app, "/v1/flags/beta-search", ADMIN, by_user, &[])
        .await
        .expect(201);
    let f = features("beta").await;
    assert_eq!(
        (
            f["beta-search"]["reason"].clone(),
            f["beta-search"]["errorCode"].clone()
        ),
        (json!("ERROR"), json!("TARGETING_KEY_MISSING"))
    );
    // usr_43's bucket for beta-search is 426 (docs/config.md's vectors): in.
    let f = app
        .get("/v1/tenants/beta/features?targeting_key=usr_43", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(f["beta-search"]["reason"], "SPLIT");
    // Listing, reading, deleting; each change a platform event.
    let list = app.get("/v1/flags", ADMIN).await.expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    app.delete("/v1/flags/theme", ADMIN).await.expect(204);
    app.get("/v1/flags/theme", ADMIN).await.problem(404, "not_found");
    assert!(features("acme").await.get("theme").is_none());
    let events = app.get("/v1/audit?type=flag.changed", ADMIN).await.expect(200).body;
    assert_eq!(events["items"].as_array().unwrap().len(), 5, "{events}");
}

async fn ofrep(app: &TestApp, path: &str, token: &str, body: Value, headers: &[(&str, &str)]) -> crate::common::Reply {
    app.call("POST", path, Some(token), Some(body), headers).await
}

async fn ofrep_answers_as_the_protocol_says(app: TestApp) {
    app.tenant("acme", "starter").await;
    app.tenant("beta", "starter").await;
    let (_, acme) = app.key("acme", "member").await;
    let (_, beta) = app.key("beta", "member").await;
    put(
        &app,
        "/v1/flags/new-ui",
        ADMIN,
        json!({"type": "boolean", "default": false, "tenants": {"acme": true}}),
        &[],
    )
    .await
    .expect(201);
    put(&app, "/v1/flags/banner", ADMIN, json!({"type": "string", "default": "hello", "rollout": {"percent": 100, "value": "sale", "by": "targeting_key"}}), &[])
        .await
        .expect(201);
    let one = |t: &str| format!("/ofrep/v1/evaluate/flags/{t}");
    let r = ofrep(&app, &one("new-ui"), &acme, json!({"context": {}}), &[])
        .await
        .expect(200);
    assert_eq!(
        r.body,
        json!({"key": "new-ui", "value": true, "reason": "TARGETING_MATCH", "variant": "tenant", "metadata": {}})
    );
    // The tenant is the credential's: beta gets its own answer. Each case: flag, caller,
    // body, status, and two members of the answer.
    let cases = [
        (
            "new-ui",
            &beta,
            json!({"context": {"targetingKey": "u1"}}),
            200,
            ("value", json!(false)),
            ("reason", json!("DEFAULT")),
        ),
        (
            "nope",
            &acme,
            json!({"context": {}}),
            404,
            ("key", json!("nope")),
            ("errorCode", json!("FLAG_NOT_FOUND")),
        ),
        (
            "banner",
            &acme,
            json!({"context": {}}),
            400,
            ("key", json!("banner")),
            ("errorCode", json!("TARGETING_KEY_MISSING")),
        ),
        (
            "banner",
            &acme,
            json!({"context": {"targetingKey": "u1"}}),
            200,
            ("value", json!("sale")),
            ("reason", json!("SPLIT")),
        ),
        (
            "banner",
            &acme,
            json!({"context": {"targetingKey": 5}}),
            400,
            ("key", json!("banner")),
            ("errorCode", json!("INVALID_CONTEXT")),
        ),
        (
            "banner",
            &acme,
            json!({"context": []}),
            400,
            ("key", json!("banner")),
            ("errorCode", json!("INVALID_CONTEXT")),
        ),
        (
            "banner",
            &acme,
            json!(null),
            400,
            ("key", json!("banner")),
            ("errorCode", json!("TARGETING_KEY_MISSING")),
        ),
    ];
    for (flag, token, body, status, (k1, v1), (k2, v2)) in cases {
        let r = ofrep(&app, &one(flag), token, body.clone(), &[]).await.expect(status);
        assert_eq!((&r.body[k1], &r.body[k2]), (&v1, &v2), "{flag} {body}: {}", r.body);
    }
    // Without a credential: 401 as everywhere.
    app.call("POST", &one("new-ui"), None, Some(json!({})), &[])
        .await
        .problem(401, "unauthenticated");
    // Bulk: every flag, an ETag, 304 while nothing changed.
    let bulk = "/ofrep/v1/evaluate/flags";
    let r = ofrep(&app, bulk, &acme, json!({"context": {"targetingKey": "u1"}}), &[])
        .await
        .expect(200);
    let flags = r.body["flags"].as_array().unwrap();
    let keys: Vec<&str> = flags.iter().map(|f| f["key"].as_str().unwrap()).collect();
    // Every plan's features are boolean flags too (true on the plans that list them).
    assert_eq!(
        keys,
        [
            "banner",
            "custom_roles",
            "dedicated_upstream",
            "exports",
            "new-ui",
            "sso"
        ]
    );
    assert_eq!(flags[3]["value"], true, "starter lists exports");
    assert_eq!(flags[5]["value"], false, "starter does not list sso");
    let tag = r.headers["etag"].to_str().unwrap().to_string();
    let r = ofrep(
        &app,
        bulk,
        &acme,
        json!({"context": {"targetingKey": "u1"}}),
        &[("if-none-match", &tag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.headers["etag"].to_str().unwrap(), tag);
    // Another subject's answer differs; so does the answer after a change.
    let r = ofrep(&app, bulk, &acme, json!({}), &[("if-none-match", &tag)])
        .await
        .expect(200);
    let missing = r.body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "banner")
        .unwrap()
        .clone();
    assert_eq!(missing["errorCode"], "TARGETING_KEY_MISSING");
    put(
        &app,
        "/v1/flags/new-ui",
        ADMIN,
        json!({"type": "boolean", "default": false}),
        &[],
    )
    .await
    .expect(200);
    let r = ofrep(
        &app,
        bulk,
        &acme,
        json!({"context": {"targetingKey": "u1"}}),
        &[("if-none-match", &tag)],
    )
    .await
    .expect(200);
    assert_ne!(r.headers["etag"].to_str().unwrap(), tag);

    // OpenFeature's own OFREP provider reads the same answers.
    use open_feature::provider::FeatureProvider;
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {acme}").parse().unwrap());
    let provider = open_feature_ofrep::OfrepProvider::new(open_feature_ofrep::OfrepOptions {
        base_url: app.url.clone(),
        headers,
        ..Default::default()
    })
    .await
    .unwrap();
    let ctx = open_feature::EvaluationContext::default().with_targeting_key("u1");
    let b = provider.resolve_bool_value("new-ui", &ctx).await.unwrap();
    assert!(!b.value);
    let s = provider.resolve_string_value("banner", &ctx).await.unwrap();
    assert_eq!(s.value, "sale");
    // (This provider reports every reason as STATIC; the variant is tenantd's.)
    assert_eq!(s.variant.as_deref(), Some("rollout"));
    assert!(provider.resolve_bool_value("nope", &ctx).await.is_err());
}

async fn platform_roles_grant_app_permissions(app: TestApp) {
    app.tenant("acme", "starter").await;
    let (_, member) = app.key("acme", "member").await;
    let (_, viewer) = app.key("acme", "viewer").await;
    let may = |token: String, p: &'static str| {
        let app = &app;
        async move {
            app.post("/v1/authorize", &token, json!({"tenant_id": "acme", "permission": p}))
                .await
                .expect(200)
                .body["allowed"]
                .clone()
        }
    };
    assert_eq!(may(member.clone(), "reports:write").await, json!(true));
    assert_eq!(may(viewer.clone(), "reports:write").await, json!(false));
    assert_eq!(may(member.clone(), "keys:manage").await, json!(false));
    let roles = app.get("/v1/tenants/acme/roles", &member).await.expect(200).body;
    let m = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "member")
        .unwrap()
        .clone();
    assert!(m["permissions"].as_array().unwrap().contains(&json!("reports:write")));
}

/// A service's handler: what its `TenantContext` says of flag `wide` and key `limits`.
async fn probe(ctx: tenantd_edge::TenantContext) -> axum::Json<Value> {
    let flag = ctx.flag("wide").map(|r| r.map(|e| (e.value.clone(), e.reason)).ok());
    axum::Json(json!({
        "wide": flag,
        "enabled": ctx.enabled("wide"),
        "limits": ctx.config("limits").map(|e| json!({"value": e.value, "source": e.source})),
    }))
}

/// The tower layer's `TenantContext` answers flags and configuration from the node's
/// snapshot, with the caller as the targeting key; against a remote tenantd, from its
/// answer.
async fn context_evaluates_in_process(backend: Backend) {
    let (sqlite, dir) = tenantd_store::testing::fresh_sqlite();
    let db = match backend {
        Backend::Sqlite => sqlite,
        Backend::Postgres => match tenantd_store::testing::fresh_postgres("config context").await {
            Some(u) => u,
            None => return,
        },
    };
    let extra = axum::Router::new().route("/app/probe", axum::routing::get(probe));
    let app = start_with(db, dir, String::new(), extra).await;
    app.tenant("acme", "starter").await;
    let (_, key) = app.key("acme", "member").await;
    limits_and_wide(
        &app,
        3,
        json!({"type": "boolean", "default": false, "plans": {"starter": true}}),
    )
    .await;
    let r = app.get("/app/probe", &key).await.expect(200).body;
    assert_eq!(r["wide"], json!([true, "TARGETING_MATCH"]));
    assert_eq!(r["enabled"], true);
    assert_eq!(r["limits"], json!({"value": 3, "source": "default"}));
    put(&app, "/v1/tenants/acme/config/limits", ADMIN, json!({"value": 4}), &[])
        .await
        .expect(200);
    let r = app.get("/app/probe", &key).await.expect(200).body;
    assert_eq!(r["limits"], json!({"value": 4, "source": "tenant"}));
    // A service deciding through this tenantd gets the same answers when it asks for
    // them, and none when it does not.
    for (with, wide, limits) in [
        (
            true,
            json!([true, "TARGETING_MATCH"]),
            json!({"value": 4, "source": "tenant"}),
        ),
        (false, Value::Null, Value::Null),
    ] {
        let mut remote = tenantd_edge::RemoteEdge::new(&app.url).unwrap();
        if with {
            remote = remote.with_settings();
        }
        let svc = axum::Router::new()
            .route("/app/probe", axum::routing::get(probe))
            .layer(tenantd_edge::EdgeLayer::remote(remote));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/app/probe", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, svc).await });
        let r = reqwest::Client::new().get(url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r: Value = r.json().await.unwrap();
        assert_eq!(
            (r["wide"].clone(), r["limits"].clone()),
            (wide, limits),
            "settings asked: {with}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_tower_layer_context_evaluates_in_process() {
    context_evaluates_in_process(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_tower_layer_context_evaluates_in_process() {
    context_evaluates_in_process(Backend::Postgres).await;
}

/// Polls `check` on node B until it holds, then asserts it took under a second (and
/// prints how long).
async fn seen_within_a_second(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: never seen on the other node"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    eprintln!("{what}: seen on node B after {took:?}");
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
}

/// An integer key `limits` with a default, and a boolean flag `wide`.
async fn limits_and_wide(app: &TestApp, default: i64, wide: Value) {
    let schema = json!({"schema": {"type": "integer"}, "default": default});
    put(app, LIMITS, ADMIN, schema, &[]).await.expect(201);
    put(app, "/v1/flags/wide", ADMIN, wide, &[]).await.expect(201);
}

/// A member's request to `app`: its status and JSON body.
async fn as_member(app: &TestApp, method: &str, path: &str, key: &str) -> (u16, Value) {
    let body = (method == "POST").then(|| json!({}));
    let r = app.call(method, path, Some(key), body, &[]).await;
    (r.status.as_u16(), r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_change_on_one_node_is_seen_on_another_within_a_second() {
    let Some(a) = spawn_app(Backend::Postgres, "").await else {
        return;
    };
    let b = a.second_node().await;
    a.tenant("acme", "starter").await;
    let (_, key) = a.key("acme", "member").await;
    limits_and_wide(&a, 1, json!({"type": "boolean", "default": false})).await;
    let flag = |f: &'static str| {
        let (b, key) = (&b, key.clone());
        async move { as_member(b, "POST", &format!("/ofrep/v1/evaluate/flags/{f}"), &key).await }
    };
    let limits = || async { as_member(&b, "GET", "/v1/tenants/acme/config/limits", &key).await.1["value"].clone() };
    // B sees the new flag and key (as it sees every change), and from then on has the
    // tenant and the settings cached before each change below.
    seen_within_a_second("a new flag", async || flag("wide").await.1["value"] == false).await;
    seen_within_a_second("a new key's default", async || limits().await == 1).await;
    // A flag, a tenant's value, a plan's value and a plan's features, each changed on A.
    put(
        &a,
        "/v1/flags/wide",
        ADMIN,
        json!({"type": "boolean", "default": true}),
        &[],
    )
    .await
    .expect(200);
    seen_within_a_second("a flag", async || flag("wide").await.1["value"] == true).await;
    put(&a, "/v1/tenants/acme/config/limits", ADMIN, json!({"value": 2}), &[])
        .await
        .expect(200);
    seen_within_a_second("a tenant's value", async || limits().await == 2).await;
    a.delete("/v1/tenants/acme/config/limits", ADMIN).await.expect(204);
    put(&a, "/v1/plans/starter/config/limits", ADMIN, json!({"value": 3}), &[])
        .await
        .expect(200);
    seen_within_a_second("a plan's value", async || limits().await == 3).await;
    assert_eq!(flag("beta-ui").await.0, 404);
    a.patch("/v1/plans/starter", ADMIN, json!({"features": ["exports", "beta-ui"]}))
        .await
        .expect(200);
    seen_within_a_second("a plan's features", async || flag("beta-ui").await.1["value"] == true).await;
}
