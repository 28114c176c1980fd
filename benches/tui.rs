//! The TUI benchmark of the issue's first half: "A key press is handled and redrawn in at most
//! 16 ms (update + render on `TestBackend`)". See BENCHMARKS.md, "TUI".
//!
//! ```sh
//! cargo bench --bench tui        # about 40 s; a table on stdout
//! ```
//!
//! Two models, as a terminal shows them: a bar (the "Main Bar" products of
//! `config/catalog.example.toml`, three staff members, a status from the daemon) and a
//! checkpoint (the same staff and status, logged in). Each is drawn on its own
//! `ratatui::Terminal<TestBackend>`, at 80x24 and at 200x60, by the real `view::draw`.
//!
//! One cycle of the bar, starting logged out: pick staff, a 4-digit PIN, Enter, the `login`
//! event; an order built with digits, `+`, `-`, arrows and Backspace; Enter to charge; the
//! `card` and `decision` events (approved online, approved offline, or declined, in turn); a
//! key to leave the result; the help opened and closed. One cycle of the checkpoint, logged in:
//! a preset, the payment method, Enter, `card`, `decision`, a key; an amount typed digit by
//! digit with a Backspace, Enter, `card`, `decision`, a key; the help opened and closed; a
//! balance check (`*`, `card`, `balance`, a key).
//!
//! Each step is timed from before `Model::on_key` (or `on_event`) to the return of
//! `terminal.draw(|f| view::draw(f, &model, clock))`: the whole key-to-redraw path, the
//! backend's diff and flush included; within it, the update alone and `view::draw` into the
//! frame's buffer alone. After each step, in the same run and on the same screens, two
//! references are timed:
//! - the same model drawn again, nothing updated (an unchanged frame);
//! - a bare `terminal.draw` of one empty `Paragraph` on a terminal of the same size (what
//!   ratatui itself costs per frame).
//!
//! Environment (defaults): CYCLES=1000 (measured cycles per model and size) WARMUP=50
//! STEPS=0 (1: also a table per step) QUIET_WAIT=0 (wait up to this many seconds for other
//! load on the machine to stay under 10%).
#![allow(clippy::unwrap_used)]

mod machine;

use cashless::bench::LatencyMs;
use cashless::domain::{CardUid, Cents};
use cashless::ledger::admin::read_catalog;
use cashless::protocol::api::TerminalKind;
use cashless::protocol::events::{Decision, Event, Status};
use cashless::tui::model::{Key, MenuItem, Model, StaffItem};
use cashless::tui::view;
use hdrhistogram::Histogram;
use machine::{clk_tck, cores, knob, machine_busy_ticks, machine_load};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::widgets::Paragraph;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The issue's target for a key press, update and redraw.
const TARGET_MS: f64 = 16.0;
/// The screen sizes: the classic terminal and a large window.
const SIZES: [(u16, u16); 2] = [(80, 24), (200, 60)];
/// The clock in the status bar.
const CLOCK: &str = "21:14";
/// The point of sale of the bar, in the example catalog.
const POINT_OF_SALE: &str = "Main Bar";
/// The model's clock advances this much per step (keys a few hundred ms apart).
const STEP_MS: u64 = 300;

// ---------------------------------------------------------------------------------------------
// The models and the steps
// ---------------------------------------------------------------------------------------------

fn menu() -> Vec<MenuItem> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("config/catalog.example.toml");
    let config = root.join("config/ledger.example.toml");
    let taxes = cashless::ledger::config::LedgerConfig::load(Some(&config), &Default::default())
        .unwrap()
        .taxes;
    let menu: Vec<MenuItem> = read_catalog(&path, &taxes)
        .unwrap()
        .into_iter()
        .filter(|p| p.point_of_sale == POINT_OF_SALE)
        .map(|p| MenuItem {
            tax_rate_basis_points: taxes
                .resolve(p.product.tax_rate.as_ref().map(|r| r.as_str()))
                .map(|r| r.basis_points),
            product_id: p.product.product_id.as_str().to_owned(),
            name: p.product.name,
            price: p.product.price_cents,
            min_age: p.product.min_age,
            open_price_max: p.product.open_price_max_cents,
            returnable: p.product.returnable,
            deposit_product_id: p.product.deposit_product_id.map(|d| d.as_str().to_owned()),
        })
        .collect();
    assert!(menu.len() >= 4, "the example catalog's {POINT_OF_SALE}");
    menu
}

