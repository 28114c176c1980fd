//! How vouchers pay an order: the one rule the ledger (online, and for an offline order's
//! stated units) and the terminal (offline, from its replica) share, so that both split an
//! order the same way.

use super::Cents;

/// One line of an order as vouchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherLine {
    /// Units of the product.
    pub quantity: i64,
    /// Their unit price.
    pub unit_price: Cents,
    /// The voucher units one unit costs; `None` (or 0): money only.
    pub voucher_price: Option<i64>,
}

/// What vouchers paid of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherSplit {
    /// Per line, how many of its units vouchers paid.
    pub quantities: Vec<i64>,
    /// The voucher units used.
    pub units: i64,
    /// The money they replace (`None` on an overflow no validated order reaches).
    pub paid: Option<Cents>,
}

/// Vouchers first, lines in order: each unit of a product with a voucher price is paid
/// with vouchers while the `units` left (none below zero) cover its price.
pub fn split_vouchers(lines: impl IntoIterator<Item = VoucherLine>, units: i64) -> VoucherSplit {
    let mut left = units.max(0);
    let mut split = VoucherSplit {
        quantities: Vec::new(),
        units: 0,
        paid: Some(Cents::ZERO),
    };
    for line in lines {
        let covered = match line.voucher_price.filter(|p| *p > 0) {
            Some(price) => {
                let covered = line.quantity.min(left / price);
                left -= covered * price;
                split.units += covered * price;
                covered
            }
            None => 0,
        };
        split.paid = split.paid.and_then(|paid| {
            line.unit_price
                .checked_mul(covered)
                .and_then(|v| paid.checked_add(v))
                .ok()
        });
        split.quantities.push(covered);
    }
    split
}
