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

use crate::domain::{AgeFlag, CardUid, Cents, MinAge, ProductId, StaffId};
use crate::protocol::api::{
    Approval, BATCH_OPERATIONS_MAX, CardKeyReceipt, CardKeyRequest, CardStatus, FEED_LIMIT_DEFAULT,
    FEED_LIMIT_MAX, OrderRequest, RechargeRequest, ReturnRequest, SCANS_MAX, Scan, ShiftCloseout,
    ShiftRecorded, StaffRole, StatusReceipt, TerminalKind, TerminalStatusReport, VoidOutcome,
    VoidRequest, VoucherGrantRequest,
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

mod errors;
mod paths;
mod responses;
mod shapes;

use errors::*;
use paths::*;
use responses::*;
use shapes::*;

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
**Idempotency.** Every POST that changes money or vouchers (`/v1/orders`, `/v1/recharges`, \
`/v1/returns`, `/v1/voucher-grants`, `/v1/voids`, and each operation of `/v1/batch`) and `/v1/shifts` is idempotent on its `client_request_id`; \
see those operations.";

/// The whole document.
pub fn document() -> OpenApi {
    let mut schemas = Vec::new();
    add::<OrderRequest>(&mut schemas);
    add::<RechargeRequest>(&mut schemas);
    add::<ReturnRequest>(&mut schemas);
    add::<VoucherGrantRequest>(&mut schemas);
    add::<VoidRequest>(&mut schemas);
    add::<ShiftCloseout>(&mut schemas);
    add::<ShiftRecorded>(&mut schemas);
    add::<Approval>(&mut schemas);
    add::<VoidOutcome>(&mut schemas);
    add::<ScanUpload>(&mut schemas);
    add::<ScanReceipt>(&mut schemas);
    add::<Card>(&mut schemas);
    add::<CardKeyRequest>(&mut schemas);
    add::<CardKeyReceipt>(&mut schemas);
    add::<CardFeed>(&mut schemas);
    add::<Catalog>(&mut schemas);
    add::<StaffFeed>(&mut schemas);
    add::<TerminalMe>(&mut schemas);
    add::<TerminalStatusReport>(&mut schemas);
    add::<StatusReceipt>(&mut schemas);
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
                    "/v1/webhooks/stripe" | "/health" | "/ready" | "/metrics" | "/v1/openapi.json"
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
                prop("ReturnRequest", "amount_cents"),
                1,
                RETURN_AMOUNT_CENTS_MAX,
            ),
            (prop("ReturnItem", "quantity"), 1, QUANTITY_MAX),
            (
                prop("VoucherGrantRequest", "units"),
                1,
                VOUCHER_GRANT_UNITS_MAX,
            ),
            (
                prop("ReturnItem", "unit_deposit_cents"),
                0,
                UNIT_PRICE_CENTS_MAX,
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
            items("ReturnRequest", "items"),
            (Some(1), Some(RETURN_ITEMS_MAX as u64))
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
            "ReturnRequest",
            "ReturnItem",
            "VoucherGrantRequest",
            "VoidRequest",
            "ShiftCloseout",
            "Scan",
            "ScanUpload",
            "TerminalStatusReport",
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
            ("BatchReturn", "ReturnRequest", "return"),
            ("BatchVoucherGrant", "VoucherGrantRequest", "voucher_grant"),
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
        let cups: ReturnRequest = serde_json::from_str(&example("ReturnRequest")).unwrap();
        cups.validate().unwrap();
        let grant: VoucherGrantRequest =
            serde_json::from_str(&example("VoucherGrantRequest")).unwrap();
        grant.validate().unwrap();
        let shift = crate::ledger::api::parse_shift_closeout(example("ShiftCloseout").as_bytes());
        assert!(shift.is_ok(), "{shift:?}");
        for entry in [
            "BatchOrder",
            "BatchRecharge",
            "BatchVoid",
            "BatchReturn",
            "BatchVoucherGrant",
        ] {
            let op = crate::ledger::api::parse_batch_entry(&example(entry));
            assert!(op.is_ok(), "{entry}: {op:?}");
        }
    }
}
