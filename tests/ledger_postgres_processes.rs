//! Several `cashless ledger serve` processes on one PostgreSQL database, as an operator runs
//! them behind a load balancer: whatever process a request reaches, the books are as if one
//! ledger had answered. Every decision is taken inside the database (stored procedures under
//! the lock order of `migrations/postgres/0005_operations.sql`), so the processes share no
//! memory and need none.
//!
//! - The same request sent 50 times at once, half to each process: applied once; every
//!   other answer is the same approval replayed byte for byte (or 409 `DUPLICATE_REQUEST`,
//!   retryable), never a second application.
//! - 40 online orders at once on a card with money for exactly 20, across both processes:
//!   exactly 20 approved, each at its own balance, and the card ends at zero, never below.
//! - A terminal replaying its batch through one process while its online requests go to the
//!   other: each operation once, `terminal_seq` tracking gapless.
//! - A stress run: thousands of operations (orders online and offline, top-ups, voids) on a
//!   handful of hot cards from many concurrent clients across both processes: no deadlock,
//!   no 5xx but the documented retryable 503 `DATABASE_ERROR` (and 409
//!   `DUPLICATE_REQUEST`), the balances what the approved operations add up to, and
//!   `cashless ledger audit` passing.

mod common;

use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a retryable answer (503, 409 `DUPLICATE_REQUEST`) is retried before the test
/// fails.
const RETRY_DEADLINE: Duration = Duration::from_secs(60);

/// Two ledger processes on one fresh database: the harness's, and another.
async fn two_processes() -> (Arc<Ledger>, OtherServer, [String; 2]) {
    let mut ledger = Ledger::start_on(Backend::Postgres).await;
    let other = ledger.spawn_another_server().await;
    let bases = [ledger.base_url.clone(), other.base_url.clone()];
    (Arc::new(ledger), other, bases)
}

/// Adds `"type"` to an operation body for `/v1/batch`.
fn tagged(kind: &str, body: &Value) -> Value {
    let mut op = body.clone();
    op["type"] = json!(kind);
    op
}

/// Whether an answer is one the contract tells the caller to retry unchanged.
fn retryable(resp: &Resp) -> bool {
    matches!(
        (resp.status, resp.error_code()),
        (503, Some("DATABASE_ERROR")) | (409, Some("DUPLICATE_REQUEST"))
    )
}

