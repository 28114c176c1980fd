//! `cashless ledger housekeeping` (issue 14), black-box on both backends: the real binary
//! against a serving ledger's database.
//!
//! Decline keys past their retention are deleted and applied operations keep theirs (a late
//! replay is recognised, never applied twice); scan-log and audit-log rows older than the
//! cut-off are in the archive file (gzip JSON lines) exactly once and gone from the tables;
//! the audit passes afterwards (what archived rows proved of voucher units is carried); it
//! runs while orders stream in without an error or a lost row; bad arguments change nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// Runs housekeeping archiving into `dir` rows older than `days`; returns its stdout.
fn housekeeping(l: &Ledger, dir: &Path, days: &str) -> String {
    let out = l.admin(&[
        "housekeeping",
        "--archive-dir",
        dir.to_str().unwrap(),
        "--archive-after-days",
        days,
    ]);
    assert_success("housekeeping", &out)
}

/// Every line of every archive file in `dir`.
fn archived(dir: &Path) -> Vec<Value> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("cashless-archive-") && name.ends_with(".jsonl.gz"),
            "unexpected file {name}"
        );
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            lines.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    lines
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// The ids of `table` (`id` column) now.
fn ids(l: &Ledger, table: &str, id: &str) -> BTreeSet<i64> {
    l.query_json(&format!("SELECT {id} AS id FROM {table}"))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// Makes every decline key's retention run out, as if `retention_days` had passed.
fn expire_decline_keys(l: &Ledger) {
    let sql = match l.backend() {
        Backend::Sqlite => {
            "UPDATE idempotency_keys SET expires_at = '2020-01-01T00:00:00.000Z' \
             WHERE transaction_id IS NULL"
        }
        Backend::Postgres => {
            "UPDATE idempotency_keys SET expires_at = '2020-01-01T00:00:00Z' \
             WHERE transaction_id IS NULL"
        }
    };
    assert!(l.tamper(sql) > 0);
}

async fn decline_keys_expire_and_applied_ones_stay_for_a_late_replay(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    l.fund(&uid(1), 1_000).await;
    let applied = order_body(&uid(1), l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &applied)
        .await
        .assert_status(201);
    // An unknown card: declined, its key kept only for the retention.
    let declined = order_body(&uid(2), l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &declined)
        .await
        .assert_error(404, "CARD_NOT_FOUND");
    let applied_keys =
        l.query_i64("SELECT COUNT(*) FROM idempotency_keys WHERE transaction_id IS NOT NULL");
    assert_eq!(applied_keys, 2, "the top-up's and the order's");
    expire_decline_keys(&l);

    let out = housekeeping(&l, dir.path(), "30");
    assert!(out.contains("decline keys purged: 1\n"), "{out}");
    assert_eq!(l.count("idempotency_keys"), applied_keys);

    // The applied order sent again, long after: recognised, answered as before, not applied.
    let again = l.post("/v1/orders", &l.bar_token, &applied).await;
    again.assert_status(201);
    assert!(again.replayed(), "{:?}", again.body);
    assert_eq!(l.balance(&uid(1)).await, 800);
    assert_eq!(l.count("bar_orders"), 1);
    // The decline's key is gone: its request is decided afresh (still an unknown card).
    let again = l.post("/v1/orders", &l.bar_token, &declined).await;
    again.assert_error(404, "CARD_NOT_FOUND");
    assert!(!again.replayed());
    // Nothing was old enough to archive.
    assert!(out.contains("archive file: none"), "{out}");
    assert_eq!(files_in(dir.path()), 0);
    l.assert_audit_ok();
}

async fn old_log_rows_are_archived_once_then_removed_and_the_audit_still_holds(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    // Audit-log rows of every kind the audit reads: the desk's grants, a daily allowance and
    // its renewal, and operations.
    for args in [
        vec!["voucher", "grant", "--uid", &uid(1), "--units", "5"],
        vec!["voucher", "daily", "--uid", &uid(2), "--units", "2"],
    ] {
        assert_success("voucher", &l.admin(&args));
    }
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_success(
        "start-day",
        &l.admin(&["voucher", "start-day", "--day", &tomorrow, "--allow-future"]),
    );
    l.fund(&uid(3), 2_000).await;
    let order = order_body(&uid(3), l.seq(&l.bar_token), &[("water", 2, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_status(201);
    let scans = json!({"scans": (0..3).map(|i| json!({
        "card_uid": uid(3), "result": "ok", "reader": format!("r{i}"), "scanned_at": now_rfc3339()
    })).collect::<Vec<_>>()});
    l.post("/v1/scans", &l.bar_token, &scans)
        .await
        .assert_status(200);
    let mut audit_before = ids(&l, "app_transaction_log", "log_id");
    let mut scans_before = ids(&l, "nfc_scan_log", "scan_id");
    assert!(audit_before.len() >= 5 && scans_before.len() == 3);
    // Each log's newest row stays (SQLite would hand its id out again otherwise).
    let audit_newest = audit_before.pop_last().unwrap();
    let scan_newest = scans_before.pop_last().unwrap();
    let vouchers_before = l.query_i64("SELECT SUM(voucher_units) FROM cards");

    let out = housekeeping(&l, dir.path(), "0");
    assert!(
        out.contains(&format!("scan-log rows archived: {}\n", scans_before.len()))
            && out.contains(&format!(
                "audit-log rows archived: {}\n",
                audit_before.len()
            )),
        "{out}"
    );
    // Each row is in the file once, whole, and gone from its table; the newest stay.
    let lines = archived(dir.path());
    let mut in_file: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for line in &lines {
        let table = line["table"].as_str().unwrap();
        let id = line["id"].as_i64().unwrap();
        let id_column = if table == "nfc_scan_log" {
            "scan_id"
        } else {
            "log_id"
        };
        assert_eq!(line["row"][id_column], json!(id), "{line}");
        in_file.entry(table).or_default().push(id);
    }
    assert_eq!(
        in_file["app_transaction_log"],
        audit_before.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(
        in_file["nfc_scan_log"],
        scans_before.iter().copied().collect::<Vec<_>>()
    );
    assert!(
        lines
            .iter()
            .any(|l| l["row"]["operation"] == "voucher_grant"
                && l["row"]["details"]["units"] == json!(5))
    );
    assert_eq!(
        ids(&l, "app_transaction_log", "log_id"),
        BTreeSet::from([audit_newest])
    );
    assert_eq!(
        ids(&l, "nfc_scan_log", "scan_id"),
        BTreeSet::from([scan_newest])
    );
    // The cards did not change, and the audit still proves their voucher units.
    assert_eq!(
        l.query_i64("SELECT SUM(voucher_units) FROM cards"),
        vouchers_before
    );
    l.assert_audit_ok();

    // Nothing old is left: a second run writes no file.
    let again = housekeeping(&l, dir.path(), "0");
    assert!(again.contains("archive file: none"), "{again}");
    assert_eq!(files_in(dir.path()), 1);
    // Later rows join the carried ones in the proof, with ids never handed out before; and
    // the row that was newest goes at the next run.
    assert_success(
        "voucher",
        &l.admin(&["voucher", "grant", "--uid", &uid(1), "--units", "3"]),
    );
    assert!(ids(&l, "app_transaction_log", "log_id").last() > Some(&audit_newest));
    l.assert_audit_ok();
    let third = housekeeping(&l, dir.path(), "0");
    assert!(third.contains("audit-log rows archived: 1\n"), "{third}");
    assert_eq!(files_in(dir.path()), 2);
    l.assert_audit_ok();
    // A card tampered with after the archive is still named.
    l.tamper(&format!(
        "UPDATE cards SET voucher_units = voucher_units + 1 WHERE card_uid = '{}'",
        uid(1)
    ));
    let audit = l.audit();
    assert_eq!(audit.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&audit.stdout).contains(&uid(1)));
}

/// Clients streaming top-ups while housekeeping runs.
const LOAD_CLIENTS: u32 = 4;
const LOAD_TOPUPS_PER_CLIENT: usize = 60;
const LOAD_RUNS: usize = 4;

async fn housekeeping_runs_safely_while_the_ledger_serves_under_load(backend: Backend) {
    let l = std::sync::Arc::new(Ledger::start_on(backend).await);
    let dir = tempfile::tempdir().unwrap();
    let mut clients = Vec::new();
    for c in 0..LOAD_CLIENTS {
        let l = std::sync::Arc::clone(&l);
        clients.push(tokio::spawn(async move {
            let mut transactions = Vec::new();
            for _ in 0..LOAD_TOPUPS_PER_CLIENT {
                let resp = l.topup(&uid(100 + c), 100).await;
                assert_eq!(resp.status, 201, "{:?}", resp.body);
                transactions.push(resp.body["transaction_id"].as_str().unwrap().to_owned());
            }
            transactions
        }));
    }
    let runs = {
        let l = std::sync::Arc::clone(&l);
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            (0..LOAD_RUNS)
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(150));
                    housekeeping(&l, &dir, "0")
                })
                .collect::<Vec<_>>()
        })
    };
    let mut acknowledged = Vec::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    let runs = runs.await.unwrap();
    assert!(
        runs.iter()
            .filter(|out| !out.contains("archive file: none"))
            .count()
            >= 2,
        "housekeeping archived during the load: {runs:?}"
    );
    // Every acknowledged top-up is in the books once, and its audit-log row is in an archive
    // file or still in the table: exactly once.
    assert_eq!(l.count("recharges"), acknowledged.len() as i64);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in archived(dir.path()) {
        if let Some(t) = line["row"]["transaction_id"].as_str() {
            *seen.entry(t.to_owned()).or_default() += 1;
        }
    }
    for row in l.query_json("SELECT transaction_id FROM app_transaction_log") {
        if let Some(t) = row["transaction_id"].as_str() {
            *seen.entry(t.to_owned()).or_default() += 1;
        }
    }
    for t in &acknowledged {
        assert_eq!(seen.get(t), Some(&1), "audit-log row of {t}");
    }
    for (c, _) in (0..LOAD_CLIENTS).zip(0..) {
        assert_eq!(
            l.balance(&uid(100 + c)).await,
            100 * LOAD_TOPUPS_PER_CLIENT as i64
        );
    }
    l.assert_audit_ok();
}

