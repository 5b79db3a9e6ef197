//! Settlement: once a day has closed, each merchant's balance at the day's end is paid to its
//! bank account through the bank connector.
//!
//! What a merchant is owed for day D is its balance at D's close, less what was paid out or
//! refunded since then: the ledger's available balance now, less the net of the movements of
//! its account after the close that are not payouts, when that net is positive. Both come from
//! one SQL statement, so one snapshot. The rules then fall out of the books rather than from a
//! second set of sums:
//! - a day whose net is negative pays nothing and the shortfall stays in the balance, so the
//!   next day's payout is smaller (carried forward);
//! - a payout the bank refuses is voided, so its money is back in the balance and the next run
//!   pays it (a re-run of the same day retries it first);
//! - a re-run of a day that paid finds its payout row and pays nothing;
//! - a day settled after a later day was is owed nothing: the later payout took its money.
//!
//! A payout is a pending transfer (merchant → the bank's custody account) held before the bank
//! is called, posted when the bank pays and voided when it refuses; its ids and the bank
//! reference derive from (merchant, day, attempt), so a run interrupted at any point finishes
//! on the next run without paying twice.

mod file;
mod schema;

use std::sync::Arc;

use citypay_directory::{AccountKind, BankConnector, Directory, DirectoryError, account_id, derived_event_id, entity_of, int_at, text_at, transfer_codes};
use citypay_ledger::{Currency, Event, LocalDate, PostPending, Status, Timestamp, Transfer, VoidPending};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{OnConflict, ServiceRow, Value};

pub use file::{FileLine, SettlementFile};
pub use schema::MIGRATIONS;

/// Merchants settled at once: the bank and the writer both work on several at a time.
const CONCURRENCY: usize = 64;

/// What went wrong, with a stable code for the API.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// From the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The day has not closed yet: its payments may still change.
    #[error("{0} has not closed yet")]
    DayNotClosed(LocalDate),
    /// Unavailable; running again is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl SettlementError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            SettlementError::Directory(e) => e.code(),
            SettlementError::DayNotClosed(_) => "day_not_closed",
            SettlementError::Unavailable(_) => "unavailable",
        }
    }
}

/// Where a merchant's payout of a day stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutStatus {
    /// Held in the ledger, the bank's answer not yet recorded (an interrupted run).
    Pending,
    /// The bank paid it.
    Paid,
    /// The bank refused; the money is back in the merchant's balance and the next run retries.
    Failed,
    /// Nothing to pay: the day's balance was zero or negative and is carried forward.
    Carried,
}

impl PayoutStatus {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            PayoutStatus::Pending => "pending",
            PayoutStatus::Paid => "paid",
            PayoutStatus::Failed => "failed",
            PayoutStatus::Carried => "carried",
        }
    }

    /// Inverse of [`PayoutStatus::code`].
    pub fn from_code(code: &str) -> Option<PayoutStatus> {
        [PayoutStatus::Pending, PayoutStatus::Paid, PayoutStatus::Failed, PayoutStatus::Carried].into_iter().find(|s| s.code() == code)
    }
}

/// A merchant's payout of one day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    /// The merchant.
    pub merchant_id: u64,
    /// The day settled.
    pub date: LocalDate,
    /// Paid (or, when carried, the balance left: zero or negative), in fen.
    pub amount: i64,
    /// Where it stands.
    pub status: PayoutStatus,
    /// Bank attempts so far.
    pub attempts: u32,
    /// The bank's reference once paid.
    pub bank_reference: Option<String>,
    /// Why the bank refused, when it did.
    pub error: Option<String>,
}

/// What a settlement run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettlementRun {
    /// Payouts the bank made in this run.
    pub paid: usize,
    /// Their total, in fen.
    pub paid_amount: i64,
    /// Merchants whose day was zero or negative.
    pub carried: usize,
    /// Payouts the bank refused (retried next run).
    pub failed: usize,
    /// Merchants this day had already settled.
    pub already_settled: usize,
}

/// The settlement service.
#[derive(Clone)]
pub struct Settlement {
    directory: Directory,
    bank: Arc<dyn BankConnector>,
}

impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settlement").finish_non_exhaustive()
    }
}

/// The range of merchants' ledger account ids.
fn merchant_accounts() -> (i64, i64) {
    let low = account_id(AccountKind::Merchant, 0);
    let high = account_id(AccountKind::Merchant, (1 << 56) - 1);
    (citypay_store::u64_to_column(low), citypay_store::u64_to_column(high))
}

