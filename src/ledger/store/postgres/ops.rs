//! Operations and shift close-outs in the PostgreSQL store: one call of a stored procedure
//! each (`migrations/postgres/0005_operations.sql`), which checks, decides and writes in one
//! transaction and returns the answer's status and exact body. What is pure and the same in
//! both backends is computed here: the request's fingerprint (`flow::ops::request_sha256`),
//! the new transaction id, `now` (to the millisecond, as SQLite keeps it) and when a
//! decline's key expires.
//!
//! A batch's calls go out pipelined on one connection: sent back to back without waiting,
//! run by the server one after another in the batch's order, each its own transaction with
//! its own outcome.

use super::admin::TerminalKey;
use super::{PgStore, classify};
use crate::domain::{AgeFlag, Cents, ProductId};
use crate::ledger::caller::Terminal;
use crate::ledger::flow::ops::request_sha256;
use crate::ledger::flow::{Context, new_transaction_id};
use crate::ledger::outcome::{self, Outcome, StoredAnswer};
use crate::ledger::store::{OperationStore, StoreError, not_stored, token_sha256};
use crate::protocol::api::{CARD_VOUCHER_UNITS_MAX, Operation, ShiftCloseout, format_time};
use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::types::ToSql;

/// The first seven arguments of every procedure: `ledger_call` (0005).
const CALL: &str = "ROW($1, $2, $3, $4, $5, $6, $7)::ledger_call";

fn order_sql() -> String {
    format!(
        "SELECT o_status, o_body, o_replayed FROM sp_process_bar_order({CALL}, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
    )
}

