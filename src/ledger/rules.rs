//! The ledger's business rules, as pure functions.
//!
//! Architecture invariant: nothing here does IO or reads a clock. The store loads the state
//! (card, staff, catalog prices, stored idempotency record), calls these functions, and
//! writes what they decide. The SQLite and PostgreSQL backends share these rules, so they
//! decide the same way.

use crate::domain::{AgeFlag, Cents, MinAge, ProductId, VoucherLine, age_forbids, split_vouchers};
use crate::ledger::caller::StaffMember;
use crate::protocol::api::{
    ApiError, BlockReason, CARD_VOUCHER_UNITS_MAX, CardStatus, Flag, Mode, OrderRequest,
    RETURN_AMOUNT_CENTS_MAX, RechargeRequest, ReturnRequest, StaffRole, TerminalKind,
    VoucherGrantRequest,
};
use crate::protocol::codes::ErrorCode;
use serde_json::json;

/// A card as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardState {
    /// Current balance; may be negative after offline sales.
    pub balance: Cents,
    /// Active or blocked.
    pub status: CardStatus,
    /// Set when blocked.
    pub block_reason: Option<BlockReason>,
    /// What staff saw on the holder's ID; `None`: nobody said the holder is a minor.
    pub age_flag: Option<AgeFlag>,
    /// Voucher units on the card (staff and artist drinks); below zero only after offline
    /// use beyond them.
    pub vouchers: i64,
}

impl CardState {
    /// A card that was never seen: created with nothing on it.
    pub const NEW: CardState = CardState {
        balance: Cents::ZERO,
        status: CardStatus::Active,
        block_reason: None,
        age_flag: None,
        vouchers: 0,
    };
}

/// The configured top-up limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One top-up, at most.
    pub recharge_max: Cents,
    /// A card's balance after an online top-up, at most.
    pub balance_max: Cents,
}

/// What an accepted balance change does to the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceChange {
    /// True when the card did not exist.
    pub create_card: bool,
    /// Before.
    pub previous: CardState,
    /// After.
    pub next: CardState,
    /// Remarks for the answer.
    pub flags: Vec<Flag>,
}

/// What the API asks of a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sell.
    Order,
    /// Top up.
    Recharge,
    /// Void or refund.
    Void,
    /// Take returnable items back and credit their deposits.
    Return,
    /// Give a card voucher units (staff and artist drinks).
    GrantVouchers,
    /// Close out a shift (`POST /v1/shifts`): any terminal, any staff member who exists.
    CloseShift,
    /// Record the key a card was issued with (`PUT /v1/cards/{uid}/key`): checkpoints, where
    /// cards are issued.
    IssueCard,
}

/// Only bar terminals sell, only checkpoints top up and grant vouchers, bars and return
/// stations take returnable items back; every kind may void its own operations and close
/// out shifts.
pub fn check_terminal_kind(kind: TerminalKind, action: Action) -> Result<(), ApiError> {
    let refusal = match (kind, action) {
        (TerminalKind::Bar, Action::Recharge) => "a bar terminal cannot top up cards",
        (TerminalKind::Return, Action::Recharge) => "a return station cannot top up cards",
        (TerminalKind::Checkpoint, Action::Order) => "a checkpoint terminal cannot sell",
        (TerminalKind::Return, Action::Order) => "a return station cannot sell",
        (TerminalKind::Checkpoint, Action::Return) => {
            "a checkpoint terminal cannot take returnable items back"
        }
        (TerminalKind::Bar, Action::GrantVouchers) => "a bar terminal cannot grant vouchers",
        (TerminalKind::Return, Action::GrantVouchers) => "a return station cannot grant vouchers",
        (TerminalKind::Bar, Action::IssueCard) => "a bar terminal cannot issue cards",
        (TerminalKind::Return, Action::IssueCard) => "a return station cannot issue cards",
        _ => return Ok(()),
    };
    Err(ApiError::new(ErrorCode::Forbidden, refusal))
}

/// The staff member must exist and hold a role that allows the action. Online operations
/// also need an active staff member; an offline one already happened under a login that the
/// terminal checked, so a deactivation since then does not erase it. A shift close-out is
/// such a record of what happened (pass [`Mode::Offline`]): any role may close a shift.
pub fn check_staff(
    staff: Option<&StaffMember>,
    action: Action,
    mode: Mode,
) -> Result<(), ApiError> {
    let Some(staff) = staff else {
        return Err(ApiError::new(ErrorCode::Forbidden, "unknown staff member"));
    };
    if mode == Mode::Online && !staff.active {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "staff member is not active",
        ));
    }
    let allowed = match action {
        Action::Order | Action::Return => staff.role.may_work_at(TerminalKind::Bar),
        Action::Recharge | Action::IssueCard => staff.role.may_work_at(TerminalKind::Checkpoint),
        // Free drinks are a supervisor's decision, never a cashier's.
        Action::GrantVouchers => staff.role == StaffRole::Supervisor,
        Action::Void | Action::CloseShift => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a staff member with role {} may not do this",
                staff.role.as_str()
            ),
        ))
    }
}

/// The change that leaves `previous` at `balance`: the status that follows from it
/// ([`status_after`]) and, below zero, the `NEGATIVE_BALANCE` flag.
fn balance_change(
    create_card: bool,
    previous: CardState,
    balance: Cents,
    mut flags: Vec<Flag>,
) -> BalanceChange {
    if balance.is_negative() {
        flags.push(Flag::NegativeBalance);
    }
    BalanceChange {
        create_card,
        previous,
        next: status_after(previous, balance),
        flags,
    }
}

/// A card's status after its balance changed: below zero blocks it for debt; back at zero
/// or above lifts a debt block (never a lost-card block).
pub fn status_after(card: CardState, balance: Cents) -> CardState {
    if balance.is_negative() {
        let reason = match card.block_reason {
            Some(BlockReason::Lost) => BlockReason::Lost,
            _ => BlockReason::Debt,
        };
        return CardState {
            balance,
            status: CardStatus::Blocked,
            block_reason: Some(reason),
            ..card
        };
    }
    match card.block_reason {
        Some(BlockReason::Debt) | None => CardState {
            balance,
            status: CardStatus::Active,
            block_reason: None,
            ..card
        },
        Some(BlockReason::Lost) => CardState { balance, ..card },
    }
}

