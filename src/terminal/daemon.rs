//! The terminal daemon's main loop over any front end ([`Front`]): staff's input, the
//! reader, the sync task's reports, the status tick and a signal, polled in that order.
//!
//! Each command and each presented card goes to the [`Session`], which says what to show; the
//! background [`SyncTask`] replays the journal and refreshes the caches, and reports through
//! a channel. Every way out of [`run`] stops the sync task and closes the journal.

use super::client::LedgerClient;
use super::config::TerminalConfig;
use super::frontend::{Front, Input, JsonlFrontend, Leave, TerminalInfo};
use super::journal::Journal;
use super::metrics::ReaderGauge;
use super::session::{Session, card_event};
use super::sync::{SharedJournal, SyncHandle, SyncTask, with_journal};
use super::tap::recover;
use crate::protocol::events::Event;
use crate::reader::ReaderEvent;
use crate::reader::core::Feedback;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

/// 10 ms waits at shutdown for the sync task's last journal call, at most.
const SHUTDOWN_JOURNAL_WAITS_MAX: u32 = 300;

/// A terminal ready to run: its session and its sync task, over one journal.
pub struct Daemon {
    session: Session,
    sync: SyncTask,
}

impl Daemon {
    /// Opens the journal and recovers from a crash: every online attempt that was being
    /// sent when the daemon stopped is in doubt, and gets a void.
    pub fn open(config: TerminalConfig) -> anyhow::Result<Daemon> {
        let journal = Journal::open(&config.journal).map_err(|e| {
            anyhow::anyhow!("cannot open the journal {}: {e}", config.journal.display())
        })?;
        Daemon::with_journal_handle(config, journal)
    }

    /// A daemon over an already opened journal (tests open one with a size limit to see
    /// what a full disk does); runs the same recovery as [`Daemon::open`].
    pub fn with_journal_handle(
        config: TerminalConfig,
        mut journal: Journal,
    ) -> anyhow::Result<Daemon> {
        recover(&mut journal)?;
        let (client, sync_client) = (
            LedgerClient::for_terminal(&config)?,
            LedgerClient::for_terminal(&config)?,
        );
        let journal: SharedJournal = Arc::new(Mutex::new(journal));
        let online = Arc::new(AtomicBool::new(true));
        let tap_in_flight = Arc::new(AtomicBool::new(false));
        // The reader's state: set by the session, read by the metrics and the status reports.
        let reader = ReaderGauge::default();
        Ok(Daemon {
            sync: SyncTask::new(
                Arc::clone(&journal),
                sync_client,
                config.clone(),
                Arc::clone(&online),
                Arc::clone(&tap_in_flight),
                reader.clone(),
            ),
            session: Session::new(config, journal, client, online, tap_in_flight, reader),
        })
    }

    /// Who this terminal is and what it sells, from the journal's caches.
    pub fn info(&self) -> TerminalInfo {
        self.session.info()
    }

    /// Handles one command line (outside the loop); returns the events to write and
    /// whether to stop.
    pub async fn handle_line(&mut self, line: &str) -> (Vec<Event>, bool) {
        self.session.handle_line(line).await
    }
}

/// The reader layer as the main loop sees it: what it reports, and where feedback goes.
pub struct ReaderLink {
    /// Events from the reader thread.
    pub events: mpsc::Receiver<ReaderEvent>,
    /// Asks the reader for LED and buzzer feedback; must not block.
    pub feedback: FeedbackFn,
}

/// Gives feedback on the named reader.
pub type FeedbackFn = Box<dyn Fn(&str, Feedback) + Send>;

/// The next reader event; never, once the reader is gone (or with no reader at all).
async fn next_reader_event(link: &mut Option<ReaderLink>) -> ReaderEvent {
    if let Some(l) = link {
        if let Some(event) = l.events.recv().await {
            return event;
        }
        tracing::error!("the reader layer stopped");
        *link = None;
    }
    std::future::pending().await
}

/// Runs the daemon on the JSON-lines interface until `quit`, end of input, or `shutdown`.
/// With `reader`, cards come from it (PC/SC); without, from `tap` commands.
pub async fn run_jsonl<R, W>(
    daemon: Daemon,
    input: R,
    output: W,
    shutdown: impl Future<Output = ()>,
    reader: Option<ReaderLink>,
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut front = JsonlFrontend::new(input, output);
    run(daemon, &mut front, shutdown, reader).await.map(|_| ())
}

