//! `/gateway.do`: the Alipay Open Platform v1 protocol (public-key mode, RSA2) over the
//! checkout, so merchants' unchanged Alipay SDK code pays, queries, refunds, closes and cancels
//! citypay trades. Every trade made here is an ordinary trade of the checkout (the same
//! ledger entries, fees, settlement and figures), visible through the JSON API and the other
//! way round. The protocol's rules and the SDKs' quirks are in `citypay-gateway`; this module
//! checks the call (app, signature, timestamp) and maps citypay's answers and refusals to
//! Alipay's codes (the table is in ARCHITECTURE.md, "The Alipay-compatible gateway").
//!
//! Every answer is HTTP 200, signed, under `<method>_response`: SDKs raise on anything else.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use citypay_checkout::{CheckoutError, GatewayNotify, NewTrade, Trade, TradeStatus};
use citypay_directory::{DirectoryError, GatewayApp};
use citypay_gateway::money::{fen, yuan};
use citypay_gateway::{Answer, Failure, Request, parse_biz_content, response_key, signed_response};
use citypay_ledger::Status;
use serde_json::{Map, Value};

use super::AppState;

/// The methods served.
const METHODS: &[&str] = &[
    "alipay.trade.pay",
    "alipay.trade.precreate",
    "alipay.trade.query",
    "alipay.trade.refund",
    "alipay.trade.fastpay.refund.query",
    "alipay.trade.close",
    "alipay.trade.cancel",
];

/// The methods that only read: answered while the merchant's city moves between shards.
const QUERIES: &[&str] = &["alipay.trade.query", "alipay.trade.fastpay.refund.query"];

/// Set by a country's router on a call of a merchant whose city is moving between shards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CityMoving;

/// How far a request's timestamp may be from now, read as Beijing time or as UTC (SDKs stamp
/// the machine's local time without a zone; CI machines and many servers run on UTC).
const TIMESTAMP_SKEW_S: i64 = 15 * 60;

/// Alipay's longest unpaid life of a trade is days; citypay's is 2 hours (a trade waiting
/// longer is closed at 2 hours).
const TIMEOUT_MAX_S: u64 = 2 * 3600;

fn beijing(unix_s: u64) -> String {
    citypay_ledger::Timestamp::from_unix_seconds(unix_s).local_date_time()
}

/// `yyyy-MM-dd HH:mm:ss` as Unix seconds, read as UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    // Digits wherever the format has them: a sign would parse as part of a number ("-6" hours).
    let shape = text.len() == 19
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let (date, time) = text.split_once(' ')?;
    let date = citypay_ledger::LocalDate::parse(date)?;
    let mut parts = time.split(':').map(|p| p.parse::<i64>().ok().filter(|_| p.len() == 2));
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let days = citypay_ledger::days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// `/gateway.do`, GET or POST: the query string and a form body merged.
pub(crate) async fn gateway_do(State(state): State<AppState>, moving: Option<Extension<CityMoving>>, uri: Uri, body: Bytes) -> Response {
    let request = Request::parse(uri.query().unwrap_or_default().as_bytes(), &body);
    let method = request.get("method");
    let known = method.filter(|m| METHODS.contains(m));
    // An unknown method is still answered under its own key: SDKs look for it there.
    let key = response_key(method);
    // The method is logged only when it is one of ours; the query and the form (auth_code,
    // sign, biz_content) never are.
    let logged_method = known.unwrap_or("other");
    let (reply, platform_key) = match check(&state, &request, method).await {
        Ok(app) => {
            tracing::debug!(app = app.app_id, merchant = app.merchant, method = logged_method, "gateway call");
            let reply = match known {
                // Nothing is written while the merchant's city moves between shards (seconds):
                // as for any outage, the SDK is told to query, then retry.
                Some(known) if moving.is_some() && !QUERIES.contains(&known) => {
                    Failure::system("ACQ.SYSTEM_ERROR", "系统错误，请查询后重试 (the merchant's city is moving between shards: query, then retry in a few seconds)").answer()
                }
                Some(known) => serve(&state, &request, &app, known).await,
                None => Failure::invalid("isv.invalid-method", "不支持的方法 (method not supported)").answer(),
            };
            (reply, Some(app.platform_key))
        }
        Err((failure, platform_key)) => {
            tracing::debug!(method = logged_method, sub_code = %failure.sub_code, "gateway call refused");
            (failure.answer(), platform_key)
        }
    };
    let keys = &state.gateway.keys;
    let Some(signer) = platform_key.and_then(|id| keys.get(id)).or_else(|| keys.newest()) else {
        return unsigned_unavailable();
    };
    answer(signed_response(&key, &reply.finish(), signer))
}

