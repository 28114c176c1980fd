//! What a terminal asks of an NTAG 424 DNA card, as state machines fed the card's answers:
//! [`TapAuth`] proves at every tap that the card holds the key diversified for it, and
//! [`IssueFlow`] personalises a factory-fresh card. Like the tap flow, they take inputs (the
//! master keys, the terminal's random challenges, the card's answers) and return the next
//! command or the outcome; the PC/SC adapter only carries the bytes.
//!
//! The card's keys (docs/nfc.md, "Cards that cannot be cloned"):
//! - key 0, the application master key, the one every tap authenticates with: diversified from
//!   the festival's master key and the card's UID (AN10922);
//! - key 2, the festival's UID key: diversified without a UID, so that a terminal can
//!   authenticate a card that answers with a random ID, ask it for its real UID, and then
//!   prove key 0;
//! - keys 1, 3 and 4 (file and SUN keys, unused by payments): diversified per card like key
//!   0 when `[cards] issue_other_keys` is on, so that nobody can rewrite the card with the
//!   factory key.
//!
//! Every key carries the version of the master key it came from; the card answers the
//! version without authentication, and the terminal picks that master key.

use super::ntag424::{
    self, AesKey, AuthFirst, ChannelError, PICC_CONFIG_RANDOM_ID, SELECT_APPLICATION, SW_ISO_OK,
    Session,
};
use std::collections::BTreeMap;

/// The application identifier in AN10922's diversification input (`CSL`).
pub const DIVERSIFICATION_AID: [u8; 3] = [0x43, 0x53, 0x4C];
/// The system identifier of per-card keys, followed by the key number.
const CARD_KEY_SYSTEM: &[u8] = b"cashless";
/// The system identifier of the festival's UID key (no UID in its input).
const UID_KEY_SYSTEM: &[u8] = b"cashless-uid-key";
/// The key every tap authenticates with.
pub const APP_KEY: u8 = 0;
/// The festival's UID key (random-ID cards).
pub const UID_KEY: u8 = 2;
/// The keys an NTAG 424 DNA application has.
pub const KEY_COUNT: u8 = 5;
/// Most master key versions a terminal holds.
pub const MASTER_KEYS_MAX: usize = 32;

/// The festival's master keys by version (1 to 255; 0 is the factory's).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MasterKeys {
    keys: BTreeMap<u8, AesKey>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MasterKeys {
    /// Master keys from `(version, key)` pairs; version 0 and duplicates are the caller's to
    /// refuse (the config loader does, naming the line).
    pub fn new(keys: impl IntoIterator<Item = (u8, AesKey)>) -> MasterKeys {
        MasterKeys {
            keys: keys.into_iter().collect(),
        }
    }

    /// The key of `version`.
    pub fn get(&self, version: u8) -> Option<&AesKey> {
        self.keys.get(&version)
    }

    /// The newest version (the one new cards are issued with).
    pub fn newest(&self) -> Option<(u8, &AesKey)> {
        self.keys.iter().next_back().map(|(v, k)| (*v, k))
    }

    /// The versions held, oldest first.
    pub fn versions(&self) -> Vec<u8> {
        self.keys.keys().copied().collect()
    }
}

/// Card key `key_no` of the card with `uid`: AN10922 over `UID || AID || "cashless" || KeyNo`.
pub fn card_key(master: &AesKey, uid: &[u8], key_no: u8) -> AesKey {
    let mut input = Vec::with_capacity(uid.len() + 12);
    input.extend_from_slice(uid);
    input.extend_from_slice(&DIVERSIFICATION_AID);
    input.extend_from_slice(CARD_KEY_SYSTEM);
    input.push(key_no);
    ntag424::diversify_an10922(master, &input)
        .expect("UIDs of 4, 7 or 10 bytes give inputs of 16 to 22 bytes")
}

/// The festival's UID key: AN10922 over `AID || "cashless-uid-key"`.
pub fn uid_key(master: &AesKey) -> AesKey {
    let mut input = DIVERSIFICATION_AID.to_vec();
    input.extend_from_slice(UID_KEY_SYSTEM);
    ntag424::diversify_an10922(master, &input).expect("a 19-byte input")
}

/// The key `key_no` of the card with `uid` should hold under `master`.
pub fn issued_key(master: &AesKey, uid: &[u8], key_no: u8) -> AesKey {
    if key_no == UID_KEY {
        uid_key(master)
    } else {
        card_key(master, uid, key_no)
    }
}

