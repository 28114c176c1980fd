//! The terminal's HTTP client for the ledger: the one place that knows URLs and JSON of
//! the ledger API on the terminal side.
//!
//! The distinction that matters for money is what a failure means:
//! [`ClientError::is_in_doubt`] is true when the request may have reached the ledger (a
//! timeout, a connection cut after sending): the ledger may have applied it, so the caller
//! must void it by its `client_request_id` before deciding again. A connection that could
//! not be opened never carried the request.

use super::config::TerminalConfig;
use super::core::replay::{Settlement, settle};
use crate::domain::{AgeFlag, CardUid, Cents};
use crate::protocol::api::{Operation, ShiftCloseout, ShiftRecorded, TerminalStatusReport};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Largest answer body read from the ledger (a 10,000-card feed page is about 1 MiB).
pub const ANSWER_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Timeout for batches and feeds, which may carry hundreds of operations or cards.
pub const BULK_TIMEOUT_MS: u64 = 30_000;
/// Timeout for opening a connection.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be opened: the request was never sent.
    #[error("cannot reach the ledger: {0}")]
    Unreachable(String),
    /// No answer in time: the ledger may or may not have applied the request.
    #[error("the ledger did not answer in time")]
    Timeout,
    /// The connection broke after the request was (perhaps) sent.
    #[error("the connection to the ledger broke: {0}")]
    Broken(String),
    /// An answer that is not what the API promises (not JSON, too large, wrong shape).
    #[error("unexpected answer from the ledger: {0}")]
    BadAnswer(String),
}

impl ClientError {
    /// True when the ledger may have applied the request: it must be voided before the
    /// operation is decided again.
    pub fn is_in_doubt(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout | ClientError::Broken(_) | ClientError::BadAnswer(_)
        )
    }
}

/// The ledger's answer to one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status (201 approved; 402, 404, 422, 423 declined; ...).
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// `Idempotent-Replayed: true`: the ledger had already decided this request.
    pub replayed: bool,
    /// The `ETag` header, for the catalog.
    pub etag: Option<String>,
}

impl Answer {
    /// `error.code` of an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

/// What the ledger's answer to a shift close-out means. A close-out has no business
/// declines: it is recorded, refused for good, or to be sent again.
#[derive(Debug, Clone, PartialEq)]
pub enum ShiftAnswer {
    /// 201: recorded, now or before (`replayed`: the ledger's stored answer to this very
    /// close-out). Final.
    Recorded {
        /// The ledger's record, with the difference it computed.
        shift: ShiftRecorded,
        /// `Idempotent-Replayed: true`.
        replayed: bool,
    },
    /// Refused for good and not recorded (400, 403 unknown staff, 413, 422
    /// `IDEMPOTENCY_KEY_REUSED`, or an answer we do not understand): a person looks at it;
    /// sending it again unchanged gets the same refusal.
    Rejected(Answer),
    /// Not recorded and not stored (5xx, 408, 429, 409 `DUPLICATE_REQUEST`, 401, 404): send
    /// the same close-out again later; the ledger records it once. 401 and 404 say nothing
    /// about the close-out: a 401 is this terminal's token (rotated at the ledger, not yet
    /// in the terminal's configuration), a 404 a ledger not yet upgraded to `/v1/shifts`
    /// (which itself never answers 404). Both pass once the operator fixes the token or
    /// upgrades the ledger; a close-out rejected for good would never be sent again.
    Retry(Answer),
}

/// Classifies the ledger's answer to `POST /v1/shifts` by the rules of
/// [`settle`](super::core::replay::settle) for everything but a 201, whose body must be a
/// [`ShiftRecorded`] (else [`ClientError::BadAnswer`]: the ledger may have recorded it, and
/// sending the same close-out again is safe), and 401 and 404, which are
/// [`ShiftAnswer::Retry`] (see there why).
pub fn classify_shift_answer(answer: Answer) -> Result<ShiftAnswer, ClientError> {
    match answer.status {
        201 => {
            let shift = serde_json::from_value(answer.body)
                .map_err(|e| ClientError::BadAnswer(format!("POST /v1/shifts: {e}")))?;
            return Ok(ShiftAnswer::Recorded {
                shift,
                replayed: answer.replayed,
            });
        }
        // Transient for a close-out, whatever the body says (a ledger without the route
        // answers a bare 404).
        401 | 404 => return Ok(ShiftAnswer::Retry(answer)),
        _ => {}
    }
    Ok(match settle(answer.status, answer.error_code()) {
        Settlement::Retry => ShiftAnswer::Retry(answer),
        // Acknowledged covers 2xx and stored business declines of money operations; a
        // close-out gets neither, so such an answer is not understood.
        Settlement::Acknowledged | Settlement::Rejected => ShiftAnswer::Rejected(answer),
    })
}

/// One entry of the card feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FeedCard {
    /// The card.
    pub card_uid: CardUid,
    /// Its balance at the ledger.
    pub balance_cents: Cents,
    /// `active` or `blocked`.
    pub status: String,
    /// Feed position.
    pub version: i64,
    /// What staff saw on the holder's ID (absent from ledgers before age restrictions).
    #[serde(default)]
    pub age_flag: Option<AgeFlag>,
    /// Voucher units on the card (absent from ledgers before vouchers).
    #[serde(default)]
    pub voucher_units: i64,
    /// The master key version the card was issued with; `null` or absent: UID only.
    #[serde(default)]
    pub key_version: Option<u8>,
}

