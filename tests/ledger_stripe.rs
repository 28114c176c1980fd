//! `POST /v1/webhooks/stripe` against the real ledger binary (docs/ledger-api.md, issue 6).
//!
//! Deliveries are signed here with HMAC-SHA256 exactly as Stripe signs them (`v1` = hex
//! HMAC of `"<t>.<raw body>"`), independently of the ledger's own `sign`. Each test asserts
//! the answer, what the database holds (cards, `stripe_*` rows, postings, the audit trail)
//! and that `cashless ledger audit` passes at the end.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const WEBHOOK: &str = "/v1/webhooks/stripe";
/// The endpoint secret of most tests.
const SECRET: &str = "whsec_test_5f1b2c3d4e5f60718293a4b5c6d7e8f9";
/// The tolerance configured by most tests: small, so that a stale timestamp is quick to make.
const TOLERANCE_S: i64 = 60;

/// Tables that hold money or a card's state: an event that moves no money leaves them alone.
const MONEY_TABLES: &[&str] = &[
    "cards",
    "postings",
    "stripe_recharges",
    "stripe_refunds",
    "recharges",
    "bar_orders",
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A ledger configuration with these webhook secrets and tolerance.
fn config(secrets: &[&str], tolerance_s: i64) -> String {
    let list: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[stripe]\nwebhook_secrets = [{}]\ntolerance_s = {tolerance_s}\n",
        list.join(", ")
    )
}

async fn ledger(backend: Backend) -> Ledger {
    Ledger::start_with_config_on(backend, &config(&[SECRET], TOLERANCE_S)).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Stripe's `v1` signature, computed here with `hmac` (not with the ledger's code).
fn v1(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A `Stripe-Signature` header signed with `secret` at `t`.
fn header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

/// A `checkout.session.completed` event as Stripe sends it: paid, in euros.
fn session(evt: &str, cs: &str, pi: &str, card_uid: &str, amount: i64) -> Value {
    let t = now();
    json!({
        "id": evt,
        "object": "event",
        "api_version": "2024-06-20",
        "created": t,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": cs,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": "https://festival.example/topup",
            "client_reference_id": null,
            "created": t - 90,
            "currency": "eur",
            "customer": null,
            "customer_details": {"email": "guest@example.com", "name": "Festival Guest"},
            "expires_at": t + 86_310,
            "livemode": false,
            "metadata": {"card_uid": card_uid},
            "mode": "payment",
            "payment_intent": pi,
            "payment_method_types": ["card"],
            "payment_status": "paid",
            "status": "complete",
            "success_url": "https://festival.example/topup/done",
            "url": null
        }}
    })
}

/// A `charge.refunded` event: `amount_refunded` is cumulative, as in Stripe.
fn refund(evt: &str, ch: &str, pi: &str, amount: i64, amount_refunded: i64) -> Value {
    json!({
        "id": evt,
        "object": "event",
        "api_version": "2024-06-20",
        "created": now(),
        "livemode": false,
        "pending_webhooks": 1,
        "type": "charge.refunded",
        "data": {"object": {
            "id": ch,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": amount_refunded,
            "captured": true,
            "currency": "eur",
            "paid": true,
            "payment_intent": pi,
            "refunded": amount_refunded == amount,
            "status": "succeeded"
        }}
    })
}

fn bytes(event: &Value) -> Vec<u8> {
    serde_json::to_vec(event).unwrap()
}

/// Posts `body` with this `Stripe-Signature` header (none if `None`).
async fn deliver(l: &Ledger, body: &[u8], signature: Option<&str>) -> Resp {
    // What Stripe's deliveries carry besides the signature.
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", "application/json; charset=utf-8"),
        (
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        ),
    ];
    if let Some(s) = signature {
        headers.push(("stripe-signature", s));
    }
    l.post_raw(WEBHOOK, None, body.to_vec(), &headers).await
}

/// Delivers `event` signed with [`SECRET`] now.
async fn send(l: &Ledger, event: &Value) -> Resp {
    let body = bytes(event);
    deliver(l, &body, Some(&header(SECRET, now(), &body))).await
}

/// A 200 acknowledgement with this outcome; returns the body.
#[track_caller]
fn assert_outcome<'a>(resp: &'a Resp, event: &Value, outcome: &str) -> &'a Value {
    resp.assert_status(200);
    let b = &resp.body;
    assert_eq!(b["received"], json!(true), "{b}");
    assert_eq!(b["event_id"], event["id"], "{b}");
    assert_eq!(b["outcome"], json!(outcome), "{b}");
    b
}

/// A 400 `INVALID_REQUEST` naming `field`, and a database left exactly as it was.
async fn assert_refused(l: &Ledger, case: &str, body: &[u8], signature: Option<&str>, field: &str) {
    let before = l.db_fingerprint();
    let resp = deliver(l, body, signature).await;
    assert_eq!(
        resp.status,
        400,
        "{case}: expected 400, got {}: {}",
        resp.status,
        String::from_utf8_lossy(&resp.raw)
    );
    let details = resp.assert_error(400, "INVALID_REQUEST");
    assert_eq!(details["field"], json!(field), "{case}: {}", resp.body);
    assert_eq!(l.db_fingerprint(), before, "{case}: something was written");
}

/// A card's row: (balance, status, block_reason), or `None` if there is no such card.
fn card_row(l: &Ledger, uid: &str) -> Option<(i64, String, Option<String>)> {
    let rows = rows(
        l,
        "SELECT balance_cents, status, block_reason FROM cards WHERE card_uid = ?1",
        uid,
    );
    let row = rows.first()?;
    Some((
        row["balance_cents"].as_i64().unwrap(),
        row["status"].as_str().unwrap().to_owned(),
        row["block_reason"].as_str().map(str::to_owned),
    ))
}

/// Rows of `sql` (with `param` as the literal of its `?1`), each as a JSON object of its
/// columns.
fn rows(l: &Ledger, sql: &str, param: &str) -> Vec<Value> {
    let literal = format!("'{}'", param.replace('\'', "''"));
    l.query_json(&sql.replace("?1", &literal))
}

/// The `stripe_events` row of `evt`.
fn event_row(l: &Ledger, evt: &str) -> Option<Value> {
    rows(l, "SELECT * FROM stripe_events WHERE event_id = ?1", evt)
        .into_iter()
        .next()
}

/// The `stripe_recharges` row of session `cs`.
fn recharge_row(l: &Ledger, cs: &str) -> Option<Value> {
    rows(
        l,
        "SELECT * FROM stripe_recharges WHERE checkout_session_id = ?1",
        cs,
    )
    .into_iter()
    .next()
}

