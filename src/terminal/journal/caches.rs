//! What the ledger publishes and a terminal keeps to work after a restart without network:
//! the catalog of its point of sale (with its `ETag`), the staff list for offline login, and
//! the ledger's top-up limits. Each is replaced whole, in one transaction, and bounded.

use super::{
    Journal, JournalError, META_CATALOG_CURRENCY, META_CATALOG_ETAG, META_CATALOG_FETCHED_AT,
    META_CATALOG_POINT_OF_SALE, META_STAFF_FETCHED_AT, at_most, corrupt, delete_meta, get_meta,
    invalid, parse_time, set_meta, sql_limit,
};
use crate::domain::{Cents, MinAge, ProductId, StaffId};
use crate::protocol::api::{StaffRole, format_time};
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// The most products a cached catalog holds.
pub const CATALOG_PRODUCTS_MAX: usize = 10_000;
/// The most staff members the staff cache holds.
pub const STAFF_MAX: usize = 10_000;

/// The ledger's top-up limits, as `GET /v1/terminals/me` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopupLimits {
    /// The largest single top-up.
    pub recharge_max_cents: Cents,
    /// The largest balance a top-up may lead to.
    pub balance_max_cents: Cents,
}

/// One product of the cached catalog; deserializes from `GET /v1/catalog`'s `products`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogProduct {
    /// The catalog's product id.
    pub product_id: ProductId,
    /// Name on the screen.
    pub name: String,
    /// Unit price.
    pub price_cents: Cents,
    /// Grouping on the screen.
    #[serde(default)]
    pub category: Option<String>,
    /// The VAT rate it is sold at (absent from a catalog cached from a ledger before VAT).
    #[serde(default)]
    pub tax_rate: Option<String>,
    /// That rate in basis points (1900: 19 %).
    #[serde(default)]
    pub tax_rate_basis_points: Option<u32>,
    /// The age it is sold from, if any: a card flagged younger is refused.
    #[serde(default)]
    pub min_age: Option<MinAge>,
    /// Set for an open price: staff type the unit price, 1 cent to this (`price_cents` is
    /// then 0).
    #[serde(default)]
    pub open_price_max_cents: Option<Cents>,
    /// The voucher units one unit costs when a card's vouchers pay it; `None`: money only.
    #[serde(default)]
    pub voucher_price: Option<i64>,
    /// A returnable item (a cup): its price is a deposit, credited back when it returns.
    #[serde(default)]
    pub returnable: bool,
    /// The returnable item it comes in: an order adds one of it per unit sold.
    #[serde(default)]
    pub deposit_product_id: Option<ProductId>,
}

/// The catalog of this terminal's point of sale; deserializes from `GET /v1/catalog`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The point of sale it belongs to.
    pub point_of_sale: String,
    /// The festival's currency, for display.
    pub currency: String,
    /// The products, in the ledger's (menu) order.
    pub products: Vec<CatalogProduct>,
}

/// A staff member for offline login; deserializes from `GET /v1/staff`'s `staff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedStaff {
    /// Id.
    pub staff_id: StaffId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: StaffRole,
    /// Inactive staff cannot log in.
    pub active: bool,
    /// argon2 PHC string of the PIN.
    pub pin_hash: String,
}

impl Journal {
    /// Replaces the cached catalog (and its `ETag`, `None` to forget it) in one transaction.
    /// Refused above [`CATALOG_PRODUCTS_MAX`] products or with a product id twice; then the
    /// previous catalog stays.
    pub fn replace_catalog(
        &mut self,
        catalog: &Catalog,
        etag: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        at_most(catalog.products.len(), CATALOG_PRODUCTS_MAX, "products")?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM catalog_cache")?
            .execute([])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO catalog_cache (product_id, position, name, price_cents, category,
                                            tax_rate, tax_rate_basis_points, min_age,
                                            open_price_max_cents, voucher_price, returnable,
                                            deposit_product_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (position, p) in catalog.products.iter().enumerate() {
                insert.execute(params![
                    p.product_id.as_str(),
                    i64::try_from(position).map_err(invalid)?,
                    p.name,
                    p.price_cents.get(),
                    p.category,
                    p.tax_rate,
                    p.tax_rate_basis_points,
                    p.min_age.map(MinAge::years),
                    p.open_price_max_cents.map(Cents::get),
                    p.voucher_price,
                    p.returnable,
                    p.deposit_product_id.as_ref().map(ProductId::as_str),
                ])?;
            }
        }
        set_meta(&tx, META_CATALOG_POINT_OF_SALE, &catalog.point_of_sale)?;
        set_meta(&tx, META_CATALOG_CURRENCY, &catalog.currency)?;
        match etag {
            Some(etag) => set_meta(&tx, META_CATALOG_ETAG, etag)?,
            None => delete_meta(&tx, META_CATALOG_ETAG)?,
        }
        set_meta(&tx, META_CATALOG_FETCHED_AT, &format_time(now))?;
        tx.commit()?;
        Ok(())
    }

