//! The terminal's pure core: decisions that take inputs and `now` and return decisions.
//!
//! Architecture invariant: nothing here does IO, reads a clock or draws random numbers. The
//! journal, the HTTP client, the reader and the screen are adapters around it, so the hard
//! cases (a crash between two steps, an answer lost after the ledger committed) are ordinary
//! unit tests.

pub mod charges;
pub mod deposits;
pub mod entry;
pub mod login;
pub mod online;
pub mod policy;
pub mod replay;
pub mod tap;
