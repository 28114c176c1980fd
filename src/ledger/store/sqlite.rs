//! The SQLite backend: one writer thread with group commit, and a small pool of readers.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit waits for the
//! disk. So a single thread owns the write connection and commits several operations per
//! transaction: it takes the first waiting job, then whatever else is already queued (up to
//! [`GROUP_JOBS_MAX`]), runs each job inside its own SAVEPOINT (a failing job is rolled back
//! alone), commits once, and only then answers every job. No answer leaves before its
//! operation is durable. Readers use their own connections (WAL lets them read while the
//! writer writes).

mod stripe;

use super::{
    AuditReport, CardFeedPage, CardView, LedgerStore, NewStaff, NewTerminal, Product,
    ProductUpsert, ScanReceipt, ShiftReport, StaffRecord, StoreError,
};
use crate::domain::{CardUid, Cents, ClientRequestId, ProductId, StaffId, TerminalSeq};
use crate::ledger::caller::{StaffMember, Terminal};
use crate::ledger::outcome::{self, Answer, Outcome, StoredAnswer};
use crate::ledger::rules::{self, Action, BalanceChange, CardState, KeyCheck, Limits};
use crate::protocol::api::{
    ApiError, Approval, BlockReason, CardStatus, Flag, Mode, Operation, OrderRequest,
    PaymentMethod, RechargeRequest, Scan, ShiftCloseout, ShiftRecorded, StaffRole, TerminalKind,
    VoidOutcome, VoidRequest, format_time,
};
use crate::protocol::codes::ErrorCode;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
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

fn internal(what: impl std::fmt::Display) -> StoreError {
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
fn exec_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
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
// Operations. Each function runs inside the writer's savepoint.

struct Ctx<'a> {
    terminal: &'a Terminal,
    request_id: &'a str,
    now: DateTime<Utc>,
    limits: Limits,
    retention_days: i64,
}

/// What an applied operation wrote, for the audit log.
struct Applied {
    transaction_id: Uuid,
    card_uid: Option<CardUid>,
    amount_cents: Option<Cents>,
    outcome: &'static str,
    answer: Answer,
}

type Decided = Result<Applied, ApiError>;

/// A new transaction id. Time-ordered (UUIDv7), so the indexes on transaction ids grow at
/// their right edge instead of dirtying a random page for every insert.
fn new_transaction_id() -> Uuid {
    Uuid::now_v7()
}

/// The fingerprint of a request for its idempotency key: the terminal and the canonical JSON
/// of the parsed request. An [`Operation`] serializes with its `type` first, so it never
/// spells the same JSON as a [`ShiftCloseout`].
fn request_sha256(
    terminal: &Terminal,
    request: &impl serde::Serialize,
) -> Result<String, StoreError> {
    let canonical = serde_json::to_vec(request).map_err(internal)?;
    let mut h = Sha256::new();
    h.update(terminal.terminal_id.as_bytes());
    h.update([0u8]);
    h.update(&canonical);
    Ok(hex::encode(h.finalize()))
}

fn action_of(op: &Operation) -> Action {
    match op {
        Operation::Order(_) => Action::Order,
        Operation::Recharge(_) => Action::Recharge,
        Operation::Void(_) => Action::Void,
    }
}

