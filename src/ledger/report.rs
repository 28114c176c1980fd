//! `cashless ledger report`: what was sold, when, where and by whom, split by VAT rate, for
//! an accountant closing the books and a bar manager comparing bars.
//!
//! A sale is an order line of an order that stands (not voided, whenever the void came), in
//! the range by the time the terminal made it (`created_at`: an offline sale at 23:50 replayed
//! at 02:00 is in the 23:00 hour). Deposit lines are not sales (their money is owed back);
//! units paid with vouchers count in the quantity but move no money, so no net and no tax.
//! Net plus tax is gross, the money the cards paid for the goods; summed over any one
//! dimension it is what the order postings credit to `revenue:*` and `vat:*`.
//!
//! Each dimension is one `GROUP BY` in the database, all of them in one snapshot
//! ([`crate::ledger::store::ReportStore::sales`]), so every section sums to the same while
//! orders keep arriving, and what the report holds grows with the number of points of sale, terminals,
//! products, staff and hours, never with the number of orders; a dimension with more than
//! [`REPORT_ROWS_MAX`] rows is refused rather than cut.

use crate::domain::{Cents, FestivalDay};
use crate::ledger::config::LedgerConfig;
use crate::ledger::store::ReportStore;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Serialize;
use std::io::Write;

/// The most rows one dimension of a report may have.
pub const REPORT_ROWS_MAX: u32 = 100_000;

/// What sales are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesDimension {
    /// The point of sale the terminal served.
    PointOfSale,
    /// The terminal, by name.
    Terminal,
    /// The product id.
    Product,
    /// The staff member logged in.
    Staff,
    /// The hour the terminal made the sale, in the festival's `utc_offset`.
    Hour,
}

impl SalesDimension {
    /// Every dimension, in report order.
    pub const ALL: [SalesDimension; 5] = [
        SalesDimension::PointOfSale,
        SalesDimension::Terminal,
        SalesDimension::Product,
        SalesDimension::Staff,
        SalesDimension::Hour,
    ];

    /// The column the dimension groups by, the same on both backends (orders `o`, their lines
    /// `i`, their terminal `t`); `None` for the hour, which each backend computes with its
    /// own date functions.
    pub fn key_column(self) -> Option<&'static str> {
        match self {
            SalesDimension::PointOfSale => Some("o.point_of_sale"),
            SalesDimension::Terminal => Some("t.name"),
            SalesDimension::Product => Some("i.product_id"),
            SalesDimension::Staff => Some("o.staff_id"),
            SalesDimension::Hour => None,
        }
    }

    /// The section's name in CSV and JSON.
    pub fn section(self) -> &'static str {
        match self {
            SalesDimension::PointOfSale => "sales_by_point_of_sale",
            SalesDimension::Terminal => "sales_by_terminal",
            SalesDimension::Product => "sales_by_product",
            SalesDimension::Staff => "sales_by_staff",
            SalesDimension::Hour => "sales_by_hour",
        }
    }

    /// The section's title and key column in a table.
    fn title(self) -> (&'static str, &'static str) {
        match self {
            SalesDimension::PointOfSale => ("Sales by point of sale", "POINT_OF_SALE"),
            SalesDimension::Terminal => ("Sales by terminal", "TERMINAL"),
            SalesDimension::Product => ("Sales by product", "PRODUCT"),
            SalesDimension::Staff => ("Sales by staff member", "STAFF"),
            SalesDimension::Hour => ("Sales by hour", "HOUR"),
        }
    }
}

/// What the sales report asks the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SalesQuery {
    /// Sales made at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Sales made before this time.
    pub to: Option<DateTime<Utc>>,
    /// The festival's offset from UTC, in seconds, for [`SalesDimension::Hour`].
    pub utc_offset_s: i32,
    /// At most this many rows per dimension; one more means the report is refused.
    pub limit: u32,
}

/// Each dimension (in [`SalesDimension::ALL`]'s order) and its rows, read in one snapshot.
pub type SalesSections = Vec<(SalesDimension, Vec<SalesRow>)>;

/// One row of a dimension: a key and a VAT rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SalesRow {
    /// The point of sale, terminal, product, staff id, or hour (`YYYY-MM-DDTHH:00`, local).
    pub key: String,
    /// The VAT rate's name (`[taxes]`); empty for lines sold before VAT was recorded.
    pub tax_rate: String,
    /// Units sold, those paid with vouchers included.
    pub quantity: i64,
    /// Money without VAT.
    pub net_cents: i64,
    /// VAT.
    pub tax_cents: i64,
}

impl SalesRow {
    /// Net plus tax.
    pub fn gross_cents(&self) -> i64 {
        self.net_cents.saturating_add(self.tax_cents)
    }
}

