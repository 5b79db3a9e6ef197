//! A trade and its row.

use citypay_directory::{DirectoryError, Merchant, uint};
use citypay_shard::Guard;
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{CheckoutError, DEFAULT_TIMEOUT_S, GatewayNotify, NewTrade};

/// Where a trade stands (Alipay's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TradeStatus {
    /// Created, waiting for the buyer.
    WaitBuyerPay,
    /// Paid, still refundable (also after partial refunds).
    TradeSuccess,
    /// Closed unpaid (timeout, close, cancel) or fully refunded.
    TradeClosed,
    /// Paid and no longer refundable: its refund period is over.
    TradeFinished,
}

impl TradeStatus {
    /// The wire name.
    pub const fn code(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
            TradeStatus::TradeFinished => "TRADE_FINISHED",
        }
    }

    /// Inverse of [`TradeStatus::code`].
    pub fn from_code(code: &str) -> Option<TradeStatus> {
        [TradeStatus::WaitBuyerPay, TradeStatus::TradeSuccess, TradeStatus::TradeClosed, TradeStatus::TradeFinished]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// How a trade is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// The resident scanned the merchant's QR code.
    Qr,
    /// The merchant scanned the resident's payment code.
    PaymentCode,
    /// Cash at the counter; no wallet moves.
    Cash,
}

impl Method {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            Method::Qr => "qr",
            Method::PaymentCode => "payment_code",
            Method::Cash => "cash",
        }
    }

    /// Inverse of [`Method::code`].
    pub fn from_code(code: &str) -> Option<Method> {
        [Method::Qr, Method::PaymentCode, Method::Cash].into_iter().find(|m| m.code() == code)
    }
}

/// A trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trade {
    /// citypay's trade number.
    pub id: u64,
    /// The merchant.
    pub merchant_id: u64,
    /// Where it happened.
    pub city: u32,
    /// The merchant's order number.
    pub out_trade_no: String,
    /// Amount in fen.
    pub amount: i64,
    /// What was sold.
    pub subject: String,
    /// Where it stands.
    pub status: TradeStatus,
    /// How it is paid.
    pub method: Method,
    /// Who paid (not for cash).
    pub payer_resident: Option<u64>,
    /// The platform's fee, in fen (kept, so refunds give back the fee that was charged).
    pub fee: i64,
    /// Refunded so far, in fen (refunds still crossing shards included).
    pub refunded: i64,
    /// The part of the fee given back so far, or held to be by refunds still crossing.
    pub fee_returned: i64,
    /// Bumped by every change: the compare-and-swap guard.
    pub version: i64,
    /// Unix seconds.
    pub created_at: u64,
    /// When an unpaid trade closes itself (unix seconds).
    pub expires_at: u64,
    /// When it was paid (unix seconds).
    pub paid_at: Option<u64>,
    /// When its refund period ends and it finishes (unix seconds; set when it is paid).
    pub finishes_at: Option<u64>,
    /// Where a gateway trade's changes are notified in Alipay's form.
    pub notify: Option<GatewayNotify>,
    /// The cashier who rang it up at the till.
    pub cashier: Option<u64>,
}

/// `SELECT` every column of `trades`, then `$tail`.
macro_rules! select_trades {
    ($tail:literal) => {
        concat!(
            "SELECT id, merchant_id, city_code, out_trade_no, amount, subject, status, method, ",
            "payer_resident, refunded, version, created_at, expires_at, paid_at, fee, finishes_at, notify_app, notify_url, cashier, fee_returned FROM trades ",
            $tail
        )
    };
}

pub(crate) const SELECT_BY_MERCHANT: &str = select_trades!("WHERE merchant_id = ?1 AND out_trade_no = ?2");
pub(crate) const SELECT_BY_ID: &str = select_trades!("WHERE id = ?1");
pub(crate) const SELECT_PAGE: &str = select_trades!(
    "WHERE merchant_id = ?1 AND (created_at < ?2 OR (created_at = ?2 AND id < ?3)) ORDER BY created_at DESC, id DESC LIMIT ?4"
);
pub(crate) const SELECT_BY_CASHIER: &str = select_trades!(
    "WHERE cashier = ?1 AND merchant_id = ?2 AND created_at >= ?3 AND created_at < ?4 ORDER BY created_at DESC, id DESC LIMIT ?5"
);
pub(crate) const SELECT_EXPIRED: &str =
    select_trades!("WHERE status = 'WAIT_BUYER_PAY' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2");
pub(crate) const SELECT_FINISHING: &str =
    select_trades!("WHERE status = 'TRADE_SUCCESS' AND finishes_at <= ?1 ORDER BY finishes_at LIMIT ?2");


fn opt(v: Option<u64>) -> Value {
    v.map_or(Value::Null, uint)
}

