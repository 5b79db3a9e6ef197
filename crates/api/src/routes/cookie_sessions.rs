//! Sessions for the pages this server serves (the resident's app, the till): the same sign-in,
//! limits and session row as a bearer token, with the token in an `HttpOnly` cookie the pages'
//! scripts never see (see [`super::auth`] for how it is checked).

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use citypay_api_types::ErrorBody;
use citypay_directory::{SignInFrom, SignedIn};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{ClientAddress, SESSION_COOKIE, SessionCaller};
use super::residents::SignInRequest;
use crate::{ApiError, AppJson};

/// A session whose token is in the `__Host-citypay_session` cookie.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CookieSession {
    /// The session (listed under `/v1/my/sessions`).
    pub(crate) session_id: String,
    /// Seconds until it expires.
    pub(crate) expires_in: u64,
    /// Send it with this account's next sign-ins from this client (valid 90 days).
    pub(crate) client_ticket: String,
    /// The server's clock at sign-in (Unix milliseconds): payment codes are computed on the
    /// phone for a window of a minute or two, so the page corrects for the phone's clock.
    pub(crate) server_time_ms: u64,
}

/// The `Set-Cookie` that keeps `token` for `ttl_s` seconds: HTTPS only, never readable by
/// scripts, never sent with a request another site starts.
pub(crate) fn session_cookie(token: &str, ttl_s: u64) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; Max-Age={ttl_s}; Secure; HttpOnly; SameSite=Strict")
}

/// The answer to a sign-in that keeps its token in the cookie.
pub(crate) fn signed_in_with_cookie(state: &AppState, signed_in: SignedIn) -> Result<Response, ApiError> {
    let cookie = HeaderValue::from_str(&session_cookie(signed_in.token.expose(), state.token_ttl_s)).map_err(|e| ApiError::internal(&e))?;
    let now_ms = state.directory.clock().now().0 / 1_000_000;
    let view = CookieSession { session_id: signed_in.session, expires_in: state.token_ttl_s, client_ticket: signed_in.ticket.expose().clone(), server_time_ms: now_ms };
    let mut response = AppJson(view).into_response();
    response.headers_mut().insert(SET_COOKIE, cookie);
    Ok(response)
}

/// Signs a resident in for this server's pages: as `POST /v1/sessions`, under the same limits,
/// with the token set in the `__Host-citypay_session` cookie instead of the answer.
#[utoipa::path(post, path = "/v1/cookie-sessions", security(()), tag = "residents", request_body = SignInRequest,
    responses((status = OK, body = CookieSession), (status = UNAUTHORIZED, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn sign_in(State(state): State<AppState>, ClientAddress(address): ClientAddress, AppJson(body): AppJson<SignInRequest>) -> Result<Response, ApiError> {
    let from = SignInFrom { address, ticket: body.client_ticket };
    let (_, signed_in) = state.directory.sign_in_resident(&body.mobile, &body.password, state.token_ttl_s, &from).await?;
    signed_in_with_cookie(&state, signed_in)
}

/// Signs out: ends the session of this call (cookie or bearer token) and clears the cookie.
#[utoipa::path(delete, path = "/v1/cookie-sessions/current", tag = "residents", security(("resident" = [])),
    responses((status = NO_CONTENT), (status = UNAUTHORIZED, body = ErrorBody)))]
pub(crate) async fn sign_out(State(state): State<AppState>, caller: SessionCaller) -> Result<Response, ApiError> {
    state.directory.end_session(caller.principal, &caller.session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(SET_COOKIE, HeaderValue::from_str(&session_cookie("", 0)).map_err(|e| ApiError::internal(&e))?);
    Ok(response)
}
