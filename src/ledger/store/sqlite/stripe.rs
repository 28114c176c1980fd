//! Stripe events in the SQLite store: `sp_process_stripe_recharge` of the seed system, and its
//! refunds. Each runs in the writer's savepoint: card, Stripe rows, postings against
//! `stripe_clearing`, the audit log and the event's row commit together or not at all.

use super::{SqliteStore, flags_json, internal, load_card, post, write_card};
use crate::domain::{CardUid, Cents};
use crate::ledger::flow::{STRIPE_CLEARING, card_account, new_transaction_id};
use crate::ledger::rules::{self, Limits};
use crate::ledger::store::{StoreError, StripeEventRecord, StripeOutcome, StripeStore};
use crate::ledger::stripe::{PaidSession, RefundedCharge, StripeEvent, refund_delta};
use crate::protocol::api::format_time;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

fn neg(c: Cents) -> Result<Cents, StoreError> {
    c.checked_neg().map_err(internal)
}

/// One row of `stripe_events`.
struct EventRow<'a> {
    event_id: &'a str,
    event_type: &'a str,
    outcome: &'static str,
    session_id: Option<&'a str>,
    payment_intent: Option<&'a str>,
    amount: Option<Cents>,
    transaction_id: Option<String>,
    reason: Option<&'a str>,
}

fn record_event(conn: &Connection, row: &EventRow<'_>, now: &str) -> Result<(), StoreError> {
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
        row.transaction_id,
        row.reason,
        now
    ])?;
    Ok(())
}

/// The audit trail's row for a Stripe event (actor `stripe`).
#[allow(clippy::too_many_arguments)]
fn audit(
    conn: &Connection,
    request_id: &str,
    now: &str,
    operation: &str,
    event_id: &str,
    transaction_id: Option<String>,
    card: Option<&CardUid>,
    amount: Option<Cents>,
    outcome: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
             client_request_id, transaction_id, card_uid, amount_cents, outcome, error_code, details)
         VALUES (?1, ?2, 'stripe', NULL, ?3, NULL, ?4, ?5, ?6, ?7, NULL, ?8)",
    )?
    .execute(params![
        now,
        request_id,
        operation,
        transaction_id,
        card.map(CardUid::as_str),
        amount.map(Cents::get),
        outcome,
        json!({ "event_id": event_id, "more": details }).to_string()
    ])?;
    Ok(())
}

/// Applies `event` (already verified); see `LedgerStore::apply_stripe`.
pub(super) fn apply(
    conn: &Connection,
    request_id: &str,
    event: &StripeEvent,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<StripeOutcome, StoreError> {
    let now = format_time(now);
    let outcome = |event_id: &str, outcome| StripeOutcome {
        event_id: event_id.to_owned(),
        outcome,
        card_uid: None,
        amount_cents: None,
        balance_cents: None,
    };
    let event_id = match event {
        StripeEvent::SessionPaid(s) => &s.event_id,
        StripeEvent::ChargeRefunded(r) => &r.event_id,
        StripeEvent::Refused { event_id, .. } => event_id,
        // Nothing to do and nothing to remember.
        StripeEvent::Unpaid { event_id } => return Ok(outcome(event_id, "ignored")),
        StripeEvent::Ignored { event_id, .. } => return Ok(outcome(event_id, "ignored")),
    };
    let seen: Option<String> = conn
        .prepare_cached("SELECT outcome FROM stripe_events WHERE event_id = ?1")?
        .query_row([event_id], |r| r.get(0))
        .optional()?;
    if seen.is_some() {
        return Ok(outcome(event_id, "duplicate_event"));
    }
    match event {
        StripeEvent::SessionPaid(s) => credit(conn, request_id, s, limits, &now),
        StripeEvent::ChargeRefunded(r) => refund(conn, request_id, r, &now),
        StripeEvent::Refused {
            event_id,
            event_type,
            session_id,
            payment_intent,
            reason,
        } => {
            let is_refund = event_type == "charge.refunded";
            // A refund names no session: the one credited through its payment intent, if
            // any yet, is recorded for the operator (shown with its card by `events`).
            let session_id = match (session_id, payment_intent) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(pi)) => credited_session(conn, pi)?.map(|(s, _)| s),
                (None, None) => None,
            };
            let what = if is_refund {
                "a Stripe refund in another currency was not applied: an operator must check it in Stripe (no money was taken back from the card)"
            } else {
                "a paid Stripe session cannot be credited: an operator must refund it or credit the card by hand"
            };
            tracing::warn!(
                event_id,
                session = session_id.as_deref().unwrap_or(""),
                reason,
                "{what}"
            );
            record_event(
                conn,
                &EventRow {
                    event_id,
                    event_type,
                    outcome: "refused",
                    session_id: session_id.as_deref(),
                    // Not `refund_waiting`: a credit that arrives later never applies it.
                    payment_intent: payment_intent.as_deref(),
                    amount: None,
                    transaction_id: None,
                    reason: Some(reason),
                },
                &now,
            )?;
            audit(
                conn,
                request_id,
                &now,
                if is_refund {
                    "stripe_refund"
                } else {
                    "stripe_recharge"
                },
                event_id,
                None,
                None,
                None,
                "refused",
                json!({ "checkout_session_id": session_id, "payment_intent": payment_intent,
                        "reason": reason }),
            )?;
            Ok(outcome(event_id, "refused"))
        }
        StripeEvent::Unpaid { .. } | StripeEvent::Ignored { .. } => Err(internal("unreachable")),
    }
}

