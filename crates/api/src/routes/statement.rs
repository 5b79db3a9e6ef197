//! The resident's wallet statement: every movement of their money, newest first, with the
//! balance after each; holds apart with the available balance; a period as CSV.

use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use citypay_api_types::{ErrorBody, Money};
use citypay_directory::transfer_codes;
use citypay_ledger::Timestamp;
use citypay_wallet::{Statement, StatementQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::ResidentCaller;
use super::bills::date;
use super::residents::money;
use crate::{ApiError, AppJson};

/// Lines a CSV holds at most (a busy month is a few hundred).
const CSV_LINES_MAX: usize = 10_000;

/// The kinds a statement can be filtered by, as the lines name them.
const KINDS: &[u16] = &[
    transfer_codes::TOP_UP,
    transfer_codes::WITHDRAWAL,
    transfer_codes::PAYMENT,
    transfer_codes::REFUND,
    transfer_codes::FARE,
    transfer_codes::FARE_REFUND,
    transfer_codes::ARREARS,
    transfer_codes::BILL,
    transfer_codes::FUND_CLAIM,
    transfer_codes::TRANSFER,
    transfer_codes::MOVED,
];

/// Which lines, and how.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatementParams {
    /// From this day on (`YYYY-MM-DD`, Beijing time).
    #[param(format = Date)]
    from: Option<String>,
    /// Through this day.
    #[param(format = Date)]
    to: Option<String>,
    /// Only these kinds, comma-separated: top_up, withdrawal, payment, refund, fare,
    /// fare_refund, arrears, bill, fund_claim, transfer, moved (a balance carried to the
    /// wallet's new shard when its city moved).
    kind: Option<String>,
    /// `csv` for the period's lines as a file (no paging); JSON otherwise.
    format: Option<String>,
}

/// One movement.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatementLineView {
    /// `YYYY-MM-DD HH:MM:SS`, Beijing time.
    at: String,
    /// What it was: top_up, withdrawal, payment, refund, fare, bill, ...
    kind: String,
    /// Into the wallet; negative out of it.
    amount: Money,
    /// The posted balance right after it.
    balance_after: Money,
    /// The shop, biller or transit operator; or "bank card" for top-ups and withdrawals.
    counterparty: String,
    /// The ledger's reference, for support.
    reference: String,
}

/// Money held (a top-up or withdrawal under way).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct HoldView {
    at: String,
    kind: String,
    amount: Money,
    /// Released then unless completed first.
    until: Option<String>,
}

/// A page of the statement.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatementView {
    balance: Money,
    available: Money,
    holds: Vec<HoldView>,
    lines: Vec<StatementLineView>,
    /// The next (older) page's `cursor`; absent on the last.
    next_cursor: Option<String>,
}

fn query_of(params: &StatementParams) -> Result<StatementQuery, ApiError> {
    let from = params.from.as_deref().map(date).transpose()?;
    let to = params.to.as_deref().map(date).transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(ApiError::bad_request("invalid_field", "to: on or after from"));
    }
    let mut codes = Vec::new();
    for name in params.kind.iter().flat_map(|k| k.split(',')).map(str::trim).filter(|k| !k.is_empty()) {
        let code = KINDS.iter().find(|c| transfer_codes::name(**c) == name).ok_or_else(|| ApiError::bad_request("invalid_field", format!("kind: {name} is not a kind of line")))?;
        codes.push(*code);
    }
    Ok(StatementQuery { from: from.map(|d| d.start()), until: to.map(|d| d.next().start()), codes, before: None, limit: 0 })
}

fn line_view(line: &citypay_wallet::StatementLine) -> StatementLineView {
    StatementLineView {
        at: line.at.local_date_time(),
        kind: transfer_codes::name(line.code).to_owned(),
        amount: money(line.amount),
        balance_after: money(line.balance_after),
        counterparty: line.counterparty.clone(),
        reference: line.reference.clone(),
    }
}

