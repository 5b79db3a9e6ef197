//! The identity vault's cryptography: personal data sealed at rest under rotatable keys, and keyed
//! blind indexes to find it without decrypting.
//!
//! This crate does no storage and no serialisation beyond its own byte format; the directory layer
//! stores what it produces.
//!
//! - [`SealingKeys`] seals (AES-256-GCM) and opens personal data. Every [`Sealed`] value records
//!   the [`KeyId`] that sealed it, so old data keeps opening after a new key becomes active, and
//!   [`SealingKeys::reseal`] moves it to the active key.
//! - [`IndexKeys`] computes [`BlindIndex`]es (HMAC-SHA256) of normalised values such as resident
//!   ID numbers, so a lookup by ID number is an equality match on the index, never a
//!   decrypt-and-scan.
//! - [`Secret`] wraps decrypted data and generated configs: it never prints its contents and
//!   wipes them on drop.
//!
//! # Key configuration
//!
//! Both key rings are built from one string of the form
//!
//! ```text
//! <id>:<key>[,<id>:<key>...];active=<id>
//! ```
//!
//! where each `<id>` is a decimal `u32`, each `<key>` is exactly 64 hex digits (32 bytes, upper or
//! lower case), ids are unique, and the active id is one of them. Spaces around the parts are
//! ignored. Example (keys shortened): `3:9f1c…e0,2:40ab…77;active=3`. The active key seals or
//! indexes new data; every listed key opens or matches old data. To rotate, add a new key, make it
//! active, reseal or re-index, then drop the old key.
//!
//! # Sealed format
//!
//! [`Sealed::to_bytes`] writes a version byte (`1`), the key id (4 bytes, big-endian), the 12-byte
//! nonce, then the ciphertext with its 16-byte tag. The associated data is the version byte and
//! key id followed by the caller's context (for example `b"resident:42:id_number"`), so a
//! ciphertext copied to another row or field, or relabelled with another key id, fails to open.
//!
//! # Example
//!
//! ```
//! use citypay_vault::{IndexKeys, Sealed, SealingKeys};
//!
//! let sealing = SealingKeys::from_config(SealingKeys::generate_config().expose())?;
//! let index = IndexKeys::from_config(IndexKeys::generate_config().expose())?;
//!
//! // The caller normalises: trimmed, check character upper-cased.
//! let id_number = "11010519491231002x".trim().to_uppercase();
//! let context = b"resident:42:id_number";
//! let stored: Vec<u8> = sealing.seal(id_number.as_bytes(), context).to_bytes();
//! let lookup = index.index("resident_id", &id_number);
//!
//! let opened = sealing.open(&Sealed::from_bytes(&stored)?, context)?;
//! assert_eq!(opened.expose(), id_number.as_bytes());
//! assert!(index.candidates("resident_id", &id_number).contains(&lookup));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
pub mod hex;
mod index;
mod seal;
mod secret;

pub use config::{KEY_LEN, KeyId};
pub use error::{KeyConfigError, VaultError};
pub use index::{BlindIndex, IndexKeys};
pub use seal::{Sealed, SealingKeys};
pub use secret::Secret;