pub(crate) fn nanos(t: Timestamp) -> Value {
    Value::Int(i64::try_from(t.0).unwrap_or(i64::MAX))
}

/// Each merchant's balance at a close, from its balances now and its movements since: the
/// posted balance, the held (pending) debits, the net of the posted movements since the close
/// that are not payouts, and the net of the payouts since. Posted rows only (kinds 0 and 2).
const OWED_AT_CLOSE: &str = "WITH moved AS (
        SELECT credit_account AS account, amount, code FROM transfers
         WHERE timestamp >= ?1 AND kind IN (0, 2) AND credit_account BETWEEN ?3 AND ?4
        UNION ALL
        SELECT debit_account AS account, -amount, code FROM transfers
         WHERE timestamp >= ?1 AND kind IN (0, 2) AND debit_account BETWEEN ?3 AND ?4
    ), since AS (SELECT account, CAST(SUM(CASE WHEN code <> ?2 THEN amount ELSE 0 END) AS BIGINT) AS net,
                        CAST(SUM(CASE WHEN code = ?2 THEN amount ELSE 0 END) AS BIGINT) AS paid_out
                   FROM moved GROUP BY account)
    SELECT a.id, a.credits_posted - a.debits_posted, a.debits_pending, COALESCE(since.net, 0), COALESCE(since.paid_out, 0)
      FROM accounts a LEFT JOIN since ON since.account = a.id
     WHERE a.id BETWEEN ?3 AND ?4";

/// What a merchant is owed for a day from [`OWED_AT_CLOSE`]'s row: what is available now, less
/// money that came in after the close (a later day's); but never less than the day's own
/// shortfall. A later day's payout took this day's money too (it pays the whole balance at its
/// close), so after one this day is owed nothing: it is not made negative by money that was
/// paid out, only by refunds after its close that its balance could not cover.
fn owed_for_day(posted: i64, held: i64, moved: i64, paid_out: i64) -> i64 {
    let own = posted - moved - paid_out + moved.min(0);
    (posted - held - moved.max(0)).max(own.min(0))
}

const SELECT_PAYOUTS: &str = "SELECT merchant_id, amount, status, attempts, bank_reference, error FROM payouts WHERE day = ?1";
const SELECT_PAYOUT: &str = "SELECT merchant_id, amount, status, attempts, bank_reference, error FROM payouts WHERE day = ?1 AND merchant_id = ?2";

impl Settlement {
    /// Settlement over the directory, paying through `bank`.
    pub fn new(directory: Directory, bank: Arc<dyn BankConnector>) -> Settlement {
        Settlement { directory, bank }
    }

    /// Settles `date` for every merchant. Idempotent: a re-run pays nothing twice, finishes
    /// what an interrupted run left, and retries refused payouts.
    pub async fn settle(&self, date: LocalDate) -> Result<SettlementRun, SettlementError> {
        let close = date.next().start();
        if self.directory.clock().now() < close {
            return Err(SettlementError::DayNotClosed(date));
        }
        let (low, high) = merchant_accounts();
        let owed = self
            .directory
            .read(OWED_AT_CLOSE, vec![nanos(close), Value::Int(i64::from(transfer_codes::PAYOUT)), Value::Int(low), Value::Int(high)])
            .await?;
        let existing: std::collections::HashMap<u64, Payout> =
            self.payouts(date).await?.into_iter().map(|p| (p.merchant_id, p)).collect();
        let mut run = SettlementRun::default();
        let mut work = Vec::new();
        for row in &owed {
            let merchant = entity_of(citypay_store::u64_from_column(int_at(row, 0)?));
            // Money that came in after the close belongs to later days; money that went out
            // after it (a refund) is gone whichever day it is counted against.
            let owed = owed_for_day(int_at(row, 1)?, int_at(row, 2)?, int_at(row, 3)?, int_at(row, 4)?);
            match existing.get(&merchant) {
                Some(p) if matches!(p.status, PayoutStatus::Paid | PayoutStatus::Carried) => run.already_settled += 1,
                Some(p) => work.push((merchant, owed, Some(p.clone()))),
                None if owed != 0 => work.push((merchant, owed, None)),
                None => {}
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut outcomes = Vec::new();
        for (merchant, owed, previous) in work {
            if tasks.len() >= CONCURRENCY
                && let Some(done) = tasks.join_next().await
            {
                outcomes.push(done.map_err(|e| SettlementError::Unavailable(e.to_string()))?);
            }
            let this = self.clone();
            tasks.spawn(async move { this.settle_merchant(date, merchant, owed, previous).await });
        }
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done.map_err(|e| SettlementError::Unavailable(e.to_string()))?);
        }
        for outcome in outcomes {
            let payout = outcome?;
            tracing::trace!(merchant = payout.merchant_id, amount = payout.amount, status = payout.status.code(), attempts = payout.attempts, "payout");
            match payout.status {
                PayoutStatus::Paid => {
                    run.paid += 1;
                    run.paid_amount += payout.amount;
                }
                PayoutStatus::Carried => run.carried += 1,
                PayoutStatus::Failed | PayoutStatus::Pending => run.failed += 1,
            }
        }
        tracing::debug!(date = %date, paid = run.paid, paid_amount = run.paid_amount, carried = run.carried, failed = run.failed, already_settled = run.already_settled, "settlement run");
        Ok(run)
    }

