//! [`AppJson`]: JSON in and out, with rejections in the API's error format.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body or response body.
///
/// As an extractor it needs `Content-Type: application/json` (or `application/*+json`) and a
/// body within the router's size limit that parses as `T`. Every rejection is an [`ApiError`]:
///
/// | problem | status | code |
/// | --- | --- | --- |
/// | no or another content type | 415 | `unsupported_media_type` |
/// | body over the size limit | 413 | `body_too_large` |
/// | body that cannot be read | 400 | `unreadable_body` |
/// | not JSON (syntax, truncated, trailing data) | 400 | `invalid_json` |
/// | JSON of the wrong shape (types, missing fields) | 400 | `invalid_body` |
///
/// Messages name the failing field and position, never the value that was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_body_bytes(request, state).await?;
        parse_json(&bytes).map(AppJson)
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => json_response(body),
            Err(error) => ApiError::internal(&error).into_response(),
        }
    }
}

fn json_response(body: Vec<u8>) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Checks the content type and buffers the body within the router's limit.
pub(crate) async fn json_body_bytes<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<Bytes, ApiError> {
    if !has_json_content_type(request.headers()) {
        let message = "the body must be JSON, sent with Content-Type: application/json";
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        ));
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let message = "the body is larger than this endpoint accepts";
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else {
        return false;
    };
    subtype == "json" || subtype.ends_with("+json")
}

/// Parses a whole body as `T`, mapping failures to `invalid_json` or `invalid_body`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer.end().map_err(|error| invalid_json(&error))?;
    Ok(value)
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = error.inner();
    if !inner.is_data() {
        return invalid_json(inner);
    }
    // serde's data errors quote the offending value ("invalid type: string \"6222...\""), so the
    // message names the field and the position only. Missing and unknown fields quote field
    // names, which come from the schema or the client's own keys, never from values.
    let path = error.path().to_string();
    let detail = inner.to_string();
    let message = if detail.starts_with("missing field") || detail.starts_with("unknown field") {
        detail
    } else {
        format!(
            "field `{path}` has the wrong type or an invalid value (line {}, column {})",
            inner.line(),
            inner.column()
        )
    };
    ApiError::bad_request("invalid_body", message)
}

fn invalid_json(error: &serde_json::Error) -> ApiError {
    let message = format!(
        "the body is not valid JSON (line {}, column {})",
        error.line(),
        error.column()
    );
    ApiError::bad_request("invalid_json", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Payment {
        amount: i64,
        card: String,
    }

    #[test]
    fn json_content_types_are_recognised() {
        for (value, expected) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/json", false),
            ("application/jsonx", false),
            ("text/plain", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(has_json_content_type(&headers), expected, "{value}");
        }
        assert!(!has_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn wrong_types_name_the_field_not_the_value() {
        let body = br#"{"amount":"6222021234567890123","card":"x"}"#;
        let error = parse_json::<Payment>(body).unwrap_err();
        assert_eq!(error.code(), "invalid_body");
        assert!(error.message().contains("`amount`"), "{}", error.message());
        assert!(!error.message().contains("6222"), "{}", error.message());
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let error = parse_json::<Payment>(br#"{"amount":1}"#).unwrap_err();
        assert!(
            error.message().contains("missing field `card`"),
            "{}",
            error.message()
        );
        let error = parse_json::<Payment>(br#"{"amount":1,"card":"x","pin":"1"}"#).unwrap_err();
        assert!(
            error.message().contains("unknown field `pin`"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn syntax_errors_and_trailing_data_are_invalid_json() {
        for body in [
            &b"{"[..],
            b"{\"amount\":1,}",
            b"{\"amount\":1,\"card\":\"x\"} []",
            b"",
        ] {
            let error = parse_json::<Payment>(body).unwrap_err();
            assert_eq!(error.code(), "invalid_json");
        }
    }
}
