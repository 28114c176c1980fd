//! Performs the tap flow's steps ([`crate::terminal::core::tap`]) on the journal and the
//! ledger, and the journal-side recovery after a crash.
//!
//! This is the thin adapter around the pure flow: each [`Step`] becomes one journal call or
//! one request, and its result goes back to the flow as an [`Input`]. The daemon runs a tap
//! to its end with [`run`]; tests drive the same [`Tap::perform`] step by step and stop
//! anywhere, which is what a crash between two steps is.

use super::client::{ClientError, Transport};
use super::core::charges;
use super::core::tap::{Input, Journaled, Reply, Step, TapFlow, Verdict};
use super::journal::{
    Decision, DeclineRecord, Entry, EntryState, Journal, JournalError, LIST_LIMIT_MAX, NewEntry,
    OperationKind,
};
use crate::domain::{AgeFlag, CardUid, Cents, ClientRequestId, MinAge, StaffId, TerminalSeq};
use crate::protocol::api::{
    Mode, Operation, OrderItem, OrderRequest, PaymentMethod, RechargeRequest, ReturnItem,
    ReturnRequest, VoidReason, VoidRequest, VoucherGrantRequest,
};
use chrono::Utc;
use serde_json::Value;
use std::sync::Mutex;

/// A money operation waiting for its card, with the staff member who armed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Who armed it.
    pub staff: StaffId,
    /// What it is.
    pub kind: PaymentKind,
}

/// An order, a top-up, a deposit return or a voucher grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentKind {
    /// A sale at the bar.
    Order {
        /// The lines, priced from the catalog.
        items: Vec<OrderItem>,
        /// Their total.
        total: Cents,
        /// The strictest age its products are sold from.
        min_age: Option<MinAge>,
        /// Per line, the voucher units one unit costs (`None`: money only), from the catalog.
        voucher_prices: Vec<Option<i64>>,
    },
    /// Money received at a checkpoint.
    Topup {
        /// The amount.
        amount: Cents,
        /// Cash or card.
        method: PaymentMethod,
        /// What staff saw on the holder's ID, set on the card with the top-up.
        age_flag: Option<AgeFlag>,
    },
    /// Returnable items handed back: their deposits are credited to the card.
    Return {
        /// The items, at their deposits from the catalog.
        items: Vec<ReturnItem>,
        /// The deposits' total.
        amount: Cents,
    },
    /// Voucher units given at a checkpoint by a supervisor: no money moves.
    VoucherGrant {
        /// 1 to `VOUCHER_GRANT_UNITS_MAX`.
        units: i64,
    },
}

