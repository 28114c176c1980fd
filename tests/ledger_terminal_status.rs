//! Terminals report their state (issue 15): `POST /v1/terminals/me/status` on both backends,
//! and a real terminal reporting through its sync rounds.
//!
//! A report replaces the terminal's previous one; the answer gives the terminal clock's
//! offset from the ledger's; bad input is refused with 400 naming the field and changes
//! nothing; a report without a token is 401.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn report(reported_at: &str, waiting: u64) -> Value {
    json!({
        "reported_at": reported_at,
        "waiting": waiting,
        "in_doubt": 1,
        "rejected": 2,
        "oldest_unsent_age_s": 95,
        "card_feed_cursor": "42",
        "reader_state": "connected",
        "software_version": "0.1.0"
    })
}

/// The stored report of the terminal named `name`, its columns in an array.
fn stored(l: &Ledger, name: &str) -> Vec<Value> {
    let rows = l.query(&format!(
        "SELECT s.waiting, s.in_doubt, s.rejected, s.oldest_unsent_age_s, s.card_feed_cursor,
                s.reader_state, s.software_version
         FROM terminal_status s JOIN terminals t ON t.terminal_id = s.terminal_id
         WHERE t.name = '{name}'"
    ));
    rows.rows
        .iter()
        .map(|row| Value::Array(row.iter().map(|c| c.to_json()).collect()))
        .collect()
}

async fn a_report_is_kept_replaced_and_gives_the_clock_offset(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    // A terminal whose clock is five minutes behind the ledger's.
    let behind = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let resp = l
        .post("/v1/terminals/me/status", &l.bar_token, &report(&behind, 3))
        .await;
    resp.assert_status(200);
    let offset_ms = resp.body["clock_offset_ms"].as_i64().unwrap();
    assert!(
        (-310_000..=-299_000).contains(&offset_ms),
        "a clock five minutes behind gave {offset_ms} ms"
    );
    assert!(resp.body["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        stored(&l, "bar-1"),
        vec![json!([3, 1, 2, 95, "42", "connected", "0.1.0"])]
    );

    // The next report replaces it; sending the same one again changes nothing else.
    let now = now_rfc3339();
    for _ in 0..2 {
        l.post("/v1/terminals/me/status", &l.bar_token, &report(&now, 0))
            .await
            .assert_status(200);
    }
    assert_eq!(
        stored(&l, "bar-1"),
        vec![json!([0, 1, 2, 95, "42", "connected", "0.1.0"])]
    );
    assert_eq!(l.count("terminal_status"), 1);

    // The checkpoint reports too; each terminal has its own row.
    l.post(
        "/v1/terminals/me/status",
        &l.checkpoint_token,
        &report(&now, 7),
    )
    .await
    .assert_status(200);
    assert_eq!(l.count("terminal_status"), 2);
}

async fn bad_reports_are_refused_and_change_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let now = now_rfc3339();
    l.post("/v1/terminals/me/status", &l.bar_token, &report(&now, 3))
        .await
        .assert_status(200);
    let before = l.db_fingerprint_of(&["terminal_status"]);
    let with = |field: &str, value: Value| {
        let mut r = report(&now, 1);
        r[field] = value;
        r
    };
    let mut missing = report(&now, 1);
    missing.as_object_mut().unwrap().remove("reader_state");
    let cases: Vec<(Value, &str)> = vec![
        (with("waiting", json!(100_000_001)), "waiting"),
        (with("waiting", json!(-1)), "waiting"),
        (with("in_doubt", json!(1.5)), "in_doubt"),
        (with("rejected", json!("2")), "rejected"),
        (
            with("oldest_unsent_age_s", json!(40_000_000)),
            "oldest_unsent_age_s",
        ),
        (with("card_feed_cursor", json!("a b")), "card_feed_cursor"),
        (
            with("card_feed_cursor", json!("9".repeat(129))),
            "card_feed_cursor",
        ),
        (with("reader_state", json!("broken")), "reader_state"),
        (with("software_version", json!("")), "software_version"),
        (with("software_version", json!("v\n1")), "software_version"),
        (with("reported_at", json!("yesterday")), "reported_at"),
        (with("extra", json!(1)), "extra"),
        (missing, "reader_state"),
    ];
    for (body, field) in cases {
        let resp = l.post("/v1/terminals/me/status", &l.bar_token, &body).await;
        let details = resp.assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], field, "{body}: {}", resp.body);
    }
    let raw = l
        .post_raw(
            "/v1/terminals/me/status",
            Some(&l.bar_token),
            b"{not json".to_vec(),
            &[],
        )
        .await;
    raw.assert_error(400, "INVALID_REQUEST");
    // Without a token, or with a revoked one: 401.
    let resp = l
        .client
        .post(format!("{}/v1/terminals/me/status", l.base_url))
        .json(&report(&now, 9))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(l.db_fingerprint_of(&["terminal_status"]), before);
}

