//! Paying a shop. A trade is keyed by the merchant's own order number (`out_trade_no`) and
//! follows the states merchants know from Alipay: `WAIT_BUYER_PAY`, `TRADE_SUCCESS`,
//! `TRADE_CLOSED`, `TRADE_FINISHED`. A resident pays by scanning the merchant's EMVCo QR code
//! or by showing a one-time payment code; merchants refund, close and cancel; cash sales are
//! recorded too. Every change of a trade writes an event to the outbox in the same transaction.
//!
//! Exactly once: a trade's payment commits only under a guard checked by the single writer (the
//! trade is new, or its version is unchanged), so two payers racing for one trade cannot both
//! pay, and a retry finds the trade its first attempt paid. Entry ids derive from the trade,
//! the payer and the attempt. Refunds can never exceed what was paid.

pub mod notify;
mod refund;
mod schema;
mod trade;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use citypay_codes::mpm::{Charge, CitypayQr, Payload};
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::{AccountKind, BALANCE_PAYMENT, Directory, DirectoryError, Merchant, PlatformAccounts, Resident, Secret, account_id, derived_event_id, ordered_event_id, uint};
use citypay_ledger::{Currency, Entry, Event, Leg, Status};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{OnConflict, ServiceRow, Value};
use sha2::{Digest, Sha256};

pub use refund::{DEFAULT_REFUND_PERIOD_S, MAX_REFUND_PERIOD_S, Refund, RefundAnswer, RefundFuture, RefundHold, RefundStatus, RefundsElsewhere, SentRefund};
pub use schema::MIGRATIONS;
pub use trade::{Method, Trade, TradeStatus};

/// A till's retry of an order that exists: answered from it (or refused, when it is another).
pub fn answer_existing_order(existing: Trade, new: &NewTrade) -> Result<Trade, CheckoutError> {
    answer_existing(existing, new)
}

/// A trade's payment as the merchant's shard writes it when the money comes from another
/// shard ([`Checkout::payment_from_elsewhere`]).
#[derive(Clone, Debug)]
pub struct PaymentHere {
    /// The trade as paid.
    pub trade: Trade,
    /// The merchant's account, which the money is credited to.
    pub merchant_account: u64,
    /// The trade's row and its notifications.
    pub rows: Vec<ServiceRow>,
    /// That the trade is still the one read (waiting for its payment).
    pub guards: Vec<Guard>,
    /// The fee, merchant → fee revenue, in the credit's entry.
    pub legs: Vec<Leg>,
}
pub use notify::ALIPAY_NOTIFICATION;

/// Ledger transfer codes of checkout movements.
pub mod codes {
    pub use citypay_directory::transfer_codes::{FEE, FEE_RETURNED, PAYMENT, REFUND};
}

/// Unpaid trades close themselves after this long unless the merchant says otherwise.
pub const DEFAULT_TIMEOUT_S: u64 = 15 * 60;
/// Wrong codes naming one device that all merchants together may send in an hour; past it
/// the device's codes are refused until the hour ends (a cool-down, never a lock).
pub const DEVICE_FAILURES_PER_HOUR_MAX: i64 = 10;
/// Wrong codes naming one device that one merchant may send in an hour; past it that
/// merchant's codes for the device are refused until the hour ends.
pub const DEVICE_MERCHANT_FAILURES_PER_HOUR_MAX: i64 = 3;
/// The window wrong codes per device are counted over.
const DEVICE_WINDOW_S: u64 = 3600;
/// Devices whose code checks one server runs one at a time share one of these turns.
const DEVICE_TURNS: usize = 1024;
/// Failed payment codes one merchant may send per minute.
pub const MERCHANT_FAILURES_PER_MINUTE_MAX: u32 = 20;
/// Past time steps (30 s each) a payment code stays valid for, beside the current one.
const CODE_WINDOW_STEPS: u32 = 2;
/// Refused payments of one trade by one payer that a new attempt steps over.
const REFUSALS_MAX: u32 = 64;
/// Times a compare-and-swap on a trade is retried when another change won the race.
const CAS_ATTEMPTS_MAX: usize = 8;

/// What went wrong, with a stable code for the API.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// From the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A field is missing or malformed.
    #[error("{field}: {message}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The QR payload is malformed (the message says exactly how).
    #[error("invalid QR payload: {0}")]
    InvalidQr(String),
    /// A well-formed payload of another scheme (Pix, PromptPay, UnionPay, ...).
    #[error("scheme not accepted: {0}")]
    SchemeNotAccepted(String),
    /// No such trade for this merchant.
    #[error("trade not found")]
    TradeNotFound,
    /// The order number was used with a different trade.
    #[error("out_trade_no was used for a different trade")]
    OutTradeNoReused,
    /// Someone else paid this trade.
    #[error("the trade is already paid")]
    AlreadyPaid,
    /// The trade is closed (timed out, closed, cancelled or fully refunded).
    #[error("the trade is closed")]
    TradeClosed,
    /// The trade is not paid, so it cannot be refunded.
    #[error("the trade is not paid")]
    NotPaid,
    /// The trade's refund period is over.
    #[error("the trade's refund period is over")]
    TradeFinished,
    /// No refund of this trade has this request number.
    #[error("refund not found")]
    RefundNotFound,
    /// The refund would exceed what was paid.
    #[error("refunds would exceed the amount paid")]
    RefundExceedsPaid,
    /// The refund request number was used with a different amount.
    #[error("out_request_no was used for a different refund")]
    RefundRequestReused,
    /// The amount sent disagrees with the amount the QR code asks for.
    #[error("the QR code asks for {qr} fen, not the {sent} fen sent")]
    AmountMismatch {
        /// What the QR code asks for, in fen.
        qr: i64,
        /// What the payer sent, in fen.
        sent: i64,
    },
    /// The payment code is malformed, unknown or wrong.
    #[error("invalid payment code: {0}")]
    InvalidCode(String),
    /// The payment code was used already.
    #[error("this payment code was used already")]
    CodeUsed,
    /// Too many wrong codes named this device this hour (from this merchant, or from all):
    /// its codes are refused until the hour ends.
    #[error("too many wrong codes for this payment device; retry in {retry_after_s} s")]
    DeviceCoolingDown {
        /// Seconds until the hour ends.
        retry_after_s: u64,
    },
    /// No such payment device of this resident.
    #[error("payment device not found")]
    DeviceNotFound,
    /// The merchant sent too many wrong codes recently.
    #[error("too many wrong payment codes; try again in a minute")]
    TooManyAttempts,
    /// The ledger refused (insufficient funds, a cap, ...).
    #[error("refused: {0}")]
    Refused(Status),
    /// Unavailable; retrying with the same keys is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Sent to the merchant's shard and its answer not heard: it will be paid or given back,
    /// never both; asking again with the same Idempotency-Key tells which.
    #[error("the payment's outcome is not known yet; retry with the same Idempotency-Key")]
    OutcomeUnknown,
    /// The merchant's shard did not take the payment (the reason's code): nothing was paid.
    #[error("the merchant's shard did not take the payment ({0}); nothing was paid")]
    Returned(&'static str),
    /// The command names an account another shard holds, and this server reaches no other
    /// shard (it is not a server of a country). Nothing moved.
    #[error("the payment was made from a wallet on another city's shard, which this server does not reach; nothing moved")]
    AccountElsewhere,
    /// The payer's shard did not take the refund (its reason's code): the money is back with
    /// the merchant and the refund's record says `REFUND_FAILED`; refund again under a new
    /// `out_request_no`.
    #[error("the payer's shard did not take the refund ({0}); the money is back with the merchant: refund again under a new out_request_no")]
    RefundReturned(&'static str),
}

impl CheckoutError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            CheckoutError::Directory(e) => e.code(),
            CheckoutError::InvalidField { .. } => "invalid_field",
            CheckoutError::InvalidQr(_) => "invalid_qr",
            CheckoutError::SchemeNotAccepted(_) => "scheme_not_accepted",
            CheckoutError::TradeNotFound => "trade_not_found",
            CheckoutError::OutTradeNoReused => "out_trade_no_reused",
            CheckoutError::AlreadyPaid => "trade_already_paid",
            CheckoutError::TradeClosed => "trade_closed",
            CheckoutError::NotPaid => "trade_not_paid",
            CheckoutError::TradeFinished => "trade_finished",
            CheckoutError::RefundNotFound => "refund_not_found",
            CheckoutError::RefundExceedsPaid => "refund_exceeds_paid",
            CheckoutError::RefundRequestReused => "out_request_no_reused",
            CheckoutError::AmountMismatch { .. } => "amount_mismatch",
            CheckoutError::InvalidCode(_) => "invalid_payment_code",
            CheckoutError::CodeUsed => "payment_code_used",
            CheckoutError::DeviceCoolingDown { .. } => "payment_device_cooling_down",
            CheckoutError::DeviceNotFound => "payment_device_not_found",
            CheckoutError::TooManyAttempts => "too_many_attempts",
            CheckoutError::Refused(status) => status.name(),
            CheckoutError::Unavailable(_) => "unavailable",
            CheckoutError::OutcomeUnknown => "outcome_unknown",
            CheckoutError::Returned(_) => "payment_returned",
            CheckoutError::AccountElsewhere => "account_on_another_shard",
            CheckoutError::RefundReturned(_) => "refund_returned",
        }
    }
}