fn process(conn: &Connection, ctx: &Ctx<'_>, op: &Operation) -> Result<Outcome, StoreError> {
    let refuse = |e: ApiError| Ok(Outcome::declined(e, ctx.request_id));
    let action = action_of(op);
    if let Err(e) = rules::check_terminal_kind(ctx.terminal.kind, action) {
        return refuse(e);
    }
    let crid = op.client_request_id().to_string();
    let hash = request_sha256(ctx.terminal, op)?;
    if let Some(known) = known_key(conn, ctx, &crid, &hash)? {
        return Ok(known);
    }
    let my_terminal = ctx.terminal.terminal_id.to_string();
    if is_tombstoned(conn, &crid, &my_terminal)? {
        return refuse(ApiError::new(
            ErrorCode::OperationVoided,
            "this operation was voided before it arrived",
        ));
    }
    let staff = load_staff(conn, op.staff_id())?;
    if let Err(e) = rules::check_staff(staff.as_ref(), action, op.mode()) {
        return refuse(e);
    }
    let decided = match op {
        Operation::Order(r) => apply_order(conn, ctx, r)?,
        Operation::Recharge(r) => apply_recharge(conn, ctx, r)?,
        Operation::Void(r) => apply_void(conn, ctx, r)?,
    };
    // An applied operation's key is kept forever (no expiry); a decline's for the retention.
    let (outcome, transaction_id, expires_at) = match decided {
        Ok(applied) => {
            log_operation(conn, ctx, op, Some(&applied), None)?;
            let transaction_id = Some(applied.transaction_id.to_string());
            (Outcome::approved(applied.answer), transaction_id, None)
        }
        Err(e) if e.code.is_stored_decline() => {
            log_operation(conn, ctx, op, None, Some(&e))?;
            let expires = ctx.now + chrono::Duration::days(ctx.retention_days);
            (
                Outcome::declined(e, ctx.request_id),
                None,
                Some(format_time(expires)),
            )
        }
        Err(e) => return refuse(e),
    };
    let key = NewKey {
        client_request_id: &crid,
        operation: op.kind_str(),
        request_sha256: &hash,
        transaction_id,
        expires_at,
    };
    insert_key(conn, ctx, &key, &outcome)?;
    record_seq(conn, ctx, op.terminal_seq().get())?;
    Ok(outcome)
}

/// What the idempotency record already says of a key: the stored answer for the same
/// request (a replay), 422 for another request, or `None` for a key never seen.
fn known_key(
    conn: &Connection,
    ctx: &Ctx<'_>,
    crid: &str,
    request_sha256: &str,
) -> Result<Option<Outcome>, StoreError> {
    let stored: Option<(String, String, u16, String)> = conn
        .prepare_cached(
            "SELECT request_sha256, operation, status_code, response_body FROM idempotency_keys
             WHERE client_request_id = ?1",
        )?
        .query_row([crid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    match rules::check_key(stored.as_ref().map(|s| s.0.as_str()), request_sha256) {
        KeyCheck::Replay => {
            let (_, operation, status_code, body) =
                stored.ok_or_else(|| internal("replay without a key"))?;
            let decided = outcome::decode(&operation, &StoredAnswer { status_code, body })
                .map_err(internal)?;
            Ok(Some(Outcome {
                decided,
                replayed: true,
            }))
        }
        KeyCheck::Reused => Ok(Some(Outcome::declined(rules::key_reused(), ctx.request_id))),
        KeyCheck::Fresh => Ok(None),
    }
}

/// An idempotency record to write with its outcome.
struct NewKey<'a> {
    client_request_id: &'a str,
    /// `order`, `recharge`, `void` or `shift`.
    operation: &'static str,
    request_sha256: &'a str,
    /// Set for an applied operation or a recorded close-out, whose key is kept forever.
    transaction_id: Option<String>,
    /// Set for a decline, whose key expires.
    expires_at: Option<String>,
}

fn insert_key(
    conn: &Connection,
    ctx: &Ctx<'_>,
    key: &NewKey<'_>,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let stored = outcome::encode(&outcome.decided).map_err(internal)?;
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
             status_code, response_body, transaction_id, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        key.client_request_id,
        ctx.terminal.terminal_id.to_string(),
        key.operation,
        key.request_sha256,
        stored.status_code,
        stored.body,
        key.transaction_id,
        format_time(ctx.now),
        key.expires_at
    ])?;
    Ok(())
}

