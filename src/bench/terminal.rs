//! `cashless bench terminal-tap`: the terminal daemon's tap-to-decision latency, measured
//! through its JSON-lines interface (docs/interfaces.md) the way a front end sees it.
//!
//! The bench starts `cashless terminal --config FILE --ui jsonl --reader simulated` as a
//! child process (this executable, or `--terminal-bin`), waits for `ready`, logs in, and then
//! sells one order after another, one card at a time, as a bar does:
//!
//! 1. `{"cmd":"order",...}` and wait for `armed` (not timed);
//! 2. take the time, write `{"cmd":"tap","uid":...}`;
//! 3. read events until the `decision`; the time its line arrived ends the measurement.
//!
//! The latency covers what a tap costs: the tap line through the pipe, the daemon's decision
//! (journal write with fsync before anything is shown; online, the ledger's answer and the
//! journal write that records it), and the decision event back through the pipe. The two
//! pipe hops are included, so the number is an upper bound of the daemon's own time.
//! Warm-up taps are sold the same way and not recorded. The bench reports percentiles from an
//! HDR histogram (µs), the decisions by status (`declined:REASON` per reason), the terminal's
//! CPU over the measured taps and its memory (`/proc`), and the journal's pending count at the
//! end (`status`). It ends the terminal with `quit`.
//!
//! Everything is bounded: taps (1..=10,000,000), cards (1..=1,000,000), the wait for any one
//! event (`--event-timeout`), the wait for the terminal to exit after `quit` (15 s, then it is
//! killed), the samples of unexpected decisions kept (a few).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    LatencyMs, card_uid, new_histogram, parse_proc_stat_cpu_seconds, validate_card_scheme,
};

/// How long the terminal may take to exit after `quit` before it is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Samples of unexpected decisions kept in the report.
const MAX_UNEXPECTED_SAMPLES: usize = 3;
/// Longest event line kept in an error message or sample, in bytes.
const MAX_SAMPLE_BYTES: usize = 400;

/// The decision status every measured tap must get (`--expect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedStatus {
    /// The ledger approved it.
    #[value(name = "approved_online")]
    ApprovedOnline,
    /// The terminal approved it on its own.
    #[value(name = "approved_offline")]
    ApprovedOffline,
    /// Declined, for any reason.
    #[value(name = "declined")]
    Declined,
}

impl ExpectedStatus {
    fn as_str(self) -> &'static str {
        match self {
            ExpectedStatus::ApprovedOnline => "approved_online",
            ExpectedStatus::ApprovedOffline => "approved_offline",
            ExpectedStatus::Declined => "declined",
        }
    }

    /// Whether a decision counted under `key` (see [`status_key`]) has this status.
    pub fn matches(self, key: &str) -> bool {
        match self {
            ExpectedStatus::Declined => key == "declined" || key.starts_with("declined:"),
            other => key == other.as_str(),
        }
    }
}

/// Tap-to-decision latency of the terminal daemon, through its JSON-lines interface.
#[derive(Debug, Clone, clap::Args)]
pub struct TerminalTapBenchArgs {
    /// The terminal's configuration file (see config/terminal.example.toml). The terminal the
    /// bench starts uses its journal and its ledger; the reader is `simulated`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Measured taps
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub taps: u64,
    /// Taps sold before the measurement and not recorded (connections, caches, the online
    /// timeout of a first tap after the ledger went away)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub warmup: u64,
    /// Number of cards the taps are spread over (round-robin, warm-up included)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cards: u32,
    /// Uppercase hex prefix of the card UIDs, as in `cashless bench ledger` (card 0 with
    /// prefix B1 is B1000000000000)
    #[arg(long, default_value = "B1")]
    pub card_prefix: String,
    /// Product of every order (one line); must be in the terminal's cached catalog
    #[arg(long, default_value = "bench-1c")]
    pub product: String,
    /// Quantity of --product per order
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=99))]
    pub quantity: i64,
    /// Staff member who logs in (role bar or supervisor)
    #[arg(long, default_value = "s-bench")]
    pub staff: String,
    /// PIN of --staff
    #[arg(
        long,
        default_value = "1234",
        env = "CASHLESS_BENCH_PIN",
        hide_env_values = true
    )]
    pub pin: String,
    /// Every measured decision must have this status; others are counted, a few shown, and
    /// the command exits 1 after its report
    #[arg(long, value_enum)]
    pub expect: Option<ExpectedStatus>,
    /// The cashless binary to run as the terminal (default: this executable)
    #[arg(long, value_name = "FILE")]
    pub terminal_bin: Option<PathBuf>,
    /// Append the terminal's log (its stderr) to this file (default: this command's stderr)
    #[arg(long, value_name = "FILE")]
    pub terminal_log: Option<PathBuf>,
    /// Longest wait for any one event (ready, login, armed, decision), in seconds
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub event_timeout: u64,
    /// Print a machine-readable JSON summary as the last line
    #[arg(long)]
    pub json: bool,
}

