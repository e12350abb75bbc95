//! Configuration: embedded defaults, then the TOML file (`--config` / `TENANTD_CONFIG`),
//! then `TENANTD_*` environment variables, then flags. Validated once, at load.
use serde::Deserialize;
use std::path::PathBuf;
use tenantd_core::secret::{Secret, SecretUrl};

/// Flags of `tenantd serve` and `tenantd migrate`; each has an environment twin.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TENANTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the API listener [default: 127.0.0.1:8080].
    #[arg(long, env = "TENANTD_LISTEN")]
    pub listen: Option<String>,
    /// Address of the gateway listener [default: none].
    #[arg(long, env = "TENANTD_GATEWAY_LISTEN")]
    pub gateway_listen: Option<String>,
    /// Upstream the gateway proxies to.
    #[arg(long, env = "TENANTD_UPSTREAM")]
    pub upstream: Option<String>,
    /// Data directory [default: ./tenantd-data].
    #[arg(long, env = "TENANTD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Catalog database URL [default: sqlite://<data-dir>/catalog.db]; postgres://… selects PostgreSQL.
    #[arg(long, env = "TENANTD_DATABASE_URL")]
    pub database_url: Option<SecretUrl>,
    /// Redis URL for shared counters [default: none, in-process counters].
    #[arg(long, env = "TENANTD_REDIS_URL")]
    pub redis_url: Option<SecretUrl>,
    /// Base domain: `{tenant}.{base-domain}` hosts name the tenant.
    #[arg(long, env = "TENANTD_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// `false` maps every request to the default tenant [default: true].
    #[arg(long, env = "TENANTD_MULTI_TENANCY")]
    pub multi_tenancy: Option<bool>,
    /// The tenant of single-tenant mode [default: default].
    #[arg(long, env = "TENANTD_DEFAULT_TENANT")]
    pub default_tenant: Option<String>,
    /// Log format: json or text [default: json].
    #[arg(long, env = "TENANTD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or tenantd=debug [default: info].
    #[arg(long, env = "TENANTD_LOG")]
    pub log: Option<String>,
    /// File holding the master key (base64 of 32 bytes) [default: <data-dir>/master.key,
    /// generated at the first start]; `TENANTD_MASTER_KEY` holds the key itself.
    #[arg(long, env = "TENANTD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// The `[oidc]` table: an external OpenID provider whose ID tokens are accepted.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// URL of the provider's JWKS.
    pub jwks_url: Option<String>,
    /// Or a file holding it.
    pub jwks_file: Option<PathBuf>,
}

/// The TOML file; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<String>,
    gateway_listen: Option<String>,
    upstream: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<SecretUrl>,
    redis_url: Option<SecretUrl>,
    base_domain: Option<String>,
    multi_tenancy: Option<bool>,
    default_tenant: Option<String>,
    log_format: Option<String>,
    log: Option<String>,
    allow_query_tenant: Option<bool>,
    self_signup: Option<bool>,
    signup_plans: Option<Vec<String>>,
    token_ttl_seconds: Option<i64>,
    key_usage_flush_seconds: Option<u64>,
    usage_flush_ms: Option<u64>,
    purge_interval_seconds: Option<u64>,
    redis_prefix: Option<String>,
    shutdown_grace_seconds: Option<u64>,
    max_body_bytes: Option<usize>,
    domain_verification_url: Option<String>,
    data_database_url: Option<SecretUrl>,
    data_servers: Option<Vec<SecretUrl>>,
    data_move_grace_seconds: Option<u64>,
    data_pool_size: Option<u32>,
    encrypt_data: Option<bool>,
    max_blob_bytes: Option<u64>,
    oidc: Option<OidcFile>,
    /// `[gateway]`: routes, timeouts and body limit (reloadable).
    pub(crate) gateway: Option<crate::gateway::settings::GatewayFile>,
    /// `[server]`: connection limits of every listener.
    server: Option<ServerFile>,
    /// `[audit]`: the event log's checkpoints.
    audit: Option<AuditFile>,
    /// `[metrics]`: the per-tenant series.
    metrics: Option<MetricsFile>,
    /// `[retention]`: how long events, usage and data are kept.
    retention: Option<crate::retention_policy::Retention>,
    /// `[webhooks]`: delivery.
    webhooks: Option<crate::webhooks::settings::WebhooksFile>,
    /// `[roles.<builtin>]`: app permissions added to built-in roles.
    roles: Option<std::collections::BTreeMap<String, RoleFile>>,
    /// `[console]`: the operator's web console.
    console: Option<ConsoleFile>,
}

