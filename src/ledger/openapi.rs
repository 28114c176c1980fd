//! The ledger API's OpenAPI document, built from the types the API speaks.
//!
//! The schemas are derived where the types are defined: `utoipa::ToSchema` on the requests
//! and answers of [`crate::protocol::api`], on [`ErrorCode`] (the codes the ledger answers),
//! and on the domain types (card UIDs, ids, cents, sequence numbers). This module adds the
//! shapes the handlers write without a type of their own (the documentation-only types
//! below), every route of the router in `api/mod.rs` with its parameters, request body,
//! responses and security, and serves the result, built once, at `GET /v1/openapi.json`.
//!
//! `.ci/fuzz-api` keeps the document honest: it fuzzes the live server from it.

use crate::domain::{CardUid, Cents, ProductId, StaffId};
use crate::protocol::api::{
    Approval, BATCH_OPERATIONS_MAX, CardStatus, FEED_LIMIT_DEFAULT, FEED_LIMIT_MAX, OrderRequest,
    RechargeRequest, SCANS_MAX, Scan, ShiftCloseout, ShiftRecorded, StaffRole, TerminalKind,
    VoidOutcome, VoidRequest,
};
use crate::protocol::codes::ErrorCode;
use serde_json::json;
use std::sync::OnceLock;
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, Parameter, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, Discriminator, KnownFormat,
    Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, Content, Header, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, ServerBuilder,
};

/// The name of the bearer security scheme.
const BEARER: &str = "bearerAuth";

/// The document as JSON, built on first use and kept.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::to_string(&document()).unwrap_or_else(|e| {
            // Serializing plain maps and strings cannot fail; say so loudly if it ever does.
            tracing::error!(error = %e, "cannot write the OpenAPI document");
            "{}".to_owned()
        })
    })
}

// ---------------------------------------------------------------------------------------
// The shapes the handlers write with `json!`: documentation only, never built. The fuzzer
// checks every answer of the live server against them (`response_schema_conformance`).
// ---------------------------------------------------------------------------------------

/// A card's balance and status (`GET /v1/cards/{uid}`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "card_uid": "04A1B2C3D4E5F6", "balance_cents": 1100, "status": "active",
    "updated_at": "2026-07-01T21:14:03.000Z"
})))]
struct Card {
    card_uid: CardUid,
    /// The balance in cents; below zero after offline sales.
    balance_cents: Cents,
    status: CardStatus,
    /// The last change of balance or status (RFC 3339, UTC).
    #[schema(format = DateTime)]
    updated_at: String,
}

/// One card of the feed.
#[allow(dead_code)]
#[derive(ToSchema)]
struct CardFeedEntry {
    card_uid: CardUid,
    /// The balance in cents; below zero after offline sales.
    balance_cents: Cents,
    status: CardStatus,
    /// Ledger-wide, strictly increasing version of the card's last change; a replica keeps
    /// the entry with the highest version.
    #[schema(minimum = 1)]
    version: i64,
}

/// A page of the card feed (`GET /v1/cards`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "cards": [
        {"card_uid": "04A1B2C3D4E5F6", "balance_cents": 1100, "status": "active", "version": 1041},
        {"card_uid": "A1B2C3D4", "balance_cents": -350, "status": "blocked", "version": 1042}
    ],
    "next_cursor": "1042"
})))]
struct CardFeed {
    /// Cards whose balance or status changed after the cursor, oldest change first, each
    /// at most once (its latest state).
    cards: Vec<CardFeedEntry>,
    /// The cursor to pass as `since` on the next call (digits). When `cards` is empty it is
    /// the `since` that was sent: the replica is up to date.
    #[schema(pattern = "^[0-9]{1,19}$")]
    next_cursor: String,
}

/// A product on sale.
#[allow(dead_code)]
#[derive(ToSchema)]
struct Product {
    product_id: ProductId,
    /// The name on the terminal's screen.
    #[schema(example = "Beer 0.5 l")]
    name: String,
    /// The price of one unit in cents.
    #[schema(value_type = i64, minimum = 0, example = 450)]
    price_cents: Cents,
    /// The grouping on the screen; null when the product has none.
    #[schema(required = true, example = "drinks")]
    category: Option<String>,
}

/// The products on sale at the calling terminal's point of sale (`GET /v1/catalog`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "point_of_sale": "Main Bar", "currency": "EUR",
    "products": [{"product_id": "beer-05", "name": "Beer 0.5 l", "price_cents": 450, "category": "drinks"}]
})))]
struct Catalog {
    /// The terminal's point of sale.
    #[schema(example = "Main Bar")]
    point_of_sale: String,
    /// The ISO 4217 code of the currency of every `_cents` amount.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
    /// Possibly empty.
    products: Vec<Product>,
}

/// A staff member, for offline login.
#[allow(dead_code)]
#[derive(ToSchema)]
struct StaffMember {
    staff_id: StaffId,
    name: String,
    role: StaffRole,
    /// Inactive staff cannot log in.
    active: bool,
    /// The argon2 hash of the PIN, as a PHC string.
    #[schema(
        pattern = "^\\$argon2(id|i|d)\\$",
        example = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$J1pFq3YzY0bE1o2oZ3b1Yp8o3l7g0mJvY4k9v2QmC0E"
    )]
    pin_hash: String,
}

/// Every staff member, active or not (`GET /v1/staff`).
#[allow(dead_code)]
#[derive(ToSchema)]
struct StaffFeed {
    staff: Vec<StaffMember>,
}

/// A batch of scan-log entries (`POST /v1/scans`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ScanUpload {
    /// 1 to 1000 scans (`SCANS_MAX`).
    #[schema(min_items = 1, max_items = 1000)]
    scans: Vec<Scan>,
}

/// What an upload of scans did.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({"accepted": 118, "duplicates": 2})))]
struct ScanReceipt {
    /// Scans stored by this request.
    #[schema(minimum = 0, maximum = 1000)]
    accepted: i64,
    /// Scans already stored (same terminal, `card_uid`, `reader` and `scanned_at`), ignored.
    #[schema(minimum = 0, maximum = 1000)]
    duplicates: i64,
}

/// The festival's top-up limits (`[limits]` in the ledger's configuration), which
/// checkpoints also check offline.
#[allow(dead_code)]
#[derive(ToSchema)]
struct TopUpLimits {
    /// The largest single top-up, in cents.
    #[schema(value_type = i64, minimum = 1)]
    recharge_max_cents: Cents,
    /// The largest balance an online top-up may lead to, in cents.
    #[schema(value_type = i64, minimum = 1)]
    balance_max_cents: Cents,
}

/// The calling terminal (`GET /v1/terminals/me`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "terminal_id": "3e9a1c5d-7b2f-4d80-a6e4-0c8b2d1f5a93", "name": "bar-1", "kind": "bar",
    "point_of_sale": "Main Bar", "server_time": "2026-07-01T21:14:03.000Z",
    "limits": {"recharge_max_cents": 50000, "balance_max_cents": 100000}
})))]
struct TerminalMe {
    terminal_id: uuid::Uuid,
    /// The terminal's unique name.
    name: String,
    kind: TerminalKind,
    /// Where it sells or tops up.
    point_of_sale: String,
    /// The ledger's clock (RFC 3339, UTC), for the terminal to check its own.
    #[schema(format = DateTime)]
    server_time: String,
    limits: TopUpLimits,
}