/// POSTs `body` to the process at `base` until the answer is not retryable; returns it and
/// how many retryable answers came first.
async fn post_until_decided(
    ledger: &Ledger,
    base: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (Resp, u32) {
    let until = Instant::now() + RETRY_DEADLINE;
    let mut retries = 0;
    loop {
        let resp = ledger.post_at(base, path, token, body).await;
        if !retryable(&resp) {
            return (resp, retries);
        }
        assert!(
            Instant::now() < until,
            "{path} {} still retryable after {RETRY_DEADLINE:?}: {}",
            crid(body),
            String::from_utf8_lossy(&resp.raw)
        );
        retries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`post_until_decided`] as a task of its own, so that many requests are in flight at once.
fn spawn_post(
    ledger: &Arc<Ledger>,
    base: &str,
    path: &'static str,
    token: &str,
    body: &Value,
) -> tokio::task::JoinHandle<Resp> {
    let (ledger, base, token, body) = (
        Arc::clone(ledger),
        base.to_owned(),
        token.to_owned(),
        body.clone(),
    );
    tokio::spawn(async move {
        post_until_decided(&ledger, &base, path, &token, &body)
            .await
            .0
    })
}

/// The rows of the books' operation tables (orders and top-ups) for one key.
fn operations_with_key(ledger: &Ledger, key: &str) -> i64 {
    ledger.query_i64(&format!(
        "SELECT (SELECT COUNT(*) FROM bar_orders WHERE client_request_id = '{key}') \
              + (SELECT COUNT(*) FROM recharges WHERE client_request_id = '{key}')"
    ))
}

/// Asserts that no server process logged a deadlock.
#[track_caller]
fn assert_no_deadlock(ledger: &Ledger) {
    let log = ledger.server_log();
    assert!(
        !log.to_lowercase().contains("deadlock"),
        "a ledger process logged a deadlock:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_fifty_times_at_once_on_two_processes_is_applied_once() {
    let (ledger, _other, bases) = two_processes().await;
    let card = uid(0x5001);
    ledger.fund(&card, 10_000).await;
    let seq = ledger.seq(&ledger.bar_token);
    let body = order_body(&card, seq, &[("beer-05", 1, BEER_CENTS)], "online");

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let ledger = Arc::clone(&ledger);
            let base = bases[i % 2].clone();
            let body = body.clone();
            tokio::spawn(async move {
                ledger
                    .post_at(&base, "/v1/orders", &ledger.bar_token, &body)
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("a request task panicked"));
    }

    let approvals: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    for r in &answers {
        assert!(
            r.status == 201 || r.error_code() == Some("DUPLICATE_REQUEST"),
            "every answer is the approval or 409 DUPLICATE_REQUEST: {} {}",
            r.status,
            String::from_utf8_lossy(&r.raw)
        );
    }
    let first: Vec<&&Resp> = approvals.iter().filter(|r| !r.replayed()).collect();
    assert_eq!(first.len(), 1, "exactly one answer applied the order");
    for r in &approvals {
        assert_eq!(
            r.raw, first[0].raw,
            "a replay is the first answer byte for byte"
        );
    }
    let key = crid(&body);
    assert_eq!(
        operations_with_key(&ledger, &key),
        1,
        "the order is in the books once"
    );
    let transaction = first[0].body["transaction_id"].as_str().unwrap();
    assert_eq!(
        ledger.query_i64(&format!(
            "SELECT COUNT(*) FROM postings WHERE transaction_id = '{transaction}'"
        )),
        2
    );
    assert_eq!(ledger.balance(&card).await, 10_000 - BEER_CENTS);
    ledger.assert_audit_ok();
    assert_no_deadlock(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_orders_for_twenty_drinks_on_two_processes_approve_exactly_twenty() {
    let (ledger, _other, bases) = two_processes().await;
    let card = uid(0x5002);
    ledger.fund(&card, 20 * BEER_CENTS).await;

    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let token = if i % 4 < 2 {
                &ledger.bar_token
            } else {
                &ledger.bar2_token
            };
            let body = order_body(
                &card,
                ledger.seq(token),
                &[("beer-05", 1, BEER_CENTS)],
                "online",
            );
            spawn_post(&ledger, &bases[i % 2], "/v1/orders", token, &body)
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("a request task panicked"));
    }

    let mut balances_after = Vec::new();
    for r in &answers {
        match r.status {
            201 => balances_after.push(r.body["new_balance_cents"].as_i64().unwrap()),
            _ => {
                let details = r.assert_error(402, "INSUFFICIENT_FUNDS");
                assert_eq!(details["balance_cents"], 0, "declined only once empty");
            }
        }
    }
    balances_after.sort_unstable();
    let expected: Vec<i64> = (0..20).map(|n| n * BEER_CENTS).collect();
    assert_eq!(
        balances_after, expected,
        "exactly 20 approvals, each taking one beer from the balance the previous one left"
    );
    assert_eq!(ledger.balance(&card).await, 0);
    assert_eq!(
        ledger.query_i64(&format!(
            "SELECT COUNT(*) FROM bar_orders WHERE card_uid = '{card}'"
        )),
        20
    );
    assert_eq!(
        ledger.query_i64(&format!(
            "SELECT COUNT(*) FROM cards WHERE card_uid = '{card}' AND balance_cents < 0"
        )),
        0
    );
    ledger.assert_audit_ok();
    assert_no_deadlock(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_first_seen_by_both_processes_at_once_is_created_once() {
    const CARDS: u32 = 10;
    const TOPUPS: usize = 4;
    const OFFLINE_ORDERS: usize = 4;
    let (ledger, _other, bases) = two_processes().await;
    let mut tasks = Vec::new();
    for n in 0..CARDS {
        let card = uid(0x5300 + n);
        for i in 0..TOPUPS + OFFLINE_ORDERS {
            let (path, token, body, delta) = if i < TOPUPS {
                let token = ledger.checkpoint_token.clone();
                let body = recharge_body(&card, ledger.seq(&token), 1_000, "cash", "online");
                ("/v1/recharges", token, body, 1_000)
            } else {
                let token = ledger.bar_token.clone();
                let body = order_body(
                    &card,
                    ledger.seq(&token),
                    &[("water", 1, WATER_CENTS)],
                    "offline",
                );
                ("/v1/orders", token, body, -WATER_CENTS)
            };
            let ledger = Arc::clone(&ledger);
            let base = bases[i % 2].clone();
            let card = card.clone();
            tasks.push(tokio::spawn(async move {
                let (r, _) = post_until_decided(&ledger, &base, path, &token, &body).await;
                (card, delta, r)
            }));
        }
    }
    let mut created: std::collections::HashMap<String, usize> = Default::default();
    for t in tasks {
        let (card, delta, r) = t.await.expect("a request task panicked");
        r.assert_status(201);
        let flags = r.body["flags"].as_array().unwrap();
        if flags.contains(&json!("CARD_CREATED")) {
            *created.entry(card.clone()).or_default() += 1;
        }
        let previous = r.body["previous_balance_cents"].as_i64().unwrap();
        assert_eq!(
            r.body["new_balance_cents"].as_i64().unwrap() - previous,
            delta
        );
    }
    for n in 0..CARDS {
        let card = uid(0x5300 + n);
        assert_eq!(
            created.get(&card),
            Some(&1),
            "{card} created by exactly one operation"
        );
        let expected = i64::try_from(TOPUPS).unwrap() * 1_000
            - i64::try_from(OFFLINE_ORDERS).unwrap() * WATER_CENTS;
        assert_eq!(ledger.balance(&card).await, expected, "balance of {card}");
    }
    ledger.assert_audit_ok();
    assert_no_deadlock(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_replayed_on_one_process_while_online_orders_go_to_the_other() {
    const CARDS: u32 = 3;
    const OFFLINE_ORDERS: usize = 30;
    const ONLINE_ORDERS: usize = 20;
    const REPLAYS: usize = 3;
    const START_CENTS: i64 = 20_000;
    let (ledger, _other, bases) = two_processes().await;
    let cards: Vec<String> = (0..CARDS).map(|n| uid(0x5100 + n)).collect();
    for card in &cards {
        ledger.fund(card, START_CENTS).await;
    }
    let token = ledger.bar_token.clone();
    // `count` sales of one `product` by the terminal, spread over the cards.
    let sales = |count: usize, product: (&str, i64), mode: &str| -> Vec<Value> {
        (0..count)
            .map(|i| {
                order_body(
                    &cards[i % cards.len()],
                    ledger.seq(&token),
                    &[(product.0, 1, product.1)],
                    mode,
                )
            })
            .collect()
    };
    // The terminal's journal: offline sales, numbered first, uploaded as one batch.
    let offline = sales(OFFLINE_ORDERS, ("water", WATER_CENTS), "offline");
    let batch = json!({
        "operations": offline.iter().map(|b| tagged("order", b)).collect::<Vec<_>>()
    });
    // Meanwhile, online sales of the same terminal, numbered after them.
    let online = sales(ONLINE_ORDERS, ("beer-05", BEER_CENTS), "online");

    let batches: Vec<_> = (0..REPLAYS)
        .map(|_| spawn_post(&ledger, &bases[0], "/v1/batch", &token, &batch))
        .collect();
    let onlines: Vec<_> = online
        .iter()
        .map(|body| spawn_post(&ledger, &bases[1], "/v1/orders", &token, body))
        .collect();

    let mut batch_answers = Vec::new();
    for t in batches {
        let r = t.await.expect("a batch task panicked");
        r.assert_status(200);
        batch_answers.push(r.body["results"].as_array().unwrap().clone());
    }
    for t in onlines {
        t.await.expect("an online task panicked").assert_status(201);
    }
    // Each result is an approval, the same in every replay (retryable in-place answers were
    // retried by the batch as a whole).
    for results in &batch_answers {
        assert_eq!(results.len(), OFFLINE_ORDERS);
        for (result, body) in results.iter().zip(&offline) {
            assert_eq!(result["client_request_id"], body["client_request_id"]);
            assert_eq!(result["status"], 201, "{result}");
        }
    }
    for (i, _) in offline.iter().enumerate() {
        let transactions: HashSet<&Value> = batch_answers
            .iter()
            .map(|results| &results[i]["body"]["transaction_id"])
            .collect();
        assert_eq!(
            transactions.len(),
            1,
            "every replay of operation {i} names the same transaction"
        );
    }
    for body in offline.iter().chain(&online) {
        assert_eq!(operations_with_key(&ledger, &crid(body)), 1);
    }
    for (n, card) in cards.iter().enumerate() {
        let offline_here = (0..OFFLINE_ORDERS).filter(|i| i % cards.len() == n).count();
        let online_here = (0..ONLINE_ORDERS).filter(|i| i % cards.len() == n).count();
        let expected = START_CENTS
            - i64::try_from(offline_here).unwrap() * WATER_CENTS
            - i64::try_from(online_here).unwrap() * BEER_CENTS;
        assert_eq!(ledger.balance(card).await, expected, "balance of {card}");
    }
    // Every terminal_seq arrived once, in whatever order: the tracking is gapless.
    let sent = i64::try_from(OFFLINE_ORDERS + ONLINE_ORDERS).unwrap();
    assert_eq!(
        ledger.query_json(
            "SELECT highest_contiguous_seq, highest_seen_seq FROM terminals WHERE name = 'bar-1'"
        ),
        vec![json!({"highest_contiguous_seq": sent, "highest_seen_seq": sent})]
    );
    assert_eq!(ledger.count("terminal_seqs"), 0);
    ledger.assert_audit_ok();
    assert_no_deadlock(&ledger);
}

/// What one operation of the stress run did to its card, once decided.
struct Decided {
    card: String,
    /// The change of the card's balance: 0 for a decline.
    delta_cents: i64,
    /// Whether the change is an order or top-up applied (a void is counted apart).
    applied: bool,
    voided: bool,
}

/// An operation of a client that was approved and may be voided later by its terminal.
struct Voidable {
    token: String,
    key: String,
    card: String,
    delta_cents: i64,
}

/// One stress client: `ops` operations, each to a random process, on random hot cards.
async fn stress_client(
    ledger: Arc<Ledger>,
    bases: [String; 2],
    cards: Vec<String>,
    seed: u64,
    ops: usize,
) -> (Vec<Decided>, u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut decided = Vec::with_capacity(ops);
    let mut voidable: Vec<Voidable> = Vec::new();
    let mut retries = 0;
    for _ in 0..ops {
        let base = &bases[rng.random_range(0..2)];
        let card = cards[rng.random_range(0..cards.len())].clone();
        let roll = rng.random_range(0..10);
        if roll == 9
            && let Some(target) = voidable.pop()
        {
            let seq = ledger.seq(&target.token);
            let body = void_body(&target.key, seq, "customer_refund", SUPER_STAFF);
            let (r, n) = post_until_decided(&ledger, base, "/v1/voids", &target.token, &body).await;
            retries += n;
            r.assert_status(201);
            assert_eq!(r.body["status"], "voided", "{}", r.body);
            assert_eq!(r.body["refunded_cents"], -target.delta_cents, "{}", r.body);
            decided.push(Decided {
                card: target.card,
                delta_cents: -target.delta_cents,
                applied: false,
                voided: true,
            });
            continue;
        }
        let (path, token, body, delta_cents) = match roll {
            0..=3 => {
                let token = if rng.random_bool(0.5) {
                    ledger.bar_token.clone()
                } else {
                    ledger.bar2_token.clone()
                };
                let (product, price) =
                    [("beer-05", BEER_CENTS), ("water", WATER_CENTS)][rng.random_range(0..2)];
                let quantity = rng.random_range(1..=3);
                let body = order_body(
                    &card,
                    ledger.seq(&token),
                    &[(product, quantity, price)],
                    "online",
                );
                ("/v1/orders", token, body, -quantity * price)
            }
            4 | 5 => {
                let token = ledger.bar2_token.clone();
                let body = order_body(
                    &card,
                    ledger.seq(&token),
                    &[("water", 1, WATER_CENTS)],
                    "offline",
                );
                ("/v1/orders", token, body, -WATER_CENTS)
            }
            _ => {
                let token = ledger.checkpoint_token.clone();
                let amount = [500, 1_000][rng.random_range(0..2)];
                let body = recharge_body(&card, ledger.seq(&token), amount, "cash", "online");
                ("/v1/recharges", token, body, amount)
            }
        };
        let (r, n) = post_until_decided(&ledger, base, path, &token, &body).await;
        retries += n;
        match r.status {
            201 => {
                let new_balance = r.body["new_balance_cents"].as_i64();
                let previous = r.body["previous_balance_cents"].as_i64();
                let (Some(new_balance), Some(previous)) = (new_balance, previous) else {
                    panic!("an approval without its balances: {}", r.body);
                };
                assert_eq!(new_balance - previous, delta_cents, "{}", r.body);
                if body["mode"] == "online" && path == "/v1/orders" {
                    assert!(new_balance >= 0, "an online order overdrew: {}", r.body);
                }
                voidable.push(Voidable {
                    token,
                    key: crid(&body),
                    card: card.clone(),
                    delta_cents,
                });
                decided.push(Decided {
                    card,
                    delta_cents,
                    applied: true,
                    voided: false,
                });
            }
            402 | 422 | 423 => {
                let code = r.error_code().unwrap_or_default().to_owned();
                assert!(
                    matches!(
                        code.as_str(),
                        "INSUFFICIENT_FUNDS" | "LIMIT_EXCEEDED" | "CARD_BLOCKED"
                    ),
                    "{path}: {}",
                    String::from_utf8_lossy(&r.raw)
                );
                decided.push(Decided {
                    card,
                    delta_cents: 0,
                    applied: false,
                    voided: false,
                });
            }
            _ => panic!(
                "{path} {}: unexpected {} {}",
                crid(&body),
                r.status,
                String::from_utf8_lossy(&r.raw)
            ),
        }
        if rng.random_range(0..50) == 0 {
            let feed = ledger
                .get_with("/v1/cards?limit=10", Some(&ledger.bar_token), &[])
                .await;
            assert!(
                feed.status == 200 || retryable(&feed),
                "card feed: {feed:?}"
            );
        }
    }
    (decided, retries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_operations_on_hot_cards_from_two_processes_keep_the_books() {
    const CLIENTS: u64 = 32;
    const OPS_PER_CLIENT: usize = 94;
    const START_CENTS: i64 = 50_000;
    let (ledger, mut other, bases) = two_processes().await;
    let cards: Vec<String> = (0..4).map(|n| uid(0x5200 + n)).collect();
    for card in &cards {
        ledger.fund(card, START_CENTS).await;
    }
    let operations_before = ledger.count("bar_orders") + ledger.count("recharges");
    let postings_before = ledger.count("postings");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            tokio::spawn(stress_client(
                Arc::clone(&ledger),
                bases.clone(),
                cards.clone(),
                seed,
                OPS_PER_CLIENT,
            ))
        })
        .collect();
    let mut decided = Vec::new();
    let mut retries = 0;
    for c in clients {
        let (d, n) = c.await.expect("a stress client panicked");
        decided.extend(d);
        retries += n;
    }
    assert!(other.running(), "the second process died");

    let applied = decided.iter().filter(|d| d.applied).count();
    let voided = decided.iter().filter(|d| d.voided).count();
    eprintln!(
        "{} operations: {applied} applied, {voided} voids, {} declined; {retries} retryable \
         answers retried",
        decided.len(),
        decided.len() - applied - voided
    );
    assert_eq!(
        decided.len(),
        usize::try_from(CLIENTS).unwrap() * OPS_PER_CLIENT
    );
    assert!(applied > decided.len() / 2, "most operations are applied");
    for card in &cards {
        let expected = START_CENTS
            + decided
                .iter()
                .filter(|d| &d.card == card)
                .map(|d| d.delta_cents)
                .sum::<i64>();
        assert_eq!(ledger.balance(card).await, expected, "balance of {card}");
    }
    let applied = i64::try_from(applied).unwrap();
    let voided = i64::try_from(voided).unwrap();
    assert_eq!(
        ledger.count("bar_orders") + ledger.count("recharges"),
        operations_before + applied
    );
    assert_eq!(ledger.count("voids"), voided);
    assert_eq!(
        ledger.count("postings"),
        postings_before + 2 * (applied + voided),
        "two postings per operation and per void"
    );
    ledger.assert_audit_ok();
    assert_no_deadlock(&ledger);
}