    /// One merchant's payout of `date`: finish an interrupted attempt, or make a new one.
    async fn settle_merchant(&self, date: LocalDate, merchant: u64, owed: i64, previous: Option<Payout>) -> Result<Payout, SettlementError> {
        if let Some(p) = &previous
            && p.status == PayoutStatus::Pending
        {
            return self.call_bank(p.clone()).await;
        }
        let attempts = previous.as_ref().map_or(0, |p| p.attempts);
        let guard = match &previous {
            None => Guard::Absent { table: "payouts", key: payout_key(merchant, date) },
            Some(p) => Guard::Matches {
                table: "payouts",
                key: payout_key(merchant, date),
                expect: vec![("attempts", Value::Int(i64::from(p.attempts))), ("status", Value::Text(p.status.code().into()))],
            },
        };
        if owed <= 0 {
            let carried = Payout { merchant_id: merchant, date, amount: owed, status: PayoutStatus::Carried, attempts, bank_reference: None, error: None };
            let command = Command { event: None, guards: vec![guard], rows: vec![self.row(&carried)], always_rows: Vec::new() };
            return match self.submit(command).await? {
                Ok(_) => Ok(carried),
                Err(_) => self.payout(merchant, date).await?.ok_or_else(|| SettlementError::Unavailable("payout changed".into())),
            };
        }
        let pending = Payout { merchant_id: merchant, date, amount: owed, status: PayoutStatus::Pending, attempts: attempts + 1, bank_reference: None, error: None };
        let hold = Transfer {
            id: payout_event_id(&pending, "hold"),
            leg: citypay_ledger::Leg {
                debit: account_id(AccountKind::Merchant, merchant),
                credit: self.bank.custody_account(),
                amount: owed,
                currency: Currency::CNY,
                code: transfer_codes::PAYOUT,
                class: 0,
                user_data: u64::try_from(date.day_number()).unwrap_or(0),
            },
            // Only the bank's answer closes it: it may have paid.
            pending_timeout_s: Some(0),
        };
        let command = Command { event: Some(Event::Transfer(hold)), guards: vec![guard.clone()], rows: vec![self.row(&pending)], always_rows: Vec::new() };
        match self.submit(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => self.call_bank(pending).await,
            // The balance moved since it was read (a refund). The attempt is recorded as
            // failed, so the next run holds the new balance under a new id; the same id would
            // only replay this refusal.
            Ok(outcome) => {
                let failed = Payout { status: PayoutStatus::Failed, error: Some(outcome.status.name().to_owned()), ..pending };
                let record = Command { event: None, guards: vec![guard], rows: vec![self.row(&failed)], always_rows: Vec::new() };
                match self.submit(record).await? {
                    Ok(_) => Ok(failed),
                    Err(_) => self.payout(merchant, date).await?.ok_or_else(|| SettlementError::Unavailable("payout changed".into())),
                }
            }
            Err(_) => self.payout(merchant, date).await?.ok_or_else(|| SettlementError::Unavailable("payout changed".into())),
        }
    }

