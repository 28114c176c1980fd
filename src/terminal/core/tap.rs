//! The tap flow as a state machine: what happens, in which order, when a card pays for an
//! armed order or top-up (docs/product.md, bar order steps 2 to 5).
//!
//! The flow does no IO. It says what to do next as a [`Step`]; the adapter
//! (`terminal::tap`) performs it on the journal or the ledger and feeds the result back as an
//! [`Input`], until the flow says [`Step::Show`]. Because every effect is a step, a crash
//! between any two of them is simply a flow that was never resumed, and tests drive the
//! flow with simulated answers, losses and crashes.
//!
//! ```text
//!  ReadCard ─the card's age flag forbids a product→ RecordDecline → Show(AGE_RESTRICTED)
//!           ─online, and nothing of this card unacknowledged→ JournalAttempt
//!           └otherwise→ (offline)
//!  JournalAttempt ─ok→ Send ─approved→ RecordAnswer ─ok→ Show(approved_online)
//!                          │                        └failed→ VoidAttempt → Show(declined)
//!                          ├declined→ RecordAnswer → Show(declined, the ledger's reason)
//!                          └in doubt→ VoidAttempt ─ok→ ReadCard → (offline)
//!  (offline): vouchers pay first, policy approves the money→ JournalOffline ─ok→ Show(approved_offline)
//!             policy declines→ RecordDecline → Show(declined, the policy's reason)
//!  any journal write that fails before an approval → Show(declined, JOURNAL_UNAVAILABLE)
//! ```
//!
//! The rules it enforces:
//! - a card on which this terminal has operations the ledger has not acknowledged yet
//!   (offline sales waiting for replay, an attempt in doubt) is decided offline, even when
//!   the ledger is reachable: the ledger's balance does not include them, so it would
//!   approve money the card no longer has (found by the model test: an offline sale, then
//!   the network back, then an online sale before the replay, left the card in debt);
//! - the operation is in the journal before the ledger is asked (`JournalAttempt` first);
//! - an approval is shown only after the write that records it succeeded;
//! - an attempt without a definitive answer is voided before anything else is journaled,
//!   and an offline sale after it is a new operation;
//! - an online approval that cannot be recorded is voided (best effort; otherwise the entry
//!   stays `sending`, which the next start voids), and shown as declined.

use super::entry::{Decision, EntryState};
use super::online::{self, OnlineOutcome};
use super::policy::{OfflineDecline, OfflineLimits, ReplicaCard, decide_offline_order};
pub use crate::domain::VoucherLine;
use crate::domain::{Cents, MinAge, age_forbids, split_vouchers};
use crate::protocol::api::{CARD_VOUCHER_UNITS_MAX, ORDER_VOUCHER_UNITS_MAX};
use crate::protocol::codes::ErrorCode;

/// The reason shown when the journal cannot record a decision.
pub const JOURNAL_UNAVAILABLE: &str = ErrorCode::JournalUnavailable.as_str();
/// The reason shown when an offline top-up would take the card past the balance limit.
pub const LIMIT_EXCEEDED: &str = ErrorCode::LimitExceeded.as_str();
/// The reason shown when an offline deposit return would take this terminal's unacknowledged
/// returns past `[offline] max_return_payout_cents`.
pub const OFFLINE_LIMIT: &str = ErrorCode::OfflineLimit.as_str();
/// The reason shown when the card's age flag forbids a product of the order.
pub const AGE_RESTRICTED: &str = ErrorCode::AgeRestricted.as_str();
/// The reason shown if the flow is fed an input it did not ask for (a bug in an adapter).
pub const INTERNAL_ERROR: &str = ErrorCode::InternalError.as_str();

/// What the card pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// A sale of `total`: the card is charged.
    Order,
    /// A top-up of `total`: the card is credited.
    Topup,
    /// A deposit return of `total`: returnable items handed back, the card is credited.
    Return,
    /// A voucher grant of `units`: no money moves (`total` is 0), the card gets them.
    VoucherGrant {
        /// The units granted.
        units: i64,
    },
}

/// What the flow needs to decide offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// The offline policy's limits for orders.
    pub offline: OfflineLimits,
    /// The ledger's maximum card balance, when known: an offline top-up or deposit return
    /// that would pass it on a card whose balance the replica knows is declined.
    pub balance_max: Option<Cents>,
    /// The most deposit money this terminal hands out that the ledger has not acknowledged
    /// (`[offline] max_return_payout_cents`): a return offline is declined past it.
    pub return_payout_max: Cents,
}

