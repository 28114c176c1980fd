//! `kill -9` of the ledger in the middle of a stream of payments, and `cashless ledger audit`
//! against books corrupted on purpose.
//!
//! The crash test runs several rounds on one database. In each round, concurrent clients send
//! online orders (two bar terminals), online top-ups (the checkpoint) and batches of offline
//! orders (a sync worker) with fresh `client_request_id`s, and record for every operation
//! whether an answer arrived. At a seeded moment (after N acknowledged operations) the server
//! is SIGKILLed and restarted on the same database. Then, for every operation of every round so
//! far:
//! - an acknowledged one, posted alone, replays with `Idempotent-Replayed: true`, the same
//!   status and the same body (also one that was acknowledged inside a batch);
//! - an unacknowledged one is re-sent: it is either a replay (it was committed before the
//!   kill) or processed now; a second re-send is a replay of that outcome;
//! - every batch re-sent whole answers each operation's stored outcome;
//! - every card's balance is its funding plus the effect of every approved operation, and the
//!   database holds one row per approved operation and none for the others;
//! - `cashless ledger audit` exits 0.
//!
//! Both tests run on both backends (`sqlite::`, `postgres::`): on PostgreSQL the ledger
//! process is killed and restarted against the same database, and the books are corrupted
//! past the append-only triggers, as the server's superuser could ([`Ledger::tamper`]).
//!
//! Seed: `CASHLESS_CRASH_SEED` (decimal), printed at the start so a failure can be rerun.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Cell, Ledger, uid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Cards the stream pays with.
const CARDS: u32 = 6;
/// What each card is funded with before the first round.
const FUNDING_CENTS: i64 = 30_000;
/// Concurrent clients selling (orders).
const ORDER_CLIENTS: usize = 6;
/// Concurrent clients topping up.
const TOPUP_CLIENTS: usize = 2;
/// Concurrent clients replaying batches of offline orders, like a terminal's sync worker.
const BATCH_CLIENTS: usize = 1;
/// Upper bound of operations one client sends in one round (the kill comes long before).
const OPS_PER_CLIENT_MAX: usize = 2_000;
/// One round may not take longer than this before the kill.
const ROUND_DEADLINE: Duration = Duration::from_secs(120);
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a re-sent operation may keep answering 409 `DUPLICATE_REQUEST` after a restart.
const IN_PROGRESS_DEADLINE: Duration = Duration::from_secs(15);
/// (lowest, highest) number of acknowledged operations of a round before the kill.
const KILL_MOMENTS: &[(usize, usize)] = &[
    (1, 4),
    (10, 30),
    (30, 80),
    (80, 160),
    (160, 300),
    (300, 500),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Order,
    Recharge,
}

/// An answer as received.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

/// One operation of the stream.
#[derive(Debug, Clone)]
struct Op {
    kind: OpKind,
    round: usize,
    /// The bearer token it was sent with.
    token: String,
    card: String,
    /// Exactly what was sent (re-sent byte-identical).
    body: Value,
    /// The answer seen before the kill, if any.
    acked: Option<Answer>,
    /// The outcome established after a restart, for an operation that had no answer.
    resolved: Option<Answer>,
    /// The batch it was sent in, if it was (`round-client-number`).
    batch: Option<String>,
}

