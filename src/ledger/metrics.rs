//! The ledger's Prometheus metrics (`GET /metrics`, the Prometheus text format 0.0.4), with
//! the `prometheus-client` crate: counters and histograms the request path updates as it
//! goes, and gauges read from the database when Prometheus scrapes (terminals, cards
//! blocked for debt) or from the connection pool.
//!
//! Every label has a bounded set of values: routes as the router matched them, HTTP status
//! codes, operation types, error codes, Stripe outcomes, terminal names (the fleet
//! registered with the ledger).

use crate::ledger::outcome::{Decided, Outcome};
use crate::ledger::store::{FleetSnapshot, PoolStatus};
use crate::protocol::api::{Mode, Operation};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The `Content-Type` of what `GET /metrics` answers.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Terminals reported per scrape, at most (a festival has tens to hundreds).
pub const FLEET_TERMINALS_MAX: u32 = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    /// `order`, `recharge`, `void`, `return`, `voucher_grant`.
    r#type: String,
    /// `online` or `offline`.
    mode: String,
    /// `approved`, or the decline's error code.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TerminalLabels {
    terminal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// What the metrics keep of an operation sent to the store (taken before it goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenOperation {
    kind: &'static str,
    /// Made offline (a void counts as neither: it is always applied).
    offline: bool,
    created_at: DateTime<Utc>,
}

impl SeenOperation {
    /// What the metrics need of `op`.
    pub fn of(op: &Operation) -> SeenOperation {
        SeenOperation {
            kind: op.kind_str(),
            offline: op.mode() == Mode::Offline && !matches!(op, Operation::Void(_)),
            created_at: op.created_at(),
        }
    }
}

/// The ledger's metrics (one per serving process).
pub struct LedgerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    operations: Family<OperationLabels, Counter>,
    replays: Family<TypeLabels, Counter>,
    offline_age_seconds: Histogram,
    stripe_events: Family<OutcomeLabels, Counter>,
    cards_blocked_for_debt: Gauge,
    terminal_last_seen: Family<TerminalLabels, Gauge>,
    terminal_contiguous_seq: Family<TerminalLabels, Gauge>,
    terminal_missing_seqs: Family<TerminalLabels, Gauge>,
    db_connections: Family<StateLabels, Gauge>,
    db_waiting: Gauge,
    scrape_errors: Counter,
}

impl std::fmt::Debug for LedgerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerMetrics")
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        LedgerMetrics::new()
    }
}

