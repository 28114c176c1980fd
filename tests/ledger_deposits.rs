//! Deposits on returnable items (issue 13), black-box on both backends: a real `cashless
//! ledger serve`, a cup registered as a returnable item and a beer that comes in it through
//! the admin CLI, orders and deposit returns over HTTP, the deposit report and the audit
//! through the CLI.
//!
//! A cup's line in an order is a deposit: no revenue, no VAT, its money on the `deposits`
//! liability account. A return credits the cups' deposits back to a card, once per
//! `client_request_id` however often it is sent; a void reverses it. Online, the ledger
//! takes back only returnable items at their deposit; offline, it applies what the terminal
//! credited and flags what differs. Return stations are a terminal kind of their own: they
//! take cups back and do nothing else. The expected amounts are worked out by hand.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[limits]
recharge_max_cents = 50000
balance_max_cents = 10000

[taxes]
rates_basis_points = { standard = 1900, none = 0 }
default_rate = "standard"
"#;

const CUP_CENTS: i64 = 200;
const BEER: i64 = 450;

/// A cup (returnable, 2.00, no VAT rate named: its rate does not matter) and a beer that
/// comes in it, at the bars' point of sale.
async fn festival(backend: Backend) -> Ledger {
    let l = Ledger::start_with_config_on(backend, CONFIG).await;
    let cup = CUP_CENTS.to_string();
    let beer = BEER.to_string();
    for args in [
        vec!["--id", "cup", "--price-cents", &cup, "--returnable"],
        vec!["--id", "beer", "--price-cents", &beer, "--deposit", "cup"],
    ] {
        let mut all = vec![
            "product",
            "add",
            "--name",
            "A thing",
            "--point-of-sale",
            BAR_POS,
        ];
        all.extend(args);
        assert_success("product add", &l.admin(&all));
    }
    l
}

async fn give_back(l: &Ledger, token: &str, card: &str, cups: i64, mode: &str) -> (Value, Resp) {
    let body = return_body(card, l.seq(token), &[("cup", cups, CUP_CENTS)], mode);
    let resp = l.post("/v1/returns", token, &body).await;
    (body, resp)
}

