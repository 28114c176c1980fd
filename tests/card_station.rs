//! `cashless card issue`, `card check` and `card new-key`, the real binary end to end: a real
//! `pcscd` with vpcd's virtual readers, virtual NTAG 424 DNA chips played here
//! (`common::ntag424`), and the real ledger. A factory-fresh card issued by the command pays at
//! a terminal in AES mode; issuing cut at every exchange and run again ends with the card
//! issued and registered; bad master key files stop the terminal with the file named.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::reader::card_auth::{MasterKeys, Step, TAP_EXCHANGES_MAX, TapAuth};
use cashless::reader::ntag424::AesKey;
use common::ntag424::Ntag424Chip;
use common::pcsc::EVENT_DEADLINE;
use common::pcsc::*;
use common::terminal::*;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const CARD: [u8; 7] = [0x04, 0x52, 0x11, 0x6C, 0x2E, 0x48, 0x80];
const CARD_UID: &str = "0452116C2E4880";

/// The terminal configuration of a checkpoint (the ledger's cp-1, by its token) in `dir`, reading cards through PC/SC in AES
/// mode with the master key file `keys`; `cards_extra` is added to `[cards]`.
fn station_config(dir: &Path, l: &Ledger, keys: &Path, cards_extra: &str) -> PathBuf {
    let url = l.base_url.trim_start_matches("http://").to_owned();
    let config = write_config(
        dir,
        &dir.join("journal.db"),
        &url,
        &l.checkpoint_token,
        "checkpoint-1",
        "checkpoint",
        1000,
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[reader]\nbackend = \"simulated\"\n",
        &format!(
            "[reader]\nbackend = \"pcsc\"\nname_filter = \"{}\"\n\n[cards]\nmode = \"aes\"\n\
             master_key_file = {:?}\n{cards_extra}",
            READERS[0],
            keys.display().to_string()
        ),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A fresh master key file (`card new-key`) and [`station_config`] with it, in `dir`.
fn new_station(dir: &Path, l: &Ledger, cards_extra: &str) -> (PathBuf, PathBuf) {
    let keys = dir.join("card-master-keys");
    let out = card_command(&["new-key", "--file", keys.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let config = station_config(dir, l, &keys, cards_extra);
    (keys, config)
}

/// `cashless card ARGS...`.
fn card_command(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("card")
        .args(args)
        .env_remove("CASHLESS_LEDGER_URL")
        .env_remove("CASHLESS_LEDGER_TOKEN")
        .output()
        .unwrap();
    eprintln!(
        "cashless card {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn station(verb: &str, config: &Path) -> Output {
    card_command(&[
        verb,
        "--config",
        config.to_str().unwrap(),
        "--wait-secs",
        "10",
    ])
}

/// Keeps a copy of `out` in `said` (to look for secrets in everything a command printed).
fn said_by(said: &mut Vec<Output>, out: Output) -> Output {
    said.push(out.clone());
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The key file's keys, as the terminal reads them.
fn keys_in(path: &Path) -> MasterKeys {
    cashless::terminal::card_keys::load(path).unwrap()
}

/// Whether `chip` proves the key of version `version` diversified for its UID, as a terminal
/// holding `keys` sees it.
fn proves(chip: &Arc<Mutex<Ntag424Chip>>, keys: &MasterKeys) -> Option<u8> {
    let mut chip = chip.lock().unwrap();
    chip.power_on();
    let shown = chip.uid().to_vec();
    let (mut flow, mut apdu) = TapAuth::start(keys, &shown, [[7; 16], [9; 16]]);
    for _ in 0..TAP_EXCHANGES_MAX {
        match flow.next(&chip.answer(&apdu)) {
            Ok(Step::Send(next)) => apdu = next,
            Ok(Step::Done(genuine)) => {
                assert_eq!(genuine.uid, CARD);
                return Some(genuine.key_version);
            }
            Err(_) => return None,
        }
    }
    None
}

/// Takes the card off reader 0 (if it is still there) and waits until pcscd sees the reader
/// empty.
fn off_the_reader(pcscd: &Pcscd, card: VirtualCard) -> CardLog {
    let log = card.remove();
    let ctx = pcscd.context();
    wait_for_state(&ctx, &pcscd.reader(0), "EMPTY", EVENT_DEADLINE, is_empty);
    log
}

fn recorded_key_version(l: &Ledger, uid: &str) -> Option<i64> {
    l.query_json(&format!(
        "SELECT key_version FROM cards WHERE card_uid = '{uid}'"
    ))
    .first()
    .and_then(|r| r["key_version"].as_i64())
}

#[test]
fn new_key_adds_versions_to_a_file_only_its_owner_reads_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let file = path.to_str().unwrap();
    let first = card_command(&["new-key", "--file", file]);
    assert!(first.status.success());
    assert!(stdout(&first).contains("master key version 1 added"));
    let second = card_command(&["new-key", "--file", file]);
    assert!(second.status.success());
    assert!(stdout(&second).contains("master key version 2 added"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let keys = keys_in(&path);
    assert_eq!(keys.versions(), [1, 2]);
    assert_ne!(keys.get(1).unwrap().bytes(), keys.get(2).unwrap().bytes());
    for version in [1, 2] {
        let hex = hex::encode_upper(keys.get(version).unwrap().bytes());
        for out in [&first, &second] {
            assert!(!stdout(out).contains(&hex) && !stderr(out).contains(&hex));
        }
    }
}

#[test]
fn a_factory_fresh_card_issued_by_the_command_pays_at_an_aes_terminal() {
    in_own_process(
        "a_factory_fresh_card_issued_by_the_command_pays_at_an_aes_terminal",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                let dir = tempfile::tempdir().unwrap();
                let (keys, config) = new_station(dir.path(), &l, "random_id = true\n");
                let mut said = Vec::new();

                // The blank card: `card check` says so, and fails.
                let chip = Arc::new(Mutex::new(Ntag424Chip::blank(&CARD)));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&chip));
                let out = said_by(&mut said, station("check", &config));
                assert_eq!(out.status.code(), Some(1));
                assert!(stdout(&out).contains("refused (not_issued)"), "{out:?}");

                // Issued: every key changed, the random ID on, the ledger told.
                let out = said_by(&mut said, station("issue", &config));
                assert_eq!(out.status.code(), Some(0), "{out:?}");
                let text = stdout(&out);
                assert!(
                    text.contains(&format!("UID:           {CARD_UID}")),
                    "{text}"
                );
                assert!(
                    text.contains(
                        "issued with key version 1 (keys changed: 1, 2, 3, 4, 0), random ID on"
                    ),
                    "{text}"
                );
                assert!(
                    text.contains("recorded as issued with key version 1"),
                    "{text}"
                );
                assert_eq!(chip.lock().unwrap().versions(), [1; 5]);
                assert!(chip.lock().unwrap().random_id());
                assert_eq!(recorded_key_version(&l, CARD_UID), Some(1));
                // Issuing again changes nothing, and says so.
                let out = said_by(&mut said, station("issue", &config));
                assert_eq!(out.status.code(), Some(0), "{out:?}");
                assert!(stdout(&out).contains("already issued with key version 1"));
                assert!(stdout(&out).contains("had it recorded with key version 1 already"));
                // `card check` now: a random ID, the real UID after authentication.
                let out = said_by(&mut said, station("check", &config));
                assert_eq!(out.status.code(), Some(0), "{out:?}");
                let text = stdout(&out);
                assert!(text.contains("(a random ID"), "{text}");
                assert!(
                    text.contains(&format!("UID:           {CARD_UID}")),
                    "{text}"
                );
                assert!(text.contains("issued with key version 1"), "{text}");
                assert!(text.contains("genuine"), "{text}");
                off_the_reader(&pcscd, card);
                let key_hex = hex::encode_upper(keys_in(&keys).get(1).unwrap().bytes());
                for o in &said {
                    assert!(!stdout(o).contains(&key_hex) && !stderr(o).contains(&key_hex));
                }

                // A bar terminal in AES mode with the same key file: the card pays.
                l.fund(CARD_UID, 3000).await;
                let bar_dir = tempfile::tempdir().unwrap();
                let url = l.base_url.trim_start_matches("http://").to_owned();
                let bar = write_config(
                    bar_dir.path(),
                    &bar_dir.path().join("journal.db"),
                    &url,
                    &l.bar_token,
                    "bar-1",
                    "bar",
                    1000,
                );
                let text = std::fs::read_to_string(&bar).unwrap().replace(
                    "[reader]\nbackend = \"simulated\"\n",
                    &format!(
                        "[reader]\nbackend = \"pcsc\"\n\n[cards]\nmode = \"aes\"\n\
                         master_key_file = {:?}\n",
                        keys.display().to_string()
                    ),
                );
                std::fs::write(&bar, text).unwrap();
                let mut t = Terminal::spawn(&bar);
                ready_to_sell(&mut t).await;
                arm_beer(&mut t).await;
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&chip));
                let c = t.expect("card").await;
                assert_eq!(
                    (c["uid"].as_str(), c["key_version"].as_i64()),
                    (Some(CARD_UID), Some(1)),
                    "{c}"
                );
                assert_eq!(t.expect("decision").await["status"], "approved_online");
                wait_until_synced(&mut t).await;
                t.quit().await;
                drop(card);
                assert_eq!(l.balance(CARD_UID).await, 3000 - BEER_CENTS);
                let audit = l.query_json(
                    "SELECT actor FROM app_transaction_log WHERE operation = 'card_key'",
                );
                assert_eq!(audit.len(), 1, "{audit:?}");
                assert_eq!(audit[0]["actor"], "terminal:cp-1");
                l.assert_audit_ok();
            });
        },
    );
}

