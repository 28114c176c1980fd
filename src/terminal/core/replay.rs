//! Replay: which journal entries go to the ledger next, when, and what its answer means.
//!
//! The sync worker sends every journal entry the ledger has not acknowledged, in
//! `terminal_seq` order, through `POST /v1/batch`, and settles each entry by its own result.
//! This module holds the decisions, without IO, clock or RNG: the caller passes `now_ms` and a
//! `jitter_permille` drawn from its own RNG, so tests pin both.
//!
//! # Settlement: what one answer means for one entry
//!
//! Every operation carries its `client_request_id`, so sending it again is always safe: the
//! ledger applies it at most once and returns the stored answer to a repeat. The only question
//! is whether the answer is *final*.
//!
//! - **Acknowledged** (the entry becomes `synced`): a 2xx (applied, or a void's tombstone
//!   written); a stored business decline, whose status and code agree as the ledger defines
//!   them (402 `INSUFFICIENT_FUNDS`, 404 `CARD_NOT_FOUND`, 423 `CARD_BLOCKED`, 422
//!   `LIMIT_EXCEEDED` / `UNKNOWN_PRODUCT` / `PRICE_MISMATCH`), because the ledger stored that
//!   outcome under the key and will answer it forever; and 409 `OPERATION_VOIDED` or
//!   `ALREADY_VOIDED`, which are final as well (see below).
//! - **Retry** (the entry stays `pending`): 5xx, 408, 429, and 409 `DUPLICATE_REQUEST` (the
//!   same key is being processed right now). None of these is stored by the ledger, so the
//!   next attempt is processed afresh. A network error without any status is also a retry; the
//!   caller decides that without calling [`settle`].
//! - **Rejected** (the entry becomes `rejected`: kept, shown in status and exports, never
//!   dropped, never sent again automatically): 400, 401, 403, 413, 422
//!   `IDEMPOTENCY_KEY_REUSED`, and anything else, including a status whose code does not match
//!   it (a 404 `NOT_FOUND` means the terminal reached a wrong URL, not that the ledger declined
//!   the sale) and an answer without a readable code where one is needed. Acknowledging an
//!   answer we do not understand could lose a sale that was served; retrying it forever would
//!   hide it. A person looks at it.
//!
//! # In-doubt attempts (docs/product.md, steps 5 and 6)
//!
//! An online attempt whose answer never came is in doubt: the ledger may or may not have
//! applied it. The terminal journals a void of it (reason `in_doubt`) *before* the new offline
//! operation that replaces the sale, so replay in `terminal_seq` order sends the void first.
//! The void settles as Acknowledged when the ledger refunded the attempt (201 `voided`),
//! recorded a tombstone because it never saw it (201 `tombstoned`), or reports 409
//! `ALREADY_VOIDED` (the attempt is voided already, so the money is back exactly once). The
//! original attempt, if its request ever arrives after the tombstone, gets 409
//! `OPERATION_VOIDED`: the ledger will never apply it, which is final, so that answer is
//! Acknowledged too. The sale itself is charged once, by the replacement operation. The one
//! case that needs a person is an in-doubt void that is Rejected: the attempt may then stay
//! applied next to its replacement, which is why Rejected entries are shown and never dropped.
//!
//! # Scheduling
//!
//! Batches are the lowest pending `terminal_seq`s, ascending, at most `batch_max`, with no
//! pending entry skipped, so the ledger sees each terminal's history in order. After a failed
//! round the worker waits an exponential, capped, fully jittered delay, so a returning network
//! is not hit by every terminal at the same instant and a long outage costs one try per cap.

use crate::protocol::api::BATCH_OPERATIONS_MAX;
use crate::protocol::codes::ErrorCode;

/// What the ledger's answer to one replayed operation means for its journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Final: the ledger applied the operation or stored a final answer under its key; the
    /// entry is `synced` and need never be sent again.
    Acknowledged,
    /// Not final and not stored by the ledger: the entry stays pending and is sent again later.
    Retry,
    /// Refused for good, or an answer we do not understand: the entry is kept as `rejected`
    /// with the answer, shown in status and exports, never dropped and never resent blindly.
    Rejected,
}

