//! `cashless ledger migrate --from sqlite:PATH --to postgres://...`: a festival moved from its
//! SQLite ledger to an empty PostgreSQL database, everything included, all or nothing.
//!
//! # The steps
//! Each step refuses, changing nothing, when it fails:
//! 1. The source is opened read-only, in one read transaction (a snapshot that every later
//!    read shares), and must be at this program's SQLite schema ([`sqlite::SCHEMA_VERSION`]).
//!    An older file is refused, not migrated: the move never writes its source, so the
//!    SQLite file stays the festival's books, as they were, whatever becomes of the move;
//!    bringing it up to date is `cashless ledger migrate --database sqlite:PATH`, a step of
//!    its own that the operator sees.
//! 2. The target gets the PostgreSQL migrations it lacks ([`super::migrate`]).
//! 3. One PostgreSQL transaction: every ledger table locked against writers, each checked
//!    empty ([`MoveError::TargetNotEmpty`]), each copied, the identity sequences and
//!    `card_version_seq` set past the largest ids (the next is the largest plus one), and
//!    the [`Totals`] of both sides compared: it commits only when they agree.
//!
//! # What is copied
//! Every table of `migrations/sqlite/` ([`TABLES`], parents before children, so every
//! foreign key holds at every row), every column, the identity ids (`posting_id`,
//! `log_id`, `scan_id`) as they are. Deliberately not copied: the target's
//! `schema_migrations` (its own migrations write it), SQLite's `user_version` (checked in
//! step 1) and the [`DERIVED`] sums (`quarter_totals`, `till_quarter_sales`,
//! `product_quarter_sales`), which the target's triggers build from the rows copied and the
//! [`Totals`] compare. The columns are the target's, from its catalog, and must be exactly
//! the source's: a drift between the two schemas is refused rather than half copied.
//!
//! # Types
//! Each value is converted for its PostgreSQL column, strictly (anything else is refused,
//! naming table, column and row): integers to `bigint` or `integer` (checked), 0/1 to
//! `boolean`, RFC 3339 text to `timestamptz` (the ledger writes milliseconds; a time finer
//! than PostgreSQL's microseconds is refused rather than rounded), UUID text to `uuid`,
//! JSON text to `jsonb` (sent as its text, which PostgreSQL parses: no number passes
//! through a float), and text as text, `idempotency_keys.response_body` included: its exact
//! bytes, which a replay sends.
//!
//! # Why binary COPY
//! `COPY ... FROM STDIN (FORMAT binary)` streams a table in one statement: no SQL text to
//! build or escape, no limit of 65,535 parameters per statement as with multi-row
//! `INSERT`s, each value sent in its type's binary form and checked against the column's
//! type by the driver before it leaves, and the fastest way into PostgreSQL. A thread reads
//! the source and hands rows over in batches ([`BATCH_ROWS_MAX`], at most
//! [`BATCHES_IN_FLIGHT_MAX`] waiting), so memory stays bounded whatever the festival's size.
//! `COPY` inserts rows, so the append-only triggers of `postings` and
//! `app_transaction_log` (which refuse `UPDATE`, `DELETE` and `TRUNCATE`) let it through.

mod totals;

pub use totals::{AccountTotal, Totals};

