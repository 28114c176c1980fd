//! The flow of a terminal's operations (order, top-up, void) and shift close-outs: the
//! checks in the contract's order, then the plan of writes (see the module above).

use super::{
    Balances, CardWrite, CatalogEntry, Context, DEPOSITS, FlowError, KeyRecord, LogEntry,
    OrderLine, Plan, Reads, Row, StoredKey, Target, TargetKind, VoidTarget, Writes, card_account,
    funding_account, new_transaction_id, revenue_account, vat_account,
};
use crate::domain::{CardUid, Cents, ProductId, TaxRateName, split_gross};
use crate::ledger::outcome::{self, Answer, Outcome};
use crate::ledger::rules::{self, Action, BalanceChange, KeyCheck};
use crate::protocol::api::{
    ApiError, Approval, Flag, Mode, Operation, OrderRequest, RechargeRequest, ReturnRequest,
    ShiftCloseout, ShiftRecorded, VoidOutcome, VoidRequest, VoucherGrantRequest, format_time,
};
use crate::protocol::codes::ErrorCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// The fingerprint of a request for its idempotency key: the terminal and the canonical JSON
/// of the parsed request. An [`Operation`] serializes with its `type` first, so it never
/// spells the same JSON as a [`ShiftCloseout`].
pub fn request_sha256(
    ctx: &Context<'_>,
    request: &impl serde::Serialize,
) -> Result<String, FlowError> {
    let canonical = serde_json::to_vec(request).map_err(FlowError::new)?;
    let mut h = Sha256::new();
    h.update(ctx.terminal.terminal_id.as_bytes());
    h.update([0u8]);
    h.update(&canonical);
    Ok(hex::encode(h.finalize()))
}

/// The action an operation asks of its terminal.
pub fn action_of(op: &Operation) -> Action {
    match op {
        Operation::Order(_) => Action::Order,
        Operation::Recharge(_) => Action::Recharge,
        Operation::Void(_) => Action::Void,
        Operation::Return(_) => Action::Return,
        Operation::VoucherGrant(_) => Action::GrantVouchers,
    }
}

/// The stored outcome again (a replay), 422 for another request, or `None` for a new key.
fn known_key(
    ctx: &Context<'_>,
    stored: Option<StoredKey>,
    hash: &str,
) -> Result<Option<Outcome>, FlowError> {
    match rules::check_key(stored.as_ref().map(|s| s.request_sha256.as_str()), hash) {
        KeyCheck::Fresh => Ok(None),
        KeyCheck::Reused => Ok(Some(Outcome::declined(rules::key_reused(), ctx.request_id))),
        KeyCheck::Replay => {
            let stored = stored.ok_or_else(|| FlowError::new("replay without a key"))?;
            let decided =
                outcome::decode(&stored.operation, &stored.answer).map_err(FlowError::new)?;
            Ok(Some(Outcome {
                decided,
                replayed: true,
            }))
        }
    }
}

/// What a decided operation writes before its key: card, rows, postings, and for the audit
/// log its card, amount and outcome word.
struct Applied<'a> {
    transaction_id: uuid::Uuid,
    card: Option<CardWrite>,
    row: Row<'a>,
    postings: Vec<(String, Cents)>,
    card_uid: Option<CardUid>,
    amount: Option<Cents>,
    outcome: &'static str,
    answer: Answer,
}

