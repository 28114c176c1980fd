//! VAT: named rates and the split of a gross amount into net and tax.
//!
//! Festivals post gross prices (what the attendee pays, tax included), so the ledger takes a
//! line's gross amount and splits it: `tax = gross × rate / (1 + rate)`, rounded to the cent,
//! and `net = gross − tax`. The rounding rule:
//!
//! - **Per line**, not per order: each order line records its own net and tax, as a receipt
//!   line shows them, and a line's tax does not depend on what else was in the order. A
//!   rate's total is the sum of its lines, so postings and reports add up exactly.
//! - **Half away from zero** (commercial rounding): an exact half cent goes up for a sale
//!   and down (further from zero) for a negative amount, so a reversal is the exact negative
//!   of the original split.
//!
//! Rates are integer basis points (1 bp = 0.01 %: 1900 is 19 %), never floats, and every
//! computation is exact integer arithmetic in `i128`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Cents;

/// The highest rate: 100 % (10,000 basis points).
pub const TAX_RATE_BASIS_POINTS_MAX: u32 = 10_000;
/// The most rates a festival may name.
pub const TAX_RATES_MAX: usize = 16;
/// The longest rate name, in bytes.
pub const TAX_RATE_NAME_LEN_MAX: usize = 32;

/// The name of a VAT rate (`standard`, `reduced`, `none`): 1 to 32 of `a-z`, `0-9`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaxRateName(String);

/// Why a text is not a rate name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a tax rate name is 1 to {TAX_RATE_NAME_LEN_MAX} characters of a-z, 0-9, '_' and '-', got {0:?}"
)]
pub struct TaxRateNameError(pub String);

impl TaxRateName {
    /// Checks a rate's name.
    pub fn parse(text: &str) -> Result<TaxRateName, TaxRateNameError> {
        let ok = (1..=TAX_RATE_NAME_LEN_MAX).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(TaxRateName(text.to_owned()))
        } else {
            Err(TaxRateNameError(text.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaxRateName {
    type Error = TaxRateNameError;
    fn try_from(text: String) -> Result<TaxRateName, TaxRateNameError> {
        TaxRateName::parse(&text)
    }
}

impl From<TaxRateName> for String {
    fn from(name: TaxRateName) -> String {
        name.0
    }
}

// Ord, Eq and Hash of the name are those of its text, so maps keyed by names can be looked
// up by `&str`.
impl std::borrow::Borrow<str> for TaxRateName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaxRateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One named rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRate {
    /// Its name.
    pub name: TaxRateName,
    /// Its rate in basis points of the net amount (1900: 19 %).
    pub basis_points: u32,
}

/// The festival's VAT rates (the ledger's `[taxes]`) and the one a product without its own
/// rate gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRates {
    rates: BTreeMap<TaxRateName, u32>,
    default: TaxRateName,
}

/// Why a set of rates is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxRatesError {
    /// No rate at all, or more than [`TAX_RATES_MAX`].
    #[error("between 1 and {TAX_RATES_MAX} rates, got {0}")]
    Count(usize),
    /// A rate above 100 %.
    #[error(
        "rate {name}: basis points between 0 and {TAX_RATE_BASIS_POINTS_MAX}, got {basis_points}"
    )]
    Rate {
        /// The rate.
        name: TaxRateName,
        /// Its value.
        basis_points: u32,
    },
    /// The default names no rate.
    #[error("default_rate {0} is not one of the rates")]
    UnknownDefault(TaxRateName),
}

impl TaxRates {
    /// Checks rates and their default.
    pub fn new(
        rates: BTreeMap<TaxRateName, u32>,
        default: TaxRateName,
    ) -> Result<TaxRates, TaxRatesError> {
        if rates.is_empty() || rates.len() > TAX_RATES_MAX {
            return Err(TaxRatesError::Count(rates.len()));
        }
        if let Some((name, &basis_points)) = rates
            .iter()
            .find(|(_, bp)| **bp > TAX_RATE_BASIS_POINTS_MAX)
        {
            return Err(TaxRatesError::Rate {
                name: name.clone(),
                basis_points,
            });
        }
        if !rates.contains_key(&default) {
            return Err(TaxRatesError::UnknownDefault(default));
        }
        Ok(TaxRates { rates, default })
    }

    /// One rate, `none` at 0 %, the default: a ledger without `[taxes]` records every sale
    /// as untaxed.
    pub fn untaxed() -> TaxRates {
        let none = TaxRateName("none".into());
        TaxRates {
            rates: BTreeMap::from([(none.clone(), 0)]),
            default: none,
        }
    }

    /// The rate a product gets: its own (`Some(name)`), or the default (`None`). `None` when
    /// the product names a rate these rates lack.
    pub fn resolve(&self, name: Option<&str>) -> Option<TaxRate> {
        let name = name.unwrap_or(self.default.as_str());
        self.rates
            .get_key_value(name)
            .map(|(name, &basis_points)| TaxRate {
                name: name.clone(),
                basis_points,
            })
    }

    /// The default rate's name.
    pub fn default_rate(&self) -> &TaxRateName {
        &self.default
    }

    /// Every rate, in byte order of its name.
    pub fn iter(&self) -> impl Iterator<Item = TaxRate> + '_ {
        self.rates.iter().map(|(name, &basis_points)| TaxRate {
            name: name.clone(),
            basis_points,
        })
    }
}

/// A gross amount split into net and tax: `net + tax = gross`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VatSplit {
    /// The amount without tax.
    pub net: Cents,
    /// The tax in it.
    pub tax: Cents,
}

