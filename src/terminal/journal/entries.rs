//! The operations journal: one row per money-changing operation, with its gapless
//! `terminal_seq`, the exact request body replay sends, where it stands with the ledger
//! ([`EntryState`]), the decision shown and the ledger's answer. Appending takes the next
//! `terminal_seq` inside the write transaction; a state only moves as
//! [`EntryState::can_become`] allows; nothing is deleted. The lists read here (pending,
//! in doubt, sending, unacknowledged) are what replay, recovery and export work through.

use super::{
    Journal, JournalError, META_LAST_SYNC_AT, TEXT_BYTES_MAX, at_most, bounded, corrupt, invalid,
    parse_time, set_meta, sql_limit,
};
use crate::domain::{CardUid, Cents, ClientRequestId, TerminalSeq};
use crate::protocol::api::{BATCH_OPERATIONS_MAX, Mode, format_time};
use crate::terminal::core::entry::{Decision, EntryState, OperationKind};
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;
use std::fmt;

/// A new journal entry, as the daemon decides it before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The idempotency key, generated before anything is written.
    pub client_request_id: ClientRequestId,
    /// Order, top-up or void.
    pub operation: OperationKind,
    /// Online (the ledger decides) or offline (the terminal decided).
    pub mode: Mode,
    /// The card, when known.
    pub card_uid: Option<CardUid>,
    /// Signed effect on the card as this terminal sees it: an order `-total` (never positive;
    /// offline, `-money` when vouchers paid part of it; online, the total even when the
    /// ledger's vouchers paid part: an over-count until the next card feed, which errs
    /// toward declining),
    /// a top-up `+amount` (never negative), a void `+refund` (or `-amount` for a reversed
    /// top-up), 0 when unknown. [`Journal::local_charges`] sums it.
    pub amount_cents: Cents,
    /// The decision, when already taken (offline); `None` while the ledger is being asked.
    pub decision: Option<Decision>,
    /// Why declined, if declined (`INSUFFICIENT_FUNDS`, ...).
    pub decline_reason: Option<String>,
    /// The state it starts in; usually `pending`.
    pub state: EntryState,
}

/// One settlement for [`Journal::set_states`]: the arguments of [`Journal::set_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange<'a> {
    /// The entry.
    pub seq: TerminalSeq,
    /// Its new state.
    pub state: EntryState,
    /// Replaces the decision when `Some`.
    pub decision: Option<Decision>,
    /// Replaces the decline reason when `Some`.
    pub reason: Option<&'a str>,
    /// The ledger's answer (HTTP status, body); replaces the stored one when `Some`.
    pub ledger: Option<(u16, &'a str)>,
}

/// A journal entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1, 2, 3, ... with no gaps.
    pub terminal_seq: TerminalSeq,
    /// The idempotency key.
    pub client_request_id: ClientRequestId,
    /// Order, top-up or void.
    pub operation: OperationKind,
    /// Online or offline.
    pub mode: Mode,
    /// The exact ledger request body (JSON text), which embeds `client_request_id` and
    /// `terminal_seq`; replay sends these bytes.
    pub request_json: String,
    /// The card, when known.
    pub card_uid: Option<CardUid>,
    /// Signed effect on the card as this terminal sees it (see [`NewEntry::amount_cents`]).
    pub amount_cents: Cents,
    /// Where it stands with the ledger.
    pub state: EntryState,
    /// What was shown, once decided.
    pub decision: Option<Decision>,
    /// Why declined.
    pub decline_reason: Option<String>,
    /// Sends so far: failed ones ([`Journal::record_attempt_failure`]) and answered ones
    /// ([`Journal::set_state`] with the ledger's answer).
    pub attempts: u32,
    /// The last failed send, for status and export.
    pub last_error: Option<String>,
    /// The HTTP status of the ledger's answer that settled it.
    pub ledger_status: Option<u16>,
    /// The body of that answer.
    pub ledger_body: Option<String>,
    /// When journaled.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it became `synced`; set exactly for synced entries.
    pub synced_at: Option<DateTime<Utc>>,
}

