//! The terminal's configuration: a TOML file (`config/terminal.example.toml`), with
//! `CASHLESS_LEDGER_URL` and `CASHLESS_LEDGER_TOKEN` overriding it. Parsed into raw values,
//! then checked into [`TerminalConfig`]; every error names the file, the key and what was
//! expected.

use super::client::{LedgerTls, ca_certificates_in};
use crate::domain::Cents;
use crate::protocol::api::{BATCH_OPERATIONS_MAX, TerminalKind};
use crate::reader::card_auth::MasterKeys;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which card reader the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReaderBackend {
    /// A PC/SC reader through pcscd.
    Pcsc,
    /// Cards presented by the front end (`tap` command, demo keys).
    Simulated,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    terminal: RawTerminal,
    ledger: RawLedger,
    #[serde(default)]
    offline: RawOffline,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    reader: RawReader,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    cards: RawCards,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCards {
    mode: Option<String>,
    master_key_file: Option<PathBuf>,
    accept_uid_cards: Option<bool>,
    random_id: Option<bool>,
    issue_other_keys: Option<bool>,
}

/// How a card proves what it is (`[cards] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardMode {
    /// The UID alone identifies a card (cheap cards; a clone with the same UID passes).
    Uid,
    /// Every tap proves the card holds its AES key (NTAG 424 DNA), diversified from the
    /// festival's master key.
    Aes,
}

/// `[cards]`: how cards are authenticated and issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardsConfig {
    /// UID or AES.
    pub mode: CardMode,
    /// The festival's master keys (AES mode; loaded and checked at startup).
    pub keys: Option<Arc<MasterKeys>>,
    /// AES mode: a card without AES (a UID-only card) is accepted, unless the ledger
    /// recorded that card as issued with a key.
    pub accept_uid_cards: bool,
    /// `card issue`: turn the card's random ID on.
    pub random_id: bool,
    /// `card issue`: change keys 1 to 4 from the factory's too, not only key 0.
    pub issue_other_keys: bool,
}

