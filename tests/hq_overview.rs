//! Headquarters' overview over HTTP (issue 15), on both backends: the day's sales, top-ups,
//! offline share, money on cards and cards in debt after real orders, an offline order
//! beyond the balance, a void and top-ups through the API; its sales equal
//! `ledger report`'s; bad days are refused with a message; a live update without a session
//! sends htmx to the login page.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::header::COOKIE;
use serde_json::Value;

const PASSWORD: &str = "overview password";

/// The text of the element with `id` in `html` (its first text, tags left out).
fn text_of(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let open = start + html[start..].find('>').unwrap() + 1;
    let close = open + html[open..].find('<').unwrap();
    html[open..close].trim().to_owned()
}

/// The cells of the table row `data-point="{name}"`.
fn point_row(html: &str, name: &str) -> Vec<String> {
    let start = html
        .find(&format!("data-point=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}"));
    let end = start + html[start..].find("</tr>").unwrap();
    html[start..end]
        .split("<td")
        .skip(1)
        .map(|cell| {
            let open = cell.find('>').unwrap() + 1;
            cell[open..cell.find("</td>").unwrap()].to_owned()
        })
        .collect()
}

/// An HTML attribute's value as askama escapes it, read back.
fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

async fn get(l: &Ledger, path: &str, session: &str, htmx: bool) -> reqwest::Response {
    let mut request = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{path}", l.base_url))
        .header(COOKIE, format!("cashless_hq={session}"));
    if htmx {
        request = request.header("HX-Request", "true");
    }
    request.send().await.unwrap()
}

async fn the_overview_adds_up_the_day(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("vic", "viewer", PASSWORD);
    let session = l.hq_session("vic", PASSWORD).await;

    // Nothing yet.
    let empty = get(&l, "/hq/overview", &session, false).await;
    assert_eq!(empty.status(), 200);
    let html = empty.text().await.unwrap();
    assert_eq!(text_of(&html, "sales"), "0.00 EUR");
    assert!(html.contains("Nothing sold or topped up yet this day."));

    // Two cards topped up at the entrance; card a buys two beers online, then a third
    // that is voided; card b buys four beers offline, more than it holds.
    let (a, b) = (uid(1), uid(2));
    l.fund(&a, 5_000).await;
    l.fund(&b, 1_000).await;
    let two = order_body(
        &a,
        l.seq(&l.bar_token),
        &[("beer-05", 2, BEER_CENTS)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &two)
        .await
        .assert_status(201);
    let third = order_body(
        &a,
        l.seq(&l.bar_token),
        &[("beer-05", 1, BEER_CENTS)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &third)
        .await
        .assert_status(201);
    let void = void_body(
        &crid(&third),
        l.seq(&l.bar_token),
        "staff_error",
        SUPER_STAFF,
    );
    l.post("/v1/voids", &l.bar_token, &void)
        .await
        .assert_status(201);
    let four = order_body(
        &b,
        l.seq(&l.bar2_token),
        &[("beer-05", 4, BEER_CENTS)],
        "offline",
    );
    l.post("/v1/orders", &l.bar2_token, &four)
        .await
        .assert_status(201);
    assert_eq!(l.balance(&a).await, 4_100);
    assert_eq!(l.balance(&b).await, -800);

    let html = get(&l, "/hq/overview", &session, false)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text_of(&html, "sales"), "27.00 EUR");
    assert!(html.contains("2 orders"), "the voided order is not counted");
    assert_eq!(text_of(&html, "top-ups"), "60.00 EUR");
    // One of the four operations that stand was made offline.
    assert_eq!(text_of(&html, "offline-share"), "25.0%");
    assert_eq!(text_of(&html, "on-cards"), "41.00 EUR");
    assert_eq!(text_of(&html, "in-debt"), "1");
    assert!(html.contains(&format!("<a href=\"/hq/cards/{b}\">{b}</a>")));
    let bar = point_row(&html, BAR_POS);
    assert_eq!(bar[1..], ["27.00", "2", "0.00", "0", "1"], "{bar:?}");
    let entrance = point_row(&html, CHECKPOINT_POS);
    assert_eq!(entrance[1..], ["0.00", "0", "60.00", "2", "0"]);
    // The charts' figures, in cents, are the tables'.
    let start = html.find("data-chart=\"").unwrap() + "data-chart=\"".len();
    let end = start + html[start..].find('"').unwrap();
    let chart: Value = serde_json::from_str(&unescape(&html[start..end])).unwrap();
    let sum = |k: &str| {
        chart[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(sum("hour_sales_cents"), 2_700);
    assert_eq!(sum("hour_top_ups_cents"), 6_000);
    assert_eq!(chart["offline"], 1);
    assert_eq!(chart["online"], 3);

    // The card in debt: blocked for it, and the desk is not offered to unblock it (a top-up
    // that covers the debt does).
    l.add_operator("dora", "desk", PASSWORD);
    let desk = l.hq_session("dora", PASSWORD).await;
    let page = get(&l, &format!("/hq/cards/{b}"), &desk, false)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("in debt after offline sales"), "{page}");
    assert!(!page.contains("id=\"unblock\""));
    assert!(page.contains("id=\"block-reason\""));

    // The same sales as the report's for the day.
    let report: Value = serde_json::from_str(&assert_success(
        "report",
        &l.admin(&[
            "report",
            "--format",
            "json",
            "--section",
            "sales_by_point_of_sale",
        ]),
    ))
    .unwrap();
    let section = report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "sales_by_point_of_sale")
        .unwrap();
    assert_eq!(section["total"]["gross_cents"], 2_700, "{section}");

    // Another day: nothing on it; bad days get a message. The day before the festival day
    // of now (festival days start at 06:00 by default: before then, the calendar's yesterday
    // is today's festival day).
    let festival_day = cashless::domain::FestivalDay::default();
    let yesterday = (festival_day.day_of(chrono::Utc::now()) - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let html = get(
        &l,
        &format!("/hq/overview?day={yesterday}"),
        &session,
        false,
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(text_of(&html, "sales"), "0.00 EUR");
    assert!(
        !html.contains("hx-get"),
        "a past day does not update itself"
    );
    for (day, says) in [
        ("2026-13-01", "is not a day"),
        ("yesterday", "is not a day"),
        ("2999-01-01", "has not started yet"),
    ] {
        let resp = get(&l, &format!("/hq/overview?day={day}"), &session, false).await;
        assert_eq!(resp.status(), 400, "{day}");
        assert!(resp.text().await.unwrap().contains(says), "{day}");
    }

    // A live update whose session is gone: htmx is sent to the login page.
    let resp = get(&l, "/hq/overview", "not-a-session", true).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["hx-redirect"], "/hq/login");
    let resp = get(&l, "/hq/overview", "not-a-session", false).await;
    assert_eq!(resp.status(), 303);
}

on_both_backends! {
    the_overview_adds_up_the_day,
}
