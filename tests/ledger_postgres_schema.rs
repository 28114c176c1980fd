//! The PostgreSQL backend's first stage, black-box: `cashless ledger migrate --database
//! postgres://...` (the real binary) against the real PostgreSQL (127.0.0.1:5432)
//! (`CASHLESS_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`, a superuser),
//! and against small fake servers for the failures (no TLS, silence, nobody listening).
//!
//! Each test that needs PostgreSQL creates its own database with a random name (and, where
//! it says so, its own role) and drops them afterwards, also when it fails ([`TestDb`]'s
//! `Drop`, in `common/pg.rs`). Without PostgreSQL these tests fail, saying how to start it.
#![allow(clippy::unwrap_used)]

#[path = "common/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use cashless::ledger::store::postgres::{MIGRATION_LOCK_KEY, MIGRATIONS};
use pg::{COMMAND_DEADLINE, TestDb, admin_url, connect, url_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `cashless ledger ARGS --database url`.
async fn ledger(url: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--database", url]);
    pg::ledger_command(&all).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// The migrations a run's log says it applied.
fn applied(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("applied migration"))
        .filter_map(|l| MIGRATIONS.iter().find(|m| l.contains(m.name)))
        .map(|m| m.name.to_owned())
        .collect()
}

/// `schema_migrations`: version, file, when, in order.
async fn recorded(client: &tokio_postgres::Client) -> Vec<(i64, String, String)> {
    client
        .query(
            "SELECT version, name, applied_at::text FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Every file of `migrations/postgres/`, as `schema_migrations` records them.
fn every_file() -> Vec<(i64, String)> {
    MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect()
}

/// Each table's columns in order, tables sorted by name.
type Columns = Vec<(String, Vec<String>)>;

fn by_table(rows: Vec<(String, String)>) -> Columns {
    let mut tables: Columns = Vec::new();
    for (table, column) in rows {
        match tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, columns)) => columns.push(column),
            None => tables.push((table, vec![column])),
        }
    }
    tables.sort();
    tables
}

