//! Domain types shared by the ledger and the terminal: money, card identity, ids.
//!
//! Architecture invariant: this module does no IO and knows no transport. Every type checks
//! its invariant once, when it is built, so the rest of the program can rely on it.

mod age;
mod card;
mod day;
mod ids;
mod money;
mod tax;
mod vouchers;

pub use age::{AgeFlag, MinAge, MinAgeError, age_forbids};
pub use card::{CardUid, CardUidError};
pub use day::FestivalDay;
pub use ids::{
    ClientRequestId, IDENT_LEN_MAX, IdentError, ProductId, StaffId, TerminalSeq, TerminalSeqError,
};
pub use money::{Cents, MoneyOverflow};
pub use tax::{
    TAX_RATE_BASIS_POINTS_MAX, TAX_RATE_NAME_LEN_MAX, TAX_RATES_MAX, TaxRate, TaxRateName,
    TaxRateNameError, TaxRates, TaxRatesError, VatSplit, split_gross,
};
pub use vouchers::{VoucherLine, VoucherSplit, split_vouchers};
