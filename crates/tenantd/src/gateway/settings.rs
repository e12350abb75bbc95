//! The gateway's settings: the `[gateway]` table of the configuration file (routes,
//! timeouts, body limit), checked into [`GatewaySettings`], which a reload swaps whole.
use http::Method;
use serde::Deserialize;
use std::time::Duration;
use tenantd_core::Permission;
use tenantd_edge::pipeline::MAX_COST;

/// The `[gateway]` table of the configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `[[gateway.routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// Connecting to the upstream (default 2000).
    pub connect_timeout_ms: Option<u64>,
    /// From sending the request to the upstream's response headers (default 30000).
    pub request_timeout_ms: Option<u64>,
    /// Largest request body proxied (default 10 MiB).
    pub max_body_bytes: Option<u64>,
    /// How often the configuration file is checked for changes (default 1000; 0: only on
    /// SIGHUP).
    pub reload_poll_ms: Option<u64>,
}

/// One `[[gateway.routes]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Path prefix, matched on whole segments (`/reports` matches `/reports/1`, not
    /// `/reportsx`).
    pub prefix: String,
    /// Methods the route applies to (default: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Permission the caller's role must grant (default: any authenticated principal).
    pub permission: Option<String>,
    /// api_calls counted per request (default 1).
    pub cost: Option<u64>,
    /// No authentication: the tenant is resolved from host, path or header and its use
    /// is counted.
    #[serde(default)]
    pub public: bool,
    /// Adds `X-Tenant-Features`: the boolean flags on for the tenant and caller.
    #[serde(default)]
    pub features: bool,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Path prefix.
    pub prefix: String,
    /// Methods (empty: all).
    pub methods: Vec<Method>,
    /// Permission demanded.
    pub permission: Option<String>,
    /// api_calls per request.
    pub cost: u64,
    /// No authentication.
    pub public: bool,
    /// Adds `X-Tenant-Features`.
    pub features: bool,
}

/// The gateway's reloadable settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Longest prefix first.
    pub routes: Vec<Route>,
    /// Connecting to the upstream.
    pub connect_timeout: Duration,
    /// Until the upstream's response headers.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Configuration file polling (zero: SIGHUP only).
    pub reload_poll: Duration,
}

impl GatewaySettings {
    /// Validates the `[gateway]` table; the error names the offending key.
    pub fn from_file(f: GatewayFile) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(f.routes.len());
        for (i, r) in f.routes.into_iter().enumerate() {
            let at = format!("gateway.routes[{i}]");
            if !r.prefix.starts_with('/') || r.prefix.contains(['?', '#', ' ']) {
                return Err(format!("{at}.prefix '{}' must be a path starting with /", r.prefix));
            }
            let methods = r
                .methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("{at}.methods: '{m}' is not an HTTP method"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(p) = &r.permission {
                Permission::parse(p).map_err(|e| format!("{at}.permission: {}", e.0))?;
            }
            let cost = r.cost.unwrap_or(1);
            if cost > MAX_COST {
                return Err(format!("{at}.cost must be at most {MAX_COST}"));
            }
            if r.public && r.permission.is_some() {
                return Err(format!("{at}: a public route cannot demand a permission"));
            }
            routes.push(Route {
                prefix: r.prefix,
                methods,
                permission: r.permission,
                cost,
                public: r.public,
                features: r.features,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let ms = |v: Option<u64>, default: u64, name: &str| match v.unwrap_or(default) {
            0 => Err(format!("gateway.{name} must be at least 1")),
            n => Ok(Duration::from_millis(n)),
        };
        Ok(Self {
            routes,
            connect_timeout: ms(f.connect_timeout_ms, 2_000, "connect_timeout_ms")?,
            request_timeout: ms(f.request_timeout_ms, 30_000, "request_timeout_ms")?,
            max_body_bytes: match f.max_body_bytes.unwrap_or(10 << 20) {
                0 => return Err("gateway.max_body_bytes must be at least 1".into()),
                n => n,
            },
            reload_poll: Duration::from_millis(f.reload_poll_ms.unwrap_or(1_000)),
        })
    }

    /// The route for a request: the longest prefix whose methods include `method`.
    pub fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            let on_boundary = path
                .strip_prefix(r.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || r.prefix.ends_with('/') || rest.starts_with('/'));
            on_boundary && (r.methods.is_empty() || r.methods.contains(method))
        })
    }
}
