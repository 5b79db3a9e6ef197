//! Rider credentials: the platform-signed static part of every ride code.

use ed25519_dalek::Signer;

use crate::keys::{PlatformKey, UnixTime};
use crate::wire::{Reader, put_u16, put_u32, put_u64};

/// Domain-separation prefix of the message the platform signs (not part of the encoding).
pub const CREDENTIAL_SIGNING_TAG: &[u8] = b"citypay-ride/credential/v1";

/// Length of the signed credential body (everything before the platform signature).
pub const CREDENTIAL_BODY_LEN: usize = 32 + 8 + 4 + 4 + 4 + 2;

/// Length of an encoded credential: body + 64-byte platform signature (118 bytes).
pub const CREDENTIAL_LEN: usize = CREDENTIAL_BODY_LEN + 64;

/// What the platform grants an enrolled rider for a short period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialTerms {
    /// The rider device's Ed25519 public key.
    pub rider_key: [u8; 32],
    /// Opaque account reference, resolved by the platform when trips are debited.
    pub account_ref: u64,
    /// First second the credential is valid (its issue time).
    pub valid_from: UnixTime,
    /// Last second the credential is valid.
    pub valid_until: UnixTime,
    /// Spending ceiling for deferred debit, in fen.
    pub ceiling_fen: u32,
}

/// A platform-signed credential, embedded in every ride code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// The granted terms.
    pub terms: CredentialTerms,
    /// Id of the platform key that signed it.
    pub key_id: u16,
    /// Ed25519 signature by that key over [`Credential::signed_message`].
    pub signature: [u8; 64],
}

/// Why a credential could not be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// `valid_until` is before `valid_from`.
    #[error("credential period ends before it starts")]
    EmptyPeriod,
    /// The platform key is not valid at `valid_from`.
    #[error("platform key {key_id} is not valid at the credential's issue time")]
    KeyNotValid {
        /// The key's id.
        key_id: u16,
    },
}

/// Signs `terms` with the platform key, producing a credential.
pub fn issue_credential(
    key: &PlatformKey,
    terms: CredentialTerms,
) -> Result<Credential, IssueError> {
    if terms.valid_until < terms.valid_from {
        return Err(IssueError::EmptyPeriod);
    }
    let key_id = key.key_id();
    if !key.validity().contains(terms.valid_from) {
        return Err(IssueError::KeyNotValid { key_id });
    }
    let unsigned = Credential {
        terms,
        key_id,
        signature: [0; 64],
    };
    let signature = key
        .signing_key()
        .sign(&unsigned.signed_message())
        .to_bytes();
    Ok(Credential {
        signature,
        ..unsigned
    })
}

impl Credential {
    /// The fixed binary body (bytes 0..54 of the credential layout).
    pub fn body(&self) -> Vec<u8> {
        let t = &self.terms;
        let mut out = Vec::with_capacity(CREDENTIAL_BODY_LEN);
        out.extend_from_slice(&t.rider_key);
        put_u64(&mut out, t.account_ref);
        put_u32(&mut out, t.valid_from);
        put_u32(&mut out, t.valid_until);
        put_u32(&mut out, t.ceiling_fen);
        put_u16(&mut out, self.key_id);
        out
    }

    /// The message the platform signs: [`CREDENTIAL_SIGNING_TAG`] followed by [`Credential::body`].
    pub fn signed_message(&self) -> Vec<u8> {
        let mut msg = CREDENTIAL_SIGNING_TAG.to_vec();
        msg.extend_from_slice(&self.body());
        msg
    }

    /// Encodes the credential ([`CREDENTIAL_LEN`] bytes): body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes [`Credential::to_bytes`] (layout only; the signature is the validator's to check).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        let credential = Self::read(&mut r)?;
        r.is_empty().then_some(credential)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Option<Self> {
        let terms = CredentialTerms {
            rider_key: r.array()?,
            account_ref: r.u64()?,
            valid_from: r.u32()?,
            valid_until: r.u32()?,
            ceiling_fen: r.u32()?,
        };
        Some(Self {
            terms,
            key_id: r.u16()?,
            signature: r.array()?,
        })
    }
}
