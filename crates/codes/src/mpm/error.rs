//! Errors of the MPM codec, worded for an operator reading a log line.
//!
//! Offsets count characters (Unicode scalar values) from the start of the payload, the unit in
//! which EMVCo measures lengths, so an operator can count along the scanned text.

use super::amount::AmountError;

/// Why a merchant-presented payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpmError {
    /// The payload is longer than citypay reads.
    #[error("payload is {chars} characters long; citypay reads at most {max}")]
    TooLong {
        /// Length of the payload in characters.
        chars: usize,
        /// [`super::MAX_PAYLOAD_CHARS`].
        max: usize,
    },
    /// The payload does not open with the payload format indicator `000201`.
    #[error("payload must start with the payload format indicator 000201, found {found:?}")]
    FormatIndicator {
        /// The first (up to) six characters of the payload.
        found: String,
    },
    /// Fewer than the four characters of an ID and a length remain.
    #[error(
        "data object at character {offset} is cut short: an ID and a length need 4 characters, \
         {remaining} left"
    )]
    TruncatedHeader {
        /// Where the data object starts.
        offset: usize,
        /// Characters left in the payload or template.
        remaining: usize,
    },
    /// An ID is not two ASCII digits.
    #[error("ID at character {offset} must be two digits, found {found:?}")]
    NonDigitId {
        /// Where the ID starts.
        offset: usize,
        /// The two characters found.
        found: String,
    },
    /// A length is not two ASCII digits.
    #[error(
        "length of data object {id:02} at character {offset} must be two digits, found {found:?}"
    )]
    NonDigitLength {
        /// The data object's ID.
        id: u8,
        /// Where the data object starts.
        offset: usize,
        /// The two characters found.
        found: String,
    },
    /// A length of `00`; values hold 1 to 99 characters.
    #[error(
        "data object {id:02} at character {offset} has length 00; values hold 1 to 99 characters"
    )]
    ZeroLength {
        /// The data object's ID.
        id: u8,
        /// Where the data object starts.
        offset: usize,
    },
    /// A length runs past the end of the payload or of its template.
    #[error(
        "data object {id:02} at character {offset} declares {declared} characters but only \
         {available} remain"
    )]
    ValueOverrun {
        /// The data object's ID.
        id: u8,
        /// Where the data object starts.
        offset: usize,
        /// The declared length.
        declared: usize,
        /// Characters actually left.
        available: usize,
    },
    /// The same ID twice at one level.
    #[error("data object {id:02} appears twice (again at character {offset})")]
    DuplicateId {
        /// The repeated ID.
        id: u8,
        /// Where the second one starts.
        offset: usize,
    },
    /// An error inside a template (26–51, 62, 64, 80–99).
    #[error("in template {template:02}: {error}")]
    InTemplate {
        /// The template's ID.
        template: u8,
        /// What went wrong inside it.
        error: Box<MpmError>,
    },
    /// No data object 63.
    #[error("payload has no CRC: it must end with data object 63 of length 04")]
    CrcMissing,
    /// Data object 63 is followed by more data.
    #[error(
        "CRC (ID 63) must be the last data object, but data object {next:02} follows at \
         character {offset}"
    )]
    CrcNotLast {
        /// The ID that follows the CRC.
        next: u8,
        /// Where it starts.
        offset: usize,
    },
    /// Data object 63 is not four characters long.
    #[error("CRC (ID 63) must have length 04, found {length:02}")]
    CrcLength {
        /// The declared length.
        length: usize,
    },
    /// The CRC does not match the payload.
    #[error("CRC should be {expected}, found {found}")]
    CrcMismatch {
        /// The CRC computed over the payload, four upper-case hex digits.
        expected: String,
        /// The CRC the payload carries.
        found: String,
    },
    /// A mandatory root data object is absent.
    #[error("mandatory data object {id:02} ({name}) is missing")]
    MissingField {
        /// Its ID.
        id: u8,
        /// What it holds.
        name: &'static str,
    },
    /// A mandatory data object inside a template is absent.
    #[error("template {template:02} lacks its mandatory data object {id:02} ({name})")]
    MissingSubField {
        /// The template's ID.
        template: u8,
        /// The missing ID.
        id: u8,
        /// What it holds.
        name: &'static str,
    },
    /// None of IDs 02–51 is present.
    #[error("no merchant account information: at least one of IDs 02 to 51 is required")]
    NoMerchantAccount,
    /// Data object 01 is neither `11` nor `12`.
    #[error("point of initiation (ID 01) must be 11 (static) or 12 (dynamic), found {found:?}")]
    PointOfInitiation {
        /// The value found.
        found: String,
    },
    /// Data object 54 is not a valid amount.
    #[error("amount (ID 54) {value:?} is invalid: {reason}")]
    InvalidAmount {
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: AmountError,
    },
    /// A root data object breaks its format.
    #[error("{name} (ID {id:02}) {value:?} is invalid: it must be {rule}")]
    InvalidField {
        /// Its ID.
        id: u8,
        /// What it holds.
        name: &'static str,
        /// The value found.
        value: String,
        /// The format it must have.
        rule: &'static str,
    },
    /// A data object inside a template breaks its format.
    #[error("{name} (template {template:02}, ID {id:02}) {value:?} is invalid: it must be {rule}")]
    InvalidSubField {
        /// The template's ID.
        template: u8,
        /// The data object's ID.
        id: u8,
        /// What it holds.
        name: &'static str,
        /// The value found.
        value: String,
        /// The format it must have.
        rule: &'static str,
    },
    /// Two citypay templates: the payload would name two merchants.
    #[error("citypay templates {first:02} and {second:02}: a payload names one citypay merchant")]
    DuplicateCitypay {
        /// The first template's ID.
        first: u8,
        /// The second template's ID.
        second: u8,
    },
    /// The CRC is written in lower-case hex (citypay writes and requires upper case).
    #[error("CRC {found} is in lower case; citypay's payloads write it in upper case")]
    CrcLowerCase {
        /// The CRC as written.
        found: String,
    },
}

/// What a payload leaves out or bends that banks' apps still read (see
/// [`super::Payload::warnings`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpmWarning {
    /// A data object EMVCo makes mandatory is absent.
    #[error("mandatory data object {id:02} ({name}) is missing")]
    MissingField {
        /// Its ID.
        id: u8,
        /// What it holds.
        name: &'static str,
    },
    /// The CRC's hex digits are in lower case (the same check value).
    #[error("CRC {found} is written in lower case")]
    CrcLowerCase {
        /// The CRC as written.
        found: String,
    },
}

impl MpmError {
    /// Wraps an error found inside template `template`.
    pub(crate) fn in_template(template: u8, error: MpmError) -> MpmError {
        MpmError::InTemplate {
            template,
            error: Box::new(error),
        }
    }
}
