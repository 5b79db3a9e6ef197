//! RSA keys: a merchant app's public key, which verifies its requests, and the platform's key
//! pair, which signs answers and notifications. SHA256withRSA (RSA2), PKCS#1 v1.5, standard
//! base64. Signing and verifying are `ring`'s (constant-time); the `spki` and `der` crates only
//! read public keys' structure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::Reader;
use ring::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};

/// rsaEncryption, 1.2.840.113549.1.1.1 (RFC 8017).
const RSA_ENCRYPTION: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Shorter keys are refused (Alipay's RSA2 keys are 2048 bits).
const MIN_BITS: usize = 2048;
/// ring verifies up to 8192-bit moduli.
const MAX_BITS: usize = 8192;

/// Why a key was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64, not PEM, not DER of the expected structure.
    #[error("not an RSA public key (SPKI, PEM or bare base64): {0}")]
    Malformed(String),
    /// An RSA key, but too short or too long.
    #[error("an RSA key of {0} bits; 2048 to 8192 bits are accepted")]
    Size(usize),
    /// Not a PKCS#8 RSA private key ring accepts.
    #[error("not a PKCS#8 RSA private key: {0}")]
    Private(String),
}

/// A merchant app's RSA public key.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey {
    /// SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
    /// The RSAPublicKey (PKCS#1) inside it, which ring verifies with.
    pkcs1: Vec<u8>,
    bits: usize,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey").field("bits", &self.bits).finish_non_exhaustive()
    }
}

/// The DER inside `-----BEGIN PUBLIC KEY-----` armour, or a bare base64 key as Alipay's key
/// tool gives merchants (whitespace and line breaks anywhere).
fn unarmour(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim();
    let body: String = if text.starts_with("-----BEGIN ") {
        let begin = format!("-----BEGIN {label}-----");
        let Some(rest) = text.strip_prefix(&begin) else {
            let found = text.lines().next().unwrap_or_default();
            return Err(KeyError::Malformed(format!("expected {begin}, found {found}")));
        };
        let end = format!("-----END {label}-----");
        rest.split(&end).next().unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    };
    STANDARD.decode(body).map_err(|e| KeyError::Malformed(format!("base64: {e}")))
}

/// PEM armour around `der`, lines of 64 characters.
fn armour(der: &[u8], label: &str) -> String {
    let text = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The modulus size in bits of a PKCS#1 RSAPublicKey.
fn modulus_bits(pkcs1: &[u8]) -> Result<usize, der::Error> {
    let mut reader = der::SliceReader::new(pkcs1)?;
    let modulus = reader.sequence(|r| {
        let modulus: der::asn1::UintRef<'_> = r.decode()?;
        let _exponent: der::asn1::UintRef<'_> = r.decode()?;
        Ok::<_, der::Error>(modulus)
    })?;
    reader.finish()?;
    let bytes = modulus.as_bytes();
    let leading = bytes.first().map_or(0, |b| b.leading_zeros() as usize);
    Ok((bytes.len() * 8).saturating_sub(leading))
}

impl AppKey {
    /// A SubjectPublicKeyInfo RSA key of 2048 to 8192 bits, as PEM or bare base64.
    pub fn parse(text: &str) -> Result<AppKey, KeyError> {
        AppKey::from_spki(&unarmour(text, "PUBLIC KEY")?)
    }

    /// A SubjectPublicKeyInfo RSA key of 2048 to 8192 bits, DER.
    pub fn from_spki(der: &[u8]) -> Result<AppKey, KeyError> {
        let info = spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| KeyError::Malformed(e.to_string()))?;
        if info.algorithm.oid != RSA_ENCRYPTION {
            return Err(KeyError::Malformed(format!("algorithm {} is not RSA", info.algorithm.oid)));
        }
        let pkcs1 = info.subject_public_key.as_bytes().ok_or_else(|| KeyError::Malformed("the key's bit string".into()))?.to_vec();
        let bits = modulus_bits(&pkcs1).map_err(|e| KeyError::Malformed(e.to_string()))?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(KeyError::Size(bits));
        }
        Ok(AppKey { spki: der.to_vec(), pkcs1, bits })
    }

    /// Whether `signature` (standard base64) is this key's RSA2 signature of `content`.
    pub fn verify(&self, content: &[u8], signature: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature.trim()) else { return false };
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.pkcs1).verify(content, &signature).is_ok()
    }

    /// The key as bare base64 of its DER, as stored and as Alipay's tools show it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.spki)
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> String {
        armour(&self.spki, "PUBLIC KEY")
    }

    /// The modulus size.
    pub fn bits(&self) -> usize {
        self.bits
    }
}