/// The outcome of one operation of a batch: exactly the status and body it would have had
/// if posted alone (including stored answers replayed by idempotency).
#[allow(dead_code)]
#[derive(ToSchema)]
struct BatchResult {
    /// The operation's `client_request_id` as sent, or null if it could not be read.
    #[schema(required = true)]
    client_request_id: Option<String>,
    /// The HTTP status the operation would have had on its own.
    #[schema(minimum = 100, maximum = 599, example = 201)]
    status: i64,
    /// The body the operation would have had on its own.
    #[schema(schema_with = batch_result_body)]
    body: (),
}

/// The answer to a batch: one result per operation, in the order of the request.
#[allow(dead_code)]
#[derive(ToSchema)]
struct BatchResponse {
    /// One result per operation, in the order of the request.
    #[schema(min_items = 1, max_items = 500)]
    results: Vec<BatchResult>,
}

/// A Stripe Event object, as Stripe sends it. Only the fields the ledger reads are listed;
/// any others are accepted and ignored.
#[allow(dead_code)]
#[derive(ToSchema)]
struct StripeEvent {
    /// The event's id; each is applied at most once.
    #[schema(example = "evt_1PqR2s3T4u5V6w7X")]
    id: String,
    /// `checkout.session.completed` and `checkout.session.async_payment_succeeded` (with
    /// `payment_status: "paid"`) credit the card; `charge.refunded` reverses a credited
    /// session's refund (matched by `payment_intent`); every other type is acknowledged and
    /// ignored.
    #[serde(rename = "type")]
    #[schema(example = "checkout.session.completed")]
    event_type: String,
    data: StripeEventData,
}

/// The event's payload.
#[allow(dead_code)]
#[derive(ToSchema)]
struct StripeEventData {
    /// The Checkout Session, or the Charge of a `charge.refunded`: an object whose fields
    /// depend on the event type (`id`, `payment_status`, `amount_total`, `currency`,
    /// `metadata.card_uid`, `payment_intent`, `amount_refunded`).
    #[schema(value_type = Object)]
    object: serde_json::Value,
}

/// The answer to a Stripe delivery: what the ledger did with the event.
#[allow(dead_code)]
#[derive(ToSchema)]
struct WebhookAck {
    /// Always `true`.
    received: bool,
    /// The event's id.
    #[schema(example = "evt_1PqR2s3T4u5V6w7X")]
    event_id: String,
    #[schema(schema_with = webhook_outcome)]
    outcome: (),
    /// The card concerned, if any.
    #[schema(nullable = false)]
    card_uid: Option<CardUid>,
    /// The money credited, or reversed, by this event, in cents.
    #[schema(value_type = i64, nullable = false, required = false)]
    amount_cents: Option<Cents>,
    /// The card's balance after it, if money moved.
    #[schema(value_type = i64, nullable = false, required = false)]
    balance_cents: Option<Cents>,
}

/// `/health` and `/ready`.
#[allow(dead_code)]
#[derive(ToSchema)]
struct Health {
    /// `ok` (`/health`) or `ready` (`/ready`).
    #[schema(schema_with = health_status)]
    status: (),
}

fn string_enum(values: &[&str], description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

fn health_status() -> Object {
    string_enum(&["ok", "ready"], "`ok` (`/health`) or `ready` (`/ready`).")
}

fn webhook_outcome() -> Object {
    string_enum(
        &[
            "credited",
            "duplicate_event",
            "duplicate_session",
            "refused",
            "refunded",
            "refund_nothing_new",
            "refund_waiting",
            "ignored",
        ],
        "`credited`: the card was credited. `duplicate_event`: this event id was handled \
         before; nothing changed. `duplicate_session`: another event already credited this \
         checkout session; nothing changed. `refused`: a paid session the ledger cannot credit \
         (another currency than the festival's, no or a bad `metadata.card_uid`, an amount out \
         of range), or a refund in another currency than the festival's (never applied, even \
         when its session is credited later): recorded in the audit log for an operator, no \
         money moved. `refunded`: part of a credit was reversed. `refund_nothing_new`: the \
         refund's cumulative `amount_refunded` was already reversed. `refund_waiting`: a \
         refund of a payment not credited (yet): kept, and applied when its session is \
         credited. `ignored`: an event type the ledger does not act on, or an unpaid session; \
         nothing written.",
    )
}

fn batch_result_body() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(Ref::from_schema_name(Approval::name()))
        .item(Ref::from_schema_name(VoidOutcome::name()))
        .item(Ref::from_schema_name("Error"))
        .description(Some(
            "The body the operation would have had on its own: an approval, a void's outcome, \
             or an error (a decline, a 400 for an invalid operation, ...).",
        ))
        .into()
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

fn int64() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// The error shape, and the schemas of `details` by code.
fn error_schemas() -> Vec<(String, RefOr<Schema>)> {
    let error_body = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", Ref::from_schema_name(ErrorCode::name()))
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("For people; may change.")),
        )
        .required("message")
        .property(
            "request_id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The response's `X-Request-Id`.")),
        )
        .required("request_id")
        .property(
            "details",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(
                    "Machine-readable specifics; absent when there is nothing to add. Its fields \
                 depend on `code`: see the `*Details` schemas and each response.",
                )),
        );
    let error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "The one error shape of the API. `details` is present when there is something to \
             add: always for `INSUFFICIENT_FUNDS`, `CARD_BLOCKED`, `LIMIT_EXCEEDED`, \
             `UNKNOWN_PRODUCT`, `PRICE_MISMATCH` and `PAYLOAD_TOO_LARGE`; for \
             `INVALID_REQUEST` whenever a field can be named.",
        ))
        .property("error", error_body)
        .required("error")
        .examples([json!({"error": {
            "code": "INSUFFICIENT_FUNDS", "message": "balance too low for this order",
            "request_id": "req_9f2c4e1a7b3d", "details": {"balance_cents": 300}
        }})]);
    let balance = || int64().description(Some("The card's balance in cents."));
    let invalid = ObjectBuilder::new().schema_type(Type::Object).property(
        "field",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The JSON path of the offending field (`items[0].quantity`, `card_uid`), or \
                 the offending header (`Idempotency-Key`, `Stripe-Signature`) or query or path \
                 parameter (`limit`, `since`, `uid`); absent when the body is not JSON.",
            ))
            .examples(["items[0].quantity"]),
    );
    let funds = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("balance_cents", balance())
        .required("balance_cents");
    let blocked = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("balance_cents", balance())
        .required("balance_cents")
        .property("status", Ref::from_schema_name(CardStatus::name()))
        .required("status");
    let limit = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "`recharge_max_cents`: the amount is above the per-top-up limit (`amount_cents` is \
             given). `balance_max_cents`: the resulting balance would be above the maximum \
             balance (`balance_cents`, the balance before the top-up, is given).",
        ))
        .property(
            "limit",
            string_enum(&["recharge_max_cents", "balance_max_cents"], "Which limit."),
        )
        .required("limit")
        .property(
            "limit_cents",
            int64().description(Some("The configured limit that was exceeded.")),
        )
        .required("limit_cents")
        .property(
            "amount_cents",
            int64().description(Some("The requested top-up (with `recharge_max_cents`).")),
        )
        .property("balance_cents", balance());
    let product = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("product_id", Ref::from_schema_name(ProductId::name()))
        .required("product_id");
    let price = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("product_id", Ref::from_schema_name(ProductId::name()))
        .required("product_id")
        .property("catalog_price_cents", int64())
        .required("catalog_price_cents")
        .property("unit_price_cents", int64())
        .required("unit_price_cents");
    let too_large = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "limit_bytes",
            int64().description(Some("The route's body limit.")),
        )
        .required("limit_bytes");
    vec![
        ("Error".into(), error.into()),
        ("InvalidRequestDetails".into(), invalid.into()),
        ("InsufficientFundsDetails".into(), funds.into()),
        ("CardBlockedDetails".into(), blocked.into()),
        ("LimitExceededDetails".into(), limit.into()),
        ("UnknownProductDetails".into(), product.into()),
        ("PriceMismatchDetails".into(), price.into()),
        ("PayloadTooLargeDetails".into(), too_large.into()),
    ]
}

