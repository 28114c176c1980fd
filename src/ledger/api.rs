//! The HTTP API (axum): parsing, authentication, error shapes, request ids.
//!
//! Architecture invariant: only this module knows HTTP and parses request JSON. Handlers
//! turn raw bytes into validated [`Operation`]s and hand them to the store; they decide no
//! business rule themselves beyond the terminal-kind check that must come before parsing.

use super::rules::{self, Action};
use super::store::{LedgerStore, StoreError};
use crate::domain::{CardUid, ClientRequestId};
use crate::ledger::caller::Terminal;
use crate::ledger::outcome::{Decided, Outcome};
use crate::protocol::api::{
    ApiError, BATCH_OPERATIONS_MAX, FEED_LIMIT_DEFAULT, FEED_LIMIT_MAX, FieldError, Operation,
    SCANS_MAX, Scan, ShiftCloseout, format_time,
};
use crate::protocol::codes::ErrorCode;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// Largest request body, except batches and scan uploads.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Largest batch or scan upload body.
pub const BATCH_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Longest caller-supplied `X-Request-Id` that is echoed.
pub const REQUEST_ID_LEN_MAX: usize = 128;
/// Longest bearer token looked up at all.
pub const TOKEN_LEN_MAX: usize = 256;

/// How long an authenticated token is trusted without asking the database again. A revoked
/// terminal is refused at most this long after the revocation.
pub const AUTH_CACHE_TTL_MS: u64 = 5_000;
/// Tokens remembered at most; the cache is emptied when full.
pub const AUTH_CACHE_ENTRIES_MAX: usize = 4096;

/// Recently authenticated tokens, keyed by their SHA-256, so that a busy terminal costs one
/// database read per [`AUTH_CACHE_TTL_MS`] instead of one per request.
#[derive(Default)]
pub struct AuthCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], (Terminal, Instant)>>,
}

impl AuthCache {
    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn get(&self, token: &str, now: Instant) -> Option<Terminal> {
        let entries = self.entries.lock().ok()?;
        let (terminal, at) = entries.get(&Self::key(token))?;
        (now.duration_since(*at).as_millis() < u128::from(AUTH_CACHE_TTL_MS))
            .then(|| terminal.clone())
    }

    fn put(&self, token: &str, terminal: Terminal, now: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= AUTH_CACHE_ENTRIES_MAX {
                entries.clear();
            }
            entries.insert(Self::key(token), (terminal, now));
        }
    }
}

/// What every handler shares.
pub struct AppState<S> {
    /// The database.
    pub store: S,
    /// The festival's currency, for the catalog.
    pub currency: Arc<str>,
    /// Recently seen terminal tokens.
    pub auth_cache: Arc<AuthCache>,
    /// The top-up limits, which checkpoints also check offline (`GET /v1/terminals/me`).
    pub limits: crate::ledger::rules::Limits,
    /// Stripe's webhook secrets and timestamp tolerance.
    pub stripe: Arc<StripeSettings>,
}

/// How Stripe's webhook deliveries are verified.
#[derive(Clone, Default)]
pub struct StripeSettings {
    /// The endpoint's signing secrets (several during a rotation). Never logged.
    pub secrets: Vec<String>,
    /// Oldest accepted signature timestamp, in seconds.
    pub tolerance_s: i64,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("secrets", &format!("<{} secrets>", self.secrets.len()))
            .field("tolerance_s", &self.tolerance_s)
            .finish()
    }
}

impl<S: LedgerStore> AppState<S> {
    /// State over a store.
    pub fn new(
        store: S,
        currency: &str,
        limits: crate::ledger::rules::Limits,
        stripe: StripeSettings,
    ) -> AppState<S> {
        AppState {
            store,
            currency: Arc::from(currency),
            auth_cache: Arc::default(),
            limits,
            stripe: Arc::new(stripe),
        }
    }
}

impl<S: Clone> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: self.store.clone(),
            currency: Arc::clone(&self.currency),
            auth_cache: Arc::clone(&self.auth_cache),
            limits: self.limits,
            stripe: Arc::clone(&self.stripe),
        }
    }
}

