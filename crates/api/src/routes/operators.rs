//! Operators: sign-in, onboarding cities and merchants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citypay_api_types::ErrorBody;
use citypay_directory::{Category, NewMerchant, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Caller, ClientAddress, OperatorCaller};
use super::replay::once;
use super::residents::Session;
use super::AppState;
use crate::{ApiError, AppJson, Idempotent};

/// Operator credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorSignIn {
    username: String,
    password: String,
    /// The `client_ticket` of this client's last successful sign-in as this operator.
    client_ticket: Option<String>,
}

/// Signs an operator in, under the same limits on wrong passwords as residents.
#[utoipa::path(post, path = "/v1/operator-sessions", security(()), tag = "operators", request_body = OperatorSignIn,
    responses((status = OK, body = Session), (status = UNAUTHORIZED, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn sign_in(State(state): State<AppState>, ClientAddress(address): ClientAddress, AppJson(body): AppJson<OperatorSignIn>) -> Result<AppJson<Session>, ApiError> {
    let from = citypay_directory::SignInFrom { address, ticket: body.client_ticket };
    let (_, signed_in) = state.directory.sign_in_operator(&body.username, &body.password, state.token_ttl_s, &from).await?;
    Ok(AppJson(Session::new(signed_in, state.token_ttl_s)))
}

/// A city to onboard.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CityView {
    /// GB/T 2260 code.
    code: u32,
    /// Name.
    name: String,
}

/// Onboards a city (platform operators only).
#[utoipa::path(post, path = "/v1/cities", security(("operator" = [])), tag = "operators", params(crate::IdempotencyKey), request_body = CityView,
    responses((status = CREATED, body = CityView), (status = FORBIDDEN, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn onboard_city(State(state): State<AppState>, operator: OperatorCaller, request: Idempotent<CityView>) -> Result<Response, ApiError> {
    if operator.role != Role::PlatformOperator {
        return Err(ApiError::forbidden("only platform operators onboard cities"));
    }
    let caller = Caller::Operator(operator.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let city = match state.country.get() {
            // The catalog gives the city its group of buckets, and says it lives on this shard.
            Some(country) => {
                let group = country.city_group(request.body.code).await.map_err(ApiError::from)?;
                state.directory.onboard_city_in(request.body.code, &request.body.name, Some(group)).await?
            }
            None => state.directory.onboard_city(request.body.code, &request.body.name).await?,
        };
        Ok(CityView { code: city.code, name: city.name })
    })
    .await
}

/// A merchant to onboard.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MerchantRequest {
    city: u32,
    name: String,
    /// Unified Social Credit Code.
    uscc: String,
    /// ISO 18245 merchant category code.
    mcc: String,
    /// retail, restaurant, transit, hospital, school, social_security, utility, other.
    category: String,
    /// Bank account settlements are paid to.
    settlement_account: String,
    /// Where signed notifications go.
    notify_url: Option<String>,
}

/// An onboarded merchant and its credentials (shown once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OnboardedMerchant {
    merchant_id: String,
    /// `Authorization: ApiKey <api_key_id>:<api_key_secret>`.
    api_key_id: String,
    api_key_secret: String,
    /// Verifies the `Citypay-Signature` of notifications.
    webhook_secret: String,
    settlement_account_masked: String,
}

/// Onboards a merchant (platform operators, or the operators of its city). The answer holds
/// secrets, so it is not kept for replay; onboarding twice is refused by the USCC.
#[utoipa::path(post, path = "/v1/merchants", security(("operator" = [])), tag = "operators", request_body = MerchantRequest,
    responses((status = CREATED, body = OnboardedMerchant), (status = FORBIDDEN, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn onboard_merchant(State(state): State<AppState>, operator: OperatorCaller, AppJson(body): AppJson<MerchantRequest>) -> Result<Response, ApiError> {
    let allowed = operator.role == Role::PlatformOperator || operator.city == Some(body.city);
    if !allowed {
        return Err(ApiError::forbidden("a city operator onboards merchants of their own city only"));
    }
    let category = Category::from_code(&body.category)
        .ok_or_else(|| ApiError::unprocessable("invalid_field", "unknown category"))?;
    let new = NewMerchant {
        city: body.city,
        name: body.name,
        uscc: body.uscc,
        mcc: body.mcc,
        category,
        settlement_account: body.settlement_account,
        notify_url: body.notify_url,
    };
    let (merchant, credentials) = match state.country.get() {
        // One USCC, one merchant in the country: claimed at its home shard first.
        Some(country) => country.onboard_merchant(&new).await?,
        None => state.directory.onboard_merchant(&new).await?,
    };
    let view = OnboardedMerchant {
        merchant_id: merchant.id.to_string(),
        api_key_id: credentials.key_id,
        api_key_secret: credentials.secret.expose().clone(),
        webhook_secret: credentials.webhook_secret.map(|s| s.expose().clone()).unwrap_or_default(),
        settlement_account_masked: merchant.settlement_account_masked,
    };
    Ok((StatusCode::CREATED, AppJson(view)).into_response())
}

/// Issues a new API key to a merchant whose onboarding answer (with its first key) was lost,
/// or who lost every key (platform operators, or the operators of its city). The answer holds
/// a secret, so it is not kept for replay; the merchant's other keys keep working until it
/// revokes them.
#[utoipa::path(post, path = "/v1/merchants/{merchant_id}/api-keys", security(("operator" = [])), tag = "operators", params(("merchant_id" = String, Path)),
    responses((status = CREATED, body = super::trades::ApiKeyView), (status = FORBIDDEN, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn issue_merchant_key(
    State(state): State<AppState>,
    operator: OperatorCaller,
    axum::extract::Path(merchant_id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such merchant");
    let id: u64 = merchant_id.parse().map_err(|_| not_found())?;
    let merchant = state.directory.merchant(id).await.map_err(|_| not_found())?;
    if operator.role != Role::PlatformOperator && operator.city != Some(merchant.city) {
        // Another city's merchant is not shown to exist.
        return Err(not_found());
    }
    let credentials = state.directory.issue_api_key(id).await?;
    let view = super::trades::ApiKeyView::new(credentials.key_id, credentials.secret.expose().clone());
    Ok((StatusCode::CREATED, AppJson(view)).into_response())
}
