//! Who may use the headquarters pages: operators' names and passwords (argon2id), session
//! and CSRF tokens, cookies, the lockout after wrong passwords, and what each role may do.
//! Everything here is pure but the password hashing.

use crate::ledger::caller::OperatorRole;
use crate::ledger::store::OperatorLogin;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cashless_hq";
/// The cookie that carries the login form's CSRF token (before there is a session).
pub const LOGIN_COOKIE: &str = "cashless_hq_login";
/// Wrong passwords in a row that lock an operator.
pub const LOCK_AFTER_FAILURES: i64 = 5;
/// How long a lock lasts, in seconds.
pub const LOCK_FOR_S: i64 = 15 * 60;
/// How long a session lasts, whatever happens (a night's shift and more), in seconds.
pub const SESSION_TTL_S: i64 = 12 * 3600;
/// Shortest and longest password.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 10..=128;
/// Longest operator name.
pub const OPERATOR_NAME_LEN_MAX: usize = 64;
/// Operators listed at most.
pub const OPERATORS_MAX: u32 = 1000;

/// What an operator asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See a page.
    View,
    /// Block, unblock or replace a card.
    ChangeCards,
    /// Add, disable or enable operators.
    ManageOperators,
}

/// Whether `role` may do `action`.
pub fn may(role: OperatorRole, action: Action) -> bool {
    let needed = match action {
        Action::View => OperatorRole::Viewer,
        Action::ChangeCards => OperatorRole::Desk,
        Action::ManageOperators => OperatorRole::Admin,
    };
    role >= needed
}

/// An operator's name: 1 to 64 of `a-z`, `0-9`, `.`, `_` and `-`, starting with a letter
/// or a digit (a name is part of a page's path: `.` and `..` would not be).
pub fn check_operator_name(name: &str) -> Result<(), String> {
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = name.len() <= OPERATOR_NAME_LEN_MAX
        && name.bytes().next().is_some_and(plain)
        && name.bytes().all(|b| plain(b) || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a name is 1 to {OPERATOR_NAME_LEN_MAX} of a-z, 0-9, '.', '_' and '-', starting \
             with a letter or a digit"
        ))
    }
}

/// A password: 10 to 128 characters.
pub fn check_password(password: &str) -> Result<(), String> {
    if PASSWORD_LEN.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(format!(
            "a password is {} to {} characters",
            PASSWORD_LEN.start(),
            PASSWORD_LEN.end()
        ))
    }
}

/// The password's argon2id PHC string (a random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, String> {
    check_password(password)?;
    argon2_phc(password.as_bytes())
}

/// A secret's argon2id PHC string with a random salt and the crate's default cost: how
/// operators' passwords and staff PINs are stored.
pub fn argon2_phc(secret: &[u8]) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash`. Takes tens of milliseconds: call it
/// off the async workers.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, verified for unknown names so that a login takes as long
/// whether the name exists or not.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("not-a-password-of-anyone").unwrap_or_default())
}

/// A new random token: 32 bytes, as 64 lowercase hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 of a session cookie's value, as the database keeps it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a submitted token equals the expected one, in constant time.
pub fn same_token(submitted: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(submitted.as_bytes().ct_eq(expected.as_bytes()))
}

/// Whether a value looks like one of [`new_token`]'s (checked before any lookup).
pub fn is_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, path `/hq`, `Secure` under TLS;
/// `max_age_s` 0 removes it.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/hq; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

/// What a login attempt may go on to, before the password is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginGate {
    /// No such operator, or a disabled one: the same answer as a wrong password.
    Refuse,
    /// Locked after wrong passwords, until then.
    Locked(DateTime<Utc>),
    /// Count the attempt ([`OperatorStore::begin_login`]), then check the password.
    ///
    /// [`OperatorStore::begin_login`]: crate::ledger::store::OperatorStore::begin_login
    CheckPassword,
}

/// The gate for `operator` at `now`. Only a hint: the attempt is counted, and a lock
/// checked again, in one statement before the password is checked, so that attempts made
/// at once cannot get past the lock together.
pub fn login_gate(operator: Option<&OperatorLogin>, now: DateTime<Utc>) -> LoginGate {
    match operator {
        None => LoginGate::Refuse,
        Some(o) if !o.active => LoginGate::Refuse,
        Some(o) => match o.locked_until {
            Some(until) if until > now => LoginGate::Locked(until),
            _ => LoginGate::CheckPassword,
        },
    }
}

/// The one answer to every refused login (no such name, disabled, wrong password,
/// locked): it does not tell which names exist.
pub const LOGIN_REFUSED: &str = "Wrong name or password. After five wrong passwords in a row \
    an operator is locked for 15 minutes.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::caller::Operator;
    use uuid::Uuid;

    fn login(active: bool, locked_until: Option<DateTime<Utc>>) -> OperatorLogin {
        OperatorLogin {
            operator: Operator {
                operator_id: Uuid::nil(),
                name: "ana".into(),
                role: OperatorRole::Desk,
            },
            password_hash: String::new(),
            active,
            failed_logins: 0,
            locked_until,
        }
    }

    #[test]
    fn each_role_may_do_what_the_one_before_it_may() {
        use Action::*;
        use OperatorRole::*;
        let table = [
            (Viewer, [true, false, false]),
            (Desk, [true, true, false]),
            (Admin, [true, true, true]),
        ];
        for (role, allowed) in table {
            for (action, ok) in [View, ChangeCards, ManageOperators]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(may(role, action), ok, "{role:?} {action:?}");
            }
        }
    }

    #[test]
    fn a_login_is_refused_locked_or_checked() {
        let now = DateTime::parse_from_rfc3339("2026-07-01T23:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(login_gate(None, now), LoginGate::Refuse);
        assert_eq!(
            login_gate(Some(&login(false, None)), now),
            LoginGate::Refuse
        );
        assert_eq!(
            login_gate(Some(&login(true, Some(later))), now),
            LoginGate::Locked(later)
        );
        assert_eq!(
            login_gate(Some(&login(true, Some(now))), now),
            LoginGate::CheckPassword,
            "a lock ends at its time"
        );
        assert_eq!(
            login_gate(Some(&login(true, None)), now),
            LoginGate::CheckPassword
        );
    }

    #[test]
    fn passwords_names_tokens_and_cookies() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery "));
        assert!(!verify_password("not a hash", "x"));
        assert!(!verify_password(decoy_hash(), "not-a-password-of-anyone "));
        assert!(hash_password("short").is_err());
        assert!(check_operator_name("ana.desk-2").is_ok());
        for bad in [
            "",
            "Ana",
            "ana desk",
            &"a".repeat(65),
            "ana;",
            ".",
            "..",
            "-ana",
        ] {
            assert!(check_operator_name(bad).is_err(), "{bad:?}");
        }
        let t = new_token();
        assert!(is_token(&t) && t != new_token());
        assert!(!is_token("abc") && !is_token(&"g".repeat(64)));
        assert_eq!(token_sha256("abc").len(), 64);
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t[1..], &t) && !same_token("", ""));
        assert_eq!(
            cookie("a=1; cashless_hq=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("cashless_hq_login=q", SESSION_COOKIE), None);
        assert_eq!(
            set_cookie(SESSION_COOKIE, "v", 60, true),
            "cashless_hq=v; Path=/hq; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
