//! The PostgreSQL backend ([`PgStore`]): a connection pool opened from a `postgres://` URL
//! (TLS with rustls when the URL asks for it), the schema migrations (`migrate.rs`, files in
//! `migrations/postgres/`), and each store trait in its own file: `ops.rs` (orders, top-ups,
//! voids, shift close-outs: one stored-procedure call each, 0005), `stripe.rs` (Stripe
//! credits and refunds, 0006), `feeds.rs` (the card feed safe under several writers, 0004),
//! `admin.rs` and `audit.rs`. `import_sqlite.rs` moves a festival from SQLite.
//!
//! # The driver: tokio-postgres, pooled by deadpool-postgres
//! Every money operation is one call of a stored procedure: one round trip, the
//! transaction inside the database. tokio-postgres runs a prepared statement (kept per
//! connection by deadpool's statement cache) as one round trip, and pipelines the requests
//! of concurrent futures on one connection, so a batch's operations go out back to back
//! instead of one round trip at a time. It needs no database at compile time (sqlx's checked
//! macros do, or a prepared offline cache kept in step with the schema), and its errors carry
//! the SQLSTATE that [`classify`] sorts into retryable or not. deadpool-postgres adds the
//! limits a server needs: a maximum size, how long a caller waits for a free connection, and
//! how long opening one may take (TCP, TLS, start-up and authentication together).
//!
//! # The URL
//! Everything tokio-postgres understands (`postgres://user:password@host:port/db?...` with
//! `connect_timeout`, `application_name`, `options`, `target_session_attrs`, ...), plus two
//! parameters the ledger handles itself, with libpq's meaning:
//! - `sslmode`: `disable` (also when absent: no TLS), `prefer` (TLS when the server offers
//!   it), `require` (TLS or no connection; the certificate is not checked, as with libpq:
//!   encrypted, but not proof against an impostor), `verify-full` (TLS, and the
//!   certificate must chain to a trusted root and name the host). `allow` and `verify-ca`
//!   are refused rather than silently weakened or strengthened.
//! - `sslrootcert=PATH`: the PEM file of the roots `verify-full` trusts (a private CA);
//!   without it, the Mozilla roots of `webpki-roots`.
//!
//! Each connection starts with PostgreSQL's `statement_timeout` set to `[postgres]
//! statement_timeout_ms` (in the start-up packet: no extra round trip); an `options` of the
//! URL comes after it, so a `-c statement_timeout=...` there wins.

mod admin;
mod audit;
mod feeds;
pub mod import_sqlite;
mod migrate;
mod operators;
mod ops;
mod stripe;

pub use migrate::{
    MIGRATION_LOCK_KEY, MIGRATION_LOCK_TIMEOUT_MS, MIGRATIONS, Migration, MigrationReport, migrate,
};

use super::{OpenError, StoreError, StoreOptions};
use crate::ledger::config::{DatabaseUrl, PostgresSettings};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the connection is encrypted: the URL's `sslmode`, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS; also when the URL has no `sslmode`.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS or no connection; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl SslMode {
    /// The URL's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Result<SslMode, BadUrl> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            "verify-ca" => Err(BadUrl(
                "sslmode=verify-ca is not supported: use verify-full (which also checks the host name)"
                    .into(),
            )),
            other => Err(BadUrl(format!(
                "sslmode={other} is not supported: use disable, prefer, require or verify-full"
            ))),
        }
    }
}

/// A `postgres://` URL the ledger cannot use, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(String);

/// A `postgres://` URL taken apart: the driver's configuration and what the ledger handles
/// itself.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
    connect_timeout: Duration,
    /// `host:port`, for messages.
    place: String,
}

