//! Black-box tests of the ledger HTTP API (docs/ledger-api.md).
//!
//! Each test starts its own ledger (real binary, real SQLite file, real HTTP) through the
//! shared harness in `common`, and drives it as a terminal would. The Stripe webhook and
//! `/metrics` are tested elsewhere.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Tables that hold money or the state of cards: a decline or a refused request must leave
/// them exactly as they were.
const MONEY_TABLES: &[&str] = &[
    "cards",
    "bar_orders",
    "bar_order_items",
    "recharges",
    "voids",
    "postings",
];

/// A dump of the money tables only (a stored decline writes its idempotency record, so the
/// whole-database fingerprint legitimately changes; the money must not).
fn money(l: &Ledger) -> String {
    l.db_fingerprint_of(MONEY_TABLES)
}

/// Posts an order from the terminal of `token` with its next `terminal_seq`.
async fn sell(
    l: &Ledger,
    token: &str,
    uid: &str,
    items: &[(&str, i64, i64)],
    mode: &str,
) -> (Value, Resp) {
    let body = order_body(uid, l.seq(token), items, mode);
    let resp = l.post("/v1/orders", token, &body).await;
    (body, resp)
}

/// Posts a top-up from cp-1 with its next `terminal_seq`.
async fn recharge(l: &Ledger, uid: &str, amount: i64, method: &str, mode: &str) -> (Value, Resp) {
    let body = recharge_body(uid, l.seq(&l.checkpoint_token), amount, method, mode);
    let resp = l.post("/v1/recharges", &l.checkpoint_token, &body).await;
    (body, resp)
}

/// Posts a void of `target` from the terminal of `token` with its next `terminal_seq`.
async fn void(l: &Ledger, token: &str, target: &str, staff: &str) -> (Value, Resp) {
    let body = void_body(target, l.seq(token), "customer_refund", staff);
    let resp = l.post("/v1/voids", token, &body).await;
    (body, resp)
}

const BEER: (&str, i64, i64) = ("beer-05", 1, BEER_CENTS);
const WATER: (&str, i64, i64) = ("water", 1, WATER_CENTS);
const COCKTAIL: (&str, i64, i64) = ("cocktail", 1, COCKTAIL_CENTS);

#[track_caller]
fn assert_uuid(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, got {v}"));
    assert!(
        uuid::Uuid::parse_str(s).is_ok(),
        "{what} must be a UUID, got {s:?}"
    );
}

#[track_caller]
fn assert_time(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, got {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} must be RFC 3339, got {s:?}: {e}"));
    assert_eq!(
        t.offset().local_minus_utc(),
        0,
        "{what} must be UTC, got {s:?}"
    );
}

/// Every key of `expected` is in `actual` with the same value.
#[track_caller]
fn assert_subset(actual: &Value, expected: &Value) {
    let Some(expected) = expected.as_object() else {
        assert_eq!(actual, expected);
        return;
    };
    for (k, v) in expected {
        assert_eq!(&actual[k], v, "field {k:?} of {actual}");
    }
}

