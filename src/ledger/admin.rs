//! The admin commands: terminals, staff, products, cards and the audit. They talk to the
//! database through the same [`LedgerStore`] as the server, so they work while it runs.

use super::config::{DatabaseUrl, LedgerConfig};
use super::fleet::{self, Attention, FleetRules};
use super::outcome::Decided;
use super::rules::Limits;
use super::store::{
    AuditReport, DepositLine, DepositReport, LedgerStore, NewStaff, NewTerminal, OperatorListing,
    Product, ProductUpsert, ShiftReport, StaffChange, StatusSeen, Store, StoreOptions,
    StripeEventRecord, TerminalChange, TerminalSync,
};
use crate::domain::{CardUid, Cents, MinAge, ProductId, StaffId, TaxRateName, TaxRates};
use crate::protocol::api::{StaffRole, TerminalKind, UNIT_PRICE_CENTS_MAX, VOUCHER_PRICE_MAX};
use crate::protocol::export::{EXPORT_CLOSEOUTS_MAX, EXPORT_FORMAT, EXPORT_VERSION};
use anyhow::{Context, bail};
use rand::RngCore;
use serde::Deserialize;
use std::path::Path;
use uuid::Uuid;

/// Products in one catalog file, at most.
pub const CATALOG_PRODUCTS_MAX: usize = 10_000;
/// Longest name of a terminal, point of sale, product or staff member.
pub const NAME_LEN_MAX: usize = 100;

/// Opens the configured database, migrating it if needed, through [`Store::open`].
pub async fn open_store(config: &LedgerConfig) -> anyhow::Result<Store> {
    open_database(config, &config.database).await
}

/// Opens `database` (creating and migrating it if needed) with `config`'s options: a
/// database other than the configured one (the two sides of a move).
pub async fn open_database(config: &LedgerConfig, database: &DatabaseUrl) -> anyhow::Result<Store> {
    let options = StoreOptions {
        limits: Limits {
            recharge_max: config.recharge_max,
            balance_max: config.balance_max,
        },
        retention_days: config.retention_days,
        postgres: config.postgres,
        taxes: config.taxes.clone(),
    };
    Ok(Store::open(database, options).await?)
}

fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty()
        || name.chars().count() > NAME_LEN_MAX
        || name.chars().any(char::is_control)
    {
        bail!("{what} must be 1 to {NAME_LEN_MAX} printable characters, got {name:?}");
    }
    Ok(())
}

/// A new bearer token: 32 random bytes as hex, with a recognisable prefix.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("clt_{}", hex::encode(bytes))
}

/// The stored form of a token (defined with the store, which looks tokens up by it).
pub use super::store::token_sha256;

/// Registers a terminal; returns its id and its bearer token (shown once, stored hashed).
pub async fn terminal_add(
    store: &impl LedgerStore,
    name: &str,
    kind: TerminalKind,
    point_of_sale: &str,
) -> anyhow::Result<(Uuid, String)> {
    check_name("--name", name)?;
    check_name("--point-of-sale", point_of_sale)?;
    let token = new_token();
    let id = store
        .add_terminal(NewTerminal {
            name: name.to_owned(),
            kind,
            point_of_sale: point_of_sale.to_owned(),
            token_sha256: token_sha256(&token),
        })
        .await?;
    Ok((id, token))
}

/// The most terminals `terminal list` shows.
pub const TERMINAL_LIST_MAX: u32 = 10_000;
/// Close-outs `shift list` prints, at most (the newest; a festival has hundreds).
pub const SHIFT_LIST_MAX: u32 = 100_000;

/// Gives a terminal a new bearer token (shown once, stored hashed); the old one is refused
/// in every request that arrives after this returns, on every ledger process.
pub async fn terminal_rotate_token(store: &impl LedgerStore, name: &str) -> anyhow::Result<String> {
    check_name("--name", name)?;
    let token = new_token();
    store
        .change_terminal(
            name.to_owned(),
            TerminalChange::TokenSha256(token_sha256(&token)),
        )
        .await?;
    Ok(token)
}

/// Revokes a terminal for good: its token is refused in every request that arrives after this
/// returns, on every ledger process. Revoking a revoked terminal changes nothing and succeeds.
pub async fn terminal_revoke(store: &impl LedgerStore, name: &str) -> anyhow::Result<()> {
    check_name("--name", name)?;
    store
        .change_terminal(name.to_owned(), TerminalChange::Revoke)
        .await?;
    Ok(())
}