/// Runs the daemon with front end `front` until it leaves, `quit`, or `shutdown`; says why
/// it stopped. With `reader`, cards come from it (PC/SC); without, from `tap` commands.
pub async fn run<F: Front>(
    daemon: Daemon,
    front: &mut F,
    shutdown: impl Future<Output = ()>,
    reader: Option<ReaderLink>,
) -> anyhow::Result<Leave> {
    let Daemon { mut session, sync } = daemon;
    check_watchdog_allows(
        session.config().timeout_ms,
        crate::service::watchdog_interval(),
    )?;
    // Pinned before the first round, so that a signal during it is heard too.
    let shutdown = std::pin::pin!(shutdown);
    let metrics = match session.config().metrics_listen {
        Some(addr) => {
            let listener = super::metrics::bind(addr).await?;
            tracing::info!(%addr, "metrics served");
            Some(tokio::spawn(super::metrics::serve(
                listener,
                session.metrics_probe(),
            )))
        }
        None => None,
    };
    // Every way out, errors included, goes through the cleanup below.
    let outcome = start(&mut session, sync, front, shutdown, reader).await;
    if let Some(metrics) = metrics {
        metrics.abort();
        // Its journal handle goes with it, before the journal is closed.
        let _ = metrics.await;
    }
    close_journal(session.journal()).await;
    outcome
}

/// The first sync round, then the sync task and the loop; the sync task is stopped on every
/// way out (and is gone when this returns).
async fn start<F: Front>(
    session: &mut Session,
    sync: SyncTask,
    front: &mut F,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    reader: Option<ReaderLink>,
) -> anyhow::Result<Leave> {
    // What the journal's caches already know (name, menu, staff) is shown while starting.
    if front.wants_description() {
        front.describe(session.info());
    }
    front.starting().await?;
    // A first round before `ready`, so that a terminal with network starts with fresh
    // caches; the background task starts after it, so two rounds never run at once. A
    // signal drops it at its next await (a journal call already on the blocking pool
    // finishes, as one transaction; an unanswered batch stays pending and is sent again).
    tokio::select! {
        // The signal first: polled (its handler installed) before the round sends anything.
        biased;
        () = &mut shutdown => return Ok(Leave::Signal),
        first = sync.first_round() => first?,
    }
    let (mut task, mut reports) = sync.spawn();
    let outcome = serve(session, front, shutdown, reader, &mut task, &mut reports).await;
    crate::service::stopping();
    task.stop().await;
    outcome
}