/// What `cashless bench terminal-tap` reports (also as JSON with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TapBenchSummary {
    pub bench: &'static str,
    pub taps: u64,
    pub warmup: u64,
    pub cards: u32,
    /// `online` of the terminal's `ready` event.
    pub online_at_ready: bool,
    /// Duration of the measured taps, arming included.
    pub elapsed_s: f64,
    /// Measured taps per second, arming included (one tap at a time).
    pub taps_per_s: f64,
    /// From writing the tap line to reading the decision line.
    pub latency_ms: LatencyMs,
    /// Measured decisions by status; declines as `declined:REASON`.
    pub statuses: BTreeMap<String, u64>,
    /// `--expect`, if given.
    pub expect: Option<ExpectedStatus>,
    /// Measured decisions without the expected status.
    pub unexpected: u64,
    /// A few of them, as the daemon wrote them.
    pub unexpected_samples: Vec<String>,
    /// The terminal's CPU (all threads, user + system) over the measured taps, % of one core.
    pub terminal_cpu_pct: Option<f64>,
    /// The same per measured tap, arming included.
    pub terminal_cpu_ms_per_tap: Option<f64>,
    /// Time the terminal's threads were runnable but waited for a CPU (run queue, from
    /// `/proc/PID/task/*/schedstat`) per measured tap: what other processes on its core cost
    /// it. Near 0 on a quiet core.
    pub terminal_runqueue_ms_per_tap: Option<f64>,
    /// The terminal's resident memory after the taps (`VmRSS`), KiB.
    pub terminal_rss_kib: Option<u64>,
    /// Its peak resident memory (`VmHWM`), KiB.
    pub terminal_hwm_kib: Option<u64>,
    /// `pending` of the terminal's `status` event after the taps.
    pub pending_after: Option<u64>,
    /// `in_doubt` of the same event.
    pub in_doubt_after: Option<u64>,
}

/// The key a decision is counted under: its status, and for a decline its reason
/// (`declined:OFFLINE_LIMIT`; `declined:?` without one).
pub fn status_key(decision: &Value) -> String {
    let status = decision["status"].as_str().unwrap_or("?");
    if status == "declined" {
        format!("declined:{}", decision["reason"].as_str().unwrap_or("?"))
    } else {
        status.to_owned()
    }
}

/// The `login` command line.
pub fn login_command(staff: &str, pin: &str) -> String {
    json!({ "cmd": "login", "staff_id": staff, "pin": pin }).to_string()
}

/// The `order` command line: one line of `quantity` × `product`.
pub fn order_command(product: &str, quantity: i64) -> String {
    json!({ "cmd": "order", "items": [{ "product_id": product, "quantity": quantity }] })
        .to_string()
}

/// The `tap` command line.
pub fn tap_command(uid: &str) -> String {
    json!({ "cmd": "tap", "uid": uid }).to_string()
}

/// The value in KiB of a `Key:   1234 kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`).
pub fn parse_proc_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next()? == "kB").then_some(value)
    })
}

/// The run-queue wait (second field, ns) of a `/proc/PID/task/TID/schedstat` line, in
/// seconds.
pub fn parse_schedstat_wait_seconds(schedstat: &str) -> Option<f64> {
    let wait_ns: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(wait_ns as f64 / 1e9)
}

