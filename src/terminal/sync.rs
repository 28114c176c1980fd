//! Replaying the journal to the ledger, and pulling the card feed into the replica.
//!
//! A sync round takes the pending entries in `terminal_seq` order (at most `batch_max`),
//! sends them through `POST /v1/batch`, and settles each entry by its own answer with
//! [`replay::settle`]: acknowledged entries become `synced`, entries refused for good become
//! `rejected` (kept with the answer, shown in status, never dropped), and retryable ones
//! stay `pending`. A batch that gets no answer at all changes nothing but the attempt
//! counters; the caller backs off and tries again. Each entry's `client_request_id` makes
//! every resend safe.
//!
//! The journal is a blocking SQLite handle: every call here runs on the blocking pool.

use super::client::{ClientError, Transport};
use super::core::replay::{self, Settlement};
use super::journal::{Entry, EntryState, Journal, JournalError, OperationKind, StateChange};
use crate::domain::{CardUid, TerminalSeq};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::{Arc, Mutex};

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

async fn with_journal<T, F>(journal: &SharedJournal, f: F) -> Result<T, SyncError>
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

/// The batch operation for an entry: its stored request body plus its `type`.
fn batch_operation(entry: &Entry) -> Result<Value, JournalError> {
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
    for _ in 0..FEED_PAGES_PER_ROUND_MAX {
        let cursor = with_journal(journal, |j| j.feed_cursor()).await?;
        let asked_at = now();
        let page = client.card_feed(&cursor, FEED_PAGE_CARDS).await?;
        let done = page.cards.is_empty();
        let cards: Vec<(CardUid, crate::domain::Cents, bool, i64)> = page
            .cards
            .into_iter()
            .map(|c| {
                (
                    c.card_uid,
                    c.balance_cents,
                    c.status == "blocked",
                    c.version,
                )
            })
            .collect();
        updated += cards.len();
        let next = page.next_cursor;
        with_journal(journal, move |j| j.apply_card_feed(&cards, &next, asked_at)).await?;
        if done {
            break;
        }
    }
    Ok(updated)
}
