//! Money: an integer number of cents in the festival's one currency.
//!
//! Every operation on [`Cents`] is checked: an overflow is an error the caller must handle,
//! never a silent wrap. There is no conversion from or to floating point.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in cents. Negative values are meaningful (a card in debt).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(i64);

/// An arithmetic result did not fit in an `i64` number of cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount out of range (i64 cents overflow)")]
pub struct MoneyOverflow;

impl Cents {
    /// Zero cents.
    pub const ZERO: Cents = Cents(0);

    /// Wraps a raw number of cents.
    pub const fn new(cents: i64) -> Cents {
        Cents(cents)
    }

    /// The raw number of cents.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: Cents) -> Result<Cents, MoneyOverflow> {
        self.0.checked_add(other.0).map(Cents).ok_or(MoneyOverflow)
    }

    /// `self - other`, or an error on overflow.
    pub fn checked_sub(self, other: Cents) -> Result<Cents, MoneyOverflow> {
        self.0.checked_sub(other.0).map(Cents).ok_or(MoneyOverflow)
    }

    /// `self * factor`, or an error on overflow.
    pub fn checked_mul(self, factor: i64) -> Result<Cents, MoneyOverflow> {
        self.0.checked_mul(factor).map(Cents).ok_or(MoneyOverflow)
    }

    /// `-self`, or an error for `i64::MIN`.
    pub fn checked_neg(self) -> Result<Cents, MoneyOverflow> {
        self.0.checked_neg().map(Cents).ok_or(MoneyOverflow)
    }

    /// Sums amounts, failing on the first overflow.
    pub fn checked_sum<I: IntoIterator<Item = Cents>>(items: I) -> Result<Cents, MoneyOverflow> {
        items
            .into_iter()
            .try_fold(Cents::ZERO, |acc, c| acc.checked_add(c))
    }

    /// True below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl utoipa::PartialSchema for Cents {
    /// Any `i64`; each field of the API narrows it to the range the protocol checks.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(i64::MIN))
            .maximum(Some(i64::MAX))
            .description(Some(
                "An amount in cents, a JSON integer (a float such as `4.5` is refused). \
                 Negative where a balance may be below zero.",
            ))
            .examples([1100])
            .into()
    }
}

impl utoipa::ToSchema for Cents {}

impl fmt::Display for Cents {
    /// Formats as units and two decimals (`-12.05`), for people; machines use [`Cents::get`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(
            Cents::new(450).checked_add(Cents::new(50)),
            Ok(Cents::new(500))
        );
        assert_eq!(
            Cents::new(i64::MAX).checked_add(Cents::new(1)),
            Err(MoneyOverflow)
        );
        assert_eq!(
            Cents::new(i64::MIN).checked_sub(Cents::new(1)),
            Err(MoneyOverflow)
        );
        assert_eq!(
            Cents::new(i64::MAX / 2 + 1).checked_mul(2),
            Err(MoneyOverflow)
        );
        assert_eq!(Cents::new(i64::MIN).checked_neg(), Err(MoneyOverflow));
        assert_eq!(
            Cents::checked_sum([Cents::new(1), Cents::new(i64::MAX)]),
            Err(MoneyOverflow)
        );
        assert_eq!(
            Cents::checked_sum([Cents::new(1), Cents::new(2), Cents::new(-5)]),
            Ok(Cents::new(-2))
        );
    }

    #[test]
    fn displays_for_people() {
        for (cents, text) in [
            (0, "0.00"),
            (5, "0.05"),
            (1205, "12.05"),
            (-1205, "-12.05"),
            (i64::MIN, "-92233720368547758.08"),
        ] {
            assert_eq!(Cents::new(cents).to_string(), text);
        }
    }
}
