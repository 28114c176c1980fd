//! The report's sections beyond sales: what each one shows, its columns, and its one query,
//! written once for both backends.
//!
//! # The shared dialect
//!
//! Each query is plain SQL that SQLite and PostgreSQL read alike: sums are cast back to
//! `BIGINT` (PostgreSQL sums `bigint` into `numeric`), booleans are tested with `IS TRUE`
//! (SQLite stores them as 0 and 1), JSON fields are read with `->>`, and there is no
//! `ORDER BY` (the rows are sorted by the program, in byte order, whatever the database's
//! collation). Its parameters are named: `:from` and `:to` (the range, `NULL` when open) and
//! `:limit` (the row limit). SQLite binds them by name; [`postgres_sql`] numbers them for
//! PostgreSQL and types the times. A time column is SQLite's RFC 3339 text and
//! PostgreSQL's `timestamptz`; each backend reads it as such.
//!
//! What each section counts, and why it ties out, is said on its query.

/// How a column's values are read and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text: a name, an id, a state (`-` when empty in a table).
    Text,
    /// A count: summed in the total.
    Count,
    /// Money in cents: summed in the total, shown in the currency in a table.
    Cents,
    /// A number that does not add up (a sequence number).
    Number,
    /// A time, or none.
    Time,
}

impl ColumnKind {
    /// Whether the section's total sums this column.
    pub fn summed(self) -> bool {
        matches!(self, ColumnKind::Count | ColumnKind::Cents)
    }
}

/// One column of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name in CSV and JSON.
    pub name: &'static str,
    /// Its header in a table.
    pub header: &'static str,
    /// What it holds.
    pub kind: ColumnKind,
}

const fn col(name: &'static str, header: &'static str, kind: ColumnKind) -> Column {
    Column { name, header, kind }
}

use ColumnKind::{Cents, Count, Number, Text, Time};

/// A section: its name, its title, its columns and its query in the shared dialect (one
/// column per [`Column`], in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSpec {
    /// Its name in CSV (`--section`) and JSON.
    pub name: &'static str,
    /// Its title in a table.
    pub title: &'static str,
    /// Its columns.
    pub columns: &'static [Column],
    /// Its query.
    pub sql: String,
}

/// `column` within the range: at or after `:since`, before `:until`, which are `:from` and
/// `:to` with no bound made the earliest and latest of times (each backend binds or writes
/// them so), a range an index on `column` answers (`:from IS NULL OR ...` is not, on SQLite).
fn in_range(column: &str) -> String {
    format!("{column} >= :since AND {column} < :until")
}

/// The ledger's top-ups `r` of each shift close-out `s`, written once for `shift list` on
/// both backends and for the `cashier` section: voided ones left out, like the terminal's
/// totals; those in the close-out's range of the terminal's own sequence numbers (an offline
/// top-up replayed after the close still belongs to it, and a terminal clock step moves
/// nothing out of it), or, for a close-out without one, those the terminal made between
/// `opened_at` and `closed_at`; none for an empty shift (no range, nothing taken), whatever
/// its clock says. Each close-out reads its terminal's top-ups through the index on
/// recharges (terminal_id, terminal_seq) (SQLite migration 0015, PostgreSQL 0021): the
/// bounds on `terminal_seq` repeat the `CASE` in a form an index range can use (the range
/// of a close-out that has one, nothing for an empty shift, the terminal's top-ups for one
/// without a range), so the shifts page stays fast whatever the number of top-ups.
pub const SHIFT_TOP_UPS: &str = "LEFT JOIN recharges r ON r.terminal_id = s.terminal_id
          AND r.terminal_seq >= COALESCE(s.first_seq,
                  CASE WHEN s.count = 0 AND s.cash_cents = 0 AND s.card_cents = 0
                       THEN 9223372036854775807 ELSE 0 END)
          AND r.terminal_seq <= COALESCE(s.last_seq, 9223372036854775807)
          AND r.voided_by IS NULL
          AND CASE WHEN s.first_seq IS NOT NULL
                   THEN r.terminal_seq BETWEEN s.first_seq AND s.last_seq
                   WHEN s.count = 0 AND s.cash_cents = 0 AND s.card_cents = 0
                   THEN 1 = 0
                   ELSE r.created_at >= s.opened_at AND r.created_at <= s.closed_at
              END";

