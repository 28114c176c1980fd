//! The card records a store keeps and hands out: a card as the API and the card feed show
//! it, a card's key version recorded at issue, and card replacements.

use super::StoreError;
use crate::domain::{AgeFlag, CardUid, Cents};
use uuid::Uuid;

/// A card as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CardView {
    /// The card.
    pub card_uid: CardUid,
    /// Balance.
    pub balance_cents: Cents,
    /// `active` or `blocked`.
    pub status: String,
    /// Position in the card feed.
    pub version: i64,
    /// Last change.
    pub updated_at: String,
    /// What staff saw on the holder's ID (`under_16`, `under_18`); `None`: nobody said the
    /// holder is a minor.
    pub age_flag: Option<AgeFlag>,
    /// Voucher units on the card.
    pub voucher_units: i64,
    /// The master key version the card was issued with (`cashless card issue`); `None`: a
    /// UID-only card.
    pub key_version: Option<u8>,
}

/// What recording a card's key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardKeyRecord {
    /// The version the card is now recorded with.
    pub key_version: u8,
    /// False when the card already held this version (nothing was written).
    pub changed: bool,
    /// The ledger had not seen the card: it was created with nothing on it.
    pub card_created: bool,
}

/// The audit log's details of a card key recorded (`card_key`), on both backends.
pub fn card_key_details(
    key_version: u8,
    previous: Option<u8>,
    card_created: bool,
) -> serde_json::Value {
    serde_json::json!({
        "key_version": key_version,
        "previous_key_version": previous,
        "card_created": card_created,
    })
}

/// One page of the card feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFeedPage {
    /// Changed cards, oldest change first.
    pub cards: Vec<CardView>,
    /// Where the next page starts.
    pub next_version: i64,
}

/// The refusal to unblock a replaced card.
pub fn replaced_stays_blocked(uid: &CardUid, by: &str) -> StoreError {
    StoreError::Conflict(format!(
        "card {uid} was replaced by {by}: it stays blocked for good (its balance is on {by})"
    ))
}

/// The refusal to give a replaced card vouchers.
pub fn replaced_takes_no_vouchers(uid: &CardUid, by: &str) -> StoreError {
    StoreError::Conflict(format!(
        "card {uid} was replaced by {by}: give the vouchers to {by}"
    ))
}

/// What a card replacement (or a later settling of it) did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CardReplaced {
    /// The move's transaction (its postings, its `card_replacements` row); `None` when a
    /// run again found nothing to move.
    pub transaction_id: Option<Uuid>,
    /// The card the move went to: the new card, or, settling a card whose replacement was
    /// itself replaced later, the last card of that chain.
    pub to_card_uid: CardUid,
    /// The balance moved to the new card (below zero: a debt).
    pub amount_cents: Cents,
    /// The voucher units moved.
    pub voucher_units: i64,
    /// The new card did not exist and was created.
    pub new_card_created: bool,
    /// The replacement was made now (not by an earlier run).
    pub first: bool,
}

impl CardReplaced {
    /// A settling run onto `to` that found nothing to move.
    pub fn nothing(to: CardUid) -> CardReplaced {
        CardReplaced {
            transaction_id: None,
            to_card_uid: to,
            amount_cents: Cents::ZERO,
            voucher_units: 0,
            new_card_created: false,
            first: false,
        }
    }
}