/// A card after an admin marks it lost (`true`: blocked as lost) or lifts that mark
/// (`false`): the lost block goes, and a debt block stays (or comes) if the card is in debt.
pub fn mark_lost(card: CardState, lost: bool) -> CardState {
    if lost {
        CardState {
            status: CardStatus::Blocked,
            block_reason: Some(BlockReason::Lost),
            ..card
        }
    } else {
        status_after(
            CardState {
                status: CardStatus::Active,
                block_reason: None,
                ..card
            },
            card.balance,
        )
    }
}

fn overflow(field: &str) -> ApiError {
    ApiError::with_details(
        ErrorCode::InvalidRequest,
        "the resulting balance is out of range",
        json!({ "field": field }),
    )
}

fn blocked(card: &CardState) -> ApiError {
    ApiError::with_details(
        ErrorCode::CardBlocked,
        "the card is blocked",
        json!({ "balance_cents": card.balance.get(), "status": card.status.as_str() }),
    )
}

/// What an order reads of a product on sale at its point of sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Its price now; 0 for an open price.
    pub price: Cents,
    /// Its VAT rate's name; `None`: the configuration's default.
    pub tax_rate: Option<String>,
    /// The age it requires, if any.
    pub min_age: Option<MinAge>,
    /// Set for an open price: the largest unit price staff may type.
    pub open_price_max: Option<Cents>,
    /// Voucher units one unit of it costs when paid with vouchers; `None`: money only.
    pub voucher_price: Option<i64>,
    /// A returnable item (a cup): its price is a deposit, owed back when it returns.
    pub returnable: bool,
}

impl CatalogEntry {
    /// True when a line may charge `unit_price`: the catalog's price, or for an open price
    /// 1 cent to its maximum.
    pub fn accepts(&self, unit_price: Cents) -> bool {
        match self.open_price_max {
            Some(max) => (Cents::new(1)..=max).contains(&unit_price),
            None => unit_price == self.price,
        }
    }

    /// The catalog's price to record beside a line that charged `unit_price`: `None` when
    /// the catalog accepts it; else the fixed price, or an open price's maximum.
    pub fn differs(&self, unit_price: Cents) -> Option<Cents> {
        if self.accepts(unit_price) {
            None
        } else {
            Some(self.open_price_max.unwrap_or(self.price))
        }
    }
}

/// An order's decision: the card's change, and how the order was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDecision {
    /// The card's balances (money and vouchers) before and after.
    pub change: BalanceChange,
    /// Per line, in the request's order: how many of its units vouchers paid.
    pub voucher_quantities: Vec<i64>,
    /// Voucher units used.
    pub vouchers_used: i64,
    /// Money charged: the total less what vouchers paid.
    pub money: Cents,
}

/// How vouchers pay an order, lines in order ("vouchers first"): each unit of a product
/// with a voucher price is paid with vouchers while `units` cover it. Returns, per line,
/// the quantity paid with vouchers, and the units used.
pub fn voucher_split<'c>(
    req: &OrderRequest,
    units: i64,
    catalog: impl Fn(&ProductId) -> Option<&'c CatalogEntry>,
) -> (Vec<i64>, i64) {
    let lines = req.items.iter().map(|item| VoucherLine {
        quantity: item.quantity,
        unit_price: item.unit_price_cents,
        voucher_price: catalog(&item.product_id).and_then(|e| e.voucher_price),
    });
    let split = split_vouchers(lines, units);
    (split.quantities, split.units)
}

