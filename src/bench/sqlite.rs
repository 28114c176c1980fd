//! `cashless bench sqlite-commit`: the raw SQLite commit rate with the ledger's pragmas, the
//! disk's reference for the ledger's throughput.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{LatencyMs, fmt_ms, new_histogram, now_rfc3339};

/// Raw SQLite commit rate with the ledger's pragmas: the disk's reference.
#[derive(Debug, Clone, clap::Args)]
pub struct SqliteCommitBenchArgs {
    /// SQLite file to create (refused if it exists; removed afterwards unless --keep). Put it
    /// on the ledger's disk.
    #[arg(long)]
    pub path: PathBuf,
    /// Duration in seconds
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Keep the database file afterwards
    #[arg(long)]
    pub keep: bool,
    /// Print a machine-readable JSON summary as the last line
    #[arg(long)]
    pub json: bool,
}

/// What `cashless bench sqlite-commit` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqliteCommitSummary {
    pub bench: &'static str,
    pub journal_mode: String,
    pub synchronous: String,
    pub commits: u64,
    pub elapsed_s: f64,
    pub commits_per_s: f64,
    /// Latency of one BEGIN IMMEDIATE; INSERT; COMMIT.
    pub latency_ms: LatencyMs,
}

/// The human-readable report.
pub fn format_sqlite_summary(s: &SqliteCommitSummary) -> String {
    let l = &s.latency_ms;
    format!(
        "sqlite commit bench (journal_mode={}, synchronous={}): {} commits in {:.2} s = {:.0} commits/s\n\
         commit latency: p50 {}, p99 {}, max {}\n",
        s.journal_mode,
        s.synchronous,
        s.commits,
        s.elapsed_s,
        s.commits_per_s,
        fmt_ms(l.p50),
        fmt_ms(l.p99),
        fmt_ms(l.max)
    )
}

fn synchronous_name(v: i64) -> String {
    match v {
        0 => "OFF".into(),
        1 => "NORMAL".into(),
        2 => "FULL".into(),
        3 => "EXTRA".into(),
        other => other.to_string(),
    }
}

fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn sqlite_commit_loop(path: &Path, duration: Duration) -> Result<SqliteCommitSummary> {
    let conn =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let journal_mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") || synchronous != 2 {
        bail!(
            "could not set the ledger's pragmas: journal_mode={journal_mode}, synchronous={}",
            synchronous_name(synchronous)
        );
    }
    conn.execute_batch(
        "CREATE TABLE bench_commit (
             id INTEGER PRIMARY KEY,
             client_request_id TEXT NOT NULL,
             amount_cents INTEGER NOT NULL,
             created_at TEXT NOT NULL
         )",
    )?;
    let mut insert = conn.prepare(
        "INSERT INTO bench_commit (client_request_id, amount_cents, created_at) VALUES (?1, ?2, ?3)",
    )?;
    let mut hist = new_histogram()?;
    let mut commits: u64 = 0;
    let start = Instant::now();
    let deadline = start + duration;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        insert.execute(rusqlite::params![
            uuid::Uuid::new_v4().to_string(),
            1i64,
            now_rfc3339()
        ])?;
        conn.execute_batch("COMMIT")?;
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(us.max(1));
        commits += 1;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(SqliteCommitSummary {
        bench: "sqlite-commit",
        journal_mode: journal_mode.to_uppercase(),
        synchronous: synchronous_name(synchronous),
        commits,
        elapsed_s,
        commits_per_s: commits as f64 / elapsed_s,
        latency_ms: LatencyMs::from_histogram_us(&hist),
    })
}

/// `cashless bench sqlite-commit`.
pub fn run_sqlite_commit(args: SqliteCommitBenchArgs) -> Result<()> {
    if args.path.exists() {
        bail!(
            "{} exists: give a path for a new file (it is written to and then removed)",
            args.path.display()
        );
    }
    let result = sqlite_commit_loop(&args.path, Duration::from_secs(args.duration));
    if !args.keep {
        remove_sqlite_files(&args.path);
    }
    let summary = result?;
    print!("{}", format_sqlite_summary(&summary));
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_commit_loop_uses_the_ledgers_pragmas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.db");
        let s = sqlite_commit_loop(&path, Duration::from_millis(200)).expect("runs");
        assert_eq!(s.journal_mode, "WAL");
        assert_eq!(s.synchronous, "FULL");
        assert!(s.commits > 0);
        let conn = rusqlite::Connection::open(&path).expect("open");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM bench_commit", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            u64::try_from(rows).ok(),
            Some(s.commits),
            "every commit is durable and counted"
        );
        let text = format_sqlite_summary(&s);
        crate::bench::assert_says(&text, &["synchronous=FULL"]);
    }

    #[test]
    fn sqlite_commit_refuses_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db");
        std::fs::write(&path, b"precious").expect("write");
        let err = run_sqlite_commit(SqliteCommitBenchArgs {
            path: path.clone(),
            duration: 1,
            keep: false,
            json: false,
        })
        .expect_err("refused");
        assert!(err.to_string().contains("exists"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"precious");
    }
}
