//! The PostgreSQL store's Stripe procedures (`migrations/postgres/0006_stripe_procedures.sql`)
//! against the SQLite store, the reference: the same events, parsed from Stripe's JSON by the
//! ledger's own `parse_event`, go to both through `Store::open` and the `StripeStore` trait;
//! each answer must be the same, and so must what each database holds afterwards (cards,
//! `stripe_events`, `stripe_recharges`, `stripe_refunds`, postings and the audit log, with
//! generated transaction ids replaced by their order of appearance and times left out).
//! Then PostgreSQL alone under concurrent deliveries: one event twenty times, twenty events
//! of one session, a session and its refunds at once, twenty sessions creating one card, a
//! credit waiting for an order that creates the same card; and
//! a credit waits for a page of the card feed in flight (the feed's lock comes first).
//!
//! PostgreSQL is the real server at 127.0.0.1:5432 (`CASHLESS_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a superuser); each test creates its own
//! database and drops it afterwards ([`TestDb`]). Without PostgreSQL these tests fail, saying
//! how to start it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use cashless::domain::Cents;
use cashless::ledger::config::DatabaseUrl;
use cashless::ledger::rules::Limits;
use cashless::ledger::store::{Store, StoreError, StoreOptions, StripeOutcome, StripeStore};
use cashless::ledger::stripe::parse_event;
use serde_json::{Value, json};

#[path = "common/pg.rs"]
mod pg;
use pg::{TestDb, connect, finished_or_waiting};

/// The festival's currency in these tests.
const CURRENCY: &str = "eur";
const RECHARGE_MAX: i64 = 50_000;
const BALANCE_MAX: i64 = 100_000;

// ---------------------------------------------------------------------------------------
// A database per test
// ---------------------------------------------------------------------------------------

fn options() -> StoreOptions {
    StoreOptions {
        limits: Limits {
            recharge_max: Cents::new(RECHARGE_MAX),
            balance_max: Cents::new(BALANCE_MAX),
        },
        retention_days: 30,
        postgres: Default::default(),
        taxes: cashless::domain::TaxRates::untaxed(),
    }
}

/// A PostgreSQL store on a fresh database, and a client to look inside it.
async fn postgres_store() -> (TestDb, Store, tokio_postgres::Client) {
    let db = TestDb::create().await;
    let store = Store::open(&DatabaseUrl::Postgres(db.url("")), options())
        .await
        .unwrap();
    let client = connect(&db.url("")).await.unwrap();
    (db, store, client)
}

// ---------------------------------------------------------------------------------------
// Stripe events, as Stripe sends them
// ---------------------------------------------------------------------------------------

/// A paid checkout session event (`checkout.session.completed` unless `event_type` says).
fn session_of(event_type: &str, evt: &str, cs: &str, pi: Option<&str>, object: Value) -> Value {
    let mut session = json!({
        "id": cs,
        "object": "checkout.session",
        "currency": CURRENCY,
        "mode": "payment",
        "payment_intent": pi,
        "payment_status": "paid",
        "status": "complete",
    });
    for (k, v) in object.as_object().unwrap() {
        session[k] = v.clone();
    }
    json!({"id": evt, "object": "event", "type": event_type, "data": {"object": session}})
}

fn session(evt: &str, cs: &str, pi: Option<&str>, card_uid: &str, amount: i64) -> Value {
    session_of(
        "checkout.session.completed",
        evt,
        cs,
        pi,
        json!({"amount_total": amount, "metadata": {"card_uid": card_uid}}),
    )
}

/// A `charge.refunded` event: `amount_refunded` is cumulative, as in Stripe.
fn refund_in(currency: &str, evt: &str, pi: Option<&str>, amount_refunded: i64) -> Value {
    json!({"id": evt, "object": "event", "type": "charge.refunded", "data": {"object": {
        "id": format!("ch_{evt}"), "object": "charge", "amount_refunded": amount_refunded,
        "currency": currency, "payment_intent": pi, "refunded": true}}})
}

