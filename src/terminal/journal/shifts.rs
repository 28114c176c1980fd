//! Shifts at a checkpoint: what the drawer should hold, and its close-out.
//!
//! A shift is a stretch of the journal, not of time: the entries whose `terminal_seq` is above
//! the `last_seq` recorded by the previous close-out (0 on a terminal that never closed one),
//! up to the highest `terminal_seq` now. Its totals are the top-ups shown as approved in it, by
//! payment method, minus the approved voids made in it of approved top-ups (their money went
//! back to the attendee). A close-out computes them and records them, with the counted cash
//! and its `last_seq`, in one transaction, so the figures sent to the ledger are exactly the
//! ones staff saw when they closed, and the next shift starts right after them. The ledger
//! also gets the shift's range of `terminal_seq` (`first_seq`, `last_seq`; neither for a
//! shift without any entry), and compares its own top-ups of that range with the totals.
//!
//! Why not by time: `terminal_seq` is gapless and only grows, while the clock can step back
//! (a Raspberry Pi without a real-time clock booting offline, an NTP correction). Bounded by
//! time, a top-up stamped before the last close-out would fall out of every shift (the drawer
//! reads over, and the cash can leave unnoticed), one stamped in the future would count in two,
//! and a void could land in a shift without its top-up. Times are only shown: `opened_at` is
//! the previous close-out's `closed_at`, else the shift's first approved top-up's
//! `created_at`, and `closed_at` is never before `opened_at`.

use super::{Journal, JournalError, corrupt, invalid, parse_time, sql_limit};
use crate::domain::{Cents, ClientRequestId, StaffId, TerminalSeq};
use crate::protocol::api::{SHIFT_TOTAL_CENTS_MAX, ShiftCloseout, format_time};
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The current shift's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftSummary {
    /// Since when: the previous close-out, else the shift's first approved top-up; `None` for
    /// an empty first shift.
    pub opened_at: Option<DateTime<Utc>>,
    /// Cash taken, net of voids. Negative only if the shift voided more top-ups of an earlier
    /// shift than it took (which the terminal's screens do not allow).
    pub cash: Cents,
    /// Card payments taken, net of voids (negative as rarely as `cash`).
    pub card: Cents,
    /// Top-ups approved in the shift and not voided.
    pub count: u64,
    /// Top-ups voided in the shift (not in `count`).
    pub voids: u64,
}

/// A close-out as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedShift {
    /// What goes to the ledger.
    pub closeout: ShiftCloseout,
    /// Top-ups voided in the shift.
    pub voids: u64,
    /// Counted minus expected cash: negative when the drawer is short.
    pub difference: Cents,
    /// The highest `terminal_seq` in the journal when it was closed: the shift's last entry,
    /// or the previous shift's for a shift without any (`None` for an empty journal). The
    /// next shift starts after it. The range sent to the ledger is in `closeout`.
    pub last_seq: Option<TerminalSeq>,
}

/// Where a close-out stands with the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseoutState {
    /// Not yet recorded by the ledger.
    Pending,
    /// The ledger recorded it.
    Recorded,
    /// The ledger refused it for good (an operator looks at `ledger_body`).
    Rejected,
}

impl CloseoutState {
    fn as_str(self) -> &'static str {
        match self {
            CloseoutState::Pending => "pending",
            CloseoutState::Recorded => "recorded",
            CloseoutState::Rejected => "rejected",
        }
    }
}

/// The approved decisions: what staff were shown as done.
const APPROVED: &str = "('approved_online', 'approved_offline')";

/// The previous close-out: where the current shift starts.
struct PreviousClose {
    closed_at: String,
    /// The highest `terminal_seq` it covered (0 for an empty journal).
    last_seq: i64,
}

/// The current shift: its totals, and the highest `terminal_seq` they cover (0 for an empty
/// journal).
struct Shift {
    summary: ShiftSummary,
    /// The shift's first `terminal_seq`; `None` when it has no entry.
    first_seq: Option<i64>,
    last_seq: i64,
}

