//! The offline policy: may this terminal approve a sale on its own, without the ledger?
//!
//! When the ledger cannot be asked (no network, or no answer within the online timeout), the
//! goods are served on the terminal's word, and the ledger later applies the sale whatever the
//! balance (docs/product.md, step 6). Every offline approval is therefore money the festival
//! may never collect, and this policy bounds that risk with the replica of the card feed and
//! three configured limits. It does no IO and reads no clock; the caller gives it the order
//! total, the replica's view of the card and what this terminal has charged the card since.
//!
//! # The rules, in the order they are checked
//!
//! 1. A total below one cent is declined (`INVALID_REQUEST`): the ledger refuses such an order
//!    (`total_cents` is 1 to 100,000,000), and approving a negative total offline would credit
//!    the card on the terminal's word.
//! 2. A total above the per-order maximum is declined (`OFFLINE_LIMIT`).
//! 3. A card absent from the replica (never seen in the card feed) may be charged at most the
//!    unknown-card limit in total, this order included (`UNKNOWN_CARD_OFFLINE`). The default
//!    limit is 0, which declines every unknown card. The per-card exposure limit below applies
//!    to unknown cards as well, so a configured unknown-card limit above it is capped by it
//!    (`OFFLINE_LIMIT`).
//! 4. A known card that the replica says is blocked (lost, or in debt after earlier offline
//!    sales) is declined (`CARD_BLOCKED`).
//! 5. A known card must cover the total with its replica balance minus this terminal's local
//!    charges (`INSUFFICIENT_FUNDS`).
//! 6. This terminal's local charges plus the total may not exceed the per-card exposure limit
//!    (`OFFLINE_LIMIT`): even a rich card is only trusted that far on a stale balance.
//!
//! `local_charges` is signed: what this terminal charged the card offline, net of its own
//! offline voids, since the replica's balance was taken. A sequence of sales approved by this
//! policy, each added to `local_charges`, therefore never totals more than the exposure limit
//! (nor the unknown-card limit, nor the replica balance). Other terminals' offline sales on the
//! same card are invisible here; the exposure limit is what bounds that loss per terminal.
//!
//! # In-doubt attempts (docs/product.md, steps 5 and 6)
//!
//! An online attempt whose answer never came is *in doubt*: the ledger may or may not have
//! applied it. The terminal never guesses: it journals a void of that attempt and, if this
//! policy approves, sells again as a new operation with a new `client_request_id`. The sale is
//! then charged exactly once, by the new operation. So the in-doubt attempt must not count in
//! `local_charges` (its void cancels it) and the new operation counts its total like any other
//! offline sale. If the ledger did apply the in-doubt attempt and the card feed shows the lower
//! balance before the void lands, the policy only sees less money: it errs toward declining.
//!
//! # Arithmetic
//!
//! All money arithmetic is checked. An input whose arithmetic overflows `i64` cents is
//! declined under the rule whose computation failed; it never panics and never wraps.
//!
//! Top-ups are not decided here: an offline top-up is always accepted by the policy (the money
//! was received at the checkpoint); the per-top-up and maximum-balance limits are the caller's.

use crate::domain::{AgeFlag, Cents};
use crate::protocol::codes::ErrorCode;

/// The configured bounds on what a terminal approves without the ledger; they cap the money
/// the festival can lose to offline sales that later turn out to be unfunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineLimits {
    /// The largest single offline sale, so one tap cannot lose much.
    pub max_order: Cents,
    /// The most this terminal charges one card offline since the card's last known balance,
    /// because that balance may be stale (other terminals sell on the same card).
    pub max_card_exposure: Cents,
    /// The most this terminal charges a card absent from the replica, whose balance it cannot
    /// know; 0 (the default) declines unknown cards.
    pub unknown_card: Cents,
}