/// A trade as the merchant asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTrade {
    /// The merchant's order number: 1 to 64 letters, digits or underscores, unique per merchant.
    pub out_trade_no: String,
    /// Amount in fen.
    pub amount: i64,
    /// What is sold (1 to 256 characters).
    pub subject: String,
    /// Seconds until an unpaid trade closes itself (default 15 minutes).
    pub timeout_s: Option<u64>,
    /// Where the trade's changes are notified in Alipay's form (a gateway trade), if anywhere.
    pub notify: Option<GatewayNotify>,
    /// The cashier who rang it up at the till, if it was rung up there.
    pub cashier: Option<u64>,
}

/// A gateway trade's notification target: Alipay's `trade_status_sync` form posts, signed with
/// the key of the platform that signs for the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayNotify {
    /// The merchant's app the trade was made through.
    pub app_id: u64,
    /// The trade's `notify_url`, or the app's default.
    pub url: String,
}

/// A scanned payload that citypay pays, and the merchant it names. A scanner's line ending is
/// no part of the payload. Other schemes' payloads are read as their banks' apps read them
/// (incomplete ones too) to say whose they are; citypay's own must be complete, as citypay
/// writes them, and in yuan (amounts are read in the payload's own currency's minor units).
/// The trade a counter (static) QR payment makes: numbered by the payer and their idempotency
/// key, so a retry finds it.
fn counter_trade(payer: u64, idempotency_key: &str, amount: i64) -> NewTrade {
    let digest = Sha256::digest(format!("{payer}\u{0}{idempotency_key}").as_bytes());
    NewTrade {
        notify: None,
        cashier: None,
        out_trade_no: format!("S{}", citypay_directory::hex::encode(&digest[..12])),
        amount,
        subject: "counter payment".into(),
        timeout_s: None,
    }
}

/// The merchant a citypay QR payload names (to find its shard).
pub fn payload_merchant(text: &str) -> Result<u64, CheckoutError> {
    citypay_payload(text).map(|(_, merchant)| merchant)
}

fn citypay_payload(text: &str) -> Result<(Payload, u64), CheckoutError> {
    let payload = Payload::decode(text.trim()).map_err(|e| CheckoutError::InvalidQr(e.to_string()))?;
    let Some(merchant) = payload.citypay_merchant() else {
        let schemes: Vec<String> = payload.schemes().iter().map(|s| format!("{s:?}")).collect();
        return Err(CheckoutError::SchemeNotAccepted(schemes.join(", ")));
    };
    payload.require_complete().map_err(|e| CheckoutError::InvalidQr(e.to_string()))?;
    if payload.currency() != Some("156") {
        return Err(CheckoutError::InvalidQr("citypay takes payments in CNY (currency 156)".into()));
    }
    let merchant_id = merchant.parse().map_err(|_| CheckoutError::InvalidQr("unknown merchant".into()))?;
    Ok((payload, merchant_id))
}

/// The checkout service.
#[derive(Clone)]
pub struct Checkout {
    directory: Directory,
    /// Wrong codes per merchant in the current minute (per server; a shared limiter would be
    /// needed with several API servers).
    failures: Arc<Mutex<HashMap<u64, (u64, u32)>>>,
    /// Merchants' refund periods as this server last read them: (seconds, read at).
    periods: Arc<Mutex<HashMap<u64, (u64, u64)>>>,
    /// A device's code is read, checked and (when wrong) counted in its turn, so one server
    /// never checks two guesses at one device against the same count.
    device_turns: Arc<[tokio::sync::Mutex<()>]>,
    /// How a refund reaches a wallet of another shard, in a server of a country.
    elsewhere: Arc<std::sync::OnceLock<Arc<dyn refund::RefundsElsewhere>>>,
}

/// A resident's payment device, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The slot its codes carry.
    pub slot: u32,
    /// When it was enrolled (Unix seconds).
    pub created_at: u64,
    /// When its owner revoked it.
    pub revoked_at: Option<u64>,
    /// Wrong codes naming it this hour (all merchants): someone may be guessing.
    pub wrong_codes_this_hour: i64,
    /// While cooling down, when its codes work again.
    pub cooling_down_until: Option<u64>,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout").finish_non_exhaustive()
    }
}

/// `text` cut to `max` characters if it is printable ASCII, else `None`.
fn ascii_field(text: &str, max: usize) -> Option<String> {
    let printable = !text.is_empty() && text.bytes().all(|b| (0x20..=0x7E).contains(&b));
    printable.then(|| text.chars().take(max).collect())
}

fn int(v: i64) -> Value {
    Value::Int(v)
}


/// The answer to a code payment whose order already exists: the paid order itself when the
/// amounts agree (a retry), else why the order number cannot be paid again.
fn answer_existing(existing: Trade, new: &NewTrade) -> Result<Trade, CheckoutError> {
    match existing.status {
        // Closed whatever it asked for (an order cancelled before it arrived has no amount).
        TradeStatus::TradeClosed => Err(CheckoutError::TradeClosed),
        _ if existing.amount != new.amount => Err(CheckoutError::OutTradeNoReused),
        TradeStatus::TradeSuccess | TradeStatus::TradeFinished => Ok(existing),
        TradeStatus::WaitBuyerPay => Err(CheckoutError::OutTradeNoReused),
    }
}

/// An order number: 1 to 64 letters, digits or `_` (Alipay's documented set).
fn check_order_no(no: &str) -> Result<(), CheckoutError> {
    if no.is_empty() || no.len() > 64 || !no.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CheckoutError::InvalidField { field: "out_trade_no", message: "1 to 64 letters, digits or _".into() });
    }
    Ok(())
}

fn check_new_trade(new: &NewTrade) -> Result<(), CheckoutError> {
    check_order_no(&new.out_trade_no)?;
    // Alipay's range: 0.01 to 100,000,000 yuan.
    if new.amount <= 0 || new.amount > 10_000_000_000 {
        return Err(CheckoutError::InvalidField { field: "amount", message: "between 1 fen and 100,000,000 yuan".into() });
    }
    let subject_chars = new.subject.chars().count();
    if subject_chars == 0 || subject_chars > 256 || new.subject.chars().any(char::is_control) {
        return Err(CheckoutError::InvalidField { field: "subject", message: "1 to 256 characters".into() });
    }
    if new.timeout_s.is_some_and(|t| t == 0 || t > 2 * 3600) {
        return Err(CheckoutError::InvalidField { field: "timeout_s", message: "1 second to 2 hours".into() });
    }
    Ok(())
}

impl Checkout {
    /// The checkout service over the directory.
    pub fn new(directory: Directory) -> Checkout {
        let device_turns = (0..DEVICE_TURNS).map(|_| tokio::sync::Mutex::new(())).collect();
        Checkout {
            directory,
            failures: Arc::new(Mutex::new(HashMap::new())),
            periods: Arc::new(Mutex::new(HashMap::new())),
            device_turns,
            elsewhere: Arc::default(),
        }
    }

    /// A new trade's id (below 2^63, so it fits a signed column).
    fn trade_id(&self, merchant_id: u64, new: &NewTrade) -> u64 {
        u64::from_le_bytes(self.directory.draw(&["trade", &merchant_id.to_string(), &new.out_trade_no])) >> 1
    }

    fn now_s(&self) -> u64 {
        self.directory.clock().now().unix_seconds()
    }