/// A line cut to [`MAX_SAMPLE_BYTES`] bytes (on a character boundary), for messages.
fn cut(line: &str) -> &str {
    let line = line.trim_end();
    if line.len() <= MAX_SAMPLE_BYTES {
        return line;
    }
    let mut end = MAX_SAMPLE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Why the terminal refused a step: the `message` (and `code`) of an `error` or refused
/// `login` event, else the event itself.
pub fn refusal(event: &Value) -> String {
    match (event["code"].as_str(), event["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => cut(&event.to_string()).to_owned(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The human-readable report.
pub fn format_tap_summary(s: &TapBenchSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "terminal tap bench: {} taps (+{} warm-up) over {} cards; terminal online at start: {}\n",
        s.taps,
        s.warmup,
        s.cards,
        if s.online_at_ready { "yes" } else { "no" }
    ));
    let l = &s.latency_ms;
    out.push_str(&format!(
        "tap to decision (pipe round trip included): {}\n",
        l.percentiles()
    ));
    let statuses = if s.statuses.is_empty() {
        "none".to_owned()
    } else {
        s.statuses
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!("decisions: {statuses}\n"));
    out.push_str(&format!(
        "loop: {} taps in {:.2} s = {:.0} taps/s (arming included, one tap at a time)\n",
        s.taps, s.elapsed_s, s.taps_per_s
    ));
    if let (Some(cpu), Some(per_tap)) = (s.terminal_cpu_pct, s.terminal_cpu_ms_per_tap) {
        out.push_str(&format!(
            "terminal CPU: {cpu:.0}% of one core, {per_tap:.3} ms per tap\n"
        ));
    }
    if let Some(wait) = s.terminal_runqueue_ms_per_tap {
        out.push_str(&format!(
            "terminal waited for a CPU (run queue): {wait:.3} ms per tap\n"
        ));
    }
    if let (Some(rss), Some(hwm)) = (s.terminal_rss_kib, s.terminal_hwm_kib) {
        out.push_str(&format!(
            "terminal memory after the taps: VmRSS {}, VmHWM {}\n",
            mib(rss),
            mib(hwm)
        ));
    }
    if let (Some(pending), Some(in_doubt)) = (s.pending_after, s.in_doubt_after) {
        out.push_str(&format!(
            "journal after the taps: {pending} pending, {in_doubt} in doubt\n"
        ));
    }
    if let Some(expect) = s.expect {
        out.push_str(&format!(
            "expected {}: {} of {} measured decisions were not\n",
            expect.as_str(),
            s.unexpected,
            s.taps
        ));
    }
    for sample in &s.unexpected_samples {
        out.push_str(&format!("unexpected decision: {sample}\n"));
    }
    out
}

/// The terminal daemon as a child process, driven over its stdin and stdout.
struct TerminalProcess {
    child: Child,
    stdin: ChildStdin,
    /// Lines of its stdout, each with the time it was read.
    lines: mpsc::Receiver<(Instant, String)>,
    timeout: Duration,
}

impl TerminalProcess {
    fn spawn(
        bin: &Path,
        config: &Path,
        log: Option<&Path>,
        timeout: Duration,
    ) -> Result<TerminalProcess> {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the terminal log {}", path.display()))?,
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(bin)
            .arg("terminal")
            .arg("--config")
            .arg(config)
            .args(["--ui", "jsonl", "--reader", "simulated"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting the terminal {}", bin.display()))?;
        let stdin = child.stdin.take().context("the terminal's stdin")?;
        let stdout = child.stdout.take().context("the terminal's stdout")?;
        let (tx, lines) = mpsc::channel();
        // Reads on its own thread, so that every wait has a deadline; each line is stamped
        // when read, so the hand-over to the main thread is not measured.
        std::thread::Builder::new()
            .name("terminal-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if tx.send((Instant::now(), line)).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .context("starting the reader thread")?;
        Ok(TerminalProcess {
            child,
            stdin,
            lines,
            timeout,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stdin
            .write_all(&bytes)
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("writing to the terminal: {}", cut(line)))
    }

    /// Why the terminal stopped talking: its exit status if it exited.
    fn gone(&mut self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        match self.child.try_wait() {
            Ok(Some(status)) => format!("the terminal exited ({status})"),
            _ => "the terminal closed its stdout".to_owned(),
        }
    }

    /// The next event named `name` and the time its line was read. Other events are
    /// skipped (sync reports come at any time); an `error` event, a line that is not JSON,
    /// the end of the terminal's output or the deadline fail.
    fn expect(&mut self, name: &str) -> Result<(Instant, Value)> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(x) => x,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "no {name} event from the terminal within {} s",
                    self.timeout.as_secs()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} while waiting for the {name} event", self.gone())
                }
            };
            let event: Value = serde_json::from_str(&line).with_context(|| {
                format!("the terminal wrote a line that is not JSON: {}", cut(&line))
            })?;
            match event["event"].as_str() {
                Some(n) if n == name => return Ok((at, event)),
                Some("error") => bail!(
                    "the terminal answered with an error while waiting for the {name} event: {}",
                    refusal(&event)
                ),
                _ => {}
            }
        }
    }

    /// `quit`, and waits for the process to exit (killed after [`QUIT_TIMEOUT`]).
    fn quit(mut self) -> Result<()> {
        let _ = self.send(r#"{"cmd":"quit"}"#);
        let deadline = Instant::now() + QUIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the terminal")? {
                if !status.success() {
                    bail!("the terminal exited with {status} after quit");
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the terminal did not exit within {} s of quit (killed)",
                    QUIT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TerminalProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds (all threads) of process `pid` so far.
fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat_cpu_seconds(&stat)
}

/// Seconds the threads of process `pid` alive now have waited on a run queue so far.
fn runqueue_wait_seconds_of(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0.0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += parse_schedstat_wait_seconds(&stat)?;
    }
    Some(total)
}

/// `VmRSS` and `VmHWM` of process `pid`, KiB.
fn memory_of(pid: u32) -> (Option<u64>, Option<u64>) {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => (
            parse_proc_status_kib(&s, "VmRSS"),
            parse_proc_status_kib(&s, "VmHWM"),
        ),
        Err(_) => (None, None),
    }
}

/// `cashless bench terminal-tap`.
pub fn run_terminal_tap(args: TerminalTapBenchArgs) -> Result<()> {
    validate_card_scheme(&args.card_prefix, u64::from(args.cards))?;
    if !args.config.is_file() {
        bail!("--config {}: no such file", args.config.display());
    }
    let bin = match &args.terminal_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let mut terminal = TerminalProcess::spawn(
        &bin,
        &args.config,
        args.terminal_log.as_deref(),
        Duration::from_secs(args.event_timeout),
    )?;
    let (_, ready) = terminal.expect("ready")?;
    let online_at_ready = ready["online"].as_bool().unwrap_or(false);

    terminal.send(&login_command(&args.staff, &args.pin))?;
    let (_, login) = terminal.expect("login")?;
    if login["ok"].as_bool() != Some(true) {
        bail!("login as {} refused: {}", args.staff, refusal(&login));
    }

    let order = order_command(&args.product, args.quantity);
    let cards = u64::from(args.cards);
    let total = args.warmup + args.taps;
    let mut hist = new_histogram()?;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut unexpected = 0u64;
    let mut unexpected_samples = Vec::new();
    let mut measure_start = Instant::now();
    let mut cpu_start = None;
    let mut wait_start = None;
    for i in 0..total {
        if i == args.warmup {
            measure_start = Instant::now();
            cpu_start = cpu_seconds_of(terminal.pid());
            wait_start = runqueue_wait_seconds_of(terminal.pid());
        }
        terminal.send(&order)?;
        terminal.expect("armed")?;
        let tap = tap_command(&card_uid(&args.card_prefix, i % cards));
        let t0 = Instant::now();
        terminal.send(&tap)?;
        let (t1, decision) = terminal.expect("decision")?;
        if i < args.warmup {
            continue;
        }
        let us = u64::try_from(t1.saturating_duration_since(t0).as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(us.max(1));
        let key = status_key(&decision);
        if let Some(expect) = args.expect
            && !expect.matches(&key)
        {
            unexpected += 1;
            if unexpected_samples.len() < MAX_UNEXPECTED_SAMPLES {
                unexpected_samples.push(cut(&decision.to_string()).to_owned());
            }
        }
        *statuses.entry(key).or_insert(0) += 1;
    }
    let elapsed_s = measure_start.elapsed().as_secs_f64();
    let cpu_end = cpu_seconds_of(terminal.pid());
    let wait_end = runqueue_wait_seconds_of(terminal.pid());
    let (terminal_rss_kib, terminal_hwm_kib) = memory_of(terminal.pid());
    terminal.send(r#"{"cmd":"status"}"#)?;
    let (_, status) = terminal.expect("status")?;
    terminal.quit()?;

    let cpu_s = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let summary = TapBenchSummary {
        bench: "terminal-tap",
        taps: args.taps,
        warmup: args.warmup,
        cards: args.cards,
        online_at_ready,
        elapsed_s,
        taps_per_s: args.taps as f64 / elapsed_s,
        latency_ms: LatencyMs::from_histogram_us(&hist),
        statuses,
        expect: args.expect,
        unexpected,
        unexpected_samples,
        terminal_cpu_pct: cpu_s.map(|c| c / elapsed_s * 100.0),
        terminal_cpu_ms_per_tap: cpu_s.map(|c| c * 1000.0 / args.taps as f64),
        terminal_runqueue_ms_per_tap: match (wait_start, wait_end) {
            (Some(a), Some(b)) => Some((b - a).max(0.0) * 1000.0 / args.taps as f64),
            _ => None,
        },
        terminal_rss_kib,
        terminal_hwm_kib,
        pending_after: status["pending"].as_u64(),
        in_doubt_after: status["in_doubt"].as_u64(),
    };
    print!("{}", format_tap_summary(&summary));
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if let Some(expect) = args.expect
        && summary.unexpected > 0
    {
        bail!(
            "{} of {} measured decisions were not {} (see above)",
            summary.unexpected,
            summary.taps,
            expect.as_str()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_counted_by_status_and_decline_reason() {
        let approved = json!({"event": "decision", "status": "approved_offline", "reason": null});
        assert_eq!(status_key(&approved), "approved_offline");
        let declined =
            json!({"event": "decision", "status": "declined", "reason": "OFFLINE_LIMIT"});
        assert_eq!(status_key(&declined), "declined:OFFLINE_LIMIT");
        assert_eq!(
            status_key(&json!({"event": "decision", "status": "declined"})),
            "declined:?"
        );
        assert_eq!(status_key(&json!({"event": "decision"})), "?");
    }

    #[test]
    fn expected_status_matches_every_decline_reason() {
        use ExpectedStatus::*;
        assert!(ApprovedOnline.matches("approved_online"));
        assert!(!ApprovedOnline.matches("approved_offline"));
        assert!(ApprovedOffline.matches("approved_offline"));
        assert!(!ApprovedOffline.matches("declined:OFFLINE_LIMIT"));
        assert!(Declined.matches("declined:INSUFFICIENT_FUNDS"));
        assert!(Declined.matches("declined"));
        assert!(!Declined.matches("declined_by_someone"));
        assert!(!Declined.matches("approved_online"));
        assert_eq!(
            serde_json::to_value(ApprovedOffline).expect("json"),
            "approved_offline"
        );
    }

    #[test]
    fn commands_are_the_interface_lines() {
        let order: Value = serde_json::from_str(&order_command("bench-1c", 2)).expect("json");
        assert_eq!(
            order,
            json!({"cmd": "order", "items": [{"product_id": "bench-1c", "quantity": 2}]})
        );
        assert!(order["items"][0]["quantity"].is_i64());
        let tap: Value = serde_json::from_str(&tap_command("B1000000000000")).expect("json");
        assert_eq!(tap, json!({"cmd": "tap", "uid": "B1000000000000"}));
        let login: Value = serde_json::from_str(&login_command("s-bench", "1234")).expect("json");
        assert_eq!(
            login,
            json!({"cmd": "login", "staff_id": "s-bench", "pin": "1234"})
        );
        // One line each: the daemon reads a command per line.
        for line in [
            order_command("a\nb", 1),
            tap_command("x"),
            login_command("s", "\n"),
        ] {
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn proc_status_memory_lines() {
        let status = "Name:\tcashless\nVmPeak:\t  300000 kB\nVmHWM:\t   14336 kB\nVmRSS:\t   12288 kB\nThreads:\t5\n";
        assert_eq!(parse_proc_status_kib(status, "VmRSS"), Some(12_288));
        assert_eq!(parse_proc_status_kib(status, "VmHWM"), Some(14_336));
        assert_eq!(parse_proc_status_kib(status, "VmSwap"), None);
        // A key is matched whole, and a value without its unit is not a size.
        assert_eq!(parse_proc_status_kib(status, "Vm"), None);
        assert_eq!(parse_proc_status_kib(status, "Threads"), None);
        #[cfg(target_os = "linux")]
        {
            let (rss, hwm) = memory_of(std::process::id());
            assert!(rss.is_some_and(|r| r > 0) && hwm >= rss, "{rss:?} {hwm:?}");
        }
    }

    #[test]
    fn schedstat_run_queue_wait() {
        assert_eq!(
            parse_schedstat_wait_seconds("94062 3483702 2\n"),
            Some(0.003483702)
        );
        assert_eq!(parse_schedstat_wait_seconds("94062"), None);
        assert_eq!(parse_schedstat_wait_seconds(""), None);
        #[cfg(target_os = "linux")]
        assert!(runqueue_wait_seconds_of(std::process::id()).is_some_and(|w| w >= 0.0));
    }

    #[test]
    fn refusals_name_the_code_and_message() {
        let error = json!({"event": "error", "code": "NO_CATALOG", "message": "not yet"});
        assert_eq!(refusal(&error), "NO_CATALOG: not yet");
        let login = json!({"event": "login", "ok": false, "message": "wrong PIN"});
        assert_eq!(refusal(&login), "wrong PIN");
        let other = json!({"event": "login", "ok": false, "x": "é".repeat(1000)});
        let text = refusal(&other);
        assert!(
            text.len() <= MAX_SAMPLE_BYTES && text.starts_with('{'),
            "{text}"
        );
    }

    fn summary() -> TapBenchSummary {
        TapBenchSummary {
            bench: "terminal-tap",
            taps: 1000,
            warmup: 20,
            cards: 50,
            online_at_ready: false,
            elapsed_s: 2.5,
            taps_per_s: 400.0,
            latency_ms: LatencyMs {
                p50: 1.25,
                p90: 1.5,
                p99: 2.0,
                p999: 4.0,
                max: 9.875,
                mean: 1.3,
            },
            statuses: BTreeMap::from([
                ("approved_offline".to_owned(), 998),
                ("declined:OFFLINE_LIMIT".to_owned(), 2),
            ]),
            expect: Some(ExpectedStatus::ApprovedOffline),
            unexpected: 2,
            unexpected_samples: vec![r#"{"event":"decision","status":"declined"}"#.into()],
            terminal_cpu_pct: Some(35.0),
            terminal_cpu_ms_per_tap: Some(0.875),
            terminal_runqueue_ms_per_tap: Some(0.061),
            terminal_rss_kib: Some(12_800),
            terminal_hwm_kib: Some(14_336),
            pending_after: Some(998),
            in_doubt_after: Some(0),
        }
    }

    #[test]
    fn summary_text_has_percentiles_statuses_and_resources() {
        let text = format_tap_summary(&summary());
        crate::bench::assert_says(
            &text,
            &[
                "1000 taps (+20 warm-up) over 50 cards; terminal online at start: no",
                "p50 1.25 ms, p90 1.50 ms, p99 2.00 ms, p99.9 4.00 ms, max 9.88 ms",
                "pipe round trip included",
                "decisions: approved_offline 998, declined:OFFLINE_LIMIT 2",
                "400 taps/s",
                "terminal CPU: 35% of one core, 0.875 ms per tap",
                "VmRSS 12.5 MiB, VmHWM 14.0 MiB",
                "(run queue): 0.061 ms per tap",
                "998 pending, 0 in doubt",
                "expected approved_offline: 2 of 1000",
                "unexpected decision: {",
            ],
        );
    }

    #[test]
    fn summary_json_is_one_line_with_the_keys_scripts_read() {
        let line = serde_json::to_string(&summary()).expect("json");
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["bench"], "terminal-tap");
        assert_eq!(v["latency_ms"]["p99"], 2.0);
        assert_eq!(v["statuses"]["approved_offline"], 998);
        assert_eq!(v["expect"], "approved_offline");
        assert_eq!(v["pending_after"], 998);
        // benches/terminal.sh reads numbers with sed by key: each key appears once.
        for key in [
            "\"p99\":",
            "\"taps\":",
            "\"terminal_hwm_kib\":",
            "\"unexpected\":",
        ] {
            assert_eq!(line.matches(key).count(), 1, "{key} in {line}");
        }
    }
}
