//! # cashless: offline-first payments for cashless festivals
//!
//! One crate, one binary (`cashless`) with subcommands. See `ARCHITECTURE.md` for the
//! bird's-eye view.
//!
//! # Layout
//! - [`domain`]: money ([`domain::Cents`]), card UIDs, ids. No IO.
//! - [`protocol`]: the wire vocabulary both sides speak: API requests and answers, codes,
//!   the terminal's JSON-lines commands and events, the journal export.
//! - [`ledger`]: the central ledger: rules (pure), storage (SQLite), HTTP API, admin.
//! - [`terminal`]: the terminal daemon: journal, tap flow, offline policy, replay.
//! - [`reader`]: card readers through PC/SC: one clean event per presentation.
//! - [`tui`]: the staff-facing terminal UI (model and view).
//! - [`service`]: readiness and watchdog for the service manager (systemd `Type=notify`).
//! - [`bench`]: load generators operators can run.
//! - [`cli`]: the command line; the only place that prints errors for people.

pub mod bench;
pub mod cli;
pub mod config_error;
pub mod demo;
pub mod domain;
pub mod ledger;
pub mod logging;
pub mod protocol;
pub mod reader;
pub mod service;
pub mod terminal;
pub mod tui;
