//! A calendar date without a time zone or a clock.

use core::fmt;

/// A real Gregorian calendar date, year 1 to 9999.
///
/// The crate never reads a clock: callers build "today" from their own clock in their own time
/// zone (Asia/Shanghai for citypay) and pass it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    // Field order matters: the derived `Ord` compares year, then month, then day.
    year: u16,
    month: u8,
    day: u8,
}

impl CivilDate {
    /// The date, or `None` when it is not a real calendar date (month 13, 30 February, year 0).
    #[must_use]
    pub const fn new(year: u16, month: u8, day: u8) -> Option<Self> {
        if year == 0 || year > 9999 || month == 0 || month > 12 {
            return None;
        }
        if day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Self { year, month, day })
    }

    /// The year, 1 to 9999.
    #[must_use]
    pub const fn year(self) -> u16 {
        self.year
    }

    /// The month, 1 to 12.
    #[must_use]
    pub const fn month(self) -> u8 {
        self.month
    }

    /// The day of the month, 1 to 31.
    #[must_use]
    pub const fn day(self) -> u8 {
        self.day
    }
}

impl fmt::Display for CivilDate {
    /// ISO 8601 `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

const fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

const fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::CivilDate;

    #[test]
    fn rejects_impossible_dates() {
        assert!(CivilDate::new(1991, 13, 1).is_none());
        assert!(CivilDate::new(2023, 2, 29).is_none());
        assert!(CivilDate::new(1900, 2, 29).is_none());
        assert!(CivilDate::new(2024, 4, 31).is_none());
        assert!(CivilDate::new(0, 1, 1).is_none());
        assert!(CivilDate::new(2024, 1, 0).is_none());
    }

    #[test]
    fn accepts_leap_days_and_orders_by_year_month_day() {
        let leap = CivilDate::new(2000, 2, 29).expect("2000 is a leap year");
        let later = CivilDate::new(2000, 3, 1).expect("real date");
        assert!(leap < later);
        assert_eq!(leap.to_string(), "2000-02-29");
    }
}