/// The flags of an approval, as strings.
fn flags(body: &Value) -> Vec<String> {
    body["flags"]
        .as_array()
        .unwrap_or_else(|| panic!("flags must be an array: {body}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

/// An approval of an order (`total_cents`) or top-up (`amount_cents`), checked in full.
#[track_caller]
fn assert_approval(
    resp: &Resp,
    req: &Value,
    previous: i64,
    new: i64,
    card_status: &str,
    expected_flags: &[&str],
) {
    resp.assert_status(201);
    let b = &resp.body;
    assert_uuid(&b["transaction_id"], "transaction_id");
    assert_eq!(b["client_request_id"], req["client_request_id"], "{b}");
    assert_eq!(b["status"], "approved", "{b}");
    assert_eq!(b["card_uid"], req["card_uid"], "{b}");
    if req.get("amount_cents").is_some() {
        assert_eq!(b["amount_cents"], req["amount_cents"], "{b}");
    } else {
        assert_eq!(b["total_cents"], req["total_cents"], "{b}");
    }
    assert_eq!(b["previous_balance_cents"], json!(previous), "{b}");
    assert_eq!(b["new_balance_cents"], json!(new), "{b}");
    assert_eq!(b["card_status"], card_status, "{b}");
    assert_time(&b["processed_at"], "processed_at");
    let mut got = flags(b);
    got.sort();
    let mut want: Vec<String> = expected_flags.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(got, want, "flags of {b}");
}

/// A card as `GET /v1/cards/{uid}` reports it: (balance, status).
async fn card_state(l: &Ledger, uid: &str) -> (i64, String) {
    let r = l.card(uid).await;
    r.assert_status(200);
    (
        r.body["balance_cents"].as_i64().unwrap(),
        r.body["status"].as_str().unwrap().to_owned(),
    )
}

/// Adds `"type"` to an operation body for `/v1/batch`.
fn tagged(kind: &str, body: &Value) -> Value {
    let mut op = body.clone();
    op["type"] = json!(kind);
    op
}

/// Sets a staff member inactive. The admin CLI has no command for it, so the test writes
/// the `staff` table directly.
fn deactivate_staff(l: &Ledger, staff_id: &str) {
    let changed = l.execute(&format!(
        "UPDATE staff SET active = false WHERE staff_id = '{staff_id}'"
    ));
    assert_eq!(changed, 1, "staff {staff_id} must exist");
}

// ---------------------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------------------

async fn approvals_have_the_contract_shape_and_move_balances(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);

    // A top-up on an unknown card creates it.
    let (req, resp) = recharge(&l, &card, 2000, "cash", "online").await;
    resp.assert_status(201);
    assert_eq!(resp.body["previous_balance_cents"], 0);
    assert_eq!(resp.body["new_balance_cents"], 2000);
    assert_eq!(resp.body["amount_cents"], 2000);
    assert_eq!(resp.body["client_request_id"], req["client_request_id"]);
    assert!(
        resp.body.get("total_cents").is_none(),
        "a top-up has no total_cents: {}",
        resp.body
    );
    assert_eq!(flags(&resp.body), vec!["CARD_CREATED"], "{}", resp.body);
    assert_eq!(resp.body["card_status"], "active");
    assert!(!resp.replayed(), "a first answer is not a replay");

    // Two beers.
    let (req, resp) = sell(
        &l,
        &l.bar_token,
        &card,
        &[("beer-05", 2, BEER_CENTS)],
        "online",
    )
    .await;
    assert_approval(&resp, &req, 2000, 1100, "active", &[]);
    assert!(
        resp.body.get("amount_cents").is_none(),
        "an order has no amount_cents: {}",
        resp.body
    );
    assert!(!resp.replayed());
    assert_eq!(card_state(&l, &card).await, (1100, "active".to_owned()));

    // Several lines; the other bar terminal; a supervisor may sell.
    let mut body = order_body(
        &card,
        l.seq(&l.bar2_token),
        &[WATER, ("cocktail", 1, COCKTAIL_CENTS)],
        "online",
    );
    body["staff_id"] = json!(SUPER_STAFF);
    let resp = l.post("/v1/orders", &l.bar2_token, &body).await;
    assert_approval(&resp, &body, 1100, 0, "active", &[]);

    // A card payment top-up by a supervisor.
    let mut body = recharge_body(&card, l.seq(&l.checkpoint_token), 4500, "card", "online");
    body["staff_id"] = json!(SUPER_STAFF);
    let resp = l.post("/v1/recharges", &l.checkpoint_token, &body).await;
    assert_approval(&resp, &body, 0, 4500, "active", &[]);

    // Exactly the balance may be spent.
    let (req, resp) = sell(
        &l,
        &l.bar_token,
        &card,
        &[("beer-05", 10, BEER_CENTS)],
        "online",
    )
    .await;
    assert_approval(&resp, &req, 4500, 0, "active", &[]);

    // Transaction ids are distinct.
    let (_, a) = recharge(&l, &card, 100, "cash", "online").await;
    let (_, b) = recharge(&l, &card, 100, "cash", "online").await;
    assert_ne!(a.body["transaction_id"], b.body["transaction_id"]);
    assert_eq!(l.balance(&card).await, 200);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// Business declines (stored with the key, replayed, change no money)
// ---------------------------------------------------------------------------------------

/// One request that must be declined.
struct Decline {
    name: &'static str,
    path: &'static str,
    token: String,
    body: Value,
    status: u16,
    code: &'static str,
    details: Value,
}

async fn business_declines_carry_details_change_nothing_and_replay(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let poor = uid(1); // 400: less than a beer
    let unknown = uid(2); // never seen
    let lost = uid(3); // blocked with the admin CLI
    let rich = uid(4); // plenty
    let full = uid(5); // at the maximum balance
    l.fund(&poor, 400).await;
    l.fund(&lost, 1000).await;
    l.fund(&rich, 5000).await;
    l.fund(&full, RECHARGE_MAX_CENTS).await;
    l.fund(&full, BALANCE_MAX_CENTS - RECHARGE_MAX_CENTS).await;
    assert_success("card block", &l.admin(&["card", "block", "--uid", &lost]));
    assert_eq!(card_state(&l, &lost).await, (1000, "blocked".to_owned()));

    let bar = || l.bar_token.clone();
    let cp = || l.checkpoint_token.clone();
    let order = |card: &str, items: &[(&str, i64, i64)]| {
        order_body(card, l.seq(&l.bar_token), items, "online")
    };
    let topup = |card: &str, amount: i64| {
        recharge_body(card, l.seq(&l.checkpoint_token), amount, "cash", "online")
    };
    let cases = vec![
        Decline {
            name: "order larger than the balance",
            path: "/v1/orders",
            token: bar(),
            body: order(&poor, &[BEER]),
            status: 402,
            code: "INSUFFICIENT_FUNDS",
            details: json!({"balance_cents": 400}),
        },
        Decline {
            name: "online order on a card never seen",
            path: "/v1/orders",
            token: bar(),
            body: order(&unknown, &[WATER]),
            status: 404,
            code: "CARD_NOT_FOUND",
            details: Value::Null,
        },
        Decline {
            name: "order on a lost card",
            path: "/v1/orders",
            token: bar(),
            body: order(&lost, &[WATER]),
            status: 423,
            code: "CARD_BLOCKED",
            details: json!({"balance_cents": 1000, "status": "blocked"}),
        },
        Decline {
            name: "unknown product",
            path: "/v1/orders",
            token: bar(),
            body: order(&rich, &[WATER, ("gin-tonic", 1, 800)]),
            status: 422,
            code: "UNKNOWN_PRODUCT",
            details: json!({"product_id": "gin-tonic"}),
        },
        Decline {
            name: "price not the catalog's",
            path: "/v1/orders",
            token: bar(),
            body: order(&rich, &[("beer-05", 2, 400)]),
            status: 422,
            code: "PRICE_MISMATCH",
            details: json!({"product_id": "beer-05", "catalog_price_cents": 450, "unit_price_cents": 400}),
        },
        // The check order of decisions.md: card missing -> blocked -> catalog -> funds.
        Decline {
            name: "unknown card before unknown product",
            path: "/v1/orders",
            token: bar(),
            body: order(&unknown, &[("gin-tonic", 1, 800)]),
            status: 404,
            code: "CARD_NOT_FOUND",
            details: Value::Null,
        },
        Decline {
            name: "blocked before price mismatch",
            path: "/v1/orders",
            token: bar(),
            body: order(&lost, &[("beer-05", 1, 1)]),
            status: 423,
            code: "CARD_BLOCKED",
            details: json!({"balance_cents": 1000, "status": "blocked"}),
        },
        Decline {
            name: "price mismatch before insufficient funds",
            path: "/v1/orders",
            token: bar(),
            body: order(&poor, &[("cocktail", 1, 1000)]),
            status: 422,
            code: "PRICE_MISMATCH",
            details: json!({"product_id": "cocktail", "catalog_price_cents": 900, "unit_price_cents": 1000}),
        },
        Decline {
            name: "top-up above the per-top-up limit",
            path: "/v1/recharges",
            token: cp(),
            body: topup(&rich, RECHARGE_MAX_CENTS + 1),
            status: 422,
            code: "LIMIT_EXCEEDED",
            details: json!({"limit": "recharge_max_cents", "limit_cents": RECHARGE_MAX_CENTS}),
        },
        Decline {
            name: "top-up past the maximum balance",
            path: "/v1/recharges",
            token: cp(),
            body: topup(&full, 1),
            status: 422,
            code: "LIMIT_EXCEEDED",
            details: json!({"limit": "balance_max_cents", "limit_cents": BALANCE_MAX_CENTS}),
        },
        Decline {
            name: "top-up of an unknown card past the per-top-up limit",
            path: "/v1/recharges",
            token: cp(),
            body: topup(&uid(6), RECHARGE_MAX_CENTS + 1),
            status: 422,
            code: "LIMIT_EXCEEDED",
            details: json!({"limit": "recharge_max_cents", "limit_cents": RECHARGE_MAX_CENTS}),
        },
    ];

    let mut answers = Vec::new();
    for case in &cases {
        let before = money(&l);
        let resp = l.post(case.path, &case.token, &case.body).await;
        assert_eq!(resp.status, case.status, "{}: {}", case.name, resp.body);
        let details = resp.assert_error(case.status, case.code);
        assert_subset(&details, &case.details);
        assert!(
            !resp.replayed(),
            "{}: first answer marked as replay",
            case.name
        );
        assert_eq!(money(&l), before, "{}: a decline changed money", case.name);

        // Stored: the same request gets the same bytes back, marked, and changes nothing.
        let whole = l.db_fingerprint();
        let again = l.post(case.path, &case.token, &case.body).await;
        assert_eq!(again.status, case.status, "{}: replay status", case.name);
        assert_eq!(again.raw, resp.raw, "{}: replay body differs", case.name);
        assert!(
            again.replayed(),
            "{}: replay lacks Idempotent-Replayed: true",
            case.name
        );
        assert_eq!(
            l.db_fingerprint(),
            whole,
            "{}: a replay changed the database",
            case.name
        );
        answers.push(resp);
    }

    // Declines stay declines even when the card could now pay.
    l.fund(&poor, 5000).await;
    l.fund(&unknown, 5000).await;
    assert_success(
        "card unblock",
        &l.admin(&["card", "unblock", "--uid", &lost]),
    );
    for (case, first) in cases.iter().zip(&answers).take(3) {
        let before = money(&l);
        let again = l.post(case.path, &case.token, &case.body).await;
        assert_eq!(
            again.raw, first.raw,
            "{}: replay after the state changed",
            case.name
        );
        assert!(again.replayed());
        assert_eq!(money(&l), before, "{}", case.name);
    }

    // A lost card unblocked by the admin can pay again; balances never moved.
    assert_eq!(card_state(&l, &lost).await, (1000, "active".to_owned()));
    let (req, resp) = sell(&l, &l.bar_token, &lost, &[WATER], "online").await;
    assert_approval(&resp, &req, 1000, 800, "active", &[]);
    assert_eq!(l.balance(&poor).await, 5400);
    assert_eq!(l.balance(&rich).await, 5000);
    assert_eq!(l.balance(&full).await, BALANCE_MAX_CENTS);
    l.assert_audit_ok();
}

async fn card_lookup_of_an_unknown_card_is_card_not_found(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.card(&uid(77)).await.assert_error(404, "CARD_NOT_FOUND");
    l.get(&format!("/v1/cards/{}", uid(77)), Some(&l.checkpoint_token))
        .await
        .assert_error(404, "CARD_NOT_FOUND");
    l.fund(&uid(77), 300).await;
    let resp = l.card(&uid(77)).await;
    resp.assert_status(200);
    assert_eq!(resp.body["card_uid"], uid(77));
    assert_eq!(resp.body["balance_cents"], 300);
    assert_eq!(resp.body["status"], "active");
    assert_time(&resp.body["updated_at"], "updated_at");
    // Checkpoints check balances too; 4- and 10-byte UIDs are cards as well.
    let r = l
        .get(&format!("/v1/cards/{}", uid(77)), Some(&l.checkpoint_token))
        .await;
    r.assert_status(200);
    for card in ["04A1B2C3", "04A1B2C3D4E5F6A7B8C9"] {
        l.fund(card, 100).await;
        assert_eq!(card_state(&l, card).await, (100, "active".to_owned()));
    }
}

async fn limits_come_from_the_config_file(backend: Backend) {
    let l = Ledger::start_with_config_on(
        backend,
        r#"
[festival]
currency = "CHF"

[limits]
recharge_max_cents = 1000
balance_max_cents = 1500
"#,
    )
    .await;
    let card = uid(1);
    let details = l
        .topup(&card, 1001)
        .await
        .assert_error(422, "LIMIT_EXCEEDED");
    assert_subset(
        &details,
        &json!({"limit": "recharge_max_cents", "limit_cents": 1000}),
    );
    l.fund(&card, 1000).await;
    let details = l
        .topup(&card, 501)
        .await
        .assert_error(422, "LIMIT_EXCEEDED");
    assert_subset(
        &details,
        &json!({"limit": "balance_max_cents", "limit_cents": 1500}),
    );
    l.fund(&card, 500).await;
    assert_eq!(l.balance(&card).await, 1500);

    // Offline top-ups past a limit are applied and flagged.
    let (req, resp) = recharge(&l, &card, 2000, "cash", "offline").await;
    assert_approval(&resp, &req, 1500, 3500, "active", &["LIMIT_EXCEEDED"]);

    let catalog = l.get("/v1/catalog", Some(&l.bar_token)).await;
    catalog.assert_status(200);
    assert_eq!(catalog.body["currency"], "CHF");
    l.assert_audit_ok();
}

async fn offline_top_up_past_the_default_limits_is_applied_and_flagged(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(9);
    let (req, resp) = recharge(&l, &card, RECHARGE_MAX_CENTS + 1, "card", "offline").await;
    resp.assert_status(201);
    assert_eq!(
        resp.body["new_balance_cents"],
        RECHARGE_MAX_CENTS + 1,
        "{}",
        resp.body
    );
    assert!(
        flags(&resp.body).contains(&"LIMIT_EXCEEDED".to_owned()),
        "{}",
        resp.body
    );
    assert_eq!(resp.body["client_request_id"], req["client_request_id"]);
    // An offline top-up within the limits has no LIMIT_EXCEEDED flag.
    let (_, resp) = recharge(&l, &uid(10), 1000, "cash", "offline").await;
    resp.assert_status(201);
    assert!(
        !flags(&resp.body).contains(&"LIMIT_EXCEEDED".to_owned()),
        "{}",
        resp.body
    );
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// Authentication and authorization
// ---------------------------------------------------------------------------------------

async fn every_terminal_endpoint_requires_a_known_token(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 1000).await;
    let order = order_body(&card, 1, &[WATER], "online");
    let posts: Vec<(&str, Value)> = vec![
        ("/v1/orders", order.clone()),
        (
            "/v1/recharges",
            recharge_body(&card, 1, 100, "cash", "online"),
        ),
        (
            "/v1/voids",
            void_body(&new_id(), 1, "staff_error", BAR_STAFF),
        ),
        (
            "/v1/batch",
            json!({"operations": [tagged("order", &order)]}),
        ),
        (
            "/v1/scans",
            json!({"scans": [{"card_uid": card, "result": "ok", "reader": "r", "scanned_at": now_rfc3339()}]}),
        ),
        ("/v1/orders", json!({"not": "even valid"})),
    ];
    let gets = [
        format!("/v1/cards/{card}"),
        "/v1/cards".to_owned(),
        "/v1/cards?since=&limit=10".to_owned(),
        "/v1/catalog".to_owned(),
        "/v1/staff".to_owned(),
        "/v1/terminals/me".to_owned(),
    ];
    let bad_auth: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![(
            "authorization",
            "Bearer clt_0000000000000000000000000000000000000000000000000000000000000000",
        )],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Basic YmFyLTE6MTIzNA==")],
        vec![("authorization", &l.bar_token)], // the token without the scheme
    ];
    let before = l.db_fingerprint();
    for headers in &bad_auth {
        for (path, body) in &posts {
            let resp = l
                .post_raw(path, None, serde_json::to_vec(body).unwrap(), headers)
                .await;
            assert_eq!(
                resp.status, 401,
                "POST {path} with {headers:?}: {}",
                resp.body
            );
            resp.assert_error(401, "UNAUTHORIZED");
        }
        for path in &gets {
            let resp = l.get_with(path, None, headers).await;
            assert_eq!(
                resp.status, 401,
                "GET {path} with {headers:?}: {}",
                resp.body
            );
            resp.assert_error(401, "UNAUTHORIZED");
        }
    }
    assert_eq!(
        l.db_fingerprint(),
        before,
        "refused requests changed the database"
    );
    // Health, readiness and the API description need no token.
    for path in ["/health", "/ready", "/v1/openapi.json"] {
        l.get(path, None).await.assert_status(200);
    }
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    // RFC 9110 section 11.1: the authentication scheme is a case-insensitive token.
    let l = Ledger::start_on(backend).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {}", l.bar_token);
        let resp = l
            .get_with("/v1/terminals/me", None, &[("authorization", &auth)])
            .await;
        assert_eq!(
            resp.status, 200,
            "Authorization: {scheme} <token>: {}",
            resp.body
        );
        assert_eq!(resp.body["name"], "bar-1");
        // The top-up limits, which checkpoints check offline too.
        assert_eq!(
            resp.body["limits"],
            json!({"recharge_max_cents": RECHARGE_MAX_CENTS, "balance_max_cents": BALANCE_MAX_CENTS})
        );
    }
}

/// One request that must be refused with 403.
struct Forbidden {
    name: &'static str,
    path: &'static str,
    token: String,
    body: Value,
}

async fn terminal_kinds_staff_roles_and_foreign_voids_are_forbidden(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 10_000).await;
    let (bar1_order, resp) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    resp.assert_status(201);
    let (cp_topup, resp) = recharge(&l, &card, 500, "cash", "online").await;
    resp.assert_status(201);
    let bar1_order = crid(&bar1_order);
    let cp_topup = crid(&cp_topup);
    assert_success(
        "staff add",
        &l.admin(&[
            "staff",
            "add",
            "--id",
            "s-gone",
            "--name",
            "Gone",
            "--role",
            "supervisor",
            "--pin",
            "9999",
        ]),
    );
    deactivate_staff(&l, "s-gone");

    let with_staff = |mut body: Value, staff: &str| {
        body["staff_id"] = json!(staff);
        body
    };
    let bar_seq = || l.seq(&l.bar_token);
    let cp_seq = || l.seq(&l.checkpoint_token);
    let cases = vec![
        Forbidden {
            name: "a bar terminal tops up",
            path: "/v1/recharges",
            token: l.bar_token.clone(),
            body: recharge_body(&card, bar_seq(), 500, "cash", "online"),
        },
        Forbidden {
            name: "a bar terminal tops up offline",
            path: "/v1/recharges",
            token: l.bar_token.clone(),
            body: recharge_body(&card, bar_seq(), 500, "cash", "offline"),
        },
        Forbidden {
            name: "a checkpoint sells",
            path: "/v1/orders",
            token: l.checkpoint_token.clone(),
            body: order_body(&card, cp_seq(), &[BEER], "online"),
        },
        Forbidden {
            name: "a checkpoint sells offline",
            path: "/v1/orders",
            token: l.checkpoint_token.clone(),
            body: order_body(&card, cp_seq(), &[BEER], "offline"),
        },
        Forbidden {
            name: "a checkpoint sends an unreadable order (kind is checked before the body)",
            path: "/v1/orders",
            token: l.checkpoint_token.clone(),
            body: json!({"card_uid": 1}),
        },
        Forbidden {
            name: "a cashier sells",
            path: "/v1/orders",
            token: l.bar_token.clone(),
            body: with_staff(order_body(&card, bar_seq(), &[BEER], "online"), CASH_STAFF),
        },
        Forbidden {
            name: "unknown staff sells",
            path: "/v1/orders",
            token: l.bar_token.clone(),
            body: with_staff(order_body(&card, bar_seq(), &[BEER], "online"), "s-nobody"),
        },
        Forbidden {
            name: "unknown staff sells offline",
            path: "/v1/orders",
            token: l.bar_token.clone(),
            body: with_staff(order_body(&card, bar_seq(), &[BEER], "offline"), "s-nobody"),
        },
        Forbidden {
            name: "inactive staff sells",
            path: "/v1/orders",
            token: l.bar_token.clone(),
            body: with_staff(order_body(&card, bar_seq(), &[BEER], "online"), "s-gone"),
        },
        Forbidden {
            name: "bar staff tops up",
            path: "/v1/recharges",
            token: l.checkpoint_token.clone(),
            body: with_staff(
                recharge_body(&card, cp_seq(), 500, "cash", "online"),
                BAR_STAFF,
            ),
        },
        Forbidden {
            name: "unknown staff tops up",
            path: "/v1/recharges",
            token: l.checkpoint_token.clone(),
            body: with_staff(
                recharge_body(&card, cp_seq(), 500, "cash", "online"),
                "s-nobody",
            ),
        },
        Forbidden {
            name: "inactive staff tops up",
            path: "/v1/recharges",
            token: l.checkpoint_token.clone(),
            body: with_staff(
                recharge_body(&card, cp_seq(), 500, "cash", "online"),
                "s-gone",
            ),
        },
        Forbidden {
            name: "another bar terminal voids bar-1's order",
            path: "/v1/voids",
            token: l.bar2_token.clone(),
            body: void_body(
                &bar1_order,
                l.seq(&l.bar2_token),
                "customer_refund",
                BAR_STAFF,
            ),
        },
        Forbidden {
            name: "the checkpoint voids bar-1's order",
            path: "/v1/voids",
            token: l.checkpoint_token.clone(),
            body: void_body(&bar1_order, cp_seq(), "customer_refund", CASH_STAFF),
        },
        Forbidden {
            name: "a bar terminal voids the checkpoint's top-up",
            path: "/v1/voids",
            token: l.bar_token.clone(),
            body: void_body(&cp_topup, bar_seq(), "staff_error", BAR_STAFF),
        },
        Forbidden {
            name: "unknown staff voids",
            path: "/v1/voids",
            token: l.bar_token.clone(),
            body: void_body(&bar1_order, bar_seq(), "staff_error", "s-nobody"),
        },
    ];
    for case in &cases {
        let before = money(&l);
        let resp = l.post(case.path, &case.token, &case.body).await;
        assert_eq!(resp.status, 403, "{}: {}", case.name, resp.body);
        resp.assert_error(403, "FORBIDDEN");
        assert_eq!(
            money(&l),
            before,
            "{}: a refused request changed money",
            case.name
        );
    }
    assert_eq!(l.balance(&card).await, 10_000 - BEER_CENTS + 500);

    // Offline operations skip only the `active` check: the sale already happened.
    let body = with_staff(order_body(&card, bar_seq(), &[BEER], "offline"), "s-gone");
    l.post("/v1/orders", &l.bar_token, &body)
        .await
        .assert_status(201);
    let body = with_staff(
        recharge_body(&card, cp_seq(), 500, "cash", "offline"),
        "s-gone",
    );
    l.post("/v1/recharges", &l.checkpoint_token, &body)
        .await
        .assert_status(201);

    // The owner may void, whatever the staff member's role. A void has no mode: it may be
    // the replay of an in-doubt void journaled long ago, and refusing it would let the
    // in-doubt attempt be applied later next to its offline replacement. So a deactivated
    // staff member's void is applied too (like an offline operation).
    let (_, resp) = void(&l, &l.bar_token, &bar1_order, "s-gone").await;
    resp.assert_status(201);
    let (_, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    resp.assert_status(201);
    let (_, resp) = void(&l, &l.bar_token, &crid(&resp.body), CASH_STAFF).await;
    resp.assert_status(201);
    let (_, resp) = void(&l, &l.checkpoint_token, &cp_topup, BAR_STAFF).await;
    resp.assert_status(201);
    assert_eq!(l.balance(&card).await, 10_000 - BEER_CENTS + 500);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------

async fn replays_of_every_operation_are_byte_identical_and_change_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    let (topup, first_topup) = recharge(&l, &card, 3000, "cash", "online").await;
    first_topup.assert_status(201);
    let (order, first_order) = sell(&l, &l.bar_token, &card, &[BEER, WATER], "online").await;
    first_order.assert_status(201);
    let (offline, first_offline) = sell(&l, &l.bar_token, &uid(2), &[COCKTAIL], "offline").await;
    first_offline.assert_status(201);
    let (void_req, first_void) = void(&l, &l.bar_token, &crid(&order), BAR_STAFF).await;
    first_void.assert_status(201);
    let (tomb_req, first_tomb) = void(&l, &l.bar_token, &new_id(), BAR_STAFF).await;
    first_tomb.assert_status(201);

    let cases: Vec<(&str, &str, &str, &Value, &Resp)> = vec![
        (
            "top-up",
            "/v1/recharges",
            &l.checkpoint_token,
            &topup,
            &first_topup,
        ),
        ("order", "/v1/orders", &l.bar_token, &order, &first_order),
        (
            "offline order",
            "/v1/orders",
            &l.bar_token,
            &offline,
            &first_offline,
        ),
        ("void", "/v1/voids", &l.bar_token, &void_req, &first_void),
        (
            "tombstone",
            "/v1/voids",
            &l.bar_token,
            &tomb_req,
            &first_tomb,
        ),
    ];
    for (name, path, token, body, first) in &cases {
        let before = l.db_fingerprint();
        // The same body, and the same body spelled differently (key order, whitespace):
        // idempotency compares the canonical request.
        let again = l.post(path, token, body).await;
        let mut keys: Vec<(&String, &Value)> = body.as_object().unwrap().iter().collect();
        keys.reverse();
        let respelled = format!(
            "{{\n  {}\n}}",
            keys.iter()
                .map(|(k, v)| format!("{:?} :  {}", k, v))
                .collect::<Vec<_>>()
                .join(" ,\n  ")
        );
        let respelled = l
            .post_raw(path, Some(token), respelled.into_bytes(), &[])
            .await;
        // With a matching Idempotency-Key header.
        let key = crid(body);
        let with_header = l
            .post_raw(
                path,
                Some(token),
                serde_json::to_vec(body).unwrap(),
                &[("Idempotency-Key", &key)],
            )
            .await;
        for (how, resp) in [
            ("same", &again),
            ("respelled", &respelled),
            ("with header", &with_header),
        ] {
            assert_eq!(resp.status, first.status, "{name} ({how}): {}", resp.body);
            assert_eq!(
                resp.raw, first.raw,
                "{name} ({how}): replay body is not byte-identical"
            );
            assert!(
                resp.replayed(),
                "{name} ({how}): no Idempotent-Replayed: true"
            );
        }
        assert_eq!(
            l.db_fingerprint(),
            before,
            "{name}: a replay changed the database"
        );
    }
    assert_eq!(l.balance(&card).await, 3000);
    l.assert_audit_ok();
}

async fn a_reused_key_or_a_mismatched_header_is_refused_and_changes_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    let (topup, resp) = recharge(&l, &card, 3000, "cash", "online").await;
    resp.assert_status(201);
    let (order, resp) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    resp.assert_status(201);
    let (declined, resp) = sell(&l, &l.bar_token, &uid(2), &[BEER], "online").await;
    resp.assert_error(404, "CARD_NOT_FOUND");
    let (void_req, resp) = void(&l, &l.bar_token, &crid(&order), BAR_STAFF).await;
    resp.assert_status(201);

    let changed = |body: &Value, field: &str, value: Value| {
        let mut b = body.clone();
        b[field] = value;
        b
    };
    let key_of = |body: &Value| crid(body);
    let reuses: Vec<(&str, &str, &str, Value)> = vec![
        ("order with another total", "/v1/orders", &l.bar_token, {
            let mut b = order_body(&card, 99, &[("beer-05", 2, BEER_CENTS)], "online");
            b["client_request_id"] = order["client_request_id"].clone();
            b
        }),
        (
            "order with another card",
            "/v1/orders",
            &l.bar_token,
            changed(&order, "card_uid", json!(uid(3))),
        ),
        (
            "order now offline",
            "/v1/orders",
            &l.bar_token,
            changed(&order, "mode", json!("offline")),
        ),
        (
            "order with another seq",
            "/v1/orders",
            &l.bar_token,
            changed(&order, "terminal_seq", json!(1000)),
        ),
        (
            "declined order retried differently",
            "/v1/orders",
            &l.bar_token,
            changed(&declined, "card_uid", json!(card)),
        ),
        (
            "top-up with another amount",
            "/v1/recharges",
            &l.checkpoint_token,
            changed(&topup, "amount_cents", json!(3001)),
        ),
        (
            "top-up by card instead of cash",
            "/v1/recharges",
            &l.checkpoint_token,
            changed(&topup, "payment_method", json!("card")),
        ),
        (
            "void with another reason",
            "/v1/voids",
            &l.bar_token,
            changed(&void_req, "reason", json!("staff_error")),
        ),
        (
            "an order's key used for a void",
            "/v1/voids",
            &l.bar_token,
            changed(
                &void_body(&new_id(), 50, "in_doubt", BAR_STAFF),
                "client_request_id",
                json!(key_of(&order)),
            ),
        ),
        (
            "a top-up's key used for an order",
            "/v1/orders",
            &l.bar_token,
            changed(
                &order_body(&card, 51, &[WATER], "online"),
                "client_request_id",
                json!(key_of(&topup)),
            ),
        ),
        // The terminal is part of the request: another terminal cannot read bar-1's answer.
        (
            "bar-1's order sent by bar-2",
            "/v1/orders",
            &l.bar2_token,
            order.clone(),
        ),
    ];
    for (name, path, token, body) in &reuses {
        let before = l.db_fingerprint();
        let resp = l.post(path, token, body).await;
        assert_eq!(resp.status, 422, "{name}: {}", resp.body);
        resp.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
        assert!(!resp.replayed(), "{name}: a refusal is not a replay");
        assert_eq!(l.db_fingerprint(), before, "{name}: changed the database");
    }

    // The Idempotency-Key header, when sent, must equal the body's key.
    let fresh = order_body(&card, l.seq(&l.bar_token), &[WATER], "online");
    for (name, path, token, body) in [
        ("new order", "/v1/orders", &l.bar_token, &fresh),
        ("replayed order", "/v1/orders", &l.bar_token, &order),
        ("top-up", "/v1/recharges", &l.checkpoint_token, &topup),
        ("void", "/v1/voids", &l.bar_token, &void_req),
    ] {
        let before = l.db_fingerprint();
        let other = new_id();
        let resp = l
            .post_raw(
                path,
                Some(token),
                serde_json::to_vec(body).unwrap(),
                &[("Idempotency-Key", &other)],
            )
            .await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.body);
        let details = resp.assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], "Idempotency-Key", "{name}: {}", resp.body);
        assert_eq!(l.db_fingerprint(), before, "{name}: changed the database");
    }
    // The fresh order was never applied: it still goes through.
    let resp = l.post("/v1/orders", &l.bar_token, &fresh).await;
    assert!(!resp.replayed());
    assert_approval(&resp, &fresh, 3000, 2800, "active", &[]);
    l.assert_audit_ok();
}