/// Decides an order, in the contract's order: the card (unknown, blocked), each line's
/// product and price, the card's age flag against each product's age, vouchers, the balance.
/// Online, each check declines, and vouchers pay first, as far as the card has them;
/// offline (the terminal already sold) an unknown card is created, a product or price that
/// differs and a product the age flag forbids are flagged, the vouchers the terminal used
/// (`voucher_units`) are taken even past the card's (flagged), and the balance may go below
/// zero.
pub fn decide_order<'c>(
    req: &OrderRequest,
    card: Option<CardState>,
    catalog: impl Fn(&ProductId) -> Option<&'c CatalogEntry> + Copy,
) -> Result<OrderDecision, ApiError> {
    let mut flags = Vec::new();
    let previous = match (req.mode, card) {
        (_, Some(card)) => card,
        (Mode::Online, None) => {
            return Err(ApiError::new(
                ErrorCode::CardNotFound,
                "the ledger has never seen this card",
            ));
        }
        (Mode::Offline, None) => {
            flags.push(Flag::CardCreated);
            CardState::NEW
        }
    };
    let online = req.mode == Mode::Online;
    if online && previous.status == CardStatus::Blocked {
        return Err(blocked(&previous));
    }
    let mut price_differs = false;
    for item in &req.items {
        let entry = catalog(&item.product_id);
        if entry.is_some_and(|e| e.accepts(item.unit_price_cents)) {
            continue;
        }
        if !online {
            price_differs = true;
            continue;
        }
        return Err(match entry {
            None => ApiError::with_details(
                ErrorCode::UnknownProduct,
                format!("product {} is not on sale here", item.product_id),
                json!({ "product_id": item.product_id.as_str() }),
            ),
            Some(CatalogEntry {
                open_price_max: Some(max),
                ..
            }) => ApiError::with_details(
                ErrorCode::PriceMismatch,
                format!(
                    "product {} has an open price of 1 to {} cents",
                    item.product_id,
                    max.get()
                ),
                json!({
                    "product_id": item.product_id.as_str(),
                    "open_price_max_cents": max.get(),
                    "unit_price_cents": item.unit_price_cents.get(),
                }),
            ),
            Some(e) => ApiError::with_details(
                ErrorCode::PriceMismatch,
                format!("product {} costs {} now", item.product_id, e.price.get()),
                json!({
                    "product_id": item.product_id.as_str(),
                    "catalog_price_cents": e.price.get(),
                    "unit_price_cents": item.unit_price_cents.get(),
                }),
            ),
        });
    }
    if price_differs {
        flags.push(Flag::PriceDiffersFromCatalog);
    }
    let forbidden = req.items.iter().find_map(|item| {
        let min_age = catalog(&item.product_id)?.min_age;
        age_forbids(previous.age_flag, min_age).then_some((item, min_age?))
    });
    if let (Some((item, min_age)), Some(flag)) = (forbidden, previous.age_flag) {
        if online {
            return Err(ApiError::with_details(
                ErrorCode::AgeRestricted,
                format!(
                    "product {} is sold from age {min_age}, and the card's holder is {}",
                    item.product_id,
                    flag.as_str().replace('_', " ")
                ),
                json!({
                    "product_id": item.product_id.as_str(),
                    "min_age": min_age.years(),
                    "age_flag": flag.as_str(),
                }),
            ));
        }
        flags.push(Flag::AgeRestricted);
    }
    let available = if online {
        previous.vouchers
    } else {
        req.voucher_units.unwrap_or(0)
    };
    let (voucher_quantities, vouchers_used) = voucher_split(req, available, catalog);
    let mut voucher_value = Cents::ZERO;
    for (item, covered) in req.items.iter().zip(&voucher_quantities) {
        let value = item
            .unit_price_cents
            .checked_mul(*covered)
            .and_then(|v| voucher_value.checked_add(v))
            .map_err(|_| overflow("total_cents"))?;
        voucher_value = value;
    }
    let money = req
        .total_cents
        .checked_sub(voucher_value)
        .map_err(|_| overflow("total_cents"))?;
    let vouchers_left = previous.vouchers - vouchers_used;
    // Flagged when this order used vouchers the card did not have (not for every order of
    // a card still below zero from an earlier one).
    if vouchers_used > 0 && vouchers_left < 0 {
        flags.push(Flag::VouchersOverdrawn);
    }
    if online && previous.balance < money {
        return Err(ApiError::with_details(
            ErrorCode::InsufficientFunds,
            "the card's balance is too low",
            json!({ "balance_cents": previous.balance.get() }),
        ));
    }
    let balance = previous
        .balance
        .checked_sub(money)
        .map_err(|_| overflow("total_cents"))?;
    let mut change = balance_change(card.is_none(), previous, balance, flags);
    change.next.vouchers = vouchers_left;
    Ok(OrderDecision {
        change,
        voucher_quantities,
        vouchers_used,
        money,
    })
}

/// Decides a top-up. Unknown cards are created; a lost card is refused online; an offline
/// top-up (cash already taken) is applied past the limits and flagged. A top-up that names
/// an age flag sets it on the card (staff saw the holder's ID at the checkpoint).
pub fn decide_recharge(
    req: &RechargeRequest,
    card: Option<CardState>,
    limits: Limits,
) -> Result<BalanceChange, ApiError> {
    let mut change = credit(card, req.amount_cents, limits, req.mode, "amount_cents")?;
    if let Some(flag) = req.age_flag {
        change.next.age_flag = Some(flag);
    }
    Ok(change)
}

/// A deposit return's decision: the card's change, and per line the catalog's deposit
/// when the terminal credited another (offline only; `None` when they agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnDecision {
    /// The card's balance before and after.
    pub change: BalanceChange,
    /// Per line, in the request's order: the catalog's deposit when it differs.
    pub catalog_deposits: Vec<Option<Cents>>,
}

/// Decides a deposit return: each line must be a returnable item at the terminal's point
/// of sale, credited at its catalog price (the deposit); then the credit, as a top-up's
/// (unknown cards created, a lost card refused online, the balance maximum refused online
/// and flagged offline). There is no per-operation limit besides `RETURN_AMOUNT_CENTS_MAX`:
/// the items are in staff's hands. Offline (the terminal already credited), an item the
/// catalog does not take back, or takes back at another deposit, is applied at the
/// terminal's amount and flagged `PRICE_DIFFERS_FROM_CATALOG`.
pub fn decide_return<'c>(
    req: &ReturnRequest,
    card: Option<CardState>,
    catalog: impl Fn(&ProductId) -> Option<&'c CatalogEntry>,
    limits: Limits,
) -> Result<ReturnDecision, ApiError> {
    let mut catalog_deposits = Vec::with_capacity(req.items.len());
    for item in &req.items {
        let entry = catalog(&item.product_id).filter(|e| e.returnable);
        let differs = match entry {
            Some(e) if e.price == item.unit_deposit_cents => None,
            Some(e) => Some(e.price),
            None => Some(Cents::ZERO),
        };
        if req.mode == Mode::Online {
            match (entry, differs) {
                (None, _) => {
                    return Err(ApiError::with_details(
                        ErrorCode::UnknownProduct,
                        format!("product {} is not a returnable item here", item.product_id),
                        json!({ "product_id": item.product_id.as_str() }),
                    ));
                }
                (Some(e), Some(_)) => {
                    return Err(ApiError::with_details(
                        ErrorCode::PriceMismatch,
                        format!(
                            "the deposit of {} is {} now",
                            item.product_id,
                            e.price.get()
                        ),
                        json!({
                            "product_id": item.product_id.as_str(),
                            "catalog_price_cents": e.price.get(),
                            "unit_deposit_cents": item.unit_deposit_cents.get(),
                        }),
                    ));
                }
                (Some(_), None) => {}
            }
        }
        catalog_deposits.push(differs);
    }
    let limits = Limits {
        // The request's own bound (RETURN_AMOUNT_CENTS_MAX) is the only one per return.
        recharge_max: Cents::new(RETURN_AMOUNT_CENTS_MAX),
        ..limits
    };
    let mut change = credit(card, req.amount_cents, limits, req.mode, "amount_cents")?;
    if catalog_deposits.iter().any(Option::is_some) {
        change.flags.push(Flag::PriceDiffersFromCatalog);
    }
    Ok(ReturnDecision {
        change,
        catalog_deposits,
    })
}

