//! The systemd units under `systemd/` (issue 14), and the two daemons' side of `Type=notify`.
//!
//! The units are checked by systemd's own tools: `systemd-analyze verify` (syntax, every
//! referenced unit and executable exists: `ExecStart=` is pointed at the binary under test)
//! and `systemd-analyze security --offline=true` (the exposure score, at most 2.0 for the
//! ledger and its housekeeping, 4.0 for the kiosk terminal, which owns tty1).
//!
//! The notify protocol is checked against the real binaries with a socket of the test's own
//! standing in for systemd's: `NOTIFY_SOCKET` names it and `WATCHDOG_USEC` asks for a
//! watchdog, as systemd does. `READY=1` must come once the program serves; `WATCHDOG=1`
//! keeps coming while it is healthy and stops while the ledger's PostgreSQL server is frozen
//! (`SIGSTOP`: it answers nothing), then comes again when it answers; `STOPPING=1` on
//! SIGTERM or `quit`.
#![allow(clippy::unwrap_used)]

mod common;

use common::pg_server::PgServer;
use common::terminal::*;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

/// The highest exposure score `systemd-analyze security --offline=true` may give each unit.
const EXPOSURE_MAX: &[(&str, f64)] = &[
    ("cashless-ledger.service", 2.0),
    ("cashless-housekeeping.service", 2.0),
    ("cashless-terminal.service", 4.0),
];

/// The daemons: `Type=notify` with a watchdog.
const NOTIFY_UNITS: &[&str] = &["cashless-ledger.service", "cashless-terminal.service"];

/// The watchdog period the tests ask for: the programs feed it every third of it.
const WATCHDOG_USEC: &str = "600000";
/// How long to listen for feeds when counting them: five periods.
const LISTEN: Duration = Duration::from_secs(3);
/// Feeds expected while healthy within [`LISTEN`] (every 200 ms: about 15; slow machines
/// get slack).
const FEEDS_MIN: usize = 4;
/// How long to wait for a message that must come.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(30);

/// The units as shipped, copied into `dir` with `ExecStart=` naming the binary under test
/// (verify checks that the executable exists).
fn units_in(dir: &Path) -> Vec<PathBuf> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("service" | "timer")
            )
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let copy = dir.join(p.file_name().unwrap());
            std::fs::write(&copy, text.replace("/usr/local/bin/cashless", BIN)).unwrap();
            copy
        })
        .collect();
    units.sort();
    units
}

fn file_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

