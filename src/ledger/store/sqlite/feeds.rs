//! What terminals pull from the SQLite store (a card, the card feed, the catalog, the staff
//! list) and the scans they upload.

use super::{SqliteStore, internal, parse_stored};
use crate::domain::{AgeFlag, CardUid, Cents, MinAge, ProductId, StaffId, TaxRateName};
use crate::ledger::caller::Terminal;
use crate::ledger::store::{
    CardFeedPage, CardView, CatalogProduct, FeedStore, Product, ScanReceipt, StaffRecord,
    StoreError,
};
use crate::protocol::api::{Scan, StaffRole, TerminalStatusReport, format_time};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;

/// The columns a card view reads, in [`card_view`]'s order.
const CARD_COLUMNS: &str =
    "card_uid, balance_cents, status, version, updated_at, age_flag, voucher_units, key_version";

type CardRow = (
    String,
    i64,
    String,
    i64,
    String,
    Option<String>,
    i64,
    Option<u8>,
);

fn card_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<CardRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn to_card_view(row: CardRow) -> Result<CardView, StoreError> {
    Ok(CardView {
        card_uid: CardUid::parse(&row.0).map_err(internal)?,
        balance_cents: Cents::new(row.1),
        status: row.2,
        version: row.3,
        updated_at: row.4,
        age_flag: row
            .5
            .map(|f| parse_stored(&f, AgeFlag::parse))
            .transpose()?,
        voucher_units: row.6,
        key_version: row.7,
    })
}

impl FeedStore for SqliteStore {
    async fn card(&self, uid: CardUid) -> Result<Option<CardView>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {CARD_COLUMNS} FROM cards WHERE card_uid = ?1"
            ))?
            .query_row([uid.as_str()], card_view)
            .optional()?
            .map(to_card_view)
            .transpose()
        })
        .await
    }

    async fn card_feed(&self, since_version: i64, limit: u32) -> Result<CardFeedPage, StoreError> {
        self.read(move |conn| {
            let rows: Vec<_> = conn
                .prepare_cached(&format!(
                    "SELECT {CARD_COLUMNS} FROM cards WHERE version > ?1 ORDER BY version LIMIT ?2"
                ))?
                .query_map(params![since_version, limit], card_view)?
                .collect::<Result<_, _>>()?;
            let cards = rows
                .into_iter()
                .map(to_card_view)
                .collect::<Result<Vec<_>, _>>()?;
            let next_version = cards.last().map_or(since_version, |c| c.version);
            Ok(CardFeedPage {
                cards,
                next_version,
            })
        })
        .await
    }

    async fn catalog(&self, point_of_sale: String) -> Result<Vec<CatalogProduct>, StoreError> {
        let taxes = Arc::clone(&self.inner.taxes);
        self.read(move |conn| {
            let rows: Vec<Product> = conn
                .prepare_cached(
                    "SELECT product_id, name, price_cents, category, tax_rate, min_age,
                            open_price_max_cents, voucher_price, returnable, deposit_product_id
                     FROM products
                     WHERE point_of_sale = ?1 AND active = 1 ORDER BY category, product_id",
                )?
                .query_map([point_of_sale], |r| {
                    Ok((
                        (
                            r.get::<_, String>(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ),
                        (
                            r.get::<_, Option<i64>>(5)?,
                            r.get::<_, Option<i64>>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                            r.get::<_, bool>(8)?,
                            r.get::<_, Option<String>>(9)?,
                        ),
                    ))
                })?
                .map(|row| {
                    let (
                        (id, name, price, category, tax_rate),
                        (min_age, open_max, voucher_price, returnable, deposit),
                    ) = row?;
                    Ok(Product {
                        product_id: ProductId::parse(&id).map_err(internal)?,
                        name,
                        price_cents: Cents::new(price),
                        category,
                        tax_rate: tax_rate
                            .map(|t| TaxRateName::parse(&t))
                            .transpose()
                            .map_err(internal)?,
                        min_age: min_age.map(MinAge::new).transpose().map_err(internal)?,
                        open_price_max_cents: open_max.map(Cents::new),
                        voucher_price,
                        returnable,
                        deposit_product_id: deposit
                            .map(|d| ProductId::parse(&d))
                            .transpose()
                            .map_err(internal)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            rows.into_iter()
                .map(|product| CatalogProduct::resolve(product, &taxes))
                .collect()
        })
        .await
    }

    async fn staff(&self) -> Result<Vec<StaffRecord>, StoreError> {
        self.read(|conn| {
            let rows: Vec<(String, String, String, bool, String)> = conn
                .prepare_cached(
                    "SELECT staff_id, name, role, active, pin_hash FROM staff ORDER BY staff_id",
                )?
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(id, name, role, active, pin_hash)| {
                    Ok(StaffRecord {
                        staff_id: StaffId::parse(&id).map_err(internal)?,
                        name,
                        role: parse_stored(&role, StaffRole::parse)?,
                        active,
                        pin_hash,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_scans(
        &self,
        terminal: Terminal,
        scans: Vec<Scan>,
    ) -> Result<ScanReceipt, StoreError> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT OR IGNORE INTO nfc_scan_log (terminal_id, card_uid, result, reader, scanned_at, terminal_seq, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let now = format_time(Utc::now());
            let mut accepted = 0;
            for s in &scans {
                accepted += stmt.execute(params![
                    terminal.terminal_id.to_string(),
                    s.card_uid.as_str(),
                    s.result,
                    s.reader,
                    format_time(s.scanned_at),
                    s.terminal_seq.map(|t| t.get()),
                    now
                ])?;
            }
            Ok(ScanReceipt { accepted, duplicates: scans.len() - accepted })
        })
        .await
    }

    async fn record_status(
        &self,
        terminal: Terminal,
        report: TerminalStatusReport,
        received_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let count = |n: u64| i64::try_from(n).map_err(|_| internal(format!("a count of {n}")));
        let (waiting, in_doubt, rejected) = (
            count(report.waiting)?,
            count(report.in_doubt)?,
            count(report.rejected)?,
        );
        let oldest = report.oldest_unsent_age_s.map(count).transpose()?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO terminal_status (terminal_id, received_at, reported_at, waiting,
                     in_doubt, rejected, oldest_unsent_age_s, card_feed_cursor, reader_state,
                     software_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (terminal_id) DO UPDATE SET
                     received_at = excluded.received_at, reported_at = excluded.reported_at,
                     waiting = excluded.waiting, in_doubt = excluded.in_doubt,
                     rejected = excluded.rejected,
                     oldest_unsent_age_s = excluded.oldest_unsent_age_s,
                     card_feed_cursor = excluded.card_feed_cursor,
                     reader_state = excluded.reader_state,
                     software_version = excluded.software_version",
            )?
            .execute(params![
                terminal.terminal_id.to_string(),
                format_time(received_at),
                format_time(report.reported_at),
                waiting,
                in_doubt,
                rejected,
                oldest,
                report.card_feed_cursor,
                report.reader_state.as_str(),
                report.software_version,
            ])?;
            Ok(())
        })
        .await
    }
}
