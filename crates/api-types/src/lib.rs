//! Wire types of citypay's HTTP API.
//!
//! These are the shapes that travel as JSON between clients and the server, with their OpenAPI
//! schemas: the error body every failure uses, money as integer minor units, cursor pages and
//! the health answer. The crate depends on no workspace crate, so clients (the simulator, tests,
//! a future SDK) can use it without pulling in the server.

mod money;

pub use money::{Money, MoneyError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response: `{ "error": { "code": "...", "message": "..." } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error body with a machine-readable `code` and a human `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        let error = ErrorDetail {
            code: code.into(),
            message: message.into(),
        };
        Self { error }
    }
}

/// The inside of an error body: what clients branch on, and what people read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable, snake_case (`insufficient_funds`, `invalid_json`). Clients
    /// branch on this, never on the message.
    #[schema(example = "insufficient_funds")]
    pub code: String,
    /// Human-readable explanation. It may change between versions and never carries secrets
    /// or personal data.
    #[schema(example = "the wallet balance is lower than the amount")]
    pub message: String,
}

/// One page of a list, in the order the endpoint documents.
///
/// Pass `next_cursor` back as the `cursor` query parameter to get the next page; it is `null`
/// on the last page. Cursors are opaque: do not build or edit them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page, at most the requested `limit`.
    pub items: Vec<T>,
    /// The cursor of the next page; `null` when this is the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` while the process serves requests; `no_writer` (with status 503) while a server of
    /// a city on several servers knows no writer to send commands to.
    #[schema(example = "ok")]
    pub status: String,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// On a city on several servers: `writer` (this server writes), `forwarding` (it sends
    /// commands to the writer on another server) or `no_writer` (a takeover is under way).
    /// Absent on a single server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The fencing epoch of the writer this server's commands go to, when it knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_epoch: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ErrorBody::new("insufficient_funds", "too little");
        let json = serde_json::to_value(&body).unwrap();
        let expected = serde_json::json!({
            "error": { "code": "insufficient_funds", "message": "too little" }
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn last_page_has_a_null_cursor() {
        let page = Page {
            items: vec![1, 2],
            next_cursor: None,
        };
        let json = serde_json::to_value(&page).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "items": [1, 2], "next_cursor": null })
        );
    }
}