#[test]
fn issuing_cut_at_every_exchange_and_run_again_issues_the_card() {
    in_own_process(
        "issuing_cut_at_every_exchange_and_run_again_issues_the_card",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                let dir = tempfile::tempdir().unwrap();
                let (keys, config) = new_station(dir.path(), &l, "random_id = true\n");
                let master = keys_in(&keys);

                // How many exchanges an uninterrupted issue takes.
                let whole = Arc::new(Mutex::new(Ntag424Chip::blank(&CARD)));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&whole));
                assert_eq!(station("issue", &config).status.code(), Some(0));
                let exchanges = off_the_reader(&pcscd, card).apdus.len();
                assert!(exchanges >= 15, "{exchanges} exchanges");

                for at in 0..exchanges {
                    let chip = Arc::new(Mutex::new(Ntag424Chip::blank(&CARD)));
                    let spec = CardSpec::ntag424(&chip).vanishing_at(at, Vanish::BeforeAnswer);
                    let card = VirtualCard::insert(pcscd.port(0), spec);
                    let out = station("issue", &config);
                    assert_eq!(out.status.code(), Some(1), "cut at {at}: {out:?}");
                    assert!(
                        stderr(&out).contains("run `cashless card issue` again"),
                        "cut at {at}: {out:?}"
                    );
                    let log = off_the_reader(&pcscd, card);
                    assert!(log.vanished, "cut at {at}");
                    // Back on the reader: issued from where it stood, and registered.
                    let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&chip));
                    let out = station("issue", &config);
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "again after a cut at {at}: {out:?}"
                    );
                    off_the_reader(&pcscd, card);
                    assert_eq!(chip.lock().unwrap().versions(), [1; 5], "cut at {at}");
                    assert!(chip.lock().unwrap().random_id(), "cut at {at}");
                    assert_eq!(proves(&chip, &master), Some(1), "cut at {at}");
                }
                assert_eq!(recorded_key_version(&l, CARD_UID), Some(1));
                l.assert_audit_ok();
            });
        },
    );
}

