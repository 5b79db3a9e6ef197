//! Merchants' apps on the Alipay-compatible gateway and the platform's public keys: a merchant
//! registers an app with its RSA public key and gets the `app_id` its SDK sends; it rotates the
//! key, sets the default notification URL, moves the app to a newer platform key, or disables
//! it; a platform operator (or the merchant's city operator) can do the same for it.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use citypay_api_types::ErrorBody;
use citypay_directory::{GatewayApp, GatewayAppChange, Role};
use citypay_gateway::AppKey;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{MerchantCaller, OperatorCaller};
use crate::{ApiError, AppJson};

/// A gateway app as its merchant sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GatewayAppView {
    /// The 16-digit `app_id` the merchant's SDK sends.
    app_id: String,
    /// The app's RSA public key (SubjectPublicKeyInfo, PEM).
    public_key: String,
    /// Where its trades' notifications go when a request names no `notify_url`.
    notify_url: Option<String>,
    /// The platform key that signs its answers and notifications.
    platform_key_id: u32,
    /// That key's public half: the SDK's `alipay_public_key`.
    platform_public_key: String,
    /// Disabled apps' calls are refused (`isv.invalid-app-id`).
    disabled: bool,
    /// Unix seconds.
    created_at: u64,
}

impl GatewayAppView {
    fn new(state: &AppState, app: &GatewayApp) -> GatewayAppView {
        GatewayAppView {
            app_id: app.app_id.to_string(),
            public_key: app.public_key.to_pem(),
            notify_url: app.notify_url.clone(),
            platform_key_id: app.platform_key,
            platform_public_key: state.gateway.keys.get(app.platform_key).map(|k| k.public().to_pem()).unwrap_or_default(),
            disabled: app.disabled_at.is_some(),
            created_at: app.created_at,
        }
    }
}

/// A new app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGatewayApp {
    /// RSA public key of 2048 to 8192 bits: SubjectPublicKeyInfo PEM, or the bare base64 that
    /// Alipay's key tool gives.
    public_key: String,
    /// Default notification URL (http or https; public addresses only).
    notify_url: Option<String>,
}

/// A change to an app; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayAppUpdate {
    /// A new public key: the old one stops verifying at once.
    public_key: Option<String>,
    /// A new default notification URL; an empty string removes it.
    notify_url: Option<String>,
    /// Sign this app's answers with another platform key, once the SDK is configured with
    /// its public half (`GET /v1/gateway/public-key?key_id=`).
    platform_key_id: Option<u32>,
    /// Disable or enable the app.
    disabled: Option<bool>,
}

fn app_key(text: &str) -> Result<AppKey, ApiError> {
    AppKey::parse(text).map_err(|e| ApiError::unprocessable("invalid_public_key", e.to_string()))
}

fn notify_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    super::notify_urls::check(url, state.gateway.allow_private_notify).map_err(|e| ApiError::unprocessable("invalid_notify_url", format!("notify_url: {e}")))
}

async fn register(state: &AppState, merchant: u64, body: &NewGatewayApp) -> Result<Response, ApiError> {
    let key = app_key(&body.public_key)?;
    if let Some(url) = &body.notify_url {
        notify_url(state, url)?;
    }
    let platform_key = state.gateway.keys.newest().ok_or_else(|| ApiError::unavailable("the gateway has no platform key", std::time::Duration::from_secs(60)))?;
    let app = state.directory.register_gateway_app(merchant, &key, body.notify_url.as_deref(), platform_key.id()).await?;
    Ok((StatusCode::CREATED, AppJson(GatewayAppView::new(state, &app))).into_response())
}

async fn update(state: &AppState, app_id: &str, owner: Option<u64>, body: &GatewayAppUpdate) -> Result<GatewayAppView, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such app");
    let app_id: u64 = app_id.parse().map_err(|_| not_found())?;
    let mut change = GatewayAppChange { disabled: body.disabled, platform_key: body.platform_key_id, ..GatewayAppChange::default() };
    if let Some(text) = &body.public_key {
        change.public_key = Some(app_key(text)?);
    }
    if let Some(url) = &body.notify_url {
        if url.is_empty() {
            change.notify_url = Some(None);
        } else {
            notify_url(state, url)?;
            change.notify_url = Some(Some(url.clone()));
        }
    }
    if let Some(id) = body.platform_key_id
        && state.gateway.keys.get(id).is_none()
    {
        return Err(ApiError::unprocessable("unknown_platform_key", format!("no platform key {id}")));
    }
    let app = state.directory.change_gateway_app(app_id, owner, &change).await.map_err(|e| match e {
        citypay_directory::DirectoryError::NotFound => not_found(),
        other => other.into(),
    })?;
    Ok(GatewayAppView::new(state, &app))
}

