//! A test app with a few documented routes, and helpers to call it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use citypay_api::{
    Api, ApiConfig, ApiError, AppJson, IdempotencyKey, Idempotent, OpenApiRouter, PageQuery,
    PageRequest,
};
use citypay_api_types::{ErrorBody, Money, Page};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use utoipa::ToSchema;
use utoipa_axum::routes;

pub(crate) const TIMEOUT: Duration = Duration::from_millis(200);
pub(crate) const BODY_LIMIT: usize = 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaymentRequest {
    pub(crate) amount: Money,
    pub(crate) card_number: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PaymentReceipt {
    pub(crate) key: String,
    pub(crate) fingerprint: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Item {
    pub(crate) id: String,
}

/// Pays: needs an Idempotency-Key and a positive amount.
#[utoipa::path(
    post,
    path = "/test/payments/{merchant}",
    params(("merchant" = String, Path, description = "merchant id"), IdempotencyKey),
    request_body = PaymentRequest,
    responses(
        (status = CREATED, description = "Paid.", body = PaymentReceipt),
        (status = BAD_REQUEST, description = "Malformed.", body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "Refused.", body = ErrorBody)
    )
)]
async fn pay(request: Idempotent<PaymentRequest>) -> Result<impl IntoResponse, ApiError> {
    request.body.amount.validate_positive()?;
    if request.body.card_number.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_card_number",
            "card_number is empty",
        ));
    }
    let fingerprint = request
        .fingerprint
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let receipt = PaymentReceipt {
        key: request.key.as_str().to_owned(),
        fingerprint,
    };
    Ok((StatusCode::CREATED, AppJson(receipt)))
}

/// Lists: echoes the page request as items and a next cursor.
#[utoipa::path(
    get,
    path = "/test/items",
    params(PageQuery),
    responses(
        (status = OK, description = "A page.", body = Page<Item>),
        (status = BAD_REQUEST, description = "Bad cursor or limit.", body = ErrorBody)
    )
)]
async fn list(page: PageRequest) -> AppJson<Page<Item>> {
    let after = page
        .cursor
        .map_or_else(|| "start".to_owned(), |cursor| cursor.id);
    let items = vec![
        Item {
            id: format!("after:{after}"),
        },
        Item {
            id: format!("limit:{}", page.limit),
        },
    ];
    let next = citypay_api::Cursor::new(7, "item_7").encode();
    AppJson(Page {
        items,
        next_cursor: Some(next),
    })
}

/// Echoes a JSON body back.
#[utoipa::path(
    put,
    path = "/test/echo",
    request_body = Item,
    responses(
        (status = OK, description = "The body.", body = Item),
        (status = BAD_REQUEST, description = "Not an item.", body = ErrorBody)
    )
)]
async fn echo(AppJson(item): AppJson<Item>) -> AppJson<Item> {
    AppJson(item)
}

/// Takes a number in the path and a number in the query (axum's own extractors).
#[utoipa::path(get, path = "/test/numbers/{n}", params(("n" = u32, Path, description = "a number")),
    responses((status = OK, description = "The sum."), (status = BAD_REQUEST, description = "Not numbers.", body = ErrorBody)))]
async fn numbers(axum::extract::Path(n): axum::extract::Path<u32>, axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, u32>>) -> String {
    (n + q.values().sum::<u32>()).to_string()
}

/// Runs past the deadline.
#[utoipa::path(get, path = "/test/slow", responses((status = OK, description = "Too late.")))]
async fn slow() -> &'static str {
    tokio::time::sleep(TIMEOUT * 2).await;
    "done"
}

/// Panics.
#[utoipa::path(
    delete,
    path = "/test/panic",
    responses((status = INTERNAL_SERVER_ERROR, description = "Always.", body = ErrorBody))
)]
async fn panics() -> &'static str {
    panic!("card 6222021234567890123 in a panic message");
}

/// The test routes, as a service crate would add them.
pub(crate) fn test_routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(pay))
        .routes(routes!(list))
        .routes(routes!(echo))
        .routes(routes!(numbers))
        .routes(routes!(slow))
        .routes(routes!(panics))
}

/// The app under test, with a short timeout and a small body limit.
pub(crate) fn app_with(timeout: Duration) -> Router {
    let mut config = ApiConfig::new("9.9.9-test");
    config.request_timeout = timeout;
    config.body_limit_bytes = BODY_LIMIT;
    Api::new(config)
        .expect("metrics recorder")
        .routes(test_routes())
        .into_router()
}

pub(crate) fn app() -> Router {
    app_with(TIMEOUT)
}

pub(crate) async fn send(app: Router, request: Request<Body>) -> Response<Body> {
    app.oneshot(request)
        .await
        .expect("the router is infallible")
}

pub(crate) async fn get(app: Router, uri: &str) -> Response<Body> {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// A request with the given headers and body.
pub(crate) fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Body> {
    let builder = Request::builder().method(method).uri(uri);
    let builder = headers.iter().fold(builder, |builder, (name, value)| {
        builder.header(*name, *value)
    });
    builder.body(Body::from(body.to_owned())).unwrap()
}

pub(crate) const JSON: (&str, &str) = ("content-type", "application/json");

pub(crate) async fn body_bytes(response: Response<Body>) -> Vec<u8> {
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

pub(crate) async fn body_json<T: for<'de> Deserialize<'de>>(response: Response<Body>) -> T {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        panic!(
            "not the expected JSON ({error}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Asserts an error response: status, JSON content type and the `{error:{code,message}}` shape.
pub(crate) async fn assert_error(
    response: Response<Body>,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .expect("content type");
    assert_eq!(content_type, "application/json");
    let body: ErrorBody = body_json(response).await;
    assert_eq!(body.error.code, code, "{body:?}");
    assert!(!body.error.message.is_empty());
    body
}

pub(crate) const PAYMENT: &str =
    r#"{"amount":{"amount":1250,"currency":"CNY"},"card_number":"6222021234567890123"}"#;
