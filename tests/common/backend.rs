//! The two databases a ledger runs on, as the black-box tests see them: where a test's
//! database lives, how it is made and dropped, and how a test reads or edits it directly.
//!
//! Every ledger test runs once per [`Backend`] ([`crate::on_both_backends`]): `sqlite::name`
//! on a SQLite file, `postgres::name` on a PostgreSQL database of its own on the server of
//! `CASHLESS_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`, a superuser),
//! created from a seeded template and dropped when the test's [`crate::common::Ledger`] is.
//! Any difference between the two runs of one test is a bug in one of the backends.
//!
//! What a test reads from the database comes back as [`Cell`]s that both backends produce
//! alike: PostgreSQL's booleans as integers 0 and 1, its times as the ledger's RFC 3339
//! text with milliseconds (`2026-07-01T18:00:00.000Z`, how the SQLite store writes them),
//! uuids as their lowercase text, and JSON (jsonb there, text here) in one canonical
//! spelling (keys sorted, no spaces). So a fingerprint taken on SQLite and one taken on
//! PostgreSQL compare, not only two taken on the same database.
//!
//! The helpers are synchronous (they run inside `wait_for` conditions and in tests without
//! a runtime): PostgreSQL's are run on a small runtime of their own and waited for.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, NoTls};

/// The server the PostgreSQL runs use when `CASHLESS_TEST_PG` is not set.
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Databases this harness creates start with this, then the test process's id.
const PG_PREFIX: &str = "cashless_suite_";
/// How long the one statement of a helper may take before the test fails instead of hanging.
const PG_DEADLINE: Duration = Duration::from_secs(120);
/// Columns that hold JSON: jsonb in PostgreSQL, text in SQLite. The fingerprint spells their
/// values canonically so the two backends compare; the PostgreSQL side checks that every
/// jsonb column it meets is named here.
const JSON_COLUMNS: &[&str] = &["flags", "details"];
/// PostgreSQL's bookkeeping of its schema (SQLite keeps it in `PRAGMA user_version`): not
/// ledger data, left out of the fingerprint.
const PG_BOOKKEEPING: &[&str] = &["schema_migrations"];

/// Which database a ledger under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One value read from the database, the same from both backends.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    /// The value as JSON (a blob as its hex text).
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::from(*n),
            Cell::Real(f) => Value::from(*f),
            Cell::Text(t) => Value::from(t.as_str()),
            Cell::Blob(b) => Value::from(hex(b)),
        }
    }

    /// How the fingerprint writes the value.
    fn fingerprint(&self) -> String {
        match self {
            Cell::Null => "NULL".to_owned(),
            Cell::Int(n) => n.to_string(),
            Cell::Real(f) => format!("{f:?}"),
            Cell::Text(t) => format!("{t:?}"),
            Cell::Blob(b) => format!("x'{}'", hex(b)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

/// The rows of a query: column names and values.
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Rows {
    /// Each row as a JSON object of its columns.
    pub fn to_json(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let object = self
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(name, cell)| (name.clone(), cell.to_json()))
                    .collect();
                Value::Object(object)
            })
            .collect()
    }
}

/// A test's own database.
pub enum Database {
    /// A SQLite file (and its WAL files) in the test's temporary directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database of its own, dropped with this value.
    Postgres(PgDatabase),
}

impl Database {
    /// A new database of `backend` without any schema (a SQLite file in `dir`, not yet
    /// created): whoever opens it first gives it its schema.
    pub fn create(backend: Backend, dir: &Path) -> Database {
        match backend {
            Backend::Sqlite => Database::Sqlite(dir.join("ledger.db")),
            Backend::Postgres => Database::Postgres(PgDatabase::create()),
        }
    }

    /// Like [`Database::create`], a PostgreSQL database sorting text by ICU's English rules
    /// ([`PgDatabase::create_with_english_collation`]).
    pub fn create_with_english_collation(backend: Backend, dir: &Path) -> Database {
        match backend {
            Backend::Sqlite => Database::Sqlite(dir.join("ledger.db")),
            Backend::Postgres => Database::Postgres(PgDatabase::create_with_english_collation()),
        }
    }