impl CardsConfig {
    /// UID mode, as a terminal without `[cards]` runs.
    pub fn uid_only() -> CardsConfig {
        CardsConfig {
            mode: CardMode::Uid,
            keys: None,
            accept_uid_cards: true,
            random_id: false,
            issue_other_keys: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerminal {
    name: String,
    kind: String,
    journal: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    url: Option<String>,
    token_file: Option<PathBuf>,
    token: Option<String>,
    timeout_ms: Option<u64>,
    ca_file: Option<PathBuf>,
    pin_ca: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffline {
    max_order_cents: Option<i64>,
    max_card_exposure_cents: Option<i64>,
    unknown_card_limit_cents: Option<i64>,
    max_return_payout_cents: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    interval_ms: Option<u64>,
    batch_max: Option<usize>,
    backoff_base_ms: Option<u64>,
    backoff_cap_ms: Option<u64>,
    status_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReader {
    backend: Option<String>,
    name_filter: Option<String>,
    debounce_ms: Option<u64>,
    feedback: Option<bool>,
}

/// The checked configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct TerminalConfig {
    /// The terminal's name, as registered with the ledger.
    pub name: String,
    /// Bar or checkpoint; checked against the ledger's registration.
    pub kind: TerminalKind,
    /// The SQLite journal file.
    pub journal: PathBuf,
    /// The ledger's base URL (`http://` or `https://`).
    pub ledger_url: String,
    /// The bearer token. Never logged.
    pub token: String,
    /// Longer than this for an online decision: decide offline.
    pub timeout_ms: u64,
    /// Whom to trust for the ledger's HTTPS certificate (`[ledger] ca_file`, `pin_ca`).
    pub ledger_tls: LedgerTls,
    /// An offline sale above this is declined.
    pub offline_max_order: Cents,
    /// Offline charges per card since its last known balance, at most.
    pub offline_max_card_exposure: Cents,
    /// Offline charges for a card absent from the replica, at most.
    pub offline_unknown_card_limit: Cents,
    /// Deposit money handed out for returns the ledger has not acknowledged, at most.
    pub offline_max_return_payout: Cents,
    /// Pause between sync rounds while everything is acknowledged.
    pub sync_interval_ms: u64,
    /// Operations per replay batch.
    pub sync_batch_max: usize,
    /// First retry delay after a failed sync.
    pub sync_backoff_base_ms: u64,
    /// Longest retry delay.
    pub sync_backoff_cap_ms: u64,
    /// The terminal's state is reported to the ledger at least this often (and at once when
    /// it changes).
    pub sync_status_interval_ms: u64,
    /// The card reader.
    pub reader_backend: ReaderBackend,
    /// Substring of the reader's name; empty: the first contactless reader.
    pub reader_name_filter: String,
    /// The same card presented again within this long of leaving the reader is the same tap.
    pub reader_debounce_ms: u64,
    /// LED and buzzer feedback on ACR122U-compatible readers.
    pub reader_feedback: bool,
    /// Where `GET /metrics` is served (`[metrics] listen`); nowhere without.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How cards are authenticated and issued.
    pub cards: CardsConfig,
}

impl std::fmt::Debug for TerminalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("journal", &self.journal)
            .field("ledger_url", &self.ledger_url)
            .field("token", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("offline_max_order", &self.offline_max_order)
            .field("offline_max_card_exposure", &self.offline_max_card_exposure)
            .field(
                "offline_unknown_card_limit",
                &self.offline_unknown_card_limit,
            )
            .field("offline_max_return_payout", &self.offline_max_return_payout)
            .field("sync_interval_ms", &self.sync_interval_ms)
            .field("sync_batch_max", &self.sync_batch_max)
            .field("sync_status_interval_ms", &self.sync_status_interval_ms)
            .field("reader_backend", &self.reader_backend)
            .field("reader_name_filter", &self.reader_name_filter)
            .field("reader_debounce_ms", &self.reader_debounce_ms)
            .field("reader_feedback", &self.reader_feedback)
            .field("cards", &self.cards)
            .finish()
    }
}

/// Values from outside the file.
#[derive(Debug, Clone, Default)]
pub struct TerminalOverrides {
    /// `CASHLESS_LEDGER_URL`.
    pub ledger_url: Option<String>,
    /// `CASHLESS_LEDGER_TOKEN`.
    pub token: Option<String>,
    /// `--reader`.
    pub reader_backend: Option<ReaderBackend>,
}

impl TerminalOverrides {
    /// Reads the environment variables; `reader` is the command-line flag.
    pub fn from_env(reader_backend: Option<ReaderBackend>) -> TerminalOverrides {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        TerminalOverrides {
            ledger_url: env("CASHLESS_LEDGER_URL"),
            token: env("CASHLESS_LEDGER_TOKEN"),
            reader_backend,
        }
    }
}

/// A configuration error naming the file, the key and the expectation.
pub use crate::config_error::ConfigError as TerminalConfigError;
use crate::config_error::value_err;

fn cents_in(
    file: &str,
    key: &str,
    value: Option<i64>,
    default: i64,
    max: i64,
) -> Result<Cents, TerminalConfigError> {
    let v = value.unwrap_or(default);
    if (0..=max).contains(&v) {
        Ok(Cents::new(v))
    } else {
        Err(value_err(
            file,
            key,
            format!("cents between 0 and {max}, got {v}"),
        ))
    }
}

fn ms_in(
    file: &str,
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, TerminalConfigError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(value_err(
            file,
            key,
            format!("milliseconds between {min} and {max}, got {v}"),
        ))
    }
}

/// The longest bearer token accepted.
const TOKEN_LEN_MAX: usize = 256;
/// The highest offline limit that can be configured (10,000.00).
const OFFLINE_LIMIT_CENTS_MAX: i64 = 1_000_000;

impl TerminalConfig {
    /// Loads and checks the file, applying the overrides.
    pub fn load(
        path: &Path,
        overrides: &TerminalOverrides,
    ) -> Result<TerminalConfig, TerminalConfigError> {
        let file = path.display().to_string();
        let f = file.as_str();
        let text = std::fs::read_to_string(path).map_err(|source| TerminalConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| TerminalConfigError::Parse {
            file: file.clone(),
            message: e.to_string(),
        })?;

        let name = raw.terminal.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(value_err(
                f,
                "[terminal] name",
                "1 to 100 printable characters, as registered with the ledger",
            ));
        }
        let kind = TerminalKind::parse(&raw.terminal.kind).ok_or_else(|| {
            value_err(
                f,
                "[terminal] kind",
                format!("bar, checkpoint or return, got {:?}", raw.terminal.kind),
            )
        })?;
        if raw.terminal.journal.as_os_str().is_empty() {
            return Err(value_err(
                f,
                "[terminal] journal",
                "the path of the journal database",
            ));
        }

        let (url, url_src) = match (&overrides.ledger_url, &raw.ledger.url) {
            (Some(u), _) => (u.clone(), "CASHLESS_LEDGER_URL"),
            (None, Some(u)) => (u.clone(), f),
            (None, None) => {
                return Err(value_err(
                    f,
                    "[ledger] url",
                    "the ledger's URL, e.g. https://ledger.example:8443",
                ));
            }
        };
        let url = url.trim().trim_end_matches('/').to_owned();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(value_err(
                url_src,
                "[ledger] url",
                format!("an http:// or https:// URL, got {url:?}"),
            ));
        }

        let token = match (&overrides.token, &raw.ledger.token, &raw.ledger.token_file) {
            (Some(t), _, _) => t.trim().to_owned(),
            (None, Some(_), Some(_)) => {
                return Err(value_err(
                    f,
                    "[ledger] token",
                    "either token or token_file, not both",
                ));
            }
            (None, Some(t), None) => t.trim().to_owned(),
            (None, None, Some(p)) => std::fs::read_to_string(p)
                .map_err(|e| {
                    value_err(
                        f,
                        "[ledger] token_file",
                        format!("a readable file holding the token: {}: {e}", p.display()),
                    )
                })?
                .trim()
                .to_owned(),
            (None, None, None) => {
                return Err(value_err(
                    f,
                    "[ledger] token_file",
                    "token_file or token (or CASHLESS_LEDGER_TOKEN)",
                ));
            }
        };
        if token.is_empty()
            || token.len() > TOKEN_LEN_MAX
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(value_err(
                f,
                "[ledger] token",
                "the terminal's bearer token (printed by `cashless ledger terminal add`)",
            ));
        }
        let timeout_ms = ms_in(
            f,
            "[ledger] timeout_ms",
            raw.ledger.timeout_ms,
            1500,
            50,
            60_000,
        )?;