/// The `terminal_seq` gaps of terminal `t` (as `/metrics` counts them): the numbers below the
/// highest that arrived and have not.
const GAPS: &str = "t.highest_seen_seq - t.highest_contiguous_seq
     - (SELECT COUNT(*) FROM terminal_seqs s
        WHERE s.terminal_id = t.terminal_id AND s.terminal_seq > t.highest_contiguous_seq)";

const DEPOSITS: &[Column] = &[
    col("product_id", "ITEM", Text),
    col("out_quantity", "OUT", Count),
    col("out_cents", "OUT_AMOUNT", Cents),
    col("returned_quantity", "RETURNED", Count),
    col("returned_cents", "RETURNED_AMOUNT", Cents),
    col("outstanding_quantity", "OUTSTANDING", Count),
    col("outstanding_cents", "OUTSTANDING_AMOUNT", Cents),
];

const VOUCHERS: &[Column] = &[
    col("source", "WHERE", Text),
    col("granted_units", "GRANTED", Count),
    col("used_units", "USED", Count),
];

const TOP_UPS: &[Column] = &[
    col("checkpoint", "CHECKPOINT", Text),
    col("staff_id", "STAFF", Text),
    col("payment_method", "METHOD", Text),
    col("top_ups", "TOP_UPS", Count),
    col("amount_cents", "AMOUNT", Cents),
    col("refunded_cents", "REFUNDED", Cents),
];

const CASHIER: &[Column] = &[
    col("checkpoint", "CHECKPOINT", Text),
    col("staff_id", "STAFF", Text),
    col("opened_at", "OPENED", Time),
    col("closed_at", "CLOSED", Time),
    col("recorded_cash_cents", "RECORDED_CASH", Cents),
    col("counted_cash_cents", "COUNTED_CASH", Cents),
    col("difference_cents", "DIFFERENCE", Cents),
    col("terminal_cash_cents", "TERMINAL_CASH", Cents),
];

const TERMINAL_SYNC: &[Column] = &[
    col("terminal", "TERMINAL", Text),
    col("kind", "KIND", Text),
    col("point_of_sale", "POINT_OF_SALE", Text),
    col("token", "TOKEN", Text),
    col("last_seen_at", "LAST_SEEN", Time),
    col("highest_contiguous_seq", "CONTIGUOUS_SEQ", Number),
    col("missing_seqs", "GAPS", Number),
    col("offline_received", "OFFLINE_RECEIVED", Count),
    col("declined", "DECLINED", Count),
];

const CARDS: &[Column] = &[
    col("card_uid", "CARD", Text),
    col("status", "STATUS", Text),
    col("block_reason", "REASON", Text),
    col("replaced_by", "REPLACED_BY", Text),
    col("updated_at", "LAST_CHANGE", Time),
    col("debt_cents", "DEBT", Cents),
    col("held_cents", "HELD", Cents),
];

const FLAGGED_SALES: &[Column] = &[
    col("terminal", "TERMINAL", Text),
    col("flags", "FLAGS", Text),
    col("staff_id", "STAFF", Text),
    col("card_uid", "CARD", Text),
    col("created_at", "MADE", Time),
    col("terminal_seq", "SEQ", Number),
    col("total_cents", "TOTAL", Cents),
];

/// The flags of standing orders that `flagged_sales` lists.
pub const REPORTED_FLAGS: [&str; 2] = ["PRICE_DIFFERS_FROM_CATALOG", "STAFF_INACTIVE"];

