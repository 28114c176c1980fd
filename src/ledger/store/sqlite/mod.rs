//! The SQLite backend: one writer thread with group commit, and a small pool of readers.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit waits for the
//! disk. So a single thread owns the write connection and commits several operations per
//! transaction ([`GROUP_JOBS_MAX`] at most), each in its own SAVEPOINT, and answers only
//! after the commit (`writer.rs`). Readers use their own connections (WAL lets them read
//! while the writer writes).
//!
//! - this file: opening (pragmas, migrations, threads), options, error classification, and
//!   what several jobs share (cards, postings, terminals);
//! - `writer.rs`: the writer thread, group commit, the checkpointer, `write` and `read`;
//! - `ops.rs`: [`OperationStore`](super::OperationStore): the flow's reads and its plans;
//! - `feeds.rs`, `admin.rs`, `audit.rs`, `stripe.rs`: the other traits, one job each.

mod admin;
mod audit;
mod feeds;
mod operators;
mod ops;
mod stripe;
mod writer;

use super::StoreError;
use crate::domain::{AgeFlag, CardUid, Cents, TaxRates};
use crate::ledger::caller::Terminal;
use crate::ledger::rules::{CardState, Limits};
use crate::protocol::api::{BlockReason, CardStatus, TerminalKind};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::mpsc;
use uuid::Uuid;
use writer::{Job, checkpoint_loop, exec_cached, writer_loop};

/// Jobs committed together in one transaction, at most.
pub const GROUP_JOBS_MAX: usize = 128;
/// Jobs waiting for the writer, at most; callers wait for room beyond that.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Read connections.
pub const READERS: usize = 4;

/// Headquarters' reads waiting for the background reader, at most; more wait for room.
const BACKGROUND_QUEUE_MAX: usize = 16;

/// A read for the background reader: it runs with its connection.
type BackgroundJob = Box<dyn FnOnce(&Connection) + Send>;
/// How long a connection waits for a lock held by another process (an admin command).
pub const BUSY_TIMEOUT_MS: u64 = 5000;
/// How often the checkpointer copies the write-ahead log into the database file.
pub const CHECKPOINT_INTERVAL_MS: u64 = 1000;
/// WAL size (pages) at which the writer checkpoints by itself, should the checkpointer lag.
pub const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;

/// The schema migrations, in order. `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../../migrations/sqlite/0001_ledger.sql"),
    include_str!("../../../../migrations/sqlite/0002_shifts.sql"),
    include_str!("../../../../migrations/sqlite/0003_stripe.sql"),
    include_str!("../../../../migrations/sqlite/0004_vat.sql"),
    include_str!("../../../../migrations/sqlite/0005_what_festivals_sell.sql"),
    include_str!("../../../../migrations/sqlite/0006_deposits.sql"),
    include_str!("../../../../migrations/sqlite/0007_voucher_grants.sql"),
    include_str!("../../../../migrations/sqlite/0008_daily_vouchers.sql"),
    include_str!("../../../../migrations/sqlite/0009_housekeeping.sql"),
    include_str!("../../../../migrations/sqlite/0010_card_replacement.sql"),
    include_str!("../../../../migrations/sqlite/0011_terminal_status.sql"),
    include_str!("../../../../migrations/sqlite/0012_operators.sql"),
    include_str!("../../../../migrations/sqlite/0013_card_history.sql"),
    include_str!("../../../../migrations/sqlite/0014_quarter_totals.sql"),
    include_str!("../../../../migrations/sqlite/0015_shift_top_ups.sql"),
    include_str!("../../../../migrations/sqlite/0016_report_sums.sql"),
    include_str!("../../../../migrations/sqlite/0017_card_keys.sql"),
];

/// The schema version this program writes: `PRAGMA user_version` once every migration is
/// applied.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings the SQLite store needs.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// Top-up limits.
    pub limits: Limits,
    /// How long idempotency keys are kept.
    pub retention_days: i64,
    /// The VAT rates.
    pub taxes: TaxRates,
}

