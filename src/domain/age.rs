//! Age restrictions: a product's minimum age and a card's age flag.
//!
//! A card carries no birth date, only what staff saw on an ID: `under_16` or `under_18`
//! (no flag: nobody said the holder is a minor). A product may require 16 or 18. A card's
//! flag forbids a product when the holder is known to be younger than the product requires:
//! `under_16` forbids both, `under_18` forbids only 18. The rule is one function,
//! [`AgeFlag::forbids`], that the ledger, the terminal's tap flow and its menu share.

use serde::{Deserialize, Serialize};

/// What staff saw on a card holder's ID: younger than 16, or younger than 18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AgeFlag {
    /// Younger than 16.
    #[serde(rename = "under_16")]
    Under16,
    /// Younger than 18.
    #[serde(rename = "under_18")]
    Under18,
}

impl AgeFlag {
    /// The wire and database spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            AgeFlag::Under16 => "under_16",
            AgeFlag::Under18 => "under_18",
        }
    }

    /// Parses the wire and database spelling.
    pub fn parse(text: &str) -> Option<AgeFlag> {
        match text {
            "under_16" => Some(AgeFlag::Under16),
            "under_18" => Some(AgeFlag::Under18),
            _ => None,
        }
    }

    /// The flag for "younger than `years`" (16 or 18).
    pub fn under(years: u8) -> Option<AgeFlag> {
        match years {
            16 => Some(AgeFlag::Under16),
            18 => Some(AgeFlag::Under18),
            _ => None,
        }
    }

    /// The age the holder has not reached.
    pub const fn years(self) -> u8 {
        match self {
            AgeFlag::Under16 => 16,
            AgeFlag::Under18 => 18,
        }
    }

    /// True when a holder with this flag may not buy a product that requires `min_age`:
    /// the holder is younger than `years()`, so younger than any age from there up.
    pub fn forbids(self, min_age: MinAge) -> bool {
        self.years() <= min_age.years()
    }
}

/// The age a product requires: 16 or 18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct MinAge(u8);

/// Why a number is not a minimum age.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a minimum age is 16 or 18, got {0}")]
pub struct MinAgeError(pub i64);

impl MinAge {
    /// 16 years.
    pub const SIXTEEN: MinAge = MinAge(16);
    /// 18 years.
    pub const EIGHTEEN: MinAge = MinAge(18);

    /// Checks a minimum age: 16 or 18.
    pub fn new(years: i64) -> Result<MinAge, MinAgeError> {
        match years {
            16 => Ok(MinAge::SIXTEEN),
            18 => Ok(MinAge::EIGHTEEN),
            _ => Err(MinAgeError(years)),
        }
    }

    /// The years.
    pub const fn years(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for MinAge {
    type Error = MinAgeError;
    fn try_from(years: u8) -> Result<MinAge, MinAgeError> {
        MinAge::new(i64::from(years))
    }
}

impl From<MinAge> for u8 {
    fn from(age: MinAge) -> u8 {
        age.0
    }
}

impl std::fmt::Display for MinAge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// True when a card with `flag` may not buy a product requiring `min_age`: both must be set.
pub fn age_forbids(flag: Option<AgeFlag>, min_age: Option<MinAge>) -> bool {
    matches!((flag, min_age), (Some(f), Some(m)) if f.forbids(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_forbids_what_the_holder_is_too_young_for() {
        use AgeFlag::*;
        let cases = [
            (None, None, false),
            (None, Some(MinAge::EIGHTEEN), false),
            (Some(Under18), None, false),
            (Some(Under16), Some(MinAge::SIXTEEN), true),
            (Some(Under16), Some(MinAge::EIGHTEEN), true),
            (Some(Under18), Some(MinAge::SIXTEEN), false),
            (Some(Under18), Some(MinAge::EIGHTEEN), true),
        ];
        for (flag, min_age, forbidden) in cases {
            assert_eq!(
                age_forbids(flag, min_age),
                forbidden,
                "{flag:?} {min_age:?}"
            );
        }
    }

    #[test]
    fn spellings_round_trip_and_only_16_and_18_are_ages() {
        for flag in [AgeFlag::Under16, AgeFlag::Under18] {
            assert_eq!(AgeFlag::parse(flag.as_str()), Some(flag));
            assert_eq!(AgeFlag::under(flag.years()), Some(flag));
            assert_eq!(
                serde_json::to_string(&flag).unwrap(),
                format!("\"{}\"", flag.as_str())
            );
        }
        assert_eq!(AgeFlag::parse("under_21"), None);
        assert_eq!(AgeFlag::under(21), None);
        for years in [-1, 0, 15, 17, 21, 256] {
            assert_eq!(MinAge::new(years), Err(MinAgeError(years)));
        }
        assert_eq!(MinAge::new(18).map(MinAge::years), Ok(18));
        assert!(serde_json::from_str::<MinAge>("17").is_err());
        assert_eq!(
            serde_json::from_str::<MinAge>("16").ok(),
            Some(MinAge::SIXTEEN)
        );
    }
}
