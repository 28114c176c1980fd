//! A virtual NXP NTAG 424 DNA: the card's side of `AuthenticateEV2First`, secure messaging
//! in `CommMode.Full` (`GetCardUID`, `ChangeKey`, `SetConfiguration`), `GetKeyVersion` and the
//! random ID, as the datasheet (NT4H2421Gx) describes the card. It answers APDUs as bytes, so
//! the same chip serves a vpcd reader ([`super::pcsc::CardSpec::ntag424`]) or a test that
//! drives the terminal's state machines directly.
//!
//! It is built from the crate's NXP primitives (CMAC, CBC, the session-key derivation, the
//! IV and MAC layouts), which the unit tests hold to NXP's published examples byte for byte;
//! the card's own logic (which key, which counter, what it checks, what it refuses) is
//! written here from the card's point of view, so that the terminal and this card cannot
//! share a mistake in the exchange.
//!
//! Faults ([`Fault`]) make it misbehave as a forger or a broken card would.

#![allow(clippy::unwrap_used, dead_code)]

use cashless::reader::card_auth::{self, MasterKeys};
use cashless::reader::ntag424::{
    self, AesKey, SessionKeys, cbc_decrypt, cbc_encrypt, crc32_nxp, message_iv, message_mac, pad,
    rotate_left, session_keys, unpad,
};

/// The NTAG 424 DNA application's DF name.
const DF_NAME: [u8; 7] = [0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01];

/// How the chip misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every MAC it sends has one bit flipped.
    BadMac,
    /// Its answers are MACed with a command counter one ahead of the right one.
    WrongCounter,
    /// It answers every APDU with the answer recorded at the same position (a replay of an
    /// earlier, genuine exchange).
    Replay(Vec<Vec<u8>>),
}

struct Pending {
    key_no: u8,
    rnd_b: [u8; 16],
}

struct ChipSession {
    keys: SessionKeys,
    ti: [u8; 4],
    cmd_ctr: u16,
    key_no: u8,
}

impl std::fmt::Debug for Ntag424Chip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ntag424Chip")
            .field("uid", &hex::encode_upper(&self.uid))
            .field("versions", &self.versions)
            .field("random_id", &self.random_id)
            .finish_non_exhaustive()
    }
}

/// The chip: its keys and their versions, its UID and configuration, and what the current
/// power-on holds (selection, authentication in progress, session).
pub struct Ntag424Chip {
    uid: Vec<u8>,
    keys: [AesKey; 5],
    versions: [u8; 5],
    random_id: bool,
    fault: Option<Fault>,
    /// The random ID of this activation.
    shown_id: Vec<u8>,
    selected: bool,
    pending: Option<Pending>,
    session: Option<ChipSession>,
    /// APDUs answered since power-on (for [`Fault::Replay`]).
    answered: usize,
    /// Every (APDU, answer) since the chip was made.
    pub exchanges: Vec<(Vec<u8>, Vec<u8>)>,
    /// The answers of the last power-on, in order (to build a replay).
    pub last_answers: Vec<Vec<u8>>,
}

impl Ntag424Chip {
    /// A factory-fresh card: all five keys zero, version 00, static UID.
    pub fn blank(uid: &[u8]) -> Ntag424Chip {
        Ntag424Chip {
            uid: uid.to_vec(),
            keys: std::array::from_fn(|_| AesKey::FACTORY),
            versions: [0; 5],
            random_id: false,
            fault: None,
            shown_id: Vec::new(),
            selected: false,
            pending: None,
            session: None,
            answered: 0,
            exchanges: Vec::new(),
            last_answers: Vec::new(),
        }
        .powered_on()
    }

    /// A card issued under the newest of `keys` (all five keys changed), as `cashless card
    /// issue` leaves one.
    pub fn issued(uid: &[u8], keys: &MasterKeys, random_id: bool) -> Ntag424Chip {
        let (version, master) = keys.newest().unwrap();
        let mut chip = Ntag424Chip::blank(uid);
        for key_no in 0..5u8 {
            chip.keys[usize::from(key_no)] = card_auth::issued_key(master, uid, key_no);
            chip.versions[usize::from(key_no)] = version;
        }
        chip.random_id = random_id;
        chip.powered_on()
    }

    /// A factory-fresh card whose random ID was turned on elsewhere (another tool), its keys
    /// still the factory's.
    pub fn blank_with_random_id(uid: &[u8]) -> Ntag424Chip {
        let mut chip = Ntag424Chip::blank(uid);
        chip.random_id = true;
        chip.powered_on()
    }

