//! The Alipay Open Platform v1 protocol in public-key mode with RSA2, exactly as merchants'
//! SDKs (python-alipay-sdk, alipay-sdk-python, alipay-sdk for Node, Java, Go) send and check
//! it, so a merchant's unchanged code can talk to citypay:
//!
//! - [`Request`]: the query string and the form body merged and decoded with form rules (`+`
//!   is a space), and the signing string rebuilt from what was received (every parameter but
//!   `sign`, empty values dropped, sorted by key bytes, `k=v` joined by `&`, values raw);
//! - [`AppKey`] (a merchant app's RSA public key) and [`PlatformKey`] (the platform's RSA key
//!   pair): SHA256withRSA, PKCS#1 v1.5, standard base64, on `ring`;
//! - [`Answer`]: a response object written field by field in a fixed order, compact, with `{`
//!   and `}` inside strings escaped (one SDK finds the signed bytes by counting braces), then
//!   signed as the exact bytes sent: `{"<method>_response":{...},"sign":"..."}`;
//! - [`money`]: yuan amounts as JSON strings or numbers in, fen inside, `"%.2f"` out;
//! - [`notification_form`]: a signed `trade_status_sync` form body.
//!
//! It reads no clock and does no I/O; the caller passes times (formatted) and keys.

mod answer;
mod form;
mod keys;
pub mod money;
mod notify;

pub use answer::{Answer, Failure, response_key, signed_response};
pub use form::{Request, parse_biz_content};
pub use keys::{AppKey, KeyError, PlatformKey, PlatformKeys};
pub use notify::notification_form;
