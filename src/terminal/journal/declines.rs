//! The operations this terminal declined on its own while offline: kept and counted, never
//! sent (they take no `terminal_seq`, and the ledger never sees them).

use super::entries::check_amount;
use super::{Journal, JournalError, TEXT_BYTES_MAX, bounded, corrupt, invalid, sql_limit};
use crate::domain::{CardUid, Cents, ClientRequestId, StaffId};
use crate::protocol::api::format_time;
use crate::terminal::core::entry::OperationKind;
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::params;

/// An operation declined offline, for [`Journal::record_decline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclineRecord {
    /// Its own key, so that the record can be named (it is never sent).
    pub client_request_id: ClientRequestId,
    /// Order or top-up.
    pub operation: OperationKind,
    /// The card.
    pub card_uid: CardUid,
    /// The signed effect it would have had (order `-total`, top-up `+amount`).
    pub amount_cents: Cents,
    /// Why (`INSUFFICIENT_FUNDS`, `OFFLINE_LIMIT`, ...).
    pub reason: String,
    /// Who armed it.
    pub staff_id: StaffId,
}

impl Journal {
    /// Records an operation declined offline (durably); it is never sent to the ledger.
    pub fn record_decline(
        &mut self,
        record: &DeclineRecord,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if !matches!(
            record.operation,
            OperationKind::Order
                | OperationKind::Recharge
                | OperationKind::Return
                | OperationKind::VoucherGrant
        ) {
            return Err(invalid(
                "only orders, top-ups, deposit returns and voucher grants are declined offline",
            ));
        }
        check_amount(record.operation, record.amount_cents)?;
        self.conn
            .prepare_cached(
                "INSERT INTO offline_declines (client_request_id, operation, card_uid,
                     amount_cents, reason, staff_id, declined_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                record.client_request_id.to_string(),
                record.operation.as_str(),
                record.card_uid.as_str(),
                record.amount_cents.get(),
                bounded(record.reason.clone(), TEXT_BYTES_MAX),
                record.staff_id.as_str(),
                format_time(now.trunc_subsecs(3)),
            ])?;
        Ok(())
    }

    /// The offline declines recorded, oldest first, at most `limit`.
    pub fn declines(&self, limit: usize) -> Result<Vec<DeclineRecord>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT client_request_id, operation, card_uid, amount_cents, reason, staff_id
             FROM offline_declines ORDER BY id LIMIT ?1",
        )?;
        let mut rows = stmt.query(params![sql_limit(limit)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let crid: String = row.get(0)?;
            let operation: String = row.get(1)?;
            let card: String = row.get(2)?;
            let staff: String = row.get(5)?;
            out.push(DeclineRecord {
                client_request_id: ClientRequestId::parse(&crid).map_err(corrupt)?,
                operation: OperationKind::parse(&operation)
                    .ok_or_else(|| corrupt(format!("operation {operation}")))?,
                card_uid: CardUid::parse(&card).map_err(corrupt)?,
                amount_cents: Cents::new(row.get(3)?),
                reason: row.get(4)?,
                staff_id: StaffId::parse(&staff).map_err(corrupt)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::journal::Journal;

    #[test]
    fn offline_declines_are_kept_and_counted_without_a_terminal_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
        let record = DeclineRecord {
            client_request_id: ClientRequestId::new_random(),
            operation: OperationKind::Order,
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            amount_cents: Cents::new(-450),
            reason: "INSUFFICIENT_FUNDS".into(),
            staff_id: StaffId::parse("s-1").unwrap(),
        };
        j.record_decline(&record, Utc::now()).unwrap();
        assert_eq!(j.declines(10).unwrap(), vec![record.clone()]);
        let counts = j.counts().unwrap();
        assert_eq!(counts.declined_offline, 1);
        assert_eq!(counts.last_seq, None, "a decline takes no terminal_seq");
        // The same key twice, a void, or an order that credits: refused, nothing written.
        assert!(j.record_decline(&record, Utc::now()).is_err());
        let void = DeclineRecord {
            client_request_id: ClientRequestId::new_random(),
            operation: OperationKind::Void,
            ..record.clone()
        };
        assert!(matches!(
            j.record_decline(&void, Utc::now()),
            Err(JournalError::Invalid(_))
        ));
        let credit = DeclineRecord {
            client_request_id: ClientRequestId::new_random(),
            amount_cents: Cents::new(450),
            ..record
        };
        assert!(matches!(
            j.record_decline(&credit, Utc::now()),
            Err(JournalError::Invalid(_))
        ));
        assert_eq!(j.counts().unwrap().declined_offline, 1);
    }
}
