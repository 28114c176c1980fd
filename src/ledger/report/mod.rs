//! `cashless ledger report`: what was sold, when, where and by whom, split by VAT rate, for
//! an accountant closing the books and a bar manager comparing bars; then the deposits, the
//! vouchers, the top-ups, the cashiers' close-outs, the terminals, the cards in debt or
//! blocked and the flagged sales ([`sections`]), each a [`Section`] of typed columns.
//!
//! A sale is an order line of an order that stands (not voided, whenever the void came), in
//! the range by the time the terminal made it (`created_at`: an offline sale at 23:50 replayed
//! at 02:00 is in the 23:00 hour). Deposit lines are not sales (their money is owed back);
//! units paid with vouchers count in the quantity but move no money, so no net and no tax.
//! Net plus tax is gross, the money the cards paid for the goods; summed over any one
//! dimension it is what the order postings credit to `revenue:*` and `vat:*`.
//!
//! Each dimension is one `GROUP BY` in the database, all of them in one snapshot
//! ([`crate::ledger::store::ReportStore::report`]), so every section sums to the same while
//! orders keep arriving, and what the report holds grows with the number of points of sale, terminals,
//! products, staff and hours, never with the number of orders; a dimension with more than
//! [`REPORT_ROWS_MAX`] rows is refused rather than cut.

use crate::domain::{Cents, FestivalDay};
use crate::ledger::config::LedgerConfig;
use crate::ledger::store::ReportStore;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;

pub mod sections;

pub use sections::{Column, ColumnKind};

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

/// What the report asks the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportQuery {
    /// Operations made at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Operations made before this time.
    pub to: Option<DateTime<Utc>>,
    /// The festival's offset from UTC, in seconds, for [`SalesDimension::Hour`].
    pub utc_offset_s: i32,
    /// At most this many rows per section; one more means the report is refused.
    pub limit: u32,
    /// Only this section (its name), or every one.
    pub only: Option<&'static str>,
}

impl ReportQuery {
    /// Whether the section named `section` is asked for.
    pub fn wants(&self, section: &str) -> bool {
        self.only.is_none_or(|only| only == section)
    }
}

/// Everything a report reads, in one snapshot: the sales by each dimension, then the
/// sections of [`sections::specs`], in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportData {
    /// The sales.
    pub sales: SalesSections,
    /// The other sections.
    pub sections: Vec<Section>,
}

/// One value of a section's row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    /// Text ([`ColumnKind::Text`]).
    Text(String),
    /// A number: a count, cents, a sequence number.
    Int(i64),
    /// A time, or none.
    Time(Option<DateTime<Utc>>),
}

/// A section of the report, computed: rows sorted in byte order of their cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name in CSV (`--section`) and JSON.
    pub name: &'static str,
    /// Its title in a table.
    pub title: &'static str,
    /// Its columns.
    pub columns: Vec<Column>,
    /// Its rows, one cell per column.
    pub rows: Vec<Vec<Cell>>,
}

impl Section {
    /// The section of `spec` with `rows` (sorted here).
    pub fn of(spec: &sections::SectionSpec, mut rows: Vec<Vec<Cell>>) -> Section {
        rows.sort();
        Section {
            name: spec.name,
            title: spec.title,
            columns: spec.columns.to_vec(),
            rows,
        }
    }

    /// The sums of the summed columns ([`ColumnKind::summed`]), by column; `None` for the
    /// others.
    pub fn totals(&self) -> Vec<Option<i64>> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.kind.summed().then(|| {
                    self.rows.iter().fold(0i64, |sum, row| match row.get(i) {
                        Some(Cell::Int(n)) => sum.saturating_add(*n),
                        _ => sum,
                    })
                })
            })
            .collect()
    }

    /// A sales dimension as a section: key, rate, quantity, net, tax, gross.
    fn of_sales(dimension: SalesDimension, rows: &[SalesRow]) -> Section {
        use ColumnKind::{Cents, Count, Text};
        let (title, key) = dimension.title();
        Section {
            name: dimension.section(),
            title,
            columns: vec![
                Column {
                    name: "key",
                    header: key,
                    kind: Text,
                },
                Column {
                    name: "tax_rate",
                    header: "RATE",
                    kind: Text,
                },
                Column {
                    name: "quantity",
                    header: "QUANTITY",
                    kind: Count,
                },
                Column {
                    name: "net_cents",
                    header: "NET",
                    kind: Cents,
                },
                Column {
                    name: "tax_cents",
                    header: "TAX",
                    kind: Cents,
                },
                Column {
                    name: "gross_cents",
                    header: "GROSS",
                    kind: Cents,
                },
            ],
            rows: rows
                .iter()
                .map(|r| {
                    vec![
                        Cell::Text(r.key.clone()),
                        Cell::Text(r.tax_rate.clone()),
                        Cell::Int(r.quantity),
                        Cell::Int(r.net_cents),
                        Cell::Int(r.tax_cents),
                        Cell::Int(r.gross_cents()),
                    ]
                })
                .collect(),
        }
    }
}

