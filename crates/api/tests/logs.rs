//! Logs carry method, route, status, latency and request id, and never secrets.
//!
//! Its own test binary: `tracing` caches per-callsite interest process-wide, so a thread-local
//! subscriber can miss events while other tests run in parallel threads.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use citypay_api::{Api, ApiConfig, ApiError, Idempotent, OpenApiRouter};
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;
use utoipa_axum::routes;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct Payment {
    #[allow(dead_code)]
    amount: i64,
    card_number: String,
}

/// Fails the way a careless service might: with the card number in the cause.
#[utoipa::path(post, path = "/pay/{merchant}", request_body = Payment, responses((status = 500)))]
async fn pay(request: Idempotent<Payment>) -> Result<(), ApiError> {
    Err(ApiError::internal(&format!(
        "card ending {}",
        &request.body.card_number[15..]
    )))
}

fn app() -> Router {
    let routes = OpenApiRouter::new().routes(routes!(pay));
    Api::new(ApiConfig::new("1.0.0"))
        .unwrap()
        .routes(routes)
        .into_router()
}

fn request(body: &str) -> Request<Body> {
    Request::post("/pay/m1?id=11010519491231002X")
        .header("content-type", "application/json")
        .header("authorization", "Bearer secret-token")
        .header("idempotency-key", "order-secret-key")
        .header("x-request-id", "6222021234567890123")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

const SECRETS: [&str; 4] = [
    "secret-token",
    "11010519491231002X",
    "6222021234567890123",
    "order-secret-key",
];

#[tokio::test]
async fn logs_hold_no_headers_queries_or_bodies() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let good = r#"{"amount":1250,"card_number":"6222021234567890123"}"#;
    let response = app().oneshot(request(good)).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let wrong_type = r#"{"amount":"6222021234567890123","card_number":"6222021234567890123"}"#;
    let response = app().oneshot(request(wrong_type)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let expected = [
        "request finished",
        "request failed",
        "internal error cause=card ending 0123",
        "route=/pay/{merchant}",
        "method=POST",
        "status=500",
        "status=400",
        "request_id=",
        "latency_ms=",
    ];
    for expected in expected {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    for secret in SECRETS {
        assert!(
            !logs.contains(secret),
            "{secret:?} leaked into the logs:\n{logs}"
        );
    }
    assert!(!logs.contains("/pay/m1"), "raw path in the logs:\n{logs}");
}
