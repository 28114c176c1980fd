//! Stripe events in the SQLite store: the Stripe flow's reads ([`StripeReads`]) and the
//! execution of its plans (`flow::stripe`: the seed system's `sp_process_stripe_recharge`,
//! and its refunds), in the writer's savepoint: card, Stripe rows, postings against
//! `stripe_clearing`, the audit log and the event's row commit together or not at all.

use super::ops::SqlReads;
use super::{SqliteStore, flags_json, internal, post, write_card};
use crate::domain::{CardUid, Cents};
use crate::ledger::flow::stripe::{self as flow, Credited, EventRecord, StripeReads, StripeWrite};
use crate::ledger::rules::Limits;
use crate::ledger::store::{StoreError, StripeEventRecord, StripeOutcome, StripeStore};
use crate::ledger::stripe::StripeEvent;
use crate::protocol::api::format_time;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use uuid::Uuid;

/// The credit whose `column` (`checkout_session_id` or `payment_intent_id`) is `key`.
fn credit_where(
    conn: &Connection,
    column: &'static str,
    key: &str,
) -> Result<Option<Credited>, StoreError> {
    let sql = format!(
        "SELECT checkout_session_id, card_uid, amount_cents, refunded_cents, transaction_id
         FROM stripe_recharges WHERE {column} = ?1"
    );
    let row: Option<(String, String, i64, i64, String)> = conn
        .prepare_cached(&sql)?
        .query_row([key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    row.map(|(session_id, card, amount, refunded, tx)| {
        Ok(Credited {
            session_id,
            card_uid: CardUid::parse(&card).map_err(internal)?,
            amount: Cents::new(amount),
            refunded: Cents::new(refunded),
            transaction_id: Uuid::parse_str(&tx).map_err(internal)?,
        })
    })
    .transpose()
}

impl StripeReads for SqlReads<'_> {
    fn event_seen(&self, event_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM stripe_events WHERE event_id = ?1")?
            .query_row([event_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn credit_of_session(&self, session_id: &str) -> Result<Option<Credited>, StoreError> {
        credit_where(self.0, "checkout_session_id", session_id)
    }

    fn credit_of_payment_intent(&self, pi: &str) -> Result<Option<Credited>, StoreError> {
        credit_where(self.0, "payment_intent_id", pi)
    }

    fn waiting_refunds(&self, pi: &str) -> Result<Vec<(String, Cents)>, StoreError> {
        let rows: Vec<(String, i64)> = self
            .0
            .prepare_cached(
                "SELECT event_id, amount_cents FROM stripe_events
                 WHERE outcome = 'refund_waiting' AND payment_intent_id = ?1
                 ORDER BY amount_cents",
            )?
            .query_map([pi], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows.into_iter().map(|(e, a)| (e, Cents::new(a))).collect())
    }
}

/// Applies `event` (already verified): decided by the Stripe flow, then written.
fn apply(
    conn: &Connection,
    request_id: &str,
    event: &StripeEvent,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<StripeOutcome, StoreError> {
    let plan = flow::decide(&SqlReads(conn), event, limits)?;
    let now = format_time(now);
    for w in &plan.writes {
        write(conn, request_id, &now, w)?;
    }
    Ok(plan.outcome)
}

fn write(
    conn: &Connection,
    request_id: &str,
    now: &str,
    w: &StripeWrite,
) -> Result<(), StoreError> {
    match w {
        StripeWrite::Card(c) => write_card(conn, &c.uid, c.create, &c.next, now)?,
        StripeWrite::Credit {
            transaction_id,
            session_id,
            payment_intent,
            event_id,
            card_uid,
            amount,
            flags,
            previous,
            next,
        } => {
            conn.prepare_cached(
                "INSERT INTO stripe_recharges (transaction_id, checkout_session_id, payment_intent_id,
                     event_id, card_uid, amount_cents, flags, previous_balance_cents, new_balance_cents,
                     processed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                transaction_id.to_string(),
                session_id,
                payment_intent,
                event_id,
                card_uid.as_str(),
                amount.get(),
                flags_json(flags)?,
                previous.get(),
                next.get(),
                now
            ])?;
        }
        StripeWrite::Refund {
            transaction_id,
            event_id,
            session_id,
            card_uid,
            delta,
            previous,
            next,
        } => {
            conn.prepare_cached(
                "UPDATE stripe_recharges SET refunded_cents = refunded_cents + ?2
                 WHERE checkout_session_id = ?1",
            )?
            .execute(params![session_id, delta.get()])?;
            conn.prepare_cached(
                "INSERT INTO stripe_refunds (transaction_id, event_id, checkout_session_id, card_uid,
                     amount_cents, previous_balance_cents, new_balance_cents, processed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                transaction_id.to_string(),
                event_id,
                session_id,
                card_uid.as_str(),
                delta.get(),
                previous.get(),
                next.get(),
                now
            ])?;
        }
        StripeWrite::Postings(transaction_id, entries) => post(conn, transaction_id, entries, now)?,
        StripeWrite::Event(e) => record_event(conn, e, now)?,
        StripeWrite::AppliedLate {
            event_id,
            session_id,
        } => {
            conn.prepare_cached(
                "UPDATE stripe_events SET outcome = 'refund_applied_late', checkout_session_id = ?2
                 WHERE event_id = ?1",
            )?
            .execute([event_id, session_id])?;
        }
        StripeWrite::Audit {
            operation,
            event_id,
            transaction_id,
            card_uid,
            amount,
            outcome,
            details,
        } => {
            conn.prepare_cached(
                "INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                     client_request_id, transaction_id, card_uid, amount_cents, outcome, error_code, details)
                 VALUES (?1, ?2, 'stripe', NULL, ?3, NULL, ?4, ?5, ?6, ?7, NULL, ?8)",
            )?
            .execute(params![
                now,
                request_id,
                operation,
                transaction_id.map(|t| t.to_string()),
                card_uid.as_ref().map(CardUid::as_str),
                amount.map(Cents::get),
                outcome,
                json!({ "event_id": event_id, "more": details }).to_string()
            ])?;
        }
    }
    Ok(())
}

fn record_event(conn: &Connection, row: &EventRecord, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO stripe_events (event_id, event_type, outcome, checkout_session_id,
             payment_intent_id, amount_cents, transaction_id, reason, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        row.event_id,
        row.event_type,
        row.outcome,
        row.session_id,
        row.payment_intent,
        row.amount.map(Cents::get),
        row.transaction_id.map(|t| t.to_string()),
        row.reason,
        now
    ])?;
    Ok(())
}

/// Stripe events, newest first; with `attention`, only refused ones (sessions and refunds)
/// and waiting refunds.
fn events(
    conn: &Connection,
    attention: bool,
    limit: u32,
) -> Result<Vec<StripeEventRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.received_at, e.event_id, e.event_type, e.outcome, e.checkout_session_id,
                r.card_uid,
                CASE WHEN e.outcome = 'credited' THEN e.amount_cents
                     WHEN f.amount_cents IS NOT NULL THEN -f.amount_cents END,
                e.reason
         FROM stripe_events e
         LEFT JOIN stripe_recharges r ON r.checkout_session_id = e.checkout_session_id
         LEFT JOIN stripe_refunds f ON f.event_id = e.event_id
         WHERE ?1 = 0 OR e.outcome IN ('refused', 'refund_waiting')
         ORDER BY e.received_at DESC, e.event_id
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![attention, limit], |r| {
        Ok(StripeEventRecord {
            received_at: r.get(0)?,
            event_id: r.get(1)?,
            event_type: r.get(2)?,
            outcome: r.get(3)?,
            checkout_session_id: r.get(4)?,
            card_uid: r.get(5)?,
            amount_cents: r.get::<_, Option<i64>>(6)?.map(Cents::new),
            reason: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl StripeStore for SqliteStore {
    async fn apply_stripe(
        &self,
        request_id: String,
        event: crate::ledger::stripe::StripeEvent,
    ) -> Result<StripeOutcome, StoreError> {
        let limits = self.inner.limits;
        self.write(move |conn| apply(conn, &request_id, &event, limits, Utc::now()))
            .await
    }

    async fn stripe_events(
        &self,
        attention: bool,
        limit: u32,
    ) -> Result<Vec<StripeEventRecord>, StoreError> {
        self.read_in_background(move |conn| events(conn, attention, limit))
            .await
    }
}
