//! The SQLite backend: one writer thread with group commit, and a small pool of readers.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit waits for the
//! disk. So a single thread owns the write connection and commits several operations per
//! transaction: it takes the first waiting job, then whatever else is already queued (up to
//! [`GROUP_JOBS_MAX`]), runs each job inside its own SAVEPOINT (a failing job is rolled back
//! alone), commits once, and only then answers every job. No answer leaves before its
//! operation is durable. Readers use their own connections (WAL lets them read while the
//! writer writes).

mod ops;
mod stripe;

use super::{
    AuditReport, CardFeedPage, CardView, LedgerStore, NewStaff, NewTerminal, Product,
    ProductUpsert, ScanReceipt, ShiftReport, StaffRecord, StoreError,
};
use crate::domain::{CardUid, Cents, ProductId, StaffId};
use crate::ledger::caller::Terminal;
use crate::ledger::flow::Context;
use crate::ledger::flow::ops::decide_shift;
use crate::ledger::outcome::Outcome;
use crate::ledger::rules::{self, CardState, Limits};
use crate::protocol::api::{
    BlockReason, CardStatus, Operation, Scan, ShiftCloseout, StaffRole, TerminalKind, format_time,
};
use chrono::Utc;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Jobs committed together in one transaction, at most.
pub const GROUP_JOBS_MAX: usize = 128;
/// Jobs waiting for the writer, at most; callers wait for room beyond that.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Read connections.
pub const READERS: usize = 4;
/// How long a connection waits for a lock held by another process (an admin command).
pub const BUSY_TIMEOUT_MS: u64 = 5000;
/// How often the checkpointer copies the write-ahead log into the database file.
pub const CHECKPOINT_INTERVAL_MS: u64 = 1000;
/// WAL size (pages) at which the writer checkpoints by itself, should the checkpointer lag.
pub const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;

/// The schema migrations, in order. `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_ledger.sql"),
    include_str!("../../../migrations/sqlite/0002_shifts.sql"),
    include_str!("../../../migrations/sqlite/0003_stripe.sql"),
];

/// Settings the SQLite store needs.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// Top-up limits.
    pub limits: Limits,
    /// How long idempotency keys are kept.
    pub retention_days: i64,
}

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

struct Inner {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropping it stops the checkpointer.
    checkpointer_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    checkpointer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    limits: Limits,
    retention_days: i64,
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
    let known = i64::try_from(MIGRATIONS.len()).map_err(internal)?;
    if current > known {
        return Err(internal(format!(
            "the database has schema version {current}, newer than this program's {known}"
        )));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).map_err(internal)?)
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(index + 1).map_err(internal)?,
        )?;
        tx.commit()?;
    }
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
                limits: options.limits,
                retention_days: options.retention_days,
            }),
        })
    }

    /// Runs `f` on the writer thread inside a savepoint of a group-committed transaction.
    /// An `Err` rolls back what `f` wrote; the answer arrives only after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let _ = reply_tx.send(committed.and(result));
            });
            (ok, finish)
        });
        let sender = self
            .inner
            .writer
            .lock()
            .map_err(internal)?
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is shutting down".into()))?;
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        reply_rx
            .await
            .map_err(|_| StoreError::Unavailable("the write was not carried out; retry".into()))?
    }

    /// Runs `f` like [`Self::write`], with the flow's context for a terminal's request (one
    /// `now` for the whole job).
    async fn write_as<T, F>(
        &self,
        terminal: Terminal,
        request_id: String,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Context<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (limits, retention_days) = (self.inner.limits, self.inner.retention_days);
        self.write(move |conn| {
            let ctx = Context {
                terminal: &terminal,
                request_id: &request_id,
                now: Utc::now(),
                limits,
                retention_days,
            };
            f(conn, &ctx)
        })
        .await
    }

    /// Runs `f` on one of the read connections, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let conn = inner.readers[i].lock().map_err(internal)?;
            f(&conn)
        })
        .await
        .map_err(internal)?
    }
}

fn checkpoint_loop(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) {
    let interval = std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS);
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // PASSIVE never blocks the writer or readers; it copies what it can.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut group: Vec<Job> = Vec::with_capacity(GROUP_JOBS_MAX);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < GROUP_JOBS_MAX {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        run_group(&conn, &mut group);
    }
}

