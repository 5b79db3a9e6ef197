//! Key ids, the key-config parser shared by both key rings, and config generation.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::error::KeyConfigError;
use crate::hex;
use crate::secret::Secret;

/// Length in bytes of every vault key (AES-256 and HMAC-SHA256 keys alike).
pub const KEY_LEN: usize = 32;

/// The id of one key in a key ring. Sealed data and blind indexes carry it, so keys can rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A key's bytes, wiped on drop.
pub(crate) type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

/// A parsed config: every key by id, and the active id (always one of the keys).
pub(crate) struct KeyRing {
    pub(crate) keys: BTreeMap<KeyId, KeyBytes>,
    pub(crate) active: KeyId,
}

/// Parses `<id>:<64 hex digits>[,...];active=<id>` (see the crate docs).
pub(crate) fn parse(config: &str) -> Result<KeyRing, KeyConfigError> {
    let (entries, active) = config
        .split_once(';')
        .ok_or(KeyConfigError::MissingActive)?;
    let keys = parse_entries(entries)?;
    let active = parse_active(active)?;
    if !keys.contains_key(&active) {
        return Err(KeyConfigError::ActiveMissing(active));
    }
    Ok(KeyRing { keys, active })
}

fn parse_entries(entries: &str) -> Result<BTreeMap<KeyId, KeyBytes>, KeyConfigError> {
    if entries.trim().is_empty() {
        return Err(KeyConfigError::NoKeys);
    }
    let mut keys = BTreeMap::new();
    for (index, entry) in entries.split(',').enumerate() {
        let (id, key) = parse_entry(entry, index + 1)?;
        if keys.insert(id, key).is_some() {
            return Err(KeyConfigError::DuplicateId(id));
        }
    }
    Ok(keys)
}

fn parse_entry(entry: &str, position: usize) -> Result<(KeyId, KeyBytes), KeyConfigError> {
    let (id, key) = entry
        .split_once(':')
        .ok_or(KeyConfigError::BadEntry { position })?;
    let id = parse_id(id).ok_or(KeyConfigError::BadId { position })?;
    Ok((id, decode_key(id, key.trim())?))
}

fn parse_active(section: &str) -> Result<KeyId, KeyConfigError> {
    let value = section
        .trim()
        .strip_prefix("active=")
        .ok_or(KeyConfigError::BadActive)?;
    parse_id(value).ok_or(KeyConfigError::BadActive)
}

/// A decimal `u32`, digits only (no sign), surrounding spaces ignored.
fn parse_id(text: &str) -> Option<KeyId> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().map(KeyId)
}

fn decode_key(id: KeyId, text: &str) -> Result<KeyBytes, KeyConfigError> {
    if !text.is_ascii() {
        return Err(KeyConfigError::BadHex { id });
    }
    if text.len() != KEY_LEN * 2 {
        return Err(KeyConfigError::WrongLength {
            id,
            found: text.len(),
        });
    }
    let mut key = Zeroizing::new([0; KEY_LEN]);
    if !hex::decode_into(text, key.as_mut_slice()) {
        return Err(KeyConfigError::BadHex { id });
    }
    Ok(key)
}

/// Fills `buf` from the operating system's random number generator.
///
/// # Panics
///
/// If the operating system cannot supply randomness; carrying on without it would be worse.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if let Err(err) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed: {err}");
    }
}

/// A fresh config with one random key, id 1, active: `1:<64 hex digits>;active=1`.
pub(crate) fn generate() -> Secret<String> {
    let id = KeyId(1);
    let mut key = Zeroizing::new([0; KEY_LEN]);
    fill_random(key.as_mut_slice());
    let mut config = String::with_capacity(KEY_LEN * 2 + 32);
    config.push_str(&format!("{id}:"));
    hex::encode_into(key.as_slice(), &mut config);
    config.push_str(&format!(";active={id}"));
    Secret::new(config)
}
