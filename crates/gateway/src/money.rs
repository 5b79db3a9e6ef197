//! Amounts: yuan as merchants send them (a JSON string or number: `"88.88"`, `88.88`, `20`),
//! fen inside, `"%.2f"` yuan strings out. Never a float: the text is read digit by digit.

use serde_json::Value;

/// The most Alipay takes in one trade: 100,000,000 yuan, in fen.
pub const MAX_FEN: i64 = 10_000_000_000;

/// Fen from a yuan amount given as a JSON string or number: digits, an optional point and at
/// most 2 decimals (more are refused unless they are zeros: Python's `20.0` is 20 yuan, and its
/// `0.30000000000000004` is refused rather than rounded). No sign, no exponent, at most
/// 100,000,000 yuan.
pub fn fen(value: &Value) -> Result<i64, String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err("an amount is a string or a number of yuan".into()),
    };
    parse_yuan(&text)
}

/// Fen from yuan text such as `88.88` (see [`fen`]).
pub fn parse_yuan(text: &str) -> Result<i64, String> {
    let (whole, decimals) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(decimals) || (text.contains('.') && decimals.is_empty()) {
        return Err(format!("{text:?} is not an amount of yuan with at most 2 decimals"));
    }
    let (cents, rest) = decimals.split_at(decimals.len().min(2));
    if rest.bytes().any(|b| b != b'0') {
        return Err(format!("{text:?} has more than 2 decimals"));
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > 9 {
        return Err(format!("{text:?} is more than 100,000,000 yuan"));
    }
    let yuan: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| format!("{text:?}"))? };
    let cents: i64 = format!("{cents:0<2}").parse().map_err(|_| format!("{text:?}"))?;
    let fen = yuan * 100 + cents;
    if fen > MAX_FEN {
        return Err(format!("{text:?} is more than 100,000,000 yuan"));
    }
    Ok(fen)
}

/// `"%.2f"` yuan: 8888 → `88.88`, 0 → `0.00`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_as_the_sdks_send_them() {
        assert_eq!(fen(&json!("88.88")), Ok(8888));
        assert_eq!(fen(&json!(88.88)), Ok(8888));
        assert_eq!(fen(&json!(20)), Ok(2000));
        assert_eq!(fen(&json!(20.0)), Ok(2000));
        assert_eq!(fen(&json!("0.01")), Ok(1));
        assert_eq!(fen(&json!("0.1")), Ok(10));
        assert_eq!(fen(&json!("100000000.00")), Ok(MAX_FEN));
        assert!(fen(&json!(0.1 + 0.2)).is_err());
        assert!(fen(&json!("1.001")).is_err());
        assert!(fen(&json!("100000000.01")).is_err());
        assert!(fen(&json!("-1")).is_err());
        assert!(fen(&json!("1e2")).is_err());
        assert!(fen(&json!("1.")).is_err());
        assert!(fen(&json!(".5")).is_err());
        assert!(fen(&json!(true)).is_err());
        assert!(fen(&json!("")).is_err());
    }

    #[test]
    fn amounts_out() {
        assert_eq!(yuan(8888), "88.88");
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(-120), "-1.20");
    }

    proptest::proptest! {
        #[test]
        fn fen_round_trips(f in 0i64..=MAX_FEN) {
            proptest::prop_assert_eq!(parse_yuan(&yuan(f)), Ok(f));
        }

        #[test]
        fn no_text_panics(text in ".{0,40}") {
            let _ = parse_yuan(&text);
        }
    }
}
