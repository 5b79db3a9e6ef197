//! Lower-case hex encoding and strict decoding.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// The lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    encode_into(bytes, &mut out);
    out
}

/// Decodes `text` (either case) into `out`, which must be exactly half its length.
/// Returns `false`, leaving `out` partly written, when `text` is not valid hex of that length.
pub fn decode_into(text: &str, out: &mut [u8]) -> bool {
    let text = text.as_bytes();
    if text.len() != out.len() * 2 {
        return false;
    }
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => *byte = (high << 4) | low,
            _ => return false,
        }
    }
    true
}

/// Decodes exactly `N` bytes of hex, or `None`.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    decode_into(text, &mut out).then_some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = encode(&bytes);
        let mut back = vec![0; 256];
        assert!(decode_into(&text, &mut back));
        assert_eq!(back, bytes);
        assert!(decode_into(&text.to_uppercase(), &mut back));
        assert_eq!(back, bytes);
    }

    #[test]
    fn rejects_bad_digits_and_lengths() {
        let mut out = [0; 2];
        assert!(!decode_into("0g00", &mut out));
        assert!(!decode_into("000", &mut out));
        assert!(!decode_into("000000", &mut out));
        assert!(!decode_into("00é0", &mut out));
        assert_eq!(decode::<2>("0aFF"), Some([0x0a, 0xff]));
        assert_eq!(decode::<2>("0aF"), None);
    }
}
