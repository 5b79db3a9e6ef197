//! HOTP/TOTP against the RFC vectors, and citypay's payment code.

use citypay_codes::payment_code::otp::{
    Algorithm, dynamic_truncate, format_otp, hmac, hotp, time_step, totp,
};
use citypay_codes::payment_code::{CodeError, MAX_WINDOW_STEPS, ParsedCode, PaymentCode};

const RFC_SECRET: &[u8] = b"12345678901234567890";
const RFC_SECRET_SHA256: &[u8] = b"12345678901234567890123456789012";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let pairs = text.as_bytes().chunks(2);
    pairs
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// RFC 4226 Appendix D: count, HMAC-SHA-1, truncated decimal, HOTP.
const RFC4226: [(u64, &str, u32, u32); 10] = [
    (
        0,
        "cc93cf18508d94934c64b65d8ba7667fb7cde4b0",
        1_284_755_224,
        755_224,
    ),
    (
        1,
        "75a48a19d4cbe100644e8ac1397eea747a2d33ab",
        1_094_287_082,
        287_082,
    ),
    (
        2,
        "0bacb7fa082fef30782211938bc1c5e70416ff44",
        137_359_152,
        359_152,
    ),
    (
        3,
        "66c28227d03a2d5529262ff016a1e6ef76557ece",
        1_726_969_429,
        969_429,
    ),
    (
        4,
        "a904c900a64b35909874b33e61c5938a8e15ed1c",
        1_640_338_314,
        338_314,
    ),
    (
        5,
        "a37e783d7b7233c083d4f62926c7a25f238d0316",
        868_254_676,
        254_676,
    ),
    (
        6,
        "bc9cd28561042c83f219324d3c607256c03272ae",
        1_918_287_922,
        287_922,
    ),
    (
        7,
        "a4fb960c0bc06e1eabb804e5b397cdc4b45596fa",
        82_162_583,
        162_583,
    ),
    (
        8,
        "1b3c89f65e6c9e883012052823443f048b4332db",
        673_399_871,
        399_871,
    ),
    (
        9,
        "1637409809a679dc698207310c8c7fc07290d9e5",
        645_520_489,
        520_489,
    ),
];

#[test]
fn rfc4226_appendix_d() {
    for (counter, mac, truncated, value) in RFC4226 {
        let computed = hmac(Algorithm::Sha1, RFC_SECRET, &counter.to_be_bytes());
        assert_eq!(hex(&computed), mac, "HMAC of count {counter}");
        assert_eq!(
            dynamic_truncate(&unhex(mac)),
            truncated,
            "truncation of count {counter}"
        );
        assert_eq!(
            hotp(Algorithm::Sha1, RFC_SECRET, counter, 6),
            value,
            "HOTP {counter}"
        );
    }
}

/// RFC 6238 Appendix B: time, SHA-1 TOTP, SHA-256 TOTP (8 digits, 30 s step, T0 = 0).
const RFC6238: [(u64, &str, &str); 6] = [
    (59, "94287082", "46119246"),
    (1_111_111_109, "07081804", "68084774"),
    (1_111_111_111, "14050471", "67062674"),
    (1_234_567_890, "89005924", "91819424"),
    (2_000_000_000, "69279037", "90698825"),
    (20_000_000_000, "65353130", "77737706"),
];

#[test]
fn rfc6238_appendix_b() {
    for (time, sha1, sha256) in RFC6238 {
        let value = totp(Algorithm::Sha1, RFC_SECRET, time, 30, 8);
        assert_eq!(format_otp(value, 8), sha1, "SHA-1 at {time}");
        let value = totp(Algorithm::Sha256, RFC_SECRET_SHA256, time, 30, 8);
        assert_eq!(format_otp(value, 8), sha256, "SHA-256 at {time}");
    }
    assert_eq!(time_step(59, 30), 1);
    // The "Value of T (hex)" column.
    assert_eq!(time_step(1_111_111_109, 30), 0x0235_23EC);
    assert_eq!(time_step(20_000_000_000, 30), 0x27BC_86AA);
}

const SECRET: &[u8] = &[7; 32];
const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

