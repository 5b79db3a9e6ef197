//! Money on the wire: integer minor units and an ISO 4217 code.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An amount of money: integer minor units of an ISO 4217 currency.
///
/// Amounts are never floats, on the wire or anywhere else: `{"amount": 1250, "currency": "CNY"}`
/// is 12.50 yuan (fen), and `{"amount": 500, "currency": "JPY"}` is 500 yen (no minor unit).
/// The JSON number is a 64-bit integer; JavaScript clients must use `BigInt` past 2^53.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Integer minor units of `currency` (fen for CNY).
    #[schema(example = 1250)]
    pub amount: i64,
    /// ISO 4217 alphabetic code: three uppercase ASCII letters.
    #[schema(
        example = "CNY",
        min_length = 3,
        max_length = 3,
        pattern = "^[A-Z]{3}$"
    )]
    pub currency: String,
}

/// Why a [`Money`] value cannot be used where it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// A payment, top-up or refund moves a positive amount; zero and negatives are refused.
    #[error("amount must be a positive integer number of minor units")]
    NonPositiveAmount,
    /// The currency is not three uppercase ASCII letters.
    #[error("currency must be an ISO 4217 code of three uppercase letters")]
    InvalidCurrency,
}

impl MoneyError {
    /// A stable snake_case code for the API's error body.
    pub fn code(self) -> &'static str {
        match self {
            MoneyError::NonPositiveAmount => "invalid_amount",
            MoneyError::InvalidCurrency => "invalid_currency",
        }
    }
}

impl Money {
    /// Money of `amount` minor units of `currency`, unchecked (see [`Money::validate_positive`]).
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }

    /// Checks that the currency code is well-formed (three uppercase ASCII letters).
    ///
    /// This checks the shape only; whether citypay handles the currency is the services' call.
    pub fn validate_currency(&self) -> Result<(), MoneyError> {
        let bytes = self.currency.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(())
        } else {
            Err(MoneyError::InvalidCurrency)
        }
    }

    /// Checks money that must move: a well-formed currency and an amount above zero, as a
    /// payment, top-up or refund needs.
    pub fn validate_positive(&self) -> Result<(), MoneyError> {
        self.validate_currency()?;
        if self.amount > 0 {
            Ok(())
        } else {
            Err(MoneyError::NonPositiveAmount)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_amounts_in_a_valid_currency_pass() {
        assert_eq!(Money::new(1, "CNY").validate_positive(), Ok(()));
        assert_eq!(Money::new(i64::MAX, "USD").validate_positive(), Ok(()));
    }

    #[test]
    fn zero_and_negative_amounts_are_refused() {
        for amount in [0, -1, i64::MIN] {
            let result = Money::new(amount, "CNY").validate_positive();
            assert_eq!(result, Err(MoneyError::NonPositiveAmount));
        }
    }

    #[test]
    fn malformed_currencies_are_refused() {
        for currency in ["", "cny", "CN", "CNYY", "C1Y", "人民币"] {
            let result = Money::new(100, currency).validate_positive();
            assert_eq!(result, Err(MoneyError::InvalidCurrency), "{currency}");
        }
    }

    #[test]
    fn amounts_are_integers_on_the_wire() {
        let json = serde_json::to_string(&Money::new(1250, "CNY")).unwrap();
        assert_eq!(json, r#"{"amount":1250,"currency":"CNY"}"#);
        let float = serde_json::from_str::<Money>(r#"{"amount":12.5,"currency":"CNY"}"#);
        assert!(float.is_err());
    }
}
