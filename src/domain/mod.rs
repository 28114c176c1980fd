//! Domain types shared by the ledger and the terminal: money, card identity, ids.
//!
//! Architecture invariant: this module does no IO and knows no transport. Every type checks
//! its invariant once, when it is built, so the rest of the program can rely on it.

mod card;
mod ids;
mod money;

pub use card::{CardUid, CardUidError};
pub use ids::{
    ClientRequestId, IDENT_LEN_MAX, IdentError, ProductId, StaffId, TerminalSeq, TerminalSeqError,
};
pub use money::{Cents, MoneyOverflow};
