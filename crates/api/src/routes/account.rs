//! A resident's account safety: their sessions (sign out, end the others), their password,
//! their payment devices (list, revoke a lost phone's), and freezing the wallet. Each call is
//! the resident's own and needs their token; changing the password and unfreezing also need
//! the password, under the sign-in limits. These calls are idempotent by nature (doing one
//! twice leaves the same state), so they take no `Idempotency-Key`.

use axum::extract::{Path, State};
use citypay_api_types::ErrorBody;
use citypay_checkout::DeviceInfo;
use citypay_directory::{Principal, SignInFrom};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{ClientAddress, ResidentSession};
use crate::{ApiError, AppJson};

fn principal(caller: &ResidentSession) -> Principal {
    Principal::Resident { id: caller.resident.id, city: caller.resident.city }
}

/// A live session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SessionView {
    session_id: String,
    /// Unix seconds.
    created_at: u64,
    /// Unix seconds.
    expires_at: u64,
    /// Whether it is the session of the token this call came with.
    current: bool,
}

/// The caller's live sessions, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SessionsView {
    sessions: Vec<SessionView>,
}

/// The caller's live sessions (at most 100, newest first).
#[utoipa::path(get, path = "/v1/my/sessions", security(("resident" = [])), tag = "account", responses((status = OK, body = SessionsView), (status = UNAUTHORIZED, body = ErrorBody)))]
pub(crate) async fn sessions(State(state): State<AppState>, caller: ResidentSession) -> Result<AppJson<SessionsView>, ApiError> {
    let sessions = state.directory.sessions(principal(&caller)).await?;
    let sessions = sessions
        .into_iter()
        .map(|s| SessionView { current: s.id == caller.session, session_id: s.id, created_at: s.created_at, expires_at: s.expires_at })
        .collect();
    Ok(AppJson(SessionsView { sessions }))
}

/// How many sessions a call ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EndedView {
    ended_sessions: usize,
}

/// Ends one of the caller's sessions: its token stops working at once on this server and
/// within 5 seconds on every other. Ending the caller's own session is signing out.
#[utoipa::path(delete, path = "/v1/my/sessions/{session_id}", security(("resident" = [])), tag = "account", params(("session_id" = String, Path)),
    responses((status = OK, body = EndedView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn end_session(State(state): State<AppState>, caller: ResidentSession, Path(session_id): Path<String>) -> Result<AppJson<EndedView>, ApiError> {
    state.directory.end_session(principal(&caller), &session_id).await?;
    Ok(AppJson(EndedView { ended_sessions: 1 }))
}

/// Ends every session of the caller but the one this call came with (a lost phone).
#[utoipa::path(post, path = "/v1/my/sessions/end-others", security(("resident" = [])), tag = "account", responses((status = OK, body = EndedView)))]
pub(crate) async fn end_other_sessions(State(state): State<AppState>, caller: ResidentSession) -> Result<AppJson<EndedView>, ApiError> {
    let ended_sessions = state.directory.end_other_sessions(principal(&caller), &caller.session).await?;
    Ok(AppJson(EndedView { ended_sessions }))
}

/// A new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    current_password: String,
    /// At least 8 characters.
    new_password: String,
    /// This client's ticket from its last sign-in, as for signing in.
    client_ticket: Option<String>,
}

/// Changes the caller's password (the current one is checked under the sign-in limits) and
/// ends every other session.
#[utoipa::path(post, path = "/v1/my/password", security(("resident" = [])), tag = "account", request_body = PasswordChange,
    responses((status = OK, body = EndedView), (status = UNAUTHORIZED, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    caller: ResidentSession,
    ClientAddress(address): ClientAddress,
    AppJson(body): AppJson<PasswordChange>,
) -> Result<AppJson<EndedView>, ApiError> {
    let from = SignInFrom { address, ticket: body.client_ticket };
    let ended_sessions = state.directory.change_password(caller.resident.id, &caller.session, &body.current_password, &body.new_password, &from).await?;
    Ok(AppJson(EndedView { ended_sessions }))
}

/// Whether the wallet is frozen.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FreezeView {
    frozen: bool,
}

/// Freezes the caller's wallet: nothing is paid out of it (QR and code payments, bills,
/// contributions, withdrawals, ride credentials, arrears) until it is unfrozen; refunds and
/// top-ups still come in. Every API server refuses from the next payment on.
#[utoipa::path(post, path = "/v1/wallet/freeze", security(("resident" = [])), tag = "account", responses((status = OK, body = FreezeView)))]
pub(crate) async fn freeze(State(state): State<AppState>, caller: ResidentSession) -> Result<AppJson<FreezeView>, ApiError> {
    state.directory.freeze_wallet(caller.resident.id).await?;
    Ok(AppJson(FreezeView { frozen: true }))
}

/// The password that undoes a freeze.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Unfreeze {
    password: String,
    /// This client's ticket from its last sign-in, as for signing in.
    client_ticket: Option<String>,
}