/// This request's id: the caller's `X-Request-Id`, or a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// A short word for the log line: what became of the request.
#[derive(Debug, Clone, Copy)]
struct OutcomeTag(&'static str);

/// Builds the router with every route of the contract.
pub fn router<S: LedgerStore>(state: AppState<S>) -> Router {
    let large = DefaultBodyLimit::max(BATCH_BODY_LIMIT_BYTES);
    Router::new()
        .route("/v1/orders", post(post_order::<S>))
        .route("/v1/recharges", post(post_recharge::<S>))
        .route("/v1/voids", post(post_void::<S>))
        .route("/v1/shifts", post(post_shift::<S>))
        .route("/v1/webhooks/stripe", post(post_stripe_webhook::<S>))
        .route("/v1/batch", post(post_batch::<S>).layer(large))
        .route("/v1/scans", post(post_scans::<S>).layer(large))
        .route("/v1/cards", get(get_card_feed::<S>))
        .route("/v1/cards/{uid}", get(get_card::<S>))
        .route("/v1/catalog", get(get_catalog::<S>))
        .route("/v1/staff", get(get_staff::<S>))
        .route("/v1/terminals/me", get(get_me::<S>))
        .route("/v1/openapi.json", get(get_openapi))
        .route("/health", get(get_health))
        .route("/ready", get(get_ready::<S>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= REQUEST_ID_LEN_MAX && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Gives every request an id, echoes it, and logs one line per request.
async fn request_context(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id: Arc<str> = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string().into(), Arc::from);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(Arc::clone(&id)));
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let outcome = response
        .extensions()
        .get::<OutcomeTag>()
        .map_or("", |t| t.0);
    let status = response.status().as_u16();
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "cashless::ledger::request",
        request_id = %id, %method, route, status, outcome, duration_us,
        "request"
    );
    response
}

fn error_response(err: &ApiError, request_id: &RequestId) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(err.body(&request_id.0))).into_response();
    r.extensions_mut().insert(OutcomeTag(err.code.as_str()));
    r
}

fn respond(request_id: &RequestId, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| error_response(&e, request_id))
}

fn json_text_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The HTTP status of an operation's outcome: 201 for an approval, the code's status for a
/// decline. With the outcome's serde encoding as the body, this is the whole answer, and a
/// replay rebuilds the first answer byte for byte.
pub fn outcome_status(decided: &Decided) -> u16 {
    match decided {
        Decided::Approved(_) => 201,
        Decided::Declined(d) => d.error.http_status(),
    }
}

fn answer_not_written(e: &serde_json::Error) -> ApiError {
    tracing::error!(error = %e, "cannot write an answer");
    ApiError::new(ErrorCode::ServerError, "internal error; retry later")
}

