//! Headquarters' pages under load.
//!
//! - `cashless bench hq-seed`: fills a migrated SQLite ledger with a festival of a given size
//!   (operations, cards, terminals, close-outs, scans, audit rows), written with SQL in one
//!   transaction, since a million operations through the API would take longer than the
//!   benchmark itself. The rows are the shape the ledger writes (one-line orders, top-ups,
//!   their postings, audit rows, idempotency keys, scans), spread over the last `--days`
//!   festival days; the overview's sums are built by the schema's own triggers. A
//!   PostgreSQL copy is made with `cashless ledger migrate --from --to`.
//! - `cashless bench hq`: logs in as an operator, then measures each page's time to first
//!   byte (the response's head received) over `--requests` requests, paced so that the
//!   pages' own turn-taking does not queue the bench behind itself; or, with `--hammer`,
//!   asks for the pages from `--browsers` clients as fast as they are answered, for the
//!   given seconds (the "dashboard under load" of the benchmark).

use super::{LatencyMs, fmt_ms, new_histogram};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Fills a SQLite ledger for the headquarters benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct HqSeedArgs {
    /// The SQLite ledger file, already at the current schema (`cashless ledger migrate`)
    #[arg(long, value_name = "PATH")]
    pub path: PathBuf,
    /// Operations: nine in ten orders, one in ten top-ups
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(10..=20_000_000))]
    pub operations: u32,
    /// Cards the operations spread over
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
    pub cards: u32,
    /// Festival days the operations spread over, ending now
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub days: u32,
}

/// Points of sale of the seeded festival; each has [`BARS_PER_POINT`] bar terminals.
const POINTS_OF_SALE: u32 = 10;
const BARS_PER_POINT: u32 = 4;
/// Checkpoints (top-ups), each with close-outs every [`SHIFT_HOURS`] hours.
const CHECKPOINTS: u32 = 10;
const SHIFT_HOURS: u32 = 6;
/// Products the bars sell (one line of one, at 4.50, each).
const PRODUCTS: u32 = 23;
/// Staff members at each bar, each working shifts of [`SHIFT_HOURS`] in turn.
const BAR_STAFF: u32 = 3;
/// Rows inserted per statement while seeding, at most (memory stays flat).
const SEED_BATCH_ROWS: u32 = 100_000;

