//! The PostgreSQL store's feeds, admin commands and reports (issue 12), against the real
//! PostgreSQL at 127.0.0.1:5432, opened as the ledger opens it (`Store::open` with a
//! `postgres://` URL). Each test has its own database, dropped afterwards (`common/pg.rs`).
//!
//! - The SQLite store is the reference: the same calls on both stores (and the same rows
//!   seeded into both, by one SQL text both accept) must give the same answers, errors and
//!   audit-log rows. The PostgreSQL databases here sort text by ICU's English rules, so a
//!   query that forgets to ask for byte order (SQLite's) lists differently and fails.
//! - The card feed under several writers: a version taken but not yet committed must hold
//!   back every page past it, so that a terminal never moves its `since` beyond a version
//!   that commits later. One test replays that with a version held open on a second
//!   connection; a control runs the same steps against a feed function that ignores the
//!   writers' lock and shows that they catch the skip.
#![allow(clippy::unwrap_used)]

#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cashless::domain::{CardUid, Cents, ProductId, StaffId, TerminalSeq};
use cashless::ledger::caller::Terminal;
use cashless::ledger::config::DatabaseUrl;
use cashless::ledger::rules::Limits;
use cashless::ledger::store::{
    AdminStore, CardFeedPage, CatalogProduct, FeedStore, NewStaff, NewTerminal, Product,
    ProductUpsert, ReportStore, Store, StoreError, StoreOptions, token_sha256,
};
use cashless::protocol::api::{Scan, StaffRole, TerminalKind, format_time};
use chrono::{DateTime, Utc};
use pg::{TestDb, finished_or_waiting};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use uuid::Uuid;

/// The card feed's advisory lock (`migrations/postgres/0004_card_feed.sql`).
const FEED_LOCK: (i64, i64) = (1_667_330_920, 1);

fn options() -> StoreOptions {
    StoreOptions {
        limits: Limits {
            recharge_max: Cents::new(50_000),
            balance_max: Cents::new(100_000),
        },
        retention_days: 30,
        postgres: Default::default(),
        taxes: cashless::domain::TaxRates::untaxed(),
    }
}

fn uid(text: &str) -> CardUid {
    CardUid::parse(text).unwrap()
}

/// Raw access to a store's database, beside the store.
enum Raw {
    Sqlite(PathBuf),
    Postgres(tokio_postgres::Client),
}

/// An audit-log row as both backends must write it: actor, operation, card, outcome,
/// details.
type LogRow = (String, String, Option<String>, String, Value);

impl Raw {
    /// Runs statements (one SQL text both backends accept).
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Raw::Postgres(client) => client.batch_execute(sql).await.unwrap(),
        }
    }

    /// The audit log, oldest first.
    async fn log(&self) -> Vec<LogRow> {
        const SQL: &str = "SELECT actor, operation, card_uid, outcome, details FROM app_transaction_log ORDER BY log_id";
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut stmt = conn.prepare(SQL).unwrap();
                stmt.query_map([], |r| {
                    let details: String = r.get(4)?;
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        serde_json::from_str(&details).unwrap(),
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Raw::Postgres(client) => client
                .query(SQL, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect(),
        }
    }

    /// The stored scans in the order stored: card, result, reader, scanned_at, seq,
    /// terminal.
    async fn scans(&self) -> Vec<(String, String, String, String, Option<i64>, String)> {
        const SQL: &str =
            "SELECT s.card_uid, s.result, s.reader, s.scanned_at, s.terminal_seq, t.name
                           FROM nfc_scan_log s JOIN terminals t ON t.terminal_id = s.terminal_id
                           ORDER BY s.scan_id";
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut stmt = conn.prepare(SQL).unwrap();
                stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Raw::Postgres(client) => client
                .query(SQL, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        format_time(r.get::<_, DateTime<Utc>>(3)),
                        r.get(4),
                        r.get(5),
                    )
                })
                .collect(),
        }
    }
}

/// A store of one backend and raw access to its database (kept while this lives).
struct Backend {
    store: Store,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDb>,
}

impl Backend {
    /// The reference: an SQLite file.
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let store = Store::open(&DatabaseUrl::Sqlite(path.clone()), options())
            .await
            .unwrap();
        Backend {
            store,
            raw: Raw::Sqlite(path),
            _dir: Some(dir),
            _db: None,
        }
    }

    /// A fresh PostgreSQL database whose text sorts by English rules.
    async fn postgres() -> Backend {
        let db = TestDb::create_with_english_collation().await;
        let (store, raw) = open_postgres(&db).await;
        Backend {
            store,
            raw: Raw::Postgres(raw),
            _dir: None,
            _db: Some(db),
        }
    }

    /// Seeds rows from one SQL text; on PostgreSQL the card versions' sequence then moves
    /// past the versions the rows took, as the migration does for a moved database.
    async fn seed(&self, sql: &str) {
        self.raw.exec(sql).await;
        if let Raw::Postgres(client) = &self.raw {
            client
                .batch_execute(
                    "SELECT setval('card_version_seq', COALESCE((SELECT max(version) FROM cards), 0) + 1, false)",
                )
                .await
                .unwrap();
        }
    }
}

/// The store on `db`, opened as the ledger opens it, and a raw connection.
async fn open_postgres(db: &TestDb) -> (Store, tokio_postgres::Client) {
    let store = Store::open(&DatabaseUrl::Postgres(db.url("")), options())
        .await
        .unwrap();
    assert!(matches!(store, Store::Postgres(_)));
    (store, db.admin().await)
}

/// Runs `script` on the SQLite store and on the PostgreSQL store, and checks that both saw
/// the same; returns what PostgreSQL saw, for the test's own checks.
async fn on_both<T>(script: impl AsyncFn(&Backend) -> T) -> T
where
    T: PartialEq + std::fmt::Debug,
{
    let sqlite = script(&Backend::sqlite().await).await;
    let postgres = script(&Backend::postgres().await).await;
    assert_eq!(
        postgres, sqlite,
        "PostgreSQL (left) and SQLite (right) differ"
    );
    postgres
}

