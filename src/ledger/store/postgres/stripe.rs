//! Stripe webhook events in the PostgreSQL store: each verified event the ledger acts on is
//! ONE call of a stored procedure (`migrations/postgres/0006_stripe_procedures.sql`), so one
//! transaction and one round trip (a prepared statement, cached per connection): the
//! database locks the card, records the event, credits or reverses, posts against
//! `stripe_clearing` and writes the audit log, or does nothing at all. The procedures do
//! what the Stripe flow (`flow::stripe`) decides and the SQLite store writes, row for row;
//! this file only passes the event in and turns the procedure's row into a
//! [`StripeOutcome`], and logs what an operator must hear about.

use super::{PgStore, classify};
use crate::domain::{CardUid, Cents};
use crate::ledger::store::{StoreError, StripeEventRecord, StripeOutcome, StripeStore};
use crate::ledger::stripe::StripeEvent;
use crate::protocol::api::format_time;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// The outcomes the procedures answer, as the `'static` names [`StripeOutcome`] carries.
const OUTCOMES: &[&str] = &[
    "credited",
    "duplicate_event",
    "duplicate_session",
    "refused",
    "refunded",
    "refund_nothing_new",
    "refund_waiting",
];

/// What a Stripe procedure returned.
struct ProcedureRow {
    /// What was done.
    outcome: &'static str,
    /// The card concerned, if any.
    card_uid: Option<CardUid>,
    /// Money credited or reversed, if any.
    amount: Option<Cents>,
    /// The card's balance after it, if money moved.
    balance: Option<Cents>,
    /// The session concerned (a refused refund's, found through its payment intent).
    session_id: Option<String>,
    /// The session that already holds a credit's payment intent (credited without it).
    other_session_id: Option<String>,
    /// A refund took the card below zero (now blocked for debt).
    reversed_into_debt: bool,
}

impl ProcedureRow {
    fn read(row: &Row) -> Result<ProcedureRow, StoreError> {
        let outcome: String = row.try_get(0).map_err(classify)?;
        let outcome = OUTCOMES
            .iter()
            .copied()
            .find(|o| *o == outcome)
            .ok_or_else(|| {
                StoreError::Internal(format!("a Stripe procedure answered {outcome:?}"))
            })?;
        let card_uid = row
            .try_get::<_, Option<String>>(1)
            .map_err(classify)?
            .map(|uid| {
                CardUid::parse(&uid)
                    .map_err(|e| StoreError::Internal(format!("a stored card UID {uid:?}: {e}")))
            })
            .transpose()?;
        let cents = |i: usize| -> Result<Option<Cents>, StoreError> {
            Ok(row
                .try_get::<_, Option<i64>>(i)
                .map_err(classify)?
                .map(Cents::new))
        };
        Ok(ProcedureRow {
            outcome,
            card_uid,
            amount: cents(2)?,
            balance: cents(3)?,
            session_id: row.try_get(4).map_err(classify)?,
            other_session_id: row.try_get(5).map_err(classify)?,
            reversed_into_debt: row.try_get(6).map_err(classify)?,
        })
    }
}

/// Now, to the millisecond: the precision SQLite keeps (`format_time`), so both backends
/// store, order and show the same times.
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// A Stripe procedure's call: every procedure returns [`ProcedureRow`]'s columns.
const CREDIT: &str =
    "SELECT * FROM sp_process_stripe_recharge($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const REFUND: &str = "SELECT * FROM sp_process_stripe_refund($1, $2, $3, $4, $5)";
const REFUSED: &str = "SELECT * FROM sp_process_stripe_refused($1, $2, $3, $4, $5, $6, $7)";

const EVENTS: &str = "SELECT e.received_at, e.event_id, e.event_type, e.outcome,
        e.checkout_session_id, r.card_uid,
        CASE WHEN e.outcome = 'credited' THEN e.amount_cents
             WHEN f.amount_cents IS NOT NULL THEN -f.amount_cents END,
        e.reason
    FROM stripe_events e
    LEFT JOIN stripe_recharges r ON r.checkout_session_id = e.checkout_session_id
    LEFT JOIN stripe_refunds f ON f.event_id = e.event_id
    WHERE NOT $1 OR e.outcome IN ('refused', 'refund_waiting')
    ORDER BY e.received_at DESC, e.event_id COLLATE \"C\"
    LIMIT $2";