impl Entry {
    /// The money the operation moved on the card, signed like `amount_cents`: for an order
    /// the ledger answered, what it charged (`money_cents`: its total less what vouchers
    /// paid), else `amount_cents`. What a refund of it gives back.
    pub fn money_effect(&self) -> Cents {
        let charged = self
            .ledger_body
            .as_deref()
            .filter(|_| self.operation == OperationKind::Order)
            .and_then(|body| serde_json::from_str::<Value>(body).ok())
            .and_then(|body| body["money_cents"].as_i64());
        match charged {
            Some(money) => Cents::ZERO
                .checked_sub(Cents::new(money))
                .unwrap_or(self.amount_cents),
            None => self.amount_cents,
        }
    }

    /// The request body parsed, for a batch.
    pub fn request(&self) -> Result<Value, JournalError> {
        serde_json::from_str(&self.request_json).map_err(|e| {
            corrupt(format!(
                "entry {}: request_json: {e}",
                self.terminal_seq.get()
            ))
        })
    }
}

/// The columns [`entry_from_row`] reads, in its order.
const ENTRY_COLUMNS: &str = "terminal_seq, client_request_id, operation, mode, request_json, \
     card_uid, amount_cents, state, decision, decline_reason, attempts, last_error, \
     ledger_status, ledger_body, created_at, updated_at, synced_at";

