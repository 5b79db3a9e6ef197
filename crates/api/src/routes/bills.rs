//! Bills over HTTP. Billers (merchants' API keys) issue bills keyed by their own `out_bill_no`,
//! record cash paid at the counter and the guardians of their student or account numbers, and
//! download their reconciliation and settlement files. Residents list the bills of their own ID
//! number and of family members whose links stand, answer others' link requests, pay bills (in
//! full or by items), consent to or claim the insurance fund's part of a cash payment, pay
//! social-security contributions, and fetch their receipts.
//! Operators run settlement, fund a city's medical-insurance fund and open contribution
//! windows. The receipt keys are public: anyone holding a receipt can check it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use citypay_api_types::{ErrorBody, Money};
use citypay_bills::{Bill, BillPayment, Item, NewBill, Payer, PayerKind, PayerLink, Receipt};
use citypay_directory::Role;
use citypay_ledger::LocalDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Caller, MerchantCaller, OperatorCaller, ResidentCaller};
use super::replay::once;
use super::residents::{cny, money};
use crate::{ApiError, AppJson, Idempotent};

pub(crate) fn date(text: &str) -> Result<LocalDate, ApiError> {
    LocalDate::parse(text).ok_or_else(|| ApiError::bad_request("invalid_field", "date: YYYY-MM-DD"))
}

fn payer_kind(code: &str) -> Result<PayerKind, ApiError> {
    PayerKind::from_code(code).ok_or_else(|| ApiError::bad_request("invalid_field", "payer_kind: id_number, student_number or account_number"))
}

pub(crate) fn csv(body: String) -> Response {
    ([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// One line of a bill.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemView {
    /// What it is for.
    name: String,
    amount: Money,
}

/// A bill.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BillView {
    /// citypay's bill number.
    bill_no: String,
    /// The biller's reference.
    out_bill_no: String,
    /// The biller (a merchant id).
    biller_id: String,
    /// hospital, school, social_security, utility, ...
    category: String,
    /// id_number, student_number or account_number.
    payer_kind: String,
    /// The payer's identifier, masked.
    payer: String,
    title: String,
    items: Vec<ItemView>,
    /// Whether the payer picks items (indexes from 0).
    pick_items: bool,
    total: Money,
    /// The medical-insurance fund's part.
    insured: Money,
    paid: Money,
    /// Indexes of the items paid.
    paid_items: Vec<usize>,
    /// open, partly_paid or paid.
    status: String,
    /// Unix seconds.
    due_at: u64,
    late_allowed: bool,
}

impl From<&Bill> for BillView {
    fn from(b: &Bill) -> BillView {
        BillView {
            bill_no: b.id.to_string(),
            out_bill_no: b.out_bill_no.clone(),
            biller_id: b.biller_id.to_string(),
            category: b.category.code().to_owned(),
            payer_kind: b.payer_kind.code().to_owned(),
            payer: b.payer_masked.clone(),
            title: b.title.clone(),
            items: b.items.iter().map(|i| ItemView { name: i.name.clone(), amount: money(i.amount) }).collect(),
            pick_items: b.pick_items,
            total: money(b.total),
            insured: money(b.insured),
            paid: money(b.paid_amount),
            paid_items: (0..b.items.len()).filter(|i| b.paid_items & (1 << i) != 0).collect(),
            status: b.status.code().to_owned(),
            due_at: b.due_at,
            late_allowed: b.late_allowed,
        }
    }
}

/// A bill to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BillRequest {
    /// Unique per biller: 1 to 64 letters, digits, `-` or `_`.
    out_bill_no: String,
    /// id_number, student_number or account_number.
    payer_kind: String,
    /// The payer's PRC ID number, student number or account number.
    payer: String,
    title: String,
    /// 1 to 32 items.
    items: Vec<ItemView>,
    /// The payer picks which items to pay (default: all are due together).
    #[serde(default)]
    pick_items: bool,
    /// The medical-insurance fund's part (hospital bills only).
    insured: Option<Money>,
    /// Unix seconds.
    due_at: u64,
    /// May be paid after `due_at` (default no).
    #[serde(default)]
    late_allowed: bool,
}