/// The `details` schema that goes with a code, if it has one.
fn details_of(code: ErrorCode) -> Option<(&'static str, bool)> {
    match code {
        ErrorCode::InvalidRequest => Some(("InvalidRequestDetails", false)),
        ErrorCode::InsufficientFunds => Some(("InsufficientFundsDetails", true)),
        ErrorCode::CardBlocked => Some(("CardBlockedDetails", true)),
        ErrorCode::LimitExceeded => Some(("LimitExceededDetails", true)),
        ErrorCode::UnknownProduct => Some(("UnknownProductDetails", true)),
        ErrorCode::PriceMismatch => Some(("PriceMismatchDetails", true)),
        ErrorCode::PayloadTooLarge => Some(("PayloadTooLargeDetails", true)),
        _ => None,
    }
}

/// The error shape narrowed to `codes` (and to their `details`, when all share one).
fn error_schema(codes: &[ErrorCode]) -> RefOr<Schema> {
    let mut body = ObjectBuilder::new().schema_type(Type::Object).property(
        "code",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(codes.iter().map(|c| c.as_str()))),
    );
    let details: Vec<_> = codes.iter().map(|c| details_of(*c)).collect();
    let mut names: Vec<&str> = details.iter().flatten().map(|d| d.0).collect();
    names.dedup();
    match names.as_slice() {
        [] => {}
        // One code, or codes that share their details: those, required if they always come.
        [name] if details.iter().all(Option::is_some) => {
            body = body.property("details", Ref::from_schema_name(*name));
            if details.iter().all(|d| d.is_some_and(|d| d.1)) {
                body = body.required("details");
            }
        }
        // Codes with different details, or some without: whichever fits the code.
        names => {
            let mut any = AnyOfBuilder::new();
            for name in names {
                any = any.item(Ref::from_schema_name(*name));
            }
            body = body.property("details", any);
        }
    }
    AllOfBuilder::new()
        .item(Ref::from_schema_name("Error"))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("error", body),
        )
        .into()
}

// ---------------------------------------------------------------------------------------
// Responses, parameters, headers
// ---------------------------------------------------------------------------------------

fn request_id_header() -> Header {
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

fn replayed_header() -> Header {
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
fn response(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .header("X-Request-Id", request_id_header())
        .content("application/json", Content::new(Some(schema)))
}

/// A response that may be the stored answer of an earlier request.
fn stored(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    response(description, schema).header("Idempotent-Replayed", replayed_header())
}

fn error(description: &str, codes: &[ErrorCode]) -> ResponseBuilder {
    response(description, error_schema(codes))
}

/// The shared responses, by name.
fn shared_responses() -> Vec<(&'static str, ResponseBuilder)> {
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

fn shared(name: &str) -> RefOr<utoipa::openapi::Response> {
    Ref::from_response_name(name).into()
}

fn header_param(name: &str, required: bool, description: &str, schema: Object) -> Parameter {
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

fn x_request_id() -> Parameter {
    header_param(
        "X-Request-Id",
        false,
        "Optional caller-chosen request id, echoed in the response's `X-Request-Id` and in \
         `error.request_id` when it is 1 to 128 visible ASCII characters; otherwise (or when \
         absent) the ledger makes one.",
        ObjectBuilder::new().schema_type(Type::String).build(),
    )
}

fn idempotency_key() -> Parameter {
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

fn query_param(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    let mut p = Parameter::new(name);
    p.parameter_in = ParameterIn::Query;
    p.required = Required::False;
    p.description = Some(description.into());
    p.schema = Some(schema.into());
    p
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

const IDEMPOTENCY: &str = "**Idempotency.** `client_request_id` is the idempotency key (an \
`Idempotency-Key` header, if sent, must equal it). The first request is processed and its \
status and body are stored with the key, whether approved (201) or declined for a business \
reason (402, 404, 422, 423). The same key with the same request (same canonical body) returns \
the stored status and body with `Idempotent-Replayed: true` and changes nothing. The same key \
with a different request gives 422 `IDEMPOTENCY_KEY_REUSED` and changes nothing. 409 \
`DUPLICATE_REQUEST` (the key is being processed right now) and 5xx are not stored: retry with \
the same key and body. The stored answer of an applied operation (201) is kept forever, so a \
retry years later still gets it and never applies twice; a decline's answer is kept for a \
configurable retention (default 30 days), after which the same request is decided afresh.";

/// How an operation is reached: by a terminal with its token, or by anyone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Terminal,
    Public,
}

struct Op {
    method: HttpMethod,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    description: String,
    access: Access,
    parameters: Vec<Parameter>,
    body: Option<(RefOr<Schema>, &'static str)>,
    responses: Vec<(&'static str, RefOr<utoipa::openapi::Response>)>,
}

impl Op {
    fn new(
        method: HttpMethod,
        path: &'static str,
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
    ) -> Op {
        Op {
            method,
            path,
            id,
            tag,
            summary,
            description: String::new(),
            access: Access::Terminal,
            parameters: Vec::new(),
            body: None,
            responses: Vec::new(),
        }
    }

    fn describe(mut self, text: impl Into<String>) -> Op {
        self.description = text.into();
        self
    }

    fn public(mut self) -> Op {
        self.access = Access::Public;
        self
    }

    fn param(mut self, p: Parameter) -> Op {
        self.parameters.push(p);
        self
    }

    fn body(mut self, schema: impl Into<RefOr<Schema>>, description: &'static str) -> Op {
        self.body = Some((schema.into(), description));
        self
    }

    fn answer(mut self, status: &'static str, r: ResponseBuilder) -> Op {
        self.responses.push((status, r.build().into()));
        self
    }

    fn shared(mut self, status: &'static str, name: &str) -> Op {
        self.responses.push((status, shared(name)));
        self
    }

    /// 401 for terminal routes, and the 500 and 503 every route that reads the database can
    /// answer.
    fn usual(self) -> Op {
        self.shared("401", "Unauthorized")
            .shared("500", "ServerError")
            .shared("503", "DatabaseUnavailable")
    }

    fn build(self) -> Operation {
        let mut op = OperationBuilder::new()
            .operation_id(Some(self.id))
            .tag(self.tag)
            .summary(Some(self.summary))
            .description(Some(self.description))
            .parameters(Some(
                self.parameters
                    .into_iter()
                    .chain(std::iter::once(x_request_id())),
            ));
        op = match self.access {
            Access::Terminal => op.security(SecurityRequirement::new(BEARER, Vec::<String>::new())),
            // An empty requirement list: no authentication, overriding the document's default.
            Access::Public => op.securities(Some(Vec::<SecurityRequirement>::new())),
        };
        if let Some((schema, description)) = self.body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some(description))
                    .required(Some(Required::True))
                    .content("application/json", Content::new(Some(schema)))
                    .build(),
            ));
        }
        let mut responses = self.responses;
        responses.sort_by(|a, b| a.0.cmp(b.0));
        for (status, r) in responses {
            op = op.response(status, r);
        }
        op.build()
    }
}

/// An operation of a batch: the body of `POST /v1/orders`, `/v1/recharges` or `/v1/voids`
/// with a `type` naming which, derived from the request type.
fn batch_entry<T: ToSchema>(kind: &str) -> RefOr<Schema> {
    let mut schema = T::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        let fields = std::mem::take(&mut object.properties);
        object.properties.insert(
            "type".into(),
            string_enum(&[kind], "The operation's kind.").into(),
        );
        object.properties.extend(fields);
        object.required.insert(0, "type".into());
        object.description = Some(format!(
            "One {kind} of a batch: the body of its own route plus `\"type\": \"{kind}\"`."
        ));
        object.examples.iter_mut().for_each(|e| {
            if let Some(map) = e.as_object_mut() {
                map.insert("type".into(), json!(kind));
            }
        });
    }
    schema
}

fn batch_schemas() -> Vec<(String, RefOr<Schema>)> {
    let entries = [
        ("order", "BatchOrder", batch_entry::<OrderRequest>("order")),
        (
            "recharge",
            "BatchRecharge",
            batch_entry::<RechargeRequest>("recharge"),
        ),
        ("void", "BatchVoid", batch_entry::<VoidRequest>("void")),
    ];
    let mut one_of = OneOfBuilder::new()
        .description(Some("One operation of a batch, selected by `type`."))
        .discriminator(Some(Discriminator::with_mapping(
            "type",
            entries
                .iter()
                .map(|(kind, name, _)| (*kind, format!("#/components/schemas/{name}"))),
        )));
    for (_, name, _) in &entries {
        one_of = one_of.item(Ref::from_schema_name(*name));
    }
    let request = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "1 to {BATCH_OPERATIONS_MAX} operations, applied one after another in the given \
             order. Each operation is checked on its own: one that does not match its schema \
             gets its own 400 result in the 200 answer and does not fail the whole batch."
        )))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property(
            "operations",
            ArrayBuilder::new()
                .items(Ref::from_schema_name("BatchOperation"))
                .min_items(Some(1))
                .max_items(Some(BATCH_OPERATIONS_MAX)),
        )
        .required("operations");
    let mut out: Vec<(String, RefOr<Schema>)> = entries
        .into_iter()
        .map(|(_, name, schema)| (name.to_owned(), schema))
        .collect();
    out.push(("BatchOperation".into(), one_of.into()));
    out.push(("BatchRequest".into(), request.into()));
    out
}

