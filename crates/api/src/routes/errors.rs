//! Service errors as HTTP answers: the status that fits, the service's stable code.

use std::time::Duration;

use axum::http::StatusCode;
use citypay_checkout::CheckoutError;
use citypay_directory::DirectoryError;
use citypay_transit::TransitError;
use citypay_wallet::WalletError;

use crate::ApiError;

const RETRY: Duration = Duration::from_secs(1);

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> ApiError {
        let status = match &e {
            DirectoryError::InvalidResidentId(_)
            | DirectoryError::InvalidUscc(_)
            | DirectoryError::InvalidField { .. }
            | DirectoryError::IdentityMismatch
            | DirectoryError::BelowMinimumAge { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            DirectoryError::IdentityTaken
            | DirectoryError::MobileTaken
            | DirectoryError::MerchantExists
            | DirectoryError::UsernameTaken
            | DirectoryError::CityExists(_) => StatusCode::CONFLICT,
            DirectoryError::UnknownCity(_) | DirectoryError::NotFound => StatusCode::NOT_FOUND,
            DirectoryError::WrongCredentials => StatusCode::UNAUTHORIZED,
            DirectoryError::WalletFrozen => StatusCode::FORBIDDEN,
            DirectoryError::RateLimited { retry_after_s } => return ApiError::too_many_requests(Duration::from_secs(*retry_after_s)),
            DirectoryError::Ledger(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DirectoryError::Unavailable(_) => return ApiError::unavailable(e.to_string(), RETRY),
            DirectoryError::Storage(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> ApiError {
        let status = match e {
            WalletError::Directory(inner) => return ApiError::from(inner),
            WalletError::InvalidCard(_) | WalletError::InvalidAmount(_) | WalletError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WalletError::Bank(citypay_directory::BankError::Unavailable) | WalletError::Unavailable(_) => {
                return ApiError::unavailable(e.to_string(), RETRY);
            }
            WalletError::OutcomeUnknown => return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()).with_retry_after(RETRY),
            WalletError::Returned(_) => StatusCode::CONFLICT,
            WalletError::Bank(citypay_directory::BankError::HolderMismatch) => StatusCode::UNPROCESSABLE_ENTITY,
            WalletError::Bank(_) => StatusCode::PAYMENT_REQUIRED,
            WalletError::CardNotFound | WalletError::RecipientNotFound => StatusCode::NOT_FOUND,
            WalletError::OwnWallet => StatusCode::UNPROCESSABLE_ENTITY,
            WalletError::InvalidNote(_) => StatusCode::BAD_REQUEST,
            WalletError::TooManyLookups { retry_after_s } => return ApiError::too_many_requests(std::time::Duration::from_secs(retry_after_s)),
            WalletError::KeyReused => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> ApiError {
        let status = match e {
            CheckoutError::Directory(inner) => return ApiError::from(inner),
            CheckoutError::InvalidField { .. }
            | CheckoutError::InvalidQr(_)
            | CheckoutError::SchemeNotAccepted(_)
            | CheckoutError::InvalidCode(_)
            | CheckoutError::CodeUsed
            | CheckoutError::RefundExceedsPaid
            | CheckoutError::AmountMismatch { .. }
            | CheckoutError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CheckoutError::TradeNotFound | CheckoutError::RefundNotFound | CheckoutError::DeviceNotFound => StatusCode::NOT_FOUND,
            CheckoutError::OutTradeNoReused
            | CheckoutError::RefundRequestReused
            | CheckoutError::AlreadyPaid
            | CheckoutError::TradeClosed
            | CheckoutError::TradeFinished
            | CheckoutError::NotPaid => StatusCode::CONFLICT,
            CheckoutError::TooManyAttempts => return ApiError::too_many_requests(Duration::from_secs(60)),
            CheckoutError::DeviceCoolingDown { retry_after_s } => {
                let message = e.to_string();
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.code(), message).with_retry_after(Duration::from_secs(retry_after_s));
            }
            CheckoutError::Unavailable(_) => return ApiError::unavailable(e.to_string(), RETRY),
            CheckoutError::OutcomeUnknown => return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()).with_retry_after(RETRY),
            CheckoutError::Returned(_) | CheckoutError::RefundReturned(_) => StatusCode::CONFLICT,
            CheckoutError::AccountElsewhere => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<TransitError> for ApiError {
    fn from(e: TransitError) -> ApiError {
        let (code, message) = (e.code(), e.to_string());
        let status = match e {
            TransitError::Directory(inner) => return ApiError::from(inner),
            TransitError::InvalidField { .. } | TransitError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            TransitError::NotTransitOperator => StatusCode::FORBIDDEN,
            TransitError::UnknownValidator => StatusCode::NOT_FOUND,
            TransitError::InArrears | TransitError::DayNotClosed(_) | TransitError::DeviceKeyRegistered(_) | TransitError::RideKeysNotShared(_) | TransitError::KeyScheduleChanged | TransitError::LastRideKey(_) => {
                StatusCode::CONFLICT
            }
            TransitError::UnknownRideKey(_) => StatusCode::NOT_FOUND,
            TransitError::Unavailable(_) => return ApiError::unavailable(message, RETRY),
        };
        ApiError::new(status, code, message)
    }
}

impl From<citypay_bills::BillError> for ApiError {
    fn from(e: citypay_bills::BillError) -> ApiError {
        use citypay_bills::BillError;
        let status = match e {
            BillError::Directory(inner) => return ApiError::from(inner),
            BillError::InvalidField { .. } | BillError::AmountMismatch(_) | BillError::Refused(_) | BillError::FundShort(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BillError::BillNotFound | BillError::LinkNotFound => StatusCode::NOT_FOUND,
            BillError::OutBillNoReused | BillError::AlreadyPaid | BillError::Overdue | BillError::WindowClosed | BillError::NothingToClaim | BillError::Returned(_) => StatusCode::CONFLICT,
            BillError::OutcomeUnknown => return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()).with_retry_after(RETRY),
            // The oldest unanswered request leaves the week's count within a week.
            BillError::TooManyLinkRequests => {
                let week = std::time::Duration::from_secs(citypay_bills::LINK_REQUESTS_WINDOW_S);
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.code(), e.to_string()).with_retry_after(week);
            }
            BillError::Unavailable(_) => return ApiError::unavailable(e.to_string(), RETRY),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<citypay_settlement::SettlementError> for ApiError {
    fn from(e: citypay_settlement::SettlementError) -> ApiError {
        use citypay_settlement::SettlementError;
        match e {
            SettlementError::Directory(inner) => ApiError::from(inner),
            SettlementError::DayNotClosed(_) => ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string()),
            SettlementError::Unavailable(_) => ApiError::unavailable(e.to_string(), RETRY),
        }
    }
}

impl From<citypay_clearing::ClearingError> for ApiError {
    fn from(e: citypay_clearing::ClearingError) -> ApiError {
        use citypay_clearing::ClearingError;
        match e {
            ClearingError::Directory(inner) => ApiError::from(inner),
            // A claim asked of another shard and not answered: the registration did not happen
            // yet, and the same key's retry claims again.
            ClearingError::Unknown(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", "another shard did not answer; retry with the same Idempotency-Key").with_retry_after(RETRY)
            }
            ClearingError::Unavailable(_) => ApiError::unavailable(e.to_string(), RETRY),
            other => ApiError::internal(&other),
        }
    }
}