struct Inner {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropping it stops the checkpointer.
    checkpointer_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    checkpointer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Headquarters' reads (pages, reports), run one at a time on a connection of their
    /// own by a thread of the lowest CPU priority ([`writer::background_loop`]). Taking it
    /// stops the thread once the reads queued are done.
    background: Mutex<Option<mpsc::Sender<BackgroundJob>>>,
    background_thread: Mutex<Option<JoinHandle<()>>>,
    limits: Limits,
    retention_days: i64,
    taxes: Arc<TaxRates>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and stop; joining it
        // means the database is closed cleanly when the store is gone.
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Ok(mut t) = self.writer_thread.lock()
            && let Some(handle) = t.take()
        {
            let _ = handle.join();
        }
        if let Ok(mut b) = self.background.lock() {
            b.take();
        }
        if let Ok(mut t) = self.background_thread.lock()
            && let Some(handle) = t.take()
        {
            let _ = handle.join();
        }
        if let Ok(mut s) = self.checkpointer_stop.lock() {
            s.take();
        }
        if let Ok(mut t) = self.checkpointer_thread.lock()
            && let Some(handle) = t.take()
        {
            let _ = handle.join();
        }
    }
}

/// The SQLite ledger store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::SystemIoFailure
                    | C::DiskFull
                    | C::CannotOpen
                    | C::ReadOnly
                    | C::PermissionDenied
                    | C::OutOfMemory
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        classify(e)
    }
}

pub(super) fn internal(what: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(what.to_string())
}

/// Opens a connection with the ledger's pragmas: WAL, `synchronous=FULL`, foreign keys.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoints journal the pages they change; in memory that costs a copy, on disk a write.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Applies the migrations that are not applied yet; returns the schema version.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = SCHEMA_VERSION;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    // A migration may rebuild a table that others reference (SQLite cannot change a
    // constraint in place): foreign keys are off while migrations run (the pragma has no
    // effect inside a transaction), and each migration checks them all before it commits.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = (|| {
        for (index, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).map_err(internal)?)
        {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(internal(format!(
                    "migration {} leaves a broken foreign key in {table}",
                    index + 1
                )));
            }
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(index + 1).map_err(internal)?,
            )?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrated?;
    Ok(known)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database and starts the writer thread.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let mut write_conn = open_connection(&options.path)?;
        migrate(&mut write_conn)?;
        // Checkpoints run on their own thread, so that the writer does not copy the log
        // into the database (and fsync it) while callers wait for their commit.
        write_conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
        let checkpoint_conn = open_connection(&options.path)?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_conn, &stop_rx))
            .map_err(internal)?;
        let readers = (0..READERS)
            .map(|_| open_connection(&options.path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let background_conn = open_connection(&options.path)?;
        let (background_tx, background_rx) = mpsc::channel::<BackgroundJob>(BACKGROUND_QUEUE_MAX);
        let background_thread = std::thread::Builder::new()
            .name("ledger-hq-reads".into())
            .spawn(move || writer::background_loop(&background_conn, background_rx))
            .map_err(internal)?;
        let (tx, rx) = mpsc::channel::<Job>(WRITE_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer_loop(write_conn, rx))
            .map_err(internal)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(thread)),
                checkpointer_stop: Mutex::new(Some(stop_tx)),
                checkpointer_thread: Mutex::new(Some(checkpointer)),
                readers,
                next_reader: AtomicUsize::new(0),
                background: Mutex::new(Some(background_tx)),
                background_thread: Mutex::new(Some(background_thread)),
                limits: options.limits,
                retention_days: options.retention_days,
                taxes: Arc::new(options.taxes),
            }),
        })
    }
}

// ---------------------------------------------------------------------------------------
// What operations and Stripe events share: cards and postings.

pub(super) fn flags_json(flags: &[crate::protocol::api::Flag]) -> Result<String, StoreError> {
    serde_json::to_string(flags).map_err(internal)
}

