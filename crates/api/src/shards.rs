//! A server of a country of shards answers any caller: each request goes to the services of
//! the caller's shard, which reach that shard's writer and database (`citypay-country`). The
//! caller's shard is found without trusting anything unchecked: a resident's or a cashier's
//! token names an id whose bucket the map places; an operator's token is the shard's that
//! authenticates it; a merchant's API key, an Alipay SDK's call to `/gateway.do` (by its app)
//! and a resident's sign-in (by the mobile number) go to the shard the map places the merchant
//! or resident a shard finds for them; a registration goes to the shard its city was
//! onboarded on. Anything else is this server's own shard's. The chosen shard's router then
//! authenticates the request as ever. A write of a caller whose city is moving between shards
//! waits (`503 city_moving`; through `/gateway.do`, Alipay's `ACQ.SYSTEM_ERROR`, while its
//! queries are answered).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use citypay_directory::Principal;
use citypay_routing::{BucketMap, ShardId, bucket_of_owner};
use tower::ServiceExt;

use crate::ApiError;
use crate::routes::AppState;
use crate::routes::SESSION_COOKIE;

/// The largest body read to find its shard (a registration, a sign-in).
const ROUTING_BODY_MAX: usize = 64 * 1024;

/// One shard's services and its full router.
#[derive(Debug)]
pub struct ShardRoute {
    /// The shard.
    pub shard: ShardId,
    /// Its services (their directory finds callers).
    pub state: AppState,
    /// Its router, with every route, page and layer.
    pub router: Router,
}

/// Where a request goes: the index of its shard's route, and whether the owner it names (if
/// any) is in a city being moved.
struct Found {
    index: usize,
    moving: bool,
}

impl Found {
    /// This server's own shard, for a request that names none.
    const HERE: Found = Found { index: 0, moving: false };
}

struct Shards {
    routes: Vec<ShardRoute>,
    map: Arc<dyn Fn() -> Arc<BucketMap> + Send + Sync>,
}

/// A router sending each request to its caller's shard's router; `routes[0]` is this server's
/// own shard's, and takes what names no shard.
pub fn by_caller(routes: Vec<ShardRoute>, map: Arc<dyn Fn() -> Arc<BucketMap> + Send + Sync>) -> Router {
    let shards = Arc::new(Shards { routes, map });
    Router::new().fallback(move |request: Request| {
        let shards = shards.clone();
        async move { shards.dispatch(request).await }
    })
}

fn header_credentials<'a>(request: &'a Request, scheme: &str) -> Option<&'a str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

impl Shards {
    fn index_of(&self, shard: ShardId) -> usize {
        self.routes.iter().position(|r| r.shard == shard).unwrap_or(0)
    }

    async fn dispatch(&self, request: Request) -> Response {
        let (Found { index, moving }, request) = match self.find(request).await {
            Ok(found) => found,
            Err(error) => return error.into_response(),
        };
        // The caller's city is being moved to another shard: its writes wait for the move
        // (seconds); its reads are answered, from rows that cannot change meanwhile. An
        // Alipay SDK's calls are all POSTs: the gateway tells its queries from its writes, and
        // refuses a write in Alipay's form.
        let mut request = request;
        let gateway = request.uri().path() == "/gateway.do";
        if gateway && moving {
            request.extensions_mut().insert(crate::routes::CityMoving);
        }
        let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
        if writes && moving && !gateway {
            let mut response = ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "city_moving",
                "your city is moving to another shard; nothing was done: retry in a few seconds with the same idempotency key",
            )
            .into_response();
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            return response;
        }
        match self.routes[index].router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The shard of an owner (a resident's, a merchant's id), by one reading of the map.
    fn of_owner(&self, owner: u64) -> Found {
        let (map, bucket) = ((self.map)(), bucket_of_owner(owner));
        Found { index: self.index_of(map.shard_of(bucket)), moving: map.moving_to(bucket).is_some() }
    }

