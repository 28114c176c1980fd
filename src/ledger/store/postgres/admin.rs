//! Registrations and upkeep in the PostgreSQL store: terminals, staff, products, lost cards,
//! the purge of expired keys, and the health check. Each does what the SQLite store's
//! `admin.rs` does, with the same audit-log rows (actor `admin`, outcome `done`) and the
//! same errors, in one transaction.
//!
//! Times written here come from the database's clock, cut to the millisecond: several ledger
//! processes share one clock that way, and the stored times are the ones SQLite would show
//! (`format_time` keeps milliseconds).

use super::{PgStore, classify};
use crate::domain::{AgeFlag, CardUid, Cents, ProductId, StaffId, TaxRateName};
use crate::ledger::caller::{Actor, Terminal};
use crate::ledger::flow::{card_account, new_transaction_id};
use crate::ledger::rules::{self, CardState};
use crate::ledger::store::{
    AdminStore, ArchivedLog, ArchivedRow, CardKeyRecord, CardReplaced, NewStaff, NewTerminal,
    ProductChange, ProductListing, ProductUpsert, StaffChange, StoreError, TerminalChange,
    card_key_details, check_product_change, product_change_details, product_log_details,
    replaced_stays_blocked, replaced_takes_no_vouchers, terminal_change_applies, unknown_product,
};
use crate::protocol::api::{BlockReason, CardStatus, TerminalKind};
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use serde_json::json;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use uuid::Uuid;

/// A stored value that does not make sense (a bug or corrupted data).
pub(super) fn internal(what: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(what.to_string())
}

/// A value of a column that holds one of a type's spellings (a role, a kind).
pub(super) fn parse_stored<T>(text: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| internal(format!("bad stored value {text:?}")))
}

/// How a terminal is looked up.
#[derive(Debug, Clone, Copy)]
pub(super) enum TerminalKey {
    /// By the SHA-256 of its bearer token (authentication).
    TokenSha256,
    /// By its name (imports of a terminal's journal).
    Name,
}

impl PgStore {
    /// The active terminal with this token hash or name. Reads only: `last_seen_at` moves
    /// when the terminal's operations are applied, as in the SQLite store.
    pub(super) async fn terminal_by(
        &self,
        by: TerminalKey,
        key: String,
    ) -> Result<Option<Terminal>, StoreError> {
        let sql = match by {
            TerminalKey::TokenSha256 => {
                "SELECT terminal_id, name, kind, point_of_sale FROM terminals
                 WHERE token_sha256 = $1 AND active"
            }
            TerminalKey::Name => {
                "SELECT terminal_id, name, kind, point_of_sale FROM terminals
                 WHERE name = $1"
            }
        };
        let rows = self.rows(sql, &[&key]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let kind: String = row.try_get(2).map_err(classify)?;
        Ok(Some(Terminal {
            terminal_id: row.try_get(0).map_err(classify)?,
            name: row.try_get(1).map_err(classify)?,
            kind: parse_stored(&kind, TerminalKind::parse)?,
            point_of_sale: row.try_get(3).map_err(classify)?,
        }))
    }
}

/// The card that replaced card `uid`, if it was replaced.
async fn replaced_by(tx: &impl GenericClient, uid: &str) -> Result<Option<String>, StoreError> {
    let row = tx
        .query_opt("SELECT replaced_by FROM cards WHERE card_uid = $1", &[&uid])
        .await
        .map_err(classify)?;
    match row {
        Some(row) => row.try_get(0).map_err(classify),
        None => Ok(None),
    }
}

/// The cards that replaced `start`, one after the other.
async fn replacement_chain(
    tx: &impl GenericClient,
    start: &CardUid,
) -> Result<Vec<String>, StoreError> {
    let mut chain: Vec<String> = Vec::new();
    let mut current = start.as_str().to_owned();
    while let Some(by) = replaced_by(tx, &current).await? {
        if chain.len() >= rules::REPLACEMENT_CHAIN_MAX || by == start.as_str() {
            return Err(StoreError::Conflict(format!(
                "card {start}: more than {} replacements in a row",
                rules::REPLACEMENT_CHAIN_MAX
            )));
        }
        chain.push(by.clone());
        current = by;
    }
    Ok(chain)
}

/// Writes card `uid` as `card` (a new row when `create`), with the next feed version.
async fn write_card(
    tx: &impl GenericClient,
    uid: &CardUid,
    create: bool,
    card: &CardState,
) -> Result<(), StoreError> {
    let sql = if create {
        "INSERT INTO cards (card_uid, balance_cents, status, block_reason, age_flag,
                            voucher_units, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, nextval('card_version_seq'),
                 date_trunc('milliseconds', now()), date_trunc('milliseconds', now()))"
    } else {
        "UPDATE cards SET balance_cents = $2, status = $3, block_reason = $4,
             age_flag = $5, voucher_units = $6, version = nextval('card_version_seq'),
             updated_at = date_trunc('milliseconds', now())
         WHERE card_uid = $1"
    };
    let stmt = tx.prepare_cached(sql).await.map_err(classify)?;
    tx.execute(
        &stmt,
        &[
            &uid.as_str(),
            &card.balance.get(),
            &card.status.as_str(),
            &card.block_reason.map(BlockReason::as_str),
            &card.age_flag.map(AgeFlag::as_str),
            &card.vouchers,
        ],
    )
    .await
    .map_err(classify)?;
    Ok(())
}

