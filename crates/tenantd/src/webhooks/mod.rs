//! Webhooks (docs/events.md#webhooks): endpoints that get events as Standard Webhooks,
//! signed, retried, and delivered at least once. The event log is the outbox
//! ([`dispatch`]); each delivery is a job on the tenant-fair queue ([`deliver`]); where an
//! endpoint may point is checked by [`guard`]; signatures are [`sign`]'s.
pub mod deliver;
pub mod dispatch;
pub mod guard;
pub mod settings;
pub mod sign;
