//! `deploy/`: the alert rules as promtool checks and tests them, every metric the rules
//! and the Grafana dashboard query as a real server declares it, the Kubernetes
//! example's tenantd.toml as tenantd loads it, and its probes and ports.
use crate::common::{spawn_app, Backend};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file under the repository's `deploy/`.
fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// Every `tenantd_*` metric name in `text`, without a histogram's `_bucket`, `_sum` or
/// `_count`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("tenantd_") {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[at..];
        let name = &rest[..rest.find(|c: char| !word(c)).unwrap_or(rest.len())];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(name.to_string());
    }
    names
}

/// Whether the scrape declares `name` with a `# TYPE` line. A counter may be declared
/// with its `_total` (as tenantd's are) or without it (as the OpenMetrics style has it).
fn declared(scrape: &str, name: &str) -> bool {
    let has = |n: &str| scrape.lines().any(|l| l.starts_with(&format!("# TYPE {n} ")));
    has(name)
        || name
            .strip_suffix("_total")
            .is_some_and(|base| scrape.lines().any(|l| l == format!("# TYPE {base} counter")))
}

/// `promtool <args>` in `deploy/prometheus`, which must succeed.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every alert has its tests, and promtool accepts the rules, passes their tests and
/// accepts the example Prometheus configuration (which loads the rules).
#[test]
fn deploy_alert_rules_pass_promtool() {
    let rules = read("prometheus/alerts.yml");
    let tests = read("prometheus/alerts_test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alerts_test.yml does not test {alert}"
        );
    }
    if !crate::common::promtool_or_skip("deploy") {
        return;
    }
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
}

/// The dashboard is JSON Grafana imports: Prometheus through a `datasource` variable, a
/// `tenant` variable from the per-tenant series, a platform row and a tenant row, and a
/// query in every panel.
#[test]
fn deploy_dashboard_is_a_grafana_dashboard() {
    let d: Value = serde_json::from_str(&read("grafana/tenantd.json")).expect("tenantd.json is JSON");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "{}",
        d["schemaVersion"]
    );
    assert_eq!(d["uid"], "tenantd");
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(
        var("tenant")["query"]["query"],
        "label_values(tenantd_tenant_requests_total, tenant)"
    );
    let panels = d["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["Platform overview", "Tenant $tenant"]);
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id {} twice", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(t["expr"].as_str().unwrap().contains("tenantd_"), "{}", p["title"]);
        }
    }
    // The tenant row queries the chosen tenant only.
    let tenant_row = panels.iter().position(|p| p["title"] == "Tenant $tenant").unwrap();
    for p in &panels[tenant_row + 1..] {
        for t in p["targets"].as_array().unwrap() {
            assert!(
                t["expr"].as_str().unwrap().contains(r#"tenant="$tenant""#),
                "{}",
                p["title"]
            );
        }
    }
}