/// The `[console]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleFile {
    secure_cookie: Option<bool>,
}

/// A `[roles.<builtin>]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    allow: Vec<String>,
}

/// The app permissions `[roles.*]` adds to built-in roles, checked: a known built-in
/// role, valid permissions, none of tenantd's own.
fn platform_roles(
    roles: std::collections::BTreeMap<String, RoleFile>,
) -> Result<Vec<(tenantd_core::BuiltinRole, Vec<tenantd_core::Permission>)>, ConfigError> {
    roles
        .into_iter()
        .map(|(name, r)| {
            let role = tenantd_core::BuiltinRole::from_name(&name).ok_or_else(|| {
                ConfigError(format!(
                    "[roles.{name}]: not a built-in role (owner, admin, member, viewer, guest); custom roles are made in each tenant"
                ))
            })?;
            let perms = r
                .allow
                .iter()
                .map(|p| {
                    let p = tenantd_core::Permission::parse(p).map_err(|e| ConfigError(format!("[roles.{name}] allow: {e}")))?;
                    tenantd_core::perms::check_platform_grant(&p)
                        .map_err(|e| ConfigError(format!("[roles.{name}] allow: {e}")))?;
                    Ok(p)
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            Ok((role, perms))
        })
        .collect()
}

/// The `[audit]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    checkpoint_seconds: Option<u64>,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    tenant_series: Option<usize>,
}

/// The most `[metrics] tenant_series` may be: each named tenant costs a handful of series.
pub const MAX_TENANT_SERIES: usize = 10_000;

/// The `[server]` table: connection limits, for the API and the gateway listener alike.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
}