/// Records a shift close-out inside the writer's savepoint: the close-out row, its audit log
/// row and its idempotency record, or (for a replay or a refusal) nothing at all.
fn record_shift(
    conn: &Connection,
    ctx: &Ctx<'_>,
    shift: &ShiftCloseout,
) -> Result<Outcome, StoreError> {
    let crid = shift.client_request_id.to_string();
    let hash = request_sha256(ctx.terminal, shift)?;
    if let Some(known) = known_key(conn, ctx, &crid, &hash)? {
        return Ok(known);
    }
    let staff = load_staff(conn, &shift.staff_id)?;
    // A close-out records what happened, like an offline operation: the staff member must
    // exist, whatever their role and even if deactivated since.
    if let Err(e) = rules::check_staff(staff.as_ref(), Action::CloseShift, Mode::Offline) {
        return Ok(Outcome::declined(e, ctx.request_id));
    }
    let difference = shift.difference().map_err(internal)?;
    let shift_id = new_transaction_id();
    let now = format_time(ctx.now);
    let (opened_at, closed_at) = (format_time(shift.opened_at), format_time(shift.closed_at));
    let (first_seq, last_seq) = (
        shift.first_seq.map(TerminalSeq::get),
        shift.last_seq.map(TerminalSeq::get),
    );
    conn.prepare_cached(
        "INSERT INTO shift_closeouts (shift_id, client_request_id, terminal_id, staff_id, opened_at,
             closed_at, first_seq, last_seq, cash_cents, card_cents, count, counted_cash_cents,
             difference_cents, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        shift_id.to_string(),
        crid,
        ctx.terminal.terminal_id.to_string(),
        shift.staff_id.as_str(),
        opened_at,
        closed_at,
        first_seq,
        last_seq,
        shift.cash_cents.get(),
        shift.card_cents.get(),
        shift.count,
        shift.counted_cash_cents.get(),
        difference.get(),
        now
    ])?;
    let answer = Answer::Shift(ShiftRecorded {
        shift_id,
        client_request_id: shift.client_request_id,
        terminal: ctx.terminal.name.clone(),
        staff_id: shift.staff_id.clone(),
        cash_cents: shift.cash_cents,
        card_cents: shift.card_cents,
        count: shift.count,
        counted_cash_cents: shift.counted_cash_cents,
        difference_cents: difference,
        recorded_at: now,
    });
    let details = json!({
        "opened_at": opened_at,
        "closed_at": closed_at,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "cash_cents": shift.cash_cents.get(),
        "card_cents": shift.card_cents.get(),
        "count": shift.count,
        "counted_cash_cents": shift.counted_cash_cents.get(),
        "difference_cents": difference.get(),
    });
    insert_log(
        conn,
        ctx,
        &LogRow {
            staff_id: shift.staff_id.as_str(),
            operation: "shift",
            client_request_id: &crid,
            transaction_id: Some(shift_id.to_string()),
            card_uid: None,
            amount_cents: None,
            outcome: "recorded",
            error_code: None,
            details: Some(details),
        },
    )?;
    let outcome = Outcome::approved(answer);
    let key = NewKey {
        client_request_id: &crid,
        operation: "shift",
        request_sha256: &hash,
        transaction_id: Some(shift_id.to_string()),
        expires_at: None,
    };
    insert_key(conn, ctx, &key, &outcome)?;
    Ok(outcome)
}

