//! Operations and shift close-outs in the SQLite store: the flow's reads
//! ([`crate::ledger::flow::Reads`]) on the writer's connection, and the execution of its
//! plans, inside the writer's savepoint.

use super::{
    SqliteStore, TerminalKey, exec_cached, flags_json, internal, load_card, parse_stored, post,
    write_card,
};
use crate::domain::{
    AgeFlag, CardUid, Cents, ClientRequestId, MinAge, ProductId, StaffId, TerminalSeq,
};
use crate::ledger::caller::StaffMember;
use crate::ledger::caller::Terminal;
use crate::ledger::flow::ops::decide_shift;
use crate::ledger::flow::{
    self, Balances, CatalogEntry, Context, FlowError, KeyRecord, LogEntry, Plan, Reads, Row,
    StoredKey, Target, TargetKind, VoidTarget, Writes,
};
use crate::ledger::outcome::{Outcome, StoredAnswer};
use crate::ledger::rules::CardState;
use crate::ledger::store::{OperationStore, StoreError, not_stored, token_sha256};
use crate::protocol::api::{Mode, Operation, PaymentMethod, ShiftCloseout, StaffRole, format_time};
use crate::protocol::codes::ErrorCode;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

impl From<FlowError> for StoreError {
    fn from(e: FlowError) -> StoreError {
        StoreError::Internal(e.0)
    }
}

/// The flow's reads on one connection (the writer's, inside its savepoint).
pub(super) struct SqlReads<'c>(pub(super) &'c Connection);

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(internal)
}

