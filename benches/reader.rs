//! The reader benchmark of issue 4, against the real stack: "From the card appearing in pcscd
//! to the `card` event: at most 50 ms beyond pcscd's own polling. Idle with no card: under 1%
//! of a core." And of issue 16: "Card appearing to authenticated UID through pcscd and vpcd:
//! p99 at most 40 ms beyond today's UID-only read, next to the UID-only read in the same run;
//! report CPU time per authentication." See BENCHMARKS.md, "Reader (PC/SC)".
//!
//! ```sh
//! cargo bench --bench reader     # about 5 minutes; appends to $BENCH_DIR/cashless-reader-bench-results.txt
//! ```
//!
//! Setup: an isolated, socket-activated `pcscd` (no debug logging, as a system pcscd runs)
//! with vpcd's virtual readers (`tests/common/pcsc.rs`); a real ledger (`cashless ledger
//! serve` on a copy of the test harness's seeded database, `tests/common/mod.rs`) with one
//! funded card per presentation; the release `cashless terminal --reader pcsc` (bar-1,
//! `[reader] name_filter = "00 00"`, the example configuration's defaults otherwise), logged
//! in. The terminal reaches the ledger through a proxy of this process that holds nothing,
//! except in (c).
//!
//! Latency. Per presentation, after a random pause of 0..`INSERT_JITTER_MS` (so that inserts
//! fall anywhere in pcscd's polling period), a virtual card with a new UID is put on the
//! reader (`t_insert`). An observer thread of this process, blocked in `get_status_change`
//! on the same reader with its own context since before the insert, records when pcscd
//! reported PRESENT (`t_pcscd`); a thread reading the terminal's stdout records when the
//! `card` line was read (`t_card`), and the `balance` or `decision` line after it; the
//! virtual card records when GET DATA and the LED/buzzer command reached it. Then the bench
//! waits for that command, removes the card and waits for EMPTY. Reported: `t_card -
//! t_pcscd` (both woken by the same pcscd state change: what the reader layer and the daemon
//! add to pcscd's polling), split at GET DATA, and `t_pcscd - t_insert` (pcscd's own
//! polling, the reference). Three series:
//! - (a) `PRESENTATIONS` cards at the idle screen (nothing armed: a balance check each);
//! - (b) `ARMED` cards, each paying an order of one beer armed before it comes;
//! - (c) `DELAYED` cards at the idle screen, with every answer of the ledger held
//!   `LEDGER_DELAY_MS` by the proxy (a ledger farther away);
//! - (d) `AES_ROUNDS` rounds of `AES_PER_ROUND` cards at the idle screen, alternately UID-only
//!   cards to the terminal above and NTAG 424 DNA chips (issued with the bench's master key,
//!   played by `common::ntag424`) to a second release terminal, bar-2, in `[cards] mode =
//!   "aes"` on reader `00 01`: the authenticated read next to the UID-only read, in the same
//!   run and under the same load. Then the terminal's own share of an authentication: the
//!   thread CPU time of `TapAuth`'s steps over `AUTHENTICATIONS` authentications against an
//!   in-memory chip (the chip's side not counted).
//!
//! Idle. The observer stops; after `IDLE_SETTLE` s, for `IDLE_S` s with no card: the
//! terminal's CPU (utime + stime of all threads, `/proc/PID/stat`), its context switches
//! (all threads, and per thread), and pcscd's CPU and context switches over the same window
//! (the reference).
//!
//! Environment (defaults): PRESENTATIONS=200 ARMED=50 DELAYED=30 LEDGER_DELAY_MS=100
//! AES_ROUNDS=4 AES_PER_ROUND=50 (0: no (d)) WARMUP=10 (at most 3 per round of (d))
//! INSERT_JITTER_MS=500 IDLE_S=30 IDLE_SETTLE=5 BENCH_DIR=${TMPDIR:-/tmp}
//! QUIET_WAIT=0 (wait up to this many seconds for other load on the machine to stay under
//! 10%).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;

use cashless::reader::card_auth::{MasterKeys, Step, TapAuth};
use cashless::reader::ntag424::AesKey;
use common::Ledger;
use common::ntag424::Ntag424Chip;
use common::pcsc::{
    CardSpec, EVENT_DEADLINE, GET_UID, Pcscd, READERS, VirtualCard, main_in_own_process,
};
use machine::{clk_tck, cores, knob, machine_busy_ticks, machine_load};
use pcsc::{Context, ReaderState, State};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The name the re-executed copy of this bench runs under (see `main_in_own_process`).
const NAME: &str = "reader-bench";
/// The reader the terminal uses (and the observer watches).
const READER: usize = 0;
/// The ACR122U LED and buzzer command the terminal sends after a decision or a balance.
const FEEDBACK_PREFIX: [u8; 3] = [0xFF, 0x00, 0x40];
/// The issue's targets.
const LATENCY_TARGET_MS: f64 = 50.0;
const IDLE_TARGET_PCT: f64 = 1.0;
/// Every card's balance (the armed order is one beer, 450 cents).
const FUND_CENTS: i64 = 5000;

fn main() {
    main_in_own_process(NAME, run);
}

