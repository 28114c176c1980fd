#![allow(clippy::unwrap_used)]
//! The terminal's journal on a filesystem that fails for real: the real terminal binary, the
//! real ledger binary, and a tmpfs mounted for each test, then made read-only or filled up.
//! Whatever the disk does, the terminal declines with a clear reason (`JOURNAL_UNAVAILABLE`)
//! and never shows an approval, the daemon keeps running, the ledger charges nothing for a
//! declined tap, and once the disk takes writes again every approved sale reaches the ledger
//! exactly once.
//!
//! These tests mount filesystems: they need root with `CAP_SYS_ADMIN` (CI runs them as
//! root). Without it they fail, saying so; they never skip.
//!
//! Why the read-only case starts the daemon on an already read-only filesystem instead of
//! remounting it under the running daemon: the kernel refuses `mount -o remount,ro` with
//! `EBUSY` while any process holds a file of that filesystem open for writing, and the
//! daemon holds its journal (database, `-wal`, `-shm`) open from start to quit. A journal
//! cannot become read-only under a running daemon through a remount; it can be read-only
//! when the daemon starts (a card whose filesystem came up read-only after a boot).
//! Running out of space while the daemon runs is the full-disk test.

mod common;

use cashless::domain::ClientRequestId;
use cashless::terminal::journal::{Decision, EntryState, Journal};
use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `ENOSPC` and `EROFS` on Linux.
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped (also when the
/// test panics, and lazily if a killed terminal still holds a file open).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `3m`). Panics if that is not
    /// possible: these tests need root with CAP_SYS_ADMIN and must not pass without it.
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("cashless-disk-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("cashless-test")
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Tmpfs { dir },
            Ok(out) => panic!(
                "needs root with CAP_SYS_ADMIN: tmpfs mount failed: mount exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => {
                panic!("needs root with CAP_SYS_ADMIN: tmpfs mount failed: cannot run mount: {e}")
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mount -o remount,MODE` (`ro` or `rw`); panics with mount's message if refused.
    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -o remount,{mode} {} failed: {}",
            self.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Fills the free space with `filler` until the kernel answers `ENOSPC`, and checks that
    /// not even one more byte fits in a new file. Returns the filler's path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [64 * 1024, 4096, 1] {
            let buf = vec![0xA5u8; chunk];
            loop {
                match file.write(&buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        drop(file);
        let probe = self.path().join("probe");
        let err = std::fs::write(&probe, b"x").expect_err("the tmpfs still takes writes");
        assert_eq!(err.raw_os_error(), Some(ENOSPC), "{err}");
        let _ = std::fs::remove_file(&probe);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(self.dir.path())
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount {}", self.dir.path().display());
        }
    }
}

/// Arms an order of one `product` and taps `card`; returns what the terminal answered: the
/// `decision`, or an `error` event if it refused to arm or to decide.
async fn sell_outcome(t: &mut Terminal, product: &str, card: &str) -> Value {
    t.send(json!({"cmd": "order", "items": [{"product_id": product, "quantity": 1}]}))
        .await;
    let armed = next_of(t, &["armed", "error"]).await;
    if armed["event"] == "error" {
        return armed;
    }
    t.send(json!({"cmd": "tap", "uid": card})).await;
    next_of(t, &["decision", "error"]).await
}

/// The next event named one of `names` (others are skipped).
async fn next_of(t: &mut Terminal, names: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, t.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {names:?} event within {EVENT_DEADLINE:?}"))
            .unwrap_or_else(|| panic!("the terminal exited before a {names:?} event"));
        if names.iter().any(|n| event["event"] == *n) {
            return event;
        }
    }
}

/// A sale the journal could not take: declined with `JOURNAL_UNAVAILABLE` (or refused with
/// an `error` event of that code), never approved.
#[track_caller]
fn assert_refused_for_the_journal(outcome: &Value) {
    let refused = match outcome["event"].as_str() {
        Some("decision") => {
            outcome["status"] == "declined" && outcome["reason"] == "JOURNAL_UNAVAILABLE"
        }
        Some("error") => outcome["code"] == "JOURNAL_UNAVAILABLE",
        _ => false,
    };
    assert!(
        refused,
        "the journal cannot be written: expected a decline with reason JOURNAL_UNAVAILABLE, got {outcome}"
    );
}

/// Asserts an approval of `status`; returns its `client_request_id`.
#[track_caller]
fn approved(d: &Value, status: &str) -> String {
    assert_eq!(d["status"], status, "{d}");
    d["client_request_id"].as_str().unwrap().to_owned()
}

/// `status` answers, and the process is still running.
async fn assert_alive(t: &mut Terminal) -> Value {
    t.send(json!({"cmd": "status"})).await;
    let s = next_of(t, &["status", "error"]).await;
    assert_eq!(s["event"], "status", "status must keep answering: {s}");
    assert!(t.running(), "the daemon exited");
    s
}

/// Takes the network down and waits until the terminal noticed (`status` says offline), so
/// that its next tap is decided offline at once (not first tried online, found in doubt and
/// voided).
async fn go_offline(t: &mut Terminal, proxy: &Proxy) {
    proxy.go_down().await;
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    while assert_alive(t).await["online"] != false {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the terminal never noticed the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Orders at the ledger under `crid` that stand (not voided).
fn standing_orders(l: &Ledger, crid: &str) -> i64 {
    l.open_db()
        .query_row(
            "SELECT COUNT(*) FROM bar_orders WHERE client_request_id = ?1 AND voided_by IS NULL",
            [crid],
            |r| r.get(0),
        )
        .unwrap()
}

/// Every approval shown is charged at the ledger exactly once, and nothing else is.
#[track_caller]
fn assert_charged_exactly(l: &Ledger, shown: &[String]) {
    for crid in shown {
        assert_eq!(
            standing_orders(l, crid),
            1,
            "approval {crid} was shown but is not charged exactly once"
        );
    }
    // (A void may exist: an online attempt that met the outage is voided by its key, which
    // at the ledger only leaves a tombstone.)
    let standing: i64 = l
        .open_db()
        .query_row(
            "SELECT COUNT(*) FROM bar_orders WHERE voided_by IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        standing,
        shown.len() as i64,
        "the ledger charges orders that were never shown as approved"
    );
}

/// Every approval shown is in the journal as approved and acknowledged by the ledger.
#[track_caller]
fn assert_in_journal(journal: &Path, shown: &[String]) {
    let j = Journal::open(journal).unwrap();
    for crid in shown {
        let e = j
            .entry_by_request_id(ClientRequestId::parse(crid).unwrap())
            .unwrap()
            .unwrap_or_else(|| panic!("approval {crid} was shown but is not in the journal"));
        assert!(
            e.decision.is_some_and(Decision::is_approved) && e.state == EntryState::Synced,
            "{crid}: {e:?}"
        );
    }
}

/// A terminal on `fs` (journal `journal.db` there, config in `conf`) that sold once online,
/// then was killed (`kill -9`: the journal's `-wal` and `-shm` files stay, as after a power
/// cut). Returns the config file and the approval shown.
async fn sold_once_then_killed(
    l: &Ledger,
    url: &str,
    fs: &Tmpfs,
    conf: &Path,
) -> (PathBuf, String) {
    let config = write_config(
        conf,
        &fs.path().join("journal.db"),
        url,
        &l.bar_token,
        "bar-1",
        "bar",
        1000,
    );
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    let crid = approved(&t.sell("beer-05", 1, &uid(1)).await, "approved_online");
    kill9(t).await;
    (config, crid)
}

async fn kill9(mut t: Terminal) {
    t.child.start_kill().unwrap();
    t.child.wait().await.unwrap();
}

#[tokio::test]
async fn a_read_only_journal_declines_every_sale_charges_nothing_and_a_restart_replays_it_all() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let fs = Tmpfs::mount("8m");
    let conf = tempfile::tempdir().unwrap();
    let journal = fs.path().join("journal.db");
    let config = write_config(
        conf.path(),
        &journal,
        &proxy.addr,
        &l.bar_token,
        "bar-1",
        "bar",
        1000,
    );
    let mut shown = Vec::new();

    // The setup works: one sale online, one offline that waits in the journal for replay.
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    let d = t.sell("beer-05", 1, &card).await;
    shown.push(approved(&d, "approved_online"));
    assert_eq!(d["balance_cents"], 2550, "{d}");
    wait_until_synced(&mut t).await;
    go_offline(&mut t, &proxy).await;
    let d = t.sell("water", 1, &card).await;
    let offline = approved(&d, "approved_offline");
    shown.push(offline.clone());
    // A power cut; the filesystem is read-only when the terminal starts again (see the
    // module comment for why it cannot become read-only under the running daemon).
    kill9(t).await;
    fs.remount("ro");
    let err = std::fs::write(fs.path().join("probe"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;

    // Offline: every sale is declined for the journal, never approved.
    for product in ["beer-05", "water", "cocktail"] {
        assert_refused_for_the_journal(&sell_outcome(&mut t, product, &card).await);
    }
    let s = assert_alive(&mut t).await;
    assert_eq!(s["pending"], 1, "the offline sale still waits: {s}");

    // The network is back. The offline sale is replayed (the journal cannot record the
    // acknowledgement, so it is sent again and again: the ledger applies it once); new sales
    // are still declined.
    proxy.go_up();
    wait_for(
        "the replay of the offline sale to reach the ledger",
        Duration::from_secs(20),
        || standing_orders(&l, &offline) == 1,
    )
    .await;
    for product in ["beer-05", "water", "cocktail"] {
        assert_refused_for_the_journal(&sell_outcome(&mut t, product, &card).await);
    }
    assert_alive(&mut t).await;
    assert_eq!(
        l.balance(&card).await,
        3000 - BEER_CENTS - WATER_CENTS,
        "no declined tap is charged"
    );
    assert_charged_exactly(&l, &shown);
    l.assert_audit_ok();

    // Writable again; a restart opens the journal read-write, replays, and sells.
    fs.remount("rw");
    t.quit().await;
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    wait_until_synced(&mut t).await;
    let d = t.sell("beer-05", 1, &card).await;
    shown.push(approved(&d, "approved_online"));
    assert_eq!(
        d["balance_cents"],
        3000 - 2 * BEER_CENTS - WATER_CENTS,
        "{d}"
    );
    wait_until_synced(&mut t).await;
    t.quit().await;

    assert_eq!(l.balance(&card).await, 3000 - 2 * BEER_CENTS - WATER_CENTS);
    assert_charged_exactly(&l, &shown);
    assert_in_journal(&journal, &shown);
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_read_only_journal_after_a_clean_shutdown_still_starts_declines_and_shows_its_status() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let fs = Tmpfs::mount("8m");
    let conf = tempfile::tempdir().unwrap();
    let journal = fs.path().join("journal.db");
    let config = write_config(
        conf.path(),
        &journal,
        l.base_url.trim_start_matches("http://"),
        &l.bar_token,
        "bar-1",
        "bar",
        1000,
    );
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    let shown = vec![approved(
        &t.sell("beer-05", 1, &card).await,
        "approved_online",
    )];
    t.quit().await;
    // `quit` closes the journal cleanly: the last connection checkpoints and removes `-wal`
    // and `-shm`.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", journal.display()));
        assert!(!side.exists(), "{} is still there", side.display());
    }

    fs.remount("ro");
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    assert_refused_for_the_journal(&sell_outcome(&mut t, "water", &card).await);
    assert_alive(&mut t).await;
    t.quit().await;
    let status = std::process::Command::new(BIN)
        .args(["terminal", "status", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("pending: 0"),
        "cashless terminal status on a read-only journal: {}\n{}{}",
        status.status,
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(l.balance(&card).await, 3000 - BEER_CENTS);
    assert_charged_exactly(&l, &shown);
}

#[tokio::test]
async fn a_journal_writable_again_is_used_again_without_a_restart() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let fs = Tmpfs::mount("8m");
    let conf = tempfile::tempdir().unwrap();
    let url = l.base_url.trim_start_matches("http://").to_owned();
    let (config, first) = sold_once_then_killed(&l, &url, &fs, conf.path()).await;
    let mut shown = vec![first];

    fs.remount("ro");
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    assert_refused_for_the_journal(&sell_outcome(&mut t, "water", &card).await);

    // The disk takes writes again while the daemon runs: it must sell again by itself.
    fs.remount("rw");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = sell_outcome(&mut t, "water", &card).await;
        if outcome["event"] == "decision"
            && outcome["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("approved"))
        {
            shown.push(outcome["client_request_id"].as_str().unwrap().to_owned());
            break;
        }
        assert_refused_for_the_journal(&outcome);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal has been writable for 20 s and the running daemon still declines \
             every sale: {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_until_synced(&mut t).await;
    t.quit().await;
    assert_eq!(l.balance(&card).await, 3000 - BEER_CENTS - WATER_CENTS);
    assert_charged_exactly(&l, &shown);
    assert_in_journal(&fs.path().join("journal.db"), &shown);
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_full_disk_declines_every_sale_charges_nothing_and_selling_resumes_when_space_is_freed() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let proxy = Proxy::start(&l.base_url).await;
    // Small enough that the write-ahead log never reaches SQLite's 1000-page auto-checkpoint
    // (which would let later commits reuse space already allocated): every commit after the
    // fill needs a new page, and gets ENOSPC.
    let fs = Tmpfs::mount("3m");
    let conf = tempfile::tempdir().unwrap();
    let journal = fs.path().join("journal.db");
    let config = write_config(
        conf.path(),
        &journal,
        &proxy.addr,
        &l.bar_token,
        "bar-1",
        "bar",
        1000,
    );
    let mut shown = Vec::new();

    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    let d = t.sell("beer-05", 1, &card).await;
    shown.push(approved(&d, "approved_online"));
    wait_until_synced(&mut t).await;

    // With the network down and nothing pending the daemon writes nothing, so the filler
    // takes every free page without racing a commit that would leave a page allocated.
    go_offline(&mut t, &proxy).await;
    let filler = fs.fill();

    // Offline: declined for the journal, never approved.
    for product in ["beer-05", "water", "cocktail"] {
        assert_refused_for_the_journal(&sell_outcome(&mut t, product, &card).await);
    }
    assert_alive(&mut t).await;

    // The network is back; the disk is still full: still declined.
    proxy.go_up();
    for product in ["beer-05", "water", "cocktail"] {
        assert_refused_for_the_journal(&sell_outcome(&mut t, product, &card).await);
    }
    assert_alive(&mut t).await;
    assert_eq!(
        l.balance(&card).await,
        3000 - BEER_CENTS,
        "no declined tap is charged"
    );
    assert_charged_exactly(&l, &shown);
    l.assert_audit_ok();

    // Space is freed while the daemon runs: it syncs and sells again, online and offline.
    std::fs::remove_file(&filler).unwrap();
    wait_until_synced(&mut t).await;
    let d = t.sell("beer-05", 1, &card).await;
    shown.push(approved(&d, "approved_online"));
    assert_eq!(d["balance_cents"], 3000 - 2 * BEER_CENTS, "{d}");
    go_offline(&mut t, &proxy).await;
    shown.push(approved(
        &t.sell("water", 1, &card).await,
        "approved_offline",
    ));
    proxy.go_up();
    wait_until_synced(&mut t).await;
    t.quit().await;

    assert_eq!(l.balance(&card).await, 3000 - 2 * BEER_CENTS - WATER_CENTS);
    assert_charged_exactly(&l, &shown);
    assert_in_journal(&journal, &shown);
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_journal_that_cannot_be_created_stops_the_terminal_naming_it_before_ready() {
    let fs = Tmpfs::mount("1m");
    fs.remount("ro");
    let conf = tempfile::tempdir().unwrap();
    let journal = fs.path().join("journal.db");
    // No ledger is needed: nothing may happen before the journal is open.
    let config = write_config(
        conf.path(),
        &journal,
        "127.0.0.1:9",
        "token",
        "bar-1",
        "bar",
        1000,
    );
    let run = tokio::process::Command::new(BIN)
        .args([
            "terminal",
            "--config",
            config.to_str().unwrap(),
            "--ui",
            "jsonl",
        ])
        .env_remove("CASHLESS_LEDGER_URL")
        .env_remove("CASHLESS_LEDGER_TOKEN")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the terminal neither started nor stopped within 30 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a terminal without a journal must not run: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        !stdout.contains("\"ready\""),
        "ready printed without a journal:\n{stdout}"
    );
    assert!(
        stderr.contains(&journal.display().to_string()),
        "the error must name the journal {}:\n{stderr}",
        journal.display()
    );
    assert!(!journal.exists());
}
