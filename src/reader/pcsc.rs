//! The PC/SC backend: a thread with its own PC/SC context that watches the reader through
//! pcscd and turns presentations into [`ReaderEvent`]s; a second thread, with a context of
//! its own, sends LED and buzzer feedback (PC/SC calls on one context are serialized, and the
//! watcher's context is always blocked waiting for a change).
//!
//! What it survives, without a busy loop (every wait blocks in pcscd or sleeps with backoff):
//! no reader at startup, a reader unplugged and plugged back (pcscd's plug-and-play
//! notification), pcscd stopped, restarted or exited on idle (the old context fails with
//! `NoService`, `CommError` or `SecurityViolation`; a new one is established with backoff),
//! two readers (the name filter picks one). [`PcscReader::stop`] cancels the blocking call and
//! joins the threads.

use super::card_auth::{AuthError, Genuine, MasterKeys, Step, TAP_EXCHANGES_MAX, TapAuth};
use super::core::{
    BUZZER_ON_DETECT_OFF, Debouncer, Feedback, GET_DATA_UID, ReadCard, ReadError, auth_outcome,
    card_type, choose_reader, parse_uid, shown_uid,
};
use super::{ReaderEvent, ReaderOptions};
use chrono::Utc;
use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// First wait before establishing a new context after pcscd went away.
const BACKOFF_START_MS: u64 = 100;
/// Longest wait between two attempts to reach pcscd.
const BACKOFF_CAP_MS: u64 = 5_000;
/// Feedback requests waiting for the feedback thread, at most (older ones are dropped).
const FEEDBACK_QUEUE_MAX: usize = 8;
/// Cancels sent to the watcher at exit, at most, and how far apart.
const STOP_CANCELS_MAX: u32 = 300;
const STOP_CANCEL_INTERVAL_MS: u64 = 10;
/// How long `wait_for_card` waits before connecting again to a card another program holds.
const SHARING_RETRY_MS: u64 = 50;
/// IOCTL_CCID_ESCAPE: how libccid passes a reader command without a card.
const IOCTL_CCID_ESCAPE: pcsc::ffi::DWORD = 3500;

/// The running PC/SC reader layer.
pub struct PcscReader {
    stop: Arc<AtomicBool>,
    /// The watcher's current context, so that `stop` can cancel its blocking wait.
    current: Arc<Mutex<Option<Context>>>,
    watcher: Option<JoinHandle<()>>,
    feedback: Option<std::sync::mpsc::SyncSender<(String, Feedback)>>,
    feedback_thread: Option<JoinHandle<()>>,
    feedback_enabled: bool,
}

impl PcscReader {
    /// Starts the threads; events go to `events`.
    pub fn start(
        options: ReaderOptions,
        events: mpsc::Sender<ReaderEvent>,
    ) -> std::io::Result<PcscReader> {
        let stop = Arc::new(AtomicBool::new(false));
        let current = Arc::new(Mutex::new(None));
        let (feedback_tx, feedback_rx) = std::sync::mpsc::sync_channel(FEEDBACK_QUEUE_MAX);
        let feedback_thread = std::thread::Builder::new()
            .name("pcsc-feedback".into())
            .spawn(move || feedback_loop(&feedback_rx))?;
        let feedback_enabled = options.feedback;
        let watcher = {
            let stop = Arc::clone(&stop);
            let current = Arc::clone(&current);
            std::thread::Builder::new()
                .name("pcsc-watch".into())
                .spawn(move || watch(&options, &events, &stop, &current))?
        };
        Ok(PcscReader {
            stop,
            current,
            watcher: Some(watcher),
            feedback: Some(feedback_tx),
            feedback_thread: Some(feedback_thread),
            feedback_enabled,
        })
    }

    /// Asks for LED and buzzer feedback on `reader`; never blocks, never fails a sale.
    pub fn feedback(&self, reader: &str, feedback: Feedback) {
        if !self.feedback_enabled {
            return;
        }
        if let Some(tx) = &self.feedback {
            let _ = tx.try_send((reader.to_owned(), feedback));
        }
    }

