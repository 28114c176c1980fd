//! The terminal's journal: the durable record of every money-changing operation, the card
//! replica, and the caches that let a terminal work after a restart without network.
//!
//! The journal is the terminal's source of truth. Two rules follow from it:
//! - **Nothing is shown as approved unless it is durably in the journal.** Every writing
//!   method is one `BEGIN IMMEDIATE ... COMMIT` on a database in WAL mode with
//!   `synchronous=FULL`: when it returns `Ok`, the change is on disk (fsync), and when it
//!   returns an error, nothing of it is visible. (One case no database rules out: if the
//!   commit's own fsync fails, the frames may still reach the disk and reappear after a
//!   restart. The call reports [`JournalError::Io`]; the daemon declines and should treat the
//!   journal as failing.)
//! - **Nothing is deleted before the ledger acknowledged it.** In fact this module never deletes
//!   a journal entry at all; an entry only moves between states ([`EntryState`]).
//!
//! `terminal_seq` is gapless: [`Journal::append`] takes `MAX(terminal_seq) + 1` inside its
//! write transaction, so the number is taken only by a committed row. A failed append takes no
//! number (the next append gets the same one, and the caller never saw an [`Entry`] to send),
//! and a committed number is never handed out again because entries are never deleted.
//!
//! # Errors
//!
//! [`JournalError::Io`] means the file cannot be written (or read): read-only file or
//! directory, permission denied, disk full (`SQLITE_FULL`), an I/O error, or a lock held by
//! another process. The daemon declines the sale with that reason. [`JournalError::Corrupt`]
//! means the file holds something this program does not write (an unknown state spelling, a
//! bad card UID, a damaged page, a newer schema). [`JournalError::Invalid`] is a call the
//! journal refuses (a duplicate `client_request_id`, a forbidden state change, a request body
//! that does not carry the entry's ids): a bug in the caller, and nothing was written. No
//! method panics on what it reads from the file.
//!
//! # Bounds
//!
//! Every list is capped: [`Journal::pending`], [`Journal::in_doubt`],
//! [`Journal::unacknowledged`] (paged by `terminal_seq`) and [`Journal::unuploaded_scans`]
//! take a limit, clamped to [`LIST_LIMIT_MAX`]; the feeds written into the caches are refused
//! above [`FEED_CARDS_MAX`], [`CATALOG_PRODUCTS_MAX`] and [`STAFF_MAX`] rows, so reading a
//! cache back is bounded too. The batch calls ([`Journal::set_states`],
//! [`Journal::record_attempt_failures`]) take at most one ledger batch
//! ([`BATCH_OPERATIONS_MAX`]) and commit it with one fsync.
//!
//! Architecture invariant: this is the only module of the terminal that knows SQL.

mod shifts;
pub use shifts::{ClosedShift, CloseoutState, ShiftSummary};

use crate::domain::{CardUid, Cents, ClientRequestId, ProductId, StaffId, TerminalSeq};
use crate::protocol::api::{
    BATCH_OPERATIONS_MAX, FEED_LIMIT_MAX, Mode, SCANS_MAX, Scan, StaffRole, format_time,
};
use crate::terminal::core::charges::{self, ChargeRow};
pub use crate::terminal::core::entry::{Decision, EntryState, OperationKind};
use crate::terminal::core::policy::ReplicaCard;
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// How long a call waits for a lock held by another process (`cashless terminal status`
/// reading while the daemon writes) before it fails with [`JournalError::Io`].
pub const BUSY_TIMEOUT_MS: u64 = 5000;
/// The most rows one list call returns; larger limits are clamped to it.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// How often an empty card-feed page is recorded (the replica's age), at most.
const EMPTY_FEED_RECORD_MS: i64 = 60_000;
/// The most cards one [`Journal::apply_card_feed`] call takes: one page of the ledger's feed.
pub const FEED_CARDS_MAX: usize = FEED_LIMIT_MAX as usize;
/// The most products a cached catalog holds.
pub const CATALOG_PRODUCTS_MAX: usize = 10_000;
/// The most staff members the staff cache holds.
pub const STAFF_MAX: usize = 10_000;
/// The longest `last_error` or `decline_reason` kept, in bytes; longer text is cut.
pub const TEXT_BYTES_MAX: usize = 1024;
/// The longest card-feed cursor accepted, in bytes.
pub const CURSOR_BYTES_MAX: usize = 1024;

/// The schema migrations, in order. `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/terminal/0001_journal.sql"),
    include_str!("../../migrations/terminal/0002_declines_and_limits.sql"),
    include_str!("../../migrations/terminal/0003_shift_closeouts.sql"),
];

const META_FEED_CURSOR: &str = "feed_cursor";
const META_LAST_FEED_AT: &str = "last_feed_at";
const META_LAST_SYNC_AT: &str = "last_sync_at";
const META_CATALOG_POINT_OF_SALE: &str = "catalog_point_of_sale";
const META_CATALOG_CURRENCY: &str = "catalog_currency";
const META_CATALOG_ETAG: &str = "catalog_etag";
const META_CATALOG_FETCHED_AT: &str = "catalog_fetched_at";
const META_STAFF_FETCHED_AT: &str = "staff_fetched_at";

/// Why a journal call failed. Nothing of a failed write is on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The journal file cannot be written or read: read-only file or directory, permission
    /// denied, disk full (`SQLITE_FULL`), an I/O error, a lock another process holds too long.
    /// The message starts with which of these it is. Decline the sale: it is not on disk.
    #[error("the journal cannot be written: {0}")]
    Io(String),
    /// The file holds data this program does not write: a damaged page, an unknown spelling,
    /// an invalid card UID, a schema newer than this program.
    #[error("the journal holds unexpected data: {0}")]
    Corrupt(String),
    /// The journal refused the call (duplicate `client_request_id`, unknown `terminal_seq`,
    /// a forbidden state change, a request body without the entry's ids, a feed too large).
    /// A bug in the caller; nothing was written.
    #[error("the journal refused the call: {0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> JournalError {
        classify(e)
    }
}

/// Sorts SQLite's failures into what the daemon can do about them.
fn classify(e: rusqlite::Error) -> JournalError {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(failure, _) = &e else {
        // Type mismatches and failed conversions: a column holds what this program never writes.
        return JournalError::Corrupt(e.to_string());
    };
    let what = match failure.code {
        C::DiskFull => "disk full",
        C::ReadOnly => "read-only",
        C::PermissionDenied => "permission denied",
        C::CannotOpen => "cannot open the file",
        C::SystemIoFailure => "I/O error",
        C::DatabaseBusy | C::DatabaseLocked => "locked by another process",
        C::OutOfMemory => "out of memory",
        C::NoLargeFileSupport => "file too large",
        C::ConstraintViolation | C::TooBig => {
            return JournalError::Invalid(format!("refused by the schema: {e}"));
        }
        _ => return JournalError::Corrupt(e.to_string()),
    };
    JournalError::Io(format!("{what}: {e}"))
}

fn corrupt(what: impl fmt::Display) -> JournalError {
    JournalError::Corrupt(what.to_string())
}

fn invalid(what: impl fmt::Display) -> JournalError {
    JournalError::Invalid(what.to_string())
}

/// A new journal entry, as the daemon decides it before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The idempotency key, generated before anything is written.
    pub client_request_id: ClientRequestId,
    /// Order, top-up or void.
    pub operation: OperationKind,
    /// Online (the ledger decides) or offline (the terminal decided).
    pub mode: Mode,
    /// The card, when known.
    pub card_uid: Option<CardUid>,
    /// Signed effect on the card as this terminal sees it: an order `-total` (never positive),
    /// a top-up `+amount` (never negative), a void `+refund` (or `-amount` for a reversed
    /// top-up), 0 when unknown. [`Journal::local_charges`] sums it.
    pub amount_cents: Cents,
    /// The decision, when already taken (offline); `None` while the ledger is being asked.
    pub decision: Option<Decision>,
    /// Why declined, if declined (`INSUFFICIENT_FUNDS`, ...).
    pub decline_reason: Option<String>,
    /// The state it starts in; usually `pending`.
    pub state: EntryState,
}

/// One settlement for [`Journal::set_states`]: the arguments of [`Journal::set_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange<'a> {
    /// The entry.
    pub seq: TerminalSeq,
    /// Its new state.
    pub state: EntryState,
    /// Replaces the decision when `Some`.
    pub decision: Option<Decision>,
    /// Replaces the decline reason when `Some`.
    pub reason: Option<&'a str>,
    /// The ledger's answer (HTTP status, body); replaces the stored one when `Some`.
    pub ledger: Option<(u16, &'a str)>,
}

