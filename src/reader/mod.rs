//! Card readers: the PC/SC backend ([`pcsc`]) and the pure decisions it relies on
//! ([`core`]: UID and ATR parsing, reader choice, tap debounce, feedback commands).
//!
//! The reader layer turns a wobbly physical world into exactly one clean event per
//! presentation; the daemon decides what a tap means.

pub mod card_auth;
pub mod core;
pub mod ntag424;
pub mod pcsc;

use crate::domain::CardUid;
use chrono::{DateTime, Utc};

/// How the PC/SC backend behaves ([reader] in the terminal's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Substring of the reader's name; empty: the first contactless reader.
    pub name_filter: String,
    /// The same card seen again within this long of leaving the reader is the same tap.
    pub debounce_ms: u64,
    /// LED and buzzer feedback on ACR122U-compatible readers.
    pub feedback: bool,
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
