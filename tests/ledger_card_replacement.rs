//! Lost and broken cards replaced (issue 14), on both backends: `cashless ledger card
//! replace --old UID --new UID` against a serving ledger, then the API, the card feed, the
//! books and a real terminal.
//!
//! The old card's balance moves to the new one in one transaction with two postings, its
//! voucher units and daily allowance too; the old card stays blocked as lost for good (an
//! unblock is refused) and both reach every terminal through the card feed. An offline sale
//! made on the old card before a terminal learned of the block still lands on it (the goods
//! were served), and what it leaves (a debt) is settled to the new card: at once when the
//! replacement is run again, and by `serve` on its own (checked here at its start).
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn replace(l: &Ledger, old: &str, new: &str) -> std::process::Output {
    l.admin(&["card", "replace", "--old", old, "--new", new])
}

/// The card as the API shows it: (status, balance, voucher units).
async fn card(l: &Ledger, uid: &str) -> Value {
    let resp = l.card(uid).await;
    resp.assert_status(200);
    resp.body
}

async fn a_replacement_moves_the_balance_and_vouchers_and_blocks_the_old_card_for_good(
    backend: Backend,
) {
    let l = Ledger::start_on(backend).await;
    let (old, new) = (uid(1), uid(2));
    l.fund(&old, 2_000).await;
    assert_success(
        "daily",
        &l.admin(&["voucher", "daily", "--uid", &old, "--units", "2"]),
    );
    assert_success(
        "grant",
        &l.admin(&["voucher", "grant", "--uid", &old, "--units", "3"]),
    );
    let order = order_body(&old, l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_status(201);
    let cursor = l.get("/v1/cards?since=", Some(&l.bar_token)).await.body["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = assert_success("replace", &replace(&l, &old, &new));
    assert!(
        out.contains(&format!(
            "card {old} replaced by {new} (new card created): 18.00 EUR and 5 voucher units moved"
        )),
        "{out}"
    );
    let tx = out
        .lines()
        .find_map(|l| l.strip_prefix("transaction_id: "))
        .unwrap()
        .to_owned();
    let old_card = card(&l, &old).await;
    assert_eq!(
        (
            old_card["status"].as_str(),
            old_card["balance_cents"].as_i64(),
            old_card["voucher_units"].as_i64()
        ),
        (Some("blocked"), Some(0), Some(0)),
        "{old_card}"
    );
    let new_card = card(&l, &new).await;
    assert_eq!(
        (
            new_card["status"].as_str(),
            new_card["balance_cents"].as_i64(),
            new_card["voucher_units"].as_i64()
        ),
        (Some("active"), Some(1_800), Some(5)),
        "{new_card}"
    );
    // Two postings, the old card's account to the new one's.
    let postings = l.query_json(&format!(
        "SELECT account, amount_cents FROM postings WHERE transaction_id = '{tx}' ORDER BY amount_cents"
    ));
    assert_eq!(
        postings,
        vec![
            json!({"account": format!("card:{old}"), "amount_cents": -1_800}),
            json!({"account": format!("card:{new}"), "amount_cents": 1_800}),
        ]
    );
    // The daily allowance went along.
    assert_eq!(
        l.query_i64(&format!(
            "SELECT daily_voucher_units FROM cards WHERE card_uid = '{new}'"
        )),
        2
    );
    assert_eq!(
        l.query_i64(&format!(
            "SELECT daily_voucher_units FROM cards WHERE card_uid = '{old}'"
        )),
        0
    );
    // Terminals learn both through the feed.
    let feed = l
        .get(&format!("/v1/cards?since={cursor}"), Some(&l.bar_token))
        .await;
    let uids: Vec<&str> = feed.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["card_uid"].as_str().unwrap())
        .collect();
    assert!(
        uids.contains(&old.as_str()) && uids.contains(&new.as_str()),
        "{uids:?}"
    );
    // The old card pays for nothing online; the new one does.
    let refused = order_body(&old, l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &refused)
        .await
        .assert_error(423, "CARD_BLOCKED");
    let paid = order_body(&new, l.seq(&l.bar_token), &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &paid)
        .await
        .assert_status(201);
    l.assert_audit_ok();

    // For good, and refusals change nothing.
    let before = l.db_fingerprint();
    let third = uid(3);
    for (args, message) in [
        (
            vec!["card", "unblock", "--uid", old.as_str()],
            "stays blocked for good",
        ),
        (
            vec!["voucher", "grant", "--uid", old.as_str(), "--units", "1"],
            "give the vouchers to",
        ),
        (
            vec!["voucher", "daily", "--uid", old.as_str(), "--units", "1"],
            "give the vouchers to",
        ),
        (
            vec![
                "card",
                "replace",
                "--old",
                old.as_str(),
                "--new",
                third.as_str(),
            ],
            "was already replaced by",
        ),
        (
            vec![
                "card",
                "replace",
                "--old",
                third.as_str(),
                "--new",
                old.as_str(),
            ],
            "is unknown",
        ),
        (
            vec![
                "card",
                "replace",
                "--old",
                new.as_str(),
                "--new",
                new.as_str(),
            ],
            "cannot replace itself",
        ),
        (
            vec![
                "card",
                "replace",
                "--old",
                "not-a-uid",
                "--new",
                new.as_str(),
            ],
            "--old",
        ),
    ] {
        let out = l.admin(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(l.db_fingerprint(), before, "a refusal changed the database");
    // A known card cannot be replaced by one that was itself replaced.
    l.fund(&third, 100).await;
    let out = replace(&l, &third, &old);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was itself replaced by"));
    // Run again with nothing new: nothing moves.
    let before_again = l.db_fingerprint();
    let again = assert_success("again", &replace(&l, &old, &new));
    assert!(again.contains("nothing to settle"), "{again}");
    assert_eq!(l.db_fingerprint(), before_again);
    l.assert_audit_ok();
}

async fn an_offline_sale_on_the_old_card_lands_on_it_and_is_settled_to_the_new_one(
    backend: Backend,
) {
    let mut l = Ledger::start_on(backend).await;
    let (old, new) = (uid(1), uid(2));
    l.fund(&old, 1_000).await;
    assert_success("replace", &replace(&l, &old, &new));
    // A bar that had not heard of the block sold on the old card offline: it arrives.
    let late = order_body(&old, l.seq(&l.bar_token), &[("water", 1, 200)], "offline");
    l.post("/v1/orders", &l.bar_token, &late)
        .await
        .assert_status(201);
    let old_card = card(&l, &old).await;
    assert_eq!(old_card["balance_cents"], -200, "{old_card}");
    assert_eq!(old_card["status"], "blocked");
    l.assert_audit_ok();
    // Run again: the debt follows to the new card, and the old is back at zero.
    let out = assert_success("settle", &replace(&l, &old, &new));
    assert!(
        out.contains(&format!("card {old} settled again to {new}: -2.00 EUR")),
        "{out}"
    );
    assert_eq!(l.balance(&new).await, 800);
    assert_eq!(card(&l, &old).await["balance_cents"], 0);

    // Another arrives; the ledger settles it by itself (at its start here, then every minute).
    let late = order_body(&old, l.seq(&l.bar_token), &[("water", 1, 200)], "offline");
    l.post("/v1/orders", &l.bar_token, &late)
        .await
        .assert_status(201);
    l.restart().await;
    wait_for_async("the serve settle", Duration::from_secs(20), || async {
        l.balance(&new).await == 600
    })
    .await;
    assert_eq!(card(&l, &old).await["balance_cents"], 0);
    assert_eq!(
        l.query_i64(&format!(
            "SELECT COUNT(*) FROM card_replacements WHERE old_card_uid = '{old}'"
        )),
        3
    );
    l.assert_audit_ok();
}

async fn a_chain_of_replacements_settles_onto_its_last_card(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let (a, b, c) = (uid(1), uid(2), uid(3));
    l.fund(&a, 1_000).await;
    assert_success("A by B", &replace(&l, &a, &b));
    // B is lost too: C takes it over.
    assert_success("B by C", &replace(&l, &b, &c));
    assert_eq!(l.balance(&c).await, 1_000);
    // A bar that never heard of either sold on A offline: it lands on A, and goes to C,
    // whether the desk names B or C.
    for named in [&b, &c] {
        let late = order_body(&a, l.seq(&l.bar_token), &[("water", 1, 200)], "offline");
        l.post("/v1/orders", &l.bar_token, &late)
            .await
            .assert_status(201);
        let out = assert_success("settle", &replace(&l, &a, named));
        assert!(
            out.contains(&format!("card {a} settled again to {c}: -2.00 EUR")),
            "{out}"
        );
    }
    assert_eq!(l.balance(&c).await, 600);
    assert_eq!(card(&l, &a).await["balance_cents"], 0);
    assert_eq!(card(&l, &b).await["balance_cents"], 0);
    // Another card cannot take A over.
    let out = replace(&l, &a, &uid(4));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("(its balance now goes to {c})"))
    );
    l.assert_audit_ok();
}

async fn a_card_with_money_on_it_takes_another_over_only_with_merge(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let (old, other) = (uid(1), uid(2));
    l.fund(&old, 1_000).await;
    l.fund(&other, 300).await;
    // A mistyped UID that is someone else's card: refused, nothing changed.
    let before = l.db_fingerprint();
    let out = replace(&l, &old, &other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the new card already holds 3.00 and 0 voucher units")
            && stderr.contains("--merge"),
        "{stderr}"
    );
    assert_eq!(l.db_fingerprint(), before);
    // The same attendee's second card: merged on purpose.
    assert_success(
        "merge",
        &l.admin(&["card", "replace", "--old", &old, "--new", &other, "--merge"]),
    );
    assert_eq!(l.balance(&other).await, 1_300);
    l.assert_audit_ok();
}

on_both_backends! {
    a_card_with_money_on_it_takes_another_over_only_with_merge,
    a_chain_of_replacements_settles_onto_its_last_card,
    a_replacement_moves_the_balance_and_vouchers_and_blocks_the_old_card_for_good,
    an_offline_sale_on_the_old_card_lands_on_it_and_is_settled_to_the_new_one,
}

/// The terminal's `last_feed_at`, from its status.
async fn last_feed_at(t: &mut Terminal) -> Value {
    t.send(json!({"cmd": "status"})).await;
    t.expect("status").await["last_feed_at"].clone()
}

#[tokio::test]
async fn a_terminal_learns_the_old_card_blocked_and_the_new_one_funded() {
    let l = Ledger::start().await;
    let (old, new) = (uid(1), uid(2));
    l.fund(&old, 1_000).await;
    let proxy = Proxy::start(l.base_url.trim_start_matches("http://")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &dir.path().join("journal.db"),
        &proxy.addr,
        &l.bar_token,
        "bar-1",
        "bar",
        1000,
    );
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    // The terminal writes its last card-feed time only when a pull brings cards.
    let before = last_feed_at(&mut t).await;
    assert_success("replace", &replace(&l, &old, &new));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while last_feed_at(&mut t).await == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no card-feed pull brought the cards"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its replica knows, and so it decides offline: the old card refused, the new one paid.
    proxy.go_down().await;
    let d = t.sell("water", 1, &old).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("declined"), Some("CARD_BLOCKED")),
        "{d}"
    );
    let d = t.sell("water", 1, &new).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    proxy.go_up();
    wait_until_synced(&mut t).await;
    assert_eq!(l.balance(&new).await, 800);
    t.quit().await;
    l.assert_audit_ok();
}