        let ledger_tls = ledger_tls(f, path, &url, &raw.ledger)?;
        let metrics_listen = match &raw.metrics.listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                value_err(
                    f,
                    "[metrics] listen",
                    format!("an address like 127.0.0.1:9464, got {text:?}"),
                )
            })?),
        };

        let o = &raw.offline;
        let offline_max_order = cents_in(
            f,
            "[offline] max_order_cents",
            o.max_order_cents,
            5000,
            OFFLINE_LIMIT_CENTS_MAX,
        )?;
        let offline_max_card_exposure = cents_in(
            f,
            "[offline] max_card_exposure_cents",
            o.max_card_exposure_cents,
            10_000,
            OFFLINE_LIMIT_CENTS_MAX,
        )?;
        let offline_unknown_card_limit = cents_in(
            f,
            "[offline] unknown_card_limit_cents",
            o.unknown_card_limit_cents,
            0,
            OFFLINE_LIMIT_CENTS_MAX,
        )?;
        let offline_max_return_payout = cents_in(
            f,
            "[offline] max_return_payout_cents",
            o.max_return_payout_cents,
            5000,
            OFFLINE_LIMIT_CENTS_MAX,
        )?;

        let s = &raw.sync;
        let sync_interval_ms = ms_in(f, "[sync] interval_ms", s.interval_ms, 2000, 100, 600_000)?;
        let sync_batch_max = s.batch_max.unwrap_or(BATCH_OPERATIONS_MAX);
        if !(1..=BATCH_OPERATIONS_MAX).contains(&sync_batch_max) {
            return Err(value_err(
                f,
                "[sync] batch_max",
                format!("1 to {BATCH_OPERATIONS_MAX} operations, got {sync_batch_max}"),
            ));
        }
        let sync_backoff_base_ms = ms_in(
            f,
            "[sync] backoff_base_ms",
            s.backoff_base_ms,
            500,
            10,
            60_000,
        )?;
        let sync_backoff_cap_ms = ms_in(
            f,
            "[sync] backoff_cap_ms",
            s.backoff_cap_ms,
            30_000,
            sync_backoff_base_ms,
            3_600_000,
        )?;
        let sync_status_interval_ms = ms_in(
            f,
            "[sync] status_interval_ms",
            s.status_interval_ms,
            30_000,
            1000,
            600_000,
        )?;

        let reader_backend = match (overrides.reader_backend, raw.reader.backend.as_deref()) {
            (Some(b), _) => b,
            (None, None | Some("pcsc")) => ReaderBackend::Pcsc,
            (None, Some("simulated")) => ReaderBackend::Simulated,
            (None, Some(other)) => {
                return Err(value_err(
                    f,
                    "[reader] backend",
                    format!("pcsc or simulated, got {other:?}"),
                ));
            }
        };
        let reader_name_filter = raw.reader.name_filter.unwrap_or_default();
        if reader_name_filter.len() > 128 || reader_name_filter.chars().any(char::is_control) {
            return Err(value_err(
                f,
                "[reader] name_filter",
                "at most 128 printable characters",
            ));
        }
        let reader_debounce_ms = ms_in(
            f,
            "[reader] debounce_ms",
            raw.reader.debounce_ms,
            800,
            0,
            10_000,
        )?;

        let cards = cards_config(f, &raw.cards, reader_backend)?;

        Ok(TerminalConfig {
            name,
            kind,
            journal: raw.terminal.journal,
            ledger_url: url,
            token,
            timeout_ms,
            ledger_tls,
            offline_max_order,
            offline_max_card_exposure,
            offline_unknown_card_limit,
            offline_max_return_payout,
            sync_interval_ms,
            sync_batch_max,
            sync_backoff_base_ms,
            sync_backoff_cap_ms,
            sync_status_interval_ms,
            reader_backend,
            reader_name_filter,
            reader_debounce_ms,
            reader_feedback: raw.reader.feedback.unwrap_or(true),
            metrics_listen,
            cards,
        })
    }
}

