//! Every route of the router in `api/mod.rs`: its parameters, request body, responses and
//! security, and the batch schemas.

use super::*;

pub(super) const IDEMPOTENCY: &str = "**Idempotency.** `client_request_id` is the idempotency key (an \
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
pub(super) enum Access {
    Terminal,
    Public,
}

pub(super) struct Op {
    pub(super) method: HttpMethod,
    pub(super) path: &'static str,
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

    pub(super) fn build(self) -> Operation {
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

/// An operation of a batch: the body of `POST /v1/orders`, `/v1/recharges`, `/v1/voids`,
/// `/v1/returns` or `/v1/voucher-grants` with a `type` naming which, derived from the
/// request type.
pub(super) fn batch_entry<T: ToSchema>(kind: &str) -> RefOr<Schema> {
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

pub(super) fn batch_schemas() -> Vec<(String, RefOr<Schema>)> {
    let entries = [
        ("order", "BatchOrder", batch_entry::<OrderRequest>("order")),
        (
            "recharge",
            "BatchRecharge",
            batch_entry::<RechargeRequest>("recharge"),
        ),
        ("void", "BatchVoid", batch_entry::<VoidRequest>("void")),
        (
            "return",
            "BatchReturn",
            batch_entry::<ReturnRequest>("return"),
        ),
        (
            "voucher_grant",
            "BatchVoucherGrant",
            batch_entry::<VoucherGrantRequest>("voucher_grant"),
        ),
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

/// The `{uid}` of the `/v1/cards/{uid}` routes.
fn uid_param() -> Parameter {
    let mut p = Parameter::new("uid");
    p.parameter_in = ParameterIn::Path;
    p.required = Required::True;
    p.description = Some(
        "The card's UID: uppercase hex, 8, 14 or 20 characters (lowercase is refused with 400)."
            .into(),
    );
    p.schema = Some(Ref::from_schema_name(CardUid::name()).into());
    p
}

pub(super) fn operations() -> Vec<Op> {
    use ErrorCode as C;
    use HttpMethod::{Get, Post, Put};
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
                "Bar terminals only (a checkpoint terminal or return station gets 403).\n\n\
                 `items`: 1 to 50 lines, `quantity` 1 to 99, and `total_cents` must equal the \
                 sum of the lines.\n\n\
                 `mode: \"online\"`: the terminal waits for the decision. Declined with 404 \
                 (unknown card), 423 (blocked card), 422 (product or price not in this point of \
                 sale's catalog, an open price outside 1 cent to its maximum, or a product the \
                 card's age flag forbids: `AGE_RESTRICTED`) or 402 (balance too low). The \
                 card's vouchers pay first for products with a voucher price; the approval \
                 says how many (`vouchers_used`) and what money it took (`money_cents`).\n\n\
                 `mode: \"offline\"`: the sale already happened and is applied even if the \
                 balance goes below zero (the card is then blocked for debt, flag \
                 `NEGATIVE_BALANCE`), for unknown cards too (created with balance 0, flag \
                 `CARD_CREATED`), and at the terminal's prices (a difference from the catalog \
                 is recorded, flag `PRICE_DIFFERS_FROM_CATALOG`), and for a card whose age \
                 flag forbids a product (flag `AGE_RESTRICTED`), and by a staff member \
                 disabled since (flag `STAFF_INACTIVE`). Only 400, 401, 403, 422 \
                 `IDEMPOTENCY_KEY_REUSED` and 409 `OPERATION_VOIDED` refuse an offline order \
                 (plus the retryable 409 `DUPLICATE_REQUEST` and 5xx).\n\n\
                 Checks, in order: authentication (401), terminal kind (403), body (400/413), \
                 idempotency (replay, or 422 `IDEMPOTENCY_KEY_REUSED`), tombstone (409), staff \
                 (403), card exists (404), card blocked (423), catalog (422), age (422), funds \
                 (402).\n\n\
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
            .answer("422", stored("`UNKNOWN_PRODUCT` / `PRICE_MISMATCH` (online only): a product or price that is not in the current catalog of this point of sale, or an open price outside 1 cent to its maximum; `AGE_RESTRICTED` (online only): the card's age flag forbids a product of the order (stored under the key); `IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", error_schema(&[C::UnknownProduct, C::PriceMismatch, C::AgeRestricted, C::IdempotencyKeyReused])))
            .answer("423", stored("`CARD_BLOCKED` (online only): the card is blocked (lost, or in debt); `details.balance_cents`, `details.status`. Stored under the key.", error_schema(&[C::CardBlocked])))
            .usual(),
        Op::new(Post, "/v1/recharges", "createRecharge", "operations", "Top up a card at a checkpoint")
            .describe(format!(
                "Checkpoint terminals only (a bar terminal or return station gets 403). `payment_method` is \
                 `cash` or `card`. The staff member must exist, be active (online top-ups) and \
                 have the role `cashier` or `supervisor`.\n\n\
                 An unknown card is created (flag `CARD_CREATED`). Online top-ups beyond the \
                 configured per-top-up or maximum-balance limits are declined with 422 \
                 `LIMIT_EXCEEDED`; offline top-ups are applied anyway and flagged \
                 `LIMIT_EXCEEDED`. A top-up that brings a card blocked for debt back to zero or \
                 above unblocks it. An `age_flag` (`under_16`, `under_18`) is set on the card \
                 with the top-up.\n\n{IDEMPOTENCY}"
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
        Op::new(Post, "/v1/returns", "createReturn", "operations", "Credit the deposits of returnable items handed back")
            .describe(format!(
                "Bar terminals and return stations (a checkpoint gets 403). Returnable items \
                 (cups) handed back: each line names a returnable item of the terminal's \
                 point of sale, how many, and the deposit credited per item; `amount_cents` is \
                 their sum. The staff member must exist, be active (online returns) and have \
                 the role `bar` or `supervisor`.\n\n\
                 An unknown card is created (flag `CARD_CREATED`). Online: an item that is not \
                 returnable here is declined with 422 `UNKNOWN_PRODUCT`, a deposit other than \
                 the catalog's with 422 `PRICE_MISMATCH`, a card blocked as lost with 423, a \
                 balance past the maximum with 422 `LIMIT_EXCEEDED`. Offline (the terminal \
                 already credited): applied as sent, a difference from the catalog flagged \
                 `PRICE_DIFFERS_FROM_CATALOG`, a balance past the maximum `LIMIT_EXCEEDED`. \
                 Posted `card:<UID>` +amount, `deposits` -amount; a void reverses it.\n\n\
                 {IDEMPOTENCY}"
            ))
            .param(idempotency_key())
            .body(Ref::from_schema_name(ReturnRequest::name()), "The items handed back.")
            .answer("201", stored("Applied (or the stored approval, replayed): the approval with `amount_cents` instead of `total_cents`.", Ref::from_schema_name(Approval::name())))
            .shared("400", "BadRequest")
            .answer("403", error("`FORBIDDEN`: the terminal is a checkpoint, or the staff member does not exist, is inactive (online returns only) or lacks the role `bar` or `supervisor`.", &[C::Forbidden]))
            .answer("409", error("`OPERATION_VOIDED`: this `client_request_id` was voided before it arrived (tombstone); `DUPLICATE_REQUEST`: the same key is being processed right now, retry later.", &[C::OperationVoided, C::DuplicateRequest]))
            .shared("413", "PayloadTooLarge")
            .answer("422", stored("`UNKNOWN_PRODUCT` / `PRICE_MISMATCH` (online only): an item that is not returnable at this point of sale, or a deposit other than its price; `LIMIT_EXCEEDED` (online only): the resulting balance would be above the maximum balance (all stored under the key). `IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", error_schema(&[C::UnknownProduct, C::PriceMismatch, C::LimitExceeded, C::IdempotencyKeyReused])))
            .answer("423", stored("`CARD_BLOCKED` (online only): the card is blocked as lost. Stored under the key.", error_schema(&[C::CardBlocked])))
            .usual(),
        Op::new(Post, "/v1/voucher-grants", "createVoucherGrant", "operations", "Give a card voucher units at a checkpoint")
            .describe(format!(
                "Checkpoint terminals only (a bar or return station gets 403), and only a \
                 staff member with the role `supervisor` (free drinks are a supervisor's \
                 decision). Gives the card `units` voucher units (staff and artist drinks): \
                 products with a voucher price are paid with them first. Vouchers are never \
                 money: the grant changes no balance and has no posting.\n\n\
                 An unknown card is created (flag `CARD_CREATED`). Online: a card blocked as \
                 lost is declined with 423 `CARD_BLOCKED`, and a card that would hold more than \
                 10,000 units (`CARD_VOUCHER_UNITS_MAX`) with 422 `LIMIT_EXCEEDED` \
                 (`details.limit` = `voucher_units_max`, `details.limit_units`, \
                 `details.voucher_units`). Offline (the supervisor already told the holder): \
                 applied, past the maximum flagged `LIMIT_EXCEEDED`. A void takes the units \
                 back (the card's units may go below zero when some were used).\n\n\
                 {IDEMPOTENCY}"
            ))
            .param(idempotency_key())
            .body(Ref::from_schema_name(VoucherGrantRequest::name()), "The grant.")
            .answer("201", stored("Applied (or the stored approval, replayed): the approval, its balances unchanged, with `vouchers_granted` and the card's `voucher_units` after.", Ref::from_schema_name(Approval::name())))
            .shared("400", "BadRequest")
            .answer("403", error("`FORBIDDEN`: the terminal is not a checkpoint, or the staff member does not exist, is inactive (online grants only) or is not a supervisor.", &[C::Forbidden]))
            .answer("409", error("`OPERATION_VOIDED`: this `client_request_id` was voided before it arrived (tombstone); `DUPLICATE_REQUEST`: the same key is being processed right now, retry later.", &[C::OperationVoided, C::DuplicateRequest]))
            .shared("413", "PayloadTooLarge")
            .answer("422", stored("`LIMIT_EXCEEDED` (online only): the card would hold more than 10,000 voucher units (stored under the key). `IDEMPOTENCY_KEY_REUSED`: the key was used for a different request.", error_schema(&[C::LimitExceeded, C::IdempotencyKeyReused])))
            .answer("423", stored("`CARD_BLOCKED` (online only): the card is blocked as lost. Stored under the key.", error_schema(&[C::CardBlocked])))
            .usual(),
        Op::new(Post, "/v1/voids", "createVoid", "operations", "Reverse an order, top-up, deposit return or voucher grant by its client_request_id")
            .describe(format!(
                "Any terminal kind, but only for the terminal's own operations (403 \
                 otherwise); any staff member known to the ledger (a void settles what already \
                 happened, so a deactivation since then does not refuse it). Used for customer \
                 refunds, staff errors, and by a terminal to settle an *in doubt* online \
                 attempt (sent, but no answer received).\n\n\
                 Target applied: reversed in full, 201 `voided` with the new balance \
                 (`refunded_cents` is positive for an order, negative for a top-up or a \
                 deposit return, 0 for a voucher grant; `vouchers_returned`, when vouchers \
                 moved, is what went back to the card: a voided order's vouchers, or minus a \
                 voided grant's units; a card \
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
            .param(uid_param())
            .answer("200", response("The card's current balance and status.", Ref::from_schema_name(Card::name())))
            .answer("400", error("`INVALID_REQUEST`: the UID is not 8, 14 or 20 uppercase hex characters (`details.field` = `uid`).", &[C::InvalidRequest]))
            .answer("404", error("`CARD_NOT_FOUND`: the ledger has never seen this card.", &[C::CardNotFound]))
            .usual(),
        Op::new(Put, "/v1/cards/{uid}/key", "putCardKey", "cards", "Record the key a card was issued with")
            .describe(
                "Checkpoint terminals only (a bar or return station gets 403): `cashless card \
                 issue` calls it once the card holds its new AES key. Records the festival \
                 master key version the card's key was diversified from (never a key); every \
                 terminal learns it from the card feed (`key_version`) and, in AES mode, \
                 refuses a UID-only card that claims to be this one. A card the ledger has not \
                 seen is created with nothing on it. Idempotent: the same version again \
                 answers 200 with `changed: false` and writes nothing; a newer version \
                 replaces the old one (a card re-issued under a newer master key). Changes no \
                 money; audited (`card_key`).",
            )
            .param(uid_param())
            .body(Ref::from_schema_name(CardKeyRequest::name()), "The master key version.")
            .answer("200", response("Recorded (or recorded already: `changed: false`).", Ref::from_schema_name(CardKeyReceipt::name())))
            .shared("400", "BadRequest")
            .answer("403", error("`FORBIDDEN`: the terminal is not a checkpoint.", &[C::Forbidden]))
            .answer("409", error("`CARD_KEY_CONFLICT`: the card is recorded with a newer key version (cards are never issued back to an older key), or it was replaced by another card.", &[C::CardKeyConflict]))
            .shared("413", "PayloadTooLarge")
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
        Op::new(Post, "/v1/terminals/me/status", "postTerminalStatus", "terminals", "Report the terminal's state")
            .describe(
                "The calling terminal's state, for headquarters' fleet page: its operations \
                 waiting, in doubt and rejected, the age of the oldest one not yet \
                 acknowledged, the card-feed cursor it applied, its reader's state, its \
                 software version and its clock (`reported_at`, compared with the ledger's: \
                 the answer's `clock_offset_ms`). A terminal sends it every status interval, \
                 and at once when its reader, its rejected operations, or whether \
                 operations wait or are in doubt changed. A report \
                 replaces the terminal's previous one, so sending it again is harmless: only \
                 the time of last contact moves. Any terminal kind; changes no money.",
            )
            .body(Ref::from_schema_name(TerminalStatusReport::name()), "The terminal's state.")
            .answer("200", response("Stored; the ledger's clock and the terminal clock's offset from it.", Ref::from_schema_name(StatusReceipt::name())))
            .shared("400", "BadRequest")
            .shared("413", "PayloadTooLarge")
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
        Op::new(Get, "/metrics", "metrics", "system", "Prometheus metrics")
            .public()
            .describe("The ledger process's metrics in the Prometheus text format 0.0.4 \
                       (`Content-Type: text/plain; version=0.0.4; charset=utf-8`), all named \
                       `cashless_...`: requests by route and status and their latency, operations \
                       by type, mode and outcome, idempotent replays, offline operations' age at \
                       arrival, Stripe events by outcome, and, read from the database at each \
                       scrape, cards blocked for debt and every terminal's last contact, highest \
                       contiguous `terminal_seq` and missing ones; the database connections. \
                       Always 200: a failed database read keeps the last values and counts \
                       `cashless_metrics_scrape_errors_total`. No authentication: keep it on the \
                       festival's network.")
            .answer("200", text_response("The metrics.", ObjectBuilder::new().schema_type(Type::String))),
    ]
}

pub(super) fn etag_header() -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
    header.description = Some("The catalog's entity tag, for `If-None-Match`.".into());
    header
}