/// Appends an admin action to the audit log.
async fn log_admin(
    client: &impl GenericClient,
    operation: &str,
    card_uid: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    log_change(client, &Actor::Cli, operation, card_uid, details).await
}

/// Appends an administrative change by `actor` to the audit log.
pub(super) async fn log_change(
    client: &impl GenericClient,
    actor: &Actor,
    operation: &str,
    card_uid: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO app_transaction_log
                 (occurred_at, actor, operation, card_uid, outcome, details)
             VALUES (date_trunc('milliseconds', now()), $1, $2, $3, 'done', $4)",
        )
        .await
        .map_err(classify)?;
    client
        .execute(
            &stmt,
            &[&actor.audit_name(), &operation, &card_uid, &Json(details)],
        )
        .await
        .map_err(classify)?;
    Ok(())
}

/// An insert's error: `conflict()` for a unique key already taken, else as classified.
pub(super) fn unless_taken(
    e: tokio_postgres::Error,
    conflict: impl FnOnce() -> String,
) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(conflict())
    } else {
        classify(e)
    }
}

/// A card's state from its stored `balance_cents, status, block_reason, age_flag,
/// voucher_units`.
fn card_state(
    balance_cents: i64,
    status: &str,
    block_reason: Option<&str>,
    age_flag: Option<&str>,
    vouchers: i64,
) -> Result<CardState, StoreError> {
    let status = match status {
        "active" => CardStatus::Active,
        "blocked" => CardStatus::Blocked,
        other => return Err(internal(format!("bad card status {other}"))),
    };
    let block_reason = block_reason
        .map(|r| BlockReason::parse(r).ok_or_else(|| internal(format!("bad block reason {r}"))))
        .transpose()?;
    let age_flag = age_flag
        .map(|f| AgeFlag::parse(f).ok_or_else(|| internal(format!("bad age flag {f}"))))
        .transpose()?;
    Ok(CardState {
        balance: Cents::new(balance_cents),
        status,
        block_reason,
        age_flag,
        vouchers,
    })
}

/// Why a change to a replaced card is refused (card, the card that replaced it).
type Refusal = fn(&CardUid, &str) -> StoreError;

/// The refusal of a change to a card the ledger has never seen.
fn unknown_card(uid: &CardUid) -> StoreError {
    StoreError::NotFound(format!("card {uid} is unknown"))
}

impl PgStore {
    /// Changes a card as `change` says (`None`: the card is unknown; `change` may then
    /// create it, or refuse), with the next feed version and an audit-log row, in one
    /// transaction; returns what `change` returned beside the card and the log's details.
    async fn change_card<T>(
        &self,
        uid: CardUid,
        operation: &str,
        refuse_replaced: Option<Refusal>,
        change: impl FnOnce(Option<CardState>) -> Result<(CardState, serde_json::Value, T), StoreError>,
    ) -> Result<T, StoreError> {
        self.change_card_as(&Actor::Cli, uid, operation, refuse_replaced, change)
            .await
    }

