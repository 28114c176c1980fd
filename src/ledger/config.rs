//! The ledger's configuration: a TOML file, overridden by environment variables, overridden
//! by command-line flags. Parsed first into raw values, then checked into [`LedgerConfig`];
//! every error names the file, the key and what was expected.

pub use crate::config_error::ConfigError;
use crate::config_error::value_err;
use crate::domain::{
    Cents, FestivalDay, TAX_RATE_BASIS_POINTS_MAX, TAX_RATES_MAX, TaxRateName, TaxRates,
    TaxRatesError,
};
use crate::ledger::fleet::{FLEET_THRESHOLD_S_MAX, FleetRules};
use crate::ledger::housekeeping::{ARCHIVE_AFTER_DAYS_MAX, HousekeepingSettings};
use crate::ledger::tls::TlsFiles;
use crate::protocol::api::RECHARGE_AMOUNT_CENTS_MAX;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the ledger keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite:PATH`, a bare path, or `postgres://...`.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty database URL".into());
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(text.to_owned()));
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        if path.is_empty() {
            return Err(
                "sqlite: needs a file path, e.g. sqlite:/var/lib/cashless/ledger.db".into(),
            );
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }
}

impl std::fmt::Display for DatabaseUrl {
    /// Never shows a PostgreSQL password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            DatabaseUrl::Postgres(url) => {
                let redacted = match (url.find("://"), url.rfind('@')) {
                    (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
                    _ => url.clone(),
                };
                f.write_str(&redacted)
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    festival: RawFestival,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    idempotency: RawIdempotency,
    #[serde(default)]
    stripe: RawStripe,
    #[serde(default)]
    postgres: RawPostgres,
    #[serde(default)]
    taxes: RawTaxes,
    #[serde(default)]
    housekeeping: RawHousekeeping,
    #[serde(default)]
    hq: RawHq,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHq {
    silent_after_s: Option<i64>,
    unsent_age_max_s: Option<i64>,
    secure_cookies: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHousekeeping {
    archive_dir: Option<PathBuf>,
    // Signed, so that a negative value gets the range message rather than a type error.
    archive_after_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaxes {
    default_rate: Option<String>,
    // Signed, so that a negative rate gets the range message rather than a type error.
    rates_basis_points: Option<BTreeMap<String, i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    database: Option<String>,
    // Signed, so that a negative value gets the range message rather than a type error.
    shutdown_grace_ms: Option<i64>,
    header_read_timeout_ms: Option<i64>,
    body_read_timeout_ms: Option<i64>,
    max_connections: Option<i64>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFestival {
    currency: Option<String>,
    day_starts_at: Option<String>,
    utc_offset: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    recharge_max_cents: Option<i64>,
    balance_max_cents: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdempotency {
    retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    // Signed, so that a negative value gets the range message rather than a type error.
    pool_max_size: Option<i64>,
    pool_wait_timeout_ms: Option<i64>,
    connect_timeout_ms: Option<i64>,
    statement_timeout_ms: Option<i64>,
}

/// `[postgres]`: the PostgreSQL backend's connection pool and timeouts (unused with SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresSettings {
    /// Connections the pool opens at most.
    pub pool_max_size: usize,
    /// How long a caller waits for a free connection before its request fails as
    /// unavailable.
    pub pool_wait_timeout_ms: u64,
    /// How long opening a connection (TCP, TLS, start-up and authentication) may take; a
    /// `connect_timeout` in the URL (seconds) wins.
    pub connect_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` on every connection: a statement running longer is
    /// cancelled. Migrations lift it for their own transactions.
    pub statement_timeout_ms: u64,
}

impl Default for PostgresSettings {
    fn default() -> PostgresSettings {
        PostgresSettings {
            pool_max_size: 16,
            pool_wait_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 10_000,
        }
    }
}

/// The most connections `[postgres] pool_max_size` may allow (PostgreSQL's own default
/// `max_connections` is 100; a larger pool needs a server configured for it).
pub const POSTGRES_POOL_MAX: u64 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStripe {
    webhook_secrets: Option<Vec<String>>,
    tolerance_s: Option<i64>,
}

/// The checked configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The database.
    pub database: DatabaseUrl,
    /// The festival's one currency (ISO 4217, `EUR`).
    pub currency: String,
    /// One top-up, at most.
    pub recharge_max: Cents,
    /// A card's balance after an online top-up, at most.
    pub balance_max: Cents,
    /// Days an idempotency key is kept.
    pub retention_days: i64,
    /// Stripe webhook signing secrets (several during a rotation). Never logged.
    pub stripe_webhook_secrets: Vec<String>,
    /// Oldest accepted Stripe signature timestamp, in seconds.
    pub stripe_tolerance_s: i64,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// How long a connection may take to send a whole request head, counted from its accept
    /// or from its previous response: a client that sends half a header (or nothing after a
    /// response) must not hold a descriptor for ever. It is therefore also the idle timeout
    /// of a kept-alive connection (hyper runs one timer for both).
    pub header_read_timeout_ms: u64,
    /// How long a request body may take to arrive whole, counted from its head: a body sent
    /// a byte at a time cannot hold a connection longer.
    pub body_read_timeout_ms: u64,
    /// Connections served at once; more wait in the kernel's listen backlog, so the process
    /// never runs out of descriptors for its database and its other connections.
    pub max_connections: usize,
    /// The PostgreSQL backend's pool and timeouts.
    pub postgres: PostgresSettings,
    /// The VAT rates (`[taxes]`): every sale is split by its product's rate.
    pub taxes: TaxRates,
    /// When a festival day starts (`[festival] day_starts_at`, `utc_offset`): daily voucher
    /// allowances are renewed then.
    pub festival_day: FestivalDay,
    /// HTTPS (`[server] tls_cert_file`, `tls_key_file`); plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// `[housekeeping]`.
    pub housekeeping: HousekeepingConfig,
    /// `[hq]`: when a terminal needs a person.
    pub fleet: FleetRules,
    /// `[hq] secure_cookies`: the pages' cookies are `Secure`; by default when the ledger
    /// serves HTTPS itself (set it behind a proxy that does).
    pub hq_secure_cookies: bool,
}

/// `[housekeeping]`: where `cashless ledger housekeeping` archives, and from what age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingConfig {
    /// The configuration file (for messages).
    pub source_name: String,
    /// `archive_dir`, relative to the configuration file's directory; none by default.
    pub archive_dir: Option<PathBuf>,
    /// `archive_after_days`: 30 by default.
    pub archive_after_days: u32,
}

impl LedgerConfig {
    /// The settings of a housekeeping run: the command's flags over `[housekeeping]`.
    pub fn housekeeping(
        &self,
        archive_dir: Option<PathBuf>,
        archive_after_days: Option<u32>,
    ) -> Result<HousekeepingSettings, ConfigError> {
        let h = &self.housekeeping;
        let archive_dir = archive_dir
            .or_else(|| h.archive_dir.clone())
            .ok_or_else(|| {
                value_err(
                    &h.source_name,
                    "[housekeeping] archive_dir",
                    "the directory archive files go to (or --archive-dir)",
                )
            })?;
        Ok(HousekeepingSettings {
            archive_dir,
            archive_after_days: archive_after_days.unwrap_or(h.archive_after_days),
        })
    }
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("listen", &self.listen)
            .field("database", &self.database.to_string())
            .field("currency", &self.currency)
            .field("recharge_max", &self.recharge_max)
            .field("balance_max", &self.balance_max)
            .field("retention_days", &self.retention_days)
            .field(
                "stripe_webhook_secrets",
                &format!("<{} secrets>", self.stripe_webhook_secrets.len()),
            )
            .field("stripe_tolerance_s", &self.stripe_tolerance_s)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("body_read_timeout_ms", &self.body_read_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("postgres", &self.postgres)
            .field("taxes", &self.taxes)
            .field("festival_day", &self.festival_day)
            .field("tls", &self.tls)
            .field("housekeeping", &self.housekeeping)
            .field("fleet", &self.fleet)
            .field("hq_secure_cookies", &self.hq_secure_cookies)
            .finish()
    }
}

/// Values from outside the file: environment variables and command-line flags.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--database` or `CASHLESS_DATABASE`.
    pub database: Option<String>,
    /// `--listen` or `CASHLESS_LISTEN`.
    pub listen: Option<String>,
    /// `CASHLESS_STRIPE_WEBHOOK_SECRETS`, comma-separated.
    pub stripe_webhook_secrets: Option<String>,
}

impl Overrides {
    /// Reads the environment variables, then lets the flags win over them.
    pub fn from_env_and_flags(database: Option<String>, listen: Option<String>) -> Overrides {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Overrides {
            database: database.or_else(|| env("CASHLESS_DATABASE")),
            listen: listen.or_else(|| env("CASHLESS_LISTEN")),
            stripe_webhook_secrets: env("CASHLESS_STRIPE_WEBHOOK_SECRETS"),
        }
    }
}

impl LedgerConfig {
    /// Loads the file (if any), applies the overrides and checks every value.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<LedgerConfig, ConfigError> {
        let (raw, file_name) = match file {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: name.clone(),
                    source,
                })?;
                let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    file: name.clone(),
                    message: e.to_string(),
                })?;
                (raw, name)
            }
            None => (RawConfig::default(), "(no configuration file)".to_owned()),
        };
        let f = file_name.as_str();

