//! Stripe webhook events in the PostgreSQL store.

use super::{PgStore, not_built};
use crate::ledger::store::{StoreError, StripeEventRecord, StripeOutcome, StripeStore};

impl StripeStore for PgStore {
    async fn apply_stripe(
        &self,
        _request_id: String,
        _event: crate::ledger::stripe::StripeEvent,
    ) -> Result<StripeOutcome, StoreError> {
        Err(not_built("apply_stripe"))
    }

    async fn stripe_events(
        &self,
        _attention: bool,
        _limit: u32,
    ) -> Result<Vec<StripeEventRecord>, StoreError> {
        Err(not_built("stripe_events"))
    }
}