fn say(text: &str) {
    eprintln!("==> {text}");
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// utime + stime (ticks) from a `/proc/.../stat` file: of all threads for a process, of one
/// thread for a task.
fn stat_ticks(path: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(Path::new(&format!("/proc/{pid}/stat")))
        .unwrap_or_else(|| panic!("process {pid} is gone"))
}

/// Per thread name: (CPU ticks, context switches), summed over threads of that name.
type Threads = BTreeMap<String, (u64, u64)>;

fn threads(pid: u32) -> Threads {
    let mut out = Threads::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ticks = stat_ticks(&dir.join("stat")).unwrap_or(0);
        let switches = std::fs::read_to_string(dir.join("status"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
        let entry = out.entry(comm.trim().to_owned()).or_default();
        entry.0 += ticks;
        entry.1 += switches;
    }
    out
}

fn switches(pid: u32) -> u64 {
    threads(pid).values().map(|(_, s)| s).sum()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn machine_line(dir: &Path) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1_048_576.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let pkg = |name: &str| first_line("dpkg-query", &["-W", "-f", "${Version}", name]);
    let fs = first_line(
        "sh",
        &[
            "-c",
            &format!("df -T {} | awk 'NR==2 {{print $2}}'", dir.display()),
        ],
    );
    format!(
        "{} cores ({model}), {mem_gib:.0} GiB, kernel {}, pcscd {}, vsmartcard-vpcd {}, {fs} at {}",
        cores(),
        kernel.trim(),
        pkg("pcscd"),
        pkg("vsmartcard-vpcd"),
        dir.display()
    )
}

fn commit() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let head = first_line("git", &["-C", root, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", root, "status", "--porcelain"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{head} (+ uncommitted changes)")
    } else {
        head
    }
}

// ---------------------------------------------------------------------------------------------
// The observer: pcscd's view of the reader, from a context of this process
// ---------------------------------------------------------------------------------------------

struct Observer {
    ctx: Context,
    states: Receiver<(Instant, State)>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Starts a thread blocked in `get_status_change` (no timeout) on `reader`; every change
    /// pcscd reports is sent with the time the call returned.
    fn start(ctx: Context, reader: CString) -> Observer {
        let (tx, states) = channel();
        let c = ctx.clone();
        let thread = std::thread::Builder::new()
            .name("observer".into())
            .spawn(move || {
                let mut state = [ReaderState::new(reader, State::UNAWARE)];
                loop {
                    match c.get_status_change(None, &mut state) {
                        Ok(()) => {}
                        Err(pcsc::Error::Cancelled) => return,
                        Err(e) => panic!("observer: get_status_change failed: {e:?}"),
                    }
                    let at = Instant::now();
                    let event = state[0].event_state();
                    state[0].sync_current_state();
                    if tx.send((at, event)).is_err() {
                        return;
                    }
                }
            })
            .unwrap();
        Observer {
            ctx,
            states,
            thread: Some(thread),
        }
    }

    /// When pcscd next reported a state satisfying `want`.
    fn wait(&self, what: &str, want: impl Fn(State) -> bool) -> Instant {
        let until = Instant::now() + EVENT_DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.states.recv_timeout(left) {
                Ok((at, state)) if want(state) => return at,
                Ok(_) => {}
                Err(e) => panic!("observer: no {what} within {EVENT_DEADLINE:?} ({e:?})"),
            }
        }
    }

    /// The states reported since the last look (none expected between presentations).
    fn drain(&self) -> Vec<State> {
        self.states.try_iter().map(|(_, s)| s).collect()
    }

    /// Cancels the wait and joins the thread. libpcsclite's `SCardCancel` does nothing (and
    /// says success) unless the other thread is inside the wait itself: right after an event,
    /// the thread is still registering for the next one, and one cancel is lost. So: cancel
    /// until the thread is gone.
    fn stop(mut self) {
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                let _ = self.ctx.cancel();
                std::thread::sleep(Duration::from_millis(10));
            }
            t.join().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The terminal, driven over JSON lines with a timestamp on every line read
// ---------------------------------------------------------------------------------------------

struct Terminal {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<(Instant, Value)>,
    log: PathBuf,
}

impl Terminal {
    fn spawn(config: &Path, log: &Path, pcscd: &Pcscd) -> Terminal {
        let mut child = Command::new(common::BIN)
            .args(["terminal", "--config"])
            .arg(config)
            .args(["--ui", "jsonl", "--reader", "pcsc"])
            .envs(pcscd.client_env())
            .env_remove("CASHLESS_LEDGER_URL")
            .env_remove("CASHLESS_LEDGER_TOKEN")
            // The default level (info), as in production.
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::Builder::new()
            .name("terminal-out".into())
            .spawn(move || {
                let mut out = BufReader::new(stdout);
                let mut line = String::new();
                loop {
                    line.clear();
                    match out.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let at = Instant::now();
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| panic!("the terminal printed a non-JSON line: {line}"));
                    if tx.send((at, event)).is_err() {
                        return;
                    }
                }
            })
            .unwrap();
        Terminal {
            child,
            stdin,
            lines,
            log: log.to_owned(),
        }
    }

    fn send(&mut self, command: &Value) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next event named one of `names` (others are skipped), with the time its line was
    /// read.
    fn expect(&mut self, names: &[&str]) -> (Instant, Value) {
        let until = Instant::now() + EVENT_DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, event)) => {
                    if names.iter().any(|n| event["event"] == *n) {
                        return (at, event);
                    }
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("within {EVENT_DEADLINE:?}"),
                        RecvTimeoutError::Disconnected => "(the terminal closed stdout)".into(),
                    };
                    panic!(
                        "no {names:?} event from the terminal {why}; its log:\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
        }
    }

    /// `quit`; how the process ended (killed if it did not exit within 10 s).
    fn quit(mut self) -> String {
        self.send(&json!({"cmd": "quit"}));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("exited after quit in {:?} ({status})", started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "STILL RUNNING 10 s after quit: killed".into()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A table row: n, min, p50, p90, p99, max of `values` (ms).
fn row(label: &str, values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return format!("{label:<52} {:>5}", 0);
    }
    format!(
        "{label:<52} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        v.len(),
        v[0],
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        v[v.len() - 1]
    )
}

fn p99_and_max(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (percentile(&v, 99.0), v[v.len() - 1])
}

// ---------------------------------------------------------------------------------------------
// A ledger farther away: a proxy that holds every chunk of the ledger's answers
// ---------------------------------------------------------------------------------------------

/// A TCP proxy in front of the ledger that forwards requests at once and each chunk of the
/// answers after `delay_ms` (0: at once), as a ledger behind a slow network would answer.
struct DelayProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
}

