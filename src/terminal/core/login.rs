//! Staff login on the terminal: PINs are checked against the argon2 hashes of the ledger's
//! staff feed (cached, so login works offline), and guessing is slowed down: after
//! [`FAILURES_MAX`] wrong PINs in a row, that staff id is locked on this terminal for
//! [`LOCK_MS`]. Pure: the caller passes `now_ms` and whether the PIN matched.

use crate::domain::StaffId;
use std::collections::HashMap;

/// Wrong PINs in a row that lock a staff id.
pub const FAILURES_MAX: u32 = 5;
/// How long a staff id stays locked.
pub const LOCK_MS: u64 = 60_000;
/// Staff ids tracked at most; beyond that the oldest lock-free entries are forgotten.
pub const TRACKED_MAX: usize = 1024;

/// Why a login is refused before its PIN is even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// When the lock ends.
    pub until_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Record {
    failures: u32,
    locked_until_ms: Option<u64>,
}

/// Wrong-PIN counters per staff id.
#[derive(Debug, Default)]
pub struct LoginGuard {
    records: HashMap<StaffId, Record>,
}

impl LoginGuard {
    /// May `staff` try a PIN now?
    pub fn check(&self, staff: &StaffId, now_ms: u64) -> Result<(), Locked> {
        match self.records.get(staff).and_then(|r| r.locked_until_ms) {
            Some(until_ms) if now_ms < until_ms => Err(Locked { until_ms }),
            _ => Ok(()),
        }
    }

    /// Records the result of a PIN check that [`LoginGuard::check`] allowed. Returns the
    /// lock that a wrong PIN caused, if it was the last allowed one.
    pub fn record(&mut self, staff: &StaffId, pin_matched: bool, now_ms: u64) -> Option<Locked> {
        if pin_matched {
            self.records.remove(staff);
            return None;
        }
        if self.records.len() >= TRACKED_MAX && !self.records.contains_key(staff) {
            self.records
                .retain(|_, r| r.locked_until_ms.is_some_and(|u| u > now_ms));
        }
        let record = self.records.entry(staff.clone()).or_default();
        if record.locked_until_ms.is_some_and(|u| now_ms >= u) {
            *record = Record::default();
        }
        record.failures = record.failures.saturating_add(1);
        if record.failures >= FAILURES_MAX {
            let until_ms = now_ms.saturating_add(LOCK_MS);
            record.locked_until_ms = Some(until_ms);
            return Some(Locked { until_ms });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff(id: &str) -> StaffId {
        StaffId::parse(id).unwrap()
    }

    #[test]
    fn five_wrong_pins_lock_for_a_minute_and_only_that_staff_id() {
        let mut guard = LoginGuard::default();
        let s = staff("s-3");
        for n in 1..FAILURES_MAX {
            assert_eq!(guard.check(&s, 1000), Ok(()));
            assert_eq!(
                guard.record(&s, false, 1000 + u64::from(n)),
                None,
                "failure {n}"
            );
        }
        assert_eq!(
            guard.record(&s, false, 2000),
            Some(Locked {
                until_ms: 2000 + LOCK_MS
            })
        );
        assert_eq!(
            guard.check(&s, 2000),
            Err(Locked {
                until_ms: 2000 + LOCK_MS
            })
        );
        assert_eq!(
            guard.check(&s, 2000 + LOCK_MS - 1),
            Err(Locked {
                until_ms: 2000 + LOCK_MS
            })
        );
        assert_eq!(
            guard.check(&staff("s-4"), 2000),
            Ok(()),
            "another staff id is not locked"
        );
        // After the lock, the count starts again from zero.
        assert_eq!(guard.check(&s, 2000 + LOCK_MS), Ok(()));
        assert_eq!(guard.record(&s, false, 2000 + LOCK_MS), None);
        assert_eq!(guard.check(&s, 2000 + LOCK_MS), Ok(()));
    }

    #[test]
    fn a_right_pin_resets_the_count() {
        let mut guard = LoginGuard::default();
        let s = staff("s-3");
        for _ in 1..FAILURES_MAX {
            guard.record(&s, false, 0);
        }
        assert_eq!(guard.record(&s, true, 0), None);
        for _ in 1..FAILURES_MAX {
            assert_eq!(guard.record(&s, false, 0), None);
        }
        assert!(guard.record(&s, false, 0).is_some());
    }

    #[test]
    fn tracking_is_bounded() {
        let mut guard = LoginGuard::default();
        for n in 0..(TRACKED_MAX * 3) {
            guard.record(&staff(&format!("s-{n}")), false, 0);
        }
        assert!(guard.records.len() <= TRACKED_MAX);
        assert_eq!(
            guard.record(&staff("s-x"), false, u64::MAX),
            None,
            "no overflow near the end of time"
        );
    }
}
