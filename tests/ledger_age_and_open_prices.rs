//! Age restrictions and open prices (issue 13), black-box on both backends: a real
//! `cashless ledger serve`, products registered through the admin CLI with `--min-age` and
//! `--open-price-max-cents`, cards flagged by a top-up that names an age flag and by the
//! desk's `card flag`, orders over HTTP.
//!
//! A card flagged `under_18` may buy what is sold from 16 but not from 18; `under_16`
//! neither. Online the ledger declines with `AGE_RESTRICTED` (stored like any business
//! decline: a retry gets the same answer, nothing moves); offline (the terminal already
//! handed the drink over, not knowing the flag) it applies the order and flags it. An open
//! price takes 1 cent to its maximum online, and is flagged beyond it offline.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// The festival's products at the bar: what each is sold from, and the tip's open price.
fn add_products(l: &Ledger) {
    let products: [&[&str]; 4] = [
        &["--id", "beer", "--price-cents", "450", "--min-age", "18"],
        &["--id", "shandy", "--price-cents", "350", "--min-age", "16"],
        &["--id", "lemonade", "--price-cents", "300"],
        &[
            "--id",
            "tip",
            "--open-price-max-cents",
            "1000",
            "--tax-rate",
            "none",
        ],
    ];
    for extra in products {
        let mut args = vec![
            "product",
            "add",
            "--name",
            "A product",
            "--point-of-sale",
            BAR_POS,
        ];
        args.extend_from_slice(extra);
        assert_success("product add", &l.admin(&args));
    }
}

const CONFIG: &str = r#"
[limits]
recharge_max_cents = 50000
balance_max_cents = 100000

[taxes]
rates_basis_points = { standard = 1900, none = 0 }
default_rate = "standard"
"#;

async fn festival(backend: Backend) -> Ledger {
    let l = Ledger::start_with_config_on(backend, CONFIG).await;
    add_products(&l);
    l
}

/// An online cash top-up of `cents` that marks the card's holder with `age_flag`.
async fn topup_flagged(l: &Ledger, card: &str, cents: i64, age_flag: &str) -> Resp {
    let mut body = recharge_body(card, l.seq(&l.checkpoint_token), cents, "cash", "online");
    body["age_flag"] = json!(age_flag);
    l.post("/v1/recharges", &l.checkpoint_token, &body).await
}

async fn order(l: &Ledger, card: &str, items: &[(&str, i64, i64)], mode: &str) -> (Value, Resp) {
    let body = order_body(card, l.seq(&l.bar_token), items, mode);
    let resp = l.post("/v1/orders", &l.bar_token, &body).await;
    (body, resp)
}

fn flag_card(l: &Ledger, card: &str, under: Option<&str>) -> std::process::Output {
    match under {
        Some(years) => l.admin(&["card", "flag", "--uid", card, "--under", years]),
        None => l.admin(&["card", "flag", "--uid", card, "--none"]),
    }
}