/// The `stripe_refunds` rows of session `cs`, oldest first.
fn refund_rows(l: &Ledger, cs: &str) -> Vec<Value> {
    rows(
        l,
        "SELECT * FROM stripe_refunds WHERE checkout_session_id = ?1 ORDER BY transaction_id",
        cs,
    )
}

/// The postings of a transaction: (account, amount), sorted.
fn postings(l: &Ledger, tx: &Value) -> Vec<(String, i64)> {
    let tx = tx
        .as_str()
        .unwrap_or_else(|| panic!("no transaction id: {tx}"));
    let mut p: Vec<(String, i64)> = rows(
        l,
        "SELECT account, amount_cents FROM postings WHERE transaction_id = ?1",
        tx,
    )
    .into_iter()
    .map(|r| {
        (
            r["account"].as_str().unwrap().to_owned(),
            r["amount_cents"].as_i64().unwrap(),
        )
    })
    .collect();
    p.sort();
    p
}

/// The audit trail's Stripe rows about event `evt`, oldest first (`details` parsed).
fn audit_rows(l: &Ledger, evt: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT operation, outcome, transaction_id, card_uid, amount_cents, staff_id,
                client_request_id, error_code, details
         FROM app_transaction_log
         WHERE actor = 'stripe' AND {} = ?1
         ORDER BY log_id",
        l.json_text("details", "event_id")
    );
    rows(l, &sql, evt)
        .into_iter()
        .map(|mut r| {
            r["details"] = serde_json::from_str(r["details"].as_str().unwrap()).unwrap();
            r
        })
        .collect()
}

fn count_where(l: &Ledger, sql: &str) -> i64 {
    l.query_i64(sql)
}

/// Everything a credit of `amount` by event `evt` for session `cs` must have written.
#[track_caller]
fn assert_credit_rows(l: &Ledger, evt: &str, cs: &str, pi: &str, uid: &str, amount: i64) -> Value {
    let recharge =
        recharge_row(l, cs).unwrap_or_else(|| panic!("no stripe_recharges row for {cs}"));
    assert_eq!(recharge["event_id"], json!(evt), "{recharge}");
    assert_eq!(recharge["payment_intent_id"], json!(pi), "{recharge}");
    assert_eq!(recharge["card_uid"], json!(uid), "{recharge}");
    assert_eq!(recharge["amount_cents"], json!(amount), "{recharge}");
    let tx = recharge["transaction_id"].clone();
    assert_eq!(
        postings(l, &tx),
        vec![
            (format!("card:{uid}"), amount),
            ("stripe_clearing".to_owned(), -amount)
        ]
    );
    let event = event_row(l, evt).unwrap_or_else(|| panic!("no stripe_events row for {evt}"));
    assert_eq!(event["outcome"], json!("credited"), "{event}");
    assert_eq!(event["checkout_session_id"], json!(cs), "{event}");
    assert_eq!(event["transaction_id"], tx, "{event}");
    let audit = audit_rows(l, evt);
    assert_eq!(audit.len(), 1, "one audit row for {evt}: {audit:?}");
    let a = &audit[0];
    assert_eq!(a["operation"], json!("stripe_recharge"), "{a}");
    assert_eq!(a["outcome"], json!("approved"), "{a}");
    assert_eq!(a["transaction_id"], tx, "{a}");
    assert_eq!(a["card_uid"], json!(uid), "{a}");
    assert_eq!(a["amount_cents"], json!(amount), "{a}");
    assert_eq!(a["staff_id"], Value::Null, "{a}");
    recharge
}

// ---------------------------------------------------------------------------------------
// 1. A paid session credits its card
// ---------------------------------------------------------------------------------------