impl Journal {
    /// True when an online attempt is `sending`: being sent right now, or left behind by a
    /// tap whose answer could not be recorded (then [`crate::terminal::tap::recover`] voids it).
    pub fn has_sending(&self) -> Result<bool, JournalError> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM journal WHERE state = 'sending')")?
            .query_row([], |r| r.get(0))
            .map_err(JournalError::from)
    }

    /// Journals a new operation and returns it once it is on disk.
    ///
    /// Inside one `IMMEDIATE` transaction: takes the next `terminal_seq` (`MAX + 1`), asks
    /// `request` for the ledger request body (which must embed that `terminal_seq` and the
    /// entry's `client_request_id` as top-level fields), writes the row, commits (fsync). An
    /// error leaves nothing written and takes no number; the caller must then send nothing and
    /// show no approval. `now` is stored with millisecond precision, as returned.
    ///
    /// Refused ([`JournalError::Invalid`]): a `client_request_id` already journaled, a body
    /// that does not carry the entry's ids, an order with a positive `amount_cents` or a
    /// top-up with a negative one.
    pub fn append(
        &mut self,
        entry: NewEntry,
        request: impl FnOnce(TerminalSeq) -> Value,
        now: DateTime<Utc>,
    ) -> Result<Entry, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let written = insert_entry(&tx, entry, request, now)?;
        tx.commit()?;
        Ok(written)
    }

    /// Marks the online attempt `attempt` in doubt and journals `void` (its void) in one
    /// transaction: a crash or a full disk leaves either both or neither, so an attempt is
    /// never in doubt without its void. The attempt must be `sending` or already `in_doubt`.
    pub fn void_in_doubt(
        &mut self,
        attempt: TerminalSeq,
        void: NewEntry,
        request: impl FnOnce(TerminalSeq) -> Value,
        now: DateTime<Utc>,
    ) -> Result<Entry, JournalError> {
        if void.operation != OperationKind::Void {
            return Err(invalid("the void of an attempt must be a void"));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = state_of(&tx, attempt)?;
        if !matches!(current, EntryState::Sending | EntryState::InDoubt) {
            return Err(invalid(format!(
                "entry {} is {current}; only an attempt being sent can be in doubt",
                attempt.get()
            )));
        }
        tx.prepare_cached(
            "UPDATE journal SET state = 'in_doubt', updated_at = ?2 WHERE terminal_seq = ?1",
        )?
        .execute(params![attempt.get(), format_time(now.trunc_subsecs(3))])?;
        let written = insert_entry(&tx, void, request, now)?;
        tx.commit()?;
        Ok(written)
    }

    /// Moves an entry to `state` (allowed moves: [`EntryState::can_become`]), durably.
    ///
    /// `decision`, `reason` and `ledger` (the answer's HTTP status and body) replace the stored
    /// values when `Some` and keep them when `None`. A ledger answer counts as one attempt.
    /// Becoming `synced` stamps `synced_at` and the journal's `last_sync_at` with `now`.
    /// Refused ([`JournalError::Invalid`]): an unknown `seq`, a forbidden move, a status
    /// outside 100..=599.
    pub fn set_state(
        &mut self,
        seq: TerminalSeq,
        state: EntryState,
        decision: Option<Decision>,
        reason: Option<&str>,
        ledger: Option<(u16, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let change = StateChange {
            seq,
            state,
            decision,
            reason,
            ledger,
        };
        self.set_states(std::slice::from_ref(&change), now)
    }

    /// [`Journal::set_state`] for the results of one batch, in one transaction (one fsync
    /// instead of one per entry, which is what lets a long backlog drain quickly): all of them
    /// or, if any is refused, none. At most [`BATCH_OPERATIONS_MAX`] changes.
    pub fn set_states(
        &mut self,
        changes: &[StateChange<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_batch_len(changes.len())?;
        for change in changes {
            if let Some((status, _)) = change.ledger
                && !(100..=599).contains(&status)
            {
                return Err(invalid(format!("HTTP status {status} out of range")));
            }
        }
        let now_text = format_time(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut synced = false;
        {
            let mut update = tx.prepare_cached(
                "UPDATE journal SET
                     state = ?2,
                     decision = COALESCE(?3, decision),
                     decline_reason = COALESCE(?4, decline_reason),
                     ledger_status = COALESCE(?5, ledger_status),
                     ledger_body = COALESCE(?6, ledger_body),
                     attempts = attempts + ?7,
                     updated_at = ?8,
                     synced_at = CASE WHEN ?2 = 'synced' THEN ?8 END
                 WHERE terminal_seq = ?1",
            )?;
            for change in changes {
                // Read inside the transaction, so a change earlier in the same batch counts.
                let current = state_of(&tx, change.seq)?;
                if !current.can_become(change.state) {
                    return Err(invalid(format!(
                        "entry {} is {current}; it cannot become {}",
                        change.seq.get(),
                        change.state
                    )));
                }
                update.execute(params![
                    change.seq.get(),
                    change.state.as_str(),
                    change.decision.map(Decision::as_str),
                    change.reason.map(|r| bounded(r.to_owned(), TEXT_BYTES_MAX)),
                    change.ledger.map(|(status, _)| status),
                    change.ledger.map(|(_, body)| body),
                    i64::from(change.ledger.is_some()),
                    now_text,
                ])?;
                synced |= change.state == EntryState::Synced;
            }
        }
        if synced {
            set_meta(&tx, META_LAST_SYNC_AT, &now_text)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a send of a `pending` or `in_doubt` entry that got no usable answer: one more
    /// attempt, and `error` (cut to [`TEXT_BYTES_MAX`] bytes) as `last_error`. The state does
    /// not change. Refused for an unknown `seq` or a `synced`/`rejected` entry.
    pub fn record_attempt_failure(
        &mut self,
        seq: TerminalSeq,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.record_attempt_failures(&[seq], error, now)
    }

    /// [`Journal::record_attempt_failure`] for every entry of a batch that failed as a whole
    /// (network down), in one transaction: all of them or none. At most
    /// [`BATCH_OPERATIONS_MAX`] entries.
    pub fn record_attempt_failures(
        &mut self,
        seqs: &[TerminalSeq],
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_batch_len(seqs.len())?;
        let error = bounded(error.to_owned(), TEXT_BYTES_MAX);
        let now_text = format_time(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE journal SET attempts = attempts + 1, last_error = ?2, updated_at = ?3
                 WHERE terminal_seq = ?1",
            )?;
            for &seq in seqs {
                let current = state_of(&tx, seq)?;
                if !matches!(current, EntryState::Pending | EntryState::InDoubt) {
                    return Err(invalid(format!(
                        "entry {} is {current}; it is not sent any more",
                        seq.get()
                    )));
                }
                update.execute(params![seq.get(), error, now_text])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a successful round with the ledger that settled nothing (nothing was pending),
    /// so the status line's "last sync" stays fresh while the terminal is idle and online.
    pub fn record_sync(&mut self, now: DateTime<Utc>) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_meta(&tx, META_LAST_SYNC_AT, &format_time(now))?;
        tx.commit()?;
        Ok(())
    }

    /// One entry.
    pub fn entry(&self, seq: TerminalSeq) -> Result<Option<Entry>, JournalError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM journal WHERE terminal_seq = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([seq.get()])?;
        match rows.next()? {
            Some(row) => entry_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// The `pending` entries in `terminal_seq` order, at most `limit` (clamped to
    /// [`LIST_LIMIT_MAX`](super::LIST_LIMIT_MAX)): the next ones to send or replay.
    pub fn pending(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.entries_in_state(EntryState::Pending, limit)
    }

    /// The entry with this `client_request_id`, if any.
    pub fn entry_by_request_id(
        &self,
        crid: ClientRequestId,
    ) -> Result<Option<Entry>, JournalError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM journal WHERE client_request_id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query([crid.to_string()])?;
        Ok(collect_entries(rows)?.into_iter().next())
    }

    /// The `in_doubt` entries in `terminal_seq` order, at most `limit` (clamped).
    pub fn in_doubt(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.entries_in_state(EntryState::InDoubt, limit)
    }

    /// Online attempts being sent (or left so by a crash), in `terminal_seq` order, at most
    /// `limit` (clamped).
    pub fn sending(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        self.entries_in_state(EntryState::Sending, limit)
    }

    /// `in_doubt` attempts that no journaled void targets (a journal written before the two
    /// were one transaction, and a crash between them), at most `limit` (clamped).
    pub fn in_doubt_without_void(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM journal AS a WHERE a.state = 'in_doubt'
               AND NOT EXISTS (SELECT 1 FROM journal AS v
                               WHERE v.operation = 'void'
                                 -- `+` drops the column's affinity, so that the
                                 -- expression index journal_void_target is searched.
                                 AND json_extract(v.request_json, '$.target_client_request_id')
                                     = +a.client_request_id)
             ORDER BY a.terminal_seq LIMIT ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query(params![sql_limit(limit)])?;
        collect_entries(rows)
    }

    /// Every entry the ledger has not acknowledged (`pending`, `in_doubt`, `rejected`) with a
    /// `terminal_seq` above `after`, in `terminal_seq` order, at most `limit` (clamped): one
    /// page of an export. The next page starts after the last entry returned; a page shorter
    /// than the limit is the last.
    pub fn unacknowledged(
        &self,
        after: Option<TerminalSeq>,
        limit: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM journal
             WHERE terminal_seq > ?1 AND state <> 'synced'
             ORDER BY terminal_seq LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query(params![after.map_or(0, TerminalSeq::get), sql_limit(limit)])?;
        collect_entries(rows)
    }

    fn entries_in_state(
        &self,
        state: EntryState,
        limit: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM journal WHERE state = ?1
             ORDER BY terminal_seq LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query(params![state.as_str(), sql_limit(limit)])?;
        collect_entries(rows)
    }

    /// True when this terminal has operations on `uid` that the ledger has not acknowledged
    /// (`pending`, `sending` or `in_doubt`): the ledger's balance of the card does not include
    /// them yet, so the tap flow decides such a card offline.
    pub fn has_unacknowledged(&self, uid: &CardUid) -> Result<bool, JournalError> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM journal
                                WHERE card_uid = ?1 AND state IN ('pending', 'sending', 'in_doubt'))",
            )?
            .query_row(params![uid.as_str()], |r| r.get(0))
            .map_err(JournalError::from)
    }

    /// The deposit money this terminal credited that the ledger has not acknowledged: its
    /// approved deposit returns still `pending`, `sending` or `in_doubt`, on any card. An
    /// online attempt without a decision does not count: it is being decided, or it is in
    /// doubt and its void is journaled, so it never credits anything net (as in
    /// `core::charges`). The offline limit `[offline] max_return_payout_cents` bounds it.
    pub fn unacknowledged_returns(&self) -> Result<Cents, JournalError> {
        self.conn
            .prepare_cached(
                "SELECT COALESCE(SUM(amount_cents), 0) FROM journal
                 WHERE operation = 'return' AND state IN ('pending', 'sending', 'in_doubt')
                   AND decision IN ('approved_online', 'approved_offline')",
            )?
            .query_row([], |r| r.get(0))
            .map(Cents::new)
            .map_err(JournalError::from)
    }
}

/// Inserts a new entry inside `tx` (see [`Journal::append`]): the next `terminal_seq`, the
/// request body built for it, the row.
fn insert_entry(
    tx: &rusqlite::Transaction<'_>,
    entry: NewEntry,
    request: impl FnOnce(TerminalSeq) -> Value,
    now: DateTime<Utc>,
) -> Result<Entry, JournalError> {
    check_amount(entry.operation, entry.amount_cents)?;
    let now = now.trunc_subsecs(3);
    let now_text = format_time(now);
    let decline_reason = entry
        .decline_reason
        .map(|reason| bounded(reason, TEXT_BYTES_MAX));
    let synced_at = (entry.state == EntryState::Synced).then_some(now);
    let last: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(terminal_seq), 0) FROM journal")?
        .query_row([], |r| r.get(0))?;
    let terminal_seq = last
        .checked_add(1)
        .and_then(|next| TerminalSeq::new(next).ok())
        .ok_or_else(|| corrupt(format!("the highest terminal_seq is {last}")))?;
    let body = request(terminal_seq);
    check_body(&body, entry.client_request_id, terminal_seq)?;
    let request_json = serde_json::to_string(&body).map_err(invalid)?;
    tx.prepare_cached(
        "INSERT INTO journal (terminal_seq, client_request_id, operation, mode, request_json,
             card_uid, amount_cents, state, decision, decline_reason, attempts, created_at,
             updated_at, synced_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?11, ?12)",
    )?
    .execute(params![
        terminal_seq.get(),
        entry.client_request_id.to_string(),
        entry.operation.as_str(),
        entry.mode.as_str(),
        request_json,
        entry.card_uid.as_ref().map(CardUid::as_str),
        entry.amount_cents.get(),
        entry.state.as_str(),
        entry.decision.map(Decision::as_str),
        decline_reason,
        now_text,
        synced_at.map(format_time),
    ])?;
    if entry.state == EntryState::Synced {
        set_meta(tx, META_LAST_SYNC_AT, &now_text)?;
    }
    Ok(Entry {
        terminal_seq,
        client_request_id: entry.client_request_id,
        operation: entry.operation,
        mode: entry.mode,
        request_json,
        card_uid: entry.card_uid,
        amount_cents: entry.amount_cents,
        state: entry.state,
        decision: entry.decision,
        decline_reason,
        attempts: 0,
        last_error: None,
        ledger_status: None,
        ledger_body: None,
        created_at: now,
        updated_at: now,
        synced_at,
    })
}

/// One batch of the ledger at most, so that one transaction stays small.
fn check_batch_len(len: usize) -> Result<(), JournalError> {
    at_most(len, BATCH_OPERATIONS_MAX, "entries in one call")
}

/// An order never credits the card, a top-up or deposit return never debits it, and a
/// voucher grant moves no money; `local_charges` relies on it.
pub(super) fn check_amount(operation: OperationKind, amount: Cents) -> Result<(), JournalError> {
    let ok = match operation {
        OperationKind::Order => amount <= Cents::ZERO,
        OperationKind::Recharge | OperationKind::Return => amount >= Cents::ZERO,
        OperationKind::VoucherGrant => amount == Cents::ZERO,
        OperationKind::Void => true,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "an {operation} with amount_cents {}",
            amount.get()
        )))
    }
}

