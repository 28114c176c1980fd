//! Typed outcomes of the ledger's operations, and their stored form.
//!
//! A store answers an operation (order, top-up, void, shift close-out) with an [`Outcome`]:
//! approved with its typed answer ([`Approval`], [`VoidOutcome`], [`ShiftRecorded`]), or
//! declined with its code, message and details ([`Declined`]), and whether it is a stored
//! answer returned again (`replayed`). No HTTP status and no JSON bytes: `ledger::api` makes
//! those from the outcome (the status from [`ErrorCode::http_status`], the body from the
//! outcome's serde encoding).
//!
//! The idempotency record keeps the typed outcome in its stored form ([`StoredAnswer`]:
//! `status_code` and `response_body` of `idempotency_keys`), which is the outcome's own
//! serde encoding and its status, exactly what the first answer sent. [`decode`] reads it back
//! (rows written by earlier versions included: they have the same form), and encoding the
//! decoded outcome gives the stored bytes again, so a replay is byte for byte the first
//! answer whatever the backend.

use crate::domain::{CardUid, Cents, ClientRequestId};
use crate::protocol::api::{ApiError, Approval, CardStatus, Flag, ShiftRecorded, VoidOutcome};
use crate::protocol::codes::ErrorCode;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// The answer of an applied operation or a recorded close-out.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An applied order or top-up.
    Approval(Approval),
    /// An applied void (reversal or tombstone).
    Void(VoidOutcome),
    /// A recorded shift close-out.
    Shift(ShiftRecorded),
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Approval(a) => a.serialize(s),
            Answer::Void(v) => v.serialize(s),
            Answer::Shift(r) => r.serialize(s),
        }
    }
}

/// A decline or refusal: the error, and the id of the request that first got it (a stored
/// decline keeps the request id of its first answer, and so do its replays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    /// Code, message and details.
    pub error: ApiError,
    /// The request that first got this answer.
    pub request_id: String,
}

impl Serialize for Declined {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.error.body(&self.request_id).serialize(s)
    }
}

/// What was decided: approved with its answer, or declined. Serializes as the answer's body.
#[derive(Debug, Clone)]
pub enum Decided {
    /// Applied (or recorded).
    Approved(Answer),
    /// Declined (stored with the key when its code is a business decline) or refused.
    Declined(Declined),
}

impl Serialize for Decided {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Decided::Approved(a) => a.serialize(s),
            Decided::Declined(d) => d.serialize(s),
        }
    }
}

impl Decided {
    /// The decline's code, if declined.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Decided::Approved(_) => None,
            Decided::Declined(d) => Some(d.error.code),
        }
    }
}

/// The outcome of one operation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was decided.
    pub decided: Decided,
    /// True when this is the stored outcome returned again.
    pub replayed: bool,
}

impl Outcome {
    /// A fresh approval.
    pub fn approved(answer: Answer) -> Outcome {
        Outcome {
            decided: Decided::Approved(answer),
            replayed: false,
        }
    }

    /// A fresh decline or refusal for request `request_id`.
    pub fn declined(error: ApiError, request_id: &str) -> Outcome {
        Outcome {
            decided: Decided::Declined(Declined {
                error,
                request_id: request_id.to_owned(),
            }),
            replayed: false,
        }
    }

    /// The decline's code, if declined.
    pub fn code(&self) -> Option<ErrorCode> {
        self.decided.code()
    }
}

/// What the ledger did with a Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StripeOutcome {
    /// The event.
    pub event_id: String,
    /// `credited`, `duplicate_event`, `duplicate_session`, `refused`, `refunded`,
    /// `refund_nothing_new`, `refund_waiting`, `ignored`.
    pub outcome: &'static str,
    /// The card concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_uid: Option<CardUid>,
    /// Money moved by this event (credited, or reversed), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<Cents>,
    /// The card's balance after it, if money moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_cents: Option<Cents>,
}

impl StripeOutcome {
    /// What was done with event `event_id`, with no card, amount or balance (the fields an
    /// event that moved money fills in).
    pub fn nothing(event_id: &str, outcome: &'static str) -> StripeOutcome {
        StripeOutcome {
            event_id: event_id.to_owned(),
            outcome,
            card_uid: None,
            amount_cents: None,
            balance_cents: None,
        }
    }
}

/// The stored form of a decided outcome: the `status_code` and `response_body` columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// 201 for an approval, the code's status for a decline.
    pub status_code: u16,
    /// The outcome's serde encoding (JSON).
    pub body: String,
}

/// A stored answer that cannot be read back (corrupted data, or a bug).
#[derive(Debug, thiserror::Error)]
#[error("stored answer: {0}")]
pub struct OutcomeError(String);