fn refund(evt: &str, pi: Option<&str>, amount_refunded: i64) -> Value {
    refund_in(CURRENCY, evt, pi, amount_refunded)
}

/// What a store answered, comparable across backends: the outcome, or the error's kind.
type Answer = Result<StripeOutcome, &'static str>;

fn answer(result: Result<StripeOutcome, StoreError>) -> Answer {
    result.map_err(|e| match e {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Internal(_) => "internal",
        StoreError::Conflict(_) => "conflict",
        StoreError::NotFound(_) => "not found",
        StoreError::SchemaTooNew { .. } => "schema too new",
    })
}

async fn apply(store: &Store, request_id: &str, event: &Value) -> Answer {
    let body = serde_json::to_vec(event).unwrap();
    let event = parse_event(&body, CURRENCY).unwrap();
    answer(store.apply_stripe(request_id.to_owned(), event).await)
}

// ---------------------------------------------------------------------------------------
// What a database holds, comparable across backends
// ---------------------------------------------------------------------------------------

/// Each table's rows (cells as JSON: text, a parsed JSON column, or null), transaction ids
/// replaced by `tx<n>`, their order of first appearance in the postings.
type Snapshot = BTreeMap<&'static str, Vec<Vec<Value>>>;

/// Rows as read: every cell as text, or NULL.
type Rows = Vec<Vec<Option<String>>>;

/// A table a Stripe event writes, read with the same SQL on both backends (CAST to TEXT
/// works on both).
struct Table {
    name: &'static str,
    sql: &'static str,
    /// The columns that hold JSON (compared as values: key order and spacing differ).
    json: &'static [usize],
    /// Sort by the first column (the rest are ordered by a serial id in their query).
    sort: bool,
}

const TABLES: &[Table] = &[
    Table {
        name: "cards",
        sql: "SELECT card_uid, CAST(balance_cents AS TEXT), status, block_reason,
                     CAST(version AS TEXT)
              FROM cards",
        json: &[],
        sort: true,
    },
    Table {
        name: "stripe_events",
        sql: "SELECT event_id, event_type, outcome, checkout_session_id, payment_intent_id,
                     CAST(amount_cents AS TEXT), CAST(transaction_id AS TEXT), reason
              FROM stripe_events",
        json: &[],
        sort: true,
    },
    Table {
        name: "stripe_recharges",
        sql: "SELECT checkout_session_id, CAST(transaction_id AS TEXT), payment_intent_id,
                     event_id, card_uid, CAST(amount_cents AS TEXT), CAST(refunded_cents AS TEXT),
                     CAST(flags AS TEXT), CAST(previous_balance_cents AS TEXT),
                     CAST(new_balance_cents AS TEXT)
              FROM stripe_recharges",
        json: &[7],
        sort: true,
    },
    Table {
        name: "stripe_refunds",
        sql: "SELECT event_id, CAST(transaction_id AS TEXT), checkout_session_id, card_uid,
                     CAST(amount_cents AS TEXT), CAST(previous_balance_cents AS TEXT),
                     CAST(new_balance_cents AS TEXT)
              FROM stripe_refunds",
        json: &[],
        sort: true,
    },
    Table {
        name: "postings",
        sql: "SELECT CAST(transaction_id AS TEXT), account, CAST(amount_cents AS TEXT)
              FROM postings ORDER BY posting_id",
        json: &[],
        sort: false,
    },
    Table {
        name: "app_transaction_log",
        sql: "SELECT request_id, actor, staff_id, operation, CAST(client_request_id AS TEXT),
                     CAST(transaction_id AS TEXT), card_uid, CAST(amount_cents AS TEXT), outcome,
                     error_code, CAST(details AS TEXT)
              FROM app_transaction_log ORDER BY log_id",
        json: &[10],
        sort: false,
    },
];