    /// [`PgStore::change_card`], audited as `actor`'s change.
    async fn change_card_as<T>(
        &self,
        actor: &Actor,
        uid: CardUid,
        operation: &str,
        refuse_replaced: Option<Refusal>,
        change: impl FnOnce(Option<CardState>) -> Result<(CardState, serde_json::Value, T), StoreError>,
    ) -> Result<T, StoreError> {
        self.change_card_daily(actor, uid, operation, None, refuse_replaced, change)
            .await
    }

    /// [`PgStore::change_card`], also setting the card's daily voucher allowance and the day
    /// it was last given for, when `daily` says so. With `refuse_replaced`, a replaced card
    /// is refused (checked under the row's lock, so a replacement cannot slip in between).
    async fn change_card_daily<T>(
        &self,
        actor: &Actor,
        uid: CardUid,
        operation: &str,
        daily: Option<(i64, Option<String>)>,
        refuse_replaced: Option<Refusal>,
        change: impl FnOnce(Option<CardState>) -> Result<(CardState, serde_json::Value, T), StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let locked = lock_card(&tx, &uid).await?;
        let card = match locked {
            Some(locked) => {
                if let (Some(refusal), Some(by)) = (refuse_replaced, &locked.replaced_by) {
                    return Err(refusal(&uid, by));
                }
                Some(locked.state)
            }
            None => None,
        };
        let create = card.is_none();
        let (next, details, out) = change(card)?;
        write_card(&tx, &uid, create, &next).await?;
        if let Some((units, day)) = &daily {
            let stmt = tx
                .prepare_cached(
                    "UPDATE cards SET daily_voucher_units = $2, vouchers_day = $3
                     WHERE card_uid = $1",
                )
                .await
                .map_err(classify)?;
            tx.execute(&stmt, &[&uid.as_str(), units, day])
                .await
                .map_err(classify)?;
        }
        log_change(&tx, actor, operation, Some(uid.as_str()), details).await?;
        tx.commit().await.map_err(classify)?;
        Ok(out)
    }
}

/// A card read under its row lock ([`lock_card`]).
struct LockedCard {
    state: CardState,
    replaced_by: Option<String>,
    key_version: Option<i32>,
}

/// Takes the locks a change of card `uid` needs, in the global lock order
/// (migrations/postgres/0007_new_cards.sql): the creation lock of a card not yet in `cards`
/// (holding nothing else), the card feed's writer lock, the card's row; the new version
/// comes after all of them. Returns the card as it stands, `None` if unknown.
async fn lock_card(
    tx: &deadpool_postgres::Transaction<'_>,
    uid: &CardUid,
) -> Result<Option<LockedCard>, StoreError> {
    let stmt = tx
        .prepare_cached("SELECT ledger_lock_new_card($1)")
        .await
        .map_err(classify)?;
    tx.execute(&stmt, &[&uid.as_str()])
        .await
        .map_err(classify)?;
    let stmt = tx
        .prepare_cached("SELECT card_feed_writer()")
        .await
        .map_err(classify)?;
    tx.execute(&stmt, &[]).await.map_err(classify)?;
    let stmt = tx
        .prepare_cached(
            "SELECT balance_cents, status, block_reason, age_flag, voucher_units, replaced_by,
                    key_version
             FROM cards WHERE card_uid = $1 FOR NO KEY UPDATE",
        )
        .await
        .map_err(classify)?;
    let Some(row) = tx
        .query_opt(&stmt, &[&uid.as_str()])
        .await
        .map_err(classify)?
    else {
        return Ok(None);
    };
    Ok(Some(LockedCard {
        state: card_state(
            row.try_get(0).map_err(classify)?,
            row.try_get(1).map_err(classify)?,
            row.try_get(2).map_err(classify)?,
            row.try_get(3).map_err(classify)?,
            row.try_get(4).map_err(classify)?,
        )?,
        replaced_by: row.try_get(5).map_err(classify)?,
        key_version: row.try_get(6).map_err(classify)?,
    }))
}

impl AdminStore for PgStore {
    async fn terminal_by_name(&self, name: String) -> Result<Option<Terminal>, StoreError> {
        self.terminal_by(TerminalKey::Name, name).await
    }

