//! Headquarters' operators and their sessions in the PostgreSQL store: the same answers as
//! the SQLite store's `operators.rs`.

use super::admin::{internal, log_change, unless_taken};
use super::{PgStore, classify};
use crate::ledger::caller::{Actor, Operator, OperatorRole};
use crate::ledger::store::{
    LoginFailure, NewOperator, NewSession, OperatorChange, OperatorListing, OperatorLogin,
    OperatorSession, OperatorStore, StoreError,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::json;
use uuid::Uuid;

/// Expired sessions deleted at each login, at most.
const EXPIRED_SESSIONS_PER_LOGIN: i64 = 100;

fn role(text: &str) -> Result<OperatorRole, StoreError> {
    OperatorRole::parse(text).ok_or_else(|| internal(format!("operator role {text:?}")))
}

impl OperatorStore for PgStore {
    async fn add_operator(&self, actor: Actor, new: NewOperator) -> Result<Uuid, StoreError> {
        let operator_id = Uuid::now_v7();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO operators (operator_id, name, role, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, date_trunc('milliseconds', now()))",
            )
            .await
            .map_err(classify)?;
        tx.execute(
            &stmt,
            &[
                &operator_id,
                &new.name,
                &new.role.as_str(),
                &new.password_hash,
            ],
        )
        .await
        .map_err(|e| unless_taken(e, || format!("operator {:?} exists already", new.name)))?;
        log_change(
            &tx,
            &actor,
            "operator_add",
            None,
            json!({ "operator": new.name, "role": new.role.as_str() }),
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        Ok(operator_id)
    }

    async fn change_operator(
        &self,
        actor: Actor,
        name: String,
        change: OperatorChange,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let row = tx
            .query_opt(
                "SELECT operator_id FROM operators WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await
            .map_err(classify)?
            .ok_or_else(|| StoreError::NotFound(format!("no operator named {name:?}")))?;
        let operator_id: Uuid = row.try_get(0).map_err(classify)?;
        match &change {
            OperatorChange::Active(active) => {
                tx.execute(
                    "UPDATE operators SET active = $2 WHERE operator_id = $1",
                    &[&operator_id, active],
                )
                .await
                .map_err(classify)?;
            }
            OperatorChange::Role(role) => {
                tx.execute(
                    "UPDATE operators SET role = $2 WHERE operator_id = $1",
                    &[&operator_id, &role.as_str()],
                )
                .await
                .map_err(classify)?;
            }
            OperatorChange::Password(hash) => {
                tx.execute(
                    "UPDATE operators SET password_hash = $2, failed_logins = 0,
                         locked_until = NULL
                     WHERE operator_id = $1",
                    &[&operator_id, hash],
                )
                .await
                .map_err(classify)?;
            }
        }
        // Whatever changed, the operator's open sessions end (as in SQLite).
        if change.ends_sessions() {
            tx.execute(
                "DELETE FROM operator_sessions WHERE operator_id = $1",
                &[&operator_id],
            )
            .await
            .map_err(classify)?;
        }
        let (operation, details) = change.audit(&name);
        log_change(&tx, &actor, operation, None, details).await?;
        tx.commit().await.map_err(classify)
    }

    async fn operators(&self, limit: u32) -> Result<Vec<OperatorListing>, StoreError> {
        self.rows(
            "SELECT name, role, active, failed_logins, locked_until, created_at
             FROM operators ORDER BY name COLLATE \"C\" LIMIT $1",
            &[&i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            let role_text: &str = r.try_get(1).map_err(classify)?;
            Ok(OperatorListing {
                name: r.try_get(0).map_err(classify)?,
                role: role(role_text)?,
                active: r.try_get(2).map_err(classify)?,
                failed_logins: r.try_get(3).map_err(classify)?,
                locked_until: r.try_get(4).map_err(classify)?,
                created_at: r.try_get(5).map_err(classify)?,
            })
        })
        .collect()
    }

    async fn operator_login(&self, name: String) -> Result<Option<OperatorLogin>, StoreError> {
        let rows = self
            .rows(
                "SELECT operator_id, name, role, password_hash, active, failed_logins,
                        locked_until
                 FROM operators WHERE name = $1",
                &[&name],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let role_text: &str = r.try_get(2).map_err(classify)?;
        Ok(Some(OperatorLogin {
            operator: Operator {
                operator_id: r.try_get(0).map_err(classify)?,
                name: r.try_get(1).map_err(classify)?,
                role: role(role_text)?,
            },
            password_hash: r.try_get(3).map_err(classify)?,
            active: r.try_get(4).map_err(classify)?,
            failed_logins: r.try_get(5).map_err(classify)?,
            locked_until: r.try_get(6).map_err(classify)?,
        }))
    }

    async fn begin_login(
        &self,
        operator_id: Uuid,
        now: DateTime<Utc>,
        lock_after: i64,
        lock_for_s: i64,
    ) -> Result<Option<LoginFailure>, StoreError> {
        let until = now + chrono::Duration::seconds(lock_for_s);
        // SET reads the row as it was: a lock still set here has ended (the WHERE), and the
        // count starts again (as in SQLite).
        let rows = self
            .rows(
                "UPDATE operators SET
                     failed_logins = CASE WHEN locked_until IS NOT NULL THEN 1
                                          ELSE failed_logins + 1 END,
                     locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL THEN 1
                                                    ELSE failed_logins + 1 END) >= $2
                                         THEN date_trunc('milliseconds', $3::timestamptz) END
                 WHERE operator_id = $1
                   AND (locked_until IS NULL OR locked_until <= $4::timestamptz)
                 RETURNING failed_logins, locked_until",
                &[&operator_id, &lock_after, &until, &now],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(LoginFailure {
                    failed_logins: r.try_get(0).map_err(classify)?,
                    locked_until: r.try_get(1).map_err(classify)?,
                })
            })
            .transpose()
    }

    async fn open_session(&self, operator_id: Uuid, session: NewSession) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(classify)?;
        tx.execute(
            "DELETE FROM operator_sessions WHERE session_sha256 IN
                 (SELECT session_sha256 FROM operator_sessions WHERE expires_at <= $1
                  ORDER BY expires_at LIMIT $2)",
            &[&session.created_at, &EXPIRED_SESSIONS_PER_LOGIN],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "UPDATE operators SET failed_logins = 0, locked_until = NULL
             WHERE operator_id = $1",
            &[&operator_id],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "INSERT INTO operator_sessions
                 (session_sha256, operator_id, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, date_trunc('milliseconds', $4::timestamptz),
                     date_trunc('milliseconds', $5::timestamptz))",
            &[
                &session.session_sha256,
                &operator_id,
                &session.csrf_token,
                &session.created_at,
                &session.expires_at,
            ],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn session(
        &self,
        session_sha256: String,
        now: DateTime<Utc>,
    ) -> Result<Option<OperatorSession>, StoreError> {
        let rows = self
            .rows(
                "SELECT o.operator_id, o.name, o.role, s.csrf_token, s.expires_at
                 FROM operator_sessions s JOIN operators o USING (operator_id)
                 WHERE s.session_sha256 = $1 AND s.expires_at > $2 AND o.active",
                &[&session_sha256, &now],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let role_text: &str = r.try_get(2).map_err(classify)?;
        Ok(Some(OperatorSession {
            operator: Operator {
                operator_id: r.try_get(0).map_err(classify)?,
                name: r.try_get(1).map_err(classify)?,
                role: role(role_text)?,
            },
            csrf_token: r.try_get(3).map_err(classify)?,
            expires_at: r.try_get(4).map_err(classify)?,
        }))
    }

    async fn close_session(&self, session_sha256: String) -> Result<(), StoreError> {
        self.rows(
            "DELETE FROM operator_sessions WHERE session_sha256 = $1",
            &[&session_sha256],
        )
        .await?;
        Ok(())
    }
}