async fn a_paid_session_credits_the_card_once_with_postings_and_an_audit_row(backend: Backend) {
    let l = ledger(backend).await;

    // Our signature and the ledger's own helper agree (the rest of the file signs with ours).
    let probe = br#"{"id":"evt_probe"}"#;
    assert_eq!(
        v1(SECRET, 1_767_225_600, probe),
        cashless::ledger::stripe::sign(SECRET, 1_767_225_600, probe)
    );

    // An unknown card is created, at 0 then credited.
    let card = uid(0x5701);
    assert_eq!(card_row(&l, &card), None);
    let event = session("evt_1PaidA", "cs_test_a1", "pi_3PaidA", &card, 2500);
    let body = bytes(&event);
    let t = now();
    let signature = format!("t={t},v1={}", v1(SECRET, t, &body));
    let resp = deliver(&l, &body, Some(&signature)).await;
    let b = assert_outcome(&resp, &event, "credited");
    assert_eq!(b["card_uid"], json!(card), "{b}");
    assert_eq!(b["amount_cents"], json!(2500), "{b}");
    assert_eq!(b["balance_cents"], json!(2500), "{b}");
    assert_eq!(card_row(&l, &card), Some((2500, "active".into(), None)));
    assert_eq!(l.balance(&card).await, 2500);
    let recharge = assert_credit_rows(&l, "evt_1PaidA", "cs_test_a1", "pi_3PaidA", &card, 2500);
    assert_eq!(recharge["previous_balance_cents"], json!(0), "{recharge}");
    assert_eq!(recharge["new_balance_cents"], json!(2500), "{recharge}");
    assert_eq!(recharge["refunded_cents"], json!(0), "{recharge}");
    assert_eq!(
        recharge["flags"],
        json!(r#"["CARD_CREATED"]"#),
        "{recharge}"
    );

    // The very same delivery again (Stripe retries): acknowledged, nothing more.
    let money = l.db_fingerprint_of(MONEY_TABLES);
    let resp = deliver(&l, &body, Some(&signature)).await;
    assert_outcome(&resp, &event, "duplicate_event");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    assert_eq!(audit_rows(&l, "evt_1PaidA").len(), 1);

    // A card that already holds money: the credit adds to it; the currency in capitals too.
    let known = uid(0x5702);
    l.fund(&known, 1000).await;
    let mut event = session("evt_1PaidB", "cs_test_b1", "pi_3PaidB", &known, 4000);
    event["data"]["object"]["currency"] = json!("EUR");
    let resp = send(&l, &event).await;
    let b = assert_outcome(&resp, &event, "credited");
    assert_eq!(b["balance_cents"], json!(5000), "{b}");
    let recharge = assert_credit_rows(&l, "evt_1PaidB", "cs_test_b1", "pi_3PaidB", &known, 4000);
    assert_eq!(
        recharge["previous_balance_cents"],
        json!(1000),
        "{recharge}"
    );
    assert_eq!(recharge["new_balance_cents"], json!(5000), "{recharge}");
    assert_eq!(recharge["flags"], json!("[]"), "{recharge}");
    assert_eq!(l.balance(&known).await, 5000);

    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// 2. Signatures
// ---------------------------------------------------------------------------------------

async fn bad_signatures_are_refused_with_400_and_write_nothing(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x5710);
    let event = session("evt_1Sig", "cs_test_sig", "pi_3Sig", &card, 2500);
    let body = bytes(&event);
    let t = now();
    let good = v1(SECRET, t, &body);
    // One byte changed after signing (2500 -> 9500): still a valid event, but not the one
    // that was signed.
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replacen("\"amount_total\":2500", "\"amount_total\":9500", 1)
        .into_bytes();
    assert_eq!(tampered.len(), body.len());
    assert_ne!(tampered, body);
    let stale = t - (TOLERANCE_S + 1);
    let sig = "Stripe-Signature";
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        (
            "wrong secret",
            body.clone(),
            Some(header("whsec_other", t, &body)),
        ),
        ("tampered body", tampered, Some(format!("t={t},v1={good}"))),
        // The signature is over t: changing t in the header breaks it.
        (
            "tampered timestamp",
            body.clone(),
            Some(format!("t={},v1={good}", t + 1)),
        ),
        (
            "timestamp older than the tolerance",
            body.clone(),
            Some(header(SECRET, stale, &body)),
        ),
        ("v0 only", body.clone(), Some(format!("t={t},v0={good}"))),
        ("no header", body.clone(), None),
        ("empty header", body.clone(), Some(String::new())),
        ("garbage header", body.clone(), Some("garbage".into())),
        (
            "a header that is not ASCII",
            body.clone(),
            Some(format!("t={t},v1={good}é")),
        ),
        ("no timestamp", body.clone(), Some(format!("v1={good}"))),
        (
            "a timestamp that is not a number",
            body.clone(),
            Some(format!("t=now,v1={good}")),
        ),
        (
            "the signature in upper case with another secret",
            body.clone(),
            Some(format!(
                "t={t},v1={}",
                v1("whsec_other", t, &body).to_uppercase()
            )),
        ),
        (
            "a truncated signature",
            body.clone(),
            Some(format!("t={t},v1={}", &good[..32])),
        ),
        (
            "the signature of another body",
            body.clone(),
            Some(header(SECRET, t, b"{}")),
        ),
    ];
    for (case, b, signature) in &cases {
        assert_refused(&l, case, b, signature.as_deref(), sig).await;
    }
    assert_eq!(card_row(&l, &card), None);
    assert_eq!(l.count("stripe_events"), 0);

    // Within the tolerance on either side, with a bad v1 (wrong or not even hex) or a v0
    // beside the good one: accepted. Each a session of its own.
    // `GOOD` stands for the good signature of each delivery.
    let wrong = v1("whsec_other", t, &body);
    let accepted: Vec<(&str, i64, String)> = vec![
        ("30 s old", t - 30, "v1=GOOD".into()),
        ("30 s ahead", t + 30, "v1=GOOD".into()),
        (
            "a wrong v1 and one that is not hex before the good one",
            t,
            format!("v1={wrong},v1=zz,v1=GOOD"),
        ),
        (
            "the good v1 before a wrong one",
            t,
            format!("v1=GOOD,v1={wrong}"),
        ),
        ("a v0 beside the good v1", t, format!("v0={wrong},v1=GOOD")),
    ];
    for (i, (case, ts, tail)) in accepted.iter().enumerate() {
        let evt = format!("evt_1Ok{i}");
        let event = session(
            &evt,
            &format!("cs_test_ok{i}"),
            &format!("pi_3Ok{i}"),
            &card,
            100,
        );
        let body = bytes(&event);
        let signature = format!("t={ts},{}", tail.replace("GOOD", &v1(SECRET, *ts, &body)));
        let resp = deliver(&l, &body, Some(&signature)).await;
        assert_eq!(resp.status, 200, "{case}: {}", resp.body);
        assert_outcome(&resp, &event, "credited");
    }
    assert_eq!(card_row(&l, &card), Some((500, "active".into(), None)));

    // After all that, the original event with its good signature is still new.
    let resp = deliver(&l, &body, Some(&format!("t={t},v1={good}"))).await;
    assert_outcome(&resp, &event, "credited");
    assert_eq!(l.balance(&card).await, 3000);
    l.assert_audit_ok();
    // Refusals are logged, and neither the secret nor a signature is in the log.
    let log = l.server_log();
    assert!(log.contains("bad signature"), "{log}");
    assert!(!log.contains(SECRET), "the secret is in the log");
    assert!(!log.contains(&good), "a signature is in the log");
}

/// Delivers a fresh session for `card`, signed `offset_s` seconds from now, and returns the
/// answer of an attempt that started and ended within one wall-clock second: the ledger read
/// its clock in between, so it saw exactly `offset_s`. An attempt that straddled a second
/// proves nothing and is repeated with a fresh event (its answer is ignored; the caller
/// checks money through the answers it gets).
async fn deliver_exactly(
    l: &Ledger,
    card: &str,
    offset_s: i64,
    tag: &str,
) -> (Value, Resp, String) {
    for attempt in 0..20 {
        // Start early in a second, leaving the request most of it.
        let ms = i64::from(chrono::Utc::now().timestamp_subsec_millis());
        if ms > 300 {
            tokio::time::sleep(std::time::Duration::from_millis((1005 - ms) as u64)).await;
        }
        let before = now();
        let fingerprint = l.db_fingerprint();
        let event = session(
            &format!("evt_1Edge{tag}{attempt}"),
            &format!("cs_test_edge{tag}{attempt}"),
            &format!("pi_3Edge{tag}{attempt}"),
            card,
            100,
        );
        let body = bytes(&event);
        let resp = deliver(l, &body, Some(&header(SECRET, before + offset_s, &body))).await;
        if now() == before {
            return (event, resp, fingerprint);
        }
    }
    panic!("20 deliveries each straddled a second: the machine is far too slow");
}

async fn the_tolerance_bounds_the_past_to_the_second_and_not_the_future(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x5715);
    // The past is bounded; the future is not (as in Stripe's libraries: the timestamp is
    // signed, and a ledger clock running slow must not stop the webhook).
    for offset in [-TOLERANCE_S, TOLERANCE_S, TOLERANCE_S + 1, 3_600] {
        let (event, resp, _) = deliver_exactly(&l, &card, offset, &format!("in{offset}")).await;
        assert_eq!(resp.status, 200, "{offset} s: {}", resp.body);
        assert_outcome(&resp, &event, "credited");
    }
    for offset in [-TOLERANCE_S - 1, -3_600] {
        let (_, resp, before) = deliver_exactly(&l, &card, offset, &format!("out{offset}")).await;
        assert_eq!(resp.status, 400, "{offset} s: {}", resp.body);
        let details = resp.assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], json!("Stripe-Signature"), "{offset} s");
        assert_eq!(
            l.db_fingerprint(),
            before,
            "{offset} s: something was written"
        );
    }
    l.assert_audit_ok();
}