/// `terminal list`: every terminal with its sync state, one per line.
pub fn format_terminals(
    terminals: &[TerminalSync],
    now: chrono::DateTime<chrono::Utc>,
    rules: FleetRules,
) -> String {
    let rows: Vec<[String; 14]> = terminals
        .iter()
        .map(|t| {
            let status = t.status.as_ref();
            let count =
                |f: fn(&StatusSeen) -> i64| status.map_or("-".to_owned(), |s| f(s).to_string());
            let attention: Vec<&str> = fleet::attention(t, now, rules)
                .into_iter()
                .map(Attention::tag)
                .collect();
            [
                t.name.clone(),
                t.kind.as_str().to_owned(),
                t.point_of_sale.clone(),
                if t.active { "yes" } else { "revoked" }.to_owned(),
                t.last_seen_at
                    .map_or_else(|| "never".to_owned(), crate::protocol::api::format_time),
                t.highest_contiguous_seq.to_string(),
                t.highest_seen_seq.to_string(),
                t.missing_seqs.to_string(),
                fleet::last_contact(t)
                    .map_or_else(|| "never".to_owned(), crate::protocol::api::format_time),
                count(|s| s.waiting),
                count(|s| s.rejected),
                status.map_or("-", |s| s.reader_state.as_str()).to_owned(),
                status.map_or("-".to_owned(), |s| s.clock_offset_ms().to_string()),
                if attention.is_empty() {
                    "-".to_owned()
                } else {
                    attention.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "TERMINAL",
            "KIND",
            "POINT_OF_SALE",
            "ACTIVE",
            "LAST_SEEN",
            "CONTIGUOUS",
            "SEEN",
            "MISSING",
            "LAST_CONTACT",
            "WAITING",
            "REJECTED",
            "READER",
            "CLOCK_MS",
            "ATTENTION",
        ],
        5,
        &rows,
    )
}

/// `operator list`: `OPERATOR ROLE ACTIVE FAILED LOCKED_UNTIL CREATED`.
pub fn format_operators(operators: &[OperatorListing]) -> String {
    let rows: Vec<[String; 6]> = operators
        .iter()
        .map(|o| {
            [
                o.name.clone(),
                o.role.as_str().to_owned(),
                if o.active { "yes" } else { "disabled" }.to_owned(),
                o.failed_logins.to_string(),
                o.locked_until
                    .map_or_else(|| "-".to_owned(), crate::protocol::api::format_time),
                crate::protocol::api::format_time(o.created_at),
            ]
        })
        .collect();
    table(
        &[
            "OPERATOR",
            "ROLE",
            "ACTIVE",
            "FAILED",
            "LOCKED_UNTIL",
            "CREATED",
        ],
        3,
        &rows,
    )
}

/// Hashes a PIN with argon2 (PHC string), after checking it is 4 to 12 digits.
pub fn hash_pin(pin: &str) -> anyhow::Result<String> {
    if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--pin must be 4 to 12 digits");
    }
    crate::ledger::hq::auth::argon2_phc(pin.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot hash the PIN: {e}"))
}

/// Registers a staff member.
pub async fn staff_add(
    store: &impl LedgerStore,
    id: &str,
    name: &str,
    role: StaffRole,
    pin: &str,
) -> anyhow::Result<()> {
    let staff_id = StaffId::parse(id).context("--id")?;
    check_name("--name", name)?;
    let pin_hash = hash_pin(pin)?;
    store
        .add_staff(NewStaff {
            staff_id,
            name: name.to_owned(),
            role,
            pin_hash,
        })
        .await?;
    Ok(())
}

/// `staff disable | enable | set-pin`.
pub async fn staff_change(
    store: &impl LedgerStore,
    id: &str,
    change: StaffCommandChange<'_>,
) -> anyhow::Result<()> {
    let staff_id = StaffId::parse(id).context("--id")?;
    let change = match change {
        StaffCommandChange::Active(active) => StaffChange::Active(active),
        StaffCommandChange::Pin(pin) => StaffChange::PinHash(hash_pin(pin)?),
    };
    store.change_staff(staff_id, change).await?;
    Ok(())
}

/// What a staff command changes (the PIN in clear, hashed before it reaches the store).
#[derive(Debug, Clone, Copy)]
pub enum StaffCommandChange<'a> {
    /// Enable (`true`) or disable.
    Active(bool),
    /// A new PIN.
    Pin(&'a str),
}

/// Products `product list` shows, at most.
pub const PRODUCT_LIST_MAX: u32 = 100_000;

/// The product list for people.
pub fn format_products(products: &[crate::ledger::store::ProductListing]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:>12} {:<8} {}\n",
        "POINT OF SALE", "PRODUCT", "PRICE", "ON SALE", "NAME"
    );
    for p in products {
        let price = match p.open_price_max_cents {
            Some(max) => format!("open<={}", Cents::new(max)),
            None => Cents::new(p.price_cents).to_string(),
        };
        out.push_str(&format!(
            "{:<20} {:<16} {:>12} {:<8} {}\n",
            p.point_of_sale,
            p.product_id,
            price,
            if p.active { "yes" } else { "no" },
            p.name
        ));
    }
    out
}