/// Settles one operation by the ledger's answer: `status` is its HTTP status (from a
/// `/v1/batch` result or a single POST), `code` its `error.code` if the body had one. Total
/// over every status and code; the rules and why are in the module documentation.
///
/// It judges one operation's own answer. A status for a whole `/v1/batch` request (401 for a
/// revoked token, 413 for a batch too large, 5xx) says nothing about each operation in it; the
/// caller maps that to a retry or a smaller batch rather than settling every entry by it.
pub fn settle(status: u16, code: Option<&str>) -> Settlement {
    let code = code.and_then(ErrorCode::parse);
    match status {
        200..=299 => Settlement::Acknowledged,
        408 | 429 | 500..=599 => Settlement::Retry,
        409 => match code {
            Some(ErrorCode::DuplicateRequest) => Settlement::Retry,
            Some(ErrorCode::OperationVoided | ErrorCode::AlreadyVoided) => Settlement::Acknowledged,
            _ => Settlement::Rejected,
        },
        _ => match code {
            Some(c) if c.is_stored_decline() && c.http_status() == Some(status) => {
                Settlement::Acknowledged
            }
            _ => Settlement::Rejected,
        },
    }
}

/// Exponential backoff between failed sync rounds, so a ledger that is down or overloaded is
/// not hammered, and a long outage costs at most one attempt per `cap_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay ceiling after the first failure; doubles with each further failure.
    pub base_ms: u64,
    /// The longest delay, whatever the number of failures, so recovery is noticed in time.
    pub cap_ms: u64,
}

/// The scale of `jitter_permille`: 1000 is the whole ceiling; larger values count as 1000.
pub const JITTER_PERMILLE_MAX: u32 = 1000;

impl Backoff {
    /// Exponential backoff with full jitter: `jitter01 * min(cap, base * 2^attempt)`, where
    /// `jitter01 = jitter_permille / 1000` comes from the caller's RNG (tests pass fixed
    /// values) so terminals that failed together do not retry together. `attempt` counts from
    /// 0. Saturates instead of overflowing, so it never panics and never exceeds `cap_ms`; for
    /// a fixed jitter it never decreases as `attempt` grows.
    pub fn delay_ms(&self, attempt: u32, jitter_permille: u32) -> u64 {
        // base * 2^attempt, saturated: a shift by 64 or more is no longer a power of two in a
        // u64, and any product past u64::MAX is past every cap anyway.
        let exponential = match 1u64.checked_shl(attempt) {
            Some(factor) => self.base_ms.saturating_mul(factor),
            None if self.base_ms == 0 => 0,
            None => u64::MAX,
        };
        let ceiling = exponential.min(self.cap_ms);
        let jitter = u128::from(jitter_permille.min(JITTER_PERMILLE_MAX));
        let delay = u128::from(ceiling) * jitter / u128::from(JITTER_PERMILLE_MAX);
        // delay <= ceiling because jitter <= 1000, so the conversion cannot fail.
        u64::try_from(delay).unwrap_or(ceiling)
    }
}

/// Which pending entries go in the next batch: the lowest `terminal_seq`s, ascending, at most
/// `batch_max` (and at most the ledger's 500 per batch), skipping nothing that is pending
/// (rejected entries are not pending), so the ledger sees this terminal's history in order.
///
/// The input must be strictly ascending (the journal reads it `ORDER BY terminal_seq`). If it
/// is not, the batch stops before the first out-of-order or repeated seq rather than send a
/// seq out of order: the result is always a prefix and always strictly ascending. A
/// `batch_max` of 0 (which the configuration refuses) gives an empty batch.
pub fn next_batch(pending_seqs_sorted: &[i64], batch_max: usize) -> &[i64] {
    let max = batch_max
        .min(BATCH_OPERATIONS_MAX)
        .min(pending_seqs_sorted.len());
    let ascending = pending_seqs_sorted
        .windows(2)
        .take(max.saturating_sub(1))
        .take_while(|pair| pair[0] < pair[1])
        .count();
    let len = if max == 0 { 0 } else { ascending + 1 };
    &pending_seqs_sorted[..len]
}

