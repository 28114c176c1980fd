//! Cards issued with an AES key, at the ledger, black-box on both backends: `PUT
//! /v1/cards/{uid}/key` from a checkpoint records the master key version a card was issued
//! with; the card and the card feed show it (`key_version`), so that terminals in AES mode
//! refuse a UID-only card claiming to be that card. Recording is idempotent, moves the
//! version up only, is audited, and bad input changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

const FRESH: &str = "04A1B2C3D4E5F6";
const FUNDED: &str = "04B1B2C3D4E5F7";

fn key_path(uid: &str) -> String {
    format!("/v1/cards/{uid}/key")
}

/// The checkpoint records `version` for card `uid`.
async fn record_key(l: &Ledger, uid: &str, version: i64) -> Resp {
    l.put(
        &key_path(uid),
        &l.checkpoint_token,
        &json!({"key_version": version}),
    )
    .await
}

/// A refusal of the card's record: 409 `CARD_KEY_CONFLICT` saying `why`.
#[track_caller]
fn assert_conflict(r: &Resp, why: &str) {
    r.assert_error(409, "CARD_KEY_CONFLICT");
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{}", r.body);
}

async fn a_checkpoint_records_a_cards_key_once_and_terminals_learn_it(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.fund(FUNDED, 2500).await;

    // A card the ledger has never seen: created with nothing on it, key version 1.
    let r = record_key(&l, FRESH, 1).await;
    r.assert_status(200);
    assert_eq!(
        r.body,
        json!({"card_uid": FRESH, "key_version": 1, "changed": true, "card_created": true})
    );
    let card = l.card(FRESH).await;
    assert_eq!(
        (
            card.body["balance_cents"].as_i64(),
            card.body["key_version"].as_i64()
        ),
        (Some(0), Some(1)),
        "{}",
        card.body
    );

    // The same again: the same answer, nothing written.
    let before = l.db_fingerprint();
    let again = record_key(&l, FRESH, 1).await;
    again.assert_status(200);
    assert_eq!(again.body["changed"], false);
    assert_eq!(again.body["card_created"], false);
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a repeated record writes nothing"
    );

    // A funded card: its balance is untouched, its key recorded; re-issued under version 3.
    for version in [2, 3] {
        let r = record_key(&l, FUNDED, version).await;
        r.assert_status(200);
        assert_eq!(r.body["changed"], true);
        assert_eq!(r.body["card_created"], false);
    }
    assert_eq!(l.balance(FUNDED).await, 2500);

    // Never back to an older version: 409, nothing written.
    let before = l.db_fingerprint();
    let older = record_key(&l, FUNDED, 2).await;
    assert_conflict(&older, "key version 3");
    assert_eq!(l.db_fingerprint(), before);

    // The card feed carries the versions (null for a UID-only card).
    let feed = l.get("/v1/cards", Some(&l.bar_token)).await;
    feed.assert_status(200);
    let versions: Vec<(String, Option<i64>)> = feed.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["card_uid"].as_str().unwrap().to_owned(),
                c["key_version"].as_i64(),
            )
        })
        .collect();
    assert!(
        versions.contains(&(FRESH.to_owned(), Some(1))),
        "{versions:?}"
    );
    assert!(
        versions.contains(&(FUNDED.to_owned(), Some(3))),
        "{versions:?}"
    );

    // Audited: one row per change, by the checkpoint, with the version it replaced.
    let rows = l.query_json(
        "SELECT actor, card_uid, details FROM app_transaction_log
         WHERE operation = 'card_key' ORDER BY log_id",
    );
    let details: Vec<(String, String, serde_json::Value)> = rows
        .iter()
        .map(|r| {
            let details = match &r["details"] {
                serde_json::Value::String(text) => serde_json::from_str(text).unwrap(),
                other => other.clone(),
            };
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["card_uid"].as_str().unwrap().to_owned(),
                details,
            )
        })
        .collect();
    assert_eq!(details.len(), 3, "{details:?}");
    assert_eq!(details[0].0, "terminal:cp-1");
    assert_eq!(details[0].1, FRESH);
    assert_eq!(
        details[0].2,
        json!({"key_version": 1, "previous_key_version": null, "card_created": true})
    );
    assert_eq!(
        details[2].2,
        json!({"key_version": 3, "previous_key_version": 2, "card_created": false})
    );
    l.assert_audit_ok();
}

async fn only_a_checkpoint_records_keys_and_bad_input_changes_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.fund(FUNDED, 1000).await;
    let before = l.db_fingerprint();
    let path = key_path(FUNDED);
    let bar = l.put(&path, &l.bar_token, &json!({"key_version": 1})).await;
    bar.assert_error(403, "FORBIDDEN");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"key_version": 0}"#.to_vec(), "key_version"),
        (br#"{"key_version": 256}"#.to_vec(), "key_version"),
        (br#"{"key_version": "1"}"#.to_vec(), "key_version"),
        (br#"{"key_version": 1, "key": "00"}"#.to_vec(), "key"),
        (br"{}".to_vec(), "key_version"),
    ];
    for (body, field) in cases {
        let r = l
            .put_raw(&path, Some(&l.checkpoint_token), body.clone())
            .await;
        let details = r.assert_error(400, "INVALID_REQUEST");
        assert_eq!(
            details["field"],
            field,
            "{}: {}",
            String::from_utf8_lossy(&body),
            r.body
        );
    }
    let malformed = l
        .put_raw(&path, Some(&l.checkpoint_token), b"{".to_vec())
        .await;
    malformed.assert_error(400, "INVALID_REQUEST");
    let bad_uid = l
        .put(
            "/v1/cards/04abc/key",
            &l.checkpoint_token,
            &json!({"key_version": 1}),
        )
        .await;
    assert_eq!(bad_uid.assert_error(400, "INVALID_REQUEST")["field"], "uid");
    let nobody = l
        .put_raw(&path, None, br#"{"key_version": 1}"#.to_vec())
        .await;
    nobody.assert_error(401, "UNAUTHORIZED");
    let get_only = l.get(&path, Some(&l.checkpoint_token)).await;
    get_only.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(l.db_fingerprint(), before, "refusals change nothing");
}

async fn a_replaced_card_is_not_issued(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.fund(FUNDED, 1000).await;
    let out = l.admin(&["card", "replace", "--old", FUNDED, "--new", FRESH]);
    assert_success("card replace", &out);
    let before = l.db_fingerprint();
    let r = record_key(&l, FUNDED, 1).await;
    assert_conflict(&r, &format!("replaced by card {FRESH}"));
    assert_eq!(l.db_fingerprint(), before);
    // The replacement card is issued as any other.
    let r = record_key(&l, FRESH, 1).await;
    r.assert_status(200);
    assert_eq!(l.balance(FRESH).await, 1000);
    l.assert_audit_ok();
}

on_both_backends! {
    a_checkpoint_records_a_cards_key_once_and_terminals_learn_it,
    only_a_checkpoint_records_keys_and_bad_input_changes_nothing,
    a_replaced_card_is_not_issued,
}