/// One page of the card feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FeedPage {
    /// Changed cards, oldest change first.
    pub cards: Vec<FeedCard>,
    /// Where the next page starts.
    pub next_cursor: String,
}

/// `GET /v1/terminals/me`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TerminalMe {
    /// Id.
    pub terminal_id: String,
    /// Registered name.
    pub name: String,
    /// `bar` or `checkpoint`.
    pub kind: String,
    /// Point of sale.
    pub point_of_sale: String,
    /// The ledger's clock.
    pub server_time: String,
    /// The festival's top-up limits (absent from ledgers older than this terminal).
    #[serde(default)]
    pub limits: Option<super::journal::TopupLimits>,
}

/// A client bound to one ledger and one terminal token.
#[derive(Clone)]
pub struct LedgerClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
    timeout: Duration,
}

impl std::fmt::Debug for LedgerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerClient")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn classify(e: &reqwest::Error) -> ClientError {
    if e.is_connect() {
        ClientError::Unreachable(explain(e))
    } else if e.is_timeout() {
        ClientError::Timeout
    } else {
        ClientError::Broken(explain(e))
    }
}

/// The error and its causes, one after the other: reqwest's own message names only the URL,
/// the cause says why (refused, a certificate not trusted or expired, ...). A certificate
/// problem gets what to check.
fn explain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.contains("invalid peer certificate") {
        text.push_str(
            " (the ledger's TLS certificate is not trusted: check [ledger] ca_file and pin_ca \
             of the terminal's configuration, and the certificate's dates and names)",
        );
    }
    text
}

/// Whom the terminal trusts for the ledger's HTTPS certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerTls {
    /// `[ledger] ca_file`, for messages.
    pub ca_file: Option<std::path::PathBuf>,
    /// Its PEM text: a festival's private CA, trusted besides the system's roots.
    pub ca_pem: Vec<u8>,
    /// `[ledger] pin_ca`: trust only `ca_file`'s certificates, not the system's roots.
    pub pin_ca: bool,
}

/// How many certificates a PEM text holds; an error when one is not a certificate a TLS
/// client can trust (each is handed to a client as it will be when the terminal runs).
pub fn ca_certificates_in(pem: &[u8]) -> Result<usize, reqwest::Error> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem)?;
    let count = certificates.len();
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
    for c in certificates {
        builder = builder.add_root_certificate(c);
    }
    builder.build()?;
    Ok(count)
}

/// How long an idle connection to the ledger is kept for the next request. Below the
/// ledger's default `[server] header_read_timeout_ms` (10 s), which also closes idle kept-alive
/// connections: a request is then never sent on a connection the ledger is closing at that
/// moment (which would leave an online attempt in doubt for nothing). A new connection on the
/// festival network costs about a millisecond.
pub const POOL_IDLE_TIMEOUT_MS: u64 = 5_000;

impl LedgerClient {
    /// A client; `timeout_ms` bounds an online decision.
    pub fn new(base_url: &str, token: &str, timeout_ms: u64) -> Result<LedgerClient, ClientError> {
        LedgerClient::with_tls(base_url, token, timeout_ms, &LedgerTls::default())
    }

