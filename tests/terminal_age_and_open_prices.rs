//! Age restrictions and open prices at the terminal, end to end through its JSON-lines
//! interface: the real terminal and ledger binaries, real SQLite files, and a TCP proxy that
//! takes the network down. A card flagged at the ledger reaches the terminal's replica
//! through the card feed; from then on the terminal refuses it a product sold from that age
//! before anything is journaled or sent, online and offline. A checkpoint sets a flag with a
//! top-up. Open prices are typed into the order command and checked against their maximum.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use rusqlite::types::Value as SqlValue;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The card's `column` in the terminal's replica, once the card feed made it `expected`
/// (`Null`: cleared).
async fn wait_for_replica(journal: &Path, card: &str, column: &str, expected: SqlValue) {
    let conn =
        rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let sql = format!("SELECT {column} FROM replica_cards WHERE card_uid = ?1");
    wait_for(
        &format!("the card feed to bring {column} {expected:?}"),
        Duration::from_secs(20),
        || {
            conn.query_row(&sql, [card], |r| r.get::<_, SqlValue>(0))
                .ok()
                == Some(expected.clone())
        },
    )
    .await;
}

fn add_product(l: &Ledger, args: &[&str]) {
    let mut all = vec!["product", "add", "--point-of-sale", BAR_POS];
    all.extend_from_slice(args);
    assert_success("product add", &l.admin(&all));
}

fn journal_rows(journal: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_flagged_card_is_refused_a_restricted_product_online_and_offline() {
    let l = Ledger::start().await;
    add_product(
        &l,
        &[
            "--id",
            "shot",
            "--name",
            "Vodka",
            "--price-cents",
            "400",
            "--min-age",
            "18",
        ],
    );
    let teen = uid(1);
    l.fund(&teen, 3_000).await;
    assert_success(
        "card flag",
        &l.admin(&["card", "flag", "--uid", &teen, "--under", "18"]),
    );
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    ready_to_sell(&mut t).await;
    wait_for_replica(
        &journal,
        &teen,
        "age_flag",
        SqlValue::Text("under_18".into()),
    )
    .await;

    // Online: refused by the terminal itself; nothing journaled, nothing sent.
    let rows = journal_rows(&journal);
    let d = t.sell("shot", 1, &teen).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["reason"].as_str(),
            &d["client_request_id"]
        ),
        (Some("declined"), Some("AGE_RESTRICTED"), &Value::Null),
        "{d}"
    );
    assert_eq!(journal_rows(&journal), rows, "no journal entry");
    assert_eq!(l.count("bar_orders"), 0, "the ledger never saw it");
    // Water is sold.
    let d = t.sell("water", 1, &teen).await;
    assert_eq!(d["status"], "approved_online", "{d}");

    // Offline: the same refusal, from the replica.
    proxy.go_down().await;
    let d = t.sell("shot", 2, &teen).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("AGE_RESTRICTED")),
        "{d}"
    );
    let d = t.sell("water", 1, &teen).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    t.send(json!({"cmd": "status"})).await;
    let s = t.expect("status").await;
    // Both refusals are the terminal's own declines, kept in its journal.
    assert_eq!(s["declined_offline"], 2, "{s}");

    proxy.go_up();
    wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&teen).await, 3_000 - 2 * WATER_CENTS);
    assert_eq!(
        l.query_i64("SELECT COUNT(*) FROM bar_order_items WHERE product_id = 'shot'"),
        0
    );

    // The desk clears the flag: once the feed brings it, the shot is sold.
    assert_success(
        "card flag --none",
        &l.admin(&["card", "flag", "--uid", &teen, "--none"]),
    );
    wait_for_replica(&journal, &teen, "age_flag", SqlValue::Null).await;
    let d = t.sell("shot", 1, &teen).await;
    assert_eq!(d["status"], "approved_online", "{d}");
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_checkpoint_sets_the_age_flag_with_a_top_up() {
    let (l, _proxy, _dir, mut t) = checkpoint_ready_to_top_up().await;
    let child = uid(2);
    t.expect_errors(&[(
        json!({"cmd": "topup", "amount_cents": 500, "payment_method": "cash", "age_flag": "under_21"}),
        "INVALID_COMMAND",
    )])
    .await;
    t.send(json!({"cmd": "topup", "amount_cents": 1000, "payment_method": "cash", "age_flag": "under_16"}))
        .await;
    t.expect("armed").await;
    t.send(json!({"cmd": "tap", "uid": child})).await;
    let d = t.expect("decision").await;
    assert_eq!(d["status"], "approved_online", "{d}");
    let card = l.card(&child).await;
    assert_eq!(card.body["age_flag"], "under_16", "{}", card.body);
    // A top-up without a flag leaves it as it is.
    let d = t.top_up(500, "cash", &child).await;
    assert_eq!(d["status"], "approved_online", "{d}");
    assert_eq!(l.card(&child).await.body["age_flag"], "under_16");
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn open_prices_are_typed_within_their_maximum() {
    let l = Ledger::start().await;
    add_product(
        &l,
        &[
            "--id",
            "tip",
            "--name",
            "Tip",
            "--open-price-max-cents",
            "500",
        ],
    );
    let card = uid(3);
    l.fund(&card, 2_000).await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    ready_to_sell(&mut t).await;
    t.expect_errors(&[
        // No price, a price beyond the maximum or of zero, a price on a fixed product.
        (
            json!({"cmd": "order", "items": [{"product_id": "tip", "quantity": 1}]}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "order", "items": [{"product_id": "tip", "quantity": 1, "unit_price_cents": 501}]}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "order", "items": [{"product_id": "tip", "quantity": 1, "unit_price_cents": 0}]}),
            "INVALID_COMMAND",
        ),
        (
            json!({"cmd": "order", "items": [{"product_id": "water", "quantity": 1, "unit_price_cents": 100}]}),
            "INVALID_COMMAND",
        ),
    ])
    .await;
    t.send(json!({"cmd": "order", "items": [
        {"product_id": "tip", "quantity": 2, "unit_price_cents": 250},
        {"product_id": "water", "quantity": 1}
    ]}))
    .await;
    assert_eq!(t.expect("armed").await["total_cents"], 500 + WATER_CENTS);
    t.send(json!({"cmd": "tap", "uid": card})).await;
    let d = t.expect("decision").await;
    assert_eq!(d["status"], "approved_online", "{d}");
    assert_eq!(l.balance(&card).await, 2_000 - 500 - WATER_CENTS);
    let line = l.query_json(
        "SELECT unit_price_cents, quantity, catalog_price_cents FROM bar_order_items
          WHERE product_id = 'tip'",
    );
    assert_eq!(
        (
            &line[0]["unit_price_cents"],
            &line[0]["quantity"],
            &line[0]["catalog_price_cents"]
        ),
        (&json!(250), &json!(2), &Value::Null)
    );
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn a_staff_card_pays_with_vouchers_and_the_decision_says_so() {
    let l = Ledger::start().await;
    add_product(
        &l,
        &[
            "--id",
            "staff-beer",
            "--name",
            "Beer",
            "--price-cents",
            "450",
            "--voucher-price",
            "1",
        ],
    );
    let staff = uid(4);
    assert_success(
        "voucher grant",
        &l.admin(&["voucher", "grant", "--uid", &staff, "--units", "2"]),
    );
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    ready_to_sell(&mut t).await;
    // No money on the card: the vouchers pay.
    let d = t.sell("staff-beer", 2, &staff).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["vouchers_used"].as_i64(),
            d["balance_cents"].as_i64()
        ),
        (Some("approved_online"), Some(2), Some(0)),
        "{d}"
    );
    // None left: money, of which there is none.
    let d = t.sell("staff-beer", 1, &staff).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("INSUFFICIENT_FUNDS")),
        "{d}"
    );
    t.quit().await;
    l.assert_audit_ok();
}