/// The request body must carry the entry's ids: replay sends it as is, and the ledger keys
/// idempotency and sequence tracking on them.
fn check_body(
    body: &Value,
    client_request_id: ClientRequestId,
    seq: TerminalSeq,
) -> Result<(), JournalError> {
    let crid_ok = body.get("client_request_id").and_then(Value::as_str)
        == Some(client_request_id.to_string().as_str());
    let seq_ok = body.get("terminal_seq").and_then(Value::as_i64) == Some(seq.get());
    if crid_ok && seq_ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "the request body must be an object with \"client_request_id\": \"{client_request_id}\" \
             and \"terminal_seq\": {}",
            seq.get()
        )))
    }
}

fn state_of(conn: &Connection, seq: TerminalSeq) -> Result<EntryState, JournalError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT state FROM journal WHERE terminal_seq = ?1")?
        .query_row([seq.get()], |r| r.get(0))
        .optional()?;
    let text =
        text.ok_or_else(|| invalid(format!("no journal entry with terminal_seq {}", seq.get())))?;
    EntryState::parse(&text).ok_or_else(|| corrupt(format!("entry {}: state {text:?}", seq.get())))
}

fn collect_entries(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Entry>, JournalError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(entry_from_row(row)?);
    }
    Ok(out)
}

/// One journal row being read: every column is checked again, and an error names the entry
/// and the column (what comes back from the file is data, not a promise).
pub(super) struct EntryRow<'r, 's> {
    row: &'r Row<'s>,
    seq: i64,
}

