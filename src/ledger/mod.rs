//! The central ledger: the truth about every card's money.
//!
//! - [`caller`]: the authenticated terminal and the staff member, as the rules see them.
//! - [`rules`]: the business rules as pure functions (no IO, no clock).
//! - [`flow`]: the operation flow named once: the order of checks and the writes of each
//!   operation, decided over a narrow read interface; the contract every backend keeps.
//! - [`outcome`]: the typed outcome of an operation (approved, declined, replayed) and its
//!   stored form.
//! - [`store`]: storage behind one trait per job ([`store::LedgerStore`] is all of them);
//!   [`store::Store`] opens whichever backend `--database` names (SQLite today).
//! - [`api`]: the HTTP API (axum).
//! - [`openapi`]: the API's OpenAPI document, built from the protocol types.
//! - [`stripe`]: Stripe webhooks, the pure part: signature check and event reading.
//! - [`config`]: the configuration file and its overrides.
//! - [`server`]: serving with graceful shutdown.
//! - [`admin`]: the admin commands (terminals, staff, products, cards, audit).

pub mod admin;
pub mod api;
pub mod caller;
pub mod config;
pub mod fleet;
pub mod flow;
pub mod housekeeping;
pub mod hq;
pub mod metrics;
pub mod openapi;
pub mod outcome;
pub mod overview;
pub mod report;
pub mod rules;
pub mod server;
pub mod store;
pub mod stripe;
pub mod tls;
