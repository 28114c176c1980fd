//! What headquarters reads from the PostgreSQL store: the audit of the books and the shift
//! reports, with the same checks, sentences and order as the SQLite store's `audit.rs`.
//!
//! Ids are shown as `uuid::text` (lowercase with hyphens, as SQLite stores them); text sorts
//! with `COLLATE "C"` (byte order, as SQLite compares). Sums of `bigint` are `numeric` in
//! PostgreSQL and are cast back: a total past `bigint` is an error, as SQLite's integer
//! overflow is.

use super::admin::internal;
use super::{PgStore, classify};
use crate::domain::CardUid;
use crate::domain::Cents;
use crate::ledger::report::sections::{self, ColumnKind, Param};
use crate::ledger::report::{
    self, Cell, ReportData, ReportQuery, SalesDimension, SalesRow, Section,
};
use crate::ledger::store::{
    AuditReport, CardEvent, CardHistory, CardMoney, CardScan, DepositLine, DepositReport,
    FleetSnapshot, OverviewData, PoolStatus, QuarterTotal, ReportStore, ShiftReport, StatusSeen,
    StoreError, TakingKind, TerminalSync,
};
use crate::protocol::api::{ReaderState, TerminalKind, format_time};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;
use tokio_postgres::types::FromSqlOwned;

/// Every shift close-out (of terminal `$1`, if given) with the ledger's own top-ups of the
/// shift ([`sections::SHIFT_TOP_UPS`], the rule SQLite's `shift list` reads too).
fn shift_reports_sql() -> String {
    format!(
        "SELECT s.shift_id, t.name, s.staff_id, s.opened_at, s.closed_at, s.count,
                s.cash_cents, s.card_cents, s.counted_cash_cents, s.difference_cents,
                s.recorded_at, count(r.transaction_id),
                COALESCE(sum(r.amount_cents) FILTER (WHERE r.payment_method = 'cash'), 0)::bigint,
                COALESCE(sum(r.amount_cents) FILTER (WHERE r.payment_method = 'card'), 0)::bigint
         FROM (SELECT c.* FROM shift_closeouts c
                 JOIN terminals ct ON ct.terminal_id = c.terminal_id
                WHERE $1::text IS NULL OR ct.name = $1
                ORDER BY c.closed_at DESC, c.shift_id DESC LIMIT $2) s
         JOIN terminals t ON t.terminal_id = s.terminal_id
         {}
         GROUP BY s.shift_id, s.terminal_id, s.staff_id, s.opened_at, s.closed_at, s.count,
                  s.cash_cents, s.card_cents, s.counted_cash_cents, s.difference_cents,
                  s.recorded_at, t.name
         ORDER BY s.closed_at, t.name COLLATE \"C\", s.shift_id",
        sections::SHIFT_TOP_UPS
    )
}

/// The status report in columns `first..first + 9` of a fleet row (all null: none yet).
fn status_seen(r: &Row, first: usize) -> Result<Option<StatusSeen>, StoreError> {
    let Some(received_at) = r.try_get(first).map_err(classify)? else {
        return Ok(None);
    };
    let reader: &str = r.try_get(first + 7).map_err(classify)?;
    Ok(Some(StatusSeen {
        received_at,
        reported_at: r.try_get(first + 1).map_err(classify)?,
        waiting: r.try_get(first + 2).map_err(classify)?,
        in_doubt: r.try_get(first + 3).map_err(classify)?,
        rejected: r.try_get(first + 4).map_err(classify)?,
        oldest_unsent_age_s: r.try_get(first + 5).map_err(classify)?,
        card_feed_cursor: r.try_get(first + 6).map_err(classify)?,
        reader_state: ReaderState::parse(reader).ok_or_else(|| {
            StoreError::Internal(format!("reader state {reader:?} in the database"))
        })?,
        software_version: r.try_get(first + 8).map_err(classify)?,
    }))
}

impl ReportStore for PgStore {
    async fn audit(&self) -> Result<AuditReport, StoreError> {
        let mut client = self.pool.get().await?;
        // One consistent snapshot for every check.
        let tx = snapshot(&mut client).await?;
        let report = audit_books(&tx).await?;
        tx.commit().await.map_err(classify)?;
        Ok(report)
    }

