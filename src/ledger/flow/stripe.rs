//! The flow of a verified Stripe event (the seed system's `sp_process_stripe_recharge`, and
//! its refunds): what is checked, in which order, and what is written.
//!
//! 1. An unpaid session or an event of another type: nothing written (`ignored`).
//! 2. An event id already recorded: nothing written (`duplicate_event`).
//! 3. A refused session or refund (another currency, no card, a bad amount): recorded for an
//!    operator (`stripe_events` with its reason, the audit log), no money moved (`refused`).
//! 4. A paid session already credited (another event for it): recorded
//!    (`duplicate_session`). Otherwise credited, once per session: the card (created if
//!    unknown; limits flag, never refuse), `stripe_recharges`, postings `card:<UID>` +amount
//!    and `stripe_clearing` −amount, the event, the audit log; then the refunds of its payment
//!    intent that arrived first, in the same transaction. A payment intent already credited
//!    through another session is credited without the link refunds use.
//! 5. A refund: of the session credited through its payment intent, what its cumulative
//!    `amount_refunded` adds to what was already reversed (`refunded`, or
//!    `refund_nothing_new`); a refund whose credit has not arrived waits (`refund_waiting`).

use super::{CardWrite, FlowError, Reads, STRIPE_CLEARING, card_account, new_transaction_id};
use crate::domain::{CardUid, Cents};
use crate::ledger::outcome::StripeOutcome;
use crate::ledger::rules::{self, CardState, Limits};
use crate::ledger::stripe::{PaidSession, RefundedCharge, StripeEvent, refund_delta};
use crate::protocol::api::Flag;
use serde_json::json;
use uuid::Uuid;

/// A credited checkout session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credited {
    /// The checkout session.
    pub session_id: String,
    /// Its card.
    pub card_uid: CardUid,
    /// What was credited.
    pub amount: Cents,
    /// What its refunds reversed so far.
    pub refunded: Cents,
    /// The credit's transaction.
    pub transaction_id: Uuid,
}

/// What the Stripe flow reads, besides cards.
pub trait StripeReads: Reads {
    /// True when this event id was recorded before.
    fn event_seen(&self, event_id: &str) -> Result<bool, Self::Error>;
    /// The credit of a checkout session, if credited.
    fn credit_of_session(&self, session_id: &str) -> Result<Option<Credited>, Self::Error>;
    /// The credit made through a payment intent, if any.
    fn credit_of_payment_intent(&self, pi: &str) -> Result<Option<Credited>, Self::Error>;
    /// The refunds of a payment intent that wait for its credit: event id and cumulative
    /// `amount_refunded`, smallest first.
    fn waiting_refunds(&self, pi: &str) -> Result<Vec<(String, Cents)>, Self::Error>;
}

/// One row of `stripe_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// `evt_...`.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// What was done.
    pub outcome: &'static str,
    /// The checkout session, when known.
    pub session_id: Option<String>,
    /// The payment intent, when known.
    pub payment_intent: Option<String>,
    /// The money the event names (a credit, or a cumulative refund).
    pub amount: Option<Cents>,
    /// The transaction it made.
    pub transaction_id: Option<Uuid>,
    /// Why it was refused.
    pub reason: Option<String>,
}