/// Runs one statement through the statement cache (savepoints run thousands of times a second).
pub(super) fn exec_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run_group(conn: &Connection, group: &mut Vec<Job>) {
    if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs unanswered tells each caller the write was not carried out.
        tracing::error!(error = %e, jobs = group.len(), "cannot begin a write transaction");
        group.clear();
        return;
    }
    let mut finishers: Vec<Finish> = Vec::with_capacity(group.len());
    for job in group.drain(..) {
        if let Err(e) = exec_cached(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "cannot open a savepoint; the job is not run");
            continue;
        }
        let (ok, finish) = job(conn);
        let closed = if ok {
            exec_cached(conn, "RELEASE job")
        } else {
            exec_cached(conn, "ROLLBACK TO job").and_then(|()| exec_cached(conn, "RELEASE job"))
        };
        if let Err(e) = closed {
            tracing::error!(error = %e, "cannot close a savepoint");
        }
        finishers.push(finish);
    }
    let committed = exec_cached(conn, "COMMIT");
    if let Err(e) = &committed {
        tracing::error!(error = %e, "commit failed; the whole group is rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for finish in finishers {
        finish(match &committed {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        });
    }
}

// ---------------------------------------------------------------------------------------
// What operations and Stripe events share: cards and postings.

pub(super) fn flags_json(flags: &[crate::protocol::api::Flag]) -> Result<String, StoreError> {
    serde_json::to_string(flags).map_err(internal)
}

