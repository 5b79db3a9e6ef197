//! The Unified Social Credit Code (统一社会信用代码), GB 32100-2015.
//!
//! 18 characters from a 31-symbol alphabet (digits and upper-case letters without I, O, Z, S
//! and V):
//!
//! | positions | part |
//! | --- | --- |
//! | 1 | registration authority (e.g. `9` market regulation, `1` institutional staffing) |
//! | 2 | organisation category under that authority (e.g. `91` enterprise) |
//! | 3–8 | administrative division code (GB/T 2260), 6 digits |
//! | 9–17 | organisation code (GB 11714): 8 body characters and their own check character |
//! | 18 | check character over positions 1–17 (GB/T 17710, MOD 31) |

use core::fmt;

/// Characters in a code.
const LENGTH: usize = 18;
/// The code's alphabet; a symbol's value is its index here (0–30).
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weights of positions 1–17 for the GB 32100 check character: 3^(i-1) mod 31.
const WEIGHTS: [usize; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
/// Weights of the 8 body characters of a GB 11714 organisation code.
const ORGANIZATION_WEIGHTS: [usize; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
/// The GB 11714 check character for each value of C = 11 − (sum mod 11), 1 to 11
/// (index 0 is never used): 10 is written `X` and 11 is written `0`.
const ORGANIZATION_CHECK_CHARACTERS: &[u8; 12] = b"0123456789X0";
/// Positions (from 1) of the administrative division code, which must be digits.
const REGION_POSITIONS: core::ops::RangeInclusive<usize> = 3..=8;

/// A checked Unified Social Credit Code, normalised to upper case.
///
/// The code is public (it is printed on business licences), so `Debug` and `Display` show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uscc {
    code: String,
}

/// Why a Unified Social Credit Code was refused. Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    /// Not 18 characters long.
    #[error("a unified social credit code has 18 characters, found {found}")]
    Length {
        /// Characters found.
        found: usize,
    },
    /// A character outside the code's alphabet.
    #[error(
        "character {position} is {found:?}, which codes do not use \
         (only digits and upper-case letters except I, O, Z, S and V)"
    )]
    Character {
        /// Position of the character, from 1.
        position: usize,
        /// The character found (as typed, before upper-casing).
        found: char,
    },
    /// A letter in positions 3–8, the administrative division code.
    #[error(
        "character {position} is {found:?}: positions 3 to 8 are the region code \
         and must be digits"
    )]
    RegionNotDigit {
        /// Position of the character, from 1.
        position: usize,
        /// The character found.
        found: char,
    },
    /// Position 17 does not match the GB 11714 check of the organisation code body.
    #[error(
        "the organisation code (positions 9 to 17) is wrong: its check character \
         should be {expected:?}, found {found:?}"
    )]
    OrganizationCheck {
        /// The check character positions 9–16 give.
        expected: char,
        /// Position 17 of the code.
        found: char,
    },
    /// Position 18 does not match the GB 32100 check of positions 1–17.
    #[error("check character should be {expected:?}, found {found:?}")]
    CheckCharacter {
        /// The check character positions 1–17 give.
        expected: char,
        /// Position 18 of the code.
        found: char,
    },
}

impl Uscc {
    /// Checks a code; lower-case letters are accepted and normalised to upper case.
    ///
    /// Surrounding whitespace is not removed. Checks run in order: length, alphabet, region
    /// digits, the embedded organisation-code check, the final check character.
    pub fn parse(input: &str) -> Result<Self, UsccError> {
        let code = normalize(input)?;
        let bytes = code.as_bytes();
        check_organization_code(&bytes[8..17])?;
        check_check_character(bytes)?;
        Ok(Self { code })
    }

