//! Platform signing keys, the public keyring validators hold, and rider keys.

use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Unix time in seconds. Stored as `u32` in every binary layout (good until 2106).
pub type UnixTime = u32;

/// Errors from building keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not a usable Ed25519 public key (not a point, or a weak small-order point).
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The operating system did not provide randomness.
    #[error("operating system randomness unavailable")]
    Randomness,
    /// `not_after` is before `not_before`.
    #[error("validity window ends before it starts")]
    EmptyValidity,
}

/// An inclusive validity window `[not_before, not_after]` in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First second at which the key may be used.
    pub not_before: UnixTime,
    /// Last second at which the key may be used.
    pub not_after: UnixTime,
}

impl Validity {
    /// Builds a window, refusing one that ends before it starts.
    pub fn new(not_before: UnixTime, not_after: UnixTime) -> Result<Self, KeyError> {
        if not_after < not_before {
            return Err(KeyError::EmptyValidity);
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// Whether `t` lies in the window (both ends included).
    pub fn contains(&self, t: UnixTime) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

fn random_seed() -> Result<[u8; 32], KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| KeyError::Randomness)?;
    Ok(seed)
}

/// A platform signing key: signs rider credentials. Keys rotate with overlapping windows.
pub struct PlatformKey {
    key_id: u16,
    signing: SigningKey,
    validity: Validity,
}

impl fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformKey")
            .field("key_id", &self.key_id)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl PlatformKey {
    /// Derives a key from a 32-byte Ed25519 seed (deterministic: tests, HSM-exported seeds).
    pub fn from_seed(key_id: u16, seed: [u8; 32], validity: Validity) -> Self {
        Self {
            key_id,
            signing: SigningKey::from_bytes(&seed),
            validity,
        }
    }

    /// Generates a fresh key from operating-system randomness.
    pub fn generate(key_id: u16, validity: Validity) -> Result<Self, KeyError> {
        Ok(Self::from_seed(key_id, random_seed()?, validity))
    }

    /// The key id carried in credentials.
    pub fn key_id(&self) -> u16 {
        self.key_id
    }

    /// The key's validity window.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// The same key over another window (a rotation ends the previous key's window early).
    pub fn with_validity(&self, validity: Validity) -> Self {
        Self { key_id: self.key_id, signing: self.signing.clone(), validity }
    }

    /// The public half, as distributed to validators.
    pub fn public(&self) -> PlatformPublicKey {
        PlatformPublicKey {
            key_id: self.key_id,
            key: self.signing.verifying_key(),
            validity: self.validity,
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

/// The public half of a [`PlatformKey`] with its id and validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformPublicKey {
    key_id: u16,
    key: VerifyingKey,
    validity: Validity,
}

impl PlatformPublicKey {
    /// Builds a public key from its 32 bytes, refusing invalid or weak points.
    pub fn from_bytes(key_id: u16, bytes: [u8; 32], validity: Validity) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self {
            key_id,
            key,
            validity,
        })
    }

    /// The key id.
    pub fn key_id(&self) -> u16 {
        self.key_id
    }

    /// The 32 public-key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The validity window.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// Platform public keys by id: what a validator holds to check credentials offline.
#[derive(Debug, Clone, Default)]
pub struct PlatformKeyring {
    keys: HashMap<u16, PlatformPublicKey>,
}

impl PlatformKeyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the key with this id.
    pub fn insert(&mut self, key: PlatformPublicKey) {
        self.keys.insert(key.key_id, key);
    }

    /// Removes a key (e.g. long after its `not_after`).
    pub fn remove(&mut self, key_id: u16) -> Option<PlatformPublicKey> {
        self.keys.remove(&key_id)
    }

    /// Looks a key up by id.
    pub fn get(&self, key_id: u16) -> Option<&PlatformPublicKey> {
        self.keys.get(&key_id)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The rider's device key: signs each displayed ride code.
pub struct RiderKey {
    signing: SigningKey,
}

impl fmt::Debug for RiderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RiderKey")
            .field("public", &self.public_bytes())
            .finish_non_exhaustive()
    }
}

impl RiderKey {
    /// Derives a rider key from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Generates a fresh rider key from operating-system randomness.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_seed(random_seed()?))
    }

    /// The 32 public-key bytes, sent to the platform at enrolment.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

/// Domain-separation prefix of what a validator device signs when it talks to the platform.
pub const DEVICE_SIGNING_TAG: &[u8] = b"citypay-validator/v1\n";

/// A validator device's key: authenticates its uploads and downloads to the platform.
pub struct DeviceKey {
    signing: SigningKey,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey").field("public", &self.public_bytes()).finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// Derives a device key from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { signing: SigningKey::from_bytes(&seed) }
    }

    /// The 32 public-key bytes, registered with the platform.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message` (prefixed with [`DEVICE_SIGNING_TAG`]).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        let mut tagged = DEVICE_SIGNING_TAG.to_vec();
        tagged.extend_from_slice(message);
        self.signing.sign(&tagged).to_bytes()
    }
}

/// Whether `signature` is the device key `public`'s signature of `message` (as
/// [`DeviceKey::sign`] makes it).
pub fn verify_device_signature(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else { return false };
    let mut tagged = DEVICE_SIGNING_TAG.to_vec();
    tagged.extend_from_slice(message);
    key.verify_strict(&tagged, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn device_signatures_verify_and_bind_the_message() {
        let key = DeviceKey::from_seed([3; 32]);
        let signature = key.sign(b"POST /v1/validators/1/taps\n100\n{}");
        assert!(verify_device_signature(&key.public_bytes(), b"POST /v1/validators/1/taps\n100\n{}", &signature));
        assert!(!verify_device_signature(&key.public_bytes(), b"POST /v1/validators/2/taps\n100\n{}", &signature));
        assert!(!verify_device_signature(&DeviceKey::from_seed([4; 32]).public_bytes(), b"POST /v1/validators/1/taps\n100\n{}", &signature));
    }
}