/// The overall exposure score in `systemd-analyze security` output.
fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    line.rsplit_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = units_in(dir.path());
    let names: Vec<&str> = units.iter().map(|p| file_name(p)).collect();
    for expected in EXPOSURE_MAX
        .iter()
        .map(|(n, _)| *n)
        .chain(["cashless-housekeeping.timer"])
    {
        assert!(
            names.contains(&expected),
            "{expected} missing from systemd/: {names:?}"
        );
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Warnings (an unknown key, a missing unit) do not fail verify: none is accepted either.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn every_service_is_hardened_to_its_exposure_score() {
    let dir = tempfile::tempdir().unwrap();
    let services: Vec<PathBuf> = units_in(dir.path())
        .into_iter()
        .filter(|p| file_name(p).ends_with(".service"))
        .collect();
    assert_eq!(services.len(), EXPOSURE_MAX.len(), "{services:?}");
    for service in &services {
        let name = file_name(service);
        let max = EXPOSURE_MAX
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}: give it a maximum score in EXPOSURE_MAX"))
            .1;
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(service)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let score = exposure(&stdout).unwrap_or_else(|| {
            panic!(
                "{name}: no score in\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(
            score <= max,
            "{name}: exposure {score} above {max}:\n{stdout}"
        );
    }
}

#[test]
fn the_timer_runs_housekeeping_daily_and_catches_up_after_downtime() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cashless-housekeeping.timer");
    let text = std::fs::read_to_string(path).unwrap();
    let settings: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(settings.contains(&"Persistent=true"), "{text}");
    let calendar = settings
        .iter()
        .find_map(|l| l.strip_prefix("OnCalendar="))
        .expect("OnCalendar=");
    // systemd's own parser: its next two elapses are a day apart.
    let out = Command::new("systemd-analyze")
        .args(["calendar", "--iterations=2", calendar])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{calendar}: {stdout}");
    // "    Next elapse: Fri 2026-12-04 10:30:00 UTC", "       Iter. #2: Sat 2026-12-05 ...".
    let elapses: Vec<i64> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Next elapse:") || l.starts_with("Iter. #"))
        .map(|l| {
            let (_, when) = l.split_once(": ").unwrap();
            let (_weekday, when) = when.split_once(' ').unwrap();
            chrono::NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M:%S UTC")
                .unwrap_or_else(|e| panic!("{when}: {e}"))
                .and_utc()
                .timestamp()
        })
        .collect();
    assert_eq!(elapses.len(), 2, "{stdout}");
    assert_eq!(elapses[1] - elapses[0], 24 * 3600, "{stdout}");
    let service =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cashless-housekeeping.service");
    let service = std::fs::read_to_string(service).unwrap();
    assert!(
        service.contains("Type=oneshot") && service.contains(" housekeeping "),
        "{service}"
    );
}

#[test]
fn the_daemons_are_notify_services_with_a_watchdog() {
    for name in NOTIFY_UNITS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let settings: Vec<&str> = text.lines().map(str::trim).collect();
        for setting in ["Type=notify", "NotifyAccess=main", "Restart=on-failure"] {
            let present = settings.contains(&setting)
                || (setting == "Restart=on-failure" && settings.contains(&"Restart=always"));
            assert!(present, "{name} lacks {setting}");
        }
        assert!(
            settings.iter().any(|l| l.starts_with("WatchdogSec=")),
            "{name} lacks WatchdogSec="
        );
    }
}

/// A socket standing in for systemd's notify socket.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: String,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path: path.to_str().unwrap().to_owned(),
            _dir: dir,
            socket,
        }
    }

    /// The environment systemd gives a `Type=notify` service with `WatchdogSec=`.
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("NOTIFY_SOCKET", self.path.as_str()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ]
    }

    /// The next message, if one comes by `deadline`.
    async fn next(&self, deadline: Instant) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let left = deadline.checked_duration_since(Instant::now())?;
        let n = tokio::time::timeout(left, self.socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Waits for a message with the line `line`; returns the whole message.
    async fn until(&self, line: &str) -> String {
        let deadline = Instant::now() + MESSAGE_DEADLINE;
        let mut seen = Vec::new();
        while let Some(message) = self.next(deadline).await {
            if message.lines().any(|l| l == line) {
                return message;
            }
            seen.push(message);
        }
        panic!("no {line} within {MESSAGE_DEADLINE:?}; received {seen:?}");
    }

    /// Messages with the line `line` received within `within`.
    async fn count(&self, line: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut n = 0;
        while let Some(message) = self.next(deadline).await {
            n += message.lines().filter(|l| *l == line).count();
        }
        n
    }
}

/// `[postgres]` timeouts short enough that a frozen server fails calls quickly.
const PG_CONFIG: &str = "[postgres]\npool_max_size = 4\nconnect_timeout_ms = 500\n\
                         pool_wait_timeout_ms = 500\nstatement_timeout_ms = 1000\n";