/// Decides an order, a top-up or a void, in the contract's order of checks.
pub fn decide_operation<'a, R: Reads>(
    reads: &R,
    ctx: &Context<'_>,
    op: &'a Operation,
) -> Result<Plan<'a>, R::Error> {
    let refuse = |e: ApiError| Ok(Plan::Answer(Box::new(Outcome::declined(e, ctx.request_id))));
    let action = action_of(op);
    if let Err(e) = rules::check_terminal_kind(ctx.terminal.kind, action) {
        return refuse(e);
    }
    let crid = op.client_request_id();
    let hash = request_sha256(ctx, op)?;
    if let Some(known) = known_key(ctx, reads.stored_key(&crid)?, &hash)? {
        return Ok(Plan::Answer(Box::new(known)));
    }
    if reads.voided_by(&crid, ctx.terminal.terminal_id)? {
        return refuse(ApiError::new(
            ErrorCode::OperationVoided,
            "this operation was voided before it arrived",
        ));
    }
    let staff = reads.staff(op.staff_id())?;
    if let Err(e) = rules::check_staff(staff.as_ref(), action, op.mode()) {
        return refuse(e);
    }
    let decided = match op {
        Operation::Order(r) => order(reads, ctx, r, staff.as_ref().is_some_and(|s| !s.active))?,
        Operation::Recharge(r) => recharge(ctx, r, reads.card(&r.card_uid)?)?,
        Operation::Void(r) => void(reads, ctx, r)?,
        Operation::Return(r) => deposit_return(reads, ctx, r)?,
        Operation::VoucherGrant(r) => voucher_grant(ctx, r, reads.card(&r.card_uid)?),
    };
    let (applied, declined) = match decided {
        Ok(applied) => (Some(applied), None),
        Err(e) if e.code.is_stored_decline() => (None, Some(e)),
        Err(e) => return refuse(e),
    };
    let log = log_entry(op, applied.as_ref(), declined.as_ref());
    // An applied operation's key is kept forever (no expiry); a decline's for the retention.
    let (outcome, card, row, postings, transaction_id, expires_at) = match (applied, declined) {
        (Some(a), _) => (
            Outcome::approved(a.answer),
            a.card,
            a.row,
            a.postings,
            Some(a.transaction_id),
            None,
        ),
        (None, Some(e)) => (
            Outcome::declined(e, ctx.request_id),
            None,
            Row::None,
            Vec::new(),
            None,
            Some(ctx.now + chrono::Duration::days(ctx.retention_days)),
        ),
        (None, None) => return Err(FlowError::new("neither applied nor declined").into()),
    };
    let answer = outcome::encode(&outcome.decided).map_err(FlowError::new)?;
    Ok(Plan::Write(Box::new(Writes {
        card,
        row,
        postings,
        log,
        key: KeyRecord {
            client_request_id: crid,
            operation: op.kind_str(),
            request_sha256: hash,
            transaction_id,
            expires_at,
            answer,
        },
        terminal_seq: Some(op.terminal_seq()),
        outcome,
    })))
}

fn balances(change: &BalanceChange) -> Balances {
    Balances {
        previous: change.previous.balance,
        next: change.next.balance,
        flags: change.flags.clone(),
    }
}

fn card_write(uid: &CardUid, change: &BalanceChange) -> Option<CardWrite> {
    Some(CardWrite {
        uid: uid.clone(),
        create: change.create_card,
        next: change.next,
    })
}

fn neg(c: Cents) -> Result<Cents, FlowError> {
    c.checked_neg().map_err(FlowError::new)
}

/// An approval; `vouchers` (units used, money charged) for an order. A voucher grant adds
/// its own two fields to it.
fn approval(
    ctx: &Context<'_>,
    transaction_id: uuid::Uuid,
    r: (&crate::domain::ClientRequestId, &CardUid),
    amounts: (Option<Cents>, Option<Cents>),
    change: &BalanceChange,
    vouchers: Option<(i64, Cents)>,
) -> Approval {
    Approval {
        transaction_id,
        client_request_id: *r.0,
        status: "approved",
        card_uid: r.1.clone(),
        total_cents: amounts.0,
        amount_cents: amounts.1,
        previous_balance_cents: change.previous.balance,
        new_balance_cents: change.next.balance,
        card_status: change.next.status,
        processed_at: format_time(ctx.now),
        flags: change.flags.clone(),
        vouchers_used: vouchers.map(|v| v.0),
        money_cents: vouchers.map(|v| v.1),
        vouchers_granted: None,
        voucher_units: None,
    }
}

