//! The terminal's own Prometheus metrics, on a local address when `[metrics] listen` is
//! set: `GET /metrics` (the Prometheus text format 0.0.4, `prometheus-client`). Every value
//! is read when Prometheus scrapes: the journal's counts (through the lock the sync task
//! shares, one short read), the sync state, the reader's state and the journal's size on
//! disk. Nothing here changes anything.

use super::sync::{SharedJournal, with_journal};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// What the reader layer last said, shared between the daemon's loop and the metrics.
#[derive(Debug, Clone, Default)]
pub struct ReaderGauge(Arc<AtomicU8>);

/// The reader states the metrics report, one series each.
pub const READER_STATES: [&str; 4] = ["waiting", "connected", "disconnected", "simulated"];

impl ReaderGauge {
    /// Records the reader's state (one of [`READER_STATES`]; anything else is ignored).
    pub fn set(&self, state: &str) {
        if let Some(i) = READER_STATES.iter().position(|s| *s == state) {
            self.0
                .store(u8::try_from(i).unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// The state last recorded.
    pub fn get(&self) -> &'static str {
        READER_STATES
            .get(usize::from(self.0.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or("waiting")
    }
}

/// What the metrics read from.
#[derive(Clone)]
pub struct TerminalProbe {
    /// The journal.
    pub journal: SharedJournal,
    /// Its file (the `-wal` beside it counts too).
    pub journal_path: PathBuf,
    /// Whether the last exchange with the ledger went through.
    pub online: Arc<AtomicBool>,
    /// The reader's state.
    pub reader: ReaderGauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The journal's bytes on disk: the database and its write-ahead log.
fn journal_bytes(path: &Path) -> u64 {
    let wal = {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        PathBuf::from(p)
    };
    [path.to_owned(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// Everything, read now, in the text format.
pub async fn render(probe: &TerminalProbe) -> String {
    let mut registry = Registry::with_prefix("cashless_terminal");
    let counts = with_journal(&probe.journal, |j| j.status_counts()).await;
    let journal_ok = counts.is_ok();
    if let Ok(c) = &counts {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut registry,
            "operations_waiting",
            "Operations journaled and not yet acknowledged by the ledger",
            n(c.pending),
        );
        gauge(
            &mut registry,
            "operations_in_doubt",
            "Online attempts whose answer never came, voided or being voided",
            n(c.in_doubt),
        );
        gauge(
            &mut registry,
            "operations_rejected",
            "Operations the ledger refused for good (need a person)",
            n(c.rejected),
        );
        gauge(
            &mut registry,
            "declined_offline",
            "Sales declined by the offline policy",
            n(c.declined_offline),
        );
        gauge(
            &mut registry,
            "closeouts_waiting",
            "Shift close-outs not yet recorded by the ledger",
            n(c.closeouts_pending),
        );
        // A round that reaches the ledger settles what was pending or, with nothing
        // pending, at least reads the card feed: the later of the two is the last contact.
        if let Some(at) = c.last_sync_at.max(c.last_feed_at) {
            gauge(
                &mut registry,
                "last_sync_age_seconds",
                "Seconds since the last sync round that reached the ledger",
                (chrono::Utc::now() - at).num_seconds().max(0),
            );
        }
    }
    gauge(
        &mut registry,
        "journal_readable",
        "1 while the journal answers",
        i64::from(journal_ok),
    );
    gauge(
        &mut registry,
        "online",
        "1 while the ledger answers",
        i64::from(probe.online.load(Ordering::Relaxed)),
    );
    let reader = Family::<StateLabels, Gauge>::default();
    let now = probe.reader.get();
    for state in READER_STATES {
        reader
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .set(i64::from(state == now));
    }
    registry.register(
        "reader",
        "The card reader's state: 1 for the current one",
        reader,
    );
    let path = probe.journal_path.clone();
    let bytes = tokio::task::spawn_blocking(move || journal_bytes(&path))
        .await
        .unwrap_or(0);
    gauge(
        &mut registry,
        "journal_bytes",
        "The journal's size on disk, its write-ahead log included",
        i64::try_from(bytes).unwrap_or(i64::MAX),
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, probe: TerminalProbe) {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let probe = probe.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )],
                    render(&probe).await,
                )
                    .into_response()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the metrics server stopped");
    }
}

/// Binds `[metrics] listen`.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("[metrics] listen: cannot listen on {addr}: {e}"))
}