fn staff() -> Vec<StaffItem> {
    [
        ("s-bar", "Sam Bar"),
        ("s-cash", "Cass Cashier"),
        ("s-super", "Sue Super"),
    ]
    .map(|(id, name)| StaffItem {
        staff_id: id.into(),
        name: name.into(),
    })
    .to_vec()
}

fn status() -> Event {
    Event::Status(Status {
        online: true,
        pending: 3,
        in_doubt: 0,
        rejected: 0,
        declined_offline: 0,
        closeouts_pending: 0,
        journal_writable: true,
        last_sync_at: Some("2026-07-01T21:13:58.120Z".into()),
        last_feed_at: None,
        reader: "ACS ACR122U PICC Interface 00 00".into(),
        staff: Some("s-bar".into()),
    })
}

fn login_ok() -> Event {
    Event::Login {
        ok: true,
        staff_id: Some("s-bar".into()),
        name: Some("Sam Bar".into()),
        role: Some("bar"),
        message: None,
    }
}

fn card() -> Event {
    Event::Card {
        uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
        reader: "ACS ACR122U PICC Interface 00 00".into(),
        card_type: Some("MIFARE Ultralight"),
        key_version: None,
    }
}

/// The decision of cycle `cycle`: approved online, offline, online, declined, in turn.
fn decision(operation: &'static str, total: i64, cycle: usize) -> Event {
    let (status, reason) = match cycle % 4 {
        1 => ("approved_offline", None),
        3 => ("declined", Some("INSUFFICIENT_FUNDS".to_owned())),
        _ => ("approved_online", None),
    };
    Event::Decision(Decision {
        client_request_id: None,
        operation,
        card_uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
        status,
        reason,
        total_cents: Cents::new(total),
        balance_cents: Some(Cents::new(2_350)),
        target_client_request_id: None,
        vouchers_used: None,
        vouchers_granted: None,
    })
}

/// A bar, logged out, with the daemon's status.
fn bar_model() -> Model {
    let mut m = Model::new("bar-1 Main Bar".into(), TerminalKind::Bar, menu(), staff());
    m.on_event(&status(), 0);
    m
}

/// A checkpoint, logged in, at the amount screen.
fn checkpoint_model() -> Model {
    let mut m = Model::new(
        "cp-1 Entrance".into(),
        TerminalKind::Checkpoint,
        Vec::new(),
        staff(),
    );
    m.on_event(&status(), 0);
    m.on_event(&login_ok(), 0);
    m
}

enum Input {
    Key(Key),
    Event(Event),
}

struct Step {
    label: &'static str,
    input: Input,
}

fn key(label: &'static str, k: Key) -> Step {
    Step {
        label,
        input: Input::Key(k),
    }
}

fn event(label: &'static str, e: Event) -> Step {
    Step {
        label,
        input: Input::Event(e),
    }
}

