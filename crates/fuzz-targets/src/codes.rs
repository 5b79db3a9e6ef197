//! EMVCo merchant-presented QR payloads and citypay's payment codes (`citypay-codes`).

use citypay_codes::mpm::{MpmWarning, Payload, RawPayload};
use citypay_codes::payment_code::otp::{format_otp, hotp};
use citypay_codes::payment_code::{ALGORITHM, MAX_WINDOW_STEPS, OTP_DIGITS, PaymentCode, STEP_SECONDS};

/// A scanned QR payload (UTF-8 text), as `POST /v1/payments/qr` and `citypay inspect qr` read it.
///
/// A payload that decodes is the raw layer's decoding with meaning added; written again, it
/// is the input itself when its CRC was upper case (every length is two digits, so there is
/// one encoding), and it decodes to the same fields with the same warnings, less the
/// lower-case CRC, which the encoder never writes.
pub fn emvco_qr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let raw = RawPayload::decode(text);
    let Ok(payload) = Payload::decode(text) else { return };
    assert_eq!(raw.as_ref(), Ok(payload.raw()), "a payload decodes only as its raw layer does");
    let encoded = payload.encode();
    let lower_case_crc = payload.warnings().iter().any(|w| matches!(w, MpmWarning::CrcLowerCase { .. }));
    if !lower_case_crc {
        assert_eq!(encoded, text, "a payload with an upper-case CRC is its own encoding");
    }
    let again = Payload::decode(&encoded).expect("a payload's encoding decodes");
    assert_eq!(again.encode(), encoded);
    let expected: Vec<&MpmWarning> = payload
        .warnings()
        .iter()
        .filter(|w| !matches!(w, MpmWarning::CrcLowerCase { .. }))
        .collect();
    assert_eq!(again.warnings().iter().collect::<Vec<_>>(), expected);
    assert_eq!(again.amount_minor_units(), payload.amount_minor_units());
    assert_eq!(again.citypay_merchant(), payload.citypay_merchant());
    assert_eq!(again.schemes(), payload.schemes());
}

/// The secret of the device every payment code is checked against.
const SECRET: &[u8] = b"citypay fuzz device secret 32 b.";
/// The time codes are checked at: 2026-12-02 00:00:00 UTC.
const NOW: u64 = 1_796_169_600;

/// A scanned payment code, as the merchant's `POST /v1/trades/pay` and `/gateway.do`'s
/// `alipay.trade.pay` read `auth_code`.
///
/// A code that parses is written back exactly; one that verifies against the device's secret
/// is the code that device shows at the step found, within the window. The bytes as an HOTP
/// secret give an OTP of the right number of digits.
pub fn payment_code(data: &[u8]) {
    let otp = hotp(ALGORITHM, data, 0, OTP_DIGITS);
    assert_eq!(format_otp(otp, OTP_DIGITS).len(), OTP_DIGITS as usize);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = PaymentCode::parse(text) else { return };
    assert_eq!(format!("88{:08}{:08}", parsed.device, parsed.otp), text, "a parsed code is written back exactly");
    if let Some(step) = PaymentCode::verify(&parsed, SECRET, NOW, MAX_WINDOW_STEPS) {
        let current = NOW / STEP_SECONDS;
        assert!(step + u64::from(MAX_WINDOW_STEPS) >= current && step <= current + 1, "step {step} outside the window");
        assert_eq!(PaymentCode::generate(parsed.device, SECRET, step * STEP_SECONDS), text);
    }
}