fn answer(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    response
}

/// Without a platform key nothing can be signed; SDKs treat this as an unknown outcome.
fn unsigned_unavailable() -> Response {
    tracing::error!("the gateway has no platform key to sign with");
    answer(r#"{"error_response":{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error","sub_msg":"no platform key"}}"#.to_owned())
}

/// The protocol checks, in Alipay's order: the app, the signature's presence and type, the
/// charset, the timestamp, the signature itself. On failure: the refusal and the platform key
/// to sign it with (the app's when it is known).
async fn check(state: &AppState, request: &Request, method: Option<&str>) -> Result<GatewayApp, (Failure, Option<u32>)> {
    if method.is_none() {
        return Err((Failure::missing("isv.missing-method", "缺少方法名参数 (method is missing)"), None));
    }
    let Some(app_id) = request.get("app_id") else {
        return Err((Failure::missing("isv.missing-app-id", "缺少AppID参数 (app_id is missing)"), None));
    };
    let invalid_app = || Failure::invalid("isv.invalid-app-id", "无效的AppID参数 (no such app, or it is disabled)");
    let app = match app_id.parse::<u64>() {
        Ok(id) => match state.directory.gateway_app(id).await {
            Ok(app) if app.disabled_at.is_none() => app,
            Ok(_) | Err(DirectoryError::NotFound) => return Err((invalid_app(), None)),
            Err(other) => return Err((Failure::system("isp.unknow-error", other.to_string()), None)),
        },
        Err(_) => return Err((invalid_app(), None)),
    };
    let fail = |failure: Failure| Err((failure, Some(app.platform_key)));
    let Some(signature) = request.get("sign") else {
        return fail(Failure::missing("isv.missing-signature", "缺少签名参数 (sign is missing)"));
    };
    match request.get("sign_type") {
        None => return fail(Failure::missing("isv.missing-signature-type", "缺少签名类型参数 (sign_type is missing)")),
        Some("RSA2") => {}
        Some(_) => return fail(Failure::invalid("isv.invalid-signature-type", "无效的签名类型 (only RSA2 is accepted)")),
    }
    if request.get("charset").is_some_and(|c| !c.eq_ignore_ascii_case("utf-8")) {
        return fail(Failure::invalid("isv.invalid-charset", "字符集错误 (only utf-8 is accepted)"));
    }
    let Some(timestamp) = request.get("timestamp") else {
        return fail(Failure::missing("isv.missing-timestamp", "缺少时间戳参数 (timestamp is missing)"));
    };
    let now = i64::try_from(state.directory.clock().now().unix_seconds()).unwrap_or(i64::MAX);
    match parse_timestamp(timestamp) {
        // Read as Beijing time (8 hours ahead of UTC), or as UTC.
        Some(t) if (t - 8 * 3600 - now).abs() <= TIMESTAMP_SKEW_S || (t - now).abs() <= TIMESTAMP_SKEW_S => {}
        _ => return fail(Failure::invalid("isv.invalid-timestamp", "非法的时间戳参数 (yyyy-MM-dd HH:mm:ss, within 15 minutes of now)")),
    }
    let content = request.sign_content();
    if !app.public_key.verify(content.as_bytes(), signature) {
        // As Alipay does, the string that was checked, so the merchant can compare its own.
        let shown: String = content.chars().take(2000).collect();
        return fail(Failure::invalid("isv.invalid-signature", format!("验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{shown}")));
    }
    Ok(app)
}

/// A checked call's answer.
async fn serve(state: &AppState, request: &Request, app: &GatewayApp, method: &str) -> Answer {
    let biz = match request.get("biz_content").map(parse_biz_content) {
        Some(Ok(biz)) => biz,
        Some(Err(message)) => return invalid(message).answer(),
        None => return invalid("biz_content is missing").answer(),
    };
    let result = match method {
        "alipay.trade.precreate" => precreate(state, request, app, &biz).await,
        "alipay.trade.pay" => pay(state, request, app, &biz).await,
        "alipay.trade.query" => query(state, app, &biz).await,
        "alipay.trade.refund" => refund(state, app, &biz).await,
        "alipay.trade.fastpay.refund.query" => refund_query(state, app, &biz).await,
        "alipay.trade.close" => close(state, app, &biz).await,
        "alipay.trade.cancel" => cancel(state, app, &biz).await,
        _ => Err(Failure::invalid("isv.invalid-method", "不支持的方法 (method not supported)")),
    };
    result.unwrap_or_else(|failure| {
        tracing::debug!(app = app.app_id, method, sub_code = %failure.sub_code, "gateway call answered with a refusal");
        failure.answer()
    })
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::business("ACQ.INVALID_PARAMETER", message)
}

/// A required text field of `biz_content`.
fn field<'a>(biz: &'a Map<String, Value>, name: &str) -> Result<&'a str, Failure> {
    optional(biz, name)?.ok_or_else(|| invalid(format!("{name} is missing")))
}

