//! This terminal's local charges on a card: what it charged the card that the replica's
//! balance does not reflect yet, the offline policy's `local_charges` (positive = charged;
//! negative when this terminal's own top-ups and refunds outweigh its sales).
//!
//! # The rule
//!
//! The local charges are minus the sum of the effects (`amount_cents`) of the card's entries
//! that [`counts`]: entries whose decision is an approval (`approved_online` or
//! `approved_offline`), and which are either
//! - not `synced` (`pending`, `sending`, `in_doubt`, or `rejected`: a rejected sale was
//!   served but will never reach the ledger's balance, so it keeps counting; a rejected
//!   credit, a top-up or refund the ledger refused, never counts, since counting it would give
//!   the card spending room that exists nowhere), or
//! - a charge `synced` at or after the time the card's replica row is known to reflect
//!   (`reflected_as_of`), or `synced` before any pull. A synced credit (a top-up, a refund)
//!   never counts: at a tie the replica may already hold it, and counting it twice would give
//!   the card money it does not have (the model test found a card sold below zero that way);
//!   not counting it only makes the card look poorer until the next pull.
//!
//! `reflected_as_of` is the later of two times, each taken before a request was sent:
//! - the last completed card-feed pull's (its first page's request): a pull returns every
//!   card changed since the cursor, so a card it did not return has not changed since;
//! - the request of the page that last carried this card (the row's `fetched_at`): the
//!   ledger read that page after every acknowledgement before it, so the row holds them
//!   even when the rest of its pull was cut short.
//!
//! Either alone falls short: the row's fetch time alone would count a tie forever, as the row
//! is only refreshed when the card changes again; the last pull alone counts, after a pull
//! cut short, an acknowledged charge that the page it did apply already took off the card
//! (a card at 0 was shown at -50.00 that way).
//!
//! Entries without a decision (an online attempt in flight or in doubt) and declined entries
//! never count, with one exception: the void of an in-doubt *credit*. An attempt in doubt may
//! or may not have been applied by the ledger; a charge in doubt that was applied only makes
//! the replica poorer than the card will be once its void is replayed, which is safe, but a
//! credit in doubt (a top-up, a deposit return) that was applied shows up in the replica's
//! balance at the next pull, and its void takes it back only when it is replayed. So the void
//! of an in-doubt credit carries minus the credit ([`in_doubt_void_effect`]) and counts as a
//! charge, like an approved one, until the replica reflects it (the model test found a card
//! sold below zero that way: a return applied, left in doubt by a crash, pulled into the
//! replica while its void waited behind a backlog). If the ledger never applied the credit,
//! the card only looks poorer until the pull after the void is replayed.
//!
//! Ties count (`>=`): when in doubt, the rule counts a charge twice rather than not at all,
//! so it errs toward declining. This relies on the journal recording a feed pull once it is
//! complete, at the time its first page was requested, each card row with its page's request
//! time, and on a clock that does not step
//! backwards between a feed pull and a later acknowledgement.
//!
//! Pure: the journal loads the card's candidate rows ([`ChargeRow`]) and `reflected_as_of`,
//! and asks [`local_charges`].

use super::entry::{Decision, EntryState};
use crate::domain::Cents;
use chrono::{DateTime, Utc};

/// What the rule needs of one journal entry on the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeRow {
    /// Where the entry stands with the ledger.
    pub state: EntryState,
    /// What was shown, once decided.
    pub decision: Option<Decision>,
    /// Its signed effect on the card (an order `-total`, or `-money` offline when vouchers
    /// paid part of it; a top-up `+amount`; a void `+refund`
    /// or `-amount`).
    pub amount: Cents,
    /// When it became `synced` (`Some` exactly for synced entries).
    pub synced_at: Option<DateTime<Utc>>,
    /// The voucher units it used (an order: what the ledger said it took, else what the
    /// terminal said it used; 0 for anything else).
    pub vouchers: i64,
    /// A void of an attempt left in doubt (a void without a decision): its `amount` is what
    /// [`in_doubt_void_effect`] gave it.
    pub voids_in_doubt: bool,
}

/// What the void of an in-doubt attempt counts on the attempt's card, given the attempt's
/// signed effect: minus a credit (the ledger may have applied it, and the replica may show it
/// before the void is replayed), nothing for a charge (counting its refund early could spend
/// money the card does not have). `None` when it counts nothing.
pub fn in_doubt_void_effect(attempt: Cents) -> Option<Cents> {
    if attempt > Cents::ZERO {
        attempt.checked_neg().ok()
    } else {
        None
    }
}

/// Whether `row` counts in the local charges, given the time the card's replica row is
/// known to reflect (`None` before any pull). See the module's rule.
pub fn counts(row: &ChargeRow, reflected_as_of: Option<DateTime<Utc>>) -> bool {
    let charge = row.amount < Cents::ZERO;
    let approved =
        row.decision.is_some_and(Decision::is_approved) || (row.voids_in_doubt && charge);
    approved
        && match row.state {
            EntryState::Sending | EntryState::Pending | EntryState::InDoubt => true,
            EntryState::Rejected => charge,
            EntryState::Synced => charge && !reflected(row.synced_at, reflected_as_of),
        }
}

