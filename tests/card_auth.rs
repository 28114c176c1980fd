//! The terminal's NTAG 424 DNA state machines ([`TapAuth`], [`IssueFlow`]) against the virtual
//! chip of the test support code, APDU by APDU, without PC/SC: genuine cards, clones,
//! forged and replayed answers, and issuing interrupted after every command the card
//! executed. The same exchanges through the real pcscd are in `terminal_pcsc.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use cashless::reader::card_auth::{
    AuthError, Genuine, ISSUE_EXCHANGES_MAX, IssueError, IssueFlow, IssueOptions, Issued,
    MasterKeys, Step, TAP_EXCHANGES_MAX, TapAuth,
};
use cashless::reader::ntag424::{AesKey, ChannelError};
use common::ntag424::{Fault, Ntag424Chip};

const UID: [u8; 7] = [0x04, 0x51, 0x7A, 0x22, 0x9C, 0x61, 0x80];

fn master_keys(versions: &[(u8, u8)]) -> MasterKeys {
    MasterKeys::new(versions.iter().map(|&(v, b)| (v, AesKey::new([b; 16]))))
}

/// One tap: power on, GET DATA, then the authentication, as the PC/SC adapter runs it.
fn tap(chip: &mut Ntag424Chip, keys: &MasterKeys) -> Result<Genuine, AuthError> {
    chip.power_on();
    let answer = chip.answer(&[0xFF, 0xCA, 0x00, 0x00, 0x00]);
    let shown = &answer[..answer.len() - 2];
    let (mut flow, mut apdu) = TapAuth::start(keys, shown, rand::random());
    for _ in 0..TAP_EXCHANGES_MAX {
        let answer = chip.answer(&apdu);
        match flow.next(&answer)? {
            Step::Send(next) => apdu = next,
            Step::Done(genuine) => return Ok(genuine),
        }
    }
    panic!("the tap did not finish within {TAP_EXCHANGES_MAX} exchanges");
}

/// Issues the card; with `cut_after`, the card leaves once it executed that many commands
/// (the answer to the last one lost). Returns the outcome, or None if cut.
fn issue(
    chip: &mut Ntag424Chip,
    keys: &MasterKeys,
    options: IssueOptions,
    cut_after: Option<usize>,
) -> Option<Result<Issued, IssueError>> {
    chip.power_on();
    let (mut flow, mut apdu) = IssueFlow::start(keys, options, rand::random()).unwrap();
    for sent in 1..=ISSUE_EXCHANGES_MAX {
        let answer = chip.answer(&apdu);
        if cut_after == Some(sent) {
            return None;
        }
        match flow.next(&answer) {
            Ok(Step::Send(next)) => apdu = next,
            Ok(Step::Done(issued)) => return Some(Ok(issued)),
            Err(e) => return Some(Err(e)),
        }
    }
    panic!("issuing did not finish within {ISSUE_EXCHANGES_MAX} exchanges");
}

const ALL_KEYS: IssueOptions = IssueOptions {
    random_id: false,
    other_keys: true,
};

#[test]
fn an_issued_card_authenticates_and_gives_its_uid_and_key_version() {
    let keys = master_keys(&[(1, 0x11), (2, 0x22)]);
    let mut chip = Ntag424Chip::issued(&UID, &keys, false);
    let genuine = tap(&mut chip, &keys).unwrap();
    assert_eq!(genuine.uid, UID);
    assert_eq!(genuine.key_version, 2);
    // Last year's card (version 1) still reads with this year's keys file.
    let mut old = Ntag424Chip::issued(&UID, &master_keys(&[(1, 0x11)]), false);
    assert_eq!(tap(&mut old, &keys).unwrap().key_version, 1);
    // A terminal without that version says so.
    assert_eq!(
        tap(&mut old, &master_keys(&[(2, 0x22)])),
        Err(AuthError::UnknownKeyVersion(1))
    );
}

#[test]
fn a_random_id_card_gives_its_real_uid_to_the_terminal_only() {
    let keys = master_keys(&[(1, 0x11)]);
    let mut chip = Ntag424Chip::issued(&UID, &keys, true);
    chip.power_on();
    let shown = chip.answer(&[0xFF, 0xCA, 0x00, 0x00, 0x00]);
    assert_eq!(shown.len(), 6, "a 4-byte random ID");
    assert_eq!(shown[0], 0x08);
    let genuine = tap(&mut chip, &keys).unwrap();
    assert_eq!(genuine.uid, UID);
    // Without the festival's keys, the real UID stays hidden.
    assert!(matches!(
        tap(&mut chip, &master_keys(&[(1, 0x99)])),
        Err(AuthError::NotGenuine(ChannelError::AuthenticationRefused))
    ));
}

