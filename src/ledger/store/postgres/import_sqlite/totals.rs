//! The figures a move compares between its two sides: rows per table, the cards' balances,
//! and the postings of every account (how many, their sum). The same SQL runs on both
//! databases; a move commits only when the figures are equal. They are no audit (that
//! proves the books balance on one side); they prove both sides hold the same books.

use std::collections::BTreeMap;

/// The sum of every card's balance.
const BALANCE_SQL: &str = "SELECT COALESCE(CAST(sum(balance_cents) AS bigint), 0) FROM cards";
/// Each account's postings: how many, their sum.
const ACCOUNTS_SQL: &str =
    "SELECT account, count(*), CAST(sum(amount_cents) AS bigint) FROM postings GROUP BY account";
/// The headquarters overview's sums (`quarter_totals`, which each side's triggers build from
/// the operations it holds) per kind and mode: operations, cents.
const TAKINGS_SQL: &str = "SELECT kind || ' ' || mode, CAST(sum(operations) AS bigint), \
     CAST(sum(amount_cents) AS bigint) FROM quarter_totals GROUP BY kind, mode";
/// Accounts shown one by one in a summary when they are not cards (cards are summed up:
/// a festival has tens of thousands).
const CARD_ACCOUNT_PREFIX: &str = "card:";
/// Differences listed at most (a broken copy differs everywhere).
const DIFFERENCES_MAX: usize = 50;

/// One account's postings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountTotal {
    /// How many.
    pub postings: i64,
    /// Their sum.
    pub sum_cents: i64,
}

/// What a move compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rows per table, in the order asked for.
    pub rows: Vec<(String, i64)>,
    /// The sum of every card's balance.
    pub card_balance_total_cents: i64,
    /// Every account's postings.
    pub accounts: BTreeMap<String, AccountTotal>,
    /// The overview's sums per kind and mode (`sale online`, ...): operations, cents.
    pub takings: BTreeMap<String, AccountTotal>,
}

fn count_sql(table: &str) -> String {
    if super::DERIVED.contains(&table) {
        // A derived row that sums to nothing (every operation of its quarter voided) is
        // kept where the void came later, and never made where the copy brought the
        // operation voided already: only rows that hold something are compared.
        let holds = if table == "quarter_totals" {
            "operations <> 0 OR amount_cents <> 0"
        } else {
            "lines <> 0"
        };
        return format!("SELECT count(*) FROM {} WHERE {holds}", super::quote(table));
    }
    format!("SELECT count(*) FROM {}", super::quote(table))
}

impl Totals {
    /// The figures of a SQLite ledger.
    pub fn sqlite(conn: &rusqlite::Connection, tables: &[&str]) -> rusqlite::Result<Totals> {
        let mut totals = Totals::default();
        for table in tables {
            let n = conn.query_row(&count_sql(table), [], |r| r.get(0))?;
            totals.rows.push(((*table).to_owned(), n));
        }
        totals.card_balance_total_cents = conn.query_row(BALANCE_SQL, [], |r| r.get(0))?;
        // Rows of (name, count, sum).
        let named = |sql: &str| -> rusqlite::Result<BTreeMap<String, AccountTotal>> {
            conn.prepare(sql)?
                .query_map([], |r| {
                    let total = AccountTotal {
                        postings: r.get(1)?,
                        sum_cents: r.get(2)?,
                    };
                    Ok((r.get(0)?, total))
                })?
                .collect()
        };
        totals.accounts = named(ACCOUNTS_SQL)?;
        totals.takings = named(TAKINGS_SQL)?;
        Ok(totals)
    }

    /// The figures of a PostgreSQL ledger.
    pub async fn postgres(
        client: &impl tokio_postgres::GenericClient,
        tables: &[&str],
    ) -> Result<Totals, tokio_postgres::Error> {
        let mut totals = Totals::default();
        for table in tables {
            let n = client.query_one(&count_sql(table), &[]).await?.get(0);
            totals.rows.push(((*table).to_owned(), n));
        }
        totals.card_balance_total_cents = client.query_one(BALANCE_SQL, &[]).await?.get(0);
        for (sql, into) in [
            (ACCOUNTS_SQL, &mut totals.accounts),
            (TAKINGS_SQL, &mut totals.takings),
        ] {
            for row in client.query(sql, &[]).await? {
                let total = AccountTotal {
                    postings: row.get(1),
                    sum_cents: row.get(2),
                };
                into.insert(row.get(0), total);
            }
        }
        Ok(totals)
    }

    /// The card accounts summed up: how many accounts, postings, and their sum.
    fn cards(&self) -> (usize, AccountTotal) {
        self.accounts
            .iter()
            .filter(|(a, _)| a.starts_with(CARD_ACCOUNT_PREFIX))
            .fold((0, AccountTotal::default()), |(n, sum), (_, t)| {
                (
                    n + 1,
                    AccountTotal {
                        postings: sum.postings + t.postings,
                        sum_cents: sum.sum_cents + t.sum_cents,
                    },
                )
            })
    }
}