/// One write of a Stripe plan, carried out in order.
#[derive(Debug, Clone, PartialEq)]
pub enum StripeWrite {
    /// A card's new state.
    Card(CardWrite),
    /// A `stripe_recharges` row.
    Credit {
        /// The transaction.
        transaction_id: Uuid,
        /// The session.
        session_id: String,
        /// The payment intent linked for refunds, if any.
        payment_intent: Option<String>,
        /// The event.
        event_id: String,
        /// The card.
        card_uid: CardUid,
        /// The amount.
        amount: Cents,
        /// Remarks.
        flags: Vec<Flag>,
        /// Balance before.
        previous: Cents,
        /// Balance after.
        next: Cents,
    },
    /// A `stripe_refunds` row, and the credit's `refunded_cents` raised by `delta`.
    Refund {
        /// The transaction.
        transaction_id: Uuid,
        /// The refund's event.
        event_id: String,
        /// The credited session.
        session_id: String,
        /// The card.
        card_uid: CardUid,
        /// Taken back from the card.
        delta: Cents,
        /// Balance before.
        previous: Cents,
        /// Balance after.
        next: Cents,
    },
    /// Postings of a transaction, summing to zero.
    Postings(Uuid, Vec<(String, Cents)>),
    /// A `stripe_events` row.
    Event(EventRecord),
    /// A waiting refund applied with its credit (`refund_applied_late`).
    AppliedLate {
        /// The refund's event.
        event_id: String,
        /// The session it was applied to.
        session_id: String,
    },
    /// The audit log's row (actor `stripe`).
    Audit {
        /// `stripe_recharge` or `stripe_refund`.
        operation: &'static str,
        /// The event.
        event_id: String,
        /// The transaction.
        transaction_id: Option<Uuid>,
        /// The card.
        card_uid: Option<CardUid>,
        /// Money.
        amount: Option<Cents>,
        /// `approved` or `refused`.
        outcome: &'static str,
        /// More.
        details: serde_json::Value,
    },
}

/// What to write for an event (in order), and the answer once it is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct StripePlan {
    /// The writes; none for an ignored or duplicate event.
    pub writes: Vec<StripeWrite>,
    /// What was done.
    pub outcome: StripeOutcome,
}

fn neg(c: Cents) -> Result<Cents, FlowError> {
    c.checked_neg().map_err(FlowError::new)
}

/// Decides a verified Stripe event (see the module's order).
pub fn decide<R: StripeReads>(
    reads: &R,
    event: &StripeEvent,
    limits: Limits,
) -> Result<StripePlan, R::Error> {
    let nothing = |outcome| StripePlan {
        writes: Vec::new(),
        outcome,
    };
    let event_id = match event {
        StripeEvent::SessionPaid(s) => &s.event_id,
        StripeEvent::ChargeRefunded(r) => &r.event_id,
        StripeEvent::Refused { event_id, .. } => event_id,
        // Nothing to do and nothing to remember.
        StripeEvent::Unpaid { event_id } | StripeEvent::Ignored { event_id, .. } => {
            return Ok(nothing(StripeOutcome::nothing(event_id, "ignored")));
        }
    };
    if reads.event_seen(event_id)? {
        return Ok(nothing(StripeOutcome::nothing(event_id, "duplicate_event")));
    }
    match event {
        StripeEvent::SessionPaid(s) => credit(reads, s, limits),
        StripeEvent::ChargeRefunded(r) => refund(reads, r),
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
                (None, Some(pi)) => reads.credit_of_payment_intent(pi)?.map(|c| c.session_id),
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
            let details = json!({ "checkout_session_id": session_id,
                "payment_intent": payment_intent, "reason": reason });
            Ok(StripePlan {
                writes: vec![
                    StripeWrite::Event(EventRecord {
                        event_id: event_id.clone(),
                        event_type: event_type.clone(),
                        outcome: "refused",
                        session_id,
                        // Not `refund_waiting`: a credit that arrives later never applies it.
                        payment_intent: payment_intent.clone(),
                        amount: None,
                        transaction_id: None,
                        reason: Some(reason.clone()),
                    }),
                    StripeWrite::Audit {
                        operation: if is_refund {
                            "stripe_refund"
                        } else {
                            "stripe_recharge"
                        },
                        event_id: event_id.clone(),
                        transaction_id: None,
                        card_uid: None,
                        amount: None,
                        outcome: "refused",
                        details,
                    },
                ],
                outcome: StripeOutcome::nothing(event_id, "refused"),
            })
        }
        StripeEvent::Unpaid { .. } | StripeEvent::Ignored { .. } => {
            Err(FlowError::new("unreachable").into())
        }
    }
}