    /// Like [`Database::create`], at the current schema (`cashless ledger migrate`).
    pub fn migrated(backend: Backend, dir: &Path) -> Database {
        let database = Database::create(backend, dir);
        migrate(&database.url());
        database
    }

    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// The value of `--database` for the binary.
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite:{}", path.display()),
            Database::Postgres(pg) => pg.url(),
        }
    }

    /// The rows of one SQL query (JSON columns in their canonical spelling).
    pub fn query(&self, sql: &str) -> Rows {
        let mut rows = self.query_as_stored(sql);
        for row in &mut rows.rows {
            for (cell, column) in row.iter_mut().zip(&rows.columns) {
                *cell = canonical_cell(column, cell);
            }
        }
        rows
    }

    fn query_as_stored(&self, sql: &str) -> Rows {
        match self {
            Database::Sqlite(path) => {
                let conn = open_sqlite_read_only(path);
                sqlite_rows(&conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Database::Postgres(pg) => {
                let sql_owned = sql.to_owned();
                pg.with_client(move |client| {
                    Box::pin(async move { pg_rows(&*client, &sql_owned).await })
                })
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// Runs one SQL statement that writes; returns the number of rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        match self {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open ledger database");
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("set busy timeout");
                let changed = conn
                    .execute(sql, [])
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                u64::try_from(changed).expect("a row count fits in u64")
            }
            Database::Postgres(pg) => {
                let sql_owned = sql.to_owned();
                pg.with_client(move |client| {
                    Box::pin(async move {
                        client
                            .execute(&sql_owned, &[])
                            .await
                            .map_err(|e| error_text(&e))
                    })
                })
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// Like [`Database::execute`], past PostgreSQL's append-only triggers on postings and
    /// the audit log, as whoever holds the superuser could (`session_replication_role =
    /// replica` for this one transaction): to prove that the audit finds what such a person
    /// changed. SQLite has no such triggers.
    pub fn tamper(&self, sql: &str) -> u64 {
        match self {
            Database::Sqlite(_) => self.execute(sql),
            Database::Postgres(pg) => {
                let sql_owned = sql.to_owned();
                pg.with_client(move |client| {
                    Box::pin(async move {
                        let tx = client.transaction().await.map_err(|e| error_text(&e))?;
                        tx.batch_execute("SET LOCAL session_replication_role = replica")
                            .await
                            .map_err(|e| error_text(&e))?;
                        let changed = tx
                            .execute(&sql_owned, &[])
                            .await
                            .map_err(|e| error_text(&e))?;
                        tx.commit().await.map_err(|e| error_text(&e))?;
                        Ok(changed)
                    })
                })
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// Every row of every ledger table in one consistent snapshot: tables sorted by name,
    /// each row as `column=value` for its columns except `skip`, rows sorted.
    pub fn fingerprint(&self, only: Option<&[&str]>, skip: &[(&str, &str)]) -> String {
        let tables = match self {
            Database::Sqlite(path) => {
                let conn = open_sqlite_read_only(path);
                // One read transaction: a consistent snapshot even while the server writes.
                conn.execute_batch("BEGIN").expect("begin read transaction");
                let names = sqlite_rows(
                    &conn,
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )
                .expect("list tables");
                let names = table_names(names, only).unwrap_or_else(|e| panic!("{e}"));
                let tables = names
                    .into_iter()
                    .map(|name| {
                        let rows = sqlite_rows(&conn, &select_all(&name))
                            .unwrap_or_else(|e| panic!("read table {name}: {e}"));
                        (name, rows)
                    })
                    .collect::<Vec<_>>();
                conn.execute_batch("COMMIT").expect("end read transaction");
                tables
            }
            Database::Postgres(pg) => {
                let only: Option<Vec<String>> =
                    only.map(|o| o.iter().map(|t| (*t).to_owned()).collect());
                pg.with_client(move |client| {
                    Box::pin(async move { pg_snapshot(client, only).await })
                })
                .unwrap_or_else(|e| panic!("fingerprint: {e}"))
            }
        };
        let mut out = String::new();
        for (table, rows) in tables {
            let keep: Vec<usize> = (0..rows.columns.len())
                .filter(|&i| !skip.contains(&(table.as_str(), rows.columns[i].as_str())))
                .collect();
            let mut lines: Vec<String> = rows
                .rows
                .iter()
                .map(|row| {
                    keep.iter()
                        .map(|&i| {
                            let name = &rows.columns[i];
                            format!("{name}={}", canonical_cell(name, &row[i]).fingerprint())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect();
            lines.sort();
            out.push_str(&format!("== {table} ({} rows)\n", lines.len()));
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

/// Another writer's transaction holding the write lock of every ledger table, as a second
/// process with database access could; released (rolled back) when dropped.
pub enum WriteLock {
    /// A `BEGIN IMMEDIATE` transaction on a connection of its own.
    Sqlite(rusqlite::Connection),
    /// A transaction holding `LOCK TABLE ... IN EXCLUSIVE MODE` on every table (reads pass,
    /// writes wait), on a connection of the helpers' runtime: the sender ends it, the
    /// receiver hears that it has ended.
    Postgres(
        Option<tokio::sync::oneshot::Sender<()>>,
        std::sync::mpsc::Receiver<()>,
    ),
}

impl Database {
    /// Takes the write lock of every table, as another writer; see [`WriteLock`].
    pub fn hold_write_lock(&self) -> WriteLock {
        match self {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open ledger database");
                conn.execute_batch("BEGIN IMMEDIATE")
                    .expect("take the write lock");
                WriteLock::Sqlite(conn)
            }
            Database::Postgres(pg) => {
                let url = pg.url();
                let (release, released) = tokio::sync::oneshot::channel::<()>();
                let (ended_tx, ended) = std::sync::mpsc::channel();
                pg_block(async move {
                    let client = pg_connect(&url).await?;
                    let tables = client
                        .query(
                            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables \
                             WHERE schemaname = current_schema()",
                            &[],
                        )
                        .await
                        .map_err(|e| error_text(&e))?
                        .first()
                        .map(|row| row.get::<_, String>(0))
                        .ok_or("no tables")?;
                    client
                        .batch_execute(&format!("BEGIN; LOCK TABLE {tables} IN EXCLUSIVE MODE"))
                        .await
                        .map_err(|e| error_text(&e))?;
                    tokio::spawn(async move {
                        let _ = released.await;
                        let _ = client.batch_execute("ROLLBACK").await;
                        drop(client);
                        let _ = ended_tx.send(());
                    });
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("take the write lock: {e}"));
                WriteLock::Postgres(Some(release), ended)
            }
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        match self {
            WriteLock::Sqlite(conn) => {
                let _ = conn.execute_batch("ROLLBACK");
            }
            WriteLock::Postgres(release, ended) => {
                if let Some(release) = release.take() {
                    let _ = release.send(());
                }
                let _ = ended.recv_timeout(PG_DEADLINE);
            }
        }
    }
}

/// `cashless ledger migrate --database URL`, which must succeed.
fn migrate(url: &str) {
    let out = std::process::Command::new(super::BIN)
        .args(["ledger", "migrate", "--database", url])
        .env_remove("CASHLESS_DATABASE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cashless ledger migrate");
    super::assert_success("cashless ledger migrate", &out);
}

/// `only`'s tables, in name order, after checking that each exists; else all of `names`.
fn table_names(names: Rows, only: Option<&[&str]>) -> Result<Vec<String>, String> {
    let mut tables: Vec<String> = names
        .rows
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Cell::Text(name)) => Some(name),
            _ => None,
        })
        .collect();
    tables.sort();
    if let Some(only) = only {
        if let Some(name) = only.iter().find(|name| !tables.iter().any(|t| t == *name)) {
            return Err(format!(
                "no table {name} in the database (tables: {tables:?})"
            ));
        }
        tables.retain(|t| only.contains(&t.as_str()));
    }
    Ok(tables)
}

fn select_all(table: &str) -> String {
    format!("SELECT * FROM \"{}\"", table.replace('"', "\"\""))
}

/// A JSON column's text in one spelling (keys sorted, no spaces); other cells unchanged.
fn canonical_cell(column: &str, cell: &Cell) -> Cell {
    match cell {
        Cell::Text(text) if JSON_COLUMNS.contains(&column) => {
            match serde_json::from_str::<Value>(text) {
                Ok(value) => Cell::Text(canonical_json(&value)),
                Err(_) => cell.clone(),
            }
        }
        _ => cell.clone(),
    }
}

/// JSON text with every object's keys sorted and no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), canonical_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

/// A read-only connection to a SQLite database (does not checkpoint or recover).
pub fn open_sqlite_read_only(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open ledger database read-only");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("set busy timeout");
    conn
}

fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<Rows> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare(sql)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let width = columns.len();
    let rows = stmt
        .query_map([], |row| {
            (0..width)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(n) => Cell::Int(n),
                        ValueRef::Real(f) => Cell::Real(f),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                    })
                })
                .collect::<rusqlite::Result<Vec<Cell>>>()
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Rows { columns, rows })
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// The superuser's URL of the PostgreSQL server under test.
pub fn pg_admin_url() -> String {
    std::env::var("CASHLESS_TEST_PG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_PG.to_owned())
}

/// `base` (a `postgres://` URL) naming the database `db` instead (its query kept).
fn pg_url_of(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((head, query)) => (head, format!("?{query}")),
        None => (base, String::new()),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let server = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    format!("{server}/{db}{query}")
}

/// The runtime PostgreSQL helpers run on: its own, so they can be waited for from any
/// thread, inside a test's runtime or outside any.
fn pg_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pg-test-helper")
            .enable_all()
            .build()
            .expect("build the PostgreSQL helpers' runtime")
    })
}

/// Runs `work` on the helpers' runtime and waits for it (at most [`PG_DEADLINE`]).
fn pg_block<T: Send + 'static>(
    work: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    pg_runtime().spawn(async move {
        let result = match tokio::time::timeout(PG_DEADLINE, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer from PostgreSQL within {PG_DEADLINE:?}")),
        };
        let _ = tx.send(result);
    });
    rx.recv()
        .unwrap_or_else(|_| Err("the PostgreSQL helper panicked".to_owned()))
}

/// A driver error with its causes (the server's message is in the source).
fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

async fn pg_connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| error_text(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A connection to the server as its superuser; without a server the test fails here,
/// saying what to do.
async fn pg_admin() -> Result<Client, String> {
    let url = pg_admin_url();
    pg_connect(&url).await.map_err(|e| {
        format!(
            "PostgreSQL is not reachable at {url}: {e}\n\
             The postgres:: variants of the ledger tests need a PostgreSQL server with a \
             superuser. On Debian: `apt-get install postgresql`, then start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             (see the README); or set CASHLESS_TEST_PG=postgres://USER@HOST:PORT/DB \
             to another server's superuser."
        )
    })
}

/// Runs one or more statements as the superuser on the server's maintenance database.
fn pg_admin_batch(sql: String) -> Result<(), String> {
    pg_block(async move {
        pg_admin()
            .await?
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("{sql}: {}", error_text(&e)))
    })
}

/// A PostgreSQL database of one test, dropped (`WITH (FORCE)`) when this is.
pub struct PgDatabase {
    name: String,
    /// The superuser's URL of a server a test started for itself (`pg_server.rs`), or `None`
    /// for the shared server of `CASHLESS_TEST_PG`. A private server's database is not
    /// dropped: the server may be down by then, and its data directory goes with the test.
    server: Option<String>,
    /// The helpers' connection, opened on first use and kept: a fingerprint per refused
    /// input would otherwise open hundreds of connections.
    client: Arc<tokio::sync::Mutex<Option<Client>>>,
}

type PgWork<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

impl PgDatabase {
    /// A new database, a copy of the seeded template; returns it and the tokens of bar-1,
    /// bar-2 and cp-1 in it.
    pub fn from_template() -> (PgDatabase, (String, String, String)) {
        let template = pg_template();
        let db = PgDatabase::named(PgDatabase::next_name());
        // PostgreSQL copies a template only while nobody else uses it; copies made by this
        // process one at a time never meet.
        static COPYING: Mutex<()> = Mutex::new(());
        {
            let _one_at_a_time = COPYING.lock().unwrap_or_else(|e| e.into_inner());
            pg_admin_batch(format!(
                "CREATE DATABASE {} TEMPLATE {}",
                db.name, template.name
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
        (db, template.tokens.clone())
    }

    /// A new empty database, without any schema.
    pub fn create() -> PgDatabase {
        PgDatabase::create_with("")
    }

    /// A new empty database whose text sorts by ICU's English rules (punctuation apart from
    /// byte order: `cut_rate` before `cut-rate`), not byte by byte: a query that forgets to
    /// ask for byte order (SQLite's) gives another order than SQLite, and a comparison of the
    /// two shows it.
    pub fn create_with_english_collation() -> PgDatabase {
        PgDatabase::create_with(" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    }

    fn create_with(options: &str) -> PgDatabase {
        let db = PgDatabase::named(PgDatabase::next_name());
        pg_admin_batch(format!("CREATE DATABASE {}{options}", db.name))
            .unwrap_or_else(|e| panic!("{e}"));
        db
    }

    /// A new database on the server of `server_url` (a superuser's URL), seeded through the
    /// admin CLI as the template is; returns it and the tokens of bar-1, bar-2 and cp-1.
    pub fn seeded_on(server_url: &str) -> (PgDatabase, (String, String, String)) {
        let mut db = PgDatabase::named(PgDatabase::next_name());
        db.server = Some(server_url.to_owned());
        let url = server_url.to_owned();
        let create = format!("CREATE DATABASE {}", db.name);
        pg_block(async move {
            pg_connect(&url)
                .await?
                .batch_execute(&create)
                .await
                .map_err(|e| format!("{create}: {}", error_text(&e)))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let tokens = super::seed(&db.url(), None);
        (db, tokens)
    }

    fn named(name: String) -> PgDatabase {
        PgDatabase {
            name,
            server: None,
            client: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// A name no other database of this process has: `cashless_suite_<pid>_<n>`.
    fn next_name() -> String {
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CREATED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!("{PG_PREFIX}{}_{n}", std::process::id())
    }

    pub fn url(&self) -> String {
        match &self.server {
            Some(server) => pg_url_of(server, &self.name),
            None => pg_url_of(&pg_admin_url(), &self.name),
        }
    }

    /// Runs `work` with the helpers' connection to this database (opened if need be).
    fn with_client<T: Send + 'static>(
        &self,
        work: impl for<'c> FnOnce(&'c mut Client) -> PgWork<'c, T> + Send + 'static,
    ) -> Result<T, String> {
        let client = Arc::clone(&self.client);
        let url = self.url();
        pg_block(async move {
            let mut guard = client.lock().await;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(pg_connect(&url).await?);
            }
            let client = guard.as_mut().expect("connected just now");
            work(client).await
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = self.client.try_lock() {
            client.take();
        }
        if self.server.is_some() {
            return;
        }
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = pg_admin_batch(sql) {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// The seeded database every PostgreSQL test copies, made once per test process.
struct PgTemplate {
    name: String,
    /// The tokens of bar-1, bar-2 and cp-1 in it (and in every copy).
    tokens: (String, String, String),
}

fn pg_template() -> &'static PgTemplate {
    static TEMPLATE: OnceLock<PgTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        drop_stale_databases();
        let name = format!("{PG_PREFIX}{}_template", std::process::id());
        // Each alone: PostgreSQL runs neither inside a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            pg_admin_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        let url = pg_url_of(&pg_admin_url(), &name);
        let seeded = std::panic::catch_unwind(|| super::seed(&url, None));
        match seeded {
            Ok(tokens) => PgTemplate { name, tokens },
            Err(panic) => {
                let _ = pg_admin_batch(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                std::panic::resume_unwind(panic)
            }
        }
    })
}

/// Drops the databases of test processes that are gone (killed before they could drop
/// their own): `cashless_suite_<pid>_...` whose process does not exist.
fn drop_stale_databases() {
    let stale = pg_block(async {
        let admin = pg_admin().await?;
        let rows = admin
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE $1",
                &[&format!("{PG_PREFIX}%")],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(rows
            .into_iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for name in stale {
        let pid = name[PG_PREFIX.len()..]
            .split('_')
            .next()
            .unwrap_or_default();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = pg_admin_batch(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// How a column of a PostgreSQL type is read into a [`Cell`].
#[derive(Clone, Copy)]
enum Read {
    Int,
    Real,
    Text,
    /// `numeric` (what `SUM` of a bigint gives): its text, an integer when it is one.
    Numeric,
    Blob,
}

/// The rows of `sql`, each value in the form SQLite gives it (see the module's text).
///
/// The query is prepared to learn its columns' types, then run wrapped in a `SELECT` that
/// turns each column into an integer, a float, bytes or text in the SQLite store's format.
async fn pg_rows(client: &impl GenericClient, sql: &str) -> Result<Rows, String> {
    let statement = client.prepare(sql).await.map_err(|e| error_text(&e))?;
    let columns: Vec<String> = statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    if columns.is_empty() {
        return Err("the statement returns no columns".to_owned());
    }
    let mut exprs = Vec::new();
    let mut reads = Vec::new();
    for (i, column) in statement.columns().iter().enumerate() {
        let c = format!("q.c{i}");
        let (expr, read) = match *column.type_() {
            Type::BOOL => (
                format!("CASE WHEN {c} THEN 1::int8 WHEN NOT {c} THEN 0::int8 END"),
                Read::Int,
            ),
            Type::INT2 | Type::INT4 | Type::INT8 => (format!("{c}::int8"), Read::Int),
            Type::FLOAT4 | Type::FLOAT8 => (format!("{c}::float8"), Read::Real),
            Type::NUMERIC => (format!("{c}::text"), Read::Numeric),
            Type::TIMESTAMPTZ => (
                format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"),
                Read::Text,
            ),
            Type::BYTEA => (c, Read::Blob),
            Type::JSON | Type::JSONB => {
                assert!(
                    JSON_COLUMNS.contains(&column.name()),
                    "the JSON column {} is missing from JSON_COLUMNS in tests/common/backend.rs",
                    column.name()
                );
                (format!("{c}::text"), Read::Text)
            }
            _ => (format!("{c}::text"), Read::Text),
        };
        exprs.push(expr);
        reads.push(read);
    }
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let wrapped = format!(
        "SELECT {} FROM ({sql}) AS q({})",
        exprs.join(", "),
        aliases.join(", ")
    );
    let rows = client
        .query(&wrapped, &[])
        .await
        .map_err(|e| error_text(&e))?;
    let rows = rows
        .iter()
        .map(|row| {
            reads
                .iter()
                .enumerate()
                .map(|(i, read)| {
                    let cell = match read {
                        Read::Int => row.get::<_, Option<i64>>(i).map(Cell::Int),
                        Read::Real => row.get::<_, Option<f64>>(i).map(Cell::Real),
                        Read::Text => row.get::<_, Option<String>>(i).map(Cell::Text),
                        Read::Blob => row.get::<_, Option<Vec<u8>>>(i).map(Cell::Blob),
                        Read::Numeric => row
                            .get::<_, Option<String>>(i)
                            .map(|t| t.parse().map_or(Cell::Text(t), Cell::Int)),
                    };
                    cell.unwrap_or(Cell::Null)
                })
                .collect()
        })
        .collect();
    Ok(Rows { columns, rows })
}

/// Every ledger table's rows in one read-only snapshot (a repeatable-read transaction).
async fn pg_snapshot(
    client: &mut Client,
    only: Option<Vec<String>>,
) -> Result<Vec<(String, Rows)>, String> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| error_text(&e))?;
    let bookkeeping = PG_BOOKKEEPING
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = pg_rows(
        &tx,
        &format!(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename NOT IN ({bookkeeping}) ORDER BY tablename"
        ),
    )
    .await?;
    let only: Option<Vec<&str>> = only
        .as_ref()
        .map(|o| o.iter().map(String::as_str).collect());
    let mut tables = Vec::new();
    for name in table_names(names, only.as_deref())? {
        let rows = pg_rows(&tx, &select_all(&name))
            .await
            .map_err(|e| format!("read table {name}: {e}"))?;
        tables.push((name, rows));
    }
    tx.commit().await.map_err(|e| error_text(&e))?;
    Ok(tables)
}