#[test]
fn issuing_needs_an_ntag_424_and_a_checkpoint_and_says_what_to_do() {
    in_own_process(
        "issuing_needs_an_ntag_424_and_a_checkpoint_and_says_what_to_do",
        || {
            runtime().block_on(async {
                let pcscd = Pcscd::start();
                let l = Ledger::start().await;
                let dir = tempfile::tempdir().unwrap();
                let (keys, config) = new_station(dir.path(), &l, "");

                // A UID-only card: nothing to issue.
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::new(&CARD));
                let out = station("issue", &config);
                assert_eq!(out.status.code(), Some(1), "{out:?}");
                assert!(stderr(&out).contains("not an NTAG 424 DNA"), "{out:?}");
                off_the_reader(&pcscd, card);

                // No card at all within the wait.
                let out = card_command(&[
                    "issue",
                    "--config",
                    config.to_str().unwrap(),
                    "--wait-secs",
                    "1",
                ]);
                assert_eq!(out.status.code(), Some(1), "{out:?}");
                assert!(stderr(&out).contains("no card on Virtual PCD 00 00 within 1000 ms"));

                // A bar terminal's token: the card is issued, the ledger refuses to record
                // it (exit 3); run again at a checkpoint, it is recorded.
                let bar_config = dir.path().join("bar.toml");
                let text = std::fs::read_to_string(&config)
                    .unwrap()
                    .replace(&l.checkpoint_token, &l.bar_token);
                std::fs::write(&bar_config, text).unwrap();
                let chip = Arc::new(Mutex::new(Ntag424Chip::blank(&CARD)));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&chip));
                let out = station("issue", &bar_config);
                assert_eq!(out.status.code(), Some(3), "{out:?}");
                assert!(
                    stdout(&out).contains("only a checkpoint's token"),
                    "{out:?}"
                );
                assert_eq!(recorded_key_version(&l, CARD_UID), None);
                assert_eq!(proves(&chip, &keys_in(&keys)), Some(1));
                // The ledger down: issued already, not recorded, exit 3 again.
                let down_config = dir.path().join("down.toml");
                let text = std::fs::read_to_string(&config)
                    .unwrap()
                    .replace(l.base_url.trim_start_matches("http://"), "127.0.0.1:9");
                std::fs::write(&down_config, text).unwrap();
                let out = station("issue", &down_config);
                assert_eq!(out.status.code(), Some(3), "{out:?}");
                assert!(stdout(&out).contains("not reachable"), "{out:?}");
                let out = station("issue", &config);
                assert_eq!(out.status.code(), Some(0), "{out:?}");
                assert!(stdout(&out).contains("already issued with key version 1"));
                assert!(stdout(&out).contains("recorded as issued with key version 1"));
                off_the_reader(&pcscd, card);
                assert_eq!(recorded_key_version(&l, CARD_UID), Some(1));

                // A card issued with a newer master key than this station's is refused, not
                // re-keyed.
                let newer = MasterKeys::new([(7, AesKey::new([0x55; 16]))]);
                let foreign = Arc::new(Mutex::new(Ntag424Chip::issued(&CARD, &newer, false)));
                let card = VirtualCard::insert(pcscd.port(0), CardSpec::ntag424(&foreign));
                let out = station("issue", &config);
                assert_eq!(out.status.code(), Some(1), "{out:?}");
                assert!(stderr(&out).contains("key version 7, not 1"), "{out:?}");
                off_the_reader(&pcscd, card);
                assert_eq!(foreign.lock().unwrap().versions(), [7; 5]);
            });
        },
    );
}