    async fn shift_reports(
        &self,
        terminal_name: Option<String>,
        newest: u32,
    ) -> Result<Vec<ShiftReport>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&shift_reports_sql())
            .await
            .map_err(classify)?;
        let rows = client
            .query(&stmt, &[&terminal_name, &i64::from(newest)])
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let time = |i: usize| -> Result<String, StoreError> {
                    Ok(format_time(
                        r.try_get::<_, DateTime<Utc>>(i).map_err(classify)?,
                    ))
                };
                let cents = |i: usize| -> Result<Cents, StoreError> {
                    Ok(Cents::new(r.try_get(i).map_err(classify)?))
                };
                Ok(ShiftReport {
                    shift_id: r.try_get(0).map_err(classify)?,
                    terminal: r.try_get(1).map_err(classify)?,
                    staff_id: r.try_get(2).map_err(classify)?,
                    opened_at: time(3)?,
                    closed_at: time(4)?,
                    count: r.try_get(5).map_err(classify)?,
                    cash_cents: cents(6)?,
                    card_cents: cents(7)?,
                    counted_cash_cents: cents(8)?,
                    difference_cents: cents(9)?,
                    recorded_at: time(10)?,
                    ledger_count: r.try_get(11).map_err(classify)?,
                    ledger_cash_cents: cents(12)?,
                    ledger_card_cents: cents(13)?,
                })
            })
            .collect()
    }

    async fn fleet(&self, terminals_max: u32) -> Result<FleetSnapshot, StoreError> {
        let cards_blocked_for_debt = self
            .count(
                "SELECT count(*) FROM cards WHERE block_reason = 'debt'",
                &[],
            )
            .await?;
        let terminals = self
            .rows(
                "SELECT t.name, t.last_seen_at, t.highest_contiguous_seq, t.highest_seen_seq,
                        t.highest_seen_seq - t.highest_contiguous_seq
                        - (SELECT count(*) FROM terminal_seqs s
                           WHERE s.terminal_id = t.terminal_id
                             AND s.terminal_seq > t.highest_contiguous_seq),
                        t.kind, t.point_of_sale, t.active,
                        st.received_at, st.reported_at, st.waiting, st.in_doubt, st.rejected,
                        st.oldest_unsent_age_s, st.card_feed_cursor, st.reader_state,
                        st.software_version
                 FROM terminals t LEFT JOIN terminal_status st USING (terminal_id)
                 ORDER BY t.name COLLATE \"C\" LIMIT $1",
                &[&i64::from(terminals_max)],
            )
            .await?
            .iter()
            .map(|r| {
                let kind: &str = r.try_get(5).map_err(classify)?;
                Ok(TerminalSync {
                    name: r.try_get(0).map_err(classify)?,
                    kind: TerminalKind::parse(kind).ok_or_else(|| {
                        StoreError::Internal(format!("terminal kind {kind:?} in the database"))
                    })?,
                    point_of_sale: r.try_get(6).map_err(classify)?,
                    active: r.try_get(7).map_err(classify)?,
                    last_seen_at: r.try_get(1).map_err(classify)?,
                    highest_contiguous_seq: r.try_get(2).map_err(classify)?,
                    highest_seen_seq: r.try_get(3).map_err(classify)?,
                    missing_seqs: r.try_get(4).map_err(classify)?,
                    status: status_seen(r, 8)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(FleetSnapshot {
            cards_blocked_for_debt: i64::try_from(cards_blocked_for_debt).unwrap_or(i64::MAX),
            terminals,
        })
    }

    async fn overview(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows_max: u32,
        debtors_max: u32,
    ) -> Result<OverviewData, StoreError> {
        let mut client = self.pool.get().await?;
        // One snapshot: the sums and the cards agree with each other.
        let tx = snapshot(&mut client).await?;
        let stmt = tx
            .prepare_cached(
                "SELECT quarter_start, point_of_sale, kind, mode, sum(operations)::bigint,
                        sum(amount_cents)::bigint
                 FROM quarter_totals WHERE quarter_start >= $1 AND quarter_start < $2
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, point_of_sale COLLATE \"C\", 3, 4 LIMIT $3",
            )
            .await
            .map_err(classify)?;
        let quarters = tx
            .query(&stmt, &[&from, &to, &(i64::from(rows_max) + 1)])
            .await
            .map_err(classify)?
            .iter()
            .map(|r| {
                let kind: String = r.try_get(2).map_err(classify)?;
                Ok(QuarterTotal {
                    quarter_start: r.try_get(0).map_err(classify)?,
                    point_of_sale: r.try_get(1).map_err(classify)?,
                    kind: TakingKind::parse(&kind)
                        .ok_or_else(|| internal(format!("quarter_totals.kind {kind:?}")))?,
                    online: r.try_get::<_, String>(3).map_err(classify)? == "online",
                    operations: r.try_get(4).map_err(classify)?,
                    amount: Cents::new(r.try_get(5).map_err(classify)?),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let totals = tx
            .query_one(
                "SELECT count(*), COALESCE(sum(balance_cents) FILTER (WHERE balance_cents > 0), 0)::bigint,
                        count(*) FILTER (WHERE balance_cents < 0),
                        COALESCE(sum(balance_cents) FILTER (WHERE balance_cents < 0), 0)::bigint
                 FROM cards",
                &[],
            )
            .await
            .map_err(classify)?;
        let stmt = tx
            .prepare_cached(
                "SELECT card_uid, balance_cents, status = 'blocked' FROM cards
                 WHERE balance_cents < 0 ORDER BY balance_cents, card_uid COLLATE \"C\" LIMIT $1",
            )
            .await
            .map_err(classify)?;
        let deepest = tx
            .query(&stmt, &[&i64::from(debtors_max)])
            .await
            .map_err(classify)?
            .iter()
            .map(|r| {
                let uid: String = r.try_get(0).map_err(classify)?;
                Ok((
                    CardUid::parse(&uid).map_err(|e| internal(format!("cards.card_uid: {e}")))?,
                    Cents::new(r.try_get(1).map_err(classify)?),
                    r.try_get(2).map_err(classify)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        tx.commit().await.map_err(classify)?;
        Ok(OverviewData {
            quarters,
            cards: CardMoney {
                cards: totals.try_get(0).map_err(classify)?,
                on_cards: Cents::new(totals.try_get(1).map_err(classify)?),
                in_debt: totals.try_get(2).map_err(classify)?,
                debt: Cents::new(totals.try_get(3).map_err(classify)?),
                deepest,
            },
        })
    }

    async fn card_history(&self, uid: CardUid, limit: u32) -> Result<CardHistory, StoreError> {
        let n = i64::from(limit) + 1;
        let events = self
            .rows(
                "SELECT occurred_at, actor, staff_id, operation, amount_cents, outcome,
                        error_code
                 FROM app_transaction_log WHERE card_uid = $1
                 ORDER BY log_id DESC LIMIT $2",
                &[&uid.as_str(), &n],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(CardEvent {
                    occurred_at: r.try_get(0).map_err(classify)?,
                    actor: r.try_get(1).map_err(classify)?,
                    staff_id: r.try_get(2).map_err(classify)?,
                    operation: r.try_get(3).map_err(classify)?,
                    amount_cents: r
                        .try_get::<_, Option<i64>>(4)
                        .map_err(classify)?
                        .map(Cents::new),
                    outcome: r.try_get(5).map_err(classify)?,
                    error_code: r.try_get(6).map_err(classify)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let scans = self
            .rows(
                "SELECT s.scanned_at, t.name, s.reader, s.result
                 FROM nfc_scan_log s JOIN terminals t ON t.terminal_id = s.terminal_id
                 WHERE s.card_uid = $1 ORDER BY s.scanned_at DESC LIMIT $2",
                &[&uid.as_str(), &n],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(CardScan {
                    scanned_at: r.try_get(0).map_err(classify)?,
                    terminal: r.try_get(1).map_err(classify)?,
                    reader: r.try_get(2).map_err(classify)?,
                    result: r.try_get(3).map_err(classify)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let (block_reason, replaced_by) = self
            .rows(
                "SELECT block_reason, replaced_by FROM cards WHERE card_uid = $1",
                &[&uid.as_str()],
            )
            .await?
            .first()
            .map(|r| {
                Ok::<_, StoreError>((
                    r.try_get(0).map_err(classify)?,
                    r.try_get(1).map_err(classify)?,
                ))
            })
            .transpose()?
            .unwrap_or((None, None));
        Ok(CardHistory {
            events,
            scans,
            block_reason,
            replaced_by,
        })
    }

    fn pool_status(&self) -> PoolStatus {
        self.pool.status()
    }

    async fn report(&self, query: ReportQuery) -> Result<ReportData, StoreError> {
        let offset = f64::from(query.utc_offset_s);
        let limit = i64::from(query.limit) + 1;
        let mut client = self.pool.get().await?;
        // One read-only snapshot, so that every section sums to the same while orders keep
        // arriving, with a timeout of its own: a report over a whole festival may take longer
        // than `[postgres] statement_timeout_ms` gives a sale.
        let tx = snapshot(&mut client).await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {REPORT_STATEMENT_TIMEOUT_MS}"
        ))
        .await
        .map_err(classify)?;
        let mut sections = Vec::with_capacity(SalesDimension::ALL.len());
        let split = report::split_at_quarters(query.from, query.to);
        let [lower, upper] = split.edges;
        let (lower, upper) = (lower.unzip(), upper.unzip());
        for dimension in SalesDimension::ALL
            .into_iter()
            .filter(|d| query.wants(d.section()))
        {
            let from_sums =
                dimension != SalesDimension::Hour || report::hours_from_sums(query.utc_offset_s);
            let (sql, mut params): (_, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) =
                if from_sums {
                    (
                        sales_sums_sql(dimension),
                        vec![
                            &split.sums_from,
                            &split.sums_to,
                            &limit,
                            &lower.0,
                            &lower.1,
                            &upper.0,
                            &upper.1,
                        ],
                    )
                } else {
                    // Hours that cut quarter hours (an offset of 20 minutes) come from the
                    // orders themselves.
                    (sales_sql(dimension), vec![&query.from, &query.to, &limit])
                };
            let stmt = tx.prepare(&sql).await.map_err(classify)?;
            // The offset is a parameter of the hours' query only (PostgreSQL types each).
            if dimension == SalesDimension::Hour {
                params.push(&offset);
            }
            let rows = tx
                .query(&stmt, &params)
                .await
                .map_err(classify)?
                .iter()
                .map(|r| {
                    Ok(SalesRow {
                        key: r.try_get(0).map_err(classify)?,
                        tax_rate: r.try_get(1).map_err(classify)?,
                        quantity: r.try_get(2).map_err(classify)?,
                        net_cents: r.try_get(3).map_err(classify)?,
                        tax_cents: r.try_get(4).map_err(classify)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            sections.push((dimension, rows));
        }
        let mut others = Vec::new();
        for spec in sections::specs()
            .into_iter()
            .filter(|s| query.wants(s.name))
        {
            let (sql, params) = sections::postgres_sql(&spec.sql);
            let stmt = tx.prepare(&sql).await.map_err(classify)?;
            let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| -> &(dyn tokio_postgres::types::ToSql + Sync) {
                    match p {
                        Param::From => &query.from,
                        Param::To => &query.to,
                        Param::Limit => &limit,
                    }
                })
                .collect();
            let rows = tx
                .query(&stmt, &values)
                .await
                .map_err(classify)?
                .iter()
                .map(|r| {
                    spec.columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| cell(r, i, c.kind))
                        .collect::<Result<Vec<_>, StoreError>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            others.push(Section::of(&spec, rows));
        }
        tx.commit().await.map_err(classify)?;
        Ok(ReportData {
            sales: sections,
            sections: others,
        })
    }

    async fn deposit_report(&self) -> Result<DepositReport, StoreError> {
        let mut client = self.pool.get().await?;
        // One snapshot for the items and the account.
        let tx = snapshot(&mut client).await?;
        let items = rows(
            &tx,
            "SELECT product_id, SUM(out_quantity)::bigint, SUM(out_cents)::bigint,
                SUM(returned_quantity)::bigint, SUM(returned_cents)::bigint
         FROM (SELECT i.product_id, i.quantity AS out_quantity,
                      i.line_total_cents AS out_cents, 0 AS returned_quantity,
                      0::bigint AS returned_cents
               FROM bar_order_items i
               JOIN bar_orders o ON o.transaction_id = i.transaction_id
               WHERE i.deposit AND o.voided_by IS NULL
               UNION ALL
               SELECT i.product_id, 0, 0, i.quantity, i.line_total_cents
               FROM deposit_return_items i
               JOIN deposit_returns r ON r.transaction_id = i.transaction_id
               WHERE r.voided_by IS NULL) AS d
         GROUP BY product_id
         ORDER BY product_id COLLATE \"C\"",
            |r| {
                Ok(DepositLine {
                    product_id: r.try_get(0)?,
                    out_quantity: r.try_get(1)?,
                    out_cents: Cents::new(r.try_get(2)?),
                    returned_quantity: r.try_get(3)?,
                    returned_cents: Cents::new(r.try_get(4)?),
                })
            },
        )
        .await?;
        let account_cents = Cents::new(
            one(
                &tx,
                "SELECT COALESCE(sum(amount_cents), 0)::bigint FROM postings
                 WHERE account = 'deposits'",
            )
            .await?,
        );
        tx.commit().await.map_err(classify)?;
        Ok(DepositReport {
            items,
            account_cents,
        })
    }
}

/// Column `i` of a report section's row, as its kind says.
fn cell(row: &tokio_postgres::Row, i: usize, kind: ColumnKind) -> Result<Cell, StoreError> {
    Ok(match kind {
        ColumnKind::Text => Cell::Text(
            row.try_get::<_, Option<String>>(i)
                .map_err(classify)?
                .unwrap_or_default(),
        ),
        ColumnKind::Count | ColumnKind::Cents | ColumnKind::Number => Cell::Int(
            row.try_get::<_, Option<i64>>(i)
                .map_err(classify)?
                .unwrap_or(0),
        ),
        ColumnKind::Time => Cell::Time(row.try_get(i).map_err(classify)?),
    })
}

/// A read-only, repeatable-read transaction: one consistent snapshot for several reads.
async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(classify)
}

/// One dimension's query of the sales report: `$1`, `$2` the bounds, `$3` the row limit,
/// `$4` the hours' offset in seconds (the hours' query only). Sorted in byte order, as SQLite
/// sorts, whatever the database's collation.
fn sales_sql(dimension: SalesDimension) -> String {
    let key = dimension.key_column().unwrap_or(
        "to_char((o.created_at AT TIME ZONE 'UTC') + make_interval(secs => $4),
                 'YYYY-MM-DD\"T\"HH24:00')",
    );
    format!(
        "SELECT k, rate, quantity, net, tax FROM (
             SELECT {key} AS k, COALESCE(i.tax_rate, '') AS rate,
                    SUM(i.quantity)::bigint AS quantity,
                    SUM(COALESCE(i.net_cents, i.line_total_cents))::bigint AS net,
                    SUM(COALESCE(i.tax_cents, 0))::bigint AS tax
             FROM bar_orders o
             JOIN bar_order_items i ON i.transaction_id = o.transaction_id
             JOIN terminals t ON t.terminal_id = o.terminal_id
             WHERE o.voided_by IS NULL AND NOT COALESCE(i.deposit, false)
               AND ($1::timestamptz IS NULL OR o.created_at >= $1)
               AND ($2::timestamptz IS NULL OR o.created_at < $2)
             GROUP BY 1, 2) s
         ORDER BY k COLLATE \"C\", rate COLLATE \"C\" LIMIT $3"
    )
}

/// One dimension's query of the sales report from the quarter-hour sums
/// ([`crate::ledger::report::split_at_quarters`]): `$1`..`$2` the whole quarter hours (null
/// for no bound), `$3` the row limit, `$4`..`$5` and `$6`..`$7` the ragged ends read from the
/// orders (null for none), `$8` the hours' offset (the hour's query only: PostgreSQL types
/// each parameter from its use).
fn sales_sums_sql(dimension: SalesDimension) -> String {
    let hour = |t: &str| {
        format!(
            "to_char(({t} AT TIME ZONE 'UTC') + make_interval(secs => $8),
                     'YYYY-MM-DD\"T\"HH24:00')"
        )
    };
    let (table, key) = dimension.sums();
    let key = key.map_or_else(|| hour("s.quarter_start"), str::to_owned);
    let order_key = dimension
        .key_column()
        .map_or_else(|| hour("o.created_at"), str::to_owned);
    let edge = |from: u8, to: u8| {
        format!(
            "SELECT {order_key}, COALESCE(i.tax_rate, ''), 1::bigint, i.quantity::bigint,
                    COALESCE(i.net_cents, i.line_total_cents)::bigint,
                    COALESCE(i.tax_cents, 0)::bigint
             FROM bar_orders o
             JOIN bar_order_items i ON i.transaction_id = o.transaction_id
             JOIN terminals t ON t.terminal_id = o.terminal_id
             WHERE o.voided_by IS NULL AND NOT COALESCE(i.deposit, false)
               AND o.created_at >= ${from}::timestamptz AND o.created_at < ${to}::timestamptz"
        )
    };
    format!(
        "SELECT k, rate, sum(quantity)::bigint, sum(net)::bigint, sum(tax)::bigint FROM (
             SELECT {key} AS k, s.tax_rate AS rate, s.lines AS lines, s.quantity AS quantity,
                    s.net_cents AS net, s.tax_cents AS tax
             FROM {table} s {join}
             WHERE s.quarter_start >= COALESCE($1::timestamptz, '-infinity')
               AND s.quarter_start < COALESCE($2::timestamptz, 'infinity')
             UNION ALL {lower}
             UNION ALL {upper}) x
         GROUP BY k, rate HAVING sum(lines) > 0
         ORDER BY k COLLATE \"C\", rate COLLATE \"C\" LIMIT $3",
        join = dimension.sums_join(),
        lower = edge(4, 5),
        upper = edge(6, 7),
    )
}

/// How long one query of `ledger report` may run on PostgreSQL.
const REPORT_STATEMENT_TIMEOUT_MS: u64 = 300_000;

/// Every row of `sql`, each read by `read`.
async fn rows<T>(
    tx: &Transaction<'_>,
    sql: &str,
    read: impl Fn(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, StoreError> {
    let stmt = tx.prepare_cached(sql).await.map_err(classify)?;
    let rows = tx.query(&stmt, &[]).await.map_err(classify)?;
    rows.iter().map(|r| read(r).map_err(classify)).collect()
}

/// The one value of a one-row, one-column query.
async fn one<T: FromSqlOwned>(tx: &Transaction<'_>, sql: &str) -> Result<T, StoreError> {
    rows(tx, sql, |r| r.try_get(0))
        .await?
        .pop()
        .ok_or_else(|| internal(format!("no row from {sql}")))
}

/// The first column of every row of `sql`.
async fn firsts(tx: &Transaction<'_>, sql: &str) -> Result<Vec<String>, StoreError> {
    rows(tx, sql, |r| r.try_get(0)).await
}

/// Adds `message(name, a, b)` to `d` for every row of `sql`, a query of discrepancies with
/// three columns: what it is about and the two amounts that should agree.
async fn mismatches(
    tx: &Transaction<'_>,
    d: &mut Vec<String>,
    sql: &str,
    message: impl Fn(String, i64, i64) -> String,
) -> Result<(), StoreError> {
    for (name, a, b) in rows(tx, sql, |r| {
        Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
    })
    .await?
    {
        d.push(message(name, a, b));
    }
    Ok(())
}

async fn audit_books(tx: &Transaction<'_>) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport {
        cards: one(tx, "SELECT count(*) FROM cards").await?,
        postings: one(tx, "SELECT count(*) FROM postings").await?,
        transactions: one(tx, "SELECT count(DISTINCT transaction_id) FROM postings").await?,
        card_balance_total_cents: one(
            tx,
            "SELECT COALESCE(sum(balance_cents), 0)::bigint FROM cards",
        )
        .await?,
        discrepancies: Vec::new(),
    };
    let d = &mut report.discrepancies;
    // One pass over cards and card postings, grouped once. Postings of a card that has no
    // row show up with a balance of 0.
    mismatches(
        tx,
        d,
        "SELECT card_uid, sum(balance)::bigint, sum(posted)::bigint FROM (
             SELECT card_uid, balance_cents AS balance, 0::bigint AS posted FROM cards
             UNION ALL
             SELECT substr(account, 6), 0, amount_cents FROM postings
             WHERE account LIKE 'card:%') AS u
         GROUP BY card_uid
         HAVING sum(balance) <> sum(posted)
         ORDER BY card_uid COLLATE \"C\"",
        |uid, balance, postings| {
            format!("card {uid}: balance_cents {balance} but its postings sum to {postings}")
        },
    )
    .await?;
    let total: i64 = one(
        tx,
        "SELECT COALESCE(sum(amount_cents), 0)::bigint FROM postings",
    )
    .await?;
    if total != 0 {
        d.push(format!("all postings sum to {total}, not 0"));
    }
    for (tx_id, sum) in rows(
        tx,
        "SELECT transaction_id::text, sum(amount_cents)::bigint FROM postings
         GROUP BY transaction_id HAVING sum(amount_cents) <> 0
         ORDER BY transaction_id",
        |r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)),
    )
    .await?
    {
        d.push(format!("transaction {tx_id}: postings sum to {sum}, not 0"));
    }
    for account in firsts(
        tx,
        "SELECT account FROM postings p WHERE account LIKE 'card:%'
         AND NOT EXISTS (SELECT 1 FROM cards c WHERE c.card_uid = substr(p.account, 6))
         GROUP BY account ORDER BY account COLLATE \"C\"",
    )
    .await?
    {
        d.push(format!(
            "account {account}: postings for a card that does not exist"
        ));
    }
    mismatches(
        tx,
        d,
        "SELECT o.transaction_id::text, o.total_cents,
                COALESCE(sum(i.line_total_cents), 0)::bigint
         FROM bar_orders o
         LEFT JOIN bar_order_items i ON i.transaction_id = o.transaction_id
         GROUP BY o.transaction_id
         HAVING o.total_cents <> COALESCE(sum(i.line_total_cents), 0)
         ORDER BY o.transaction_id",
        |tx_id, total, lines| {
            format!("order {tx_id}: total_cents {total} but its lines sum to {lines}")
        },
    )
    .await?;
    mismatches(
        tx,
        d,
        "SELECT r.transaction_id::text, r.amount_cents,
                COALESCE(sum(i.line_total_cents), 0)::bigint
         FROM deposit_returns r
         LEFT JOIN deposit_return_items i ON i.transaction_id = r.transaction_id
         GROUP BY r.transaction_id
         HAVING r.amount_cents <> COALESCE(sum(i.line_total_cents), 0)
         ORDER BY r.transaction_id",
        |tx_id, amount, lines| {
            format!("deposit return {tx_id}: amount_cents {amount} but its lines sum to {lines}")
        },
    )
    .await?;
    // The deposits liability is the deposit lines of orders still standing less the returns.
    mismatches(
        tx,
        d,
        "SELECT 'deposits', p.posted, o.lines - r.returned
         FROM (SELECT COALESCE(sum(amount_cents), 0)::bigint AS posted FROM postings
               WHERE account = 'deposits') p,
              (SELECT COALESCE(sum(i.line_total_cents), 0)::bigint AS lines
               FROM bar_order_items i JOIN bar_orders o ON o.transaction_id = i.transaction_id
               WHERE i.deposit AND o.voided_by IS NULL) o,
              (SELECT COALESCE(sum(amount_cents), 0)::bigint AS returned
               FROM deposit_returns WHERE voided_by IS NULL) r
         WHERE p.posted <> o.lines - r.returned",
        |account, posted, expected| {
            format!(
                "account {account}: postings sum to {posted} but deposit lines sold less \
                 returns (voided ones left out) are {expected}"
            )
        },
    )
    .await?;
    // A card's voucher units are what the desk and the checkpoints granted (voided grants
    // left out), and what its daily allowance set them to, less what orders still standing
    // used.
    mismatches(
        tx,
        d,
        "WITH moves AS (
             SELECT card_uid, (details ->> 'units')::bigint AS units
             FROM app_transaction_log WHERE actor = 'admin' AND operation = 'voucher_grant'
             UNION ALL
             SELECT card_uid, (details ->> 'voucher_units')::bigint
                              - (details ->> 'units_before')::bigint
             FROM app_transaction_log
             WHERE actor = 'admin' AND operation IN ('voucher_daily', 'voucher_day')
             UNION ALL
             SELECT card_uid, voucher_units FROM archived_voucher_moves
             UNION ALL
             SELECT old_card_uid, -voucher_units FROM card_replacements
             UNION ALL
             SELECT new_card_uid, voucher_units FROM card_replacements
             UNION ALL
             SELECT card_uid, units FROM voucher_grants WHERE voided_by IS NULL
             UNION ALL
             SELECT card_uid, -voucher_units FROM bar_orders
             WHERE voided_by IS NULL AND voucher_units IS NOT NULL
         ), sums AS (SELECT card_uid, sum(units)::bigint AS units FROM moves GROUP BY card_uid)
         SELECT c.card_uid, c.voucher_units, COALESCE(s.units, 0)
         FROM cards c LEFT JOIN sums s ON s.card_uid = c.card_uid
         WHERE c.voucher_units <> COALESCE(s.units, 0)
         ORDER BY c.card_uid COLLATE \"C\"",
        |uid, units, expected| {
            format!(
                "card {uid}: voucher_units {units} but grants and daily allowances less the vouchers its orders \
                 used (voided ones left out) are {expected}"
            )
        },
    )
    .await?;
    for table in ["till_quarter_sales", "product_quarter_sales"] {
        mismatches(
            tx,
            d,
            &crate::ledger::store::report_sums_recount_sql(table, true),
            crate::ledger::store::sums_recounted,
        )
        .await?;
    }
    for (table, id) in [
        ("bar_orders", "transaction_id"),
        ("recharges", "transaction_id"),
        ("deposit_returns", "transaction_id"),
        ("voucher_grants", "transaction_id"),
        ("voids", "transaction_id"),
        ("shift_closeouts", "shift_id"),
    ] {
        let sql = format!(
            "SELECT t.{id}::text FROM {table} t WHERE NOT EXISTS
             (SELECT 1 FROM idempotency_keys k WHERE k.transaction_id = t.{id})
             ORDER BY t.{id}"
        );
        for row in firsts(tx, &sql).await? {
            d.push(format!(
                "{table} {row}: applied without its idempotency key, so a replay could apply it again"
            ));
        }
    }
    // An order paid by vouchers alone moved no money, and has no postings.
    for (table, moved_money) in [
        ("bar_orders", "COALESCE(t.money_cents, t.total_cents) <> 0"),
        ("recharges", "true"),
        ("deposit_returns", "true"),
        ("stripe_recharges", "true"),
        ("stripe_refunds", "true"),
        ("card_replacements", "t.amount_cents <> 0"),
    ] {
        let sql = format!(
            "SELECT t.transaction_id::text FROM {table} t WHERE {moved_money} AND NOT EXISTS
             (SELECT 1 FROM postings p WHERE p.transaction_id = t.transaction_id)
             ORDER BY t.transaction_id"
        );
        for row in firsts(tx, &sql).await? {
            d.push(format!("{table} {row}: applied without postings"));
        }
    }
    // A Stripe credit's refunds add up to what it says was reversed.
    mismatches(
        tx,
        d,
        "SELECT r.checkout_session_id, r.refunded_cents, COALESCE(sum(f.amount_cents), 0)::bigint
         FROM stripe_recharges r LEFT JOIN stripe_refunds f
           ON f.checkout_session_id = r.checkout_session_id
         GROUP BY r.transaction_id
         HAVING r.refunded_cents <> COALESCE(sum(f.amount_cents), 0)
         ORDER BY r.checkout_session_id COLLATE \"C\"",
        |session, said, refunds| {
            format!(
                "Stripe session {session}: refunded_cents {said} but its refunds sum to {refunds}"
            )
        },
    )
    .await?;
    // A replaced card stays blocked as lost for good.
    for (uid, by) in rows(
        tx,
        "SELECT card_uid, replaced_by FROM cards
         WHERE replaced_by IS NOT NULL AND (status <> 'blocked' OR block_reason <> 'lost')
         ORDER BY card_uid COLLATE \"C\"",
        |r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)),
    )
    .await?
    {
        d.push(format!(
            "card {uid}: replaced by {by} but not blocked as lost"
        ));
    }
    for (uid, balance, status) in rows(
        tx,
        "SELECT card_uid, balance_cents, status FROM cards
         WHERE balance_cents < 0 AND status <> 'blocked'
         ORDER BY card_uid COLLATE \"C\"",
        |r| {
            Ok((
                r.try_get::<_, String>(0)?,
                r.try_get::<_, i64>(1)?,
                r.try_get::<_, String>(2)?,
            ))
        },
    )
    .await?
    {
        d.push(format!(
            "card {uid}: balance_cents {balance} below zero but status {status}"
        ));
    }
    Ok(report)
}