/// Every section's name, in report order.
pub fn section_names() -> Vec<&'static str> {
    SalesDimension::ALL
        .iter()
        .map(|d| d.section())
        .chain(sections::specs().iter().map(|s| s.name))
        .collect()
}

/// `name` if a section has it, else a usage error listing them.
pub fn check_section(name: &str) -> Result<&'static str, String> {
    let names = section_names();
    names.iter().find(|n| **n == name).copied().ok_or_else(|| {
        format!(
            "--section: no section {name:?}; the sections are {}",
            names.join(", ")
        )
    })
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

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns, amounts in the currency, a title and a total per section.
    Table,
    /// One CSV document: the sales sections as
    /// `section,key,tax_rate,quantity,net_cents,tax_cents,gross_cents`, or, with
    /// `--section`, that section with its own columns.
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

/// The report, computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The range.
    pub range: ReportRange,
    /// The festival's offset, which the hours and the table's times are in.
    pub utc_offset: FixedOffset,
    /// The currency, for the table.
    pub currency: String,
    /// Each section, the sales first.
    pub sections: Vec<Section>,
    /// The one section asked for (`--section`), if any.
    pub only: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonSection {
    name: &'static str,
    rows: Vec<Map<String, Value>>,
    total: Map<String, Value>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    from: Option<String>,
    to: Option<String>,
    utc_offset: String,
    currency: &'a str,
    sections: Vec<JsonSection>,
}

/// Reads the report over `range` (one snapshot), refusing a section of more than
/// [`REPORT_ROWS_MAX`] rows rather than cutting it; `only` keeps one section.
pub async fn report(
    store: &impl ReportStore,
    range: ReportRange,
    only: Option<&'static str>,
    config: &LedgerConfig,
) -> anyhow::Result<Report> {
    report_of_festival(store, range, only, &config.festival_day, &config.currency).await
}

/// [`report`] for a festival whose days start as `day` says, in `currency`.
pub async fn report_of_festival(
    store: &impl ReportStore,
    range: ReportRange,
    only: Option<&'static str>,
    day: &FestivalDay,
    currency: &str,
) -> anyhow::Result<Report> {
    let utc_offset = day.utc_offset();
    let data = store
        .report(ReportQuery {
            from: range.from,
            to: range.to,
            utc_offset_s: utc_offset.local_minus_utc(),
            limit: REPORT_ROWS_MAX,
            only,
        })
        .await?;
    let sections: Vec<Section> = data
        .sales
        .iter()
        .map(|(dimension, rows)| Section::of_sales(*dimension, rows))
        .chain(data.sections)
        .collect();
    for section in &sections {
        if section.rows.len() > REPORT_ROWS_MAX as usize {
            anyhow::bail!(
                "{} has more than {REPORT_ROWS_MAX} rows; report a shorter range (--from, --to)",
                section.name
            );
        }
    }
    Ok(Report {
        range,
        utc_offset,
        currency: currency.to_owned(),
        sections,
        only,
    })
}

impl Report {
    /// The sections to write: all, or the one asked for.
    fn shown(&self) -> impl Iterator<Item = &Section> {
        self.sections
            .iter()
            .filter(|s| self.only.is_none_or(|only| only == s.name))
    }
}

impl Section {
    /// Each row's cells, each through `f` with its column.
    fn map_rows<T>(&self, f: impl Fn(&Column, &Cell) -> T) -> impl Iterator<Item = Vec<T>> {
        self.rows.iter().map(move |row| {
            self.columns
                .iter()
                .zip(row)
                .map(|(c, cell)| f(c, cell))
                .collect()
        })
    }
}

/// A cell as JSON: text, a number, or a time (`null` when none).
fn json_cell(cell: &Cell) -> Value {
    match cell {
        Cell::Text(t) => Value::from(t.as_str()),
        Cell::Int(n) => Value::from(*n),
        Cell::Time(t) => t.map_or(Value::Null, |t| crate::protocol::api::format_time(t).into()),
    }
}

/// A cell as CSV: as in JSON, a time in RFC 3339 or empty.
fn csv_cell(cell: &Cell) -> String {
    match cell {
        Cell::Text(t) => t.clone(),
        Cell::Int(n) => n.to_string(),
        Cell::Time(t) => t.map(crate::protocol::api::format_time).unwrap_or_default(),
    }
}

/// Writes `report` to `out` in `format`.
pub fn write(report: &Report, format: ReportFormat, out: &mut impl Write) -> std::io::Result<()> {
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
                    .shown()
                    .map(|section| JsonSection {
                        name: section.name,
                        rows: section
                            .map_rows(|c, cell| (c.name.to_owned(), json_cell(cell)))
                            .map(|row| row.into_iter().collect())
                            .collect(),
                        total: section
                            .columns
                            .iter()
                            .zip(section.totals())
                            .filter_map(|(c, t)| Some((c.name.to_owned(), Value::from(t?))))
                            .collect(),
                    })
                    .collect(),
            };
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)
        }
    }
}

