//! Vouchers (issue 13), black-box on both backends: a real `cashless ledger serve`, voucher
//! units granted with `cashless ledger voucher grant`, products with a voucher price
//! registered through the admin CLI, orders over HTTP.
//!
//! An online order uses the card's vouchers first, lines in order, each unit of a product
//! with a voucher price while they cover it, and money for the rest; the answer says how
//! many vouchers and how much money it took. Vouchers never go below zero online; an
//! offline order says what vouchers the terminal used and is applied once, even past the
//! card's (flagged). What vouchers pay earns no revenue and no VAT; a void gives the
//! vouchers and the money back. The expected splits are worked out by hand in each test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[limits]
recharge_max_cents = 50000
balance_max_cents = 100000

[taxes]
rates_basis_points = { standard = 1900, none = 0 }
default_rate = "standard"
"#;

/// Beer costs 1 voucher, a cocktail 2, water is money only.
async fn festival(backend: Backend) -> Ledger {
    let l = Ledger::start_with_config_on(backend, CONFIG).await;
    for args in [
        [
            "--id",
            "beer",
            "--price-cents",
            "450",
            "--voucher-price",
            "1",
        ],
        [
            "--id",
            "cocktail",
            "--price-cents",
            "900",
            "--voucher-price",
            "2",
        ],
        [
            "--id",
            "water",
            "--price-cents",
            "200",
            "--tax-rate",
            "none",
        ],
    ] {
        let mut all = vec![
            "product",
            "add",
            "--name",
            "A drink",
            "--point-of-sale",
            BAR_POS,
        ];
        all.extend(args);
        assert_success("product add", &l.admin(&all));
    }
    l
}

fn grant(l: &Ledger, card: &str, units: i64) {
    let out = l.admin(&[
        "voucher",
        "grant",
        "--uid",
        card,
        "--units",
        &units.to_string(),
    ]);
    assert_success("voucher grant", &out);
}

async fn vouchers(l: &Ledger, card: &str) -> i64 {
    let c = l.card(card).await;
    c.assert_status(200);
    c.body["voucher_units"].as_i64().unwrap()
}

async fn order(l: &Ledger, card: &str, items: &[(&str, i64, i64)], mode: &str) -> (Value, Resp) {
    let body = order_body(card, l.seq(&l.bar_token), items, mode);
    let resp = l.post("/v1/orders", &l.bar_token, &body).await;
    (body, resp)
}

fn postings_of_order(l: &Ledger, body: &Value) -> Vec<(String, i64)> {
    l.query_json(&format!(
        "SELECT p.account, p.amount_cents FROM postings p
           JOIN bar_orders o ON o.transaction_id = p.transaction_id
          WHERE o.client_request_id = '{}' ORDER BY p.posting_id",
        crid(body)
    ))
    .into_iter()
    .map(|r| {
        (
            r["account"].as_str().unwrap().to_owned(),
            r["amount_cents"].as_i64().unwrap(),
        )
    })
    .collect()
}

