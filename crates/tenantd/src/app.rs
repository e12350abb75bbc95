//! Startup (catalog, migrations, keys), the shared state, and serving with graceful
//! shutdown.
use crate::config::Config;
use crate::directory::CatalogDirectory;
use jsonwebtoken::jwk::JwkSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tenantd_core::TenantId;
use tenantd_edge::jwt::{OidcConfig, OidcVerifier, Signer};
use tenantd_edge::{Edge, EdgeConfig};
use tenantd_store::{Catalog, NewEvent, SigningKeyRecord, SqlCatalog};
use tokio::net::TcpListener;

/// Everything handlers share.
pub struct AppState {
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// Tenant data at every tier.
    pub data: Arc<tenantd_data::DataStore>,
    /// The edge (cache, signer, counters).
    pub edge: Arc<Edge>,
    /// Admission and metering (the edge holds the same one).
    pub limiter: Arc<tenantd_limits::Limiter>,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// The gateway, with `gateway_listen`.
    pub gateway: Option<Arc<crate::gateway::Gateway>>,
    /// The gateway's listener, bound at start and taken by [`serve_app`].
    gateway_listener: std::sync::Mutex<Option<TcpListener>>,
    /// Where the gateway listens.
    pub gateway_addr: Option<SocketAddr>,
    /// The API listener's open connections, under the `[server]` limits.
    pub connections: Arc<crate::conn::Connections>,
    /// The gateway listener's, under the same limits.
    pub gateway_connections: Arc<crate::conn::Connections>,
    /// Per tenant and catalog level (`members`, `keys`): held from a growth's check to its
    /// write (see `routes::usage::grow_level`).
    pub level_locks: dashmap::DashMap<(TenantId, &'static str), Arc<tokio::sync::Mutex<()>>>,
    /// Each tenant's data-plane storage level after its latest write, not yet written to
    /// the catalog as the day's snapshot (for invoices).
    pub storage_levels: dashmap::DashMap<TenantId, u64>,
    /// The HTTP API's request counter and latency histogram.
    pub http_metrics: crate::metrics::HttpMetrics,
}

/// The handle handlers get.
pub type State = Arc<AppState>;

/// Why the server could not start (printed as one line, exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Opens and migrates the catalog.
pub async fn open_catalog(cfg: &Config) -> Result<Arc<dyn Catalog>, StartError> {
    let c = SqlCatalog::connect(&cfg.database_url).await.map_err(|e| {
        StartError(format!(
            "cannot open the catalog at {}: {e}",
            tenantd_core::redact_url(&cfg.database_url)
        ))
    })?;
    c.migrate().await.map_err(|e| {
        StartError(format!(
            "cannot migrate the catalog at {}: {e}",
            tenantd_core::redact_url(&cfg.database_url)
        ))
    })?;
    Ok(Arc::new(c))
}

async fn signer(cfg: &Config, catalog: &dyn Catalog) -> Result<Signer, StartError> {
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
        let rec = SigningKeyRecord {
            kid,
            private_pkcs8: pkcs8,
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
    let keys: Vec<_> = keys.into_iter().map(|k| (k.kid, k.private_pkcs8, k.public_x)).collect();
    Signer::new(&keys, cfg.token_ttl_seconds).map_err(StartError)
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
    let catalog = open_catalog(&cfg).await?;
    let data = open_data(&cfg).await?;
    let invalidations = catalog
        .subscribe()
        .await
        .map_err(|e| StartError(format!("cannot listen for cache invalidations: {e}")))?;
    let signer = signer(&cfg, catalog.as_ref()).await?;
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
    if let Some(mut rx) = invalidations {
        let (edge, data, limiter) = (edge.clone(), data.clone(), limiter.clone());
        tokio::spawn(async move {
            while let Some(topic) = rx.recv().await {
                if let Some(change) = edge.cache().apply(topic.as_deref()) {
                    forget_purged(&data, &limiter, change).await;
                }
            }
        });
    }
    Ok(Arc::new(AppState {
        catalog,
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
        http_metrics: crate::metrics::HttpMetrics::default(),
    }))
}

/// After the edge's cache has dropped what `change` made stale (whether this node made the
/// change or heard of it): for a purged tenant, its cached placement and connections and
/// its counters (here and in Redis), so a new tenant under its id starts afresh.
async fn forget_purged(
    data: &tenantd_data::DataStore,
    limiter: &tenantd_limits::Limiter,
    change: tenantd_edge::Change<'_>,
) {
    if let tenantd_edge::Change::Purged(t) = change {
        let Ok(tenant) = TenantId::parse(t) else { return };
        data.forget(&tenant).await;
        if let Err(e) = limiter.forget(tenant).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "a purged tenant's counters were not all removed");
        }
    }
}