#[test]
fn generated_codes_parse_back() {
    let code = PaymentCode::generate(1234, SECRET, NOW);
    assert_eq!(code.len(), 18);
    assert!(code.starts_with("8800001234"));
    let parsed = PaymentCode::parse(&code).unwrap();
    assert_eq!(parsed.device, 1234);
    assert_eq!(format!("{:08}", parsed.otp), &code[10..]);
    let max = PaymentCode::generate(99_999_999, SECRET, NOW);
    assert_eq!(PaymentCode::parse(&max).unwrap().device, 99_999_999);
}

#[test]
fn codes_change_with_the_step_and_the_secret() {
    let code = PaymentCode::generate(1, SECRET, NOW);
    assert_eq!(code, PaymentCode::generate(1, SECRET, NOW + 29));
    assert_ne!(code, PaymentCode::generate(1, SECRET, NOW + 30));
    assert_ne!(code, PaymentCode::generate(1, &[8; 32], NOW));
}

#[test]
fn verify_accepts_the_window_and_one_step_ahead() {
    let step = NOW / 30;
    let parsed = PaymentCode::parse(&PaymentCode::generate(5, SECRET, NOW)).unwrap();
    assert_eq!(PaymentCode::verify(&parsed, SECRET, NOW, 0), Some(step));
    assert_eq!(
        PaymentCode::verify(&parsed, SECRET, NOW + 29, 0),
        Some(step)
    );
    // Shown 60 s before the scan: two steps back.
    assert_eq!(
        PaymentCode::verify(&parsed, SECRET, NOW + 60, 2),
        Some(step)
    );
    assert_eq!(PaymentCode::verify(&parsed, SECRET, NOW + 60, 1), None);
    // A phone 30 s ahead: one step in the verifier's future.
    assert_eq!(
        PaymentCode::verify(&parsed, SECRET, NOW - 30, 2),
        Some(step)
    );
    assert_eq!(PaymentCode::verify(&parsed, SECRET, NOW - 60, 2), None);
    // Wrong secret.
    assert_eq!(PaymentCode::verify(&parsed, &[8; 32], NOW, 2), None);
}

#[test]
fn verify_caps_the_window() {
    let parsed = PaymentCode::parse(&PaymentCode::generate(5, SECRET, NOW)).unwrap();
    let cap = u64::from(MAX_WINDOW_STEPS);
    let at_cap = NOW + 30 * cap;
    assert_eq!(
        PaymentCode::verify(&parsed, SECRET, at_cap, u32::MAX),
        Some(NOW / 30)
    );
    assert_eq!(
        PaymentCode::verify(&parsed, SECRET, at_cap + 30, u32::MAX),
        None
    );
}

#[test]
fn verify_near_the_epoch_does_not_underflow() {
    let parsed = PaymentCode::parse(&PaymentCode::generate(5, SECRET, 0)).unwrap();
    assert_eq!(PaymentCode::verify(&parsed, SECRET, 0, 5), Some(0));
    let parsed = ParsedCode { device: 5, otp: 0 };
    let _ = PaymentCode::verify(&parsed, SECRET, u64::MAX, 3);
}

#[test]
fn parse_errors_are_precise() {
    let error = PaymentCode::parse("88000012341234567").unwrap_err();
    assert_eq!(error, CodeError::Length { found: 17 });
    assert_eq!(
        error.to_string(),
        "a citypay payment code has 18 digits, this one has 17 characters"
    );
    let error = PaymentCode::parse("8800001234123456七8").unwrap_err();
    assert_eq!(
        error,
        CodeError::NonDigit {
            position: 17,
            found: '七'
        }
    );
    let error = PaymentCode::parse("880000123412345 78").unwrap_err();
    assert_eq!(
        error,
        CodeError::NonDigit {
            position: 16,
            found: ' '
        }
    );
    let error = PaymentCode::parse("287634438256643941").unwrap_err();
    assert_eq!(
        error,
        CodeError::WrongPrefix {
            found: "28".into(),
            network: "an Alipay range"
        }
    );
    assert_eq!(
        error.to_string(),
        "payment code starts with 28 (an Alipay range), not citypay's 88"
    );
    let error = PaymentCode::parse("134567890123456789").unwrap_err();
    assert!(matches!(
        error,
        CodeError::WrongPrefix {
            network: "a WeChat Pay range",
            ..
        }
    ));
    assert!(matches!(
        PaymentCode::parse(""),
        Err(CodeError::Length { found: 0 })
    ));
}
