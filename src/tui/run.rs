//! The TUI as the daemon's front end: terminal events (keys, resizes) go through the
//! [`Model`], which asks the daemon for commands; the daemon's events come back into the
//! model; the screen is drawn again only when something on it may have changed.
//!
//! Keys are read by a thread of their own (crossterm's blocking `read`), which hands them to
//! the async loop through a bounded channel; tests hand in events the same way, and draw on
//! ratatui's `TestBackend`.

use super::model::{Action, Key, Model};
use super::view;
use crate::protocol::commands::Command;
use crate::protocol::events::Event;
use crate::terminal::frontend::{Front, Input, Leave, TerminalInfo};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::Backend;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often time is looked at: timeouts on screen and the clock (a redraw follows only
/// when one of them changed what is shown).
pub const TICK_MS: u64 = 250;
/// How often the daemon's status is refreshed for the status bar (drawn only when changed).
pub const STATUS_EVERY_MS: u64 = 1_000;
/// Terminal events waiting for the loop, at most (a key held down fills it; more wait in
/// the tty).
pub const TERMINAL_EVENTS_MAX: usize = 64;

/// What a key means before the model sees it: the demo maps its own keys (cards, network,
/// mode) here. Returns the inputs for the loop when it took the key. It never sees the key
/// that closes the help.
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

/// The local time's offset from UTC, in seconds.
pub fn local_offset_s() -> i32 {
    chrono::Local::now().offset().local_minus_utc()
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
        mut model: Model,
        clock: Box<dyn Fn() -> String>,
    ) -> Self {
        model.utc_offset_s = Some(local_offset_s());
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

    /// Takes the current minute from `minute` instead of the wall clock (tests).
    pub fn with_minute(mut self, minute: fn() -> Option<chrono::DateTime<chrono::Utc>>) -> Self {
        self.minute = minute;
        self
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
                    self.queue.push_back(Input::Command(Command::Quit {}));
                    return;
                }
                // A key that closes an overlay (the help) does only that: neither the hook
                // (the demo's Esc leaves, its letters tap cards) nor the model acts on it.
                if self.model.close_overlay() {
                    self.dirty = true;
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
        if self.model.minute != minute || self.model.utc_offset_s.is_none() {
            self.model.minute = minute;
            // The offset changes with daylight saving time: looked at once a minute (and
            // for a model just put in place).
            self.model.utc_offset_s = Some(local_offset_s());
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

    async fn starting(&mut self) -> anyhow::Result<()> {
        // The first sync may take a while (a backlog, a slow ledger): the screen says the
        // terminal is starting instead of staying black.
        self.model.notice = Some("starting: reaching the ledger…".into());
        self.dirty = true;
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

/// Refused when stdin or stdout is not a terminal (the screens would have nowhere to go).
pub fn check_terminal() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "the staff screens need a terminal on stdin and stdout (scripts and services without one: cashless terminal --ui jsonl)"
        );
    }
    Ok(())
}

/// Puts the real terminal in raw mode on the alternate screen, with a panic hook that
/// restores it first (ratatui's); [`restore`] undoes it. Refused when stdout is not a
/// terminal.
pub fn enter() -> anyhow::Result<ratatui::DefaultTerminal> {
    check_terminal()?;
    ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot set up the terminal: {e}"))
}

/// Leaves raw mode and the alternate screen; safe to call more than once.
pub fn restore() {
    ratatui::restore();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CardUid, Cents};
    use crate::protocol::api::TerminalKind;
    use crate::protocol::events::Decision;
    use crate::tui::model::{MenuItem, Screen, StaffItem};
    use ratatui::backend::TestBackend;

    fn tui() -> (Tui<TestBackend>, mpsc::Sender<TermEvent>) {
        let model = Model::new(
            "bar-1".into(),
            TerminalKind::Bar,
            vec![MenuItem {
                product_id: "beer-05".into(),
                name: "Beer".into(),
                price: Cents::new(450),
                tax_rate_basis_points: Some(1900),
                min_age: None,
                open_price_max: None,
                returnable: false,
                deposit_product_id: None,
            }],
            vec![StaffItem {
                staff_id: "s-1".into(),
                name: "Sam".into(),
            }],
        );
        let (tx, rx) = mpsc::channel(8);
        let terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let tui = Tui::new(terminal, rx, model, Box::new(|| "21:14".into())).with_minute(|| None);
        (tui, tx)
    }

    fn key(c: char) -> TermEvent {
        TermEvent::Key(press(KeyCode::Char(c)))
    }

    /// Runs the front end for `seconds` of (paused, auto-advancing) time; returns what it
    /// gave the loop, if anything.
    async fn run_for(tui: &mut Tui<TestBackend>, seconds: u64) -> Option<Input> {
        tokio::time::timeout(Duration::from_secs(seconds), tui.next_input())
            .await
            .ok()
            .map(Result::unwrap)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_screen_is_drawn_once_and_each_key_is_drawn_at_once() {
        let (mut tui, keys) = tui();
        // Ten idle minutes: thousands of ticks, one frame.
        assert_eq!(run_for(&mut tui, 600).await, None);
        assert_eq!(tui.draws(), 1);
        // A key that changes the screen is drawn before the loop waits again.
        keys.send(key('1')).await.unwrap();
        assert_eq!(run_for(&mut tui, 1).await, None);
        assert_eq!(tui.draws(), 2);
        assert!(matches!(
            tui.model().screen,
            Screen::Login {
                picked: Some(0),
                ..
            }
        ));
        // A resize redraws; nothing else does.
        keys.send(TermEvent::Resize(80, 24)).await.unwrap();
        assert_eq!(run_for(&mut tui, 60).await, None);
        assert_eq!(tui.draws(), 3);
        // The PIN and Enter become the daemon's login command.
        for c in ['1', '2', '3', '4'] {
            keys.send(key(c)).await.unwrap();
        }
        keys.send(TermEvent::Key(press(KeyCode::Enter)))
            .await
            .unwrap();
        assert_eq!(
            run_for(&mut tui, 1).await,
            Some(Input::Command(Command::Login {
                staff_id: "s-1".into(),
                pin: "1234".into()
            }))
        );
        // Ctrl-C leaves, even in raw mode.
        keys.send(TermEvent::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )))
        .await
        .unwrap();
        assert_eq!(
            run_for(&mut tui, 1).await,
            Some(Input::Command(Command::Quit {}))
        );
        // The keyboard gone: the front end says so instead of waiting forever.
        drop(keys);
        assert_eq!(
            run_for(&mut tui, 1).await,
            Some(Input::Leave(Leave::EndOfInput))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_decision_is_drawn_when_it_arrives_and_leaves_by_itself() {
        let (mut tui, _keys) = tui();
        run_for(&mut tui, 1).await;
        let drawn = tui.draws();
        let decision = Event::Decision(Decision {
            client_request_id: None,
            operation: "order",
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            status: "approved_online",
            reason: None,
            total_cents: Cents::new(450),
            balance_cents: Some(Cents::new(550)),
            target_client_request_id: None,
            vouchers_used: None,
            vouchers_granted: None,
        });
        tui.show(&decision).await.unwrap();
        assert_eq!(tui.draws(), drawn + 1);
        let screen = format!("{}", tui.terminal().backend());
        assert!(screen.contains("APPROVED"), "{screen}");
        // The result goes after its time, by a tick alone, and that is drawn too.
        run_for(&mut tui, 10).await;
        assert_eq!(tui.draws(), drawn + 2);
        assert!(!matches!(tui.model().screen, Screen::Result { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_that_closes_the_help_reaches_no_hook() {
        // A hook like the demo's: Esc at the login screen leaves, `a` taps a card.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook_seen = std::sync::Arc::clone(&seen);
        let (tui, keys) = tui();
        let mut tui = tui.with_hook(Box::new(move |key: &KeyEvent, _: &mut Model| {
            hook_seen.lock().unwrap().push(key.code);
            match key.code {
                KeyCode::Esc => Some(vec![Input::Leave(Leave::Quit)]),
                KeyCode::Char('a') => Some(vec![Input::Command(Command::Tap {
                    uid: "04A1B2C3".into(),
                })]),
                _ => None,
            }
        }));
        let login = tui.model().screen.clone();
        // `?` then Esc, `?` then `a`, `?` then a key the model does not use: each closes the
        // help and does nothing else.
        for closing in [
            press(KeyCode::Esc),
            press(KeyCode::Char('a')),
            press(KeyCode::PageUp),
        ] {
            keys.send(key('?')).await.unwrap();
            assert_eq!(run_for(&mut tui, 1).await, None);
            assert!(tui.model().help);
            let drawn = tui.draws();
            keys.send(TermEvent::Key(closing)).await.unwrap();
            assert_eq!(run_for(&mut tui, 1).await, None, "{closing:?}");
            assert!(!tui.model().help, "{closing:?}");
            assert_eq!(tui.model().screen, login);
            // Closing it is drawn at once.
            assert_eq!(tui.draws(), drawn + 1);
        }
        assert_eq!(*seen.lock().unwrap(), vec![KeyCode::Char('?'); 3]);
        // The help closed, the hook has its keys back: Esc leaves.
        keys.send(TermEvent::Key(press(KeyCode::Esc)))
            .await
            .unwrap();
        assert_eq!(run_for(&mut tui, 1).await, Some(Input::Leave(Leave::Quit)));
    }

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
