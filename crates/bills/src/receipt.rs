//! Electronic receipts: a paid bill's receipt is a JSON text signed with the platform's receipt
//! key (Ed25519). Anyone holding the text, the signature and the platform's public key can check
//! it offline; the key id inside the text says which key signed it, so keys can rotate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The platform's receipt signing key.
pub struct ReceiptSigner {
    key_id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// A receipt key's public half, published for verifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptPublicKey {
    /// Which key.
    pub key_id: u32,
    /// Ed25519 public key.
    pub bytes: [u8; 32],
}

impl ReceiptSigner {
    /// The key `key_id` from its 32-byte seed.
    pub fn from_seed(key_id: u32, seed: [u8; 32]) -> ReceiptSigner {
        ReceiptSigner { key_id, key: SigningKey::from_bytes(&seed) }
    }

    /// Its id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Its public half.
    pub fn public(&self) -> ReceiptPublicKey {
        ReceiptPublicKey { key_id: self.key_id, bytes: self.key.verifying_key().to_bytes() }
    }

    pub(crate) fn sign(&self, text: &str) -> [u8; 64] {
        self.key.sign(text.as_bytes()).to_bytes()
    }
}

/// A receipt as issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Its number.
    pub number: String,
    /// The signed JSON text, byte for byte.
    pub text: String,
    /// Ed25519 signature of `text`.
    pub signature: [u8; 64],
}

impl Receipt {
    /// The signature in standard base64, for the wire.
    pub fn signature_base64(&self) -> String {
        STANDARD.encode(self.signature)
    }
}

/// Why a receipt does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The text is not a receipt (not JSON, or no key id).
    #[error("not a receipt")]
    Malformed,
    /// No published key has this id.
    #[error("unknown receipt key {0}")]
    UnknownKey(u64),
    /// The signature does not match the text.
    #[error("the signature does not match the receipt")]
    BadSignature,
}

/// Checks a receipt's signature against the published keys.
pub fn verify_receipt(text: &str, signature: &[u8], keys: &[ReceiptPublicKey]) -> Result<(), ReceiptError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| ReceiptError::Malformed)?;
    let key_id = value.get("key_id").and_then(serde_json::Value::as_u64).ok_or(ReceiptError::Malformed)?;
    let key = keys.iter().find(|k| u64::from(k.key_id) == key_id).ok_or(ReceiptError::UnknownKey(key_id))?;
    let verifying = VerifyingKey::from_bytes(&key.bytes).map_err(|_| ReceiptError::UnknownKey(key_id))?;
    let signature = Signature::from_slice(signature).map_err(|_| ReceiptError::BadSignature)?;
    verifying.verify(text.as_bytes(), &signature).map_err(|_| ReceiptError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_verifies_and_any_change_breaks_it() {
        let signer = ReceiptSigner::from_seed(3, [7; 32]);
        let text = r#"{"amount":2372,"key_id":3,"receipt_no":"1"}"#;
        let signature = signer.sign(text);
        let keys = [signer.public()];
        assert_eq!(verify_receipt(text, &signature, &keys), Ok(()));
        let forged = text.replace("2372", "2373");
        assert_eq!(verify_receipt(&forged, &signature, &keys), Err(ReceiptError::BadSignature));
        let other = ReceiptSigner::from_seed(3, [8; 32]);
        assert_eq!(verify_receipt(text, &signature, &[other.public()]), Err(ReceiptError::BadSignature));
        assert_eq!(verify_receipt(r#"{"key_id":9}"#, &signature, &keys), Err(ReceiptError::UnknownKey(9)));
        assert_eq!(verify_receipt("not json", &signature, &keys), Err(ReceiptError::Malformed));
        assert_eq!(verify_receipt(text, &signature[..10], &keys), Err(ReceiptError::BadSignature));
    }
}
