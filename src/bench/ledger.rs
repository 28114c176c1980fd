//! `cashless bench ledger`: online orders from many bar-terminal clients, each with one
//! keep-alive connection and one request in flight; throughput, latency percentiles and
//! outcomes by HTTP status.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    LatencyMs, card_uid, new_histogram, now_rfc3339, process_cpu_seconds, validate_card_scheme,
};

/// One request may take at most this long, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a transport error, so a dead server does not turn the generator into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Error samples kept per client and in the report.
const MAX_ERROR_SAMPLES: usize = 5;
/// Bytes of a response body kept in an error sample.
const MAX_SAMPLE_BYTES: usize = 300;
/// Funding requests in flight at once.
const MAX_FUNDING_CONCURRENCY: u32 = 32;

/// Load generator for the ledger: online orders from many bar-terminal clients.
#[derive(Debug, Clone, clap::Args)]
pub struct LedgerBenchArgs {
    /// Base URL of the ledger, e.g. http://127.0.0.1:8080. Several (repeated, or separated
    /// by commas) spread the clients over ledger processes on one database: client i sends
    /// to URL i mod their number; the check and the funding go through the first
    #[arg(
        long = "url",
        value_name = "URL",
        env = "CASHLESS_LEDGER_URL",
        value_delimiter = ',',
        required = true
    )]
    pub urls: Vec<String>,
    /// Bearer token of a bar terminal (the orders are sent as this terminal). Several
    /// (repeated, or separated by commas): client i sends as terminal i mod their number,
    /// each terminal with its own terminal_seq sequence (many tills, one sale in flight each)
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "CASHLESS_LEDGER_TOKEN",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub tokens: Vec<String>,
    /// Concurrent clients (each one HTTP connection, one request at a time)
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Measured duration in seconds
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Seconds of load before the measurement starts (connections, caches)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub warmup: u64,
    /// Number of cards the orders are spread over (round-robin)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cards: u32,
    /// Uppercase hex prefix of the card UIDs; the card number fills the rest of the 14 hex
    /// characters (card 0 with prefix B1 is B1000000000000)
    #[arg(long, default_value = "B1")]
    pub card_prefix: String,
    /// Product ordered (one line, quantity 1); must be in the bar's catalog at --price-cents
    #[arg(long, default_value = "bench-1c")]
    pub product: String,
    /// Catalog price of --product in cents
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub price_cents: i64,
    /// Staff id sent with every operation (role bar or supervisor; cashier or supervisor to --fund)
    #[arg(long, default_value = "s-bench")]
    pub staff: String,
    /// First terminal_seq used; the clients of one terminal share one contiguous sequence
    /// from here. Use fresh terminals per run, or a start above their last sequence number.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=(i64::MAX / 2)))]
    pub seq_start: i64,
    /// Before the load, top up every card once with --fund-cents through POST /v1/recharges
    /// (needs --funding-token)
    #[arg(long)]
    pub fund: bool,
    /// Bearer token of a checkpoint terminal, for --fund
    #[arg(long, env = "CASHLESS_FUNDING_TOKEN", hide_env_values = true)]
    pub funding_token: Option<String>,
    /// Amount of the funding top-up per card, in cents (must fit the ledger's [limits])
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    pub fund_cents: i64,
    /// Each client sends at most one order per this many milliseconds (a steady pace, as
    /// tills sell, rather than as fast as the ledger answers); 0: as fast as answered
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub pace_ms: u64,
    /// Print a machine-readable JSON summary as the last line
    #[arg(long)]
    pub json: bool,
}

/// What `cashless bench ledger` reports (also as JSON with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerBenchSummary {
    pub bench: &'static str,
    pub clients: u32,
    pub cards: u32,
    pub duration_s: u64,
    pub warmup_s: u64,
    /// From the start of the measurement to the last answer.
    pub elapsed_s: f64,
    /// Orders sent in the measurement window (answered or not).
    pub requests: u64,
    /// Orders answered with any HTTP status.
    pub responses: u64,
    /// 201 answers.
    pub approved: u64,
    /// 402 INSUFFICIENT_FUNDS answers.
    pub declined_funds: u64,
    /// Any other HTTP status, by code.
    pub other_status: BTreeMap<String, u64>,
    /// Connection refused or reset, timeout, unreadable answer.
    pub transport_errors: u64,
    /// Answers per second, whatever the status.
    pub orders_per_s: f64,
    /// 201 answers per second.
    pub approvals_per_s: f64,
    /// Latency of answered orders, send to last body byte.
    pub latency_ms: LatencyMs,
    /// CPU used by the generator process during the measurement, in % of one core.
    pub generator_cpu_pct: Option<f64>,
    /// A few errors, to tell what went wrong.
    pub error_samples: Vec<String>,
}

