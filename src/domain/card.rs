//! Card identity: the UID read from the card, validated once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A card UID: 4, 7 or 10 bytes, written as uppercase hex (8, 14 or 20 characters).
///
/// The only way to build one is [`CardUid::parse`] or [`CardUid::from_bytes`], so every value
/// in the program is valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CardUid(String);

/// Why a string or byte slice is not a card UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardUidError {
    /// Not 8, 14 or 20 characters (4, 7 or 10 bytes).
    #[error("a card UID has 4, 7 or 10 bytes (8, 14 or 20 hex characters), got {0} characters")]
    Length(usize),
    /// A character that is not `0-9` or `A-F`.
    #[error("a card UID is uppercase hex (0-9, A-F)")]
    NotUppercaseHex,
}

impl CardUid {
    /// Parses the canonical text form. Lowercase is refused: one card, one spelling.
    pub fn parse(text: &str) -> Result<CardUid, CardUidError> {
        if !matches!(text.len(), 8 | 14 | 20) {
            return Err(CardUidError::Length(text.chars().count()));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return Err(CardUidError::NotUppercaseHex);
        }
        Ok(CardUid(text.to_owned()))
    }

    /// Builds a UID from the bytes a reader returned.
    pub fn from_bytes(bytes: &[u8]) -> Result<CardUid, CardUidError> {
        if !matches!(bytes.len(), 4 | 7 | 10) {
            return Err(CardUidError::Length(bytes.len() * 2));
        }
        Ok(CardUid(hex::encode_upper(bytes)))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The text form [`CardUid::parse`] accepts, as a regular expression (for the API's schema).
pub const CARD_UID_PATTERN: &str = "^([0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20})$";

impl utoipa::PartialSchema for CardUid {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(CARD_UID_PATTERN))
            .description(Some(
                "Card UID: uppercase hexadecimal, 8, 14 or 20 characters (4, 7 or 10 byte \
                 UIDs). Lowercase is refused (400 `INVALID_REQUEST`): one card, one spelling.",
            ))
            .examples(["04A1B2C3D4E5F6"])
            .into()
    }
}

impl utoipa::ToSchema for CardUid {}

impl<'de> Deserialize<'de> for CardUid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CardUid::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_canonical_uids() {
        let cases: &[(&str, bool)] = &[
            ("04A1B2C3", true),
            ("04A1B2C3D4E5F6", true),
            ("04A1B2C3D4E5F60718AB", true),
            ("04a1b2c3", false),
            ("04A1B2C", false),
            ("04A1B2C3D4", false),
            ("04A1B2G3", false),
            ("", false),
            ("04A1B2C3D4E5F60718AB00", false),
            ("'; DROP", false),
        ];
        for (text, ok) in cases {
            assert_eq!(CardUid::parse(text).is_ok(), *ok, "{text:?}");
        }
    }

    #[test]
    fn from_bytes_formats_uppercase() {
        let uid = CardUid::from_bytes(&[0x04, 0xa1, 0xb2, 0xc3]).unwrap();
        assert_eq!(uid.as_str(), "04A1B2C3");
        assert!(CardUid::from_bytes(&[1, 2, 3]).is_err());
    }
}