/// The sums of a section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SalesTotal {
    /// Units.
    pub quantity: i64,
    /// Net.
    pub net_cents: i64,
    /// VAT.
    pub tax_cents: i64,
    /// Gross.
    pub gross_cents: i64,
}

/// Sums `rows`.
pub fn total(rows: &[SalesRow]) -> SalesTotal {
    rows.iter().fold(SalesTotal::default(), |t, r| SalesTotal {
        quantity: t.quantity.saturating_add(r.quantity),
        net_cents: t.net_cents.saturating_add(r.net_cents),
        tax_cents: t.tax_cents.saturating_add(r.tax_cents),
        gross_cents: t.gross_cents.saturating_add(r.gross_cents()),
    })
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns, amounts in the currency, a title and a total per section.
    Table,
    /// One CSV document: `section,key,tax_rate,quantity,net_cents,tax_cents,gross_cents`.
    Csv,
    /// One JSON document: the range, the currency and each section's rows and total.
    Json,
}

/// The range of a report, as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRange {
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive).
    pub to: Option<DateTime<Utc>>,
}

/// A `--from` or `--to` value: an RFC 3339 time (`2026-07-01T18:00:00+02:00`), or a date
/// (`2026-07-01`), which means the start of that festival day (`[festival] day_starts_at`).
pub fn parse_bound(text: &str, day: &FestivalDay) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.start_of(date));
    }
    Err(format!(
        "{text:?} is neither a time like 2026-07-01T18:00:00+02:00 nor a date like 2026-07-01"
    ))
}

/// The range from the two bounds; `from` must come before `to`.
pub fn range(
    from: Option<&str>,
    to: Option<&str>,
    day: &FestivalDay,
) -> Result<ReportRange, String> {
    let from = from
        .map(|f| parse_bound(f, day).map_err(|e| format!("--from: {e}")))
        .transpose()?;
    let to = to
        .map(|t| parse_bound(t, day).map_err(|e| format!("--to: {e}")))
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(format!(
            "--from ({}) must be before --to ({})",
            f.to_rfc3339(),
            t.to_rfc3339()
        ));
    }
    Ok(ReportRange { from, to })
}

/// The report's sections, computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesReport {
    /// The range.
    pub range: ReportRange,
    /// The festival's offset, which the hours are in.
    pub utc_offset: FixedOffset,
    /// The currency, for the table.
    pub currency: String,
    /// Each dimension and its rows.
    pub sections: SalesSections,
}

#[derive(Serialize)]
struct JsonSection<'a> {
    name: &'static str,
    rows: Vec<JsonRow<'a>>,
    total: SalesTotal,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    row: &'a SalesRow,
    gross_cents: i64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    from: Option<String>,
    to: Option<String>,
    utc_offset: String,
    currency: &'a str,
    sections: Vec<JsonSection<'a>>,
}

/// Reads the sales in `range` (one snapshot), refusing a dimension of more than
/// [`REPORT_ROWS_MAX`] rows rather than cutting it.
pub async fn sales(
    store: &impl ReportStore,
    range: ReportRange,
    config: &LedgerConfig,
) -> anyhow::Result<SalesReport> {
    let utc_offset = config.festival_day.utc_offset();
    let sections = store
        .sales(SalesQuery {
            from: range.from,
            to: range.to,
            utc_offset_s: utc_offset.local_minus_utc(),
            limit: REPORT_ROWS_MAX,
        })
        .await?;
    for (dimension, rows) in &sections {
        if rows.len() > REPORT_ROWS_MAX as usize {
            anyhow::bail!(
                "{} has more than {REPORT_ROWS_MAX} rows; report a shorter range (--from, --to)",
                dimension.section()
            );
        }
    }
    Ok(SalesReport {
        range,
        utc_offset,
        currency: config.currency.clone(),
        sections,
    })
}

/// Writes `report` to `out` in `format`.
pub fn write(
    report: &SalesReport,
    format: ReportFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        ReportFormat::Table => write_table(report, out),
        ReportFormat::Csv => write_csv(report, out),
        ReportFormat::Json => {
            let doc = JsonReport {
                from: report.range.from.map(crate::protocol::api::format_time),
                to: report.range.to.map(crate::protocol::api::format_time),
                utc_offset: report.utc_offset.to_string(),
                currency: &report.currency,
                sections: report
                    .sections
                    .iter()
                    .map(|(dimension, rows)| JsonSection {
                        name: dimension.section(),
                        rows: rows
                            .iter()
                            .map(|row| JsonRow {
                                row,
                                gross_cents: row.gross_cents(),
                            })
                            .collect(),
                        total: total(rows),
                    })
                    .collect(),
            };
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)
        }
    }
}

