//! Start-up: the catalog and its migrations, tenant data, the signing and operator keys,
//! the limits engine, the edge and the gateway's listener, in that order, into the
//! [`State`] the server runs on.
use crate::config::Config;
use crate::directory::CatalogDirectory;
use crate::state::{forget_purged, AppState, State};
use jsonwebtoken::jwk::JwkSet;
use std::sync::Arc;
use tenantd_core::TenantId;
use tenantd_edge::jwt::{OidcConfig, OidcVerifier, Signer};
use tenantd_edge::{Edge, EdgeConfig};
use tenantd_store::{Catalog, NewEvent, SigningKeyRecord, SqlCatalog};
use tokio::net::TcpListener;

/// Why the server could not start (printed as one line, exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Opens and migrates the catalog.
pub async fn open_catalog(cfg: &Config) -> Result<SqlCatalog, StartError> {
    let c = SqlCatalog::connect(&cfg.database_url)
        .await
        .map_err(|e| {
            StartError(format!(
                "cannot open the catalog at {}: {e}",
                tenantd_core::redact_url(&cfg.database_url)
            ))
        })?
        .with_deleted_tenant_days(i64::from(cfg.retention.deleted_tenant_days));
    c.migrate().await.map_err(|e| {
        StartError(format!(
            "cannot migrate the catalog at {}: {e}",
            tenantd_core::redact_url(&cfg.database_url)
        ))
    })?;
    Ok(c)
}

/// tenantd's JWT signer, from its signing keys sealed under the master key (a key
/// stored in the clear by an earlier version is sealed now); the first one made if none.
async fn signer(cfg: &Config, catalog: &dyn Catalog, master: &tenantd_core::crypto::Key) -> Result<Signer, StartError> {
    use crate::keyring::{open_own, seal_own};
    let what = |kid: &str| format!("signing-key/{kid}");
    let load = || async {
        catalog
            .signing_keys()
            .await
            .map_err(|e| StartError(format!("cannot read signing keys: {e}")))
    };
    let mut keys = load().await?;
    // None yet, or only the fixed-kid key earlier versions made first: a new generation
    // with a random kid signs from now on (the old key still verifies what it signed).
    if keys.last().is_none_or(|k| k.kid == LEGACY_KID) {
        let (kid, pkcs8, x) = tenantd_edge::jwt::generate_signing_key();
        let sealed = seal_own(master, &what(&kid), &pkcs8).map_err(|e| StartError(e.to_string()))?;
        let rec = SigningKeyRecord {
            kid,
            private_pkcs8: sealed,
            public_x: x,
            created_at: tenantd_core::now_secs(),
            generation: keys.last().map_or(1, |k| k.generation + 1),
        };
        // Two nodes starting together race for the generation; one wins, both load it.
        catalog
            .add_signing_key(&rec)
            .await
            .map_err(|e| StartError(format!("cannot store a signing key: {e}")))?;
        keys = load().await?;
    }
    let mut opened = Vec::with_capacity(keys.len());
    for k in keys {
        let pkcs8 = match open_own(master, &what(&k.kid), &k.private_pkcs8) {
            Ok(Some(plain)) => plain,
            Ok(None) => {
                let sealed =
                    seal_own(master, &what(&k.kid), &k.private_pkcs8).map_err(|e| StartError(e.to_string()))?;
                catalog
                    .set_signing_key_private(None, &k.kid, &sealed)
                    .await
                    .map_err(|e| StartError(format!("cannot seal signing key {}: {e}", k.kid)))?;
                k.private_pkcs8
            }
            Err(e) => return Err(StartError(format!("signing key {}: {e}", k.kid))),
        };
        opened.push((k.kid, pkcs8, k.public_x));
    }
    Signer::new(&opened, cfg.token_ttl_seconds).map_err(StartError)
}

/// The kid every deployment's first signing key had before kids were random.
const LEGACY_KID: &str = "initial";

/// The operator key's hash: from `TENANTD_ADMIN_KEY`, or generated once and printed to
/// stderr that one time.
async fn operator_key_hash(cfg: &Config, catalog: &dyn Catalog) -> Result<[u8; 32], StartError> {
    if let Some(k) = &cfg.admin_key {
        // A configured key replaces a generated one for good: unsetting the variable
        // later must not bring the old key back.
        match catalog.clear_operator_key_hash().await {
            Ok(true) => tracing::info!("TENANTD_ADMIN_KEY is set: the generated operator key is retired"),
            Ok(false) => {}
            Err(e) => return Err(StartError(format!("cannot retire the generated operator key: {e}"))),
        }
        return Ok(tenantd_edge::keys::hash(k.expose()));
    }
    let err = |e: tenantd_store::StoreError| StartError(format!("cannot read the operator key: {e}"));
    if let Some(h) = catalog.operator_key_hash().await.map_err(err)? {
        return tenantd_edge::keys::parse_hash(&h)
            .ok_or_else(|| StartError("the stored operator key hash is corrupt".into()));
    }
    let secret = format!(
        "tdo_{}",
        tenantd_edge::keys::generate().secret.trim_start_matches("tdk_")
    );
    let hash = tenantd_edge::keys::hash(&secret);
    if catalog.set_operator_key_hash(&hex::encode(hash)).await.map_err(err)? {
        eprintln!("tenantd: generated the operator key; it is shown this once, keep it (export TENANTD_ADMIN_KEY=...):\n{secret}");
        Ok(hash)
    } else {
        // Another node generated it first.
        Box::pin(operator_key_hash(cfg, catalog)).await
    }
}