/// Tenant data: on PostgreSQL the row tier in the catalog's database (connecting as a
/// role that cannot bypass row-level security), schemas there and databases on
/// `data_servers`; on SQLite `tenant-data.db` and `tenants/<id>.db` in the data directory.
pub async fn open_data(cfg: &Config) -> Result<Arc<tenantd_data::DataStore>, StartError> {
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
        .map(Arc::new)
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

impl AppState {
    /// The event of what the context's principal did to its tenant, for the unit of work
    /// that does it.
    pub fn event_of(ctx: &tenantd_edge::TenantContext, action: &str, detail: serde_json::Value) -> NewEvent {
        NewEvent::new(
            Some(ctx.tenant_id()),
            ctx.principal().actor(),
            action,
            detail,
            ctx.request_id(),
        )
    }

    /// Drops what `change` made stale from this node's cache and tells the other nodes.
    pub async fn changed(&self, change: tenantd_edge::Change<'_>) {
        self.edge.cache().forget(change);
        forget_purged(&self.data, &self.limiter, change).await;
        if let Err(e) = self.catalog.publish(&change.topic()).await {
            tracing::error!(error = %e, topic = %change.topic(), "could not publish a cache invalidation");
        }
    }

    /// Moves a tenant's data, in the background, to the tier of the plan it is on
    /// (progress at `GET /v1/tenants/{id}/placement`). If the plan changes again
    /// meanwhile, or a move is already running, it follows up until the placement
    /// matches the plan.
    pub fn move_data(self: &Arc<Self>, tenant: TenantId) {
        let state = self.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let tier = match state.plan_tier(&tenant).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(tenant_id = %tenant, error = %e, "tenant data not moved: its plan could not be read");
                        return;
                    }
                };
                match state.data.placement(&tenant).await {
                    Ok(Some(p)) if p.state != "placed" => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Ok(Some(p)) if p.tier != tier => {}
                    // Placed at the plan's tier, or never used (placed on first use).
                    Ok(_) => return,
                    Err(e) => tracing::error!(tenant_id = %tenant, error = %e, "could not read a placement"),
                }
                match state.data.move_tenant(tenant, tier).await {
                    Ok(p) => tracing::info!(tenant_id = %tenant, location = %p.location, "tenant data moved"),
                    Err(e) => {
                        tracing::error!(tenant_id = %tenant, error = %e, "tenant data not moved; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    /// Purges every deleted tenant whose retention ended by `now` (Unix seconds), 100 at
    /// a time by id: first its data (records, blobs, cache; a schema or database is
    /// dropped), then every catalog row of it, then its data once more (what a request
    /// placed meanwhile), then what this node and the others cached of it (placement,
    /// connections, counters, keys, roles); an operator-wide audit event `tenant.purged`
    /// records each. A tenant whose data is being moved, or whose purge fails, is logged
    /// and left for the next round (once its retention has ended it can no longer be
    /// restored, so nothing can bring it back meanwhile). Answers the tenants purged.
    pub async fn purge_due(&self, now: i64) -> Vec<TenantId> {
        const BATCH: u32 = 100;
        let mut purged = Vec::new();
        let mut after = None;
        loop {
            let due = match self.catalog.purgeable_tenants(now, after.as_ref(), BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "could not list the deleted tenants due for purging");
                    return purged;
                }
            };
            for tenant in &due {
                if self.purge(tenant, now).await {
                    purged.push(*tenant);
                    tracing::info!(tenant_id = %tenant, purged = purged.len(), "purged a deleted tenant");
                }
            }
            match due.last() {
                Some(last) if due.len() == BATCH as usize => after = Some(*last),
                _ => return purged,
            }
        }
    }

    /// Purges one deleted tenant past its retention ([`AppState::purge_due`]); `false`
    /// when it was left for the next round or another node purged it.
    async fn purge(&self, tenant: &TenantId, now: i64) -> bool {
        if let Err(e) = self.data.remove(tenant).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "a deleted tenant's data was not purged; retrying next round");
            return false;
        }
        let purged = async {
            let mut w = self.catalog.begin().await?;
            let rows = self.catalog.purge_tenant(&mut w, tenant, now).await?;
            let detail = serde_json::json!({"tenant_id": tenant.as_str(), "catalog_rows": rows});
            w.commit_with(&NewEvent::new(None, "system", "tenant.purged", detail, ""))
                .await?;
            Ok::<_, tenantd_store::StoreError>(rows)
        };
        match purged.await {
            Ok(_) => {}
            // Another node purged it meanwhile.
            Err(tenantd_store::StoreError::NotFound(_)) => return false,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "a deleted tenant's catalog rows were not purged; retrying next round");
                return false;
            }
        };
        // Data an operator's request placed between the two steps (the tenant is unknown
        // from here on, so nothing can place it again).
        if let Err(e) = self.data.remove(tenant).await {
            tracing::error!(tenant_id = %tenant, error = %e, "data written to a tenant while it was purged was not removed");
        }
        self.storage_levels.remove(tenant);
        self.changed(tenantd_edge::Change::Purged(tenant.as_str())).await;
        true
    }

    /// The isolation tier of the tenant's plan.
    async fn plan_tier(&self, tenant: &TenantId) -> Result<tenantd_core::Isolation, String> {
        let t = self.catalog.get_tenant(tenant).await.map_err(|e| e.to_string())?;
        Ok(self
            .catalog
            .get_plan(&t.plan)
            .await
            .map_err(|e| e.to_string())?
            .isolation)
    }

    /// Writes metered usage to the catalog; a failure is logged and retried next time.
    pub async fn flush_usage(&self) {
        if let Err(e) = self.limiter.flush().await {
            tracing::warn!(error = %e, "could not write usage; will retry");
        }
        self.flush_storage_levels().await;
    }

    /// Notes a tenant's data-plane storage level after a write, for the day's snapshot
    /// (written at the next usage flush, or now when `usage_flush_ms` is 0).
    pub async fn note_storage(&self, tenant: TenantId, bytes: u64) {
        self.storage_levels.insert(tenant, bytes);
        if self.cfg.usage_flush_ms == 0 {
            self.flush_storage_levels().await;
        }
    }

    /// Writes the noted storage levels as today's snapshots (`storage_bytes:data`); on
    /// failure they are kept for the next flush, unless a newer level came meanwhile.
    async fn flush_storage_levels(&self) {
        let levels: Vec<(TenantId, u64)> = self.storage_levels.iter().map(|e| (*e.key(), *e.value())).collect();
        if levels.is_empty() {
            return;
        }
        let day = tenantd_core::Window::Day
            .period(tenantd_core::now_secs())
            .map_or(0, |(start, _)| start);
        let rows: Vec<tenantd_core::usage::CounterRow> = levels
            .iter()
            .map(|(tenant, bytes)| tenantd_core::usage::CounterRow {
                tenant: *tenant,
                scope: None,
                resource: crate::billing::DATA_STORAGE.into(),
                window: tenantd_core::Window::Total,
                period: day,
                value: *bytes,
            })
            .collect();
        match self.catalog.set_levels(&rows).await {
            Ok(()) => {
                for (tenant, bytes) in levels {
                    self.storage_levels.remove_if(&tenant, |_, v| *v == bytes);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not write storage snapshots; will retry"),
        }
    }

    /// Writes API keys' queued `last_used_at` values.
    pub async fn flush_key_usage(&self) {
        let used = self.edge.cache().take_used();
        if !used.is_empty() {
            if let Err(e) = self.catalog.touch_keys(&used).await {
                tracing::warn!(error = %e, keys = used.len(), "could not write last_used_at");
            }
        }
    }
}

/// Binds the API listener; an address in use is a start error.
pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))
}