impl<'r, 's> EntryRow<'r, 's> {
    /// A row whose `terminal_seq` is its first column.
    pub(super) fn new(row: &'r Row<'s>) -> Result<Self, JournalError> {
        Ok(EntryRow {
            row,
            seq: row.get(0)?,
        })
    }

    /// The error for `column` holding `value`.
    fn bad(&self, column: &str, value: &dyn fmt::Debug) -> JournalError {
        corrupt(format!("entry {}: {column} {value:?}", self.seq))
    }

    /// Column `i`, a state.
    pub(super) fn state(&self, i: usize) -> Result<EntryState, JournalError> {
        let state = self.text(i, "state")?.unwrap_or_default();
        EntryState::parse(state).ok_or_else(|| self.bad("state", &state))
    }

    /// Column `i` (named `column`) as text borrowed from the row, or `None` for `NULL`:
    /// read in place, as the offline policy reads every row of a card on each tap.
    fn text(&self, i: usize, column: &str) -> Result<Option<&'r str>, JournalError> {
        match self.row.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.bad(column, &bytes)),
            other => Err(self.bad(column, &other.data_type())),
        }
    }

    /// Column `i`, a decision or `NULL`.
    pub(super) fn decision(&self, i: usize) -> Result<Option<Decision>, JournalError> {
        match self.text(i, "decision")? {
            Some(d) => Ok(Some(
                Decision::parse(d).ok_or_else(|| self.bad("decision", &d))?,
            )),
            None => Ok(None),
        }
    }

    /// Column `i` (named `column`), a time or `NULL`.
    pub(super) fn time(
        &self,
        i: usize,
        column: &str,
    ) -> Result<Option<DateTime<Utc>>, JournalError> {
        match self.text(i, column)? {
            Some(text) => parse_time(text)
                .map(Some)
                .ok_or_else(|| self.bad(column, &text)),
            None => Ok(None),
        }
    }
}

