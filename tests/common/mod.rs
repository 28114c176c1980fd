//! Black-box harness shared by the ledger's integration tests.
//!
//! Every test gets its own [`Ledger`]: a fresh temporary directory and a database of its
//! own on one of the two [`Backend`]s (a SQLite file in the directory, or a PostgreSQL
//! database; see `backend.rs`), seeded through the real admin CLI (`cashless ledger terminal
//! add`, `staff add`, `product add`; run once per test binary and backend into a template
//! database that each test copies, because argon2 PIN hashing makes seeding slow in debug
//! builds), then the real `cashless ledger serve` on `127.0.0.1:0`. Tests talk to it over
//! real HTTP and inspect the database through backend-neutral helpers ([`Ledger::query`],
//! [`Ledger::db_fingerprint`], ...). The server process is killed when the `Ledger` is
//! dropped, also when a test panics; a PostgreSQL database is dropped after it.
//!
//! A test written once as `async fn name(backend: Backend)` runs on both backends through
//! [`on_both_backends!`](crate::on_both_backends), as `sqlite::name` and `postgres::name`.
//!
//! Timing: nothing here sleeps a fixed time as an assertion; waits poll a condition with a
//! deadline ([`wait_for`]).
#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod ntag424;
pub mod pcsc;
pub mod pg_server;
pub mod terminal;

pub use backend::{Backend, Cell, Rows};
use backend::{Database, PgDatabase};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_cashless");

/// How long the server may take to print its `listening on` line and answer `/health`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Per-request timeout of the harness's HTTP client: far above any sane answer time, so that
/// a hung server fails the test instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Staff seeded in every ledger: (id, name, role, PIN).
pub const STAFF: &[(&str, &str, &str, &str)] = &[
    ("s-bar", "Bar Staff", "bar", "1234"),
    ("s-cash", "Cashier", "cashier", "2345"),
    ("s-super", "Supervisor", "supervisor", "3456"),
];
/// Staff id used by [`order_body`].
pub const BAR_STAFF: &str = "s-bar";
/// Staff id used by [`recharge_body`] and [`Ledger::topup`].
pub const CASH_STAFF: &str = "s-cash";
/// A supervisor: may sell, top up and void.
pub const SUPER_STAFF: &str = "s-super";

/// The point of sale of the bar terminals and of every seeded product.
pub const BAR_POS: &str = "Main Bar";
/// The point of sale of the checkpoint terminal.
pub const CHECKPOINT_POS: &str = "Entrance";

/// Products seeded at [`BAR_POS`]: (id, name, price in cents).
pub const PRODUCTS: &[(&str, &str, i64)] = &[
    ("beer-05", "Beer 0.5 l", 450),
    ("water", "Water", 200),
    ("cocktail", "Cocktail", 900),
];
pub const BEER_CENTS: i64 = 450;
pub const WATER_CENTS: i64 = 200;
pub const COCKTAIL_CENTS: i64 = 900;

/// Default limits of the ledger configuration (docs/interfaces.md).
pub const RECHARGE_MAX_CENTS: i64 = 50_000;
pub const BALANCE_MAX_CENTS: i64 = 100_000;