/// `card`, or a new one (flagged `CARD_CREATED`) when the ledger has never seen it: what a
/// credit (a top-up, a deposit return, a Stripe credit) and a voucher grant start from.
fn card_or_new(card: Option<CardState>, flags: &mut Vec<Flag>) -> CardState {
    card.unwrap_or_else(|| {
        flags.push(Flag::CardCreated);
        CardState::NEW
    })
}

/// Decides a voucher grant: the units go onto the card (created if unknown). Online, a lost
/// card is refused (`CARD_BLOCKED`), and so is a card that would hold more than
/// `CARD_VOUCHER_UNITS_MAX` (`LIMIT_EXCEEDED`); offline (the supervisor already told the
/// holder) it is applied and flagged `LIMIT_EXCEEDED`. The balance does not change: vouchers
/// are never money.
pub fn decide_voucher_grant(
    req: &VoucherGrantRequest,
    card: Option<CardState>,
) -> Result<BalanceChange, ApiError> {
    let mut flags = Vec::new();
    let previous = card_or_new(card, &mut flags);
    let vouchers = previous
        .vouchers
        .checked_add(req.units)
        .ok_or_else(|| overflow("units"))?;
    let over = vouchers > CARD_VOUCHER_UNITS_MAX;
    match req.mode {
        Mode::Online => {
            if previous.block_reason == Some(BlockReason::Lost) {
                return Err(blocked(&previous));
            }
            if over {
                return Err(ApiError::with_details(
                    ErrorCode::LimitExceeded,
                    "the card would hold more voucher units than allowed",
                    json!({ "limit": "voucher_units_max", "limit_units": CARD_VOUCHER_UNITS_MAX,
                            "voucher_units": previous.vouchers }),
                ));
            }
        }
        Mode::Offline if over => flags.push(Flag::LimitExceeded),
        Mode::Offline => {}
    }
    Ok(BalanceChange {
        create_card: card.is_none(),
        previous,
        next: CardState {
            vouchers,
            ..previous
        },
        flags,
    })
}

/// Whether recording master key version `new` for a card changes its record: `recorded` is
/// the version it holds (`None`: a UID-only card, or a card not seen yet), `replaced_by` the
/// card that replaced it. The same version again changes nothing (issuing is repeated
/// safely); a newer one replaces it (a card re-issued under a newer master key); an older
/// one, or a replaced card, is refused with the reason.
pub fn card_key_change(
    recorded: Option<u8>,
    replaced_by: Option<&str>,
    new: u8,
) -> Result<bool, String> {
    if let Some(by) = replaced_by {
        return Err(format!(
            "the card was replaced by card {by}: issue and use the new card"
        ));
    }
    match recorded {
        Some(v) if v > new => Err(format!(
            "the card is recorded as issued with key version {v}, newer than {new}: a card is \
             never issued back to an older key"
        )),
        Some(v) => Ok(v != new),
        None => Ok(true),
    }
}

/// The desk's grant (`cashless ledger voucher grant`): the card's voucher units after it, or
/// why not: a card holds at most `CARD_VOUCHER_UNITS_MAX`, as after an online grant.
pub fn desk_voucher_grant(card: CardState, units: i64) -> Result<i64, String> {
    card.vouchers
        .checked_add(units)
        .filter(|v| *v <= CARD_VOUCHER_UNITS_MAX)
        .ok_or_else(|| {
            format!(
                "the card holds {} voucher units; {units} more would pass the maximum of \
                 {CARD_VOUCHER_UNITS_MAX}",
                card.vouchers
            )
        })
}

/// The desk sets a card's daily allowance (`cashless ledger voucher daily`): with `units`,
/// the card holds exactly them for the rest of the day, as if the day had just started
/// (what it had left is not added: an allowance is not saved up); 0 ends the allowance and
/// leaves the card's units as they are.
pub fn daily_vouchers_set(card: CardState, units: i64) -> CardState {
    if units > 0 {
        CardState {
            vouchers: units,
            ..card
        }
    } else {
        card
    }
}

/// Cards a new festival day renews in one transaction, at most.
pub const VOUCHER_DAY_BATCH: u32 = 1_000;

/// Credits `amount` to `card` (created if unknown). Online, a lost card and amounts past
/// the limits are refused; otherwise (the money was already taken) it is applied past the
/// limits and flagged. An overflow is a 400 on `field`.
fn credit(
    card: Option<CardState>,
    amount: Cents,
    limits: Limits,
    mode: Mode,
    field: &str,
) -> Result<BalanceChange, ApiError> {
    let mut flags = Vec::new();
    let previous = card_or_new(card, &mut flags);
    let balance = previous
        .balance
        .checked_add(amount)
        .map_err(|_| overflow(field))?;
    let over_recharge = amount > limits.recharge_max;
    let over_balance = balance > limits.balance_max;
    match mode {
        Mode::Online => {
            if previous.block_reason == Some(BlockReason::Lost) {
                return Err(blocked(&previous));
            }
            if over_recharge {
                return Err(ApiError::with_details(
                    ErrorCode::LimitExceeded,
                    "the top-up is larger than allowed",
                    json!({ "limit": "recharge_max_cents", "limit_cents": limits.recharge_max.get(),
                            "amount_cents": amount.get() }),
                ));
            }
            if over_balance {
                return Err(ApiError::with_details(
                    ErrorCode::LimitExceeded,
                    "the card's balance would exceed the maximum",
                    json!({ "limit": "balance_max_cents", "limit_cents": limits.balance_max.get(),
                            "balance_cents": previous.balance.get() }),
                ));
            }
        }
        Mode::Offline => {
            if over_recharge || over_balance {
                flags.push(Flag::LimitExceeded);
            }
        }
    }
    Ok(balance_change(card.is_none(), previous, balance, flags))
}