/// The postings of the operation whose key `body` carries, in order.
fn postings(l: &Ledger, table: &str, body: &Value) -> Vec<(String, i64)> {
    l.query_json(&format!(
        "SELECT p.account, p.amount_cents FROM postings p
           JOIN {table} o ON o.transaction_id = p.transaction_id
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

fn deposits_account(l: &Ledger) -> i64 {
    l.query_i64("SELECT COALESCE(SUM(amount_cents), 0) FROM postings WHERE account = 'deposits'")
}

/// `cashless ledger deposits`, its lines split into words.
fn report(l: &Ledger) -> Vec<Vec<String>> {
    let stdout = assert_success("deposits", &l.admin(&["deposits"]));
    stdout
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

async fn deposits_go_out_with_orders_and_come_back_in_returns(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(1);
    l.fund(&card, 5_000).await;

    // Three beers and their three cups: 1350 + 600. The beers' gross is split at 19 %
    // (1350 × 19 / 119 = 215.5… → 216 tax, 1134 net); the cups' 600 is a deposit.
    let items = [("beer", 3, BEER), ("cup", 3, CUP_CENTS)];
    let order = order_body(&card, l.seq(&l.bar_token), &items, "online");
    let resp = l.post("/v1/orders", &l.bar_token, &order).await;
    resp.assert_status(201);
    assert_eq!(resp.body["total_cents"], 1_950, "{}", resp.body);
    assert_eq!(resp.body["new_balance_cents"], 5_000 - 1_950);
    assert_eq!(
        postings(&l, "bar_orders", &order),
        vec![
            (format!("card:{card}"), -1_950),
            (format!("revenue:{BAR_POS}:standard"), 1_134),
            ("vat:standard".to_owned(), 216),
            ("deposits".to_owned(), 600),
        ]
    );
    let cup_line = l.query_json(&format!(
        "SELECT i.net_cents, i.tax_cents, i.line_total_cents FROM bar_order_items i
           JOIN bar_orders o ON o.transaction_id = i.transaction_id
          WHERE o.client_request_id = '{}' AND i.product_id = 'cup'",
        crid(&order)
    ));
    assert_eq!(
        (
            &cup_line[0]["net_cents"],
            &cup_line[0]["tax_cents"],
            &cup_line[0]["line_total_cents"]
        ),
        (&json!(0), &json!(0), &json!(600))
    );

    // Two cups come back: 400 onto the card, off the deposits.
    let (back, resp) = give_back(&l, &l.bar_token, &card, 2, "online").await;
    resp.assert_status(201);
    assert_eq!(
        (
            &resp.body["amount_cents"],
            &resp.body["previous_balance_cents"],
            &resp.body["new_balance_cents"],
            &resp.body["flags"],
        ),
        (&json!(400), &json!(3_050), &json!(3_450), &json!([])),
        "{}",
        resp.body
    );
    assert!(resp.body.get("total_cents").is_none(), "{}", resp.body);
    assert_eq!(
        postings(&l, "deposit_returns", &back),
        vec![(format!("card:{card}"), 400), ("deposits".to_owned(), -400)]
    );
    assert_eq!(deposits_account(&l), 200);

    // The report: 3 out, 2 back, 1 still out, 2.00 owed; the account agrees.
    let lines = report(&l);
    let cup = lines
        .iter()
        .find(|w| w.first().map(String::as_str) == Some("cup"))
        .unwrap_or_else(|| panic!("no cup in the report: {lines:?}"));
    assert_eq!(
        cup[1..],
        ["3", "2", "1", "6.00", "4.00", "2.00"],
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|w| w.join(" ") == "deposits account: 2.00 owed back"),
        "{lines:?}"
    );
    l.assert_audit_ok();
}

async fn a_return_sent_twice_is_credited_once(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(2);
    l.fund(&card, 1_000).await;
    let (body, first) = give_back(&l, &l.bar_token, &card, 3, "offline").await;
    first.assert_status(201);
    // Again alone, and again inside a batch: the stored answer, nothing moves.
    let again = l.post("/v1/returns", &l.bar_token, &body).await;
    again.assert_status(201);
    assert_eq!(again.raw, first.raw);
    let mut entry = body.clone();
    entry["type"] = json!("return");
    let batch = l
        .post("/v1/batch", &l.bar_token, &json!({"operations": [entry]}))
        .await;
    batch.assert_status(200);
    assert_eq!(batch.body["results"][0]["status"], 201);
    assert_eq!(batch.body["results"][0]["body"], first.body);
    assert_eq!(l.balance(&card).await, 1_000 + 600);
    assert_eq!(
        l.query_i64(&format!(
            "SELECT COUNT(*) FROM deposit_returns WHERE client_request_id = '{}'",
            crid(&body)
        )),
        1
    );
    // The same key for other cups is another request.
    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(1);
    other["amount_cents"] = json!(CUP_CENTS);
    l.post("/v1/returns", &l.bar_token, &other)
        .await
        .assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(l.balance(&card).await, 1_600);
    l.assert_audit_ok();
}

async fn online_the_ledger_takes_back_only_its_cups_and_offline_what_the_terminal_credited(
    backend: Backend,
) {
    let l = festival(backend).await;
    let card = uid(3);
    l.fund(&card, 1_000).await;
    let seq = |l: &Ledger| l.seq(&l.bar_token);

    // A beer is not returnable; a cup at another deposit is not this festival's.
    let beer_back = return_body(&card, seq(&l), &[("beer", 1, BEER)], "online");
    let details = l
        .post("/v1/returns", &l.bar_token, &beer_back)
        .await
        .assert_error(422, "UNKNOWN_PRODUCT");
    assert_eq!(details["product_id"], "beer");
    let cheap = return_body(&card, seq(&l), &[("cup", 2, 150)], "online");
    let details = l
        .post("/v1/returns", &l.bar_token, &cheap)
        .await
        .assert_error(422, "PRICE_MISMATCH");
    assert_eq!(
        (
            &details["catalog_price_cents"],
            &details["unit_deposit_cents"]
        ),
        (&json!(CUP_CENTS), &json!(150))
    );
    // Past the balance maximum (100.00): declined online, the card unchanged.
    let rich = uid(4);
    l.fund(&rich, 9_900).await;
    let (_, resp) = give_back(&l, &l.bar_token, &rich, 1, "online").await;
    let details = resp.assert_error(422, "LIMIT_EXCEEDED");
    assert_eq!(details["limit"], "balance_max_cents");
    assert_eq!(l.balance(&rich).await, 9_900);
    // A card blocked as lost gets nothing online.
    let lost = uid(5);
    l.fund(&lost, 100).await;
    assert_success("card block", &l.admin(&["card", "block", "--uid", &lost]));
    let (_, resp) = give_back(&l, &l.bar_token, &lost, 1, "online").await;
    resp.assert_error(423, "CARD_BLOCKED");
    assert_eq!(l.balance(&lost).await, 100);

    // Offline, the terminal already credited: applied as it says, differences flagged.
    let offline = return_body(
        &card,
        seq(&l),
        &[("cup", 2, 150), ("beer", 1, BEER)],
        "offline",
    );
    let resp = l.post("/v1/returns", &l.bar_token, &offline).await;
    resp.assert_status(201);
    assert_eq!(resp.body["amount_cents"], 300 + BEER);
    assert_eq!(resp.body["flags"], json!(["PRICE_DIFFERS_FROM_CATALOG"]));
    let recorded: Vec<Value> = l
        .query_json(&format!(
            "SELECT i.product_id, i.catalog_deposit_cents FROM deposit_return_items i
               JOIN deposit_returns r ON r.transaction_id = i.transaction_id
              WHERE r.client_request_id = '{}' ORDER BY i.line_no",
            crid(&offline)
        ))
        .into_iter()
        .map(|r| json!([r["product_id"], r["catalog_deposit_cents"]]))
        .collect();
    assert_eq!(
        recorded,
        vec![json!(["cup", CUP_CENTS]), json!(["beer", 0])]
    );
    let (_, resp) = give_back(&l, &l.bar_token, &rich, 1, "offline").await;
    resp.assert_status(201);
    assert_eq!(resp.body["flags"], json!(["LIMIT_EXCEEDED"]));
    assert_eq!(l.balance(&rich).await, 9_900 + CUP_CENTS);
    // A card never seen is created by a return.
    let stranger = uid(6);
    let (_, resp) = give_back(&l, &l.bar_token, &stranger, 1, "online").await;
    resp.assert_status(201);
    assert_eq!(resp.body["flags"], json!(["CARD_CREATED"]));
    l.assert_audit_ok();
}

async fn return_stations_take_cups_back_and_nothing_else(backend: Backend) {
    let l = festival(backend).await;
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
    let card = uid(7);
    l.fund(&card, 1_000).await;
    let (_, resp) = give_back(&l, &station, &card, 1, "online").await;
    resp.assert_status(201);
    assert_eq!(resp.body["new_balance_cents"], 1_000 + CUP_CENTS);
    let me = l.get("/v1/terminals/me", Some(&station)).await;
    me.assert_status(200);
    assert_eq!(me.body["kind"], "return", "{}", me.body);

    let before = l.db_fingerprint();
    let sell = order_body(&card, l.seq(&station), &[("beer", 1, BEER)], "online");
    let resp = l.post("/v1/orders", &station, &sell).await;
    resp.assert_error(403, "FORBIDDEN");
    assert_eq!(
        resp.body["error"]["message"],
        "a return station cannot sell"
    );
    let top_up = recharge_body(&card, l.seq(&station), 1_000, "cash", "online");
    let resp = l.post("/v1/recharges", &station, &top_up).await;
    resp.assert_error(403, "FORBIDDEN");
    assert_eq!(
        resp.body["error"]["message"],
        "a return station cannot top up cards"
    );
    let cups = return_body(&card, 1, &[("cup", 1, CUP_CENTS)], "online");
    let resp = l.post("/v1/returns", &l.checkpoint_token, &cups).await;
    resp.assert_error(403, "FORBIDDEN");
    assert_eq!(
        resp.body["error"]["message"],
        "a checkpoint terminal cannot take returnable items back"
    );
    // A cashier may not take cups back, even at a bar.
    let mut by_cashier = return_body(
        &card,
        l.seq(&l.bar_token),
        &[("cup", 1, CUP_CENTS)],
        "online",
    );
    by_cashier["staff_id"] = json!(CASH_STAFF);
    l.post("/v1/returns", &l.bar_token, &by_cashier)
        .await
        .assert_error(403, "FORBIDDEN");
    assert_eq!(l.db_fingerprint(), before);
}

async fn a_void_reverses_a_return(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(8);
    l.fund(&card, 1_000).await;
    let (back, resp) = give_back(&l, &l.bar_token, &card, 2, "online").await;
    resp.assert_status(201);
    assert_eq!(deposits_account(&l), -400);
    let void = void_body(&crid(&back), l.seq(&l.bar_token), "staff_error", BAR_STAFF);
    let resp = l.post("/v1/voids", &l.bar_token, &void).await;
    resp.assert_status(201);
    assert_eq!(
        (
            &resp.body["status"],
            &resp.body["refunded_cents"],
            &resp.body["new_balance_cents"]
        ),
        (&json!("voided"), &json!(-400), &json!(1_000)),
        "{}",
        resp.body
    );
    assert_eq!(deposits_account(&l), 0);
    // The voided return is left out of the report.
    let lines = report(&l);
    assert!(
        !lines
            .iter()
            .any(|w| w.first().map(String::as_str) == Some("cup")),
        "{lines:?}"
    );
    l.assert_audit_ok();
}

async fn bad_deposit_input_is_refused_and_changes_nothing(backend: Backend) {
    let l = festival(backend).await;
    let card = uid(9);
    l.fund(&card, 1_000).await;
    let before = l.db_fingerprint();
    let seq = l.seq(&l.bar_token);
    let good = return_body(&card, seq, &[("cup", 2, CUP_CENTS)], "online");
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut wrong_sum = good.clone();
    wrong_sum["amount_cents"] = json!(399);
    cases.push((wrong_sum, "amount_cents"));
    let mut none = good.clone();
    none["items"] = json!([]);
    cases.push((none, "items"));
    let mut eleven = good.clone();
    eleven["items"] = json!(vec![
        json!({"product_id": "cup", "quantity": 1, "unit_deposit_cents": CUP_CENTS});
        11
    ]);
    eleven["amount_cents"] = json!(11 * CUP_CENTS);
    cases.push((eleven, "items"));
    let mut zero = good.clone();
    zero["items"][0]["quantity"] = json!(0);
    cases.push((zero, "items[0].quantity"));
    let mut unknown = good.clone();
    unknown["items"][0]["deposit_cents"] = json!(1);
    cases.push((unknown, "items[0]"));
    let mut huge = good.clone();
    huge["items"][0]["unit_deposit_cents"] = json!(1_000_001);
    huge["amount_cents"] = json!(2_000_002);
    cases.push((huge, "items[0].unit_deposit_cents"));
    for (body, field) in cases {
        let details = l
            .post("/v1/returns", &l.bar_token, &body)
            .await
            .assert_error(400, "INVALID_REQUEST");
        assert!(
            details["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{field}: {details}"
        );
    }
    // A batch entry of an unknown type names the kinds it takes.
    let batch = l
        .post(
            "/v1/batch",
            &l.bar_token,
            &json!({"operations": [{"type": "refund"}]}),
        )
        .await;
    assert_eq!(
        batch.body["results"][0]["body"]["error"]["message"],
        "type: must be order, recharge, void, return or voucher_grant"
    );
    // The catalog: a returnable item with a voucher price, a deposit naming something that
    // is not returnable, or a returnable item without a price are refused.
    let product = |extra: &[&str]| {
        let mut args = vec![
            "product",
            "add",
            "--id",
            "glass",
            "--name",
            "Glass",
            "--point-of-sale",
            BAR_POS,
        ];
        args.extend(extra);
        l.admin(&args)
    };
    for (extra, says) in [
        (
            &[
                "--price-cents",
                "500",
                "--returnable",
                "--voucher-price",
                "1",
            ][..],
            "voucher_price",
        ),
        (&["--price-cents", "0", "--returnable"][..], "returnable"),
        (&["--price-cents", "500", "--deposit", "beer"][..], "beer"),
    ] {
        let out = product(extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
    assert_eq!(l.db_fingerprint(), before);
}

async fn the_catalog_feed_says_what_is_returnable_and_what_comes_in_it(backend: Backend) {
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
            &of("cup")["returnable"],
            &of("cup")["deposit_product_id"],
            &of("beer")["returnable"],
            &of("beer")["deposit_product_id"]
        ),
        (&json!(true), &Value::Null, &json!(false), &json!("cup"))
    );
}

on_both_backends! {
    deposits_go_out_with_orders_and_come_back_in_returns,
    a_return_sent_twice_is_credited_once,
    online_the_ledger_takes_back_only_its_cups_and_offline_what_the_terminal_credited,
    return_stations_take_cups_back_and_nothing_else,
    a_void_reverses_a_return,
    bad_deposit_input_is_refused_and_changes_nothing,
    the_catalog_feed_says_what_is_returnable_and_what_comes_in_it,
}
