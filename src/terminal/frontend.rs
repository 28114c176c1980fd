//! What the daemon's main loop needs of a front end: the next command from staff, and a place
//! to show events. `--ui jsonl` ([`JsonlFrontend`]) reads JSON lines and writes them; the TUI
//! (`crate::tui::run`) turns keys into commands and events into screens. Both drive the same
//! [`super::daemon::run`] loop, so they cannot differ in what a command does.

use crate::protocol::api::TerminalKind;
use crate::protocol::codes::ErrorCode;
use crate::protocol::commands::{COMMAND_BYTES_MAX, Command};
use crate::protocol::events::Event;
use crate::terminal::journal::CatalogProduct;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, Lines};

/// What a front end gives the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A command for the daemon.
    Command(Command),
    /// Input that is not a command: shown as it is, nothing else happens.
    Refused(Event),
    /// The front end is done.
    Leave(Leave),
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// `quit`, or staff left the TUI.
    Quit,
    /// The input ended (stdin closed).
    EndOfInput,
    /// SIGTERM or SIGINT.
    Signal,
    /// The front end wants another terminal (the demo switches bar and checkpoint).
    Switch,
}

/// What a front end may show besides events: who this terminal is and what it sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalInfo {
    /// The terminal's name.
    pub terminal: String,
    /// Its point of sale, once the catalog is known.
    pub point_of_sale: String,
    /// Bar or checkpoint.
    pub kind: TerminalKind,
    /// The menu, as the cached catalog has it (price, VAT rate, minimum age, open price).
    pub menu: Vec<CatalogProduct>,
    /// Who may log in: staff id, name.
    pub staff: Vec<(String, String)>,
}

/// A front end of the daemon.
pub trait Front {
    /// The next input. Must be cancel-safe: the loop drops this future whenever another
    /// source (the reader, the sync task, a signal) is ready first.
    fn next_input(&mut self) -> impl Future<Output = anyhow::Result<Input>>;

    /// Shows one event.
    fn show(&mut self, event: &Event) -> impl Future<Output = anyhow::Result<()>>;

    /// Called once, before the first sync round, which may take a while (a backlog to
    /// replay, a slow or unreachable ledger): the place to show that the terminal is
    /// starting. Nothing is read from the front end until `ready` is shown after that round;
    /// a signal during it ends the loop with [`Leave::Signal`]. The default does nothing.
    fn starting(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        std::future::ready(Ok(()))
    }

    /// How often the loop should send a fresh `status` (only when it changed); `None`: only
    /// when asked with the `status` command.
    fn status_every(&self) -> Option<Duration> {
        None
    }

    /// Told who the terminal is after the first sync, and again whenever the caches may
    /// have changed (after a sync round that reached the ledger).
    fn describe(&mut self, info: TerminalInfo) {
        let _ = info;
    }

    /// Whether [`Front::describe`] is wanted (reading the caches costs a journal query).
    fn wants_description(&self) -> bool {
        false
    }
}

/// The JSON-lines front end (docs/interfaces.md): one command per line in, one event per
/// line out.
pub struct JsonlFrontend<R, W> {
    lines: Lines<R>,
    output: W,
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> JsonlFrontend<R, W> {
    /// Reads commands from `input` and writes events to `output`.
    pub fn new(input: R, output: W) -> Self {
        JsonlFrontend {
            lines: input.lines(),
            output,
        }
    }
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> Front for JsonlFrontend<R, W> {
    async fn next_input(&mut self) -> anyhow::Result<Input> {
        loop {
            // `Lines::next_line` is cancel-safe: a partly read line stays buffered.
            let Some(line) = self.lines.next_line().await? else {
                return Ok(Input::Leave(Leave::EndOfInput));
            };
            if line.trim().is_empty() {
                continue;
            }
            if line.len() > COMMAND_BYTES_MAX {
                return Ok(Input::Refused(Event::error(
                    ErrorCode::InvalidCommand,
                    format!("a command is at most {COMMAND_BYTES_MAX} bytes"),
                )));
            }
            return Ok(match serde_json::from_str::<Command>(&line) {
                Ok(command) => Input::Command(command),
                Err(e) => Input::Refused(Event::error(ErrorCode::InvalidCommand, e.to_string())),
            });
        }
    }

    async fn show(&mut self, event: &Event) -> anyhow::Result<()> {
        let mut line = event.to_json_line();
        line.push('\n');
        self.output.write_all(line.as_bytes()).await?;
        self.output.flush().await?;
        Ok(())
    }
}