/// `[cards]`: the mode, and in AES mode the master key file, read and checked now (a file
/// open to others, missing or malformed stops the terminal at start, naming it).
fn cards_config(
    f: &str,
    raw: &RawCards,
    reader_backend: ReaderBackend,
) -> Result<CardsConfig, TerminalConfigError> {
    let mode = match raw.mode.as_deref() {
        None | Some("uid") => CardMode::Uid,
        Some("aes") => CardMode::Aes,
        Some(other) => {
            return Err(value_err(
                f,
                "[cards] mode",
                format!("aes or uid, got {other:?}"),
            ));
        }
    };
    let mut cards = CardsConfig {
        mode,
        accept_uid_cards: raw.accept_uid_cards.unwrap_or(false),
        random_id: raw.random_id.unwrap_or(false),
        issue_other_keys: raw.issue_other_keys.unwrap_or(true),
        ..CardsConfig::uid_only()
    };
    if mode == CardMode::Uid {
        cards.accept_uid_cards = true;
        return Ok(cards);
    }
    if reader_backend == ReaderBackend::Simulated {
        return Err(value_err(
            f,
            "[cards] mode",
            "uid with a simulated reader (a simulated card has no key to prove)",
        ));
    }
    let Some(path) = &raw.master_key_file else {
        return Err(value_err(
            f,
            "[cards] master_key_file",
            "the file of the festival's card master keys (`cashless card new-key` makes one)",
        ));
    };
    let keys = super::card_keys::load(path)
        .map_err(|e| value_err(f, "[cards] master_key_file", e.to_string()))?;
    cards.keys = Some(Arc::new(keys));
    Ok(cards)
}

