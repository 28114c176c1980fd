//! Which terminals need a person: the fleet's rules, pure (a terminal's sync state and last
//! status report, and `now`, in; the reasons out). `ledger terminal list` and headquarters'
//! fleet page both show them.

use crate::ledger::store::TerminalSync;
use chrono::{DateTime, Utc};

/// A terminal clock further than this from the ledger's is marked: operations are accepted
/// whatever their `created_at`, so a skewed clock shifts every time-based report.
pub const CLOCK_OFFSET_MAX_MS: i64 = 60_000;
/// The longest `[hq] silent_after_s` and `unsent_age_max_s` (a day).
pub const FLEET_THRESHOLD_S_MAX: u64 = 86_400;

/// The thresholds of the rules (`[hq]` of the ledger's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetRules {
    /// Heard from neither by an operation nor by a status report for longer than this.
    pub silent_after_s: i64,
    /// Holding an operation the ledger has not acknowledged for longer than this.
    pub unsent_age_max_s: i64,
}

impl Default for FleetRules {
    fn default() -> FleetRules {
        FleetRules {
            silent_after_s: 300,
            unsent_age_max_s: 900,
        }
    }
}

/// Why a terminal needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Not heard from for `silent_s` seconds; `None`: never heard from.
    Silent {
        /// Seconds since the last contact.
        silent_s: Option<i64>,
    },
    /// Holds an operation the ledger has not acknowledged, this many seconds old now.
    OldUnsent {
        /// The oldest one's age, in seconds.
        age_s: i64,
    },
    /// Holds operations the ledger refused for good.
    Rejected {
        /// How many.
        count: i64,
    },
    /// `terminal_seq` values below its highest that never arrived.
    Gaps {
        /// How many.
        missing: i64,
    },
    /// Its clock is this far from the ledger's.
    ClockOff {
        /// The terminal's clock minus the ledger's, in milliseconds.
        offset_ms: i64,
    },
}

impl Attention {
    /// A short word for lists and CSS classes.
    pub fn tag(self) -> &'static str {
        match self {
            Attention::Silent { .. } => "silent",
            Attention::OldUnsent { .. } => "old_unsent",
            Attention::Rejected { .. } => "rejected",
            Attention::Gaps { .. } => "gaps",
            Attention::ClockOff { .. } => "clock",
        }
    }

    /// What a person reads.
    pub fn describe(self) -> String {
        match self {
            Attention::Silent { silent_s: None } => "never heard from".to_owned(),
            Attention::Silent { silent_s: Some(s) } => format!("silent for {}", duration(s)),
            Attention::OldUnsent { age_s } => {
                format!("holds an unsent operation {} old", duration(age_s))
            }
            Attention::Rejected { count } => format!("{count} rejected operation(s)"),
            Attention::Gaps { missing } => format!("{missing} operation(s) missing (gaps)"),
            Attention::ClockOff { offset_ms } => {
                let ahead = if offset_ms > 0 { "ahead" } else { "behind" };
                format!(
                    "clock {} {ahead}",
                    duration(offset_ms.unsigned_abs().div_ceil(1000) as i64)
                )
            }
        }
    }
}

