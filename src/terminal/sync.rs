//! The background sync task: everything the terminal exchanges with the ledger outside a
//! tap, and the one place that runs it.
//!
//! A round ([`SyncTask::first_round`] before the terminal is ready, then forever on a task of
//! its own, [`SyncTask::spawn`]) repairs what a journal failure left behind, checks who the
//! ledger says this terminal is, replays the journal, pulls the card feed, the catalog, the
//! staff list and the top-up limits, uploads the scan log, sends the shift close-outs and
//! reports the terminal's state ([`status_due`]).
//! After a round that failed it waits with backoff and jitter; it reports settled entries to
//! the main loop through a channel and says whether the ledger was reached through the
//! shared `online` flag.
//!
//! Replay ([`replay_round`]) takes the pending entries in `terminal_seq` order (at most
//! `batch_max`), sends them through `POST /v1/batch`, and settles each entry by its own
//! answer with [`replay::settle`]: acknowledged entries become `synced`, entries refused for
//! good become `rejected` (kept with the answer, shown in status, never dropped), and
//! retryable ones stay `pending`. A batch that gets no answer at all changes nothing but the
//! attempt counters; the caller backs off and tries again. Each entry's `client_request_id`
//! makes every resend safe.
//!
//! The journal is a blocking SQLite handle: every journal call here runs on the blocking
//! pool ([`with_journal`]), never on an async worker.

use super::client::{ClientError, LedgerClient, ShiftAnswer, Transport};
use super::config::TerminalConfig;
use super::core::replay::{self, Backoff, Settlement};
use super::journal::{
    CachedStaff, Catalog, CloseoutState, Entry, EntryState, FeedRow, Journal, JournalError,
    LoggedScan, OperationKind, StateChange,
};
use super::metrics::ReaderGauge;
use super::tap::recover;
use crate::domain::TerminalSeq;
use crate::protocol::api::{
    ReaderState, STATUS_COUNT_MAX, STATUS_CURSOR_LEN_MAX, STATUS_UNSENT_AGE_S_MAX,
    TerminalStatusReport,
};
use crate::protocol::events::Event;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Cards asked for per feed request.
pub const FEED_PAGE_CARDS: u32 = 1000;
/// Feed pages pulled in one round, at most (so a huge backlog cannot starve replay).
pub const FEED_PAGES_PER_ROUND_MAX: usize = 20;

/// The journal, shared between the daemon's tasks.
pub type SharedJournal = Arc<Mutex<Journal>>;

/// Why a sync round stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The ledger could not be asked; back off and retry.
    #[error(transparent)]
    Ledger(#[from] ClientError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A task failed (a panic in a blocking call).
    #[error("sync task failed: {0}")]
    Task(String),
}

/// What one replay round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Operations sent.
    pub sent: usize,
    /// Now `synced`.
    pub acknowledged: usize,
    /// Now `rejected`.
    pub rejected: usize,
    /// Left `pending` for a later round.
    pub retry: usize,
}

/// Runs `f` on the journal on the blocking pool, and waits for it without blocking an
/// async worker. Dropping the future does not stop `f`: it finishes, as one transaction.
pub async fn with_journal<T, F>(journal: &SharedJournal, f: F) -> Result<T, SyncError>
where
    T: Send + 'static,
    F: FnOnce(&mut Journal) -> Result<T, JournalError> + Send + 'static,
{
    let journal = Arc::clone(journal);
    tokio::task::spawn_blocking(move || {
        let mut j = journal
            .lock()
            .map_err(|e| JournalError::Invalid(e.to_string()))?;
        f(&mut j)
    })
    .await
    .map_err(|e| SyncError::Task(e.to_string()))?
    .map_err(SyncError::from)
}

/// The batch operation for an entry: its stored request body plus its `type` (what
/// `POST /v1/batch` and `cashless ledger import` read).
pub fn batch_operation(entry: &Entry) -> Result<Value, JournalError> {
    let mut body = entry.request()?;
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "type".into(),
            Value::String(entry.operation.as_str().to_owned()),
        );
    }
    Ok(body)
}