/// The row of `terminal list` for `name`, split into its columns.
fn listed(l: &Ledger, name: &str) -> Vec<String> {
    let list = assert_success("list", &l.admin(&["terminal", "list"]));
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header.last(), Some(&"ATTENTION"), "{list}");
    let row = list
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {list}"));
    // The point of sale holds a space ("Main Bar"): count columns from the end.
    let cells: Vec<String> = row.split_whitespace().map(str::to_owned).collect();
    cells[cells.len() - 6..].to_vec()
}

async fn terminal_list_marks_the_terminals_that_need_a_person(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    // bar-1: its clock two minutes ahead, two operations rejected, one waiting 20 minutes.
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut body = report(&ahead, 1);
    body["oldest_unsent_age_s"] = json!(1200);
    l.post("/v1/terminals/me/status", &l.bar_token, &body)
        .await
        .assert_status(200);
    let bar = listed(&l, "bar-1");
    // LAST_CONTACT WAITING REJECTED READER CLOCK_MS ATTENTION
    assert_eq!(&bar[1..4], &["1", "2", "connected"], "{bar:?}");
    let clock_ms: i64 = bar[4].parse().unwrap();
    assert!((115_000..=121_000).contains(&clock_ms), "{bar:?}");
    assert_eq!(bar[5], "old_unsent,rejected,clock", "{bar:?}");
    // The checkpoint has never been heard from.
    let cp = listed(&l, "cp-1");
    assert_eq!(&cp[..], &["never", "-", "-", "-", "-", "silent"], "{cp:?}");
    // In step again: nothing needs a person.
    let mut body = report(&now_rfc3339(), 0);
    body["oldest_unsent_age_s"] = Value::Null;
    body["rejected"] = json!(0);
    l.post("/v1/terminals/me/status", &l.bar_token, &body)
        .await
        .assert_status(200);
    assert_eq!(listed(&l, "bar-1")[5], "-");
}

on_both_backends! {
    a_report_is_kept_replaced_and_gives_the_clock_offset,
    bad_reports_are_refused_and_change_nothing,
    terminal_list_marks_the_terminals_that_need_a_person,
}

/// A real terminal reports its state from its sync rounds: its reader, its version, the
/// feed cursor it applied, nothing waiting, and a clock in step with the ledger's.
#[tokio::test]
async fn a_running_terminal_reports_its_state() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = l.base_url.trim_start_matches("http://");
    let mut t = Terminal::start(dir.path(), ledger, &l.bar_token).await;
    ready_to_sell(&mut t).await;
    wait_for(
        "the terminal's status report",
        Duration::from_secs(10),
        || l.count("terminal_status") == 1,
    )
    .await;
    let rows = l.query_json(
        "SELECT waiting, in_doubt, rejected, oldest_unsent_age_s, reader_state,
                software_version, card_feed_cursor, reported_at, received_at
         FROM terminal_status",
    );
    let row = &rows[0];
    for (column, value) in [
        ("waiting", json!(0)),
        ("in_doubt", json!(0)),
        ("rejected", json!(0)),
        ("oldest_unsent_age_s", Value::Null),
        ("reader_state", json!("simulated")),
        ("software_version", json!(env!("CARGO_PKG_VERSION"))),
    ] {
        assert_eq!(row[column], value, "{column} in {row}");
    }
    let cursor = row["card_feed_cursor"].as_str().unwrap();
    assert!(
        !cursor.is_empty() && cursor.bytes().all(|b| b.is_ascii_digit()),
        "{cursor:?}"
    );
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let offset = at(&row["reported_at"]) - at(&row["received_at"]);
    assert!(offset.num_seconds().abs() < 5, "{offset}");
    t.quit().await;
}