/// A journal entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1, 2, 3, ... with no gaps.
    pub terminal_seq: TerminalSeq,
    /// The idempotency key.
    pub client_request_id: ClientRequestId,
    /// Order, top-up or void.
    pub operation: OperationKind,
    /// Online or offline.
    pub mode: Mode,
    /// The exact ledger request body (JSON text), which embeds `client_request_id` and
    /// `terminal_seq`; replay sends these bytes.
    pub request_json: String,
    /// The card, when known.
    pub card_uid: Option<CardUid>,
    /// Signed effect on the card as this terminal sees it (see [`NewEntry::amount_cents`]).
    pub amount_cents: Cents,
    /// Where it stands with the ledger.
    pub state: EntryState,
    /// What was shown, once decided.
    pub decision: Option<Decision>,
    /// Why declined.
    pub decline_reason: Option<String>,
    /// Sends so far: failed ones ([`Journal::record_attempt_failure`]) and answered ones
    /// ([`Journal::set_state`] with the ledger's answer).
    pub attempts: u32,
    /// The last failed send, for status and export.
    pub last_error: Option<String>,
    /// The HTTP status of the ledger's answer that settled it.
    pub ledger_status: Option<u16>,
    /// The body of that answer.
    pub ledger_body: Option<String>,
    /// When journaled.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it became `synced`; set exactly for synced entries.
    pub synced_at: Option<DateTime<Utc>>,
}

impl Entry {
    /// The request body parsed, for a batch.
    pub fn request(&self) -> Result<Value, JournalError> {
        serde_json::from_str(&self.request_json).map_err(|e| {
            corrupt(format!(
                "entry {}: request_json: {e}",
                self.terminal_seq.get()
            ))
        })
    }
}

/// [`Journal::status_counts`]'s statement. The states are spelled out (`IN` over the
/// index's leading column, not `<> 'synced'`) so that each count is a range of
/// `journal_state`; the close-outs' `state = 'pending'` matches the partial index's `WHERE`.
const STATUS_COUNTS_SQL: &str = "SELECT
     (SELECT COUNT(*) FROM journal WHERE state = 'pending'),
     (SELECT COUNT(*) FROM journal WHERE state IN ('in_doubt', 'sending')),
     (SELECT COUNT(*) FROM journal WHERE state = 'rejected'),
     (SELECT value FROM replica_meta WHERE key = ?1),
     (SELECT value FROM replica_meta WHERE key = ?2),
     (SELECT COUNT(*) FROM offline_declines),
     (SELECT COUNT(*) FROM shift_closeouts WHERE state = 'pending')";

/// The journal's state at a glance, for `cashless terminal status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Entries waiting to be sent or replayed.
    pub pending: u64,
    /// Online attempts without an answer.
    pub in_doubt: u64,
    /// Entries the ledger refused for good.
    pub rejected: u64,
    /// Entries the ledger acknowledged.
    pub synced: u64,
    /// The highest `terminal_seq` journaled.
    pub last_seq: Option<TerminalSeq>,
    /// The last successful contact with the ledger's write side: an entry became synced, or
    /// [`Journal::record_sync`].
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The last card-feed page applied: the replica's age.
    pub last_feed_at: Option<DateTime<Utc>>,
    /// Operations this terminal declined on its own while offline (never sent).
    pub declined_offline: u64,
    /// Shift close-outs the ledger has not recorded yet.
    pub closeouts_pending: u64,
}

/// What the status line needs of the journal ([`Journal::status_counts`]): [`Counts`]
/// without what grows all festival (the synced entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    /// Entries waiting to be sent or replayed.
    pub pending: u64,
    /// Online attempts without an answer.
    pub in_doubt: u64,
    /// Entries the ledger refused for good.
    pub rejected: u64,
    /// As [`Counts::last_sync_at`].
    pub last_sync_at: Option<DateTime<Utc>>,
    /// As [`Counts::last_feed_at`].
    pub last_feed_at: Option<DateTime<Utc>>,
    /// Operations this terminal declined on its own while offline (never sent).
    pub declined_offline: u64,
    /// Shift close-outs the ledger has not recorded yet.
    pub closeouts_pending: u64,
}

/// An operation declined offline, for [`Journal::record_decline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclineRecord {
    /// Its own key, so that the record can be named (it is never sent).
    pub client_request_id: ClientRequestId,
    /// Order or top-up.
    pub operation: OperationKind,
    /// The card.
    pub card_uid: CardUid,
    /// The signed effect it would have had (order `-total`, top-up `+amount`).
    pub amount_cents: Cents,
    /// Why (`INSUFFICIENT_FUNDS`, `OFFLINE_LIMIT`, ...).
    pub reason: String,
    /// Who armed it.
    pub staff_id: StaffId,
}

/// The ledger's top-up limits, as `GET /v1/terminals/me` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopupLimits {
    /// The largest single top-up.
    pub recharge_max_cents: Cents,
    /// The largest balance a top-up may lead to.
    pub balance_max_cents: Cents,
}

/// One product of the cached catalog; deserializes from `GET /v1/catalog`'s `products`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogProduct {
    /// The catalog's product id.
    pub product_id: ProductId,
    /// Name on the screen.
    pub name: String,
    /// Unit price.
    pub price_cents: Cents,
    /// Grouping on the screen.
    #[serde(default)]
    pub category: Option<String>,
}

/// The catalog of this terminal's point of sale; deserializes from `GET /v1/catalog`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The point of sale it belongs to.
    pub point_of_sale: String,
    /// The festival's currency, for display.
    pub currency: String,
    /// The products, in the ledger's (menu) order.
    pub products: Vec<CatalogProduct>,
}

/// A staff member for offline login; deserializes from `GET /v1/staff`'s `staff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedStaff {
    /// Id.
    pub staff_id: StaffId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: StaffRole,
    /// Inactive staff cannot log in.
    pub active: bool,
    /// argon2 PHC string of the PIN.
    pub pin_hash: String,
}

/// A scan from the scan log, with its local id for [`Journal::mark_scans_uploaded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedScan {
    /// Local id, increasing.
    pub id: i64,
    /// The scan as uploaded to `POST /v1/scans`.
    pub scan: Scan,
}

/// The journal database. Owns one connection; not `Sync` (the daemon wraps it).
pub struct Journal {
    /// The one connection; every method is one statement or one transaction on it.
    conn: Connection,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.conn.path())
            .finish()
    }
}

/// The columns [`entry_from_row`] reads, in its order.
const ENTRY_COLUMNS: &str = "terminal_seq, client_request_id, operation, mode, request_json, \
     card_uid, amount_cents, state, decision, decline_reason, attempts, last_error, \
     ledger_status, ledger_body, created_at, updated_at, synced_at";

/// [`Journal::local_charges`]'s candidate rows: the card's entries but those synced strictly
/// before the last pull (`?2`, `NULL` before any; times sort as text). Declined and undecided
/// entries are left to the rule, which [`charge_row`] feeds.
const LOCAL_CHARGES_SQL: &str = "SELECT terminal_seq, state, decision, amount_cents, synced_at
     FROM journal
     WHERE card_uid = ?1 AND (state <> 'synced' OR ?2 IS NULL OR synced_at >= ?2)";

