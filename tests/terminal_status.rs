//! `cashless terminal status` reads a real journal file and reports what operators need:
//! what waits for the ledger, what is in doubt, what was refused, and how old the sync and
//! the card replica are.
#![allow(clippy::unwrap_used)]

use cashless::domain::{CardUid, Cents, ClientRequestId};
use cashless::protocol::api::Mode;
use cashless::terminal::journal::{Decision, EntryState, Journal, NewEntry, OperationKind};
use chrono::{Duration, Utc};
use serde_json::json;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cashless");

fn entry(state: EntryState, decision: Option<Decision>) -> NewEntry {
    NewEntry {
        client_request_id: ClientRequestId::new_random(),
        operation: OperationKind::Order,
        mode: Mode::Offline,
        card_uid: Some(CardUid::parse("04A1B2C3D4E5F6").unwrap()),
        amount_cents: Cents::new(-450),
        decision,
        decline_reason: None,
        state,
    }
}

fn status(config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["terminal", "--config", config.to_str().unwrap(), "status"])
        .env_remove("CASHLESS_LEDGER_TOKEN")
        .env_remove("CASHLESS_LEDGER_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_counts_every_state_and_ages() {
    let dir = tempfile::tempdir().unwrap();
    let journal_path = dir.path().join("journal.db");
    let config = dir.path().join("terminal.toml");
    std::fs::write(
        &config,
        format!(
            "[terminal]\nname = \"bar-7\"\nkind = \"bar\"\njournal = {:?}\n\n[ledger]\nurl = \"http://127.0.0.1:9\"\ntoken = \"clt_test\"\n",
            journal_path.display().to_string()
        ),
    )
    .unwrap();
    let now = Utc::now();
    {
        let mut j = Journal::open(&journal_path).unwrap();
        let approved = Some(Decision::ApprovedOffline);
        let states = [
            EntryState::Pending,
            EntryState::Pending,
            EntryState::Pending,
            EntryState::InDoubt,
            EntryState::Pending,
            EntryState::Pending,
        ];
        for state in states {
            let e = entry(state, approved);
            let crid = e.client_request_id;
            j.append(
                e,
                |seq| json!({"client_request_id": crid, "terminal_seq": seq.get()}),
                now - Duration::seconds(60),
            )
            .unwrap();
        }
        // The ledger acknowledged the 5th and refused the 6th for good.
        let seq = |n: i64| cashless::domain::TerminalSeq::new(n).unwrap();
        j.set_state(
            seq(5),
            EntryState::Synced,
            None,
            None,
            Some((201, "{}")),
            now - Duration::seconds(30),
        )
        .unwrap();
        j.set_state(
            seq(6),
            EntryState::Rejected,
            None,
            Some("FORBIDDEN"),
            Some((403, "{}")),
            now,
        )
        .unwrap();
    }
    let (ok, out, err) = status(&config);
    assert!(ok, "{err}");
    for line in [
        "terminal: bar-7",
        "kind: bar",
        "pending: 3",
        "in_doubt: 1",
        "rejected: 1",
        "synced: 1",
        "last_seq: 6",
        "replica: never",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    let last_sync = out.lines().find(|l| l.starts_with("last_sync: ")).unwrap();
    assert!(last_sync.contains("s ago)"), "{last_sync}");
}

#[test]
fn status_names_a_bad_config_or_a_missing_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("terminal.toml");
    std::fs::write(&config, "[terminal]\nname = \"bar-7\"\nkind = \"kiosk\"\njournal = \"/x\"\n\n[ledger]\nurl = \"http://x\"\ntoken = \"t\"\n").unwrap();
    let (ok, _, err) = status(&config);
    assert!(!ok);
    assert!(
        err.contains("terminal.toml") && err.contains("[terminal] kind"),
        "{err}"
    );

    let missing = dir.path().join("nowhere").join("journal.db");
    std::fs::write(
        &config,
        format!("[terminal]\nname = \"bar-7\"\nkind = \"bar\"\njournal = {:?}\n\n[ledger]\nurl = \"http://x\"\ntoken = \"t\"\n", missing.display().to_string()),
    )
    .unwrap();
    let (ok, _, err) = status(&config);
    assert!(!ok);
    assert!(err.contains("cannot read the journal"), "{err}");
    assert!(!missing.exists(), "status must not create a journal");
}