fn credit(
    conn: &Connection,
    request_id: &str,
    s: &PaidSession,
    limits: Limits,
    now: &str,
) -> Result<StripeOutcome, StoreError> {
    let already: Option<String> = conn
        .prepare_cached(
            "SELECT transaction_id FROM stripe_recharges WHERE checkout_session_id = ?1",
        )?
        .query_row([&s.session_id], |r| r.get(0))
        .optional()?;
    if let Some(transaction_id) = already {
        // Another event for a session already credited (completed, then async succeeded).
        record_event(
            conn,
            &EventRow {
                event_id: &s.event_id,
                event_type: &s.event_type,
                outcome: "duplicate_session",
                session_id: Some(&s.session_id),
                payment_intent: s.payment_intent.as_deref(),
                amount: Some(s.amount),
                transaction_id: Some(transaction_id),
                reason: None,
            },
            now,
        )?;
        return Ok(StripeOutcome {
            event_id: s.event_id.clone(),
            outcome: "duplicate_session",
            card_uid: Some(s.card_uid.clone()),
            amount_cents: None,
            balance_cents: None,
        });
    }
    // A payment intent belongs to one session; should another session name it too, the
    // credit still happens (the attendee paid), without the link refunds use.
    let mut payment_intent = s.payment_intent.as_deref();
    if let Some(pi) = payment_intent {
        let taken: Option<String> = conn
            .prepare_cached(
                "SELECT checkout_session_id FROM stripe_recharges WHERE payment_intent_id = ?1",
            )?
            .query_row([pi], |r| r.get(0))
            .optional()?;
        if let Some(other) = taken {
            tracing::warn!(event_id = %s.event_id, session = %s.session_id, payment_intent = pi,
                other_session = %other,
                "a payment intent already credited through another session: credited without it");
            payment_intent = None;
        }
    }
    let card = load_card(conn, &s.card_uid)?;
    let change = rules::decide_stripe_credit(card, s.amount, limits)
        .map_err(|e| internal(format!("a Stripe credit: {}", e.message)))?;
    let transaction_id = new_transaction_id();
    write_card(conn, &s.card_uid, change.create_card, &change.next, now)?;
    conn.prepare_cached(
        "INSERT INTO stripe_recharges (transaction_id, checkout_session_id, payment_intent_id,
             event_id, card_uid, amount_cents, flags, previous_balance_cents, new_balance_cents,
             processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        transaction_id.to_string(),
        s.session_id,
        payment_intent,
        s.event_id,
        s.card_uid.as_str(),
        s.amount.get(),
        flags_json(&change.flags)?,
        change.previous.balance.get(),
        change.next.balance.get(),
        now
    ])?;
    post(
        conn,
        &transaction_id,
        &[
            (card_account(&s.card_uid), s.amount),
            (STRIPE_CLEARING.to_owned(), neg(s.amount)?),
        ],
        now,
    )?;
    record_event(
        conn,
        &EventRow {
            event_id: &s.event_id,
            event_type: &s.event_type,
            outcome: "credited",
            session_id: Some(&s.session_id),
            payment_intent: s.payment_intent.as_deref(),
            amount: Some(s.amount),
            transaction_id: Some(transaction_id.to_string()),
            reason: None,
        },
        now,
    )?;
    audit(
        conn,
        request_id,
        now,
        "stripe_recharge",
        &s.event_id,
        Some(transaction_id.to_string()),
        Some(&s.card_uid),
        Some(s.amount),
        "approved",
        json!({ "checkout_session_id": s.session_id, "payment_intent": s.payment_intent,
                "flags": change.flags }),
    )?;
    let mut balance = change.next.balance;
    // Refunds of this payment that arrived before it: applied now, in the same transaction.
    if let Some(pi) = payment_intent {
        let waiting: Vec<(String, i64)> = conn
            .prepare_cached(
                "SELECT event_id, amount_cents FROM stripe_events
                 WHERE outcome = 'refund_waiting' AND payment_intent_id = ?1
                 ORDER BY amount_cents",
            )?
            .query_map([pi], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (event_id, amount_refunded) in waiting {
            if let Some(Reversal { balance: after, .. }) = reverse(
                conn,
                request_id,
                &s.session_id,
                &event_id,
                Cents::new(amount_refunded),
                now,
            )? {
                balance = after;
            }
            conn.prepare_cached(
                "UPDATE stripe_events SET outcome = 'refund_applied_late', checkout_session_id = ?2
                 WHERE event_id = ?1",
            )?
            .execute([&event_id, &s.session_id])?;
        }
    }
    Ok(StripeOutcome {
        event_id: s.event_id.clone(),
        outcome: "credited",
        card_uid: Some(s.card_uid.clone()),
        amount_cents: Some(s.amount),
        balance_cents: Some(balance),
    })
}

