//! Offline-verifiable ride codes: platform-signed rider credentials, rider-signed codes, and the
//! validator a gate or bus embeds.
//!
//! The scheme follows the two-level key hierarchy of the transport ministry's QR requirement and
//! of WeChat's ride code: the platform signs a short-lived *credential* (rider public key,
//! account reference, validity, deferred-debit ceiling); the rider's device signs each displayed
//! *code* (credential + time + counter) offline. A validator holding only the platform public keys
//! ([`PlatformKeyring`]) checks a code with no network call and records a [`Tap`] for later debit.
//!
//! No storage, no network and no clock reads: every time is passed in as unix seconds
//! ([`UnixTime`], a `u32`).
//!
//! # Ride code layout (version 1, [`CODE_LEN`] = 191 bytes, integers big-endian)
//!
//! | offset | len | field |
//! | ------ | --- | ----- |
//! | 0   | 1  | version, `0x01` |
//! | 1   | 32 | rider Ed25519 public key |
//! | 33  | 8  | account reference (`u64`) |
//! | 41  | 4  | credential `valid_from` (`u32` unix s, the issue time) |
//! | 45  | 4  | credential `valid_until` (`u32` unix s) |
//! | 49  | 4  | deferred-debit ceiling in fen (`u32`) |
//! | 53  | 2  | platform key id (`u16`) |
//! | 55  | 64 | platform Ed25519 signature over `"citypay-ride/credential/v1"` ‖ bytes 1..55 |
//! | 119 | 4  | code timestamp (`u32` unix s, device clock) |
//! | 123 | 4  | code counter (`u32`) |
//! | 127 | 64 | rider Ed25519 signature over `"citypay-ride/code/v1"` ‖ bytes 0..127 |
//!
//! Bytes 1..119 are the encoded [`Credential`] ([`CREDENTIAL_LEN`] = 118). The tags are
//! domain separation only and are not transmitted.
//!
//! # QR encoding
//!
//! The code goes into the QR code as raw bytes (byte mode). Base45 would turn 191 bytes into 287
//! alphanumeric characters: 287 × 5.5 = 1579 bits against 191 × 8 = 1528 bits in byte mode, so raw
//! bytes give the smaller payload (both land in version 10 today; raw bytes leave 22 bytes of headroom). Measured (test `qr_fits_version_10_at_level_m`): a code is
//! **QR version 10 at level M** (capacity 213 bytes; version 9 holds only 182), 57×57 modules.
//!
//! # Verification cost per tap
//!
//! Measured by [`Validator::signature_checks`] in the tests, not timed:
//! - first tap of a credential on a validator: **2** Ed25519 verifications (platform signature
//!   over the credential, then rider signature over the code);
//! - every later tap with the same credential (cached by hash, bounded): **1** verification;
//! - a refused code costs 0, 1 or 2, depending on where it fails (layout, key, period and deny
//!   checks run before any signature work);
//! - [`Validator::validate_batch`] of `n` codes carrying `k` uncached credentials does one batch
//!   verification of `n + k` signatures; only if the batch fails does it re-check each code alone.
//!
//! Single verifications use `verify_strict` (canonical, no weak keys). Batch verification uses
//! the batch equation of ed25519-dalek, which may accept a few non-canonical signatures that
//! `verify_strict` refuses; replay detection hashes the signed content, not the signature
//! ([`RideCode::code_hash`]), so that cannot be used to replay a code.
//!
//! # Check order
//!
//! Layout → version → platform key (known, not revoked, valid at issue, not expired at `now`) →
//! credential period → deny list → rider key → credential signature (cached) → rider signature →
//! freshness (default 60 s back, 10 s ahead) → replay. Never panics on any input.

mod code;
mod credential;
mod keys;
mod validator;
mod wire;

pub use code::{
    CODE_LEN, CODE_SIGNING_TAG, CODE_VERSION, QrError, RideCode, RiderDevice, qr_version_number,
    render_png, render_svg, PNG_MODULE_PX,
};
pub use credential::{
    CREDENTIAL_BODY_LEN, CREDENTIAL_LEN, CREDENTIAL_SIGNING_TAG, Credential, CredentialTerms,
    IssueError, issue_credential,
};
pub use keys::{
    DEVICE_SIGNING_TAG, DeviceKey, KeyError, PlatformKey, PlatformKeyring, PlatformPublicKey, RiderKey, UnixTime, Validity,
    verify_device_signature,
};
pub use validator::{Direction, Gate, Policy, Refusal, Tap, Validator};