#[test]
fn a_clone_with_the_uid_but_not_the_key_is_not_genuine() {
    let keys = master_keys(&[(1, 0x11)]);
    let mut clone = Ntag424Chip::clone_with_wrong_key(&UID, 1);
    let err = tap(&mut clone, &keys).unwrap_err();
    assert_eq!(
        err,
        AuthError::NotGenuine(ChannelError::AuthenticationRefused)
    );
    assert_eq!(err.code(), "not_genuine");
    assert!(err.refuses_card());
}

#[test]
fn forged_answers_are_not_genuine_and_bad_cards_are_named() {
    let keys = master_keys(&[(1, 0x11)]);
    for (fault, expected) in [
        (Fault::BadMac, ChannelError::BadMac),
        (Fault::WrongCounter, ChannelError::BadMac),
    ] {
        let mut chip = Ntag424Chip::issued(&UID, &keys, false).with_fault(fault.clone());
        assert_eq!(
            tap(&mut chip, &keys),
            Err(AuthError::NotGenuine(expected)),
            "{fault:?}"
        );
    }
    // A recording of a genuine tap, played back: the terminal's challenge is new each time.
    let mut genuine = Ntag424Chip::issued(&UID, &keys, false);
    tap(&mut genuine, &keys).unwrap();
    let recorded = genuine.last_answers.clone();
    let mut replayer = Ntag424Chip::blank(&UID).with_fault(Fault::Replay(recorded));
    assert_eq!(
        tap(&mut replayer, &keys),
        Err(AuthError::NotGenuine(ChannelError::WrongProof))
    );
    // A blank card, and a UID-only card (no such application).
    assert_eq!(
        tap(&mut Ntag424Chip::blank(&UID), &keys),
        Err(AuthError::NotIssued)
    );
    for sw in [[0x6D, 0x00], [0x6A, 0x82], [0x63, 0x00]] {
        let (mut flow, _) = TapAuth::start(&keys, &UID, [[0; 16]; 2]);
        assert_eq!(flow.next(&sw), Err(AuthError::NotAesCard));
    }
    // An empty answer (the card left), or another status, is a read to try again.
    for answer in [&[][..], &[0x90][..], &[0x64, 0x00][..]] {
        let (mut flow, _) = TapAuth::start(&keys, &UID, [[0; 16]; 2]);
        let err = flow.next(answer).unwrap_err();
        assert!(!err.refuses_card(), "{answer:02X?}: {err:?}");
    }
}

#[test]
fn a_blank_card_is_issued_then_authenticates() {
    let keys = master_keys(&[(1, 0x11), (3, 0x33)]);
    let mut chip = Ntag424Chip::blank(&UID);
    let issued = issue(&mut chip, &keys, ALL_KEYS, None).unwrap().unwrap();
    assert_eq!(issued.uid, UID);
    assert_eq!(issued.key_version, 3);
    assert_eq!(issued.changed_keys, [1, 2, 3, 4, 0]);
    assert_eq!(chip.versions(), [3; 5]);
    assert_ne!(chip.key(0), &AesKey::FACTORY);
    assert_eq!(tap(&mut chip, &keys).unwrap().uid, UID);
    // Issuing it again changes nothing and says it is issued.
    let again = issue(&mut chip, &keys, ALL_KEYS, None).unwrap().unwrap();
    assert!(again.changed_keys.is_empty());
    // Another festival's terminal refuses to touch it.
    assert!(matches!(
        issue(&mut chip, &master_keys(&[(4, 0x44)]), ALL_KEYS, None).unwrap(),
        Err(IssueError::OtherVersion {
            key_no: 0,
            version: 3,
            target: 4
        })
    ));
}

#[test]
fn issuing_only_key_0_leaves_the_others_at_the_factory_key() {
    let keys = master_keys(&[(1, 0x11)]);
    let mut chip = Ntag424Chip::blank(&UID);
    let options = IssueOptions {
        random_id: false,
        other_keys: false,
    };
    let issued = issue(&mut chip, &keys, options, None).unwrap().unwrap();
    assert_eq!(issued.changed_keys, [0]);
    assert_eq!(chip.versions(), [1, 0, 0, 0, 0]);
    assert!(tap(&mut chip, &keys).is_ok());
}

