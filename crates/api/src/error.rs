//! [`ApiError`]: every failure the API answers, rendered as an [`ErrorBody`].

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use citypay_api_types::{ErrorBody, MoneyError};

use crate::json::AppJson;

/// An error answer: an HTTP status, a stable snake_case `code` and a human `message`.
///
/// It renders as `{ "error": { "code": ..., "message": ... } }` with its status. Handlers return
/// `Result<_, ApiError>`; extractors of this crate reject with it, so clients see one error shape
/// everywhere. Messages are for people and must never carry secrets or personal data (keys, ID
/// numbers, card numbers): say which field is wrong, not what it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with any status. `code` must be snake_case (`[a-z0-9_]+`, starting with a
    /// letter): clients match on it, so treat it as part of the API.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        debug_assert!(is_snake_case(code), "error code {code:?} is not snake_case");
        debug_assert!(status.is_client_error() || status.is_server_error());
        let message = message.into();
        Self {
            status,
            code,
            message,
            retry_after_s: None,
        }
    }

    /// 400: the request is malformed (`invalid_json`, `invalid_cursor`, ...).
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthorized`: no credentials, or credentials that do not identify anyone.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`: no such resource, or one the caller may not see.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        let message = "this path does not accept this method; see the Allow header";
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409: the request conflicts with the state (`idempotency_key_reused` when a key comes
    /// back with another body).
    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed but refused by the rules (`invalid_amount`, `insufficient_funds`).
    pub fn unprocessable(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub fn too_many_requests(retry_after: Duration) -> Self {
        let message = "too many requests; retry after the number of seconds in Retry-After";
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            .with_retry_after(retry_after)
    }

    /// 503 `unavailable`, with `Retry-After`: the server cannot take the request now.
    pub fn unavailable(message: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_retry_after(retry_after)
    }

    /// 503 `timeout`: the request ran past the server's deadline. Its outcome is unknown, so the
    /// client retries with the same `Idempotency-Key`.
    pub fn timeout() -> Self {
        let message = "the request did not finish in time and its outcome is unknown; \
                       retry with the same Idempotency-Key";
        let status = StatusCode::SERVICE_UNAVAILABLE;
        Self::new(status, "timeout", message).with_retry_after(Duration::from_secs(1))
    }

    /// 500 `internal`: logs `cause` at error level and answers a generic message, never the
    /// cause. Pass causes without personal data or secrets (they reach the logs).
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        let message = "internal error; if this was a payment, retry with the same Idempotency-Key";
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Adds a `Retry-After` header, in whole seconds rounded up (at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        let whole_s = retry_after
            .as_secs()
            .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
        self.retry_after_s = Some(whole_s.max(1));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code, self.message);
        let mut response = (self.status, AppJson(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Bearer realm=\"citypay\"");
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<MoneyError> for ApiError {
    fn from(error: MoneyError) -> Self {
        Self::unprocessable(error.code(), error.to_string())
    }
}

fn is_snake_case(code: &str) -> bool {
    let mut bytes = code.bytes();
    let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    starts_with_letter && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_codes_are_recognised() {
        assert!(is_snake_case("idempotency_key_reused"));
        assert!(is_snake_case("e2e"));
        for bad in ["", "Bad", "kebab-case", "_leading", "9lives", "space d"] {
            assert!(!is_snake_case(bad), "{bad}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let error = ApiError::unavailable("busy", Duration::from_millis(1500));
        assert_eq!(error.retry_after_s, Some(2));
        let error = ApiError::unavailable("busy", Duration::ZERO);
        assert_eq!(error.retry_after_s, Some(1));
    }

    #[test]
    fn money_errors_become_unprocessable() {
        let error = ApiError::from(MoneyError::NonPositiveAmount);
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.code(), "invalid_amount");
    }
}