/// Serves until `shutdown` resolves, then finishes requests in flight (up to the grace
/// period) and flushes pending writes.
pub async fn serve(
    state: State,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::routes::router(state.clone());
    serve_app(state, app, listener, shutdown).await
}

/// [`serve`] with a given application (tests add routes with [`crate::routes::router_with`]).
pub async fn serve_app(
    state: State,
    app: axum::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = background(&state);
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "tenantd serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gateway_listener = state.gateway_listener.lock().unwrap_or_else(|e| e.into_inner()).take();
    let gateway = match (&state.gateway, gateway_listener) {
        (Some(gw), Some(listener)) => {
            let workers = gw.serve_workers(listener, state.gateway_connections.clone(), stop_rx.clone())?;
            if let Some(addr) = state.gateway_addr {
                tracing::info!(%addr, workers = workers.len(), "gateway serving");
            }
            Some((workers, tokio::spawn(gw.clone().watch())))
        }
        _ => None,
    };
    let grace = Duration::from_secs(state.cfg.shutdown_grace_seconds);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop_tx.send(true);
    });
    let handler = move |req: axum::extract::Request| {
        let mut app = app.clone();
        async move {
            match tower::Service::call(&mut app, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    let server = crate::conn::serve_listener(listener, state.connections.clone(), handler, stop_rx.clone());
    let mut stop_rx2 = stop_rx.clone();
    tokio::select! {
        () = server => {},
        _ = async move {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over; closing remaining connections"),
    }
    if let Some((workers, watcher)) = gateway {
        watcher.abort();
        // The gateway finishes its requests in flight within the same grace period.
        let joined = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        });
        if tokio::time::timeout(grace, joined).await.is_err() {
            tracing::warn!("gateway connections still open after the grace period");
        }
    }
    drop(background);
    state.edge.flush_security().await;
    state.flush_key_usage().await;
    state.flush_usage().await;
    tracing::info!("tenantd stopped");
    Ok(())
}

/// The server's periodic work, stopped when dropped: writing API keys' last use and
/// metered usage to the catalog, purging deleted tenants past their retention, and
/// refreshing the OpenID JWKS. A service embedding the
/// edge (see `examples/notes`) runs it too.
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Runs `work` for `state` now and then every `period` (a late round delays the next ones
/// rather than bunching them up).
fn every<F, Fut>(state: &State, period: Duration, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(State) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work(state.clone()).await;
        }
    })
}

