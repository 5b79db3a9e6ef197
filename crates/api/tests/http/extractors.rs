//! AppJson, Idempotency-Key and page requests through the router.

use axum::http::StatusCode;
use citypay_api::{Cursor, request_fingerprint};
use citypay_api_types::Page;

use crate::support::{
    BODY_LIMIT, Item, JSON, PAYMENT, PaymentReceipt, app, assert_error, body_json, get, request,
    send,
};

const KEY: (&str, &str) = ("idempotency-key", "order-42");

#[tokio::test]
async fn valid_json_is_accepted() {
    let response = send(
        app(),
        request("PUT", "/test/echo", &[JSON], r#"{"id":"a1"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let item: Item = body_json(response).await;
    assert_eq!(item.id, "a1");
}

/// Request headers, body, and the status and code of the answer.
type RejectionCase<'a> = (&'a [(&'a str, &'a str)], &'a str, StatusCode, &'a str);

#[tokio::test]
async fn json_rejections_are_json_errors() {
    let too_large = format!(r#"{{"id":"{}"}}"#, "x".repeat(BODY_LIMIT));
    let cases: [RejectionCase<'_>; 6] = [
        (
            &[JSON],
            r#"{"id":"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            &[JSON],
            r#"{"id":"a"} trailing"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            &[JSON],
            r#"{"id":42}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (&[JSON], r#"{}"#, StatusCode::BAD_REQUEST, "invalid_body"),
        (
            &[],
            r#"{"id":"a"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            &[JSON],
            &too_large,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (headers, body, status, code) in cases {
        let response = send(app(), request("PUT", "/test/echo", headers, body)).await;
        assert_error(response, status, code).await;
    }
    let text = ("content-type", "text/plain");
    let response = send(
        app(),
        request("PUT", "/test/echo", &[text], r#"{"id":"a"}"#),
    )
    .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_type_is_named_without_echoing_the_value() {
    let body = r#"{"amount":{"amount":"6222021234567890123","currency":"CNY"},"card_number":"x"}"#;
    let response = send(
        app(),
        request("POST", "/test/payments/m1", &[JSON, KEY], body),
    )
    .await;
    let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(
        error.error.message.contains("amount.amount"),
        "{}",
        error.error.message
    );
    assert!(
        !error.error.message.contains("6222"),
        "{}",
        error.error.message
    );
}

#[tokio::test]
async fn a_missing_idempotency_key_is_required() {
    let response = send(
        app(),
        request("POST", "/test/payments/m1", &[JSON], PAYMENT),
    )
    .await;
    assert_error(
        response,
        StatusCode::BAD_REQUEST,
        "idempotency_key_required",
    )
    .await;
}

#[tokio::test]
async fn invalid_idempotency_keys_are_refused() {
    let too_long = "k".repeat(256);
    for key in ["", &too_long, "tab\there"] {
        let headers = [JSON, ("idempotency-key", key)];
        let response = send(
            app(),
            request("POST", "/test/payments/m1", &headers, PAYMENT),
        )
        .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    }
    let twice = [JSON, KEY, KEY];
    let response = send(app(), request("POST", "/test/payments/m1", &twice, PAYMENT)).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
}

#[tokio::test]
async fn a_valid_key_reaches_the_handler_with_the_fingerprint() {
    let response = send(
        app(),
        request("POST", "/test/payments/m1", &[JSON, KEY], PAYMENT),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let receipt: PaymentReceipt = body_json(response).await;
    assert_eq!(receipt.key, "order-42");
    let expected = request_fingerprint(
        &axum::http::Method::POST,
        "/test/payments/m1",
        PAYMENT.as_bytes(),
    );
    let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(receipt.fingerprint, expected);
}

#[tokio::test]
async fn a_non_positive_amount_is_unprocessable() {
    let body = r#"{"amount":{"amount":0,"currency":"CNY"},"card_number":"x"}"#;
    let response = send(
        app(),
        request("POST", "/test/payments/m1", &[JSON, KEY], body),
    )
    .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount").await;
}

#[tokio::test]
async fn pages_start_with_the_default_limit() {
    let page: Page<Item> = body_json(get(app(), "/test/items").await).await;
    let ids: Vec<&str> = page.items.iter().map(|item| item.id.as_str()).collect();
    assert_eq!(ids, ["after:start", "limit:50"]);
    let next = page.next_cursor.expect("a next cursor");
    assert_eq!(Cursor::decode(&next).unwrap(), Cursor::new(7, "item_7"));
}

#[tokio::test]
async fn cursors_round_trip_through_the_query() {
    let cursor = Cursor::new(1_700_000_000_000, "pay_9").encode();
    let uri = format!("/test/items?cursor={cursor}&limit=200&other=ignored");
    let page: Page<Item> = body_json(get(app(), &uri).await).await;
    let ids: Vec<&str> = page.items.iter().map(|item| item.id.as_str()).collect();
    assert_eq!(ids, ["after:pay_9", "limit:200"]);
}

#[tokio::test]
async fn garbage_cursors_and_limits_are_refused() {
    for query in ["cursor=not-a-cursor!", "cursor=AAAA", "cursor=%FF%FE"] {
        let response = get(app(), &format!("/test/items?{query}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    }
    for limit in ["0", "201", "-5", "lots"] {
        let response = get(app(), &format!("/test/items?limit={limit}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_limit").await;
    }
}