impl Op {
    fn path(&self) -> &'static str {
        match self.kind {
            OpKind::Order => "/v1/orders",
            OpKind::Recharge => "/v1/recharges",
        }
    }

    /// Whether an answer with this status is a final, stored outcome of this operation.
    fn settles(&self, status: u16) -> bool {
        match (self.kind, self.body["mode"].as_str()) {
            // Offline sales are applied whatever the balance or the card's state.
            (OpKind::Order, Some("offline")) => status == 201,
            // Declined for funds, or blocked after offline sales drove the card below zero.
            (OpKind::Order, _) => matches!(status, 201 | 402 | 423),
            // Declined past the balance limit.
            (OpKind::Recharge, _) => matches!(status, 201 | 422),
        }
    }

    fn crid(&self) -> &str {
        self.body["client_request_id"].as_str().unwrap()
    }

    /// The final outcome: the acknowledged answer or the resolved one.
    fn outcome(&self) -> Option<&Answer> {
        self.acked.as_ref().or(self.resolved.as_ref())
    }

    /// The change of the card's balance if the outcome is an approval.
    fn effect_cents(&self) -> i64 {
        match (self.kind, self.outcome()) {
            (OpKind::Order, Some(a)) if a.status == 201 => {
                -self.body["total_cents"].as_i64().unwrap()
            }
            (OpKind::Recharge, Some(a)) if a.status == 201 => {
                self.body["amount_cents"].as_i64().unwrap()
            }
            _ => 0,
        }
    }
}