/// Issues a bill (idempotent by `out_bill_no`).
#[utoipa::path(post, path = "/v1/bills", security(("merchant" = [])), tag = "bills", request_body = BillRequest,
    responses((status = CREATED, body = BillView), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn issue(State(state): State<AppState>, MerchantCaller(biller): MerchantCaller, AppJson(body): AppJson<BillRequest>) -> Result<Response, ApiError> {
    let items = body.items.iter().map(|i| Ok(Item { name: i.name.clone(), amount: cny(&i.amount)? })).collect::<Result<Vec<_>, ApiError>>()?;
    let new = NewBill {
        out_bill_no: body.out_bill_no,
        payer: Payer { kind: payer_kind(&body.payer_kind)?, identifier: body.payer },
        title: body.title,
        items,
        pick_items: body.pick_items,
        // Zero insured is no insured part.
        insured: body.insured.as_ref().filter(|m| m.amount != 0).map(cny).transpose()?.unwrap_or(0),
        due_at: body.due_at,
        late_allowed: body.late_allowed,
    };
    let bill = state.bills.issue(biller, &new).await?;
    Ok((StatusCode::CREATED, AppJson(BillView::from(&bill))).into_response())
}

/// A bill of the calling biller.
#[utoipa::path(get, path = "/v1/bills/{out_bill_no}", security(("merchant" = [])), tag = "bills", params(("out_bill_no" = String, Path)),
    responses((status = OK, body = BillView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn get(State(state): State<AppState>, MerchantCaller(biller): MerchantCaller, Path(out_bill_no): Path<String>) -> Result<AppJson<BillView>, ApiError> {
    Ok(AppJson(BillView::from(&state.bills.bill(biller, &out_bill_no).await?)))
}

/// A payment and its receipt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PaymentView {
    /// The receipt's number.
    receipt_no: String,
    bill: BillView,
    /// Paid, the fund's part included.
    amount: Money,
    /// The medical-insurance fund's part.
    insured: Money,
    /// wallet or cash.
    method: String,
    /// Unix seconds.
    paid_at: u64,
    receipt: ReceiptView,
}

/// An electronic receipt: the signed text, byte for byte, and its Ed25519 signature.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReceiptView {
    receipt_no: String,
    /// The receipt (JSON), exactly as signed.
    text: String,
    /// Base64 Ed25519 signature of `text` under the key its `key_id` names.
    signature: String,
}

impl From<&Receipt> for ReceiptView {
    fn from(r: &Receipt) -> ReceiptView {
        ReceiptView { receipt_no: r.number.clone(), text: r.text.clone(), signature: r.signature_base64() }
    }
}

impl From<&BillPayment> for PaymentView {
    fn from(p: &BillPayment) -> PaymentView {
        PaymentView {
            receipt_no: p.id.to_string(),
            bill: BillView::from(&p.bill),
            amount: money(p.amount),
            insured: money(p.insured),
            method: p.method.code().to_owned(),
            paid_at: p.paid_at,
            receipt: ReceiptView::from(&p.receipt),
        }
    }
}

/// Cash paid at the counter.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CashRequest {
    /// Exactly what is outstanding.
    amount: Money,
}

/// Records cash paid at the biller's counter against a bill.
#[utoipa::path(post, path = "/v1/bills/{out_bill_no}/cash-payments", security(("merchant" = [])), tag = "bills", params(("out_bill_no" = String, Path), crate::IdempotencyKey),
    request_body = CashRequest, responses((status = CREATED, body = PaymentView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn pay_cash(
    State(state): State<AppState>,
    MerchantCaller(biller): MerchantCaller,
    Path(out_bill_no): Path<String>,
    request: Idempotent<CashRequest>,
) -> Result<Response, ApiError> {
    let caller = Caller::Merchant(biller);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let payment = state.bills.pay_cash(biller, &out_bill_no, cny(&request.body.amount)?).await?;
        Ok(PaymentView::from(&payment))
    })
    .await
}

/// A resident's bills.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BillList {
    bills: Vec<BillView>,
}

/// How many.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// At most 100 (default 50).
    limit: Option<u32>,
}

/// The bills addressed to the caller and to the family members whose links stand, newest
/// first.
#[utoipa::path(get, path = "/v1/my/bills", security(("resident" = [])), tag = "bills", params(ListQuery), responses((status = OK, body = BillList)))]
pub(crate) async fn my_bills(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Query(query): Query<ListQuery>) -> Result<AppJson<BillList>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    // In a country, billers of every shard's cities.
    let bills = match state.country.get() {
        Some(country) => country.bills_of(&state.bills, &me, limit).await?,
        None => state.bills.bills_of(&me, limit).await?,
    };
    Ok(AppJson(BillList { bills: bills.iter().map(BillView::from).collect() }))
}