type Decided<'a> = Result<Applied<'a>, ApiError>;

/// The catalog entries of `products` at `point_of_sale`, each with whether it is on sale (a
/// product unknown there is absent).
fn catalog_of<'p, R: Reads>(
    reads: &R,
    point_of_sale: &str,
    products: impl Iterator<Item = &'p ProductId>,
) -> Result<HashMap<&'p ProductId, (CatalogEntry, bool)>, R::Error> {
    let mut catalog = HashMap::new();
    for product in products {
        if let Some(entry) = reads.catalog_product(point_of_sale, product)? {
            catalog.insert(product, entry);
        }
    }
    Ok(catalog)
}

/// The entry of `product` if it is on sale.
fn on_sale<'c>(
    catalog: &'c HashMap<&ProductId, (CatalogEntry, bool)>,
    product: &ProductId,
) -> Option<&'c CatalogEntry> {
    catalog
        .get(product)
        .filter(|(_, on_sale)| *on_sale)
        .map(|(e, _)| e)
}

/// An order; `staff_inactive` when its staff member is disabled (then it is an offline
/// order, [`rules::check_staff`] having refused an online one), which is flagged, last.
fn order<'a, R: Reads>(
    reads: &R,
    ctx: &Context<'_>,
    r: &'a OrderRequest,
    staff_inactive: bool,
) -> Result<Decided<'a>, R::Error> {
    let card = reads.card(&r.card_uid)?;
    let pos = &ctx.terminal.point_of_sale;
    let catalog = catalog_of(reads, pos, r.items.iter().map(|i| &i.product_id))?;
    let on_sale = |p: &ProductId| on_sale(&catalog, p);
    let mut decision = match rules::decide_order(r, card, on_sale) {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    if staff_inactive {
        decision.change.flags.push(Flag::StaffInactive);
    }
    let change = &decision.change;
    let transaction_id = new_transaction_id();
    let lines = r
        .items
        .iter()
        .zip(&decision.voucher_quantities)
        .map(|(item, voucher_quantity)| {
            // A product taken off sale since the terminal sold it offline is booked at its
            // own rate, and as a deposit if returnable; only its price is not the catalog's.
            let entry = catalog.get(&item.product_id).map(|(e, _)| e);
            let rate_name = entry.and_then(|e| e.tax_rate.as_deref());
            let tax_rate = ctx.taxes.resolve(rate_name).ok_or_else(|| {
                FlowError::new(format!(
                    "product {} names tax rate {:?}, which [taxes] lacks",
                    item.product_id,
                    rate_name.unwrap_or_default()
                ))
            })?;
            let line_total = item
                .unit_price_cents
                .checked_mul(item.quantity)
                .map_err(FlowError::new)?;
            // Only money is split into net and tax: what vouchers paid earns nothing.
            let money = item
                .unit_price_cents
                .checked_mul(item.quantity - voucher_quantity)
                .map_err(FlowError::new)?;
            // A returnable item's money is a deposit: no sale, no VAT.
            let deposit = entry.is_some_and(|e| e.returnable).then_some(money);
            let split = split_gross(
                if deposit.is_some() {
                    Cents::ZERO
                } else {
                    money
                },
                tax_rate.basis_points,
            );
            let sold = on_sale(&item.product_id);
            let voucher_units = sold
                .and_then(|e| e.voucher_price)
                .map_or(0, |price| price * voucher_quantity);
            Ok(OrderLine {
                catalog_price_differs: sold.and_then(|e| e.differs(item.unit_price_cents)),
                line_total,
                tax_rate,
                net: split.net,
                tax: split.tax,
                voucher_quantity: *voucher_quantity,
                voucher_units,
                deposit,
            })
        })
        .collect::<Result<Vec<_>, FlowError>>()?;
    let mut postings = Vec::new();
    if decision.money != Cents::ZERO {
        postings.push((card_account(&r.card_uid), neg(decision.money)?));
    }
    postings.extend(order_postings(pos, &lines)?);
    Ok(Ok(Applied {
        transaction_id,
        card: card_write(&r.card_uid, change),
        postings,
        card_uid: Some(r.card_uid.clone()),
        amount: Some(decision.money),
        outcome: "approved",
        answer: Answer::Approval(approval(
            ctx,
            transaction_id,
            (&r.client_request_id, &r.card_uid),
            (Some(r.total_cents), None),
            change,
            Some((decision.vouchers_used, decision.money)),
        )),
        row: Row::Order {
            transaction_id,
            request: r,
            balances: balances(change),
            lines,
            vouchers_used: decision.vouchers_used,
            money: decision.money,
        },
    }))
}

