//! The error bodies: one schema per set of codes a route can answer, with each code's
//! `details`.

use super::*;

pub(super) fn int64() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// The error shape, and the schemas of `details` by code.
pub(super) fn error_schemas() -> Vec<(String, RefOr<Schema>)> {
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
             `UNKNOWN_PRODUCT`, `PRICE_MISMATCH`, `AGE_RESTRICTED` and `PAYLOAD_TOO_LARGE`; for \
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
        .description(Some(
            "`catalog_price_cents` for a product with a fixed price; `open_price_max_cents` \
             for one with an open price (the line must charge 1 cent to it).",
        ))
        .property("product_id", Ref::from_schema_name(ProductId::name()))
        .required("product_id")
        .property("catalog_price_cents", int64())
        .property("open_price_max_cents", int64())
        .property("unit_price_cents", int64())
        .required("unit_price_cents");
    let age = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "The first line whose product the card's age flag forbids.",
        ))
        .property("product_id", Ref::from_schema_name(ProductId::name()))
        .required("product_id")
        .property(
            "min_age",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([16, 18]))
                .description(Some("The age the product is sold from.")),
        )
        .required("min_age")
        .property("age_flag", Ref::from_schema_name(AgeFlag::name()))
        .required("age_flag");
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
        ("AgeRestrictedDetails".into(), age.into()),
        ("PayloadTooLargeDetails".into(), too_large.into()),
    ]
}

/// The `details` schema that goes with a code, if it has one.
pub(super) fn details_of(code: ErrorCode) -> Option<(&'static str, bool)> {
    match code {
        ErrorCode::InvalidRequest => Some(("InvalidRequestDetails", false)),
        ErrorCode::InsufficientFunds => Some(("InsufficientFundsDetails", true)),
        ErrorCode::CardBlocked => Some(("CardBlockedDetails", true)),
        ErrorCode::LimitExceeded => Some(("LimitExceededDetails", true)),
        ErrorCode::UnknownProduct => Some(("UnknownProductDetails", true)),
        ErrorCode::PriceMismatch => Some(("PriceMismatchDetails", true)),
        ErrorCode::AgeRestricted => Some(("AgeRestrictedDetails", true)),
        ErrorCode::PayloadTooLarge => Some(("PayloadTooLargeDetails", true)),
        _ => None,
    }
}

/// The error shape narrowed to `codes` (and to their `details`, when all share one).
pub(super) fn error_schema(codes: &[ErrorCode]) -> RefOr<Schema> {
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