/// The ledger's answer to the online attempt, as far as the flow needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `error.code` of an error answer.
    pub code: Option<String>,
    /// `new_balance_cents` of an approval, `error.details.balance_cents` of a decline.
    pub balance: Option<Cents>,
    /// `vouchers_used` of an order's approval.
    pub vouchers_used: Option<i64>,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Append the online attempt to the journal, state `sending` (durably).
    JournalAttempt,
    /// Send the attempt to the ledger; answer with [`Input::Answer`].
    Send,
    /// Record the ledger's definitive answer on the attempt.
    RecordAnswer {
        /// The attempt's new state.
        state: EntryState,
        /// Its decision.
        decision: Decision,
        /// The ledger's reason for a decline.
        reason: Option<String>,
    },
    /// Mark the attempt in doubt and journal a void of it. The terminal is offline from
    /// here until the ledger answers again.
    VoidAttempt,
    /// Read the card's replica entry, this terminal's local charges on it, and whether it
    /// has operations on it the ledger has not acknowledged; answer with [`Input::Card`].
    ReadCard,
    /// Append the offline approval to the journal as a new operation (state `pending`): an
    /// order charges `money` and says it used `vouchers` (its total less what they paid is
    /// `money`); a top-up its amount, with no vouchers.
    JournalOffline {
        /// The money charged (an order) or credited (a top-up).
        money: Cents,
        /// The voucher units an order used.
        vouchers: i64,
    },
    /// Keep a local record of an offline decline (no `terminal_seq`: the ledger never sees
    /// it).
    RecordDecline {
        /// The policy's reason.
        reason: &'static str,
    },
    /// Show the decision. The flow is over.
    Show(Verdict),
}

/// The result of performing a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The journal write (or read) succeeded.
    Done,
    /// The journal write (or read) failed.
    JournalFailed,
    /// The ledger's answer to [`Step::Send`]; `None` when none arrived (timeout, connection
    /// cut, unreadable answer), or the request may have reached the ledger.
    Answer(Option<Reply>),
    /// The answer to [`Step::ReadCard`].
    Card {
        /// The replica's view of the card; `None` if the card feed never mentioned it.
        card: Option<ReplicaCard>,
        /// This terminal's charges on the card since that view (signed, net of credits).
        local_charges: Cents,
        /// The voucher units this terminal used on the card since that view.
        local_vouchers: i64,
        /// This terminal has operations on the card that the ledger has not acknowledged
        /// (pending, being sent, or in doubt).
        unacknowledged: bool,
        /// The deposit money this terminal credited, on any card, that the ledger has not
        /// acknowledged (its returns pending, being sent or in doubt).
        unacknowledged_returns: Cents,
        /// What the voids of this terminal's in-doubt credits on the card count in
        /// `local_charges` (`charges::in_doubt_voided_credits`): the ledger may or may not
        /// have applied those credits, so the card holds at least `balance - local_charges`
        /// and at most that plus this, which is what the balance limit is checked against.
        voided_credits: Cents,
    },
}

/// How a tap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The ledger approved it, and the approval is journaled.
    ApprovedOnline,
    /// The terminal approved it alone, and the approval is journaled.
    ApprovedOffline,
    /// Declined.
    Declined,
}

impl Outcome {
    /// As the `decision` event spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::ApprovedOnline => "approved_online",
            Outcome::ApprovedOffline => "approved_offline",
            Outcome::Declined => "declined",
        }
    }
}

/// What the screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Approved or declined.
    pub outcome: Outcome,
    /// Why it was declined.
    pub reason: Option<String>,
    /// The card's balance after the operation, when known.
    pub balance: Option<Cents>,
    /// Which journaled operation the verdict is about: the online attempt or the offline
    /// operation. `None` when nothing of this tap is in the journal.
    pub operation: Option<Journaled>,
    /// The voucher units the ledger took for an order it approved (it decides them online).
    pub vouchers_used: Option<i64>,
}

/// Which of the tap's journal entries a verdict refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journaled {
    /// The online attempt.
    Attempt,
    /// The offline operation.
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the card; `online`: the ledger may be asked.
    Checking {
        online: bool,
    },
    JournalingAttempt,
    Sending,
    RecordingApproval {
        balance: Option<Cents>,
        vouchers_used: Option<i64>,
    },
    RecordingDecline {
        reason: String,
        balance: Option<Cents>,
    },
    VoidingUnrecorded,
    VoidingInDoubt,
    ReadingCard,
    JournalingOffline {
        balance: Option<Cents>,
        vouchers: i64,
    },
    RecordingOfflineDecline {
        reason: &'static str,
    },
    Over,
}

/// One tap of a card on an armed order or top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapFlow {
    movement: Movement,
    /// An order's lines, for what vouchers pay offline (empty: money only).
    voucher_lines: Vec<VoucherLine>,
    /// The strictest age an order's products require.
    min_age: Option<MinAge>,
    total: Cents,
    limits: FlowLimits,
    state: State,
}

fn declined(reason: &str, operation: Option<Journaled>) -> Step {
    Step::Show(Verdict {
        outcome: Outcome::Declined,
        reason: Some(reason.to_owned()),
        balance: None,
        operation,
        vouchers_used: None,
    })
}

impl TapFlow {
    /// Starts a tap for `total`, with the ledger reachable (`online`: it is asked first,
    /// unless the card has unacknowledged operations) or not; returns the flow and its first
    /// step, which is always [`Step::ReadCard`]. `min_age`: the strictest age the order's
    /// products require; a card whose replica entry carries an age flag that forbids it is
    /// declined before anything is journaled or sent, online and offline.
    pub fn start(
        movement: Movement,
        min_age: Option<MinAge>,
        total: Cents,
        online: bool,
        limits: FlowLimits,
    ) -> (TapFlow, Step) {
        (
            TapFlow {
                movement,
                voucher_lines: Vec::new(),
                min_age,
                total,
                limits,
                state: State::Checking { online },
            },
            Step::ReadCard,
        )
    }

