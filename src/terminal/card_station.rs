//! The card station: `cashless card issue` personalises a factory-fresh NTAG 424 DNA on the
//! terminal's reader and registers it with the ledger; `cashless card check` says what a
//! presented card is and whether it proves its key. The protocol is the reader core's
//! ([`IssueFlow`], [`TapAuth`]); this module holds the card, carries the bytes through
//! [`drive`], asks the ledger, and says what happened in words and an exit code.
//!
//! Issuing is idempotent and resumable: the card is asked what it holds at every run, the
//! ledger's `PUT /v1/cards/{uid}/key` is safe to send again, and a card pulled away at any
//! point is issued again by running the command again. No key is ever printed.

use super::client::{Answer, ClientError, LedgerClient};
use super::config::TerminalConfig;
use crate::domain::{CardUid, Cents};
use crate::reader::card_auth::{
    self, AuthError, ISSUE_EXCHANGES_MAX, IssueError, IssueFlow, IssueOptions, Issued,
};
use crate::reader::core::{GET_DATA_UID, card_type, shown_uid};
use crate::reader::ntag424::ChannelError;
use crate::reader::pcsc::{PresentedCard, authenticate_card, drive, wait_for_card};
use std::process::ExitCode;

/// `card check`: the card proved its key (or, in UID mode, was read).
pub const EXIT_OK: u8 = 0;
/// Something failed, or the card is not genuine.
pub const EXIT_FAILED: u8 = 1;
/// `card issue`: the card holds its keys now, but the ledger has not recorded it yet (run
/// the command again with the card once the ledger can be reached).
pub const EXIT_NOT_REGISTERED: u8 = 3;

/// Where and how long to wait for the card.
#[derive(Debug, Clone)]
pub struct Station {
    /// Substring of the reader's name (empty: the configured `[reader] name`, else the
    /// first contactless reader).
    pub reader_filter: String,
    /// How long to wait for a card.
    pub wait_ms: u64,
}

fn hold(station: &Station) -> anyhow::Result<PresentedCard> {
    eprintln!(
        "waiting up to {} s for a card on {}",
        station.wait_ms.div_ceil(1000),
        if station.reader_filter.is_empty() {
            "the first contactless reader".to_owned()
        } else {
            format!("the reader matching {:?}", station.reader_filter)
        }
    );
    Ok(wait_for_card(&station.reader_filter, station.wait_ms)?)
}

/// What the ledger's record of a card says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LedgerView {
    /// In words, for the `ledger:` line.
    text: String,
    /// The key version the ledger recorded (`None`: none, or not known).
    recorded: Option<u8>,
    /// The card is blocked (lost, replaced, or in debt): it does not pay.
    blocked: bool,
}

fn ledger_view(answer: Result<Answer, ClientError>) -> LedgerView {
    let view = |text: String| LedgerView {
        text,
        recorded: None,
        blocked: false,
    };
    match answer {
        Ok(a) if a.status == 200 => {
            let recorded = a.body["key_version"]
                .as_u64()
                .and_then(|v| u8::try_from(v).ok());
            let balance = a.body["balance_cents"].as_i64().map(Cents::new);
            let status = a.body["status"].as_str().unwrap_or("?");
            let key = recorded.map_or("issued without a key".to_owned(), |v| {
                format!("issued with key version {v}")
            });
            let balance = balance.map_or("?".to_owned(), |b| b.to_string());
            LedgerView {
                text: format!("{status}, balance {balance}, {key}"),
                recorded,
                blocked: status == "blocked",
            }
        }
        Ok(a) if a.status == 404 => view("not known (nothing was ever put on it)".to_owned()),
        Ok(a) => view(format!(
            "answered {} {}",
            a.status,
            a.error_code().unwrap_or("(no error code)")
        )),
        Err(e) => view(format!(
            "not reachable ({e}); the verdict is this terminal's alone"
        )),
    }
}

