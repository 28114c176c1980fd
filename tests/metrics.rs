//! Prometheus metrics (issue 14): the real ledger's `GET /metrics` on both backends and the
//! real terminal's own on `[metrics] listen`, scraped over HTTP and parsed by a Prometheus
//! text-format parser (`prometheus-parse`), not by string matching. Each value is checked
//! against what the test did: exact counts for operations, replays, Stripe outcomes and
//! the fleet's sequence state, the age of an offline operation, a card blocked for debt.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{Value, json};
use std::time::Duration;

const STRIPE_SECRET: &str = "whsec_metrics_test_1";

/// `GET url`, parsed.
async fn scrape(url: &str) -> Scrape {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The samples named `name` whose labels include `labels`.
fn samples<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect()
}

/// The one value of the sample `name` with `labels` (a counter, gauge or untyped line).
#[track_caller]
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match samples(s, name, labels).as_slice() {
        [one] => match one.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => v,
            ref other => panic!("{name}: not a single value: {other:?}"),
        },
        other => panic!(
            "{name} {labels:?}: {} samples; names: {:?}",
            other.len(),
            s.samples
                .iter()
                .map(|x| &x.metric)
                .collect::<std::collections::BTreeSet<_>>()
        ),
    }
}

async fn stripe(l: &Ledger, event: Value) {
    deliver_stripe_event(l, STRIPE_SECRET, &event).await;
}

