//! The pages people hold (`citypay-pages`): the resident's app at `/app/` and the till at
//! `/till/`, each file as it is embedded, the pages under their own Content Security Policy.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use citypay_pages::{ASSETS, Asset, PAGES_POLICY};

fn serve(asset: &'static Asset) -> Response {
    let mut response = (StatusCode::OK, [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))], asset.body).into_response();
    // Revalidated each time: a new binary's pages replace the old at once.
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.content_type.starts_with("text/html") {
        response.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGES_POLICY));
    }
    response
}

fn moved(to: &'static str) -> Response {
    (StatusCode::MOVED_PERMANENTLY, [(LOCATION, HeaderValue::from_static(to))]).into_response()
}

/// Every file of the pages, and `/app` and `/till` sent on to their folders (the service
/// worker's scope is `/app/`).
pub fn people_pages() -> Router {
    let router = ASSETS.iter().fold(Router::new(), |router, asset| router.route(asset.path, get(move || async move { serve(asset) })));
    router.route("/app", get(|| async { moved("/app/") })).route("/till", get(|| async { moved("/till/") }))
}
