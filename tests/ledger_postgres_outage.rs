//! The ledger while its PostgreSQL server is down or restarting, against a server the test
//! starts itself (`common/pg_server.rs`: Debian's `initdb` and `pg_ctl` in a temporary
//! directory on a free port; the shared server is never stopped).
//!
//! What must hold while the database is gone: `/health` keeps answering 200 (the process
//! lives), `/ready` answers 503 `DATABASE_ERROR`, every money request is answered 503
//! `DATABASE_ERROR` (retryable) within a bound derived from the configured `[postgres]`
//! timeouts instead of hanging, and the ledger recovers by itself once the server is back
//! (no restart of the ledger). Afterwards, retrying every unacknowledged request with its
//! `client_request_id` (as a terminal does) gets it applied, every operation is in the
//! books exactly once, the balances are what the operations add up to, and `cashless ledger
//! audit` passes.
//!
//! At startup, `serve` needs its database: without it, it exits at once with an error naming
//! the server (systemd's `Restart=on-failure` starts it again).

mod common;

use common::pg_server::{PgServer, StopMode};
use common::*;

use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `[postgres]` timeouts of the ledger under test: small, so that a refusal comes quickly.
const CONNECT_TIMEOUT_MS: u64 = 500;
const POOL_WAIT_TIMEOUT_MS: u64 = 500;
const STATEMENT_TIMEOUT_MS: u64 = 2_000;

/// The longest any answer may take while the database is down: four times what the
/// configured timeouts add up to (one request may wait for a connection, open one and run a
/// statement). Far above what a refusal takes (milliseconds: a stopped server refuses the
/// connection at once), and far below "hangs" (the defaults alone add up to 20 s, and the
/// client gives up after [`CLIENT_TIMEOUT`]).
const ANSWER_BOUND: Duration =
    Duration::from_millis(4 * (CONNECT_TIMEOUT_MS + POOL_WAIT_TIMEOUT_MS + STATEMENT_TIMEOUT_MS));
/// When the test's client stops waiting for an answer: a request without an answer by then
/// hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent clients driving operations, each on a card of its own.
const CLIENTS: u32 = 4;
/// Each card's balance before the stream starts.
const START_BALANCE_CENTS: i64 = 20_000;
/// A top-up of the stream.
const TOPUP_CENTS: i64 = 500;
/// Pause between two requests of one client, so that an outage is a few hundred refusals,
/// not tens of thousands.
const CLIENT_PAUSE: Duration = Duration::from_millis(20);
/// Acknowledgements awaited before each outage and after each recovery.
const ACKS_PER_PHASE: usize = 15;
/// Refusals awaited during each outage.
const REFUSALS_PER_OUTAGE: usize = 8;
/// How long a phase (acknowledgements, refusals, readiness) may take to come.
const PHASE_DEADLINE: Duration = Duration::from_secs(60);

fn config() -> String {
    format!(
        "[postgres]\npool_max_size = 8\nconnect_timeout_ms = {CONNECT_TIMEOUT_MS}\n\
         pool_wait_timeout_ms = {POOL_WAIT_TIMEOUT_MS}\n\
         statement_timeout_ms = {STATEMENT_TIMEOUT_MS}\n"
    )
}

/// One request of the stream and what became of it.
struct Sent {
    path: &'static str,
    token: String,
    body: Value,
    card: String,
    /// What the operation does to the card's balance once applied.
    delta_cents: i64,
    /// The first attempt's answer.
    first: Attempt,
}

#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read through Debug, in failure messages"
)]
enum Attempt {
    /// 201: the transaction id the ledger acknowledged.
    Approved(String),
    /// Any other answer: status, error code, the raw body, how long it took.
    Refused {
        status: u16,
        code: Option<String>,
        raw: String,
        took: Duration,
    },
    /// No answer at all (the connection failed, or [`CLIENT_TIMEOUT`] passed).
    NoAnswer { error: String, took: Duration },
}