/// True when this terminal voided `crid` before it arrived. Another terminal's void does
/// not count: a terminal may only void its own operations.
fn is_tombstoned(conn: &Connection, crid: &str, terminal_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM voids WHERE target_client_request_id = ?1 AND terminal_id = ?2",
        )?
        .query_row([crid, terminal_id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn load_staff(conn: &Connection, id: &StaffId) -> Result<Option<StaffMember>, StoreError> {
    let row: Option<(String, bool)> = conn
        .prepare_cached("SELECT role, active FROM staff WHERE staff_id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(role, active)| {
        let role =
            StaffRole::parse(&role).ok_or_else(|| internal(format!("bad staff role {role}")))?;
        Ok(StaffMember { role, active })
    })
    .transpose()
}

fn load_card(conn: &Connection, uid: &CardUid) -> Result<Option<CardState>, StoreError> {
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
fn write_card(
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

fn post(
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

fn card_account(uid: &CardUid) -> String {
    format!("card:{uid}")
}

fn flags_json(flags: &[Flag]) -> Result<String, StoreError> {
    serde_json::to_string(flags).map_err(internal)
}

fn neg(c: Cents) -> Result<Cents, StoreError> {
    c.checked_neg().map_err(internal)
}

fn apply_order(conn: &Connection, ctx: &Ctx<'_>, r: &OrderRequest) -> Result<Decided, StoreError> {
    let card = load_card(conn, &r.card_uid)?;
    let pos = &ctx.terminal.point_of_sale;
    let mut prices: HashMap<ProductId, Cents> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT price_cents FROM products WHERE point_of_sale = ?1 AND product_id = ?2 AND active = 1",
        )?;
        for item in &r.items {
            if let Some(p) = stmt
                .query_row([pos.as_str(), item.product_id.as_str()], |row| {
                    row.get::<_, i64>(0)
                })
                .optional()?
            {
                prices.insert(item.product_id.clone(), Cents::new(p));
            }
        }
    }
    let change = match rules::decide_order(r, card, |p| prices.get(p).copied()) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let now = format_time(ctx.now);
    let transaction_id = new_transaction_id();
    write_card(conn, &r.card_uid, change.create_card, &change.next, &now)?;
    let answer = approval(
        transaction_id,
        r.client_request_id,
        &r.card_uid,
        Some(r.total_cents),
        None,
        &change,
        &now,
    );
    conn.prepare_cached(
        "INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq, point_of_sale,
             card_uid, staff_id, total_cents, mode, flags, previous_balance_cents, new_balance_cents,
             created_at, processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        transaction_id.to_string(),
        r.client_request_id.to_string(),
        ctx.terminal.terminal_id.to_string(),
        r.terminal_seq.get(),
        pos,
        r.card_uid.as_str(),
        r.staff_id.as_str(),
        r.total_cents.get(),
        r.mode.as_str(),
        flags_json(&change.flags)?,
        change.previous.balance.get(),
        change.next.balance.get(),
        format_time(r.created_at),
        now
    ])?;
    {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity, unit_price_cents,
                 catalog_price_cents, line_total_cents)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (line_no, item) in r.items.iter().enumerate() {
            let catalog = prices.get(&item.product_id).copied();
            let differs = catalog
                .filter(|c| *c != item.unit_price_cents)
                .map(Cents::get);
            let differs = if catalog.is_none() { None } else { differs };
            let line_total = item
                .unit_price_cents
                .checked_mul(item.quantity)
                .map_err(internal)?;
            stmt.execute(params![
                transaction_id.to_string(),
                i64::try_from(line_no).map_err(internal)?,
                item.product_id.as_str(),
                item.quantity,
                item.unit_price_cents.get(),
                differs,
                line_total.get()
            ])?;
        }
    }
    post(
        conn,
        &transaction_id,
        &[
            (card_account(&r.card_uid), neg(r.total_cents)?),
            (format!("revenue:{pos}"), r.total_cents),
        ],
        &now,
    )?;
    Ok(Ok(Applied {
        transaction_id,
        card_uid: Some(r.card_uid.clone()),
        amount_cents: Some(r.total_cents),
        outcome: "approved",
        answer,
    }))
}

fn funding_account(method: PaymentMethod, pos: &str) -> String {
    match method {
        PaymentMethod::Cash => format!("cash:{pos}"),
        PaymentMethod::Card => format!("card_payments:{pos}"),
    }
}