impl std::fmt::Debug for PgTarget {
    /// Never shows the password (tokio-postgres's own `Debug` redacts it too).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("place", &self.place)
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// A query parameter's value, percent-decoded (a `+` stays a `+`, as libpq reads it).
fn decode(value: &str) -> String {
    let escaped = value.replace('+', "%2B");
    form_urlencoded::parse(format!("v={escaped}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl PgTarget {
    /// Takes the URL apart, with the settings' timeouts applied.
    pub fn parse(url: &str, settings: &PostgresSettings) -> Result<PgTarget, BadUrl> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut ssl_mode = SslMode::Disable;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => ssl_mode = SslMode::parse(&decode(value))?,
                "sslrootcert" => root_cert = Some(PathBuf::from(decode(value))),
                _ => rest.push(pair),
            }
        }
        if root_cert.is_some() && ssl_mode != SslMode::VerifyFull {
            return Err(BadUrl(
                "sslrootcert is used only with sslmode=verify-full".into(),
            ));
        }
        let driver_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = driver_url
            .parse()
            .map_err(|e: tokio_postgres::Error| BadUrl(with_causes(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(BadUrl(
                "no host: write postgres://USER@HOST:PORT/DATABASE".into(),
            ));
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_millis(settings.connect_timeout_ms));
        config.connect_timeout(connect_timeout);
        let statement_timeout = format!("-c statement_timeout={}", settings.statement_timeout_ms);
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{statement_timeout} {theirs}"),
            _ => statement_timeout,
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("cashless-ledger");
        }
        let place = place(&config);
        Ok(PgTarget {
            config,
            ssl_mode,
            root_cert,
            connect_timeout,
            place,
        })
    }

    /// `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// How long opening a connection may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// The servers a configuration names, `host:port` each, for messages.
fn place(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(dir) => {
                    format!("{}/.s.PGSQL.{port}", dir.display())
                }
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The TLS configuration for `target`'s `sslmode` (none for `disable`).
fn tls_config(target: &PgTarget) -> Result<Option<rustls::ClientConfig>, BadUrl> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match target.ssl_mode {
        SslMode::Disable => return Ok(None),
        _ => rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| BadUrl(format!("TLS: {e}")))?,
    };
    let config = match target.ssl_mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &target.root_cert {
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        BadUrl(format!(
                            "sslrootcert {}: cannot read it: {e}",
                            path.display()
                        ))
                    })?;
                    for cert in CertificateDer::pem_slice_iter(&pem) {
                        let cert = cert
                            .map_err(|e| BadUrl(format!("sslrootcert {}: {e}", path.display())))?;
                        roots
                            .add(cert)
                            .map_err(|e| BadUrl(format!("sslrootcert {}: {e}", path.display())))?;
                    }
                    if roots.is_empty() {
                        return Err(BadUrl(format!(
                            "sslrootcert {}: no PEM certificate in it",
                            path.display()
                        )));
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// libpq's `prefer` and `require`: the handshake's signatures are checked, the certificate
/// is not (encryption without proof of the server's identity; `verify-full` is that).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A pool of connections to one PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    target: Arc<PgTarget>,
    settings: PostgresSettings,
}

impl PgPool {
    /// A pool for the database `url` names, within the settings' limits. Opens no connection
    /// yet: the first [`PgPool::get`] does.
    pub fn open(url: &str, settings: PostgresSettings) -> Result<PgPool, BadUrl> {
        let target = PgTarget::parse(url, &settings)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls_config(&target)? {
            None => {
                Manager::from_config(target.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            Some(tls) => Manager::from_config(
                target.config.clone(),
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_max_size)
            .wait_timeout(Some(Duration::from_millis(settings.pool_wait_timeout_ms)))
            // The whole opening: tokio-postgres's own connect_timeout bounds the TCP
            // connect only, not a server that accepts and then says nothing.
            .create_timeout(Some(target.connect_timeout))
            .recycle_timeout(Some(target.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| BadUrl(format!("connection pool: {e}")))?;
        Ok(PgPool {
            pool,
            target: Arc::new(target),
            settings,
        })
    }

    /// A connection from the pool (opened if none is free and the pool is not full).
    pub async fn get(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_error(e, &self.target, &self.settings))
    }

    /// How many connections are open, idle, and awaited now.
    pub fn status(&self) -> crate::ledger::store::PoolStatus {
        let s = self.pool.status();
        crate::ledger::store::PoolStatus {
            max_connections: s.max_size,
            open_connections: s.size,
            idle_connections: Some(s.available),
            waiting: s.waiting,
        }
    }

    /// Where the pool connects, and how.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }
}

/// How much longer than `statement_timeout_ms` the ledger waits for an answer before it
/// gives the connection up ([`PgStore::bounded`]): room for the server's own cancellation
/// and the network.
pub const DEADLINE_MARGIN_MS: u64 = 2_000;

/// The error of a database that did not answer in time.
fn missed(deadline: Duration, target: &PgTarget) -> StoreError {
    StoreError::Unavailable(format!(
        "PostgreSQL at {} did not answer within {} ms ([postgres] statement_timeout_ms plus \
         {DEADLINE_MARGIN_MS} ms): is the server frozen or cut off?",
        target.place,
        deadline.as_millis()
    ))
}

/// The ledger on a PostgreSQL database: a pool of connections, and the store's options.
/// Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    options: StoreOptions,
}

impl PgStore {
    /// Runs `work` on a pooled connection, bounded in time: a database that stops answering
    /// without closing its connections (frozen, or cut off by the network without a reset)
    /// is an unavailable database after `statement_timeout_ms` plus [`DEADLINE_MARGIN_MS`],
    /// not a request that hangs. The server enforces `statement_timeout` itself while it
    /// runs; this is the bound when it does not. A connection that missed the deadline is
    /// taken out of the pool and closed (its answer, if one ever comes, belongs to nobody).
    pub(super) async fn bounded<T>(
        &self,
        work: impl for<'c> FnOnce(
            &'c deadpool_postgres::Client,
        ) -> futures_util::future::BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let deadline = self.deadline();
        let client = self.client_within(deadline).await?;
        match tokio::time::timeout(deadline, work(&client)).await {
            Ok(result) => result,
            Err(_) => Err(self.give_up(client)),
        }
    }

    /// Runs one statement (prepared once per connection) and returns its rows, bounded in
    /// time as [`PgStore::bounded`] is.
    pub(super) async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let deadline = self.deadline();
        let client = self.client_within(deadline).await?;
        let work = async {
            let statement = client.prepare_cached(sql).await.map_err(classify)?;
            client.query(&statement, params).await.map_err(classify)
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(self.give_up(client)),
        }
    }