impl Journal {
    /// Opens the journal for reading and writing, creating and migrating it if needed.
    ///
    /// A write-protected file (`chmod 0444`, a read-only mount) is opened as by
    /// [`Journal::open_read_only`]: reads work, and every write fails with
    /// [`JournalError::Io`] (`read-only`), so a daemon on an unwritable journal still starts,
    /// shows its status and declines every sale with that reason.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Journal::open_read_write(path, None)
    }

    /// Test hook: [`Journal::open`], then `PRAGMA max_page_count = max_pages` on this
    /// connection, so that a write that needs the file to grow beyond `max_pages` pages fails
    /// with `SQLITE_FULL`, exactly as on a full disk ([`JournalError::Io`], `disk full`). The
    /// limit is never below the file's current size and lasts as long as this `Journal`.
    /// Not for production use.
    pub fn open_with_max_pages(path: &Path, max_pages: u32) -> Result<Journal, JournalError> {
        Journal::open_read_write(path, Some(max_pages))
    }

    /// Opens an existing journal read-only (`SQLITE_OPEN_READONLY` and `PRAGMA query_only`),
    /// for `cashless terminal status` and `export`, which must change nothing, and for tests
    /// of an unwritable journal where `chmod` cannot stop the writer (root). Every write
    /// fails with [`JournalError::Io`]. The schema must be this program's: it is not migrated.
    ///
    /// SQLite reads a WAL database through its `-shm` file, which it cannot create in a
    /// read-only directory. When that file is missing and the write-ahead log is absent or
    /// empty (the last writer closed cleanly, so the database file holds everything), the
    /// file is read as `immutable`; with a non-empty log and no way to index it, the open
    /// fails with [`JournalError::Io`] rather than show a journal without its last entries.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let conn = match connect_read_only(path, false) {
            // Without write access to the directory SQLite cannot create `-shm` (and on a
            // read-only mount, where creating `-wal` fails with EROFS, the open itself fails
            // with CANTOPEN even though the database file is there).
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_READONLY_CANTINIT
                        | rusqlite::ffi::SQLITE_READONLY_DIRECTORY
                ) || (f.code == rusqlite::ErrorCode::CannotOpen && path.is_file()) =>
            {
                if wal_may_hold_data(path) {
                    return Err(JournalError::Io(format!(
                        "read-only: {}-wal holds entries that cannot be read without write \
                         access to the directory",
                        path.display()
                    )));
                }
                connect_read_only(path, true)?
            }
            other => other?,
        };
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = i64::try_from(MIGRATIONS.len()).map_err(corrupt)?;
        if version != known {
            return Err(corrupt(format!(
                "the journal has schema version {version}, this program reads version {known} \
                 (open it read-write once to migrate it)"
            )));
        }
        Ok(Journal { conn })
    }

    fn open_read_write(path: &Path, max_pages: Option<u32>) -> Result<Journal, JournalError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            // SQLite opens a write-protected file read-only rather than fail; keep it
            // readable, and let every write fail.
            drop(conn);
            return Journal::open_read_only(path);
        }
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        if let Some(pages) = max_pages {
            conn.pragma_update(None, "max_page_count", pages)?;
        }
        Ok(Journal { conn })
    }

    /// True when this handle cannot write (the file or its mount was read-only when it was
    /// opened); [`Journal::open`] again once it may be writable.
    pub fn is_read_only(&self) -> bool {
        self.conn.path().is_none_or(str::is_empty)
            || self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }

    /// Opens `path` again in place of this handle, to write again after the journal's
    /// mount became writable. The old connection is closed first: SQLite shares one
    /// write-ahead-log index per file within a process, and the read-only one would keep
    /// every new connection read-only. Until the new open succeeds, this handle is an
    /// unusable placeholder on which every call fails (and [`Journal::is_read_only`] is
    /// true), so a failed reopen is retried later.
    pub fn reopen(&mut self, path: &Path) -> Result<(), JournalError> {
        let placeholder = Connection::open_in_memory()?;
        drop(std::mem::replace(&mut self.conn, placeholder));
        *self = Journal::open(path)?;
        Ok(())
    }

    /// True when an online attempt is `sending`: being sent right now, or left behind by a
    /// tap whose answer could not be recorded (then [`crate::terminal::tap::recover`] voids it).
    pub fn has_sending(&self) -> Result<bool, JournalError> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM journal WHERE state = 'sending')")?
            .query_row([], |r| r.get(0))
            .map_err(JournalError::from)
    }

    /// Journals a new operation and returns it once it is on disk.
    ///
    /// Inside one `IMMEDIATE` transaction: takes the next `terminal_seq` (`MAX + 1`), asks
    /// `request` for the ledger request body (which must embed that `terminal_seq` and the
    /// entry's `client_request_id` as top-level fields), writes the row, commits (fsync). An
    /// error leaves nothing written and takes no number; the caller must then send nothing and
    /// show no approval. `now` is stored with millisecond precision, as returned.
    ///
    /// Refused ([`JournalError::Invalid`]): a `client_request_id` already journaled, a body
    /// that does not carry the entry's ids, an order with a positive `amount_cents` or a
    /// top-up with a negative one.
    pub fn append(
        &mut self,
        entry: NewEntry,
        request: impl FnOnce(TerminalSeq) -> Value,
        now: DateTime<Utc>,
    ) -> Result<Entry, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let written = insert_entry(&tx, entry, request, now)?;
        tx.commit()?;
        Ok(written)
    }

    /// Marks the online attempt `attempt` in doubt and journals `void` (its void) in one
    /// transaction: a crash or a full disk leaves either both or neither, so an attempt is
    /// never in doubt without its void. The attempt must be `sending` or already `in_doubt`.
    pub fn void_in_doubt(
        &mut self,
        attempt: TerminalSeq,
        void: NewEntry,
        request: impl FnOnce(TerminalSeq) -> Value,
        now: DateTime<Utc>,
    ) -> Result<Entry, JournalError> {
        if void.operation != OperationKind::Void {
            return Err(invalid("the void of an attempt must be a void"));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = state_of(&tx, attempt)?;
        if !matches!(current, EntryState::Sending | EntryState::InDoubt) {
            return Err(invalid(format!(
                "entry {} is {current}; only an attempt being sent can be in doubt",
                attempt.get()
            )));
        }
        tx.prepare_cached(
            "UPDATE journal SET state = 'in_doubt', updated_at = ?2 WHERE terminal_seq = ?1",
        )?
        .execute(params![attempt.get(), format_time(now.trunc_subsecs(3))])?;
        let written = insert_entry(&tx, void, request, now)?;
        tx.commit()?;
        Ok(written)
    }

    /// Moves an entry to `state` (allowed moves: [`EntryState::can_become`]), durably.
    ///
    /// `decision`, `reason` and `ledger` (the answer's HTTP status and body) replace the stored
    /// values when `Some` and keep them when `None`. A ledger answer counts as one attempt.
    /// Becoming `synced` stamps `synced_at` and the journal's `last_sync_at` with `now`.
    /// Refused ([`JournalError::Invalid`]): an unknown `seq`, a forbidden move, a status
    /// outside 100..=599.
    pub fn set_state(
        &mut self,
        seq: TerminalSeq,
        state: EntryState,
        decision: Option<Decision>,
        reason: Option<&str>,
        ledger: Option<(u16, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let change = StateChange {
            seq,
            state,
            decision,
            reason,
            ledger,
        };
        self.set_states(std::slice::from_ref(&change), now)
    }

    /// [`Journal::set_state`] for the results of one batch, in one transaction (one fsync
    /// instead of one per entry, which is what lets a long backlog drain quickly): all of them
    /// or, if any is refused, none. At most [`BATCH_OPERATIONS_MAX`] changes.
    pub fn set_states(
        &mut self,
        changes: &[StateChange<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_batch_len(changes.len())?;
        for change in changes {
            if let Some((status, _)) = change.ledger
                && !(100..=599).contains(&status)
            {
                return Err(invalid(format!("HTTP status {status} out of range")));
            }
        }
        let now_text = format_time(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut synced = false;
        {
            let mut update = tx.prepare_cached(
                "UPDATE journal SET
                     state = ?2,
                     decision = COALESCE(?3, decision),
                     decline_reason = COALESCE(?4, decline_reason),
                     ledger_status = COALESCE(?5, ledger_status),
                     ledger_body = COALESCE(?6, ledger_body),
                     attempts = attempts + ?7,
                     updated_at = ?8,
                     synced_at = CASE WHEN ?2 = 'synced' THEN ?8 END
                 WHERE terminal_seq = ?1",
            )?;
            for change in changes {
                // Read inside the transaction, so a change earlier in the same batch counts.
                let current = state_of(&tx, change.seq)?;
                if !current.can_become(change.state) {
                    return Err(invalid(format!(
                        "entry {} is {current}; it cannot become {}",
                        change.seq.get(),
                        change.state
                    )));
                }
                update.execute(params![
                    change.seq.get(),
                    change.state.as_str(),
                    change.decision.map(Decision::as_str),
                    change.reason.map(|r| bounded(r.to_owned(), TEXT_BYTES_MAX)),
                    change.ledger.map(|(status, _)| status),
                    change.ledger.map(|(_, body)| body),
                    i64::from(change.ledger.is_some()),
                    now_text,
                ])?;
                synced |= change.state == EntryState::Synced;
            }
        }
        if synced {
            set_meta(&tx, META_LAST_SYNC_AT, &now_text)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a send of a `pending` or `in_doubt` entry that got no usable answer: one more
    /// attempt, and `error` (cut to [`TEXT_BYTES_MAX`] bytes) as `last_error`. The state does
    /// not change. Refused for an unknown `seq` or a `synced`/`rejected` entry.
    pub fn record_attempt_failure(
        &mut self,
        seq: TerminalSeq,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.record_attempt_failures(&[seq], error, now)
    }

    /// [`Journal::record_attempt_failure`] for every entry of a batch that failed as a whole
    /// (network down), in one transaction: all of them or none. At most
    /// [`BATCH_OPERATIONS_MAX`] entries.
    pub fn record_attempt_failures(
        &mut self,
        seqs: &[TerminalSeq],
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_batch_len(seqs.len())?;
        let error = bounded(error.to_owned(), TEXT_BYTES_MAX);
        let now_text = format_time(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE journal SET attempts = attempts + 1, last_error = ?2, updated_at = ?3
                 WHERE terminal_seq = ?1",
            )?;
            for &seq in seqs {
                let current = state_of(&tx, seq)?;
                if !matches!(current, EntryState::Pending | EntryState::InDoubt) {
                    return Err(invalid(format!(
                        "entry {} is {current}; it is not sent any more",
                        seq.get()
                    )));
                }
                update.execute(params![seq.get(), error, now_text])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a successful round with the ledger that settled nothing (nothing was pending),
    /// so the status line's "last sync" stays fresh while the terminal is idle and online.
    pub fn record_sync(&mut self, now: DateTime<Utc>) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_meta(&tx, META_LAST_SYNC_AT, &format_time(now))?;
        tx.commit()?;
        Ok(())
    }

    /// One entry.
    pub fn entry(&self, seq: TerminalSeq) -> Result<Option<Entry>, JournalError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM journal WHERE terminal_seq = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([seq.get()])?;
        match rows.next()? {
            Some(row) => entry_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// The `pending` entries in `terminal_seq` order, at most `limit` (clamped to
    /// [`LIST_LIMIT_MAX`]): the next ones to send or replay.
    pub fn pending(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.entries_in_state(EntryState::Pending, limit)
    }

    /// The entry with this `client_request_id`, if any.
    pub fn entry_by_request_id(
        &self,
        crid: ClientRequestId,
    ) -> Result<Option<Entry>, JournalError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM journal WHERE client_request_id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query([crid.to_string()])?;
        Ok(collect_entries(rows)?.into_iter().next())
    }

    /// The `in_doubt` entries in `terminal_seq` order, at most `limit` (clamped).
    pub fn in_doubt(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.entries_in_state(EntryState::InDoubt, limit)
    }

    /// Online attempts being sent (or left so by a crash), in `terminal_seq` order, at most
    /// `limit` (clamped).
    pub fn sending(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.entries_in_state(EntryState::Sending, limit)
    }

    /// `in_doubt` attempts that no journaled void targets (a journal written before the two
    /// were one transaction, and a crash between them), at most `limit` (clamped).
    pub fn in_doubt_without_void(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM journal AS a WHERE a.state = 'in_doubt'
               AND NOT EXISTS (SELECT 1 FROM journal AS v
                               WHERE v.operation = 'void'
                                 -- `+` drops the column's affinity, so that the
                                 -- expression index journal_void_target is searched.
                                 AND json_extract(v.request_json, '$.target_client_request_id')
                                     = +a.client_request_id)
             ORDER BY a.terminal_seq LIMIT ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query(params![sql_limit(limit)])?;
        collect_entries(rows)
    }

    /// Every entry the ledger has not acknowledged (`pending`, `in_doubt`, `rejected`) with a
    /// `terminal_seq` above `after`, in `terminal_seq` order, at most `limit` (clamped): one
    /// page of an export. The next page starts after the last entry returned; a page shorter
    /// than the limit is the last.
    pub fn unacknowledged(
        &self,
        after: Option<TerminalSeq>,
        limit: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM journal
             WHERE terminal_seq > ?1 AND state <> 'synced'
             ORDER BY terminal_seq LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query(params![after.map_or(0, TerminalSeq::get), sql_limit(limit)])?;
        collect_entries(rows)
    }

    fn entries_in_state(
        &self,
        state: EntryState,
        limit: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM journal WHERE state = ?1
             ORDER BY terminal_seq LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query(params![state.as_str(), sql_limit(limit)])?;
        collect_entries(rows)
    }

    /// Entries per state, the highest `terminal_seq`, the last sync and the last feed, read
    /// in one statement (one snapshot). Counting the synced entries reads every entry the
    /// ledger ever acknowledged: for `cashless terminal status`; the status line, asked for
    /// every second, uses [`Journal::status_counts`].
    pub fn counts(&self) -> Result<Counts, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT
                 (SELECT COUNT(*) FROM journal WHERE state = 'pending'),
                 (SELECT COUNT(*) FROM journal WHERE state IN ('in_doubt', 'sending')),
                 (SELECT COUNT(*) FROM journal WHERE state = 'rejected'),
                 (SELECT COUNT(*) FROM journal WHERE state = 'synced'),
                 (SELECT MAX(terminal_seq) FROM journal),
                 (SELECT value FROM replica_meta WHERE key = ?1),
                 (SELECT value FROM replica_meta WHERE key = ?2),
                 (SELECT COUNT(*) FROM offline_declines),
                 (SELECT COUNT(*) FROM shift_closeouts WHERE state = 'pending')",
        )?;
        let mut rows = stmt.query(params![META_LAST_SYNC_AT, META_LAST_FEED_AT])?;
        let row = rows
            .next()?
            .ok_or_else(|| corrupt("counts returned no row"))?;
        let count = |i: usize| -> Result<u64, JournalError> {
            let n: i64 = row.get(i)?;
            u64::try_from(n).map_err(|_| corrupt(format!("a count of {n}")))
        };
        let last_seq = match row.get::<_, Option<i64>>(4)? {
            Some(seq) => {
                Some(TerminalSeq::new(seq).map_err(|_| corrupt(format!("terminal_seq {seq}")))?)
            }
            None => None,
        };
        Ok(Counts {
            pending: count(0)?,
            in_doubt: count(1)?,
            rejected: count(2)?,
            synced: count(3)?,
            last_seq,
            last_sync_at: opt_time(META_LAST_SYNC_AT, row.get(5)?)?,
            last_feed_at: opt_time(META_LAST_FEED_AT, row.get(6)?)?,
            declined_offline: count(7)?,
            closeouts_pending: count(8)?,
        })
    }

    /// What the status line shows, in one statement (one snapshot), without reading the
    /// synced entries: the unsettled states through the `journal_state` index, the pending
    /// close-outs through `shift_closeouts_pending`. Its cost follows what is unsettled (and
    /// the offline declines), not the festival's length.
    pub fn status_counts(&self) -> Result<StatusCounts, JournalError> {
        let mut stmt = self.conn.prepare_cached(STATUS_COUNTS_SQL)?;
        let mut rows = stmt.query(params![META_LAST_SYNC_AT, META_LAST_FEED_AT])?;
        let row = rows
            .next()?
            .ok_or_else(|| corrupt("status counts returned no row"))?;
        let count = |i: usize| -> Result<u64, JournalError> {
            let n: i64 = row.get(i)?;
            u64::try_from(n).map_err(|_| corrupt(format!("a count of {n}")))
        };
        Ok(StatusCounts {
            pending: count(0)?,
            in_doubt: count(1)?,
            rejected: count(2)?,
            last_sync_at: opt_time(META_LAST_SYNC_AT, row.get(3)?)?,
            last_feed_at: opt_time(META_LAST_FEED_AT, row.get(4)?)?,
            declined_offline: count(5)?,
            closeouts_pending: count(6)?,
        })
    }

    /// True when this terminal has operations on `uid` that the ledger has not acknowledged
    /// (`pending`, `sending` or `in_doubt`): the ledger's balance of the card does not include
    /// them yet, so the tap flow decides such a card offline.
    pub fn has_unacknowledged(&self, uid: &CardUid) -> Result<bool, JournalError> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM journal
                                WHERE card_uid = ?1 AND state IN ('pending', 'sending', 'in_doubt'))",
            )?
            .query_row(params![uid.as_str()], |r| r.get(0))
            .map_err(JournalError::from)
    }

    /// What this terminal charged `uid` that the replica's balance does not reflect yet:
    /// the value the offline policy takes as `local_charges` (positive = charged; negative when
    /// this terminal's own top-ups and refunds outweigh its sales). Which entries count is
    /// [`charges::counts`]'s rule; this loads the card's candidate rows and applies it.
    ///
    /// The candidates are the card's entries (through the `journal_card` index) except those
    /// synced strictly before the last recorded card-feed pull, which the replica reflects
    /// and which therefore never count: what is loaded grows with what is unsettled and
    /// recent on the card, not with its history. The rule relies on
    /// [`Journal::apply_card_feed`]'s `now` being taken before the feed request was sent.
    pub fn local_charges(&self, uid: &CardUid) -> Result<Cents, JournalError> {
        let last_feed = get_meta(&self.conn, META_LAST_FEED_AT)?;
        let last_feed_at = opt_time(META_LAST_FEED_AT, last_feed.clone())?;
        let rows = {
            let mut stmt = self.conn.prepare_cached(LOCAL_CHARGES_SQL)?;
            let mut rows = stmt.query(params![uid.as_str(), last_feed])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(charge_row(row)?);
            }
            out
        };
        charges::local_charges(&rows, last_feed_at)
            .ok_or_else(|| corrupt(format!("amounts of {uid} overflow")))
    }

    /// Applies one page of the card feed and its `next_cursor`, in one transaction.
    ///
    /// Each card row takes the feed's balance, status (`blocked`) and version and
    /// `fetched_at = now`, unless the replica already holds a newer version of it (a page
    /// applied twice or out of order never moves a card backwards). `now` must be the time the
    /// feed request was *sent*: every acknowledgement after it is counted by
    /// [`Journal::local_charges`]. Refused above [`FEED_CARDS_MAX`] cards or a cursor longer
    /// than [`CURSOR_BYTES_MAX`] bytes.
    pub fn apply_card_feed(
        &mut self,
        cards: &[(CardUid, Cents, bool, i64)],
        next_cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if cards.len() > FEED_CARDS_MAX {
            return Err(invalid(format!(
                "{} cards in one feed page, at most {FEED_CARDS_MAX}",
                cards.len()
            )));
        }
        if next_cursor.len() > CURSOR_BYTES_MAX {
            return Err(invalid(format!(
                "a feed cursor of {} bytes, at most {CURSOR_BYTES_MAX}",
                next_cursor.len()
            )));
        }
        // An empty page that moves nothing (an idle terminal, every sync round) is recorded
        // at most once a minute, each write being an fsync, unless an entry became synced
        // since (or at) the last recorded pull: `local_charges` counts such an entry until
        // a later pull is recorded.
        let meta_time = |key| -> Result<Option<DateTime<Utc>>, JournalError> {
            Ok(get_meta(&self.conn, key)?.as_deref().and_then(parse_time))
        };
        if cards.is_empty()
            && get_meta(&self.conn, META_FEED_CURSOR)?.as_deref() == Some(next_cursor)
            && let Some(last_feed) = meta_time(META_LAST_FEED_AT)?
            && last_feed <= now
            && now - last_feed < chrono::Duration::milliseconds(EMPTY_FEED_RECORD_MS)
            && meta_time(META_LAST_SYNC_AT)?.is_none_or(|synced| synced < last_feed)
        {
            return Ok(());
        }
        let now_text = format_time(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO replica_cards (card_uid, balance_cents, status, version, fetched_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (card_uid) DO UPDATE SET
                     balance_cents = excluded.balance_cents,
                     status = excluded.status,
                     version = excluded.version,
                     fetched_at = excluded.fetched_at
                 WHERE excluded.version >= replica_cards.version",
            )?;
            for (uid, balance, blocked, version) in cards {
                let status = if *blocked { "blocked" } else { "active" };
                upsert.execute(params![
                    uid.as_str(),
                    balance.get(),
                    status,
                    version,
                    now_text
                ])?;
            }
        }
        set_meta(&tx, META_FEED_CURSOR, next_cursor)?;
        set_meta(&tx, META_LAST_FEED_AT, &now_text)?;
        tx.commit()?;
        Ok(())
    }

    /// The replica's view of a card and when it was fetched (the `as_of` of an offline
    /// balance); `None` for a card the feed never carried.
    pub fn replica_card(
        &self,
        uid: &CardUid,
    ) -> Result<Option<(ReplicaCard, DateTime<Utc>)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT balance_cents, status, fetched_at FROM replica_cards WHERE card_uid = ?1",
        )?;
        let mut rows = stmt.query([uid.as_str()])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let balance = Cents::new(row.get(0)?);
        let status: String = row.get(1)?;
        let blocked = match status.as_str() {
            "active" => false,
            "blocked" => true,
            other => return Err(corrupt(format!("card {uid}: status {other:?}"))),
        };
        let fetched_at: String = row.get(2)?;
        let fetched_at = parse_time(&fetched_at)
            .ok_or_else(|| corrupt(format!("card {uid}: fetched_at {fetched_at:?}")))?;
        Ok(Some((ReplicaCard { balance, blocked }, fetched_at)))
    }

    /// Where the next card-feed request starts: the last applied `next_cursor`, or `""` (the
    /// beginning) before the first page.
    pub fn feed_cursor(&self) -> Result<String, JournalError> {
        Ok(get_meta(&self.conn, META_FEED_CURSOR)?.unwrap_or_default())
    }

    /// Replaces the cached catalog (and its `ETag`, `None` to forget it) in one transaction.
    /// Refused above [`CATALOG_PRODUCTS_MAX`] products or with a product id twice; then the
    /// previous catalog stays.
    pub fn replace_catalog(
        &mut self,
        catalog: &Catalog,
        etag: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if catalog.products.len() > CATALOG_PRODUCTS_MAX {
            return Err(invalid(format!(
                "{} products, at most {CATALOG_PRODUCTS_MAX}",
                catalog.products.len()
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM catalog_cache")?
            .execute([])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO catalog_cache (product_id, position, name, price_cents, category)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (position, p) in catalog.products.iter().enumerate() {
                insert.execute(params![
                    p.product_id.as_str(),
                    i64::try_from(position).map_err(invalid)?,
                    p.name,
                    p.price_cents.get(),
                    p.category,
                ])?;
            }
        }
        set_meta(&tx, META_CATALOG_POINT_OF_SALE, &catalog.point_of_sale)?;
        set_meta(&tx, META_CATALOG_CURRENCY, &catalog.currency)?;
        match etag {
            Some(etag) => set_meta(&tx, META_CATALOG_ETAG, etag)?,
            None => delete_meta(&tx, META_CATALOG_ETAG)?,
        }
        set_meta(&tx, META_CATALOG_FETCHED_AT, &format_time(now))?;
        tx.commit()?;
        Ok(())
    }

    /// The cached catalog and when it was fetched; `None` before the first
    /// [`Journal::replace_catalog`].
    pub fn catalog(&self) -> Result<Option<(Catalog, DateTime<Utc>)>, JournalError> {
        let Some(fetched_at) = get_meta(&self.conn, META_CATALOG_FETCHED_AT)? else {
            return Ok(None);
        };
        let fetched_at = parse_time(&fetched_at)
            .ok_or_else(|| corrupt(format!("catalog fetched_at {fetched_at:?}")))?;
        let point_of_sale = get_meta(&self.conn, META_CATALOG_POINT_OF_SALE)?.unwrap_or_default();
        let currency = get_meta(&self.conn, META_CATALOG_CURRENCY)?.unwrap_or_default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT product_id, name, price_cents, category FROM catalog_cache
             ORDER BY position LIMIT ?1",
        )?;
        let mut rows = stmt.query([sql_limit(CATALOG_PRODUCTS_MAX)])?;
        let mut products = Vec::new();
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            products.push(CatalogProduct {
                product_id: ProductId::parse(&id)
                    .map_err(|e| corrupt(format!("catalog product id {id:?}: {e}")))?,
                name: row.get(1)?,
                price_cents: Cents::new(row.get(2)?),
                category: row.get(3)?,
            });
        }
        let catalog = Catalog {
            point_of_sale,
            currency,
            products,
        };
        Ok(Some((catalog, fetched_at)))
    }

    /// The `ETag` of the cached catalog, for `If-None-Match`.
    pub fn catalog_etag(&self) -> Result<Option<String>, JournalError> {
        get_meta(&self.conn, META_CATALOG_ETAG)
    }

    /// Replaces the cached staff list in one transaction. Refused above [`STAFF_MAX`]
    /// members or with a staff id twice; then the previous list stays.
    pub fn replace_staff(
        &mut self,
        staff: &[CachedStaff],
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if staff.len() > STAFF_MAX {
            return Err(invalid(format!(
                "{} staff members, at most {STAFF_MAX}",
                staff.len()
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM staff_cache")?.execute([])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO staff_cache (staff_id, name, role, active, pin_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in staff {
                insert.execute(params![
                    s.staff_id.as_str(),
                    s.name,
                    s.role.as_str(),
                    s.active,
                    s.pin_hash,
                ])?;
            }
        }
        set_meta(&tx, META_STAFF_FETCHED_AT, &format_time(now))?;
        tx.commit()?;
        Ok(())
    }

    /// The cached staff list, by staff id.
    pub fn staff(&self) -> Result<Vec<CachedStaff>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT staff_id, name, role, active, pin_hash FROM staff_cache
             ORDER BY staff_id LIMIT ?1",
        )?;
        let mut rows = stmt.query([sql_limit(STAFF_MAX)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(staff_from_row(row)?);
        }
        Ok(out)
    }

    /// One cached staff member, for login.
    pub fn staff_member(&self, id: &StaffId) -> Result<Option<CachedStaff>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT staff_id, name, role, active, pin_hash FROM staff_cache WHERE staff_id = ?1",
        )?;
        let mut rows = stmt.query([id.as_str()])?;
        match rows.next()? {
            Some(row) => staff_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// Appends a card presentation to the scan log; returns its local id. Refused
    /// ([`JournalError::Invalid`]) when the ledger would refuse it (`Scan::validate`), so that
    /// one bad scan cannot block every later upload.
    pub fn record_scan(&mut self, scan: &Scan) -> Result<i64, JournalError> {
        scan.validate(0)
            .map_err(|e| invalid(format!("scan {}: {}", e.field, e.message)))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO scan_log (card_uid, result, reader, scanned_at, terminal_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            scan.card_uid.as_str(),
            scan.result,
            scan.reader,
            format_time(scan.scanned_at),
            scan.terminal_seq.map(TerminalSeq::get),
        ])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// The oldest scans not yet uploaded, at most `limit` (clamped to [`SCANS_MAX`], one
    /// upload).
    pub fn unuploaded_scans(&self, limit: usize) -> Result<Vec<LoggedScan>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, card_uid, result, reader, scanned_at, terminal_seq FROM scan_log
             WHERE uploaded = 0 ORDER BY id LIMIT ?1",
        )?;
        let mut rows = stmt.query([sql_limit(limit.min(SCANS_MAX))])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let uid: String = row.get(1)?;
            let scanned_at: String = row.get(4)?;
            let terminal_seq = match row.get::<_, Option<i64>>(5)? {
                Some(seq) => Some(
                    TerminalSeq::new(seq)
                        .map_err(|_| corrupt(format!("scan {id}: terminal_seq {seq}")))?,
                ),
                None => None,
            };
            out.push(LoggedScan {
                id,
                scan: Scan {
                    card_uid: CardUid::parse(&uid)
                        .map_err(|e| corrupt(format!("scan {id}: card_uid {uid:?}: {e}")))?,
                    result: row.get(2)?,
                    reader: row.get(3)?,
                    scanned_at: parse_time(&scanned_at)
                        .ok_or_else(|| corrupt(format!("scan {id}: scanned_at {scanned_at:?}")))?,
                    terminal_seq,
                },
            });
        }
        Ok(out)
    }

    /// Marks scans uploaded (at most [`SCANS_MAX`] ids, one upload); returns how many were
    /// not marked before. Unknown ids are ignored.
    pub fn mark_scans_uploaded(&mut self, ids: &[i64]) -> Result<usize, JournalError> {
        if ids.len() > SCANS_MAX {
            return Err(invalid(format!(
                "{} scan ids, at most {SCANS_MAX}",
                ids.len()
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut marked = 0;
        {
            let mut update = tx.prepare_cached(
                "UPDATE scan_log SET uploaded = 1 WHERE id = ?1 AND uploaded = 0",
            )?;
            for id in ids {
                marked += update.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(marked)
    }

    /// Records an operation declined offline (durably); it is never sent to the ledger.
    pub fn record_decline(
        &mut self,
        record: &DeclineRecord,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if !matches!(
            record.operation,
            OperationKind::Order | OperationKind::Recharge
        ) {
            return Err(invalid("only orders and top-ups are declined offline"));
        }
        check_amount(record.operation, record.amount_cents)?;
        self.conn
            .prepare_cached(
                "INSERT INTO offline_declines (client_request_id, operation, card_uid,
                     amount_cents, reason, staff_id, declined_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                record.client_request_id.to_string(),
                record.operation.as_str(),
                record.card_uid.as_str(),
                record.amount_cents.get(),
                bounded(record.reason.clone(), TEXT_BYTES_MAX),
                record.staff_id.as_str(),
                format_time(now.trunc_subsecs(3)),
            ])?;
        Ok(())
    }

    /// The offline declines recorded, oldest first, at most `limit`.
    pub fn declines(&self, limit: usize) -> Result<Vec<DeclineRecord>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT client_request_id, operation, card_uid, amount_cents, reason, staff_id
             FROM offline_declines ORDER BY id LIMIT ?1",
        )?;
        let mut rows = stmt.query(params![sql_limit(limit)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let crid: String = row.get(0)?;
            let operation: String = row.get(1)?;
            let card: String = row.get(2)?;
            let staff: String = row.get(5)?;
            out.push(DeclineRecord {
                client_request_id: ClientRequestId::parse(&crid).map_err(corrupt)?,
                operation: OperationKind::parse(&operation)
                    .ok_or_else(|| corrupt(format!("operation {operation}")))?,
                card_uid: CardUid::parse(&card).map_err(corrupt)?,
                amount_cents: Cents::new(row.get(3)?),
                reason: row.get(4)?,
                staff_id: StaffId::parse(&staff).map_err(corrupt)?,
            });
        }
        Ok(out)
    }

    /// Stores the ledger's top-up limits, replacing the previous ones.
    pub fn set_topup_limits(
        &mut self,
        limits: TopupLimits,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if limits.recharge_max_cents < Cents::new(1) || limits.balance_max_cents < Cents::new(1) {
            return Err(invalid(format!(
                "top-up limits must be positive: {limits:?}"
            )));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO ledger_limits (id, recharge_max_cents, balance_max_cents, fetched_at)
                 VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET recharge_max_cents = excluded.recharge_max_cents,
                     balance_max_cents = excluded.balance_max_cents, fetched_at = excluded.fetched_at",
            )?
            .execute(params![
                limits.recharge_max_cents.get(),
                limits.balance_max_cents.get(),
                format_time(now.trunc_subsecs(3)),
            ])?;
        Ok(())
    }

    /// The ledger's top-up limits as last received, if ever.
    pub fn topup_limits(&self) -> Result<Option<TopupLimits>, JournalError> {
        self.conn
            .prepare_cached("SELECT recharge_max_cents, balance_max_cents FROM ledger_limits")?
            .query_row([], |r| {
                Ok(TopupLimits {
                    recharge_max_cents: Cents::new(r.get(0)?),
                    balance_max_cents: Cents::new(r.get(1)?),
                })
            })
            .optional()
            .map_err(JournalError::from)
    }

    /// Copies the write-ahead log into the database file without waiting for anyone
    /// (`PRAGMA wal_checkpoint(PASSIVE)`). SQLite also does it by itself every 1000 pages
    /// during a commit; the daemon may call this while idle so that a sale's commit seldom
    /// pays for the copy.
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// A read-only connection; reads the schema version so that an unreadable file fails here.
/// `immutable` reads the database file alone, without locks, `-shm` or `-wal`.
fn connect_read_only(path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        let uri = format!("file:{}?immutable=1", uri_path(path));
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
    } else {
        Connection::open_with_flags(path, flags)?
    };
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// Whether `<path>-wal` may hold committed entries: it exists and is not empty, or it cannot
/// be examined.
fn wal_may_hold_data(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::metadata(&wal) {
        Ok(meta) => meta.len() > 0,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// A path as the path part of an SQLite `file:` URI: every byte outside `A-Z a-z 0-9 / . _ -`
/// percent-encoded, so that `?`, `#` and `%` in a file name stay part of the name.
fn uri_path(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Inserts a new entry inside `tx` (see [`Journal::append`]): the next `terminal_seq`, the
/// request body built for it, the row.
fn insert_entry(
    tx: &rusqlite::Transaction<'_>,
    entry: NewEntry,
    request: impl FnOnce(TerminalSeq) -> Value,
    now: DateTime<Utc>,
) -> Result<Entry, JournalError> {
    check_amount(entry.operation, entry.amount_cents)?;
    let now = now.trunc_subsecs(3);
    let now_text = format_time(now);
    let decline_reason = entry
        .decline_reason
        .map(|reason| bounded(reason, TEXT_BYTES_MAX));
    let synced_at = (entry.state == EntryState::Synced).then_some(now);
    let last: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(terminal_seq), 0) FROM journal")?
        .query_row([], |r| r.get(0))?;
    let terminal_seq = last
        .checked_add(1)
        .and_then(|next| TerminalSeq::new(next).ok())
        .ok_or_else(|| corrupt(format!("the highest terminal_seq is {last}")))?;
    let body = request(terminal_seq);
    check_body(&body, entry.client_request_id, terminal_seq)?;
    let request_json = serde_json::to_string(&body).map_err(invalid)?;
    tx.prepare_cached(
        "INSERT INTO journal (terminal_seq, client_request_id, operation, mode, request_json,
             card_uid, amount_cents, state, decision, decline_reason, attempts, created_at,
             updated_at, synced_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?11, ?12)",
    )?
    .execute(params![
        terminal_seq.get(),
        entry.client_request_id.to_string(),
        entry.operation.as_str(),
        entry.mode.as_str(),
        request_json,
        entry.card_uid.as_ref().map(CardUid::as_str),
        entry.amount_cents.get(),
        entry.state.as_str(),
        entry.decision.map(Decision::as_str),
        decline_reason,
        now_text,
        synced_at.map(format_time),
    ])?;
    if entry.state == EntryState::Synced {
        set_meta(tx, META_LAST_SYNC_AT, &now_text)?;
    }
    Ok(Entry {
        terminal_seq,
        client_request_id: entry.client_request_id,
        operation: entry.operation,
        mode: entry.mode,
        request_json,
        card_uid: entry.card_uid,
        amount_cents: entry.amount_cents,
        state: entry.state,
        decision: entry.decision,
        decline_reason,
        attempts: 0,
        last_error: None,
        ledger_status: None,
        ledger_body: None,
        created_at: now,
        updated_at: now,
        synced_at,
    })
}

/// Applies the migrations that are not applied yet; returns the schema version.
fn migrate(conn: &mut Connection) -> Result<i64, JournalError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).map_err(corrupt)?;
    if current > known {
        return Err(corrupt(format!(
            "the journal has schema version {current}, newer than this program's {known}"
        )));
    }
    let applied = usize::try_from(current)
        .map_err(|_| corrupt(format!("the journal has schema version {current}")))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(index + 1).map_err(corrupt)?,
        )?;
        tx.commit()?;
    }
    Ok(known)
}

/// One batch of the ledger at most, so that one transaction stays small.
fn check_batch_len(len: usize) -> Result<(), JournalError> {
    if len > BATCH_OPERATIONS_MAX {
        return Err(invalid(format!(
            "{len} entries in one call, at most {BATCH_OPERATIONS_MAX}"
        )));
    }
    Ok(())
}

/// An order never credits the card and a top-up never debits it; `local_charges` relies on it.
fn check_amount(operation: OperationKind, amount: Cents) -> Result<(), JournalError> {
    let ok = match operation {
        OperationKind::Order => amount <= Cents::ZERO,
        OperationKind::Recharge => amount >= Cents::ZERO,
        OperationKind::Void => true,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "an {operation} with amount_cents {}",
            amount.get()
        )))
    }
}

