//! The money-changing routes: orders, top-ups and voids (alone or in a batch) and shift
//! close-outs. Each authenticates, parses, and hands the operation to the store.

use super::errors::{outcome_entry, outcome_response, respond, store_error};
use super::parse::{
    OpKind, batch_operations, body_bytes, check_idempotency_header, parse_batch_entry,
    parse_operation, parse_shift_closeout,
};
use super::{
    AppState, BATCH_BODY_LIMIT_BYTES, BODY_LIMIT_BYTES, OutcomeTag, RequestId, authenticate,
};
use crate::ledger::metrics::SeenOperation;
use crate::ledger::rules;
use crate::ledger::store::LedgerStore;
use crate::protocol::api::ApiError;
use crate::protocol::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde_json::{Value, json};

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
    let seen = [SeenOperation::of(&op)];
    let outcomes = state
        .store
        .apply(terminal, request_id.0.to_string(), vec![op])
        .await
        .map_err(store_error)?;
    state
        .metrics
        .operations(&seen, &outcomes, chrono::Utc::now());
    let outcome = outcomes
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::new(ErrorCode::ServerError, "no outcome"))?;
    outcome_response(outcome)
}

/// `POST` on one operation's route (`/v1/orders`, `/v1/recharges` or `/v1/voids`).
pub(super) fn post_operation_route<S: LedgerStore>(kind: OpKind) -> MethodRouter<AppState<S>> {
    post(
        move |State(state): State<AppState<S>>,
              Extension(rid): Extension<RequestId>,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            respond(
                &rid,
                post_operation(&state, &rid, &headers, body, kind).await,
            )
        },
    )
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

pub(super) async fn post_shift<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&rid, shift(&state, &rid, &headers, body).await)
}

async fn batch<S: LedgerStore>(
    state: &AppState<S>,
    request_id: &RequestId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let terminal = authenticate(state, headers).await?;
    let bytes = body_bytes(body, BATCH_BODY_LIMIT_BYTES)?;
    let operations = batch_operations(&bytes)?;
    // Entries that do not parse get their 400 in place; the others go to the store together.
    let mut slots: Vec<(Option<String>, Result<(), ApiError>)> =
        Vec::with_capacity(operations.len());
    let mut valid = Vec::new();
    for raw in operations {
        let crid = serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|v| v.get("client_request_id")?.as_str().map(str::to_owned));
        match parse_batch_entry(raw.get()) {
            Ok(op) => {
                slots.push((crid, Ok(())));
                valid.push(op);
            }
            Err(e) => slots.push((crid, Err(e))),
        }
    }
    let outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        let seen: Vec<SeenOperation> = valid.iter().map(SeenOperation::of).collect();
        let outcomes = state
            .store
            .apply(terminal, request_id.0.to_string(), valid)
            .await
            .map_err(store_error)?;
        state
            .metrics
            .operations(&seen, &outcomes, chrono::Utc::now());
        outcomes
    };
    // The store answers the valid entries in order.
    let mut outcomes = outcomes.into_iter();
    let mut results = Vec::with_capacity(slots.len());
    for (crid, slot) in slots {
        let (status, body) = match slot {
            Ok(()) => outcome_entry(
                outcomes
                    .next()
                    .ok_or_else(|| ApiError::new(ErrorCode::ServerError, "no outcome"))?,
            )?,
            Err(e) => (e.http_status(), e.body(&request_id.0)),
        };
        results.push(json!({ "client_request_id": crid, "status": status, "body": body }));
    }
    let mut r = (StatusCode::OK, axum::Json(json!({ "results": results }))).into_response();
    r.extensions_mut().insert(OutcomeTag("batch"));
    Ok(r)
}

pub(super) async fn post_batch<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&rid, batch(&state, &rid, &headers, body).await)
}