impl Reads for SqlReads<'_> {
    type Error = StoreError;

    fn stored_key(&self, crid: &ClientRequestId) -> Result<Option<StoredKey>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT request_sha256, operation, status_code, response_body FROM idempotency_keys
                 WHERE client_request_id = ?1",
            )?
            .query_row([crid.to_string()], |r| {
                Ok(StoredKey {
                    request_sha256: r.get(0)?,
                    operation: r.get(1)?,
                    answer: StoredAnswer {
                        status_code: r.get(2)?,
                        body: r.get(3)?,
                    },
                })
            })
            .optional()?)
    }

    fn voided_by(&self, crid: &ClientRequestId, terminal_id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT 1 FROM voids WHERE target_client_request_id = ?1 AND terminal_id = ?2",
            )?
            .query_row([crid.to_string(), terminal_id.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn staff(&self, id: &StaffId) -> Result<Option<StaffMember>, StoreError> {
        let row: Option<(String, bool)> = self
            .0
            .prepare_cached("SELECT role, active FROM staff WHERE staff_id = ?1")?
            .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(role, active)| {
            Ok(StaffMember {
                role: parse_stored(&role, StaffRole::parse)?,
                active,
            })
        })
        .transpose()
    }

    fn card(&self, uid: &CardUid) -> Result<Option<CardState>, StoreError> {
        load_card(self.0, uid)
    }

    fn catalog_product(
        &self,
        point_of_sale: &str,
        product: &ProductId,
    ) -> Result<Option<(CatalogEntry, bool)>, StoreError> {
        self.0
            .prepare_cached(
                "SELECT price_cents, tax_rate, min_age, open_price_max_cents, voucher_price,
                        returnable, active
                 FROM products WHERE point_of_sale = ?1 AND product_id = ?2",
            )?
            .query_row([point_of_sale, product.as_str()], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, bool>(5)?,
                    row.get::<_, bool>(6)?,
                ))
            })
            .optional()?
            .map(
                |(price, tax_rate, min_age, open_max, voucher_price, returnable, active)| {
                    Ok::<_, StoreError>((
                        CatalogEntry {
                            price: Cents::new(price),
                            tax_rate,
                            min_age: min_age.map(MinAge::new).transpose().map_err(internal)?,
                            open_price_max: open_max.map(Cents::new),
                            voucher_price,
                            returnable,
                        },
                        active,
                    ))
                },
            )
            .transpose()
    }

    fn void_target(&self, crid: &ClientRequestId) -> Result<VoidTarget, StoreError> {
        let key: Option<(String, String)> = self
            .0
            .prepare_cached(
                "SELECT operation, transaction_id FROM idempotency_keys
                 WHERE client_request_id = ?1 AND transaction_id IS NOT NULL",
            )?
            .query_row([crid.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((operation, transaction_id)) = key else {
            return Ok(VoidTarget::NotApplied);
        };
        let sql = match operation.as_str() {
            // An order written before vouchers has no money_cents: it charged its total.
            "order" => {
                "SELECT terminal_id, point_of_sale, card_uid, COALESCE(money_cents, total_cents),
                        'order', voucher_units
                 FROM bar_orders WHERE transaction_id = ?1"
            }
            "recharge" => {
                "SELECT terminal_id, point_of_sale, card_uid, amount_cents, payment_method, 0
                 FROM recharges WHERE transaction_id = ?1"
            }
            "return" => {
                "SELECT terminal_id, point_of_sale, card_uid, amount_cents, 'return', 0
                 FROM deposit_returns WHERE transaction_id = ?1"
            }
            // A grant moved no money: only its units, which the void takes back.
            "voucher_grant" => {
                "SELECT terminal_id, point_of_sale, card_uid, 0, 'voucher_grant', units
                 FROM voucher_grants WHERE transaction_id = ?1"
            }
            "shift" => return Ok(VoidTarget::Shift),
            _ => return Ok(VoidTarget::Void),
        };
        type TargetRow = (String, String, String, i64, String, Option<i64>);
        let (terminal_id, point_of_sale, card_uid, amount, kind, vouchers): TargetRow = self
            .0
            .prepare_cached(sql)?
            .query_row([&transaction_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()?
            .ok_or_else(|| {
                internal(format!(
                    "key {crid} names transaction {transaction_id}, which is missing"
                ))
            })?;
        let kind = match kind.as_str() {
            "order" => TargetKind::Order,
            "return" => TargetKind::Return,
            "voucher_grant" => TargetKind::VoucherGrant,
            "card" => TargetKind::Recharge(PaymentMethod::Card),
            _ => TargetKind::Recharge(PaymentMethod::Cash),
        };
        let postings = self
            .0
            .prepare_cached(
                "SELECT account, amount_cents FROM postings WHERE transaction_id = ?1
                 ORDER BY posting_id",
            )?
            .query_map([&transaction_id], |r| {
                Ok((r.get::<_, String>(0)?, Cents::new(r.get(1)?)))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VoidTarget::Applied(Target {
            kind,
            postings,
            transaction_id: parse_uuid(&transaction_id)?,
            terminal_id: parse_uuid(&terminal_id)?,
            point_of_sale,
            card_uid: CardUid::parse(&card_uid).map_err(internal)?,
            amount: Cents::new(amount),
            vouchers: vouchers.unwrap_or(0),
        }))
    }
}

/// Carries out a plan inside the writer's savepoint and returns its answer.
pub(super) fn carry_out(
    conn: &Connection,
    ctx: &Context<'_>,
    plan: Plan<'_>,
) -> Result<Outcome, StoreError> {
    match plan {
        Plan::Answer(outcome) => Ok(*outcome),
        Plan::Write(writes) => {
            write(conn, ctx, &writes)?;
            Ok(writes.outcome)
        }
    }
}

/// One operation inside the writer's savepoint: decided by the flow, then written.
pub(super) fn process(
    conn: &Connection,
    ctx: &Context<'_>,
    op: &Operation,
) -> Result<Outcome, StoreError> {
    let plan = flow::ops::decide_operation(&SqlReads(conn), ctx, op)?;
    carry_out(conn, ctx, plan)
}

/// The operations of one request, each all-or-nothing on its own.
pub(super) fn apply_all(
    conn: &Connection,
    ctx: &Context<'_>,
    operations: &[Operation],
) -> Result<Vec<Outcome>, StoreError> {
    if let [op] = operations {
        // Alone, the operation is the job: the job's savepoint makes it all-or-nothing.
        return Ok(vec![process(conn, ctx, op)?]);
    }
    let mut outcomes = Vec::with_capacity(operations.len());
    for op in operations {
        // Each operation of a batch is all-or-nothing on its own.
        exec_cached(conn, "SAVEPOINT op")?;
        match process(conn, ctx, op) {
            Ok(outcome) => {
                exec_cached(conn, "RELEASE op")?;
                outcomes.push(outcome);
            }
            Err(e) => {
                exec_cached(conn, "ROLLBACK TO op")?;
                exec_cached(conn, "RELEASE op")?;
                outcomes.push(not_stored(&e, op, ctx.request_id));
            }
        }
    }
    Ok(outcomes)
}

/// The [`MoneyRow`] of an order or top-up request `$r`.
macro_rules! money_row {
    ($r:expr, $transaction_id:expr, $amount:expr, $method:expr, $balances:expr) => {
        MoneyRow {
            transaction_id: $transaction_id,
            client_request_id: $r.client_request_id,
            terminal_seq: $r.terminal_seq,
            card_uid: &$r.card_uid,
            staff_id: &$r.staff_id,
            amount: $amount,
            topup: $method,
            order: None,
            mode: $r.mode,
            balances: $balances,
            created_at: $r.created_at,
        }
    };
}

/// Writes a plan: card, rows, postings, audit log, key, `terminal_seq`.
fn write(conn: &Connection, ctx: &Context<'_>, w: &Writes<'_>) -> Result<(), StoreError> {
    let now = format_time(ctx.now);
    let terminal_id = ctx.terminal.terminal_id.to_string();
    if let Some(card) = &w.card {
        write_card(conn, &card.uid, card.create, &card.next, &now)?;
    }
    match &w.row {
        Row::None => {}
        Row::Order {
            transaction_id,
            request: r,
            balances,
            lines,
            vouchers_used,
            money,
        } => {
            let mut row = money_row!(r, *transaction_id, r.total_cents, None, balances);
            row.order = Some((*vouchers_used, *money));
            insert_money_row(conn, ctx, &now, &row)?;
            let mut stmt = conn.prepare_cached(
                "INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity, unit_price_cents,
                     catalog_price_cents, line_total_cents, tax_rate, tax_rate_basis_points,
                     net_cents, tax_cents, voucher_quantity, voucher_units, deposit)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for (line_no, (item, line)) in r.items.iter().zip(lines).enumerate() {
                stmt.execute(params![
                    transaction_id.to_string(),
                    i64::try_from(line_no).map_err(internal)?,
                    item.product_id.as_str(),
                    item.quantity,
                    item.unit_price_cents.get(),
                    line.catalog_price_differs.map(Cents::get),
                    line.line_total.get(),
                    line.tax_rate.name.as_str(),
                    line.tax_rate.basis_points,
                    line.net.get(),
                    line.tax.get(),
                    line.voucher_quantity,
                    line.voucher_units,
                    line.deposit.is_some(),
                ])?;
            }
        }
        Row::Return {
            transaction_id,
            request: r,
            balances,
            catalog_deposits,
        } => {
            conn.prepare_cached(
                "INSERT INTO deposit_returns (transaction_id, client_request_id, terminal_id, terminal_seq,
                     point_of_sale, card_uid, staff_id, amount_cents, mode, flags,
                     previous_balance_cents, new_balance_cents, created_at, processed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                transaction_id.to_string(),
                r.client_request_id.to_string(),
                terminal_id,
                r.terminal_seq.get(),
                ctx.terminal.point_of_sale,
                r.card_uid.as_str(),
                r.staff_id.as_str(),
                r.amount_cents.get(),
                r.mode.as_str(),
                flags_json(&balances.flags)?,
                balances.previous.get(),
                balances.next.get(),
                format_time(r.created_at),
                now
            ])?;
            let mut stmt = conn.prepare_cached(
                "INSERT INTO deposit_return_items (transaction_id, line_no, product_id, quantity,
                     unit_deposit_cents, catalog_deposit_cents, line_total_cents)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (line_no, (item, differs)) in r.items.iter().zip(catalog_deposits).enumerate() {
                stmt.execute(params![
                    transaction_id.to_string(),
                    i64::try_from(line_no).map_err(internal)?,
                    item.product_id.as_str(),
                    item.quantity,
                    item.unit_deposit_cents.get(),
                    differs.map(Cents::get),
                    item.unit_deposit_cents
                        .checked_mul(item.quantity)
                        .map_err(internal)?
                        .get(),
                ])?;
            }
        }
        Row::VoucherGrant {
            transaction_id,
            request: r,
            voucher_units,
            flags,
        } => {
            conn.prepare_cached(
                "INSERT INTO voucher_grants (transaction_id, client_request_id, terminal_id, terminal_seq,
                     point_of_sale, card_uid, staff_id, units, mode, flags, previous_voucher_units,
                     new_voucher_units, created_at, processed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                transaction_id.to_string(),
                r.client_request_id.to_string(),
                terminal_id,
                r.terminal_seq.get(),
                ctx.terminal.point_of_sale,
                r.card_uid.as_str(),
                r.staff_id.as_str(),
                r.units,
                r.mode.as_str(),
                flags_json(flags)?,
                voucher_units.0,
                voucher_units.1,
                format_time(r.created_at),
                now
            ])?;
        }
        Row::Recharge {
            transaction_id,
            request: r,
            balances,
        } => {
            let method = Some((r.payment_method, r.age_flag));
            let money = money_row!(r, *transaction_id, r.amount_cents, method, balances);
            insert_money_row(conn, ctx, &now, &money)?;
        }
        Row::Void {
            transaction_id,
            request: r,
            target,
            reversal,
            ..
        } => {
            if let Some((kind, target_tx)) = target {
                let sql = match kind {
                    TargetKind::Order => {
                        "UPDATE bar_orders SET voided_by = ?2 WHERE transaction_id = ?1"
                    }
                    TargetKind::Recharge(_) => {
                        "UPDATE recharges SET voided_by = ?2 WHERE transaction_id = ?1"
                    }
                    TargetKind::Return => {
                        "UPDATE deposit_returns SET voided_by = ?2 WHERE transaction_id = ?1"
                    }
                    TargetKind::VoucherGrant => {
                        "UPDATE voucher_grants SET voided_by = ?2 WHERE transaction_id = ?1"
                    }
                };
                conn.prepare_cached(sql)?.execute(params![
                    target_tx.to_string(),
                    r.client_request_id.to_string()
                ])?;
            }
            let target_kind = target.map(|(k, _)| k.as_str());
            let balances = reversal.as_ref().map(|x| &x.2);
            let flags = balances.map(|b| b.flags.as_slice()).unwrap_or_default();
            conn.prepare_cached(
                "INSERT INTO voids (transaction_id, client_request_id, terminal_id, terminal_seq, target_client_request_id,
                     target_kind, staff_id, reason, status, card_uid, refunded_cents, previous_balance_cents,
                     new_balance_cents, flags, created_at, processed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(params![
                transaction_id.to_string(),
                r.client_request_id.to_string(),
                terminal_id,
                r.terminal_seq.get(),
                r.target_client_request_id.to_string(),
                target_kind,
                r.staff_id.as_str(),
                r.reason.as_str(),
                w.log.outcome,
                reversal.as_ref().map(|x| x.0.as_str()),
                reversal.as_ref().map(|x| x.1.get()),
                balances.map(|b| b.previous.get()),
                balances.map(|b| b.next.get()),
                flags_json(flags)?,
                format_time(r.created_at),
                now
            ])?;
        }
        Row::Shift {
            shift_id,
            request: shift,
            difference,
        } => {
            conn.prepare_cached(
                "INSERT INTO shift_closeouts (shift_id, client_request_id, terminal_id, staff_id, opened_at,
                     closed_at, first_seq, last_seq, cash_cents, card_cents, count, counted_cash_cents,
                     difference_cents, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                shift_id.to_string(),
                shift.client_request_id.to_string(),
                terminal_id,
                shift.staff_id.as_str(),
                format_time(shift.opened_at),
                format_time(shift.closed_at),
                shift.first_seq.map(TerminalSeq::get),
                shift.last_seq.map(TerminalSeq::get),
                shift.cash_cents.get(),
                shift.card_cents.get(),
                shift.count,
                shift.counted_cash_cents.get(),
                difference.get(),
                now
            ])?;
        }
    }
    if let Some(tx) = w.log.transaction_id.filter(|_| !w.postings.is_empty()) {
        post(conn, &tx, &w.postings, &now)?;
    }
    insert_log(conn, ctx, &w.log)?;
    insert_key(conn, ctx, &w.key)?;
    if let Some(seq) = w.terminal_seq {
        record_seq(conn, ctx, seq.get())?;
    }
    Ok(())
}

/// The row of an order (`bar_orders`) or a top-up (`recharges`, with its payment method).
struct MoneyRow<'r> {
    transaction_id: Uuid,
    client_request_id: ClientRequestId,
    terminal_seq: TerminalSeq,
    card_uid: &'r CardUid,
    staff_id: &'r StaffId,
    amount: Cents,
    /// A top-up's payment method and the age flag it set.
    topup: Option<(PaymentMethod, Option<AgeFlag>)>,
    /// An order's voucher units used and money charged.
    order: Option<(i64, Cents)>,
    mode: Mode,
    balances: &'r Balances,
    created_at: DateTime<Utc>,
}

fn insert_money_row(
    conn: &Connection,
    ctx: &Context<'_>,
    now: &str,
    row: &MoneyRow<'_>,
) -> Result<(), StoreError> {
    let mut values: Vec<Value> = vec![
        row.transaction_id.to_string().into(),
        row.client_request_id.to_string().into(),
        ctx.terminal.terminal_id.to_string().into(),
        row.terminal_seq.get().into(),
        ctx.terminal.point_of_sale.clone().into(),
        row.card_uid.as_str().to_owned().into(),
        row.staff_id.as_str().to_owned().into(),
        row.amount.get().into(),
        row.mode.as_str().to_owned().into(),
        flags_json(&row.balances.flags)?.into(),
        row.balances.previous.get().into(),
        row.balances.next.get().into(),
        format_time(row.created_at).into(),
        now.to_owned().into(),
    ];
    let sql = match row.topup {
        None => {
            let (vouchers, money) = row.order.unwrap_or((0, row.amount));
            values.push(vouchers.into());
            values.push(money.get().into());
            "INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq, point_of_sale,
                 card_uid, staff_id, total_cents, mode, flags, previous_balance_cents, new_balance_cents,
                 created_at, processed_at, voucher_units, money_cents)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        }
        Some((method, age_flag)) => {
            values.insert(8, method.as_str().to_owned().into());
            values.push(age_flag.map(|f| f.as_str().to_owned()).into());
            "INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq, point_of_sale,
                 card_uid, staff_id, amount_cents, payment_method, mode, flags, previous_balance_cents,
                 new_balance_cents, created_at, processed_at, age_flag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        }
    };
    conn.prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

fn insert_log(conn: &Connection, ctx: &Context<'_>, row: &LogEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation, client_request_id,
             transaction_id, card_uid, amount_cents, outcome, error_code, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        format_time(ctx.now),
        ctx.request_id,
        format!("terminal:{}", ctx.terminal.name),
        row.staff_id.as_str(),
        row.operation,
        row.client_request_id.to_string(),
        row.transaction_id.map(|t| t.to_string()),
        row.card_uid.as_ref().map(CardUid::as_str),
        row.amount_cents.map(Cents::get),
        row.outcome,
        row.error_code.map(ErrorCode::as_str),
        row.details.as_ref().map(ToString::to_string)
    ])?;
    Ok(())
}

