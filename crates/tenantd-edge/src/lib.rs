//! tenantd's edge: the request pipeline (resolve the tenant → authenticate → authorize)
//! as a tower layer that produces one immutable [`RequestContext`] per request, and the
//! [`TenantContext`] extractor handlers take. Handlers never read a tenant id from the
//! raw request: they take the context the edge built.
//!
//! The edge reads the catalog through a [`Directory`] (the local catalog, or a remote
//! tenantd) behind an in-memory [`EdgeCache`]; a warm API-key request is decided
//! without I/O.
#![forbid(unsafe_code)]

pub mod activity;
pub mod cache;
pub mod context;
pub mod jwt;
pub mod keys;
pub mod layer;
pub mod pipeline;
pub mod problem;
pub mod remote;
pub mod request;
pub mod security;
pub mod settings;
pub mod upstream;

pub use cache::{Change, Directory, DirectoryError, EdgeCache, KeyEntry, SecurityEvent, TenantEntry};
pub use context::{Ctx, Principal, RequestContext, TenantContext};
pub use layer::EdgeLayer;
pub use pipeline::{Edge, EdgeConfig, EdgeMetrics, RequestInfo, RouteNeeds};
pub use problem::Problem;
pub use remote::RemoteEdge;
pub use settings::Settings;
pub use upstream::Upstream;