    /// Stops the threads: cancels the blocking wait and joins.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            // libpcsclite drops a cancel that arrives while the wait is not inside pcscd yet
            // (before it registered, or between its 60 s slices), and still reports success:
            // cancel again until the watcher is gone (bounded). An invalid-handle error (a
            // context being replaced) is harmless.
            for _ in 0..STOP_CANCELS_MAX {
                if watcher.is_finished() {
                    break;
                }
                if let Ok(current) = self.current.lock()
                    && let Some(ctx) = current.as_ref()
                {
                    let _ = ctx.cancel();
                }
                std::thread::sleep(Duration::from_millis(STOP_CANCEL_INTERVAL_MS));
            }
            if watcher.is_finished() {
                let _ = watcher.join();
            } else {
                tracing::warn!("the PC/SC watcher did not stop; leaving it behind");
            }
        }
        self.feedback = None;
        if let Some(thread) = self.feedback_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PcscReader {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Errors after which the context is dead: pcscd stopped or restarted.
fn service_lost(e: pcsc::Error) -> bool {
    matches!(
        e,
        pcsc::Error::NoService
            | pcsc::Error::ServiceStopped
            | pcsc::Error::CommError
            | pcsc::Error::SecurityViolation
            | pcsc::Error::InvalidHandle
            | pcsc::Error::UnknownError
            | pcsc::Error::InternalError
    )
}

/// Sleeps `ms`, waking early when `stop` is set.
fn sleep_unless_stopped(ms: u64, stop: &AtomicBool) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn send(events: &mpsc::Sender<ReaderEvent>, event: ReaderEvent) {
    // The daemon reads events as they come; if it is gone, there is nobody to tell.
    let _ = events.blocking_send(event);
}

/// The watcher: one context after another (a new one each time pcscd goes away).
fn watch(
    options: &ReaderOptions,
    events: &mpsc::Sender<ReaderEvent>,
    stop: &AtomicBool,
    current: &Mutex<Option<Context>>,
) {
    let started = Instant::now();
    let mut watcher = Watcher {
        options,
        events,
        debouncer: Debouncer::new(options.debounce_ms),
        connected: None,
        service_down_told: false,
        started,
    };
    let mut backoff_ms = BACKOFF_START_MS;
    while !stop.load(Ordering::SeqCst) {
        let ctx = match Context::establish(Scope::User) {
            Ok(ctx) => ctx,
            Err(e) => {
                watcher.service_down(&format!("pcscd is not available: {e}"));
                sleep_unless_stopped(backoff_ms, stop);
                backoff_ms = (backoff_ms * 2).min(BACKOFF_CAP_MS);
                continue;
            }
        };
        if let Ok(mut slot) = current.lock() {
            *slot = Some(ctx.clone());
        }
        // `stop` may have been set before the context was published: check after.
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match watcher.run(&ctx, stop) {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "PC/SC context lost; establishing a new one");
                watcher.service_down(&format!("pcscd went away: {e}"));
                // A context that worked: the first retry comes quickly.
                backoff_ms = BACKOFF_START_MS;
                sleep_unless_stopped(backoff_ms, stop);
            }
        }
        if let Ok(mut slot) = current.lock() {
            *slot = None;
        }
    }
    if let Ok(mut slot) = current.lock() {
        *slot = None;
    }
}

struct Watcher<'a> {
    options: &'a ReaderOptions,
    events: &'a mpsc::Sender<ReaderEvent>,
    debouncer: Debouncer,
    /// The reader in use, as announced to the daemon.
    connected: Option<String>,
    /// `Disconnected` was sent for pcscd being away (so it is said once per outage).
    service_down_told: bool,
    started: Instant,
}

/// What the watcher remembers of the reader between two waits.
struct Seen {
    present: bool,
    event_count: u32,
    /// When the card was last seen on the reader.
    seen_at_ms: u64,
}