/// The staff list for people: id, role, active, name.
pub fn format_staff(staff: &[crate::ledger::store::StaffRecord]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:<8} {}\n",
        "STAFF", "ROLE", "ACTIVE", "NAME"
    );
    for s in staff {
        out.push_str(&format!(
            "{:<16} {:<10} {:<8} {}\n",
            s.staff_id.as_str(),
            s.role.as_str(),
            if s.active { "yes" } else { "no" },
            s.name
        ));
    }
    out
}

/// One product line of a catalog file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Product id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Price in cents, VAT included; absent for an open price.
    #[serde(default)]
    pub price_cents: Option<i64>,
    /// Where it is sold.
    pub point_of_sale: String,
    /// Grouping.
    #[serde(default)]
    pub category: Option<String>,
    /// Its VAT rate, one of the configuration's `[taxes]`; absent: the default rate.
    #[serde(default)]
    pub tax_rate: Option<String>,
    /// The age it is sold from: 16 or 18; absent: no restriction.
    #[serde(default)]
    pub min_age: Option<i64>,
    /// An open price: staff type the unit price, 1 cent to this; instead of `price_cents`.
    #[serde(default)]
    pub open_price_max_cents: Option<i64>,
    /// Voucher units one unit costs when vouchers pay it (1 to 100); absent: money only.
    #[serde(default)]
    pub voucher_price: Option<i64>,
    /// A returnable item (a cup): `price_cents` is its deposit.
    #[serde(default)]
    pub returnable: bool,
    /// The id of the returnable item it comes in, at the same point of sale.
    #[serde(default)]
    pub deposit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    product: Vec<CatalogEntry>,
}

/// Checks one catalog entry into an upsert; its VAT rate must be one of `taxes`.
pub fn check_product(entry: &CatalogEntry, taxes: &TaxRates) -> anyhow::Result<ProductUpsert> {
    let product_id = ProductId::parse(&entry.id).context("id")?;
    check_name("name", &entry.name)?;
    check_name("point_of_sale", &entry.point_of_sale)?;
    if let Some(c) = &entry.category {
        check_name("category", c)?;
    }
    let (price_cents, open_price_max_cents) = match (entry.price_cents, entry.open_price_max_cents)
    {
        (Some(price), None) => {
            if !(0..=UNIT_PRICE_CENTS_MAX).contains(&price) {
                bail!("price_cents must be between 0 and {UNIT_PRICE_CENTS_MAX}, got {price}");
            }
            (Cents::new(price), None)
        }
        (None, Some(max)) => {
            if !(1..=UNIT_PRICE_CENTS_MAX).contains(&max) {
                bail!(
                    "open_price_max_cents must be between 1 and {UNIT_PRICE_CENTS_MAX}, got {max}"
                );
            }
            (Cents::ZERO, Some(Cents::new(max)))
        }
        (Some(_), Some(_)) => bail!(
            "price_cents and open_price_max_cents exclude each other: a product has a fixed \
             price or an open one"
        ),
        (None, None) => bail!(
            "price_cents (a fixed price) or open_price_max_cents (an open price's maximum) is \
             required"
        ),
    };
    let min_age = entry
        .min_age
        .map(MinAge::new)
        .transpose()
        .context("min_age")?;
    if let Some(units) = entry.voucher_price
        && !(1..=VOUCHER_PRICE_MAX).contains(&units)
    {
        bail!("voucher_price must be between 1 and {VOUCHER_PRICE_MAX} voucher units, got {units}");
    }
    let deposit_product_id = entry
        .deposit
        .as_deref()
        .map(ProductId::parse)
        .transpose()
        .context("deposit")?;
    if entry.returnable {
        if price_cents <= Cents::ZERO {
            bail!("a returnable item needs a fixed price_cents of at least 1: its deposit");
        }
        if entry.voucher_price.is_some() {
            bail!("a returnable item has no voucher_price: vouchers never pay a deposit");
        }
        if deposit_product_id.is_some() {
            bail!("a returnable item does not come in another one (deposit)");
        }
    }
    let tax_rate = match &entry.tax_rate {
        None => None,
        Some(name) => {
            let rate = TaxRateName::parse(name).context("tax_rate")?;
            if taxes.resolve(Some(rate.as_str())).is_none() {
                let known: Vec<String> = taxes.iter().map(|r| r.name.to_string()).collect();
                bail!(
                    "tax_rate {rate} is not one of the ledger configuration's [taxes] rates_basis_points ({})",
                    known.join(", ")
                );
            }
            Some(rate)
        }
    };
    Ok(ProductUpsert {
        point_of_sale: entry.point_of_sale.clone(),
        product: Product {
            product_id,
            name: entry.name.clone(),
            price_cents,
            category: entry.category.clone(),
            tax_rate,
            min_age,
            open_price_max_cents,
            voucher_price: entry.voucher_price,
            returnable: entry.returnable,
            deposit_product_id,
        },
    })
}

