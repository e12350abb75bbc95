//! Test support: a fresh PostgreSQL database per test, from `TENANTD_TEST_DATABASE_URL`.
//! Without that variable the PostgreSQL tests print one line saying they were skipped,
//! except under `CI=true`, where a missing service is a failure.
use sqlx::{Connection, Executor};

/// Whether a missing test service must fail the run (`CI=true`).
pub fn required() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// A URL of a new, empty PostgreSQL database, or `None` (with one line on stderr) when
/// `TENANTD_TEST_DATABASE_URL` is unset outside CI.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let base = match std::env::var("TENANTD_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if required() => {
            panic!("TENANTD_TEST_DATABASE_URL is not set and CI=true: the PostgreSQL tests cannot be skipped")
        }
        _ => {
            eprintln!("skipped {test} on PostgreSQL: TENANTD_TEST_DATABASE_URL is not set");
            return None;
        }
    };
    // Named after this process, so databases of finished runs can be told apart.
    let name = format!(
        "tenantd_t_{}_{}",
        std::process::id(),
        crate::new_id("db").trim_start_matches("db_")
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at TENANTD_TEST_DATABASE_URL: {e}"));
    drop_finished_runs(&mut conn).await;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let (head, _) = base
        .rsplit_once('/')
        .expect("TENANTD_TEST_DATABASE_URL ends with /<database>");
    let query = base.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    Some(format!("{head}/{name}{query}"))
}

/// Drops test databases left by test processes that are no longer running (once per
/// process), so repeated runs do not pile them up.
async fn drop_finished_runs(conn: &mut sqlx::PgConnection) {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<(String,)> = sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'tenantd_t_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    for (name,) in names {
        let pid = name
            .trim_start_matches("tenantd_t_")
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        // Old-style names without a pid, and pids no longer alive, are finished runs.
        let finished = pid.is_none_or(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if finished {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// A URL of a new SQLite catalog file in a new temporary folder (kept until the process ends).
pub fn fresh_sqlite() -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tenantd-test-{}", crate::new_id("d").trim_start_matches("d_")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    (format!("sqlite://{}", dir.join("catalog.db").display()), dir)
}

/// `TENANTD_TEST_REDIS_URL` and a key prefix of this test's own, or `None` (with one line
/// on stderr) when the variable is unset outside CI.
pub fn redis(test: &str) -> Option<(String, String)> {
    match std::env::var("TENANTD_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some((
            u,
            format!(
                "tenantd_t_{}_{}:",
                std::process::id(),
                crate::new_id("r").trim_start_matches("r_")
            ),
        )),
        _ if required() => panic!("TENANTD_TEST_REDIS_URL is not set and CI=true: the Redis tests cannot be skipped"),
        _ => {
            eprintln!("skipped {test}: TENANTD_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// Makes the database itself refuse every new event (a trigger that raises on insert
/// into `audit_events`), so a test can show that a change whose event cannot be written
/// is not made either. `false` lifts it again.
pub async fn refuse_events(database_url: &str, refuse: bool) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database_url).await.expect("connect");
    let statements: &[&str] = match (crate::Backend::from_url(database_url).expect("backend"), refuse) {
        (crate::Backend::Sqlite, true) => &[
            "CREATE TRIGGER refuse_events BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'events refused by the test'); END",
        ],
        (crate::Backend::Sqlite, false) => &["DROP TRIGGER refuse_events"],
        (crate::Backend::Postgres, true) => &[
            "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'events refused by the test'; END $$",
            "CREATE TRIGGER refuse_events BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_events()",
        ],
        (crate::Backend::Postgres, false) => &[
            "DROP TRIGGER refuse_events ON audit_events",
            "DROP FUNCTION refuse_events()",
        ],
    };
    for s in statements {
        sqlx::query(s).execute(&mut conn).await.expect(s);
    }
    conn.close().await.expect("close");
}

/// A migrated catalog on a fresh SQLite file, with its folder (removed by the caller).
pub async fn sqlite_catalog() -> (crate::SqlCatalog, std::path::PathBuf) {
    use crate::Catalog;
    let (url, dir) = fresh_sqlite();
    let c = crate::SqlCatalog::connect(&url).await.expect("connect to SQLite");
    c.migrate().await.expect("migrate SQLite");
    assert_eq!(c.backend(), crate::Backend::Sqlite);
    (c, dir)
}

/// A migrated catalog on a fresh PostgreSQL database and its URL, or `None` (with one
/// line on stderr) when `TENANTD_TEST_DATABASE_URL` is unset outside CI.
pub async fn postgres_catalog(test: &str) -> Option<(crate::SqlCatalog, String)> {
    use crate::Catalog;
    let url = fresh_postgres(test).await?;
    let c = crate::SqlCatalog::connect(&url).await.expect("connect to PostgreSQL");
    c.migrate().await.expect("migrate PostgreSQL");
    assert_eq!(c.backend(), crate::Backend::Postgres);
    Some((c, url))
}

/// Closes `c` and drops its database (made by [`postgres_catalog`]) once its test passed;
/// a failed test leaves it for a look.
pub async fn drop_postgres(c: crate::SqlCatalog, url: &str) {
    c.pool().close().await;
    let name = url
        .rsplit_once('/')
        .map(|(_, n)| n.split('?').next().unwrap_or(n))
        .expect("database name in url");
    let base = std::env::var("TENANTD_TEST_DATABASE_URL").expect("set when a test ran");
    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
    }
}

/// Turns each `case(&SqlCatalog)` into a SQLite test and a PostgreSQL test (skipped, or a
/// failure under CI, as [`postgres_catalog`] says), each on a fresh catalog:
/// `both_catalogs! { case => sqlite_name, postgres_name; }`.
#[macro_export]
macro_rules! both_catalogs {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let (c, dir) = $crate::testing::sqlite_catalog().await;
            $case(&c).await;
            c.pool().close().await;
            let _ = std::fs::remove_dir_all(dir);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some((c, url)) = $crate::testing::postgres_catalog(stringify!($postgres)).await else { return };
            $case(&c).await;
            $crate::testing::drop_postgres(c, &url).await;
        }
    )*};
}
