//! Runs the HTTP server until SIGTERM or SIGINT, then shuts down gracefully: stop accepting,
//! let in-flight requests finish (bounded by the grace period), close the database.

use super::api::{AppState, router};
use super::config::LedgerConfig;
use super::store::LedgerStore;
use std::io::Write;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often expired idempotency keys are purged.
pub const KEY_PURGE_INTERVAL_S: u64 = 3600;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
///
/// Prints `listening on ADDR` on stdout once bound, so scripts and tests can find the port.
pub async fn serve<S: LedgerStore>(
    config: &LedgerConfig,
    store: S,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    serve_quietly(config, store, listener, shutdown).await
}

/// [`serve`] without the line on stdout (the demo's screen belongs to its TUI).
pub async fn serve_quietly<S: LedgerStore>(
    config: &LedgerConfig,
    store: S,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %config.database, "ledger serving");

    let purger = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(KEY_PURGE_INTERVAL_S));
            loop {
                tick.tick().await;
                match store.purge_expired_keys().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
                    Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
                }
            }
        })
    };

    let limits = crate::ledger::rules::Limits {
        recharge_max: config.recharge_max,
        balance_max: config.balance_max,
    };
    let stripe = super::api::StripeSettings {
        secrets: config.stripe_webhook_secrets.clone(),
        tolerance_s: config.stripe_tolerance_s,
    };
    let state = AppState::new(store, &config.currency, limits, stripe);
    let app = router(state);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = signalled_tx.send(());
        let _ = stop_tx.send(());
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => r?,
        _ = async { let _ = signalled_rx.await; tokio::time::sleep(grace).await; } => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "in-flight requests did not finish in time");
        }
    }
    purger.abort();
    tracing::info!("ledger stopped");
    Ok(())
}