/// An optional text field; an empty string is absent, any other JSON type is refused.
fn optional<'a>(biz: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Failure> {
    match biz.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{name} must be a string"))),
    }
}

pub(crate) fn amount(biz: &Map<String, Value>, name: &str) -> Result<i64, Failure> {
    let value = biz.get(name).ok_or_else(|| invalid(format!("{name} is missing")))?;
    let fen = fen(value).map_err(|e| invalid(format!("{name}: {e}")))?;
    if fen <= 0 {
        return Err(invalid(format!("{name} must be at least 0.01")));
    }
    Ok(fen)
}

/// Alipay's `timeout_express`: `90m`, `2h`, `1d` (`1c`: the end of the day), capped at
/// citypay's 2 hours.
pub(crate) fn timeout(biz: &Map<String, Value>) -> Result<Option<u64>, Failure> {
    let Some(text) = optional(biz, "timeout_express")? else { return Ok(None) };
    let bad = || invalid("timeout_express: a number then m, h, d or c, such as 90m");
    let mut chars = text.chars();
    let unit = match chars.next_back() {
        Some('m') => 60,
        Some('h') => 3600,
        Some('d' | 'c') => 86_400,
        _ => return Err(bad()),
    };
    let number: u64 = chars.as_str().parse().map_err(|_| bad())?;
    if number == 0 {
        return Err(bad());
    }
    Ok(Some(number.saturating_mul(unit).min(TIMEOUT_MAX_S)))
}

/// Where the trade's changes are notified: the request's `notify_url`, else the app's.
fn notify_target(state: &AppState, request: &Request, app: &GatewayApp) -> Result<Option<GatewayNotify>, Failure> {
    let url = match request.get("notify_url") {
        Some(url) => {
            super::notify_urls::check(url, state.gateway.allow_private_notify).map_err(|e| invalid(format!("notify_url: {e}")))?;
            url.to_owned()
        }
        None => match &app.notify_url {
            Some(url) => url.clone(),
            None => return Ok(None),
        },
    };
    Ok(Some(GatewayNotify { app_id: app.app_id, url }))
}

fn new_trade(state: &AppState, request: &Request, app: &GatewayApp, biz: &Map<String, Value>) -> Result<NewTrade, Failure> {
    Ok(NewTrade {
        out_trade_no: field(biz, "out_trade_no")?.to_owned(),
        amount: amount(biz, "total_amount")?,
        subject: field(biz, "subject")?.to_owned(),
        timeout_s: timeout(biz)?,
        notify: notify_target(state, request, app)?,
        cashier: None,
    })
}

