//! Headquarters never in the way of payments (issue 15): orders stream in at a steady pace
//! while the dashboard is hammered by browsers that ask for its pages as fast as they are
//! answered; the orders' p99 latency with the dashboard hammered is at most 20% above
//! their p99 without, on both backends.
//!
//! The two conditions alternate (quiet, hammered, quiet, hammered, ...) so that whatever
//! else the machine does drifts into both alike; each p99 is over every order of its
//! condition. A measurement over the margin is made once more ([`ATTEMPTS`]): the machine's
//! own noise is larger than the margin. One test, the backends one after the other, so that they do not load each
//! other.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PASSWORD: &str = "dashboard password";

/// The tests of this file run one after the other: the measurement must not share the
/// machine with another ledger.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `nice` of each of `pid`'s threads, by thread name (`/proc/PID/task/TID/stat`: the
/// nineteenth field, counted after the name's closing parenthesis).
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // Fields from the third (state) on; nice is the nineteenth.
        let nice = after_name.split(' ').nth(19 - 3).unwrap().parse().unwrap();
        out.push((name.trim().to_owned(), nice));
    }
    out
}

/// On SQLite, headquarters' reads run on the background reader (`ledger-hq-reads`), a thread
/// of the lowest CPU priority; the writer keeps the one the ledger was started with.
#[tokio::test]
async fn headquarters_reads_run_at_the_lowest_cpu_priority() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let l = Ledger::start_on(Backend::Sqlite).await;
    l.add_operator("viewer", "viewer", PASSWORD);
    let session = l.hq_session("viewer", PASSWORD).await;
    let overview = reqwest::Client::new()
        .get(format!("{}/hq/overview", l.base_url))
        .header(COOKIE, format!("cashless_hq={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let nices = thread_nices(l.server_pid().unwrap());
    let of = |name: &str| {
        nices
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no thread {name}: {nices:?}"))
            .1
    };
    assert_eq!(of("ledger-hq-reads"), 19, "{nices:?}");
    // The writer keeps the priority the ledger was started with (this test's own).
    let own = thread_nices(std::process::id())[0].1;
    assert_eq!(of("ledger-writer"), own, "{nices:?}");
}
/// Clients sending orders, each one order at a time.
const ORDER_CLIENTS: usize = 4;
/// Each order client sends at most one order per this many milliseconds.
const ORDER_PERIOD_MS: u64 = 25;
/// Browsers hammering the dashboard, each asking again as soon as it is answered.
const BROWSERS: usize = 8;
/// Quiet and hammered rounds, each this long.
const ROUNDS: usize = 3;
const ROUND_S: u64 = 6;
/// Cards the orders spread over, each funded with this much.
const CARDS: usize = 120;
const FUND_CENTS: i64 = 50_000;
/// The most the hammered p99 may exceed the quiet one, in percent.
const P99_RISE_MAX_PCT: u128 = 20;
/// Measurements, at most: on a shared two-core machine the quiet p99 itself moves by about
/// 30% between identical measurements, more than the margin, so one over the margin is
/// measured again. A dashboard that does get in the way (pages not taking turns: 9 ms to
/// 35 ms) fails every measurement.
const ATTEMPTS: usize = 2;

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    let i = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    latencies[i]
}

