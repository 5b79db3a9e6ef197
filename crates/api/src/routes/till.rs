//! The merchant's till: cashiers sign in with the credential the merchant made for them (never
//! the merchant's API secret), ring up a sale and show its QR, charge a customer's payment
//! code, record a cash sale, list their shift's trades, and refund: a plain cashier up to the
//! limit the merchant set, a manager any amount (and only a manager downloads the settlement
//! file). Every trade and refund made here keeps the cashier's number. The order numbers come
//! from the till (each till numbers its own orders), so a retried call is answered as the first.
//!
//! The merchant manages the credentials with its API key (`/v1/cashiers`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citypay_api_types::{ErrorBody, Money};
use citypay_directory::{Cashier, SignInFrom, TillRole};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{CashierCaller, ClientAddress, MerchantCaller};
use super::bills::{csv, date};
use super::cookie_sessions::signed_in_with_cookie;
use super::residents::{cny, money};
use super::trades::{CodePaymentRequest, CreatedTrade, RefundRequest, RefundView, TradeRequest, TradeView};
use crate::{ApiError, AppJson};

/// Most trades a shift lists.
const SHIFT_TRADES_MAX: u32 = 500;

/// A cashier's credential, as the merchant and the cashier see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CashierView {
    /// The 8-digit number the cashier signs in with.
    cashier_number: u64,
    name: String,
    /// `cashier` or `manager`.
    role: String,
    /// The largest refund a plain cashier may make (managers: no limit).
    refund_limit: Money,
    /// Unix seconds.
    created_at: u64,
    disabled: bool,
}

impl From<&Cashier> for CashierView {
    fn from(c: &Cashier) -> CashierView {
        CashierView {
            cashier_number: c.id,
            name: c.name.clone(),
            role: c.role.code().to_owned(),
            refund_limit: money(c.refund_limit),
            created_at: c.created_at,
            disabled: c.disabled,
        }
    }
}

/// A new cashier credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCashier {
    /// The cashier's name (1 to 64 characters).
    name: String,
    /// `cashier` (the default) or `manager`.
    role: Option<String>,
    /// The largest refund they may make at a time at the till (none when absent or zero;
    /// managers have no limit).
    refund_limit: Option<Money>,
    /// Their password (at least 8 characters), which the merchant hands them.
    password: String,
}

/// A refund limit: zero or more yuan in fen.
fn refund_limit(limit: Option<&Money>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(0),
        Some(limit) if limit.amount == 0 && limit.currency == "CNY" => Ok(0),
        Some(limit) => cny(limit),
    }
}

fn till_role(code: Option<&str>) -> Result<TillRole, ApiError> {
    match code {
        None => Ok(TillRole::Cashier),
        Some(code) => TillRole::from_code(code).ok_or_else(|| ApiError::bad_request("invalid_field", "role: cashier or manager")),
    }
}

/// Makes a till credential for one of the merchant's cashiers.
#[utoipa::path(post, path = "/v1/cashiers", security(("merchant" = [])), tag = "till", request_body = NewCashier,
    responses((status = CREATED, body = CashierView), (status = BAD_REQUEST, body = ErrorBody)))]
pub(crate) async fn create_cashier(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, AppJson(body): AppJson<NewCashier>) -> Result<Response, ApiError> {
    let role = till_role(body.role.as_deref())?;
    let cashier = state.directory.create_cashier(merchant, &body.name, role, refund_limit(body.refund_limit.as_ref())?, &body.password).await?;
    Ok((StatusCode::CREATED, AppJson(CashierView::from(&cashier))).into_response())
}

/// The merchant's cashiers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CashiersView {
    cashiers: Vec<CashierView>,
}

/// The merchant's till credentials, oldest first.
#[utoipa::path(get, path = "/v1/cashiers", security(("merchant" = [])), tag = "till", responses((status = OK, body = CashiersView)))]
pub(crate) async fn cashiers(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller) -> Result<AppJson<CashiersView>, ApiError> {
    let cashiers = state.directory.cashiers(merchant).await?;
    Ok(AppJson(CashiersView { cashiers: cashiers.iter().map(CashierView::from).collect() }))
}

/// A change to a cashier's credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CashierChange {
    refund_limit: Option<Money>,
    /// Disabling ends the cashier's sessions at once; they cannot sign in until enabled.
    disabled: Option<bool>,
}

