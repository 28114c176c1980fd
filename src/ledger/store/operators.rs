//! Headquarters' operators and their sessions ([`OperatorStore`]): who may log in to the
//! pages, with what role, and the lock after too many wrong passwords.

use super::StoreError;
use crate::ledger::caller::{Actor, Operator, OperatorRole};
use chrono::{DateTime, Utc};
use std::future::Future;
use uuid::Uuid;

/// A new headquarters operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperator {
    /// Unique name.
    pub name: String,
    /// What they may do.
    pub role: OperatorRole,
    /// The password's argon2id PHC string.
    pub password_hash: String,
}

/// An operator as the login page needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorLogin {
    /// Who.
    pub operator: Operator,
    /// The password's argon2id PHC string.
    pub password_hash: String,
    /// `false`: disabled, never logs in.
    pub active: bool,
    /// Wrong passwords since the last good one.
    pub failed_logins: i64,
    /// Refused until then, whatever the password.
    pub locked_until: Option<DateTime<Utc>>,
}

/// An operator as the operators page lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorListing {
    /// Unique name.
    pub name: String,
    /// What they may do.
    pub role: OperatorRole,
    /// `false`: disabled.
    pub active: bool,
    /// Wrong passwords since the last good one.
    pub failed_logins: i64,
    /// Locked until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A session being opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The SHA-256 (hex) of the cookie's value; the value itself is never stored.
    pub session_sha256: String,
    /// The token every form of the session carries.
    pub csrf_token: String,
    /// When it opens.
    pub created_at: DateTime<Utc>,
    /// When it ends, whatever happens.
    pub expires_at: DateTime<Utc>,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSession {
    /// Whose.
    pub operator: Operator,
    /// The token every form of the session carries.
    pub csrf_token: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// A login attempt counted: what it will have done if its password is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailure {
    /// Attempts in a row now, this one included.
    pub failed_logins: i64,
    /// Locked until then, if this attempt locked it.
    pub locked_until: Option<DateTime<Utc>>,
}

/// A change to an operator, from `ledger operator` or the operators page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorChange {
    /// Disabled (`false`: its sessions end at once) or enabled again.
    Active(bool),
    /// Another role.
    Role(OperatorRole),
    /// A new password (an argon2id PHC string); lifts a lock.
    Password(String),
}

impl OperatorChange {
    /// The audit log's `operation` and `details` for this change to operator `name`.
    pub fn audit(&self, name: &str) -> (&'static str, serde_json::Value) {
        let who = serde_json::json!({ "operator": name });
        match self {
            OperatorChange::Active(true) => ("operator_enable", who),
            OperatorChange::Active(false) => ("operator_disable", who),
            OperatorChange::Role(role) => (
                "operator_role",
                serde_json::json!({ "operator": name, "role": role.as_str() }),
            ),
            OperatorChange::Password(_) => ("operator_password", who),
        }
    }

    /// Whether the change ends the operator's sessions: all but enabling one.
    pub fn ends_sessions(&self) -> bool {
        *self != OperatorChange::Active(true)
    }
}

/// Headquarters' operators and their sessions.
pub trait OperatorStore: Clone + Send + Sync + 'static {
    /// Creates an operator (audited); a name already taken is `Conflict`.
    fn add_operator(
        &self,
        actor: Actor,
        operator: NewOperator,
    ) -> impl Future<Output = Result<Uuid, StoreError>> + Send;

    /// Changes an operator (audited); an unknown name is `NotFound`. Disabling one, or
    /// changing its role or password, ends its sessions.
    fn change_operator(
        &self,
        actor: Actor,
        name: String,
        change: OperatorChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every operator, by name, at most `limit`.
    fn operators(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OperatorListing>, StoreError>> + Send;

    /// The operator with this name, for a login.
    fn operator_login(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Option<OperatorLogin>, StoreError>> + Send;

    /// Counts a login attempt before its password is checked, in one statement, unless the
    /// operator is locked at `now`: a lock that has ended starts the count again at 1, and
    /// the `lock_after`th attempt in a row locks until `now + lock_for_s` (a good password
    /// then clears it in [`OperatorStore::open_session`]). `None` when locked (or gone):
    /// check no password. Attempts made at once are counted one by one, so no more than
    /// `lock_after` passwords are ever checked per lock.
    fn begin_login(
        &self,
        operator_id: Uuid,
        now: DateTime<Utc>,
        lock_after: i64,
        lock_for_s: i64,
    ) -> impl Future<Output = Result<Option<LoginFailure>, StoreError>> + Send;

    /// A good password: clears the failures and opens `session`; deletes a few expired
    /// sessions on the way.
    fn open_session(
        &self,
        operator_id: Uuid,
        session: NewSession,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live session whose cookie hashes to `session_sha256` at `now`, of an active
    /// operator.
    fn session(
        &self,
        session_sha256: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<OperatorSession>, StoreError>> + Send;

    /// Ends a session (logging out); ending one already gone is no error.
    fn close_session(
        &self,
        session_sha256: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
