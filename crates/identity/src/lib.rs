//! Pure checks on identity documents used by citypay's onboarding (KYC) and payment flows.
//!
//! - [`ResidentId`]: the 18-character PRC citizen ID number (GB 11643-1999).
//! - [`Uscc`]: the Unified Social Credit Code of a business or institution (GB 32100-2015).
//! - [`CardNumber`]: a bank card number (PAN) with its Luhn check and brand.
//! - [`AccountClass`]: the PBOC real-name payment-account classes and their balance limits.
//! - [`Region`]: the GB/T 2260 division codes issued since 1980, with their years.
//!
//! The crate does no I/O and reads no clock: a caller that needs "today" passes a
//! [`CivilDate`]. Personal numbers never appear in full in `Debug`, `Display` or error messages;
//! use [`ResidentId::masked`] and [`CardNumber::masked`] for logs and screens.

pub mod account_class;
pub mod card;
mod date;
pub mod region;
pub mod resident_id;
pub mod uscc;

pub use account_class::{AccountClass, BalancePaymentLimit, LimitWindow};
pub use card::{CardBrand, CardError, CardNumber, CardWarning, ParsedCard};
pub use date::CivilDate;
pub use region::Region;
pub use resident_id::{ResidentId, ResidentIdError, Sex};
pub use uscc::{Uscc, UsccError};
