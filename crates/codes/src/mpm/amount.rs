//! Transaction amounts (data object 54) and currency exponents.
//!
//! EMVCo writes an amount as decimal text of at most 13 characters, digits with at most one
//! `.` as the decimal mark. How many minor units a major unit holds depends on the currency
//! (ISO 4217 exponent): 2 for CNY, 0 for JPY, 3 for KWD.

/// The most characters an amount may have.
pub const MAX_AMOUNT_CHARS: usize = 13;

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// No characters at all.
    #[error("it is empty")]
    Empty,
    /// More than 13 characters.
    #[error("it has {chars} characters; at most 13 are allowed")]
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// A character other than an ASCII digit or `.`.
    #[error("{found:?} is not a digit or '.'")]
    BadChar {
        /// The first offending character.
        found: char,
    },
    /// More than one `.`.
    #[error("it has more than one '.'")]
    TwoDots,
    /// Only a `.`.
    #[error("it has no digits")]
    NoDigits,
    /// More decimal places than the currency has minor units.
    #[error("it has {found} decimal places but the currency has {exponent}")]
    TooManyDecimals {
        /// Decimal places written.
        found: usize,
        /// The currency's exponent.
        exponent: u32,
    },
    /// The amount in minor units does not fit in a `u64`.
    #[error("it does not fit in 64-bit minor units")]
    Overflow,
}

/// A well-formed transaction amount, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    text: String,
}

impl Amount {
    /// Checks the EMVCo amount format: 1 to 13 characters, ASCII digits and at most one `.`.
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        let chars = text.chars().count();
        if chars == 0 {
            return Err(AmountError::Empty);
        }
        if chars > MAX_AMOUNT_CHARS {
            return Err(AmountError::TooLong { chars });
        }
        if let Some(found) = text.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
            return Err(AmountError::BadChar { found });
        }
        if text.matches('.').count() > 1 {
            return Err(AmountError::TwoDots);
        }
        if !text.chars().any(|c| c.is_ascii_digit()) {
            return Err(AmountError::NoDigits);
        }
        Ok(Amount {
            text: text.to_owned(),
        })
    }

    /// Writes `minor` minor units of a currency with `exponent` decimal places.
    pub fn from_minor_units(minor: u64, exponent: u32) -> Result<Amount, AmountError> {
        // The shortest text with `exponent` decimals is "0." followed by them.
        let shortest = (exponent as usize).saturating_add(2);
        if shortest > MAX_AMOUNT_CHARS {
            return Err(AmountError::TooLong { chars: shortest });
        }
        let digits = format!("{minor:0width$}", width = exponent as usize + 1);
        let split = digits.len() - exponent as usize;
        let text = if exponent == 0 {
            digits
        } else {
            format!("{}.{}", &digits[..split], &digits[split..])
        };
        Amount::parse(&text)
    }

    /// The amount as written in the payload.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The amount in minor units of a currency with `exponent` decimal places.
    pub fn to_minor_units(&self, exponent: u32) -> Result<u64, AmountError> {
        let (whole, fraction) = self.text.split_once('.').unwrap_or((&self.text, ""));
        if fraction.len() > exponent as usize {
            return Err(AmountError::TooManyDecimals {
                found: fraction.len(),
                exponent,
            });
        }
        let scale = 10u64.checked_pow(exponent).ok_or(AmountError::Overflow)?;
        let padding =
            exponent - u32::try_from(fraction.len()).map_err(|_| AmountError::Overflow)?;
        let whole = parse_digits(whole)?;
        let fraction = parse_digits(fraction)?
            .checked_mul(10u64.pow(padding))
            .ok_or(AmountError::Overflow)?;
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction))
            .ok_or(AmountError::Overflow)
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The value of a run of ASCII digits (empty is zero).
fn parse_digits(digits: &str) -> Result<u64, AmountError> {
    digits.bytes().try_fold(0u64, |total, byte| {
        total
            .checked_mul(10)
            .and_then(|t| t.checked_add(u64::from(byte - b'0')))
            .ok_or(AmountError::Overflow)
    })
}