/// Sends one request; `Err` when no complete answer arrived (refused, reset, timeout).
async fn send(
    client: &reqwest::Client,
    base_url: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<Answer, String> {
    let resp = client
        .post(format!("{base_url}{path}"))
        .bearer_auth(token)
        .json(body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let raw = resp.bytes().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_slice(&raw).map_err(|e| {
        format!(
            "HTTP {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&raw)
        )
    })?;
    Ok(Answer {
        status,
        body,
        replayed,
    })
}

/// Per-terminal `terminal_seq` counters shared by the clients.
struct Seqs {
    bar: AtomicI64,
    bar2: AtomicI64,
    checkpoint: AtomicI64,
}

/// What the clients of a round share.
struct Stream {
    base_url: String,
    client: reqwest::Client,
    round: usize,
    tokens: (String, String, String),
    seqs: Arc<Seqs>,
    ops: Arc<Mutex<Vec<Op>>>,
    acked: AtomicUsize,
    stop: AtomicBool,
    /// Answers that no correct ledger gives to a fresh request (5xx, 409, 400, ...).
    unexpected: Mutex<Vec<String>>,
}

/// One client: sends operations until the server stops answering.
async fn client_loop(stream: Arc<Stream>, client_no: usize, kind: OpKind, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let products = [("beer-05", 450), ("water", 200), ("cocktail", 900)];
    for _ in 0..OPS_PER_CLIENT_MAX {
        if stream.stop.load(Ordering::SeqCst) {
            return;
        }
        let card = uid(rng.random_range(1..=CARDS));
        let (token, body) = match kind {
            OpKind::Order => {
                let (token, seq) = if client_no.is_multiple_of(2) {
                    (
                        &stream.tokens.0,
                        stream.seqs.bar.fetch_add(1, Ordering::SeqCst),
                    )
                } else {
                    (
                        &stream.tokens.1,
                        stream.seqs.bar2.fetch_add(1, Ordering::SeqCst),
                    )
                };
                let lines = rng.random_range(1..=3);
                let items: Vec<(&str, i64, i64)> = (0..lines)
                    .map(|_| {
                        let (p, price) = products[rng.random_range(0..products.len())];
                        (p, rng.random_range(1..=3), price)
                    })
                    .collect();
                (
                    token.clone(),
                    common::order_body(&card, seq, &items, "online"),
                )
            }
            OpKind::Recharge => {
                let seq = stream.seqs.checkpoint.fetch_add(1, Ordering::SeqCst);
                let amount = [1_000, 2_500, 5_000, 10_000][rng.random_range(0..4)];
                let method = if rng.random_bool(0.5) { "cash" } else { "card" };
                (
                    stream.tokens.2.clone(),
                    common::recharge_body(&card, seq, amount, method, "online"),
                )
            }
        };
        let op = Op {
            kind,
            round: stream.round,
            token,
            card,
            body,
            acked: None,
            resolved: None,
            batch: None,
        };
        let (path, token, body) = (op.path(), op.token.clone(), op.body.clone());
        let index = {
            let mut ops = stream.ops.lock().unwrap();
            ops.push(op);
            ops.len() - 1
        };
        match send(&stream.client, &stream.base_url, path, &token, &body).await {
            Ok(answer) => {
                let expected = stream.ops.lock().unwrap()[index].settles(answer.status);
                if !expected || answer.replayed {
                    stream.unexpected.lock().unwrap().push(format!(
                        "{path} {}: HTTP {} (replayed: {}) {}",
                        body["client_request_id"], answer.status, answer.replayed, answer.body
                    ));
                }
                stream.ops.lock().unwrap()[index].acked = Some(answer);
                stream.acked.fetch_add(1, Ordering::SeqCst);
            }
            // The server is gone: this request is in doubt, and so would be every next one.
            Err(_) => return,
        }
    }
}

/// One sync worker: batches of 2 to 10 offline orders of bar-2, until the server is gone.
async fn batch_client_loop(stream: Arc<Stream>, client_no: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let products = [("beer-05", 450), ("water", 200), ("cocktail", 900)];
    for batch_no in 0..OPS_PER_CLIENT_MAX / 10 {
        if stream.stop.load(Ordering::SeqCst) {
            return;
        }
        let batch_id = format!("{}-{client_no}-{batch_no}", stream.round);
        let count = rng.random_range(2..=10);
        let mut indexes = Vec::with_capacity(count);
        let mut wire = Vec::with_capacity(count);
        {
            let mut ops = stream.ops.lock().unwrap();
            for _ in 0..count {
                let card = uid(rng.random_range(1..=CARDS));
                let seq = stream.seqs.bar2.fetch_add(1, Ordering::SeqCst);
                let (product, price) = products[rng.random_range(0..products.len())];
                let quantity = rng.random_range(1..=2);
                let body = common::order_body(&card, seq, &[(product, quantity, price)], "offline");
                let mut op = body.clone();
                op["type"] = json!("order");
                wire.push(op);
                ops.push(Op {
                    kind: OpKind::Order,
                    round: stream.round,
                    token: stream.tokens.1.clone(),
                    card,
                    body,
                    acked: None,
                    resolved: None,
                    batch: Some(batch_id.clone()),
                });
                indexes.push(ops.len() - 1);
            }
        }
        let envelope = json!({ "operations": wire });
        let answer = match send(
            &stream.client,
            &stream.base_url,
            "/v1/batch",
            &stream.tokens.1,
            &envelope,
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => return,
        };
        let results = answer.body["results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if answer.status != 200 || results.len() != count {
            stream.unexpected.lock().unwrap().push(format!(
                "batch {batch_id}: HTTP {} with {} results for {count} operations: {}",
                answer.status,
                results.len(),
                answer.body
            ));
            return;
        }
        let mut ops = stream.ops.lock().unwrap();
        for (result, &index) in results.iter().zip(&indexes) {
            let op = &mut ops[index];
            let status = result["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0);
            if !op.settles(status) || result["client_request_id"] != json!(op.crid()) {
                stream
                    .unexpected
                    .lock()
                    .unwrap()
                    .push(format!("batch {batch_id}: unexpected result {result}"));
            }
            op.acked = Some(Answer {
                status,
                body: result["body"].clone(),
                replayed: false,
            });
        }
        drop(ops);
        stream.acked.fetch_add(count, Ordering::SeqCst);
    }
}

/// Every batch sent so far, re-sent whole: each result is the operation's stored outcome.
async fn verify_batches(ledger: &Ledger, ops: &[Op]) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut batches: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let Some(id) = &op.batch {
            batches.entry(id.as_str()).or_default().push(op);
        }
    }
    let mut problems = Vec::new();
    for (id, members) in batches {
        let wire: Vec<Value> = members
            .iter()
            .map(|op| {
                let mut v = op.body.clone();
                v["type"] = json!("order");
                v
            })
            .collect();
        let envelope = json!({ "operations": wire });
        let answer = match send(
            &client,
            &ledger.base_url,
            "/v1/batch",
            &members[0].token,
            &envelope,
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("batch {id}: no answer to the re-send: {e}"));
                continue;
            }
        };
        for (i, op) in members.iter().enumerate() {
            let result = &answer.body["results"][i];
            let want = op.outcome().map(|a| (json!(a.status), a.body.clone()));
            if want != Some((result["status"].clone(), result["body"].clone())) {
                problems.push(format!(
                    "batch {id}, operation {i} ({}): re-sent batch answered {result}, stored outcome {:?}",
                    op.crid(),
                    op.outcome()
                ));
            }
        }
    }
    problems
}