async fn the_ledger_reports_what_it_did(backend: Backend) {
    let l = Ledger::start_with_config_and_env_on(
        backend,
        "",
        &[("CASHLESS_STRIPE_WEBHOOK_SECRETS", STRIPE_SECRET)],
    )
    .await;
    let url = format!("{}/metrics", l.base_url);
    let before = scrape(&url).await;
    assert_eq!(value(&before, "cashless_cards_blocked_for_debt", &[]), 0.0);

    // An approved top-up, sent twice: one operation, one replay.
    let seq = l.seq(&l.checkpoint_token);
    let topup = recharge_body(&uid(1), seq, 1_000, "cash", "online");
    for _ in 0..2 {
        l.post("/v1/recharges", &l.checkpoint_token, &topup)
            .await
            .assert_status(201);
    }
    // A decline: an unknown card.
    let seq = l.seq(&l.bar_token);
    let declined = order_body(&uid(2), seq, &[("water", 1, 200)], "online");
    l.post("/v1/orders", &l.bar_token, &declined)
        .await
        .assert_error(404, "CARD_NOT_FOUND");
    // An offline order made ten minutes ago on a card never topped up: applied, in debt,
    // blocked; and it jumps bar-1's sequence by 5, leaving 4 missing.
    let seq = l.seq(&l.bar_token) + 4;
    let mut offline = order_body(&uid(3), seq, &[("water", 1, 200)], "offline");
    offline["created_at"] = json!(
        (chrono::Utc::now() - chrono::Duration::minutes(10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    l.post("/v1/orders", &l.bar_token, &offline)
        .await
        .assert_status(201);
    // A Stripe top-up.
    stripe(
        &l,
        json!({"id": "evt_metrics_1", "type": "checkout.session.completed", "data": {"object": {
            "id": "cs_metrics_1", "payment_status": "paid", "currency": "eur",
            "amount_total": 2_500, "payment_intent": "pi_metrics_1",
            "metadata": {"card_uid": uid(4)}, "created": 1_780_000_000}}}),
    )
    .await;

    let s = scrape(&url).await;
    let ops = "cashless_operations_total";
    assert_eq!(
        value(
            &s,
            ops,
            &[
                ("type", "recharge"),
                ("mode", "online"),
                ("outcome", "approved")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            ops,
            &[
                ("type", "order"),
                ("mode", "online"),
                ("outcome", "CARD_NOT_FOUND")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            ops,
            &[
                ("type", "order"),
                ("mode", "offline"),
                ("outcome", "approved")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "cashless_idempotent_replays_total",
            &[("type", "recharge")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "cashless_stripe_events_total",
            &[("outcome", "credited")]
        ),
        1.0
    );
    // The offline order arrived about ten minutes after it was made.
    assert_eq!(
        value(&s, "cashless_offline_operation_age_seconds_count", &[]),
        1.0
    );
    let age = value(&s, "cashless_offline_operation_age_seconds_sum", &[]);
    assert!((600.0..660.0).contains(&age), "age {age}");
    // Requests by route and status, with their latency.
    assert_eq!(
        value(
            &s,
            "cashless_http_requests_total",
            &[("route", "/v1/recharges"), ("status", "201")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "cashless_http_requests_total",
            &[("route", "/v1/orders"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "cashless_http_request_duration_seconds_count",
            &[("route", "/v1/orders")]
        ),
        2.0
    );
    match &samples(
        &s,
        "cashless_http_request_duration_seconds",
        &[("route", "/v1/orders")],
    )[..]
    {
        [h] => match &h.value {
            Metric::Histogram(buckets) => {
                assert!(buckets.len() >= 10);
                assert_eq!(buckets.last().unwrap().count, 2.0, "+Inf holds both");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{} histograms", other.len()),
    }
    // Read from the database: the card in debt, bar-1's sequence and its gap.
    assert_eq!(value(&s, "cashless_cards_blocked_for_debt", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "cashless_terminal_contiguous_seq",
            &[("terminal", "bar-1")]
        ),
        (seq - 5) as f64
    );
    assert_eq!(
        value(
            &s,
            "cashless_terminal_missing_seqs",
            &[("terminal", "bar-1")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &s,
            "cashless_terminal_missing_seqs",
            &[("terminal", "cp-1")]
        ),
        0.0
    );
    let seen = value(
        &s,
        "cashless_terminal_last_seen_timestamp_seconds",
        &[("terminal", "bar-1")],
    );
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 60.0..=now + 1.0).contains(&seen), "{seen} vs {now}");
    // The connections of this process.
    assert!(value(&s, "cashless_db_connections", &[("state", "max")]) >= 1.0);
    assert!(value(&s, "cashless_db_connections", &[("state", "open")]) >= 1.0);
    assert!(value(&s, "cashless_db_waiting", &[]) >= 0.0);
    assert_eq!(value(&s, "cashless_metrics_scrape_errors_total", &[]), 0.0);

    // A revoked terminal leaves the per-terminal gauges (it is not a terminal gone quiet).
    assert!(
        !samples(
            &s,
            "cashless_terminal_missing_seqs",
            &[("terminal", "bar-2")]
        )
        .is_empty()
    );
    assert_success(
        "revoke",
        &l.admin(&["terminal", "revoke", "--name", "bar-2"]),
    );
    let s = scrape(&url).await;
    assert!(
        samples(
            &s,
            "cashless_terminal_missing_seqs",
            &[("terminal", "bar-2")]
        )
        .is_empty()
    );
    assert!(
        !samples(
            &s,
            "cashless_terminal_missing_seqs",
            &[("terminal", "bar-1")]
        )
        .is_empty()
    );
}

on_both_backends! {
    the_ledger_reports_what_it_did,
}

/// A free local port for the terminal's metrics.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_terminal_reports_its_journal_sync_and_reader() {
    let l = Ledger::start().await;
    l.fund(&uid(1), 5_000).await;
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
    let port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let mut t = Terminal::spawn(&config);
    ready_to_sell(&mut t).await;
    let url = format!("http://127.0.0.1:{port}/metrics");

    let s = scrape(&url).await;
    assert_eq!(value(&s, "cashless_terminal_operations_waiting", &[]), 0.0);
    assert_eq!(value(&s, "cashless_terminal_online", &[]), 1.0);
    assert_eq!(value(&s, "cashless_terminal_journal_readable", &[]), 1.0);
    assert_eq!(
        value(&s, "cashless_terminal_reader", &[("state", "simulated")]),
        1.0
    );
    assert_eq!(
        value(&s, "cashless_terminal_reader", &[("state", "connected")]),
        0.0
    );
    assert!(value(&s, "cashless_terminal_journal_bytes", &[]) > 0.0);
    assert!(value(&s, "cashless_terminal_last_sync_age_seconds", &[]) < 60.0);

    // The network goes: two sales wait in the journal.
    proxy.go_down().await;
    for _ in 0..2 {
        let d = t.sell("water", 1, &uid(1)).await;
        assert_eq!(d["status"], "approved_offline", "{d}");
    }
    // What the metrics say is what the terminal's own status says (the two sales, and a
    // void if an attempt was cut mid-way by the network going).
    t.send(json!({"cmd": "status"})).await;
    let status = t.expect("status").await;
    let s = scrape(&url).await;
    let waiting = value(&s, "cashless_terminal_operations_waiting", &[]);
    assert!(waiting >= 2.0, "{waiting}");
    assert_eq!(waiting, status["pending"].as_f64().unwrap(), "{status}");
    assert_eq!(
        value(&s, "cashless_terminal_operations_in_doubt", &[]),
        status["in_doubt"].as_f64().unwrap()
    );
    assert_eq!(value(&s, "cashless_terminal_online", &[]), 0.0);

    // It comes back: they are sent, and nothing waits.
    proxy.go_up();
    wait_until_synced(&mut t).await;
    let s = scrape(&url).await;
    assert_eq!(value(&s, "cashless_terminal_operations_waiting", &[]), 0.0);
    assert_eq!(value(&s, "cashless_terminal_operations_rejected", &[]), 0.0);
    assert_eq!(value(&s, "cashless_terminal_online", &[]), 1.0);
    t.quit().await;
    // The metrics go with the terminal.
    let gone = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gone.is_err(), "{gone:?}");
}