    /// The order's lines as vouchers see them: offline, the card's vouchers (as the replica
    /// knows them, less this terminal's use since) pay first, lines in order, the way the
    /// ledger's `rules::voucher_split` pays them online.
    pub fn with_voucher_lines(mut self, lines: Vec<VoucherLine>) -> TapFlow {
        self.voucher_lines = lines;
        self
    }

    /// Feeds the result of the last step; returns the next one.
    pub fn advance(&mut self, input: Input) -> Step {
        let state = std::mem::replace(&mut self.state, State::Over);
        let (next, step) = self.transition(state, input);
        self.state = next;
        step
    }

    fn transition(&self, state: State, input: Input) -> (State, Step) {
        use Journaled::{Attempt, Offline};
        match (state, input) {
            // Before any money moves, online and offline: the law, not the balance.
            (State::Checking { .. } | State::ReadingCard, Input::Card { card, .. })
                if age_forbids(card.and_then(|c| c.age_flag), self.min_age) =>
            {
                (
                    State::RecordingOfflineDecline {
                        reason: AGE_RESTRICTED,
                    },
                    Step::RecordDecline {
                        reason: AGE_RESTRICTED,
                    },
                )
            }
            (
                State::Checking { online: true },
                Input::Card {
                    unacknowledged: false,
                    ..
                },
            ) => (State::JournalingAttempt, Step::JournalAttempt),
            (
                State::Checking { .. } | State::ReadingCard,
                Input::Card {
                    card,
                    local_charges,
                    local_vouchers,
                    unacknowledged_returns,
                    voided_credits,
                    ..
                },
            ) => match self.decide_offline(
                card,
                local_charges,
                local_vouchers,
                unacknowledged_returns,
                voided_credits,
            ) {
                Ok((balance, money, vouchers)) => (
                    State::JournalingOffline { balance, vouchers },
                    Step::JournalOffline { money, vouchers },
                ),
                Err(reason) => (
                    State::RecordingOfflineDecline { reason },
                    Step::RecordDecline { reason },
                ),
            },
            (State::Checking { .. } | State::ReadingCard, Input::JournalFailed) => {
                (State::Over, declined(JOURNAL_UNAVAILABLE, None))
            }
            (State::JournalingAttempt, Input::Done) => (State::Sending, Step::Send),
            (State::JournalingAttempt, Input::JournalFailed) => {
                (State::Over, declined(JOURNAL_UNAVAILABLE, None))
            }
            (State::Sending, Input::Answer(reply)) => {
                let outcome = online::classify(
                    reply
                        .as_ref()
                        .map(|r| (r.status, r.code.as_deref(), r.balance)),
                );
                let vouchers_used = reply.as_ref().and_then(|r| r.vouchers_used);
                let balance = reply.and_then(|r| r.balance);
                match outcome {
                    OnlineOutcome::Approved { .. } => (
                        State::RecordingApproval {
                            balance,
                            vouchers_used,
                        },
                        Step::RecordAnswer {
                            state: EntryState::Synced,
                            decision: Decision::ApprovedOnline,
                            reason: None,
                        },
                    ),
                    OnlineOutcome::Declined { reason, stored } => (
                        State::RecordingDecline {
                            reason: reason.clone(),
                            balance,
                        },
                        Step::RecordAnswer {
                            // A refusal of the request itself is kept for operators.
                            state: if stored {
                                EntryState::Synced
                            } else {
                                EntryState::Rejected
                            },
                            decision: Decision::Declined,
                            reason: Some(reason),
                        },
                    ),
                    OnlineOutcome::InDoubt => (State::VoidingInDoubt, Step::VoidAttempt),
                }
            }
            (
                State::RecordingApproval {
                    balance,
                    vouchers_used,
                },
                Input::Done,
            ) => (
                State::Over,
                Step::Show(Verdict {
                    outcome: Outcome::ApprovedOnline,
                    reason: None,
                    balance,
                    operation: Some(Attempt),
                    vouchers_used,
                }),
            ),
            // Charged at the ledger, but not recorded here: never shown as approved. Void it
            // now if the journal lets us; if not, the entry stays `sending` and the next
            // start voids it.
            (State::RecordingApproval { .. }, Input::JournalFailed) => {
                (State::VoidingUnrecorded, Step::VoidAttempt)
            }
            (State::VoidingUnrecorded, _) => {
                (State::Over, declined(JOURNAL_UNAVAILABLE, Some(Attempt)))
            }
            // A decline is shown even if recording it failed: nothing was charged.
            (State::RecordingDecline { reason, balance }, Input::Done | Input::JournalFailed) => (
                State::Over,
                Step::Show(Verdict {
                    outcome: Outcome::Declined,
                    reason: Some(reason),
                    balance,
                    operation: Some(Attempt),
                    vouchers_used: None,
                }),
            ),
            (State::VoidingInDoubt, Input::Done) => (State::ReadingCard, Step::ReadCard),
            (State::VoidingInDoubt, Input::JournalFailed) => {
                (State::Over, declined(JOURNAL_UNAVAILABLE, Some(Attempt)))
            }
            (State::JournalingOffline { balance, vouchers }, Input::Done) => (
                State::Over,
                Step::Show(Verdict {
                    outcome: Outcome::ApprovedOffline,
                    reason: None,
                    balance,
                    operation: Some(Offline),
                    vouchers_used: (vouchers > 0).then_some(vouchers),
                }),
            ),
            (State::JournalingOffline { .. }, Input::JournalFailed) => {
                (State::Over, declined(JOURNAL_UNAVAILABLE, None))
            }
            // The record of a decline is for the shift's books; the decline stands either way.
            (State::RecordingOfflineDecline { reason }, Input::Done | Input::JournalFailed) => {
                (State::Over, declined(reason, None))
            }
            // An input the flow did not ask for: an adapter bug. Declining is always safe.
            (_, _) => (State::Over, declined(INTERNAL_ERROR, None)),
        }
    }

