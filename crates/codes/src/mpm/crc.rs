//! The payload checksum, data object 63.
//!
//! CRC-16/CCITT-FALSE (ISO/IEC 13239): polynomial 0x1021, initial value 0xFFFF, no reflection,
//! no final XOR; the `crc` crate catalogues it as `CRC_16_IBM_3740`. It covers the UTF-8
//! bytes of the whole payload up to and including the `6304` that opens data object 63, and
//! is written as four upper-case hex digits.

/// The catalogue entry for CRC-16/CCITT-FALSE.
const CCITT_FALSE: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

/// The CRC of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    CCITT_FALSE.checksum(bytes)
}

/// The CRC of `text`'s UTF-8 bytes as four upper-case hex digits, as data object 63 holds it.
///
/// `text` is everything up to and including `6304`.
pub fn checksum_hex(text: &str) -> String {
    format!("{:04X}", checksum(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_check_value() {
        // The check value every CRC catalogue lists for CRC-16/CCITT-FALSE.
        assert_eq!(checksum(b"123456789"), 0x29B1);
        assert_eq!(checksum_hex("123456789"), "29B1");
    }

    #[test]
    fn pads_to_four_digits() {
        assert_eq!(checksum_hex("").len(), 4);
        assert_eq!(checksum_hex(""), "FFFF");
    }
}
