//! The ledger API's vocabulary: validated requests, answers, error bodies and the API's limits.
//!
//! Requests are deserialized from raw JSON into these types and then checked by
//! `validate()`; after that every field is known to be in range. Only `api` turns them into
//! HTTP, only `store` into SQL.

use crate::domain::{
    AgeFlag, CardUid, Cents, ClientRequestId, MoneyOverflow, ProductId, StaffId, TerminalSeq,
};
use crate::protocol::codes::ErrorCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// Lines in one order, at most.
pub const ORDER_ITEMS_MAX: usize = 50;
/// Units of one product in one line, at most.
pub const QUANTITY_MAX: i64 = 99;
/// The highest price of one unit (10,000.00).
pub const UNIT_PRICE_CENTS_MAX: i64 = 1_000_000;
/// The highest order total (1,000,000.00): a sanity bound far above any bar order.
pub const ORDER_TOTAL_CENTS_MAX: i64 = 100_000_000;
/// The highest top-up amount accepted at all; the configured limits are lower.
pub const RECHARGE_AMOUNT_CENTS_MAX: i64 = 10_000_000;
/// Voucher units one unit of a product costs, at most.
pub const VOUCHER_PRICE_MAX: i64 = 100;
/// Voucher units one offline order says it used, at most.
pub const ORDER_VOUCHER_UNITS_MAX: i64 = 10_000;
/// Voucher units one grant gives, at most.
pub const VOUCHER_GRANT_UNITS_MAX: i64 = 1_000;
/// Voucher units a card holds after an online grant, at most (`LIMIT_EXCEEDED` beyond).
pub const CARD_VOUCHER_UNITS_MAX: i64 = 10_000;
/// Lines in one deposit return, at most.
pub const RETURN_ITEMS_MAX: usize = 10;
/// The highest deposit return (10,000.00): far above any handful of cups.
pub const RETURN_AMOUNT_CENTS_MAX: i64 = 1_000_000;
/// Operations in one batch, at most.
pub const BATCH_OPERATIONS_MAX: usize = 500;
/// Scans in one upload, at most.
pub const SCANS_MAX: usize = 1000;
/// The highest cash or card total of one shift, and the highest counted cash
/// (10,000,000.00): a sanity bound far above any drawer or any shift's top-ups.
pub const SHIFT_TOTAL_CENTS_MAX: i64 = 1_000_000_000;
/// Top-ups in one shift, at most: a sanity bound far above what one checkpoint can take.
pub const SHIFT_COUNT_MAX: i64 = 1_000_000;
/// Cards in one feed page: default and maximum.
pub const FEED_LIMIT_DEFAULT: u32 = 1000;
/// See [`FEED_LIMIT_DEFAULT`].
pub const FEED_LIMIT_MAX: u32 = 10_000;

/// Formats a time the one way the ledger writes times: RFC 3339, UTC, milliseconds.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Wire enums are read from a string first, so that a wrong JSON type (null, a number) is a
/// type error naming the field, not a syntax error of the whole body.
macro_rules! from_wire_string {
    ($name:ident, $($text:literal => $variant:ident),+) => {
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                match text.as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown variant `{other}`, expected one of {}",
                        [$(concat!("`", $text, "`")),+].join(", ")
                    )),
                }
            }
        }
    };
}

from_wire_string!(Mode, "online" => Online, "offline" => Offline);
from_wire_string!(PaymentMethod, "cash" => Cash, "card" => Card);
from_wire_string!(VoidReason, "in_doubt" => InDoubt, "customer_refund" => CustomerRefund, "staff_error" => StaffError);

/// `online`: the terminal waits for the ledger's decision. `offline`: the operation already
/// happened at the terminal and is being synchronised; it is applied even past the balance
/// and limits, and refused only for an invalid request (400), authentication or permission
/// (401/403), key reuse (422) or a tombstone (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Mode {
    /// The ledger decides.
    Online,
    /// The terminal decided; the ledger records.
    Offline,
}

impl Mode {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    }
}

/// How a top-up was paid at the checkpoint: `cash` into the drawer, or a bank `card` on a
/// separate payment terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum PaymentMethod {
    /// Cash into the drawer.
    Cash,
    /// A bank card on a separate payment terminal.
    Card,
}

impl PaymentMethod {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
        }
    }
}

/// Why an operation is voided: `in_doubt` (the terminal never got an answer and cancels the
/// attempt), `customer_refund` (money given back to the attendee) or `staff_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum VoidReason {
    /// The terminal never got an answer and cancels the attempt.
    InDoubt,
    /// Money given back to the attendee.
    CustomerRefund,
    /// Staff charged the wrong thing.
    StaffError,
}

impl VoidReason {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VoidReason::InDoubt => "in_doubt",
            VoidReason::CustomerRefund => "customer_refund",
            VoidReason::StaffError => "staff_error",
        }
    }
}

/// What a terminal is for: `bar` terminals sell (and take returnable items back),
/// `checkpoint` terminals top cards up, `return` stations only take returnable items back.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TerminalKind {
    /// Sells at a bar.
    Bar,
    /// Tops up cards.
    Checkpoint,
    /// A return station: takes returnable items (cups) back and credits their deposits.
    Return,
}

impl TerminalKind {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalKind::Bar => "bar",
            TerminalKind::Checkpoint => "checkpoint",
            TerminalKind::Return => "return",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<TerminalKind> {
        match text {
            "bar" => Some(TerminalKind::Bar),
            "checkpoint" => Some(TerminalKind::Checkpoint),
            "return" => Some(TerminalKind::Return),
            _ => None,
        }
    }
}

/// A staff member's role. Orders need `bar` or `supervisor`; top-ups `cashier` or
/// `supervisor`; voids and shift close-outs any role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    /// Sells at a bar.
    Bar,
    /// Tops up at a checkpoint.
    Cashier,
    /// May do everything.
    Supervisor,
}

