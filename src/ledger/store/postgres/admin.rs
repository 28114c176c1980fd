//! Registrations and upkeep in the PostgreSQL store: terminals, staff, products, lost cards,
//! the purge of expired keys, and the health check.

use super::{PgStore, not_built};
use crate::domain::CardUid;
use crate::ledger::caller::Terminal;
use crate::ledger::store::{AdminStore, NewStaff, NewTerminal, ProductUpsert, StoreError};
use uuid::Uuid;

impl AdminStore for PgStore {
    async fn terminal_by_name(&self, _name: String) -> Result<Option<Terminal>, StoreError> {
        Err(not_built("terminal_by_name"))
    }

    async fn add_terminal(&self, _t: NewTerminal) -> Result<Uuid, StoreError> {
        Err(not_built("add_terminal"))
    }

    async fn add_staff(&self, _s: NewStaff) -> Result<(), StoreError> {
        Err(not_built("add_staff"))
    }

    async fn upsert_products(&self, _products: Vec<ProductUpsert>) -> Result<(), StoreError> {
        Err(not_built("upsert_products"))
    }

    async fn set_card_lost(&self, _uid: CardUid, _lost: bool) -> Result<(), StoreError> {
        Err(not_built("set_card_lost"))
    }

    async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        Err(not_built("purge_expired_keys"))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Err(not_built("ping"))
    }
}
