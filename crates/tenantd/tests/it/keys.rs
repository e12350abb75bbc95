use crate::common::{TestApp, ADMIN};
use serde_json::json;

crate::both! {
    keys_are_shown_once_and_revoked_at_once;
    key_expiry_and_limits;
    no_caller_gets_a_key_stronger_than_it_could_grant;
}

async fn keys_are_shown_once_and_revoked_at_once(app: TestApp) {
    app.tenant("acme", "free").await;
    let k = app
        .post("/v1/tenants/acme/keys", ADMIN, json!({"name": "ci"}))
        .await
        .expect(201)
        .body;
    let (id, secret) = (
        k["id"].as_str().unwrap().to_string(),
        k["key"].as_str().unwrap().to_string(),
    );
    assert!(id.starts_with("key_") && secret.starts_with("tdk_"));
    assert!(secret.starts_with(k["prefix"].as_str().unwrap()));
    assert_eq!(k["role"], "member");
    assert!(k.get("hash").is_none());
    let me = app.get("/v1/me", &secret).await.expect(200).body;
    assert_eq!(
        me,
        json!({"type": "api_key", "id": id, "tenant_id": "acme", "tenants": [{"tenant_id": "acme", "role": "member"}]})
    );
    // Listing never shows the secret (nor its hash) and reports last use.
    let list = app.get("/v1/tenants/acme/keys", ADMIN).await.expect(200).body;
    let listed = &list["items"][0];
    assert_eq!(listed["id"], id.as_str());
    assert!(listed.get("key").is_none() && listed.get("hash").is_none());
    assert!(!list.to_string().contains(&secret[12..]));
    assert!(listed["last_used_at"].is_string(), "last_used_at after use: {listed}");
    // A wrong secret with a real id is refused.
    let other = if secret.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{other}", &secret[..secret.len() - 1]);
    app.get("/v1/me", &forged).await.problem(401, "unauthenticated");
    // Rotation: old secret dead, new one works, same id.
    let r = app
        .post(&format!("/v1/tenants/acme/keys/{id}/rotate"), ADMIN, json!({}))
        .await
        .expect(200)
        .body;
    let new_secret = r["key"].as_str().unwrap().to_string();
    assert_eq!(r["id"], id.as_str());
    app.get("/v1/me", &secret).await.problem(401, "unauthenticated");
    app.get("/v1/me", &new_secret).await.expect(200);
    // Revocation answers 401 from the next request on.
    app.delete(&format!("/v1/tenants/acme/keys/{id}"), ADMIN)
        .await
        .expect(204);
    let r = app.get("/v1/me", &new_secret).await.problem(401, "unauthenticated");
    assert!(r.body["detail"].as_str().unwrap().contains("revoked"));
    app.post(&format!("/v1/tenants/acme/keys/{id}/rotate"), ADMIN, json!({}))
        .await
        .problem(409, "conflict");
    assert!(app.get("/v1/tenants/acme/keys", ADMIN).await.body["items"][0]["revoked_at"].is_string());
    // Another tenant's key id is not found here.
    app.tenant("beta", "free").await;
    let (beta_key, _) = app.key("beta", "member").await;
    app.delete(&format!("/v1/tenants/acme/keys/{beta_key}"), ADMIN)
        .await
        .problem(404, "not_found");
    app.delete("/v1/tenants/acme/keys/key_nope", ADMIN)
        .await
        .problem(404, "not_found");
    // Keys are audited.
    let audit = app
        .get("/v1/tenants/acme/audit?action=key.revoked", ADMIN)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"][0]["data"]["key_id"], id.as_str());
}

async fn key_expiry_and_limits(app: TestApp) {
    app.tenant("acme", "free").await;
    app.post(
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await
    .problem(400, "invalid_request");
    app.post(
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"name": "x", "expires_at": "tomorrow"}),
    )
    .await
    .problem(400, "invalid_request");
    app.post("/v1/tenants/acme/keys", ADMIN, json!({"name": ""}))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/tenants/acme/keys", ADMIN, json!({"name": "x", "role": "wizard"}))
        .await
        .problem(404, "not_found");
    // Key limits may only narrow the tenant's (free: 100 api_calls per hour).
    app.post(
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"name": "wide", "limits": [{"resource": "api_calls", "window": "hour", "limit": 500}]}),
    )
    .await
    .problem(400, "invalid_request");
    app.post(
        "/v1/tenants/acme/keys",
        ADMIN,
        json!({"name": "unlimited", "limits": [{"resource": "api_calls", "window": "hour", "limit": null}]}),
    )
    .await
    .problem(400, "invalid_request");
    let k = app.post("/v1/tenants/acme/keys", ADMIN, json!({"name": "narrow", "limits": [{"resource": "api_calls", "window": "hour", "limit": 10}, {"resource": "api_calls", "window": "second", "limit": 2}]})).await.expect(201).body;
    assert_eq!(k["limits"][0]["limit"], 10);
    // Expiry: a key that expires in 2 s works, then answers 401.
    let soon = tenantd_core::ts::format(tenantd_core::now_secs() + 2);
    let k = app
        .post(
            "/v1/tenants/acme/keys",
            ADMIN,
            json!({"name": "brief", "expires_at": soon}),
        )
        .await
        .expect(201)
        .body;
    let secret = k["key"].as_str().unwrap();
    app.get("/v1/me", secret).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = app.get("/v1/me", secret).await.problem(401, "unauthenticated");
    assert!(r.body["detail"].as_str().unwrap().contains("expired"));
}

