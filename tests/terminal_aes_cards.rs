//! Cards that cannot be cloned, end to end: the real `cashless terminal` in `[cards] mode =
//! "aes"`, a real `pcscd` with vpcd's virtual readers, virtual NTAG 424 DNA chips played here
//! (`common::ntag424`), and the real ledger binary. Genuine cards sell; clones, forged MACs,
//! wrong counters and replayed answers are refused and logged, and charge nothing, online and
//! offline; a card leaving mid-authentication leaves the terminal working.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::reader::card_auth::MasterKeys;
use cashless::reader::ntag424::AesKey;
use common::ntag424::{Fault, Ntag424Chip};
use common::pcsc::EVENT_DEADLINE;
use common::pcsc::*;
use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CARD: [u8; 7] = [0x04, 0x3C, 0x91, 0x2A, 0x5B, 0x6D, 0x80];
const CARD_UID: &str = "043C912A5B6D80";
const OTHER: [u8; 7] = [0x04, 0x77, 0x10, 0x4E, 0x21, 0x9F, 0x81];
const OTHER_UID: &str = "0477104E219F81";
/// The festival's master key in these tests (version 1).
const MASTER: [u8; 16] = [0x3A; 16];
/// Red, three short beeps: a card that failed its authentication.
const NOT_GENUINE_FEEDBACK: [u8; 9] = [0xFF, 0x00, 0x40, 0x54, 0x04, 0x02, 0x02, 0x03, 0x01];
const APPROVED_FEEDBACK: [u8; 9] = [0xFF, 0x00, 0x40, 0xA8, 0x04, 0x02, 0x01, 0x01, 0x01];

fn master_keys() -> MasterKeys {
    MasterKeys::new([(1, AesKey::new(MASTER))])
}

/// The master key file, readable by this user only.
fn write_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("card-master-keys");
    std::fs::write(&path, format!("1 {}\n", hex::encode_upper(MASTER))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A bar terminal reading cards through PC/SC in AES mode, talking to the ledger at `url`
/// (`HOST:PORT`).
fn aes_config(dir: &Path, url: &str, token: &str, extra_cards: &str) -> PathBuf {
    let config = write_config(
        dir,
        &dir.join("journal.db"),
        url,
        token,
        "bar-1",
        "bar",
        1000,
    );
    let keys = write_key_file(dir);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[reader]\nbackend = \"simulated\"\n",
        &format!(
            "[reader]\nbackend = \"pcsc\"\ndebounce_ms = 300\n\n[cards]\nmode = \"aes\"\n\
             master_key_file = {:?}\n{extra_cards}",
            keys.display().to_string()
        ),
    );
    assert!(text.contains("mode = \"aes\""), "{text}");
    std::fs::write(&config, text).unwrap();
    config
}

fn chip(c: Ntag424Chip) -> Arc<Mutex<Ntag424Chip>> {
    Arc::new(Mutex::new(c))
}

/// Puts `spec` on reader 0, waits for the terminal's `card_error`, takes the card away and
/// waits until the reader is empty again.
async fn refused(t: &mut Terminal, pcscd: &Pcscd, spec: CardSpec) -> (Value, CardLog) {
    let card = VirtualCard::insert(pcscd.port(0), spec);
    let e = t.expect("card_error").await;
    let log = card.remove();
    let ctx = pcscd.context();
    wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);
    (e, log)
}

/// The scan log results the ledger holds for `uid`, oldest first.
fn scan_results(l: &Ledger, uid: &str) -> Vec<(String, String)> {
    l.query_json(&format!(
        "SELECT result, reader FROM nfc_scan_log WHERE card_uid = '{uid}' ORDER BY scanned_at"
    ))
    .into_iter()
    .map(|r| {
        (
            r["result"].as_str().unwrap().to_owned(),
            r["reader"].as_str().unwrap().to_owned(),
        )
    })
    .collect()
}