/// Changes a cashier's refund limit, or disables or enables their credential.
#[utoipa::path(patch, path = "/v1/cashiers/{cashier_number}", security(("merchant" = [])), tag = "till", params(("cashier_number" = u64, Path)),
    request_body = CashierChange, responses((status = OK, body = CashierView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn update_cashier(
    State(state): State<AppState>,
    MerchantCaller(merchant): MerchantCaller,
    Path(cashier_number): Path<u64>,
    AppJson(body): AppJson<CashierChange>,
) -> Result<AppJson<CashierView>, ApiError> {
    let limit = body.refund_limit.as_ref().map(|limit| refund_limit(Some(limit))).transpose()?;
    let cashier = state.directory.update_cashier(merchant, cashier_number, limit, body.disabled).await?;
    Ok(AppJson(CashierView::from(&cashier)))
}

/// A cashier's sign-in at the till.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TillSignIn {
    /// The 8-digit cashier number.
    cashier_number: String,
    password: String,
    /// This till's ticket from its last sign-in of this cashier, as for residents.
    client_ticket: Option<String>,
}

/// Signs a cashier in at the till: the token goes in the `__Host-citypay_session` cookie, as
/// for the resident's app, under the same sign-in limits.
#[utoipa::path(post, path = "/v1/till/sessions", security(()), tag = "till", request_body = TillSignIn,
    responses((status = OK, body = super::cookie_sessions::CookieSession), (status = UNAUTHORIZED, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn sign_in(State(state): State<AppState>, ClientAddress(address): ClientAddress, AppJson(body): AppJson<TillSignIn>) -> Result<Response, ApiError> {
    let from = SignInFrom { address, ticket: body.client_ticket };
    let (_, signed_in) = state.directory.sign_in_cashier(&body.cashier_number, &body.password, state.token_ttl_s, &from).await?;
    signed_in_with_cookie(&state, signed_in)
}

/// Who is at the till.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TillView {
    cashier: CashierView,
    merchant_name: String,
}

/// The signed-in cashier and their shop.
#[utoipa::path(get, path = "/v1/till/me", security(("cashier" = [])), tag = "till", responses((status = OK, body = TillView), (status = UNAUTHORIZED, body = ErrorBody)))]
pub(crate) async fn me(State(state): State<AppState>, caller: CashierCaller) -> Result<AppJson<TillView>, ApiError> {
    let merchant = state.directory.merchant(caller.cashier.merchant).await?;
    Ok(AppJson(TillView { cashier: CashierView::from(&caller.cashier), merchant_name: merchant.name }))
}

/// Rings up a sale: a trade waiting for payment, with the dynamic QR the customer scans.
#[utoipa::path(post, path = "/v1/till/trades", security(("cashier" = [])), tag = "till", request_body = TradeRequest,
    responses((status = CREATED, body = CreatedTrade), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn create(State(state): State<AppState>, caller: CashierCaller, AppJson(body): AppJson<TradeRequest>) -> Result<Response, ApiError> {
    let new = citypay_checkout::NewTrade { cashier: Some(caller.cashier.id), ..body.new_trade()? };
    let (trade, qr_payload) = state.checkout.create_trade(caller.cashier.merchant, &new).await?;
    Ok((StatusCode::CREATED, AppJson(CreatedTrade { trade: TradeView::from(&trade), qr_payload })).into_response())
}

/// Charges the payment code the customer shows (scanned or typed).
#[utoipa::path(post, path = "/v1/till/code-payments", security(("cashier" = [])), tag = "till", request_body = CodePaymentRequest,
    responses((status = OK, body = TradeView), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn pay_with_code(State(state): State<AppState>, caller: CashierCaller, AppJson(body): AppJson<CodePaymentRequest>) -> Result<AppJson<TradeView>, ApiError> {
    let new = citypay_checkout::NewTrade {
        out_trade_no: body.out_trade_no,
        amount: cny(&body.amount)?,
        subject: body.subject,
        timeout_s: None,
        notify: None,
        cashier: Some(caller.cashier.id),
    };
    let trade = super::trades::pay_with_code_in_country(&state, caller.cashier.merchant, &new, &body.auth_code).await?;
    Ok(AppJson(TradeView::from(&trade)))
}

/// Records a sale paid in cash.
#[utoipa::path(post, path = "/v1/till/cash-sales", security(("cashier" = [])), tag = "till", request_body = TradeRequest,
    responses((status = CREATED, body = TradeView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn cash_sale(State(state): State<AppState>, caller: CashierCaller, AppJson(body): AppJson<TradeRequest>) -> Result<Response, ApiError> {
    let new = citypay_checkout::NewTrade { cashier: Some(caller.cashier.id), ..body.new_trade()? };
    let trade = state.checkout.record_cash_sale(caller.cashier.merchant, &new).await?;
    Ok((StatusCode::CREATED, AppJson(TradeView::from(&trade))).into_response())
}

/// A trade of the shop (to watch a sale get paid, or to find one to refund).
#[utoipa::path(get, path = "/v1/till/trades/{out_trade_no}", security(("cashier" = [])), tag = "till", params(("out_trade_no" = String, Path)),
    responses((status = OK, body = TradeView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn get(State(state): State<AppState>, caller: CashierCaller, Path(out_trade_no): Path<String>) -> Result<AppJson<TradeView>, ApiError> {
    let trade = state.checkout.trade(caller.cashier.merchant, &out_trade_no).await?;
    Ok(AppJson(TradeView::from(&trade)))
}

/// Which day's shift.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShiftQuery {
    /// `YYYY-MM-DD` (the city's time); today when absent.
    date: Option<String>,
}

/// A cashier's shift: their trades of one day and what they took.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ShiftView {
    date: String,
    /// Newest first (at most 500).
    trades: Vec<TradeView>,
    /// Paid by QR or payment code, less refunds.
    taken_electronically: Money,
    /// Taken in cash, less refunds.
    taken_in_cash: Money,
}

/// The signed-in cashier's trades of a day (today unless `date` is given).
#[utoipa::path(get, path = "/v1/till/shift", security(("cashier" = [])), tag = "till", params(ShiftQuery),
    responses((status = OK, body = ShiftView), (status = BAD_REQUEST, body = ErrorBody)))]
pub(crate) async fn shift(State(state): State<AppState>, caller: CashierCaller, Query(query): Query<ShiftQuery>) -> Result<AppJson<ShiftView>, ApiError> {
    let day = match query.date.as_deref() {
        Some(text) => date(text)?,
        None => state.directory.clock().now().local_date(),
    };
    let (from, to) = (day.start().unix_seconds(), day.next().start().unix_seconds());
    let trades = state.checkout.cashier_trades(caller.cashier.merchant, caller.cashier.id, from, to, SHIFT_TRADES_MAX).await?;
    let (mut electronic, mut cash) = (0i64, 0i64);
    for trade in trades.iter().filter(|t| t.paid_at.is_some()) {
        let kept = trade.amount - trade.refunded;
        if trade.method == citypay_checkout::Method::Cash { cash += kept } else { electronic += kept }
    }
    Ok(AppJson(ShiftView {
        date: day.to_string(),
        trades: trades.iter().map(TradeView::from).collect(),
        taken_electronically: money(electronic),
        taken_in_cash: money(cash),
    }))
}

/// Refunds part or all of a trade of the shop, as `POST /v1/trades/{out_trade_no}/refunds`
/// does, keeping the cashier's number. A plain cashier may refund at most their limit at a
/// time (403 `refund_over_limit`: a manager does the rest).
#[utoipa::path(post, path = "/v1/till/trades/{out_trade_no}/refunds", security(("cashier" = [])), tag = "till", params(("out_trade_no" = String, Path)),
    request_body = RefundRequest, responses((status = OK, body = RefundView), (status = FORBIDDEN, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn refund(State(state): State<AppState>, caller: CashierCaller, Path(out_trade_no): Path<String>, AppJson(body): AppJson<RefundRequest>) -> Result<AppJson<RefundView>, ApiError> {
    let amount = cny(&body.amount)?;
    let cashier = &caller.cashier;
    if cashier.role == TillRole::Cashier && amount > cashier.refund_limit {
        // A repeat of a refund a manager made is answered as it was, never refused here.
        let merchant = cashier.merchant;
        if let Ok(answer) = state.checkout.refund_query(merchant, &out_trade_no, &body.out_request_no).await {
            return Ok(AppJson(RefundView::from(&answer)));
        }
        let limit = citypay_gateway::money::yuan(cashier.refund_limit);
        return Err(ApiError::new(StatusCode::FORBIDDEN, "refund_over_limit", format!("a cashier refunds at most {limit} yuan at a time; a manager can refund more")));
    }
    let answer = state.checkout.refund_by(cashier.merchant, &out_trade_no, &body.out_request_no, amount, Some(cashier.id)).await?;
    Ok(AppJson(RefundView::from(&answer)))
}

/// The shop's settlement file of a day (managers only), as `GET /v1/settlement-files/{date}`.
#[utoipa::path(get, path = "/v1/till/settlement-files/{date}", security(("cashier" = [])), tag = "till", params(("date" = String, Path, description = "YYYY-MM-DD")),
    responses((status = OK, content_type = "text/csv", body = String), (status = FORBIDDEN, body = ErrorBody)))]
pub(crate) async fn settlement_file(State(state): State<AppState>, caller: CashierCaller, Path(day): Path<String>) -> Result<Response, ApiError> {
    if caller.cashier.role != TillRole::Manager {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "managers_only", "only a manager downloads the settlement file"));
    }
    Ok(csv(state.settlement.file(caller.cashier.merchant, date(&day)?).await?.to_csv()))
}