/// Starts the [`Background`] work for `state`.
pub fn background(state: &State) -> Background {
    let flusher = every(
        state,
        Duration::from_secs(state.cfg.key_usage_flush_seconds),
        |s| async move { s.flush_key_usage().await },
    );
    let security = every(state, Duration::from_secs(1), |s| async move {
        s.edge.flush_security().await
    });
    let usage_flusher = (state.cfg.usage_flush_ms > 0).then(|| {
        every(state, Duration::from_millis(state.cfg.usage_flush_ms), |s| async move {
            s.flush_usage().await
        })
    });
    let refresher = state.cfg.oidc.clone().filter(|o| o.jwks_url.is_some()).map(|o| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            tick.tick().await;
            loop {
                tick.tick().await;
                match (load_jwks(&o).await, state.edge.oidc()) {
                    (Ok(j), Some(v)) => v.set_jwks(j),
                    (Err(e), _) => tracing::warn!(error = %e, "could not refresh the OpenID JWKS; keeping the old one"),
                    _ => {}
                }
            }
        })
    });
    let purger = (state.cfg.purge_interval_seconds > 0).then(|| {
        every(
            state,
            Duration::from_secs(state.cfg.purge_interval_seconds),
            |s| async move {
                s.purge_due(tenantd_core::now_secs()).await;
            },
        )
    });
    // Tier moves a crash interrupted are undone, then started again.
    let recovery = {
        let state = state.clone();
        tokio::spawn(async move {
            match state.data.recover().await {
                Ok(moves) => {
                    for tenant in moves {
                        tracing::warn!(tenant_id = %tenant, "restarting an interrupted tier move");
                        state.move_data(tenant);
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not look for interrupted tier moves"),
            }
        })
    };
    Background(
        [flusher, security, recovery]
            .into_iter()
            .chain(usage_flusher)
            .chain(purger)
            .chain(refresher)
            .collect(),
    )
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