/// Audit-log rows of desk voucher grants made directly in the database, this many.
const GRANT_ROWS: i64 = 5_000;

/// The number after `label: ` in a run's output.
fn reported(out: &str, label: &str) -> i64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(": ")?.parse().ok())
        .unwrap_or_else(|| panic!("no {label} in {out}"))
}

async fn two_runs_at_once_remove_each_row_once_and_carry_it_once(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    assert_success(
        "voucher",
        &l.admin(&["voucher", "grant", "--uid", &uid(1), "--units", "1"]),
    );
    // Many more grants, as years of a festival's desk would leave (several chunks each run).
    let insert = match l.backend() {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {GRANT_ROWS})
             INSERT INTO app_transaction_log (occurred_at, actor, operation, card_uid, outcome, details)
             SELECT '2026-01-01T00:00:00.000Z', 'admin', 'voucher_grant', '{}', 'done', '{{\"units\":1}}' FROM n",
            uid(1)
        ),
        Backend::Postgres => format!(
            "INSERT INTO app_transaction_log (occurred_at, actor, operation, card_uid, outcome, details)
             SELECT now() - interval '1 day', 'admin', 'voucher_grant', '{}', 'done', '{{\"units\":1}}'::jsonb
             FROM generate_series(1, {GRANT_ROWS})",
            uid(1)
        ),
    };
    assert_eq!(l.tamper(&insert), GRANT_ROWS as u64);
    l.tamper(&format!(
        "UPDATE cards SET voucher_units = voucher_units + {GRANT_ROWS} WHERE card_uid = '{}'",
        uid(1)
    ));
    l.assert_audit_ok();
    let rows = l.count("app_transaction_log");

    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let runs: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [a.path(), b.path()]
            .into_iter()
            .map(|dir| s.spawn(|| housekeeping(&l, dir, "0")))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    // Between them, every row but the newest was removed once, and carried once.
    let removed: i64 = runs
        .iter()
        .map(|o| reported(o, "audit-log rows archived"))
        .sum();
    assert_eq!(removed, rows - 1, "{runs:?}");
    assert_eq!(l.count("app_transaction_log"), 1);
    l.assert_audit_ok();
    // And each removed row is in one file at least.
    let mut in_files = BTreeSet::new();
    for dir in [a.path(), b.path()] {
        if files_in(dir) > 0 {
            for line in archived(dir) {
                in_files.insert(line["id"].as_i64().unwrap());
            }
        }
    }
    assert_eq!(in_files.len() as i64, rows - 1);
}

