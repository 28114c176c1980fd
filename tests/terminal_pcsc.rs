//! The terminal with its PC/SC reader, end to end: the real `cashless terminal --reader pcsc`
//! binary, a real `pcscd` with vpcd's virtual readers, virtual cards played here, and the
//! real ledger binary.
//!
//! Every test runs in a process of its own ([`in_own_process`]): the terminal it starts
//! inherits the variable that names that process's pcscd.
#![allow(clippy::unwrap_used)]

mod common;

use common::pcsc::EVENT_DEADLINE;
use common::pcsc::*;
use common::terminal::*;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A 7-byte UID and its text form.
const CARD: [u8; 7] = [0x04, 0xA2, 0x3B, 0x5C, 0x11, 0x22, 0x80];
const CARD_UID: &str = "04A23B5C112280";
const OTHER: [u8; 7] = [0x04, 0x51, 0x9E, 0x0A, 0x33, 0x44, 0x81];
const OTHER_UID: &str = "04519E0A334481";
/// The approval and decline feedback the terminal sends (ACR122U LED and buzzer).
const APPROVED_FEEDBACK: [u8; 9] = [0xFF, 0x00, 0x40, 0xA8, 0x04, 0x02, 0x01, 0x01, 0x01];
const DECLINED_FEEDBACK: [u8; 9] = [0xFF, 0x00, 0x40, 0x54, 0x04, 0x08, 0x01, 0x01, 0x01];

/// A bar terminal's config reading cards through PC/SC, on the reader whose name contains
/// `filter`, with a short debounce.
fn pcsc_config(dir: &Path, l: &Ledger, filter: &str) -> PathBuf {
    let url = l.base_url.trim_start_matches("http://");
    let config = write_config(
        dir,
        &dir.join("journal.db"),
        url,
        &l.bar_token,
        "bar-1",
        "bar",
        1000,
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[reader]\nbackend = \"simulated\"\n",
        &format!("[reader]\nbackend = \"pcsc\"\nname_filter = \"{filter}\"\ndebounce_ms = 300\n"),
    );
    assert!(text.contains("backend = \"pcsc\""), "{text}");
    std::fs::write(&config, text).unwrap();
    config
}

/// The next `reader` event.
async fn reader_event(t: &mut Terminal) -> Value {
    t.expect("reader").await
}

/// `ready`, then the first `reader` event (returned), then a bar login.
async fn ready_with_reader(t: &mut Terminal) -> Value {
    t.expect("ready").await;
    let r = reader_event(t).await;
    t.send(json!({"cmd": "login", "staff_id": "s-bar", "pin": "1234"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
    r
}

/// Waits until pcscd has polled the card `polls` more times (it asks for the ATR on each
/// poll): enough for a presentation to have been reported, if there was one.
fn wait_polls(card: &VirtualCard, polls: usize) {
    let before = card.log().atr_requests;
    card.wait_until("pcscd to poll the card", EVENT_DEADLINE, |log| {
        log.atr_requests >= before + polls
    });
}

/// Events the terminal printed so far without waiting, by name.
fn pending_events(t: &mut Terminal, name: &str) -> Vec<Value> {
    let mut found = Vec::new();
    while let Ok(event) = t.events.try_recv() {
        if event["event"] == name {
            found.push(event);
        }
    }
    found
}

#[test]
fn a_card_left_on_the_reader_pays_once_and_a_reinsert_pays_again() {
    in_own_process(
        "a_card_left_on_the_reader_pays_once_and_a_reinsert_pays_again",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                let dir = tempfile::tempdir().unwrap();
                let mut t = Terminal::spawn(&pcsc_config(dir.path(), &l, "00 01"));
                let r = ready_with_reader(&mut t).await;
                assert_eq!(
                    (r["state"].as_str(), r["name"].as_str()),
                    (Some("connected"), Some(READERS[1])),
                    "{r}"
                );
                // With a PC/SC reader, cards are not typed in.
                t.send(json!({"cmd": "tap", "uid": CARD_UID})).await;
                assert_eq!(t.expect("error").await["code"], "INVALID_COMMAND");

                arm_beer(&mut t).await;
                let card = VirtualCard::insert(pcscd.port(1), CardSpec::new(&CARD));
                let c = t.expect("card").await;
                assert_eq!(
                    (
                        c["uid"].as_str(),
                        c["reader"].as_str(),
                        c["card_type"].as_str()
                    ),
                    (Some(CARD_UID), Some(READERS[1]), Some("mifare_classic_1k")),
                    "{c}"
                );
                let d = t.expect("decision").await;
                assert_eq!(d["status"], "approved_online", "{d}");
                card.wait_until("the approval feedback", EVENT_DEADLINE, |log| {
                    log.apdus.iter().any(|a| a[..] == APPROVED_FEEDBACK)
                });

                // Left on the reader while the next order is armed: no second tap.
                arm_beer(&mut t).await;
                wait_polls(&card, 4);
                t.send(json!({"cmd": "status"})).await;
                t.expect("status").await;
                assert!(pending_events(&mut t, "card").is_empty());
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);

                // Taken away and presented again: the armed order is paid.
                card.remove();
                let ctx = pcscd.context();
                wait_for_state(&ctx, &pcscd.reader(1), "EMPTY", EVENT_DEADLINE, is_empty);
                // Longer than the debounce window: a deliberate second tap.
                std::thread::sleep(Duration::from_millis(400));
                let card = VirtualCard::insert(pcscd.port(1), CardSpec::new(&CARD));
                assert_eq!(t.expect("card").await["uid"], CARD_UID);
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                t.quit().await;
                drop(card);
                assert_eq!(l.balance(CARD_UID).await, 5000 - 2 * BEER_CENTS);
                l.assert_audit_ok();
            });
        },
    );
}

