//! What terminals pull from the PostgreSQL store (a card, the card feed, the catalog, the
//! staff list) and the scans they upload: the same answers, in the same order, as the
//! SQLite store's `feeds.rs`.
//!
//! Text is ordered with `COLLATE "C"` (byte order, as SQLite compares) and a missing
//! category sorts first (`NULLS FIRST`, as in SQLite), so both backends list alike whatever
//! the database's collation.

use super::admin::{internal, parse_stored};
use super::{PgStore, classify};
use crate::domain::{AgeFlag, CardUid, Cents, MinAge, ProductId, StaffId, TaxRateName};
use crate::ledger::caller::Terminal;
use crate::ledger::store::{
    CardFeedPage, CardView, CatalogProduct, FeedStore, Product, ScanReceipt, StaffRecord,
    StoreError,
};
use crate::protocol::api::{Scan, StaffRole, TerminalStatusReport, format_time};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

/// A row of `card_uid, balance_cents, status, version, updated_at, age_flag, voucher_units,
/// key_version` as the API shows it.
fn card_view(row: &Row) -> Result<CardView, StoreError> {
    let age_flag: Option<String> = row.try_get(5).map_err(classify)?;
    let uid: String = row.try_get(0).map_err(classify)?;
    Ok(CardView {
        card_uid: CardUid::parse(&uid).map_err(internal)?,
        balance_cents: Cents::new(row.try_get(1).map_err(classify)?),
        status: row.try_get(2).map_err(classify)?,
        version: row.try_get(3).map_err(classify)?,
        updated_at: format_time(row.try_get::<_, DateTime<Utc>>(4).map_err(classify)?),
        age_flag: age_flag
            .map(|f| parse_stored(&f, AgeFlag::parse))
            .transpose()?,
        voucher_units: row.try_get(6).map_err(classify)?,
        key_version: row
            .try_get::<_, Option<i32>>(7)
            .map_err(classify)?
            .map(|v| u8::try_from(v).map_err(internal))
            .transpose()?,
    })
}

impl FeedStore for PgStore {
    async fn card(&self, uid: CardUid) -> Result<Option<CardView>, StoreError> {
        self.rows(
            "SELECT card_uid, balance_cents, status, version, updated_at, age_flag, voucher_units,
                    key_version
             FROM cards WHERE card_uid = $1",
            &[&uid.as_str()],
        )
        .await?
        .first()
        .map(card_view)
        .transpose()
    }

    async fn card_feed(&self, since_version: i64, limit: u32) -> Result<CardFeedPage, StoreError> {
        // card_feed() (migrations/postgres/0004_card_feed.sql) waits for the writers in
        // flight and returns only versions below every version still uncommitted, so a
        // terminal that moves its `since` to this page's last version skips nothing.
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let cards = self
            .rows(
                "SELECT card_uid, balance_cents, status, version, updated_at, age_flag,
                        voucher_units, key_version
                 FROM card_feed($1, $2)",
                &[&since_version, &limit],
            )
            .await?
            .iter()
            .map(card_view)
            .collect::<Result<Vec<_>, _>>()?;
        let next_version = cards.last().map_or(since_version, |c| c.version);
        Ok(CardFeedPage {
            cards,
            next_version,
        })
    }

    async fn catalog(&self, point_of_sale: String) -> Result<Vec<CatalogProduct>, StoreError> {
        self.rows(
            "SELECT product_id, name, price_cents, category, tax_rate, min_age,
                    open_price_max_cents, voucher_price, returnable, deposit_product_id
             FROM products
             WHERE point_of_sale = $1 AND active
             ORDER BY category COLLATE \"C\" NULLS FIRST, product_id COLLATE \"C\"",
            &[&point_of_sale],
        )
        .await?
        .iter()
        .map(|row| {
            let id: String = row.try_get(0).map_err(classify)?;
            let tax_rate: Option<String> = row.try_get(4).map_err(classify)?;
            let min_age: Option<i32> = row.try_get(5).map_err(classify)?;
            let open_max: Option<i64> = row.try_get(6).map_err(classify)?;
            let product = Product {
                product_id: ProductId::parse(&id).map_err(internal)?,
                name: row.try_get(1).map_err(classify)?,
                price_cents: Cents::new(row.try_get(2).map_err(classify)?),
                category: row.try_get(3).map_err(classify)?,
                tax_rate: tax_rate
                    .map(|t| TaxRateName::parse(&t))
                    .transpose()
                    .map_err(internal)?,
                min_age: min_age
                    .map(|a| MinAge::new(a.into()))
                    .transpose()
                    .map_err(internal)?,
                open_price_max_cents: open_max.map(Cents::new),
                voucher_price: row
                    .try_get::<_, Option<i32>>(7)
                    .map_err(classify)?
                    .map(i64::from),
                returnable: row.try_get(8).map_err(classify)?,
                deposit_product_id: row
                    .try_get::<_, Option<String>>(9)
                    .map_err(classify)?
                    .map(|d| ProductId::parse(&d))
                    .transpose()
                    .map_err(internal)?,
            };
            CatalogProduct::resolve(product, &self.options.taxes)
        })
        .collect()
    }

