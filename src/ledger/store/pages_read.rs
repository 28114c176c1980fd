//! What headquarters' pages read from a store ([`super::ReportStore::overview`],
//! [`super::ReportStore::card_history`]): the overview's quarter-hour sums and the money on
//! cards, and a card's history.

use crate::domain::{CardUid, Cents};
use chrono::{DateTime, Utc};

/// What a quarter hour's sum counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TakingKind {
    /// Orders: the net plus tax of their lines that are not deposits.
    Sale,
    /// Top-ups: a checkpoint's, or a Stripe credit less its refunds.
    TopUp,
}

impl TakingKind {
    /// As stored in `quarter_totals.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TakingKind::Sale => "sale",
            TakingKind::TopUp => "top_up",
        }
    }

    /// From `quarter_totals.kind`.
    pub fn parse(text: &str) -> Option<TakingKind> {
        match text {
            "sale" => Some(TakingKind::Sale),
            "top_up" => Some(TakingKind::TopUp),
            _ => None,
        }
    }
}

/// The operations of one kind and mode at one point of sale in one quarter hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarterTotal {
    /// When the quarter hour starts (the terminal's time of the operations).
    pub quarter_start: DateTime<Utc>,
    /// The point of sale; empty for Stripe's online top-ups.
    pub point_of_sale: String,
    /// Sales or top-ups.
    pub kind: TakingKind,
    /// Made online (the terminal asked the ledger), or offline (replayed later).
    pub online: bool,
    /// How many operations (voided ones taken out).
    pub operations: i64,
    /// Their sum.
    pub amount: Cents,
}

/// The money on cards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardMoney {
    /// Cards the ledger knows.
    pub cards: i64,
    /// The sum of the positive balances: what the festival owes its attendees.
    pub on_cards: Cents,
    /// Cards with a negative balance.
    pub in_debt: i64,
    /// The sum of the negative balances (negative).
    pub debt: Cents,
    /// The cards deepest in debt, deepest first: UID, balance, blocked.
    pub deepest: Vec<(CardUid, Cents, bool)>,
}

/// What the overview reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverviewData {
    /// The quarter hours' sums, by quarter, point of sale, kind, mode.
    pub quarters: Vec<QuarterTotal>,
    /// The money on cards.
    pub cards: CardMoney,
}

/// One audit-log row naming a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardEvent {
    /// When the ledger wrote it.
    pub occurred_at: DateTime<Utc>,
    /// Who: `terminal:NAME`, `stripe`, `admin` (the command line), `operator:NAME`.
    pub actor: String,
    /// The staff member the operation named, if any.
    pub staff_id: Option<String>,
    /// `order`, `recharge`, `void`, `card_block`, ...
    pub operation: String,
    /// The amount the operation moved, if any.
    pub amount_cents: Option<Cents>,
    /// `approved`, `declined`, `done`, ...
    pub outcome: String,
    /// A decline's code.
    pub error_code: Option<String>,
}

/// One presentation of a card at a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardScan {
    /// When the terminal saw it.
    pub scanned_at: DateTime<Utc>,
    /// The terminal's name.
    pub terminal: String,
    /// The reader's name.
    pub reader: String,
    /// What came of it.
    pub result: String,
}

/// A card's history, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardHistory {
    /// Audit-log rows naming the card.
    pub events: Vec<CardEvent>,
    /// Its scans.
    pub scans: Vec<CardScan>,
    /// Why it is blocked (`lost`, `debt`), if it is.
    pub block_reason: Option<String>,
    /// The card that replaced it, if one did.
    pub replaced_by: Option<String>,
}