/// Each table's rows as read (in [`TABLES`]' order) into a [`Snapshot`]: JSON columns
/// parsed, transaction ids renamed.
fn snapshot(raw: Vec<Rows>) -> Snapshot {
    // Transaction ids in the order the postings show them first.
    let mut names: HashMap<String, String> = HashMap::new();
    let postings = TABLES.iter().position(|t| t.name == "postings").unwrap();
    for row in &raw[postings] {
        let tx = row[0].clone().unwrap();
        let next = format!("tx{}", names.len());
        names.entry(tx).or_insert(next);
    }
    let mut out = Snapshot::new();
    for (table, rows) in TABLES.iter().zip(raw) {
        let mut rows: Vec<Vec<Value>> = rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .enumerate()
                    .map(|(i, cell)| match cell {
                        None => Value::Null,
                        Some(text) if table.json.contains(&i) => {
                            serde_json::from_str(&text).unwrap()
                        }
                        Some(text) => Value::String(names.get(&text).cloned().unwrap_or(text)),
                    })
                    .collect()
            })
            .collect();
        if table.sort {
            rows.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
        }
        out.insert(table.name, rows);
    }
    out
}

fn sqlite_snapshot(path: &PathBuf) -> Snapshot {
    let conn = rusqlite::Connection::open(path).unwrap();
    let read = |sql: &str| -> Rows {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    snapshot(TABLES.iter().map(|t| read(t.sql)).collect())
}

async fn postgres_snapshot(client: &tokio_postgres::Client) -> Snapshot {
    let mut raw = Vec::new();
    for table in TABLES {
        let rows: Rows = client
            .query(table.sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect();
        raw.push(rows);
    }
    snapshot(raw)
}

/// The same events on both backends.
struct Pair {
    _dir: tempfile::TempDir,
    sqlite_path: PathBuf,
    sqlite: Store,
    _db: TestDb,
    pg: Store,
    client: tokio_postgres::Client,
    step: usize,
}

impl Pair {
    async fn open() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let sqlite_path = dir.path().join("ledger.db");
        let sqlite = Store::open(&DatabaseUrl::Sqlite(sqlite_path.clone()), options())
            .await
            .unwrap();
        let (db, pg, client) = postgres_store().await;
        Pair {
            _dir: dir,
            sqlite_path,
            sqlite,
            _db: db,
            pg,
            client,
            step: 0,
        }
    }

    /// Applies `event` to both; both must answer the same, with `expected` (an outcome, or
    /// an error's kind), and then hold the same. Returns the outcome (`None`: an error).
    async fn check(&mut self, expected: &str, event: &Value) -> Option<StripeOutcome> {
        self.step += 1;
        let request_id = format!("req-{}", self.step);
        let from_sqlite = apply(&self.sqlite, &request_id, event).await;
        let from_pg = apply(&self.pg, &request_id, event).await;
        let what = format!("step {} ({})", self.step, event["id"]);
        assert_eq!(
            from_pg, from_sqlite,
            "{what}: PostgreSQL answered otherwise"
        );
        let got = match &from_pg {
            Ok(o) => o.outcome,
            Err(kind) => kind,
        };
        assert_eq!(got, expected, "{what}");
        self.assert_same_contents(&what).await;
        from_pg.ok()
    }

    async fn assert_same_contents(&self, what: &str) {
        let sqlite = sqlite_snapshot(&self.sqlite_path);
        let pg = postgres_snapshot(&self.client).await;
        for (table, rows) in &sqlite {
            assert_eq!(&pg[table], rows, "{what}: {table} differs");
        }
    }

    /// Puts a card at this balance and block reason in both, as the other operations
    /// (orders, a lost-card report) would: the next feed version.
    async fn set_card(&self, uid: &str, balance: i64, block_reason: Option<&str>) {
        let status = if block_reason.is_some() {
            "blocked"
        } else {
            "active"
        };
        let conn = rusqlite::Connection::open(&self.sqlite_path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute(
            "INSERT INTO cards (card_uid, balance_cents, status, block_reason, version,
                 created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(version), 0) + 1 FROM cards),
                 '2026-07-01T12:00:00.000Z', '2026-07-01T12:00:00.000Z')
             ON CONFLICT (card_uid) DO UPDATE SET balance_cents = excluded.balance_cents,
                 status = excluded.status, block_reason = excluded.block_reason,
                 version = excluded.version",
            rusqlite::params![uid, balance, status, block_reason],
        )
        .unwrap();
        self.client
            .execute(
                "INSERT INTO cards (card_uid, balance_cents, status, block_reason, version,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, nextval('card_version_seq'), now(), now())
                 ON CONFLICT (card_uid) DO UPDATE SET balance_cents = excluded.balance_cents,
                     status = excluded.status, block_reason = excluded.block_reason,
                     version = excluded.version",
                &[&uid, &balance, &status, &block_reason],
            )
            .await
            .unwrap();
        self.assert_same_contents(&format!("card {uid} set")).await;
    }
}

