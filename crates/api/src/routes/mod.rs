//! citypay's business routes: a thin translation from HTTP to the services. Every route but
//! registration and sign-in is authenticated (see [`auth`]); every mutating route takes an
//! `Idempotency-Key` whose first answer is kept and replayed (see [`replay`]).

mod account;
mod auth;
mod bills;
mod cookie_sessions;
mod dashboard;
mod errors;
mod gateway;
mod gateway_apps;
pub mod inputs;
mod notify_urls;
mod operators;
mod pages;
mod replay;
mod residents;
mod trades;
mod transfers;
mod statement;
mod till;
mod transit;
mod verifications;

use citypay_checkout::Checkout;
use citypay_directory::Directory;
use citypay_store::Migration;
use citypay_wallet::Wallet;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, CashierCaller, ClientAddress, MerchantCaller, OperatorCaller, ResidentCaller, ResidentSession, SESSION_COOKIE, SessionCaller, TrustedProxies};
pub(crate) use auth::cookie;
pub(crate) use gateway::CityMoving;
pub use dashboard::dashboard_pages;
pub use pages::people_pages;

/// What the handlers share.
#[derive(Debug)]
pub struct AppServices {
    /// Cities, residents, merchants, operators, sign-in.
    pub directory: Directory,
    /// Cards, top-ups, withdrawals.
    pub wallet: Wallet,
    /// Trades and payments.
    pub checkout: Checkout,
    /// Ride credentials, validators, taps, fares.
    pub transit: citypay_transit::Transit,
    /// Bills, their payments and receipts; insurance funds; contribution windows.
    pub bills: citypay_bills::Bills,
    /// Merchants' daily payouts and settlement files.
    pub settlement: citypay_settlement::Settlement,
    /// How long a resident's or operator's token lives, in seconds.
    pub token_ttl_s: u64,
    /// The sandbox bank, when the platform's bank is the sandbox: its register of card
    /// holders is filled through the API.
    pub sandbox_bank: Option<citypay_directory::SandboxBank>,
    /// The Alipay-compatible gateway's keys and settings.
    pub gateway: GatewaySettings,
    /// The country of shards this server's shard is part of (unset: a city on its own). Set
    /// once, after the services are made (the country holds their directory).
    pub country: std::sync::OnceLock<citypay_country::Country>,
}

/// The Alipay-compatible gateway's keys and settings.
#[derive(Debug, Default)]
pub struct GatewaySettings {
    /// The platform's key pairs that sign answers and notifications.
    pub keys: std::sync::Arc<citypay_gateway::PlatformKeys>,
    /// Whether notification URLs may name loopback, private and link-local addresses (tests,
    /// closed networks); refused by default.
    pub allow_private_notify: bool,
}

/// [`AppServices`] shared by every request: one reference count to raise per request, where
/// cloning each service would raise one per field.
#[derive(Clone, Debug)]
pub struct AppState(std::sync::Arc<AppServices>);

impl AppState {
    /// The state over `services`.
    pub fn new(services: AppServices) -> AppState {
        AppState(std::sync::Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// The API's own table: the first answer to each idempotency key.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "api",
    version: 1,
    name: "idempotency keys and their first answers",
    sqlite: "CREATE TABLE idempotency_keys (scope TEXT NOT NULL, idem_key TEXT NOT NULL,
        fingerprint BLOB NOT NULL, status BIGINT NOT NULL, body TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (scope, idem_key));",
    postgres: "CREATE TABLE idempotency_keys (scope TEXT NOT NULL, idem_key TEXT NOT NULL,
        fingerprint BYTEA NOT NULL, status BIGINT NOT NULL, body TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (scope, idem_key));",
}];