/// A store error as the admin commands show it: its kind and message.
fn error<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => format!("{e:?}"),
        // Other errors carry the database's own message: only their kind must agree.
        Err(StoreError::Internal(_)) => "Internal".into(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn product(pos: &str, id: &str, price: i64, category: Option<&str>) -> ProductUpsert {
    ProductUpsert {
        point_of_sale: pos.into(),
        product: Product {
            product_id: ProductId::parse(id).unwrap(),
            name: format!("{id} name"),
            price_cents: Cents::new(price),
            category: category.map(Into::into),
            tax_rate: None,
            min_age: None,
            open_price_max_cents: None,
            voucher_price: None,
            returnable: false,
            deposit_product_id: None,
        },
    }
}

/// Everything an admin registers, read back through the feeds.
#[derive(Debug, PartialEq)]
struct Registrations {
    terminals: Vec<Option<(String, TerminalKind, String)>>,
    refusals: Vec<String>,
    staff: Vec<String>,
    catalogs: Vec<Vec<CatalogProduct>>,
    purged: Vec<u64>,
    log: Vec<LogRow>,
}

#[tokio::test]
async fn registrations_answer_as_on_sqlite() {
    let seen = on_both(async |b: &Backend| {
        let s = &b.store;
        s.ping().await.unwrap();
        let mut ids = Vec::new();
        for (name, kind, pos) in [
            ("bar-1", TerminalKind::Bar, "Main Bar"),
            ("cp-1", TerminalKind::Checkpoint, "Entrance"),
        ] {
            ids.push(
                s.add_terminal(NewTerminal {
                    name: name.into(),
                    kind,
                    point_of_sale: pos.into(),
                    token_sha256: token_sha256(&format!("token-{name}")),
                })
                .await
                .unwrap(),
            );
        }
        let mut refusals = vec![
            // The same name; then a new name with a token already in use.
            error(
                s.add_terminal(NewTerminal {
                    name: "bar-1".into(),
                    kind: TerminalKind::Bar,
                    point_of_sale: "Main Bar".into(),
                    token_sha256: token_sha256("another"),
                })
                .await,
            ),
            error(
                s.add_terminal(NewTerminal {
                    name: "bar-9".into(),
                    kind: TerminalKind::Bar,
                    point_of_sale: "Main Bar".into(),
                    token_sha256: token_sha256("token-bar-1"),
                })
                .await,
            ),
        ];
        let found = s.terminal_by_name("bar-1".into()).await.unwrap().unwrap();
        assert_eq!(found.terminal_id, ids[0]);
        b.raw
            .exec("UPDATE terminals SET active = false WHERE name = 'cp-1'")
            .await;
        let mut terminals = Vec::new();
        for name in ["bar-1", "cp-1", "bar-9", "nobody"] {
            terminals.push(
                s.terminal_by_name(name.into())
                    .await
                    .unwrap()
                    .map(|t| (t.name, t.kind, t.point_of_sale)),
            );
        }

        // Ids that byte order and English order list differently.
        for (id, role) in [
            ("b", StaffRole::Bar),
            ("B-2", StaffRole::Cashier),
            ("a_1", StaffRole::Supervisor),
            ("a-3", StaffRole::Bar),
            ("A.4", StaffRole::Cashier),
        ] {
            s.add_staff(NewStaff {
                staff_id: StaffId::parse(id).unwrap(),
                name: format!("{id} name"),
                role,
                pin_hash: format!("$argon2id$fake${id}"),
            })
            .await
            .unwrap();
        }
        refusals.push(error(
            s.add_staff(NewStaff {
                staff_id: StaffId::parse("b").unwrap(),
                name: "again".into(),
                role: StaffRole::Bar,
                pin_hash: "x".into(),
            })
            .await,
        ));
        b.raw
            .exec("UPDATE staff SET active = false WHERE staff_id = 'a-3'")
            .await;
        let staff = s
            .staff()
            .await
            .unwrap()
            .into_iter()
            .map(|r| format!("{r:?}"))
            .collect();

        s.upsert_products(vec![
            product("Main Bar", "beer", 450, Some("drinks")),
            product("Main Bar", "Cola", 300, Some("drinks")),
            product("Main Bar", "chips", 250, None),
            product("Main Bar", "Nuts", 350, None),
            product("Main Bar", "wine", 700, Some("Drinks")),
            product("Main Bar", "gin", 800, Some("Drinks")),
            product("Entrance", "ticket", 0, None),
        ])
        .await
        .unwrap();
        b.raw
            .exec("UPDATE products SET active = false WHERE product_id IN ('wine', 'gin')")
            .await;
        // A new price, and a deactivated product offered again.
        s.upsert_products(vec![
            product("Main Bar", "beer", 500, Some("drinks")),
            product("Main Bar", "wine", 750, Some("Drinks")),
        ])
        .await
        .unwrap();
        // A refused product refuses its whole batch: the valid one before it is not kept.
        refusals.push(error(
            s.upsert_products(vec![
                product("Main Bar", "gum", 100, None),
                product("Main Bar", "bad", -1, None),
            ])
            .await,
        ));
        let mut catalogs = Vec::new();
        for pos in ["Main Bar", "Entrance", "Nowhere"] {
            catalogs.push(s.catalog(pos.into()).await.unwrap());
        }

        b.raw
            .exec(
                "INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                     status_code, response_body, transaction_id, created_at, expires_at) VALUES
                 ('10000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'order', 'h',
                  402, '{}', NULL, '2000-01-01T00:00:00.000Z', '2000-01-31T00:00:00.000Z'),
                 ('10000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000aa', 'recharge', 'h',
                  402, '{}', NULL, '2000-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z'),
                 ('10000000-0000-4000-8000-000000000003', '00000000-0000-4000-8000-0000000000aa', 'order', 'h',
                  201, '{}', '20000000-0000-4000-8000-000000000003', '2000-01-01T00:00:00.000Z', NULL)",
            )
            .await;
        let purged = vec![
            s.purge_expired_keys(1000).await.unwrap(),
            s.purge_expired_keys(1000).await.unwrap(),
        ];

        // The terminals' ids are random: each must be the one add_terminal returned.
        let mut log = b.raw.log().await;
        for row in log.iter_mut().filter(|r| r.1 == "terminal_add") {
            let id = row.4.as_object_mut().unwrap().remove("terminal_id").unwrap();
            let id: Uuid = serde_json::from_value(id).unwrap();
            assert!(ids.contains(&id), "{id} is no terminal added");
        }
        Registrations {
            terminals,
            refusals,
            staff,
            catalogs,
            purged,
            log,
        }
    })
    .await;

    // What SQLite answers is the reference; a few of its answers spelled out, so that a
    // change to both stores is seen too.
    assert_eq!(
        seen.terminals[0],
        Some(("bar-1".into(), TerminalKind::Bar, "Main Bar".into()))
    );
    // A revoked terminal is still found by name (an operator imports what it journaled).
    assert_eq!(
        seen.terminals[1],
        Some(("cp-1".into(), TerminalKind::Checkpoint, "Entrance".into())),
        "revoked"
    );
    assert_eq!(seen.terminals[2..], [None, None], "refused, unknown");
    assert_eq!(
        seen.refusals,
        [
            r#"Conflict("a terminal named \"bar-1\" already exists")"#,
            r#"Conflict("a terminal named \"bar-9\" already exists")"#,
            r#"Conflict("staff member b already exists")"#,
            "Internal",
        ]
    );
    let staff_ids: Vec<&str> = seen
        .staff
        .iter()
        .map(|s| s.split('"').nth(1).unwrap())
        .collect();
    assert_eq!(staff_ids, ["A.4", "B-2", "a-3", "a_1", "b"], "byte order");
    let main_bar: Vec<(&str, i64)> = seen.catalogs[0]
        .iter()
        .map(|p| (p.product_id.as_str(), p.price_cents.get()))
        .collect();
    assert_eq!(
        main_bar,
        [
            ("Nuts", 350),
            ("chips", 250),
            ("wine", 750),
            ("Cola", 300),
            ("beer", 500)
        ],
        "no category first, then by category and id in byte order; gin inactive, gum refused"
    );
    assert_eq!(seen.catalogs[1].len(), 1);
    assert!(seen.catalogs[2].is_empty());
    assert_eq!(seen.purged, [1, 0], "only the expired decline's key");
    let operations: Vec<&str> = seen.log.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        operations,
        [
            "terminal_add",
            "terminal_add",
            "staff_add",
            "staff_add",
            "staff_add",
            "staff_add",
            "staff_add",
            "product_upsert",
            "product_upsert",
            "product_upsert",
            "product_upsert",
            "product_upsert",
            "product_upsert",
            "product_upsert",
            "product_upsert",
            "product_upsert",
        ],
        "one row per registration, none for a refused one"
    );
    assert!(seen.log.iter().all(|r| r.0 == "admin" && r.3 == "done"));
}