fn current_shift(
    conn: &Connection,
    previous: Option<&PreviousClose>,
) -> Result<Shift, JournalError> {
    let after = previous.map_or(0, |p| p.last_seq);
    let last_seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(terminal_seq), 0) FROM journal")?
        .query_row([], |r| r.get(0))?;
    if last_seq < after {
        return Err(corrupt(format!(
            "a close-out up to terminal_seq {after} in a journal that ends at {last_seq}"
        )));
    }
    // The shift's approved top-ups, and the time of its first one (by terminal_seq, not by
    // time: the clock may have stepped back since).
    let (cash, card, count, first): (i64, i64, i64, Option<String>) = conn
        .prepare_cached(&format!(
            "SELECT
                 COALESCE(SUM(CASE WHEN json_extract(request_json, '$.payment_method') = 'cash'
                                   THEN amount_cents END), 0),
                 COALESCE(SUM(CASE WHEN json_extract(request_json, '$.payment_method') = 'card'
                                   THEN amount_cents END), 0),
                 COUNT(*),
                 (SELECT created_at FROM journal
                  WHERE operation = 'recharge' AND decision IN {APPROVED}
                    AND terminal_seq > ?1 AND terminal_seq <= ?2
                  ORDER BY terminal_seq LIMIT 1)
             FROM journal
             WHERE operation = 'recharge' AND decision IN {APPROVED}
               AND terminal_seq > ?1 AND terminal_seq <= ?2"
        ))?
        .query_row([after, last_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    // The shift's approved voids of approved top-ups: that money went back during the shift,
    // wherever the top-up was taken. The top-ups of this shift they void leave its count.
    let (void_cash, void_card, voids, voided_here): (i64, i64, i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT
                 COALESCE(SUM(CASE WHEN json_extract(t.request_json, '$.payment_method') = 'cash'
                                   THEN t.amount_cents END), 0),
                 COALESCE(SUM(CASE WHEN json_extract(t.request_json, '$.payment_method') = 'card'
                                   THEN t.amount_cents END), 0),
                 COUNT(*),
                 COUNT(DISTINCT CASE WHEN t.terminal_seq > ?1 THEN t.terminal_seq END)
             FROM journal v
             JOIN journal t
               ON t.client_request_id = json_extract(v.request_json, '$.target_client_request_id')
             WHERE v.operation = 'void' AND v.decision IN {APPROVED}
               AND v.terminal_seq > ?1 AND v.terminal_seq <= ?2
               AND t.operation = 'recharge' AND t.decision IN {APPROVED}"
        ))?
        .query_row([after, last_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    // Neither can be negative: `voided_here` counts distinct top-ups of the shift.
    let non_negative = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| corrupt(format!("a shift's {what} of {n}")))
    };
    let opened_at = match previous.map(|p| p.closed_at.as_str()).or(first.as_deref()) {
        Some(t) => Some(parse_time(t).ok_or_else(|| corrupt(format!("a time of {t:?}")))?),
        None => None,
    };
    let money = |taken: i64, returned: i64| {
        taken
            .checked_sub(returned)
            .map(Cents::new)
            .ok_or_else(|| corrupt(format!("a shift of {taken} minus {returned} cents")))
    };
    Ok(Shift {
        summary: ShiftSummary {
            opened_at,
            cash: money(cash, void_cash)?,
            card: money(card, void_card)?,
            // Net of voids like the totals: the ledger's own count of the shift leaves voided
            // top-ups out, and headquarters compares the two.
            count: non_negative(count - voided_here, "count")?,
            voids: non_negative(voids, "voids")?,
        },
        first_seq: (last_seq > after).then_some(after + 1),
        last_seq,
    })
}

fn previous_close(conn: &Connection) -> Result<Option<PreviousClose>, JournalError> {
    Ok(conn
        .prepare_cached("SELECT closed_at, last_seq FROM shift_closeouts ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| {
            Ok(PreviousClose {
                closed_at: r.get(0)?,
                last_seq: r.get(1)?,
            })
        })
        .optional()?)
}