pub(super) fn load_card(conn: &Connection, uid: &CardUid) -> Result<Option<CardState>, StoreError> {
    let row: Option<(i64, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT balance_cents, status, block_reason FROM cards WHERE card_uid = ?1",
        )?
        .query_row([uid.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(balance, status, reason)| {
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
        Ok(CardState {
            balance: Cents::new(balance),
            status,
            block_reason,
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
    if create {
        conn.prepare_cached(
            "INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(version), 0) + 1 FROM cards), ?5, ?5)",
        )?
        .execute(params![uid.as_str(), next.balance.get(), next.status.as_str(), reason, now])?;
    } else {
        conn.prepare_cached(
            "UPDATE cards SET balance_cents = ?2, status = ?3, block_reason = ?4,
                 version = (SELECT MAX(version) FROM cards) + 1, updated_at = ?5
             WHERE card_uid = ?1",
        )?
        .execute(params![
            uid.as_str(),
            next.balance.get(),
            next.status.as_str(),
            reason,
            now
        ])?;
    }
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

fn log_admin(
    conn: &Connection,
    operation: &str,
    card_uid: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO app_transaction_log (occurred_at, actor, operation, card_uid, outcome, details)
         VALUES (?1, 'admin', ?2, ?3, 'done', ?4)",
    )?
    .execute(params![format_time(Utc::now()), operation, card_uid, details.to_string()])?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn find_terminal(conn: &Connection, sql: &str, key: &str) -> Result<Option<Terminal>, StoreError> {
    let row: Option<(String, String, String, String)> = conn
        .prepare_cached(sql)?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    row.map(|(id, name, kind, point_of_sale)| {
        Ok(Terminal {
            terminal_id: Uuid::parse_str(&id).map_err(internal)?,
            name,
            kind: TerminalKind::parse(&kind)
                .ok_or_else(|| internal(format!("bad terminal kind {kind}")))?,
            point_of_sale,
        })
    })
    .transpose()
}

fn card_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_card_view(row: (String, i64, String, i64, String)) -> Result<CardView, StoreError> {
    Ok(CardView {
        card_uid: CardUid::parse(&row.0).map_err(internal)?,
        balance_cents: Cents::new(row.1),
        status: row.2,
        version: row.3,
        updated_at: row.4,
    })
}

impl LedgerStore for SqliteStore {
    async fn authenticate(&self, token: &str) -> Result<Option<Terminal>, StoreError> {
        let token_sha256 = super::token_sha256(token);
        self.read(move |conn| {
            find_terminal(
                conn,
                "SELECT terminal_id, name, kind, point_of_sale FROM terminals
                 WHERE token_sha256 = ?1 AND active = 1",
                &token_sha256,
            )
        })
        .await
    }

    async fn terminal_by_name(&self, name: String) -> Result<Option<Terminal>, StoreError> {
        self.read(move |conn| {
            find_terminal(
                conn,
                "SELECT terminal_id, name, kind, point_of_sale FROM terminals
                 WHERE name = ?1 AND active = 1",
                &name,
            )
        })
        .await
    }

    async fn apply(
        &self,
        terminal: Terminal,
        request_id: String,
        operations: Vec<Operation>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.write_as(terminal, request_id, move |conn, ctx| {
            ops::apply_all(conn, ctx, &operations)
        })
        .await
    }

    async fn record_shift(
        &self,
        terminal: Terminal,
        request_id: String,
        shift: ShiftCloseout,
    ) -> Result<Outcome, StoreError> {
        self.write_as(terminal, request_id, move |conn, ctx| {
            let plan = decide_shift(&ops::SqlReads(conn), ctx, &shift)?;
            ops::carry_out(conn, ctx, plan)
        })
        .await
    }

    async fn apply_stripe(
        &self,
        request_id: String,
        event: crate::ledger::stripe::StripeEvent,
    ) -> Result<super::StripeOutcome, StoreError> {
        let limits = self.inner.limits;
        self.write(move |conn| stripe::apply(conn, &request_id, &event, limits, Utc::now()))
            .await
    }

    async fn stripe_events(
        &self,
        attention: bool,
        limit: u32,
    ) -> Result<Vec<super::StripeEventRecord>, StoreError> {
        self.read(move |conn| stripe::events(conn, attention, limit))
            .await
    }

    async fn shift_reports(
        &self,
        terminal_name: Option<String>,
    ) -> Result<Vec<ShiftReport>, StoreError> {
        self.read(move |conn| {
            // The ledger's top-ups of the terminal in the shift, voided ones left out like
            // the terminal's totals. The shift is the close-out's range of the terminal's own
            // sequence numbers (an offline top-up replayed after the close still belongs to
            // it, and a terminal clock step moves nothing out of it); a close-out without
            // one (an empty shift) falls back to the terminal's times between `opened_at`
            // and `closed_at`. Without an index on recharges (terminal_id, terminal_seq),
            // which every top-up would pay for, this scans the top-ups once per close-out:
            // about a second for 300 close-outs over 20,000 top-ups, acceptable for an admin
            // report.
            let mut stmt = conn.prepare(
                "SELECT s.shift_id, t.name, s.staff_id, s.opened_at, s.closed_at, s.count,
                        s.cash_cents, s.card_cents, s.counted_cash_cents, s.difference_cents,
                        s.recorded_at, COUNT(r.transaction_id),
                        COALESCE(SUM(CASE WHEN r.payment_method = 'cash' THEN r.amount_cents END), 0),
                        COALESCE(SUM(CASE WHEN r.payment_method = 'card' THEN r.amount_cents END), 0)
                 FROM shift_closeouts s
                 JOIN terminals t ON t.terminal_id = s.terminal_id
                 LEFT JOIN recharges r ON r.terminal_id = s.terminal_id AND r.voided_by IS NULL
                      AND CASE WHEN s.first_seq IS NOT NULL
                               THEN r.terminal_seq BETWEEN s.first_seq AND s.last_seq
                               -- A terminal's empty shift (no range, nothing taken) holds no
                               -- top-up, whatever its clock says.
                               WHEN s.count = 0 AND s.cash_cents = 0 AND s.card_cents = 0
                               THEN 0
                               ELSE r.created_at >= s.opened_at AND r.created_at <= s.closed_at
                          END
                 WHERE ?1 IS NULL OR t.name = ?1
                 GROUP BY s.shift_id
                 ORDER BY s.closed_at, t.name, s.shift_id",
            )?;
            let rows = stmt.query_map([terminal_name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    ShiftReport {
                        shift_id: Uuid::nil(),
                        terminal: r.get(1)?,
                        staff_id: r.get(2)?,
                        opened_at: r.get(3)?,
                        closed_at: r.get(4)?,
                        count: r.get(5)?,
                        cash_cents: Cents::new(r.get(6)?),
                        card_cents: Cents::new(r.get(7)?),
                        counted_cash_cents: Cents::new(r.get(8)?),
                        difference_cents: Cents::new(r.get(9)?),
                        recorded_at: r.get(10)?,
                        ledger_count: r.get(11)?,
                        ledger_cash_cents: Cents::new(r.get(12)?),
                        ledger_card_cents: Cents::new(r.get(13)?),
                    },
                ))
            })?;
            rows.map(|row| {
                let (id, report) = row?;
                Ok(ShiftReport {
                    shift_id: Uuid::parse_str(&id).map_err(internal)?,
                    ..report
                })
            })
            .collect()
        })
        .await
    }

    async fn card(&self, uid: CardUid) -> Result<Option<CardView>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT card_uid, balance_cents, status, version, updated_at FROM cards WHERE card_uid = ?1")?
                .query_row([uid.as_str()], card_view)
                .optional()?
                .map(to_card_view)
                .transpose()
        })
        .await
    }

    async fn card_feed(&self, since_version: i64, limit: u32) -> Result<CardFeedPage, StoreError> {
        self.read(move |conn| {
            let rows: Vec<_> = conn
                .prepare_cached(
                    "SELECT card_uid, balance_cents, status, version, updated_at FROM cards
                     WHERE version > ?1 ORDER BY version LIMIT ?2",
                )?
                .query_map(params![since_version, limit], card_view)?
                .collect::<Result<_, _>>()?;
            let cards = rows
                .into_iter()
                .map(to_card_view)
                .collect::<Result<Vec<_>, _>>()?;
            let next_version = cards.last().map_or(since_version, |c| c.version);
            Ok(CardFeedPage {
                cards,
                next_version,
            })
        })
        .await
    }

    async fn catalog(&self, point_of_sale: String) -> Result<Vec<Product>, StoreError> {
        self.read(move |conn| {
            let rows: Vec<(String, String, i64, Option<String>)> = conn
                .prepare_cached(
                    "SELECT product_id, name, price_cents, category FROM products
                     WHERE point_of_sale = ?1 AND active = 1 ORDER BY category, product_id",
                )?
                .query_map([point_of_sale], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(id, name, price, category)| {
                    Ok(Product {
                        product_id: ProductId::parse(&id).map_err(internal)?,
                        name,
                        price_cents: Cents::new(price),
                        category,
                    })
                })
                .collect()
        })
        .await
    }

    async fn staff(&self) -> Result<Vec<StaffRecord>, StoreError> {
        self.read(|conn| {
            let rows: Vec<(String, String, String, bool, String)> = conn
                .prepare_cached(
                    "SELECT staff_id, name, role, active, pin_hash FROM staff ORDER BY staff_id",
                )?
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(id, name, role, active, pin_hash)| {
                    Ok(StaffRecord {
                        staff_id: StaffId::parse(&id).map_err(internal)?,
                        name,
                        role: StaffRole::parse(&role)
                            .ok_or_else(|| internal(format!("bad role {role}")))?,
                        active,
                        pin_hash,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_scans(
        &self,
        terminal: Terminal,
        scans: Vec<Scan>,
    ) -> Result<ScanReceipt, StoreError> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT OR IGNORE INTO nfc_scan_log (terminal_id, card_uid, result, reader, scanned_at, terminal_seq, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let now = format_time(Utc::now());
            let mut accepted = 0;
            for s in &scans {
                accepted += stmt.execute(params![
                    terminal.terminal_id.to_string(),
                    s.card_uid.as_str(),
                    s.result,
                    s.reader,
                    format_time(s.scanned_at),
                    s.terminal_seq.map(|t| t.get()),
                    now
                ])?;
            }
            Ok(ScanReceipt { accepted, duplicates: scans.len() - accepted })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM terminals", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        self.write(|conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM idempotency_keys WHERE transaction_id IS NULL AND expires_at < ?1",
                )?
                .execute([format_time(Utc::now())])?;
            Ok(n as u64)
        })
        .await
    }

    async fn add_terminal(&self, t: NewTerminal) -> Result<Uuid, StoreError> {
        self.write(move |conn| {
            let id = Uuid::new_v4();
            let r = conn.execute(
                "INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id.to_string(), t.name, t.kind.as_str(), t.point_of_sale, t.token_sha256, format_time(Utc::now())],
            );
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!("a terminal named {:?} already exists", t.name)));
                }
                r => r?,
            };
            log_admin(conn, "terminal_add", None, json!({ "terminal_id": id, "name": t.name, "kind": t.kind.as_str(), "point_of_sale": t.point_of_sale }))?;
            Ok(id)
        })
        .await
    }

    async fn add_staff(&self, s: NewStaff) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = format_time(Utc::now());
            let r = conn.execute(
                "INSERT INTO staff (staff_id, name, role, pin_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![s.staff_id.as_str(), s.name, s.role.as_str(), s.pin_hash, now],
            );
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!("staff member {} already exists", s.staff_id)));
                }
                r => r?,
            };
            log_admin(conn, "staff_add", None, json!({ "staff_id": s.staff_id.as_str(), "role": s.role.as_str() }))
        })
        .await
    }

    async fn upsert_products(&self, products: Vec<ProductUpsert>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = format_time(Utc::now());
            for p in &products {
                conn.prepare_cached(
                    "INSERT INTO products (point_of_sale, product_id, name, price_cents, category, active, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
                     ON CONFLICT (point_of_sale, product_id) DO UPDATE SET
                         name = excluded.name, price_cents = excluded.price_cents,
                         category = excluded.category, active = 1, updated_at = excluded.updated_at",
                )?
                .execute(params![
                    p.point_of_sale,
                    p.product.product_id.as_str(),
                    p.product.name,
                    p.product.price_cents.get(),
                    p.product.category,
                    now
                ])?;
                log_admin(conn, "product_upsert", None, json!({ "point_of_sale": p.point_of_sale, "product_id": p.product.product_id.as_str(), "price_cents": p.product.price_cents.get() }))?;
            }
            Ok(())
        })
        .await
    }

    async fn set_card_lost(&self, uid: CardUid, lost: bool) -> Result<(), StoreError> {
        self.write(move |conn| {
            let card = load_card(conn, &uid)?
                .ok_or_else(|| StoreError::NotFound(format!("card {uid} is unknown")))?;
            let next = if lost {
                CardState {
                    status: CardStatus::Blocked,
                    block_reason: Some(BlockReason::Lost),
                    ..card
                }
            } else {
                // Lifting a lost block leaves a debt block in place if the card is in debt.
                rules::status_after(
                    CardState {
                        status: CardStatus::Active,
                        block_reason: None,
                        ..card
                    },
                    card.balance,
                )
            };
            write_card(conn, &uid, false, &next, &format_time(Utc::now()))?;
            log_admin(
                conn,
                if lost { "card_block" } else { "card_unblock" },
                Some(uid.as_str()),
                json!({}),
            )
        })
        .await
    }

    async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.read(audit_books).await
    }
}

