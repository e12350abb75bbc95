//! The event log's service (docs/events.md): verifying a chain (every event, its recorded
//! head, its latest checkpoint) and signing the heads of the chains that moved.
use crate::error::ApiResult;
use crate::state::AppState;
use tenantd_store::chain::{Broken, Checkpoint, Verified};

/// `GET …/audit/verify` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ChainVerification)]
pub struct Verification {
    /// Whether every event and the latest checkpoint verify.
    pub valid: bool,
    /// Events checked (when valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// The chain's head `{seq, hash}` (when valid; `null` for an empty chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub head: Option<serde_json::Value>,
    /// Its latest checkpoint (when valid; `null` when it has none yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Checkpoint>)]
    pub checkpoint: Option<serde_json::Value>,
    /// The first `seq` that does not verify (when not valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    /// Why (when not valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verification {
    fn valid(done: Verified, cp: Option<Checkpoint>) -> Self {
        Verification {
            valid: true,
            events: Some(done.events),
            head: Some(done.head.map_or(
                serde_json::Value::Null,
                |(seq, hash)| serde_json::json!({"seq": seq, "hash": hash}),
            )),
            checkpoint: Some(cp.map_or(serde_json::Value::Null, |c| serde_json::json!(c))),
            first_bad_seq: None,
            reason: None,
        }
    }

    fn broken(b: Broken) -> Self {
        Verification {
            valid: false,
            events: None,
            head: None,
            checkpoint: None,
            first_bad_seq: Some(b.first_bad_seq),
            reason: Some(b.reason),
        }
    }
}

impl AppState {
    /// Checks `chain`: every event, its recorded head, and its latest checkpoint (signed by
    /// one of this server's keys, naming an event of the chain with that hash).
    pub async fn verify(&self, chain: &str) -> ApiResult<Verification> {
        let jwks = self.edge.signer().jwks();
        Ok(match self.catalog.verify_checkpointed(chain, &jwks).await? {
            Err(b) => Verification::broken(b),
            Ok((done, cp)) => Verification::valid(done, cp),
        })
    }

    /// Signs the head of every chain that moved since its last checkpoint.
    pub async fn checkpoint_chains(&self) -> ApiResult<Vec<Checkpoint>> {
        let mut out = Vec::new();
        for (tenant, seq, hash) in self.catalog.heads_to_checkpoint().await? {
            let at = tenantd_core::ts::format(tenantd_core::now_secs());
            let signer = self.edge.signer();
            let kid = signer.kid().to_string();
            let tenant_id = tenant.map(|t| t.to_string());
            let bytes = Checkpoint::signed_bytes(tenant_id.as_deref(), seq, &hash, &at, &kid);
            let (_, signature) = signer.sign_detached(&bytes);
            let cp = Checkpoint {
                tenant_id,
                seq,
                hash,
                at,
                kid,
                signature,
            };
            self.catalog.add_checkpoint(&cp).await?;
            out.push(cp);
        }
        Ok(out)
    }
}