use super::{MigrationReport, classify, connect_migrated};
use crate::ledger::config::{DatabaseUrl, PostgresSettings};
use crate::ledger::store::sqlite;
use crate::ledger::store::{OpenError, StoreError};
use chrono::{DateTime, Timelike, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use uuid::Uuid;

/// The ledger's tables, parents before children (the order of the copy).
pub const TABLES: &[&str] = &[
    "terminals",
    "terminal_seqs",
    "terminal_status",
    "staff",
    "products",
    "cards",
    "card_replacements",
    "bar_orders",
    "bar_order_items",
    "recharges",
    "deposit_returns",
    "deposit_return_items",
    "voucher_grants",
    "voids",
    "postings",
    "idempotency_keys",
    "app_transaction_log",
    "nfc_scan_log",
    "archived_voucher_moves",
    "shift_closeouts",
    "stripe_events",
    "stripe_recharges",
    "stripe_refunds",
    "operators",
    "operator_sessions",
];

/// Tables the target derives from the rows it is given, not copied: its triggers build them
/// as the copy goes, and the [`Totals`] compare them with the source's.
pub const DERIVED: &[&str] = &[
    "quarter_totals",
    "till_quarter_sales",
    "product_quarter_sales",
];

/// The card feed's version sequence (`migrations/postgres/0004_card_feed.sql`).
pub const CARD_VERSION_SEQUENCE: &str = "card_version_seq";

/// Rows the reading thread hands over at once, at most.
pub const BATCH_ROWS_MAX: usize = 1000;
/// Batches read and not yet written, at most (the reader waits beyond that).
pub const BATCHES_IN_FLIGHT_MAX: usize = 4;
/// How long the move waits for the target's tables (a ledger serving them, a backup) before
/// it gives up.
pub const TABLE_LOCK_TIMEOUT_MS: u64 = 10_000;

/// Why a move did not happen. Every one leaves both databases as they were.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The source cannot be opened or read.
    #[error("cannot read the SQLite ledger {}: {reason}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The source is not at this program's schema.
    #[error("{}", schema_message(path, *found))]
    SourceSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// The target holds ledger rows already.
    #[error(
        "the target {database} is not empty (rows in {}): a move fills only an empty ledger \
         database, and changed nothing; name a new database (createdb), or drop this one and \
         create it again",
        tables.join(", ")
    )]
    TargetNotEmpty {
        /// The target, without its password.
        database: String,
        /// The tables that hold rows.
        tables: Vec<String>,
    },
    /// The two schemas do not have the same tables or columns.
    #[error("the SQLite and PostgreSQL schemas differ, so nothing was moved: {0}")]
    SchemaDiffers(String),
    /// A source value the target's column cannot take faithfully.
    #[error("{table}.{column}, row {row} of the source: {reason}; nothing was moved")]
    BadValue {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The row's position in the table (from 1), and its first column.
        row: String,
        /// What is wrong with it.
        reason: String,
    },
    /// After the copy, the two sides' totals differ: rolled back.
    #[error(
        "after the copy the totals of the two sides differ, so the move was rolled back:\n{}",
        .0.join("\n")
    )]
    TotalsDiffer(Vec<String>),
    /// The target cannot be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The target failed during the move: rolled back.
    #[error("the move into {database} failed and was rolled back ({step})")]
    Target {
        /// The target, without its password.
        database: String,
        /// What the move was doing.
        step: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

fn schema_message(path: &Path, found: i64) -> String {
    let current = sqlite::SCHEMA_VERSION;
    let path = path.display();
    if found == 0 {
        format!("{path} is not a cashless ledger: its SQLite schema version is 0")
    } else if found < current {
        format!(
            "the SQLite ledger {path} is at schema version {found}, older than this program's \
             {current}: bring it up to date first with `cashless ledger migrate --database \
             sqlite:{path}` (the move never writes its source), then move it"
        )
    } else {
        format!(
            "the SQLite ledger {path} is at schema version {found}, newer than this program's \
             {current}: a newer cashless wrote it; move it with that version"
        )
    }
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveReport {
    /// The migrations the target got first (empty: it was at the current schema).
    pub migrations: MigrationReport,
    /// Each sequence set past the largest id (`table.column`, or the sequence's name), with
    /// the next value it hands out.
    pub sequences: Vec<(String, i64)>,
    /// The source's totals, read in the snapshot it was copied from.
    pub source_totals: Totals,
    /// The target's totals, read in the move's transaction before it committed.
    pub target_totals: Totals,
}

impl MoveReport {
    /// For people: the target's migrations, both sides' totals (rows per table first), the
    /// sequences.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if self.migrations.applied.is_empty() {
            out.push_str("target schema: already current\n");
        } else {
            out.push_str(&format!(
                "target schema: applied {}\n",
                self.migrations.applied.join(", ")
            ));
        }
        out.push_str(&totals::side_by_side(
            &self.source_totals,
            &self.target_totals,
        ));
        out.push_str("sequences (next value):\n");
        for (name, next) in &self.sequences {
            out.push_str(&format!("  {name:<44}{next:>20}\n"));
        }
        out
    }
}

