//! Headquarters' operators and their sessions in the SQLite store.

use super::admin::{is_unique_violation, log_change};
use super::{SqliteStore, internal};
use crate::ledger::caller::{Actor, Operator, OperatorRole};
use crate::ledger::store::{
    LoginFailure, NewOperator, NewSession, OperatorChange, OperatorListing, OperatorLogin,
    OperatorSession, OperatorStore, StoreError,
};
use crate::protocol::api::format_time;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde_json::json;
use uuid::Uuid;

/// Expired sessions deleted at each login, at most.
const EXPIRED_SESSIONS_PER_LOGIN: i64 = 100;

fn time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| internal(format!("bad stored time {text:?}")))
}

fn role(text: &str) -> Result<OperatorRole, StoreError> {
    OperatorRole::parse(text).ok_or_else(|| internal(format!("operator role {text:?}")))
}

fn id(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| internal(format!("operator id {text:?}")))
}

impl OperatorStore for SqliteStore {
    async fn add_operator(&self, actor: Actor, new: NewOperator) -> Result<Uuid, StoreError> {
        let operator_id = Uuid::now_v7();
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO operators (operator_id, name, role, password_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    operator_id.to_string(),
                    new.name,
                    new.role.as_str(),
                    new.password_hash,
                    format_time(Utc::now())
                ]);
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "operator {:?} exists already",
                        new.name
                    )));
                }
                other => other?,
            };
            log_change(
                conn,
                &actor,
                "operator_add",
                None,
                json!({ "operator": new.name, "role": new.role.as_str() }),
            )?;
            Ok(operator_id)
        })
        .await
    }

    async fn change_operator(
        &self,
        actor: Actor,
        name: String,
        change: OperatorChange,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let operator_id: Option<String> = conn
                .prepare_cached("SELECT operator_id FROM operators WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            let operator_id = operator_id
                .ok_or_else(|| StoreError::NotFound(format!("no operator named {name:?}")))?;
            match &change {
                OperatorChange::Active(active) => {
                    conn.prepare_cached("UPDATE operators SET active = ?2 WHERE operator_id = ?1")?
                        .execute(params![operator_id, active])?;
                }
                OperatorChange::Role(role) => {
                    conn.prepare_cached("UPDATE operators SET role = ?2 WHERE operator_id = ?1")?
                        .execute(params![operator_id, role.as_str()])?;
                }
                OperatorChange::Password(hash) => {
                    conn.prepare_cached(
                        "UPDATE operators SET password_hash = ?2, failed_logins = 0,
                             locked_until = NULL
                         WHERE operator_id = ?1",
                    )?
                    .execute(params![operator_id, hash])?;
                }
            }
            // Whatever changed, the operator's open sessions end: a disabled operator, a
            // lesser role or a password taken from someone acts no more.
            if change.ends_sessions() {
                conn.prepare_cached("DELETE FROM operator_sessions WHERE operator_id = ?1")?
                    .execute([&operator_id])?;
            }
            let (operation, details) = change.audit(&name);
            log_change(conn, &actor, operation, None, details)
        })
        .await
    }

    async fn operators(&self, limit: u32) -> Result<Vec<OperatorListing>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, role, active, failed_logins, locked_until, created_at
                 FROM operators ORDER BY name LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (name, r, active, failed_logins, locked, created) = row?;
                Ok(OperatorListing {
                    name,
                    role: role(&r)?,
                    active,
                    failed_logins,
                    locked_until: locked.as_deref().map(time).transpose()?,
                    created_at: time(&created)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn operator_login(&self, name: String) -> Result<Option<OperatorLogin>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT operator_id, name, role, password_hash, active, failed_logins,
                            locked_until
                     FROM operators WHERE name = ?1",
                )?
                .query_row([&name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, bool>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .optional()?;
            let Some((operator_id, name, r, password_hash, active, failed_logins, locked)) = row
            else {
                return Ok(None);
            };
            Ok(Some(OperatorLogin {
                operator: Operator {
                    operator_id: id(&operator_id)?,
                    name,
                    role: role(&r)?,
                },
                password_hash,
                active,
                failed_logins,
                locked_until: locked.as_deref().map(time).transpose()?,
            }))
        })
        .await
    }

    async fn begin_login(
        &self,
        operator_id: Uuid,
        now: DateTime<Utc>,
        lock_after: i64,
        lock_for_s: i64,
    ) -> Result<Option<LoginFailure>, StoreError> {
        let until = format_time(now + chrono::Duration::seconds(lock_for_s));
        let now = format_time(now);
        self.write(move |conn| {
            // SET reads the row as it was: a lock still set here has ended (the WHERE), and
            // the count starts again.
            let row: Option<(i64, Option<String>)> = conn
                .prepare_cached(
                    "UPDATE operators SET
                         failed_logins = CASE WHEN locked_until IS NOT NULL THEN 1
                                              ELSE failed_logins + 1 END,
                         locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL THEN 1
                                                        ELSE failed_logins + 1 END) >= ?2
                                             THEN ?3 END
                     WHERE operator_id = ?1 AND (locked_until IS NULL OR locked_until <= ?4)
                     RETURNING failed_logins, locked_until",
                )?
                .query_row(
                    params![operator_id.to_string(), lock_after, until, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(failed_logins, locked)| {
                Ok(LoginFailure {
                    failed_logins,
                    locked_until: locked.as_deref().map(time).transpose()?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn open_session(&self, operator_id: Uuid, session: NewSession) -> Result<(), StoreError> {
        self.write(move |conn| {
            let created = format_time(session.created_at);
            conn.prepare_cached(
                "DELETE FROM operator_sessions WHERE session_sha256 IN
                     (SELECT session_sha256 FROM operator_sessions WHERE expires_at <= ?1
                      ORDER BY expires_at LIMIT ?2)",
            )?
            .execute(params![created, EXPIRED_SESSIONS_PER_LOGIN])?;
            conn.prepare_cached(
                "UPDATE operators SET failed_logins = 0, locked_until = NULL
                 WHERE operator_id = ?1",
            )?
            .execute([operator_id.to_string()])?;
            conn.prepare_cached(
                "INSERT INTO operator_sessions
                     (session_sha256, operator_id, csrf_token, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                session.session_sha256,
                operator_id.to_string(),
                session.csrf_token,
                created,
                format_time(session.expires_at)
            ])?;
            Ok(())
        })
        .await
    }

    async fn session(
        &self,
        session_sha256: String,
        now: DateTime<Utc>,
    ) -> Result<Option<OperatorSession>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT o.operator_id, o.name, o.role, s.csrf_token, s.expires_at
                     FROM operator_sessions s JOIN operators o USING (operator_id)
                     WHERE s.session_sha256 = ?1 AND s.expires_at > ?2 AND o.active",
                )?
                .query_row(params![session_sha256, format_time(now)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            let Some((operator_id, name, r, csrf_token, expires)) = row else {
                return Ok(None);
            };
            Ok(Some(OperatorSession {
                operator: Operator {
                    operator_id: id(&operator_id)?,
                    name,
                    role: role(&r)?,
                },
                csrf_token,
                expires_at: time(&expires)?,
            }))
        })
        .await
    }

    async fn close_session(&self, session_sha256: String) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM operator_sessions WHERE session_sha256 = ?1")?
                .execute([session_sha256])?;
            Ok(())
        })
        .await
    }
}