impl Attempt {
    fn took(&self) -> Option<Duration> {
        match self {
            Attempt::Approved(_) => None,
            Attempt::Refused { took, .. } | Attempt::NoAnswer { took, .. } => Some(*took),
        }
    }
}

/// What the stream's clients share with the test.
struct Stream {
    sent: Mutex<Vec<Sent>>,
    acks: AtomicUsize,
    refusals: AtomicUsize,
    /// The slowest answer of any kind.
    slowest: Mutex<Duration>,
    stop: AtomicBool,
}

/// Sends `body` once, without panicking on a connection failure.
async fn attempt(ledger: &Ledger, path: &str, token: &str, body: &Value) -> Attempt {
    let started = Instant::now();
    let sent = ledger
        .client
        .post(format!("{}{path}", ledger.base_url))
        .bearer_auth(token)
        .json(body)
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => read_resp(resp).await,
        Err(e) => {
            return Attempt::NoAnswer {
                error: e.to_string(),
                took: started.elapsed(),
            };
        }
    };
    let took = started.elapsed();
    if resp.status == 201 {
        let id = resp.body["transaction_id"]
            .as_str()
            .unwrap_or_else(|| panic!("201 without transaction_id: {}", resp.body));
        return Attempt::Approved(id.to_owned());
    }
    Attempt::Refused {
        status: resp.status,
        code: resp.error_code().map(str::to_owned),
        raw: String::from_utf8_lossy(&resp.raw).into_owned(),
        took,
    }
}

/// One client: alternately an online order (a beer) and an online top-up on its card, until
/// told to stop.
async fn client(ledger: Arc<Ledger>, stream: Arc<Stream>, card: String, bar_token: String) {
    let mut n = 0u64;
    while !stream.stop.load(Ordering::SeqCst) {
        n += 1;
        let (path, token, body, delta_cents) = if n % 2 == 1 {
            let seq = ledger.seq(&bar_token);
            let body = order_body(&card, seq, &[("beer-05", 1, BEER_CENTS)], "online");
            ("/v1/orders", bar_token.clone(), body, -BEER_CENTS)
        } else {
            let token = ledger.checkpoint_token.clone();
            let seq = ledger.seq(&token);
            let body = recharge_body(&card, seq, TOPUP_CENTS, "cash", "online");
            ("/v1/recharges", token, body, TOPUP_CENTS)
        };
        let first = attempt(&ledger, path, &token, &body).await;
        let took = first.took().unwrap_or_default();
        {
            let mut slowest = stream.slowest.lock().expect("slowest lock");
            *slowest = (*slowest).max(took);
        }
        match &first {
            Attempt::Approved(_) => stream.acks.fetch_add(1, Ordering::SeqCst),
            _ => stream.refusals.fetch_add(1, Ordering::SeqCst),
        };
        stream.sent.lock().expect("sent lock").push(Sent {
            path,
            token,
            body,
            card: card.clone(),
            delta_cents,
            first,
        });
        tokio::time::sleep(CLIENT_PAUSE).await;
    }
}

/// Polls `/health` until told to stop; returns every answer that was not 200.
async fn watch_health(ledger: Arc<Ledger>, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut polls = 0;
    let mut bad = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        polls += 1;
        let answer = ledger
            .client
            .get(format!("{}/health", ledger.base_url))
            .timeout(ANSWER_BOUND)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == 200 => {}
            Ok(r) => bad.push(format!("status {}", r.status())),
            Err(e) => bad.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (polls, bad)
}

/// `GET /ready`: (status, error code), or `None` when it did not answer within the bound.
async fn ready(ledger: &Ledger) -> Option<(u16, Option<String>)> {
    let resp = ledger
        .client
        .get(format!("{}/ready", ledger.base_url))
        .timeout(ANSWER_BOUND)
        .send()
        .await
        .ok()?;
    let resp = read_resp(resp).await;
    Some((resp.status, resp.error_code().map(str::to_owned)))
}