/// What the merchant knows a citypay refusal by: Alipay's code and sub-code.
fn failure(error: &CheckoutError, method: &str) -> Failure {
    let business = |sub_code: &str, message: &str| Failure::business(sub_code, message);
    match error {
        CheckoutError::InvalidField { .. } | CheckoutError::InvalidQr(_) | CheckoutError::SchemeNotAccepted(_) | CheckoutError::AmountMismatch { .. } => {
            Failure::business("ACQ.INVALID_PARAMETER", error.to_string())
        }
        CheckoutError::TradeNotFound => business("ACQ.TRADE_NOT_EXIST", "交易不存在 (no such trade)"),
        CheckoutError::RefundNotFound => business("ACQ.TRADE_NOT_EXIST", "退款不存在 (no such refund)"),
        CheckoutError::OutTradeNoReused => business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改 (out_trade_no was used for another trade)"),
        CheckoutError::AlreadyPaid if method == "alipay.trade.close" => business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法 (the trade is paid)"),
        CheckoutError::AlreadyPaid => business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付 (the trade is paid)"),
        CheckoutError::TradeClosed => business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭 (the trade is closed)"),
        CheckoutError::NotPaid => business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法 (the trade is not paid)"),
        CheckoutError::TradeFinished => business("ACQ.TRADE_HAS_FINISHED", "交易已完结 (the refund period is over)"),
        CheckoutError::RefundExceedsPaid => business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限 (more than is left to refund)"),
        CheckoutError::RefundRequestReused => business("ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致 (out_request_no was used with another amount)"),
        CheckoutError::InvalidCode(_) => business("ACQ.PAYMENT_AUTH_CODE_INVALID", "支付授权码无效 (the payment code is wrong or expired)"),
        CheckoutError::CodeUsed => business("ACQ.PAYMENT_AUTH_CODE_INVALID", "支付授权码已使用 (the payment code was used)"),
        CheckoutError::DeviceNotFound => business("ACQ.PAYMENT_AUTH_CODE_INVALID", "支付授权码无效 (the payment code is wrong)"),
        CheckoutError::DeviceCoolingDown { .. } | CheckoutError::TooManyAttempts => {
            Failure::business("ACQ.PAYMENT_REQUEST_HAS_RISK", format!("支付存在风险 ({error})"))
        }
        CheckoutError::Refused(Status::InsufficientFunds) if method == "alipay.trade.pay" => business("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足 (the wallet's balance is too low)"),
        CheckoutError::Refused(Status::InsufficientFunds) => business("ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足 (the merchant's balance is too low)"),
        CheckoutError::Refused(Status::ExceedsWindowCap | Status::ExceedsTransferCap) => {
            business("ACQ.ERROR_BUYER_CERTIFY_LEVEL_LIMIT", "买家未通过人行认证 (the wallet's account class limits this payment)")
        }
        CheckoutError::Refused(status) => Failure::business("ACQ.PAYMENT_FAIL", format!("支付失败 ({})", status.name())),
        CheckoutError::Directory(DirectoryError::WalletFrozen) => business("ACQ.BUYER_ENABLE_STATUS_FORBID", "买家状态非法 (the wallet is frozen)"),
        CheckoutError::Directory(DirectoryError::NotFound) => business("ACQ.TRADE_NOT_EXIST", "交易不存在 (not found)"),
        // Unknown outcome: the merchant queries, then retries or cancels.
        CheckoutError::Returned(_) => Failure::business("ACQ.PAYMENT_FAIL", format!("支付失败 ({error})")),
        // The money is back with the merchant: a new refund request number may try again.
        CheckoutError::RefundReturned(_) => Failure::business("ACQ.SYSTEM_ERROR", format!("退款失败 ({error})")),
        CheckoutError::AccountElsewhere => Failure::business("ACQ.TRADE_STATUS_ERROR", format!("交易状态不合法 ({error})")),
        CheckoutError::Unavailable(_) | CheckoutError::OutcomeUnknown | CheckoutError::Directory(_) => {
            Failure::system("ACQ.SYSTEM_ERROR", "系统错误，请查询后重试 (query, then retry)")
        }
    }
}

/// The trade a call names: by `trade_no` when given (it wins, as at Alipay), else by
/// `out_trade_no`.
async fn named_trade(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>, method: &str) -> Result<Trade, Failure> {
    let result = match (optional(biz, "trade_no")?, optional(biz, "out_trade_no")?) {
        (Some(no), _) => match no.parse::<u64>() {
            Ok(no) => state.checkout.trade_by_no(app.merchant, no).await,
            Err(_) => Err(CheckoutError::TradeNotFound),
        },
        (None, Some(out)) => state.checkout.trade(app.merchant, out).await,
        (None, None) => return Err(invalid("out_trade_no or trade_no is needed")),
    };
    result.map_err(|e| failure(&e, method))
}

