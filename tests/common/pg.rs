//! A fresh PostgreSQL database per test, on the real server at 127.0.0.1:5432
//! (`CASHLESS_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`, a superuser).
//!
//! [`TestDb`] creates a database with a random name (and, when asked, its own role) and drops
//! them when it is dropped, also when the test fails. Without PostgreSQL a test fails here,
//! saying how to start it. A test binary includes this file with
//! `#[path = "common/pg.rs"] mod pg;` (it needs nothing else of `common`).
#![allow(dead_code, clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;
use tokio_postgres::NoTls;

/// The longest a `cashless ledger` command of a test may take.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cashless ledger ARGS` with nothing from the environment (no `CASHLESS_DATABASE`,
/// listen address or Stripe secrets), within [`COMMAND_DEADLINE`].
pub async fn ledger_command(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashless"));
    command
        .arg("ledger")
        .args(args)
        .env_remove("CASHLESS_DATABASE")
        .env_remove("CASHLESS_LISTEN")
        .env_remove("CASHLESS_STRIPE_WEBHOOK_SECRETS")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(COMMAND_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("cashless ledger {args:?} did not finish"))
        .unwrap()
}

/// The server under test when `CASHLESS_TEST_PG` is not set.
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The superuser's URL of the server under test.
pub fn admin_url() -> String {
    std::env::var("CASHLESS_TEST_PG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_PG.to_owned())
}

/// A connection to `url`, its connection task spawned.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The superuser's connection; a test without PostgreSQL fails here, saying what to do.
pub async fn admin() -> tokio_postgres::Client {
    let url = admin_url();
    connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url}: {e}\n\
             These tests need a PostgreSQL server with a superuser. On Debian: \
             `apt-get install postgresql`, then start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             (see the README); or set CASHLESS_TEST_PG=postgres://USER@HOST:PORT/DB \
             to another server's superuser."
        )
    })
}

/// A database with a random name, dropped (with its role, if it has one) when this is.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// A non-superuser role owning the database, when the test asked for one.
    pub role: Option<String>,
}

impl TestDb {
    /// A new empty database, owned by the superuser.
    pub async fn create() -> TestDb {
        Self::create_inner(false, "").await
    }

    /// A new empty database owned by a new role that can log in and is no superuser: the
    /// ledger's own database user.
    pub async fn create_with_owner() -> TestDb {
        Self::create_inner(true, "").await
    }

    /// A new empty database whose text sorts by ICU's English rules (case and punctuation
    /// second), not byte by byte: a query that forgets to ask for byte order shows it.
    pub async fn create_with_english_collation() -> TestDb {
        Self::create_inner(
            false,
            " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
        )
        .await
    }

    async fn create_inner(with_role: bool, options: &str) -> TestDb {
        let admin = admin().await;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let db = TestDb {
            name: format!("cashless_test_{suffix}"),
            role: with_role.then(|| format!("cashless_test_role_{suffix}")),
        };
        if let Some(role) = &db.role {
            admin
                .batch_execute(&format!(
                    "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                ))
                .await
                .unwrap();
        }
        let owner = db
            .role
            .as_ref()
            .map_or(String::new(), |r| format!(" OWNER {r}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {}{owner}{options}", db.name))
            .await
            .unwrap();
        db
    }

    /// The database's URL as the superuser, with `query` appended (`?sslmode=...`).
    pub fn url(&self, query: &str) -> String {
        url_with(&admin_url(), None, &self.name, query)
    }

    /// The database's URL as its owner role.
    pub fn owner_url(&self) -> String {
        url_with(&admin_url(), self.role.as_deref(), &self.name, "")
    }

    /// A connection to the database as the superuser.
    pub async fn admin(&self) -> tokio_postgres::Client {
        connect(&self.url("")).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let role = self.role.clone();
        // Drop may run inside the test's runtime, which cannot be blocked on: a thread with
        // its own runtime does the dropping, and this waits for it.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = connect(&admin_url()).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                if let Some(role) = role {
                    admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await?;
                }
                Ok::<(), tokio_postgres::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}

/// `base` (a `postgres://` URL) with another user (if given), database and query.
pub fn url_with(base: &str, user: Option<&str>, db: &str, query: &str) -> String {
    let config: tokio_postgres::Config = base.parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("CASHLESS_TEST_PG must name a TCP host, got {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    // Another user (a test's role) logs in without a password (trust authentication).
    let password = match user {
        Some(_) => String::new(),
        None => config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default(),
    };
    let user = user.or(config.get_user()).unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{db}{query}")
}

/// How long a test waits for another session to reach a lock before it fails: far above any
/// sane time, so that a broken lock fails the test instead of hanging it.
pub const LOCK_WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// Connections of `client`'s database waiting for the two-key advisory lock
/// `(classid, objid)` (`objid` `None`: any second key), in `mode` (`ShareLock`,
/// `ExclusiveLock`; `None`: either).
pub async fn advisory_lock_waiters(
    client: &tokio_postgres::Client,
    classid: i64,
    objid: Option<i64>,
    mode: Option<&str>,
) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND classid::bigint = $1
               AND ($2::bigint IS NULL OR objid::bigint = $2)
               AND ($3::text IS NULL OR mode = $3)",
            &[&classid, &objid, &mode],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until `task` has finished (false) or a connection waits for the advisory lock
/// `(classid, objid)` in `mode` (true, see [`advisory_lock_waiters`]); fails past
/// [`LOCK_WAIT_DEADLINE`].
pub async fn finished_or_waiting<T>(
    client: &tokio_postgres::Client,
    task: &tokio::task::JoinHandle<T>,
    (classid, objid): (i64, Option<i64>),
    mode: Option<&str>,
) -> bool {
    let deadline = std::time::Instant::now() + LOCK_WAIT_DEADLINE;
    loop {
        if task.is_finished() {
            return false;
        }
        if advisory_lock_waiters(client, classid, objid, mode).await > 0 {
            return true;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call neither returned nor waited for the advisory lock ({classid}, {objid:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