fn apply_recharge(
    conn: &Connection,
    ctx: &Ctx<'_>,
    r: &RechargeRequest,
) -> Result<Decided, StoreError> {
    let card = load_card(conn, &r.card_uid)?;
    let change = match rules::decide_recharge(r, card, ctx.limits) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let pos = &ctx.terminal.point_of_sale;
    let now = format_time(ctx.now);
    let transaction_id = new_transaction_id();
    write_card(conn, &r.card_uid, change.create_card, &change.next, &now)?;
    let answer = approval(
        transaction_id,
        r.client_request_id,
        &r.card_uid,
        None,
        Some(r.amount_cents),
        &change,
        &now,
    );
    conn.prepare_cached(
        "INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq, point_of_sale,
             card_uid, staff_id, amount_cents, payment_method, mode, flags, previous_balance_cents,
             new_balance_cents, created_at, processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        transaction_id.to_string(),
        r.client_request_id.to_string(),
        ctx.terminal.terminal_id.to_string(),
        r.terminal_seq.get(),
        pos,
        r.card_uid.as_str(),
        r.staff_id.as_str(),
        r.amount_cents.get(),
        r.payment_method.as_str(),
        r.mode.as_str(),
        flags_json(&change.flags)?,
        change.previous.balance.get(),
        change.next.balance.get(),
        format_time(r.created_at),
        now
    ])?;
    post(
        conn,
        &transaction_id,
        &[
            (card_account(&r.card_uid), r.amount_cents),
            (funding_account(r.payment_method, pos), neg(r.amount_cents)?),
        ],
        &now,
    )?;
    Ok(Ok(Applied {
        transaction_id,
        card_uid: Some(r.card_uid.clone()),
        amount_cents: Some(r.amount_cents),
        outcome: "approved",
        answer,
    }))
}

fn approval(
    transaction_id: Uuid,
    client_request_id: ClientRequestId,
    card_uid: &CardUid,
    total_cents: Option<Cents>,
    amount_cents: Option<Cents>,
    change: &BalanceChange,
    now: &str,
) -> Answer {
    Answer::Approval(Approval {
        transaction_id,
        client_request_id,
        status: "approved",
        card_uid: card_uid.clone(),
        total_cents,
        amount_cents,
        previous_balance_cents: change.previous.balance,
        new_balance_cents: change.next.balance,
        card_status: change.next.status,
        processed_at: now.to_owned(),
        flags: change.flags.clone(),
    })
}

/// An applied order or top-up that a void can reverse.
struct Target {
    kind: &'static str,
    table: &'static str,
    transaction_id: String,
    terminal_id: String,
    card_uid: String,
    /// Money that goes back to the card: + for an order, - for a top-up.
    delta: Cents,
    /// Where the money came from or went to.
    other_account: String,
}

/// What a void's target is.
enum TargetLookup {
    /// Never applied (unknown, or declined): the void becomes a tombstone.
    NotApplied,
    /// The target is itself a void.
    AVoid,
    /// The target is a shift close-out, which moved no money.
    AShift,
    /// An applied order or top-up.
    Applied(Target),
}

