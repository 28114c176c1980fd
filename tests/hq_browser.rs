//! The headquarters pages in a real browser (issue 15): Debian's headless chromium driven
//! over WebDriver against a real ledger, on both backends.
//!
//! A desk operator logs in, sees a terminal that stopped reporting marked as silent, looks
//! up a card and sees an order made through the API a moment before, blocks the card and
//! the block is in the card feed; a form without its CSRF token is refused; they log out.
//! A viewer is refused a block. Bad input on each form and query parameter gets a message
//! on the page and changes nothing. Every page is checked at 1280x800 and 390x844: no
//! console errors, no sideways scroll; screenshots go to
//! `target/tmp/hq-screenshots/<test>/`.
#![allow(clippy::unwrap_used)]

mod common;

use common::browser::Browser;
use common::*;
use serde_json::json;

const DESK_PASSWORD: &str = "desk password 1";
const VIEWER_PASSWORD: &str = "viewer password 1";
const ADMIN_PASSWORD: &str = "admin password 1";

async fn log_in(b: &Browser, base: &str, name: &str, password: &str) {
    b.open(&format!("{base}/hq/login")).await;
    b.fill("#name", name).await;
    b.fill("#password", password).await;
    b.submit("#login").await;
    assert_eq!(b.path().await, "/hq/overview", "{name} did not get in");
    assert!(b.text("#who").await.starts_with(name));
}

/// A terminal status report, sent now.
async fn report_status(l: &Ledger, token: &str) {
    l.post(
        "/v1/terminals/me/status",
        token,
        &json!({
            "reported_at": now_rfc3339(), "waiting": 0, "in_doubt": 0, "rejected": 0,
            "oldest_unsent_age_s": null, "card_feed_cursor": "1",
            "reader_state": "connected", "software_version": "0.1.0"
        }),
    )
    .await
    .assert_status(200);
}