/// An entry synced strictly before `reflected_as_of` is in the replica's balance.
fn reflected(synced_at: Option<DateTime<Utc>>, reflected_as_of: Option<DateTime<Utc>>) -> bool {
    match (synced_at, reflected_as_of) {
        (Some(synced), Some(pull)) => pull > synced,
        _ => false,
    }
}

/// The voucher units this terminal used on a card that the replica does not reflect yet:
/// the vouchers of its approved entries not synced, or synced at or after `reflected_as_of`
/// (or before any), whatever their money. Vouchers given back (a void) are never counted
/// before the replica shows them: like a credit, counting them early could spend vouchers
/// twice. `None` on overflow.
pub fn local_voucher_use<'a>(
    rows: impl IntoIterator<Item = &'a ChargeRow>,
    reflected_as_of: Option<DateTime<Utc>>,
) -> Option<i64> {
    let mut used: i64 = 0;
    for row in rows {
        let approved = row.decision.is_some_and(Decision::is_approved);
        let counted = match row.state {
            EntryState::Synced => !reflected(row.synced_at, reflected_as_of),
            _ => true,
        };
        if approved && counted && row.vouchers > 0 {
            used = used.checked_add(row.vouchers)?;
        }
    }
    Some(used)
}

/// Of the local charges, what the voids of in-doubt credits count (a positive amount, or 0):
/// the card's balance is at least the replica's less the local charges, and at most that plus
/// this, as the credits may or may not have been applied. `None` on overflow.
pub fn in_doubt_voided_credits<'a>(
    rows: impl IntoIterator<Item = &'a ChargeRow>,
    reflected_as_of: Option<DateTime<Utc>>,
) -> Option<Cents> {
    let mut voided = Cents::ZERO;
    for row in rows {
        if row.voids_in_doubt && counts(row, reflected_as_of) {
            voided = voided.checked_sub(row.amount).ok()?;
        }
    }
    Some(voided)
}