async fn fifty_concurrent_identical_requests_apply_once(backend: Backend) {
    let l = Arc::new(Ledger::start_on(backend).await);
    let card = uid(1);
    l.fund(&card, 10_000).await;
    let body = Arc::new(order_body(
        &card,
        l.seq(&l.bar_token),
        &[COCKTAIL, BEER],
        "online",
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (l, body) = (Arc::clone(&l), Arc::clone(&body));
        tasks.spawn(async move {
            // DUPLICATE_REQUEST is retryable: retry until the stored answer comes back.
            let mut answers = Vec::new();
            loop {
                let resp = l.post("/v1/orders", &l.bar_token, &body).await;
                let busy = resp.status == 409;
                if busy {
                    resp.assert_error(409, "DUPLICATE_REQUEST");
                }
                answers.push(resp);
                if !busy || answers.len() > 1000 {
                    return answers;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
    }
    let mut finals = Vec::new();
    while let Some(answers) = tasks.join_next().await {
        let mut answers = answers.unwrap();
        finals.push(answers.pop().unwrap());
    }
    assert_eq!(finals.len(), 50);
    let fresh: Vec<&Resp> = finals.iter().filter(|r| !r.replayed()).collect();
    assert_eq!(
        fresh.len(),
        1,
        "exactly one request is processed, the others are replays"
    );
    for r in &finals {
        r.assert_status(201);
        assert_eq!(r.raw, fresh[0].raw, "every answer is the stored one");
    }
    let total = COCKTAIL_CENTS + BEER_CENTS;
    assert_eq!(l.balance(&card).await, 10_000 - total);
    assert_eq!(l.count("bar_orders"), 1);
    l.assert_audit_ok();
}

async fn concurrent_sales_top_ups_and_refunds_on_one_card_lose_no_update(backend: Backend) {
    let l = Arc::new(Ledger::start_on(backend).await);
    let card = uid(1);
    l.fund(&card, 6000).await;
    // Orders to refund later, applied up front.
    let mut refundable = Vec::new();
    for _ in 0..10 {
        let (body, resp) = sell(&l, &l.bar2_token, &card, &[WATER], "online").await;
        resp.assert_status(201);
        refundable.push(crid(&body));
    }
    // Enough for every sale below even if they all come first: no decline is expected.
    assert_eq!(l.balance(&card).await, 4000);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (l1, card1) = (Arc::clone(&l), card.clone());
        tasks.spawn(async move {
            let body = order_body(&card1, l1.seq(&l1.bar_token), &[WATER], "online");
            l1.post("/v1/orders", &l1.bar_token, &body).await
        });
        let (l2, card2) = (Arc::clone(&l), card.clone());
        tasks.spawn(async move {
            let body = recharge_body(&card2, l2.seq(&l2.checkpoint_token), 100, "cash", "online");
            l2.post("/v1/recharges", &l2.checkpoint_token, &body).await
        });
        if let Some(target) = refundable.get(i).cloned() {
            let l3 = Arc::clone(&l);
            tasks.spawn(async move {
                let body = void_body(
                    &target,
                    l3.seq(&l3.bar2_token),
                    "customer_refund",
                    BAR_STAFF,
                );
                l3.post("/v1/voids", &l3.bar2_token, &body).await
            });
        }
    }
    let mut balances = Vec::new();
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        resp.assert_status(201);
        balances.push(resp.body["new_balance_cents"].as_i64().unwrap());
    }
    // 4000 - 20 x 200 + 20 x 100 + 10 x 200 = 4000: never below zero, nothing lost.
    assert_eq!(balances.len(), 50);
    assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
    assert_eq!(l.balance(&card).await, 4000);
    l.assert_audit_ok();
}

async fn twenty_concurrent_orders_on_money_for_ten_approve_exactly_ten(backend: Backend) {
    let l = Arc::new(Ledger::start_on(backend).await);
    let card = uid(1);
    l.fund(&card, 10 * BEER_CENTS).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let l = Arc::clone(&l);
        let card = card.clone();
        tasks.spawn(async move {
            let body = order_body(&card, l.seq(&l.bar_token), &[BEER], "online");
            l.post("/v1/orders", &l.bar_token, &body).await
        });
    }
    let mut approved_balances = Vec::new();
    let mut declined = 0;
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        match resp.status {
            201 => approved_balances.push(resp.body["new_balance_cents"].as_i64().unwrap()),
            402 => {
                let details = resp.assert_error(402, "INSUFFICIENT_FUNDS");
                assert_eq!(
                    details["balance_cents"], 0,
                    "declined only once the money is gone"
                );
                declined += 1;
            }
            other => panic!("unexpected {other}: {}", resp.body),
        }
    }
    approved_balances.sort_unstable();
    let expected: Vec<i64> = (0..10).map(|i| i * BEER_CENTS).collect();
    assert_eq!(
        approved_balances, expected,
        "each approval saw the previous one (no lost update)"
    );
    assert_eq!(declined, 10);
    assert_eq!(card_state(&l, &card).await, (0, "active".to_owned()));
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// Offline operations
// ---------------------------------------------------------------------------------------

async fn offline_debt_blocks_the_card_until_a_top_up_clears_it(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 500).await;
    let (_, feed) = feed_page(&l, "", 100).await;
    let cursor = feed["next_cursor"].as_str().unwrap().to_owned();

    // The bar served a cocktail offline: 500 - 900 = -400.
    let (req, resp) = sell(&l, &l.bar_token, &card, &[COCKTAIL], "offline").await;
    assert_approval(&resp, &req, 500, -400, "blocked", &["NEGATIVE_BALANCE"]);
    assert_eq!(card_state(&l, &card).await, (-400, "blocked".to_owned()));

    // The block reaches the card feed.
    let (cards, _) = feed_page(&l, &cursor, 100).await;
    assert_eq!(cards.len(), 1, "{cards:?}");
    assert_eq!(cards[0]["card_uid"], card);
    assert_eq!(cards[0]["status"], "blocked");
    assert_eq!(cards[0]["balance_cents"], -400);

    // Online sales are refused while blocked, even for a product it could not pay anyway.
    let (_, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    let details = resp.assert_error(423, "CARD_BLOCKED");
    assert_subset(
        &details,
        &json!({"balance_cents": -400, "status": "blocked"}),
    );

    // More offline sales are still applied; the debt grows.
    let (req, resp) = sell(&l, &l.bar2_token, &card, &[WATER], "offline").await;
    assert_approval(&resp, &req, -400, -600, "blocked", &["NEGATIVE_BALANCE"]);

    // A top-up that does not clear the debt leaves it blocked.
    let (req, resp) = recharge(&l, &card, 100, "cash", "online").await;
    assert_approval(&resp, &req, -600, -500, "blocked", &["NEGATIVE_BALANCE"]);
    let (_, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    resp.assert_error(423, "CARD_BLOCKED");

    // A top-up to exactly zero unblocks.
    let (req, resp) = recharge(&l, &card, 500, "card", "online").await;
    assert_approval(&resp, &req, -500, 0, "active", &[]);
    assert_eq!(card_state(&l, &card).await, (0, "active".to_owned()));
    // Not blocked any more: now it is just empty.
    let (_, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    resp.assert_error(402, "INSUFFICIENT_FUNDS");
    l.fund(&card, 200).await;
    let (req, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    assert_approval(&resp, &req, 200, 0, "active", &[]);
    l.assert_audit_ok();
}

async fn offline_orders_record_unknown_cards_catalog_differences_and_lost_cards(backend: Backend) {
    let l = Ledger::start_on(backend).await;

    // A card the ledger never saw: created with 0, then in debt.
    let fresh = uid(1);
    let (req, resp) = sell(&l, &l.bar_token, &fresh, &[BEER], "offline").await;
    assert_approval(
        &resp,
        &req,
        0,
        -BEER_CENTS,
        "blocked",
        &["CARD_CREATED", "NEGATIVE_BALANCE"],
    );
    assert_eq!(
        card_state(&l, &fresh).await,
        (-BEER_CENTS, "blocked".to_owned())
    );

    // The terminal's (old) price is charged and the difference flagged.
    let card = uid(2);
    l.fund(&card, 1000).await;
    let (req, resp) = sell(&l, &l.bar_token, &card, &[("beer-05", 2, 400)], "offline").await;
    assert_approval(
        &resp,
        &req,
        1000,
        200,
        "active",
        &["PRICE_DIFFERS_FROM_CATALOG"],
    );
    // At catalog prices, no flag.
    let (req, resp) = sell(&l, &l.bar_token, &card, &[WATER], "offline").await;
    assert_approval(&resp, &req, 200, 0, "active", &[]);

    // A product no longer in the catalog: the goods were served, it is applied.
    l.fund(&card, 1000).await;
    let (req, resp) = sell(
        &l,
        &l.bar_token,
        &card,
        &[("old-lemonade", 1, 300)],
        "offline",
    )
    .await;
    resp.assert_status(201);
    assert_eq!(resp.body["new_balance_cents"], 700, "{}", resp.body);
    assert_eq!(resp.body["client_request_id"], req["client_request_id"]);

    // A lost card (blocked by the admin) still gets the offline sale recorded.
    let lost = uid(3);
    l.fund(&lost, 1000).await;
    assert_success("card block", &l.admin(&["card", "block", "--uid", &lost]));
    let (req, resp) = sell(&l, &l.bar_token, &lost, &[BEER], "offline").await;
    assert_approval(&resp, &req, 1000, 550, "blocked", &[]);
    // A top-up does not unblock a lost card; only the admin does.
    let (_, resp) = recharge(&l, &lost, 100, "cash", "online").await;
    if resp.status == 201 {
        assert_eq!(resp.body["card_status"], "blocked", "{}", resp.body);
    } else {
        resp.assert_error(423, "CARD_BLOCKED");
    }
    assert_eq!(card_state(&l, &lost).await.1, "blocked");

    // Offline top-ups of unknown cards create them.
    let (req, resp) = recharge(&l, &uid(4), 700, "cash", "offline").await;
    assert_approval(&resp, &req, 0, 700, "active", &["CARD_CREATED"]);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// Voids
// ---------------------------------------------------------------------------------------

/// A 201 void answer, checked in full.
#[track_caller]
fn assert_voided(
    resp: &Resp,
    req: &Value,
    card: &str,
    refunded: i64,
    previous: i64,
    new: i64,
    status: &str,
) {
    resp.assert_status(201);
    let b = &resp.body;
    assert_uuid(&b["transaction_id"], "transaction_id");
    assert_eq!(b["client_request_id"], req["client_request_id"], "{b}");
    assert_eq!(b["status"], "voided", "{b}");
    assert_eq!(
        b["target_client_request_id"], req["target_client_request_id"],
        "{b}"
    );
    assert_eq!(b["card_uid"], card, "{b}");
    assert_eq!(b["refunded_cents"], refunded, "{b}");
    assert_eq!(b["previous_balance_cents"], previous, "{b}");
    assert_eq!(b["new_balance_cents"], new, "{b}");
    assert_eq!(b["card_status"], status, "{b}");
    assert_time(&b["processed_at"], "processed_at");
    assert!(b["flags"].is_array(), "{b}");
}

async fn voiding_applied_operations_reverses_them(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    let (topup, resp) = recharge(&l, &card, 2000, "cash", "online").await;
    resp.assert_status(201);
    let (order, resp) = sell(
        &l,
        &l.bar_token,
        &card,
        &[("beer-05", 2, BEER_CENTS)],
        "online",
    )
    .await;
    resp.assert_status(201);

    // Refund the order.
    let (req, resp) = void(&l, &l.bar_token, &crid(&order), BAR_STAFF).await;
    assert_voided(&resp, &req, &card, 900, 1100, 2000, "active");
    assert_eq!(l.balance(&card).await, 2000);

    // Take the top-up back.
    let (req, resp) = void(&l, &l.checkpoint_token, &crid(&topup), CASH_STAFF).await;
    assert_voided(&resp, &req, &card, -2000, 2000, 0, "active");
    assert_eq!(l.balance(&card).await, 0);

    // A refund of an offline debt sale unblocks the card.
    l.fund(&card, 500).await;
    let (debt, resp) = sell(&l, &l.bar_token, &card, &[COCKTAIL], "offline").await;
    resp.assert_status(201);
    assert_eq!(card_state(&l, &card).await, (-400, "blocked".to_owned()));
    let (req, resp) = void(&l, &l.bar_token, &crid(&debt), SUPER_STAFF).await;
    assert_voided(&resp, &req, &card, 900, -400, 500, "active");
    assert_eq!(card_state(&l, &card).await, (500, "active".to_owned()));

    // Voiding a void is not a thing.
    let (_, resp) = void(&l, &l.bar_token, &crid(&req), BAR_STAFF).await;
    let details = resp.assert_error(400, "INVALID_REQUEST");
    assert_eq!(details["field"], "target_client_request_id");

    // A top-up already spent is still taken back in full: the card goes into debt, blocked.
    let (spent, resp) = recharge(&l, &card, 1000, "cash", "online").await;
    resp.assert_status(201);
    let (_, resp) = sell(&l, &l.bar_token, &card, &[COCKTAIL], "online").await;
    resp.assert_status(201);
    let (req, resp) = void(&l, &l.checkpoint_token, &crid(&spent), CASH_STAFF).await;
    assert_voided(&resp, &req, &card, -1000, 600, -400, "blocked");
    assert_eq!(flags(&resp.body), vec!["NEGATIVE_BALANCE"]);
    let (_, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    resp.assert_error(423, "CARD_BLOCKED");
    l.assert_audit_ok();
}

async fn a_tombstone_from_another_terminal_does_not_void_an_operation(backend: Backend) {
    // Voids are "only of its own operations" (decisions.md). A target that has not arrived
    // yet has no owner to check, so the check must happen when it arrives: bar-2 (or the
    // checkpoint) must not be able to cancel bar-1's sale by knowing its id in advance.
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 5000).await;
    for (who, token, staff) in [
        ("bar-2", &l.bar2_token, BAR_STAFF),
        ("cp-1", &l.checkpoint_token, CASH_STAFF),
    ] {
        let order = order_body(&card, l.seq(&l.bar_token), &[BEER], "online");
        let (_, resp) = void(&l, token, &crid(&order), staff).await;
        resp.assert_status(201);
        let before = l.balance(&card).await;
        let resp = l.post("/v1/orders", &l.bar_token, &order).await;
        assert_eq!(
            resp.status, 201,
            "bar-1's order refused because {who} tombstoned its id: {}",
            resp.body
        );
        assert_approval(&resp, &order, before, before - BEER_CENTS, "active", &[]);
    }
    l.assert_audit_ok();
}

async fn a_void_before_arrival_tombstones_the_target(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 5000).await;

    // The terminal voids an in-doubt attempt that never reached the ledger.
    let order = order_body(&card, l.seq(&l.bar_token), &[BEER], "online");
    let req = void_body(&crid(&order), l.seq(&l.bar_token), "in_doubt", BAR_STAFF);
    let resp = l.post("/v1/voids", &l.bar_token, &req).await;
    resp.assert_status(201);
    let b = &resp.body;
    assert_uuid(&b["transaction_id"], "transaction_id");
    assert_eq!(b["status"], "tombstoned", "{b}");
    assert_eq!(b["client_request_id"], req["client_request_id"]);
    assert_eq!(b["target_client_request_id"], order["client_request_id"]);
    for field in [
        "card_uid",
        "refunded_cents",
        "previous_balance_cents",
        "new_balance_cents",
        "card_status",
    ] {
        assert!(
            b[field].is_null(),
            "{field} must be null for a tombstone: {b}"
        );
    }
    assert_time(&b["processed_at"], "processed_at");

    // The late attempt arrives, online or offline, as often as it likes: refused.
    let before = money(&l);
    let mut offline = order.clone();
    offline["mode"] = json!("offline");
    for body in [&order, &order, &offline] {
        let resp = l.post("/v1/orders", &l.bar_token, body).await;
        assert_eq!(resp.status, 409, "{}", resp.body);
        resp.assert_error(409, "OPERATION_VOIDED");
    }
    assert_eq!(money(&l), before);
    assert_eq!(l.balance(&card).await, 5000);

    // Same for a top-up.
    let topup = recharge_body(&card, l.seq(&l.checkpoint_token), 1000, "cash", "online");
    let (_, resp) = void(&l, &l.checkpoint_token, &crid(&topup), CASH_STAFF).await;
    assert_eq!(resp.body["status"], "tombstoned", "{}", resp.body);
    l.post("/v1/recharges", &l.checkpoint_token, &topup)
        .await
        .assert_error(409, "OPERATION_VOIDED");
    assert_eq!(l.balance(&card).await, 5000);

    // A declined target is tombstoned like an unknown one; its replay is still the decline.
    let (declined, first) = sell(&l, &l.bar_token, &uid(2), &[BEER], "online").await;
    first.assert_error(404, "CARD_NOT_FOUND");
    let (_, resp) = void(&l, &l.bar_token, &crid(&declined), BAR_STAFF).await;
    resp.assert_status(201);
    assert_eq!(resp.body["status"], "tombstoned", "{}", resp.body);
    let again = l.post("/v1/orders", &l.bar_token, &declined).await;
    assert_eq!(again.raw, first.raw);
    assert!(again.replayed());
    l.assert_audit_ok();
}

async fn a_second_different_void_of_the_same_target_is_already_voided(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 5000).await;
    let (order, resp) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    resp.assert_status(201);
    let (first_void, first) = void(&l, &l.bar_token, &crid(&order), BAR_STAFF).await;
    first.assert_status(201);
    let unknown = new_id();
    let (first_tomb, tomb) = void(&l, &l.bar_token, &unknown, BAR_STAFF).await;
    tomb.assert_status(201);

    for (name, target, first_req, first_resp) in [
        ("applied", crid(&order), &first_void, &first),
        ("tombstoned", unknown, &first_tomb, &tomb),
    ] {
        let before = money(&l);
        let (_, resp) = void(&l, &l.bar_token, &target, SUPER_STAFF).await;
        assert_eq!(resp.status, 409, "{name}: {}", resp.body);
        resp.assert_error(409, "ALREADY_VOIDED");
        assert_eq!(money(&l), before, "{name}");
        // The first void's replay is its stored answer.
        let again = l.post("/v1/voids", &l.bar_token, first_req).await;
        assert_eq!(again.raw, first_resp.raw, "{name}");
        assert!(again.replayed(), "{name}");
    }
    assert_eq!(l.balance(&card).await, 5000);
    // The voided order, sent again, is the stored approval: never charged twice.
    let again = l.post("/v1/orders", &l.bar_token, &order).await;
    assert_eq!(again.status, 201);
    assert!(again.replayed());
    assert_eq!(l.balance(&card).await, 5000);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------------------

/// What the test expects the ledger to know about an operation.
#[derive(Clone)]
enum Known {
    Applied {
        uid: String,
        delta: i64,
        voided: bool,
    },
    Declined,
    Tombstone,
}

/// A reference model of the ledger's money rules, to predict every batch result.
#[derive(Default)]
struct Model {
    /// uid -> (balance, blocked for debt)
    cards: HashMap<String, (i64, bool)>,
    ops: HashMap<String, Known>,
}

/// The expected result of one operation: status, error code, new balance, body status.
#[derive(Debug, PartialEq)]
struct Expect {
    status: u16,
    code: Option<&'static str>,
    new_balance: Option<i64>,
    body_status: Option<&'static str>,
}

impl Expect {
    fn error(status: u16, code: &'static str) -> Expect {
        Expect {
            status,
            code: Some(code),
            new_balance: None,
            body_status: None,
        }
    }
    fn ok(new_balance: Option<i64>, body_status: &'static str) -> Expect {
        Expect {
            status: 201,
            code: None,
            new_balance,
            body_status: Some(body_status),
        }
    }
}

impl Model {
    fn order(&mut self, op: &Value) -> Expect {
        let id = crid(op);
        if matches!(self.ops.get(&id), Some(Known::Tombstone)) {
            return Expect::error(409, "OPERATION_VOIDED");
        }
        let card = op["card_uid"].as_str().unwrap().to_owned();
        let total = op["total_cents"].as_i64().unwrap();
        if op["mode"] == "offline" {
            let entry = self.cards.entry(card.clone()).or_insert((0, false));
            entry.0 -= total;
            if entry.0 < 0 {
                entry.1 = true;
            }
            let balance = entry.0;
            self.ops.insert(
                id,
                Known::Applied {
                    uid: card,
                    delta: -total,
                    voided: false,
                },
            );
            return Expect::ok(Some(balance), "approved");
        }
        let catalog_ok = op["items"].as_array().unwrap().iter().all(|item| {
            PRODUCTS
                .iter()
                .any(|(p, _, price)| item["product_id"] == *p && item["unit_price_cents"] == *price)
        });
        let expect = match self.cards.get(&card) {
            None => Expect::error(404, "CARD_NOT_FOUND"),
            Some((_, true)) => Expect::error(423, "CARD_BLOCKED"),
            Some(_) if !catalog_ok => Expect::error(422, "PRICE_MISMATCH"),
            Some((balance, _)) if *balance < total => Expect::error(402, "INSUFFICIENT_FUNDS"),
            Some(_) => {
                let entry = self.cards.get_mut(&card).unwrap();
                entry.0 -= total;
                let balance = entry.0;
                self.ops.insert(
                    id,
                    Known::Applied {
                        uid: card,
                        delta: -total,
                        voided: false,
                    },
                );
                return Expect::ok(Some(balance), "approved");
            }
        };
        self.ops.insert(id, Known::Declined);
        expect
    }

    fn recharge(&mut self, op: &Value) -> Expect {
        let id = crid(op);
        if matches!(self.ops.get(&id), Some(Known::Tombstone)) {
            return Expect::error(409, "OPERATION_VOIDED");
        }
        let card = op["card_uid"].as_str().unwrap().to_owned();
        let amount = op["amount_cents"].as_i64().unwrap();
        let balance = self.cards.get(&card).map_or(0, |c| c.0);
        if op["mode"] == "online"
            && (amount > RECHARGE_MAX_CENTS || balance + amount > BALANCE_MAX_CENTS)
        {
            self.ops.insert(id, Known::Declined);
            return Expect::error(422, "LIMIT_EXCEEDED");
        }
        let entry = self.cards.entry(card.clone()).or_insert((0, false));
        entry.0 += amount;
        if entry.0 >= 0 {
            entry.1 = false;
        }
        let balance = entry.0;
        self.ops.insert(
            id,
            Known::Applied {
                uid: card,
                delta: amount,
                voided: false,
            },
        );
        Expect::ok(Some(balance), "approved")
    }

    fn void(&mut self, op: &Value) -> Expect {
        let id = crid(op);
        let target = op["target_client_request_id"].as_str().unwrap().to_owned();
        let expect = match self.ops.get(&target).cloned() {
            Some(Known::Applied { voided: true, .. }) | Some(Known::Tombstone) => {
                return Expect::error(409, "ALREADY_VOIDED");
            }
            Some(Known::Applied {
                uid,
                delta,
                voided: false,
            }) => {
                let entry = self.cards.get_mut(&uid).unwrap();
                entry.0 -= delta;
                if entry.0 >= 0 {
                    entry.1 = false;
                }
                let balance = entry.0;
                self.ops.insert(
                    target,
                    Known::Applied {
                        uid,
                        delta,
                        voided: true,
                    },
                );
                Expect::ok(Some(balance), "voided")
            }
            Some(Known::Declined) | None => {
                self.ops.insert(target, Known::Tombstone);
                Expect::ok(None, "tombstoned")
            }
        };
        self.ops.insert(
            id,
            Known::Applied {
                uid: String::new(),
                delta: 0,
                voided: false,
            },
        );
        expect
    }

    fn apply(&mut self, op: &Value) -> Expect {
        match op["type"].as_str().unwrap() {
            "order" => self.order(op),
            "recharge" => self.recharge(op),
            "void" => self.void(op),
            other => panic!("unknown type {other}"),
        }
    }
}

/// A small deterministic generator (the runs must be reproducible).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// 500 checkpoint operations: top-ups (some over the limits) and voids (of its own top-ups,
/// repeated voids, and unknown targets).
fn checkpoint_batch(l: &Ledger, rng: &mut Rng, cards: &[String]) -> Vec<Value> {
    let mut ops: Vec<Value> = Vec::new();
    let mut topups: Vec<String> = Vec::new();
    let mut voided: Vec<String> = Vec::new();
    while ops.len() < 500 {
        let seq = l.seq(&l.checkpoint_token);
        let op = match rng.below(10) {
            0..=7 => {
                let index = rng.below(cards.len() as u64) as usize;
                // The last quarter of the cards stay poor, so that the bar batch meets 402s.
                let amount = if index >= cards.len() * 3 / 4 {
                    500
                } else {
                    *rng.pick(&[500, 1000, 2000, 5000, 5000, 10_000, 50_000, 60_000])
                };
                let method = *rng.pick(&["cash", "cash", "card"]);
                let mode = *rng.pick(&["online", "online", "online", "offline"]);
                let body = recharge_body(&cards[index], seq, amount, method, mode);
                topups.push(crid(&body));
                tagged("recharge", &body)
            }
            8 if !topups.is_empty() => {
                // Now and then a second void of an already voided target.
                let target = if !voided.is_empty() && rng.below(4) == 0 {
                    rng.pick(&voided).clone()
                } else {
                    rng.pick(&topups).clone()
                };
                voided.push(target.clone());
                tagged("void", &void_body(&target, seq, "staff_error", CASH_STAFF))
            }
            _ => {
                let target = new_id();
                voided.push(target.clone());
                tagged("void", &void_body(&target, seq, "in_doubt", SUPER_STAFF))
            }
        };
        ops.push(op);
    }
    ops
}

/// 500 bar operations: online orders (approved, 402, 404, 423, 422), offline orders (some into
/// debt, some on unknown cards), voids of earlier orders, tombstones and the tombstoned
/// orders arriving later.
fn bar_batch(l: &Ledger, rng: &mut Rng, cards: &[String], strangers: &[String]) -> Vec<Value> {
    let mut ops: Vec<Value> = Vec::new();
    let mut orders: Vec<String> = Vec::new();
    let mut tombstoned: Vec<Value> = Vec::new();
    while ops.len() < 500 {
        let seq = l.seq(&l.bar_token);
        let card = if rng.below(5) == 0 {
            rng.pick(strangers)
        } else {
            rng.pick(cards)
        };
        let mut items: Vec<(&str, i64, i64)> = Vec::new();
        for _ in 0..=rng.below(3) {
            let (id, _, price) = *rng.pick(PRODUCTS);
            items.push((id, 1 + rng.below(3) as i64, price));
        }
        let op = match rng.below(12) {
            0..=5 => {
                let body = order_body(card, seq, &items, "online");
                orders.push(crid(&body));
                tagged("order", &body)
            }
            6 => {
                items[0].2 += 50; // not the catalog's price
                let body = order_body(card, seq, &items, "online");
                orders.push(crid(&body));
                tagged("order", &body)
            }
            7 | 8 => {
                if rng.below(3) == 0 {
                    items.push(("cocktail", 20, COCKTAIL_CENTS)); // into debt
                }
                let body = order_body(card, seq, &items, "offline");
                orders.push(crid(&body));
                tagged("order", &body)
            }
            9 if !orders.is_empty() => {
                let target = rng.pick(&orders).clone();
                tagged(
                    "void",
                    &void_body(&target, seq, "customer_refund", BAR_STAFF),
                )
            }
            10 => {
                let mode = ["online", "offline"][rng.below(2) as usize];
                let late = order_body(card, 0, &items, mode);
                let body = tagged("void", &void_body(&crid(&late), seq, "in_doubt", BAR_STAFF));
                tombstoned.push(late);
                body
            }
            _ if !tombstoned.is_empty() => {
                let mut late = tombstoned.remove(0);
                late["terminal_seq"] = json!(seq);
                tagged("order", &late)
            }
            _ => {
                let body = order_body(card, seq, &items, "online");
                orders.push(crid(&body));
                tagged("order", &body)
            }
        };
        ops.push(op);
    }
    ops
}

/// Checks a batch answer against the model's expectations, result by result.
#[track_caller]
fn check_batch(resp: &Resp, ops: &[Value], expected: &[Expect]) -> HashMap<&'static str, usize> {
    resp.assert_status(200);
    let results = resp.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", resp.body));
    assert_eq!(results.len(), ops.len(), "one result per operation");
    let mut seen = HashMap::new();
    for (i, ((result, op), want)) in results.iter().zip(ops).zip(expected).enumerate() {
        assert_eq!(
            result["client_request_id"], op["client_request_id"],
            "result {i} out of order"
        );
        let body = &result["body"];
        let got = Expect {
            status: u16::try_from(result["status"].as_u64().unwrap()).unwrap(),
            code: body
                .pointer("/error/code")
                .and_then(Value::as_str)
                .map(|c| {
                    let known = [
                        "CARD_NOT_FOUND",
                        "CARD_BLOCKED",
                        "PRICE_MISMATCH",
                        "INSUFFICIENT_FUNDS",
                        "LIMIT_EXCEEDED",
                        "OPERATION_VOIDED",
                        "ALREADY_VOIDED",
                    ];
                    *known.iter().find(|k| **k == c).unwrap_or(&"(other)")
                }),
            new_balance: body["new_balance_cents"].as_i64(),
            body_status: body["status"].as_str().and_then(|s| {
                ["approved", "voided", "tombstoned"]
                    .into_iter()
                    .find(|k| *k == s)
            }),
        };
        assert_eq!(
            &got, want,
            "operation {i} ({}): {op}\nresult: {result}",
            op["type"]
        );
        *seen
            .entry(want.code.unwrap_or(want.body_status.unwrap_or("?")))
            .or_insert(0) += 1;
    }
    seen
}

async fn batches_of_500_mixed_operations_apply_in_order_and_replay_as_no_ops(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let mut rng = Rng(20_260_701);
    let cards: Vec<String> = (0..40).map(|n| uid(1000 + n)).collect();
    let strangers: Vec<String> = (0..10).map(|n| uid(2000 + n)).collect();
    let mut model = Model::default();

    let cp_ops = checkpoint_batch(&l, &mut rng, &cards);
    let cp_expected: Vec<Expect> = cp_ops.iter().map(|op| model.apply(op)).collect();
    let cp_resp = l
        .post(
            "/v1/batch",
            &l.checkpoint_token,
            &json!({"operations": cp_ops}),
        )
        .await;
    let cp_seen = check_batch(&cp_resp, &cp_ops, &cp_expected);

    let bar_ops = bar_batch(&l, &mut rng, &cards, &strangers);
    let bar_expected: Vec<Expect> = bar_ops.iter().map(|op| model.apply(op)).collect();
    let bar_resp = l
        .post("/v1/batch", &l.bar_token, &json!({"operations": bar_ops}))
        .await;
    let bar_seen = check_batch(&bar_resp, &bar_ops, &bar_expected);

    // The mix really is mixed: every outcome occurs.
    for outcome in [
        "approved",
        "voided",
        "tombstoned",
        "LIMIT_EXCEEDED",
        "ALREADY_VOIDED",
    ] {
        assert!(
            cp_seen.contains_key(outcome),
            "checkpoint batch lacks {outcome}: {cp_seen:?}"
        );
    }
    for outcome in [
        "approved",
        "voided",
        "tombstoned",
        "CARD_NOT_FOUND",
        "CARD_BLOCKED",
        "PRICE_MISMATCH",
        "INSUFFICIENT_FUNDS",
        "OPERATION_VOIDED",
    ] {
        assert!(
            bar_seen.contains_key(outcome),
            "bar batch lacks {outcome}: {bar_seen:?}"
        );
    }

    // Balances and statuses as the model says.
    for card in cards.iter().chain(&strangers) {
        match model.cards.get(card) {
            Some((balance, blocked)) => {
                let status = if *blocked { "blocked" } else { "active" };
                assert_eq!(
                    card_state(&l, card).await,
                    (*balance, status.to_owned()),
                    "card {card}"
                );
            }
            None => {
                l.card(card).await.assert_error(404, "CARD_NOT_FOUND");
            }
        }
    }

    // Replaying both batches changes nothing and returns every stored answer.
    let before = l.db_fingerprint();
    for (token, ops, first) in [
        (&l.checkpoint_token, &cp_ops, &cp_resp),
        (&l.bar_token, &bar_ops, &bar_resp),
    ] {
        let again = l
            .post("/v1/batch", token, &json!({"operations": ops}))
            .await;
        again.assert_status(200);
        let (a, b) = (&again.body["results"], &first.body["results"]);
        assert_eq!(a.as_array().unwrap().len(), 500);
        for (i, (x, y)) in a
            .as_array()
            .unwrap()
            .iter()
            .zip(b.as_array().unwrap())
            .enumerate()
        {
            assert_eq!(x["status"], y["status"], "replayed result {i}");
            if y["status"] == 409 {
                // ALREADY_VOIDED and OPERATION_VOIDED are not stored with the key (only
                // approvals and the 402/404/422/423 declines are): the same answer is
                // computed again, with this request's id.
                assert_eq!(
                    x["body"]["error"]["code"], y["body"]["error"]["code"],
                    "replayed result {i}"
                );
            } else {
                assert_eq!(
                    x["body"], y["body"],
                    "replayed result {i} differs from the first answer"
                );
            }
        }
    }
    assert_eq!(
        l.db_fingerprint(),
        before,
        "replaying the batches changed the database"
    );

    // Each operation has its own idempotency, as if posted alone.
    let first_order = bar_ops.iter().position(|op| op["type"] == "order").unwrap();
    let mut alone = bar_ops[first_order].clone();
    alone.as_object_mut().unwrap().remove("type");
    let resp = l.post("/v1/orders", &l.bar_token, &alone).await;
    assert!(resp.replayed(), "{}", resp.body);
    assert_eq!(
        resp.status as u64,
        bar_resp.body["results"][first_order]["status"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(resp.body, bar_resp.body["results"][first_order]["body"]);
    assert_eq!(l.db_fingerprint(), before);
    l.assert_audit_ok();
}

async fn a_batch_mixes_failures_without_stopping(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 2000).await;
    let seq = || l.seq(&l.bar_token);
    let first = order_body(&card, seq(), &[BEER], "online");
    let mut reused = order_body(&card, seq(), &[WATER], "online");
    reused["client_request_id"] = first["client_request_id"].clone();
    let mut bad_total = order_body(&card, seq(), &[BEER], "online");
    bad_total["total_cents"] = json!(1);
    let no_key = {
        let mut b = tagged("order", &order_body(&card, seq(), &[BEER], "online"));
        b.as_object_mut().unwrap().remove("client_request_id");
        b
    };
    let teleport = new_id();
    // (operation, expected status, expected error code, expected client_request_id in the result)
    let cases: Vec<(Value, u64, Option<&str>, Value)> = vec![
        (
            tagged("order", &first),
            201,
            None,
            first["client_request_id"].clone(),
        ),
        // The same operation twice in one batch: the second is the stored answer.
        (
            tagged("order", &first),
            201,
            None,
            first["client_request_id"].clone(),
        ),
        // The same key for something else.
        (
            tagged("order", &reused),
            422,
            Some("IDEMPOTENCY_KEY_REUSED"),
            first["client_request_id"].clone(),
        ),
        // A bar terminal may not top up, even inside a batch.
        {
            let body = recharge_body(&card, seq(), 500, "cash", "online");
            let key = body["client_request_id"].clone();
            (tagged("recharge", &body), 403, Some("FORBIDDEN"), key)
        },
        // Invalid operations are refused alone, naming what could be read.
        (
            json!({"type": "teleport", "client_request_id": teleport}),
            400,
            Some("INVALID_REQUEST"),
            json!(teleport),
        ),
        (
            tagged("order", &bad_total),
            400,
            Some("INVALID_REQUEST"),
            bad_total["client_request_id"].clone(),
        ),
        (no_key, 400, Some("INVALID_REQUEST"), Value::Null),
        (json!(42), 400, Some("INVALID_REQUEST"), Value::Null),
        // The others go on: 2000 - 450 - 450 - 900 = 200, then 402.
        {
            let body = order_body(&card, seq(), &[BEER], "online");
            let key = body["client_request_id"].clone();
            (tagged("order", &body), 201, None, key)
        },
        {
            let body = order_body(&card, seq(), &[("beer-05", 2, BEER_CENTS)], "online");
            let key = body["client_request_id"].clone();
            (tagged("order", &body), 201, None, key)
        },
        {
            let body = order_body(&card, seq(), &[BEER], "online");
            let key = body["client_request_id"].clone();
            (tagged("order", &body), 402, Some("INSUFFICIENT_FUNDS"), key)
        },
    ];
    let ops: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let resp = l
        .post("/v1/batch", &l.bar_token, &json!({"operations": ops}))
        .await;
    resp.assert_status(200);
    let results = resp.body["results"].as_array().unwrap();
    assert_eq!(results.len(), cases.len(), "{}", resp.body);
    for (i, ((op, status, code, key), result)) in cases.iter().zip(results).enumerate() {
        assert_eq!(
            result["status"], *status,
            "operation {i}: {op}\nresult: {result}"
        );
        assert_eq!(
            result["body"]
                .pointer("/error/code")
                .and_then(Value::as_str),
            *code,
            "operation {i}: {op}\nresult: {result}"
        );
        assert_eq!(&result["client_request_id"], key, "operation {i}: {result}");
    }
    assert_eq!(results[1]["body"], results[0]["body"], "the stored answer");
    assert_eq!(
        results[5]["body"]["error"]["details"]["field"],
        "total_cents"
    );
    assert_eq!(
        results[10]["body"]["error"]["details"]["balance_cents"],
        200
    );
    assert_eq!(l.balance(&card).await, 200);
    l.assert_audit_ok();
}

async fn batches_of_zero_or_501_operations_are_refused(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, RECHARGE_MAX_CENTS).await;
    l.fund(&card, BALANCE_MAX_CENTS - RECHARGE_MAX_CENTS).await;
    let before = l.db_fingerprint();
    let op = |seq: i64| tagged("order", &order_body(&card, seq, &[WATER], "online"));
    for (name, ops) in [
        ("empty", vec![]),
        ("501", (1..=501).map(op).collect::<Vec<_>>()),
    ] {
        let resp = l
            .post("/v1/batch", &l.bar_token, &json!({"operations": ops}))
            .await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.body);
        let details = resp.assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], "operations", "{name}");
    }
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a refused batch changed the database"
    );
    // 500 is fine.
    let ops: Vec<Value> = (1..=500).map(op).collect();
    let resp = l
        .post("/v1/batch", &l.bar_token, &json!({"operations": ops}))
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body["results"].as_array().unwrap().len(), 500);
    assert_eq!(
        l.balance(&card).await,
        BALANCE_MAX_CENTS - 500 * WATER_CENTS
    );
}