impl LedgerBenchSummary {
    /// Orders that neither got 201 nor 402.
    pub fn errors(&self) -> u64 {
        self.other_status.values().sum::<u64>() + self.transport_errors
    }
}

/// The card used for the `n`-th order of client `client` out of `clients`: round-robin over
/// all cards, the clients interleaved, so concurrent clients hit different cards when there
/// are enough of them.
pub fn card_index(client: u64, n: u64, clients: u64, cards: u64) -> u64 {
    (client.wrapping_add(n.wrapping_mul(clients))) % cards.max(1)
}

/// Which of `n` ledger URLs (or terminal tokens) client `client` uses: round-robin, so each
/// gets the same number of clients, give or take one.
pub fn spread(client: u64, n: usize) -> usize {
    let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
    usize::try_from(client % n).unwrap_or(0)
}

/// The ledger's URL for `path` (`base` with or without a trailing slash).
pub fn endpoint(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// The human-readable report.
pub fn format_ledger_summary(s: &LedgerBenchSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "ledger bench: {} clients, {} cards, {} s measured (+{} s warm-up), {:.2} s elapsed\n",
        s.clients, s.cards, s.duration_s, s.warmup_s, s.elapsed_s
    ));
    out.push_str(&format!(
        "throughput: {:.0} orders/s, {:.0} approvals/s ({} orders sent, {} answered)\n",
        s.orders_per_s, s.approvals_per_s, s.requests, s.responses
    ));
    let l = &s.latency_ms;
    out.push_str(&format!("latency: {}\n", l.percentiles()));
    let other = if s.other_status.is_empty() {
        "none".to_string()
    } else {
        s.other_status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "outcomes: 201 approved {}, 402 declined {}, other status {}, transport errors {} (errors: {})\n",
        s.approved,
        s.declined_funds,
        other,
        s.transport_errors,
        s.errors()
    ));
    if let Some(cpu) = s.generator_cpu_pct {
        out.push_str(&format!("generator CPU: {cpu:.0}% of one core\n"));
    }
    for e in &s.error_samples {
        out.push_str(&format!("error sample: {e}\n"));
    }
    out
}

#[derive(Serialize)]
struct OrderItem<'a> {
    product_id: &'a str,
    quantity: u32,
    unit_price_cents: i64,
}

#[derive(Serialize)]
struct OrderBody<'a> {
    client_request_id: uuid::Uuid,
    terminal_seq: i64,
    card_uid: &'a str,
    items: [OrderItem<'a>; 1],
    total_cents: i64,
    staff_id: &'a str,
    created_at: String,
    mode: &'static str,
}

#[derive(Serialize)]
struct RechargeBody<'a> {
    client_request_id: uuid::Uuid,
    terminal_seq: i64,
    card_uid: &'a str,
    amount_cents: i64,
    payment_method: &'static str,
    staff_id: &'a str,
    created_at: String,
    mode: &'static str,
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .context("building the HTTP client")
}

/// A short description of an error answer: `HTTP 403 FORBIDDEN: unknown staff member` for
/// the API's error shape (without the request id, so equal errors read the same), else the
/// start of the body.
pub fn sample(status: Option<u16>, body: &[u8]) -> String {
    let prefix = status.map_or_else(String::new, |s| format!("HTTP {s} "));
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(code) = v["error"]["code"].as_str()
    {
        let message = v["error"]["message"].as_str().unwrap_or("");
        return format!("{prefix}{code}: {message}");
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_SAMPLE_BYTES)]);
    format!("{prefix}{text}").trim_end().to_string()
}

/// Keeps `e` unless it is already there or enough samples are kept.
fn keep_sample(samples: &mut Vec<String>, e: String) {
    if samples.len() < MAX_ERROR_SAMPLES && !samples.contains(&e) {
        samples.push(e);
    }
}

/// What one client saw during the measurement.
struct ClientStats {
    hist: Histogram<u64>,
    by_status: BTreeMap<u16, u64>,
    requests: u64,
    transport_errors: u64,
    last_answer: Option<Instant>,
    error_samples: Vec<String>,
}

