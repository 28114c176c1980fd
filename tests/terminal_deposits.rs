//! Deposits at the terminal, end to end through its JSON-lines interface: the real terminal
//! and ledger binaries, real SQLite files, and a TCP proxy that takes the network down. A
//! beer that comes in a cup adds the cup's deposit to the order by itself; cups handed back
//! are credited to a card online, and offline up to the terminal's `[offline]
//! max_return_payout_cents` of deposit money the ledger has not acknowledged; replayed, each
//! return is credited once. A return station takes cups back and does not sell.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

const CUP_CENTS: i64 = 200;
const DRAFT_CENTS: i64 = 450;

/// A cup (returnable, 2.00) and a draft beer that comes in it, at the bars' point of sale.
fn add_cups(l: &Ledger) {
    let cup = CUP_CENTS.to_string();
    let draft = DRAFT_CENTS.to_string();
    for args in [
        vec![
            "--id",
            "cup",
            "--name",
            "Cup",
            "--price-cents",
            &cup,
            "--returnable",
        ],
        vec![
            "--id",
            "draft",
            "--name",
            "Draft",
            "--price-cents",
            &draft,
            "--deposit",
            "cup",
        ],
    ] {
        let mut all = vec!["product", "add", "--point-of-sale", BAR_POS];
        all.extend(args);
        assert_success("product add", &l.admin(&all));
    }
}

/// A terminal `name` of `kind` behind `url`, handing out at most `payout_cents` of deposits
/// offline.
fn start_terminal(
    dir: &Path,
    url: &str,
    token: &str,
    name: &str,
    kind: &str,
    payout_cents: i64,
) -> Terminal {
    let config = write_config(dir, &dir.join("journal.db"), url, token, name, kind, 1000);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap();
    writeln!(
        file,
        "\n[offline]\nmax_return_payout_cents = {payout_cents}"
    )
    .unwrap();
    Terminal::spawn(&config)
}

/// Arms `cups` cups handed back, presents `card`, and returns the decision.
async fn give_back(t: &mut Terminal, cups: i64, card: &str) -> Value {
    t.send(json!({"cmd": "return", "items": [{"product_id": "cup", "quantity": cups}]}))
        .await;
    let armed = t.expect("armed").await;
    assert_eq!(
        (armed["operation"].as_str(), armed["amount_cents"].as_i64()),
        (Some("return"), Some(cups * CUP_CENTS)),
        "{armed}"
    );
    t.send(json!({"cmd": "tap", "uid": card})).await;
    t.expect("decision").await
}

