//! Operations and shift close-outs in the PostgreSQL store: one call of a stored procedure
//! each (`migrations/postgres/0004_operations.sql`).

use super::{PgStore, not_built};
use crate::ledger::caller::Terminal;
use crate::ledger::outcome::Outcome;
use crate::ledger::store::{OperationStore, StoreError};
use crate::protocol::api::{Operation, ShiftCloseout};

impl OperationStore for PgStore {
    async fn authenticate(&self, _token: &str) -> Result<Option<Terminal>, StoreError> {
        Err(not_built("authenticate"))
    }

    async fn apply(
        &self,
        _terminal: Terminal,
        _request_id: String,
        _operations: Vec<Operation>,
    ) -> Result<Vec<Outcome>, StoreError> {
        Err(not_built("apply"))
    }

    async fn record_shift(
        &self,
        _terminal: Terminal,
        _request_id: String,
        _shift: ShiftCloseout,
    ) -> Result<Outcome, StoreError> {
        Err(not_built("record_shift"))
    }
}