impl Payment {
    /// `order`, `topup`, `return` or `voucher_grant`, as events name them.
    pub fn operation(&self) -> &'static str {
        match self.kind {
            PaymentKind::Order { .. } => "order",
            PaymentKind::Topup { .. } => "topup",
            PaymentKind::Return { .. } => "return",
            PaymentKind::VoucherGrant { .. } => "voucher_grant",
        }
    }

    /// The money moved (none for a voucher grant).
    pub fn total(&self) -> Cents {
        match self.kind {
            PaymentKind::Order { total, .. } => total,
            PaymentKind::Topup { amount, .. } | PaymentKind::Return { amount, .. } => amount,
            PaymentKind::VoucherGrant { .. } => Cents::ZERO,
        }
    }

    /// The voucher units a grant gives.
    pub fn vouchers_granted(&self) -> Option<i64> {
        match self.kind {
            PaymentKind::VoucherGrant { units } => Some(units),
            _ => None,
        }
    }

    /// The strictest age an order's products are sold from.
    pub fn min_age(&self) -> Option<MinAge> {
        match self.kind {
            PaymentKind::Order { min_age, .. } => min_age,
            PaymentKind::Topup { .. }
            | PaymentKind::Return { .. }
            | PaymentKind::VoucherGrant { .. } => None,
        }
    }

    /// An order's lines as vouchers see them (empty for a top-up).
    pub fn voucher_lines(&self) -> Vec<super::core::tap::VoucherLine> {
        match &self.kind {
            PaymentKind::Order {
                items,
                voucher_prices,
                ..
            } => items
                .iter()
                .zip(voucher_prices)
                .map(|(item, price)| super::core::tap::VoucherLine {
                    quantity: item.quantity,
                    unit_price: item.unit_price_cents,
                    voucher_price: *price,
                })
                .collect(),
            PaymentKind::Topup { .. }
            | PaymentKind::Return { .. }
            | PaymentKind::VoucherGrant { .. } => Vec::new(),
        }
    }

    /// What the flow needs to know of it.
    pub fn movement(&self) -> super::core::tap::Movement {
        match self.kind {
            PaymentKind::Order { .. } => super::core::tap::Movement::Order,
            PaymentKind::Topup { .. } => super::core::tap::Movement::Topup,
            PaymentKind::Return { .. } => super::core::tap::Movement::Return,
            PaymentKind::VoucherGrant { units } => {
                super::core::tap::Movement::VoucherGrant { units }
            }
        }
    }

    /// The ledger request, numbered `seq`.
    pub fn request(
        &self,
        uid: &CardUid,
        crid: ClientRequestId,
        seq: TerminalSeq,
        mode: Mode,
        voucher_units: Option<i64>,
    ) -> Operation {
        match &self.kind {
            PaymentKind::Order { items, total, .. } => Operation::Order(OrderRequest {
                client_request_id: crid,
                terminal_seq: seq,
                card_uid: uid.clone(),
                items: items.clone(),
                total_cents: *total,
                staff_id: self.staff.clone(),
                created_at: Utc::now(),
                mode,
                voucher_units,
            }),
            PaymentKind::Topup {
                amount,
                method,
                age_flag,
            } => Operation::Recharge(RechargeRequest {
                client_request_id: crid,
                terminal_seq: seq,
                card_uid: uid.clone(),
                amount_cents: *amount,
                payment_method: *method,
                staff_id: self.staff.clone(),
                created_at: Utc::now(),
                mode,
                age_flag: *age_flag,
            }),
            PaymentKind::Return { items, amount } => Operation::Return(ReturnRequest {
                client_request_id: crid,
                terminal_seq: seq,
                card_uid: uid.clone(),
                items: items.clone(),
                amount_cents: *amount,
                staff_id: self.staff.clone(),
                created_at: Utc::now(),
                mode,
            }),
            PaymentKind::VoucherGrant { units } => Operation::VoucherGrant(VoucherGrantRequest {
                client_request_id: crid,
                terminal_seq: seq,
                card_uid: uid.clone(),
                units: *units,
                staff_id: self.staff.clone(),
                created_at: Utc::now(),
                mode,
            }),
        }
    }

    /// The journal's view: kind and signed effect on the card.
    pub fn journal_kind(&self) -> (OperationKind, Cents) {
        match &self.kind {
            PaymentKind::Order { total, .. } => (
                OperationKind::Order,
                Cents::ZERO.checked_sub(*total).unwrap_or(Cents::ZERO),
            ),
            PaymentKind::Topup { amount, .. } => (OperationKind::Recharge, *amount),
            PaymentKind::Return { amount, .. } => (OperationKind::Return, *amount),
            PaymentKind::VoucherGrant { .. } => (OperationKind::VoucherGrant, Cents::ZERO),
        }
    }
}

/// The JSON body the ledger receives for an operation.
pub fn operation_body(op: &Operation) -> Value {
    let body = match op {
        Operation::Order(r) => serde_json::to_value(r),
        Operation::Recharge(r) => serde_json::to_value(r),
        Operation::Void(r) => serde_json::to_value(r),
        Operation::Return(r) => serde_json::to_value(r),
        Operation::VoucherGrant(r) => serde_json::to_value(r),
    };
    body.unwrap_or(Value::Null)
}

fn lock(journal: &Mutex<Journal>) -> Result<std::sync::MutexGuard<'_, Journal>, JournalError> {
    journal
        .lock()
        .map_err(|e| JournalError::Invalid(e.to_string()))
}