/// The loop, from `ready` until the front end leaves, `quit`, a signal, or an error.
async fn serve<F: Front>(
    session: &mut Session,
    front: &mut F,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    mut reader: Option<ReaderLink>,
    sync: &mut SyncHandle,
    reports: &mut mpsc::Receiver<Event>,
) -> anyhow::Result<Leave> {
    if front.wants_description() {
        front.describe(session.info());
    }
    front.show(&session.ready_event()).await?;
    crate::service::ready("ready for staff");
    let mut watchdog_tick = crate::service::watchdog_interval().map(|every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut status_tick = front.status_every().map(|every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut last_status: Option<Event> = None;
    Ok(loop {
        tokio::select! {
            // Polled in this order, not at random: staff's input first, so that a Cancel (Esc,
            // or the front end's timeout) ready at the same time as a card disarms before the
            // card is read, and the card never pays for an order staff just cancelled; then
            // the reader, before the sync task's reports and the status line, which can wait.
            // A front end is ready only with input, so the others are not starved.
            biased;
            input = front.next_input() => {
                let command = match input? {
                    Input::Command(command) => command,
                    Input::Refused(event) => { front.show(&event).await?; continue; }
                    Input::Leave(leave) => break leave,
                };
                let (events, stop) = session.handle(command).await;
                for event in &events {
                    front.show(event).await?;
                }
                if stop { break Leave::Quit; }
            }
            event = next_reader_event(&mut reader) => {
                let name = match &event {
                    ReaderEvent::Card { reader, .. } | ReaderEvent::Failed { reader, .. } => reader.clone(),
                    _ => String::new(),
                };
                // The card is shown as soon as it is read, before the ledger is asked; a card
                // the session refuses is not shown as a card at all.
                let refusal = match &event {
                    ReaderEvent::Card { uid, reader: r, card_type, key_version, repeat: false, .. } => {
                        let refusal = session.refusal(uid, *key_version, r);
                        if refusal.is_none() {
                            front.show(&card_event(uid, r, Some(*card_type), *key_version)).await?;
                        }
                        refusal
                    }
                    _ => None,
                };
                let (events, feedback) = match refusal {
                    Some(refused) => refused,
                    None => session.on_reader(event).await,
                };
                // Feedback first: the light should not wait for the screen.
                if let (Some(feedback), Some(link)) = (feedback, &reader) {
                    (link.feedback)(&name, feedback);
                }
                for event in &events {
                    front.show(event).await?;
                }
            }
            Some(event) = reports.recv() => {
                if front.wants_description() {
                    front.describe(session.info());
                }
                front.show(&event).await?;
            }
            _ = next_tick(&mut status_tick) => {
                let status = session.status_event();
                if last_status.as_ref() != Some(&status) {
                    // The caches may have changed with the last round that reached the ledger.
                    let synced_again = match (&last_status, &status) {
                        (Some(Event::Status(a)), Event::Status(b)) => a.last_sync_at != b.last_sync_at,
                        _ => true,
                    };
                    if synced_again && front.wants_description() {
                        front.describe(session.info());
                    }
                    front.show(&status).await?;
                    last_status = Some(status);
                }
            }
            // The loop turns, and the journal answers (a read through the lock the sync
            // task shares): the service manager's watchdog is fed. A loop stuck in a call,
            // or a journal that no longer answers, starves it and systemd restarts the
            // terminal.
            _ = next_tick(&mut watchdog_tick) => {
                match with_journal(session.journal(), |j| j.status_counts()).await {
                    Ok(_) => crate::service::feed_watchdog(),
                    Err(e) => tracing::warn!(error = %e, "the journal does not answer: the watchdog is not fed"),
                }
            }
            () = &mut shutdown => break Leave::Signal,
            // The sync task never ends by itself: if it did (a panic), nothing would reach
            // the ledger any more. Stop, so that the service manager starts a whole terminal.
            joined = sync.ended() => {
                return Err(anyhow::anyhow!("the sync task stopped: {joined}"));
            }
        }
    })
}

/// Refuses a watchdog the loop could starve by doing its job: a tap waits for the ledger up
/// to `[ledger] timeout_ms`, and a void of an attempt left in doubt may follow, so the loop
/// may be busy twice that long between two feeds.
fn check_watchdog_allows(timeout_ms: u64, feed_every: Option<Duration>) -> anyhow::Result<()> {
    let Some(every) = feed_every else {
        return Ok(());
    };
    let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    if timeout_ms.saturating_mul(2) > every_ms {
        anyhow::bail!(
            "[ledger] timeout_ms = {timeout_ms} is too long for the service's watchdog, fed every \
             {every_ms} ms (a third of WatchdogSec): a tap may hold the terminal twice \
             timeout_ms; keep timeout_ms at most {} or raise WatchdogSec",
            every_ms / 2
        );
    }
    Ok(())
}

/// Waits until no one else holds the journal (journal calls a sync round started on the
/// blocking pool finish after the round is dropped; bounded: they are single transactions),
/// then checkpoints it on the blocking pool, so that dropping the daemon closes it cleanly.
async fn close_journal(journal: &SharedJournal) {
    for _ in 0..SHUTDOWN_JOURNAL_WAITS_MAX {
        if Arc::strong_count(journal) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The journal is consistent after every call; closing it is all that is left.
    let _ = with_journal(journal, |j| j.checkpoint()).await;
}

/// The next tick of `tick`; never, without one.
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watchdog_shorter_than_two_online_decisions_is_refused() {
        assert!(check_watchdog_allows(60_000, None).is_ok());
        assert!(check_watchdog_allows(1_500, Some(Duration::from_secs(10))).is_ok());
        assert!(check_watchdog_allows(5_000, Some(Duration::from_secs(10))).is_ok());
        let err = check_watchdog_allows(5_001, Some(Duration::from_secs(10))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("[ledger] timeout_ms = 5001") && text.contains("at most 5000"),
            "{text}"
        );
    }
}
