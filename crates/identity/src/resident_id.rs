//! The PRC citizen identity number (公民身份号码), GB 11643-1999.
//!
//! 18 characters: a 6-digit address code (GB/T 2260), the birth date `YYYYMMDD`, a 3-digit
//! sequence number (odd for men, even for women) and an ISO 7064 MOD 11-2 check character,
//! a digit or `X` (which stands for 10).

use core::fmt;

use crate::date::CivilDate;
use crate::region::Region;

/// Characters in a current (18-character) number.
const LENGTH: usize = 18;
/// Digits in a legacy GB 11643-1989 number (2-digit year, no check character).
const LEGACY_LENGTH: usize = 15;
/// ISO 7064 MOD 11-2 weights of the first 17 digits: 2^(17 - i) mod 11.
const WEIGHTS: [usize; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// The check character for each value of (weighted sum mod 11).
const CHECK_CHARACTERS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
/// The first two digits of a GB/T 2260 administrative division code: the 34 province-level
/// divisions (provinces, autonomous regions, municipalities, Taiwan, Hong Kong and Macao).
/// Only the province is checked: county codes change over time, and a county that no longer
/// exists still appears on valid cards.
const PROVINCE_CODES: [u8; 34] = [
    11, 12, 13, 14, 15, // North
    21, 22, 23, // North-east
    31, 32, 33, 34, 35, 36, 37, // East
    41, 42, 43, 44, 45, 46, // Central and south
    50, 51, 52, 53, 54, // South-west
    61, 62, 63, 64, 65, // North-west
    71, 81, 82, // Taiwan, Hong Kong, Macao
];
/// No birth date before this one is accepted.
const EARLIEST_BIRTH_DATE: CivilDate = match CivilDate::new(1800, 1, 1) {
    Some(date) => date,
    None => panic!("1800-01-01 is a real date"),
};

/// A checked 18-character resident ID number, normalised to upper-case `X`.
///
/// `Debug` and `Display` print only the [masked](ResidentId::masked) form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResidentId {
    number: String,
    birth_date: CivilDate,
}

/// The sex recorded in a resident ID number (the parity of the 17th digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// Odd sequence digit.
    Male,
    /// Even sequence digit.
    Female,
}

/// Why a resident ID number was refused. Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidentIdError {
    /// A 15-digit number from GB 11643-1989; it has no check character and is not accepted.
    #[error(
        "15-digit resident ID numbers (GB 11643-1989) are not accepted: \
         ask for the 18-character number on the current card"
    )]
    LegacyFifteenDigits,
    /// Not 18 characters long.
    #[error("a resident ID number has 18 characters, found {found}")]
    Length {
        /// Characters found.
        found: usize,
    },
    /// A character other than a digit, or other than a digit or `X` in position 18.
    #[error(
        "character {position} is {found:?}: the first 17 must be digits \
         and the last a digit or 'X'"
    )]
    Character {
        /// Position of the character, from 1.
        position: usize,
        /// The character found.
        found: char,
    },
    /// The first two digits are not a province-level division of GB/T 2260.
    #[error("the number starts with {code:02}, which is not a province-level region code")]
    UnknownProvince {
        /// The first two digits.
        code: u8,
    },
    /// The first six digits are no GB/T 2260 code issued since 1980.
    #[error("region code {code:06} was never issued (GB/T 2260, since 1980)")]
    UnknownRegion {
        /// The first six digits.
        code: u32,
    },
    /// Digits 7 to 14 are not a real calendar date.
    #[error("birth date {year:04}-{month:02}-{day:02} is not a real calendar date")]
    InvalidBirthDate {
        /// Digits 7 to 10.
        year: u16,
        /// Digits 11 and 12.
        month: u8,
        /// Digits 13 and 14.
        day: u8,
    },
    /// The birth date is before 1800-01-01 (GB 11643 years start with 18, 19 or 20).
    #[error("birth date {birth_date} is before 1800-01-01")]
    BirthBefore1800 {
        /// The birth date in the number.
        birth_date: CivilDate,
    },
    /// The birth date is after the date the caller passed as today.
    #[error("birth date {birth_date} is after today ({today})")]
    BirthAfterToday {
        /// The birth date in the number.
        birth_date: CivilDate,
        /// The date passed as today.
        today: CivilDate,
    },
    /// The 18th character does not match the ISO 7064 MOD 11-2 check of the first 17.
    #[error("check character should be {expected:?}, found {found:?}")]
    CheckCharacter {
        /// The check character the first 17 digits give.
        expected: char,
        /// The 18th character of the number.
        found: char,
    },
}