impl LedgerMetrics {
    /// Every metric registered, at zero.
    pub fn new() -> LedgerMetrics {
        let mut registry = Registry::with_prefix("cashless");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by matched route and status",
            requests.clone(),
        );
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by matched route",
            request_seconds.clone(),
        );
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "operations",
            "Money-changing operations decided (alone or in batches), by type, mode and outcome (approved, or the error code); replays not counted",
            operations.clone(),
        );
        let replays = Family::<TypeLabels, Counter>::default();
        registry.register(
            "idempotent_replays",
            "Operations sent again and answered with their stored outcome, by type",
            replays.clone(),
        );
        // 1 s to about 4.5 days.
        let offline_age_seconds = Histogram::new(exponential_buckets(1.0, 3.0, 12));
        registry.register(
            "offline_operation_age_seconds",
            "Offline operations received (first time): how long after the terminal made them they arrived",
            offline_age_seconds.clone(),
        );
        let stripe_events = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "stripe_events",
            "Stripe webhook events processed, by outcome",
            stripe_events.clone(),
        );
        let cards_blocked_for_debt = Gauge::default();
        registry.register(
            "cards_blocked_for_debt",
            "Cards blocked because offline sales took them below zero (read at scrape)",
            cards_blocked_for_debt.clone(),
        );
        let terminal_last_seen = Family::<TerminalLabels, Gauge>::default();
        registry.register(
            "terminal_last_seen_timestamp_seconds",
            "When each terminal's last operation reached the ledger, Unix time (read at scrape)",
            terminal_last_seen.clone(),
        );
        let terminal_contiguous_seq = Family::<TerminalLabels, Gauge>::default();
        registry.register(
            "terminal_contiguous_seq",
            "Each terminal's highest terminal_seq with every one before it received (read at scrape)",
            terminal_contiguous_seq.clone(),
        );
        let terminal_missing_seqs = Family::<TerminalLabels, Gauge>::default();
        registry.register(
            "terminal_missing_seqs",
            "terminal_seq values below each terminal's highest seen that have not arrived: gaps (read at scrape)",
            terminal_missing_seqs.clone(),
        );
        let db_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "db_connections",
            "Database connections of this process: max, open, idle (PostgreSQL's pool; SQLite: its writer and readers)",
            db_connections.clone(),
        );
        let db_waiting = Gauge::default();
        registry.register(
            "db_waiting",
            "Requests waiting for a database connection (PostgreSQL) or for the writer (SQLite)",
            db_waiting.clone(),
        );
        let scrape_errors = Counter::default();
        registry.register(
            "metrics_scrape_errors",
            "Scrapes whose database-read gauges could not be refreshed (they keep their last values)",
            scrape_errors.clone(),
        );
        LedgerMetrics {
            registry,
            requests,
            request_seconds,
            operations,
            replays,
            offline_age_seconds,
            stripe_events,
            cards_blocked_for_debt,
            terminal_last_seen,
            terminal_contiguous_seq,
            terminal_missing_seqs,
            db_connections,
            db_waiting,
            scrape_errors,
        }
    }

    /// One request answered.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Operations and their outcomes, in the same order, decided at `now`.
    pub fn operations(
        &self,
        operations: &[SeenOperation],
        outcomes: &[Outcome],
        now: DateTime<Utc>,
    ) {
        for (op, outcome) in operations.iter().zip(outcomes) {
            let kind = op.kind.to_owned();
            if outcome.replayed {
                self.replays
                    .get_or_create(&TypeLabels { r#type: kind })
                    .inc();
                continue;
            }
            let result = match &outcome.decided {
                Decided::Approved(_) => "approved".to_owned(),
                Decided::Declined(d) => d.error.code.as_str().to_owned(),
            };
            let offline = op.offline;
            self.operations
                .get_or_create(&OperationLabels {
                    r#type: kind,
                    mode: if offline { "offline" } else { "online" }.to_owned(),
                    outcome: result,
                })
                .inc();
            if offline {
                let age = (now - op.created_at).num_milliseconds().max(0);
                self.offline_age_seconds.observe(age as f64 / 1000.0);
            }
        }
    }

    /// A Stripe event processed.
    pub fn stripe_event(&self, outcome: &str) {
        self.stripe_events
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The gauges read from the database at a scrape (`None`: the read failed, and they
    /// keep their last values) and the pool's state, then everything in the text format.
    pub fn render(&self, fleet: Option<&FleetSnapshot>, pool: &PoolStatus) -> String {
        match fleet {
            Some(fleet) => {
                self.cards_blocked_for_debt
                    .set(fleet.cards_blocked_for_debt);
                // Terminals revoked since the last scrape go away: a stolen device that is
                // never seen again is not a terminal gone quiet.
                self.terminal_last_seen.clear();
                self.terminal_contiguous_seq.clear();
                self.terminal_missing_seqs.clear();
                for t in fleet.terminals.iter().filter(|t| t.active) {
                    let labels = TerminalLabels {
                        terminal: t.name.clone(),
                    };
                    if let Some(seen) = t.last_seen_at {
                        self.terminal_last_seen
                            .get_or_create(&labels)
                            .set(seen.timestamp());
                    }
                    self.terminal_contiguous_seq
                        .get_or_create(&labels)
                        .set(t.highest_contiguous_seq);
                    self.terminal_missing_seqs
                        .get_or_create(&labels)
                        .set(t.missing_seqs);
                }
            }
            None => {
                self.scrape_errors.inc();
            }
        }
        let gauge = |state: &str| {
            self.db_connections.get_or_create(&StateLabels {
                state: state.to_owned(),
            })
        };
        gauge("max").set(i64::try_from(pool.max_connections).unwrap_or(i64::MAX));
        gauge("open").set(i64::try_from(pool.open_connections).unwrap_or(i64::MAX));
        if let Some(idle) = pool.idle_connections {
            gauge("idle").set(i64::try_from(idle).unwrap_or(i64::MAX));
        }
        self.db_waiting
            .set(i64::try_from(pool.waiting).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}