/// Reads one entry ([`ENTRY_COLUMNS`]).
fn entry_from_row(row: &Row<'_>) -> Result<Entry, JournalError> {
    let r = EntryRow::new(row)?;
    let seq = r.seq;
    let bad = |column: &str, value: &dyn fmt::Debug| r.bad(column, value);
    let terminal_seq = TerminalSeq::new(seq).map_err(|_| bad("terminal_seq", &seq))?;
    let crid: String = row.get(1)?;
    let client_request_id =
        ClientRequestId::parse(&crid).map_err(|_| bad("client_request_id", &crid))?;
    let operation: String = row.get(2)?;
    let operation = OperationKind::parse(&operation).ok_or_else(|| bad("operation", &operation))?;
    let mode: String = row.get(3)?;
    let mode = Mode::try_from(mode.clone()).map_err(|_| bad("mode", &mode))?;
    let request_json: String = row.get(4)?;
    if serde_json::from_str::<serde::de::IgnoredAny>(&request_json).is_err() {
        return Err(bad("request_json", &request_json));
    }
    let card_uid = match row.get::<_, Option<String>>(5)? {
        Some(uid) => Some(CardUid::parse(&uid).map_err(|_| bad("card_uid", &uid))?),
        None => None,
    };
    let amount_cents = Cents::new(row.get(6)?);
    let state = r.state(7)?;
    let decision = r.decision(8)?;
    let attempts: i64 = row.get(10)?;
    let attempts = u32::try_from(attempts).map_err(|_| bad("attempts", &attempts))?;
    let ledger_status = match row.get::<_, Option<i64>>(12)? {
        Some(s) => Some(u16::try_from(s).map_err(|_| bad("ledger_status", &s))?),
        None => None,
    };
    let created_at = r
        .time(14, "created_at")?
        .ok_or_else(|| bad("created_at", &"NULL"))?;
    let updated_at = r
        .time(15, "updated_at")?
        .ok_or_else(|| bad("updated_at", &"NULL"))?;
    let synced_at = r.time(16, "synced_at")?;
    if (state == EntryState::Synced) != synced_at.is_some() {
        return Err(bad("synced_at with state", &(state.as_str(), synced_at)));
    }
    Ok(Entry {
        terminal_seq,
        client_request_id,
        operation,
        mode,
        request_json,
        card_uid,
        amount_cents,
        state,
        decision,
        decline_reason: row.get(9)?,
        attempts,
        last_error: row.get(11)?,
        ledger_status,
        ledger_body: row.get(13)?,
        created_at,
        updated_at,
        synced_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_have_the_operation_sign() {
        use OperationKind::*;
        let cases = [
            (Order, -500, true),
            (Order, 0, true),
            (Order, 1, false),
            (Recharge, 500, true),
            (Recharge, 0, true),
            (Recharge, -1, false),
            (Void, 500, true),
            (Void, -500, true),
        ];
        for (op, amount, ok) in cases {
            assert_eq!(
                check_amount(op, Cents::new(amount)).is_ok(),
                ok,
                "{op} {amount}"
            );
        }
    }

    #[test]
    fn request_bodies_must_carry_the_ids() {
        let crid = ClientRequestId::new_random();
        let seq = TerminalSeq::new(7).unwrap();
        let other = ClientRequestId::new_random();
        let cases = [
            (
                serde_json::json!({"client_request_id": crid, "terminal_seq": 7}),
                true,
            ),
            (
                serde_json::json!({"type": "order", "client_request_id": crid, "terminal_seq": 7, "x": 1}),
                true,
            ),
            (
                serde_json::json!({"client_request_id": crid, "terminal_seq": 8}),
                false,
            ),
            (
                serde_json::json!({"client_request_id": crid, "terminal_seq": "7"}),
                false,
            ),
            (
                serde_json::json!({"client_request_id": other, "terminal_seq": 7}),
                false,
            ),
            (serde_json::json!({"terminal_seq": 7}), false),
            (serde_json::json!([crid, 7]), false),
            (Value::Null, false),
        ];
        for (body, ok) in cases {
            assert_eq!(check_body(&body, crid, seq).is_ok(), ok, "{body}");
        }
    }
}