    /// The client a terminal's configuration describes: its ledger, token, online timeout
    /// and TLS trust.
    pub fn for_terminal(config: &TerminalConfig) -> Result<LedgerClient, ClientError> {
        LedgerClient::with_tls(
            &config.ledger_url,
            &config.token,
            config.timeout_ms,
            &config.ledger_tls,
        )
    }

    /// A client that trusts `tls` for an `https://` ledger: the system's roots, plus a
    /// festival's CA, or that CA alone when pinned.
    pub fn with_tls(
        base_url: &str,
        token: &str,
        timeout_ms: u64,
        tls: &LedgerTls,
    ) -> Result<LedgerClient, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .pool_idle_timeout(Duration::from_millis(POOL_IDLE_TIMEOUT_MS));
        if !tls.ca_pem.is_empty() {
            for ca in reqwest::Certificate::from_pem_bundle(&tls.ca_pem)
                .map_err(|e| ClientError::Unreachable(explain(&e)))?
            {
                builder = builder.add_root_certificate(ca);
            }
        }
        if tls.pin_ca {
            builder = builder.tls_built_in_root_certs(false);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Unreachable(explain(&e)))?;
        Ok(LedgerClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let exchange = async {
            let response = request
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let status = response.status().as_u16();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if response
                .content_length()
                .is_some_and(|n| n > ANSWER_BYTES_MAX as u64)
            {
                return Err(ClientError::BadAnswer("answer too large".into()));
            }
            let bytes = response.bytes().await.map_err(|e| classify(&e))?;
            if bytes.len() > ANSWER_BYTES_MAX {
                return Err(ClientError::BadAnswer("answer too large".into()));
            }
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| ClientError::BadAnswer(format!("not JSON ({e})")))?
            };
            Ok(Answer {
                status,
                body,
                replayed,
                etag,
            })
        };
        // One deadline for the whole exchange, headers and body alike.
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Sends one operation online, with the online decision timeout.
    pub async fn post_operation(&self, op: &Operation) -> Result<Answer, ClientError> {
        let (path, body) = match op {
            Operation::Order(r) => ("/v1/orders", serde_json::to_value(r)),
            Operation::Recharge(r) => ("/v1/recharges", serde_json::to_value(r)),
            Operation::Void(r) => ("/v1/voids", serde_json::to_value(r)),
            Operation::Return(r) => ("/v1/returns", serde_json::to_value(r)),
            Operation::VoucherGrant(r) => ("/v1/voucher-grants", serde_json::to_value(r)),
        };
        let body =
            body.map_err(|e| ClientError::BadAnswer(format!("cannot encode the request: {e}")))?;
        self.send(self.http.post(self.url(path)).json(&body), self.timeout)
            .await
    }

    /// Sends a shift close-out (`POST /v1/shifts`), with the online timeout like
    /// [`LedgerClient::post_operation`], and says what the answer means. A network failure is
    /// an `Err` ([`ClientError::is_in_doubt`] tells whether the ledger may have recorded it);
    /// either way the same close-out may be sent again: the ledger records it once.
    pub async fn post_shift(&self, body: &ShiftCloseout) -> Result<ShiftAnswer, ClientError> {
        let answer = self
            .send(
                self.http.post(self.url("/v1/shifts")).json(body),
                self.timeout,
            )
            .await?;
        classify_shift_answer(answer)
    }

    /// Replays operations through `POST /v1/batch`; each entry is a batch operation
    /// (`{"type": ..., ...}`). Returns one answer per operation, in order.
    pub async fn post_batch(&self, operations: &[Value]) -> Result<Vec<Answer>, ClientError> {
        let body = serde_json::json!({ "operations": operations });
        let answer = self
            .send(
                self.http.post(self.url("/v1/batch")).json(&body),
                Duration::from_millis(BULK_TIMEOUT_MS),
            )
            .await?;
        if answer.status != 200 {
            return Err(ClientError::BadAnswer(format!(
                "batch answered {}: {}",
                answer.status, answer.body
            )));
        }
        let results = answer.body["results"]
            .as_array()
            .filter(|r| r.len() == operations.len())
            .ok_or_else(|| {
                ClientError::BadAnswer("batch results do not match the operations".into())
            })?;
        Ok(results
            .iter()
            .map(|r| Answer {
                status: r["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0),
                body: r["body"].clone(),
                replayed: false,
                etag: None,
            })
            .collect())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let answer = self
            .send(
                self.http.get(self.url(path)),
                Duration::from_millis(BULK_TIMEOUT_MS),
            )
            .await?;
        if answer.status != 200 {
            return Err(ClientError::BadAnswer(format!(
                "GET {path} answered {}: {}",
                answer.status, answer.body
            )));
        }
        serde_json::from_value(answer.body)
            .map_err(|e| ClientError::BadAnswer(format!("GET {path}: {e}")))
    }

    /// One page of the card feed after `cursor` (empty: from the beginning).
    pub async fn card_feed(&self, cursor: &str, limit: u32) -> Result<FeedPage, ClientError> {
        let cursor: String = cursor.chars().filter(char::is_ascii_digit).collect();
        self.get_json(&format!("/v1/cards?since={cursor}&limit={limit}"))
            .await
    }

    /// `GET /v1/cards/{uid}`: the answer as it is (200 with the card, 404 unknown card).
    pub async fn card(&self, uid: &CardUid) -> Result<Answer, ClientError> {
        self.send(
            self.http.get(self.url(&format!("/v1/cards/{uid}"))),
            self.timeout,
        )
        .await
    }

    /// Who this token belongs to, and the ledger's clock.
    pub async fn me(&self) -> Result<TerminalMe, ClientError> {
        self.get_json("/v1/terminals/me").await
    }

    /// The catalog and its ETag, or `None` when it did not change since `etag`.
    pub async fn catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(Value, String)>, ClientError> {
        let mut request = self.http.get(self.url("/v1/catalog"));
        if let Some(tag) = etag {
            request = request.header("if-none-match", tag);
        }
        let answer = self
            .send(request, Duration::from_millis(BULK_TIMEOUT_MS))
            .await?;
        match answer.status {
            304 => Ok(None),
            200 => Ok(Some((answer.body, answer.etag.unwrap_or_default()))),
            other => Err(ClientError::BadAnswer(format!(
                "GET /v1/catalog answered {other}"
            ))),
        }
    }

    /// The staff feed (`{"staff": [...]}`), for offline login.
    pub async fn staff(&self) -> Result<Value, ClientError> {
        self.get_json("/v1/staff").await
    }

    /// Reports this terminal's state (`POST /v1/terminals/me/status`).
    pub async fn post_status(&self, report: &TerminalStatusReport) -> Result<Answer, ClientError> {
        self.send(
            self.http
                .post(self.url("/v1/terminals/me/status"))
                .json(report),
            self.timeout,
        )
        .await
    }

    /// `PUT /v1/cards/{uid}/key`: records that the card was issued with `key_version` (a
    /// checkpoint's token). The answer as it is; sending it again changes nothing.
    pub async fn record_card_key(
        &self,
        uid: &CardUid,
        key_version: u8,
    ) -> Result<Answer, ClientError> {
        let body = serde_json::json!({ "key_version": key_version });
        self.send(
            self.http
                .put(self.url(&format!("/v1/cards/{uid}/key")))
                .json(&body),
            self.timeout,
        )
        .await
    }

    /// Uploads scans (`{"scans": [...]}`).
    pub async fn upload_scans(&self, scans: &[Value]) -> Result<Answer, ClientError> {
        let body = serde_json::json!({ "scans": scans });
        self.send(
            self.http.post(self.url("/v1/scans")).json(&body),
            Duration::from_millis(BULK_TIMEOUT_MS),
        )
        .await
    }
}