/// Generates the tests `sqlite::NAME` and `postgres::NAME` for each listed
/// `async fn NAME(backend: Backend)`, as `#[tokio::test]`s, or with the attributes written
/// before the name (e.g. `#[tokio::test(flavor = "multi_thread")] NAME`).
#[macro_export]
macro_rules! on_both_backends {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $( $crate::on_both_backends!(@one [$(#[$attr])*] $name Sqlite); )*
        }
        mod postgres {
            $( $crate::on_both_backends!(@one [$(#[$attr])*] $name Postgres); )*
        }
    };
    (@one [] $name:ident $backend:ident) => {
        $crate::on_both_backends!(@one [#[tokio::test]] $name $backend);
    };
    (@one [$(#[$attr:meta])+] $name:ident $backend:ident) => {
        $(#[$attr])+
        async fn $name() {
            super::$name($crate::common::Backend::$backend).await
        }
    };
}

/// Where a new [`Ledger`]'s database comes from.
enum Origin {
    /// A copy of the seeded template of the backend (the shared PostgreSQL server's).
    Template(Backend),
    /// A new database, seeded, on the PostgreSQL server of this superuser's URL.
    Server(String),
}

/// One running ledger on its own database.
pub struct Ledger {
    /// Temporary directory holding the config file, the server logs, files a test writes
    /// and, on SQLite, the database. Removed when the `Ledger` is dropped (after the server
    /// is killed).
    pub dir: tempfile::TempDir,
    /// The database: a SQLite file in `dir`, or a PostgreSQL database of this ledger's own.
    database: Database,
    /// `http://127.0.0.1:PORT` of the current server process (changes on [`Ledger::restart`]).
    pub base_url: String,
    /// Token of terminal "bar-1" (kind bar, point of sale "Main Bar").
    pub bar_token: String,
    /// Token of terminal "bar-2" (kind bar, point of sale "Main Bar").
    pub bar2_token: String,
    /// Token of terminal "cp-1" (kind checkpoint, point of sale "Entrance").
    pub checkpoint_token: String,
    /// The config file passed with `--config`, if the ledger was started with one.
    pub config_path: Option<PathBuf>,
    /// Environment variables set for `serve` (besides `RUST_LOG`).
    pub server_env: Vec<(String, String)>,
    /// HTTP client shared by all requests of this ledger.
    pub client: reqwest::Client,
    /// The running `cashless ledger serve` process, if any.
    child: Option<Child>,
    /// Number of server processes started so far; names the stderr log files.
    starts: u32,
    /// Next `terminal_seq` per token, for [`Ledger::seq`].
    seqs: Mutex<HashMap<String, i64>>,
    /// Lines the current server printed on stdout (after `listening on`), drained by a thread
    /// so that a chatty server can never block on a full pipe.
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body parsed as JSON; `Value::Null` if it is not JSON (or empty).
    pub body: Value,
    /// The body's bytes, exactly as received.
    pub raw: Vec<u8>,
}

impl Resp {
    /// `error.code` of an error body, if there is one.
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }

    /// A header's value as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status code; the panic message shows the whole response.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.raw)
        );
        self
    }

    /// Asserts an error response: status, `error.code`, and the error shape of the spec
    /// (`message` and `request_id` strings). Returns `error.details` (or `Null`).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        self.assert_status(status);
        assert_eq!(
            self.error_code(),
            Some(code),
            "expected error code {code}: {}",
            String::from_utf8_lossy(&self.raw)
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "an error is JSON, got Content-Type {content_type:?}"
        );
        let err = &self.body["error"];
        assert!(
            err["message"].is_string(),
            "error.message must be a string: {}",
            self.body
        );
        assert!(
            err["request_id"].is_string(),
            "error.request_id must be a string: {}",
            self.body
        );
        err["details"].clone()
    }

    /// Whether the response carries `Idempotent-Replayed: true`.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// Runs an admin command and returns its output, with the database (its `--database`
/// value) and config given.
fn run_admin(database: &str, config_path: Option<&Path>, args: &[&str]) -> Output {
    run_admin_with_stdin(database, config_path, args, None)
}

fn run_admin_with_stdin(
    database: &str,
    config_path: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("ledger").args(args);
    cmd.arg("--database").arg(database);
    if let Some(config) = config_path {
        cmd.arg("--config").arg(config);
    }
    cmd.env_remove("CASHLESS_DATABASE")
        .env_remove("CASHLESS_LISTEN")
        .env_remove("CASHLESS_STRIPE_WEBHOOK_SECRETS")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN} ledger {args:?}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .expect("cannot write the command's stdin");
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot run {BIN} ledger {args:?}: {e}"))
}

/// Asserts that an admin command succeeded; returns its stdout.
#[track_caller]
pub fn assert_success(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bearer token printed by `terminal add`: alone on the last non-empty stdout line.
pub fn token_from(out: &Output) -> String {
    let stdout = assert_success("terminal add", out);
    let token = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("terminal add printed no token:\n{stdout}"));
    assert!(
        !token.contains(char::is_whitespace),
        "the last line of terminal add must be the token alone, got {token:?}"
    );
    token
}

impl Ledger {
    /// A fresh, seeded ledger on SQLite with the default configuration, serving on a free
    /// port.
    pub async fn start() -> Ledger {
        Self::start_on(Backend::Sqlite).await
    }

    /// Like [`Ledger::start`], on `backend`.
    pub async fn start_on(backend: Backend) -> Ledger {
        Self::start_inner(Origin::Template(backend), None, &[]).await
    }

    /// Like [`Ledger::start`], with `toml` written to a config file passed with `--config`
    /// to `serve` and to every admin command.
    pub async fn start_with_config(toml: &str) -> Ledger {
        Self::start_with_config_on(Backend::Sqlite, toml).await
    }

    /// Like [`Ledger::start_with_config`], on `backend`.
    pub async fn start_with_config_on(backend: Backend, toml: &str) -> Ledger {
        Self::start_inner(Origin::Template(backend), Some(toml), &[]).await
    }

    /// A ledger on a new database on the PostgreSQL server of `server_url` (a superuser's
    /// URL; a server the test started itself, see `pg_server.rs`), seeded through the admin
    /// CLI, with `toml` as its config file. The database is not dropped afterwards: it goes
    /// with that server.
    pub async fn start_on_postgres_server(server_url: &str, toml: &str) -> Ledger {
        Self::start_inner(Origin::Server(server_url.to_owned()), Some(toml), &[]).await
    }

    /// [`Ledger::start_on_postgres_server`] with environment variables for `serve`.
    pub async fn start_on_postgres_server_with_env(
        server_url: &str,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Ledger {
        Self::start_inner(Origin::Server(server_url.to_owned()), Some(toml), env).await
    }

    /// Like [`Ledger::start_with_config_on`], with environment variables for `serve` (e.g.
    /// `CASHLESS_STRIPE_WEBHOOK_SECRETS`).
    pub async fn start_with_config_and_env_on(
        backend: Backend,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Ledger {
        Self::start_inner(Origin::Template(backend), Some(toml), env).await
    }

    async fn start_inner(origin: Origin, config: Option<&str>, env: &[(&str, &str)]) -> Ledger {
        let dir = tempfile::Builder::new()
            .prefix("cashless-test-")
            .tempdir()
            .expect("create temp dir");
        let config_path = config.map(|toml| {
            let path = dir.path().join("ledger.toml");
            std::fs::write(&path, toml).expect("write config file");
            path
        });
        let db_path = dir.path().join("ledger.db");
        // The admin CLI and the copy are blocking work: keep them off the async runtime.
        let (database, (bar_token, bar2_token, checkpoint_token)) =
            tokio::task::spawn_blocking(move || match origin {
                Origin::Template(Backend::Sqlite) => {
                    let tokens = copy_template(&db_path);
                    (Database::Sqlite(db_path), tokens)
                }
                Origin::Template(Backend::Postgres) => {
                    let (db, tokens) = PgDatabase::from_template();
                    (Database::Postgres(db), tokens)
                }
                Origin::Server(url) => {
                    let (db, tokens) = PgDatabase::seeded_on(&url);
                    (Database::Postgres(db), tokens)
                }
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build HTTP client");
        let mut ledger = Ledger {
            dir,
            database,
            base_url: String::new(),
            bar_token,
            bar2_token,
            checkpoint_token,
            config_path,
            server_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            client,
            child: None,
            starts: 0,
            seqs: Mutex::new(HashMap::new()),
            stdout_lines: Arc::new(Mutex::new(Vec::new())),
        };
        ledger.spawn_server().await;
        ledger
    }

    /// Starts `cashless ledger serve` on the database, waits for `listening on ADDR` on
    /// stdout, then for `GET /health` to answer 200.
    async fn spawn_server(&mut self) {
        assert!(self.child.is_none(), "a server is already running");
        let (child, base_url) = self.launch(Arc::clone(&self.stdout_lines)).await;
        self.child = Some(child);
        self.base_url = base_url;
    }

    /// Starts one more `cashless ledger serve` process on the same database and config, as
    /// an operator runs several behind a load balancer; it is killed when the returned value
    /// is dropped. Its stderr is part of [`Ledger::server_log`].
    pub async fn spawn_another_server(&mut self) -> OtherServer {
        let (child, base_url) = self.launch(Arc::new(Mutex::new(Vec::new()))).await;
        OtherServer { child, base_url }
    }

    /// Spawns `serve` (its stderr into the next `serve-N.log`, the stdout lines after
    /// `listening on` into `stdout_lines`) and waits until it answers `/health`; returns the
    /// process and its `http://ADDR`.
    async fn launch(&mut self, stdout_lines: Arc<Mutex<Vec<String>>>) -> (Child, String) {
        self.starts += 1;
        let log_path = self.dir.path().join(format!("serve-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("create server log");
        let mut cmd = Command::new(BIN);
        cmd.args(["ledger", "serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(self.database.url());
        if let Some(config) = &self.config_path {
            cmd.arg("--config").arg(config);
        }
        cmd.env_remove("CASHLESS_DATABASE")
            .env_remove("CASHLESS_LISTEN")
            .env_remove("CASHLESS_STRIPE_WEBHOOK_SECRETS")
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn cashless ledger serve");
        let stdout = child.stdout.take().expect("child stdout");

        // A thread reads stdout to the end: it hands over the `listening on` line and keeps
        // draining so the server never blocks on a full pipe.
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                    continue;
                }
                if let Ok(mut lines) = stdout_lines.lock() {
                    lines.push(line);
                }
            }
        });
        let addr = match tokio::time::timeout(STARTUP_DEADLINE, rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server exited without printing `listening on ADDR`; stderr:\n{}",
                    self.server_log()
                )
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no `listening on ADDR` line within {STARTUP_DEADLINE:?}; stderr:\n{}",
                    self.server_log()
                )
            }
        };
        let base_url = format!("http://{addr}");

        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            let health = self
                .client
                .get(format!("{base_url}/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&health, Ok(r) if r.status().as_u16() == 200) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "server exited with {status} before /health answered; stderr:\n{}",
                    self.server_log()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "GET /health did not answer 200 within {STARTUP_DEADLINE:?} (last: {health:?}); stderr:\n{}",
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (child, base_url)
    }

    /// Everything the server processes wrote on stderr so far (all starts), for diagnostics.
    pub fn server_log(&self) -> String {
        let mut text = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("serve-{n}.log"));
            if let Ok(log) = std::fs::read_to_string(path) {
                text.push_str(&format!("--- serve #{n} ---\n{log}"));
            }
        }
        text
    }

    /// Lines the server printed on stdout after `listening on` (should be none).
    pub fn server_stdout(&self) -> Vec<String> {
        self.stdout_lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// The backend this ledger runs on.
    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    /// The value of `--database` for this ledger's database.
    pub fn database_url(&self) -> String {
        self.database.url()
    }

    /// The SQLite database file; panics on another backend (a test about the file itself).
    #[track_caller]
    pub fn db_path(&self) -> &Path {
        match &self.database {
            Database::Sqlite(path) => path,
            other => panic!(
                "this test reads the SQLite file, but the ledger runs on {:?}",
                other.backend()
            ),
        }
    }

    /// Runs `cashless ledger <args> --database DB` (plus `--config` if any).
    pub fn admin(&self, args: &[&str]) -> Output {
        run_admin(&self.database.url(), self.config_path.as_deref(), args)
    }

    /// Runs `cashless ledger <args>` as [`Ledger::admin`] does, with `stdin` on its stdin.
    pub fn admin_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_admin_with_stdin(
            &self.database.url(),
            self.config_path.as_deref(),
            args,
            Some(stdin),
        )
    }

    /// Creates operator `name` with `role` and `password` (`ledger operator add`).
    pub fn add_operator(&self, name: &str, role: &str, password: &str) {
        let out = self.admin_with_stdin(
            &["operator", "add", "--name", name, "--role", role],
            &format!("{password}\n"),
        );
        assert_success("operator add", &out);
    }

    /// Logs operator `name` in to the headquarters pages (the login form, its CSRF cookie);
    /// returns the session cookie's value.
    pub async fn hq_session(&self, name: &str, password: &str) -> String {
        let resp = hq_login(&self.base_url, name, password).await;
        assert_eq!(resp.status(), 303, "{name} could not log in");
        set_cookie_value(&resp, "cashless_hq").expect("the session cookie is set")
    }

    /// `cashless ledger audit`.
    pub fn audit(&self) -> Output {
        self.admin(&["audit"])
    }

    /// Asserts that `cashless ledger audit` exits 0.
    #[track_caller]
    pub fn assert_audit_ok(&self) {
        assert_success("cashless ledger audit", &self.audit());
    }

    /// SIGKILLs the server and waits for it to be gone.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .expect("wait task panicked")
                .expect("wait for killed server");
        }
    }

    /// The process id of the running server, if any.
    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (graceful shutdown) and waits up to `deadline` for the server to exit;
    /// returns its exit status. Panics if it is still running after the deadline.
    pub async fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("no server running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server still running {deadline:?} after SIGTERM; stderr:\n{}",
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts `serve` again on the same database (and config). Kills the old one first if it
    /// is still running. The port may change: `base_url` is updated.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn_server().await;
    }

    /// Whether the server process is still running.
    pub fn server_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The next `terminal_seq` for the terminal of `token` (1, 2, 3, ... per token).
    pub fn seq(&self, token: &str) -> i64 {
        let mut seqs = self.seqs.lock().expect("seq lock");
        let next = seqs.entry(token.to_owned()).or_insert(0);
        *next += 1;
        *next
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// POSTs `body` as JSON with the bearer `token`.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serialize body");
        self.post_raw(path, Some(token), bytes, &[]).await
    }

    /// Like [`Ledger::post`], to the server at `base_url` (another process on the same
    /// database, [`Ledger::spawn_another_server`]).
    pub async fn post_at(&self, base_url: &str, path: &str, token: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serialize body");
        read_resp(
            self.post_request(&format!("{base_url}{path}"), Some(token), bytes, &[])
                .send()
                .await
                .expect("POST request failed"),
        )
        .await
    }

    /// POSTs raw bytes. Adds `Content-Type: application/json` unless `headers` has a
    /// Content-Type of its own; adds `Authorization: Bearer <token>` if a token is given.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let req = self.post_request(&self.url(path), token, body, headers);
        read_resp(req.send().await.expect("POST request failed")).await
    }

    /// The request [`Ledger::post_raw`] sends, to any `url`.
    pub fn post_request(
        &self,
        url: &str,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut req = self.client.post(url).body(body);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    }

    /// PUTs the bytes `body` (as JSON) to `path`, with the bearer `token` if given.
    pub async fn put_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = self
            .client
            .put(self.url(path))
            .body(body)
            .header("content-type", "application/json");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        read_resp(req.send().await.expect("PUT request failed")).await
    }

    /// PUTs `body` to `path` with the bearer `token`.
    pub async fn put(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.put_raw(path, Some(token), serde_json::to_vec(body).expect("JSON"))
            .await
    }

    /// GETs `path`, with the bearer `token` if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.get_with(path, token, &[]).await
    }

    /// GETs `path` with extra headers.
    pub async fn get_with(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read_resp(req.send().await.expect("GET request failed")).await
    }

    /// An online cash top-up by cp-1 / s-cash with a fresh `client_request_id`.
    pub async fn topup(&self, uid: &str, amount_cents: i64) -> Resp {
        let seq = self.seq(&self.checkpoint_token);
        let body = recharge_body(uid, seq, amount_cents, "cash", "online");
        self.post("/v1/recharges", &self.checkpoint_token, &body)
            .await
    }

    /// [`Ledger::topup`] that must be approved (201).
    pub async fn fund(&self, uid: &str, amount_cents: i64) -> Resp {
        let resp = self.topup(uid, amount_cents).await;
        resp.assert_status(201);
        resp
    }

    /// `GET /v1/cards/{uid}` with the bar token: (status, balance_cents, status string).
    pub async fn card(&self, uid: &str) -> Resp {
        self.get(&format!("/v1/cards/{uid}"), Some(&self.bar_token))
            .await
    }

    /// The card's balance as the API reports it; panics if the card is not found.
    pub async fn balance(&self, uid: &str) -> i64 {
        let resp = self.card(uid).await;
        resp.assert_status(200);
        resp.body["balance_cents"]
            .as_i64()
            .unwrap_or_else(|| panic!("balance_cents missing: {}", resp.body))
    }

    /// A deterministic dump of every row of every ledger table in one snapshot: tables
    /// sorted by name, rows sorted, values as both backends give them (see `backend.rs`).
    /// Equal fingerprints prove that nothing was written.
    pub fn db_fingerprint(&self) -> String {
        self.db_fingerprint_excluding(&[])
    }

    /// Like [`Ledger::db_fingerprint`], for the named tables only.
    pub fn db_fingerprint_of(&self, tables: &[&str]) -> String {
        self.fingerprint(Some(tables), &[])
    }

    /// Like [`Ledger::db_fingerprint`], without the given `(table, column)` pairs (for
    /// bookkeeping columns such as a last-seen time that a read may legitimately touch).
    pub fn db_fingerprint_excluding(&self, skip: &[(&str, &str)]) -> String {
        self.fingerprint(None, skip)
    }

    fn fingerprint(&self, only: Option<&[&str]>, skip: &[(&str, &str)]) -> String {
        self.database.fingerprint(only, skip)
    }

    /// The rows of one SQL query on the ledger's database, each value as both backends give
    /// it (see `backend.rs`). Write SQL both understand: values inline as literals (a
    /// `'...'` literal compares with a uuid or a time column in PostgreSQL), `true` and
    /// `false` for booleans.
    pub fn query(&self, sql: &str) -> Rows {
        self.database.query(sql)
    }

    /// The rows of `sql`, each as a JSON object of its columns.
    pub fn query_json(&self, sql: &str) -> Vec<Value> {
        self.query(sql).to_json()
    }

    /// The one integer `sql` selects (a count, a sum); panics on anything else.
    #[track_caller]
    pub fn query_i64(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        match rows.rows.as_slice() {
            [row] => match row.as_slice() {
                [Cell::Int(n)] => *n,
                other => panic!("{sql}: expected one integer, got {other:?}"),
            },
            other => panic!("{sql}: expected one row, got {}", other.len()),
        }
    }

    /// SQL for the text of `key` in the JSON column `column` (SQLite's `json_extract`,
    /// PostgreSQL's `->>`): compare it with a string literal, also for a number (`'-500'`).
    pub fn json_text(&self, column: &str, key: &str) -> String {
        match self.backend() {
            Backend::Sqlite => format!("CAST(json_extract({column}, '$.{key}') AS TEXT)"),
            Backend::Postgres => format!("({column} ->> '{key}')"),
        }
    }

    /// Runs one SQL statement that writes (as an operator or an attacker with database
    /// access would); returns the number of rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        self.database.execute(sql)
    }

    /// Changes the books behind the ledger's back (see [`backend::Database::tamper`]);
    /// returns the number of rows changed.
    pub fn tamper(&self, sql: &str) -> u64 {
        self.database.tamper(sql)
    }

    /// Takes the write lock of every table as another writer would, until the returned
    /// value is dropped (see [`backend::WriteLock`]).
    pub fn hold_write_lock(&self) -> backend::WriteLock {
        self.database.hold_write_lock()
    }

    /// A read-only connection to the SQLite database (does not checkpoint or recover);
    /// panics on another backend.
    #[track_caller]
    pub fn open_db(&self) -> rusqlite::Connection {
        backend::open_sqlite_read_only(self.db_path())
    }

    /// `SELECT COUNT(*) FROM table`.
    pub fn count(&self, table: &str) -> i64 {
        self.query_i64(&format!("SELECT COUNT(*) FROM \"{table}\""))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A second `cashless ledger serve` process on a [`Ledger`]'s database
/// ([`Ledger::spawn_another_server`]), SIGKILLed when dropped.
pub struct OtherServer {
    child: Child,
    /// `http://127.0.0.1:PORT` of this process.
    pub base_url: String,
}

impl OtherServer {
    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for OtherServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database seeded once per test binary through the admin CLI, copied for every test.
///
/// Seeding takes seconds in a debug build (`staff add` hashes each PIN with argon2), times
/// dozens of tests; a copy of the file takes a millisecond. Every test still gets its own
/// database file, in the state the real CLI left it.
struct Template {
    /// `CARGO_TARGET_TMPDIR/cashless-template-<pid>`, holding `ledger.db`.
    dir: PathBuf,
    /// The tokens of bar-1, bar-2 and cp-1 in that database.
    tokens: (String, String, String),
}

static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();

/// Files of a SQLite database in WAL mode.
const DB_FILES: [&str; 3] = ["ledger.db", "ledger.db-wal", "ledger.db-shm"];

fn template() -> &'static Template {
    TEMPLATE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&root).expect("create CARGO_TARGET_TMPDIR");
        // Templates of test processes that are gone are removed.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("cashless-template-")
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!("cashless-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create template dir");
        let tokens = seed(&format!("sqlite:{}", dir.join(DB_FILES[0]).display()), None);
        Template { dir, tokens }
    })
}

/// Copies the seeded template database to `db`; returns the tokens of bar-1, bar-2, cp-1.
fn copy_template(db: &Path) -> (String, String, String) {
    let template = template();
    let target_dir = db.parent().expect("database path has a directory");
    let stem = db
        .file_name()
        .expect("database path has a file name")
        .to_string_lossy()
        .into_owned();
    for (i, name) in DB_FILES.iter().enumerate() {
        let from = template.dir.join(name);
        if from.exists() {
            let to_name = stem.clone() + &name[DB_FILES[0].len()..];
            std::fs::copy(&from, target_dir.join(to_name)).expect("copy template database");
        } else {
            assert!(i > 0, "template database missing");
        }
    }
    template.tokens.clone()
}

/// Seeds terminals, staff and products through the admin CLI into the database of
/// `database` (a `--database` value); returns the tokens of bar-1, bar-2 and cp-1.
fn seed(database: &str, config: Option<&Path>) -> (String, String, String) {
    let db = database;
    let admin = |args: &[&str]| run_admin(db, config, args);
    let terminal = |name: &str, kind: &str, pos: &str| {
        token_from(&admin(&[
            "terminal",
            "add",
            "--name",
            name,
            "--kind",
            kind,
            "--point-of-sale",
            pos,
        ]))
    };
    let bar = terminal("bar-1", "bar", BAR_POS);
    let bar2 = terminal("bar-2", "bar", BAR_POS);
    let checkpoint = terminal("cp-1", "checkpoint", CHECKPOINT_POS);
    for (id, name, role, pin) in STAFF {
        let out = admin(&[
            "staff", "add", "--id", id, "--name", name, "--role", role, "--pin", pin,
        ]);
        assert_success("staff add", &out);
    }
    for (id, name, price) in PRODUCTS {
        let price = price.to_string();
        let out = admin(&[
            "product",
            "add",
            "--id",
            id,
            "--name",
            name,
            "--price-cents",
            &price,
            "--point-of-sale",
            BAR_POS,
            "--category",
            "drinks",
        ]);
        assert_success("product add", &out);
    }
    (bar, bar2, checkpoint)
}

pub async fn read_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let raw = resp.bytes().await.expect("read response body").to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        raw,
    }
}