    /// The whole normalised code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.code
    }

    /// Position 1: the registration authority (`9` market regulation, `1` institutional
    /// staffing, `5` civil affairs, `Y` other, …).
    #[must_use]
    pub fn registration_authority(&self) -> char {
        self.char_at(0)
    }

    /// Position 2: the organisation category under that authority (`1` enterprise under `9`).
    #[must_use]
    pub fn organization_category(&self) -> char {
        self.char_at(1)
    }

    /// Positions 3–8: the 6-digit GB/T 2260 administrative division code of the registrar.
    #[must_use]
    pub fn region_code(&self) -> &str {
        &self.code[2..8]
    }

    /// Positions 9–17: the 9-character GB 11714 organisation code, its check included.
    #[must_use]
    pub fn organization_code(&self) -> &str {
        &self.code[8..17]
    }

    /// Position 18: the check character.
    #[must_use]
    pub fn check_character(&self) -> char {
        self.char_at(LENGTH - 1)
    }

    fn char_at(&self, index: usize) -> char {
        char::from(self.code.as_bytes()[index])
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// The GB 32100 check character for positions 1–17 of a code, or `None` unless `first17` is
/// 17 characters of the (upper-case) alphabet.
#[must_use]
pub fn check_character(first17: &str) -> Option<char> {
    let symbols = first17.as_bytes();
    let valid =
        symbols.len() == WEIGHTS.len() && symbols.iter().all(|s| symbol_value(*s).is_some());
    valid.then(|| mod_31(symbols))
}

/// The GB 11714 check character (`0`–`9` or `X`) for an 8-character organisation code body, or
/// `None` unless `body` is 8 ASCII digits or upper-case letters.
#[must_use]
pub fn organization_check_character(body: &str) -> Option<char> {
    let symbols = body.as_bytes();
    let valid = symbols.len() == ORGANIZATION_WEIGHTS.len()
        && symbols
            .iter()
            .all(|s| s.is_ascii_digit() || s.is_ascii_uppercase());
    valid.then(|| mod_11(symbols))
}

/// Checks length, alphabet and region digits; returns the upper-cased code.
fn normalize(input: &str) -> Result<String, UsccError> {
    let found = input.chars().count();
    if found != LENGTH {
        return Err(UsccError::Length { found });
    }
    let mut code = String::with_capacity(LENGTH);
    for (index, found) in input.chars().enumerate() {
        let position = index + 1;
        let upper = found.to_ascii_uppercase();
        let Some(symbol) = u8::try_from(upper)
            .ok()
            .filter(|s| symbol_value(*s).is_some())
        else {
            return Err(UsccError::Character { position, found });
        };
        if REGION_POSITIONS.contains(&position) && !symbol.is_ascii_digit() {
            return Err(UsccError::RegionNotDigit { position, found });
        }
        code.push(char::from(symbol));
    }
    Ok(code)
}

fn check_organization_code(organization_code: &[u8]) -> Result<(), UsccError> {
    let expected = mod_11(&organization_code[..8]);
    let found = char::from(organization_code[8]);
    if expected == found {
        Ok(())
    } else {
        Err(UsccError::OrganizationCheck { expected, found })
    }
}

fn check_check_character(code: &[u8]) -> Result<(), UsccError> {
    let expected = mod_31(&code[..LENGTH - 1]);
    let found = char::from(code[LENGTH - 1]);
    if expected == found {
        Ok(())
    } else {
        Err(UsccError::CheckCharacter { expected, found })
    }
}

/// GB 32100: value = (31 − Σ vᵢ·wᵢ mod 31) mod 31, mapped back through the alphabet.
/// The caller has checked every symbol is in the alphabet.
fn mod_31(symbols: &[u8]) -> char {
    let sum: usize = symbols
        .iter()
        .zip(WEIGHTS)
        .map(|(symbol, weight)| symbol_value(*symbol).unwrap_or(0) * weight)
        .sum();
    char::from(ALPHABET[(31 - sum % 31) % 31])
}

/// GB 11714: C = 11 − (Σ vᵢ·wᵢ mod 11) with digits 0–9 and letters A=10 … Z=35;
/// 10 is written `X` and 11 is written `0`. The caller has checked the symbols.
fn mod_11(body: &[u8]) -> char {
    let sum: usize = body
        .iter()
        .zip(ORGANIZATION_WEIGHTS)
        .map(|(symbol, weight)| organization_value(*symbol) * weight)
        .sum();
    char::from(ORGANIZATION_CHECK_CHARACTERS[11 - sum % 11])
}

/// The value (0–30) of an upper-case symbol of the code's alphabet.
fn symbol_value(symbol: u8) -> Option<usize> {
    ALPHABET.iter().position(|candidate| *candidate == symbol)
}

/// The GB 11714 value of a digit or upper-case letter: `0`–`9` then A=10 … Z=35.
fn organization_value(symbol: u8) -> usize {
    if symbol.is_ascii_digit() {
        usize::from(symbol - b'0')
    } else {
        usize::from(symbol - b'A') + 10
    }
}

#[cfg(test)]
mod tests {
    use super::{ALPHABET, check_character, organization_check_character};

    #[test]
    fn alphabet_has_31_symbols_without_i_o_z_s_v() {
        assert_eq!(ALPHABET.len(), 31);
        assert!(!ALPHABET.iter().any(|s| b"IOZSV".contains(s)));
    }

    #[test]
    fn check_characters_of_published_codes() {
        assert_eq!(check_character("91350100M000100Y4"), Some('3'));
        assert_eq!(check_character("91110000600037341"), Some('L'));
        assert_eq!(organization_check_character("M000100Y"), Some('4'));
        assert_eq!(organization_check_character("60003734"), Some('1'));
    }

    #[test]
    fn check_functions_refuse_bad_input() {
        assert_eq!(check_character("91350100M000100Y"), None);
        assert_eq!(check_character("91350100I000100Y4"), None);
        assert_eq!(check_character("91350100m000100Y4"), None);
        assert_eq!(organization_check_character("M000100"), None);
        assert_eq!(organization_check_character("m000100Y"), None);
    }
}
