//! Request ids and one tracing span per request, without headers, query strings or bodies.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, Response};
use tracing::Span;
use tracing::field::Empty;

use crate::metrics::{method_label, route_template};

/// The header that carries the request id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Middleware: drops an incoming `x-request-id` unless it is a UUID in its hyphenated form.
///
/// A proxy in front may pass its id on, but a client could put anything in the header (an ID
/// number, a card number, a log line), and the id is logged; so only an id that cannot carry
/// such data is kept, and the request-id layer makes a fresh UUID for the rest.
pub(crate) async fn keep_only_uuid_request_ids(mut request: Request) -> Request {
    let is_uuid = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .is_some_and(|v| is_uuid(v.as_bytes()));
    if !is_uuid {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// The request's span: method, route template and request id, with `status` and
/// `latency_ms` filled in when the response is ready. Nothing else about the request is
/// recorded: headers, the path's ids, the query and the body can all carry personal data.
pub(crate) fn request_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok());
    tracing::info_span!(
        "request",
        method = %method_label(request.method()),
        route = %route_template(request),
        request_id = %request_id.unwrap_or("-"),
        status = Empty,
        latency_ms = Empty,
    )
}

/// Records the outcome on the span and logs one line per request.
pub(crate) fn record_response(response: &Response<Body>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    if response.status().is_server_error() {
        tracing::warn!(status, latency_ms, "request failed");
    } else {
        tracing::info!(status, latency_ms, "request finished");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_uuids_are_request_ids() {
        assert!(is_uuid(b"67e55044-10b1-426f-9247-bb680e5fe0c8"));
        assert!(is_uuid(b"67E55044-10B1-426F-9247-BB680E5FE0C8"));
        for bad in [
            &b""[..],
            b"11010519491231002X",
            b"67e5504410b1426f9247bb680e5fe0c8",
            b"67e55044-10b1-426f-9247-bb680e5fe0cz",
        ] {
            assert!(!is_uuid(bad));
        }
    }
}