#[test]
fn cards_that_misbehave_never_charge_anything() {
    in_own_process("cards_that_misbehave_never_charge_anything", || {
        runtime().block_on(async {
            let pcscd = Pcscd::start();
            let l = Ledger::start().await;
            l.fund(CARD_UID, 5000).await;
            let dir = tempfile::tempdir().unwrap();
            let mut t = Terminal::spawn(&pcsc_config(dir.path(), &l, ""));
            ready_to_sell(&mut t).await;
            arm_beer(&mut t).await;
            let port = pcscd.port(0);
            let cases: Vec<(CardSpec, &str)> = vec![
                (
                    CardSpec::new(&CARD).failing_get_data([0x63, 0x00]),
                    "status_word",
                ),
                (CardSpec::new(&[1, 2, 3, 4, 5]), "uid_length"),
                (CardSpec::new(&[0x08, 0x12, 0x34, 0x56]), "random_uid"),
                (
                    CardSpec::new(&CARD).vanishing(Vanish::MidAnswer),
                    "truncated",
                ),
            ];
            let ctx = pcscd.context();
            for (spec, code) in cases {
                let card = VirtualCard::insert(port, spec);
                let e = t.expect("card_error").await;
                assert_eq!(e["code"], code, "{e}");
                assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
                if code == "random_uid" {
                    assert!(
                        e["message"]
                            .as_str()
                            .unwrap()
                            .contains("new number at every tap")
                    );
                }
                drop(card);
                wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);
            }
            // None of them was a card event, and the order is still armed: a good card pays it.
            assert!(pending_events(&mut t, "card").is_empty());
            assert!(pending_events(&mut t, "decision").is_empty());
            let card = VirtualCard::insert(port, CardSpec::new(&CARD));
            assert_eq!(t.expect("decision").await["status"], "approved_online");
            card.wait_until("the approval feedback", EVENT_DEADLINE, |log| {
                log.apdus.iter().any(|a| a[..] == APPROVED_FEEDBACK)
            });
            wait_until_synced(&mut t).await;
            // The scan log reaches the ledger: the random UID, then the paying presentation
            // (the presentations without a UID are only events and log lines).
            let db = l.open_db();
            let results = || -> Vec<String> {
                db.prepare("SELECT result FROM nfc_scan_log ORDER BY scanned_at")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            };
            wait_for("the scan log upload", Duration::from_secs(20), || {
                results() == ["random_uid", "approved_online"]
            })
            .await;
            t.quit().await;
            drop(card);
            assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
            let unknown = l.card("08123456").await;
            assert_eq!(unknown.status, 404, "{}", unknown.body);
            l.assert_audit_ok();
        });
    });
}