struct LoadPlan {
    /// `POST /v1/orders` of each ledger process; see [`spread`].
    orders_urls: Vec<String>,
    /// The bar terminals' tokens; see [`spread`].
    tokens: Vec<String>,
    clients: u64,
    cards: u64,
    card_prefix: String,
    product: String,
    price_cents: i64,
    staff: String,
    measure_start: Instant,
    deadline: Instant,
    /// At most one order per this long, per client (zero: no pause).
    pace: Duration,
}

async fn run_client(
    client_no: u64,
    http: reqwest::Client,
    plan: Arc<LoadPlan>,
    // The terminal_seq sequence of this client's terminal.
    seq: Arc<AtomicI64>,
) -> Result<ClientStats> {
    let mut stats = ClientStats {
        hist: new_histogram()?,
        by_status: BTreeMap::new(),
        requests: 0,
        transport_errors: 0,
        last_answer: None,
        error_samples: Vec::new(),
    };
    let orders_url = &plan.orders_urls[spread(client_no, plan.orders_urls.len())];
    let token = &plan.tokens[spread(client_no, plan.tokens.len())];
    let mut n: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= plan.deadline {
            break;
        }
        let measured = started >= plan.measure_start;
        let uid = card_uid(
            &plan.card_prefix,
            card_index(client_no, n, plan.clients, plan.cards),
        );
        n = n.wrapping_add(1);
        let body = OrderBody {
            client_request_id: uuid::Uuid::new_v4(),
            terminal_seq: seq.fetch_add(1, Ordering::Relaxed),
            card_uid: &uid,
            items: [OrderItem {
                product_id: &plan.product,
                quantity: 1,
                unit_price_cents: plan.price_cents,
            }],
            total_cents: plan.price_cents,
            staff_id: &plan.staff,
            created_at: now_rfc3339(),
            mode: "online",
        };
        let result = async {
            let resp = http
                .post(orders_url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let finished = Instant::now();
        if measured {
            stats.requests += 1;
        }
        match result {
            Ok((status, bytes)) => {
                if measured {
                    let us = u64::try_from(finished.duration_since(started).as_micros())
                        .unwrap_or(u64::MAX);
                    stats.hist.saturating_record(us.max(1));
                    *stats.by_status.entry(status).or_insert(0) += 1;
                    stats.last_answer = Some(finished);
                }
                if status != 201 && status != 402 {
                    keep_sample(&mut stats.error_samples, sample(Some(status), &bytes));
                }
            }
            Err(e) => {
                if measured {
                    stats.transport_errors += 1;
                }
                keep_sample(
                    &mut stats.error_samples,
                    format!("transport: {}", error_chain(&e)),
                );
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
        if !plan.pace.is_zero() {
            tokio::time::sleep_until((started + plan.pace).into()).await;
        }
    }
    Ok(stats)
}

/// An error and its causes, `outer: inner: root`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Checks, before any load, that the ledger answers at `base` and that `token` belongs to a
/// terminal of kind `kind` (`GET /v1/terminals/me`), so a wrong URL or token fails at once
/// with a clear message instead of as thousands of errors.
async fn preflight(base: &str, token: &str, kind: &str, flag: &str) -> Result<()> {
    let url = endpoint(base, "/v1/terminals/me");
    let resp = http_client()?
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the ledger does not answer at {url}: {}", error_chain(&e)))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {}", error_chain(&e)))?;
    check_terminal_me(status, &bytes, kind, flag)
}

/// The verdict of [`preflight`] on the answer of `GET /v1/terminals/me`.
pub fn check_terminal_me(status: u16, body: &[u8], kind: &str, flag: &str) -> Result<()> {
    match status {
        200 => {}
        401 => bail!("{flag} is refused by the ledger (401): unknown token"),
        _ => bail!(
            "GET /v1/terminals/me with {flag} failed: {}",
            sample(Some(status), body)
        ),
    }
    let me: serde_json::Value =
        serde_json::from_slice(body).context("GET /v1/terminals/me: the answer is not JSON")?;
    let actual = me.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    if actual != kind {
        bail!("{flag} belongs to a {actual} terminal; a {kind} terminal's token is needed");
    }
    Ok(())
}

/// Tops up every card once with `fund_cents` through the checkpoint terminal `token`.
async fn fund_cards(args: &LedgerBenchArgs, token: &str) -> Result<()> {
    let url = Arc::new(endpoint(first_url(args)?, "/v1/recharges"));
    let next = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicI64::new(args.seq_start));
    let funded = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let cards = u64::from(args.cards);
    let workers = args.clients.min(MAX_FUNDING_CONCURRENCY);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let http = http_client()?;
        let (url, next, seq, funded, limited) = (
            url.clone(),
            next.clone(),
            seq.clone(),
            funded.clone(),
            limited.clone(),
        );
        let token = token.to_string();
        let prefix = args.card_prefix.clone();
        let staff = args.staff.clone();
        let amount = args.fund_cents;
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cards {
                    return Ok::<(), anyhow::Error>(());
                }
                let uid = card_uid(&prefix, i);
                let body = RechargeBody {
                    client_request_id: uuid::Uuid::new_v4(),
                    terminal_seq: seq.fetch_add(1, Ordering::Relaxed),
                    card_uid: &uid,
                    amount_cents: amount,
                    payment_method: "cash",
                    staff_id: &staff,
                    created_at: now_rfc3339(),
                    mode: "online",
                };
                let resp = http
                    .post(url.as_str())
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("funding card {uid}: {}", error_chain(&e)))?;
                let status = resp.status().as_u16();
                let bytes = resp
                    .bytes()
                    .await
                    .with_context(|| format!("funding card {uid}"))?;
                match status {
                    201 => {
                        funded.fetch_add(1, Ordering::Relaxed);
                    }
                    422 if bytes.windows(14).any(|w| w == b"LIMIT_EXCEEDED") => {
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => bail!(
                        "funding card {uid} failed: {}",
                        sample(Some(status), &bytes)
                    ),
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("funding task panicked")??;
    }
    let limited = limited.load(Ordering::Relaxed);
    println!(
        "funded {} of {} cards with {} cents each in {:.1} s{}",
        funded.load(Ordering::Relaxed),
        cards,
        args.fund_cents,
        started.elapsed().as_secs_f64(),
        if limited > 0 {
            format!(" ({limited} refused with LIMIT_EXCEEDED: balance already near the limit)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The URL the check and the funding go through.
fn first_url(args: &LedgerBenchArgs) -> Result<&str> {
    args.urls
        .first()
        .map(String::as_str)
        .context("--url (or CASHLESS_LEDGER_URL) is missing")
}

/// `cashless bench ledger`.
pub async fn run_ledger(args: LedgerBenchArgs) -> Result<()> {
    validate_card_scheme(&args.card_prefix, u64::from(args.cards))?;
    if args.tokens.is_empty() || args.tokens.iter().any(|t| t.trim().is_empty()) {
        bail!("--token (or CASHLESS_LEDGER_TOKEN) is empty");
    }
    for url in &args.urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--url must start with http:// or https://, got {url:?}");
        }
    }
    // Every process answers, and knows every terminal (they share one database).
    for url in &args.urls {
        preflight(url, &args.tokens[0], "bar", "--token").await?;
    }
    for token in &args.tokens[1..] {
        preflight(first_url(&args)?, token, "bar", "--token").await?;
    }
    if args.fund {
        let token = args
            .funding_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .context("--fund needs --funding-token (a checkpoint terminal's token)")?;
        preflight(first_url(&args)?, token, "checkpoint", "--funding-token").await?;
        fund_cards(&args, token).await?;
    }

    let clients = u64::from(args.clients);
    let mut https = Vec::with_capacity(args.clients as usize);
    for _ in 0..clients {
        https.push(http_client()?);
    }
    let start = Instant::now();
    let measure_start = start + Duration::from_secs(args.warmup);
    let deadline = measure_start + Duration::from_secs(args.duration);
    let plan = Arc::new(LoadPlan {
        orders_urls: args
            .urls
            .iter()
            .map(|url| endpoint(url, "/v1/orders"))
            .collect(),
        tokens: args.tokens.clone(),
        clients,
        cards: u64::from(args.cards),
        card_prefix: args.card_prefix.clone(),
        product: args.product.clone(),
        price_cents: args.price_cents,
        staff: args.staff.clone(),
        measure_start,
        deadline,
        pace: Duration::from_millis(args.pace_ms),
    });
    let seqs: Vec<Arc<AtomicI64>> = args
        .tokens
        .iter()
        .map(|_| Arc::new(AtomicI64::new(args.seq_start)))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, http) in (0u64..).zip(https) {
        let seq = seqs[spread(i, seqs.len())].clone();
        set.spawn(run_client(i, http, plan.clone(), seq));
    }
    tokio::time::sleep_until(measure_start.into()).await;
    let cpu_start = process_cpu_seconds();

    let mut hist = new_histogram()?;
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut requests, mut transport_errors) = (0u64, 0u64);
    let mut last_answer: Option<Instant> = None;
    let mut error_samples: Vec<String> = Vec::new();
    while let Some(joined) = set.join_next().await {
        let stats = joined.context("bench client panicked")??;
        hist.add(&stats.hist)
            .context("merging latency histograms")?;
        for (k, v) in stats.by_status {
            *by_status.entry(k).or_insert(0) += v;
        }
        requests += stats.requests;
        transport_errors += stats.transport_errors;
        last_answer = last_answer.max(stats.last_answer);
        for e in stats.error_samples {
            keep_sample(&mut error_samples, e);
        }
    }
    let end = Instant::now();
    let cpu_end = process_cpu_seconds();

    let measured_until = last_answer.unwrap_or(end).max(deadline);
    let elapsed_s = measured_until.duration_since(measure_start).as_secs_f64();
    let wall_s = end.duration_since(measure_start).as_secs_f64();
    let responses: u64 = by_status.values().sum();
    let approved = by_status.get(&201).copied().unwrap_or(0);
    let declined_funds = by_status.get(&402).copied().unwrap_or(0);
    let other_status = by_status
        .iter()
        .filter(|(k, _)| **k != 201 && **k != 402)
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let generator_cpu_pct = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if wall_s > 0.0 => Some((b - a) / wall_s * 100.0),
        _ => None,
    };
    let summary = LedgerBenchSummary {
        bench: "ledger",
        clients: args.clients,
        cards: args.cards,
        duration_s: args.duration,
        warmup_s: args.warmup,
        elapsed_s,
        requests,
        responses,
        approved,
        declined_funds,
        other_status,
        transport_errors,
        orders_per_s: responses as f64 / elapsed_s,
        approvals_per_s: approved as f64 / elapsed_s,
        latency_ms: LatencyMs::from_histogram_us(&hist),
        generator_cpu_pct,
        error_samples,
    };
    print!("{}", format_ledger_summary(&summary));
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if summary.responses > 0 && summary.approved == 0 {
        bail!("no order was approved (see the error samples above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_are_spread_round_robin() {
        // 32 clients over 1000 cards: the first order of every client hits a different card.
        let first: std::collections::HashSet<u64> =
            (0..32).map(|c| card_index(c, 0, 32, 1000)).collect();
        assert_eq!(first.len(), 32);
        // Every card is used, evenly, after enough orders.
        let mut counts = vec![0u32; 1000];
        for n in 0..125 {
            for c in 0..32 {
                counts[card_index(c, n, 32, 1000) as usize] += 1;
            }
        }
        assert!(counts.iter().all(|&n| n == 4), "{counts:?}");
        // One card: always card 0.
        assert!((0..100).all(|n| card_index(n % 7, n, 7, 1) == 0));
    }

    #[test]
    fn clients_are_spread_over_urls_and_tokens_round_robin() {
        assert!((0..10).all(|c| spread(c, 1) == 0));
        let two: Vec<usize> = (0..6).map(|c| spread(c, 2)).collect();
        assert_eq!(two, [0, 1, 0, 1, 0, 1]);
        // 8 clients over 3: 3, 3 and 2 clients.
        let mut per_item = [0u32; 3];
        for c in 0..8 {
            per_item[spread(c, 3)] += 1;
        }
        assert_eq!(per_item, [3, 3, 2]);
        // As many tokens as clients: one terminal each.
        let own: std::collections::HashSet<usize> = (0..32).map(|c| spread(c, 32)).collect();
        assert_eq!(own.len(), 32);
        assert_eq!(spread(5, 0), 0, "none: index 0, refused earlier");
    }

    #[test]
    fn endpoints_join_with_one_slash() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080", "/v1/orders"),
            "http://127.0.0.1:8080/v1/orders"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/", "/v1/orders"),
            "http://127.0.0.1:8080/v1/orders"
        );
    }

    #[test]
    fn order_body_has_integer_cents_and_the_api_fields() {
        let body = OrderBody {
            client_request_id: uuid::Uuid::nil(),
            terminal_seq: 7,
            card_uid: "B1000000000000",
            items: [OrderItem {
                product_id: "bench-1c",
                quantity: 1,
                unit_price_cents: 1,
            }],
            total_cents: 1,
            staff_id: "s-bench",
            created_at: "2026-07-01T21:14:03.000Z".into(),
            mode: "online",
        };
        let v: serde_json::Value = serde_json::to_value(&body).expect("serializes");
        assert_eq!(v["total_cents"], serde_json::json!(1));
        assert!(v["total_cents"].is_i64());
        assert!(v["items"][0]["unit_price_cents"].is_i64());
        assert_eq!(v["mode"], "online");
        assert_eq!(v["terminal_seq"], 7);
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "card_uid",
                "client_request_id",
                "created_at",
                "items",
                "mode",
                "staff_id",
                "terminal_seq",
                "total_cents"
            ]
        );
    }

    fn summary() -> LedgerBenchSummary {
        LedgerBenchSummary {
            bench: "ledger",
            clients: 32,
            cards: 1000,
            duration_s: 10,
            warmup_s: 2,
            elapsed_s: 10.01,
            requests: 40_012,
            responses: 40_010,
            approved: 40_000,
            declined_funds: 7,
            other_status: BTreeMap::from([("503".to_string(), 3)]),
            transport_errors: 2,
            orders_per_s: 3997.0,
            approvals_per_s: 3996.0,
            latency_ms: LatencyMs {
                p50: 7.5,
                p90: 10.25,
                p99: 20.0,
                p999: 40.0,
                max: 55.125,
                mean: 8.0,
            },
            generator_cpu_pct: Some(42.0),
            error_samples: vec!["HTTP 503: {}".into()],
        }
    }

    #[test]
    fn summary_counts_errors() {
        assert_eq!(summary().errors(), 5);
    }

    #[test]
    fn summary_text_has_throughput_percentiles_and_outcomes() {
        let text = format_ledger_summary(&summary());
        crate::bench::assert_says(
            &text,
            &[
                "throughput: 3997 orders/s, 3996 approvals/s",
                "p50 7.50 ms, p90 10.25 ms, p99 20.00 ms, p99.9 40.00 ms, max 55.12 ms",
                "201 approved 40000, 402 declined 7, other status 503: 3, transport errors 2 (errors: 5)",
                "generator CPU: 42%",
                "error sample: HTTP 503",
            ],
        );
    }

    #[test]
    fn summary_json_is_flat_enough_for_scripts() {
        let v: serde_json::Value = serde_json::to_value(summary()).expect("serializes");
        assert_eq!(v["bench"], "ledger");
        assert_eq!(v["approved"], 40_000);
        assert_eq!(v["other_status"]["503"], 3);
        assert_eq!(v["latency_ms"]["p99"], 20.0);
        // One line.
        assert!(
            !serde_json::to_string(&summary())
                .expect("json")
                .contains('\n')
        );
    }

    #[test]
    fn error_samples_name_the_code_without_the_request_id() {
        let body = br#"{"error":{"code":"FORBIDDEN","message":"unknown staff member","request_id":"abc"}}"#;
        assert_eq!(
            sample(Some(403), body),
            "HTTP 403 FORBIDDEN: unknown staff member"
        );
        assert_eq!(sample(Some(502), b"Bad Gateway\n"), "HTTP 502 Bad Gateway");
        let long = vec![b'x'; 10_000];
        assert!(sample(None, &long).len() <= MAX_SAMPLE_BYTES);
        let mut kept = Vec::new();
        for i in 0..20 {
            keep_sample(&mut kept, format!("e{}", i % 2));
        }
        assert_eq!(kept, ["e0", "e1"]);
        for i in 0..20 {
            keep_sample(&mut kept, format!("f{i}"));
        }
        assert_eq!(kept.len(), MAX_ERROR_SAMPLES);
    }

    #[test]
    fn preflight_verdicts() {
        let bar =
            br#"{"terminal_id":"x","name":"b","kind":"bar","point_of_sale":"P","server_time":"t"}"#;
        assert!(check_terminal_me(200, bar, "bar", "--token").is_ok());
        let e = check_terminal_me(200, bar, "checkpoint", "--funding-token").expect_err("kind");
        assert!(e.to_string().contains("belongs to a bar terminal"), "{e}");
        let e = check_terminal_me(401, b"{}", "bar", "--token").expect_err("401");
        assert!(e.to_string().contains("--token is refused"), "{e}");
        let e = check_terminal_me(404, b"nope", "bar", "--token").expect_err("404");
        assert!(e.to_string().contains("HTTP 404 nope"), "{e}");
        assert!(check_terminal_me(200, b"not json", "bar", "--token").is_err());
    }
}