/// Every figure that differs between `source` and `target`, one sentence each (at most
/// [`DIFFERENCES_MAX`]); empty when they agree.
pub fn differences(source: &Totals, target: &Totals) -> Vec<String> {
    let mut out = Vec::new();
    if source
        .rows
        .iter()
        .map(|(t, _)| t)
        .ne(target.rows.iter().map(|(t, _)| t))
    {
        out.push("the two sides' tables differ".to_owned());
    }
    for ((table, a), (_, b)) in source.rows.iter().zip(&target.rows) {
        if a != b {
            out.push(format!(
                "{table}: {a} rows in the source, {b} in the target"
            ));
        }
    }
    if source.card_balance_total_cents != target.card_balance_total_cents {
        out.push(format!(
            "card balances: {} cents in the source, {} in the target",
            source.card_balance_total_cents, target.card_balance_total_cents
        ));
    }
    let accounts = source.accounts.keys().chain(target.accounts.keys());
    for account in accounts.collect::<std::collections::BTreeSet<_>>() {
        let (a, b) = (source.accounts.get(account), target.accounts.get(account));
        if a != b {
            out.push(format!(
                "postings of {account}: {a:?} in the source, {b:?} in the target"
            ));
        }
    }
    let takings = source.takings.keys().chain(target.takings.keys());
    for what in takings.collect::<std::collections::BTreeSet<_>>() {
        let (a, b) = (source.takings.get(what), target.takings.get(what));
        if a != b {
            out.push(format!(
                "takings ({what}): {a:?} in the source, {b:?} in the target"
            ));
        }
    }
    if out.len() > DIFFERENCES_MAX {
        let more = out.len() - DIFFERENCES_MAX;
        out.truncate(DIFFERENCES_MAX);
        out.push(format!("and {more} more"));
    }
    out
}

/// Both sides' figures in two columns, for people: rows per table, card balances, each
/// account that is not a card, the card accounts together, and the verdict.
pub fn side_by_side(source: &Totals, target: &Totals) -> String {
    let mut lines: Vec<(String, String, String)> = Vec::new();
    let rows_of = |t: &Totals, table: &str| {
        t.rows
            .iter()
            .find(|(name, _)| name == table)
            .map_or("-".to_owned(), |(_, n)| n.to_string())
    };
    for (table, n) in &source.rows {
        lines.push((
            format!("rows {table}"),
            n.to_string(),
            rows_of(target, table),
        ));
    }
    let all = |t: &Totals| t.rows.iter().map(|(_, n)| n).sum::<i64>().to_string();
    lines.push(("rows (every table)".to_owned(), all(source), all(target)));
    lines.push((
        "card balances (cents)".to_owned(),
        source.card_balance_total_cents.to_string(),
        target.card_balance_total_cents.to_string(),
    ));
    let postings = |t: Option<&AccountTotal>| {
        t.map_or("-".to_owned(), |t| {
            format!("{} / {}", t.postings, t.sum_cents)
        })
    };
    for (account, total) in &source.accounts {
        if !account.starts_with(CARD_ACCOUNT_PREFIX) {
            lines.push((
                format!("postings {account}"),
                postings(Some(total)),
                postings(target.accounts.get(account)),
            ));
        }
    }
    for (what, total) in &source.takings {
        lines.push((
            format!("takings {what}"),
            postings(Some(total)),
            postings(target.takings.get(what)),
        ));
    }
    let ((n_a, cards_a), (n_b, cards_b)) = (source.cards(), target.cards());
    lines.push(("card accounts".to_owned(), n_a.to_string(), n_b.to_string()));
    lines.push((
        "postings card:* (every card account)".to_owned(),
        postings(Some(&cards_a)),
        postings(Some(&cards_b)),
    ));
    let mut out = format!(
        "{:<46}{:>20}{:>20}\n",
        "moved (postings: count / sum of cents)", "sqlite", "postgres"
    );
    for (what, a, b) in lines {
        out.push_str(&format!("  {what:<44}{a:>20}{b:>20}\n"));
    }
    out.push_str(if differences(source, target).is_empty() {
        "the totals agree\n"
    } else {
        "THE TOTALS DIFFER\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(postings_of_card: i64) -> Totals {
        let mut t = Totals::default();
        t.rows.push(("cards".into(), 2));
        t.card_balance_total_cents = 700;
        t.accounts.insert(
            "card:04A1".into(),
            AccountTotal {
                postings: postings_of_card,
                sum_cents: 700,
            },
        );
        t.accounts.insert(
            "cash:Entrance".into(),
            AccountTotal {
                postings: 1,
                sum_cents: -700,
            },
        );
        t
    }

    #[test]
    fn equal_totals_agree_and_any_difference_is_named() {
        assert_eq!(differences(&totals(1), &totals(1)), Vec::<String>::new());
        let text = side_by_side(&totals(1), &totals(1));
        assert!(text.contains("the totals agree"), "{text}");
        assert!(text.contains("postings cash:Entrance"), "{text}");
        let d = differences(&totals(1), &totals(2));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("postings of card:04A1"), "{d:?}");
        let mut fewer = totals(1);
        fewer.rows[0].1 = 1;
        fewer.card_balance_total_cents = 0;
        let d = differences(&totals(1), &fewer);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(side_by_side(&totals(1), &fewer).contains("THE TOTALS DIFFER"));
    }
}