fn closed_shift(row: &rusqlite::Row<'_>) -> Result<ClosedShift, JournalError> {
    let text: String = row.get(0)?;
    let crid =
        ClientRequestId::parse(&text).map_err(|_| corrupt(format!("close-out id {text:?}")))?;
    let staff: String = row.get(1)?;
    let staff_id = StaffId::parse(&staff).map_err(|_| corrupt(format!("staff id {staff:?}")))?;
    let time = |i: usize| -> Result<DateTime<Utc>, JournalError> {
        let t: String = row.get(i)?;
        parse_time(&t).ok_or_else(|| corrupt(format!("a time of {t:?}")))
    };
    let voids: i64 = row.get(8)?;
    let last: i64 = row.get(10)?;
    let (first_seq, last_seq_sent) = sent_range(row.get(11)?, last)?;
    Ok(ClosedShift {
        closeout: ShiftCloseout {
            client_request_id: crid,
            staff_id,
            opened_at: time(2)?,
            closed_at: time(3)?,
            cash_cents: Cents::new(row.get(4)?),
            card_cents: Cents::new(row.get(5)?),
            count: row.get(6)?,
            counted_cash_cents: Cents::new(row.get(7)?),
            first_seq,
            last_seq: last_seq_sent,
        },
        voids: u64::try_from(voids).map_err(|_| corrupt(format!("voids {voids}")))?,
        difference: Cents::new(row.get(9)?),
        last_seq: last_seq(last)?,
    })
}

/// A stored `terminal_seq`, at least 1.
fn seq(n: i64, what: &str) -> Result<TerminalSeq, JournalError> {
    TerminalSeq::new(n).map_err(|_| corrupt(format!("{what} {n}")))
}

/// The `first_seq` and `last_seq` sent to the ledger.
type SentRange = (Option<TerminalSeq>, Option<TerminalSeq>);

/// The shift's range as sent to the ledger, or neither for a shift without any entry
/// (`first` is `None`; `last` is then the previous shift's end).
fn sent_range(first: Option<i64>, last: i64) -> Result<SentRange, JournalError> {
    match first {
        Some(first) if first <= last => {
            Ok((Some(seq(first, "first_seq")?), Some(seq(last, "last_seq")?)))
        }
        Some(first) => Err(corrupt(format!("a shift from {first} to {last}"))),
        None => Ok((None, None)),
    }
}

/// A close-out's `last_seq` as the API shows it: 0 (an empty journal) is `None`.
fn last_seq(n: i64) -> Result<Option<TerminalSeq>, JournalError> {
    match n {
        0 => Ok(None),
        n => Ok(Some(seq(n, "last_seq")?)),
    }
}

const CLOSEOUT_COLUMNS: &str = "client_request_id, staff_id, opened_at, closed_at, cash_cents,
     card_cents, count, counted_cash_cents, voids, difference_cents, last_seq, first_seq";

impl Journal {
    /// The current shift's totals, as of now.
    pub fn shift_summary(&self) -> Result<ShiftSummary, JournalError> {
        let previous = previous_close(&self.conn)?;
        Ok(current_shift(&self.conn, previous.as_ref())?.summary)
    }