/// An order's postings besides the card's: per VAT rate, in byte order of its name, the net
/// to `revenue:<point of sale>:<rate>` and the tax to `vat:<rate>`, then its deposit lines'
/// money to `deposits`; amounts of zero left out.
pub fn order_postings(
    point_of_sale: &str,
    lines: &[OrderLine],
) -> Result<Vec<(String, Cents)>, FlowError> {
    let mut by_rate: BTreeMap<&TaxRateName, (Cents, Cents)> = BTreeMap::new();
    let mut deposits = Cents::ZERO;
    for line in lines {
        if let Some(money) = line.deposit {
            deposits = deposits.checked_add(money).map_err(FlowError::new)?;
            continue;
        }
        let sums = by_rate
            .entry(&line.tax_rate.name)
            .or_insert((Cents::ZERO, Cents::ZERO));
        sums.0 = sums.0.checked_add(line.net).map_err(FlowError::new)?;
        sums.1 = sums.1.checked_add(line.tax).map_err(FlowError::new)?;
    }
    let mut postings = Vec::new();
    for (rate, (net, tax)) in by_rate {
        if net != Cents::ZERO {
            postings.push((revenue_account(point_of_sale, rate), net));
        }
        if tax != Cents::ZERO {
            postings.push((vat_account(rate), tax));
        }
    }
    if deposits != Cents::ZERO {
        postings.push((DEPOSITS.to_owned(), deposits));
    }
    Ok(postings)
}

fn recharge<'a>(
    ctx: &Context<'_>,
    r: &'a RechargeRequest,
    card: Option<crate::ledger::rules::CardState>,
) -> Result<Decided<'a>, FlowError> {
    let change = match rules::decide_recharge(r, card, ctx.limits) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let pos = &ctx.terminal.point_of_sale;
    let transaction_id = new_transaction_id();
    Ok(Ok(Applied {
        transaction_id,
        card: card_write(&r.card_uid, &change),
        postings: vec![
            (card_account(&r.card_uid), r.amount_cents),
            (funding_account(r.payment_method, pos), neg(r.amount_cents)?),
        ],
        card_uid: Some(r.card_uid.clone()),
        amount: Some(r.amount_cents),
        outcome: "approved",
        answer: Answer::Approval(approval(
            ctx,
            transaction_id,
            (&r.client_request_id, &r.card_uid),
            (None, Some(r.amount_cents)),
            &change,
            None,
        )),
        row: Row::Recharge {
            transaction_id,
            request: r,
            balances: balances(&change),
        },
    }))
}

fn deposit_return<'a, R: Reads>(
    reads: &R,
    ctx: &Context<'_>,
    r: &'a ReturnRequest,
) -> Result<Decided<'a>, R::Error> {
    let pos = &ctx.terminal.point_of_sale;
    let catalog = catalog_of(reads, pos, r.items.iter().map(|i| &i.product_id))?;
    let card = reads.card(&r.card_uid)?;
    let decision = match rules::decide_return(r, card, |p| on_sale(&catalog, p), ctx.limits) {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let change = &decision.change;
    let transaction_id = new_transaction_id();
    Ok(Ok(Applied {
        transaction_id,
        card: card_write(&r.card_uid, change),
        postings: vec![
            (card_account(&r.card_uid), r.amount_cents),
            (DEPOSITS.to_owned(), neg(r.amount_cents)?),
        ],
        card_uid: Some(r.card_uid.clone()),
        amount: Some(r.amount_cents),
        outcome: "approved",
        answer: Answer::Approval(approval(
            ctx,
            transaction_id,
            (&r.client_request_id, &r.card_uid),
            (None, Some(r.amount_cents)),
            change,
            None,
        )),
        row: Row::Return {
            transaction_id,
            request: r,
            balances: balances(change),
            catalog_deposits: decision.catalog_deposits,
        },
    }))
}

