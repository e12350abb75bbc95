use crate::common::{spawn_app, start_with, Backend, ADMIN};
use serde_json::json;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_openapi_cover_every_route() {
    let app = spawn_app(Backend::Sqlite, "").await.unwrap();
    app.tenant("acme", "free").await;
    let h = app.call("GET", "/healthz", None, None, &[]).await.expect(200);
    assert_eq!(h.body, json!({"status": "ok"}));
    assert!(h
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let doc = app.call("GET", "/openapi.json", None, None, &[]).await.expect(200).body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let expected: &[(&str, &[&str])] = &[
        ("/healthz", &["get"]),
        ("/openapi.json", &["get"]),
        ("/metrics", &["get"]),
        ("/.well-known/jwks.json", &["get"]),
        ("/v1/plans", &["get", "post"]),
        ("/v1/plans/{plan}", &["get", "patch", "delete"]),
        ("/v1/tenants", &["get", "post"]),
        ("/v1/tenants/{id}", &["get", "patch", "delete"]),
        ("/v1/tenants/{id}/suspend", &["post"]),
        ("/v1/tenants/{id}/resume", &["post"]),
        ("/v1/tenants/{id}/restore", &["post"]),
        ("/v1/tenants/{id}/members", &["get", "post"]),
        ("/v1/tenants/{id}/members/{user_id}", &["patch", "delete"]),
        ("/v1/tenants/{id}/members/{user_id}/token", &["post"]),
        ("/v1/tenants/{id}/roles", &["get", "post"]),
        ("/v1/tenants/{id}/roles/{name}", &["delete"]),
        ("/v1/tenants/{id}/workspaces", &["get", "post"]),
        ("/v1/tenants/{id}/workspaces/{ws}", &["get", "patch", "delete"]),
        ("/v1/tenants/{id}/workspaces/{ws}/members", &["post"]),
        ("/v1/tenants/{id}/domains", &["get", "post"]),
        ("/v1/tenants/{id}/domains/{host}/verify", &["post"]),
        ("/v1/tenants/{id}/domains/{host}", &["delete"]),
        ("/v1/tenants/{id}/keys", &["get", "post"]),
        ("/v1/tenants/{id}/keys/{key_id}", &["delete"]),
        ("/v1/tenants/{id}/keys/{key_id}/rotate", &["post"]),
        ("/v1/tenants/{id}/audit", &["get"]),
        ("/v1/audit", &["get"]),
        ("/v1/tenants/{id}/audit/verify", &["get"]),
        ("/v1/audit/verify", &["get"]),
        ("/v1/audit/checkpoints", &["post"]),
        ("/v1/tenants/{id}/webhooks", &["get", "post"]),
        ("/v1/tenants/{id}/webhooks/{wh_id}", &["get", "patch", "delete"]),
        ("/v1/tenants/{id}/webhooks/{wh_id}/rotate-secret", &["post"]),
        ("/v1/tenants/{id}/webhooks/{wh_id}/test", &["post"]),
        ("/v1/tenants/{id}/webhooks/{wh_id}/deliveries", &["get"]),
        ("/v1/tenants/{id}/webhooks/{wh_id}/replay", &["post"]),
        ("/v1/webhooks", &["get", "post"]),
        ("/v1/webhooks/{wh_id}", &["get", "patch", "delete"]),
        ("/v1/webhooks/{wh_id}/rotate-secret", &["post"]),
        ("/v1/webhooks/{wh_id}/test", &["post"]),
        ("/v1/webhooks/{wh_id}/deliveries", &["get"]),
        ("/v1/webhooks/{wh_id}/replay", &["post"]),
        ("/v1/me", &["get"]),
        ("/v1/authorize", &["post"]),
        ("/v1/token", &["post"]),
        ("/v1/tenant/usage", &["get"]),
        ("/v1/tenants/{id}/usage", &["get"]),
        ("/v1/tenants/{id}/usage/events", &["post"]),
        ("/v1/tenants/{id}/leases", &["post"]),
        ("/v1/tenants/{id}/leases/{lease_id}", &["delete"]),
        ("/v1/tenants/{id}/events", &["get"]),
        ("/v1/tenants/{id}/invoices/{period}", &["get"]),
        ("/v1/billing/{period}", &["get"]),
        ("/v1/edge/decide", &["post"]),
        ("/v1/data/collections/{c}/records", &["get", "post"]),
        ("/v1/data/collections/{c}/records/{rid}", &["get", "patch", "delete"]),
        ("/v1/data/blobs", &["get"]),
        ("/v1/data/blobs/{path}", &["get", "put", "delete"]),
        ("/v1/data/cache", &["delete"]),
        ("/v1/data/cache/{key}", &["get", "put", "delete"]),
        ("/v1/tenants/{id}/placement", &["get"]),
        ("/v1/jobs", &["get", "post"]),
        ("/v1/jobs/claim", &["post"]),
        ("/v1/jobs/{job_id}", &["get"]),
        ("/v1/jobs/{job_id}/cancel", &["post"]),
        ("/v1/jobs/{job_id}/heartbeat", &["post"]),
        ("/v1/jobs/{job_id}/complete", &["post"]),
        ("/v1/jobs/{job_id}/fail", &["post"]),
        ("/v1/config-schemas", &["get"]),
        ("/v1/config-schemas/{key}", &["get", "put", "delete"]),
        ("/v1/plans/{plan}/config/{key}", &["get", "put", "delete"]),
        ("/v1/plans/{plan}/config/{key}/versions", &["get"]),
        ("/v1/plans/{plan}/config/{key}/rollback", &["post"]),
        ("/v1/tenants/{id}/config", &["get"]),
        ("/v1/tenants/{id}/config/{key}", &["get", "put", "delete"]),
        ("/v1/tenants/{id}/config/{key}/versions", &["get"]),
        ("/v1/tenants/{id}/config/{key}/rollback", &["post"]),
        ("/v1/flags", &["get"]),
        ("/v1/flags/{flag}", &["get", "put", "delete"]),
        ("/v1/tenants/{id}/features", &["get"]),
        ("/ofrep/v1/evaluate/flags", &["post"]),
        ("/ofrep/v1/evaluate/flags/{flag}", &["post"]),
        ("/v1/tenants/{id}/secrets", &["get"]),
        ("/v1/tenants/{id}/secrets/{name}", &["get", "put", "delete"]),
        ("/v1/tenants/{id}/data-key", &["get"]),
        ("/v1/tenants/{id}/data-key/rotate", &["post"]),
        ("/v1/tenants/{id}/exports", &["post"]),
        ("/v1/tenants/{id}/exports/{aid}", &["get"]),
        ("/v1/tenants/{id}/exports/{aid}/download", &["get"]),
        ("/v1/tenants/{id}/backups", &["get", "post"]),
        ("/v1/tenants/{id}/backups/{aid}", &["get"]),
        ("/v1/tenants/{id}/clone", &["post"]),
        ("/v1/users/{user_id}", &["delete"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from /openapi.json"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing from /openapi.json");
        }
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "undocumented or unexpected paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // Every documented route answers (not 404/405) — the spec and router are one list.
    for (path, _) in expected {
        let concrete = path
            .replace("{id}", "acme")
            .replace("{plan}", "free")
            .replace("{user_id}", "usr_x")
            .replace("{name}", "r")
            .replace("{ws}", "w")
            .replace("{key_id}", "key_x")
            .replace("{wh_id}", "wh_x")
            .replace("{host}", "a.b.test");
        let r = app.call("OPTIONS", &concrete, Some(ADMIN), None, &[]).await;
        assert_eq!(r.status.as_u16(), 405, "{concrete}: {}", r.body);
        assert_eq!(r.body["code"], "method_not_allowed");
    }
    app.call("GET", "/v2/nothing", None, None, &[])
        .await
        .problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_bad_bodies_never_take_the_server_down() {
    let (db, dir) = tenantd_store::testing::fresh_sqlite();
    let extra = axum::Router::new().route(
        "/v1/boom",
        axum::routing::get(|| async {
            if std::env::var("NEVER_SET_X").is_err() {
                panic!("handler bug");
            }
            "unreachable"
        }),
    );
    let app = start_with(db, dir, "max_body_bytes = 1024".into(), extra).await;
    let r = app
        .call("GET", "/v1/boom", None, None, &[])
        .await
        .problem(500, "internal");
    assert!(
        !r.body["detail"].as_str().unwrap().contains("handler bug"),
        "500s reveal nothing"
    );
    app.call("GET", "/healthz", None, None, &[]).await.expect(200);
    let big = json!({"id": "acme", "plan": "free", "owner_email": "a@b.co", "name": "x".repeat(4096)});
    app.post("/v1/tenants", ADMIN, big)
        .await
        .problem(413, "payload_too_large");
    let r = app
        .call(
            "POST",
            "/v1/tenants",
            Some(ADMIN),
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    r.problem(400, "invalid_request");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/tenants", app.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "invalid_request");
    app.get("/v1/tenants?limit=abc", ADMIN)
        .await
        .problem(400, "invalid_request");
    app.call("GET", "/healthz", None, None, &[]).await.expect(200);
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenantd"));
    c.env_remove("TENANTD_ADMIN_KEY")
        .env_remove("TENANTD_DATABASE_URL")
        .env_remove("TENANTD_CONFIG")
        .env_remove("TENANTD_LISTEN");
    c
}

#[test]
fn start_up_failures_are_one_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("tenantd-cli-{}", std::process::id()));
    for args in [
        vec!["serve", "--listen", "not-an-address"],
        vec!["serve", "--database-url", "mysql://x/y"],
        vec!["serve", "--database-url", "postgres://nobody@127.0.0.1:1/none"],
        vec!["serve", "--multi-tenancy", "maybe"],
        vec!["serve", "--config", "/nonexistent/tenantd.toml"],
    ] {
        let out = bin()
            .args(&args)
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}");
        if args[1] != "--multi-tenancy" {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

#[test]
fn migrate_tenants_reports_progress_and_is_idempotent() {
    let dir = std::env::temp_dir().join(format!("tenantd-migrate-{}", std::process::id()));
    let run = || {
        bin()
            .args(["migrate", "--tenants", "--concurrency", "2", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{err}");
    assert!(err.contains("tenantd: catalog migrated"), "{err}");
    assert!(err.contains("tenantd: migrated 1/1 data locations"), "{err}");
    let all = format!("1 locations, {} migrations applied", tenantd_data::migrations());
    assert!(err.contains(&all), "{err}");
    let again = run();
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert!(err.contains("1 locations, 0 migrations applied"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tenantd serve` on a free port with data directory `dir` and its log (text) to
/// `stderr`, once it accepts connections; with its URL.
fn serve_in(dir: &std::path::Path, stderr: Stdio) -> (std::process::Child, String) {
    let port = crate::common::free_port();
    let child = bin()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "text",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("TENANTD_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ready, "server did not start");
    (child, format!("http://127.0.0.1:{port}"))
}

#[test]
fn sigterm_stops_cleanly_and_the_cli_drives_the_api() {
    let dir = std::env::temp_dir().join(format!("tenantd-sig-{}", std::process::id()));
    let (mut child, url) = serve_in(&dir, Stdio::null());
    let cli = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("TENANTD_URL", &url)
            .env("TENANTD_ADMIN_KEY", ADMIN)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["tenant", "create", "acme", "--plan", "free", "--owner", "ann@acme.test"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("acme") && out.contains("active"), "{out}");
    let (code, out, _) = cli(&["tenant", "list"]);
    assert_eq!(code, Some(0));
    assert!(out.lines().any(|l| l.starts_with("acme")), "{out}");
    let (code, out, _) = cli(&["key", "create", "acme", "--name", "ci", "--role", "admin"]);
    assert_eq!(code, Some(0));
    let secret = out.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("tdk_") && secret.len() > 40, "{out}");
    let (code, out, _) = cli(&["key", "list", "acme", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key_id = v["items"][0]["id"].as_str().unwrap().to_string();
    assert!(!out.contains(&secret), "list never shows a secret");
    assert_eq!(cli(&["key", "revoke", "acme", &key_id]).0, Some(0));
    // The quota table: the free plan's limits with their use.
    let (code, out, err) = cli(&["usage", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("tenant acme  plan free"), "{out}");
    assert!(out.contains("RESOURCE") && out.contains("PERCENTAGE"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(5).collect::<Vec<_>>() == ["members", "total", "5", "1", "4"]),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("api_calls") && l.contains("hour") && l.contains("hard")),
        "{out}"
    );
    assert_eq!(cli(&["usage", "nosuch"]).0, Some(1));
    // Flags and configuration.
    let (code, out, err) = cli(&[
        "flag",
        "set",
        "new-ui",
        "--type",
        "boolean",
        "--default",
        "false",
        "--tenant",
        "acme=true",
        "--rollout",
        "12.5=true",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("new-ui") && l.contains("boolean")),
        "{out}"
    );
    let (code, out, _) = cli(&["flag", "get", "new-ui"]);
    assert_eq!(code, Some(0));
    let f: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (f["tenants"]["acme"].clone(), f["rollout"]["percent"].clone()),
        (json!(true), json!(12.5))
    );
    assert!(cli(&["flag", "list"]).1.lines().any(|l| l.starts_with("new-ui")));
    let (code, _, err) = cli(&["flag", "set", "bad", "--type", "boolean", "--default", "maybe"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("400 invalid_request") && err.contains("default"), "{err}");
    assert_eq!(cli(&["flag", "delete", "new-ui"]).0, Some(0));
    assert_eq!(cli(&["flag", "get", "new-ui"]).0, Some(1));
    let put = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .put(format!("{url}/v1/config-schemas/theme"))
            .bearer_auth(ADMIN)
            .json(&json!({"schema": {"enum": ["light", "dark"]}, "default": "light"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(put, 201);
    let (code, out, _) = cli(&["config", "get", "acme", "theme"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["theme", "light", "default", "1"]),
        "{out}"
    );
    let (code, _, err) = cli(&["config", "set", "acme", "theme", "pink"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("400 invalid_config"), "{err}");
    assert_eq!(cli(&["config", "set", "acme", "theme", "dark"]).0, Some(0));
    let (_, out, _) = cli(&["config", "get", "acme"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["theme", "dark", "tenant", "1"]),
        "{out}"
    );
    assert_eq!(cli(&["tenant", "suspend", "acme", "--reason", "test"]).0, Some(0));
    assert!(cli(&["tenant", "show", "acme"]).1.contains("suspended"));
    assert_eq!(cli(&["tenant", "resume", "acme"]).0, Some(0));
    let (code, _, err) = cli(&["tenant", "resume", "acme"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("409 conflict"), "{err}");
    assert_eq!(cli(&["tenant", "delete", "acme"]).0, Some(0));
    // SIGTERM: stop accepting, finish, exit 0.
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The data is there after restart: `migrate` works on it and exits 0.
    let out = bin().arg("migrate").arg("--data-dir").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The finding: the document had no response schemas, no error responses, no parameter
/// constraints and bare `{"type":"object"}` bodies. Every operation now describes its
/// request (a schema with required fields, every path parameter constrained), its
/// success answer and every error status as problem+json; every `$ref` resolves, and
/// each operation id is used once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_request_and_response() {
    use tenantd_core::ids::{EMAIL_PATTERN, HOST_PATTERN, NAME_PATTERN, TENANT_ID_PATTERN};
    let app = spawn_app(Backend::Sqlite, "").await.unwrap();
    let doc = app.call("GET", "/openapi.json", None, None, &[]).await.expect(200).body;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let resolve = |v: &serde_json::Value| -> serde_json::Value {
        match v["$ref"].as_str() {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").unwrap();
                schemas
                    .get(name)
                    .unwrap_or_else(|| panic!("{r} does not resolve"))
                    .clone()
            }
            None => v.clone(),
        }
    };
    // Every reference in the document resolves.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    out.push(r.to_string());
                }
                m.values().for_each(|c| refs(c, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50);
    for r in &all {
        resolve(&json!({"$ref": r}));
    }
    let problem = &schemas["Problem"];
    for field in ["type", "title", "status", "detail", "code", "request_id"] {
        assert!(
            problem["required"].as_array().unwrap().contains(&json!(field)),
            "Problem requires {field}"
        );
    }
    let mut ids = std::collections::HashSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let at = format!("{method} {path}");
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "{at}: operationId used twice"
            );
            let responses = op["responses"].as_object().unwrap();
            for status in ["400", "401", "403", "404", "409", "413", "429", "500", "503"] {
                let r = responses.get(status).unwrap_or_else(|| panic!("{at}: no {status}"));
                assert_eq!(
                    r["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                    "{at} {status}"
                );
            }
            let successes: Vec<_> = responses.iter().filter(|(s, _)| s.starts_with('2')).collect();
            assert!(!successes.is_empty(), "{at}: no success response");
            for (status, r) in successes {
                if status == "204" {
                    assert!(r.get("content").is_none(), "{at}: 204 with a body");
                    continue;
                }
                let content = r["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{at} {status}: no content"));
                for (media, c) in content {
                    let s = resolve(&c["schema"]);
                    assert!(s.is_object() && s != json!({}), "{at} {status} {media}: no schema");
                }
            }
            if let Some(body) = op.get("requestBody") {
                for (media, c) in body["content"].as_object().unwrap() {
                    let s = resolve(&c["schema"]);
                    assert_ne!(s, json!({"type": "object"}), "{at} {media}: a bare object body");
                    if media == "application/json" && s["type"] == "object" {
                        assert!(
                            s.get("properties").is_some() || s.get("additionalProperties").is_some(),
                            "{at}: {s}"
                        );
                    }
                }
            }
            let mut names = std::collections::HashSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(
                    names.insert((p["in"].to_string(), p["name"].to_string())),
                    "{at}: {} twice",
                    p["name"]
                );
                assert!(
                    !p["schema"].to_string().contains(r#""null""#),
                    "{at}: {} may be null",
                    p["name"]
                );
                if p["in"] != "path" {
                    continue;
                }
                let s = resolve(&p["schema"]);
                assert!(
                    ["pattern", "enum", "format", "maxLength"]
                        .iter()
                        .any(|k| s.get(*k).is_some()),
                    "{at}: path parameter {} is unconstrained: {s}",
                    p["name"]
                );
                if p["name"] == "id" {
                    assert_eq!(s["pattern"], TENANT_ID_PATTERN, "{at}");
                }
            }
        }
    }
    assert!(operations >= 60, "{operations} operations");
    // The patterns are the parsers' own (tenantd_core::ids checks that they agree).
    let prop = |schema: &str, field: &str| resolve(&schemas[schema]["properties"][field]);
    assert_eq!(prop("Tenant", "id")["pattern"], TENANT_ID_PATTERN);
    assert_eq!(
        prop("UsageEvent", "resource")["not"]["enum"],
        json!(["members", "keys"])
    );
    // Every object open to other properties says their names hold no NUL (tenantd
    // refuses one anywhere in a body).
    fn maps_without_key_rule(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                let is_object = m.get("type").is_some_and(|t| t == "object") || m.contains_key("additionalProperties");
                let open = m.get("additionalProperties").is_none_or(|a| a != false);
                if is_object && open && !m.contains_key("propertyNames") {
                    out.push(serde_json::Value::Object(m.clone()).to_string());
                }
                m.values().for_each(|c| maps_without_key_rule(c, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| maps_without_key_rule(c, out)),
            _ => {}
        }
    }
    let mut loose = Vec::new();
    maps_without_key_rule(&doc, &mut loose);
    assert!(loose.is_empty(), "objects whose property names may hold NUL: {loose:?}");
    let create_tenant = &doc["paths"]["/v1/tenants"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let create_tenant = resolve(create_tenant);
    assert_eq!(
        resolve(&create_tenant["properties"]["owner_email"])["pattern"],
        EMAIL_PATTERN
    );
    assert_eq!(resolve(&create_tenant["properties"]["plan"])["pattern"], NAME_PATTERN);
    for field in ["id", "plan"] {
        assert!(
            create_tenant["required"].as_array().unwrap().contains(&json!(field)),
            "{field}"
        );
    }
    let add_domain = resolve(
        &doc["paths"]["/v1/tenants/{id}/domains"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(resolve(&add_domain["properties"]["host"])["pattern"], HOST_PATTERN);
}

#[test]
fn the_master_key_is_generated_once_and_another_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tenantd-master-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (child, _) = serve_in(&dir, Stdio::piped());
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("generated a master key"), "{log}");
    let path = dir.join("master.key");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "readable by its owner only");
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(tenantd_core::crypto::Key::from_base64(&key).is_ok());
    assert!(!log.contains(key.trim()), "the key itself is never logged");
    // Another key for the same catalog is refused at start, naming both fingerprints;
    // a malformed one names its source.
    let other = tenantd_core::crypto::Key::generate().unwrap().to_base64();
    for (env, named) in [
        (other.as_str(), "not the one the catalog's data keys"),
        ("garbage", "TENANTD_MASTER_KEY"),
    ] {
        let out = bin()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&dir)
            .env("TENANTD_MASTER_KEY", env)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(named), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