/// Reads and checks a catalog file against the VAT rates of `taxes`; every error names the
/// file, the product and the key.
pub fn read_catalog(path: &Path, taxes: &TaxRates) -> anyhow::Result<Vec<ProductUpsert>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let file: CatalogFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.product.is_empty() || file.product.len() > CATALOG_PRODUCTS_MAX {
        bail!(
            "{}: expected 1 to {CATALOG_PRODUCTS_MAX} [[product]] entries",
            path.display()
        );
    }
    file.product
        .iter()
        .enumerate()
        .map(|(i, p)| {
            check_product(p, taxes).with_context(|| {
                format!(
                    "{}: [[product]] number {} ({:?})",
                    path.display(),
                    i + 1,
                    p.id
                )
            })
        })
        .collect()
}

/// The largest export file `import` reads.
pub const IMPORT_FILE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// A terminal's journal export (`cashless terminal export`): the operations the ledger has
/// not acknowledged, in `terminal_seq` order, each exactly as the terminal would have sent
/// it in a batch; then the shift close-outs it has not recorded, each as `POST /v1/shifts`
/// takes it (absent from older exports).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    format: String,
    version: u32,
    terminal: String,
    exported_at: String,
    operations: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    closeouts: Vec<Box<serde_json::value::RawValue>>,
}

/// What an import did, operation by operation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Applied now.
    pub applied: usize,
    /// Already applied or declined before (a replay): nothing changed.
    pub replayed: usize,
    /// Declined now for a business reason (stored like any decline).
    pub declined: usize,
    /// Refused: `(position in the file, client_request_id if readable, status, code)`.
    pub refused: Vec<(usize, Option<String>, u16, String)>,
    /// Shift close-outs recorded now.
    pub closeouts_recorded: usize,
    /// Shift close-outs recorded before (a replay): nothing changed.
    pub closeouts_replayed: usize,
    /// Shift close-outs refused, like `refused` (position among the close-outs).
    pub closeouts_refused: Vec<(usize, Option<String>, u16, String)>,
}

impl ImportSummary {
    /// Nothing in the file was refused.
    pub fn is_clean(&self) -> bool {
        self.refused.is_empty() && self.closeouts_refused.is_empty()
    }
}

