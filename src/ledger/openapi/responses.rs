//! Responses, parameters and headers shared by the routes.

use super::*;

pub(super) fn request_id_header() -> Header {
    let mut header = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[!-~]{1,128}$")),
    );
    header.description = Some(
        "The request id: the caller's `X-Request-Id` if it sent 1 to 128 visible ASCII \
         characters, else a new one. On every response; errors repeat it in \
         `error.request_id`."
            .into(),
    );
    header
}

pub(super) fn replayed_header() -> Header {
    let mut header = Header::new(string_enum(&["true"], "Always `true` when present."));
    header.description = Some(
        "`true` when this is the stored answer of an earlier request with the same \
         `client_request_id` and the same body (nothing was changed this time). Absent \
         otherwise."
            .into(),
    );
    header
}

/// A JSON response with its schema, and `X-Request-Id`.
pub(super) fn response(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .header("X-Request-Id", request_id_header())
        .content("application/json", Content::new(Some(schema)))
}

/// A plain-text response (`text/plain`, with `schema`).
pub(super) fn text_response(
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .header("X-Request-Id", request_id_header())
        .content("text/plain", Content::new(Some(schema)))
}

/// A response that may be the stored answer of an earlier request.
pub(super) fn stored(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    response(description, schema).header("Idempotent-Replayed", replayed_header())
}

pub(super) fn error(description: &str, codes: &[ErrorCode]) -> ResponseBuilder {
    response(description, error_schema(codes))
}

/// The shared responses, by name.
pub(super) fn shared_responses() -> Vec<(&'static str, ResponseBuilder)> {
    vec![
        (
            "BadRequest",
            error(
                "`INVALID_REQUEST`: malformed JSON, a missing, unknown, repeated, mistyped \
                 (e.g. a float for cents) or out-of-range field, a bad UID, a total that does \
                 not equal the items, or an `Idempotency-Key` header different from \
                 `client_request_id`. `details.field` names the field (absent for a body that \
                 is not JSON).",
                &[ErrorCode::InvalidRequest],
            ),
        ),
        (
            "Unauthorized",
            error(
                "`UNAUTHORIZED`: no bearer token, a malformed `Authorization` header, or a \
                 token the ledger does not know (or has revoked).",
                &[ErrorCode::Unauthorized],
            ),
        ),
        (
            "PayloadTooLarge",
            error(
                "`PAYLOAD_TOO_LARGE`: the body is larger than the route's limit (64 KiB; \
                 1 MiB for `/v1/batch` and `/v1/scans`); `details.limit_bytes`.",
                &[ErrorCode::PayloadTooLarge],
            ),
        ),
        (
            "ServerError",
            error(
                "`SERVER_ERROR`: an unexpected failure. Retryable; not stored under the \
                 idempotency key.",
                &[ErrorCode::ServerError],
            ),
        ),
        (
            "DatabaseUnavailable",
            error(
                "`DATABASE_ERROR`: the database is unavailable. Retryable; not stored under \
                 the idempotency key.",
                &[ErrorCode::DatabaseError],
            ),
        ),
    ]
}

pub(super) fn shared(name: &str) -> RefOr<utoipa::openapi::Response> {
    Ref::from_response_name(name).into()
}

pub(super) fn header_param(
    name: &str,
    required: bool,
    description: &str,
    schema: Object,
) -> Parameter {
    let mut p = Parameter::new(name);
    p.parameter_in = ParameterIn::Header;
    p.required = if required {
        Required::True
    } else {
        Required::False
    };
    p.description = Some(description.into());
    p.schema = Some(schema.into());
    p
}

pub(super) fn x_request_id() -> Parameter {
    header_param(
        "X-Request-Id",
        false,
        "Optional caller-chosen request id, echoed in the response's `X-Request-Id` and in \
         `error.request_id` when it is 1 to 128 visible ASCII characters; otherwise (or when \
         absent) the ledger makes one.",
        ObjectBuilder::new().schema_type(Type::String).build(),
    )
}

pub(super) fn idempotency_key() -> Parameter {
    header_param(
        "Idempotency-Key",
        false,
        "Optional. The idempotency key is the body's `client_request_id`; if this header is \
         sent it must equal it, else 400 `INVALID_REQUEST` with `details.field` = \
         `Idempotency-Key`.",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .build(),
    )
}

pub(super) fn query_param(
    name: &str,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    let mut p = Parameter::new(name);
    p.parameter_in = ParameterIn::Query;
    p.required = Required::False;
    p.description = Some(description.into());
    p.schema = Some(schema.into());
    p
}