impl StaffRole {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Bar => "bar",
            StaffRole::Cashier => "cashier",
            StaffRole::Supervisor => "supervisor",
        }
    }

    /// Whether this role sells or tops up at a terminal of `kind` (bar staff at bars,
    /// cashiers at checkpoints, supervisors at both): the rule the ledger applies to
    /// orders and top-ups, used by the TUI to list who may log in.
    pub fn may_work_at(self, kind: TerminalKind) -> bool {
        matches!(
            (self, kind),
            (StaffRole::Supervisor, _)
                | (StaffRole::Bar, TerminalKind::Bar | TerminalKind::Return)
                | (StaffRole::Cashier, TerminalKind::Checkpoint)
        )
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<StaffRole> {
        match text {
            "bar" => Some(StaffRole::Bar),
            "cashier" => Some(StaffRole::Cashier),
            "supervisor" => Some(StaffRole::Supervisor),
            _ => None,
        }
    }
}

/// Whether a card may be used. `blocked`: lost (blocked by an operator; undone only by an
/// operator) or in debt (balance below zero after offline sales or a reversed top-up; undone
/// by any credit that brings the balance back to zero or above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CardStatus {
    /// Usable.
    Active,
    /// Refused online; see [`BlockReason`].
    Blocked,
}

impl CardStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Blocked => "blocked",
        }
    }
}

/// Why a card is blocked: debt clears itself with a top-up, a lost card only by an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// The balance went below zero after offline sales or a reversed top-up.
    Debt,
    /// Reported lost or stolen.
    Lost,
}

impl BlockReason {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::Debt => "debt",
            BlockReason::Lost => "lost",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<BlockReason> {
        match text {
            "debt" => Some(BlockReason::Debt),
            "lost" => Some(BlockReason::Lost),
            _ => None,
        }
    }
}

/// Remarks attached to an applied operation: `NEGATIVE_BALANCE` the card went below zero
/// (offline sale, or a reversed top-up) and is blocked for debt; `PRICE_DIFFERS_FROM_CATALOG`
/// an offline order line's product or price differs from the catalog (recorded, not refused);
/// `CARD_CREATED` the card was unknown and has been created; `LIMIT_EXCEEDED` an offline
/// top-up or deposit return was applied beyond a configured limit, or an offline voucher
/// grant beyond `CARD_VOUCHER_UNITS_MAX`; `AGE_RESTRICTED` an offline order sold a
/// product the card's age flag forbids (the terminal did not know the flag yet);
/// `VOUCHERS_OVERDRAWN` an offline order used more vouchers than the card had;
/// `STAFF_INACTIVE` an offline order was made by a staff member disabled by the time it
/// arrived (it stands: the goods were served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Flag {
    /// The card's balance is below zero after this operation.
    NegativeBalance,
    /// An offline order used prices that differ from the current catalog.
    PriceDiffersFromCatalog,
    /// The card was unknown and has been created.
    CardCreated,
    /// An offline top-up or deposit return went past a configured limit, or an offline
    /// voucher grant past `CARD_VOUCHER_UNITS_MAX`.
    LimitExceeded,
    /// An offline order sold a product the card's age flag forbids.
    AgeRestricted,
    /// An offline order used more vouchers than the card had: its voucher units are below
    /// zero.
    VouchersOverdrawn,
    /// An offline order made by a staff member who was disabled by the time it arrived.
    StaffInactive,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    /// The catalog's product id.
    pub product_id: ProductId,
    /// Units of the product: 1 to 99 (`QUANTITY_MAX`).
    #[schema(minimum = 1, maximum = 99, example = 2)]
    pub quantity: i64,
    /// The unit price the terminal charged, in cents: 0 to 1,000,000
    /// (`UNIT_PRICE_CENTS_MAX`).
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000, example = 450)]
    pub unit_price_cents: Cents,
}

/// A bar order (`POST /v1/orders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "client_request_id": "5b0f7c7e-3c51-4a3e-9a53-6f5f3e1f2a10", "terminal_seq": 42,
    "card_uid": "04A1B2C3D4E5F6",
    "items": [{"product_id": "beer-05", "quantity": 2, "unit_price_cents": 450}],
    "total_cents": 900, "staff_id": "s-17", "created_at": "2026-07-01T21:14:03Z",
    "mode": "online"
})))]
pub struct OrderRequest {
    /// Idempotency key.
    pub client_request_id: ClientRequestId,
    /// The terminal's gapless sequence number.
    pub terminal_seq: TerminalSeq,
    /// The paying card.
    pub card_uid: CardUid,
    /// 1 to 50 lines (`ORDER_ITEMS_MAX`).
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderItem>,
    /// The order's total in cents, 1 to 100,000,000 (`ORDER_TOTAL_CENTS_MAX`): must equal
    /// the sum of `quantity` × `unit_price_cents` over the lines (400 `INVALID_REQUEST`,
    /// field `total_cents`, otherwise, including on overflow).
    #[schema(value_type = i64, minimum = 1, maximum = 100_000_000, example = 900)]
    pub total_cents: Cents,
    /// Who sold.
    pub staff_id: StaffId,
    /// When the terminal recorded it (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Online or offline.
    pub mode: Mode,
    /// Offline orders only (400 on an online one): the voucher units the terminal used, 0
    /// to 10,000 (`ORDER_VOUCHER_UNITS_MAX`); they pay the lines in order, each unit of a
    /// product with a voucher price while they cover it, and `total_cents` less what they
    /// paid is charged in money. Absent: none. Online, the ledger decides: the card's
    /// vouchers pay first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub voucher_units: Option<i64>,
}

