//! What headquarters reads from the PostgreSQL store: the books' audit and the shift reports.

use super::{PgStore, not_built};
use crate::ledger::store::{AuditReport, ReportStore, ShiftReport, StoreError};

impl ReportStore for PgStore {
    async fn audit(&self) -> Result<AuditReport, StoreError> {
        Err(not_built("audit"))
    }

    async fn shift_reports(
        &self,
        _terminal_name: Option<String>,
    ) -> Result<Vec<ShiftReport>, StoreError> {
        Err(not_built("shift_reports"))
    }
}