    /// The card with key `key_no` set to `key` and `version` by something else (another
    /// tool, or a forger preparing blank stock).
    pub fn with_key(mut self, key_no: u8, key: AesKey, version: u8) -> Ntag424Chip {
        self.keys[usize::from(key_no)] = key;
        self.versions[usize::from(key_no)] = version;
        self.powered_on()
    }

    /// The same card with key 0 under another master key: a clone that copied the UID and
    /// the key version, but not the key.
    pub fn clone_with_wrong_key(uid: &[u8], version: u8) -> Ntag424Chip {
        let wrong = MasterKeys::new([(version, AesKey::new([0x5A; 16]))]);
        Ntag424Chip::issued(uid, &wrong, false)
    }

    pub fn with_fault(mut self, fault: Fault) -> Ntag424Chip {
        self.fault = Some(fault);
        self
    }

    fn powered_on(mut self) -> Ntag424Chip {
        self.power_on();
        self
    }

    /// The field came on (a new presentation, or a reset): nothing survives but the memory.
    pub fn power_on(&mut self) {
        self.selected = false;
        self.pending = None;
        self.session = None;
        self.answered = 0;
        self.last_answers.clear();
        self.shown_id = [&[0x08][..], &rand::random::<[u8; 3]>()].concat();
    }

    pub fn versions(&self) -> [u8; 5] {
        self.versions
    }

    pub fn key(&self, key_no: u8) -> &AesKey {
        &self.keys[usize::from(key_no)]
    }

    pub fn random_id(&self) -> bool {
        self.random_id
    }

    pub fn uid(&self) -> &[u8] {
        &self.uid
    }

    /// The answer to `apdu`.
    pub fn answer(&mut self, apdu: &[u8]) -> Vec<u8> {
        let answer = match &self.fault {
            Some(Fault::Replay(recorded)) => recorded
                .get(self.answered)
                .cloned()
                .unwrap_or_else(|| vec![0x91, 0xCA]),
            _ => self.process(apdu),
        };
        self.answered += 1;
        self.exchanges.push((apdu.to_vec(), answer.clone()));
        self.last_answers.push(answer.clone());
        answer
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        match apdu {
            [0xFF, 0xCA, 0x00, 0x00, ..] => {
                let id = if self.random_id {
                    self.shown_id.clone()
                } else {
                    self.uid.clone()
                };
                [id, vec![0x90, 0x00]].concat()
            }
            [0x00, 0xA4, 0x04, _, 0x07, name @ ..] if name.starts_with(&DF_NAME) => {
                self.selected = true;
                self.session = None;
                vec![0x90, 0x00]
            }
            [0x00, 0xA4, ..] => vec![0x6A, 0x82],
            [0x90, ins, 0x00, 0x00, rest @ ..] => {
                if !self.selected {
                    return vec![0x91, 0x9D];
                }
                let data = match rest {
                    [0x00] => &[][..],
                    [lc, data @ .., 0x00] if usize::from(*lc) == data.len() => data,
                    _ => return vec![0x91, 0x7E],
                };
                self.native(*ins, data)
            }
            _ => vec![0x6D, 0x00],
        }
    }

    fn native(&mut self, ins: u8, data: &[u8]) -> Vec<u8> {
        let pending = self.pending.take();
        match ins {
            0x64 => match data {
                [key_no] if *key_no < 5 => vec![self.versions[usize::from(*key_no)], 0x91, 0x00],
                _ => vec![0x91, 0x40],
            },
            0x71 => {
                self.session = None;
                let [key_no, ..] = data else {
                    return vec![0x91, 0x7E];
                };
                if *key_no >= 5 {
                    return vec![0x91, 0x40];
                }
                let rnd_b: [u8; 16] = rand::random();
                let mut e = rnd_b;
                cbc_encrypt(&self.keys[usize::from(*key_no)], &[0; 16], &mut e);
                self.pending = Some(Pending {
                    key_no: *key_no,
                    rnd_b,
                });
                [&e[..], &[0x91, 0xAF]].concat()
            }
            0xAF => {
                let Some(pending) = pending else {
                    return vec![0x91, 0xCA];
                };
                let Ok(mut both) = <[u8; 32]>::try_from(data) else {
                    return vec![0x91, 0x7E];
                };
                let key = self.keys[usize::from(pending.key_no)].clone();
                cbc_decrypt(&key, &[0; 16], &mut both);
                let rnd_a: [u8; 16] = both[..16].try_into().unwrap();
                if both[16..] != rotate_left(&pending.rnd_b) {
                    return vec![0x91, 0xAE];
                }
                let ti: [u8; 4] = rand::random();
                let mut answer = [0u8; 32];
                answer[..4].copy_from_slice(&ti);
                answer[4..20].copy_from_slice(&rotate_left(&rnd_a));
                cbc_encrypt(&key, &[0; 16], &mut answer);
                self.session = Some(ChipSession {
                    keys: session_keys(&key, &rnd_a, &pending.rnd_b),
                    ti,
                    cmd_ctr: 0,
                    key_no: pending.key_no,
                });
                [&answer[..], &[0x91, 0x00]].concat()
            }
            0x51 | 0xC4 | 0x5C => self.secure(ins, data),
            _ => vec![0x91, 0x1C],
        }
    }

