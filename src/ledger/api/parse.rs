//! Request bodies into validated requests. Bodies are read within their size limit, parsed
//! with `serde_path_to_error` so that every 400 names its field, and refused when a key
//! repeats or bytes trail the value.

use crate::domain::ClientRequestId;
use crate::ledger::rules::Action;
use crate::protocol::api::{ApiError, BATCH_OPERATIONS_MAX, FieldError, Operation, ShiftCloseout};
use crate::protocol::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub(super) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
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
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut check = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, NoDuplicateKeys>(&mut check).map_err(path_error)?;
    parse_tracked(bytes)
}

/// Parses a whole body into `T`, tracking the path so that a refusal names its field; bytes
/// after the value are refused.
fn parse_tracked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
pub(super) enum OpKind {
    Order,
    Recharge,
    Void,
    Return,
    VoucherGrant,
}

impl OpKind {
    pub(super) fn action(self) -> Action {
        match self {
            OpKind::Order => Action::Order,
            OpKind::Recharge => Action::Recharge,
            OpKind::Void => Action::Void,
            OpKind::Return => Action::Return,
            OpKind::VoucherGrant => Action::GrantVouchers,
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
    parse_tracked(bytes)
}

pub(super) fn parse_operation(kind: OpKind, bytes: &[u8]) -> Result<Operation, ApiError> {
    let op = match kind {
        OpKind::Order => Operation::Order(parse_typed(bytes)?),
        OpKind::Recharge => Operation::Recharge(parse_typed(bytes)?),
        OpKind::Void => Operation::Void(parse_typed(bytes)?),
        OpKind::Return => Operation::Return(parse_typed(bytes)?),
        OpKind::VoucherGrant => Operation::VoucherGrant(parse_typed(bytes)?),
    };
    check_ranges(&op)?;
    Ok(op)
}

fn check_ranges(op: &Operation) -> Result<(), ApiError> {
    match op {
        Operation::Order(r) => r.validate(),
        Operation::Recharge(r) => r.validate(),
        Operation::Void(r) => r.validate(),
        Operation::Return(r) => r.validate(),
        Operation::VoucherGrant(r) => r.validate(),
    }
    .map_err(ApiError::invalid_field)
}

fn validated(kind: OpKind, value: Value) -> Result<Operation, ApiError> {
    let op = match kind {
        OpKind::Order => Operation::Order(parse_value(value)?),
        OpKind::Recharge => Operation::Recharge(parse_value(value)?),
        OpKind::Void => Operation::Void(parse_value(value)?),
        OpKind::Return => Operation::Return(parse_value(value)?),
        OpKind::VoucherGrant => Operation::VoucherGrant(parse_value(value)?),
    };
    check_ranges(&op)?;
    Ok(op)
}

pub(super) fn check_idempotency_header(
    headers: &HeaderMap,
    crid: ClientRequestId,
) -> Result<(), ApiError> {
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

/// A shift close-out's body, parsed and checked as `POST /v1/shifts` does (also for the
/// close-outs of a journal export), or the 400 it deserves.
pub fn parse_shift_closeout(bytes: &[u8]) -> Result<ShiftCloseout, ApiError> {
    let closeout: ShiftCloseout = parse_typed(bytes)?;
    closeout.validate().map_err(ApiError::invalid_field)?;
    Ok(closeout)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope {
    /// Kept raw so that each operation is checked (duplicate keys included) on its own.
    operations: Vec<Box<serde_json::value::RawValue>>,
}

/// A batch's operations, each still raw, or the 400 the envelope deserves. The envelope's own
/// keys are checked by its derived `Deserialize`; each operation's by [`parse_batch_entry`],
/// so that one bad operation gets its own 400.
pub(super) fn batch_operations(
    bytes: &[u8],
) -> Result<Vec<Box<serde_json::value::RawValue>>, ApiError> {
    let envelope: BatchEnvelope = parse_tracked(bytes)?;
    if envelope.operations.is_empty() || envelope.operations.len() > BATCH_OPERATIONS_MAX {
        return Err(ApiError::invalid_field(FieldError {
            field: "operations".into(),
            message: format!("must hold 1 to {BATCH_OPERATIONS_MAX} operations"),
        }));
    }
    Ok(envelope.operations)
}

/// Parses one operation of a batch (or of a terminal's journal export) from its JSON text:
/// `{"type": "order" | "recharge" | "void" | "return" | "voucher_grant", ...the operation's
/// body...}`. Repeated keys, unknown fields and out-of-range values get the 400 they deserve.
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
        Some(Value::String(t)) if t == "return" => OpKind::Return,
        Some(Value::String(t)) if t == "voucher_grant" => OpKind::VoucherGrant,
        _ => {
            return Err(ApiError::invalid_field(FieldError {
                field: "type".into(),
                message: "must be order, recharge, void, return or voucher_grant".into(),
            }));
        }
    };
    validated(kind, Value::Object(map))
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
}