// ---------------------------------------------------------------------------------------
// Card feed
// ---------------------------------------------------------------------------------------

/// One page of the card feed: (cards, whole body).
async fn feed_page(l: &Ledger, since: &str, limit: u32) -> (Vec<Value>, Value) {
    let resp = l
        .get(
            &format!("/v1/cards?since={since}&limit={limit}"),
            Some(&l.bar_token),
        )
        .await;
    resp.assert_status(200);
    let cards = resp.body["cards"]
        .as_array()
        .unwrap_or_else(|| panic!("no cards: {}", resp.body))
        .clone();
    assert!(
        resp.body["next_cursor"].is_string(),
        "next_cursor must be a string: {}",
        resp.body
    );
    (cards, resp.body)
}

/// Reads the whole feed from `since` in pages of `limit`; returns the cards and the last cursor.
async fn read_feed(l: &Ledger, since: &str, limit: u32) -> (Vec<Value>, String) {
    let mut cursor = since.to_owned();
    let mut all = Vec::new();
    for _ in 0..1000 {
        let (cards, body) = feed_page(l, &cursor, limit).await;
        assert!(cards.len() <= limit as usize, "more than limit cards");
        let next = body["next_cursor"].as_str().unwrap().to_owned();
        if cards.is_empty() {
            return (all, next);
        }
        all.extend(cards);
        cursor = next;
    }
    panic!("the feed never ends");
}

