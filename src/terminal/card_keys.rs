//! The festival's card master keys on disk (`[cards] master_key_file`): one key per line,
//! `<version> <32 hex digits>`, `#` comments. The file must belong to the terminal's user and
//! be readable by nobody else; anything else is refused at startup, naming the file and the
//! line. The keys never leave this process: not into the journal, the logs or the ledger.

use crate::reader::card_auth::{MASTER_KEYS_MAX, MasterKeys};
use crate::reader::ntag424::AesKey;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroize;

/// The longest master key file read (a few dozen lines).
const FILE_BYTES_MAX: u64 = 16 * 1024;

/// Why a master key file was refused: the text says what is wrong and what is expected,
/// naming the file (and the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(pub String);

/// Reads and checks the master key file at `path`.
pub fn load(path: &Path) -> Result<MasterKeys, KeyFileError> {
    let file = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| KeyFileError(format!("cannot read the master key file {file}: {e}")))?;
    if !meta.is_file() {
        return Err(KeyFileError(format!(
            "the master key file {file} is not a regular file"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError(format!(
            "the master key file {file} is open to group or others (mode {mode:03o}); it must be \
             readable by the terminal's user only: chmod 600 {file}"
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(KeyFileError(format!(
            "the master key file {file} belongs to user {}, not to the terminal's user ({me}): \
             chown it to the user the terminal runs as",
            meta.uid()
        )));
    }
    if meta.len() > FILE_BYTES_MAX {
        return Err(KeyFileError(format!(
            "the master key file {file} is {} bytes; at most {FILE_BYTES_MAX} are read",
            meta.len()
        )));
    }
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| KeyFileError(format!("cannot read the master key file {file}: {e}")))?;
    let parsed = parse(&text).map_err(|(line, why)| {
        KeyFileError(format!("the master key file {file}, line {line}: {why}"))
    });
    text.zeroize();
    let keys = parsed?;
    if keys.versions().is_empty() {
        return Err(KeyFileError(format!(
            "the master key file {file} holds no key; expected lines \"<version> <32 hex \
             digits>\" (`cashless card new-key` writes one)"
        )));
    }
    Ok(keys)
}

/// The keys in `text`, or the 1-based line and what is wrong with it.
fn parse(text: &str) -> Result<MasterKeys, (usize, String)> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(version), Some(hex_key), None) = (words.next(), words.next(), words.next())
        else {
            return Err((
                n,
                "expected \"<version> <32 hex digits>\" (two words)".to_owned(),
            ));
        };
        let version = match version.parse::<u8>() {
            Ok(v) if v >= 1 => v,
            _ => {
                // The word is not echoed: a line written the wrong way round holds a key there.
                return Err((
                    n,
                    "the first word must be the version, a number from 1 to 255".to_owned(),
                ));
            }
        };
        let mut bytes = hex::decode(hex_key).map_err(|_| {
            (
                n,
                "the key must be 32 hex digits (16 bytes, AES-128)".to_owned(),
            )
        })?;
        let Ok(array) = <[u8; 16]>::try_from(bytes.as_slice()) else {
            let len = bytes.len();
            bytes.zeroize();
            return Err((
                n,
                format!("a key of {len} bytes; it must be 32 hex digits (16 bytes, AES-128)"),
            ));
        };
        bytes.zeroize();
        if keys.iter().any(|(v, _)| *v == version) {
            return Err((n, format!("version {version} is given twice")));
        }
        if keys.len() >= MASTER_KEYS_MAX {
            return Err((n, format!("more than {MASTER_KEYS_MAX} keys")));
        }
        keys.push((version, AesKey::new(array)));
    }
    Ok(MasterKeys::new(keys))
}

/// Adds a fresh random master key to the file at `path` (created readable by this user only),
/// one version above the newest; returns that version. The key itself is never printed.
pub fn add_new_key(path: &Path) -> Result<u8, KeyFileError> {
    let file = path.display();
    let version = if path.exists() {
        let keys = load(path)?;
        let newest = keys.newest().map_or(0, |(v, _)| v);
        newest.checked_add(1).ok_or_else(|| {
            KeyFileError(format!(
                "the master key file {file} already has version 255"
            ))
        })?
    } else {
        1
    };
    let mut key: [u8; 16] = rand::random();
    let mut key_hex = hex::encode_upper(key);
    key.zeroize();
    // A hand-edited file may lack its last newline: the new key goes on a line of its own.
    let newline_first = std::fs::read(path)
        .map(zeroize::Zeroizing::new)
        .is_ok_and(|b| !b.is_empty() && !b.ends_with(b"\n"));
    let mut line = format!(
        "{}{version} {key_hex}\n",
        if newline_first { "\n" } else { "" }
    );
    key_hex.zeroize();
    let header = if version == 1 {
        "# cashless card master keys: \"<version> <32 hex digits>\" per line. The highest version\n\
         # issues new cards; keep the older ones to read earlier cards. Readable by the\n\
         # terminal's user only. Back this file up somewhere safe: a lost key is lost cards.\n"
    } else {
        ""
    };
    let result = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| {
            f.write_all(header.as_bytes())?;
            f.write_all(line.as_bytes())?;
            f.sync_all()
        });
    line.zeroize();
    result.map_err(|e| KeyFileError(format!("cannot write the master key file {file}: {e}")))?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_versions_and_comments() {
        let keys = parse(
            "# festival keys\n\n1 00112233445566778899AABBCCDDEEFF\n  3   \
             ffeeddccbbaa99887766554433221100  \n",
        )
        .unwrap();
        assert_eq!(keys.versions(), [1, 3]);
        assert_eq!(keys.newest().unwrap().0, 3);
        assert_eq!(
            keys.get(3).unwrap().bytes()[0],
            0xFF,
            "lowercase hex is taken"
        );
    }

    #[test]
    fn a_line_written_the_wrong_way_round_does_not_put_the_key_in_the_error() {
        let (line, why) = parse("00112233445566778899AABBCCDDEEFF 1").err().unwrap();
        assert_eq!(line, 1);
        assert!(why.contains("1 to 255"), "{why}");
        assert!(!why.contains("00112233"), "{why}");
    }

    #[test]
    fn a_new_key_goes_on_a_line_of_its_own_after_a_hand_edited_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "1 00112233445566778899AABBCCDDEEFF").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(add_new_key(&path).unwrap(), 2);
        assert_eq!(load(&path).unwrap().versions(), [1, 2]);
        assert_eq!(add_new_key(&path).unwrap(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{}", text.len());
    }

    #[test]
    fn bad_lines_are_named() {
        let err = |text: &str| parse(text).err().unwrap();
        assert_eq!(err("1 0011").0, 1);
        assert!(err("1 0011").1.contains("a key of 2 bytes"));
        assert!(
            err("#\n0 00112233445566778899AABBCCDDEEFF")
                .1
                .contains("1 to 255")
        );
        assert_eq!(err("#\n0 00112233445566778899AABBCCDDEEFF").0, 2);
        assert!(
            err("1 zz112233445566778899AABBCCDDEEFF")
                .1
                .contains("32 hex digits")
        );
        assert!(err("1").1.contains("two words"));
        assert!(
            err("1 00112233445566778899AABBCCDDEEFF\n1 00112233445566778899AABBCCDDEEFF")
                .1
                .contains("twice")
        );
    }
}
