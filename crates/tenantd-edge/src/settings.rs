//! Flags and configuration as the edge serves them (docs/config.md): one [`Settings`]
//! snapshot per node, replaced whole when a flag, a schema, a plan's layer or a plan's
//! features change; each tenant's own layer rides in its [`crate::TenantEntry`].
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use tenantd_core::flags::{Evaluation, FlagSet, Reason, Subject};
use tenantd_core::layers::{Effective, SharedLayers, Source};

/// What every tenant's evaluation shares: the flags (with the plans' features) and the
/// configuration's defaults and plan layers.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Every flag, ready to evaluate.
    pub flags: FlagSet,
    /// The configuration's defaults and plan layers.
    pub layers: SharedLayers,
    /// A remote tenantd's answers for one request, in place of the two above.
    pub evaluated: Option<Evaluated>,
}

/// A remote tenantd's answers for one request (`EdgeLayer::remote` with
/// [`crate::RemoteEdge::with_settings`]): every flag evaluated for the tenant with the
/// caller as the targeting key, and every configuration key's effective value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evaluated {
    /// Flags by key.
    pub flags: BTreeMap<String, FlagWire>,
    /// Configuration by key.
    pub config: BTreeMap<String, ConfigWire>,
}

/// One flag's evaluation on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlagWire {
    /// The value.
    pub value: Value,
    /// Why.
    pub reason: Reason,
    /// `default`, `tenant`, `plan` or `rollout`.
    pub variant: String,
}

/// One configuration key's effective value on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigWire {
    /// The value.
    pub value: Value,
    /// The layer it came from.
    pub source: Source,
    /// That layer's version.
    pub version: i64,
}

impl Evaluated {
    /// What `settings` answer for `tenant` and `caller` (the targeting key). Flags that
    /// cannot be evaluated for the caller are left out.
    pub fn of(settings: &Settings, tenant: &crate::TenantEntry, caller: &str) -> Self {
        let subject = Subject {
            tenant: tenant.id.as_str(),
            plan: tenant.plan.as_str(),
            targeting_key: Some(caller),
        };
        let flags = settings
            .flags
            .evaluate_all(&subject)
            .filter_map(|(k, r)| {
                let e = r.ok()?;
                let wire = FlagWire {
                    value: e.value.clone(),
                    reason: e.reason,
                    variant: e.variant.to_string(),
                };
                Some((k.to_string(), wire))
            })
            .collect();
        let config = settings
            .layers
            .all(&tenant.config, tenant.plan.as_str())
            .into_iter()
            .map(|(k, e)| {
                let wire = ConfigWire {
                    value: e.value.clone(),
                    source: e.source,
                    version: e.version,
                };
                (k.to_string(), wire)
            })
            .collect();
        Self { flags, config }
    }

    /// A flag's evaluation for the caller.
    pub fn flag(&self, key: &str) -> Option<Evaluation<'_>> {
        let f = self.flags.get(key)?;
        let variant = ["tenant", "plan", "rollout"]
            .into_iter()
            .find(|v| *v == f.variant)
            .unwrap_or("default");
        Some(Evaluation {
            value: &f.value,
            reason: f.reason,
            variant,
        })
    }

    /// A configuration key's effective value.
    pub fn config(&self, key: &str) -> Option<Effective<'_>> {
        self.config.get(key).map(|c| Effective {
            value: &c.value,
            source: c.source,
            version: c.version,
        })
    }
}