/// Replays at most `batch_max` pending entries; `now` stamps the journal.
pub async fn replay_round(
    journal: &SharedJournal,
    client: &impl Transport,
    batch_max: usize,
    now: fn() -> DateTime<Utc>,
) -> Result<ReplayReport, SyncError> {
    let pending = with_journal(journal, move |j| j.pending(batch_max)).await?;
    let seqs: Vec<i64> = pending.iter().map(|e| e.terminal_seq.get()).collect();
    let batch_len = replay::next_batch(&seqs, batch_max).len();
    let entries = &pending[..batch_len];
    if entries.is_empty() {
        return Ok(ReplayReport::default());
    }
    let operations = entries
        .iter()
        .map(batch_operation)
        .collect::<Result<Vec<_>, _>>()?;
    let sent_seqs: Vec<TerminalSeq> = entries.iter().map(|e| e.terminal_seq).collect();
    let answers = match client.post_batch(&operations).await {
        Ok(answers) => answers,
        Err(e) => {
            let error = e.to_string();
            with_journal(journal, move |j| {
                j.record_attempt_failures(&sent_seqs, &error, now())
            })
            .await?;
            return Err(e.into());
        }
    };
    let mut report = ReplayReport {
        sent: entries.len(),
        ..ReplayReport::default()
    };
    let mut changes: Vec<(TerminalSeq, EntryState, u16, String)> =
        Vec::with_capacity(entries.len());
    let mut retry_seqs = Vec::new();
    for (entry, answer) in entries.iter().zip(&answers) {
        let body = answer.body.to_string();
        match replay::settle(answer.status, answer.error_code()) {
            Settlement::Acknowledged => {
                report.acknowledged += 1;
                changes.push((entry.terminal_seq, EntryState::Synced, answer.status, body));
            }
            Settlement::Rejected => {
                report.rejected += 1;
                changes.push((
                    entry.terminal_seq,
                    EntryState::Rejected,
                    answer.status,
                    body,
                ));
            }
            Settlement::Retry => {
                report.retry += 1;
                retry_seqs.push((
                    entry.terminal_seq,
                    format!("ledger answered {}: {body}", answer.status),
                ));
            }
        }
    }
    let in_doubt_targets: Vec<(String, u16, String)> = entries
        .iter()
        .zip(&answers)
        .filter(|(e, a)| {
            e.operation == OperationKind::Void
                && replay::settle(a.status, a.error_code()) == Settlement::Acknowledged
        })
        .filter_map(|(e, a)| {
            let request = e.request().ok()?;
            (request["reason"] == "in_doubt").then(|| {
                (
                    request["target_client_request_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a.status,
                    a.body.to_string(),
                )
            })
        })
        .collect();
    with_journal(journal, move |j| {
        // Another round (or the daemon) may have settled an entry meanwhile: settle only
        // what is still pending, so a resend never fails on an entry that is already final.
        changes.retain(
            |(seq, ..)| matches!(j.entry(*seq), Ok(Some(e)) if e.state == EntryState::Pending),
        );
        let state_changes: Vec<StateChange<'_>> = changes
            .iter()
            .map(|(seq, state, status, body)| StateChange {
                seq: *seq,
                state: *state,
                decision: None,
                reason: None,
                ledger: Some((*status, body.as_str())),
            })
            .collect();
        if !state_changes.is_empty() {
            j.set_states(&state_changes, now())?;
        }
        for (seq, error) in &retry_seqs {
            j.record_attempt_failure(*seq, error, now())?;
        }
        // A void of an in-doubt attempt, acknowledged: the attempt is settled for good
        // (refunded if it had been applied, tombstoned if not).
        for (target, status, body) in &in_doubt_targets {
            let Ok(crid) = crate::domain::ClientRequestId::parse(target) else {
                continue;
            };
            if let Some(entry) = j.entry_by_request_id(crid)?
                && entry.state == EntryState::InDoubt
            {
                j.set_state(
                    entry.terminal_seq,
                    EntryState::Synced,
                    None,
                    None,
                    Some((*status, body)),
                    now(),
                )?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(report)
}

/// Pulls the card feed from the replica's cursor into the replica; returns the cards
/// updated. The time of each page is taken before its request, so that an entry synced
/// while the page was in flight still counts as a local charge.
pub async fn pull_card_feed(
    journal: &SharedJournal,
    client: &impl Transport,
    now: fn() -> DateTime<Utc>,
) -> Result<usize, SyncError> {
    let mut updated = 0;
    // The pull is recorded as of its first page's request, once a page says the feed has
    // nothing more (a round cut short records nothing, so acknowledged charges keep counting).
    let mut pull_started = None;
    for _ in 0..FEED_PAGES_PER_ROUND_MAX {
        let (cursor, acknowledged) = with_journal(journal, |j| {
            Ok((j.feed_cursor()?, j.last_acknowledged_at()?))
        })
        .await?;
        let asked_at = after_acknowledgements(acknowledged, now).await;
        let started = *pull_started.get_or_insert(asked_at);
        let page = client.card_feed(&cursor, FEED_PAGE_CARDS).await?;
        let done = page.cards.is_empty();
        let cards: Vec<FeedRow> = page
            .cards
            .into_iter()
            .map(|c| FeedRow {
                card_uid: c.card_uid,
                balance: c.balance_cents,
                blocked: c.status == "blocked",
                version: c.version,
                age_flag: c.age_flag,
                voucher_units: c.voucher_units,
                key_version: c.key_version,
            })
            .collect();
        updated += cards.len();
        let next = page.next_cursor;
        if done {
            // A pull that brought cards is always recorded; an idle one is written at most
            // once a minute (`apply_card_feed`'s rule for empty pages).
            if updated > 0 {
                with_journal(journal, move |j| j.complete_card_feed_pull(&next, started)).await?;
            } else {
                with_journal(journal, move |j| j.apply_card_feed(&cards, &next, started)).await?;
            }
            break;
        }
        with_journal(journal, move |j| {
            j.apply_card_feed_page(&cards, &next, asked_at)
        })
        .await?;
    }
    Ok(updated)
}

/// How many milliseconds [`after_acknowledgements`] waits at most.
const TIE_WAIT_MS_MAX: u32 = 5;

/// `now()`, once it is past the millisecond of the last acknowledgement (`acknowledged`).
/// Times are recorded to the millisecond and a tie counts an acknowledged charge as not yet
/// in the replica, so a page requested in the very millisecond of the replay just before it
/// (the usual case on a fast machine) would leave the charge counted twice, and the card
/// shown poorer than it is, until the next pull. Waits at most [`TIE_WAIT_MS_MAX`] (a clock
/// stepped back leaves the tie, which errs toward declining).
async fn after_acknowledgements(
    acknowledged: Option<DateTime<Utc>>,
    now: fn() -> DateTime<Utc>,
) -> DateTime<Utc> {
    for _ in 0..TIE_WAIT_MS_MAX {
        let t = now();
        if acknowledged.is_none_or(|a| t.timestamp_millis() > a.timestamp_millis()) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    now()
}

/// Batches replayed per round at most, before the feeds get their turn.
pub const ROUND_BATCHES_MAX: usize = 20;
/// Scans uploaded per sync round, at most (one `POST /v1/scans`).
const SCANS_PER_ROUND_MAX: usize = 1000;
/// Close-outs sent per sync round, at most.
const CLOSEOUTS_PER_ROUND_MAX: usize = 16;
/// Events the sync task may queue for the main loop.
pub const SYNC_EVENTS_MAX: usize = 64;

/// The ledger registered this terminal's token under another name or kind than its
/// configuration says: selling would only produce operations the ledger refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "the configuration says this terminal is {configured}, but the ledger registered its token as \
     {registered}: fix [terminal] name and kind, or the token"
)]
pub struct RegistrationMismatch {
    configured: String,
    registered: String,
}

/// What a sync round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    /// Entries settled (acknowledged or rejected).
    settled: usize,
    /// The round stopped at its batch limit with entries still pending.
    more: bool,
}

/// The sync task's share of the daemon: the journal, a client of its own (a tap never waits
/// behind a replay batch or a feed page on a shared connection), the configuration, and the
/// flags it shares with the main loop.
pub struct SyncTask {
    journal: SharedJournal,
    client: LedgerClient,
    config: TerminalConfig,
    /// Whether the last round reached the ledger; the main loop decides taps by it.
    online: Arc<AtomicBool>,
    /// True while a tap runs: its online attempt may be `sending`, which the sync task must
    /// then leave alone (it voids `sending` attempts only when no tap runs).
    tap_in_flight: Arc<AtomicBool>,
    /// The reader's state, as the session last set it (for the status report).
    reader: ReaderGauge,
    /// The last status report the ledger took.
    status_sent: Mutex<Option<StatusSent>>,
}

/// The running sync task, as the main loop holds it.
pub struct SyncHandle {
    task: JoinHandle<()>,
    ended: bool,
}

impl SyncHandle {
    /// Resolves once if the task ends by itself, which it never does but by a panic (then
    /// nothing would reach the ledger any more); says how it ended. Never resolves again.
    /// Cancel-safe.
    pub async fn ended(&mut self) -> String {
        if self.ended {
            return std::future::pending().await;
        }
        let joined = (&mut self.task).await;
        self.ended = true;
        format!("{joined:?}")
    }

    /// Aborts the task and waits until it is gone. Journal calls it started on the blocking
    /// pool may still be running: each finishes as one transaction, and holds the journal
    /// until then.
    pub async fn stop(mut self) {
        if !self.ended {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

impl SyncTask {
    /// The task over `journal`, asking the ledger through `client`.
    pub fn new(
        journal: SharedJournal,
        client: LedgerClient,
        config: TerminalConfig,
        online: Arc<AtomicBool>,
        tap_in_flight: Arc<AtomicBool>,
        reader: ReaderGauge,
    ) -> SyncTask {
        SyncTask {
            journal,
            client,
            config,
            online,
            tap_in_flight,
            reader,
            status_sent: Mutex::new(None),
        }
    }

    /// The round before the terminal is ready, so that a terminal with network starts with
    /// fresh caches. A round that fails leaves the terminal offline, and is no error; a
    /// ledger that registered this terminal as another is ([`RegistrationMismatch`]). It
    /// may take long (a backlog to replay, a slow ledger); dropping it stops it at its next
    /// await (an unanswered batch stays pending and is sent again).
    pub async fn first_round(&self) -> anyhow::Result<()> {
        if let Err(e) = self.round().await {
            if e.is::<RegistrationMismatch>() {
                return Err(e);
            }
            tracing::warn!(error = %e, "first sync failed; starting offline");
            self.online.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs the task, forever, after the first round (so two rounds never run at once);
    /// returns its handle and the events it reports for the front end.
    pub fn spawn(self) -> (SyncHandle, mpsc::Receiver<Event>) {
        let (events_tx, events_rx) = mpsc::channel::<Event>(SYNC_EVENTS_MAX);
        let task = tokio::spawn(self.run(events_tx));
        (SyncHandle { task, ended: false }, events_rx)
    }

    /// Refreshes the caches and replays the journal, forever; reports through `events`.
    async fn run(self, events: mpsc::Sender<Event>) {
        let backoff = Backoff {
            base_ms: self.config.sync_backoff_base_ms,
            cap_ms: self.config.sync_backoff_cap_ms,
        };
        let mut failures: u32 = 0;
        loop {
            let delay_ms = match self.round().await {
                Ok(Round { settled, more }) => {
                    failures = 0;
                    self.online.store(true, Ordering::Relaxed);
                    if settled > 0 {
                        let pending = with_journal(&self.journal, |j| j.status_counts())
                            .await
                            .ok()
                            .map(|c| c.pending);
                        let _ = events.try_send(Event::Synced {
                            count: settled,
                            pending,
                        });
                    }
                    // A backlog left after a full round: go on at once (the feeds had their
                    // turn).
                    if more {
                        0
                    } else {
                        self.config.sync_interval_ms
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sync round failed");
                    self.online.store(false, Ordering::Relaxed);
                    failures = failures.saturating_add(1);
                    let jitter = rand::random_range(0..=1000);
                    backoff.delay_ms(failures - 1, jitter).max(100)
                }
            };
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// One round: replay until nothing is pending (bounded), then the feeds, the scan log
    /// and the close-outs.
    async fn round(&self) -> anyhow::Result<Round> {
        let (journal, client, config) = (&self.journal, &self.client, &self.config);
        self.heal_journal().await?;
        // Who the ledger says this token is: checked before anything is replayed, so that a
        // terminal configured as the wrong kind or name never sends its journal.
        let me = client.me().await?;
        if me.kind != config.kind.as_str() || me.name != config.name {
            return Err(RegistrationMismatch {
                configured: format!("{} ({})", config.name, config.kind.as_str()),
                registered: format!("{} ({})", me.name, me.kind),
            }
            .into());
        }
        let mut settled = 0;
        let mut more = true;
        for _ in 0..ROUND_BATCHES_MAX {
            let report = replay_round(journal, client, config.sync_batch_max, Utc::now).await?;
            settled += report.acknowledged + report.rejected;
            if report.sent < config.sync_batch_max || report.retry > 0 {
                more = false;
                break;
            }
        }
        pull_card_feed(journal, client, Utc::now).await?;
        let etag = with_journal(journal, |j| j.catalog_etag()).await?;
        if let Some((body, etag)) = client.catalog(etag.as_deref()).await? {
            let catalog: Catalog = serde_json::from_value(body)?;
            with_journal(journal, move |j| {
                j.replace_catalog(&catalog, Some(&etag), Utc::now())
            })
            .await?;
        }
        let staff = client.staff().await?;
        let mut staff: Vec<CachedStaff> = serde_json::from_value(staff["staff"].clone())?;
        staff.sort_by(|a, b| a.staff_id.cmp(&b.staff_id));
        let limits = me.limits;
        // Written only when changed: each write is an fsync, and a tap waits for the journal
        // while one runs.
        let scans = with_journal(journal, move |j| {
            if j.staff()? != staff {
                j.replace_staff(&staff, Utc::now())?;
            }
            if let Some(limits) = limits
                && j.topup_limits()? != Some(limits)
            {
                j.set_topup_limits(limits, Utc::now())?;
            }
            j.unuploaded_scans(SCANS_PER_ROUND_MAX)
        })
        .await?;
        upload_scans(journal, client, scans).await?;
        send_closeouts(journal, client).await?;
        self.report_status().await?;
        Ok(Round { settled, more })
    }

    /// Tells the ledger this terminal's state (`POST /v1/terminals/me/status`) when
    /// [`status_due`] says so. A report the ledger did not take is logged and sent again at
    /// the next interval: it never fails the round (a failed round takes the terminal
    /// offline, and taps would be decided offline for a report's sake). Only journal
    /// failures are errors.
    async fn report_status(&self) -> anyhow::Result<()> {
        let (counts, oldest, cursor) = with_journal(&self.journal, |j| {
            Ok((
                j.status_counts()?,
                j.oldest_unsettled_at()?,
                j.feed_cursor()?,
            ))
        })
        .await?;
        let state = StatusState {
            waiting: counts.pending,
            in_doubt: counts.in_doubt,
            rejected: counts.rejected,
            oldest_unsettled_at: oldest,
            card_feed_cursor: cursor,
            reader_state: ReaderState::parse(self.reader.get()).unwrap_or(ReaderState::Waiting),
        };
        let now = Utc::now();
        let due = {
            let sent = self
                .status_sent
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
            status_due(
                sent.as_ref(),
                &state,
                now,
                self.config.sync_status_interval_ms,
            )
        };
        if !due {
            return Ok(());
        }
        let report = state.report(now);
        if let Ok(mut sent) = self.status_sent.lock() {
            *sent = Some(StatusSent { state, at: now });
        }
        match self.client.post_status(&report).await {
            Ok(answer) if answer.status == 200 => {
                let offset_ms = answer.body["clock_offset_ms"].as_i64().unwrap_or(0);
                if offset_ms.abs() > CLOCK_OFFSET_WARN_MS {
                    tracing::warn!(
                        clock_offset_ms = offset_ms,
                        "this terminal's clock is off from the ledger's by more than a minute; \
                         every operation it records is dated by it"
                    );
                }
            }
            Ok(answer) => {
                tracing::warn!(status = answer.status, body = %answer.body,
                    "the ledger did not take the status report; sent again at the next interval");
            }
            Err(e) => {
                tracing::warn!(error = %e,
                    "the status report got no answer; sent again at the next interval");
            }
        }
        Ok(())
    }

    /// Repairs what a journal failure left behind while the daemon runs, before each round:
    /// a journal opened read-only (its mount was read-only) is opened again once it can be
    /// written, and an online attempt left `sending` by a tap whose answer could not be
    /// recorded is voided (as a restart would), unless a tap is running right now.
    async fn heal_journal(&self) -> anyhow::Result<()> {
        let path = self.config.journal.clone();
        let tap_in_flight = Arc::clone(&self.tap_in_flight);
        let voided = with_journal(&self.journal, move |j| {
            // A cheap probe first: reopening closes the journal, which is only worth it once
            // the file can be written again.
            if j.is_read_only() && std::fs::OpenOptions::new().append(true).open(&path).is_ok() {
                match j.reopen(&path) {
                    Ok(()) if !j.is_read_only() => {
                        tracing::info!(journal = %path.display(), "the journal is writable again");
                    }
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "cannot open the journal again"),
                }
            }
            // Checked under the journal lock: a tap sets the flag before its first journal
            // write.
            Ok(
                if !tap_in_flight.load(Ordering::SeqCst) && j.has_sending()? {
                    Some(recover(j))
                } else {
                    None
                },
            )
        })
        .await?;
        if let Some(voided) = voided {
            let voided = voided?;
            tracing::warn!(
                voided,
                "online attempts whose answer was never recorded voided"
            );
        }
        Ok(())
    }
}

/// A terminal clock further than this from the ledger's is logged as a warning at each
/// status report (and marked on the fleet page).
pub const CLOCK_OFFSET_WARN_MS: i64 = 60_000;

/// What a status report says, but its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusState {
    /// Entries waiting to be sent or replayed.
    pub waiting: u64,
    /// Online attempts without an answer.
    pub in_doubt: u64,
    /// Entries the ledger refused for good.
    pub rejected: u64,
    /// When the oldest unacknowledged entry was journaled.
    pub oldest_unsettled_at: Option<DateTime<Utc>>,
    /// The card-feed cursor applied.
    pub card_feed_cursor: String,
    /// The reader's state.
    pub reader_state: ReaderState,
}

impl StatusState {
    /// The report to send at `now`: the oldest entry's age by this terminal's clock (0 for an
    /// entry dated in the future, after the clock was set back), within the API's bounds.
    pub fn report(&self, now: DateTime<Utc>) -> TerminalStatusReport {
        let age_s = |at: DateTime<Utc>| {
            u64::try_from((now - at).num_seconds())
                .unwrap_or(0)
                .min(STATUS_UNSENT_AGE_S_MAX)
        };
        let mut cursor = self.card_feed_cursor.clone();
        cursor.truncate(STATUS_CURSOR_LEN_MAX);
        TerminalStatusReport {
            reported_at: now,
            waiting: self.waiting.min(STATUS_COUNT_MAX),
            in_doubt: self.in_doubt.min(STATUS_COUNT_MAX),
            rejected: self.rejected.min(STATUS_COUNT_MAX),
            oldest_unsent_age_s: self.oldest_unsettled_at.map(age_s),
            card_feed_cursor: cursor,
            reader_state: self.reader_state,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The last status report sent (taken by the ledger or not), and when (this terminal's
/// clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSent {
    /// What it said.
    pub state: StatusState,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

impl StatusState {
    /// What headquarters must learn at once: the reader's state, the rejected operations,
    /// whether anything waits or is in doubt. The counts and the feed cursor move with every
    /// sale and every card change in the festival; they wait for the interval.
    fn significant(&self) -> (ReaderState, u64, bool, bool) {
        (
            self.reader_state,
            self.rejected,
            self.waiting > 0,
            self.in_doubt > 0,
        )
    }
}

/// Whether to report `state` at `now`: nothing sent yet, a significant change since the
/// last report sent ([`StatusState::significant`]), `interval_ms` passed since it, or the
/// clock set back past it. A report the ledger did not take counts as sent: it is sent
/// again at the next interval (or change), not every round.
pub fn status_due(
    last: Option<&StatusSent>,
    state: &StatusState,
    now: DateTime<Utc>,
    interval_ms: u64,
) -> bool {
    let Some(last) = last else { return true };
    let since_ms = (now - last.at).num_milliseconds();
    last.state.significant() != state.significant()
        || since_ms < 0
        || since_ms.unsigned_abs() >= interval_ms
}

/// Uploads scans to the ledger's `nfc_scan_log` and marks them uploaded (the ledger ignores
/// a scan it already has, so a lost answer only means a resend).
async fn upload_scans(
    journal: &SharedJournal,
    client: &LedgerClient,
    scans: Vec<LoggedScan>,
) -> anyhow::Result<()> {
    if scans.is_empty() {
        return Ok(());
    }
    let bodies = scans
        .iter()
        .map(|s| serde_json::to_value(&s.scan))
        .collect::<Result<Vec<_>, _>>()?;
    let answer = client.upload_scans(&bodies).await?;
    if answer.status != 200 {
        anyhow::bail!(
            "the ledger refused the scan log: {} {}",
            answer.status,
            answer.body
        );
    }
    let ids: Vec<i64> = scans.iter().map(|s| s.id).collect();
    with_journal(journal, move |j| j.mark_scans_uploaded(&ids)).await?;
    Ok(())
}

/// Sends the close-outs the ledger has not recorded (each with its own idempotency key, so a
/// lost answer only means a resend), and records its final answers.
///
/// A close-out the ledger did not take now (no answer, 5xx, 409, 401, 404, ...) is logged and
/// stays pending for the next round: it never fails the round, since a failed round takes
/// the terminal offline and every tap would then be decided offline for a close-out's sake.
/// The rest of the round's close-outs wait too (the next would most likely fail the same
/// way, each after a timeout). Only journal failures are errors.
async fn send_closeouts(journal: &SharedJournal, client: &LedgerClient) -> anyhow::Result<()> {
    let pending = with_journal(journal, |j| j.pending_closeouts(CLOSEOUTS_PER_ROUND_MAX)).await?;
    for closed in pending {
        let crid = closed.closeout.client_request_id;
        let (state, status, body) = match client.post_shift(&closed.closeout).await {
            Ok(ShiftAnswer::Recorded { shift, .. }) => {
                (CloseoutState::Recorded, 201, serde_json::to_string(&shift)?)
            }
            Ok(ShiftAnswer::Rejected(a)) => {
                tracing::error!(client_request_id = %crid, status = a.status, body = %a.body,
                    "the ledger refused a shift close-out");
                (CloseoutState::Rejected, a.status, a.body.to_string())
            }
            Ok(ShiftAnswer::Retry(a)) => {
                tracing::warn!(client_request_id = %crid, status = a.status, body = %a.body,
                    "the ledger could not record a shift close-out now; sent again next round");
                break;
            }
            Err(e) => {
                tracing::warn!(client_request_id = %crid, error = %e,
                    "a shift close-out got no answer; sent again next round");
                break;
            }
        };
        with_journal(journal, move |j| {
            j.settle_closeout(crid, state, status, &body)
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CardUid, Cents, ClientRequestId};
    use crate::protocol::api::{Mode, Operation};
    use crate::terminal::client::{Answer, FeedCard, FeedPage};
    use crate::terminal::journal::{Decision, EntryState, FeedRow, NewEntry, OperationKind};
    use serde_json::json;
    use std::collections::VecDeque;

    /// A ledger whose card feed answers the scripted pages, then is unreachable.
    struct ScriptedFeed(Mutex<VecDeque<FeedPage>>);

    impl Transport for ScriptedFeed {
        async fn post_operation(&self, _: &Operation) -> Result<Answer, ClientError> {
            Err(ClientError::Unreachable("not in this test".into()))
        }
        async fn post_batch(&self, _: &[Value]) -> Result<Vec<Answer>, ClientError> {
            Err(ClientError::Unreachable("not in this test".into()))
        }
        async fn card_feed(&self, _: &str, _: u32) -> Result<FeedPage, ClientError> {
            self.0
                .lock()
                .expect("the script")
                .pop_front()
                .ok_or_else(|| ClientError::Unreachable("the network went down".into()))
        }
    }

    fn page(cards: &[(&CardUid, i64, i64)], next: &str) -> FeedPage {
        FeedPage {
            cards: cards
                .iter()
                .map(|(uid, balance, version)| FeedCard {
                    card_uid: (*uid).clone(),
                    balance_cents: Cents::new(*balance),
                    status: "active".into(),
                    version: *version,
                    age_flag: None,
                    voucher_units: 0,
                    key_version: None,
                })
                .collect(),
            next_cursor: next.into(),
        }
    }

    /// A journal (in `dir`) whose replica got `card` at `balance` from a pull a minute
    /// before `acknowledged_at`, and one entry on the card (`operation`, approved online,
    /// `amount`) that became synced at `acknowledged_at`.
    fn journal_with_acknowledged(
        dir: &std::path::Path,
        card: &CardUid,
        balance: i64,
        operation: OperationKind,
        amount: i64,
        acknowledged_at: DateTime<Utc>,
    ) -> SharedJournal {
        let mut j = Journal::open(&dir.join("j.db")).expect("a journal");
        j.apply_card_feed(
            &[FeedRow::new(card.clone(), Cents::new(balance), false, 1)],
            "1",
            acknowledged_at - chrono::Duration::seconds(60),
        )
        .expect("the first pull");
        let crid = ClientRequestId::new_random();
        j.append(
            NewEntry {
                client_request_id: crid,
                operation,
                mode: Mode::Online,
                decision: Some(Decision::ApprovedOnline),
                card_uid: Some(card.clone()),
                amount_cents: Cents::new(amount),
                decline_reason: None,
                state: EntryState::Synced,
            },
            |seq| json!({"client_request_id": crid, "terminal_seq": seq}),
            acknowledged_at,
        )
        .expect("the entry");
        assert_eq!(
            j.local_charges(card).expect("charges"),
            Cents::new(-amount),
            "acknowledged after the last pull, it counts"
        );
        Arc::new(Mutex::new(j))
    }

    #[tokio::test]
    async fn a_pull_cut_after_its_first_page_leaves_acknowledged_charges_counting() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let card = CardUid::parse("04A1B2C3D4E5F6").expect("a UID");
        let other = CardUid::parse("04A1B2C3D4E5F7").expect("a UID");
        // An online sale of 4.00 on the card, acknowledged after the last pull.
        let journal = journal_with_acknowledged(
            dir.path(),
            &card,
            1_000,
            OperationKind::Order,
            -400,
            Utc::now() - chrono::Duration::seconds(5),
        );

        // The first page holds another card's older change; the network goes down before the
        // page with this card's.
        let ledger = ScriptedFeed(Mutex::new(VecDeque::from([page(&[(&other, 50, 2)], "2")])));
        assert!(pull_card_feed(&journal, &ledger, Utc::now).await.is_err());
        {
            let j = journal.lock().expect("the journal");
            assert_eq!(
                j.local_charges(&card).expect("charges"),
                Cents::new(400),
                "the replica still says 10.00: the sale must keep counting"
            );
            assert_eq!(
                j.feed_cursor().expect("the cursor"),
                "2",
                "the page was applied"
            );
        }

        // The pull completes: the replica shows the sale, which stops counting.
        let ledger = ScriptedFeed(Mutex::new(VecDeque::from([
            page(&[(&card, 600, 3)], "3"),
            page(&[], "3"),
        ])));
        assert_eq!(
            pull_card_feed(&journal, &ledger, Utc::now)
                .await
                .expect("a pull"),
            1
        );
        let j = journal.lock().expect("the journal");
        assert_eq!(j.local_charges(&card).expect("charges"), Cents::ZERO);
        let (replica, _) = j.replica_card(&card).expect("a read").expect("the card");
        assert_eq!(replica.balance, Cents::new(600));
    }

    /// A clock that moves one millisecond each time it is read, from [`TICK_START_MS`].
    static TICKS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    const TICK_START_MS: i64 = 1_800_000_000_000;

    fn ticking() -> DateTime<Utc> {
        let n = TICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        DateTime::from_timestamp_millis(TICK_START_MS + n).expect("a time")
    }

    #[tokio::test]
    async fn a_pull_asked_in_the_millisecond_of_the_last_acknowledgement_waits_for_the_next() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let card = CardUid::parse("04A1B2C3D4E5F6").expect("a UID");
        // A void of a 50.00 top-up, acknowledged in the millisecond the clock reads first.
        let start = DateTime::from_timestamp_millis(TICK_START_MS).expect("a time");
        let journal =
            journal_with_acknowledged(dir.path(), &card, 5_000, OperationKind::Void, -5_000, start);
        let ledger = ScriptedFeed(Mutex::new(VecDeque::from([
            page(&[(&card, 0, 2)], "2"),
            page(&[], "2"),
        ])));
        pull_card_feed(&journal, &ledger, ticking)
            .await
            .expect("a pull");
        let j = journal.lock().expect("the journal");
        assert_eq!(
            j.local_charges(&card).expect("charges"),
            Cents::ZERO,
            "the pull was asked after the void's millisecond: the replica's 0 holds it"
        );
    }

    #[tokio::test]
    async fn a_pull_cut_after_the_page_with_the_card_counts_its_acknowledged_charges_once() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let card = CardUid::parse("04A1B2C3D4E5F6").expect("a UID");
        // A void of a 50.00 top-up, acknowledged after the last pull.
        let journal = journal_with_acknowledged(
            dir.path(),
            &card,
            5_000,
            OperationKind::Void,
            -5_000,
            Utc::now() - chrono::Duration::seconds(5),
        );

        // The first page carries the card at 0, read after the void; the network goes down
        // before the page that would complete the pull.
        let ledger = ScriptedFeed(Mutex::new(VecDeque::from([page(&[(&card, 0, 2)], "2")])));
        assert!(pull_card_feed(&journal, &ledger, Utc::now).await.is_err());
        let j = journal.lock().expect("the journal");
        let (replica, _) = j.replica_card(&card).expect("a read").expect("the card");
        assert_eq!(replica.balance, Cents::ZERO);
        assert_eq!(
            j.local_charges(&card).expect("charges"),
            Cents::ZERO,
            "the card's row already holds the void: counting it again would show -50.00"
        );
    }

    fn state(waiting: u64) -> StatusState {
        StatusState {
            waiting,
            in_doubt: 0,
            rejected: 0,
            oldest_unsettled_at: None,
            card_feed_cursor: "7".into(),
            reader_state: ReaderState::Connected,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_status_is_reported_when_it_changed_or_the_interval_passed() {
        let t0 = at("2026-07-01T22:00:00Z");
        let sent = StatusSent {
            state: state(0),
            at: t0,
        };
        let after = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        assert!(status_due(None, &state(0), t0, 30_000), "never reported");
        assert!(!status_due(Some(&sent), &state(0), after(29_999), 30_000));
        assert!(status_due(Some(&sent), &state(0), after(30_000), 30_000));
        assert!(
            status_due(Some(&sent), &state(1), after(1), 30_000),
            "something waits now"
        );
        // More waiting, another feed cursor: every sale and card change moves them; they
        // wait for the interval.
        let busy = StatusSent {
            state: state(1),
            at: t0,
        };
        let mut moved = state(7);
        moved.card_feed_cursor = "99".into();
        assert!(!status_due(Some(&busy), &moved, after(1), 30_000));
        let mut rejected = state(1);
        rejected.rejected = 1;
        assert!(status_due(Some(&busy), &rejected, after(1), 30_000));
        let mut doubt = state(1);
        doubt.in_doubt = 1;
        assert!(status_due(Some(&busy), &doubt, after(1), 30_000));
        let mut reader = state(0);
        reader.reader_state = ReaderState::Disconnected;
        assert!(status_due(Some(&sent), &reader, after(1), 30_000));
        assert!(
            status_due(Some(&sent), &state(0), after(-1), 30_000),
            "the clock was set back"
        );
    }

    #[test]
    fn a_report_gives_the_oldest_entry_s_age_within_the_api_s_bounds() {
        let now = at("2026-07-01T22:00:00Z");
        let mut s = state(3);
        s.oldest_unsettled_at = Some(now - chrono::Duration::seconds(95));
        let r = s.report(now);
        assert_eq!(r.oldest_unsent_age_s, Some(95));
        assert_eq!(r.reported_at, now);
        assert_eq!(r.waiting, 3);
        assert_eq!(r.software_version, env!("CARGO_PKG_VERSION"));
        assert!(r.validate().is_ok());
        // Journaled "in the future" (the clock was set back since): age 0, not refused.
        s.oldest_unsettled_at = Some(now + chrono::Duration::seconds(60));
        assert_eq!(s.report(now).oldest_unsent_age_s, Some(0));
        // Beyond every bound: clamped, so the ledger still takes the report.
        s.oldest_unsettled_at = Some(now - chrono::Duration::days(400));
        s.waiting = u64::MAX;
        s.card_feed_cursor = "9".repeat(500);
        let r = s.report(now);
        assert_eq!(r.oldest_unsent_age_s, Some(STATUS_UNSENT_AGE_S_MAX));
        assert_eq!(r.waiting, STATUS_COUNT_MAX);
        assert!(r.validate().is_ok(), "{r:?}");
    }
}
