//! Headquarters' overview of a festival day, pure: the quarter hours' sums the store keeps
//! (`quarter_totals`, see [`crate::ledger::store::ReportStore::overview`]) summed into the
//! day's hours (in the festival's offset) and points of sale, the online against offline
//! share, and the money on cards. No IO, no clock: the day is passed in.
//!
//! The sums follow `ledger report`: a sale is an order's lines that are not deposits, net
//! plus tax, by the time the terminal made it; a voided operation is not counted. Quarter
//! hours are whole UTC quarters, so a day that starts at a time that is not a quarter hour
//! (in an offset that is not one) counts from the first whole quarter after its start; the
//! quarter it starts in counts for the day before.

use crate::domain::{Cents, FestivalDay};
use crate::ledger::store::{CardMoney, OverviewData, TakingKind};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::BTreeMap;

/// Quarter-hour rows one overview reads, at most: a day has 96 quarters; this allows about
/// 100 points of sale selling and topping up online and offline in each.
pub const OVERVIEW_ROWS_MAX: u32 = 40_000;
/// Cards deepest in debt the overview lists.
pub const DEBTORS_SHOWN: u32 = 20;
/// Hours in a festival day.
pub const DAY_HOURS: usize = 24;

/// How many operations and how much money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Operations.
    pub operations: i64,
    /// Their sum.
    pub amount: Cents,
}

impl Tally {
    fn add(&mut self, operations: i64, amount: Cents) {
        self.operations += operations;
        self.amount = Cents::new(self.amount.get().saturating_add(amount.get()));
    }
}

/// One hour of the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourTotals {
    /// When it starts.
    pub start: DateTime<Utc>,
    /// Its sales.
    pub sales: Tally,
    /// Its top-ups.
    pub top_ups: Tally,
}

/// One point of sale over the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointTotals {
    /// Its name; empty for Stripe's online top-ups.
    pub name: String,
    /// Its sales.
    pub sales: Tally,
    /// Its top-ups.
    pub top_ups: Tally,
    /// Of its operations, those made offline.
    pub offline: Tally,
}

/// A festival day so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// The festival day.
    pub day: NaiveDate,
    /// When it starts.
    pub from: DateTime<Utc>,
    /// When the next starts.
    pub to: DateTime<Utc>,
    /// Every hour of the day, in order, empty ones too.
    pub hours: Vec<HourTotals>,
    /// Every point of sale that sold or topped up, most sales first, then by name.
    pub points_of_sale: Vec<PointTotals>,
    /// The day's sales.
    pub sales: Tally,
    /// The day's top-ups.
    pub top_ups: Tally,
    /// Operations (sales and top-ups) made online.
    pub online: Tally,
    /// Operations made offline, replayed when the terminal's network came back.
    pub offline: Tally,
    /// The money on cards, now.
    pub cards: CardMoney,
    /// More rows than [`OVERVIEW_ROWS_MAX`]: the sums leave some out.
    pub truncated: bool,
}

impl Overview {
    /// Offline operations as a share of all, in per mille (0 when there are none).
    pub fn offline_per_mille(&self) -> i64 {
        let all = self.online.operations + self.offline.operations;
        if all == 0 {
            0
        } else {
            self.offline.operations * 1000 / all
        }
    }
}

/// The range the store reads for festival day `day`.
pub fn day_range(festival: FestivalDay, day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let next = day.succ_opt().unwrap_or(day);
    (festival.start_of(day), festival.start_of(next))
}

