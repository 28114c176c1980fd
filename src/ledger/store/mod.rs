//! Storage behind narrow interfaces, one trait per job: [`OperationStore`] (the money
//! operations and close-outs), [`FeedStore`] (what terminals pull, and their scans),
//! [`AdminStore`] (the admin commands' registrations), [`ReportStore`] (audit and shift
//! reports) and [`StripeStore`] (Stripe events). [`LedgerStore`] is all of them, for callers
//! that need several.
//!
//! [`Store`] is the one way to open whichever backend `--database` names
//! ([`Store::open`]); it implements every trait by handing each call to its backend: SQLite
//! ([`sqlite::SqliteStore`], deciding in Rust through `crate::ledger::flow`) or PostgreSQL
//! ([`postgres::PgStore`], deciding in stored procedures). Every backend keeps
//! the operation flow's contract (`crate::ledger::flow`): an operation is applied atomically
//! (card, operation rows, postings, audit log, idempotency record and sequence tracking in
//! one transaction, or nothing), with the typed outcome of `crate::ledger::outcome`;
//! `tests/ledger_conformance.rs` checks each backend against it.

pub mod postgres;
pub mod sqlite;

use crate::domain::{AgeFlag, CardUid, Cents, MinAge, ProductId, StaffId, TaxRateName, TaxRates};
use crate::ledger::caller::{Actor, Terminal};
use crate::ledger::config::{DatabaseUrl, PostgresSettings};
use crate::ledger::outcome::Outcome;
pub use crate::ledger::outcome::StripeOutcome;
use crate::ledger::report::{ReportData, ReportQuery};
use crate::ledger::rules::Limits;
use crate::protocol::api::{
    Operation, ReaderState, Scan, ShiftCloseout, StaffRole, TerminalKind, TerminalStatusReport,
};
use chrono::{DateTime, NaiveDate, Utc};
use postgres::PgStore;
use sqlite::{SqliteOptions, SqliteStore};
use std::future::Future;
use uuid::Uuid;

mod cards;
pub use cards::{
    CardFeedPage, CardKeyRecord, CardReplaced, CardView, card_key_details, replaced_stays_blocked,
    replaced_takes_no_vouchers,
};
mod operators;
pub use operators::{
    LoginFailure, NewOperator, NewSession, OperatorChange, OperatorListing, OperatorLogin,
    OperatorSession, OperatorStore,
};
mod pages_read;
pub use pages_read::{
    CardEvent, CardHistory, CardMoney, CardScan, OverviewData, QuarterTotal, TakingKind,
};

/// The stored form of a bearer token (hex SHA-256): tokens are long and random, so a fast
/// hash is enough, and the token itself is never stored.
pub fn token_sha256(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A Stripe event as `stripe_events` keeps it, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEventRecord {
    /// When it arrived.
    pub received_at: String,
    /// `evt_...`.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// What was done (`credited`, `refused`, `refund_waiting`, ...).
    pub outcome: String,
    /// The checkout session.
    pub checkout_session_id: Option<String>,
    /// The card credited or debited, when known.
    pub card_uid: Option<String>,
    /// The money this event moved on the card: a credit, or a reversal (negative); `None`
    /// when it moved none.
    pub amount_cents: Option<Cents>,
    /// Why it was refused.
    pub reason: Option<String>,
}

/// A storage failure. Business outcomes (declines) are not errors: they are [`Outcome`]s.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy, full or read-only: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupted data (500).
    #[error("internal storage error: {0}")]
    Internal(String),
    /// An admin request that conflicts with what is stored (a duplicate name, ...).
    #[error("{0}")]
    Conflict(String),
    /// An admin request for something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database's schema is newer than this program's: a newer version migrated it.
    #[error(
        "the database's schema is at version {found}, newer than this program's {known}: a newer \
         cashless migrated it; run that version (or a newer one) against it, this one does not \
         downgrade a schema"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest this program knows.
        known: i64,
    },
}

/// The outcome of one operation of a batch that could not be stored (the others go on):
/// `DATABASE_ERROR` (503) when the database is unavailable, else `SERVER_ERROR` (500); both
/// retryable, neither stored. Logged here, with the operation's key.
pub(crate) fn not_stored(e: &StoreError, op: &Operation, request_id: &str) -> Outcome {
    tracing::error!(error = %e, client_request_id = %op.client_request_id(), "operation failed");
    let code = match e {
        StoreError::Unavailable(_) => crate::protocol::codes::ErrorCode::DatabaseError,
        _ => crate::protocol::codes::ErrorCode::ServerError,
    };
    Outcome::declined(
        crate::protocol::api::ApiError::new(code, "the operation could not be stored; retry"),
        request_id,
    )
}

/// A product on sale.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Product {
    /// Id.
    pub product_id: ProductId,
    /// Name on the screen.
    pub name: String,
    /// Price.
    pub price_cents: Cents,
    /// Grouping on the screen.
    pub category: Option<String>,
    /// Its VAT rate's name; `None`: the configuration's `default_rate`.
    pub tax_rate: Option<TaxRateName>,
    /// The age it requires, if any.
    pub min_age: Option<MinAge>,
    /// Set for an open price: staff type the unit price, 1 cent to this; `price_cents` is
    /// then 0.
    pub open_price_max_cents: Option<Cents>,
    /// Voucher units one unit costs when vouchers pay it; `None`: money only.
    pub voucher_price: Option<i64>,
    /// A returnable item (a cup): its price is a deposit, credited back when it returns.
    pub returnable: bool,
    /// The returnable item it comes in (a product of the same point of sale with
    /// `returnable`): the terminal adds one per unit sold.
    pub deposit_product_id: Option<ProductId>,
}

