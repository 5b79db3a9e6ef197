//! The result of applying one event.

/// What happened to one event. The numeric values are stable: stores persist them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "u8", into = "u8"))]
pub enum Status {
    /// Applied.
    Ok = 0,
    /// The debit would take a debits-must-not-exceed-credits account below zero.
    InsufficientFunds = 1,
    /// The credit would break a credits-must-not-exceed-debits account.
    ExceedsDebits = 2,
    /// The amount is above the debit account's per-transfer cap.
    ExceedsTransferCap = 3,
    /// The amount would take a window cap (day, year, since opening) over its maximum.
    ExceedsWindowCap = 4,
    /// The transfer's currency differs from an account's.
    CurrencyMismatch = 5,
    /// An account does not exist.
    AccountNotFound = 6,
    /// The pending transfer to post or void does not exist.
    PendingNotFound = 7,
    /// The pending transfer passed its deadline and was released.
    PendingExpired = 8,
    /// The pending transfer was already posted.
    AlreadyPosted = 9,
    /// The pending transfer was already voided.
    AlreadyVoided = 10,
    /// The id was used before with a different body.
    ConflictingReplay = 11,
    /// Zero or negative amount.
    InvalidAmount = 12,
    /// Debit and credit are the same account.
    SameAccount = 13,
    /// A balance or cap total would overflow `i64`.
    Overflow = 14,
    /// The post's amount is larger than the pending amount.
    PostExceedsPending = 15,
    /// An entry with no legs or more than the bound.
    InvalidEntry = 16,
    /// The id is 0 (reserved).
    InvalidId = 17,
    /// The account's flags or limits are not valid.
    InvalidAccount = 18,
    /// The referenced transfer exists but is not pending.
    NotPending = 19,
    /// The batch holds more events than [`crate::limits::BATCH_EVENTS_MAX`]; none was applied.
    BatchTooLarge = 20,
}

impl Status {
    const ALL: [Status; 21] = [
        Status::Ok,
        Status::InsufficientFunds,
        Status::ExceedsDebits,
        Status::ExceedsTransferCap,
        Status::ExceedsWindowCap,
        Status::CurrencyMismatch,
        Status::AccountNotFound,
        Status::PendingNotFound,
        Status::PendingExpired,
        Status::AlreadyPosted,
        Status::AlreadyVoided,
        Status::ConflictingReplay,
        Status::InvalidAmount,
        Status::SameAccount,
        Status::Overflow,
        Status::PostExceedsPending,
        Status::InvalidEntry,
        Status::InvalidId,
        Status::InvalidAccount,
        Status::NotPending,
        Status::BatchTooLarge,
    ];

    /// Stable numeric code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`Status::code`].
    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.get(usize::from(code)).copied()
    }

    /// The snake_case name used on the wire and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::InsufficientFunds => "insufficient_funds",
            Status::ExceedsDebits => "exceeds_debits",
            Status::ExceedsTransferCap => "exceeds_transfer_cap",
            Status::ExceedsWindowCap => "exceeds_window_cap",
            Status::CurrencyMismatch => "currency_mismatch",
            Status::AccountNotFound => "account_not_found",
            Status::PendingNotFound => "pending_not_found",
            Status::PendingExpired => "pending_expired",
            Status::AlreadyPosted => "already_posted",
            Status::AlreadyVoided => "already_voided",
            Status::ConflictingReplay => "conflicting_replay",
            Status::InvalidAmount => "invalid_amount",
            Status::SameAccount => "same_account",
            Status::Overflow => "overflow",
            Status::PostExceedsPending => "post_exceeds_pending",
            Status::InvalidEntry => "invalid_entry",
            Status::InvalidId => "invalid_id",
            Status::InvalidAccount => "invalid_account",
            Status::NotPending => "not_pending",
            Status::BatchTooLarge => "batch_too_large",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer to one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Outcome {
    /// What happened (for a replay: what happened the first time).
    pub status: Status,
    /// True when the id was seen before with the same body: nothing moved this time.
    pub replay: bool,
}

impl Outcome {
    /// A first-time outcome.
    pub const fn new(status: Status) -> Outcome {
        Outcome { status, replay: false }
    }
}

impl TryFrom<u8> for Status {
    type Error = String;
    fn try_from(code: u8) -> Result<Status, String> {
        Status::from_code(code).ok_or_else(|| format!("no status has code {code}"))
    }
}

impl From<Status> for u8 {
    fn from(status: Status) -> u8 {
        status.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.code()), i);
            assert_eq!(Status::from_code(s.code()), Some(*s));
        }
        assert_eq!(Status::from_code(200), None);
    }
}