    /// The request's shard, and the request (its body read back in when it was read to route
    /// it).
    async fn find(&self, request: Request) -> Result<(Found, Request), ApiError> {
        let token = header_credentials(&request, "Bearer")
            .or_else(|| crate::routes::cookie(request.headers(), SESSION_COOKIE))
            .or_else(|| crate::routes::cookie(request.headers(), "citypay_dashboard"))
            .map(str::to_owned);
        if let Some(token) = token {
            return Ok((self.by_token(&token).await, request));
        }
        if let Some(key) = header_credentials(&request, "ApiKey").map(str::to_owned) {
            return Ok((self.by_api_key(&key).await, request));
        }
        let path = request.uri().path();
        if path == "/gateway.do" {
            return self.by_gateway_app(request).await;
        }
        let by_body = request.method() == Method::POST && matches!(path, "/v1/residents" | "/v1/sessions" | "/v1/cookie-sessions");
        if !by_body {
            return Ok((Found::HERE, request));
        }
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, ROUTING_BODY_MAX)
            .await
            .map_err(|_| ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the body is too large"))?;
        let fields: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let found = if parts.uri.path() == "/v1/residents" {
            match fields["city"].as_u64().and_then(|c| u32::try_from(c).ok()) {
                Some(city) => Found { index: self.by_city(city).await, moving: false },
                None => Found::HERE,
            }
        } else {
            match fields["mobile"].as_str() {
                Some(mobile) => self.by_mobile(mobile).await,
                None => Found::HERE,
            }
        };
        Ok((found, Request::from_parts(parts, Body::from(bytes))))
    }

    async fn by_token(&self, token: &str) -> Found {
        let here = &self.routes[0].state.directory;
        let owner = match here.token_principal(token) {
            Some(Principal::Resident { id, .. }) => Some(id),
            Some(Principal::Cashier { merchant, .. }) => Some(merchant),
            Some(Principal::Operator { .. }) => None,
            None => return Found::HERE,
        };
        if let Some(owner) = owner {
            return self.of_owner(owner);
        }
        for (i, route) in self.routes.iter().enumerate() {
            if matches!(route.state.directory.authenticate_token(token).await, Ok(Some(_))) {
                return Found { index: i, moving: false };
            }
        }
        Found::HERE
    }

    /// An Alipay SDK's call: the shard that holds its app (`app_id`, in the query or the form).
    async fn by_gateway_app(&self, request: Request) -> Result<(Found, Request), ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, ROUTING_BODY_MAX)
            .await
            .map_err(|_| ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the body is too large"))?;
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        let app = citypay_gateway::Request::parse(query, &bytes).get("app_id").and_then(|id| id.parse::<u64>().ok());
        let mut found = Found::HERE;
        if let Some(app) = app {
            // The shard its id's bucket names first (an id drawn since ids carry buckets is
            // there), then every shard (an id drawn before).
            let named = citypay_directory::bucket_of_app(app).map(|bucket| self.index_of((self.map)().shard_of(bucket)));
            let order = named.into_iter().chain(0..self.routes.len());
            for index in order {
                if let Ok(app) = self.routes[index].state.directory.gateway_app(app).await {
                    found = self.of_owner(app.merchant);
                    break;
                }
            }
        }
        Ok((found, Request::from_parts(parts, Body::from(bytes))))
    }

    /// A merchant's key: the shard of the merchant that a shard authenticates it for (by its
    /// id's bucket, so a key still in the cache of a shard its city left routes right).
    async fn by_api_key(&self, key: &str) -> Found {
        let Some((key_id, secret)) = key.split_once(':') else { return Found::HERE };
        for route in &self.routes {
            if let Ok(merchant) = route.state.directory.authenticate_api_key(key_id, secret).await {
                return self.of_owner(merchant);
            }
        }
        Found::HERE
    }

    /// A registration: the shard the map places the city's buckets on (a shard that knows
    /// the city's group; a city that moved is known where it was until its rows are gone).
    async fn by_city(&self, city: u32) -> usize {
        for route in &self.routes {
            if let Ok(group) = route.state.directory.bucket_group(city).await {
                return self.index_of((self.map)().shard_of(citypay_routing::Bucket(group.start)));
            }
        }
        0
    }

    async fn by_mobile(&self, mobile: &str) -> Found {
        for route in &self.routes {
            if let Ok(Some(resident)) = route.state.directory.resident_by_mobile(mobile).await {
                return self.of_owner(resident.id);
            }
        }
        Found::HERE
    }
}
