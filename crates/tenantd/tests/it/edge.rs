//! `POST /v1/edge/decide`: tenantd deciding a request another service received (the
//! remote tower layer's endpoint), on SQLite and PostgreSQL.
use crate::common::{TestApp, ADMIN};
use serde_json::{json, Value};
use tenantd_core::Window;

crate::both! {
    the_edge_decides_for_another_service_with_tenantds_rules;
    malformed_decision_requests_are_refused_and_count_nothing;
}

async fn decide(app: &TestApp, body: Value) -> Value {
    app.call("POST", "/v1/edge/decide", None, Some(body), &[])
        .await
        .expect(200)
        .body
}

async fn calls_this_hour(app: &TestApp, tenant: &str) -> u64 {
    app.used(tenant, "api_calls", Window::Hour).await
}

async fn the_edge_decides_for_another_service_with_tenantds_rules(app: TestApp) {
    app.tenant("acme", "professional").await;
    app.tenant("globex", "professional").await;
    let (key_id, key) = app.key("acme", "viewer").await;
    let req = |extra: Value| {
        let mut b = json!({"request_id": "req_0123abcd", "path": "/notes", "bearer": key});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };

    // Admitted: the principal, the tenant (from the key), the role, the limit and its headers.
    let d = decide(&app, req(json!({}))).await;
    assert_eq!(d["decision"], "admitted", "{d}");
    let c = &d["context"];
    assert_eq!(
        c["principal"],
        json!({"kind": "key", "id": key_id, "tenant_id": "acme"})
    );
    assert_eq!(
        (&c["tenant"]["id"], &c["tenant"]["plan"], &c["tenant"]["status"]),
        (&json!("acme"), &json!("professional"), &json!("active"))
    );
    assert_eq!(
        c["role"],
        serde_json::to_value(tenantd_core::BuiltinRole::Viewer.role()).unwrap()
    );
    assert_eq!(c["limit"]["resource"], "api_calls");
    let headers = d["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| h[0] == "ratelimit-policy"), "{d}");
    assert!(d.to_string().find(&key).is_none(), "the secret is never returned");
    assert_eq!(calls_this_hour(&app, "acme").await, 1);

    // The cost counts as asked; the call to tenantd itself counts nothing.
    decide(&app, req(json!({"cost": 5}))).await;
    assert_eq!(calls_this_hour(&app, "acme").await, 6);

    // A permission the role lacks: refused before it counts.
    let d = decide(&app, req(json!({"permission": "records:write"}))).await;
    assert_eq!(d["decision"], "refused");
    assert_eq!(
        (&d["problem"]["code"], &d["problem"]["status"]),
        (&json!("forbidden"), &json!(403))
    );
    assert_eq!(calls_this_hour(&app, "acme").await, 6);

    // Another tenant named by header, path or host: tenant_mismatch, recorded as an attempt
    // under acme with the asker's request id (folded: the same tenant each time), and
    // nothing counted for either tenant.
    for extra in [
        json!({"tenant_header": "globex"}),
        json!({"tenant_header_alias": "globex"}),
        json!({"path": "/v1/tenants/globex/notes"}),
    ] {
        let d = decide(&app, req(extra.clone())).await;
        assert_eq!(d["problem"]["code"], "tenant_mismatch", "{extra}: {d}");
    }
    assert_eq!(calls_this_hour(&app, "acme").await, 6);
    assert_eq!(calls_this_hour(&app, "globex").await, 0);
    // All three asked for globex: one event, counting three.
    app.state.edge.flush_security().await;
    let audit = app
        .get("/v1/tenants/acme/audit?action=security.cross_tenant_attempt", ADMIN)
        .await
        .expect(200)
        .body;
    let items = audit["items"].as_array().unwrap();
    assert_eq!((items.len(), &items[0]["count"]), (1, &json!(3)), "{audit}");
    assert!(items.iter().all(|e| e["request_id"] == "req_0123abcd"));

    // No credential, a bad one: 401 with WWW-Authenticate for the asker to set.
    let d = decide(&app, json!({"request_id": "req_1", "path": "/notes"})).await;
    assert_eq!(d["decision"], "admitted", "no credential: an anonymous context");
    assert_eq!(d["context"]["principal"], Value::Null);
    assert_eq!(d["context"]["tenant"], Value::Null);
    let d = decide(&app, req(json!({"bearer": "tdk_not_a_key"}))).await;
    assert_eq!(d["problem"]["code"], "unauthenticated");
    assert!(d["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == &json!(["www-authenticate", "Bearer"])));

    // A suspended tenant's key: the context says so, and a permission-bearing ask is refused.
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "test"}))
        .await
        .expect(200);
    let d = decide(&app, req(json!({"permission": "records:read"}))).await;
    assert_eq!(d["problem"]["code"], "tenant_suspended", "{d}");

    // A hard limit: 429 with the contract's fields and Retry-After.
    let (_, gkey) = app.key("globex", "member").await;
    app.patch(
        "/v1/tenants/globex",
        ADMIN,
        json!({"limits": [{"resource": "api_calls", "window": "minute", "limit": 1, "enforcement": "hard"}]}),
    )
    .await
    .expect(200);
    let ask = json!({"request_id": "req_2", "path": "/x", "bearer": gkey});
    assert_eq!(decide(&app, ask.clone()).await["decision"], "admitted");
    let d = decide(&app, ask).await;
    assert_eq!(d["problem"]["code"], "rate_limited", "{d}");
    assert_eq!(
        (&d["problem"]["limit"], &d["problem"]["window"]),
        (&json!(1), &json!("minute"))
    );
    assert!(d["headers"].as_array().unwrap().iter().any(|h| h[0] == "retry-after"));
}

async fn malformed_decision_requests_are_refused_and_count_nothing(app: TestApp) {
    app.tenant("acme", "professional").await;
    let (_, key) = app.key("acme", "member").await;
    for (body, words) in [
        (json!({"request_id": "req_1", "bearer": key}), "path"),
        (json!({"path": "/x", "bearer": key}), "request_id"),
        (
            json!({"request_id": "has space", "path": "/x", "bearer": key}),
            "request_id",
        ),
        (json!({"request_id": "req_1", "path": "x", "bearer": key}), "path"),
        (
            json!({"request_id": "req_1", "path": "/x", "bearer": key, "cost": 1_000_001}),
            "cost",
        ),
        (
            json!({"request_id": "req_1", "path": "/x", "bearer": key, "permission": "not a permission"}),
            "permission",
        ),
        (
            json!({"request_id": "req_1", "path": "/x", "bearer": key, "public": true}),
            "public",
        ),
    ] {
        let r = app.call("POST", "/v1/edge/decide", None, Some(body.clone()), &[]).await;
        let r = r.problem(400, "invalid_request");
        assert!(r.body["detail"].as_str().unwrap().contains(words), "{body}: {}", r.body);
    }
    assert_eq!(calls_this_hour(&app, "acme").await, 0);
}
