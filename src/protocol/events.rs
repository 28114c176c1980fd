//! What the daemon tells its front end: the events of the JSON-lines interface
//! (docs/interfaces.md), as types. `--ui jsonl` writes each as one JSON line; other front ends
//! (the TUI) read them as they are.
//!
//! Fields the spec shows as `null` when unknown are serialized as `null`, never left out, so
//! that scripts can rely on every key of an event being there.

use crate::domain::{CardUid, Cents, ClientRequestId};
use crate::protocol::codes::ErrorCode;
use serde::Serialize;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon is ready for commands.
    Ready {
        /// The terminal's name.
        terminal: String,
        /// `bar` or `checkpoint`.
        kind: &'static str,
        /// Whether the first sync reached the ledger.
        online: bool,
    },
    /// The answer to `login`.
    Login {
        /// Logged in.
        ok: bool,
        /// Who, when logged in.
        #[serde(skip_serializing_if = "Option::is_none")]
        staff_id: Option<String>,
        /// Their name, when logged in.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Their role, when logged in.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'static str>,
        /// Why not, when refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The answer to `logout`.
    LoggedOut,
    /// An operation is armed: the next card pays for it, receives it, or shows its balance.
    Armed {
        /// `order`, `topup`, `return`, `voucher_grant` or `balance`.
        operation: &'static str,
        /// An order's total.
        #[serde(skip_serializing_if = "Option::is_none")]
        total_cents: Option<Cents>,
        /// A top-up's or a deposit return's amount.
        #[serde(skip_serializing_if = "Option::is_none")]
        amount_cents: Option<Cents>,
        /// A voucher grant's units.
        #[serde(skip_serializing_if = "Option::is_none")]
        units: Option<i64>,
    },
    /// `cancel` disarmed the terminal.
    Cancelled,
    /// A card was presented.
    Card {
        /// Its UID.
        uid: CardUid,
        /// The reader's name (`simulated` for `tap`).
        reader: String,
        /// The card type from the ATR, when read through PC/SC.
        #[serde(skip_serializing_if = "Option::is_none")]
        card_type: Option<&'static str>,
        /// `[cards] mode = "aes"`: the master key version the card proved it holds (absent:
        /// identified by its UID alone).
        #[serde(skip_serializing_if = "Option::is_none")]
        key_version: Option<u8>,
    },
    /// A presentation that could not be read.
    CardError {
        /// The reader.
        reader: String,
        /// `status_word`, `truncated`, `uid_length`, `random_uid`, `reader_error`; in AES
        /// mode, a card refused: `not_genuine` (a clone, or a forged answer), `not_aes_card`,
        /// `not_issued` (a blank card), `unknown_key_version`.
        code: &'static str,
        /// For staff.
        message: String,
    },
    /// The outcome of a payment or a void.
    Decision(Decision),
    /// A card's balance.
    Balance {
        /// The card.
        card_uid: CardUid,
        /// Its balance; `null` for a card nobody has seen.
        balance_cents: Option<Cents>,
        /// `active` or `blocked`, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// `ledger` or `replica`.
        source: &'static str,
        /// When the balance was true (RFC 3339), when known.
        as_of: Option<String>,
    },
    /// The answer to `status`.
    Status(Status),
    /// The answer to `shift`: the current shift's top-ups.
    Shift {
        /// Since when (RFC 3339); `null` for a first shift without a top-up yet.
        opened_at: Option<String>,
        /// Cash taken, net of voids.
        cash_cents: Cents,
        /// Card payments taken, net of voids.
        card_cents: Cents,
        /// Top-ups approved and not voided.
        count: u64,
        /// Top-ups voided in the shift (not in `count`).
        voids: u64,
    },
    /// The answer to `close_shift`: the close-out is in the journal, and goes to the ledger.
    ShiftClosed {
        /// The close-out's id (its idempotency key at the ledger).
        client_request_id: ClientRequestId,
        /// Who closed it.
        staff_id: String,
        /// Since when (RFC 3339).
        opened_at: String,
        /// Until when (RFC 3339).
        closed_at: String,
        /// Cash that should be in the drawer.
        cash_cents: Cents,
        /// Card payments taken.
        card_cents: Cents,
        /// Top-ups approved and not voided.
        count: i64,
        /// Top-ups voided in the shift (not in `count`).
        voids: u64,
        /// Cash counted.
        counted_cash_cents: Cents,
        /// Counted minus expected: negative when the drawer is short.
        difference_cents: Cents,
    },
    /// The sync worker settled entries.
    Synced {
        /// How many.
        count: usize,
        /// Still waiting.
        pending: Option<u64>,
    },
    /// The reader's state changed.
    Reader {
        /// `connected`, `waiting` or `disconnected`.
        state: &'static str,
        /// The reader's name (`null` while waiting).
        name: Option<String>,
        /// Why, for people.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A command was refused; nothing changed.
    Error {
        /// What kind of refusal (`INVALID_COMMAND`, `NOT_LOGGED_IN`, ...).
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

/// The outcome of a payment (order, top-up) or a void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The journaled operation it is about; `null` when nothing was journaled.
    pub client_request_id: Option<ClientRequestId>,
    /// `order`, `topup`, `return`, `voucher_grant` or `void`.
    pub operation: &'static str,
    /// The card.
    pub card_uid: CardUid,
    /// `approved_online`, `approved_offline` or `declined`.
    pub status: &'static str,
    /// Why declined.
    pub reason: Option<String>,
    /// The money moved (a void: the signed refund).
    pub total_cents: Cents,
    /// The card's balance after it, when known.
    pub balance_cents: Option<Cents>,
    /// The operation a void refunds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_client_request_id: Option<ClientRequestId>,
    /// An order the ledger approved: the voucher units it took (`total_cents` less what
    /// they paid is the money charged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouchers_used: Option<i64>,
    /// An approved voucher grant: the units given (`total_cents` is 0: vouchers are not
    /// money).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouchers_granted: Option<i64>,
}

impl Decision {
    /// Approved, online or offline.
    pub fn approved(&self) -> bool {
        self.status != "declined"
    }
}

/// The terminal's state, for the status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The last sync round reached the ledger.
    pub online: bool,
    /// Operations waiting for the ledger.
    pub pending: u64,
    /// Online attempts without an answer yet.
    pub in_doubt: u64,
    /// Operations the ledger refused for good (an operator must look).
    pub rejected: u64,
    /// Sales and top-ups declined without the ledger.
    pub declined_offline: u64,
    /// Shift close-outs the ledger has not recorded yet (a terminal extension, docs/interfaces.md).
    pub closeouts_pending: u64,
    /// The journal can be written.
    pub journal_writable: bool,
    /// The last contact with the ledger's write side.
    pub last_sync_at: Option<String>,
    /// The last card-feed page from the ledger: its read side answered then (recorded at
    /// least once a minute while online, even when nothing changed).
    pub last_feed_at: Option<String>,
    /// The reader's name, or `simulated`, `waiting`, `disconnected`.
    pub reader: String,
    /// Who is logged in.
    pub staff: Option<String>,
}

impl Event {
    /// An `error` event.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Event {
        Event::Error {
            code,
            message: message.into(),
        }
    }

    /// The event's JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Every field is a string, a number, a bool or null: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            let code = ErrorCode::InternalError.as_str();
            format!(r#"{{"event":"error","code":"{code}","message":"{e}"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn json_of(e: &Event) -> Value {
        serde_json::from_str(&e.to_json_line()).unwrap()
    }

    #[test]
    fn events_keep_the_spec_wire_format() {
        let card = CardUid::parse("04A1B2C3").unwrap();
        assert_eq!(
            json_of(&Event::Decision(Decision {
                client_request_id: None,
                operation: "order",
                card_uid: card.clone(),
                status: "declined",
                reason: Some("INSUFFICIENT_FUNDS".into()),
                total_cents: Cents::new(900),
                balance_cents: None,
                target_client_request_id: None,
                vouchers_used: None,
                vouchers_granted: None,
            })),
            json!({"event": "decision", "client_request_id": null, "operation": "order",
                   "card_uid": "04A1B2C3", "status": "declined", "reason": "INSUFFICIENT_FUNDS",
                   "total_cents": 900, "balance_cents": null})
        );
        assert_eq!(
            json_of(&Event::Armed {
                operation: "order",
                total_cents: Some(Cents::new(900)),
                amount_cents: None,
                units: None,
            }),
            json!({"event": "armed", "operation": "order", "total_cents": 900})
        );
        assert_eq!(
            json_of(&Event::Login {
                ok: false,
                staff_id: None,
                name: None,
                role: None,
                message: Some("wrong PIN".into())
            }),
            json!({"event": "login", "ok": false, "message": "wrong PIN"})
        );
        assert_eq!(json_of(&Event::Cancelled), json!({"event": "cancelled"}));
        assert_eq!(
            json_of(&Event::Balance {
                card_uid: card,
                balance_cents: None,
                status: None,
                source: "replica",
                as_of: None
            }),
            json!({"event": "balance", "card_uid": "04A1B2C3", "balance_cents": null,
                   "source": "replica", "as_of": null})
        );
        assert_eq!(
            json_of(&Event::Reader {
                state: "waiting",
                name: None,
                message: Some("plug in a reader".into())
            }),
            json!({"event": "reader", "state": "waiting", "name": null, "message": "plug in a reader"})
        );
    }
}