#[test]
fn a_genuine_card_sells_and_a_clone_with_its_uid_is_declined_and_logged() {
    in_own_process(
        "a_genuine_card_sells_and_a_clone_with_its_uid_is_declined_and_logged",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                l.fund(OTHER_UID, 5000).await;
                let dir = tempfile::tempdir().unwrap();
                let url = l.base_url.trim_start_matches("http://").to_owned();
                let mut t = Terminal::spawn(&aes_config(dir.path(), &url, &l.bar_token, ""));
                ready_to_sell(&mut t).await;

                // The genuine card: it proves its key, and pays.
                arm_beer(&mut t).await;
                let genuine = chip(Ntag424Chip::issued(&CARD, &master_keys(), false));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&genuine));
                let c = t.expect("card").await;
                assert_eq!(
                    (c["uid"].as_str(), c["key_version"].as_i64()),
                    (Some(CARD_UID), Some(1)),
                    "{c}"
                );
                assert_eq!(c["card_type"], "iso14443_4", "{c}");
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                card.wait_until("the approval feedback", EVENT_DEADLINE, |log| {
                    log.apdus.iter().any(|a| a[..] == APPROVED_FEEDBACK)
                });
                card.remove();
                let ctx = pcscd.context();
                wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);

                // A clone: the same UID and key version on a card without the key.
                arm_beer(&mut t).await;
                let clone = chip(Ntag424Chip::clone_with_wrong_key(&CARD, 1));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&clone));
                let e = t.expect("card_error").await;
                assert_eq!(e["code"], "not_genuine", "{e}");
                assert!(
                    e["message"].as_str().unwrap().contains("card not genuine"),
                    "{e}"
                );
                // The event goes out before the reader plays the pattern: wait for it.
                card.wait_until("the not-genuine sound pattern", EVENT_DEADLINE, |log| {
                    log.apdus.iter().any(|a| a[..] == NOT_GENUINE_FEEDBACK)
                });
                let log = card.remove();
                assert!(!log.apdus.iter().any(|a| a[..] == APPROVED_FEEDBACK));
                wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);
                // A UID-only card with the same UID (a "magic" card), and a blank card.
                let (e, _) = refused(&mut t, &pcscd, CardSpec::new(&CARD)).await;
                assert_eq!(e["code"], "not_aes_card", "{e}");
                let blank = chip(Ntag424Chip::blank(&OTHER));
                let (e, _) = refused(&mut t, &pcscd, CardSpec::ntag424(&blank)).await;
                assert_eq!(e["code"], "not_issued", "{e}");

                // The order is still armed: a random-ID card pays, by its real UID.
                let random = chip(Ntag424Chip::issued(&OTHER, &master_keys(), true));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&random));
                let c = t.expect("card").await;
                assert_eq!(c["uid"], OTHER_UID, "{c}");
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                wait_until_synced(&mut t).await;
                wait_for("the scan log upload", Duration::from_secs(20), || {
                    scan_results(&l, CARD_UID).len() >= 3
                })
                .await;
                t.quit().await;
                drop(card);
                let reader = READERS[0].to_owned();
                assert_eq!(
                    scan_results(&l, CARD_UID),
                    [
                        ("approved_online".to_owned(), reader.clone()),
                        ("not_genuine".to_owned(), reader.clone()),
                        ("not_aes_card".to_owned(), reader.clone()),
                    ]
                );
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
                assert_eq!(l.balance(OTHER_UID).await, 5000 - BEER_CENTS);
                l.assert_audit_ok();
            });
        },
    );
}

#[test]
fn forged_answers_and_a_card_leaving_mid_authentication_charge_nothing() {
    in_own_process(
        "forged_answers_and_a_card_leaving_mid_authentication_charge_nothing",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                let dir = tempfile::tempdir().unwrap();
                let url = l.base_url.trim_start_matches("http://").to_owned();
                let mut t = Terminal::spawn(&aes_config(dir.path(), &url, &l.bar_token, ""));
                ready_to_sell(&mut t).await;
                arm_beer(&mut t).await;
                let keys = master_keys();

                let cases: Vec<(Ntag424Chip, &str)> = vec![
                    (
                        Ntag424Chip::issued(&CARD, &keys, false).with_fault(Fault::BadMac),
                        "not_genuine",
                    ),
                    (
                        Ntag424Chip::issued(&CARD, &keys, false).with_fault(Fault::WrongCounter),
                        "not_genuine",
                    ),
                ];
                for (c, code) in cases {
                    let c = chip(c);
                    let (e, _) = refused(&mut t, &pcscd, CardSpec::ntag424(&c)).await;
                    assert_eq!(e["code"], code, "{e}");
                }
                // The card leaves during the authentication, at each of its exchanges: a
                // read to try again, never a verdict, never a charge.
                for index in 1..6 {
                    let c = chip(Ntag424Chip::issued(&CARD, &keys, false));
                    let spec = CardSpec::ntag424(&c).vanishing_at(index, Vanish::BeforeAnswer);
                    let (e, log) = refused(&mut t, &pcscd, spec).await;
                    assert_eq!(e["code"], "reader_error", "vanishing at {index}: {e}");
                    assert!(log.vanished, "vanishing at {index}");
                }
                // The terminal still works: the genuine card pays the armed order.
                let genuine = chip(Ntag424Chip::issued(&CARD, &keys, false));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&genuine));
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                // A replay of that genuine presentation, on a card without any key.
                let recorded = genuine.lock().unwrap().last_answers.clone();
                card.remove();
                let ctx = pcscd.context();
                wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);
                arm_beer(&mut t).await;
                let replayer = chip(Ntag424Chip::blank(&CARD).with_fault(Fault::Replay(recorded)));
                let (e, _) = refused(&mut t, &pcscd, CardSpec::ntag424(&replayer)).await;
                assert_eq!(e["code"], "not_genuine", "{e}");
                t.quit().await;
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
                l.assert_audit_ok();
            });
        },
    );
}

