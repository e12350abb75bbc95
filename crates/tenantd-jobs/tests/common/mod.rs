//! What the queue's test suites share: a fresh catalog on each backend (`sqlite_*` on a
//! fresh file, `postgres_*` on a fresh database from `TENANTD_TEST_DATABASE_URL`; skipped
//! with one line when it is unset, a failure under `CI=true`), and small helpers.
#![allow(dead_code)]
use tenantd_core::TenantId;
use tenantd_store::SqlCatalog;

pub use tenantd_store::testing::drop_postgres;

pub async fn sqlite() -> (SqlCatalog, std::path::PathBuf) {
    tenantd_store::testing::sqlite_catalog().await
}

pub async fn postgres(test: &str) -> Option<(SqlCatalog, String)> {
    tenantd_store::testing::postgres_catalog(test).await
}

macro_rules! both_backends {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let (c, dir) = crate::common::sqlite().await;
            $case(&c).await;
            c.pool().close().await;
            let _ = std::fs::remove_dir_all(dir);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some((c, url)) = crate::common::postgres(stringify!($postgres)).await else { return };
            $case(&c).await;
            crate::common::drop_postgres(c, &url).await;
        }
    )*};
}

pub const T0: i64 = 1_700_000_000_000;
pub const LEASE: i64 = 30_000;

pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn q(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