/// One tap being performed: the card, what it pays for, and what has been journaled so far.
pub struct Tap<'a> {
    journal: &'a Mutex<Journal>,
    uid: &'a CardUid,
    payment: &'a Payment,
    /// The online attempt, once journaled.
    attempt: Option<(TerminalSeq, ClientRequestId, Operation)>,
    /// The ledger's answer to the attempt (status and body), to store with the decision.
    answer: Option<(u16, String)>,
    /// The offline operation, once journaled.
    offline: Option<ClientRequestId>,
}

impl<'a> Tap<'a> {
    /// A tap of `uid` paying for `payment`.
    pub fn new(journal: &'a Mutex<Journal>, uid: &'a CardUid, payment: &'a Payment) -> Tap<'a> {
        Tap {
            journal,
            uid,
            payment,
            attempt: None,
            answer: None,
            offline: None,
        }
    }

    /// The key of the journaled operation a verdict refers to.
    pub fn client_request_id(&self, operation: Option<Journaled>) -> Option<ClientRequestId> {
        match operation? {
            Journaled::Attempt => self.attempt.as_ref().map(|(_, crid, _)| *crid),
            Journaled::Offline => self.offline,
        }
    }

    /// Performs one step (anything but [`Step::Show`]) and returns what the flow needs.
    pub async fn perform(&mut self, step: &Step, ledger: &impl Transport) -> Input {
        match step {
            Step::JournalAttempt => self
                .journal_payment(Mode::Online, EntryState::Sending, None, None)
                .map(|(seq, crid, op)| self.attempt = Some((seq, crid, op)))
                .into(),
            Step::Send => {
                let Some((_, _, op)) = &self.attempt else {
                    return Input::Answer(None);
                };
                match ledger.post_operation(op).await {
                    Ok(answer) => {
                        let reply = Reply {
                            status: answer.status,
                            code: answer.error_code().map(str::to_owned),
                            balance: answer.body["new_balance_cents"]
                                .as_i64()
                                .or_else(|| {
                                    answer.body["error"]["details"]["balance_cents"].as_i64()
                                })
                                .map(Cents::new),
                            vouchers_used: answer.body["vouchers_used"].as_i64(),
                        };
                        self.answer = Some((answer.status, answer.body.to_string()));
                        Input::Answer(Some(reply))
                    }
                    Err(ClientError::Unreachable(e)) => {
                        tracing::info!(error = %e, "the ledger is unreachable");
                        Input::Answer(None)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "online attempt without an answer: in doubt");
                        Input::Answer(None)
                    }
                }
            }
            Step::RecordAnswer {
                state,
                decision,
                reason,
            } => {
                let Some((seq, _, _)) = &self.attempt else {
                    return Input::JournalFailed;
                };
                let ledger = self.answer.as_ref().map(|(s, b)| (*s, b.as_str()));
                lock(self.journal)
                    .and_then(|mut j| {
                        j.set_state(
                            *seq,
                            *state,
                            Some(*decision),
                            reason.as_deref(),
                            ledger,
                            Utc::now(),
                        )
                    })
                    .into()
            }
            Step::VoidAttempt => {
                let Some((seq, crid, _)) = &self.attempt else {
                    return Input::JournalFailed;
                };
                lock(self.journal)
                    .and_then(|mut j| void_in_doubt(&mut j, *seq, *crid, &self.payment.staff))
                    .into()
            }
            Step::ReadCard => match lock(self.journal).and_then(|j| {
                Ok((
                    j.replica_card(self.uid)?,
                    j.local_effects(self.uid)?,
                    j.has_unacknowledged(self.uid)?,
                    j.unacknowledged_returns()?,
                ))
            }) {
                Ok((card, (local_charges, local_vouchers, voided), unacknowledged, returns)) => {
                    Input::Card {
                        card: card.map(|(card, _)| card),
                        local_charges,
                        local_vouchers,
                        unacknowledged,
                        unacknowledged_returns: returns,
                        voided_credits: voided,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "journal read failed");
                    Input::JournalFailed
                }
            },
            Step::JournalOffline { money, vouchers } => self
                .journal_payment(
                    Mode::Offline,
                    EntryState::Pending,
                    Some(Decision::ApprovedOffline),
                    Some((*money, *vouchers)),
                )
                .map(|(_, crid, _)| self.offline = Some(crid))
                .into(),
            Step::RecordDecline { reason } => {
                let (operation, amount) = self.payment.journal_kind();
                let record = DeclineRecord {
                    client_request_id: ClientRequestId::new_random(),
                    operation,
                    card_uid: self.uid.clone(),
                    amount_cents: amount,
                    reason: (*reason).to_owned(),
                    staff_id: self.payment.staff.clone(),
                };
                tracing::info!(card = %self.uid, reason, "offline decline");
                lock(self.journal)
                    .and_then(|mut j| j.record_decline(&record, Utc::now()))
                    .into()
            }
            Step::Show(_) => Input::Done,
        }
    }