/// A product as the catalog feed shows it, its VAT rate resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatalogProduct {
    /// Id.
    pub product_id: ProductId,
    /// Name on the screen.
    pub name: String,
    /// Price, VAT included.
    pub price_cents: Cents,
    /// Grouping on the screen.
    pub category: Option<String>,
    /// The VAT rate it is sold at.
    pub tax_rate: TaxRateName,
    /// That rate in basis points (1900: 19 %).
    pub tax_rate_basis_points: u32,
    /// The age it requires, if any.
    pub min_age: Option<MinAge>,
    /// Set for an open price: staff type the unit price, 1 cent to this; `price_cents` is
    /// then 0.
    pub open_price_max_cents: Option<Cents>,
    /// Voucher units one unit costs when vouchers pay it; `None`: money only.
    pub voucher_price: Option<i64>,
    /// A returnable item (a cup): its price is a deposit, credited back when it returns.
    pub returnable: bool,
    /// The returnable item it comes in (a product of the same point of sale with
    /// `returnable`): the terminal adds one per unit sold.
    pub deposit_product_id: Option<ProductId>,
}

impl CatalogProduct {
    /// `product` with its rate resolved in `taxes`; an error when it names a rate `taxes`
    /// lacks (the configuration lost a rate its products still name).
    pub fn resolve(product: Product, taxes: &TaxRates) -> Result<CatalogProduct, StoreError> {
        let rate = taxes
            .resolve(product.tax_rate.as_ref().map(TaxRateName::as_str))
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "product {} names tax rate {}, which [taxes] lacks",
                    product.product_id,
                    product.tax_rate.as_ref().map_or("", TaxRateName::as_str)
                ))
            })?;
        Ok(CatalogProduct {
            product_id: product.product_id,
            name: product.name,
            price_cents: product.price_cents,
            category: product.category,
            tax_rate: rate.name,
            tax_rate_basis_points: rate.basis_points,
            min_age: product.min_age,
            open_price_max_cents: product.open_price_max_cents,
            voucher_price: product.voucher_price,
            returnable: product.returnable,
            deposit_product_id: product.deposit_product_id,
        })
    }
}

/// A staff member as the staff feed shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StaffRecord {
    /// Id.
    pub staff_id: StaffId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: StaffRole,
    /// Inactive staff cannot log in.
    pub active: bool,
    /// argon2 PHC string.
    pub pin_hash: String,
}

/// A change to a product at a point of sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductChange {
    /// A new price, VAT included (happy hour); not for an open-price product. Offline
    /// sales made at the old price land as sold (flagged).
    Price(Cents),
    /// On sale again (`true`), or no more: off the catalog, refused online; offline sales
    /// made before a terminal learned of it land as sold.
    Active(bool),
}

impl ProductChange {
    /// The audit log's operation.
    pub fn operation(&self) -> &'static str {
        match self {
            ProductChange::Price(_) => "product_set_price",
            ProductChange::Active(true) => "product_enable",
            ProductChange::Active(false) => "product_disable",
        }
    }
}

/// The refusal of a change to a product the point of sale does not have.
pub fn unknown_product(product_id: &ProductId, point_of_sale: &str) -> StoreError {
    StoreError::NotFound(format!(
        "product {product_id} is unknown at point of sale {point_of_sale:?}"
    ))
}

/// Refuses a price for an open-price product (`open`: its maximum), whose price staff type.
pub fn check_product_change(
    product_id: &ProductId,
    open: Option<i64>,
    change: ProductChange,
) -> Result<(), StoreError> {
    match (change, open) {
        (ProductChange::Price(_), Some(max)) => Err(StoreError::Conflict(format!(
            "product {product_id} has an open price (staff type it, up to {max} cents): \
             change its maximum with `product add --open-price-max-cents`"
        ))),
        _ => Ok(()),
    }
}

/// The audit log's details of a product change.
pub fn product_change_details(
    point_of_sale: &str,
    product_id: &ProductId,
    change: ProductChange,
) -> serde_json::Value {
    let mut details = serde_json::json!({
        "point_of_sale": point_of_sale,
        "product_id": product_id.as_str(),
    });
    if let ProductChange::Price(price) = change {
        details["price_cents"] = serde_json::json!(price.get());
    }
    details
}

/// One product as `product list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductListing {
    /// Where it is sold.
    pub point_of_sale: String,
    /// Its id.
    pub product_id: String,
    /// Its name.
    pub name: String,
    /// Its price (for an open price, the most staff may type).
    pub price_cents: i64,
    /// An open price's maximum.
    pub open_price_max_cents: Option<i64>,
    /// On sale.
    pub active: bool,
}

/// A change to a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalChange {
    /// Its token is refused from now on, for good (a stolen or lost device). What it
    /// journaled can still be brought in with `ledger import`.
    Revoke,
    /// A new token (its SHA-256): the old one is refused from now on. Refused for a revoked
    /// terminal.
    TokenSha256(String),
}

impl TerminalChange {
    /// The audit log's operation.
    pub fn operation(&self) -> &'static str {
        match self {
            TerminalChange::Revoke => "terminal_revoke",
            TerminalChange::TokenSha256(_) => "terminal_rotate_token",
        }
    }
}

