//! Sending money to someone (see `citypay_wallet::transfers`): find the recipient by mobile
//! number (the name masked, to confirm), send with a note, list what was sent and received.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use citypay_api_types::{ErrorBody, Money};
use citypay_wallet::{Direction, TransferLine, TransferStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Caller, ResidentCaller};
use super::replay::once;
use super::residents::{cny, money};
use crate::{ApiError, AppJson, Idempotent, IdempotencyKey};

/// A mobile number to send to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecipientQuery {
    /// The recipient's mobile number.
    mobile: String,
}

/// Whom a mobile number reaches, as the sender may see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RecipientView {
    /// The registered name with all but its last character hidden (`*磊`).
    masked_name: String,
    /// Their home city (GB/T 2260).
    city: u32,
}

/// Who a mobile number reaches, to confirm before sending: the registered name, masked. Each
/// lookup counts, found or not: 20 an hour per sender (429 with `Retry-After` past it).
#[utoipa::path(post, path = "/v1/transfer-recipients", security(("resident" = [])), tag = "transfers", request_body = RecipientQuery,
    responses((status = OK, body = RecipientView), (status = NOT_FOUND, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn find_recipient(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, AppJson(body): AppJson<RecipientQuery>) -> Result<AppJson<RecipientView>, ApiError> {
    let recipient = match state.country.get() {
        Some(country) => country.find_recipient(&state.wallet, &me, &body.mobile).await?,
        None => state.wallet.find_recipient(&me, &body.mobile).await?,
    };
    Ok(AppJson(RecipientView { masked_name: recipient.masked_name, city: recipient.city }))
}

/// Money to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// The recipient's mobile number.
    mobile: String,
    amount: Money,
    /// A note for the recipient (at most 50 characters).
    note: Option<String>,
}

/// A transfer between residents, as one of them sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TransferView {
    transfer_id: String,
    /// `sent` or `received`.
    direction: String,
    /// The other resident's name, masked.
    counterparty: String,
    amount: Money,
    note: String,
    /// Unix seconds.
    created_at: u64,
    /// `completed`; for a transfer to a resident of another shard also `pending` (its answer
    /// not yet heard; the money is held) or `returned` (refused there; the money is back).
    status: String,
}

impl From<&TransferLine> for TransferView {
    fn from(line: &TransferLine) -> TransferView {
        TransferView {
            transfer_id: line.id.clone(),
            direction: match line.direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            }
            .to_owned(),
            counterparty: line.counterparty.clone(),
            amount: money(line.amount),
            note: line.note.clone(),
            created_at: line.created_ns / 1_000_000_000,
            status: match line.status {
                TransferStatus::Completed => "completed",
                TransferStatus::Pending => "pending",
                TransferStatus::Returned => "returned",
            }
            .to_owned(),
        }
    }
}

/// Sends money from the caller's wallet to the resident a mobile number reaches, in any city
/// of this shard, under the caller's class limits (422 at a limit or without the funds); a
/// frozen wallet sends nothing (403 `wallet_frozen`).
#[utoipa::path(post, path = "/v1/transfers", security(("resident" = [])), tag = "transfers", params(IdempotencyKey), request_body = SendRequest,
    responses((status = CREATED, body = TransferView), (status = FORBIDDEN, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn send(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<SendRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    let key = request.key.as_str().to_owned();
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let amount = cny(&request.body.amount)?;
        let note = request.body.note.as_deref().unwrap_or("");
        let sent = match state.country.get() {
            Some(country) => country.send(&state.wallet, &me, &request.body.mobile, amount, note, &key).await?,
            None => state.wallet.send(&me, &request.body.mobile, amount, note, &key).await?,
        };
        Ok(TransferView::from(&sent))
    })
    .await
}

/// The caller's transfers, sent and received, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/transfers", security(("resident" = [])), tag = "transfers", params(crate::PageQuery),
    responses((status = OK, body = citypay_api_types::Page<TransferView>), (status = BAD_REQUEST, body = ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, page: crate::PageRequest) -> Result<AppJson<citypay_api_types::Page<TransferView>>, ApiError> {
    let before = match &page.cursor {
        Some(cursor) => Some((u64::try_from(cursor.sort_key).map_err(|_| ApiError::bad_request("invalid_cursor", "cursor out of range"))?, cursor.id.clone())),
        None => None,
    };
    let lines = match state.country.get() {
        Some(country) => country.transfers(&state.wallet, &me, before, page.limit).await?,
        None => state.wallet.transfers(&me, before, page.limit).await?,
    };
    let next_cursor = (lines.len() == usize::try_from(page.limit).unwrap_or(usize::MAX))
        .then(|| lines.last())
        .flatten()
        .map(|l| crate::Cursor::new(i64::try_from(l.created_ns).unwrap_or(i64::MAX), l.id.clone()).encode());
    Ok(AppJson(citypay_api_types::Page { items: lines.iter().map(TransferView::from).collect(), next_cursor }))
}
