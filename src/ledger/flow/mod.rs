//! The operation flow, named once: what the ledger checks and writes for each operation, in
//! which order, whatever the backend.
//!
//! A backend that decides in Rust reads through [`Reads`] (inside the transaction that will
//! write) and calls a decide function ([`ops::decide_operation`], [`ops::decide_shift`],
//! [`stripe::decide`]); it gets a [`Plan`]: an answer that writes nothing (a replay, a
//! refusal), or the writes to make and the answer to give once they are durable. The
//! arithmetic is `ledger::rules`'. A backend that decides inside its database (stored
//! procedures, one round trip per operation) implements the same contract in its own
//! language; `tests/ledger_conformance.rs` checks any backend against it, black-box.
//!
//! # The contract
//!
//! **Order of checks** of an order, a top-up or a void (each operation of a batch on its
//! own, in the batch's order):
//! 1. *terminal kind*: a bar does not top up, a checkpoint does not sell (403 `FORBIDDEN`),
//!    before anything else, even for a key the terminal already used;
//! 2. *idempotency key* (`client_request_id`, one key space for every operation and
//!    close-out): the same terminal with the same canonical request gets the stored outcome
//!    again (`replayed`); another request or another terminal gets
//!    `IDEMPOTENCY_KEY_REUSED`;
//! 3. *tombstone*: a key this terminal voided before it arrived gets `OPERATION_VOIDED`;
//! 4. *staff*: known, with a role for the action, and active when online (`FORBIDDEN`);
//! 5. *decision*: the rules (`decide_order`, `decide_recharge`, the void rules below);
//! 6. *writes*: card (next feed version), operation rows, postings, audit-log row;
//! 7. *key*: the idempotency record with the outcome;
//! 8. *`terminal_seq`*: the terminal's highest contiguous and highest seen sequence number.
//!
//! Steps 6 to 8 happen only for an approval or a stored decline (a business decline:
//! `ErrorCode::is_stored_decline`), which writes the audit-log row, the key and
//! `terminal_seq` but no card, operation row or posting. Every other answer (a refusal)
//! writes nothing at all. A close-out checks only key and staff (any role, active or not),
//! then writes its row, the audit-log row and its key; it has no `terminal_seq`.
//!
//! **Key policy.** The key of an applied operation or recorded close-out has a
//! `transaction_id` and no expiry: kept forever, so a retry years later never applies twice.
//! A stored decline's key has no `transaction_id` and expires after the retention
//! (`[idempotency] retention_days`); `purge_expired_keys` deletes it, and the same request
//! is then decided afresh. The stored outcome is [`crate::ledger::outcome`]'s stored form; a
//! decline keeps the request id of the request that first got it.
//!
//! **Voids.** Any terminal kind; staff known with any role, active or not. The target is
//! looked up by its key: a void or a close-out is refused (400, `target_client_request_id`);
//! an order or top-up applied by another terminal is refused (403); a target this terminal
//! already voided or tombstoned is refused (409 `ALREADY_VOIDED`); an applied target is
//! reversed in full (its postings reversed, the card may go below zero and is then blocked
//! for debt, the target row marked `voided_by`); an unknown or declined target gets a
//! tombstone (a `voids` row with status `tombstoned` and no card), which refuses the target
//! if it ever arrives from this terminal.
//!
//! **VAT.** Each order line is sold at its product's rate (the product's `tax_rate`, else
//! the configuration's default; a product not on sale here, in an offline order, at the
//! default): its gross (quantity × unit price) is split into net and tax by
//! `domain::split_gross` (per line, half away from zero), and the line records rate, net
//! and tax. A product naming a rate the configuration lacks is a `FlowError`.
//!
//! **Ages, open prices, vouchers.** After the lines' products and prices (an open price: 1
//! cent to its maximum), the card's age flag against each product's minimum age
//! (`AGE_RESTRICTED` online; flagged offline); then vouchers pay first
//! (`rules::voucher_split`: online the card's, offline what the terminal says it used,
//! flagged `VOUCHERS_OVERDRAWN` past the card's), and the balance check is on the money
//! left. What vouchers pay has no posting, no revenue and no VAT.
//!
//! **Deposits.** A line of a returnable item (a product with `returnable`: a cup) is a
//! deposit, not a sale: it records neither net nor tax, and its money goes to the
//! `deposits` liability account. A deposit return (`return`) credits the items' deposits
//! to the card (`rules::decide_return`); a void reverses it like a top-up (the terminal voids
//! a return whose answer it never got before it decides offline).
//!
//! **Voucher grants.** A checkpoint's supervisor gives a card voucher units
//! (`voucher_grant`, `rules::decide_voucher_grant`): the card is created if unknown, a lost
//! card and more than `CARD_VOUCHER_UNITS_MAX` units are refused online and applied offline
//! (flagged `LIMIT_EXCEEDED`). A grant has no posting: vouchers are never money. A void takes
//! the units back (the card's units may go below zero when they were already used).
//!
//! **Accounts.** A card's account is `card:<UID>`; an order posts `card:<UID>` −money and,
//! per rate in byte order of its name, `revenue:<point of sale>:<rate>` +net and
//! `vat:<rate>` +tax (amounts of zero are not posted), then `deposits` +its deposit lines'
//! money; a deposit return `card:<UID>` +amount and `deposits` −amount; a top-up `card:<UID>` +amount and `cash:<point of
//! sale>` or `card_payments:<point of sale>` −amount; a void the target's postings reversed;
//! Stripe credits and refunds post against `stripe_clearing`. Every transaction's postings
//! sum to zero.