/// Whether an anticollision UID is a random ID (4 bytes starting `08`).
pub fn is_random_id(uid: &[u8]) -> bool {
    uid.len() == 4 && uid[0] == 0x08
}

/// The next thing to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Send this APDU and feed the answer back.
    Send(Vec<u8>),
    /// The exchange is over.
    Done(T),
}

/// What an authentication proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genuine {
    /// The card's real UID (from `GetCardUID`, whatever it answered at anticollision).
    pub uid: Vec<u8>,
    /// The master key version it was issued with.
    pub key_version: u8,
}

/// Why a card did not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// It has no NTAG 424 DNA application (a UID-only card, or a clone on a "magic" card).
    #[error("not an AES card: it has no NTAG 424 DNA application")]
    NotAesCard,
    /// Its key is the factory's: it was never issued.
    #[error("a blank card: it was never issued")]
    NotIssued,
    /// It was issued with a master key this terminal does not hold.
    #[error("issued with key version {0}, which this terminal does not hold")]
    UnknownKeyVersion(u8),
    /// It failed to prove the key: a clone, or a forged or replayed answer.
    #[error("card not genuine: {0}")]
    NotGenuine(ChannelError),
    /// It proved a key, but for another UID than the one it showed.
    #[error("card not genuine: its UID does not match its key")]
    UidMismatch,
    /// The exchange broke (the card moved away, a status that is no proof either way).
    #[error("the card could not be read: {0}")]
    Unreadable(ChannelError),
    /// The ledger recorded the card as issued with a key, and what answered did not prove
    /// that key (a UID-only copy of a keyed card, or one keyed with an older master key).
    #[error(
        "card not genuine: the ledger recorded it as issued with key version {recorded}, \
         it proved {}", presented.map_or("no key".to_owned(), |v| format!("key version {v}"))
    )]
    ContradictsRecord {
        /// The key version the card proved (`None`: none, a UID-only read).
        presented: Option<u8>,
        /// The key version the ledger recorded at issue.
        recorded: u8,
    },
}

/// Whether a card that proved `presented` (or no key) may be the card the ledger recorded as
/// issued with `recorded`. A card is issued before it is recorded and keys only go up, so a
/// genuine card proves the recorded version or a later one; a card the ledger never saw
/// issued is whatever it proved.
pub fn check_record(presented: Option<u8>, recorded: Option<u8>) -> Result<(), AuthError> {
    match (presented, recorded) {
        (_, None) => Ok(()),
        (Some(p), Some(r)) if p >= r => Ok(()),
        (presented, Some(recorded)) => Err(AuthError::ContradictsRecord {
            presented,
            recorded,
        }),
    }
}

impl AuthError {
    fn from_channel(e: ChannelError) -> AuthError {
        if e.means_not_genuine() {
            AuthError::NotGenuine(e)
        } else {
            AuthError::Unreadable(e)
        }
    }

    /// The short code for events and the scan log.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::NotAesCard => "not_aes_card",
            AuthError::NotIssued => "not_issued",
            AuthError::UnknownKeyVersion(_) => "unknown_key_version",
            AuthError::NotGenuine(_)
            | AuthError::UidMismatch
            | AuthError::ContradictsRecord { .. } => "not_genuine",
            AuthError::Unreadable(_) => "unreadable",
        }
    }

    /// Whether the card itself is refused (as opposed to a read worth trying again).
    pub fn refuses_card(&self) -> bool {
        !matches!(self, AuthError::Unreadable(_))
    }
}

/// An `AuthenticateEV2First` in progress: the card's first answer gives the second command,
/// its second answer the session.
struct Authenticating {
    auth: AuthFirst,
}

enum AuthProgress {
    Send(Vec<u8>, Authenticating),
    Session(Session),
}

impl Authenticating {
    fn start(key_no: u8, key: AesKey, rnd_a: [u8; 16]) -> (Authenticating, Vec<u8>) {
        let (auth, apdu) = AuthFirst::start(key_no, key, rnd_a);
        (Authenticating { auth }, apdu)
    }

    fn feed(mut self, answer: &[u8]) -> Result<AuthProgress, ChannelError> {
        if self.auth.challenged() {
            Ok(AuthProgress::Session(self.auth.finish(answer)?))
        } else {
            let apdu = self.auth.challenge(answer)?;
            Ok(AuthProgress::Send(apdu, self))
        }
    }
}