/// The request body must carry the entry's ids: replay sends it as is, and the ledger keys
/// idempotency and sequence tracking on them.
fn check_body(
    body: &Value,
    client_request_id: ClientRequestId,
    seq: TerminalSeq,
) -> Result<(), JournalError> {
    let crid_ok = body.get("client_request_id").and_then(Value::as_str)
        == Some(client_request_id.to_string().as_str());
    let seq_ok = body.get("terminal_seq").and_then(Value::as_i64) == Some(seq.get());
    if crid_ok && seq_ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "the request body must be an object with \"client_request_id\": \"{client_request_id}\" \
             and \"terminal_seq\": {}",
            seq.get()
        )))
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A list limit as SQL wants it, clamped to [`LIST_LIMIT_MAX`].
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit.min(LIST_LIMIT_MAX)).unwrap_or(0)
}

fn state_of(conn: &Connection, seq: TerminalSeq) -> Result<EntryState, JournalError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT state FROM journal WHERE terminal_seq = ?1")?
        .query_row([seq.get()], |r| r.get(0))
        .optional()?;
    let text =
        text.ok_or_else(|| invalid(format!("no journal entry with terminal_seq {}", seq.get())))?;
    EntryState::parse(&text).ok_or_else(|| corrupt(format!("entry {}: state {text:?}", seq.get())))
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO replica_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