fn write_csv(report: &SalesReport, out: &mut impl Write) -> std::io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record([
        "section",
        "key",
        "tax_rate",
        "quantity",
        "net_cents",
        "tax_cents",
        "gross_cents",
    ])?;
    for (dimension, rows) in &report.sections {
        for r in rows {
            csv.write_record([
                dimension.section(),
                &r.key,
                &r.tax_rate,
                &r.quantity.to_string(),
                &r.net_cents.to_string(),
                &r.tax_cents.to_string(),
                &r.gross_cents().to_string(),
            ])?;
        }
    }
    csv.flush()
}

fn write_table(report: &SalesReport, out: &mut impl Write) -> std::io::Result<()> {
    let bound = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.with_timezone(&report.utc_offset).to_rfc3339(),
        )
    };
    writeln!(
        out,
        "Sales from {} to {} (standing orders, by the time the terminal made them; amounts in {}, \
         hours at UTC{})",
        bound(report.range.from),
        bound(report.range.to),
        report.currency,
        report.utc_offset
    )?;
    for (dimension, rows) in &report.sections {
        let (title, key) = dimension.title();
        writeln!(out, "\n{title}")?;
        let mut cells: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.key.clone(),
                    if r.tax_rate.is_empty() {
                        "-".to_owned()
                    } else {
                        r.tax_rate.clone()
                    },
                    r.quantity.to_string(),
                    Cents::new(r.net_cents).to_string(),
                    Cents::new(r.tax_cents).to_string(),
                    Cents::new(r.gross_cents()).to_string(),
                ]
            })
            .collect();
        let t = total(rows);
        cells.push([
            "TOTAL".to_owned(),
            String::new(),
            t.quantity.to_string(),
            Cents::new(t.net_cents).to_string(),
            Cents::new(t.tax_cents).to_string(),
            Cents::new(t.gross_cents).to_string(),
        ]);
        out.write_all(
            crate::ledger::admin::table(
                &[key, "RATE", "QUANTITY", "NET", "TAX", "GROSS"],
                2,
                &cells,
            )
            .as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    fn day() -> FestivalDay {
        FestivalDay::new(
            NaiveTime::from_hms_opt(6, 0, 0).expect("a time"),
            FixedOffset::east_opt(2 * 3600).expect("an offset"),
        )
    }

    #[test]
    fn bounds_are_times_or_festival_days() {
        let t = parse_bound("2026-07-01T18:00:00+02:00", &day()).expect("a time");
        assert_eq!(t.to_rfc3339(), "2026-07-01T16:00:00+00:00");
        // A date is the start of that festival day: 06:00 local, 04:00 UTC.
        let d = parse_bound("2026-07-01", &day()).expect("a date");
        assert_eq!(d.to_rfc3339(), "2026-07-01T04:00:00+00:00");
        for bad in ["yesterday", "2026-13-01", "2026-07-01 18:00", ""] {
            assert!(parse_bound(bad, &day()).is_err(), "{bad}");
        }
        assert!(range(Some("2026-07-02"), Some("2026-07-01"), &day()).is_err());
        assert!(range(Some("2026-07-01"), Some("2026-07-01"), &day()).is_err());
        let r = range(Some("2026-07-01"), None, &day()).expect("a range");
        assert_eq!((r.from, r.to), (Some(d), None));
    }

    #[test]
    fn every_format_carries_the_same_sums() {
        let rows = vec![
            SalesRow {
                key: "Main Bar".into(),
                tax_rate: "standard".into(),
                quantity: 3,
                net_cents: 1000,
                tax_cents: 190,
            },
            SalesRow {
                key: "Main Bar, \"VIP\"".into(),
                tax_rate: String::new(),
                quantity: 1,
                net_cents: 450,
                tax_cents: 0,
            },
        ];
        let report = SalesReport {
            range: ReportRange {
                from: None,
                to: None,
            },
            utc_offset: FixedOffset::east_opt(0).expect("an offset"),
            currency: "EUR".into(),
            sections: vec![(SalesDimension::PointOfSale, rows)],
        };
        let mut table = Vec::new();
        write(&report, ReportFormat::Table, &mut table).expect("a table");
        let table = String::from_utf8(table).expect("text");
        assert!(
            table.contains("TOTAL") && table.contains("16.40"),
            "{table}"
        );
        let mut csv = Vec::new();
        write(&report, ReportFormat::Csv, &mut csv).expect("CSV");
        let mut reader = csv::Reader::from_reader(csv.as_slice());
        let keys: Vec<String> = reader
            .records()
            .map(|r| r.expect("a record")[1].to_owned())
            .collect();
        assert_eq!(keys, ["Main Bar", "Main Bar, \"VIP\""]);
        let mut json = Vec::new();
        write(&report, ReportFormat::Json, &mut json).expect("JSON");
        let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(json["sections"][0]["total"]["gross_cents"], 1640);
        assert_eq!(json["sections"][0]["rows"][1]["gross_cents"], 450);
    }
}