/// Status words that say "no such application or command here": a card without NTAG 424 DNA
/// (`6A 82` file not found, `6A 81` function not supported, `6A 86` wrong parameters, `6D 00`
/// / `6E 00` instruction or class not supported, `91 1C` illegal command code, and `63 00`,
/// the ACR122U's answer for a memory card that cannot take an ISO command at all).
const NO_APPLICATION: [[u8; 2]; 7] = [
    [0x6A, 0x82],
    [0x6A, 0x81],
    [0x6A, 0x86],
    [0x6D, 0x00],
    [0x6E, 0x00],
    [0x91, 0x1C],
    [0x63, 0x00],
];

/// The answer to `ISOSelectFile` of the application: selected, a card without it, or an
/// exchange to try again (an empty or cut answer, another status).
fn selected(answer: &[u8]) -> Result<(), AuthError> {
    match ntag424::split_answer(answer).map_err(AuthError::Unreadable)? {
        (_, SW_ISO_OK) => Ok(()),
        (_, sw) if NO_APPLICATION.contains(&sw) => Err(AuthError::NotAesCard),
        (_, [a, b]) => Err(AuthError::Unreadable(ChannelError::Status(a, b))),
    }
}

/// The answer to `GetKeyVersion`: the version, a card without the command, or an exchange to
/// try again.
fn key_version(answer: &[u8]) -> Result<u8, AuthError> {
    ntag424::parse_key_version(answer).map_err(|e| match e {
        ChannelError::Status(a, b) if NO_APPLICATION.contains(&[a, b]) => AuthError::NotAesCard,
        e => AuthError::Unreadable(e),
    })
}

/// The real UID in a `GetCardUID` answer (7 bytes for NTAG 424 DNA; 4 or 10 for others).
fn parse_card_uid(data: &[u8]) -> Result<Vec<u8>, ChannelError> {
    if matches!(data.len(), 4 | 7 | 10) {
        Ok(data.to_vec())
    } else {
        Err(ChannelError::Malformed(data.len()))
    }
}

/// Most APDUs one tap's authentication sends (select, version, 2 × 2 authentication, UID).
pub const TAP_EXCHANGES_MAX: usize = 8;

/// Which key an authentication in a tap is for.
enum TapKey<'k> {
    /// The UID key (diversified from `master`): the real UID comes next.
    Uid { master: &'k AesKey },
    /// Key 0 of `uid`.
    App { uid: Vec<u8> },
}

enum TapState<'k> {
    Select,
    KeyVersion,
    Auth {
        auth: Authenticating,
        key: TapKey<'k>,
    },
    /// `GetCardUID` sent; `app_key_of`: a random-ID card, whose key 0, diversified from this
    /// master key, is proved next.
    ReadUid {
        session: Session,
        app_key_of: Option<&'k AesKey>,
    },
    Over,
}

/// A tap's authentication: select the application, read key 0's version, then
/// - static UID: authenticate with key 0 diversified for it, and read the real UID under
///   secure messaging (it must be the one shown);
/// - random ID: authenticate with the UID key, read the real UID, and authenticate with key
///   0 diversified for it.
pub struct TapAuth<'k> {
    keys: &'k MasterKeys,
    shown_uid: Vec<u8>,
    rnd_a: [[u8; 16]; 2],
    version: u8,
    state: TapState<'k>,
}

impl<'k> TapAuth<'k> {
    /// Starts for the card that answered `shown_uid` to GET DATA; `rnd_a` are fresh random
    /// challenges. Returns the first command.
    pub fn start(
        keys: &'k MasterKeys,
        shown_uid: &[u8],
        rnd_a: [[u8; 16]; 2],
    ) -> (TapAuth<'k>, Vec<u8>) {
        (
            TapAuth {
                keys,
                shown_uid: shown_uid.to_vec(),
                rnd_a,
                version: 0,
                state: TapState::Select,
            },
            SELECT_APPLICATION.to_vec(),
        )
    }