impl ServerFile {
    fn limits(&self) -> Result<crate::conn::Limits, ConfigError> {
        let d = crate::conn::Limits::default();
        let positive = |name: &str, v: Option<u64>, default: std::time::Duration| match v {
            Some(0) => Err(ConfigError(format!("[server] {name} must be at least 1"))),
            Some(ms) => Ok(std::time::Duration::from_millis(ms)),
            None => Ok(default),
        };
        Ok(crate::conn::Limits {
            header_read_timeout: positive(
                "header_read_timeout_ms",
                self.header_read_timeout_ms,
                d.header_read_timeout,
            )?,
            idle_timeout: positive("idle_timeout_ms", self.idle_timeout_ms, d.idle_timeout)?,
            max_connections: match self.max_connections {
                Some(0) => return Err(ConfigError("[server] max_connections must be at least 1".into())),
                Some(n) => n,
                None => d.max_connections,
            },
        })
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// API listener.
    pub listen: String,
    /// Gateway listener.
    pub gateway_listen: Option<String>,
    /// Gateway upstream, parsed.
    pub upstream: Option<tenantd_edge::Upstream>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Catalog URL (its password never shows in `Debug`).
    pub database_url: SecretUrl,
    /// Redis URL.
    pub redis_url: Option<SecretUrl>,
    /// Base domain for subdomain resolution.
    pub base_domain: Option<String>,
    /// Multi-tenant (true) or single-tenant mode.
    pub multi_tenancy: bool,
    /// Single-tenant mode's tenant.
    pub default_tenant: String,
    /// `json` or `text`.
    pub log_format: String,
    /// tracing filter.
    pub log: String,
    /// Accept `?tenant_id=`.
    pub allow_query_tenant: bool,
    /// Anyone may create a tenant on a signup plan.
    pub self_signup: bool,
    /// Plans self-signup may choose.
    pub signup_plans: Vec<String>,
    /// Lifetime of tokens from `/v1/token` and the mint endpoint (≤ 900).
    pub token_ttl_seconds: i64,
    /// How often API keys' `last_used_at` is written back.
    pub key_usage_flush_seconds: u64,
    /// How often metered usage is written to the catalog (ms); 0 writes it before each
    /// answer (synchronous).
    pub usage_flush_ms: u64,
    /// How often deleted tenants whose retention ended are purged (seconds); 0 never.
    pub purge_interval_seconds: u64,
    /// Prefix of every Redis key tenantd writes (several deployments may share a Redis).
    pub redis_prefix: String,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace_seconds: u64,
    /// Largest request body accepted by the API.
    pub max_body_bytes: usize,
    /// Where a custom domain's proof is fetched; `{host}` is replaced by the domain.
    pub domain_verification_url: String,
    /// Where tenant data connects on PostgreSQL (a role owning nothing and unable to
    /// bypass row-level security); `None`: `tenantd_data` on the catalog's server.
    pub data_database_url: Option<SecretUrl>,
    /// PostgreSQL servers (owner URLs) for `database`-tier tenants; empty: the catalog's.
    pub data_servers: Vec<SecretUrl>,
    /// How long a moved tenant's old copy is kept after the switch.
    pub data_move_grace_seconds: u64,
    /// Connections of the tenant data pool (row and schema tiers) on PostgreSQL.
    pub data_pool_size: u32,
    /// Whether tenants' records, blob chunks and cache values are sealed under their data
    /// keys (default true; off only for measuring its cost).
    pub encrypt_data: bool,
    /// `[retention]`.
    pub retention: crate::retention_policy::Retention,
    /// The largest blob accepted.
    pub max_blob_bytes: u64,
    /// External OpenID provider.
    pub oidc: Option<OidcFile>,
    /// The gateway's routes, timeouts and body limit.
    pub gateway: crate::gateway::settings::GatewaySettings,
    /// Connection limits of every listener (`[server]`).
    pub server: crate::conn::Limits,
    /// How many tenants get their own `tenant` label at `/metrics` (`[metrics]
    /// tenant_series`, default 100; 0 puts every tenant under `_other`).
    pub tenant_series: usize,
    /// How often each changed event chain's head is signed (`[audit] checkpoint_seconds`,
    /// seconds); 0 only on `POST /v1/audit/checkpoints`.
    pub audit_checkpoint_seconds: u64,
    /// How webhooks are delivered (`[webhooks]`).
    pub webhooks: crate::webhooks::settings::WebhookSettings,
    /// `[console] secure_cookie`: the console's session cookie is always `Secure` (set it
    /// when a TLS-terminating proxy serves tenantd; docs/console.md).
    pub console_secure_cookie: bool,
    /// App permissions added to built-in roles for every tenant (`[roles.*]`).
    pub platform_roles: Vec<(tenantd_core::BuiltinRole, Vec<tenantd_core::Permission>)>,
    /// The configuration file, re-read when the gateway reloads.
    pub config_path: Option<PathBuf>,
    /// `TENANTD_ADMIN_KEY`, never printed (`Debug` shows `[redacted]`).
    pub admin_key: Option<Secret>,
    /// `TENANTD_MASTER_KEY`: the master key itself, base64 (never printed).
    pub master_key: Option<Secret>,
    /// Where the master key is read from when `TENANTD_MASTER_KEY` is not set
    /// (`--master-key-file`; default `<data-dir>/master.key`).
    pub master_key_file: Option<PathBuf>,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads and validates: defaults < file < environment < flags (clap merges the last two).
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError(format!("{}: {}", p.display(), e.message())))?
            }
            None => FileConfig::default(),
        };
        let admin_key = std::env::var("TENANTD_ADMIN_KEY").ok().filter(|s| !s.is_empty());
        let mut c = Self::merge(args, file, admin_key)?;
        c.config_path = args.config.clone();
        Ok(c.with_env_master_key())
    }

    /// The master key from `TENANTD_MASTER_KEY`, when it is set (for services that build
    /// their configuration with [`Config::merge`] and share a tenantd catalog).
    pub fn with_env_master_key(mut self) -> Self {
        if let Some(k) = std::env::var("TENANTD_MASTER_KEY").ok().filter(|s| !s.is_empty()) {
            self.master_key = Some(Secret::new(k));
        }
        self
    }

    /// Merges flags/environment over the file over defaults, and validates.
    pub fn merge(a: &ServeArgs, f: FileConfig, admin_key: Option<String>) -> Result<Self, ConfigError> {
        let data_dir = a
            .data_dir
            .clone()
            .or(f.data_dir)
            .unwrap_or_else(|| PathBuf::from("./tenantd-data"));
        let database_url = a
            .database_url
            .clone()
            .or(f.database_url)
            .unwrap_or_else(|| SecretUrl::new(format!("sqlite://{}", data_dir.join("catalog.db").display())));
        let c = Config {
            listen: a.listen.clone().or(f.listen).unwrap_or_else(|| "127.0.0.1:8080".into()),
            gateway_listen: a.gateway_listen.clone().or(f.gateway_listen),
            upstream: a
                .upstream
                .clone()
                .or(f.upstream)
                .map(|u| tenantd_edge::Upstream::parse(&u))
                .transpose()
                .map_err(ConfigError)?,
            data_dir,
            database_url,
            redis_url: a.redis_url.clone().or(f.redis_url),
            base_domain: a
                .base_domain
                .clone()
                .or(f.base_domain)
                .map(|d| d.trim_start_matches('.').to_ascii_lowercase()),
            multi_tenancy: a.multi_tenancy.or(f.multi_tenancy).unwrap_or(true),
            default_tenant: a
                .default_tenant
                .clone()
                .or(f.default_tenant)
                .unwrap_or_else(|| "default".into()),
            log_format: a.log_format.clone().or(f.log_format).unwrap_or_else(|| "json".into()),
            log: a.log.clone().or(f.log).unwrap_or_else(|| "info".into()),
            allow_query_tenant: f.allow_query_tenant.unwrap_or(false),
            self_signup: f.self_signup.unwrap_or(false),
            signup_plans: f.signup_plans.unwrap_or_else(|| vec!["free".into()]),
            token_ttl_seconds: f.token_ttl_seconds.unwrap_or(900),
            key_usage_flush_seconds: f.key_usage_flush_seconds.unwrap_or(5),
            usage_flush_ms: f.usage_flush_ms.unwrap_or(1000),
            purge_interval_seconds: f.purge_interval_seconds.unwrap_or(3600),
            redis_prefix: f.redis_prefix.unwrap_or_else(|| "tenantd:".into()),
            shutdown_grace_seconds: f.shutdown_grace_seconds.unwrap_or(30),
            max_body_bytes: f.max_body_bytes.unwrap_or(1 << 20),
            domain_verification_url: f
                .domain_verification_url
                .unwrap_or_else(|| "http://{host}/.well-known/tenantd-domain-verification".into()),
            data_database_url: f.data_database_url,
            data_servers: f.data_servers.unwrap_or_default(),
            data_move_grace_seconds: f.data_move_grace_seconds.unwrap_or(3),
            data_pool_size: f.data_pool_size.unwrap_or(tenantd_data::DEFAULT_POOL_SIZE),
            encrypt_data: f.encrypt_data.unwrap_or(true),
            retention: f.retention.unwrap_or_default(),
            max_blob_bytes: f.max_blob_bytes.unwrap_or(1 << 30),
            oidc: f.oidc,
            gateway: crate::gateway::settings::GatewaySettings::from_file(f.gateway.unwrap_or_default())
                .map_err(ConfigError)?,
            server: f.server.unwrap_or_default().limits()?,
            tenant_series: match f.metrics.unwrap_or_default().tenant_series {
                Some(n) if n > MAX_TENANT_SERIES => {
                    return Err(ConfigError(format!(
                        "[metrics] tenant_series must be at most {MAX_TENANT_SERIES}"
                    )))
                }
                n => n.unwrap_or(100),
            },
            audit_checkpoint_seconds: f.audit.unwrap_or_default().checkpoint_seconds.unwrap_or(3600),
            webhooks: crate::webhooks::settings::WebhookSettings::from_file(f.webhooks.unwrap_or_default())
                .map_err(ConfigError)?,
            platform_roles: platform_roles(f.roles.unwrap_or_default())?,
            console_secure_cookie: f.console.unwrap_or_default().secure_cookie.unwrap_or(false),
            config_path: None,
            admin_key: admin_key.map(Secret::new),
            master_key: None,
            master_key_file: a.master_key_file.clone(),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let addr = |name: &str, v: &str| {
            v.parse::<std::net::SocketAddr>()
                .map(|_| ())
                .map_err(|_| ConfigError(format!("{name} '{v}' is not an address such as 127.0.0.1:8080")))
        };
        addr("listen", &self.listen)?;
        if let Some(g) = &self.gateway_listen {
            addr("gateway_listen", g)?;
            if self.upstream.is_none() {
                return Err(ConfigError(
                    "gateway_listen needs upstream (--upstream / TENANTD_UPSTREAM): where the gateway proxies to"
                        .into(),
                ));
            }
        }
        let backend = tenantd_store::Backend::from_url(&self.database_url)
            .map_err(|e| ConfigError(format!("database_url: {e}")))?;
        let pg = tenantd_core::is_postgres_url;
        if let Some(u) = &self.data_database_url {
            if backend != tenantd_store::Backend::Postgres || !pg(u) {
                return Err(ConfigError(
                    "data_database_url is for a PostgreSQL catalog, and must be a postgres:// URL".into(),
                ));
            }
        }
        if !self.data_servers.is_empty()
            && (backend != tenantd_store::Backend::Postgres || !self.data_servers.iter().all(|u| pg(u)))
        {
            return Err(ConfigError(
                "data_servers is for a PostgreSQL catalog, and lists postgres:// URLs".into(),
            ));
        }
        if !(1..=1000).contains(&self.data_pool_size) {
            return Err(ConfigError(format!(
                "data_pool_size {} must be from 1 to 1000",
                self.data_pool_size
            )));
        }
        if self.max_blob_bytes == 0 {
            return Err(ConfigError("max_blob_bytes must be at least 1".into()));
        }
        if !["json", "text"].contains(&self.log_format.as_str()) {
            return Err(ConfigError(format!(
                "log_format '{}' must be json or text",
                self.log_format
            )));
        }
        if !self.multi_tenancy {
            tenantd_core::TenantId::parse_with(&self.default_tenant, true)
                .map_err(|e| ConfigError(format!("default_tenant: {e}")))?;
        }
        if !(1..=tenantd_edge::jwt::MAX_TOKEN_SECONDS).contains(&self.token_ttl_seconds) {
            return Err(ConfigError(format!(
                "token_ttl_seconds must be between 1 and {}",
                tenantd_edge::jwt::MAX_TOKEN_SECONDS
            )));
        }
        if self.key_usage_flush_seconds == 0 {
            return Err(ConfigError("key_usage_flush_seconds must be at least 1".into()));
        }
        if !self.domain_verification_url.contains("{host}") {
            return Err(ConfigError("domain_verification_url must contain {host}".into()));
        }
        if let Some(o) = &self.oidc {
            if o.jwks_url.is_some() == o.jwks_file.is_some() {
                return Err(ConfigError("[oidc] needs exactly one of jwks_url and jwks_file".into()));
            }
        }
        if let Some(k) = self.admin_key.as_ref().map(Secret::expose) {
            if k.starts_with(tenantd_edge::keys::KEY_PREFIX) || k.bytes().filter(|b| *b == b'.').count() == 2 {
                return Err(ConfigError(
                    "TENANTD_ADMIN_KEY must not look like an API key (tdk_…) or a JWT".into(),
                ));
            }
            if k.len() < 16 {
                return Err(ConfigError("TENANTD_ADMIN_KEY must be at least 16 characters".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> FileConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::merge(&ServeArgs::default(), FileConfig::default(), None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./tenantd-data"));
        assert_eq!(c.database_url, "sqlite://./tenantd-data/catalog.db");
        assert!(c.multi_tenancy);
        assert_eq!(c.default_tenant, "default");
        assert!(c.gateway_listen.is_none() && c.redis_url.is_none() && c.base_domain.is_none());
    }

    #[test]
    fn flags_and_env_win_over_the_file() {
        let f = file("listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\nallow_query_tenant = true");
        let a = ServeArgs {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let c = Config::merge(&a, f, None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100");
        assert_eq!(c.database_url, "sqlite:///tmp/x/catalog.db");
        assert!(c.allow_query_tenant);
    }

    #[test]
    fn the_data_role_url_is_for_a_postgresql_catalog_only() {
        let pg = ServeArgs {
            database_url: Some("postgres://tenantd@db/tenantd".into()),
            ..Default::default()
        };
        let data = |url: &str| file(&format!("data_database_url = \"{url}\""));
        let c = Config::merge(&pg, data("postgres://tenantd_data:s@db/tenantd"), None).unwrap();
        assert_eq!(
            c.data_database_url.as_deref(),
            Some("postgres://tenantd_data:s@db/tenantd")
        );
        assert_eq!(
            Config::merge(&pg, FileConfig::default(), None)
                .unwrap()
                .data_database_url,
            None
        );
        for (args, url) in [
            (&pg, "sqlite://elsewhere.db"),
            (&ServeArgs::default(), "postgres://tenantd_data@db/tenantd"),
        ] {
            let e = Config::merge(args, data(url), None).unwrap_err().to_string();
            assert!(e.contains("data_database_url"), "{e}");
        }
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let args = ServeArgs {
            database_url: Some("postgres://tenantd:db-password-1@db/tenantd".into()),
            redis_url: Some("redis://:redis-password-2@cache:6379".into()),
            ..Default::default()
        };
        let f = file("data_servers = [\"postgres://owner:server-password-3@db2/postgres\"]\ndata_database_url = \"postgres://app:app-password-4@db/tenantd\"");
        let c = Config::merge(&args, f, Some("operator-key-that-is-secret".into())).unwrap();
        let shown = format!("{c:?} {args:?}");
        for secret in [
            "db-password-1",
            "redis-password-2",
            "server-password-3",
            "app-password-4",
            "operator-key-that-is-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://tenantd:***@db/tenantd"), "{shown}");
        assert_eq!(
            c.admin_key.as_ref().map(Secret::expose),
            Some("operator-key-that-is-secret")
        );
    }

    #[test]
    fn data_servers_the_pool_and_the_blob_limit_are_checked() {
        let pg = ServeArgs {
            database_url: Some("postgres://tenantd@db/tenantd".into()),
            ..Default::default()
        };
        let c = Config::merge(&pg, file("data_servers = [\"postgres://a@db2/postgres\"]"), None).unwrap();
        assert_eq!(c.data_servers, ["postgres://a@db2/postgres"]);
        assert_eq!(
            (c.max_blob_bytes, c.data_move_grace_seconds, c.data_pool_size),
            (1 << 30, 3, 16)
        );
        assert_eq!(
            Config::merge(&pg, file("data_pool_size = 4"), None)
                .unwrap()
                .data_pool_size,
            4
        );
        for (args, toml, named) in [
            (&pg, "data_servers = [\"mysql://db2/x\"]", "data_servers"),
            (
                &ServeArgs::default(),
                "data_servers = [\"postgres://a@db2/postgres\"]",
                "data_servers",
            ),
            (&ServeArgs::default(), "max_blob_bytes = 0", "max_blob_bytes"),
            (&pg, "data_pool_size = 0", "data_pool_size"),
            (&pg, "data_pool_size = 1001", "data_pool_size"),
        ] {
            let e = Config::merge(args, file(toml), None).unwrap_err().to_string();
            assert!(e.contains(named), "{toml}: {e}");
        }
    }

    #[test]
    fn platform_roles_add_app_permissions_only() {
        let merged = |toml| Config::merge(&ServeArgs::default(), file(toml), None);
        let c = merged("[roles.member]\nallow = [\"reports:write\", \"Reports:Read\"]").unwrap();
        assert_eq!(c.platform_roles.len(), 1);
        assert_eq!(c.platform_roles[0].0, tenantd_core::BuiltinRole::Member);
        let perms: Vec<&str> = c.platform_roles[0].1.iter().map(|p| p.as_str()).collect();
        assert_eq!(perms, ["reports:write", "reports:read"]);
        for (toml, named) in [
            ("[roles.member]\nallow = [\"keys:manage\"]", "keys:manage"),
            ("[roles.viewer]\nallow = [\"*:write\"]", "*:write"),
            ("[roles.guest]\nallow = [\"members:read\"]", "members:read"),
            ("[roles.auditor]\nallow = [\"reports:read\"]", "not a built-in role"),
            ("[roles.member]\nallow = [\"reports\"]", "invalid permission"),
        ] {
            let e = merged(toml).unwrap_err().to_string();
            assert!(e.contains(named), "{toml}: {e}");
        }
        let e = toml::from_str::<FileConfig>("[roles.member]\ngrant = [\"reports:read\"]").unwrap_err();
        assert!(e.to_string().contains("grant"), "{e}");
    }

    #[test]
    fn the_purge_interval_defaults_to_an_hour_and_0_turns_it_off() {
        let merged = |toml| Config::merge(&ServeArgs::default(), file(toml), None).unwrap();
        assert_eq!(merged("").purge_interval_seconds, 3600);
        assert_eq!(merged("purge_interval_seconds = 0").purge_interval_seconds, 0);
        assert_eq!(merged("purge_interval_seconds = 60").purge_interval_seconds, 60);
        let e = toml::from_str::<FileConfig>("purge_interval_seconds = -1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("purge_interval_seconds"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let a = ServeArgs {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(Config::merge(&a, FileConfig::default(), None)
            .unwrap_err()
            .to_string()
            .contains("listen"));
        let a = ServeArgs {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        assert!(Config::merge(&a, FileConfig::default(), None)
            .unwrap_err()
            .to_string()
            .contains("database_url"));
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        let short = Config::merge(&ServeArgs::default(), FileConfig::default(), Some("short".into()));
        assert!(short.unwrap_err().to_string().contains("TENANTD_ADMIN_KEY"));
        for shaped in ["tdk_aaaaaaaaaaaaaaaaaaaa_bbbb", "aaaaaa.bbbbbbbb.cccccc"] {
            let r = Config::merge(&ServeArgs::default(), FileConfig::default(), Some(shaped.into()));
            assert!(r.unwrap_err().to_string().contains("must not look like"), "{shaped}");
        }
    }
}