/// Applies a terminal's journal export as that terminal, in order and idempotently: every
/// operation goes through exactly the path of `POST /v1/batch`, so importing the same file
/// twice, or a file whose operations the terminal also replayed itself, changes nothing.
pub async fn import(store: &impl LedgerStore, path: &Path) -> anyhow::Result<ImportSummary> {
    use super::api::parse_batch_entry;
    use crate::protocol::api::BATCH_OPERATIONS_MAX;
    let file = path.display();
    let size = std::fs::metadata(path)
        .with_context(|| format!("{file}: cannot read"))?
        .len();
    if size > IMPORT_FILE_BYTES_MAX {
        bail!("{file}: {size} bytes, more than the {IMPORT_FILE_BYTES_MAX} an import reads");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{file}: cannot read"))?;
    let export: ExportFile = serde_json::from_str(&text).with_context(|| {
        format!("{file}: not a journal export (cashless terminal export writes them)")
    })?;
    if export.format != EXPORT_FORMAT || export.version != EXPORT_VERSION {
        bail!(
            "{file}: format {:?} version {}, expected {EXPORT_FORMAT:?} version {EXPORT_VERSION}",
            export.format,
            export.version
        );
    }
    if export.closeouts.len() > EXPORT_CLOSEOUTS_MAX {
        bail!(
            "{file}: {} shift close-outs, more than the {EXPORT_CLOSEOUTS_MAX} an import reads",
            export.closeouts.len()
        );
    }
    let terminal = store
        .terminal_by_name(export.terminal.clone())
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{file}: terminal {:?} is not registered in this ledger",
                export.terminal
            )
        })?;
    let request_id = format!("import:{}:{}", export.terminal, export.exported_at);
    let mut summary = ImportSummary::default();
    let mut chunk = Vec::with_capacity(BATCH_OPERATIONS_MAX);
    let mut positions = Vec::with_capacity(BATCH_OPERATIONS_MAX);
    let total = export.operations.len();
    for (index, raw) in export.operations.into_iter().enumerate() {
        match parse_batch_entry(raw.get()) {
            Ok(op) => {
                positions.push((index, op.client_request_id().to_string()));
                chunk.push(op);
            }
            Err(e) => {
                summary.refused.push((
                    index,
                    readable_crid(raw.get()),
                    e.http_status(),
                    e.code.as_str().to_owned(),
                ));
            }
        }
        if chunk.len() == BATCH_OPERATIONS_MAX || index + 1 == total {
            let ops = std::mem::take(&mut chunk);
            if ops.is_empty() {
                continue;
            }
            let outcomes = store
                .apply(terminal.clone(), request_id.clone(), ops)
                .await?;
            for ((position, crid), outcome) in positions.drain(..).zip(outcomes) {
                match (outcome.replayed, &outcome.decided) {
                    (true, _) => summary.replayed += 1,
                    (false, Decided::Approved(_)) => summary.applied += 1,
                    (false, Decided::Declined(d)) if d.error.code.is_stored_decline() => {
                        summary.declined += 1
                    }
                    (false, Decided::Declined(d)) => summary.refused.push((
                        position,
                        Some(crid),
                        d.error.http_status(),
                        d.error.code.as_str().to_owned(),
                    )),
                }
            }
        }
    }
    summary.refused.sort();
    // Then the close-outs, each exactly as `POST /v1/shifts` takes it from that terminal.
    for (index, raw) in export.closeouts.into_iter().enumerate() {
        let closeout = match super::api::parse_shift_closeout(raw.get().as_bytes()) {
            Ok(closeout) => closeout,
            Err(e) => {
                summary.closeouts_refused.push((
                    index,
                    readable_crid(raw.get()),
                    e.http_status(),
                    e.code.as_str().to_owned(),
                ));
                continue;
            }
        };
        let crid = closeout.client_request_id.to_string();
        let outcome = store
            .record_shift(terminal.clone(), request_id.clone(), closeout)
            .await?;
        match (outcome.replayed, &outcome.decided) {
            (true, _) => summary.closeouts_replayed += 1,
            (false, Decided::Approved(_)) => summary.closeouts_recorded += 1,
            (false, Decided::Declined(d)) => summary.closeouts_refused.push((
                index,
                Some(crid),
                d.error.http_status(),
                d.error.code.as_str().to_owned(),
            )),
        }
    }
    Ok(summary)
}

/// The `client_request_id` of an entry the import could not parse, if it has a readable one.
fn readable_crid(raw: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| v.get("client_request_id")?.as_str().map(str::to_owned))
}