fn write_csv(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    if let Some(only) = report.only {
        // One section, its own columns.
        for section in report.sections.iter().filter(|s| s.name == only) {
            csv.write_record(section.columns.iter().map(|c| c.name))?;
            for row in &section.rows {
                csv.write_record(row.iter().map(csv_cell))?;
            }
        }
        return csv.flush();
    }
    // Every sales section in one document, as it always was.
    csv.write_record([
        "section",
        "key",
        "tax_rate",
        "quantity",
        "net_cents",
        "tax_cents",
        "gross_cents",
    ])?;
    let sales: Vec<&str> = SalesDimension::ALL.iter().map(|d| d.section()).collect();
    for section in report.sections.iter().filter(|s| sales.contains(&s.name)) {
        for row in &section.rows {
            csv.write_record(
                std::iter::once(section.name.to_owned()).chain(row.iter().map(csv_cell)),
            )?;
        }
    }
    csv.flush()
}

fn write_table(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let local = |t: DateTime<Utc>| t.with_timezone(&report.utc_offset);
    let bound =
        |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| local(t).to_rfc3339());
    writeln!(
        out,
        "Report from {} to {} (sales: standing orders, by the time the terminal made them; \
         amounts in {}, times at UTC{})",
        bound(report.range.from),
        bound(report.range.to),
        report.currency,
        report.utc_offset
    )?;
    for section in report.shown() {
        writeln!(out, "\n{}", section.title)?;
        let show = |kind: ColumnKind, cell: &Cell| match (kind, cell) {
            (_, Cell::Text(t)) if t.is_empty() => "-".to_owned(),
            (_, Cell::Text(t)) => t.clone(),
            (ColumnKind::Cents, Cell::Int(n)) => Cents::new(*n).to_string(),
            (_, Cell::Int(n)) => n.to_string(),
            (_, Cell::Time(t)) => t.map_or_else(
                || "-".to_owned(),
                |t| local(t).format("%Y-%m-%d %H:%M:%S").to_string(),
            ),
        };
        let mut cells: Vec<Vec<String>> = section.map_rows(|c, cell| show(c.kind, cell)).collect();
        let totals = section.totals();
        if totals.iter().any(Option::is_some) {
            cells.push(
                section
                    .columns
                    .iter()
                    .zip(&totals)
                    .enumerate()
                    .map(|(i, (c, t))| match t {
                        Some(t) => show(c.kind, &Cell::Int(*t)),
                        None if i == 0 => "TOTAL".to_owned(),
                        None => String::new(),
                    })
                    .collect(),
            );
        }
        // Text and times (leading) are aligned left, numbers right.
        let text_columns = section
            .columns
            .iter()
            .take_while(|c| matches!(c.kind, ColumnKind::Text | ColumnKind::Time))
            .count();
        let headers: Vec<&str> = section.columns.iter().map(|c| c.header).collect();
        out.write_all(crate::ledger::admin::table(&headers, text_columns, &cells).as_bytes())?;
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
        let mut report = Report {
            range: ReportRange {
                from: None,
                to: None,
            },
            utc_offset: FixedOffset::east_opt(0).expect("an offset"),
            currency: "EUR".into(),
            sections: vec![Section::of_sales(SalesDimension::PointOfSale, &rows)],
            only: None,
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

        // One section asked for, with its own columns: a time in RFC 3339 or nothing.
        let column = |name, header, kind| Column { name, header, kind };
        report.sections.push(Section {
            name: "cards",
            title: "Cards",
            columns: vec![
                column("card_uid", "CARD", ColumnKind::Text),
                column("since", "SINCE", ColumnKind::Time),
                column("debt_cents", "DEBT", ColumnKind::Cents),
            ],
            rows: vec![
                vec![Cell::Text("04AA".into()), Cell::Time(None), Cell::Int(250)],
                vec![
                    Cell::Text("04BB".into()),
                    Cell::Time(DateTime::from_timestamp(1_782_900_000, 0)),
                    Cell::Int(100),
                ],
            ],
        });
        report.only = Some("cards");
        let mut csv = Vec::new();
        write(&report, ReportFormat::Csv, &mut csv).expect("CSV");
        assert_eq!(
            String::from_utf8(csv).expect("text"),
            "card_uid,since,debt_cents\n04AA,,250\n04BB,2026-07-01T10:00:00.000Z,100\n"
        );
        let mut json = Vec::new();
        write(&report, ReportFormat::Json, &mut json).expect("JSON");
        let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(json["sections"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            json["sections"][0]["total"],
            serde_json::json!({"debt_cents": 350})
        );
        assert_eq!(
            json["sections"][0]["rows"][0]["since"],
            serde_json::Value::Null
        );
        let mut table = Vec::new();
        write(&report, ReportFormat::Table, &mut table).expect("a table");
        let table = String::from_utf8(table).expect("text");
        assert!(
            table.contains("2026-07-01 10:00:00")
                && table.contains("TOTAL")
                && table.contains("3.50"),
            "{table}"
        );
        assert!(!table.contains("Main Bar"), "{table}");
    }
}