fn outcome_response(o: Outcome) -> Result<Response, ApiError> {
    let tag = match (o.replayed, &o.decided) {
        (true, _) => "replayed",
        (false, Decided::Approved(_)) => "applied",
        (false, Decided::Declined(_)) => "declined",
    };
    let body = serde_json::to_string(&o.decided).map_err(|e| answer_not_written(&e))?;
    let mut r = json_text_response(outcome_status(&o.decided), body);
    if o.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r.extensions_mut().insert(OutcomeTag(tag));
    Ok(r)
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "storage failure");
    match e {
        StoreError::Unavailable(_) => ApiError::new(
            ErrorCode::DatabaseError,
            "the database is unavailable; retry later",
        ),
        _ => ApiError::new(ErrorCode::ServerError, "internal error; retry later"),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

async fn authenticate<S: LedgerStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
) -> Result<Terminal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <terminal token>"))?;
    // The scheme is case-insensitive (RFC 9110, section 11.1); the token is not.
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty() && t.len() <= TOKEN_LEN_MAX)
        .ok_or_else(|| {
            unauthorized("malformed Authorization header; expected Bearer <terminal token>")
        })?;
    let now = Instant::now();
    if let Some(terminal) = state.auth_cache.get(token, now) {
        return Ok(terminal);
    }
    let terminal = state
        .store
        .authenticate(token)
        .await
        .map_err(store_error)?
        .ok_or_else(|| unauthorized("unknown or revoked terminal token"))?;
    state.auth_cache.put(token, terminal.clone(), now);
    Ok(terminal)
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::with_details(
                ErrorCode::PayloadTooLarge,
                format!("the request body is larger than {limit} bytes"),
                json!({ "limit_bytes": limit }),
            )
        } else {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the request body: {rejection}"),
            )
        }
    })
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let rest = &message[start..];
    rest.find('`').map(|end| &rest[..end])
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::new(
            ErrorCode::InvalidRequest,
            format!("malformed JSON: {inner}"),
        );
    }
    let path = e.path().to_string();
    let base = if path == "." { String::new() } else { path };
    let message = inner.to_string();
    let named = backticked(&message, "missing field `")
        .or_else(|| backticked(&message, "unknown field `"))
        .or_else(|| backticked(&message, "duplicate field `"));
    let field = match named {
        Some(name) if !base.ends_with(name) => {
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            }
        }
        _ => base,
    };
    if field.is_empty() {
        return ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request: {message}"),
        );
    }
    ApiError::invalid_field(FieldError { field, message })
}

/// Walks a JSON document and fails on the first object that repeats a key. A body that two
/// parsers could read differently (first value or last value wins) is refused, not guessed.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate field `{key}`"
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

/// Parses a whole body into `T`, naming the offending field on failure.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut check = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, NoDuplicateKeys>(&mut check).map_err(path_error)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end()
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn parse_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// Which money operation an endpoint or batch entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Order,
    Recharge,
    Void,
}

impl OpKind {
    fn action(self) -> Action {
        match self {
            OpKind::Order => Action::Order,
            OpKind::Recharge => Action::Recharge,
            OpKind::Void => Action::Void,
        }
    }
}

/// Parses a body straight into its request type: one pass. The derived `Deserialize` of
/// every request struct refuses unknown and repeated fields itself.
fn parse_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The fast path; only a refused body pays for tracking the path to the offending field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end()
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn parse_operation(kind: OpKind, bytes: &[u8]) -> Result<Operation, ApiError> {
    let op = match kind {
        OpKind::Order => Operation::Order(parse_typed(bytes)?),
        OpKind::Recharge => Operation::Recharge(parse_typed(bytes)?),
        OpKind::Void => Operation::Void(parse_typed(bytes)?),
    };
    check_ranges(&op)?;
    Ok(op)
}

fn check_ranges(op: &Operation) -> Result<(), ApiError> {
    match op {
        Operation::Order(r) => r.validate(),
        Operation::Recharge(r) => r.validate(),
        Operation::Void(r) => r.validate(),
    }
    .map_err(ApiError::invalid_field)
}

fn validated(kind: OpKind, value: Value) -> Result<Operation, ApiError> {
    let op = match kind {
        OpKind::Order => Operation::Order(parse_value(value)?),
        OpKind::Recharge => Operation::Recharge(parse_value(value)?),
        OpKind::Void => Operation::Void(parse_value(value)?),
    };
    check_ranges(&op)?;
    Ok(op)
}

fn check_idempotency_header(headers: &HeaderMap, crid: ClientRequestId) -> Result<(), ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(());
    };
    let matches = value
        .to_str()
        .ok()
        .and_then(|v| ClientRequestId::parse(v.trim()).ok())
        == Some(crid);
    if matches {
        Ok(())
    } else {
        Err(ApiError::invalid_field(FieldError {
            field: "Idempotency-Key".into(),
            message: "must equal the body's client_request_id".into(),
        }))
    }
}