/// A top-up at a checkpoint (`POST /v1/recharges`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "client_request_id": "0d6b8a52-7f0e-4a43-8f4b-2a1c9e0b7d31", "terminal_seq": 7,
    "card_uid": "04A1B2C3D4E5F6", "amount_cents": 5000, "payment_method": "cash",
    "staff_id": "s-3", "created_at": "2026-07-01T19:02:11Z", "mode": "online"
})))]
pub struct RechargeRequest {
    /// Idempotency key.
    pub client_request_id: ClientRequestId,
    /// The terminal's gapless sequence number.
    pub terminal_seq: TerminalSeq,
    /// The card receiving the money.
    pub card_uid: CardUid,
    /// The amount to credit in cents, 1 to 10,000,000 (`RECHARGE_AMOUNT_CENTS_MAX`). This
    /// range is absolute (400 outside it); the configured per-top-up and maximum-balance
    /// limits give 422 `LIMIT_EXCEEDED` for online top-ups.
    #[schema(value_type = i64, minimum = 1, maximum = 10_000_000, example = 5000)]
    pub amount_cents: Cents,
    /// Cash or card.
    pub payment_method: PaymentMethod,
    /// Who took the money.
    pub staff_id: StaffId,
    /// When the terminal recorded it (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Online or offline.
    pub mode: Mode,
    /// What staff saw on the holder's ID: `under_16` or `under_18`, set on the card with the
    /// top-up (replacing any flag it had). Absent: the card's flag is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_flag: Option<AgeFlag>,
}

/// One line of a deposit return: returnable items handed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnItem {
    /// The returnable item's product id (a product with `returnable`).
    pub product_id: ProductId,
    /// Items handed back: 1 to 99 (`QUANTITY_MAX`).
    #[schema(minimum = 1, maximum = 99, example = 2)]
    pub quantity: i64,
    /// The deposit the terminal credits per item, in cents: 0 to 1,000,000
    /// (`UNIT_PRICE_CENTS_MAX`). Online it must be the catalog's price of the item.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000, example = 200)]
    pub unit_deposit_cents: Cents,
}

/// Returnable items (cups) handed back at a bar or a return station: their deposits are
/// credited to the card (`POST /v1/returns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "client_request_id": "3f6c1a2b-8d4e-4f70-b1a2-9c8d7e6f5a41", "terminal_seq": 12,
    "card_uid": "04A1B2C3D4E5F6",
    "items": [{"product_id": "cup", "quantity": 2, "unit_deposit_cents": 200}],
    "amount_cents": 400, "staff_id": "s-17", "created_at": "2026-07-01T23:40:00Z",
    "mode": "online"
})))]
pub struct ReturnRequest {
    /// Idempotency key.
    pub client_request_id: ClientRequestId,
    /// The terminal's gapless sequence number.
    pub terminal_seq: TerminalSeq,
    /// The card receiving the deposits.
    pub card_uid: CardUid,
    /// 1 to 10 lines (`RETURN_ITEMS_MAX`).
    #[schema(min_items = 1, max_items = 10)]
    pub items: Vec<ReturnItem>,
    /// The amount credited in cents, 1 to 1,000,000 (`RETURN_AMOUNT_CENTS_MAX`): the sum of
    /// `quantity` × `unit_deposit_cents` over the lines (400 `INVALID_REQUEST`, field
    /// `amount_cents`, otherwise).
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000, example = 400)]
    pub amount_cents: Cents,
    /// Who took the items back.
    pub staff_id: StaffId,
    /// When the terminal recorded it (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Online or offline.
    pub mode: Mode,
}

/// Voucher units given to a card at a checkpoint (`POST /v1/voucher-grants`): staff and
/// artist drinks, granted by a supervisor. Vouchers are never money: no posting, no balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "client_request_id": "9e1d2c3b-4a59-4b68-8c7d-6e5f4a3b2c1d", "terminal_seq": 8,
    "card_uid": "04A1B2C3D4E5F6", "units": 4, "staff_id": "s-1",
    "created_at": "2026-07-01T17:05:00Z", "mode": "online"
})))]
pub struct VoucherGrantRequest {
    /// Idempotency key.
    pub client_request_id: ClientRequestId,
    /// The terminal's gapless sequence number.
    pub terminal_seq: TerminalSeq,
    /// The card receiving the vouchers.
    pub card_uid: CardUid,
    /// Voucher units to give, 1 to 1,000 (`VOUCHER_GRANT_UNITS_MAX`).
    #[schema(minimum = 1, maximum = 1000, example = 4)]
    pub units: i64,
    /// The supervisor who granted them.
    pub staff_id: StaffId,
    /// When the terminal recorded it (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Online or offline.
    pub mode: Mode,
}