/// Prints an import's summary, one line per refused operation.
pub fn format_import(summary: &ImportSummary) -> String {
    let mut out = String::new();
    for (position, crid, status, code) in &summary.refused {
        out.push_str(&format!(
            "REFUSED: operation {} ({}): {status} {code}\n",
            position + 1,
            crid.as_deref().unwrap_or("no readable client_request_id")
        ));
    }
    for (position, crid, status, code) in &summary.closeouts_refused {
        out.push_str(&format!(
            "REFUSED: close-out {} ({}): {status} {code}\n",
            position + 1,
            crid.as_deref().unwrap_or("no readable client_request_id")
        ));
    }
    out.push_str(&format!(
        "import: {} applied, {} already applied before, {} declined, {} refused\n",
        summary.applied,
        summary.replayed,
        summary.declined,
        summary.refused.len()
    ));
    out.push_str(&format!(
        "close-outs: {} recorded, {} already recorded before, {} refused\n",
        summary.closeouts_recorded,
        summary.closeouts_replayed,
        summary.closeouts_refused.len()
    ));
    out
}

/// Prints the audit and says whether the books balance.
pub fn format_audit(report: &AuditReport) -> String {
    let mut out = String::new();
    for d in &report.discrepancies {
        out.push_str(&format!("DISCREPANCY: {d}\n"));
    }
    let verdict = if report.discrepancies.is_empty() {
        "the books balance".to_owned()
    } else {
        format!("{} discrepancies", report.discrepancies.len())
    };
    out.push_str(&format!(
        "audit: {} cards, {} postings in {} transactions, card balances total {} cents: {verdict}\n",
        report.cards, report.postings, report.transactions, report.card_balance_total_cents
    ));
    out
}

/// The columns of `cashless ledger shift list`: the terminal's close-out, then the ledger's
/// own top-ups of that terminal in the shift (by the terminal's sequence numbers).
const SHIFT_COLUMNS: [&str; 12] = [
    "TERMINAL",
    "STAFF",
    "OPENED",
    "CLOSED",
    "COUNT",
    "CASH EXPECTED",
    "COUNTED",
    "DIFFERENCE",
    "CARD",
    "LEDGER COUNT",
    "LEDGER CASH",
    "LEDGER CARD",
];
/// Spaces between two columns of a text table.
const COLUMN_GAP: &str = "  ";

/// Prints shift close-outs as an aligned text table (text left, numbers right, money as
/// units with two decimals), or a sentence when there are none.
pub fn format_shifts(reports: &[ShiftReport]) -> String {
    if reports.is_empty() {
        return "no shift close-outs\n".to_owned();
    }
    let rows: Vec<[String; 12]> = reports
        .iter()
        .map(|r| {
            [
                r.terminal.clone(),
                r.staff_id.clone(),
                r.opened_at.clone(),
                r.closed_at.clone(),
                r.count.to_string(),
                r.cash_cents.to_string(),
                r.counted_cash_cents.to_string(),
                r.difference_cents.to_string(),
                r.card_cents.to_string(),
                r.ledger_count.to_string(),
                r.ledger_cash_cents.to_string(),
                r.ledger_card_cents.to_string(),
            ]
        })
        .collect();
    // The first four columns are text; the others are numbers.
    table(&SHIFT_COLUMNS, 4, &rows)
}

/// The deposit report's columns.
const DEPOSIT_COLUMNS: [&str; 7] = [
    "ITEM",
    "OUT",
    "RETURNED",
    "OUTSTANDING",
    "DEPOSITS OUT",
    "DEPOSITS BACK",
    "DEPOSITS OWED",
];

/// Replaced cards settled per round of [`settle_replaced_cards`].
pub const SETTLE_BATCH: u32 = 1_000;
/// Rounds of [`settle_replaced_cards`] per call, at most.
pub const SETTLE_ROUNDS_MAX: u32 = 100;

