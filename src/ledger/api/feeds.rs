//! What terminals read, and upload, besides money: one card, the card feed, the catalog
//! (with its ETag), the staff list, `terminals/me`, and scan uploads.

use super::errors::{json_text_response, respond, store_error};
use super::parse::{body_bytes, parse_json};
use super::{AppState, BATCH_BODY_LIMIT_BYTES, BODY_LIMIT_BYTES, RequestId, authenticate};
use crate::domain::CardUid;
use crate::ledger::rules;
use crate::ledger::store::{LedgerStore, StoreError};
use crate::protocol::api::{
    ApiError, CardKeyReceipt, CardKeyRequest, FEED_LIMIT_DEFAULT, FEED_LIMIT_MAX, FieldError,
    SCANS_MAX, Scan, StatusReceipt, TerminalStatusReport, format_time,
};
use crate::protocol::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScansEnvelope {
    scans: Vec<Scan>,
}

pub(super) async fn post_scans<S: LedgerStore>(
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

/// `POST /v1/terminals/me/status`: the terminal's state, kept for the fleet page.
pub(super) async fn post_status<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let terminal = authenticate(&state, &headers).await?;
        let bytes = body_bytes(body, BODY_LIMIT_BYTES)?;
        let report: TerminalStatusReport = parse_json(&bytes)?;
        report.validate().map_err(ApiError::invalid_field)?;
        let received_at = Utc::now();
        let clock_offset_ms = (report.reported_at - received_at).num_milliseconds();
        state
            .store
            .record_status(terminal, report, received_at)
            .await
            .map_err(store_error)?;
        Ok(axum::Json(StatusReceipt {
            received_at,
            clock_offset_ms,
        })
        .into_response())
    }
    .await;
    respond(&rid, result)
}

pub(super) async fn get_card<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        let uid = path_uid(uid)?;
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
            "age_flag": card.age_flag,
            "voucher_units": card.voucher_units,
            "key_version": card.key_version,
        }))
        .into_response())
    }
    .await;
    respond(&rid, result)
}

/// The card UID of a `/v1/cards/{uid}` path, or 400 naming `uid`.
fn path_uid(uid: Result<Path<String>, PathRejection>) -> Result<CardUid, ApiError> {
    let Path(uid) = uid.map_err(|e| {
        ApiError::invalid_field(FieldError {
            field: "uid".into(),
            message: e.body_text(),
        })
    })?;
    CardUid::parse(&uid).map_err(|e| {
        ApiError::invalid_field(FieldError {
            field: "uid".into(),
            message: e.to_string(),
        })
    })
}

/// `PUT /v1/cards/{uid}/key`: records the master key version a checkpoint issued the card
/// with (`rules::card_key_change`). Idempotent: the same version again answers the same,
/// with `changed: false`.
pub(super) async fn put_card_key<S: LedgerStore>(
    State(state): State<AppState<S>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let terminal = authenticate(&state, &headers).await?;
        rules::check_terminal_kind(terminal.kind, rules::Action::IssueCard)?;
        let uid = path_uid(uid)?;
        let bytes = body_bytes(body, BODY_LIMIT_BYTES)?;
        let request: CardKeyRequest = parse_json(&bytes)?;
        let key_version = request.validate().map_err(ApiError::invalid_field)?;
        let record = state
            .store
            .record_card_key(terminal, uid.clone(), key_version)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(why) => ApiError::new(ErrorCode::CardKeyConflict, why),
                e => store_error(e),
            })?;
        Ok(axum::Json(CardKeyReceipt {
            card_uid: uid,
            key_version: record.key_version,
            changed: record.changed,
            card_created: record.card_created,
        })
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

pub(super) async fn get_card_feed<S: LedgerStore>(
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
                json!({ "card_uid": c.card_uid, "balance_cents": c.balance_cents, "status": c.status, "version": c.version, "age_flag": c.age_flag, "voucher_units": c.voucher_units, "key_version": c.key_version })
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

pub(super) async fn get_catalog<S: LedgerStore>(
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

pub(super) async fn get_staff<S: LedgerStore>(
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

pub(super) async fn get_me<S: LedgerStore>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