/// The reversal of an order or top-up by its `client_request_id` (`POST /v1/voids`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "client_request_id": "c2a4d3f1-9b8e-4f57-a0c6-1e2d3c4b5a69", "terminal_seq": 43,
    "target_client_request_id": "5b0f7c7e-3c51-4a3e-9a53-6f5f3e1f2a10", "staff_id": "s-17",
    "reason": "in_doubt", "created_at": "2026-07-01T21:14:09Z"
})))]
pub struct VoidRequest {
    /// Idempotency key of the void itself.
    pub client_request_id: ClientRequestId,
    /// The terminal's gapless sequence number.
    pub terminal_seq: TerminalSeq,
    /// The `client_request_id` of the order or top-up to cancel: not the void's own, and not
    /// a void or a shift close-out (400, field `target_client_request_id`).
    pub target_client_request_id: ClientRequestId,
    /// Who voids.
    pub staff_id: StaffId,
    /// Why.
    pub reason: VoidReason,
    /// When the terminal recorded it (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/shifts`: a terminal's close-out of one staff member's shift. The terminal
/// counts its own top-ups of the shift; staff count the cash drawer. Recorded as it comes:
/// it changes no card balance and writes no postings (cash in a drawer is not a card's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "client_request_id": "7d3e9a10-4b2c-4f61-9e8a-0c5b6d7e8f90", "staff_id": "s-17",
    "opened_at": "2026-07-01T18:00:00Z", "closed_at": "2026-07-02T02:00:00Z",
    "cash_cents": 42000, "card_cents": 15000, "count": 37, "counted_cash_cents": 41500,
    "first_seq": 1204, "last_seq": 1262
})))]
pub struct ShiftCloseout {
    /// Idempotency key.
    pub client_request_id: ClientRequestId,
    /// Whose shift.
    pub staff_id: StaffId,
    /// When the shift began.
    pub opened_at: DateTime<Utc>,
    /// When it was closed; not before `opened_at` (400, field `closed_at`, otherwise).
    pub closed_at: DateTime<Utc>,
    /// The terminal's cash top-ups of the shift, net of voids (the cash expected in the
    /// drawer): 0 to 1,000,000,000 (`SHIFT_TOTAL_CENTS_MAX`).
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub cash_cents: Cents,
    /// The terminal's card top-ups of the shift, net of voids: 0 to 1,000,000,000
    /// (`SHIFT_TOTAL_CENTS_MAX`).
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub card_cents: Cents,
    /// How many top-ups: 0 to 1,000,000 (`SHIFT_COUNT_MAX`).
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub count: i64,
    /// The cash staff counted in the drawer: 0 to 1,000,000,000 (`SHIFT_TOTAL_CENTS_MAX`).
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub counted_cash_cents: Cents,
    /// The shift's first journal entry on the terminal: its `terminal_seq`. Sent with
    /// `last_seq` or not at all (400, field `first_seq`, otherwise); absent (or null) for a
    /// shift without any journal entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<TerminalSeq>,
    /// The shift's last journal entry on the terminal: not below `first_seq`, and sent with
    /// it (400, field `last_seq`, otherwise). The ledger compares its own top-ups of the
    /// terminal in `first_seq..=last_seq` with the totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<TerminalSeq>,
}

/// A money-changing operation, alone or inside a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Operation {
    /// A bar order.
    Order(OrderRequest),
    /// A checkpoint top-up.
    Recharge(RechargeRequest),
    /// A void or refund.
    Void(VoidRequest),
    /// A deposit return.
    Return(ReturnRequest),
    /// Voucher units granted at a checkpoint.
    #[serde(rename = "voucher_grant")]
    VoucherGrant(VoucherGrantRequest),
}

impl Operation {
    /// The idempotency key.
    pub fn client_request_id(&self) -> ClientRequestId {
        match self {
            Operation::Order(r) => r.client_request_id,
            Operation::Recharge(r) => r.client_request_id,
            Operation::Void(r) => r.client_request_id,
            Operation::Return(r) => r.client_request_id,
            Operation::VoucherGrant(r) => r.client_request_id,
        }
    }

    /// The sequence number.
    pub fn terminal_seq(&self) -> TerminalSeq {
        match self {
            Operation::Order(r) => r.terminal_seq,
            Operation::Recharge(r) => r.terminal_seq,
            Operation::Void(r) => r.terminal_seq,
            Operation::Return(r) => r.terminal_seq,
            Operation::VoucherGrant(r) => r.terminal_seq,
        }
    }

    /// The acting staff member.
    pub fn staff_id(&self) -> &StaffId {
        match self {
            Operation::Order(r) => &r.staff_id,
            Operation::Recharge(r) => &r.staff_id,
            Operation::Void(r) => &r.staff_id,
            Operation::Return(r) => &r.staff_id,
            Operation::VoucherGrant(r) => &r.staff_id,
        }
    }

    /// `order`, `recharge`, `void`, `return` or `voucher_grant`.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Operation::Order(_) => "order",
            Operation::Recharge(_) => "recharge",
            Operation::Void(_) => "void",
            Operation::Return(_) => "return",
            Operation::VoucherGrant(_) => "voucher_grant",
        }
    }

    /// When the terminal made it (its clock).
    pub fn created_at(&self) -> DateTime<Utc> {
        match self {
            Operation::Order(r) => r.created_at,
            Operation::Recharge(r) => r.created_at,
            Operation::Void(r) => r.created_at,
            Operation::Return(r) => r.created_at,
            Operation::VoucherGrant(r) => r.created_at,
        }
    }

    /// Online or offline; a void is always applied, like an offline operation.
    pub fn mode(&self) -> Mode {
        match self {
            Operation::Order(r) => r.mode,
            Operation::Recharge(r) => r.mode,
            Operation::Void(_) => Mode::Offline,
            Operation::Return(r) => r.mode,
            Operation::VoucherGrant(r) => r.mode,
        }
    }
}

/// A request field that is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field (`items[0].quantity`).
    pub field: String,
    /// What was expected.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn check_range(field: &str, value: i64, min: i64, max: i64) -> Result<(), FieldError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be between {min} and {max}"),
        ))
    }
}

/// Checks the lines of an order or a return and their total, the one rule both follow: 1
/// to `max_lines` lines of `(quantity, unit price)`, each quantity 1 to `QUANTITY_MAX`, each
/// price 0 to `UNIT_PRICE_CENTS_MAX` (field `items[i].<price_field>`), and a total of 1 to
/// `total_max` that is exactly their sum (field `total_field`).
fn check_lines(
    lines: &[(i64, Cents)],
    max_lines: usize,
    price_field: &str,
    (total_field, total, total_max): (&str, Cents, i64),
) -> Result<(), FieldError> {
    if lines.is_empty() || lines.len() > max_lines {
        return Err(FieldError::new(
            "items",
            format!("must hold 1 to {max_lines} lines"),
        ));
    }
    let mut sum = Cents::ZERO;
    for (i, (quantity, price)) in lines.iter().enumerate() {
        check_range(&format!("items[{i}].quantity"), *quantity, 1, QUANTITY_MAX)?;
        check_range(
            &format!("items[{i}].{price_field}"),
            price.get(),
            0,
            UNIT_PRICE_CENTS_MAX,
        )?;
        sum = price
            .checked_mul(*quantity)
            .and_then(|l| sum.checked_add(l))
            .map_err(|_| FieldError::new(total_field, "the sum of the lines overflows"))?;
    }
    check_range(total_field, total.get(), 1, total_max)?;
    if sum != total {
        return Err(FieldError::new(
            total_field,
            format!("must equal the sum of the lines ({})", sum.get()),
        ));
    }
    Ok(())
}