impl ResidentId {
    /// Checks an 18-character number; `today` bounds the birth date.
    ///
    /// A lower-case `x` is accepted and normalised to `X`. Surrounding whitespace is not removed.
    /// Checks run in order: length, characters, check character, province, region (a GB/T 2260
    /// code issued since 1980, retired ones included), birth date. The check
    /// character comes before the meaning of the digits, so a mistyped number is reported as
    /// mistyped. The birth date must be 1800-01-01 or later, so the standard's own Annex A
    /// example `440524188001010014` (born 1880) is valid.
    pub fn parse(input: &str, today: CivilDate) -> Result<Self, ResidentIdError> {
        let number = normalize(input)?;
        check_check_character(&number)?;
        check_province(&number)?;
        check_region(&number)?;
        let birth_date = birth_date(&number, today)?;
        Ok(Self { number, birth_date })
    }

    /// The birth date (digits 7 to 14).
    #[must_use]
    pub const fn birth_date(&self) -> CivilDate {
        self.birth_date
    }

    /// Age in whole years on `today` (0 before the first birthday; a 29 February birthday
    /// comes on 1 March in other years).
    #[must_use]
    pub fn age_on(&self, today: CivilDate) -> u16 {
        let born = self.birth_date;
        let years = today.year().saturating_sub(born.year());
        let had_birthday = (today.month(), today.day()) >= (born.month(), born.day());
        if had_birthday { years } else { years.saturating_sub(1) }
    }

    /// The 6-digit GB/T 2260 address code where the number was first issued.
    #[must_use]
    pub fn region_code(&self) -> &str {
        &self.number[..6]
    }

    /// The sex: an odd 17th digit is male, an even one female.
    #[must_use]
    pub fn sex(&self) -> Sex {
        if self.number.as_bytes()[16] % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// The full normalised number (upper-case `X`), e.g. to compute a blind index.
    /// This is personal data: never log it.
    #[must_use]
    pub fn normalized(&self) -> &str {
        &self.number
    }

    /// The number with only the first 4 and last 4 characters visible: `1101**********002X`.
    #[must_use]
    pub fn masked(&self) -> String {
        format!(
            "{}{}{}",
            &self.number[..4],
            "*".repeat(10),
            &self.number[14..]
        )
    }
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResidentId").field(&self.masked()).finish()
    }
}

impl fmt::Display for ResidentId {
    /// The masked form only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The ISO 7064 MOD 11-2 check character (`0`–`9` or `X`) for the first 17 digits of a number,
/// or `None` unless `first17` is exactly 17 ASCII digits.
#[must_use]
pub fn check_character(first17: &str) -> Option<char> {
    let digits = first17.as_bytes();
    let valid = digits.len() == WEIGHTS.len() && digits.iter().all(u8::is_ascii_digit);
    valid.then(|| mod_11_2(digits))
}

/// ISO 7064 MOD 11-2 over 17 ASCII digits that the caller has checked.
fn mod_11_2(digits: &[u8]) -> char {
    let sum: usize = digits
        .iter()
        .zip(WEIGHTS)
        .map(|(digit, weight)| digit_value(*digit) * weight)
        .sum();
    CHECK_CHARACTERS[sum % 11]
}

/// Checks length and characters and returns the number with an upper-case `X`.
fn normalize(input: &str) -> Result<String, ResidentIdError> {
    check_length(input)?;
    let mut number = String::with_capacity(LENGTH);
    for (index, found) in input.chars().enumerate() {
        let position = index + 1;
        let allowed = found.is_ascii_digit() || (position == LENGTH && matches!(found, 'X' | 'x'));
        if !allowed {
            return Err(ResidentIdError::Character { position, found });
        }
        number.push(found.to_ascii_uppercase());
    }
    Ok(number)
}

fn check_length(input: &str) -> Result<(), ResidentIdError> {
    let found = input.chars().count();
    if found == LEGACY_LENGTH && input.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ResidentIdError::LegacyFifteenDigits);
    }
    if found != LENGTH {
        return Err(ResidentIdError::Length { found });
    }
    Ok(())
}