impl Watcher<'_> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn service_down(&mut self, reason: &str) {
        if let Some(name) = self.connected.take() {
            self.debouncer.forget(&name);
            send(
                self.events,
                ReaderEvent::Disconnected {
                    name,
                    reason: reason.to_owned(),
                },
            );
            self.service_down_told = true;
        } else if !self.service_down_told {
            send(
                self.events,
                ReaderEvent::Disconnected {
                    name: String::new(),
                    reason: reason.to_owned(),
                },
            );
            self.service_down_told = true;
        }
    }

    /// Watches on one context until `stop` (`Ok`) or the context dies (`Err`).
    fn run(&mut self, ctx: &Context, stop: &AtomicBool) -> Result<(), pcsc::Error> {
        let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        let mut seen: Option<Seen> = None;
        let mut waiting_told = false;
        loop {
            // Which reader to use, each time the set of readers may have changed.
            let names = reader_names(ctx)?;
            let chosen = choose_reader(&names, &self.options.name_filter).map(str::to_owned);
            if chosen != self.connected {
                if let Some(old) = self.connected.take() {
                    self.debouncer.forget(&old);
                    send(
                        self.events,
                        ReaderEvent::Disconnected {
                            name: old,
                            reason: "the reader was unplugged".into(),
                        },
                    );
                }
                states.truncate(1);
                seen = None;
                if let Some(name) = &chosen {
                    let c_name =
                        CString::new(name.as_str()).map_err(|_| pcsc::Error::UnknownReader)?;
                    states.push(ReaderState::new(c_name, State::UNAWARE));
                    send(self.events, ReaderEvent::Connected { name: name.clone() });
                    if self.options.feedback {
                        detect_beep_off(name);
                    }
                    waiting_told = false;
                }
                self.connected = chosen;
                self.service_down_told = false;
            }
            if self.connected.is_none() && !waiting_told {
                send(
                    self.events,
                    ReaderEvent::Waiting {
                        filter: self.options.name_filter.clone(),
                    },
                );
                waiting_told = true;
                self.service_down_told = false;
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match ctx.get_status_change(None, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Cancelled) if stop.load(Ordering::SeqCst) => return Ok(()),
                Err(pcsc::Error::Cancelled | pcsc::Error::Timeout) => continue,
                // The reader went away between the listing and the wait: list again.
                Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
                    states.truncate(1);
                    self.connected = None;
                    continue;
                }
                Err(e) => return Err(e),
            }
            states[0].sync_current_state();
            if let Some(state) = states.get_mut(1) {
                let event = state.event_state();
                let atr = state.atr().to_vec();
                let count = state.event_count();
                state.sync_current_state();
                if event.intersects(State::UNKNOWN | State::IGNORE) {
                    // Unplugged: the next listing says so.
                    continue;
                }
                let now = self.now_ms();
                let Some(name) = self.connected.clone() else {
                    continue;
                };
                if event.contains(State::PRESENT) && !event.contains(State::MUTE) {
                    let fresh = match &seen {
                        None => true,
                        Some(s) if !s.present => true,
                        // Removed and presented again between two looks.
                        // The removal is taken to be when it was last seen.
                        Some(s) if s.event_count != count => {
                            self.debouncer.removed(&name, s.seen_at_ms);
                            true
                        }
                        Some(_) => false,
                    };
                    seen = Some(Seen {
                        present: true,
                        event_count: count,
                        seen_at_ms: now,
                    });
                    if fresh {
                        self.read(ctx, &name, &atr, now);
                    }
                } else if event.contains(State::EMPTY) || event.contains(State::MUTE) {
                    if seen.as_ref().is_some_and(|s| s.present) {
                        self.debouncer.removed(&name, now);
                    }
                    seen = Some(Seen {
                        present: false,
                        event_count: count,
                        seen_at_ms: now,
                    });
                }
            }
        }
    }

    /// Reads the card on `reader` and reports the tap, a repeat, or the failed read.
    fn read(&mut self, ctx: &Context, reader: &str, atr: &[u8], now_ms: u64) {
        let at = Utc::now();
        let keys = self.options.keys.as_deref();
        match read_card(ctx, reader, keys, self.options.accept_uid_cards) {
            Ok((uid, key_version)) => {
                let tap = self.debouncer.presented(reader, &uid, now_ms);
                send(
                    self.events,
                    ReaderEvent::Card {
                        reader: reader.to_owned(),
                        uid,
                        card_type: card_type(atr),
                        key_version,
                        repeat: !tap,
                        at,
                    },
                );
            }
            Err(error) => {
                tracing::info!(reader, %error, "failed read");
                send(
                    self.events,
                    ReaderEvent::Failed {
                        reader: reader.to_owned(),
                        error,
                        at,
                    },
                );
            }
        }
    }
}

