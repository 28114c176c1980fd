//! Shifts at a checkpoint: what the drawer should hold, and its close-out.
//!
//! A shift runs from the previous close-out (or, on a terminal that never closed one, from
//! its first top-up) to now. Its totals are the top-ups shown as approved in that time, by
//! payment method, minus the top-ups voided in it (their money went back to the attendee).
//! A close-out computes them and records them with the counted cash in one transaction, so
//! the figures sent to the ledger are exactly the ones staff saw when they closed.

use super::{Journal, JournalError, corrupt, invalid, parse_time, sql_limit};
use crate::domain::{Cents, ClientRequestId, StaffId};
use crate::ledger::model::{SHIFT_TOTAL_CENTS_MAX, ShiftCloseout, format_time};
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The current shift's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftSummary {
    /// Since when: the previous close-out, else the first top-up; `None` for an empty first
    /// shift.
    pub opened_at: Option<DateTime<Utc>>,
    /// Cash taken, net of voids.
    pub cash: Cents,
    /// Card payments taken, net of voids.
    pub card: Cents,
    /// Top-ups approved and not voided.
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

fn summary_since(
    conn: &Connection,
    previous_close: Option<&str>,
) -> Result<ShiftSummary, JournalError> {
    let since = previous_close.unwrap_or("");
    let (cash, card, count, first): (i64, i64, i64, Option<String>) = conn
        .prepare_cached(&format!(
            "SELECT
                 COALESCE(SUM(CASE WHEN json_extract(request_json, '$.payment_method') = 'cash'
                                   THEN amount_cents END), 0),
                 COALESCE(SUM(CASE WHEN json_extract(request_json, '$.payment_method') = 'card'
                                   THEN amount_cents END), 0),
                 COUNT(*),
                 MIN(created_at)
             FROM journal
             WHERE operation = 'recharge' AND decision IN {APPROVED} AND created_at > ?1"
        ))?
        .query_row([since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    // Voids made in this shift of approved top-ups: the money went back.
    let (void_cash, void_card, voids): (i64, i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT
                 COALESCE(SUM(CASE WHEN json_extract(t.request_json, '$.payment_method') = 'cash'
                                   THEN t.amount_cents END), 0),
                 COALESCE(SUM(CASE WHEN json_extract(t.request_json, '$.payment_method') = 'card'
                                   THEN t.amount_cents END), 0),
                 COUNT(*)
             FROM journal v
             JOIN journal t
               ON t.client_request_id = json_extract(v.request_json, '$.target_client_request_id')
             WHERE v.operation = 'void' AND v.decision IN {APPROVED} AND v.created_at > ?1
               AND t.operation = 'recharge' AND t.decision IN {APPROVED}"
        ))?
        .query_row([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let non_negative = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| corrupt(format!("a shift's {what} of {n}")))
    };
    let opened_at = match previous_close.or(first.as_deref()) {
        Some(t) => Some(parse_time(t).ok_or_else(|| corrupt(format!("a time of {t:?}")))?),
        None => None,
    };
    Ok(ShiftSummary {
        opened_at,
        cash: Cents::new(cash - void_cash),
        card: Cents::new(card - void_card),
        // Net of voids like the totals: the ledger's own count of the shift leaves voided
        // top-ups out, and headquarters compares the two.
        count: non_negative(count - voids, "count")?,
        voids: non_negative(voids, "voids")?,
    })
}

fn previous_close(conn: &Connection) -> Result<Option<String>, JournalError> {
    Ok(conn
        .prepare_cached("SELECT closed_at FROM shift_closeouts ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
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
        },
        voids: u64::try_from(voids).map_err(|_| corrupt(format!("voids {voids}")))?,
        difference: Cents::new(row.get(9)?),
    })
}

const CLOSEOUT_COLUMNS: &str = "client_request_id, staff_id, opened_at, closed_at, cash_cents,
     card_cents, count, counted_cash_cents, voids, difference_cents";

impl Journal {
    /// The current shift's totals, as of now.
    pub fn shift_summary(&self) -> Result<ShiftSummary, JournalError> {
        let previous = previous_close(&self.conn)?;
        summary_since(&self.conn, previous.as_deref())
    }

    /// Closes the current shift: computes its totals and records them with the cash
    /// `counted` by `staff`, durably, in one transaction. The close-out waits in the journal
    /// until the ledger recorded it.
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
        let summary = summary_since(&tx, previous.as_deref())?;
        let closed_at = now.trunc_subsecs(3);
        // A clock set back since the last close-out: the shift ends where it began.
        let opened_at = summary.opened_at.unwrap_or(closed_at).min(closed_at);
        if summary.cash.is_negative() || summary.card.is_negative() {
            return Err(corrupt(format!(
                "a shift with {} cash and {} card: voids of top-ups it does not hold",
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending')"
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
            },
            voids: summary.voids,
            difference,
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
        let state: String = row.get(10)?;
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
