//! The reader layer's pure decisions: what a card's answer means, which reader to use,
//! whether a presentation is a new tap, and the feedback commands. No IO, no clock: time
//! comes in as milliseconds from the caller, so every debounce case is a unit test.

use super::card_auth::{self, AuthError, Genuine};
use crate::domain::CardUid;
use std::collections::HashMap;

/// PC/SC GET DATA pseudo-APDU for the card's UID (docs/nfc.md).
pub const GET_DATA_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];
/// ACR122U: turn the reader's own beep on card detection off.
pub const BUZZER_ON_DETECT_OFF: [u8; 5] = [0xFF, 0x00, 0x52, 0x00, 0x00];

/// Why a presentation did not give a usable card UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The card answered GET DATA with a status word other than `90 00`.
    #[error("the card answered {0:02X} {1:02X} instead of 90 00: read it again")]
    StatusWord(u8, u8),
    /// The answer was cut short (the card left the field mid-answer).
    #[error("the answer was cut short: the card moved away; present it again")]
    Truncated,
    /// A UID of a length no ISO 14443-A card has.
    #[error("a UID of {0} bytes (cards have 4, 7 or 10): not a payment card")]
    UidLength(usize),
    /// A random UID (4 bytes starting `08`): it changes at every tap, so it cannot hold an
    /// account.
    #[error(
        "a random UID ({0}): this card or phone shows a new number at every tap and cannot \
         pay; use a festival card"
    )]
    RandomUid(String),
    /// The card left before it could be read, or the reader failed.
    #[error("the card could not be read: {0}")]
    Reader(String),
    /// AES mode: the card did not prove its key (a clone, a blank or foreign card, a card
    /// without AES).
    #[error("{error}")]
    NotGenuine {
        /// The UID it showed (none for a random ID).
        shown_uid: Option<String>,
        /// Why.
        error: AuthError,
    },
}

impl ReadError {
    /// The short code events and the scan log use.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::StatusWord(..) => "status_word",
            ReadError::Truncated => "truncated",
            ReadError::UidLength(_) => "uid_length",
            ReadError::RandomUid(_) => "random_uid",
            ReadError::Reader(_) => "reader_error",
            ReadError::NotGenuine { error, .. } => error.code(),
        }
    }

    /// The UID, for a failure that still identified the card (the scan log wants it).
    pub fn uid(&self) -> Option<CardUid> {
        match self {
            ReadError::RandomUid(uid) => CardUid::parse(uid).ok(),
            ReadError::NotGenuine {
                shown_uid: Some(uid),
                ..
            } => CardUid::parse(uid).ok(),
            _ => None,
        }
    }
}

/// The card's UID from its answer to [`GET_DATA_UID`]: UID bytes then `90 00`.
pub fn parse_uid(answer: &[u8]) -> Result<CardUid, ReadError> {
    let uid = shown_uid(answer)?;
    let text = hex::encode_upper(uid);
    if card_auth::is_random_id(uid) {
        return Err(ReadError::RandomUid(text));
    }
    CardUid::parse(&text).map_err(|e| ReadError::Reader(e.to_string()))
}

/// The UID bytes a card showed to [`GET_DATA_UID`], random IDs included (AES mode asks such
/// a card for its real UID).
pub fn shown_uid(answer: &[u8]) -> Result<&[u8], ReadError> {
    let Some((uid, sw)) = answer.split_last_chunk::<2>() else {
        return Err(ReadError::Truncated);
    };
    if *sw != [0x90, 0x00] {
        return Err(ReadError::StatusWord(sw[0], sw[1]));
    }
    if !matches!(uid.len(), 4 | 7 | 10) {
        return Err(ReadError::UidLength(uid.len()));
    }
    Ok(uid)
}

/// A card as the reader layer reports it: its UID, and the key version it proved (AES mode;
/// `None`: identified by its UID alone).
pub type ReadCard = (CardUid, Option<u8>);