fn insert_key(conn: &Connection, ctx: &Context<'_>, key: &KeyRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
             status_code, response_body, transaction_id, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        key.client_request_id.to_string(),
        ctx.terminal.terminal_id.to_string(),
        key.operation,
        key.request_sha256,
        key.answer.status_code,
        key.answer.body,
        key.transaction_id.map(|t| t.to_string()),
        format_time(ctx.now),
        key.expires_at.map(format_time)
    ])?;
    Ok(())
}

/// The new highest contiguous sequence number after receiving `seq`, given the received
/// numbers above the old mark (sorted ascending).
pub fn advance_contiguous(contiguous: i64, seq: i64, above: &[i64]) -> i64 {
    if seq != contiguous + 1 {
        return contiguous;
    }
    let mut mark = seq;
    for &s in above {
        if s == mark + 1 {
            mark = s;
        } else if s > mark + 1 {
            break;
        }
    }
    mark
}

fn record_seq(conn: &Connection, ctx: &Context<'_>, seq: i64) -> Result<(), StoreError> {
    let id = ctx.terminal.terminal_id.to_string();
    // The usual case in one statement: a terminal in step sends the next number, and
    // nothing was received above it.
    let in_step = conn
        .prepare_cached(
            "UPDATE terminals SET highest_contiguous_seq = ?2, highest_seen_seq = ?2, last_seen_at = ?3
             WHERE terminal_id = ?1 AND highest_contiguous_seq = ?2 - 1 AND highest_seen_seq < ?2",
        )?
        .execute(params![id, seq, format_time(ctx.now)])?;
    if in_step == 1 {
        return Ok(());
    }
    let (contiguous, seen): (i64, i64) = conn
        .prepare_cached(
            "SELECT highest_contiguous_seq, highest_seen_seq FROM terminals WHERE terminal_id = ?1",
        )?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut mark = contiguous;
    if seq == contiguous + 1 {
        let above: Vec<i64> = conn
            .prepare_cached(
                "SELECT terminal_seq FROM terminal_seqs WHERE terminal_id = ?1 AND terminal_seq > ?2
                 ORDER BY terminal_seq LIMIT 10000",
            )?
            .query_map(params![id, seq], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        mark = advance_contiguous(contiguous, seq, &above);
        conn.prepare_cached(
            "DELETE FROM terminal_seqs WHERE terminal_id = ?1 AND terminal_seq <= ?2",
        )?
        .execute(params![id, mark])?;
    } else if seq > contiguous {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO terminal_seqs (terminal_id, terminal_seq) VALUES (?1, ?2)",
        )?
        .execute(params![id, seq])?;
    }
    conn.prepare_cached(
        "UPDATE terminals SET highest_contiguous_seq = ?2, highest_seen_seq = ?3, last_seen_at = ?4
         WHERE terminal_id = ?1",
    )?
    .execute(params![id, mark, seen.max(seq), format_time(ctx.now)])?;
    Ok(())
}

