//! Refunds and the period they are allowed in.
//!
//! Each refund is a record of its own, keyed by the merchant's `out_request_no` within its
//! trade: asking again with the same amount answers that record, the trade's refunded total
//! now and `fund_change: false` (Alipay's `fund_change: N`); another amount is refused. A
//! refund commits with its ledger entry, so a record exists only for a refund that succeeded;
//! one the ledger refused leaves none and may be asked again under the same number (its entry
//! is numbered by attempt, so the refusal does not stick).
//!
//! A trade is refundable for its merchant's refund period from payment (Alipay's default of 3
//! months, counted as 90 days, unless the merchant sets another); then it finishes
//! (`TRADE_FINISHED`), when it is next read or by the sweeper, and refuses refunds. A cash
//! sale's refund is recorded the same way and moves nothing in the ledger: its cash never
//! entered it and goes back over the counter.
//!
//! A refund to a wallet of another shard (the payer's city lives there) crosses shards through
//! [`RefundsElsewhere`] (the country's clearing): the merchant's balance is held for the
//! wallet's shard in the same transaction that records the refund `REFUND_PROCESSING` and
//! counts it in the trade's refunded total; the wallet's shard decides; then, posted, the
//! fee's part comes back to the merchant and the refund becomes `REFUND_SUCCESS` (with the
//! merchant's notification), or, returned, the trade gives the amount back to refund and the
//! refund becomes `REFUND_FAILED`. A retry of the request, or the resolver's round
//! ([`Checkout::finish_refunds_elsewhere`]), finishes one whose answer was not heard.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use citypay_directory::{AccountKind, PlatformAccounts, account_id, derived_event_id, int_at, text_at, uint};
use citypay_ledger::{Currency, Entry, Event, Leg, Status};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::trade::{self, Method, Trade, TradeStatus};
use crate::{CAS_ATTEMPTS_MAX, Checkout, CheckoutError, codes};

/// Alipay's default refund period, 3 months, counted as 90 days.
pub const DEFAULT_REFUND_PERIOD_S: u64 = 90 * 86_400;
/// The longest refund period a merchant may set: a year, as WeChat Pay allows.
pub const MAX_REFUND_PERIOD_S: u64 = 365 * 86_400;
/// How long a server keeps a merchant's refund period it read (a change reaches the other
/// servers within this; the server that made it knows at once).
pub(crate) const PERIOD_CACHE_S: u64 = 30;

/// Where a refund stands (the name of Alipay's refund query).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Done: the money went back to the payer's wallet (or the cash over the counter).
    RefundSuccess,
    /// On its way to a wallet of another shard: the merchant's money is held for it.
    RefundProcessing,
    /// The wallet's shard did not take it: the money is back with the merchant.
    RefundFailed,
}

impl RefundStatus {
    /// The wire name.
    pub const fn code(self) -> &'static str {
        match self {
            RefundStatus::RefundSuccess => "REFUND_SUCCESS",
            RefundStatus::RefundProcessing => "REFUND_PROCESSING",
            RefundStatus::RefundFailed => "REFUND_FAILED",
        }
    }

    /// Inverse of [`RefundStatus::code`].
    pub fn from_code(code: &str) -> Option<RefundStatus> {
        [RefundStatus::RefundSuccess, RefundStatus::RefundProcessing, RefundStatus::RefundFailed].into_iter().find(|s| s.code() == code)
    }
}

/// A refund's hold on the merchant's balance for a wallet of another shard: what
/// [`RefundsElsewhere::send`] reserves, with the guards and rows of the same transaction.
#[derive(Clone, Debug)]
pub struct RefundHold {
    /// The crossing's id (from the trade and the refund's number: a retry sends the same).
    pub id: u128,
    /// The merchant's account, held.
    pub merchant_account: u64,
    /// The payer's wallet, credited on its shard.
    pub wallet: u64,
    /// The refund's amount.
    pub amount: i64,
    /// The trade's id (the ledger's `user_data`).
    pub trade: u64,
    /// Checked with the hold (the trade's version, no refund under this number yet).
    pub guards: Vec<Guard>,
    /// Written with the hold (the trade's refunded total, the refund `REFUND_PROCESSING`).
    pub rows: Vec<ServiceRow>,
}

/// How a refund's hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentRefund {
    /// The wallet was credited on its shard; the hold is posted.
    Posted,
    /// The wallet's shard did not take it (the reason's code); the hold is voided.
    Returned(&'static str),
    /// A guard of the hold failed (its index): nothing was held.
    Guard(usize),
}