fn recharge_sql() -> String {
    format!(
        "SELECT o_status, o_body, o_replayed FROM sp_process_checkpoint_recharge({CALL}, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    )
}

fn void_sql() -> String {
    format!(
        "SELECT o_status, o_body, o_replayed FROM sp_process_void({CALL}, \
         $8, $9, $10, $11, $12, $13)"
    )
}

fn return_sql() -> String {
    format!(
        "SELECT o_status, o_body, o_replayed FROM sp_process_deposit_return({CALL}, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    )
}

fn voucher_grant_sql() -> String {
    format!(
        "SELECT o_status, o_body, o_replayed FROM sp_process_voucher_grant({CALL}, \
         $8, $9, $10, $11, $12, $13, $14, $15)"
    )
}

fn shift_sql() -> String {
    format!(
        "SELECT o_status, o_body, o_replayed FROM sp_record_shift({CALL}, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    )
}

/// A time as both backends keep it: to the millisecond.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

/// The arguments of one procedure call, owned, so that a batch's calls can be pipelined.
struct Call {
    /// Which procedure (`order`, `recharge`, `return`, `voucher_grant`, `void`, `shift`),
    /// for messages.
    operation: &'static str,
    sql: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Call {
    /// The `ledger_call` arguments; the operation's own follow.
    fn new(
        operation: &'static str,
        sql: String,
        ctx: &Context<'_>,
        request_sha256: String,
        decline_expires_at: DateTime<Utc>,
    ) -> Call {
        Call {
            operation,
            sql,
            args: vec![
                Box::new(ctx.terminal.terminal_id),
                Box::new(ctx.request_id.to_owned()),
                Box::new(ctx.now),
                Box::new(format_time(ctx.now)),
                Box::new(new_transaction_id()),
                Box::new(request_sha256),
                Box::new(decline_expires_at),
            ],
        }
    }

    fn arg(mut self, value: impl ToSql + Sync + Send + 'static) -> Call {
        self.args.push(Box::new(value));
        self
    }
}

/// Product ids, quantities and unit prices: an order's or a return's lines as the procedures
/// take them, three arrays in line order.
type LineArrays = (Vec<String>, Vec<i32>, Vec<i64>);

/// The [`LineArrays`] of `lines`.
fn line_arrays<'a>(
    lines: impl Iterator<Item = (&'a ProductId, i64, Cents)>,
) -> Result<LineArrays, StoreError> {
    let mut arrays = (Vec::new(), Vec::new(), Vec::new());
    for (product, quantity, price) in lines {
        arrays.0.push(product.as_str().to_owned());
        arrays.1.push(
            i32::try_from(quantity)
                .map_err(|e| StoreError::Internal(format!("quantity out of range: {e}")))?,
        );
        arrays.2.push(price.get());
    }
    Ok(arrays)
}

/// The call of one operation.
fn operation_call(ctx: &Context<'_>, op: &Operation) -> Result<Call, StoreError> {
    let hash = request_sha256(ctx, op)?;
    let expires = ctx.now + chrono::Duration::days(ctx.retention_days);
    Ok(match op {
        Operation::Order(r) => {
            let (products, quantities, prices) = line_arrays(
                r.items
                    .iter()
                    .map(|i| (&i.product_id, i.quantity, i.unit_price_cents)),
            )?;
            Call::new("order", order_sql(), ctx, hash, expires)
                .arg(r.client_request_id.as_uuid())
                .arg(r.terminal_seq.get())
                .arg(r.card_uid.as_str().to_owned())
                .arg(r.staff_id.as_str().to_owned())
                .arg(r.mode.as_str())
                .arg(r.total_cents.get())
                .arg(millis(r.created_at))
                .arg(products)
                .arg(quantities)
                .arg(prices)
                .arg(
                    ctx.taxes
                        .iter()
                        .map(|t| t.name.to_string())
                        .collect::<Vec<String>>(),
                )
                .arg(
                    ctx.taxes
                        .iter()
                        .map(|t| i32::try_from(t.basis_points).unwrap_or(i32::MAX))
                        .collect::<Vec<i32>>(),
                )
                .arg(ctx.taxes.default_rate().to_string())
                .arg(r.voucher_units)
        }
        Operation::Recharge(r) => Call::new("recharge", recharge_sql(), ctx, hash, expires)
            .arg(r.client_request_id.as_uuid())
            .arg(r.terminal_seq.get())
            .arg(r.card_uid.as_str().to_owned())
            .arg(r.staff_id.as_str().to_owned())
            .arg(r.mode.as_str())
            .arg(r.amount_cents.get())
            .arg(r.payment_method.as_str())
            .arg(millis(r.created_at))
            .arg(ctx.limits.recharge_max.get())
            .arg(ctx.limits.balance_max.get())
            .arg(r.age_flag.map(AgeFlag::as_str)),
        Operation::Void(r) => Call::new("void", void_sql(), ctx, hash, expires)
            .arg(r.client_request_id.as_uuid())
            .arg(r.terminal_seq.get())
            .arg(r.target_client_request_id.as_uuid())
            .arg(r.staff_id.as_str().to_owned())
            .arg(r.reason.as_str())
            .arg(millis(r.created_at)),
        Operation::Return(r) => {
            let (products, quantities, deposits) = line_arrays(
                r.items
                    .iter()
                    .map(|i| (&i.product_id, i.quantity, i.unit_deposit_cents)),
            )?;
            Call::new("return", return_sql(), ctx, hash, expires)
                .arg(r.client_request_id.as_uuid())
                .arg(r.terminal_seq.get())
                .arg(r.card_uid.as_str().to_owned())
                .arg(r.staff_id.as_str().to_owned())
                .arg(r.mode.as_str())
                .arg(r.amount_cents.get())
                .arg(millis(r.created_at))
                .arg(products)
                .arg(quantities)
                .arg(deposits)
                .arg(ctx.limits.balance_max.get())
        }
        Operation::VoucherGrant(r) => {
            Call::new("voucher_grant", voucher_grant_sql(), ctx, hash, expires)
                .arg(r.client_request_id.as_uuid())
                .arg(r.terminal_seq.get())
                .arg(r.card_uid.as_str().to_owned())
                .arg(r.staff_id.as_str().to_owned())
                .arg(r.mode.as_str())
                .arg(r.units)
                .arg(millis(r.created_at))
                .arg(CARD_VOUCHER_UNITS_MAX)
        }
    })
}

/// The call of a shift close-out.
fn shift_call(ctx: &Context<'_>, shift: &ShiftCloseout) -> Result<Call, StoreError> {
    let hash = request_sha256(ctx, shift)?;
    let expires = ctx.now + chrono::Duration::days(ctx.retention_days);
    Ok(Call::new("shift", shift_sql(), ctx, hash, expires)
        .arg(shift.client_request_id.as_uuid())
        .arg(shift.staff_id.as_str().to_owned())
        .arg(millis(shift.opened_at))
        .arg(format_time(shift.opened_at))
        .arg(millis(shift.closed_at))
        .arg(format_time(shift.closed_at))
        .arg(shift.first_seq.map(|s| s.get()))
        .arg(shift.last_seq.map(|s| s.get()))
        .arg(shift.cash_cents.get())
        .arg(shift.card_cents.get())
        .arg(shift.count)
        .arg(shift.counted_cash_cents.get()))
}

/// Runs one call, its statement prepared, on `client` and reads its answer. The request goes
/// out when the future is first polled: futures polled in order send in order.
async fn run(
    client: &deadpool_postgres::Client,
    statement: &tokio_postgres::Statement,
    call: &Call,
) -> Result<Outcome, StoreError> {
    let args: Vec<&(dyn ToSql + Sync)> = call
        .args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let row = client.query_one(statement, &args).await.map_err(classify)?;
    let status: i32 = row.get(0);
    let stored = StoredAnswer {
        status_code: u16::try_from(status)
            .map_err(|_| StoreError::Internal(format!("status {status} from the database")))?,
        body: row.get(1),
    };
    let decided = outcome::decode(call.operation, &stored)
        .map_err(|e| StoreError::Internal(format!("answer from the database: {e}")))?;
    Ok(Outcome {
        decided,
        replayed: row.get(2),
    })
}

/// The prepared statement of each call (from the connection's cache after the first time).
/// Prepared before any call is sent, so that no call waits for a statement while a later
/// one overtakes it.
async fn prepare(
    client: &deadpool_postgres::Client,
    calls: &[Call],
) -> Result<Vec<tokio_postgres::Statement>, StoreError> {
    let mut statements = Vec::with_capacity(calls.len());
    for call in calls {
        statements.push(client.prepare_cached(&call.sql).await.map_err(classify)?);
    }
    Ok(statements)
}

impl PgStore {
    fn context<'a>(&'a self, terminal: &'a Terminal, request_id: &'a str) -> Context<'a> {
        Context {
            terminal,
            request_id,
            now: millis(Utc::now()),
            limits: self.options.limits,
            retention_days: self.options.retention_days,
            taxes: &self.options.taxes,
        }
    }
}

impl OperationStore for PgStore {
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
        let ctx = self.context(&terminal, &request_id);
        let calls = operations
            .iter()
            .map(|op| operation_call(&ctx, op))
            .collect::<Result<Vec<Call>, StoreError>>()?;
        self.bounded(move |client| {
            Box::pin(async move {
                let statements = prepare(client, &calls).await?;
                if let ([call], [statement]) = (calls.as_slice(), statements.as_slice()) {
                    // Alone, the operation is the request: a failure is the request's (503 or
                    // 500).
                    return Ok(vec![run(client, statement, call).await?]);
                }
                // Sent back to back on one connection, in the batch's order (join_all polls
                // its futures in order); the server runs them one after another, each call
                // its own transaction.
                let results = futures_util::future::join_all(
                    calls
                        .iter()
                        .zip(&statements)
                        .map(|(call, statement)| run(client, statement, call)),
                )
                .await;
                Ok(results
                    .into_iter()
                    .zip(&operations)
                    .map(|(result, op)| result.unwrap_or_else(|e| not_stored(&e, op, &request_id)))
                    .collect())
            })
        })
        .await
    }

    async fn record_shift(
        &self,
        terminal: Terminal,
        request_id: String,
        shift: ShiftCloseout,
    ) -> Result<Outcome, StoreError> {
        let ctx = self.context(&terminal, &request_id);
        let call = shift_call(&ctx, &shift)?;
        self.bounded(move |client| {
            Box::pin(async move {
                let statements = prepare(client, std::slice::from_ref(&call)).await?;
                run(client, &statements[0], &call).await
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::codes::ErrorCode;

    /// Every HTTP status the procedures write comes from `ledger_http_status`, whose table
    /// must be the code table of `crate::protocol::codes`, and `ledger_is_stored_decline`
    /// must name exactly the stored declines.
    #[test]
    fn the_procedures_know_every_codes_status_and_the_stored_declines() {
        // The latest definitions: ledger_http_status of 0023, ledger_is_stored_decline of 0010
        // (which replaced those of 0005).
        let sql = include_str!("../../../../migrations/postgres/0010_what_festivals_sell.sql");
        let table = include_str!("../../../../migrations/postgres/0023_card_keys.sql")
            .split("FUNCTION ledger_http_status")
            .nth(1)
            .and_then(|rest| rest.split("END").next())
            .expect("ledger_http_status in 0023");
        let mut listed = Vec::new();
        for line in table.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("WHEN '") {
                let (code, rest) = rest.split_once('\'').expect("a quoted code");
                let status: u16 = rest
                    .trim()
                    .trim_start_matches("THEN")
                    .trim()
                    .parse()
                    .unwrap();
                listed.push((code.to_owned(), status));
            }
        }
        let expected: Vec<(String, u16)> = ErrorCode::api_codes()
            .map(|c| (c.as_str().to_owned(), c.http_status().unwrap()))
            .collect();
        assert_eq!(listed, expected);

        let stored = sql
            .split("FUNCTION ledger_is_stored_decline")
            .nth(1)
            .and_then(|rest| rest.split("$$;").next())
            .expect("ledger_is_stored_decline in 0010");
        for code in ErrorCode::api_codes() {
            assert_eq!(
                stored.contains(&format!("'{}'", code.as_str())),
                code.is_stored_decline(),
                "{code:?}"
            );
        }
    }
}
