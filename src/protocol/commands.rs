//! The commands the terminal daemon takes from its front end (the JSON-lines interface; the
//! TUI sends the same commands for the keys staff press).

use crate::domain::AgeFlag;
use crate::protocol::api::PaymentMethod;
use serde::Deserialize;

/// Longest command line read; a longer one is refused and skipped.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;

/// A command from the front end (docs/interfaces.md): a JSON line on stdin, or a key the TUI
/// translated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
// Commands without arguments are empty struct variants, not unit variants: serde ignores
// `deny_unknown_fields` for a unit variant of an internally tagged enum, and every command
// must refuse a field it does not take.
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Staff login.
    Login {
        /// Staff id.
        staff_id: String,
        /// PIN.
        pin: String,
    },
    /// Ends the staff member's session: disarms, and nothing can be sold until the next
    /// login.
    Logout {},
    /// Arms an order.
    Order {
        /// Its lines.
        items: Vec<CommandItem>,
    },
    /// Arms a top-up.
    Topup {
        /// The amount.
        amount_cents: i64,
        /// Cash or card.
        payment_method: PaymentMethod,
        /// What staff saw on the holder's ID (`under_16`, `under_18`), set on the card with
        /// the top-up; absent: the card's flag stays as it is.
        #[serde(default)]
        age_flag: Option<AgeFlag>,
    },
    /// Arms a deposit return: returnable items (cups) handed back, their deposits credited
    /// to the card presented next (bars and return stations).
    Return {
        /// The items.
        items: Vec<ReturnCommandItem>,
    },
    /// Arms a voucher grant: `units` voucher units (staff and artist drinks) for the card
    /// presented next (checkpoints; a supervisor only).
    GrantVouchers {
        /// 1 to 1,000.
        units: i64,
    },
    /// A card presented by hand (`--reader simulated`).
    Tap {
        /// Its UID.
        uid: String,
    },
    /// Arms a balance check.
    Balance {},
    /// Refunds the last approved operation.
    VoidLast {},
    /// Disarms.
    Cancel {},
    /// Asks for a `status` event.
    Status {},
    /// Asks for a `shift` event: the current shift's totals (checkpoints).
    Shift {},
    /// Closes the shift with the cash counted in the drawer (checkpoints).
    CloseShift {
        /// The cash counted.
        counted_cash_cents: i64,
    },
    /// Stops the daemon.
    Quit {},
}

/// One line of an `order` command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandItem {
    /// The catalog's product id.
    pub product_id: String,
    /// 1 to 99.
    pub quantity: i64,
    /// The unit price staff typed, for a product with an open price (1 cent to its
    /// maximum); refused for a product with a fixed price.
    #[serde(default)]
    pub unit_price_cents: Option<i64>,
}

/// One line of a `return` command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnCommandItem {
    /// A returnable item of the catalog (a product with `returnable`).
    pub product_id: String,
    /// 1 to 99.
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_refuses_a_field_it_does_not_take() {
        for line in [
            r#"{"cmd":"logout","x":1}"#,
            r#"{"cmd":"balance","x":1}"#,
            r#"{"cmd":"void_last","x":1}"#,
            r#"{"cmd":"cancel","x":1}"#,
            r#"{"cmd":"status","x":1}"#,
            r#"{"cmd":"shift","x":1}"#,
            r#"{"cmd":"quit","x":1}"#,
            r#"{"cmd":"tap","uid":"04A1B2C3","x":1}"#,
            r#"{"cmd":"order","items":[{"product_id":"beer","quantity":1,"x":1}]}"#,
            r#"{"cmd":"return","items":[{"product_id":"cup","quantity":1,"x":1}]}"#,
            r#"{"cmd":"grant_vouchers","units":1,"x":1}"#,
        ] {
            let err = serde_json::from_str::<Command>(line).expect_err(line);
            assert!(err.to_string().contains("unknown field"), "{line}: {err}");
        }
        assert_eq!(
            serde_json::from_str::<Command>(r#"{"cmd":"shift"}"#).ok(),
            Some(Command::Shift {})
        );
    }
}