    /// Feeds the card's answer to the last command.
    pub fn next(&mut self, answer: &[u8]) -> Result<Step<Genuine>, AuthError> {
        match std::mem::replace(&mut self.state, TapState::Over) {
            TapState::Select => {
                selected(answer)?;
                self.state = TapState::KeyVersion;
                Ok(Step::Send(ntag424::get_key_version(APP_KEY)))
            }
            TapState::KeyVersion => {
                let version = key_version(answer)?;
                if version == 0 {
                    return Err(AuthError::NotIssued);
                }
                let master = self
                    .keys
                    .get(version)
                    .ok_or(AuthError::UnknownKeyVersion(version))?;
                self.version = version;
                let (auth, apdu, key) = if is_random_id(&self.shown_uid) {
                    let (auth, apdu) =
                        Authenticating::start(UID_KEY, uid_key(master), self.rnd_a[1]);
                    (auth, apdu, TapKey::Uid { master })
                } else {
                    let uid = self.shown_uid.clone();
                    let (auth, apdu) = Authenticating::start(
                        APP_KEY,
                        card_key(master, &uid, APP_KEY),
                        self.rnd_a[0],
                    );
                    (auth, apdu, TapKey::App { uid })
                };
                self.state = TapState::Auth { auth, key };
                Ok(Step::Send(apdu))
            }
            TapState::Auth { auth, key } => {
                match auth.feed(answer).map_err(AuthError::from_channel)? {
                    AuthProgress::Send(apdu, auth) => {
                        self.state = TapState::Auth { auth, key };
                        Ok(Step::Send(apdu))
                    }
                    AuthProgress::Session(session) => match key {
                        TapKey::Uid { master } => {
                            let apdu = session.get_card_uid();
                            self.state = TapState::ReadUid {
                                session,
                                app_key_of: Some(master),
                            };
                            Ok(Step::Send(apdu))
                        }
                        // A random-ID card proved key 0 of its real UID: genuine.
                        TapKey::App { uid } if is_random_id(&self.shown_uid) => {
                            Ok(Step::Done(Genuine {
                                uid,
                                key_version: self.version,
                            }))
                        }
                        TapKey::App { .. } => {
                            let apdu = session.get_card_uid();
                            self.state = TapState::ReadUid {
                                session,
                                app_key_of: None,
                            };
                            Ok(Step::Send(apdu))
                        }
                    },
                }
            }
            TapState::ReadUid {
                mut session,
                app_key_of,
            } => {
                let data = session
                    .answer_full(answer)
                    .map_err(AuthError::from_channel)?;
                let uid = parse_card_uid(&data).map_err(AuthError::Unreadable)?;
                if let Some(master) = app_key_of {
                    let (auth, apdu) = Authenticating::start(
                        APP_KEY,
                        card_key(master, &uid, APP_KEY),
                        self.rnd_a[0],
                    );
                    self.state = TapState::Auth {
                        auth,
                        key: TapKey::App { uid },
                    };
                    Ok(Step::Send(apdu))
                } else if uid == self.shown_uid {
                    Ok(Step::Done(Genuine {
                        uid,
                        key_version: self.version,
                    }))
                } else {
                    Err(AuthError::UidMismatch)
                }
            }
            TapState::Over => Err(AuthError::Unreadable(ChannelError::Malformed(0))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issuing
// ---------------------------------------------------------------------------------------------

/// How to issue a card (`[cards]` of the terminal's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueOptions {
    /// Turn the random ID on (the card then shows a new UID at every anticollision; only an
    /// authenticated terminal learns the real one). It cannot be turned off.
    pub random_id: bool,
    /// Change keys 1, 3 and 4 (and 2) from the factory's too.
    pub other_keys: bool,
}

/// A card issued (or found already issued: issuing again changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The card's real UID.
    pub uid: Vec<u8>,
    /// The master key version it holds.
    pub key_version: u8,
    /// Whether it answers with a random ID.
    pub random_id: bool,
    /// The keys changed by this run (empty: the card was issued already).
    pub changed_keys: Vec<u8>,
}

/// Why a card could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// No master key to issue with.
    #[error("no master key: the master key file holds none")]
    NoMasterKey,
    /// GET DATA failed.
    #[error("the card's UID could not be read ({0:02X} {1:02X})")]
    UidUnreadable(u8, u8),
    /// Not an NTAG 424 DNA.
    #[error("not an NTAG 424 DNA card: it has no such application")]
    NotAesCard,
    /// A key holds another master key version than the newest (another festival's card, or an
    /// older version): issuing does not re-key cards.
    #[error(
        "key {key_no} holds key version {version}, not {target}: the card belongs to another key set"
    )]
    OtherVersion {
        /// The key.
        key_no: u8,
        /// Its version.
        version: u8,
        /// The version issuing uses.
        target: u8,
    },
    /// A key says it holds an older master key version but does not hold that version's
    /// key: something else changed the card.
    #[error(
        "key {key_no} claims key version {version} but does not hold that version's key: \
         something other than cashless changed this card"
    )]
    ForeignKey {
        /// The key.
        key_no: u8,
        /// The version it claims.
        version: u8,
    },
    /// The card refused or broke an exchange.
    #[error("{0}")]
    Card(AuthError),
}