    async fn staff(&self) -> Result<Vec<StaffRecord>, StoreError> {
        self.rows(
            "SELECT staff_id, name, role, active, pin_hash FROM staff
             ORDER BY staff_id COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let id: String = row.try_get(0).map_err(classify)?;
            let role: String = row.try_get(2).map_err(classify)?;
            Ok(StaffRecord {
                staff_id: StaffId::parse(&id).map_err(internal)?,
                name: row.try_get(1).map_err(classify)?,
                role: parse_stored(&role, StaffRole::parse)?,
                active: row.try_get(3).map_err(classify)?,
                pin_hash: row.try_get(4).map_err(classify)?,
            })
        })
        .collect()
    }

    async fn record_scans(
        &self,
        terminal: Terminal,
        scans: Vec<Scan>,
    ) -> Result<ScanReceipt, StoreError> {
        // One statement for the whole upload, in the upload's order. SQLite keeps
        // `scanned_at` to the millisecond (its stored text), so a scan sent again with other
        // microseconds is the same scan there: truncating here keeps the two alike.
        let card_uids: Vec<&str> = scans.iter().map(|s| s.card_uid.as_str()).collect();
        let results: Vec<&str> = scans.iter().map(|s| s.result.as_str()).collect();
        let readers: Vec<&str> = scans.iter().map(|s| s.reader.as_str()).collect();
        let scanned_at: Vec<DateTime<Utc>> = scans.iter().map(|s| s.scanned_at).collect();
        let terminal_seqs: Vec<Option<i64>> = scans
            .iter()
            .map(|s| s.terminal_seq.map(|t| t.get()))
            .collect();
        // RETURNING: one row per scan stored now, none for one stored before.
        let inserted = self
            .rows(
                "INSERT INTO nfc_scan_log
                     (terminal_id, card_uid, result, reader, scanned_at, terminal_seq, received_at)
                 SELECT $1, s.card_uid, s.result, s.reader,
                        date_trunc('milliseconds', s.scanned_at), s.terminal_seq,
                        date_trunc('milliseconds', now())
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[])
                      WITH ORDINALITY AS s (card_uid, result, reader, scanned_at, terminal_seq, n)
                 ORDER BY s.n
                 ON CONFLICT (terminal_id, card_uid, reader, scanned_at) DO NOTHING
                 RETURNING 1",
                &[
                    &terminal.terminal_id,
                    &card_uids,
                    &results,
                    &readers,
                    &scanned_at,
                    &terminal_seqs,
                ],
            )
            .await?
            .len();
        let accepted = inserted;
        Ok(ScanReceipt {
            accepted,
            duplicates: scans.len().saturating_sub(accepted),
        })
    }

    async fn record_status(
        &self,
        terminal: Terminal,
        report: TerminalStatusReport,
        received_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let count = |n: u64| i64::try_from(n).map_err(|_| internal(format!("a count of {n}")));
        let oldest = report.oldest_unsent_age_s.map(count).transpose()?;
        // Times to the millisecond, as SQLite keeps them.
        self.rows(
            "INSERT INTO terminal_status (terminal_id, received_at, reported_at, waiting,
                 in_doubt, rejected, oldest_unsent_age_s, card_feed_cursor, reader_state,
                 software_version)
             VALUES ($1, date_trunc('milliseconds', $2::timestamptz),
                     date_trunc('milliseconds', $3::timestamptz), $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (terminal_id) DO UPDATE SET
                 received_at = excluded.received_at, reported_at = excluded.reported_at,
                 waiting = excluded.waiting, in_doubt = excluded.in_doubt,
                 rejected = excluded.rejected,
                 oldest_unsent_age_s = excluded.oldest_unsent_age_s,
                 card_feed_cursor = excluded.card_feed_cursor,
                 reader_state = excluded.reader_state,
                 software_version = excluded.software_version",
            &[
                &terminal.terminal_id,
                &received_at,
                &report.reported_at,
                &count(report.waiting)?,
                &count(report.in_doubt)?,
                &count(report.rejected)?,
                &oldest,
                &report.card_feed_cursor,
                &report.reader_state.as_str(),
                &report.software_version,
            ],
        )
        .await?;
        Ok(())
    }
}