/// Fills `args.path`; prints what it wrote.
pub fn run_hq_seed(args: &HqSeedArgs) -> Result<()> {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(&args.path)
        .with_context(|| format!("opening {}", args.path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'quarter_totals'",
        [],
        |r| r.get(0),
    )?;
    if tables != 1 {
        bail!(
            "{} is not a ledger at the current schema: run cashless ledger migrate first",
            args.path.display()
        );
    }
    let span_s = i64::from(args.days) * 86_400;
    let now_s = chrono::Utc::now().timestamp();
    let tx = conn.transaction()?;
    // Terminals: bars at each point of sale, checkpoints at the entrance.
    tx.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {bars} - 1)
         INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, active,
                                created_at, last_seen_at)
         SELECT printf('00000000-0000-4000-8000-%012d', i), printf('seed-bar-%02d', i), 'bar',
                printf('Seed Bar %02d', i / {BARS_PER_POINT}), printf('%064d', i), 1,
                strftime('%Y-%m-%dT%H:%M:%fZ', {start}, 'unixepoch'),
                strftime('%Y-%m-%dT%H:%M:%fZ', {now_s}, 'unixepoch')
           FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {CHECKPOINTS} - 1)
         INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, active,
                                created_at, last_seen_at)
         SELECT printf('00000000-0000-4000-9000-%012d', i), printf('seed-cp-%02d', i),
                'checkpoint', 'Seed Entrance', printf('%064d', 1000 + i), 1,
                strftime('%Y-%m-%dT%H:%M:%fZ', {start}, 'unixepoch'),
                strftime('%Y-%m-%dT%H:%M:%fZ', {now_s}, 'unixepoch')
           FROM n;
         INSERT INTO terminal_status (terminal_id, received_at, reported_at, waiting, in_doubt,
                                      rejected, oldest_unsent_age_s, card_feed_cursor,
                                      reader_state, software_version)
         SELECT terminal_id, last_seen_at, last_seen_at, 0, 0, 0, NULL, '1', 'connected', '0.1.0'
           FROM terminals WHERE name LIKE 'seed-%';",
        bars = POINTS_OF_SALE * BARS_PER_POINT,
        start = now_s - span_s,
    ))?;
    // Cards: balances from -5.00 to 95.00; those below zero blocked for debt.
    tx.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {cards} - 1)
         INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at,
                            updated_at, voucher_units, daily_voucher_units)
         SELECT printf('05%012X', i), (i * 7919) % 10000 - 500,
                CASE WHEN (i * 7919) % 10000 < 500 THEN 'blocked' ELSE 'active' END,
                CASE WHEN (i * 7919) % 10000 < 500 THEN 'debt' END,
                (SELECT COALESCE(MAX(version), 0) FROM cards) + 1 + i,
                strftime('%Y-%m-%dT%H:%M:%fZ', {start}, 'unixepoch'),
                strftime('%Y-%m-%dT%H:%M:%fZ', {now_s}, 'unixepoch'), 0, 0
           FROM n;",
        cards = args.cards,
        start = now_s - span_s,
    ))?;
    // Operations, in batches: operation i at time start + i * span / operations; every
    // tenth a top-up at a checkpoint, the others a one-beer order at a bar.
    let ops = args.operations;
    let mut first = 0;
    while first < ops {
        let last = (first + SEED_BATCH_ROWS).min(ops) - 1;
        tx.execute_batch(&seed_operations_sql(
            first,
            last,
            ops,
            args.cards,
            now_s - span_s,
            span_s,
        ))?;
        first = last + 1;
    }
    // Close-outs: each checkpoint every six hours over the span.
    let shifts = span_s / (i64::from(SHIFT_HOURS) * 3600);
    tx.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n
                                 WHERE i < {CHECKPOINTS} * {shifts} - 1)
         INSERT INTO shift_closeouts (shift_id, client_request_id, terminal_id, staff_id,
                                      opened_at, closed_at, first_seq, last_seq, cash_cents,
                                      card_cents, count, counted_cash_cents, difference_cents,
                                      recorded_at)
         SELECT printf('00000000-0000-4000-a000-%012d', i),
                printf('00000000-0000-4000-b000-%012d', i),
                printf('00000000-0000-4000-9000-%012d', i % {CHECKPOINTS}), 's-seed',
                strftime('%Y-%m-%dT%H:%M:%fZ', {start} + (i / {CHECKPOINTS}) * {shift_s}, 'unixepoch'),
                strftime('%Y-%m-%dT%H:%M:%fZ', {start} + (i / {CHECKPOINTS} + 1) * {shift_s}, 'unixepoch'),
                1 + (i / {CHECKPOINTS}) * {seqs_per_shift},
                (i / {CHECKPOINTS} + 1) * {seqs_per_shift},
                -- One close-out in 17 is 5.00 short.
                CASE WHEN i % 17 = 0 THEN 500 ELSE 0 END, 0, 0, 0,
                CASE WHEN i % 17 = 0 THEN -500 ELSE 0 END,
                strftime('%Y-%m-%dT%H:%M:%fZ', {start} + (i / {CHECKPOINTS} + 1) * {shift_s}, 'unixepoch')
           FROM n;
         INSERT OR IGNORE INTO staff (staff_id, name, role, pin_hash, active, created_at, updated_at)
         VALUES ('s-seed', 'Seed', 'supervisor', 'none', 1, '2026-01-01T00:00:00.000Z',
                 '2026-01-01T00:00:00.000Z');",
        start = now_s - span_s,
        shift_s = SHIFT_HOURS * 3600,
        seqs_per_shift = (i64::from(ops) / 10 / i64::from(CHECKPOINTS) / shifts.max(1)).max(1),
    ))?;
    // Every sequence number arrived: no gaps on the fleet page.
    tx.execute_batch(
        "UPDATE terminals SET highest_seen_seq = COALESCE(
             (SELECT MAX(terminal_seq) FROM bar_orders o WHERE o.terminal_id = terminals.terminal_id),
             (SELECT MAX(terminal_seq) FROM recharges r WHERE r.terminal_id = terminals.terminal_id), 0)
          WHERE name LIKE 'seed-%';
         UPDATE terminals SET highest_contiguous_seq = highest_seen_seq WHERE name LIKE 'seed-%';",
    )?;
    tx.commit()?;
    conn.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")?;
    println!(
        "seeded {}: {} operations, {} cards, {} terminals, {} close-outs over {} days in {:.1} s",
        args.path.display(),
        ops,
        args.cards,
        POINTS_OF_SALE * BARS_PER_POINT + CHECKPOINTS,
        i64::from(CHECKPOINTS) * shifts,
        args.days,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The SQL that writes operations `first..=last` of `ops`: the orders or top-ups, their
/// lines, postings, audit rows, idempotency keys and scans.
fn seed_operations_sql(
    first: u32,
    last: u32,
    ops: u32,
    cards: u32,
    start: i64,
    span_s: i64,
) -> String {
    let bars = POINTS_OF_SALE * BARS_PER_POINT;
    let shift_s = SHIFT_HOURS * 3600;
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS seed_ops (i INTEGER PRIMARY KEY, tx TEXT, crid TEXT,
             at TEXT, card TEXT, top_up INTEGER, terminal TEXT, pos TEXT, seq INTEGER);
         DELETE FROM seed_ops;
         WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last})
         INSERT INTO seed_ops
         SELECT i,
                printf('%08x-%04x-7000-8000-%012x', (({start} * 1000 + i * {span_s} * 1000 / {ops}) >> 16),
                       (({start} * 1000 + i * {span_s} * 1000 / {ops}) & 65535), i),
                printf('%08x-0000-4000-8000-%012x', i, i),
                strftime('%Y-%m-%dT%H:%M:%fZ', ({start} * 1000 + i * {span_s} * 1000 / {ops}) / 1000.0,
                         'unixepoch'),
                printf('05%012X', (i * 104729) % {cards}),
                i % 10 = 0,
                CASE WHEN i % 10 = 0
                     THEN printf('00000000-0000-4000-9000-%012d', (i / 10) % {CHECKPOINTS})
                     ELSE printf('00000000-0000-4000-8000-%012d', (i / 10 * 9 + i % 10 - 1) % {bars}) END,
                CASE WHEN i % 10 = 0 THEN 'Seed Entrance'
                     ELSE printf('Seed Bar %02d', ((i / 10 * 9 + i % 10 - 1) % {bars}) / {BARS_PER_POINT}) END,
                -- Each terminal's own gapless sequence: the k-th order is terminal k mod bars's
                -- (k / bars + 1)-th.
                CASE WHEN i % 10 = 0 THEN i / 10 / {CHECKPOINTS} + 1
                     ELSE (i / 10 * 9 + i % 10 - 1) / {bars} + 1 END
           FROM n;
         INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq,
                                 point_of_sale, card_uid, staff_id, total_cents, mode, flags,
                                 previous_balance_cents, new_balance_cents, created_at,
                                 processed_at, voucher_units, money_cents)
         SELECT tx, crid, terminal, seq, pos, card,
                -- Each bar's staff take turns, a shift of SHIFT_HOURS each.
                printf('s-bar-%02d-%d', ((i / 10 * 9 + i % 10 - 1) % {bars}),
                       (i * {span_s} / {ops}) / {shift_s} % {BAR_STAFF}), 450,
                CASE WHEN i % 50 = 1 THEN 'offline' ELSE 'online' END, '[]', 1000, 550, at, at,
                0, 450
           FROM seed_ops WHERE NOT top_up;
         INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity,
                                      unit_price_cents, line_total_cents, tax_rate,
                                      tax_rate_basis_points, net_cents, tax_cents,
                                      voucher_quantity, voucher_units, deposit)
         SELECT tx, 0, printf('seed-%02d', i * 31 % {PRODUCTS}), 1, 450, 450, 'standard', 1900,
                378, 72, 0, 0, 0
           FROM seed_ops WHERE NOT top_up;
         INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq,
                                point_of_sale, card_uid, staff_id, amount_cents, payment_method,
                                mode, flags, previous_balance_cents, new_balance_cents,
                                created_at, processed_at)
         SELECT tx, crid, terminal, seq, pos, card, 's-seed', 2000,
                CASE WHEN i % 20 = 0 THEN 'cash' ELSE 'card' END, 'online', '[]', 0, 2000, at, at
           FROM seed_ops WHERE top_up;
         INSERT INTO postings (transaction_id, account, amount_cents, created_at)
         SELECT tx, 'card:' || card, CASE WHEN top_up THEN 2000 ELSE -450 END, at FROM seed_ops;
         INSERT INTO postings (transaction_id, account, amount_cents, created_at)
         SELECT tx, CASE WHEN top_up THEN 'cash:' ELSE 'revenue:' END || pos,
                CASE WHEN top_up THEN -2000 ELSE 450 END, at FROM seed_ops;
         INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                          client_request_id, transaction_id, card_uid,
                                          amount_cents, outcome)
         SELECT at, crid, 'terminal:seed', 's-seed',
                CASE WHEN top_up THEN 'recharge' ELSE 'order' END, crid, tx, card,
                CASE WHEN top_up THEN 2000 ELSE 450 END, 'approved'
           FROM seed_ops;
         INSERT INTO idempotency_keys (client_request_id, terminal_id, operation,
                                       request_sha256, status_code, response_body,
                                       transaction_id, created_at)
         SELECT crid, terminal, CASE WHEN top_up THEN 'recharge' ELSE 'order' END,
                printf('%064x', i), 201, '{{}}', tx, at
           FROM seed_ops;
         INSERT INTO nfc_scan_log (terminal_id, card_uid, result, reader, scanned_at,
                                   terminal_seq, received_at)
         SELECT terminal, card, 'approved', 'ACS ACR122U PICC Interface 00 00', at, seq, at
           FROM seed_ops;"
    )
}

