//! Runs the HTTP server until SIGTERM or SIGINT, then shuts down gracefully: stop accepting,
//! let in-flight requests finish (bounded by the grace period), close the database.
//!
//! Every connection is bounded: hyper closes one that does not send a whole request head
//! within `header_read_timeout_ms` (of its accept, or of its previous response when kept
//! alive); a request body must arrive whole within `body_read_timeout_ms` of its head
//! (`DeadlineBody`); and at most `max_connections` are served at once, the others waiting in
//! the kernel's listen backlog, because a permit is taken before each accept.

use super::api::{AppState, router};
use super::config::LedgerConfig;
use super::store::LedgerStore;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::map_request_body::MapRequestBodyLayer;

/// How often expired idempotency keys are purged.
pub const KEY_PURGE_INTERVAL_S: u64 = 3600;
/// How often `serve` checks whether a festival day started (daily voucher allowances).
pub const VOUCHER_DAY_CHECK_S: u64 = 60;
/// How often `serve` settles replaced cards (offline sales that reached them late).
pub const SETTLE_CHECK_S: u64 = 60;

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

/// Whether [`serve`] says where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Prints `listening on ADDR` on stdout once bound, so scripts and tests can find the
    /// port.
    Stdout,
    /// Prints nothing (the demo's screen belongs to its TUI).
    Quietly,
}

/// Refuses to serve when a product names a VAT rate the configuration lacks: every order of
/// it, and the catalog of its point of sale, would fail.
async fn check_tax_rates<S: LedgerStore>(config: &LedgerConfig, store: &S) -> anyhow::Result<()> {
    let missing: Vec<String> = store
        .product_tax_rates()
        .await?
        .into_iter()
        .filter(|rate| config.taxes.resolve(Some(rate)).is_none())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "products name the tax rate(s) {}, which the configuration's [taxes] rates_basis_points lacks: add them back, or import those products again with another tax_rate",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve<S: LedgerStore>(
    config: &LedgerConfig,
    store: S,
    listener: TcpListener,
    announce: Announce,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_tax_rates(config, &store).await?;
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config()?)),
        None => None,
    };
    let addr = listener.local_addr()?;
    if announce == Announce::Stdout {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        database = %config.database,
        max_connections = config.max_connections,
        "ledger serving"
    );
    warn_if_descriptors_are_short(config.max_connections);
    crate::service::ready(&format!("serving on {addr}"));
    let watchdog = crate::service::watchdog_interval().map(|every| {
        let store = store.clone();
        tokio::spawn(feed_watchdog_while_the_database_answers(store, every))
    });

    let purger = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(KEY_PURGE_INTERVAL_S));
            loop {
                tick.tick().await;
                let mut purged = 0;
                loop {
                    let batch = crate::ledger::housekeeping::KEY_PURGE_BATCH;
                    match store.purge_expired_keys(batch).await {
                        Ok(n) => {
                            purged += n;
                            if n < u64::from(batch) {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "purging idempotency keys failed");
                            break;
                        }
                    }
                }
                if purged > 0 {
                    tracing::info!(purged, "expired idempotency keys purged");
                }
            }
        })
    };

    // Daily voucher allowances: renewed when a festival day starts (checked every minute,
    // and at once on start; idempotent, so several ledger processes may all check).
    let voucher_days = {
        let store = store.clone();
        let festival_day = config.festival_day;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(VOUCHER_DAY_CHECK_S));
            loop {
                tick.tick().await;
                let day = festival_day.day_of(chrono::Utc::now());
                match store.start_voucher_day(day).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(%day, cards = n, "daily voucher allowances renewed"),
                    Err(e) => tracing::warn!(error = %e, "renewing daily vouchers failed"),
                }
            }
        })
    };

    // Replaced cards: what offline sales left on them since moves to their replacements
    // (checked every minute, and at once on start; idempotent across ledger processes).
    let settler = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(SETTLE_CHECK_S));
            loop {
                tick.tick().await;
                match crate::ledger::admin::settle_replaced_cards(&store).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(cards = n, "replaced cards settled"),
                    Err(e) => tracing::warn!(error = %e, "settling replaced cards failed"),
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
    let state = AppState::new(store, &config.currency, limits, stripe).with_hq(
        crate::ledger::hq::HqSettings {
            fleet: config.fleet,
            secure_cookies: config.hq_secure_cookies,
            festival_day: config.festival_day,
        },
    );
    let body_timeout = Duration::from_millis(config.body_read_timeout_ms);
    let app = router(state).layer(MapRequestBodyLayer::new(move |body| {
        Body::new(DeadlineBody::new(body, body_timeout))
    }));
    let service = TowerToHyperService::new(app);

    // HTTP/1.1 only: the terminals and Stripe speak it, and its header timeout is what
    // bounds a connection that never finishes a request.
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut at_cap = false;
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                if at_cap {
                    at_cap = false;
                    tracing::info!(
                        max_connections = config.max_connections,
                        "below the connection limit again"
                    );
                }
                permit
            }
            Err(_) => {
                if !at_cap {
                    at_cap = true;
                    tracing::warn!(
                        max_connections = config.max_connections,
                        "connection limit reached: new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // Never closed; if it were, serving would be over.
                        Err(_) => break,
                    },
                }
            }
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of descriptors (EMFILE) or memory: give closing connections a
                        // moment instead of spinning on the same error.
                        tracing::error!(error = %e, "accept failed");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let (http, service, tls) = (http.clone(), service.clone(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                // The handshake is bounded like a request head: a client that opens a
                // connection and says nothing holds its permit no longer.
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            // A client that does not trust the certificate, or speaks plain HTTP.
                            tracing::debug!(error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake did not complete in time");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                // A header or body timeout, a client gone mid-request: the client's business.
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // Stop accepting: connections that arrive now are refused instead of waiting.
    drop(listener);
    crate::service::stopping();

    let grace = Duration::from_millis(config.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = config.shutdown_grace_ms,
            "in-flight requests did not finish in time"
        );
    }
    purger.abort();
    voucher_days.abort();
    settler.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("ledger stopped");
    Ok(())
}

/// Feeds the service manager's watchdog every `every` while the database takes writes (a
/// check bounded by the store's own timeouts: SQLite's writer, PostgreSQL's statement
/// deadline): a ledger whose database stopped answering for a whole watchdog period is
/// restarted by systemd (and `serve` exits at start until it answers again, restarted by
/// `Restart=`). One failed check is not enough: the period holds three.
async fn feed_watchdog_while_the_database_answers<S: LedgerStore>(store: S, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.ping_writer().await {
            Ok(()) => crate::service::feed_watchdog(),
            Err(e) => {
                tracing::warn!(error = %e, "the database does not answer: the watchdog is not fed");
            }
        }
    }
}