async fn post_operation<S: LedgerStore>(
    state: &AppState<S>,
    request_id: &RequestId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: OpKind,
) -> Result<Response, ApiError> {
    let terminal = authenticate(state, headers).await?;
    rules::check_terminal_kind(terminal.kind, kind.action())?;
    let bytes = body_bytes(body, BODY_LIMIT_BYTES)?;
    let op = parse_operation(kind, &bytes)?;
    check_idempotency_header(headers, op.client_request_id())?;
    let outcome = state
        .store
        .apply(terminal, request_id.0.to_string(), vec![op])
        .await
        .map_err(store_error)?
        .pop()
        .ok_or_else(|| ApiError::new(ErrorCode::ServerError, "no outcome"))?;
    outcome_response(outcome)
}

async fn post_order<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        &rid,
        post_operation(&state, &rid, &headers, body, OpKind::Order).await,
    )
}

async fn post_recharge<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        &rid,
        post_operation(&state, &rid, &headers, body, OpKind::Recharge).await,
    )
}

async fn post_void<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        &rid,
        post_operation(&state, &rid, &headers, body, OpKind::Void).await,
    )
}

/// A shift close-out's body, parsed and checked as `POST /v1/shifts` does (also for the
/// close-outs of a journal export), or the 400 it deserves.
pub fn parse_shift_closeout(bytes: &[u8]) -> Result<ShiftCloseout, ApiError> {
    let closeout: ShiftCloseout = parse_typed(bytes)?;
    closeout.validate().map_err(ApiError::invalid_field)?;
    Ok(closeout)
}

/// `POST /v1/shifts`: any terminal kind; the staff check and idempotency are the store's.
async fn shift<S: LedgerStore>(
    state: &AppState<S>,
    request_id: &RequestId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let terminal = authenticate(state, headers).await?;
    let bytes = body_bytes(body, BODY_LIMIT_BYTES)?;
    let closeout = parse_shift_closeout(&bytes)?;
    check_idempotency_header(headers, closeout.client_request_id)?;
    let outcome = state
        .store
        .record_shift(terminal, request_id.0.to_string(), closeout)
        .await
        .map_err(store_error)?;
    outcome_response(outcome)
}

async fn post_shift<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&rid, shift(&state, &rid, &headers, body).await)
}

/// `POST /v1/webhooks/stripe`: the raw body is verified before anything reads it; then the
/// event is applied by the store (once per event id, and per checkout session). 200 only
/// after the transaction committed; 400 for a bad signature or something that is not an
/// event (nothing written); 5xx on database trouble, so that Stripe retries.
async fn stripe_webhook<S: LedgerStore>(
    state: &AppState<S>,
    request_id: &RequestId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::ledger::stripe::{SignatureError, parse_event, verify_signature};
    let bytes = body_bytes(body, BODY_LIMIT_BYTES)?;
    if state.stripe.secrets.is_empty() {
        // A configuration problem: 500 makes Stripe retry until the secret is set.
        tracing::error!(
            "a Stripe webhook arrived but no secret is configured ([stripe] webhook_secrets or CASHLESS_STRIPE_WEBHOOK_SECRETS)"
        );
        return Err(ApiError::new(
            ErrorCode::ServerError,
            "the webhook secret is not configured",
        ));
    }
    let header = match headers.get("stripe-signature").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => {
            return Err(signature_refused(&SignatureError::Malformed(
                "not visible ASCII",
            )));
        }
    };
    let now_unix = chrono::Utc::now().timestamp();
    verify_signature(
        header,
        &bytes,
        &state.stripe.secrets,
        now_unix,
        state.stripe.tolerance_s,
    )
    .map_err(|e| signature_refused(&e))?;
    let event = parse_event(&bytes, &state.currency).map_err(|e| {
        ApiError::invalid_field(FieldError {
            field: "body".into(),
            message: e.to_string(),
        })
    })?;
    let outcome = state
        .store
        .apply_stripe(request_id.0.to_string(), event)
        .await
        .map_err(store_error)?;
    let mut body = serde_json::to_value(&outcome).map_err(|e| {
        tracing::error!(error = %e, "cannot write a webhook answer");
        ApiError::new(ErrorCode::ServerError, "internal error; retry later")
    })?;
    if let Some(map) = body.as_object_mut() {
        map.insert("received".into(), Value::Bool(true));
    }
    let mut response = json_text_response(200, body.to_string());
    response
        .extensions_mut()
        .insert(OutcomeTag(outcome.outcome));
    Ok(response)
}