    /// Closes the current shift: computes its totals and records them with the cash
    /// `counted` by `staff`, durably, in one transaction. The close-out waits in the journal
    /// until the ledger recorded it.
    ///
    /// `closed_at` is `now`, or the shift's `opened_at` if the clock is behind it (it stepped
    /// back): a close-out never ends before it began. Refused ([`JournalError::Invalid`]):
    /// a counted amount out of range, and a shift whose cash or card total is negative
    /// (voids of an earlier shift's top-ups; the ledger refuses negative totals).
    pub fn close_shift(
        &mut self,
        client_request_id: ClientRequestId,
        staff: &StaffId,
        counted: Cents,
        now: DateTime<Utc>,
    ) -> Result<ClosedShift, JournalError> {
        if counted.is_negative() || counted.get() > SHIFT_TOTAL_CENTS_MAX {
            return Err(invalid(format!(
                "counted cash is 0 to {SHIFT_TOTAL_CENTS_MAX} cents"
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let previous = previous_close(&tx)?;
        let Shift {
            summary,
            first_seq,
            last_seq,
        } = current_shift(&tx, previous.as_ref())?;
        let (first_sent, last_sent) = sent_range(first_seq, last_seq)?;
        let now = now.trunc_subsecs(3);
        let opened_at = summary.opened_at.unwrap_or(now);
        // A clock set back since the shift opened: the shift ends where it began.
        let closed_at = now.max(opened_at);
        if summary.cash.is_negative() || summary.card.is_negative() {
            return Err(invalid(format!(
                "this shift returned more than it took ({} cash, {} card), by voiding top-ups \
                 of an earlier shift, and the ledger refuses a negative total: close it once \
                 further top-ups cover the refunds, or ask a supervisor",
                summary.cash, summary.card
            )));
        }
        let difference = counted
            .checked_sub(summary.cash)
            .map_err(|_| invalid("the difference overflows"))?;
        let count = i64::try_from(summary.count).map_err(corrupt)?;
        let voids = i64::try_from(summary.voids).map_err(corrupt)?;
        tx.prepare_cached(&format!(
            "INSERT INTO shift_closeouts ({CLOSEOUT_COLUMNS}, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending')"
        ))?
        .execute(params![
            client_request_id.to_string(),
            staff.as_str(),
            format_time(opened_at),
            format_time(closed_at),
            summary.cash.get(),
            summary.card.get(),
            count,
            counted.get(),
            voids,
            difference.get(),
            last_seq,
            first_seq,
        ])?;
        tx.commit()?;
        Ok(ClosedShift {
            closeout: ShiftCloseout {
                client_request_id,
                staff_id: staff.clone(),
                opened_at,
                closed_at,
                cash_cents: summary.cash,
                card_cents: summary.card,
                count,
                counted_cash_cents: counted,
                first_seq: first_sent,
                last_seq: last_sent,
            },
            voids: summary.voids,
            difference,
            last_seq: self::last_seq(last_seq)?,
        })
    }

    /// Close-outs the ledger has not recorded yet, oldest first, at most `limit`.
    pub fn pending_closeouts(&self, limit: usize) -> Result<Vec<ClosedShift>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CLOSEOUT_COLUMNS} FROM shift_closeouts
             WHERE state = 'pending' ORDER BY id LIMIT ?1"
        ))?;
        let mut rows = stmt.query([sql_limit(limit)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(closed_shift(row)?);
        }
        Ok(out)
    }

    /// The last close-out and where it stands, if any.
    pub fn last_closeout(&self) -> Result<Option<(ClosedShift, CloseoutState)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CLOSEOUT_COLUMNS}, state FROM shift_closeouts ORDER BY id DESC LIMIT 1"
        ))?;
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let state: String = row.get(12)?;
        let state = match state.as_str() {
            "pending" => CloseoutState::Pending,
            "recorded" => CloseoutState::Recorded,
            "rejected" => CloseoutState::Rejected,
            other => return Err(corrupt(format!("close-out state {other:?}"))),
        };
        Ok(Some((closed_shift(row)?, state)))
    }

    /// Records the ledger's final answer to a close-out (`Recorded` or `Rejected`).
    pub fn settle_closeout(
        &mut self,
        client_request_id: ClientRequestId,
        state: CloseoutState,
        ledger_status: u16,
        ledger_body: &str,
    ) -> Result<(), JournalError> {
        if state == CloseoutState::Pending {
            return Err(invalid("a close-out is settled as recorded or rejected"));
        }
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE shift_closeouts SET state = ?2, ledger_status = ?3, ledger_body = ?4
                 WHERE client_request_id = ?1 AND state = 'pending'",
            )?
            .execute(params![
                client_request_id.to_string(),
                state.as_str(),
                ledger_status,
                super::bounded(ledger_body.to_owned(), super::TEXT_BYTES_MAX),
            ])?;
        if changed == 0 {
            return Err(invalid(format!("no pending close-out {client_request_id}")));
        }
        Ok(())
    }
}
