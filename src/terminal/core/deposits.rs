//! Deposits on returnable items, as a bar adds them to an order: the one rule the daemon
//! applies when it arms an order and the staff screen applies to show its total.

use crate::domain::{Cents, ProductId};
use crate::protocol::api::{OrderItem, QUANTITY_MAX};

/// The deposit lines an order of `lines` adds: for each returnable item its products come in
/// (`deposit_of`: a product's returnable item and that item's deposit, `None` for a product
/// without one), one unit per unit sold, one line per item in order of first mention, after
/// the order's own lines; an item of more than `QUANTITY_MAX` units gets several lines (of
/// `QUANTITY_MAX`, then the rest), since a line holds at most that many. A line of the
/// returnable item itself (a cup sold alone) adds nothing: it is already a deposit.
pub fn order_deposits(
    lines: &[OrderItem],
    deposit_of: impl Fn(&ProductId) -> Option<(ProductId, Cents)>,
) -> Vec<OrderItem> {
    let mut deposits: Vec<OrderItem> = Vec::new();
    for line in lines {
        let Some((item, deposit)) = deposit_of(&line.product_id) else {
            continue;
        };
        match deposits.iter_mut().find(|d| d.product_id == item) {
            Some(d) => d.quantity = d.quantity.saturating_add(line.quantity),
            None => deposits.push(OrderItem {
                product_id: item,
                quantity: line.quantity,
                unit_price_cents: deposit,
            }),
        }
    }
    deposits
        .into_iter()
        .flat_map(|d| {
            let full = d.quantity / QUANTITY_MAX;
            let rest = d.quantity % QUANTITY_MAX;
            std::iter::repeat_n(QUANTITY_MAX, usize::try_from(full).unwrap_or(0))
                .chain((rest > 0).then_some(rest))
                .map(move |quantity| OrderItem {
                    quantity,
                    ..d.clone()
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, quantity: i64, price: i64) -> OrderItem {
        OrderItem {
            product_id: ProductId::parse(id).unwrap(),
            quantity,
            unit_price_cents: Cents::new(price),
        }
    }

    #[test]
    fn each_unit_sold_in_a_returnable_item_adds_one_deposit_per_item_kind() {
        let deposit_of = |id: &ProductId| match id.as_str() {
            "beer" | "cola" => Some((ProductId::parse("cup").unwrap(), Cents::new(200))),
            "wine" => Some((ProductId::parse("glass").unwrap(), Cents::new(500))),
            _ => None,
        };
        let order = [
            line("beer", 2, 450),
            line("fries", 1, 400),
            line("wine", 1, 550),
            line("cola", 3, 350),
        ];
        assert_eq!(
            order_deposits(&order, deposit_of),
            vec![line("cup", 5, 200), line("glass", 1, 500)]
        );
        assert_eq!(order_deposits(&[line("fries", 2, 400)], deposit_of), vec![]);
        // A cup sold alone is a deposit already.
        assert_eq!(order_deposits(&[line("cup", 1, 200)], deposit_of), vec![]);
        // 60 beers and 60 colas: 120 cups, one full line of 99 and the rest.
        assert_eq!(
            order_deposits(&[line("beer", 60, 450), line("cola", 60, 350)], deposit_of),
            vec![line("cup", 99, 200), line("cup", 21, 200)]
        );
        assert_eq!(
            order_deposits(&[line("beer", 99, 450), line("cola", 99, 350)], deposit_of),
            vec![line("cup", 99, 200), line("cup", 99, 200)]
        );
    }
}