/// Waits until `counter` has grown by `by` from `from`.
async fn wait_count(what: &str, counter: &AtomicUsize, from: usize, by: usize) {
    wait_for(what, PHASE_DEADLINE, || {
        counter.load(Ordering::SeqCst) >= from + by
    })
    .await;
}

/// One outage: `ACKS_PER_PHASE` acknowledgements first, then the server stops (`mode`),
/// `/ready` says 503 `DATABASE_ERROR` and the stream sees refusals, then the server starts
/// again and the ledger, untouched, becomes ready and acknowledges again.
async fn outage(ledger: &Ledger, pg: &PgServer, stream: &Stream, mode: StopMode) {
    wait_count(
        &format!("{ACKS_PER_PHASE} acknowledgements before the {mode:?} stop"),
        &stream.acks,
        stream.acks.load(Ordering::SeqCst),
        ACKS_PER_PHASE,
    )
    .await;
    pg.stop(mode);
    let refusals_before = stream.refusals.load(Ordering::SeqCst);
    wait_for_async(
        "/ready to answer 503 DATABASE_ERROR",
        PHASE_DEADLINE,
        || async { ready(ledger).await == Some((503, Some("DATABASE_ERROR".to_owned()))) },
    )
    .await;
    wait_count(
        &format!("{REFUSALS_PER_OUTAGE} refusals while the server is down ({mode:?})"),
        &stream.refusals,
        refusals_before,
        REFUSALS_PER_OUTAGE,
    )
    .await;
    // Still not ready, the server still being down.
    assert_eq!(
        ready(ledger).await,
        Some((503, Some("DATABASE_ERROR".to_owned()))),
        "/ready while the server is down"
    );
    pg.start_again();
    wait_for_async(
        "/ready to answer 200 once the server is back",
        PHASE_DEADLINE,
        || async { ready(ledger).await.is_some_and(|(status, _)| status == 200) },
    )
    .await;
    wait_count(
        &format!("{ACKS_PER_PHASE} acknowledgements after the {mode:?} stop"),
        &stream.acks,
        stream.acks.load(Ordering::SeqCst),
        ACKS_PER_PHASE,
    )
    .await;
}

