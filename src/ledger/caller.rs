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

/// What a headquarters operator may do. Each role may do what the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OperatorRole {
    /// Sees every page.
    Viewer,
    /// Also blocks, unblocks and replaces cards (the info desk).
    Desk,
    /// Also manages operators.
    Admin,
}

impl OperatorRole {
    /// Every role, weakest first.
    pub const ALL: [OperatorRole; 3] = [
        OperatorRole::Viewer,
        OperatorRole::Desk,
        OperatorRole::Admin,
    ];

    /// Its name on the command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Desk => "desk",
            OperatorRole::Admin => "admin",
        }
    }

    /// The role with this name.
    pub fn parse(s: &str) -> Option<OperatorRole> {
        OperatorRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A logged-in headquarters operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Id.
    pub operator_id: Uuid,
    /// Unique name, shown in the audit log.
    pub name: String,
    /// What they may do.
    pub role: OperatorRole,
}

/// Who made an administrative change, as the audit log's `actor` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// `cashless ledger ...` on the server: `admin`.
    Cli,
    /// A headquarters operator, from a page: `operator:NAME`.
    Operator(String),
    /// A terminal, for what it records outside operations (a card it issued):
    /// `terminal:NAME`.
    Terminal(String),
}

impl Actor {
    /// The audit log's `actor`.
    pub fn audit_name(&self) -> String {
        match self {
            Actor::Cli => "admin".to_owned(),
            Actor::Operator(name) => format!("operator:{name}"),
            Actor::Terminal(name) => format!("terminal:{name}"),
        }
    }
}