#[tokio::test]
async fn a_beer_adds_its_cup_and_cups_come_back_online_and_offline_within_the_limit() {
    let l = Ledger::start().await;
    add_cups(&l);
    let card = uid(1);
    l.fund(&card, 5_000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_terminal(dir.path(), &proxy.addr, &l.bar_token, "bar-1", "bar", 500);
    ready_to_sell(&mut t).await;

    // Two drafts: the order carries their two cups, and the card pays both.
    t.send(json!({"cmd": "order", "items": [{"product_id": "draft", "quantity": 2}]}))
        .await;
    let armed = t.expect("armed").await;
    assert_eq!(
        armed["total_cents"],
        2 * DRAFT_CENTS + 2 * CUP_CENTS,
        "{armed}"
    );
    t.send(json!({"cmd": "tap", "uid": card})).await;
    let d = t.expect("decision").await;
    assert_eq!(d["status"], "approved_online", "{d}");
    let lines = l.query_json(
        "SELECT product_id, quantity, unit_price_cents, deposit FROM bar_order_items
          ORDER BY line_no",
    );
    assert_eq!(
        lines
            .iter()
            .map(|r| (r["product_id"].clone(), r["quantity"].clone()))
            .collect::<Vec<_>>(),
        vec![(json!("draft"), json!(2)), (json!("cup"), json!(2))]
    );
    let mut balance = 5_000 - 2 * DRAFT_CENTS - 2 * CUP_CENTS;
    assert_eq!(l.balance(&card).await, balance);

    // Online: cups back, credited by the ledger.
    let d = give_back(&mut t, 1, &card).await;
    assert_eq!(
        (d["status"].as_str(), d["operation"].as_str()),
        (Some("approved_online"), Some("return")),
        "{d}"
    );
    balance += CUP_CENTS;
    assert_eq!(d["balance_cents"], balance);

    // Offline: 2 cups (400) fit in the 500 the terminal may hand out; one more does not.
    proxy.go_down().await;
    let d = give_back(&mut t, 2, &card).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    let d = give_back(&mut t, 1, &card).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("OFFLINE_LIMIT")),
        "{d}"
    );
    // Selling goes on offline meanwhile.
    let d = t.sell("water", 1, &card).await;
    assert_eq!(d["status"], "approved_offline", "{d}");

    // Back online: the return is replayed and credited once; the limit is free again.
    proxy.go_up();
    wait_until_synced(&mut t).await;
    balance += 2 * CUP_CENTS - WATER_CENTS;
    assert_eq!(l.balance(&card).await, balance);
    assert_eq!(l.count("deposit_returns"), 2);
    proxy.go_down().await;
    let d = give_back(&mut t, 2, &card).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    proxy.go_up();
    wait_until_synced(&mut t).await;
    balance += 2 * CUP_CENTS;
    assert_eq!(l.balance(&card).await, balance);
    assert_eq!(l.count("deposit_returns"), 3);

    // The report: 2 cups out, 5 back (3 came from elsewhere), the deposits owe -6.00.
    let stdout = assert_success("deposits", &l.admin(&["deposits"]));
    let cup: Vec<&str> = stdout
        .lines()
        .find(|line| line.starts_with("cup"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        cup,
        ["cup", "2", "5", "-3", "4.00", "10.00", "-6.00"],
        "{stdout}"
    );
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_return_station_takes_cups_back_and_does_not_sell() {
    let l = Ledger::start().await;
    add_cups(&l);
    let station = token_from(&l.admin(&[
        "terminal",
        "add",
        "--name",
        "ret-1",
        "--kind",
        "return",
        "--point-of-sale",
        BAR_POS,
    ]));
    let card = uid(2);
    l.fund(&card, 1_000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_terminal(dir.path(), &proxy.addr, &station, "ret-1", "return", 1_000);
    ready_to_sell(&mut t).await;
    t.expect_errors(&[
        (
            json!({"cmd": "order", "items": [{"product_id": "water", "quantity": 1}]}),
            "WRONG_TERMINAL_KIND",
        ),
        (
            json!({"cmd": "topup", "amount_cents": 500, "payment_method": "cash"}),
            "WRONG_TERMINAL_KIND",
        ),
        // Only returnable items come back.
        (
            json!({"cmd": "return", "items": [{"product_id": "draft", "quantity": 1}]}),
            "UNKNOWN_PRODUCT",
        ),
        (
            json!({"cmd": "return", "items": [{"product_id": "cup", "quantity": 100}]}),
            "INVALID_COMMAND",
        ),
        (json!({"cmd": "return", "items": []}), "INVALID_COMMAND"),
    ])
    .await;
    let d = give_back(&mut t, 3, &card).await;
    assert_eq!(d["status"], "approved_online", "{d}");
    assert_eq!(l.balance(&card).await, 1_000 + 3 * CUP_CENTS);
    // A refund of the last return takes the credit back off the card.
    t.send(json!({"cmd": "void_last"})).await;
    let v = t.expect("decision").await;
    assert_eq!(v["total_cents"], -3 * CUP_CENTS, "{v}");
    wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&card).await, 1_000);
    t.quit().await;

    // A checkpoint does not take cups back.
    let dir = tempfile::tempdir().unwrap();
    let mut cp = start_terminal(
        dir.path(),
        &proxy.addr,
        &l.checkpoint_token,
        "cp-1",
        "checkpoint",
        1_000,
    );
    ready_to_top_up(&mut cp).await;
    cp.expect_errors(&[(
        json!({"cmd": "return", "items": [{"product_id": "cup", "quantity": 1}]}),
        "WRONG_TERMINAL_KIND",
    )])
    .await;
    cp.quit().await;
    l.assert_audit_ok();
}