pub(super) fn load_card(conn: &Connection, uid: &CardUid) -> Result<Option<CardState>, StoreError> {
    type CardRow = (i64, String, Option<String>, Option<String>, i64);
    let row: Option<CardRow> = conn
        .prepare_cached(
            "SELECT balance_cents, status, block_reason, age_flag, voucher_units FROM cards
             WHERE card_uid = ?1",
        )?
        .query_row([uid.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    row.map(|(balance, status, reason, age_flag, vouchers)| {
        let status = match status.as_str() {
            "active" => CardStatus::Active,
            "blocked" => CardStatus::Blocked,
            other => return Err(internal(format!("bad card status {other}"))),
        };
        let block_reason = reason
            .map(|r| {
                BlockReason::parse(&r).ok_or_else(|| internal(format!("bad block reason {r}")))
            })
            .transpose()?;
        let age_flag = age_flag
            .map(|f| AgeFlag::parse(&f).ok_or_else(|| internal(format!("bad age flag {f}"))))
            .transpose()?;
        Ok(CardState {
            balance: Cents::new(balance),
            status,
            block_reason,
            age_flag,
            vouchers,
        })
    })
    .transpose()
}

/// Writes a card's new state with the next feed version.
pub(super) fn write_card(
    conn: &Connection,
    uid: &CardUid,
    create: bool,
    next: &CardState,
    now: &str,
) -> Result<(), StoreError> {
    // Every change takes the next feed version. Versions only grow and cards are never
    // deleted, so the largest version in use (found through its unique index) is the last.
    let reason = next.block_reason.map(BlockReason::as_str);
    let age_flag = next.age_flag.map(AgeFlag::as_str);
    let sql = if create {
        "INSERT INTO cards (card_uid, balance_cents, status, block_reason, age_flag, voucher_units,
                            version, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?7, (SELECT COALESCE(MAX(version), 0) + 1 FROM cards), ?6, ?6)"
    } else {
        "UPDATE cards SET balance_cents = ?2, status = ?3, block_reason = ?4, age_flag = ?5,
             voucher_units = ?7, version = (SELECT MAX(version) FROM cards) + 1, updated_at = ?6
         WHERE card_uid = ?1"
    };
    conn.prepare_cached(sql)?.execute(params![
        uid.as_str(),
        next.balance.get(),
        next.status.as_str(),
        reason,
        age_flag,
        now,
        next.vouchers,
    ])?;
    Ok(())
}

pub(super) fn post(
    conn: &Connection,
    tx: &Uuid,
    entries: &[(String, Cents)],
    now: &str,
) -> Result<(), StoreError> {
    debug_assert_eq!(
        Cents::checked_sum(entries.iter().map(|e| e.1)),
        Ok(Cents::ZERO)
    );
    let mut stmt = conn.prepare_cached(
        "INSERT INTO postings (transaction_id, account, amount_cents, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (account, amount) in entries {
        stmt.execute(params![tx.to_string(), account, amount.get(), now])?;
    }
    Ok(())
}

/// A value of a column that holds one of a type's spellings (a role, a kind).
pub(super) fn parse_stored<T>(text: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| internal(format!("bad stored value {text:?}")))
}

/// How a terminal is looked up.
#[derive(Debug, Clone, Copy)]
pub(super) enum TerminalKey {
    /// By the SHA-256 of its bearer token.
    TokenSha256,
    /// By its name.
    Name,
}