/// Money moved and the balance after it.
fn credited(outcome: &Option<StripeOutcome>) -> (i64, i64) {
    let o = outcome.as_ref().unwrap();
    (
        o.amount_cents.unwrap().get(),
        o.balance_cents.unwrap().get(),
    )
}

/// Every transaction's postings sum to zero, every id is a UUIDv7, and every time of one
/// call is one millisecond-precise time (what SQLite keeps).
async fn assert_postgres_invariants(client: &tokio_postgres::Client) {
    let unbalanced: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT transaction_id FROM postings GROUP BY transaction_id
                                   HAVING sum(amount_cents) <> 0) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        unbalanced, 0,
        "transactions whose postings do not sum to zero"
    );
    for row in client
        .query("SELECT DISTINCT transaction_id FROM postings", &[])
        .await
        .unwrap()
    {
        let tx: uuid::Uuid = row.get(0);
        assert_eq!(tx.get_version_num(), 7, "{tx} is not a UUIDv7");
    }
    let odd_times: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM stripe_events
                      WHERE received_at <> date_trunc('milliseconds', received_at))
                  + (SELECT count(*) FROM stripe_recharges r JOIN stripe_events e
                       ON e.event_id = r.event_id WHERE r.processed_at <> e.received_at)
                  + (SELECT count(*) FROM postings p JOIN app_transaction_log l
                       ON l.transaction_id = p.transaction_id WHERE p.created_at <> l.occurred_at)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        odd_times, 0,
        "times of one call differ, or are finer than 1 ms"
    );
}

// ---------------------------------------------------------------------------------------
// The same events on both backends
// ---------------------------------------------------------------------------------------

const CARD_A: &str = "04A1B2C3D4E5F6";
const CARD_B: &str = "04B1B2C3D4E5F6";
const CARD_C: &str = "04C1B2C3D4E5F6";
const CARD_D: &str = "04D1B2C3D4E5F6";
const CARD_LOST: &str = "04E1B2C3D4E5F6";
const CARD_FULL: &str = "04F1B2C3D4E5F6";

