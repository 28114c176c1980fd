//! The journal at a glance, for `cashless terminal status` and the status line: entries per
//! state, the last sync and feed, the offline declines and the pending close-outs, each read
//! in one statement (one snapshot) across the tables the other parts own.

use super::{Journal, JournalError, META_LAST_FEED_AT, META_LAST_SYNC_AT, corrupt, opt_time};
use crate::domain::TerminalSeq;
use chrono::{DateTime, Utc};
use rusqlite::{Row, params};

/// [`Journal::status_counts`]'s statement. The states are spelled out (`IN` over the
/// index's leading column, not `<> 'synced'`) so that each count is a range of
/// `journal_state`; the close-outs' `state = 'pending'` matches the partial index's `WHERE`.
const STATUS_COUNTS_SQL: &str = "SELECT
     (SELECT COUNT(*) FROM journal WHERE state = 'pending'),
     (SELECT COUNT(*) FROM journal WHERE state IN ('in_doubt', 'sending')),
     (SELECT COUNT(*) FROM journal WHERE state = 'rejected'),
     (SELECT value FROM replica_meta WHERE key = ?1),
     (SELECT value FROM replica_meta WHERE key = ?2),
     (SELECT COUNT(*) FROM offline_declines),
     (SELECT COUNT(*) FROM shift_closeouts WHERE state = 'pending')";

/// The journal's state at a glance, for `cashless terminal status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Entries waiting to be sent or replayed.
    pub pending: u64,
    /// Online attempts without an answer.
    pub in_doubt: u64,
    /// Entries the ledger refused for good.
    pub rejected: u64,
    /// Entries the ledger acknowledged.
    pub synced: u64,
    /// The highest `terminal_seq` journaled.
    pub last_seq: Option<TerminalSeq>,
    /// The last successful contact with the ledger's write side: an entry became synced, or
    /// [`Journal::record_sync`].
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The last card-feed page applied: the replica's age.
    pub last_feed_at: Option<DateTime<Utc>>,
    /// Operations this terminal declined on its own while offline (never sent).
    pub declined_offline: u64,
    /// Shift close-outs the ledger has not recorded yet.
    pub closeouts_pending: u64,
}

/// What the status line needs of the journal ([`Journal::status_counts`]): [`Counts`]
/// without what grows all festival (the synced entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    /// Entries waiting to be sent or replayed.
    pub pending: u64,
    /// Online attempts without an answer.
    pub in_doubt: u64,
    /// Entries the ledger refused for good.
    pub rejected: u64,
    /// As [`Counts::last_sync_at`].
    pub last_sync_at: Option<DateTime<Utc>>,
    /// As [`Counts::last_feed_at`].
    pub last_feed_at: Option<DateTime<Utc>>,
    /// Operations this terminal declined on its own while offline (never sent).
    pub declined_offline: u64,
    /// Shift close-outs the ledger has not recorded yet.
    pub closeouts_pending: u64,
}

impl Journal {
    /// Entries per state, the highest `terminal_seq`, the last sync and the last feed, read
    /// in one statement (one snapshot). Counting the synced entries reads every entry the
    /// ledger ever acknowledged: for `cashless terminal status`; the status line, asked for
    /// every second, uses [`Journal::status_counts`].
    pub fn counts(&self) -> Result<Counts, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT
                 (SELECT COUNT(*) FROM journal WHERE state = 'pending'),
                 (SELECT COUNT(*) FROM journal WHERE state IN ('in_doubt', 'sending')),
                 (SELECT COUNT(*) FROM journal WHERE state = 'rejected'),
                 (SELECT COUNT(*) FROM journal WHERE state = 'synced'),
                 (SELECT MAX(terminal_seq) FROM journal),
                 (SELECT value FROM replica_meta WHERE key = ?1),
                 (SELECT value FROM replica_meta WHERE key = ?2),
                 (SELECT COUNT(*) FROM offline_declines),
                 (SELECT COUNT(*) FROM shift_closeouts WHERE state = 'pending')",
        )?;
        let mut rows = stmt.query(params![META_LAST_SYNC_AT, META_LAST_FEED_AT])?;
        let row = rows
            .next()?
            .ok_or_else(|| corrupt("counts returned no row"))?;
        let count = |i: usize| count_at(row, i);
        let last_seq = match row.get::<_, Option<i64>>(4)? {
            Some(seq) => {
                Some(TerminalSeq::new(seq).map_err(|_| corrupt(format!("terminal_seq {seq}")))?)
            }
            None => None,
        };
        Ok(Counts {
            pending: count(0)?,
            in_doubt: count(1)?,
            rejected: count(2)?,
            synced: count(3)?,
            last_seq,
            last_sync_at: opt_time(META_LAST_SYNC_AT, row.get(5)?)?,
            last_feed_at: opt_time(META_LAST_FEED_AT, row.get(6)?)?,
            declined_offline: count(7)?,
            closeouts_pending: count(8)?,
        })
    }

    /// What the status line shows, in one statement (one snapshot), without reading the
    /// synced entries: the unsettled states through the `journal_state` index, the pending
    /// close-outs through `shift_closeouts_pending`. Its cost follows what is unsettled (and
    /// the offline declines), not the festival's length.
    pub fn status_counts(&self) -> Result<StatusCounts, JournalError> {
        let mut stmt = self.conn.prepare_cached(STATUS_COUNTS_SQL)?;
        let mut rows = stmt.query(params![META_LAST_SYNC_AT, META_LAST_FEED_AT])?;
        let row = rows
            .next()?
            .ok_or_else(|| corrupt("status counts returned no row"))?;
        let count = |i: usize| count_at(row, i);
        Ok(StatusCounts {
            pending: count(0)?,
            in_doubt: count(1)?,
            rejected: count(2)?,
            last_sync_at: opt_time(META_LAST_SYNC_AT, row.get(3)?)?,
            last_feed_at: opt_time(META_LAST_FEED_AT, row.get(4)?)?,
            declined_offline: count(5)?,
            closeouts_pending: count(6)?,
        })
    }
}

