//! Checkpoint shifts end to end: the real terminal binary on JSON lines tops up, voids,
//! shows its shift and closes it through a network outage and a `kill -9`, and the real
//! ledger records each close-out exactly once, next to its own totals of the shift
//! (`cashless ledger shift list`). The shift arithmetic itself is in `terminal_journal.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::terminal::journal::{ClosedShift, CloseoutState, Journal};
use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// How long the ledger may take to show a close-out once the network is back.
const SYNC_DEADLINE: Duration = Duration::from_secs(20);

/// Checkpoint cp-1 with its config and journal in `dir`, its ledger at `addr`.
async fn checkpoint(dir: &Path, addr: &str, l: &Ledger) -> Terminal {
    Terminal::start_as(dir, addr, &l.checkpoint_token, "cp-1", "checkpoint").await
}

/// Arms a top-up, taps `card`, and returns the decision, which must be an online approval.
async fn topup(t: &mut Terminal, card: &str, amount_cents: i64, method: &str) -> Value {
    let d = t.top_up(amount_cents, method, card).await;
    assert_eq!(d["status"], "approved_online", "{d}");
    d
}

/// The `shift` event's figures: (opened_at, cash, card, count, voids).
async fn shift(t: &mut Terminal) -> (Value, i64, i64, i64, i64) {
    t.send(json!({"cmd": "shift"})).await;
    let s = t.expect("shift").await;
    let n = |k: &str| s[k].as_i64().unwrap_or_else(|| panic!("{k} in {s}"));
    (
        s["opened_at"].clone(),
        n("cash_cents"),
        n("card_cents"),
        n("count"),
        n("voids"),
    )
}