/// `[ledger] ca_file` and `pin_ca`: the festival CA's certificates, read and checked now so
/// that a bad file stops the terminal at start, naming it.
fn ledger_tls(
    f: &str,
    config_path: &Path,
    url: &str,
    raw: &RawLedger,
) -> Result<LedgerTls, TerminalConfigError> {
    let pin_ca = raw.pin_ca.unwrap_or(false);
    let Some(given) = &raw.ca_file else {
        if pin_ca {
            return Err(value_err(
                f,
                "[ledger] ca_file",
                "the PEM file of the CA to pin, with pin_ca = true",
            ));
        }
        return Ok(LedgerTls::default());
    };
    // Relative to the configuration file, as the ledger's TLS files are.
    let path = &match config_path.parent() {
        Some(dir) if given.is_relative() => dir.join(given),
        _ => given.clone(),
    };
    if !url.starts_with("https://") {
        return Err(value_err(
            f,
            "[ledger] ca_file",
            format!("an https:// [ledger] url to check the CA against, got {url:?}"),
        ));
    }
    let pem = std::fs::read(path).map_err(|e| {
        value_err(
            f,
            "[ledger] ca_file",
            format!(
                "a readable PEM file of CA certificates: {}: {e}",
                path.display()
            ),
        )
    })?;
    let count = ca_certificates_in(&pem).map_err(|e| {
        value_err(
            f,
            "[ledger] ca_file",
            format!(
                "PEM CA certificates (-----BEGIN CERTIFICATE-----): {}: {e}",
                path.display()
            ),
        )
    })?;
    if count == 0 {
        return Err(value_err(
            f,
            "[ledger] ca_file",
            format!(
                "PEM CA certificates (-----BEGIN CERTIFICATE-----): {} has none",
                path.display()
            ),
        ));
    }
    Ok(LedgerTls {
        ca_file: Some(path.clone()),
        ca_pem: pem,
        pin_ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MINIMAL: &str = "[terminal]\nname = \"bar-1\"\nkind = \"bar\"\njournal = \"/tmp/j.db\"\n\n[ledger]\nurl = \"http://127.0.0.1:8080\"\ntoken = \"clt_abc\"\n";

    fn load(text: &str, overrides: TerminalOverrides) -> Result<TerminalConfig, String> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        TerminalConfig::load(file.path(), &overrides).map_err(|e| e.to_string())
    }

    #[test]
    fn the_example_file_loads_with_its_token_file_overridden() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/terminal.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        super::super::card_keys::add_new_key(&keys).unwrap();
        let text = std::fs::read_to_string(example)
            .unwrap()
            .replace("/etc/cashless/cards/master-keys", keys.to_str().unwrap());
        let path = dir.path().join("terminal.toml");
        std::fs::write(&path, text).unwrap();
        let overrides = TerminalOverrides {
            token: Some("clt_x".into()),
            ..TerminalOverrides::default()
        };
        let config = TerminalConfig::load(&path, &overrides).unwrap();
        assert_eq!(config.cards.mode, CardMode::Aes);
        assert_eq!(config.cards.keys.as_ref().unwrap().versions(), [1]);
        assert!(!config.cards.accept_uid_cards);
        assert_eq!(config.timeout_ms, 1500);
        assert_eq!(config.offline_max_order, Cents::new(5000));
        assert_eq!(config.offline_max_card_exposure, Cents::new(10_000));
        assert_eq!(config.offline_unknown_card_limit, Cents::ZERO);
        assert_eq!(config.offline_max_return_payout, Cents::new(5000));
        assert_eq!(config.sync_batch_max, 500);
        assert_eq!(config.reader_backend, ReaderBackend::Pcsc);
    }

    #[test]
    fn defaults_and_overrides() {
        let config = load(MINIMAL, TerminalOverrides::default()).unwrap();
        assert_eq!(config.sync_interval_ms, 2000);
        assert!(
            !format!("{config:?}").contains("clt_abc"),
            "the token must not be printed"
        );
        let overrides = TerminalOverrides {
            ledger_url: Some("https://ledger.example/".into()),
            token: Some("clt_env".into()),
            reader_backend: Some(ReaderBackend::Simulated),
        };
        let config = load(MINIMAL, overrides).unwrap();
        assert_eq!(config.ledger_url, "https://ledger.example");
        assert_eq!(config.token, "clt_env");
        assert_eq!(config.reader_backend, ReaderBackend::Simulated);
    }

    #[test]
    fn a_master_key_file_open_to_others_missing_or_malformed_stops_the_terminal() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("card-keys");
        let with_keys = format!(
            "{MINIMAL}\n[cards]\nmode = \"aes\"\nmaster_key_file = \"{}\"\n",
            keys.display()
        );
        let missing = load(&with_keys, TerminalOverrides::default()).unwrap_err();
        assert!(missing.contains("[cards] master_key_file"), "{missing}");
        assert!(missing.contains(&keys.display().to_string()), "{missing}");
        assert!(missing.contains("No such file"), "{missing}");

        assert_eq!(super::super::card_keys::add_new_key(&keys).unwrap(), 1);
        assert_eq!(super::super::card_keys::add_new_key(&keys).unwrap(), 2);
        let config = load(&with_keys, TerminalOverrides::default()).unwrap();
        assert_eq!(config.cards.keys.as_ref().unwrap().versions(), [1, 2]);
        let text = std::fs::read_to_string(&keys).unwrap();
        assert!(
            !format!("{config:?}")
                .contains(text.lines().last().unwrap().split(' ').nth(1).unwrap()),
            "a key must never be printed"
        );

        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
        let open = load(&with_keys, TerminalOverrides::default()).unwrap_err();
        assert!(
            open.contains("mode 640") && open.contains("chmod 600"),
            "{open}"
        );
        assert!(open.contains(&keys.display().to_string()), "{open}");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(load(&with_keys, TerminalOverrides::default()).is_err());

        std::fs::write(&keys, "1 00112233445566778899AABBCCDDEE\n").unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        let short = load(&with_keys, TerminalOverrides::default()).unwrap_err();
        assert!(
            short.contains("line 1") && short.contains("a key of 15 bytes"),
            "{short}"
        );

        let no_file = format!("{MINIMAL}\n[cards]\nmode = \"aes\"\n");
        let err = load(&no_file, TerminalOverrides::default()).unwrap_err();
        assert!(err.contains("[cards] master_key_file"), "{err}");
        let simulated = TerminalOverrides {
            reader_backend: Some(ReaderBackend::Simulated),
            ..TerminalOverrides::default()
        };
        std::fs::write(&keys, "1 00112233445566778899AABBCCDDEEFF\n").unwrap();
        let err = load(&with_keys, simulated).unwrap_err();
        assert!(err.contains("[cards] mode"), "{err}");
        let bad_mode = format!("{MINIMAL}\n[cards]\nmode = \"magic\"\n");
        let err = load(&bad_mode, TerminalOverrides::default()).unwrap_err();
        assert!(err.contains("aes or uid"), "{err}");
        // Without [cards], the UID identifies the card.
        let config = load(MINIMAL, TerminalOverrides::default()).unwrap();
        assert_eq!(config.cards.mode, CardMode::Uid);
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "clt_from_file\n").unwrap();
        let text = MINIMAL.replace(
            "token = \"clt_abc\"",
            &format!("token_file = {:?}", token.display().to_string()),
        );
        assert_eq!(
            load(&text, TerminalOverrides::default()).unwrap().token,
            "clt_from_file"
        );
        let missing = MINIMAL.replace("token = \"clt_abc\"", "token_file = \"/nonexistent/token\"");
        assert!(
            load(&missing, TerminalOverrides::default())
                .unwrap_err()
                .contains("[ledger] token_file")
        );
    }

    #[test]
    fn errors_name_the_file_key_and_expectation() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "kind = \"bar\"",
                "kind = \"kiosk\"",
                "[terminal] kind: bar, checkpoint or return",
            ),
            (
                "url = \"http://127.0.0.1:8080\"",
                "url = \"ftp://x\"",
                "[ledger] url: an http:// or https:// URL",
            ),
            ("token = \"clt_abc\"", "token = \"\"", "[ledger] token"),
            (
                "token = \"clt_abc\"",
                "token = \"clt_abc\"\ntoken_file = \"/x\"",
                "either token or token_file",
            ),
            (
                "token = \"clt_abc\"",
                "token = \"clt_abc\"\ntimeout_ms = 0",
                "[ledger] timeout_ms: milliseconds between 50",
            ),
            ("name = \"bar-1\"", "nme = \"bar-1\"", "unknown field `nme`"),
            (
                "token = \"clt_abc\"",
                "token = \"clt_abc\"\npin_ca = true",
                "[ledger] ca_file: the PEM file of the CA to pin",
            ),
            (
                "token = \"clt_abc\"",
                "token = \"clt_abc\"\nca_file = \"/etc/hosts\"",
                "[ledger] ca_file: an https:// [ledger] url",
            ),
            (
                "url = \"http://127.0.0.1:8080\"\ntoken = \"clt_abc\"",
                "url = \"https://127.0.0.1:8080\"\ntoken = \"clt_abc\"\nca_file = \"/nonexistent/ca.pem\"",
                "[ledger] ca_file: a readable PEM file of CA certificates: /nonexistent/ca.pem",
            ),
            (
                "url = \"http://127.0.0.1:8080\"\ntoken = \"clt_abc\"",
                "url = \"https://127.0.0.1:8080\"\ntoken = \"clt_abc\"\nca_file = \"/etc/passwd\"",
                "has none",
            ),
        ];
        for (from, to, expected) in cases {
            let text = MINIMAL.replace(from, to);
            let err = load(&text, TerminalOverrides::default()).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(err.contains("tmp"), "{err:?} does not name the file");
        }
        let extra: &[(&str, &str)] = &[
            (
                "\n[offline]\nmax_order_cents = -1\n",
                "[offline] max_order_cents: cents between 0",
            ),
            ("\n[sync]\nbatch_max = 501\n", "[sync] batch_max: 1 to 500"),
            (
                "\n[sync]\nbackoff_base_ms = 1000\nbackoff_cap_ms = 10\n",
                "[sync] backoff_cap_ms",
            ),
            (
                "\n[reader]\nbackend = \"usb\"\n",
                "[reader] backend: pcsc or simulated",
            ),
        ];
        for (append, expected) in extra {
            let err =
                load(&format!("{MINIMAL}{append}"), TerminalOverrides::default()).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }
}
