//! tenantd's tenant data plane (CONTRACT §7).
//!
//! This version holds the `row` tier's storage for records: shared tables with
//! `tenant_id` leading every key. A [`RowStore`] is only reachable through a [`Scope`]
//! made for one tenant, so a query without a tenant cannot be written. On PostgreSQL the
//! database enforces it too: the tables `FORCE ROW LEVEL SECURITY`, the store connects as
//! the `tenantd_data` role (which owns nothing and cannot bypass row-level security),
//! and each transaction sets `tenantd.tenant_id`; a query without it sees no rows.
#![forbid(unsafe_code)]

mod row;

pub use row::{with_user, DataError, Record, RowStore, Scope, APP_ROLE};
