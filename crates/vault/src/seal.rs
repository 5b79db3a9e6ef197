//! Sealing: AES-256-GCM under a ring of keys, one active.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{self, Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};

use crate::config::{self, KeyId};
use crate::error::{KeyConfigError, VaultError};
use crate::secret::Secret;

/// The only format version [`Sealed::to_bytes`] writes.
const VERSION: u8 = 1;
/// Version byte plus the key id.
const HEADER_LEN: usize = 1 + 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Header, nonce and tag: an empty plaintext seals to this many bytes.
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// AES-256-GCM keys by id: the active one seals, every one opens.
///
/// Built from a key config (see the crate docs). `Debug` shows only the ids.
pub struct SealingKeys {
    ciphers: BTreeMap<KeyId, Aes256Gcm>,
    active: KeyId,
}

impl SealingKeys {
    /// Parses a key config such as `3:<64 hex digits>,2:<64 hex digits>;active=3`.
    pub fn from_config(config: &str) -> Result<Self, KeyConfigError> {
        let ring = config::parse(config)?;
        let ciphers = ring
            .keys
            .iter()
            .map(|(id, key)| (*id, Aes256Gcm::new(<&Key<Aes256Gcm>>::from(&**key))))
            .collect();
        Ok(Self {
            ciphers,
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

    /// The id of the key that seals.
    pub fn active_id(&self) -> KeyId {
        self.active
    }

    /// Every configured key id, ascending.
    pub fn ids(&self) -> Vec<KeyId> {
        self.ciphers.keys().copied().collect()
    }

    /// Seals `plaintext` under the active key with a fresh random nonce, bound to `context`
    /// (for example `b"resident:42:id_number"`): opening needs the same context.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails, or `plaintext` exceeds the
    /// AES-GCM limit of 2^36 - 32 bytes.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let mut nonce = [0; NONCE_LEN];
        config::fill_random(&mut nonce);
        self.seal_with_nonce(nonce, plaintext, context)
    }

    /// Opens `sealed` with the key it names, checking it against `context`.
    ///
    /// Fails with [`VaultError::UnknownKey`] when that key is not configured, and
    /// [`VaultError::Tampered`] when the data or the context does not match.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Secret<Vec<u8>>, VaultError> {
        let cipher = self
            .ciphers
            .get(&sealed.key_id)
            .ok_or(VaultError::UnknownKey(sealed.key_id))?;
        let aad = associated_data(sealed.key_id, context);
        let payload = Payload {
            msg: &sealed.ciphertext,
            aad: &aad,
        };
        cipher
            .decrypt(gcm_nonce(&sealed.nonce), payload)
            .map(Secret::new)
            .map_err(|_| VaultError::Tampered)
    }

    /// Opens `sealed` under whichever key it names and seals it again under the active key with a
    /// fresh nonce (key rotation). The context stays the same.
    pub fn reseal(&self, sealed: &Sealed, context: &[u8]) -> Result<Sealed, VaultError> {
        let plaintext = self.open(sealed, context)?;
        Ok(self.seal(plaintext.expose(), context))
    }

    fn seal_with_nonce(&self, nonce: [u8; NONCE_LEN], plaintext: &[u8], context: &[u8]) -> Sealed {
        let cipher = self
            .ciphers
            .get(&self.active)
            .expect("the active key is configured (checked when parsing)");
        let aad = associated_data(self.active, context);
        Sealed {
            key_id: self.active,
            nonce,
            ciphertext: encrypt(cipher, &nonce, plaintext, &aad),
        }
    }
}

impl fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKeys")
            .field("ids", &self.ids())
            .field("active", &self.active)
            .finish()
    }
}

/// Raw AES-256-GCM: ciphertext followed by the tag.
fn encrypt(cipher: &Aes256Gcm, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    cipher
        .encrypt(gcm_nonce(nonce), payload)
        .expect("plaintext within the AES-GCM length limit")
}

fn gcm_nonce(nonce: &[u8; NONCE_LEN]) -> &aead::Nonce<Aes256Gcm> {
    nonce.into()
}

/// The header (version byte, key id big-endian) followed by the caller's context.
fn associated_data(key_id: KeyId, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + context.len());
    aad.extend_from_slice(&header(key_id));
    aad.extend_from_slice(context);
    aad
}

