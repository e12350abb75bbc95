//! Flags and configuration as the edge serves them (docs/config.md): one [`Settings`]
//! snapshot per node, replaced whole when a flag, a schema, a plan's layer or a plan's
//! features change; each tenant's own layer rides in its [`crate::TenantEntry`].
use tenantd_core::flags::FlagSet;
use tenantd_core::layers::SharedLayers;

/// What every tenant's evaluation shares: the flags (with the plans' features) and the
/// configuration's defaults and plan layers.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Every flag, ready to evaluate.
    pub flags: FlagSet,
    /// The configuration's defaults and plan layers.
    pub layers: SharedLayers,
}
