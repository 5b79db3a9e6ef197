//! Error types. Their messages name key ids, positions and lengths, never key bytes or
//! plaintext.

use crate::config::KeyId;

/// Why sealed data could not be read or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The sealed data names a key id that this key ring does not hold.
    #[error("sealed data uses key id {0}, which is not configured (was it removed too early?)")]
    UnknownKey(KeyId),
    /// Authentication failed: the data was altered, or the context differs from the one it was
    /// sealed with.
    #[error("sealed data failed authentication: altered, or opened with the wrong context")]
    Tampered,
    /// The bytes are too few to hold a header, a nonce and a tag.
    #[error("sealed data is {len} bytes, fewer than the minimum of {min}")]
    TooShort {
        /// How many bytes there were.
        len: usize,
        /// The least a sealed value can have.
        min: usize,
    },
    /// The first byte is not a format version this crate writes.
    #[error("sealed data has unknown format version {0}")]
    UnknownVersion(u8),
}

/// Why a key config string was refused (format: `<id>:<64 hex digits>[,...];active=<id>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    /// There is no `;active=<id>` section.
    #[error(
        "key config has no `;active=<id>` section (format: `<id>:<64 hex digits>,...;active=<id>`)"
    )]
    MissingActive,
    /// The part after `;` is not `active=<decimal id>`.
    #[error("key config's last section must be `active=<decimal key id>`")]
    BadActive,
    /// No keys before the `;`.
    #[error("key config lists no keys")]
    NoKeys,
    /// An entry has no `:` between id and key.
    #[error("key config entry {position} is not `<id>:<64 hex digits>`")]
    BadEntry {
        /// The entry's position, counting from 1.
        position: usize,
    },
    /// An entry's id is not a decimal `u32`.
    #[error("key config entry {position} has an id that is not a decimal number up to 4294967295")]
    BadId {
        /// The entry's position, counting from 1.
        position: usize,
    },
    /// A key contains a character that is not a hex digit.
    #[error("key {id} is not valid hex")]
    BadHex {
        /// The key's id.
        id: KeyId,
    },
    /// A key is not 64 hex digits long.
    #[error("key {id} must be 64 hex digits (32 bytes), found {found} characters")]
    WrongLength {
        /// The key's id.
        id: KeyId,
        /// How many characters the key had.
        found: usize,
    },
    /// Two entries share an id.
    #[error("key id {0} appears more than once in the key config")]
    DuplicateId(KeyId),
    /// The active id names none of the keys.
    #[error("active key id {0} is not among the configured keys")]
    ActiveMissing(KeyId),
}