/// What a refund reversed.
struct Reversal {
    transaction_id: uuid::Uuid,
    /// Taken back from the card.
    delta: Cents,
    /// The card's balance after it.
    balance: Cents,
}

/// Reverses what `amount_refunded` (cumulative) adds to the session's refunds so far, or
/// `None` when there was nothing new.
fn reverse(
    conn: &Connection,
    request_id: &str,
    session_id: &str,
    event_id: &str,
    amount_refunded: Cents,
    now: &str,
) -> Result<Option<Reversal>, StoreError> {
    let (card_text, credited, reversed): (String, i64, i64) = conn
        .prepare_cached(
            "SELECT card_uid, amount_cents, refunded_cents FROM stripe_recharges
             WHERE checkout_session_id = ?1",
        )?
        .query_row([session_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let card_uid = CardUid::parse(&card_text).map_err(internal)?;
    let delta = refund_delta(Cents::new(credited), Cents::new(reversed), amount_refunded);
    if delta.get() == 0 {
        return Ok(None);
    }
    let card = load_card(conn, &card_uid)?
        .ok_or_else(|| internal(format!("card {card_uid} of a Stripe credit is missing")))?;
    let change = rules::decide_reversal(card, neg(delta)?)
        .map_err(|e| internal(format!("a Stripe refund: {}", e.message)))?;
    let transaction_id = new_transaction_id();
    write_card(conn, &card_uid, false, &change.next, now)?;
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
        change.previous.balance.get(),
        change.next.balance.get(),
        now
    ])?;
    post(
        conn,
        &transaction_id,
        &[
            (card_account(&card_uid), neg(delta)?),
            (STRIPE_CLEARING.to_owned(), delta),
        ],
        now,
    )?;
    audit(
        conn,
        request_id,
        now,
        "stripe_refund",
        event_id,
        Some(transaction_id.to_string()),
        Some(&card_uid),
        Some(delta),
        "approved",
        json!({ "checkout_session_id": session_id, "flags": change.flags }),
    )?;
    if change.next.balance.is_negative() {
        tracing::warn!(card = %card_uid, balance = %change.next.balance,
            "a Stripe refund took a card below zero: it is blocked for debt");
    }
    Ok(Some(Reversal {
        transaction_id,
        delta,
        balance: change.next.balance,
    }))
}

fn refund_row<'a>(
    r: &'a RefundedCharge,
    outcome: &'static str,
    session_id: Option<&'a str>,
    transaction_id: Option<String>,
) -> EventRow<'a> {
    EventRow {
        event_id: &r.event_id,
        event_type: "charge.refunded",
        outcome,
        session_id,
        payment_intent: r.payment_intent.as_deref(),
        amount: Some(r.amount_refunded),
        transaction_id,
        reason: None,
    }
}

/// The session credited through payment intent `pi`, and its card.
fn credited_session(conn: &Connection, pi: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT checkout_session_id, card_uid FROM stripe_recharges
             WHERE payment_intent_id = ?1",
        )?
        .query_row([pi], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

fn refund(
    conn: &Connection,
    request_id: &str,
    r: &RefundedCharge,
    now: &str,
) -> Result<StripeOutcome, StoreError> {
    let session = match &r.payment_intent {
        Some(pi) => credited_session(conn, pi)?,
        None => None,
    };
    let Some((session_id, card_text)) = session else {
        // A refund of a payment the ledger has not credited (yet): Stripe does not promise
        // order, so it waits for its session; a charge that is not a checkout of ours
        // simply waits forever and moves nothing.
        record_event(conn, &refund_row(r, "refund_waiting", None, None), now)?;
        return Ok(StripeOutcome {
            event_id: r.event_id.clone(),
            outcome: "refund_waiting",
            card_uid: None,
            amount_cents: None,
            balance_cents: None,
        });
    };
    let card_uid = CardUid::parse(&card_text).map_err(internal)?;
    let reversed = reverse(
        conn,
        request_id,
        &session_id,
        &r.event_id,
        r.amount_refunded,
        now,
    )?;
    let transaction_id = reversed.as_ref().map(|x| x.transaction_id.to_string());
    let outcome = if reversed.is_some() {
        "refunded"
    } else {
        "refund_nothing_new"
    };
    record_event(
        conn,
        &refund_row(r, outcome, Some(&session_id), transaction_id),
        now,
    )?;
    Ok(StripeOutcome {
        event_id: r.event_id.clone(),
        outcome,
        card_uid: Some(card_uid),
        amount_cents: reversed.as_ref().map(|x| x.delta),
        balance_cents: reversed.as_ref().map(|x| x.balance),
    })
}

/// Stripe events, newest first; with `attention`, only refused ones (sessions and refunds)
/// and waiting refunds.
pub(super) fn events(
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
        self.read(move |conn| events(conn, attention, limit)).await
    }
}
