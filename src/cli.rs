//! The command line: parses arguments, loads configuration, runs a subcommand, and turns
//! errors into a message with its chain of causes and an exit code.
//!
//! Exit codes: 0 success; 1 failure (including an audit that finds discrepancies);
//! 2 bad usage (from clap).

use crate::bench;
use crate::domain::{AgeFlag, CardUid, ProductId};
use crate::ledger::admin;
use crate::ledger::config::{DatabaseUrl, LedgerConfig, Overrides};
use crate::ledger::report;
use crate::ledger::server;
use crate::ledger::store::postgres::import_sqlite;
use crate::ledger::store::{AdminStore, FeedStore, ProductChange, ReportStore, StripeStore};
use crate::protocol::api::UNIT_PRICE_CENTS_MAX;
use crate::protocol::api::{StaffRole, TerminalKind, VOUCHER_GRANT_UNITS_MAX};
use crate::reader::ReaderOptions;
use crate::reader::pcsc::PcscReader;
use crate::terminal::config::{ReaderBackend, TerminalConfig, TerminalOverrides};
use crate::terminal::daemon::{self, Daemon, ReaderLink, run_jsonl};
use crate::terminal::journal::{Counts, Journal};
use crate::terminal::{card_keys, card_station};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Reader events waiting for the daemon, at most (the reader thread waits beyond that).
const READER_EVENTS_MAX: usize = 64;

/// cashless: offline-first payments for cashless festivals.
#[derive(Debug, Parser)]
#[command(name = "cashless", version, about)]
pub struct Cli {
    /// Log lines as text (for people) or as JSON objects (for a log collector); every line
    /// the ledger writes while serving a request carries its request id.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CASHLESS_LOG_FORMAT"
    )]
    log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The central ledger: HTTP API and admin commands.
    Ledger(LedgerArgs),
    /// The terminal daemon, and its journal's state.
    Terminal(TerminalArgs),
    /// A ledger and a bar terminal in one command, with simulated cards and a network switch.
    Demo(crate::demo::DemoArgs),
    /// NTAG 424 DNA cards: issue them, check them, and add master keys.
    Card(CardArgs),
    /// Load generators and reference measurements.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