/// The replica's view of a card: the last balance the ledger reported through the card feed,
/// and whether it is blocked, so offline sales respect what the ledger last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCard {
    /// The balance in the last card-feed row for this card; excludes this terminal's charges
    /// the ledger has not seen yet (those come as `local_charges`).
    pub balance: Cents,
    /// True when the ledger blocked the card (lost, or in debt); offline sales must stop.
    pub blocked: bool,
    /// What staff saw on the holder's ID, as the ledger last said.
    pub age_flag: Option<AgeFlag>,
    /// The card's voucher units as the ledger last said (this terminal's use since then
    /// comes as `local_vouchers`).
    pub vouchers: i64,
}

/// Why the policy declined an offline sale; the screen and the journal need the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineDecline {
    /// The total is below one cent: the ledger would refuse the order, and a negative total
    /// would credit the card on the terminal's word.
    InvalidTotal,
    /// The total is above the per-order offline maximum.
    OrderOverLimit,
    /// The replica says the card is blocked.
    CardBlocked,
    /// The replica balance minus this terminal's local charges does not cover the total.
    InsufficientFunds,
    /// This terminal's offline charges on the card would exceed the exposure limit.
    ExposureOverLimit,
    /// The card is absent from the replica and the unknown-card limit does not cover the sale.
    UnknownCard,
}

impl OfflineDecline {
    /// The decline reason as the journal and the `decision` event spell it
    /// (docs/interfaces.md), so front ends show the same words online and offline.
    pub fn reason(&self) -> &'static str {
        self.code().as_str()
    }

    /// The decline's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            OfflineDecline::InvalidTotal => ErrorCode::InvalidRequest,
            OfflineDecline::OrderOverLimit | OfflineDecline::ExposureOverLimit => {
                ErrorCode::OfflineLimit
            }
            OfflineDecline::CardBlocked => ErrorCode::CardBlocked,
            OfflineDecline::InsufficientFunds => ErrorCode::InsufficientFunds,
            OfflineDecline::UnknownCard => ErrorCode::UnknownCardOffline,
        }
    }
}

/// The smallest total the ledger accepts for an order; anything below is declined offline too.
pub const ORDER_TOTAL_MIN: Cents = Cents::new(1);