/// Sends `sent`'s request again until it is approved (a terminal retrying with the same
/// `client_request_id`); returns the transaction id.
async fn retry_until_approved(ledger: &Ledger, sent: &Sent) -> String {
    let until = Instant::now() + PHASE_DEADLINE;
    loop {
        match attempt(ledger, sent.path, &sent.token, &sent.body).await {
            Attempt::Approved(id) => return id,
            Attempt::Refused { status: 503, .. } if Instant::now() < until => {}
            other => panic!("retry of {} {}: {other:?}", sent.path, crid(&sent.body)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_rides_out_a_crash_and_a_restart_of_its_database() {
    let pg = PgServer::start();
    let ledger = Arc::new(Ledger::start_on_postgres_server(&pg.url(), &config()).await);
    let cards: Vec<String> = (0..CLIENTS).map(|n| uid(0x4000 + n)).collect();
    for card in &cards {
        ledger.fund(card, START_BALANCE_CENTS).await;
    }
    let operations_before = ledger.count("bar_orders") + ledger.count("recharges");
    let postings_before = ledger.count("postings");

    let stream = Arc::new(Stream {
        sent: Mutex::new(Vec::new()),
        acks: AtomicUsize::new(0),
        refusals: AtomicUsize::new(0),
        slowest: Mutex::new(Duration::ZERO),
        stop: AtomicBool::new(false),
    });
    let health_stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn(watch_health(Arc::clone(&ledger), Arc::clone(&health_stop)));
    let clients: Vec<_> = cards
        .iter()
        .enumerate()
        .map(|(i, card)| {
            let bar = if i % 2 == 0 {
                ledger.bar_token.clone()
            } else {
                ledger.bar2_token.clone()
            };
            tokio::spawn(client(
                Arc::clone(&ledger),
                Arc::clone(&stream),
                card.clone(),
                bar,
            ))
        })
        .collect();

    outage(&ledger, &pg, &stream, StopMode::Immediate).await;
    outage(&ledger, &pg, &stream, StopMode::Fast).await;

    stream.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("a client panicked");
    }
    health_stop.store(true, Ordering::SeqCst);
    let (polls, bad_health) = health.await.expect("the health watcher panicked");
    assert!(polls > 10, "/health was polled only {polls} times");
    assert!(
        bad_health.is_empty(),
        "/health must answer 200 throughout, also while the database is down: {bad_health:?}"
    );

    // Every first answer: an approval, or 503 DATABASE_ERROR within the bound; never no
    // answer, never another refusal.
    let sent = std::mem::take(&mut *stream.sent.lock().unwrap());
    for s in &sent {
        match &s.first {
            Attempt::Approved(_) => {}
            Attempt::Refused {
                status: 503,
                code: Some(code),
                took,
                ..
            } if code == "DATABASE_ERROR" => assert!(
                *took <= ANSWER_BOUND,
                "a 503 took {took:?}, more than {ANSWER_BOUND:?} (the configured timeouts: \
                 connect {CONNECT_TIMEOUT_MS} ms, pool wait {POOL_WAIT_TIMEOUT_MS} ms, \
                 statement {STATEMENT_TIMEOUT_MS} ms)"
            ),
            other => panic!(
                "{} {} got {other:?}; while the database is down the only refusal is 503 \
                 DATABASE_ERROR\nledger log:\n{}",
                s.path,
                crid(&s.body),
                ledger.server_log()
            ),
        }
    }
    let slowest = *stream.slowest.lock().unwrap();
    let refused = sent
        .iter()
        .filter(|s| !matches!(s.first, Attempt::Approved(_)))
        .count();
    eprintln!(
        "{} requests, {refused} refused while the database was down, slowest answer \
         {slowest:?}; /health polled {polls} times",
        sent.len()
    );
    assert!(
        slowest <= ANSWER_BOUND,
        "the slowest answer took {slowest:?}"
    );

    // The terminals retry what was not acknowledged; what was acknowledged keeps its
    // transaction.
    let mut applied: HashMap<String, String> = HashMap::new();
    for s in &sent {
        let id = match &s.first {
            Attempt::Approved(id) => id.clone(),
            _ => retry_until_approved(&ledger, s).await,
        };
        applied.insert(crid(&s.body), id);
    }

    // Each operation exactly once, under the transaction it was acknowledged with.
    let mut in_books: HashMap<String, Vec<String>> = HashMap::new();
    for row in ledger.query_json(
        "SELECT client_request_id, transaction_id FROM bar_orders \
         UNION ALL SELECT client_request_id, transaction_id FROM recharges",
    ) {
        in_books
            .entry(row["client_request_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(row["transaction_id"].as_str().unwrap().to_owned());
    }
    for (key, transaction) in &applied {
        assert_eq!(
            in_books.get(key),
            Some(&vec![transaction.clone()]),
            "operation {key}: in the books once, under the acknowledged transaction"
        );
    }
    let operations = i64::try_from(sent.len()).unwrap();
    assert_eq!(
        ledger.count("bar_orders") + ledger.count("recharges"),
        operations_before + operations,
        "no operation besides the stream's"
    );
    assert_eq!(
        ledger.count("postings"),
        postings_before + 2 * operations,
        "two postings per operation"
    );

    // The balances are what the operations add up to.
    for card in &cards {
        let expected = START_BALANCE_CENTS
            + sent
                .iter()
                .filter(|s| &s.card == card)
                .map(|s| s.delta_cents)
                .sum::<i64>();
        assert_eq!(ledger.balance(card).await, expected, "balance of {card}");
    }
    ledger.assert_audit_ok();
    drop(pg);
}

/// `cashless ledger serve` on the database of `url` with the config file, its stdout piped.
fn serve(url: &str, config: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "ledger",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        url,
    ])
    .arg("--config")
    .arg(config)
    .env_remove("CASHLESS_DATABASE")
    .env_remove("CASHLESS_LISTEN")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped());
    cmd
}

/// A frozen database (it keeps its connections open and answers nothing: a server cut off by
/// the network without a reset) is an unavailable one: a money request gets 503
/// `DATABASE_ERROR` once `statement_timeout_ms` plus the store's margin have passed, not an
/// answer that never comes; `/health` answers, `/ready` does not say ready; once the server
/// goes on, the same request (its `client_request_id`) is applied, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_is_unavailable_within_the_deadline_not_a_hang() {
    let pg = PgServer::start();
    let ledger = Ledger::start_on_postgres_server(&pg.url(), &config()).await;
    let card = "04F0000000F0F0";
    ledger.fund(card, START_BALANCE_CENTS).await;
    let order = order_body(card, 1, &[("beer-05", 1, BEER_CENTS)], "online");
    let deadline = Duration::from_millis(
        STATEMENT_TIMEOUT_MS + cashless::ledger::store::postgres::DEADLINE_MARGIN_MS,
    );

    pg.freeze();
    let first = attempt(&ledger, "/v1/orders", &ledger.bar_token, &order).await;
    let health = ledger
        .client
        .get(format!("{}/health", ledger.base_url))
        .timeout(ANSWER_BOUND)
        .send()
        .await
        .map(|r| r.status().as_u16());
    let readiness = ready(&ledger).await;
    pg.thaw();

    match &first {
        Attempt::Refused {
            status: 503,
            code: Some(code),
            took,
            ..
        } if code == "DATABASE_ERROR" => assert!(
            *took >= deadline && *took < 2 * deadline + ANSWER_BOUND,
            "the refusal took {took:?}; the store's deadline is {deadline:?}"
        ),
        other => panic!("an order while the database is frozen: {other:?}"),
    }
    assert_eq!(
        health.ok(),
        Some(200),
        "/health while the database is frozen"
    );
    assert_ne!(
        readiness.map(|r| r.0),
        Some(200),
        "/ready must not say ready while the database is frozen"
    );

    let sent = Sent {
        path: "/v1/orders",
        token: ledger.bar_token.clone(),
        body: order.clone(),
        card: card.to_owned(),
        delta_cents: -BEER_CENTS,
        first,
    };
    retry_until_approved(&ledger, &sent).await;
    assert_eq!(
        ledger.balance(&sent.card).await,
        START_BALANCE_CENTS + sent.delta_cents,
        "the order is applied once"
    );
    ledger.assert_audit_ok();
}

#[tokio::test]
async fn serve_without_its_database_exits_at_once_naming_the_server() {
    let pg = PgServer::start();
    let url = format!("{}?application_name=startup-test", pg.url());
    pg.stop(StopMode::Fast);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("ledger.toml");
    std::fs::write(&config_path, config()).unwrap();
    let mut child = serve(&url, &config_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + ANSWER_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve was still running {ANSWER_BOUND:?} after it started without its \
                 database; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "serve exited with {status}");
    assert!(
        !stdout.contains("listening on"),
        "serve must not listen without its database: {stdout}"
    );
    let place = format!("cannot connect to PostgreSQL at 127.0.0.1:{}", pg.port);
    assert!(
        stderr.contains(&place),
        "the error names the server ({place:?}):\n{stderr}"
    );

    // Once the server is up, the same command serves.
    pg.start_again();
    let mut again = serve(&url, &config_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = again.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().next()
    })
    .await
    .unwrap();
    let _ = again.kill();
    let _ = again.wait();
    assert!(
        matches!(&line, Some(Ok(l)) if l.starts_with("listening on ")),
        "serve with its database up: {line:?}"
    );
}