/// Most APDUs issuing sends: GET DATA, select, 5 versions, 2 × 2 authentications, UID,
/// 2 proving an older key, 4 key changes, configuration, key 0, 2 verification: 22, and
/// two to spare.
pub const ISSUE_EXCHANGES_MAX: usize = 24;

enum IssueState {
    GetData,
    Select,
    Versions,
    /// Authenticating with the UID key to learn the real UID of a random-ID card.
    UidAuth(Authenticating),
    ReadUid(Session),
    /// Proving a key of an older version (`to_prove`) before finishing the card with it.
    Proving(Authenticating),
    AppAuth(Authenticating),
    /// A planned `CommMode.Full` command sent; its answer carries only a MAC.
    Changing {
        session: Session,
    },
    /// `ChangeKey` of key 0 sent: the session ends with it.
    ChangingAppKey,
    Verifying(Authenticating),
    Over,
}

/// Personalises a card: reads its UID and key versions, authenticates with key 0 (factory
/// or already changed), changes the keys still at the factory's (keys 1–4 first, key 0
/// last, each with the newest master key's version), turns the random ID on if asked, and
/// proves the new key 0. Every step is decided from what the card says now, so a card pulled
/// away at any point is issued again from where it stands.
pub struct IssueFlow<'k> {
    keys: &'k MasterKeys,
    master: &'k AesKey,
    version: u8,
    options: IssueOptions,
    rnd_a: [[u8; 16]; 4],
    shown_uid: Vec<u8>,
    uid: Vec<u8>,
    versions: Vec<u8>,
    /// Commands to send in the session, in order (key changes, configuration).
    plan: Vec<Planned>,
    /// The planned command sent last, counted once the card answers it.
    in_flight: Option<Planned>,
    /// A key the card says holds an older master key version (a run cut halfway before the
    /// file gained a newer one): proved with that version's key before the card is finished
    /// with it, since version bytes are the card's word.
    to_prove: Option<u8>,
    changed: Vec<u8>,
    state: IssueState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned {
    ChangeKey(u8),
    RandomId,
}

impl<'k> IssueFlow<'k> {
    /// Starts issuing with the newest of `keys`; returns the first command (GET DATA).
    pub fn start(
        keys: &'k MasterKeys,
        options: IssueOptions,
        rnd_a: [[u8; 16]; 4],
    ) -> Result<(IssueFlow<'k>, Vec<u8>), IssueError> {
        let (version, master) = keys.newest().ok_or(IssueError::NoMasterKey)?;
        Ok((
            IssueFlow {
                keys,
                master,
                version,
                options,
                rnd_a,
                shown_uid: Vec::new(),
                uid: Vec::new(),
                versions: Vec::new(),
                plan: Vec::new(),
                in_flight: None,
                to_prove: None,
                changed: Vec::new(),
                state: IssueState::GetData,
            },
            super::core::GET_DATA_UID.to_vec(),
        ))
    }

    fn wants(&self, key_no: u8) -> bool {
        key_no == APP_KEY
            || self.options.other_keys
            // A random-ID card (asked for now, or turned on by an earlier run or elsewhere)
            // needs the UID key: terminals learn its real UID through it.
            || (key_no == UID_KEY && (self.options.random_id || is_random_id(&self.shown_uid)))
    }

    /// The key `key_no` holds now, from its version.
    fn current_key(&self, key_no: u8) -> AesKey {
        if self.versions[usize::from(key_no)] == 0 {
            AesKey::FACTORY
        } else {
            issued_key(self.master, &self.uid, key_no)
        }
    }

    fn card(e: ChannelError) -> IssueError {
        IssueError::Card(AuthError::from_channel(e))
    }