fn voucher_grant<'a>(
    ctx: &Context<'_>,
    r: &'a VoucherGrantRequest,
    card: Option<rules::CardState>,
) -> Decided<'a> {
    let change = rules::decide_voucher_grant(r, card)?;
    let transaction_id = new_transaction_id();
    let answer = Answer::Approval(Approval {
        vouchers_granted: Some(r.units),
        voucher_units: Some(change.next.vouchers),
        ..approval(
            ctx,
            transaction_id,
            (&r.client_request_id, &r.card_uid),
            (None, None),
            &change,
            None,
        )
    });
    Ok(Applied {
        transaction_id,
        card: card_write(&r.card_uid, &change),
        // Vouchers are never money: nothing to post.
        postings: Vec::new(),
        card_uid: Some(r.card_uid.clone()),
        amount: None,
        outcome: "approved",
        answer,
        row: Row::VoucherGrant {
            transaction_id,
            request: r,
            voucher_units: (change.previous.vouchers, change.next.vouchers),
            flags: change.flags,
        },
    })
}

fn invalid_target(message: &str) -> ApiError {
    ApiError::with_details(
        ErrorCode::InvalidRequest,
        message,
        json!({ "field": "target_client_request_id" }),
    )
}

/// What goes back to the card when `t` is reversed (+ for an order, − for a top-up or a
/// deposit return), and
/// its postings reversed, in their order.
fn reversal_of(t: &Target) -> Result<(Cents, Vec<(String, Cents)>), FlowError> {
    let delta = match t.kind {
        TargetKind::Order => t.amount,
        TargetKind::Recharge(_) | TargetKind::Return => neg(t.amount)?,
        TargetKind::VoucherGrant => Cents::ZERO,
    };
    let postings = t
        .postings
        .iter()
        .map(|(account, amount)| Ok((account.clone(), neg(*amount)?)))
        .collect::<Result<Vec<_>, FlowError>>()?;
    Ok((delta, postings))
}

