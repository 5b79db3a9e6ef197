//! Verifying residents' identities: an operator's in-person check of an ID card, and the
//! sandbox bank's register of card holders that card linking is confirmed against.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use citypay_api_types::ErrorBody;
use citypay_directory::Role;
use citypay_identity::{CardNumber, ResidentId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Caller, OperatorCaller};
use super::replay::once;
use super::AppState;
use crate::{ApiError, Idempotent};

/// What the operator read on the ID card the resident showed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InPersonRequest {
    /// PRC resident ID number on the card.
    id_number: String,
    /// The name on the card.
    name: String,
}

/// The resident verified, and their account class now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct VerifiedView {
    resident_id: String,
    id_masked: String,
    /// PBOC account class: III once verified face to face.
    account_class: String,
}

/// Records that an operator checked a resident's ID card face to face (platform operators,
/// or the operators of the resident's city), which makes the account class III. The name must
/// be the one registered with the ID number (422 `identity_mismatch`).
#[utoipa::path(post, path = "/v1/in-person-verifications", security(("operator" = [])), tag = "operators", params(crate::IdempotencyKey), request_body = InPersonRequest,
    responses((status = CREATED, body = VerifiedView), (status = NOT_FOUND, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn verify_in_person(State(state): State<AppState>, operator: OperatorCaller, request: Idempotent<InPersonRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Operator(operator.id);
    let city = (operator.role != Role::PlatformOperator).then_some(operator.city.unwrap_or(0));
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let (resident, class) = state.directory.verify_in_person(operator.id, city, &request.body.id_number, &request.body.name).await?;
        Ok(VerifiedView { resident_id: resident.id.to_string(), id_masked: resident.id_masked, account_class: class.code().to_owned() })
    })
    .await
}

/// A card the sandbox bank issues to a person.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardHolderRequest {
    /// The card number.
    card_number: String,
    /// The holder's legal name.
    name: String,
    /// The holder's PRC resident ID number.
    id_number: String,
}

/// A card in the sandbox bank's register.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CardHolderView {
    card_masked: String,
}

/// Issues a card in the sandbox bank's register of card holders (platform operators only; only
/// while the platform's bank is the sandbox): a resident can link the card only under this name
/// and ID number. The register lives in the server's memory.
#[utoipa::path(post, path = "/v1/sandbox-bank/card-holders", security(("operator" = [])), tag = "operators", params(crate::IdempotencyKey), request_body = CardHolderRequest,
    responses((status = CREATED, body = CardHolderView), (status = FORBIDDEN, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn register_card_holder(State(state): State<AppState>, operator: OperatorCaller, request: Idempotent<CardHolderRequest>) -> Result<Response, ApiError> {
    if operator.role != Role::PlatformOperator {
        return Err(ApiError::forbidden("only platform operators fill the sandbox bank's register"));
    }
    let Some(bank) = state.sandbox_bank.clone() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_sandbox", "the platform's bank is not the sandbox bank"));
    };
    let caller = Caller::Operator(operator.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let body = &request.body;
        let card = CardNumber::parse(&body.card_number).map_err(|e| ApiError::unprocessable("invalid_card", e.to_string()))?.card;
        let today = state.directory.today();
        let id_number = ResidentId::parse(body.id_number.trim(), today).map_err(|e| ApiError::unprocessable("invalid_resident_id", e.to_string()))?;
        let name = body.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(ApiError::unprocessable("invalid_field", "name: 1 to 64 characters"));
        }
        bank.register_holder(&card, name, &id_number).map_err(|e| ApiError::new(StatusCode::CONFLICT, "card_issued_to_another", e.to_string()))?;
        Ok(CardHolderView { card_masked: card.masked() })
    })
    .await
}
