//! NXP NTAG 424 DNA (and the AES "EV2" secure channel it shares with MIFARE DESFire EV2/EV3):
//! the terminal's side of `AuthenticateEV2First`, the session keys, secure messaging in
//! `CommMode.Full`, and the key diversification of NXP's AN10922. Pure: bytes in, bytes out;
//! the random challenge comes in from the caller, so every exchange is a unit test against
//! NXP's published examples (see the tests at the end, and `docs/nfc.md`).
//!
//! The crypto is RustCrypto's (`aes`, `cbc`, `cmac`); this module only arranges the bytes as
//! the datasheet (NT4H2421Gx) says. Native commands go in ISO 7816-4 wrapping:
//! `90 INS 00 00 Lc data 00`, answered `data 91 SW2`.

use aes::Aes128;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
use cmac::{Cmac, Mac};
use zeroize::Zeroize;

/// An AES-128 key. Never printed: `Debug` shows only that it is a key.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 16]);

impl AesKey {
    /// The key of a factory-fresh NTAG 424 DNA (all five keys are zero, version 00).
    pub const FACTORY: AesKey = AesKey([0; 16]);

    /// A key from its 16 bytes.
    pub fn new(bytes: [u8; 16]) -> AesKey {
        AesKey(bytes)
    }

    /// The key's bytes (for the card's side in tests, and for XOR in `ChangeKey`).
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(..)")
    }
}

impl Drop for AesKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Status word of a native command that succeeded.
pub const SW_OK: [u8; 2] = [0x91, 0x00];
/// Status word: the card waits for the next part of the exchange.
pub const SW_MORE: [u8; 2] = [0x91, 0xAF];
/// The ISO status word of a successful SELECT.
pub const SW_ISO_OK: [u8; 2] = [0x90, 0x00];

/// Native command codes used here.
pub mod ins {
    /// `AuthenticateEV2First` (first part).
    pub const AUTHENTICATE_EV2_FIRST: u8 = 0x71;
    /// The next frame of an exchange (`AuthenticateEV2First`, second part).
    pub const ADDITIONAL_FRAME: u8 = 0xAF;
    /// `GetCardUID`: the real UID, to an authenticated reader only.
    pub const GET_CARD_UID: u8 = 0x51;
    /// `GetKeyVersion`: plain before authentication.
    pub const GET_KEY_VERSION: u8 = 0x64;
    /// `ChangeKey`.
    pub const CHANGE_KEY: u8 = 0xC4;
    /// `SetConfiguration`.
    pub const SET_CONFIGURATION: u8 = 0x5C;
}

/// `ISOSelectFile` of the NTAG 424 DNA application by its DF name `D2760000850101`, no answer
/// data (`P2 = 0C`).
pub const SELECT_APPLICATION: [u8; 13] = [
    0x00, 0xA4, 0x04, 0x0C, 0x07, 0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01, 0x00,
];

/// `SetConfiguration` option 00 (PICC configuration), bit 1: the card answers anticollision
/// with a random ID; only `GetCardUID` gives the real one. It cannot be turned off again.
pub const PICC_CONFIG_RANDOM_ID: u8 = 0x02;

/// Why an exchange with the card failed. `NotGenuine` covers everything only a card without
/// the right key (or a forged answer) would cause; the others mean "present it again".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The answer was too short, or not the length the command gives.
    #[error("the card's answer was cut short or malformed ({0} bytes)")]
    Malformed(usize),
    /// The card answered a native status other than the one expected.
    #[error("the card answered {0:02X} {1:02X}")]
    Status(u8, u8),
    /// The card refused the key (`91 AE`).
    #[error("the card refused the key")]
    AuthenticationRefused,
    /// The card's proof of the key (its RndA') is wrong: it does not hold the key.
    #[error("the card's proof of the key is wrong")]
    WrongProof,
    /// An answer's MAC is wrong (a forged or replayed answer, or a wrong command counter).
    #[error("the card's answer failed its MAC check")]
    BadMac,
    /// The decrypted answer's padding is wrong.
    #[error("the card's encrypted answer is malformed")]
    BadPadding,
    /// The session's command counter would wrap (65,535 commands in one session).
    #[error("the session's command counter is exhausted")]
    CounterExhausted,
}