/// The overview of `day` from what the store read for [`day_range`].
pub fn summarize(
    festival: FestivalDay,
    day: NaiveDate,
    data: OverviewData,
    rows_max: u32,
) -> Overview {
    let (from, to) = day_range(festival, day);
    let mut hours: Vec<HourTotals> = (0..DAY_HOURS)
        .map(|h| HourTotals {
            start: from + Duration::hours(h as i64),
            sales: Tally::default(),
            top_ups: Tally::default(),
        })
        .collect();
    let mut points: BTreeMap<String, PointTotals> = BTreeMap::new();
    let (mut sales, mut top_ups, mut online, mut offline) = Default::default();
    let truncated = data.quarters.len() > rows_max as usize;
    for q in data.quarters.iter().take(rows_max as usize) {
        if q.quarter_start < from || q.quarter_start >= to {
            continue;
        }
        let hour = ((q.quarter_start - from).num_seconds() / 3600) as usize;
        let point = points
            .entry(q.point_of_sale.clone())
            .or_insert_with(|| PointTotals {
                name: q.point_of_sale.clone(),
                sales: Tally::default(),
                top_ups: Tally::default(),
                offline: Tally::default(),
            });
        let (day_total, hour_total, point_total): (&mut Tally, _, _) = match q.kind {
            TakingKind::Sale => (&mut sales, &mut hours[hour].sales, &mut point.sales),
            TakingKind::TopUp => (&mut top_ups, &mut hours[hour].top_ups, &mut point.top_ups),
        };
        for t in [day_total, hour_total, point_total] {
            t.add(q.operations, q.amount);
        }
        if q.online {
            Tally::add(&mut online, q.operations, q.amount);
        } else {
            Tally::add(&mut offline, q.operations, q.amount);
            point.offline.add(q.operations, q.amount);
        }
    }
    let mut points_of_sale: Vec<PointTotals> = points.into_values().collect();
    points_of_sale.sort_by(|a, b| {
        b.sales
            .amount
            .get()
            .cmp(&a.sales.amount.get())
            .then_with(|| a.name.cmp(&b.name))
    });
    Overview {
        day,
        from,
        to,
        hours,
        points_of_sale,
        sales,
        top_ups,
        online,
        offline,
        cards: data.cards,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::store::QuarterTotal;
    use chrono::{FixedOffset, NaiveTime};

    fn festival() -> FestivalDay {
        FestivalDay::new(
            NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            FixedOffset::east_opt(2 * 3600).unwrap(),
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn q(
        start: &str,
        pos: &str,
        kind: TakingKind,
        online: bool,
        n: i64,
        cents: i64,
    ) -> QuarterTotal {
        QuarterTotal {
            quarter_start: at(start),
            point_of_sale: pos.into(),
            kind,
            online,
            operations: n,
            amount: Cents::new(cents),
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 7, 3).unwrap()
    }

    #[test]
    fn the_day_runs_from_its_start_in_the_festivals_offset() {
        let (from, to) = day_range(festival(), day());
        assert_eq!(from, at("2026-07-03T04:00:00Z"));
        assert_eq!(to, at("2026-07-04T04:00:00Z"));
    }

    #[test]
    fn quarters_are_summed_into_hours_points_and_modes() {
        let data = OverviewData {
            quarters: vec![
                // 06:00 local, the day's first hour.
                q(
                    "2026-07-03T04:00:00Z",
                    "Bar A",
                    TakingKind::Sale,
                    true,
                    3,
                    1500,
                ),
                q(
                    "2026-07-03T04:45:00Z",
                    "Bar A",
                    TakingKind::Sale,
                    false,
                    1,
                    500,
                ),
                q(
                    "2026-07-03T04:15:00Z",
                    "Gate",
                    TakingKind::TopUp,
                    true,
                    2,
                    4000,
                ),
                // 23:00 local.
                q(
                    "2026-07-03T21:30:00Z",
                    "Bar B",
                    TakingKind::Sale,
                    true,
                    4,
                    2600,
                ),
                q("2026-07-03T21:30:00Z", "", TakingKind::TopUp, true, 1, 2000),
                // Outside the day: not counted.
                q(
                    "2026-07-04T04:00:00Z",
                    "Bar A",
                    TakingKind::Sale,
                    true,
                    9,
                    9999,
                ),
            ],
            cards: CardMoney::default(),
        };
        let o = summarize(festival(), day(), data, OVERVIEW_ROWS_MAX);
        assert_eq!(o.hours.len(), 24);
        assert_eq!(
            o.hours[0].sales,
            Tally {
                operations: 4,
                amount: Cents::new(2000)
            }
        );
        assert_eq!(
            o.hours[0].top_ups,
            Tally {
                operations: 2,
                amount: Cents::new(4000)
            }
        );
        assert_eq!(o.hours[17].start, at("2026-07-03T21:00:00Z"));
        assert_eq!(o.hours[17].sales.amount, Cents::new(2600));
        assert_eq!(o.hours[17].top_ups.amount, Cents::new(2000));
        assert_eq!(
            o.sales,
            Tally {
                operations: 8,
                amount: Cents::new(4600)
            }
        );
        assert_eq!(
            o.top_ups,
            Tally {
                operations: 3,
                amount: Cents::new(6000)
            }
        );
        assert_eq!(
            o.offline,
            Tally {
                operations: 1,
                amount: Cents::new(500)
            }
        );
        assert_eq!(o.online.operations, 10);
        assert_eq!(o.offline_per_mille(), 90);
        let names: Vec<&str> = o.points_of_sale.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Bar B", "Bar A", "", "Gate"]);
        assert_eq!(o.points_of_sale[1].offline.operations, 1);
        assert!(!o.truncated);
    }

    #[test]
    fn too_many_rows_are_said_and_not_summed() {
        let data = OverviewData {
            quarters: vec![
                q(
                    "2026-07-03T04:00:00Z",
                    "Bar A",
                    TakingKind::Sale,
                    true,
                    1,
                    100,
                ),
                q(
                    "2026-07-03T04:00:00Z",
                    "Bar B",
                    TakingKind::Sale,
                    true,
                    1,
                    100,
                ),
            ],
            cards: CardMoney::default(),
        };
        let o = summarize(festival(), day(), data, 1);
        assert!(o.truncated);
        assert_eq!(o.sales.operations, 1);
    }

    #[test]
    fn an_empty_day_has_every_hour_and_no_share() {
        let o = summarize(
            festival(),
            day(),
            OverviewData::default(),
            OVERVIEW_ROWS_MAX,
        );
        assert_eq!(o.hours.len(), 24);
        assert!(o.points_of_sale.is_empty());
        assert_eq!(o.offline_per_mille(), 0);
    }
}
