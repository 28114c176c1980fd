//! The TUI as the daemon's front end: terminal events (keys, resizes) go through the
//! [`Model`], which asks the daemon for commands; the daemon's events come back into the
//! model; the screen is drawn again only when something on it may have changed.
//!
//! Keys are read by a thread of their own (crossterm's blocking `read`), which hands them to
//! the async loop through a bounded channel; tests hand in events the same way, and draw on
//! ratatui's `TestBackend`.

use super::model::{Action, Key, Model};
use super::view;
use crate::terminal::daemon::Command;
use crate::terminal::events::Event;
use crate::terminal::frontend::{Front, Input, Leave, TerminalInfo};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::Backend;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often time is looked at: timeouts on screen and the clock (a redraw follows only
/// when one of them changed what is shown).
pub const TICK_MS: u64 = 250;
/// How often the daemon's status is refreshed for the status bar (drawn only when changed).
pub const STATUS_EVERY_MS: u64 = 1_000;
/// Terminal events waiting for the loop, at most (a key held down fills it; more wait in
/// the tty).
pub const TERMINAL_EVENTS_MAX: usize = 64;

/// What a key means before the model sees it: the demo maps its own keys (cards, network,
/// mode) here. Returns the inputs for the loop when it took the key.
pub type KeyHook = Box<dyn FnMut(&KeyEvent, &mut Model) -> Option<Vec<Input>>>;

/// The TUI front end over any ratatui backend.
pub struct Tui<B: Backend> {
    terminal: Terminal<B>,
    events: mpsc::Receiver<TermEvent>,
    model: Model,
    /// Inputs the model produced that the loop has not taken yet.
    queue: VecDeque<Input>,
    started: Instant,
    clock: Box<dyn Fn() -> String>,
    minute: fn() -> Option<chrono::DateTime<chrono::Utc>>,
    shown_clock: String,
    tick: tokio::time::Interval,
    /// Something on screen may have changed since the last draw.
    dirty: bool,
    hook: Option<KeyHook>,
    draws: u64,
}

/// The current time, to the minute (the status bar shows ages in minutes, so the model
/// changes once a minute, not at every tick).
fn this_minute() -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{DurationRound, TimeDelta};
    chrono::Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .ok()
}

/// The wall clock as the status bar shows it: local `HH:MM`.
pub fn local_clock() -> String {
    chrono::Local::now().format("%H:%M").to_string()
}

impl<B: Backend> Tui<B> {
    /// A TUI drawing on `terminal`, reading terminal events from `events`, showing the
    /// time `clock` gives.
    pub fn new(
        terminal: Terminal<B>,
        events: mpsc::Receiver<TermEvent>,
        model: Model,
        clock: Box<dyn Fn() -> String>,
    ) -> Self {
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Tui {
            terminal,
            events,
            model,
            queue: VecDeque::new(),
            started: Instant::now(),
            clock,
            minute: this_minute,
            shown_clock: String::new(),
            tick,
            dirty: true,
            hook: None,
            draws: 0,
        }
    }

    /// Lets `hook` see every key before the model does.
    pub fn with_hook(mut self, hook: KeyHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The model (what is on screen).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, to change what is shown (a new terminal after a switch); redraws.
    pub fn model_mut(&mut self) -> &mut Model {
        self.dirty = true;
        &mut self.model
    }

    /// The terminal drawn on.
    pub fn terminal(&self) -> &Terminal<B> {
        &self.terminal
    }

    /// Frames drawn so far.
    pub fn draws(&self) -> u64 {
        self.draws
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Draws the screen if anything on it may have changed.
    pub fn draw_if_needed(&mut self) -> anyhow::Result<()> {
        let clock = (self.clock)();
        if clock != self.shown_clock {
            self.shown_clock = clock;
            self.dirty = true;
        }
        if !self.dirty {
            return Ok(());
        }
        let model = &self.model;
        let clock = &self.shown_clock;
        self.terminal
            .draw(|frame| view::draw(frame, model, clock))
            .map_err(|e| anyhow::anyhow!("cannot draw the screen: {e}"))?;
        self.dirty = false;
        self.draws += 1;
        Ok(())
    }

    fn take(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.queue.push_back(match action {
                Action::Send(command) => Input::Command(command),
                Action::Quit => Input::Leave(Leave::Quit),
            });
        }
    }

    fn on_terminal_event(&mut self, event: TermEvent) {
        match event {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                if key.modifiers.contains(KeyModifiers::CONTROL)
                    && matches!(key.code, KeyCode::Char('c' | 'd'))
                {
                    // Raw mode turns Ctrl-C into a key: it still leaves.
                    self.queue.push_back(Input::Command(Command::Quit));
                    return;
                }
                if let Some(hook) = &mut self.hook
                    && let Some(inputs) = hook(&key, &mut self.model)
                {
                    self.queue.extend(inputs);
                    self.dirty = true;
                    return;
                }
                if let Some(k) = key_of(&key) {
                    let now = self.now_ms();
                    let actions = self.model.on_key(k, now);
                    self.take(actions);
                    self.dirty = true;
                }
            }
            TermEvent::Resize(..) => self.dirty = true,
            _ => {}
        }
    }