/// What the tap flow and the sync worker need of the ledger: the seam between them and the
/// network. [`LedgerClient`] is the real one; tests put simulated faults (answers lost after
/// the ledger committed, timeouts, requests delivered twice) behind it.
pub trait Transport: Sync {
    /// Sends one operation online; see [`LedgerClient::post_operation`].
    fn post_operation(
        &self,
        op: &Operation,
    ) -> impl std::future::Future<Output = Result<Answer, ClientError>> + Send;

    /// Replays operations; see [`LedgerClient::post_batch`].
    fn post_batch(
        &self,
        operations: &[Value],
    ) -> impl std::future::Future<Output = Result<Vec<Answer>, ClientError>> + Send;

    /// One page of the card feed; see [`LedgerClient::card_feed`].
    fn card_feed(
        &self,
        cursor: &str,
        limit: u32,
    ) -> impl std::future::Future<Output = Result<FeedPage, ClientError>> + Send;
}

impl Transport for LedgerClient {
    async fn post_operation(&self, op: &Operation) -> Result<Answer, ClientError> {
        LedgerClient::post_operation(self, op).await
    }

    async fn post_batch(&self, operations: &[Value]) -> Result<Vec<Answer>, ClientError> {
        LedgerClient::post_batch(self, operations).await
    }