/// The stored form of `decided`.
pub fn encode(decided: &Decided) -> Result<StoredAnswer, OutcomeError> {
    let status_code = match decided {
        Decided::Approved(_) => 201,
        Decided::Declined(d) => d.error.http_status(),
    };
    let body = serde_json::to_string(decided).map_err(|e| OutcomeError(e.to_string()))?;
    Ok(StoredAnswer { status_code, body })
}

/// Reads a stored answer back; `operation` is the key's operation (`order`, `recharge`,
/// `void`, `shift`, `return`, `voucher_grant`), which says what an approval's answer is.
pub fn decode(operation: &str, stored: &StoredAnswer) -> Result<Decided, OutcomeError> {
    let bad = |e: serde_json::Error| OutcomeError(format!("{operation}: {e}"));
    if stored.status_code != 201 {
        let envelope: ErrorEnvelope = serde_json::from_str(&stored.body).map_err(bad)?;
        let e = envelope.error;
        let code = ErrorCode::parse(&e.code)
            .ok_or_else(|| OutcomeError(format!("unknown code {}", e.code)))?;
        return Ok(Decided::Declined(Declined {
            error: ApiError {
                code,
                message: e.message,
                details: e.details,
            },
            request_id: e.request_id,
        }));
    }
    let answer = match operation {
        "order" | "recharge" | "return" | "voucher_grant" => {
            let a: ApprovalForm = serde_json::from_str(&stored.body).map_err(bad)?;
            if a.status != "approved" {
                return Err(OutcomeError(format!("approval status {}", a.status)));
            }
            Answer::Approval(Approval {
                transaction_id: a.transaction_id,
                client_request_id: a.client_request_id,
                status: "approved",
                card_uid: a.card_uid,
                total_cents: a.total_cents,
                amount_cents: a.amount_cents,
                previous_balance_cents: a.previous_balance_cents,
                new_balance_cents: a.new_balance_cents,
                card_status: a.card_status,
                processed_at: a.processed_at,
                flags: a.flags,
                vouchers_used: a.vouchers_used,
                money_cents: a.money_cents,
                vouchers_granted: a.vouchers_granted,
                voucher_units: a.voucher_units,
            })
        }
        "void" => {
            let v: VoidForm = serde_json::from_str(&stored.body).map_err(bad)?;
            let status = match v.status.as_str() {
                "voided" => "voided",
                "tombstoned" => "tombstoned",
                other => return Err(OutcomeError(format!("void status {other}"))),
            };
            Answer::Void(VoidOutcome {
                transaction_id: v.transaction_id,
                client_request_id: v.client_request_id,
                status,
                target_client_request_id: v.target_client_request_id,
                card_uid: v.card_uid,
                refunded_cents: v.refunded_cents,
                previous_balance_cents: v.previous_balance_cents,
                new_balance_cents: v.new_balance_cents,
                card_status: v.card_status,
                processed_at: v.processed_at,
                flags: v.flags,
                vouchers_returned: v.vouchers_returned,
            })
        }
        "shift" => Answer::Shift(serde_json::from_str(&stored.body).map_err(bad)?),
        other => return Err(OutcomeError(format!("unknown operation {other}"))),
    };
    Ok(Decided::Approved(answer))
}

/// The stored form of an error body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorEnvelope {
    error: ErrorForm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorForm {
    code: String,
    message: String,
    request_id: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

/// The stored form of an [`Approval`] (whose `status` is a `&'static str`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalForm {
    transaction_id: Uuid,
    client_request_id: ClientRequestId,
    status: String,
    card_uid: CardUid,
    #[serde(default)]
    total_cents: Option<Cents>,
    #[serde(default)]
    amount_cents: Option<Cents>,
    previous_balance_cents: Cents,
    new_balance_cents: Cents,
    card_status: CardStatus,
    processed_at: String,
    flags: Vec<Flag>,
    // Absent from approvals stored before vouchers.
    #[serde(default)]
    vouchers_used: Option<i64>,
    #[serde(default)]
    money_cents: Option<Cents>,
    #[serde(default)]
    vouchers_granted: Option<i64>,
    #[serde(default)]
    voucher_units: Option<i64>,
}

