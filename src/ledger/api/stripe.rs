//! `POST /v1/webhooks/stripe`: Stripe's deliveries, verified and handed to the store. The
//! signature check and the event reading are [`crate::ledger::stripe`]'s.

use super::errors::{json_text_response, respond, store_error};
use super::parse::body_bytes;
use super::{AppState, BODY_LIMIT_BYTES, OutcomeTag, RequestId};
use crate::ledger::store::LedgerStore;
use crate::protocol::api::{ApiError, FieldError};
use crate::protocol::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde_json::Value;

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
    state.metrics.stripe_event(outcome.outcome);
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

pub(super) async fn post_stripe_webhook<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&rid, stripe_webhook(&state, &rid, &headers, body).await)
}