fn signature_refused(e: &crate::ledger::stripe::SignatureError) -> ApiError {
    tracing::warn!(reason = %e, "a Stripe webhook with a bad signature was refused");
    ApiError::invalid_field(FieldError {
        field: "Stripe-Signature".into(),
        message: e.to_string(),
    })
}

async fn post_stripe_webhook<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&rid, stripe_webhook(&state, &rid, &headers, body).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope {
    /// Kept raw so that each operation is checked (duplicate keys included) on its own.
    operations: Vec<Box<serde_json::value::RawValue>>,
}

/// Parses one operation of a batch (or of a terminal's journal export) from its JSON text:
/// `{"type": "order" | "recharge" | "void", ...the operation's body...}`. Repeated keys,
/// unknown fields and out-of-range values get the 400 they deserve.
pub fn parse_batch_entry(raw: &str) -> Result<Operation, ApiError> {
    parse_json::<Value>(raw.as_bytes()).and_then(batch_entry)
}

/// Splits a batch entry into its kind and body, or the 400 it deserves.
fn batch_entry(value: Value) -> Result<Operation, ApiError> {
    let Value::Object(mut map) = value else {
        return Err(ApiError::invalid_field(FieldError {
            field: "type".into(),
            message: "an operation is a JSON object".into(),
        }));
    };
    let kind = match map.remove("type") {
        Some(Value::String(t)) if t == "order" => OpKind::Order,
        Some(Value::String(t)) if t == "recharge" => OpKind::Recharge,
        Some(Value::String(t)) if t == "void" => OpKind::Void,
        _ => {
            return Err(ApiError::invalid_field(FieldError {
                field: "type".into(),
                message: "must be order, recharge or void".into(),
            }));
        }
    };
    validated(kind, Value::Object(map))
}

async fn batch<S: LedgerStore>(
    state: &AppState<S>,
    request_id: &RequestId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let terminal = authenticate(state, headers).await?;
    let bytes = body_bytes(body, BATCH_BODY_LIMIT_BYTES)?;
    // The envelope's own keys are checked by its derived Deserialize; each operation's by
    // `parse_json` below, so that one bad operation gets its own 400.
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let envelope: BatchEnvelope = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end()
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("malformed JSON: {e}")))?;
    if envelope.operations.is_empty() || envelope.operations.len() > BATCH_OPERATIONS_MAX {
        return Err(ApiError::invalid_field(FieldError {
            field: "operations".into(),
            message: format!("must hold 1 to {BATCH_OPERATIONS_MAX} operations"),
        }));
    }
    // Entries that do not parse get their 400 in place; the others go to the store together.
    let mut slots: Vec<(Option<String>, Result<usize, ApiError>)> =
        Vec::with_capacity(envelope.operations.len());
    let mut valid = Vec::new();
    for raw in envelope.operations {
        let crid = serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|v| v.get("client_request_id")?.as_str().map(str::to_owned));
        match parse_batch_entry(raw.get()) {
            Ok(op) => {
                slots.push((crid, Ok(valid.len())));
                valid.push(op);
            }
            Err(e) => slots.push((crid, Err(e))),
        }
    }
    let outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        state
            .store
            .apply(terminal, request_id.0.to_string(), valid)
            .await
            .map_err(store_error)?
    };
    let mut results = Vec::with_capacity(slots.len());
    for (crid, slot) in slots {
        let (status, body) = match slot {
            Ok(i) => {
                let o = outcomes
                    .get(i)
                    .ok_or_else(|| ApiError::new(ErrorCode::ServerError, "no outcome"))?;
                let body = serde_json::to_value(&o.decided).map_err(|e| answer_not_written(&e))?;
                (outcome_status(&o.decided), body)
            }
            Err(e) => (e.http_status(), e.body(&request_id.0)),
        };
        results.push(json!({ "client_request_id": crid, "status": status, "body": body }));
    }
    let mut r = (StatusCode::OK, axum::Json(json!({ "results": results }))).into_response();
    r.extensions_mut().insert(OutcomeTag("batch"));
    Ok(r)
}

