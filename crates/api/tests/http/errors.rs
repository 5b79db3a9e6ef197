//! Every error constructor renders `{error:{code,message}}` with its status.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use citypay_api::ApiError;

use crate::support::assert_error;

#[tokio::test]
async fn every_constructor_renders_its_status_and_code() {
    let cases = [
        (
            ApiError::bad_request("invalid_thing", "bad"),
            StatusCode::BAD_REQUEST,
            "invalid_thing",
        ),
        (
            ApiError::unauthorized("who?"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            ApiError::forbidden("no"),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            ApiError::not_found("gone"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            ApiError::method_not_allowed(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            ApiError::conflict("idempotency_key_reused", "other body"),
            StatusCode::CONFLICT,
            "idempotency_key_reused",
        ),
        (
            ApiError::unprocessable("insufficient_funds", "too little"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
        ),
        (
            ApiError::too_many_requests(Duration::from_secs(3)),
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        ),
        (
            ApiError::unavailable("draining", Duration::from_secs(5)),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            ApiError::timeout(),
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
        ),
        (
            ApiError::internal(&"db down"),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    ];
    for (error, status, code) in cases {
        assert_eq!((error.status(), error.code()), (status, code));
        assert_error(error.into_response(), status, code).await;
    }
}

#[tokio::test]
async fn the_message_is_the_one_given() {
    let response = ApiError::conflict("idempotency_key_reused", "key reused with another body");
    let body = assert_error(
        response.into_response(),
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(body.error.message, "key reused with another body");
}

#[tokio::test]
async fn retry_after_comes_with_429_and_503() {
    let response = ApiError::too_many_requests(Duration::from_secs(3)).into_response();
    assert_eq!(response.headers()["retry-after"], "3");
    let response = ApiError::unavailable("draining", Duration::from_millis(2100)).into_response();
    assert_eq!(response.headers()["retry-after"], "3");
    let response = ApiError::timeout().into_response();
    assert_eq!(response.headers()["retry-after"], "1");
    let response = ApiError::not_found("gone").into_response();
    assert!(response.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn unauthorized_carries_a_challenge() {
    let response = ApiError::unauthorized("missing API key").into_response();
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn internal_errors_never_return_their_cause() {
    let cause = "connection to postgres://admin:hunter2@db failed";
    let response = ApiError::internal(&cause).into_response();
    let body = assert_error(response, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    assert!(!body.error.message.contains("hunter2"));
    assert!(!body.error.message.contains("postgres"));
}
