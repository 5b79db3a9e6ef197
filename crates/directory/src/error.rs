//! What can go wrong in the directory, with a stable code for the API.

/// A directory failure. `code()` is the machine-readable code the API returns.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The resident ID number is not valid (the message says exactly why).
    #[error("invalid resident ID number: {0}")]
    InvalidResidentId(String),
    /// The Unified Social Credit Code is not valid.
    #[error("invalid Unified Social Credit Code: {0}")]
    InvalidUscc(String),
    /// A field is missing or malformed.
    #[error("{field}: {message}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// This real-name identity already has a wallet.
    #[error("this identity is already registered")]
    IdentityTaken,
    /// This mobile number is already registered.
    #[error("this mobile number is already registered")]
    MobileTaken,
    /// A merchant with this USCC is already onboarded.
    #[error("a merchant with this Unified Social Credit Code is already onboarded")]
    MerchantExists,
    /// The username is taken.
    #[error("this username is already taken")]
    UsernameTaken,
    /// The city is not onboarded.
    #[error("city {0} is not onboarded")]
    UnknownCity(u32),
    /// The city is already onboarded.
    #[error("city {0} is already onboarded")]
    CityExists(u32),
    /// Wrong credentials (never says which part was wrong).
    #[error("wrong credentials")]
    WrongCredentials,
    /// Too many wrong passwords for this account, client or address in this window.
    #[error("too many failed sign-ins; retry in {retry_after_s} s")]
    RateLimited {
        /// Seconds until the window ends.
        retry_after_s: u64,
    },
    /// The resident froze their wallet: nothing is paid out of it until they unfreeze it.
    #[error("the wallet is frozen by its owner")]
    WalletFrozen,
    /// Too young to open a wallet on their own.
    #[error("a resident opens a wallet on their own from the age of {minimum}; a younger child's needs a guardian")]
    BelowMinimumAge {
        /// The minimum age.
        minimum: u16,
    },
    /// The name given is not the one registered with this ID number.
    #[error("the name does not match the one registered with this ID number")]
    IdentityMismatch,
    /// The record does not exist (or the caller may not see it).
    #[error("not found")]
    NotFound,
    /// The ledger refused the account (a bug in the caller, or a conflict of ids).
    #[error("the ledger refused: {0}")]
    Ledger(citypay_ledger::Status),
    /// The writer is not available or the commit failed; retrying is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read.
    #[error("storage: {0}")]
    Storage(String),
}

impl DirectoryError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            DirectoryError::InvalidResidentId(_) => "invalid_resident_id",
            DirectoryError::InvalidUscc(_) => "invalid_uscc",
            DirectoryError::InvalidField { .. } => "invalid_field",
            DirectoryError::IdentityTaken => "identity_already_registered",
            DirectoryError::MobileTaken => "mobile_already_registered",
            DirectoryError::MerchantExists => "merchant_already_onboarded",
            DirectoryError::UsernameTaken => "username_taken",
            DirectoryError::UnknownCity(_) => "unknown_city",
            DirectoryError::CityExists(_) => "city_already_onboarded",
            DirectoryError::WrongCredentials => "wrong_credentials",
            DirectoryError::RateLimited { .. } => "rate_limited",
            DirectoryError::WalletFrozen => "wallet_frozen",
            DirectoryError::IdentityMismatch => "identity_mismatch",
            DirectoryError::BelowMinimumAge { .. } => "below_minimum_age",
            DirectoryError::NotFound => "not_found",
            DirectoryError::Ledger(status) => status.name(),
            DirectoryError::Unavailable(_) => "unavailable",
            DirectoryError::Storage(_) => "storage_error",
        }
    }
}

impl From<citypay_store::StoreError> for DirectoryError {
    fn from(error: citypay_store::StoreError) -> DirectoryError {
        match error {
            // A database failing over: retry in a moment.
            citypay_store::StoreError::Unavailable(_) => DirectoryError::Unavailable(error.to_string()),
            _ => DirectoryError::Storage(error.to_string()),
        }
    }
}