    /// The cached catalog and when it was fetched; `None` before the first
    /// [`Journal::replace_catalog`].
    pub fn catalog(&self) -> Result<Option<(Catalog, DateTime<Utc>)>, JournalError> {
        let Some(fetched_at) = get_meta(&self.conn, META_CATALOG_FETCHED_AT)? else {
            return Ok(None);
        };
        let fetched_at = parse_time(&fetched_at)
            .ok_or_else(|| corrupt(format!("catalog fetched_at {fetched_at:?}")))?;
        let point_of_sale = get_meta(&self.conn, META_CATALOG_POINT_OF_SALE)?.unwrap_or_default();
        let currency = get_meta(&self.conn, META_CATALOG_CURRENCY)?.unwrap_or_default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT product_id, name, price_cents, category, tax_rate, tax_rate_basis_points,
                    min_age, open_price_max_cents, voucher_price, returnable, deposit_product_id
               FROM catalog_cache ORDER BY position LIMIT ?1",
        )?;
        let mut rows = stmt.query([sql_limit(CATALOG_PRODUCTS_MAX)])?;
        let mut products = Vec::new();
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            products.push(CatalogProduct {
                product_id: ProductId::parse(&id)
                    .map_err(|e| corrupt(format!("catalog product id {id:?}: {e}")))?,
                name: row.get(1)?,
                price_cents: Cents::new(row.get(2)?),
                category: row.get(3)?,
                tax_rate: row.get(4)?,
                tax_rate_basis_points: row.get(5)?,
                min_age: row
                    .get::<_, Option<i64>>(6)?
                    .map(|a| MinAge::new(a).map_err(|e| corrupt(format!("product {id}: {e}"))))
                    .transpose()?,
                open_price_max_cents: row.get::<_, Option<i64>>(7)?.map(Cents::new),
                voucher_price: row.get(8)?,
                returnable: row.get(9)?,
                deposit_product_id: row
                    .get::<_, Option<String>>(10)?
                    .map(|d| {
                        ProductId::parse(&d)
                            .map_err(|e| corrupt(format!("product {id}: deposit {d:?}: {e}")))
                    })
                    .transpose()?,
            });
        }
        let catalog = Catalog {
            point_of_sale,
            currency,
            products,
        };
        Ok(Some((catalog, fetched_at)))
    }

    /// The `ETag` of the cached catalog, for `If-None-Match`.
    pub fn catalog_etag(&self) -> Result<Option<String>, JournalError> {
        get_meta(&self.conn, META_CATALOG_ETAG)
    }

    /// Replaces the cached staff list in one transaction. Refused above [`STAFF_MAX`]
    /// members or with a staff id twice; then the previous list stays.
    pub fn replace_staff(
        &mut self,
        staff: &[CachedStaff],
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        at_most(staff.len(), STAFF_MAX, "staff members")?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM staff_cache")?.execute([])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO staff_cache (staff_id, name, role, active, pin_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in staff {
                insert.execute(params![
                    s.staff_id.as_str(),
                    s.name,
                    s.role.as_str(),
                    s.active,
                    s.pin_hash,
                ])?;
            }
        }
        set_meta(&tx, META_STAFF_FETCHED_AT, &format_time(now))?;
        tx.commit()?;
        Ok(())
    }

    /// The cached staff list, by staff id.
    pub fn staff(&self) -> Result<Vec<CachedStaff>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT staff_id, name, role, active, pin_hash FROM staff_cache
             ORDER BY staff_id LIMIT ?1",
        )?;
        let mut rows = stmt.query([sql_limit(STAFF_MAX)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(staff_from_row(row)?);
        }
        Ok(out)
    }

    /// One cached staff member, for login.
    pub fn staff_member(&self, id: &StaffId) -> Result<Option<CachedStaff>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT staff_id, name, role, active, pin_hash FROM staff_cache WHERE staff_id = ?1",
        )?;
        let mut rows = stmt.query([id.as_str()])?;
        match rows.next()? {
            Some(row) => staff_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// Stores the ledger's top-up limits, replacing the previous ones.
    pub fn set_topup_limits(
        &mut self,
        limits: TopupLimits,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        if limits.recharge_max_cents < Cents::new(1) || limits.balance_max_cents < Cents::new(1) {
            return Err(invalid(format!(
                "top-up limits must be positive: {limits:?}"
            )));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO ledger_limits (id, recharge_max_cents, balance_max_cents, fetched_at)
                 VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET recharge_max_cents = excluded.recharge_max_cents,
                     balance_max_cents = excluded.balance_max_cents, fetched_at = excluded.fetched_at",
            )?
            .execute(params![
                limits.recharge_max_cents.get(),
                limits.balance_max_cents.get(),
                format_time(now.trunc_subsecs(3)),
            ])?;
        Ok(())
    }

    /// The ledger's top-up limits as last received, if ever.
    pub fn topup_limits(&self) -> Result<Option<TopupLimits>, JournalError> {
        self.conn
            .prepare_cached("SELECT recharge_max_cents, balance_max_cents FROM ledger_limits")?
            .query_row([], |r| {
                Ok(TopupLimits {
                    recharge_max_cents: Cents::new(r.get(0)?),
                    balance_max_cents: Cents::new(r.get(1)?),
                })
            })
            .optional()
            .map_err(JournalError::from)
    }
}

fn staff_from_row(row: &Row<'_>) -> Result<CachedStaff, JournalError> {
    let id: String = row.get(0)?;
    let role: String = row.get(2)?;
    Ok(CachedStaff {
        staff_id: StaffId::parse(&id).map_err(|e| corrupt(format!("staff id {id:?}: {e}")))?,
        name: row.get(1)?,
        role: StaffRole::parse(&role)
            .ok_or_else(|| corrupt(format!("staff {id}: role {role:?}")))?,
        active: row.get(3)?,
        pin_hash: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::journal::Journal;

    #[test]
    fn topup_limits_are_replaced_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.topup_limits().unwrap(), None);
        let limits = |r, b| TopupLimits {
            recharge_max_cents: Cents::new(r),
            balance_max_cents: Cents::new(b),
        };
        j.set_topup_limits(limits(5000, 10_000), Utc::now())
            .unwrap();
        j.set_topup_limits(limits(7000, 20_000), Utc::now())
            .unwrap();
        assert!(j.set_topup_limits(limits(0, 20_000), Utc::now()).is_err());
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.topup_limits().unwrap(), Some(limits(7000, 20_000)));
    }
}
