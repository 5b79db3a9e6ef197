//! HOTP (RFC 4226) and TOTP (RFC 6238) building blocks.
//!
//! HOTP: HMAC over the 8-byte big-endian counter, dynamic truncation to 31 bits, modulo
//! 10^digits. TOTP: HOTP with the counter `floor((unix_seconds - T0) / step)`, here with
//! T0 = 0 (the Unix epoch), as in RFC 6238's test vectors.

use hmac::{Hmac, KeyInit, Mac};

/// The HMAC hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-1, RFC 4226's original (20-byte MAC).
    Sha1,
    /// HMAC-SHA-256, allowed by RFC 6238 (32-byte MAC).
    Sha256,
}

/// The most digits an OTP has here: 10^9 is the largest power of ten below 2^31.
pub const MAX_DIGITS: u32 = 9;

/// The HMAC of `message` under `key`.
pub fn hmac(algorithm: Algorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(key, message),
        Algorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(key, message),
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length (RFC 2104 hashes long keys and pads short ones).
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 4226 section 5.3 dynamic truncation: the low nibble of the last byte picks an offset,
/// and the four bytes there, top bit cleared, form a 31-bit number.
///
/// # Panics
///
/// When `mac` is shorter than 20 bytes (no HMAC of SHA-1 or SHA-256 is).
pub fn dynamic_truncate(mac: &[u8]) -> u32 {
    assert!(
        mac.len() >= 20,
        "an HMAC-SHA-1 or longer MAC has at least 20 bytes"
    );
    let offset = usize::from(mac[mac.len() - 1] & 0x0F);
    let bytes = [
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ];
    u32::from_be_bytes(bytes) & 0x7FFF_FFFF
}

/// The HOTP value of `counter`: `dynamic_truncate(HMAC(secret, counter)) mod 10^digits`.
///
/// # Panics
///
/// When `digits` is 0 or over [`MAX_DIGITS`].
pub fn hotp(algorithm: Algorithm, secret: &[u8], counter: u64, digits: u32) -> u32 {
    assert!(
        (1..=MAX_DIGITS).contains(&digits),
        "an OTP has 1 to 9 digits, not {digits}"
    );
    let mac = hmac(algorithm, secret, &counter.to_be_bytes());
    dynamic_truncate(&mac) % 10u32.pow(digits)
}

/// The TOTP time step of `unix_seconds`: `floor(unix_seconds / step_seconds)`.
///
/// # Panics
///
/// When `step_seconds` is 0.
pub fn time_step(unix_seconds: u64, step_seconds: u64) -> u64 {
    assert!(step_seconds > 0, "a TOTP step lasts at least one second");
    unix_seconds / step_seconds
}

/// The TOTP value at `unix_seconds`: HOTP over [`time_step`].
///
/// # Panics
///
/// As [`hotp`] and [`time_step`].
pub fn totp(
    algorithm: Algorithm,
    secret: &[u8],
    unix_seconds: u64,
    step_seconds: u64,
    digits: u32,
) -> u32 {
    hotp(
        algorithm,
        secret,
        time_step(unix_seconds, step_seconds),
        digits,
    )
}

/// An OTP as text, zero-padded to `digits`.
pub fn format_otp(value: u32, digits: u32) -> String {
    format!("{value:0width$}", width = digits as usize)
}