/// The current time, RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fresh `client_request_id`.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An order by staff s-bar: fresh `client_request_id`, `created_at` now, total = sum of the
/// lines. `items`: (product_id, quantity, unit_price_cents).
pub fn order_body(uid: &str, seq: i64, items: &[(&str, i64, i64)], mode: &str) -> Value {
    let total: i64 = items.iter().map(|(_, q, p)| q * p).sum();
    json!({
        "client_request_id": new_id(),
        "terminal_seq": seq,
        "card_uid": uid,
        "items": items
            .iter()
            .map(|(id, q, p)| json!({"product_id": id, "quantity": q, "unit_price_cents": p}))
            .collect::<Vec<_>>(),
        "total_cents": total,
        "staff_id": BAR_STAFF,
        "created_at": now_rfc3339(),
        "mode": mode,
    })
}

/// A top-up by staff s-cash with a fresh `client_request_id`.
pub fn recharge_body(uid: &str, seq: i64, amount_cents: i64, method: &str, mode: &str) -> Value {
    json!({
        "client_request_id": new_id(),
        "terminal_seq": seq,
        "card_uid": uid,
        "amount_cents": amount_cents,
        "payment_method": method,
        "staff_id": CASH_STAFF,
        "created_at": now_rfc3339(),
        "mode": mode,
    })
}

