//! Blind indexes: HMAC-SHA256 of normalised values under a ring of keys, one active.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{self, KeyBytes, KeyId};
use crate::error::KeyConfigError;
use crate::hex;
use crate::secret::Secret;

/// HMAC-SHA256 keys by id for blind indexes: the active one indexes new values, every one is
/// tried on lookup while keys rotate.
///
/// Built from a key config (see the crate docs). `Debug` shows only the ids.
pub struct IndexKeys {
    keys: BTreeMap<KeyId, KeyBytes>,
    active: KeyId,
}

impl IndexKeys {
    /// Parses a key config such as `3:<64 hex digits>,2:<64 hex digits>;active=3`.
    pub fn from_config(config: &str) -> Result<Self, KeyConfigError> {
        let ring = config::parse(config)?;
        Ok(Self {
            keys: ring.keys,
            active: ring.active,
        })
    }

    /// A fresh config with one random key (id 1, active), for `citypay admin`.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate_config() -> Secret<String> {
        config::generate()
    }

    /// The id of the key that indexes new values.
    pub fn active_id(&self) -> KeyId {
        self.active
    }

    /// Every configured key id, ascending.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.keys().copied().collect()
    }

    /// The blind index of `normalized` under the active key.
    ///
    /// `kind` separates domains (`"resident_id"`, `"phone"`, ...): the same value under two
    /// kinds gives unrelated digests. The caller normalises first, because only identical strings
    /// match: for example a resident ID number trimmed and with its check character `x`
    /// upper-cased to `X`.
    pub fn index(&self, kind: &str, normalized: &str) -> BlindIndex {
        let key = self
            .keys
            .get(&self.active)
            .expect("the active key is configured (checked when parsing)");
        index_under(self.active, key, kind, normalized)
    }

    /// The blind index of `normalized` under every configured key, the active key's first and
    /// then by descending id: look rows up by any of them while keys rotate.
    pub fn candidates(&self, kind: &str, normalized: &str) -> Vec<BlindIndex> {
        let mut out = vec![self.index(kind, normalized)];
        let others = self.keys.iter().rev().filter(|(id, _)| **id != self.active);
        out.extend(others.map(|(id, key)| index_under(*id, key, kind, normalized)));
        out
    }
}

impl fmt::Debug for IndexKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexKeys")
            .field("ids", &self.ids())
            .field("active", &self.active)
            .finish()
    }
}

/// HMAC-SHA256 over `len(kind)` (8 bytes big-endian), `kind`, then `normalized`: the length
/// prefix makes the encoding unambiguous for any strings.
fn index_under(key_id: KeyId, key: &KeyBytes, kind: &str, normalized: &str) -> BlindIndex {
    let kind_len = (kind.len() as u64).to_be_bytes();
    let parts: [&[u8]; 3] = [&kind_len, kind.as_bytes(), normalized.as_bytes()];
    BlindIndex {
        key_id,
        digest: hmac_sha256(key.as_slice(), &parts),
    }
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A keyed digest of a normalised value, with the id of the key that made it. Store both; find
/// rows by comparing them. Equality is constant-time in the digest.
#[derive(Clone, Copy)]
pub struct BlindIndex {
    /// The index key that computed the digest.
    pub key_id: KeyId,
    /// HMAC-SHA256 of the kind and the normalised value.
    pub digest: [u8; 32],
}

impl BlindIndex {
    /// The digest in lower-case hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(&self.digest)
    }
}

impl ConstantTimeEq for BlindIndex {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.key_id.0.ct_eq(&other.key_id.0) & self.digest.ct_eq(&other.digest)
    }
}

impl PartialEq for BlindIndex {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for BlindIndex {}

impl Hash for BlindIndex {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_id.hash(state);
        self.digest.hash(state);
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndex")
            .field("key_id", &self.key_id)
            .field("digest", &self.to_hex())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, "Identifiers and Test Vectors for HMAC-SHA-224, HMAC-SHA-256, HMAC-SHA-384,
    /// and HMAC-SHA-512", section 4, test cases 1 to 4 (HMAC-SHA-256 column).
    #[test]
    fn rfc_4231_test_cases_1_to_4() {
        let case4_key: Vec<u8> = (0x01..=0x19).collect();
        let cases: [(&[u8], &[u8], &str); 4] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &case4_key,
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
        ];
        for (key, data, expected) in cases {
            assert_eq!(hex::encode(&hmac_sha256(key, &[data])), expected);
            let (head, tail) = data.split_at(data.len() / 2);
            assert_eq!(hex::encode(&hmac_sha256(key, &[head, tail])), expected);
        }
    }

    #[test]
    fn index_is_hmac_of_length_prefixed_kind_and_value() {
        let keys = IndexKeys::from_config(&format!("5:{};active=5", "ab".repeat(32)))
            .expect("valid config");
        let message = [
            &11u64.to_be_bytes()[..],
            b"resident_id",
            b"11010519491231002X",
        ]
        .concat();
        let expected = hmac_sha256(&[0xab; 32], &[&message]);
        let index = keys.index("resident_id", "11010519491231002X");
        assert_eq!(index.key_id, KeyId(5));
        assert_eq!(index.digest, expected);
    }
}