/// Adds `message(name, a, b)` to `d` for every row of `sql`, a query of discrepancies with
/// three columns: what it is about and the two amounts that should agree.
fn mismatches(
    conn: &Connection,
    d: &mut Vec<String>,
    sql: &str,
    message: impl Fn(String, i64, i64) -> String,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (name, a, b) = row?;
        d.push(message(name, a, b));
    }
    Ok(())
}

fn audit_books(conn: &Connection) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport::default();
    // One consistent snapshot for every check.
    let tx = conn.unchecked_transaction()?;
    report.cards = tx.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?;
    report.postings = tx.query_row("SELECT count(*) FROM postings", [], |r| r.get(0))?;
    report.transactions = tx.query_row(
        "SELECT count(DISTINCT transaction_id) FROM postings",
        [],
        |r| r.get(0),
    )?;
    report.card_balance_total_cents = tx.query_row(
        "SELECT COALESCE(SUM(balance_cents), 0) FROM cards",
        [],
        |r| r.get(0),
    )?;
    {
        let d = &mut report.discrepancies;
        // One pass over cards and card postings, grouped once (a join of the cards with
        // per-account sums ran as a scan of the sums per card: quadratic in cards). Postings
        // of a card that has no row show up with a balance of 0.
        mismatches(
            &tx,
            d,
            "SELECT card_uid, SUM(balance), SUM(posted) FROM (
                 SELECT card_uid, balance_cents AS balance, 0 AS posted FROM cards
                 UNION ALL
                 SELECT substr(account, 6), 0, amount_cents FROM postings
                 WHERE account LIKE 'card:%')
             GROUP BY card_uid
             HAVING SUM(balance) != SUM(posted)
             ORDER BY card_uid",
            |uid, balance, postings| {
                format!("card {uid}: balance_cents {balance} but its postings sum to {postings}")
            },
        )?;
        let total: i64 = tx.query_row(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM postings",
            [],
            |r| r.get(0),
        )?;
        if total != 0 {
            d.push(format!("all postings sum to {total}, not 0"));
        }
        let mut stmt = tx.prepare(
            "SELECT transaction_id, SUM(amount_cents) FROM postings GROUP BY transaction_id HAVING SUM(amount_cents) != 0",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (tx_id, sum) = row?;
            d.push(format!("transaction {tx_id}: postings sum to {sum}, not 0"));
        }
        let mut stmt = tx.prepare(
            "SELECT DISTINCT account FROM postings WHERE account LIKE 'card:%'
             AND substr(account, 6) NOT IN (SELECT card_uid FROM cards)",
        )?;
        for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
            d.push(format!(
                "account {}: postings for a card that does not exist",
                row?
            ));
        }
        mismatches(
            &tx,
            d,
            "SELECT o.transaction_id, o.total_cents, COALESCE(SUM(i.line_total_cents), 0)
             FROM bar_orders o
             LEFT JOIN bar_order_items i ON i.transaction_id = o.transaction_id
             GROUP BY o.transaction_id HAVING o.total_cents != COALESCE(SUM(i.line_total_cents), 0)",
            |tx_id, total, lines| {
                format!("order {tx_id}: total_cents {total} but its lines sum to {lines}")
            },
        )?;
        for (table, id) in [
            ("bar_orders", "transaction_id"),
            ("recharges", "transaction_id"),
            ("voids", "transaction_id"),
            ("shift_closeouts", "shift_id"),
        ] {
            let sql = format!(
                "SELECT t.{id} FROM {table} t WHERE t.{id} NOT IN
                 (SELECT transaction_id FROM idempotency_keys WHERE transaction_id IS NOT NULL)"
            );
            let mut stmt = tx.prepare(&sql)?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                d.push(format!(
                    "{table} {}: applied without its idempotency key, so a replay could apply it again",
                    row?
                ));
            }
        }
        for table in [
            "bar_orders",
            "recharges",
            "stripe_recharges",
            "stripe_refunds",
        ] {
            let sql = format!(
                "SELECT t.transaction_id FROM {table} t WHERE NOT EXISTS
                 (SELECT 1 FROM postings p WHERE p.transaction_id = t.transaction_id)"
            );
            let mut stmt = tx.prepare(&sql)?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                d.push(format!("{table} {}: applied without postings", row?));
            }
        }
        // A Stripe credit's refunds add up to what it says was reversed.
        mismatches(
            &tx,
            d,
            "SELECT r.checkout_session_id, r.refunded_cents, COALESCE(SUM(f.amount_cents), 0)
             FROM stripe_recharges r LEFT JOIN stripe_refunds f
               ON f.checkout_session_id = r.checkout_session_id
             GROUP BY r.checkout_session_id
             HAVING r.refunded_cents != COALESCE(SUM(f.amount_cents), 0)",
            |session, said, refunds| {
                format!(
                    "Stripe session {session}: refunded_cents {said} but its refunds sum to {refunds}"
                )
            },
        )?;
        let mut stmt = tx.prepare(
            "SELECT card_uid, balance_cents, status FROM cards WHERE balance_cents < 0 AND status != 'blocked'",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })? {
            let (uid, balance, status) = row?;
            d.push(format!(
                "card {uid}: balance_cents {balance} below zero but status {status}"
            ));
        }
    }
    tx.finish()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut conn = open_connection(&path).unwrap();
        let latest = i64::try_from(MIGRATIONS.len()).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), latest);
        assert_eq!(migrate(&mut conn).unwrap(), latest);
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(migrate(&mut conn).is_err());
    }

    #[test]
    fn the_shifts_migration_keeps_every_idempotency_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut conn = open_connection(&path).unwrap();
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