    /// Asks the bank to pay a held payout, then posts or voids the hold.
    async fn call_bank(&self, pending: Payout) -> Result<Payout, SettlementError> {
        let account = self.directory.settlement_account(pending.merchant_id).await?;
        let reference = format!("{}-{}-{}", pending.merchant_id, pending.date, pending.attempts);
        let answer = self.bank.pay_merchant(account.expose(), pending.amount, &reference);
        let (event, done) = match answer {
            Ok(receipt) => (
                Event::PostPending(PostPending { id: payout_event_id(&pending, "post"), pending_id: payout_event_id(&pending, "hold"), amount: None }),
                Payout { status: PayoutStatus::Paid, bank_reference: Some(receipt.bank_reference), ..pending.clone() },
            ),
            Err(e) => (
                Event::VoidPending(VoidPending { id: payout_event_id(&pending, "void"), pending_id: payout_event_id(&pending, "hold") }),
                Payout { status: PayoutStatus::Failed, error: Some(e.code().to_owned()), ..pending.clone() },
            ),
        };
        let guard = Guard::Matches {
            table: "payouts",
            key: payout_key(pending.merchant_id, pending.date),
            expect: vec![("attempts", Value::Int(i64::from(pending.attempts))), ("status", Value::Text(PayoutStatus::Pending.code().into()))],
        };
        let command = Command { event: Some(event), guards: vec![guard], rows: vec![self.row(&done)], always_rows: Vec::new() };
        match self.submit(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => Ok(done),
            Ok(outcome) => Err(SettlementError::Unavailable(format!("closing the payout hold: {}", outcome.status.name()))),
            // Another run closed it meanwhile.
            Err(_) => self.payout(pending.merchant_id, pending.date).await?.ok_or_else(|| SettlementError::Unavailable("payout vanished".into())),
        }
    }

    async fn submit(&self, command: Command) -> Result<Result<citypay_ledger::Outcome, usize>, SettlementError> {
        match self.directory.shard().submit(command).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(SubmitError::GuardFailed { guard }) => Ok(Err(guard)),
            Err(other) => Err(SettlementError::Unavailable(other.to_string())),
        }
    }

    fn row(&self, payout: &Payout) -> ServiceRow {
        let now = i64::try_from(self.directory.clock().now().unix_seconds()).unwrap_or(0);
        ServiceRow {
            table: "payouts",
            key: payout_key(payout.merchant_id, payout.date),
            columns: vec![
                ("amount", Value::Int(payout.amount)),
                ("status", Value::Text(payout.status.code().to_owned())),
                ("attempts", Value::Int(i64::from(payout.attempts))),
                ("bank_reference", payout.bank_reference.clone().map_or(Value::Null, Value::Text)),
                ("error", payout.error.clone().map_or(Value::Null, Value::Text)),
                ("updated_at", Value::Int(now)),
            ],
            on_conflict: OnConflict::Update,
        }
    }

    /// Every payout of a day.
    pub async fn payouts(&self, date: LocalDate) -> Result<Vec<Payout>, SettlementError> {
        let rows = self.directory.read(SELECT_PAYOUTS, vec![Value::Int(date.day_number())]).await?;
        rows.iter().map(|row| payout_from_row(row, date)).collect()
    }

    /// A merchant's payout of a day, if the day was settled for it.
    pub async fn payout(&self, merchant: u64, date: LocalDate) -> Result<Option<Payout>, SettlementError> {
        let id = i64::try_from(merchant).unwrap_or(-1);
        let rows = self.directory.read(SELECT_PAYOUT, vec![Value::Int(date.day_number()), Value::Int(id)]).await?;
        rows.first().map(|row| payout_from_row(row, date)).transpose()
    }
}

fn payout_key(merchant: u64, date: LocalDate) -> Vec<(&'static str, Value)> {
    vec![("merchant_id", Value::Int(i64::try_from(merchant).unwrap_or(-1))), ("day", Value::Int(date.day_number()))]
}

fn payout_event_id(payout: &Payout, step: &str) -> citypay_ledger::EventId {
    derived_event_id(&["payout", &payout.merchant_id.to_string(), &payout.date.to_string(), &payout.attempts.to_string(), step])
}

fn payout_from_row(row: &[Value], date: LocalDate) -> Result<Payout, SettlementError> {
    let optional = |i: usize| match row.get(i) {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    };
    Ok(Payout {
        merchant_id: u64::try_from(int_at(row, 0)?).map_err(|_| DirectoryError::Storage("merchant id".into()))?,
        date,
        amount: int_at(row, 1)?,
        status: PayoutStatus::from_code(&text_at(row, 2)?).ok_or_else(|| DirectoryError::Storage("payout status".into()))?,
        attempts: u32::try_from(int_at(row, 3)?).map_err(|_| DirectoryError::Storage("attempts".into()))?,
        bank_reference: optional(4),
        error: optional(5),
    })
}