async fn bad_housekeeping_arguments_change_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let declined = order_body(&uid(2), l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &declined)
        .await
        .assert_error(404, "CARD_NOT_FOUND");
    expire_decline_keys(&l);
    let before = l.db_fingerprint();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["housekeeping"], 1, "[housekeeping] archive_dir"),
        (
            vec!["housekeeping", "--archive-dir", "/nonexistent/archive"],
            1,
            "/nonexistent/archive",
        ),
        (
            vec!["housekeeping", "--archive-dir", file.to_str().unwrap()],
            1,
            "not a directory",
        ),
        (
            vec![
                "housekeeping",
                "--archive-dir",
                dir.path().to_str().unwrap(),
                "--archive-after-days",
                "3651",
            ],
            2,
            "3651",
        ),
        (
            vec![
                "housekeeping",
                "--archive-dir",
                dir.path().to_str().unwrap(),
                "--archive-after-days",
                "soon",
            ],
            2,
            "soon",
        ),
    ];
    for (args, code, message) in &cases {
        let out = l.admin(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a refused run changed the database"
    );
    assert_eq!(files_in(dir.path()), 1, "only the test's own file");
}

on_both_backends! {
    decline_keys_expire_and_applied_ones_stay_for_a_late_replay,
    old_log_rows_are_archived_once_then_removed_and_the_audit_still_holds,
    housekeeping_runs_safely_while_the_ledger_serves_under_load,
    two_runs_at_once_remove_each_row_once_and_carry_it_once,
    bad_housekeeping_arguments_change_nothing,
}
