//! A journal entry's vocabulary: what it asks the ledger to do ([`OperationKind`]), where it
//! stands with the ledger ([`EntryState`], and which moves between states are allowed), and
//! what the terminal showed for it ([`Decision`]), each with its one spelling.
//!
//! Pure: the tap flow decides in these terms, and the journal stores them (its SQL `CHECK`
//! constraints spell the same values). Nothing here knows how an entry is stored.

use serde::Serialize;
use std::fmt;

/// Enums spelled as text: the same spelling in the journal's database and on the JSON-lines
/// interface.
macro_rules! db_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The database spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the database spelling.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

db_enum!(
    /// What a journal entry asks the ledger to do.
    OperationKind {
        /// A bar order (`POST /v1/orders`).
        Order => "order",
        /// A checkpoint top-up (`POST /v1/recharges`).
        Recharge => "recharge",
        /// A void or refund of an earlier operation (`POST /v1/voids`).
        Void => "void",
        /// Returnable items handed back, their deposits credited (`POST /v1/returns`).
        Return => "return",
        /// Voucher units given at a checkpoint (`POST /v1/voucher-grants`); no money.
        VoucherGrant => "voucher_grant",
    }
);

db_enum!(
    /// Where a journal entry stands with the ledger.
    EntryState {
        /// An online attempt being sent right now; the sync worker leaves it alone. Found at
        /// startup, it was cut off by a crash: it is in doubt.
        Sending => "sending",
        /// To send (online) or to replay (offline); the sync worker takes these.
        Pending => "pending",
        /// Sent online, no answer: the ledger may or may not have applied it.
        InDoubt => "in_doubt",
        /// The ledger acknowledged it (an approval or a stored decline). Final.
        Synced => "synced",
        /// Refused for good by the ledger; kept and shown, never dropped.
        Rejected => "rejected",
    }
);

db_enum!(
    /// What the terminal showed (or will show) for an entry.
    Decision {
        /// The ledger approved it.
        ApprovedOnline => "approved_online",
        /// The terminal approved it on its own (offline policy).
        ApprovedOffline => "approved_offline",
        /// Declined, online or offline; `decline_reason` says why.
        Declined => "declined",
    }
);

impl Decision {
    /// True for both approvals.
    pub fn is_approved(self) -> bool {
        matches!(self, Decision::ApprovedOnline | Decision::ApprovedOffline)
    }
}

impl EntryState {
    /// Whether an entry in this state may be set to `next` (the journal's `set_state` refuses
    /// any other move):
    ///
    /// | from       | to                                       |
    /// |------------|------------------------------------------|
    /// | `sending`  | any                                      |
    /// | `pending`  | `pending`, `in_doubt`, `synced`, `rejected` |
    /// | `in_doubt` | `pending`, `in_doubt`, `synced`, `rejected` |
    /// | `rejected` | `pending` (re-queued), `rejected`        |
    /// | `synced`   | nothing: the ledger's acknowledgement is final |
    ///
    /// Setting the same state again (except `synced`) updates the details only.
    pub fn can_become(self, next: EntryState) -> bool {
        use EntryState::*;
        match self {
            Sending | Pending | InDoubt => true,
            Rejected => matches!(next, Pending | Rejected),
            Synced => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn spellings_round_trip() {
        for k in OperationKind::ALL {
            assert_eq!(OperationKind::parse(k.as_str()), Some(*k));
        }
        for s in EntryState::ALL {
            assert_eq!(EntryState::parse(s.as_str()), Some(*s));
        }
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(*d));
        }
        for bad in ["", "Pending", "PENDING", "synced ", "approved", "refund"] {
            assert_eq!(EntryState::parse(bad), None, "{bad:?}");
            assert_eq!(Decision::parse(bad), None, "{bad:?}");
            assert_eq!(OperationKind::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            serde_json::to_value(EntryState::InDoubt).ok(),
            Some(Value::from("in_doubt"))
        );
    }

    #[test]
    fn state_moves() {
        use EntryState::*;
        // (from, to, allowed)
        let cases = [
            (Sending, Sending, true),
            (Sending, Pending, true),
            (Sending, InDoubt, true),
            (Sending, Synced, true),
            (Sending, Rejected, true),
            (Pending, Sending, true),
            (InDoubt, Sending, true),
            (Rejected, Sending, false),
            (Synced, Sending, false),
            (Pending, Pending, true),
            (Pending, InDoubt, true),
            (Pending, Synced, true),
            (Pending, Rejected, true),
            (InDoubt, Pending, true),
            (InDoubt, InDoubt, true),
            (InDoubt, Synced, true),
            (InDoubt, Rejected, true),
            (Rejected, Pending, true),
            (Rejected, Rejected, true),
            (Rejected, InDoubt, false),
            (Rejected, Synced, false),
            (Synced, Pending, false),
            (Synced, InDoubt, false),
            (Synced, Synced, false),
            (Synced, Rejected, false),
        ];
        assert_eq!(cases.len(), EntryState::ALL.len() * EntryState::ALL.len());
        for (from, to, allowed) in cases {
            assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
        }
    }
}
