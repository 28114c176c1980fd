//! The terminal's HTTP client for the ledger: the one place that knows URLs and JSON of
//! the ledger API on the terminal side.
//!
//! The distinction that matters for money is what a failure means:
//! [`ClientError::is_in_doubt`] is true when the request may have reached the ledger (a
//! timeout, a connection cut after sending): the ledger may have applied it, so the caller
//! must void it by its `client_request_id` before deciding again. A connection that could
//! not be opened never carried the request.

use crate::domain::{CardUid, Cents};
use crate::ledger::model::Operation;
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
        ClientError::Unreachable(e.to_string())
    } else if e.is_timeout() {
        ClientError::Timeout
    } else {
        ClientError::Broken(e.to_string())
    }
}

impl LedgerClient {
    /// A client; `timeout_ms` bounds an online decision.
    pub fn new(base_url: &str, token: &str, timeout_ms: u64) -> Result<LedgerClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
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
        };
        let body =
            body.map_err(|e| ClientError::BadAnswer(format!("cannot encode the request: {e}")))?;
        self.send(self.http.post(self.url(path)).json(&body), self.timeout)
            .await
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