    /// The offline decision; `Ok` carries the card's balance after the operation (when
    /// known), the money moved and the voucher units an order used.
    fn decide_offline(
        &self,
        card: Option<ReplicaCard>,
        local_charges: Cents,
        local_vouchers: i64,
        unacknowledged_returns: Cents,
        voided_credits: Cents,
    ) -> Result<(Option<Cents>, Cents, i64), &'static str> {
        let (signed, money, vouchers) = match self.movement {
            Movement::Order => {
                // At most what one order may say it used (the ledger refuses more).
                let available = card
                    .map_or(0, |c| c.vouchers.saturating_sub(local_vouchers))
                    .min(ORDER_VOUCHER_UNITS_MAX);
                let (vouchers, paid) = voucher_split(&self.voucher_lines, available);
                let money = self.total.checked_sub(paid).map_err(|_| LIMIT_EXCEEDED)?;
                if money == Cents::ZERO && vouchers > 0 {
                    // Vouchers pay it all: no money moves, but a blocked card buys nothing.
                    if card.is_some_and(|c| c.blocked) {
                        return Err(OfflineDecline::CardBlocked.reason());
                    }
                } else {
                    decide_offline_order(money, card, local_charges, &self.limits.offline)
                        .map_err(|d| d.reason())?;
                }
                let signed = Cents::ZERO.checked_sub(money).map_err(|_| LIMIT_EXCEEDED)?;
                (signed, money, vouchers)
            }
            // Money received at the checkpoint is recorded, unless it takes a card whose
            // balance is known past the festival's maximum.
            Movement::Topup => (self.total, self.total, 0),
            // Deposit money handed out offline is bounded per terminal: the items are in
            // staff's hands, but the ledger has not seen them, so a fraud or a mistake costs
            // at most the limit until the next sync.
            Movement::Return => {
                let handed_out = unacknowledged_returns
                    .checked_add(self.total)
                    .map_err(|_| OFFLINE_LIMIT)?;
                if handed_out > self.limits.return_payout_max {
                    return Err(OFFLINE_LIMIT);
                }
                (self.total, self.total, 0)
            }
            // A supervisor's grant moves no money: the ledger applies it as recorded. A card
            // the replica knows would pass the maximum an online grant may reach is declined,
            // as the ledger would online.
            Movement::VoucherGrant { units } => {
                if card.is_some_and(|c| c.vouchers.saturating_add(units) > CARD_VOUCHER_UNITS_MAX) {
                    return Err(LIMIT_EXCEEDED);
                }
                (Cents::ZERO, Cents::ZERO, 0)
            }
        };
        let after = card.and_then(|c| {
            c.balance
                .checked_sub(local_charges)
                .and_then(|b| b.checked_add(signed))
                .ok()
        });
        // The balance limit holds against the most the card may hold: with the credits in
        // doubt that the ledger may have applied and the replica may show.
        if matches!(self.movement, Movement::Topup | Movement::Return)
            && let (Some(after), Some(max)) = (after, self.limits.balance_max)
            && after
                .checked_add(voided_credits)
                .map_or(true, |most| most > max)
        {
            return Err(LIMIT_EXCEEDED);
        }
        Ok((after, money, vouchers))
    }
}