/// The local charges over a card's rows: minus the sum of the effects of the rows that
/// [`counts`]. `None` when the sum overflows (amounts no journal writes).
pub fn local_charges<'a>(
    rows: impl IntoIterator<Item = &'a ChargeRow>,
    reflected_as_of: Option<DateTime<Utc>>,
) -> Option<Cents> {
    let mut effect = Cents::ZERO;
    for row in rows {
        if counts(row, reflected_as_of) {
            effect = effect.checked_add(row.amount).ok()?;
        }
    }
    effect.checked_neg().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{ApprovedOffline as Off, ApprovedOnline as On, Declined};
    use EntryState::{InDoubt, Pending, Rejected, Sending, Synced};

    /// A time, in seconds.
    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("a valid time")
    }

    /// A row not synced.
    fn row(state: EntryState, decision: Option<Decision>, amount: i64) -> ChargeRow {
        ChargeRow {
            state,
            decision,
            amount: Cents::new(amount),
            synced_at: None,
            vouchers: 0,
            voids_in_doubt: false,
        }
    }

    /// A row synced at `at` seconds.
    fn synced(decision: Decision, amount: i64, at: i64) -> ChargeRow {
        ChargeRow {
            state: Synced,
            decision: Some(decision),
            amount: Cents::new(amount),
            synced_at: Some(t(at)),
            vouchers: 0,
            voids_in_doubt: false,
        }
    }

    /// The void of an in-doubt attempt whose effect was `attempt`, in `state`, synced at
    /// `at` seconds when synced.
    fn in_doubt_void(attempt: i64, state: EntryState, at: Option<i64>) -> ChargeRow {
        ChargeRow {
            state,
            decision: None,
            amount: in_doubt_void_effect(Cents::new(attempt)).unwrap_or(Cents::ZERO),
            synced_at: at.map(t),
            vouchers: 0,
            voids_in_doubt: true,
        }
    }

    /// (what the case shows, the card's rows, the last pull in seconds, expected charges)
    type Case = (&'static str, Vec<ChargeRow>, Option<i64>, i64);

    #[test]
    fn what_the_replica_does_not_reflect() {
        let cases: Vec<Case> = vec![
            ("nothing journaled", vec![], None, 0),
            (
                "an offline sale waiting for replay",
                vec![row(Pending, Some(Off), -500)],
                Some(10),
                500,
            ),
            (
                "an online approval being recorded",
                vec![row(Sending, Some(On), -500)],
                Some(10),
                500,
            ),
            (
                "an approved sale whose replay is in doubt",
                vec![row(InDoubt, Some(Off), -500)],
                Some(10),
                500,
            ),
            (
                "an offline top-up gives room before it is synced",
                vec![row(Pending, Some(Off), 1000)],
                None,
                -1000,
            ),
            (
                "two sales and an offline top-up",
                vec![
                    row(Pending, Some(Off), -500),
                    row(Pending, Some(Off), -300),
                    row(Pending, Some(Off), 1000),
                ],
                None,
                -200,
            ),
            (
                "an online attempt being sent: no decision yet",
                vec![row(Sending, None, -500)],
                None,
                0,
            ),
            (
                "an in-doubt attempt (no decision) and its void (amount 0)",
                vec![row(InDoubt, None, -500), row(Pending, Some(Off), 0)],
                None,
                0,
            ),
            (
                "the void of an in-doubt sale counts nothing (its refund may not be due)",
                vec![row(InDoubt, None, -500), in_doubt_void(-500, Pending, None)],
                Some(10),
                0,
            ),
            (
                "the void of an in-doubt return counts as a charge until replayed",
                vec![row(InDoubt, None, 300), in_doubt_void(300, Pending, None)],
                Some(10),
                300,
            ),
            (
                "... and once replayed, until a pull after it",
                vec![row(Synced, None, 300), in_doubt_void(300, Synced, Some(20))],
                Some(10),
                300,
            ),
            (
                "... which the replica then reflects",
                vec![in_doubt_void(300, Synced, Some(5))],
                Some(10),
                0,
            ),
            (
                "... and refused by the ledger, it keeps counting",
                vec![in_doubt_void(1000, Rejected, None)],
                Some(10),
                1000,
            ),
            (
                "a sale and its refund net out",
                vec![row(Pending, Some(Off), -500), row(Pending, Some(Off), 500)],
                None,
                0,
            ),
            (
                "a synced sale and its pending refund net out",
                vec![synced(On, -500, 20), row(Pending, Some(Off), 500)],
                Some(10),
                0,
            ),
            (
                "a declined sale, in any state",
                vec![
                    row(Pending, Some(Declined), -500),
                    row(Rejected, Some(Declined), -500),
                    synced(Declined, -500, 20),
                ],
                Some(10),
                0,
            ),
            (
                "a rejected sale keeps counting, even after a pull",
                vec![row(Rejected, Some(Off), -500)],
                Some(10),
                500,
            ),
            (
                "a rejected top-up gives no room",
                vec![row(Rejected, Some(Off), 1000)],
                None,
                0,
            ),
            (
                "a rejected refund gives no room",
                vec![
                    row(Rejected, Some(Off), -500),
                    row(Rejected, Some(Off), 500),
                ],
                None,
                500,
            ),
            (
                "a synced sale before any pull",
                vec![synced(Off, -500, 5)],
                None,
                500,
            ),
            (
                "a synced sale after the pull: not reflected yet",
                vec![synced(Off, -500, 20)],
                Some(10),
                500,
            ),
            (
                "a synced sale before the pull: reflected",
                vec![synced(Off, -500, 5)],
                Some(10),
                0,
            ),
            (
                "a synced sale at the pull's instant: counted (errs toward declining)",
                vec![synced(Off, -500, 10)],
                Some(10),
                500,
            ),
            (
                "an online approval counts like an offline one",
                vec![synced(On, -300, 20), row(Pending, Some(On), -200)],
                Some(10),
                500,
            ),
            (
                "a synced top-up never counts: before any pull",
                vec![synced(Off, 1000, 5)],
                None,
                0,
            ),
            (
                "a synced refund at the pull's instant is not counted twice",
                vec![synced(Off, 500, 10)],
                Some(10),
                0,
            ),
            (
                "a synced refund after the pull never gives room",
                vec![synced(Off, -500, 5), synced(Off, 500, 20)],
                Some(10),
                0,
            ),
            (
                "online approvals after a pull, then a newer pull",
                vec![
                    synced(On, -300, 2),
                    synced(On, -200, 3),
                    synced(On, -100, 5),
                ],
                Some(4),
                100,
            ),
        ];
        for (name, rows, reflected_as_of, expected) in cases {
            assert_eq!(
                local_charges(&rows, reflected_as_of.map(t)),
                Some(Cents::new(expected)),
                "{name}"
            );
        }
    }

    #[test]
    fn an_overflow_is_no_sum() {
        let rows = [
            row(Pending, Some(Off), i64::MIN),
            row(Pending, Some(Off), -1),
        ];
        assert_eq!(local_charges(&rows, None), None);
        // Nor may the sum be negated past the range.
        let rows = [row(Pending, Some(Off), i64::MIN)];
        assert_eq!(local_charges(&rows, None), None);
        // Rows that do not count are not added.
        let rows = [
            row(Pending, Some(Off), -1),
            row(Pending, Some(Declined), i64::MIN),
        ];
        assert_eq!(local_charges(&rows, None), Some(Cents::new(1)));
    }
}
