//! The PostgreSQL schema's migrations: the files of `migrations/postgres/`, applied in order,
//! each in its own transaction, and recorded in `schema_migrations` (version, file, when).
//!
//! Several ledger processes may start at once on one database. Each migration's transaction
//! first takes a transaction-scoped advisory lock ([`MIGRATION_LOCK_KEY`]), then looks
//! whether the migration is recorded: exactly one process applies it, and the others, having
//! waited for the lock, find it done. A transaction's lock ends with its commit or rollback,
//! also when its process dies, so no lock outlives its holder or stays behind on a pooled
//! connection. A database whose schema is newer than this program's is refused
//! ([`StoreError::SchemaTooNew`]) before anything is applied: this program does not know what
//! the newer schema means.

use super::classify;
use crate::ledger::store::StoreError;
use tokio_postgres::Client;

/// One schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its version: its position in [`MIGRATIONS`], from 1.
    pub version: i64,
    /// Its file name in `migrations/postgres/`.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// A [`Migration`] of the file `migrations/postgres/$name`.
macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../../migrations/postgres/", $name)),
        }
    };
}

/// The schema migrations, in order; `schema_migrations` records those applied.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_ledger.sql"),
    migration!(2, "0002_shifts.sql"),
    migration!(3, "0003_stripe.sql"),
    migration!(4, "0004_card_feed.sql"),
    migration!(5, "0005_operations.sql"),
    migration!(6, "0006_stripe_procedures.sql"),
    migration!(7, "0007_new_cards.sql"),
    migration!(8, "0008_lean_operations.sql"),
    migration!(9, "0009_vat.sql"),
    migration!(10, "0010_what_festivals_sell.sql"),
    migration!(11, "0011_deposits.sql"),
    migration!(12, "0012_voucher_grants.sql"),
    migration!(13, "0013_daily_vouchers.sql"),
    migration!(14, "0014_housekeeping.sql"),
    migration!(15, "0015_card_replacement.sql"),
    migration!(16, "0016_offline_orders_as_sold.sql"),
    migration!(17, "0017_terminal_status.sql"),
    migration!(18, "0018_operators.sql"),
    migration!(19, "0019_card_history.sql"),
    migration!(20, "0020_quarter_totals.sql"),
    migration!(21, "0021_shift_top_ups.sql"),
    migration!(22, "0022_report_sums.sql"),
    migration!(23, "0023_card_keys.sql"),
];

/// The advisory lock that serializes migrations across processes: "cashless" in ASCII.
pub const MIGRATION_LOCK_KEY: i64 = 0x6361_7368_6c65_7373;

/// How long a migration waits for a lock (the advisory lock held by another process's
/// migration, or a table's lock held by a running ledger) before it gives up as unavailable.
pub const MIGRATION_LOCK_TIMEOUT_MS: u64 = 120_000;

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// What a run of the migrations did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The files this run applied, in order (empty: the schema was current).
    pub applied: Vec<&'static str>,
    /// The schema's version now.
    pub version: i64,
}

/// Applies the migrations `client`'s database lacks, each in its own transaction under the
/// advisory lock; returns what it applied.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(classify)?;
        // A migration may take longer than a money statement may; a lock wait may not last
        // for ever. Notices ("already exists, skipping") are not news.
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {MIGRATION_LOCK_TIMEOUT_MS};
             SET LOCAL client_min_messages = warning"
        ))
        .await
        .map_err(classify)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(lock_error)?;
        tx.batch_execute(SCHEMA_MIGRATIONS)
            .await
            .map_err(classify)?;
        let row = tx
            .query_one(
                "SELECT max(version), coalesce(bool_or(version = $1), false) FROM schema_migrations",
                &[&m.version],
            )
            .await
            .map_err(classify)?;
        let newest: Option<i64> = row.try_get(0).map_err(classify)?;
        let done: bool = row.try_get(1).map_err(classify)?;
        if let Some(found) = newest
            && found > known
        {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        if !done {
            tx.batch_execute(m.sql).await.map_err(|e| failed(m, e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .map_err(|e| failed(m, e))?;
        }
        tx.commit().await.map_err(|e| failed(m, e))?;
        if !done {
            tracing::info!(version = m.version, file = m.name, "applied migration");
            applied.push(m.name);
        }
    }
    Ok(MigrationReport {
        applied,
        version: known,
    })
}

/// The advisory lock not granted in time: another process's migration runs long.
fn lock_error(e: tokio_postgres::Error) -> StoreError {
    match classify(e) {
        StoreError::Unavailable(why) => StoreError::Unavailable(format!(
            "another process has been migrating this database for over {} s (see \
             pg_stat_activity): {why}",
            MIGRATION_LOCK_TIMEOUT_MS / 1000
        )),
        other => other,
    }
}

/// A migration that failed, named.
fn failed(m: &Migration, e: tokio_postgres::Error) -> StoreError {
    match classify(e) {
        StoreError::Unavailable(why) => {
            StoreError::Unavailable(format!("migration {}: {why}", m.name))
        }
        StoreError::Internal(why) => StoreError::Internal(format!("migration {}: {why}", m.name)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_a_migration_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let names: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, names);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i64::try_from(i + 1).unwrap(), "{}", m.name);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            assert_eq!(
                m.sql,
                std::fs::read_to_string(dir.join(m.name)).unwrap(),
                "{}",
                m.name
            );
        }
    }
}