/// A payment of a bill.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayRequest {
    /// Item indexes to pay, when the bill lets the payer pick; absent: everything outstanding.
    items: Option<Vec<usize>>,
}

/// Pays one of the caller's (or an approved linked family member's) bills from the wallet.
#[utoipa::path(post, path = "/v1/my/bills/{bill_no}/payments", security(("resident" = [])), tag = "bills", params(("bill_no" = String, Path), crate::IdempotencyKey),
    request_body = PayRequest, responses((status = CREATED, body = PaymentView), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn pay(
    State(state): State<AppState>,
    ResidentCaller(me): ResidentCaller,
    Path(bill_no): Path<String>,
    request: Idempotent<PayRequest>,
) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let bill_id = bill_no.parse().map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "bill_not_found", "bill not found"))?;
        let items = request.body.items.as_deref();
        let payment = match state.country.get() {
            Some(country) => country.pay_bill(&state.bills, &me, bill_id, items, request.key.as_str()).await?,
            None => state.bills.pay(&me, bill_id, items).await?,
        };
        Ok(PaymentView::from(&payment))
    })
    .await
}

fn bill_number(bill_no: &str) -> Result<u64, ApiError> {
    bill_no.parse().map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "bill_not_found", "bill not found"))
}

/// The patient's consent to the fund's part of a cash payment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FundConsentView {
    bill_no: String,
    /// What the fund pays when the counter takes the rest in cash.
    insured: Money,
    /// What the counter takes in cash.
    cash_due: Money,
}

/// The patient consents, from their own account, to the city's medical-insurance fund paying
/// its part of their bill when they pay the rest in cash at the counter. Without it the
/// counter takes the whole bill in cash and the patient claims the fund's part afterwards.
#[utoipa::path(post, path = "/v1/my/bills/{bill_no}/fund-consent", security(("resident" = [])), tag = "bills", params(("bill_no" = String, Path)),
    responses((status = OK, body = FundConsentView), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn consent_to_fund(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Path(bill_no): Path<String>) -> Result<AppJson<FundConsentView>, ApiError> {
    let bill = state.bills.consent_to_fund(&me, bill_number(&bill_no)?).await?;
    Ok(AppJson(FundConsentView { bill_no: bill.id.to_string(), insured: money(bill.insured), cash_due: money(bill.outstanding() - bill.insured) }))
}

/// The fund's part of a bill paid wholly in cash, paid to the patient's wallet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FundClaimView {
    bill_no: String,
    amount: Money,
    /// Unix seconds.
    claimed_at: u64,
}

/// The patient claims the fund's part of their insured bill that was paid wholly in cash: the
/// fund pays it into their wallet, once (a later claim answers the first, so a retry needs no
/// idempotency key).
#[utoipa::path(post, path = "/v1/my/bills/{bill_no}/fund-claims", security(("resident" = [])), tag = "bills", params(("bill_no" = String, Path)),
    responses((status = CREATED, body = FundClaimView), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn claim_from_fund(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Path(bill_no): Path<String>) -> Result<Response, ApiError> {
    let claim = state.bills.claim_from_fund(&me, bill_number(&bill_no)?).await?;
    let view = FundClaimView { bill_no: claim.bill_id.to_string(), amount: money(claim.amount), claimed_at: claim.claimed_at };
    Ok((StatusCode::CREATED, AppJson(view)).into_response())
}

/// A family member whose bills the caller sees and pays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkRequest {
    /// id_number, student_number or account_number.
    payer_kind: String,
    /// Their ID number, or a student or account number at `biller_id`.
    payer: String,
    /// The school or utility a student or account number belongs to.
    biller_id: Option<String>,
    /// A name for the link (`mother`, `son`, `home`).
    label: String,
}

/// A link to a family member's bills.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LinkView {
    /// id_number, student_number or account_number.
    payer_kind: String,
    /// Their identifier, masked.
    payer: String,
    label: String,
    /// pending (shows nothing yet), approved or declined. An ID number's link is approved by
    /// its person from their own account; a student or account number's once the biller
    /// lists the caller as a guardian.
    status: String,
}

impl From<&PayerLink> for LinkView {
    fn from(link: &PayerLink) -> LinkView {
        LinkView { payer_kind: link.payer_kind.code().to_owned(), payer: link.payer_masked.clone(), label: link.label.clone(), status: link.status.code().to_owned() }
    }
}