/// The stored form of a [`VoidOutcome`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoidForm {
    transaction_id: Uuid,
    client_request_id: ClientRequestId,
    status: String,
    target_client_request_id: ClientRequestId,
    card_uid: Option<CardUid>,
    refunded_cents: Option<Cents>,
    previous_balance_cents: Option<Cents>,
    new_balance_cents: Option<Cents>,
    card_status: Option<CardStatus>,
    processed_at: String,
    flags: Vec<Flag>,
    // Absent from voids stored before voucher grants, and when no vouchers moved.
    #[serde(default)]
    vouchers_returned: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Bodies as earlier versions stored them: each decodes, and encodes to the same bytes.
    #[test]
    fn stored_answers_round_trip_byte_for_byte() {
        let crid = "0190f5a2-7c1e-7d3a-9b1e-2f3a4b5c6d7e";
        let tx = "0190f5a2-7c1e-7d3a-9b1e-2f3a4b5c6d70";
        let cases: Vec<(&str, u16, String)> = vec![
            ("order", 201, format!(r#"{{"transaction_id":"{tx}","client_request_id":"{crid}","status":"approved","card_uid":"04A1B2C3","total_cents":900,"previous_balance_cents":2000,"new_balance_cents":1100,"card_status":"active","processed_at":"2026-07-01T21:14:03.412Z","flags":[]}}"#)),
            ("recharge", 201, format!(r#"{{"transaction_id":"{tx}","client_request_id":"{crid}","status":"approved","card_uid":"04A1B2C3D4E5F6","amount_cents":500,"previous_balance_cents":-100,"new_balance_cents":400,"card_status":"active","processed_at":"2026-07-01T21:14:03.412Z","flags":["CARD_CREATED","LIMIT_EXCEEDED"]}}"#)),
            ("void", 201, format!(r#"{{"transaction_id":"{tx}","client_request_id":"{crid}","status":"tombstoned","target_client_request_id":"{crid}","card_uid":null,"refunded_cents":null,"previous_balance_cents":null,"new_balance_cents":null,"card_status":null,"processed_at":"2026-07-01T21:14:03.412Z","flags":[]}}"#)),
            ("void", 201, format!(r#"{{"transaction_id":"{tx}","client_request_id":"{crid}","status":"voided","target_client_request_id":"{crid}","card_uid":"04A1B2C3","refunded_cents":-500,"previous_balance_cents":100,"new_balance_cents":-400,"card_status":"blocked","processed_at":"2026-07-01T21:14:03.412Z","flags":["NEGATIVE_BALANCE"]}}"#)),
            ("void", 201, format!(r#"{{"transaction_id":"{tx}","client_request_id":"{crid}","status":"voided","target_client_request_id":"{crid}","card_uid":"04A1B2C3","refunded_cents":0,"previous_balance_cents":100,"new_balance_cents":100,"card_status":"active","processed_at":"2026-07-01T21:14:03.412Z","flags":[],"vouchers_returned":-4}}"#)),
            ("voucher_grant", 201, format!(r#"{{"transaction_id":"{tx}","client_request_id":"{crid}","status":"approved","card_uid":"04A1B2C3","previous_balance_cents":0,"new_balance_cents":0,"card_status":"active","processed_at":"2026-07-01T21:14:03.412Z","flags":["CARD_CREATED"],"vouchers_granted":4,"voucher_units":4}}"#)),
            ("shift", 201, format!(r#"{{"shift_id":"{tx}","client_request_id":"{crid}","terminal":"cp-1","staff_id":"s-3","cash_cents":42000,"card_cents":15000,"count":37,"counted_cash_cents":41500,"difference_cents":-500,"recorded_at":"2026-07-02T02:00:03.412Z"}}"#)),
            ("order", 402, json!({"error": {"code": "INSUFFICIENT_FUNDS", "message": "the card's balance is too low", "request_id": "req-1", "details": {"balance_cents": 300}}}).to_string()),
            ("recharge", 422, json!({"error": {"code": "LIMIT_EXCEEDED", "message": "the top-up is larger than allowed", "request_id": "r\u{e9}q \"2\"", "details": {"limit": "recharge_max_cents", "limit_cents": 50000, "amount_cents": 60000}}}).to_string()),
            ("order", 404, json!({"error": {"code": "CARD_NOT_FOUND", "message": "the ledger has never seen this card", "request_id": "x"}}).to_string()),
        ];
        for (operation, status_code, body) in cases {
            let stored = StoredAnswer { status_code, body };
            let decided = decode(operation, &stored).unwrap();
            assert_eq!(encode(&decided).unwrap(), stored, "{operation}");
        }
    }

    #[test]
    fn unreadable_answers_are_errors() {
        let cases = [
            ("order", 201, r#"{"status":"approved"}"#),
            ("bogus", 201, "{}"),
            (
                "order",
                402,
                r#"{"error":{"code":"NOPE","message":"m","request_id":"r"}}"#,
            ),
            ("order", 402, "not json"),
        ];
        for (operation, status_code, body) in cases {
            let stored = StoredAnswer {
                status_code,
                body: body.into(),
            };
            assert!(decode(operation, &stored).is_err(), "{body}");
        }
    }
}