/// The platform's RSA key pair with its id.
pub struct PlatformKey {
    id: u32,
    pair: RsaKeyPair,
    public: AppKey,
}

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The DER SubjectPublicKeyInfo of a PKCS#1 RSAPublicKey: the rsaEncryption algorithm with
/// NULL parameters, and the key in a BIT STRING.
fn spki_of(pkcs1: &[u8]) -> Result<Vec<u8>, der::Error> {
    use der::Encode;
    let info = spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifier { oid: RSA_ENCRYPTION, parameters: Some(der::asn1::AnyRef::NULL) },
        subject_public_key: der::asn1::BitStringRef::from_bytes(pkcs1)?,
    };
    info.to_der()
}

impl PlatformKey {
    /// A key pair from its PKCS#8 DER (as `openssl genpkey -algorithm RSA -outform DER` writes
    /// it), 2048 to 8192 bits.
    pub fn from_pkcs8(id: u32, der: &[u8]) -> Result<PlatformKey, KeyError> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| KeyError::Private(e.to_string()))?;
        let spki = spki_of(pair.public_key().as_ref()).map_err(|e| KeyError::Private(e.to_string()))?;
        let public = AppKey::from_spki(&spki)?;
        Ok(PlatformKey { id, pair, public })
    }

    /// The key's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The RSA2 signature of `content`, standard base64.
    pub fn sign(&self, content: &[u8]) -> String {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        // Fails only for a buffer of the wrong size or a broken random source.
        self.pair.sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), content, &mut signature).expect("RSA signing");
        STANDARD.encode(signature)
    }

    /// The public half, as merchants configure it.
    pub fn public(&self) -> &AppKey {
        &self.public
    }
}

/// The platform's key pairs. Each app is signed for by one of them; the newest is given to new
/// apps, and an app moves to a newer one when its merchant has configured that key's public
/// half (the rotation's overlap).
#[derive(Debug, Default)]
pub struct PlatformKeys {
    keys: Vec<PlatformKey>,
}

impl PlatformKeys {
    /// The set, in any order.
    pub fn new(mut keys: Vec<PlatformKey>) -> PlatformKeys {
        keys.sort_by_key(PlatformKey::id);
        PlatformKeys { keys }
    }

    /// The key with this id.
    pub fn get(&self, id: u32) -> Option<&PlatformKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The newest key (the highest id).
    pub fn newest(&self) -> Option<&PlatformKey> {
        self.keys.last()
    }

    /// Every key, oldest first.
    pub fn all(&self) -> &[PlatformKey] {
        &self.keys
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 2048-bit test key pair (PKCS#8), made once with `openssl genpkey`.
    pub(crate) fn test_key() -> PlatformKey {
        PlatformKey::from_pkcs8(7, &STANDARD.decode(include_str!("../tests/test-key.pk8.b64").trim()).unwrap()).map_err(|e| e.to_string()).unwrap()
    }

    #[test]
    fn signatures_verify_with_the_published_key_and_nothing_else() {
        let key = test_key();
        let signature = key.sign(b"a=1&b=2");
        assert_eq!(signature.len(), 344);
        let public = AppKey::parse(&key.public().to_pem()).unwrap();
        assert_eq!(public.bits(), 2048);
        assert!(public.verify(b"a=1&b=2", &signature));
        assert!(!public.verify(b"a=1&b=3", &signature));
        assert!(!public.verify(b"a=1&b=2", "not base64!"));
        // Bare base64, with line breaks, reads the same.
        let bare = public.to_base64();
        let wrapped: String = bare.as_bytes().chunks(60).map(|c| format!("{}\n", std::str::from_utf8(c).unwrap())).collect();
        assert_eq!(AppKey::parse(&wrapped).unwrap(), public);
    }

    #[test]
    fn the_published_key_is_what_openssl_writes() {
        // `openssl pkey -in test-key.pem -pubout`, for the same key.
        assert_eq!(test_key().public().to_pem(), include_str!("../tests/test-key.pub.pem"));
    }

    #[test]
    fn short_keys_and_other_algorithms_are_refused() {
        // A 1024-bit RSA key and a P-256 key (`openssl genpkey ... | openssl pkey -pubout`).
        assert_eq!(AppKey::parse(include_str!("../tests/rsa1024.pub.pem")), Err(KeyError::Size(1024)));
        assert!(matches!(AppKey::parse(include_str!("../tests/p256.pub.pem")), Err(KeyError::Malformed(_))));
        assert!(matches!(AppKey::parse("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----"), Err(KeyError::Malformed(_))));
        assert!(matches!(AppKey::parse("@@@"), Err(KeyError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn no_key_text_panics(text in ".{0,400}") {
            let _ = AppKey::parse(&text);
        }
    }
}