/// Runs one round: the clients stream until `kill_after` answers arrived, then SIGKILL.
async fn crash_round(
    ledger: &mut Ledger,
    round: usize,
    kill_after: usize,
    seed: u64,
    seqs: &Arc<Seqs>,
    ops: &Arc<Mutex<Vec<Op>>>,
) -> Vec<String> {
    let stream = Arc::new(Stream {
        base_url: ledger.base_url.clone(),
        client: reqwest::Client::builder().build().unwrap(),
        round,
        tokens: (
            ledger.bar_token.clone(),
            ledger.bar2_token.clone(),
            ledger.checkpoint_token.clone(),
        ),
        seqs: Arc::clone(seqs),
        ops: Arc::clone(ops),
        acked: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        unexpected: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::new();
    for n in 0..ORDER_CLIENTS + TOPUP_CLIENTS {
        let kind = if n < ORDER_CLIENTS {
            OpKind::Order
        } else {
            OpKind::Recharge
        };
        tasks.push(tokio::spawn(client_loop(
            Arc::clone(&stream),
            n,
            kind,
            seed ^ ((round as u64) << 32) ^ n as u64,
        )));
    }
    for n in ORDER_CLIENTS + TOPUP_CLIENTS..ORDER_CLIENTS + TOPUP_CLIENTS + BATCH_CLIENTS {
        tasks.push(tokio::spawn(batch_client_loop(
            Arc::clone(&stream),
            n,
            seed ^ ((round as u64) << 32) ^ n as u64,
        )));
    }
    let started = Instant::now();
    while stream.acked.load(Ordering::SeqCst) < kill_after {
        assert!(
            started.elapsed() < ROUND_DEADLINE,
            "round {round}: only {} answers within {ROUND_DEADLINE:?}; server log:\n{}",
            stream.acked.load(Ordering::SeqCst),
            ledger.server_log()
        );
        assert!(
            !tasks.iter().all(|t| t.is_finished()),
            "round {round}: every client stopped after {} answers, before the kill; server log:\n{}",
            stream.acked.load(Ordering::SeqCst),
            ledger.server_log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ledger.kill9().await;
    stream.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let unexpected = stream.unexpected.lock().unwrap().clone();
    unexpected
        .into_iter()
        .map(|u| format!("round {round}, before the kill: {u}"))
        .collect()
}

/// After a restart: every operation so far is replayed or resolved; returns the problems.
async fn verify_after_restart(ledger: &Ledger, ops: &mut [Op]) -> Vec<String> {
    let client = reqwest::Client::new();
    let base = ledger.base_url.clone();
    let mut problems = Vec::new();
    for op in ops.iter_mut() {
        let crid = op.crid().to_owned();
        if let Some(first) = op.outcome().cloned() {
            // Known outcome: must come back as a replay of exactly that answer.
            match send(&client, &base, op.path(), &op.token, &op.body).await {
                Ok(again) => {
                    if !again.replayed || again.status != first.status || again.body != first.body {
                        problems.push(format!(
                            "{} {crid} (round {}, {}): expected a replay of HTTP {} {}, got HTTP {} (replayed: {}) {}",
                            op.path(),
                            op.round,
                            if op.acked.is_some() { "acknowledged" } else { "resolved earlier" },
                            first.status,
                            first.body,
                            again.status,
                            again.replayed,
                            again.body
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "{} {crid}: no answer after the restart: {e}",
                    op.path()
                )),
            }
            continue;
        }
        // In doubt: the first re-send applies it (or finds it applied), the second replays.
        let first = match resend_until_settled(&client, &base, op).await {
            Ok(answer) => answer,
            Err(e) => {
                problems.push(format!(
                    "{} {crid} (in doubt, round {}): {e}",
                    op.path(),
                    op.round
                ));
                continue;
            }
        };
        if !op.settles(first.status) {
            problems.push(format!(
                "{} {crid} (in doubt, round {}): re-send answered HTTP {} {}",
                op.path(),
                op.round,
                first.status,
                first.body
            ));
            continue;
        }
        match send(&client, &base, op.path(), &op.token, &op.body).await {
            Ok(second) if second.replayed && second.status == first.status && second.body == first.body => {}
            Ok(second) => problems.push(format!(
                "{} {crid} (in doubt, round {}): second re-send is not a replay of HTTP {} {}: HTTP {} (replayed: {}) {}",
                op.path(),
                op.round,
                first.status,
                first.body,
                second.status,
                second.replayed,
                second.body
            )),
            Err(e) => problems.push(format!("{} {crid}: no answer to the second re-send: {e}", op.path())),
        }
        op.resolved = Some(first);
    }
    problems
}

/// Re-sends an in-doubt operation; a 409 `DUPLICATE_REQUEST` (still marked in progress) is
/// retried for a while, since no process is working on it after the restart.
async fn resend_until_settled(
    client: &reqwest::Client,
    base: &str,
    op: &Op,
) -> Result<Answer, String> {
    let started = Instant::now();
    loop {
        let answer = send(client, base, op.path(), &op.token, &op.body).await?;
        let in_progress =
            answer.status == 409 && answer.body["error"]["code"] == json!("DUPLICATE_REQUEST");
        if !in_progress {
            return Ok(answer);
        }
        if started.elapsed() > IN_PROGRESS_DEADLINE {
            return Err(format!(
                "still 409 DUPLICATE_REQUEST {IN_PROGRESS_DEADLINE:?} after the restart: the in-progress mark survived the crash"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Balances: funding plus every approved operation; checks each approval's own arithmetic.
async fn verify_balances(ledger: &Ledger, ops: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected: BTreeMap<String, i64> =
        (1..=CARDS).map(|n| (uid(n), FUNDING_CENTS)).collect();
    for op in ops {
        *expected.get_mut(&op.card).unwrap() += op.effect_cents();
        if let Some(a) = op.outcome().filter(|a| a.status == 201) {
            let prev = a.body["previous_balance_cents"]
                .as_i64()
                .unwrap_or(i64::MIN);
            let new = a.body["new_balance_cents"].as_i64().unwrap_or(i64::MIN);
            if new - prev != op.effect_cents() || a.body["card_uid"] != json!(op.card) {
                problems.push(format!(
                    "{} {}: approval does not add up: {}",
                    op.path(),
                    op.crid(),
                    a.body
                ));
            }
        }
    }
    for (card, want) in &expected {
        let got = ledger.balance(card).await;
        if got != *want {
            problems.push(format!(
                "card {card}: balance {got}, expected {want} from the approved operations"
            ));
        }
    }
    // The same from the database: one row per approved operation, none for the others.
    for op in ops {
        let table = match op.kind {
            OpKind::Order => "bar_orders",
            OpKind::Recharge => "recharges",
        };
        let rows = ledger.query_i64(&format!(
            "SELECT COUNT(*) FROM {table} WHERE client_request_id = '{}'",
            op.crid()
        ));
        let approved = op.outcome().is_some_and(|a| a.status == 201);
        if rows != i64::from(approved) {
            problems.push(format!(
                "{table} has {rows} rows for {} (approved: {approved})",
                op.crid()
            ));
        }
    }
    problems
}

fn audit_text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn seed() -> u64 {
    std::env::var("CASHLESS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE)
}

async fn kill9_mid_stream_loses_nothing_and_applies_nothing_twice(backend: Backend) {
    let seed = seed();
    eprintln!("CASHLESS_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ledger = Ledger::start_on(backend).await;
    let seqs = Arc::new(Seqs {
        bar: AtomicI64::new(1),
        bar2: AtomicI64::new(1),
        checkpoint: AtomicI64::new(1),
    });
    let client = reqwest::Client::new();
    for n in 1..=CARDS {
        let seq = seqs.checkpoint.fetch_add(1, Ordering::SeqCst);
        let body = common::recharge_body(&uid(n), seq, FUNDING_CENTS, "cash", "online");
        let answer = send(
            &client,
            &ledger.base_url,
            "/v1/recharges",
            &ledger.checkpoint_token,
            &body,
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 201, "funding {}: {}", uid(n), answer.body);
    }
    let ops = Arc::new(Mutex::new(Vec::<Op>::new()));
    let mut problems = Vec::new();
    for (round, (low, high)) in KILL_MOMENTS.iter().enumerate() {
        let kill_after = rng.random_range(*low..=*high);
        problems.extend(crash_round(&mut ledger, round, kill_after, seed, &seqs, &ops).await);
        ledger.restart().await;
        let mut all = ops.lock().unwrap().clone();
        let this_round = all.iter().filter(|o| o.round == round).count();
        let in_doubt = all
            .iter()
            .filter(|o| o.round == round && o.acked.is_none())
            .count();
        problems.extend(verify_after_restart(&ledger, &mut all).await);
        let applied_in_doubt = all
            .iter()
            .filter(|o| {
                o.round == round
                    && o.acked.is_none()
                    && o.resolved.as_ref().is_some_and(|a| a.replayed)
            })
            .count();
        eprintln!(
            "round {round}: killed after {kill_after} answers; {this_round} operations sent, {in_doubt} in doubt, \
             {applied_in_doubt} of those had been committed before the kill"
        );
        problems.extend(verify_balances(&ledger, &all).await);
        problems.extend(verify_batches(&ledger, &all).await);
        let audit = ledger.audit();
        if !audit.status.success() {
            problems.push(format!(
                "round {round}: audit failed: {}",
                audit_text(&audit)
            ));
        }
        *ops.lock().unwrap() = all;
        assert!(
            problems.is_empty(),
            "after the kill of round {round} (seed {seed}):\n{}\n--- server log (tail) ---\n{}",
            problems.join("\n"),
            {
                let log = ledger.server_log();
                log[log.len().saturating_sub(4000)..].to_owned()
            }
        );
    }
    // In-doubt operations are resolved by now: a last pass over everything after one more
    // restart proves they stay resolved.
    ledger.restart().await;
    let mut all = ops.lock().unwrap().clone();
    assert!(all.iter().all(|o| o.outcome().is_some()));
    let mut last = verify_after_restart(&ledger, &mut all).await;
    last.extend(verify_balances(&ledger, &all).await);
    last.extend(verify_batches(&ledger, &all).await);
    assert!(
        last.is_empty(),
        "after the final restart:\n{}",
        last.join("\n")
    );
    ledger.assert_audit_ok();
}

/// The first posting of `account_condition` (a SQL condition on `account`), by
/// `posting_id` in `order`: (posting_id, transaction_id).
fn posting(ledger: &Ledger, account_condition: &str, order: &str) -> (i64, String) {
    let rows = ledger.query(&format!(
        "SELECT posting_id, transaction_id FROM postings WHERE account {account_condition}
         ORDER BY posting_id {order} LIMIT 1"
    ));
    match rows.rows.as_slice() {
        [row] => match row.as_slice() {
            [Cell::Int(id), Cell::Text(tx)] => (*id, tx.clone()),
            other => panic!("not a posting: {other:?}"),
        },
        other => panic!("no posting {account_condition}: {other:?}"),
    }
}

async fn audit_catches_a_corrupted_balance_and_unbalanced_postings(backend: Backend) {
    let mut ledger = Ledger::start_on(backend).await;
    let (victim, bystander) = (uid(77), uid(78));
    for card in [&victim, &bystander] {
        ledger.fund(card, 10_000).await;
        let order = common::order_body(
            card,
            ledger.seq(&ledger.bar_token),
            &[("beer-05", 2, 450), ("water", 1, 200)],
            "online",
        );
        ledger
            .post("/v1/orders", &ledger.bar_token, &order)
            .await
            .assert_status(201);
    }
    let clean = ledger.audit();
    assert!(
        clean.status.success(),
        "audit of clean books: {}",
        audit_text(&clean)
    );
    ledger.kill9().await;

    // 1. A card's balance no longer equals the sum of its postings.
    let changed = ledger.tamper(&format!(
        "UPDATE cards SET balance_cents = balance_cents + 1 WHERE card_uid = '{victim}'"
    ));
    assert_eq!(changed, 1);
    let out = ledger.audit();
    let text = audit_text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "audit must exit 1 for a corrupted balance: {text}"
    );
    assert!(
        text.contains(&victim),
        "audit must name the corrupted card {victim}: {text}"
    );
    assert!(
        !text.contains(&bystander),
        "audit names the intact card {bystander}: {text}"
    );
    ledger.tamper(&format!(
        "UPDATE cards SET balance_cents = balance_cents - 1 WHERE card_uid = '{victim}'"
    ));
    let out = ledger.audit();
    assert!(
        out.status.success(),
        "audit after the repair: {}",
        audit_text(&out)
    );

    // 2. A revenue posting changed: card balances still match their postings, but the
    //    postings no longer sum to zero.
    let (posting_id, transaction_id) = posting(&ledger, "LIKE 'revenue:%'", "ASC");
    ledger.tamper(&format!(
        "UPDATE postings SET amount_cents = amount_cents + 1 WHERE posting_id = {posting_id}"
    ));
    let out = ledger.audit();
    let text = audit_text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "audit must exit 1 when postings do not sum to zero: {text}"
    );
    assert!(
        text.contains(&transaction_id),
        "audit must name the unbalanced transaction {transaction_id}: {text}"
    );
    assert!(
        !text.contains(&victim) && !text.contains(&bystander),
        "no card balance is wrong, yet audit names a card: {text}"
    );
    ledger.tamper(&format!(
        "UPDATE postings SET amount_cents = amount_cents - 1 WHERE posting_id = {posting_id}"
    ));
    assert!(
        ledger.audit().status.success(),
        "audit after the second repair"
    );

    // 3. A card posting changed: both the card and the transaction are wrong.
    let (posting_id, transaction_id) = posting(&ledger, &format!("= 'card:{bystander}'"), "DESC");
    ledger.tamper(&format!(
        "UPDATE postings SET amount_cents = amount_cents - 7 WHERE posting_id = {posting_id}"
    ));
    let out = ledger.audit();
    let text = audit_text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "audit must exit 1 for a corrupted card posting: {text}"
    );
    assert!(
        text.contains(&bystander),
        "audit must name the card {bystander}: {text}"
    );
    assert!(
        text.contains(&transaction_id),
        "audit must name the transaction {transaction_id}: {text}"
    );
    assert!(
        !text.contains(&victim),
        "audit names the intact card {victim}: {text}"
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        lines >= 2,
        "one line per discrepancy (card and transaction), got: {text}"
    );

    // The server still starts on the database (audit is read-only and changed nothing).
    ledger.restart().await;
    assert_eq!(ledger.balance(&victim).await, 10_000 - 1_100);
}

// Every test above that takes a `Backend` runs on both: `sqlite::NAME`, `postgres::NAME`.
on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] kill9_mid_stream_loses_nothing_and_applies_nothing_twice,
    audit_catches_a_corrupted_balance_and_unbalanced_postings,
}
