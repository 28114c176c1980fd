//! Errors and store outcomes into responses: the status, the JSON body and the word the
//! request's log line carries. Only here does a typed outcome (`ledger::outcome`) become a
//! status (from `ErrorCode::http_status`) and bytes (its serde encoding).

use super::{OutcomeTag, RequestId};
use crate::ledger::outcome::{Decided, Outcome};
use crate::ledger::store::StoreError;
use crate::protocol::api::ApiError;
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

/// A store [`Outcome`] as the whole answer to its request: the one place a typed outcome
/// becomes a status and bytes (a batch's entry is the same status and body as a value).
pub(super) fn outcome_response(o: Outcome) -> Result<Response, ApiError> {
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

/// A store [`Outcome`] as one entry of a batch's answer: its status and its body.
pub(super) fn outcome_entry(o: Outcome) -> Result<(u16, Value), ApiError> {
    let body = serde_json::to_value(&o.decided).map_err(|e| answer_not_written(&e))?;
    Ok((outcome_status(&o.decided), body))
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
