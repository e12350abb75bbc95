//! [`SigningKeyStore`] on SQL: JWT signing keys and the generated operator key.
use super::SqlCatalog;
use crate::*;
use base64::Engine;
use sqlx::Row;
use tenantd_core::now_secs;

#[async_trait::async_trait]
impl SigningKeyStore for SqlCatalog {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_x, created_at, generation FROM signing_keys ORDER BY generation",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let pk: String = r.try_get("private_key")?;
                Ok(SigningKeyRecord {
                    kid: r.try_get("kid")?,
                    private_pkcs8: base64::engine::general_purpose::STANDARD
                        .decode(pk)
                        .map_err(|_| StoreError::Invalid("stored signing key is not base64".into()))?,
                    public_x: r.try_get("public_x")?,
                    created_at: r.try_get("created_at")?,
                    generation: r.try_get("generation")?,
                })
            })
            .collect()
    }

    async fn add_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
        // A kid or a generation already taken (another node added it first) adds nothing.
        sqlx::query("INSERT INTO signing_keys (kid, private_key, public_x, created_at, generation) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .bind(&k.kid)
            .bind(base64::engine::general_purpose::STANDARD.encode(&k.private_pkcs8))
            .bind(&k.public_x)
            .bind(k.created_at)
            .bind(k.generation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_signing_key_private(&self, w: Option<&mut Work>, kid: &str, private: &[u8]) -> Result<()> {
        let q = sqlx::query("UPDATE signing_keys SET private_key = $2 WHERE kid = $1")
            .bind(kid)
            .bind(base64::engine::general_purpose::STANDARD.encode(private));
        match w {
            Some(w) => q.execute(&mut *w.tx).await?,
            None => q.execute(&self.pool).await?,
        };
        Ok(())
    }

    async fn operator_key_hash(&self) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT hash FROM operator_keys WHERE id = 'operator'")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("hash"))
            .transpose()?)
    }

    async fn clear_operator_key_hash(&self) -> Result<bool> {
        let n = sqlx::query("DELETE FROM operator_keys WHERE id = 'operator'")
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn set_operator_key_hash(&self, hash_hex: &str) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO operator_keys (id, hash, created_at) VALUES ('operator', $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(hash_hex)
        .bind(now_secs())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