#[test]
fn a_declined_card_gets_the_decline_feedback() {
    in_own_process("a_declined_card_gets_the_decline_feedback", || {
        runtime().block_on(async {
            let pcscd = Pcscd::start();
            let l = Ledger::start().await;
            l.fund(CARD_UID, 100).await;
            let dir = tempfile::tempdir().unwrap();
            let mut t = Terminal::spawn(&pcsc_config(dir.path(), &l, ""));
            ready_to_sell(&mut t).await;
            arm_beer(&mut t).await;
            let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&CARD));
            let d = t.expect("decision").await;
            assert_eq!(
                (d["status"].as_str(), d["reason"].as_str()),
                (Some("declined"), Some("INSUFFICIENT_FUNDS")),
                "{d}"
            );
            card.wait_until("the decline feedback", EVENT_DEADLINE, |log| {
                log.apdus.iter().any(|a| a[..] == DECLINED_FEEDBACK)
            });
            t.quit().await;
            drop(card);
            assert_eq!(l.balance(CARD_UID).await, 100);
        });
    });
}

#[test]
fn pcscd_killed_and_restarted_mid_run_the_next_card_is_read() {
    in_own_process(
        "pcscd_killed_and_restarted_mid_run_the_next_card_is_read",
        || {
            runtime().block_on(async {
                let mut pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                let dir = tempfile::tempdir().unwrap();
                let mut t = Terminal::spawn(&pcsc_config(dir.path(), &l, ""));
                assert_eq!(ready_with_reader(&mut t).await["state"], "connected");

                pcscd.kill9();
                let r = reader_event(&mut t).await;
                assert_eq!(r["state"], "disconnected", "{r}");
                t.send(json!({"cmd": "status"})).await;
                assert_eq!(t.expect("status").await["reader"], "disconnected");
                pcscd.restart();
                let r = reader_event(&mut t).await;
                assert_eq!(
                    (r["state"].as_str(), r["name"].as_str()),
                    (Some("connected"), Some(READERS[0])),
                    "{r}"
                );
                arm_beer(&mut t).await;
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&CARD));
                assert_eq!(t.expect("card").await["uid"], CARD_UID);
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                t.quit().await;
                drop(card);
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
            });
        },
    );
}

#[test]
fn both_virtual_readers_work_and_the_name_filter_picks_one() {
    in_own_process(
        "both_virtual_readers_work_and_the_name_filter_picks_one",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                l.fund(CARD_UID, 5000).await;
                l.fund(OTHER_UID, 5000).await;
                for (reader, uid, bytes) in [(0, CARD_UID, CARD), (1, OTHER_UID, OTHER)] {
                    let dir = tempfile::tempdir().unwrap();
                    let filter = &READERS[reader][READERS[reader].len() - 5..];
                    let mut t = Terminal::spawn(&pcsc_config(dir.path(), &l, filter));
                    assert_eq!(ready_with_reader(&mut t).await["name"], READERS[reader]);
                    arm_beer(&mut t).await;
                    // A card on the other reader is not this terminal's.
                    let elsewhere =
                        VirtualCard::insert(pcscd.port(1 - reader), CardSpec::new(&bytes));
                    wait_polls(&elsewhere, 3);
                    assert!(pending_events(&mut t, "card").is_empty());
                    drop(elsewhere);
                    let card = VirtualCard::insert(pcscd.port(reader), CardSpec::new(&bytes));
                    assert_eq!(t.expect("card").await["uid"], uid);
                    assert_eq!(t.expect("decision").await["status"], "approved_online");
                    t.quit().await;
                    drop(card);
                    let ctx = pcscd.context();
                    wait_for_state(
                        &ctx,
                        &pcscd.reader(reader),
                        "EMPTY",
                        EVENT_DEADLINE,
                        is_empty,
                    );
                }
                assert_eq!(l.balance(CARD_UID).await, 5000 - BEER_CENTS);
                assert_eq!(l.balance(OTHER_UID).await, 5000 - BEER_CENTS);
            });
        },
    );
}

#[test]
fn no_matching_reader_at_startup_the_terminal_waits_and_says_so() {
    in_own_process(
        "no_matching_reader_at_startup_the_terminal_waits_and_says_so",
        || {
            runtime().block_on(async {
                let _pcscd = Pcscd::start();
                let l = Ledger::start().await;
                let dir = tempfile::tempdir().unwrap();
                let mut t = Terminal::spawn(&pcsc_config(dir.path(), &l, "ACR122U"));
                t.expect("ready").await;
                let r = reader_event(&mut t).await;
                assert_eq!(r["state"], "waiting", "{r}");
                assert!(r["message"].as_str().unwrap().contains("ACR122U"), "{r}");
                t.send(json!({"cmd": "status"})).await;
                assert_eq!(t.expect("status").await["reader"], "waiting");
                t.quit().await;
            });
        },
    );
}
