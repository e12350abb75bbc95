//! Exports and backups as the catalog keeps them ([`ArchiveStore`](crate::ArchiveStore)).
use serde::Serialize;
use tenantd_core::TenantId;

/// What an archive is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// Decrypted, for the tenant's own use; deleted after 7 days.
    Export,
    /// Sealed under the tenant's data key; restorable.
    Backup,
}

impl ArchiveKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::Backup => "backup",
        }
    }
}

/// A new archive.
#[derive(Debug, Clone)]
pub struct NewArchive {
    /// `exp_…` or `bak_…`.
    pub id: String,
    /// Whose.
    pub tenant: TenantId,
    /// What for.
    pub kind: ArchiveKind,
    /// The catalog schema version it is written at.
    pub schema_version: i64,
    /// When it is deleted (Unix seconds), if ever.
    pub expires_at: Option<i64>,
    /// The job building it.
    pub job_id: Option<String>,
}

/// How an archive ended.
#[derive(Debug, Clone)]
pub enum ArchiveEnd {
    /// Built.
    Done {
        /// Bytes of the `.tar.gz`.
        size_bytes: u64,
        /// Its SHA-256, hex.
        sha256: String,
        /// How many chunks hold it.
        chunks: i64,
        /// The data key version its chunks are sealed under (backups).
        key_version: Option<i64>,
        /// Rows per file (`records/orders.ndjson`: 12).
        counts: serde_json::Value,
    },
    /// Not built.
    Failed(String),
}

/// An export or backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Archive {
    /// Its id.
    pub id: String,
    /// Whose.
    #[serde(skip)]
    pub tenant: TenantId,
    /// `export` or `backup`.
    #[serde(skip)]
    pub kind: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Items written of all.
    pub done: u64,
    /// Items in all.
    pub total: u64,
    /// Bytes of the `.tar.gz`, once done.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the `.tar.gz`, once done.
    pub sha256: Option<String>,
    /// Chunks, once done.
    #[serde(skip)]
    pub chunks: Option<i64>,
    /// The data key version of a backup's chunks.
    #[serde(skip)]
    pub key_version: Option<i64>,
    /// The catalog schema version it was written at.
    pub schema_version: i64,
    /// Rows per file, once done.
    pub counts: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once ended.
    pub finished_at: Option<i64>,
    /// Unix seconds, if it is deleted then.
    pub expires_at: Option<i64>,
}