impl Journal {
    /// When the oldest entry the ledger has not acknowledged (pending, in doubt or being
    /// sent) was journaled; `None` when there is none. Reads only the unsettled entries
    /// (the `journal_state` index).
    pub fn oldest_unsettled_at(&self) -> Result<Option<DateTime<Utc>>, JournalError> {
        let text: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT MIN(created_at) FROM journal
                 WHERE state IN ('pending', 'in_doubt', 'sending')",
            )?
            .query_row([], |r| r.get(0))?;
        opt_time("created_at", text)
    }
}

/// Column `i` of `row`, a `COUNT(*)`.
fn count_at(row: &Row<'_>, i: usize) -> Result<u64, JournalError> {
    let n: i64 = row.get(i)?;
    u64::try_from(n).map_err(|_| corrupt(format!("a count of {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CardUid, Cents, ClientRequestId, StaffId, TerminalSeq};
    use crate::protocol::api::Mode;
    use crate::terminal::journal::{
        CloseoutState, Decision, DeclineRecord, EntryState, NewEntry, OperationKind,
    };
    use chrono::Utc;
    use rusqlite::params;

    #[test]
    fn status_counts_agree_with_counts_and_read_no_synced_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
        let now = Utc::now();
        let card = CardUid::parse("04A1B2C3").unwrap();
        let states = [
            EntryState::Pending,
            EntryState::Pending,
            EntryState::InDoubt,
            EntryState::Sending,
            EntryState::Pending,
            EntryState::Pending,
            EntryState::Pending,
        ];
        for state in states {
            let crid = ClientRequestId::new_random();
            let entry = NewEntry {
                client_request_id: crid,
                operation: OperationKind::Order,
                mode: Mode::Offline,
                card_uid: Some(card.clone()),
                amount_cents: Cents::new(-450),
                decision: Some(Decision::ApprovedOffline),
                decline_reason: None,
                state,
            };
            j.append(
                entry,
                |seq| serde_json::json!({"client_request_id": crid, "terminal_seq": seq.get()}),
                now,
            )
            .unwrap();
        }
        let seq = |n| TerminalSeq::new(n).unwrap();
        let ledger = Some((201, "{}"));
        j.set_state(seq(5), EntryState::Synced, None, None, ledger, now)
            .unwrap();
        j.set_state(seq(6), EntryState::Synced, None, None, ledger, now)
            .unwrap();
        j.set_state(
            seq(7),
            EntryState::Rejected,
            None,
            None,
            Some((403, "{}")),
            now,
        )
        .unwrap();
        j.record_decline(
            &DeclineRecord {
                client_request_id: ClientRequestId::new_random(),
                operation: OperationKind::Order,
                card_uid: card,
                amount_cents: Cents::new(-450),
                reason: "INSUFFICIENT_FUNDS".into(),
                staff_id: StaffId::parse("s-1").unwrap(),
            },
            now,
        )
        .unwrap();
        let staff = StaffId::parse("s-2").unwrap();
        for _ in 0..2 {
            j.close_shift(ClientRequestId::new_random(), &staff, Cents::ZERO, now)
                .unwrap();
        }
        let recorded = j.pending_closeouts(1).unwrap()[0]
            .closeout
            .client_request_id;
        j.settle_closeout(recorded, CloseoutState::Recorded, 201, "{}")
            .unwrap();

        let c = j.counts().unwrap();
        assert_eq!((c.pending, c.in_doubt, c.rejected, c.synced), (2, 2, 1, 2));
        assert_eq!((c.declined_offline, c.closeouts_pending), (1, 1));
        let s = j.status_counts().unwrap();
        assert_eq!(
            s,
            StatusCounts {
                pending: c.pending,
                in_doubt: c.in_doubt,
                rejected: c.rejected,
                last_sync_at: c.last_sync_at,
                last_feed_at: c.last_feed_at,
                declined_offline: c.declined_offline,
                closeouts_pending: c.closeouts_pending,
            }
        );
        assert!(s.last_sync_at.is_some(), "a synced entry is a contact");

        // The entries are counted through `journal_state` (a range per state, never the
        // synced ones), the close-outs through their partial index; only the offline
        // declines are scanned (what was declined offline, not what was sold).
        let mut plan = j
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {STATUS_COUNTS_SQL}"))
            .unwrap();
        let plan: Vec<String> = plan
            .query_map(params!["a", "b"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let reads = |table: &str| -> Vec<&String> {
            plan.iter()
                .filter(|d| d.contains(&format!(" {table} ")))
                .collect()
        };
        let journal = reads("journal");
        assert_eq!(journal.len(), 3, "{plan:#?}");
        assert!(
            journal
                .iter()
                .all(|d| d.starts_with("SEARCH journal USING COVERING INDEX journal_state ")),
            "{plan:#?}"
        );
        // A scan of the partial index reads the pending close-outs only.
        assert_eq!(
            reads("shift_closeouts"),
            ["SCAN shift_closeouts USING COVERING INDEX shift_closeouts_pending"],
            "{plan:#?}"
        );
    }
}