/// What an AES-mode authentication of the card that showed `shown` means for the tap:
/// a genuine card is its real UID and key version; a card without AES is its UID alone when
/// `accept_uid_cards` (the session still refuses one the ledger knows as keyed); anything else
/// is not genuine, or a read to try again.
pub fn auth_outcome(
    shown: &[u8],
    result: Result<Genuine, AuthError>,
    accept_uid_cards: bool,
) -> Result<ReadCard, ReadError> {
    let shown_text = (!card_auth::is_random_id(shown)).then(|| hex::encode_upper(shown));
    match result {
        Ok(genuine) => CardUid::from_bytes(&genuine.uid)
            .map(|uid| (uid, Some(genuine.key_version)))
            .map_err(|e| ReadError::Reader(e.to_string())),
        Err(AuthError::NotAesCard) if accept_uid_cards => match shown_text {
            Some(_) => CardUid::from_bytes(shown)
                .map(|uid| (uid, None))
                .map_err(|e| ReadError::Reader(e.to_string())),
            None => Err(ReadError::RandomUid(hex::encode_upper(shown))),
        },
        Err(AuthError::Unreadable(e)) => Err(ReadError::Reader(format!(
            "{e}; present the card again and hold it still"
        ))),
        Err(error) => Err(ReadError::NotGenuine {
            shown_uid: shown_text,
            error,
        }),
    }
}

/// The card's type from its ATR, for information only (vendors disagree on the name bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardType {
    /// MIFARE Classic 1K.
    MifareClassic1k,
    /// MIFARE Classic 4K.
    MifareClassic4k,
    /// MIFARE Ultralight (and NTAG, which report the same).
    Ultralight,
    /// Another storage card the PC/SC part 3 ATR names.
    OtherMemoryCard,
    /// An ISO 14443-4 card (DESFire, a phone, ...).
    Iso14443_4,
    /// An ATR this code does not know.
    Unknown,
}

impl CardType {
    /// As logs and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CardType::MifareClassic1k => "mifare_classic_1k",
            CardType::MifareClassic4k => "mifare_classic_4k",
            CardType::Ultralight => "ultralight",
            CardType::OtherMemoryCard => "memory_card",
            CardType::Iso14443_4 => "iso14443_4",
            CardType::Unknown => "unknown",
        }
    }
}

/// Reads the card type from an ATR: `3B 8F 80 01 80 4F 0C A0 00 00 03 06 SS NN NN ...` for
/// memory cards (PC/SC part 3), `3B 8N 80 01 ...` for ISO 14443-4 cards.
pub fn card_type(atr: &[u8]) -> CardType {
    const MEMORY_PREFIX: [u8; 12] = [
        0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06,
    ];
    if atr.len() >= 15 && atr[..12] == MEMORY_PREFIX {
        return match [atr[13], atr[14]] {
            [0x00, 0x01] => CardType::MifareClassic1k,
            [0x00, 0x02] => CardType::MifareClassic4k,
            [0x00, 0x03] => CardType::Ultralight,
            _ => CardType::OtherMemoryCard,
        };
    }
    if atr.len() >= 6 && atr[4..6] == MEMORY_PREFIX[4..6] {
        // A storage card's ATR cut short: not enough to say which.
        return CardType::Unknown;
    }
    if atr.len() >= 4 && atr[0] == 0x3B && atr[1] & 0xF0 == 0x80 && atr[2..4] == [0x80, 0x01] {
        return CardType::Iso14443_4;
    }
    CardType::Unknown
}

/// How a decision sounds and looks on an ACR122U-compatible reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Green, short beep.
    Approved,
    /// Red, long beep.
    Declined,
    /// Red, three short beeps: the card failed its authentication (not genuine).
    NotGenuine,
}

impl Feedback {
    /// The ACR122U "bi-color LED and buzzer control" pseudo-APDU
    /// (`FF 00 40 P2 04 T1 T2 reps link`, T1 and T2 in units of 100 ms): the LED blinks once
    /// for T1 with the buzzer on, then goes back to off.
    pub fn apdu(self) -> [u8; 9] {
        // P2 bits: 0 final red, 1 final green, 2 red mask, 3 green mask, 4 initial red blink,
        // 5 initial green blink, 6 red blink mask, 7 green blink mask.
        let (p2, t1) = match self {
            // Green blinks (mask, initial on, update), ends off: 200 ms with the beep.
            Feedback::Approved => (0b1010_1000, 2),
            // Red blinks, ends off: 800 ms with the beep.
            Feedback::Declined => (0b0101_0100, 8),
            // Red, three times 200 ms on and 200 ms off, a beep each time.
            Feedback::NotGenuine => {
                return [0xFF, 0x00, 0x40, 0b0101_0100, 0x04, 0x02, 0x02, 0x03, 0x01];
            }
        };
        [0xFF, 0x00, 0x40, p2, 0x04, t1, 0x01, 0x01, 0x01]
    }
}