fn delete_meta(conn: &Connection, key: &str) -> Result<(), JournalError> {
    conn.prepare_cached("DELETE FROM replica_meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, JournalError> {
    Ok(conn
        .prepare_cached("SELECT value FROM replica_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn opt_time(what: &str, text: Option<String>) -> Result<Option<DateTime<Utc>>, JournalError> {
    match text {
        Some(text) => parse_time(&text)
            .map(Some)
            .ok_or_else(|| corrupt(format!("{what} {text:?}"))),
        None => Ok(None),
    }
}

fn collect_entries(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Entry>, JournalError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(entry_from_row(row)?);
    }
    Ok(out)
}

/// Reads one entry ([`ENTRY_COLUMNS`]) and checks every value again: what comes back from the
/// file is data, not a promise.
fn entry_from_row(row: &Row<'_>) -> Result<Entry, JournalError> {
    let seq: i64 = row.get(0)?;
    let bad =
        |column: &str, value: &dyn fmt::Debug| corrupt(format!("entry {seq}: {column} {value:?}"));
    let terminal_seq = TerminalSeq::new(seq).map_err(|_| bad("terminal_seq", &seq))?;
    let crid: String = row.get(1)?;
    let client_request_id =
        ClientRequestId::parse(&crid).map_err(|_| bad("client_request_id", &crid))?;
    let operation: String = row.get(2)?;
    let operation = OperationKind::parse(&operation).ok_or_else(|| bad("operation", &operation))?;
    let mode: String = row.get(3)?;
    let mode = Mode::try_from(mode.clone()).map_err(|_| bad("mode", &mode))?;
    let request_json: String = row.get(4)?;
    if serde_json::from_str::<serde::de::IgnoredAny>(&request_json).is_err() {
        return Err(bad("request_json", &request_json));
    }
    let card_uid = match row.get::<_, Option<String>>(5)? {
        Some(uid) => Some(CardUid::parse(&uid).map_err(|_| bad("card_uid", &uid))?),
        None => None,
    };
    let amount_cents = Cents::new(row.get(6)?);
    let state: String = row.get(7)?;
    let state = EntryState::parse(&state).ok_or_else(|| bad("state", &state))?;
    let decision = match row.get::<_, Option<String>>(8)? {
        Some(d) => Some(Decision::parse(&d).ok_or_else(|| bad("decision", &d))?),
        None => None,
    };
    let attempts: i64 = row.get(10)?;
    let attempts = u32::try_from(attempts).map_err(|_| bad("attempts", &attempts))?;
    let ledger_status = match row.get::<_, Option<i64>>(12)? {
        Some(s) => Some(u16::try_from(s).map_err(|_| bad("ledger_status", &s))?),
        None => None,
    };
    let time = |i: usize, column: &str| -> Result<Option<DateTime<Utc>>, JournalError> {
        match row.get::<_, Option<String>>(i)? {
            Some(text) => parse_time(&text)
                .map(Some)
                .ok_or_else(|| bad(column, &text)),
            None => Ok(None),
        }
    };
    let created_at = time(14, "created_at")?.ok_or_else(|| bad("created_at", &"NULL"))?;
    let updated_at = time(15, "updated_at")?.ok_or_else(|| bad("updated_at", &"NULL"))?;
    let synced_at = time(16, "synced_at")?;
    if (state == EntryState::Synced) != synced_at.is_some() {
        return Err(bad("synced_at with state", &(state.as_str(), synced_at)));
    }
    Ok(Entry {
        terminal_seq,
        client_request_id,
        operation,
        mode,
        request_json,
        card_uid,
        amount_cents,
        state,
        decision,
        decline_reason: row.get(9)?,
        attempts,
        last_error: row.get(11)?,
        ledger_status,
        ledger_body: row.get(13)?,
        created_at,
        updated_at,
        synced_at,
    })
}

/// Reads one of [`LOCAL_CHARGES_SQL`]'s rows.
fn charge_row(row: &Row<'_>) -> Result<ChargeRow, JournalError> {
    let seq: i64 = row.get(0)?;
    let bad =
        |column: &str, value: &dyn fmt::Debug| corrupt(format!("entry {seq}: {column} {value:?}"));
    let state: String = row.get(1)?;
    let decision: Option<String> = row.get(2)?;
    let synced_at: Option<String> = row.get(4)?;
    Ok(ChargeRow {
        state: EntryState::parse(&state).ok_or_else(|| bad("state", &state))?,
        decision: match decision {
            Some(d) => Some(Decision::parse(&d).ok_or_else(|| bad("decision", &d))?),
            None => None,
        },
        amount: Cents::new(row.get(3)?),
        synced_at: match synced_at {
            Some(text) => Some(parse_time(&text).ok_or_else(|| bad("synced_at", &text))?),
            None => None,
        },
    })
}

fn staff_from_row(row: &Row<'_>) -> Result<CachedStaff, JournalError> {
    let id: String = row.get(0)?;
    let role: String = row.get(2)?;
    Ok(CachedStaff {
        staff_id: StaffId::parse(&id).map_err(|e| corrupt(format!("staff id {id:?}: {e}")))?,
        name: row.get(1)?,
        role: StaffRole::parse(&role)
            .ok_or_else(|| corrupt(format!("staff {id}: role {role:?}")))?,
        active: row.get(3)?,
        pin_hash: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_failures_are_classified() {
        use rusqlite::ffi;
        let cases = [
            (ffi::SQLITE_FULL, "io"),
            (ffi::SQLITE_READONLY, "io"),
            (ffi::SQLITE_PERM, "io"),
            (ffi::SQLITE_IOERR, "io"),
            (ffi::SQLITE_IOERR_FSYNC, "io"),
            (ffi::SQLITE_CANTOPEN, "io"),
            (ffi::SQLITE_BUSY, "io"),
            (ffi::SQLITE_CORRUPT, "corrupt"),
            (ffi::SQLITE_NOTADB, "corrupt"),
            (ffi::SQLITE_ERROR, "corrupt"),
            (ffi::SQLITE_CONSTRAINT_UNIQUE, "invalid"),
        ];
        for (code, kind) in cases {
            let e = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            let got = match classify(e) {
                JournalError::Io(_) => "io",
                JournalError::Corrupt(_) => "corrupt",
                JournalError::Invalid(_) => "invalid",
            };
            assert_eq!(got, kind, "code {code}");
        }
        let full = classify(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_FULL),
            None,
        ));
        assert!(full.to_string().contains("disk full"), "{full}");
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        let cases = [
            ("", 4, ""),
            ("abc", 4, "abc"),
            ("abcd", 4, "abcd"),
            ("abcde", 4, "abcd"),
            ("ab€", 4, "ab"),
            ("€€", 3, "€"),
        ];
        for (text, max, expected) in cases {
            assert_eq!(bounded(text.to_owned(), max), expected, "{text:?} {max}");
        }
    }

    #[test]
    fn amounts_must_have_the_operation_sign() {
        use OperationKind::*;
        let cases = [
            (Order, -500, true),
            (Order, 0, true),
            (Order, 1, false),
            (Recharge, 500, true),
            (Recharge, 0, true),
            (Recharge, -1, false),
            (Void, 500, true),
            (Void, -500, true),
        ];
        for (op, amount, ok) in cases {
            assert_eq!(
                check_amount(op, Cents::new(amount)).is_ok(),
                ok,
                "{op} {amount}"
            );
        }
    }

    #[test]
    fn request_bodies_must_carry_the_ids() {
        let crid = ClientRequestId::new_random();
        let seq = TerminalSeq::new(7).unwrap();
        let other = ClientRequestId::new_random();
        let cases = [
            (
                serde_json::json!({"client_request_id": crid, "terminal_seq": 7}),
                true,
            ),
            (
                serde_json::json!({"type": "order", "client_request_id": crid, "terminal_seq": 7, "x": 1}),
                true,
            ),
            (
                serde_json::json!({"client_request_id": crid, "terminal_seq": 8}),
                false,
            ),
            (
                serde_json::json!({"client_request_id": crid, "terminal_seq": "7"}),
                false,
            ),
            (
                serde_json::json!({"client_request_id": other, "terminal_seq": 7}),
                false,
            ),
            (serde_json::json!({"terminal_seq": 7}), false),
            (serde_json::json!([crid, 7]), false),
            (Value::Null, false),
        ];
        for (body, ok) in cases {
            assert_eq!(check_body(&body, crid, seq).is_ok(), ok, "{body}");
        }
    }

    #[test]
    fn odd_file_names_survive_the_uri() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["j.db", "a b?c=1#d%20e.db", "ü.db"] {
            let path = dir.path().join(name);
            drop(Journal::open(&path).unwrap());
            // Read as `immutable` (what a read-only directory forces): the same file.
            let conn = connect_read_only(&path, true).unwrap();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64, "{name}");
        }
        assert_eq!(uri_path(Path::new("/t/a b?#%.db")), "/t/a%20b%3F%23%25.db");
    }

    #[test]
    fn a_wal_with_content_is_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let wal = dir.path().join("j.db-wal");
        assert!(!wal_may_hold_data(&path));
        std::fs::write(&wal, b"").unwrap();
        assert!(!wal_may_hold_data(&path));
        std::fs::write(&wal, b"frames").unwrap();
        assert!(wal_may_hold_data(&path));
    }

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        drop(Journal::open(&path).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::Corrupt(_))
        ));
        assert!(matches!(
            Journal::open_read_only(&path),
            Err(JournalError::Corrupt(_))
        ));
    }

    #[test]
    fn offline_declines_are_kept_and_counted_without_a_terminal_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
        let record = DeclineRecord {
            client_request_id: ClientRequestId::new_random(),
            operation: OperationKind::Order,
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            amount_cents: Cents::new(-450),
            reason: "INSUFFICIENT_FUNDS".into(),
            staff_id: StaffId::parse("s-1").unwrap(),
        };
        j.record_decline(&record, Utc::now()).unwrap();
        assert_eq!(j.declines(10).unwrap(), vec![record.clone()]);
        let counts = j.counts().unwrap();
        assert_eq!(counts.declined_offline, 1);
        assert_eq!(counts.last_seq, None, "a decline takes no terminal_seq");
        // The same key twice, a void, or an order that credits: refused, nothing written.
        assert!(j.record_decline(&record, Utc::now()).is_err());
        let void = DeclineRecord {
            client_request_id: ClientRequestId::new_random(),
            operation: OperationKind::Void,
            ..record.clone()
        };
        assert!(matches!(
            j.record_decline(&void, Utc::now()),
            Err(JournalError::Invalid(_))
        ));
        let credit = DeclineRecord {
            client_request_id: ClientRequestId::new_random(),
            amount_cents: Cents::new(450),
            ..record
        };
        assert!(matches!(
            j.record_decline(&credit, Utc::now()),
            Err(JournalError::Invalid(_))
        ));
        assert_eq!(j.counts().unwrap().declined_offline, 1);
    }

    #[test]
    fn status_counts_agree_with_counts_and_read_no_synced_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
        let now = Utc::now();
        let card = CardUid::parse("04A1B2C3").unwrap();
        let states = [
            EntryState::Pending,
            EntryState::Pending,
            EntryState::InDoubt,
            EntryState::Sending,
            EntryState::Pending,
            EntryState::Pending,
            EntryState::Pending,
        ];
        for state in states {
            let crid = ClientRequestId::new_random();
            let entry = NewEntry {
                client_request_id: crid,
                operation: OperationKind::Order,
                mode: Mode::Offline,
                card_uid: Some(card.clone()),
                amount_cents: Cents::new(-450),
                decision: Some(Decision::ApprovedOffline),
                decline_reason: None,
                state,
            };
            j.append(
                entry,
                |seq| serde_json::json!({"client_request_id": crid, "terminal_seq": seq.get()}),
                now,
            )
            .unwrap();
        }
        let seq = |n| TerminalSeq::new(n).unwrap();
        let ledger = Some((201, "{}"));
        j.set_state(seq(5), EntryState::Synced, None, None, ledger, now)
            .unwrap();
        j.set_state(seq(6), EntryState::Synced, None, None, ledger, now)
            .unwrap();
        j.set_state(
            seq(7),
            EntryState::Rejected,
            None,
            None,
            Some((403, "{}")),
            now,
        )
        .unwrap();
        j.record_decline(
            &DeclineRecord {
                client_request_id: ClientRequestId::new_random(),
                operation: OperationKind::Order,
                card_uid: card,
                amount_cents: Cents::new(-450),
                reason: "INSUFFICIENT_FUNDS".into(),
                staff_id: StaffId::parse("s-1").unwrap(),
            },
            now,
        )
        .unwrap();
        let staff = StaffId::parse("s-2").unwrap();
        for _ in 0..2 {
            j.close_shift(ClientRequestId::new_random(), &staff, Cents::ZERO, now)
                .unwrap();
        }
        let recorded = j.pending_closeouts(1).unwrap()[0]
            .closeout
            .client_request_id;
        j.settle_closeout(recorded, CloseoutState::Recorded, 201, "{}")
            .unwrap();

        let c = j.counts().unwrap();
        assert_eq!((c.pending, c.in_doubt, c.rejected, c.synced), (2, 2, 1, 2));
        assert_eq!((c.declined_offline, c.closeouts_pending), (1, 1));
        let s = j.status_counts().unwrap();
        assert_eq!(
            s,
            StatusCounts {
                pending: c.pending,
                in_doubt: c.in_doubt,
                rejected: c.rejected,
                last_sync_at: c.last_sync_at,
                last_feed_at: c.last_feed_at,
                declined_offline: c.declined_offline,
                closeouts_pending: c.closeouts_pending,
            }
        );
        assert!(s.last_sync_at.is_some(), "a synced entry is a contact");

        // The entries are counted through `journal_state` (a range per state, never the
        // synced ones), the close-outs through their partial index; only the offline
        // declines are scanned (what was declined offline, not what was sold).
        let mut plan = j
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {STATUS_COUNTS_SQL}"))
            .unwrap();
        let plan: Vec<String> = plan
            .query_map(params!["a", "b"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let reads = |table: &str| -> Vec<&String> {
            plan.iter()
                .filter(|d| d.contains(&format!(" {table} ")))
                .collect()
        };
        let journal = reads("journal");
        assert_eq!(journal.len(), 3, "{plan:#?}");
        assert!(
            journal
                .iter()
                .all(|d| d.starts_with("SEARCH journal USING COVERING INDEX journal_state ")),
            "{plan:#?}"
        );
        // A scan of the partial index reads the pending close-outs only.
        assert_eq!(
            reads("shift_closeouts"),
            ["SCAN shift_closeouts USING COVERING INDEX shift_closeouts_pending"],
            "{plan:#?}"
        );
    }

    #[test]
    fn local_charges_read_one_cards_rows_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let mut plan = j
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LOCAL_CHARGES_SQL}"))
            .unwrap();
        let plan: Vec<String> = plan
            .query_map(params!["04A1B2C3", "2026-01-01T00:00:00.000Z"], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH journal USING INDEX journal_card (card_uid=?)"],
            "{plan:#?}"
        );
    }

    #[test]
    fn topup_limits_are_replaced_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.topup_limits().unwrap(), None);
        let limits = |r, b| TopupLimits {
            recharge_max_cents: Cents::new(r),
            balance_max_cents: Cents::new(b),
        };
        j.set_topup_limits(limits(5000, 10_000), Utc::now())
            .unwrap();
        j.set_topup_limits(limits(7000, 20_000), Utc::now())
            .unwrap();
        assert!(j.set_topup_limits(limits(0, 20_000), Utc::now()).is_err());
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.topup_limits().unwrap(), Some(limits(7000, 20_000)));
    }
}