impl DelayProxy {
    fn start(target: SocketAddr) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        std::thread::Builder::new()
            .name("delay-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || forward(client, server, None));
                    let delay = Arc::clone(&delay);
                    std::thread::spawn(move || forward(s, c, Some(&delay)));
                }
            })
            .unwrap();
        DelayProxy { addr, delay_ms }
    }

    fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, delay_ms: Option<&AtomicU64>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let ms = delay_ms.map_or(0, |d| d.load(Ordering::SeqCst));
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn card_uid(i: usize) -> [u8; 7] {
    let [hi, lo] = u16::try_from(i).unwrap().to_be_bytes();
    [0x04, 0xB3, 0x7C, 0x5E, 0x00, hi, lo]
}

// ---------------------------------------------------------------------------------------------
// Presentations
// ---------------------------------------------------------------------------------------------

/// What one series of presentations measured.
struct Run {
    /// PRESENT seen -> `card` line read (ms).
    to_card: Vec<f64>,
    /// PRESENT seen -> the line after `card` (`balance` or `decision`) read (ms).
    to_outcome: Vec<f64>,
    /// insert -> PRESENT seen (ms): pcscd's polling.
    polling: Vec<f64>,
    /// PRESENT seen -> GET DATA received by the card (ms): the watcher's wake-up, its connect
    /// and the APDU's way through pcscd and vpcd.
    to_get_data: Vec<f64>,
    /// GET DATA received by the card -> `card` line read (ms): the answer's way back, the
    /// disconnect, the channel to the main loop, what the daemon does before it writes the
    /// line, the pipe.
    get_data_to_card: Vec<f64>,
    /// PRESENT seen -> the LED and buzzer command received by the card (ms).
    to_feedback: Vec<f64>,
    /// `card_error` events, and `card` events whose outcome was not the expected one.
    errors: Vec<Value>,
    /// Presentations after which the card never got the LED and buzzer command.
    missing_feedback: usize,
    /// CPU per measured presentation (ms): the terminal, pcscd.
    terminal_cpu_ms: f64,
    pcscd_cpu_ms: f64,
    seconds: f64,
}

struct Presenter<'a> {
    t: &'a mut Terminal,
    observer: &'a Observer,
    pcscd: &'a Pcscd,
    /// The reader the terminal uses.
    reader: usize,
    /// AES mode: the cards are NTAG 424 DNA chips issued with these keys; `None`: UID-only
    /// cards.
    keys: Option<&'a MasterKeys>,
    terminal_pid: u32,
    pcscd_pid: u32,
    tck: f64,
    jitter_ms: u64,
}

