//! `cashless ledger migrate --from sqlite:PATH --to postgres://...` (the real binary): a
//! festival built on SQLite by the real ledger (orders, top-ups by cash and card, a void and a
//! tombstone, a decline, an offline order into debt, a sequence gap, a lost card, scans, a
//! shift close-out, a Stripe credit and refund: a row in every table), moved into a fresh
//! PostgreSQL database of its own (`CASHLESS_TEST_PG`, see `common/pg.rs`), then compared
//! table by table and row by row, each PostgreSQL value turned back into the text SQLite
//! holds (times to milliseconds with `Z`, uuids to lowercase text, booleans to 0 and 1; JSON
//! compared as JSON, the stored answers byte for byte). Then: the sequences hand out the
//! next ids, a second move is refused and changes nothing, and a refused or failed move
//! leaves both sides as they were.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use pg::TestDb;
use serde_json::{Value, json};
use tokio_postgres::types::Type;

/// How long the ledger may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const STRIPE_SECRET: &str = "whsec_test_move_0123456789abcdef";

/// Runs `cashless ledger migrate --from FROM --to TO`.
async fn move_festival(from: &str, to: &str) -> Output {
    pg::ledger_command(&["migrate", "--from", from, "--to", to]).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_refused(out: &Output, expected: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(expected),
        "stderr lacks {expected:?}:\n{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Both databases' rows, in one spelling
// ---------------------------------------------------------------------------------------

/// One value, as SQLite holds it (JSON as JSON: jsonb reorders keys and respaces).
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Json(Value),
}

impl Cell {
    /// Its spelling in a row's sort key (JSON columns are never part of a key).
    fn key(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Int(i) => i.to_string(),
            Cell::Text(t) => format!("{t:?}"),
            Cell::Json(_) => String::new(),
        }
    }
}

/// A table's column names (PostgreSQL's order) and rows, sorted.
type Table = (Vec<String>, Vec<Vec<Cell>>);

fn sorted(mut rows: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    rows.sort_by_key(|row| row.iter().map(Cell::key).collect::<Vec<_>>());
    rows
}

/// One PostgreSQL value turned into SQLite's spelling.
fn pg_cell(row: &tokio_postgres::Row, i: usize) -> Cell {
    let ty = row.columns()[i].type_().clone();
    let or_null = |c: Option<Cell>| c.unwrap_or(Cell::Null);
    or_null(match ty {
        Type::INT8 => row.get::<_, Option<i64>>(i).map(Cell::Int),
        Type::INT4 => row.get::<_, Option<i32>>(i).map(|v| Cell::Int(v.into())),
        Type::BOOL => row.get::<_, Option<bool>>(i).map(|b| Cell::Int(b.into())),
        Type::TEXT => row.get::<_, Option<String>>(i).map(Cell::Text),
        Type::UUID => row
            .get::<_, Option<uuid::Uuid>>(i)
            .map(|u| Cell::Text(u.to_string())),
        Type::TIMESTAMPTZ => row
            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
            .map(|t| {
                use chrono::Timelike;
                assert_eq!(
                    t.nanosecond() % 1_000_000,
                    0,
                    "{t}: finer than the ledger's ms"
                );
                Cell::Text(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }),
        Type::JSONB => row.get::<_, Option<Value>>(i).map(Cell::Json),
        other => panic!("column {} has type {other}", row.columns()[i].name()),
    })
}

/// Every ledger table of the PostgreSQL database (its `schema_migrations` aside), by name.
async fn pg_tables(client: &tokio_postgres::Client) -> BTreeMap<String, Table> {
    let names: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
                AND table_name <> 'schema_migrations'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let columns: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns
                  WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[&name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = client
            .query(&format!("SELECT * FROM {name}{}", held(&name)), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (0..row.len()).map(|i| pg_cell(row, i)).collect())
            .collect();
        out.insert(name, (columns, sorted(rows)));
    }
    out
}

/// The rows of `table` a move carries: all, but the overview's and the report's sums that
/// hold nothing (every operation of their quarter voided after it was booked; the target,
/// given the operations voided already, never makes them).
fn held(table: &str) -> &'static str {
    match table {
        "quarter_totals" => " WHERE operations <> 0 OR amount_cents <> 0",
        "till_quarter_sales" | "product_quarter_sales" => " WHERE lines <> 0",
        _ => "",
    }
}