/// The SQLite schema's tables and columns, from a database the real binary migrated.
async fn sqlite_columns() -> Columns {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let out = ledger(&format!("sqlite:{}", path.display()), &["migrate"]).await;
    assert_ok("migrate (sqlite)", &out);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows = conn
        .prepare(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' ORDER BY m.name, p.cid",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<(String, String)>, _>>()
        .unwrap();
    by_table(rows)
}

/// The PostgreSQL schema's tables and columns (without `schema_migrations`).
async fn postgres_columns(client: &tokio_postgres::Client) -> Columns {
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    by_table(rows)
}

#[tokio::test]
async fn migrate_applies_every_file_once_with_the_sqlite_schemas_names() {
    let db = TestDb::create().await;
    let url = db.url("");

    let first = ledger(&url, &["migrate"]).await;
    assert_ok("the first migrate", &first);
    let shown = cashless::ledger::config::DatabaseUrl::Postgres(url.clone()).to_string();
    assert!(
        stdout(&first).contains(&format!("database {shown} is at the current schema")),
        "{}",
        stdout(&first)
    );
    let every: Vec<String> = every_file().into_iter().map(|(_, n)| n).collect();
    assert_eq!(applied(&first), every, "{}", stderr(&first));

    let client = db.admin().await;
    let before = recorded(&client).await;
    let versions: Vec<(i64, String)> = before.iter().map(|(v, n, _)| (*v, n.clone())).collect();
    assert_eq!(versions, every_file());

    // The same tables and columns, in the same order, as the SQLite backend's schema.
    assert_eq!(postgres_columns(&client).await, sqlite_columns().await);

    let second = ledger(&url, &["migrate"]).await;
    assert_ok("the second migrate", &second);
    assert!(applied(&second).is_empty(), "{}", stderr(&second));
    assert_eq!(
        recorded(&client).await,
        before,
        "the second run changed nothing"
    );

    // The migrated database is a ledger the store opens: its (empty) books balance.
    let audit = ledger(&url, &["audit"]).await;
    assert_ok("audit", &audit);
    assert!(
        stdout(&audit).contains(
            "0 cards, 0 postings in 0 transactions, card balances total 0 cents: the books balance"
        ),
        "{}",
        stdout(&audit)
    );
}

#[tokio::test]
async fn two_migrates_started_at_once_apply_each_file_once() {
    let db = TestDb::create().await;
    let url = db.url("");
    // Hold the migrations' lock so that both processes are surely waiting for it at once.
    let holder = db.admin().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .unwrap();
    let (a, b) = (url.clone(), url);
    let first = tokio::spawn(async move { ledger(&a, &["migrate"]).await });
    let second = tokio::spawn(async move { ledger(&b, &["migrate"]).await });
    let deadline = Instant::now() + COMMAND_DEADLINE;
    loop {
        let waiting: i64 = holder
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two migrates never both waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_ok("the first migrate", &first);
    assert_ok("the second migrate", &second);
    let mut both = applied(&first);
    both.extend(applied(&second));
    both.sort();
    let every: Vec<String> = every_file().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        both,
        every,
        "each file applied once in all\nfirst:\n{}\nsecond:\n{}",
        stderr(&first),
        stderr(&second)
    );
    let versions: Vec<(i64, String)> = recorded(&holder)
        .await
        .into_iter()
        .map(|(v, n, _)| (v, n))
        .collect();
    assert_eq!(versions, every_file());
}

#[tokio::test]
async fn a_schema_newer_than_the_program_is_refused_and_left_alone() {
    let db = TestDb::create().await;
    let url = db.url("");
    assert_ok("migrate", &ledger(&url, &["migrate"]).await);
    let client = db.admin().await;
    client
        .batch_execute(
            "INSERT INTO schema_migrations (version, name) VALUES (99, '0099_future.sql')",
        )
        .await
        .unwrap();
    let before = recorded(&client).await;

    let out = ledger(&url, &["migrate"]).await;
    assert!(!out.status.success(), "a newer schema was accepted");
    let known = MIGRATIONS.len();
    let err = stderr(&out);
    for expected in [
        "cannot open the ledger database",
        format!("schema is at version 99, newer than this program's {known}").as_str(),
        "run that version (or a newer one)",
    ] {
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
    assert_eq!(recorded(&client).await, before);
}

#[tokio::test]
async fn postings_and_the_audit_log_cannot_be_changed_by_the_ledgers_own_user() {
    let db = TestDb::create_with_owner().await;
    let url = db.owner_url();
    // The ledger's user migrates, so it owns every table: privileges could not stop it.
    assert_ok("migrate as the owner", &ledger(&url, &["migrate"]).await);
    let ledger_user = connect(&url).await.unwrap();
    let row = ledger_user
        .query_one(
            "SELECT r.rolsuper, t.tableowner::text = current_user
             FROM pg_roles r, pg_tables t
             WHERE r.rolname = current_user AND t.tablename = 'postings'",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "the ledger's user is no superuser");
    assert!(row.get::<_, bool>(1), "the ledger's user owns postings");

    ledger_user
        .batch_execute(
            "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
                 VALUES ('018f0000-0000-7000-8000-000000000001', 'card:04A1B2C3', -450, now()),
                        ('018f0000-0000-7000-8000-000000000001', 'revenue:Main Bar', 450, now());
             INSERT INTO app_transaction_log (occurred_at, actor, operation, outcome)
                 VALUES (now(), 'admin', 'card_block', 'done');",
        )
        .await
        .unwrap();
    for table in ["postings", "app_transaction_log"] {
        let column = if table == "postings" {
            "amount_cents = 0"
        } else {
            "outcome = 'changed'"
        };
        for statement in [
            format!("UPDATE {table} SET {column}"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let err = ledger_user
                .batch_execute(&statement)
                .await
                .expect_err(&statement);
            let db_err = err
                .as_db_error()
                .unwrap_or_else(|| panic!("{statement}: {err}"));
            assert!(
                db_err.message().contains("is append-only"),
                "{statement}: {}",
                db_err.message()
            );
        }
    }
    let counts = ledger_user
        .query_one(
            "SELECT (SELECT count(*) FROM postings), (SELECT sum(abs(amount_cents))::bigint FROM postings),
                    (SELECT count(*) FROM app_transaction_log WHERE outcome = 'done')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 2);
    assert_eq!(counts.get::<_, i64>(1), 900);
    assert_eq!(counts.get::<_, i64>(2), 1);

    // Housekeeping's removal of archived rows is the one way out of the audit log, and it
    // leaves no door open behind it, not even in its own transaction.
    let id: i64 = ledger_user
        .query_one("SELECT max(log_id) FROM app_transaction_log", &[])
        .await
        .unwrap()
        .get(0);
    let removed: i64 = ledger_user
        .query_one("SELECT ledger_remove_archived_audit_log($1)", &[&vec![id]])
        .await
        .unwrap()
        .get(0);
    assert_eq!(removed, 1);
    ledger_user
        .batch_execute(
            "INSERT INTO app_transaction_log (occurred_at, actor, operation, outcome)
                 VALUES (now(), 'admin', 'card_block', 'done')",
        )
        .await
        .unwrap();
    let err = ledger_user
        .batch_execute(
            "BEGIN;
             SELECT ledger_remove_archived_audit_log(ARRAY[]::bigint[]);
             DELETE FROM app_transaction_log;",
        )
        .await
        .expect_err("a DELETE after the removal");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("is append-only")),
        "{err}"
    );
    ledger_user.batch_execute("ROLLBACK").await.unwrap();
    // Nor does a setting a session (or a role, or a database) carries by mistake.
    for set in [
        "SET cashless.archiving = 'on'",
        "SET cashless.archiving = '1'",
    ] {
        let statement = format!("{set}; DELETE FROM app_transaction_log");
        let err = ledger_user
            .batch_execute(&statement)
            .await
            .expect_err(&statement);
        assert!(
            err.as_db_error()
                .is_some_and(|e| e.message().contains("is append-only")),
            "{statement}: {err}"
        );
    }
    let left: i64 = ledger_user
        .query_one("SELECT count(*) FROM app_transaction_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

/// A fake server on a free port of 127.0.0.1 that answers every connection's first message
/// (a TLS request, or a start-up) with `reply`, if any, and then says nothing more. Returns
/// its port; it stops with the test's runtime.
async fn fake_server(reply: Option<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok()
                && let Some(byte) = reply
            {
                let _ = socket.write_all(&[byte]).await;
            }
            held.push(socket);
        }
    });
    port
}

/// A config file with `[postgres] connect_timeout_ms`.
fn config_with_connect_timeout(dir: &Path, ms: u64) -> String {
    let path = dir.join("ledger.toml");
    std::fs::write(&path, format!("[postgres]\nconnect_timeout_ms = {ms}\n")).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_fails_naming_tls() {
    // Answers the TLS request with "N": no TLS here.
    let port = fake_server(Some(b'N')).await;
    let url = format!("postgres://ledger@127.0.0.1:{port}/ledger?sslmode=require");
    let started = Instant::now();
    let out = ledger(&url, &["migrate"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    for expected in [
        format!("TLS with PostgreSQL at 127.0.0.1:{port} failed (sslmode=require)").as_str(),
        "server does not support TLS",
    ] {
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "it hung");
}

#[tokio::test]
async fn tls_against_the_real_server_as_its_configuration_allows() {
    let db = TestDb::create().await;
    let admin = db.admin().await;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let require = ledger(&db.url("?sslmode=require"), &["migrate"]).await;
    // Debian's server has TLS with a self-signed ("snakeoil") certificate: verify-full
    // cannot trust it with the default roots.
    let verify = ledger(&db.url("?sslmode=verify-full"), &["migrate"]).await;
    assert!(
        !verify.status.success(),
        "verify-full trusted {}",
        stderr(&verify)
    );
    assert!(
        stderr(&verify).contains("TLS with PostgreSQL"),
        "{}",
        stderr(&verify)
    );
    if ssl == "on" {
        assert_ok("migrate with sslmode=require", &require);
        assert!(
            stderr(&verify).contains("certificate"),
            "{}",
            stderr(&verify)
        );
        // With the server's own certificate as the root, verify-full passes, when that
        // certificate names localhost (Debian's snakeoil one does) and this test can read it.
        let cert_file: String = admin
            .query_one("SHOW ssl_cert_file", &[])
            .await
            .unwrap()
            .get(0);
        let names_localhost = std::fs::read(&cert_file).is_ok_and(|pem| {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            CertificateDer::pem_slice_iter(&pem)
                .flatten()
                .any(|der| der.windows(9).any(|w| w == b"localhost"))
        });
        if names_localhost {
            let local = url_with(
                &admin_url().replace("127.0.0.1", "localhost"),
                None,
                &db.name,
                &format!("?sslmode=verify-full&sslrootcert={cert_file}"),
            );
            assert_ok(
                "migrate with sslmode=verify-full and the server's certificate",
                &ledger(&local, &["migrate"]).await,
            );
        }
    } else {
        assert!(!require.status.success());
        assert!(
            stderr(&require).contains("server does not support TLS"),
            "{}",
            stderr(&require)
        );
    }
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_connect_timeout(dir.path(), 1000);
    // Accepts, reads the start-up and says nothing: tokio-postgres's own connect_timeout
    // (TCP only) would wait for ever.
    let port = fake_server(None).await;
    let url = format!("postgres://ledger@127.0.0.1:{port}/ledger");
    let started = Instant::now();
    let out = ledger(&url, &["migrate", "--config", &config]).await;
    let took = started.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "PostgreSQL at 127.0.0.1:{port} did not complete a connection within 1000 ms"
        )) && err.contains("is the server up and reachable"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(took >= Duration::from_millis(1000), "took {took:?}");
}

#[tokio::test]
async fn nobody_listening_fails_at_once_saying_what_to_check() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://ledger@127.0.0.1:{port}/ledger");
    let out = ledger(&url, &["migrate"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    for expected in [
        format!("cannot connect to PostgreSQL at 127.0.0.1:{port}").as_str(),
        "is the server running there",
    ] {
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
}