async fn post_batch<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&rid, batch(&state, &rid, &headers, body).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScansEnvelope {
    scans: Vec<Scan>,
}

async fn post_scans<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let terminal = authenticate(&state, &headers).await?;
        let bytes = body_bytes(body, BATCH_BODY_LIMIT_BYTES)?;
        let envelope: ScansEnvelope = parse_json(&bytes)?;
        if envelope.scans.is_empty() || envelope.scans.len() > SCANS_MAX {
            return Err(ApiError::invalid_field(FieldError {
                field: "scans".into(),
                message: format!("must hold 1 to {SCANS_MAX} scans"),
            }));
        }
        for (i, s) in envelope.scans.iter().enumerate() {
            s.validate(i).map_err(ApiError::invalid_field)?;
        }
        let receipt = state
            .store
            .record_scans(terminal, envelope.scans)
            .await
            .map_err(store_error)?;
        Ok(axum::Json(receipt).into_response())
    }
    .await;
    respond(&rid, result)
}

async fn get_card<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        let Path(uid) = uid.map_err(|e| {
            ApiError::invalid_field(FieldError {
                field: "uid".into(),
                message: e.body_text(),
            })
        })?;
        let uid = CardUid::parse(&uid).map_err(|e| {
            ApiError::invalid_field(FieldError {
                field: "uid".into(),
                message: e.to_string(),
            })
        })?;
        let card = state
            .store
            .card(uid)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CardNotFound,
                    "the ledger has never seen this card",
                )
            })?;
        Ok(axum::Json(json!({
            "card_uid": card.card_uid,
            "balance_cents": card.balance_cents,
            "status": card.status,
            "updated_at": card.updated_at,
        }))
        .into_response())
    }
    .await;
    respond(&rid, result)
}

/// Parses the card feed's query: `since` (a cursor this ledger issued, or empty) and `limit`.
fn feed_query(raw: Option<&str>) -> Result<(i64, u32), ApiError> {
    let mut since = 0i64;
    let mut limit = FEED_LIMIT_DEFAULT;
    let bad = |field: &str, message: &str| {
        ApiError::invalid_field(FieldError {
            field: field.into(),
            message: message.into(),
        })
    };
    let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.as_ref();
        match key.as_ref() {
            "since" => {
                since = if value.is_empty() {
                    0
                } else {
                    Some(value)
                        .filter(|v| digits(v))
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| bad("since", "a cursor returned as next_cursor, or empty"))?
                };
            }
            "limit" => {
                limit = Some(value)
                    .filter(|v| digits(v))
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|v| (1..=FEED_LIMIT_MAX).contains(v))
                    .ok_or_else(|| bad("limit", "a number from 1 to 10000"))?;
            }
            _ => {}
        }
    }
    Ok((since, limit))
}

async fn get_card_feed<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        let (since, limit) = feed_query(query.as_deref())?;
        let page = state.store.card_feed(since, limit).await.map_err(store_error)?;
        let cards: Vec<Value> = page
            .cards
            .iter()
            .map(|c| {
                json!({ "card_uid": c.card_uid, "balance_cents": c.balance_cents, "status": c.status, "version": c.version })
            })
            .collect();
        Ok(axum::Json(json!({ "cards": cards, "next_cursor": page.next_version.to_string() })).into_response())
    }
    .await;
    respond(&rid, result)
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

async fn get_catalog<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let terminal = authenticate(&state, &headers).await?;
        let products = state
            .store
            .catalog(terminal.point_of_sale.clone())
            .await
            .map_err(store_error)?;
        let body = json!({
            "point_of_sale": terminal.point_of_sale,
            "currency": &*state.currency,
            "products": products,
        })
        .to_string();
        let digest = Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        let etag_value = HeaderValue::from_str(&etag)
            .map_err(|_| ApiError::new(ErrorCode::ServerError, "bad etag"))?;
        if etag_matches(&headers, &etag) {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
        }
        let mut r = json_text_response(200, body);
        r.headers_mut().insert(header::ETAG, etag_value);
        Ok(r)
    }
    .await;
    respond(&rid, result)
}

