use crate::common::{TestApp, ADMIN};
use serde_json::json;

crate::both! {
    members_and_the_last_owner;
    roles_only_narrow;
    custom_roles_and_workspaces;
    a_guest_stays_read_only_inside_its_workspaces;
}

async fn members_and_the_last_owner(app: TestApp) {
    app.tenant("acme", "free").await;
    let members = app.get("/v1/tenants/acme/members", ADMIN).await.expect(200).body;
    let owner_id = members["items"][0]["user_id"].as_str().unwrap().to_string();
    let m = app
        .post(
            "/v1/tenants/acme/members",
            ADMIN,
            json!({"email": "Bob@Acme.test", "role": "member"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        (m["email"].as_str(), m["role"].as_str()),
        (Some("bob@acme.test"), Some("member"))
    );
    let bob = m["user_id"].as_str().unwrap().to_string();
    app.post(
        "/v1/tenants/acme/members",
        ADMIN,
        json!({"email": "bob@acme.test", "role": "viewer"}),
    )
    .await
    .problem(409, "conflict");
    app.post(
        "/v1/tenants/acme/members",
        ADMIN,
        json!({"email": "c@acme.test", "role": "wizard"}),
    )
    .await
    .problem(404, "not_found");
    app.post("/v1/tenants/acme/members", ADMIN, json!({"email": "c@acme.test"}))
        .await
        .problem(400, "invalid_request");
    // The last owner can be neither demoted nor removed.
    app.patch(
        &format!("/v1/tenants/acme/members/{owner_id}"),
        ADMIN,
        json!({"role": "admin"}),
    )
    .await
    .problem(409, "last_owner");
    app.delete(&format!("/v1/tenants/acme/members/{owner_id}"), ADMIN)
        .await
        .problem(409, "last_owner");
    // With a second owner, the first can go.
    app.patch(
        &format!("/v1/tenants/acme/members/{bob}"),
        ADMIN,
        json!({"role": "owner"}),
    )
    .await
    .expect(200);
    app.patch(
        &format!("/v1/tenants/acme/members/{owner_id}"),
        ADMIN,
        json!({"role": "viewer"}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/tenants/acme/members/{bob}"), ADMIN)
        .await
        .problem(409, "last_owner");
    app.delete(&format!("/v1/tenants/acme/members/{owner_id}"), ADMIN)
        .await
        .expect(204);
    app.delete(&format!("/v1/tenants/acme/members/{owner_id}"), ADMIN)
        .await
        .problem(404, "not_found");
    let members = app.get("/v1/tenants/acme/members", ADMIN).await.expect(200).body;
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    // A user belongs to many tenants, one role in each.
    // Starter: room for the members paging needs (free allows 5).
    app.tenant("beta", "starter").await;
    app.post(
        "/v1/tenants/beta/members",
        ADMIN,
        json!({"email": "bob@acme.test", "role": "viewer"}),
    )
    .await
    .expect(201);
    let token = app.token_for("acme", &bob).await;
    let me = app.get("/v1/me", &token).await.expect(200).body;
    assert_eq!(me["type"], "user");
    assert_eq!(
        me["tenants"],
        json!([{"tenant_id": "acme", "role": "owner"}, {"tenant_id": "beta", "role": "viewer"}])
    );
    // Pages.
    for i in 0..5 {
        app.post(
            "/v1/tenants/beta/members",
            ADMIN,
            json!({"email": format!("u{i}@beta.test"), "role": "viewer"}),
        )
        .await
        .expect(201);
    }
    let p1 = app
        .get("/v1/tenants/beta/members?limit=4", ADMIN)
        .await
        .expect(200)
        .body;
    let p2 = app
        .get(
            &format!(
                "/v1/tenants/beta/members?limit=4&cursor={}",
                p1["next_cursor"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        p1["items"].as_array().unwrap().len() + p2["items"].as_array().unwrap().len(),
        7
    );
    assert!(p2.get("next_cursor").is_none());
}

async fn roles_only_narrow(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, admin) = app.user("acme", "a@acme.test", "admin").await;
    let (viewer_id, viewer) = app.user("acme", "v@acme.test", "viewer").await;
    // Admins manage members but not owners.
    app.post(
        "/v1/tenants/acme/members",
        &admin,
        json!({"email": "m@acme.test", "role": "member"}),
    )
    .await
    .expect(201);
    app.post(
        "/v1/tenants/acme/members",
        &admin,
        json!({"email": "o@acme.test", "role": "owner"}),
    )
    .await
    .problem(403, "forbidden");
    let owner_id = app.owner_id("acme").await;
    app.patch(
        &format!("/v1/tenants/acme/members/{owner_id}"),
        &admin,
        json!({"role": "member"}),
    )
    .await
    .problem(403, "forbidden");
    app.patch(
        &format!("/v1/tenants/acme/members/{viewer_id}"),
        &admin,
        json!({"role": "owner"}),
    )
    .await
    .problem(403, "forbidden");
    // Viewers read but change nothing.
    app.get("/v1/tenants/acme/members", &viewer).await.expect(200);
    app.post(
        "/v1/tenants/acme/members",
        &viewer,
        json!({"email": "x@acme.test", "role": "viewer"}),
    )
    .await
    .problem(403, "forbidden");
    app.post("/v1/tenants/acme/keys", &viewer, json!({"name": "k"}))
        .await
        .problem(403, "forbidden");
    // Keys cannot be stronger than their maker.
    app.post("/v1/tenants/acme/keys", &admin, json!({"name": "k", "role": "owner"}))
        .await
        .problem(403, "forbidden");
    app.post("/v1/tenants/acme/keys", &admin, json!({"name": "k", "role": "admin"}))
        .await
        .expect(201);
}

async fn custom_roles_and_workspaces(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, admin) = app.user("acme", "a@acme.test", "admin").await;
    let roles = app.get("/v1/tenants/acme/roles", &admin).await.expect(200).body;
    assert_eq!(roles["items"].as_array().unwrap().len(), 5);
    let r = app
        .post(
            "/v1/tenants/acme/roles",
            &admin,
            json!({"name": "reporter", "permissions": ["reports:write", "records:read"]}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(r["permissions"], json!(["reports:write", "records:read"]));
    app.post(
        "/v1/tenants/acme/roles",
        &admin,
        json!({"name": "reporter", "permissions": ["reports:read"]}),
    )
    .await
    .problem(409, "conflict");
    app.post(
        "/v1/tenants/acme/roles",
        &admin,
        json!({"name": "owner", "permissions": ["reports:read"]}),
    )
    .await
    .problem(409, "conflict");
    app.post(
        "/v1/tenants/acme/roles",
        &admin,
        json!({"name": "bad", "permissions": ["no colon"]}),
    )
    .await
    .problem(400, "invalid_request");
    app.post(
        "/v1/tenants/acme/roles",
        &admin,
        json!({"name": "sneaky", "permissions": ["owners:manage"]}),
    )
    .await
    .problem(403, "forbidden");
    // A key with the custom role gets exactly its permissions.
    let k = app
        .post(
            "/v1/tenants/acme/keys",
            &admin,
            json!({"name": "rep", "role": "reporter"}),
        )
        .await
        .expect(201)
        .body;
    let key = k["key"].as_str().unwrap();
    let may = |perm: &'static str| json!({"tenant_id": "acme", "permission": perm});
    assert_eq!(
        app.post("/v1/authorize", key, may("reports:write"))
            .await
            .expect(200)
            .body,
        json!({"allowed": true, "role": "reporter"})
    );
    assert_eq!(
        app.post("/v1/authorize", key, may("members:manage"))
            .await
            .expect(200)
            .body["allowed"],
        false
    );
    app.get("/v1/tenants/acme/members", key).await.problem(403, "forbidden");
    app.delete("/v1/tenants/acme/roles/reporter", &admin)
        .await
        .problem(409, "conflict");
    app.delete(&format!("/v1/tenants/acme/keys/{}", k["id"].as_str().unwrap()), &admin)
        .await
        .expect(204);
    app.delete("/v1/tenants/acme/roles/reporter", &admin).await.expect(204);
    app.delete("/v1/tenants/acme/roles/member", &admin)
        .await
        .problem(409, "conflict");
    app.delete("/v1/tenants/acme/roles/reporter", &admin)
        .await
        .problem(404, "not_found");

    // Workspaces, with a guest who sees only its own.
    let ws = app
        .post(
            "/v1/tenants/acme/workspaces",
            &admin,
            json!({"id": "design", "name": "Design"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(ws["members"], json!([]));
    app.post("/v1/tenants/acme/workspaces", &admin, json!({"id": "design"}))
        .await
        .problem(409, "conflict");
    app.post("/v1/tenants/acme/workspaces", &admin, json!({"id": "bad id"}))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/tenants/acme/workspaces", &admin, json!({"id": "ops"}))
        .await
        .expect(201);
    let (guest_id, guest) = app.user("acme", "g@acme.test", "guest").await;
    app.post(
        "/v1/tenants/acme/workspaces/design/members",
        &admin,
        json!({"email": "stranger@else.test", "role": "viewer"}),
    )
    .await
    .problem(404, "not_found");
    let wm = app
        .post(
            "/v1/tenants/acme/workspaces/design/members",
            &admin,
            json!({"email": "g@acme.test", "role": "viewer"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(wm["user_id"], guest_id.as_str());
    let seen = app.get("/v1/tenants/acme/workspaces", &guest).await.expect(200).body;
    assert_eq!(seen["items"].as_array().unwrap().len(), 1);
    assert_eq!(seen["items"][0]["id"], "design");
    app.get("/v1/tenants/acme/workspaces/ops", &guest)
        .await
        .problem(404, "not_found");
    assert_eq!(
        app.get("/v1/tenants/acme/workspaces", &admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let ask = |ws: &'static str| json!({"tenant_id": "acme", "permission": "records:read", "workspace_id": ws});
    assert_eq!(
        app.post("/v1/authorize", &guest, ask("design")).await.body["allowed"],
        true
    );
    assert_eq!(
        app.post("/v1/authorize", &guest, ask("ops")).await.body["allowed"],
        false
    );
    assert_eq!(
        app.post(
            "/v1/authorize",
            &guest,
            json!({"tenant_id": "acme", "permission": "records:read"})
        )
        .await
        .body["allowed"],
        false
    );
    app.post("/v1/tenants/acme/workspaces", &guest, json!({"id": "mine"}))
        .await
        .problem(403, "forbidden");
    let ws = app
        .patch(
            "/v1/tenants/acme/workspaces/design",
            &admin,
            json!({"name": "Design 2"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(ws["name"], "Design 2");
    app.delete("/v1/tenants/acme/workspaces/design", &admin)
        .await
        .expect(204);
    app.get("/v1/tenants/acme/workspaces/design", &admin)
        .await
        .problem(404, "not_found");
}

/// The finding: a guest could be given `admin` inside a workspace, where a guest is
/// read-only. It is refused, and a member demoted to guest keeps only reads there.
async fn a_guest_stays_read_only_inside_its_workspaces(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, admin) = app.key("acme", "admin").await;
    app.post("/v1/tenants/acme/workspaces", &admin, json!({"id": "design"}))
        .await
        .expect(201);
    let (_, guest) = app.user("acme", "g@acme.test", "guest").await;
    let add = |email: &'static str, role: &'static str| {
        app.post(
            "/v1/tenants/acme/workspaces/design/members",
            &admin,
            json!({"email": email, "role": role}),
        )
    };
    for role in ["admin", "member", "owner"] {
        let r = add("g@acme.test", role).await;
        let r = if role == "owner" {
            r.problem(403, "forbidden")
        } else {
            r.problem(400, "invalid_request")
        };
        assert!(r.body["detail"].as_str().unwrap().contains(role), "{}", r.body);
    }
    // By the operator too: it is the guest's limit, not the caller's.
    app.post(
        "/v1/tenants/acme/workspaces/design/members",
        ADMIN,
        json!({"email": "g@acme.test", "role": "admin"}),
    )
    .await
    .problem(400, "invalid_request");
    add("g@acme.test", "viewer").await.expect(201);
    assert_eq!(may(&app, &guest, "records:read").await, true);
    assert_eq!(may(&app, &guest, "records:write").await, false);
    // A member with admin in the workspace, demoted to guest: reads only, there too.
    let (bob_id, _) = app.user("acme", "bob@acme.test", "member").await;
    add("bob@acme.test", "admin").await.expect(201);
    let bob = app.token_for("acme", &bob_id).await;
    assert_eq!(may(&app, &bob, "records:write").await, true);
    app.patch(
        &format!("/v1/tenants/acme/members/{bob_id}"),
        ADMIN,
        json!({"role": "guest"}),
    )
    .await
    .expect(200);
    let bob = app.token_for("acme", &bob_id).await;
    assert_eq!(may(&app, &bob, "records:read").await, true);
    assert_eq!(may(&app, &bob, "records:write").await, false);
    assert_eq!(may(&app, &bob, "members:manage").await, false);
}

/// `/v1/authorize`'s answer for `token` doing `permission` in workspace `design` of acme.
async fn may(app: &TestApp, token: &str, permission: &str) -> serde_json::Value {
    app.post(
        "/v1/authorize",
        token,
        json!({"tenant_id": "acme", "permission": permission, "workspace_id": "design"}),
    )
    .await
    .expect(200)
    .body["allowed"]
        .clone()
}
