//! `cashless bench hq-seed` and `cashless bench hq` (benches/hq.sh runs them): the seed
//! writes a festival the ledger serves (the overview's sums built by the schema's
//! triggers, every terminal's sequence without gaps, close-outs on the shifts page), and the
//! page bench logs in, measures the pages and hammers them.

mod common;

use common::*;
use serde_json::Value;

fn bench(args: &[&str], password: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("CASHLESS_HQ_PASSWORD", password)
        .output()
        .expect("run cashless bench");
    assert_success(&format!("bench {}", args[1]), &out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_festival_is_served_and_its_pages_measured() {
    let l = Ledger::start().await;
    let db = l.db_path().to_str().unwrap().to_owned();
    let seeded = bench(
        &[
            "bench",
            "hq-seed",
            "--path",
            &db,
            "--operations",
            "2000",
            "--cards",
            "300",
        ],
        "",
    );
    assert!(seeded.contains("2000 operations, 300 cards"), "{seeded}");
    // The overview's sums hold every seeded operation: 1800 orders of 4.50, 200 top-ups of
    // 20.00.
    assert_eq!(
        l.query_i64("SELECT SUM(operations) FROM quarter_totals WHERE point_of_sale LIKE 'Seed %'"),
        2000
    );
    assert_eq!(
        l.query_i64(
            "SELECT SUM(amount_cents) FROM quarter_totals WHERE point_of_sale LIKE 'Seed %'"
        ),
        1800 * 450 + 200 * 2000
    );
    // Every seeded terminal's sequence is whole: nothing for the fleet page to flag as gaps.
    assert_eq!(
        l.query_i64(
            "SELECT COUNT(*) FROM terminals WHERE name LIKE 'seed-%'
               AND highest_contiguous_seq <> highest_seen_seq"
        ),
        0
    );
    assert_eq!(
        l.query_i64(
            "SELECT COUNT(DISTINCT terminal_id || ':' || terminal_seq) FROM bar_orders
              WHERE terminal_id LIKE '00000000-0000-4000-8000-%'"
        ),
        1800,
        "each order its own sequence number"
    );

    let password = "bench password 1";
    l.add_operator("bench", "viewer", password);
    let pages = bench(
        &[
            "bench",
            "hq",
            "--url",
            &l.base_url,
            "--operator",
            "bench",
            "--page",
            "/hq/overview,/hq/shifts",
            "--requests",
            "3",
            "--json",
        ],
        password,
    );
    let lines: Vec<Value> = pages
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{pages}");
    for (line, page) in lines.iter().zip(["/hq/overview", "/hq/shifts"]) {
        assert_eq!(line["page"], page);
        assert_eq!(line["requests"], 3);
        assert!(line["ttfb_ms"]["p99"].as_f64().unwrap() > 0.0, "{line}");
        assert!(line["body_bytes_max"].as_u64().unwrap() > 1000, "{line}");
    }
    let hammer = bench(
        &[
            "bench",
            "hq",
            "--url",
            &l.base_url,
            "--operator",
            "bench",
            "--page",
            "/hq/overview",
            "--hammer",
            "1",
            "--browsers",
            "2",
            "--json",
        ],
        password,
    );
    let summary: Value = serde_json::from_str(hammer.trim()).unwrap();
    assert!(summary["answered"].as_u64().unwrap() > 0, "{summary}");

    // A wrong password: the bench says so.
    let out = std::process::Command::new(BIN)
        .args(["bench", "hq", "--url", &l.base_url, "--operator", "bench"])
        .args(["--page", "/hq/overview"])
        .env("CASHLESS_HQ_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was refused"));
}