struct TerminalArgs {
    /// Configuration file (TOML); see config/terminal.example.toml.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/cashless/terminal.toml"
    )]
    config: PathBuf,
    /// The front end: tui (staff screens on this terminal) or jsonl (commands on stdin,
    /// events on stdout, for scripts and tests).
    #[arg(long, value_enum, default_value = "tui")]
    ui: TerminalUi,
    /// The card reader; overrides [reader] backend.
    #[arg(long, value_enum)]
    reader: Option<ReaderBackend>,
    #[command(subcommand)]
    command: Option<TerminalCommandLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TerminalUi {
    /// The staff screens (ratatui), on this terminal.
    Tui,
    /// JSON lines on stdin and stdout.
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum TerminalCommandLine {
    /// The journal's state: pending, in doubt, rejected, last sync, replica age.
    Status,
    /// Write the operations the ledger has not acknowledged to a file that
    /// `cashless ledger import` applies (for a terminal that never comes back online).
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct CardArgs {
    /// The terminal's configuration file: its [reader], [cards] and ledger are used.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/cashless/terminal.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: CardStationCommand,
}

#[derive(Debug, Subcommand)]
enum CardStationCommand {
    /// Personalise the card on the reader and register it with the ledger.
    ///
    /// The factory-fresh card gets keys diversified from the newest master key; the ledger
    /// records it (a checkpoint's token). Safe to run again on the same card:
    /// a card pulled away halfway is issued from where it stopped. Exit codes: 0 issued and
    /// registered; 1 not issued; 3 issued but not registered (run it again).
    Issue(StationArgs),
    /// What the card on the reader is, and whether it proves its key.
    ///
    /// Also shows what the ledger recorded for it. Exit codes: 0 the card would pay; 1 it would not, or it could not
    /// be read.
    Check(StationArgs),
    /// Add a fresh random master key to a master key file.
    ///
    /// One version above the newest; the file is created readable by this user only. The
    /// key is never printed.
    NewKey {
        /// The master key file ([cards] master_key_file).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct StationArgs {
    /// Substring of the reader's name; default: [reader] name_filter of the configuration.
    #[arg(long, value_name = "NAME")]
    reader_name: Option<String>,
    /// How long to wait for a card.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    wait_secs: u64,
}

#[derive(Debug, Args)]
struct LedgerArgs {
    /// Configuration file (TOML); see config/ledger.example.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database: sqlite:PATH (or a bare path) or postgres://... [env: CASHLESS_DATABASE]
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Serve the HTTP API (migrates the database first).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port) [env: CASHLESS_LISTEN]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Create or upgrade the database schema; with --from and --to, move a festival from
    /// its SQLite ledger to an empty PostgreSQL database instead.
    Migrate {
        /// The SQLite ledger to move (sqlite:PATH), stopped; it is read, never written. With
        /// --to, and instead of --database.
        #[arg(long, value_name = "URL", requires = "to", conflicts_with = "database")]
        from: Option<String>,
        /// The empty PostgreSQL database to move it to (postgres://...), migrated first. With
        /// --from.
        #[arg(long, value_name = "URL", requires = "from")]
        to: Option<String>,
    },
    /// Terminals.
    #[command(subcommand)]
    Terminal(TerminalCommand),
    /// Headquarters operators: the people who log in to the /hq/ pages.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Staff members.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Products.
    #[command(subcommand)]
    Product(ProductCommand),
    /// The catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Cards.
    #[command(subcommand)]
    Card(CardCommand),
    /// Vouchers (staff and artist drinks).
    #[command(subcommand)]
    Voucher(VoucherCommand),
    /// Shift close-outs sent by terminals (POST /v1/shifts).
    #[command(subcommand)]
    Shift(ShiftCommand),
    /// Online top-ups through Stripe.
    #[command(subcommand)]
    Stripe(StripeCommand),
    /// Prove the books balance: exit 0 with a summary, or exit 1 listing every discrepancy.
    Audit,
    /// The books of a range: sales of standing orders by point of sale, terminal, product,
    /// staff member and hour, each split by VAT rate (net, tax, gross), by the time the
    /// terminal made them; deposits out, returned and outstanding; vouchers granted and used;
    /// top-ups by checkpoint, staff member and method, with Stripe's; the cashier close-outs;
    /// the terminals' sync state; cards in debt or blocked; flagged sales.
    Report {
        /// From this time (RFC 3339, e.g. 2026-07-01T18:00:00+02:00) or the start of this
        /// festival day (2026-07-01, at [festival] day_starts_at), inclusive.
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// To this time or the start of this festival day, exclusive.
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// table (aligned, amounts in the currency), csv or json (amounts in cents).
        #[arg(long, value_enum, default_value = "table")]
        format: crate::ledger::report::ReportFormat,
        /// Only this section (csv: its own columns; without it, csv holds the sales
        /// sections): sales_by_point_of_sale, sales_by_terminal, sales_by_product,
        /// sales_by_staff, sales_by_hour, deposits, vouchers, top_ups, cashier,
        /// terminal_sync, cards, flagged_sales.
        #[arg(long, value_name = "NAME")]
        section: Option<String>,
    },
    /// Deposits on returnable items (cups): per item, what went out with orders, came back
    /// and is still out, and the deposits owed back.
    Deposits,
    /// Delete expired decline keys, then archive scan-log and audit-log rows older than
    /// [housekeeping] archive_after_days to a compressed JSON-lines file (fsynced before the
    /// rows are removed). Safe while the ledger serves; systemd's cashless-housekeeping.timer
    /// runs it daily.
    Housekeeping {
        /// Where archive files go (overrides [housekeeping] archive_dir).
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
        /// Archive rows older than this many days, 0-3650 (overrides [housekeeping]
        /// archive_after_days; default 30).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=3650))]
        archive_after_days: Option<u32>,
    },
    /// Apply a terminal's journal export (cashless terminal export), idempotently: exit 0 if
    /// every operation is applied, declined or was already there; exit 1 listing each refused one.
    Import {
        /// The export file.
        file: PathBuf,
    },
}

/// An operator's role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    /// Sees every page.
    Viewer,
    /// Also blocks, unblocks and replaces cards (the info desk).
    Desk,
    /// Also manages operators.
    Admin,
}

impl From<RoleArg> for crate::ledger::caller::OperatorRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => Self::Viewer,
            RoleArg::Desk => Self::Desk,
            RoleArg::Admin => Self::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Create an operator. The password (10 to 128 characters) is asked on the terminal
    /// without echo, or read as the first line of stdin when stdin is not a terminal.
    Add {
        /// Unique name: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
        #[arg(long)]
        name: String,
        /// viewer, desk or admin.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Every operator: role, active, wrong passwords in a row, locked until.
    List,
    /// Disable an operator: their sessions end at once and they cannot log in.
    Disable {
        /// Their name.
        #[arg(long)]
        name: String,
    },
    /// Enable a disabled operator again.
    Enable {
        /// Their name.
        #[arg(long)]
        name: String,
    },
    /// Set a new password (read as for `add`); lifts a lock and ends their sessions.
    Password {
        /// Their name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TerminalCommand {
    /// Register a terminal; prints its bearer token alone on the last line.
    Add {
        /// Unique name, e.g. bar-1.
        #[arg(long)]
        name: String,
        /// bar or checkpoint.
        #[arg(long, value_enum)]
        kind: TerminalKind,
        /// Point of sale; selects the catalog, e.g. "Main Bar".
        #[arg(long)]
        point_of_sale: String,
    },
    /// Every terminal: kind, point of sale, active or revoked, last seen, highest contiguous
    /// and highest seen terminal_seq, and the sequence numbers missing between them.
    List,
    /// Shut a terminal out for good (a stolen or lost device): every ledger process refuses
    /// its token in every request after this returns. What it journaled can still be brought
    /// in with `ledger import` of its `terminal export`.
    Revoke {
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Give a terminal a new bearer token, printed alone on the last line; the old one is
    /// refused in every request after this returns. Put the new one in the terminal's
    /// [ledger] token.
    RotateToken {
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum StaffCommand {
    /// Register a staff member.
    Add {
        /// Staff id, e.g. s-17.
        #[arg(long)]
        id: String,
        /// Name.
        #[arg(long)]
        name: String,
        /// bar, cashier or supervisor.
        #[arg(long, value_enum)]
        role: StaffRole,
        /// PIN, 4 to 12 digits (stored as an argon2 hash).
        #[arg(long)]
        pin: String,
    },
    /// Every staff member: id, role, active, name.
    List,
    /// Stop a staff member logging in (a leaver): terminals refuse the login once they have
    /// synced; offline sales made before still land as they were made.
    Disable {
        /// Staff id.
        #[arg(long)]
        id: String,
    },
    /// Let a disabled staff member log in again.
    Enable {
        /// Staff id.
        #[arg(long)]
        id: String,
    },
    /// Give a staff member a new PIN (4 to 12 digits; stored as an argon2 hash).
    SetPin {
        /// Staff id.
        #[arg(long)]
        id: String,
        /// The new PIN.
        #[arg(long)]
        pin: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProductCommand {
    /// Create a product, or update it if it exists at that point of sale.
    Add {
        /// Product id, e.g. beer-05.
        #[arg(long)]
        id: String,
        /// Name on the screen.
        #[arg(long)]
        name: String,
        /// Price in cents, VAT included (or --open-price-max-cents).
        #[arg(long, required_unless_present = "open_price_max_cents")]
        price_cents: Option<i64>,
        /// An open price: staff type the unit price, 1 cent to this (instead of
        /// --price-cents).
        #[arg(long, conflicts_with = "price_cents")]
        open_price_max_cents: Option<i64>,
        /// The age it is sold from: 16 or 18 (default: no restriction).
        #[arg(long)]
        min_age: Option<i64>,
        /// Voucher units one unit costs when vouchers pay it, 1 to 100 (default: money
        /// only).
        #[arg(long)]
        voucher_price: Option<i64>,
        /// A returnable item (a cup): --price-cents is its deposit, owed back when it
        /// returns.
        #[arg(long)]
        returnable: bool,
        /// The returnable item it comes in (its id at the same point of sale): the terminal
        /// adds its deposit with every unit sold.
        #[arg(long)]
        deposit: Option<String>,
        /// Point of sale.
        #[arg(long)]
        point_of_sale: String,
        /// Category.
        #[arg(long)]
        category: Option<String>,
        /// VAT rate: a name of the configuration's [taxes] rates_basis_points (default: its
        /// default_rate).
        #[arg(long)]
        tax_rate: Option<String>,
    },
    /// Every product at every point of sale: price, on sale or not.
    List,
    /// A new price, VAT included (happy hour): online sales at the old price are refused
    /// (PRICE_MISMATCH) once a terminal has the new catalog; offline sales made before land
    /// as sold. Not for an open-price product.
    SetPrice {
        /// Product id.
        #[arg(long)]
        id: String,
        /// Its point of sale.
        #[arg(long)]
        point_of_sale: String,
        /// The new price in cents, VAT included.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=UNIT_PRICE_CENTS_MAX))]
        price_cents: i64,
    },
    /// Take a product off sale at a point of sale (off the catalog; refused online).
    Disable {
        /// Product id.
        #[arg(long)]
        id: String,
        /// Its point of sale.
        #[arg(long)]
        point_of_sale: String,
    },
    /// Put a product back on sale.
    Enable {
        /// Product id.
        #[arg(long)]
        id: String,
        /// Its point of sale.
        #[arg(long)]
        point_of_sale: String,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Create or update many products from a TOML file (see config/catalog.example.toml).
    Import {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CardCommand {
    /// Block a lost or stolen card.
    Block {
        /// Card UID (uppercase hex).
        #[arg(long)]
        uid: String,
    },
    /// Lift a lost-card block (a debt block stays until the card is topped up). A replaced
    /// card stays blocked.
    Unblock {
        /// Card UID (uppercase hex).
        #[arg(long)]
        uid: String,
    },
    /// Replace a lost or broken card: its balance (with postings), voucher units and daily
    /// allowance move to the new card (created if unknown), and it stays blocked for good.
    /// Offline sales made on it before terminals learned of the block still land on it; the
    /// ledger moves what they leave to the new card within a minute (serve), or at once when
    /// this is run again for the same cards.
    Replace {
        /// The lost or broken card's UID.
        #[arg(long)]
        old: String,
        /// The new card's UID.
        #[arg(long)]
        new: String,
        /// The new card already holds money or vouchers and is the same attendee's: add the
        /// old card's to it (without it, such a card is refused: a mistyped UID could be
        /// another attendee's card).
        #[arg(long)]
        merge: bool,
    },
    /// Record what the holder's ID says: younger than 16 or 18 (terminals then refuse the
    /// products sold from that age), or clear it with --none.
    Flag {
        /// Card UID (uppercase hex).
        #[arg(long)]
        uid: String,
        /// The age the holder has not reached: 16 or 18.
        #[arg(long, value_parser = ["16", "18"], required_unless_present = "none")]
        under: Option<String>,
        /// Clear the card's age flag.
        #[arg(long, conflicts_with = "under")]
        none: bool,
    },
}

#[derive(Debug, Subcommand)]
enum VoucherCommand {
    /// Give a card voucher units (created with nothing on it if the ledger has not seen it);
    /// products with a voucher price are paid with them first. Vouchers are never money.
    Grant {
        /// Card UID (uppercase hex).
        #[arg(long)]
        uid: String,
        /// Voucher units to add, 1 to 1000.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=VOUCHER_GRANT_UNITS_MAX))]
        units: i64,
    },
    /// Give a card a daily allowance (staff drinks per day): it holds exactly this many
    /// units from now and from the start of every festival day ([festival] day_starts_at);
    /// what is left at the day's end is not saved up. 0 ends the allowance.
    Daily {
        /// Card UID (uppercase hex).
        #[arg(long)]
        uid: String,
        /// Voucher units per day, 0 to 1000 (0: no allowance any more).
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=VOUCHER_GRANT_UNITS_MAX))]
        units: i64,
    },
    /// Renew the daily allowances for a festival day now (`serve` does it by itself when a
    /// day starts): every card with an allowance not yet given for that day gets it.
    StartDay {
        /// The festival day, YYYY-MM-DD (default: today's, by [festival] day_starts_at of
        /// the configuration given: the same as serve's).
        #[arg(long)]
        day: Option<chrono::NaiveDate>,
        /// Allow a day after today's: allowances given for it are not renewed again until it
        /// comes (for rehearsals and tests).
        #[arg(long)]
        allow_future: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StripeCommand {
    /// Stripe events, newest first: what each did (credited, refunded, refused, ...).
    Events {
        /// Only those an operator must act on: paid sessions that could not be credited
        /// (refused: wrong currency, bad card UID), refunds in another currency (refused, not
        /// applied) and refunds whose payment was never credited.
        #[arg(long)]
        attention: bool,
        /// How many, at most.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ShiftCommand {
    /// Every close-out, oldest close first: the terminal's count and totals, the cash
    /// counted and its difference, and the ledger's own top-ups of that terminal in the
    /// shift.
    ///
    /// The ledger's top-ups are those with the terminal's sequence numbers of the shift
    /// (first_seq to last_seq), not those of its times, so a terminal clock step does not
    /// create a false difference; the ledger's figures stay lower while offline top-ups of
    /// that range are still being replayed. A close-out without them (an empty shift) is
    /// compared by time, opened_at to closed_at.
    List {
        /// Only this terminal's close-outs, e.g. cp-1.
        #[arg(long, value_name = "NAME")]
        terminal: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Online orders from many concurrent clients against a running ledger.
    Ledger(bench::LedgerBenchArgs),
    /// The raw SQLite commit rate with the ledger's pragmas (the disk's reference).
    SqliteCommit(bench::SqliteCommitBenchArgs),
    /// Tap-to-decision latency of the terminal daemon, through its JSON-lines interface.
    TerminalTap(bench::TerminalTapBenchArgs),
    /// Fills a migrated SQLite ledger with a festival of a given size (the HQ benchmark).
    HqSeed(bench::HqSeedArgs),
    /// Headquarters' pages: time to first byte per page, or hammered (--hammer).
    Hq(bench::HqBenchArgs),
}

fn age(at: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> String {
    match at {
        None => "never".to_owned(),
        Some(t) => format!(
            "{} ({} s ago)",
            crate::protocol::api::format_time(t),
            (now - t).num_seconds().max(0)
        ),
    }
}

/// `cashless terminal status`, for people and scripts (one `key: value` per line).
fn format_status(
    config: &TerminalConfig,
    c: &Counts,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    format!(
        "terminal: {}\nkind: {}\njournal: {}\npending: {}\nin_doubt: {}\nrejected: {}\nsynced: {}\ndeclined_offline: {}\ncloseouts_pending: {}\nlast_seq: {}\nlast_sync: {}\nreplica: {}\n",
        config.name,
        config.kind.as_str(),
        config.journal.display(),
        c.pending,
        c.in_doubt,
        c.rejected,
        c.synced,
        c.declined_offline,
        c.closeouts_pending,
        c.last_seq.map_or(0, |s| s.get()),
        age(c.last_sync_at, now),
        age(c.last_feed_at, now),
    )
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `cashless card ...`.
fn run_card(args: CardArgs) -> anyhow::Result<ExitCode> {
    let station_run = |station: StationArgs, issue: bool| -> anyhow::Result<ExitCode> {
        let config = TerminalConfig::load(
            &args.config,
            &TerminalOverrides::from_env(Some(ReaderBackend::Pcsc)),
        )?;
        let station = card_station::Station {
            reader_filter: station
                .reader_name
                .unwrap_or_else(|| config.reader_name_filter.clone()),
            wait_ms: station.wait_secs.saturating_mul(1000),
        };
        let rt = runtime()?;
        if issue {
            card_station::issue(&config, &station, &rt)
        } else {
            card_station::check(&config, &station, &rt)
        }
    };
    match args.command {
        CardStationCommand::NewKey { file } => {
            let version = card_keys::add_new_key(&file)?;
            println!(
                "master key version {version} added to {}: new cards are issued with it; copy \
                 the file to every terminal (mode 0600, owned by the terminal's user)",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CardStationCommand::Issue(station) => station_run(station, true),
        CardStationCommand::Check(station) => station_run(station, false),
    }
}

/// `cashless terminal`: the daemon with its front end, until quit or a signal.
fn run_terminal(
    config_path: &Path,
    ui: TerminalUi,
    reader: Option<ReaderBackend>,
    log_format: crate::logging::LogFormat,
) -> anyhow::Result<ExitCode> {
    let config = TerminalConfig::load(config_path, &TerminalOverrides::from_env(reader))?;
    // The TUI draws on the terminal: when stderr is that terminal too, logs go next to the
    // journal instead (under systemd, stderr is the journal and stays so).
    let stderr_is_screen = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log_file =
        (ui == TerminalUi::Tui && stderr_is_screen).then(|| config.journal.with_extension("log"));
    crate::logging::init_tracing(log_file.as_deref(), log_format)?;
    let options = ReaderOptions {
        name_filter: config.reader_name_filter.clone(),
        debounce_ms: config.reader_debounce_ms,
        feedback: config.reader_feedback,
        keys: config.cards.keys.clone(),
        accept_uid_cards: config.cards.accept_uid_cards,
    };
    let backend = config.reader_backend;
    let daemon = Daemon::open(config)?;
    let rt = runtime()?;
    let (pcsc, link) = start_reader(backend, options)?;
    let result = match ui {
        TerminalUi::Jsonl => rt.block_on(async {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            run_jsonl(
                daemon,
                input,
                tokio::io::stdout(),
                server::shutdown_signal(),
                link,
            )
            .await
        }),
        TerminalUi::Tui => {
            let screen = crate::tui::run::enter()?;
            let result = rt.block_on(async {
                let keys = crate::tui::run::spawn_terminal_reader()
                    .context("cannot start reading the keyboard")?;
                let model = crate::tui::model::Model::from_info(&daemon.info());
                let mut tui = crate::tui::run::Tui::new(
                    screen,
                    keys,
                    model,
                    Box::new(crate::tui::run::local_clock),
                );
                let leave = daemon::run(daemon, &mut tui, server::shutdown_signal(), link).await;
                tracing::info!(frames = tui.draws(), "the screen closed");
                leave
            });
            crate::tui::run::restore();
            result.map(|_| ())
        }
    };
    // The link (and its handle on the reader) went with the loop: this is the last one,
    // and stopping it cancels the PC/SC wait and joins the threads.
    if let Some(reader) = pcsc.and_then(Arc::into_inner) {
        reader.stop();
    }
    // Reading stdin blocks a thread that no signal wakes: do not wait for it.
    rt.shutdown_background();
    result.with_context(|| format!("terminal {}", config_path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the PC/SC reader threads for `backend` (none for `simulated`); returns the
/// reader (to stop at exit) and the loop's link to it.
fn start_reader(
    backend: ReaderBackend,
    options: ReaderOptions,
) -> anyhow::Result<(Option<Arc<PcscReader>>, Option<ReaderLink>)> {
    match backend {
        ReaderBackend::Simulated => Ok((None, None)),
        ReaderBackend::Pcsc => {
            let (tx, rx) = tokio::sync::mpsc::channel(READER_EVENTS_MAX);
            let reader = Arc::new(
                PcscReader::start(options, tx).context("cannot start the PC/SC reader threads")?,
            );
            let feedback = Arc::clone(&reader);
            let link = ReaderLink {
                events: rx,
                feedback: Box::new(move |name: &str, f| feedback.feedback(name, f)),
            };
            Ok((Some(reader), Some(link)))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The terminal daemon and the demo choose where logs go (a TUI draws on stderr's tty).
    let logs_chosen_later = matches!(
        &cli.command,
        Command::Terminal(TerminalArgs { command: None, .. }) | Command::Demo(_)
    );
    if !logs_chosen_later {
        crate::logging::init_tracing(None, cli.log_format)?;
    }
    match cli.command {
        Command::Ledger(args) => runtime()?.block_on(run_ledger(args)),
        Command::Demo(args) => crate::demo::run(&args),
        Command::Card(args) => run_card(args),
        Command::Terminal(args) => match args.command {
            None => run_terminal(&args.config, args.ui, args.reader, cli.log_format),
            Some(TerminalCommandLine::Export { out }) => {
                let config =
                    TerminalConfig::load(&args.config, &TerminalOverrides::from_env(None))?;
                let (operations, closeouts) =
                    crate::terminal::export::export(&config.journal, &config.name, &out)?;
                println!(
                    "{operations} operations and {closeouts} close-outs exported to {}",
                    out.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Some(TerminalCommandLine::Status) => {
                let config =
                    TerminalConfig::load(&args.config, &TerminalOverrides::from_env(None))?;
                let journal = Journal::open_read_only(&config.journal).with_context(|| {
                    format!("cannot read the journal {}", config.journal.display())
                })?;
                let counts = journal.counts()?;
                print!("{}", format_status(&config, &counts, chrono::Utc::now()));
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Bench(BenchCommand::Ledger(args)) => {
            runtime()?.block_on(bench::run_ledger(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::SqliteCommit(args)) => {
            bench::run_sqlite_commit(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::TerminalTap(args)) => {
            bench::run_terminal_tap(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::HqSeed(args)) => {
            bench::run_hq_seed(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Hq(args)) => {
            runtime()?.block_on(bench::run_hq(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cashless ledger migrate --from sqlite:PATH --to postgres://...`: the move, what it
/// moved, then the books' audit on each side (exit 1 if one finds discrepancies).
async fn move_to_postgres(config: &LedgerConfig, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let from = DatabaseUrl::parse(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let DatabaseUrl::Sqlite(path) = &from else {
        anyhow::bail!("--from must name the SQLite ledger to move (sqlite:PATH), got {from}");
    };
    let to = DatabaseUrl::parse(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let DatabaseUrl::Postgres(url) = &to else {
        anyhow::bail!("--to must name a PostgreSQL database (postgres://...), got {to}");
    };
    println!("moving {from} to {to}");
    let report = import_sqlite::move_festival(path, url, config.postgres).await?;
    print!("{}", report.summary());
    println!("moved: committed");
    let clean = audit_side("sqlite", &admin::open_database(config, &from).await?).await?;
    let clean = clean & audit_side("postgres", &admin::open_database(config, &to).await?).await?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the books' audit of `store` and prints it under `label`; whether it found nothing.
async fn audit_side(label: &str, store: &crate::ledger::store::Store) -> anyhow::Result<bool> {
    let report = store
        .audit()
        .await
        .with_context(|| format!("audit ({label})"))?;
    for line in admin::format_audit(&report).lines() {
        println!("{line} ({label})");
    }
    Ok(report.discrepancies.is_empty())
}

async fn run_ledger(args: LedgerArgs) -> anyhow::Result<ExitCode> {
    let listen = match &args.command {
        LedgerCommand::Serve { listen } => listen.clone(),
        _ => None,
    };
    let overrides = Overrides::from_env_and_flags(args.database.clone(), listen);
    let config = LedgerConfig::load(args.config.as_deref(), &overrides)?;
    if let LedgerCommand::Migrate {
        from: Some(from),
        to: Some(to),
    } = &args.command
    {
        // A move names both of its databases: the configured one is not opened.
        return move_to_postgres(&config, from, to).await;
    }
    // A report's range is checked before anything is opened: a usage error changes nothing.
    let report_range = match &args.command {
        LedgerCommand::Report {
            from, to, section, ..
        } => {
            let only = section.as_deref().map(report::check_section).transpose();
            match (
                report::range(from.as_deref(), to.as_deref(), &config.festival_day),
                only,
            ) {
                (Ok(range), Ok(only)) => Some((range, only)),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        _ => None,
    };
    // Opening the store applies the migrations it lacks (`migrate` does nothing more).
    let store = admin::open_store(&config).await?;
    match args.command {
        LedgerCommand::Serve { .. } => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            server::serve(
                &config,
                store,
                listener,
                server::Announce::Stdout,
                server::shutdown_signal(),
            )
            .await?;
        }
        LedgerCommand::Migrate { .. } => {
            println!("database {} is at the current schema", config.database);
        }
        LedgerCommand::Terminal(TerminalCommand::Add {
            name,
            kind,
            point_of_sale,
        }) => {
            let (id, token) = admin::terminal_add(&store, &name, kind, &point_of_sale).await?;
            println!("terminal_id: {id}");
            println!("{token}");
        }
        LedgerCommand::Terminal(TerminalCommand::List) => {
            let fleet = store.fleet(admin::TERMINAL_LIST_MAX).await?;
            print!(
                "{}",
                admin::format_terminals(&fleet.terminals, chrono::Utc::now(), config.fleet)
            );
        }
        LedgerCommand::Terminal(TerminalCommand::Revoke { name }) => {
            admin::terminal_revoke(&store, &name).await?;
            println!("terminal {name} revoked: its token is refused");
        }
        LedgerCommand::Terminal(TerminalCommand::RotateToken { name }) => {
            let token = admin::terminal_rotate_token(&store, &name).await?;
            println!("terminal {name}: new token (the old one is refused)");
            println!("{token}");
        }
        LedgerCommand::Operator(command) => operator_command(&store, command).await?,
        LedgerCommand::Staff(StaffCommand::Add {
            id,
            name,
            role,
            pin,
        }) => {
            admin::staff_add(&store, &id, &name, role, &pin).await?;
            println!("staff member {id} added");
        }
        LedgerCommand::Product(ProductCommand::List) => {
            print!(
                "{}",
                admin::format_products(&store.product_list(admin::PRODUCT_LIST_MAX).await?)
            );
        }
        LedgerCommand::Product(ProductCommand::SetPrice {
            id,
            point_of_sale,
            price_cents,
        }) => {
            let product = ProductId::parse(&id).context("--id")?;
            let price = crate::domain::Cents::new(price_cents);
            store
                .change_product(point_of_sale.clone(), product, ProductChange::Price(price))
                .await?;
            println!(
                "product {id} at {point_of_sale}: {price} {}",
                config.currency
            );
        }
        LedgerCommand::Product(ProductCommand::Disable { id, point_of_sale }) => {
            let product = ProductId::parse(&id).context("--id")?;
            store
                .change_product(point_of_sale.clone(), product, ProductChange::Active(false))
                .await?;
            println!("product {id} at {point_of_sale}: off sale");
        }
        LedgerCommand::Product(ProductCommand::Enable { id, point_of_sale }) => {
            let product = ProductId::parse(&id).context("--id")?;
            store
                .change_product(point_of_sale.clone(), product, ProductChange::Active(true))
                .await?;
            println!("product {id} at {point_of_sale}: on sale");
        }
        LedgerCommand::Staff(StaffCommand::List) => {
            print!("{}", admin::format_staff(&store.staff().await?));
        }
        LedgerCommand::Staff(StaffCommand::Disable { id }) => {
            admin::staff_change(&store, &id, admin::StaffCommandChange::Active(false)).await?;
            println!("staff member {id} disabled");
        }
        LedgerCommand::Staff(StaffCommand::Enable { id }) => {
            admin::staff_change(&store, &id, admin::StaffCommandChange::Active(true)).await?;
            println!("staff member {id} enabled");
        }
        LedgerCommand::Staff(StaffCommand::SetPin { id, pin }) => {
            admin::staff_change(&store, &id, admin::StaffCommandChange::Pin(&pin)).await?;
            println!("staff member {id}: new PIN set");
        }
        LedgerCommand::Product(ProductCommand::Add {
            id,
            name,
            price_cents,
            open_price_max_cents,
            min_age,
            voucher_price,
            returnable,
            deposit,
            point_of_sale,
            category,
            tax_rate,
        }) => {
            let entry = admin::CatalogEntry {
                returnable,
                deposit,
                id,
                name,
                price_cents,
                point_of_sale,
                category,
                tax_rate,
                min_age,
                open_price_max_cents,
                voucher_price,
            };
            let product = admin::check_product(&entry, &config.taxes)?;
            let price = match product.product.open_price_max_cents {
                Some(max) => format!("has an open price of 1 to {} cents", max.get()),
                None => format!("costs {} cents", product.product.price_cents.get()),
            };
            let age = product
                .product
                .min_age
                .map(|a| format!(", sold from age {a}"))
                .unwrap_or_default();
            store.upsert_products(vec![product]).await?;
            println!(
                "product {} at {} {price}{age}",
                entry.id, entry.point_of_sale
            );
        }
        LedgerCommand::Catalog(CatalogCommand::Import { file }) => {
            let products = admin::read_catalog(&file, &config.taxes)?;
            let n = products.len();
            store.upsert_products(products).await?;
            println!("{n} products imported from {}", file.display());
        }
        LedgerCommand::Card(CardCommand::Block { uid }) => {
            let uid = CardUid::parse(&uid).context("--uid")?;
            store.set_card_lost(uid.clone(), true).await?;
            println!("card {uid} blocked");
        }
        LedgerCommand::Card(CardCommand::Replace { old, new, merge }) => {
            let old = CardUid::parse(&old).context("--old")?;
            let new = CardUid::parse(&new).context("--new")?;
            let r = store.replace_card(old.clone(), new.clone(), merge).await?;
            print!(
                "{}",
                admin::format_card_replaced(&old, &new, &r, &config.currency)
            );
        }
        LedgerCommand::Card(CardCommand::Unblock { uid }) => {
            let uid = CardUid::parse(&uid).context("--uid")?;
            store.set_card_lost(uid.clone(), false).await?;
            println!("card {uid} unblocked");
        }
        LedgerCommand::Voucher(VoucherCommand::Grant { uid, units }) => {
            let uid = CardUid::parse(&uid).context("--uid")?;
            let now = store.grant_vouchers(uid.clone(), units).await?;
            println!("card {uid}: {units} voucher units granted, {now} on the card");
        }
        LedgerCommand::Voucher(VoucherCommand::Daily { uid, units }) => {
            let uid = CardUid::parse(&uid).context("--uid")?;
            let today = config.festival_day.day_of(chrono::Utc::now());
            let now = store.set_daily_vouchers(uid.clone(), units, today).await?;
            if units > 0 {
                println!("card {uid}: {units} voucher units a day from {today}, {now} on the card");
            } else {
                println!("card {uid}: no daily allowance any more, {now} on the card");
            }
        }
        LedgerCommand::Voucher(VoucherCommand::StartDay { day, allow_future }) => {
            let today = config.festival_day.day_of(chrono::Utc::now());
            let day = day.unwrap_or(today);
            if day > today && !allow_future {
                anyhow::bail!(
                    "--day {day} is after today's festival day ({today}): the allowances given \
                     for it would not be renewed again until it comes (--allow-future to do it \
                     anyway)"
                );
            }
            let n = store.start_voucher_day(day).await?;
            println!("festival day {day}: {n} daily allowances renewed");
        }
        LedgerCommand::Card(CardCommand::Flag { uid, under, .. }) => {
            let uid = CardUid::parse(&uid).context("--uid")?;
            let flag = under
                .map(|years| {
                    years
                        .parse()
                        .ok()
                        .and_then(AgeFlag::under)
                        .with_context(|| format!("--under: 16 or 18, got {years}"))
                })
                .transpose()?;
            store.set_card_age_flag(uid.clone(), flag).await?;
            match flag {
                Some(flag) => println!("card {uid} flagged {}", flag.as_str()),
                None => println!("card {uid}: age flag cleared"),
            }
        }
        LedgerCommand::Stripe(StripeCommand::Events { attention, limit }) => {
            let events = store.stripe_events(attention, limit).await?;
            print!("{}", admin::format_stripe_events(&events));
        }
        LedgerCommand::Shift(ShiftCommand::List { terminal }) => {
            let reports = store.shift_reports(terminal, admin::SHIFT_LIST_MAX).await?;
            print!("{}", admin::format_shifts(&reports));
        }
        LedgerCommand::Import { file } => {
            let summary = admin::import(&store, &file).await?;
            print!("{}", admin::format_import(&summary));
            if !summary.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        LedgerCommand::Housekeeping {
            archive_dir,
            archive_after_days,
        } => {
            let settings = config
                .housekeeping(archive_dir, archive_after_days)
                .context("housekeeping")?;
            let report = crate::ledger::housekeeping::run(&store, &settings, chrono::Utc::now())
                .await
                .context("housekeeping")?;
            print!("{}", admin::format_housekeeping(&report));
        }
        LedgerCommand::Deposits => {
            let report = store.deposit_report().await?;
            print!("{}", admin::format_deposits(&report));
        }
        LedgerCommand::Report { format, .. } => {
            let (range, only) = report_range.context("the report's range")?;
            let report = report::report(&store, range, only, &config).await?;
            let mut out = std::io::stdout().lock();
            match report::write(&report, format, &mut out) {
                // A reader that stopped early (`| head`) has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                written => written.context("writing the report")?,
            }
        }
        LedgerCommand::Audit => {
            let report = store.audit().await?;
            print!("{}", admin::format_audit(&report));
            if !report.discrepancies.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let _ = ProductId::parse;
    Ok(ExitCode::SUCCESS)
}

/// `cashless ledger operator ...`.
async fn operator_command(
    store: &crate::ledger::store::Store,
    command: OperatorCommand,
) -> anyhow::Result<()> {
    use crate::ledger::caller::Actor;
    use crate::ledger::hq::auth;
    use crate::ledger::store::{NewOperator, OperatorChange, OperatorStore};
    let password = || -> anyhow::Result<String> {
        let password = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            rpassword::prompt_password("password: ")?
        } else {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        };
        auth::hash_password(&password).map_err(|e| anyhow::anyhow!("the password: {e}"))
    };
    match command {
        OperatorCommand::Add { name, role } => {
            auth::check_operator_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let password_hash = password()?;
            store
                .add_operator(
                    Actor::Cli,
                    NewOperator {
                        name: name.clone(),
                        role: role.into(),
                        password_hash,
                    },
                )
                .await?;
            println!("operator {name} added");
        }
        OperatorCommand::List => {
            let operators = store.operators(auth::OPERATORS_MAX).await?;
            print!("{}", admin::format_operators(&operators));
        }
        OperatorCommand::Disable { name } => {
            store
                .change_operator(Actor::Cli, name.clone(), OperatorChange::Active(false))
                .await?;
            println!("operator {name} disabled");
        }
        OperatorCommand::Enable { name } => {
            store
                .change_operator(Actor::Cli, name.clone(), OperatorChange::Active(true))
                .await?;
            println!("operator {name} enabled");
        }
        OperatorCommand::Password { name } => {
            let hash = password()?;
            store
                .change_operator(Actor::Cli, name.clone(), OperatorChange::Password(hash))
                .await?;
            println!("operator {name}: password changed");
        }
    }
    Ok(())
}
