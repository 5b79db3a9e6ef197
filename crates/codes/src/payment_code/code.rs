//! citypay's 18-digit payment code: prefix, device number, TOTP.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::otp::{Algorithm, format_otp, hotp, time_step};

/// The routing prefix of every citypay payment code.
pub const PREFIX: &str = "88";
/// Digits in a whole code.
pub const CODE_DIGITS: usize = 18;
/// Digits of the device number.
pub const DEVICE_DIGITS: usize = 8;
/// Digits of the TOTP.
pub const OTP_DIGITS: u32 = 8;
/// Device numbers are below this: 10^8.
pub const DEVICE_LIMIT: u32 = 100_000_000;
/// Length of a TOTP step in seconds.
pub const STEP_SECONDS: u64 = 30;
/// The HMAC the TOTP uses.
pub const ALGORITHM: Algorithm = Algorithm::Sha256;
/// The most previous steps [`PaymentCode::verify`] looks back (5 minutes).
pub const MAX_WINDOW_STEPS: u32 = 10;

/// Why a scanned string is not a citypay payment code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not 18 characters.
    #[error("a citypay payment code has 18 digits, this one has {found} characters")]
    Length {
        /// Characters found.
        found: usize,
    },
    /// A character that is not an ASCII digit.
    #[error("character {position} of the payment code is {found:?}, not a digit")]
    NonDigit {
        /// 1-based position of the first offending character.
        position: usize,
        /// The character.
        found: char,
    },
    /// A prefix other than `88`.
    #[error("payment code starts with {found} ({network}), not citypay's 88")]
    WrongPrefix {
        /// The first two digits.
        found: String,
        /// Whose range the prefix is in, as far as citypay knows.
        network: &'static str,
    },
}

/// The parts of a well-formed payment code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedCode {
    /// The device number, below [`DEVICE_LIMIT`].
    pub device: u32,
    /// The 8-digit OTP, below 10^8.
    pub otp: u32,
}

/// citypay's customer-presented payment codes (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct PaymentCode;

impl PaymentCode {
    /// The code device `device` shows at `unix_seconds`, from its `secret`.
    ///
    /// # Panics
    ///
    /// When `device` is not below [`DEVICE_LIMIT`]; enrolment hands out slots below it.
    pub fn generate(device: u32, secret: &[u8], unix_seconds: u64) -> String {
        assert!(
            device < DEVICE_LIMIT,
            "device number {device} has more than 8 digits"
        );
        let step = time_step(unix_seconds, STEP_SECONDS);
        let otp = hotp(ALGORITHM, secret, step, OTP_DIGITS);
        format!("{PREFIX}{device:08}{}", format_otp(otp, OTP_DIGITS))
    }

    /// Splits a scanned code into device number and OTP; checks length, digits and prefix,
    /// in that order.
    pub fn parse(text: &str) -> Result<ParsedCode, CodeError> {
        let found = text.chars().count();
        if found != CODE_DIGITS {
            return Err(CodeError::Length { found });
        }
        if let Some((index, found)) = text.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(CodeError::NonDigit {
                position: index + 1,
                found,
            });
        }
        // All 18 characters are ASCII digits, so byte slicing is safe from here.
        let prefix = &text[..PREFIX.len()];
        if prefix != PREFIX {
            let network = network_of(prefix);
            return Err(CodeError::WrongPrefix {
                found: prefix.to_owned(),
                network,
            });
        }
        let device_end = PREFIX.len() + DEVICE_DIGITS;
        let device = digits_value(&text[PREFIX.len()..device_end]);
        let otp = digits_value(&text[device_end..]);
        Ok(ParsedCode { device, otp })
    }

    /// The time step whose OTP `parsed` carries, if it is the current step, one of the
    /// `window_steps` previous ones (at most [`MAX_WINDOW_STEPS`]; more are treated as that),
    /// or the next one. `None` otherwise.
    ///
    /// Every candidate step is computed and compared in constant time, so the time taken
    /// does not tell which step (if any) matched. When two steps match (two OTPs can
    /// coincide), the later is returned. The caller must refuse a step at or below the last
    /// one it accepted for the device.
    pub fn verify(
        parsed: &ParsedCode,
        secret: &[u8],
        unix_seconds: u64,
        window_steps: u32,
    ) -> Option<u64> {
        let current = time_step(unix_seconds, STEP_SECONDS);
        let window = u64::from(window_steps.min(MAX_WINDOW_STEPS));
        let first = current.saturating_sub(window);
        let last = current.saturating_add(1);
        let mut found = Choice::from(0);
        let mut matched = 0u64;
        for step in first..=last {
            let hit = hotp(ALGORITHM, secret, step, OTP_DIGITS).ct_eq(&parsed.otp);
            matched.conditional_assign(&step, hit);
            found |= hit;
        }
        bool::from(found).then_some(matched)
    }
}

/// The value of a run of at most nine ASCII digits.
fn digits_value(digits: &str) -> u32 {
    debug_assert!(digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit()));
    digits
        .bytes()
        .fold(0, |total, b| total * 10 + u32::from(b - b'0'))
}

/// Whose payment-code range a two-digit prefix falls in (`../shared/guide/domain.md` section 2).
fn network_of(prefix: &str) -> &'static str {
    match prefix {
        "10" | "11" | "12" | "13" | "14" | "15" => "a WeChat Pay range",
        "25" | "26" | "27" | "28" | "29" | "30" => "an Alipay range",
        "62" => "UnionPay's range",
        _ => "no network citypay knows",
    }
}