async fn every_configured_secret_is_accepted_during_a_rotation(backend: Backend) {
    const NEW: &str = "whsec_rotated_new_0001";
    const OLD: &str = "whsec_rotated_old_0000";
    let l = Ledger::start_with_config_on(backend, &config(&[NEW, OLD], TOLERANCE_S)).await;
    let card = uid(0x5720);
    for (i, secret) in [OLD, NEW].iter().enumerate() {
        let event = session(
            &format!("evt_1Rot{i}"),
            &format!("cs_test_rot{i}"),
            &format!("pi_3Rot{i}"),
            &card,
            1000,
        );
        let body = bytes(&event);
        let resp = deliver(&l, &body, Some(&header(secret, now(), &body))).await;
        assert_outcome(&resp, &event, "credited");
    }
    // A secret that is no longer configured.
    let event = session("evt_1RotX", "cs_test_rotx", "pi_3RotX", &card, 1000);
    let body = bytes(&event);
    let retired = header("whsec_retired", now(), &body);
    assert_refused(
        &l,
        "retired secret",
        &body,
        Some(&retired),
        "Stripe-Signature",
    )
    .await;
    assert_eq!(l.balance(&card).await, 2000);
    l.assert_audit_ok();
}

async fn secrets_from_the_environment_are_comma_separated_and_win_over_the_file(backend: Backend) {
    const FILE: &str = "whsec_from_the_file";
    let l = Ledger::start_with_config_and_env_on(
        backend,
        &config(&[FILE], TOLERANCE_S),
        &[(
            "CASHLESS_STRIPE_WEBHOOK_SECRETS",
            "whsec_env_new, whsec_env_old",
        )],
    )
    .await;
    let card = uid(0x5730);
    for (i, secret) in ["whsec_env_old", "whsec_env_new"].iter().enumerate() {
        let event = session(
            &format!("evt_1Env{i}"),
            &format!("cs_test_env{i}"),
            &format!("pi_3Env{i}"),
            &card,
            700,
        );
        let body = bytes(&event);
        let resp = deliver(&l, &body, Some(&header(secret, now(), &body))).await;
        assert_outcome(&resp, &event, "credited");
    }
    let event = session("evt_1EnvF", "cs_test_envf", "pi_3EnvF", &card, 700);
    let body = bytes(&event);
    let file = header(FILE, now(), &body);
    assert_refused(
        &l,
        "the file's secret",
        &body,
        Some(&file),
        "Stripe-Signature",
    )
    .await;
    assert_eq!(l.balance(&card).await, 1400);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// 3. Bodies that are not events; 8. no secret
// ---------------------------------------------------------------------------------------

async fn a_signed_body_that_is_not_an_event_is_400_body_and_writes_nothing(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x5740);
    let mut no_session_id = session("evt_1NoCs", "cs_x", "pi_x", &card, 2500);
    no_session_id["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let full =
        String::from_utf8(bytes(&session("evt_1Cut", "cs_cut", "pi_cut", &card, 2500))).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"not json".to_vec()),
        ("empty", Vec::new()),
        ("truncated JSON", full.as_bytes()[..full.len() / 2].to_vec()),
        ("a JSON array", b"[1,2,3]".to_vec()),
        (
            "no id",
            br#"{"object":"event","type":"checkout.session.completed","data":{"object":{}}}"#
                .to_vec(),
        ),
        (
            "no type",
            br#"{"id":"evt_1NoType","object":"event","data":{"object":{}}}"#.to_vec(),
        ),
        (
            "no data",
            br#"{"id":"evt_1NoData","object":"event","type":"checkout.session.completed"}"#
                .to_vec(),
        ),
        (
            "data.object not an object",
            br#"{"id":"evt_1Num","type":"checkout.session.completed","data":{"object":3}}"#
                .to_vec(),
        ),
        ("a checkout session without an id", bytes(&no_session_id)),
        (
            "a refund with a negative amount_refunded",
            bytes(&refund("evt_1Neg", "ch_neg", "pi_neg", 2500, -1)),
        ),
    ];
    for (case, body) in &cases {
        let signature = header(SECRET, now(), body);
        assert_refused(&l, case, body, Some(&signature), "body").await;
    }

    // Over 64 KiB: 413, nothing written.
    let mut huge = session("evt_1Huge", "cs_huge", "pi_huge", &card, 2500);
    huge["data"]["object"]["metadata"]["padding"] = json!("x".repeat(70 * 1024));
    let body = bytes(&huge);
    let before = l.db_fingerprint();
    let resp = deliver(&l, &body, Some(&header(SECRET, now(), &body))).await;
    resp.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(l.db_fingerprint(), before);
    l.assert_audit_ok();
}

