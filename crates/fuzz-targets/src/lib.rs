//! The fuzz targets: one function per parser of outside input, taking arbitrary bytes.
//!
//! Each target feeds the bytes to the parser and asserts what must always hold beyond not
//! panicking (a parsed value encodes back to its input, a masked number never shows the whole
//! number, a batch answers as one-by-one checks do...). A failed assertion or a panic is a
//! crash to afl. The afl binaries in `fuzz/` call these functions, and `tests/corpus.rs`
//! replays every file of `fuzz/corpus/<target>/` through them, so the corpus is a regression
//! suite of every plain `cargo test`.

mod codes;
mod fares;
mod gateway;
mod identity;
mod ride;
#[cfg(feature = "api")]
mod api;

pub use codes::{emvco_qr, payment_code};
pub use fares::gtfs_feed;
pub use gateway::gateway_key;
pub use identity::identity;
pub use ride::ride_code;
#[cfg(feature = "api")]
pub use api::{gateway_do, json_bodies};

/// A fuzz target: any bytes in; it panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by the name of its corpus folder and afl binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("emvco_qr", emvco_qr),
    ("payment_code", payment_code),
    ("identity", identity),
    ("ride_code", ride_code),
    ("gtfs_feed", gtfs_feed),
    ("gateway_key", gateway_key),
    #[cfg(feature = "api")]
    ("gateway_do", gateway_do),
    #[cfg(feature = "api")]
    ("json_bodies", json_bodies),
];
