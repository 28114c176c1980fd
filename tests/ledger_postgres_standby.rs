//! A synchronous streaming-replication standby (issue 14): the ledger on PostgreSQL with a
//! URL naming both servers (`host=a,b`, `target_session_attrs=read-write`), the primary
//! killed with `kill -9` while orders stream in, the standby promoted.
//!
//! Both servers are this test's own (`common/pg_server.rs`: `initdb`, `pg_basebackup`,
//! `pg_ctl` on free ports). The primary waits for the standby to have each commit before it
//! answers (`synchronous_standby_names = '*'`), so every operation the ledger acknowledged
//! is on the standby when the primary dies. What must hold: the ledger, never restarted,
//! answers again within a few seconds of the promotion; every acknowledged top-up is on the
//! new primary exactly once; every one that got no answer, sent again with its
//! `client_request_id` as a terminal does, lands once; the balances are what the top-ups add
//! up to; `cashless ledger audit` passes on the new primary.
#![allow(clippy::unwrap_used)]

mod common;

use common::pg_server::PgServer;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Short `[postgres]` timeouts, so that a dead server fails calls quickly.
const CONFIG: &str = "[postgres]\npool_max_size = 8\nconnect_timeout_ms = 1000\n\
                      pool_wait_timeout_ms = 1000\nstatement_timeout_ms = 2000\n";
/// Concurrent clients, each topping up a card of its own.
const CLIENTS: u32 = 4;
const TOPUP_CENTS: i64 = 100;
/// Acknowledgements before the primary dies, and after the promotion.
const ACKS_BEFORE: usize = 40;
const ACKS_AFTER: usize = 40;
/// From the promotion to the first acknowledgement, at most.
const BACK_WITHIN: Duration = Duration::from_secs(10);
const PHASE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Stream {
    /// Every request sent, by `client_request_id`: (card, body).
    sent: BTreeMap<String, (String, Value)>,
    /// Acknowledged (201), with their transaction ids.
    acked: BTreeMap<String, String>,
    /// When each acknowledgement came.
    ack_times: Vec<Instant>,
    /// 503 answers: the ledger without a writable database.
    refused: usize,
}

async fn client(l: Arc<Ledger>, c: u32, stream: Arc<Mutex<Stream>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let card = uid(500 + c);
        let seq = l.seq(&l.checkpoint_token);
        let body = recharge_body(&card, seq, TOPUP_CENTS, "cash", "online");
        let id = crid(&body);
        stream
            .lock()
            .unwrap()
            .sent
            .insert(id.clone(), (card.clone(), body.clone()));
        let resp = l.post("/v1/recharges", &l.checkpoint_token, &body).await;
        if resp.status == 201 {
            let mut s = stream.lock().unwrap();
            s.acked
                .insert(id, resp.body["transaction_id"].as_str().unwrap().to_owned());
            s.ack_times.push(Instant::now());
        } else {
            assert!(
                resp.status == 503,
                "only the database's unavailability may refuse a top-up: {} {:?}",
                resp.status,
                resp.body
            );
            stream.lock().unwrap().refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn wait_acks(stream: &Mutex<Stream>, at_least: usize) {
    wait_for("acknowledgements", PHASE_DEADLINE, || {
        stream.lock().unwrap().acked.len() >= at_least
    })
    .await;
}

#[tokio::test]
async fn the_ledger_rides_a_failover_to_a_synchronous_standby_losing_nothing() {
    let primary = PgServer::start_primary_of_sync_standby();
    let standby = PgServer::standby_of(&primary);
    primary.wait_for_sync_standby();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let l = Arc::new(Ledger::start_on_postgres_server(&url, CONFIG).await);
    let stream = Arc::new(Mutex::new(Stream::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                Arc::clone(&l),
                c,
                Arc::clone(&stream),
                Arc::clone(&stop),
            ))
        })
        .collect();

    wait_acks(&stream, ACKS_BEFORE).await;
    primary.kill9();
    let acked_at_kill = stream.lock().unwrap().acked.len();
    // The primary's machine stays dead for a moment before the operator promotes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    standby.promote();
    let promoted = Instant::now();
    wait_acks(&stream, acked_at_kill + ACKS_AFTER).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    // The failover was seen: requests were refused between the kill and the promotion.
    assert!(
        stream.lock().unwrap().refused > 0,
        "no request saw the primary gone"
    );
    let first_after = stream
        .lock()
        .unwrap()
        .ack_times
        .iter()
        .copied()
        .find(|t| *t > promoted)
        .unwrap();
    assert!(
        first_after - promoted <= BACK_WITHIN,
        "the ledger answered {:?} after the promotion",
        first_after - promoted
    );

    // Every request that got no answer, sent again as a terminal does: applied once, or
    // answered with what was applied.
    let (sent, mut acked) = {
        let s = stream.lock().unwrap();
        (s.sent.clone(), s.acked.clone())
    };
    for (id, (_, body)) in &sent {
        if acked.contains_key(id) {
            continue;
        }
        let resp = l.post("/v1/recharges", &l.checkpoint_token, body).await;
        assert_eq!(resp.status, 201, "{id}: {:?}", resp.body);
        acked.insert(
            id.clone(),
            resp.body["transaction_id"].as_str().unwrap().to_owned(),
        );
    }
    // On the new primary: each acknowledged top-up once, with the transaction id it was
    // acknowledged with, and nothing else.
    let rows = l.query_json(
        "SELECT client_request_id::text AS id, transaction_id::text AS t FROM recharges",
    );
    let mut on_disk: BTreeMap<String, String> = BTreeMap::new();
    for row in rows {
        let id = row["id"].as_str().unwrap().to_owned();
        assert!(
            on_disk
                .insert(id.clone(), row["t"].as_str().unwrap().to_owned())
                .is_none(),
            "{id} twice"
        );
    }
    for (id, t) in &acked {
        assert_eq!(on_disk.get(id), Some(t), "acknowledged top-up {id}");
    }
    // The balances are what was sent, once each.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (card, _) in sent.values() {
        *expected.entry(card.clone()).or_default() += TOPUP_CENTS;
    }
    for (card, cents) in &expected {
        assert_eq!(l.balance(card).await, *cents, "{card}");
    }
    l.assert_audit_ok();
}
