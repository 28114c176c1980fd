//! `cashless bench ledger` with several `--url` and several `--token`, against two real
//! `cashless ledger serve` processes on one PostgreSQL database (benches/ledger_postgres.sh
//! runs it so): every process gets orders, every terminal sells, and each terminal's
//! `terminal_seq` stays its own gapless sequence (a shared counter would leave gaps in both).

mod common;

use common::*;
use serde_json::Value;

/// Orders a process logged (`route="/v1/orders"` request lines) in one `serve #N` section of
/// [`Ledger::server_log`].
fn orders_logged(log: &str, serve: u32) -> usize {
    log.split(&format!("--- serve #{serve} ---"))
        .nth(1)
        .and_then(|rest| rest.split("--- serve #").next())
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("method=POST route=\"/v1/orders\""))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_are_spread_over_every_url_and_every_terminal() {
    let mut ledger = Ledger::start_on(Backend::Postgres).await;
    let other = ledger.spawn_another_server().await;
    let args = vec![
        "bench".to_string(),
        "ledger".into(),
        "--url".into(),
        ledger.base_url.clone(),
        "--url".into(),
        other.base_url.clone(),
        "--token".into(),
        format!("{},{}", ledger.bar_token, ledger.bar2_token),
        "--funding-token".into(),
        ledger.checkpoint_token.clone(),
        "--fund".into(),
        "--fund-cents".into(),
        "40000".into(),
        "--clients".into(),
        "4".into(),
        "--cards".into(),
        "8".into(),
        "--duration".into(),
        "1".into(),
        "--product".into(),
        "water".into(),
        "--price-cents".into(),
        WATER_CENTS.to_string(),
        "--staff".into(),
        SUPER_STAFF.into(),
        "--json".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&args)
            .output()
            .expect("run cashless bench ledger")
    })
    .await
    .expect("join");
    let stdout = assert_success("bench ledger", &out);
    let summary: Value = serde_json::from_str(stdout.lines().last().expect("a JSON line"))
        .unwrap_or_else(|e| panic!("the last line is the JSON summary: {e}\n{stdout}"));
    assert!(summary["approved"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert_eq!(summary["transport_errors"], 0, "{summary}");
    assert_eq!(summary["other_status"], serde_json::json!({}), "{summary}");

    let log = ledger.server_log();
    for serve in [1, 2] {
        assert!(
            orders_logged(&log, serve) > 0,
            "process {serve} got no order\n{log}"
        );
    }
    for name in ["bar-1", "bar-2"] {
        let orders = ledger.query_i64(&format!(
            "SELECT COUNT(*) FROM bar_orders o JOIN terminals t USING (terminal_id) \
             WHERE t.name = '{name}'"
        ));
        assert!(orders > 0, "{name} sold nothing");
        // Numbered 1..=orders: the highest contiguous number is the count, nothing above it.
        for column in ["highest_contiguous_seq", "highest_seen_seq"] {
            assert_eq!(
                ledger.query_i64(&format!(
                    "SELECT {column} FROM terminals WHERE name = '{name}'"
                )),
                orders,
                "{name}: {column}"
            );
        }
    }
    ledger.assert_audit_ok();
}
