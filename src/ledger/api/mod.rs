//! The HTTP API (axum): the router and the glue every request passes through.
//!
//! Architecture invariant: only this module knows HTTP and parses request JSON. Handlers
//! turn raw bytes into validated [`Operation`](crate::protocol::api::Operation)s and hand
//! them to the store; they decide no business rule themselves beyond the terminal-kind check
//! that must come before parsing.
//!
//! One job per file:
//! - this file: the shared state, the router, request ids and the log line, authentication,
//!   and the system routes (health, ready, the OpenAPI document, 404 and 405);
//! - [`parse`]: bodies into validated requests, every 400 naming its field;
//! - [`errors`]: errors and store outcomes into responses;
//! - [`ops`]: the money-changing routes (orders, top-ups, voids, shifts, batches);
//! - [`feeds`]: what terminals read and upload besides money (cards, card feed, catalog,
//!   staff, `terminals/me`, scans);
//! - [`stripe`]: the Stripe webhook.

mod errors;
mod feeds;
mod ops;
mod parse;
mod stripe;

pub use errors::outcome_status;
pub use parse::{parse_batch_entry, parse_shift_closeout};

use super::metrics::LedgerMetrics;
use super::store::LedgerStore;
use crate::ledger::caller::Terminal;
use crate::protocol::api::ApiError;
use crate::protocol::codes::ErrorCode;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use errors::{error_response, store_error, unauthorized};
use parse::OpKind;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Largest request body, except batches and scan uploads.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Largest batch or scan upload body.
pub const BATCH_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Longest caller-supplied `X-Request-Id` that is echoed.
pub const REQUEST_ID_LEN_MAX: usize = 128;
/// Longest bearer token looked up at all.
pub const TOKEN_LEN_MAX: usize = 256;

/// What every handler shares.
pub struct AppState<S> {
    /// The database.
    pub store: S,
    /// The festival's currency, for the catalog.
    pub currency: Arc<str>,
    /// The top-up limits, which checkpoints also check offline (`GET /v1/terminals/me`).
    pub limits: crate::ledger::rules::Limits,
    /// Stripe's webhook secrets and timestamp tolerance.
    pub stripe: Arc<StripeSettings>,
    /// What `GET /metrics` reports.
    pub metrics: Arc<LedgerMetrics>,
    /// The headquarters pages' settings.
    pub hq: crate::ledger::hq::HqSettings,
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
            limits,
            stripe: Arc::new(stripe),
            metrics: Arc::new(LedgerMetrics::new()),
            hq: crate::ledger::hq::HqSettings::default(),
        }
    }

    /// The same state with these headquarters settings.
    pub fn with_hq(self, hq: crate::ledger::hq::HqSettings) -> AppState<S> {
        AppState { hq, ..self }
    }
}

impl<S: Clone> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: self.store.clone(),
            currency: Arc::clone(&self.currency),
            limits: self.limits,
            stripe: Arc::clone(&self.stripe),
            metrics: Arc::clone(&self.metrics),
            hq: self.hq,
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
        .route("/v1/orders", ops::post_operation_route::<S>(OpKind::Order))
        .route(
            "/v1/recharges",
            ops::post_operation_route::<S>(OpKind::Recharge),
        )
        .route("/v1/voids", ops::post_operation_route::<S>(OpKind::Void))
        .route(
            "/v1/returns",
            ops::post_operation_route::<S>(OpKind::Return),
        )
        .route(
            "/v1/voucher-grants",
            ops::post_operation_route::<S>(OpKind::VoucherGrant),
        )
        .route("/v1/shifts", post(ops::post_shift::<S>))
        .route(
            "/v1/webhooks/stripe",
            post(stripe::post_stripe_webhook::<S>),
        )
        .route("/v1/batch", post(ops::post_batch::<S>).layer(large))
        .route("/v1/scans", post(feeds::post_scans::<S>).layer(large))
        .route("/v1/cards", get(feeds::get_card_feed::<S>))
        .route("/v1/cards/{uid}", get(feeds::get_card::<S>))
        .route("/v1/cards/{uid}/key", put(feeds::put_card_key::<S>))
        .route("/v1/catalog", get(feeds::get_catalog::<S>))
        .route("/v1/staff", get(feeds::get_staff::<S>))
        .route("/v1/terminals/me", get(feeds::get_me::<S>))
        .route("/v1/terminals/me/status", post(feeds::post_status::<S>))
        .route("/v1/openapi.json", get(get_openapi))
        .route("/health", get(get_health))
        .route("/ready", get(get_ready::<S>))
        .route("/metrics", get(get_metrics::<S>))
        .merge(crate::ledger::hq::router::<S>())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            request_context,
        ))
        .with_state(state)
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= REQUEST_ID_LEN_MAX && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Gives every request an id, echoes it, and logs one line per request; the request runs in
/// a span that carries the id, so that every line logged while serving it has it.
async fn request_context(
    State(metrics): State<Arc<LedgerMetrics>>,
    mut req: Request,
    next: Next,
) -> Response {
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
    // Every line logged while serving the request carries its id (the span's field).
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span.clone()).await;
    let _serving = span.enter();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let outcome = response
        .extensions()
        .get::<OutcomeTag>()
        .map_or("", |t| t.0);
    let status = response.status().as_u16();
    let took = started.elapsed();
    metrics.request(&route, status, took);
    let duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "cashless::ledger::request",
        request_id = %id, %method, route, status, outcome, duration_us,
        "request"
    );
    response
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
    // Read on every request, never cached: a token revoked or rotated (`ledger terminal
    // revoke | rotate-token`) is refused by every ledger process from the moment the change
    // commits. One indexed read, on SQLite's reader connections or one round trip to
    // PostgreSQL.
    state
        .store
        .authenticate(token)
        .await
        .map_err(store_error)?
        .ok_or_else(|| unauthorized("unknown or revoked terminal token"))
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

/// `GET /metrics`: the Prometheus text format; the fleet's gauges are read from the
/// database now (bounded like every read; a failed read keeps their last values and counts
/// `cashless_metrics_scrape_errors_total`).
async fn get_metrics<S: LedgerStore>(State(state): State<AppState<S>>) -> Response {
    let fleet = match state
        .store
        .fleet(crate::ledger::metrics::FLEET_TERMINALS_MAX)
        .await
    {
        Ok(fleet) => Some(fleet),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the fleet's state could not be read");
            None
        }
    };
    let text = state
        .metrics
        .render(fleet.as_ref(), &state.store.pool_status());
    (
        [(header::CONTENT_TYPE, crate::ledger::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
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
    use serde_json::Value;

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
            "/v1/terminals/me/status",
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