async fn without_a_configured_secret_the_webhook_is_500_and_writes_nothing(backend: Backend) {
    // No [stripe] section and no CASHLESS_STRIPE_WEBHOOK_SECRETS (the harness removes it).
    let l = Ledger::start_on(backend).await;
    let event = session("evt_1NoSecret", "cs_test_ns", "pi_3Ns", &uid(0x5750), 2500);
    let body = bytes(&event);
    let before = l.db_fingerprint();
    for signature in [Some(header(SECRET, now(), &body)), None] {
        let resp = deliver(&l, &body, signature.as_deref()).await;
        resp.assert_error(500, "SERVER_ERROR");
    }
    assert_eq!(l.db_fingerprint(), before);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// 4, 5. Once per event, once per session
// ---------------------------------------------------------------------------------------

async fn twenty_concurrent_deliveries_of_one_event_credit_once(backend: Backend) {
    let l = Arc::new(ledger(backend).await);
    let card = uid(0x5760);
    let event = session("evt_1Storm", "cs_test_storm", "pi_3Storm", &card, 2500);
    let body = Arc::new(bytes(&event));
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (l, body, barrier) = (Arc::clone(&l), Arc::clone(&body), Arc::clone(&barrier));
        tasks.spawn(async move {
            // Each delivery signed on its own, as Stripe's retries are.
            let signature = header(SECRET, now(), &body);
            barrier.wait().await;
            deliver(&l, &body, Some(&signature)).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        resp.assert_status(200);
        assert_eq!(resp.body["event_id"], json!("evt_1Storm"), "{}", resp.body);
        outcomes.push(resp.body["outcome"].as_str().unwrap().to_owned());
    }
    outcomes.sort();
    let mut expected = vec!["duplicate_event".to_owned(); 19];
    expected.insert(0, "credited".to_owned());
    assert_eq!(outcomes, expected);

    assert_eq!(card_row(&l, &card), Some((2500, "active".into(), None)));
    assert_credit_rows(&l, "evt_1Storm", "cs_test_storm", "pi_3Storm", &card, 2500);
    assert_eq!(l.count("stripe_recharges"), 1);
    assert_eq!(l.count("stripe_events"), 1);
    assert_eq!(
        count_where(
            &l,
            "SELECT COUNT(*) FROM postings WHERE account = 'stripe_clearing'"
        ),
        1
    );
    l.assert_audit_ok();
}

async fn one_session_in_two_events_is_credited_once(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x5770);
    let completed = session("evt_1Done", "cs_test_two", "pi_3Two", &card, 3000);
    let resp = send(&l, &completed).await;
    assert_outcome(&resp, &completed, "credited");

    let mut succeeded = session("evt_1Async", "cs_test_two", "pi_3Two", &card, 3000);
    succeeded["type"] = json!("checkout.session.async_payment_succeeded");
    let money = l.db_fingerprint_of(MONEY_TABLES);
    let resp = send(&l, &succeeded).await;
    let b = assert_outcome(&resp, &succeeded, "duplicate_session");
    assert_eq!(b.get("balance_cents"), None, "{b}");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    let recharge = assert_credit_rows(&l, "evt_1Done", "cs_test_two", "pi_3Two", &card, 3000);
    let second = event_row(&l, "evt_1Async").unwrap();
    assert_eq!(second["outcome"], json!("duplicate_session"), "{second}");
    assert_eq!(
        second["event_type"],
        json!("checkout.session.async_payment_succeeded")
    );
    assert_eq!(
        second["transaction_id"], recharge["transaction_id"],
        "{second}"
    );
    assert!(audit_rows(&l, "evt_1Async").is_empty());
    // That second event again: a duplicate event now.
    let resp = send(&l, &succeeded).await;
    assert_outcome(&resp, &succeeded, "duplicate_event");
    assert_eq!(l.balance(&card).await, 3000);

    // The asynchronous path: completed while unpaid (ignored, nothing written), then paid.
    let mut pending = session("evt_1Pend", "cs_test_async", "pi_3Async", &card, 1200);
    pending["data"]["object"]["payment_status"] = json!("unpaid");
    let before = l.db_fingerprint();
    assert_outcome(&send(&l, &pending).await, &pending, "ignored");
    assert_eq!(l.db_fingerprint(), before);
    let mut paid = session("evt_1Paid", "cs_test_async", "pi_3Async", &card, 1200);
    paid["type"] = json!("checkout.session.async_payment_succeeded");
    let resp = send(&l, &paid).await;
    assert_eq!(
        assert_outcome(&resp, &paid, "credited")["balance_cents"],
        json!(4200)
    );
    assert_eq!(l.balance(&card).await, 4200);
    assert_eq!(l.count("stripe_recharges"), 2);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// 6. Events that move no money
// ---------------------------------------------------------------------------------------

async fn refused_unpaid_and_other_events_move_no_money(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x5780);
    l.fund(&card, 1500).await;
    let money = l.db_fingerprint_of(MONEY_TABLES);

    // Sessions the ledger cannot credit: 200 (Stripe must not retry), a `refused` event row
    // and an audit row for an operator, no money.
    let base = |evt: &str, cs: &str| session(evt, cs, "pi_3Ref", &card, 2500);
    let mut usd = base("evt_1Usd", "cs_test_usd");
    usd["data"]["object"]["currency"] = json!("usd");
    let mut no_uid = base("evt_1NoUid", "cs_test_nouid");
    no_uid["data"]["object"]["metadata"] = json!({});
    let mut bad_uid = base("evt_1BadUid", "cs_test_baduid");
    bad_uid["data"]["object"]["metadata"]["card_uid"] = json!("not-a-card");
    let mut zero = base("evt_1Zero", "cs_test_zero");
    zero["data"]["object"]["amount_total"] = json!(0);
    let mut huge = base("evt_1Huge", "cs_test_huge");
    huge["data"]["object"]["amount_total"] = json!(100_000_000);
    for (event, why) in [
        (&usd, "usd"),
        (&no_uid, "card_uid"),
        (&bad_uid, "card_uid"),
        (&zero, "amount_total"),
        (&huge, "amount_total"),
    ] {
        let evt = event["id"].as_str().unwrap();
        let resp = send(&l, event).await;
        let b = assert_outcome(&resp, event, "refused");
        assert_eq!(b.get("balance_cents"), None, "{b}");
        let row = event_row(&l, evt).unwrap_or_else(|| panic!("no stripe_events row for {evt}"));
        assert_eq!(row["outcome"], json!("refused"), "{row}");
        assert_eq!(
            row["checkout_session_id"], event["data"]["object"]["id"],
            "{row}"
        );
        assert_eq!(row["transaction_id"], Value::Null, "{row}");
        assert!(row["reason"].as_str().unwrap().contains(why), "{row}");
        let audit = audit_rows(&l, evt);
        assert_eq!(audit.len(), 1, "{evt}: {audit:?}");
        assert_eq!(audit[0]["operation"], json!("stripe_recharge"), "{evt}");
        assert_eq!(audit[0]["outcome"], json!("refused"), "{evt}");
        assert_eq!(audit[0]["transaction_id"], Value::Null, "{evt}");
        assert_eq!(audit[0]["amount_cents"], Value::Null, "{evt}");
        assert_eq!(
            l.db_fingerprint_of(MONEY_TABLES),
            money,
            "{evt} moved money"
        );
    }
    // A refused event delivered again is a duplicate, not a second audit row.
    assert_outcome(&send(&l, &usd).await, &usd, "duplicate_event");
    assert_eq!(audit_rows(&l, "evt_1Usd").len(), 1);

    // Unpaid sessions and event types the ledger does not act on: nothing written at all.
    let mut unpaid = base("evt_1Unpaid", "cs_test_unpaid");
    unpaid["data"]["object"]["payment_status"] = json!("unpaid");
    let mut no_status = base("evt_1NoStatus", "cs_test_nostatus");
    no_status["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("payment_status");
    let mut other = base("evt_1Other", "cs_test_other");
    other["type"] = json!("payment_intent.succeeded");
    let mut expired = base("evt_1Expired", "cs_test_expired");
    expired["type"] = json!("checkout.session.expired");
    let before = l.db_fingerprint();
    for event in [&unpaid, &no_status, &other, &expired] {
        let resp = send(&l, event).await;
        let b = assert_outcome(&resp, event, "ignored");
        assert_eq!(b.get("card_uid"), None, "{b}");
    }
    assert_eq!(l.db_fingerprint(), before);
    assert_eq!(card_row(&l, &card), Some((1500, "active".into(), None)));
    assert_eq!(l.count("stripe_recharges"), 0);
    l.assert_audit_ok();
}

async fn the_festival_currency_comes_from_the_config(backend: Backend) {
    let toml = format!(
        "[festival]\ncurrency = \"CHF\"\n{}",
        config(&[SECRET], TOLERANCE_S)
    );
    let l = Ledger::start_with_config_on(backend, &toml).await;
    let card = uid(0x5790);
    // Stripe's default session says eur: refused in a CHF festival.
    let eur = session("evt_1Eur", "cs_test_eur", "pi_3Eur", &card, 2000);
    assert_outcome(&send(&l, &eur).await, &eur, "refused");
    assert_eq!(card_row(&l, &card), None);
    let mut chf = session("evt_1Chf", "cs_test_chf", "pi_3Chf", &card, 2000);
    chf["data"]["object"]["currency"] = json!("chf");
    assert_outcome(&send(&l, &chf).await, &chf, "credited");
    assert_eq!(l.balance(&card).await, 2000);
    l.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------
// 7. Refunds
// ---------------------------------------------------------------------------------------

/// Asserts the refund `evt` reversed `delta` from `uid` with its postings and audit row.
#[track_caller]
fn assert_refund_rows(l: &Ledger, evt: &str, cs: &str, uid: &str, delta: i64) {
    let refunds = refund_rows(l, cs);
    let row = refunds
        .iter()
        .find(|r| r["event_id"] == json!(evt))
        .unwrap_or_else(|| panic!("no stripe_refunds row for {evt}: {refunds:?}"));
    assert_eq!(row["amount_cents"], json!(delta), "{row}");
    assert_eq!(row["card_uid"], json!(uid), "{row}");
    let tx = row["transaction_id"].clone();
    assert_eq!(
        postings(l, &tx),
        vec![
            (format!("card:{uid}"), -delta),
            ("stripe_clearing".to_owned(), delta)
        ]
    );
    let audit = audit_rows(l, evt);
    assert_eq!(audit.len(), 1, "{evt}: {audit:?}");
    assert_eq!(audit[0]["operation"], json!("stripe_refund"), "{evt}");
    assert_eq!(audit[0]["outcome"], json!("approved"), "{evt}");
    assert_eq!(audit[0]["transaction_id"], tx, "{evt}");
    assert_eq!(audit[0]["amount_cents"], json!(delta), "{evt}");
}

fn refunded_cents(l: &Ledger, cs: &str) -> i64 {
    recharge_row(l, cs).unwrap()["refunded_cents"]
        .as_i64()
        .unwrap()
}

async fn refunds_reverse_what_stripe_refunded_once(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x57A0);
    let paid = session("evt_1Pay", "cs_test_r", "pi_3R", &card, 2500);
    assert_outcome(&send(&l, &paid).await, &paid, "credited");

    // A partial refund reverses amount_refunded.
    let first = refund("evt_1Ref1", "ch_3R", "pi_3R", 2500, 1000);
    let b = send(&l, &first).await;
    let b = assert_outcome(&b, &first, "refunded");
    assert_eq!(
        (&b["card_uid"], &b["amount_cents"], &b["balance_cents"]),
        (&json!(card), &json!(1000), &json!(1500)),
        "{b}"
    );
    assert_refund_rows(&l, "evt_1Ref1", "cs_test_r", &card, 1000);
    assert_eq!(
        event_row(&l, "evt_1Ref1").unwrap()["outcome"],
        json!("refunded")
    );
    assert_eq!(refunded_cents(&l, "cs_test_r"), 1000);

    // The same refund event again reverses nothing more.
    let money = l.db_fingerprint_of(MONEY_TABLES);
    assert_outcome(&send(&l, &first).await, &first, "duplicate_event");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);

    // Another refund of the charge: amount_refunded is cumulative (1000 + 800), so 800.
    let second = refund("evt_1Ref2", "ch_3R", "pi_3R", 2500, 1800);
    let b = send(&l, &second).await;
    let b = assert_outcome(&b, &second, "refunded");
    assert_eq!(b["amount_cents"], json!(800), "{b}");
    assert_eq!(b["balance_cents"], json!(700), "{b}");
    assert_refund_rows(&l, "evt_1Ref2", "cs_test_r", &card, 800);

    // An older event (cumulative 1000) arriving late, a distinct event id: nothing new.
    let late = refund("evt_1Ref0", "ch_3R", "pi_3R", 2500, 1000);
    let money = l.db_fingerprint_of(MONEY_TABLES);
    let b = send(&l, &late).await;
    let b = assert_outcome(&b, &late, "refund_nothing_new");
    assert_eq!(b.get("amount_cents"), None, "{b}");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    assert!(audit_rows(&l, "evt_1Ref0").is_empty());

    // The rest, in full.
    let full = refund("evt_1Ref3", "ch_3R", "pi_3R", 2500, 2500);
    let b = send(&l, &full).await;
    let b = assert_outcome(&b, &full, "refunded");
    assert_eq!(b["amount_cents"], json!(700), "{b}");
    assert_eq!(b["balance_cents"], json!(0), "{b}");
    assert_refund_rows(&l, "evt_1Ref3", "cs_test_r", &card, 700);
    assert_eq!(refunded_cents(&l, "cs_test_r"), 2500);
    assert_eq!(refund_rows(&l, "cs_test_r").len(), 3);
    assert_eq!(card_row(&l, &card), Some((0, "active".into(), None)));

    // A full refund at once of another session, on a card that holds other money.
    let other = uid(0x57A1);
    l.fund(&other, 500).await;
    let paid = session("evt_1PayB", "cs_test_rb", "pi_3RB", &other, 4000);
    assert_outcome(&send(&l, &paid).await, &paid, "credited");
    let all = refund("evt_1RefB", "ch_3RB", "pi_3RB", 4000, 4000);
    let b = send(&l, &all).await;
    assert_eq!(
        assert_outcome(&b, &all, "refunded")["balance_cents"],
        json!(500)
    );
    assert_refund_rows(&l, "evt_1RefB", "cs_test_rb", &other, 4000);
    assert_eq!(l.balance(&other).await, 500);
    assert_eq!(l.balance(&card).await, 0);
    l.assert_audit_ok();
}

async fn a_refund_before_its_session_is_applied_when_the_session_arrives(backend: Backend) {
    let l = ledger(backend).await;
    let card = uid(0x57B0);
    let early = refund("evt_1Early", "ch_3E", "pi_3E", 2500, 1000);
    let money = l.db_fingerprint_of(MONEY_TABLES);
    let b = send(&l, &early).await;
    let b = assert_outcome(&b, &early, "refund_waiting");
    assert_eq!(b.get("amount_cents"), None, "{b}");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    let row = event_row(&l, "evt_1Early").unwrap();
    assert_eq!(row["outcome"], json!("refund_waiting"), "{row}");
    assert_eq!(row["payment_intent_id"], json!("pi_3E"), "{row}");
    assert_eq!(row["amount_cents"], json!(1000), "{row}");
    assert_eq!(card_row(&l, &card), None);
    // Delivered again while waiting: a duplicate, still waiting.
    assert_outcome(&send(&l, &early).await, &early, "duplicate_event");

    // The session arrives: credited, then the waiting refund applied in the same stroke.
    let paid = session("evt_1Late", "cs_test_e", "pi_3E", &card, 2500);
    let b = send(&l, &paid).await;
    let b = assert_outcome(&b, &paid, "credited");
    assert_eq!(b["amount_cents"], json!(2500), "{b}");
    assert_eq!(b["balance_cents"], json!(1500), "{b}");
    assert_eq!(card_row(&l, &card), Some((1500, "active".into(), None)));
    assert_credit_rows(&l, "evt_1Late", "cs_test_e", "pi_3E", &card, 2500);
    assert_refund_rows(&l, "evt_1Early", "cs_test_e", &card, 1000);
    assert_eq!(refunded_cents(&l, "cs_test_e"), 1000);
    let row = event_row(&l, "evt_1Early").unwrap();
    assert_eq!(row["outcome"], json!("refund_applied_late"), "{row}");

    // The waiting event delivered once more: nothing more.
    assert_outcome(&send(&l, &early).await, &early, "duplicate_event");
    // A later refund of the rest reverses only the difference.
    let rest = refund("evt_1Rest", "ch_3E", "pi_3E", 2500, 2500);
    let b = send(&l, &rest).await;
    let b = assert_outcome(&b, &rest, "refunded");
    assert_eq!(b["amount_cents"], json!(1500), "{b}");
    assert_eq!(b["balance_cents"], json!(0), "{b}");
    assert_eq!(l.balance(&card).await, 0);
    assert_eq!(refunded_cents(&l, "cs_test_e"), 2500);

    // Two refunds of one charge before its session, the larger total first: applied in
    // order of their cumulative amounts, each cent once (500, then 1500 more).
    let card2 = uid(0x57B1);
    let bigger = refund("evt_1Early2", "ch_3F", "pi_3F", 2500, 2000);
    let smaller = refund("evt_1Early1", "ch_3F", "pi_3F", 2500, 500);
    assert_outcome(&send(&l, &bigger).await, &bigger, "refund_waiting");
    assert_outcome(&send(&l, &smaller).await, &smaller, "refund_waiting");
    let paid = session("evt_1Late2", "cs_test_f", "pi_3F", &card2, 2500);
    let b = send(&l, &paid).await;
    assert_eq!(
        assert_outcome(&b, &paid, "credited")["balance_cents"],
        json!(500)
    );
    assert_refund_rows(&l, "evt_1Early1", "cs_test_f", &card2, 500);
    assert_refund_rows(&l, "evt_1Early2", "cs_test_f", &card2, 1500);
    assert_eq!(refunded_cents(&l, "cs_test_f"), 2000);
    assert_eq!(l.balance(&card2).await, 500);

    // A refund of a payment that never comes waits forever and moves nothing.
    let stray = refund("evt_1Stray", "ch_3S", "pi_3Stray", 900, 900);
    assert_outcome(&send(&l, &stray).await, &stray, "refund_waiting");
    assert_eq!(l.balance(&card).await, 0);
    l.assert_audit_ok();
}

/// `refund(...)` in another currency than the session's (and the festival's).
fn refund_in(currency: &str, evt: &str, ch: &str, pi: &str, amount: i64, refunded: i64) -> Value {
    let mut event = refund(evt, ch, pi, amount, refunded);
    event["data"]["object"]["currency"] = json!(currency);
    event
}

/// `cashless ledger stripe events --attention`: the line of `evt`.
#[track_caller]
fn attention_line(l: &Ledger, evt: &str) -> String {
    let out = assert_success(
        "stripe events --attention",
        &l.admin(&["stripe", "events", "--attention"]),
    );
    out.lines()
        .find(|line| line.contains(evt))
        .unwrap_or_else(|| panic!("{evt} is not listed:\n{out}"))
        .to_owned()
}

/// A refused refund: its row (refused, no transaction, the reason) and one audit row.
#[track_caller]
fn assert_refused_refund(l: &Ledger, evt: &str, pi: &str, cs: Option<&str>, why: &str) {
    let row = event_row(l, evt).unwrap_or_else(|| panic!("no stripe_events row for {evt}"));
    assert_eq!(row["outcome"], json!("refused"), "{row}");
    assert_eq!(row["payment_intent_id"], json!(pi), "{row}");
    assert_eq!(row["checkout_session_id"], json!(cs), "{row}");
    assert_eq!(row["transaction_id"], Value::Null, "{row}");
    assert!(row["reason"].as_str().unwrap().contains(why), "{row}");
    let audit = audit_rows(l, evt);
    assert_eq!(audit.len(), 1, "{evt}: {audit:?}");
    assert_eq!(audit[0]["operation"], json!("stripe_refund"), "{evt}");
    assert_eq!(audit[0]["outcome"], json!("refused"), "{evt}");
    assert_eq!(audit[0]["transaction_id"], Value::Null, "{evt}");
    assert_eq!(audit[0]["amount_cents"], Value::Null, "{evt}");
}

async fn a_refund_in_another_currency_is_refused_before_or_after_its_session(backend: Backend) {
    let l = ledger(backend).await;

    // After its session: refused like a session in another currency, nothing reversed.
    let card = uid(0x57D0);
    let paid = session("evt_1CurPay", "cs_test_cur", "pi_3Cur", &card, 2500);
    assert_outcome(&send(&l, &paid).await, &paid, "credited");
    let money = l.db_fingerprint_of(MONEY_TABLES);
    let usd = refund_in("usd", "evt_1CurUsd", "ch_3Cur", "pi_3Cur", 2500, 1000);
    let b = send(&l, &usd).await;
    let b = assert_outcome(&b, &usd, "refused");
    assert_eq!(b.get("amount_cents"), None, "{b}");
    assert_eq!(b.get("balance_cents"), None, "{b}");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    assert_eq!(l.balance(&card).await, 2500);
    assert_refused_refund(&l, "evt_1CurUsd", "pi_3Cur", Some("cs_test_cur"), "\"usd\"");
    // Listed for an operator, with its session, its card and why; no money moved.
    let line = attention_line(&l, "evt_1CurUsd");
    for part in [
        "charge.refunded",
        "refused",
        "cs_test_cur",
        &card,
        "\"usd\"",
        "EUR",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    // Delivered again: a duplicate, nothing more.
    assert_outcome(&send(&l, &usd).await, &usd, "duplicate_event");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    assert_eq!(audit_rows(&l, "evt_1CurUsd").len(), 1);
    // The charge's refund in euros is still reversed in full: the refused one took nothing.
    let eur = refund("evt_1CurEur", "ch_3Cur", "pi_3Cur", 2500, 1000);
    let b = send(&l, &eur).await;
    assert_eq!(
        assert_outcome(&b, &eur, "refunded")["amount_cents"],
        json!(1000)
    );
    assert_refund_rows(&l, "evt_1CurEur", "cs_test_cur", &card, 1000);
    assert_eq!(l.balance(&card).await, 1500);

    // Before its session: refused at once, not waiting, so the session that arrives later
    // is credited in full and applies nothing of it.
    let early_card = uid(0x57D1);
    let early = refund_in("gbp", "evt_1CurEarly", "ch_3CurE", "pi_3CurE", 2500, 2500);
    let money = l.db_fingerprint_of(MONEY_TABLES);
    assert_outcome(&send(&l, &early).await, &early, "refused");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    assert_refused_refund(&l, "evt_1CurEarly", "pi_3CurE", None, "\"gbp\"");
    let paid = session(
        "evt_1CurLate",
        "cs_test_cure",
        "pi_3CurE",
        &early_card,
        2500,
    );
    let b = send(&l, &paid).await;
    assert_eq!(
        assert_outcome(&b, &paid, "credited")["balance_cents"],
        json!(2500)
    );
    assert_eq!(l.balance(&early_card).await, 2500);
    assert!(refund_rows(&l, "cs_test_cure").is_empty());
    assert_eq!(refunded_cents(&l, "cs_test_cure"), 0);
    assert_refused_refund(&l, "evt_1CurEarly", "pi_3CurE", None, "\"gbp\"");
    let line = attention_line(&l, "evt_1CurEarly");
    assert!(
        line.contains("refused") && line.contains("\"gbp\""),
        "{line}"
    );
    // Delivered again after the credit: still nothing.
    let money = l.db_fingerprint_of(MONEY_TABLES);
    assert_outcome(&send(&l, &early).await, &early, "duplicate_event");
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    assert_eq!(l.balance(&early_card).await, 2500);
    l.assert_audit_ok();
}

async fn a_refund_after_the_money_was_spent_takes_the_card_below_zero_and_blocks_it(
    backend: Backend,
) {
    let l = ledger(backend).await;
    let card = uid(0x57C0);
    let paid = session("evt_1Spend", "cs_test_s", "pi_3S", &card, 2500);
    assert_outcome(&send(&l, &paid).await, &paid, "credited");

    // Two cocktails at the bar.
    let order = order_body(
        &card,
        l.seq(&l.bar_token),
        &[("cocktail", 2, COCKTAIL_CENTS)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_status(201);
    assert_eq!(l.balance(&card).await, 2500 - 2 * COCKTAIL_CENTS);

    // The attendee has the payment refunded by their bank: the whole 2500 goes back.
    let chargeback = refund("evt_1Back", "ch_3S", "pi_3S", 2500, 2500);
    let b = send(&l, &chargeback).await;
    let b = assert_outcome(&b, &chargeback, "refunded");
    let debt = 2500 - 2 * COCKTAIL_CENTS - 2500;
    assert_eq!(b["amount_cents"], json!(2500), "{b}");
    assert_eq!(b["balance_cents"], json!(debt), "{b}");
    assert_eq!(
        card_row(&l, &card),
        Some((debt, "blocked".into(), Some("debt".into())))
    );
    assert_refund_rows(&l, "evt_1Back", "cs_test_s", &card, 2500);
    let api = l.card(&card).await;
    api.assert_status(200);
    assert_eq!(api.body["status"], json!("blocked"), "{}", api.body);

    // Blocked: the bar refuses the next order.
    let order = order_body(
        &card,
        l.seq(&l.bar_token),
        &[("water", 1, WATER_CENTS)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_error(423, "CARD_BLOCKED");
    assert_eq!(l.balance(&card).await, debt);
    l.assert_audit_ok();
}

async fn a_payment_intent_named_by_two_sessions_credits_both_and_refunds_the_first(
    backend: Backend,
) {
    let l = ledger(backend).await;
    let uid = "04A1B2C3D4E5F6";
    let first = session("evt_pi_a", "cs_pi_a", "pi_shared", uid, 2000);
    let second = session("evt_pi_b", "cs_pi_b", "pi_shared", uid, 500);
    assert_outcome(&send(&l, &first).await, &first, "credited");
    // Not a 500 that Stripe would retry for days: the attendee paid, the card is credited.
    assert_outcome(&send(&l, &second).await, &second, "credited");
    assert_eq!(l.balance(uid).await, 2500);
    let linked = recharge_row(&l, "cs_pi_b").unwrap();
    assert_eq!(linked["payment_intent_id"], Value::Null, "{linked}");
    // A refund through the payment intent finds the session that holds it.
    let r = refund("evt_pi_r", "ch_pi", "pi_shared", 2000, 2000);
    assert_outcome(&send(&l, &r).await, &r, "refunded");
    assert_eq!(l.balance(uid).await, 500);
    assert_eq!(refunded_cents(&l, "cs_pi_a"), 2000);
    l.assert_audit_ok();
}

// Every test above that takes a `Backend` runs on both: `sqlite::NAME`, `postgres::NAME`.
on_both_backends! {
    a_paid_session_credits_the_card_once_with_postings_and_an_audit_row,
    bad_signatures_are_refused_with_400_and_write_nothing,
    the_tolerance_bounds_the_past_to_the_second_and_not_the_future,
    every_configured_secret_is_accepted_during_a_rotation,
    secrets_from_the_environment_are_comma_separated_and_win_over_the_file,
    a_signed_body_that_is_not_an_event_is_400_body_and_writes_nothing,
    without_a_configured_secret_the_webhook_is_500_and_writes_nothing,
    twenty_concurrent_deliveries_of_one_event_credit_once,
    one_session_in_two_events_is_credited_once,
    refused_unpaid_and_other_events_move_no_money,
    the_festival_currency_comes_from_the_config,
    refunds_reverse_what_stripe_refunded_once,
    a_refund_before_its_session_is_applied_when_the_session_arrives,
    a_refund_in_another_currency_is_refused_before_or_after_its_session,
    a_refund_after_the_money_was_spent_takes_the_card_below_zero_and_blocks_it,
    a_payment_intent_named_by_two_sessions_credits_both_and_refunds_the_first,
}