async fn get_staff<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        let staff = state.store.staff().await.map_err(store_error)?;
        Ok(axum::Json(json!({ "staff": staff })).into_response())
    }
    .await;
    respond(&rid, result)
}

async fn get_me<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let t = authenticate(&state, &headers).await?;
        Ok(axum::Json(json!({
            "terminal_id": t.terminal_id,
            "name": t.name,
            "kind": t.kind,
            "point_of_sale": t.point_of_sale,
            "server_time": format_time(chrono::Utc::now()),
            "limits": {
                "recharge_max_cents": state.limits.recharge_max,
                "balance_max_cents": state.limits.balance_max,
            },
        }))
        .into_response())
    }
    .await;
    respond(&rid, result)
}

async fn get_openapi() -> Response {
    let document = super::openapi::json();
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

async fn get_health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn get_ready<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => error_response(&store_error(e), &rid),
    }
}

async fn not_found(Extension(rid): Extension<RequestId>) -> Response {
    error_response(&ApiError::new(ErrorCode::NotFound, "no such route"), &rid)
}

async fn method_not_allowed(Extension(rid): Extension<RequestId>) -> Response {
    error_response(
        &ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        &rid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::api::OrderRequest;

    #[test]
    fn parse_errors_name_the_field() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"items": [{"quantity": "x"}]}"#,
                Some("items[0].quantity"),
            ),
            (r#"{"total_cents": 4.5}"#, Some("total_cents")),
            (
                r#"{"client_request_id": "nope"}"#,
                Some("client_request_id"),
            ),
            (r#"{"bogus": 1}"#, Some("bogus")),
            (r#"{}"#, Some("client_request_id")),
            (r#"{"mode": "online", "mode": "offline"}"#, Some("mode")),
            (r#"{"mode": null}"#, Some("mode")),
            (r#"{"mode": "sideways"}"#, Some("mode")),
            (
                r#"{"items": [{"quantity": 1, "quantity": 2}]}"#,
                Some("items[0].quantity"),
            ),
            (r#"{"#, None),
        ];
        for (text, field) in cases {
            let err = parse_json::<OrderRequest>(text.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            let got = err
                .details
                .as_ref()
                .and_then(|d| d["field"].as_str().map(str::to_owned));
            assert_eq!(got.as_deref(), *field, "{text}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert!(parse_json::<Value>(b"{} x").is_err());
        assert!(parse_json::<Value>(b" {} ").is_ok());
    }

    #[test]
    fn feed_query_bounds() {
        assert_eq!(feed_query(None).unwrap(), (0, FEED_LIMIT_DEFAULT));
        assert_eq!(feed_query(Some("since=&limit=5")).unwrap(), (0, 5));
        assert_eq!(
            feed_query(Some("since=42")).unwrap(),
            (42, FEED_LIMIT_DEFAULT)
        );
        assert_eq!(feed_query(Some("since=&limit=%31%30")).unwrap(), (0, 10));
        for bad in [
            "since=-1",
            "since=abc",
            "limit=0",
            "limit=10001",
            "limit=x",
            "limit=+5",
            "%6Cimit=0",
        ] {
            assert!(feed_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids_are_bounded_visible_ascii() {
        assert!(valid_request_id("abc-123"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"x".repeat(129)));
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: Value = serde_json::from_str(super::super::openapi::json()).unwrap();
        for path in [
            "/v1/orders",
            "/v1/recharges",
            "/v1/voids",
            "/v1/shifts",
            "/v1/batch",
            "/v1/cards",
            "/v1/cards/{uid}",
            "/v1/catalog",
            "/v1/staff",
            "/v1/scans",
            "/v1/terminals/me",
            "/v1/webhooks/stripe",
            "/v1/openapi.json",
            "/health",
            "/ready",
        ] {
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} missing from the OpenAPI document"
            );
        }
    }
}
