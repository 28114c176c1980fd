//! Identifiers: request ids, staff and product ids, sequence numbers.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// The idempotency key of one money-changing operation, generated on the terminal before
/// anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientRequestId(Uuid);

impl ClientRequestId {
    /// A fresh random id.
    pub fn new_random() -> ClientRequestId {
        ClientRequestId(Uuid::new_v4())
    }

    /// Parses the hyphenated UUID form.
    pub fn parse(text: &str) -> Result<ClientRequestId, uuid::Error> {
        Uuid::parse_str(text).map(ClientRequestId)
    }

    /// The inner UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl utoipa::PartialSchema for ClientRequestId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .description(Some(
                "Idempotency key of an operation: a UUID chosen by the terminal when the \
                 operation is created and kept across every retry.",
            ))
            .examples(["5b0f7c7e-3c51-4a3e-9a53-6f5f3e1f2a10"])
            .into()
    }
}

impl utoipa::ToSchema for ClientRequestId {}

impl fmt::Display for ClientRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The longest staff or product id, in bytes.
pub const IDENT_LEN_MAX: usize = 64;

/// The text a staff or product id may be, as a regular expression (for the API's schema).
pub const IDENT_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// Why a string is not a valid staff or product id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an id has 1 to {IDENT_LEN_MAX} characters of A-Z, a-z, 0-9, '_', '.', '-'")]
pub struct IdentError;

fn check_ident(text: &str) -> Result<(), IdentError> {
    let ok = !text.is_empty()
        && text.len() <= IDENT_LEN_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(IdentError) }
}

macro_rules! ident_type {
    ($(#[$doc:meta])* $name:ident, $described:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn parse(text: &str) -> Result<$name, IdentError> {
                check_ident(text).map(|()| $name(text.to_owned()))
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some(IDENT_PATTERN))
                    .min_length(Some(1))
                    .max_length(Some(IDENT_LEN_MAX))
                    .description(Some(concat!(
                        $described,
                        ": 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `.`, `-`."
                    )))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

ident_type!(
    /// A staff member's id (`s-17`).
    StaffId,
    "A staff member's id",
    "s-17"
);
ident_type!(
    /// A product's id in the catalog (`beer-05`).
    ProductId,
    "A product's id in the catalog",
    "beer-05"
);

/// A terminal's per-operation sequence number: 1, 2, 3, ... with no gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TerminalSeq(i64);

/// A sequence number must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("terminal_seq starts at 1")]
pub struct TerminalSeqError;

impl TerminalSeq {
    /// Validates and wraps a sequence number.
    pub fn new(seq: i64) -> Result<TerminalSeq, TerminalSeqError> {
        if seq >= 1 {
            Ok(TerminalSeq(seq))
        } else {
            Err(TerminalSeqError)
        }
    }

    /// The raw number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl utoipa::PartialSchema for TerminalSeq {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .description(Some(
                "The terminal's sequence number of the operation (1, 2, 3, ... with no gaps), \
                 so that the ledger can tell when a terminal's history is incomplete.",
            ))
            .examples([42])
            .into()
    }
}

impl utoipa::ToSchema for TerminalSeq {}

impl<'de> Deserialize<'de> for TerminalSeq {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TerminalSeq::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_are_restricted() {
        for ok in ["s-17", "beer-05", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(StaffId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "s 17",
            "'; DROP TABLE cards; --",
            "é",
            &"x".repeat(65),
        ] {
            assert!(ProductId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_pattern_states_the_same_bound() {
        assert!(IDENT_PATTERN.contains(&format!("{{1,{IDENT_LEN_MAX}}}")));
    }

    #[test]
    fn seq_starts_at_one() {
        assert!(TerminalSeq::new(0).is_err());
        assert!(TerminalSeq::new(-1).is_err());
        assert_eq!(TerminalSeq::new(1).map(TerminalSeq::get), Ok(1));
    }
}