/// Two nodes on one PostgreSQL catalog: a revocation or suspension on one is seen by the
/// other at once (cache invalidation over LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_node() {
    let Some(a) = crate::common::spawn_app(crate::common::Backend::Postgres, "").await else {
        return;
    };
    let b = crate::common::start_with(a.db_url.clone(), a.data_dir.clone(), String::new(), axum::Router::new()).await;
    a.tenant("acme", "free").await;
    let (id, secret) = a.key("acme", "member").await;
    // Node b caches the key and the tenant.
    b.get("/v1/me", &secret).await.expect(200);
    b.get("/v1/tenants/acme", &secret).await.expect(200);
    a.delete(&format!("/v1/tenants/acme/keys/{id}"), ADMIN)
        .await
        .expect(204);
    let refused = eventually(|| async { b.get("/v1/me", &secret).await.status.as_u16() == 401 }).await;
    assert!(refused, "node b still accepts a key revoked on node a");
    let (_, secret) = a.key("acme", "member").await;
    b.get("/v1/tenants/acme", &secret).await.expect(200);
    a.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "r"}))
        .await
        .expect(200);
    let suspended = eventually(|| async { b.get("/v1/tenants/acme", &secret).await.status.as_u16() == 403 }).await;
    assert!(suspended, "node b does not see the suspension");
}

/// Polls for up to two seconds.
async fn eventually<F, Fut>(f: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..40 {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The finding: an admin key could rotate an owner key and receive the owner's new
/// secret, then add owners and delete the tenant. Creating or rotating a key whose role
/// the caller could not grant is `403 forbidden`, and changes nothing.
async fn no_caller_gets_a_key_stronger_than_it_could_grant(app: TestApp) {
    app.tenant("acme", "free").await;
    let (owner_id, owner) = app.key("acme", "owner").await;
    let (_, admin) = app.key("acme", "admin").await;
    let (member_id, member) = app.key("acme", "member").await;
    let r = app
        .post(&format!("/v1/tenants/acme/keys/{owner_id}/rotate"), &admin, json!({}))
        .await
        .problem(403, "forbidden");
    assert!(!r.body.to_string().contains("tdk_"), "{}", r.body);
    // The owner's secret still works, unchanged.
    app.get("/v1/me", &owner).await.expect(200);
    app.post("/v1/tenants/acme/keys", &admin, json!({"name": "x", "role": "owner"}))
        .await
        .problem(403, "forbidden");
    // A custom role with everything is more than an admin holds too.
    app.post(
        "/v1/tenants/acme/roles",
        ADMIN,
        json!({"name": "everything", "permissions": ["*"]}),
    )
    .await
    .expect(201);
    let (all_id, _) = app.key("acme", "everything").await;
    app.post(&format!("/v1/tenants/acme/keys/{all_id}/rotate"), &admin, json!({}))
        .await
        .problem(403, "forbidden");
    // What the admin could grant, it may rotate; the owner and the operator rotate all.
    let r = app
        .post(&format!("/v1/tenants/acme/keys/{member_id}/rotate"), &admin, json!({}))
        .await
        .expect(200);
    app.get("/v1/me", &member).await.problem(401, "unauthenticated");
    app.get("/v1/me", r.body["key"].as_str().unwrap()).await.expect(200);
    app.post(&format!("/v1/tenants/acme/keys/{all_id}/rotate"), &owner, json!({}))
        .await
        .expect(200);
    app.post(&format!("/v1/tenants/acme/keys/{owner_id}/rotate"), ADMIN, json!({}))
        .await
        .expect(200);
    // The admin never became an owner: it cannot add one.
    app.post(
        "/v1/tenants/acme/members",
        &admin,
        json!({"email": "new@acme.test", "role": "owner"}),
    )
    .await
    .problem(403, "forbidden");
}
