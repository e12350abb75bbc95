//! tenantd's tenant data plane (docs/isolation.md, docs/api.md): records, blobs and a cache, for one
//! tenant at a time, at its plan's isolation tier.
//!
//! - `row`: shared tables with `tenant_id` leading every key. On PostgreSQL they
//!   `FORCE ROW LEVEL SECURITY`, the store connects as [`APP_ROLE`] (which owns nothing
//!   and cannot bypass it), and each transaction sets `tenantd.tenant_id`: a query
//!   without it sees no rows.
//! - `schema`: a PostgreSQL schema per tenant, chosen by `search_path` per transaction
//!   (with the same row-level security inside).
//! - `database`: a PostgreSQL database per tenant on one of several servers, or an
//!   SQLite file per tenant when embedded (SQLite has no schemas: there the `schema`
//!   tier is a file per tenant too).
//!
//! [`DataStore::scope`] is the only way to reach a tenant's data; the placement table
//! says where it lives, and [`DataStore::move_tenant`] moves it online.
#![forbid(unsafe_code)]

mod copy;
mod location;
mod schema;
mod store;

pub use location::{Blob, CacheEntry, CacheSelector, Record};
pub use store::{
    with_user, DataKeys, DataOptions, DataStore, MigrateReport, Placement, Scope, SealCount, DEFAULT_POOL_SIZE,
};

/// The PostgreSQL role the data plane connects as: it owns nothing and cannot bypass
/// row-level security. tenantd creates it (without a password) when it is missing.
pub const APP_ROLE: &str = "tenantd_data";

/// Why the data plane failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The database role would let a query see other tenants' rows.
    #[error("{0}")]
    Unsafe(String),
    /// Input the data plane refuses.
    #[error("{0}")]
    Invalid(String),
    /// The write would take the tenant's storage past its limit: it had `used` bytes
    /// and the write wanted `wanted` more. Nothing was written.
    #[error("the storage limit is reached: {used} bytes used, {wanted} more wanted")]
    LevelReached {
        /// Bytes stored before the write.
        used: u64,
        /// Bytes the write would add.
        wanted: u64,
    },
    /// A tier move has frozen the tenant's writes (and did not finish in time).
    #[error("the tenant's data is moving to another tier; retry in a moment")]
    Moving,
    /// The tenant has no placement yet (pass the tier to place it at).
    #[error("the tenant's data has no placement yet")]
    NotPlaced,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value did not decrypt (sealed under another tenant's key or for another
    /// object, altered, or its key destroyed), or could not be sealed.
    #[error("a stored value could not be decrypted: {0}")]
    Sealed(String),
    /// A stored document did not parse.
    #[error("corrupt stored document: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// A write's result with the tenant's storage level before and after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    /// What was written.
    pub value: T,
    /// Bytes stored before.
    pub before: u64,
    /// Bytes stored after.
    pub after: u64,
}

/// Checks a collection name or record id.
pub(crate) fn check_name(what: &str, v: &str) -> Result<(), DataError> {
    let ok = (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "{what} must be 1 to 128 letters, digits, '_', '-' or '.'"
        )))
    }
}

/// How deep a record or cache value may nest objects and arrays (a record's own object
/// is the first level). The OpenAPI document describes exactly this much.
pub const MAX_DEPTH: usize = 16;

/// The levels of objects and arrays in `v` (0 for a plain value).
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Refuses a value nested deeper than [`MAX_DEPTH`].
pub fn check_depth(v: &serde_json::Value) -> Result<(), DataError> {
    if depth(v) <= MAX_DEPTH {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "the value nests objects and arrays more than {MAX_DEPTH} levels deep"
        )))
    }
}

/// Checks a blob path: 1 to 1024 characters of `/`-separated segments, none empty, `.` or
/// `..`, and no control characters.
pub fn check_blob_path(path: &str) -> Result<(), DataError> {
    let ok = (1..=1024).contains(&path.chars().count())
        && !path.chars().any(char::is_control)
        && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(DataError::Invalid(
            "a blob path is 1 to 1024 characters of '/'-separated segments, none empty, '.' or '..', without control characters".into(),
        ))
    }
}

/// Checks a cache key (1 to 512 characters, no control characters) or a tag (1 to 64
/// letters, digits, '_', '-', '.' or ':').
pub fn check_cache_key(key: &str) -> Result<(), DataError> {
    if (1..=512).contains(&key.chars().count()) && !key.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(DataError::Invalid(
            "a cache key is 1 to 512 characters, without control characters".into(),
        ))
    }
}

/// Checks a cache tag.
pub fn check_tag(tag: &str) -> Result<(), DataError> {
    let ok = (1..=64).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "tag '{tag}' must be 1 to 64 letters, digits, '_', '-', '.' or ':'"
        )))
    }
}

/// How many data-plane migrations this build has (each location records those it has).
pub fn migrations() -> usize {
    schema::MIGRATIONS.len()
}

/// A new id for an upload's chunks.
pub fn new_blob_id() -> String {
    format!("blb_{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_keys_and_tags_are_checked() {
        assert!(check_name("x", "orders").is_ok());
        assert!(check_name("x", "a.b-c_1").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(check_name("x", bad).is_err(), "{bad}");
        }
        assert!(check_blob_path("a/b/c.png").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\nb", &"x".repeat(1025)] {
            assert!(check_blob_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_cache_key("user:42/profile").is_ok());
        assert!(check_cache_key("").is_err() && check_cache_key("a\u{0}").is_err());
        assert!(check_tag("user:42").is_ok());
        assert!(check_tag("a,b").is_err() && check_tag("").is_err());
        assert_ne!(new_blob_id(), new_blob_id());
    }
}
