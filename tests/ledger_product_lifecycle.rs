//! Prices that change mid-festival and products taken off sale (issue 14), on both
//! backends: `cashless ledger product list | set-price | disable | enable`.
//!
//! After a new price (happy hour) the catalog terminals fetch has it, an online sale at the
//! old price is refused (422 `PRICE_MISMATCH`), and an offline sale made at the old price
//! before a terminal learned of it lands as sold. A product off sale leaves the catalog and
//! is refused online, its offline sales still land. Every change is audited; bad input
//! changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

/// The catalog's entry for `product` at bar-1's point of sale, if on sale.
async fn catalog_entry(l: &Ledger, product: &str) -> Option<Value> {
    let resp = l.get("/v1/catalog", Some(&l.bar_token)).await;
    resp.assert_status(200);
    resp.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product_id"] == product)
        .cloned()
}

fn water(l: &Ledger, price: i64, mode: &str) -> Value {
    order_body(&uid(1), l.seq(&l.bar_token), &[("water", 1, price)], mode)
}

async fn a_new_price_holds_online_and_old_offline_sales_land_as_sold(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.fund(&uid(1), 5_000).await;
    let list = assert_success("list", &l.admin(&["product", "list"]));
    assert!(
        list.lines().any(|line| line.starts_with(BAR_POS)
            && line.contains(" water ")
            && line.contains(" 2.00 ")
            && line.contains(" yes ")),
        "{list}"
    );

    let out = assert_success(
        "set-price",
        &l.admin(&[
            "product",
            "set-price",
            "--id",
            "water",
            "--point-of-sale",
            BAR_POS,
            "--price-cents",
            "150",
        ]),
    );
    assert!(out.contains("product water at Main Bar: 1.50 EUR"), "{out}");
    assert_eq!(
        catalog_entry(&l, "water").await.unwrap()["price_cents"],
        150
    );
    l.post("/v1/orders", &l.bar_token, &water(&l, 200, "online"))
        .await
        .assert_error(422, "PRICE_MISMATCH");
    l.post("/v1/orders", &l.bar_token, &water(&l, 150, "online"))
        .await
        .assert_status(201);
    // Sold at the old price by a bar offline before it heard: lands as sold.
    let old = l
        .post("/v1/orders", &l.bar_token, &water(&l, 200, "offline"))
        .await;
    old.assert_status(201);
    assert_eq!(l.balance(&uid(1)).await, 5_000 - 150 - 200);

    // Off sale: gone from the catalog, refused online; an offline sale still lands.
    assert_success(
        "disable",
        &l.admin(&[
            "product",
            "disable",
            "--id",
            "water",
            "--point-of-sale",
            BAR_POS,
        ]),
    );
    assert!(catalog_entry(&l, "water").await.is_none());
    l.post("/v1/orders", &l.bar_token, &water(&l, 150, "online"))
        .await
        .assert_error(422, "UNKNOWN_PRODUCT");
    l.post("/v1/orders", &l.bar_token, &water(&l, 150, "offline"))
        .await
        .assert_status(201);
    let list = assert_success("list", &l.admin(&["product", "list"]));
    assert!(
        list.lines()
            .any(|line| line.contains(" water ") && line.contains(" no ")),
        "{list}"
    );
    assert_success(
        "enable",
        &l.admin(&[
            "product",
            "enable",
            "--id",
            "water",
            "--point-of-sale",
            BAR_POS,
        ]),
    );
    assert_eq!(
        catalog_entry(&l, "water").await.unwrap()["price_cents"],
        150
    );

    let ops: Vec<String> = l
        .query_json(
            "SELECT operation FROM app_transaction_log
             WHERE actor = 'admin' AND operation LIKE 'product_%' ORDER BY log_id",
        )
        .iter()
        .map(|r| r["operation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ops[ops.len() - 3..],
        ["product_set_price", "product_disable", "product_enable"]
    );
    l.assert_audit_ok();
}

async fn bad_product_changes_change_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    assert_success(
        "open price",
        &l.admin(&[
            "product",
            "add",
            "--id",
            "tip",
            "--name",
            "Tip",
            "--open-price-max-cents",
            "2000",
            "--point-of-sale",
            BAR_POS,
        ]),
    );
    assert_refused_without_change(
        &l,
        &[
            (
                vec![
                    "product",
                    "set-price",
                    "--id",
                    "nothing",
                    "--point-of-sale",
                    BAR_POS,
                    "--price-cents",
                    "100",
                ],
                1,
                "is unknown at point of sale",
            ),
            (
                vec![
                    "product",
                    "disable",
                    "--id",
                    "water",
                    "--point-of-sale",
                    "Nowhere",
                ],
                1,
                "is unknown at point of sale",
            ),
            (
                vec![
                    "product",
                    "set-price",
                    "--id",
                    "tip",
                    "--point-of-sale",
                    BAR_POS,
                    "--price-cents",
                    "100",
                ],
                1,
                "has an open price",
            ),
            (
                vec![
                    "product",
                    "set-price",
                    "--id",
                    "water",
                    "--point-of-sale",
                    BAR_POS,
                    "--price-cents",
                    "-1",
                ],
                2,
                "--price-cents",
            ),
            (
                vec![
                    "product",
                    "set-price",
                    "--id",
                    "water",
                    "--point-of-sale",
                    BAR_POS,
                ],
                2,
                "--price-cents",
            ),
        ],
    );
}

on_both_backends! {
    a_new_price_holds_online_and_old_offline_sales_land_as_sold,
    bad_product_changes_change_nothing,
}