#[tokio::test]
async fn every_kind_of_stripe_event_does_on_postgresql_what_it_does_on_sqlite() {
    let mut p = Pair::open().await;

    // A paid session: the card is created and credited once per event and per session.
    let a = p
        .check(
            "credited",
            &session("evt_a1", "cs_a", Some("pi_a"), CARD_A, 2_000),
        )
        .await;
    assert_eq!(credited(&a), (2_000, 2_000));
    p.check(
        "duplicate_event",
        &session("evt_a1", "cs_a", Some("pi_a"), CARD_A, 2_000),
    )
    .await;
    let async_paid = session_of(
        "checkout.session.async_payment_succeeded",
        "evt_a2",
        "cs_a",
        Some("pi_a"),
        json!({"amount_total": 2_000, "metadata": {"card_uid": CARD_A}}),
    );
    p.check("duplicate_session", &async_paid).await;

    // Refunds: what the cumulative amount adds, never more than the credit, once per event.
    let r = p
        .check("refunded", &refund("evt_ra1", Some("pi_a"), 500))
        .await;
    assert_eq!(credited(&r), (500, 1_500));
    p.check("duplicate_event", &refund("evt_ra1", Some("pi_a"), 500))
        .await;
    p.check("refund_nothing_new", &refund("evt_ra2", Some("pi_a"), 500))
        .await;
    let r = p
        .check("refunded", &refund("evt_ra3", Some("pi_a"), 9_000))
        .await;
    assert_eq!(credited(&r), (1_500, 0));
    p.check(
        "refund_nothing_new",
        &refund("evt_ra4", Some("pi_a"), 9_500),
    )
    .await;

    // Refunds before their session wait, and are applied with it, smallest first.
    p.check("refund_waiting", &refund("evt_rb1", Some("pi_b"), 700))
        .await;
    p.check("refund_waiting", &refund("evt_rb2", Some("pi_b"), 300))
        .await;
    p.check("refund_waiting", &refund("evt_rb3", Some("pi_b"), 300))
        .await;
    p.check("duplicate_event", &refund("evt_rb1", Some("pi_b"), 700))
        .await;
    let b = p
        .check(
            "credited",
            &session("evt_b1", "cs_b", Some("pi_b"), CARD_B, 1_000),
        )
        .await;
    assert_eq!(credited(&b), (1_000, 300));
    p.check("refunded", &refund("evt_rb4", Some("pi_b"), 1_000))
        .await;

    // A refund without a payment intent waits for ever; one in another currency is
    // refused, with the session it would have been matched to, if any.
    p.check("refund_waiting", &refund("evt_rn", None, 100))
        .await;
    p.check("refused", &refund_in("usd", "evt_rusd1", Some("pi_a"), 100))
        .await;
    p.check(
        "refused",
        &refund_in("usd", "evt_rusd2", Some("pi_zz"), 100),
    )
    .await;
    p.check(
        "duplicate_event",
        &refund_in("usd", "evt_rusd2", Some("pi_zz"), 100),
    )
    .await;
    // ...and never applied when that session comes.
    p.check(
        "credited",
        &session("evt_zz", "cs_zz", Some("pi_zz"), CARD_B, 100),
    )
    .await;

    // Sessions the ledger cannot credit are recorded for an operator.
    let refused = |evt: &str, object: Value| {
        session_of(
            "checkout.session.completed",
            evt,
            &format!("cs_{evt}"),
            Some("pi_x"),
            object,
        )
    };
    for (evt, object) in [
        (
            "evt_usd",
            json!({"currency": "usd", "amount_total": 100, "metadata": {"card_uid": CARD_A}}),
        ),
        ("evt_nocard", json!({"amount_total": 100, "metadata": {}})),
        (
            "evt_badcard",
            json!({"amount_total": 100, "metadata": {"card_uid": "04a1"}}),
        ),
        (
            "evt_zero",
            json!({"amount_total": 0, "metadata": {"card_uid": CARD_A}}),
        ),
        (
            "evt_huge",
            json!({"amount_total": 100_000_000, "metadata": {"card_uid": CARD_A}}),
        ),
    ] {
        p.check("refused", &refused(evt, object.clone())).await;
        p.check("duplicate_event", &refused(evt, object)).await;
    }
    // Nothing to do, nothing remembered.
    let unpaid = session_of(
        "checkout.session.completed",
        "evt_unpaid",
        "cs_unpaid",
        None,
        json!({"payment_status": "unpaid", "amount_total": 100, "metadata": {"card_uid": CARD_A}}),
    );
    p.check("ignored", &unpaid).await;
    let other =
        json!({"id": "evt_other", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
    p.check("ignored", &other).await;

    // A payment intent already credited through another session: credited without the
    // link; refunds of it still go to the first session.
    p.check(
        "credited",
        &session("evt_a3", "cs_a_again", Some("pi_a"), CARD_A, 400),
    )
    .await;
    p.check(
        "refund_nothing_new",
        &refund("evt_ra5", Some("pi_a"), 2_000),
    )
    .await;
    // A session without a payment intent: credited, no refund can find it.
    p.check(
        "credited",
        &session("evt_nopi", "cs_nopi", None, CARD_A, 100),
    )
    .await;

    // Limits flag, never refuse.
    p.check(
        "credited",
        &session("evt_c1", "cs_c1", Some("pi_c1"), CARD_C, 60_000),
    )
    .await;
    p.check(
        "credited",
        &session("evt_c2", "cs_c2", Some("pi_c2"), CARD_C, 45_000),
    )
    .await;

    // A refund of money already spent takes the card into debt; credits lift it at zero.
    p.check(
        "credited",
        &session("evt_d1", "cs_d1", Some("pi_d1"), CARD_D, 1_000),
    )
    .await;
    p.set_card(CARD_D, 200, None).await;
    let d = p
        .check("refunded", &refund("evt_rd1", Some("pi_d1"), 1_000))
        .await;
    assert_eq!(credited(&d), (1_000, -800));
    p.check(
        "credited",
        &session("evt_d2", "cs_d2", Some("pi_d2"), CARD_D, 500),
    )
    .await;
    p.check("refund_waiting", &refund("evt_rd3", Some("pi_d3"), 200))
        .await;
    let d = p
        .check(
            "credited",
            &session("evt_d3", "cs_d3", Some("pi_d3"), CARD_D, 600),
        )
        .await;
    assert_eq!(credited(&d), (600, 100));

    // A lost card is credited and stays blocked, also through debt.
    p.set_card(CARD_LOST, 0, Some("lost")).await;
    p.check(
        "credited",
        &session("evt_l1", "cs_l1", Some("pi_l1"), CARD_LOST, 300),
    )
    .await;
    p.set_card(CARD_LOST, 100, Some("lost")).await;
    p.check("refunded", &refund("evt_rl1", Some("pi_l1"), 300))
        .await;
    p.check(
        "credited",
        &session("evt_l2", "cs_l2", Some("pi_l2"), CARD_LOST, 500),
    )
    .await;

    // A balance out of range is an error on both, and writes nothing.
    p.set_card(CARD_FULL, i64::MAX - 10, None).await;
    p.check(
        "internal",
        &session("evt_f1", "cs_f1", Some("pi_f1"), CARD_FULL, 100),
    )
    .await;
    p.set_card(CARD_FULL, i64::MIN + 10, Some("debt")).await;
    p.check("refund_waiting", &refund("evt_rf2", Some("pi_f2"), 50))
        .await;
    p.set_card(CARD_FULL, 0, None).await;
    p.check(
        "credited",
        &session("evt_f2", "cs_f2", Some("pi_f2"), CARD_FULL, 100),
    )
    .await;
    p.set_card(CARD_FULL, i64::MIN + 10, Some("debt")).await;
    p.check("internal", &refund("evt_rf3", Some("pi_f2"), 200))
        .await;

    // The operators' listing, whole and for attention, is the same (but for the times, and
    // the order of events received within one millisecond, which depends on them).
    for attention in [false, true] {
        let mut listed = Vec::new();
        for store in [&p.sqlite, &p.pg] {
            let events = store.stripe_events(attention, 1_000).await.unwrap();
            let times: Vec<&str> = events.iter().map(|e| e.received_at.as_str()).collect();
            let mut sorted = times.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            assert_eq!(times, sorted, "newest first");
            let mut rows: Vec<_> = events
                .into_iter()
                .map(|e| {
                    (
                        e.event_id,
                        e.event_type,
                        e.outcome,
                        e.checkout_session_id,
                        e.card_uid,
                        e.amount_cents,
                        e.reason,
                    )
                })
                .collect();
            rows.sort();
            listed.push(rows);
        }
        assert_eq!(
            listed[1], listed[0],
            "stripe_events(attention: {attention})"
        );
        assert!(!listed[0].is_empty());
        let limited = p.pg.stripe_events(attention, 3).await.unwrap();
        assert_eq!(limited.len(), 3);
    }
    assert_postgres_invariants(&p.client).await;
}

// ---------------------------------------------------------------------------------------
// PostgreSQL under concurrent deliveries
// ---------------------------------------------------------------------------------------

/// Delivers every event at once (each from its own task, released together), and returns
/// the answers in the events' order.
async fn all_at_once(store: &Store, events: Vec<Value>) -> Vec<StripeOutcome> {
    let barrier = Arc::new(tokio::sync::Barrier::new(events.len()));
    let tasks: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let store = store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                apply(&store, &format!("req-{i}"), &event).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    outcomes
}

fn count(outcomes: &[StripeOutcome], outcome: &str) -> usize {
    outcomes.iter().filter(|o| o.outcome == outcome).count()
}

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// What the database holds, in numbers: every card's balance summed, then the rows of
/// `stripe_recharges`, `stripe_events`, `postings` and the audit log.
async fn totals(client: &tokio_postgres::Client) -> [i64; 5] {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(balance_cents), 0)::bigint FROM cards),
                    (SELECT count(*) FROM stripe_recharges), (SELECT count(*) FROM stripe_events),
                    (SELECT count(*) FROM postings), (SELECT count(*) FROM app_transaction_log)",
            &[],
        )
        .await
        .unwrap();
    std::array::from_fn(|i| row.get(i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_of_one_event_credit_once() {
    let (_db, store, client) = postgres_store().await;
    let event = session("evt_1", "cs_1", Some("pi_1"), CARD_A, 2_500);
    let outcomes = all_at_once(&store, vec![event; 20]).await;
    assert_eq!(count(&outcomes, "credited"), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, "duplicate_event"), 19, "{outcomes:?}");
    assert_eq!(
        totals(&client).await,
        [2_500, 1, 1, 2, 1],
        "balance, credits, events, postings, audit rows"
    );
    assert_postgres_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_events_of_one_session_at_once_credit_it_once() {
    let (_db, store, client) = postgres_store().await;
    let events = (0..20)
        .map(|i| session(&format!("evt_{i}"), "cs_1", Some("pi_1"), CARD_A, 2_500))
        .collect();
    let outcomes = all_at_once(&store, events).await;
    assert_eq!(count(&outcomes, "credited"), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, "duplicate_session"), 19, "{outcomes:?}");
    assert_eq!(
        totals(&client).await,
        [2_500, 1, 20, 2, 1],
        "balance, credits, events, postings, audit rows"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(DISTINCT transaction_id) FROM stripe_events"
        )
        .await,
        1,
        "every duplicate names the one credit"
    );
    assert_postgres_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_and_its_refunds_at_once_reverse_each_cent_once() {
    let (_db, store, client) = postgres_store().await;
    // Cumulative refunds up to past the credit, each delivered twice, with the session.
    let mut events = vec![session("evt_s", "cs_1", Some("pi_1"), CARD_A, 5_000)];
    for (i, amount_refunded) in [1_000, 2_500, 2_500, 4_000, 6_000].into_iter().enumerate() {
        let event = refund(&format!("evt_r{i}"), Some("pi_1"), amount_refunded);
        events.push(event.clone());
        events.push(event);
    }
    let outcomes = all_at_once(&store, events).await;
    assert_eq!(count(&outcomes, "credited"), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, "duplicate_event"), 5, "{outcomes:?}");
    assert_eq!(scalar(&client, "SELECT balance_cents FROM cards").await, 0);
    assert_eq!(
        scalar(&client, "SELECT refunded_cents FROM stripe_recharges").await,
        5_000
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT sum(amount_cents)::bigint FROM stripe_refunds"
        )
        .await,
        5_000
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM stripe_events WHERE outcome = 'refund_waiting'"
        )
        .await,
        0,
        "every refund found its credit, before or after it"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT sum(amount_cents)::bigint FROM postings WHERE account = 'stripe_clearing'"
        )
        .await,
        0
    );
    assert_postgres_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_sessions_creating_one_card_at_once_create_it_once() {
    let (_db, store, client) = postgres_store().await;
    let events = (0..20)
        .map(|i| {
            session(
                &format!("evt_{i}"),
                &format!("cs_{i}"),
                Some(&format!("pi_{i}")),
                CARD_A,
                100,
            )
        })
        .collect();
    let outcomes = all_at_once(&store, events).await;
    assert_eq!(count(&outcomes, "credited"), 20, "{outcomes:?}");
    let mut balances: Vec<i64> = outcomes
        .iter()
        .map(|o| o.balance_cents.unwrap().get())
        .collect();
    balances.sort();
    assert_eq!(balances, (1..=20).map(|i| i * 100).collect::<Vec<_>>());
    assert_eq!(
        scalar(&client, "SELECT balance_cents FROM cards").await,
        2_000
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM stripe_recharges WHERE flags ? 'CARD_CREATED'"
        )
        .await,
        1,
        "one credit created the card"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM stripe_recharges r
              WHERE r.previous_balance_cents + r.amount_cents <> r.new_balance_cents"
        )
        .await,
        0
    );
    assert_postgres_invariants(&client).await;
}

