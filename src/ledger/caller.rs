//! The ledger's own view of who is calling: the authenticated terminal and the staff member
//! an operation names, as the rules see them.

use crate::protocol::api::{StaffRole, TerminalKind};
use uuid::Uuid;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// Id.
    pub terminal_id: Uuid,
    /// Unique name.
    pub name: String,
    /// Bar or checkpoint.
    pub kind: TerminalKind,
    /// Where it stands; selects the catalog.
    pub point_of_sale: String,
}

/// A staff member as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffMember {
    /// Role.
    pub role: StaffRole,
    /// Deactivated staff cannot act online.
    pub active: bool,
}