fn header(key_id: KeyId) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = key_id.0.to_be_bytes();
    [VERSION, a, b, c, d]
}

/// Personal data sealed under one key: the key id, the nonce, and the ciphertext with its tag.
///
/// Store it with [`Sealed::to_bytes`] and read it back with [`Sealed::from_bytes`].
/// `Debug` shows the key id and length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    key_id: KeyId,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// The id of the key that sealed this value.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Version byte, key id (4 bytes big-endian), nonce (12 bytes), ciphertext and tag.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + NONCE_LEN + self.ciphertext.len());
        bytes.extend_from_slice(&header(self.key_id));
        bytes.extend_from_slice(&self.nonce);
        bytes.extend_from_slice(&self.ciphertext);
        bytes
    }

    /// Reads the format [`Sealed::to_bytes`] writes. Authenticity is checked only by
    /// [`SealingKeys::open`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let too_short = VaultError::TooShort {
            len: bytes.len(),
            min: MIN_LEN,
        };
        let (&version, rest) = bytes.split_first().ok_or(too_short.clone())?;
        if version != VERSION {
            return Err(VaultError::UnknownVersion(version));
        }
        if bytes.len() < MIN_LEN {
            return Err(too_short);
        }
        let (id, rest) = rest.split_first_chunk::<4>().ok_or(too_short.clone())?;
        let (nonce, ciphertext) = rest.split_first_chunk::<NONCE_LEN>().ok_or(too_short)?;
        Ok(Self {
            key_id: KeyId(u32::from_be_bytes(*id)),
            nonce: *nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &(HEADER_LEN + NONCE_LEN + self.ciphertext.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    fn unhex(text: &str) -> Vec<u8> {
        let mut out = vec![0; text.len() / 2];
        assert!(hex::decode_into(text, &mut out));
        out
    }

    /// AES-256-GCM, test case 16 of McGrew & Viega, "The Galois/Counter Mode of Operation
    /// (GCM)", appendix B: 256-bit key, 96-bit IV, 60-byte plaintext, 20-byte AAD.
    const TC16_KEY: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    const TC16_IV: &str = "cafebabefacedbaddecaf888";
    const TC16_PLAINTEXT: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                                  1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    const TC16_AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    const TC16_CIPHERTEXT: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                                   8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
    const TC16_TAG: &str = "76fc6ece0f4e1768cddf8853bb2d551b";

    fn tc16_keys() -> SealingKeys {
        SealingKeys::from_config(&format!("7:{TC16_KEY};active=7")).expect("valid config")
    }

    fn tc16_nonce() -> [u8; NONCE_LEN] {
        unhex(TC16_IV).try_into().expect("12 bytes")
    }

    #[test]
    fn gcm_spec_test_case_16() {
        let keys = tc16_keys();
        let cipher = &keys.ciphers[&KeyId(7)];
        let sealed = encrypt(
            cipher,
            &tc16_nonce(),
            &unhex(TC16_PLAINTEXT),
            &unhex(TC16_AAD),
        );
        let expected = [unhex(TC16_CIPHERTEXT), unhex(TC16_TAG)].concat();
        assert_eq!(hex::encode(&sealed), hex::encode(&expected));
    }

    #[test]
    fn seal_is_gcm_over_header_and_context() {
        let keys = tc16_keys();
        let plaintext = unhex(TC16_PLAINTEXT);
        let sealed = keys.seal_with_nonce(tc16_nonce(), &plaintext, b"resident:42:id_number");
        let aad = [&[1, 0, 0, 0, 7][..], b"resident:42:id_number"].concat();
        let expected = encrypt(&keys.ciphers[&KeyId(7)], &tc16_nonce(), &plaintext, &aad);
        assert_eq!(sealed.ciphertext, expected);
        let bytes = sealed.to_bytes();
        assert_eq!(&bytes[..HEADER_LEN], &[1, 0, 0, 0, 7]);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN], &tc16_nonce());
        let opened = keys.open(&sealed, b"resident:42:id_number").expect("opens");
        assert_eq!(opened.expose(), &plaintext);
    }
}