    fn on_tick(&mut self) {
        let minute = (self.minute)();
        if self.model.minute != minute {
            self.model.minute = minute;
            self.dirty = true;
        }
        let before = (self.model.screen.clone(), self.model.notice.clone());
        let now = self.now_ms();
        let actions = self.model.on_tick(now);
        if !actions.is_empty() || (self.model.screen.clone(), self.model.notice.clone()) != before {
            self.dirty = true;
        }
        self.take(actions);
    }
}

/// The model's key for a terminal key; `None` for keys the TUI does not use.
pub fn key_of(key: &KeyEvent) -> Option<Key> {
    Some(match key.code {
        KeyCode::Char(c @ '0'..='9') => Key::Digit(c as u8 - b'0'),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace | KeyCode::Delete => Key::Backspace,
        KeyCode::Char('+') => Key::Plus,
        KeyCode::Char('-') => Key::Minus,
        KeyCode::Char('*') => Key::Star,
        KeyCode::Char('/') => Key::Slash,
        KeyCode::Char('.' | ',') => Key::Dot,
        KeyCode::Char('?') | KeyCode::F(1) => Key::Help,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Char(c) => Key::Char(c),
        _ => return None,
    })
}

impl<B: Backend> Front for Tui<B> {
    async fn next_input(&mut self) -> anyhow::Result<Input> {
        loop {
            if let Some(input) = self.queue.pop_front() {
                return Ok(input);
            }
            self.draw_if_needed()?;
            // Both branches are cancel-safe: a received event is handled before the next
            // await, and `Interval::tick` keeps its schedule.
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_terminal_event(event),
                    None => return Ok(Input::Leave(Leave::EndOfInput)),
                },
                _ = self.tick.tick() => self.on_tick(),
            }
        }
    }

    async fn show(&mut self, event: &Event) -> anyhow::Result<()> {
        let now = self.now_ms();
        self.model.on_event(event, now);
        self.dirty = true;
        // Drawn now: a decision must not wait for the next key or tick.
        self.draw_if_needed()
    }

    fn status_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(STATUS_EVERY_MS))
    }

    fn describe(&mut self, info: TerminalInfo) {
        self.model.describe(&info);
        self.dirty = true;
    }

    fn wants_description(&self) -> bool {
        true
    }
}

/// Reads terminal events on a thread of its own and hands them over through a bounded
/// channel. The thread ends when the receiver is gone (at its next event) or the terminal
/// cannot be read.
pub fn spawn_terminal_reader() -> std::io::Result<mpsc::Receiver<TermEvent>> {
    let (tx, rx) = mpsc::channel(TERMINAL_EVENTS_MAX);
    std::thread::Builder::new()
        .name("tui-keys".into())
        .spawn(move || {
            loop {
                match crossterm::event::read() {
                    Ok(event) => {
                        if tx.blocking_send(event).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the terminal");
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

/// Puts the real terminal in raw mode on the alternate screen, with a panic hook that
/// restores it first (ratatui's); [`restore`] undoes it. Refused when stdout is not a
/// terminal.
pub fn enter() -> anyhow::Result<ratatui::DefaultTerminal> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--ui tui needs a terminal on stdin and stdout; scripts and services without one use --ui jsonl"
        );
    }
    ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot set up the terminal: {e}"))
}

/// Leaves raw mode and the alternate screen; safe to call more than once.
pub fn restore() {
    ratatui::restore();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keypad_keys_map_to_model_keys() {
        assert_eq!(key_of(&press(KeyCode::Char('7'))), Some(Key::Digit(7)));
        assert_eq!(key_of(&press(KeyCode::Char(','))), Some(Key::Dot));
        assert_eq!(key_of(&press(KeyCode::Char('+'))), Some(Key::Plus));
        assert_eq!(key_of(&press(KeyCode::Enter)), Some(Key::Enter));
        assert_eq!(key_of(&press(KeyCode::Delete)), Some(Key::Backspace));
        assert_eq!(key_of(&press(KeyCode::F(1))), Some(Key::Help));
        assert_eq!(key_of(&press(KeyCode::Char('a'))), Some(Key::Char('a')));
        assert_eq!(key_of(&press(KeyCode::PageUp)), None);
    }
}