/// Moves what reached replaced cards since their replacement (offline sales that arrived
/// late) to their replacements; returns how many were settled. A pair that cannot be (its
/// replacement was itself replaced, or lost) is logged and left for a person.
pub async fn settle_replaced_cards<S: crate::ledger::store::AdminStore>(
    store: &S,
) -> Result<u64, crate::ledger::store::StoreError> {
    let mut settled = 0;
    let mut after = String::new();
    for _ in 0..SETTLE_ROUNDS_MAX {
        let pairs = store
            .replaced_cards_to_settle(after.clone(), SETTLE_BATCH)
            .await?;
        let full = pairs.len() == SETTLE_BATCH as usize;
        if let Some((last, _)) = pairs.last() {
            after = last.as_str().to_owned();
        }
        for (old, new) in pairs {
            // Settling: onto the card chosen when the replacement was made.
            match store.replace_card(old.clone(), new.clone(), true).await {
                Ok(r) if r.transaction_id.is_some() => settled += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%old, %new, error = %e, "a replaced card could not be settled");
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(settled)
}

/// What `card replace` did, for people.
pub fn format_card_replaced(
    old: &CardUid,
    new: &CardUid,
    r: &crate::ledger::store::CardReplaced,
    currency: &str,
) -> String {
    let Some(tx) = r.transaction_id else {
        return format!("card {old} was replaced by {new} before; nothing to settle\n");
    };
    let new = &r.to_card_uid;
    let what = if r.first {
        "replaced by"
    } else {
        "settled again to"
    };
    let created = if r.new_card_created {
        " (new card created)"
    } else {
        ""
    };
    format!(
        "card {old} {what} {new}{created}: {} {currency} and {} voucher units moved\n\
         transaction_id: {tx}\n",
        r.amount_cents, r.voucher_units
    )
}

/// What a housekeeping run did, for people: one line each.
pub fn format_housekeeping(report: &crate::ledger::housekeeping::HousekeepingReport) -> String {
    let mut out = format!(
        "decline keys purged: {}\nscan-log rows archived: {}\naudit-log rows archived: {}\n",
        report.keys_purged, report.scans_archived, report.audit_rows_archived
    );
    match &report.archive_file {
        Some(path) => out.push_str(&format!("archive file: {}\n", path.display())),
        None => out.push_str("archive file: none (nothing old enough)\n"),
    }
    if report.more_left {
        out.push_str("more rows are old enough: run it again\n");
    }
    out
}

/// Prints the deposit report as an aligned table, one row per returnable item and a total,
/// then the `deposits` account's balance (what is owed back).
pub fn format_deposits(report: &DepositReport) -> String {
    let mut rows: Vec<[String; 7]> = report
        .items
        .iter()
        .map(|d| {
            [
                d.product_id.clone(),
                d.out_quantity.to_string(),
                d.returned_quantity.to_string(),
                d.outstanding_quantity().to_string(),
                d.out_cents.to_string(),
                d.returned_cents.to_string(),
                d.outstanding_cents().to_string(),
            ]
        })
        .collect();
    let sum = |f: &dyn Fn(&DepositLine) -> i64| report.items.iter().map(f).sum::<i64>();
    rows.push([
        "TOTAL".to_owned(),
        sum(&|d| d.out_quantity).to_string(),
        sum(&|d| d.returned_quantity).to_string(),
        sum(&|d| d.outstanding_quantity()).to_string(),
        Cents::new(sum(&|d| d.out_cents.get())).to_string(),
        Cents::new(sum(&|d| d.returned_cents.get())).to_string(),
        Cents::new(sum(&|d| d.outstanding_cents().get())).to_string(),
    ]);
    format!(
        "{}deposits account: {} owed back\n",
        table(&DEPOSIT_COLUMNS, 1, &rows),
        report.account_cents
    )
}

/// An aligned text table: `headers`, then `rows`; the first `text_columns` columns are
/// aligned left, the others (numbers) right.
pub(crate) fn table<R: AsRef<[String]>>(
    headers: &[&str],
    text_columns: usize,
    rows: &[R],
) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i < text_columns {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        format!("{}\n", padded.join(COLUMN_GAP).trim_end())
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.as_ref().iter().map(String::as_str)));
    }
    out
}

/// The headers of `stripe events`.
const STRIPE_COLUMNS: [&str; 8] = [
    "RECEIVED", "EVENT", "TYPE", "OUTCOME", "SESSION", "CARD", "MOVED", "REASON",
];