impl Presenter<'_> {
    /// Presents cards `first..first + warmup + count` one after another (the first `warmup`
    /// not measured): at the idle screen, or each paying an order of one beer armed before the
    /// card comes.
    fn present(&mut self, first: usize, warmup: usize, count: usize, armed: bool) -> Run {
        let mut run = Run::empty();
        if count == 0 {
            return run;
        }
        let mut cpu0 = (0, 0, Instant::now());
        for i in 0..warmup + count {
            if i == warmup {
                cpu0 = (
                    cpu_ticks(self.terminal_pid),
                    cpu_ticks(self.pcscd_pid),
                    Instant::now(),
                );
            }
            let measured = i >= warmup;
            if armed {
                self.t.send(&json!({"cmd": "order",
                    "items": [{"product_id": "beer-05", "quantity": 1}]}));
                self.t.expect(&["armed"]);
            }
            if self.jitter_ms > 0 {
                std::thread::sleep(Duration::from_millis(rand::random_range(0..self.jitter_ms)));
            }
            let stray = self.observer.drain();
            assert!(
                stray.iter().all(|s| !s.contains(State::PRESENT)),
                "the reader showed a card before the insert: {stray:?}"
            );
            let bytes = card_uid(first + i);
            let uid = hex::encode_upper(bytes);
            let inserted = Instant::now();
            let spec = match self.keys {
                None => CardSpec::new(&bytes),
                Some(keys) => CardSpec::ntag424(&Arc::new(Mutex::new(Ntag424Chip::issued(
                    &bytes, keys, false,
                )))),
            };
            let card = VirtualCard::insert(self.pcscd.port(self.reader), spec);
            let present = self
                .observer
                .wait("PRESENT", |s| s.contains(State::PRESENT));
            let (card_at, event) = self.t.expect(&["card", "card_error"]);
            if event["event"] == "card" {
                assert_eq!(event["uid"], uid.as_str(), "{event}");
                let (outcome_at, outcome) = self.t.expect(&["balance", "decision", "error"]);
                let expected = if armed {
                    outcome["event"] == "decision" && outcome["status"] == "approved_online"
                } else {
                    outcome["event"] == "balance" && outcome["balance_cents"] == FUND_CENTS
                };
                if measured {
                    run.to_card.push(ms(card_at - present));
                    run.to_outcome.push(ms(outcome_at - present));
                    if !expected {
                        run.errors.push(outcome);
                    }
                }
                // The LED and buzzer command (best effort) reaches the card before it leaves.
                let until = Instant::now() + Duration::from_secs(5);
                let log = loop {
                    let log = card.log();
                    if log.apdus.iter().any(|a| a.starts_with(&FEEDBACK_PREFIX)) {
                        break log;
                    }
                    if Instant::now() > until {
                        run.missing_feedback += usize::from(measured);
                        break log;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                };
                let apdu_at = |prefix: &[u8]| {
                    log.apdus
                        .iter()
                        .zip(&log.apdu_at)
                        .find(|(a, _)| a.starts_with(prefix))
                        .map(|(_, at)| *at)
                };
                if measured {
                    if let Some(at) = apdu_at(&GET_UID) {
                        run.to_get_data
                            .push(ms(at.saturating_duration_since(present)));
                        run.get_data_to_card
                            .push(ms(card_at.saturating_duration_since(at)));
                    }
                    if let Some(at) = apdu_at(&FEEDBACK_PREFIX) {
                        run.to_feedback
                            .push(ms(at.saturating_duration_since(present)));
                    }
                }
            } else if measured {
                run.errors.push(event);
            }
            if measured {
                run.polling.push(ms(present - inserted));
            }
            card.remove();
            self.observer.wait("EMPTY", |s| s.contains(State::EMPTY));
            if (i + 1) % 50 == 0 {
                say(&format!("{} presentations", i + 1));
            }
        }
        let cpu1 = (
            cpu_ticks(self.terminal_pid),
            cpu_ticks(self.pcscd_pid),
            Instant::now(),
        );
        let per = |a: u64, b: u64| (b - a) as f64 / self.tck * 1000.0 / count.max(1) as f64;
        run.terminal_cpu_ms = per(cpu0.0, cpu1.0);
        run.pcscd_cpu_ms = per(cpu0.1, cpu1.1);
        run.seconds = (cpu1.2 - cpu0.2).as_secs_f64();
        run
    }
}

impl Run {
    fn empty() -> Run {
        Run {
            to_card: Vec::new(),
            to_outcome: Vec::new(),
            polling: Vec::new(),
            to_get_data: Vec::new(),
            get_data_to_card: Vec::new(),
            to_feedback: Vec::new(),
            errors: Vec::new(),
            missing_feedback: 0,
            terminal_cpu_ms: 0.0,
            pcscd_cpu_ms: 0.0,
            seconds: 0.0,
        }
    }

    /// CPU per presentation, errors and missing feedback, in words.
    fn costs(&self) -> String {
        format!(
            "terminal CPU {:.2} ms and pcscd CPU {:.2} ms per presentation; errors: {}{}; \
             feedback not seen by the card: {}",
            self.terminal_cpu_ms,
            self.pcscd_cpu_ms,
            self.errors.len(),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.errors)
            },
            self.missing_feedback
        )
    }

    /// One run of several rounds: the samples together, the CPU per presentation averaged
    /// over the rounds (equal in size).
    fn merge(runs: Vec<Run>) -> Run {
        let n = runs.len().max(1) as f64;
        let mut all = Run::empty();
        for r in runs {
            all.to_card.extend(r.to_card);
            all.to_outcome.extend(r.to_outcome);
            all.polling.extend(r.polling);
            all.to_get_data.extend(r.to_get_data);
            all.get_data_to_card.extend(r.get_data_to_card);
            all.to_feedback.extend(r.to_feedback);
            all.errors.extend(r.errors);
            all.missing_feedback += r.missing_feedback;
            all.terminal_cpu_ms += r.terminal_cpu_ms / n;
            all.pcscd_cpu_ms += r.pcscd_cpu_ms / n;
            all.seconds += r.seconds;
        }
        all
    }
}

