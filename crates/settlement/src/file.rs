//! A merchant's settlement file of one day: the balance at the day's start, every movement of
//! its account during the day (payments, fees, refunds, bills, fares, the previous payout),
//! the balance at the close, and what was paid out. It ties out: opening plus the lines is the
//! closing balance, and the closing balance plus what was counted after the close (refunds
//! after it, a later payout made first) is the payout.

use citypay_directory::{AccountKind, DirectoryError, account_id, int_at, transfer_codes};
use citypay_ledger::{LocalDate, Timestamp};
use citypay_store::Value;

use crate::{Payout, Settlement, SettlementError, nanos};

/// One movement of the merchant's account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLine {
    /// When the ledger applied it.
    pub at: Timestamp,
    /// The ledger transfer code.
    pub code: u16,
    /// The movement's reference (a trade, a bill, a service day).
    pub reference: u64,
    /// Credit (positive) or debit (negative) of the merchant's account, in fen.
    pub amount: i64,
}

/// A merchant's day, from the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementFile {
    /// The merchant.
    pub merchant_id: u64,
    /// The day.
    pub date: LocalDate,
    /// Posted balance when the day began.
    pub opening_balance: i64,
    /// The day's movements, in ledger order.
    pub lines: Vec<FileLine>,
    /// Posted balance at the close.
    pub closing_balance: i64,
    /// The day's payout, once settled.
    pub payout: Option<Payout>,
}

/// The merchant's balance now and every posted movement since `?1`, in one snapshot.
const MOVEMENTS_SINCE: &str = "SELECT 0, 0, 0, credits_posted - debits_posted, 0 FROM accounts WHERE id = ?2
    UNION ALL
    SELECT 1, timestamp, code, CASE WHEN credit_account = ?2 THEN amount ELSE -amount END, user_data
      FROM transfers WHERE timestamp >= ?1 AND kind IN (0, 2) AND (credit_account = ?2 OR debit_account = ?2)";

impl SettlementFile {
    /// What the payout counted besides the closing balance, when anything: movements after the
    /// close that took the day's money before it was paid (refunds; a later day's payout made
    /// first). The closing balance plus it is the payout's amount.
    pub fn counted_after_close(&self) -> Option<i64> {
        let p = self.payout.as_ref()?;
        (p.amount != self.closing_balance).then(|| p.amount - self.closing_balance)
    }

    /// The file as CSV (RFC 4180, a header line first). Times are the city's local time,
    /// `YYYY-MM-DD HH:MM:SS`, as in the reconciliation file.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("merchant_id,date,time,type,reference,amount\n");
        let prefix = format!("{},{}", self.merchant_id, self.date);
        out.push_str(&format!("{prefix},,opening_balance,,{}\n", self.opening_balance));
        for line in &self.lines {
            let name = transfer_codes::name(line.code);
            out.push_str(&format!("{prefix},{},{name},{},{}\n", line.at.local_date_time(), line.reference, line.amount));
        }
        out.push_str(&format!("{prefix},,closing_balance,,{}\n", self.closing_balance));
        if let Some(p) = &self.payout {
            if let Some(after) = self.counted_after_close() {
                out.push_str(&format!("{prefix},,counted_after_close,,{after}\n"));
            }
            let reference = p.bank_reference.clone().or_else(|| p.error.clone()).unwrap_or_default();
            out.push_str(&format!("{prefix},,payout_{},{reference},{}\n", p.status.code(), p.amount));
        }
        out
    }
}

impl Settlement {
    /// A merchant's settlement file of `date`.
    pub async fn file(&self, merchant: u64, date: LocalDate) -> Result<SettlementFile, SettlementError> {
        let account = citypay_store::u64_to_column(account_id(AccountKind::Merchant, merchant));
        let (start, close) = (date.start(), date.next().start());
        let rows = self.directory.read(MOVEMENTS_SINCE, vec![nanos(start), Value::Int(account)]).await?;
        let mut balance_now = None;
        let mut since = Vec::new();
        for row in &rows {
            if int_at(row, 0)? == 0 {
                balance_now = Some(int_at(row, 3)?);
                continue;
            }
            since.push(FileLine {
                at: Timestamp(u64::try_from(int_at(row, 1)?).unwrap_or(0)),
                code: u16::try_from(int_at(row, 2)?).unwrap_or(0),
                reference: citypay_store::u64_from_column(int_at(row, 4)?),
                amount: int_at(row, 3)?,
            });
        }
        let balance_now = balance_now.ok_or(DirectoryError::NotFound)?;
        let opening_balance = balance_now - since.iter().map(|l| l.amount).sum::<i64>();
        since.sort_by_key(|l| l.at);
        let lines: Vec<FileLine> = since.into_iter().filter(|l| l.at < close).collect();
        let closing_balance = opening_balance + lines.iter().map(|l| l.amount).sum::<i64>();
        let payout = self.payout(merchant, date).await?;
        Ok(SettlementFile { merchant_id: merchant, date, opening_balance, lines, closing_balance, payout })
    }
}