/// The type of a target column, as the move converts a source value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int8,
    Int4,
    Bool,
    Text,
    Time,
    Uuid,
    Json,
}

impl Kind {
    /// The kind of a column of PostgreSQL type `udt_name`; `None`: not one the ledger uses.
    fn of(udt_name: &str) -> Option<Kind> {
        Some(match udt_name {
            "int8" => Kind::Int8,
            "int4" => Kind::Int4,
            "bool" => Kind::Bool,
            "text" => Kind::Text,
            "timestamptz" => Kind::Time,
            "uuid" => Kind::Uuid,
            "jsonb" => Kind::Json,
            _ => return None,
        })
    }

    fn pg_type(self) -> Type {
        match self {
            Kind::Int8 => Type::INT8,
            Kind::Int4 => Type::INT4,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Time => Type::TIMESTAMPTZ,
            Kind::Uuid => Type::UUID,
            Kind::Json => Type::JSONB,
        }
    }

    /// SQL NULL, typed for the column (the binary copy checks every value's type).
    fn null(self) -> Value {
        match self {
            Kind::Int8 => Box::new(None::<i64>),
            Kind::Int4 => Box::new(None::<i32>),
            Kind::Bool => Box::new(None::<bool>),
            Kind::Text => Box::new(None::<String>),
            Kind::Time => Box::new(None::<DateTime<Utc>>),
            Kind::Uuid => Box::new(None::<Uuid>),
            Kind::Json => Box::new(None::<Json<Box<RawValue>>>),
        }
    }
}

/// One converted value, ready for the binary copy.
type Value = Box<dyn ToSql + Send + Sync>;
/// One converted row.
type Row = Vec<Value>;

/// A source value converted for a column of `kind`, or why it cannot be, faithfully.
fn convert(kind: Kind, value: ValueRef<'_>) -> Result<Value, String> {
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("text that is not UTF-8 ({e})"))
    };
    Ok(match (kind, value) {
        (_, ValueRef::Null) => kind.null(),
        (Kind::Int8, ValueRef::Integer(i)) => Box::new(i),
        (Kind::Int4, ValueRef::Integer(i)) => Box::new(
            i32::try_from(i).map_err(|_| format!("{i} does not fit a PostgreSQL integer"))?,
        ),
        (Kind::Bool, ValueRef::Integer(0)) => Box::new(false),
        (Kind::Bool, ValueRef::Integer(1)) => Box::new(true),
        (Kind::Text, ValueRef::Text(t)) => Box::new(text(t)?),
        (Kind::Time, ValueRef::Text(t)) => Box::new(time(&text(t)?)?),
        (Kind::Uuid, ValueRef::Text(t)) => {
            let t = text(t)?;
            Box::new(Uuid::parse_str(&t).map_err(|e| format!("{t:?} is not a UUID ({e})"))?)
        }
        (Kind::Json, ValueRef::Text(t)) => {
            let t = text(t)?;
            Box::new(Json(
                RawValue::from_string(t).map_err(|e| format!("not JSON ({e})"))?,
            ))
        }
        (kind, other) => {
            return Err(format!(
                "{} where the target column is {:?}",
                describe(other),
                kind.pg_type().name()
            ));
        }
    })
}

/// An RFC 3339 time, refused if PostgreSQL's microseconds would round it.
fn time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e})"))?;
    if t.nanosecond() % 1000 != 0 {
        return Err(format!(
            "{text:?} is finer than PostgreSQL's microseconds and would be rounded"
        ));
    }
    Ok(t.with_timezone(&Utc))
}