fn find_target(conn: &Connection, crid: &str) -> Result<TargetLookup, StoreError> {
    let key: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT operation, transaction_id FROM idempotency_keys
             WHERE client_request_id = ?1 AND transaction_id IS NOT NULL",
        )?
        .query_row([crid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((operation, transaction_id)) = key else {
        return Ok(TargetLookup::NotApplied);
    };
    let (table, sql) = match operation.as_str() {
        "order" => (
            "bar_orders",
            "SELECT terminal_id, point_of_sale, card_uid, total_cents, 'revenue' FROM bar_orders
             WHERE transaction_id = ?1",
        ),
        "recharge" => (
            "recharges",
            "SELECT terminal_id, point_of_sale, card_uid, -amount_cents, payment_method FROM recharges
             WHERE transaction_id = ?1",
        ),
        "shift" => return Ok(TargetLookup::AShift),
        _ => return Ok(TargetLookup::AVoid),
    };
    let (terminal_id, pos, card_uid, delta, source): (String, String, String, i64, String) = conn
        .prepare_cached(sql)?
        .query_row([&transaction_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?
        .ok_or_else(|| {
            internal(format!(
                "key {crid} names transaction {transaction_id}, which is missing"
            ))
        })?;
    let other_account = match source.as_str() {
        "revenue" => format!("revenue:{pos}"),
        "card" => funding_account(PaymentMethod::Card, &pos),
        _ => funding_account(PaymentMethod::Cash, &pos),
    };
    Ok(TargetLookup::Applied(Target {
        kind: if table == "bar_orders" {
            "order"
        } else {
            "recharge"
        },
        table,
        transaction_id,
        terminal_id,
        other_account,
        card_uid,
        delta: Cents::new(delta),
    }))
}

fn apply_void(conn: &Connection, ctx: &Ctx<'_>, r: &VoidRequest) -> Result<Decided, StoreError> {
    let target_crid = r.target_client_request_id.to_string();
    let my_terminal = ctx.terminal.terminal_id.to_string();
    let target = match find_target(conn, &target_crid)? {
        TargetLookup::AVoid => {
            return Ok(Err(ApiError::with_details(
                ErrorCode::InvalidRequest,
                "a void cannot be voided",
                json!({ "field": "target_client_request_id" }),
            )));
        }
        TargetLookup::AShift => {
            return Ok(Err(ApiError::with_details(
                ErrorCode::InvalidRequest,
                "a shift close-out cannot be voided",
                json!({ "field": "target_client_request_id" }),
            )));
        }
        TargetLookup::NotApplied => None,
        TargetLookup::Applied(t) => Some(t),
    };
    if target
        .as_ref()
        .is_some_and(|t| t.terminal_id != my_terminal)
    {
        return Ok(Err(ApiError::new(
            ErrorCode::Forbidden,
            "a terminal may only void its own operations",
        )));
    }
    if is_tombstoned(conn, &target_crid, &my_terminal)? {
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyVoided,
            "this operation is already voided",
        )));
    }
    let now = format_time(ctx.now);
    let transaction_id = new_transaction_id();
    let (status, card_uid, change, refunded, kind) = match &target {
        Some(t) => {
            let uid = CardUid::parse(&t.card_uid).map_err(internal)?;
            let card =
                load_card(conn, &uid)?.ok_or_else(|| internal("an operation's card is missing"))?;
            let change = match rules::decide_reversal(card, t.delta) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            write_card(conn, &uid, false, &change.next, &now)?;
            post(
                conn,
                &transaction_id,
                &[
                    (card_account(&uid), t.delta),
                    (t.other_account.clone(), neg(t.delta)?),
                ],
                &now,
            )?;
            let sql = format!(
                "UPDATE {} SET voided_by = ?2 WHERE transaction_id = ?1",
                t.table
            );
            conn.prepare_cached(&sql)?
                .execute(params![t.transaction_id, r.client_request_id.to_string()])?;
            (
                "voided",
                Some(uid),
                Some(change),
                Some(t.delta),
                Some(t.kind),
            )
        }
        None => ("tombstoned", None, None, None, None),
    };
    let answer = Answer::Void(VoidOutcome {
        transaction_id,
        client_request_id: r.client_request_id,
        status,
        target_client_request_id: r.target_client_request_id,
        card_uid: card_uid.clone(),
        refunded_cents: refunded,
        previous_balance_cents: change.as_ref().map(|c| c.previous.balance),
        new_balance_cents: change.as_ref().map(|c| c.next.balance),
        card_status: change.as_ref().map(|c| c.next.status),
        processed_at: now.clone(),
        flags: change.as_ref().map(|c| c.flags.clone()).unwrap_or_default(),
    });
    conn.prepare_cached(
        "INSERT INTO voids (transaction_id, client_request_id, terminal_id, terminal_seq, target_client_request_id,
             target_kind, staff_id, reason, status, card_uid, refunded_cents, previous_balance_cents,
             new_balance_cents, flags, created_at, processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        transaction_id.to_string(),
        r.client_request_id.to_string(),
        my_terminal,
        r.terminal_seq.get(),
        target_crid,
        kind,
        r.staff_id.as_str(),
        r.reason.as_str(),
        status,
        card_uid.as_ref().map(CardUid::as_str),
        refunded.map(Cents::get),
        change.as_ref().map(|c| c.previous.balance.get()),
        change.as_ref().map(|c| c.next.balance.get()),
        flags_json(&change.as_ref().map(|c| c.flags.clone()).unwrap_or_default())?,
        format_time(r.created_at),
        now
    ])?;
    Ok(Ok(Applied {
        transaction_id,
        card_uid,
        amount_cents: refunded,
        outcome: status,
        answer,
    }))
}