/// Reads the OpenID provider's JWKS from its file or URL.
pub async fn load_jwks(o: &crate::config::OidcFile) -> Result<JwkSet, String> {
    let text = match (&o.jwks_file, &o.jwks_url) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?,
        (None, Some(u)) => reqwest::get(u)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot fetch {u}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("cannot read {u}: {e}"))?,
        (None, None) => return Err("no JWKS source".into()),
    };
    serde_json::from_str(&text).map_err(|e| format!("the OpenID JWKS is not a valid key set: {e}"))
}

/// Opens everything the server needs.
pub async fn prepare(cfg: Config) -> Result<State, StartError> {
    // Everything that can fail without writing goes first, so a failed start leaves
    // nothing half-written; the operator key is generated (and printed) last.
    let oidc = match &cfg.oidc {
        Some(o) => {
            let jwks = load_jwks(o).await.map_err(|e| StartError(format!("oidc: {e}")))?;
            Some(Arc::new(OidcVerifier::new(
                OidcConfig {
                    issuer: o.issuer.clone(),
                    audience: o.audience.clone(),
                },
                jwks,
            )))
        }
        None => None,
    };
    let sql = open_catalog(&cfg).await?;
    let jobs = tenantd_jobs::Jobs::new(sql.clone());
    jobs.listen()
        .await
        .map_err(|e| StartError(format!("cannot listen for enqueued jobs: {e}")))?;
    let catalog: Arc<dyn Catalog> = Arc::new(sql);
    let master = crate::keyring::master_key(&cfg).map_err(|e| StartError(e.to_string()))?;
    let keyring = Arc::new(
        crate::keyring::Keyring::open(master, catalog.clone())
            .await
            .map_err(|e| StartError(e.to_string()))?,
    );
    let data = open_data(
        &cfg,
        cfg.encrypt_data
            .then(|| keyring.clone() as Arc<dyn tenantd_data::DataKeys>),
    )
    .await?;
    let invalidations = catalog
        .subscribe()
        .await
        .map_err(|e| StartError(format!("cannot listen for cache invalidations: {e}")))?;
    let signer = signer(&cfg, catalog.as_ref(), keyring.master()).await?;
    let single_tenant = if cfg.multi_tenancy {
        None
    } else {
        Some(ensure_default_tenant(&cfg, catalog.as_ref()).await?)
    };
    let edge_cfg = EdgeConfig {
        base_domain: cfg.base_domain.clone(),
        allow_query_tenant: cfg.allow_query_tenant,
        single_tenant,
        operator_key_hash: operator_key_hash(&cfg, catalog.as_ref()).await?,
        platform_roles: cfg.platform_roles.clone(),
    };
    let store = Arc::new(crate::directory::CatalogCounters(catalog.clone()));
    let limiter = Arc::new(match &cfg.redis_url {
        None => tenantd_limits::Limiter::in_process(store, cfg.usage_flush_ms == 0),
        Some(url) => {
            let l = tenantd_limits::Limiter::with_redis(store, cfg.usage_flush_ms == 0, url, &cfg.redis_prefix)
                .map_err(StartError)?;
            if let Some(s) = l.shared() {
                // Start with Redis known up or down, not on a guess.
                if let Err(e) = s.beat().await {
                    tracing::error!(error = %e, "shared counters (Redis) unreachable at start: deciding by each plan's counter_failure policy until Redis answers");
                }
            }
            l
        }
    });
    let edge = Arc::new(
        Edge::new(
            edge_cfg,
            Arc::new(CatalogDirectory(catalog.clone())),
            Arc::new(signer),
            oidc,
        )
        .with_limiter(limiter.clone()),
    );
    edge.reload_settings()
        .await
        .map_err(|e| StartError(format!("cannot load flags and configuration: {e}")))?;
    let (gateway, gateway_listener) = match (&cfg.gateway_listen, &cfg.upstream) {
        (Some(addr), Some(upstream)) => {
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
            let listener = bind(addr).await?;
            let gw = crate::gateway::Gateway::new(
                edge.clone(),
                upstream.clone(),
                cfg.gateway.clone(),
                cfg.config_path.clone(),
                workers,
            );
            (Some(Arc::new(gw)), Some(listener))
        }
        _ => (None, None),
    };
    let gateway_addr = gateway_listener.as_ref().and_then(|l| l.local_addr().ok());
    let server_limits = cfg.server;
    let job_policies: Arc<dashmap::DashMap<TenantId, tenantd_jobs::Policy>> = Arc::default();
    if let Some(mut rx) = invalidations {
        let (edge, data, limiter, keys) = (edge.clone(), data.clone(), limiter.clone(), keyring.clone());
        let policies = job_policies.clone();
        tokio::spawn(async move {
            while let Some(topic) = rx.recv().await {
                // A tenant's or plan's change may change its job policy.
                policies.clear();
                let change = edge.cache().apply(topic.as_deref());
                if let Some(change) = change {
                    forget_purged(&data, &limiter, &keys, change).await;
                }
                crate::state::reload_settings(&edge, change).await;
            }
        });
    }
    let tenant_series = crate::metrics::ranking::TenantSeries::new(cfg.tenant_series);
    let console = crate::console::session::Sessions::new(keyring.master(), &edge.config().operator_key_hash);
    Ok(Arc::new(AppState {
        console,
        keyring,
        catalog,
        jobs,
        data,
        edge,
        limiter,
        cfg: Arc::new(cfg),
        gateway,
        gateway_listener: std::sync::Mutex::new(gateway_listener),
        gateway_addr,
        connections: crate::conn::Connections::new(server_limits),
        gateway_connections: crate::conn::Connections::new(server_limits),
        level_locks: dashmap::DashMap::new(),
        storage_levels: dashmap::DashMap::new(),
        http_metrics: Arc::default(),
        job_metrics: Default::default(),
        tenant_series,
        webhook_metrics: Default::default(),
        job_policies,
        restoring: Default::default(),
    }))
}