        let (listen_text, listen_src) = match &overrides.listen {
            Some(l) => (l.clone(), "--listen / CASHLESS_LISTEN"),
            None => (
                raw.server
                    .listen
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:8080".into()),
                f,
            ),
        };
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            value_err(
                listen_src,
                "[server] listen",
                format!("an address like 127.0.0.1:8080, got {listen_text:?}"),
            )
        })?;

        let (db_text, db_src) = match &overrides.database {
            Some(d) => (d.clone(), "--database / CASHLESS_DATABASE"),
            None => (
                raw.server
                    .database
                    .clone()
                    .unwrap_or_else(|| "sqlite:cashless-ledger.db".into()),
                f,
            ),
        };
        let database =
            DatabaseUrl::parse(&db_text).map_err(|e| value_err(db_src, "[server] database", e))?;

        let currency = raw.festival.currency.unwrap_or_else(|| "EUR".into());
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(value_err(
                f,
                "[festival] currency",
                format!("a three-letter ISO 4217 code like EUR, got {currency:?}"),
            ));
        }

        let starts_at = raw.festival.day_starts_at.as_deref().unwrap_or("06:00");
        let starts_at = chrono::NaiveTime::parse_from_str(starts_at, "%H:%M").map_err(|_| {
            value_err(
                f,
                "[festival] day_starts_at",
                format!("a local time of day like \"06:00\" (HH:MM), got {starts_at:?}"),
            )
        })?;
        let utc_offset = raw.festival.utc_offset.as_deref().unwrap_or("+00:00");
        let utc_offset = FestivalDay::parse_utc_offset(utc_offset).ok_or_else(|| {
            value_err(
                f,
                "[festival] utc_offset",
                format!(
                    "an offset from UTC like \"+02:00\" (+HH:MM or -HH:MM), got {utc_offset:?}"
                ),
            )
        })?;
        let festival_day = FestivalDay::new(starts_at, utc_offset);

        let recharge_max = raw.limits.recharge_max_cents.unwrap_or(50_000);
        if !(1..=RECHARGE_AMOUNT_CENTS_MAX).contains(&recharge_max) {
            return Err(value_err(
                f,
                "[limits] recharge_max_cents",
                format!("cents between 1 and {RECHARGE_AMOUNT_CENTS_MAX}, got {recharge_max}"),
            ));
        }
        let balance_max = raw.limits.balance_max_cents.unwrap_or(100_000);
        if !(1..=i64::MAX / 4).contains(&balance_max) {
            return Err(value_err(
                f,
                "[limits] balance_max_cents",
                format!("a positive number of cents, got {balance_max}"),
            ));
        }

        let retention_days = raw.idempotency.retention_days.unwrap_or(30);
        if !(1..=3650).contains(&retention_days) {
            return Err(value_err(
                f,
                "[idempotency] retention_days",
                format!("days between 1 and 3650, got {retention_days}"),
            ));
        }

        let stripe_webhook_secrets = match &overrides.stripe_webhook_secrets {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => raw.stripe.webhook_secrets.unwrap_or_default(),
        };
        if stripe_webhook_secrets.iter().any(|s| s.trim().is_empty()) {
            return Err(value_err(
                f,
                "[stripe] webhook_secrets",
                "non-empty secrets (whsec_...)",
            ));
        }
        let stripe_tolerance_s = raw.stripe.tolerance_s.unwrap_or(300);
        if !(1..=86_400).contains(&stripe_tolerance_s) {
            return Err(value_err(
                f,
                "[stripe] tolerance_s",
                format!("seconds between 1 and 86400, got {stripe_tolerance_s}"),
            ));
        }
        let server = &raw.server;
        let ms = |key: &str, value: Option<i64>, default: i64| {
            whole_in(
                f,
                key,
                value,
                default,
                1..=SERVER_TIMEOUT_MS_MAX,
                "milliseconds",
            )
        };
        let shutdown_grace_ms = ms(
            "[server] shutdown_grace_ms",
            server.shutdown_grace_ms,
            10_000,
        )?;
        let header_read_timeout_ms = ms(
            "[server] header_read_timeout_ms",
            server.header_read_timeout_ms,
            10_000,
        )?;
        let body_read_timeout_ms = ms(
            "[server] body_read_timeout_ms",
            server.body_read_timeout_ms,
            30_000,
        )?;
        let max_connections = whole_in(
            f,
            "[server] max_connections",
            server.max_connections,
            4096,
            1..=MAX_CONNECTIONS_MAX,
            "connections",
        )?;
        let postgres = postgres_settings(f, &raw.postgres)?;
        let taxes = tax_rates(f, &raw.taxes)?;
        let tls = tls_files(f, file, server)?;
        let archive_after_days = whole_in(
            f,
            "[housekeeping] archive_after_days",
            raw.housekeeping.archive_after_days,
            30,
            0..=u64::from(ARCHIVE_AFTER_DAYS_MAX),
            "days",
        )?;
        let housekeeping = HousekeepingConfig {
            source_name: f.to_owned(),
            archive_dir: raw
                .housekeeping
                .archive_dir
                .as_ref()
                .map(|dir| relative_to_file(file, dir)),
            archive_after_days: u32::try_from(archive_after_days).unwrap_or(ARCHIVE_AFTER_DAYS_MAX),
        };

        let defaults = FleetRules::default();
        let threshold = |key: &str, value: Option<i64>, default: i64| {
            whole_in(f, key, value, default, 1..=FLEET_THRESHOLD_S_MAX, "seconds")
                .map(|s| i64::try_from(s).unwrap_or(default))
        };
        let fleet = FleetRules {
            silent_after_s: threshold(
                "[hq] silent_after_s",
                raw.hq.silent_after_s,
                defaults.silent_after_s,
            )?,
            unsent_age_max_s: threshold(
                "[hq] unsent_age_max_s",
                raw.hq.unsent_age_max_s,
                defaults.unsent_age_max_s,
            )?,
        };

        Ok(LedgerConfig {
            listen,
            database,
            currency,
            recharge_max: Cents::new(recharge_max),
            balance_max: Cents::new(balance_max),
            retention_days,
            stripe_webhook_secrets,
            stripe_tolerance_s,
            shutdown_grace_ms,
            header_read_timeout_ms,
            body_read_timeout_ms,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            postgres,
            taxes,
            festival_day,
            hq_secure_cookies: raw.hq.secure_cookies.unwrap_or(tls.is_some()),
            tls,
            housekeeping,
            fleet,
        })
    }
}