fn log_operation(
    conn: &Connection,
    ctx: &Ctx<'_>,
    op: &Operation,
    applied: Option<&Applied>,
    declined: Option<&ApiError>,
) -> Result<(), StoreError> {
    let card_uid = match op {
        Operation::Order(r) => Some(r.card_uid.clone()),
        Operation::Recharge(r) => Some(r.card_uid.clone()),
        Operation::Void(_) => applied.and_then(|a| a.card_uid.clone()),
    };
    let amount = match op {
        Operation::Order(r) => Some(r.total_cents),
        Operation::Recharge(r) => Some(r.amount_cents),
        Operation::Void(_) => applied.and_then(|a| a.amount_cents),
    };
    let details = match op {
        Operation::Void(r) => Some(
            json!({ "target_client_request_id": r.target_client_request_id, "reason": r.reason.as_str() }),
        ),
        Operation::Order(r) => {
            Some(json!({ "mode": r.mode.as_str(), "terminal_seq": r.terminal_seq.get() }))
        }
        Operation::Recharge(r) => Some(
            json!({ "mode": r.mode.as_str(), "payment_method": r.payment_method.as_str(), "terminal_seq": r.terminal_seq.get() }),
        ),
    };
    let details = match (details, declined.and_then(|d| d.details.clone())) {
        (Some(mut d), Some(extra)) => {
            if let Some(m) = d.as_object_mut() {
                m.insert("decline".into(), extra);
            }
            Some(d)
        }
        (d, _) => d,
    };
    insert_log(
        conn,
        ctx,
        &LogRow {
            staff_id: op.staff_id().as_str(),
            operation: op.kind_str(),
            client_request_id: &op.client_request_id().to_string(),
            transaction_id: applied.map(|a| a.transaction_id.to_string()),
            card_uid: card_uid.as_ref().map(CardUid::as_str),
            amount_cents: amount,
            outcome: applied.map_or("declined", |a| a.outcome),
            error_code: declined.map(|d| d.code.as_str()),
            details,
        },
    )
}

/// One row of the audit trail written by a terminal's request.
struct LogRow<'a> {
    staff_id: &'a str,
    /// `order`, `recharge`, `void` or `shift`.
    operation: &'static str,
    client_request_id: &'a str,
    transaction_id: Option<String>,
    card_uid: Option<&'a str>,
    amount_cents: Option<Cents>,
    /// `approved`, `declined`, `voided`, `tombstoned`, `recorded`.
    outcome: &'static str,
    error_code: Option<&'static str>,
    details: Option<serde_json::Value>,
}

fn insert_log(conn: &Connection, ctx: &Ctx<'_>, row: &LogRow<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation, client_request_id,
             transaction_id, card_uid, amount_cents, outcome, error_code, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        format_time(ctx.now),
        ctx.request_id,
        format!("terminal:{}", ctx.terminal.name),
        row.staff_id,
        row.operation,
        row.client_request_id,
        row.transaction_id,
        row.card_uid,
        row.amount_cents.map(Cents::get),
        row.outcome,
        row.error_code,
        row.details.as_ref().map(ToString::to_string)
    ])?;
    Ok(())
}

/// The new highest contiguous sequence number after receiving `seq`, given the received
/// numbers above the old mark (sorted ascending).
pub fn advance_contiguous(contiguous: i64, seq: i64, above: &[i64]) -> i64 {
    if seq != contiguous + 1 {
        return contiguous;
    }
    let mut mark = seq;
    for &s in above {
        if s == mark + 1 {
            mark = s;
        } else if s > mark + 1 {
            break;
        }
    }
    mark
}