fn void<'a, R: Reads>(
    reads: &R,
    ctx: &Context<'_>,
    r: &'a VoidRequest,
) -> Result<Decided<'a>, R::Error> {
    let me = ctx.terminal.terminal_id;
    let target = match reads.void_target(&r.target_client_request_id)? {
        VoidTarget::Void => return Ok(Err(invalid_target("a void cannot be voided"))),
        VoidTarget::Shift => {
            return Ok(Err(invalid_target("a shift close-out cannot be voided")));
        }
        VoidTarget::NotApplied => None,
        VoidTarget::Applied(t) => Some(t),
    };
    if target.as_ref().is_some_and(|t| t.terminal_id != me) {
        return Ok(Err(ApiError::new(
            ErrorCode::Forbidden,
            "a terminal may only void its own operations",
        )));
    }
    if reads.voided_by(&r.target_client_request_id, me)? {
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyVoided,
            "this operation is already voided",
        )));
    }
    let transaction_id = new_transaction_id();
    let vouchers_returned = match &target {
        Some(t) if t.kind == TargetKind::Order => t.vouchers,
        Some(t) if t.kind == TargetKind::VoucherGrant => -t.vouchers,
        _ => 0,
    };
    let (status, card, postings, reversal, row_target, change) = match &target {
        Some(t) => {
            let (delta, reversed) = reversal_of(t)?;
            let card = reads.card(&t.card_uid)?.ok_or_else(|| {
                FlowError::new(format!("card {} of an operation is missing", t.card_uid))
            })?;
            let change = match rules::decide_reversal(card, delta, vouchers_returned) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            (
                "voided",
                card_write(&t.card_uid, &change),
                reversed,
                Some((t.card_uid.clone(), delta, balances(&change))),
                Some((t.kind, t.transaction_id)),
                Some(change),
            )
        }
        None => ("tombstoned", None, Vec::new(), None, None, None),
    };
    let answer = Answer::Void(VoidOutcome {
        transaction_id,
        client_request_id: r.client_request_id,
        status,
        target_client_request_id: r.target_client_request_id,
        card_uid: reversal.as_ref().map(|x| x.0.clone()),
        refunded_cents: reversal.as_ref().map(|x| x.1),
        previous_balance_cents: change.as_ref().map(|c| c.previous.balance),
        new_balance_cents: change.as_ref().map(|c| c.next.balance),
        card_status: change.as_ref().map(|c| c.next.status),
        processed_at: format_time(ctx.now),
        flags: change.as_ref().map(|c| c.flags.clone()).unwrap_or_default(),
        vouchers_returned: (vouchers_returned != 0).then_some(vouchers_returned),
    });
    Ok(Ok(Applied {
        transaction_id,
        card: card.map(|c| CardWrite { create: false, ..c }),
        postings,
        card_uid: reversal.as_ref().map(|x| x.0.clone()),
        amount: reversal.as_ref().map(|x| x.1),
        outcome: status,
        answer,
        row: Row::Void {
            transaction_id,
            request: r,
            target: row_target,
            reversal,
            vouchers_returned,
        },
    }))
}

fn log_entry(
    op: &Operation,
    applied: Option<&Applied<'_>>,
    declined: Option<&ApiError>,
) -> LogEntry {
    let (card_uid, amount, details) = match op {
        Operation::Order(r) => {
            let mut details =
                json!({ "mode": r.mode.as_str(), "terminal_seq": r.terminal_seq.get() });
            // The money moved is the log's amount; what vouchers paid is in its details.
            let amount = match applied.map(|a| &a.row) {
                Some(Row::Order {
                    vouchers_used,
                    money,
                    ..
                }) => {
                    if let (true, Some(m)) = (*vouchers_used != 0, details.as_object_mut()) {
                        m.insert("vouchers_used".into(), (*vouchers_used).into());
                    }
                    *money
                }
                _ => r.total_cents,
            };
            (Some(r.card_uid.clone()), Some(amount), details)
        }
        Operation::Recharge(r) => {
            let mut details = json!({ "mode": r.mode.as_str(), "payment_method": r.payment_method.as_str(), "terminal_seq": r.terminal_seq.get() });
            // The age flag a top-up sets is part of the audit trail, as the desk's is.
            if let (Some(flag), Some(m)) = (r.age_flag, details.as_object_mut()) {
                m.insert("age_flag".into(), flag.as_str().into());
            }
            (Some(r.card_uid.clone()), Some(r.amount_cents), details)
        }
        Operation::Return(r) => {
            let items: Vec<_> = r
                .items
                .iter()
                .map(|i| json!({ "product_id": i.product_id.as_str(), "quantity": i.quantity }))
                .collect();
            let details = json!({ "mode": r.mode.as_str(), "terminal_seq": r.terminal_seq.get(), "items": items });
            (Some(r.card_uid.clone()), Some(r.amount_cents), details)
        }
        Operation::VoucherGrant(r) => {
            let details = json!({ "mode": r.mode.as_str(), "terminal_seq": r.terminal_seq.get(), "units": r.units });
            (Some(r.card_uid.clone()), None, details)
        }
        Operation::Void(r) => {
            let mut details = json!({ "target_client_request_id": r.target_client_request_id, "reason": r.reason.as_str() });
            // Vouchers are not money: what a void gives back of them is in its details.
            if let (
                Some(Row::Void {
                    vouchers_returned, ..
                }),
                Some(m),
            ) = (applied.map(|a| &a.row), details.as_object_mut())
                && *vouchers_returned != 0
            {
                m.insert("vouchers_returned".into(), (*vouchers_returned).into());
            }
            (
                applied.and_then(|a| a.card_uid.clone()),
                applied.and_then(|a| a.amount),
                details,
            )
        }
    };
    let mut details = details;
    if let (Some(extra), Some(m)) = (
        declined.and_then(|d| d.details.clone()),
        details.as_object_mut(),
    ) {
        m.insert("decline".into(), extra);
    }
    LogEntry {
        staff_id: op.staff_id().clone(),
        operation: op.kind_str(),
        client_request_id: op.client_request_id(),
        transaction_id: applied.map(|a| a.transaction_id),
        card_uid,
        amount_cents: amount,
        outcome: applied.map_or("declined", |a| a.outcome),
        error_code: declined.map(|d| d.code),
        details: Some(details),
    }
}

