//! A terminal whose journal cannot be written declines with a clear reason and never shows
//! an approval that is not on disk. The daemon is driven in-process through its JSON-lines
//! handler, against the real ledger, over a real journal file capped like a full disk.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::domain::ClientRequestId;
use cashless::terminal::config::{TerminalConfig, TerminalOverrides};
use cashless::terminal::daemon::Daemon;
use cashless::terminal::journal::Journal;
use common::*;
use serde_json::json;

/// The events as their JSON lines say them.
fn as_json(events: &[cashless::protocol::events::Event]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.to_json_line()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_full_journal_declines_and_never_shows_an_approval_that_is_not_on_disk() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 50_000).await;
    let dir = tempfile::tempdir().unwrap();
    let journal_path = dir.path().join("journal.db");
    let config_path = dir.path().join("terminal.toml");
    std::fs::write(
        &config_path,
        format!(
            "[terminal]\nname = \"bar-1\"\nkind = \"bar\"\njournal = {:?}\n\n[ledger]\nurl = \"{}\"\ntoken = \"{}\"\n\n[reader]\nbackend = \"simulated\"\n",
            journal_path.display().to_string(),
            l.base_url,
            l.bar_token
        ),
    )
    .unwrap();
    let config = TerminalConfig::load(&config_path, &TerminalOverrides::default()).unwrap();

    // Fill the caches (staff, catalog) with a normal daemon first.
    {
        let daemon = Daemon::open(config.clone()).unwrap();
        let (mut reader, output) = tokio::io::duplex(1 << 20);
        cashless::terminal::daemon::run_jsonl(
            daemon,
            tokio::io::BufReader::new(tokio::io::empty()),
            output,
            std::future::pending(),
            None,
        )
        .await
        .unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text)
            .await
            .unwrap();
        assert!(text.contains("\"ready\""), "{text}");
    }
    let pages: u32 = rusqlite::Connection::open(&journal_path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let journal = Journal::open_with_max_pages(&journal_path, pages + 2).unwrap();
    let mut daemon = Daemon::with_journal_handle(config, journal).unwrap();
    let (events, _) = daemon
        .handle_line(&json!({"cmd": "login", "staff_id": "s-bar", "pin": "1234"}).to_string())
        .await;
    assert_eq!(as_json(&events)[0]["ok"], true, "{events:?}");

    let mut approved = Vec::new();
    let mut full = None;
    for _ in 0..400 {
        daemon
            .handle_line(
                &json!({"cmd": "order", "items": [{"product_id": "water", "quantity": 1}]})
                    .to_string(),
            )
            .await;
        let (events, _) = daemon
            .handle_line(&json!({"cmd": "tap", "uid": card}).to_string())
            .await;
        let decision = as_json(&events)
            .into_iter()
            .find(|e| e["event"] == "decision")
            .unwrap();
        match decision["status"].as_str() {
            Some("approved_online" | "approved_offline") => {
                approved.push(decision["client_request_id"].as_str().unwrap().to_owned())
            }
            _ => {
                full = Some(decision);
                break;
            }
        }
    }
    let full = full.expect("the journal never filled up");
    assert_eq!(
        (full["status"].as_str(), full["reason"].as_str()),
        (Some("declined"), Some("JOURNAL_UNAVAILABLE")),
        "{full}"
    );
    assert!(!approved.is_empty());
    drop(daemon);

    // Every approval shown is in the journal; the ledger has no more charges than that.
    let journal = Journal::open(&journal_path).unwrap();
    for crid in &approved {
        let entry = journal
            .entry_by_request_id(ClientRequestId::parse(crid).unwrap())
            .unwrap();
        assert!(
            entry.is_some(),
            "approval {crid} was shown but is not in the journal"
        );
    }
    let charged = (50_000 - l.balance(&card).await) / 200;
    assert!(
        charged <= approved.len() as i64 + 1,
        "{charged} charges for {} approvals",
        approved.len()
    );
}