/// Stripe events as a table, for `cashless ledger stripe events`.
pub fn format_stripe_events(events: &[StripeEventRecord]) -> String {
    if events.is_empty() {
        return "no Stripe events\n".to_owned();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.received_at.clone(),
                e.event_id.clone(),
                e.event_type.clone(),
                e.outcome.clone(),
                e.checkout_session_id.clone().unwrap_or_default(),
                e.card_uid.clone().unwrap_or_default(),
                e.amount_cents.map(|c| c.to_string()).unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    // Aligned left, all of them: the amount sits between two text columns.
    table(&STRIPE_COLUMNS, STRIPE_COLUMNS.len(), &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(token_sha256(&a).len(), 64);
        assert_ne!(token_sha256(&a), token_sha256(&b));
    }

    #[test]
    fn pins_are_digits_and_hashed_with_argon2() {
        assert!(hash_pin("12a4").is_err());
        assert!(hash_pin("123").is_err());
        assert!(hash_pin(&"1".repeat(13)).is_err());
        let h = hash_pin("1234").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
    }

    #[test]
    fn shift_tables_align_and_format_money() {
        assert_eq!(format_shifts(&[]), "no shift close-outs\n");
        let report = |terminal: &str, cash: i64, counted: i64, ledger_cash: i64| ShiftReport {
            shift_id: Uuid::nil(),
            terminal: terminal.to_owned(),
            staff_id: "s-17".to_owned(),
            opened_at: "2026-07-01T18:00:00.000Z".to_owned(),
            closed_at: "2026-07-02T02:00:00.000Z".to_owned(),
            count: 37,
            cash_cents: Cents::new(cash),
            card_cents: Cents::new(15_000),
            counted_cash_cents: Cents::new(counted),
            difference_cents: Cents::new(counted - cash),
            recorded_at: "2026-07-02T02:00:01.000Z".to_owned(),
            ledger_count: 36,
            ledger_cash_cents: Cents::new(ledger_cash),
            ledger_card_cents: Cents::new(15_000),
        };
        let text = format_shifts(&[
            report("cp-1", 42_000, 41_500, 40_000),
            report("checkpoint-north", 5, 1_000_005, 5),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TERMINAL          STAFF"), "{text}");
        assert!(
            lines[1].contains("420.00") && lines[1].contains("415.00"),
            "{text}"
        );
        assert!(
            lines[1].contains("-5.00") && lines[1].contains("400.00"),
            "{text}"
        );
        assert!(lines[2].contains("10000.00"), "{text}");
        // Numbers are right-aligned: every row ends at the same column.
        let ends: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{text}");
        let at = |line: &str, needle: &str| line.find(needle).map(|i| i + needle.len());
        assert_eq!(at(lines[1], "-5.00"), at(lines[2], "10000.00"), "{text}");
    }

    #[test]
    fn catalog_errors_name_the_product() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[[product]]\nid = \"beer\"\nname = \"Beer\"\nprice_cents = 450\npoint_of_sale = \"Bar\"\n\n[[product]]\nid = \"bad id\"\nname = \"X\"\nprice_cents = 1\npoint_of_sale = \"Bar\"\n").unwrap();
        let err = format!(
            "{:#}",
            read_catalog(&path, &TaxRates::untaxed()).unwrap_err()
        );
        assert!(err.contains("number 2") && err.contains("bad id"), "{err}");
        std::fs::write(&path, "[[product]]\nid = \"beer\"\nname = \"Beer\"\nprice_cents = -1\npoint_of_sale = \"Bar\"\n").unwrap();
        assert!(
            format!(
                "{:#}",
                read_catalog(&path, &TaxRates::untaxed()).unwrap_err()
            )
            .contains("price_cents")
        );
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog.example.toml");
        assert!(read_catalog(&example, &example_taxes()).unwrap().len() >= 5);
    }

    /// The `[taxes]` of `config/ledger.example.toml`.
    fn example_taxes() -> TaxRates {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledger.example.toml");
        crate::ledger::config::LedgerConfig::load(Some(&example), &Default::default())
            .unwrap()
            .taxes
    }

    #[test]
    fn a_product_names_a_configured_tax_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let product = |rate: &str| {
            format!(
                "[[product]]\nid = \"beer\"\nname = \"Beer\"\nprice_cents = 450\npoint_of_sale = \"Bar\"\ntax_rate = \"{rate}\"\n"
            )
        };
        std::fs::write(&path, product("reduced")).unwrap();
        let products = read_catalog(&path, &example_taxes()).unwrap();
        assert_eq!(
            products[0].product.tax_rate.as_ref().map(|r| r.as_str()),
            Some("reduced")
        );
        std::fs::write(&path, product("luxury")).unwrap();
        let err = format!("{:#}", read_catalog(&path, &example_taxes()).unwrap_err());
        assert!(
            err.contains("\"beer\"") && err.contains("tax_rate luxury") && err.contains("standard"),
            "{err}"
        );
        std::fs::write(&path, product("Reduced")).unwrap();
        let err = format!("{:#}", read_catalog(&path, &example_taxes()).unwrap_err());
        assert!(err.contains("tax_rate") && err.contains("Reduced"), "{err}");
    }
}
