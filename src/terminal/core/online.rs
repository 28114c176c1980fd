//! What the ledger's answer to an online attempt means, as a pure function.
//!
//! The rule that keeps money right (docs/product.md, bar order step 5): only a definitive
//! answer decides an online attempt. Anything else (no answer in time, a connection cut,
//! a 5xx, 409 `DUPLICATE_REQUEST`, an answer that cannot be read) leaves the attempt *in
//! doubt*: the ledger may or may not have applied it. The terminal never guesses; it voids
//! the attempt by its `client_request_id` and, if it sells offline, does so as a new
//! operation.

use crate::domain::Cents;
use crate::protocol::codes::ErrorCode;

/// How an online attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnlineOutcome {
    /// The ledger applied it; `balance` is the card's new balance.
    Approved {
        /// The card's balance after the operation, as the ledger reported it.
        balance: Option<Cents>,
    },
    /// The ledger decided against it, for good; nothing was applied.
    Declined {
        /// The ledger's error code (`INSUFFICIENT_FUNDS`, `CARD_BLOCKED`, ...).
        reason: String,
        /// A business decline the ledger stored (`true`), or a refusal of the request itself
        /// (bad request, auth, key reuse: `false`), which operators must look at.
        stored: bool,
    },
    /// No definitive answer: void the attempt, then decide offline.
    InDoubt,
}

/// The ledger's answer as far as the decision needs it: HTTP status, `error.code`, and
/// `new_balance_cents` when it approved.
pub type LedgerAnswer<'a> = (u16, Option<&'a str>, Option<Cents>);

/// Classifies an answer: `status` and `code` (`error.code`) from the ledger, `balance`
/// (`new_balance_cents`) when it approved. `None` means no answer was received at all.
pub fn classify(answer: Option<LedgerAnswer<'_>>) -> OnlineOutcome {
    let Some((status, code, balance)) = answer else {
        return OnlineOutcome::InDoubt;
    };
    match (status, code) {
        (200..=299, _) => OnlineOutcome::Approved { balance },
        (409, Some("DUPLICATE_REQUEST")) | (500..=599, _) | (408 | 429, _) => {
            OnlineOutcome::InDoubt
        }
        (400..=499, Some(code)) => OnlineOutcome::Declined {
            reason: code.to_owned(),
            stored: ErrorCode::parse(code).is_some_and(ErrorCode::is_stored_decline),
        },
        // A 4xx without the error shape, or any other status: not an answer we can trust.
        _ => OnlineOutcome::InDoubt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definitive_answers_decide() {
        let declined = |reason: &str, stored: bool| OnlineOutcome::Declined {
            reason: reason.into(),
            stored,
        };
        let cases: Vec<(Option<LedgerAnswer<'_>>, OnlineOutcome)> = vec![
            (None, OnlineOutcome::InDoubt),
            (
                Some((201, None, Some(Cents::new(550)))),
                OnlineOutcome::Approved {
                    balance: Some(Cents::new(550)),
                },
            ),
            (
                Some((402, Some("INSUFFICIENT_FUNDS"), None)),
                declined("INSUFFICIENT_FUNDS", true),
            ),
            (
                Some((404, Some("CARD_NOT_FOUND"), None)),
                declined("CARD_NOT_FOUND", true),
            ),
            (
                Some((423, Some("CARD_BLOCKED"), None)),
                declined("CARD_BLOCKED", true),
            ),
            (
                Some((422, Some("PRICE_MISMATCH"), None)),
                declined("PRICE_MISMATCH", true),
            ),
            (
                Some((422, Some("IDEMPOTENCY_KEY_REUSED"), None)),
                declined("IDEMPOTENCY_KEY_REUSED", false),
            ),
            (
                Some((400, Some("INVALID_REQUEST"), None)),
                declined("INVALID_REQUEST", false),
            ),
            (
                Some((401, Some("UNAUTHORIZED"), None)),
                declined("UNAUTHORIZED", false),
            ),
            (
                Some((403, Some("FORBIDDEN"), None)),
                declined("FORBIDDEN", false),
            ),
            (
                Some((409, Some("OPERATION_VOIDED"), None)),
                declined("OPERATION_VOIDED", false),
            ),
            (
                Some((409, Some("DUPLICATE_REQUEST"), None)),
                OnlineOutcome::InDoubt,
            ),
            (
                Some((500, Some("SERVER_ERROR"), None)),
                OnlineOutcome::InDoubt,
            ),
            (
                Some((503, Some("DATABASE_ERROR"), None)),
                OnlineOutcome::InDoubt,
            ),
            (Some((502, None, None)), OnlineOutcome::InDoubt),
            (Some((404, None, None)), OnlineOutcome::InDoubt),
            (Some((302, None, None)), OnlineOutcome::InDoubt),
        ];
        for (answer, expected) in cases {
            assert_eq!(classify(answer), expected, "{answer:?}");
        }
    }
}