/// A boxed future, as the trait's methods return.
pub type RefundFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CheckoutError>> + Send + 'a>>;

/// How a refund reaches a wallet of another shard: the country's clearing.
pub trait RefundsElsewhere: Send + Sync {
    /// Holds the merchant's money for the wallet's shard (or finds the hold made before under
    /// `hold.id`), asks that shard, applies its decision. `OutcomeUnknown` when it was not
    /// heard: the hold stays until a retry or the resolver finishes it.
    fn send(&self, hold: RefundHold) -> RefundFuture<'_, SentRefund>;
    /// How the hold made under `id` ended: `Some(true)` posted, `Some(false)` returned,
    /// `None` not decided yet.
    fn outcome(&self, id: u128) -> RefundFuture<'_, Option<bool>>;
}

/// The id of the crossing that carries a refund to another shard.
fn refund_crossing_id(trade_id: u64, out_request_no: &str) -> u128 {
    derived_event_id(&["trade", &trade_id.to_string(), "refund", out_request_no, "crossing"])
}

/// One refund of a trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The merchant's refund request number, unique within the trade.
    pub out_request_no: String,
    /// This refund's amount, in fen.
    pub amount: i64,
    /// Where it stands.
    pub status: RefundStatus,
    /// When it was made (unix seconds).
    pub created_at: u64,
    /// The cashier who made it at the till, if it was made there.
    pub cashier: Option<u64>,
}

/// The answer to a refund request or query: the refund, its trade as it is now (with the
/// total refunded so far), and whether this call moved the money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundAnswer {
    /// The trade now.
    pub trade: Trade,
    /// The refund's record.
    pub refund: Refund,
    /// True only for the call that made the refund; a repeat or a query answers false.
    pub fund_change: bool,
}

fn check_request_no(no: &str) -> Result<(), CheckoutError> {
    if no.is_empty() || no.len() > 64 || !no.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CheckoutError::InvalidField { field: "out_request_no", message: "1 to 64 letters, digits or _".into() });
    }
    Ok(())
}

/// The ledger id of a refund's entry, numbered by attempt.
fn refund_entry_id(trade_id: u64, out_request_no: &str, attempt: u32) -> u128 {
    derived_event_id(&["trade", &trade_id.to_string(), "refund", out_request_no, &attempt.to_string()])
}

impl Refund {
    /// Its row, with the part of the fee it gives back.
    fn row(&self, trade_id: u64, fee_back: i64) -> ServiceRow {
        ServiceRow {
            table: "refunds",
            key: vec![("trade_id", uint(trade_id)), ("out_request_no", Value::Text(self.out_request_no.clone()))],
            columns: vec![
                ("amount", Value::Int(self.amount)),
                ("created_at", uint(self.created_at)),
                ("status", Value::Text(self.status.code().to_owned())),
                ("cashier", self.cashier.map_or(Value::Null, uint)),
                ("fee_back", Value::Int(fee_back)),
            ],
            on_conflict: OnConflict::Fail,
        }
    }
}

impl Checkout {
    /// Refunds part or all of a paid trade within its refund period. Keyed by
    /// `out_request_no` (unique per trade): the same request again answers its record with
    /// `fund_change` false; refunds never exceed what was paid.
    pub async fn refund(&self, merchant_id: u64, out_trade_no: &str, out_request_no: &str, amount: i64) -> Result<RefundAnswer, CheckoutError> {
        self.refund_by(merchant_id, out_trade_no, out_request_no, amount, None).await
    }