    /// Journals the payment (durably) as a new operation; returns its number, key and request.
    /// `offline`: the money an offline decision moves and the vouchers an order used (the
    /// entry's effect is then that money, and the request says the vouchers).
    fn journal_payment(
        &self,
        mode: Mode,
        state: EntryState,
        decision: Option<Decision>,
        offline: Option<(Cents, i64)>,
    ) -> Result<(TerminalSeq, ClientRequestId, Operation), JournalError> {
        let crid = ClientRequestId::new_random();
        let (operation, mut amount_cents) = self.payment.journal_kind();
        let mut vouchers = None;
        if let (Some((money, used)), OperationKind::Order) = (offline, operation) {
            amount_cents = Cents::ZERO.checked_sub(money).unwrap_or(amount_cents);
            vouchers = (used > 0).then_some(used);
        }
        let entry = NewEntry {
            client_request_id: crid,
            operation,
            mode,
            card_uid: Some(self.uid.clone()),
            amount_cents,
            decision,
            decline_reason: None,
            state,
        };
        let mut built = None;
        let written = lock(self.journal)?.append(
            entry,
            |seq| {
                let op = self.payment.request(self.uid, crid, seq, mode, vouchers);
                let body = operation_body(&op);
                built = Some(op);
                body
            },
            Utc::now(),
        )?;
        built
            .map(|op| (written.terminal_seq, crid, op))
            .ok_or_else(|| JournalError::Invalid("no request was built".into()))
    }
}

impl<E: std::fmt::Display> From<Result<(), E>> for Input {
    fn from(result: Result<(), E>) -> Input {
        match result {
            Ok(()) => Input::Done,
            Err(e) => {
                tracing::error!(error = %e, "journal write failed");
                Input::JournalFailed
            }
        }
    }
}

/// Runs a tap to its verdict; `on_offline` is called when the flow takes the attempt to be
/// in doubt (the terminal should consider itself offline).
pub async fn run(
    mut flow: TapFlow,
    first: Step,
    tap: &mut Tap<'_>,
    ledger: &impl Transport,
    mut on_offline: impl FnMut(),
) -> Verdict {
    let mut step = first;
    loop {
        if let Step::Show(verdict) = step {
            return verdict;
        }
        if step == Step::VoidAttempt {
            on_offline();
        }
        let input = tap.perform(&step, ledger).await;
        step = flow.advance(input);
    }
}

/// Marks an online attempt in doubt and journals its void, in one transaction, so that
/// replay sends the void before anything journaled after it and no attempt is ever in doubt
/// without its void.
pub fn void_in_doubt(
    j: &mut Journal,
    seq: TerminalSeq,
    target: ClientRequestId,
    staff: &StaffId,
) -> Result<(), JournalError> {
    // The attempt never counted as a local charge; its void counts on the attempt's card
    // only when the attempt was a credit the ledger may have applied (the rule's). Nothing
    // was shown, so the void has no decision.
    let counted = j.entry(seq)?.and_then(|attempt| {
        let card = attempt.card_uid?;
        charges::in_doubt_void_effect(attempt.amount_cents).map(|effect| (card, effect))
    });
    let (entry, request) = void_entry(target, staff, VoidReason::InDoubt, counted, None);
    j.void_in_doubt(seq, entry, request, Utc::now())?;
    Ok(())
}