    async fn submit(&self, command: Command) -> Result<Result<citypay_ledger::Outcome, usize>, CheckoutError> {
        match self.directory.shard().submit(command).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(SubmitError::GuardFailed { guard }) => Ok(Err(guard)),
            // Definite: the writer applied nothing, and would not on a retry.
            Err(SubmitError::NotOwned { moving: false, .. }) => Err(CheckoutError::AccountElsewhere),
            Err(other) => Err(CheckoutError::Unavailable(other.to_string())),
        }
    }

    /// Submits a payment or refund command, numbering its entry by attempt. The trade's guards
    /// make it happen once; the ledger answers a refused id again with its first refusal, and
    /// a refusal (the wallet or the merchant was short) must not stop a later attempt, so a
    /// replayed refusal moves on to the next number (the same numbers on every run, so
    /// replays stay exact).
    async fn submit_numbered(&self, command: impl Fn(u32) -> Command) -> Result<Result<citypay_ledger::Outcome, usize>, CheckoutError> {
        for attempt in 0..REFUSALS_MAX {
            match self.submit(command(attempt)).await? {
                Ok(outcome) if outcome.replay && outcome.status != Status::Ok => continue,
                answer => return Ok(answer),
            }
        }
        Err(CheckoutError::Unavailable("too many refused attempts at this trade; retry later".into()))
    }

    /// Creates a trade waiting for payment and the dynamic QR payload to show for it.
    /// Idempotent by `out_trade_no`: the same trade again returns it.
    pub async fn create_trade(&self, merchant_id: u64, new: &NewTrade) -> Result<(Trade, String), CheckoutError> {
        check_new_trade(new)?;
        let merchant = self.directory.merchant(merchant_id).await?;
        let now = self.now_s();
        let trade = Trade::new(self.trade_id(merchant_id, new), &merchant, new, Method::Qr, now);
        let command = Command {
            event: None,
            guards: vec![trade.absent_guard()],
            rows: [trade.row(OnConflict::Fail)].into_iter().chain(self.outbox_rows(&merchant, &trade, now, None)).collect(),
            always_rows: Vec::new(),
        };
        let trade = match self.submit(command).await? {
            Ok(_) => trade,
            Err(_) => self.existing_same(merchant_id, new, Method::Qr).await?,
        };
        tracing::debug!(merchant = merchant_id, trade = trade.id, amount = trade.amount, "trade waiting for a QR payment");
        let payload = self.qr(merchant_id, Self::dynamic_charge(&trade)).await?;
        Ok((trade, payload))
    }

    /// The EMVCo payload of a merchant's QR: dynamic for one trade (its amount, and its trade
    /// number as the reference label), static for the counter sticker. EMVCo's name and city
    /// fields are ASCII; a Chinese name goes in the alternate-language template (64) instead.
    async fn qr(&self, merchant_id: u64, charge: Charge) -> Result<String, CheckoutError> {
        let merchant = self.directory.merchant(merchant_id).await?;
        let city = self.directory.city(merchant.city).await?;
        let name = ascii_field(&merchant.name, 25).unwrap_or_else(|| format!("MERCHANT {}", merchant.id));
        let city_ascii = ascii_field(&city.name, 15).unwrap_or_else(|| "CN".to_owned());
        let needs_language = !merchant.name.is_ascii() || !city.name.is_ascii();
        let language = needs_language.then(|| citypay_codes::mpm::LanguageTemplate {
            preference: "ZH".into(),
            name: merchant.name.chars().take(25).collect(),
            city: Some(city.name.chars().take(15).collect()),
        });
        let qr = CitypayQr {
            merchant_id: merchant.id.to_string(),
            mcc: merchant.mcc.clone(),
            currency: "156".into(),
            country: "CN".into(),
            name,
            city: city_ascii,
            postal_code: None,
            language,
            charge,
        };
        qr.encode().map_err(|e| CheckoutError::InvalidField { field: "qr", message: e.to_string() })
    }

    fn dynamic_charge(trade: &Trade) -> Charge {
        Charge::Dynamic { amount_minor: u64::try_from(trade.amount).unwrap_or(0), order_number: trade.id.to_string() }
    }

    /// The merchant's static counter QR (no amount: the payer types it).
    pub async fn static_qr(&self, merchant_id: u64) -> Result<String, CheckoutError> {
        self.qr(merchant_id, Charge::Static).await
    }

    /// The trade `out_trade_no` of this merchant, if it has the same terms as `new` and is paid
    /// the same way (a cash sale is not the answer to a QR order, nor the other way round).
    async fn existing_same(&self, merchant_id: u64, new: &NewTrade, method: Method) -> Result<Trade, CheckoutError> {
        let trade = self.trade(merchant_id, &new.out_trade_no).await?;
        if trade.amount != new.amount || trade.subject != new.subject || trade.method != method {
            return Err(CheckoutError::OutTradeNoReused);
        }
        Ok(trade)
    }

    /// A merchant's trade by its order number (another merchant's trades are not found).
    pub async fn trade(&self, merchant_id: u64, out_trade_no: &str) -> Result<Trade, CheckoutError> {
        let rows = self
            .directory
            .read(trade::SELECT_BY_MERCHANT, vec![uint(merchant_id), Value::Text(out_trade_no.to_owned())])
            .await?;
        let trade = rows.first().map(|row| Trade::from_row(row)).transpose()?.ok_or(CheckoutError::TradeNotFound)?;
        self.as_of_now(trade).await
    }

    /// A page of a merchant's trades, newest first, after the (created_at, id) of the last
    /// trade of the previous page.
    pub async fn trades(&self, merchant_id: u64, after: Option<(u64, u64)>, limit: u32) -> Result<Vec<Trade>, CheckoutError> {
        let (created_at, id) = after.unwrap_or((u64::MAX >> 1, u64::MAX >> 1));
        let rows = self
            .directory
            .read(trade::SELECT_PAGE, vec![uint(merchant_id), uint(created_at), uint(id), Value::Int(i64::from(limit))])
            .await?;
        rows.iter().map(|row| Trade::from_row(row)).collect()
    }

    /// The trades `cashier` rang up at `merchant_id`'s till from `from` to before `to` (unix
    /// seconds), newest first, at most `limit`.
    pub async fn cashier_trades(&self, merchant_id: u64, cashier: u64, from: u64, to: u64, limit: u32) -> Result<Vec<Trade>, CheckoutError> {
        let rows = self
            .directory
            .read(trade::SELECT_BY_CASHIER, vec![uint(cashier), uint(merchant_id), uint(from), uint(to), Value::Int(i64::from(limit))])
            .await?;
        rows.iter().map(|row| Trade::from_row(row)).collect()
    }

    /// A merchant's trade by citypay's trade number (another merchant's trades are not found).
    pub async fn trade_by_no(&self, merchant_id: u64, trade_no: u64) -> Result<Trade, CheckoutError> {
        let trade = self.trade_by_id(trade_no).await?;
        if trade.merchant_id != merchant_id {
            return Err(CheckoutError::TradeNotFound);
        }
        self.as_of_now(trade).await
    }

    async fn trade_by_id(&self, id: u64) -> Result<Trade, CheckoutError> {
        let rows = self.directory.read(trade::SELECT_BY_ID, vec![uint(id)]).await?;
        rows.first().map(|row| Trade::from_row(row)).transpose()?.ok_or(CheckoutError::TradeNotFound)
    }

    /// The trade as time has left it: an unpaid trade past its time closes itself when it is
    /// next seen, and a paid one past its refund period finishes.
    async fn as_of_now(&self, trade: Trade) -> Result<Trade, CheckoutError> {
        let now = self.now_s();
        if trade.status == TradeStatus::WaitBuyerPay && trade.expires_at <= now {
            return self.close_trade(&trade).await;
        }
        if trade.period_over(now) {
            return self.finish_trade(&trade).await;
        }
        Ok(trade)
    }

    /// The notifications of a trade change: the JSON event for a merchant with a notification
    /// URL, and Alipay's `trade_status_sync` for a gateway trade that was paid, refunded, closed
    /// or finished (`refund`: the request number of the refund that changed it).
    fn outbox_rows(&self, merchant: &Merchant, trade: &Trade, now: u64, refund: Option<&str>) -> Vec<ServiceRow> {
        self.outbox_row(merchant, trade, now).into_iter().chain(self.alipay_outbox_row(trade, now, refund)).collect()
    }

    fn alipay_outbox_row(&self, trade: &Trade, now: u64, refund: Option<&str>) -> Option<ServiceRow> {
        let notify = trade.notify.as_ref()?;
        if trade.status == TradeStatus::WaitBuyerPay {
            return None;
        }
        let event_id = self.outbox_event_id("alipay_outbox", trade);
        Some(Self::outbox_event(trade, event_id, ALIPAY_NOTIFICATION, notify::alipay_body(trade, notify, now, refund), now))
    }

    /// An outbox event's id: time first, so the outbox reads in order; then what changed, so
    /// each change of a trade has one id per `channel`.
    fn outbox_event_id(&self, channel: &str, trade: &Trade) -> u128 {
        let change = [trade.id.to_string(), trade.status.code().to_owned(), trade.refunded.to_string()];
        let low = u64::from_le_bytes(self.directory.draw(&[channel, &change[0], &change[1], &change[2]]));
        (u128::from(self.directory.clock().now().0) << 64) | u128::from(low)
    }

    /// The outbox row of an event, due now.
    fn outbox_event(trade: &Trade, event_id: u128, kind: &str, body: String, now: u64) -> ServiceRow {
        ServiceRow {
            table: "outbox",
            key: vec![("id", Value::Blob(event_id.to_be_bytes().to_vec()))],
            columns: vec![
                ("merchant_id", uint(trade.merchant_id)),
                ("trade_id", uint(trade.id)),
                ("kind", Value::Text(kind.to_owned())),
                ("body", Value::Text(body)),
                ("created_at", uint(now)),
                ("attempts", int(0)),
                ("next_attempt_at", uint(now)),
                ("delivered_at", Value::Null),
            ],
            on_conflict: OnConflict::Fail,
        }
    }

    fn outbox_row(&self, merchant: &Merchant, trade: &Trade, now: u64) -> Option<ServiceRow> {
        merchant.notify_url.as_ref()?;
        let event_id = self.outbox_event_id("outbox", trade);
        let body = serde_json::json!({
            "event_id": format!("{event_id:032x}"),
            "type": "trade.status_changed",
            "trade": {
                "trade_no": trade.id.to_string(),
                "out_trade_no": trade.out_trade_no,
                "status": trade.status.code(),
                "amount": trade.amount,
                "refunded": trade.refunded,
                "currency": "CNY",
            },
            "created_at": now,
        });
        Some(Self::outbox_event(trade, event_id, "trade.status_changed", body.to_string(), now))
    }

    /// The payment: the amount from the wallet to the merchant, and the fee from the merchant
    /// to the platform's fee revenue, in one all-or-nothing entry.
    /// `order`, from stored state only (every retry must derive the same id), places the
    /// entry in the journal; none leaves the id a plain digest.
    fn payment_event(&self, trade: &Trade, wallet: u64, merchant_account: u64, attempt: u32, order: Option<u64>) -> Event {
        let mut legs = vec![Leg {
            debit: wallet,
            credit: merchant_account,
            amount: trade.amount,
            currency: Currency::CNY,
            code: codes::PAYMENT,
            class: BALANCE_PAYMENT,
            user_data: trade.id,
        }];
        legs.extend(Self::fee_leg(trade, merchant_account));
        let parts = ["trade", &trade.id.to_string(), "pay", &wallet.to_string(), &attempt.to_string()];
        let id = match order {
            Some(order) => ordered_event_id(order, &parts),
            None => derived_event_id(&parts),
        };
        Event::Entry(Entry { id, legs })
    }

    /// The fee of a paid trade, merchant → the platform's fee revenue (none when zero).
    fn fee_leg(trade: &Trade, merchant_account: u64) -> Option<Leg> {
        (trade.fee > 0).then(|| Leg {
            debit: merchant_account,
            credit: PlatformAccounts::CNY.fee_revenue,
            amount: trade.fee,
            currency: Currency::CNY,
            code: codes::FEE,
            class: 0,
            user_data: trade.id,
        })
    }

    /// What paying the trade `payload` names takes on this, the merchant's, shard when the
    /// payer (`payer`) lives on another: the money arrives from the clearing account of the
    /// payer's shard, and the trade's change goes with it (see `citypay-country`). A dynamic
    /// trade only: a counter code's trade is made by the payer's idempotency key, which this
    /// A counter code's trade is made paid, numbered by the payer and their idempotency key as
    /// [`Checkout::pay_qr`] numbers it. `Ok(Err(trade))`: nothing to pay, the trade is this
    /// payer's already.
    pub async fn payment_from_elsewhere(&self, payer: u64, payload: &str, typed_amount: Option<i64>, idempotency_key: &str) -> Result<Result<PaymentHere, Trade>, CheckoutError> {
        let (payload, merchant_id) = citypay_payload(payload)?;
        let qr_amount = payload.amount_minor_units().and_then(|a| i64::try_from(a).ok());
        if let (Some(qr), Some(sent)) = (qr_amount, typed_amount)
            && qr != sent
        {
            return Err(CheckoutError::AmountMismatch { qr, sent });
        }
        let Some(reference) = payload.additional_data().and_then(|a| a.reference_label.clone()) else {
            let amount = typed_amount.ok_or_else(|| CheckoutError::InvalidField { field: "amount", message: "a static QR needs the amount".into() })?;
            let new = counter_trade(payer, idempotency_key, amount);
            check_new_trade(&new)?;
            match self.existing_same(merchant_id, &new, Method::Qr).await {
                Ok(existing) if existing.payer_resident == Some(payer) => return Ok(Err(existing)),
                Ok(_) => return Err(CheckoutError::OutTradeNoReused),
                Err(CheckoutError::TradeNotFound) => {}
                Err(other) => return Err(other),
            }
            let merchant = self.directory.merchant(merchant_id).await?;
            let period = self.refund_period(merchant_id).await?;
            let now = self.now_s();
            let trade = Trade::new(self.trade_id(merchant_id, &new), &merchant, &new, Method::Qr, now).paid(payer, now, period);
            let rows = [trade.row(OnConflict::Fail)].into_iter().chain(self.outbox_rows(&merchant, &trade, now, None)).collect();
            let legs = Self::fee_leg(&trade, merchant.account).into_iter().collect();
            return Ok(Ok(PaymentHere { guards: vec![trade.absent_guard()], legs, merchant_account: merchant.account, rows, trade }));
        };
        let id: u64 = reference.parse().map_err(|_| CheckoutError::InvalidQr("unknown order".into()))?;
        let trade = self.trade_by_id(id).await?;
        if trade.merchant_id != merchant_id || qr_amount != Some(trade.amount) {
            return Err(CheckoutError::InvalidQr("the payload does not match its order".into()));
        }
        let trade = self.as_of_now(trade).await?;
        match trade.status {
            TradeStatus::WaitBuyerPay => {}
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished if trade.payer_resident == Some(payer) => return Ok(Err(trade)),
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => return Err(CheckoutError::AlreadyPaid),
            TradeStatus::TradeClosed => return Err(CheckoutError::TradeClosed),
        }
        let merchant = self.directory.merchant(trade.merchant_id).await?;
        let period = self.refund_period(trade.merchant_id).await?;
        let now = self.now_s();
        let paid = trade.paid(payer, now, period);
        let rows = [paid.row(OnConflict::UpdateOnly)].into_iter().chain(self.outbox_rows(&merchant, &paid, now, None)).collect();
        Ok(Ok(PaymentHere { guards: vec![trade.version_guard()], legs: Self::fee_leg(&trade, merchant.account).into_iter().collect(), trade: paid, merchant_account: merchant.account, rows }))
    }

    /// A trade of this shard's by its number (for a payer of another shard, after paying).
    pub async fn trade_numbered(&self, id: u64) -> Result<Trade, CheckoutError> {
        self.trade_by_id(id).await
    }

    /// What a scanned QR payload would pay, for the payer to confirm: the merchant's registered
    /// name (never the name printed in the payload, which a sticker over the real code could
    /// change) and the amount, or `None` for a counter code whose amount the payer types.
    pub async fn qr_preview(&self, payload: &str) -> Result<(Merchant, Option<i64>), CheckoutError> {
        let (payload, merchant_id) = citypay_payload(payload)?;
        let merchant = self.directory.merchant(merchant_id).await.map_err(|e| match e {
            DirectoryError::NotFound => CheckoutError::InvalidQr("unknown merchant".into()),
            other => CheckoutError::Directory(other),
        })?;
        let amount = payload.amount_minor_units().and_then(|a| i64::try_from(a).ok());
        if let Some(reference) = payload.additional_data().and_then(|a| a.reference_label.clone()) {
            let id: u64 = reference.parse().map_err(|_| CheckoutError::InvalidQr("unknown order".into()))?;
            let trade = self.as_of_now(self.trade_by_id(id).await?).await?;
            if trade.merchant_id != merchant.id || amount != Some(trade.amount) {
                return Err(CheckoutError::InvalidQr("the payload does not match its order".into()));
            }
            if trade.status != TradeStatus::WaitBuyerPay {
                return Err(CheckoutError::TradeClosed);
            }
        }
        Ok((merchant, amount))
    }

    /// Pays the trade a scanned QR payload names, from the resident's wallet. A static QR needs
    /// the amount the resident typed; its trade's number derives from the payer's idempotency
    /// key, so a retry pays it once.
    pub async fn pay_qr(&self, payer: &Resident, payload: &str, typed_amount: Option<i64>, idempotency_key: &str) -> Result<Trade, CheckoutError> {
        let (payload, merchant_id) = citypay_payload(payload)?;
        let reference = payload.additional_data().and_then(|a| a.reference_label.clone());
        let qr_amount = payload.amount_minor_units().and_then(|a| i64::try_from(a).ok());
        // An amount sent beside a QR code that names its own must agree with it: the payer
        // confirmed one of the two, and charging the other silently is never right.
        if let (Some(qr), Some(sent)) = (qr_amount, typed_amount)
            && qr != sent
        {
            return Err(CheckoutError::AmountMismatch { qr, sent });
        }
        // A counter QR carries no amount (citypay writes none): the payer's typed amount is charged.
        match (reference, typed_amount) {
            (Some(reference), _) => {
                let id: u64 = reference.parse().map_err(|_| CheckoutError::InvalidQr("unknown order".into()))?;
                let trade = self.trade_by_id(id).await?;
                if trade.merchant_id != merchant_id || qr_amount != Some(trade.amount) {
                    return Err(CheckoutError::InvalidQr("the payload does not match its order".into()));
                }
                self.pay_waiting(payer, self.as_of_now(trade).await?).await
            }
            (None, Some(amount)) => {
                let new = counter_trade(payer.id, idempotency_key, amount);
                check_new_trade(&new)?;
                self.pay_counter(payer, merchant_id, &new).await
            }
            (None, None) => Err(CheckoutError::InvalidField { field: "amount", message: "a static QR needs the amount".into() }),
        }
    }

    /// A counter (static QR) payment: the trade is created paid, in one command, as a code
    /// payment is. A retry finds the trade its first attempt created.
    async fn pay_counter(&self, payer: &Resident, merchant_id: u64, new: &NewTrade) -> Result<Trade, CheckoutError> {
        let merchant = self.directory.merchant(merchant_id).await?;
        let period = self.refund_period(merchant_id).await?;
        let now = self.now_s();
        let trade = Trade::new(self.trade_id(merchant_id, new), &merchant, new, Method::Qr, now).paid(payer.id, now, period);
        let rows: Vec<ServiceRow> = [trade.row(OnConflict::Fail)].into_iter().chain(self.outbox_rows(&merchant, &trade, now, None)).collect();
        // No order: this trade's time is this request's, and a retry must meet the same ids.
        let command = |attempt| Command {
            event: Some(self.payment_event(&trade, payer.wallet, merchant.account, attempt, None)),
            guards: vec![trade.absent_guard(), Directory::wallet_not_frozen(payer.id)],
            rows: rows.clone(),
            always_rows: Vec::new(),
        };
        match self.submit_numbered(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(payer = payer.id, merchant = merchant_id, trade = trade.id, amount = trade.amount, "paid by counter QR");
                Ok(trade)
            }
            Ok(outcome) => {
                tracing::debug!(payer = payer.id, merchant = merchant_id, status = outcome.status.name(), "counter QR payment refused");
                Err(CheckoutError::Refused(outcome.status))
            }
            Err(1) => Err(DirectoryError::WalletFrozen.into()),
            Err(_) => {
                let existing = self.existing_same(merchant_id, new, Method::Qr).await?;
                self.pay_waiting(payer, self.as_of_now(existing).await?).await
            }
        }
    }

    async fn pay_waiting(&self, payer: &Resident, trade: Trade) -> Result<Trade, CheckoutError> {
        match trade.status {
            TradeStatus::WaitBuyerPay => {}
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished if trade.payer_resident == Some(payer.id) => return Ok(trade),
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => return Err(CheckoutError::AlreadyPaid),
            TradeStatus::TradeClosed => return Err(CheckoutError::TradeClosed),
        }
        let merchant = self.directory.merchant(trade.merchant_id).await?;
        let period = self.refund_period(trade.merchant_id).await?;
        let now = self.now_s();
        let paid = trade.paid(payer.id, now, period);
        let rows: Vec<ServiceRow> = [paid.row(OnConflict::UpdateOnly)].into_iter().chain(self.outbox_rows(&merchant, &paid, now, None)).collect();
        let command = |attempt| Command {
            // In the journal by the stored trade's second, then the trade: a second's payments
            // fill a few pages of it rather than one page each.
            event: Some(self.payment_event(&trade, payer.wallet, merchant.account, attempt, Some(journal_order(trade.created_at, trade.id)))),
            guards: vec![trade.version_guard(), Directory::wallet_not_frozen(payer.id)],
            rows: rows.clone(),
            always_rows: Vec::new(),
        };
        match self.submit_numbered(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(payer = payer.id, merchant = trade.merchant_id, trade = trade.id, amount = trade.amount, "paid by QR");
                Ok(paid)
            }
            Ok(outcome) if outcome.status == Status::ConflictingReplay => Err(CheckoutError::AlreadyPaid),
            Ok(outcome) => {
                tracing::debug!(payer = payer.id, trade = trade.id, status = outcome.status.name(), "QR payment refused");
                Err(CheckoutError::Refused(outcome.status))
            }
            Err(1) => Err(DirectoryError::WalletFrozen.into()),
            // The trade changed meanwhile: paid (by this payer, or another), or closed.
            Err(_) => {
                let now_trade = self.trade_by_id(trade.id).await?;
                if now_trade.status == TradeStatus::WaitBuyerPay {
                    return Err(CheckoutError::Unavailable("the trade changed; retry".into()));
                }
                Box::pin(self.pay_waiting(payer, now_trade)).await
            }
        }
    }

    /// Enrols a payment device for a resident: its slot and the secret it derives codes from
    /// (shown once; stored sealed).
    pub async fn enroll_device(&self, resident: &Resident) -> Result<(u32, Secret<Vec<u8>>), CheckoutError> {
        self.enroll_device_avoiding(resident, |_| std::future::ready(Ok(false))).await
    }

    /// [`Checkout::enroll_device`], drawing again a slot that `taken` says is used elsewhere
    /// (in a country: by a device enrolled on another shard before slots carried buckets).
    pub async fn enroll_device_avoiding<Taken, Asked>(&self, resident: &Resident, taken: Taken) -> Result<(u32, Secret<Vec<u8>>), CheckoutError>
    where
        Taken: Fn(u32) -> Asked,
        Asked: std::future::Future<Output = Result<bool, CheckoutError>>,
    {
        let resident_text = resident.id.to_string();
        // A bucket has DEVICE_LIMIT / 1,024 (97,655) slots, and a city four buckets: a city
        // of many devices fills them, and each draw may meet a taken slot.
        for attempt in 0..SLOT_DRAWS_MAX {
            // The slot carries the resident's bucket (see `bucket_of_device`).
            let draw = u64::from_le_bytes(self.directory.draw(&["device-slot", &resident_text, &attempt.to_string()]));
            let buckets = u64::from(citypay_routing::BUCKETS);
            let bucket = u64::from(citypay_routing::bucket_of_owner(resident.id).0);
            // Never slot 0 (not a device), and never another bucket's: the multiple of the
            // bucket count starts at 1.
            let multiples = u64::from(citypay_codes::payment_code::DEVICE_LIMIT) / buckets;
            let Ok(slot) = u32::try_from((draw % (multiples - 1) + 1) * buckets + bucket) else { continue };
            if taken(slot).await? {
                continue;
            }
            let secret: [u8; 32] = self.directory.draw(&["device-secret", &slot.to_string()]);
            let row = ServiceRow {
                table: "payment_devices",
                key: vec![("id", Value::Int(i64::from(slot)))],
                columns: vec![
                    ("resident_id", uint(resident.id)),
                    ("secret_sealed", Value::Blob(self.directory.seal(&secret, &format!("device:{slot}")))),
                    ("last_step", int(0)),
                    ("failures", int(0)),
                    ("created_at", uint(self.now_s())),
                ],
                on_conflict: OnConflict::Fail,
            };
            let command = Command {
                event: None,
                guards: vec![Guard::Absent { table: "payment_devices", key: row.key.clone() }],
                rows: vec![row],
                always_rows: Vec::new(),
            };
            if self.submit(command).await?.is_ok() {
                tracing::debug!(resident = resident.id, device = slot, "payment device enrolled");
                return Ok((slot, Secret::new(secret.to_vec())));
            }
        }
        Err(CheckoutError::Unavailable("no free device slot drawn; retry".into()))
    }

    /// Counts a wrong code against the merchant's budget of this minute. The count is shared
    /// by every API server through the database (`code_failures`), and each server stops the
    /// merchant once the shared count reaches the budget, so all servers together let through
    /// at most the budget plus one more per server. Only wrong codes pay for the shared count;
    /// good payments never read it.
    async fn note_failure(&self, merchant_id: u64) -> Result<(), CheckoutError> {
        let minute = self.now_s() / 60;
        let key = vec![("merchant_id", uint(merchant_id)), ("minute", uint(minute))];
        let mut shared = 0;
        // A race with another server's count is retried; past that the local count stands.
        for _ in 0..3 {
            let rows = self
                .directory
                .read("SELECT failures FROM code_failures WHERE merchant_id = ?1 AND minute = ?2", vec![uint(merchant_id), uint(minute)])
                .await?;
            let current = rows.first().map(|row| citypay_directory::int_at(row, 0)).transpose()?;
            let guard = match current {
                None => Guard::Absent { table: "code_failures", key: key.clone() },
                Some(n) => Guard::Matches { table: "code_failures", key: key.clone(), expect: vec![("failures", int(n))] },
            };
            let counted = current.unwrap_or(0) + 1;
            let row = ServiceRow { table: "code_failures", key: key.clone(), columns: vec![("failures", int(counted))], on_conflict: OnConflict::Update };
            if self.submit(Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await?.is_ok() {
                shared = u32::try_from(counted).unwrap_or(u32::MAX);
                break;
            }
        }
        let mut failures = self.failures.lock().map_err(|_| CheckoutError::Unavailable("limiter".into()))?;
        let entry = failures.entry(merchant_id).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = (entry.1 + 1).max(shared);
        Ok(())
    }

    fn too_many_failures(&self, merchant_id: u64) -> bool {
        let minute = self.now_s() / 60;
        let failures = self.failures.lock();
        failures.is_ok_and(|f| f.get(&merchant_id).is_some_and(|(m, n)| *m == minute && *n >= MERCHANT_FAILURES_PER_MINUTE_MAX))
    }

    /// The merchant scans a resident's payment code at the till and charges `new.amount`.
    /// Idempotent by `out_trade_no`; a code works once.
    pub async fn pay_with_code(&self, merchant_id: u64, new: &NewTrade, code: &str) -> Result<Trade, CheckoutError> {
        check_new_trade(new)?;
        // No read first: a new order (the usual case) goes straight to the writer. A retry of
        // an order already made fails on the way (its code is spent, or its trade exists) and
        // is answered from the order.
        match self.pay_new_code(merchant_id, new, code).await {
            Ok(trade) => Ok(trade),
            Err(error) => match self.trade(merchant_id, &new.out_trade_no).await {
                Ok(existing) => answer_existing(existing, new),
                Err(CheckoutError::TradeNotFound) => Err(error),
                // The order may exist but cannot be read now (a failover): its answer is not
                // known, and a refusal ("out_trade_no reused", meaning "it exists") would
                // contradict the payment already acknowledged.
                Err(unreadable) => Err(unreadable),
            },
        }
    }

    /// Checks a payment code shown for a merchant's order: the device's budget of wrong codes,
    /// then the code (one at a time per device on this server). `Ok(Err(trade))`: a till's
    /// retry of an order paid before, answered from it.
    async fn verify_code(&self, merchant_id: u64, new: &NewTrade, code: &str) -> Result<Result<VerifiedCode, Trade>, CheckoutError> {
        if self.too_many_failures(merchant_id) {
            return Err(CheckoutError::TooManyAttempts);
        }
        let parsed = PaymentCode::parse(code.trim()).map_err(|e| CheckoutError::InvalidCode(e.to_string()))?;
        let turn = self.device_turns[usize::try_from(parsed.device).unwrap_or(0) % DEVICE_TURNS].lock().await;
        let device = match self.device(parsed.device).await? {
            Some(device) if device.revoked_at.is_none() => device,
            _ => return self.wrong_code(merchant_id, new, None, "unknown or revoked device").await.map(Err),
        };
        // Bounded before the code is checked: a refused guess is no guess.
        let now = self.now_s();
        let hour = now / DEVICE_WINDOW_S;
        let cooling = CheckoutError::DeviceCoolingDown { retry_after_s: (hour + 1) * DEVICE_WINDOW_S - now };
        let device_failures = device.failures_in(hour);
        if device_failures >= DEVICE_FAILURES_PER_HOUR_MAX {
            return Err(cooling);
        }
        // A device with no wrong code this hour has none from any merchant: no read needed.
        let merchant_failures = if device_failures > 0 { self.device_merchant_failures(parsed.device, merchant_id, hour).await? } else { None };
        if merchant_failures.unwrap_or(0) >= DEVICE_MERCHANT_FAILURES_PER_HOUR_MAX {
            return Err(cooling);
        }
        let secret = self.directory.unseal(&device.secret_sealed, &format!("device:{}", parsed.device))?;
        // The till retrying the order this device's last code was spent on (its answer lost,
        // or a refusal) sends the same entry again, under the same trade number: the ledger
        // answers as it did the first time, even once the code has expired.
        let order = format!("{merchant_id}:{}", new.out_trade_no);
        let same_order = device.last_order.as_deref() == Some(order.as_str());
        let spent_on_this_order = || {
            let at = u64::try_from(device.last_step).unwrap_or(0).saturating_mul(citypay_codes::payment_code::STEP_SECONDS);
            same_order && PaymentCode::verify(&parsed, secret.expose(), at, 0).is_some()
        };
        let verified = PaymentCode::verify(&parsed, secret.expose(), now, CODE_WINDOW_STEPS)
            .or_else(|| spent_on_this_order().then(|| u64::try_from(device.last_step).unwrap_or(0)));
        let Some(step) = verified else {
            let count = DeviceCount { slot: parsed.device, hour, device: (device.failures, device.failures_hour), merchant: merchant_failures };
            return self.wrong_code(merchant_id, new, Some(count), "wrong or expired code").await.map(Err);
        };
        drop(turn);
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let retry = same_order && step == device.last_step;
        if step <= device.last_step && !retry {
            return Err(CheckoutError::CodeUsed);
        }
        Ok(Ok(VerifiedCode { slot: parsed.device, device, step, retry, order }))
    }

    /// The device's guard and its row spending the code on `trade_id`.
    fn spend_code(verified: &VerifiedCode, trade_id: u64) -> (Guard, ServiceRow) {
        let device_key = vec![("id", Value::Int(i64::from(verified.slot)))];
        let guard = Guard::Matches {
            table: "payment_devices",
            key: device_key.clone(),
            expect: vec![
                ("last_step", int(verified.device.last_step)),
                ("last_order", verified.device.last_order.clone().map_or(Value::Null, Value::Text)),
                ("revoked_at", Value::Null),
            ],
        };
        let row = ServiceRow {
            table: "payment_devices",
            key: device_key,
            columns: vec![("last_step", int(verified.step)), ("last_trade", uint(trade_id)), ("last_order", Value::Text(verified.order.clone()))],
            on_conflict: OnConflict::UpdateOnly,
        };
        (guard, row)
    }

    /// The payer's side of a payment code shown to a merchant of another shard (this is the
    /// device's shard): the code checked here, counted here when wrong, and what the hold on
    /// the payer's wallet must check and write (the code spent on `trade_id`, the wallet not
    /// frozen). `Ok(Err(_))`: the till's retry of an order this device paid before.
    pub async fn code_for_elsewhere(&self, merchant_id: u64, new: &NewTrade, code: &str, trade_id: u64) -> Result<Result<CodePayer, Trade>, CheckoutError> {
        check_new_trade(new)?;
        let verified = match self.verify_code(merchant_id, new, code).await? {
            Ok(verified) => verified,
            Err(trade) => return Ok(Err(trade)),
        };
        let (device_guard, spent) = Self::spend_code(&verified, trade_id);
        let resident = verified.device.resident_id;
        Ok(Ok(CodePayer {
            resident,
            wallet: account_id(AccountKind::Wallet, resident),
            guards: vec![device_guard, Directory::wallet_not_frozen(resident)],
            rows: vec![spent],
        }))
    }

    /// What a payment code's order takes on this, the merchant's, shard when the device is on
    /// another: the order made paid by `payer` under `trade_id`, with its fee and notification,
    /// provided no order of that number exists.
    pub async fn code_payment_from_elsewhere(&self, merchant_id: u64, new: &NewTrade, payer: u64, trade_id: u64) -> Result<PaymentHere, CheckoutError> {
        check_new_trade(new)?;
        let merchant = self.directory.merchant(merchant_id).await?;
        let period = self.refund_period(merchant_id).await?;
        let now = self.now_s();
        let trade = Trade::new(trade_id, &merchant, new, Method::PaymentCode, now).paid(payer, now, period);
        let rows = [trade.row(OnConflict::Fail)].into_iter().chain(self.outbox_rows(&merchant, &trade, now, None)).collect();
        let legs = Self::fee_leg(&trade, merchant.account).into_iter().collect();
        Ok(PaymentHere { guards: vec![trade.absent_guard()], legs, merchant_account: merchant.account, rows, trade })
    }

    /// The resident of device `slot` if this shard holds it and it was enrolled before slots
    /// carried buckets (its slot names another bucket than its resident's): it lives with its
    /// resident, wherever the slot's bucket is.
    pub async fn device_from_before_buckets(&self, slot: u32) -> Result<Option<u64>, CheckoutError> {
        let device = self.device(slot).await?;
        Ok(device.map(|d| d.resident_id).filter(|resident| citypay_routing::bucket_of_owner(*resident) != bucket_of_device(slot)))
    }

    async fn pay_new_code(&self, merchant_id: u64, new: &NewTrade, code: &str) -> Result<Trade, CheckoutError> {
        let verified = match self.verify_code(merchant_id, new, code).await? {
            Ok(verified) => verified,
            Err(trade) => return Ok(trade),
        };
        let trade_id = match verified.device.last_trade.and_then(|id| u64::try_from(id).ok()) {
            Some(id) if verified.retry => id,
            _ => self.trade_id(merchant_id, new),
        };
        let (device, step) = (&verified.device, verified.step);
        let parsed_device = verified.slot;
        let now = self.now_s();
        // The device names the payer; their wallet's id follows from it, no read needed.
        let payer_wallet = account_id(AccountKind::Wallet, device.resident_id);
        let merchant = self.directory.merchant(merchant_id).await?;
        let period = self.refund_period(merchant_id).await?;
        let trade = Trade::new(trade_id, &merchant, new, Method::PaymentCode, now).paid(device.resident_id, now, period);
        let (device_guard, spent) = Self::spend_code(&verified, trade_id);
        // Each code is a new attempt (a refused one is spent too), so its step numbers the entry.
        let attempt = u32::try_from(step).unwrap_or(u32::MAX);
        let command = Command {
            // Ordered by the code's step (its 30 seconds), which a retry of the code shares.
            event: Some(self.payment_event(&trade, payer_wallet, merchant.account, attempt, Some(journal_order(u64::try_from(step).unwrap_or(0), trade_id)))),
            guards: vec![trade.absent_guard(), device_guard, Directory::wallet_not_frozen(device.resident_id)],
            rows: [trade.row(OnConflict::Fail)].into_iter().chain(self.outbox_rows(&merchant, &trade, now, None)).collect(),
            // The code is spent even when the wallet cannot pay: it never works twice. Wrong
            // codes stay counted: a payment between guesses must not give the guesser more.
            always_rows: vec![spent],
        };
        match self.submit(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(merchant = merchant_id, device = parsed_device, trade = trade.id, amount = trade.amount, "paid by payment code");
                Ok(trade)
            }
            Ok(outcome) => {
                tracing::debug!(merchant = merchant_id, device = parsed_device, status = outcome.status.name(), "payment code payment refused");
                Err(CheckoutError::Refused(outcome.status))
            }
            // The order exists (made before, or meanwhile): answered from it by the caller.
            Err(0) => Err(CheckoutError::OutTradeNoReused),
            Err(2) => Err(DirectoryError::WalletFrozen.into()),
            Err(_) => Err(CheckoutError::CodeUsed),
        }
    }

    /// A code that does not verify: a till retrying an order already paid (its code long
    /// expired) is answered from the order and counts against nothing; anything else counts
    /// against the merchant's budget and, when it names an enrolled device, the device's.
    async fn wrong_code(&self, merchant_id: u64, new: &NewTrade, device: Option<DeviceCount>, why: &str) -> Result<Trade, CheckoutError> {
        match self.trade(merchant_id, &new.out_trade_no).await {
            Ok(existing) => return answer_existing(existing, new),
            Err(CheckoutError::TradeNotFound) => {}
            // Unreadable now (a failover): whether this is a till's retry is not known, so
            // nothing is counted and nothing refused.
            Err(unreadable) => return Err(unreadable),
        }
        // The code itself stays out of the log: a code that failed here may still be good.
        tracing::debug!(merchant = merchant_id, device = device.as_ref().map(|d| d.slot), why, "wrong payment code");
        self.note_failure(merchant_id).await?;
        if let Some(count) = device {
            self.count_device_failure(merchant_id, count).await?;
        }
        Err(CheckoutError::InvalidCode(why.into()))
    }

    /// Counts a wrong code against the device this hour and against (device, merchant), in
    /// one command whose guards are the counts as read: a race with another server is read
    /// again (this server checks one code per device at a time, so only other servers race).
    async fn count_device_failure(&self, merchant_id: u64, mut count: DeviceCount) -> Result<(), CheckoutError> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            let device_key = vec![("id", Value::Int(i64::from(count.slot)))];
            let pair_key = vec![("device_id", Value::Int(i64::from(count.slot))), ("merchant_id", uint(merchant_id)), ("hour", uint(count.hour))];
            let (failures, failures_hour) = count.device;
            let in_hour = if u64::try_from(failures_hour).ok() == Some(count.hour) { failures } else { 0 };
            let pair_guard = match count.merchant {
                None => Guard::Absent { table: "device_code_failures", key: pair_key.clone() },
                Some(n) => Guard::Matches { table: "device_code_failures", key: pair_key.clone(), expect: vec![("failures", int(n))] },
            };
            let command = Command {
                event: None,
                guards: vec![
                    Guard::Matches { table: "payment_devices", key: device_key.clone(), expect: vec![("failures", int(failures)), ("failures_hour", int(failures_hour))] },
                    pair_guard,
                ],
                rows: vec![
                    ServiceRow {
                        table: "payment_devices",
                        key: device_key,
                        columns: vec![("failures", int(in_hour + 1)), ("failures_hour", uint(count.hour))],
                        on_conflict: OnConflict::UpdateOnly,
                    },
                    ServiceRow {
                        table: "device_code_failures",
                        key: pair_key,
                        columns: vec![("failures", int(count.merchant.unwrap_or(0) + 1))],
                        on_conflict: OnConflict::Update,
                    },
                ],
                always_rows: Vec::new(),
            };
            if self.submit(command).await?.is_ok() {
                return Ok(());
            }
            let Some(device) = self.device(count.slot).await? else { return Ok(()) };
            count.device = (device.failures, device.failures_hour);
            count.merchant = self.device_merchant_failures(count.slot, merchant_id, count.hour).await?;
        }
        Ok(())
    }

    async fn device_merchant_failures(&self, slot: u32, merchant_id: u64, hour: u64) -> Result<Option<i64>, CheckoutError> {
        let rows = self
            .directory
            .read(
                "SELECT failures FROM device_code_failures WHERE device_id = ?1 AND merchant_id = ?2 AND hour = ?3",
                vec![Value::Int(i64::from(slot)), uint(merchant_id), uint(hour)],
            )
            .await?;
        Ok(rows.first().map(|row| citypay_directory::int_at(row, 0)).transpose()?)
    }

    /// The payment devices a resident enrolled, newest first, with what their owner should
    /// know: revoked or not, wrong codes this hour, cooling down until when.
    pub async fn devices(&self, resident: &Resident) -> Result<Vec<DeviceInfo>, CheckoutError> {
        let rows = self
            .directory
            .read(
                "SELECT id, created_at, revoked_at, failures, failures_hour FROM payment_devices WHERE resident_id = ?1 ORDER BY created_at DESC, id",
                vec![uint(resident.id)],
            )
            .await?;
        let now = self.now_s();
        let hour = now / DEVICE_WINDOW_S;
        rows.iter()
            .map(|row| {
                let number = |i: usize| citypay_directory::int_at(row, i);
                let wrong = if u64::try_from(number(4)?).ok() == Some(hour) { number(3)? } else { 0 };
                Ok(DeviceInfo {
                    slot: u32::try_from(number(0)?).unwrap_or(0),
                    created_at: u64::try_from(number(1)?).unwrap_or(0),
                    revoked_at: match row.get(2) {
                        Some(Value::Int(at)) => Some(u64::try_from(*at).unwrap_or(0)),
                        _ => None,
                    },
                    wrong_codes_this_hour: wrong,
                    cooling_down_until: (wrong >= DEVICE_FAILURES_PER_HOUR_MAX).then_some((hour + 1) * DEVICE_WINDOW_S),
                })
            })
            .collect()
    }

    /// Revokes one of the resident's payment devices (a lost phone): its codes never pay
    /// again. Revoking it again answers the same; another resident's device is not found.
    pub async fn revoke_device(&self, resident: &Resident, slot: u32) -> Result<DeviceInfo, CheckoutError> {
        let find = |devices: Vec<DeviceInfo>| devices.into_iter().find(|d| d.slot == slot).ok_or(CheckoutError::DeviceNotFound);
        let device = find(self.devices(resident).await?)?;
        if device.revoked_at.is_some() {
            return Ok(device);
        }
        let key = vec![("id", Value::Int(i64::from(slot)))];
        let command = Command {
            event: None,
            guards: vec![Guard::Matches { table: "payment_devices", key: key.clone(), expect: vec![("resident_id", uint(resident.id))] }],
            rows: vec![ServiceRow { table: "payment_devices", key, columns: vec![("revoked_at", uint(self.now_s()))], on_conflict: OnConflict::UpdateOnly }],
            always_rows: Vec::new(),
        };
        self.submit(command).await?.map_err(|_| CheckoutError::DeviceNotFound)?;
        tracing::debug!(resident = resident.id, device = slot, "payment device revoked");
        find(self.devices(resident).await?)
    }

    async fn device(&self, slot: u32) -> Result<Option<Device>, CheckoutError> {
        let rows = self
            .directory
            .read(
                "SELECT resident_id, secret_sealed, last_step, failures, failures_hour, revoked_at, last_trade, last_order FROM payment_devices WHERE id = ?1",
                vec![Value::Int(i64::from(slot))],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        match row.as_slice() {
            [Value::Int(resident), Value::Blob(sealed), Value::Int(last_step), Value::Int(failures), Value::Int(failures_hour), revoked_at, last_trade, last_order] => Ok(Some(Device {
                resident_id: u64::try_from(*resident).map_err(|_| DirectoryError::Storage("resident id".into()))?,
                secret_sealed: sealed.clone(),
                last_step: *last_step,
                failures: *failures,
                failures_hour: *failures_hour,
                revoked_at: match revoked_at {
                    Value::Int(at) => Some(*at),
                    _ => None,
                },
                last_trade: match last_trade {
                    Value::Int(trade) => Some(*trade),
                    _ => None,
                },
                last_order: match last_order {
                    Value::Text(order) => Some(order.clone()),
                    _ => None,
                },
            })),
            _ => Err(DirectoryError::Storage("payment device row".into()).into()),
        }
    }

    /// Closes an unpaid trade. Closing it again answers as the first close did; a trade that
    /// was paid (even one refunded in full, which reads closed) cannot be closed.
    pub async fn close(&self, merchant_id: u64, out_trade_no: &str) -> Result<Trade, CheckoutError> {
        let trade = self.trade(merchant_id, out_trade_no).await?;
        match trade.status {
            TradeStatus::WaitBuyerPay => self.close_trade(&trade).await,
            TradeStatus::TradeClosed if trade.paid_at.is_none() => Ok(trade),
            _ => Err(CheckoutError::AlreadyPaid),
        }
    }

    async fn close_trade(&self, trade: &Trade) -> Result<Trade, CheckoutError> {
        self.change_trade(trade, trade.closed()).await
    }

    /// Writes `after`, a change of `trade`'s status, under the trade's version guard with its
    /// notifications; if the trade changed meanwhile (paid, closed), answers it as it is now.
    pub(crate) async fn change_trade(&self, trade: &Trade, after: Trade) -> Result<Trade, CheckoutError> {
        let merchant = self.directory.merchant(trade.merchant_id).await?;
        let now = self.now_s();
        let command = Command {
            event: None,
            guards: vec![trade.version_guard()],
            rows: [after.row(OnConflict::UpdateOnly)].into_iter().chain(self.outbox_rows(&merchant, &after, now, None)).collect(),
            always_rows: Vec::new(),
        };
        match self.submit(command).await? {
            Ok(_) => {
                tracing::debug!(merchant = trade.merchant_id, trade = trade.id, from = trade.status.code(), to = after.status.code(), "trade status changed");
                Ok(after)
            }
            Err(_) => self.trade_by_id(trade.id).await,
        }
    }

    /// Cancels a trade: closes it if unpaid, refunds what remains if paid and still
    /// refundable.
    pub async fn cancel(&self, merchant_id: u64, out_trade_no: &str) -> Result<Trade, CheckoutError> {
        let trade = self.trade(merchant_id, out_trade_no).await?;
        self.cancel_trade(trade).await
    }

    /// [`Checkout::cancel`] of a trade as read. A trade paid while it was being closed is
    /// refunded instead.
    async fn cancel_trade(&self, mut trade: Trade) -> Result<Trade, CheckoutError> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            match trade.status {
                TradeStatus::WaitBuyerPay => trade = self.close_trade(&trade).await?,
                TradeStatus::TradeSuccess => {
                    let remaining = trade.amount - trade.refunded;
                    return Ok(self.refund(trade.merchant_id, &trade.out_trade_no, "cancel", remaining).await?.trade);
                }
                TradeStatus::TradeClosed => return Ok(trade),
                // Past its refund period a paid trade cannot be undone (Alipay: TRADE_HAS_FINISHED).
                TradeStatus::TradeFinished => return Err(CheckoutError::TradeFinished),
            }
        }
        Err(CheckoutError::Unavailable("the trade kept changing; retry".into()))
    }

    /// Cancels an order the merchant gave up on, whether or not it ever reached citypay (Alipay's
    /// `alipay.trade.cancel` after a payment whose outcome was unknown): an order never seen is
    /// recorded closed, with no amount, so a payment that arrives late under that order number
    /// is refused instead of charging a customer for a sale the till abandoned. Answers the
    /// trade as it is now (paid before, when it has a payment time: so refunded).
    pub async fn cancel_order(&self, merchant_id: u64, out_trade_no: &str) -> Result<Trade, CheckoutError> {
        check_order_no(out_trade_no)?;
        for _ in 0..CAS_ATTEMPTS_MAX {
            match self.trade(merchant_id, out_trade_no).await {
                Ok(trade) => return self.cancel_trade(trade).await,
                Err(CheckoutError::TradeNotFound) => {}
                Err(other) => return Err(other),
            }
            let merchant = self.directory.merchant(merchant_id).await?;
            let new = NewTrade { out_trade_no: out_trade_no.to_owned(), amount: 0, subject: "cancelled before payment".into(), timeout_s: None, notify: None, cashier: None };
            let trade = Trade::new(self.trade_id(merchant_id, &new), &merchant, &new, Method::PaymentCode, self.now_s()).closed();
            let command = Command { event: None, guards: vec![trade.absent_guard()], rows: vec![trade.row(OnConflict::Fail)], always_rows: Vec::new() };
            // Made meanwhile: the next turn cancels that one instead.
            if self.submit(command).await?.is_ok() {
                return Ok(trade);
            }
        }
        Err(CheckoutError::Unavailable("the order kept changing; retry".into()))
    }

    /// Records a sale paid in cash at the counter: counted for the city, no wallet moves.
    pub async fn record_cash_sale(&self, merchant_id: u64, new: &NewTrade) -> Result<Trade, CheckoutError> {
        check_new_trade(new)?;
        let merchant = self.directory.merchant(merchant_id).await?;
        let period = self.refund_period(merchant_id).await?;
        let now = self.now_s();
        let trade = Trade::new(self.trade_id(merchant_id, new), &merchant, new, Method::Cash, now).paid_in_cash(now, period);
        let command = Command {
            event: None,
            guards: vec![trade.absent_guard()],
            rows: [trade.row(OnConflict::Fail)].into_iter().chain(self.outbox_rows(&merchant, &trade, now, None)).collect(),
            always_rows: Vec::new(),
        };
        match self.submit(command).await? {
            Ok(_) => {
                tracing::debug!(merchant = merchant_id, trade = trade.id, amount = trade.amount, "cash sale recorded");
                Ok(trade)
            }
            Err(_) => self.existing_same(merchant_id, new, Method::Cash).await,
        }
    }

    /// Closes unpaid trades whose time is up (a sweeper calls it); returns how many.
    pub async fn close_expired(&self, limit: usize) -> Result<usize, CheckoutError> {
        self.sweep(trade::SELECT_EXPIRED, limit, TradeStatus::TradeClosed).await
    }

    /// Brings up to `limit` trades that `select` finds (given now and the limit) to where
    /// time has left them, and counts those that reach `to`.
    async fn sweep(&self, select: &'static str, limit: usize, to: TradeStatus) -> Result<usize, CheckoutError> {
        let rows = self.directory.read(select, vec![uint(self.now_s()), uint(u64::try_from(limit).unwrap_or(100))]).await?;
        // One trade that cannot be changed now must not hold up the others: the next sweep
        // tries it again. The error is answered only when nothing could be changed.
        let mut changed = 0;
        let mut first_error = None;
        for row in &rows {
            let result = match Trade::from_row(row) {
                Ok(trade) => self.as_of_now(trade).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(trade) if trade.status == to => changed += 1,
                Ok(_) => {}
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if !rows.is_empty() {
            tracing::debug!(found = rows.len(), changed, to = to.code(), "swept trades");
        }
        match first_error {
            Some(e) if changed == 0 => Err(e),
            _ => Ok(changed),
        }
    }

    /// Undelivered outbox events of a merchant, oldest first: (event id, body).
    pub async fn pending_events(&self, merchant_id: u64, limit: u64) -> Result<Vec<(Vec<u8>, String)>, CheckoutError> {
        let rows = self
            .directory
            .read(
                "SELECT id, body FROM outbox WHERE merchant_id = ?1 AND delivered_at IS NULL ORDER BY id LIMIT ?2",
                vec![uint(merchant_id), uint(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|row| match row.as_slice() {
                [Value::Blob(id), Value::Text(body)] => Ok((id.clone(), body.clone())),
                _ => Err(DirectoryError::Storage("outbox row".into()).into()),
            })
            .collect()
    }
}

struct Device {
    resident_id: u64,
    secret_sealed: Vec<u8>,
    last_step: i64,
    /// Wrong codes in the hour `failures_hour`.
    failures: i64,
    failures_hour: i64,
    revoked_at: Option<i64>,
    /// The trade the code of `last_step` was spent on, and its order (`merchant:out_trade_no`).
    last_trade: Option<i64>,
    last_order: Option<String>,
}

impl Device {
    fn failures_in(&self, hour: u64) -> i64 {
        if u64::try_from(self.failures_hour).ok() == Some(hour) { self.failures } else { 0 }
    }
}

/// A wrong code's counts as read: the device's (failures, their hour), and the merchant's for
/// the device this hour (`None`: no row yet).
/// A payment code that verified for an order.
struct VerifiedCode {
    slot: u32,
    device: Device,
    step: i64,
    /// The till retrying the order the device's last code was spent on.
    retry: bool,
    /// `merchant:out_trade_no`.
    order: String,
}

/// The payer's side of a payment code shown to a merchant of another shard
/// ([`Checkout::code_for_elsewhere`]).
#[derive(Clone, Debug)]
pub struct CodePayer {
    /// The device's resident.
    pub resident: u64,
    /// Their wallet.
    pub wallet: u64,
    /// Checked with the hold: the device as read (the code not spent since), the wallet not
    /// frozen.
    pub guards: Vec<Guard>,
    /// Written with the hold: the code spent.
    pub rows: Vec<ServiceRow>,
}

/// Where a payment's entry goes in the journal: by a time (a second, or a code's step), then
/// by trade (trade ids are below 2^63, so their top 32 bits fit below the time's).
fn journal_order(time: u64, trade_id: u64) -> u64 {
    (time << 32) | (trade_id >> 31)
}

/// The trade id of a payment code's order paid from another shard: derived from the order,
/// so every attempt of it names the same trade.
pub fn code_trade_id(merchant_id: u64, out_trade_no: &str) -> u64 {
    u64::try_from(derived_event_id(&["code order", &merchant_id.to_string(), out_trade_no]) >> 65).unwrap_or(1).max(1)
}

/// The device slot a payment code names, if it parses.
pub fn code_device(code: &str) -> Option<u32> {
    PaymentCode::parse(code.trim()).ok().map(|parsed| parsed.device)
}

/// Slots drawn for a new device before giving up: with a bucket's slots a quarter taken, 16
/// draws all meet taken ones about once in 4 billion enrolments.
const SLOT_DRAWS_MAX: u32 = 16;

/// The bucket a device slot enrolled since slots carry buckets names (its slot modulo 1,024):
/// the shard that holds the device's resident, found without a read.
pub fn bucket_of_device(slot: u32) -> citypay_routing::Bucket {
    citypay_routing::Bucket(u16::try_from(slot % u32::from(citypay_routing::BUCKETS)).unwrap_or(0))
}

struct DeviceCount {
    slot: u32,
    hour: u64,
    device: (i64, i64),
    merchant: Option<i64>,
}