/// Tenant data: on PostgreSQL the row tier in the catalog's database (connecting as a
/// role that cannot bypass row-level security), schemas there and databases on
/// `data_servers`; on SQLite `tenant-data.db` and `tenants/<id>.db` in the data directory.
pub async fn open_data(
    cfg: &Config,
    keys: Option<Arc<dyn tenantd_data::DataKeys>>,
) -> Result<Arc<tenantd_data::DataStore>, StartError> {
    let url = match tenantd_store::Backend::from_url(&cfg.database_url) {
        Ok(tenantd_store::Backend::Postgres) => cfg.database_url.to_string(),
        _ => {
            std::fs::create_dir_all(&cfg.data_dir)
                .map_err(|e| StartError(format!("cannot create {}: {e}", cfg.data_dir.display())))?;
            format!("sqlite://{}", cfg.data_dir.join("tenant-data.db").display())
        }
    };
    let opts = tenantd_data::DataOptions {
        app_url: cfg.data_database_url.as_deref().map(str::to_string),
        servers: cfg.data_servers.iter().map(|u| u.to_string()).collect(),
        dir: Some(cfg.data_dir.clone()),
        move_grace: std::time::Duration::from_secs(cfg.data_move_grace_seconds),
        pool_size: cfg.data_pool_size,
        ..tenantd_data::DataOptions::new(url)
    };
    tenantd_data::DataStore::open(opts)
        .await
        .map(|d| Arc::new(if let Some(k) = keys { d.with_keys(k) } else { d }))
        .map_err(|e| StartError(format!("tenant data: {e}")))
}

async fn ensure_default_tenant(cfg: &Config, catalog: &dyn Catalog) -> Result<TenantId, StartError> {
    let id = TenantId::parse_with(&cfg.default_tenant, true).map_err(|e| StartError(format!("default_tenant: {e}")))?;
    if let Err(tenantd_store::StoreError::NotFound(_)) = catalog.get_tenant(&id).await {
        let new = tenantd_store::NewTenant {
            id,
            name: id.to_string(),
            plan: tenantd_core::PlanId::parse("enterprise").expect("valid"),
            owner_email: tenantd_core::Email::parse("owner@tenantd.local").expect("valid"),
            settings: serde_json::json!({}),
        };
        let created = async {
            let mut w = catalog.begin().await?;
            catalog.create_tenant(&mut w, &new).await?;
            let ev = NewEvent::new(
                Some(&id),
                "system",
                "tenant.created",
                serde_json::json!({"plan": new.plan, "owner": new.owner_email}),
                "",
            );
            w.commit_with(&ev).await
        };
        created
            .await
            .map_err(|e| StartError(format!("cannot create the default tenant: {e}")))?;
    }
    Ok(id)
}

/// Binds the API listener; an address in use is a start error.
pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))
}
