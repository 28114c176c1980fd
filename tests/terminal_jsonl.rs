//! The terminal daemon end to end through its JSON-lines interface: the real terminal
//! binary, the real ledger binary, real SQLite files, and a TCP proxy
//! (`tests/common/terminal.rs`) that takes the network down and brings it back.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A fresh ledger with `balance_cents` on card `uid(1)`, a proxy in front of it, and bar-1
/// behind the proxy (its configuration and journal in the directory), ready and logged in.
async fn bar_ready_to_sell(
    balance_cents: i64,
) -> (Ledger, String, Proxy, tempfile::TempDir, Terminal) {
    bar_ready_to_sell_within(balance_cents, 1000).await
}

/// [`bar_ready_to_sell`] with an online decision timeout of `timeout_ms`.
async fn bar_ready_to_sell_within(
    balance_cents: i64,
    timeout_ms: u64,
) -> (Ledger, String, Proxy, tempfile::TempDir, Terminal) {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, balance_cents).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start_with_timeout(
        dir.path(),
        &proxy.addr,
        &l.bar_token,
        "bar-1",
        "bar",
        timeout_ms,
    )
    .await;
    ready_to_sell(&mut t).await;
    (l, card, proxy, dir, t)
}

#[tokio::test]
async fn sells_online_offline_through_an_outage_and_replays_exactly_once() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    let ready = t.expect("ready").await;
    assert_eq!(ready["online"], true, "{ready}");

    // Bad input gets an error event and the daemon keeps running.
    t.send_raw(b"{not json").await;
    assert_eq!(t.expect("error").await["code"], "INVALID_COMMAND");
    t.expect_errors(&[
        (json!({"cmd": "dance"}), "INVALID_COMMAND"),
        // Every command refuses a field it does not take, those without arguments included.
        (json!({"cmd": "shift", "x": 1}), "INVALID_COMMAND"),
        (json!({"cmd": "status", "verbose": true}), "INVALID_COMMAND"),
        (
            json!({"cmd": "logout", "staff_id": "s-bar"}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "balance", "uid": "04A1B2C3"}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "void_last", "client_request_id": "x"}),
            "INVALID_COMMAND",
        ),
        (json!({"cmd": "cancel", "all": true}), "INVALID_COMMAND"),
        (json!({"cmd": "quit", "now": true}), "INVALID_COMMAND"),
        (
            json!({"cmd": "close_shift", "counted_cash_cents": 0, "x": 1}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "login", "staff_id": "s-bar", "pin": "1234", "x": 1}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "order", "items": [{"product_id": "beer-05", "quantity": 1}]}),
            "NOT_LOGGED_IN",
        ),
    ])
    .await;

    for (pin, ok) in [("0000", false), ("1234", true)] {
        t.send(json!({"cmd": "login", "staff_id": "s-bar", "pin": pin}))
            .await;
        assert_eq!(t.expect("login").await["ok"], ok, "PIN {pin}");
    }

    for bad in [
        json!({"cmd": "order", "items": [{"product_id": "beer-05", "quantity": -1}]}),
        json!({"cmd": "order", "items": [{"product_id": "nope", "quantity": 1}]}),
        json!({"cmd": "order", "items": "beer"}),
        json!({"cmd": "tap", "uid": "04a1"}),
    ] {
        t.send(bad.clone()).await;
        let e = t.expect("error").await;
        assert!(e["code"].is_string(), "{bad}: {e}");
    }

    // Online: approved by the ledger.
    t.send(json!({"cmd": "order", "items": [{"product_id": "beer-05", "quantity": 2}]}))
        .await;
    assert_eq!(t.expect("armed").await["total_cents"], 900);
    t.send(json!({"cmd": "tap", "uid": card})).await;
    let d = t.expect("decision").await;
    assert_eq!(
        (d["status"].as_str(), d["balance_cents"].as_i64()),
        (Some("approved_online"), Some(2100)),
        "{d}"
    );
    assert_eq!(l.balance(&card).await, 2100);

    // Online decline: an unknown card.
    let d = t.sell("water", 1, &uid(9)).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("CARD_NOT_FOUND")),
        "{d}"
    );

    // Let the replica learn the card's balance, then the network goes down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.down.store(true, Ordering::SeqCst);
    wait_for(
        "the proxy to cut every connection",
        Duration::from_secs(5),
        || proxy.active.load(Ordering::SeqCst) == 0,
    )
    .await;
    let d = t.sell("cocktail", 1, &card).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    let offline_crid = d["client_request_id"].as_str().unwrap().to_owned();
    // An unknown card is declined offline (limit 0).
    let d = t.sell("water", 1, &uid(8)).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("UNKNOWN_CARD_OFFLINE")),
        "{d}"
    );
    assert_eq!(
        l.balance(&card).await,
        2100,
        "nothing reached the ledger during the outage"
    );

    // The network comes back: the offline sale is replayed, once.
    proxy.down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        t.send(json!({"cmd": "status"})).await;
        let s = t.expect("status").await;
        if s["pending"] == 0 && s["online"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still pending: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(l.balance(&card).await, 1200);
    // The offline sale is at the ledger under the key the terminal showed, exactly once.
    let conn = l.open_db();
    let count: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM idempotency_keys WHERE client_request_id = ?1 AND status_code = 201",
            [&offline_crid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(
        proxy.target.lock().unwrap().as_str(),
        l.base_url.trim_start_matches("http://")
    );

    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn an_answer_lost_after_the_ledger_committed_is_charged_exactly_once() {
    let (l, card, proxy, _dir, mut t) = bar_ready_to_sell(3000).await;

    proxy.set_mode(SWALLOW).await;
    wait_until_synced(&mut t).await;
    let d = t.sell("beer-05", 1, &card).await;
    // The ledger applied the first attempt, but the terminal never heard it: in doubt, so it
    // voided that attempt and sold offline as a new operation.
    assert_eq!(d["status"], "approved_offline", "{d}");
    // (The ledger applied that first attempt; the replay of its void may already be under
    // way, so the balance is checked once everything is settled.)

    proxy.set_mode(FORWARD).await;
    wait_until_synced(&mut t).await;
    assert_eq!(
        l.balance(&card).await,
        2550,
        "charged exactly once: the void refunded the lost attempt"
    );
    let voids: i64 = l
        .open_db()
        .query_row(
            "SELECT COUNT(*) FROM voids WHERE status = 'voided'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(voids, 1);
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_terminal_killed_while_waiting_for_the_ledger_voids_the_attempt_on_restart() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    // A long online timeout: the terminal is still waiting for the answer when it is killed.
    let mut t = Terminal::start_with_timeout(
        dir.path(),
        &proxy.addr,
        &l.bar_token,
        "bar-1",
        "bar",
        30_000,
    )
    .await;
    ready_to_sell(&mut t).await;

    proxy.set_mode(HOLD).await;
    wait_until_synced(&mut t).await;
    t.send(json!({"cmd": "order", "items": [{"product_id": "cocktail", "quantity": 1}]}))
        .await;
    t.expect("armed").await;
    t.send(json!({"cmd": "tap", "uid": card})).await;
    // The ledger commits; the terminal is killed before any answer reaches it.
    wait_for(
        "the ledger to apply the attempt",
        Duration::from_secs(10),
        || {
            let conn = l.open_db();
            conn.query_row(
                "SELECT balance_cents FROM cards WHERE card_uid = ?1",
                [&card],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
                == 2100
        },
    )
    .await;
    t.child.start_kill().unwrap();
    t.child.wait().await.unwrap();
    while let Ok(event) = t.events.try_recv() {
        assert_ne!(
            event["event"], "decision",
            "nothing may be shown for the killed attempt: {event}"
        );
    }

    // Restarted on the same journal: the attempt is in doubt and voided, refunding the card.
    proxy.set_mode(FORWARD).await;
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    t.expect("ready").await;
    wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&card).await, 3000);
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_checkpoint_tops_up_shows_the_balance_and_voids_the_last_top_up() {
    let (l, proxy, _dir, mut t) = checkpoint_ready_to_top_up().await;
    t.expect_errors(&[
        (
            json!({"cmd": "order", "items": [{"product_id": "beer-05", "quantity": 1}]}),
            "WRONG_TERMINAL_KIND",
        ),
        (
            json!({"cmd": "topup", "amount_cents": 0, "payment_method": "cash"}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "topup", "amount_cents": 5000, "payment_method": "bitcoin"}),
            "INVALID_COMMAND",
        ),
        (json!({"cmd": "void_last"}), "NOTHING_TO_VOID"),
    ])
    .await;

    let card = uid(5);
    let d = t.top_up(5000, "cash", &card).await;
    assert_eq!(
        (d["status"].as_str(), d["balance_cents"].as_i64()),
        (Some("approved_online"), Some(5000)),
        "{d}"
    );

    t.send(json!({"cmd": "balance"})).await;
    t.expect("armed").await;
    t.send(json!({"cmd": "tap", "uid": card})).await;
    let b = t.expect("balance").await;
    assert_eq!(
        (b["balance_cents"].as_i64(), b["source"].as_str()),
        (Some(5000), Some("ledger")),
        "{b}"
    );

    // The cashier took the wrong amount: the top-up is voided, replayed, and the card is back at 0.
    t.send(json!({"cmd": "void_last"})).await;
    let v = t.expect("decision").await;
    assert_eq!(
        (v["operation"].as_str(), v["total_cents"].as_i64()),
        (Some("void"), Some(-5000)),
        "{v}"
    );
    t.send(json!({"cmd": "void_last"})).await;
    assert_eq!(
        t.expect("error").await["code"],
        "NOTHING_TO_VOID",
        "a top-up is voided once"
    );
    let synced = wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&card).await, 0);
    // The replica holds the card once a pull after the void's acknowledgement is recorded
    // (the round that replayed the void may still be pulling when `status` says synced).
    let acknowledged = synced["last_sync_at"].as_str().unwrap().to_owned();
    wait_for_status(
        &mut t,
        "a card-feed pull after the void",
        (EVENT_DEADLINE, Duration::from_millis(50)),
        |s| {
            s["last_feed_at"]
                .as_str()
                .is_some_and(|pulled| pulled > acknowledged.as_str())
        },
    )
    .await;

    // A tap at the idle screen shows the balance, from the replica when the ledger is away.
    proxy.set_mode(FORWARD).await;
    proxy.down.store(true, Ordering::SeqCst);
    t.send(json!({"cmd": "tap", "uid": card})).await;
    let b = t.expect("balance").await;
    assert_eq!(b["balance_cents"].as_i64(), Some(0), "{b}");
    proxy.down.store(false, Ordering::SeqCst);
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_terminal_configured_as_another_kind_than_registered_refuses_to_start() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("terminal.toml");
    // bar-1's token, configured as a checkpoint.
    std::fs::write(
        &config,
        format!(
            "[terminal]\nname = \"bar-1\"\nkind = \"checkpoint\"\njournal = {:?}\n\n[ledger]\nurl = \"{}\"\ntoken = \"{}\"\n\n[reader]\nbackend = \"simulated\"\n",
            dir.path().join("journal.db").display().to_string(),
            l.base_url,
            l.bar_token
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args([
                "terminal",
                "--config",
                config.to_str().unwrap(),
                "--ui",
                "jsonl",
            ])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout} {stderr}");
    assert!(!stdout.contains("ready"), "{stdout}");
    assert!(
        stderr.contains("bar-1 (checkpoint)")
            && stderr.contains("bar-1 (bar)")
            && stderr.contains("[terminal] name and kind")
            && stderr.contains("terminal.toml"),
        "{stderr}"
    );
}

/// The replica's balance of `card` in the terminal's journal, once it equals `expected`.
async fn wait_for_replica_balance(journal: &std::path::Path, card: &str, expected: i64) {
    let conn =
        rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let read = || -> Option<i64> {
        conn.query_row(
            "SELECT balance_cents FROM replica_cards WHERE card_uid = ?1",
            [card],
            |r| r.get(0),
        )
        .ok()
    };
    wait_for(
        "the card feed to reach the replica",
        Duration::from_secs(20),
        || read() == Some(expected),
    )
    .await;
}

#[tokio::test]
async fn a_checkpoint_keeps_to_the_ledgers_top_up_limits_online_and_offline() {
    let (l, proxy, dir, mut t) = checkpoint_ready_to_top_up().await;

    // Above the per-top-up limit the ledger reported: refused before any card is tapped.
    t.send(
        json!({"cmd": "topup", "amount_cents": RECHARGE_MAX_CENTS + 1, "payment_method": "cash"}),
    )
    .await;
    let e = t.expect("error").await;
    assert_eq!(e["code"], "LIMIT_EXCEEDED", "{e}");

    // Online, the ledger checks the balance limit.
    let card = uid(7);
    for _ in 0..2 {
        let d = t.top_up(RECHARGE_MAX_CENTS, "cash", &card).await;
        assert_eq!(d["status"], "approved_online");
    }
    assert_eq!(l.balance(&card).await, BALANCE_MAX_CENTS);
    let d = t.top_up(100, "cash", &card).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("LIMIT_EXCEEDED")),
        "{d}"
    );

    // Offline, the terminal checks it against the replica, and keeps a record of the decline.
    wait_for_replica_balance(&dir.path().join("journal.db"), &card, BALANCE_MAX_CENTS).await;
    proxy.go_down().await;
    let d = t.top_up(100, "cash", &card).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["reason"].as_str(),
            d["client_request_id"].as_str()
        ),
        (Some("declined"), Some("LIMIT_EXCEEDED"), None),
        "{d}"
    );
    t.send(json!({"cmd": "status"})).await;
    let s = t.expect("status").await;
    assert_eq!(
        (s["online"].as_bool(), s["declined_offline"].as_u64()),
        (Some(false), Some(1)),
        "{s}"
    );
    // A top-up that fits is taken offline, and replayed when the network is back.
    let other = uid(8);
    let d = t.top_up(RECHARGE_MAX_CENTS, "cash", &other).await;
    assert_eq!(d["status"], "approved_offline");
    proxy.down.store(false, Ordering::SeqCst);
    wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&other).await, RECHARGE_MAX_CENTS);
    assert_eq!(l.balance(&card).await, BALANCE_MAX_CENTS);
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_terminal_that_never_comes_back_is_exported_and_imported_exactly_once() {
    let (l, card, proxy, dir, mut t) = bar_ready_to_sell(3000).await;
    // The replica must know the card before the outage.
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.set_mode(FORWARD).await;
    proxy.down.store(true, Ordering::SeqCst);
    let mut approved = Vec::new();
    for product in ["beer-05", "water", "beer-05"] {
        let d = t.sell(product, 1, &card).await;
        assert_eq!(d["status"], "approved_offline", "{d}");
        approved.push(d["client_request_id"].as_str().unwrap().to_owned());
    }
    t.quit().await;

    // The terminal never comes back: its journal is exported and imported at headquarters.
    let export = dir.path().join("bar-1.export.json");
    let out = std::process::Command::new(BIN)
        .args([
            "terminal",
            "--config",
            dir.path().join("terminal.toml").to_str().unwrap(),
            "export",
            "--out",
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let ops = doc["operations"].as_array().unwrap();
    assert_eq!(doc["closeouts"], json!([]), "{doc}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "{} operations and 0 close-outs exported to {}",
            ops.len(),
            export.display()
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for crid in &approved {
        assert!(
            ops.iter().any(|o| o["client_request_id"] == crid.as_str()),
            "{crid} missing from the export"
        );
    }
    let import = l.admin(&["import", export.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stdout)
    );
    assert_eq!(l.balance(&card).await, 3000 - 450 - 200 - 450);
    let before = l.db_fingerprint();
    let again = l.admin(&["import", export.to_str().unwrap()]);
    assert!(again.status.success());
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a second import changed nothing"
    );
    l.assert_audit_ok();
}

#[tokio::test]
async fn three_terminals_sell_through_an_outage_on_shared_cards_and_everything_settles() {
    let l = Ledger::start().await;
    let out = l.admin(&[
        "terminal",
        "add",
        "--name",
        "bar-3",
        "--kind",
        "bar",
        "--point-of-sale",
        "Main Bar",
    ]);
    assert!(out.status.success());
    let bar3_token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let cards: Vec<String> = (1..=10).map(uid).collect();
    for card in &cards {
        l.fund(card, 1000).await;
    }
    let proxy = Proxy::start(&l.base_url).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut terminals = Vec::new();
    for (i, (name, token)) in [
        ("bar-1", &l.bar_token),
        ("bar-2", &l.bar2_token),
        ("bar-3", &bar3_token),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = Terminal::start_as(dirs[i].path(), &proxy.addr, token, name, "bar").await;
        ready_to_sell(&mut t).await;
        terminals.push(t);
    }
    // Every replica knows every card before the outage.
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.go_down().await;

    // 200 sales of a 2.00 water, round-robin over terminals and cards.
    let mut approved: Vec<(String, String)> = Vec::new(); // (client_request_id, card)
    let mut declined = 0;
    for n in 0..200 {
        let t = &mut terminals[n % 3];
        let card = &cards[(n / 3) % cards.len()];
        let d = t.sell("water", 1, card).await;
        match d["status"].as_str() {
            Some("approved_offline") => approved.push((
                d["client_request_id"].as_str().unwrap().to_owned(),
                card.clone(),
            )),
            Some("declined") => {
                assert!(
                    matches!(
                        d["reason"].as_str(),
                        Some("INSUFFICIENT_FUNDS" | "OFFLINE_LIMIT")
                    ),
                    "{d}"
                );
                declined += 1;
            }
            _ => panic!("unexpected decision during the outage: {d}"),
        }
    }
    assert!(
        approved.len() > 100 && declined > 0,
        "{} approved, {declined} declined",
        approved.len()
    );
    for card in &cards {
        assert_eq!(
            l.balance(card).await,
            1000,
            "nothing reached the ledger during the outage"
        );
    }

    // The network comes back; every terminal drains its journal.
    proxy.down.store(false, Ordering::SeqCst);
    // Three journals of about 50 operations each, drained into one ledger while the rest of
    // the suite runs beside it: a loaded 2-core CI machine once needed more than the usual
    // 20 s. The deadline bounds liveness; what is checked below is what matters.
    for t in terminals.iter_mut() {
        wait_until_synced_within(t, Duration::from_secs(90)).await;
    }
    let conn = l.open_db();
    for (crid, _) in &approved {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM idempotency_keys WHERE client_request_id = ?1 AND status_code = 201",
                [crid],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{crid} is not at the ledger exactly once");
    }
    let mut in_debt = Vec::new();
    for card in &cards {
        let sold = approved.iter().filter(|(_, c)| c == card).count() as i64;
        let balance = l.balance(card).await;
        assert_eq!(balance, 1000 - 200 * sold, "{card}");
        let (status,): (String,) = conn
            .query_row(
                "SELECT status FROM cards WHERE card_uid = ?1",
                [card],
                |r| Ok((r.get(0)?,)),
            )
            .unwrap();
        assert_eq!(
            status == "blocked",
            balance < 0,
            "{card}: {balance} {status}"
        );
        if balance < 0 {
            in_debt.push(card.clone());
        }
    }
    assert!(
        !in_debt.is_empty(),
        "three terminals each trusting the same balance put some cards in debt"
    );

    // The blocks reach every terminal's replica through the card feed.
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.go_down().await;
    for t in terminals.iter_mut() {
        for card in &in_debt {
            t.send(json!({"cmd": "tap", "uid": card})).await;
            let b = t.expect("balance").await;
            assert_eq!(
                (b["source"].as_str(), b["status"].as_str()),
                (Some("replica"), Some("blocked")),
                "{b}"
            );
        }
        let d = t.sell("water", 1, &in_debt[0]).await;
        assert_eq!(
            (d["status"].as_str(), d["reason"].as_str()),
            (Some("declined"), Some("CARD_BLOCKED")),
            "{d}"
        );
    }
    proxy.down.store(false, Ordering::SeqCst);
    for t in terminals {
        t.quit().await;
    }
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_request_delivered_twice_is_charged_once() {
    // Two deliveries and two commits inside one online attempt: a timeout that a loaded CI
    // machine cannot reach, since this test is about idempotency, not about time.
    let (l, card, proxy, _dir, mut t) = bar_ready_to_sell_within(3000, 10_000).await;

    // Delivered twice: the ledger applies it once and both answers say so.
    proxy.set_mode(TWICE).await;
    wait_until_synced(&mut t).await;
    let d = t.sell("beer-05", 1, &card).await;
    assert_eq!(
        (d["status"].as_str(), d["balance_cents"].as_i64()),
        (Some("approved_online"), Some(2550)),
        "{d}"
    );
    assert_eq!(l.balance(&card).await, 2550);
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn an_answer_later_than_the_timeout_is_voided_and_the_sale_made_offline() {
    let (l, card, proxy, _dir, mut t) = bar_ready_to_sell(2550).await;

    // The answer comes later than the timeout (1 s): in doubt, voided, sold offline anew.
    proxy.set_mode(HOLD).await;
    wait_until_synced(&mut t).await;
    let d = t.sell("water", 1, &card).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    proxy.set_mode(FORWARD).await;
    wait_until_synced(&mut t).await;
    assert_eq!(
        l.balance(&card).await,
        2350,
        "the late attempt refunded, the offline sale charged once"
    );
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn sigterm_stops_the_terminal_cleanly_and_nothing_is_lost() {
    let (l, card, proxy, dir, mut t) = bar_ready_to_sell(3000).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.go_down().await;
    t.send(json!({"cmd": "order", "items": [{"product_id": "cocktail", "quantity": 1}]}))
        .await;
    t.expect("armed").await;
    t.send(json!({"cmd": "tap", "uid": card})).await;
    assert_eq!(t.expect("decision").await["status"], "approved_offline");
    let pid = t.child.id().unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), t.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // Restarted with the network back, the journal still holds the sale and replays it.
    proxy.down.store(false, Ordering::SeqCst);
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    t.expect("ready").await;
    wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&card).await, 2100);
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn kill_9_at_twenty_points_loses_no_approved_sale_and_charges_none_twice() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 50_000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut shown: Vec<String> = Vec::new();
    // Seeded, so a failure can be replayed: delays before the kill and network states.
    let mut seed: u64 = std::env::var("CASHLESS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125);
    eprintln!("CASHLESS_KILL_SEED={seed}");
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for round in 0..20 {
        // Even rounds sell with the network up, odd rounds during an outage; a kill lands
        // after the tap at a random moment: before, during or after the journal writes, the
        // send, the answer, or the replay of earlier offline sales.
        if round % 2 == 1 {
            proxy.down.store(true, Ordering::SeqCst);
        } else {
            proxy.down.store(false, Ordering::SeqCst);
        }
        let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
        ready_to_sell(&mut t).await;
        t.send(json!({"cmd": "order", "items": [{"product_id": "water", "quantity": 1}]}))
            .await;
        t.expect("armed").await;
        t.send(json!({"cmd": "tap", "uid": card})).await;
        tokio::time::sleep(Duration::from_millis(next(40))).await;
        t.child.start_kill().unwrap();
        t.child.wait().await.unwrap();
        while let Ok(event) = t.events.try_recv() {
            if event["event"] == "decision"
                && event["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("approved"))
            {
                shown.push(event["client_request_id"].as_str().unwrap().to_owned());
            }
        }
    }
    // The network is back for good: a last start replays everything.
    proxy.down.store(false, Ordering::SeqCst);
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    t.expect("ready").await;
    wait_until_synced(&mut t).await;
    t.quit().await;

    // The journal is the truth about what was approved; the ledger must hold exactly that.
    let journal =
        cashless::terminal::journal::Journal::open(&dir.path().join("journal.db")).unwrap();
    let entries = journal.unacknowledged(None, 10_000).unwrap();
    assert!(entries.is_empty(), "still unacknowledged: {entries:?}");
    let conn = l.open_db();
    for crid in &shown {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM idempotency_keys k JOIN bar_orders o ON o.transaction_id = k.transaction_id
                 WHERE k.client_request_id = ?1 AND o.voided_by IS NULL",
                [crid],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            n, 1,
            "approval {crid} was shown but is not charged exactly once"
        );
    }
    let standing: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM bar_orders WHERE voided_by IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(l.balance(&card).await, 50_000 - 200 * standing);
    let approved_in_journal = {
        let mut n = 0;
        for seq in 1..=10_000 {
            let Ok(Some(e)) = journal.entry(cashless::domain::TerminalSeq::new(seq).unwrap())
            else {
                break;
            };
            if e.operation == cashless::terminal::journal::OperationKind::Order
                && e.decision.is_some_and(|d| d.is_approved())
            {
                n += 1;
            }
        }
        n
    };
    assert_eq!(
        standing, approved_in_journal,
        "every approved sale in the journal is charged once, nothing else"
    );
    assert!(shown.len() <= approved_in_journal as usize);
    l.assert_audit_ok();
}

#[tokio::test]
async fn sigterm_during_a_first_sync_that_hangs_stops_the_terminal_cleanly() {
    // A "ledger" that takes connections and never answers: the first sync round waits for
    // its bulk timeout (30 s).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(dir.path(), &addr, "clt_silent").await;
    let held = tokio::time::timeout(Duration::from_secs(10), silent.accept())
        .await
        .expect("the first sync round connects")
        .unwrap();
    let pid = t.child.id().unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(5), t.child.wait())
        .await
        .expect("SIGTERM ends the first sync round")
        .unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    drop(held);
    // Nothing was shown: the loop never started.
    while let Ok(event) = t.events.try_recv() {
        assert_ne!(event["event"], "ready", "{event}");
    }
    cashless::terminal::journal::Journal::open_read_only(&dir.path().join("journal.db")).unwrap();
}
