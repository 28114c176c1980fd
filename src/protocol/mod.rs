//! The wire vocabulary the ledger and the terminal both speak, and nothing else: the ledger
//! API's requests and answers ([`api`]), every error and decline code ([`codes`]), the
//! terminal daemon's JSON-lines commands ([`commands`]) and events ([`events`]), and the
//! journal export ([`export`]), each with its limits.
//!
//! Architecture invariant: `ledger` and `terminal` depend on this module (and on `domain`),
//! never on each other. It does no IO.

pub mod api;
pub mod codes;
pub mod commands;
pub mod events;
pub mod export;
