//! `spawn_app`: the real server in process on port 0, on its own SQLite file or its own
//! PostgreSQL database, driven over HTTP.
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tenantd::config::{Config, FileConfig, ServeArgs};
use tenantd::state::{AppState, State};
use tokio::sync::oneshot;

/// Which catalog backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ADMIN: &str = "test-operator-key-0123456789";
/// The master key of every test server, in process or a child process: nodes sharing a
/// catalog must share it.
pub const MASTER_KEY: &str = "dGVuYW50ZC10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXM=";

pub struct TestApp {
    pub url: String,
    pub state: State,
    pub db_url: String,
    pub data_dir: std::path::PathBuf,
    pub toml: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    http: reqwest::Client,
}

/// A reply: status, headers, JSON body (Null when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The response's status and headers, and its body as JSON (a string when it is not
    /// JSON; `Null` when empty).
    pub async fn of(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply { status, headers, body }
    }

    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self
    }
    /// Asserts a problem+json error with this status and code.
    #[track_caller]
    pub fn problem(self, status: u16, code: &str) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.headers.get("content-type").unwrap(), "application/problem+json");
        assert_eq!(self.body["status"], status);
        assert!(self.body["request_id"].as_str().unwrap().starts_with("req_"));
        assert!(self.body["type"].is_string() && self.body["title"].is_string() && self.body["detail"].is_string());
        self
    }
}

/// One request written byte for byte to `url`'s host and port: `head` is the request
/// line and header lines (each ending in `\r\n`; `Connection: close` is added), then
/// `body`. The answer as the server wrote it, the connection read to its end.
pub async fn raw_at(url: &str, head: &[u8], body: &[u8]) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut req = head.to_vec();
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    RawReply::parse(&out)
}

/// An answer read off the wire: status, head (lower-cased) and body.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn parse(bytes: &[u8]) -> Self {
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
        let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = bytes.get(split + 4..).unwrap_or_default().to_vec();
        RawReply { status, head, body }
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> Value {
        let body = self.json();
        assert_eq!(self.status, status, "{}\n{body}", self.head);
        assert!(
            self.head.contains("content-type: application/problem+json"),
            "{}",
            self.head
        );
        assert_eq!(body["code"], code, "{body}");
        body
    }
}

/// Starts the server; `None` when the backend is not available here (the skip was printed).
pub async fn spawn_app(backend: Backend, toml: &str) -> Option<TestApp> {
    let (sqlite_url, dir) = tenantd_store::testing::fresh_sqlite();
    let db_url = match backend {
        Backend::Sqlite => sqlite_url,
        Backend::Postgres => tenantd_store::testing::fresh_postgres("tenantd api tests").await?,
    };
    Some(start(db_url, dir, toml.to_string()).await)
}

/// Starts the server on SQLite with counters in Redis under a key prefix of its own;
/// `None` when `TENANTD_TEST_REDIS_URL` is unset outside CI (the skip was printed).
pub async fn spawn_redis_app(test: &str) -> Option<TestApp> {
    let (url, prefix) = tenantd_store::testing::redis(test)?;
    let toml = format!("redis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n");
    spawn_app(Backend::Sqlite, &toml).await
}

async fn start(db_url: String, data_dir: std::path::PathBuf, toml: String) -> TestApp {
    start_with(db_url, data_dir, toml, axum::Router::new()).await
}

pub async fn start_with(
    db_url: String,
    data_dir: std::path::PathBuf,
    toml: String,
    extra: axum::Router<State>,
) -> TestApp {
    start_keyed(db_url, data_dir, toml, extra, MASTER_KEY).await
}

