//! The PC/SC test infrastructure itself (`tests/common/pcsc.rs`), proven through the `pcsc`
//! crate against the real stack: an isolated `pcscd` per test, vpcd's virtual readers, and
//! virtual cards played in Rust. No cashless code is involved.
//!
//! Every test runs in a process of its own ([`in_own_process`]): libpcsclite reads the socket
//! of its pcscd once per process.
#![allow(clippy::unwrap_used)]

mod common;

use common::pcsc::*;
use pcsc::{Protocols, ShareMode, State};
use std::path::Path;
use std::time::Instant;

/// A 7-byte UID (NXP, ISO 14443A double size).
const UID: [u8; 7] = [0x04, 0xA2, 0x3B, 0x5C, 0x11, 0x22, 0x80];
const OTHER_UID: [u8; 7] = [0x04, 0x51, 0x9E, 0x0A, 0x33, 0x44, 0x81];
/// ACR122U LED and buzzer command (`docs/nfc.md`): a reader command, not a card command.
const LED_BUZZER: [u8; 9] = [0xFF, 0x00, 0x40, 0x0F, 0x04, 0x01, 0x01, 0x01, 0x01];

fn uid_answer(uid: &[u8]) -> Vec<u8> {
    [uid, &SW_OK].concat()
}

#[test]
fn both_virtual_readers_are_listed_empty_on_a_socket_of_their_own() {
    in_own_process(
        "both_virtual_readers_are_listed_empty_on_a_socket_of_their_own",
        || {
            let pcscd = Pcscd::start();
            assert_ne!(pcscd.socket(), Path::new("/run/pcscd/pcscd.comm"));
            assert!(pcscd.socket().exists(), "{}", pcscd.socket().display());
            let ctx = pcscd.context();
            let names: Vec<String> = ctx
                .list_readers_owned()
                .unwrap()
                .iter()
                .map(|n| n.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(names, READERS);
            for r in 0..READERS.len() {
                let state =
                    wait_for_state(&ctx, &pcscd.reader(r), "EMPTY", EVENT_DEADLINE, is_empty);
                assert!(!is_present(&state), "{:?}", state.event_state());
            }
        },
    );
}

#[test]
fn an_inserted_card_is_present_answers_get_data_and_leaves() {
    in_own_process(
        "an_inserted_card_is_present_answers_get_data_and_leaves",
        || {
            let pcscd = Pcscd::start();
            let ctx = pcscd.context();
            let reader = pcscd.reader(1);
            wait_for_state(&ctx, &reader, "EMPTY", EVENT_DEADLINE, is_empty);

            let inserted = Instant::now();
            let card = VirtualCard::insert(pcscd.port(1), CardSpec::new(&UID));
            let state = wait_for_state(&ctx, &reader, "PRESENT", EVENT_DEADLINE, is_present);
            eprintln!("insert -> PRESENT after {:?}", inserted.elapsed());
            assert_eq!(state.atr(), ATR_CLASSIC_1K);
            // The other reader did not see it.
            let other = wait_for_state(&ctx, &pcscd.reader(0), "a state", EVENT_DEADLINE, |_| true);
            assert!(is_empty(&other), "{:?}", other.event_state());

            let conn = ctx
                .connect(&reader, ShareMode::Shared, Protocols::ANY)
                .unwrap();
            assert_eq!(transmit(&conn, &GET_UID).unwrap(), uid_answer(&UID));
            assert_eq!(
                transmit(&conn, &LED_BUZZER).unwrap(),
                SW_INS_NOT_SUPPORTED,
                "the virtual card answers reader commands it does not know with 6D 00"
            );
            assert_eq!(card.apdus(), [GET_UID.to_vec(), LED_BUZZER.to_vec()]);

            let removed = Instant::now();
            let log = card.remove();
            wait_for_state(
                &ctx,
                &reader,
                "EMPTY after removal",
                EVENT_DEADLINE,
                is_empty,
            );
            eprintln!("remove -> EMPTY after {:?}", removed.elapsed());
            assert!(log.power_on >= 1, "pcscd powers the card up: {log:?}");
            // The connection made before the removal is dead.
            assert_eq!(
                transmit(&conn, &GET_UID).err(),
                Some(pcsc::Error::RemovedCard)
            );
            drop(conn);
            assert_eq!(
                ctx.connect(&reader, ShareMode::Shared, Protocols::ANY)
                    .err(),
                Some(pcsc::Error::NoSmartcard)
            );
        },
    );
}

#[test]
fn remove_and_reinsert_between_two_calls_bumps_the_event_counter() {
    in_own_process(
        "remove_and_reinsert_between_two_calls_bumps_the_event_counter",
        || {
            let pcscd = Pcscd::start();
            let ctx = pcscd.context();
            let reader = pcscd.reader(0);
            let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&UID));
            let mut seen = wait_for_state(&ctx, &reader, "PRESENT", EVENT_DEADLINE, is_present);
            let count = seen.event_count();
            seen.sync_current_state();

            // Another context watches pcscd notice the removal, then the new card; this one
            // makes no call meanwhile. (Reinserting before pcscd noticed the removal can go
            // unseen: see `VirtualCard`.)
            let watcher = pcscd.context();
            card.remove();
            wait_for_state(&watcher, &reader, "the removal", EVENT_DEADLINE, |s| {
                is_empty(s) && s.event_count() == count + 1
            });
            let _card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&OTHER_UID));
            wait_for_state(&watcher, &reader, "the new card", EVENT_DEADLINE, |s| {
                is_present(s) && s.event_count() == count + 2
            });

            // The stale view: still PRESENT, but the counter says the card changed.
            let asked = Instant::now();
            ctx.get_status_change(EVENT_DEADLINE, std::slice::from_mut(&mut seen))
                .unwrap();
            assert!(
                asked.elapsed() < EVENT_DEADLINE / 2,
                "a changed counter must be reported at once"
            );
            assert!(is_present(&seen), "{:?}", seen.event_state());
            assert!(
                seen.event_state().contains(State::CHANGED),
                "{:?}",
                seen.event_state()
            );
            assert_eq!(seen.event_count(), count + 2);
            assert_eq!(read_uid(&ctx, &reader).unwrap(), uid_answer(&OTHER_UID));
        },
    );
}

