//! Logs (issue 14): `--log-format json` (or `CASHLESS_LOG_FORMAT=json`) on the real ledger
//! and terminal binaries. Every line is one JSON object; every line the ledger writes while
//! serving a request carries that request's id; no bearer token, PIN or webhook secret is
//! ever written.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::process::Stdio;

/// Every line of `text` as JSON; panics naming a line that is not.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

const WEBHOOK_SECRET: &str = "whsec_never_logged_5f1c9a";
const PIN: &str = "86420975";

#[tokio::test]
async fn the_ledger_logs_json_lines_each_with_its_request_id_and_never_a_secret() {
    let l = Ledger::start_with_config_and_env_on(
        Backend::Sqlite,
        "",
        &[
            ("CASHLESS_LOG_FORMAT", "json"),
            ("CASHLESS_STRIPE_WEBHOOK_SECRETS", WEBHOOK_SECRET),
        ],
    )
    .await;
    // A terminal's request, with its token and an id of the caller's.
    let me = l
        .client
        .get(format!("{}/v1/terminals/me", l.base_url))
        .bearer_auth(&l.bar_token)
        .header("x-request-id", "req-log-me")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // A top-up (money moves), and a webhook whose signature is wrong: the ledger warns
    // while serving it.
    l.topup(&uid(1), 500).await.assert_status(201);
    let hook = l
        .post_raw(
            "/v1/webhooks/stripe",
            None,
            br#"{"id":"evt_1"}"#.to_vec(),
            &[
                ("stripe-signature", "t=1,v1=00"),
                ("x-request-id", "req-log-hook"),
            ],
        )
        .await;
    assert_eq!(hook.status, 400, "{}", hook.body);

    let log = std::fs::read_to_string(l.dir.path().join("serve-1.log")).unwrap();
    let lines = json_lines(&log);
    for line in &lines {
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    // The request line of each request, in the request's span with its id.
    let request = |id: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == "request" && l["fields"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id}:\n{log}"))
            .clone()
    };
    let me = request("req-log-me");
    assert_eq!(
        (
            &me["span"]["request_id"],
            &me["fields"]["route"],
            &me["fields"]["status"]
        ),
        (
            &json!("req-log-me"),
            &json!("/v1/terminals/me"),
            &json!(200)
        ),
        "{me}"
    );
    // Every line written while serving a request carries its id: the webhook's warning too.
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["span"]["request_id"] == "req-log-hook")
        .unwrap_or_else(|| panic!("no warning in the webhook's request:\n{log}"));
    assert!(
        warning["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("bad signature"),
        "{warning}"
    );
    for line in lines.iter().filter(|l| l["fields"]["message"] == "request") {
        assert_eq!(
            line["span"]["request_id"], line["fields"]["request_id"],
            "{line}"
        );
    }
    // Nothing secret, anywhere.
    for secret in [&l.bar_token, &l.checkpoint_token, WEBHOOK_SECRET] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[tokio::test]
async fn the_terminal_logs_json_lines_and_never_its_token_or_a_pin() {
    let l = Ledger::start().await;
    assert_success(
        "staff add",
        &l.admin(&[
            "staff", "add", "--id", "s-log", "--name", "Lou", "--role", "bar", "--pin", PIN,
        ]),
    );
    let card = uid(2);
    l.fund(&card, 1_000).await;
    let proxy = Proxy::start(&l.base_url).await;
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
    let log_path = dir.path().join("terminal.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut t = Terminal::spawn_with(
        &config,
        &[("CASHLESS_LOG_FORMAT", "json")],
        Stdio::from(log_file),
    );
    t.expect("ready").await;
    t.send(json!({"cmd": "login", "staff_id": "s-log", "pin": PIN}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    let d = t.sell("water", 1, &card).await;
    assert_eq!(d["status"], "approved_online", "{d}");
    // Offline and back: the terminal has things to say (sync failures, the replay).
    proxy.go_down().await;
    let d = t.sell("water", 1, &card).await;
    assert_eq!(d["status"], "approved_offline", "{d}");
    proxy.go_up();
    wait_until_synced(&mut t).await;
    t.quit().await;

    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"),
        "the outage was logged:\n{log}"
    );
    for secret in [l.bar_token.as_str(), PIN] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}
