//! Where the binary's `tracing` output goes (stderr, or a file where a TUI owns the screen),
//! and in which format: text for people, or JSON lines for a log collector.
//!
//! Nothing secret is ever logged: no bearer token, PIN or webhook secret is a field of any
//! event (the ledger logs a request's method, route, status and id, never its headers or
//! body); `tests/logs.rs` checks it on the real binaries.

use anyhow::Context;
use std::path::Path;
use std::sync::Mutex;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, and the
    /// request's `span` with its `request_id` on every line written while serving it).
    Json,
}

/// Logs to stderr, or to `file` (appended) where stderr is the screen a TUI draws on.
pub fn init_tracing(file: Option<&Path>, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only when a subscriber is already set (tests that run the CLI in
    // process): the first one stays.
    match (file, format) {
        (Some(path), format) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            let builder = builder.with_ansi(false).with_writer(Mutex::new(log));
            let _ = match format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().with_current_span(true).try_init(),
            };
        }
        (None, LogFormat::Text) => {
            let _ = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .try_init();
        }
        (None, LogFormat::Json) => {
            let _ = builder
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    Ok(())
}