/// Runs `cashless terminal` on `config` and returns its exit status and stderr.
fn terminal_refuses(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["terminal", "--ui", "jsonl", "--config"])
        .arg(config)
        .env_remove("CASHLESS_LEDGER_URL")
        .env_remove("CASHLESS_LEDGER_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn the_terminal_refuses_to_start_on_a_bad_master_key_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("card-master-keys");
    let config = write_config(
        dir.path(),
        &dir.path().join("journal.db"),
        "127.0.0.1:9",
        "token",
        "bar-1",
        "bar",
        1000,
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[reader]\nbackend = \"simulated\"\n",
        &format!(
            "[reader]\nbackend = \"pcsc\"\n\n[cards]\nmode = \"aes\"\nmaster_key_file = {:?}\n",
            keys.display().to_string()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let file = keys.display().to_string();

    // Missing.
    let (code, err) = terminal_refuses(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&file) && err.contains("No such file"), "{err}");

    // Readable by the group or the world.
    std::fs::write(&keys, "1 00112233445566778899AABBCCDDEEFF\n").unwrap();
    for mode in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = terminal_refuses(&config);
        assert_eq!(code, Some(1), "{mode:o}: {err}");
        assert!(
            err.contains(&file) && err.contains("chmod 600"),
            "{mode:o}: {err}"
        );
    }

    // A key of the wrong length, named by its line.
    std::fs::write(&keys, "# festival keys\n1 00112233445566778899AABBCCDDEE\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = terminal_refuses(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{file}, line 2")) && err.contains("32 hex digits"),
        "{err}"
    );
    assert!(
        !err.contains("00112233445566778899AABBCCDDEE"),
        "no key in errors: {err}"
    );
}