/// Unfreezes the caller's wallet. It needs the password (under the sign-in limits), so a lost
/// phone's session cannot undo its owner's freeze.
#[utoipa::path(post, path = "/v1/wallet/unfreeze", security(("resident" = [])), tag = "account", request_body = Unfreeze,
    responses((status = OK, body = FreezeView), (status = UNAUTHORIZED, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn unfreeze(
    State(state): State<AppState>,
    caller: ResidentSession,
    ClientAddress(address): ClientAddress,
    AppJson(body): AppJson<Unfreeze>,
) -> Result<AppJson<FreezeView>, ApiError> {
    let from = SignInFrom { address, ticket: body.client_ticket };
    state.directory.unfreeze_wallet(caller.resident.id, &body.password, &from).await?;
    Ok(AppJson(FreezeView { frozen: false }))
}

/// A payment device, as its owner sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceInfoView {
    /// The slot inside its codes.
    device: u32,
    /// Unix seconds.
    created_at: u64,
    /// When it was revoked (Unix seconds); its codes never pay again.
    revoked_at: Option<u64>,
    /// Wrong codes naming it this hour, from any shop: more than a few means someone guesses.
    wrong_codes_this_hour: i64,
    /// While too many wrong codes named it this hour, when its codes work again (Unix seconds).
    cooling_down_until: Option<u64>,
}

impl From<DeviceInfo> for DeviceInfoView {
    fn from(d: DeviceInfo) -> DeviceInfoView {
        DeviceInfoView {
            device: d.slot,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
            wrong_codes_this_hour: d.wrong_codes_this_hour,
            cooling_down_until: d.cooling_down_until,
        }
    }
}

/// The caller's payment devices, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DevicesView {
    devices: Vec<DeviceInfoView>,
}

/// The caller's payment devices, revoked ones included.
#[utoipa::path(get, path = "/v1/payment-devices", security(("resident" = [])), tag = "wallet", responses((status = OK, body = DevicesView)))]
pub(crate) async fn devices(State(state): State<AppState>, caller: ResidentSession) -> Result<AppJson<DevicesView>, ApiError> {
    let devices = state.checkout.devices(&caller.resident).await?;
    Ok(AppJson(DevicesView { devices: devices.into_iter().map(DeviceInfoView::from).collect() }))
}

/// Revokes one of the caller's payment devices (a lost phone): its codes never pay again.
#[utoipa::path(delete, path = "/v1/payment-devices/{device}", security(("resident" = [])), tag = "wallet", params(("device" = u32, Path)),
    responses((status = OK, body = DeviceInfoView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn revoke_device(State(state): State<AppState>, caller: ResidentSession, Path(device): Path<u32>) -> Result<AppJson<DeviceInfoView>, ApiError> {
    Ok(AppJson(state.checkout.revoke_device(&caller.resident, device).await?.into()))
}
