//! Payment codes for citypay.
//!
//! Two kinds of code meet at a till:
//!
//! - [`mpm`]: EMVCo merchant-presented QR payloads (the sticker on the counter, or the QR a
//!   till shows for one order). The customer's app scans it, decodes it, and pays the merchant
//!   it names.
//! - [`payment_code`]: customer-presented one-time payment codes (付款码). The customer's
//!   phone derives an 18-digit code offline; the merchant's scanner reads it and the platform
//!   verifies it.
//!
//! The crate is pure: no I/O, no clock reads (the caller passes the time), no serde, and no
//! other workspace crate. It only identifies and checks codes; what to accept is the calling
//! service's decision.

pub mod mpm;
pub mod payment_code;
