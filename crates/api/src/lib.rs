//! citypay's HTTP framework.
//!
//! The pieces every route shares, before any business route exists:
//!
//! - [`ApiError`]: status + stable snake_case code + message, rendered as
//!   `{ "error": { "code", "message" } }`.
//! - Extractors whose rejections are [`ApiError`]s: [`AppJson`] (JSON bodies),
//!   [`IdempotencyKey`] and [`Idempotent`] (mutating requests, with
//!   [`request_fingerprint`]), [`PageRequest`] (cursor and limit, with [`Cursor`]).
//! - [`Api`]: the router builder. It serves `/health`, `/metrics` and `/openapi.json`, merges
//!   the services' documented routers, and wraps everything in request ids, a tracing span that
//!   logs no headers, queries or bodies, Prometheus metrics, a body limit and a timeout.
//! - [`serve`]: a socket, until Ctrl-C or SIGTERM, with graceful shutdown.

mod app;
mod error;
mod idempotency;
mod json;
mod metrics;
mod pagination;
pub mod routes;
pub mod shards;
mod serve;
mod trace;

pub use app::{Api, ApiConfig, WRITER_EPOCH_HEADER, WriterRole};
pub use error::ApiError;
pub use idempotency::{
    IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX_LEN, IdempotencyKey, Idempotent,
    request_fingerprint,
};
pub use json::AppJson;
pub use metrics::{Metrics, MetricsError, REQUEST_DURATION_SECONDS, REQUESTS_TOTAL};
pub use pagination::{
    CURSOR_ID_MAX_LEN, Cursor, DEFAULT_LIMIT, MAX_LIMIT, PageQuery, PageRequest, parse_limit,
};
pub use serve::{TlsFiles, serve, serve_tls_until, serve_until, shutdown_signal};
pub use trace::REQUEST_ID_HEADER;
/// Re-exported so service crates build routers with the same versions.
pub use utoipa_axum::router::OpenApiRouter;
