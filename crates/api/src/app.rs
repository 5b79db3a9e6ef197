//! [`Api`]: the router builder that puts the public routes, the documented service routes and
//! the middleware together.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::{Extension, Router};
use citypay_api_types::{ErrorBody, Health, Money};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::json::AppJson;
use crate::metrics::{self as api_metrics, Metrics, MetricsError};
use crate::trace;

/// The settings of an [`Api`]. There is no `Default`: the binary decides.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The version `/health` and the OpenAPI document report.
    pub version: String,
    /// The largest request body an extractor buffers; bigger is 413 `body_too_large`. A route
    /// that needs more sets its own `DefaultBodyLimit`.
    pub body_limit_bytes: usize,
    /// How long a request may run before it is answered 503 `timeout`.
    pub request_timeout: Duration,
    /// On a city on several servers, this server's part (see [`WriterRole`]); `None` on a
    /// single server.
    pub role: Option<WriterRole>,
    /// Whether the server answers HTTPS: its answers then carry `Strict-Transport-Security`,
    /// so a browser that has seen HTTPS here never falls back to HTTP.
    pub https: bool,
}

/// What a server of a city on several servers is now: the writer, forwarding to the writer
/// elsewhere, or without a writer; and the writer's epoch. `/health` reports it (503 without
/// a writer, so a load balancer sends requests elsewhere), and every answer carries the epoch
/// in `Citypay-Writer-Epoch`.
#[derive(Debug, Clone, Default)]
pub struct WriterRole(Arc<std::sync::RwLock<(&'static str, Option<i64>)>>);

impl WriterRole {
    /// Records the role (`writer`, `forwarding`, `no_writer`) and the writer's epoch.
    pub fn set(&self, role: &'static str, epoch: Option<i64>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (role, epoch);
    }

    /// The role and the epoch.
    pub fn get(&self) -> (&'static str, Option<i64>) {
        *self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The response header naming the epoch of the writer this server sends commands to.
pub const WRITER_EPOCH_HEADER: &str = "citypay-writer-epoch";

impl ApiConfig {
    /// A payment API's settings: bodies up to 64 KiB, requests up to 10 seconds.
    pub fn new(version: impl Into<String>) -> Self {
        let version = version.into();
        Self {
            version,
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            role: None,
            https: false,
        }
    }
}

/// The base OpenAPI document: info and the shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "citypay",
        description = "City payments over one double-entry ledger. Errors are \
            `{\"error\": {\"code\", \"message\"}}`; amounts are integer minor units with an ISO \
            4217 currency; mutating calls take an `Idempotency-Key`; lists page with cursors."
    ),
    components(schemas(ErrorBody, Money)),
    modifiers(&SecuritySchemes, &Webhooks),
    tags((name = "operations", description = "Health, metrics and this document."))
)]
struct BaseDoc;

/// OpenAPI requires a description on every response; a route that gave none gets its
/// status's reason phrase, so generated clients accept the document.
fn describe_responses(doc: &mut OpenApiDoc) {
    use utoipa::openapi::RefOr;
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch, &mut item.trace];
        for operation in operations.into_iter().flatten() {
            for (status, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    let reason = status.parse::<u16>().ok().and_then(|code| StatusCode::from_u16(code).ok()).and_then(|code| code.canonical_reason());
                    response.description = reason.unwrap_or("Response").to_owned();
                }
            }
        }
    }
}

/// The refusals every route of a kind can answer, documented on each operation they can reach
/// (a route declares its other refusals itself): 400 for a malformed path, query, body or
/// `Idempotency-Key`; 401 without valid credentials; 404 for a path naming nothing the caller
/// may see; 409 for an `Idempotency-Key` reused with another request; 413 and 415 for a body
/// over the limit or not JSON; 422 for a field or path parameter the rules refuse; 503 when
/// the server cannot take the request or it ran past its deadline. Each is the error body.
fn document_framework_errors(doc: &mut OpenApiDoc) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch, &mut item.trace];
        for operation in operations.into_iter().flatten() {
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let idempotent = parameters.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("idempotency-key")));
            let has_body = operation.request_body.is_some();
            let in_path = parameters.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path));
            let secured = operation.security.as_ref().is_some_and(|s| s.iter().any(|r| r != &Default::default()));
            let mut add = |status: &str, description: &str| {
                operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description));
            };
            if has_body || !parameters.is_empty() {
                add("400", "The path, query string, body or Idempotency-Key is malformed");
            }
            if secured {
                add("401", "No credentials, or credentials that identify no one");
            }
            if in_path {
                add("404", "Nothing of that name that the caller may see");
            }
            if idempotent {
                add("409", "The Idempotency-Key was used with another request");
            }
            if has_body {
                add("413", "The body is over the limit");
                add("415", "The body is not JSON");
            }
            if has_body || in_path {
                add("422", "A field or path parameter that the rules refuse");
            }
            add("503", "Unavailable, or past the deadline: retry, with the same Idempotency-Key");
        }
    }
}

