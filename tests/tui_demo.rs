//! `cashless demo` driven as a person would, in tmux (testing.md): the real binary on a real
//! pseudo-terminal, keys sent with `tmux send-keys`, the screen read with `capture-pane`.
//! It logs in, sells online and offline, restores the network and watches the backlog fall to
//! 0, opens and closes the help, quits, and then checks the shell's terminal is sane again, no process is left, and the
//! ledger on disk holds exactly the two sales.
#![allow(clippy::unwrap_used)]

mod common;

use common::BIN;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A line of the help overlay.
const HELP_LINE: &str = "this help; any key closes it";
/// Long enough for a debug build's argon2 (seeding staff, login) on a busy 2-core machine.
const SCREEN_DEADLINE: Duration = Duration::from_secs(60);

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A shell in a 100x30 window, started with a plain environment.
    fn start(name: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("cashless-{name}-{}", std::process::id()),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "bash --norc --noprofile",
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux is installed (apt-get install tmux)")
    }

    /// Types `keys` (tmux key names: `Enter`, `Escape`, or literal text).
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "0", k]);
            assert!(out.status.success(), "send-keys {k}: {out:?}");
            // One key at a time, as a person types: the TUI reads each as its own event.
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows all of `texts`; returns that screen.
    fn wait_for(&self, texts: &[&str]) -> String {
        self.wait_until(&format!("{texts:?}"), |screen| {
            texts.iter().all(|t| screen.contains(t))
        })
    }

    /// Waits until the screen no longer shows `text`; returns that screen.
    fn wait_gone(&self, text: &str) -> String {
        self.wait_until(&format!("{text:?} to go"), |screen| !screen.contains(text))
    }

    /// Waits until `done` holds for the screen (`what` says what for a timeout); returns it.
    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The shell's pid (the pane's process).
    fn shell_pid(&self) -> u32 {
        let out = self.run(&["list-panes", "-F", "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Pids of processes whose command line (arguments joined by NULs) mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// The number the login screen shows next to `name`.
fn staff_number(screen: &str, name: &str) -> String {
    find_staff_number(screen, name)
        .unwrap_or_else(|| panic!("{name} is not on the login screen:\n{screen}"))
}

/// The number the login screen shows next to `name`, once the staff list is there.
fn find_staff_number(screen: &str, name: &str) -> Option<String> {
    screen.lines().find_map(|l| {
        let words: Vec<&str> = l
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            [n, who] if *who == name => Some((*n).to_owned()),
            _ => None,
        }
    })
}

/// The price of menu item 1, in cents, as the menu shows it (`1  Beer 0.5 l  4.50`).
fn first_price_cents(screen: &str) -> i64 {
    let line = screen
        .lines()
        .find(|l| l.trim_start_matches(['│', ' ']).starts_with("1  "))
        .unwrap_or_else(|| panic!("no menu item 1:\n{screen}"));
    let price = line
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .find(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .unwrap_or_else(|| panic!("no price on {line:?}"));
    let (units, cents) = price.split_once('.').unwrap();
    units.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap()
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Starts the demo in `dir` from the shell (the markers are split in two on the command
/// line, so that only the output shows them whole), so that what it leaves behind (the terminal's
/// mode, processes) is seen by the shell afterwards.
fn start_demo(tmux: &Tmux, dir: &Path) {
    let line = format!(
        "{BIN} demo --dir {}; echo DEMO_\"\"EXIT=$?; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo|isig)' | tr '\\n' ' '; echo STTY_\"\"DONE",
        dir.display()
    );
    tmux.keys(&[&line, "Enter"]);
    tmux.wait_for(&["Who are you?", "DEMO", "a-f: present card"]);
}

/// After the demo: the shell got its terminal back in cooked mode, and nothing the demo
/// started is still running.
fn assert_left_cleanly(tmux: &Tmux, dir: &Path) -> String {
    let screen = tmux.wait_for(&["STTY_DONE"]);
    assert!(screen.contains("DEMO_EXIT=0"), "{screen}");
    // `stty -a` prints `-icanon`, `-echo`, `-isig` while raw mode is left on.
    let modes = screen
        .lines()
        .find(|l| l.ends_with("STTY_DONE"))
        .unwrap_or_default();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            modes.split_whitespace().any(|w| w == mode),
            "the terminal was not restored ({mode} is off):\n{screen}"
        );
    }
    assert!(
        processes_with(&dir.display().to_string()).is_empty(),
        "a process of the demo is still running"
    );
    assert!(children_of(tmux.shell_pid()).is_empty());
    screen
}

fn sqlite_query(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let columns = stmt.column_count();
    stmt.query_map([], |r| {
        (0..columns)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn demo_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join(name);
    (base, dir)
}

#[test]
fn a_person_sells_online_and_offline_in_the_demo_and_leaves_it_cleanly() {
    let tmux = Tmux::start("sell");
    let (_base, dir) = demo_dir("demo");
    start_demo(&tmux, &dir);

    // Log in as Sam with the PIN the banner shows, once the first sync brought the staff list
    // (the banner shows the PIN from the start; on a busy machine the list comes later).
    let screen = tmux.wait_until("Sam on the login screen", |screen| {
        screen.contains("Sam 1111") && find_staff_number(screen, "Sam").is_some()
    });
    let sam = staff_number(&screen, "Sam");
    tmux.keys(&[&sam, "1", "1", "1", "1", "Enter"]);
    let screen = tmux.wait_for(&[" Menu ", "│ Sam │", "ONLINE"]);
    let price = first_price_cents(&screen);

    // Online: card A had 50.00.
    tmux.keys(&["1", "Enter"]);
    tmux.wait_for(&["PRESENT CARD"]);
    tmux.keys(&["a"]);
    let screen = tmux.wait_for(&["APPROVED", "balance"]);
    assert!(!screen.contains("OFFLINE"), "{screen}");
    assert!(
        screen.contains(&format!("balance {}", money(5_000 - price))),
        "{screen}"
    );
    tmux.keys(&["Enter"]);

    // The window shrinks below 80x24 and comes back: a message, never a crash.
    tmux.run(&["resize-window", "-x", "40", "-y", "10"]);
    tmux.wait_for(&["Window too small"]);
    tmux.run(&["resize-window", "-x", "100", "-y", "30"]);
    tmux.wait_for(&[" Menu ", "DEMO"]);

    // Cut the network: the status bar says so, and the next sale is decided offline.
    tmux.keys(&["n"]);
    tmux.wait_for(&["RESTORE the network", "OFFLINE"]);
    tmux.keys(&["1", "Enter"]);
    tmux.wait_for(&["PRESENT CARD"]);
    tmux.keys(&["a"]);
    let screen = tmux.wait_for(&["APPROVED", "(OFFLINE)", "1 waiting"]);
    assert!(
        screen.contains(&format!("balance {}", money(5_000 - 2 * price))),
        "{screen}"
    );
    tmux.keys(&["Enter"]);

    // Restore it: the sale is replayed and the backlog falls to 0.
    tmux.keys(&["n"]);
    tmux.wait_for(&["ONLINE", "0 waiting", "n: cut the network"]);

    // Leave: Esc on the empty order logs out, Esc at the login screen quits; but not while
    // the help is open: any key closes it and does only that.
    tmux.keys(&["Escape"]);
    tmux.wait_for(&["Who are you?"]);
    for closing in ["Escape", "n"] {
        tmux.keys(&["?"]);
        tmux.wait_for(&[HELP_LINE]);
        tmux.keys(&[closing]);
        let screen = tmux.wait_gone(HELP_LINE);
        // The demo still runs, at the login screen, with the network as it was.
        assert!(
            !screen.contains("DEMO_EXIT"),
            "{closing} left the demo:\n{screen}"
        );
        for shown in ["Who are you?", "DEMO", "n: cut the network"] {
            assert!(screen.contains(shown), "{closing}: no {shown:?}:\n{screen}");
        }
    }
    tmux.keys(&["Escape"]);
    let screen = assert_left_cleanly(&tmux, &dir);
    assert!(
        screen.contains("Ledger audit: the books balance"),
        "{screen}"
    );

    // The ledger holds both sales, once each, and card A's balance says so.
    let db = dir.join("ledger.db");
    let orders = sqlite_query(
        &db,
        "SELECT mode, total_cents FROM bar_orders ORDER BY created_at",
    );
    assert_eq!(
        orders,
        vec![
            vec!["online".to_owned(), price.to_string()],
            vec!["offline".to_owned(), price.to_string()],
        ]
    );
    let balance = sqlite_query(
        &db,
        "SELECT balance_cents FROM cards WHERE card_uid = '04A1B2C3D4E5F6'",
    );
    assert_eq!(balance, vec![vec![(5_000 - 2 * price).to_string()]]);
    let audit = Command::new(BIN)
        .args(["ledger", "--database"])
        .arg(format!("sqlite:{}", db.display()))
        .arg("audit")
        .output()
        .unwrap();
    assert!(audit.status.success(), "{audit:?}");
}

/// The number the menu shows next to the product named `name` (`5  Lemonade 0.4 l ...`).
fn menu_number(screen: &str, name: &str) -> String {
    screen
        .lines()
        .find_map(|l| {
            let line = l.trim_start_matches(['│', ' ']);
            let (n, rest) = line.split_once("  ")?;
            (n.chars().all(|c| c.is_ascii_digit()) && rest.trim_start().starts_with(name))
                .then(|| n.to_owned())
        })
        .unwrap_or_else(|| panic!("{name} is not on the menu:\n{screen}"))
}

#[test]
fn the_demo_shows_cups_a_minor_and_a_staff_voucher() {
    let tmux = Tmux::start("sell-more");
    let (_base, dir) = demo_dir("what-festivals-sell");
    start_demo(&tmux, &dir);
    let screen = tmux.wait_until("Sam on the login screen", |screen| {
        screen.contains("Sam 1111") && find_staff_number(screen, "Sam").is_some()
    });
    let sam = staff_number(&screen, "Sam");
    tmux.keys(&[&sam, "1", "1", "1", "1", "Enter"]);
    let screen = tmux.wait_for(&[" Menu ", "│ Sam │", "ONLINE", "Lemonade"]);
    let lemonade = menu_number(&screen, "Lemonade");
    let beer = menu_number(&screen, "Beer 0.5 l");

    // A lemonade (3.00) comes in a cup: the order adds its 2.00 deposit. Card A had 50.00.
    tmux.keys(&[&lemonade, "Enter"]);
    tmux.wait_for(&["5.00", "PRESENT CARD"]);
    tmux.keys(&["a"]);
    tmux.wait_for(&["APPROVED", "balance 45.00"]);
    tmux.keys(&["Enter"]);

    // The cup comes back: its deposit goes onto the card.
    tmux.keys(&["."]);
    tmux.wait_for(&[" Cups back "]);
    tmux.keys(&["1", "Enter"]);
    tmux.wait_for(&["+2.00  CUPS BACK", "PRESENT CARD"]);
    tmux.keys(&["a"]);
    tmux.wait_for(&["APPROVED", "balance 47.00"]);
    tmux.keys(&["Enter"]);

    // Card E's holder is 15: a beer (16+) is refused before any money moves.
    tmux.keys(&[&beer, "Enter"]);
    tmux.wait_for(&["PRESENT CARD"]);
    tmux.keys(&["e"]);
    tmux.wait_for(&["UNDER AGE"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&[" Menu "]);

    // Card F is a bartender's: the lemonade is paid with a voucher, the cup with money.
    tmux.keys(&[&lemonade, "Enter"]);
    tmux.wait_for(&["PRESENT CARD"]);
    tmux.keys(&["f"]);
    tmux.wait_for(&["APPROVED", "paid with 1 voucher"]);
    tmux.keys(&["Enter"]);

    tmux.keys(&["Escape"]);
    tmux.wait_for(&["Who are you?"]);
    tmux.keys(&["Escape"]);
    let screen = assert_left_cleanly(&tmux, &dir);
    assert!(
        screen.contains("Ledger audit: the books balance"),
        "{screen}"
    );
    let db = dir.join("ledger.db");
    let returns = sqlite_query(&db, "SELECT card_uid, amount_cents FROM deposit_returns");
    assert_eq!(
        returns,
        vec![vec!["04A1B2C3D4E5F6".to_owned(), "200".to_owned()]]
    );
    let declines = sqlite_query(
        &db,
        "SELECT error_code FROM app_transaction_log WHERE outcome = 'declined'",
    );
    assert_eq!(
        declines,
        Vec::<Vec<String>>::new(),
        "the minor was refused at the terminal"
    );
    let vouchers = sqlite_query(
        &db,
        "SELECT o.voucher_units, o.money_cents FROM bar_orders o
          WHERE o.voucher_units > 0",
    );
    assert_eq!(vouchers, vec![vec!["1".to_owned(), "200".to_owned()]]);
}

#[test]
fn sigterm_restores_the_terminal_and_stops_everything() {
    let tmux = Tmux::start("term");
    let (_base, dir) = demo_dir("demo");
    start_demo(&tmux, &dir);
    let pids = processes_with(&dir.display().to_string());
    assert_eq!(pids.len(), 1, "{pids:?}");
    let kill = Command::new("kill")
        .args(["-TERM", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_left_cleanly(&tmux, &dir);
}