impl OperationStore for SqliteStore {
    async fn authenticate(&self, token: &str) -> Result<Option<Terminal>, StoreError> {
        self.terminal_by(TerminalKey::TokenSha256, token_sha256(token))
            .await
    }

    async fn apply(
        &self,
        terminal: Terminal,
        request_id: String,
        operations: Vec<Operation>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.write_as(terminal, request_id, move |conn, ctx| {
            apply_all(conn, ctx, &operations)
        })
        .await
    }

    async fn record_shift(
        &self,
        terminal: Terminal,
        request_id: String,
        shift: ShiftCloseout,
    ) -> Result<Outcome, StoreError> {
        self.write_as(terminal, request_id, move |conn, ctx| {
            let plan = decide_shift(&SqlReads(conn), ctx, &shift)?;
            carry_out(conn, ctx, plan)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_mark_advances_over_received_numbers() {
        let cases: &[(i64, i64, &[i64], i64)] = &[
            (0, 1, &[], 1),
            (0, 2, &[], 0),
            (0, 1, &[2, 3, 5], 3),
            (3, 4, &[5, 6, 7], 7),
            (3, 3, &[5], 3),
            (3, 9, &[], 3),
        ];
        for &(contiguous, seq, above, expected) in cases {
            assert_eq!(
                advance_contiguous(contiguous, seq, above),
                expected,
                "{contiguous} {seq} {above:?}"
            );
        }
    }
}
