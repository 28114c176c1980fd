//! Card readers: the PC/SC backend ([`pcsc`]) and the pure decisions it relies on
//! ([`core`]: UID and ATR parsing, reader choice, tap debounce, feedback commands;
//! [`ntag424`]: NXP's AES secure channel and key diversification; [`card_auth`]: the tap's
//! authentication and card issuing, as state machines fed the card's answers).
//!
//! The reader layer turns a wobbly physical world into exactly one clean event per
//! presentation; the daemon decides what a tap means.

pub mod card_auth;
pub mod core;
pub mod ntag424;
pub mod pcsc;

use crate::domain::CardUid;
use card_auth::MasterKeys;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// How the PC/SC backend behaves ([reader] in the terminal's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Substring of the reader's name; empty: the first contactless reader.
    pub name_filter: String,
    /// The same card seen again within this long of leaving the reader is the same tap.
    pub debounce_ms: u64,
    /// LED and buzzer feedback on ACR122U-compatible readers.
    pub feedback: bool,
    /// AES mode: the festival's master keys; every card proves its key before it is a tap.
    /// `None`: the UID alone identifies a card.
    pub keys: Option<Arc<MasterKeys>>,
    /// AES mode: a card without AES is reported by its UID alone (`key_version: None`)
    /// instead of as not genuine.
    pub accept_uid_cards: bool,
}

/// What the reader layer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A reader is in use (at startup, or plugged back).
    Connected {
        /// Its name as pcscd lists it.
        name: String,
    },
    /// No reader matches yet: the terminal waits for one to be plugged in.
    Waiting {
        /// The configured name filter (empty: any contactless reader).
        filter: String,
    },
    /// The reader in use went away, or pcscd did (`name` empty when no reader was in use).
    Disconnected {
        /// The reader.
        name: String,
        /// Why, for people.
        reason: String,
    },
    /// A card was read.
    Card {
        /// The reader.
        reader: String,
        /// Its UID.
        uid: CardUid,
        /// Its type from the ATR (informational).
        card_type: core::CardType,
        /// AES mode: the master key version the card proved; `None`: identified by its UID
        /// alone.
        key_version: Option<u8>,
        /// The same presentation seen again (the card flickered at the edge of the field):
        /// logged, not a tap.
        repeat: bool,
        /// When it was read.
        at: DateTime<Utc>,
    },
    /// A card was presented but could not be read.
    Failed {
        /// The reader.
        reader: String,
        /// Why.
        error: core::ReadError,
        /// When.
        at: DateTime<Utc>,
    },
}
