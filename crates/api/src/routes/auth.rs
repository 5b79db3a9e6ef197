//! Who is calling. Residents and operators send `Authorization: Bearer <token>` (from sign-in);
//! merchants send `Authorization: ApiKey <key id>:<secret>`. Nothing else is accepted, and the
//! header itself is never logged.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use citypay_directory::{DirectoryError, Principal, Resident, Role};

use super::AppState;
use crate::ApiError;

/// A signed-in resident.
#[derive(Clone, Debug)]
pub struct ResidentCaller(pub Resident);

/// A merchant authenticated by API key.
#[derive(Clone, Copy, Debug)]
pub struct MerchantCaller(pub u64);

/// A signed-in operator.
#[derive(Clone, Copy, Debug)]
pub struct OperatorCaller {
    /// Operator id.
    pub id: u64,
    /// Role.
    pub role: Role,
    /// The city of a city operator.
    pub city: Option<u32>,
}

/// Any authenticated caller, for scoping idempotency keys.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A resident.
    Resident(u64),
    /// A merchant.
    Merchant(u64),
    /// An operator.
    Operator(u64),
    /// A public call (registration), scoped by what it is about.
    Anonymous(String),
}

impl Caller {
    /// The scope an idempotency key belongs to.
    pub fn scope(&self) -> String {
        match self {
            Caller::Resident(id) => format!("resident:{id}"),
            Caller::Merchant(id) => format!("merchant:{id}"),
            Caller::Operator(id) => format!("operator:{id}"),
            Caller::Anonymous(about) => format!("public:{about}"),
        }
    }
}

fn credentials<'a>(parts: &'a Parts, scheme: &str) -> Result<&'a str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("this call needs an Authorization header"))?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (given, rest) = value.split_once(' ').ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
    if !given.eq_ignore_ascii_case(scheme) {
        return Err(ApiError::forbidden(format!("this call needs {scheme} credentials")));
    }
    Ok(rest.trim())
}

fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = credentials(parts, "Bearer")?;
    state.directory.verify_token(token).ok_or_else(|| ApiError::unauthorized("the token is invalid or expired"))
}

impl FromRequestParts<AppState> for ResidentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            Principal::Resident { id, .. } => {
                let resident = state.directory.resident(id).await.map_err(|e| match e {
                    DirectoryError::NotFound => ApiError::unauthorized("unknown resident"),
                    // Storage trouble is not the caller's fault: 503 or 500, never "sign in again".
                    other => ApiError::from(other),
                })?;
                Ok(ResidentCaller(resident))
            }
            Principal::Operator { .. } => Err(ApiError::forbidden("residents only")),
        }
    }
}

impl FromRequestParts<AppState> for OperatorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            Principal::Operator { id, role, city } => Ok(OperatorCaller { id, role, city }),
            Principal::Resident { .. } => Err(ApiError::forbidden("operators only")),
        }
    }
}

impl FromRequestParts<AppState> for MerchantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = credentials(parts, "ApiKey")?;
        let (key_id, secret) = key.split_once(':').ok_or_else(|| ApiError::unauthorized("expected ApiKey <key id>:<secret>"))?;
        let merchant = state
            .directory
            .authenticate_api_key(key_id, secret)
            .await
            .map_err(|e| match e {
                DirectoryError::WrongCredentials => ApiError::unauthorized("unknown or revoked API key"),
                other => ApiError::from(other),
            })?;
        Ok(MerchantCaller(merchant))
    }
}