    /// The one non-negative integer `sql` answers (a count), within the same bounds as
    /// [`PgStore::rows`].
    pub(super) async fn count(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let rows = self.rows(sql, params).await?;
        let n: i64 = rows
            .first()
            .ok_or_else(|| StoreError::Internal(format!("no answer from {sql}")))?
            .try_get(0)
            .map_err(classify)?;
        u64::try_from(n).map_err(|_| StoreError::Internal(format!("{sql} answered {n}")))
    }

    /// How long a call may take: `statement_timeout_ms` plus [`DEADLINE_MARGIN_MS`].
    fn deadline(&self) -> Duration {
        Duration::from_millis(self.options.postgres.statement_timeout_ms + DEADLINE_MARGIN_MS)
    }

    /// A pooled connection within `deadline`.
    async fn client_within(
        &self,
        deadline: Duration,
    ) -> Result<deadpool_postgres::Client, StoreError> {
        tokio::time::timeout(deadline, self.pool.get())
            .await
            .map_err(|_| missed(deadline, self.pool.target()))?
    }

    /// Takes a connection that missed its deadline out of the pool (closed when dropped) and
    /// says so.
    fn give_up(&self, client: deadpool_postgres::Client) -> StoreError {
        drop(deadpool_postgres::Object::take(client));
        missed(self.deadline(), self.pool.target())
    }