pub mod ops;
pub mod stripe;

use crate::domain::{
    CardUid, Cents, ClientRequestId, ProductId, StaffId, TaxRate, TaxRateName, TaxRates,
    TerminalSeq,
};
use crate::ledger::caller::{StaffMember, Terminal};
use crate::ledger::outcome::{Outcome, StoredAnswer};
pub use crate::ledger::rules::CatalogEntry;
use crate::ledger::rules::{CardState, Limits};
use crate::protocol::api::{
    Flag, OrderRequest, PaymentMethod, RechargeRequest, ReturnRequest, ShiftCloseout, VoidRequest,
    VoucherGrantRequest,
};
use crate::protocol::codes::ErrorCode;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The liability of deposits on returnable items out with attendees: an order's deposit
/// lines credit it, a return debits it.
pub const DEPOSITS: &str = "deposits";

/// The account Stripe's money sits in until it is paid out: credits post against it.
pub const STRIPE_CLEARING: &str = "stripe_clearing";

/// A card's account.
pub fn card_account(uid: &CardUid) -> String {
    format!("card:{uid}")
}

/// The account an order's net amount at one VAT rate goes to.
pub fn revenue_account(point_of_sale: &str, rate: &TaxRateName) -> String {
    format!("revenue:{point_of_sale}:{rate}")
}

/// The account the VAT of one rate is owed from.
pub fn vat_account(rate: &TaxRateName) -> String {
    format!("vat:{rate}")
}

/// The account a top-up's money comes from.
pub fn funding_account(method: PaymentMethod, point_of_sale: &str) -> String {
    match method {
        PaymentMethod::Cash => format!("cash:{point_of_sale}"),
        PaymentMethod::Card => format!("card_payments:{point_of_sale}"),
    }
}

/// A flow that cannot go on: corrupted data or a bug (never a business outcome).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlowError(pub String);

impl FlowError {
    fn new(what: impl std::fmt::Display) -> FlowError {
        FlowError(what.to_string())
    }
}

/// A stored idempotency record, as the flow reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The fingerprint of the request that wrote it ([`ops::request_sha256`]).
    pub request_sha256: String,
    /// `order`, `recharge`, `return`, `voucher_grant`, `void` or `shift`.
    pub operation: String,
    /// The stored outcome.
    pub answer: StoredAnswer,
}

/// What a void's target was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// An order.
    Order,
    /// A top-up paid this way.
    Recharge(PaymentMethod),
    /// A deposit return.
    Return,
    /// A voucher grant.
    VoucherGrant,
}

impl TargetKind {
    /// The spelling of `voids.target_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Order => "order",
            TargetKind::Recharge(_) => "recharge",
            TargetKind::Return => "return",
            TargetKind::VoucherGrant => "voucher_grant",
        }
    }
}