fn record_seq(conn: &Connection, ctx: &Ctx<'_>, seq: i64) -> Result<(), StoreError> {
    let id = ctx.terminal.terminal_id.to_string();
    // The usual case in one statement: a terminal in step sends the next number, and
    // nothing was received above it.
    let in_step = conn
        .prepare_cached(
            "UPDATE terminals SET highest_contiguous_seq = ?2, highest_seen_seq = ?2, last_seen_at = ?3
             WHERE terminal_id = ?1 AND highest_contiguous_seq = ?2 - 1 AND highest_seen_seq < ?2",
        )?
        .execute(params![id, seq, format_time(ctx.now)])?;
    if in_step == 1 {
        return Ok(());
    }
    let (contiguous, seen): (i64, i64) = conn
        .prepare_cached(
            "SELECT highest_contiguous_seq, highest_seen_seq FROM terminals WHERE terminal_id = ?1",
        )?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut mark = contiguous;
    if seq == contiguous + 1 {
        let above: Vec<i64> = conn
            .prepare_cached(
                "SELECT terminal_seq FROM terminal_seqs WHERE terminal_id = ?1 AND terminal_seq > ?2
                 ORDER BY terminal_seq LIMIT 10000",
            )?
            .query_map(params![id, seq], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        mark = advance_contiguous(contiguous, seq, &above);
        conn.prepare_cached(
            "DELETE FROM terminal_seqs WHERE terminal_id = ?1 AND terminal_seq <= ?2",
        )?
        .execute(params![id, mark])?;
    } else if seq > contiguous {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO terminal_seqs (terminal_id, terminal_seq) VALUES (?1, ?2)",
        )?
        .execute(params![id, seq])?;
    }
    conn.prepare_cached(
        "UPDATE terminals SET highest_contiguous_seq = ?2, highest_seen_seq = ?3, last_seen_at = ?4
         WHERE terminal_id = ?1",
    )?
    .execute(params![id, mark, seen.max(seq), format_time(ctx.now)])?;
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
        let limits = self.inner.limits;
        let retention_days = self.inner.retention_days;
        self.write(move |conn| {
            let ctx = Ctx { terminal: &terminal, request_id: &request_id, now: Utc::now(), limits, retention_days };
            if let [op] = operations.as_slice() {
                // Alone, the operation is the job: the job's savepoint makes it all-or-nothing.
                return Ok(vec![process(conn, &ctx, op)?]);
            }
            let mut outcomes = Vec::with_capacity(operations.len());
            for op in &operations {
                // Each operation of a batch is all-or-nothing on its own.
                exec_cached(conn, "SAVEPOINT op")?;
                match process(conn, &ctx, op) {
                    Ok(outcome) => {
                        exec_cached(conn, "RELEASE op")?;
                        outcomes.push(outcome);
                    }
                    Err(e) => {
                        exec_cached(conn, "ROLLBACK TO op")?;
                        exec_cached(conn, "RELEASE op")?;
                        tracing::error!(error = %e, client_request_id = %op.client_request_id(), "operation failed");
                        let code = match e {
                            StoreError::Unavailable(_) => ErrorCode::DatabaseError,
                            _ => ErrorCode::ServerError,
                        };
                        outcomes.push(Outcome::declined(ApiError::new(code, "the operation could not be stored; retry"), &request_id));
                    }
                }
            }
            Ok(outcomes)
        })
        .await
    }

    async fn record_shift(
        &self,
        terminal: Terminal,
        request_id: String,
        shift: ShiftCloseout,
    ) -> Result<Outcome, StoreError> {
        let limits = self.inner.limits;
        let retention_days = self.inner.retention_days;
        self.write(move |conn| {
            let ctx = Ctx {
                terminal: &terminal,
                request_id: &request_id,
                now: Utc::now(),
                limits,
                retention_days,
            };
            record_shift(conn, &ctx, &shift)
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
    fn contiguous_mark_advances_over_received_numbers() {
        let cases: &[(i64, i64, &[i64], i64)] = &[
            (0, 1, &[], 1),
            (0, 2, &[], 0),
            (0, 1, &[2, 3, 5], 3),
            (3, 4, &[5, 6, 7], 7),
            (3, 3, &[5], 3),
            (3, 9, &[], 3),
        ];
        for &(contiguous, seq, above, expected) in cases {
            assert_eq!(
                advance_contiguous(contiguous, seq, above),
                expected,
                "{contiguous} {seq} {above:?}"
            );
        }
    }

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
