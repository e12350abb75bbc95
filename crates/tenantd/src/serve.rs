//! Serving: the API listener and the gateway's workers, until shutdown, then finishing
//! requests in flight within the grace period and flushing what is pending.
use crate::background::background;
use crate::state::State;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

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
