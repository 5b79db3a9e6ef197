//! Customer-presented one-time payment codes (付款码), derived offline on the customer's phone.
//!
//! # The code
//!
//! 18 digits: `88` + an 8-digit device number + an 8-digit TOTP.
//!
//! - **Prefix `88`.** Alipay and WeChat Pay route by prefix: Alipay uses 25–30 (16–24 digits),
//!   WeChat Pay 10–15 (18 digits), UnionPay's QR payment code 62 (19 digits)
//!   (`../shared/guide/domain.md` section 2). citypay takes `88`, outside all three, so a till
//!   that routes by prefix never sends a citypay code to another network, or theirs to us.
//!   (`28`, say, would be read as an Alipay code.)
//! - **Device number.** The enrolled device's slot, 0 to 99 999 999, so the verifier finds the
//!   device's secret by index instead of trying every secret.
//! - **TOTP.** RFC 6238 with HMAC-SHA-256, T0 = 0, a 30-second step, 8 digits, over the secret
//!   provisioned to that device at enrolment (32 random bytes recommended). Computing it needs
//!   no network, so an offline phone can still pay.
//!
//! # Verification
//!
//! [`PaymentCode::verify`] accepts the OTP of the current step, of up to `window_steps`
//! previous steps (a code shown a while before the scan, or a phone whose clock is behind),
//! and of the next step only (a phone whose clock is up to 30 s ahead); never any step further
//! ahead. It compares in constant time and returns the step that matched. The caller then:
//!
//! - **records the matched step per device and refuses any step at or below it**, so a code
//!   works once (and an older code from the same phone is dead once a newer one was used);
//! - **limits failed attempts**, per device and in total, because each guess has a small but
//!   real chance (below).
//!
//! # Code space and an attacker's chance
//!
//! Per device and step there are 10^8 OTPs. Truncation yields a 31-bit number taken modulo
//! 10^8, so the values are not perfectly even: the likeliest OTP has probability
//! ⌈2^31 / 10^8⌉ / 2^31 = 22 / 2 147 483 648 ≈ 1.02 × 10^-8. A guess is accepted when it
//! equals the OTP of any of the `window_steps + 2` accepted steps, so one guess against one
//! device succeeds with probability at most
//!
//! > p = (window_steps + 2) × 1.03 × 10^-8
//!
//! — about 4.1 × 10^-8 with `window_steps = 2` (current, two previous, one ahead: 4 steps).
//! After n failed guesses the chance that one succeeded is at most n × p, whichever devices
//! they target: with `window_steps = 2`, 10 guesses cost 4.1 × 10^-7, 1 000 guesses 4.1 ×
//! 10^-5, and 10^6 guesses 4.1 %. A limit per device alone does not bound the total, since an
//! attacker can spread guesses over many device numbers; limit failed codes per merchant
//! terminal and platform-wide too, and alert on bursts of failures.
//!
//! The code is a bearer token while it is valid: anyone who photographs it can pay with it
//! first. One-time use and the short window bound that exposure; they do not remove it.

mod code;
pub mod otp;

pub use code::{
    ALGORITHM, CODE_DIGITS, CodeError, DEVICE_DIGITS, DEVICE_LIMIT, MAX_WINDOW_STEPS, OTP_DIGITS,
    PREFIX, ParsedCode, PaymentCode, STEP_SECONDS,
};