fn operations() -> Vec<Op> {
    use ErrorCode as C;
    use HttpMethod::{Get, Post};
    let since = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]{0,19}$"))
        .description(Some(
            "Digits: a `next_cursor` this ledger returned, or empty. At most i64::MAX.",
        ))
        .build();
    let limit = int64()
        .minimum(Some(1))
        .maximum(Some(FEED_LIMIT_MAX))
        .default(Some(json!(FEED_LIMIT_DEFAULT)))
        .build();
    vec![
        Op::new(Post, "/v1/orders", "createOrder", "operations", "Charge a card for a bar order")
            .describe(format!(
                "Bar terminals only (a checkpoint terminal gets 403).\n\n\
                 `items`: 1 to 50 lines, `quantity` 1 to 99, and `total_cents` must equal the \
                 sum of the lines.\n\n\
                 `mode: \"online\"`: the terminal waits for the decision. Declined with 404 \
                 (unknown card), 423 (blocked card), 422 (product or price not in this point of \
                 sale's catalog) or 402 (balance too low).\n\n\
                 `mode: \"offline\"`: the sale already happened and is applied even if the \
                 balance goes below zero (the card is then blocked for debt, flag \
                 `NEGATIVE_BALANCE`), for unknown cards too (created with balance 0, flag \
                 `CARD_CREATED`), and at the terminal's prices (a difference from the catalog \
                 is recorded, flag `PRICE_DIFFERS_FROM_CATALOG`). Only 400, 401, 403, 422 \
                 `IDEMPOTENCY_KEY_REUSED` and 409 `OPERATION_VOIDED` refuse an offline order \
                 (plus the retryable 409 `DUPLICATE_REQUEST` and 5xx).\n\n\
                 Checks, in order: authentication (401), terminal kind (403), body (400/413), \
                 idempotency (replay, or 422 `IDEMPOTENCY_KEY_REUSED`), tombstone (409), staff \
                 (403), card exists (404), card blocked (423), catalog (422), funds (402).\n\n\
                 {IDEMPOTENCY}"
            ))
            .param(idempotency_key())
            .body(Ref::from_schema_name(OrderRequest::name()), "The order.")
            .answer("201", stored("Approved and applied (or the stored approval, replayed).", Ref::from_schema_name(Approval::name())))
            .shared("400", "BadRequest")
            .answer("402", stored("`INSUFFICIENT_FUNDS` (online only): the total is larger than the balance; `details.balance_cents`. Stored under the key.", error_schema(&[C::InsufficientFunds])))
            .answer("403", error("`FORBIDDEN`: the terminal is not a bar terminal, or the staff member does not exist, is inactive (online orders only) or lacks the role `bar` or `supervisor`.", &[C::Forbidden]))
            .answer("404", stored("`CARD_NOT_FOUND` (online only): the ledger has never seen this card. Stored under the key.", error_schema(&[C::CardNotFound])))
            .answer("409", error("`OPERATION_VOIDED`: this `client_request_id` was voided before it arrived (tombstone); `DUPLICATE_REQUEST`: the same key is being processed right now, retry later.", &[C::OperationVoided, C::DuplicateRequest]))
            .shared("413", "PayloadTooLarge")
            .answer("422", stored("`UNKNOWN_PRODUCT` / `PRICE_MISMATCH` (online only): a product or price that is not in the current catalog of this point of sale (stored under the key); `IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", error_schema(&[C::UnknownProduct, C::PriceMismatch, C::IdempotencyKeyReused])))
            .answer("423", stored("`CARD_BLOCKED` (online only): the card is blocked (lost, or in debt); `details.balance_cents`, `details.status`. Stored under the key.", error_schema(&[C::CardBlocked])))
            .usual(),
        Op::new(Post, "/v1/recharges", "createRecharge", "operations", "Top up a card at a checkpoint")
            .describe(format!(
                "Checkpoint terminals only (a bar terminal gets 403). `payment_method` is \
                 `cash` or `card`. The staff member must exist, be active (online top-ups) and \
                 have the role `cashier` or `supervisor`.\n\n\
                 An unknown card is created (flag `CARD_CREATED`). Online top-ups beyond the \
                 configured per-top-up or maximum-balance limits are declined with 422 \
                 `LIMIT_EXCEEDED`; offline top-ups are applied anyway and flagged \
                 `LIMIT_EXCEEDED`. A top-up that brings a card blocked for debt back to zero or \
                 above unblocks it.\n\n{IDEMPOTENCY}"
            ))
            .param(idempotency_key())
            .body(Ref::from_schema_name(RechargeRequest::name()), "The top-up.")
            .answer("201", stored("Applied (or the stored approval, replayed): the approval with `amount_cents` instead of `total_cents`.", Ref::from_schema_name(Approval::name())))
            .shared("400", "BadRequest")
            .answer("403", error("`FORBIDDEN`: the terminal is not a checkpoint terminal, or the staff member does not exist, is inactive (online top-ups only) or lacks the role `cashier` or `supervisor`.", &[C::Forbidden]))
            .answer("409", error("`OPERATION_VOIDED`: this `client_request_id` was voided before it arrived (tombstone); `DUPLICATE_REQUEST`: the same key is being processed right now, retry later.", &[C::OperationVoided, C::DuplicateRequest]))
            .shared("413", "PayloadTooLarge")
            .answer("422", stored("`LIMIT_EXCEEDED` (online only): the amount is above the per-top-up limit or the resulting balance would be above the maximum balance; `details.limit`, `details.limit_cents` (stored under the key). `IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", error_schema(&[C::LimitExceeded, C::IdempotencyKeyReused])))
            .answer("423", stored("`CARD_BLOCKED` (online only): the card is blocked as lost (a card blocked for debt can be topped up). Stored under the key.", error_schema(&[C::CardBlocked])))
            .usual(),
        Op::new(Post, "/v1/voids", "createVoid", "operations", "Reverse an order or top-up by its client_request_id")
            .describe(format!(
                "Any terminal kind, but only for the terminal's own operations (403 \
                 otherwise); any staff member known to the ledger (a void settles what already \
                 happened, so a deactivation since then does not refuse it). Used for customer \
                 refunds, staff errors, and by a terminal to settle an *in doubt* online \
                 attempt (sent, but no answer received).\n\n\
                 Target applied: reversed in full, 201 `voided` with the new balance \
                 (`refunded_cents` is positive for an order, negative for a top-up; a card \
                 going below zero is blocked for debt, a credit bringing a debt-blocked card \
                 back to zero or above unblocks it). Target unknown or declined: a tombstone is \
                 stored, 201 `tombstoned`; it refuses the target only when that arrives from \
                 the same terminal. Target already voided: 409 `ALREADY_VOIDED`. A target that \
                 is itself a void, or a shift close-out: 400 (`details.field` = \
                 `target_client_request_id`).\n\n{IDEMPOTENCY} A replay of a void that was \
                 applied returns its stored 201, not `ALREADY_VOIDED`."
            ))
            .param(idempotency_key())
            .body(Ref::from_schema_name(VoidRequest::name()), "The void.")
            .answer("201", stored("`voided`: the target was applied and is now reversed in full. `tombstoned`: the target is unknown (or was declined); it will be refused with 409 `OPERATION_VOIDED` if it ever arrives. Also the stored answer, replayed.", Ref::from_schema_name(VoidOutcome::name())))
            .shared("400", "BadRequest")
            .answer("403", error("`FORBIDDEN`: the target is another terminal's operation, or the staff member does not exist.", &[C::Forbidden]))
            .answer("409", stored("`ALREADY_VOIDED`: the target is already voided by another void; `OPERATION_VOIDED`: this void's own `client_request_id` was tombstoned; `DUPLICATE_REQUEST`: the same key is being processed right now, retry later.", error_schema(&[C::AlreadyVoided, C::OperationVoided, C::DuplicateRequest])))
            .shared("413", "PayloadTooLarge")
            .answer("422", error("`IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", &[C::IdempotencyKeyReused]))
            .usual(),
        Op::new(Post, "/v1/shifts", "createShiftCloseout", "shifts", "Record a shift close-out (cash drawer count)")
            .describe(
                "Any terminal kind (checkpoints and bars close their drawers); the staff \
                 member must be known to the ledger, whatever their role, and even if \
                 deactivated since (a close-out records what happened). At the end of a shift \
                 the terminal sends its own totals of the shift's top-ups (`cash_cents`, \
                 `card_cents`, net of voids, and `count`) and the cash staff counted \
                 (`counted_cash_cents`); the ledger stores them with `difference_cents = \
                 counted_cash_cents - cash_cents` so that headquarters sees cash differences \
                 (`cashless ledger shift list`, which also shows the ledger's own top-up totals \
                 of that terminal with a `terminal_seq` from `first_seq` to `last_seq`: \
                 compared by the terminal's sequence numbers, not by time, so a terminal clock \
                 step does not create a false difference. A close-out without `first_seq` and \
                 `last_seq`, a shift without any journal entry, is compared by `created_at` \
                 between `opened_at` and `closed_at`).\n\n\
                 **No money moves.** A close-out changes no card balance and writes no \
                 postings: cash in a drawer is not a card balance. It cannot be voided (a void \
                 naming its `client_request_id` gets 400).\n\n\
                 **Idempotency.** `client_request_id` is the idempotency key, in the same key \
                 space as orders, top-ups and voids (an `Idempotency-Key` header, if sent, must \
                 equal it). The first request is recorded and its 201 answer is stored with the \
                 key, forever. The same key with the same request returns the stored status and \
                 body with `Idempotent-Replayed: true` and changes nothing. The same key with a \
                 different request (or a key used by another operation) gives 422 \
                 `IDEMPOTENCY_KEY_REUSED` and changes nothing. Refusals (400, 401, 403, 413, \
                 422) write nothing and are not stored; 409 `DUPLICATE_REQUEST` and 5xx are \
                 not stored either: retry with the same key and body.",
            )
            .param(idempotency_key())
            .body(Ref::from_schema_name(ShiftCloseout::name()), "The close-out.")
            .answer("201", stored("Recorded (or the stored answer, replayed).", Ref::from_schema_name(ShiftRecorded::name())))
            .shared("400", "BadRequest")
            .answer("403", error("`FORBIDDEN`: the staff member is not known to the ledger. Not stored: the same close-out is recorded once the staff member exists.", &[C::Forbidden]))
            .answer("409", error("`DUPLICATE_REQUEST`: the same key is being processed right now; retry later.", &[C::DuplicateRequest]))
            .shared("413", "PayloadTooLarge")
            .answer("422", error("`IDEMPOTENCY_KEY_REUSED`: the key was used before for a different request.", &[C::IdempotencyKeyReused]))
            .usual(),
        Op::new(Post, "/v1/batch", "postBatch", "operations", "Apply many orders, top-ups and voids in order")
            .describe(
                "For synchronising a terminal's journal. 1 to 500 operations (body up to \
                 1 MiB), applied one after another in the given order, each with its own \
                 idempotency exactly as if it had been posted alone to `/v1/orders`, \
                 `/v1/recharges` or `/v1/voids` (terminal kind and staff checks included, per \
                 operation). Replaying a batch is therefore safe: applied operations return \
                 their stored answers. There is no batch-level `Idempotency-Key`.\n\n\
                 An operation that does not match its schema (`BatchOperation`) does not fail \
                 the batch: it gets its own 400 result inside the 200 answer.",
            )
            .body(Ref::from_schema_name("BatchRequest"), "The operations, in order.")
            .answer("200", response("Every operation was attempted; one result per operation, in order. A failed operation does not stop the others. Each result's `status` and `body` are what the operation would have got if posted alone (201 approvals, declines, 400 for an invalid operation, stored answers for replays).", Ref::from_schema_name(BatchResponse::name())))
            .answer("400", error("`INVALID_REQUEST`: the body is not JSON, or not an object with exactly an `operations` array of 1 to 500 elements (`details.field` = `operations`).", &[C::InvalidRequest]))
            .shared("413", "PayloadTooLarge")
            .usual(),
        Op::new(Post, "/v1/scans", "postScans", "scans", "Upload NFC scan-log entries")
            .describe(format!(
                "Stores 1 to {SCANS_MAX} card presentations in `nfc_scan_log`, attributed to \
                 the calling terminal. Idempotent per terminal and scan: a scan with the same \
                 terminal, `card_uid`, `reader` and `scanned_at` as a stored one is counted in \
                 `duplicates` and not stored again, so an upload can be retried as a whole. Any \
                 terminal kind. Body limit 1 MiB (1000 scans do not fit in 64 KiB)."
            ))
            .body(Ref::from_schema_name(ScanUpload::name()), "The scans.")
            .answer("200", response("Scans stored; scans already stored for this terminal are counted as duplicates.", Ref::from_schema_name(ScanReceipt::name())))
            .shared("400", "BadRequest")
            .shared("413", "PayloadTooLarge")
            .usual(),
        Op::new(Get, "/v1/cards", "getCardFeed", "cards", "Card feed for terminal replicas")
            .describe(format!(
                "Every card whose balance or status changed after the cursor `since`, oldest \
                 change first, at most `limit` cards (default {FEED_LIMIT_DEFAULT}, max \
                 {FEED_LIMIT_MAX}). An absent or empty `since` starts from the beginning. Pass \
                 `next_cursor` back as `since` until `cards` comes back shorter than `limit`. \
                 Any terminal kind."
            ))
            .param(query_param(
                "since",
                "The cursor: the `next_cursor` of the previous page, which is digits. Absent or \
                 empty: from the beginning. Anything else than digits (a sign, a space, a \
                 letter), or a number above 9223372036854775807, is refused with 400 \
                 (`details.field` = `since`).",
                since,
            ))
            .param(query_param(
                "limit",
                "The most cards to return; digits only. Out of range or not a number: 400 \
                 (`details.field` = `limit`).",
                limit,
            ))
            .answer("200", response("A page of the card feed.", Ref::from_schema_name(CardFeed::name())))
            .answer("400", error("`INVALID_REQUEST`: `limit` not an integer in 1..10000, or a `since` that is not digits (`details.field` names the parameter).", &[C::InvalidRequest]))
            .usual(),
        Op::new(Get, "/v1/cards/{uid}", "getCard", "cards", "Balance and status of one card")
            .describe("Any terminal kind.")
            .param({
                let mut p = Parameter::new("uid");
                p.parameter_in = ParameterIn::Path;
                p.required = Required::True;
                p.description = Some("The card's UID: uppercase hex, 8, 14 or 20 characters (lowercase is refused with 400).".into());
                p.schema = Some(Ref::from_schema_name(CardUid::name()).into());
                p
            })
            .answer("200", response("The card's current balance and status.", Ref::from_schema_name(Card::name())))
            .answer("400", error("`INVALID_REQUEST`: the UID is not 8, 14 or 20 uppercase hex characters (`details.field` = `uid`).", &[C::InvalidRequest]))
            .answer("404", error("`CARD_NOT_FOUND`: the ledger has never seen this card.", &[C::CardNotFound]))
            .usual(),
        Op::new(Get, "/v1/catalog", "getCatalog", "catalog", "Products on sale at this terminal's point of sale")
            .describe(
                "The products and prices of the calling terminal's point of sale, with an \
                 `ETag`; send it back in `If-None-Match` to get 304 while the catalog has not \
                 changed.",
            )
            .param(header_param(
                "If-None-Match",
                false,
                "An `ETag` from an earlier catalog answer (or `*`); 304 if the catalog has not \
                 changed.",
                ObjectBuilder::new().schema_type(Type::String).build(),
            ))
            .answer("200", response("The catalog of the terminal's point of sale (possibly empty).", Ref::from_schema_name(Catalog::name())).header("ETag", etag_header()))
            .answer("304", ResponseBuilder::new().description("Not modified: `If-None-Match` matches the current `ETag`. No body.").header("X-Request-Id", request_id_header()).header("ETag", etag_header()))
            .usual(),
        Op::new(Get, "/v1/staff", "getStaff", "staff", "Staff list with PIN hashes, for offline login")
            .describe(
                "Every staff member with their role, whether active, and the argon2 hash (PHC \
                 string) of their PIN, so terminals can check PINs offline. Authenticated \
                 terminals only.",
            )
            .answer("200", response("All staff members.", Ref::from_schema_name(StaffFeed::name())))
            .usual(),
        Op::new(Get, "/v1/terminals/me", "getTerminalMe", "terminals", "Who am I: check the token and the clock")
            .describe(
                "The terminal the bearer token belongs to and the ledger's time, so a terminal \
                 can check its token, its kind and point of sale, its clock, and the top-up \
                 limits it applies offline.",
            )
            .answer("200", response("The calling terminal.", Ref::from_schema_name(TerminalMe::name())))
            .usual(),
        Op::new(Post, "/v1/webhooks/stripe", "stripeWebhook", "webhooks", "Stripe events: online top-ups and their refunds")
            .public()
            .describe(
                "Called by Stripe, not by terminals: no bearer token. The raw body is verified \
                 before it is parsed: header `Stripe-Signature: \
                 t=<unix>,v1=<hex>[,v1=...][,v0=...]`, each `v1` the hex HMAC-SHA256 of \
                 `\"<t>.<raw body>\"` with an endpoint secret; any `v1` matching any configured \
                 secret passes (secret rotation), `v0` is ignored, the comparison is \
                 constant-time, and a timestamp older than the tolerance (default 300 s) by the \
                 ledger's clock is refused (one in the future is accepted, as Stripe's \
                 libraries do). So a request that matches this document but is not signed with \
                 the ledger's secret gets 400, and nothing is written.\n\n\
                 A paid checkout session credits `amount_total` to `metadata.card_uid` (created \
                 if unknown) exactly once per checkout session id and per event id, in one \
                 transaction with its postings (card against `stripe_clearing`) and the audit \
                 log. `charge.refunded` reverses what its cumulative `amount_refunded` adds to \
                 the session's refunds so far (never more than the credit), once per event, in \
                 any order; this may take the card below zero, which blocks it for debt. A \
                 refund in another currency than the festival's is refused (recorded, no money \
                 moved). 200 only after the transaction committed; 5xx on database trouble or \
                 a missing secret, so that Stripe retries; 400 for a bad signature or a body \
                 that is not an event, with nothing written.",
            )
            .param(header_param(
                "Stripe-Signature",
                true,
                "Stripe's signature header: `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`. \
                 Missing, malformed, stale or not matching a configured secret: 400 \
                 (`details.field` = `Stripe-Signature`).",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .examples(["t=1782940443,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"])
                    .build(),
            ))
            .body(Ref::from_schema_name(StripeEvent::name()), "The event, as Stripe sends it; verified byte for byte.")
            .answer("200", response("Handled (or handled before); see `outcome`.", Ref::from_schema_name(WebhookAck::name())))
            .answer("400", error("`INVALID_REQUEST`: a missing, malformed, stale or unknown signature (`details.field` = `Stripe-Signature`), or a body that is not a Stripe event (`details.field` = `body`). Nothing is written.", &[C::InvalidRequest]))
            .shared("413", "PayloadTooLarge")
            .answer("500", error("`SERVER_ERROR`: no webhook secret is configured, or an unexpected failure; Stripe retries.", &[C::ServerError]))
            .shared("503", "DatabaseUnavailable"),
        Op::new(Get, "/v1/openapi.json", "getOpenApi", "system", "This OpenAPI document")
            .public()
            .describe("The OpenAPI 3.1 description of the ledger API, generated from the types the ledger speaks. No authentication.")
            .answer("200", response("The OpenAPI document.", ObjectBuilder::new().schema_type(Type::Object))),
        Op::new(Get, "/health", "health", "system", "Liveness")
            .public()
            .describe("200 while the process runs; does not touch the database. No authentication.")
            .answer("200", response("The process is alive (`status: \"ok\"`).", Ref::from_schema_name(Health::name()))),
        Op::new(Get, "/ready", "ready", "system", "Readiness")
            .public()
            .describe("200 only while the database answers; 503 otherwise. No authentication.")
            .answer("200", response("The database answers; the ledger can take traffic (`status: \"ready\"`).", Ref::from_schema_name(Health::name())))
            .shared("500", "ServerError")
            .shared("503", "DatabaseUnavailable"),
    ]
}

