//! Local (Asia/Shanghai, UTC+8 without daylight saving) calendar days, in integer arithmetic
//! (Howard Hinnant's civil-date algorithms).

/// Seconds east of UTC of Asia/Shanghai.
const OFFSET_S: i64 = 8 * 3_600;

/// Days from 1970-01-01 to a civil date (the ledger's calendar).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    citypay_ledger::days_from_civil(y, m, d)
}

/// The civil date `days` after 1970-01-01 (the ledger's calendar).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let date = citypay_ledger::civil_from_days(days);
    (i64::from(date.year), i64::from(date.month), i64::from(date.day))
}

/// Unix seconds of local midnight starting a civil date (0 before 1970).
pub fn local_midnight(y: i64, m: i64, d: i64) -> u64 {
    u64::try_from(days_from_civil(y, m, d) * 86_400 - OFFSET_S).unwrap_or(0)
}

/// The local civil date at a Unix time.
pub fn local_date(unix_s: u64) -> (i64, i64, i64) {
    let date = citypay_ledger::Timestamp::from_unix_seconds(unix_s).local_date();
    (i64::from(date.year), i64::from(date.month), i64::from(date.day))
}

/// `YYYY-MM-DD`.
pub fn format_date((y, m, d): (i64, i64, i64)) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` (a real date of 1970–2500).
pub fn parse_date(text: &str) -> Option<(i64, i64, i64)> {
    citypay_ledger::LocalDate::parse(text).map(|d| (i64::from(d.year), i64::from(d.month), i64::from(d.day)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_days_start_at_beijing_midnight() {
        assert_eq!(civil_from_days(days_from_civil(2017, 8, 1)), (2017, 8, 1));
        assert_eq!(civil_from_days(days_from_civil(2016, 2, 28) + 1), (2016, 2, 29));
        assert_eq!(local_midnight(2017, 8, 1), 1_501_516_800);
        // 2017-07-31 20:00 UTC is already 1 August in Beijing.
        assert_eq!(local_date(1_501_531_200), (2017, 8, 1));
        assert_eq!(parse_date("2017-08-01"), Some((2017, 8, 1)));
        assert_eq!(parse_date("2017-02-29"), None);
        assert_eq!(parse_date("2017-8-1-2"), None);
        assert_eq!(parse_date("2017-99999999999999999-01"), None);
        assert_eq!(parse_date("2017-01-9223372036854775807"), None);
        assert_eq!(format_date((2017, 8, 1)), "2017-08-01");
    }
}
