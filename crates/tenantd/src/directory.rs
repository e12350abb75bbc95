//! The edge's [`Directory`] over the local catalog.
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use tenantd_core::{Email, Role, TenantId};
use tenantd_edge::{Directory, DirectoryError, KeyEntry, SecurityEvent, TenantEntry};
use tenantd_store::{ApiKey, Catalog, NewAuditEvent, StoreError, Tenant};

/// Reads the catalog for the edge.
pub struct CatalogDirectory(pub Arc<dyn Catalog>);

fn err(e: StoreError) -> DirectoryError {
    DirectoryError(e.to_string())
}

/// The edge's view of a stored tenant.
pub fn tenant_entry(t: &Tenant) -> TenantEntry {
    TenantEntry {
        id: t.id.clone(),
        plan: t.plan.clone(),
        status: t.status,
    }
}

/// The edge's view of a stored key.
pub fn key_entry(k: &ApiKey) -> KeyEntry {
    KeyEntry {
        id: k.id.as_str().into(),
        tenant: k.tenant_id.clone(),
        // A hash that does not parse can match nothing: the key is refused.
        hash: tenantd_edge::keys::parse_hash(&k.hash).unwrap_or([0; 32]),
        role: k.role.clone(),
        expires_at: k.expires_at,
        revoked: k.revoked_at.is_some(),
        last_used: AtomicI64::new(k.last_used_at.unwrap_or(0)),
    }
}

#[async_trait::async_trait]
impl Directory for CatalogDirectory {
    async fn tenant(&self, id: &TenantId) -> Result<Option<TenantEntry>, DirectoryError> {
        match self.0.get_tenant(id).await {
            Ok(t) => Ok(Some(tenant_entry(&t))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    async fn key(&self, id: &str) -> Result<Option<KeyEntry>, DirectoryError> {
        Ok(self.0.get_key(id).await.map_err(err)?.map(|k| key_entry(&k)))
    }

    async fn member_role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>, DirectoryError> {
        self.0.member_role(tenant, user_id).await.map_err(err)
    }

    async fn custom_role(&self, tenant: &TenantId, name: &str) -> Result<Option<Role>, DirectoryError> {
        self.0.get_role(tenant, name).await.map_err(err)
    }

    async fn domains(&self) -> Result<Vec<(String, TenantId)>, DirectoryError> {
        self.0.verified_domains().await.map_err(err)
    }

    async fn user_by_email(&self, email: &str) -> Result<String, DirectoryError> {
        let email = Email::parse(email).map_err(|e| DirectoryError(e.to_string()))?;
        Ok(self.0.ensure_user(&email).await.map_err(err)?.id)
    }

    async fn security_event(&self, ev: SecurityEvent) {
        let rec = NewAuditEvent {
            tenant_id: ev.tenant_id,
            actor: ev.actor,
            action: ev.action.to_string(),
            detail: ev.detail,
            request_id: ev.request_id,
        };
        if let Err(e) = self.0.record_audit(&rec).await {
            tracing::error!(error = %e, action = %rec.action, "could not record a security event");
        }
    }
}