fn cursor_of(page: &crate::PageRequest) -> Result<Option<citypay_wallet::Cursor>, ApiError> {
    let Some(cursor) = &page.cursor else { return Ok(None) };
    let invalid = || ApiError::bad_request("invalid_cursor", "cursor out of range");
    let (transfer, leg) = cursor.id.split_once('.').ok_or_else(invalid)?;
    Ok(Some(citypay_wallet::Cursor {
        timestamp: u64::try_from(cursor.sort_key).map_err(|_| invalid())?,
        transfer: citypay_directory::hex::decode(transfer).ok_or_else(invalid)?,
        leg: leg.parse().map_err(|_| invalid())?,
    }))
}

/// The caller's wallet statement, newest first, a page at a time (`?format=csv`: the period's
/// lines as a file).
#[utoipa::path(get, path = "/v1/wallet/statement", security(("resident" = [])), tag = "wallet", params(StatementParams, crate::PageQuery),
    responses((status = OK, description = "A page of the statement, or with `format=csv` the period as a file", content((StatementView = "application/json"), (String = "text/csv"))),
        (status = BAD_REQUEST, body = ErrorBody)))]
pub(crate) async fn statement(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Query(params): Query<StatementParams>, page: crate::PageRequest) -> Result<Response, ApiError> {
    let mut query = query_of(&params)?;
    match params.format.as_deref() {
        None | Some("json") => {}
        Some("csv") => return csv(&state, &me, query, &params).await,
        Some(_) => return Err(ApiError::bad_request("invalid_field", "format: json or csv")),
    }
    query.before = cursor_of(&page)?;
    query.limit = usize::try_from(page.limit).unwrap_or(citypay_wallet::PAGE_MAX);
    let Statement { balance, available, holds, lines, next } = statement_page(&state, &me, &query).await?;
    let next_cursor = next.map(|c| crate::Cursor::new(i64::try_from(c.timestamp).unwrap_or(i64::MAX), format!("{}.{}", citypay_directory::hex::encode(&c.transfer), c.leg)).encode());
    let holds = holds
        .iter()
        .map(|h| HoldView { at: h.at.local_date_time(), kind: transfer_codes::name(h.code).to_owned(), amount: money(h.amount), until: h.until.map(Timestamp::local_date_time) })
        .collect();
    Ok(AppJson(StatementView { balance: money(balance), available: money(available), holds, lines: lines.iter().map(line_view).collect(), next_cursor }).into_response())
}

/// A page of the statement: on a country, from every shard the wallet lived on.
async fn statement_page(state: &AppState, me: &citypay_directory::Resident, query: &StatementQuery) -> Result<Statement, ApiError> {
    Ok(match state.country.get() {
        Some(country) => country.statement(&state.wallet, me, query).await?,
        None => state.wallet.statement(me, query).await?,
    })
}

/// Every line of the period, oldest first, as CSV.
async fn csv(state: &AppState, me: &citypay_directory::Resident, mut query: StatementQuery, params: &StatementParams) -> Result<Response, ApiError> {
    query.limit = citypay_wallet::PAGE_MAX;
    let mut lines = Vec::new();
    loop {
        let page = statement_page(state, me, &query).await?;
        lines.extend(page.lines);
        if lines.len() > CSV_LINES_MAX {
            return Err(ApiError::unprocessable("too_many_lines", format!("more than {CSV_LINES_MAX} lines: ask for a shorter period")));
        }
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    let mut body = String::from("time,kind,amount_yuan,balance_after_yuan,counterparty,reference\n");
    for line in lines.iter().rev() {
        let view = line_view(line);
        let field = |text: &str| if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() };
        body.push_str(&format!(
            "{},{},{},{},{},{}\n",
            view.at,
            view.kind,
            citypay_gateway::money::yuan(line.amount),
            citypay_gateway::money::yuan(line.balance_after),
            field(&view.counterparty),
            view.reference
        ));
    }
    let name = format!("statement-{}-{}.csv", params.from.as_deref().unwrap_or("start"), params.to.as_deref().unwrap_or("now"));
    Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\""))], body).into_response())
}
