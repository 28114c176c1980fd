//! Registrations and upkeep in the SQLite store: terminals, staff, products, lost cards,
//! the purge of expired keys, and the health check.

use super::{SqliteStore, TerminalKey, internal, load_card, post, write_card};
use crate::domain::{AgeFlag, CardUid, Cents, MinAge, ProductId, StaffId, TaxRateName};
use crate::ledger::caller::{Actor, Terminal};
use crate::ledger::flow::{card_account, new_transaction_id};
use crate::ledger::rules::{self, CardState};
use crate::ledger::store::{
    AdminStore, ArchivedLog, ArchivedRow, CardKeyRecord, CardReplaced, NewStaff, NewTerminal,
    ProductChange, ProductListing, ProductUpsert, StaffChange, StoreError, TerminalChange,
    card_key_details, check_product_change, product_change_details, product_log_details,
    replaced_stays_blocked, replaced_takes_no_vouchers, terminal_change_applies, unknown_product,
};
use crate::protocol::api::format_time;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use uuid::Uuid;

impl SqliteStore {
    /// Changes a known card as `change` says, with the next feed version and an audit-log
    /// row, in one transaction.
    async fn change_card(
        &self,
        uid: CardUid,
        operation: &'static str,
        details: serde_json::Value,
        change: impl FnOnce(CardState) -> CardState + Send + 'static,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let card = load_card(conn, &uid)?
                .ok_or_else(|| StoreError::NotFound(format!("card {uid} is unknown")))?;
            write_card(conn, &uid, false, &change(card), &format_time(Utc::now()))?;
            log_admin(conn, operation, Some(uid.as_str()), details)
        })
        .await
    }
}

/// The card that replaced card `uid`, if it was replaced.
fn replaced_by(conn: &Connection, uid: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT replaced_by FROM cards WHERE card_uid = ?1")?
        .query_row([uid], |r| r.get(0))
        .optional()?
        .flatten())
}