async fn the_desk_finds_blocks_and_logs_out(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("dora", "desk", DESK_PASSWORD);
    l.add_operator("vic", "viewer", VIEWER_PASSWORD);
    l.add_operator("ada", "admin", ADMIN_PASSWORD);
    let base = l.base_url.clone();
    // bar-1 reported ten minutes ago and then went quiet; bar-2 reports now.
    report_status(&l, &l.bar_token).await;
    let ten_minutes_ago = (chrono::Utc::now() - chrono::Duration::minutes(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    l.execute(&format!(
        "UPDATE terminal_status SET received_at = '{ten_minutes_ago}',
             reported_at = '{ten_minutes_ago}'
         WHERE terminal_id = (SELECT terminal_id FROM terminals WHERE name = 'bar-1')"
    ));
    let bar2 = l.bar2_token.clone();
    report_status(&l, &bar2).await;
    let b = Browser::start(&format!("desk_{backend:?}")).await;

    // Without a session, every page leads to the login page.
    b.open(&format!("{base}/hq/fleet")).await;
    assert_eq!(b.path().await, "/hq/login");
    b.check_page("login").await;
    // A wrong password: a message, still logged out.
    b.fill("#name", "dora").await;
    b.fill("#password", "not her password").await;
    b.submit("#login").await;
    assert!(
        b.text("#message")
            .await
            .starts_with("Wrong name or password.")
    );
    assert!(!b.has("#who").await);

    log_in(&b, &base, "dora", DESK_PASSWORD).await;
    b.open(&format!("{base}/hq/fleet")).await;
    let attention = |name: &str| format!("tr[data-terminal='{name}']");
    let silent = b.attr(&attention("bar-1"), "data-attention").await.unwrap();
    assert_eq!(silent, "silent", "bar-1");
    assert!(
        b.text(&attention("bar-1"))
            .await
            .contains("silent for 10 min")
    );
    // The checkpoint was never heard from.
    let never = b.attr(&attention("cp-1"), "data-attention").await.unwrap();
    assert_eq!(never, "silent");
    let fresh = b.attr(&attention("bar-2"), "data-attention").await.unwrap();
    assert_eq!(fresh, "", "bar-2 reported just now");
    b.check_page("fleet").await;

    // An order made through the API a moment before shows in the card's balance.
    let card = uid(7);
    l.fund(&card, 2_000).await;
    let order = order_body(
        &card,
        l.seq(&l.bar_token),
        &[("beer-05", 1, BEER_CENTS)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_status(201);
    l.post(
        "/v1/scans",
        &l.bar_token,
        &json!({"scans": [{"card_uid": card, "result": "approved",
                           "reader": "ACS ACR122U PICC Interface 00 00",
                           "scanned_at": now_rfc3339()}]}),
    )
    .await
    .assert_status(200);
    // The overview: the top-up and the order, the money left on the card, the charts drawn.
    b.open(&format!("{base}/hq/overview")).await;
    assert_eq!(b.text("#sales").await, "4.50 EUR");
    assert_eq!(b.text("#top-ups").await, "20.00 EUR");
    assert_eq!(b.text("#on-cards").await, "15.50 EUR");
    assert_eq!(b.text("#offline-share").await, "0.0%");
    assert!(b.text("tr[data-point='Main Bar']").await.contains("4.50"));
    assert_eq!(b.attr("#charts", "data-drawn").await.as_deref(), Some("3"));
    b.check_page("overview").await;
    // It updates itself: an offline order replayed now shows without a reload, charts
    // drawn again.
    let offline = order_body(
        &card,
        l.seq(&l.bar_token),
        &[("beer-05", 1, BEER_CENTS)],
        "offline",
    );
    l.post("/v1/orders", &l.bar_token, &offline)
        .await
        .assert_status(201);
    b.run("document.getElementById('charts').removeAttribute('data-drawn'); return true")
        .await;
    let waited = b
        .wait_for_text("#sales", "9.00 EUR", std::time::Duration::from_secs(25))
        .await;
    assert!(waited, "the overview did not update itself");
    assert_eq!(b.text("#offline-share").await, "33.3%");
    assert_eq!(b.text("#on-cards").await, "11.00 EUR");
    assert!(
        b.wait_for("#charts[data-drawn='3']", std::time::Duration::from_secs(5))
            .await,
        "the charts were not drawn again"
    );
    assert_eq!(b.path().await, "/hq/overview");
    b.check_page("overview_updated").await;
    // A bad day: a message, and a day to come is refused too.
    b.open(&format!("{base}/hq/overview?day=yesterday")).await;
    assert!(b.text("#message").await.contains("is not a day"));
    b.open(&format!("{base}/hq/overview?day=2999-01-01")).await;
    assert!(b.text("#message").await.contains("has not started yet"));

    b.open(&format!("{base}/hq/cards")).await;
    b.check_page("cards").await;
    // Bad input in the search: a message on the page.
    b.fill("#uid", "not a uid").await;
    b.submit("#find").await;
    assert!(b.text("#message").await.starts_with("Not a card UID"));
    b.fill("#uid", &card.to_lowercase()).await;
    b.submit("#find").await;
    assert_eq!(b.path().await, format!("/hq/cards/{card}"));
    assert_eq!(b.text("#balance").await, "11.00 EUR");
    assert_eq!(b.text("#status").await, "active");
    // Its history, newest first: the two orders with their terminal and staff member,
    // then the top-up; the scan with its reader.
    for row in 1..=2 {
        let order = b
            .text(&format!("#operations tbody tr:nth-child({row})"))
            .await;
        for part in ["terminal:bar-1", "s-bar", "order", "4.50", "approved"] {
            assert!(order.contains(part), "{part} not in {order:?}");
        }
    }
    let top_up = b.text("#operations tbody tr:nth-child(3)").await;
    assert!(
        top_up.contains("terminal:cp-1") && top_up.contains("recharge"),
        "{top_up:?}"
    );
    let scan = b.text("#scans tbody tr:first-child").await;
    assert!(
        scan.contains("bar-1") && scan.contains("ACS ACR122U"),
        "{scan:?}"
    );
    b.check_page("card").await;

    // A form without its CSRF token changes nothing.
    b.run(
        "document.querySelector('#block').form.querySelector('[name=csrf]').remove(); \
         return true",
    )
    .await;
    b.submit("#block").await;
    assert!(b.text("#message").await.contains("Nothing was changed"));
    b.check_page("csrf_refused").await;
    assert_eq!(l.card(&card).await.body["status"], "active");

    // Blocked from the page: in the card feed, and in the audit log under her name.
    b.open(&format!("{base}/hq/cards/{card}")).await;
    b.submit("#block").await;
    assert_eq!(b.text("#status").await, "blocked");
    let feed = l
        .get("/v1/cards?since=0&limit=1000", Some(&l.bar_token))
        .await;
    let in_feed = feed.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["card_uid"] == card.as_str())
        .cloned()
        .unwrap();
    assert_eq!(in_feed["status"], "blocked");
    assert_eq!(b.text("#block-reason").await, "reported lost at the desk");
    assert!(b.has("#unblock").await);
    assert_eq!(
        l.query_i64(&format!(
            "SELECT COUNT(*) FROM app_transaction_log
             WHERE actor = 'operator:dora' AND operation = 'card_block' AND card_uid = '{card}'"
        )),
        1
    );
    b.check_page("card_blocked").await;

    // The lost card is replaced: a bad new UID changes nothing; a good one moves the money.
    b.fill("#new_uid", "not a card").await;
    b.submit("#replace").await;
    assert!(b.text("#message").await.contains("Nothing was changed"));
    assert_eq!(l.card(&card).await.body["balance_cents"], 1100);
    b.open(&format!("{base}/hq/cards/{card}")).await;
    let new_card = uid(8);
    b.fill("#new_uid", &new_card).await;
    b.submit("#replace").await;
    assert_eq!(b.path().await, format!("/hq/cards/{new_card}"));
    assert_eq!(b.text("#balance").await, "11.00 EUR");
    assert_eq!(l.card(&card).await.body["balance_cents"], 0);
    // The old card says where its money went, and can be neither unblocked nor replaced.
    b.open(&format!("{base}/hq/cards/{card}")).await;
    assert_eq!(b.text("#replaced-by").await, new_card);
    assert!(!b.has("#unblock").await && !b.has("#replace").await);
    b.open(&format!("{base}/hq/cards/{new_card}")).await;
    assert_eq!(
        l.query_i64(&format!(
            "SELECT COUNT(*) FROM app_transaction_log
             WHERE actor = 'operator:dora' AND operation = 'card_replace' AND card_uid = '{card}'"
        )),
        1
    );
    b.check_page("card_replaced").await;

    // The other pages a desk sees.
    for page in ["shifts", "stripe", "reports"] {
        b.open(&format!("{base}/hq/{page}")).await;
        assert!(b.has("h1").await);
        b.check_page(page).await;
    }
    b.open(&format!("{base}/hq/reports?section=sales_by_point_of_sale"))
        .await;
    assert!(b.text("#report").await.contains("Main Bar"));
    b.check_page("report_sales").await;

    // The desk may not manage operators.
    b.open(&format!("{base}/hq/operators")).await;
    assert!(b.text("#message").await.contains("may not"));
    b.check_page("forbidden").await;

    b.submit("#logout").await;
    assert_eq!(b.path().await, "/hq/login");
    b.open(&format!("{base}/hq/fleet")).await;
    assert_eq!(b.path().await, "/hq/login", "the session ended");

    // A viewer sees the card but has no block button, and a block they forge is refused.
    log_in(&b, &base, "vic", VIEWER_PASSWORD).await;
    b.open(&format!("{base}/hq/cards/{card}")).await;
    assert!(!b.has("#unblock").await && !b.has("#block").await);
    b.submit_by_script(&format!(
        "const f = document.createElement('form'); f.method = 'post';
         f.action = '/hq/cards/{card}/unblock';
         f.appendChild(document.querySelector('.logout [name=csrf]').cloneNode());
         document.body.appendChild(f); f.submit(); return true"
    ))
    .await;
    assert!(b.text("#message").await.contains("may not"));
    assert_eq!(l.card(&card).await.body["status"], "blocked");
    b.submit("#logout").await;

    // The admin manages operators; a bad name is refused with a message.
    log_in(&b, &base, "ada", ADMIN_PASSWORD).await;
    b.open(&format!("{base}/hq/operators")).await;
    b.check_page("operators").await;
    let before = l.count("operators");
    b.fill("#op_name", "Bad Name").await;
    b.fill("#op_password", "long enough password").await;
    b.submit("#add_operator").await;
    assert!(b.text("#message").await.starts_with("Name:"));
    assert_eq!(l.count("operators"), before);
    b.fill("#op_name", "eve").await;
    b.fill("#op_password", "long enough password").await;
    b.submit("#add_operator").await;
    assert!(b.has("tr[data-operator='eve']").await);
    assert_eq!(l.count("operators"), before + 1);
    b.close().await;
}

on_both_backends! {
    the_desk_finds_blocks_and_logs_out,
}