/// Whether `change` writes anything to the terminal `name`, found `active` (`None`: no such
/// terminal): revoking a revoked terminal changes nothing; a revoked terminal gets no new
/// token (a stolen device stays out; the replacement is registered under a new name).
pub fn terminal_change_applies(
    name: &str,
    active: Option<bool>,
    change: &TerminalChange,
) -> Result<bool, StoreError> {
    match (active, change) {
        (None, _) => Err(StoreError::NotFound(format!(
            "terminal {name:?} is unknown"
        ))),
        (Some(false), TerminalChange::TokenSha256(_)) => Err(StoreError::Conflict(format!(
            "terminal {name:?} is revoked for good; register the device again under a new name \
             (terminal add)"
        ))),
        (Some(false), TerminalChange::Revoke) => Ok(false),
        (Some(true), _) => Ok(true),
    }
}

/// A change to a staff member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaffChange {
    /// May log in and work online again (`true`), or no more (`false`). Offline operations
    /// made before a terminal learned of it are applied as they were made.
    Active(bool),
    /// A new PIN (argon2 PHC string); never logged.
    PinHash(String),
}

impl StaffChange {
    /// The audit log's operation.
    pub fn operation(&self) -> &'static str {
        match self {
            StaffChange::Active(true) => "staff_enable",
            StaffChange::Active(false) => "staff_disable",
            StaffChange::PinHash(_) => "staff_set_pin",
        }
    }
}

/// What an upload of scans did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ScanReceipt {
    /// Newly stored.
    pub accepted: usize,
    /// Already stored before.
    pub duplicates: usize,
}

/// A new terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTerminal {
    /// Unique name.
    pub name: String,
    /// Bar or checkpoint.
    pub kind: TerminalKind,
    /// Point of sale.
    pub point_of_sale: String,
    /// SHA-256 (hex) of the bearer token; the token itself is never stored.
    pub token_sha256: String,
}

/// A new staff member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStaff {
    /// Id.
    pub staff_id: StaffId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: StaffRole,
    /// argon2 PHC string of the PIN.
    pub pin_hash: String,
}

/// A product to create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductUpsert {
    /// Point of sale.
    pub point_of_sale: String,
    /// The product.
    pub product: Product,
}

/// The audit-log details of a product's creation or change (both backends).
pub fn product_log_details(p: &ProductUpsert) -> serde_json::Value {
    serde_json::json!({
        "point_of_sale": p.point_of_sale,
        "product_id": p.product.product_id.as_str(),
        "price_cents": p.product.price_cents.get(),
        "tax_rate": p.product.tax_rate.as_ref().map(TaxRateName::as_str),
        "min_age": p.product.min_age.map(MinAge::years),
        "open_price_max_cents": p.product.open_price_max_cents.map(Cents::get),
        "voucher_price": p.product.voucher_price,
        "returnable": p.product.returnable,
        "deposit_product_id": p.product.deposit_product_id.as_ref().map(ProductId::as_str),
    })
}

/// What `audit` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Cards checked.
    pub cards: i64,
    /// Postings checked.
    pub postings: i64,
    /// Distinct transactions among the postings.
    pub transactions: i64,
    /// Sum of all card balances.
    pub card_balance_total_cents: i64,
    /// Every discrepancy, one sentence each. Empty: the books balance.
    pub discrepancies: Vec<String>,
}

/// `ledger audit`'s recount of the report's quarter-hour sums (`table`:
/// `till_quarter_sales` or `product_quarter_sales`) from the standing orders' lines, in the
/// SQL of SQLite or of PostgreSQL: one row per group and measure that disagree, with what it
/// is about, the sum kept and the sum recounted.
pub(crate) fn report_sums_recount_sql(table: &str, postgres: bool) -> String {
    let (quarter, start, not_deposit, id, order) = if postgres {
        (
            "to_char(quarter_of(o.created_at) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            "to_char(s.quarter_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            "NOT COALESCE(i.deposit, false)",
            "::text",
            " COLLATE \"C\"",
        )
    } else {
        (
            "substr(o.created_at, 1, 14) || printf('%02d', substr(o.created_at, 15, 2) / 15 * 15) \
             || ':00.000Z'",
            "s.quarter_start",
            "COALESCE(i.deposit, 0) = 0",
            "",
            "",
        )
    };
    let (kept, counted) = if table == "product_quarter_sales" {
        (
            format!("s.terminal_id{id} || ' ' || s.product_id || ' ' || s.tax_rate"),
            format!("o.terminal_id{id} || ' ' || i.product_id || ' ' || COALESCE(i.tax_rate, '')"),
        )
    } else {
        (
            format!(
                "s.terminal_id{id} || ' ' || s.point_of_sale || ' ' || s.staff_id || ' ' || s.tax_rate"
            ),
            format!(
                "o.terminal_id{id} || ' ' || o.point_of_sale || ' ' || o.staff_id || ' ' \
                 || COALESCE(i.tax_rate, '')"
            ),
        )
    };
    let measure = |prefix: &str| {
        format!(
            "CASE m.name WHEN 'lines' THEN {prefix}lines WHEN 'quantity' THEN {prefix}quantity \
             WHEN 'net_cents' THEN {prefix}net ELSE {prefix}tax END"
        )
    };
    format!(
        "WITH g AS (
             SELECT k, SUM(kl) AS k_lines, SUM(kq) AS k_quantity, SUM(kn) AS k_net,
                    SUM(kt) AS k_tax, SUM(cl) AS c_lines, SUM(cq) AS c_quantity,
                    SUM(cn) AS c_net, SUM(ct) AS c_tax
             FROM (SELECT {start} || ' ' || {kept} AS k, s.lines AS kl, s.quantity AS kq,
                          s.net_cents AS kn, s.tax_cents AS kt, 0 AS cl, 0 AS cq, 0 AS cn,
                          0 AS ct
                   FROM {table} s
                   UNION ALL
                   SELECT {quarter} || ' ' || {counted}, 0, 0, 0, 0, 1, i.quantity,
                          COALESCE(i.net_cents, i.line_total_cents), COALESCE(i.tax_cents, 0)
                   FROM bar_orders o JOIN bar_order_items i ON i.transaction_id = o.transaction_id
                   WHERE o.voided_by IS NULL AND {not_deposit}) AS x
             GROUP BY k)
         SELECT what, kept, counted FROM (
             SELECT '{table} ' || g.k || ' ' || m.name AS what,
                    CAST({kept_v} AS BIGINT) AS kept, CAST({counted_v} AS BIGINT) AS counted
             FROM g CROSS JOIN (SELECT 'lines' AS name UNION ALL SELECT 'quantity'
                                UNION ALL SELECT 'net_cents' UNION ALL SELECT 'tax_cents') AS m
             WHERE {kept_v} <> {counted_v}) AS d
         ORDER BY what{order}",
        kept_v = measure("k_"),
        counted_v = measure("c_"),
    )
}