/// The cards that replaced `start`, one after the other: the one that replaced it, the one
/// that replaced that, ...
fn replacement_chain(conn: &Connection, start: &CardUid) -> Result<Vec<String>, StoreError> {
    let mut chain: Vec<String> = Vec::new();
    let mut current = start.as_str().to_owned();
    while let Some(by) = replaced_by(conn, &current)? {
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

/// [`AdminStore::replace_card`] inside the writer's transaction.
fn replace_card(
    conn: &Connection,
    actor: &Actor,
    old: &CardUid,
    new: &CardUid,
    merge: bool,
) -> Result<CardReplaced, StoreError> {
    let old_card = load_card(conn, old)?
        .ok_or_else(|| StoreError::NotFound(format!("card {old} is unknown")))?;
    let (first, target) = rules::replacement_target(
        old.as_str(),
        new.as_str(),
        &replacement_chain(conn, old)?,
        replaced_by(conn, new.as_str())?.as_deref(),
    )
    .map_err(StoreError::Conflict)?;
    let new = &CardUid::parse(&target).map_err(|e| internal(format!("{target}: {e}")))?;
    let existing = load_card(conn, new)?;
    rules::merge_refusal(first, existing.as_ref(), merge).map_err(StoreError::Conflict)?;
    let (new_card, create) = match existing {
        Some(card) => (card, false),
        None => (CardState::NEW, true),
    };
    let m = rules::move_to_replacement(old_card, new_card).map_err(StoreError::Conflict)?;
    if !first && m.amount.get() == 0 && m.vouchers == 0 {
        return Ok(CardReplaced::nothing(new.clone()));
    }
    let now = format_time(Utc::now());
    write_card(conn, new, create, &m.new, &now)?;
    write_card(conn, old, false, &m.old, &now)?;
    if first {
        // The daily allowance goes with the card, unless the new one has its own.
        conn.prepare_cached(
            "UPDATE cards SET
                 daily_voucher_units = (SELECT daily_voucher_units FROM cards WHERE card_uid = ?1),
                 vouchers_day = (SELECT vouchers_day FROM cards WHERE card_uid = ?1)
             WHERE card_uid = ?2 AND daily_voucher_units = 0",
        )?
        .execute(params![old.as_str(), new.as_str()])?;
        conn.prepare_cached(
            "UPDATE cards SET replaced_by = ?2, daily_voucher_units = 0, vouchers_day = NULL
             WHERE card_uid = ?1",
        )?
        .execute(params![old.as_str(), new.as_str()])?;
    }
    let tx = new_transaction_id();
    if m.amount.get() != 0 {
        post(
            conn,
            &tx,
            &[
                (card_account(old), Cents::new(-m.amount.get())),
                (card_account(new), m.amount),
            ],
            &now,
        )?;
    }
    conn.prepare_cached(
        "INSERT INTO card_replacements (transaction_id, old_card_uid, new_card_uid, amount_cents,
                                        voucher_units, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        tx.to_string(),
        old.as_str(),
        new.as_str(),
        m.amount.get(),
        m.vouchers,
        now
    ])?;
    log_change(
        conn,
        actor,
        if first {
            "card_replace"
        } else {
            "card_replace_settle"
        },
        Some(old.as_str()),
        json!({ "new_card_uid": new.as_str(), "transaction_id": tx.to_string(),
                "amount_cents": m.amount.get(), "voucher_units": m.vouchers,
                "card_created": create }),
    )?;
    Ok(CardReplaced {
        transaction_id: Some(tx),
        to_card_uid: new.clone(),
        amount_cents: m.amount,
        voucher_units: m.vouchers,
        new_card_created: create,
        first,
    })
}

fn log_admin(
    conn: &Connection,
    operation: &str,
    card_uid: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    log_change(conn, &Actor::Cli, operation, card_uid, details)
}

/// An audit-log row for an administrative change by `actor`.
pub(super) fn log_change(
    conn: &Connection,
    actor: &Actor,
    operation: &str,
    card_uid: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO app_transaction_log (occurred_at, actor, operation, card_uid, outcome, details)
         VALUES (?1, ?2, ?3, ?4, 'done', ?5)",
    )?
    .execute(params![
        format_time(Utc::now()),
        actor.audit_name(),
        operation,
        card_uid,
        details.to_string()
    ])?;
    Ok(())
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl AdminStore for SqliteStore {
    async fn terminal_by_name(&self, name: String) -> Result<Option<Terminal>, StoreError> {
        self.terminal_by(TerminalKey::Name, name).await
    }

    async fn add_terminal(&self, t: NewTerminal) -> Result<Uuid, StoreError> {
        self.write(move |conn| {
            let id = Uuid::new_v4();
            let r = conn.execute(
                "INSERT INTO terminals (terminal_id, name, kind, point_of_sale, token_sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id.to_string(), t.name, t.kind.as_str(), t.point_of_sale, t.token_sha256, format_time(Utc::now())],
            );
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!("a terminal named {:?} already exists", t.name)));
                }
                r => r?,
            };
            log_admin(conn, "terminal_add", None, json!({ "terminal_id": id, "name": t.name, "kind": t.kind.as_str(), "point_of_sale": t.point_of_sale }))?;
            Ok(id)
        })
        .await
    }

    async fn add_staff(&self, s: NewStaff) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = format_time(Utc::now());
            let r = conn.execute(
                "INSERT INTO staff (staff_id, name, role, pin_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![s.staff_id.as_str(), s.name, s.role.as_str(), s.pin_hash, now],
            );
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!("staff member {} already exists", s.staff_id)));
                }
                r => r?,
            };
            log_admin(conn, "staff_add", None, json!({ "staff_id": s.staff_id.as_str(), "role": s.role.as_str() }))
        })
        .await
    }

    async fn change_terminal(
        &self,
        name: String,
        change: TerminalChange,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let active: Option<bool> = conn
                .prepare_cached("SELECT active FROM terminals WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            if !terminal_change_applies(&name, active, &change)? {
                return Ok(());
            }
            let terminal_id: String = match &change {
                TerminalChange::Revoke => conn
                    .prepare_cached(
                        "UPDATE terminals SET active = 0 WHERE name = ?1 RETURNING terminal_id",
                    )?
                    .query_row([&name], |r| r.get(0))?,
                TerminalChange::TokenSha256(hash) => conn
                    .prepare_cached(
                        "UPDATE terminals SET token_sha256 = ?2 WHERE name = ?1
                         RETURNING terminal_id",
                    )?
                    .query_row(params![&name, hash], |r| r.get(0))?,
            };
            log_admin(
                conn,
                change.operation(),
                None,
                json!({ "terminal_id": terminal_id, "name": name }),
            )
        })
        .await
    }

    async fn change_staff(&self, staff_id: StaffId, change: StaffChange) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = format_time(Utc::now());
            let n = match &change {
                StaffChange::Active(active) => conn
                    .prepare_cached(
                        "UPDATE staff SET active = ?2, updated_at = ?3 WHERE staff_id = ?1",
                    )?
                    .execute(params![staff_id.as_str(), active, now])?,
                StaffChange::PinHash(hash) => conn
                    .prepare_cached(
                        "UPDATE staff SET pin_hash = ?2, updated_at = ?3 WHERE staff_id = ?1",
                    )?
                    .execute(params![staff_id.as_str(), hash, now])?,
            };
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "staff member {staff_id} is unknown"
                )));
            }
            log_admin(
                conn,
                change.operation(),
                None,
                json!({ "staff_id": staff_id.as_str() }),
            )
        })
        .await
    }

    async fn change_product(
        &self,
        point_of_sale: String,
        product_id: ProductId,
        change: ProductChange,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let open: Option<Option<i64>> = conn
                .prepare_cached(
                    "SELECT open_price_max_cents FROM products
                     WHERE point_of_sale = ?1 AND product_id = ?2",
                )?
                .query_row(params![point_of_sale, product_id.as_str()], |r| r.get(0))
                .optional()?;
            let open = open.ok_or_else(|| unknown_product(&product_id, &point_of_sale))?;
            check_product_change(&product_id, open, change)?;
            let now = format_time(Utc::now());
            match change {
                ProductChange::Price(price) => conn
                    .prepare_cached(
                        "UPDATE products SET price_cents = ?3, updated_at = ?4
                         WHERE point_of_sale = ?1 AND product_id = ?2",
                    )?
                    .execute(params![
                        point_of_sale,
                        product_id.as_str(),
                        price.get(),
                        now
                    ])?,
                ProductChange::Active(active) => conn
                    .prepare_cached(
                        "UPDATE products SET active = ?3, updated_at = ?4
                         WHERE point_of_sale = ?1 AND product_id = ?2",
                    )?
                    .execute(params![point_of_sale, product_id.as_str(), active, now])?,
            };
            log_admin(
                conn,
                change.operation(),
                None,
                product_change_details(&point_of_sale, &product_id, change),
            )
        })
        .await
    }

    async fn product_list(&self, limit: u32) -> Result<Vec<ProductListing>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT point_of_sale, product_id, name, price_cents, open_price_max_cents, active
                     FROM products ORDER BY point_of_sale, product_id LIMIT ?1",
                )?
                .query_map([limit], |r| {
                    Ok(ProductListing {
                        point_of_sale: r.get(0)?,
                        product_id: r.get(1)?,
                        name: r.get(2)?,
                        price_cents: r.get(3)?,
                        open_price_max_cents: r.get(4)?,
                        active: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn product_tax_rates(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT DISTINCT tax_rate FROM products WHERE tax_rate IS NOT NULL
                     ORDER BY tax_rate",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn upsert_products(&self, products: Vec<ProductUpsert>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = format_time(Utc::now());
            for p in &products {
                conn.prepare_cached(
                    "INSERT INTO products (point_of_sale, product_id, name, price_cents, category, active,
                                           updated_at, tax_rate, min_age, open_price_max_cents,
                                           voucher_price, returnable, deposit_product_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (point_of_sale, product_id) DO UPDATE SET
                         name = excluded.name, price_cents = excluded.price_cents,
                         category = excluded.category, active = 1, updated_at = excluded.updated_at,
                         tax_rate = excluded.tax_rate, min_age = excluded.min_age,
                         open_price_max_cents = excluded.open_price_max_cents,
                         voucher_price = excluded.voucher_price,
                         returnable = excluded.returnable,
                         deposit_product_id = excluded.deposit_product_id",
                )?
                .execute(params![
                    p.point_of_sale,
                    p.product.product_id.as_str(),
                    p.product.name,
                    p.product.price_cents.get(),
                    p.product.category,
                    now,
                    p.product.tax_rate.as_ref().map(TaxRateName::as_str),
                    p.product.min_age.map(MinAge::years),
                    p.product.open_price_max_cents.map(Cents::get),
                    p.product.voucher_price,
                    p.product.returnable,
                    p.product.deposit_product_id.as_ref().map(ProductId::as_str),
                ])?;
                log_admin(conn, "product_upsert", None, product_log_details(p))?;
            }
            // Every deposit names a returnable item on sale at its point of sale, whichever
            // of the two this change touched (the job rolls back on an error).
            let broken: Option<(String, String, String)> = conn
                .query_row(
                    "SELECT p.point_of_sale, p.product_id, p.deposit_product_id FROM products p
                     WHERE p.active = 1 AND p.deposit_product_id IS NOT NULL AND NOT EXISTS (
                         SELECT 1 FROM products d
                         WHERE d.point_of_sale = p.point_of_sale
                           AND d.product_id = p.deposit_product_id
                           AND d.active = 1 AND d.returnable = 1)
                     ORDER BY 1, 2 LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            if let Some((pos, product, deposit)) = broken {
                return Err(StoreError::Conflict(format!(
                    "product {product} at {pos} comes in {deposit} (deposit), which is not a \
                     returnable item on sale there: add {deposit} with returnable first"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn set_card_lost_by(
        &self,
        actor: Actor,
        uid: CardUid,
        lost: bool,
    ) -> Result<(), StoreError> {
        let operation = if lost { "card_block" } else { "card_unblock" };
        self.write(move |conn| {
            // In the same transaction as the change: a replacement cannot slip in between.
            if !lost && let Some(by) = replaced_by(conn, uid.as_str())? {
                return Err(replaced_stays_blocked(&uid, &by));
            }
            let card = load_card(conn, &uid)?
                .ok_or_else(|| StoreError::NotFound(format!("card {uid} is unknown")))?;
            write_card(
                conn,
                &uid,
                false,
                &rules::mark_lost(card, lost),
                &format_time(Utc::now()),
            )?;
            log_change(conn, &actor, operation, Some(uid.as_str()), json!({}))
        })
        .await
    }

    async fn set_card_age_flag(
        &self,
        uid: CardUid,
        age_flag: Option<AgeFlag>,
    ) -> Result<(), StoreError> {
        let details = json!({ "age_flag": age_flag.map(AgeFlag::as_str) });
        self.change_card(uid, "card_age_flag", details, move |card| CardState {
            age_flag,
            ..card
        })
        .await
    }

    async fn record_card_key(
        &self,
        terminal: Terminal,
        uid: CardUid,
        key_version: u8,
    ) -> Result<CardKeyRecord, StoreError> {
        self.write(move |conn| {
            let recorded: Option<(Option<u8>, Option<String>)> = conn
                .prepare_cached("SELECT key_version, replaced_by FROM cards WHERE card_uid = ?1")?
                .query_row([uid.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let card_created = recorded.is_none();
            let (previous, replaced_by) = recorded.unwrap_or_default();
            let changed = rules::card_key_change(previous, replaced_by.as_deref(), key_version)
                .map_err(|why| StoreError::Conflict(format!("card {uid}: {why}")))?;
            if changed {
                let card = load_card(conn, &uid)?.unwrap_or(CardState::NEW);
                write_card(conn, &uid, card_created, &card, &format_time(Utc::now()))?;
                conn.prepare_cached("UPDATE cards SET key_version = ?2 WHERE card_uid = ?1")?
                    .execute(params![uid.as_str(), key_version])?;
                log_change(
                    conn,
                    &Actor::Terminal(terminal.name),
                    "card_key",
                    Some(uid.as_str()),
                    card_key_details(key_version, previous, card_created),
                )?;
            }
            Ok(CardKeyRecord {
                key_version,
                changed,
                card_created,
            })
        })
        .await
    }

    async fn grant_vouchers(&self, uid: CardUid, units: i64) -> Result<i64, StoreError> {
        self.write(move |conn| {
            if let Some(by) = replaced_by(conn, uid.as_str())? {
                return Err(replaced_takes_no_vouchers(&uid, &by));
            }
            let (card, create) = match load_card(conn, &uid)? {
                Some(card) => (card, false),
                None => (CardState::NEW, true),
            };
            let vouchers = rules::desk_voucher_grant(card, units).map_err(StoreError::Conflict)?;
            let next = CardState { vouchers, ..card };
            write_card(conn, &uid, create, &next, &format_time(Utc::now()))?;
            log_admin(
                conn,
                "voucher_grant",
                Some(uid.as_str()),
                json!({ "units": units, "voucher_units": vouchers, "card_created": create }),
            )?;
            Ok(vouchers)
        })
        .await
    }

    async fn set_daily_vouchers(
        &self,
        uid: CardUid,
        units: i64,
        day: NaiveDate,
    ) -> Result<i64, StoreError> {
        self.write(move |conn| {
            if let Some(by) = replaced_by(conn, uid.as_str())? {
                return Err(replaced_takes_no_vouchers(&uid, &by));
            }
            let (card, create) = match load_card(conn, &uid)? {
                Some(card) => (card, false),
                None => (CardState::NEW, true),
            };
            let next = rules::daily_vouchers_set(card, units);
            write_card(conn, &uid, create, &next, &format_time(Utc::now()))?;
            let day = day.to_string();
            conn.prepare_cached(
                "UPDATE cards SET daily_voucher_units = ?2, vouchers_day = ?3 WHERE card_uid = ?1",
            )?
            .execute(params![uid.as_str(), units, (units > 0).then_some(&day)])?;
            log_admin(
                conn,
                "voucher_daily",
                Some(uid.as_str()),
                json!({ "daily_voucher_units": units, "day": day, "units_before": card.vouchers,
                        "voucher_units": next.vouchers, "card_created": create }),
            )?;
            Ok(next.vouchers)
        })
        .await
    }

    async fn start_voucher_day(&self, day: NaiveDate) -> Result<u64, StoreError> {
        let day = day.to_string();
        let mut renewed = 0;
        loop {
            let day = day.clone();
            let n = self
                .write(move |conn| {
                    type Due = (String, i64, i64);
                    let due: Vec<Due> = conn
                        .prepare_cached(
                            "SELECT card_uid, voucher_units, daily_voucher_units FROM cards
                             WHERE daily_voucher_units > 0
                               AND (vouchers_day IS NULL OR vouchers_day < ?1)
                             ORDER BY card_uid LIMIT ?2",
                        )?
                        .query_map(params![day, rules::VOUCHER_DAY_BATCH], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    let now = format_time(Utc::now());
                    for (uid, before, daily) in &due {
                        conn.prepare_cached(
                            "UPDATE cards SET voucher_units = ?2, vouchers_day = ?3,
                                 version = (SELECT MAX(version) FROM cards) + 1, updated_at = ?4
                             WHERE card_uid = ?1",
                        )?
                        .execute(params![uid, daily, day, now])?;
                        log_admin(
                            conn,
                            "voucher_day",
                            Some(uid),
                            json!({ "day": day, "units_before": before, "voucher_units": daily }),
                        )?;
                    }
                    Ok(due.len())
                })
                .await?;
            if n == 0 {
                return Ok(renewed);
            }
            renewed += n as u64;
        }
    }

    async fn purge_expired_keys(&self, limit: u32) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM idempotency_keys WHERE rowid IN
                         (SELECT rowid FROM idempotency_keys
                          WHERE transaction_id IS NULL AND expires_at < ?1 LIMIT ?2)",
                )?
                .execute(params![format_time(Utc::now()), limit])?;
            Ok(n as u64)
        })
        .await
    }

    async fn archive_candidates(
        &self,
        log: ArchivedLog,
        before: DateTime<Utc>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ArchivedRow>, StoreError> {
        let before = format_time(before);
        self.read(move |conn| {
            let sql = match log {
                ArchivedLog::Audit => {
                    "SELECT log_id, occurred_at < ?2, json_object('log_id', log_id, 'occurred_at', occurred_at,
                         'request_id', request_id, 'actor', actor, 'staff_id', staff_id,
                         'operation', operation, 'client_request_id', client_request_id,
                         'transaction_id', transaction_id, 'card_uid', card_uid,
                         'amount_cents', amount_cents, 'outcome', outcome,
                         'error_code', error_code,
                         'details', CASE WHEN json_valid(details) THEN json(details) ELSE details END)
                     FROM app_transaction_log
                     WHERE log_id > ?1
                       AND log_id < (SELECT MAX(log_id) FROM app_transaction_log)
                     ORDER BY log_id LIMIT ?3"
                }
                ArchivedLog::Scans => {
                    "SELECT scan_id, received_at < ?2, json_object('scan_id', scan_id, 'terminal_id', terminal_id,
                         'card_uid', card_uid, 'result', result, 'reader', reader,
                         'scanned_at', scanned_at, 'terminal_seq', terminal_seq,
                         'received_at', received_at)
                     FROM nfc_scan_log
                     WHERE scan_id > ?1 AND scan_id < (SELECT MAX(scan_id) FROM nfc_scan_log)
                     ORDER BY scan_id LIMIT ?3"
                }
            };
            let rows = conn
                .prepare_cached(sql)?
                .query_map(params![after_id, before, limit], |r| {
                    Ok(ArchivedRow {
                        id: r.get(0)?,
                        due: r.get(1)?,
                        json: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn remove_archived(&self, log: ArchivedLog, ids: Vec<i64>) -> Result<u64, StoreError> {
        let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |conn| {
            let n = match log {
                ArchivedLog::Scans => conn
                    .prepare_cached(
                        "DELETE FROM nfc_scan_log WHERE scan_id IN (SELECT value FROM json_each(?1))",
                    )?
                    .execute([&ids])?,
                ArchivedLog::Audit => {
                    // What the rows proved of cards' voucher units stays for the audit.
                    conn.prepare_cached(
                        "INSERT INTO archived_voucher_moves (card_uid, voucher_units)
                         SELECT card_uid, SUM(units) FROM (
                             SELECT card_uid, json_extract(details, '$.units') AS units
                             FROM app_transaction_log
                             WHERE log_id IN (SELECT value FROM json_each(?1))
                               AND actor = 'admin' AND operation = 'voucher_grant'
                             UNION ALL
                             SELECT card_uid, json_extract(details, '$.voucher_units')
                                              - json_extract(details, '$.units_before')
                             FROM app_transaction_log
                             WHERE log_id IN (SELECT value FROM json_each(?1))
                               AND actor = 'admin' AND operation IN ('voucher_daily', 'voucher_day'))
                         WHERE card_uid IS NOT NULL
                         GROUP BY card_uid
                         ON CONFLICT (card_uid)
                         DO UPDATE SET voucher_units = voucher_units + excluded.voucher_units",
                    )?
                    .execute([&ids])?;
                    conn.prepare_cached(
                        "DELETE FROM app_transaction_log WHERE log_id IN (SELECT value FROM json_each(?1))",
                    )?
                    .execute([&ids])?
                }
            };
            Ok(n as u64)
        })
        .await
    }

    async fn replace_card_by(
        &self,
        actor: Actor,
        old: CardUid,
        new: CardUid,
        merge: bool,
    ) -> Result<CardReplaced, StoreError> {
        self.write(move |conn| replace_card(conn, &actor, &old, &new, merge))
            .await
    }

    async fn replaced_cards_to_settle(
        &self,
        after: String,
        limit: u32,
    ) -> Result<Vec<(CardUid, CardUid)>, StoreError> {
        self.read(move |conn| {
            let rows: Vec<(String, String)> = conn
                .prepare_cached(
                    "SELECT card_uid, replaced_by FROM cards
                     WHERE replaced_by IS NOT NULL AND (balance_cents != 0 OR voucher_units != 0)
                       AND card_uid > ?1
                     ORDER BY card_uid LIMIT ?2",
                )?
                .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(old, new)| {
                    let parse =
                        |t: &str| CardUid::parse(t).map_err(|e| internal(format!("{t}: {e}")));
                    Ok((parse(&old)?, parse(&new)?))
                })
                .collect()
        })
        .await
    }

    async fn ping_writer(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM terminals", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}
