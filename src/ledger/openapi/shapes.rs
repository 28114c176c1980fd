//! The shapes the handlers write with `json!`: documentation only, never built. The fuzzer
//! checks every answer of the live server against them (`response_schema_conformance`).

use super::*;

/// A card's balance and status (`GET /v1/cards/{uid}`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "card_uid": "04A1B2C3D4E5F6", "balance_cents": 1100, "status": "active",
    "updated_at": "2026-07-01T21:14:03.000Z", "age_flag": null, "voucher_units": 0,
    "key_version": 1
})))]
pub(super) struct Card {
    card_uid: CardUid,
    /// The balance in cents; below zero after offline sales.
    balance_cents: Cents,
    status: CardStatus,
    /// The last change of balance, status or age flag (RFC 3339, UTC).
    #[schema(format = DateTime)]
    updated_at: String,
    /// What staff saw on the holder's ID; null: nobody said the holder is a minor.
    #[schema(required = true)]
    age_flag: Option<AgeFlag>,
    /// Voucher units on the card (staff and artist drinks); below zero only after offline
    /// use beyond them.
    voucher_units: i64,
    /// The festival master key version the card was issued with (`PUT
    /// /v1/cards/{uid}/key`); null: a UID-only card.
    #[schema(required = true, minimum = 1, maximum = 255)]
    key_version: Option<u8>,
}

/// One card of the feed.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct CardFeedEntry {
    card_uid: CardUid,
    /// The balance in cents; below zero after offline sales.
    balance_cents: Cents,
    status: CardStatus,
    /// Ledger-wide, strictly increasing version of the card's last change; a replica keeps
    /// the entry with the highest version.
    #[schema(minimum = 1)]
    version: i64,
    /// What staff saw on the holder's ID (`under_16` forbids products sold from 16 and 18,
    /// `under_18` those from 18); null: nobody said the holder is a minor.
    #[schema(required = true)]
    age_flag: Option<AgeFlag>,
    /// Voucher units on the card.
    voucher_units: i64,
    /// The master key version the card was issued with; null: a UID-only card. A terminal
    /// in AES mode refuses a card without AES that claims to be one issued with a key.
    #[schema(required = true, minimum = 1, maximum = 255)]
    key_version: Option<u8>,
}

/// A page of the card feed (`GET /v1/cards`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "cards": [
        {"card_uid": "04A1B2C3D4E5F6", "balance_cents": 1100, "status": "active", "version": 1041,
         "age_flag": null, "voucher_units": 0, "key_version": 1},
        {"card_uid": "A1B2C3D4", "balance_cents": -350, "status": "blocked", "version": 1042,
         "age_flag": "under_18", "voucher_units": 0, "key_version": null}
    ],
    "next_cursor": "1042"
})))]
pub(super) struct CardFeed {
    /// Cards whose balance, status or age flag changed after the cursor, oldest change first, each
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
pub(super) struct Product {
    product_id: ProductId,
    /// The name on the terminal's screen.
    #[schema(example = "Beer 0.5 l")]
    name: String,
    /// The price of one unit in cents, VAT included; 0 for an open price.
    #[schema(value_type = i64, minimum = 0, example = 450)]
    price_cents: Cents,
    /// The grouping on the screen; null when the product has none.
    #[schema(required = true, example = "drinks")]
    category: Option<String>,
    /// The VAT rate it is sold at: a name of the ledger's `[taxes]` (the product's own, or
    /// the default rate). Prices are gross: each order line's gross is split into net and
    /// tax at this rate.
    #[schema(example = "standard", pattern = "^[a-z0-9_-]{1,32}$")]
    tax_rate: String,
    /// That rate in basis points of the net amount (1900: 19 %).
    #[schema(minimum = 0, maximum = 10_000, example = 1900)]
    tax_rate_basis_points: u32,
    /// The age it is sold from: 16 or 18; null: anyone. A card whose age flag says its
    /// holder is younger is refused it (`AGE_RESTRICTED`).
    #[schema(required = true, value_type = Option<u8>, minimum = 16, maximum = 18, example = 16)]
    min_age: Option<MinAge>,
    /// Null for a fixed price; for an open price, the largest unit price in cents staff may
    /// type (an order line must charge 1 cent to this).
    #[schema(required = true, value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    open_price_max_cents: Option<Cents>,
    /// Null: paid in money only; else the voucher units one unit costs when vouchers pay
    /// it (an order uses the card's vouchers first).
    #[schema(required = true, minimum = 1, maximum = 100)]
    voucher_price: Option<i64>,
    /// True for a returnable item (a cup): its price is a deposit, not a sale (no VAT), and
    /// handed back (`POST /v1/returns`) it is credited to a card.
    returnable: bool,
    /// Null, or the returnable item this product comes in (a product id of the same point of
    /// sale): a terminal adds one of it, at its price, per unit sold.
    #[schema(required = true, value_type = Option<String>, example = "cup")]
    deposit_product_id: Option<String>,
}

/// The products on sale at the calling terminal's point of sale (`GET /v1/catalog`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({
    "point_of_sale": "Main Bar", "currency": "EUR",
    "products": [{"product_id": "beer-05", "name": "Beer 0.5 l", "price_cents": 450, "category": "drinks",
                  "tax_rate": "standard", "tax_rate_basis_points": 1900, "min_age": 16,
                  "open_price_max_cents": null, "voucher_price": 1, "returnable": false,
                  "deposit_product_id": "cup"}]
})))]
pub(super) struct Catalog {
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
pub(super) struct StaffMember {
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
pub(super) struct StaffFeed {
    staff: Vec<StaffMember>,
}

/// A batch of scan-log entries (`POST /v1/scans`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanUpload {
    /// 1 to 1000 scans (`SCANS_MAX`).
    #[schema(min_items = 1, max_items = 1000)]
    scans: Vec<Scan>,
}

/// What an upload of scans did.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(examples(json!({"accepted": 118, "duplicates": 2})))]
pub(super) struct ScanReceipt {
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
pub(super) struct TopUpLimits {
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
pub(super) struct TerminalMe {
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
pub(super) struct BatchResult {
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
pub(super) struct BatchResponse {
    /// One result per operation, in the order of the request.
    #[schema(min_items = 1, max_items = 500)]
    results: Vec<BatchResult>,
}

/// A Stripe Event object, as Stripe sends it. Only the fields the ledger reads are listed;
/// any others are accepted and ignored.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct StripeEvent {
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
pub(super) struct StripeEventData {
    /// The Checkout Session, or the Charge of a `charge.refunded`: an object whose fields
    /// depend on the event type (`id`, `payment_status`, `amount_total`, `currency`,
    /// `metadata.card_uid`, `payment_intent`, `amount_refunded`).
    #[schema(value_type = Object)]
    object: serde_json::Value,
}

/// The answer to a Stripe delivery: what the ledger did with the event.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct WebhookAck {
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
pub(super) struct Health {
    /// `ok` (`/health`) or `ready` (`/ready`).
    #[schema(schema_with = health_status)]
    status: (),
}

pub(super) fn string_enum(values: &[&str], description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

pub(super) fn health_status() -> Object {
    string_enum(&["ok", "ready"], "`ok` (`/health`) or `ready` (`/ready`).")
}

pub(super) fn webhook_outcome() -> Object {
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

pub(super) fn batch_result_body() -> RefOr<Schema> {
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