/// The audit's sentence for a sum of the report's that its recount contradicts.
pub(crate) fn sums_recounted(what: String, kept: i64, counted: i64) -> String {
    format!("{what}: kept as {kept} but the standing orders' lines give {counted}")
}

/// One shift close-out as headquarters sees it: the terminal's totals and count, and the
/// ledger's own totals of that terminal's top-ups in the shift: those with the close-out's
/// `first_seq..=last_seq` of the terminal's sequence numbers, or (a close-out without them)
/// those between `opened_at` and `closed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftReport {
    /// The ledger's id for the close-out.
    pub shift_id: Uuid,
    /// The terminal's name.
    pub terminal: String,
    /// Whose shift.
    pub staff_id: String,
    /// When the shift began (RFC 3339, as stored).
    pub opened_at: String,
    /// When it was closed.
    pub closed_at: String,
    /// The terminal's count of top-ups.
    pub count: i64,
    /// The terminal's cash top-ups: the cash expected in the drawer.
    pub cash_cents: Cents,
    /// The terminal's card top-ups.
    pub card_cents: Cents,
    /// The cash counted in the drawer.
    pub counted_cash_cents: Cents,
    /// Counted minus expected.
    pub difference_cents: Cents,
    /// When the ledger recorded the close-out.
    pub recorded_at: String,
    /// Top-ups of this terminal the ledger holds for the shift (by the terminal's
    /// `terminal_seq`, else its `created_at`; voided ones left out), computed now: offline
    /// top-ups still being replayed are missing until they arrive.
    pub ledger_count: i64,
    /// Their cash total.
    pub ledger_cash_cents: Cents,
    /// Their card total.
    pub ledger_card_cents: Cents,
}