/// Asks to see and pay a family member's bills. The link shows nothing until the person named
/// approves it from their own account (`/v1/my/payer-link-requests`), or, for a student or
/// account number, until the biller lists the caller as a guardian (`/v1/payer-guardians`).
/// At most 10 links to ID numbers a week may wait for an answer.
#[utoipa::path(post, path = "/v1/my/payer-links", security(("resident" = [])), tag = "bills", params(crate::IdempotencyKey), request_body = LinkRequest,
    responses((status = CREATED, body = LinkView), (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn link_payer(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<LinkRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let body = &request.body;
        let biller = body
            .biller_id
            .as_deref()
            .map(|b| b.parse::<u64>().map_err(|_| ApiError::bad_request("invalid_field", "biller_id: a merchant id")))
            .transpose()?;
        let payer = Payer { kind: payer_kind(&body.payer_kind)?, identifier: body.payer.clone() };
        Ok(LinkView::from(&state.bills.link_payer(&me, &payer, biller, &body.label).await?))
    })
    .await
}

/// The caller's links.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LinkList {
    links: Vec<LinkView>,
}

/// The caller's links to family members' bills, with where each stands.
#[utoipa::path(get, path = "/v1/my/payer-links", security(("resident" = [])), tag = "bills", responses((status = OK, body = LinkList)))]
pub(crate) async fn my_links(State(state): State<AppState>, ResidentCaller(me): ResidentCaller) -> Result<AppJson<LinkList>, ApiError> {
    Ok(AppJson(LinkList { links: state.bills.links_of(&me).await?.iter().map(LinkView::from).collect() }))
}

/// Another resident's request to see the caller's bills.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LinkRequestView {
    /// The requesting resident (the id to approve or decline).
    requester: String,
    /// Their ID number, masked.
    requester_id_number: String,
    /// Their name for the link.
    label: String,
    /// pending, approved or declined.
    status: String,
    /// Unix seconds.
    requested_at: u64,
}

impl From<&citypay_bills::LinkRequest> for LinkRequestView {
    fn from(r: &citypay_bills::LinkRequest) -> LinkRequestView {
        LinkRequestView {
            requester: r.requester.to_string(),
            requester_id_number: r.requester_masked.clone(),
            label: r.label.clone(),
            status: r.status.code().to_owned(),
            requested_at: r.requested_at,
        }
    }
}

/// Requests to see the caller's bills.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LinkRequestList {
    requests: Vec<LinkRequestView>,
}

/// Others' requests to see and pay the caller's bills (links to the caller's ID number).
#[utoipa::path(get, path = "/v1/my/payer-link-requests", security(("resident" = [])), tag = "bills", responses((status = OK, body = LinkRequestList)))]
pub(crate) async fn link_requests(State(state): State<AppState>, ResidentCaller(me): ResidentCaller) -> Result<AppJson<LinkRequestList>, ApiError> {
    Ok(AppJson(LinkRequestList { requests: state.bills.link_requests(&me).await?.iter().map(LinkRequestView::from).collect() }))
}

async fn answer_link_request(state: &AppState, me: &citypay_directory::Resident, requester: &str, approve: bool) -> Result<AppJson<LinkRequestView>, ApiError> {
    let requester = requester.parse().map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "link_not_found", "link request not found"))?;
    Ok(AppJson(LinkRequestView::from(&state.bills.answer_link_request(me, requester, approve).await?)))
}

