//! The test harness's own promise (`tests/common/backend.rs`): what a ledger test reads
//! from the database looks the same on SQLite and on PostgreSQL. The conformance suite
//! compares the two backends through it, so a reading that differs between them (a
//! boolean, a time, a uuid, a JSON value, a sum) would show up as a difference of the
//! ledger's, and one that hides a change would let a difference pass.
//!
//! The same rows are written with the same SQL into an empty database of each backend
//! (`cashless ledger migrate`, no ledger running), then read back.
#![allow(clippy::unwrap_used)]

mod common;

use common::Cell;
use common::backend::Database;

/// Rows of every kind of column the schema has, in SQL both backends take: booleans as
/// `true`/`false`, times in the ledger's RFC 3339 form, uuids and JSON as text.
const ROWS: &[&str] = &[
    "INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, active,
         created_at, last_seen_at, highest_contiguous_seq, highest_seen_seq)
     VALUES ('0190a1b2-c3d4-7e5f-8a6b-000000000001', 'bar-1', 'bar', 'Main Bar', 'ab12', true,
         '2026-07-01T18:00:00.000Z', '2026-07-01T21:14:03.412Z', 3, 5)",
    "INSERT INTO staff (staff_id, name, role, pin_hash, active, created_at, updated_at)
     VALUES ('s-bar', 'Bar Staff', 'bar', '$argon2id$x', false, '2026-07-01T18:00:00.000Z',
         '2026-07-01T18:00:00.000Z')",
    "INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at,
         updated_at)
     VALUES ('04A1B2C3D4E5F6', -250, 'blocked', 'debt', 7, '2026-07-01T18:00:00.000Z',
         '2026-07-01T19:30:00.120Z')",
    "INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq,
         point_of_sale, card_uid, staff_id, total_cents, mode, flags, previous_balance_cents,
         new_balance_cents, created_at, processed_at, voided_by)
     VALUES ('0190a1b2-c3d4-7e5f-8a6b-000000000002', '6f1c2d3e-4b5a-4c6d-8e7f-000000000003',
         '0190a1b2-c3d4-7e5f-8a6b-000000000001', 3, 'Main Bar', '04A1B2C3D4E5F6', 's-bar', 900,
         'offline', '[\"NEGATIVE_BALANCE\", \"CARD_CREATED\"]', 650, -250,
         '2026-07-01T19:29:59.000Z', '2026-07-01T19:30:00.120Z', NULL)",
    "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
     VALUES ('0190a1b2-c3d4-7e5f-8a6b-000000000002', 'card:04A1B2C3D4E5F6', -900,
         '2026-07-01T19:30:00.120Z')",
    "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
     VALUES ('0190a1b2-c3d4-7e5f-8a6b-000000000002', 'revenue:Main Bar', 900,
         '2026-07-01T19:30:00.120Z')",
    "INSERT INTO app_transaction_log (occurred_at, request_id, actor, operation,
         client_request_id, amount_cents, outcome, details)
     VALUES ('2026-07-01T19:30:00.120Z', 'req-1', 'terminal:bar-1', 'order',
         '6f1c2d3e-4b5a-4c6d-8e7f-000000000003', 900, 'approved',
         '{\"reason\": \"offline\", \"flags\": [\"NEGATIVE_BALANCE\"], \"at\": {\"b\": 1, \"a\": 2}}')",
];

/// An empty database of each backend with [`ROWS`] written into it.
fn both(dir: &std::path::Path) -> [Database; 2] {
    let databases = [
        Database::migrated(common::Backend::Sqlite, dir),
        Database::migrated(common::Backend::Postgres, dir),
    ];
    for db in &databases {
        for sql in ROWS {
            assert_eq!(db.execute(sql), 1, "{:?}: {sql}", db.backend());
        }
    }
    databases
}