#[test]
fn misbehaving_cards_answer_a_failing_status_word_and_a_wrong_length_uid() {
    in_own_process(
        "misbehaving_cards_answer_a_failing_status_word_and_a_wrong_length_uid",
        || {
            let pcscd = Pcscd::start();
            let ctx = pcscd.context();
            let failing = VirtualCard::insert(
                pcscd.port(0),
                CardSpec::new(&UID).failing_get_data([0x63, 0x00]),
            );
            let five = [0x01, 0x02, 0x03, 0x04, 0x05];
            let short = VirtualCard::insert(pcscd.port(1), CardSpec::new(&five));
            for r in 0..READERS.len() {
                wait_for_state(
                    &ctx,
                    &pcscd.reader(r),
                    "PRESENT",
                    EVENT_DEADLINE,
                    is_present,
                );
            }
            assert_eq!(read_uid(&ctx, &pcscd.reader(0)).unwrap(), [0x63, 0x00]);
            assert_eq!(read_uid(&ctx, &pcscd.reader(1)).unwrap(), uid_answer(&five));
            assert_eq!(failing.apdus(), [GET_UID.to_vec()]);
            assert_eq!(short.apdus(), [GET_UID.to_vec()]);
        },
    );
}

#[test]
fn a_card_that_vanishes_mid_apdu_fails_the_transmit_and_is_gone() {
    in_own_process(
        "a_card_that_vanishes_mid_apdu_fails_the_transmit_and_is_gone",
        || {
            let pcscd = Pcscd::start();
            let ctx = pcscd.context();
            let cards = [
                VirtualCard::insert(
                    pcscd.port(0),
                    CardSpec::new(&UID).vanishing(Vanish::BeforeAnswer),
                ),
                VirtualCard::insert(
                    pcscd.port(1),
                    CardSpec::new(&UID).vanishing(Vanish::MidAnswer),
                ),
            ];
            for (r, card) in cards.iter().enumerate() {
                let reader = pcscd.reader(r);
                wait_for_state(&ctx, &reader, "PRESENT", EVENT_DEADLINE, is_present);
                let answer = read_uid(&ctx, &reader);
                eprintln!("{:?}: GET DATA -> {answer:?}", card.spec().vanish);
                card.wait_until("itself vanish", EVENT_DEADLINE, |l| l.vanished);
                // Debian's vpcd (3.3) hands a short answer on as a success: nothing for
                // BeforeAnswer, the one byte sent for MidAnswer; newer vpcds may fail the
                // transmit. Either way there is no status word: the reader layer must refuse
                // an answer shorter than 2 bytes.
                assert!(
                    !answer.as_ref().is_ok_and(|a| a.len() >= 2),
                    "a card that vanished mid-APDU must not give a full answer: {answer:?}"
                );
                wait_for_state(&ctx, &reader, "EMPTY", EVENT_DEADLINE, is_empty);
                assert_eq!(
                    card.log().connections,
                    1,
                    "a vanished card does not come back"
                );
            }
        },
    );
}