/// Registers a gateway app of the calling merchant.
#[utoipa::path(post, path = "/v1/gateway/apps", security(("merchant" = [])), tag = "gateway", request_body = NewGatewayApp,
    responses((status = CREATED, body = GatewayAppView), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn create_app(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, AppJson(body): AppJson<NewGatewayApp>) -> Result<Response, ApiError> {
    register(&state, merchant, &body).await
}

/// The calling merchant's gateway apps.
#[utoipa::path(get, path = "/v1/gateway/apps", security(("merchant" = [])), tag = "gateway", responses((status = OK, body = Vec<GatewayAppView>)))]
pub(crate) async fn list_apps(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller) -> Result<AppJson<Vec<GatewayAppView>>, ApiError> {
    let apps = state.directory.gateway_apps(merchant).await?;
    Ok(AppJson(apps.iter().map(|a| GatewayAppView::new(&state, a)).collect()))
}

/// Rotates an app's key, sets its notification URL or platform key, disables or enables it.
#[utoipa::path(patch, path = "/v1/gateway/apps/{app_id}", security(("merchant" = [])), tag = "gateway", params(("app_id" = String, Path)), request_body = GatewayAppUpdate,
    responses((status = OK, body = GatewayAppView), (status = NOT_FOUND, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn update_app(
    State(state): State<AppState>,
    MerchantCaller(merchant): MerchantCaller,
    Path(app_id): Path<String>,
    AppJson(body): AppJson<GatewayAppUpdate>,
) -> Result<AppJson<GatewayAppView>, ApiError> {
    Ok(AppJson(update(&state, &app_id, Some(merchant), &body).await?))
}

/// The merchant `merchant_id` if this operator may act for it (another city's merchant is not
/// shown to exist).
async fn operated_merchant(state: &AppState, operator: &OperatorCaller, merchant_id: &str) -> Result<u64, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such merchant");
    let id: u64 = merchant_id.parse().map_err(|_| not_found())?;
    let merchant = state.directory.merchant(id).await.map_err(|_| not_found())?;
    if operator.role != Role::PlatformOperator && operator.city != Some(merchant.city) {
        return Err(not_found());
    }
    Ok(id)
}

/// Registers a gateway app for a merchant (operators).
#[utoipa::path(post, path = "/v1/operator/merchants/{merchant_id}/gateway-apps", security(("operator" = [])), tag = "gateway", params(("merchant_id" = String, Path)),
    request_body = NewGatewayApp, responses((status = CREATED, body = GatewayAppView), (status = NOT_FOUND, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn operator_create_app(
    State(state): State<AppState>,
    operator: OperatorCaller,
    Path(merchant_id): Path<String>,
    AppJson(body): AppJson<NewGatewayApp>,
) -> Result<Response, ApiError> {
    let merchant = operated_merchant(&state, &operator, &merchant_id).await?;
    register(&state, merchant, &body).await
}

/// A merchant's gateway apps (operators).
#[utoipa::path(get, path = "/v1/operator/merchants/{merchant_id}/gateway-apps", security(("operator" = [])), tag = "gateway", params(("merchant_id" = String, Path)),
    responses((status = OK, body = Vec<GatewayAppView>), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn operator_list_apps(State(state): State<AppState>, operator: OperatorCaller, Path(merchant_id): Path<String>) -> Result<AppJson<Vec<GatewayAppView>>, ApiError> {
    let merchant = operated_merchant(&state, &operator, &merchant_id).await?;
    let apps = state.directory.gateway_apps(merchant).await?;
    Ok(AppJson(apps.iter().map(|a| GatewayAppView::new(&state, a)).collect()))
}

/// Changes a merchant's gateway app (operators): a lost key, a compromised app.
#[utoipa::path(patch, path = "/v1/operator/merchants/{merchant_id}/gateway-apps/{app_id}", security(("operator" = [])), tag = "gateway",
    params(("merchant_id" = String, Path), ("app_id" = String, Path)), request_body = GatewayAppUpdate,
    responses((status = OK, body = GatewayAppView), (status = NOT_FOUND, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn operator_update_app(
    State(state): State<AppState>,
    operator: OperatorCaller,
    Path((merchant_id, app_id)): Path<(String, String)>,
    AppJson(body): AppJson<GatewayAppUpdate>,
) -> Result<AppJson<GatewayAppView>, ApiError> {
    let merchant = operated_merchant(&state, &operator, &merchant_id).await?;
    Ok(AppJson(update(&state, &app_id, Some(merchant), &body).await?))
}

/// Which platform key to show.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyQuery {
    /// A key id; the newest key unless given.
    key_id: Option<u32>,
}

/// The platform's public key that merchants configure in their SDK (`alipay_public_key`), PEM.
/// The `Citypay-Key-Id` header names it.
#[utoipa::path(get, path = "/v1/gateway/public-key", security(()), tag = "gateway", params(KeyQuery),
    responses((status = OK, body = String, content_type = "application/x-pem-file"), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn public_key(State(state): State<AppState>, Query(query): Query<KeyQuery>) -> Result<Response, ApiError> {
    let keys = &state.gateway.keys;
    let key = match query.key_id {
        Some(id) => keys.get(id),
        None => keys.newest(),
    }
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such platform key"))?;
    let mut response = key.public().to_pem().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
    headers.insert("citypay-key-id", HeaderValue::from(key.id()));
    Ok(response)
}
