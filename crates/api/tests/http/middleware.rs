//! What every route gets: JSON 404/405, timeout, panics, request ids, response headers.

use axum::http::StatusCode;
use citypay_api_types::Health;

use crate::support::{app, app_with, assert_error, body_json, get, request, send};

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let response = get(app(), "/no/such/path").await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = send(app(), request("POST", "/health", &[], "")).await;
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn malformed_paths_and_queries_are_json_errors_that_quote_nothing() {
    let response = get(app(), "/test/numbers/12").await;
    assert_eq!(response.status(), StatusCode::OK);
    for path in ["/test/numbers/6222021234567890123", "/test/numbers/1?x=6222021234567890123"] {
        let response = get(app(), path).await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(!format!("{body:?}").contains("6222021234567890123"), "{body:?}");
    }
}

#[tokio::test]
async fn health_answers_ok_with_the_version() {
    let response = get(app(), "/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    let health: Health = body_json(response).await;
    assert_eq!(
        health,
        Health {
            status: "ok".into(),
            version: "9.9.9-test".into(),
            role: None,
            writer_epoch: None,
        }
    );
    assert!(!response_has_epoch(app()).await, "a single server names no writer epoch");
}

async fn response_has_epoch(app: axum::Router) -> bool {
    get(app, "/health").await.headers().contains_key(citypay_api::WRITER_EPOCH_HEADER)
}

/// A server of a city on several servers: `/health` tells a load balancer its part, and is 503
/// while it knows no writer; every answer names the writer's epoch.
#[tokio::test]
async fn a_cluster_servers_health_says_its_part_and_its_writers_epoch() {
    let role = citypay_api::WriterRole::default();
    let mut config = citypay_api::ApiConfig::new("9.9.9-test");
    config.role = Some(role.clone());
    let app = citypay_api::Api::new(config).expect("metrics recorder").into_router();
    role.set("forwarding", Some(7));
    let response = get(app.clone(), "/health").await;
    assert_eq!((response.status(), response.headers()[citypay_api::WRITER_EPOCH_HEADER].to_str().unwrap()), (StatusCode::OK, "7"));
    let health: Health = body_json(response).await;
    assert_eq!((health.status.as_str(), health.role.as_deref(), health.writer_epoch), ("ok", Some("forwarding"), Some(7)));
    role.set("no_writer", Some(7));
    let response = get(app, "/health").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Health = body_json(response).await;
    assert_eq!((health.status.as_str(), health.role.as_deref()), ("no_writer", Some("no_writer")));
}

#[tokio::test]
async fn slow_requests_time_out_as_503_json() {
    let response = get(app(), "/test/slow").await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
}

#[tokio::test]
async fn panics_become_500_json() {
    let response = send(app(), request("DELETE", "/test/panic", &[], "")).await;
    let body = assert_error(response, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    assert!(!body.error.message.contains("6222"));
}

#[tokio::test]
async fn a_request_id_is_made_or_a_uuid_one_propagated() {
    let response = get(app(), "/health").await;
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 36, "{made}");

    let uuid = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let response = send(
        app(),
        request("GET", "/health", &[("x-request-id", uuid)], ""),
    )
    .await;
    assert_eq!(response.headers()["x-request-id"], uuid);

    let personal = "11010519491231002X";
    let response = send(
        app(),
        request("GET", "/health", &[("x-request-id", personal)], ""),
    )
    .await;
    let replaced = response.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(replaced, personal);
    assert_eq!(replaced.len(), 36);
}

#[tokio::test]
async fn responses_are_not_cached_sniffed_or_referred() {
    let response = get(app(), "/no/such/path").await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    assert!(response.headers().get("content-security-policy").is_none(), "JSON needs no page policy");
}

/// Errors too: a panic's 500 (made outside the handler), a timeout, a refused method, a
/// path that does not parse.
#[tokio::test]
async fn every_error_is_not_cached_sniffed_or_referred() {
    for (method, path) in [("DELETE", "/test/panic"), ("GET", "/test/slow"), ("PATCH", "/health"), ("GET", "/test/numbers/x")] {
        let response = send(app_with(std::time::Duration::from_millis(50)), request(method, path, &[], "")).await;
        assert!(response.status().is_client_error() || response.status().is_server_error(), "{method} {path}: {}", response.status());
        assert_eq!(response.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{method} {path}");
        assert_eq!(response.headers().get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{method} {path}");
        assert_eq!(response.headers().get("referrer-policy").map(|v| v.to_str().unwrap()), Some("no-referrer"), "{method} {path}");
    }
}

#[tokio::test]
async fn pages_load_nothing_from_elsewhere_and_are_never_framed() {
    let page = axum::Router::new().route("/page", axum::routing::get(|| async { axum::response::Html("<p>hi</p>") }));
    let app = citypay_api::Api::new(citypay_api::ApiConfig::new("test")).expect("metrics recorder").pages(page).into_router();
    let response = get(app, "/page").await;
    let policy = response.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"), "{policy}");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
}