#[test]
fn offline_a_clone_is_declined_and_the_genuine_card_sells() {
    in_own_process(
        "offline_a_clone_is_declined_and_the_genuine_card_sells",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                let proxy = Proxy::start(&l.base_url).await;
                let dir = tempfile::tempdir().unwrap();
                let mut t = Terminal::spawn(&aes_config(dir.path(), &proxy.addr, &l.bar_token, ""));
                ready_to_sell(&mut t).await;
                // The replica knows the card's balance; then the network goes.
                wait_until_synced(&mut t).await;
                proxy.go_down().await;
                arm_beer(&mut t).await;
                let clone = chip(Ntag424Chip::clone_with_wrong_key(&CARD, 1));
                let (e, _) = refused(&mut t, &pcscd, CardSpec::ntag424(&clone)).await;
                assert_eq!(e["code"], "not_genuine", "{e}");
                let genuine = chip(Ntag424Chip::issued(&CARD, &master_keys(), false));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&genuine));
                let d = t.expect("decision").await;
                assert_eq!(d["status"], "approved_offline", "{d}");
                t.send(json!({"cmd": "status"})).await;
                let s = t.expect("status").await;
                assert_eq!(s["pending"], 1, "only the genuine sale is journaled: {s}");
                proxy.go_up();
                wait_until_synced(&mut t).await;
                t.quit().await;
                drop(card);
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
                l.assert_audit_ok();
            });
        },
    );
}

#[test]
fn a_uid_only_copy_of_a_card_the_ledger_knows_as_keyed_is_refused() {
    in_own_process(
        "a_uid_only_copy_of_a_card_the_ledger_knows_as_keyed_is_refused",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                l.fund(OTHER_UID, 5000).await;
                // CARD was issued with key version 1 at a checkpoint; OTHER is a cheap card.
                let r = l
                    .put(
                        &format!("/v1/cards/{CARD_UID}/key"),
                        &l.checkpoint_token,
                        &json!({"key_version": 1}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                let dir = tempfile::tempdir().unwrap();
                let url = l.base_url.trim_start_matches("http://").to_owned();
                let config =
                    aes_config(dir.path(), &url, &l.bar_token, "accept_uid_cards = true\n");
                let mut t = Terminal::spawn(&config);
                ready_to_sell(&mut t).await;
                // The replica hears of the key from the card feed.
                wait_for_status(
                    &mut t,
                    "a card-feed pull",
                    (EVENT_DEADLINE, Duration::from_millis(200)),
                    |s| !s["last_feed_at"].is_null(),
                )
                .await;

                // A UID-only card showing CARD's UID: the ledger says CARD has a key.
                arm_beer(&mut t).await;
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&CARD));
                // Refused before it is shown as a card (the staff screen goes straight to
                // CARD NOT GENUINE, and back to the order).
                let e = loop {
                    let event = tokio::time::timeout(EVENT_DEADLINE, t.events.recv())
                        .await
                        .unwrap()
                        .unwrap();
                    if event["event"] == "card" || event["event"] == "card_error" {
                        break event;
                    }
                };
                assert_eq!(e["event"], "card_error", "{e}");
                assert_eq!(e["code"], "not_genuine", "{e}");
                assert!(
                    e["message"]
                        .as_str()
                        .unwrap()
                        .contains("issued with key version 1, it proved no key"),
                    "{e}"
                );
                card.wait_until("the not-genuine feedback", EVENT_DEADLINE, |log| {
                    log.apdus.iter().any(|a| a[..] == NOT_GENUINE_FEEDBACK)
                });
                let log = card.remove();
                assert!(!log.apdus.iter().any(|a| a[..] == APPROVED_FEEDBACK));
                let ctx = pcscd.context();
                wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);

                // The order stayed armed: the cheap UID-only card pays for it, and the
                // genuine keyed card pays for the next.
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&OTHER));
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                card.remove();
                wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);
                arm_beer(&mut t).await;
                let genuine = chip(Ntag424Chip::issued(&CARD, &master_keys(), false));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&genuine));
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                wait_until_synced(&mut t).await;
                wait_for("the scan log upload", Duration::from_secs(20), || {
                    scan_results(&l, CARD_UID).len() >= 2
                })
                .await;
                t.quit().await;
                drop(card);
                let reader = READERS[0].to_owned();
                assert_eq!(
                    scan_results(&l, CARD_UID),
                    [
                        ("not_genuine".to_owned(), reader.clone()),
                        ("approved_online".to_owned(), reader),
                    ]
                );
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
                assert_eq!(l.balance(OTHER_UID).await, 5000 - BEER_CENTS);
                l.assert_audit_ok();
            });
        },
    );
}