/// How each kind of caller authenticates; every operation names the one it takes (an empty
/// requirement where it is public).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut OpenApiDoc) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |who: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!("`Authorization: Bearer <token>`, the token of {who}")))
                    .build(),
            )
        };
        components.add_security_scheme("resident", bearer("`POST /v1/sessions` (a resident)"));
        components.add_security_scheme("operator", bearer("`POST /v1/operator-sessions` (a platform or city operator)"));
        components.add_security_scheme(
            "cashier",
            bearer("a cashier's till session (`POST /v1/till/sessions`; the till's pages send it in the `__Host-citypay_session` cookie)"),
        );
        components.add_security_scheme(
            "merchant",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Authorization: ApiKey <key id>:<secret>`, a merchant's API key (from onboarding or `POST /v1/api-keys`).",
            ))),
        );
        // The signed bytes start with the tag `citypay_ride` puts before every device signature.
        let tag = String::from_utf8_lossy(citypay_ride::DEVICE_SIGNING_TAG).replace('\n', "\\n");
        components.add_security_scheme(
            "validator",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                format!(
                    "`Authorization: Validator <id>:<unix seconds>:<signature>`: a transit validator signs each call \
                     with its registered Ed25519 device key. The signature is 128 hex digits over the bytes \
                     `{tag}<METHOD> <path>\\n<unix seconds>\\n<body>` (the path without query string, the body \
                     empty for GET), and the time must be within five minutes of the platform's clock."
                )
                .as_str(),
            ))),
        );
    }
}

/// The merchant's notifications, as OpenAPI 3.1 webhooks.
struct Webhooks;

impl utoipa::Modify for Webhooks {
    fn modify(&self, doc: &mut OpenApiDoc) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Required, ResponseBuilder, Type};
        let header = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let trade = ObjectBuilder::new()
            .property("trade_no", ObjectBuilder::new().schema_type(Type::String))
            .property("out_trade_no", ObjectBuilder::new().schema_type(Type::String))
            .property("status", ObjectBuilder::new().schema_type(Type::String).description(Some("WAIT_BUYER_PAY, TRADE_SUCCESS, TRADE_CLOSED or TRADE_FINISHED")))
            .property("amount", ObjectBuilder::new().schema_type(Type::Integer).description(Some("minor units")))
            .property("refunded", ObjectBuilder::new().schema_type(Type::Integer).description(Some("minor units refunded so far")))
            .property("currency", ObjectBuilder::new().schema_type(Type::String));
        let event = ObjectBuilder::new()
            .property("event_id", ObjectBuilder::new().schema_type(Type::String).description(Some("32 hex digits; the same in every retry")))
            .property("type", ObjectBuilder::new().schema_type(Type::String).description(Some("trade.status_changed")))
            .property("trade", trade)
            .property("created_at", ObjectBuilder::new().schema_type(Type::Integer).description(Some("Unix seconds")))
            .required("event_id")
            .required("type")
            .required("trade");
        let operation = OperationBuilder::new()
            .summary(Some("A trade changed (paid, closed, refunded, finished)"))
            .description(Some(
                "POSTed to the merchant's `notify_url` (HTTP or HTTPS) after the change commits. Verify \
                 `Citypay-Signature: t=<unix seconds>,v1=<hex>`: `v1` is HMAC-SHA256 under the merchant's \
                 webhook secret over `<t>.<body>` (the body's exact bytes); refuse an old `t`. Answer any \
                 2xx once the event is stored: anything else, or no answer within 10 s, is retried after \
                 2 min, 10 min, 10 min, 1 h, 2 h, 6 h and 15 h (Alipay's schedule), then given up. \
                 Retries carry the same `Citypay-Event-Id`: deduplicate by it.",
            ))
            .parameter(header("Citypay-Signature", "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">"))
            .parameter(header("Citypay-Event-Id", "The event's id; retries repeat it"))
            .request_body(Some(RequestBodyBuilder::new().content("application/json", ContentBuilder::new().schema(Some(event)).build()).required(Some(Required::True)).build()))
            .response("200", ResponseBuilder::new().description("Any 2xx: delivered, not sent again").build())
            .build();
        doc.webhooks = Some(PathsBuilder::new().path("trade.status_changed", PathItem::new(HttpMethod::Post, operation)).build());
    }
}

/// Builds citypay's router.
///
/// It starts with the public routes (`/health`, `/metrics`, `/openapi.json`); service crates
/// add theirs with [`Api::routes`], each an [`OpenApiRouter`] whose handlers carry
/// `#[utoipa::path]`, so every documented operation is a real route and the other way round.
/// A service router brings its own state (`with_state`) and its own authentication layer
/// (`layer`), which then guards only its routes.
///
/// [`Api::into_router`] adds, around every route: a request id (`x-request-id`), a tracing
/// span that records method, route template, status, latency and request id and nothing
/// else, Prometheus metrics, a JSON 500 for panics, the body-size limit, the request timeout,
/// `Cache-Control: no-store`, and JSON answers for unknown paths (404) and methods (405).
pub struct Api {
    config: ApiConfig,
    routes: OpenApiRouter,
    pages: Router,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&String> = self.routes.get_openapi().paths.paths.keys().collect();
        f.debug_struct("Api")
            .field("config", &self.config)
            .field("paths", &paths)
            .finish()
    }
}

