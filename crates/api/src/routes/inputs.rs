//! What the routes read from a request before they need any state, callable without a server:
//! every JSON request body, parsed as its handler parses it (and converted as far as the
//! handler does alone), and the fields `/gateway.do` reads. The fuzz targets
//! (`citypay-fuzz-targets`) feed them arbitrary bytes.

use citypay_api_types::Money;
use citypay_gateway::Failure;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{account, bills, gateway, gateway_apps, operators, residents, till, trades, transfers, transit, verifications};
use crate::ApiError;
use crate::json::parse_json;

/// A request body read as its route reads it.
pub type ReadBody = fn(&[u8]) -> Result<(), ApiError>;

/// Every JSON request body the routes take, by type name.
pub const REQUEST_BODIES: &[(&str, ReadBody)] = &[
    ("Money", |b| residents::cny(&parse_json::<Money>(b)?).map(drop)),
    ("RegisterRequest", parse::<residents::RegisterRequest>),
    ("SignInRequest", parse::<residents::SignInRequest>),
    ("LinkCardRequest", parse::<residents::LinkCardRequest>),
    ("MovementRequest", parse::<residents::MovementRequest>),
    ("PayQrRequest", parse::<residents::PayQrRequest>),
    ("QrPreviewRequest", parse::<residents::QrPreviewRequest>),
    ("RecipientQuery", parse::<transfers::RecipientQuery>),
    ("SendRequest", parse::<transfers::SendRequest>),
    ("TradeRequest", |b| parse_json::<trades::TradeRequest>(b)?.new_trade().map(drop)),
    ("CodePaymentRequest", parse::<trades::CodePaymentRequest>),
    ("RefundRequest", parse::<trades::RefundRequest>),
    ("RefundPeriod", parse::<trades::RefundPeriod>),
    ("StaticQr", parse::<trades::StaticQr>),
    ("NewCashier", parse::<till::NewCashier>),
    ("CashierChange", parse::<till::CashierChange>),
    ("TillSignIn", parse::<till::TillSignIn>),
    ("NewGatewayApp", parse::<gateway_apps::NewGatewayApp>),
    ("GatewayAppUpdate", parse::<gateway_apps::GatewayAppUpdate>),
    ("CredentialRequest", parse::<transit::CredentialRequest>),
    ("ValidatorRequest", parse::<transit::ValidatorRequest>),
    ("TapUpload", |b| parse_json::<transit::TapUpload>(b)?.taps(1).map(drop)),
    ("FareRunRequest", parse::<transit::FareRunRequest>),
    ("RotationRequest", parse::<transit::RotationRequest>),
    ("BillRequest", parse::<bills::BillRequest>),
    ("PayRequest", parse::<bills::PayRequest>),
    ("CashRequest", parse::<bills::CashRequest>),
    ("LinkRequest", parse::<bills::LinkRequest>),
    ("GuardianRequest", parse::<bills::GuardianRequest>),
    ("ContributionRequest", parse::<bills::ContributionRequest>),
    ("WindowRequest", parse::<bills::WindowRequest>),
    ("FundDepositRequest", parse::<bills::FundDepositRequest>),
    ("SettlementRunRequest", parse::<bills::SettlementRunRequest>),
    ("InPersonRequest", parse::<verifications::InPersonRequest>),
    ("CardHolderRequest", parse::<verifications::CardHolderRequest>),
    ("CityView", parse::<operators::CityView>),
    ("OperatorSignIn", parse::<operators::OperatorSignIn>),
    ("MerchantRequest", parse::<operators::MerchantRequest>),
    ("PasswordChange", parse::<account::PasswordChange>),
    ("Unfreeze", parse::<account::Unfreeze>),
];

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), ApiError> {
    parse_json::<T>(bytes).map(drop)
}

/// `/gateway.do`'s `timestamp` (`yyyy-MM-dd HH:mm:ss`) as Unix seconds, read as UTC.
pub fn gateway_timestamp(text: &str) -> Option<i64> {
    gateway::parse_timestamp(text)
}

/// A yuan amount of `biz_content` in fen, at least 0.01 yuan.
pub fn gateway_amount(biz: &Map<String, Value>, name: &str) -> Result<i64, Failure> {
    gateway::amount(biz, name)
}

/// `biz_content`'s `timeout_express` in seconds, at most 2 hours.
pub fn gateway_timeout(biz: &Map<String, Value>) -> Result<Option<u64>, Failure> {
    gateway::timeout(biz)
}