    /// [`Checkout::refund`], made by `cashier` at the till (kept on the refund's record).
    pub async fn refund_by(&self, merchant_id: u64, out_trade_no: &str, out_request_no: &str, amount: i64, cashier: Option<u64>) -> Result<RefundAnswer, CheckoutError> {
        check_request_no(out_request_no)?;
        if amount <= 0 {
            return Err(CheckoutError::InvalidField { field: "amount", message: "greater than zero".into() });
        }
        for _ in 0..CAS_ATTEMPTS_MAX {
            let trade = self.trade(merchant_id, out_trade_no).await?;
            if let Some((refund, _)) = self.refund_record(trade.id, out_request_no).await? {
                if refund.amount != amount {
                    return Err(CheckoutError::RefundRequestReused);
                }
                match refund.status {
                    RefundStatus::RefundProcessing => return self.resume_refund_elsewhere(&trade, &refund).await,
                    // Asked again after it was returned: the same answer as when it was.
                    RefundStatus::RefundFailed => return Err(CheckoutError::RefundReturned("returned")),
                    RefundStatus::RefundSuccess => {}
                }
                return Ok(RefundAnswer { trade, refund, fund_change: false });
            }
            match trade.status {
                // Its period may have ended since it was read; finishing it lost a race.
                TradeStatus::TradeSuccess if trade.period_over(self.now_s()) => return Err(CheckoutError::TradeFinished),
                TradeStatus::TradeSuccess => {}
                TradeStatus::WaitBuyerPay => return Err(CheckoutError::NotPaid),
                TradeStatus::TradeFinished => return Err(CheckoutError::TradeFinished),
                TradeStatus::TradeClosed => return Err(CheckoutError::TradeClosed),
            }
            if amount > trade.amount - trade.refunded {
                return Err(CheckoutError::RefundExceedsPaid);
            }
            let tried = match self.try_refund(&trade, out_request_no, amount, cashier).await {
                // The payer's wallet is on another shard: the refund crosses to it.
                Err(CheckoutError::AccountElsewhere) if self.elsewhere.get().is_some() => self.refund_elsewhere(&trade, out_request_no, amount, cashier).await?,
                tried => tried?,
            };
            if let Some(answer) = tried {
                return answer;
            }
        }
        Err(CheckoutError::Unavailable("the trade kept changing; retry".into()))
    }

    /// A refund of a merchant's trade by its request number, with the trade as it is now.
    pub async fn refund_query(&self, merchant_id: u64, out_trade_no: &str, out_request_no: &str) -> Result<RefundAnswer, CheckoutError> {
        check_request_no(out_request_no)?;
        let trade = self.trade(merchant_id, out_trade_no).await?;
        let (refund, _) = self.refund_record(trade.id, out_request_no).await?.ok_or(CheckoutError::RefundNotFound)?;
        Ok(RefundAnswer { trade, refund, fund_change: false })
    }