/// When the sync worker should try next (milliseconds on the caller's clock), given the time
/// of the last failure `now_ms` and the number of consecutive failed rounds: right away after
/// none, else `delay_ms(consecutive_failures - 1)` later, so the first retry waits at most
/// `base_ms`. Saturates at `u64::MAX` instead of overflowing.
pub fn next_attempt_at_ms(
    now_ms: u64,
    consecutive_failures: u32,
    backoff: &Backoff,
    jitter_permille: u32,
) -> u64 {
    match consecutive_failures.checked_sub(1) {
        None => now_ms,
        Some(attempt) => now_ms.saturating_add(backoff.delay_ms(attempt, jitter_permille)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Settlement::*;
    use proptest::prelude::*;

    /// The API's codes with their statuses, as the contract (docs/ledger-api.md and the
    /// ledger's extra codes) spells them, written out independently of `ErrorCode`.
    const API_CODES: [(&str, u16); 18] = [
        ("INVALID_REQUEST", 400),
        ("UNAUTHORIZED", 401),
        ("FORBIDDEN", 403),
        ("CARD_NOT_FOUND", 404),
        ("NOT_FOUND", 404),
        ("METHOD_NOT_ALLOWED", 405),
        ("INSUFFICIENT_FUNDS", 402),
        ("CARD_BLOCKED", 423),
        ("LIMIT_EXCEEDED", 422),
        ("UNKNOWN_PRODUCT", 422),
        ("PRICE_MISMATCH", 422),
        ("IDEMPOTENCY_KEY_REUSED", 422),
        ("DUPLICATE_REQUEST", 409),
        ("ALREADY_VOIDED", 409),
        ("OPERATION_VOIDED", 409),
        ("PAYLOAD_TOO_LARGE", 413),
        ("DATABASE_ERROR", 503),
        ("SERVER_ERROR", 500),
    ];

    fn check_settle(rows: &[(u16, Option<&str>, Settlement)]) {
        for (status, code, expected) in rows {
            assert_eq!(settle(*status, *code), *expected, "{status} {code:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn settles_like_the_table() {
        check_settle(&[
            // Applied (orders, top-ups, voids) or tombstoned (voids): final.
            (200, None, Acknowledged),
            (201, None, Acknowledged),
            (201, Some("SERVER_ERROR"), Acknowledged),
            (299, None, Acknowledged),
            // Stored business declines, status and code agreeing.
            (402, Some("INSUFFICIENT_FUNDS"), Acknowledged),
            (404, Some("CARD_NOT_FOUND"), Acknowledged),
            (423, Some("CARD_BLOCKED"), Acknowledged),
            (422, Some("LIMIT_EXCEEDED"), Acknowledged),
            (422, Some("UNKNOWN_PRODUCT"), Acknowledged),
            (422, Some("PRICE_MISMATCH"), Acknowledged),
            // Voids and tombstones: final.
            (409, Some("OPERATION_VOIDED"), Acknowledged),
            (409, Some("ALREADY_VOIDED"), Acknowledged),
            // Not stored by the ledger: send again.
            (409, Some("DUPLICATE_REQUEST"), Retry),
            (500, Some("SERVER_ERROR"), Retry),
            (503, Some("DATABASE_ERROR"), Retry),
            (502, None, Retry),
            (504, None, Retry),
            (599, None, Retry),
            (500, Some("INVALID_REQUEST"), Retry),
            (408, None, Retry),
            (429, None, Retry),
            // Refused for good.
            (400, Some("INVALID_REQUEST"), Rejected),
            (401, Some("UNAUTHORIZED"), Rejected),
            (403, Some("FORBIDDEN"), Rejected),
            (413, Some("PAYLOAD_TOO_LARGE"), Rejected),
            (422, Some("IDEMPOTENCY_KEY_REUSED"), Rejected),
            (405, Some("METHOD_NOT_ALLOWED"), Rejected),
            // A status whose code does not say the ledger stored a decline is not one.
            (404, Some("NOT_FOUND"), Rejected),
            (404, None, Rejected),
            (402, None, Rejected),
            (423, None, Rejected),
            (422, None, Rejected),
            (402, Some("CARD_BLOCKED"), Rejected),
            (423, Some("INSUFFICIENT_FUNDS"), Rejected),
            (404, Some("card_not_found"), Rejected),
            (409, None, Rejected),
            (409, Some("INSUFFICIENT_FUNDS"), Rejected),
            (409, Some("something new"), Rejected),
            // Anything else.
            (100, None, Rejected),
            (199, None, Rejected),
            (301, None, Rejected),
            (304, None, Rejected),
            (410, None, Rejected),
            (418, None, Rejected),
            (451, None, Rejected),
            (0, None, Rejected),
            (600, None, Rejected),
            (u16::MAX, Some("SERVER_ERROR"), Rejected),
        ]);
    }

    #[test]
    fn codes_parse_to_the_ledgers_own_enum() {
        for (text, status) in API_CODES {
            let code = ErrorCode::parse(text);
            assert_eq!(code.map(ErrorCode::as_str), Some(text), "{text}");
            assert_eq!(
                code.and_then(ErrorCode::http_status),
                Some(status),
                "{text}"
            );
        }
        for text in [
            "",
            "insufficient_funds",
            " CARD_BLOCKED",
            "OK",
            "CARD_BLOCKED ",
        ] {
            assert_eq!(ErrorCode::parse(text), None, "{text:?}");
        }
    }

    /// The table of terminal.md, restated as a function of the wire spelling.
    fn expected_settlement(status: u16, code: Option<&str>) -> Settlement {
        let stored_decline = matches!(
            (status, code),
            (402, Some("INSUFFICIENT_FUNDS"))
                | (404, Some("CARD_NOT_FOUND"))
                | (423, Some("CARD_BLOCKED"))
                | (
                    422,
                    Some("LIMIT_EXCEEDED" | "UNKNOWN_PRODUCT" | "PRICE_MISMATCH")
                )
        );
        let final_void =
            status == 409 && matches!(code, Some("OPERATION_VOIDED" | "ALREADY_VOIDED"));
        let retryable = (500..=599).contains(&status)
            || status == 408
            || status == 429
            || (status == 409 && code == Some("DUPLICATE_REQUEST"));
        if (200..=299).contains(&status) || stored_decline || final_void {
            Acknowledged
        } else if retryable {
            Retry
        } else {
            Rejected
        }
    }

    fn code_strategy() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            4 => proptest::sample::select(API_CODES.to_vec()).prop_map(|(c, _)| Some(c.to_string())),
            1 => Just(None),
            1 => "[A-Z_a-z ]{0,24}".prop_map(Some),
        ]
    }

    /// Any status of 100..=599, with the ones the table names drawn often enough that every
    /// row is hit in a bounded number of cases.
    fn status_strategy() -> impl Strategy<Value = u16> {
        prop_oneof![
            1 => 100u16..=599,
            2 => proptest::sample::select(vec![
                200u16, 201, 400, 401, 402, 403, 404, 405, 408, 409, 413, 422, 423, 429, 500, 503,
            ]),
        ]
    }

    /// A status and a code: half the time a code with its own status (as the ledger answers),
    /// half the time any status with any code (or none, or garbage).
    fn answer_strategy() -> impl Strategy<Value = (u16, Option<String>)> {
        prop_oneof![
            (status_strategy(), code_strategy()),
            proptest::sample::select(API_CODES.to_vec())
                .prop_map(|(c, status)| (status, Some(c.to_string()))),
        ]
    }

    #[test]
    fn backoff_table() {
        let b = Backoff {
            base_ms: 500,
            cap_ms: 30_000,
        };
        for (attempt, jitter, expected) in [
            (0, 1000, 500),
            (0, 500, 250),
            (0, 0, 0),
            (1, 1000, 1000),
            (2, 1000, 2000),
            (5, 1000, 16_000),
            (6, 1000, 30_000), // 32,000 capped
            (6, 500, 15_000),
            (6, 1, 30),
            (6, 999, 29_970),
            (63, 1000, 30_000),
            (64, 1000, 30_000),
            (u32::MAX, 1000, 30_000),
            (u32::MAX, 0, 0),
            (3, 5000, 4000), // jitter above 1000 counts as 1000
            (3, u32::MAX, 4000),
        ] {
            assert_eq!(
                b.delay_ms(attempt, jitter),
                expected,
                "attempt {attempt} jitter {jitter}"
            );
        }
        for (backoff, attempt, jitter, expected) in [
            (
                Backoff {
                    base_ms: u64::MAX,
                    cap_ms: u64::MAX,
                },
                0,
                1000,
                u64::MAX,
            ),
            (
                Backoff {
                    base_ms: u64::MAX,
                    cap_ms: u64::MAX,
                },
                1,
                1000,
                u64::MAX,
            ),
            (
                Backoff {
                    base_ms: u64::MAX,
                    cap_ms: u64::MAX,
                },
                1,
                500,
                u64::MAX / 2,
            ),
            (
                Backoff {
                    base_ms: 1,
                    cap_ms: u64::MAX,
                },
                63,
                1000,
                1 << 63,
            ),
            (
                Backoff {
                    base_ms: 1,
                    cap_ms: u64::MAX,
                },
                64,
                1000,
                u64::MAX,
            ),
            (
                Backoff {
                    base_ms: 0,
                    cap_ms: u64::MAX,
                },
                64,
                1000,
                0,
            ),
            (
                Backoff {
                    base_ms: 0,
                    cap_ms: u64::MAX,
                },
                u32::MAX,
                1000,
                0,
            ),
            (
                Backoff {
                    base_ms: 3,
                    cap_ms: u64::MAX,
                },
                62,
                1000,
                3 << 62,
            ),
            (
                Backoff {
                    base_ms: 3,
                    cap_ms: u64::MAX,
                },
                63,
                1000,
                u64::MAX,
            ),
            (
                Backoff {
                    base_ms: 1000,
                    cap_ms: 10,
                },
                0,
                1000,
                10,
            ), // cap below base
            (
                Backoff {
                    base_ms: 1000,
                    cap_ms: 0,
                },
                7,
                1000,
                0,
            ),
        ] {
            assert_eq!(
                backoff.delay_ms(attempt, jitter),
                expected,
                "{backoff:?} attempt {attempt} jitter {jitter}"
            );
        }
    }

    #[test]
    fn next_attempt_table() {
        let b = Backoff {
            base_ms: 500,
            cap_ms: 30_000,
        };
        for (now, failures, jitter, expected) in [
            (10_000, 0, 1000, 10_000),
            (10_000, 0, 0, 10_000),
            (10_000, 1, 1000, 10_500),
            (10_000, 1, 0, 10_000),
            (10_000, 2, 1000, 11_000),
            (10_000, 3, 500, 11_000),
            (10_000, 100, 1000, 40_000),
            (10_000, u32::MAX, 1000, 40_000),
            (u64::MAX - 10, 1, 1000, u64::MAX),
            (u64::MAX, u32::MAX, 1000, u64::MAX),
            (0, 1, 1000, 500),
        ] {
            assert_eq!(
                next_attempt_at_ms(now, failures, &b, jitter),
                expected,
                "now {now} failures {failures} jitter {jitter}"
            );
        }
    }

    fn check_batch(rows: &[(&[i64], usize, &[i64])]) {
        for (pending, max, expected) in rows {
            assert_eq!(
                next_batch(pending, *max),
                *expected,
                "{pending:?} max {max}"
            );
        }
    }

    #[test]
    fn batch_table() {
        let thousand: Vec<i64> = (1..=1000).collect();
        check_batch(&[
            (&[], 500, &[]),
            (&[], 0, &[]),
            (&[1, 2, 3], 0, &[]),
            (&[1, 2, 3], 1, &[1]),
            (&[1, 2, 3], 2, &[1, 2]),
            (&[1, 2, 3], 3, &[1, 2, 3]),
            (&[1, 2, 3], 4, &[1, 2, 3]),
            (&[1, 2, 3], usize::MAX, &[1, 2, 3]),
            // Gaps are fine (synced or rejected entries in between); order is what matters.
            (&[4, 9, 10, 200], 3, &[4, 9, 10]),
            (&[i64::MIN, 0, i64::MAX], 10, &[i64::MIN, 0, i64::MAX]),
            // Input out of order: stop before the first seq that would go out of order.
            (&[1, 2, 5, 3, 4], 10, &[1, 2, 5]),
            (&[1, 1, 2], 10, &[1]),
            (&[3, 2, 1], 10, &[3]),
            (&[3, 2, 1], 1, &[3]),
        ]);
        // Never more than the ledger takes in one batch, whatever the configuration says.
        assert_eq!(next_batch(&thousand, 1000), &thousand[..500]);
        assert_eq!(next_batch(&thousand, 500), &thousand[..500]);
        assert_eq!(next_batch(&thousand, 499), &thousand[..499]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn settle_matches_the_table((status, code) in answer_strategy()) {
            prop_assert!((100..=599).contains(&status));
            prop_assert_eq!(settle(status, code.as_deref()), expected_settlement(status, code.as_deref()));
        }

        #[test]
        fn delay_is_capped_and_monotone(
            base_ms in prop_oneof![0u64..2000, any::<u64>()],
            cap_ms in prop_oneof![0u64..100_000, any::<u64>()],
            attempt in any::<u32>(),
            jitter in prop_oneof![0u32..=1000, any::<u32>()],
        ) {
            let b = Backoff { base_ms, cap_ms };
            let here = b.delay_ms(attempt, jitter);
            prop_assert!(here <= cap_ms);
            if let Some(next) = attempt.checked_add(1) {
                prop_assert!(b.delay_ms(next, jitter) >= here, "attempt {} -> {}", attempt, next);
            }
            // Full jitter: a larger draw never shortens the wait, and the whole draw reaches
            // the exponential ceiling when the cap does not bind.
            prop_assert!(b.delay_ms(attempt, jitter.saturating_add(1)) >= here);
            if let Some(exp) = 1u64.checked_shl(attempt).and_then(|f| base_ms.checked_mul(f)) {
                prop_assert_eq!(b.delay_ms(attempt, 1000), exp.min(cap_ms));
            }
        }

        #[test]
        fn next_attempt_never_earlier_than_now(
            now_ms in any::<u64>(),
            failures in any::<u32>(),
            base_ms in 0u64..100_000,
            cap_ms in 0u64..1_000_000,
            jitter in 0u32..=1000,
        ) {
            let b = Backoff { base_ms, cap_ms };
            let at = next_attempt_at_ms(now_ms, failures, &b, jitter);
            prop_assert!(at >= now_ms);
            prop_assert!(at - now_ms <= cap_ms);
            if failures == 0 {
                prop_assert_eq!(at, now_ms);
            }
        }

        #[test]
        fn batch_is_an_ascending_prefix(
            mut pending in proptest::collection::vec(any::<i64>(), 0..700),
            batch_max in prop_oneof![0usize..20, 0usize..1000, any::<usize>()],
            sort in any::<bool>(),
        ) {
            if sort {
                pending.sort_unstable();
                pending.dedup();
            }
            let batch = next_batch(&pending, batch_max);
            prop_assert!(batch.len() <= batch_max);
            prop_assert!(batch.len() <= BATCH_OPERATIONS_MAX);
            prop_assert_eq!(batch, &pending[..batch.len()]);
            prop_assert!(batch.windows(2).all(|w| w[0] < w[1]));
            if sort {
                // Sorted input: nothing pending is held back below the limit.
                prop_assert_eq!(batch.len(), pending.len().min(batch_max).min(BATCH_OPERATIONS_MAX));
            }
        }
    }
}