/// One bar cycle, from logged out to the order screen after a sale.
fn bar_steps(cycle: usize) -> Vec<Step> {
    let d = Key::Digit;
    vec![
        key("bar: login, pick staff", d(1)),
        key("bar: login, PIN digit", d(2)),
        key("bar: login, PIN digit", d(5)),
        key("bar: login, PIN digit", d(8)),
        key("bar: login, PIN digit", d(0)),
        key("bar: login, Enter", Key::Enter),
        event("bar: login accepted (event)", login_ok()),
        key("bar: order, product digit", d(1)),
        key("bar: order, product digit", d(1)),
        key("bar: order, + / -", Key::Plus),
        key("bar: order, product digit", d(3)),
        key("bar: order, product digit", d(5)),
        key("bar: order, + / -", Key::Minus),
        key("bar: order, arrow", Key::Down),
        key("bar: order, + / -", Key::Plus),
        key("bar: order, product digit", d(4)),
        key("bar: order, Backspace", Key::Backspace),
        key("bar: order, product digit", d(2)),
        key("bar: order, Enter (charge)", Key::Enter),
        event("bar: card (event)", card()),
        event("bar: decision (event)", decision("order", 2_050, cycle)),
        key("bar: result, any key", Key::Enter),
        key("bar: help open", Key::Help),
        key("bar: help close", Key::Esc),
    ]
}

