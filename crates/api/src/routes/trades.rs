//! Merchants' trades: create (with its QR), query, charge a payment code, refund, close,
//! cancel, record cash. Trades are keyed by the merchant's `out_trade_no`, refunds by their
//! `out_request_no`; both are the idempotency keys of these calls.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citypay_api_types::{ErrorBody, Money};
use citypay_checkout::{NewTrade, RefundAnswer, Trade};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::MerchantCaller;
use super::residents::{cny, money};
use super::AppState;
use crate::{ApiError, AppJson};

/// A trade as merchants see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TradeView {
    /// citypay's trade number.
    trade_no: String,
    /// The merchant's order number.
    out_trade_no: String,
    /// WAIT_BUYER_PAY, TRADE_SUCCESS, TRADE_CLOSED or TRADE_FINISHED.
    status: String,
    /// qr, payment_code or cash.
    method: String,
    amount: Money,
    refunded: Money,
    subject: String,
    /// Unix seconds.
    created_at: u64,
    /// Unix seconds; absent until paid.
    paid_at: Option<u64>,
    /// The cashier who rang it up at the till; absent for trades made through the API.
    cashier_number: Option<u64>,
}

impl From<&Trade> for TradeView {
    fn from(t: &Trade) -> TradeView {
        TradeView {
            trade_no: t.id.to_string(),
            out_trade_no: t.out_trade_no.clone(),
            status: t.status.code().to_owned(),
            method: t.method.code().to_owned(),
            amount: money(t.amount),
            refunded: money(t.refunded),
            subject: t.subject.clone(),
            created_at: t.created_at,
            paid_at: t.paid_at,
            cashier_number: t.cashier,
        }
    }
}

/// A new trade.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TradeRequest {
    /// Unique per merchant: 1 to 64 letters, digits or `_`.
    pub(crate) out_trade_no: String,
    pub(crate) amount: Money,
    pub(crate) subject: String,
    /// Seconds until an unpaid trade closes itself (default 900).
    pub(crate) timeout_s: Option<u64>,
}

impl TradeRequest {
    pub(crate) fn new_trade(&self) -> Result<NewTrade, ApiError> {
        Ok(NewTrade {
            out_trade_no: self.out_trade_no.clone(),
            amount: cny(&self.amount)?,
            subject: self.subject.clone(),
            timeout_s: self.timeout_s,
            notify: None,
            cashier: None,
        })
    }
}

/// A created trade and its dynamic QR payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CreatedTrade {
    pub(crate) trade: TradeView,
    /// EMVCo merchant-presented payload to render as a QR code.
    pub(crate) qr_payload: String,
}

/// Creates a trade waiting for payment, with its QR payload.
#[utoipa::path(post, path = "/v1/trades", security(("merchant" = [])), tag = "trades", request_body = TradeRequest,
    responses((status = CREATED, body = CreatedTrade), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn create(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, AppJson(body): AppJson<TradeRequest>) -> Result<Response, ApiError> {
    let (trade, qr_payload) = state.checkout.create_trade(merchant, &body.new_trade()?).await?;
    Ok((StatusCode::CREATED, AppJson(CreatedTrade { trade: TradeView::from(&trade), qr_payload })).into_response())
}

/// A trade of the calling merchant.
#[utoipa::path(get, path = "/v1/trades/{out_trade_no}", security(("merchant" = [])), tag = "trades", params(("out_trade_no" = String, Path)),
    responses((status = OK, body = TradeView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn get(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path(out_trade_no): Path<String>) -> Result<AppJson<TradeView>, ApiError> {
    let trade = state.checkout.trade(merchant, &out_trade_no).await?;
    Ok(AppJson(TradeView::from(&trade)))
}

/// A trade charged to a customer's payment code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodePaymentRequest {
    pub(crate) out_trade_no: String,
    pub(crate) amount: Money,
    pub(crate) subject: String,
    /// The 18-digit code the customer shows.
    pub(crate) auth_code: String,
}

/// Charges a customer's payment code at the till (the merchant scans it).
#[utoipa::path(post, path = "/v1/trades/pay", security(("merchant" = [])), tag = "trades", request_body = CodePaymentRequest,
    responses((status = OK, body = TradeView), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn pay_with_code(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, AppJson(body): AppJson<CodePaymentRequest>) -> Result<AppJson<TradeView>, ApiError> {
    let new = NewTrade { out_trade_no: body.out_trade_no, amount: cny(&body.amount)?, subject: body.subject, timeout_s: None, notify: None, cashier: None };
    let trade = pay_with_code_in_country(&state, merchant, &new, &body.auth_code).await?;
    Ok(AppJson(TradeView::from(&trade)))
}

/// A refund of part or all of a trade.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundRequest {
    /// Unique per trade: the refund's idempotency key.
    pub(crate) out_request_no: String,
    pub(crate) amount: Money,
}

/// One refund's record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RefundRecordView {
    out_request_no: String,
    /// This refund's amount.
    amount: Money,
    /// REFUND_SUCCESS; REFUND_PROCESSING while it crosses to the payer's wallet on another
    /// city's shard; REFUND_FAILED when that shard did not take it (the money is back with the
    /// merchant).
    status: String,
    /// Unix seconds.
    created_at: u64,
    /// The cashier who made it at the till; absent for refunds made through the API.
    cashier_number: Option<u64>,
}

/// A refund and its trade as it is now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RefundView {
    refund: RefundRecordView,
    /// The trade now; its `refunded` is the total refunded so far.
    trade: TradeView,
    /// True only for the call that made the refund; a repeat of the same `out_request_no`
    /// and a query answer false (Alipay's `fund_change`: `N`).
    fund_change: bool,
}