    /// Opens a pool on the database `url` names and applies the migrations it lacks (under
    /// the migration lock, so several processes may start at once).
    pub async fn open(url: &str, options: StoreOptions) -> Result<PgStore, OpenError> {
        migrate_database(url, options.postgres).await?;
        let database = DatabaseUrl::Postgres(url.to_owned()).to_string();
        let pool = PgPool::open(url, options.postgres)
            .map_err(|source| OpenError::BadUrl { database, source })?;
        Ok(PgStore { pool, options })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Opens a pool on the database `url` names and applies the migrations it lacks: what
/// `cashless ledger migrate` does with a `postgres://` URL.
pub async fn migrate_database(
    url: &str,
    settings: PostgresSettings,
) -> Result<MigrationReport, OpenError> {
    connect_migrated(url, settings)
        .await
        .map(|(_, report)| report)
}

/// A connection to the database `url` names, once the migrations it lacked are applied.
async fn connect_migrated(
    url: &str,
    settings: PostgresSettings,
) -> Result<(deadpool_postgres::Object, MigrationReport), OpenError> {
    let database = DatabaseUrl::Postgres(url.to_owned()).to_string();
    let pool = PgPool::open(url, settings).map_err(|source| OpenError::BadUrl {
        database: database.clone(),
        source,
    })?;
    let failed = |source| OpenError::Failed {
        database: database.clone(),
        source,
    };
    let mut client = pool.get().await.map_err(failed)?;
    let report = migrate(&mut client).await.map_err(failed)?;
    Ok((client, report))
}

/// A connection the pool could not hand out, as a [`StoreError`] that says what to check.
fn pool_error(e: PoolError, target: &PgTarget, settings: &PostgresSettings) -> StoreError {
    use deadpool_postgres::TimeoutType;
    match e {
        PoolError::Timeout(TimeoutType::Create) => StoreError::Unavailable(format!(
            "PostgreSQL at {} did not complete a connection within {} ms (the connect timeout): \
             is the server up and reachable there, and are the URL's host and port right?",
            target.place,
            target.connect_timeout.as_millis()
        )),
        PoolError::Timeout(TimeoutType::Wait) => StoreError::Unavailable(format!(
            "no database connection free within {} ms: all {} of the pool ([postgres] \
             pool_max_size) are busy",
            settings.pool_wait_timeout_ms, settings.pool_max_size
        )),
        PoolError::Timeout(TimeoutType::Recycle) => StoreError::Unavailable(format!(
            "PostgreSQL at {} did not answer the check of a pooled connection",
            target.place
        )),
        PoolError::Backend(e) => connect_error(&e, target),
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        other => StoreError::Internal(other.to_string()),
    }
}

/// A failure to open a connection, with what to do about it.
fn connect_error(e: &tokio_postgres::Error, target: &PgTarget) -> StoreError {
    let place = &target.place;
    if let Some(db) = e.as_db_error() {
        let hint = match db.code().code() {
            "3D000" => " (create the database first, e.g. with createdb)",
            "28P01" | "28000" => " (check the user and password in the URL, and pg_hba.conf)",
            "53300" => {
                " (too many connections: lower [postgres] pool_max_size or raise the server's \
                 max_connections)"
            }
            "57P03" => " (the server is starting up or shutting down: retry)",
            _ => "",
        };
        return StoreError::Unavailable(format!(
            "PostgreSQL at {place} refused the connection: {} {}{hint}",
            db.severity(),
            db.message()
        ));
    }
    let text = with_causes(e);
    // tokio-postgres's error kinds are private; its message names a TLS failure.
    if text.starts_with("error performing TLS handshake") {
        return StoreError::Unavailable(format!(
            "TLS with PostgreSQL at {place} failed (sslmode={}): {text}",
            target.ssl_mode.as_str()
        ));
    }
    StoreError::Unavailable(format!(
        "cannot connect to PostgreSQL at {place}: {text}; is the server running there and \
         accepting TCP connections (its listen_addresses and port)?"
    ))
}

/// A failed statement as a [`StoreError`]: retryable (`Unavailable`: the connection or the
/// server, a timeout, a lock wait, a serialization failure) or not (`Internal`).
pub fn classify(e: tokio_postgres::Error) -> StoreError {
    let text = with_causes(&e);
    match e.code() {
        Some(code) => {
            let code = code.code();
            let class = code.get(..2).unwrap_or("");
            // 08 connection, 40 serialization/deadlock, 53 resources, 57 operator
            // intervention (query_canceled: statement_timeout), 58 system; 25006 read-only
            // transaction (a standby); 55P03 lock_timeout.
            let retryable = matches!(class, "08" | "40" | "53" | "57" | "58")
                || matches!(code, "25006" | "55P03");
            if retryable {
                StoreError::Unavailable(text)
            } else {
                StoreError::Internal(text)
            }
        }
        None if e.is_closed() || has_io_source(&e) => StoreError::Unavailable(text),
        None => StoreError::Internal(text),
    }
}

/// An error's message followed by those of its causes that it does not already show
/// (tokio-postgres's messages do not always include their cause).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Whether an IO error is among the causes: the connection failed, not the statement.
fn has_io_source(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgTarget, String> {
        PgTarget::parse(url, &PostgresSettings::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn sslmode_and_the_driver_parameters() {
        let t = parse("postgres://u:pw@db.example:6543/ledger").unwrap();
        assert_eq!(t.ssl_mode(), SslMode::Disable, "no sslmode: no TLS");
        assert_eq!(t.place, "db.example:6543");
        assert_eq!(t.connect_timeout(), Duration::from_millis(5000));
        assert_eq!(t.config.get_options(), Some("-c statement_timeout=10000"));
        assert_eq!(t.config.get_application_name(), Some("cashless-ledger"));
        assert!(!format!("{t:?}").contains("pw"), "{t:?}");

        let t = parse(
            "postgresql://u@h/d?sslmode=require&connect_timeout=2&options=-c%20work_mem%3D4MB",
        )
        .unwrap();
        assert_eq!(t.ssl_mode(), SslMode::Require);
        assert_eq!(
            t.connect_timeout(),
            Duration::from_secs(2),
            "the URL's wins"
        );
        assert_eq!(
            t.config.get_options(),
            Some("-c statement_timeout=10000 -c work_mem=4MB")
        );
        assert_eq!(t.config.get_dbname(), Some("d"));
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        let t = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/ca+1.pem").unwrap();
        assert_eq!(t.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca+1.pem")));
        assert_eq!(
            parse("postgres://u@h/d?sslmode=prefer").unwrap().ssl_mode(),
            SslMode::Prefer
        );
    }

    #[test]
    fn urls_the_ledger_cannot_use_say_why() {
        for (url, expected) in [
            ("postgres://u@h/d?sslmode=verify-ca", "use verify-full"),
            (
                "postgres://u@h/d?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            (
                "postgres://u@h/d?sslrootcert=/x.pem",
                "only with sslmode=verify-full",
            ),
            ("postgres://u@h/d?bogus=1", "bogus"),
            ("postgres:///d", "no host"),
        ] {
            let err = parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn tls_configurations_build_for_every_mode() {
        for mode in ["disable", "prefer", "require", "verify-full"] {
            let t = parse(&format!("postgres://u@h/d?sslmode={mode}")).unwrap();
            let config = tls_config(&t).unwrap();
            assert_eq!(config.is_some(), mode != "disable", "{mode}");
        }
        let t = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent.pem").unwrap();
        let err = tls_config(&t).unwrap_err().to_string();
        assert!(err.contains("/nonexistent.pem: cannot read it"), "{err}");
    }
}
