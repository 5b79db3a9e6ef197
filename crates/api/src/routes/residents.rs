//! Residents: registration, sign-in, the wallet, payment devices, paying by QR.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citypay_api_types::{ErrorBody, Money};
use citypay_directory::hex;
use citypay_directory::{NewResident, SignInFrom, SignedIn};
use citypay_identity::AccountClass;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::auth::{Caller, ClientAddress, ResidentCaller};
use super::replay::once;
use super::trades::TradeView;
use super::AppState;
use crate::{ApiError, AppJson, IdempotencyKey, Idempotent};

/// The only currency so far.
pub(crate) fn cny(amount: &Money) -> Result<i64, ApiError> {
    amount.validate_positive()?;
    if amount.currency != "CNY" {
        return Err(ApiError::unprocessable("currency_not_supported", "only CNY is supported"));
    }
    Ok(amount.amount)
}

pub(crate) fn money(fen: i64) -> Money {
    Money::new(fen, "CNY")
}

/// Registration under a real name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    /// Home city, GB/T 2260 code (Hangzhou 330100).
    city: u32,
    /// Legal name.
    name: String,
    /// Mobile number, 11 digits.
    mobile: String,
    /// PRC resident ID number (18 characters).
    id_number: String,
    /// Password, at least 8 characters.
    password: String,
    /// Optional, and only `I`: every account opens at PBOC class I, and a higher class follows
    /// verification (bank cards confirmed by three issuing banks: II; by five, or an ID card
    /// checked in person: III). Asking for `II` or `III` is refused
    /// (422 `account_class_not_verified`).
    account_class: Option<String>,
}

/// A registered resident.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ResidentView {
    resident_id: String,
    city: u32,
    id_masked: String,
    account_class: String,
}

/// Registers a resident and opens their wallet.
#[utoipa::path(post, path = "/v1/residents", security(()), tag = "residents", params(IdempotencyKey), request_body = RegisterRequest,
    responses((status = CREATED, body = ResidentView), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn register(State(state): State<AppState>, request: Idempotent<RegisterRequest>) -> Result<Response, ApiError> {
    let body = request.body;
    // Registration is public: its keys are scoped by the mobile number it registers.
    let scope = Caller::Anonymous(hex::encode(&Sha256::digest(body.mobile.trim().as_bytes())[..16]));
    if let Some(code) = &body.account_class {
        match AccountClass::from_code(code) {
            Some(AccountClass::I) => {}
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "account_class_not_verified",
                    "every account opens at class I; class II follows bank cards confirmed by three issuing banks, class III five banks or an ID card checked in person",
                ));
            }
            None => return Err(ApiError::unprocessable("invalid_field", "account_class must be I, II or III")),
        }
    }
    let new = NewResident { city: body.city, name: body.name, mobile: body.mobile, id_number: body.id_number, password: body.password };
    let view = |r: &citypay_directory::Resident| ResidentView {
        resident_id: r.id.to_string(),
        city: r.city,
        id_masked: r.id_masked.clone(),
        account_class: r.class.code().to_owned(),
    };
    once(&state, &scope, &request.key, request.fingerprint, StatusCode::CREATED, async {
        // The answer is kept with the registration: a retry could not rebuild it (the identity
        // would be registered by then).
        let keep = |r: &citypay_directory::Resident| vec![super::replay::answer_row(&state, &scope, &request.key, request.fingerprint, StatusCode::CREATED, &view(r))];
        let r = match state.country.get() {
            // Claimed in the country first: one ID number and one mobile number in the country.
            Some(country) => {
                let owner = format!("{}:{}", scope.scope(), request.key.as_str());
                country.register(&new, &owner, || state.directory.register_resident_keeping(&new, keep)).await.map_err(ApiError::from)?
            }
            None => state.directory.register_resident_keeping(&new, keep).await?,
        };
        Ok(view(&r))
    })
    .await
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignInRequest {
    /// Mobile number.
    pub(crate) mobile: String,
    /// Password.
    pub(crate) password: String,
    /// The `client_ticket` of this client's last successful sign-in to this account: its wrong
    /// passwords are then counted for this client alone, so strangers' cannot lock it out.
    pub(crate) client_ticket: Option<String>,
}

/// A bearer token and its session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Session {
    /// `Authorization: Bearer <token>`.
    pub(crate) token: String,
    /// Always `Bearer`.
    pub(crate) token_type: String,
    /// Seconds until it expires.
    pub(crate) expires_in: u64,
    /// The session this token belongs to (ended by signing out).
    pub(crate) session_id: String,
    /// Send it with this account's next sign-ins from this client (valid 90 days).
    pub(crate) client_ticket: String,
}

