//! The terminal daemon: journal first, then the network; online or offline within limits;
//! replay until the ledger acknowledged everything.
//!
//! - [`card_keys`]: the festival's card master key file: checked, parsed, extended.
//! - [`client`]: the HTTP client for the ledger; says whether a failure leaves an attempt in doubt.
//! - [`config`]: the terminal's configuration file.
//! - [`core`]: pure decisions (tap flow, offline policy, replay rules, login lockout).
//! - [`daemon`]: the main loop over any front end: input, reader, sync reports, status, signal.
//! - [`export`]: the journal of a terminal that never comes back, for `cashless ledger import`.
//! - [`frontend`]: what the loop needs of a front end; the JSON-lines front end.
//! - [`journal`]: the durable SQLite journal, card replica and feed caches.
//! - [`session`]: the commands (login, orders, top-ups, balance, voids, shifts) and the cards.
//! - [`sync`]: the background sync task: replay, feeds, scan log, close-outs; backoff.
//! - [`tap`]: performs the tap flow's steps on the journal and the ledger; crash recovery.

pub mod card_keys;
pub mod card_station;
pub mod client;
pub mod config;
pub mod core;
pub mod daemon;
pub mod export;
pub mod frontend;
pub mod journal;
pub mod metrics;
pub mod session;
pub mod sync;
pub mod tap;