async fn the_card_feed_pages_in_change_order_and_shows_blocks(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let cards: Vec<String> = (0..25).map(uid).collect();
    for (i, card) in cards.iter().enumerate() {
        l.fund(card, 1000 + i as i64).await;
    }

    // Pages of 10, 10, 5, then nothing; oldest change first; versions increase.
    let (first, body) = feed_page(&l, "", 10).await;
    assert_eq!(first.len(), 10, "{body}");
    let (all, end) = read_feed(&l, "", 10).await;
    assert_eq!(all.len(), 25);
    let uids: Vec<&str> = all
        .iter()
        .map(|c| c["card_uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        cards.iter().map(String::as_str).collect::<Vec<_>>(),
        "oldest change first"
    );
    for (i, c) in all.iter().enumerate() {
        assert_eq!(c["balance_cents"], 1000 + i as i64);
        assert_eq!(c["status"], "active");
        assert!(
            c["version"].is_number() || c["version"].is_string(),
            "version: {c}"
        );
    }
    let versions: Vec<i64> = all.iter().filter_map(|c| c["version"].as_i64()).collect();
    if versions.len() == all.len() {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "versions increase: {versions:?}"
        );
    }
    // The default limit returns everything here; the whole feed equals the paged one.
    let resp = l.get("/v1/cards", Some(&l.bar_token)).await;
    resp.assert_status(200);
    assert_eq!(resp.body["cards"].as_array().unwrap(), &all);
    let resp = l.get("/v1/cards?since=", Some(&l.checkpoint_token)).await;
    assert_eq!(resp.body["cards"].as_array().unwrap(), &all);
    // Nothing new after the end.
    let (none, body) = feed_page(&l, &end, 10).await;
    assert!(none.is_empty(), "{body}");

    // Changes after the cursor: a sale, a lost card, a top-up; each card once, latest state,
    // in the order of its latest change.
    let (_, resp) = sell(&l, &l.bar_token, &cards[3], &[WATER], "online").await;
    resp.assert_status(201);
    assert_success(
        "card block",
        &l.admin(&["card", "block", "--uid", &cards[10]]),
    );
    l.fund(&cards[3], 50).await;
    let (changed, end2) = read_feed(&l, &end, 2).await;
    let got: Vec<(&str, i64, &str)> = changed
        .iter()
        .map(|c| {
            (
                c["card_uid"].as_str().unwrap(),
                c["balance_cents"].as_i64().unwrap(),
                c["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (cards[10].as_str(), 1010, "blocked"),
            (cards[3].as_str(), 1003 - WATER_CENTS + 50, "active")
        ],
        "each changed card once, latest state, oldest change first"
    );
    let (none, _) = feed_page(&l, &end2, 10).await;
    assert!(none.is_empty());

    // Unblocking is a change too.
    assert_success(
        "card unblock",
        &l.admin(&["card", "unblock", "--uid", &cards[10]]),
    );
    let (changed, _) = read_feed(&l, &end2, 10).await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["card_uid"], cards[10]);
    assert_eq!(changed[0]["status"], "active");

    // A cursor that the ledger did not hand out.
    for bad in ["abc", "-5", "1.5"] {
        let resp = l
            .get(&format!("/v1/cards?since={bad}"), Some(&l.bar_token))
            .await;
        assert_eq!(resp.status, 400, "since={bad}: {}", resp.body);
        let details = resp.assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], "since");
    }

    // Limits: 1..=10000.
    for bad in ["0", "10001", "-1", "x"] {
        let resp = l
            .get(&format!("/v1/cards?limit={bad}"), Some(&l.bar_token))
            .await;
        assert_eq!(resp.status, 400, "limit={bad}: {}", resp.body);
        resp.assert_error(400, "INVALID_REQUEST");
    }
    let resp = l.get("/v1/cards?limit=10000", Some(&l.bar_token)).await;
    resp.assert_status(200);
    assert_eq!(resp.body["cards"].as_array().unwrap().len(), 25);
}