impl Trade {
    pub(crate) fn new(id: u64, merchant: &Merchant, new: &NewTrade, method: Method, now: u64) -> Trade {
        Trade {
            id: id.max(1),
            merchant_id: merchant.id,
            city: merchant.city,
            out_trade_no: new.out_trade_no.clone(),
            amount: new.amount,
            subject: new.subject.clone(),
            status: TradeStatus::WaitBuyerPay,
            method,
            payer_resident: None,
            fee: if method == Method::Cash { 0 } else { citypay_directory::fee_for(new.amount, merchant.fee_rate_bp) },
            refunded: 0,
            fee_returned: 0,
            version: 1,
            created_at: now,
            expires_at: now + new.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S),
            paid_at: None,
            finishes_at: None,
            notify: new.notify.clone(),
            cashier: new.cashier,
        }
    }

    /// Paid by `payer` at `now`; refundable for `refund_period_s` from then.
    pub(crate) fn paid(&self, payer: u64, now: u64, refund_period_s: u64) -> Trade {
        Trade {
            status: TradeStatus::TradeSuccess,
            payer_resident: Some(payer),
            paid_at: Some(now),
            finishes_at: Some(now.saturating_add(refund_period_s)),
            version: self.version + 1,
            ..self.clone()
        }
    }

    pub(crate) fn paid_in_cash(&self, now: u64, refund_period_s: u64) -> Trade {
        Trade { status: TradeStatus::TradeSuccess, paid_at: Some(now), finishes_at: Some(now.saturating_add(refund_period_s)), ..self.clone() }
    }

    /// Whether its refund period is over at `now` while it still reads as refundable.
    pub(crate) fn period_over(&self, now: u64) -> bool {
        self.status == TradeStatus::TradeSuccess && self.finishes_at.is_some_and(|at| at <= now)
    }

    pub(crate) fn finished(&self) -> Trade {
        Trade { status: TradeStatus::TradeFinished, version: self.version + 1, ..self.clone() }
    }

    /// Refunded `amount` more, and the part of the fee that refund gives back.
    pub(crate) fn refunded_by(&self, amount: i64) -> (Trade, i64) {
        let refunded = self.refunded + amount;
        let fee_back = citypay_directory::fee_returned(self.fee, self.amount, refunded, self.fee_returned);
        let status = if refunded == self.amount { TradeStatus::TradeClosed } else { self.status };
        (Trade { refunded, fee_returned: self.fee_returned + fee_back, status, version: self.version + 1, ..self.clone() }, fee_back)
    }

    pub(crate) fn closed(&self) -> Trade {
        Trade { status: TradeStatus::TradeClosed, version: self.version + 1, ..self.clone() }
    }

    /// No trade of this merchant has this order number yet.
    pub(crate) fn absent_guard(&self) -> Guard {
        Guard::Absent {
            table: "trades",
            key: vec![("merchant_id", uint(self.merchant_id)), ("out_trade_no", Value::Text(self.out_trade_no.clone()))],
        }
    }

    /// The trade has not changed since it was read.
    pub(crate) fn version_guard(&self) -> Guard {
        Guard::Matches { table: "trades", key: vec![("id", uint(self.id))], expect: vec![("version", Value::Int(self.version))] }
    }

    pub(crate) fn row(&self, on_conflict: OnConflict) -> ServiceRow {
        ServiceRow {
            table: "trades",
            key: vec![("id", uint(self.id))],
            columns: vec![
                ("merchant_id", uint(self.merchant_id)),
                ("city_code", Value::Int(i64::from(self.city))),
                ("out_trade_no", Value::Text(self.out_trade_no.clone())),
                ("amount", Value::Int(self.amount)),
                ("subject", Value::Text(self.subject.clone())),
                ("status", Value::Text(self.status.code().to_owned())),
                ("method", Value::Text(self.method.code().to_owned())),
                ("payer_resident", opt(self.payer_resident)),
                ("refunded", Value::Int(self.refunded)),
                ("fee_returned", Value::Int(self.fee_returned)),
                ("version", Value::Int(self.version)),
                ("created_at", uint(self.created_at)),
                ("expires_at", uint(self.expires_at)),
                ("paid_at", opt(self.paid_at)),
                ("fee", Value::Int(self.fee)),
                ("finishes_at", opt(self.finishes_at)),
                ("notify_app", opt(self.notify.as_ref().map(|n| n.app_id))),
                ("notify_url", self.notify.as_ref().map_or(Value::Null, |n| Value::Text(n.url.clone()))),
                ("cashier", opt(self.cashier)),
            ],
            on_conflict,
        }
    }

    pub(crate) fn from_row(row: &[Value]) -> Result<Trade, CheckoutError> {
        let bad = |what: &str| CheckoutError::Directory(DirectoryError::Storage(format!("trade row: {what}")));
        let int = |i: usize| match row.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            _ => Err(bad("integer")),
        };
        let uint = |i: usize| int(i).and_then(|v| u64::try_from(v).map_err(|_| bad("negative")));
        let text = |i: usize| match row.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            _ => Err(bad("text")),
        };
        let optional = |i: usize| match row.get(i) {
            Some(Value::Null) => Ok(None),
            _ => uint(i).map(Some),
        };
        Ok(Trade {
            id: uint(0)?,
            merchant_id: uint(1)?,
            city: u32::try_from(uint(2)?).map_err(|_| bad("city"))?,
            out_trade_no: text(3)?,
            amount: int(4)?,
            subject: text(5)?,
            status: TradeStatus::from_code(&text(6)?).ok_or_else(|| bad("status"))?,
            method: Method::from_code(&text(7)?).ok_or_else(|| bad("method"))?,
            payer_resident: optional(8)?,
            refunded: int(9)?,
            version: int(10)?,
            created_at: uint(11)?,
            expires_at: uint(12)?,
            paid_at: optional(13)?,
            fee: int(14)?,
            finishes_at: optional(15)?,
            notify: match (optional(16)?, row.get(17)) {
                (Some(app_id), Some(Value::Text(url))) => Some(GatewayNotify { app_id, url: url.clone() }),
                _ => None,
            },
            cashier: optional(18)?,
            fee_returned: int(19)?,
        })
    }
}