/// Splits a gross amount at a rate in basis points (at most [`TAX_RATE_BASIS_POINTS_MAX`]):
/// `tax = gross × bp / (10000 + bp)` rounded half away from zero, `net = gross − tax`.
/// Exact for every `i64` amount: the tax is never larger in magnitude than the gross.
pub fn split_gross(gross: Cents, basis_points: u32) -> VatSplit {
    let bp = i128::from(basis_points.min(TAX_RATE_BASIS_POINTS_MAX));
    let numerator = i128::from(gross.get()) * bp;
    let denominator = 10_000 + bp;
    let magnitude = (2 * numerator.abs() + denominator) / (2 * denominator);
    let tax = if numerator < 0 { -magnitude } else { magnitude };
    // |tax| <= |gross| / 2 (bp <= 10000), so both fit in i64.
    let tax = i64::try_from(tax).unwrap_or(0);
    VatSplit {
        net: Cents::new(gross.get() - tax),
        tax: Cents::new(tax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(gross: i64, bp: u32) -> (i64, i64) {
        let s = split_gross(Cents::new(gross), bp);
        (s.net.get(), s.tax.get())
    }

    #[test]
    fn splits_gross_prices_at_common_rates() {
        // 4.50 at 19 %: 450 / 1.19 = 378.15..., tax 71.84... -> 72.
        assert_eq!(split(450, 1900), (378, 72));
        // 4.50 at 7 %: tax 29.43... -> 29.
        assert_eq!(split(450, 700), (421, 29));
        assert_eq!(split(450, 0), (450, 0));
        assert_eq!(split(0, 1900), (0, 0));
        // 1 cent at 19 %: tax 0.159... -> 0.
        assert_eq!(split(1, 1900), (1, 0));
        // 100 % (bp 10000): half of the gross.
        assert_eq!(split(200, 10_000), (100, 100));
    }

    #[test]
    fn an_exact_half_cent_rounds_away_from_zero() {
        // At 20 % the tax is gross / 6: 3 cents -> 0.5 -> 1, 9 -> 1.5 -> 2, 15 -> 2.5 -> 3.
        assert_eq!(split(3, 2000), (2, 1));
        assert_eq!(split(9, 2000), (7, 2));
        assert_eq!(split(15, 2000), (12, 3));
        assert_eq!(split(-3, 2000), (-2, -1));
        // At 100 % the tax is half: 105 -> 52.5 -> 53; 7 -> 3.5 -> 4.
        assert_eq!(split(105, 10_000), (52, 53));
        assert_eq!(split(7, 10_000), (3, 4));
        // Just below and above a half: at 20 %, 2 -> 0.33 -> 0 and 4 -> 0.67 -> 1.
        assert_eq!(split(2, 2000), (2, 0));
        assert_eq!(split(4, 2000), (3, 1));
        // Exact cents: 1.07 at 7 % has 7 cents of tax; 3.21 at 7 %, 21.
        assert_eq!(split(107, 700), (100, 7));
        assert_eq!(split(321, 700), (300, 21));
    }

    #[test]
    fn a_negative_amount_splits_as_the_exact_negative() {
        for gross in [1, 7, 105, 450, 999_999, 123_456_789] {
            for bp in [0, 500, 700, 1900, 2000, 10_000] {
                let (net, tax) = split(gross, bp);
                assert_eq!(split(-gross, bp), (-net, -tax), "{gross} at {bp}");
                assert_eq!(net + tax, gross);
            }
        }
    }

    #[test]
    fn the_extremes_of_i64_do_not_overflow() {
        let (net, tax) = split(i64::MAX, 10_000);
        assert_eq!(i128::from(net) + i128::from(tax), i128::from(i64::MAX));
        let (net, tax) = split(i64::MIN, 1900);
        assert_eq!(i128::from(net) + i128::from(tax), i128::from(i64::MIN));
    }

    #[test]
    fn the_tax_is_the_nearest_cent_to_the_exact_value() {
        // Against rational arithmetic: |tax - exact| <= 1/2, ties away from zero.
        for gross in -2_000i64..=2_000 {
            for bp in [0u32, 250, 700, 1900, 2100, 7700, 10_000] {
                let (_, tax) = split(gross, bp);
                let num = i128::from(gross) * i128::from(bp);
                let den = 10_000 + i128::from(bp);
                // 2 * |tax * den - num| <= den, and on a tie |tax| is the larger.
                let diff = i128::from(tax) * den - num;
                assert!(2 * diff.abs() <= den, "{gross} at {bp}: {tax}");
                if 2 * diff.abs() == den {
                    assert!(
                        i128::from(tax).abs() * den > num.abs(),
                        "tie {gross} at {bp}"
                    );
                }
            }
        }
    }

    #[test]
    fn rates_are_checked() {
        let name = |s: &str| TaxRateName::parse(s).unwrap();
        assert!(TaxRateName::parse("Standard").is_err());
        assert!(TaxRateName::parse("").is_err());
        assert!(TaxRateName::parse(&"a".repeat(33)).is_err());
        let rates = BTreeMap::from([(name("standard"), 1900), (name("none"), 0)]);
        let taxes = TaxRates::new(rates.clone(), name("standard")).unwrap();
        assert_eq!(taxes.resolve(None).unwrap().basis_points, 1900);
        assert_eq!(taxes.resolve(Some("none")).unwrap().basis_points, 0);
        assert_eq!(taxes.resolve(Some("reduced")), None);
        assert_eq!(
            TaxRates::new(rates.clone(), name("reduced")),
            Err(TaxRatesError::UnknownDefault(name("reduced")))
        );
        assert_eq!(
            TaxRates::new(BTreeMap::new(), name("none")),
            Err(TaxRatesError::Count(0))
        );
        let too_high = BTreeMap::from([(name("x"), 10_001)]);
        assert!(matches!(
            TaxRates::new(too_high, name("x")),
            Err(TaxRatesError::Rate { .. })
        ));
    }
}