/// Decides an offline sale of `total` on a card, given the replica's view of it (`None`: not
/// in the replica) and what this terminal charged it since that view (`local_charges`, signed,
/// net of this terminal's own offline voids). Pure, so every boundary is a unit test; the rules
/// and their order are in the module documentation.
pub fn decide_offline_order(
    total: Cents,
    card: Option<ReplicaCard>,
    local_charges: Cents,
    limits: &OfflineLimits,
) -> Result<(), OfflineDecline> {
    if total < ORDER_TOTAL_MIN {
        return Err(OfflineDecline::InvalidTotal);
    }
    if total > limits.max_order {
        return Err(OfflineDecline::OrderOverLimit);
    }
    // What this terminal will have charged the card offline, this sale included. An overflow
    // means an amount beyond any limit: declined under the rule being checked.
    let exposure = local_charges.checked_add(total);
    let exposure_within = |limit: Cents| matches!(exposure, Ok(e) if e <= limit);
    match card {
        None => {
            if !exposure_within(limits.unknown_card) {
                return Err(OfflineDecline::UnknownCard);
            }
        }
        Some(card) => {
            if card.blocked {
                return Err(OfflineDecline::CardBlocked);
            }
            let available = card.balance.checked_sub(local_charges);
            if !matches!(available, Ok(a) if a >= total) {
                return Err(OfflineDecline::InsufficientFunds);
            }
        }
    }
    if !exposure_within(limits.max_card_exposure) {
        return Err(OfflineDecline::ExposureOverLimit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: i64 = i64::MAX;
    const MIN: i64 = i64::MIN;

    /// The defaults of `config/terminal.example.toml`: 50.00 per order, 100.00 exposure,
    /// unknown cards declined.
    fn defaults() -> OfflineLimits {
        limits(5000, 10_000, 0)
    }

    fn limits(max_order: i64, max_card_exposure: i64, unknown_card: i64) -> OfflineLimits {
        OfflineLimits {
            max_order: Cents::new(max_order),
            max_card_exposure: Cents::new(max_card_exposure),
            unknown_card: Cents::new(unknown_card),
        }
    }

    fn known(balance: i64) -> Option<ReplicaCard> {
        Some(ReplicaCard {
            balance: Cents::new(balance),
            blocked: false,
            age_flag: None,
            vouchers: 0,
        })
    }

    fn blocked(balance: i64) -> Option<ReplicaCard> {
        Some(ReplicaCard {
            balance: Cents::new(balance),
            blocked: true,
            age_flag: None,
            vouchers: 0,
        })
    }

    use OfflineDecline::*;

    /// One row: (what the row shows, total, card, local charges, limits, expected).
    type Row = (
        &'static str,
        i64,
        Option<ReplicaCard>,
        i64,
        OfflineLimits,
        Result<(), OfflineDecline>,
    );

    fn check(rows: &[Row]) {
        for (name, total, card, local, lim, expected) in rows {
            let got = decide_offline_order(Cents::new(*total), *card, Cents::new(*local), lim);
            assert_eq!(
                got, *expected,
                "{name}: total {total}, card {card:?}, local {local}, {lim:?}"
            );
        }
    }

    // The tables below are laid out one row a line, so rustfmt is told to leave them be.

    #[test]
    #[rustfmt::skip]
    fn order_total_bounds() {
        let d = defaults();
        check(&[
            ("zero total", 0, known(1000), 0, d, Err(InvalidTotal)),
            ("negative total", -1, known(1000), 0, d, Err(InvalidTotal)),
            ("i64::MIN total", MIN, known(1000), 0, d, Err(InvalidTotal)),
            ("one cent", 1, known(1000), 0, d, Ok(())),
            ("exactly max_order", 5000, known(5000), 0, d, Ok(())),
            ("one cent over max_order", 5001, known(100_000), 0, d, Err(OrderOverLimit)),
            ("i64::MAX total", MAX, known(MAX), 0, d, Err(OrderOverLimit)),
            // The per-order limit is checked before anything about the card.
            ("over max_order, blocked", 5001, blocked(0), 0, d, Err(OrderOverLimit)),
            ("over max_order, unknown", 5001, None, 0, d, Err(OrderOverLimit)),
            ("invalid before blocked", 0, blocked(0), 0, d, Err(InvalidTotal)),
            ("max_order 0 declines all", 1, known(1000), 0, limits(0, 10_000, 0), Err(OrderOverLimit)),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn unknown_cards() {
        check(&[
            ("limit 0 declines one cent", 1, None, 0, defaults(), Err(UnknownCard)),
            ("limit 0, net local credit leaves room", 1, None, -500, defaults(), Ok(())),
            ("exactly the unknown limit", 2000, None, 0, limits(5000, 10_000, 2000), Ok(())),
            ("one cent over the unknown limit", 2001, None, 0, limits(5000, 10_000, 2000), Err(UnknownCard)),
            ("local charges count", 1000, None, 1000, limits(5000, 10_000, 2000), Ok(())),
            ("local charges push over", 1001, None, 1000, limits(5000, 10_000, 2000), Err(UnknownCard)),
            ("unknown limit above exposure: exposure caps", 4000, None, 7000, limits(5000, 10_000, 20_000), Err(ExposureOverLimit)),
            ("unknown limit above exposure: exactly exposure", 3000, None, 7000, limits(5000, 10_000, 20_000), Ok(())),
            ("overflow of local + total", 1, None, MAX, limits(5000, MAX, MAX), Err(UnknownCard)),
            ("near MAX without overflow", 1, None, MAX - 1, limits(5000, MAX, MAX), Ok(())),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn known_cards() {
        let d = defaults();
        check(&[
            ("blocked card", 100, blocked(10_000), 0, d, Err(CardBlocked)),
            ("blocked before funds", 100, blocked(-500), 0, d, Err(CardBlocked)),
            ("blocked with limit room", 1, blocked(MAX), 0, d, Err(CardBlocked)),
            ("balance exactly the total", 450, known(450), 0, d, Ok(())),
            ("balance one cent short", 451, known(450), 0, d, Err(InsufficientFunds)),
            ("zero balance", 1, known(0), 0, d, Err(InsufficientFunds)),
            ("negative balance", 1, known(-100), 0, d, Err(InsufficientFunds)),
            ("local charges leave exactly the total", 500, known(2000), 1500, d, Ok(())),
            ("local charges make it insufficient", 501, known(2000), 1500, d, Err(InsufficientFunds)),
            ("local credit (own offline void) adds funds", 600, known(100), -500, d, Ok(())),
            ("exposure exactly at the limit", 4000, known(50_000), 6000, d, Ok(())),
            ("exposure one cent over", 4001, known(50_000), 6000, d, Err(ExposureOverLimit)),
            ("funds checked before exposure", 4001, known(10_000), 6000, d, Err(InsufficientFunds)),
            ("exposure 0 declines every known card", 1, known(1000), 0, limits(5000, 0, 0), Err(ExposureOverLimit)),
            ("unknown-card limit does not apply to known cards", 100, known(1000), 0, d, Ok(())),
            // Overflow: declined under the rule whose arithmetic failed, never a panic.
            ("balance - local overflows up", 1, known(MAX), -1, limits(MAX, MAX, 0), Err(InsufficientFunds)),
            ("balance - local overflows down", 1, known(MIN), 1, limits(MAX, MAX, 0), Err(InsufficientFunds)),
            // On a known card, local + total can only overflow once the funds rule failed
            // (the balance would have to exceed i64::MAX).
            ("local + total overflows", 3, known(MAX), MAX - 2, limits(MAX, MAX, 0), Err(InsufficientFunds)),
            ("very negative local charges", 2, known(-2), MIN + 1, limits(MAX, MAX, 0), Ok(())),
            ("local + total exactly i64::MAX", 2, known(MAX), MAX - 2, limits(MAX, MAX, 0), Ok(())),
            ("near-MAX exposure one cent over", 2, known(MAX), MAX - 2, limits(MAX, MAX - 1, 0), Err(ExposureOverLimit)),
        ]);
    }

    #[test]
    fn reasons_are_the_interface_spellings() {
        for (decline, reason) in [
            (InvalidTotal, "INVALID_REQUEST"),
            (OrderOverLimit, "OFFLINE_LIMIT"),
            (ExposureOverLimit, "OFFLINE_LIMIT"),
            (CardBlocked, "CARD_BLOCKED"),
            (InsufficientFunds, "INSUFFICIENT_FUNDS"),
            (UnknownCard, "UNKNOWN_CARD_OFFLINE"),
        ] {
            assert_eq!(decline.reason(), reason, "{decline:?}");
        }
    }

    /// Amounts that are mostly realistic, with the edges of `i64` mixed in.
    fn amount() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => -2_000i64..20_000,
            1 => Just(0i64),
            1 => Just(MAX),
            1 => Just(MIN),
            1 => (MAX - 20_000)..=MAX,
            1 => MIN..=(MIN + 20_000),
            1 => any::<i64>(),
        ]
    }

    fn limits_strategy() -> impl Strategy<Value = OfflineLimits> {
        (amount(), amount(), amount()).prop_map(|(o, e, u)| limits(o, e, u))
    }

    fn card_strategy() -> impl Strategy<Value = Option<ReplicaCard>> {
        prop_oneof![
            1 => Just(None),
            3 => (amount(), proptest::bool::weighted(0.2)).prop_map(|(balance, blocked)| Some(ReplicaCard {
                balance: Cents::new(balance),
                blocked,
                age_flag: None,
                vouchers: 0,
            })),
        ]
    }

    /// The rules restated in exact `i128` arithmetic: what a correct policy may approve.
    fn allowed_exactly(
        total: i64,
        card: Option<ReplicaCard>,
        local: i64,
        lim: &OfflineLimits,
    ) -> bool {
        let (t, l) = (i128::from(total), i128::from(local));
        let within_exposure = l + t <= i128::from(lim.max_card_exposure.get());
        let card_ok = match card {
            None => l + t <= i128::from(lim.unknown_card.get()),
            Some(c) => !c.blocked && i128::from(c.balance.get()) - l >= t,
        };
        total >= 1 && total <= lim.max_order.get() && within_exposure && card_ok
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Never approves past a limit, and approves everything the rules allow unless the
        /// arithmetic leaves `i64` (then it declines, by design).
        #[test]
        fn approves_exactly_within_the_rules(
            total in amount(),
            card in card_strategy(),
            local in amount(),
            lim in limits_strategy(),
        ) {
            let got = decide_offline_order(Cents::new(total), card, Cents::new(local), &lim);
            let allowed = allowed_exactly(total, card, local, &lim);
            if got.is_ok() {
                prop_assert!(allowed, "approved against the rules");
                prop_assert!(total <= lim.max_order.get());
                prop_assert!(i128::from(local) + i128::from(total) <= i128::from(lim.max_card_exposure.get()));
                if let Some(c) = card {
                    prop_assert!(i128::from(c.balance.get()) - i128::from(local) >= i128::from(total));
                }
            } else {
                let overflowed = card.is_some_and(|c| c.balance.get().checked_sub(local).is_none());
                prop_assert!(!allowed || overflowed, "declined {:?} a sale the rules allow", got);
            }
        }

        /// The same, with every input one or two cents either side of the limit it meets, so
        /// each boundary (`>` against `>=`) is exercised on every run.
        #[test]
        fn boundaries_within_two_cents(
            max_order in 0i64..6000,
            max_card_exposure in 0i64..12_000,
            unknown_card in 0i64..15_000,
            d_total in -2i64..=2,
            d_local in -2i64..=2,
            d_balance in -2i64..=2,
            card_kind in 0u8..3,
        ) {
            let lim = limits(max_order, max_card_exposure, unknown_card);
            let total = max_order + d_total;
            // The limit the charges meet: for an unknown card, the smaller of its two limits.
            let binding = if card_kind == 0 { max_card_exposure.min(unknown_card) } else { max_card_exposure };
            let local = binding - total + d_local;
            let balance = local + total + d_balance;
            let card = match card_kind {
                0 => None,
                1 => Some(ReplicaCard { balance: Cents::new(balance), blocked: false, age_flag: None, vouchers: 0 }),
                _ => Some(ReplicaCard { balance: Cents::new(balance), blocked: true, age_flag: None, vouchers: 0 }),
            };
            let got = decide_offline_order(Cents::new(total), card, Cents::new(local), &lim);
            prop_assert_eq!(got.is_ok(), allowed_exactly(total, card, local, &lim), "{:?}", got);
        }

        /// Selling again and again on one card, adding each approval to the local charges as
        /// the journal does: the approved total never passes the exposure limit, the
        /// unknown-card limit, or the replica balance.
        #[test]
        fn approved_sequence_stays_within_exposure(
            totals in proptest::collection::vec(prop_oneof![3 => 1i64..3000, 1 => amount()], 1..40),
            card in prop_oneof![
                1 => Just(None),
                3 => (0i64..30_000).prop_map(|b| Some(ReplicaCard { balance: Cents::new(b), blocked: false, age_flag: None, vouchers: 0 })),
            ],
            max_order in 0i64..6000,
            max_card_exposure in 0i64..12_000,
            unknown_card in 0i64..15_000,
        ) {
            let lim = limits(max_order, max_card_exposure, unknown_card);
            let mut local = Cents::ZERO;
            for total in totals {
                if decide_offline_order(Cents::new(total), card, local, &lim).is_ok() {
                    local = local.checked_add(Cents::new(total)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                prop_assert!(local.get() <= max_card_exposure, "exposure {} over {}", local.get(), max_card_exposure);
                match card {
                    None => prop_assert!(local.get() <= unknown_card),
                    Some(c) => prop_assert!(local <= c.balance),
                }
            }
        }
    }
}