/// The order number a call names: by `trade_no` when given (it wins, as at Alipay; one read),
/// else `out_trade_no` as sent (no read: the checkout reads the trade itself).
async fn order_no(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>, method: &str) -> Result<String, Failure> {
    match optional(biz, "trade_no")? {
        Some(_) => Ok(named_trade(state, app, biz, method).await?.out_trade_no),
        None => Ok(field(biz, "out_trade_no")?.to_owned()),
    }
}

/// The amounts and times of a paid trade, as pay and query answer them.
fn paid_fields(answer: Answer, trade: &Trade, paid_time_key: &str) -> Answer {
    let paid = trade.paid_at.is_some();
    let paid_amount = yuan(if paid { trade.amount } else { 0 });
    let answer = answer
        .str("total_amount", &yuan(trade.amount))
        .str("receipt_amount", &paid_amount)
        .str("buyer_pay_amount", &paid_amount)
        .str("invoice_amount", &paid_amount)
        .str("point_amount", "0.00");
    match trade.paid_at {
        Some(at) => answer
            .str(paid_time_key, &beijing(at))
            .list("fund_bill_list", vec![Answer::new().str("fund_channel", "ALIPAYACCOUNT").str("amount", &paid_amount)]),
        None => answer,
    }
}

async fn precreate(state: &AppState, request: &Request, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    let new = new_trade(state, request, app, biz)?;
    let (trade, qr_code) = state.checkout.create_trade(app.merchant, &new).await.map_err(|e| failure(&e, "alipay.trade.precreate"))?;
    match trade.status {
        TradeStatus::WaitBuyerPay => Ok(Answer::success().str("out_trade_no", &trade.out_trade_no).str("qr_code", &qr_code)),
        TradeStatus::TradeClosed => Err(failure(&CheckoutError::TradeClosed, "alipay.trade.precreate")),
        TradeStatus::TradeSuccess | TradeStatus::TradeFinished => Err(failure(&CheckoutError::AlreadyPaid, "alipay.trade.precreate")),
    }
}

async fn pay(state: &AppState, request: &Request, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    match optional(biz, "scene")? {
        None | Some("bar_code" | "wave_code") => {}
        Some(other) => return Err(invalid(format!("scene {other}: bar_code or wave_code"))),
    }
    let new = new_trade(state, request, app, biz)?;
    let code = field(biz, "auth_code")?;
    let trade = super::trades::pay_with_code_in_country(state, app.merchant, &new, code).await.map_err(|e| failure(&e, "alipay.trade.pay"))?;
    let answer = Answer::success().str("trade_no", &trade.id.to_string()).str("out_trade_no", &trade.out_trade_no);
    Ok(paid_fields(answer, &trade, "gmt_payment"))
}

async fn query(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    let trade = named_trade(state, app, biz, "alipay.trade.query").await?;
    let answer = Answer::success()
        .str("trade_no", &trade.id.to_string())
        .str("out_trade_no", &trade.out_trade_no)
        .str("trade_status", trade.status.code())
        .str("subject", &trade.subject);
    Ok(paid_fields(answer, &trade, "send_pay_date"))
}

async fn refund(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    const METHOD: &str = "alipay.trade.refund";
    let out_trade_no = order_no(state, app, biz, METHOD).await?;
    let amount = amount(biz, "refund_amount")?;
    // Without out_request_no the whole trade is one refund, numbered by the order number.
    let request_no = optional(biz, "out_request_no")?.unwrap_or(&out_trade_no).to_owned();
    let answer = state.checkout.refund(app.merchant, &out_trade_no, &request_no, amount).await.map_err(|e| failure(&e, METHOD))?;
    Ok(Answer::success()
        .str("trade_no", &answer.trade.id.to_string())
        .str("out_trade_no", &answer.trade.out_trade_no)
        .str("fund_change", if answer.fund_change { "Y" } else { "N" })
        .str("refund_fee", &yuan(answer.trade.refunded))
        .str("gmt_refund_pay", &beijing(answer.refund.created_at)))
}

