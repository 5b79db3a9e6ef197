//! The OpenAPI document matches the routes, and /metrics counts requests.

use axum::http::StatusCode;
use citypay_api_types::ErrorBody;
use serde_json::Value;

use crate::support::{app, body_bytes, body_json, get, request, send};

async fn spec() -> Value {
    let response = get(app(), "/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    body_json(response).await
}

/// Every (path, method) of the document, with `{params}` filled in.
fn operations(spec: &Value) -> Vec<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        let concrete = fill_params(path);
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                operations.push((method.to_uppercase(), concrete.clone()));
            }
        }
    }
    operations
}

fn fill_params(template: &str) -> String {
    let segments = template.split('/').map(|segment| {
        if segment.starts_with('{') && segment.ends_with('}') {
            "x"
        } else {
            segment
        }
    });
    segments.collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_the_public_routes() {
    let spec = spec().await;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    assert_eq!(spec["info"]["version"], "9.9.9-test");
    for path in ["/health", "/metrics", "/openapi.json"] {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} is not documented"
        );
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert!(spec["components"]["schemas"]["Money"].is_object());
    let page_required = &spec["components"]["schemas"]["Page_Item"]["required"];
    assert!(
        page_required
            .as_array()
            .unwrap()
            .contains(&"next_cursor".into()),
        "{page_required}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let spec = spec().await;
    let operations = operations(&spec);
    assert!(operations.len() >= 8, "{operations:?}");
    let unrouted_404: ErrorBody = body_json(get(app(), "/surely/not/routed").await).await;
    for (method, path) in operations {
        let response = send(app(), request(&method, &path, &[], "")).await;
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            let body: ErrorBody = body_json(response).await;
            assert_ne!(
                body, unrouted_404,
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    for _ in 0..3 {
        get(app(), "/health").await;
    }
    send(app(), request("PUT", "/test/echo", &[], "")).await;
    get(app(), "/no/such/11010519491231002X").await;
    let response = get(app(), "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = String::from_utf8(body_bytes(response).await).unwrap();

    assert!(
        text.contains("# TYPE http_requests_total counter"),
        "{text}"
    );
    let health = counter_value(
        &text,
        &[r#"route="/health""#, r#"method="GET""#, r#"status="2xx""#],
    );
    assert!(health >= 3, "{text}");
    let echo = counter_value(
        &text,
        &[
            r#"route="/test/echo""#,
            r#"method="PUT""#,
            r#"status="4xx""#,
        ],
    );
    assert!(echo >= 1, "{text}");
    assert!(counter_value(&text, &[r#"route="unmatched""#, r#"status="4xx""#]) >= 1);
    assert!(
        !text.contains("11010519491231002X"),
        "raw paths must not become labels"
    );
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
}

/// The value of the `http_requests_total` sample whose labels contain all of `labels`.
fn counter_value(text: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