/// Every business route, documented, bound to `state`.
pub fn business_routes(state: AppState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(residents::register))
        .routes(routes!(residents::sign_in))
        .routes(routes!(cookie_sessions::sign_in))
        .routes(routes!(cookie_sessions::sign_out))
        .routes(routes!(residents::wallet))
        .routes(routes!(statement::statement))
        .routes(routes!(residents::link_card, residents::cards))
        .routes(routes!(residents::top_up))
        .routes(routes!(residents::withdraw))
        .routes(routes!(residents::enroll_device))
        .routes(routes!(residents::pay_qr))
        .routes(routes!(transfers::find_recipient))
        .routes(routes!(transfers::send, transfers::list))
        .routes(routes!(residents::preview_qr))
        .routes(routes!(account::sessions))
        .routes(routes!(account::end_session))
        .routes(routes!(account::end_other_sessions))
        .routes(routes!(account::change_password))
        .routes(routes!(account::freeze))
        .routes(routes!(account::unfreeze))
        .routes(routes!(account::devices))
        .routes(routes!(account::revoke_device))
        .routes(routes!(operators::sign_in))
        .routes(routes!(operators::onboard_city))
        .routes(routes!(operators::onboard_merchant))
        .routes(routes!(operators::issue_merchant_key))
        .routes(routes!(verifications::verify_in_person))
        .routes(routes!(verifications::register_card_holder))
        .routes(routes!(dashboard::city_stats))
        .routes(routes!(trades::create))
        .routes(routes!(trades::get))
        .routes(routes!(trades::pay_with_code))
        .routes(routes!(trades::refund))
        .routes(routes!(trades::get_refund))
        .routes(routes!(trades::refund_period, trades::set_refund_period))
        .routes(routes!(trades::close))
        .routes(routes!(trades::cancel))
        .routes(routes!(trades::cash_sale))
        .routes(routes!(trades::static_qr))
        .routes(routes!(trades::list))
        .routes(routes!(trades::issue_key))
        .routes(routes!(till::create_cashier, till::cashiers))
        .routes(routes!(till::update_cashier))
        .routes(routes!(till::sign_in))
        .routes(routes!(till::me))
        .routes(routes!(till::create))
        .routes(routes!(till::pay_with_code))
        .routes(routes!(till::cash_sale))
        .routes(routes!(till::get))
        .routes(routes!(till::shift))
        .routes(routes!(till::refund))
        .routes(routes!(till::settlement_file))
        .routes(routes!(trades::revoke_key))
        .routes(routes!(transit::issue_credential))
        .routes(routes!(transit::pay_arrears))
        .routes(routes!(transit::register_validator))
        .routes(routes!(transit::upload_taps))
        .routes(routes!(transit::deny_list))
        .routes(routes!(transit::ride_keys))
        .routes(routes!(transit::fare_run))
        .routes(routes!(transit::key_schedule, transit::rotate_key))
        .routes(routes!(transit::revoke_key))
        .routes(routes!(transit::revenue))
        .routes(routes!(transit::operator_legs))
        .routes(routes!(transit::my_day))
        .routes(routes!(bills::issue))
        .routes(routes!(bills::get))
        .routes(routes!(bills::pay_cash))
        .routes(routes!(bills::my_bills))
        .routes(routes!(bills::pay))
        .routes(routes!(bills::consent_to_fund))
        .routes(routes!(bills::claim_from_fund))
        .routes(routes!(bills::link_payer, bills::my_links))
        .routes(routes!(bills::link_requests))
        .routes(routes!(bills::approve_link_request))
        .routes(routes!(bills::decline_link_request))
        .routes(routes!(bills::add_guardian))
        .routes(routes!(bills::contribute))
        .routes(routes!(bills::receipt))
        .routes(routes!(bills::receipt_keys))
        .routes(routes!(bills::reconciliation_file))
        .routes(routes!(bills::settlement_file))
        .routes(routes!(bills::settle))
        .routes(routes!(bills::fund_deposit))
        .routes(routes!(bills::open_window))
        .routes(routes!(gateway_apps::create_app, gateway_apps::list_apps))
        .routes(routes!(gateway_apps::update_app))
        .routes(routes!(gateway_apps::operator_create_app, gateway_apps::operator_list_apps))
        .routes(routes!(gateway_apps::operator_update_app))
        .routes(routes!(gateway_apps::public_key))
        .with_state(state)
}

/// `/gateway.do`, GET and POST: Alipay's protocol, not part of the JSON API's document (its
/// callers are Alipay's SDKs; the protocol is Alipay's). Every answer is HTTP 200.
pub fn gateway_pages(state: AppState) -> axum::Router {
    axum::Router::new().route("/gateway.do", axum::routing::get(gateway::gateway_do).post(gateway::gateway_do)).with_state(state)
}
