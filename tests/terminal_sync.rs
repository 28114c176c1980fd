//! The sync worker against the real ledger and a real journal file: journaled offline
//! operations reach the ledger exactly once, refusals are kept, a dead network changes
//! nothing but the attempt counters, and the card feed fills the replica.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::domain::{CardUid, Cents, ClientRequestId};
use cashless::protocol::api::Mode;
use cashless::terminal::client::LedgerClient;
use cashless::terminal::journal::{Decision, EntryState, Journal, NewEntry, OperationKind};
use cashless::terminal::sync::{ReplayReport, SharedJournal, pull_card_feed, replay_round};
use chrono::Utc;
use common::*;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// Journals an offline operation the way the daemon will: the body is built once the
/// sequence number is known.
fn journal_offline(
    j: &SharedJournal,
    kind: OperationKind,
    card: &str,
    amount: i64,
    body: impl FnOnce(i64) -> Value,
) -> ClientRequestId {
    let crid = ClientRequestId::new_random();
    let entry = NewEntry {
        client_request_id: crid,
        operation: kind,
        mode: Mode::Offline,
        card_uid: Some(CardUid::parse(card).unwrap()),
        amount_cents: Cents::new(amount),
        decision: Some(Decision::ApprovedOffline),
        decline_reason: None,
        state: EntryState::Pending,
    };
    j.lock()
        .unwrap()
        .append(
            entry,
            |seq| {
                let mut v = body(seq.get());
                v["client_request_id"] = Value::String(crid.to_string());
                v
            },
            Utc::now(),
        )
        .unwrap();
    crid
}

#[tokio::test]
async fn offline_operations_reach_the_ledger_once_and_refusals_are_kept() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let journal: SharedJournal = Arc::new(Mutex::new(
        Journal::open(&dir.path().join("journal.db")).unwrap(),
    ));
    let funded = uid(1);
    l.fund(&funded, 2000).await;

    // Three offline sales, a void of the second, and a top-up a bar terminal may not make.
    journal_offline(&journal, OperationKind::Order, &funded, -450, |s| {
        order_body(&funded, s, &[("beer-05", 1, 450)], "offline")
    });
    let second = journal_offline(&journal, OperationKind::Order, &funded, -900, |s| {
        order_body(&funded, s, &[("cocktail", 1, 900)], "offline")
    });
    journal_offline(&journal, OperationKind::Order, &uid(2), -200, |s| {
        order_body(&uid(2), s, &[("water", 1, 200)], "offline")
    });
    journal_offline(&journal, OperationKind::Void, &funded, 900, |s| {
        void_body(&second.to_string(), s, "staff_error", "s-bar")
    });
    journal_offline(&journal, OperationKind::Recharge, &funded, 500, |s| {
        recharge_body(&funded, s, 500, "cash", "offline")
    });

    // The network is down: nothing changes but the attempt counters.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = LedgerClient::new(
        &format!("http://{}", closed.local_addr().unwrap()),
        &l.bar_token,
        500,
    )
    .unwrap();
    drop(closed);
    assert!(replay_round(&journal, &dead, 500, Utc::now).await.is_err());
    {
        let j = journal.lock().unwrap();
        let pending = j.pending(100).unwrap();
        assert_eq!(pending.len(), 5);
        assert!(
            pending
                .iter()
                .all(|e| e.attempts == 1 && e.last_error.is_some())
        );
    }
    assert_eq!(l.balance(&funded).await, 2000, "nothing reached the ledger");

    // The network is back: in two batches of 3 and 2, everything is settled by its own answer.
    let client = LedgerClient::new(&l.base_url, &l.bar_token, 1500).unwrap();
    let first = replay_round(&journal, &client, 3, Utc::now).await.unwrap();
    assert_eq!(
        first,
        ReplayReport {
            sent: 3,
            acknowledged: 3,
            rejected: 0,
            retry: 0
        }
    );
    let second_round = replay_round(&journal, &client, 3, Utc::now).await.unwrap();
    assert_eq!(
        second_round,
        ReplayReport {
            sent: 2,
            acknowledged: 1,
            rejected: 1,
            retry: 0
        }
    );
    assert_eq!(
        replay_round(&journal, &client, 3, Utc::now).await.unwrap(),
        ReplayReport::default()
    );
    let counts = journal.lock().unwrap().counts().unwrap();
    assert_eq!((counts.pending, counts.synced, counts.rejected), (0, 4, 1));
    let rejected = journal.lock().unwrap().unacknowledged(None, 10).unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].ledger_status,
        Some(403),
        "the refusal is kept with the answer"
    );

    // 2000 - 450 - 900 + 900; the unknown card was created in debt and blocked.
    assert_eq!(l.balance(&funded).await, 1550);
    assert_eq!(l.balance(&uid(2)).await, -200);

    // A second replay of everything (say, after a crash before the journal was updated)
    // changes nothing at the ledger.
    let before = l.db_fingerprint();
    let ops: Vec<Value> = {
        let j = journal.lock().unwrap();
        (1..=4)
            .map(|n| {
                let e = j
                    .entry(cashless::domain::TerminalSeq::new(n).unwrap())
                    .unwrap()
                    .unwrap();
                let mut v = e.request().unwrap();
                v["type"] = Value::String(e.operation.as_str().to_owned());
                v
            })
            .collect()
    };
    let answers = client.post_batch(&ops).await.unwrap();
    assert!(answers.iter().all(|a| a.status == 201), "{answers:?}");
    assert_eq!(l.db_fingerprint(), before);

    // The card feed fills the replica; the ledger's view now includes every synced charge.
    let cards = pull_card_feed(&journal, &client, Utc::now).await.unwrap();
    assert!(cards >= 2, "{cards}");
    let j = journal.lock().unwrap();
    let (replica, _) = j
        .replica_card(&CardUid::parse(&funded).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(replica.balance, Cents::new(1550));
    assert!(!replica.blocked);
    let (debtor, _) = j
        .replica_card(&CardUid::parse(&uid(2)).unwrap())
        .unwrap()
        .unwrap();
    assert!(debtor.blocked, "a card in debt is blocked in the replica");
    assert_eq!(
        j.local_charges(&CardUid::parse(&funded).unwrap()).unwrap(),
        Cents::ZERO
    );
    drop(j);
    l.assert_audit_ok();
}