impl Api {
    /// An API with only the public routes. Installs the metrics recorder on first use.
    pub fn new(config: ApiConfig) -> Result<Self, MetricsError> {
        let metrics = Metrics::install()?;
        let mut doc = BaseDoc::openapi();
        doc.info.version.clone_from(&config.version);
        let health = HealthState(Arc::new(Health {
            status: "ok".into(),
            version: config.version.clone(),
            role: None,
            writer_epoch: None,
        }), config.role.clone());
        let routes = OpenApiRouter::with_openapi(doc)
            .merge(
                OpenApiRouter::new()
                    .routes(routes!(health_check))
                    .with_state(health),
            )
            .merge(
                OpenApiRouter::new()
                    .routes(routes!(api_metrics::scrape))
                    .with_state(metrics),
            )
            .merge(OpenApiRouter::new().routes(routes!(openapi_json)));
        Ok(Self { config, routes, pages: Router::new() })
    }

    /// Adds documented routes. Overlapping paths and methods panic, as in axum.
    #[must_use]
    pub fn routes(mut self, routes: OpenApiRouter) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Adds pages that are not part of the JSON API (HTML), behind the same middleware.
    #[must_use]
    pub fn pages(mut self, pages: Router) -> Self {
        self.pages = self.pages.merge(pages);
        self
    }

    /// The OpenAPI 3.1 document of every route added so far.
    pub fn openapi(&self) -> OpenApiDoc {
        let mut doc = self.routes.get_openapi().clone();
        document_framework_errors(&mut doc);
        describe_responses(&mut doc);
        doc
    }

    /// The finished router, ready for [`serve`](crate::serve).
    pub fn into_router(self) -> Router {
        let (router, mut doc) = self.routes.split_for_parts();
        document_framework_errors(&mut doc);
        describe_responses(&mut doc);
        let spec = serde_json::to_vec(&doc).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot serialize the OpenAPI document");
            b"{}".to_vec()
        });
        let spec = OpenApiJson(Bytes::from(spec));
        let router = router
            .merge(self.pages)
            .fallback(unknown_path)
            .method_not_allowed_fallback(unknown_method)
            .layer(Extension(spec));
        with_middleware(router, &self.config)
    }
}

/// The Content Security Policy of every HTML page: nothing loaded from elsewhere, no scripts
/// (the pages have none; a JSON data block is not a script), their own inline styles, forms
/// posted back to this server, and never framed (clickjacking).
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn page_security_policy<B>(mut response: Response<B>) -> Response<B> {
    let html = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    if html {
        response.headers_mut().entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(PAGE_POLICY));
    }
    response
}

