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

    /// The table of quarter-hour sums the dimension reads (`s`), and its key column there,
    /// the same on both backends (`t` is the terminal, joined for [`Self::Terminal`]);
    /// `None` for the hour, which each backend computes with its own date functions.
    pub fn sums(self) -> (&'static str, Option<&'static str>) {
        match self {
            SalesDimension::PointOfSale => ("till_quarter_sales", Some("s.point_of_sale")),
            SalesDimension::Terminal => ("till_quarter_sales", Some("t.name")),
            SalesDimension::Product => ("product_quarter_sales", Some("s.product_id")),
            SalesDimension::Staff => ("till_quarter_sales", Some("s.staff_id")),
            SalesDimension::Hour => ("till_quarter_sales", None),
        }
    }

    /// The join of the sums to their terminal, where the key needs it.
    pub fn sums_join(self) -> &'static str {
        match self {
            SalesDimension::Terminal => "JOIN terminals t ON t.terminal_id = s.terminal_id",
            _ => "",
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

/// The length of the periods the sales are kept summed in (`till_quarter_sales`,
/// `product_quarter_sales`): a quarter hour.
pub const SUMS_PERIOD_S: i64 = 900;

/// How a report's range is read: the whole quarter hours in it from the sums, the ragged
/// ends (a range that starts or ends inside a quarter hour) from the orders themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumsSplit {
    /// The first whole quarter hour's start, or none for no lower bound.
    pub sums_from: Option<DateTime<Utc>>,
    /// The end of the last whole quarter hour, or none for no upper bound. When it is not
    /// after `sums_from`, the sums give nothing.
    pub sums_to: Option<DateTime<Utc>>,
    /// At most two stretches, each from (inclusive) to (exclusive), read from the orders.
    pub edges: [Option<(DateTime<Utc>, DateTime<Utc>)>; 2],
}

/// The start of the quarter hour `t` is in.
fn quarter_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp().div_euclid(SUMS_PERIOD_S) * SUMS_PERIOD_S;
    DateTime::from_timestamp(s, 0).unwrap_or(t)
}

/// `t` if a quarter hour starts at `t`, else the start of the next one.
fn quarter_ceil(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = quarter_floor(t);
    if floor == t {
        t
    } else {
        floor + chrono::Duration::seconds(SUMS_PERIOD_S)
    }
}

/// Splits `from..to` into the whole quarter hours the sums answer and the ragged ends the
/// orders answer; together they cover the range exactly, each instant once.
pub fn split_at_quarters(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> SumsSplit {
    let sums_from = from.map(quarter_ceil);
    let sums_to = to.map(quarter_floor);
    if let (Some(f), Some(t), Some(sf), Some(st)) = (from, to, sums_from, sums_to)
        && sf >= st
    {
        // No whole quarter hour inside: all of it from the orders.
        return SumsSplit {
            sums_from: Some(sf),
            sums_to: Some(sf),
            edges: [Some((f, t)), None],
        };
    }
    let lower = from.zip(sums_from).filter(|(f, sf)| f < sf);
    let upper = sums_to.zip(to).filter(|(st, t)| st < t);
    SumsSplit {
        sums_from,
        sums_to,
        edges: [lower, upper],
    }
}

/// Whether the hours in the festival's offset are made of whole quarter hours (every offset
/// of the world's time zones), so that the sums can give the sales by hour.
pub fn hours_from_sums(utc_offset_s: i32) -> bool {
    i64::from(utc_offset_s) % SUMS_PERIOD_S == 0
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

    /// Whether `t` is read by `split`: from the sums (its quarter hour is whole in the
    /// range), from the orders (an edge), or both (which must never be).
    fn read_by(split: &SumsSplit, t: DateTime<Utc>) -> (bool, usize) {
        let q = quarter_floor(t);
        let in_sums = split.sums_from.is_none_or(|f| q >= f)
            && split.sums_to.is_none_or(|to| q < to)
            && split
                .sums_from
                .zip(split.sums_to)
                .is_none_or(|(f, to)| f < to);
        let edges = split
            .edges
            .iter()
            .flatten()
            .filter(|(f, to)| *f <= t && t < *to)
            .count();
        (in_sums, edges)
    }

    #[test]
    fn sums_and_edges_cover_the_range_each_instant_once() {
        let base = DateTime::parse_from_rfc3339("2026-07-03T20:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let at = |ms: i64| base + chrono::Duration::milliseconds(ms);
        // Bounds on quarter hours, inside them, a millisecond either side, in one quarter.
        let bounds: Vec<Option<DateTime<Utc>>> = [
            0, 1, 899_999, 900_000, 900_001, 1_234_567, 1_800_000, 3_599_999, 7_200_000,
        ]
        .into_iter()
        .map(|ms| Some(at(ms)))
        .chain([None])
        .collect();
        for from in &bounds {
            for to in &bounds {
                if let (Some(f), Some(t)) = (from, to)
                    && f >= t
                {
                    continue;
                }
                let split = split_at_quarters(*from, *to);
                for ms in (-1_000_000..9_000_000)
                    .step_by(4_999)
                    .chain([0, 899_999, 900_000])
                {
                    let t = at(ms);
                    let inside = from.is_none_or(|f| t >= f) && to.is_none_or(|to| t < to);
                    let (in_sums, edges) = read_by(&split, t);
                    assert_eq!(
                        usize::from(in_sums) + edges,
                        usize::from(inside),
                        "{from:?}..{to:?} at {t}: {split:?}"
                    );
                    if in_sums {
                        // The sums give whole quarters only: all of t's quarter is inside.
                        let q = quarter_floor(t);
                        assert!(from.is_none_or(|f| q >= f), "{from:?} {t}");
                        assert!(
                            to.is_none_or(|to| q + chrono::Duration::seconds(SUMS_PERIOD_S) <= to),
                            "{to:?} {t}"
                        );
                    }
                }
            }
        }
        // A festival day from 06:00 local (+02:00) is whole quarters: no edge at all.
        let split = split_at_quarters(Some(at(0)), Some(at(86_400_000)));
        assert_eq!(split.edges, [None, None]);
        assert!(hours_from_sums(2 * 3600) && hours_from_sums(5 * 3600 + 45 * 60));
        assert!(hours_from_sums(-(9 * 3600 + 30 * 60)) && !hours_from_sums(20 * 60));
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