/// The rows of `cashless ledger shift list --terminal cp-1`, each split on whitespace.
fn ledger_shifts(l: &Ledger) -> Vec<Vec<String>> {
    let out = assert_success(
        "cashless ledger shift list",
        &l.admin(&["shift", "list", "--terminal", "cp-1"]),
    );
    if out.trim() == "no shift close-outs" {
        return Vec::new();
    }
    out.lines()
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Polls `shift list` until it shows a close-out of cp-1; returns its rows.
async fn wait_for_ledger_shifts(l: &Ledger) -> Vec<Vec<String>> {
    let until = tokio::time::Instant::now() + SYNC_DEADLINE;
    loop {
        let rows = ledger_shifts(l);
        if !rows.is_empty() {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the ledger shows no close-out after {SYNC_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The close-outs in the terminal's journal: the pending ones and the last one with its
/// state. Read-only, so it can be read while the terminal runs.
fn journal_closeouts(dir: &Path) -> (Vec<ClosedShift>, Option<(ClosedShift, CloseoutState)>) {
    let j = Journal::open_read_only(&dir.join("journal.db")).unwrap();
    (
        j.pending_closeouts(100).unwrap(),
        j.last_closeout().unwrap(),
    )
}

/// Polls the journal until its last close-out is `state`.
async fn wait_for_closeout_state(dir: &Path, state: CloseoutState) {
    wait_for(
        "the journal to settle the close-out",
        SYNC_DEADLINE,
        || matches!(journal_closeouts(dir).1, Some((_, s)) if s == state),
    )
    .await;
}

/// The ledger's close-outs and their idempotency keys, straight from its database.
fn ledger_closeout_keys(l: &Ledger) -> (Vec<String>, i64) {
    let conn = l.open_db();
    let ids = conn
        .prepare("SELECT client_request_id FROM shift_closeouts ORDER BY closed_at")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    let keys = conn
        .query_row(
            "SELECT COUNT(*) FROM idempotency_keys WHERE operation = 'shift'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (ids, keys)
}

/// The `terminal_seq` range of each close-out the ledger holds (`first_seq`, `last_seq`),
/// oldest close first.
fn ledger_ranges(l: &Ledger) -> Vec<(Option<i64>, Option<i64>)> {
    l.open_db()
        .prepare("SELECT first_seq, last_seq FROM shift_closeouts ORDER BY closed_at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_shift_closed_during_an_outage_reaches_headquarters_once_with_the_ledgers_totals() {
    let l = Ledger::start().await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = checkpoint(dir.path(), &proxy.addr, &l).await;
    ready_to_top_up(&mut t).await;
    assert_eq!(shift(&mut t).await, (Value::Null, 0, 0, 0, 0));

    // Two cards topped up in cash, one by card; the card top-up was a mistake and is voided.
    topup(&mut t, &uid(1), 5000, "cash").await;
    topup(&mut t, &uid(2), 2500, "cash").await;
    let card_topup = topup(&mut t, &uid(3), 3000, "card").await;
    t.send(json!({"cmd": "void_last"})).await;
    let v = t.expect("decision").await;
    assert_eq!(
        (&v["operation"], &v["target_client_request_id"]),
        (&json!("void"), &card_topup["client_request_id"]),
        "{v}"
    );
    let (opened_at, cash, card, count, voids) = shift(&mut t).await;
    assert_eq!((cash, card, count, voids), (7500, 0, 2, 1));
    // The shift opened with the first top-up, as journaled.
    let first = Journal::open_read_only(&dir.path().join("journal.db"))
        .unwrap()
        .entry(cashless::domain::TerminalSeq::new(1).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        opened_at,
        json!(cashless::protocol::api::format_time(first.created_at))
    );

    // The network goes down; the drawer is 1.50 short.
    proxy.go_down().await;
    t.send(json!({"cmd": "close_shift", "counted_cash_cents": 7350}))
        .await;
    let c = t.expect("shift_closed").await;
    assert_eq!(c["staff_id"], CASH_STAFF, "{c}");
    assert_eq!(c["opened_at"], opened_at, "{c}");
    for (field, value) in [
        ("cash_cents", 7500),
        ("card_cents", 0),
        ("count", 2),
        ("voids", 1),
        ("counted_cash_cents", 7350),
        ("difference_cents", -150),
    ] {
        assert_eq!(c[field], value, "{field} in {c}");
    }
    let crid = c["client_request_id"].as_str().unwrap().to_owned();
    let closed_at = c["closed_at"].as_str().unwrap().to_owned();
    assert!(opened_at.as_str().unwrap() <= closed_at.as_str(), "{c}");

    // A new shift, empty, from the close; the last top-up is not voided from it.
    assert_eq!(shift(&mut t).await, (json!(closed_at), 0, 0, 0, 0));
    t.expect_errors(&[(json!({"cmd": "void_last"}), "NOTHING_TO_VOID")])
        .await;

    // Sync rounds fail while the network is down: the close-out waits in the journal.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (pending, last) = journal_closeouts(dir.path());
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].closeout.client_request_id.to_string(), crid);
    assert_eq!(pending[0].difference.get(), -150);
    // Three top-ups and the void: the journal's first four entries.
    let sent = &pending[0].closeout;
    assert_eq!(
        (
            sent.first_seq.map(|s| s.get()),
            sent.last_seq.map(|s| s.get())
        ),
        (Some(1), Some(4))
    );
    assert!(matches!(last, Some((_, CloseoutState::Pending))));
    assert_eq!(l.count("shift_closeouts"), 0);

    // Back online: headquarters sees it once, with the ledger's own top-ups agreeing.
    proxy.go_up();
    wait_for_ledger_shifts(&l).await;
    wait_until_synced(&mut t).await;
    wait_for_closeout_state(dir.path(), CloseoutState::Recorded).await;
    let rows = ledger_shifts(&l);
    assert_eq!(
        rows,
        vec![vec![
            "cp-1",
            CASH_STAFF,
            opened_at.as_str().unwrap(),
            closed_at.as_str(),
            "2",
            "75.00",
            "73.50",
            "-1.50",
            "0.00",
            "2",
            "75.00",
            "0.00",
        ]],
        "TERMINAL STAFF OPENED CLOSED COUNT CASH COUNTED DIFFERENCE CARD, then the ledger's \
         COUNT CASH CARD"
    );
    assert_eq!(ledger_closeout_keys(&l), (vec![crid.clone()], 1));
    assert_eq!(ledger_ranges(&l), vec![(Some(1), Some(4))]);
    assert!(journal_closeouts(dir.path()).0.is_empty());

    // The next shift starts right after: its one top-up is seq 5, and the ledger's totals
    // of it agree too.
    topup(&mut t, &uid(4), 1200, "cash").await;
    t.send(json!({"cmd": "close_shift", "counted_cash_cents": 1200}))
        .await;
    let second = t.expect("shift_closed").await;
    assert_eq!(second["opened_at"], json!(closed_at), "{second}");
    wait_for(
        "the ledger to show the second close-out",
        SYNC_DEADLINE,
        || ledger_shifts(&l).len() == 2,
    )
    .await;
    wait_for_closeout_state(dir.path(), CloseoutState::Recorded).await;
    assert_eq!(
        ledger_shifts(&l)[1][4..],
        ["1", "12.00", "12.00", "0.00", "0.00", "1", "12.00", "0.00"]
    );
    assert_eq!(
        ledger_ranges(&l),
        vec![(Some(1), Some(4)), (Some(5), Some(5))]
    );
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn shift_commands_are_checked_and_a_close_out_ends_void_last() {
    let l = Ledger::start().await;
    let proxy = Proxy::start(&l.base_url).await;
    let cp_dir = tempfile::tempdir().unwrap();
    let mut cp = checkpoint(cp_dir.path(), &proxy.addr, &l).await;
    cp.expect("ready").await;
    cp.expect_errors(&[(
        json!({"cmd": "close_shift", "counted_cash_cents": 0}),
        "NOT_LOGGED_IN",
    )])
    .await;
    cp.send(json!({"cmd": "login", "staff_id": CASH_STAFF, "pin": "2345"}))
        .await;
    assert_eq!(cp.expect("login").await["ok"], true);
    topup(&mut cp, &uid(1), 1000, "cash").await;
    let bad = |cash: Value| {
        (
            json!({"cmd": "close_shift", "counted_cash_cents": cash}),
            "INVALID_COMMAND",
        )
    };
    cp.expect_errors(&[
        bad(json!(-1)),
        bad(json!(1_000_000_001)),
        bad(json!(i64::MIN)),
        bad(json!(12.5)),
        bad(json!("1000")),
        (json!({"cmd": "close_shift"}), "INVALID_COMMAND"),
    ])
    .await;
    // Nothing was closed: the shift still holds its top-up, the journal no close-out.
    let (opened_at, cash, card, count, voids) = shift(&mut cp).await;
    assert!(opened_at.is_string());
    assert_eq!((cash, card, count, voids), (1000, 0, 1, 0));
    assert_eq!(journal_closeouts(cp_dir.path()), (vec![], None));
    // Closed for real, the top-up belongs to the closed shift: it is not voided from here.
    cp.send(json!({"cmd": "close_shift", "counted_cash_cents": 1000}))
        .await;
    assert_eq!(cp.expect("shift_closed").await["difference_cents"], 0);
    cp.expect_errors(&[(json!({"cmd": "void_last"}), "NOTHING_TO_VOID")])
        .await;
    let (_, cash, card, count, voids) = shift(&mut cp).await;
    assert_eq!((cash, card, count, voids), (0, 0, 0, 0));

    // A bar keeps no shift.
    let bar_dir = tempfile::tempdir().unwrap();
    let mut bar = Terminal::start(bar_dir.path(), &proxy.addr, &l.bar_token).await;
    bar.expect("ready").await;
    bar.expect_errors(&[(
        json!({"cmd": "close_shift", "counted_cash_cents": 0}),
        "NOT_LOGGED_IN",
    )])
    .await;
    bar.send(json!({"cmd": "login", "staff_id": BAR_STAFF, "pin": "1234"}))
        .await;
    assert_eq!(bar.expect("login").await["ok"], true);
    bar.expect_errors(&[
        (json!({"cmd": "shift"}), "WRONG_TERMINAL_KIND"),
        (
            json!({"cmd": "close_shift", "counted_cash_cents": 0}),
            "WRONG_TERMINAL_KIND",
        ),
    ])
    .await;
    assert_eq!(journal_closeouts(bar_dir.path()), (vec![], None));
    bar.quit().await;
    cp.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_checkpoint_killed_after_closing_offline_sends_the_close_out_once_after_restart() {
    let l = Ledger::start().await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = checkpoint(dir.path(), &proxy.addr, &l).await;
    ready_to_top_up(&mut t).await;
    topup(&mut t, &uid(1), 4000, "cash").await;
    topup(&mut t, &uid(2), 1000, "card").await;
    wait_until_synced(&mut t).await;

    // Closed while the network is down, then killed before any sync could send it.
    proxy.go_down().await;
    t.send(json!({"cmd": "close_shift", "counted_cash_cents": 4000}))
        .await;
    let c = t.expect("shift_closed").await;
    t.child.start_kill().unwrap();
    t.child.wait().await.unwrap();
    assert_eq!(
        (
            &c["cash_cents"],
            &c["card_cents"],
            &c["count"],
            &c["difference_cents"]
        ),
        (&json!(4000), &json!(1000), &json!(2), &json!(0)),
        "{c}"
    );
    let crid = c["client_request_id"].as_str().unwrap().to_owned();
    let (pending, _) = journal_closeouts(dir.path());
    assert_eq!(
        pending
            .iter()
            .map(|p| p.closeout.client_request_id.to_string())
            .collect::<Vec<_>>(),
        vec![crid.clone()],
        "the journal kept the close-out through the kill"
    );
    assert_eq!(l.count("shift_closeouts"), 0);

    // Restarted with the network back: sent, recorded once, settled in the journal.
    proxy.go_up();
    let mut t = checkpoint(dir.path(), &proxy.addr, &l).await;
    t.expect("ready").await;
    let rows = wait_for_ledger_shifts(&l).await;
    wait_for_closeout_state(dir.path(), CloseoutState::Recorded).await;
    // A few more sync rounds change nothing.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(ledger_shifts(&l), rows);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][1..],
        [
            CASH_STAFF,
            c["opened_at"].as_str().unwrap(),
            c["closed_at"].as_str().unwrap(),
            "2",
            "40.00",
            "40.00",
            "0.00",
            "10.00",
            "2",
            "40.00",
            "10.00"
        ]
    );
    assert_eq!(ledger_closeout_keys(&l), (vec![crid], 1));
    assert_eq!(ledger_ranges(&l), vec![(Some(1), Some(2))]);
    // The new process starts a new shift at the close.
    t.send(json!({"cmd": "login", "staff_id": CASH_STAFF, "pin": "2345"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    assert_eq!(shift(&mut t).await, (c["closed_at"].clone(), 0, 0, 0, 0));
    t.quit().await;
    l.assert_audit_ok();
}

/// `cashless terminal status` of the checkpoint in `dir` (read while it runs).
fn terminal_status(dir: &Path) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "terminal",
            "--config",
            dir.join("terminal.toml").to_str().unwrap(),
            "status",
        ])
        .env_remove("CASHLESS_LEDGER_URL")
        .env_remove("CASHLESS_LEDGER_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `status` event's `online` and `closeouts_pending`.
async fn online_and_closeouts_pending(t: &mut Terminal) -> (Value, Value) {
    t.send(json!({"cmd": "status"})).await;
    let s = t.expect("status").await;
    (s["online"].clone(), s["closeouts_pending"].clone())
}

#[tokio::test]
async fn a_close_out_the_ledger_cannot_take_waits_in_sight_and_the_checkpoint_stays_online() {
    let l = Ledger::start().await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = checkpoint(dir.path(), &proxy.addr, &l).await;
    ready_to_top_up(&mut t).await;
    topup(&mut t, &uid(1), 2000, "cash").await;
    wait_until_synced(&mut t).await;
    assert_eq!(
        online_and_closeouts_pending(&mut t).await,
        (json!(true), json!(0))
    );

    // The ledger answers 503 to every close-out, and everything else as usual.
    proxy.set_mode(SHIFTS_UNAVAILABLE).await;
    t.send(json!({"cmd": "close_shift", "counted_cash_cents": 2000}))
        .await;
    let crid = t.expect("shift_closed").await["client_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Sync rounds (200 ms apart) fail to send it: it stays pending and in sight, and the
    // checkpoint stays online: a top-up is still decided by the ledger.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        online_and_closeouts_pending(&mut t).await,
        (json!(true), json!(1))
    );
    topup(&mut t, &uid(2), 1000, "card").await;
    assert!(
        terminal_status(dir.path())
            .lines()
            .any(|line| line == "closeouts_pending: 1"),
        "{}",
        terminal_status(dir.path())
    );
    let (pending, _) = journal_closeouts(dir.path());
    assert_eq!(
        pending
            .iter()
            .map(|p| p.closeout.client_request_id.to_string())
            .collect::<Vec<_>>(),
        vec![crid.clone()]
    );
    assert_eq!(l.count("shift_closeouts"), 0);

    // The ledger takes close-outs again: recorded once, out of sight.
    proxy.set_mode(FORWARD).await;
    wait_for_closeout_state(dir.path(), CloseoutState::Recorded).await;
    assert_eq!(
        online_and_closeouts_pending(&mut t).await,
        (json!(true), json!(0))
    );
    assert!(
        terminal_status(dir.path())
            .lines()
            .any(|line| line == "closeouts_pending: 0")
    );
    assert_eq!(ledger_closeout_keys(&l), (vec![crid], 1));
    t.quit().await;
    l.assert_audit_ok();
}