/// Decides an online top-up paid through Stripe: the attendee has paid, so it is always
/// credited (an unknown card is created, a lost card keeps its block, a debt block lifts when
/// the balance is back at zero or above); going past the checkpoint limits is flagged, not
/// refused, since refusing would not give the money back.
pub fn decide_stripe_credit(
    card: Option<CardState>,
    amount: Cents,
    limits: Limits,
) -> Result<BalanceChange, ApiError> {
    // The rules of a top-up whose money was already taken: an offline one.
    credit(card, amount, limits, Mode::Offline, "amount_total")
}

/// Reverses an applied operation: `delta` is what goes back to the card (positive for an
/// order, negative for a top-up). A reversal may drive the card below zero (the top-up's
/// money was spent): the card is then blocked for debt like after offline sales. `vouchers`
/// go back to the card (what a voided order used).
pub fn decide_reversal(
    card: CardState,
    delta: Cents,
    vouchers: i64,
) -> Result<BalanceChange, ApiError> {
    let balance = card
        .balance
        .checked_add(delta)
        .map_err(|_| overflow("target_client_request_id"))?;
    let mut next = status_after(card, balance);
    next.vouchers = card.vouchers.saturating_add(vouchers);
    let flags = if balance.is_negative() {
        vec![Flag::NegativeBalance]
    } else {
        Vec::new()
    };
    Ok(BalanceChange {
        create_card: false,
        previous: card,
        next,
        flags,
    })
}

/// What is known of an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Never seen: process the request.
    Fresh,
    /// Seen with this very request: return the stored answer.
    Replay,
    /// Seen with another request: refuse.
    Reused,
}

/// Compares a stored request fingerprint with the incoming one.
pub fn check_key(stored_request_sha256: Option<&str>, request_sha256: &str) -> KeyCheck {
    match stored_request_sha256 {
        None => KeyCheck::Fresh,
        Some(stored) if stored == request_sha256 => KeyCheck::Replay,
        Some(_) => KeyCheck::Reused,
    }
}

/// The error for a reused key.
pub fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "this client_request_id was used before for a different request",
    )
}

/// What a card replacement moves, and the two cards after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardMove {
    /// The replaced card: nothing left on it, blocked as lost for good.
    pub old: CardState,
    /// The replacement, with the old card's balance and voucher units added.
    pub new: CardState,
    /// The balance moved (below zero: a debt moved onto the replacement).
    pub amount: Cents,
    /// The voucher units moved (below zero only after offline use beyond them).
    pub vouchers: i64,
}

/// How many replacements in a row are followed, at most: a chain longer than that (or a
/// loop, which the rules never make) is refused for a person to look at.
pub const REPLACEMENT_CHAIN_MAX: usize = 32;

/// What replacing card `old` by `new` is: the first replacement of `old` (`true`, onto
/// `new`), or a settling of one made before (`false`) onto the card at the end of `old`'s
/// chain of replacements (`old_chain`: the card that replaced `old`, the one that replaced
/// that, ...), which `new` must be on. A replacement made onto a card that was itself
/// replaced later (A by B, then B by C) settles onto C: what lands on A late is never
/// stranded. Returns the card the move goes to, or why it cannot be done.
pub fn replacement_target(
    old: &str,
    new: &str,
    old_chain: &[String],
    new_replaced_by: Option<&str>,
) -> Result<(bool, String), String> {
    if old == new {
        return Err(format!(
            "card {old} cannot replace itself: name the new card"
        ));
    }
    match old_chain {
        [] => match new_replaced_by {
            None => Ok((true, new.to_owned())),
            Some(by) => Err(format!(
                "card {new} was itself replaced by {by}: replace {old} by {by}"
            )),
        },
        [first, ..] => match old_chain.last() {
            Some(end) if old_chain.iter().any(|c| c == new) => Ok((false, end.clone())),
            _ => Err(format!(
                "card {old} was already replaced by {first}{}",
                match old_chain.last() {
                    Some(end) if end != first => format!(" (its balance now goes to {end})"),
                    _ => String::new(),
                }
            )),
        },
    }
}

/// Refuses a first replacement onto a card that already holds money or voucher units
/// unless `merge` says so: a new card from the desk's stock is empty, and one that is not is
/// most likely another attendee's card, typed by mistake (the move cannot be undone).
pub fn merge_refusal(first: bool, new: Option<&CardState>, merge: bool) -> Result<(), String> {
    match new {
        Some(card) if first && !merge && (card.balance.get() != 0 || card.vouchers != 0) => {
            Err(format!(
                "the new card already holds {} and {} voucher units: if it is the same \
                 attendee's, pass --merge to add the old card's to it",
                card.balance, card.vouchers
            ))
        }
        _ => Ok(()),
    }
}

/// The stricter of two age flags (the one that refuses more products).
fn stricter_age(a: Option<AgeFlag>, b: Option<AgeFlag>) -> Option<AgeFlag> {
    match (a, b) {
        (Some(AgeFlag::Under16), _) | (_, Some(AgeFlag::Under16)) => Some(AgeFlag::Under16),
        (Some(x), _) | (None, Some(x)) => Some(x),
        (None, None) => None,
    }
}