#[test]
fn the_same_rows_read_alike_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let [sqlite, postgres] = both(dir.path());
    let fingerprint = sqlite.fingerprint(None, &[]);
    assert_eq!(fingerprint, postgres.fingerprint(None, &[]));
    // The fingerprint holds the rows, in the ledger's spelling of each kind of value.
    for expected in [
        "== bar_orders (1 rows)",
        "== postings (2 rows)",
        "active=1",
        "active=0",
        "last_seen_at=\"2026-07-01T21:14:03.412Z\"",
        "terminal_id=\"0190a1b2-c3d4-7e5f-8a6b-000000000001\"",
        "flags=\"[\\\"NEGATIVE_BALANCE\\\",\\\"CARD_CREATED\\\"]\"",
        "details=\"{\\\"at\\\":{\\\"a\\\":2,\\\"b\\\":1},\\\"flags\\\":[\\\"NEGATIVE_BALANCE\\\"],\\\"reason\\\":\\\"offline\\\"}\"",
        "block_reason=\"debt\"",
        "voided_by=NULL",
    ] {
        assert!(
            fingerprint.contains(expected),
            "no {expected} in:\n{fingerprint}"
        );
    }
    // Queries, including what PostgreSQL computes in other types (a sum is numeric there).
    for (sql, expected) in [
        (
            "SELECT COALESCE(SUM(amount_cents), 0) FROM postings",
            vec![Cell::Int(0)],
        ),
        (
            "SELECT SUM(amount_cents) FROM postings WHERE amount_cents > 0",
            vec![Cell::Int(900)],
        ),
        ("SELECT COUNT(*) FROM postings", vec![Cell::Int(2)]),
        (
            "SELECT active, created_at, highest_seen_seq FROM terminals",
            vec![
                Cell::Int(1),
                Cell::Text("2026-07-01T18:00:00.000Z".to_owned()),
                Cell::Int(5),
            ],
        ),
        (
            "SELECT o.client_request_id, t.name FROM bar_orders o JOIN terminals t \
             USING (terminal_id) WHERE o.card_uid = '04A1B2C3D4E5F6'",
            vec![
                Cell::Text("6f1c2d3e-4b5a-4c6d-8e7f-000000000003".to_owned()),
                Cell::Text("bar-1".to_owned()),
            ],
        ),
    ] {
        for db in [&sqlite, &postgres] {
            let rows = db.query(sql);
            assert_eq!(
                rows.rows,
                vec![expected.clone()],
                "{:?}: {sql}",
                db.backend()
            );
        }
    }
}

#[test]
fn the_fingerprint_shows_every_change_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    for db in both(dir.path()) {
        let before = db.fingerprint(None, &[]);
        for (sql, table) in [
            (
                "UPDATE cards SET updated_at = '2026-07-01T19:30:00.121Z'",
                "cards",
            ),
            ("UPDATE staff SET active = true", "staff"),
            (
                "UPDATE bar_orders SET flags = '[\"CARD_CREATED\", \"NEGATIVE_BALANCE\"]'",
                "bar_orders",
            ),
            (
                "UPDATE terminals SET highest_seen_seq = highest_seen_seq + 1",
                "terminals",
            ),
        ] {
            let tables = [table];
            let of_table = db.fingerprint(Some(&tables), &[]);
            assert_eq!(db.execute(sql), 1, "{:?}: {sql}", db.backend());
            assert_ne!(
                db.fingerprint(Some(&tables), &[]),
                of_table,
                "{:?}: {sql} went unseen",
                db.backend()
            );
        }
        assert_ne!(db.fingerprint(None, &[]), before, "{:?}", db.backend());
        // A column left out is not seen.
        let skip = [("terminals", "last_seen_at")];
        let without = db.fingerprint(None, &skip);
        db.execute("UPDATE terminals SET last_seen_at = '2026-07-02T00:00:00.000Z'");
        assert_eq!(db.fingerprint(None, &skip), without, "{:?}", db.backend());
    }
}
