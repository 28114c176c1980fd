//! What terminals pull from the PostgreSQL store (cards, catalog, staff) and the scans they
//! upload.

use super::{PgStore, not_built};
use crate::domain::CardUid;
use crate::ledger::caller::Terminal;
use crate::ledger::store::{
    CardFeedPage, CardView, FeedStore, Product, ScanReceipt, StaffRecord, StoreError,
};
use crate::protocol::api::Scan;

impl FeedStore for PgStore {
    async fn card(&self, _uid: CardUid) -> Result<Option<CardView>, StoreError> {
        Err(not_built("card"))
    }

    async fn card_feed(
        &self,
        _since_version: i64,
        _limit: u32,
    ) -> Result<CardFeedPage, StoreError> {
        Err(not_built("card_feed"))
    }

    async fn catalog(&self, _point_of_sale: String) -> Result<Vec<Product>, StoreError> {
        Err(not_built("catalog"))
    }

    async fn staff(&self) -> Result<Vec<StaffRecord>, StoreError> {
        Err(not_built("staff"))
    }

    async fn record_scans(
        &self,
        _terminal: Terminal,
        _scans: Vec<Scan>,
    ) -> Result<ScanReceipt, StoreError> {
        Err(not_built("record_scans"))
    }
}