impl OrderRequest {
    /// Checks what the types cannot: counts, ranges, and that the total is the sum of lines.
    pub fn validate(&self) -> Result<(), FieldError> {
        let lines: Vec<(i64, Cents)> = self
            .items
            .iter()
            .map(|i| (i.quantity, i.unit_price_cents))
            .collect();
        check_lines(
            &lines,
            ORDER_ITEMS_MAX,
            "unit_price_cents",
            ("total_cents", self.total_cents, ORDER_TOTAL_CENTS_MAX),
        )?;
        if let Some(units) = self.voucher_units {
            if self.mode == Mode::Online {
                return Err(FieldError::new(
                    "voucher_units",
                    "only an offline order says what vouchers it used; online, the ledger decides",
                ));
            }
            check_range("voucher_units", units, 0, ORDER_VOUCHER_UNITS_MAX)?;
        }
        Ok(())
    }
}

impl RechargeRequest {
    /// Checks the amount's absolute range (the configured limits are business rules).
    pub fn validate(&self) -> Result<(), FieldError> {
        check_range(
            "amount_cents",
            self.amount_cents.get(),
            1,
            RECHARGE_AMOUNT_CENTS_MAX,
        )
    }
}

impl ReturnRequest {
    /// Checks counts, ranges, and that the amount is the sum of the lines.
    pub fn validate(&self) -> Result<(), FieldError> {
        let lines: Vec<(i64, Cents)> = self
            .items
            .iter()
            .map(|i| (i.quantity, i.unit_deposit_cents))
            .collect();
        check_lines(
            &lines,
            RETURN_ITEMS_MAX,
            "unit_deposit_cents",
            ("amount_cents", self.amount_cents, RETURN_AMOUNT_CENTS_MAX),
        )
    }
}

impl VoucherGrantRequest {
    /// Checks the units' range.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_range("units", self.units, 1, VOUCHER_GRANT_UNITS_MAX)
    }
}

impl VoidRequest {
    /// A void cannot target itself.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.target_client_request_id == self.client_request_id {
            return Err(FieldError::new(
                "target_client_request_id",
                "a void cannot void itself",
            ));
        }
        Ok(())
    }
}

impl ShiftCloseout {
    /// Checks the ranges, that the shift does not close before it opened, and that
    /// `first_seq` and `last_seq` come together, in order.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, cents) in [
            ("cash_cents", self.cash_cents),
            ("card_cents", self.card_cents),
            ("counted_cash_cents", self.counted_cash_cents),
        ] {
            check_range(field, cents.get(), 0, SHIFT_TOTAL_CENTS_MAX)?;
        }
        check_range("count", self.count, 0, SHIFT_COUNT_MAX)?;
        if self.closed_at < self.opened_at {
            return Err(FieldError::new("closed_at", "must not be before opened_at"));
        }
        match (self.first_seq, self.last_seq) {
            (Some(first), Some(last)) if last < first => {
                Err(FieldError::new("last_seq", "must not be below first_seq"))
            }
            (Some(_), Some(_)) | (None, None) => Ok(()),
            (Some(_), None) => Err(FieldError::new(
                "last_seq",
                "must be sent with first_seq (both, or neither for an empty shift)",
            )),
            (None, Some(_)) => Err(FieldError::new(
                "first_seq",
                "must be sent with last_seq (both, or neither for an empty shift)",
            )),
        }
    }

    /// Counted cash minus the cash the terminal expected: negative when the drawer is short.
    pub fn difference(&self) -> Result<Cents, MoneyOverflow> {
        self.counted_cash_cents.checked_sub(self.cash_cents)
    }
}

/// An error answer before it gets its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Machine-readable specifics (`field`, `balance_cents`, ...).
    pub details: Option<Value>,
}

impl ApiError {
    /// An error without details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// An error with details.
    pub fn with_details(code: ErrorCode, message: impl Into<String>, details: Value) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: Some(details),
        }
    }

    /// 400 naming the field.
    pub fn invalid_field(err: FieldError) -> ApiError {
        ApiError::with_details(
            ErrorCode::InvalidRequest,
            format!("{}: {}", err.field, err.message),
            json!({ "field": err.field }),
        )
    }

    /// The HTTP status of the answer: the code's, or 500 for a terminal-only code, which the
    /// ledger never answers with (a bug).
    pub fn http_status(&self) -> u16 {
        self.code.http_status().unwrap_or(500)
    }

    /// The error body of the contract.
    pub fn body(&self, request_id: &str) -> Value {
        let mut error = json!({
            "code": self.code.as_str(),
            "message": self.message,
            "request_id": request_id,
        });
        if let (Some(details), Some(map)) = (&self.details, error.as_object_mut()) {
            map.insert("details".into(), details.clone());
        }
        json!({ "error": error })
    }
}