/// A source value, for messages.
fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(i) => format!("the integer {i}"),
        ValueRef::Real(f) => format!("the real {f}"),
        ValueRef::Text(t) => format!("the text {:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// A table's columns, the target's order and kinds.
#[derive(Debug, Clone)]
struct TablePlan {
    name: &'static str,
    columns: Vec<(String, Kind)>,
}

impl TablePlan {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An identifier, quoted for SQL (both dialects).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Moves the festival in the SQLite file `source` into the empty PostgreSQL database `url`
/// (migrated first), all or nothing; see the module's documentation.
pub async fn move_festival(
    source: &Path,
    url: &str,
    settings: PostgresSettings,
) -> Result<MoveReport, MoveError> {
    let conn = open_source(source)?;
    let source_columns = source_columns(&conn).map_err(|e| source_error(source, e))?;

    let (mut client, migrations) = connect_migrated(url, settings).await?;
    let target = Target(DatabaseUrl::Postgres(url.to_owned()).to_string());
    let tx = client.transaction().await.map_err(target.at("beginning"))?;
    // A copy may take longer than a money statement may; a lock wait may not last for ever.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {TABLE_LOCK_TIMEOUT_MS}"
    ))
    .await
    .map_err(target.at("setting the timeouts"))?;
    lock_empty_tables(&tx, &target).await?;
    let target_columns = tx
        .query(
            "SELECT table_name::text, column_name::text, udt_name::text
               FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = ANY($1)
              ORDER BY table_name, ordinal_position",
            &[&table_names()],
        )
        .await
        .map_err(target.at("reading the target's columns"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect::<Vec<(String, String, String)>>();
    let plans = plans(&target_columns, &source_columns)?;

    let (feed_tx, mut feed) = mpsc::channel(BATCHES_IN_FLIGHT_MAX);
    let reader_plans = plans.clone();
    let path = source.to_owned();
    std::thread::Builder::new()
        .name("move-source".into())
        .spawn(move || read_source(&conn, &path, &reader_plans, &feed_tx))
        .map_err(|e| source_error(source, e))?;
    for plan in &plans {
        copy_table(&tx, &target, plan, &mut feed).await?;
    }
    let source_totals = match feed.recv().await {
        Some(Feed::Totals(t)) => t,
        Some(Feed::Failed(e)) => return Err(e),
        _ => return Err(source_error(source, "the reader stopped early")),
    };

    let sequences = set_sequences(&tx)
        .await
        .map_err(target.at("setting the sequences"))?;
    let target_totals = Totals::postgres(&*tx, &counted_tables())
        .await
        .map_err(target.at("adding up the target"))?;
    let differences = totals::differences(&source_totals, &target_totals);
    if !differences.is_empty() {
        return Err(MoveError::TotalsDiffer(differences));
    }
    tx.commit().await.map_err(target.at("committing"))?;
    Ok(MoveReport {
        migrations,
        sequences,
        source_totals,
        target_totals,
    })
}

/// The target, without its password, for its errors.
struct Target(String);

impl Target {
    /// A failure of the target at `step`, as a [`MoveError`].
    fn at(&self, step: &str) -> impl Fn(tokio_postgres::Error) -> MoveError + use<> {
        let (database, step) = (self.0.clone(), step.to_owned());
        move |e| MoveError::Target {
            database: database.clone(),
            step: step.clone(),
            source: classify(e),
        }
    }
}

/// Locks every ledger table of the target against writers until the move's transaction
/// ends (so none gets in between this check and the commit), and refuses a target with a
/// row in any of them.
async fn lock_empty_tables(
    tx: &tokio_postgres::Transaction<'_>,
    target: &Target,
) -> Result<(), MoveError> {
    let all = TABLES
        .iter()
        .chain(DERIVED)
        .map(|t| quote(t))
        .collect::<Vec<_>>()
        .join(", ");
    tx.batch_execute(&format!("LOCK TABLE {all} IN EXCLUSIVE MODE"))
        .await
        .map_err(target.at("locking the target's tables"))?;
    let mut occupied = Vec::new();
    for table in TABLES.iter().chain(DERIVED) {
        let has_rows: bool = tx
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", quote(table)),
                &[],
            )
            .await
            .map_err(target.at("looking whether the target is empty"))?
            .get(0);
        if has_rows {
            occupied.push((*table).to_owned());
        }
    }
    if occupied.is_empty() {
        Ok(())
    } else {
        Err(MoveError::TargetNotEmpty {
            database: target.0.clone(),
            tables: occupied,
        })
    }
}

/// Copies one table: its rows as the reading thread hands them over, through one binary
/// `COPY`, checked to be as many as were read.
async fn copy_table(
    tx: &tokio_postgres::Transaction<'_>,
    target: &Target,
    plan: &TablePlan,
    feed: &mut mpsc::Receiver<Feed>,
) -> Result<(), MoveError> {
    let step = format!("copying {}", plan.name);
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            quote(plan.name),
            plan.column_list()
        ))
        .await
        .map_err(target.at(&step))?;
    let types: Vec<Type> = plan.columns.iter().map(|(_, k)| k.pg_type()).collect();
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    loop {
        match feed.recv().await {
            Some(Feed::Rows(batch)) => {
                for row in &batch {
                    let values: Vec<&(dyn ToSql + Sync)> = row
                        .iter()
                        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                        .collect();
                    writer
                        .as_mut()
                        .write(&values)
                        .await
                        .map_err(target.at(&step))?;
                }
            }
            Some(Feed::TableDone(read)) => {
                let written = writer.as_mut().finish().await.map_err(target.at(&step))?;
                if written != read {
                    return Err(MoveError::TotalsDiffer(vec![format!(
                        "{}: {read} rows read, {written} written",
                        plan.name
                    )]));
                }
                return Ok(());
            }
            Some(Feed::Failed(e)) => return Err(e),
            Some(Feed::Totals(_)) | None => {
                return Err(MoveError::TotalsDiffer(vec![format!(
                    "{}: the source's reader stopped before the table's end",
                    plan.name
                )]));
            }
        }
    }
}

