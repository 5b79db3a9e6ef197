//! Exact decimal amounts in fen (1 yuan = 100 fen), without floats.

/// Parses a decimal CNY amount such as `2.00`, `-1`, `15.5` into fen.
///
/// At most two decimal places; a leading `-` is allowed (transfer products are negative).
pub(crate) fn parse_fen(text: &str) -> Result<i64, String> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) {
        return Err(format!("`{text}` is not a decimal amount"));
    }
    if frac.len() > 2 {
        return Err(format!(
            "`{text}` has more than 2 decimal places (CNY has fen)"
        ));
    }
    let yuan: i64 = whole
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let mut fen_part: i64 = frac.parse().unwrap_or(0);
    if frac.len() == 1 {
        fen_part *= 10;
    }
    let fen = yuan
        .checked_mul(100)
        .and_then(|v| v.checked_add(fen_part))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    Ok(if neg { -fen } else { fen })
}

/// Formats fen as yuan with two decimals, e.g. `180` → `1.80`.
pub fn format_fen(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_fen("2.00"), Ok(200));
        assert_eq!(parse_fen("2"), Ok(200));
        assert_eq!(parse_fen("1.5"), Ok(150));
        assert_eq!(parse_fen("-1.00"), Ok(-100));
        assert_eq!(parse_fen("0.07"), Ok(7));
        assert!(parse_fen("2.005").is_err());
        assert!(parse_fen("").is_err());
        assert!(parse_fen(".5").is_err());
        assert!(parse_fen("1e3").is_err());
        assert!(parse_fen("99999999999999999999").is_err());
        assert_eq!(format_fen(180), "1.80");
        assert_eq!(format_fen(-100), "-1.00");
    }
}