#[tokio::test]
async fn offline_the_replicas_vouchers_pay_first_and_the_ledger_takes_the_same() {
    let l = Ledger::start().await;
    add_product(
        &l,
        &[
            "--id",
            "staff-beer",
            "--name",
            "Beer",
            "--price-cents",
            "450",
            "--voucher-price",
            "1",
        ],
    );
    let staff = uid(5);
    l.fund(&staff, 1_000).await;
    assert_success(
        "voucher grant",
        &l.admin(&["voucher", "grant", "--uid", &staff, "--units", "3"]),
    );
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let mut t = Terminal::start(dir.path(), &proxy.addr, &l.bar_token).await;
    ready_to_sell(&mut t).await;
    wait_for_replica(&journal, &staff, "voucher_units", SqlValue::Integer(3)).await;

    proxy.go_down().await;
    // Two beers: both on vouchers, no money.
    let d = t.sell("staff-beer", 2, &staff).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["vouchers_used"].as_i64(),
            d["balance_cents"].as_i64()
        ),
        (Some("approved_offline"), Some(2), Some(1_000)),
        "{d}"
    );
    // Two more: the last voucher (this terminal used two since the replica's 3) and 4.50.
    let d = t.sell("staff-beer", 2, &staff).await;
    assert_eq!(
        (
            d["status"].as_str(),
            d["vouchers_used"].as_i64(),
            d["balance_cents"].as_i64()
        ),
        (Some("approved_offline"), Some(1), Some(550)),
        "{d}"
    );
    // Replayed: the ledger applies exactly what the terminal decided, once.
    proxy.go_up();
    wait_until_synced(&mut t).await;
    let card = l.card(&staff).await;
    assert_eq!(
        (
            card.body["balance_cents"].as_i64(),
            card.body["voucher_units"].as_i64()
        ),
        (Some(550), Some(0)),
        "{}",
        card.body
    );
    t.quit().await;
    l.assert_audit_ok();
}
