//! VAT (issue 13), black-box on both backends: a real `cashless ledger serve` configured
//! with `[taxes]`, products registered through the admin CLI with their rates, orders over
//! HTTP. Each order line must record the rate it was sold at and its gross split into net
//! and tax (per line, half away from zero), the postings must credit each rate's net and
//! tax to its own accounts, a void must reverse them exactly, and the catalog must show each
//! product's rate. The expected splits are written out by hand in [`CASES`], not computed
//! by the code under test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

const CONFIG: &str = r#"
[limits]
recharge_max_cents = 50000
balance_max_cents = 100000

[taxes]
rates_basis_points = { standard = 1900, reduced = 700, twenty = 2000, none = 0, food_to_go = 700, foodstall = 1000 }
default_rate = "standard"
"#;

/// A product of the table: its id, price, `--tax-rate` (`None`: left out, the default).
struct Case {
    id: &'static str,
    price_cents: i64,
    tax_rate: Option<&'static str>,
    quantity: i64,
    /// The rate the line must record, its basis points, and its net and tax in cents.
    expected: (&'static str, i64, i64, i64),
}

/// Prices and rates whose splits are known: at 20 % the tax is gross / 6, so 3, 9 and 15
/// cents are exact half cents and round up; 2 cents rounds down. A line is split on its
/// gross, not per unit: three 3-cent items are 9 cents, tax 2 (three units alone would be
/// 1 each, 3). `food_to_go` sorts before `foodstall` byte by byte ('_' < 's') but after it
/// in a language's collation, which ignores the '_': the postings must follow byte order on
/// both backends.
const CASES: &[Case] = &[
    Case {
        id: "beer",
        price_cents: 450,
        tax_rate: Some("standard"),
        quantity: 1,
        expected: ("standard", 1900, 378, 72),
    },
    Case {
        id: "fries",
        price_cents: 450,
        tax_rate: Some("reduced"),
        quantity: 1,
        expected: ("reduced", 700, 421, 29),
    },
    Case {
        id: "cake",
        price_cents: 107,
        tax_rate: Some("reduced"),
        quantity: 1,
        expected: ("reduced", 700, 100, 7),
    },
    Case {
        id: "gum",
        price_cents: 3,
        tax_rate: Some("twenty"),
        quantity: 1,
        expected: ("twenty", 2000, 2, 1),
    },
    Case {
        id: "gum3",
        price_cents: 3,
        tax_rate: Some("twenty"),
        quantity: 3,
        expected: ("twenty", 2000, 7, 2),
    },
    Case {
        id: "mint",
        price_cents: 15,
        tax_rate: Some("twenty"),
        quantity: 1,
        expected: ("twenty", 2000, 12, 3),
    },
    Case {
        id: "tiny",
        price_cents: 2,
        tax_rate: Some("twenty"),
        quantity: 1,
        expected: ("twenty", 2000, 2, 0),
    },
    Case {
        id: "token",
        price_cents: 500,
        tax_rate: Some("none"),
        quantity: 2,
        expected: ("none", 0, 1000, 0),
    },
    Case {
        id: "house",
        price_cents: 119,
        tax_rate: None,
        quantity: 1,
        expected: ("standard", 1900, 100, 19),
    },
    Case {
        id: "water",
        price_cents: 0,
        tax_rate: Some("standard"),
        quantity: 1,
        expected: ("standard", 1900, 0, 0),
    },
    Case {
        id: "wrap",
        price_cents: 500,
        tax_rate: Some("food_to_go"),
        quantity: 1,
        expected: ("food_to_go", 700, 467, 33),
    },
    Case {
        id: "crepe",
        price_cents: 550,
        tax_rate: Some("foodstall"),
        quantity: 1,
        expected: ("foodstall", 1000, 500, 50),
    },
];

/// A ledger with `[taxes]` and every product of [`CASES`] at the bar's point of sale.
async fn taxed_ledger(backend: Backend) -> Ledger {
    let l = Ledger::start_with_config_on(backend, CONFIG).await;
    for c in CASES {
        let price = c.price_cents.to_string();
        let mut args = vec![
            "product",
            "add",
            "--id",
            c.id,
            "--name",
            c.id,
            "--price-cents",
            &price,
            "--point-of-sale",
            BAR_POS,
        ];
        if let Some(rate) = c.tax_rate {
            args.extend(["--tax-rate", rate]);
        }
        assert_success("product add", &l.admin(&args));
    }
    l
}

/// An order of the lines of `cases` on `card`, approved.
async fn sell(l: &Ledger, card: &str, cases: &[&Case]) -> Value {
    let items: Vec<(&str, i64, i64)> = cases
        .iter()
        .map(|c| (c.id, c.quantity, c.price_cents))
        .collect();
    let body = order_body(card, l.seq(&l.bar_token), &items, "online");
    l.post("/v1/orders", &l.bar_token, &body)
        .await
        .assert_status(201);
    body
}

/// The postings of one transaction, in the order they were written.
fn postings_of(l: &Ledger, transaction_id: &str) -> Vec<(String, i64)> {
    l.query_json(&format!(
        "SELECT account, amount_cents FROM postings WHERE transaction_id = '{transaction_id}'
          ORDER BY posting_id"
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

fn transaction_of(l: &Ledger, client_request_id: &str) -> String {
    let rows = l.query_json(&format!(
        "SELECT transaction_id FROM bar_orders WHERE client_request_id = '{client_request_id}'"
    ));
    rows[0]["transaction_id"].as_str().unwrap().to_owned()
}

async fn each_line_records_its_rate_net_and_tax_and_the_postings_split_by_rate(backend: Backend) {
    let l = taxed_ledger(backend).await;
    let card = uid(1);
    l.fund(&card, 40_000).await;
    let all: Vec<&Case> = CASES.iter().collect();
    let body = sell(&l, &card, &all).await;
    let tx = transaction_of(&l, &crid(&body));

    // Every line, as the table says.
    let lines = l.query_json(&format!(
        "SELECT product_id, line_total_cents, tax_rate, tax_rate_basis_points, net_cents, tax_cents
           FROM bar_order_items WHERE transaction_id = '{tx}' ORDER BY line_no"
    ));
    assert_eq!(lines.len(), CASES.len());
    for (line, c) in lines.iter().zip(CASES) {
        let (rate, bp, net, tax) = c.expected;
        assert_eq!(line["product_id"], c.id);
        assert_eq!(line["tax_rate"], rate, "{line}");
        assert_eq!(line["tax_rate_basis_points"], bp, "{line}");
        assert_eq!(line["net_cents"], net, "{line}");
        assert_eq!(line["tax_cents"], tax, "{line}");
        assert_eq!(
            line["line_total_cents"],
            c.price_cents * c.quantity,
            "{line}"
        );
    }

    // The postings: the card's, then per rate in byte order its net, then its tax; no
    // posting of zero.
    let mut by_rate: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for c in CASES {
        let sums = by_rate.entry(c.expected.0).or_default();
        sums.0 += c.expected.2;
        sums.1 += c.expected.3;
    }
    let total: i64 = CASES.iter().map(|c| c.price_cents * c.quantity).sum();
    let mut expected = vec![(format!("card:{card}"), -total)];
    for (rate, (net, tax)) in &by_rate {
        if *net != 0 {
            expected.push((format!("revenue:{BAR_POS}:{rate}"), *net));
        }
        if *tax != 0 {
            expected.push((format!("vat:{rate}"), *tax));
        }
    }
    assert_eq!(
        expected,
        [
            (format!("card:{card}"), -3_205),
            (format!("revenue:{BAR_POS}:food_to_go"), 467),
            ("vat:food_to_go".to_owned(), 33),
            (format!("revenue:{BAR_POS}:foodstall"), 500),
            ("vat:foodstall".to_owned(), 50),
            (format!("revenue:{BAR_POS}:none"), 1_000),
            (format!("revenue:{BAR_POS}:reduced"), 521),
            ("vat:reduced".to_owned(), 36),
            (format!("revenue:{BAR_POS}:standard"), 478),
            ("vat:standard".to_owned(), 91),
            (format!("revenue:{BAR_POS}:twenty"), 23),
            ("vat:twenty".to_owned(), 6),
        ],
        "the table's own sums"
    );
    assert_eq!(postings_of(&l, &tx), expected);

    // What an accountant's report per rate adds up from the lines equals the postings.
    for (rate, (net, tax)) in &by_rate {
        let sum = |column: &str| {
            l.query_i64(&format!(
                "SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM bar_order_items
                  WHERE tax_rate = '{rate}'"
            ))
        };
        assert_eq!((sum("net_cents"), sum("tax_cents")), (*net, *tax), "{rate}");
    }
    l.assert_audit_ok();
}

async fn a_void_reverses_every_posting_of_the_order(backend: Backend) {
    let l = taxed_ledger(backend).await;
    let card = uid(2);
    l.fund(&card, 10_000).await;
    let body = sell(&l, &card, &[&CASES[0], &CASES[1], &CASES[4]]).await;
    let tx = transaction_of(&l, &crid(&body));
    let sold = postings_of(&l, &tx);
    assert_eq!(
        sold.len(),
        7,
        "card, then net and tax of three rates: {sold:?}"
    );

    let void = void_body(
        &crid(&body),
        l.seq(&l.bar_token),
        "customer_refund",
        BAR_STAFF,
    );
    let answer = l.post("/v1/voids", &l.bar_token, &void).await;
    answer.assert_status(201);
    let void_tx = answer.body["transaction_id"].as_str().unwrap().to_owned();
    let reversed: Vec<(String, i64)> = sold.iter().map(|(a, c)| (a.clone(), -c)).collect();
    assert_eq!(postings_of(&l, &void_tx), reversed);
    assert_eq!(l.balance(&card).await, 10_000);
    assert_eq!(
        l.query_i64(
            "SELECT COUNT(*) FROM (SELECT account FROM postings WHERE account LIKE 'vat:%'
               GROUP BY account HAVING SUM(amount_cents) <> 0) AS open_accounts"
        ),
        0,
        "nothing owed after the void"
    );
    l.assert_audit_ok();
}

async fn the_catalog_shows_each_products_rate(backend: Backend) {
    let l = taxed_ledger(backend).await;
    let catalog = l.get("/v1/catalog", Some(&l.bar_token)).await;
    catalog.assert_status(200);
    let products = catalog.body["products"].as_array().unwrap().clone();
    for c in CASES {
        let p = products
            .iter()
            .find(|p| p["product_id"] == c.id)
            .unwrap_or_else(|| panic!("{} missing from {products:?}", c.id));
        assert_eq!(p["tax_rate"], c.expected.0, "{p}");
        assert_eq!(p["tax_rate_basis_points"], c.expected.1, "{p}");
    }
}

async fn an_unknown_rate_is_refused_and_changes_nothing(backend: Backend) {
    let l = taxed_ledger(backend).await;
    let before = l.db_fingerprint();
    let out = l.admin(&[
        "product",
        "add",
        "--id",
        "champagne",
        "--name",
        "Champagne",
        "--price-cents",
        "9900",
        "--point-of-sale",
        BAR_POS,
        "--tax-rate",
        "luxury",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tax_rate luxury") && stderr.contains("[taxes]"),
        "{stderr}"
    );
    assert_eq!(l.db_fingerprint(), before);
}

async fn an_offline_order_of_a_product_not_on_sale_is_split_at_the_default_rate(backend: Backend) {
    let l = taxed_ledger(backend).await;
    let card = uid(3);
    l.fund(&card, 1_000).await;
    // Sold offline from an old menu: the ledger takes it, at the default rate (19 %).
    let body = order_body(&card, l.seq(&l.bar_token), &[("gone", 1, 238)], "offline");
    l.post("/v1/orders", &l.bar_token, &body)
        .await
        .assert_status(201);
    let tx = transaction_of(&l, &crid(&body));
    assert_eq!(
        postings_of(&l, &tx),
        [
            (format!("card:{card}"), -238),
            (format!("revenue:{BAR_POS}:standard"), 200),
            ("vat:standard".to_owned(), 38),
        ]
    );
    l.assert_audit_ok();
}

async fn serve_refuses_a_configuration_that_lost_a_rate_products_name(backend: Backend) {
    let l = taxed_ledger(backend).await;
    // The same festival, with `reduced` gone from [taxes]: fries and cake name it.
    let config = l.dir.path().join("without-reduced.toml");
    std::fs::write(&config, CONFIG.replace("reduced = 700, ", "")).unwrap();
    let out = tokio::task::spawn_blocking({
        let database = l.database_url();
        move || {
            std::process::Command::new(BIN)
                .args(["ledger", "--config"])
                .arg(&config)
                .args(["--database", &database, "serve", "--listen", "127.0.0.1:0"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tax rate(s) reduced") && stderr.contains("[taxes]"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "it never listened"
    );
}

/// An order as the ledger wrote it before VAT: its line without rate, net or tax, and its
/// postings `card:<UID>` −total and `revenue:<point of sale>` +total. Written here in SQL,
/// row by row as that code wrote them (the card's balance included), since no program of
/// this version writes such an order any more. Returns its `client_request_id`.
fn write_an_order_from_before_vat(l: &Ledger, card: &str, seq: i64, cents: i64) -> String {
    let crid = new_id();
    let tx = "01900000-0000-7000-8000-0000000000aa";
    let at = "2026-07-01T20:00:00.000Z";
    let bar = "(SELECT terminal_id FROM terminals WHERE name = 'bar-1')";
    for sql in [
        format!(
            "INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq,
                 point_of_sale, card_uid, staff_id, total_cents, mode, flags,
                 previous_balance_cents, new_balance_cents, created_at, processed_at)
             SELECT '{tx}', '{crid}', {bar}, {seq}, '{BAR_POS}', '{card}', '{BAR_STAFF}', {cents},
                    'online', '[]', balance_cents, balance_cents - {cents}, '{at}', '{at}'
               FROM cards WHERE card_uid = '{card}'"
        ),
        format!(
            "INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity,
                 unit_price_cents, catalog_price_cents, line_total_cents)
             VALUES ('{tx}', 0, 'beer', 1, {cents}, NULL, {cents})"
        ),
        format!(
            "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
             VALUES ('{tx}', 'card:{card}', -{cents}, '{at}')"
        ),
        format!(
            "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
             VALUES ('{tx}', 'revenue:{BAR_POS}', {cents}, '{at}')"
        ),
        format!(
            "UPDATE cards SET balance_cents = balance_cents - {cents} WHERE card_uid = '{card}'"
        ),
        format!(
            "INSERT INTO idempotency_keys (client_request_id, terminal_id, operation,
                 request_sha256, status_code, response_body, transaction_id, created_at,
                 expires_at)
             VALUES ('{crid}', {bar}, 'order', 'written-before-vat', 201, '{{}}', '{tx}', '{at}',
                     NULL)"
        ),
    ] {
        assert_eq!(l.execute(&sql), 1, "{sql}");
    }
    crid
}

async fn a_void_reverses_an_order_written_before_vat_as_it_was_written(backend: Backend) {
    let l = taxed_ledger(backend).await;
    let card = uid(4);
    l.fund(&card, 1_000).await;
    let crid = write_an_order_from_before_vat(&l, &card, l.seq(&l.bar_token), 450);
    assert_eq!(l.balance(&card).await, 550);
    l.assert_audit_ok();

    let void = void_body(&crid, l.seq(&l.bar_token), "staff_error", BAR_STAFF);
    let answer = l.post("/v1/voids", &l.bar_token, &void).await;
    answer.assert_status(201);
    assert_eq!(answer.body["status"], "voided", "{}", answer.body);
    assert_eq!(answer.body["refunded_cents"], 450);
    let void_tx = answer.body["transaction_id"].as_str().unwrap().to_owned();
    assert_eq!(
        postings_of(&l, &void_tx),
        [
            (format!("card:{card}"), 450),
            (format!("revenue:{BAR_POS}"), -450),
        ],
        "the old accounts, reversed; no VAT account appears"
    );
    assert_eq!(l.balance(&card).await, 1_000);
    l.assert_audit_ok();
}

on_both_backends! {
    a_void_reverses_an_order_written_before_vat_as_it_was_written,
    serve_refuses_a_configuration_that_lost_a_rate_products_name,
    each_line_records_its_rate_net_and_tax_and_the_postings_split_by_rate,
    a_void_reverses_every_posting_of_the_order,
    the_catalog_shows_each_products_rate,
    an_unknown_rate_is_refused_and_changes_nothing,
    an_offline_order_of_a_product_not_on_sale_is_split_at_the_default_rate,
}