impl SqliteStore {
    /// The active terminal with this token hash, or the terminal with this name (active or
    /// revoked).
    pub(super) async fn terminal_by(
        &self,
        by: TerminalKey,
        key: String,
    ) -> Result<Option<Terminal>, StoreError> {
        let sql = match by {
            TerminalKey::TokenSha256 => {
                "SELECT terminal_id, name, kind, point_of_sale FROM terminals
                 WHERE token_sha256 = ?1 AND active = 1"
            }
            // Revoked ones too: an operator imports what a revoked terminal journaled.
            TerminalKey::Name => {
                "SELECT terminal_id, name, kind, point_of_sale FROM terminals WHERE name = ?1"
            }
        };
        self.read(move |conn| {
            let row: Option<(String, String, String, String)> = conn
                .prepare_cached(sql)?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            row.map(|(id, name, kind, point_of_sale)| {
                Ok(Terminal {
                    terminal_id: Uuid::parse_str(&id).map_err(internal)?,
                    name,
                    kind: parse_stored(&kind, TerminalKind::parse)?,
                    point_of_sale,
                })
            })
            .transpose()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database file (kept while the directory lives) and a connection to it.
    fn fresh() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("l.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let (_dir, mut conn) = fresh();
        let latest = i64::try_from(MIGRATIONS.len()).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), latest);
        assert_eq!(migrate(&mut conn).unwrap(), latest);
        conn.pragma_update(None, "user_version", 99).unwrap();
        match migrate(&mut conn) {
            Err(e @ StoreError::SchemaTooNew { found: 99, known }) if known == latest => {
                let message = e.to_string();
                assert!(message.contains("run that version"), "{message}");
            }
            other => panic!("a newer schema must be refused as such: {other:?}"),
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99, "a refused database is left as it was");
    }

    #[test]
    fn the_deposits_migration_rebuilds_terminals_and_voids_with_their_rows_and_references() {
        let (_dir, mut conn) = fresh();
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(
            "INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256,
                                    created_at, highest_contiguous_seq, highest_seen_seq)
             VALUES ('t1', 'bar-1', 'bar', 'Main Bar', 'h1', 'now', 7, 9);
             INSERT INTO voids (transaction_id, client_request_id, terminal_id, terminal_seq,
                                target_client_request_id, target_kind, staff_id, reason,
                                status, flags, created_at, processed_at)
             VALUES ('v1', 'k1', 't1', 3, 'k0', NULL, 's', 'in_doubt', 'tombstoned', '[]',
                     'now', 'now');",
        )
        .unwrap();
        let row = |conn: &Connection| -> (String, i64, i64, String) {
            conn.query_row(
                "SELECT t.name, t.highest_contiguous_seq, t.highest_seen_seq, v.status
                   FROM terminals t JOIN voids v ON v.terminal_id = t.terminal_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
        };
        let before = row(&conn);
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(row(&conn), before);
        let on: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(on, 1, "foreign keys are on again after the migrations");
        // The new kind and void target are taken; the rebuilt voids still refer to terminals.
        conn.execute_batch(
            "INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256,
                                    created_at)
             VALUES ('t2', 'ret-1', 'return', 'Main Bar', 'h2', 'now')",
        )
        .unwrap();
        let orphan = conn.execute_batch(
            "INSERT INTO voids (transaction_id, client_request_id, terminal_id, terminal_seq,
                                target_client_request_id, target_kind, staff_id, reason,
                                status, flags, created_at, processed_at)
             VALUES ('v2', 'k2', 'nobody', 1, 'k3', 'return', 's', 'in_doubt', 'tombstoned',
                     '[]', 'now', 'now')",
        );
        assert!(orphan.is_err(), "a void of an unknown terminal: {orphan:?}");
        for gone in ["terminals_new", "voids_v5", "idempotency_keys_v2"] {
            assert!(
                conn.query_row(&format!("SELECT count(*) FROM {gone}"), [], |r| r
                    .get::<_, i64>(0))
                    .is_err(),
                "{gone} is left behind"
            );
        }
    }

    #[test]
    fn the_shifts_migration_keeps_every_idempotency_key() {
        let (_dir, mut conn) = fresh();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let key = |crid: &str, operation: &str, tx: Option<&str>, expires: Option<&str>| {
            format!(
                "INSERT INTO idempotency_keys VALUES ('{crid}', 't', '{operation}', 'h', 201, '{{}}', {}, 'now', {})",
                tx.map_or("NULL".into(), |t| format!("'{t}'")),
                expires.map_or("NULL".into(), |e| format!("'{e}'")),
            )
        };
        conn.execute_batch(&key("a", "order", Some("tx-a"), None))
            .unwrap();
        conn.execute_batch(&key("b", "recharge", None, Some("2000-01-01")))
            .unwrap();
        assert!(
            conn.execute_batch(&key("c", "shift", Some("tx-c"), None))
                .is_err()
        );
        let dump = |conn: &Connection| -> Vec<(String, String, Option<String>)> {
            conn.prepare(
                "SELECT client_request_id, operation, expires_at FROM idempotency_keys ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let before = dump(&conn);
        // Every later migration too: the keys survive all of them.
        assert_eq!(
            migrate(&mut conn).unwrap(),
            i64::try_from(MIGRATIONS.len()).unwrap()
        );
        assert_eq!(dump(&conn), before);
        conn.execute_batch(&key("c", "shift", Some("tx-c"), None))
            .unwrap();
        assert!(
            conn.execute_batch(&key("d", "bogus", Some("tx-d"), None))
                .is_err()
        );
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'idempotency_keys_expires_at'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1, "the partial index on expires_at is rebuilt");
        assert!(
            conn.query_row("SELECT count(*) FROM idempotency_keys_v1", [], |r| r
                .get::<_, i64>(0))
                .is_err(),
            "the old table is gone"
        );
    }
}