/// An applied order or top-up that a void can reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Order or top-up.
    pub kind: TargetKind,
    /// Its transaction.
    pub transaction_id: Uuid,
    /// The terminal that applied it.
    pub terminal_id: Uuid,
    /// Where.
    pub point_of_sale: String,
    /// Its card.
    pub card_uid: CardUid,
    /// The money it moved: an order's money charged (its total less what vouchers paid), a
    /// top-up's or a deposit return's amount; 0 for a voucher grant.
    pub amount: Cents,
    /// The voucher units an order used, or a voucher grant gave (0 otherwise).
    pub vouchers: i64,
    /// Its postings, in the order they were written: a void posts each reversed.
    pub postings: Vec<(String, Cents)>,
}

/// What the key of a void's target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoidTarget {
    /// Never applied (unknown, or declined).
    NotApplied,
    /// A void.
    Void,
    /// A shift close-out.
    Shift,
    /// An applied order, top-up or deposit return.
    Applied(Target),
}

/// What the flow reads, inside the transaction that will write its plan.
pub trait Reads {
    /// The backend's error; a [`FlowError`] becomes one.
    type Error: From<FlowError>;
    /// The idempotency record of a key.
    fn stored_key(&self, crid: &ClientRequestId) -> Result<Option<StoredKey>, Self::Error>;
    /// True when `terminal_id` voided `crid` (a tombstone, or a void of it).
    fn voided_by(&self, crid: &ClientRequestId, terminal_id: Uuid) -> Result<bool, Self::Error>;
    /// A staff member.
    fn staff(&self, id: &StaffId) -> Result<Option<StaffMember>, Self::Error>;
    /// A card.
    fn card(&self, uid: &CardUid) -> Result<Option<CardState>, Self::Error>;
    /// A product at a point of sale, and whether it is on sale (`false`: disabled). A
    /// disabled product is no catalog entry for deciding a sale, but an offline sale of it
    /// is still booked at its VAT rate, and its money as a deposit if it is returnable.
    fn catalog_product(
        &self,
        point_of_sale: &str,
        product: &ProductId,
    ) -> Result<Option<(CatalogEntry, bool)>, Self::Error>;
    /// What a void's target key names.
    fn void_target(&self, crid: &ClientRequestId) -> Result<VoidTarget, Self::Error>;
}

/// Who asks, when, and the settings the flow needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The authenticated terminal.
    pub terminal: &'a Terminal,
    /// This request's id (the answer's and the audit log's).
    pub request_id: &'a str,
    /// One `now` for the whole job.
    pub now: DateTime<Utc>,
    /// Top-up limits.
    pub limits: Limits,
    /// How long a decline's key is kept.
    pub retention_days: i64,
    /// The VAT rates.
    pub taxes: &'a TaxRates,
}

/// A new transaction id. Time-ordered (UUIDv7), so the indexes on transaction ids grow at
/// their right edge instead of dirtying a random page for every insert.
pub fn new_transaction_id() -> Uuid {
    Uuid::now_v7()
}

/// What to do: answer without writing, or write and then answer.
#[derive(Debug)]
pub enum Plan<'a> {
    /// A replay or a refusal: nothing is written.
    Answer(Box<Outcome>),
    /// The writes of an approval or a stored decline, and its answer.
    Write(Box<Writes<'a>>),
}

/// Everything one operation writes, in one transaction.
#[derive(Debug)]
pub struct Writes<'a> {
    /// The card's new state (next feed version), if it changes.
    pub card: Option<CardWrite>,
    /// The operation's own rows.
    pub row: Row<'a>,
    /// Postings under the log entry's `transaction_id`, summing to zero.
    pub postings: Vec<(String, Cents)>,
    /// The audit log's row.
    pub log: LogEntry,
    /// The idempotency record.
    pub key: KeyRecord,
    /// The terminal's sequence number to track, if the operation has one.
    pub terminal_seq: Option<TerminalSeq>,
    /// The answer, given once the writes are durable.
    pub outcome: Outcome,
}

/// A card's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardWrite {
    /// The card.
    pub uid: CardUid,
    /// Insert (it did not exist) rather than update.
    pub create: bool,
    /// Its new state.
    pub next: CardState,
}

/// Before and after of an applied balance change, for the operation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balances {
    /// Balance before.
    pub previous: Cents,
    /// Balance after.
    pub next: Cents,
    /// Remarks.
    pub flags: Vec<Flag>,
}