/// `path` as given when absolute (or without a configuration file), else from the
/// configuration file's directory.
fn relative_to_file(file: Option<&Path>, path: &Path) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// `[server] tls_cert_file` and `tls_key_file`: both or neither; a relative path is taken
/// from the configuration file's directory. The files are read when `serve` starts.
fn tls_files(
    f: &str,
    file: Option<&Path>,
    server: &RawServer,
) -> Result<Option<TlsFiles>, ConfigError> {
    let resolve = |p: &PathBuf| relative_to_file(file, p);
    match (&server.tls_cert_file, &server.tls_key_file) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            source_name: f.to_owned(),
            cert_file: resolve(cert),
            key_file: resolve(key),
        })),
        (Some(_), None) => Err(value_err(
            f,
            "[server] tls_key_file",
            "the PEM file of the certificate's private key, with tls_cert_file",
        )),
        (None, Some(_)) => Err(value_err(
            f,
            "[server] tls_cert_file",
            "the PEM file of the server's certificate (and its chain), with tls_key_file",
        )),
    }
}

/// Checks `[taxes]`: without it, one rate `none` at 0 %. With rates, `default_rate` names one
/// of them (it may be left out when there is only one).
fn tax_rates(f: &str, raw: &RawTaxes) -> Result<TaxRates, ConfigError> {
    let Some(raw_rates) = &raw.rates_basis_points else {
        if raw.default_rate.is_some() {
            return Err(value_err(
                f,
                "[taxes] rates_basis_points",
                "the rates by name, e.g. { standard = 1900, reduced = 700, none = 0 }, when default_rate is set",
            ));
        }
        return Ok(TaxRates::untaxed());
    };
    let mut rates = BTreeMap::new();
    for (name, &bp) in raw_rates {
        let key = format!("[taxes] rates_basis_points.{name}");
        let parsed = TaxRateName::parse(name).map_err(|e| value_err(f, &key, e.to_string()))?;
        let bp = whole_in(
            f,
            &key,
            Some(bp),
            0,
            0..=u64::from(TAX_RATE_BASIS_POINTS_MAX),
            "basis points (1900 is 19 %)",
        )?;
        rates.insert(parsed, u32::try_from(bp).unwrap_or(u32::MAX));
    }
    if rates.is_empty() || rates.len() > TAX_RATES_MAX {
        let e = TaxRatesError::Count(rates.len());
        return Err(value_err(f, "[taxes] rates_basis_points", e.to_string()));
    }
    let default = match (&raw.default_rate, rates.len()) {
        (Some(name), _) => TaxRateName::parse(name)
            .map_err(|e| value_err(f, "[taxes] default_rate", e.to_string()))?,
        (None, 1) => rates
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| value_err(f, "[taxes] rates_basis_points", "at least one rate"))?,
        (None, _) => {
            return Err(value_err(
                f,
                "[taxes] default_rate",
                "the name of the rate a product without tax_rate gets, one of rates_basis_points",
            ));
        }
    };
    TaxRates::new(rates, default).map_err(|e| {
        let key = match e {
            TaxRatesError::UnknownDefault(_) => "[taxes] default_rate",
            _ => "[taxes] rates_basis_points",
        };
        value_err(f, key, e.to_string())
    })
}