fn check_province(number: &str) -> Result<(), ResidentIdError> {
    let code = two_digits(&number.as_bytes()[..2]);
    if PROVINCE_CODES.contains(&code) {
        Ok(())
    } else {
        Err(ResidentIdError::UnknownProvince { code })
    }
}

fn check_region(number: &str) -> Result<(), ResidentIdError> {
    let code = number[..6].parse().unwrap_or(0);
    match Region::find(code) {
        Some(_) => Ok(()),
        None => Err(ResidentIdError::UnknownRegion { code }),
    }
}

fn birth_date(number: &str, today: CivilDate) -> Result<CivilDate, ResidentIdError> {
    let digits = &number.as_bytes()[6..14];
    let year = u16::from(two_digits(&digits[..2])) * 100 + u16::from(two_digits(&digits[2..4]));
    let month = two_digits(&digits[4..6]);
    let day = two_digits(&digits[6..8]);
    let Some(birth_date) = CivilDate::new(year, month, day) else {
        return Err(ResidentIdError::InvalidBirthDate { year, month, day });
    };
    if birth_date < EARLIEST_BIRTH_DATE {
        return Err(ResidentIdError::BirthBefore1800 { birth_date });
    }
    if birth_date > today {
        return Err(ResidentIdError::BirthAfterToday { birth_date, today });
    }
    Ok(birth_date)
}

fn check_check_character(number: &str) -> Result<(), ResidentIdError> {
    let digits = number.as_bytes();
    let expected = mod_11_2(&digits[..LENGTH - 1]);
    let found = char::from(digits[LENGTH - 1]);
    if expected == found {
        Ok(())
    } else {
        Err(ResidentIdError::CheckCharacter { expected, found })
    }
}

/// The value of two ASCII digits; the caller has checked they are digits.
fn two_digits(digits: &[u8]) -> u8 {
    (digits[0] - b'0') * 10 + (digits[1] - b'0')
}

fn digit_value(digit: u8) -> usize {
    usize::from(digit - b'0')
}

#[cfg(test)]
mod tests {
    use super::{PROVINCE_CODES, check_character};

    #[test]
    fn check_character_of_the_standard_examples() {
        assert_eq!(check_character("11010519491231002"), Some('X'));
        assert_eq!(check_character("44052418800101001"), Some('4'));
        assert_eq!(check_character("34052419800101001"), Some('X'));
    }

    #[test]
    fn check_character_needs_exactly_17_digits() {
        assert_eq!(check_character("1101051949123100"), None);
        assert_eq!(check_character("110105194912310021"), None);
        assert_eq!(check_character("1101051949123100X"), None);
        assert_eq!(check_character("１1010519491231002"), None);
    }

    /// Every region code in the shipped list lies in a province the parser knows, so no
    /// number the list accepts is refused for its first two digits.
    #[test]
    fn every_region_is_in_a_known_province() {
        for region in crate::Region::all() {
            let province = u8::try_from(region.code / 10_000).unwrap_or(0);
            assert!(PROVINCE_CODES.contains(&province), "{} lies in no known province", region.code);
        }
    }

    #[test]
    fn province_table_is_sorted_and_has_34_entries() {
        assert!(PROVINCE_CODES.is_sorted());
        assert_eq!(PROVINCE_CODES.len(), 34);
    }
}