    /// One attempt under the trade's version guard; `None` when the trade changed meanwhile.
    async fn try_refund(&self, trade: &Trade, out_request_no: &str, amount: i64, cashier: Option<u64>) -> Result<Option<Result<RefundAnswer, CheckoutError>>, CheckoutError> {
        let merchant = self.directory.merchant(trade.merchant_id).await?;
        let now = self.now_s();
        let (after, fee_back) = trade.refunded_by(amount);
        let refund = Refund { out_request_no: out_request_no.to_owned(), amount, status: RefundStatus::RefundSuccess, created_at: now, cashier };
        let refund_row = refund.row(trade.id, fee_back);
        let guards = vec![trade.version_guard(), Guard::Absent { table: "refunds", key: refund_row.key.clone() }];
        let rows: Vec<ServiceRow> = [after.row(OnConflict::UpdateOnly), refund_row].into_iter().chain(self.outbox_rows(&merchant, &after, now, Some(out_request_no))).collect();
        let answer = RefundAnswer { trade: after, refund, fund_change: true };
        let outcome = if trade.method == Method::Cash {
            // The cash goes back over the counter as it came: only the record is written.
            self.submit(Command { event: None, guards, rows, always_rows: Vec::new() }).await?
        } else {
            let payer = trade.payer_resident.ok_or(CheckoutError::NotPaid)?;
            let legs = refund_legs(trade, merchant.account, account_id(AccountKind::Wallet, payer), amount, fee_back);
            let command = |attempt| Command {
                event: Some(Event::Entry(Entry { id: refund_entry_id(trade.id, out_request_no, attempt), legs: legs.clone() })),
                guards: guards.clone(),
                rows: rows.clone(),
                always_rows: Vec::new(),
            };
            self.submit_numbered(command).await?
        };
        Ok(match outcome {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(merchant = trade.merchant_id, trade = trade.id, amount, refunded = answer.trade.refunded, "refunded");
                Some(Ok(answer))
            }
            Ok(outcome) => {
                tracing::debug!(merchant = trade.merchant_id, trade = trade.id, amount, status = outcome.status.name(), "refund refused");
                Some(Err(CheckoutError::Refused(outcome.status)))
            }
            Err(_) => None,
        })
    }

    /// A refund's record, and the fee it gives back.
    async fn refund_record(&self, trade_id: u64, out_request_no: &str) -> Result<Option<(Refund, i64)>, CheckoutError> {
        let rows = self
            .directory
            .read(
                "SELECT amount, created_at, status, cashier, fee_back FROM refunds WHERE trade_id = ?1 AND out_request_no = ?2",
                vec![uint(trade_id), Value::Text(out_request_no.to_owned())],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let bad = |what: &str| CheckoutError::Directory(citypay_directory::DirectoryError::Storage(format!("refund row: {what}")));
        let refund = Refund {
            out_request_no: out_request_no.to_owned(),
            amount: int_at(row, 0)?,
            created_at: u64::try_from(int_at(row, 1)?).map_err(|_| bad("created_at"))?,
            status: RefundStatus::from_code(&text_at(row, 2)?).ok_or_else(|| bad("status"))?,
            cashier: match row.get(3) {
                Some(Value::Int(id)) => Some(u64::try_from(*id).map_err(|_| bad("cashier"))?),
                _ => None,
            },
        };
        Ok(Some((refund, int_at(row, 4)?)))
    }

    /// Makes refunds to wallets of other shards cross through `elsewhere` (set once, by a
    /// server of a country).
    pub fn refund_elsewhere_through(&self, elsewhere: Arc<dyn RefundsElsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    /// One attempt of a refund to a wallet of another shard; `None` when the trade changed
    /// (or the refund was recorded) meanwhile.
    async fn refund_elsewhere(&self, trade: &Trade, out_request_no: &str, amount: i64, cashier: Option<u64>) -> Result<Option<Result<RefundAnswer, CheckoutError>>, CheckoutError> {
        let Some(elsewhere) = self.elsewhere.get() else { return Err(CheckoutError::AccountElsewhere) };
        let (after, fee_back) = trade.refunded_by(amount);
        let refund = Refund { out_request_no: out_request_no.to_owned(), amount, status: RefundStatus::RefundProcessing, created_at: self.now_s(), cashier };
        let row = refund.row(trade.id, fee_back);
        let guards = vec![trade.version_guard(), Guard::Absent { table: "refunds", key: row.key.clone() }];
        let hold = self.refund_hold(trade, &refund, guards, vec![after.row(OnConflict::UpdateOnly), row]).await?;
        match elsewhere.send(hold).await? {
            SentRefund::Guard(_) => Ok(None),
            // This request's hold moved the money, whoever writes the record's end: the
            // resolver's round may finish it first, once the crossing is posted.
            SentRefund::Posted => {
                let finished = self.finish_refund_elsewhere(trade.id, out_request_no, None).await;
                Ok(Some(finished.map(|answer| RefundAnswer { fund_change: true, ..answer })))
            }
            SentRefund::Returned(reason) => Ok(Some(self.finish_refund_elsewhere(trade.id, out_request_no, Some(reason)).await)),
        }
    }

    /// The hold of `refund` of `trade`'s on the merchant's balance for the payer's wallet.
    async fn refund_hold(&self, trade: &Trade, refund: &Refund, guards: Vec<Guard>, rows: Vec<ServiceRow>) -> Result<RefundHold, CheckoutError> {
        let payer = trade.payer_resident.ok_or(CheckoutError::NotPaid)?;
        let merchant = self.directory.merchant(trade.merchant_id).await?;
        Ok(RefundHold {
            id: refund_crossing_id(trade.id, &refund.out_request_no),
            merchant_account: merchant.account,
            wallet: account_id(AccountKind::Wallet, payer),
            amount: refund.amount,
            trade: trade.id,
            guards,
            rows,
        })
    }

    /// A refund held for another shard whose end this server did not hear: sent again (the
    /// same crossing: its decision, or a new ask), then finished.
    async fn resume_refund_elsewhere(&self, trade: &Trade, refund: &Refund) -> Result<RefundAnswer, CheckoutError> {
        let Some(elsewhere) = self.elsewhere.get() else { return Err(CheckoutError::AccountElsewhere) };
        // Held already: its guards and rows were written with the hold.
        let hold = self.refund_hold(trade, refund, Vec::new(), Vec::new()).await?;
        match elsewhere.send(hold).await? {
            SentRefund::Returned(reason) => self.finish_refund_elsewhere(trade.id, &refund.out_request_no, Some(reason)).await,
            SentRefund::Posted => self.finish_refund_elsewhere(trade.id, &refund.out_request_no, None).await,
            // No guards go with a resumed hold: a guard's refusal is not a posting.
            SentRefund::Guard(_) => Err(CheckoutError::Unavailable("the refund's hold was refused; retry".into())),
        }
    }

    /// Finishes a refund whose hold for another shard ended: posted (`returned` is `None`),
    /// the fee's part back to the merchant, `REFUND_SUCCESS` and the notification; returned,
    /// the amount refundable again and `REFUND_FAILED`. Once: a refund finished before answers
    /// as it is.
    async fn finish_refund_elsewhere(&self, trade_id: u64, out_request_no: &str, returned: Option<&'static str>) -> Result<RefundAnswer, CheckoutError> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            let trade = self.trade_numbered(trade_id).await?;
            let (refund, fee_back) = self.refund_record(trade_id, out_request_no).await?.ok_or(CheckoutError::RefundNotFound)?;
            if refund.status != RefundStatus::RefundProcessing {
                return match refund.status {
                    RefundStatus::RefundFailed => Err(CheckoutError::RefundReturned(returned.unwrap_or("returned"))),
                    _ => Ok(RefundAnswer { trade, refund, fund_change: false }),
                };
            }
            let key = vec![("trade_id", uint(trade_id)), ("out_request_no", Value::Text(out_request_no.to_owned()))];
            let processing = Guard::Matches { table: "refunds", key: key.clone(), expect: vec![("status", Value::Text(RefundStatus::RefundProcessing.code().into()))] };
            let status_row = |status: RefundStatus| ServiceRow {
                table: "refunds",
                key: key.clone(),
                columns: vec![("status", Value::Text(status.code().into()))],
                on_conflict: OnConflict::UpdateOnly,
            };
            let command = match returned {
                None => {
                    let merchant = self.directory.merchant(trade.merchant_id).await?;
                    let event = (fee_back > 0).then(|| {
                        let leg = Leg {
                            debit: PlatformAccounts::CNY.fee_revenue,
                            credit: merchant.account,
                            amount: fee_back,
                            currency: Currency::CNY,
                            code: codes::FEE_RETURNED,
                            class: 0,
                            user_data: trade.id,
                        };
                        Event::Entry(Entry { id: derived_event_id(&["trade", &trade.id.to_string(), "refund", out_request_no, "fee back"]), legs: vec![leg] })
                    });
                    let rows = std::iter::once(status_row(RefundStatus::RefundSuccess)).chain(self.outbox_rows(&merchant, &trade, self.now_s(), Some(out_request_no))).collect();
                    Command { event, guards: vec![processing], rows, always_rows: Vec::new() }
                }
                Some(_) => {
                    // Its amount is refundable again, and the fee it held is no longer given.
                    let refunded = trade.refunded - refund.amount;
                    let fee_returned = trade.fee_returned - fee_back;
                    let status = if trade.status == TradeStatus::TradeClosed && trade.refunded == trade.amount { TradeStatus::TradeSuccess } else { trade.status };
                    let after = Trade { refunded, fee_returned, status, version: trade.version + 1, ..trade.clone() };
                    Command { event: None, guards: vec![trade.version_guard(), processing], rows: vec![after.row(OnConflict::UpdateOnly), status_row(RefundStatus::RefundFailed)], always_rows: Vec::new() }
                }
            };
            match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => {
                    let Some(reason) = returned else {
                        let trade = self.trade_numbered(trade_id).await?;
                        tracing::debug!(trade = trade.id, amount = refund.amount, "refunded to another shard");
                        return Ok(RefundAnswer { trade, refund: Refund { status: RefundStatus::RefundSuccess, ..refund }, fund_change: true });
                    };
                    return Err(CheckoutError::RefundReturned(reason));
                }
                Ok(outcome) => return Err(CheckoutError::Refused(outcome.status)),
                // Finished meanwhile, or the trade changed: read again.
                Err(_) => {}
            }
        }
        Err(CheckoutError::Unavailable("the refund kept changing; retry".into()))
    }

    /// Finishes refunds held for other shards whose holds have ended (a crash or a lost answer
    /// left them `REFUND_PROCESSING`): the resolver's round calls it after finishing the
    /// crossings. How many.
    pub async fn finish_refunds_elsewhere(&self, limit: u32) -> Result<usize, CheckoutError> {
        let Some(elsewhere) = self.elsewhere.get() else { return Ok(0) };
        // Oldest first, all of them: those still crossing are passed over, not in the way of
        // those behind them; one that cannot be finished now is left for the next round.
        let rows = self
            .directory
            .read(
                "SELECT trade_id, out_request_no FROM refunds WHERE status = 'REFUND_PROCESSING' ORDER BY created_at, trade_id, out_request_no LIMIT ?1",
                vec![Value::Int(i64::from(limit))],
            )
            .await?;
        let mut finished = 0;
        for row in rows {
            let Ok(trade_id) = u64::try_from(int_at(&row, 0)?) else { continue };
            let no = text_at(&row, 1)?;
            let ended = match elsewhere.outcome(refund_crossing_id(trade_id, &no)).await {
                Ok(Some(true)) => self.finish_refund_elsewhere(trade_id, &no, None).await.map(|_| ()),
                Ok(Some(false)) => match self.finish_refund_elsewhere(trade_id, &no, Some("timeout")).await {
                    Err(CheckoutError::RefundReturned(_)) => Ok(()),
                    other => other.map(|_| ()),
                },
                Ok(None) => continue,
                Err(error) => Err(error),
            };
            match ended {
                Ok(()) => finished += 1,
                Err(error) => tracing::warn!(trade = trade_id, %error, "a refund held for another shard could not be finished; the next round tries again"),
            }
        }
        Ok(finished)
    }

    /// The merchant's refund period in seconds (the default unless it set one).
    pub async fn refund_period(&self, merchant_id: u64) -> Result<u64, CheckoutError> {
        let now = self.now_s();
        let cached = self.periods.lock().ok().and_then(|periods| periods.get(&merchant_id).copied());
        if let Some((period, read_at)) = cached
            && now < read_at + PERIOD_CACHE_S
        {
            return Ok(period);
        }
        let rows = self.directory.read("SELECT period_s FROM refund_periods WHERE merchant_id = ?1", vec![uint(merchant_id)]).await?;
        let period = match rows.first() {
            Some(row) => u64::try_from(int_at(row, 0)?).unwrap_or(DEFAULT_REFUND_PERIOD_S),
            None => DEFAULT_REFUND_PERIOD_S,
        };
        if let Ok(mut periods) = self.periods.lock() {
            periods.insert(merchant_id, (period, now));
        }
        Ok(period)
    }

    /// Sets the merchant's refund period (1 second to a year). It applies to trades paid from
    /// now on: a trade keeps the period it was paid under, so a payer's right to a refund
    /// never shrinks after paying.
    pub async fn set_refund_period(&self, merchant_id: u64, period_s: u64) -> Result<u64, CheckoutError> {
        if period_s == 0 || period_s > MAX_REFUND_PERIOD_S {
            return Err(CheckoutError::InvalidField { field: "refund_period_s", message: format!("1 to {MAX_REFUND_PERIOD_S} seconds (a year)") });
        }
        self.directory.merchant(merchant_id).await?;
        let now = self.now_s();
        let row = ServiceRow {
            table: "refund_periods",
            key: vec![("merchant_id", uint(merchant_id))],
            columns: vec![("period_s", uint(period_s)), ("updated_at", uint(now))],
            on_conflict: OnConflict::Update,
        };
        self.submit(Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() })
            .await?
            .map_err(|_| CheckoutError::Unavailable("the refund period was not written; retry".into()))?;
        if let Ok(mut periods) = self.periods.lock() {
            periods.insert(merchant_id, (period_s, now));
        }
        Ok(period_s)
    }

    /// Finishes a paid trade whose refund period is over (under its version guard); if it
    /// changed meanwhile, answers it as it is now.
    pub(crate) async fn finish_trade(&self, trade: &Trade) -> Result<Trade, CheckoutError> {
        self.change_trade(trade, trade.finished()).await
    }

    /// Finishes paid trades whose refund period is over (the sweeper calls it); returns how
    /// many.
    pub async fn finish_ended(&self, limit: usize) -> Result<usize, CheckoutError> {
        self.sweep(trade::SELECT_FINISHING, limit, TradeStatus::TradeFinished).await
    }
}

/// The refund's legs: the fee back to the merchant first (so a merchant holding only the net
/// of the payment can still refund all of it), then the amount back to the payer.
fn refund_legs(trade: &Trade, merchant_account: u64, wallet: u64, amount: i64, fee_back: i64) -> Vec<Leg> {
    let mut legs = Vec::with_capacity(2);
    if fee_back > 0 {
        legs.push(Leg {
            debit: PlatformAccounts::CNY.fee_revenue,
            credit: merchant_account,
            amount: fee_back,
            currency: Currency::CNY,
            code: codes::FEE_RETURNED,
            class: 0,
            user_data: trade.id,
        });
    }
    legs.push(Leg { debit: merchant_account, credit: wallet, amount, currency: Currency::CNY, code: codes::REFUND, class: 0, user_data: trade.id });
    legs
}