/// Wraps every route, fallbacks included. The first layer listed sees the request first.
fn with_middleware(router: Router, config: &ApiConfig) -> Router {
    let no_store = HeaderValue::from_static("no-store");
    let nosniff = HeaderValue::from_static("nosniff");
    let sensitive = [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
    ];
    let trace = TraceLayer::new_for_http()
        .make_span_with(trace::request_span)
        .on_request(())
        .on_response(trace::record_response)
        .on_failure(());
    let stack = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
        .layer(middleware::map_request(trace::keep_only_uuid_request_ids))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(trace)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(middleware::from_fn(api_metrics::track))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            no_store,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            nosniff,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(middleware::map_response(page_security_policy))
        // Inside the header layers, so a panic's answer carries them too.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            enforce_timeout,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(middleware::map_response(rejections_as_json));
    let mut router = router.layer(stack);
    if config.https {
        router = router.layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000")));
    }
    match config.role.clone() {
        // Outermost: the epoch of the writer that answered the request's commands, else of
        // the writer this server sends to now.
        Some(role) => router.layer(middleware::from_fn(move |request: axum::extract::Request, next: middleware::Next| {
            let role = role.clone();
            async move {
                let (mut response, answered) = citypay_shard::watch_epoch(next.run(request)).await;
                if let Some(epoch) = answered.or(role.get().1) {
                    response.headers_mut().insert(WRITER_EPOCH_HEADER, HeaderValue::from(epoch));
                }
                response
            }
        })),
        None => router,
    }
}

/// The framework's own rejections (a path parameter or query string that does not parse)
/// answer in plain text; clients get the one JSON error shape instead. Their text is dropped:
/// it can quote what was sent.
async fn rejections_as_json(response: axum::response::Response) -> axum::response::Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !response.status().is_client_error() {
        return response;
    }
    let (code, message) = match response.status() {
        StatusCode::BAD_REQUEST => ("invalid_request", "the path or the query string is malformed"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "the body is not of the content type this route takes"),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the body is over the limit"),
        _ => ("invalid_request", "the request is malformed"),
    };
    ApiError::new(response.status(), code, message).into_response()
}

/// Answers 503 `timeout` when the handler runs past the deadline (and drops it).
async fn enforce_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => ApiError::timeout().into_response(),
    }
}

/// The panic payload can hold anything the handler had, so it is neither logged nor sent.
fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    ApiError::internal(&"a handler panicked").into_response()
}

async fn unknown_path() -> ApiError {
    ApiError::not_found("no route for this path")
}

async fn unknown_method() -> ApiError {
    ApiError::method_not_allowed()
}

#[derive(Debug, Clone)]
struct HealthState(Arc<Health>, Option<WriterRole>);

/// The serialized OpenAPI document, made once when the router is built.
#[derive(Debug, Clone)]
struct OpenApiJson(Bytes);

/// Liveness: answers while the process serves requests. Public.
#[utoipa::path(
    get,
    path = "/health",
    security(()),
    tag = "operations",
    responses(
        (status = OK, description = "The process serves requests.", body = Health),
        (status = SERVICE_UNAVAILABLE, description = "A server of a city on several servers that knows no writer now.", body = Health),
    )
)]
async fn health_check(State(HealthState(health, role)): State<HealthState>) -> (StatusCode, AppJson<Health>) {
    let mut health = Health::clone(&health);
    let Some(role) = role else { return (StatusCode::OK, AppJson(health)) };
    let (now, epoch) = role.get();
    (health.role, health.writer_epoch) = (Some(now.to_owned()), epoch);
    if now == "no_writer" {
        health.status = "no_writer".into();
        return (StatusCode::SERVICE_UNAVAILABLE, AppJson(health));
    }
    (StatusCode::OK, AppJson(health))
}

/// This OpenAPI document. Public.
#[utoipa::path(
    get,
    path = "/openapi.json",
    security(()),
    tag = "operations",
    responses((status = OK, description = "The OpenAPI 3.1 document of every route.", body = Object))
)]
async fn openapi_json(
    Extension(OpenApiJson(spec)): Extension<OpenApiJson>,
) -> axum::response::Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], spec).into_response()
}