/// The card feed's lock (`card_feed_writer()`, 0004).
const FEED_LOCK: (i64, Option<i64>) = (1_667_330_920, Some(1));
/// Any card's creation lock (`ledger_lock_new_card`, 0007).
const CREATION_LOCK: (i64, Option<i64>) = (1_667_330_921, None);

/// A credit of 700 cents to `CARD_A` (`evt_1`, `cs_1`), on a task of its own.
fn spawn_credit(store: &Store) -> tokio::task::JoinHandle<Answer> {
    let store = store.clone();
    tokio::spawn(async move {
        apply(
            &store,
            "req-1",
            &session("evt_1", "cs_1", Some("pi_1"), CARD_A, 700),
        )
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credit_waits_for_a_card_feed_page_in_flight_and_a_refusal_does_not() {
    let (db, store, client) = postgres_store().await;
    // A page of the card feed in flight: its exclusive lock held by an open transaction.
    let mut page = connect(&db.url("")).await.unwrap();
    let tx = page.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock(1667330920, 1)", &[])
        .await
        .unwrap();

    // A refused event changes no card: it does not wait.
    let refused = refund_in("usd", "evt_usd", Some("pi_1"), 100);
    assert_eq!(
        apply(&store, "req-0", &refused).await.unwrap().outcome,
        "refused"
    );

    let credit = spawn_credit(&store);
    if !finished_or_waiting(&client, &credit, FEED_LOCK, None).await {
        panic!("the credit did not wait: {:?}", credit.await.unwrap());
    }
    assert_eq!(
        totals(&client).await[0],
        0,
        "no card changed under the page"
    );
    tx.commit().await.unwrap();
    let done = credit.await.unwrap().unwrap();
    assert_eq!(done.outcome, "credited");
    assert_eq!(totals(&client).await, [700, 1, 2, 2, 2]);
}

/// An order or a top-up of a card the ledger has never seen takes the card's creation lock,
/// decides with a balance of 0 and inserts the card. A Stripe credit of the same card at that
/// moment must wait for it (0008) and then credit the card the other created: before, it
/// created the card itself, and the order's insert failed on it (a 500 for the terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credit_waits_for_an_order_creating_the_same_card() {
    let (db, store, client) = postgres_store().await;
    // The order, deciding: it holds the card's creation lock and has found no card.
    let mut order = connect(&db.url("")).await.unwrap();
    let tx = order.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(1667330921, hashtext($1))",
        &[&CARD_A],
    )
    .await
    .unwrap();

    let credit = spawn_credit(&store);
    if !finished_or_waiting(&client, &credit, CREATION_LOCK, None).await {
        panic!("the credit did not wait: {:?}", credit.await.unwrap());
    }
    // The order creates the card (an offline order into debt) and commits.
    tx.execute(
        "INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at,
                            updated_at)
         VALUES ($1, -300, 'blocked', 'debt', nextval('card_version_seq'), now(), now())",
        &[&CARD_A],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let done = credit.await.unwrap().unwrap();
    assert_eq!(done.outcome, "credited");
    assert_eq!(
        done.balance_cents.map(|b| b.get()),
        Some(400),
        "the credit paid the order's debt"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM stripe_recharges WHERE flags ? 'CARD_CREATED'"
        )
        .await,
        0,
        "the credit found the order's card"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM cards WHERE status = 'active' AND balance_cents = 400"
        )
        .await,
        1
    );
}