/// The 201 answer to an applied order or top-up (also the stored answer, replayed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "transaction_id": "8c1e0f4a-2b7d-4e61-9a5c-3d2f1b0e9c87",
    "client_request_id": "5b0f7c7e-3c51-4a3e-9a53-6f5f3e1f2a10", "status": "approved",
    "card_uid": "04A1B2C3D4E5F6", "total_cents": 900, "previous_balance_cents": 2000,
    "new_balance_cents": 1100, "card_status": "active",
    "processed_at": "2026-07-01T21:14:03.000Z", "flags": []
})))]
pub struct Approval {
    /// The ledger's id for the operation.
    pub transaction_id: Uuid,
    /// The idempotency key.
    pub client_request_id: ClientRequestId,
    /// Always `approved`.
    #[schema(schema_with = approved_status)]
    pub status: &'static str,
    /// The card.
    pub card_uid: CardUid,
    /// Orders only: the total debited, in cents.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64, nullable = false, minimum = 1, maximum = 100_000_000)]
    pub total_cents: Option<Cents>,
    /// Top-ups and deposit returns only: the amount credited, in cents.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64, nullable = false, minimum = 1, maximum = 10_000_000)]
    pub amount_cents: Option<Cents>,
    /// The balance before the operation.
    pub previous_balance_cents: Cents,
    /// The balance after the operation.
    pub new_balance_cents: Cents,
    /// The card's status after the operation.
    pub card_status: CardStatus,
    /// When the ledger applied it (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub processed_at: String,
    /// Remarks.
    pub flags: Vec<Flag>,
    /// Orders only: the voucher units the order used (0 when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub vouchers_used: Option<i64>,
    /// Orders only: the money charged, in cents: `total_cents` less what vouchers paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64, nullable = false, minimum = 0)]
    pub money_cents: Option<Cents>,
    /// Voucher grants only: the units granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 1000)]
    pub vouchers_granted: Option<i64>,
    /// Voucher grants only: the card's voucher units after the grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub voucher_units: Option<i64>,
}

/// The schema of [`Approval::status`]: one value.
fn approved_status() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["approved"]))
        .description(Some("Always `approved`."))
        .build()
}

/// The schema of [`VoidOutcome::status`].
fn void_status() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["voided", "tombstoned"]))
        .description(Some(
            "`voided`: the target was applied and has been reversed in full; the card fields \
             are set. `tombstoned`: the target is unknown to the ledger (or was declined); a \
             tombstone now refuses it with 409 `OPERATION_VOIDED` if it ever arrives from \
             this terminal, and the card fields are null.",
        ))
        .build()
}

/// The 201 answer to a void (also the stored answer, replayed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "transaction_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
    "client_request_id": "c2a4d3f1-9b8e-4f57-a0c6-1e2d3c4b5a69", "status": "voided",
    "target_client_request_id": "5b0f7c7e-3c51-4a3e-9a53-6f5f3e1f2a10",
    "card_uid": "04A1B2C3D4E5F6", "refunded_cents": 900, "previous_balance_cents": 1100,
    "new_balance_cents": 2000, "card_status": "active",
    "processed_at": "2026-07-01T21:14:09.000Z", "flags": []
})))]
pub struct VoidOutcome {
    /// The ledger's id for the void.
    pub transaction_id: Uuid,
    /// The void's idempotency key.
    pub client_request_id: ClientRequestId,
    /// `voided` (the target was reversed) or `tombstoned` (it was never applied and never will be).
    #[schema(schema_with = void_status)]
    pub status: &'static str,
    /// The target.
    pub target_client_request_id: ClientRequestId,
    /// The target's card, when it was applied; null when tombstoned.
    #[schema(required = true)]
    pub card_uid: Option<CardUid>,
    /// Money back to the card: positive for an order, negative for a reversed top-up; null
    /// when tombstoned.
    #[schema(required = true)]
    pub refunded_cents: Option<Cents>,
    /// The balance before the void; null when tombstoned.
    #[schema(required = true)]
    pub previous_balance_cents: Option<Cents>,
    /// The balance after the void; null when tombstoned.
    #[schema(required = true)]
    pub new_balance_cents: Option<Cents>,
    /// The card's status after the void; null when tombstoned.
    #[schema(required = true)]
    pub card_status: Option<CardStatus>,
    /// When the ledger applied it (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub processed_at: String,
    /// Remarks.
    pub flags: Vec<Flag>,
    /// Voucher units given back to the card: what a voided order used (positive), or what a
    /// voided voucher grant gave (negative). Absent when no vouchers moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub vouchers_returned: Option<i64>,
}

/// The 201 answer to a recorded shift close-out (also the stored answer, replayed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "shift_id": "01890a5d-ac96-774b-bcce-b302099a8057",
    "client_request_id": "7d3e9a10-4b2c-4f61-9e8a-0c5b6d7e8f90", "terminal": "cp-1",
    "staff_id": "s-17", "cash_cents": 42000, "card_cents": 15000, "count": 37,
    "counted_cash_cents": 41500, "difference_cents": -500,
    "recorded_at": "2026-07-02T02:00:03.412Z"
})))]
pub struct ShiftRecorded {
    /// The ledger's id for the close-out.
    pub shift_id: Uuid,
    /// The idempotency key.
    pub client_request_id: ClientRequestId,
    /// The name of the terminal that sent it.
    pub terminal: String,
    /// Whose shift.
    pub staff_id: StaffId,
    /// The terminal's cash top-ups of the shift, as sent.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub cash_cents: Cents,
    /// The terminal's card top-ups of the shift, as sent.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub card_cents: Cents,
    /// How many top-ups, as sent.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub count: i64,
    /// The cash counted in the drawer, as sent.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub counted_cash_cents: Cents,
    /// `counted_cash_cents - cash_cents`, computed by the ledger: negative when the drawer
    /// is short, positive when it holds more than expected.
    #[schema(value_type = i64, minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub difference_cents: Cents,
    /// When the ledger recorded it (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub recorded_at: String,
}

/// One card presentation recorded by a terminal (an entry of `POST /v1/scans`). Two scans of
/// the same terminal with the same `card_uid`, `reader` and `scanned_at` are the same scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scan {
    /// The card presented.
    pub card_uid: CardUid,
    /// What came of the presentation (`approved`, `declined`, `read_error`, ...): 1 to 32
    /// of `a-z` and `_`.
    #[schema(
        pattern = "^[a-z_]{1,32}$",
        min_length = 1,
        max_length = 32,
        example = "approved"
    )]
    pub result: String,
    /// The name of the reader that saw the card: 1 to 128 characters, none of them a
    /// control character, and at most 128 bytes in UTF-8.
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$",
        min_length = 1,
        max_length = 128,
        example = "ACS ACR122U PICC Interface 00 00"
    )]
    pub reader: String,
    /// When the card was presented (RFC 3339).
    pub scanned_at: DateTime<Utc>,
    /// The `terminal_seq` of the operation the scan led to; null (or absent) when it led
    /// to none. The terminal sends null.
    #[serde(default)]
    pub terminal_seq: Option<TerminalSeq>,
}