/// Cards of the set_card_lost test: a funded card, one blocked for debt, an empty one.
const CARDS: &str = "
    INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at, updated_at) VALUES
    ('04000001', 1000, 'active', NULL, 1, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z'),
    ('04000002', -300, 'blocked', 'debt', 2, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z'),
    ('04000003', 0, 'active', NULL, 3, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z');";

/// A feed page without the times of change (the two stores' clocks differ).
fn page_view(page: &CardFeedPage) -> (Vec<(String, i64, String, i64)>, i64) {
    for c in &page.cards {
        assert_ne!(c.updated_at, "2025-07-01T09:00:00.000Z", "{c:?} changed");
        let t = DateTime::parse_from_rfc3339(&c.updated_at).unwrap();
        assert_eq!(format_time(t.into()), c.updated_at, "RFC 3339, millis, Z");
    }
    let cards = page
        .cards
        .iter()
        .map(|c| {
            (
                c.card_uid.to_string(),
                c.balance_cents.get(),
                c.status.clone(),
                c.version,
            )
        })
        .collect();
    (cards, page.next_version)
}

#[tokio::test]
async fn set_card_lost_is_audited_and_moves_the_card_in_the_feed() {
    let seen = on_both(async |b: &Backend| {
        let s = &b.store;
        b.seed(CARDS).await;
        let mut refusals = Vec::new();
        for (card, lost) in [
            ("04000001", true),
            ("04000002", true),
            ("04000002", false),
            ("04000001", false),
            ("04000003", false),
        ] {
            s.set_card_lost(uid(card), lost).await.unwrap();
        }
        refusals.push(error(s.set_card_lost(uid("04FFFFFF"), true).await));
        let mut pages = Vec::new();
        for (since, limit) in [(0, 100), (3, 100), (0, 2), (5, 2), (7, 2), (8, 2)] {
            pages.push((since, limit, s.card_feed(since, limit).await.unwrap()));
        }
        let pages: Vec<_> = pages
            .iter()
            .map(|(since, limit, p)| (*since, *limit, page_view(p)))
            .collect();
        let card = s.card(uid("04000002")).await.unwrap().map(|c| {
            (
                c.card_uid.to_string(),
                c.balance_cents.get(),
                c.status,
                c.version,
            )
        });
        let unknown = s.card(uid("04FFFFFF")).await.unwrap();
        (pages, card, unknown, refusals, b.raw.log().await)
    })
    .await;
    let (pages, card, unknown, refusals, log) = seen;
    let versions: Vec<i64> = pages[0].2.0.iter().map(|c| c.3).collect();
    assert_eq!(versions, [6, 7, 8], "each change took the next version");
    assert_eq!(
        pages[0].2.0,
        [
            ("04000002".into(), -300, "blocked".into(), 6),
            ("04000001".into(), 1000, "active".into(), 7),
            ("04000003".into(), 0, "active".into(), 8),
        ]
    );
    assert_eq!(
        card,
        Some(("04000002".into(), -300, "blocked".into(), 6)),
        "lifting a lost block keeps the debt block"
    );
    assert_eq!(unknown, None);
    assert_eq!(refusals, [r#"NotFound("card 04FFFFFF is unknown")"#]);
    let (second, next) = &pages[3].2;
    assert_eq!((second.len(), *next), (2, 7), "a page's next_version");
    assert_eq!(pages[5].2, (vec![], 8), "an empty page keeps since");
    let expected: Vec<LogRow> = [
        ("card_block", "04000001"),
        ("card_block", "04000002"),
        ("card_unblock", "04000002"),
        ("card_unblock", "04000001"),
        ("card_unblock", "04000003"),
    ]
    .iter()
    .map(|(op, card)| {
        (
            "admin".into(),
            (*op).into(),
            Some((*card).into()),
            "done".into(),
            serde_json::json!({}),
        )
    })
    .collect();
    assert_eq!(log, expected);
}

#[tokio::test]
async fn set_card_lost_takes_the_feed_writer_lock_before_the_cards_row() {
    let db = TestDb::create().await;
    let (store, raw) = open_postgres(&db).await;
    raw.batch_execute(CARDS).await.unwrap();
    raw.batch_execute("SELECT setval('card_version_seq', 3)")
        .await
        .unwrap();
    // A page in progress holds the lock exclusively.
    let page = db.admin().await;
    page.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1667330920, 1)")
        .await
        .unwrap();
    let s = store.clone();
    let blocking = tokio::spawn(async move { s.set_card_lost(uid("04000001"), true).await });
    assert!(
        finished_or_waiting(
            &raw,
            &blocking,
            (FEED_LOCK.0, Some(FEED_LOCK.1)),
            Some("ShareLock")
        )
        .await,
        "set_card_lost must wait for the page: it changes a card without the writer lock"
    );
    // It waits before locking the card's row: another transaction can still lock it.
    let other = db.admin().await;
    other
        .batch_execute(
            "BEGIN; SELECT 1 FROM cards WHERE card_uid = '04000001' FOR UPDATE NOWAIT; ROLLBACK",
        )
        .await
        .unwrap();
    page.batch_execute("COMMIT").await.unwrap();
    blocking.await.unwrap().unwrap();
    let card = store.card(uid("04000001")).await.unwrap().unwrap();
    assert_eq!((card.status.as_str(), card.version), ("blocked", 4));
}

/// What a terminal paging the feed saw while a writer held a version open.
#[derive(Debug)]
struct Sighting {
    /// The page waited for the feed's lock.
    waited: bool,
    /// The versions of the page asked for while the version was held.
    first_page: Vec<i64>,
    /// Every version the terminal saw, that page's and the next one's.
    seen: Vec<i64>,
    /// Every version the cards took after the terminal's `since`.
    changed: Vec<i64>,
}

fn versions(page: &CardFeedPage) -> Vec<i64> {
    page.cards.iter().map(|c| c.version).collect()
}

/// Adds a card as every writer must: the feed's writer lock, then a version from the
/// sequence, in one transaction.
async fn insert_card(raw: &tokio_postgres::Client, card: &str, balance_cents: i64) {
    raw.batch_execute(&format!(
        "BEGIN; SELECT card_feed_writer();
         INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at, updated_at)
         VALUES ('{card}', {balance_cents}, 'active', NULL, nextval('card_version_seq'), now(), now());
         COMMIT"
    ))
    .await
    .unwrap();
}

/// A writer takes version 4 and holds it uncommitted on its own connection while two later
/// writers commit versions 5 and 6; a terminal then pages from 3 and, once the writer has
/// committed, pages on from the first page's next_version.
async fn page_while_a_version_is_held(db: &TestDb, store: &Store) -> Sighting {
    let raw = db.admin().await;
    for card in ["04000001", "04000002", "04000003"] {
        insert_card(&raw, card, 100).await;
    }
    let start = store.card_feed(0, 100).await.unwrap();
    assert_eq!(versions(&start), [1, 2, 3]);
    let since = start.next_version;

    let held = db.admin().await;
    held.batch_execute(
        "BEGIN; SELECT card_feed_writer();
         UPDATE cards SET balance_cents = 150, version = nextval('card_version_seq'),
                          updated_at = now()
         WHERE card_uid = '04000001'",
    )
    .await
    .unwrap();
    // Later writers share the lock with the held one: they neither wait nor are waited for.
    store.set_card_lost(uid("04000002"), true).await.unwrap();
    insert_card(&raw, "04000004", 50).await;

    let pager = store.clone();
    let page = tokio::spawn(async move { pager.card_feed(since, 100).await });
    let waited = finished_or_waiting(
        &raw,
        &page,
        (FEED_LOCK.0, Some(FEED_LOCK.1)),
        Some("ExclusiveLock"),
    )
    .await;
    held.batch_execute("COMMIT").await.unwrap();
    let first = page.await.unwrap().unwrap();
    let then = store.card_feed(first.next_version, 100).await.unwrap();
    let changed = raw
        .query(
            "SELECT version FROM cards WHERE version > $1 ORDER BY version",
            &[&since],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    Sighting {
        waited,
        first_page: versions(&first),
        seen: [versions(&first), versions(&then)].concat(),
        changed,
    }
}

#[tokio::test]
async fn the_feed_never_skips_a_version_that_commits_after_later_ones() {
    let db = TestDb::create().await;
    let (store, _raw) = open_postgres(&db).await;
    let sighting = page_while_a_version_is_held(&db, &store).await;
    assert_eq!(sighting.changed, [4, 5, 6]);
    assert!(
        sighting.waited,
        "the page must wait for the writer holding version 4: {sighting:?}"
    );
    assert_eq!(sighting.first_page, [4, 5, 6], "{sighting:?}");
    assert_eq!(sighting.seen, sighting.changed, "every change seen once");
}

#[tokio::test]
async fn a_feed_that_ignores_the_writers_lock_skips_and_the_scenario_shows_it() {
    // The control of the test above: the same steps against a card_feed() that reads
    // without the lock and without the horizon must lose version 4, or the steps prove
    // nothing.
    let db = TestDb::create().await;
    let (store, raw) = open_postgres(&db).await;
    raw.batch_execute(
        "CREATE OR REPLACE FUNCTION card_feed(p_since_version bigint, p_limit integer)
         RETURNS TABLE (card_uid text, balance_cents bigint, status text, version bigint,
                        updated_at timestamptz, age_flag text, voucher_units bigint,
                        key_version integer)
         LANGUAGE sql AS $$
             SELECT c.card_uid, c.balance_cents, c.status, c.version, c.updated_at, c.age_flag,
                    c.voucher_units, c.key_version
             FROM cards c
             WHERE c.version > p_since_version ORDER BY c.version LIMIT p_limit
         $$",
    )
    .await
    .unwrap();
    let sighting = page_while_a_version_is_held(&db, &store).await;
    assert!(!sighting.waited, "{sighting:?}");
    assert_eq!(sighting.first_page, [5, 6], "{sighting:?}");
    assert_eq!(sighting.seen, [5, 6], "version 4 is skipped: {sighting:?}");
    assert_eq!(sighting.changed, [4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_among_many_writers_end_on_every_cards_last_change() {
    const CARDS_N: usize = 8;
    const CHANGES_PER_WRITER: usize = 30;
    let db = TestDb::create().await;
    let (store, raw) = open_postgres(&db).await;
    let cards: Vec<String> = (0..CARDS_N).map(|i| format!("0500000{i}")).collect();
    for card in &cards {
        insert_card(&raw, card, 0).await;
    }
    let cards = Arc::new(cards);
    let mut writers = Vec::new();
    // Store writers (set_card_lost) and raw writers that hold their version a little while
    // before they commit or, one time in five, roll back: versions commit out of order and
    // some are never used.
    for w in 0..3_u64 {
        let (store, cards) = (store.clone(), Arc::clone(&cards));
        writers.push(tokio::spawn(async move {
            for i in 0..CHANGES_PER_WRITER {
                let card = &cards[(i * 3 + usize::try_from(w).unwrap()) % CARDS_N];
                store.set_card_lost(uid(card), i % 2 == 0).await.unwrap();
            }
        }));
    }
    for w in 0..2_u64 {
        let client = db.admin().await;
        let cards = Arc::clone(&cards);
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            for i in 0..CHANGES_PER_WRITER {
                let card = &cards[rng.random_range(0..CARDS_N)];
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT card_feed_writer();
                         UPDATE cards SET balance_cents = balance_cents + 1,
                                          version = nextval('card_version_seq'), updated_at = now()
                         WHERE card_uid = '{card}'"
                    ))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
                let end = if i % 5 == 4 { "ROLLBACK" } else { "COMMIT" };
                client.batch_execute(end).await.unwrap();
            }
        }));
    }
    let done = Arc::new(AtomicBool::new(false));
    let pager = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut since = 0;
            let mut view = BTreeMap::new();
            loop {
                let finishing = done.load(Ordering::SeqCst);
                let page = store.card_feed(since, 5).await.unwrap();
                for c in &page.cards {
                    assert!(c.version > since, "version {} after {since}", c.version);
                    since = c.version;
                    view.insert(
                        c.card_uid.to_string(),
                        (c.version, c.balance_cents.get(), c.status.clone()),
                    );
                }
                assert_eq!(page.next_version, since);
                if finishing && page.cards.is_empty() {
                    return view;
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let view = pager.await.unwrap();
    let stored: BTreeMap<String, (i64, i64, String)> = raw
        .query(
            "SELECT card_uid, version, balance_cents, status FROM cards",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    assert_eq!(
        view, stored,
        "the terminal's copy of every card is the stored one"
    );
}

/// Rows both reports read, with one of each discrepancy the audit looks for. Terminal
/// `cp-b` closed three shifts (a range of its sequence numbers, times only, an empty one),
/// `Cp-c` one; `Cp-c` sorts before `cp-b` byte by byte, after it in English.
const BOOKS: &str = "
INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, created_at) VALUES
 ('00000000-0000-4000-8000-000000000001', 'bar-a', 'bar', 'Main Bar', 'h1', '2025-07-01T08:00:00.000Z'),
 ('00000000-0000-4000-8000-000000000002', 'cp-b', 'checkpoint', 'Entrance', 'h2', '2025-07-01T08:00:00.000Z'),
 ('00000000-0000-4000-8000-000000000003', 'Cp-c', 'checkpoint', 'Entrance', 'h3', '2025-07-01T08:00:00.000Z');
INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at, updated_at) VALUES
 ('04A1B2C3', 1000, 'active', NULL, 1, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z'),
 ('04A1B2C4', 500, 'active', NULL, 2, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z'),
 ('04A1B2C5', -200, 'active', NULL, 3, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z'),
 ('0A0B0C0D', 400, 'blocked', 'lost', 4, '2025-07-01T09:00:00.000Z', '2025-07-01T09:00:00.000Z');
INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq, point_of_sale,
    card_uid, staff_id, amount_cents, payment_method, mode, flags, previous_balance_cents,
    new_balance_cents, created_at, processed_at, voided_by) VALUES
 ('aaaaaaaa-0000-4000-8000-000000000001', 'cccccccc-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002',
  1, 'Entrance', '04A1B2C3', 's', 1000, 'cash', 'online', '[]', 0, 1000, '2025-07-01T11:00:00.000Z', '2025-07-01T11:00:00.000Z', NULL),
 ('aaaaaaaa-0000-4000-8000-000000000002', 'cccccccc-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000002',
  2, 'Entrance', '04A1B2C4', 's', 400, 'card', 'online', '[]', 0, 400, '2025-07-01T11:05:00.000Z', '2025-07-01T11:05:00.000Z', NULL),
 ('aaaaaaaa-0000-4000-8000-000000000003', 'cccccccc-0000-4000-8000-000000000003', '00000000-0000-4000-8000-000000000002',
  3, 'Entrance', '04A1B2C3', 's', 300, 'cash', 'online', '[]', 1000, 1300, '2025-07-01T11:10:00.000Z', '2025-07-01T11:10:00.000Z',
  'cccccccc-0000-4000-8000-0000000000f1'),
 ('aaaaaaaa-0000-4000-8000-000000000004', 'cccccccc-0000-4000-8000-000000000004', '00000000-0000-4000-8000-000000000002',
  4, 'Entrance', '04A1B2C5', 's', 250, 'cash', 'offline', '[]', 0, 250, '2025-07-01T13:00:00.000Z', '2025-07-01T13:00:00.000Z', NULL),
 ('aaaaaaaa-0000-4000-8000-000000000005', 'cccccccc-0000-4000-8000-000000000005', '00000000-0000-4000-8000-000000000003',
  1, 'Entrance', '04A1B2C3', 's', 100, 'card', 'online', '[]', 1000, 1100, '2025-07-01T11:30:00.000Z', '2025-07-01T11:30:00.000Z', NULL);
INSERT INTO voids (transaction_id, client_request_id, terminal_id, terminal_seq, target_client_request_id,
    target_kind, staff_id, reason, status, card_uid, refunded_cents, previous_balance_cents,
    new_balance_cents, flags, created_at, processed_at) VALUES
 ('aaaaaaaa-0000-4000-8000-0000000000f1', 'cccccccc-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-000000000002',
  5, 'cccccccc-0000-4000-8000-000000000003', 'recharge', 's', 'staff_error', 'voided', '04A1B2C3', 300, 1300, 1000, '[]',
  '2025-07-01T11:15:00.000Z', '2025-07-01T11:15:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000f2', 'cccccccc-0000-4000-8000-0000000000f2', '00000000-0000-4000-8000-000000000002',
  6, 'cccccccc-0000-4000-8000-0000000000ee', NULL, 's', 'in_doubt', 'tombstoned', NULL, NULL, NULL, NULL, '[]',
  '2025-07-01T11:20:00.000Z', '2025-07-01T11:20:00.000Z');
INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq, point_of_sale, card_uid,
    staff_id, total_cents, mode, flags, previous_balance_cents, new_balance_cents, created_at, processed_at,
    voided_by) VALUES
 ('aaaaaaaa-0000-4000-8000-0000000000b1', 'cccccccc-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-000000000001',
  1, 'Main Bar', '04A1B2C5', 's', 450, 'offline', '[]', 250, -200, '2025-07-01T13:10:00.000Z', '2025-07-01T13:10:00.000Z', NULL);
INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity, unit_price_cents,
    catalog_price_cents, line_total_cents) VALUES
 ('aaaaaaaa-0000-4000-8000-0000000000b1', 1, 'beer', 2, 200, NULL, 400);
INSERT INTO stripe_recharges (transaction_id, checkout_session_id, payment_intent_id, event_id, card_uid,
    amount_cents, refunded_cents, flags, previous_balance_cents, new_balance_cents, processed_at) VALUES
 ('aaaaaaaa-0000-4000-8000-0000000000d1', 'cs_B', 'pi_1', 'evt_1', '0A0B0C0D', 500, 300, '[]', 0, 500, '2025-07-01T10:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000d2', 'cs_a', 'pi_2', 'evt_2', '0A0B0C0D', 200, 0, '[]', 400, 600, '2025-07-01T10:10:00.000Z');
INSERT INTO stripe_refunds (transaction_id, event_id, checkout_session_id, card_uid, amount_cents,
    previous_balance_cents, new_balance_cents, processed_at) VALUES
 ('aaaaaaaa-0000-4000-8000-0000000000e1', 'evt_3', 'cs_B', '0A0B0C0D', 100, 500, 400, '2025-07-01T10:05:00.000Z');
INSERT INTO postings (transaction_id, account, amount_cents, created_at) VALUES
 ('aaaaaaaa-0000-4000-8000-000000000001', 'card:04A1B2C3', 1000, '2025-07-01T11:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000001', 'cash:Entrance', -1000, '2025-07-01T11:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000002', 'card:04A1B2C4', 400, '2025-07-01T11:05:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000002', 'card_payments:Entrance', -400, '2025-07-01T11:05:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000003', 'card:04A1B2C3', 300, '2025-07-01T11:10:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000003', 'cash:Entrance', -300, '2025-07-01T11:10:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000f1', 'card:04A1B2C3', -300, '2025-07-01T11:15:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000f1', 'cash:Entrance', 300, '2025-07-01T11:15:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000004', 'card:04A1B2C5', 250, '2025-07-01T13:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-000000000004', 'cash:Entrance', -250, '2025-07-01T13:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000b1', 'card:04A1B2C5', -450, '2025-07-01T13:10:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000b1', 'revenue:Main Bar', 450, '2025-07-01T13:10:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000d1', 'card:0A0B0C0D', 500, '2025-07-01T10:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000d1', 'stripe_clearing', -500, '2025-07-01T10:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000e1', 'card:0A0B0C0D', -100, '2025-07-01T10:05:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000e1', 'stripe_clearing', 100, '2025-07-01T10:05:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000c1', 'revenue:Main Bar', 50, '2025-07-01T14:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000c2', 'card:0BADCAFE', 70, '2025-07-01T14:00:00.000Z'),
 ('aaaaaaaa-0000-4000-8000-0000000000c2', 'cash:Entrance', -70, '2025-07-01T14:00:00.000Z');
INSERT INTO shift_closeouts (shift_id, client_request_id, terminal_id, staff_id, opened_at, closed_at,
    first_seq, last_seq, cash_cents, card_cents, count, counted_cash_cents, difference_cents, recorded_at) VALUES
 ('bbbbbbbb-0000-4000-8000-000000000001', 'cccccccc-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000002',
  's', '2025-07-01T10:30:00.000Z', '2025-07-01T12:00:00.000Z', 1, 3, 1000, 400, 2, 900, -100, '2025-07-01T12:01:00.000Z'),
 ('bbbbbbbb-0000-4000-8000-000000000002', 'cccccccc-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-000000000002',
  's', '2025-07-01T12:30:00.000Z', '2025-07-01T13:30:00.000Z', NULL, NULL, 250, 0, 1, 250, 0, '2025-07-01T13:31:00.000Z'),
 ('bbbbbbbb-0000-4000-8000-000000000003', 'cccccccc-0000-4000-8000-0000000000a3', '00000000-0000-4000-8000-000000000002',
  's', '2025-07-01T10:00:00.000Z', '2025-07-01T14:00:00.000Z', NULL, NULL, 0, 0, 0, 0, 0, '2025-07-01T14:01:00.000Z'),
 ('bbbbbbbb-0000-4000-8000-000000000004', 'cccccccc-0000-4000-8000-0000000000a4', '00000000-0000-4000-8000-000000000003',
  's', '2025-07-01T11:00:00.000Z', '2025-07-01T12:00:00.000Z', 1, 1, 0, 100, 1, 0, 0, '2025-07-01T12:02:00.000Z');
INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256, status_code,
    response_body, transaction_id, created_at, expires_at) VALUES
 ('cccccccc-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002', 'recharge', 'h', 201, '{}',
  'aaaaaaaa-0000-4000-8000-000000000001', '2025-07-01T11:00:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-000000000003', '00000000-0000-4000-8000-000000000002', 'recharge', 'h', 201, '{}',
  'aaaaaaaa-0000-4000-8000-000000000003', '2025-07-01T11:10:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-000000000004', '00000000-0000-4000-8000-000000000002', 'recharge', 'h', 201, '{}',
  'aaaaaaaa-0000-4000-8000-000000000004', '2025-07-01T13:00:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-000000000005', '00000000-0000-4000-8000-000000000003', 'recharge', 'h', 201, '{}',
  'aaaaaaaa-0000-4000-8000-000000000005', '2025-07-01T11:30:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-000000000002', 'void', 'h', 201, '{}',
  'aaaaaaaa-0000-4000-8000-0000000000f1', '2025-07-01T11:15:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-000000000001', 'order', 'h', 201, '{}',
  'aaaaaaaa-0000-4000-8000-0000000000b1', '2025-07-01T13:10:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000002', 'shift', 'h', 201, '{}',
  'bbbbbbbb-0000-4000-8000-000000000001', '2025-07-01T12:01:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-000000000002', 'shift', 'h', 201, '{}',
  'bbbbbbbb-0000-4000-8000-000000000002', '2025-07-01T13:31:00.000Z', NULL),
 ('cccccccc-0000-4000-8000-0000000000a4', '00000000-0000-4000-8000-000000000003', 'shift', 'h', 201, '{}',
  'bbbbbbbb-0000-4000-8000-000000000004', '2025-07-01T12:02:00.000Z', NULL);";

/// A shift report's terminal, staff, times, the terminal's and the ledger's totals.
type ShiftLine = (String, String, String, String, String, [i64; 9]);

#[tokio::test]
async fn audit_and_shift_reports_answer_as_on_sqlite() {
    let (empty, audit, all, one, none) = on_both(async |b: &Backend| {
        let s = &b.store;
        let empty = s.audit().await.unwrap();
        assert!(s.shift_reports(None, 1_000_000).await.unwrap().is_empty());
        b.seed(BOOKS).await;
        let audit = s.audit().await.unwrap();
        let mut shifts = Vec::new();
        for name in [None, Some("cp-b"), Some("nobody")] {
            shifts.push(
                s.shift_reports(name.map(Into::into), 1_000_000)
                    .await
                    .unwrap(),
            );
        }
        let none = shifts.pop().unwrap();
        let one = shifts.pop().unwrap();
        let all = shifts.pop().unwrap();
        // Asked for the newest only: the last of all, alone.
        let newest = s.shift_reports(None, 1).await.unwrap();
        assert!(all.len() > 1, "the books have several close-outs");
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].shift_id, all[all.len() - 1].shift_id);
        (empty, audit, all, one, none)
    })
    .await;
    assert_eq!(empty, Default::default(), "an empty ledger balances");
    assert_eq!(
        (
            audit.cards,
            audit.postings,
            audit.transactions,
            audit.card_balance_total_cents
        ),
        (4, 19, 10, 1700)
    );
    assert_eq!(
        audit.discrepancies,
        [
            "card 04A1B2C4: balance_cents 500 but its postings sum to 400",
            "card 0BADCAFE: balance_cents 0 but its postings sum to 70",
            "all postings sum to 50, not 0",
            "transaction aaaaaaaa-0000-4000-8000-0000000000c1: postings sum to 50, not 0",
            "account card:0BADCAFE: postings for a card that does not exist",
            "order aaaaaaaa-0000-4000-8000-0000000000b1: total_cents 450 but its lines sum to 400",
            "recharges aaaaaaaa-0000-4000-8000-000000000002: applied without its idempotency key, so a replay could apply it again",
            "voids aaaaaaaa-0000-4000-8000-0000000000f2: applied without its idempotency key, so a replay could apply it again",
            "shift_closeouts bbbbbbbb-0000-4000-8000-000000000003: applied without its idempotency key, so a replay could apply it again",
            "recharges aaaaaaaa-0000-4000-8000-000000000005: applied without postings",
            "stripe_recharges aaaaaaaa-0000-4000-8000-0000000000d2: applied without postings",
            "Stripe session cs_B: refunded_cents 300 but its refunds sum to 100",
            "card 04A1B2C5: balance_cents -200 below zero but status active",
        ]
    );
    let lines = |reports: &[cashless::ledger::store::ShiftReport]| -> Vec<ShiftLine> {
        reports
            .iter()
            .map(|r| {
                (
                    r.terminal.clone(),
                    r.shift_id.to_string(),
                    r.opened_at.clone(),
                    r.closed_at.clone(),
                    r.recorded_at.clone(),
                    [
                        r.count,
                        r.cash_cents.get(),
                        r.card_cents.get(),
                        r.counted_cash_cents.get(),
                        r.difference_cents.get(),
                        r.ledger_count,
                        r.ledger_cash_cents.get(),
                        r.ledger_card_cents.get(),
                        i64::from(r.staff_id == "s"),
                    ],
                )
            })
            .collect()
    };
    let expected: Vec<ShiftLine> = vec![
        (
            "Cp-c".into(),
            "bbbbbbbb-0000-4000-8000-000000000004".into(),
            "2025-07-01T11:00:00.000Z".into(),
            "2025-07-01T12:00:00.000Z".into(),
            "2025-07-01T12:02:00.000Z".into(),
            [1, 0, 100, 0, 0, 1, 0, 100, 1],
        ),
        (
            "cp-b".into(),
            "bbbbbbbb-0000-4000-8000-000000000001".into(),
            "2025-07-01T10:30:00.000Z".into(),
            "2025-07-01T12:00:00.000Z".into(),
            "2025-07-01T12:01:00.000Z".into(),
            // The voided top-up (seq 3) is left out.
            [2, 1000, 400, 900, -100, 2, 1000, 400, 1],
        ),
        (
            "cp-b".into(),
            "bbbbbbbb-0000-4000-8000-000000000002".into(),
            "2025-07-01T12:30:00.000Z".into(),
            "2025-07-01T13:30:00.000Z".into(),
            "2025-07-01T13:31:00.000Z".into(),
            // No range: the top-up made between its times.
            [1, 250, 0, 250, 0, 1, 250, 0, 1],
        ),
        (
            "cp-b".into(),
            "bbbbbbbb-0000-4000-8000-000000000003".into(),
            "2025-07-01T10:00:00.000Z".into(),
            "2025-07-01T14:00:00.000Z".into(),
            "2025-07-01T14:01:00.000Z".into(),
            // Empty: nothing, whatever its times span.
            [0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
    ];
    assert_eq!(lines(&all), expected);
    assert_eq!(lines(&one), expected[1..]);
    assert!(none.is_empty());
}

fn scan(card: &str, reader: &str, scanned_at: &str, seq: Option<i64>) -> Scan {
    Scan {
        card_uid: uid(card),
        result: "approved".into(),
        reader: reader.into(),
        scanned_at: DateTime::parse_from_rfc3339(scanned_at).unwrap().to_utc(),
        terminal_seq: seq.map(|s| TerminalSeq::new(s).unwrap()),
    }
}

#[tokio::test]
async fn scans_are_stored_once_as_on_sqlite() {
    let (receipts, rows) = on_both(async |b: &Backend| {
        let s = &b.store;
        let mut terminals: Vec<Terminal> = Vec::new();
        for name in ["bar-1", "bar-2"] {
            s.add_terminal(NewTerminal {
                name: name.into(),
                kind: TerminalKind::Bar,
                point_of_sale: "Main Bar".into(),
                token_sha256: token_sha256(name),
            })
            .await
            .unwrap();
            terminals.push(s.terminal_by_name(name.into()).await.unwrap().unwrap());
        }
        let first = vec![
            scan("04000001", "r1", "2025-07-01T12:00:00.123456Z", Some(7)),
            scan("04000002", "r1", "2025-07-01T12:00:01.000Z", None),
            // The first again, to the millisecond: the same scan.
            scan("04000001", "r1", "2025-07-01T12:00:00.123999Z", Some(7)),
            scan("04000001", "r2", "2025-07-01T12:00:00.123Z", None),
        ];
        let mut receipts = vec![
            s.record_scans(terminals[0].clone(), first.clone())
                .await
                .unwrap(),
            // Sent again: all duplicates; by another terminal: all new.
            s.record_scans(terminals[0].clone(), first.clone())
                .await
                .unwrap(),
            s.record_scans(terminals[1].clone(), first).await.unwrap(),
        ];
        receipts.push(s.record_scans(terminals[1].clone(), vec![]).await.unwrap());
        (receipts, b.raw.scans().await)
    })
    .await;
    let counts: Vec<(usize, usize)> = receipts
        .iter()
        .map(|r| (r.accepted, r.duplicates))
        .collect();
    assert_eq!(counts, [(3, 1), (0, 4), (3, 1), (0, 0)]);
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[0],
        (
            "04000001".into(),
            "approved".into(),
            "r1".into(),
            "2025-07-01T12:00:00.123Z".into(),
            Some(7),
            "bar-1".into()
        )
    );
}

/// An answer is given only once its transaction is durable. Here a deferred constraint
/// trigger refuses the top-up at commit time, after the procedure has already returned its
/// approval row: the store must answer with the commit's error, not the approval, and
/// nothing is in the books. (The procedure runs in the implicit transaction of the extended
/// protocol, which PostgreSQL commits at Sync, after it sent the row: the driver hands the
/// rows over only at ReadyForQuery, after the commit, and this test holds it to that.)
#[tokio::test]
async fn an_operation_whose_commit_fails_is_not_approved() {
    use cashless::ledger::store::OperationStore;
    use cashless::protocol::api::{Operation, RechargeRequest};

    let db = TestDb::create().await;
    let (store, raw) = open_postgres(&db).await;
    store
        .add_terminal(NewTerminal {
            name: "cp-1".into(),
            kind: TerminalKind::Checkpoint,
            point_of_sale: "Main Bar".into(),
            token_sha256: token_sha256("cp-1"),
        })
        .await
        .unwrap();
    store
        .add_staff(NewStaff {
            staff_id: StaffId::parse("s-cash").unwrap(),
            name: "Cashier".into(),
            role: StaffRole::Cashier,
            pin_hash: "unused".into(),
        })
        .await
        .unwrap();
    raw.batch_execute(
        "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
         CREATE CONSTRAINT TRIGGER recharges_refused_at_commit AFTER INSERT ON recharges
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();",
    )
    .await
    .unwrap();
    let terminal = store.authenticate("cp-1").await.unwrap().unwrap();
    let top_up: RechargeRequest = serde_json::from_value(serde_json::json!({
        "client_request_id": Uuid::new_v4(),
        "terminal_seq": 1,
        "card_uid": "04A1B2C3D4E5F6",
        "amount_cents": 1000,
        "payment_method": "cash",
        "staff_id": "s-cash",
        "created_at": "2026-07-01T20:00:00Z",
        "mode": "online",
    }))
    .unwrap();
    let result = store
        .apply(
            terminal,
            "req-commit".into(),
            vec![Operation::Recharge(top_up)],
        )
        .await;
    match &result {
        Err(StoreError::Internal(message)) => {
            assert!(message.contains("refused at commit"), "{message}")
        }
        other => panic!("a top-up whose commit failed was answered {other:?}"),
    }
    for table in ["recharges", "postings", "idempotency_keys", "cards"] {
        let rows: i64 = raw
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table} after a failed commit");
    }
}