impl PgStore {
    /// One call of a Stripe procedure: one round trip, its own transaction.
    async fn call_stripe(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<ProcedureRow, StoreError> {
        let rows = self.rows(sql, params).await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Internal("a Stripe procedure returned no row".into()))?;
        ProcedureRow::read(row)
    }
}

/// Logs what an operator must hear about (the Stripe flow's warnings), once it committed.
fn warn(event: &StripeEvent, done: &ProcedureRow) {
    let uid = done.card_uid.as_ref().map(CardUid::as_str).unwrap_or("");
    if let Some(other) = &done.other_session_id
        && let StripeEvent::SessionPaid(s) = event
    {
        tracing::warn!(event_id = %s.event_id, session = %s.session_id,
            payment_intent = s.payment_intent.as_deref().unwrap_or(""), other_session = %other,
            "a payment intent already credited through another session: credited without it");
    }
    if done.reversed_into_debt {
        tracing::warn!(card = %uid, balance = ?done.balance.map(Cents::get),
            "a Stripe refund took a card below zero: it is blocked for debt");
    }
    if let StripeEvent::Refused {
        event_id,
        event_type,
        reason,
        ..
    } = event
        && done.outcome == "refused"
    {
        let what = if event_type == "charge.refunded" {
            "a Stripe refund in another currency was not applied: an operator must check it in Stripe (no money was taken back from the card)"
        } else {
            "a paid Stripe session cannot be credited: an operator must refund it or credit the card by hand"
        };
        tracing::warn!(
            event_id,
            session = done.session_id.as_deref().unwrap_or(""),
            reason,
            "{what}"
        );
    }
}

impl StripeStore for PgStore {
    async fn apply_stripe(
        &self,
        request_id: String,
        event: StripeEvent,
    ) -> Result<StripeOutcome, StoreError> {
        let now = now_ms();
        let limits = self.options.limits;
        let request_id = request_id.as_str();
        let (event_id, done) = match &event {
            // Nothing to do and nothing to remember.
            StripeEvent::Unpaid { event_id } | StripeEvent::Ignored { event_id, .. } => {
                return Ok(StripeOutcome::nothing(event_id, "ignored"));
            }
            StripeEvent::SessionPaid(s) => {
                let done = self
                    .call_stripe(
                        CREDIT,
                        &[
                            &request_id,
                            &s.event_id,
                            &s.event_type,
                            &s.session_id,
                            &s.payment_intent,
                            &s.card_uid.as_str(),
                            &s.amount.get(),
                            &limits.recharge_max.get(),
                            &limits.balance_max.get(),
                            &now,
                        ],
                    )
                    .await?;
                (&s.event_id, done)
            }
            StripeEvent::ChargeRefunded(r) => {
                let done = self
                    .call_stripe(
                        REFUND,
                        &[
                            &request_id,
                            &r.event_id,
                            &r.payment_intent,
                            &r.amount_refunded.get(),
                            &now,
                        ],
                    )
                    .await?;
                (&r.event_id, done)
            }
            StripeEvent::Refused {
                event_id,
                event_type,
                session_id,
                payment_intent,
                reason,
            } => {
                let done = self
                    .call_stripe(
                        REFUSED,
                        &[
                            &request_id,
                            event_id,
                            event_type,
                            session_id,
                            payment_intent,
                            reason,
                            &now,
                        ],
                    )
                    .await?;
                (event_id, done)
            }
        };
        warn(&event, &done);
        Ok(StripeOutcome {
            card_uid: done.card_uid,
            amount_cents: done.amount,
            balance_cents: done.balance,
            ..StripeOutcome::nothing(event_id, done.outcome)
        })
    }

    async fn stripe_events(
        &self,
        attention: bool,
        limit: u32,
    ) -> Result<Vec<StripeEventRecord>, StoreError> {
        let rows = self.rows(EVENTS, &[&attention, &i64::from(limit)]).await?;
        rows.iter()
            .map(|r| {
                Ok(StripeEventRecord {
                    received_at: format_time(r.try_get(0).map_err(classify)?),
                    event_id: r.try_get(1).map_err(classify)?,
                    event_type: r.try_get(2).map_err(classify)?,
                    outcome: r.try_get(3).map_err(classify)?,
                    checkout_session_id: r.try_get(4).map_err(classify)?,
                    card_uid: r.try_get(5).map_err(classify)?,
                    amount_cents: r
                        .try_get::<_, Option<i64>>(6)
                        .map_err(classify)?
                        .map(Cents::new),
                    reason: r.try_get(7).map_err(classify)?,
                })
            })
            .collect()
    }
}
