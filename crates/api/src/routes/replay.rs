//! The first answer to each `Idempotency-Key`, kept per caller and replayed on a retry; the
//! same key with another request is refused with 409. The services underneath are idempotent
//! themselves (ids derive from the key), so an answer lost before it was kept is rebuilt
//! identically by running the request again.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citypay_shard::Command;
use citypay_store::{OnConflict, ServiceRow, Value};
use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use crate::{ApiError, IdempotencyKey};

/// Marks a replayed answer.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Runs `work` once per (caller, key): a retry with the same request gets the first answer
/// (success or refusal), another request under the same key gets 409.
pub(crate) async fn once<T, F>(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    fingerprint: [u8; 32],
    success: StatusCode,
    work: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: Future<Output = Result<T, ApiError>>,
{
    let scope = caller.scope();
    let rows = state
        .directory
        .read(
            "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = ?1 AND idem_key = ?2",
            vec![Value::Text(scope.clone()), Value::Text(key.as_str().to_owned())],
        )
        .await?;
    if let Some(row) = rows.first() {
        return match row.as_slice() {
            [Value::Blob(stored), Value::Int(status), Value::Text(body)] if stored.as_slice() == fingerprint => {
                Ok(replayed(*status, body))
            }
            _ => Err(ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request")),
        };
    }
    let result = match (work.await, caller) {
        (Err(error), Caller::Resident(id)) if error.code() == CLASS_CAP_REFUSAL => Err(explain_class_cap(state, *id, error).await),
        (result, _) => result,
    };
    let (status, body) = match result {
        Ok(value) => (success, serde_json::to_value(value).map_err(|e| ApiError::internal(&e))?),
        // Server errors are worth retrying: they are not kept.
        Err(error) if error.status().is_server_error() => return Err(error),
        Err(error) => (error.status(), serde_json::json!({"error": {"code": error.code(), "message": error.message()}})),
    };
    keep(state, scope, key, fingerprint, status, &body).await;
    Ok((status, Json(body)).into_response())
}

/// The ledger's refusal at a wallet's class cap.
const CLASS_CAP_REFUSAL: &str = "exceeds_window_cap";

/// A resident refused at their wallet's class cap is told which cap and how much of it is left
/// (only the resident: a merchant taking their payment code hears only the code).
async fn explain_class_cap(state: &AppState, resident: u64, error: ApiError) -> ApiError {
    match state.directory.class_cap(resident).await {
        Ok(Some(cap)) => ApiError::new(error.status(), error.code(), cap.to_string()),
        _ => error,
    }
}

fn replayed(status: i64, body: &str) -> Response {
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(REPLAYED_HEADER, axum::http::HeaderValue::from_static("true"));
    response
}

/// Keeps the answer. If this fails the answer is simply rebuilt on a retry.
async fn keep(state: &AppState, scope: String, key: &IdempotencyKey, fingerprint: [u8; 32], status: StatusCode, body: &serde_json::Value) {
    let row = kept_answer(state, scope, key, fingerprint, status, body);
    let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
    if let Err(error) = state.directory.shard().submit(command).await {
        tracing::warn!(%error, "could not keep an idempotent answer");
    }
}

/// The row that keeps an answer to `key` of `caller`, for a command that writes it in its own
/// transaction (one whose retry could not rebuild the answer, as a registration's).
pub(crate) fn answer_row<T: Serialize>(state: &AppState, caller: &Caller, key: &IdempotencyKey, fingerprint: [u8; 32], status: StatusCode, answer: &T) -> ServiceRow {
    let body = serde_json::to_value(answer).unwrap_or(serde_json::Value::Null);
    kept_answer(state, caller.scope(), key, fingerprint, status, &body)
}

fn kept_answer(state: &AppState, scope: String, key: &IdempotencyKey, fingerprint: [u8; 32], status: StatusCode, body: &serde_json::Value) -> ServiceRow {
    let now = citypay_directory::Directory::clock(&state.directory).now().unix_seconds();
    ServiceRow {
        table: "idempotency_keys",
        key: vec![("scope", Value::Text(scope)), ("idem_key", Value::Text(key.as_str().to_owned()))],
        columns: vec![
            ("fingerprint", Value::Blob(fingerprint.to_vec())),
            ("status", Value::Int(i64::from(status.as_u16()))),
            ("body", Value::Text(body.to_string())),
            ("created_at", Value::Int(i64::try_from(now).unwrap_or(0))),
        ],
        on_conflict: OnConflict::Ignore,
    }
}