/// Checks `[postgres]`, each key against its range.
fn postgres_settings(f: &str, raw: &RawPostgres) -> Result<PostgresSettings, ConfigError> {
    let d = PostgresSettings::default();
    let ms = |key: &str, value: Option<i64>, default: u64| {
        whole_in(
            f,
            key,
            value,
            i64::try_from(default).unwrap_or(i64::MAX),
            1..=SERVER_TIMEOUT_MS_MAX,
            "milliseconds",
        )
    };
    let pool_max_size = whole_in(
        f,
        "[postgres] pool_max_size",
        raw.pool_max_size,
        i64::try_from(d.pool_max_size).unwrap_or(i64::MAX),
        1..=POSTGRES_POOL_MAX,
        "connections",
    )?;
    Ok(PostgresSettings {
        pool_max_size: usize::try_from(pool_max_size).unwrap_or(usize::MAX),
        pool_wait_timeout_ms: ms(
            "[postgres] pool_wait_timeout_ms",
            raw.pool_wait_timeout_ms,
            d.pool_wait_timeout_ms,
        )?,
        connect_timeout_ms: ms(
            "[postgres] connect_timeout_ms",
            raw.connect_timeout_ms,
            d.connect_timeout_ms,
        )?,
        statement_timeout_ms: ms(
            "[postgres] statement_timeout_ms",
            raw.statement_timeout_ms,
            d.statement_timeout_ms,
        )?,
    })
}