/// A deposit return by staff s-bar: fresh `client_request_id`, `created_at` now, amount =
/// sum of the lines. `items`: (product_id, quantity, unit_deposit_cents).
pub fn return_body(uid: &str, seq: i64, items: &[(&str, i64, i64)], mode: &str) -> Value {
    let amount: i64 = items.iter().map(|(_, q, p)| q * p).sum();
    json!({
        "client_request_id": new_id(),
        "terminal_seq": seq,
        "card_uid": uid,
        "items": items
            .iter()
            .map(|(id, q, p)| json!({"product_id": id, "quantity": q, "unit_deposit_cents": p}))
            .collect::<Vec<_>>(),
        "amount_cents": amount,
        "staff_id": BAR_STAFF,
        "created_at": now_rfc3339(),
        "mode": mode,
    })
}

/// A voucher grant of `units` by the supervisor s-super, with a fresh `client_request_id`.
pub fn voucher_grant_body(uid: &str, seq: i64, units: i64, mode: &str) -> Value {
    json!({
        "client_request_id": new_id(),
        "terminal_seq": seq,
        "card_uid": uid,
        "units": units,
        "staff_id": SUPER_STAFF,
        "created_at": now_rfc3339(),
        "mode": mode,
    })
}

/// A void of `target` (a `client_request_id`) with a fresh `client_request_id`.
pub fn void_body(target: &str, seq: i64, reason: &str, staff: &str) -> Value {
    json!({
        "client_request_id": new_id(),
        "terminal_seq": seq,
        "target_client_request_id": target,
        "staff_id": staff,
        "reason": reason,
        "created_at": now_rfc3339(),
    })
}