    async fn add_terminal(&self, t: NewTerminal) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, created_at)
                 VALUES ($1, $2, $3, $4, $5, date_trunc('milliseconds', now()))",
            )
            .await
            .map_err(classify)?;
        tx.execute(
            &stmt,
            &[
                &id,
                &t.name,
                &t.kind.as_str(),
                &t.point_of_sale,
                &t.token_sha256,
            ],
        )
        .await
        .map_err(|e| {
            unless_taken(e, || {
                format!("a terminal named {:?} already exists", t.name)
            })
        })?;
        log_admin(
            &tx,
            "terminal_add",
            None,
            json!({ "terminal_id": id, "name": t.name, "kind": t.kind.as_str(), "point_of_sale": t.point_of_sale }),
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        Ok(id)
    }

    async fn change_product(
        &self,
        point_of_sale: String,
        product_id: ProductId,
        change: ProductChange,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let row = tx
            .query_opt(
                "SELECT open_price_max_cents FROM products
                 WHERE point_of_sale = $1 AND product_id = $2 FOR UPDATE",
                &[&point_of_sale, &product_id.as_str()],
            )
            .await
            .map_err(classify)?
            .ok_or_else(|| unknown_product(&product_id, &point_of_sale))?;
        let open: Option<i64> = row.try_get(0).map_err(classify)?;
        check_product_change(&product_id, open, change)?;
        match change {
            ProductChange::Price(price) => tx
                .execute(
                    "UPDATE products SET price_cents = $3,
                         updated_at = date_trunc('milliseconds', now())
                     WHERE point_of_sale = $1 AND product_id = $2",
                    &[&point_of_sale, &product_id.as_str(), &price.get()],
                )
                .await
                .map_err(classify)?,
            ProductChange::Active(active) => tx
                .execute(
                    "UPDATE products SET active = $3,
                         updated_at = date_trunc('milliseconds', now())
                     WHERE point_of_sale = $1 AND product_id = $2",
                    &[&point_of_sale, &product_id.as_str(), &active],
                )
                .await
                .map_err(classify)?,
        };
        log_admin(
            &tx,
            change.operation(),
            None,
            product_change_details(&point_of_sale, &product_id, change),
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn product_list(&self, limit: u32) -> Result<Vec<ProductListing>, StoreError> {
        self.rows(
            "SELECT point_of_sale, product_id, name, price_cents, open_price_max_cents, active
             FROM products ORDER BY point_of_sale COLLATE \"C\", product_id COLLATE \"C\"
             LIMIT $1",
            &[&i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ProductListing {
                point_of_sale: r.try_get(0).map_err(classify)?,
                product_id: r.try_get(1).map_err(classify)?,
                name: r.try_get(2).map_err(classify)?,
                price_cents: r.try_get(3).map_err(classify)?,
                open_price_max_cents: r.try_get(4).map_err(classify)?,
                active: r.try_get(5).map_err(classify)?,
            })
        })
        .collect()
    }

    async fn change_terminal(
        &self,
        name: String,
        change: TerminalChange,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        // The row lock orders a revocation and a rotation of the same terminal.
        let active: Option<bool> = tx
            .query_opt(
                "SELECT active FROM terminals WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await
            .map_err(classify)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(classify)?;
        if !terminal_change_applies(&name, active, &change)? {
            return Ok(());
        }
        let row = match &change {
            TerminalChange::Revoke => tx
                .query_one(
                    "UPDATE terminals SET active = false WHERE name = $1 RETURNING terminal_id",
                    &[&name],
                )
                .await
                .map_err(classify)?,
            TerminalChange::TokenSha256(hash) => tx
                .query_one(
                    "UPDATE terminals SET token_sha256 = $2 WHERE name = $1 RETURNING terminal_id",
                    &[&name, hash],
                )
                .await
                .map_err(classify)?,
        };
        let terminal_id: Uuid = row.try_get(0).map_err(classify)?;
        log_admin(
            &tx,
            change.operation(),
            None,
            json!({ "terminal_id": terminal_id, "name": name }),
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn change_staff(&self, staff_id: StaffId, change: StaffChange) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let n = match &change {
            StaffChange::Active(active) => tx
                .execute(
                    "UPDATE staff SET active = $2, updated_at = date_trunc('milliseconds', now())
                     WHERE staff_id = $1",
                    &[&staff_id.as_str(), active],
                )
                .await
                .map_err(classify)?,
            StaffChange::PinHash(hash) => tx
                .execute(
                    "UPDATE staff SET pin_hash = $2, updated_at = date_trunc('milliseconds', now())
                     WHERE staff_id = $1",
                    &[&staff_id.as_str(), hash],
                )
                .await
                .map_err(classify)?,
        };
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "staff member {staff_id} is unknown"
            )));
        }
        log_admin(
            &tx,
            change.operation(),
            None,
            json!({ "staff_id": staff_id.as_str() }),
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn add_staff(&self, s: NewStaff) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO staff (staff_id, name, role, pin_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, date_trunc('milliseconds', now()),
                         date_trunc('milliseconds', now()))",
            )
            .await
            .map_err(classify)?;
        tx.execute(
            &stmt,
            &[&s.staff_id.as_str(), &s.name, &s.role.as_str(), &s.pin_hash],
        )
        .await
        .map_err(|e| unless_taken(e, || format!("staff member {} already exists", s.staff_id)))?;
        log_admin(
            &tx,
            "staff_add",
            None,
            json!({ "staff_id": s.staff_id.as_str(), "role": s.role.as_str() }),
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn product_tax_rates(&self) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT tax_rate FROM products WHERE tax_rate IS NOT NULL
             GROUP BY tax_rate ORDER BY tax_rate COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0).map_err(classify))
        .collect()
    }

    async fn upsert_products(&self, products: Vec<ProductUpsert>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO products (point_of_sale, product_id, name, price_cents, category, active,
                                       updated_at, tax_rate, min_age, open_price_max_cents,
                                       voucher_price, returnable, deposit_product_id)
                 VALUES ($1, $2, $3, $4, $5, true, date_trunc('milliseconds', now()), $6, $7, $8,
                         $9, $10, $11)
                 ON CONFLICT (point_of_sale, product_id) DO UPDATE SET
                     name = excluded.name, price_cents = excluded.price_cents,
                     category = excluded.category, active = true, updated_at = excluded.updated_at,
                     tax_rate = excluded.tax_rate, min_age = excluded.min_age,
                     open_price_max_cents = excluded.open_price_max_cents,
                     voucher_price = excluded.voucher_price,
                     returnable = excluded.returnable,
                     deposit_product_id = excluded.deposit_product_id",
            )
            .await
            .map_err(classify)?;
        for p in &products {
            tx.execute(
                &stmt,
                &[
                    &p.point_of_sale,
                    &p.product.product_id.as_str(),
                    &p.product.name,
                    &p.product.price_cents.get(),
                    &p.product.category,
                    &p.product.tax_rate.as_ref().map(TaxRateName::as_str),
                    &p.product.min_age.map(|a| i32::from(a.years())),
                    &p.product.open_price_max_cents.map(Cents::get),
                    &p.product
                        .voucher_price
                        .map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
                    &p.product.returnable,
                    &p.product.deposit_product_id.as_ref().map(ProductId::as_str),
                ],
            )
            .await
            .map_err(classify)?;
            log_admin(&tx, "product_upsert", None, product_log_details(p)).await?;
        }
        // Every deposit names a returnable item on sale at its point of sale, whichever of
        // the two this change touched (nothing is committed otherwise).
        let broken = tx
            .query_opt(
                "SELECT p.point_of_sale, p.product_id, p.deposit_product_id FROM products p
                 WHERE p.active AND p.deposit_product_id IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM products d
                     WHERE d.point_of_sale = p.point_of_sale
                       AND d.product_id = p.deposit_product_id AND d.active AND d.returnable)
                 ORDER BY p.point_of_sale COLLATE \"C\", p.product_id COLLATE \"C\"
                 LIMIT 1",
                &[],
            )
            .await
            .map_err(classify)?;
        if let Some(row) = broken {
            let (pos, product, deposit): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            return Err(StoreError::Conflict(format!(
                "product {product} at {pos} comes in {deposit} (deposit), which is not a \
                 returnable item on sale there: add {deposit} with returnable first"
            )));
        }
        tx.commit().await.map_err(classify)
    }

    async fn set_card_lost_by(
        &self,
        actor: Actor,
        uid: CardUid,
        lost: bool,
    ) -> Result<(), StoreError> {
        let operation = if lost { "card_block" } else { "card_unblock" };
        let refusal: Option<Refusal> = (!lost).then_some(replaced_stays_blocked);
        let unknown = uid.clone();
        self.change_card_as(&actor, uid, operation, refusal, |card| {
            let card = card.ok_or_else(|| unknown_card(&unknown))?;
            Ok((rules::mark_lost(card, lost), json!({}), ()))
        })
        .await
    }

    async fn set_card_age_flag(
        &self,
        uid: CardUid,
        age_flag: Option<AgeFlag>,
    ) -> Result<(), StoreError> {
        let details = json!({ "age_flag": age_flag.map(AgeFlag::as_str) });
        let unknown = uid.clone();
        self.change_card(uid, "card_age_flag", None, |card| {
            let card = card.ok_or_else(|| unknown_card(&unknown))?;
            Ok((CardState { age_flag, ..card }, details, ()))
        })
        .await
    }

    async fn record_card_key(
        &self,
        terminal: Terminal,
        uid: CardUid,
        key_version: u8,
    ) -> Result<CardKeyRecord, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let locked = lock_card(&tx, &uid).await?;
        let previous = locked
            .as_ref()
            .and_then(|c| c.key_version)
            .map(|v| u8::try_from(v).map_err(internal))
            .transpose()?;
        let replaced_by = locked.as_ref().and_then(|c| c.replaced_by.as_deref());
        let changed = rules::card_key_change(previous, replaced_by, key_version)
            .map_err(|why| StoreError::Conflict(format!("card {uid}: {why}")))?;
        let card_created = locked.is_none();
        if changed {
            let card = locked.map_or(CardState::NEW, |c| c.state);
            write_card(&tx, &uid, card_created, &card).await?;
            let stmt = tx
                .prepare_cached("UPDATE cards SET key_version = $2 WHERE card_uid = $1")
                .await
                .map_err(classify)?;
            tx.execute(&stmt, &[&uid.as_str(), &i32::from(key_version)])
                .await
                .map_err(classify)?;
            log_change(
                &tx,
                &Actor::Terminal(terminal.name),
                "card_key",
                Some(uid.as_str()),
                card_key_details(key_version, previous, card_created),
            )
            .await?;
            tx.commit().await.map_err(classify)?;
        }
        Ok(CardKeyRecord {
            key_version,
            changed,
            card_created,
        })
    }

    async fn grant_vouchers(&self, uid: CardUid, units: i64) -> Result<i64, StoreError> {
        self.change_card(
            uid,
            "voucher_grant",
            Some(replaced_takes_no_vouchers),
            |card| {
                let create = card.is_none();
                let card = card.unwrap_or(CardState::NEW);
                let vouchers =
                    rules::desk_voucher_grant(card, units).map_err(StoreError::Conflict)?;
                let details =
                    json!({ "units": units, "voucher_units": vouchers, "card_created": create });
                Ok((CardState { vouchers, ..card }, details, vouchers))
            },
        )
        .await
    }

    async fn set_daily_vouchers(
        &self,
        uid: CardUid,
        units: i64,
        day: NaiveDate,
    ) -> Result<i64, StoreError> {
        let day = day.to_string();
        let daily = Some((units, (units > 0).then(|| day.clone())));
        self.change_card_daily(
            &Actor::Cli,
            uid,
            "voucher_daily",
            daily,
            Some(replaced_takes_no_vouchers),
            |card| {
                let create = card.is_none();
                let card = card.unwrap_or(CardState::NEW);
                let next = rules::daily_vouchers_set(card, units);
                let details = json!({ "daily_voucher_units": units, "day": day,
                                  "units_before": card.vouchers, "voucher_units": next.vouchers,
                                  "card_created": create });
                Ok((next, details, next.vouchers))
            },
        )
        .await
    }

    async fn start_voucher_day(&self, day: NaiveDate) -> Result<u64, StoreError> {
        let day = day.to_string();
        let batch = i64::from(rules::VOUCHER_DAY_BATCH);
        let mut renewed = 0u64;
        // Until a round renews nothing: a round may renew fewer than a batch while cards
        // are still due (one changed under it at that moment is left for the next round).
        loop {
            let n = self
                .count("SELECT ledger_start_voucher_day($1, $2)", &[&day, &batch])
                .await?;
            if n == 0 {
                return Ok(renewed);
            }
            renewed += n;
        }
    }

    async fn purge_expired_keys(&self, limit: u32) -> Result<u64, StoreError> {
        self.count(
            "WITH gone AS (
                     DELETE FROM idempotency_keys WHERE client_request_id IN
                         (SELECT client_request_id FROM idempotency_keys
                          WHERE transaction_id IS NULL
                            AND expires_at < date_trunc('milliseconds', now())
                          LIMIT $1)
                     RETURNING 1)
                 SELECT count(*) FROM gone",
            &[&i64::from(limit)],
        )
        .await
    }

    async fn archive_candidates(
        &self,
        log: ArchivedLog,
        before: DateTime<Utc>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ArchivedRow>, StoreError> {
        let sql = match log {
            ArchivedLog::Audit => {
                "SELECT log_id, occurred_at < $2, row_to_json(t)::text FROM app_transaction_log t
                 WHERE log_id > $1 AND log_id < (SELECT max(log_id) FROM app_transaction_log)
                 ORDER BY log_id LIMIT $3"
            }
            ArchivedLog::Scans => {
                "SELECT scan_id, received_at < $2, row_to_json(t)::text FROM nfc_scan_log t
                 WHERE scan_id > $1 AND scan_id < (SELECT max(scan_id) FROM nfc_scan_log)
                 ORDER BY scan_id LIMIT $3"
            }
        };
        self.rows(sql, &[&after_id, &before, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(ArchivedRow {
                    id: r.try_get(0).map_err(classify)?,
                    due: r.try_get(1).map_err(classify)?,
                    json: r.try_get(2).map_err(classify)?,
                })
            })
            .collect()
    }

    async fn remove_archived(&self, log: ArchivedLog, ids: Vec<i64>) -> Result<u64, StoreError> {
        let sql = match log {
            ArchivedLog::Audit => "SELECT ledger_remove_archived_audit_log($1)",
            ArchivedLog::Scans => {
                "WITH gone AS (DELETE FROM nfc_scan_log WHERE scan_id = ANY ($1) RETURNING 1)
                 SELECT count(*) FROM gone"
            }
        };
        self.count(sql, &[&ids]).await
    }

    async fn replace_card_by(
        &self,
        actor: Actor,
        old: CardUid,
        new: CardUid,
        merge: bool,
    ) -> Result<CardReplaced, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        // Where the move goes (read first, checked again under the locks below).
        let known = tx
            .query_opt("SELECT 1 FROM cards WHERE card_uid = $1", &[&old.as_str()])
            .await
            .map_err(classify)?;
        if known.is_none() {
            return Err(unknown_card(&old));
        }
        let chain = replacement_chain(&tx, &old).await?;
        let new_by = replaced_by(&tx, new.as_str()).await?;
        let (first, target) =
            rules::replacement_target(old.as_str(), new.as_str(), &chain, new_by.as_deref())
                .map_err(StoreError::Conflict)?;
        let new = CardUid::parse(&target).map_err(|e| internal(format!("{target}: {e}")))?;
        // The global lock order (migrations/postgres/0007_new_cards.sql): the creation lock
        // of the new card (it may not exist yet), the card feed's writer lock, the cards'
        // rows (two here: in one order, so that two replacements never wait on each other).
        tx.execute("SELECT ledger_lock_new_card($1)", &[&new.as_str()])
            .await
            .map_err(classify)?;
        tx.execute("SELECT card_feed_writer()", &[])
            .await
            .map_err(classify)?;
        let rows = tx
            .query(
                "SELECT card_uid, balance_cents, status, block_reason, age_flag, voucher_units,
                        replaced_by
                 FROM cards WHERE card_uid IN ($1, $2)
                 ORDER BY card_uid COLLATE \"C\" FOR NO KEY UPDATE",
                &[&old.as_str(), &new.as_str()],
            )
            .await
            .map_err(classify)?;
        let mut old_row = None;
        let mut new_row = None;
        for row in &rows {
            let uid: String = row.try_get(0).map_err(classify)?;
            let card = card_state(
                row.try_get(1).map_err(classify)?,
                row.try_get(2).map_err(classify)?,
                row.try_get(3).map_err(classify)?,
                row.try_get(4).map_err(classify)?,
                row.try_get(5).map_err(classify)?,
            )?;
            let by: Option<String> = row.try_get(6).map_err(classify)?;
            if uid == old.as_str() {
                old_row = Some((card, by));
            } else {
                new_row = Some((card, by));
            }
        }
        let (old_card, old_by) =
            old_row.ok_or_else(|| StoreError::NotFound(format!("card {old} is unknown")))?;
        // What was read before the locks still holds.
        let changed = old_by.as_ref() != chain.first()
            || new_row.as_ref().is_some_and(|(_, by)| by.is_some());
        if changed {
            return Err(StoreError::Conflict(format!(
                "card {old} or {new} changed meanwhile: run the command again"
            )));
        }
        rules::merge_refusal(first, new_row.as_ref().map(|(card, _)| card), merge)
            .map_err(StoreError::Conflict)?;
        let (new_card, create) = match new_row {
            Some((card, _)) => (card, false),
            None => (CardState::NEW, true),
        };
        let m = rules::move_to_replacement(old_card, new_card).map_err(StoreError::Conflict)?;
        if !first && m.amount.get() == 0 && m.vouchers == 0 {
            return Ok(CardReplaced::nothing(new));
        }
        write_card(&tx, &new, create, &m.new).await?;
        write_card(&tx, &old, false, &m.old).await?;
        if first {
            // The daily allowance goes with the card, unless the new one has its own.
            tx.execute(
                "UPDATE cards n SET daily_voucher_units = o.daily_voucher_units,
                                    vouchers_day = o.vouchers_day
                 FROM cards o
                 WHERE o.card_uid = $1 AND n.card_uid = $2 AND n.daily_voucher_units = 0",
                &[&old.as_str(), &new.as_str()],
            )
            .await
            .map_err(classify)?;
            tx.execute(
                "UPDATE cards SET replaced_by = $2, daily_voucher_units = 0, vouchers_day = NULL
                 WHERE card_uid = $1",
                &[&old.as_str(), &new.as_str()],
            )
            .await
            .map_err(classify)?;
        }
        let transaction_id = new_transaction_id();
        if m.amount.get() != 0 {
            tx.execute(
                "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
                 VALUES ($1, $2, $3, date_trunc('milliseconds', now())),
                        ($1, $4, $5, date_trunc('milliseconds', now()))",
                &[
                    &transaction_id,
                    &card_account(&old),
                    &-m.amount.get(),
                    &card_account(&new),
                    &m.amount.get(),
                ],
            )
            .await
            .map_err(classify)?;
        }
        tx.execute(
            "INSERT INTO card_replacements (transaction_id, old_card_uid, new_card_uid,
                                            amount_cents, voucher_units, created_at)
             VALUES ($1, $2, $3, $4, $5, date_trunc('milliseconds', now()))",
            &[
                &transaction_id,
                &old.as_str(),
                &new.as_str(),
                &m.amount.get(),
                &m.vouchers,
            ],
        )
        .await
        .map_err(classify)?;
        log_change(
            &tx,
            &actor,
            if first {
                "card_replace"
            } else {
                "card_replace_settle"
            },
            Some(old.as_str()),
            json!({ "new_card_uid": new.as_str(), "transaction_id": transaction_id.to_string(),
                    "amount_cents": m.amount.get(), "voucher_units": m.vouchers,
                    "card_created": create }),
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        Ok(CardReplaced {
            transaction_id: Some(transaction_id),
            to_card_uid: new,
            amount_cents: m.amount,
            voucher_units: m.vouchers,
            new_card_created: create,
            first,
        })
    }

    async fn replaced_cards_to_settle(
        &self,
        after: String,
        limit: u32,
    ) -> Result<Vec<(CardUid, CardUid)>, StoreError> {
        let rows = self
            .rows(
                "SELECT card_uid, replaced_by FROM cards
                 WHERE replaced_by IS NOT NULL AND (balance_cents <> 0 OR voucher_units <> 0)
                   AND card_uid COLLATE \"C\" > $1
                 ORDER BY card_uid COLLATE \"C\" LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let parse =
                    |t: String| CardUid::parse(&t).map_err(|e| internal(format!("{t}: {e}")));
                Ok((
                    parse(r.try_get(0).map_err(classify)?)?,
                    parse(r.try_get(1).map_err(classify)?)?,
                ))
            })
            .collect()
    }

    async fn ping_writer(&self) -> Result<(), StoreError> {
        self.ping().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.rows("SELECT count(*) FROM terminals", &[]).await?;
        Ok(())
    }
}