impl From<&RefundAnswer> for RefundView {
    fn from(a: &RefundAnswer) -> RefundView {
        RefundView {
            refund: RefundRecordView {
                out_request_no: a.refund.out_request_no.clone(),
                amount: money(a.refund.amount),
                status: a.refund.status.code().to_owned(),
                created_at: a.refund.created_at,
                cashier_number: a.refund.cashier,
            },
            trade: TradeView::from(&a.trade),
            fund_change: a.fund_change,
        }
    }
}

/// Refunds part or all of a paid trade within its refund period; never more than was paid.
/// The same `out_request_no` again answers the first refund with `fund_change` false; with
/// another amount it is refused (`out_request_no_reused`). A cash sale's refund is recorded
/// (the cash goes back over the counter). After the refund period: 409 `trade_finished`.
#[utoipa::path(post, path = "/v1/trades/{out_trade_no}/refunds", security(("merchant" = [])), tag = "trades", params(("out_trade_no" = String, Path)), request_body = RefundRequest,
    responses((status = OK, body = RefundView), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn refund(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path(out_trade_no): Path<String>, AppJson(body): AppJson<RefundRequest>) -> Result<AppJson<RefundView>, ApiError> {
    let answer = state.checkout.refund(merchant, &out_trade_no, &body.out_request_no, cny(&body.amount)?).await?;
    Ok(AppJson(RefundView::from(&answer)))
}

/// One refund of a trade of the calling merchant, with the trade as it is now.
#[utoipa::path(get, path = "/v1/trades/{out_trade_no}/refunds/{out_request_no}", security(("merchant" = [])), tag = "trades",
    params(("out_trade_no" = String, Path), ("out_request_no" = String, Path)),
    responses((status = OK, body = RefundView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn get_refund(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path((out_trade_no, out_request_no)): Path<(String, String)>) -> Result<AppJson<RefundView>, ApiError> {
    let answer = state.checkout.refund_query(merchant, &out_trade_no, &out_request_no).await?;
    Ok(AppJson(RefundView::from(&answer)))
}

/// How long the merchant's trades can be refunded after payment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundPeriod {
    /// Seconds from payment, 1 to 31,536,000 (a year); 7,776,000 (90 days) unless set.
    refund_period_s: u64,
}

/// The calling merchant's refund period.
#[utoipa::path(get, path = "/v1/merchant/refund-period", security(("merchant" = [])), tag = "trades", responses((status = OK, body = RefundPeriod)))]
pub(crate) async fn refund_period(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller) -> Result<AppJson<RefundPeriod>, ApiError> {
    Ok(AppJson(RefundPeriod { refund_period_s: state.checkout.refund_period(merchant).await? }))
}

/// Sets the calling merchant's refund period, for trades paid from now on (a trade keeps the
/// period it was paid under). When it ends the trade is TRADE_FINISHED and refuses refunds.
#[utoipa::path(put, path = "/v1/merchant/refund-period", security(("merchant" = [])), tag = "trades", request_body = RefundPeriod,
    responses((status = OK, body = RefundPeriod), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn set_refund_period(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, AppJson(body): AppJson<RefundPeriod>) -> Result<AppJson<RefundPeriod>, ApiError> {
    Ok(AppJson(RefundPeriod { refund_period_s: state.checkout.set_refund_period(merchant, body.refund_period_s).await? }))
}

/// Closes an unpaid trade; closing it again answers the same. A trade that was paid (even one
/// refunded in full) cannot be closed: 409 `trade_already_paid`.
#[utoipa::path(post, path = "/v1/trades/{out_trade_no}/close", security(("merchant" = [])), tag = "trades", params(("out_trade_no" = String, Path)),
    responses((status = OK, body = TradeView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn close(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path(out_trade_no): Path<String>) -> Result<AppJson<TradeView>, ApiError> {
    Ok(AppJson(TradeView::from(&state.checkout.close(merchant, &out_trade_no).await?)))
}

/// Cancels a trade: closes it if unpaid, refunds it in full if paid; past its refund period,
/// 409 `trade_finished`.
#[utoipa::path(post, path = "/v1/trades/{out_trade_no}/cancel", security(("merchant" = [])), tag = "trades", params(("out_trade_no" = String, Path)),
    responses((status = OK, body = TradeView), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn cancel(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path(out_trade_no): Path<String>) -> Result<AppJson<TradeView>, ApiError> {
    Ok(AppJson(TradeView::from(&state.checkout.cancel(merchant, &out_trade_no).await?)))
}

/// Records a sale paid in cash at the counter.
#[utoipa::path(post, path = "/v1/cash-sales", security(("merchant" = [])), tag = "trades", request_body = TradeRequest,
    responses((status = CREATED, body = TradeView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn cash_sale(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, AppJson(body): AppJson<TradeRequest>) -> Result<Response, ApiError> {
    let trade = state.checkout.record_cash_sale(merchant, &body.new_trade()?).await?;
    Ok((StatusCode::CREATED, AppJson(TradeView::from(&trade))).into_response())
}

/// The merchant's static counter QR.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StaticQr {
    qr_payload: String,
}

/// The calling merchant's static counter QR payload (the payer types the amount).
#[utoipa::path(get, path = "/v1/merchant/qr", security(("merchant" = [])), tag = "trades", responses((status = OK, body = StaticQr)))]
pub(crate) async fn static_qr(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller) -> Result<AppJson<StaticQr>, ApiError> {
    Ok(AppJson(StaticQr { qr_payload: state.checkout.static_qr(merchant).await? }))
}

/// The calling merchant's trades, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/trades", security(("merchant" = [])), tag = "trades", params(crate::PageQuery),
    responses((status = OK, body = citypay_api_types::Page<TradeView>), (status = BAD_REQUEST, body = ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, page: crate::PageRequest) -> Result<AppJson<citypay_api_types::Page<TradeView>>, ApiError> {
    let after = match &page.cursor {
        Some(cursor) => {
            let created_at = u64::try_from(cursor.sort_key).map_err(|_| ApiError::bad_request("invalid_cursor", "cursor out of range"))?;
            let id = cursor.id.parse().map_err(|_| ApiError::bad_request("invalid_cursor", "cursor out of range"))?;
            Some((created_at, id))
        }
        None => None,
    };
    let trades = state.checkout.trades(merchant, after, page.limit).await?;
    let next_cursor = (trades.len() == usize::try_from(page.limit).unwrap_or(usize::MAX))
        .then(|| trades.last())
        .flatten()
        .map(|t| crate::Cursor::new(i64::try_from(t.created_at).unwrap_or(i64::MAX), t.id.to_string()).encode());
    Ok(AppJson(citypay_api_types::Page { items: trades.iter().map(TradeView::from).collect(), next_cursor }))
}

/// A new API key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ApiKeyView {
    api_key_id: String,
    /// Shown once.
    api_key_secret: String,
}

impl ApiKeyView {
    pub(crate) fn new(api_key_id: String, api_key_secret: String) -> ApiKeyView {
        ApiKeyView { api_key_id, api_key_secret }
    }
}

/// Issues another API key for the calling merchant (rotation: both work until the old one is
/// revoked). The answer holds a secret, so it is not kept for replay.
#[utoipa::path(post, path = "/v1/api-keys", security(("merchant" = [])), tag = "merchants", responses((status = CREATED, body = ApiKeyView)))]
pub(crate) async fn issue_key(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller) -> Result<Response, ApiError> {
    let credentials = state.directory.issue_api_key(merchant).await?;
    let view = ApiKeyView::new(credentials.key_id, credentials.secret.expose().clone());
    Ok((StatusCode::CREATED, AppJson(view)).into_response())
}

/// A revoked key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RevokedKey {
    revoked: String,
}

/// Revokes one of the calling merchant's API keys.
#[utoipa::path(post, path = "/v1/api-keys/{key_id}/revoke", security(("merchant" = [])), tag = "merchants", params(("key_id" = String, Path)),
    responses((status = OK, body = RevokedKey), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn revoke_key(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path(key_id): Path<String>) -> Result<AppJson<RevokedKey>, ApiError> {
    state.directory.revoke_api_key(merchant, &key_id).await?;
    Ok(AppJson(RevokedKey { revoked: key_id }))
}

/// A payment code shown to a merchant: in a country, the code of a device of another shard is
/// paid across shards.
pub(crate) async fn pay_with_code_in_country(state: &AppState, merchant: u64, new: &citypay_checkout::NewTrade, code: &str) -> Result<citypay_checkout::Trade, citypay_checkout::CheckoutError> {
    match state.country.get() {
        Some(country) => country.pay_with_code(&state.checkout, merchant, new, code).await,
        None => state.checkout.pay_with_code(merchant, new, code).await,
    }
}
