//! The city dashboard, live: the same page as a simulation's report, for one local day, read
//! from the database at each request and reloading itself. Platform operators see every city,
//! a city operator only theirs. The page signs in with a form and keeps the operator's token in
//! an `HttpOnly`, `SameSite=Strict` cookie scoped to `/dashboard`; `/v1/city-stats` gives the
//! same numbers as JSON to a `Bearer` token.

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use citypay_dashboard::dates::{format_date, local_date, local_midnight, parse_date};
use citypay_dashboard::{Report, ReportDay, escape};
use citypay_directory::{Principal, Role};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::{ClientAddress, OperatorCaller};
use crate::{ApiError, AppJson};

const COOKIE_NAME: &str = "citypay_dashboard";
/// Seconds between the live page's reloads.
const REFRESH_S: u32 = 10;

/// Which day to show.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DayQuery {
    /// Local (Asia/Shanghai) date, `YYYY-MM-DD`; default today.
    date: Option<String>,
}

/// Sign-in form fields.
#[derive(Debug, Deserialize)]
pub(crate) struct SignInForm {
    username: String,
    password: String,
}

/// The dashboard's pages, bound to `state` (HTML, so not in the OpenAPI document).
pub fn dashboard_pages(state: AppState) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/sign-in", get(sign_in_page).post(sign_in))
        .route("/dashboard/sign-out", axum::routing::post(sign_out))
        .with_state(state)
}

/// `(start, end, date)` of a local day: `YYYY-MM-DD`, or the day of `now`.
fn day_window(date: Option<&str>, now_unix: u64) -> Result<(u64, u64, String), ApiError> {
    let day = match date {
        Some(text) => parse_date(text).ok_or_else(|| ApiError::bad_request("invalid_field", "date: YYYY-MM-DD"))?,
        None => local_date(now_unix),
    };
    let start = local_midnight(day.0, day.1, day.2);
    Ok((start, start + 86_400, format_date(day)))
}

/// The report of one day for an operator: every city, or a city operator's own.
async fn report_for(state: &AppState, role: Role, city: Option<u32>, date: Option<&str>) -> Result<Report, ApiError> {
    let (from, to, date) = day_window(date, state.directory.clock().now().unix_seconds())?;
    let only = match role {
        Role::PlatformOperator => None,
        Role::CityOperator => Some(city.ok_or_else(|| ApiError::forbidden("a city operator without a city"))?),
    };
    // A country's view reads every shard: each city lives on one, so their cities add up.
    let mut cities = Vec::new();
    let shards = state.country.get().map_or_else(|| vec![state.directory.clone()], citypay_country::Country::directories);
    for directory in &shards {
        cities.extend(citypay_dashboard::collect(directory, from, to, only).await?);
    }
    cities.sort_by_key(|city| city.city_code);
    Ok(Report {
        title: "citypay: how the cities pay".into(),
        subtitle: format!("Live, {date} (Asia/Shanghai); reloads every {REFRESH_S} s"),
        days: vec![ReportDay { date, cities }],
        refresh_s: Some(REFRESH_S),
        ..Report::default()
    })
}

/// The statistics of one local day, per city: payments by category and method, refunds,
/// real-name residents, active payers, merchants. Operators only; a city operator gets their
/// city.
#[utoipa::path(get, path = "/v1/city-stats", security(("operator" = [])), tag = "operators", params(DayQuery),
    responses((status = OK, body = Object), (status = UNAUTHORIZED, body = citypay_api_types::ErrorBody)))]
pub(crate) async fn city_stats(
    State(state): State<AppState>,
    operator: OperatorCaller,
    Query(query): Query<DayQuery>,
) -> Result<AppJson<Report>, ApiError> {
    Ok(AppJson(report_for(&state, operator.role, operator.city, query.date.as_deref()).await?))
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    super::auth::cookie(headers, COOKIE_NAME)
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response()
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, HeaderValue::from_static(to))]).into_response();
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

async fn page(State(state): State<AppState>, headers: HeaderMap, Query(query): Query<DayQuery>) -> Result<Response, ApiError> {
    let principal = match session_cookie(&headers) {
        Some(token) => state.directory.authenticate_token(token).await?.map(|(principal, _)| principal),
        None => None,
    };
    let Some(Principal::Operator { role, city, .. }) = principal else {
        return Ok(redirect("/dashboard/sign-in", None));
    };
    let report = report_for(&state, role, city, query.date.as_deref()).await?;
    let mut response = html(StatusCode::OK, citypay_dashboard::render(&report));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn sign_in_form(message: Option<&str>) -> String {
    let message = message.map(|m| format!("<p class=\"error\">{}</p>", escape(m))).unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>citypay dashboard: sign in</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:48px}}form{{display:grid;gap:8px;max-width:280px}}.error{{color:#cf1322}}</style>\
         </head><body><h1>City dashboard</h1>{message}<form method=\"post\" action=\"/dashboard/sign-in\">\
         <label>Operator <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form></body></html>"
    )
}

async fn sign_in_page() -> Response {
    html(StatusCode::OK, sign_in_form(None))
}

async fn sign_in(State(state): State<AppState>, ClientAddress(address): ClientAddress, Form(form): Form<SignInForm>) -> Response {
    let from = citypay_directory::SignInFrom { address, ticket: None };
    match state.directory.sign_in_operator(&form.username, &form.password, state.token_ttl_s, &from).await {
        Ok((_, signed_in)) => {
            let token = signed_in.token.expose();
            let cookie = format!("{COOKIE_NAME}={token}; Path=/dashboard; Max-Age={}; HttpOnly; SameSite=Strict", state.token_ttl_s);
            redirect("/dashboard", Some(cookie))
        }
        Err(citypay_directory::DirectoryError::WrongCredentials) => {
            html(StatusCode::UNAUTHORIZED, sign_in_form(Some("Wrong operator name or password.")))
        }
        Err(other) => axum::response::IntoResponse::into_response(ApiError::from(other)),
    }
}

/// Ends the cookie's session, not only the cookie.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = session_cookie(&headers)
        && let Ok(Some((principal, session))) = state.directory.authenticate_token(token).await
        && let Err(error) = state.directory.end_session(principal, &session).await
    {
        tracing::warn!(%error, "ending a dashboard session failed");
    }
    redirect("/dashboard/sign-in", Some(format!("{COOKIE_NAME}=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_a_local_day() {
        assert_eq!(day_window(Some("2017-08-01"), 0).unwrap(), (1_501_516_800, 1_501_603_200, "2017-08-01".into()));
        assert_eq!(day_window(None, 1_501_531_200).unwrap().2, "2017-08-01");
        assert!(day_window(Some("2017-13-01"), 0).is_err());
        assert!(day_window(Some("yesterday"), 0).is_err());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        use axum::http::header::COOKIE;
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; citypay_dashboard=tok.en; b=2"));
        assert_eq!(session_cookie(&headers), Some("tok.en"));
        headers.insert(COOKIE, HeaderValue::from_static("citypay_dashboardx=1"));
        assert_eq!(session_cookie(&headers), None);
    }
}