/// What `units` vouchers pay of `lines` (the shared rule, `domain::split_vouchers`): the
/// units used and the money they replace.
pub fn voucher_split(lines: &[VoucherLine], units: i64) -> (i64, Cents) {
    let split = split_vouchers(lines.iter().copied(), units);
    (split.units, split.paid.unwrap_or(Cents::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgeFlag;

    fn limits() -> FlowLimits {
        FlowLimits {
            offline: OfflineLimits {
                max_order: Cents::new(5000),
                max_card_exposure: Cents::new(10_000),
                unknown_card: Cents::ZERO,
            },
            balance_max: Some(Cents::new(20_000)),
            return_payout_max: Cents::new(1_000),
        }
    }

    fn known(balance: i64) -> Input {
        Input::Card {
            card: Some(ReplicaCard {
                balance: Cents::new(balance),
                blocked: false,
                age_flag: None,
                vouchers: 0,
            }),
            local_charges: Cents::new(100),
            local_vouchers: 0,
            unacknowledged: false,
            unacknowledged_returns: Cents::ZERO,
            voided_credits: Cents::ZERO,
        }
    }

    /// A card with operations of this terminal the ledger has not acknowledged.
    fn busy(balance: i64) -> Input {
        match known(balance) {
            Input::Card {
                card,
                local_charges,
                ..
            } => Input::Card {
                card,
                local_charges,
                local_vouchers: 0,
                unacknowledged: true,
                unacknowledged_returns: Cents::ZERO,
                voided_credits: Cents::ZERO,
            },
            other => other,
        }
    }

    fn reply(status: u16, code: Option<&str>, balance: Option<i64>) -> Input {
        Input::Answer(Some(Reply {
            status,
            code: code.map(str::to_owned),
            balance: balance.map(Cents::new),
            vouchers_used: None,
        }))
    }

    /// Runs a flow, answering each step from `inputs` in turn; returns the steps taken.
    fn run(movement: Movement, total: i64, online: bool, inputs: Vec<Input>) -> Vec<Step> {
        let (mut flow, mut step) =
            TapFlow::start(movement, None, Cents::new(total), online, limits());
        let mut steps = vec![step.clone()];
        for input in inputs {
            assert!(
                !matches!(step, Step::Show(_)),
                "fed {input:?} after {steps:?}"
            );
            step = flow.advance(input);
            steps.push(step.clone());
        }
        steps
    }

    fn shown(steps: &[Step]) -> &Verdict {
        match steps.last() {
            Some(Step::Show(v)) => v,
            other => panic!("the flow did not end: {other:?}"),
        }
    }

    /// A card the replica knows with `age_flag`, and plenty on it.
    fn flagged(age_flag: Option<AgeFlag>, unacknowledged: bool) -> Input {
        Input::Card {
            card: Some(ReplicaCard {
                balance: Cents::new(5_000),
                blocked: false,
                age_flag,
                vouchers: 0,
            }),
            local_charges: Cents::ZERO,
            local_vouchers: 0,
            unacknowledged,
            unacknowledged_returns: Cents::ZERO,
            voided_credits: Cents::ZERO,
        }
    }

    #[test]
    fn a_product_the_cards_age_flag_forbids_is_declined_before_anything_is_journaled() {
        use AgeFlag::{Under16, Under18};
        let sixteen = Some(MinAge::SIXTEEN);
        let eighteen = Some(MinAge::EIGHTEEN);
        // (the order's strictest age, the card's flag, declined?)
        let cases = [
            (eighteen, Some(Under18), true),
            (eighteen, Some(Under16), true),
            (sixteen, Some(Under16), true),
            (sixteen, Some(Under18), false),
            (None, Some(Under16), false),
            (eighteen, None, false),
        ];
        for (min_age, flag, declined) in cases {
            for online in [true, false] {
                for unacknowledged in [false, true] {
                    let (mut flow, first) =
                        TapFlow::start(Movement::Order, min_age, Cents::new(450), online, limits());
                    assert_eq!(first, Step::ReadCard);
                    let step = flow.advance(flagged(flag, unacknowledged));
                    let what =
                        format!("{min_age:?} {flag:?} online={online} busy={unacknowledged}");
                    if declined {
                        // Only the local record of a decline: no terminal_seq, nothing sent.
                        assert_eq!(
                            step,
                            Step::RecordDecline {
                                reason: AGE_RESTRICTED
                            },
                            "{what}"
                        );
                        let shown = flow.advance(Input::Done);
                        assert_eq!(
                            shown,
                            Step::Show(Verdict {
                                outcome: Outcome::Declined,
                                reason: Some(AGE_RESTRICTED.into()),
                                balance: None,
                                operation: None,
                                vouchers_used: None,
                            }),
                            "{what}"
                        );
                    } else {
                        assert!(
                            matches!(step, Step::JournalAttempt | Step::JournalOffline { .. }),
                            "{what}: {step:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_ledgers_age_decline_is_recorded_as_a_stored_decline() {
        // The replica did not know the flag yet; the ledger did.
        let steps = run(
            Movement::Order,
            450,
            true,
            vec![
                known(1000),
                Input::Done,
                reply(422, Some(AGE_RESTRICTED), None),
                Input::Done,
            ],
        );
        assert_eq!(
            steps[3],
            Step::RecordAnswer {
                state: EntryState::Synced,
                decision: Decision::Declined,
                reason: Some(AGE_RESTRICTED.into()),
            }
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(AGE_RESTRICTED));
    }

    #[test]
    fn online_approval_is_journaled_before_the_ledger_is_asked_and_recorded_before_it_is_shown() {
        let steps = run(
            Movement::Order,
            450,
            true,
            vec![
                known(1000),
                Input::Done,
                reply(201, None, Some(550)),
                Input::Done,
            ],
        );
        assert_eq!(steps[0], Step::ReadCard);
        assert_eq!(steps[1], Step::JournalAttempt);
        assert_eq!(steps[2], Step::Send);
        assert!(matches!(
            steps[3],
            Step::RecordAnswer {
                state: EntryState::Synced,
                decision: Decision::ApprovedOnline,
                ..
            }
        ));
        let v = shown(&steps);
        assert_eq!(v.outcome, Outcome::ApprovedOnline);
        assert_eq!(v.balance, Some(Cents::new(550)));
        assert_eq!(v.operation, Some(Journaled::Attempt));
    }

    #[test]
    fn an_unwritable_journal_before_sending_declines_without_asking_the_ledger() {
        let steps = run(
            Movement::Order,
            450,
            true,
            vec![known(1000), Input::JournalFailed],
        );
        assert_eq!(steps.len(), 3);
        assert_eq!(shown(&steps).reason.as_deref(), Some(JOURNAL_UNAVAILABLE));
        assert_eq!(shown(&steps).operation, None);
    }

    #[test]
    fn an_approval_that_cannot_be_recorded_is_voided_and_shown_declined() {
        let steps = run(
            Movement::Order,
            450,
            true,
            vec![
                known(1000),
                Input::Done,
                reply(201, None, Some(550)),
                Input::JournalFailed,
                Input::JournalFailed,
            ],
        );
        assert_eq!(steps[4], Step::VoidAttempt);
        assert_eq!(shown(&steps).outcome, Outcome::Declined);
        assert_eq!(shown(&steps).reason.as_deref(), Some(JOURNAL_UNAVAILABLE));
    }

    #[test]
    fn a_ledger_decline_is_recorded_and_shown_with_its_reason_even_if_recording_failed() {
        for record in [Input::Done, Input::JournalFailed] {
            let steps = run(
                Movement::Order,
                450,
                true,
                vec![
                    known(1000),
                    Input::Done,
                    reply(402, Some("INSUFFICIENT_FUNDS"), Some(100)),
                    record,
                ],
            );
            assert!(matches!(
                &steps[3],
                Step::RecordAnswer { state: EntryState::Synced, decision: Decision::Declined, reason: Some(r) } if r == "INSUFFICIENT_FUNDS"
            ));
            let v = shown(&steps);
            assert_eq!(v.outcome, Outcome::Declined);
            assert_eq!(v.balance, Some(Cents::new(100)));
        }
        let steps = run(
            Movement::Order,
            450,
            true,
            vec![
                known(1000),
                Input::Done,
                reply(401, Some("UNAUTHORIZED"), None),
                Input::Done,
            ],
        );
        assert!(matches!(
            &steps[3],
            Step::RecordAnswer {
                state: EntryState::Rejected,
                ..
            }
        ));
    }

    #[test]
    fn no_answer_voids_the_attempt_then_decides_offline_as_a_new_operation() {
        for answer in [
            Input::Answer(None),
            reply(503, Some("DATABASE_ERROR"), None),
            reply(409, Some("DUPLICATE_REQUEST"), None),
        ] {
            let steps = run(
                Movement::Order,
                450,
                true,
                vec![
                    known(1000),
                    Input::Done,
                    answer,
                    Input::Done,
                    known(1000),
                    Input::Done,
                ],
            );
            assert_eq!(steps[3], Step::VoidAttempt);
            assert_eq!(steps[4], Step::ReadCard);
            assert_eq!(
                steps[5],
                Step::JournalOffline {
                    money: Cents::new(450),
                    vouchers: 0
                }
            );
            let v = shown(&steps);
            assert_eq!(v.outcome, Outcome::ApprovedOffline);
            assert_eq!(v.operation, Some(Journaled::Offline));
            assert_eq!(v.balance, Some(Cents::new(1000 - 100 - 450)));
        }
    }

    #[test]
    fn a_void_that_cannot_be_journaled_stops_the_sale() {
        let steps = run(
            Movement::Order,
            450,
            true,
            vec![
                known(1000),
                Input::Done,
                Input::Answer(None),
                Input::JournalFailed,
            ],
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(JOURNAL_UNAVAILABLE));
    }

    #[test]
    fn offline_declines_are_recorded_and_approvals_journaled_before_shown() {
        let steps = run(Movement::Order, 450, false, vec![known(400), Input::Done]);
        assert_eq!(steps[0], Step::ReadCard);
        assert_eq!(
            steps[1],
            Step::RecordDecline {
                reason: "INSUFFICIENT_FUNDS"
            }
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some("INSUFFICIENT_FUNDS"));

        let steps = run(
            Movement::Order,
            450,
            false,
            vec![known(1000), Input::JournalFailed],
        );
        assert!(matches!(steps[1], Step::JournalOffline { .. }));
        assert_eq!(shown(&steps).outcome, Outcome::Declined);
        assert_eq!(shown(&steps).reason.as_deref(), Some(JOURNAL_UNAVAILABLE));
    }

    #[test]
    fn offline_the_replicas_vouchers_pay_first_less_this_terminals_use() {
        let lines = vec![
            VoucherLine {
                quantity: 2,
                unit_price: Cents::new(450),
                voucher_price: Some(1),
            },
            VoucherLine {
                quantity: 1,
                unit_price: Cents::new(200),
                voucher_price: None,
            },
        ];
        // (card's vouchers, this terminal's use since, money, vouchers used, balance after)
        let cases = [
            (0, 0, 1100, 0, 1000 - 1100),
            (1, 0, 650, 1, 1000 - 650),
            (5, 0, 200, 2, 1000 - 200),
            (5, 4, 650, 1, 1000 - 650),
            (5, 9, 1100, 0, 1000 - 1100),
        ];
        for (vouchers, local_vouchers, money, used, after) in cases {
            let (mut flow, _) =
                TapFlow::start(Movement::Order, None, Cents::new(1100), false, limits());
            flow = flow.with_voucher_lines(lines.clone());
            let card = Input::Card {
                card: Some(ReplicaCard {
                    balance: Cents::new(1000),
                    blocked: false,
                    age_flag: None,
                    vouchers,
                }),
                local_charges: Cents::ZERO,
                local_vouchers,
                unacknowledged: false,
                unacknowledged_returns: Cents::ZERO,
                voided_credits: Cents::ZERO,
            };
            let step = flow.advance(card);
            if money > 1000 {
                assert_eq!(
                    step,
                    Step::RecordDecline {
                        reason: "INSUFFICIENT_FUNDS"
                    },
                    "{vouchers} {local_vouchers}"
                );
                continue;
            }
            assert_eq!(
                step,
                Step::JournalOffline {
                    money: Cents::new(money),
                    vouchers: used
                },
                "{vouchers} {local_vouchers}"
            );
            let Step::Show(v) = flow.advance(Input::Done) else {
                panic!("not shown")
            };
            assert_eq!(v.balance, Some(Cents::new(after)));
            assert_eq!(v.vouchers_used, Some(used));
        }
        // Vouchers that pay it all move no money, even on a card without any; not on a
        // blocked card.
        for (blocked, expected) in [
            (
                false,
                Step::JournalOffline {
                    money: Cents::ZERO,
                    vouchers: 2,
                },
            ),
            (
                true,
                Step::RecordDecline {
                    reason: "CARD_BLOCKED",
                },
            ),
        ] {
            let (flow, _) = TapFlow::start(Movement::Order, None, Cents::new(900), false, limits());
            let mut flow = flow.with_voucher_lines(vec![lines[0]]);
            let step = flow.advance(Input::Card {
                card: Some(ReplicaCard {
                    balance: Cents::ZERO,
                    blocked,
                    age_flag: None,
                    vouchers: 2,
                }),
                local_charges: Cents::ZERO,
                local_vouchers: 0,
                unacknowledged: false,
                unacknowledged_returns: Cents::ZERO,
                voided_credits: Cents::ZERO,
            });
            assert_eq!(step, expected, "blocked={blocked}");
        }
    }

    #[test]
    fn offline_topups_are_accepted_up_to_the_balance_limit() {
        let steps = run(Movement::Topup, 5000, false, vec![known(1000), Input::Done]);
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
        assert_eq!(shown(&steps).balance, Some(Cents::new(1000 - 100 + 5000)));
        // 19,000 - 100 + 5,000 > 20,000.
        let steps = run(
            Movement::Topup,
            5000,
            false,
            vec![known(19_000), Input::Done],
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(LIMIT_EXCEEDED));
        // Unknown card: the balance is unknown, the money was received.
        let unknown = unknown_card();
        let steps = run(Movement::Topup, 5000, false, vec![unknown, Input::Done]);
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
        assert_eq!(shown(&steps).balance, None);
    }

    #[test]
    fn the_balance_limit_counts_a_credit_in_doubt_as_possibly_applied() {
        // The replica shows 15,000; a top-up of 4,000 is in doubt and its void counts as a
        // local charge, but the ledger may have applied it (and the replica may not show it
        // yet): the card may hold 15,000, or 19,000 minus what the void takes back.
        let in_doubt = |voided: i64| match known(15_000) {
            Input::Card {
                card,
                local_vouchers,
                unacknowledged_returns,
                ..
            } => Input::Card {
                card,
                local_charges: Cents::new(voided),
                local_vouchers,
                unacknowledged: true,
                unacknowledged_returns,
                voided_credits: Cents::new(voided),
            },
            other => other,
        };
        // 15,000 + 5,000 fits the 20,000 limit, with the void counted or not.
        let steps = run(
            Movement::Topup,
            5000,
            false,
            vec![in_doubt(4000), Input::Done],
        );
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
        assert_eq!(
            shown(&steps).balance,
            Some(Cents::new(15_000 - 4000 + 5000))
        );
        // 15,000 + 5,001 does not, although the void makes the card look 4,000 poorer.
        let steps = run(
            Movement::Topup,
            5001,
            false,
            vec![in_doubt(4000), Input::Done],
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(LIMIT_EXCEEDED));
        // Spending is decided on the poorer view: 11,000 left, not 15,000.
        let steps = run(Movement::Order, 4500, false, vec![in_doubt(11_000)]);
        assert_eq!(
            steps.last(),
            Some(&Step::RecordDecline {
                reason: "INSUFFICIENT_FUNDS"
            })
        );
    }

    /// A card the replica knows, and `returned` cents of this terminal's deposit returns
    /// the ledger has not acknowledged.
    fn after_returns(balance: i64, returned: i64) -> Input {
        match known(balance) {
            Input::Card {
                card,
                local_charges,
                local_vouchers,
                unacknowledged,
                ..
            } => Input::Card {
                card,
                local_charges,
                local_vouchers,
                unacknowledged,
                unacknowledged_returns: Cents::new(returned),
                voided_credits: Cents::ZERO,
            },
            other => other,
        }
    }

    /// A card the replica has never seen, with nothing of this terminal's on it.
    fn unknown_card() -> Input {
        Input::Card {
            card: None,
            local_charges: Cents::ZERO,
            local_vouchers: 0,
            unacknowledged: false,
            unacknowledged_returns: Cents::ZERO,
            voided_credits: Cents::ZERO,
        }
    }

    /// A card the replica knows with `vouchers` voucher units.
    fn with_vouchers(vouchers: i64) -> Input {
        match known(0) {
            Input::Card {
                card: Some(card),
                local_charges,
                local_vouchers,
                unacknowledged,
                unacknowledged_returns,
                voided_credits,
            } => Input::Card {
                card: Some(ReplicaCard { vouchers, ..card }),
                local_charges,
                local_vouchers,
                unacknowledged,
                unacknowledged_returns,
                voided_credits,
            },
            other => other,
        }
    }

    #[test]
    fn offline_voucher_grants_stop_where_an_online_one_would() {
        let grant = Movement::VoucherGrant { units: 2 };
        // Up to the card's maximum: approved, journaled with no money.
        let steps = run(grant, 0, false, vec![with_vouchers(9_998), Input::Done]);
        assert_eq!(
            steps[1],
            Step::JournalOffline {
                money: Cents::ZERO,
                vouchers: 0
            }
        );
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
        // One past it: declined before anything is journaled.
        let steps = run(grant, 0, false, vec![with_vouchers(9_999), Input::Done]);
        assert_eq!(
            steps[1],
            Step::RecordDecline {
                reason: LIMIT_EXCEEDED
            }
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(LIMIT_EXCEEDED));
        // A card the replica does not know: the ledger decides when it replays.
        let unknown = unknown_card();
        let steps = run(grant, 0, false, vec![unknown, Input::Done]);
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
    }

    #[test]
    fn offline_deposit_returns_are_bounded_by_the_terminals_payout_limit() {
        // 600 handed out and unacknowledged, 400 more: exactly the limit of 1,000.
        let steps = run(
            Movement::Return,
            400,
            false,
            vec![after_returns(1000, 600), Input::Done],
        );
        assert_eq!(
            steps[1],
            Step::JournalOffline {
                money: Cents::new(400),
                vouchers: 0
            }
        );
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
        assert_eq!(shown(&steps).balance, Some(Cents::new(1000 - 100 + 400)));
        // One cent more is declined before anything is journaled, with the limit's reason.
        let steps = run(
            Movement::Return,
            401,
            false,
            vec![after_returns(1000, 600), Input::Done],
        );
        assert_eq!(
            steps[1],
            Step::RecordDecline {
                reason: OFFLINE_LIMIT
            }
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(OFFLINE_LIMIT));
        // The card's balance limit holds as for a top-up.
        let steps = run(
            Movement::Return,
            400,
            false,
            vec![after_returns(19_800, 0), Input::Done],
        );
        assert_eq!(shown(&steps).reason.as_deref(), Some(LIMIT_EXCEEDED));
        // Online, and nothing of the card unacknowledged: the ledger is asked, whatever the
        // terminal handed out offline.
        let steps = run(Movement::Return, 400, true, vec![after_returns(1000, 1000)]);
        assert_eq!(steps[1], Step::JournalAttempt);
    }

    #[test]
    fn a_card_with_unacknowledged_operations_is_decided_offline_even_online() {
        // The ledger's balance lacks this terminal's pending sales on the card: asking it
        // would approve money the card may no longer have.
        let steps = run(Movement::Order, 450, true, vec![busy(1000), Input::Done]);
        assert!(matches!(steps[1], Step::JournalOffline { .. }));
        assert_eq!(shown(&steps).outcome, Outcome::ApprovedOffline);
        let steps = run(Movement::Order, 450, true, vec![busy(500), Input::Done]);
        assert_eq!(shown(&steps).reason.as_deref(), Some("INSUFFICIENT_FUNDS"));
    }

    #[test]
    fn an_unexpected_input_declines() {
        let steps = run(Movement::Order, 450, true, vec![Input::Done]);
        assert_eq!(shown(&steps).reason.as_deref(), Some(INTERNAL_ERROR));
    }
}