/// `s` seconds as people say it: `45 s`, `12 min`, `3 h 05 min`, `2 d 04 h`.
pub fn duration(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {:02} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// When the ledger last heard from the terminal: its last operation or status report.
pub fn last_contact(t: &TerminalSync) -> Option<DateTime<Utc>> {
    let report = t.status.as_ref().map(|s| s.received_at);
    t.last_seen_at.max(report)
}

/// Why terminal `t` needs a person at `now`, in a fixed order; empty when it does not. A
/// revoked terminal needs nobody (it is not a terminal gone quiet).
pub fn attention(t: &TerminalSync, now: DateTime<Utc>, rules: FleetRules) -> Vec<Attention> {
    let mut reasons = Vec::new();
    if !t.active {
        return reasons;
    }
    match last_contact(t) {
        None => reasons.push(Attention::Silent { silent_s: None }),
        Some(at) => {
            let silent_s = (now - at).num_seconds();
            if silent_s > rules.silent_after_s {
                reasons.push(Attention::Silent {
                    silent_s: Some(silent_s),
                });
            }
        }
    }
    if let Some(status) = &t.status {
        // The age it reported, plus the time since the report.
        if let Some(age_s) = status.oldest_unsent_age_s {
            let age_s = age_s.saturating_add((now - status.received_at).num_seconds().max(0));
            if age_s > rules.unsent_age_max_s {
                reasons.push(Attention::OldUnsent { age_s });
            }
        }
        if status.rejected > 0 {
            reasons.push(Attention::Rejected {
                count: status.rejected,
            });
        }
    }
    if t.missing_seqs > 0 {
        reasons.push(Attention::Gaps {
            missing: t.missing_seqs,
        });
    }
    if let Some(status) = &t.status {
        let offset_ms = status.clock_offset_ms();
        if offset_ms.abs() > CLOCK_OFFSET_MAX_MS {
            reasons.push(Attention::ClockOff { offset_ms });
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::store::StatusSeen;
    use crate::protocol::api::{ReaderState, TerminalKind};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn terminal(status: Option<StatusSeen>) -> TerminalSync {
        TerminalSync {
            name: "bar-1".into(),
            kind: TerminalKind::Bar,
            point_of_sale: "Main Bar".into(),
            active: true,
            last_seen_at: None,
            highest_contiguous_seq: 0,
            highest_seen_seq: 0,
            missing_seqs: 0,
            status,
        }
    }

    fn status(received_at: &str) -> StatusSeen {
        StatusSeen {
            received_at: at(received_at),
            reported_at: at(received_at),
            waiting: 0,
            in_doubt: 0,
            rejected: 0,
            oldest_unsent_age_s: None,
            card_feed_cursor: "1".into(),
            reader_state: ReaderState::Connected,
            software_version: "0.1.0".into(),
        }
    }

    const NOW: &str = "2026-07-01T23:00:00Z";

    #[test]
    fn a_terminal_in_step_needs_nobody() {
        let t = terminal(Some(status("2026-07-01T22:59:30Z")));
        assert_eq!(attention(&t, at(NOW), FleetRules::default()), vec![]);
    }

    #[test]
    fn silence_counts_from_the_last_operation_or_report_whichever_is_later() {
        let rules = FleetRules::default();
        let never = terminal(None);
        assert_eq!(
            attention(&never, at(NOW), rules),
            vec![Attention::Silent { silent_s: None }]
        );
        let mut t = terminal(Some(status("2026-07-01T22:50:00Z")));
        assert_eq!(
            attention(&t, at(NOW), rules),
            vec![Attention::Silent {
                silent_s: Some(600)
            }]
        );
        // An operation since the report is contact too.
        t.last_seen_at = Some(at("2026-07-01T22:58:00Z"));
        assert_eq!(attention(&t, at(NOW), rules), vec![]);
        // Exactly at the threshold: not yet.
        let t = terminal(Some(status("2026-07-01T22:55:00Z")));
        assert_eq!(attention(&t, at(NOW), rules), vec![]);
        // A revoked terminal is not a terminal gone quiet.
        let mut revoked = terminal(None);
        revoked.active = false;
        revoked.missing_seqs = 3;
        assert_eq!(attention(&revoked, at(NOW), rules), vec![]);
    }

    #[test]
    fn unsent_operations_age_from_the_report_rejections_gaps_and_clocks_are_marked() {
        let rules = FleetRules {
            silent_after_s: 300,
            unsent_age_max_s: 900,
        };
        let mut s = status("2026-07-01T22:58:00Z");
        // 800 s old when reported two minutes ago: 920 s now.
        s.oldest_unsent_age_s = Some(800);
        s.rejected = 2;
        s.reported_at = at("2026-07-01T22:56:59Z");
        let mut t = terminal(Some(s));
        t.missing_seqs = 4;
        assert_eq!(
            attention(&t, at(NOW), rules),
            vec![
                Attention::OldUnsent { age_s: 920 },
                Attention::Rejected { count: 2 },
                Attention::Gaps { missing: 4 },
                Attention::ClockOff { offset_ms: -61_000 },
            ]
        );
        assert_eq!(
            Attention::ClockOff { offset_ms: -61_000 }.describe(),
            "clock 1 min behind"
        );
        // A clock a minute off exactly is still in step.
        let mut s = status("2026-07-01T22:58:00Z");
        s.reported_at = at("2026-07-01T22:59:00Z");
        assert_eq!(attention(&terminal(Some(s)), at(NOW), rules), vec![]);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(-5), "0 s");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(600), "10 min");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3 h 05 min");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2 d 04 h");
    }
}
