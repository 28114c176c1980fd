//! What headquarters reads from the SQLite store: the audit of the books and the shift
//! reports.

use super::{SqliteStore, internal};
use crate::domain::CardUid;
use crate::domain::Cents;
use crate::ledger::report::sections::{self, ColumnKind};
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
use rusqlite::Connection;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

/// One dimension's query of the sales report: `?1`, `?2` the bounds (`format_time` text, as
/// every stored time is, so they compare as text), `?3` the hours' offset (a `strftime`
/// modifier), `?4` the row limit.
fn sales_sql(dimension: SalesDimension) -> String {
    // Times are stored as RFC 3339 text, which SQLite's date functions read.
    let key = dimension
        .key_column()
        .unwrap_or("strftime('%Y-%m-%dT%H:00', o.created_at, ?3)");
    format!(
        "SELECT {key}, COALESCE(i.tax_rate, ''), SUM(i.quantity),
                SUM(COALESCE(i.net_cents, i.line_total_cents)), SUM(COALESCE(i.tax_cents, 0))
         FROM bar_orders o
         JOIN bar_order_items i ON i.transaction_id = o.transaction_id
         JOIN terminals t ON t.terminal_id = o.terminal_id
         WHERE o.voided_by IS NULL AND COALESCE(i.deposit, 0) = 0
           AND (?1 IS NULL OR o.created_at >= ?1) AND (?2 IS NULL OR o.created_at < ?2)
         GROUP BY 1, 2 ORDER BY 1, 2 LIMIT ?4"
    )
}

/// One dimension's query of the sales report from the quarter-hour sums
/// ([`crate::ledger::report::split_at_quarters`]): `?1`..`?2` the whole quarter hours (`''`
/// and `'~'` for no bound: every stored time sorts between them), `?3` the hours' offset,
/// `?4` the row limit, `?5`..`?6` and `?7`..`?8` the ragged ends read from the orders (null
/// for none).
fn sales_sums_sql(dimension: SalesDimension) -> String {
    let (table, key) = dimension.sums();
    let key = key.unwrap_or("strftime('%Y-%m-%dT%H:00', s.quarter_start, ?3)");
    let order_key = dimension
        .key_column()
        .unwrap_or("strftime('%Y-%m-%dT%H:00', o.created_at, ?3)");
    let edge = |from: u8, to: u8| {
        format!(
            "SELECT {order_key}, COALESCE(i.tax_rate, ''), 1, i.quantity,
                    COALESCE(i.net_cents, i.line_total_cents), COALESCE(i.tax_cents, 0)
             FROM bar_orders o
             JOIN bar_order_items i ON i.transaction_id = o.transaction_id
             JOIN terminals t ON t.terminal_id = o.terminal_id
             WHERE o.voided_by IS NULL AND COALESCE(i.deposit, 0) = 0
               AND o.created_at >= ?{from} AND o.created_at < ?{to}"
        )
    };
    format!(
        "SELECT k, rate, SUM(quantity), SUM(net), SUM(tax) FROM (
             SELECT {key} AS k, s.tax_rate AS rate, s.lines AS lines, s.quantity AS quantity,
                    s.net_cents AS net, s.tax_cents AS tax
             FROM {table} s {join}
             WHERE s.quarter_start >= ?1 AND s.quarter_start < ?2
             UNION ALL {lower}
             UNION ALL {upper})
         GROUP BY 1, 2 HAVING SUM(lines) > 0 ORDER BY 1, 2 LIMIT ?4",
        join = dimension.sums_join(),
        lower = edge(5, 6),
        upper = edge(7, 8),
    )
}

/// A time the store wrote (RFC 3339), read back.
fn stored_time(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = r.get(i)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
}