    /// A `CommMode.Full` command: check its MAC, decrypt its data, act, answer.
    fn secure(&mut self, ins: u8, data: &[u8]) -> Vec<u8> {
        let Some(s) = self.session.take() else {
            return vec![0x91, 0xAE];
        };
        let header_len = usize::from(ins != 0x51);
        let Some((body, mac)) = data.split_last_chunk::<8>() else {
            return vec![0x91, 0x7E];
        };
        if body.len() < header_len {
            return vec![0x91, 0x7E];
        }
        if message_mac(&s.keys.mac, ins, s.cmd_ctr, &s.ti, body) != *mac {
            // An integrity error ends the session.
            return vec![0x91, 0x1E];
        }
        let (header, cryptogram) = body.split_at(header_len);
        let mut plain = cryptogram.to_vec();
        if plain.len() % 16 != 0 {
            return vec![0x91, 0x7E];
        }
        if !plain.is_empty() {
            let iv = message_iv(&s.keys.enc, [0xA5, 0x5A], &s.ti, s.cmd_ctr);
            cbc_decrypt(&s.keys.enc, &iv, &mut plain);
        }
        let Ok(plain) = unpad(&plain).map(<[u8]>::to_vec).or_else(|e| {
            if cryptogram.is_empty() {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        }) else {
            return vec![0x91, 0x1E];
        };
        match ins {
            0x51 => self.reply(s, &self.uid.clone()),
            0xC4 => {
                let key_no = header[0];
                if key_no >= 5 {
                    return vec![0x91, 0x40];
                }
                if s.key_no != 0 {
                    return vec![0x91, 0x9D];
                }
                if key_no == s.key_no {
                    let [new @ .., version] = plain.as_slice() else {
                        return vec![0x91, 0x7E];
                    };
                    let Ok(new) = <[u8; 16]>::try_from(new) else {
                        return vec![0x91, 0x7E];
                    };
                    self.keys[usize::from(key_no)] = AesKey::new(new);
                    self.versions[usize::from(key_no)] = *version;
                    // The session ends with the key it was opened with.
                    vec![0x91, 0x00]
                } else {
                    let (Some(xored), Some(&version), Some(crc)) =
                        (plain.get(..16), plain.get(16), plain.get(17..21))
                    else {
                        return vec![0x91, 0x7E];
                    };
                    let old = self.keys[usize::from(key_no)].bytes();
                    let new: [u8; 16] = std::array::from_fn(|i| xored[i] ^ old[i]);
                    if crc != crc32_nxp(&new) {
                        return vec![0x91, 0x1E];
                    }
                    self.keys[usize::from(key_no)] = AesKey::new(new);
                    self.versions[usize::from(key_no)] = version;
                    self.reply(s, &[])
                }
            }
            _ => {
                // SetConfiguration: option 00, PICC configuration; bit 1 turns the random ID on.
                if header != [0x00] || plain.len() != 1 {
                    return vec![0x91, 0x7E];
                }
                if plain[0] & ntag424::PICC_CONFIG_RANDOM_ID != 0 {
                    self.random_id = true;
                }
                self.reply(s, &[])
            }
        }
    }

    /// An answer in `CommMode.Full` (encrypted `data`, then the MAC), the counter moved on.
    fn reply(&mut self, mut s: ChipSession, data: &[u8]) -> Vec<u8> {
        s.cmd_ctr += 1;
        let ctr = if self.fault == Some(Fault::WrongCounter) {
            s.cmd_ctr + 1
        } else {
            s.cmd_ctr
        };
        let mut out = Vec::new();
        if !data.is_empty() {
            out = pad(data);
            let iv = message_iv(&s.keys.enc, [0x5A, 0xA5], &s.ti, ctr);
            cbc_encrypt(&s.keys.enc, &iv, &mut out);
        }
        let mut mac = message_mac(&s.keys.mac, 0x00, ctr, &s.ti, &out);
        if self.fault == Some(Fault::BadMac) {
            mac[7] ^= 0x01;
        }
        out.extend_from_slice(&mac);
        out.extend_from_slice(&[0x91, 0x00]);
        self.session = Some(s);
        out
    }
}
