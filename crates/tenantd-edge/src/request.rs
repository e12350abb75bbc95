//! The parts of a request the edge reads, taken once from its head.
use crate::problem::Problem;
use tenantd_core::Code;

/// The parts of a request the edge reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo<'a> {
    /// The path, without query.
    pub path: &'a str,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// `X-Tenant-ID` (or its alias `Tenant-ID`).
    pub tenant_header: Option<&'a str>,
    /// `Tenant-ID` when both spellings were sent.
    pub tenant_header_alias: Option<&'a str>,
    /// The bearer token.
    pub bearer: Option<&'a str>,
    /// What the request costs in `api_calls` (`None`: 1).
    pub cost: Option<u64>,
    /// What a gateway route demands (`None` for tenantd's own API, whose handlers
    /// authorize).
    pub route: Option<RouteNeeds<'a>>,
}

impl<'a> RequestInfo<'a> {
    /// The tenant sources of a request (path, query, host, tenant headers); no bearer,
    /// cost or route yet.
    ///
    /// A `Host`, `X-Tenant-ID` or `Tenant-ID` sent more than once is refused (which one
    /// would count is a guess an attacker could exploit); so is a `Host` that is not
    /// text (`400 invalid_request`) or a tenant header that is not (`400
    /// invalid_tenant_id`).
    pub fn of(req: &'a http::request::Parts) -> Result<Self, Problem> {
        let tenant = |name| {
            single_header(req, name)?.map(|v| v.to_str()).transpose().map_err(|_| {
                Problem::new(
                    Code::InvalidTenantId,
                    format!("the {name} header is not a valid tenant id"),
                )
            })
        };
        let host = single_header(req, "host")?
            .map(|v| v.to_str())
            .transpose()
            .map_err(|_| Problem::invalid("the Host header is not valid text"))?;
        Ok(Self {
            path: req.uri.path(),
            query: req.uri.query(),
            host: host.or_else(|| req.uri.host()),
            tenant_header: tenant("x-tenant-id")?,
            tenant_header_alias: tenant("tenant-id")?,
            ..Self::default()
        })
    }
}

/// The one value of header `name`, or `400 invalid_request` naming it when it was sent
/// more than once.
pub fn single_header<'r>(req: &'r http::request::Parts, name: &str) -> Result<Option<&'r http::HeaderValue>, Problem> {
    let mut all = req.headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Problem::invalid(format!(
            "the {name} header was sent more than once; send it once"
        )));
    }
    Ok(first)
}

/// What a gateway route demands before its request is admitted (docs/gateway.md): a
/// principal acting for an active tenant, with `permission` if set; or, for a public
/// route, only a tenant.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteNeeds<'a> {
    /// The permission the caller's role must grant.
    pub permission: Option<&'a str>,
    /// No authentication: the tenant is resolved from the request and its use counted.
    pub public: bool,
}