    /// Feeds the card's answer to the last command.
    pub fn next(&mut self, answer: &[u8]) -> Result<Step<Issued>, IssueError> {
        match std::mem::replace(&mut self.state, IssueState::Over) {
            IssueState::GetData => {
                let (uid, sw) = ntag424::split_answer(answer).map_err(Self::card)?;
                if sw != SW_ISO_OK || !matches!(uid.len(), 4 | 7 | 10) {
                    return Err(IssueError::UidUnreadable(sw[0], sw[1]));
                }
                self.shown_uid = uid.to_vec();
                self.state = IssueState::Select;
                Ok(Step::Send(SELECT_APPLICATION.to_vec()))
            }
            IssueState::Select => {
                selected(answer).map_err(|e| match e {
                    AuthError::NotAesCard => IssueError::NotAesCard,
                    e => IssueError::Card(e),
                })?;
                self.state = IssueState::Versions;
                Ok(Step::Send(ntag424::get_key_version(0)))
            }
            IssueState::Versions => {
                let version = key_version(answer).map_err(|e| match e {
                    AuthError::NotAesCard => IssueError::NotAesCard,
                    e => IssueError::Card(e),
                })?;
                let key_no = u8::try_from(self.versions.len()).unwrap_or(u8::MAX);
                if version != 0 && version != self.version {
                    // A run cut halfway under an older master key (the file gained a version
                    // since): key 0 still at the factory's, the keys changed so far all of
                    // that version. The card is finished with it, if this terminal holds it;
                    // an issued card (key 0 changed) is never re-keyed.
                    let half_issued = key_no != APP_KEY && self.versions.iter().all(|&v| v == 0);
                    match self.keys.get(version) {
                        Some(master) if half_issued => {
                            self.version = version;
                            self.master = master;
                            self.to_prove = Some(key_no);
                        }
                        _ => {
                            return Err(IssueError::OtherVersion {
                                key_no,
                                version,
                                target: self.version,
                            });
                        }
                    }
                }
                self.versions.push(version);
                if self.versions.len() < usize::from(KEY_COUNT) {
                    self.state = IssueState::Versions;
                    return Ok(Step::Send(ntag424::get_key_version(key_no + 1)));
                }
                if is_random_id(&self.shown_uid) {
                    // Random ID already on (an earlier run got that far): the UID key tells
                    // the real UID (its key is the same for every card: no UID needed yet).
                    let key = self.current_key(UID_KEY);
                    let (auth, apdu) = Authenticating::start(UID_KEY, key, self.rnd_a[1]);
                    self.state = IssueState::UidAuth(auth);
                    Ok(Step::Send(apdu))
                } else {
                    self.uid = self.shown_uid.clone();
                    Ok(Step::Send(self.prove_or_authenticate()))
                }
            }
            IssueState::UidAuth(auth) => match auth.feed(answer).map_err(Self::card)? {
                AuthProgress::Send(apdu, auth) => {
                    self.state = IssueState::UidAuth(auth);
                    Ok(Step::Send(apdu))
                }
                AuthProgress::Session(session) => {
                    let apdu = session.get_card_uid();
                    self.state = IssueState::ReadUid(session);
                    Ok(Step::Send(apdu))
                }
            },
            IssueState::ReadUid(mut session) => {
                let data = session.answer_full(answer).map_err(Self::card)?;
                self.uid = parse_card_uid(&data).map_err(Self::card)?;
                // The UID key just proved itself: nothing more to prove if it was the one.
                if self.to_prove == Some(UID_KEY) {
                    self.to_prove = None;
                }
                Ok(Step::Send(self.prove_or_authenticate()))
            }
            IssueState::Proving(auth) => {
                let key_no = self.to_prove.unwrap_or(APP_KEY);
                match auth.feed(answer) {
                    Ok(AuthProgress::Send(apdu, auth)) => {
                        self.state = IssueState::Proving(auth);
                        Ok(Step::Send(apdu))
                    }
                    Ok(AuthProgress::Session(_)) => {
                        self.to_prove = None;
                        Ok(Step::Send(self.authenticate_app_key()))
                    }
                    Err(e) if e.means_not_genuine() => Err(IssueError::ForeignKey {
                        key_no,
                        version: self.version,
                    }),
                    Err(e) => Err(Self::card(e)),
                }
            }
            IssueState::AppAuth(auth) => match auth.feed(answer).map_err(Self::card)? {
                AuthProgress::Send(apdu, auth) => {
                    self.state = IssueState::AppAuth(auth);
                    Ok(Step::Send(apdu))
                }
                AuthProgress::Session(session) => {
                    self.plan = (1..KEY_COUNT)
                        .filter(|&n| self.wants(n) && self.versions[usize::from(n)] == 0)
                        .map(Planned::ChangeKey)
                        .collect();
                    if self.options.random_id && !is_random_id(&self.shown_uid) {
                        self.plan.push(Planned::RandomId);
                    }
                    self.plan.reverse();
                    self.after_change(session)
                }
            },
            IssueState::Changing { mut session } => {
                session.answer_full(answer).map_err(Self::card)?;
                self.after_change(session)
            }
            IssueState::ChangingAppKey => {
                Session::answer_change_own_key(answer).map_err(Self::card)?;
                self.changed.push(APP_KEY);
                self.versions[usize::from(APP_KEY)] = self.version;
                let key = card_key(self.master, &self.uid, APP_KEY);
                let (auth, apdu) = Authenticating::start(APP_KEY, key, self.rnd_a[2]);
                self.state = IssueState::Verifying(auth);
                Ok(Step::Send(apdu))
            }
            IssueState::Verifying(auth) => match auth.feed(answer).map_err(Self::card)? {
                AuthProgress::Send(apdu, auth) => {
                    self.state = IssueState::Verifying(auth);
                    Ok(Step::Send(apdu))
                }
                AuthProgress::Session(_) => Ok(Step::Done(self.issued())),
            },
            IssueState::Over => Err(Self::card(ChannelError::Malformed(0))),
        }
    }