// ---------------------------------------------------------------------------------------------
// AES: the second terminal, and the software's own share of an authentication
// ---------------------------------------------------------------------------------------------

/// The reader of the AES-mode terminal in (d).
const AES_READER: usize = 1;
/// The master key of the bench's NTAG 424 DNA cards (version 1).
const BENCH_MASTER_KEY: [u8; 16] = [0x5C; 16];
/// (d)'s target: an authenticated read at most this much beyond the UID-only read (p99).
const AES_EXTRA_TARGET_MS: f64 = 40.0;
/// Warm-up presentations per round of (d), at most.
const AES_ROUND_WARMUP_MAX: usize = 3;
/// Authentications timed in-process for the software's own share.
const AUTHENTICATIONS: usize = 2_000;

/// `[cards] mode = "aes"` terminal bar-2 on reader 00 01, its master key file beside it.
fn aes_terminal_config(dir: &Path, ledger: SocketAddr, token: &str) -> PathBuf {
    let keys = dir.join("card-master-keys");
    std::fs::write(
        &keys,
        format!("1 {}\n", hex::encode_upper(BENCH_MASTER_KEY)),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("terminal-aes.toml");
    std::fs::write(
        &config,
        format!(
            "[terminal]\nname = \"bar-2\"\nkind = \"bar\"\njournal = {:?}\n\n\
             [ledger]\nurl = \"http://{ledger}\"\ntoken = \"{token}\"\ntimeout_ms = 1500\n\n\
             [sync]\ninterval_ms = 2000\nbatch_max = 500\nbackoff_base_ms = 500\n\
             backoff_cap_ms = 30000\n\n\
             [reader]\nbackend = \"pcsc\"\nname_filter = \"00 01\"\ndebounce_ms = 800\n\
             feedback = true\n\n[cards]\nmode = \"aes\"\nmaster_key_file = {:?}\n",
            dir.join("journal-aes.db").display().to_string(),
            keys.display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// Waits for the terminal's `ready` and its reader `reader`, and logs the bar staff in.
fn log_in(t: &mut Terminal, reader: usize) {
    t.expect(&["ready"]);
    let (_, r) = t.expect(&["reader"]);
    assert_eq!(
        (r["state"].as_str(), r["name"].as_str()),
        (Some("connected"), Some(READERS[reader])),
        "{r}"
    );
    t.send(&json!({"cmd": "login", "staff_id": "s-bar", "pin": "1234"}));
    let (_, login) = t.expect(&["login"]);
    assert_eq!(login["ok"], true, "{login}");
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

/// The terminal's own share of an authentication: the CPU time of [`TapAuth`]'s steps (key
/// diversification, AES, CMAC, the session keys, the secure-messaging check of the answers)
/// over `count` authentications against an in-memory chip, whose side is not counted.
/// Returns (mean, p99) in microseconds.
fn software_share(count: usize) -> (f64, f64) {
    let keys = MasterKeys::new([(1, AesKey::new(BENCH_MASTER_KEY))]);
    let uid = card_uid(0);
    let mut chip = Ntag424Chip::issued(&uid, &keys, false);
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        chip.power_on();
        let mut spent = Duration::ZERO;
        let t0 = thread_cpu();
        let (mut flow, mut apdu) = TapAuth::start(&keys, &uid, rand::random());
        spent += thread_cpu() - t0;
        loop {
            let answer = chip.answer(&apdu);
            let t0 = thread_cpu();
            let step = flow.next(&answer);
            spent += thread_cpu() - t0;
            match step {
                Ok(Step::Send(next)) => apdu = next,
                Ok(Step::Done(genuine)) => {
                    assert_eq!(genuine.uid, uid);
                    break;
                }
                Err(e) => panic!("the in-memory chip did not authenticate: {e}"),
            }
        }
        samples.push(spent.as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    (mean, percentile(&samples, 99.0))
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

fn run() {
    let presentations = usize::try_from(knob("PRESENTATIONS", 200)).unwrap();
    let warmup = usize::try_from(knob("WARMUP", 10)).unwrap();
    let armed = usize::try_from(knob("ARMED", 50)).unwrap();
    let delayed = usize::try_from(knob("DELAYED", 30)).unwrap();
    let ledger_delay_ms = knob("LEDGER_DELAY_MS", 100);
    let jitter_ms = knob("INSERT_JITTER_MS", 500);
    let idle_s = knob("IDLE_S", 30);
    let idle_settle = knob("IDLE_SETTLE", 5);
    let quiet_wait = knob("QUIET_WAIT", 0);
    let aes_rounds = usize::try_from(knob("AES_ROUNDS", 4)).unwrap();
    let aes_per_round = usize::try_from(knob("AES_PER_ROUND", 50)).unwrap();
    let aes_warmup = warmup.min(AES_ROUND_WARMUP_MAX);
    let aes_cards = 2 * aes_rounds * (aes_warmup + aes_per_round);
    let bench_dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    assert!(
        3 * warmup + presentations + armed + delayed + aes_cards <= usize::from(u16::MAX),
        "at most 65535 presentations"
    );
    let tck = clk_tck();
    let dir = tempfile::Builder::new()
        .prefix("cashless-reader-bench-")
        .tempdir_in(&bench_dir)
        .unwrap();
    let machine = machine_line(dir.path());
    say(&format!("machine: {machine}"));

    let mut load = machine_load(tck);
    if quiet_wait > 0 {
        let until = Instant::now() + Duration::from_secs(quiet_wait);
        let mut quiet = 0;
        while quiet < 3 && Instant::now() < until {
            quiet = if load < 10.0 { quiet + 1 } else { 0 };
            if quiet < 3 {
                load = machine_load(tck);
            }
        }
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let load_line = format!(
        "{load:.0}% of {}% CPU (load average {})",
        cores() * 100,
        loadavg.join(" ")
    );
    say(&format!("other load before the run: {load_line}"));
    if load >= 10.0 {
        say("WARNING: the machine is busy: the numbers will be high and noisy");
    }

    // pcscd, and the observer on the terminal's reader.
    let pcscd = Pcscd::start_quiet();
    let pcscd_pid = pcscd.pid().unwrap();
    let reader = pcscd.reader(READER);
    let observer = Observer::start(pcscd.context(), reader.clone());
    observer.wait("EMPTY", |s| s.contains(State::EMPTY));

    // The ledger, with a funded card per presentation.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let total = 3 * warmup + presentations + armed + delayed + aes_cards;
    let ledger = rt.block_on(async {
        let l = Ledger::start().await;
        for i in 0..total {
            l.fund(&hex::encode_upper(card_uid(i)), FUND_CENTS).await;
        }
        l
    });
    say(&format!(
        "ledger at {} with {total} funded cards",
        ledger.base_url
    ));

    // The terminal.
    // The terminal reaches the ledger through the delay proxy (no delay but in (c)).
    let proxy = DelayProxy::start(
        ledger
            .base_url
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    );
    let config = dir.path().join("terminal.toml");
    std::fs::write(
        &config,
        format!(
            "[terminal]\nname = \"bar-1\"\nkind = \"bar\"\njournal = {:?}\n\n\
             [ledger]\nurl = \"http://{}\"\ntoken = \"{}\"\ntimeout_ms = 1500\n\n\
             [offline]\nmax_order_cents = 5000\nmax_card_exposure_cents = 10000\n\
             unknown_card_limit_cents = 0\n\n\
             [sync]\ninterval_ms = 2000\nbatch_max = 500\nbackoff_base_ms = 500\n\
             backoff_cap_ms = 30000\n\n\
             [reader]\nbackend = \"pcsc\"\nname_filter = \"00 00\"\ndebounce_ms = 800\n\
             feedback = true\n",
            dir.path().join("journal.db").display().to_string(),
            proxy.addr,
            ledger.bar_token
        ),
    )
    .unwrap();
    let mut t = Terminal::spawn(&config, &dir.path().join("terminal.log"), &pcscd);
    let terminal_pid = t.child.id();
    log_in(&mut t, READER);
    say(&format!(
        "terminal (pid {terminal_pid}) logged in, reader {} connected; pcscd pid {pcscd_pid}",
        READERS[READER]
    ));

    // --- latency ---------------------------------------------------------------------------
    let mut bench = Presenter {
        t: &mut t,
        observer: &observer,
        pcscd: &pcscd,
        reader: READER,
        keys: None,
        terminal_pid,
        pcscd_pid,
        tck,
        jitter_ms,
    };
    say(&format!(
        "(a) {presentations} presentations (+{warmup} warm-up) at the idle screen (a balance \
         check each), each 0..{jitter_ms} ms after the previous removal was seen"
    ));
    let at_rest = bench.present(0, warmup, presentations, false);
    say(&format!(
        "(b) {armed} presentations (+{warmup} warm-up) paying an armed order"
    ));
    let paying = bench.present(warmup + presentations, warmup, armed, true);
    say(&format!(
        "(c) {delayed} presentations (+{warmup} warm-up) at the idle screen, every answer of \
         the ledger held {ledger_delay_ms} ms"
    ));
    proxy.set_delay_ms(ledger_delay_ms);
    let far = bench.present(2 * warmup + presentations + armed, warmup, delayed, false);
    proxy.set_delay_ms(0);

    // (d): the same, UID-only against AES, on two terminals in alternating rounds.
    let comparison = (aes_rounds > 0 && aes_per_round > 0).then(|| {
        say(&format!(
            "(d) {aes_rounds} rounds of {aes_per_round} presentations (+{aes_warmup} warm-up) \
             at the idle screen, alternately UID-only cards on {} and NTAG 424 DNA cards on {} \
             (a second terminal, in AES mode)",
            READERS[READER], READERS[AES_READER]
        ));
        let keys = MasterKeys::new([(1, AesKey::new(BENCH_MASTER_KEY))]);
        let config = aes_terminal_config(dir.path(), proxy.addr, &ledger.bar2_token);
        let mut t2 = Terminal::spawn(&config, &dir.path().join("terminal-aes.log"), &pcscd);
        let aes_pid = t2.child.id();
        log_in(&mut t2, AES_READER);
        let observer2 = Observer::start(pcscd.context(), pcscd.reader(AES_READER));
        observer2.wait("EMPTY", |s| s.contains(State::EMPTY));
        let mut aes = Presenter {
            t: &mut t2,
            observer: &observer2,
            pcscd: &pcscd,
            reader: AES_READER,
            keys: Some(&keys),
            terminal_pid: aes_pid,
            pcscd_pid,
            tck,
            jitter_ms,
        };
        let mut next = 2 * warmup + presentations + armed + delayed + warmup;
        let (mut uid_runs, mut aes_runs) = (Vec::new(), Vec::new());
        for _ in 0..aes_rounds {
            uid_runs.push(bench.present(next, aes_warmup, aes_per_round, false));
            next += aes_warmup + aes_per_round;
            aes_runs.push(aes.present(next, aes_warmup, aes_per_round, false));
            next += aes_warmup + aes_per_round;
        }
        let quit = t2.quit();
        observer2.stop();
        let per_auth = software_share(AUTHENTICATIONS);
        (Run::merge(uid_runs), Run::merge(aes_runs), per_auth, quit)
    });
    observer.stop();

    // --- idle ------------------------------------------------------------------------------
    say(&format!(
        "idle: no card, observer stopped; settling {idle_settle} s, then measuring {idle_s} s"
    ));
    std::thread::sleep(Duration::from_secs(idle_settle));
    let t0 = Instant::now();
    let (term0, pcscd0, machine0) = (
        threads(terminal_pid),
        threads(pcscd_pid),
        machine_busy_ticks(),
    );
    let (term_cpu0, pcscd_cpu0) = (cpu_ticks(terminal_pid), cpu_ticks(pcscd_pid));
    std::thread::sleep(Duration::from_secs(idle_s));
    let (term_cpu1, pcscd_cpu1) = (cpu_ticks(terminal_pid), cpu_ticks(pcscd_pid));
    let (term1, pcscd1, machine1) = (
        threads(terminal_pid),
        threads(pcscd_pid),
        machine_busy_ticks(),
    );
    let idle_window = t0.elapsed().as_secs_f64();
    let pct = |a: u64, b: u64| (b - a) as f64 / tck / idle_window * 100.0;
    let per_s = |a: u64, b: u64| (b - a) as f64 / idle_window;
    let idle_term_pct = pct(term_cpu0, term_cpu1);
    let idle_pcscd_pct = pct(pcscd_cpu0, pcscd_cpu1);
    let idle_machine_pct = pct(machine0, machine1);
    let sum_sw = |m: &Threads| m.values().map(|(_, s)| s).sum::<u64>();
    let idle_term_sw = per_s(sum_sw(&term0), sum_sw(&term1));
    let idle_pcscd_sw = per_s(sum_sw(&pcscd0), sum_sw(&pcscd1));
    let thread_rows = |before: &Threads, after: &Threads| -> Vec<String> {
        after
            .iter()
            .map(|(name, (ticks, sw))| {
                let (t0, s0) = before.get(name).copied().unwrap_or((*ticks, *sw));
                format!(
                    "{name}: {:.2} s CPU, {:.1} switches/s",
                    (ticks - t0) as f64 / tck,
                    per_s(s0, *sw)
                )
            })
            .collect()
    };
    let term_threads = thread_rows(&term0, &term1);
    let pcscd_threads = thread_rows(&pcscd0, &pcscd1);

    // Still connected after all that.
    t.send(&json!({"cmd": "status"}));
    let (_, status) = t.expect(&["status"]);
    let reader_state = status["reader"].as_str().unwrap_or("?").to_owned();
    let total_switches = switches(terminal_pid);
    let quit = t.quit();
    drop(ledger);
    drop(pcscd);

    // --- results ---------------------------------------------------------------------------
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(String::new());
    line(format!(
        "=== cashless reader benchmark, {} ===",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    ));
    line(format!("machine: {machine}"));
    line(format!("other load before the run: {load_line}"));
    line(format!("commit: {}", commit()));
    line(format!(
        "setup: isolated pcscd (no debug logging) with vpcd's reader {:?}, the virtual card \
         played in the bench process; release `cashless terminal --reader pcsc` (debounce_ms = \
         800, feedback = true), logged in, reaching a local ledger through a proxy of the bench \
         (holding nothing but in (c)); distinct funded cards, each inserted 0..{jitter_ms} ms \
         (uniform) after the previous removal was seen; (a) {presentations}, (b) {armed}, \
         (c) {delayed} presentations, each after {warmup} warm-up ones",
        READERS[READER]
    ));
    line(String::new());
    line(format!(
        "{:<52} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "latency (ms)", "n", "min", "p50", "p90", "p99", "max"
    ));
    line("(a) at the idle screen (a balance check each)".into());
    let series = |run: &Run, outcome: &str| {
        vec![
            row(
                "  PRESENT seen -> `card` line read (beyond pcscd)",
                &run.to_card,
            ),
            row("    PRESENT seen -> GET DATA at the card", &run.to_get_data),
            row(
                "    GET DATA at the card -> `card` line read",
                &run.get_data_to_card,
            ),
            row(
                &format!("  PRESENT seen -> `{outcome}` line read"),
                &run.to_outcome,
            ),
            row(
                "  PRESENT seen -> LED/buzzer command at the card",
                &run.to_feedback,
            ),
            row(
                "  insert -> PRESENT seen (pcscd's polling, ref.)",
                &run.polling,
            ),
        ]
    };
    series(&at_rest, "balance").into_iter().for_each(&mut line);
    line("(b) paying an armed order (one beer, online)".into());
    series(&paying, "decision").into_iter().for_each(&mut line);
    line(format!(
        "(c) at the idle screen, every answer of the ledger held {ledger_delay_ms} ms (a ledger \
         farther away)"
    ));
    series(&far, "balance").into_iter().for_each(&mut line);
    for (name, run) in [("(a)", &at_rest), ("(b)", &paying), ("(c)", &far)] {
        line(format!("{name} over {:.1} s: {}", run.seconds, run.costs()));
    }
    let mut aes_verdict = String::new();
    if let Some((uid_run, aes_run, (auth_mean_us, auth_p99_us), aes_quit)) = &comparison {
        line(format!(
            "(d) at the idle screen, alternating {aes_rounds} rounds of {aes_per_round}: \
             UID-only cards to bar-1 on {:?}, NTAG 424 DNA cards to bar-2 ([cards] mode = \
             \"aes\") on {:?}",
            READERS[READER], READERS[AES_READER]
        ));
        line("  UID only (the reference)".into());
        series(uid_run, "balance")
            .into_iter()
            .take(3)
            .for_each(&mut line);
        line(
            "  AES: GET DATA, then AuthenticateEV2First and GetCardUID in secure messaging".into(),
        );
        series(aes_run, "balance")
            .into_iter()
            .take(3)
            .for_each(&mut line);
        for (name, run) in [("UID only", uid_run), ("AES", aes_run)] {
            line(format!("  {name}: {}", run.costs()));
        }
        line(format!(
            "  the terminal's own protocol work per authentication (TapAuth's steps, CPU time \
             of one thread over {AUTHENTICATIONS} authentications against an in-memory chip): \
             mean {auth_mean_us:.1} µs, p99 {auth_p99_us:.1} µs"
        ));
        line(format!("  AES terminal: {aes_quit}"));
        let (uid_p99, _) = p99_and_max(&uid_run.to_card);
        let (aes_p99, _) = p99_and_max(&aes_run.to_card);
        let extra = aes_p99 - uid_p99;
        aes_verdict = format!(
            "; AES PRESENT -> card p99 {aes_p99:.2} ms, {extra:+.2} ms beyond UID-only \
             {uid_p99:.2} ms (target at most +{AES_EXTRA_TARGET_MS} ms): {}",
            verdict(extra <= AES_EXTRA_TARGET_MS)
        );
    }
    line(String::new());
    line(format!(
        "idle, no card, reader connected ({reader_state}), logged in, {idle_window:.1} s:"
    ));
    line(format!(
        "  terminal: CPU {idle_term_pct:.2}% of one core ({:.2} s), {idle_term_sw:.1} context \
         switches/s (all threads; {total_switches} since start)",
        (term_cpu1 - term_cpu0) as f64 / tck
    ));
    line(format!("    per thread: {}", term_threads.join("; ")));
    line(format!(
        "  pcscd (reference): CPU {idle_pcscd_pct:.2}% of one core ({:.2} s), {idle_pcscd_sw:.1} \
         context switches/s",
        (pcscd_cpu1 - pcscd_cpu0) as f64 / tck
    ));
    line(format!("    per thread: {}", pcscd_threads.join("; ")));
    line(format!(
        "  whole machine over the window: {idle_machine_pct:.1}% of {}%",
        cores() * 100
    ));
    line(format!("terminal: {quit}"));
    line(String::new());
    let latency_verdicts: Vec<String> = [("(a)", &at_rest), ("(b)", &paying), ("(c)", &far)]
        .iter()
        .filter(|(_, run)| !run.to_card.is_empty())
        .map(|(name, run)| {
            let (p99, max) = p99_and_max(&run.to_card);
            format!(
                "{name} max {max:.2} ms {}, p99 {p99:.2} ms {}",
                verdict(max <= LATENCY_TARGET_MS),
                verdict(p99 <= LATENCY_TARGET_MS)
            )
        })
        .collect();
    line(format!(
        "targets: PRESENT -> card at most {LATENCY_TARGET_MS} ms: {}; idle terminal CPU < \
         {IDLE_TARGET_PCT}%: {idle_term_pct:.2}% {}{aes_verdict}",
        latency_verdicts.join("; "),
        verdict(idle_term_pct < IDLE_TARGET_PCT)
    ));
    print!("{out}");
    let results = bench_dir.join("cashless-reader-bench-results.txt");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results)
        .and_then(|mut f| f.write_all(out.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", results.display()));
    say(&format!("results also in {}", results.display()));
    let comparison_errors = comparison
        .as_ref()
        .map_or(0, |(u, a, _, _)| u.errors.len() + a.errors.len());
    assert!(
        at_rest.errors.is_empty()
            && paying.errors.is_empty()
            && far.errors.is_empty()
            && comparison_errors == 0,
        "some presentations were not read, or not as expected: see above"
    );
}