/// Every section after the sales ones, in report order.
pub fn specs() -> Vec<SectionSpec> {
    vec![
        SectionSpec {
            name: "deposits",
            title: "Deposits on returnable items (made in the range)",
            columns: DEPOSITS,
            // Deposit lines of standing orders, and standing returns, each by the time the
            // terminal made it. Over the whole festival the outstanding amount is the
            // `deposits` account's balance, which `audit` proves.
            sql: format!(
                "SELECT product_id, CAST(SUM(out_q) AS BIGINT), CAST(SUM(out_c) AS BIGINT),
                        CAST(SUM(ret_q) AS BIGINT), CAST(SUM(ret_c) AS BIGINT),
                        CAST(SUM(out_q) - SUM(ret_q) AS BIGINT),
                        CAST(SUM(out_c) - SUM(ret_c) AS BIGINT)
                 FROM (SELECT i.product_id, i.quantity AS out_q, i.line_total_cents AS out_c,
                              0 AS ret_q, 0 AS ret_c
                       FROM bar_order_items i
                       JOIN bar_orders o ON o.transaction_id = i.transaction_id
                       WHERE i.deposit IS TRUE AND o.voided_by IS NULL AND {o}
                       UNION ALL
                       SELECT i.product_id, 0, 0, i.quantity, i.line_total_cents
                       FROM deposit_return_items i
                       JOIN deposit_returns r ON r.transaction_id = i.transaction_id
                       WHERE r.voided_by IS NULL AND {r}) AS d
                 GROUP BY product_id LIMIT :limit",
                o = in_range("o.created_at"),
                r = in_range("r.created_at"),
            ),
        },
        SectionSpec {
            name: "vouchers",
            title: "Voucher units granted and used",
            columns: VOUCHERS,
            // Granted: standing checkpoint grants (by the checkpoint terminal), the desk's
            // grants and what the daily allowances changed (from the audit log), and, in a
            // report of the whole festival (neither `--from` nor `--to`), what housekeeping
            // folded out of archived audit-log rows, whose times are gone. Used: standing
            // orders, by point of sale. Over the whole festival, granted less used is what
            // the cards hold, which `audit` proves card by card (a card replacement moves
            // units between cards and changes no total).
            sql: format!(
                "SELECT source, CAST(SUM(granted) AS BIGINT), CAST(SUM(used) AS BIGINT)
                 FROM (SELECT 'checkpoint ' || t.name AS source, g.units AS granted, 0 AS used
                       FROM voucher_grants g JOIN terminals t ON t.terminal_id = g.terminal_id
                       WHERE g.voided_by IS NULL AND {g}
                       UNION ALL
                       SELECT 'desk', CAST(l.details ->> 'units' AS BIGINT), 0
                       FROM app_transaction_log l
                       WHERE l.actor = 'admin' AND l.operation = 'voucher_grant' AND {l}
                       UNION ALL
                       SELECT 'daily allowance',
                              CAST(l.details ->> 'voucher_units' AS BIGINT)
                              - CAST(l.details ->> 'units_before' AS BIGINT), 0
                       FROM app_transaction_log l
                       WHERE l.actor = 'admin' AND l.operation IN ('voucher_daily', 'voucher_day')
                         AND {l}
                       UNION ALL
                       SELECT 'archived desk and daily moves', a.voucher_units, 0
                       FROM archived_voucher_moves a WHERE :from IS NULL AND :to IS NULL
                       UNION ALL
                       SELECT 'bar ' || o.point_of_sale, 0, o.voucher_units
                       FROM bar_orders o
                       WHERE o.voided_by IS NULL AND o.voucher_units IS NOT NULL
                         AND o.voucher_units <> 0 AND {o}) AS v
                 GROUP BY source LIMIT :limit",
                g = in_range("g.created_at"),
                l = in_range("l.occurred_at"),
                o = in_range("o.created_at"),
            ),
        },
        SectionSpec {
            name: "top_ups",
            title: "Top-ups by checkpoint, staff member and payment method",
            columns: TOP_UPS,
            // Standing top-ups at checkpoints by the time the terminal made them; Stripe's
            // credits and refunds by the time the ledger applied them.
            sql: format!(
                "SELECT source, staff, method, CAST(SUM(n) AS BIGINT), CAST(SUM(amount) AS BIGINT),
                        CAST(SUM(refunded) AS BIGINT)
                 FROM (SELECT t.name AS source, r.staff_id AS staff, r.payment_method AS method,
                              1 AS n, r.amount_cents AS amount, 0 AS refunded
                       FROM recharges r JOIN terminals t ON t.terminal_id = r.terminal_id
                       WHERE r.voided_by IS NULL AND {r}
                       UNION ALL
                       SELECT 'stripe', '', 'online', 1, s.amount_cents, 0
                       FROM stripe_recharges s WHERE {s}
                       UNION ALL
                       SELECT 'stripe', '', 'online', 0, 0, f.amount_cents
                       FROM stripe_refunds f WHERE {f}) AS x
                 GROUP BY source, staff, method LIMIT :limit",
                r = in_range("r.created_at"),
                s = in_range("s.processed_at"),
                f = in_range("f.processed_at"),
            ),
        },
        SectionSpec {
            name: "cashier",
            title: "Cashier close-outs: recorded against counted cash",
            columns: CASHIER,
            // Each close-out closed in the range: the cash the ledger recorded for the
            // shift (its standing cash top-ups, [`SHIFT_TOP_UPS`]), the cash counted, their difference (counted less recorded), and what
            // the terminal itself totalled.
            sql: format!(
                "SELECT t.name, s.staff_id, s.opened_at, s.closed_at,
                        CAST(COALESCE(SUM(CASE WHEN r.payment_method = 'cash'
                                               THEN r.amount_cents END), 0) AS BIGINT),
                        CAST(s.counted_cash_cents AS BIGINT),
                        CAST(s.counted_cash_cents
                             - COALESCE(SUM(CASE WHEN r.payment_method = 'cash'
                                                 THEN r.amount_cents END), 0) AS BIGINT),
                        CAST(s.cash_cents AS BIGINT)
                 FROM shift_closeouts s
                 JOIN terminals t ON t.terminal_id = s.terminal_id
                 {SHIFT_TOP_UPS}
                 WHERE {s}
                 GROUP BY s.shift_id, t.name, s.staff_id, s.opened_at, s.closed_at,
                          s.counted_cash_cents, s.cash_cents
                 LIMIT :limit",
                s = in_range("s.closed_at"),
            ),
        },
        SectionSpec {
            name: "terminal_sync",
            title: "Terminals: sync state",
            columns: TERMINAL_SYNC,
            // Every terminal as it stands now (its token active or revoked, when it was last
            // heard, its sequence numbers), the offline operations it sent that were applied
            // (standing or voided since), made in the range, and the operations the ledger
            // declined and recorded in the audit log (funds, a blocked card; an offline
            // operation is never declined for the card's state), logged in the range.
            // A refusal before anything is written (an unknown staff member, a role that may
            // not, a malformed request) is recorded nowhere: on a terminal that goes on, its
            // `terminal_seq` shows as a gap.
            sql: format!(
                "SELECT t.name, t.kind, t.point_of_sale,
                        CASE WHEN t.active IS TRUE THEN 'active' ELSE 'revoked' END,
                        t.last_seen_at, CAST(t.highest_contiguous_seq AS BIGINT),
                        CAST({GAPS} AS BIGINT),
                        CAST(COALESCE(o.n, 0) AS BIGINT), CAST(COALESCE(d.n, 0) AS BIGINT)
                 FROM terminals t
                 LEFT JOIN (SELECT terminal_id, COUNT(*) AS n
                            FROM (SELECT terminal_id FROM bar_orders
                                  WHERE mode = 'offline' AND {created}
                                  UNION ALL
                                  SELECT terminal_id FROM recharges
                                  WHERE mode = 'offline' AND {created}
                                  UNION ALL
                                  SELECT terminal_id FROM deposit_returns
                                  WHERE mode = 'offline' AND {created}
                                  UNION ALL
                                  SELECT terminal_id FROM voucher_grants
                                  WHERE mode = 'offline' AND {created}) AS x
                            GROUP BY terminal_id) o ON o.terminal_id = t.terminal_id
                 LEFT JOIN (SELECT actor, COUNT(*) AS n FROM app_transaction_log
                            WHERE outcome = 'declined' AND {occurred}
                            GROUP BY actor) d ON d.actor = 'terminal:' || t.name
                 LIMIT :limit",
                created = in_range("created_at"),
                occurred = in_range("occurred_at"),
            ),
        },
        SectionSpec {
            name: "cards",
            title: "Cards in debt or blocked (now)",
            columns: CARDS,
            // Every card below zero or blocked, as it stands now (the range does not apply):
            // its debt, or the money held on a blocked card.
            sql: "SELECT c.card_uid, c.status, COALESCE(c.block_reason, ''),
                         COALESCE(c.replaced_by, ''), c.updated_at,
                         CAST(CASE WHEN c.balance_cents < 0 THEN -c.balance_cents ELSE 0 END
                              AS BIGINT),
                         CAST(CASE WHEN c.balance_cents > 0 THEN c.balance_cents ELSE 0 END
                              AS BIGINT)
                  FROM cards c
                  WHERE c.balance_cents < 0 OR c.status = 'blocked'
                  LIMIT :limit"
                .to_owned(),
        },
        SectionSpec {
            name: "flagged_sales",
            title: "Sales flagged when they arrived (standing orders)",
            columns: FLAGGED_SALES,
            // Standing orders the ledger applied as sold although they differed from what
            // it knew: a price or product other than the catalog's, or a staff member
            // disabled by the time the order arrived. One row per order, with those of
            // `REPORTED_FLAGS` it carries, space-separated in that order.
            sql: {
                let has = |flag: &str| format!("CAST(o.flags AS TEXT) LIKE '%\"{flag}\"%'");
                let [a, b] = REPORTED_FLAGS;
                format!(
                    "SELECT t.name,
                            TRIM(CASE WHEN {has_a} THEN '{a}' ELSE '' END || ' '
                                 || CASE WHEN {has_b} THEN '{b}' ELSE '' END),
                            o.staff_id, o.card_uid, o.created_at,
                            CAST(o.terminal_seq AS BIGINT), CAST(o.total_cents AS BIGINT)
                     FROM bar_orders o JOIN terminals t ON t.terminal_id = o.terminal_id
                     WHERE o.voided_by IS NULL AND o.flags <> '[]' AND ({has_a} OR {has_b})
                       AND {range}
                     LIMIT :limit",
                    has_a = has(a),
                    has_b = has(b),
                    range = in_range("o.created_at"),
                )
            },
        },
    ]
}