fn etag_header() -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
    header.description = Some("The catalog's entity tag, for `If-None-Match`.".into());
    header
}

/// Adds `T`'s schema and every schema it refers to.
fn add<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

const DESCRIPTION: &str = "The contract between terminals and the ledger.\n\n\
**Conventions.** JSON bodies in UTF-8 (`Content-Type: application/json`). Money fields end in \
`_cents`. Every integer of a request (money, `terminal_seq`, `quantity`, ...) is written as a \
JSON integer: a number with a fraction or an exponent is refused with 400, `4.5` and `450.0` \
alike (JSON Schema would count `450.0` as an integer; the ledger does not). Card UIDs are uppercase hex \
strings of 8, 14 or 20 characters. Ids are UUID strings. Times are RFC 3339, UTC in answers. \
Unknown JSON fields, and objects that repeat a key, are refused (400). Some rules span \
fields and are checked after the schema: see each request's descriptions (an order's total, \
a void's target, a close-out's times and sequence range, the `Idempotency-Key` header).\n\n\
**Request ids.** Every response carries `X-Request-Id`: the caller's (if it sent 1 to 128 \
visible ASCII characters), else a new one; errors repeat it in `error.request_id`.\n\n\
**Authentication.** Terminal routes need `Authorization: Bearer <terminal token>` (401 \
`UNAUTHORIZED` without a known token). The Stripe webhook is authenticated by its \
`Stripe-Signature` instead; `/health`, `/ready` and `/v1/openapi.json` are public.\n\n\
**Limits.** Request bodies are limited to 64 KiB (`/v1/batch` and `/v1/scans`: 1 MiB); bigger \
is refused with 413 `PAYLOAD_TOO_LARGE`.\n\n\
**Errors.** One shape, `{\"error\": {\"code\", \"message\", \"request_id\", \"details\"}}` \
(schema `Error`). Besides the responses listed per operation, any route can answer 404 \
`NOT_FOUND` (unknown route) or 405 `METHOD_NOT_ALLOWED` (known route, other method). \
`DATABASE_ERROR` (503), `SERVER_ERROR` (500) and `DUPLICATE_REQUEST` (409) are retryable with \
the same body.\n\n\
**Idempotency.** Every POST that changes money (`/v1/orders`, `/v1/recharges`, `/v1/voids`, \
and each operation of `/v1/batch`) and `/v1/shifts` is idempotent on its `client_request_id`; \
see those operations.";