fn credit<R: StripeReads>(
    reads: &R,
    s: &PaidSession,
    limits: Limits,
) -> Result<StripePlan, R::Error> {
    let event = |outcome, transaction_id| {
        StripeWrite::Event(EventRecord {
            event_id: s.event_id.clone(),
            event_type: s.event_type.clone(),
            outcome,
            session_id: Some(s.session_id.clone()),
            payment_intent: s.payment_intent.clone(),
            amount: Some(s.amount),
            transaction_id,
            reason: None,
        })
    };
    if let Some(done) = reads.credit_of_session(&s.session_id)? {
        // Another event for a session already credited (completed, then async succeeded).
        return Ok(StripePlan {
            writes: vec![event("duplicate_session", Some(done.transaction_id))],
            outcome: StripeOutcome {
                card_uid: Some(s.card_uid.clone()),
                ..StripeOutcome::nothing(&s.event_id, "duplicate_session")
            },
        });
    }
    // A payment intent belongs to one session; should another session name it too, the
    // credit still happens (the attendee paid), without the link refunds use.
    let mut payment_intent = s.payment_intent.clone();
    if let Some(pi) = &s.payment_intent
        && let Some(other) = reads.credit_of_payment_intent(pi)?
    {
        tracing::warn!(event_id = %s.event_id, session = %s.session_id, payment_intent = pi,
            other_session = %other.session_id,
            "a payment intent already credited through another session: credited without it");
        payment_intent = None;
    }
    let card = reads.card(&s.card_uid)?;
    let change = rules::decide_stripe_credit(card, s.amount, limits)
        .map_err(|e| FlowError::new(format!("a Stripe credit: {}", e.message)))?;
    let transaction_id = new_transaction_id();
    let mut writes = vec![
        StripeWrite::Card(CardWrite {
            uid: s.card_uid.clone(),
            create: change.create_card,
            next: change.next,
        }),
        StripeWrite::Credit {
            transaction_id,
            session_id: s.session_id.clone(),
            payment_intent: payment_intent.clone(),
            event_id: s.event_id.clone(),
            card_uid: s.card_uid.clone(),
            amount: s.amount,
            flags: change.flags.clone(),
            previous: change.previous.balance,
            next: change.next.balance,
        },
        StripeWrite::Postings(
            transaction_id,
            vec![
                (card_account(&s.card_uid), s.amount),
                (STRIPE_CLEARING.to_owned(), neg(s.amount)?),
            ],
        ),
        event("credited", Some(transaction_id)),
        StripeWrite::Audit {
            operation: "stripe_recharge",
            event_id: s.event_id.clone(),
            transaction_id: Some(transaction_id),
            card_uid: Some(s.card_uid.clone()),
            amount: Some(s.amount),
            outcome: "approved",
            details: json!({ "checkout_session_id": s.session_id,
                "payment_intent": s.payment_intent, "flags": change.flags }),
        },
    ];
    // Refunds of this payment that arrived before it: applied now, in the same transaction,
    // against the credit just made.
    let mut credited = Credited {
        session_id: s.session_id.clone(),
        card_uid: s.card_uid.clone(),
        amount: s.amount,
        refunded: Cents::ZERO,
        transaction_id,
    };
    let mut card = change.next;
    if let Some(pi) = &payment_intent {
        for (event_id, amount_refunded) in reads.waiting_refunds(pi)? {
            if let Some(r) = reverse(&credited, card, &event_id, amount_refunded)? {
                card = r.card;
                credited.refunded = credited
                    .refunded
                    .checked_add(r.delta)
                    .map_err(FlowError::new)?;
                writes.extend(r.writes);
            }
            writes.push(StripeWrite::AppliedLate {
                event_id,
                session_id: s.session_id.clone(),
            });
        }
    }
    Ok(StripePlan {
        writes,
        outcome: StripeOutcome {
            card_uid: Some(s.card_uid.clone()),
            amount_cents: Some(s.amount),
            balance_cents: Some(card.balance),
            ..StripeOutcome::nothing(&s.event_id, "credited")
        },
    })
}

/// What a refund reverses.
struct Reversal {
    delta: Cents,
    card: CardState,
    transaction_id: Uuid,
    writes: Vec<StripeWrite>,
}