/// Measures headquarters' pages, or hammers them.
#[derive(Debug, Clone, clap::Args)]
pub struct HqBenchArgs {
    /// Base URL of the ledger, e.g. http://127.0.0.1:8080
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Operator to log in as
    #[arg(long, value_name = "NAME")]
    pub operator: String,
    /// The operator's password
    #[arg(long, env = "CASHLESS_HQ_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Pages (paths under the ledger, e.g. /hq/overview), repeated or separated by commas
    #[arg(long = "page", value_delimiter = ',', required = true)]
    pub pages: Vec<String>,
    /// Requests per page (measuring)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub requests: u32,
    /// Hammer the pages for this many seconds instead of measuring them
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hammer: Option<u64>,
    /// Clients hammering at once
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub browsers: u32,
    /// Print the summary as one JSON line
    #[arg(long)]
    pub json: bool,
}

/// One page's times to first byte.
#[derive(Debug, Clone, Serialize)]
pub struct PageSummary {
    /// The page's path.
    pub page: String,
    /// Requests answered 200.
    pub requests: u64,
    /// Time to first byte.
    pub ttfb_ms: LatencyMs,
    /// The largest body, in bytes.
    pub body_bytes_max: u64,
}

/// What the hammer did.
#[derive(Debug, Clone, Serialize)]
pub struct HammerSummary {
    /// Seconds hammered.
    pub seconds: u64,
    /// Pages answered 200.
    pub answered: u64,
    /// Pages answered 503 (busy).
    pub busy: u64,
}