/// The longest a `[server]` timeout may be configured: ten minutes.
pub const SERVER_TIMEOUT_MS_MAX: u64 = 600_000;
/// The most connections `[server] max_connections` may allow: the most descriptors one Linux
/// process can have by default (`fs.nr_open`).
pub const MAX_CONNECTIONS_MAX: u64 = 1 << 20;

/// A whole number of `unit` in `range` (`default` when absent), else an error naming the
/// file, the key and the range.
fn whole_in(
    file: &str,
    key: &str,
    value: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    match u64::try_from(v) {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(value_err(
            file,
            key,
            format!(
                "{unit} between {} and {}, got {v}",
                range.start(),
                range.end()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(text: &str, overrides: Overrides) -> Result<LedgerConfig, String> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        LedgerConfig::load(Some(file.path()), &overrides).map_err(|e| e.to_string())
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledger.example.toml");
        let config = LedgerConfig::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.recharge_max, Cents::new(50_000));
        assert_eq!(config.balance_max, Cents::new(100_000));
        assert_eq!(config.currency, "EUR");
        // The example documents the defaults of the server's limits.
        let defaults = LedgerConfig::load(None, &Overrides::default()).unwrap();
        let limits = |c: &LedgerConfig| {
            (
                c.shutdown_grace_ms,
                c.header_read_timeout_ms,
                c.body_read_timeout_ms,
                c.max_connections,
            )
        };
        assert_eq!(limits(&config), limits(&defaults));
        assert_eq!(config.postgres, defaults.postgres);
        assert_eq!(defaults.postgres, PostgresSettings::default());
        assert_eq!(config.fleet, defaults.fleet);
        assert_eq!(defaults.fleet, FleetRules::default());
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let config = LedgerConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite("cashless-ledger.db".into())
        );
        assert_eq!(config.retention_days, 30);
        assert_eq!(config.shutdown_grace_ms, 10_000);
        assert_eq!(config.header_read_timeout_ms, 10_000);
        assert_eq!(config.body_read_timeout_ms, 30_000);
        assert_eq!(config.max_connections, 4096);
        assert!(!config.hq_secure_cookies, "plain HTTP: no Secure cookies");
        let proxied = load("[hq]\nsecure_cookies = true\n", Overrides::default()).unwrap();
        assert!(proxied.hq_secure_cookies);
    }

    #[test]
    fn taxes_default_to_one_untaxed_rate_and_read_the_example() {
        let none = LedgerConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(none.taxes, TaxRates::untaxed());
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledger.example.toml");
        let taxes = LedgerConfig::load(Some(&example), &Overrides::default())
            .unwrap()
            .taxes;
        let rate = |name: Option<&str>| taxes.resolve(name).map(|r| r.basis_points);
        assert_eq!(rate(None), Some(1900));
        assert_eq!(rate(Some("reduced")), Some(700));
        assert_eq!(rate(Some("none")), Some(0));
        assert_eq!(rate(Some("luxury")), None);
    }

    #[test]
    fn errors_name_the_file_key_and_expectation() {
        let cases = [
            (
                "[hq]\nsilent_after_s = 0\n",
                "[hq] silent_after_s: seconds between 1 and 86400, got 0",
            ),
            (
                "[hq]\nunsent_age_max_s = 86401\n",
                "[hq] unsent_age_max_s: seconds between 1 and 86400, got 86401",
            ),
            ("[hq]\nquiet_after_s = 5\n", "quiet_after_s"),
            (
                "[limits]\nrecharge_max_cents = 0\n",
                "[limits] recharge_max_cents: cents between 1",
            ),
            (
                "[limits]\nrecharge_max_cents = \"x\"\n",
                "recharge_max_cents",
            ),
            (
                "[taxes]\nrates_basis_points = { standard = 10001 }\n",
                "[taxes] rates_basis_points.standard: basis points (1900 is 19 %) between 0 and 10000, got 10001",
            ),
            (
                "[taxes]\nrates_basis_points = { standard = -1 }\n",
                "[taxes] rates_basis_points.standard: basis points",
            ),
            (
                "[taxes]\nrates_basis_points = { Standard = 1900 }\n",
                "[taxes] rates_basis_points.Standard: a tax rate name is 1 to 32 characters",
            ),
            (
                "[taxes]\nrates_basis_points = { standard = 1900, reduced = 700 }\n",
                "[taxes] default_rate: the name of the rate a product without tax_rate gets",
            ),
            (
                "[taxes]\nrates_basis_points = { standard = 1900 }\ndefault_rate = \"reduced\"\n",
                "[taxes] default_rate: default_rate reduced is not one of the rates",
            ),
            (
                "[taxes]\nrates_basis_points = {}\n",
                "[taxes] rates_basis_points: between 1 and 16 rates, got 0",
            ),
            (
                "[taxes]\ndefault_rate = \"standard\"\n",
                "[taxes] rates_basis_points: the rates by name",
            ),
            ("[taxes]\nrate = 19\n", "unknown field `rate`"),
            (
                "[server]\nlisten = \"nowhere\"\n",
                "[server] listen: an address",
            ),
            (
                "[server]\nlisen = \"127.0.0.1:1\"\n",
                "unknown field `lisen`",
            ),
            ("[festival]\ncurrency = \"euro\"\n", "[festival] currency"),
            (
                "[festival]\nday_starts_at = \"25:00\"\n",
                "[festival] day_starts_at: a local time of day like \"06:00\" (HH:MM), got \"25:00\"",
            ),
            (
                "[festival]\nutc_offset = \"CEST\"\n",
                "[festival] utc_offset: an offset from UTC like \"+02:00\" (+HH:MM or -HH:MM), got \"CEST\"",
            ),
            (
                "[idempotency]\nretention_days = -1\n",
                "[idempotency] retention_days",
            ),
            ("[stripe]\ntolerance_s = 0\n", "[stripe] tolerance_s"),
            (
                "[server]\nheader_read_timeout_ms = 0\n",
                "[server] header_read_timeout_ms: milliseconds between 1 and 600000, got 0",
            ),
            (
                "[server]\nbody_read_timeout_ms = -5\n",
                "[server] body_read_timeout_ms: milliseconds between 1 and 600000, got -5",
            ),
            (
                "[server]\nshutdown_grace_ms = 600001\n",
                "[server] shutdown_grace_ms: milliseconds between 1 and 600000, got 600001",
            ),
            (
                "[server]\nmax_connections = 0\n",
                "[server] max_connections: connections between 1 and 1048576, got 0",
            ),
            ("[server]\nmax_connections = 4.5\n", "max_connections = 4.5"),
            (
                "[server]\nheader_read_timeout_ms = \"10s\"\n",
                "header_read_timeout_ms = \"10s\"",
            ),
            (
                "[postgres]\npool_max_size = 0\n",
                "[postgres] pool_max_size: connections between 1 and 1000, got 0",
            ),
            (
                "[postgres]\nconnect_timeout_ms = 600001\n",
                "[postgres] connect_timeout_ms: milliseconds between 1 and 600000, got 600001",
            ),
            (
                "[postgres]\nstatement_timeout_ms = -1\n",
                "[postgres] statement_timeout_ms: milliseconds between 1 and 600000, got -1",
            ),
            ("[postgres]\npool_size = 3\n", "unknown field `pool_size`"),
            ("not toml", "TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = load(text, Overrides::default()).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(
                err.contains(".tmp") || err.contains("tmp"),
                "{err:?} does not name the file"
            );
        }
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            database: Some("sqlite:/tmp/x.db".into()),
            listen: Some("127.0.0.1:0".into()),
            stripe_webhook_secrets: Some("whsec_a, whsec_b".into()),
        };
        let config = load(
            "[server]\nlisten = \"127.0.0.1:9\"\ndatabase = \"/var/y.db\"\n",
            overrides,
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(config.database, DatabaseUrl::Sqlite("/tmp/x.db".into()));
        assert_eq!(config.stripe_webhook_secrets, vec!["whsec_a", "whsec_b"]);
        assert!(
            !format!("{config:?}").contains("whsec_a"),
            "secrets must not be printed"
        );
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:a.db"),
            Ok(DatabaseUrl::Sqlite("a.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("/x/a.db"),
            Ok(DatabaseUrl::Sqlite("/x/a.db".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(DatabaseUrl::parse("sqlite:").is_err());
        let shown = DatabaseUrl::Postgres("postgres://u:secret@h/db".into()).to_string();
        assert!(!shown.contains("secret"), "{shown}");
    }
}