fn source_error(path: &Path, reason: impl std::fmt::Display) -> MoveError {
    MoveError::Source {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The source, read-only, in a read transaction whose snapshot every later read shares,
/// checked to be a ledger at this program's schema.
fn open_source(path: &Path) -> Result<Connection, MoveError> {
    if !path.is_file() {
        return Err(source_error(path, "no such file"));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| source_error(path, e))?;
    let found: i64 = (|| {
        conn.busy_timeout(std::time::Duration::from_millis(sqlite::BUSY_TIMEOUT_MS))?;
        conn.execute_batch("BEGIN")?;
        // The first read starts the snapshot.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    })()
    .map_err(|e| source_error(path, e))?;
    if found != sqlite::SCHEMA_VERSION {
        return Err(MoveError::SourceSchema {
            path: path.to_owned(),
            found,
        });
    }
    Ok(conn)
}

/// The source's tables and their columns; `Err` names a table the move would leave behind.
fn source_columns(conn: &Connection) -> Result<Vec<(String, Vec<String>)>, String> {
    let tables: Vec<String> = (|| {
        conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()
    })()
    .map_err(|e: rusqlite::Error| e.to_string())?;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        if DERIVED.contains(&table.as_str()) {
            continue;
        }
        if !TABLES.contains(&table.as_str()) {
            return Err(format!(
                "its table {table} is not one this program moves (a newer or foreign schema)"
            ));
        }
        let columns: Vec<String> = (|| {
            conn.prepare(&format!(
                "SELECT name FROM pragma_table_info({})",
                literal(&table)
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()
        })()
        .map_err(|e: rusqlite::Error| e.to_string())?;
        out.push((table, columns));
    }
    Ok(out)
}

/// A string literal for SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The tables whose rows the [`Totals`] count: [`TABLES`], then [`DERIVED`].
fn counted_tables() -> Vec<&'static str> {
    TABLES.iter().chain(DERIVED).copied().collect()
}

/// [`TABLES`] as owned strings, a query parameter.
fn table_names() -> Vec<String> {
    TABLES.iter().map(|t| (*t).to_owned()).collect()
}

/// Each table's columns in the target's order with their kinds, from the target's
/// `(table, column, type)` rows in column order, checked against the source's: the same
/// tables, the same column names.
fn plans(
    target: &[(String, String, String)],
    source: &[(String, Vec<String>)],
) -> Result<Vec<TablePlan>, MoveError> {
    let differs = |why: String| Err(MoveError::SchemaDiffers(why));
    let mut plans = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let mut columns = Vec::new();
        for (_, column, udt) in target.iter().filter(|(t, _, _)| t == table) {
            let Some(kind) = Kind::of(udt) else {
                return differs(format!(
                    "the target's {table}.{column} is of type {udt}, which the move does not know"
                ));
            };
            columns.push((column.clone(), kind));
        }
        let Some((_, source_columns)) = source.iter().find(|(t, _)| t == table) else {
            return differs(format!("the source has no table {table}"));
        };
        if columns.is_empty() {
            return differs(format!("the target has no table {table}"));
        }
        let mut ours: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let mut theirs: Vec<&str> = source_columns.iter().map(String::as_str).collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        if ours != theirs {
            return differs(format!(
                "{table} has the columns {theirs:?} in the source, {ours:?} in the target"
            ));
        }
        plans.push(TablePlan {
            name: table,
            columns,
        });
    }
    Ok(plans)
}

/// What the reading thread hands over.
enum Feed {
    /// The next rows of the current table.
    Rows(Vec<Row>),
    /// The current table is done: this many rows were read.
    TableDone(u64),
    /// Every table is done: the source's totals, in the same snapshot.
    Totals(Totals),
    /// The reading failed.
    Failed(MoveError),
}

/// The reading thread: every table of `plans` in order, converted, in batches, then the
/// totals. Stops when the receiver is gone (the move failed on the other side).
fn read_source(conn: &Connection, path: &Path, plans: &[TablePlan], feed: &mpsc::Sender<Feed>) {
    // `Err(None)`: the receiver is gone, nobody to tell.
    let send = |item: Feed| feed.blocking_send(item).map_err(|_| None);
    let result = (|| -> Result<(), Option<MoveError>> {
        for plan in plans {
            let read = read_table(conn, path, plan, &send)?;
            send(Feed::TableDone(read))?;
        }
        let totals =
            Totals::sqlite(conn, &counted_tables()).map_err(|e| Some(source_error(path, e)))?;
        send(Feed::Totals(totals))
    })();
    if let Err(Some(e)) = result {
        let _ = feed.blocking_send(Feed::Failed(e));
    }
}

/// Reads one table, handing its converted rows to `send` in batches; returns how many.
fn read_table(
    conn: &Connection,
    path: &Path,
    plan: &TablePlan,
    send: &impl Fn(Feed) -> Result<(), Option<MoveError>>,
) -> Result<u64, Option<MoveError>> {
    let failed = |e: rusqlite::Error| Some(source_error(path, format!("{}: {e}", plan.name)));
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {}",
            plan.column_list(),
            quote(plan.name)
        ))
        .map_err(failed)?;
    let mut rows = stmt.query([]).map_err(failed)?;
    let mut batch = Vec::with_capacity(BATCH_ROWS_MAX);
    let mut read = 0u64;
    while let Some(row) = rows.next().map_err(failed)? {
        read += 1;
        let mut values = Vec::with_capacity(plan.columns.len());
        for (i, (column, kind)) in plan.columns.iter().enumerate() {
            let value = row.get_ref(i).map_err(failed)?;
            values.push(convert(*kind, value).map_err(|reason| {
                let first = row
                    .get_ref(0)
                    .map(describe)
                    .unwrap_or_else(|e| e.to_string());
                Some(MoveError::BadValue {
                    table: plan.name.to_owned(),
                    column: column.clone(),
                    row: format!("{read} ({} = {first})", plan.columns[0].0),
                    reason,
                })
            })?);
        }
        batch.push(values);
        if batch.len() == BATCH_ROWS_MAX {
            send(Feed::Rows(std::mem::take(&mut batch)))?;
        }
    }
    if !batch.is_empty() {
        send(Feed::Rows(batch))?;
    }
    Ok(read)
}

/// Sets every identity column's sequence, and the card feed's, past the largest value in
/// use: the next one handed out is the largest plus one (1 for an empty table). Returns
/// each with its next value.
async fn set_sequences(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    let identities = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = ANY($1)
                AND is_identity = 'YES'
              ORDER BY table_name, column_name",
            &[&table_names()],
        )
        .await?;
    let mut out = Vec::with_capacity(identities.len() + 1);
    for row in identities {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        let next: i64 = tx
            .query_one(
                &format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2),
                                   (SELECT COALESCE(max({c}), 0) + 1 FROM {t}), false)",
                    c = quote(&column),
                    t = quote(&table)
                ),
                &[&quote(&table), &column],
            )
            .await?
            .get(0);
        out.push((format!("{table}.{column}"), next));
    }
    let next: i64 = tx
        .query_one(
            "SELECT setval($1::text::regclass, (SELECT COALESCE(max(version), 0) + 1 FROM cards), false)",
            &[&CARD_VERSION_SEQUENCE],
        )
        .await?
        .get(0);
    out.push((CARD_VERSION_SEQUENCE.to_owned(), next));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: Kind, value: ValueRef<'_>, expected: Result<(), &str>) {
        match (convert(kind, value), expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(part)) => assert!(e.contains(part), "{kind:?} {value:?}: {e:?}"),
            (got, expected) => panic!(
                "{kind:?} {value:?}: got {:?}, expected {expected:?}",
                got.map(|_| ())
            ),
        }
    }

    #[test]
    fn values_convert_faithfully_or_are_refused() {
        use ValueRef::{Blob, Integer, Null, Real, Text};
        for (kind, value, expected) in [
            (Kind::Int8, Integer(i64::MIN), Ok(())),
            (Kind::Int4, Integer(99), Ok(())),
            (Kind::Int4, Integer(1 << 31), Err("does not fit")),
            (Kind::Bool, Integer(0), Ok(())),
            (Kind::Bool, Integer(1), Ok(())),
            (Kind::Bool, Integer(2), Err("the integer 2")),
            (Kind::Text, Text(b"caf\xc3\xa9"), Ok(())),
            (Kind::Text, Text(b"\xff"), Err("not UTF-8")),
            (Kind::Text, Integer(5), Err("the integer 5")),
            (Kind::Time, Text(b"2026-07-01T21:14:02.123Z"), Ok(())),
            (
                Kind::Time,
                Text(b"2026-07-01T23:14:02.123456+02:00"),
                Ok(()),
            ),
            (
                Kind::Time,
                Text(b"2026-07-01T21:14:02.1234567Z"),
                Err("microseconds"),
            ),
            (Kind::Time, Text(b"yesterday"), Err("not an RFC 3339 time")),
            (
                Kind::Uuid,
                Text(b"5b0f7c7e-3c51-4a3e-9a53-6f5f3e1f2a10"),
                Ok(()),
            ),
            (Kind::Uuid, Text(b"5b0f7c7e"), Err("not a UUID")),
            (Kind::Json, Text(br#"{"b":1,"a":[1.10]}"#), Ok(())),
            (Kind::Json, Text(b"{"), Err("not JSON")),
            (Kind::Json, Real(1.5), Err("the real 1.5")),
            (Kind::Text, Blob(b"x"), Err("a blob of 1 bytes")),
            (Kind::Uuid, Null, Ok(())),
        ] {
            check(kind, value, expected);
        }
    }

    #[test]
    fn times_keep_their_instant_to_the_microsecond() {
        let t = time("2026-07-01T23:14:02.123456+02:00").unwrap();
        assert_eq!(
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "2026-07-01T21:14:02.123456Z"
        );
    }

    #[test]
    fn every_sqlite_table_is_moved_and_every_ledger_type_known() {
        let mut conn = Connection::open_in_memory().unwrap();
        sqlite::migrate(&mut conn).unwrap();
        let tables: Vec<String> = source_columns(&conn)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let mut expected: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        expected.sort();
        assert_eq!(tables, expected);
        for udt in [
            "int8",
            "int4",
            "bool",
            "text",
            "timestamptz",
            "uuid",
            "jsonb",
        ] {
            assert!(Kind::of(udt).is_some(), "{udt}");
        }
        assert_eq!(Kind::of("numeric"), None);
    }
}