async fn refund_query(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    const METHOD: &str = "alipay.trade.fastpay.refund.query";
    let trade = named_trade(state, app, biz, METHOD).await?;
    let request_no = optional(biz, "out_request_no")?.unwrap_or(&trade.out_trade_no).to_owned();
    let base = Answer::success().str("trade_no", &trade.id.to_string()).str("out_trade_no", &trade.out_trade_no);
    match state.checkout.refund_query(app.merchant, &trade.out_trade_no, &request_no).await {
        // Still crossing to the payer's shard, or returned from it: not made, as Alipay says of
        // a refund it has not made (the same request number finishes one still crossing).
        Ok(answer) if answer.refund.status != citypay_checkout::RefundStatus::RefundSuccess => Ok(base.str("out_request_no", &request_no)),
        Ok(answer) => Ok(base
            .str("out_request_no", &request_no)
            .str("total_amount", &yuan(answer.trade.amount))
            .str("refund_amount", &yuan(answer.refund.amount))
            .str("refund_status", answer.refund.status.code())
            .str("gmt_refund_pay", &beijing(answer.refund.created_at))),
        // Alipay's answer for a refund it has not made: success without refund_amount (the
        // merchant may retry the refund with the same request number).
        Err(CheckoutError::RefundNotFound) => Ok(base.str("out_request_no", &request_no)),
        Err(e) => Err(failure(&e, METHOD)),
    }
}

async fn close(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    const METHOD: &str = "alipay.trade.close";
    let out_trade_no = order_no(state, app, biz, METHOD).await?;
    let closed = state.checkout.close(app.merchant, &out_trade_no).await.map_err(|e| failure(&e, METHOD))?;
    Ok(Answer::success().str("trade_no", &closed.id.to_string()).str("out_trade_no", &closed.out_trade_no))
}

async fn cancel(state: &AppState, app: &GatewayApp, biz: &Map<String, Value>) -> Result<Answer, Failure> {
    const METHOD: &str = "alipay.trade.cancel";
    // By trade_no only a trade citypay made can be named; by out_trade_no even one that never
    // arrived, which is then recorded closed so that it cannot be paid late.
    let out_trade_no = order_no(state, app, biz, METHOD).await?;
    let after = state.checkout.cancel_order(app.merchant, &out_trade_no).await.map_err(|e| failure(&e, METHOD))?;
    // A cancelled trade that had been paid was refunded in full.
    let was_paid = after.paid_at.is_some();
    let answer = Answer::success()
        .str("trade_no", &after.id.to_string())
        .str("out_trade_no", &after.out_trade_no)
        .str("retry_flag", "N")
        .str("action", if was_paid { "refund" } else { "close" });
    Ok(if was_paid { answer.str("gmt_refund_pay", &beijing(state.directory.clock().now().unix_seconds())) } else { answer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2026-12-02 06:38:14"), Some(1_796_193_494));
        assert_eq!(parse_timestamp("2026-12-02 6:38:14"), None);
        assert_eq!(parse_timestamp("2026-12-02T06:38:14"), None);
        assert_eq!(parse_timestamp("2026-12-02 24:00:00"), None);
    }

    // Found by the fuzz target gateway_do: "-6" passed as a two-character hour, so
    // "2026-12-02 -6:38:14" read as 18:38:14 the day before.
    #[test]
    fn timestamps_have_digits_where_the_format_has_them() {
        for bad in ["2026-12-02 -6:38:14", "2026-12-02 +6:38:14", "2026-12-02 06:-1:14", "2026-1-02 06:38:14", "+026-12-02 06:38:14", "2026-12-02 06:38:14 "] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn timeouts_never_panic_or_overflow() {
        let timeout_of = |text: &str| timeout(serde_json::json!({"timeout_express": text}).as_object().unwrap());
        assert_eq!(timeout_of("90m"), Ok(Some(5_400)));
        assert_eq!(timeout_of("1d"), Ok(Some(TIMEOUT_MAX_S)));
        assert_eq!(timeout_of("99999999999999999d"), Ok(Some(TIMEOUT_MAX_S)));
        for bad in ["90分", "m", "0m", "-1h", "1x", "é"] {
            assert!(timeout_of(bad).is_err(), "{bad}");
        }
    }
}