impl Scan {
    /// Field checks beyond the types.
    pub fn validate(&self, index: usize) -> Result<(), FieldError> {
        let result_ok = !self.result.is_empty()
            && self.result.len() <= 32
            && self
                .result
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
        if !result_ok {
            return Err(FieldError::new(
                format!("scans[{index}].result"),
                "1 to 32 of a-z and _",
            ));
        }
        let reader_ok = !self.reader.is_empty()
            && self.reader.len() <= 128
            && !self.reader.chars().any(char::is_control);
        if !reader_ok {
            return Err(FieldError::new(
                format!("scans[{index}].reader"),
                "1 to 128 printable characters",
            ));
        }
        Ok(())
    }
}

/// Entries one status report counts in each state, at most (a journal holds far fewer
/// unsettled entries; a larger number is a broken terminal).
pub const STATUS_COUNT_MAX: u64 = 100_000_000;
/// The longest card-feed cursor a status report carries.
pub const STATUS_CURSOR_LEN_MAX: usize = 128;
/// The longest software version a status report carries.
pub const STATUS_VERSION_LEN_MAX: usize = 64;
/// The oldest unsent operation's age a status report may give, at most (a year).
pub const STATUS_UNSENT_AGE_S_MAX: u64 = 366 * 24 * 3600;

/// The card reader's state, as a terminal reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReaderState {
    /// A reader is connected and waiting for cards.
    Connected,
    /// No reader is plugged in (or none matches the configured name).
    Waiting,
    /// The reader went away, or PC/SC failed.
    Disconnected,
    /// No hardware: cards are typed in (`tap` on the JSON-lines interface).
    Simulated,
}

impl ReaderState {
    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderState::Connected => "connected",
            ReaderState::Waiting => "waiting",
            ReaderState::Disconnected => "disconnected",
            ReaderState::Simulated => "simulated",
        }
    }

    /// The state with this name.
    pub fn parse(s: &str) -> Option<ReaderState> {
        [
            ReaderState::Connected,
            ReaderState::Waiting,
            ReaderState::Disconnected,
            ReaderState::Simulated,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A terminal's state as it reports it (`POST /v1/terminals/me/status`), every
/// `[sync] status_interval_ms` and at once on a change headquarters must learn. A report replaces
/// the terminal's previous one: sending the same report again changes nothing but the time
/// the ledger last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalStatusReport {
    /// The terminal's own clock when it sent the report (RFC 3339). The ledger compares it
    /// with its own clock: a terminal that booted with a wrong clock dates every operation
    /// wrongly.
    pub reported_at: DateTime<Utc>,
    /// Operations journaled and not yet acknowledged by the ledger (to send or to replay).
    #[schema(maximum = 100_000_000)]
    pub waiting: u64,
    /// Online attempts whose answer never came (they are replayed).
    #[schema(maximum = 100_000_000)]
    pub in_doubt: u64,
    /// Operations the ledger refused for good, kept on the terminal for a person.
    #[schema(maximum = 100_000_000)]
    pub rejected: u64,
    /// Age in seconds of the oldest operation not yet acknowledged, by the terminal's clock;
    /// null when everything is acknowledged.
    #[schema(maximum = 31_622_400)]
    pub oldest_unsent_age_s: Option<u64>,
    /// The last card-feed cursor the terminal applied: at most 128 visible ASCII
    /// characters (empty before its first page).
    #[schema(pattern = "^[!-~]{0,128}$", max_length = 128, example = "1042")]
    pub card_feed_cursor: String,
    /// The card reader's state.
    pub reader_state: ReaderState,
    /// The terminal's software version: 1 to 64 printable ASCII characters.
    #[schema(
        pattern = "^[ -~]{1,64}$",
        min_length = 1,
        max_length = 64,
        example = "0.1.0"
    )]
    pub software_version: String,
}

impl TerminalStatusReport {
    /// Field checks beyond the types.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, n) in [
            ("waiting", self.waiting),
            ("in_doubt", self.in_doubt),
            ("rejected", self.rejected),
        ] {
            if n > STATUS_COUNT_MAX {
                return Err(FieldError::new(
                    field,
                    format!("at most {STATUS_COUNT_MAX}"),
                ));
            }
        }
        if self
            .oldest_unsent_age_s
            .is_some_and(|s| s > STATUS_UNSENT_AGE_S_MAX)
        {
            return Err(FieldError::new(
                "oldest_unsent_age_s",
                format!("at most {STATUS_UNSENT_AGE_S_MAX} seconds"),
            ));
        }
        if self.card_feed_cursor.len() > STATUS_CURSOR_LEN_MAX
            || !self.card_feed_cursor.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(FieldError::new(
                "card_feed_cursor",
                format!("at most {STATUS_CURSOR_LEN_MAX} visible ASCII characters"),
            ));
        }
        let version_ok = !self.software_version.is_empty()
            && self.software_version.len() <= STATUS_VERSION_LEN_MAX
            && self
                .software_version
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b));
        if !version_ok {
            return Err(FieldError::new(
                "software_version",
                format!("1 to {STATUS_VERSION_LEN_MAX} printable ASCII characters"),
            ));
        }
        Ok(())
    }
}

/// The ledger's answer to a status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusReceipt {
    /// The ledger's clock when it stored the report.
    pub received_at: DateTime<Utc>,
    /// The terminal's clock minus the ledger's, in milliseconds (the report's
    /// `reported_at` against `received_at`; network delay counts against the terminal).
    pub clock_offset_ms: i64,
}

