//! Voucher grants at a checkpoint, end to end through the terminal's JSON-lines interface:
//! the real terminal and ledger binaries, real SQLite files, and a TCP proxy that takes the
//! network down. A supervisor gives a card voucher units online and offline; replayed, each
//! grant lands once; a refund of the last grant takes the units back; cashiers, bars and
//! bad amounts are refused before anything is journaled.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};

/// The card's voucher units as the ledger has them.
async fn ledger_vouchers(l: &Ledger, card: &str) -> i64 {
    let c = l.card(card).await;
    c.assert_status(200);
    c.body["voucher_units"].as_i64().unwrap()
}

/// Arms a grant of `units`, presents `card`, and returns the decision.
async fn grant(t: &mut Terminal, units: i64, card: &str) -> Value {
    t.send(json!({"cmd": "grant_vouchers", "units": units}))
        .await;
    let armed = t.expect("armed").await;
    assert_eq!(
        (armed["operation"].as_str(), armed["units"].as_i64()),
        (Some("voucher_grant"), Some(units)),
        "{armed}"
    );
    t.send(json!({"cmd": "tap", "uid": card})).await;
    t.expect("decision").await
}

#[tokio::test]
async fn a_supervisor_grants_vouchers_online_and_offline_each_once() {
    let (l, proxy, _dir, mut t) = checkpoint_ready_to_top_up().await;
    let artist = uid(1);
    // The cashier logged in may not: free drinks are a supervisor's decision.
    t.expect_errors(&[(json!({"cmd": "grant_vouchers", "units": 2}), "FORBIDDEN")])
        .await;
    t.send(json!({"cmd": "login", "staff_id": SUPER_STAFF, "pin": "3456"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    t.expect_errors(&[
        (
            json!({"cmd": "grant_vouchers", "units": 0}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "grant_vouchers", "units": 1_001}),
            "INVALID_COMMAND",
        ),
    ])
    .await;

    // Online: the ledger gives the card (never seen) its units; no money moves.
    let d = grant(&mut t, 3, &artist).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["operation"].as_str(),
            d["vouchers_granted"].as_i64(),
            d["total_cents"].as_i64(),
            d["balance_cents"].as_i64()
        ),
        (
            Some("approved_online"),
            Some("voucher_grant"),
            Some(3),
            Some(0),
            Some(0)
        ),
        "{d}"
    );
    assert_eq!(ledger_vouchers(&l, &artist).await, 3);

    // Offline: approved by the terminal, journaled, replayed once when the network is back.
    proxy.go_down().await;
    let d = grant(&mut t, 2, &artist).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    assert_eq!(d["vouchers_granted"], 2, "{d}");
    proxy.go_up();
    wait_until_synced(&mut t).await;
    assert_eq!(ledger_vouchers(&l, &artist).await, 5);
    assert_eq!(l.count("voucher_grants"), 2);

    // The grant was a mistake: a refund of the last operation takes its units back.
    t.send(json!({"cmd": "void_last"})).await;
    let v = t.expect("decision").await;
    assert_eq!(
        (v["status"].as_str(), v["total_cents"].as_i64()),
        (Some("approved_offline"), Some(0)),
        "{v}"
    );
    wait_until_synced(&mut t).await;
    assert_eq!(ledger_vouchers(&l, &artist).await, 3);
    // A grant armed by the supervisor is not paid once a cashier logs in over them.
    t.send(json!({"cmd": "grant_vouchers", "units": 5})).await;
    t.expect("armed").await;
    t.send(json!({"cmd": "login", "staff_id": CASH_STAFF, "pin": "2345"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    t.send(json!({"cmd": "tap", "uid": artist})).await;
    let shown = t.expect("balance").await;
    assert_eq!(shown["card_uid"], artist.as_str(), "{shown}");
    assert_eq!(ledger_vouchers(&l, &artist).await, 3);
    // Grants are not top-ups: the shift's cash and count are untouched.
    t.send(json!({"cmd": "shift"})).await;
    let shift = t.expect("shift").await;
    assert_eq!(
        (shift["count"].as_i64(), shift["cash_cents"].as_i64()),
        (Some(0), Some(0)),
        "{shift}"
    );
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_bar_does_not_grant_vouchers() {
    let l = Ledger::start().await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    t.expect("ready").await;
    t.send(json!({"cmd": "login", "staff_id": SUPER_STAFF, "pin": "3456"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    t.expect_errors(&[(
        json!({"cmd": "grant_vouchers", "units": 2}),
        "WRONG_TERMINAL_KIND",
    )])
    .await;
    t.quit().await;
    assert_eq!(l.count("voucher_grants"), 0);
}
