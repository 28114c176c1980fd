//! The scan log: every card presentation, kept until the sync task uploaded it
//! (`POST /v1/scans`), read back oldest first, one upload at a time.

use super::{Journal, JournalError, at_most, corrupt, invalid, parse_time, sql_limit};
use crate::domain::{CardUid, TerminalSeq};
use crate::protocol::api::{SCANS_MAX, Scan, format_time};
use rusqlite::{TransactionBehavior, params};

/// A scan from the scan log, with its local id for [`Journal::mark_scans_uploaded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedScan {
    /// Local id, increasing.
    pub id: i64,
    /// The scan as uploaded to `POST /v1/scans`.
    pub scan: Scan,
}

impl Journal {
    /// Appends a card presentation to the scan log; returns its local id. Refused
    /// ([`JournalError::Invalid`]) when the ledger would refuse it (`Scan::validate`), so that
    /// one bad scan cannot block every later upload.
    pub fn record_scan(&mut self, scan: &Scan) -> Result<i64, JournalError> {
        scan.validate(0)
            .map_err(|e| invalid(format!("scan {}: {}", e.field, e.message)))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO scan_log (card_uid, result, reader, scanned_at, terminal_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            scan.card_uid.as_str(),
            scan.result,
            scan.reader,
            format_time(scan.scanned_at),
            scan.terminal_seq.map(TerminalSeq::get),
        ])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// The oldest scans not yet uploaded, at most `limit` (clamped to [`SCANS_MAX`], one
    /// upload).
    pub fn unuploaded_scans(&self, limit: usize) -> Result<Vec<LoggedScan>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, card_uid, result, reader, scanned_at, terminal_seq FROM scan_log
             WHERE uploaded = 0 ORDER BY id LIMIT ?1",
        )?;
        let mut rows = stmt.query([sql_limit(limit.min(SCANS_MAX))])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let uid: String = row.get(1)?;
            let scanned_at: String = row.get(4)?;
            let terminal_seq = match row.get::<_, Option<i64>>(5)? {
                Some(seq) => Some(
                    TerminalSeq::new(seq)
                        .map_err(|_| corrupt(format!("scan {id}: terminal_seq {seq}")))?,
                ),
                None => None,
            };
            out.push(LoggedScan {
                id,
                scan: Scan {
                    card_uid: CardUid::parse(&uid)
                        .map_err(|e| corrupt(format!("scan {id}: card_uid {uid:?}: {e}")))?,
                    result: row.get(2)?,
                    reader: row.get(3)?,
                    scanned_at: parse_time(&scanned_at)
                        .ok_or_else(|| corrupt(format!("scan {id}: scanned_at {scanned_at:?}")))?,
                    terminal_seq,
                },
            });
        }
        Ok(out)
    }

    /// Marks scans uploaded (at most [`SCANS_MAX`] ids, one upload); returns how many were
    /// not marked before. Unknown ids are ignored.
    pub fn mark_scans_uploaded(&mut self, ids: &[i64]) -> Result<usize, JournalError> {
        at_most(ids.len(), SCANS_MAX, "scan ids")?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut marked = 0;
        {
            let mut update = tx.prepare_cached(
                "UPDATE scan_log SET uploaded = 1 WHERE id = ?1 AND uploaded = 0",
            )?;
            for id in ids {
                marked += update.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(marked)
    }
}