/// A client that keeps no cookies of its own and follows no redirects.
fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// The value of cookie `name` set by `resp`.
fn cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split(';').next()?.split_once('=')?;
            (k == name).then(|| rest.to_owned())
        })
}

/// Logs in as the form does; the session cookie's value.
async fn log_in(http: &reqwest::Client, args: &HqBenchArgs) -> Result<String> {
    let page = http.get(format!("{}/hq/login", args.url)).send().await?;
    let token = cookie(&page, "cashless_hq_login").context("the login page set no cookie")?;
    let answer = http
        .post(format!("{}/hq/login", args.url))
        .header(
            reqwest::header::COOKIE,
            format!("cashless_hq_login={token}"),
        )
        .form(&[
            ("csrf", token.as_str()),
            ("name", args.operator.as_str()),
            ("password", args.password.as_str()),
        ])
        .send()
        .await?;
    if answer.status() != reqwest::StatusCode::SEE_OTHER {
        bail!(
            "logging in as {} was refused ({})",
            args.operator,
            answer.status()
        );
    }
    cookie(&answer, "cashless_hq").context("no session cookie after logging in")
}

/// `cashless bench hq`.
pub async fn run_hq(args: HqBenchArgs) -> Result<()> {
    let http = client()?;
    let session = format!("cashless_hq={}", log_in(&http, &args).await?);
    if let Some(seconds) = args.hammer {
        let summary = hammer(&http, &args, &session, seconds).await;
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!(
                "hammered {} s: {} pages answered, {} busy",
                summary.seconds, summary.answered, summary.busy
            );
        }
        return Ok(());
    }
    for page in &args.pages {
        let mut hist = new_histogram()?;
        let mut body_max = 0u64;
        for _ in 0..args.requests {
            let sent = Instant::now();
            // The login page as a visitor sees it (logged in, it sends you on).
            let cookie = if page.starts_with("/hq/login") {
                ""
            } else {
                session.as_str()
            };
            let resp = http
                .get(format!("{}{page}", args.url))
                .header(reqwest::header::COOKIE, cookie)
                .send()
                .await
                .with_context(|| format!("GET {page}"))?;
            let ttfb = sent.elapsed();
            let status = resp.status();
            let body = resp.bytes().await?;
            let took = sent.elapsed();
            if status != reqwest::StatusCode::OK {
                bail!("GET {page}: {status}");
            }
            hist.record(ttfb.as_micros().max(1) as u64)?;
            body_max = body_max.max(body.len() as u64);
            // The next request after the page's turn has passed (pages take turns, each
            // followed by a pause so that they take at most their share of the time; see
            // `ledger::hq`): the bench measures pages, not its own queue behind itself.
            let pause = took * (100 / crate::ledger::hq::PAGE_TIME_SHARE_PCT);
            tokio::time::sleep(pause + Duration::from_millis(5)).await;
        }
        let summary = PageSummary {
            page: page.clone(),
            requests: hist.len(),
            ttfb_ms: LatencyMs::from_histogram_us(&hist),
            body_bytes_max: body_max,
        };
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!(
                "{page}: {} requests, time to first byte {}, body up to {} bytes (p99 {})",
                summary.requests,
                summary.ttfb_ms.percentiles(),
                summary.body_bytes_max,
                fmt_ms(summary.ttfb_ms.p99)
            );
        }
    }
    Ok(())
}

async fn hammer(
    http: &reqwest::Client,
    args: &HqBenchArgs,
    session: &str,
    seconds: u64,
) -> HammerSummary {
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let pages = Arc::new(args.pages.clone());
    let mut clients = Vec::new();
    for b in 0..args.browsers as usize {
        let (http, stop, pages) = (http.clone(), Arc::clone(&stop), Arc::clone(&pages));
        let (answered, busy) = (Arc::clone(&answered), Arc::clone(&busy));
        let (url, session) = (args.url.clone(), session.to_owned());
        clients.push(tokio::spawn(async move {
            let mut n = b;
            while !stop.load(Ordering::Relaxed) {
                let page = &pages[n % pages.len()];
                n += 1;
                let resp = http
                    .get(format!("{url}{page}"))
                    .header(reqwest::header::COOKIE, &session)
                    .send()
                    .await;
                let Ok(resp) = resp else {
                    continue;
                };
                let status = resp.status();
                let _ = resp.bytes().await;
                let counter = if status == reqwest::StatusCode::OK {
                    &answered
                } else {
                    &busy
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    HammerSummary {
        seconds,
        answered: answered.load(Ordering::Relaxed),
        busy: busy.load(Ordering::Relaxed),
    }
}