/// Reader names that say "contactless" (ACS: "PICC"; others: "Contactless", "CL").
fn looks_contactless(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "picc",
        "contactless",
        " cl ",
        "acr122",
        "nfc",
        "virtual pcd",
    ]
    .iter()
    .any(|hint| lower.contains(hint))
}

/// The reader to use among `names` (as pcscd lists them): the first whose name contains
/// `filter`; with an empty filter, the first that looks contactless, else the first.
pub fn choose_reader<'a>(names: &'a [String], filter: &str) -> Option<&'a str> {
    if !filter.is_empty() {
        return names
            .iter()
            .find(|n| n.contains(filter))
            .map(String::as_str);
    }
    names
        .iter()
        .find(|n| looks_contactless(n))
        .or_else(|| names.first())
        .map(String::as_str)
}

/// Turns presentations into taps: a card left on the reader is one tap (the adapter reports a
/// presentation only when the reader goes from empty to a card, or pcscd's event counter
/// shows a remove-and-reinsert); a card that flickers in and out at the edge of the field,
/// seen again within `window_ms` of leaving, is the same tap.
#[derive(Debug, Clone)]
pub struct Debouncer {
    window_ms: u64,
    /// Per reader: the last card read, and when it left (`None` while it is on the reader).
    last: HashMap<String, (CardUid, Option<u64>)>,
}

/// Most readers a debouncer tracks (a terminal has one or two).
const READERS_TRACKED_MAX: usize = 16;

impl Debouncer {
    /// A debouncer that merges re-presentations within `window_ms` of a removal.
    pub fn new(window_ms: u64) -> Debouncer {
        Debouncer {
            window_ms,
            last: HashMap::new(),
        }
    }

    /// A card was read on `reader` at `now_ms`: true if this is a new tap.
    pub fn presented(&mut self, reader: &str, uid: &CardUid, now_ms: u64) -> bool {
        let repeat = match self.last.get(reader) {
            Some((last, left)) if last == uid => match left {
                // Still on the reader (no removal seen): the same presentation.
                None => true,
                Some(left_ms) => now_ms.saturating_sub(*left_ms) < self.window_ms,
            },
            _ => false,
        };
        if self.last.len() >= READERS_TRACKED_MAX && !self.last.contains_key(reader) {
            self.last.clear();
        }
        self.last.insert(reader.to_owned(), (uid.clone(), None));
        !repeat
    }

    /// The reader became empty at `now_ms`.
    pub fn removed(&mut self, reader: &str, now_ms: u64) {
        if let Some((_, left)) = self.last.get_mut(reader)
            && left.is_none()
        {
            *left = Some(now_ms);
        }
    }

    /// A reader disappeared: forget it.
    pub fn forget(&mut self, reader: &str) {
        self.last.remove(reader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(text: &str) -> CardUid {
        CardUid::parse(text).unwrap()
    }

    #[test]
    fn get_data_answers() {
        let ok = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x90, 0x00];
        assert_eq!(parse_uid(&ok).unwrap(), uid("04A1B2C3D4E5F6"));
        assert_eq!(
            parse_uid(&[0xDE, 0xAD, 0xBE, 0xEF, 0x90, 0x00]).unwrap(),
            uid("DEADBEEF")
        );
        let ten = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x90, 0x00];
        assert_eq!(parse_uid(&ten).unwrap(), uid("0102030405060708090A"));
        assert_eq!(
            parse_uid(&[0x63, 0x00]),
            Err(ReadError::StatusWord(0x63, 0))
        );
        assert_eq!(
            parse_uid(&[1, 2, 3, 4, 0x6A, 0x81]),
            Err(ReadError::StatusWord(0x6A, 0x81))
        );
        assert_eq!(parse_uid(&[]), Err(ReadError::Truncated));
        assert_eq!(parse_uid(&[0x90]), Err(ReadError::Truncated));
        assert_eq!(parse_uid(&[0x90, 0x00]), Err(ReadError::UidLength(0)));
        assert_eq!(
            parse_uid(&[1, 2, 3, 4, 5, 0x90, 0x00]),
            Err(ReadError::UidLength(5))
        );
        let random = parse_uid(&[0x08, 0x12, 0x34, 0x56, 0x90, 0x00]).unwrap_err();
        assert_eq!(random.code(), "random_uid");
        assert_eq!(random.uid(), Some(uid("08123456")));
        assert!(random.to_string().contains("new number at every tap"));
        // 08 only marks a random UID on 4-byte UIDs.
        assert!(parse_uid(&[0x08, 1, 2, 3, 4, 5, 6, 0x90, 0x00]).is_ok());
    }