/// The status report in columns `first..first + 9` of a fleet row (all null: none yet).
fn status_seen(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<StatusSeen>> {
    if r.get::<_, Option<String>>(first)?.is_none() {
        return Ok(None);
    }
    let reader: String = r.get(first + 7)?;
    Ok(Some(StatusSeen {
        received_at: stored_time(r, first)?,
        reported_at: stored_time(r, first + 1)?,
        waiting: r.get(first + 2)?,
        in_doubt: r.get(first + 3)?,
        rejected: r.get(first + 4)?,
        oldest_unsent_age_s: r.get(first + 5)?,
        card_feed_cursor: r.get(first + 6)?,
        reader_state: ReaderState::parse(&reader).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                first + 7,
                rusqlite::types::Type::Text,
                format!("reader state {reader:?}").into(),
            )
        })?,
        software_version: r.get(first + 8)?,
    }))
}

impl ReportStore for SqliteStore {
    async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.read(audit_books).await
    }

    async fn fleet(&self, terminals_max: u32) -> Result<FleetSnapshot, StoreError> {
        // On the usual readers: `/metrics` reads it too, and must not wait behind a report.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let cards_blocked_for_debt = tx.query_row(
                "SELECT COUNT(*) FROM cards WHERE block_reason = 'debt'",
                [],
                |r| r.get(0),
            )?;
            let terminals = tx
                .prepare_cached(
                    "SELECT t.name, t.last_seen_at, t.highest_contiguous_seq, t.highest_seen_seq,
                        t.highest_seen_seq - t.highest_contiguous_seq
                        - (SELECT COUNT(*) FROM terminal_seqs s
                           WHERE s.terminal_id = t.terminal_id
                             AND s.terminal_seq > t.highest_contiguous_seq),
                        t.kind, t.point_of_sale, t.active,
                        st.received_at, st.reported_at, st.waiting, st.in_doubt, st.rejected,
                        st.oldest_unsent_age_s, st.card_feed_cursor, st.reader_state,
                        st.software_version
                 FROM terminals t LEFT JOIN terminal_status st USING (terminal_id)
                 ORDER BY t.name LIMIT ?1",
                )?
                .query_map([terminals_max], |r| {
                    let seen: Option<String> = r.get(1)?;
                    let kind: String = r.get(5)?;
                    Ok(TerminalSync {
                        name: r.get(0)?,
                        kind: TerminalKind::parse(&kind).ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(
                                5,
                                rusqlite::types::Type::Text,
                                format!("terminal kind {kind:?}").into(),
                            )
                        })?,
                        point_of_sale: r.get(6)?,
                        active: r.get(7)?,
                        last_seen_at: seen
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                            .map(|t| t.with_timezone(&chrono::Utc)),
                        highest_contiguous_seq: r.get(2)?,
                        highest_seen_seq: r.get(3)?,
                        missing_seqs: r.get(4)?,
                        status: status_seen(r, 8)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(FleetSnapshot {
                cards_blocked_for_debt,
                terminals,
            })
        })
        .await
    }

    async fn overview(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows_max: u32,
        debtors_max: u32,
    ) -> Result<OverviewData, StoreError> {
        // Quarters are stored as the time they start, like every time (migration 0014).
        let (from, to) = (format_time(from), format_time(to));
        self.read_in_background(move |conn| {
            // One snapshot: the sums and the cards agree with each other.
            let tx = conn.unchecked_transaction()?;
            let quarters = tx
                .prepare_cached(
                    "SELECT quarter_start, point_of_sale, kind, mode, SUM(operations),
                            SUM(amount_cents)
                     FROM quarter_totals WHERE quarter_start >= ?1 AND quarter_start < ?2
                     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT ?3",
                )?
                .query_map(params![from, to, i64::from(rows_max) + 1], |r| {
                    let kind: String = r.get(2)?;
                    Ok(QuarterTotal {
                        quarter_start: stored_time(r, 0)?,
                        point_of_sale: r.get(1)?,
                        kind: TakingKind::parse(&kind).ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Text,
                                format!("kind {kind:?}").into(),
                            )
                        })?,
                        online: r.get::<_, String>(3)? == "online",
                        operations: r.get(4)?,
                        amount: Cents::new(r.get(5)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let (cards, on_cards, in_debt, debt) = tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN balance_cents > 0 THEN balance_cents END), 0),
                        COUNT(CASE WHEN balance_cents < 0 THEN 1 END),
                        COALESCE(SUM(CASE WHEN balance_cents < 0 THEN balance_cents END), 0)
                 FROM cards",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let deepest = tx
                .prepare_cached(
                    "SELECT card_uid, balance_cents, status = 'blocked' FROM cards
                     WHERE balance_cents < 0 ORDER BY balance_cents, card_uid LIMIT ?1",
                )?
                .query_map(params![i64::from(debtors_max)], |r| {
                    let uid: String = r.get(0)?;
                    Ok((
                        CardUid::parse(&uid).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                0,
                                rusqlite::types::Type::Text,
                                e.to_string().into(),
                            )
                        })?,
                        Cents::new(r.get(1)?),
                        r.get(2)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            Ok(OverviewData {
                quarters,
                cards: CardMoney {
                    cards,
                    on_cards: Cents::new(on_cards),
                    in_debt,
                    debt: Cents::new(debt),
                    deepest,
                },
            })
        })
        .await
    }

    async fn card_history(&self, uid: CardUid, limit: u32) -> Result<CardHistory, StoreError> {
        self.read_in_background(move |conn| {
            let events = conn
                .prepare_cached(
                    "SELECT occurred_at, actor, staff_id, operation, amount_cents, outcome,
                            error_code
                     FROM app_transaction_log WHERE card_uid = ?1
                     ORDER BY log_id DESC LIMIT ?2",
                )?
                .query_map(params![uid.as_str(), i64::from(limit) + 1], |r| {
                    Ok(CardEvent {
                        occurred_at: stored_time(r, 0)?,
                        actor: r.get(1)?,
                        staff_id: r.get(2)?,
                        operation: r.get(3)?,
                        amount_cents: r.get::<_, Option<i64>>(4)?.map(Cents::new),
                        outcome: r.get(5)?,
                        error_code: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let scans = conn
                .prepare_cached(
                    "SELECT s.scanned_at, t.name, s.reader, s.result
                     FROM nfc_scan_log s JOIN terminals t ON t.terminal_id = s.terminal_id
                     WHERE s.card_uid = ?1 ORDER BY s.scanned_at DESC LIMIT ?2",
                )?
                .query_map(params![uid.as_str(), i64::from(limit) + 1], |r| {
                    Ok(CardScan {
                        scanned_at: stored_time(r, 0)?,
                        terminal: r.get(1)?,
                        reader: r.get(2)?,
                        result: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let (block_reason, replaced_by) = conn
                .prepare_cached("SELECT block_reason, replaced_by FROM cards WHERE card_uid = ?1")?
                .query_row(params![uid.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((None, None));
            Ok(CardHistory {
                events,
                scans,
                block_reason,
                replaced_by,
            })
        })
        .await
    }

    fn pool_status(&self) -> PoolStatus {
        let waiting = self
            .inner
            .writer
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(|tx| tx.max_capacity() - tx.capacity()))
            .unwrap_or(0);
        // The writer, the readers and the background reader: opened with the store, for good.
        PoolStatus {
            max_connections: super::READERS + 2,
            open_connections: super::READERS + 2,
            idle_connections: None,
            waiting,
        }
    }

    async fn report(&self, query: ReportQuery) -> Result<ReportData, StoreError> {
        let from = query.from.map(format_time);
        let to = query.to.map(format_time);
        let offset = format!("{:+} seconds", query.utc_offset_s);
        let limit = i64::from(query.limit) + 1;
        let split = report::split_at_quarters(query.from, query.to);
        let sums_from = split.sums_from.map_or_else(String::new, format_time);
        let sums_to = split.sums_to.map_or_else(|| "~".to_owned(), format_time);
        let edge = |i: usize| split.edges[i].map(|(f, t)| (format_time(f), format_time(t)));
        let (lower, upper) = (edge(0).unzip(), edge(1).unzip());
        // The range of the other sections, no bound made the earliest and latest of texts:
        // every stored time sorts between '' and '~'.
        let since = from.clone().unwrap_or_default();
        let until = to.clone().unwrap_or_else(|| "~".to_owned());
        self.read_in_background(move |conn| {
            // One snapshot: every section sums to the same while orders keep arriving.
            let tx = conn.unchecked_transaction()?;
            let mut sections = Vec::with_capacity(SalesDimension::ALL.len());
            let read = |r: &rusqlite::Row<'_>| {
                Ok(SalesRow {
                    key: r.get(0)?,
                    tax_rate: r.get(1)?,
                    quantity: r.get(2)?,
                    net_cents: r.get(3)?,
                    tax_cents: r.get(4)?,
                })
            };
            for dimension in SalesDimension::ALL
                .into_iter()
                .filter(|d| query.wants(d.section()))
            {
                let rows = if dimension != SalesDimension::Hour
                    || report::hours_from_sums(query.utc_offset_s)
                {
                    tx.prepare(&sales_sums_sql(dimension))?
                        .query_map(
                            rusqlite::params![
                                sums_from, sums_to, offset, limit, lower.0, lower.1, upper.0,
                                upper.1
                            ],
                            read,
                        )?
                        .collect::<Result<_, _>>()?
                } else {
                    // Hours that cut quarter hours (an offset of 20 minutes) come from the
                    // orders themselves.
                    tx.prepare(&sales_sql(dimension))?
                        .query_map(rusqlite::params![from, to, offset, limit], read)?
                        .collect::<Result<_, _>>()?
                };
                sections.push((dimension, rows));
            }
            let mut others = Vec::new();
            for spec in sections::specs()
                .into_iter()
                .filter(|s| query.wants(s.name))
            {
                let mut stmt = tx.prepare(&spec.sql)?;
                // Each query names the parameters it uses, and only those are bound.
                let values: [(&str, &dyn rusqlite::ToSql); 5] = [
                    (":from", &from),
                    (":to", &to),
                    (":since", &since),
                    (":until", &until),
                    (":limit", &limit),
                ];
                for (name, value) in values {
                    if let Some(i) = stmt.parameter_index(name)? {
                        stmt.raw_bind_parameter(i, value)?;
                    }
                }
                let mut rows = stmt.raw_query();
                let mut read = Vec::new();
                while let Some(row) = rows.next()? {
                    read.push(
                        spec.columns
                            .iter()
                            .enumerate()
                            .map(|(i, c)| cell(row, i, c.kind))
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                others.push(Section::of(&spec, read));
            }
            Ok(ReportData {
                sales: sections,
                sections: others,
            })
        })
        .await
    }

    async fn deposit_report(&self) -> Result<DepositReport, StoreError> {
        self.read(|conn| {
            // One snapshot for the items and the account.
            let tx = conn.unchecked_transaction()?;
            let items = tx
                .prepare(
                    "SELECT product_id, SUM(out_quantity), SUM(out_cents), SUM(returned_quantity),
                        SUM(returned_cents)
                 FROM (SELECT i.product_id, i.quantity AS out_quantity,
                              i.line_total_cents AS out_cents, 0 AS returned_quantity,
                              0 AS returned_cents
                       FROM bar_order_items i
                       JOIN bar_orders o ON o.transaction_id = i.transaction_id
                       WHERE i.deposit = 1 AND o.voided_by IS NULL
                       UNION ALL
                       SELECT i.product_id, 0, 0, i.quantity, i.line_total_cents
                       FROM deposit_return_items i
                       JOIN deposit_returns r ON r.transaction_id = i.transaction_id
                       WHERE r.voided_by IS NULL) AS d
                 GROUP BY product_id
                 ORDER BY product_id",
                )?
                .query_map([], |r| {
                    Ok(DepositLine {
                        product_id: r.get(0)?,
                        out_quantity: r.get(1)?,
                        out_cents: Cents::new(r.get(2)?),
                        returned_quantity: r.get(3)?,
                        returned_cents: Cents::new(r.get(4)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let account_cents = Cents::new(tx.query_row(
                "SELECT COALESCE(SUM(amount_cents), 0) FROM postings WHERE account = 'deposits'",
                [],
                |r| r.get(0),
            )?);
            tx.finish()?;
            Ok(DepositReport {
                items,
                account_cents,
            })
        })
        .await
    }
    async fn shift_reports(
        &self,
        terminal_name: Option<String>,
        newest: u32,
    ) -> Result<Vec<ShiftReport>, StoreError> {
        self.read_in_background(move |conn| {
            // The ledger's top-ups of each shift: `sections::SHIFT_TOP_UPS`.
            let mut stmt = conn.prepare(&format!(
                "SELECT s.shift_id, t.name, s.staff_id, s.opened_at, s.closed_at, s.count,
                        s.cash_cents, s.card_cents, s.counted_cash_cents, s.difference_cents,
                        s.recorded_at, COUNT(r.transaction_id),
                        COALESCE(SUM(CASE WHEN r.payment_method = 'cash' THEN r.amount_cents END), 0),
                        COALESCE(SUM(CASE WHEN r.payment_method = 'card' THEN r.amount_cents END), 0)
                 FROM (SELECT c.* FROM shift_closeouts c
                         JOIN terminals ct ON ct.terminal_id = c.terminal_id
                        WHERE ?1 IS NULL OR ct.name = ?1
                        ORDER BY c.closed_at DESC, c.shift_id DESC LIMIT ?2) s
                 JOIN terminals t ON t.terminal_id = s.terminal_id
                 {}
                 GROUP BY s.shift_id
                 ORDER BY s.closed_at, t.name, s.shift_id",
                sections::SHIFT_TOP_UPS
            ))?;
            let rows = stmt.query_map(params![terminal_name, i64::from(newest)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    ShiftReport {
                        shift_id: Uuid::nil(),
                        terminal: r.get(1)?,
                        staff_id: r.get(2)?,
                        opened_at: r.get(3)?,
                        closed_at: r.get(4)?,
                        count: r.get(5)?,
                        cash_cents: Cents::new(r.get(6)?),
                        card_cents: Cents::new(r.get(7)?),
                        counted_cash_cents: Cents::new(r.get(8)?),
                        difference_cents: Cents::new(r.get(9)?),
                        recorded_at: r.get(10)?,
                        ledger_count: r.get(11)?,
                        ledger_cash_cents: Cents::new(r.get(12)?),
                        ledger_card_cents: Cents::new(r.get(13)?),
                    },
                ))
            })?;
            rows.map(|row| {
                let (id, report) = row?;
                Ok(ShiftReport {
                    shift_id: Uuid::parse_str(&id).map_err(internal)?,
                    ..report
                })
            })
            .collect()
        })
        .await
    }
}

/// Column `i` of a report section's row, as its kind says: times are RFC 3339 text here.
fn cell(row: &rusqlite::Row<'_>, i: usize, kind: ColumnKind) -> rusqlite::Result<Cell> {
    Ok(match kind {
        ColumnKind::Text => Cell::Text(row.get::<_, Option<String>>(i)?.unwrap_or_default()),
        ColumnKind::Count | ColumnKind::Cents | ColumnKind::Number => {
            Cell::Int(row.get::<_, Option<i64>>(i)?.unwrap_or(0))
        }
        ColumnKind::Time => Cell::Time(
            row.get::<_, Option<String>>(i)?
                .map(|text| {
                    chrono::DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                i,
                                rusqlite::types::Type::Text,
                                format!("time {text:?}: {e}").into(),
                            )
                        })
                })
                .transpose()?,
        ),
    })
}

/// Adds `message(name, a, b)` to `d` for every row of `sql`, a query of discrepancies with
/// three columns: what it is about and the two amounts that should agree.
fn mismatches(
    conn: &Connection,
    d: &mut Vec<String>,
    sql: &str,
    message: impl Fn(String, i64, i64) -> String,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (name, a, b) = row?;
        d.push(message(name, a, b));
    }
    Ok(())
}

fn audit_books(conn: &Connection) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport::default();
    // One consistent snapshot for every check.
    let tx = conn.unchecked_transaction()?;
    report.cards = tx.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?;
    report.postings = tx.query_row("SELECT count(*) FROM postings", [], |r| r.get(0))?;
    report.transactions = tx.query_row(
        "SELECT count(DISTINCT transaction_id) FROM postings",
        [],
        |r| r.get(0),
    )?;
    report.card_balance_total_cents = tx.query_row(
        "SELECT COALESCE(SUM(balance_cents), 0) FROM cards",
        [],
        |r| r.get(0),
    )?;
    {
        let d = &mut report.discrepancies;
        // One pass over cards and card postings, grouped once (a join of the cards with
        // per-account sums ran as a scan of the sums per card: quadratic in cards). Postings
        // of a card that has no row show up with a balance of 0.
        mismatches(
            &tx,
            d,
            "SELECT card_uid, SUM(balance), SUM(posted) FROM (
                 SELECT card_uid, balance_cents AS balance, 0 AS posted FROM cards
                 UNION ALL
                 SELECT substr(account, 6), 0, amount_cents FROM postings
                 WHERE account LIKE 'card:%')
             GROUP BY card_uid
             HAVING SUM(balance) != SUM(posted)
             ORDER BY card_uid",
            |uid, balance, postings| {
                format!("card {uid}: balance_cents {balance} but its postings sum to {postings}")
            },
        )?;
        let total: i64 = tx.query_row(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM postings",
            [],
            |r| r.get(0),
        )?;
        if total != 0 {
            d.push(format!("all postings sum to {total}, not 0"));
        }
        let mut stmt = tx.prepare(
            "SELECT transaction_id, SUM(amount_cents) FROM postings GROUP BY transaction_id HAVING SUM(amount_cents) != 0",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (tx_id, sum) = row?;
            d.push(format!("transaction {tx_id}: postings sum to {sum}, not 0"));
        }
        let mut stmt = tx.prepare(
            "SELECT DISTINCT account FROM postings WHERE account LIKE 'card:%'
             AND substr(account, 6) NOT IN (SELECT card_uid FROM cards)",
        )?;
        for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
            d.push(format!(
                "account {}: postings for a card that does not exist",
                row?
            ));
        }
        mismatches(
            &tx,
            d,
            "SELECT o.transaction_id, o.total_cents, COALESCE(SUM(i.line_total_cents), 0)
             FROM bar_orders o
             LEFT JOIN bar_order_items i ON i.transaction_id = o.transaction_id
             GROUP BY o.transaction_id HAVING o.total_cents != COALESCE(SUM(i.line_total_cents), 0)",
            |tx_id, total, lines| {
                format!("order {tx_id}: total_cents {total} but its lines sum to {lines}")
            },
        )?;
        mismatches(
            &tx,
            d,
            "SELECT r.transaction_id, r.amount_cents, COALESCE(SUM(i.line_total_cents), 0)
             FROM deposit_returns r
             LEFT JOIN deposit_return_items i ON i.transaction_id = r.transaction_id
             GROUP BY r.transaction_id HAVING r.amount_cents != COALESCE(SUM(i.line_total_cents), 0)
             ORDER BY r.transaction_id",
            |tx_id, amount, lines| {
                format!(
                    "deposit return {tx_id}: amount_cents {amount} but its lines sum to {lines}"
                )
            },
        )?;
        // The deposits liability is the deposit lines of orders still standing less the
        // returns.
        mismatches(
            &tx,
            d,
            "SELECT 'deposits', p.posted, o.lines - r.returned
             FROM (SELECT COALESCE(SUM(amount_cents), 0) AS posted FROM postings
                   WHERE account = 'deposits') p,
                  (SELECT COALESCE(SUM(i.line_total_cents), 0) AS lines
                   FROM bar_order_items i JOIN bar_orders o ON o.transaction_id = i.transaction_id
                   WHERE i.deposit = 1 AND o.voided_by IS NULL) o,
                  (SELECT COALESCE(SUM(amount_cents), 0) AS returned FROM deposit_returns
                   WHERE voided_by IS NULL) r
             WHERE p.posted != o.lines - r.returned",
            |account, posted, expected| {
                format!(
                    "account {account}: postings sum to {posted} but deposit lines sold less \
                     returns (voided ones left out) are {expected}"
                )
            },
        )?;
        // A card's voucher units are what the desk and the checkpoints granted (voided grants
        // left out), and what its daily allowance set them to, less what orders still
        // standing used.
        mismatches(
            &tx,
            d,
            "WITH moves AS (
                 SELECT card_uid, json_extract(details, '$.units') AS units
                 FROM app_transaction_log WHERE actor = 'admin' AND operation = 'voucher_grant'
                 UNION ALL
                 SELECT card_uid, json_extract(details, '$.voucher_units')
                                  - json_extract(details, '$.units_before')
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
             ), sums AS (SELECT card_uid, SUM(units) AS units FROM moves GROUP BY card_uid)
             SELECT c.card_uid, c.voucher_units, COALESCE(s.units, 0)
             FROM cards c LEFT JOIN sums s ON s.card_uid = c.card_uid
             WHERE c.voucher_units != COALESCE(s.units, 0)
             ORDER BY c.card_uid",
            |uid, units, expected| {
                format!(
                    "card {uid}: voucher_units {units} but grants and daily allowances less the vouchers its orders \
                     used (voided ones left out) are {expected}"
                )
            },
        )?;
        for table in ["till_quarter_sales", "product_quarter_sales"] {
            mismatches(
                &tx,
                d,
                &crate::ledger::store::report_sums_recount_sql(table, false),
                crate::ledger::store::sums_recounted,
            )?;
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
                "SELECT t.{id} FROM {table} t WHERE t.{id} NOT IN
                 (SELECT transaction_id FROM idempotency_keys WHERE transaction_id IS NOT NULL)"
            );
            let mut stmt = tx.prepare(&sql)?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                d.push(format!(
                    "{table} {}: applied without its idempotency key, so a replay could apply it again",
                    row?
                ));
            }
        }
        // An order paid by vouchers alone moved no money, and has no postings.
        for (table, moved_money) in [
            ("bar_orders", "COALESCE(t.money_cents, t.total_cents) <> 0"),
            ("recharges", "1 = 1"),
            ("deposit_returns", "1 = 1"),
            ("stripe_recharges", "1 = 1"),
            ("stripe_refunds", "1 = 1"),
            ("card_replacements", "t.amount_cents != 0"),
        ] {
            let sql = format!(
                "SELECT t.transaction_id FROM {table} t WHERE {moved_money} AND NOT EXISTS
                 (SELECT 1 FROM postings p WHERE p.transaction_id = t.transaction_id)"
            );
            let mut stmt = tx.prepare(&sql)?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                d.push(format!("{table} {}: applied without postings", row?));
            }
        }
        // A Stripe credit's refunds add up to what it says was reversed.
        mismatches(
            &tx,
            d,
            "SELECT r.checkout_session_id, r.refunded_cents, COALESCE(SUM(f.amount_cents), 0)
             FROM stripe_recharges r LEFT JOIN stripe_refunds f
               ON f.checkout_session_id = r.checkout_session_id
             GROUP BY r.checkout_session_id
             HAVING r.refunded_cents != COALESCE(SUM(f.amount_cents), 0)",
            |session, said, refunds| {
                format!(
                    "Stripe session {session}: refunded_cents {said} but its refunds sum to {refunds}"
                )
            },
        )?;
        // A replaced card stays blocked as lost for good.
        let mut stmt = tx.prepare(
            "SELECT card_uid, replaced_by FROM cards
             WHERE replaced_by IS NOT NULL AND (status != 'blocked' OR block_reason != 'lost')",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (uid, by) = row?;
            d.push(format!(
                "card {uid}: replaced by {by} but not blocked as lost"
            ));
        }
        let mut stmt = tx.prepare(
            "SELECT card_uid, balance_cents, status FROM cards WHERE balance_cents < 0 AND status != 'blocked'",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })? {
            let (uid, balance, status) = row?;
            d.push(format!(
                "card {uid}: balance_cents {balance} below zero but status {status}"
            ));
        }
    }
    tx.finish()?;
    Ok(report)
}
