//! Who is calling. Residents and operators send `Authorization: Bearer <token>` (from sign-in);
//! merchants send `Authorization: ApiKey <key id>:<secret>`. The resident's app and the till
//! (pages served here) send the same token in the `__Host-citypay_session` cookie instead
//! (`HttpOnly`, `Secure`, `SameSite=Strict`), and every mutating call with it must carry an
//! `Origin` that is this server's own: another site can neither read the token nor spend it.
//! A cookie and a bearer token are the same signed token over the same session row, so ending
//! the session ends either. `ApiKey` routes read only the `Authorization` header: a cookie
//! never speaks for a merchant. Neither header nor cookie is ever logged.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
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

/// The cookie that carries a browser page's session token.
pub const SESSION_COOKIE: &str = "__Host-citypay_session";

/// The value of the cookie `name`, if the request carries it.
pub(crate) fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// A call made with the session cookie changes nothing unless the browser says it comes from
/// a page of this server: its `Origin` names the host the call was sent to. Browsers send
/// `Origin` on every call that is not a GET or HEAD, so its absence there means no browser
/// page of ours made it.
fn check_origin(parts: &Parts) -> Result<(), ApiError> {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refused = || ApiError::new(axum::http::StatusCode::FORBIDDEN, "origin_refused", "a call with the session cookie must come from this server's own pages (Origin)");
    let origin = parts.headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok()).ok_or_else(refused)?;
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()))
        .ok_or_else(refused)?;
    let own = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")).is_some_and(|rest| rest.eq_ignore_ascii_case(host));
    if own { Ok(()) } else { Err(refused()) }
}

/// The token the caller presents: the `Authorization: Bearer` header, or else the session
/// cookie (with its `Origin` checked).
fn presented_token(parts: &Parts) -> Result<&str, ApiError> {
    if parts.headers.contains_key(AUTHORIZATION) {
        return credentials(parts, "Bearer");
    }
    match cookie(&parts.headers, SESSION_COOKIE) {
        Some(token) => {
            check_origin(parts)?;
            Ok(token)
        }
        None => Err(ApiError::unauthorized("this call needs an Authorization header or a session cookie")),
    }
}

/// The principal and session of the caller's token (genuine, current, not ended).
async fn principal(parts: &Parts, state: &AppState) -> Result<(Principal, String), ApiError> {
    let token = presented_token(parts)?;
    state.directory.authenticate_token(token).await?.ok_or_else(|| ApiError::unauthorized("the token is invalid, expired or ended"))
}

/// Any signed-in caller (resident, operator, cashier) and the session of their token.
#[derive(Clone, Debug)]
pub struct SessionCaller {
    /// Who.
    pub principal: Principal,
    /// The session.
    pub session: String,
}

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (principal, session) = principal(parts, state).await?;
        Ok(SessionCaller { principal, session })
    }
}

/// A signed-in resident and the session their token belongs to.
#[derive(Clone, Debug)]
pub struct ResidentSession {
    /// The resident.
    pub resident: Resident,
    /// The session of the token they called with.
    pub session: String,
}

impl FromRequestParts<AppState> for ResidentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state).await? {
            (Principal::Resident { id, .. }, session) => {
                let resident = state.directory.resident(id).await.map_err(|e| match e {
                    DirectoryError::NotFound => ApiError::unauthorized("unknown resident"),
                    // Storage trouble is not the caller's fault: 503 or 500, never "sign in again".
                    other => ApiError::from(other),
                })?;
                Ok(ResidentSession { resident, session })
            }
            (Principal::Operator { .. } | Principal::Cashier { .. }, _) => Err(ApiError::forbidden("residents only")),
        }
    }
}

impl FromRequestParts<AppState> for ResidentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        ResidentSession::from_request_parts(parts, state).await.map(|caller| ResidentCaller(caller.resident))
    }
}

impl FromRequestParts<AppState> for OperatorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state).await?.0 {
            Principal::Operator { id, role, city } => Ok(OperatorCaller { id, role, city }),
            Principal::Resident { .. } | Principal::Cashier { .. } => Err(ApiError::forbidden("operators only")),
        }
    }
}

/// A signed-in cashier as their record reads now (role, refund limit), and their session. A
/// cashier the merchant disabled is refused even before their sessions are ended.
#[derive(Clone, Debug)]
pub struct CashierCaller {
    /// The cashier.
    pub cashier: citypay_directory::Cashier,
    /// The session of the token they called with.
    pub session: String,
}

impl FromRequestParts<AppState> for CashierCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (Principal::Cashier { id, merchant }, session) = principal(parts, state).await? else {
            return Err(ApiError::forbidden("cashiers only"));
        };
        let cashier = match state.directory.cashier(id).await {
            Ok(cashier) if cashier.merchant == merchant && !cashier.disabled => cashier,
            Ok(_) | Err(DirectoryError::NotFound) => return Err(ApiError::unauthorized("this cashier's credential was disabled")),
            Err(other) => return Err(ApiError::from(other)),
        };
        Ok(CashierCaller { cashier, session })
    }
}

/// The proxies whose `X-Forwarded-For` the server believes (`citypay serve --trusted-proxy`),
/// set on the router as an extension; without it, or from any other peer, the header is
/// ignored and the peer's own address counts.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// From a comma-separated list of addresses and networks (`10.0.0.0/8,192.0.2.1`).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let nets = list.split(',').map(str::trim).filter(|item| !item.is_empty()).map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or network"))
        });
        nets.collect::<Result<_, _>>().map(TrustedProxies)
    }

    /// The layer that hands this list to every request (`router.layer(proxies.extension())`).
    pub fn extension(self) -> axum::Extension<TrustedProxies> {
        axum::Extension(self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }
}

/// The client's address as far as the server can trust it: the peer's, or, when the peer is
/// a trusted proxy, the nearest address in `X-Forwarded-For` that is not one of the trusted
/// proxies (addresses further left were written by the client and prove nothing).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()) else { return Ok(ClientAddress(None)) };
        let Some(proxies) = parts.extensions.get::<TrustedProxies>().filter(|p| p.trusts(peer)) else { return Ok(ClientAddress(Some(peer))) };
        let mut client = peer;
        let hops = parts.headers.get_all("x-forwarded-for").iter().flat_map(|v| v.to_str().unwrap_or("").split(',')).map(str::trim).collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else { break };
            client = address;
            if !proxies.trusts(address) {
                break;
            }
        }
        Ok(ClientAddress(Some(client)))
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