impl Session {
    pub(crate) fn new(signed_in: SignedIn, expires_in: u64) -> Session {
        Session {
            token: signed_in.token.expose().clone(),
            token_type: "Bearer".into(),
            expires_in,
            session_id: signed_in.session,
            client_ticket: signed_in.ticket.expose().clone(),
        }
    }
}

/// Signs a resident in. Wrong passwords are limited per account (or known client) and per
/// client address: past the limit, 429 with `Retry-After`.
#[utoipa::path(post, path = "/v1/sessions", security(()), tag = "residents", request_body = SignInRequest,
    responses((status = OK, body = Session), (status = UNAUTHORIZED, body = ErrorBody), (status = TOO_MANY_REQUESTS, body = ErrorBody)))]
pub(crate) async fn sign_in(State(state): State<AppState>, ClientAddress(address): ClientAddress, AppJson(body): AppJson<SignInRequest>) -> Result<AppJson<Session>, ApiError> {
    let from = SignInFrom { address, ticket: body.client_ticket };
    let (_, signed_in) = state.directory.sign_in_resident(&body.mobile, &body.password, state.token_ttl_s, &from).await?;
    Ok(AppJson(Session::new(signed_in, state.token_ttl_s)))
}

/// A wallet's balances.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct WalletView {
    /// Posted balance.
    balance: Money,
    /// What can be spent now (posted minus held).
    available: Money,
    /// Held by pending transfers.
    held: Money,
    /// PBOC account class.
    account_class: String,
}

/// The caller's wallet.
#[utoipa::path(get, path = "/v1/wallet", security(("resident" = [])), tag = "wallet", responses((status = OK, body = WalletView), (status = UNAUTHORIZED, body = ErrorBody)))]
pub(crate) async fn wallet(State(state): State<AppState>, ResidentCaller(me): ResidentCaller) -> Result<AppJson<WalletView>, ApiError> {
    let account = state.wallet.account(&me).await?;
    Ok(AppJson(WalletView {
        balance: money(account.balance.net_posted()),
        available: money(account.balance.available()),
        held: money(account.balance.debits_pending),
        account_class: me.class.code().to_owned(),
    }))
}

/// A card to link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkCardRequest {
    /// The card number (spaces allowed).
    card_number: String,
}

/// A linked card.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CardView {
    card_id: String,
    masked: String,
    brand: String,
    /// Present when a UnionPay number that fails the Luhn check was accepted.
    warnings: Vec<String>,
    /// The resident's PBOC account class after the bank confirmed the card's holder.
    account_class: String,
}

/// A linked card as its owner sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LinkedCardView {
    card_id: String,
    masked: String,
    brand: String,
}

/// The caller's linked cards.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LinkedCardsView {
    cards: Vec<LinkedCardView>,
}

/// The cards linked to the caller's wallet (masked), for top-ups and withdrawals.
#[utoipa::path(get, path = "/v1/wallet/cards", security(("resident" = [])), tag = "wallet", responses((status = OK, body = LinkedCardsView)))]
pub(crate) async fn cards(State(state): State<AppState>, ResidentCaller(me): ResidentCaller) -> Result<AppJson<LinkedCardsView>, ApiError> {
    let cards = state.wallet.cards(&me).await?;
    let cards = cards.into_iter().map(|c| LinkedCardView { card_id: c.id.to_string(), masked: c.masked, brand: c.brand }).collect();
    Ok(AppJson(LinkedCardsView { cards }))
}

/// Links a bank card to the caller's wallet once the card's bank confirms it issued the card to
/// the caller's registered name and ID number (422 `card_holder_mismatch` otherwise). Each
/// issuing bank that confirms counts towards the account class.
#[utoipa::path(post, path = "/v1/wallet/cards", security(("resident" = [])), tag = "wallet", params(IdempotencyKey), request_body = LinkCardRequest,
    responses((status = CREATED, body = CardView), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn link_card(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<LinkCardRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let (card, class) = state.wallet.link_card(&me, &request.body.card_number).await?;
        let warnings = if card.luhn_warning { vec!["unionpay_luhn".to_owned()] } else { Vec::new() };
        Ok(CardView { card_id: card.id.to_string(), masked: card.masked, brand: card.brand, warnings, account_class: class.code().to_owned() })
    })
    .await
}

/// Money between a card and the wallet.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MovementRequest {
    /// A linked card's id.
    card_id: String,
    /// How much.
    amount: Money,
}

/// A completed movement.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct MovementView {
    amount: Money,
    balance: Money,
}