/// Sends orders for `round_s` seconds from [`ORDER_CLIENTS`] clients; their latencies.
async fn stream_orders(l: &Arc<Ledger>, cards: &Arc<Vec<String>>, round_s: u64) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(round_s);
    let mut clients = Vec::new();
    for c in 0..ORDER_CLIENTS {
        let (l, cards, http) = (Arc::clone(l), Arc::clone(cards), http.clone());
        clients.push(tokio::spawn(async move {
            let token = if c % 2 == 0 {
                &l.bar_token
            } else {
                &l.bar2_token
            };
            let mut latencies = Vec::new();
            let mut n = c;
            while Instant::now() < end {
                let tick = Instant::now();
                let card = &cards[n % cards.len()];
                n += ORDER_CLIENTS;
                let body = order_body(card, l.seq(token), &[("beer-05", 1, BEER_CENTS)], "online");
                let sent = Instant::now();
                let resp = http
                    .post(format!("{}/v1/orders", l.base_url))
                    .header(AUTHORIZATION, format!("Bearer {token}"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                resp.bytes().await.unwrap();
                latencies.push(sent.elapsed());
                assert_eq!(status, 201, "an order was not approved");
                let next = tick + Duration::from_millis(ORDER_PERIOD_MS);
                tokio::time::sleep_until(next.into()).await;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    all
}

/// Hammers the dashboard's pages until `stop`; counts the pages answered (200) and those
/// refused as busy (503).
fn hammer(
    l: &Arc<Ledger>,
    session: &str,
    card: &str,
    stop: &Arc<AtomicBool>,
    answered: &Arc<AtomicU64>,
    busy: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let pages: Arc<Vec<String>> = Arc::new(vec![
        "/hq/overview".into(),
        "/hq/fleet".into(),
        format!("/hq/cards/{card}"),
        "/hq/shifts".into(),
        "/hq/stripe".into(),
    ]);
    (0..BROWSERS)
        .map(|b| {
            let (l, pages, stop) = (Arc::clone(l), Arc::clone(&pages), Arc::clone(stop));
            let (answered, busy) = (Arc::clone(answered), Arc::clone(busy));
            let cookie = format!("cashless_hq={session}");
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = b;
                while !stop.load(Ordering::Relaxed) {
                    let page = &pages[n % pages.len()];
                    n += 1;
                    let resp = http
                        .get(format!("{}{page}", l.base_url))
                        .header(COOKIE, &cookie)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    resp.bytes().await.unwrap();
                    match status {
                        200 => answered.fetch_add(1, Ordering::Relaxed),
                        503 => busy.fetch_add(1, Ordering::Relaxed),
                        other => panic!("{page}: {other}"),
                    };
                }
            })
        })
        .collect()
}

async fn payments_keep_their_pace(backend: Backend) {
    let l = Arc::new(Ledger::start_on(backend).await);
    l.add_operator("ops", "viewer", PASSWORD);
    let session = l.hq_session("ops", PASSWORD).await;
    let cards: Arc<Vec<String>> = Arc::new((0..CARDS as u32).map(|i| uid(100 + i)).collect());
    for card in cards.iter() {
        l.fund(card, FUND_CENTS).await;
    }
    // Warm up: connections, caches, the first pages.
    let warm_up = stream_orders(&l, &cards, 1).await.len() as i64;

    let mut sold = warm_up;
    for attempt in 1..=ATTEMPTS {
        let (mut quiet, mut hammered) = (Vec::new(), Vec::new());
        let (answered, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        for _ in 0..ROUNDS {
            quiet.extend(stream_orders(&l, &cards, ROUND_S).await);
            let stop = Arc::new(AtomicBool::new(false));
            let browsers = hammer(&l, &session, &cards[0], &stop, &answered, &busy);
            hammered.extend(stream_orders(&l, &cards, ROUND_S).await);
            stop.store(true, Ordering::Relaxed);
            for b in browsers {
                b.await.unwrap();
            }
        }
        sold += (quiet.len() + hammered.len()) as i64;
        let pages = answered.load(Ordering::Relaxed);
        let (q, h) = (p99(quiet.clone()), p99(hammered.clone()));
        eprintln!(
            "{backend:?}, measurement {attempt}: orders p99 quiet {q:?} ({} orders), hammered \
             {h:?} ({} orders); dashboard pages answered {pages}, busy {}",
            quiet.len(),
            hammered.len(),
            busy.load(Ordering::Relaxed)
        );
        // The dashboard was hammered: pages kept coming the whole time.
        assert!(
            pages >= 20 * ROUNDS as u64,
            "only {pages} dashboard pages were answered"
        );
        let within = h.as_micros() * 100 <= q.as_micros() * (100 + P99_RISE_MAX_PCT);
        if within {
            break;
        }
        assert!(
            attempt < ATTEMPTS,
            "{backend:?}: the orders' p99 rose from {q:?} to {h:?} with the dashboard hammered"
        );
    }
    // Every order approved was booked, once.
    assert_eq!(l.query_i64("SELECT COUNT(*) FROM bar_orders"), sold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hammered_dashboard_does_not_slow_payments() {
    let _alone = ONE_AT_A_TIME.lock().await;
    payments_keep_their_pace(Backend::Sqlite).await;
    payments_keep_their_pace(Backend::Postgres).await;
}