/// Journals a void of `target` (pending, replayed like any operation) and returns its key.
/// `effect` is the card and the signed amount this terminal counts for it, when it refunds
/// an approved operation; a void of an in-doubt attempt has none.
pub fn append_void(
    j: &mut Journal,
    target: ClientRequestId,
    staff: &StaffId,
    reason: VoidReason,
    effect: Option<(CardUid, Cents)>,
) -> Result<ClientRequestId, JournalError> {
    let decision = effect.as_ref().map(|_| Decision::ApprovedOffline);
    let (entry, request) = void_entry(target, staff, reason, effect, decision);
    let crid = entry.client_request_id;
    j.append(entry, request, Utc::now())?;
    Ok(crid)
}

/// A void of `target`: the journal entry, and the request body for its `terminal_seq`.
/// `effect` is the card and the signed amount this terminal counts for it; `decision` what
/// was shown (none for the void of an attempt in doubt).
fn void_entry<'a>(
    target: ClientRequestId,
    staff: &'a StaffId,
    reason: VoidReason,
    effect: Option<(CardUid, Cents)>,
    decision: Option<Decision>,
) -> (NewEntry, impl FnOnce(TerminalSeq) -> Value + 'a) {
    let crid = ClientRequestId::new_random();
    let entry = NewEntry {
        client_request_id: crid,
        operation: OperationKind::Void,
        mode: Mode::Offline,
        decision,
        card_uid: effect.as_ref().map(|(card, _)| card.clone()),
        amount_cents: effect.map_or(Cents::ZERO, |(_, amount)| amount),
        decline_reason: None,
        state: EntryState::Pending,
    };
    let request = move |seq| {
        operation_body(&Operation::Void(VoidRequest {
            client_request_id: crid,
            terminal_seq: seq,
            target_client_request_id: target,
            staff_id: staff.clone(),
            reason,
            created_at: Utc::now(),
        }))
    };
    (entry, request)
}

/// Every unacknowledged entry, in `terminal_seq` order (paged, bounded by the journal).
pub fn all_unacknowledged(j: &Journal) -> Result<Vec<Entry>, JournalError> {
    let mut all = Vec::new();
    each_unacknowledged_page(j, |page| {
        all.extend(page);
        Ok::<_, JournalError>(())
    })?;
    Ok(all)
}

/// Calls `f` with every unacknowledged entry, in `terminal_seq` order, a page at a time, so
/// that a long backlog is never all in memory.
pub fn each_unacknowledged_page<E: From<JournalError>>(
    j: &Journal,
    mut f: impl FnMut(Vec<Entry>) -> Result<(), E>,
) -> Result<(), E> {
    let mut after = None;
    loop {
        let page = j.unacknowledged(after, LIST_LIMIT_MAX)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.terminal_seq);
        f(page)?;
    }
}

/// Startup after a crash (and before an export): an online attempt still `sending` never
/// got its answer recorded, and one marked `in_doubt` may lack its void if the daemon died
/// between the two writes. Both get a void (the card may have been charged while the screen
/// showed nothing, so the charge is cancelled). A second void of the same attempt is
/// harmless: the ledger answers `ALREADY_VOIDED`, which settles it. Returns the attempts
/// voided.
pub fn recover(j: &mut Journal) -> anyhow::Result<usize> {
    // Both lists are short (one attempt is sent at a time); reading only them keeps a
    // restart with a long backlog cheap.
    let mut stuck = j.sending(LIST_LIMIT_MAX)?;
    stuck.extend(j.in_doubt_without_void(LIST_LIMIT_MAX)?);
    for entry in &stuck {
        let staff = entry
            .request()?
            .get("staff_id")
            .and_then(Value::as_str)
            .and_then(|s| StaffId::parse(s).ok())
            .ok_or_else(|| {
                anyhow::anyhow!("journal entry {} has no staff_id", entry.terminal_seq.get())
            })?;
        void_in_doubt(j, entry.terminal_seq, entry.client_request_id, &staff)?;
        tracing::warn!(seq = entry.terminal_seq.get(), client_request_id = %entry.client_request_id, "in-doubt attempt voided after restart");
    }
    Ok(stuck.len())
}