#[test]
fn a_card_whose_random_id_is_on_gets_the_uid_key_even_when_only_key_0_is_asked_for() {
    let keys = master_keys(&[(1, 0x11)]);
    let mut chip = Ntag424Chip::blank_with_random_id(&UID);
    let options = IssueOptions {
        random_id: false,
        other_keys: false,
    };
    let issued = issue(&mut chip, &keys, options, None).unwrap().unwrap();
    assert_eq!((issued.uid.as_slice(), issued.random_id), (&UID[..], true));
    assert_eq!(issued.changed_keys, [2, 0]);
    assert_eq!(chip.versions(), [1, 0, 1, 0, 0]);
    // Without key 2 a terminal could not learn the real UID, and every tap would fail.
    let genuine = tap(&mut chip, &keys).unwrap();
    assert_eq!((genuine.uid.as_slice(), genuine.key_version), (&UID[..], 1));
}

#[test]
fn a_card_cut_halfway_is_finished_with_its_version_after_the_master_key_was_rotated() {
    let old = master_keys(&[(1, 0x11)]);
    let mut chip = Ntag424Chip::blank(&UID);
    // Cut after the first key change (GET DATA, select, 5 versions, 2 authentication
    // frames, ChangeKey 1): key 1 is at version 1, key 0 still the factory's.
    assert!(issue(&mut chip, &old, ALL_KEYS, Some(10)).is_none());
    assert_eq!(chip.versions(), [0, 1, 0, 0, 0]);
    // The station's file gained version 2 meanwhile: the card is finished under version 1.
    let rotated = master_keys(&[(1, 0x11), (2, 0x22)]);
    let issued = issue(&mut chip, &rotated, ALL_KEYS, None).unwrap().unwrap();
    assert_eq!(issued.key_version, 1);
    assert_eq!(chip.versions(), [1; 5]);
    assert_eq!(tap(&mut chip, &rotated).unwrap().key_version, 1);
    // A finished card of version 1 is not re-keyed to version 2.
    let again = issue(&mut chip, &rotated, ALL_KEYS, None).unwrap();
    assert!(
        matches!(
            again,
            Err(IssueError::OtherVersion {
                key_no: 0,
                version: 1,
                target: 2
            })
        ),
        "{again:?}"
    );
    // Version bytes are the card's word: a blank card whose key 1 claims version 1 without
    // holding its key (something else wrote it) is refused, not finished under version 1.
    let mut forged = Ntag424Chip::blank(&UID).with_key(1, AesKey::new([0x77; 16]), 1);
    let refused = issue(&mut forged, &rotated, ALL_KEYS, None).unwrap();
    assert!(
        matches!(
            refused,
            Err(IssueError::ForeignKey {
                key_no: 1,
                version: 1
            })
        ),
        "{refused:?}"
    );
    assert_eq!(forged.versions(), [0, 1, 0, 0, 0], "nothing changed on it");
    // A station without version 1 refuses the half-issued card rather than guess.
    let mut half = Ntag424Chip::blank(&UID);
    assert!(issue(&mut half, &old, ALL_KEYS, Some(10)).is_none());
    let only_new = master_keys(&[(2, 0x22)]);
    let refused = issue(&mut half, &only_new, ALL_KEYS, None).unwrap();
    assert!(
        matches!(
            refused,
            Err(IssueError::OtherVersion {
                key_no: 1,
                version: 1,
                target: 2
            })
        ),
        "{refused:?}"
    );
}

/// The card pulled away after each command it executed (its answer lost), at every step of
/// issuing, with and without the random ID: issuing again finishes it, and it authenticates.
#[test]
fn issuing_interrupted_at_every_step_resumes() {
    let keys = master_keys(&[(1, 0x11)]);
    for random_id in [false, true] {
        let options = IssueOptions {
            random_id,
            other_keys: true,
        };
        let mut whole = Ntag424Chip::blank(&UID);
        issue(&mut whole, &keys, options, None).unwrap().unwrap();
        let steps = whole.exchanges.len();
        assert!(steps >= 12, "{steps} exchanges");
        for cut in 1..steps {
            let mut chip = Ntag424Chip::blank(&UID);
            assert!(issue(&mut chip, &keys, options, Some(cut)).is_none());
            let issued = issue(&mut chip, &keys, options, None)
                .unwrap()
                .unwrap_or_else(|e| panic!("cut after {cut} (random ID {random_id}): {e}"));
            assert_eq!(issued.uid, UID, "cut after {cut}");
            assert_eq!(chip.versions(), [1; 5], "cut after {cut}");
            assert_eq!(chip.random_id(), random_id, "cut after {cut}");
            let genuine = tap(&mut chip, &keys)
                .unwrap_or_else(|e| panic!("cut after {cut} (random ID {random_id}): {e}"));
            assert_eq!(genuine.uid, UID);
        }
    }
}
