//! The festival day. Festivals run through the night: the bar's Friday ends at dawn on
//! Saturday, so a day starts at a configured local time (`[festival] day_starts_at`, in the
//! festival's `utc_offset`), not at midnight. A daily voucher allowance is renewed when the
//! next festival day starts.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Offset, Utc};

/// When a festival day starts: a local time of day, and the festival's offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FestivalDay {
    starts_at: NaiveTime,
    utc_offset: FixedOffset,
}

impl Default for FestivalDay {
    /// Days start at 06:00 UTC.
    fn default() -> FestivalDay {
        FestivalDay {
            starts_at: NaiveTime::from_hms_opt(6, 0, 0).unwrap_or(NaiveTime::MIN),
            utc_offset: Utc.fix(),
        }
    }
}

impl FestivalDay {
    /// Days that start at `starts_at` local time, the festival being at `utc_offset`.
    pub fn new(starts_at: NaiveTime, utc_offset: FixedOffset) -> FestivalDay {
        FestivalDay {
            starts_at,
            utc_offset,
        }
    }

    /// An offset from UTC written exactly `+HH:MM` or `-HH:MM` (hours at most 14, as the
    /// world's time zones); anything else is `None`.
    pub fn parse_utc_offset(text: &str) -> Option<FixedOffset> {
        let (sign, rest) = match text.as_bytes().first()? {
            b'+' => (1, &text[1..]),
            b'-' => (-1, &text[1..]),
            _ => return None,
        };
        let (hours, minutes) = rest.split_once(':')?;
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(hours) || !two_digits(minutes) {
            return None;
        }
        let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
        if hours > 14 || minutes > 59 {
            return None;
        }
        FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
    }

    /// The festival's offset from UTC.
    pub fn utc_offset(&self) -> FixedOffset {
        self.utc_offset
    }

    /// The festival day `t` belongs to: the local date, less a day before `starts_at`.
    pub fn day_of(&self, t: DateTime<Utc>) -> NaiveDate {
        let local = t.with_timezone(&self.utc_offset).naive_local();
        (local - self.starts_at.signed_duration_since(NaiveTime::MIN)).date()
    }

    /// When festival day `day` starts, in UTC.
    pub fn start_of(&self, day: NaiveDate) -> DateTime<Utc> {
        let local = day.and_time(self.starts_at);
        (local - self.utc_offset).and_utc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_day_runs_from_its_start_to_the_next_one_in_local_time() {
        // 06:00 in UTC+2: 04:00 UTC.
        let day = FestivalDay::new(
            NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            FixedOffset::east_opt(2 * 3600).unwrap(),
        );
        for (t, expected) in [
            ("2026-07-10T03:59:59Z", "2026-07-09"), // 05:59:59 local: still Thursday's night
            ("2026-07-10T04:00:00Z", "2026-07-10"), // 06:00 local: Friday starts
            ("2026-07-10T21:59:59Z", "2026-07-10"), // 23:59:59 local
            ("2026-07-10T22:00:00Z", "2026-07-10"), // midnight local: still Friday
            ("2026-07-11T03:59:59Z", "2026-07-10"),
            ("2026-07-11T04:00:00Z", "2026-07-11"),
        ] {
            assert_eq!(day.day_of(at(t)), date(expected), "{t}");
        }
        assert_eq!(day.start_of(date("2026-07-10")), at("2026-07-10T04:00:00Z"));
    }

    #[test]
    fn offsets_are_written_exactly() {
        assert_eq!(
            FestivalDay::parse_utc_offset("+02:00"),
            FixedOffset::east_opt(7200)
        );
        assert_eq!(
            FestivalDay::parse_utc_offset("-04:30"),
            FixedOffset::west_opt(4 * 3600 + 1800)
        );
        for bad in [
            "+02:00 CEST",
            "+0200",
            "02:00",
            "+2:00",
            "+15:00",
            "+02:60",
            "",
            "+",
        ] {
            assert_eq!(FestivalDay::parse_utc_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_day_starting_at_midnight_utc_is_the_calendar_date() {
        let day = FestivalDay::new(NaiveTime::MIN, FixedOffset::east_opt(0).unwrap());
        assert_eq!(day.day_of(at("2026-07-10T00:00:00Z")), date("2026-07-10"));
        assert_eq!(day.day_of(at("2026-07-09T23:59:59Z")), date("2026-07-09"));
        assert_eq!(
            FestivalDay::default().day_of(at("2026-07-10T05:59:59Z")),
            date("2026-07-09")
        );
    }
}
