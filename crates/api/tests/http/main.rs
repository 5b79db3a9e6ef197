//! The framework through its router: errors, extractors, OpenAPI, metrics, logs and a socket.

mod errors;
mod extractors;
mod middleware;
mod observability;
mod socket;
mod support;