/// The `client_request_id` of a request body.
pub fn crid(body: &Value) -> String {
    body["client_request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no client_request_id in {body}"))
        .to_owned()
}

/// Distinct valid 7-byte UIDs: uppercase hex, 14 characters.
pub fn uid(n: u32) -> String {
    format!("04{:012X}", n)
}

/// Polls `f` until it returns true; panics naming `what` after `deadline`.
pub async fn wait_for<F: Fn() -> bool>(what: &str, deadline: Duration, f: F) {
    let until = Instant::now() + deadline;
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_for`], for an async condition.
pub async fn wait_for_async<F, Fut>(what: &str, deadline: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `Stripe-Signature` header for `body`, signed now with the endpoint secret `secret`.
pub fn stripe_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let t = chrono::Utc::now().timestamp();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers the Stripe `event`, signed with `secret`, and asserts it was handled (200).
pub async fn deliver_stripe_event(l: &Ledger, secret: &str, event: &Value) {
    let body = serde_json::to_vec(event).expect("serialize the event");
    let signature = stripe_signature(secret, &body);
    l.post_raw(
        "/v1/webhooks/stripe",
        None,
        body,
        &[
            ("content-type", "application/json"),
            ("stripe-signature", signature.as_str()),
        ],
    )
    .await
    .assert_status(200);
}

/// Runs each admin command of `cases` and asserts that it fails with its exit code and a
/// message containing its text, and that none of them changed the database.
#[track_caller]
pub fn assert_refused_without_change(l: &Ledger, cases: &[(Vec<&str>, i32, &str)]) {
    let before = l.db_fingerprint();
    for (args, code, message) in cases {
        let out = l.admin(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a refused command changed the database"
    );
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
pub fn set_cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next()?.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
}

/// Submits the headquarters login form of the ledger at `base` as a browser would (the
/// page first, for its CSRF token and cookie); the answer, redirects not followed.
pub async fn hq_login(base: &str, name: &str, password: &str) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    hq_login_with(&http, base, name, password).await
}

/// [`hq_login`] through `http` (a client that trusts a festival CA, say), which must not
/// follow redirects.
pub async fn hq_login_with(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> reqwest::Response {
    let page = http
        .get(format!("{base}/hq/login"))
        .send()
        .await
        .expect("the login page");
    let token = set_cookie_value(&page, "cashless_hq_login").expect("the login cookie");
    let html = page.text().await.expect("the login page's HTML");
    assert!(html.contains(&format!("name=\"csrf\" value=\"{token}\"")));
    http.post(format!("{base}/hq/login"))
        .header(
            reqwest::header::COOKIE,
            format!("cashless_hq_login={token}"),
        )
        .form(&[
            ("csrf", token.as_str()),
            ("name", name),
            ("password", password),
        ])
        .send()
        .await
        .expect("the login form's answer")
}