/// The whole document.
pub fn document() -> OpenApi {
    let mut schemas = Vec::new();
    add::<OrderRequest>(&mut schemas);
    add::<RechargeRequest>(&mut schemas);
    add::<VoidRequest>(&mut schemas);
    add::<ShiftCloseout>(&mut schemas);
    add::<ShiftRecorded>(&mut schemas);
    add::<Approval>(&mut schemas);
    add::<VoidOutcome>(&mut schemas);
    add::<ScanUpload>(&mut schemas);
    add::<ScanReceipt>(&mut schemas);
    add::<Card>(&mut schemas);
    add::<CardFeed>(&mut schemas);
    add::<Catalog>(&mut schemas);
    add::<StaffFeed>(&mut schemas);
    add::<TerminalMe>(&mut schemas);
    add::<BatchResponse>(&mut schemas);
    add::<StripeEvent>(&mut schemas);
    add::<WebhookAck>(&mut schemas);
    add::<Health>(&mut schemas);
    add::<ErrorCode>(&mut schemas);
    schemas.extend(batch_schemas());
    schemas.extend(error_schemas());

    let mut components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("clt_ followed by 64 hex characters")
                    .description(Some(
                        "A terminal's token, issued by `cashless ledger terminal add`.",
                    ))
                    .build(),
            ),
        );
    for (name, r) in shared_responses() {
        components = components.response(name, r.build());
    }

    let mut paths = Paths::new();
    for op in operations() {
        let (method, path) = (op.method.clone(), op.path);
        paths.add_path_operation(path, vec![method], op.build());
    }

    let tags = [
        ("operations", "Money-moving operations (idempotent)."),
        (
            "shifts",
            "Shift close-outs: cash drawer counts for reconciliation (no money moves).",
        ),
        (
            "cards",
            "Card balances and the card feed for terminal replicas.",
        ),
        ("catalog", "Products and prices per point of sale."),
        ("staff", "The staff list, for offline login."),
        ("scans", "The NFC scan log."),
        ("terminals", "The calling terminal."),
        ("webhooks", "Calls from payment providers."),
        ("system", "Health, readiness and this document."),
    ];

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("cashless ledger API")
                .version("1.0.0")
                .description(Some(DESCRIPTION))
                .build(),
        )
        .servers(Some([ServerBuilder::new()
            .url("/")
            .description(Some("The ledger serving this document."))
            .build()]))
        .security(Some([SecurityRequirement::new(
            BEARER,
            Vec::<String>::new(),
        )]))
        .tags(Some(tags.into_iter().map(|(name, description)| {
            TagBuilder::new()
                .name(name)
                .description(Some(description))
                .build()
        })))
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(json()).unwrap()
    }

    /// Every `$ref` in `value`, with where it is.
    fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref"
                        && let Some(target) = v.as_str()
                    {
                        out.push((at.to_owned(), target.to_owned()));
                    }
                    refs(v, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_ref_resolves() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let mut found = Vec::new();
        refs(&doc, "#", &mut found);
        assert!(found.len() > 50, "too few $refs: {}", found.len());
        for (at, target) in &found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: external $ref {target}"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: $ref {target} resolves to nothing"
            );
        }
        // Every schema and shared response is used, so nothing stale lingers.
        let targets: std::collections::HashSet<&str> =
            found.iter().map(|(_, t)| t.as_str()).collect();
        for section in ["schemas", "responses"] {
            for name in doc["components"][section].as_object().unwrap().keys() {
                let target = format!("#/components/{section}/{name}");
                assert!(targets.contains(target.as_str()), "{target} is never used");
            }
        }
    }

    #[test]
    fn every_operation_is_complete() {
        let doc = doc();
        let methods = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(methods.contains(&method.as_str()), "{path}: {method}");
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                assert!(op["summary"].is_string(), "{id}: no summary");
                assert!(op["tags"].is_array(), "{id}: no tag");
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{id}: no responses");
                for (status, r) in responses {
                    let code: u16 = status.parse().unwrap();
                    assert!((100..600).contains(&code), "{id}: {status}");
                    assert!(
                        r.get("$ref").is_some() || r["description"].is_string(),
                        "{id} {status}: no description"
                    );
                }
                // Path parameters are declared, and only those of the template.
                for p in op["parameters"].as_array().into_iter().flatten() {
                    assert!(p["name"].is_string() && p["in"].is_string(), "{id}: {p}");
                    if p["in"] == "path" {
                        assert!(path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())));
                        assert_eq!(p["required"], true, "{id}: path parameter not required");
                    }
                }
            }
        }
    }

    #[test]
    fn terminal_routes_need_the_bearer_and_the_others_nothing() {
        let doc = doc();
        assert_eq!(doc["security"], serde_json::json!([{ "bearerAuth": [] }]));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = matches!(
                    path.as_str(),
                    "/v1/webhooks/stripe" | "/health" | "/ready" | "/v1/openapi.json"
                );
                let expected = if public {
                    serde_json::json!([])
                } else {
                    serde_json::json!([{ "bearerAuth": [] }])
                };
                assert_eq!(op["security"], expected, "{method} {path}");
                assert_eq!(
                    op["responses"].get("401").is_some(),
                    !public,
                    "{method} {path}: 401 listed for exactly the terminal routes"
                );
            }
        }
        let text = json();
        assert!(
            !text.contains("later release"),
            "nothing is promised for later"
        );
    }

    #[test]
    fn the_bounds_are_the_protocols() {
        use crate::protocol::api::*;
        let doc = doc();
        let schema = |name: &str| doc["components"]["schemas"][name].clone();
        let prop = |name: &str, field: &str| schema(name)["properties"][field].clone();
        let cases: Vec<(Value, i64, i64)> = vec![
            (prop("OrderItem", "quantity"), 1, QUANTITY_MAX),
            (
                prop("OrderItem", "unit_price_cents"),
                0,
                UNIT_PRICE_CENTS_MAX,
            ),
            (
                prop("OrderRequest", "total_cents"),
                1,
                ORDER_TOTAL_CENTS_MAX,
            ),
            (
                prop("RechargeRequest", "amount_cents"),
                1,
                RECHARGE_AMOUNT_CENTS_MAX,
            ),
            (
                prop("ShiftCloseout", "cash_cents"),
                0,
                SHIFT_TOTAL_CENTS_MAX,
            ),
            (
                prop("ShiftCloseout", "card_cents"),
                0,
                SHIFT_TOTAL_CENTS_MAX,
            ),
            (
                prop("ShiftCloseout", "counted_cash_cents"),
                0,
                SHIFT_TOTAL_CENTS_MAX,
            ),
            (prop("ShiftCloseout", "count"), 0, SHIFT_COUNT_MAX),
            (prop("Approval", "total_cents"), 1, ORDER_TOTAL_CENTS_MAX),
            (
                prop("Approval", "amount_cents"),
                1,
                RECHARGE_AMOUNT_CENTS_MAX,
            ),
            (
                prop("ShiftRecorded", "difference_cents"),
                -SHIFT_TOTAL_CENTS_MAX,
                SHIFT_TOTAL_CENTS_MAX,
            ),
            (schema("TerminalSeq"), 1, i64::MAX),
        ];
        for (s, min, max) in cases {
            assert_eq!(s["minimum"], min, "{s}");
            assert_eq!(s["maximum"], max, "{s}");
            assert_eq!(s["format"], "int64", "{s}");
        }
        let items = |name: &str, field: &str| {
            let p = prop(name, field);
            (p["minItems"].as_u64(), p["maxItems"].as_u64())
        };
        assert_eq!(
            items("OrderRequest", "items"),
            (Some(1), Some(ORDER_ITEMS_MAX as u64))
        );
        assert_eq!(
            items("ScanUpload", "scans"),
            (Some(1), Some(SCANS_MAX as u64))
        );
        assert_eq!(
            items("BatchRequest", "operations"),
            (Some(1), Some(BATCH_OPERATIONS_MAX as u64))
        );
        let limit = &doc["paths"]["/v1/cards"]["get"]["parameters"][1]["schema"];
        assert_eq!(limit["maximum"], FEED_LIMIT_MAX);
        assert_eq!(limit["default"], FEED_LIMIT_DEFAULT);
    }

    #[test]
    fn requests_refuse_unknown_fields_and_a_batch_entry_is_its_request_plus_type() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "OrderRequest",
            "RechargeRequest",
            "VoidRequest",
            "ShiftCloseout",
            "Scan",
            "ScanUpload",
            "OrderItem",
            "BatchRequest",
        ] {
            assert_eq!(
                schemas[name]["additionalProperties"], false,
                "{name} takes unknown fields"
            );
        }
        for (entry, request, kind) in [
            ("BatchOrder", "OrderRequest", "order"),
            ("BatchRecharge", "RechargeRequest", "recharge"),
            ("BatchVoid", "VoidRequest", "void"),
        ] {
            let e = &schemas[entry];
            let r = &schemas[request];
            assert_eq!(e["properties"]["type"]["enum"], serde_json::json!([kind]));
            let mut fields: Vec<&String> = e["properties"].as_object().unwrap().keys().collect();
            fields.retain(|f| *f != "type");
            let expected: Vec<&String> = r["properties"].as_object().unwrap().keys().collect();
            assert_eq!(fields, expected, "{entry}");
            assert_eq!(e["additionalProperties"], false);
        }
    }

    #[test]
    fn a_scan_may_say_null_for_its_terminal_seq_as_terminals_send_it() {
        // Issue 11: the ledger accepts `"terminal_seq": null`, and the document said it may
        // not. Terminals send null for a scan that led to no operation, so the document
        // changed.
        let scan: Scan = serde_json::from_str(
            r#"{"card_uid": "04A1B2C3", "result": "ok", "reader": "r",
                "scanned_at": "2026-07-01T21:14:03Z", "terminal_seq": null}"#,
        )
        .unwrap();
        assert_eq!(scan.terminal_seq, None);
        assert_eq!(
            serde_json::to_value(&scan).unwrap()["terminal_seq"],
            Value::Null
        );
        let doc = doc();
        let seq = &doc["components"]["schemas"]["Scan"]["properties"]["terminal_seq"];
        let branches = seq["oneOf"].as_array().unwrap();
        assert!(
            branches.contains(&serde_json::json!({"type": "null"})),
            "{seq}"
        );
    }

    #[test]
    fn since_is_documented_as_the_digits_the_ledger_takes() {
        // Issue 11: `since` was documented as any string; the ledger takes digits or nothing.
        let doc = doc();
        let params = doc["paths"]["/v1/cards"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let since = params.iter().find(|p| p["name"] == "since").unwrap();
        assert_eq!(since["schema"]["pattern"], "^[0-9]{0,19}$");
        assert_eq!(since["required"], false);
        let cursor = &doc["components"]["schemas"]["CardFeed"]["properties"]["next_cursor"];
        assert_eq!(cursor["pattern"], "^[0-9]{1,19}$");
    }

    #[test]
    fn the_examples_are_accepted_by_the_parsers() {
        let doc = doc();
        let example = |name: &str| doc["components"]["schemas"][name]["examples"][0].to_string();
        let order: OrderRequest = serde_json::from_str(&example("OrderRequest")).unwrap();
        order.validate().unwrap();
        let recharge: RechargeRequest = serde_json::from_str(&example("RechargeRequest")).unwrap();
        recharge.validate().unwrap();
        let void: VoidRequest = serde_json::from_str(&example("VoidRequest")).unwrap();
        void.validate().unwrap();
        let shift = crate::ledger::api::parse_shift_closeout(example("ShiftCloseout").as_bytes());
        assert!(shift.is_ok(), "{shift:?}");
        for entry in ["BatchOrder", "BatchRecharge", "BatchVoid"] {
            let op = crate::ledger::api::parse_batch_entry(&example(entry));
            assert!(op.is_ok(), "{entry}: {op:?}");
        }
    }
}