/// A parameter of the shared dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `:from`, a time or `NULL`.
    From,
    /// `:to`, a time or `NULL`.
    To,
    /// `:limit`, a row count.
    Limit,
}

/// `sql` for PostgreSQL: each named parameter becomes `$n` in the order they first appear
/// (PostgreSQL refuses a parameter it cannot type, so only those used are numbered), typed;
/// returns the statement and the parameters in `$n` order.
pub fn postgres_sql(sql: &str) -> (String, Vec<Param>) {
    const NAMES: [(&str, Param, &str); 5] = [
        (":from", Param::From, "$N::timestamptz"),
        (":to", Param::To, "$N::timestamptz"),
        (
            ":since",
            Param::From,
            "COALESCE($N::timestamptz, '-infinity')",
        ),
        (":until", Param::To, "COALESCE($N::timestamptz, 'infinity')"),
        (":limit", Param::Limit, "$N::bigint"),
    ];
    let mut out = String::with_capacity(sql.len());
    let mut order: Vec<Param> = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find([':', '\'']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(literal) = tail.strip_prefix('\'') {
            // A string literal is copied as it is, up to its closing quote (a doubled quote
            // inside it closes and reopens it, which comes to the same).
            let end = literal.find('\'').map_or(tail.len(), |i| i + 2);
            out.push_str(&tail[..end]);
            rest = &tail[end..];
            continue;
        }
        let named = NAMES.iter().find(|(name, ..)| {
            tail.starts_with(name)
                && !tail[name.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        match named {
            Some((name, param, ty)) => {
                let n = match order.iter().position(|p| p == param) {
                    Some(i) => i + 1,
                    None => {
                        order.push(*param);
                        order.len()
                    }
                };
                out.push_str(&ty.replace("$N", &format!("${n}")));
                rest = &tail[name.len()..];
            }
            None => {
                out.push(':');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    (out, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_only_the_parameters_used() {
        let (sql, params) = postgres_sql(
            "SELECT 1 WHERE x < :to AND (:to IS NULL) AND ':from' || 'it''s :to' LIMIT :limit \
             AND y >= :since AND y < :until",
        );
        assert_eq!(
            sql,
            "SELECT 1 WHERE x < $1::timestamptz AND ($1::timestamptz IS NULL) AND ':from' || \
             'it''s :to' LIMIT $2::bigint AND y >= COALESCE($3::timestamptz, '-infinity') \
             AND y < COALESCE($1::timestamptz, 'infinity')"
        );
        assert_eq!(params, [Param::To, Param::Limit, Param::From]);
    }

    #[test]
    fn every_section_names_each_of_its_columns_once() {
        let specs = specs();
        for spec in &specs {
            let mut names: Vec<_> = spec.columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), spec.columns.len(), "{}", spec.name);
            assert!(spec.sql.contains(":limit"), "{} is bounded", spec.name);
        }
    }
}