/// [`start_with`] under the master key `master` (base64).
pub async fn start_keyed(
    db_url: String,
    data_dir: std::path::PathBuf,
    toml: String,
    extra: axum::Router<State>,
    master: &str,
) -> TestApp {
    let args = ServeArgs {
        database_url: Some(db_url.as_str().into()),
        data_dir: Some(data_dir.clone()),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let file: FileConfig = toml::from_str(&toml).expect("test config");
    let mut cfg = Config::merge(&args, file, Some(ADMIN.into())).expect("config");
    cfg.master_key = Some(tenantd_core::secret::Secret::new(master));
    // The configuration as a file too, for the gateway's reload.
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let path = data_dir.join("tenantd.toml");
    std::fs::write(&path, &toml).expect("config file");
    cfg.config_path = Some(path);
    let listener = tenantd::startup::bind(&cfg.listen).await.expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state: Arc<AppState> = tenantd::startup::prepare(cfg).await.expect("prepare");
    let (tx, rx) = oneshot::channel::<()>();
    let app = tenantd::routes::router_with(state.clone(), extra);
    let s2 = state.clone();
    let task = tokio::spawn(async move {
        tenantd::serve::serve_app(s2, app, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    TestApp {
        url,
        state,
        db_url,
        data_dir,
        toml,
        stop: Some(tx),
        task: Some(task),
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    /// Another node: a second server on the same catalog and data directory.
    pub async fn second_node(&self) -> TestApp {
        start(self.db_url.clone(), self.data_dir.clone(), self.toml.clone()).await
    }

    /// Stops the server gracefully and starts a new one on the same catalog.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(self.db_url.clone(), self.data_dir.clone(), self.toml.clone()).await
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
    }

    /// One request: `token` as bearer, `body` as JSON, extra headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.url),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::of(req.send().await.expect("request")).await
    }

    /// One request written byte for byte to the API ([`raw_at`]).
    pub async fn raw(&self, head: &[u8], body: &[u8]) -> RawReply {
        raw_at(&self.url, head, body).await
    }

    /// The types of the tenant's events (`quota.warning`, `quota.exceeded`) about
    /// `resource` (`None`: all of them), oldest first, as the operator reads them.
    pub async fn quota_events(&self, tenant: &str, resource: Option<&str>) -> Vec<String> {
        let events = self
            .get(&format!("/v1/tenants/{tenant}/events"), ADMIN)
            .await
            .expect(200)
            .body;
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| resource.is_none_or(|r| e["data"]["resource"] == r))
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// `PUT` of raw bytes with a content type.
    pub async fn put_bytes(&self, path: &str, token: &str, body: Vec<u8>, content_type: &str) -> Reply {
        let resp = self
            .http
            .put(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        Reply::of(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None, &[]).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body), &[]).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PATCH", path, Some(token), Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call("DELETE", path, Some(token), None, &[]).await
    }

    /// Creates a tenant on `plan` owned by `owner@<id>.test`.
    /// The tenant's current use of `resource` in `window`, from the server's counters.
    pub async fn used(&self, tenant: &str, resource: &str, window: tenantd_core::Window) -> u64 {
        self.state
            .limiter
            .current(tenantd_core::TenantId::parse(tenant).unwrap(), resource, window)
            .await
            .unwrap()
    }

    pub async fn tenant(&self, id: &str, plan: &str) -> Value {
        self.post(
            "/v1/tenants",
            ADMIN,
            serde_json::json!({"id": id, "plan": plan, "owner_email": format!("owner@{id}.test")}),
        )
        .await
        .expect(201)
        .body
    }

    /// Creates an API key with `role` in tenant `id`; returns (key id, secret).
    pub async fn key(&self, id: &str, role: &str) -> (String, String) {
        let b = self
            .post(
                &format!("/v1/tenants/{id}/keys"),
                ADMIN,
                serde_json::json!({"name": format!("{role} key"), "role": role}),
            )
            .await
            .expect(201)
            .body;
        (
            b["id"].as_str().unwrap().to_string(),
            b["key"].as_str().unwrap().to_string(),
        )
    }

    /// Adds a member and mints a tenantd JWT for them; returns (user id, token).
    pub async fn user(&self, tenant: &str, email: &str, role: &str) -> (String, String) {
        let m = self
            .post(
                &format!("/v1/tenants/{tenant}/members"),
                ADMIN,
                serde_json::json!({"email": email, "role": role}),
            )
            .await
            .expect(201)
            .body;
        let uid = m["user_id"].as_str().unwrap().to_string();
        (uid.clone(), self.token_for(tenant, &uid).await)
    }

    /// The user id of the tenant's first owner.
    pub async fn owner_id(&self, tenant: &str) -> String {
        let m = self
            .get(&format!("/v1/tenants/{tenant}/members?limit=1000"), ADMIN)
            .await
            .expect(200)
            .body;
        m["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "owner")
            .unwrap()["user_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Mints a JWT for an existing member.
    pub async fn token_for(&self, tenant: &str, uid: &str) -> String {
        let t = self
            .post(
                &format!("/v1/tenants/{tenant}/members/{uid}/token"),
                ADMIN,
                serde_json::json!({}),
            )
            .await
            .expect(200)
            .body;
        t["access_token"].as_str().unwrap().to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Generates a SQLite and a PostgreSQL test for each `case(app)`, with a config file.
#[macro_export]
macro_rules! both {
    ($($name:ident $(, $toml:expr)?;)*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let toml: &str = [$($toml,)? ""][0];
                    let app = $crate::common::spawn_app($crate::common::Backend::Sqlite, toml).await.unwrap();
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let toml: &str = [$($toml,)? ""][0];
                    if let Some(app) = $crate::common::spawn_app($crate::common::Backend::Postgres, toml).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

/// Runs cases again on SQLite with the counters in Redis (module `redis`).
#[macro_export]
macro_rules! on_redis {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::common::spawn_redis_app(stringify!($name)).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

/// A port free at the time of asking (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tenantd process and its API's URL, killed when dropped.
pub struct Node(pub std::process::Child, pub String);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Node {
    /// Starts `tenantd serve` number `n` on the catalog `db` with the configuration
    /// `toml`, its data directory under `dir`, on a free port.
    pub fn spawn(db: &str, toml: &str, dir: &std::path::Path, n: usize) -> Node {
        Self::spawn_with(db, toml, dir, n, &[])
    }

    /// [`Node::spawn`] with more environment variables (`TENANTD_CRASH_AT`, say).
    pub fn spawn_with(db: &str, toml: &str, dir: &std::path::Path, n: usize, env: &[(&str, &str)]) -> Node {
        Self::start(db, toml, dir, n, env, std::process::Stdio::null())
    }

    /// [`Node::spawn`] writing its log (stderr) to the file `log`.
    pub fn spawn_logged(db: &str, toml: &str, dir: &std::path::Path, n: usize, log: &std::path::Path) -> Node {
        let file = std::fs::File::create(log).unwrap();
        Self::start(db, toml, dir, n, &[], file.into())
    }

    fn start(
        db: &str,
        toml: &str,
        dir: &std::path::Path,
        n: usize,
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Node {
        let port = free_port();
        let cfg = dir.join(format!("node{n}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", db])
            .arg("--data-dir")
            .arg(dir.join(format!("node{n}")))
            .arg("--config")
            .arg(&cfg)
            .env("TENANTD_ADMIN_KEY", ADMIN)
            .env("TENANTD_MASTER_KEY", MASTER_KEY)
            .env_remove("TENANTD_REDIS_URL")
            .env_remove("TENANTD_DATABASE_URL")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Node(child, format!("http://127.0.0.1:{port}"))
    }

    /// Waits until the process answers `/healthz` (up to 30 s).
    pub async fn ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http
                .get(format!("{}/healthz", self.1))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("node {} did not start", self.1);
    }
}

/// A connection of its own to a database the tests read raw (as its owner).
pub async fn connect(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    <sqlx::AnyConnection as sqlx::Connection>::connect(url).await.unwrap()
}

/// A tool `test` needs is not installed (`why` says which and how to install it): under
/// `CI=true` the test fails, elsewhere it prints one `skipped:` line and the caller
/// returns.
pub fn skip_missing_tool(test: &str, why: &str) {
    assert!(
        !tenantd_store::testing::required(),
        "{test}: {why}, and CI=true: it cannot be skipped"
    );
    eprintln!("skipped: {test}: {why}");
}

/// Whether `promtool` (Debian's package `prometheus`) runs here; when not, `test` is
/// skipped as [`skip_missing_tool`] says.
pub fn promtool_or_skip(test: &str) -> bool {
    let here = std::process::Command::new("promtool").arg("--version").output().is_ok();
    if !here {
        skip_missing_tool(test, "promtool not installed (apt-get install prometheus)");
    }
    here
}