/// The JSON columns of the PostgreSQL schema, `(table, column)`.
async fn jsonb_columns(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = 'public' AND data_type = 'jsonb'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every table of the SQLite ledger, its columns in the order `order` gives (PostgreSQL's),
/// the JSON columns parsed.
fn sqlite_tables(
    path: &Path,
    order: &BTreeMap<String, Table>,
    json: &[(String, String)],
) -> BTreeMap<String, Table> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for name in names {
        let mut own: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // PostgreSQL's order when it has the table, else SQLite's (the comparison fails then).
        let columns = match order.get(&name) {
            Some((theirs, _)) => {
                own.sort();
                let mut sorted_theirs = theirs.clone();
                sorted_theirs.sort();
                assert_eq!(own, sorted_theirs, "the columns of {name} differ");
                theirs.clone()
            }
            None => own,
        };
        let is_json: Vec<bool> = columns
            .iter()
            .map(|c| json.iter().any(|(t, jc)| *t == name && jc == c))
            .collect();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM {name}{}",
                columns.join(", "),
                held(&name)
            ))
            .unwrap();
        let rows = stmt
            .query_map([], |row| {
                let mut cells = Vec::with_capacity(columns.len());
                for (i, json) in is_json.iter().enumerate() {
                    use rusqlite::types::ValueRef;
                    cells.push(match (row.get_ref(i)?, json) {
                        (ValueRef::Null, _) => Cell::Null,
                        (ValueRef::Integer(v), false) => Cell::Int(v),
                        (ValueRef::Text(t), false) => Cell::Text(text(t)),
                        (ValueRef::Text(t), true) => Cell::Json(serde_json::from_slice(t).unwrap()),
                        (other, _) => panic!("{name}.{}: unexpected {other:?}", columns[i]),
                    });
                }
                Ok(cells)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out.insert(name, (columns, sorted(rows)));
    }
    out
}

/// Everything a move could change in the PostgreSQL database: every table's rows, the
/// recorded migrations, every sequence's position.
async fn pg_fingerprint(client: &tokio_postgres::Client) -> String {
    let tables = pg_tables(client).await;
    let migrations: Vec<(i64, String)> = client
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default();
    let sequences: Vec<(String, Option<i64>)> = client
        .query(
            "SELECT sequencename::text, last_value FROM pg_sequences ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    format!("{tables:?}\n{migrations:?}\n{sequences:?}")
}

// ---------------------------------------------------------------------------------------
// A festival on SQLite
// ---------------------------------------------------------------------------------------

async fn stripe(l: &Ledger, event: Value) {
    deliver_stripe_event(l, STRIPE_SECRET, &event).await;
}

/// A ledger on SQLite with a row in every table, stopped; the audit passes. Also the
/// `client_request_id` of a declined order and the exact bytes of the answer it got.
async fn festival() -> (Ledger, String, Vec<u8>) {
    let config = format!("[stripe]\nwebhook_secrets = [\"{STRIPE_SECRET}\"]\n");
    let mut l = Ledger::start_with_config(&config).await;
    let (funded, declined, in_debt, online) = (uid(1), uid(2), uid(3), uid(4));

    // Top-ups by cash and by card.
    l.fund(&funded, 5_000).await;
    let seq = l.seq(&l.checkpoint_token);
    let card_topup = recharge_body(&funded, seq, 2_000, "card", "online");
    l.post("/v1/recharges", &l.checkpoint_token, &card_topup)
        .await
        .assert_status(201);

    // An order of two lines, and one voided by a supervisor.
    let items = [("beer-05", 2, BEER_CENTS), ("water", 1, WATER_CENTS)];
    let seq = l.seq(&l.bar_token);
    let order = order_body(&funded, seq, &items, "online");
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_status(201);
    // The voided one was made offline three hours before: alone in its quarter hour, whose
    // sums the void brings to nothing on SQLite (a row of zeros the move does not make).
    let seq = l.seq(&l.bar_token);
    let mut voided = order_body(&funded, seq, &[("cocktail", 1, COCKTAIL_CENTS)], "offline");
    voided["created_at"] = serde_json::json!(
        (chrono::Utc::now() - chrono::Duration::hours(3))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    l.post("/v1/orders", &l.bar_token, &voided)
        .await
        .assert_status(201);
    let seq = l.seq(&l.bar_token);
    let void = void_body(&crid(&voided), seq, "staff_error", SUPER_STAFF);
    l.post("/v1/voids", &l.bar_token, &void)
        .await
        .assert_status(201);
    assert_eq!(
        l.query_i64(
            "SELECT COUNT(*) FROM quarter_totals WHERE operations = 0 AND amount_cents = 0"
        ),
        1,
        "the voided order's quarter sums to nothing"
    );
    for table in ["till_quarter_sales", "product_quarter_sales"] {
        assert_eq!(
            l.query_i64(&format!("SELECT COUNT(*) FROM {table} WHERE lines = 0")),
            1,
            "the voided order's lines sum to nothing in {table}"
        );
    }
    // A void of an operation the ledger never saw: a tombstone.
    let seq = l.seq(&l.bar_token);
    let tombstone = void_body(&new_id(), seq, "in_doubt", BAR_STAFF);
    l.post("/v1/voids", &l.bar_token, &tombstone)
        .await
        .assert_status(201);

    // A beer with its cup's deposit, and two cups handed back.
    assert_success(
        "product add",
        &l.admin(&[
            "product",
            "add",
            "--id",
            "cup",
            "--name",
            "Cup",
            "--price-cents",
            "200",
            "--point-of-sale",
            BAR_POS,
            "--returnable",
        ]),
    );
    let seq = l.seq(&l.bar_token);
    let with_cup = order_body(
        &funded,
        seq,
        &[("beer-05", 1, BEER_CENTS), ("cup", 1, 200)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &with_cup)
        .await
        .assert_status(201);
    let seq = l.seq(&l.bar_token);
    let cups = return_body(&funded, seq, &[("cup", 2, 200)], "online");
    l.post("/v1/returns", &l.bar_token, &cups)
        .await
        .assert_status(201);
    // Vouchers given at the checkpoint.
    let seq = l.seq(&l.checkpoint_token);
    let grant = voucher_grant_body(&funded, seq, 2, "online");
    l.post("/v1/voucher-grants", &l.checkpoint_token, &grant)
        .await
        .assert_status(201);
    // The card was issued with an AES key (the cards' key_version column).
    l.put(
        &format!("/v1/cards/{funded}/key"),
        &l.checkpoint_token,
        &json!({"key_version": 2}),
    )
    .await
    .assert_status(200);
    // A daily allowance (the cards' allowance and day columns).
    assert_success(
        "voucher daily",
        &l.admin(&["voucher", "daily", "--uid", &funded, "--units", "2"]),
    );
    // A decline: its stored answer expires.
    let seq = l.seq(&l.bar2_token);
    let broke = order_body(&declined, seq, &[("beer-05", 1, BEER_CENTS)], "online");
    let decline = l.post("/v1/orders", &l.bar2_token, &broke).await;
    assert!(decline.status >= 400, "{}", text(&decline.raw));

    // Housekeeping so far: the audit-log rows until now go to an archive file, and what
    // they proved of voucher units stays in archived_voucher_moves (moved like the rest).
    let archive = l.dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    assert_success(
        "housekeeping",
        &l.admin(&[
            "housekeeping",
            "--archive-dir",
            archive.to_str().unwrap(),
            "--archive-after-days",
            "0",
        ]),
    );

    // An offline order on a card never topped up: debt, and a debt block.
    let seq = l.seq(&l.bar2_token);
    let offline = order_body(&in_debt, seq, &[("cocktail", 2, COCKTAIL_CENTS)], "offline");
    l.post("/v1/orders", &l.bar2_token, &offline)
        .await
        .assert_status(201);
    assert_eq!(l.balance(&in_debt).await, -2 * COCKTAIL_CENTS);

    // An order far ahead in bar-2's sequence: a gap the ledger remembers.
    let ahead = order_body(&funded, 40, &[("water", 1, WATER_CENTS)], "offline");
    l.post("/v1/orders", &l.bar2_token, &ahead)
        .await
        .assert_status(201);

    // Scans, a shift close-out.
    let scans = json!({"scans": [
        {"card_uid": funded, "result": "ok", "reader": "ACS ACR122U 00 00",
         "scanned_at": "2026-07-01T21:14:02.125Z", "terminal_seq": 2},
        {"card_uid": in_debt, "result": "read_error", "reader": "ACS ACR122U 00 00",
         "scanned_at": "2026-07-01T21:14:03Z"},
    ]});
    l.post("/v1/scans", &l.bar_token, &scans)
        .await
        .assert_status(200);
    // A terminal's last status report (its clock a little ahead, a null age).
    let status = json!({
        "reported_at": "2026-07-01T21:15:00.500Z", "waiting": 2, "in_doubt": 1,
        "rejected": 0, "oldest_unsent_age_s": null, "card_feed_cursor": "17",
        "reader_state": "disconnected", "software_version": "0.1.0 (test)"
    });
    l.post("/v1/terminals/me/status", &l.bar_token, &status)
        .await
        .assert_status(200);
    // A headquarters operator, logged in.
    l.add_operator("ana", "desk", "a long password");
    l.hq_session("ana", "a long password").await;
    let shift = json!({
        "client_request_id": new_id(),
        "staff_id": CASH_STAFF,
        "opened_at": "2026-07-01T12:00:00.250Z",
        "closed_at": now_rfc3339(),
        "cash_cents": 5_000,
        "card_cents": 2_000,
        "count": 2,
        "counted_cash_cents": 4_990,
        "first_seq": 1,
        "last_seq": 2,
    });
    l.post("/v1/shifts", &l.checkpoint_token, &shift)
        .await
        .assert_status(201);

    // A Stripe top-up, partly refunded.
    stripe(
        &l,
        json!({"id": "evt_move_1", "type": "checkout.session.completed", "data": {"object": {
            "id": "cs_move_1", "payment_status": "paid", "currency": "eur",
            "amount_total": 2_500, "payment_intent": "pi_move_1",
            "metadata": {"card_uid": online}, "created": 1_780_000_000}}}),
    )
    .await;
    stripe(
        &l,
        json!({"id": "evt_move_2", "type": "charge.refunded", "data": {"object": {
            "id": "ch_move_1", "amount_refunded": 1_000, "currency": "eur",
            "payment_intent": "pi_move_1"}}}),
    )
    .await;

    // A lost card, and a broken one replaced.
    assert_success("card block", &l.admin(&["card", "block", "--uid", &online]));
    assert_success(
        "card replace",
        &l.admin(&["card", "replace", "--old", &funded, "--new", &uid(9)]),
    );

    l.assert_audit_ok();
    let stopped = l.terminate(STOP_DEADLINE).await;
    assert!(stopped.success(), "the ledger stopped with {stopped}");
    (l, crid(&broke), decline.raw)
}

/// The largest value of `column` in the SQLite `table`.
fn sqlite_max(l: &Ledger, table: &str, column: &str) -> i64 {
    l.open_db()
        .query_row(&format!("SELECT max({column}) FROM {table}"), [], |r| {
            r.get(0)
        })
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_festival_moves_whole_to_postgres_and_a_second_move_is_refused() {
    let (l, declined, answer) = festival().await;
    let source_before = l.db_fingerprint();
    // The ledger's own database user, no superuser: it owns its database and nothing more.
    let db = TestDb::create_with_owner().await;
    let from = format!("sqlite:{}", l.db_path().display());

    let out = move_festival(&from, &db.owner_url()).await;
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the move failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    for line in [
        "the totals agree",
        "moved: committed",
        "the books balance (sqlite)",
    ] {
        assert!(stdout.contains(line), "stdout lacks {line:?}:\n{stdout}");
    }

    // Every table, every row, every value.
    let client = db.admin().await;
    let pg = pg_tables(&client).await;
    let sqlite = sqlite_tables(l.db_path(), &pg, &jsonb_columns(&client).await);
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        pg.keys().collect::<Vec<_>>(),
        "the two databases' tables"
    );
    for (table, (columns, rows)) in &sqlite {
        assert!(!rows.is_empty(), "the festival left {table} empty");
        let (_, moved) = &pg[table];
        assert_eq!(moved.len(), rows.len(), "rows of {table}");
        for (a, b) in rows.iter().zip(moved) {
            assert_eq!(a, b, "a row of {table} ({columns:?})");
        }
        // What the move printed for the table: its rows on both sides.
        let n = rows.len();
        let printed = stdout
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["rows", table.as_str()]))
            .unwrap_or_else(|| panic!("no line for {table}:\n{stdout}"));
        assert_eq!(
            printed.split_whitespace().skip(2).collect::<Vec<_>>(),
            [n.to_string(), n.to_string()],
            "{printed}"
        );
    }
    // The stored answers are the first answers' bytes (a replay sends them).
    let stored: String = client
        .query_one(
            "SELECT response_body FROM idempotency_keys WHERE client_request_id = $1::text::uuid",
            &[&declined],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_bytes(), answer.as_slice());
    assert_eq!(
        l.db_fingerprint(),
        source_before,
        "the move wrote its source"
    );

    // A second move into the same database: refused, nothing changed on either side.
    let target_before = pg_fingerprint(&client).await;
    let again = move_festival(&from, &db.owner_url()).await;
    assert_refused(&again, "is not empty");
    assert_refused(&again, "changed nothing");
    assert_eq!(pg_fingerprint(&client).await, target_before);
    assert_eq!(l.db_fingerprint(), source_before);

    // The sequences hand out the next ids, as the ledger's own user inserts.
    let owner = pg::connect(&db.owner_url()).await.unwrap();
    for (insert, table, column) in [
        (
            "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
             VALUES (gen_random_uuid(), 'test:sequence', 0, now()) RETURNING posting_id",
            "postings",
            "posting_id",
        ),
        (
            "INSERT INTO app_transaction_log (occurred_at, actor, operation, outcome)
             VALUES (now(), 'test', 'sequence', 'approved') RETURNING log_id",
            "app_transaction_log",
            "log_id",
        ),
        (
            "INSERT INTO nfc_scan_log (terminal_id, card_uid, result, reader, scanned_at, received_at)
             SELECT terminal_id, '04AABBCCDDEEFF', 'ok', 'test', now(), now()
               FROM terminals LIMIT 1 RETURNING scan_id",
            "nfc_scan_log",
            "scan_id",
        ),
        (
            "SELECT nextval('card_version_seq')",
            "cards",
            "version",
        ),
    ] {
        let next: i64 = owner.query_one(insert, &[]).await.unwrap().get(0);
        assert_eq!(next, sqlite_max(&l, table, column) + 1, "{table}.{column}");
    }
    // Postings stay append-only after the move.
    let err = owner
        .execute("UPDATE postings SET amount_cents = 0", &[])
        .await
        .unwrap_err();
    let refusal = err.as_db_error().map(|e| e.message().to_owned());
    assert!(
        refusal
            .as_deref()
            .is_some_and(|m| m.contains("append-only")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refused_or_failed_move_changes_nothing() {
    let (l, _, _) = festival().await;
    let from = format!("sqlite:{}", l.db_path().display());
    let db = TestDb::create().await;
    let client = db.admin().await;
    let empty = pg_fingerprint(&client).await;

    // Sources that are no ledger at this program's schema; the target is not even migrated.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    std::fs::copy(l.db_path(), &old).unwrap();
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    drop(conn);
    let out = move_festival(&format!("sqlite:{}", old.display()), &db.url("")).await;
    let expected = format!(
        "schema version 2, older than this program's {}",
        cashless::ledger::store::sqlite::SCHEMA_VERSION
    );
    assert_refused(&out, &expected);
    assert_refused(&out, "cashless ledger migrate --database sqlite:");
    let missing = dir.path().join("missing.db");
    let out = move_festival(&format!("sqlite:{}", missing.display()), &db.url("")).await;
    assert_refused(&out, "no such file");
    assert!(!missing.exists(), "the move created its source");
    assert_eq!(pg_fingerprint(&client).await, empty);

    // Wrong kinds of database, and flags that go together.
    let out = move_festival(&db.url(""), &db.url("")).await;
    assert_refused(&out, "--from must name the SQLite ledger");
    let out = move_festival(&from, &from).await;
    assert_refused(&out, "--to must name a PostgreSQL database");
    for args in [
        vec!["--from", from.as_str()],
        vec!["--to", "postgres://u@h/d"],
        vec![
            "--from",
            from.as_str(),
            "--to",
            "postgres://u@h/d",
            "--database",
            "x.db",
        ],
    ] {
        let out = std::process::Command::new(BIN)
            .args(["ledger", "migrate"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // A value the target cannot take faithfully, in a table copied after others: the whole
    // move is rolled back, the target keeps only its schema.
    let bad = dir.path().join("bad.db");
    std::fs::copy(l.db_path(), &bad).unwrap();
    let conn = rusqlite::Connection::open(&bad).unwrap();
    conn.execute(
        "UPDATE postings SET created_at = 'yesterday' WHERE posting_id = (SELECT max(posting_id) FROM postings)",
        [],
    )
    .unwrap();
    drop(conn);
    let out = move_festival(&format!("sqlite:{}", bad.display()), &db.url("")).await;
    assert_refused(&out, "postings.created_at, row ");
    assert_refused(&out, "\"yesterday\" is not an RFC 3339 time");
    let after = pg_tables(&client).await;
    for (table, (_, rows)) in &after {
        assert!(
            rows.is_empty(),
            "{table} kept {} rows of a failed move",
            rows.len()
        );
    }

    // One row anywhere makes the target not empty.
    client
        .execute(
            "INSERT INTO staff (staff_id, name, role, pin_hash, created_at, updated_at)
             VALUES ('s-x', 'X', 'bar', 'h', '2026-07-01T12:00:00Z', '2026-07-01T12:00:00Z')",
            &[],
        )
        .await
        .unwrap();
    let before = pg_fingerprint(&client).await;
    let out = move_festival(&from, &db.url("")).await;
    assert_refused(&out, "is not empty (rows in staff)");
    assert_eq!(pg_fingerprint(&client).await, before);
}