/// A lost or broken card replaced by `new` (`cashless ledger card replace`), or settled
/// again later when offline sales made on it before terminals learned of the block arrive:
/// its balance and voucher units move to the replacement (a debt too, which then blocks the
/// replacement for debt as any debt does); the old card ends at zero, blocked as lost. The
/// replacement takes the stricter of the two age flags. A replacement itself blocked as
/// lost cannot take a card over.
pub fn move_to_replacement(old: CardState, new: CardState) -> Result<CardMove, String> {
    if new.block_reason == Some(BlockReason::Lost) {
        return Err("the new card is blocked as lost: replace it with a card in use".into());
    }
    let amount = old.balance;
    let balance = new
        .balance
        .checked_add(amount)
        .map_err(|_| "the new card's balance would be out of range".to_owned())?;
    let vouchers = new
        .vouchers
        .checked_add(old.vouchers)
        .ok_or_else(|| "the new card's voucher units would be out of range".to_owned())?;
    Ok(CardMove {
        old: CardState {
            balance: Cents::ZERO,
            status: CardStatus::Blocked,
            block_reason: Some(BlockReason::Lost),
            vouchers: 0,
            ..old
        },
        new: status_after(
            CardState {
                vouchers,
                age_flag: stricter_age(new.age_flag, old.age_flag),
                ..new
            },
            balance,
        ),
        amount,
        vouchers: old.vouchers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CardUid, ClientRequestId, StaffId, TerminalSeq};
    use crate::protocol::api::StaffRole;
    use crate::protocol::api::{OrderItem, PaymentMethod};
    use chrono::Utc;

    const LIMITS: Limits = Limits {
        recharge_max: Cents::new(50_000),
        balance_max: Cents::new(100_000),
    };

    fn card(balance: i64, reason: Option<BlockReason>) -> CardState {
        let status = if reason.is_some() {
            CardStatus::Blocked
        } else {
            CardStatus::Active
        };
        CardState {
            balance: Cents::new(balance),
            status,
            block_reason: reason,
            age_flag: None,
            vouchers: 0,
        }
    }

    #[test]
    fn card_keys_move_up_only_and_repeat_safely() {
        assert_eq!(card_key_change(None, None, 1), Ok(true));
        assert_eq!(card_key_change(Some(1), None, 1), Ok(false));
        assert_eq!(card_key_change(Some(1), None, 2), Ok(true));
        let older = card_key_change(Some(3), None, 2).unwrap_err();
        assert!(older.contains("key version 3"), "{older}");
        let replaced = card_key_change(None, Some("04AA"), 1).unwrap_err();
        assert!(replaced.contains("replaced by card 04AA"), "{replaced}");
        assert!(check_terminal_kind(TerminalKind::Checkpoint, Action::IssueCard).is_ok());
        assert!(check_terminal_kind(TerminalKind::Bar, Action::IssueCard).is_err());
        assert!(check_terminal_kind(TerminalKind::Return, Action::IssueCard).is_err());
    }
    #[test]
    fn marking_lost_blocks_and_lifting_it_keeps_a_debt_block() {
        use BlockReason::{Debt, Lost};
        for (before, lost, after) in [
            (card(500, None), true, card(500, Some(Lost))),
            (card(-100, Some(Debt)), true, card(-100, Some(Lost))),
            (card(500, Some(Lost)), false, card(500, None)),
            (card(-100, Some(Lost)), false, card(-100, Some(Debt))),
            (card(0, Some(Lost)), false, card(0, None)),
            (card(500, None), false, card(500, None)),
            (card(-100, Some(Debt)), false, card(-100, Some(Debt))),
        ] {
            assert_eq!(mark_lost(before, lost), after, "{before:?} lost={lost}");
        }
    }

    fn order(total: i64, price: i64, mode: Mode) -> OrderRequest {
        OrderRequest {
            client_request_id: ClientRequestId::new_random(),
            terminal_seq: TerminalSeq::new(1).unwrap(),
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            items: vec![OrderItem {
                product_id: ProductId::parse("beer").unwrap(),
                quantity: total / price,
                unit_price_cents: Cents::new(price),
            }],
            total_cents: Cents::new(total),
            staff_id: StaffId::parse("s").unwrap(),
            created_at: Utc::now(),
            mode,
            voucher_units: None,
        }
    }

    fn recharge(amount: i64, mode: Mode) -> RechargeRequest {
        RechargeRequest {
            client_request_id: ClientRequestId::new_random(),
            terminal_seq: TerminalSeq::new(1).unwrap(),
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            amount_cents: Cents::new(amount),
            payment_method: PaymentMethod::Cash,
            staff_id: StaffId::parse("s").unwrap(),
            created_at: Utc::now(),
            mode,
            age_flag: None,
        }
    }

    fn beer_at(price: i64) -> impl Fn(&ProductId) -> Option<&'static CatalogEntry> + Copy {
        product("beer", price, None, None)
    }

    /// One product on sale, for the test's lifetime (leaked: a few bytes per test).
    fn product(
        id: &'static str,
        price: i64,
        min_age: Option<MinAge>,
        open_price_max: Option<i64>,
    ) -> impl Fn(&ProductId) -> Option<&'static CatalogEntry> + Copy {
        let entry: &'static CatalogEntry = Box::leak(Box::new(CatalogEntry {
            price: Cents::new(price),
            tax_rate: None,
            min_age,
            open_price_max: open_price_max.map(Cents::new),
            voucher_price: None,
            returnable: false,
        }));
        move |p: &ProductId| (p.as_str() == id).then_some(entry)
    }

    fn code<T>(r: Result<T, ApiError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn online_orders_decline_in_the_documented_order() {
        let cases: Vec<(Option<CardState>, i64, Option<ErrorCode>)> = vec![
            (Some(card(900, None)), 450, None),
            (
                Some(card(899, None)),
                450,
                Some(ErrorCode::InsufficientFunds),
            ),
            (None, 450, Some(ErrorCode::CardNotFound)),
            (
                Some(card(9000, Some(BlockReason::Lost))),
                450,
                Some(ErrorCode::CardBlocked),
            ),
            (
                Some(card(-5, Some(BlockReason::Debt))),
                450,
                Some(ErrorCode::CardBlocked),
            ),
            (Some(card(9000, None)), 500, Some(ErrorCode::PriceMismatch)),
        ];
        for (c, catalog, expected) in cases {
            assert_eq!(
                code(decide_order(
                    &order(900, 450, Mode::Online),
                    c,
                    beer_at(catalog)
                )),
                expected
            );
        }
        let unknown = decide_order(
            &order(900, 450, Mode::Online),
            Some(card(9000, None)),
            |_| None,
        );
        assert_eq!(code(unknown), Some(ErrorCode::UnknownProduct));
    }

    #[test]
    fn vouchers_pay_lines_in_order_while_they_cover_a_whole_unit() {
        let beer: &'static CatalogEntry = Box::leak(Box::new(CatalogEntry {
            price: Cents::new(450),
            tax_rate: None,
            min_age: None,
            open_price_max: None,
            voucher_price: Some(1),
            returnable: false,
        }));
        let cocktail: &'static CatalogEntry = Box::leak(Box::new(CatalogEntry {
            voucher_price: Some(2),
            returnable: false,
            price: Cents::new(900),
            ..beer.clone()
        }));
        let water: &'static CatalogEntry = Box::leak(Box::new(CatalogEntry {
            voucher_price: None,
            returnable: false,
            price: Cents::new(200),
            ..beer.clone()
        }));
        let catalog = move |p: &ProductId| match p.as_str() {
            "beer" => Some(beer),
            "cocktail" => Some(cocktail),
            "water" => Some(water),
            _ => None,
        };
        let mut req = order(450, 450, Mode::Online);
        let line = |id: &str, quantity: i64, price: i64| OrderItem {
            product_id: ProductId::parse(id).unwrap(),
            quantity,
            unit_price_cents: Cents::new(price),
        };
        req.items = vec![
            line("cocktail", 1, 900),
            line("water", 2, 200),
            line("beer", 3, 450),
        ];
        // (units available, per-line quantities paid, units used)
        let cases = [
            (0, vec![0, 0, 0], 0),
            (1, vec![0, 0, 1], 1),
            (2, vec![1, 0, 0], 2),
            (3, vec![1, 0, 1], 3),
            (9, vec![1, 0, 3], 5),
            (-4, vec![0, 0, 0], 0),
        ];
        for (units, quantities, used) in cases {
            assert_eq!(
                voucher_split(&req, units, catalog),
                (quantities, used),
                "{units}"
            );
        }
        // Online the card's pay, and the balance check is on the money left.
        req.total_cents = Cents::new(900 + 400 + 1350);
        let mut staff = card(400, None);
        staff.vouchers = 5;
        let d = decide_order(&req, Some(staff), catalog).unwrap();
        assert_eq!((d.vouchers_used, d.money), (5, Cents::new(400)));
        assert_eq!(
            (d.change.next.vouchers, d.change.next.balance),
            (0, Cents::ZERO)
        );
        // Offline the terminal's word is taken, even past the card's: flagged.
        req.mode = Mode::Offline;
        req.voucher_units = Some(2);
        staff.vouchers = 1;
        let d = decide_order(&req, Some(staff), catalog).unwrap();
        assert_eq!((d.vouchers_used, d.money), (2, Cents::new(400 + 1350)));
        assert_eq!(d.change.next.vouchers, -1);
        assert!(d.change.flags.contains(&Flag::VouchersOverdrawn));
    }

    #[test]
    fn exact_balance_is_enough_and_leaves_zero() {
        let change = decide_order(
            &order(900, 450, Mode::Online),
            Some(card(900, None)),
            beer_at(450),
        )
        .unwrap()
        .change;
        assert_eq!(change.next, card(0, None));
        assert!(change.flags.is_empty());
    }

    #[test]
    fn offline_orders_always_apply_and_block_on_debt() {
        let change = decide_order(&order(900, 450, Mode::Offline), None, |_| None)
            .unwrap()
            .change;
        assert!(change.create_card);
        assert_eq!(change.next, card(-900, Some(BlockReason::Debt)));
        assert_eq!(
            change.flags,
            vec![
                Flag::CardCreated,
                Flag::PriceDiffersFromCatalog,
                Flag::NegativeBalance
            ]
        );
        let lost = decide_order(
            &order(900, 450, Mode::Offline),
            Some(card(100, Some(BlockReason::Lost))),
            beer_at(450),
        )
        .unwrap()
        .change;
        assert_eq!(lost.next, card(-800, Some(BlockReason::Lost)));
    }

    #[test]
    fn recharges_respect_limits_online_and_flag_them_offline() {
        let cases: Vec<(Option<CardState>, i64, Mode, Option<ErrorCode>)> = vec![
            (None, 50_000, Mode::Online, None),
            (None, 50_001, Mode::Online, Some(ErrorCode::LimitExceeded)),
            (Some(card(60_000, None)), 40_000, Mode::Online, None),
            (
                Some(card(60_001, None)),
                40_000,
                Mode::Online,
                Some(ErrorCode::LimitExceeded),
            ),
            (
                Some(card(0, Some(BlockReason::Lost))),
                100,
                Mode::Online,
                Some(ErrorCode::CardBlocked),
            ),
            (
                Some(card(-100, Some(BlockReason::Debt))),
                100,
                Mode::Online,
                None,
            ),
            (Some(card(99_000, None)), 50_001, Mode::Offline, None),
        ];
        for (c, amount, mode, expected) in cases {
            assert_eq!(
                code(decide_recharge(&recharge(amount, mode), c, LIMITS)),
                expected,
                "{c:?} {amount}"
            );
        }
        let flagged = decide_recharge(&recharge(50_001, Mode::Offline), None, LIMITS).unwrap();
        assert_eq!(flagged.flags, vec![Flag::CardCreated, Flag::LimitExceeded]);
    }

    #[test]
    fn a_top_up_to_zero_lifts_a_debt_block_but_not_a_lost_block() {
        let debt = decide_recharge(
            &recharge(100, Mode::Online),
            Some(card(-100, Some(BlockReason::Debt))),
            LIMITS,
        )
        .unwrap();
        assert_eq!(debt.next, card(0, None));
        let still = decide_recharge(
            &recharge(50, Mode::Online),
            Some(card(-100, Some(BlockReason::Debt))),
            LIMITS,
        )
        .unwrap();
        assert_eq!(still.next, card(-50, Some(BlockReason::Debt)));
        let lost = decide_recharge(
            &recharge(50, Mode::Offline),
            Some(card(0, Some(BlockReason::Lost))),
            LIMITS,
        )
        .unwrap();
        assert_eq!(lost.next, card(50, Some(BlockReason::Lost)));
    }

    #[test]
    fn reversals_can_create_debt() {
        let r = decide_reversal(card(300, None), Cents::new(-500), 0).unwrap();
        assert_eq!(r.next, card(-200, Some(BlockReason::Debt)));
        assert_eq!(r.flags, vec![Flag::NegativeBalance]);
        let refund =
            decide_reversal(card(-200, Some(BlockReason::Debt)), Cents::new(900), 0).unwrap();
        assert_eq!(refund.next, card(700, None));
        assert_eq!(
            code(decide_reversal(card(i64::MAX, None), Cents::new(1), 0)),
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn staff_and_terminal_permissions() {
        use Action::*;
        use Mode::{Offline, Online};
        use StaffRole::{Bar, Cashier, Supervisor};
        let m = |role, active| Some(StaffMember { role, active });
        // (staff, action, mode, allowed)
        let cases = [
            (m(Bar, true), Order, Online, true),
            (m(Cashier, true), Order, Online, false),
            (m(Cashier, true), Recharge, Online, true),
            (m(Bar, true), Recharge, Offline, false),
            (m(Supervisor, true), Recharge, Online, true),
            (m(Bar, false), Order, Online, false),
            (m(Bar, false), Order, Offline, true),
            (m(Cashier, true), Void, Offline, true),
            (None, Void, Offline, false),
            (m(Bar, false), CloseShift, Offline, true),
            (m(Cashier, true), CloseShift, Offline, true),
            (None, CloseShift, Offline, false),
        ];
        for (staff, action, mode, ok) in cases {
            assert_eq!(
                check_staff(staff.as_ref(), action, mode).is_ok(),
                ok,
                "{staff:?} {action:?} {mode:?}"
            );
        }
        assert!(check_terminal_kind(TerminalKind::Bar, Action::Recharge).is_err());
        assert!(check_terminal_kind(TerminalKind::Checkpoint, Action::Order).is_err());
        assert!(check_terminal_kind(TerminalKind::Checkpoint, Action::Void).is_ok());
        assert!(check_terminal_kind(TerminalKind::Bar, Action::CloseShift).is_ok());
        assert!(check_terminal_kind(TerminalKind::Checkpoint, Action::CloseShift).is_ok());
    }

    #[test]
    fn keys_replay_only_the_same_request() {
        assert_eq!(check_key(None, "a"), KeyCheck::Fresh);
        assert_eq!(check_key(Some("a"), "a"), KeyCheck::Replay);
        assert_eq!(check_key(Some("a"), "b"), KeyCheck::Reused);
    }

    #[test]
    fn a_replacement_takes_the_balance_the_vouchers_and_a_debt() {
        let old = CardState {
            vouchers: 3,
            age_flag: Some(AgeFlag::Under16),
            ..card(1_250, None)
        };
        let m = move_to_replacement(old, CardState::NEW).unwrap();
        assert_eq!((m.amount, m.vouchers), (Cents::new(1_250), 3));
        assert_eq!(
            m.old,
            CardState {
                vouchers: 0,
                age_flag: Some(AgeFlag::Under16),
                ..card(0, Some(BlockReason::Lost))
            }
        );
        assert_eq!(
            m.new,
            CardState {
                vouchers: 3,
                age_flag: Some(AgeFlag::Under16),
                ..card(1_250, None)
            }
        );

        // Later, an offline sale made on the old card arrives: its debt follows.
        let late = CardState {
            balance: Cents::new(-400),
            ..m.old
        };
        let settled = move_to_replacement(late, m.new).unwrap();
        assert_eq!(settled.amount, Cents::new(-400));
        assert_eq!(settled.new.balance, Cents::new(850));
        assert_eq!(settled.old.balance, Cents::ZERO);
        // A debt larger than the replacement's balance blocks it for debt.
        let big = CardState {
            balance: Cents::new(-2_000),
            ..m.old
        };
        let settled = move_to_replacement(big, m.new).unwrap();
        assert_eq!(
            settled.new,
            CardState {
                vouchers: 3,
                age_flag: Some(AgeFlag::Under16),
                ..card(-750, Some(BlockReason::Debt))
            }
        );
        // A replacement lost itself takes nothing over.
        assert!(move_to_replacement(old, card(0, Some(BlockReason::Lost))).is_err());
    }

    #[test]
    fn a_card_is_replaced_once_then_settled_to_the_end_of_its_chain() {
        let chain = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            replacement_target("A", "B", &[], None),
            Ok((true, "B".into()))
        );
        assert_eq!(
            replacement_target("A", "B", &chain(&["B"]), None),
            Ok((false, "B".into()))
        );
        // A by B, then B by C: A's late sales go to C, named as B or as C.
        for named in ["B", "C"] {
            assert_eq!(
                replacement_target("A", named, &chain(&["B", "C"]), None),
                Ok((false, "C".into()))
            );
        }
        let err = replacement_target("A", "D", &chain(&["B", "C"]), None).unwrap_err();
        assert!(
            err.contains("already replaced by B (its balance now goes to C)"),
            "{err}"
        );
        let err = replacement_target("A", "B", &[], Some("C")).unwrap_err();
        assert!(err.contains("itself replaced by C"), "{err}");
        assert!(
            replacement_target("A", "A", &[], None)
                .unwrap_err()
                .contains("itself")
        );
    }

    #[test]
    fn the_stricter_age_flag_wins() {
        use AgeFlag::{Under16, Under18};
        assert_eq!(stricter_age(Some(Under18), Some(Under16)), Some(Under16));
        assert_eq!(stricter_age(Some(Under16), Some(Under18)), Some(Under16));
        assert_eq!(stricter_age(None, Some(Under18)), Some(Under18));
        assert_eq!(stricter_age(None, None), None);
    }

    #[test]
    fn a_card_with_money_on_it_takes_another_over_only_with_merge() {
        let full = card(500, None);
        assert!(
            merge_refusal(true, Some(&full), false)
                .unwrap_err()
                .contains("--merge")
        );
        assert_eq!(merge_refusal(true, Some(&full), true), Ok(()));
        assert_eq!(merge_refusal(true, Some(&CardState::NEW), false), Ok(()));
        assert_eq!(merge_refusal(true, None, false), Ok(()));
        // Settling moves onto the card chosen before.
        assert_eq!(merge_refusal(false, Some(&full), false), Ok(()));
    }
}
