//! Staff who leave, come back, or forget their PIN (issue 14), on both backends and with a
//! real terminal: `cashless ledger staff list | disable | enable | set-pin`.
//!
//! A disabled staff member works online no more (403 `FORBIDDEN`), but an offline sale
//! made before a terminal learned of it still lands as it was sold (the goods were
//! served). Terminals learn each change from the staff list at their next sync: a
//! disabled member's login is refused, a new PIN replaces the old one. Every change is in
//! the audit log, never the PIN; bad input changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};

/// The staff list as terminals get it, by id.
async fn staff_feed(l: &Ledger, id: &str) -> Value {
    let resp = l.get("/v1/staff", Some(&l.bar_token)).await;
    resp.assert_status(200);
    resp.body["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["staff_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {}", resp.body))
}

async fn a_leaver_works_online_no_more_and_their_offline_sales_still_land(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.fund(&uid(1), 2_000).await;
    let list = assert_success("list", &l.admin(&["staff", "list"]));
    assert!(
        list.lines().any(|line| line.starts_with("s-bar")
            && line.contains(" bar ")
            && line.contains(" yes ")),
        "{list}"
    );

    assert_success(
        "disable",
        &l.admin(&["staff", "disable", "--id", BAR_STAFF]),
    );
    assert_eq!(staff_feed(&l, BAR_STAFF).await["active"], false);
    let list = assert_success("list", &l.admin(&["staff", "list"]));
    assert!(
        list.lines()
            .any(|line| line.starts_with("s-bar") && line.contains(" no ")),
        "{list}"
    );
    // Online: refused, nothing written.
    let online = order_body(&uid(1), l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &online)
        .await
        .assert_error(403, "FORBIDDEN");
    // Offline, sold before the bar heard: applied as it was sold, flagged for the report.
    let offline = order_body(
        &uid(1),
        l.seq(&l.bar_token),
        &[("water", 1, 200)],
        "offline",
    );
    let landed = l.post("/v1/orders", &l.bar_token, &offline).await;
    landed.assert_status(201);
    assert_eq!(
        landed.body["flags"],
        json!(["STAFF_INACTIVE"]),
        "{}",
        landed.body
    );
    assert_eq!(l.balance(&uid(1)).await, 1_800);

    assert_success("enable", &l.admin(&["staff", "enable", "--id", BAR_STAFF]));
    let again = order_body(&uid(1), l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    let landed = l.post("/v1/orders", &l.bar_token, &again).await;
    landed.assert_status(201);
    assert_eq!(
        landed.body["flags"],
        json!([]),
        "active again: {}",
        landed.body
    );
    // Audited, in order.
    let ops: Vec<String> = l
        .query_json(
            "SELECT operation FROM app_transaction_log
             WHERE actor = 'admin' AND operation LIKE 'staff_%' ORDER BY log_id",
        )
        .iter()
        .map(|r| r["operation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ops[ops.len() - 2..], ["staff_disable", "staff_enable"]);
    l.assert_audit_ok();
}

async fn a_new_pin_replaces_the_old_and_bad_input_changes_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let old_hash = staff_feed(&l, BAR_STAFF).await["pin_hash"].clone();
    assert_success(
        "set-pin",
        &l.admin(&["staff", "set-pin", "--id", BAR_STAFF, "--pin", "97531"]),
    );
    let new_hash = staff_feed(&l, BAR_STAFF).await["pin_hash"].clone();
    assert_ne!(new_hash, old_hash);
    // The PIN is never in the audit log.
    let logged =
        l.query_json("SELECT details FROM app_transaction_log WHERE operation = 'staff_set_pin'");
    assert_eq!(logged.len(), 1);
    assert!(!logged[0].to_string().contains("97531"), "{logged:?}");

    assert_refused_without_change(
        &l,
        &[
            (
                vec!["staff", "disable", "--id", "s-nobody"],
                1,
                "s-nobody is unknown",
            ),
            (
                vec!["staff", "set-pin", "--id", BAR_STAFF, "--pin", "12"],
                1,
                "--pin must be 4 to 12 digits",
            ),
            (
                vec!["staff", "set-pin", "--id", BAR_STAFF, "--pin", "abcd"],
                1,
                "--pin must be 4 to 12 digits",
            ),
            (vec!["staff", "enable"], 2, "--id"),
            (vec!["staff", "enable", "--id", ""], 1, "--id"),
        ],
    );
}

on_both_backends! {
    a_leaver_works_online_no_more_and_their_offline_sales_still_land,
    a_new_pin_replaces_the_old_and_bad_input_changes_nothing,
}

#[tokio::test]
async fn a_terminal_refuses_a_leaver_and_takes_a_new_pin_after_its_next_sync() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(
        dir.path(),
        l.base_url.trim_start_matches("http://"),
        &l.bar_token,
    )
    .await;
    ready_to_sell(&mut t).await;
    t.send(json!({"cmd": "logout"})).await;
    t.expect("logged_out").await;

    // The new PIN first, then the leaver: once the leaver is refused, the list that said so
    // (or an earlier one) had the new PIN too.
    assert_success(
        "set-pin",
        &l.admin(&["staff", "set-pin", "--id", SUPER_STAFF, "--pin", "864213"]),
    );
    assert_success(
        "disable",
        &l.admin(&["staff", "disable", "--id", BAR_STAFF]),
    );
    // Within a few sync rounds the terminal has the new list.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        t.send(json!({"cmd": "login", "staff_id": BAR_STAFF, "pin": "1234"}))
            .await;
        let login = t.expect("login").await;
        if login["ok"] == false {
            assert_eq!(login["message"], "unknown staff id", "{login}");
            break;
        }
        t.send(json!({"cmd": "logout"})).await;
        t.expect("logged_out").await;
        assert!(
            std::time::Instant::now() < deadline,
            "the leaver still logs in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The supervisor's old PIN no longer opens it; the new one does.
    t.send(json!({"cmd": "login", "staff_id": SUPER_STAFF, "pin": "3456"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], false);
    t.send(json!({"cmd": "login", "staff_id": SUPER_STAFF, "pin": "864213"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    t.quit().await;
}
