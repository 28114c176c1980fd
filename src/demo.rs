//! `cashless demo`: the whole system in one command, with nothing to configure.
//!
//! In a new folder: a ledger on a SQLite database (seeded with the example menu, staff whose
//! PINs are on screen, and cards with balances), a switchable TCP link between terminal and
//! ledger (the "network"), and the terminals' configuration files and journals. Then the
//! bar terminal's TUI, with keys that present the demo cards, cut and restore the network,
//! and switch between the bar and the checkpoint. Everything runs in this process: nothing is
//! left running after it exits; the folder stays, for a look at the ledger and journals.

use crate::domain::{AgeFlag, CardUid, TaxRateName, TaxRates};
use crate::ledger::admin;
use crate::ledger::config::{LedgerConfig, Overrides};
use crate::ledger::server;
use crate::ledger::store::{LedgerStore, ReportStore};
use crate::protocol::api::{StaffRole, TerminalKind};
use crate::protocol::commands::Command;
use crate::terminal::config::{TerminalConfig, TerminalOverrides};
use crate::terminal::daemon::{self, Daemon};
use crate::terminal::frontend::{Input, Leave};
use crate::tui::model::{Model, Screen};
use crate::tui::run::{KeyHook, Tui, enter, local_clock, restore, spawn_terminal_reader};
use anyhow::Context;
use crossterm::event::KeyCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `cashless demo`'s options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The folder for the demo's database, journals, configuration and log (created; must
    /// not exist yet). Default: a new folder in the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A demo card: its key, UID, what it starts with and why it is there.
struct DemoCard {
    key: char,
    uid: &'static str,
    topup_cents: i64,
    blocked: bool,
    /// What the checkpoint saw on the holder's ID, set with the top-up.
    age_flag: Option<AgeFlag>,
    /// Voucher units granted (staff drinks).
    vouchers: i64,
    /// For the help overlay.
    short: &'static str,
}

const CARDS: [DemoCard; 6] = [
    DemoCard {
        key: 'a',
        uid: "04A1B2C3D4E5F6",
        topup_cents: 5_000,
        blocked: false,
        age_flag: None,
        vouchers: 0,
        short: "50.00",
    },
    DemoCard {
        key: 'b',
        uid: "04B2C3D4E5F607",
        topup_cents: 800,
        blocked: false,
        age_flag: None,
        vouchers: 0,
        short: "8.00",
    },
    DemoCard {
        key: 'c',
        uid: "04C3D4E5F60718",
        topup_cents: 0,
        blocked: false,
        age_flag: None,
        vouchers: 0,
        short: "new",
    },
    DemoCard {
        key: 'd',
        uid: "04D4E5F6071829",
        topup_cents: 2_000,
        blocked: true,
        age_flag: None,
        vouchers: 0,
        short: "lost",
    },
    // A 15-year-old's: refused beer, wine and shots, sold a lemonade.
    DemoCard {
        key: 'e',
        uid: "04E5F607182A3B",
        topup_cents: 2_000,
        blocked: false,
        age_flag: Some(AgeFlag::Under16),
        vouchers: 0,
        short: "under 16",
    },
    // A bartender's own wristband: three drinks on vouchers, and 4.00 for the cups they
    // come in (vouchers never pay a deposit).
    DemoCard {
        key: 'f',
        uid: "04F60718293A4B",
        topup_cents: 400,
        blocked: false,
        age_flag: None,
        vouchers: 3,
        short: "3 vouchers",
    },
];

/// Staff: id, name, role, PIN.
const STAFF: [(&str, &str, StaffRole, &str); 3] = [
    ("s-sam", "Sam", StaffRole::Bar, "1111"),
    ("s-cleo", "Cleo", StaffRole::Cashier, "2222"),
    ("s-max", "Max", StaffRole::Supervisor, "9999"),
];

const CATALOG: &str = include_str!("../config/catalog.example.toml");

/// The folder name's prefix in the temporary directory.
const DIR_PREFIX: &str = "cashless-demo-";

/// The switchable link between the terminals and the ledger.
struct Network {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Network {
    /// Listens on a free local port and forwards every connection to `ledger` while up.
    async fn start(ledger: SocketAddr) -> anyhow::Result<Network> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, _) = watch::channel(true);
        let switch = up.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut down = switch.subscribe();
                if !*down.borrow_and_update() {
                    // Cut: the connection is closed at once.
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(ledger).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Network { addr, up })
    }

    fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Cuts the link (every open connection too) or restores it.
    fn toggle(&self) -> bool {
        let now_up = !self.is_up();
        self.up.send_replace(now_up);
        now_up
    }
}