// ---------------------------------------------------------------------------------------
// Catalog, staff, scans, terminals/me
// ---------------------------------------------------------------------------------------

async fn the_catalog_is_per_point_of_sale_with_etag(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let resp = l.get("/v1/catalog", Some(&l.bar_token)).await;
    resp.assert_status(200);
    assert_eq!(resp.body["point_of_sale"], BAR_POS);
    assert_eq!(resp.body["currency"], "EUR");
    let mut products: Vec<(String, String, i64, String)> = resp.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["product_id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
                p["price_cents"].as_i64().unwrap(),
                p["category"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    products.sort();
    let mut want: Vec<(String, String, i64, String)> = PRODUCTS
        .iter()
        .map(|(id, name, price)| {
            (
                (*id).to_owned(),
                (*name).to_owned(),
                *price,
                "drinks".to_owned(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(products, want);

    let etag = resp
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag"))
        .to_owned();
    let not_modified = l
        .get_with(
            "/v1/catalog",
            Some(&l.bar_token),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(
        not_modified.status,
        304,
        "{}",
        String::from_utf8_lossy(&not_modified.raw)
    );
    // RFC 9110: a 304 carries the ETag; `*` and lists match too.
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    for condition in ["*".to_owned(), format!("\"nope\", {etag}")] {
        let resp = l
            .get_with(
                "/v1/catalog",
                Some(&l.bar_token),
                &[("if-none-match", &condition)],
            )
            .await;
        assert_eq!(resp.status, 304, "If-None-Match: {condition}");
    }
    assert!(not_modified.raw.is_empty(), "a 304 has no body");
    let other = l
        .get_with(
            "/v1/catalog",
            Some(&l.bar_token),
            &[("if-none-match", "\"something-else\"")],
        )
        .await;
    other.assert_status(200);
    assert_eq!(other.raw, resp.raw);
    // Another terminal at the same point of sale sees the same catalog and ETag.
    let bar2 = l.get("/v1/catalog", Some(&l.bar2_token)).await;
    assert_eq!(bar2.header("etag"), Some(etag.as_str()));

    // A price change gives a new ETag; the old one no longer matches.
    assert_success(
        "product add",
        &l.admin(&[
            "product",
            "add",
            "--id",
            "water",
            "--name",
            "Water",
            "--price-cents",
            "250",
            "--point-of-sale",
            BAR_POS,
        ]),
    );
    let changed = l
        .get_with(
            "/v1/catalog",
            Some(&l.bar_token),
            &[("if-none-match", &etag)],
        )
        .await;
    changed.assert_status(200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    let water = changed.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product_id"] == "water")
        .cloned();
    assert_eq!(water.unwrap()["price_cents"], 250);
    // And the ledger uses the new price at once.
    let card = uid(1);
    l.fund(&card, 1000).await;
    let (_, resp) = sell(&l, &l.bar_token, &card, &[WATER], "online").await;
    let details = resp.assert_error(422, "PRICE_MISMATCH");
    assert_eq!(details["catalog_price_cents"], 250);
    let (_, resp) = sell(&l, &l.bar_token, &card, &[("water", 1, 250)], "online").await;
    resp.assert_status(201);

    // The checkpoint's point of sale has no products.
    let cp = l.get("/v1/catalog", Some(&l.checkpoint_token)).await;
    cp.assert_status(200);
    assert_eq!(cp.body["point_of_sale"], CHECKPOINT_POS);
    assert_eq!(cp.body["products"], json!([]));
    assert_ne!(cp.header("etag"), changed.header("etag"));
}

async fn each_point_of_sale_sells_from_its_own_catalog(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    // Admin commands work while the ledger serves: a new bar, with its own prices.
    let out = l.admin(&[
        "terminal",
        "add",
        "--name",
        "beach-1",
        "--kind",
        "bar",
        "--point-of-sale",
        "Beach Bar",
    ]);
    let stdout = assert_success("terminal add", &out);
    let beach = stdout.lines().last().unwrap().trim().to_owned();
    assert!(
        beach.starts_with("clt_") && beach.len() == 68,
        "token format clt_ + 64 hex: {beach}"
    );
    assert!(stdout.contains("terminal_id: "), "{stdout}");
    for (id, price) in [("beer-05", "500"), ("sangria", "700")] {
        assert_success(
            "product add",
            &l.admin(&[
                "product",
                "add",
                "--id",
                id,
                "--name",
                id,
                "--price-cents",
                price,
                "--point-of-sale",
                "Beach Bar",
            ]),
        );
    }
    let me = l.get("/v1/terminals/me", Some(&beach)).await;
    me.assert_status(200);
    assert_eq!(me.body["point_of_sale"], "Beach Bar");
    let catalog = l.get("/v1/catalog", Some(&beach)).await;
    let mut ids: Vec<&str> = catalog.body["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["beer-05", "sangria"]);

    let card = uid(1);
    l.fund(&card, 5000).await;
    // The Main Bar's price is not the Beach Bar's, and water is not sold at the beach.
    let (_, resp) = sell(&l, &beach, &card, &[BEER], "online").await;
    let details = resp.assert_error(422, "PRICE_MISMATCH");
    assert_eq!(details["catalog_price_cents"], 500);
    let (_, resp) = sell(&l, &beach, &card, &[WATER], "online").await;
    resp.assert_error(422, "UNKNOWN_PRODUCT");
    let (_, resp) = sell(&l, &l.bar_token, &card, &[("sangria", 1, 700)], "online").await;
    resp.assert_error(422, "UNKNOWN_PRODUCT");
    let (req, resp) = sell(
        &l,
        &beach,
        &card,
        &[("beer-05", 1, 500), ("sangria", 2, 700)],
        "online",
    )
    .await;
    assert_approval(&resp, &req, 5000, 3100, "active", &[]);
    let (req, resp) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    assert_approval(&resp, &req, 3100, 3100 - BEER_CENTS, "active", &[]);
    l.assert_audit_ok();
}

async fn the_catalog_can_be_imported_from_toml(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let file = l.dir.path().join("catalog.toml");
    std::fs::write(
        &file,
        r#"
[[product]]
id = "lemonade"
name = "Lemonade"
price_cents = 350
point_of_sale = "Main Bar"

[[product]]
id = "beer-05"
name = "Beer 0.5 l"
price_cents = 480
point_of_sale = "Main Bar"
category = "drinks"
"#,
    )
    .unwrap();
    assert_success(
        "catalog import",
        &l.admin(&["catalog", "import", file.to_str().unwrap()]),
    );
    let resp = l.get("/v1/catalog", Some(&l.bar_token)).await;
    let find = |id: &str| {
        resp.body["products"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["product_id"] == id)
            .cloned()
    };
    assert_eq!(find("lemonade").unwrap()["price_cents"], 350);
    assert_eq!(find("beer-05").unwrap()["price_cents"], 480);
    assert_eq!(find("water").unwrap()["price_cents"], WATER_CENTS);
}

async fn the_staff_feed_has_argon2_pin_hashes(backend: Backend) {
    use argon2::{PasswordHash, PasswordVerifier};
    let l = Ledger::start_on(backend).await;
    for token in [&l.bar_token, &l.checkpoint_token] {
        let resp = l.get("/v1/staff", Some(token)).await;
        resp.assert_status(200);
        let staff = resp.body["staff"].as_array().unwrap();
        assert_eq!(staff.len(), STAFF.len(), "{}", resp.body);
        for (id, name, role, pin) in STAFF {
            let s = staff
                .iter()
                .find(|s| s["staff_id"] == *id)
                .unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!(s["name"], *name);
            assert_eq!(s["role"], *role);
            assert_eq!(s["active"], true);
            let hash = s["pin_hash"].as_str().unwrap();
            assert!(
                hash.starts_with("$argon2"),
                "not an argon2 PHC string: {hash}"
            );
            assert!(
                !resp.body.to_string().contains(&format!("\"{pin}\"")),
                "a PIN in clear"
            );
            // Verifying is slow in a debug build: one staff member is enough.
            if token == &l.bar_token && *id == BAR_STAFF {
                let parsed = PasswordHash::new(hash).unwrap();
                assert!(
                    argon2::Argon2::default()
                        .verify_password(pin.as_bytes(), &parsed)
                        .is_ok(),
                    "{id}"
                );
                assert!(
                    argon2::Argon2::default()
                        .verify_password(b"0000", &parsed)
                        .is_err(),
                    "{id}"
                );
            }
        }
    }
    // Deactivated staff stay in the feed, marked inactive (terminals must refuse their login).
    deactivate_staff(&l, "s-bar");
    let resp = l.get("/v1/staff", Some(&l.bar_token)).await;
    let s = resp.body["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["staff_id"] == "s-bar")
        .cloned();
    assert_eq!(s.unwrap()["active"], false);
}

async fn scans_are_stored_once_per_terminal_and_scan(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let at = |s: u32| format!("2026-07-01T21:14:{s:02}Z");
    let scan = |card: &str, result: &str, reader: &str, when: String| json!({"card_uid": card, "result": result, "reader": reader, "scanned_at": when});
    let mut with_seq = scan(&uid(2), "ok", "ACS ACR122U 00 00", at(2));
    with_seq["terminal_seq"] = json!(7);
    let batch = json!({"scans": [
        scan(&uid(1), "ok", "ACS ACR122U 00 00", at(1)),
        with_seq,
        scan(&uid(1), "read_error", "ACS ACR122U 00 00", at(3)),
    ]});
    let resp = l.post("/v1/scans", &l.bar_token, &batch).await;
    resp.assert_status(200);
    assert_eq!(resp.body, json!({"accepted": 3, "duplicates": 0}));
    assert_eq!(l.count("nfc_scan_log"), 3);

    // The same upload again: all duplicates, nothing written.
    let before = l.db_fingerprint_of(&["nfc_scan_log"]);
    let resp = l.post("/v1/scans", &l.bar_token, &batch).await;
    resp.assert_status(200);
    assert_eq!(resp.body, json!({"accepted": 0, "duplicates": 3}));
    assert_eq!(l.db_fingerprint_of(&["nfc_scan_log"]), before);

    // One old and one new.
    let mixed = json!({"scans": [
        scan(&uid(1), "ok", "ACS ACR122U 00 00", at(1)),
        scan(&uid(1), "ok", "ACS ACR122U 00 00", at(4)),
    ]});
    let resp = l.post("/v1/scans", &l.bar_token, &mixed).await;
    assert_eq!(resp.body, json!({"accepted": 1, "duplicates": 1}));
    // The same scan from another terminal is another scan.
    let resp = l.post("/v1/scans", &l.bar2_token, &mixed).await;
    assert_eq!(resp.body, json!({"accepted": 2, "duplicates": 0}));
    // A checkpoint uploads scans too.
    let resp = l.post("/v1/scans", &l.checkpoint_token, &mixed).await;
    assert_eq!(resp.body, json!({"accepted": 2, "duplicates": 0}));
    assert_eq!(l.count("nfc_scan_log"), 8);

    // 1 to 1000 scans per upload.
    let many = |n: u32| {
        let scans: Vec<Value> = (0..n)
            .map(|i| scan(&uid(i), "ok", "r", at(i % 60)))
            .collect();
        json!({ "scans": scans })
    };
    let before = l.db_fingerprint_of(&["nfc_scan_log"]);
    for n in [0, 1001] {
        let resp = l.post("/v1/scans", &l.bar_token, &many(n)).await;
        assert_eq!(resp.status, 400, "{n} scans: {}", resp.body);
        resp.assert_error(400, "INVALID_REQUEST");
    }
    assert_eq!(l.db_fingerprint_of(&["nfc_scan_log"]), before);
    let resp = l.post("/v1/scans", &l.bar_token, &many(1000)).await;
    resp.assert_status(200);
    assert_eq!(
        resp.body["accepted"].as_i64().unwrap() + resp.body["duplicates"].as_i64().unwrap(),
        1000
    );
}

async fn terminals_me_identifies_each_token(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let mut ids = HashSet::new();
    for (token, name, kind, pos) in [
        (&l.bar_token, "bar-1", "bar", BAR_POS),
        (&l.bar2_token, "bar-2", "bar", BAR_POS),
        (&l.checkpoint_token, "cp-1", "checkpoint", CHECKPOINT_POS),
    ] {
        let resp = l.get("/v1/terminals/me", Some(token)).await;
        resp.assert_status(200);
        let b = &resp.body;
        assert_uuid(&b["terminal_id"], "terminal_id");
        assert!(
            ids.insert(b["terminal_id"].as_str().unwrap().to_owned()),
            "terminal ids are distinct"
        );
        assert_eq!(b["name"], name);
        assert_eq!(b["kind"], kind);
        assert_eq!(b["point_of_sale"], pos);
        assert_time(&b["server_time"], "server_time");
        let server =
            chrono::DateTime::parse_from_rfc3339(b["server_time"].as_str().unwrap()).unwrap();
        let skew = (chrono::Utc::now() - server.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs();
        assert!(skew < 60, "server_time is {skew} s off");
    }
}

// ---------------------------------------------------------------------------------------
// Operations endpoints and conventions
// ---------------------------------------------------------------------------------------

async fn health_ready_and_openapi(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.get("/health", None).await.assert_status(200);
    l.get("/ready", None).await.assert_status(200);

    let resp = l.get("/v1/openapi.json", None).await;
    resp.assert_status(200);
    let doc = &resp.body;
    assert!(
        doc.is_object(),
        "not JSON: {}",
        String::from_utf8_lossy(&resp.raw)
    );
    assert!(
        doc["openapi"].as_str().unwrap_or_default().starts_with('3'),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths"));
    // Path parameters may be named freely: compare templates with `{}`.
    let normalize = |p: &str| {
        let mut out = String::new();
        let mut in_param = false;
        for ch in p.chars() {
            match ch {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                c if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    };
    let documented: HashSet<String> = paths.keys().map(|p| normalize(p)).collect();
    // Only what is served is documented: every documented path answers something but 404.
    for path in &documented {
        if path.contains("{}") || path == "/v1/openapi.json" {
            continue;
        }
        let resp = l.get(path, Some(&l.bar_token)).await;
        assert_ne!(resp.status, 404, "{path} is documented but not served");
    }
    for path in [
        "/v1/orders",
        "/v1/recharges",
        "/v1/voids",
        "/v1/shifts",
        "/v1/batch",
        "/v1/cards",
        "/v1/cards/{}",
        "/v1/catalog",
        "/v1/staff",
        "/v1/scans",
        "/v1/terminals/me",
        "/v1/webhooks/stripe",
        "/v1/openapi.json",
        "/health",
        "/ready",
    ] {
        assert!(
            documented.contains(path),
            "{path} is not in the OpenAPI document: {documented:?}"
        );
    }
    // Every error code of the contract is described.
    let text = resp.body.to_string();
    for code in [
        "INVALID_REQUEST",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "CARD_NOT_FOUND",
        "INSUFFICIENT_FUNDS",
        "CARD_BLOCKED",
        "LIMIT_EXCEEDED",
        "UNKNOWN_PRODUCT",
        "PRICE_MISMATCH",
        "IDEMPOTENCY_KEY_REUSED",
        "DUPLICATE_REQUEST",
        "ALREADY_VOIDED",
        "OPERATION_VOIDED",
        "DATABASE_ERROR",
        "SERVER_ERROR",
    ] {
        assert!(text.contains(code), "{code} is not in the OpenAPI document");
    }
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 1000).await;
    let order = |n: i64| serde_json::to_vec(&order_body(&card, n, &[WATER], "online")).unwrap();

    // Echoed: on success, on errors (also in the error body), without auth, on unknown routes.
    // (name, path, token, body to POST or None to GET, expected status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Vec<u8>>, u16);
    let cases: Vec<Case> = vec![
        (
            "order",
            "/v1/orders",
            Some(&l.bar_token),
            Some(order(1)),
            201,
        ),
        (
            "decline",
            "/v1/orders",
            Some(&l.bar_token),
            Some(serde_json::to_vec(&order_body(&uid(9), 2, &[WATER], "online")).unwrap()),
            404,
        ),
        (
            "invalid",
            "/v1/orders",
            Some(&l.bar_token),
            Some(b"{not json".to_vec()),
            400,
        ),
        ("unauthorized", "/v1/orders", None, Some(order(3)), 401),
        (
            "card",
            "/v1/cards/04000000000001",
            Some(&l.bar_token),
            None,
            200,
        ),
        ("health", "/health", None, None, 200),
        (
            "unknown route",
            "/v1/nothing-here",
            Some(&l.bar_token),
            None,
            404,
        ),
    ];
    let mut generated = HashSet::new();
    for (name, path, token, body, status) in &cases {
        for sent in [
            Some(format!("req-{name}-{}", new_id()).replace(' ', "-")),
            None,
        ] {
            let headers: Vec<(&str, &str)> =
                sent.iter().map(|s| ("x-request-id", s.as_str())).collect();
            // The second POST of a body is a replay: it carries its own request id too.
            let resp = match body {
                Some(b) => l.post_raw(path, *token, b.clone(), &headers).await,
                None => l.get_with(path, *token, &headers).await,
            };
            assert_eq!(resp.status, *status, "{name}: {}", resp.body);
            let got = resp
                .header("x-request-id")
                .unwrap_or_else(|| panic!("{name}: no X-Request-Id"))
                .to_owned();
            match &sent {
                Some(s) => assert_eq!(&got, s, "{name}: X-Request-Id not echoed"),
                None => {
                    assert!(!got.is_empty(), "{name}: empty X-Request-Id");
                    assert!(
                        generated.insert(got.clone()),
                        "{name}: generated X-Request-Id reused"
                    );
                }
            }
            // A replayed decline is the stored body, byte for byte, with the first request's id.
            if resp.status >= 400 && !resp.replayed() {
                assert_eq!(
                    resp.body["error"]["request_id"],
                    got.as_str(),
                    "{name}: error.request_id"
                );
            }
        }
    }
    // At most 128 visible ASCII characters are echoed; anything else gets a new id.
    let longest = "r".repeat(128);
    let resp = l
        .get_with("/health", None, &[("x-request-id", &longest)])
        .await;
    assert_eq!(resp.header("x-request-id"), Some(longest.as_str()));
    let too_long = "r".repeat(129);
    for bad in [too_long.as_str(), "with space", ""] {
        let resp = l.get_with("/health", None, &[("x-request-id", bad)]).await;
        let got = resp.header("x-request-id").unwrap_or_default();
        assert!(
            !got.is_empty() && got != bad,
            "X-Request-Id {bad:?} echoed as {got:?}"
        );
    }

    let resp = l.get("/v1/nothing-here", Some(&l.bar_token)).await;
    resp.assert_error(404, "NOT_FOUND");
    let resp = l.get("/v1/orders", Some(&l.bar_token)).await;
    resp.assert_error(405, "METHOD_NOT_ALLOWED");
}

async fn the_books_balance_after_everything(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let cards: Vec<String> = (0..5).map(uid).collect();
    for card in &cards {
        l.fund(card, 3000).await;
    }
    let (order, _) = sell(&l, &l.bar_token, &cards[0], &[BEER, COCKTAIL], "online").await;
    sell(
        &l,
        &l.bar2_token,
        &cards[1],
        &[("water", 3, WATER_CENTS)],
        "online",
    )
    .await
    .1
    .assert_status(201);
    sell(
        &l,
        &l.bar_token,
        &cards[2],
        &[("cocktail", 5, COCKTAIL_CENTS)],
        "offline",
    )
    .await
    .1
    .assert_status(201);
    sell(&l, &l.bar_token, &uid(99), &[("beer-05", 1, 1)], "offline")
        .await
        .1
        .assert_status(201);
    void(&l, &l.bar_token, &crid(&order), BAR_STAFF)
        .await
        .1
        .assert_status(201);
    void(&l, &l.bar_token, &new_id(), BAR_STAFF)
        .await
        .1
        .assert_status(201);
    recharge(&l, &cards[2], 2000, "card", "online")
        .await
        .1
        .assert_status(201);
    recharge(&l, &cards[3], 70_000, "cash", "offline")
        .await
        .1
        .assert_status(201);
    sell(
        &l,
        &l.bar_token,
        &cards[4],
        &[("beer-05", 99, BEER_CENTS)],
        "online",
    )
    .await
    .1
    .assert_error(402, "INSUFFICIENT_FUNDS");
    let out = l.audit();
    let stdout = assert_success("cashless ledger audit", &out);
    assert!(!stdout.trim().is_empty(), "audit prints a summary");
    // The API's balances agree with the audit's books: sum of card postings per card.
    for card in cards.iter().chain([&uid(99)]) {
        let posted = l.query_i64(&format!(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM postings WHERE account = 'card:{card}'"
        ));
        assert_eq!(posted, l.balance(card).await, "postings of card {card}");
    }
    let total = l.query_i64("SELECT COALESCE(SUM(amount_cents), 0) FROM postings");
    assert_eq!(total, 0, "all postings sum to zero");
}

// ---------------------------------------------------------------------------------------
// Retryable failures, body limits, key retention
// ---------------------------------------------------------------------------------------

async fn a_busy_database_is_a_retryable_503_that_is_not_stored(backend: Backend) {
    // PostgreSQL waits for a lock as long as its statement_timeout allows: a short one, so
    // the test need not wait the default 10 s (SQLite does not read `[postgres]`).
    let l =
        Ledger::start_with_config_on(backend, "[postgres]\nstatement_timeout_ms = 1000\n").await;
    let card = uid(1);
    l.fund(&card, 1000).await;
    let order = order_body(&card, l.seq(&l.bar_token), &[BEER], "online");

    // Another writer holds the database's write lock for longer than the ledger waits.
    let locker = l.hold_write_lock();
    let resp = l.post("/v1/orders", &l.bar_token, &order).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    resp.assert_error(503, "DATABASE_ERROR");
    drop(locker);

    // Not stored: the retry is processed, and its replay is the stored approval.
    let retry = l.post("/v1/orders", &l.bar_token, &order).await;
    assert!(
        !retry.replayed(),
        "a 503 must not be stored: {}",
        retry.body
    );
    assert_approval(&retry, &order, 1000, 550, "active", &[]);
    let again = l.post("/v1/orders", &l.bar_token, &order).await;
    assert!(again.replayed());
    assert_eq!(again.raw, retry.raw);
    l.get("/ready", None).await.assert_status(200);
    l.assert_audit_ok();
}

async fn bodies_above_64_kib_or_a_1_mib_batch_are_payload_too_large(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 10_000).await;
    // A valid request padded with JSON whitespace to exactly `size` bytes.
    let padded = |body: &Value, size: usize| {
        let mut bytes = serde_json::to_vec(body).unwrap();
        assert!(bytes.len() < size);
        let close = bytes.pop().unwrap(); // the final `}`
        bytes.resize(size - 1, b' ');
        bytes.push(close);
        bytes
    };
    let before = money(&l);
    for (path, token, body, size) in [
        (
            "/v1/orders",
            &l.bar_token,
            order_body(&card, l.seq(&l.bar_token), &[WATER], "online"),
            64 * 1024 + 1,
        ),
        (
            "/v1/recharges",
            &l.checkpoint_token,
            recharge_body(&card, l.seq(&l.checkpoint_token), 100, "cash", "online"),
            64 * 1024 + 1,
        ),
        (
            "/v1/voids",
            &l.bar_token,
            void_body(&new_id(), l.seq(&l.bar_token), "in_doubt", BAR_STAFF),
            64 * 1024 + 1,
        ),
        (
            "/v1/batch",
            &l.bar_token,
            json!({"operations": [tagged("order", &order_body(&card, l.seq(&l.bar_token), &[WATER], "online"))]}),
            1024 * 1024 + 1,
        ),
    ] {
        let resp = l
            .post_raw(path, Some(token), padded(&body, size), &[])
            .await;
        assert_eq!(resp.status, 413, "{path} with {size} bytes: {}", resp.body);
        resp.assert_error(413, "PAYLOAD_TOO_LARGE");
    }
    assert_eq!(money(&l), before);
    // At the limit exactly, the same requests pass.
    let order = order_body(&card, l.seq(&l.bar_token), &[WATER], "online");
    let resp = l
        .post_raw(
            "/v1/orders",
            Some(&l.bar_token),
            padded(&order, 64 * 1024),
            &[],
        )
        .await;
    assert_approval(&resp, &order, 10_000, 9_800, "active", &[]);
    let batch_order = order_body(&card, l.seq(&l.bar_token), &[WATER], "online");
    let batch = json!({"operations": [tagged("order", &batch_order)]});
    let resp = l
        .post_raw(
            "/v1/batch",
            Some(&l.bar_token),
            padded(&batch, 1024 * 1024),
            &[],
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body["results"][0]["status"], 201, "{}", resp.body);
}

/// Lets every idempotency key expire and restarts the ledger, which purges expired keys
/// when it starts; waits until the purgeable ones (declines) are gone.
async fn expire_all_keys(l: &mut Ledger) {
    l.execute(
        "UPDATE idempotency_keys SET expires_at = '2000-01-01T00:00:00.000Z' WHERE transaction_id IS NULL",
    );
    l.restart().await;
    wait_for(
        "expired idempotency keys purged",
        std::time::Duration::from_secs(30),
        || {
            // Declines' keys are purged; applied operations' keys are kept forever.
            l.query_i64("SELECT COUNT(*) FROM idempotency_keys WHERE transaction_id IS NULL") == 0
        },
    )
    .await;
}

async fn replays_after_the_keys_expired_do_not_apply_twice(backend: Backend) {
    let mut l = Ledger::start_on(backend).await;
    let card = uid(1);
    let (topup, first_topup) = recharge(&l, &card, 3000, "cash", "online").await;
    first_topup.assert_status(201);
    let (order, first_order) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    first_order.assert_status(201);
    let (other, first_other) = sell(&l, &l.bar_token, &card, &[WATER], "offline").await;
    first_other.assert_status(201);
    let (void_req, first_void) = void(&l, &l.bar_token, &crid(&other), BAR_STAFF).await;
    first_void.assert_status(201);

    expire_all_keys(&mut l).await;

    // The operations themselves are kept: the same requests find them, nothing is applied twice.
    let before = money(&l);
    for (name, path, token, body, first) in [
        (
            "top-up",
            "/v1/recharges",
            &l.checkpoint_token,
            &topup,
            &first_topup,
        ),
        ("order", "/v1/orders", &l.bar_token, &order, &first_order),
        ("void", "/v1/voids", &l.bar_token, &void_req, &first_void),
    ] {
        let resp = l.post(path, token, body).await;
        assert_eq!(resp.status, 201, "{name}: {}", resp.body);
        assert_eq!(resp.raw, first.raw, "{name}: the stored answer");
        assert!(resp.replayed(), "{name}: no Idempotent-Replayed: true");
        assert_eq!(
            money(&l),
            before,
            "{name}: applied twice after the key expired"
        );
    }
    // The voided order stays voided: a second void is still refused.
    let (_, resp) = void(&l, &l.bar_token, &crid(&other), SUPER_STAFF).await;
    resp.assert_error(409, "ALREADY_VOIDED");
    assert_eq!(money(&l), before);
    assert_eq!(l.balance(&card).await, 3000 - BEER_CENTS);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// The process and the books
// ---------------------------------------------------------------------------------------

async fn sigterm_shuts_down_cleanly_and_a_restart_keeps_everything(backend: Backend) {
    let mut l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 1000).await;
    let (order, first) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    first.assert_status(201);
    let feed_before = l.get("/v1/cards", Some(&l.bar_token)).await;

    let status = l.terminate(std::time::Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(
        l.server_stdout().is_empty(),
        "stdout carries only the `listening on` line; logs go to stderr: {:?}",
        l.server_stdout()
    );

    l.restart().await;
    assert_eq!(card_state(&l, &card).await, (550, "active".to_owned()));
    let again = l.post("/v1/orders", &l.bar_token, &order).await;
    assert!(again.replayed());
    assert_eq!(again.raw, first.raw);
    let feed_after = l.get("/v1/cards", Some(&l.bar_token)).await;
    assert_eq!(feed_after.body, feed_before.body);
    l.assert_audit_ok();
}

async fn the_audit_finds_tampered_books(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let (card, other) = (uid(1), uid(2));
    l.fund(&card, 1000).await;
    l.fund(&other, 1000).await;
    let (_, resp) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    resp.assert_status(201);
    l.assert_audit_ok();

    let tamper = |sql: &str| {
        l.tamper(sql);
    };
    // A balance that its postings do not explain.
    tamper(&format!(
        "UPDATE cards SET balance_cents = balance_cents + 1 WHERE card_uid = '{card}'"
    ));
    let out = l.audit();
    assert_eq!(out.status.code(), Some(1), "audit must fail: {out:?}");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains(&card),
        "the discrepancy names the card:\n{report}"
    );
    assert!(
        !report.contains(&other),
        "only the discrepancy is listed:\n{report}"
    );
    tamper(&format!(
        "UPDATE cards SET balance_cents = balance_cents - 1 WHERE card_uid = '{card}'"
    ));
    l.assert_audit_ok();

    // Postings that do not sum to zero (of a transaction id no operation has: forged).
    tamper(&format!(
        "INSERT INTO postings (transaction_id, account, amount_cents, created_at)
         VALUES ('00000000-0000-7000-8000-00000000f07e', 'revenue:{BAR_POS}', 5,
                 '2026-07-01T00:00:00.000Z')"
    ));
    let out = l.audit();
    assert_eq!(out.status.code(), Some(1), "audit must fail: {out:?}");
}

async fn a_reused_key_is_refused_even_after_the_keys_expired(backend: Backend) {
    // "Same key, different request: 422" has no expiry: the operation is kept forever, and a
    // different request must not be answered with its stored approval as if it were a replay
    // (least of all another terminal's).
    let mut l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 3000).await;
    let (order, first) = sell(&l, &l.bar_token, &card, &[BEER], "online").await;
    first.assert_status(201);
    expire_all_keys(&mut l).await;

    let mut other_card = order_body(&uid(2), l.seq(&l.bar_token), &[WATER], "offline");
    other_card["client_request_id"] = order["client_request_id"].clone();
    let before = money(&l);
    for (name, token, body) in [
        ("bar-1, another order", &l.bar_token, &other_card),
        ("bar-2, the same order", &l.bar2_token, &order),
    ] {
        let resp = l.post("/v1/orders", token, body).await;
        assert_eq!(resp.status, 422, "{name}: {}", resp.body);
        resp.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
        assert_eq!(money(&l), before, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Sequence tracking
// ---------------------------------------------------------------------------------------

/// `(highest_contiguous_seq, highest_seen_seq, seqs received above the contiguous mark)` of
/// the terminal named `name`.
fn seq_state(l: &Ledger, name: &str) -> (i64, i64, Vec<i64>) {
    let int = |cell: &Cell| match cell {
        Cell::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    };
    let marks = l.query(&format!(
        "SELECT highest_contiguous_seq, highest_seen_seq FROM terminals WHERE name = '{name}'"
    ));
    let [marks] = marks.rows.as_slice() else {
        panic!("no terminal {name}");
    };
    let above = l
        .query(&format!(
            "SELECT s.terminal_seq FROM terminal_seqs s JOIN terminals t USING (terminal_id)
             WHERE t.name = '{name}' ORDER BY s.terminal_seq"
        ))
        .rows
        .iter()
        .map(|row| int(&row[0]))
        .collect();
    (int(&marks[0]), int(&marks[1]), above)
}

async fn terminal_seq_gaps_are_tracked_and_close_when_the_missing_operations_arrive(
    backend: Backend,
) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    l.fund(&card, 10_000).await;
    let send = |seq: i64, card: String| {
        let body = order_body(&card, seq, &[BEER], "online");
        let l = &l;
        async move { l.post("/v1/orders", &l.bar_token, &body).await }
    };
    // Declines consume a sequence number too: the terminal journaled them.
    type Expected = (i64, i64, &'static [i64]);
    let cases: &[(i64, &str, u16, Expected)] = &[
        (1, "funded", 201, (1, 1, &[])),
        (2, "unknown", 404, (2, 2, &[])),
        (4, "funded", 201, (2, 4, &[4])),
        (5, "funded", 201, (2, 5, &[4, 5])),
        (7, "funded", 201, (2, 7, &[4, 5, 7])),
        (3, "funded", 201, (5, 7, &[7])),
        (6, "funded", 201, (7, 7, &[])),
    ];
    for &(seq, which, status, (contiguous, seen, above)) in cases {
        let target = if which == "funded" {
            card.clone()
        } else {
            uid(99)
        };
        let resp = send(seq, target).await;
        assert_eq!(resp.status, status, "seq {seq}: {}", resp.body);
        assert_eq!(
            seq_state(&l, "bar-1"),
            (contiguous, seen, above.to_vec()),
            "after seq {seq}"
        );
    }
    // Refusals that change nothing do not count, and another terminal has its own sequence.
    let resp = l
        .post("/v1/orders", &l.bar_token, &json!({"bogus": true}))
        .await;
    resp.assert_status(400);
    assert_eq!(seq_state(&l, "bar-1"), (7, 7, vec![]));
    assert_eq!(seq_state(&l, "bar-2"), (0, 0, vec![]));
}

// Every test above that takes a `Backend` runs on both: `sqlite::NAME`, `postgres::NAME`.
on_both_backends! {
    approvals_have_the_contract_shape_and_move_balances,
    business_declines_carry_details_change_nothing_and_replay,
    card_lookup_of_an_unknown_card_is_card_not_found,
    limits_come_from_the_config_file,
    offline_top_up_past_the_default_limits_is_applied_and_flagged,
    every_terminal_endpoint_requires_a_known_token,
    the_bearer_scheme_is_case_insensitive,
    terminal_kinds_staff_roles_and_foreign_voids_are_forbidden,
    replays_of_every_operation_are_byte_identical_and_change_nothing,
    a_reused_key_or_a_mismatched_header_is_refused_and_changes_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] fifty_concurrent_identical_requests_apply_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] concurrent_sales_top_ups_and_refunds_on_one_card_lose_no_update,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] twenty_concurrent_orders_on_money_for_ten_approve_exactly_ten,
    offline_debt_blocks_the_card_until_a_top_up_clears_it,
    offline_orders_record_unknown_cards_catalog_differences_and_lost_cards,
    voiding_applied_operations_reverses_them,
    a_tombstone_from_another_terminal_does_not_void_an_operation,
    a_void_before_arrival_tombstones_the_target,
    a_second_different_void_of_the_same_target_is_already_voided,
    batches_of_500_mixed_operations_apply_in_order_and_replay_as_no_ops,
    a_batch_mixes_failures_without_stopping,
    batches_of_zero_or_501_operations_are_refused,
    the_card_feed_pages_in_change_order_and_shows_blocks,
    the_catalog_is_per_point_of_sale_with_etag,
    each_point_of_sale_sells_from_its_own_catalog,
    the_catalog_can_be_imported_from_toml,
    the_staff_feed_has_argon2_pin_hashes,
    scans_are_stored_once_per_terminal_and_scan,
    terminals_me_identifies_each_token,
    health_ready_and_openapi,
    request_ids_are_echoed_or_generated,
    the_books_balance_after_everything,
    a_busy_database_is_a_retryable_503_that_is_not_stored,
    bodies_above_64_kib_or_a_1_mib_batch_are_payload_too_large,
    replays_after_the_keys_expired_do_not_apply_twice,
    sigterm_shuts_down_cleanly_and_a_restart_keeps_everything,
    the_audit_finds_tampered_books,
    a_reused_key_is_refused_even_after_the_keys_expired,
    terminal_seq_gaps_are_tracked_and_close_when_the_missing_operations_arrive,
}
