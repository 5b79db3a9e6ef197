//! A merchant app's public key for `/gateway.do` (`citypay-gateway`).

use citypay_gateway::AppKey;

/// A merchant app's public key as `POST /v1/gateway/apps` reads it (PEM or bare base64), and
/// a request's signature checked with it.
///
/// The input is the key text, then a line `--- signature`, then the signature's base64 and the
/// signed content after a newline. A key that parses is 2048 to 8192 bits and parses again
/// from its own PEM and base64; no signature verifies over content it was not made for (the
/// corpus holds a real signature, so the fuzzer works on the verifying path too).
pub fn gateway_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (key_text, signed) = text.split_once("\n--- signature\n").unwrap_or((text, ""));
    let Ok(key) = AppKey::parse(key_text) else { return };
    assert!((2048..=8192).contains(&key.bits()));
    assert_eq!(AppKey::parse(&key.to_pem()).map(|k| k.to_base64()), Ok(key.to_base64()));
    assert_eq!(AppKey::parse(&key.to_base64()).map(|k| k.bits()), Ok(key.bits()));
    let (signature, content) = signed.split_once('\n').unwrap_or((signed, ""));
    if key.verify(content.as_bytes(), signature) {
        let mut other = content.as_bytes().to_vec();
        other.push(b'!');
        assert!(!key.verify(&other, signature), "a signature verified over two contents");
    }
}