/// Creates the demo's folder.
fn make_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            std::env::temp_dir().join(format!("{DIR_PREFIX}{stamp}-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(dir.parent().unwrap_or(Path::new(".")))?;
    std::fs::create_dir(&dir)
        .with_context(|| format!("cannot create the demo folder {}", dir.display()))?;
    Ok(dir)
}

/// Registers what the demo needs in the ledger; returns each terminal's token.
async fn seed(
    store: &impl LedgerStore,
    dir: &Path,
    taxes: &TaxRates,
) -> anyhow::Result<(String, String, String)> {
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, CATALOG)?;
    store
        .upsert_products(admin::read_catalog(&catalog, taxes)?)
        .await?;
    for (id, name, role, pin) in STAFF {
        admin::staff_add(store, id, name, role, pin).await?;
    }
    let (_, bar) = admin::terminal_add(store, "bar-1", TerminalKind::Bar, "Main Bar").await?;
    let (_, cp) = admin::terminal_add(store, "cp-1", TerminalKind::Checkpoint, "Entrance").await?;
    let (_, desk) =
        admin::terminal_add(store, "welcome-desk", TerminalKind::Checkpoint, "Entrance").await?;
    Ok((bar, cp, desk))
}

/// Gives the demo cards their balances, as a checkpoint would: through the ledger's API.
async fn top_up_cards(
    store: &impl LedgerStore,
    ledger: SocketAddr,
    token: &str,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut seq = 0;
    for card in CARDS.iter().filter(|c| c.topup_cents > 0) {
        seq += 1;
        let response = http
            .post(format!("http://{ledger}/v1/recharges"))
            .bearer_auth(token)
            .json(&json!({
                "client_request_id": uuid::Uuid::new_v4(),
                "terminal_seq": seq,
                "card_uid": card.uid,
                "amount_cents": card.topup_cents,
                "payment_method": "cash",
                "staff_id": "s-cleo",
                "created_at": crate::protocol::api::format_time(chrono::Utc::now()),
                "mode": "online",
                "age_flag": card.age_flag,
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "seeding card {}: {} {}",
            card.uid,
            response.status(),
            response.text().await.unwrap_or_default()
        );
        if card.blocked {
            store.set_card_lost(CardUid::parse(card.uid)?, true).await?;
        }
    }
    for card in CARDS.iter().filter(|c| c.vouchers > 0) {
        store
            .grant_vouchers(CardUid::parse(card.uid)?, card.vouchers)
            .await?;
    }
    Ok(())
}

/// Writes a terminal's configuration file, as an operator would.
fn write_terminal_config(
    dir: &Path,
    name: &str,
    kind: TerminalKind,
    url: &str,
    token: &str,
) -> anyhow::Result<PathBuf> {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, token)?;
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "# Written by `cashless demo`.\n\
         [terminal]\nname = \"{name}\"\nkind = \"{kind}\"\njournal = \"{journal}\"\n\n\
         [ledger]\nurl = \"{url}\"\ntoken_file = \"{token_file}\"\ntimeout_ms = 1000\n\n\
         [offline]\nmax_order_cents = 5000\nmax_card_exposure_cents = 10000\nunknown_card_limit_cents = 1000\n\n\
         [sync]\ninterval_ms = 1000\nbatch_max = 500\nbackoff_base_ms = 250\nbackoff_cap_ms = 2000\n\n\
         [reader]\nbackend = \"simulated\"\n",
        kind = kind.as_str(),
        journal = dir.join(format!("{name}.journal.db")).display(),
        token_file = token_file.display(),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The lines under the screen that say what the demo's keys do.
fn banner(kind: TerminalKind, network_up: bool, db: &Path) -> Vec<String> {
    let other = match kind {
        TerminalKind::Bar => "checkpoint",
        TerminalKind::Checkpoint | TerminalKind::Return => "bar",
    };
    let net = if network_up {
        "n: cut the network"
    } else {
        "n: RESTORE the network"
    };
    let pins = STAFF
        .iter()
        .map(|(_, name, _, pin)| format!("{name} {pin}"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        format!(" DEMO │ a-f: present card A-F │ {net} │ m: to the {other} │ Esc: leave"),
        format!(" PINs: {pins} │ ledger: {}", db.display()),
    ]
}

fn help_extra() -> Vec<String> {
    let cards: Vec<String> = CARDS
        .iter()
        .map(|c| format!("{} ({})", c.key.to_ascii_uppercase(), c.short))
        .collect();
    // Three cards a line, so that every line fits the help overlay.
    let mut lines = vec![String::new()];
    for (i, chunk) in cards.chunks(3).enumerate() {
        let key = if i == 0 { "a-f" } else { "" };
        lines.push(format!("{key:<9}card {}", chunk.join(", ")));
    }
    lines.push("n / m    cut or restore the network / bar or checkpoint".into());
    lines.push("Esc      (logged out, at the login screen) leave the demo".into());
    lines
}

/// The demo's own keys: cards, network, mode. Other keys go to the model. While the help is
/// open, no key reaches the hook: the key that closes it does only that (`Tui`).
fn hook(network: Arc<Mutex<Option<Network>>>, db: PathBuf) -> KeyHook {
    Box::new(move |key, model: &mut Model| {
        // Esc at the login screen, nothing typed: the demo ends (a real terminal has no
        // quit key for staff).
        if key.code == KeyCode::Esc
            && matches!(&model.screen, Screen::Login { number, picked: None, .. } if number.is_empty())
        {
            return Some(vec![Input::Leave(Leave::Quit)]);
        }
        let KeyCode::Char(c) = key.code else {
            return None;
        };
        if let Some(card) = CARDS.iter().find(|card| card.key == c) {
            return Some(vec![Input::Command(Command::Tap {
                uid: card.uid.to_owned(),
            })]);
        }
        match c {
            'n' => {
                let guard = network.lock().ok()?;
                let up = guard.as_ref()?.toggle();
                model.banner = banner(model.kind, up, &db);
                model.notice = Some(if up {
                    "network restored: waiting operations are replayed".into()
                } else {
                    "network cut: sales are decided offline".into()
                });
                Some(Vec::new())
            }
            'm' => Some(vec![Input::Leave(Leave::Switch)]),
            _ => None,
        }
    })
}

/// Runs the demo until staff leave it (Esc when logged out) or a signal.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    // Before anything is created: without a terminal there is no demo to show.
    crate::tui::run::check_terminal()?;
    let dir = make_dir(args.dir.as_deref())?;
    let log = dir.join("demo.log");
    crate::logging::init_tracing(Some(&log), crate::logging::LogFormat::Text)?;
    let db = dir.join("ledger.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(demo(&dir, &db));
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    let audit = outcome?;
    println!("The demo's files are in {}:", dir.display());
    println!(
        "  ledger.db              the ledger (cashless ledger audit --database sqlite:{})",
        db.display()
    );
    println!("  bar-1.toml, cp-1.toml  the terminals' configuration; *.journal.db their journals");
    println!("  demo.log               what happened, in the log");
    println!("Ledger audit: {audit}");
    Ok(ExitCode::SUCCESS)
}

/// The demo festival's VAT rates, those of `config/ledger.example.toml`: standard 19 %,
/// reduced 7 % (food), none.
fn demo_taxes() -> anyhow::Result<TaxRates> {
    let name = |n: &str| TaxRateName::parse(n).map_err(anyhow::Error::from);
    let rates = BTreeMap::from([
        (name("standard")?, 1900),
        (name("reduced")?, 700),
        (name("none")?, 0),
    ]);
    Ok(TaxRates::new(rates, name("standard")?)?)
}

async fn demo(dir: &Path, db: &Path) -> anyhow::Result<String> {
    let overrides = Overrides {
        database: Some(format!("sqlite:{}", db.display())),
        listen: Some("127.0.0.1:0".into()),
        stripe_webhook_secrets: None,
    };
    let mut config = LedgerConfig::load(None, &overrides)?;
    config.taxes = demo_taxes()?;
    let store = admin::open_store(&config).await?;
    let (bar_token, cp_token, desk_token) = seed(&store, dir, &config.taxes).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let ledger_addr = listener.local_addr()?;
    let (stop_ledger, stopped) = tokio::sync::oneshot::channel::<()>();
    let ledger = {
        let store = store.clone();
        let config = config.clone();
        tokio::spawn(async move {
            server::serve(&config, store, listener, server::Announce::Quietly, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    top_up_cards(&store, ledger_addr, &desk_token).await?;
    let network = Network::start(ledger_addr).await?;
    let url = format!("http://{}", network.addr);
    let bar = write_terminal_config(dir, "bar-1", TerminalKind::Bar, &url, &bar_token)?;
    let cp = write_terminal_config(dir, "cp-1", TerminalKind::Checkpoint, &url, &cp_token)?;
    let network = Arc::new(Mutex::new(Some(network)));

    let screen = enter()?;
    let result = async {
        let keys = spawn_terminal_reader().context("cannot start reading the keyboard")?;
        let mut tui = Tui::new(
            screen,
            keys,
            Model::new(String::new(), TerminalKind::Bar, vec![], vec![]),
            Box::new(local_clock),
        )
        .with_hook(hook(Arc::clone(&network), db.to_owned()));
        let mut kind = TerminalKind::Bar;
        loop {
            // The demo's two terminals; a bar takes cups back itself (`.`).
            let path = match kind {
                TerminalKind::Bar | TerminalKind::Return => &bar,
                TerminalKind::Checkpoint => &cp,
            };
            let config = TerminalConfig::load(path, &TerminalOverrides::default())?;
            let daemon = Daemon::open(config)?;
            let up = network
                .lock()
                .ok()
                .and_then(|n| n.as_ref().map(Network::is_up))
                .unwrap_or(true);
            let mut model = Model::from_info(&daemon.info());
            model.banner = banner(kind, up, db);
            model.help_extra = help_extra();
            *tui.model_mut() = model;
            match daemon::run(daemon, &mut tui, server::shutdown_signal(), None).await? {
                Leave::Switch => {
                    kind = match kind {
                        TerminalKind::Bar | TerminalKind::Return => TerminalKind::Checkpoint,
                        TerminalKind::Checkpoint => TerminalKind::Bar,
                    }
                }
                Leave::Quit | Leave::EndOfInput | Leave::Signal => break,
            }
        }
        tracing::info!(frames = tui.draws(), "the screen closed");
        anyhow::Ok(())
    }
    .await;
    restore();
    // The network and the ledger go with the demo.
    if let Ok(mut n) = network.lock() {
        n.take();
    }
    let _ = stop_ledger.send(());
    let _ = ledger.await;
    result?;
    let report = store.audit().await?;
    Ok(if report.discrepancies.is_empty() {
        "the books balance".to_owned()
    } else {
        admin::format_audit(&report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::model::Key;

    #[test]
    fn the_demo_cards_are_valid_and_distinct() {
        let mut uids: Vec<_> = CARDS.iter().map(|c| CardUid::parse(c.uid)).collect();
        assert!(uids.iter().all(Result::is_ok));
        uids.dedup_by(|a, b| a.as_ref().ok() == b.as_ref().ok());
        assert_eq!(uids.len(), CARDS.len());
        // The keys do not collide with the demo's other keys or the model's.
        for card in &CARDS {
            assert!(!matches!(card.key, 'n' | 'm'));
            assert!(matches!(
                crate::tui::run::key_of(&crossterm::event::KeyEvent::from(KeyCode::Char(card.key))),
                Some(Key::Char(_))
            ));
        }
    }

    #[test]
    fn the_help_lines_fit_the_help_overlay() {
        // The overlay is 60 columns wide with its border.
        assert!(help_extra().iter().all(|l| l.chars().count() <= 58));
    }

    #[test]
    fn the_banner_fits_a_100_column_screen() {
        for kind in [TerminalKind::Bar, TerminalKind::Checkpoint] {
            for up in [true, false] {
                let lines = banner(
                    kind,
                    up,
                    Path::new("/tmp/cashless-demo-20261125-120000-1234/ledger.db"),
                );
                assert!(lines.iter().all(|l| l.chars().count() <= 100), "{lines:?}");
            }
        }
    }
}
