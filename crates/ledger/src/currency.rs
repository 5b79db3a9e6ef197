//! ISO 4217 currencies: the alphabetic code and its minor-unit exponent.

use std::fmt;

/// An ISO 4217 currency the platform handles. Amounts are `i64` counts of its minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
pub struct Currency([u8; 3]);

/// The currencies citypay accepts, with their ISO 4217 numeric code and minor-unit exponent.
const KNOWN: &[(&str, u16, u8)] = &[
    ("CNY", 156, 2),
    ("HKD", 344, 2),
    ("MOP", 446, 2),
    ("TWD", 901, 2),
    ("USD", 840, 2),
    ("EUR", 978, 2),
    ("GBP", 826, 2),
    ("JPY", 392, 0),
    ("KRW", 410, 0),
    ("SGD", 702, 2),
];

/// A currency code that is not three upper-case letters of a currency citypay knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyError(pub String);

impl fmt::Display for CurrencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown ISO 4217 currency code {:?}", self.0)
    }
}

impl std::error::Error for CurrencyError {}

impl Currency {
    /// Chinese yuan renminbi, the currency of every city so far.
    pub const CNY: Currency = Currency(*b"CNY");

    /// Parses an alphabetic ISO 4217 code such as `"CNY"`.
    pub fn parse(code: &str) -> Result<Currency, CurrencyError> {
        let known = KNOWN.iter().any(|(alpha, _, _)| *alpha == code);
        if !known {
            return Err(CurrencyError(code.to_owned()));
        }
        let bytes = code.as_bytes();
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    /// Looks a currency up by its ISO 4217 numeric code (156 for CNY).
    pub fn from_numeric(numeric: u16) -> Option<Currency> {
        KNOWN.iter().find(|(_, n, _)| *n == numeric).map(|(alpha, _, _)| {
            let b = alpha.as_bytes();
            Currency([b[0], b[1], b[2]])
        })
    }

    /// The alphabetic code, e.g. `"CNY"`.
    pub fn code(&self) -> &str {
        // Only `parse` and `from_numeric` build a Currency, both from ASCII table entries.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }

    /// The ISO 4217 numeric code.
    pub fn numeric(&self) -> u16 {
        self.entry().1
    }

    /// Digits after the decimal point of the major unit (2 for CNY: 1 yuan = 100 fen).
    pub fn exponent(&self) -> u8 {
        self.entry().2
    }

    fn entry(&self) -> &'static (&'static str, u16, u8) {
        KNOWN
            .iter()
            .find(|(alpha, _, _)| alpha.as_bytes() == self.0)
            .expect("a Currency is always a known one")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_codes_and_rejects_others() {
        assert_eq!(Currency::parse("CNY").unwrap(), Currency::CNY);
        assert_eq!(Currency::CNY.numeric(), 156);
        assert_eq!(Currency::CNY.exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::from_numeric(840).unwrap().code(), "USD");
        for bad in ["cny", "CN", "CNYY", "XXX", "", "元"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(code: String) -> Result<Currency, CurrencyError> {
        Currency::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.code().to_owned()
    }
}
