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
//! ([`BATCH_OPERATIONS_MAX`](crate::protocol::api::BATCH_OPERATIONS_MAX)) and commit it
//! with one fsync.
//!
//! Architecture invariant: this is the only module of the terminal that knows SQL.

//! # Layout
//!
//! [`Journal`] (this module) owns the connection: opening, pragmas, migrations, the error
//! type and the helpers every part shares. The methods live with what they store:
//! - `entries`: the operations journal (append, state moves, the ledger's answers, the lists
//!   replay, recovery and export read);
//! - `replica`: the card replica, the feed cursor, and [`Journal::local_charges`] (what this
//!   terminal charged a card that the replica does not reflect yet);
//! - `caches`: the catalog, the staff list and the ledger's top-up limits;
//! - `scans` and `declines`: the scan log and the operations declined offline;
//! - `shifts`: a checkpoint's shift totals and close-outs;
//! - `counts`: the journal at a glance, across all of them.

mod caches;
mod counts;
mod declines;
mod entries;
mod replica;
mod scans;
mod shifts;

pub use crate::terminal::core::entry::{Decision, EntryState, OperationKind};
pub use caches::{
    CATALOG_PRODUCTS_MAX, CachedStaff, Catalog, CatalogProduct, STAFF_MAX, TopupLimits,
};
pub use counts::{Counts, StatusCounts};
pub use declines::DeclineRecord;
pub use entries::{Entry, NewEntry, StateChange};
pub use replica::{CURSOR_BYTES_MAX, FEED_CARDS_MAX, FeedRow};
pub use scans::LoggedScan;
pub use shifts::{ClosedShift, CloseoutState, ShiftSummary};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// How long a call waits for a lock held by another process (`cashless terminal status`
/// reading while the daemon writes) before it fails with [`JournalError::Io`].
pub const BUSY_TIMEOUT_MS: u64 = 5000;
/// The most rows one list call returns; larger limits are clamped to it.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// The longest `last_error` or `decline_reason` kept, in bytes; longer text is cut.
pub const TEXT_BYTES_MAX: usize = 1024;

/// The schema migrations, in order. `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/terminal/0001_journal.sql"),
    include_str!("../../../migrations/terminal/0002_declines_and_limits.sql"),
    include_str!("../../../migrations/terminal/0003_shift_closeouts.sql"),
    include_str!("../../../migrations/terminal/0004_catalog_tax_rates.sql"),
    include_str!("../../../migrations/terminal/0005_what_festivals_sell.sql"),
    include_str!("../../../migrations/terminal/0006_deposits.sql"),
    include_str!("../../../migrations/terminal/0007_voucher_grants.sql"),
    include_str!("../../../migrations/terminal/0008_card_keys.sql"),
];

/// The schema version this program writes: `PRAGMA user_version` once every migration is
/// applied.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

// The keys of `replica_meta`, in one list so that no two parts of the journal take the same.
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

/// Refuses ([`JournalError::Invalid`]) `count` `what` above `max`: what one call may take.
fn at_most(count: usize, max: usize, what: &str) -> Result<(), JournalError> {
    if count > max {
        return Err(invalid(format!("{count} {what}, at most {max}")));
    }
    Ok(())
}

/// A list limit as SQL wants it, clamped to [`LIST_LIMIT_MAX`].
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit.min(LIST_LIMIT_MAX)).unwrap_or(0)
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
}