/// Approves another resident's request to see and pay the caller's bills.
#[utoipa::path(post, path = "/v1/my/payer-link-requests/{requester}/approve", security(("resident" = [])), tag = "bills", params(("requester" = String, Path)),
    responses((status = OK, body = LinkRequestView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn approve_link_request(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Path(requester): Path<String>) -> Result<AppJson<LinkRequestView>, ApiError> {
    answer_link_request(&state, &me, &requester, true).await
}

/// Declines another resident's request to see the caller's bills (declining an approved one
/// withdraws it).
#[utoipa::path(post, path = "/v1/my/payer-link-requests/{requester}/decline", security(("resident" = [])), tag = "bills", params(("requester" = String, Path)),
    responses((status = OK, body = LinkRequestView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn decline_link_request(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Path(requester): Path<String>) -> Result<AppJson<LinkRequestView>, ApiError> {
    answer_link_request(&state, &me, &requester, false).await
}

/// A guardian of a student or account number, as the biller records it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GuardianRequest {
    /// student_number or account_number.
    #[schema(pattern = "^(student_number|account_number)$")]
    payer_kind: String,
    /// The student or account number at the calling biller.
    payer: String,
    /// The guardian's (parent's, account holder's) PRC ID number.
    #[schema(pattern = "^[0-9]{17}[0-9Xx]$")]
    guardian_id_number: String,
}

/// A recorded guardian.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GuardianView {
    /// The student or account number, masked.
    payer: String,
    /// The guardian's ID number, masked.
    guardian: String,
}

/// Records a guardian of one of the calling biller's student or account numbers: that
/// resident's link to the number is then approved. Idempotent.
#[utoipa::path(post, path = "/v1/payer-guardians", security(("merchant" = [])), tag = "bills", request_body = GuardianRequest,
    responses((status = CREATED, body = GuardianView), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn add_guardian(State(state): State<AppState>, MerchantCaller(biller): MerchantCaller, AppJson(body): AppJson<GuardianRequest>) -> Result<Response, ApiError> {
    let payer = Payer { kind: payer_kind(&body.payer_kind)?, identifier: body.payer };
    let (payer, guardian) = state.bills.add_guardian(biller, &payer, &body.guardian_id_number).await?;
    Ok((StatusCode::CREATED, AppJson(GuardianView { payer, guardian })).into_response())
}

/// A social-security contribution.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContributionRequest {
    /// The city the insured person is enrolled in.
    city: u32,
    /// The insured person's PRC ID number: the caller's own, or a relative's.
    id_number: String,
    /// The contribution year.
    year: u16,
}

/// Pays a year's social-security contribution for oneself or a relative, within the city's
/// window.
#[utoipa::path(post, path = "/v1/social-security/contributions", security(("resident" = [])), tag = "bills", params(crate::IdempotencyKey), request_body = ContributionRequest,
    responses((status = CREATED, body = PaymentView), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn contribute(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<ContributionRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let body = &request.body;
        let payment = state.bills.contribute(&me, body.city, &body.id_number, body.year).await?;
        Ok(PaymentView::from(&payment))
    })
    .await
}

/// One of the caller's receipts (they paid it, or the bill is their own).
#[utoipa::path(get, path = "/v1/receipts/{receipt_no}", security(("resident" = [])), tag = "bills", params(("receipt_no" = String, Path)),
    responses((status = OK, body = ReceiptView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn receipt(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Path(number): Path<String>) -> Result<AppJson<ReceiptView>, ApiError> {
    let number = number.parse().map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "bill_not_found", "receipt not found"))?;
    let receipt = match state.country.get() {
        Some(country) => country.receipt_for(&state.bills, &me, number).await?,
        None => state.bills.receipt_for(&me, number).await?,
    };
    Ok(AppJson(ReceiptView::from(&receipt)))
}

/// A receipt-signing public key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReceiptKeyView {
    key_id: u32,
    /// Ed25519 public key, 64 hex digits.
    public_key: String,
}

/// The keys receipts are signed with (public: anyone holding a receipt may check it).
#[utoipa::path(get, path = "/v1/receipt-keys", security(()), tag = "bills", responses((status = OK, body = Vec<ReceiptKeyView>)))]
pub(crate) async fn receipt_keys(State(state): State<AppState>) -> AppJson<Vec<ReceiptKeyView>> {
    let key = state.bills.receipt_key();
    AppJson(vec![ReceiptKeyView { key_id: key.key_id, public_key: citypay_directory::hex::encode(&key.bytes) }])
}

/// A biller's reconciliation file of a day: each payment of its bills, with what settles.
#[utoipa::path(get, path = "/v1/reconciliation-files/{date}", security(("merchant" = [])), tag = "bills", params(("date" = String, Path, description = "YYYY-MM-DD")),
    responses((status = OK, content_type = "text/csv", body = String)))]
pub(crate) async fn reconciliation_file(State(state): State<AppState>, MerchantCaller(biller): MerchantCaller, Path(day): Path<String>) -> Result<Response, ApiError> {
    Ok(csv(state.bills.reconciliation(biller, date(&day)?).await?))
}

/// A merchant's settlement file of a day: opening balance, every movement, closing balance,
/// the payout.
#[utoipa::path(get, path = "/v1/settlement-files/{date}", security(("merchant" = [])), tag = "settlement", params(("date" = String, Path, description = "YYYY-MM-DD")),
    responses((status = OK, content_type = "text/csv", body = String)))]
pub(crate) async fn settlement_file(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Path(day): Path<String>) -> Result<Response, ApiError> {
    Ok(csv(state.settlement.file(merchant, date(&day)?).await?.to_csv()))
}

