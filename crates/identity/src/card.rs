//! Bank card numbers (PAN, ISO/IEC 7812): digits, length, Luhn check and brand.
//!
//! UnionPay does not guarantee the Luhn check (some domestic China-issued cards fail it), so a
//! UnionPay number that fails Luhn is accepted with a [`CardWarning`] and the issuer decides,
//! as the card networks do. Any other brand failing Luhn is refused.

use core::fmt;

/// Fewest digits in a card number.
const MIN_DIGITS: usize = 12;
/// Most digits in a card number.
const MAX_DIGITS: usize = 19;
/// Leading digits left visible by [`CardNumber::masked`] (the issuer identification number).
const VISIBLE_LEADING: usize = 6;
/// Trailing digits left visible by [`CardNumber::masked`].
const VISIBLE_TRAILING: usize = 4;

/// A checked card number: 12 to 19 digits, separators removed.
///
/// `Debug` and `Display` print only the [masked](CardNumber::masked) form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardNumber {
    digits: String,
}

/// A card number that was accepted, with what the caller should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCard {
    /// The accepted number.
    pub card: CardNumber,
    /// Checks that failed but do not refuse the number; empty for a clean number.
    pub warnings: Vec<CardWarning>,
}

/// A failed check that does not refuse the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CardWarning {
    /// A UnionPay number fails the Luhn check; UnionPay does not guarantee Luhn.
    #[error(
        "UnionPay card number fails the Luhn check: accepted, because UnionPay does not \
         guarantee it; the issuer decides"
    )]
    UnionPayLuhn,
}

/// The card network, from the number's leading digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardBrand {
    /// China UnionPay: 62 and 81.
    UnionPay,
    /// Visa: 4.
    Visa,
    /// Mastercard: 51–55 and 2221–2720.
    Mastercard,
    /// American Express: 34 and 37.
    Amex,
    /// JCB: 3528–3589.
    Jcb,
    /// Any other prefix.
    Other,
}

/// Why a card number was refused. Positions count characters of the input from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// A character other than a digit, a space or a dash.
    #[error(
        "character {position} is {found:?}: a card number has only digits, \
         with spaces or dashes between groups"
    )]
    Character {
        /// Position of the character, from 1.
        position: usize,
        /// The character found.
        found: char,
    },
    /// Fewer than 12 or more than 19 digits.
    #[error("a card number has 12 to 19 digits, found {digits}")]
    Length {
        /// Digits found.
        digits: usize,
    },
    /// A number of a brand other than UnionPay fails the Luhn check.
    #[error("card number fails the Luhn check ({brand}): a digit is probably mistyped")]
    Luhn {
        /// The brand of the refused number.
        brand: CardBrand,
    },
}

impl CardNumber {
    /// Checks a card number; spaces and dashes between digit groups are removed.
    ///
    /// Checks run in order: characters, length, Luhn.
    pub fn parse(input: &str) -> Result<ParsedCard, CardError> {
        let card = Self {
            digits: collect_digits(input)?,
        };
        let mut warnings = Vec::new();
        if !card.passes_luhn() {
            match card.brand() {
                CardBrand::UnionPay => warnings.push(CardWarning::UnionPayLuhn),
                brand => return Err(CardError::Luhn { brand }),
            }
        }
        Ok(ParsedCard { card, warnings })
    }

    /// The brand from the leading digits.
    #[must_use]
    pub fn brand(&self) -> CardBrand {
        let two = leading_value(&self.digits, 2);
        let four = leading_value(&self.digits, 4);
        match (two, four) {
            (62 | 81, _) => CardBrand::UnionPay,
            (40..=49, _) => CardBrand::Visa,
            (51..=55, _) | (_, 2221..=2720) => CardBrand::Mastercard,
            (34 | 37, _) => CardBrand::Amex,
            (_, 3528..=3589) => CardBrand::Jcb,
            _ => CardBrand::Other,
        }
    }

    /// Whether the number passes the Luhn check (always true unless it is UnionPay).
    #[must_use]
    pub fn passes_luhn(&self) -> bool {
        luhn_valid(&self.digits)
    }

    /// The full number, digits only. This is cardholder data: never log or store it in clear.
    #[must_use]
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The last four digits.
    #[must_use]
    pub fn last_four(&self) -> &str {
        &self.digits[self.digits.len() - VISIBLE_TRAILING..]
    }

    /// The number with only the first 6 and last 4 digits visible: `622202******1234`.
    #[must_use]
    pub fn masked(&self) -> String {
        let hidden = self.digits.len() - VISIBLE_LEADING - VISIBLE_TRAILING;
        format!(
            "{}{}{}",
            &self.digits[..VISIBLE_LEADING],
            "*".repeat(hidden),
            self.last_four()
        )
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CardNumber").field(&self.masked()).finish()
    }
}

impl fmt::Display for CardNumber {
    /// The masked form only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for CardBrand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnionPay => "UnionPay",
            Self::Visa => "Visa",
            Self::Mastercard => "Mastercard",
            Self::Amex => "American Express",
            Self::Jcb => "JCB",
            Self::Other => "unknown brand",
        })
    }
}

/// Whether a non-empty string of ASCII digits passes the Luhn check; `false` for anything else.
#[must_use]
pub fn luhn_valid(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    all_digits(bytes) && luhn_sum(bytes, false).is_multiple_of(10)
}

/// The Luhn check digit to append to `payload` (ASCII digits), or `None` for anything else.
#[must_use]
pub fn luhn_check_digit(payload: &str) -> Option<char> {
    let bytes = payload.as_bytes();
    all_digits(bytes).then(|| char::from(b"0123456789"[(10 - luhn_sum(bytes, true) % 10) % 10]))
}

/// The Luhn sum, doubling every second digit from the right, starting with the rightmost one
/// when `double_rightmost` (a payload without its check digit). The caller has checked the
/// digits.
fn luhn_sum(digits: &[u8], double_rightmost: bool) -> usize {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, digit)| {
            let value = usize::from(digit - b'0');
            let doubled = (index % 2 == 0) == double_rightmost;
            match (doubled, value * 2) {
                (false, _) => value,
                (true, twice) if twice > 9 => twice - 9,
                (true, twice) => twice,
            }
        })
        .sum()
}

fn all_digits(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit)
}

/// Checks the characters and the digit count; returns the digits alone.
fn collect_digits(input: &str) -> Result<String, CardError> {
    let mut digits = String::with_capacity(MAX_DIGITS);
    let mut count = 0_usize;
    for (index, found) in input.chars().enumerate() {
        match found {
            '0'..='9' => {
                count += 1;
                if count <= MAX_DIGITS {
                    digits.push(found);
                }
            }
            ' ' | '-' => {}
            _ => {
                return Err(CardError::Character {
                    position: index + 1,
                    found,
                });
            }
        }
    }
    if (MIN_DIGITS..=MAX_DIGITS).contains(&count) {
        Ok(digits)
    } else {
        Err(CardError::Length { digits: count })
    }
}

/// The value of the first `count` digits (at most 4; the number has at least 12).
fn leading_value(digits: &str, count: usize) -> u16 {
    digits
        .bytes()
        .take(count)
        .fold(0, |value, digit| value * 10 + u16::from(digit - b'0'))
}

#[cfg(test)]
mod tests {
    use super::{luhn_check_digit, luhn_valid};

    #[test]
    fn luhn_of_known_numbers() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("4111 1111"));
        assert_eq!(luhn_check_digit("7992739871"), Some('3'));
        assert_eq!(luhn_check_digit("622202020011223344"), Some('6'));
        assert_eq!(luhn_check_digit("62220202001122334a"), None);
    }
}