/// One line of an order row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// The catalog price when the terminal charged another one (`None`: the same, or the
    /// product is not on sale here).
    pub catalog_price_differs: Option<Cents>,
    /// Quantity times unit price: the line's gross amount.
    pub line_total: Cents,
    /// The VAT rate it was sold at.
    pub tax_rate: TaxRate,
    /// `line_total` without its tax.
    pub net: Cents,
    /// The tax in `line_total`.
    pub tax: Cents,
    /// How many of the line's units vouchers paid (`net + tax` is the rest's gross).
    pub voucher_quantity: i64,
    /// The voucher units they took.
    pub voucher_units: i64,
    /// A returnable item's line: the money that is a deposit, not a sale (`net` and `tax`
    /// are then 0); `None` for a sale.
    pub deposit: Option<Cents>,
}

/// The operation's own rows.
#[derive(Debug)]
pub enum Row<'a> {
    /// A stored decline: no operation row.
    None,
    /// `bar_orders` and `bar_order_items`.
    Order {
        /// The transaction.
        transaction_id: Uuid,
        /// The request.
        request: &'a OrderRequest,
        /// Balances and flags.
        balances: Balances,
        /// Per line, in the request's order.
        lines: Vec<OrderLine>,
        /// Voucher units used.
        vouchers_used: i64,
        /// Money charged.
        money: Cents,
    },
    /// `recharges`.
    Recharge {
        /// The transaction.
        transaction_id: Uuid,
        /// The request.
        request: &'a RechargeRequest,
        /// Balances and flags.
        balances: Balances,
    },
    /// `deposit_returns` and `deposit_return_items`.
    Return {
        /// The transaction.
        transaction_id: Uuid,
        /// The request.
        request: &'a ReturnRequest,
        /// Balances and flags.
        balances: Balances,
        /// Per line: the catalog's deposit when the terminal credited another.
        catalog_deposits: Vec<Option<Cents>>,
    },
    /// `voucher_grants`.
    VoucherGrant {
        /// The transaction.
        transaction_id: Uuid,
        /// The request.
        request: &'a VoucherGrantRequest,
        /// The card's voucher units before and after.
        voucher_units: (i64, i64),
        /// Remarks.
        flags: Vec<Flag>,
    },
    /// `voids`, and the target marked `voided_by` when it was applied.
    Void {
        /// The void's transaction.
        transaction_id: Uuid,
        /// The request.
        request: &'a VoidRequest,
        /// The reversed target (kind and transaction), or `None` for a tombstone.
        target: Option<(TargetKind, Uuid)>,
        /// The card, money back to it and its balances, when reversed.
        reversal: Option<(CardUid, Cents, Balances)>,
        /// The voucher units given back to the card: a voided order's (positive), a voided
        /// grant's (negative).
        vouchers_returned: i64,
    },
    /// `shift_closeouts`.
    Shift {
        /// The close-out's id.
        shift_id: Uuid,
        /// The request.
        request: &'a ShiftCloseout,
        /// Counted minus expected cash.
        difference: Cents,
    },
}

/// One row of the audit trail written by a terminal's request (actor `terminal:<name>`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Who.
    pub staff_id: StaffId,
    /// `order`, `recharge`, `return`, `voucher_grant`, `void` or `shift`.
    pub operation: &'static str,
    /// The key.
    pub client_request_id: ClientRequestId,
    /// The transaction, when applied.
    pub transaction_id: Option<Uuid>,
    /// The card, when known.
    pub card_uid: Option<CardUid>,
    /// Money, when it applies.
    pub amount_cents: Option<Cents>,
    /// `approved`, `declined`, `voided`, `tombstoned`, `recorded`.
    pub outcome: &'static str,
    /// The decline's code.
    pub error_code: Option<ErrorCode>,
    /// More, as JSON.
    pub details: Option<serde_json::Value>,
}

/// An idempotency record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key.
    pub client_request_id: ClientRequestId,
    /// `order`, `recharge`, `return`, `voucher_grant`, `void` or `shift`.
    pub operation: &'static str,
    /// The request's fingerprint.
    pub request_sha256: String,
    /// Set for an applied operation or a recorded close-out: kept forever.
    pub transaction_id: Option<Uuid>,
    /// Set for a stored decline: purged after this time.
    pub expires_at: Option<DateTime<Utc>>,
    /// The outcome's stored form.
    pub answer: StoredAnswer,
}