#[test]
fn after_a_pcscd_restart_only_a_new_context_works_and_sees_the_card_again() {
    in_own_process(
        "after_a_pcscd_restart_only_a_new_context_works_and_sees_the_card_again",
        || {
            let mut pcscd = Pcscd::start();
            let ctx = pcscd.context();
            let reader = pcscd.reader(0);
            let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&UID));
            wait_for_state(&ctx, &reader, "PRESENT", EVENT_DEADLINE, is_present);
            assert_eq!(read_uid(&ctx, &reader).unwrap(), uid_answer(&UID));

            // A monitor waiting in get_status_change (no timeout), on a context of its own.
            let (waiting, is_waiting) = std::sync::mpsc::channel();
            let monitor = std::thread::spawn({
                let monitor_ctx = pcscd.context();
                let reader = reader.clone();
                move || {
                    let mut states = [pcsc::ReaderState::new(reader, State::UNAWARE)];
                    monitor_ctx.get_status_change(None, &mut states).unwrap();
                    states[0].sync_current_state();
                    waiting.send(()).unwrap();
                    let since = Instant::now();
                    let result = monitor_ctx.get_status_change(None, &mut states);
                    (result, since.elapsed(), monitor_ctx)
                }
            });
            is_waiting.recv_timeout(EVENT_DEADLINE).unwrap();

            pcscd.kill9();
            let killed = Instant::now();
            let (result, waited, monitor_ctx) = monitor.join().unwrap();
            eprintln!(
                "waiting get_status_change -> {result:?} {:?} after the kill (it waited {waited:?})",
                killed.elapsed()
            );
            // Not NoService: the call in progress sees the socket close (CommError) or reset
            // (SecurityViolation, libpcsclite's translation of ECONNRESET). The next call on
            // that context says NoService.
            assert!(
                matches!(
                    result,
                    Err(pcsc::Error::CommError
                        | pcsc::Error::SecurityViolation
                        | pcsc::Error::NoService)
                ),
                "{result:?}"
            );
            assert_eq!(
                monitor_ctx.list_readers_owned().err(),
                Some(pcsc::Error::NoService)
            );
            assert_eq!(
                ctx.list_readers_owned().err(),
                Some(pcsc::Error::NoService),
                "old context, pcscd gone"
            );
            let mut states = [pcsc::ReaderState::new(reader.clone(), State::UNAWARE)];
            assert_eq!(
                ctx.get_status_change(EVENT_DEADLINE, &mut states).err(),
                Some(pcsc::Error::NoService)
            );
            assert_eq!(
                pcsc::Context::establish(pcsc::Scope::User).err(),
                Some(pcsc::Error::NoService),
                "new context, pcscd gone"
            );

            pcscd.restart();
            assert_eq!(
                ctx.list_readers_owned().err(),
                Some(pcsc::Error::NoService),
                "old context, pcscd back"
            );
            assert_eq!(
                ctx.connect(&reader, ShareMode::Shared, Protocols::ANY)
                    .err(),
                Some(pcsc::Error::NoService)
            );
            let fresh = pcscd.context();
            wait_for_state(
                &fresh,
                &reader,
                "the card seen again",
                EVENT_DEADLINE,
                is_present,
            );
            assert_eq!(read_uid(&fresh, &reader).unwrap(), uid_answer(&UID));
            assert!(card.log().connections >= 2, "{:?}", card.log());
        },
    );
}

#[test]
fn parallel_pcscds_do_not_interfere() {
    in_own_processes("parallel_pcscds_do_not_interfere", 2, |role| {
        let pcscd = Pcscd::start();
        role.publish("socket", pcscd.socket().to_str().unwrap());
        role.publish("port", &pcscd.port(0).to_string());
        let uid = [0x04, 0x10 + role.index as u8, 0x20, 0x30, 0x40, 0x50, 0x60];
        let _card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&uid));
        // Both daemons are up and both cards on their readers before anyone checks.
        role.barrier("inserted");

        let ctx = pcscd.context();
        assert_eq!(ctx.list_readers_owned().unwrap().len(), READERS.len());
        wait_for_state(
            &ctx,
            &pcscd.reader(0),
            "PRESENT",
            EVENT_DEADLINE,
            is_present,
        );
        let other = wait_for_state(&ctx, &pcscd.reader(1), "a state", EVENT_DEADLINE, |_| true);
        assert!(is_empty(&other), "{:?}", other.event_state());
        assert_eq!(read_uid(&ctx, &pcscd.reader(0)).unwrap(), uid_answer(&uid));
        let peer = 1 - role.index;
        assert_ne!(role.read(peer, "socket"), pcscd.socket().to_str().unwrap());
        assert_ne!(role.read(peer, "port"), pcscd.port(0).to_string());
        // Nobody tears down before both checked.
        role.barrier("checked");
    });
}