impl ChannelError {
    /// Whether only a card without the key (or a forger) causes this; the others are a bad
    /// read, worth a second try.
    pub fn means_not_genuine(&self) -> bool {
        matches!(
            self,
            ChannelError::AuthenticationRefused
                | ChannelError::WrongProof
                | ChannelError::BadMac
                | ChannelError::BadPadding
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Primitives (RustCrypto), arranged as NXP's documents say
// ---------------------------------------------------------------------------------------------

/// AES-CMAC (NIST SP 800-38B) of `data` under `key`.
pub fn cmac(key: &AesKey, data: &[u8]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(&key.0.into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The 8-byte MAC NXP's secure messaging sends: the CMAC's bytes at odd indices (1, 3, ... 15),
/// as the datasheet's "MACt" truncation says.
pub fn truncate_mac(full: &[u8; 16]) -> [u8; 8] {
    std::array::from_fn(|i| full[2 * i + 1])
}

/// AES-128 of one block (the IVs of secure messaging are made this way).
fn encrypt_block(key: &AesKey, block: [u8; 16]) -> [u8; 16] {
    let cipher = Aes128::new(&key.0.into());
    let mut b = block.into();
    cipher.encrypt_block(&mut b);
    b.into()
}

/// AES-128-CBC of whole blocks, in place (`data.len()` a multiple of 16).
pub fn cbc_encrypt(key: &AesKey, iv: &[u8; 16], data: &mut [u8]) {
    debug_assert_eq!(data.len() % 16, 0);
    let mut enc = cbc::Encryptor::<Aes128>::new(&key.0.into(), iv.into());
    for block in data.chunks_exact_mut(16) {
        enc.encrypt_block_mut(block.into());
    }
}

/// AES-128-CBC decryption of whole blocks, in place (`data.len()` a multiple of 16).
pub fn cbc_decrypt(key: &AesKey, iv: &[u8; 16], data: &mut [u8]) {
    debug_assert_eq!(data.len() % 16, 0);
    let mut dec = cbc::Decryptor::<Aes128>::new(&key.0.into(), iv.into());
    for block in data.chunks_exact_mut(16) {
        dec.decrypt_block_mut(block.into());
    }
}

/// ISO/IEC 9797-1 padding method 2: `80`, then zeros to a whole block (a full block of padding
/// when the data already is whole blocks), as `CommMode.Full` pads.
pub fn pad(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((data.len() / 16 + 1) * 16);
    out.extend_from_slice(data);
    out.push(0x80);
    out.resize(out.len().div_ceil(16) * 16, 0);
    out
}

/// Removes [`pad`]'s padding.
pub fn unpad(data: &[u8]) -> Result<&[u8], ChannelError> {
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(ChannelError::BadPadding)?;
    if data[end] != 0x80 || data.len() - end > 16 {
        return Err(ChannelError::BadPadding);
    }
    Ok(&data[..end])
}

/// NXP's CRC32 (`ChangeKey` of a key other than the one authenticated): the IEEE polynomial
/// with preset `FFFFFFFF` and no final inversion, least significant byte first.
pub fn crc32_nxp(data: &[u8]) -> [u8; 4] {
    (!crc32fast::hash(data)).to_le_bytes()
}

/// AN10922's AES-128 key diversification (section 2.2): `CMAC(master, 01 || input)`, padded
/// to two blocks. Inputs of 16 to 31 bytes only, where AN10922's two-block padding is what
/// standard CMAC does; shorter inputs (AN10922 pads them to 32 bytes, unlike CMAC) are refused
/// rather than computed another way.
pub fn diversify_an10922(master: &AesKey, input: &[u8]) -> Result<AesKey, DiversifyError> {
    if !(16..=31).contains(&input.len()) {
        return Err(DiversifyError(input.len()));
    }
    let mut m = Vec::with_capacity(1 + input.len());
    m.push(0x01);
    m.extend_from_slice(input);
    let key = AesKey(cmac(master, &m));
    m.zeroize();
    Ok(key)
}

/// A diversification input of a length [`diversify_an10922`] does not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a diversification input of {0} bytes (16 to 31 are taken)")]
pub struct DiversifyError(pub usize);

/// The two session keys and the session's identity, after `AuthenticateEV2First`.
pub struct SessionKeys {
    /// `SesAuthENCKey`.
    pub enc: AesKey,
    /// `SesAuthMACKey`.
    pub mac: AesKey,
}

/// The datasheet's session vectors (section 9.1.7): `SV1 = A5 5A 00 01 00 80 || RndA[15..14]
/// || (RndA[13..8] XOR RndB[15..10]) || RndB[9..0] || RndA[7..0]` (byte 15 is the first sent),
/// `SV2` the same behind `5A A5`; each session key is `CMAC(Kx, SV)`.
pub fn session_keys(key: &AesKey, rnd_a: &[u8; 16], rnd_b: &[u8; 16]) -> SessionKeys {
    let sv = |label: [u8; 2]| {
        let mut sv = [0u8; 32];
        sv[..2].copy_from_slice(&label);
        sv[2..6].copy_from_slice(&[0x00, 0x01, 0x00, 0x80]);
        sv[6..8].copy_from_slice(&rnd_a[..2]);
        for i in 0..6 {
            sv[8 + i] = rnd_a[2 + i] ^ rnd_b[i];
        }
        sv[14..24].copy_from_slice(&rnd_b[6..]);
        sv[24..].copy_from_slice(&rnd_a[8..]);
        sv
    };
    let mut sv1 = sv([0xA5, 0x5A]);
    let mut sv2 = sv([0x5A, 0xA5]);
    let keys = SessionKeys {
        enc: AesKey(cmac(key, &sv1)),
        mac: AesKey(cmac(key, &sv2)),
    };
    sv1.zeroize();
    sv2.zeroize();
    keys
}

/// A byte string rotated left by one byte (RndB' and RndA').
pub fn rotate_left(bytes: &[u8; 16]) -> [u8; 16] {
    let mut out = *bytes;
    out.rotate_left(1);
    out
}

/// A native command in ISO 7816-4 wrapping: `90 INS 00 00 [Lc data] 00`.
pub fn wrap(ins: u8, data: &[u8]) -> Vec<u8> {
    let mut apdu = vec![0x90, ins, 0x00, 0x00];
    if !data.is_empty() {
        apdu.push(u8::try_from(data.len()).expect("native commands carry at most 255 bytes"));
        apdu.extend_from_slice(data);
    }
    apdu.push(0x00);
    apdu
}

/// Splits an answer into its data and its status word.
pub fn split_answer(answer: &[u8]) -> Result<(&[u8], [u8; 2]), ChannelError> {
    let (data, sw) = answer
        .split_last_chunk::<2>()
        .ok_or(ChannelError::Malformed(answer.len()))?;
    Ok((data, *sw))
}

/// The data of an answer that must end `sw`; `91 AE` is the card refusing the key.
fn expect_status(answer: &[u8], sw: [u8; 2]) -> Result<&[u8], ChannelError> {
    let (data, got) = split_answer(answer)?;
    if got == sw {
        Ok(data)
    } else if got == [0x91, 0xAE] {
        Err(ChannelError::AuthenticationRefused)
    } else {
        Err(ChannelError::Status(got[0], got[1]))
    }
}

/// `GetKeyVersion` of key `key_no` without authentication (plain).
pub fn get_key_version(key_no: u8) -> Vec<u8> {
    wrap(ins::GET_KEY_VERSION, &[key_no])
}

/// The version in the answer to [`get_key_version`].
pub fn parse_key_version(answer: &[u8]) -> Result<u8, ChannelError> {
    match expect_status(answer, SW_OK)? {
        [version] => Ok(*version),
        other => Err(ChannelError::Malformed(other.len())),
    }
}

// ---------------------------------------------------------------------------------------------
// AuthenticateEV2First
// ---------------------------------------------------------------------------------------------

/// The terminal's side of `AuthenticateEV2First` with key `key_no`: [`AuthFirst::start`]
/// gives the first command; [`AuthFirst::challenge`] takes the card's `E(Kx, RndB)` and gives
/// the second; [`AuthFirst::finish`] takes the card's proof and gives the [`Session`].
pub struct AuthFirst {
    key: AesKey,
    rnd_a: [u8; 16],
    rnd_b: Option<[u8; 16]>,
}

impl Drop for AuthFirst {
    fn drop(&mut self) {
        self.rnd_a.zeroize();
        if let Some(b) = &mut self.rnd_b {
            b.zeroize();
        }
    }
}

impl AuthFirst {
    /// Starts with `key` (the card's key `key_no`) and the terminal's random `rnd_a`; returns
    /// the first command (`90 71 00 00 02 KeyNo 00 00`: no PCD capabilities).
    pub fn start(key_no: u8, key: AesKey, rnd_a: [u8; 16]) -> (AuthFirst, Vec<u8>) {
        let apdu = wrap(ins::AUTHENTICATE_EV2_FIRST, &[key_no, 0x00]);
        (
            AuthFirst {
                key,
                rnd_a,
                rnd_b: None,
            },
            apdu,
        )
    }

    /// Whether the card's challenge was answered: its next answer finishes.
    pub fn challenged(&self) -> bool {
        self.rnd_b.is_some()
    }

    /// The card's `E(Kx, RndB) 91 AF`: returns `90 AF 00 00 20 E(Kx, RndA || RndB') 00`.
    pub fn challenge(&mut self, answer: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let data = expect_status(answer, SW_MORE)?;
        let mut rnd_b: [u8; 16] = data
            .try_into()
            .map_err(|_| ChannelError::Malformed(data.len()))?;
        cbc_decrypt(&self.key, &[0; 16], &mut rnd_b);
        let mut both = [0u8; 32];
        both[..16].copy_from_slice(&self.rnd_a);
        both[16..].copy_from_slice(&rotate_left(&rnd_b));
        cbc_encrypt(&self.key, &[0; 16], &mut both);
        self.rnd_b = Some(rnd_b);
        Ok(wrap(ins::ADDITIONAL_FRAME, &both))
    }

    /// The card's `E(Kx, TI || RndA' || PDcap2 || PCDcap2) 91 00`: checks RndA' (the card's
    /// proof that it holds the key) and derives the session.
    pub fn finish(self, answer: &[u8]) -> Result<Session, ChannelError> {
        let Some(rnd_b) = self.rnd_b else {
            return Err(ChannelError::Malformed(0));
        };
        let data = expect_status(answer, SW_OK)?;
        let mut plain: [u8; 32] = data
            .try_into()
            .map_err(|_| ChannelError::Malformed(data.len()))?;
        cbc_decrypt(&self.key, &[0; 16], &mut plain);
        let proof_ok = bool::from(subtle::ConstantTimeEq::ct_eq(
            &plain[4..20],
            &rotate_left(&self.rnd_a)[..],
        ));
        let ti = [plain[0], plain[1], plain[2], plain[3]];
        plain.zeroize();
        if !proof_ok {
            return Err(ChannelError::WrongProof);
        }
        let keys = session_keys(&self.key, &self.rnd_a, &rnd_b);
        Ok(Session {
            keys,
            ti,
            cmd_ctr: 0,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Secure messaging
// ---------------------------------------------------------------------------------------------

/// An authenticated session: its keys, the transaction identifier `TI` the card chose, and the
/// command counter (0 after authentication, one more after each command the card answered).
pub struct Session {
    keys: SessionKeys,
    ti: [u8; 4],
    cmd_ctr: u16,
}

/// The IV of a command (`A5 5A`) or an answer (`5A A5`): `E(SesAuthENCKey, label || TI ||
/// CmdCtr (LSB first) || 00 * 8)`.
pub fn message_iv(enc: &AesKey, label: [u8; 2], ti: &[u8; 4], cmd_ctr: u16) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[..2].copy_from_slice(&label);
    block[2..6].copy_from_slice(ti);
    block[6..8].copy_from_slice(&cmd_ctr.to_le_bytes());
    encrypt_block(enc, block)
}

/// The truncated MAC of a command (`Cmd || CmdCtr || TI || header || data`) or an answer
/// (`RC || CmdCtr || TI || data`).
pub fn message_mac(mac: &AesKey, code: u8, cmd_ctr: u16, ti: &[u8; 4], body: &[u8]) -> [u8; 8] {
    let mut input = Vec::with_capacity(7 + body.len());
    input.push(code);
    input.extend_from_slice(&cmd_ctr.to_le_bytes());
    input.extend_from_slice(ti);
    input.extend_from_slice(body);
    truncate_mac(&cmac(mac, &input))
}

impl Session {
    /// A session from its parts (the card's side in tests builds its own).
    pub fn from_parts(keys: SessionKeys, ti: [u8; 4], cmd_ctr: u16) -> Session {
        Session { keys, ti, cmd_ctr }
    }

    /// The transaction identifier.
    pub fn ti(&self) -> [u8; 4] {
        self.ti
    }

    /// The command counter the next command carries.
    pub fn cmd_ctr(&self) -> u16 {
        self.cmd_ctr
    }

    /// The session keys.
    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// A command in `CommMode.Full`: `header` in clear, `data` padded and encrypted (no data,
    /// no cryptogram), and the MAC over both.
    pub fn command_full(&self, ins: u8, header: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = header.to_vec();
        if !data.is_empty() {
            let mut cryptogram = pad(data);
            let iv = message_iv(&self.keys.enc, [0xA5, 0x5A], &self.ti, self.cmd_ctr);
            cbc_encrypt(&self.keys.enc, &iv, &mut cryptogram);
            body.extend_from_slice(&cryptogram);
            cryptogram.zeroize();
        }
        let mac = message_mac(&self.keys.mac, ins, self.cmd_ctr, &self.ti, &body);
        body.extend_from_slice(&mac);
        wrap(ins, &body)
    }

    /// The card's answer to a `CommMode.Full` command: checks the status and the MAC (with
    /// the counter the card should now have), counts the command, and decrypts the data.
    pub fn answer_full(&mut self, answer: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let (cryptogram, next) = self.answer_mac(answer)?;
        if cryptogram.is_empty() {
            self.cmd_ctr = next;
            return Ok(Vec::new());
        }
        if cryptogram.len() % 16 != 0 {
            return Err(ChannelError::Malformed(cryptogram.len()));
        }
        let iv = message_iv(&self.keys.enc, [0x5A, 0xA5], &self.ti, next);
        let mut plain = cryptogram.to_vec();
        cbc_decrypt(&self.keys.enc, &iv, &mut plain);
        let data = unpad(&plain).map(<[u8]>::to_vec);
        plain.zeroize();
        self.cmd_ctr = next;
        data
    }

    /// The answer's data and the counter after this command, once its MAC checked out.
    fn answer_mac<'a>(&self, answer: &'a [u8]) -> Result<(&'a [u8], u16), ChannelError> {
        let data = expect_status(answer, SW_OK)?;
        let (body, mac) = data
            .split_last_chunk::<8>()
            .ok_or(ChannelError::Malformed(data.len()))?;
        let next = self
            .cmd_ctr
            .checked_add(1)
            .ok_or(ChannelError::CounterExhausted)?;
        let expected = message_mac(&self.keys.mac, 0x00, next, &self.ti, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..])) {
            return Err(ChannelError::BadMac);
        }
        Ok((body, next))
    }

    /// `GetCardUID` (`CommMode.Full`).
    pub fn get_card_uid(&self) -> Vec<u8> {
        self.command_full(ins::GET_CARD_UID, &[], &[])
    }

    /// `ChangeKey` of `key_no` to `new` at `version`. For the key this session authenticated
    /// with (`key_no == auth_key_no`), the data is `NewKey || KeyVer`; for another key,
    /// `(NewKey XOR OldKey) || KeyVer || CRC32(NewKey)`.
    pub fn change_key(
        &self,
        key_no: u8,
        auth_key_no: u8,
        old: &AesKey,
        new: &AesKey,
        version: u8,
    ) -> Vec<u8> {
        let mut data = Vec::with_capacity(21);
        if key_no == auth_key_no {
            data.extend_from_slice(&new.0);
            data.push(version);
        } else {
            data.extend(new.0.iter().zip(old.0.iter()).map(|(n, o)| n ^ o));
            data.push(version);
            data.extend_from_slice(&crc32_nxp(&new.0));
        }
        let apdu = self.command_full(ins::CHANGE_KEY, &[key_no], &data);
        data.zeroize();
        apdu
    }

    /// The answer to `ChangeKey` of the key the session authenticated with: `91 00` and
    /// nothing else (the session ends with that key).
    pub fn answer_change_own_key(answer: &[u8]) -> Result<(), ChannelError> {
        match expect_status(answer, SW_OK)? {
            [] => Ok(()),
            other => Err(ChannelError::Malformed(other.len())),
        }
    }

    /// `SetConfiguration` (`CommMode.Full`) of PICC option `00` with `value`.
    pub fn set_picc_configuration(&self, value: u8) -> Vec<u8> {
        self.command_full(ins::SET_CONFIGURATION, &[0x00], &[value])
    }
}

/// NXP's published examples, byte for byte. AN10922 ("Symmetric key diversifications") and
/// AN12196 ("NTAG 424 DNA and NTAG 424 DNA TagTamper features and hints") are NXP's
/// application notes; the AN12196 tables are numbered as in its revision 2.0 (revision 1.8
/// numbers one higher from table 18 on). Open-source projects quote the same values in their
/// tests: libfreefare (`test/test_mifare_key_deriver_an10922.c`, AN10922 §2.2.1),
/// icedevml/nfc-ev2-crypto (`test_ev2.py`: tables 14 and 28), atknatk/tappa
/// (`internal/sun/ev2_kat_test.go`, `changekey_test.go`: tables 14, 25, 26, 28).
#[cfg(test)]
mod nxp_examples {
    use super::*;

    fn h(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    fn h16(text: &str) -> [u8; 16] {
        h(text).try_into().unwrap()
    }

    fn key(text: &str) -> AesKey {
        AesKey::new(h16(text))
    }

    /// AN10922 §2.2.1, "Example – AES-128 key diversification" (table 2): master key,
    /// UID 04782E21801D80, AID 3042F5, system identifier "NXP Abu".
    #[test]
    fn an10922_aes128_diversification() {
        let master = key("00112233445566778899AABBCCDDEEFF");
        let input = h("04782E21801D803042F54E585020416275");
        let diversified = diversify_an10922(&master, &input).unwrap();
        assert_eq!(
            diversified.bytes(),
            &h16("A8DD63A3B89D54B37CA802473FDA9175")
        );
        // Inputs where AN10922's padding to two blocks would differ from CMAC's are refused.
        assert_eq!(
            diversify_an10922(&master, &[0; 15]).unwrap_err(),
            DiversifyError(15)
        );
        assert_eq!(
            diversify_an10922(&master, &[0; 32]).unwrap_err(),
            DiversifyError(32)
        );
        assert!(diversify_an10922(&master, &[0; 31]).is_ok());
    }

    /// AN12196 table 14: `AuthenticateEV2First` with key 00 (the factory key), RndA
    /// 13C5DB8A..., the card's RndB B9E2FC78..., TI 9D00C4DF and the session keys.
    #[test]
    fn an12196_authenticate_ev2_first() {
        let rnd_a = h16("13C5DB8A5930439FC3DEF9A4C675360F");
        let (mut auth, first) = AuthFirst::start(0, AesKey::FACTORY, rnd_a);
        assert_eq!(first, h("9071000002000000"));
        let second = auth
            .challenge(&h("A04C124213C186F22399D33AC2A3021591AF"))
            .unwrap();
        assert_eq!(
            second,
            h("90AF00002035C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D00")
        );
        let session = auth
            .finish(&h(
                "3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206639100",
            ))
            .unwrap();
        assert_eq!(session.ti(), [0x9D, 0x00, 0xC4, 0xDF]);
        assert_eq!(session.cmd_ctr(), 0);
        assert_eq!(
            session.keys().enc.bytes(),
            &h16("1309C877509E5A215007FF0ED19CA564")
        );
        assert_eq!(
            session.keys().mac.bytes(),
            &h16("4C6626F5E72EA694202139295C7A7FC7")
        );
    }

    /// AN12196 table 14 again, with the card's proof changed: RndA' does not match.
    #[test]
    fn a_wrong_proof_of_the_key_is_refused() {
        let rnd_a = h16("13C5DB8A5930439FC3DEF9A4C675360F");
        let (mut auth, _) = AuthFirst::start(0, AesKey::FACTORY, rnd_a);
        auth.challenge(&h("A04C124213C186F22399D33AC2A3021591AF"))
            .unwrap();
        let mut answer = h("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206639100");
        answer[10] ^= 1;
        assert_eq!(auth.finish(&answer).err(), Some(ChannelError::WrongProof));
        let (mut auth, _) = AuthFirst::start(0, AesKey::FACTORY, rnd_a);
        assert_eq!(
            auth.challenge(&h("91AE")).err(),
            Some(ChannelError::AuthenticationRefused)
        );
    }

    /// AN12196 table 19 (key 03, revision 2.0; 20 in 1.8): the session keys.
    #[test]
    fn an12196_session_keys_of_key_3() {
        let keys = session_keys(
            &AesKey::FACTORY,
            &h16("B98F4C50CF1C2E084FD150E33992B048"),
            &h16("91517975190DCEA6104948EFA3085C1B"),
        );
        assert_eq!(keys.enc.bytes(), &h16("7A93D6571E4B180FCA6AC90C9A7488D4"));
        assert_eq!(keys.mac.bytes(), &h16("FC4AF159B62E549B5812394CAB1918CC"));
    }

    /// AN12196 table 28 (revision 2.0; 29 in 1.8): `GetCardUID` in `CommMode.Full`, command
    /// counter 0, TI DF055522; the answer decrypts to UID 04958CAA5C5E80.
    #[test]
    fn an12196_get_card_uid() {
        let keys = SessionKeys {
            enc: key("2B4D963C014DC36F24F69A50A394F875"),
            mac: key("379D32130CE61705DD5FD8C36B95D764"),
        };
        let mut session = Session::from_parts(keys, [0xDF, 0x05, 0x55, 0x22], 0);
        assert_eq!(session.get_card_uid(), h("90510000088E2C155ADDA99BE300"));
        let answer = h("70756055688505B52A5E26E59E329CD6595F672298EA41B79100");
        assert_eq!(
            message_iv(&session.keys().enc, [0x5A, 0xA5], &session.ti(), 1),
            h16("7F6BB0B278EA054CBD238C5D9E9E342B")
        );
        let uid = session.answer_full(&answer).unwrap();
        assert_eq!(uid, h("04958CAA5C5E80"));
        assert_eq!(session.cmd_ctr(), 1);
        // The same answer again (a replay) no longer checks out: the counter moved on.
        assert_eq!(session.answer_full(&answer), Err(ChannelError::BadMac));
        assert_eq!(session.cmd_ctr(), 1);
    }

    /// AN12196 table 28's answer with one bit of the cryptogram, or of the MAC, changed.
    #[test]
    fn a_broken_mac_is_refused() {
        for index in [0, 20] {
            let keys = SessionKeys {
                enc: key("2B4D963C014DC36F24F69A50A394F875"),
                mac: key("379D32130CE61705DD5FD8C36B95D764"),
            };
            let mut session = Session::from_parts(keys, [0xDF, 0x05, 0x55, 0x22], 0);
            let mut answer = h("70756055688505B52A5E26E59E329CD6595F672298EA41B79100");
            answer[index] ^= 0x80;
            assert_eq!(session.answer_full(&answer), Err(ChannelError::BadMac));
            assert_eq!(session.cmd_ctr(), 0, "a refused answer counts nothing");
        }
    }

    /// AN12196 table 25 (revision 2.0; 26 in 1.8): `ChangeKey` of key 02 while authenticated
    /// with key 00, command counter 2, TI 7614281A: XOR with the old key, CRC32 of the new.
    #[test]
    fn an12196_change_another_key() {
        let keys = SessionKeys {
            enc: key("4CF3CB41A22583A61E89B158D252FC53"),
            mac: key("5529860B2FC5FB6154B7F28361D30BF9"),
        };
        let new = key("F3847D627727ED3BC9C4CC050489B966");
        assert_eq!(crc32_nxp(new.bytes()), [0x78, 0x9D, 0xFA, 0xDC]);
        let mut session = Session::from_parts(keys, [0x76, 0x14, 0x28, 0x1A], 2);
        assert_eq!(
            session.change_key(2, 0, &AesKey::FACTORY, &new, 1),
            h(
                "90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC75D0CE20BCD1D06E600"
            )
        );
        assert_eq!(
            session.answer_full(&h("203BB55D1089D5879100")),
            Ok(Vec::new())
        );
        assert_eq!(session.cmd_ctr(), 3);
    }

    /// AN12196 table 26 (revision 2.0; 27 in 1.8): `ChangeKey` of key 00, the key the session
    /// authenticated with, command counter 3.
    #[test]
    fn an12196_change_the_authenticated_key() {
        let keys = SessionKeys {
            enc: key("4CF3CB41A22583A61E89B158D252FC53"),
            mac: key("5529860B2FC5FB6154B7F28361D30BF9"),
        };
        let session = Session::from_parts(keys, [0x76, 0x14, 0x28, 0x1A], 3);
        let new = key("5004BF991F408672B1EF00F08F9E8647");
        assert_eq!(
            session.change_key(0, 0, &AesKey::FACTORY, &new, 1),
            h(
                "90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FDA6610234BDED643200"
            )
        );
        assert_eq!(Session::answer_change_own_key(&h("9100")), Ok(()));
        assert_eq!(
            Session::answer_change_own_key(&h("911E")),
            Err(ChannelError::Status(0x91, 0x1E))
        );
    }

    #[test]
    fn padding_and_truncation() {
        assert_eq!(pad(&[]), [&[0x80][..], &[0; 15]].concat());
        assert_eq!(pad(&[1; 16]).len(), 32);
        assert_eq!(unpad(&pad(&[1, 2, 0])).unwrap(), [1, 2, 0]);
        assert_eq!(unpad(&[0; 16]), Err(ChannelError::BadPadding));
        assert_eq!(unpad(&[1; 16]), Err(ChannelError::BadPadding));
        let mut full = [0u8; 16];
        for (i, b) in full.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        assert_eq!(truncate_mac(&full), [1, 3, 5, 7, 9, 11, 13, 15]);
        assert_eq!(
            format!("{:?}", key("00112233445566778899AABBCCDDEEFF")),
            "AesKey(..)"
        );
    }
}