/// `cashless card check`: prints what the card on the reader is, whether it proves its key
/// with the configured master keys, and what the ledger recorded for it.
pub fn check(
    config: &TerminalConfig,
    station: &Station,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    let presented = hold(station)?;
    println!("reader:        {}", presented.reader);
    println!("card type:     {}", card_type(&presented.atr).as_str());
    let verdict = check_card(config, &presented);
    presented.release();
    let (uid, key_version) = match verdict? {
        Ok(read) => read,
        Err(message) => {
            println!("verdict:       {message}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    let ledger = ledger_view(rt.block_on(LedgerClient::for_terminal(config)?.card(&uid)));
    println!("ledger:        {}", ledger.text);
    if config.cards.keys.is_some()
        && let Err(e) = card_auth::check_record(key_version, ledger.recorded)
    {
        println!("verdict:       refused ({}): {e}", e.code());
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if ledger.blocked {
        println!(
            "verdict:       blocked at the ledger: it does not pay (see `cashless ledger card`)"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!(
        "verdict:       {}",
        match key_version {
            Some(_) => "genuine: this card pays at the festival's terminals",
            None if config.cards.keys.is_some() =>
                "accepted by its UID alone ([cards] accept_uid_cards = true)",
            None => "read by its UID (UID mode proves nothing more)",
        }
    );
    Ok(ExitCode::from(EXIT_OK))
}

/// Reads the card and, in AES mode, has it prove its key: `Ok(Err(verdict))` for a card
/// that is refused, with the words why.
#[allow(clippy::type_complexity)]
fn check_card(
    config: &TerminalConfig,
    presented: &PresentedCard,
) -> anyhow::Result<Result<(CardUid, Option<u8>), String>> {
    let mut buf = [0u8; 64];
    let answer = presented.card.transmit(&GET_DATA_UID, &mut buf)?;
    let shown = shown_uid(answer)?.to_vec();
    let random = card_auth::is_random_id(&shown);
    println!(
        "shown UID:     {}{}",
        hex::encode_upper(&shown),
        if random {
            " (a random ID: only an authenticated terminal learns the real UID)"
        } else {
            ""
        }
    );
    let Some(keys) = config.cards.keys.as_deref() else {
        println!("mode:          uid");
        if random {
            return Ok(Err("refused: a random ID cannot pay in UID mode".to_owned()));
        }
        return Ok(Ok((CardUid::from_bytes(&shown)?, None)));
    };
    println!("mode:          aes (key versions {:?})", keys.versions());
    match authenticate_card(&presented.card, keys, &shown) {
        Err(e) => Ok(Err(format!(
            "the card could not be read ({e}); hold it still and check again"
        ))),
        Ok(Ok(genuine)) => {
            println!("authenticated: key version {}", genuine.key_version);
            let uid = CardUid::from_bytes(&genuine.uid)?;
            println!("UID:           {uid}");
            Ok(Ok((uid, Some(genuine.key_version))))
        }
        Ok(Err(AuthError::NotAesCard)) if config.cards.accept_uid_cards && !random => {
            println!("authenticated: no (a UID-only card)");
            Ok(Ok((CardUid::from_bytes(&shown)?, None)))
        }
        // The event's code for a read to try again.
        Ok(Err(e @ AuthError::Unreadable(_))) => Ok(Err(format!(
            "could not be read (reader_error): {e}; hold it still and check again"
        ))),
        Ok(Err(e)) => Ok(Err(format!("refused ({}): {e}", e.code()))),
    }
}

/// `cashless card issue`: personalises the card on the reader and registers it.
pub fn issue(
    config: &TerminalConfig,
    station: &Station,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    let Some(keys) = config.cards.keys.as_deref() else {
        anyhow::bail!(
            "card issue needs AES mode: set [cards] mode = \"aes\" and master_key_file in the \
             terminal's configuration"
        );
    };
    let options = IssueOptions {
        random_id: config.cards.random_id,
        other_keys: config.cards.issue_other_keys,
    };
    let (mut flow, first) = IssueFlow::start(keys, options, rand::random())?;
    let presented = hold(station)?;
    println!("reader:        {}", presented.reader);
    let result = drive(&presented.card, first, ISSUE_EXCHANGES_MAX, |a| {
        flow.next(a)
    });
    presented.release();
    let again = "present it again and run `cashless card issue` again: issuing goes on from \
                 where it stopped";
    let issued = match result {
        Ok(Ok(issued)) => issued,
        // A status the card answers every time (permission denied, parameter, no such key,
        // length, illegal command): running again will not help.
        Ok(Err(IssueError::Card(AuthError::Unreadable(
            e @ ChannelError::Status(0x91, 0x9D | 0x9E | 0x40 | 0x7E | 0x1C),
        )))) => anyhow::bail!(
            "card not issued: {e} (the card refuses the command; it is not a card this station \
             can issue)"
        ),
        // A read cut short, or a status that may pass (the card moving in the field).
        Ok(Err(IssueError::Card(AuthError::Unreadable(e)))) => {
            anyhow::bail!("the card left the reader while it was being issued ({e}); {again}")
        }
        Ok(Err(e @ IssueError::UidUnreadable(..))) => {
            anyhow::bail!("card not issued: {e}; {again}")
        }
        Ok(Err(e)) => anyhow::bail!("card not issued: {e}"),
        Err(e) => {
            anyhow::bail!("the card left the reader while it was being issued ({e}); {again}")
        }
    };
    let uid = CardUid::from_bytes(&issued.uid)?;
    println!("UID:           {uid}");
    println!("card:          {}", describe_issued(&issued));
    let answer =
        rt.block_on(LedgerClient::for_terminal(config)?.record_card_key(&uid, issued.key_version));
    let (line, code) = registration(answer, issued.key_version);
    println!("ledger:        {line}");
    Ok(ExitCode::from(code))
}

/// What issuing did to the card, in words.
fn describe_issued(issued: &Issued) -> String {
    let random = if issued.random_id {
        ", random ID on"
    } else {
        ""
    };
    if issued.changed_keys.is_empty() {
        format!(
            "already issued with key version {}{random}; nothing changed on it",
            issued.key_version
        )
    } else {
        let keys: Vec<String> = issued.changed_keys.iter().map(u8::to_string).collect();
        format!(
            "issued with key version {} (keys changed: {}){random}",
            issued.key_version,
            keys.join(", ")
        )
    }
}

/// The ledger's answer to the registration, in words, and the exit code it means.
fn registration(answer: Result<Answer, ClientError>, key_version: u8) -> (String, u8) {
    let retry = "the card holds its keys and pays; run `cashless card issue` again with it \
                 on the reader to register it";
    match answer {
        Ok(a) if a.status == 200 => {
            let line = if a.body["changed"] == true {
                format!("recorded as issued with key version {key_version}")
            } else {
                format!("had it recorded with key version {key_version} already")
            };
            (line, EXIT_OK)
        }
        Ok(a) if a.status == 403 => (
            format!(
                "refused (403 {}): only a checkpoint's token may register cards; {retry} \
                 from a checkpoint",
                a.error_code().unwrap_or("FORBIDDEN")
            ),
            EXIT_NOT_REGISTERED,
        ),
        Ok(a) => {
            // 409 is for good: the card is recorded with a newer key, or was replaced (and is
            // blocked). Anything else may pass.
            let (then, code) = if a.error_code() == Some("CARD_KEY_CONFLICT") {
                (
                    "running the command again will not change that",
                    EXIT_FAILED,
                )
            } else {
                (retry, EXIT_NOT_REGISTERED)
            };
            let line = format!(
                "refused ({} {}): {}; {then}",
                a.status,
                a.error_code().unwrap_or("(no error code)"),
                a.body["error"]["message"].as_str().unwrap_or("")
            );
            (line, code)
        }
        Err(e) => (
            format!("not reachable ({e}); {retry} once the ledger can be reached"),
            EXIT_NOT_REGISTERED,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: serde_json::Value) -> Result<Answer, ClientError> {
        Ok(Answer {
            status,
            body,
            replayed: false,
            etag: None,
        })
    }

    #[test]
    fn registration_outcomes_and_their_exit_codes() {
        let (line, code) = registration(answer(200, json!({"changed": true})), 2);
        assert_eq!(
            (line.as_str(), code),
            ("recorded as issued with key version 2", 0)
        );
        let (line, code) = registration(answer(200, json!({"changed": false})), 2);
        assert_eq!(code, 0);
        assert!(line.contains("already"), "{line}");
        let conflict = json!({"error": {"code": "CARD_KEY_CONFLICT", "message": "recorded 3"}});
        let (line, code) = registration(answer(409, conflict), 2);
        assert_eq!(code, EXIT_FAILED);
        assert!(
            line.contains("409 CARD_KEY_CONFLICT): recorded 3"),
            "{line}"
        );
        let (_, code) = registration(answer(503, json!({"error": {"code": "DATABASE_ERROR"}})), 2);
        assert_eq!(code, EXIT_NOT_REGISTERED);
        let (line, code) = registration(answer(403, json!({"error": {"code": "FORBIDDEN"}})), 1);
        assert_eq!(code, EXIT_NOT_REGISTERED);
        assert!(line.contains("checkpoint"), "{line}");
        let (line, code) = registration(Err(ClientError::Timeout), 1);
        assert_eq!(code, EXIT_NOT_REGISTERED);
        assert!(line.starts_with("not reachable"), "{line}");
    }

    #[test]
    fn what_issuing_did_is_said_plainly() {
        let mut issued = Issued {
            uid: vec![4, 1, 2, 3, 4, 5, 6],
            key_version: 1,
            random_id: true,
            changed_keys: vec![1, 2, 0],
        };
        assert_eq!(
            describe_issued(&issued),
            "issued with key version 1 (keys changed: 1, 2, 0), random ID on"
        );
        issued.changed_keys.clear();
        issued.random_id = false;
        assert_eq!(
            describe_issued(&issued),
            "already issued with key version 1; nothing changed on it"
        );
    }

    #[test]
    fn the_ledger_record_in_words() {
        let body = json!({"status": "active", "balance_cents": 1250, "key_version": 2});
        let view = ledger_view(answer(200, body));
        assert_eq!((view.recorded, view.blocked), (Some(2), false));
        assert_eq!(
            view.text,
            "active, balance 12.50, issued with key version 2"
        );
        let body = json!({"status": "blocked", "balance_cents": -300, "key_version": null});
        let view = ledger_view(answer(200, body));
        assert_eq!((view.recorded, view.blocked), (None, true));
        assert!(view.text.contains("issued without a key"), "{view:?}");
        let view = ledger_view(answer(404, json!({})));
        assert_eq!((view.recorded, view.blocked), (None, false));
        assert!(view.text.starts_with("not known"), "{view:?}");
    }
}