/// How long the accept loop pauses after an accept error that is not about one connection.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// An accept error that concerns only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Descriptors the process needs besides its connections: the database and its WAL for the
/// writer and each reader, the listener, the runtime, the log.
const DESCRIPTORS_RESERVED: u64 = 64;

/// Warns when `max_connections` connections would not fit in the descriptors the process
/// may open: accepting would then fail (EMFILE) before the cap holds.
fn warn_if_descriptors_are_short(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let Some(soft) = open_files_soft_limit(&limits) else {
        return;
    };
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(DESCRIPTORS_RESERVED);
    if needed > soft {
        tracing::warn!(
            max_connections,
            open_files_limit = soft,
            "[server] max_connections is above the descriptors this process may open: \
             raise LimitNOFILE (ulimit -n) or lower max_connections"
        );
    }
}

/// The soft limit on open files in the text of `/proc/self/limits`; `None` if unlimited or
/// absent.
fn open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A request body that must arrive whole by a deadline set when its head arrived.
///
/// tower-http's `TimeoutBody` restarts its timer after every frame, so a client sending a
/// byte just inside each timeout would keep its connection for hours (a 64 KiB body at a
/// byte a second); this deadline does not move.
struct DeadlineBody {
    /// The body as hyper delivers it.
    inner: Body,
    /// Fires when the whole body should have arrived.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The timeout, for the error message.
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

/// The request body did not arrive whole in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", timeout.as_millis())]
struct BodyTimeout {
    /// The configured `body_read_timeout_ms`.
    timeout: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout {
                timeout: this.timeout,
            }))));
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_soft_limit(text), Some(1024));
        let unlimited = text.replace("1024 ", "unlimited ");
        assert_eq!(open_files_soft_limit(&unlimited), None);
        assert_eq!(open_files_soft_limit("Max processes 10 10"), None);
    }
}