    async fn card_feed(&self, cursor: &str, limit: u32) -> Result<FeedPage, ClientError> {
        LedgerClient::card_feed(self, cursor, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: Value, replayed: bool) -> Answer {
        Answer {
            status,
            body,
            replayed,
            etag: None,
        }
    }

    fn error(status: u16, code: &str) -> Answer {
        answer(
            status,
            json!({ "error": { "code": code, "message": "m" } }),
            false,
        )
    }

    fn kind(a: &Result<ShiftAnswer, ClientError>) -> &'static str {
        match a {
            Ok(ShiftAnswer::Recorded {
                replayed: false, ..
            }) => "recorded",
            Ok(ShiftAnswer::Recorded { replayed: true, .. }) => "replayed",
            Ok(ShiftAnswer::Rejected(_)) => "rejected",
            Ok(ShiftAnswer::Retry(_)) => "retry",
            Err(e) if e.is_in_doubt() => "in doubt",
            Err(_) => "error",
        }
    }

    #[test]
    fn shift_answers_are_recorded_rejected_or_retried() {
        let recorded = json!({
            "shift_id": "01890a5d-ac96-774b-bcce-b302099a8057",
            "client_request_id": "5f0c6f7e-1d1a-4a39-9d7e-3b1f1c2d0001",
            "terminal": "cp-1", "staff_id": "s-3",
            "cash_cents": 42000, "card_cents": 15000, "count": 37,
            "counted_cash_cents": 41500, "difference_cents": -500,
            "recorded_at": "2026-07-02T02:00:01.000Z",
        });
        let cases = [
            (answer(201, recorded.clone(), false), "recorded"),
            (answer(201, recorded.clone(), true), "replayed"),
            (answer(201, json!({ "shift_id": 1 }), false), "in doubt"),
            (answer(200, recorded.clone(), false), "rejected"),
            (error(400, "INVALID_REQUEST"), "rejected"),
            (error(403, "FORBIDDEN"), "rejected"),
            (error(413, "PAYLOAD_TOO_LARGE"), "rejected"),
            (error(422, "IDEMPOTENCY_KEY_REUSED"), "rejected"),
            (error(422, "INVALID_REQUEST"), "rejected"),
            // The token was rotated at the ledger: passes once the terminal has the new one.
            (error(401, "UNAUTHORIZED"), "retry"),
            (answer(401, Value::Null, false), "retry"),
            // A ledger not yet upgraded to /v1/shifts (axum's bare 404), or any other 404:
            // the close-out endpoint has no 404 of its own.
            (answer(404, Value::Null, false), "retry"),
            (error(404, "NOT_FOUND"), "retry"),
            (error(404, "CARD_NOT_FOUND"), "retry"),
            (error(402, "INSUFFICIENT_FUNDS"), "rejected"),
            (error(409, "OPERATION_VOIDED"), "rejected"),
            (error(409, "DUPLICATE_REQUEST"), "retry"),
            (error(500, "SERVER_ERROR"), "retry"),
            (error(503, "DATABASE_ERROR"), "retry"),
            (answer(502, Value::Null, false), "retry"),
            (answer(429, Value::Null, false), "retry"),
        ];
        for (a, expected) in cases {
            let what = format!("{} {}", a.status, a.body);
            assert_eq!(kind(&classify_shift_answer(a)), expected, "{what}");
        }
        let Ok(ShiftAnswer::Recorded { shift, .. }) =
            classify_shift_answer(answer(201, recorded.clone(), false))
        else {
            panic!("a 201 is recorded");
        };
        assert_eq!(shift.difference_cents, Cents::new(-500));
        assert_eq!(shift.terminal, "cp-1");
    }
}