    #[test]
    fn card_types_from_atrs() {
        let memory = |nn: [u8; 2]| {
            let mut atr = vec![
                0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03,
            ];
            atr.extend(nn);
            atr.extend([0, 0, 0, 0, 0x6A]);
            atr
        };
        assert_eq!(card_type(&memory([0, 1])), CardType::MifareClassic1k);
        assert_eq!(card_type(&memory([0, 2])), CardType::MifareClassic4k);
        assert_eq!(card_type(&memory([0, 3])), CardType::Ultralight);
        assert_eq!(card_type(&memory([0xF0, 0x04])), CardType::OtherMemoryCard);
        assert_eq!(
            card_type(&[0x3B, 0x81, 0x80, 0x01, 0x80, 0x80]),
            CardType::Iso14443_4
        );
        assert_eq!(card_type(&[0x3B, 0x02, 0x14, 0x50]), CardType::Unknown);
        assert_eq!(card_type(&[]), CardType::Unknown);
        assert_eq!(card_type(&memory([0, 1])[..13]), CardType::Unknown);
    }

    #[test]
    fn feedback_apdus_follow_the_acr122u_format() {
        assert_eq!(
            Feedback::Approved.apdu(),
            [0xFF, 0x00, 0x40, 0xA8, 0x04, 0x02, 0x01, 0x01, 0x01]
        );
        assert_eq!(
            Feedback::Declined.apdu(),
            [0xFF, 0x00, 0x40, 0x54, 0x04, 0x08, 0x01, 0x01, 0x01]
        );
        assert_eq!(
            Feedback::NotGenuine.apdu(),
            [0xFF, 0x00, 0x40, 0x54, 0x04, 0x02, 0x02, 0x03, 0x01]
        );
    }

    #[test]
    fn reader_choice() {
        let names: Vec<String> = [
            "Gemalto PC Twin Reader 00 00",
            "ACS ACR122U PICC Interface 01 00",
            "ACS ACR122U PICC Interface 02 00",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            choose_reader(&names, ""),
            Some("ACS ACR122U PICC Interface 01 00")
        );
        assert_eq!(
            choose_reader(&names, "02 00"),
            Some("ACS ACR122U PICC Interface 02 00")
        );
        assert_eq!(choose_reader(&names, "Twin"), Some(names[0].as_str()));
        assert_eq!(choose_reader(&names, "nothing"), None);
        assert_eq!(choose_reader(&names[..1], ""), Some(names[0].as_str()));
        assert_eq!(choose_reader(&[], ""), None);
    }

    #[test]
    fn a_card_left_on_the_reader_is_one_tap_and_a_real_reinsert_is_another() {
        let mut d = Debouncer::new(500);
        let card = uid("04A1B2C3");
        assert!(d.presented("r", &card, 0));
        // Read again while it never left (the adapter re-reading after an error): same tap.
        assert!(!d.presented("r", &card, 100));
        // It leaves, and comes back 200 ms later: the edge of the field, same tap.
        d.removed("r", 1000);
        assert!(!d.presented("r", &card, 1200));
        // It leaves for good, and is presented again a second later: a new tap.
        d.removed("r", 2000);
        d.removed("r", 2100); // a second removal report does not move the time
        assert!(d.presented("r", &card, 2600));
        // Another card right after: a new tap, whatever the timing.
        d.removed("r", 3000);
        assert!(d.presented("r", &uid("04FFFFFF"), 3001));
        // The same card on another reader: a new tap.
        assert!(d.presented("other", &uid("04FFFFFF"), 3002));
        // A reinsert between two looks (event counter) well after the removal window.
        d.removed("r", 3500); // a reinsert between two looks: removed when last seen
        assert!(!d.presented("r", &uid("04FFFFFF"), 3900));
        d.removed("r", 5000);
        assert!(d.presented("r", &uid("04FFFFFF"), 5600));
        d.forget("r");
        assert!(d.presented("r", &uid("04FFFFFF"), 5601));
    }
}