async fn a_flagged_card_is_refused_a_restricted_product_online_and_nothing_moves(backend: Backend) {
    let l = festival(backend).await;
    let teen = uid(1);
    let child = uid(2);
    // The checkpoint saw a 17-year-old's ID; the desk flagged a 15-year-old's card.
    topup_flagged(&l, &teen, 5_000, "under_18")
        .await
        .assert_status(201);
    l.fund(&child, 5_000).await;
    assert_success("card flag", &flag_card(&l, &child, Some("16")));

    // Under 18: lemonade and shandy (16) yes, beer (18) no.
    order(&l, &teen, &[("lemonade", 1, 300)], "online")
        .await
        .1
        .assert_status(201);
    order(&l, &teen, &[("shandy", 1, 350)], "online")
        .await
        .1
        .assert_status(201);
    let before = l.db_fingerprint();
    let (body, resp) = order(
        &l,
        &teen,
        &[("lemonade", 1, 300), ("beer", 2, 450)],
        "online",
    )
    .await;
    let details = resp.assert_error(422, "AGE_RESTRICTED");
    assert_eq!(
        details,
        json!({ "product_id": "beer", "min_age": 18, "age_flag": "under_18" }),
    );
    assert_eq!(l.balance(&teen).await, 5_000 - 300 - 350, "nothing charged");
    // A stored decline: the same request again gets the same answer, and moves nothing.
    let again = l.post("/v1/orders", &l.bar_token, &body).await;
    again.assert_error(422, "AGE_RESTRICTED");
    assert!(again.replayed());
    assert_eq!(
        l.query_i64(&format!(
            "SELECT COUNT(*) FROM postings WHERE account = 'card:{teen}'"
        )),
        3,
        "the top-up and two orders"
    );
    let decline_logs = l.query_i64(&format!(
        "SELECT COUNT(*) FROM app_transaction_log
          WHERE card_uid = '{teen}' AND error_code = 'AGE_RESTRICTED'"
    ));
    assert_eq!(decline_logs, 1, "logged once, when decided");
    drop(before);

    // Under 16: neither shandy (16) nor beer (18).
    for (product, price, min_age) in [("shandy", 350, 16), ("beer", 450, 18)] {
        let (_, resp) = order(&l, &child, &[(product, 1, price)], "online").await;
        let details = resp.assert_error(422, "AGE_RESTRICTED");
        assert_eq!(details["min_age"], min_age, "{details}");
        assert_eq!(details["age_flag"], "under_16", "{details}");
    }
    assert_eq!(l.balance(&child).await, 5_000);

    // The desk clears the flag (a mistaken entry): beer is sold.
    assert_success("card flag --none", &flag_card(&l, &teen, None));
    order(&l, &teen, &[("beer", 1, 450)], "online")
        .await
        .1
        .assert_status(201);

    // The flags are in the audit trail: the top-up's, and the desk's two changes.
    let details = l.query_json(&format!(
        "SELECT operation, details FROM app_transaction_log
          WHERE card_uid IN ('{teen}', '{child}')
            AND operation IN ('recharge', 'card_age_flag') ORDER BY log_id"
    ));
    let flags: Vec<(String, Value)> = details
        .iter()
        .map(|r| {
            let d: Value = match &r["details"] {
                Value::String(s) => serde_json::from_str(s).unwrap(),
                other => other.clone(),
            };
            (
                r["operation"].as_str().unwrap().to_owned(),
                d["age_flag"].clone(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("recharge".to_owned(), json!("under_18")),
            ("recharge".to_owned(), Value::Null),
            ("card_age_flag".to_owned(), json!("under_16")),
            ("card_age_flag".to_owned(), Value::Null),
        ]
    );
    l.assert_audit_ok();
}

async fn an_offline_order_of_a_restricted_product_is_applied_and_flagged(backend: Backend) {
    let l = festival(backend).await;
    let teen = uid(3);
    topup_flagged(&l, &teen, 2_000, "under_18")
        .await
        .assert_status(201);
    // The terminal sold it offline before the feed told it of the flag: the beer is gone,
    // so the ledger records the sale, and says what happened.
    let (_, resp) = order(&l, &teen, &[("beer", 1, 450)], "offline").await;
    resp.assert_status(201);
    assert_eq!(
        resp.body["flags"],
        json!(["AGE_RESTRICTED"]),
        "{}",
        resp.body
    );
    assert_eq!(l.balance(&teen).await, 1_550);
    let stored = l.query_json(&format!(
        "SELECT flags FROM bar_orders WHERE card_uid = '{teen}'"
    ));
    assert!(
        stored[0]["flags"].to_string().contains("AGE_RESTRICTED"),
        "{stored:?}"
    );
    l.assert_audit_ok();
}

/// The whole card feed from the beginning.
async fn feed(l: &Ledger) -> Vec<Value> {
    let page = l
        .get("/v1/cards?since=&limit=100", Some(&l.bar_token))
        .await;
    page.assert_status(200);
    page.body["cards"].as_array().unwrap().clone()
}

async fn the_flag_reaches_terminals_through_the_card_feed(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(4);
    l.fund(&card, 1_000).await;
    let first = feed(&l).await;
    let entry = first
        .iter()
        .find(|c| c["card_uid"] == card.as_str())
        .unwrap();
    assert_eq!(entry["age_flag"], Value::Null, "{entry}");
    let version = entry["version"].as_i64().unwrap();

    assert_success("card flag", &flag_card(&l, &card, Some("18")));
    let second = feed(&l).await;
    let entry = second
        .iter()
        .find(|c| c["card_uid"] == card.as_str())
        .unwrap();
    assert_eq!(entry["age_flag"], "under_18", "{entry}");
    assert!(
        entry["version"].as_i64().unwrap() > version,
        "a flag is a change terminals must pull: {entry}"
    );
    let card_view = l.card(&card).await;
    card_view.assert_status(200);
    assert_eq!(card_view.body["age_flag"], "under_18");
    assert_eq!(
        card_view.body["balance_cents"], 1_000,
        "the flag moves no money"
    );
}

async fn a_flag_for_an_unknown_card_or_age_is_refused_and_changes_nothing(backend: Backend) {
    let l = festival(backend).await;
    let before = l.db_fingerprint();
    let out = flag_card(&l, &uid(5), Some("18"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&uid(5)) && stderr.contains("unknown"),
        "{stderr}"
    );
    for bad in [
        vec!["card", "flag", "--uid", "04A1B2C3", "--under", "21"],
        vec!["card", "flag", "--uid", "04A1B2C3"],
        vec![
            "card", "flag", "--uid", "04A1B2C3", "--under", "18", "--none",
        ],
    ] {
        let out = l.admin(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    // A top-up naming an age flag that does not exist is a 400 on its field.
    let mut body = recharge_body(&uid(5), l.seq(&l.checkpoint_token), 500, "cash", "online");
    body["age_flag"] = json!("under_21");
    l.post("/v1/recharges", &l.checkpoint_token, &body)
        .await
        .assert_error(400, "INVALID_REQUEST");
    assert_eq!(l.db_fingerprint(), before);
}

async fn open_prices_at_and_beyond_their_bound(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(6);
    l.fund(&card, 10_000).await;
    // At the bounds: 1 cent and the maximum, and twice the maximum in one line of two.
    for (price, quantity) in [(1, 1), (1_000, 1), (1_000, 2)] {
        let (_, resp) = order(&l, &card, &[("tip", quantity, price)], "online").await;
        resp.assert_status(201);
    }
    assert_eq!(l.balance(&card).await, 10_000 - 1 - 1_000 - 2_000);
    // Beyond them: declined with the maximum, nothing charged. (A tip of 0 goes with a
    // lemonade: an order of 0 cents is refused before any product is looked at.)
    for price in [1_001, 0] {
        let items = [("tip", 1, price), ("lemonade", 1, 300)];
        let (_, resp) = order(&l, &card, &items, "online").await;
        let details = resp.assert_error(422, "PRICE_MISMATCH");
        assert_eq!(
            details,
            json!({ "product_id": "tip", "open_price_max_cents": 1000, "unit_price_cents": price }),
        );
    }
    assert_eq!(l.balance(&card).await, 6_999);
    // Offline, beyond the bound: applied, flagged, the line recording the maximum.
    let (body, resp) = order(&l, &card, &[("tip", 1, 1_500)], "offline").await;
    resp.assert_status(201);
    assert_eq!(
        resp.body["flags"],
        json!(["PRICE_DIFFERS_FROM_CATALOG"]),
        "{}",
        resp.body
    );
    let line = l.query_json(&format!(
        "SELECT i.unit_price_cents, i.catalog_price_cents, i.tax_rate, i.net_cents, i.tax_cents
           FROM bar_order_items i JOIN bar_orders o ON o.transaction_id = i.transaction_id
          WHERE o.client_request_id = '{}'",
        crid(&body)
    ));
    assert_eq!(line[0]["unit_price_cents"], 1_500);
    assert_eq!(line[0]["catalog_price_cents"], 1_000);
    assert_eq!(
        (
            &line[0]["tax_rate"],
            &line[0]["net_cents"],
            &line[0]["tax_cents"]
        ),
        (&json!("none"), &json!(1_500), &json!(0))
    );
    // Within the bound a line records no catalog price: the typed one is the price.
    assert_eq!(
        l.query_i64(
            "SELECT COUNT(*) FROM bar_order_items
              WHERE product_id = 'tip' AND catalog_price_cents IS NULL"
        ),
        3
    );
    l.assert_audit_ok();
}

async fn the_catalog_shows_ages_and_open_prices(backend: Backend) {
    let l = festival(backend).await;
    let catalog = l.get("/v1/catalog", Some(&l.bar_token)).await;
    catalog.assert_status(200);
    let products = catalog.body["products"].as_array().unwrap().clone();
    let of = |id: &str| {
        products
            .iter()
            .find(|p| p["product_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            of("beer")["min_age"].clone(),
            of("beer")["open_price_max_cents"].clone()
        ),
        (json!(18), Value::Null)
    );
    assert_eq!(of("shandy")["min_age"], 16);
    assert_eq!(of("lemonade")["min_age"], Value::Null);
    assert_eq!(
        (
            of("tip")["price_cents"].clone(),
            of("tip")["open_price_max_cents"].clone()
        ),
        (json!(0), json!(1000))
    );
}

async fn product_add_refuses_a_bad_age_or_price_and_changes_nothing(backend: Backend) {
    let l = festival(backend).await;
    let before = l.db_fingerprint();
    let base = [
        "product",
        "add",
        "--id",
        "x",
        "--name",
        "X",
        "--point-of-sale",
        BAR_POS,
    ];
    for (extra, says) in [
        (vec!["--price-cents", "100", "--min-age", "17"], "16 or 18"),
        (vec!["--open-price-max-cents", "0"], "open_price_max_cents"),
        (
            vec!["--open-price-max-cents", "1000001"],
            "open_price_max_cents",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let out = l.admin(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Both a price and an open price, or neither: the command line says so.
    for extra in [
        vec!["--price-cents", "100", "--open-price-max-cents", "500"],
        vec![],
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        assert_eq!(l.admin(&args).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(l.db_fingerprint(), before);
}

on_both_backends! {
    a_flagged_card_is_refused_a_restricted_product_online_and_nothing_moves,
    an_offline_order_of_a_restricted_product_is_applied_and_flagged,
    the_flag_reaches_terminals_through_the_card_feed,
    a_flag_for_an_unknown_card_or_age_is_refused_and_changes_nothing,
    open_prices_at_and_beyond_their_bound,
    the_catalog_shows_ages_and_open_prices,
    product_add_refuses_a_bad_age_or_price_and_changes_nothing,
}