/// The readers pcscd knows now (none is not an error).
fn reader_names(ctx: &Context) -> Result<Vec<String>, pcsc::Error> {
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Turns the reader's own beep on card detection off (the terminal beeps for decisions);
/// best effort, on a context of its own.
fn detect_beep_off(reader: &str) {
    {
        tracing::debug!(reader, "turning the card-detect beep off (best effort)");
        if let Ok(ctx) = Context::establish(Scope::User)
            && let Ok(name) = CString::new(reader)
            && let Ok(card) = ctx.connect(&name, ShareMode::Direct, Protocols::UNDEFINED)
        {
            let mut buf = [0u8; 64];
            let _ = card.control(
                pcsc::ctl_code(IOCTL_CCID_ESCAPE),
                &BUZZER_ON_DETECT_OFF,
                &mut buf,
            );
        }
    }
}

/// Connects to the card on `reader`, reads its UID with GET DATA and, in AES mode (`keys`),
/// has it prove its key.
fn read_card(
    ctx: &Context,
    reader: &str,
    keys: Option<&MasterKeys>,
    accept_uid_cards: bool,
) -> Result<ReadCard, ReadError> {
    let name = CString::new(reader).map_err(|e| ReadError::Reader(e.to_string()))?;
    let card = ctx
        .connect(&name, ShareMode::Shared, Protocols::ANY)
        .map_err(|e| ReadError::Reader(e.to_string()))?;
    let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE];
    let answer = card
        .transmit(&GET_DATA_UID, &mut buf)
        .map_err(|e| ReadError::Reader(e.to_string()));
    let read = match keys {
        None => answer.and_then(parse_uid).map(|uid| (uid, None)),
        Some(keys) => answer.and_then(|a| {
            let shown = shown_uid(a)?;
            let result = authenticate(&card, keys, shown)?;
            auth_outcome(shown, result, accept_uid_cards)
        }),
    };
    // Left as it is: an authenticated session ends when the card leaves the field (and a
    // reset of a card that already left confuses vpcd's presence tracking).
    let _ = card.disconnect(Disposition::LeaveCard);
    read
}

/// Runs [`TapAuth`] over the card that showed `shown` (fresh random challenges): the state
/// machine decides, this carries the bytes. A failed exchange (the card went away) is no
/// verdict.
pub fn authenticate_card(
    card: &pcsc::Card,
    keys: &MasterKeys,
    shown: &[u8],
) -> Result<Result<Genuine, AuthError>, ExchangeError> {
    let (mut flow, apdu) = TapAuth::start(keys, shown, rand::random());
    drive(card, apdu, TAP_EXCHANGES_MAX, |answer| flow.next(answer))
}

/// [`authenticate_card`] for a tap: a failed exchange is a read to try again.
fn authenticate(
    card: &pcsc::Card,
    keys: &MasterKeys,
    shown: &[u8],
) -> Result<Result<Genuine, AuthError>, ReadError> {
    authenticate_card(card, keys, shown).map_err(|e| {
        ReadError::Reader(format!(
            "{e} during the card's authentication; present it again"
        ))
    })
}

/// Why [`drive`] stopped before the flow decided.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The card went away, or the reader failed.
    #[error("{0}")]
    Transmit(pcsc::Error),
    /// The flow wanted more exchanges than its limit.
    #[error("no verdict within {0} exchanges")]
    TooMany(usize),
}

/// Carries a sans-IO flow's commands to `card` and its answers back, starting with `first`,
/// for at most `exchanges_max` exchanges: the flow decides, this only moves bytes.
pub fn drive<T, E>(
    card: &pcsc::Card,
    first: Vec<u8>,
    exchanges_max: usize,
    mut next: impl FnMut(&[u8]) -> Result<Step<T>, E>,
) -> Result<Result<T, E>, ExchangeError> {
    let mut apdu = first;
    let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE];
    for _ in 0..exchanges_max {
        let answer = card
            .transmit(&apdu, &mut buf)
            .map_err(ExchangeError::Transmit)?;
        match next(answer) {
            Ok(Step::Send(command)) => apdu = command,
            Ok(Step::Done(done)) => return Ok(Ok(done)),
            Err(e) => return Ok(Err(e)),
        }
    }
    Err(ExchangeError::TooMany(exchanges_max))
}

/// Why no card could be had for a card-station command.
#[derive(Debug, thiserror::Error)]
pub enum StationError {
    /// pcscd could not be reached.
    #[error("cannot reach pcscd ({0}); is it running? (systemctl start pcscd)")]
    NoService(pcsc::Error),
    /// No matching reader, or no card on it, in time.
    #[error("{what} within {wait_ms} ms")]
    NoCard {
        /// What was missing.
        what: String,
        /// How long it was waited for.
        wait_ms: u64,
    },
    /// The reader failed.
    #[error("the reader failed: {0}")]
    Reader(pcsc::Error),
}

/// A card on a reader, connected exclusively for a card-station command.
pub struct PresentedCard {
    /// The reader's name.
    pub reader: String,
    /// The card's ATR.
    pub atr: Vec<u8>,
    /// The connection (left as it is when dropped: the card keeps its state).
    pub card: pcsc::Card,
}

