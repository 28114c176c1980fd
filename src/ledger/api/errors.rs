//! Errors and store outcomes into responses: the status, the JSON body and the word the
//! request's log line carries.

use super::{OutcomeTag, RequestId};
use crate::ledger::store::StoreError;
use crate::protocol::api::{ApiError, Outcome};
use crate::protocol::codes::ErrorCode;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub(super) fn error_response(err: &ApiError, request_id: &RequestId) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(err.body(&request_id.0))).into_response();
    r.extensions_mut().insert(OutcomeTag(err.code.as_str()));
    r
}

pub(super) fn respond(request_id: &RequestId, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| error_response(&e, request_id))
}

pub(super) fn json_text_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A store outcome as it goes on the wire.
struct Answer {
    status: u16,
    /// The body, JSON text.
    body: String,
    replayed: bool,
    /// The word for the request's log line.
    tag: &'static str,
}

/// The one place a store [`Outcome`] becomes a status and a body; a single answer and a
/// batch's entry are both made from it.
fn answer(o: Outcome) -> Answer {
    let tag = match (o.replayed, o.status) {
        (true, _) => "replayed",
        (false, 200..=299) => "applied",
        (false, _) => "declined",
    };
    Answer {
        status: o.status,
        body: o.body,
        replayed: o.replayed,
        tag,
    }
}

/// A store [`Outcome`] as the whole answer to its request.
pub(super) fn outcome_response(o: Outcome) -> Response {
    let a = answer(o);
    let mut r = json_text_response(a.status, a.body);
    if a.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r.extensions_mut().insert(OutcomeTag(a.tag));
    r
}

/// A store [`Outcome`] as one entry of a batch's answer: its status and its body.
pub(super) fn outcome_entry(o: Outcome) -> Result<(u16, Value), ApiError> {
    let a = answer(o);
    let body = serde_json::from_str(&a.body)
        .map_err(|_| ApiError::new(ErrorCode::ServerError, "stored answer is not JSON"))?;
    Ok((a.status, body))
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "storage failure");
    match e {
        StoreError::Unavailable(_) => ApiError::new(
            ErrorCode::DatabaseError,
            "the database is unavailable; retry later",
        ),
        _ => ApiError::new(ErrorCode::ServerError, "internal error; retry later"),
    }
}

pub(super) fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}