fn card_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::unprocessable("invalid_field", "card_id is not a card id"))
}

/// Tops the wallet up from a linked card.
#[utoipa::path(post, path = "/v1/wallet/top-ups", security(("resident" = [])), tag = "wallet", params(IdempotencyKey), request_body = MovementRequest,
    responses((status = CREATED, body = MovementView), (status = PAYMENT_REQUIRED, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn top_up(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<MovementRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    let key = request.key.as_str().to_owned();
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let amount = cny(&request.body.amount)?;
        let m = state.wallet.top_up(&me, card_id(&request.body.card_id)?, amount, &key).await?;
        Ok(MovementView { amount: money(m.amount), balance: money(m.balance) })
    })
    .await
}

/// Withdraws from the wallet to a linked card.
#[utoipa::path(post, path = "/v1/wallet/withdrawals", security(("resident" = [])), tag = "wallet", params(IdempotencyKey), request_body = MovementRequest,
    responses((status = CREATED, body = MovementView), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn withdraw(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<MovementRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    let key = request.key.as_str().to_owned();
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let amount = cny(&request.body.amount)?;
        let m = state.wallet.withdraw(&me, card_id(&request.body.card_id)?, amount, &key).await?;
        Ok(MovementView { amount: money(m.amount), balance: money(m.balance) })
    })
    .await
}

/// An enrolled payment device: the slot and the secret its codes derive from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceView {
    /// The device's slot (8 digits inside every code).
    device: u32,
    /// The secret, hex; shown once, never again.
    secret: String,
}

/// Enrols a payment device for customer-presented codes. The answer holds a secret, so it is
/// not kept for replay: a retry enrols another device.
#[utoipa::path(post, path = "/v1/payment-devices", security(("resident" = [])), tag = "wallet", responses((status = CREATED, body = DeviceView)))]
pub(crate) async fn enroll_device(State(state): State<AppState>, ResidentCaller(me): ResidentCaller) -> Result<Response, ApiError> {
    // In a country, a slot of a device enrolled before slots carried buckets is not drawn.
    let (device, secret) = match state.country.get() {
        Some(country) => country.enroll_device(&state.checkout, &me).await?,
        None => state.checkout.enroll_device(&me).await?,
    };
    Ok((StatusCode::CREATED, AppJson(DeviceView { device, secret: hex::encode(secret.expose()) })).into_response())
}

/// A scanned merchant QR code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayQrRequest {
    /// The text inside the QR code.
    payload: String,
    /// For a static (counter) QR: the amount the payer typed.
    amount: Option<Money>,
}

/// A scanned QR code to look at before paying.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QrPreviewRequest {
    /// The text inside the QR code.
    payload: String,
}

/// Whom a QR code pays, and how much.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct QrPreview {
    /// The merchant's registered name (not the name printed in the code).
    merchant_name: String,
    /// The amount a dynamic QR asks for; absent for a counter code (the payer types it).
    amount: Option<Money>,
}

/// What a scanned QR code would pay, for the payer to confirm; changes nothing. A paid or
/// closed order's code is refused (409 `trade_closed`).
#[utoipa::path(post, path = "/v1/payments/qr/preview", security(("resident" = [])), tag = "payments", request_body = QrPreviewRequest,
    responses((status = OK, body = QrPreview), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn preview_qr(State(state): State<AppState>, ResidentCaller(_): ResidentCaller, AppJson(body): AppJson<QrPreviewRequest>) -> Result<AppJson<QrPreview>, ApiError> {
    let (merchant, amount) = match state.country.get() {
        Some(country) => country.checkout_for(&state.checkout, &body.payload)?.qr_preview(&body.payload).await?,
        None => state.checkout.qr_preview(&body.payload).await?,
    };
    Ok(AppJson(QrPreview { merchant_name: merchant.name, amount: amount.map(money) }))
}

/// Pays the merchant a scanned QR code names.
#[utoipa::path(post, path = "/v1/payments/qr", security(("resident" = [])), tag = "payments", params(IdempotencyKey), request_body = PayQrRequest,
    responses((status = OK, body = TradeView), (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn pay_qr(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, request: Idempotent<PayQrRequest>) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    let key = request.key.as_str().to_owned();
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::OK, async {
        let typed = request.body.amount.as_ref().map(cny).transpose()?;
        let trade = match state.country.get() {
            Some(country) => country.pay_qr(&state.checkout, &me, &request.body.payload, typed, &key).await?,
            None => state.checkout.pay_qr(&me, &request.body.payload, typed, &key).await?,
        };
        Ok(TradeView::from(&trade))
    })
    .await
}
