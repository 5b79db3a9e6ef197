//! Time as the ledger sees it: a UTC instant handed in by the caller, and the calendar day and
//! year of that instant in the city's time zone.

/// Nanoseconds since the Unix epoch, UTC. The ledger never reads a clock; callers pass this in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timestamp(pub u64);

/// Asia/Shanghai is UTC+8 all year; China has observed no daylight saving time since 1991, and
/// the ledger never handles instants before 2000.
const CITY_OFFSET_S: u64 = 8 * 3600;
const NS_PER_S: u64 = 1_000_000_000;
const S_PER_DAY: u64 = 86_400;

/// A calendar date in the city's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalDate {
    /// Calendar year, e.g. 2026.
    pub year: i32,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31.
    pub day: u8,
}

impl Timestamp {
    /// The instant `seconds` after the epoch.
    pub const fn from_unix_seconds(seconds: u64) -> Timestamp {
        Timestamp(seconds * NS_PER_S)
    }

    /// Whole seconds since the epoch.
    pub const fn unix_seconds(self) -> u64 {
        self.0 / NS_PER_S
    }

    /// This instant plus `seconds`, saturating at the end of time.
    pub const fn plus_seconds(self, seconds: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(NS_PER_S)))
    }

    /// Days since 1970-01-01 counted in the city's time zone: the key of a daily window.
    pub fn local_day_number(self) -> u32 {
        let days = (self.unix_seconds() + CITY_OFFSET_S) / S_PER_DAY;
        // u32 days reach past the year 11 million; u64 nanoseconds end in 2554.
        u32::try_from(days).unwrap_or(u32::MAX)
    }

    /// The calendar date of this instant in the city's time zone.
    pub fn local_date(self) -> LocalDate {
        civil_from_days(i64::from(self.local_day_number()))
    }

    /// `YYYY-MM-DD HH:MM:SS` in the city's time zone: how files and receipts show a time
    /// (Alipay's and WeChat Pay's bill files do the same, in Beijing time).
    pub fn local_date_time(self) -> String {
        let seconds = (self.unix_seconds() + CITY_OFFSET_S) % S_PER_DAY;
        format!("{} {:02}:{:02}:{:02}", self.local_date(), seconds / 3_600, seconds / 60 % 60, seconds % 60)
    }
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day number (days
/// since 1970-01-01).
pub fn civil_from_days(days: i64) -> LocalDate {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    LocalDate {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: u8::try_from(month).unwrap_or(0),
        day: u8::try_from(day).unwrap_or(0),
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

impl LocalDate {
    /// Parses `YYYY-MM-DD`: a real date of 1970–2500 (nanosecond timestamps end in 2554).
    pub fn parse(text: &str) -> Option<LocalDate> {
        let mut parts = text.split('-');
        let (y, m, d): (i64, i64, i64) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        // Ranges first: the arithmetic must never see a huge month or day.
        if parts.next().is_some() || !(1970..=2500).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        let date = civil_from_days(days_from_civil(y, m, d));
        (i64::from(date.year) == y && i64::from(date.month) == m && i64::from(date.day) == d).then_some(date)
    }

    /// Days since 1970-01-01.
    pub fn day_number(self) -> i64 {
        days_from_civil(i64::from(self.year), i64::from(self.month), i64::from(self.day))
    }

    /// The instant this day starts in the city (local midnight).
    pub fn start(self) -> Timestamp {
        let seconds = self.day_number() * S_PER_DAY as i64 - CITY_OFFSET_S as i64;
        Timestamp::from_unix_seconds(u64::try_from(seconds).unwrap_or(0))
    }

    /// The next day.
    pub fn next(self) -> LocalDate {
        civil_from_days(self.day_number() + 1)
    }
}

impl std::fmt::Display for LocalDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_dates_follow_shanghai_midnight() {
        // 2026-11-24T15:59:59Z is 23:59:59 in Shanghai; one second later is the next day.
        let before = Timestamp::from_unix_seconds(1_795_535_999);
        let after = before.plus_seconds(1);
        assert_eq!(before.local_date(), LocalDate { year: 2026, month: 11, day: 24 });
        assert_eq!(after.local_date(), LocalDate { year: 2026, month: 11, day: 25 });
        assert_eq!(after.local_day_number(), before.local_day_number() + 1);
        // 2026-12-31T16:00:00Z is new year's midnight in Shanghai.
        let new_year = Timestamp::from_unix_seconds(1_798_732_800);
        assert_eq!(new_year.local_date(), LocalDate { year: 2027, month: 1, day: 1 });
        let eve = Timestamp(new_year.0 - 1);
        assert_eq!(eve.local_date(), LocalDate { year: 2026, month: 12, day: 31 });
        assert_eq!(Timestamp(0).local_date(), LocalDate { year: 1970, month: 1, day: 1 });
        // A leap day.
        let leap = Timestamp::from_unix_seconds(1_709_136_000); // 2024-02-28T16:00:00Z
        assert_eq!(leap.local_date(), LocalDate { year: 2024, month: 2, day: 29 });
    }

    #[test]
    fn dates_parse_print_and_start_at_shanghai_midnight() {
        let date = LocalDate::parse("2017-08-01").unwrap();
        assert_eq!(date.to_string(), "2017-08-01");
        assert_eq!(date.start(), Timestamp::from_unix_seconds(1_501_516_800));
        assert_eq!(date.start().local_date(), date);
        assert_eq!(Timestamp(date.start().0 - 1).local_date(), civil_from_days(date.day_number() - 1));
        assert_eq!(LocalDate::parse("2016-02-28").unwrap().next().to_string(), "2016-02-29");
        for bad in ["2600-01-01", "2017-02-29", "2017-8-1-2", "2017-99999999999999999-01", "2017-01-9223372036854775807", "1969-12-31", ""] {
            assert_eq!(LocalDate::parse(bad), None, "{bad}");
        }
    }
}