    /// Proves the key in `to_prove` with the older version's key, or goes on to key 0.
    fn prove_or_authenticate(&mut self) -> Vec<u8> {
        match self.to_prove {
            Some(key_no) => {
                let key = issued_key(self.master, &self.uid, key_no);
                let (auth, apdu) = Authenticating::start(key_no, key, self.rnd_a[3]);
                self.state = IssueState::Proving(auth);
                apdu
            }
            None => self.authenticate_app_key(),
        }
    }

    fn authenticate_app_key(&mut self) -> Vec<u8> {
        let (auth, apdu) = Authenticating::start(APP_KEY, self.current_key(APP_KEY), self.rnd_a[0]);
        self.state = IssueState::AppAuth(auth);
        apdu
    }

    /// The next planned command in `session`, or key 0's change, or the end.
    fn after_change(&mut self, session: Session) -> Result<Step<Issued>, IssueError> {
        if let Some(Planned::ChangeKey(n)) = self.in_flight.take() {
            self.changed.push(n);
            self.versions[usize::from(n)] = self.version;
        }
        if let Some(next) = self.plan.pop() {
            let apdu = match next {
                Planned::ChangeKey(n) => session.change_key(
                    n,
                    APP_KEY,
                    &self.current_key(n),
                    &issued_key(self.master, &self.uid, n),
                    self.version,
                ),
                Planned::RandomId => session.set_picc_configuration(PICC_CONFIG_RANDOM_ID),
            };
            self.in_flight = Some(next);
            self.state = IssueState::Changing { session };
            return Ok(Step::Send(apdu));
        }
        if self.versions[usize::from(APP_KEY)] == 0 {
            let apdu = session.change_key(
                APP_KEY,
                APP_KEY,
                &AesKey::FACTORY,
                &card_key(self.master, &self.uid, APP_KEY),
                self.version,
            );
            self.state = IssueState::ChangingAppKey;
            return Ok(Step::Send(apdu));
        }
        Ok(Step::Done(self.issued()))
    }

    fn issued(&self) -> Issued {
        Issued {
            uid: self.uid.clone(),
            key_version: self.version,
            random_id: self.options.random_id || is_random_id(&self.shown_uid),
            changed_keys: self.changed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_proves_at_least_the_key_the_ledger_recorded() {
        assert_eq!(check_record(None, None), Ok(()));
        assert_eq!(check_record(Some(1), None), Ok(()));
        assert_eq!(check_record(Some(2), Some(2)), Ok(()));
        assert_eq!(check_record(Some(3), Some(2)), Ok(()));
        let uid_only = check_record(None, Some(2)).unwrap_err();
        assert_eq!(uid_only.code(), "not_genuine");
        assert!(uid_only.refuses_card());
        assert_eq!(
            uid_only.to_string(),
            "card not genuine: the ledger recorded it as issued with key version 2, it proved no key"
        );
        let older = check_record(Some(1), Some(2)).unwrap_err();
        assert!(
            older.to_string().ends_with("it proved key version 1"),
            "{older}"
        );
    }
}