/// A day to settle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettlementRunRequest {
    /// `YYYY-MM-DD`, a day that has ended.
    date: String,
}

/// What a settlement run did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SettlementRunView {
    paid: usize,
    paid_amount: Money,
    carried: usize,
    failed: usize,
    already_settled: usize,
}

fn platform_only(operator: &OperatorCaller, what: &str) -> Result<(), ApiError> {
    if operator.role != Role::PlatformOperator {
        return Err(ApiError::forbidden(format!("only platform operators {what}")));
    }
    Ok(())
}

/// Pays each merchant's balance of a closed day (platform operators). A re-run pays nothing
/// twice and retries what the bank refused.
#[utoipa::path(post, path = "/v1/settlement-runs", security(("operator" = [])), tag = "settlement", params(crate::IdempotencyKey), request_body = SettlementRunRequest,
    responses((status = OK, body = SettlementRunView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn settle(State(state): State<AppState>, operator: OperatorCaller, request: Idempotent<SettlementRunRequest>) -> Result<Response, ApiError> {
    platform_only(&operator, "run settlement")?;
    let caller = Caller::Operator(operator.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::OK, async {
        let run = state.settlement.settle(date(&request.body.date)?).await?;
        Ok(SettlementRunView {
            paid: run.paid,
            paid_amount: money(run.paid_amount),
            carried: run.carried,
            failed: run.failed,
            already_settled: run.already_settled,
        })
    })
    .await
}

/// The insurance bureau's deposit into a city's medical-insurance fund.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FundDepositRequest {
    amount: Money,
    /// The bureau's transfer reference (the deposit's idempotency key).
    reference: String,
}

/// A fund's balance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FundView {
    city: u32,
    balance: Money,
}

fn operator_of(operator: &OperatorCaller, city: u32) -> Result<(), ApiError> {
    match operator.role {
        Role::PlatformOperator => Ok(()),
        Role::CityOperator if operator.city == Some(city) => Ok(()),
        Role::CityOperator => Err(ApiError::forbidden("a city operator acts for their own city only")),
    }
}

/// Records the insurance bureau's deposit for a city's fund (opened on first use).
#[utoipa::path(post, path = "/v1/insurance-funds/{city}/deposits", security(("operator" = [])), tag = "bills", params(("city" = u32, Path)), request_body = FundDepositRequest,
    responses((status = OK, body = FundView), (status = FORBIDDEN, body = ErrorBody)))]
pub(crate) async fn fund_deposit(State(state): State<AppState>, operator: OperatorCaller, Path(city): Path<u32>, AppJson(body): AppJson<FundDepositRequest>) -> Result<AppJson<FundView>, ApiError> {
    platform_only(&operator, "record insurance deposits")?;
    let fund = state.bills.open_insurance_fund(city).await?;
    state.bills.deposit_to_fund(city, cny(&body.amount)?, &body.reference).await?;
    let account = state.directory.shard().account(fund).await.map_err(|e| ApiError::unavailable(e.to_string(), std::time::Duration::from_secs(1)))?;
    let balance = account.map_or(0, |a| a.balance.net_posted());
    Ok(AppJson(FundView { city, balance: money(balance) }))
}

/// A contribution window.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowRequest {
    city: u32,
    year: u16,
    /// The city's social-security bureau (a merchant id).
    bureau_id: String,
    /// The contribution per person.
    amount: Money,
    /// Unix seconds.
    opens_at: u64,
    /// Unix seconds.
    closes_at: u64,
}

/// Opens (or changes) a city's social-security contribution window for a year.
#[utoipa::path(post, path = "/v1/contribution-windows", security(("operator" = [])), tag = "bills", request_body = WindowRequest,
    responses((status = NO_CONTENT), (status = FORBIDDEN, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn open_window(State(state): State<AppState>, operator: OperatorCaller, AppJson(body): AppJson<WindowRequest>) -> Result<StatusCode, ApiError> {
    operator_of(&operator, body.city)?;
    let bureau_id = body.bureau_id.parse().map_err(|_| ApiError::bad_request("invalid_field", "bureau_id: a merchant id"))?;
    let window = citypay_bills::ContributionWindow {
        city: body.city,
        year: body.year,
        bureau_id,
        amount: cny(&body.amount)?,
        opens_at: body.opens_at,
        closes_at: body.closes_at,
    };
    state.bills.open_contribution_window(window).await?;
    Ok(StatusCode::NO_CONTENT)
}