/// `PUT /v1/cards/{uid}/key`: the festival master key version a card was issued with
/// (`cashless card issue`). The key itself never leaves the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardKeyRequest {
    /// The master key version (1 to 255) whose diversified key the card now holds.
    #[schema(minimum = 1, maximum = 255, example = 1)]
    pub key_version: i64,
}

impl CardKeyRequest {
    /// The version, checked.
    pub fn validate(&self) -> Result<u8, FieldError> {
        check_range("key_version", self.key_version, 1, 255)?;
        u8::try_from(self.key_version)
            .map_err(|_| FieldError::new("key_version", "must be between 1 and 255"))
    }
}

/// The ledger's answer to [`CardKeyRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardKeyReceipt {
    /// The card.
    pub card_uid: CardUid,
    /// The version the card is recorded with now.
    #[schema(minimum = 1, maximum = 255)]
    pub key_version: u8,
    /// False when the card already held this version: nothing was written (issuing again is
    /// safe).
    pub changed: bool,
    /// The ledger had not seen the card: it now exists, with nothing on it.
    pub card_created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(items: Vec<(i64, i64)>, total: i64) -> OrderRequest {
        OrderRequest {
            client_request_id: ClientRequestId::new_random(),
            terminal_seq: TerminalSeq::new(1).unwrap(),
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            items: items
                .into_iter()
                .map(|(q, p)| OrderItem {
                    product_id: ProductId::parse("beer").unwrap(),
                    quantity: q,
                    unit_price_cents: Cents::new(p),
                })
                .collect(),
            total_cents: Cents::new(total),
            staff_id: StaffId::parse("s-1").unwrap(),
            created_at: Utc::now(),
            mode: Mode::Online,
            voucher_units: None,
        }
    }

    #[test]
    fn order_validation_names_the_field() {
        let cases: Vec<(OrderRequest, Option<&str>)> = vec![
            (order(vec![(2, 450)], 900), None),
            (order(vec![(2, 450)], 901), Some("total_cents")),
            (order(vec![], 0), Some("items")),
            (order(vec![(1, 1); 51], 51), Some("items")),
            (order(vec![(0, 450)], 0), Some("items[0].quantity")),
            (
                order(vec![(1, 1), (100, 1)], 101),
                Some("items[1].quantity"),
            ),
            (order(vec![(1, -1)], 1), Some("items[0].unit_price_cents")),
            (
                order(vec![(1, 1_000_001)], 1_000_001),
                Some("items[0].unit_price_cents"),
            ),
            (order(vec![(1, 0)], 0), Some("total_cents")),
            (
                order(vec![(99, 1_000_000); 50], 4_950_000_000),
                Some("total_cents"),
            ),
        ];
        for (req, field) in cases {
            assert_eq!(
                req.validate().err().map(|e| e.field),
                field.map(String::from)
            );
        }
    }

    fn shift(cash: i64, card: i64, count: i64, counted: i64, hours: i64) -> ShiftCloseout {
        let opened_at = Utc::now();
        ShiftCloseout {
            client_request_id: ClientRequestId::new_random(),
            staff_id: StaffId::parse("s-1").unwrap(),
            opened_at,
            closed_at: opened_at + chrono::Duration::hours(hours),
            cash_cents: Cents::new(cash),
            card_cents: Cents::new(card),
            count,
            counted_cash_cents: Cents::new(counted),
            first_seq: TerminalSeq::new(1).ok(),
            last_seq: TerminalSeq::new(40).ok(),
        }
    }

    fn seqs(mut shift: ShiftCloseout, first: Option<i64>, last: Option<i64>) -> ShiftCloseout {
        shift.first_seq = first.map(|n| TerminalSeq::new(n).unwrap());
        shift.last_seq = last.map(|n| TerminalSeq::new(n).unwrap());
        shift
    }

    #[test]
    fn shift_validation_names_the_field() {
        let max = SHIFT_TOTAL_CENTS_MAX;
        let cases: Vec<(ShiftCloseout, Option<&str>)> = vec![
            (shift(42_000, 15_000, 37, 41_500, 8), None),
            (shift(0, 0, 0, 0, 0), None),
            (shift(max, max, SHIFT_COUNT_MAX, max, 8), None),
            (shift(-1, 0, 0, 0, 8), Some("cash_cents")),
            (shift(max + 1, 0, 0, 0, 8), Some("cash_cents")),
            (shift(0, -1, 0, 0, 8), Some("card_cents")),
            (shift(0, max + 1, 0, 0, 8), Some("card_cents")),
            (shift(0, 0, -1, 0, 8), Some("count")),
            (shift(0, 0, SHIFT_COUNT_MAX + 1, 0, 8), Some("count")),
            (shift(0, 0, 0, -1, 8), Some("counted_cash_cents")),
            (shift(0, 0, 0, max + 1, 8), Some("counted_cash_cents")),
            (shift(0, 0, 0, 0, -1), Some("closed_at")),
            (seqs(shift(0, 0, 0, 0, 8), None, None), None),
            (seqs(shift(0, 0, 0, 0, 8), Some(7), Some(7)), None),
            (
                seqs(shift(0, 0, 0, 0, 8), Some(8), Some(7)),
                Some("last_seq"),
            ),
            (seqs(shift(0, 0, 0, 0, 8), Some(7), None), Some("last_seq")),
            (seqs(shift(0, 0, 0, 0, 8), None, Some(7)), Some("first_seq")),
        ];
        for (req, field) in cases {
            assert_eq!(
                req.validate().err().map(|e| e.field),
                field.map(String::from),
                "{req:?}"
            );
        }
        assert_eq!(
            shift(42_000, 0, 1, 41_500, 1).difference(),
            Ok(Cents::new(-500))
        );
        assert_eq!(shift(0, 0, 0, max, 1).difference(), Ok(Cents::new(max)));
    }
}