/// Reverses what `amount_refunded` (cumulative) adds to the credit's refunds so far, or
/// `None` when there is nothing new.
fn reverse(
    credited: &Credited,
    card: CardState,
    event_id: &str,
    amount_refunded: Cents,
) -> Result<Option<Reversal>, FlowError> {
    let delta = refund_delta(credited.amount, credited.refunded, amount_refunded);
    if delta.get() == 0 {
        return Ok(None);
    }
    let change = rules::decide_reversal(card, neg(delta)?, 0)
        .map_err(|e| FlowError::new(format!("a Stripe refund: {}", e.message)))?;
    let transaction_id = new_transaction_id();
    let uid = &credited.card_uid;
    if change.next.balance.is_negative() {
        tracing::warn!(card = %uid, balance = %change.next.balance,
            "a Stripe refund took a card below zero: it is blocked for debt");
    }
    Ok(Some(Reversal {
        delta,
        card: change.next,
        transaction_id,
        writes: vec![
            StripeWrite::Card(CardWrite {
                uid: uid.clone(),
                create: false,
                next: change.next,
            }),
            StripeWrite::Refund {
                transaction_id,
                event_id: event_id.to_owned(),
                session_id: credited.session_id.clone(),
                card_uid: uid.clone(),
                delta,
                previous: change.previous.balance,
                next: change.next.balance,
            },
            StripeWrite::Postings(
                transaction_id,
                vec![
                    (card_account(uid), neg(delta)?),
                    (STRIPE_CLEARING.to_owned(), delta),
                ],
            ),
            StripeWrite::Audit {
                operation: "stripe_refund",
                event_id: event_id.to_owned(),
                transaction_id: Some(transaction_id),
                card_uid: Some(uid.clone()),
                amount: Some(delta),
                outcome: "approved",
                details: json!({ "checkout_session_id": credited.session_id,
                    "flags": change.flags }),
            },
        ],
    }))
}

fn refund<R: StripeReads>(reads: &R, r: &RefundedCharge) -> Result<StripePlan, R::Error> {
    let event = |outcome, session_id: Option<String>, transaction_id| {
        StripeWrite::Event(EventRecord {
            event_id: r.event_id.clone(),
            event_type: "charge.refunded".into(),
            outcome,
            session_id,
            payment_intent: r.payment_intent.clone(),
            amount: Some(r.amount_refunded),
            transaction_id,
            reason: None,
        })
    };
    let credited = match &r.payment_intent {
        Some(pi) => reads.credit_of_payment_intent(pi)?,
        None => None,
    };
    let Some(credited) = credited else {
        // A refund of a payment the ledger has not credited (yet): Stripe does not promise
        // order, so it waits for its session; a charge that is not a checkout of ours
        // simply waits forever and moves nothing.
        return Ok(StripePlan {
            writes: vec![event("refund_waiting", None, None)],
            outcome: StripeOutcome::nothing(&r.event_id, "refund_waiting"),
        });
    };
    let card = reads.card(&credited.card_uid)?.ok_or_else(|| {
        FlowError::new(format!(
            "card {} of a Stripe credit is missing",
            credited.card_uid
        ))
    })?;
    let reversal = reverse(&credited, card, &r.event_id, r.amount_refunded)?;
    let session = Some(credited.session_id.clone());
    let (outcome, writes, amount, balance) = match reversal {
        Some(x) => {
            let mut writes = x.writes;
            writes.push(event("refunded", session, Some(x.transaction_id)));
            ("refunded", writes, Some(x.delta), Some(x.card.balance))
        }
        None => (
            "refund_nothing_new",
            vec![event("refund_nothing_new", session, None)],
            None,
            None,
        ),
    };
    Ok(StripePlan {
        writes,
        outcome: StripeOutcome {
            card_uid: Some(credited.card_uid),
            amount_cents: amount,
            balance_cents: balance,
            ..StripeOutcome::nothing(&r.event_id, outcome)
        },
    })
}