impl PresentedCard {
    /// Lets the card go, as it is (an authenticated session ends when it leaves the field;
    /// a reset of a card that already left confuses vpcd's presence tracking).
    pub fn release(self) {
        let _ = self.card.disconnect(Disposition::LeaveCard);
    }
}

/// Waits up to `wait_ms` for a card on the first reader whose name contains `name_filter`
/// (empty: the first contactless reader), and connects to it. A card already on the reader
/// counts. For `cashless card check` and `card issue`, which hold a card, not a stream of taps.
pub fn wait_for_card(name_filter: &str, wait_ms: u64) -> Result<PresentedCard, StationError> {
    let ctx = Context::establish(Scope::User).map_err(StationError::NoService)?;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
    loop {
        let names = reader_names(&ctx).map_err(StationError::Reader)?;
        let chosen = choose_reader(&names, name_filter).map(str::to_owned);
        let watched = states
            .get(1)
            .map(|s| s.name().to_string_lossy().into_owned());
        if chosen != watched {
            states.truncate(1);
            if let Some(name) = &chosen {
                let c_name = CString::new(name.as_str())
                    .map_err(|_| StationError::Reader(pcsc::Error::UnknownReader))?;
                states.push(ReaderState::new(c_name, State::UNAWARE));
            }
        }
        if let (Some(name), Some(state)) = (&chosen, states.get(1)) {
            let event = state.event_state();
            if event.contains(State::PRESENT) && !event.contains(State::MUTE) {
                let atr = state.atr().to_vec();
                // Exclusive: a terminal daemon on the same reader cannot slip a tap's commands
                // between issuing's (its reads fail while the card is held).
                match ctx.connect(state.name(), ShareMode::Exclusive, Protocols::ANY) {
                    Ok(card) => {
                        return Ok(PresentedCard {
                            reader: name.clone(),
                            atr,
                            card,
                        });
                    }
                    // Gone between the look and the connection: wait for the next.
                    Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {}
                    // Another program is talking to it (a daemon reading it): in a moment.
                    Err(pcsc::Error::SharingViolation) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(SHARING_RETRY_MS));
                        continue;
                    }
                    Err(pcsc::Error::SharingViolation) => {
                        return Err(StationError::NoCard {
                            what: format!(
                                "the card on {name} stayed in use by another program (a \
                                 terminal daemon on the same reader?)"
                            ),
                            wait_ms,
                        });
                    }
                    Err(e) => return Err(StationError::Reader(e)),
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StationError::NoCard {
                what: match &chosen {
                    None if name_filter.is_empty() => "no contactless reader".to_owned(),
                    None => format!("no reader whose name contains {name_filter:?}"),
                    Some(name) => format!("no card on {name}"),
                },
                wait_ms,
            });
        }
        match ctx.get_status_change(left, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
                states.truncate(1);
            }
            Err(e) => return Err(StationError::Reader(e)),
        }
        for state in &mut states {
            state.sync_current_state();
        }
    }
}

/// The feedback thread: one request at a time, on a context of its own; every failure is
/// logged and forgotten (feedback never fails a sale).
fn feedback_loop(requests: &std::sync::mpsc::Receiver<(String, Feedback)>) {
    let mut ctx: Option<Context> = None;
    while let Ok((reader, feedback)) = requests.recv() {
        if ctx.is_none() {
            ctx = Context::establish(Scope::User).ok();
        }
        let Some(c) = &ctx else { continue };
        match send_feedback(c, &reader, feedback) {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(reader, error = %e, "reader feedback failed (ignored)");
                if service_lost(e) {
                    ctx = None;
                }
            }
        }
    }
}

/// LED and buzzer through the card (shared), or, with no card, as a reader escape command.
fn send_feedback(ctx: &Context, reader: &str, feedback: Feedback) -> Result<(), pcsc::Error> {
    let name = CString::new(reader).map_err(|_| pcsc::Error::UnknownReader)?;
    let apdu = feedback.apdu();
    let mut buf = [0u8; 64];
    match ctx.connect(&name, ShareMode::Shared, Protocols::ANY) {
        Ok(card) => {
            let result = card.transmit(&apdu, &mut buf).map(|_| ());
            let _ = card.disconnect(Disposition::LeaveCard);
            result
        }
        Err(_) => {
            let card = ctx.connect(&name, ShareMode::Direct, Protocols::UNDEFINED)?;
            card.control(pcsc::ctl_code(IOCTL_CCID_ESCAPE), &apdu, &mut buf)
                .map(|_| ())
        }
    }
}