/// ISO 4217 numeric code and exponent of the currencies citypay is likely to meet.
const EXPONENTS: [(&str, u32); 24] = [
    ("156", 2), // CNY
    ("344", 2), // HKD
    ("446", 2), // MOP
    ("901", 2), // TWD
    ("840", 2), // USD
    ("978", 2), // EUR
    ("826", 2), // GBP
    ("392", 0), // JPY
    ("410", 0), // KRW
    ("704", 0), // VND
    ("764", 2), // THB
    ("702", 2), // SGD
    ("458", 2), // MYR
    ("360", 2), // IDR
    ("608", 2), // PHP
    ("356", 2), // INR
    ("986", 2), // BRL
    ("036", 2), // AUD
    ("124", 2), // CAD
    ("756", 2), // CHF
    ("048", 3), // BHD
    ("414", 3), // KWD
    ("512", 3), // OMR
    ("116", 2), // KHR
];

/// The ISO 4217 exponent (minor-unit decimal places) of a numeric currency code, for the
/// currencies in citypay's table; `None` for any other code.
pub fn currency_exponent(numeric: &str) -> Option<u32> {
    EXPONENTS
        .iter()
        .find(|(code, _)| *code == numeric)
        .map(|(_, exponent)| *exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_emvco_format() {
        assert_eq!(Amount::parse("23.72").unwrap().as_str(), "23.72");
        assert_eq!(
            Amount::parse("9999999999999").unwrap().as_str(),
            "9999999999999"
        );
        assert_eq!(Amount::parse(""), Err(AmountError::Empty));
        assert_eq!(
            Amount::parse("99999999999999"),
            Err(AmountError::TooLong { chars: 14 })
        );
        assert_eq!(
            Amount::parse("1,00"),
            Err(AmountError::BadChar { found: ',' })
        );
        assert_eq!(
            Amount::parse("-1"),
            Err(AmountError::BadChar { found: '-' })
        );
        assert_eq!(Amount::parse("1.0.0"), Err(AmountError::TwoDots));
        assert_eq!(Amount::parse("."), Err(AmountError::NoDigits));
    }

    #[test]
    fn converts_to_minor_units() {
        let amount = Amount::parse("23.72").unwrap();
        assert_eq!(amount.to_minor_units(2), Ok(2372));
        assert_eq!(amount.to_minor_units(3), Ok(23720));
        assert_eq!(
            amount.to_minor_units(0),
            Err(AmountError::TooManyDecimals {
                found: 2,
                exponent: 0
            })
        );
        assert_eq!(Amount::parse("5").unwrap().to_minor_units(2), Ok(500));
        assert_eq!(Amount::parse("0.5").unwrap().to_minor_units(2), Ok(50));
        assert_eq!(Amount::parse("1.").unwrap().to_minor_units(2), Ok(100));
        assert_eq!(Amount::parse(".05").unwrap().to_minor_units(2), Ok(5));
        let big = Amount::parse("9999999999999").unwrap();
        assert_eq!(big.to_minor_units(9), Err(AmountError::Overflow));
    }

    #[test]
    fn writes_minor_units() {
        assert_eq!(Amount::from_minor_units(2372, 2).unwrap().as_str(), "23.72");
        assert_eq!(Amount::from_minor_units(5, 2).unwrap().as_str(), "0.05");
        assert_eq!(Amount::from_minor_units(0, 2).unwrap().as_str(), "0.00");
        assert_eq!(Amount::from_minor_units(1500, 0).unwrap().as_str(), "1500");
        assert_eq!(Amount::from_minor_units(1, 3).unwrap().as_str(), "0.001");
        assert_eq!(
            Amount::from_minor_units(u64::MAX, 2),
            Err(AmountError::TooLong { chars: 21 })
        );
        assert_eq!(
            Amount::from_minor_units(0, u32::MAX),
            Err(AmountError::TooLong {
                chars: u32::MAX as usize + 2
            })
        );
    }

    #[test]
    fn knows_common_exponents() {
        assert_eq!(currency_exponent("156"), Some(2));
        assert_eq!(currency_exponent("392"), Some(0));
        assert_eq!(currency_exponent("414"), Some(3));
        assert_eq!(currency_exponent("999"), None);
    }
}