/// Every `tenantd_*` name the alert rules and the dashboard query is one a real server
/// declares on `/metrics` (with Redis and the gateway on, so that all are served). The
/// server first answers a tenant's requests, through the API and the gateway, allowed
/// and refused, so that series that appear with their first sample are there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_queries_only_metrics_the_server_declares() {
    let mut queried = metric_names(&read("prometheus/alerts.yml"));
    queried.extend(metric_names(&read("grafana/tenantd.json")));
    assert!(queried.len() >= 25, "{queried:?}");
    for name in [
        "tenantd_tenant_quota_used",
        "tenantd_redis_up",
        "tenantd_webhook_lag_seconds",
    ] {
        assert!(queried.contains(name), "{name} not found in {queried:?}");
    }

    let Some((redis, prefix)) = tenantd_store::testing::redis("deploy_queries_only_metrics_the_server_declares") else {
        return;
    };
    let up = crate::gateway::upstream().await;
    let toml = format!(
        "redis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\ngateway_listen = \"127.0.0.1:0\"\nupstream = \"{}\"\n",
        up.url
    );
    let app = spawn_app(Backend::Sqlite, &toml).await.unwrap();
    app.tenant("acme", "free").await;
    app.tenant("globex", "free").await;
    let (_, key) = app.key("acme", "member").await;
    app.get("/v1/me", &key).await.expect(200);
    app.get("/v1/tenants/globex", &key)
        .await
        .problem(403, "tenant_mismatch");
    app.get("/v1/me", "tdk_not_a_key").await.expect(401);
    let gw = format!("http://{}", app.state.gateway_addr.expect("gateway bound"));
    let r = reqwest::Client::new()
        .get(format!("{gw}/hello"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "through the gateway");

    // Series filled in the background (usage, the job queue's upkeep) get a few seconds.
    let mut missing = Vec::new();
    let mut scrape = String::new();
    for _ in 0..20 {
        let r = reqwest::get(format!("{}/metrics", app.url)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        scrape = r.text().await.unwrap();
        missing = queried.iter().filter(|n| !declared(&scrape, n)).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        missing.is_empty(),
        "deploy/ queries metrics the server does not declare: {missing:?}\n{scrape}"
    );
}

/// The Kubernetes example's tenantd.toml is one tenantd loads, and the generated
/// ConfigMap is what the Deployment mounts and passes to `--config`. Its shutdown grace
/// fits in the Pod's termination grace period.
#[test]
fn deploy_kubernetes_config_is_accepted_by_tenantd() {
    let args = tenantd::config::ServeArgs {
        config: Some(deploy("kubernetes/tenantd.toml")),
        ..Default::default()
    };
    let cfg = tenantd::config::Config::load(&args).unwrap_or_else(|e| panic!("deploy/kubernetes/tenantd.toml: {e}"));

    let kustomization = read("kubernetes/kustomization.yaml");
    for file in ["deployment.yaml", "service.yaml", "pdb.yaml", "tenantd.toml"] {
        assert!(
            kustomization.contains(&format!("- {file}\n")),
            "kustomization.yaml: {file}"
        );
        assert!(deploy("kubernetes").join(file).is_file(), "{file}");
    }
    assert!(kustomization.contains("- name: tenantd-config\n"));
    let deployment = read("kubernetes/deployment.yaml");
    assert!(deployment.contains(r#"args: ["--config", "/etc/tenantd/tenantd.toml"]"#));
    assert!(deployment.contains("mountPath: /etc/tenantd\n"));
    assert!(deployment.contains("name: tenantd-config\n"));

    let number_after = |key: &str| -> u64 {
        let at = deployment.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
        let digits: String = deployment[at..]
            .trim_start_matches([' ', '"'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap_or_else(|_| panic!("{key} is not a number"))
    };
    let termination = number_after("terminationGracePeriodSeconds:");
    let pre_stop = number_after(r#"command: ["sleep","#);
    assert!(
        pre_stop + cfg.shutdown_grace_seconds < termination,
        "preStop {pre_stop} s + shutdown_grace_seconds {} s must end before terminationGracePeriodSeconds {termination} s",
        cfg.shutdown_grace_seconds
    );
}

/// Every probe of the Deployment asks `/healthz` on the port the image listens on, and
/// the container runs as a non-root user.
#[test]
fn deploy_kubernetes_probes_ask_healthz() {
    let deployment = read("kubernetes/deployment.yaml");
    for probe in ["startupProbe:", "readinessProbe:", "livenessProbe:"] {
        let at = deployment.find(probe).unwrap_or_else(|| panic!("no {probe}"));
        let rest = &deployment[at..];
        let path = rest.lines().find_map(|l| l.trim().strip_prefix("path: "));
        assert_eq!(path, Some("/healthz"), "{probe}");
        let port = rest.lines().find_map(|l| l.trim().strip_prefix("port: "));
        assert_eq!(port, Some("http"), "{probe}");
    }
    // The port named http is the one the image listens on, exposes and is scraped on.
    assert!(deployment.contains("- name: http\n              containerPort: 8080\n"));
    assert!(deployment.contains("prometheus.io/port: \"8080\"\n"));
    assert!(deployment.contains("runAsNonRoot: true\n"));
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("TENANTD_LISTEN=0.0.0.0:8080"));
    assert!(dockerfile.contains("\nEXPOSE 8080"));
    assert!(dockerfile.contains("\nUSER 10001:10001\n"));
    assert!(dockerfile.contains("\nENTRYPOINT [\"tenantd\", \"serve\"]\n"));
    assert!(read("kubernetes/service.yaml").contains("targetPort: http\n"));
}