#[tokio::test]
async fn the_ledger_on_postgres_feeds_its_watchdog_only_while_the_database_answers() {
    let pg = PgServer::start();
    let notify = NotifySocket::bind();
    let mut l =
        Ledger::start_on_postgres_server_with_env(&pg.url(), PG_CONFIG, &notify.env()).await;
    let ready = notify.until("READY=1").await;
    assert!(
        ready.contains(&format!(
            "STATUS=serving on {}",
            l.base_url.trim_start_matches("http://")
        )),
        "{ready}"
    );
    let fed = notify.count("WATCHDOG=1", LISTEN).await;
    assert!(
        fed >= FEEDS_MIN,
        "fed {fed} times in {LISTEN:?} while healthy"
    );

    // The database answers nothing: the watchdog starves (systemd would restart the ledger).
    pg.freeze();
    // A check already under way when the server froze may still feed once.
    let _ = notify.count("WATCHDOG=1", Duration::from_millis(500)).await;
    let starved = notify.count("WATCHDOG=1", LISTEN).await;
    pg.thaw();
    assert_eq!(starved, 0, "fed while the database was frozen");

    // It answers again: so is the watchdog fed, without a restart.
    notify.until("WATCHDOG=1").await;
    assert!(l.server_running());
    l.topup(&uid(1), 500).await.assert_status(201);

    let status = l.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    notify.until("STOPPING=1").await;
}

#[tokio::test]
async fn the_ledger_on_sqlite_is_ready_when_it_serves_and_feeds_its_watchdog() {
    let notify = NotifySocket::bind();
    let mut l = Ledger::start_with_config_and_env_on(Backend::Sqlite, "", &notify.env()).await;
    notify.until("READY=1").await;
    // Ready means serving: a request is answered at once.
    l.topup(&uid(1), 500).await.assert_status(201);
    let fed = notify.count("WATCHDOG=1", LISTEN).await;
    assert!(fed >= FEEDS_MIN, "fed {fed} times in {LISTEN:?}");
    let status = l.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    notify.until("STOPPING=1").await;
}

/// The configuration of terminal bar-1 of `l` in `dir`, deciding online within `timeout_ms`.
fn bar_config(l: &Ledger, dir: &Path, timeout_ms: u64) -> PathBuf {
    write_config(
        dir,
        &dir.join("journal.db"),
        l.base_url.trim_start_matches("http://"),
        &l.bar_token,
        "bar-1",
        "bar",
        timeout_ms,
    )
}

#[tokio::test]
async fn a_terminal_whose_online_decision_could_starve_its_watchdog_refuses_to_start() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A tap may hold the loop 2 x 1000 ms; the watchdog wants a feed every 200 ms.
    let config = bar_config(&l, dir.path(), 1000);
    let notify = NotifySocket::bind();
    let out = tokio::process::Command::new(BIN)
        .args([
            "terminal",
            "--config",
            config.to_str().unwrap(),
            "--ui",
            "jsonl",
        ])
        .envs(notify.env())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[ledger] timeout_ms = 1000 is too long for the service's watchdog")
            && stderr.contains("at most 100"),
        "{stderr}"
    );
    // It never said it was ready.
    assert_eq!(notify.count("READY=1", Duration::from_millis(200)).await, 0);
}

#[tokio::test]
async fn the_terminal_is_ready_when_staff_can_sell_and_feeds_its_watchdog() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A tap may hold the loop twice 100 ms: within the watchdog's feeding interval (200 ms
    // here), or the terminal refuses to start.
    let config = bar_config(&l, dir.path(), 100);
    let notify = NotifySocket::bind();
    let mut t = Terminal::spawn_with(&config, &notify.env(), std::process::Stdio::inherit());
    t.expect("ready").await;
    let ready = notify.until("READY=1").await;
    assert!(ready.contains("STATUS=ready for staff"), "{ready}");
    let fed = notify.count("WATCHDOG=1", LISTEN).await;
    assert!(fed >= FEEDS_MIN, "fed {fed} times in {LISTEN:?}");
    // Ready means staff can sell.
    l.fund(&uid(9), 1000).await;
    t.send(json!({"cmd": "login", "staff_id": "s-bar", "pin": "1234"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    let sold = t.sell("water", 1, &uid(9)).await;
    assert_eq!(sold["status"], "approved_online", "{sold}");
    t.send(json!({"cmd": "quit"})).await;
    notify.until("STOPPING=1").await;
}
