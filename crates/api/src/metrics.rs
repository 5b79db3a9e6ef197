//! Prometheus metrics: one process-wide recorder, per-request counters and latencies, and the
//! `/metrics` route.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter of finished requests, labelled `route`, `method` and `status` (`2xx`...).
pub const REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram of request latency in seconds, with the same labels.
pub const REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The route label of requests that matched no route; never the raw path, which can carry
/// ids and would make one series per path.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// Why the metrics recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// The process's Prometheus recorder.
///
/// [`Metrics::install`] installs it as the global `metrics` recorder the first time and hands
/// out the same handle afterwards, so several routers (tests, an admin listener) share one
/// registry. A background thread drains histograms every 5 seconds.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the recorder once per process and returns its handle.
    pub fn install() -> Result<Self, MetricsError> {
        static RECORDER: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();
        let handle = RECORDER.get_or_init(install_recorder).clone()?;
        Ok(Self { handle })
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn install_recorder() -> Result<PrometheusHandle, MetricsError> {
    let matcher = Matcher::Full(REQUEST_DURATION_SECONDS.to_owned());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(matcher, &LATENCY_BUCKETS_S)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|error| MetricsError(error.to_string()))?;
    metrics::describe_counter!(REQUESTS_TOTAL, "Finished HTTP requests.");
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from request received to response head sent."
    );
    spawn_upkeep(handle.clone());
    Ok(handle)
}

fn spawn_upkeep(handle: PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    };
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(upkeep);
    if let Err(error) = spawned {
        tracing::warn!(%error, "no metrics upkeep thread; histograms drain on each scrape");
    }
}

/// Middleware: counts each request and records its latency, by route template, method and
/// status class.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = route_template(&request);
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = status_class(response.status());
    let elapsed_s = started.elapsed().as_secs_f64();
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status.to_owned()),
    ];
    metrics::counter!(REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, &labels).record(elapsed_s);
    response
}

/// The route's template (`/payments/{id}`), or [`UNMATCHED_ROUTE`].
pub(crate) fn route_template(request: &Request) -> String {
    let matched = request.extensions().get::<MatchedPath>();
    matched
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned()
}

/// The method, or `OTHER` for extension methods, so clients cannot mint label values.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Prometheus scrape endpoint. Public; keep it off the internet at the load balancer.
#[utoipa::path(
    get,
    path = "/metrics",
    security(()),
    tag = "operations",
    responses((
        status = OK,
        description = "Metrics in the Prometheus text exposition format 0.0.4.",
        content_type = "text/plain; version=0.0.4",
        body = String
    ))
)]
pub(crate) async fn scrape(State(metrics): State<Metrics>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_status() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::PERMANENT_REDIRECT), "3xx");
        assert_eq!(status_class(StatusCode::CONFLICT), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }

    #[test]
    fn extension_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let odd = Method::from_bytes(b"6222021234567890").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }
}