/// One checkpoint cycle, from the amount screen back to it.
fn checkpoint_steps(cycle: usize) -> Vec<Step> {
    let d = Key::Digit;
    vec![
        key("cp: amount, preset", Key::Minus),
        key("cp: amount, cash/card", Key::Dot),
        key("cp: amount, Enter (top up)", Key::Enter),
        event("cp: card (event)", card()),
        event("cp: decision (event)", decision("topup", 5_000, cycle)),
        key("cp: result, any key", Key::Enter),
        key("cp: amount, digit", d(7)),
        key("cp: amount, digit", d(5)),
        key("cp: amount, digit", d(0)),
        key("cp: amount, Backspace", Key::Backspace),
        key("cp: amount, digit", d(5)),
        key("cp: amount, digit", d(0)),
        key("cp: amount, Enter (top up)", Key::Enter),
        event("cp: card (event)", card()),
        event("cp: decision (event)", decision("topup", 7_550, cycle)),
        key("cp: result, any key", Key::Enter),
        key("cp: help open", Key::Help),
        key("cp: help close", Key::Esc),
        key("cp: balance, *", Key::Star),
        event("cp: card (event)", card()),
        event(
            "cp: balance (event)",
            Event::Balance {
                card_uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
                balance_cents: Some(Cents::new(2_350)),
                status: Some("active".into()),
                source: "ledger",
                as_of: None,
            },
        ),
        key("cp: balance, any key", Key::Enter),
    ]
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// An empty histogram in nanoseconds (1 ns .. 10 s, 3 significant digits).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// The shared latency type, from a histogram in nanoseconds.
fn latency_ms(h: &Histogram<u64>) -> LatencyMs {
    let ms = |ns: u64| ns as f64 / 1e6;
    LatencyMs {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1e6,
    }
}

/// What one screen size records.
struct Series {
    size: (u16, u16),
    bar: Histogram<u64>,
    checkpoint: Histogram<u64>,
    /// Of both: `on_key` or `on_event`.
    update: Histogram<u64>,
    /// Of both: `view::draw` into the frame's buffer.
    render: Histogram<u64>,
    unchanged: Histogram<u64>,
    bare: Histogram<u64>,
    per_step: BTreeMap<&'static str, Histogram<u64>>,
}

/// One terminal with its model, as the run loop will hold them.
struct Screen {
    terminal: Terminal<TestBackend>,
    model: Model,
    now_ms: u64,
}

impl Screen {
    fn new(size: (u16, u16), model: Model) -> Screen {
        let mut terminal = Terminal::new(TestBackend::new(size.0, size.1)).unwrap();
        terminal.draw(|f| view::draw(f, &model, CLOCK)).unwrap();
        Screen {
            terminal,
            model,
            now_ms: 0,
        }
    }

    /// Key or event, then redraw: the measured path. Returns its time, and of it the time
    /// of the update and of `view::draw` into the frame's buffer (the rest is ratatui's
    /// diff, the backend's writes and the buffer swap).
    fn step(&mut self, input: &Input) -> (Duration, Duration, Duration) {
        self.now_ms += STEP_MS;
        let start = Instant::now();
        match input {
            Input::Key(k) => drop(black_box(self.model.on_key(*k, self.now_ms))),
            Input::Event(e) => self.model.on_event(e, self.now_ms),
        }
        let updated = Instant::now();
        let model = &self.model;
        let mut render = Duration::ZERO;
        self.terminal
            .draw(|f| {
                let t = Instant::now();
                view::draw(f, model, CLOCK);
                render = t.elapsed();
            })
            .unwrap();
        (start.elapsed(), updated - start, render)
    }

    /// The reference: the same model drawn again.
    fn redraw(&mut self) -> Duration {
        let model = &self.model;
        let start = Instant::now();
        self.terminal.draw(|f| view::draw(f, model, CLOCK)).unwrap();
        start.elapsed()
    }
}

/// The reference: a frame of one empty paragraph.
fn bare_draw(terminal: &mut Terminal<TestBackend>) -> Duration {
    let start = Instant::now();
    terminal
        .draw(|f| f.render_widget(Paragraph::new(""), f.area()))
        .unwrap();
    start.elapsed()
}

/// Runs `cycles` cycles of both models at every size; with `record_it` false, a warm-up.
fn run(
    series: &mut [Series],
    screens: &mut [(Screen, Screen, Terminal<TestBackend>)],
    cycles: usize,
    record_it: bool,
) {
    let bar_logged_out = bar_model();
    // Four variants of each cycle, for the four decisions.
    let bar: Vec<Vec<Step>> = (0..4).map(bar_steps).collect();
    let checkpoint: Vec<Vec<Step>> = (0..4).map(checkpoint_steps).collect();
    for cycle in 0..cycles {
        for (s, (bar_screen, cp_screen, bare)) in series.iter_mut().zip(screens.iter_mut()) {
            // Back to logged out: not timed (a reset of the model, not a key).
            bar_screen.model.clone_from(&bar_logged_out);
            for (steps, screen, is_bar) in [
                (&bar[cycle % 4], &mut *bar_screen, true),
                (&checkpoint[cycle % 4], &mut *cp_screen, false),
            ] {
                for step in steps {
                    let (took, update, render) = screen.step(&step.input);
                    let unchanged = screen.redraw();
                    let bare_took = bare_draw(bare);
                    if record_it {
                        let path = if is_bar {
                            &mut s.bar
                        } else {
                            &mut s.checkpoint
                        };
                        record(path, took);
                        record(s.per_step.entry(step.label).or_insert_with(histogram), took);
                        record(&mut s.update, update);
                        record(&mut s.render, render);
                        record(&mut s.unchanged, unchanged);
                        record(&mut s.bare, bare_took);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The machine and its load
// ---------------------------------------------------------------------------------------------

/// utime + stime of this process, in ticks.
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?", |l| l.trim_start_matches([' ', '\t', ':']));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " with local changes"
    };
    format!(
        "{} vCPUs ({model}), {mem_gib:.0} GiB, Linux {}; commit {commit}{dirty}",
        cores(),
        kernel.trim()
    )
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// Milliseconds with three decimals; four below 0.01 ms (an update takes well under 1 µs).
fn ms(v: f64) -> String {
    if v < 0.01 {
        format!("{v:.4}")
    } else {
        format!("{v:.3}")
    }
}

fn row(name: &str, h: &Histogram<u64>, target: &str) -> String {
    let l = latency_ms(h);
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {target} |",
        h.len(),
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let cycles = usize::try_from(knob("CYCLES", 1000)).unwrap();
    let warmup = usize::try_from(knob("WARMUP", 50)).unwrap();
    let per_step = knob("STEPS", 0) != 0;
    let quiet_wait = knob("QUIET_WAIT", 0);
    let tck = clk_tck();

    let machine = machine_line();
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
    let load_before = format!(
        "{load:.0}% of {}% CPU (load average {})",
        cores() * 100,
        loadavg()
    );
    eprintln!("==> other load before the run: {load_before}");

    let mut series: Vec<Series> = SIZES
        .iter()
        .map(|&size| Series {
            size,
            bar: histogram(),
            checkpoint: histogram(),
            update: histogram(),
            render: histogram(),
            unchanged: histogram(),
            bare: histogram(),
            per_step: BTreeMap::new(),
        })
        .collect();
    let mut screens: Vec<(Screen, Screen, Terminal<TestBackend>)> = SIZES
        .iter()
        .map(|&size| {
            (
                Screen::new(size, bar_model()),
                Screen::new(size, checkpoint_model()),
                Terminal::new(TestBackend::new(size.0, size.1)).unwrap(),
            )
        })
        .collect();

    run(&mut series, &mut screens, warmup, false);
    let (busy0, own0, t0) = (machine_busy_ticks(), own_ticks(), Instant::now());
    run(&mut series, &mut screens, cycles, true);
    let elapsed = t0.elapsed().as_secs_f64();
    let (busy1, own1) = (machine_busy_ticks(), own_ticks());
    let other_during = (busy1 - busy0).saturating_sub(own1 - own0) as f64 / tck / elapsed * 100.0;
    let own_during = (own1 - own0) as f64 / tck / elapsed * 100.0;

    println!("TUI bench: key or event -> update + terminal.draw on TestBackend, ms");
    println!("machine: {machine}");
    println!("other load before the run: {load_before}");
    println!(
        "during the run ({elapsed:.1} s): this bench {own_during:.0}%, everything else {other_during:.0}% of {}% CPU (load average {})",
        cores() * 100,
        loadavg()
    );
    if other_during >= 10.0 {
        println!(
            "WARNING: other jobs ran during the run: the tails (p99.9, max) are theirs; run again"
        );
    }
    println!("{cycles} cycles per model and size after {warmup} warm-up cycles");
    println!();
    println!("| size | path | n | p50 | p90 | p99 | p99.9 | max | target |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for s in &series {
        let size = format!("{}x{}", s.size.0, s.size.1);
        let target = format!("≤ {TARGET_MS:.0} ms");
        for (name, h, target) in [
            ("bar: key/event → update + draw", &s.bar, target.as_str()),
            (
                "checkpoint: key/event → update + draw",
                &s.checkpoint,
                &target,
            ),
            ("— of both: the update (on_key/on_event)", &s.update, ""),
            ("— of both: view::draw into the buffer", &s.render, ""),
            ("reference: unchanged frame, draw again", &s.unchanged, ""),
            ("reference: one empty Paragraph", &s.bare, ""),
        ] {
            println!("{}", row(&format!("{size} | {name}"), h, target));
        }
    }
    let worst = series
        .iter()
        .flat_map(|s| [&s.bar, &s.checkpoint])
        .map(|h| latency_ms(h).max)
        .fold(0.0, f64::max);
    println!();
    println!(
        "target: every key/event → redraw ≤ {TARGET_MS:.0} ms: {} (slowest of all: {} ms)",
        if worst <= TARGET_MS { "met" } else { "NOT met" },
        ms(worst)
    );

    if per_step {
        println!();
        print!("| step |");
        for s in &series {
            print!(" p50 {0}x{1} | p99 {0}x{1} |", s.size.0, s.size.1);
        }
        println!();
        println!("|---|{}", "---:|".repeat(2 * series.len()));
        let labels: Vec<&'static str> = series[0].per_step.keys().copied().collect();
        for label in labels {
            print!("| {label} |");
            for s in &series {
                let l = latency_ms(&s.per_step[label]);
                print!(" {} | {} |", ms(l.p50), ms(l.p99));
            }
            println!();
        }
    }
}