async fn vouchers_pay_first_and_money_the_rest(backend: Backend) {
    let l = festival(backend).await;
    let staff = uid(1);
    l.fund(&staff, 1_000).await;
    grant(&l, &staff, 3);
    assert_eq!(vouchers(&l, &staff).await, 3);

    // Two beers (1 voucher each), a cocktail (2) and a water (money only): the beers take 2
    // vouchers, the 1 left does not cover the cocktail, so 900 + 200 is money: more than
    // the card has. Declined, and nothing moves, vouchers included.
    let items = [("beer", 2, 450), ("cocktail", 1, 900), ("water", 1, 200)];
    let (_, resp) = order(&l, &staff, &items, "online").await;
    resp.assert_error(402, "INSUFFICIENT_FUNDS");
    assert_eq!(vouchers(&l, &staff).await, 3);
    assert_eq!(l.balance(&staff).await, 1_000);

    // Two beers and a water: 2 vouchers, 200 money.
    let (body, resp) = order(&l, &staff, &[("beer", 2, 450), ("water", 1, 200)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (
            &resp.body["total_cents"],
            &resp.body["vouchers_used"],
            &resp.body["money_cents"],
            &resp.body["new_balance_cents"]
        ),
        (&json!(1_100), &json!(2), &json!(200), &json!(800)),
        "{}",
        resp.body
    );
    assert_eq!(vouchers(&l, &staff).await, 1);
    // Only the money is in the books: no revenue, no VAT for the beers.
    assert_eq!(
        postings_of_order(&l, &body),
        [
            (format!("card:{staff}"), -200),
            (format!("revenue:{BAR_POS}:none"), 200),
        ]
    );
    let lines = l.query_json(&format!(
        "SELECT i.product_id, i.voucher_quantity, i.voucher_units, i.net_cents, i.tax_cents
           FROM bar_order_items i JOIN bar_orders o ON o.transaction_id = i.transaction_id
          WHERE o.client_request_id = '{}' ORDER BY i.line_no",
        crid(&body)
    ));
    assert_eq!(
        (
            &lines[0]["voucher_quantity"],
            &lines[0]["voucher_units"],
            &lines[0]["net_cents"]
        ),
        (&json!(2), &json!(2), &json!(0))
    );
    assert_eq!(
        (&lines[1]["voucher_quantity"], &lines[1]["net_cents"]),
        (&json!(0), &json!(200))
    );

    // The last voucher pays one of two beers; never below zero online.
    let (_, resp) = order(&l, &staff, &[("beer", 2, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (&resp.body["vouchers_used"], &resp.body["money_cents"]),
        (&json!(1), &json!(450))
    );
    assert_eq!(vouchers(&l, &staff).await, 0);
    // A card without vouchers pays money, and says so.
    let (_, resp) = order(&l, &staff, &[("water", 1, 200)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (&resp.body["vouchers_used"], &resp.body["money_cents"]),
        (&json!(0), &json!(200))
    );
    assert_eq!(l.balance(&staff).await, 1_000 - 200 - 450 - 200);
    l.assert_audit_ok();
}

async fn an_order_paid_by_vouchers_alone_moves_no_money(backend: Backend) {
    let l = festival(backend).await;
    let artist = uid(2);
    grant(&l, &artist, 4);
    // The card was created by the grant, with no money on it.
    assert_eq!(l.balance(&artist).await, 0);
    let (body, resp) = order(&l, &artist, &[("cocktail", 2, 900)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (
            &resp.body["vouchers_used"],
            &resp.body["money_cents"],
            &resp.body["new_balance_cents"]
        ),
        (&json!(4), &json!(0), &json!(0))
    );
    assert!(
        postings_of_order(&l, &body).is_empty(),
        "no money, no postings"
    );
    // A void gives the vouchers back, and no money: vouchers never turn into money.
    let void = void_body(
        &crid(&body),
        l.seq(&l.bar_token),
        "customer_refund",
        BAR_STAFF,
    );
    let answer = l.post("/v1/voids", &l.bar_token, &void).await;
    answer.assert_status(201);
    assert_eq!(answer.body["refunded_cents"], 0, "{}", answer.body);
    assert_eq!(vouchers(&l, &artist).await, 4);
    assert_eq!(l.balance(&artist).await, 0);
    l.assert_audit_ok();
}

async fn a_void_gives_back_the_vouchers_and_the_money(backend: Backend) {
    let l = festival(backend).await;
    let staff = uid(3);
    l.fund(&staff, 2_000).await;
    grant(&l, &staff, 1);
    let (body, resp) = order(&l, &staff, &[("beer", 2, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (vouchers(&l, &staff).await, l.balance(&staff).await),
        (0, 1_550)
    );
    let void = void_body(&crid(&body), l.seq(&l.bar_token), "staff_error", BAR_STAFF);
    let answer = l.post("/v1/voids", &l.bar_token, &void).await;
    answer.assert_status(201);
    assert_eq!(answer.body["refunded_cents"], 450);
    assert_eq!(
        (vouchers(&l, &staff).await, l.balance(&staff).await),
        (1, 2_000)
    );
    // The vouchers given back are in the void's audit-log row.
    let returned = l.query_json(&format!(
        "SELECT {} AS units FROM app_transaction_log WHERE operation = 'void'
          AND client_request_id = '{}'",
        l.json_text("details", "vouchers_returned"),
        crid(&void)
    ));
    assert_eq!(returned[0]["units"], "1", "{returned:?}");
    l.assert_audit_ok();
}

async fn offline_voucher_use_is_applied_once_even_past_the_cards(backend: Backend) {
    let l = festival(backend).await;
    let staff = uid(4);
    l.fund(&staff, 1_000).await;
    grant(&l, &staff, 1);
    // The terminal, offline, believed the card had 2 vouchers (another terminal used one
    // meanwhile): it charged 450 for three beers and used 2 vouchers.
    let mut body = order_body(&staff, l.seq(&l.bar_token), &[("beer", 3, 450)], "offline");
    body["voucher_units"] = json!(2);
    let first = l.post("/v1/orders", &l.bar_token, &body).await;
    first.assert_status(201);
    assert_eq!(
        (
            &first.body["vouchers_used"],
            &first.body["money_cents"],
            &first.body["flags"]
        ),
        (&json!(2), &json!(450), &json!(["VOUCHERS_OVERDRAWN"])),
        "{}",
        first.body
    );
    assert_eq!(
        (vouchers(&l, &staff).await, l.balance(&staff).await),
        (-1, 550)
    );
    // Replayed by the terminal's sync: the stored answer, nothing applied twice.
    let again = l.post("/v1/orders", &l.bar_token, &body).await;
    again.assert_status(201);
    assert!(again.replayed());
    assert_eq!(again.raw, first.raw);
    assert_eq!(
        (vouchers(&l, &staff).await, l.balance(&staff).await),
        (-1, 550)
    );
    // A later order that uses no vouchers is not flagged for the card's old hole.
    let (_, resp) = order(&l, &staff, &[("water", 1, 200)], "online").await;
    resp.assert_status(201);
    assert_eq!(resp.body["flags"], json!([]), "{}", resp.body);
    // The next grant fills the hole first.
    grant(&l, &staff, 3);
    assert_eq!(vouchers(&l, &staff).await, 2);
    assert_eq!(l.balance(&staff).await, 350);
    l.assert_audit_ok();
}

async fn bad_voucher_input_is_refused_and_changes_nothing(backend: Backend) {
    let l = festival(backend).await;
    let staff = uid(5);
    l.fund(&staff, 1_000).await;
    grant(&l, &staff, 2);
    let before = l.db_fingerprint();
    // Online, the ledger decides what vouchers pay: a terminal cannot say.
    let mut body = order_body(&staff, l.seq(&l.bar_token), &[("beer", 1, 450)], "online");
    body["voucher_units"] = json!(1);
    let details = l
        .post("/v1/orders", &l.bar_token, &body)
        .await
        .assert_error(400, "INVALID_REQUEST");
    assert_eq!(details["field"], "voucher_units");
    for units in [-1, 10_001] {
        let mut body = order_body(&staff, l.seq(&l.bar_token), &[("beer", 1, 450)], "offline");
        body["voucher_units"] = json!(units);
        let details = l
            .post("/v1/orders", &l.bar_token, &body)
            .await
            .assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], "voucher_units", "{units}");
    }
    for units in ["0", "1001", "-3", "x"] {
        let out = l.admin(&["voucher", "grant", "--uid", &staff, "--units", units]);
        assert_eq!(out.status.code(), Some(2), "{units}");
    }
    let out = l.admin(&[
        "product",
        "add",
        "--id",
        "x",
        "--name",
        "X",
        "--point-of-sale",
        BAR_POS,
        "--price-cents",
        "100",
        "--voucher-price",
        "101",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("voucher_price"));
    assert_eq!(l.db_fingerprint(), before);
}

async fn grants_are_audited_and_reach_the_card_feed(backend: Backend) {
    let l = festival(backend).await;
    let staff = uid(6);
    grant(&l, &staff, 5);
    grant(&l, &staff, 2);
    let feed = l
        .get("/v1/cards?since=&limit=100", Some(&l.bar_token))
        .await;
    feed.assert_status(200);
    let entry = feed.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["card_uid"] == staff.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["voucher_units"], 7, "{entry}");
    let catalog = l.get("/v1/catalog", Some(&l.bar_token)).await;
    let products = catalog.body["products"].as_array().unwrap().clone();
    let price = |id: &str| {
        products.iter().find(|p| p["product_id"] == id).unwrap()["voucher_price"].clone()
    };
    assert_eq!(
        (price("beer"), price("cocktail"), price("water")),
        (json!(1), json!(2), Value::Null)
    );
    let logged = l.query_i64(&format!(
        "SELECT COUNT(*) FROM app_transaction_log
          WHERE operation = 'voucher_grant' AND card_uid = '{staff}'"
    ));
    assert_eq!(logged, 2);
}

async fn give(l: &Ledger, card: &str, units: i64, mode: &str) -> (Value, Resp) {
    let body = voucher_grant_body(card, l.seq(&l.checkpoint_token), units, mode);
    let resp = l
        .post("/v1/voucher-grants", &l.checkpoint_token, &body)
        .await;
    (body, resp)
}

async fn a_checkpoint_supervisor_grants_vouchers_once(backend: Backend) {
    let l = festival(backend).await;
    let artist = uid(7);
    // An attendee the ledger has never seen: created with the vouchers and no money.
    let (body, first) = give(&l, &artist, 3, "online").await;
    first.assert_status(201);
    assert_eq!(
        (
            &first.body["vouchers_granted"],
            &first.body["voucher_units"],
            &first.body["previous_balance_cents"],
            &first.body["new_balance_cents"],
            &first.body["flags"],
        ),
        (
            &json!(3),
            &json!(3),
            &json!(0),
            &json!(0),
            &json!(["CARD_CREATED"])
        ),
        "{}",
        first.body
    );
    assert!(first.body.get("amount_cents").is_none(), "{}", first.body);
    // Sent again (a lost answer, a sync): the same answer, granted once.
    let again = l
        .post("/v1/voucher-grants", &l.checkpoint_token, &body)
        .await;
    again.assert_status(201);
    assert!(again.replayed());
    assert_eq!(again.raw, first.raw);
    // And once more inside a batch: still once.
    let mut entry = body.clone();
    entry["type"] = json!("voucher_grant");
    let batch = l
        .post(
            "/v1/batch",
            &l.checkpoint_token,
            &json!({ "operations": [entry] }),
        )
        .await;
    batch.assert_status(200);
    assert_eq!(batch.body["results"][0]["status"], 201, "{}", batch.body);
    assert_eq!(vouchers(&l, &artist).await, 3);
    // Vouchers are never money: the grant has no posting.
    let postings = l.query_i64(&format!(
        "SELECT COUNT(*) FROM postings p JOIN voucher_grants g
           ON g.transaction_id = p.transaction_id WHERE g.client_request_id = '{}'",
        crid(&body)
    ));
    assert_eq!(postings, 0);
    assert_eq!(l.count("voucher_grants"), 1);
    // The artist drinks on them: two beers, no money on the card.
    let (_, resp) = order(&l, &artist, &[("beer", 2, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (&resp.body["vouchers_used"], &resp.body["money_cents"]),
        (&json!(2), &json!(0))
    );
    assert_eq!(vouchers(&l, &artist).await, 1);
    // An offline grant is applied as the checkpoint recorded it.
    let (_, offline) = give(&l, &artist, 2, "offline").await;
    offline.assert_status(201);
    assert_eq!(offline.body["voucher_units"], 3, "{}", offline.body);
    l.assert_audit_ok();
}

async fn only_a_checkpoint_supervisor_grants(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(8);
    let before = l.db_fingerprint();
    // A bar does not grant, whoever asks.
    let body = voucher_grant_body(&card, l.seq(&l.bar_token), 2, "online");
    let resp = l.post("/v1/voucher-grants", &l.bar_token, &body).await;
    resp.assert_error(403, "FORBIDDEN");
    assert_eq!(
        resp.body["error"]["message"], "a bar terminal cannot grant vouchers",
        "{}",
        resp.body
    );
    // A cashier does not either: free drinks are a supervisor's decision.
    for mode in ["online", "offline"] {
        let mut body = voucher_grant_body(&card, l.seq(&l.checkpoint_token), 2, mode);
        body["staff_id"] = json!(CASH_STAFF);
        l.post("/v1/voucher-grants", &l.checkpoint_token, &body)
            .await
            .assert_error(403, "FORBIDDEN");
    }
    assert_eq!(l.db_fingerprint(), before);
}

async fn online_grants_stop_at_the_card_limit_and_a_lost_card(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(9);
    for _ in 0..10 {
        give(&l, &card, 1_000, "online").await.1.assert_status(201);
    }
    assert_eq!(vouchers(&l, &card).await, 10_000);
    // Online, one more is refused (a stored decline) and changes nothing on the card.
    let (_, over) = give(&l, &card, 1, "online").await;
    let details = over.assert_error(422, "LIMIT_EXCEEDED");
    assert_eq!(
        details,
        json!({"limit": "voucher_units_max", "limit_units": 10_000, "voucher_units": 10_000})
    );
    assert_eq!(vouchers(&l, &card).await, 10_000);
    // The desk keeps to the same maximum.
    let out = l.admin(&["voucher", "grant", "--uid", &card, "--units", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the maximum of 10000"),
        "{out:?}"
    );
    assert_eq!(vouchers(&l, &card).await, 10_000);
    // Offline the supervisor already told the holder: applied, and flagged.
    let (_, offline) = give(&l, &card, 1, "offline").await;
    offline.assert_status(201);
    assert_eq!(offline.body["flags"], json!(["LIMIT_EXCEEDED"]));
    assert_eq!(vouchers(&l, &card).await, 10_001);

    let lost = uid(10);
    l.fund(&lost, 500).await;
    assert_success("card block", &l.admin(&["card", "block", "--uid", &lost]));
    give(&l, &lost, 2, "online")
        .await
        .1
        .assert_error(423, "CARD_BLOCKED");
    assert_eq!(vouchers(&l, &lost).await, 0);
    let (_, offline) = give(&l, &lost, 2, "offline").await;
    offline.assert_status(201);
    assert_eq!(offline.body["card_status"], "blocked");
    assert_eq!(vouchers(&l, &lost).await, 2);
    l.assert_audit_ok();
}

async fn a_void_takes_a_grant_back(backend: Backend) {
    let l = festival(backend).await;
    let artist = uid(11);
    let (grant_body, resp) = give(&l, &artist, 3, "online").await;
    resp.assert_status(201);
    let (_, resp) = order(&l, &artist, &[("beer", 2, 450)], "online").await;
    resp.assert_status(201);
    // The grant was a mistake: the checkpoint voids it. Two of its units were drunk
    // already, so the card's voucher units go below zero; no money moves.
    let void = void_body(
        &crid(&grant_body),
        l.seq(&l.checkpoint_token),
        "staff_error",
        SUPER_STAFF,
    );
    let answer = l.post("/v1/voids", &l.checkpoint_token, &void).await;
    answer.assert_status(201);
    assert_eq!(
        (
            &answer.body["status"],
            &answer.body["refunded_cents"],
            &answer.body["vouchers_returned"],
            &answer.body["new_balance_cents"],
        ),
        (&json!("voided"), &json!(0), &json!(-3), &json!(0)),
        "{}",
        answer.body
    );
    assert_eq!(vouchers(&l, &artist).await, -2);
    // The order sells no more beer on vouchers: the card has none.
    l.fund(&artist, 1_000).await;
    let (_, resp) = order(&l, &artist, &[("beer", 1, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(resp.body["vouchers_used"], 0);
    l.assert_audit_ok();
    // The audit proves every card's voucher units from its grants and orders.
    l.tamper(&format!(
        "UPDATE cards SET voucher_units = voucher_units + 5 WHERE card_uid = '{artist}'"
    ));
    let out = l.audit();
    assert_eq!(out.status.code(), Some(1), "audit must fail: {out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("card {artist}: voucher_units 3 but grants")),
        "{report}"
    );
}

async fn bad_grants_are_refused_and_change_nothing(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(12);
    let before = l.db_fingerprint();
    for units in [json!(0), json!(1_001), json!(-2), json!("3")] {
        let mut body = voucher_grant_body(&card, l.seq(&l.checkpoint_token), 1, "online");
        body["units"] = units.clone();
        let details = l
            .post("/v1/voucher-grants", &l.checkpoint_token, &body)
            .await
            .assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], "units", "{units}");
    }
    let mut body = voucher_grant_body(&card, l.seq(&l.checkpoint_token), 1, "online");
    body["amount_cents"] = json!(100);
    l.post("/v1/voucher-grants", &l.checkpoint_token, &body)
        .await
        .assert_error(400, "INVALID_REQUEST");
    assert_eq!(l.db_fingerprint(), before);
}

/// `cashless ledger voucher start-day --day DAY`: how many allowances it renewed.
fn start_day(l: &Ledger, day: chrono::NaiveDate) -> String {
    assert_success(
        "voucher start-day",
        &l.admin(&[
            "voucher",
            "start-day",
            "--allow-future",
            "--day",
            &day.to_string(),
        ]),
    )
}

async fn a_daily_allowance_is_renewed_each_festival_day_and_not_saved_up(backend: Backend) {
    let mut l = festival(backend).await;
    let crew = uid(13);
    l.fund(&crew, 1_000).await;
    let out = assert_success(
        "voucher daily",
        &l.admin(&["voucher", "daily", "--uid", &crew, "--units", "2"]),
    );
    assert!(out.contains("2 voucher units a day"), "{out}");
    assert_eq!(vouchers(&l, &crew).await, 2);
    // Two of three beers on the day's vouchers, the third in money.
    let (_, resp) = order(&l, &crew, &[("beer", 3, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(
        (&resp.body["vouchers_used"], &resp.body["money_cents"]),
        (&json!(2), &json!(450))
    );
    // The allowance was given for today's festival day when it was set: starting a day not
    // after it renews nothing.
    let today = chrono::Utc::now().date_naive();
    assert!(start_day(&l, today - chrono::Duration::days(1)).contains(": 0 daily"));
    assert_eq!(vouchers(&l, &crew).await, 0);
    // The next festival day starts: exactly the allowance again.
    let day = |n: i64| today + chrono::Duration::days(n);
    assert!(start_day(&l, day(2)).contains(": 1 daily allowances renewed"));
    assert_eq!(vouchers(&l, &crew).await, 2);
    // What is left is not saved up: one used, the next day gives 2, not 3; and a day is
    // given once, however often it is started.
    let (_, resp) = order(&l, &crew, &[("beer", 1, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(vouchers(&l, &crew).await, 1);
    start_day(&l, day(3));
    assert!(start_day(&l, day(3)).contains(": 0 daily"));
    assert_eq!(vouchers(&l, &crew).await, 2);
    // An extra grant counts for the day it is given, and ends with it.
    grant(&l, &crew, 5);
    assert_eq!(vouchers(&l, &crew).await, 7);
    start_day(&l, day(4));
    assert_eq!(vouchers(&l, &crew).await, 2);
    // The audit proves every renewal from its audit-log row.
    l.assert_audit_ok();
    // Ended: the card keeps what it holds, and no day renews it.
    assert_success(
        "voucher daily",
        &l.admin(&["voucher", "daily", "--uid", &crew, "--units", "0"]),
    );
    assert!(start_day(&l, day(5)).contains(": 0 daily"));
    assert_eq!(vouchers(&l, &crew).await, 2);

    // `serve` renews by itself when a festival day starts (here: on start, for a card last
    // given an allowance years ago).
    let other = uid(14);
    assert_success(
        "voucher daily",
        &l.admin(&["voucher", "daily", "--uid", &other, "--units", "3"]),
    );
    let (_, resp) = order(&l, &other, &[("beer", 3, 450)], "online").await;
    resp.assert_status(201);
    assert_eq!(vouchers(&l, &other).await, 0);
    l.execute(&format!(
        "UPDATE cards SET vouchers_day = '2000-01-01' WHERE card_uid = '{other}'"
    ));
    l.restart().await;
    wait_for_async("the new day's vouchers", REQUEST_TIMEOUT, || async {
        vouchers(&l, &other).await == 3
    })
    .await;
    l.assert_audit_ok();
    // Out of range: refused by the command line, nothing changed.
    for units in ["-1", "1001"] {
        let out = l.admin(&["voucher", "daily", "--uid", &crew, "--units", units]);
        assert_eq!(out.status.code(), Some(2), "{units}");
    }
    let out = l.admin(&["voucher", "start-day", "--day", "2026-13-01"]);
    assert_eq!(out.status.code(), Some(2));
    // A day after today's, by mistake: refused, nothing renewed.
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).date_naive();
    let before = l.db_fingerprint();
    let out = l.admin(&["voucher", "start-day", "--day", &later.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("after today's festival day"),
        "{out:?}"
    );
    assert_eq!(l.db_fingerprint(), before);
}

on_both_backends! {
    a_checkpoint_supervisor_grants_vouchers_once,
    only_a_checkpoint_supervisor_grants,
    online_grants_stop_at_the_card_limit_and_a_lost_card,
    a_void_takes_a_grant_back,
    bad_grants_are_refused_and_change_nothing,
    a_daily_allowance_is_renewed_each_festival_day_and_not_saved_up,

    vouchers_pay_first_and_money_the_rest,
    an_order_paid_by_vouchers_alone_moves_no_money,
    a_void_gives_back_the_vouchers_and_the_money,
    offline_voucher_use_is_applied_once_even_past_the_cards,
    bad_voucher_input_is_refused_and_changes_nothing,
    grants_are_audited_and_reach_the_card_feed,
}