/// Decides a shift close-out: key, then staff (it records what happened, like an offline
/// operation: the staff member must exist, whatever their role and even if deactivated
/// since), then its row, audit-log row and key (kept forever).
pub fn decide_shift<'a, R: Reads>(
    reads: &R,
    ctx: &Context<'_>,
    shift: &'a ShiftCloseout,
) -> Result<Plan<'a>, R::Error> {
    let crid = shift.client_request_id;
    let hash = request_sha256(ctx, shift)?;
    if let Some(known) = known_key(ctx, reads.stored_key(&crid)?, &hash)? {
        return Ok(Plan::Answer(Box::new(known)));
    }
    let staff = reads.staff(&shift.staff_id)?;
    if let Err(e) = rules::check_staff(staff.as_ref(), Action::CloseShift, Mode::Offline) {
        return Ok(Plan::Answer(Box::new(Outcome::declined(e, ctx.request_id))));
    }
    let difference = shift.difference().map_err(FlowError::new)?;
    let shift_id = new_transaction_id();
    let (opened_at, closed_at) = (format_time(shift.opened_at), format_time(shift.closed_at));
    let outcome = Outcome::approved(Answer::Shift(ShiftRecorded {
        shift_id,
        client_request_id: crid,
        terminal: ctx.terminal.name.clone(),
        staff_id: shift.staff_id.clone(),
        cash_cents: shift.cash_cents,
        card_cents: shift.card_cents,
        count: shift.count,
        counted_cash_cents: shift.counted_cash_cents,
        difference_cents: difference,
        recorded_at: format_time(ctx.now),
    }));
    let details = json!({
        "opened_at": opened_at,
        "closed_at": closed_at,
        "first_seq": shift.first_seq.map(|s| s.get()),
        "last_seq": shift.last_seq.map(|s| s.get()),
        "cash_cents": shift.cash_cents.get(),
        "card_cents": shift.card_cents.get(),
        "count": shift.count,
        "counted_cash_cents": shift.counted_cash_cents.get(),
        "difference_cents": difference.get(),
    });
    let answer = outcome::encode(&outcome.decided).map_err(FlowError::new)?;
    Ok(Plan::Write(Box::new(Writes {
        card: None,
        row: Row::Shift {
            shift_id,
            request: shift,
            difference,
        },
        postings: Vec::new(),
        log: LogEntry {
            staff_id: shift.staff_id.clone(),
            operation: "shift",
            client_request_id: crid,
            transaction_id: Some(shift_id),
            card_uid: None,
            amount_cents: None,
            outcome: "recorded",
            error_code: None,
            details: Some(details),
        },
        key: KeyRecord {
            client_request_id: crid,
            operation: "shift",
            request_sha256: hash,
            transaction_id: Some(shift_id),
            expires_at: None,
            answer,
        },
        terminal_seq: None,
        outcome,
    })))
}