/// The money operations and shift close-outs (the flow's contract in `crate::ledger::flow`).
pub trait OperationStore: Clone + Send + Sync + 'static {
    /// The active terminal holding this bearer token, if any.
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Option<Terminal>, StoreError>> + Send;

    /// Applies operations one after another, each atomically and idempotently, and returns
    /// one outcome per operation in order. An answer is returned only after it is durable.
    fn apply(
        &self,
        terminal: Terminal,
        request_id: String,
        operations: Vec<Operation>,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;

    /// Records a shift close-out atomically and idempotently (close-out row, audit log row
    /// and idempotency record in one transaction): approved with its answer, the stored
    /// answer again for the same request, or a refusal that wrote nothing (unknown staff,
    /// key reused). An answer is returned only after it is durable.
    fn record_shift(
        &self,
        terminal: Terminal,
        request_id: String,
        shift: ShiftCloseout,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;
}

/// What terminals pull (cards, catalog, staff) and the scans they upload.
pub trait FeedStore: Clone + Send + Sync + 'static {
    /// One card.
    fn card(
        &self,
        uid: CardUid,
    ) -> impl Future<Output = Result<Option<CardView>, StoreError>> + Send;

    /// Cards changed after `since_version`, oldest first, at most `limit`.
    fn card_feed(
        &self,
        since_version: i64,
        limit: u32,
    ) -> impl Future<Output = Result<CardFeedPage, StoreError>> + Send;

    /// Active products at a point of sale, their VAT rates resolved.
    fn catalog(
        &self,
        point_of_sale: String,
    ) -> impl Future<Output = Result<Vec<CatalogProduct>, StoreError>> + Send;

    /// All staff, for offline login.
    fn staff(&self) -> impl Future<Output = Result<Vec<StaffRecord>, StoreError>> + Send;

    /// Stores scans, ignoring ones already stored.
    fn record_scans(
        &self,
        terminal: Terminal,
        scans: Vec<Scan>,
    ) -> impl Future<Output = Result<ScanReceipt, StoreError>> + Send;

    /// Keeps a terminal's status report, replacing its previous one; `received_at` is the
    /// ledger's clock (the last contact). Durable when it returns.
    fn record_status(
        &self,
        terminal: Terminal,
        report: TerminalStatusReport,
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Registrations and upkeep: terminals, staff, products, cards, keys, health.
pub trait AdminStore: Clone + Send + Sync + 'static {
    /// The terminal with this name, active or revoked, if any (for imports of a terminal's
    /// journal: what a revoked terminal journaled is still brought in by an operator).
    fn terminal_by_name(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Option<Terminal>, StoreError>> + Send;

    /// Registers a terminal.
    fn add_terminal(&self, t: NewTerminal)
    -> impl Future<Output = Result<Uuid, StoreError>> + Send;

    /// Registers a staff member.
    fn add_staff(&self, s: NewStaff) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Revokes a terminal (again: nothing changes) or gives it a new token, audited; every
    /// ledger process refuses the old token in every request that arrives after this returns
    /// (authentication reads the database on every request).
    fn change_terminal(
        &self,
        name: String,
        change: TerminalChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Changes a product at a point of sale (a new price, off or back on sale), audited;
    /// terminals learn it with the catalog at their next sync.
    fn change_product(
        &self,
        point_of_sale: String,
        product_id: ProductId,
        change: ProductChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every product at every point of sale, on sale or not (at most `limit`).
    fn product_list(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ProductListing>, StoreError>> + Send;

    /// Changes a staff member (disabled, enabled, a new PIN), audited; terminals learn it
    /// from the staff list at their next sync.
    fn change_staff(
        &self,
        staff_id: StaffId,
        change: StaffChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates or updates a product.
    fn upsert_products(
        &self,
        products: Vec<ProductUpsert>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The VAT rates products name (each once, in byte order), active or not: each must be
    /// in the configuration's `[taxes]`.
    fn product_tax_rates(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Blocks a card as lost (`true`) or lifts that block (`false`), audited as the command
    /// line's change.
    fn set_card_lost(
        &self,
        uid: CardUid,
        lost: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.set_card_lost_by(Actor::Cli, uid, lost)
    }

    /// [`AdminStore::set_card_lost`], audited as `actor`'s change.
    fn set_card_lost_by(
        &self,
        actor: Actor,
        uid: CardUid,
        lost: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that card `uid` was issued with master key version `key_version` by
    /// `terminal` (a card the ledger has not seen is created with nothing on it), with the
    /// next feed version and an audit-log row (`card_key`), so that every terminal learns it
    /// from the card feed. The same version again writes nothing; an older one than recorded,
    /// or a replaced card, is a [`StoreError::Conflict`] that writes nothing
    /// (`rules::card_key_change`).
    fn record_card_key(
        &self,
        terminal: Terminal,
        uid: CardUid,
        key_version: u8,
    ) -> impl Future<Output = Result<CardKeyRecord, StoreError>> + Send;

    /// Sets a known card's age flag (`None` clears it), with the next feed version and an
    /// audit-log row.
    fn set_card_age_flag(
        &self,
        uid: CardUid,
        age_flag: Option<AgeFlag>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Grants `units` vouchers to a card (created with nothing on it if unknown), with the
    /// next feed version and an audit-log row; returns the card's voucher units after.
    fn grant_vouchers(
        &self,
        uid: CardUid,
        units: i64,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Sets a card's daily voucher allowance (created with nothing on it if unknown), with
    /// the next feed version and an audit-log row (`voucher_daily`): `units` (1 to
    /// `VOUCHER_GRANT_UNITS_MAX`) for the rest of festival day `day` and every day after
    /// (`rules::daily_vouchers_set`); 0 ends the allowance. Returns the card's voucher units
    /// after.
    fn set_daily_vouchers(
        &self,
        uid: CardUid,
        units: i64,
        day: NaiveDate,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Starts festival day `day`: every card with a daily allowance last given for an
    /// earlier day gets exactly its allowance, with the next feed version and an audit-log
    /// row each (`voucher_day`). Idempotent (a card already given `day` is left alone);
    /// returns how many cards it renewed.
    fn start_voucher_day(
        &self,
        day: NaiveDate,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes the keys of declines past their retention, at most `limit` of them (one short
    /// transaction: call again until it returns less); returns how many. Applied
    /// operations' keys are kept for ever, so that a late replay is always recognised.
    fn purge_expired_keys(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Rows of `log` with ids above `after_id`, in id order, at most `limit`, each saying
    /// whether it was written before `before` (`due`): what housekeeping archives next. The
    /// log's newest row is never among them: it stays, so that SQLite never hands its id out
    /// again (an emptied table would start again at 1).
    fn archive_candidates(
        &self,
        log: ArchivedLog,
        before: DateTime<Utc>,
        after_id: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ArchivedRow>, StoreError>> + Send;

    /// Removes exactly the rows `ids` of `log`, which an archive file holds durably, in one
    /// transaction; for the audit log, what they proved of cards' voucher units is carried
    /// to `archived_voucher_moves` in the same transaction. Returns how many it removed.
    fn remove_archived(
        &self,
        log: ArchivedLog,
        ids: Vec<i64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Replaces card `old` by `new` (created if unknown): `old`'s balance (with postings)
    /// and voucher units move to `new`, and its daily allowance when `new` has none; `old`
    /// is blocked as lost for good. Run again for the same pair, it settles what reached
    /// `old` since (offline sales made before terminals learned of the block), moving
    /// nothing when nothing did. One transaction, audited.
    /// A first replacement onto a card that already holds money or units is refused unless
    /// `merge` (see [`rules::merge_refusal`](crate::ledger::rules::merge_refusal)).
    /// Audited as the command line's change.
    fn replace_card(
        &self,
        old: CardUid,
        new: CardUid,
        merge: bool,
    ) -> impl Future<Output = Result<CardReplaced, StoreError>> + Send {
        self.replace_card_by(Actor::Cli, old, new, merge)
    }

    /// [`AdminStore::replace_card`], audited as `actor`'s change.
    fn replace_card_by(
        &self,
        actor: Actor,
        old: CardUid,
        new: CardUid,
        merge: bool,
    ) -> impl Future<Output = Result<CardReplaced, StoreError>> + Send;

    /// Replaced cards after `after` (by UID) that hold a balance or voucher units again
    /// (offline sales that arrived after the replacement), with their replacements: at
    /// most `limit`, by UID.
    fn replaced_cards_to_settle(
        &self,
        after: String,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(CardUid, CardUid)>, StoreError>> + Send;

    /// Answers when the database does.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Answers when the database takes writes: SQLite's writer thread runs an empty job
    /// (no fsync: nothing changes), PostgreSQL answers a query as for [`AdminStore::ping`].
    /// What feeds the service manager's watchdog.
    fn ping_writer(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One returnable item in the deposit report: what went out with orders (not voided), what
/// came back in deposit returns (not voided), and what is still out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DepositLine {
    /// The returnable item's product id (the same item at every point of sale).
    pub product_id: String,
    /// Items sold with orders.
    pub out_quantity: i64,
    /// Their deposits.
    pub out_cents: Cents,
    /// Items handed back.
    pub returned_quantity: i64,
    /// The deposits credited for them.
    pub returned_cents: Cents,
}

impl DepositLine {
    /// Items still out with attendees (negative: more came back than went out, e.g. cups
    /// of another festival).
    pub fn outstanding_quantity(&self) -> i64 {
        self.out_quantity.saturating_sub(self.returned_quantity)
    }

    /// The deposits still owed for them.
    pub fn outstanding_cents(&self) -> Cents {
        self.out_cents
            .checked_sub(self.returned_cents)
            .unwrap_or(Cents::ZERO)
    }
}

/// The deposits on returnable items: per item, and the `deposits` account's balance, which
/// `audit` proves equal to the lines' outstanding total.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DepositReport {
    /// Per returnable item, by product id.
    pub items: Vec<DepositLine>,
    /// The sum of the `deposits` account's postings: what is owed back.
    pub account_cents: Cents,
}

/// What headquarters reads: the books' audit and the shift reports.
pub trait ReportStore: Clone + Send + Sync + 'static {
    /// Proves the books balance, or lists every discrepancy.
    fn audit(&self) -> impl Future<Output = Result<AuditReport, StoreError>> + Send;

    /// The `newest` shift close-outs (of the terminal with this name, if given), by their
    /// close, oldest close first, with the ledger's own top-up totals for each (read through
    /// the top-ups' index by terminal and sequence number).
    fn shift_reports(
        &self,
        terminal_name: Option<String>,
        newest: u32,
    ) -> impl Future<Output = Result<Vec<ShiftReport>, StoreError>> + Send;

    /// The deposits on returnable items: out, returned and outstanding per item.
    fn deposit_report(&self) -> impl Future<Output = Result<DepositReport, StoreError>> + Send;

    /// The fleet's sync state and the cards blocked for debt, for `/metrics` (at most
    /// `terminals_max` terminals, by name).
    fn fleet(
        &self,
        terminals_max: u32,
    ) -> impl Future<Output = Result<FleetSnapshot, StoreError>> + Send;

    /// The database connections of this process, now.
    fn pool_status(&self) -> PoolStatus;

    /// A card's history, newest first: at most `limit` audit-log rows naming it (every
    /// operation, approved or declined, Stripe's, the desk's) and at most `limit` scans;
    /// each list one longer when there are more. Two index range reads.
    fn card_history(
        &self,
        uid: CardUid,
        limit: u32,
    ) -> impl Future<Output = Result<CardHistory, StoreError>> + Send;

    /// Headquarters' overview: the sums of `quarter_totals` for the quarter hours starting
    /// in `[from, to)` per quarter, point of sale, kind and mode (at most `rows_max`; one more
    /// says there are more), and the money on cards with the `debtors_max` cards deepest in
    /// debt. One index range read of the sums, one scan of `cards`, one index read of the
    /// cards in debt; nothing that grows with the number of operations.
    fn overview(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows_max: u32,
        debtors_max: u32,
    ) -> impl Future<Output = Result<OverviewData, StoreError>> + Send;

    /// The report (`ledger::report`), every section in one snapshot: the sales (standing
    /// orders' lines, not deposits, made in the range, grouped by each dimension's key and
    /// the VAT rate, in byte order), then each of `report::sections::specs`, at most
    /// `query.limit + 1` rows per section (one more than the limit says there are more);
    /// with `query.only`, that section alone.
    fn report(
        &self,
        query: ReportQuery,
    ) -> impl Future<Output = Result<ReportData, StoreError>> + Send;
}

/// What `/metrics` reads from the database at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// Cards blocked because offline sales took them below zero.
    pub cards_blocked_for_debt: i64,
    /// Every terminal's sync state, by name.
    pub terminals: Vec<TerminalSync>,
}

/// One terminal's sync state as the ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalSync {
    /// Its registered name.
    pub name: String,
    /// Bar or checkpoint.
    pub kind: TerminalKind,
    /// Its point of sale.
    pub point_of_sale: String,
    /// Its token is accepted (`false` once revoked).
    pub active: bool,
    /// When its last operation arrived.
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Every `terminal_seq` up to this one has arrived.
    pub highest_contiguous_seq: i64,
    /// The highest `terminal_seq` that has arrived.
    pub highest_seen_seq: i64,
    /// `terminal_seq` values below the highest seen that have not arrived.
    pub missing_seqs: i64,
    /// Its last status report, if it ever sent one.
    pub status: Option<StatusSeen>,
}

/// A terminal's last status report, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSeen {
    /// The ledger's clock when it arrived.
    pub received_at: DateTime<Utc>,
    /// The terminal's clock when it was sent.
    pub reported_at: DateTime<Utc>,
    /// Operations not yet acknowledged.
    pub waiting: i64,
    /// Online attempts without an answer.
    pub in_doubt: i64,
    /// Operations refused for good.
    pub rejected: i64,
    /// Age of the oldest unacknowledged operation when it was sent, in seconds.
    pub oldest_unsent_age_s: Option<i64>,
    /// The last card-feed cursor it applied.
    pub card_feed_cursor: String,
    /// Its reader's state.
    pub reader_state: ReaderState,
    /// Its software version.
    pub software_version: String,
}

impl StatusSeen {
    /// The terminal's clock minus the ledger's, in milliseconds, when the report arrived.
    pub fn clock_offset_ms(&self) -> i64 {
        (self.reported_at - self.received_at).num_milliseconds()
    }
}

/// The database connections of one ledger process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// At most this many.
    pub max_connections: usize,
    /// Open now.
    pub open_connections: usize,
    /// Open and unused now (PostgreSQL's pool; unknown for SQLite's fixed connections).
    pub idle_connections: Option<usize>,
    /// Requests waiting for a connection (PostgreSQL) or jobs queued for the writer (SQLite).
    pub waiting: usize,
}

/// Stripe webhook events.
pub trait StripeStore: Clone + Send + Sync + 'static {
    /// Applies a verified Stripe event atomically and idempotently: a paid session is
    /// credited once per session and per event (card, `stripe_recharges`, postings against
    /// `stripe_clearing`, audit log and `stripe_events` in one transaction); a refund
    /// reverses what its cumulative `amount_refunded` adds, once per event; a refused session
    /// or refund is recorded for an operator. Returns what was done; durable when it returns.
    fn apply_stripe(
        &self,
        request_id: String,
        event: crate::ledger::stripe::StripeEvent,
    ) -> impl Future<Output = Result<StripeOutcome, StoreError>> + Send;

    /// Stripe events, newest first, at most `limit`; with `attention`, only those an
    /// operator must act on (`refused`: paid but not credited, or a refund in another
    /// currency, not applied; `refund_waiting`: a refund without its credit).
    fn stripe_events(
        &self,
        attention: bool,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StripeEventRecord>, StoreError>> + Send;
}

/// Everything the ledger needs from a database: every job's trait. Implemented for every
/// type that implements them all.
pub trait LedgerStore:
    OperationStore + FeedStore + AdminStore + ReportStore + StripeStore + OperatorStore
{
}

impl<T: OperationStore + FeedStore + AdminStore + ReportStore + StripeStore + OperatorStore>
    LedgerStore for T
{
}

/// What opening a store needs besides the database's name.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Top-up limits.
    pub limits: Limits,
    /// How long a decline's idempotency key is kept.
    pub retention_days: i64,
    /// The PostgreSQL pool's limits and timeouts (unused by SQLite).
    pub postgres: PostgresSettings,
    /// The VAT rates an order's lines are split by.
    pub taxes: TaxRates,
}

/// A database that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A URL the backend cannot use.
    #[error("cannot use the ledger database {database}")]
    BadUrl {
        /// The database, as named (without a password).
        database: String,
        /// Why.
        #[source]
        source: postgres::BadUrl,
    },
    /// The backend failed to open it.
    #[error("cannot open the ledger database {database}")]
    Failed {
        /// The database, as named.
        database: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// The logs `cashless ledger housekeeping` archives to files and removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchivedLog {
    /// `nfc_scan_log`, by when the ledger received each scan (`received_at`: the ledger's
    /// clock, not the terminal's).
    Scans,
    /// `app_transaction_log`, by `occurred_at`.
    Audit,
}

impl ArchivedLog {
    /// Both, in the order housekeeping archives them.
    pub const ALL: [ArchivedLog; 2] = [ArchivedLog::Scans, ArchivedLog::Audit];

    /// The table.
    pub fn table(self) -> &'static str {
        match self {
            ArchivedLog::Scans => "nfc_scan_log",
            ArchivedLog::Audit => "app_transaction_log",
        }
    }
}

/// One log row bound for an archive file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRow {
    /// Its id in its table (`scan_id`, `log_id`).
    pub id: i64,
    /// Written before the cut-off: to be archived.
    pub due: bool,
    /// The whole row as a JSON object, columns by name.
    pub json: String,
}

/// Whichever backend `--database` names; every caller opens the store through
/// [`Store::open`]. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// An SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

impl Store {
    /// Opens (creating and migrating if needed) the database `database` names.
    pub async fn open(database: &DatabaseUrl, options: StoreOptions) -> Result<Store, OpenError> {
        match database {
            DatabaseUrl::Sqlite(path) => SqliteStore::open(SqliteOptions {
                path: path.clone(),
                limits: options.limits,
                retention_days: options.retention_days,
                taxes: options.taxes,
            })
            .map(Store::Sqlite)
            .map_err(|source| OpenError::Failed {
                database: database.to_string(),
                source,
            }),
            DatabaseUrl::Postgres(url) => PgStore::open(url, options).await.map(Store::Postgres),
        }
    }
}

/// Implements a trait's methods for [`Store`] by handing each call to the backend.
macro_rules! delegate {
    ($trait:ident { $($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }) => {
        impl $trait for Store {
            $(async fn $name(&self, $($arg: $ty),*) -> Result<$ret, StoreError> {
                match self {
                    Store::Sqlite(s) => s.$name($($arg),*).await,
                    Store::Postgres(s) => s.$name($($arg),*).await,
                }
            })*
        }
    };
}

delegate!(OperationStore {
    authenticate(token: &str) -> Option<Terminal>;
    apply(terminal: Terminal, request_id: String, operations: Vec<Operation>) -> Vec<Outcome>;
    record_shift(terminal: Terminal, request_id: String, shift: ShiftCloseout) -> Outcome;
});

delegate!(FeedStore {
    card(uid: CardUid) -> Option<CardView>;
    card_feed(since_version: i64, limit: u32) -> CardFeedPage;
    catalog(point_of_sale: String) -> Vec<CatalogProduct>;
    staff() -> Vec<StaffRecord>;
    record_scans(terminal: Terminal, scans: Vec<Scan>) -> ScanReceipt;
    record_status(terminal: Terminal, report: TerminalStatusReport, received_at: DateTime<Utc>) -> ();
});

delegate!(OperatorStore {
    add_operator(actor: Actor, operator: NewOperator) -> Uuid;
    change_operator(actor: Actor, name: String, change: OperatorChange) -> ();
    operators(limit: u32) -> Vec<OperatorListing>;
    operator_login(name: String) -> Option<OperatorLogin>;
    begin_login(operator_id: Uuid, now: DateTime<Utc>, lock_after: i64, lock_for_s: i64) -> Option<LoginFailure>;
    open_session(operator_id: Uuid, session: NewSession) -> ();
    session(session_sha256: String, now: DateTime<Utc>) -> Option<OperatorSession>;
    close_session(session_sha256: String) -> ();
});

delegate!(AdminStore {
    terminal_by_name(name: String) -> Option<Terminal>;
    add_terminal(t: NewTerminal) -> Uuid;
    add_staff(s: NewStaff) -> ();
    change_terminal(name: String, change: TerminalChange) -> ();
    change_staff(staff_id: StaffId, change: StaffChange) -> ();
    change_product(point_of_sale: String, product_id: ProductId, change: ProductChange) -> ();
    product_list(limit: u32) -> Vec<ProductListing>;
    upsert_products(products: Vec<ProductUpsert>) -> ();
    product_tax_rates() -> Vec<String>;
    set_card_lost_by(actor: Actor, uid: CardUid, lost: bool) -> ();
    set_card_age_flag(uid: CardUid, age_flag: Option<AgeFlag>) -> ();
    record_card_key(terminal: Terminal, uid: CardUid, key_version: u8) -> CardKeyRecord;
    grant_vouchers(uid: CardUid, units: i64) -> i64;
    set_daily_vouchers(uid: CardUid, units: i64, day: NaiveDate) -> i64;
    start_voucher_day(day: NaiveDate) -> u64;
    purge_expired_keys(limit: u32) -> u64;
    archive_candidates(log: ArchivedLog, before: DateTime<Utc>, after_id: i64, limit: u32) -> Vec<ArchivedRow>;
    remove_archived(log: ArchivedLog, ids: Vec<i64>) -> u64;
    replace_card_by(actor: Actor, old: CardUid, new: CardUid, merge: bool) -> CardReplaced;
    replaced_cards_to_settle(after: String, limit: u32) -> Vec<(CardUid, CardUid)>;
    ping() -> ();
    ping_writer() -> ();
});

impl ReportStore for Store {
    async fn audit(&self) -> Result<AuditReport, StoreError> {
        match self {
            Store::Sqlite(s) => s.audit().await,
            Store::Postgres(s) => s.audit().await,
        }
    }

    async fn shift_reports(
        &self,
        terminal_name: Option<String>,
        newest: u32,
    ) -> Result<Vec<ShiftReport>, StoreError> {
        match self {
            Store::Sqlite(s) => s.shift_reports(terminal_name, newest).await,
            Store::Postgres(s) => s.shift_reports(terminal_name, newest).await,
        }
    }

    async fn deposit_report(&self) -> Result<DepositReport, StoreError> {
        match self {
            Store::Sqlite(s) => s.deposit_report().await,
            Store::Postgres(s) => s.deposit_report().await,
        }
    }

    async fn fleet(&self, terminals_max: u32) -> Result<FleetSnapshot, StoreError> {
        match self {
            Store::Sqlite(s) => s.fleet(terminals_max).await,
            Store::Postgres(s) => s.fleet(terminals_max).await,
        }
    }

    fn pool_status(&self) -> PoolStatus {
        match self {
            Store::Sqlite(s) => s.pool_status(),
            Store::Postgres(s) => s.pool_status(),
        }
    }

    async fn report(&self, query: ReportQuery) -> Result<ReportData, StoreError> {
        match self {
            Store::Sqlite(s) => s.report(query).await,
            Store::Postgres(s) => s.report(query).await,
        }
    }

    async fn card_history(&self, uid: CardUid, limit: u32) -> Result<CardHistory, StoreError> {
        match self {
            Store::Sqlite(s) => s.card_history(uid, limit).await,
            Store::Postgres(s) => s.card_history(uid, limit).await,
        }
    }

    async fn overview(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows_max: u32,
        debtors_max: u32,
    ) -> Result<OverviewData, StoreError> {
        match self {
            Store::Sqlite(s) => s.overview(from, to, rows_max, debtors_max).await,
            Store::Postgres(s) => s.overview(from, to, rows_max, debtors_max).await,
        }
    }
}

delegate!(StripeStore {
    apply_stripe(request_id: String, event: crate::ledger::stripe::StripeEvent) -> StripeOutcome;
    stripe_events(attention: bool, limit: u32) -> Vec<StripeEventRecord>;
});
