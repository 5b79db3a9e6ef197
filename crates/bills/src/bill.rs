//! A bill, its items and its row.

use citypay_directory::{Category, DirectoryError, blob_at, int_at, text_at};
pub(crate) use citypay_directory::uint;
use citypay_shard::Guard;
use citypay_store::{OnConflict, ServiceRow, Value};
use serde::{Deserialize, Serialize};

use crate::BillError;

/// How a biller knows the payer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayerKind {
    /// A PRC resident ID number (found through the identity vault's blind index; never kept).
    IdNumber,
    /// A school's student number.
    StudentNumber,
    /// A utility's or other biller's account number.
    AccountNumber,
}

impl PayerKind {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            PayerKind::IdNumber => "id_number",
            PayerKind::StudentNumber => "student_number",
            PayerKind::AccountNumber => "account_number",
        }
    }

    /// Inverse of [`PayerKind::code`].
    pub fn from_code(code: &str) -> Option<PayerKind> {
        [PayerKind::IdNumber, PayerKind::StudentNumber, PayerKind::AccountNumber].into_iter().find(|k| k.code() == code)
    }
}

/// One line of a bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What it is for (1 to 64 characters).
    pub name: String,
    /// Amount in fen.
    pub amount: i64,
}

/// Where a bill stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillStatus {
    /// Nothing paid yet.
    Open,
    /// Some of the payer-chosen items are paid.
    PartlyPaid,
    /// Paid in full.
    Paid,
}

impl BillStatus {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            BillStatus::Open => "open",
            BillStatus::PartlyPaid => "partly_paid",
            BillStatus::Paid => "paid",
        }
    }

    /// Inverse of [`BillStatus::code`].
    pub fn from_code(code: &str) -> Option<BillStatus> {
        [BillStatus::Open, BillStatus::PartlyPaid, BillStatus::Paid].into_iter().find(|s| s.code() == code)
    }
}

/// A bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    /// citypay's bill number.
    pub id: u64,
    /// The biller (a merchant).
    pub biller_id: u64,
    /// The biller's city.
    pub city: u32,
    /// The biller's category.
    pub category: Category,
    /// The biller's own reference, unique per biller.
    pub out_bill_no: String,
    /// How the payer is identified.
    pub payer_kind: PayerKind,
    /// The blind index of the payer's identifier.
    pub(crate) payer_key: Vec<u8>,
    /// The payer's identifier, masked.
    pub payer_masked: String,
    /// What the bill is for.
    pub title: String,
    /// Its lines.
    pub items: Vec<Item>,
    /// Whether the payer picks which items to pay (else all are due together).
    pub pick_items: bool,
    /// The sum of the items, in fen.
    pub total: i64,
    /// The part the medical-insurance fund pays (hospital bills), in fen.
    pub insured: i64,
    /// Due date (unix seconds).
    pub due_at: u64,
    /// Whether it may still be paid after the due date.
    pub late_allowed: bool,
    /// Where it stands.
    pub status: BillStatus,
    /// Bit `i` set: item `i` is paid.
    pub paid_items: u64,
    /// Paid so far, in fen (the fund's part included).
    pub paid_amount: i64,
    /// Bumped by every change: the compare-and-swap guard.
    pub version: i64,
    /// Unix seconds.
    pub created_at: u64,
}

macro_rules! select_bills {
    ($tail:literal) => {
        concat!(
            "SELECT id, biller_id, city_code, category, out_bill_no, payer_kind, payer_key, payer_masked, title, items, ",
            "pick_items, total, insured, due_at, late_allowed, status, paid_items, paid_amount, version, created_at FROM bills ",
            $tail
        )
    };
}

pub(crate) const SELECT_BY_ID: &str = select_bills!("WHERE id = ?1");
pub(crate) const SELECT_BY_BILLER: &str = select_bills!("WHERE biller_id = ?1 AND out_bill_no = ?2");
pub(crate) const SELECT_BY_PAYER: &str = select_bills!("WHERE payer_key = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2");


impl Bill {
    /// Bits of every item.
    pub fn all_items(&self) -> u64 {
        if self.items.len() >= 64 { u64::MAX } else { (1u64 << self.items.len()) - 1 }
    }

    /// What is still owed, in fen.
    pub fn outstanding(&self) -> i64 {
        self.total - self.paid_amount
    }

    /// The amount of the items in `mask`.
    pub(crate) fn amount_of(&self, mask: u64) -> i64 {
        self.items.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, item)| item.amount).sum()
    }

    /// The bill after the items in `mask` are paid.
    pub(crate) fn paid(&self, mask: u64) -> Bill {
        let paid_items = self.paid_items | mask;
        let status = if paid_items == self.all_items() { BillStatus::Paid } else { BillStatus::PartlyPaid };
        Bill { paid_items, status, paid_amount: self.paid_amount + self.amount_of(mask), version: self.version + 1, ..self.clone() }
    }

    pub(crate) fn absent_guard(&self) -> Guard {
        Guard::Absent {
            table: "bills",
            key: vec![("biller_id", uint(self.biller_id)), ("out_bill_no", Value::Text(self.out_bill_no.clone()))],
        }
    }

    pub(crate) fn version_guard(&self) -> Guard {
        Guard::Matches { table: "bills", key: vec![("id", uint(self.id))], expect: vec![("version", Value::Int(self.version))] }
    }

    pub(crate) fn row(&self, on_conflict: OnConflict) -> ServiceRow {
        let items = serde_json::to_string(&self.items).unwrap_or_else(|_| "[]".into());
        ServiceRow {
            table: "bills",
            key: vec![("id", uint(self.id))],
            columns: vec![
                ("biller_id", uint(self.biller_id)),
                ("city_code", Value::Int(i64::from(self.city))),
                ("category", Value::Text(self.category.code().to_owned())),
                ("out_bill_no", Value::Text(self.out_bill_no.clone())),
                ("payer_kind", Value::Text(self.payer_kind.code().to_owned())),
                ("payer_key", Value::Blob(self.payer_key.clone())),
                ("payer_masked", Value::Text(self.payer_masked.clone())),
                ("title", Value::Text(self.title.clone())),
                ("items", Value::Text(items)),
                ("pick_items", Value::Int(i64::from(self.pick_items))),
                ("total", Value::Int(self.total)),
                ("insured", Value::Int(self.insured)),
                ("due_at", uint(self.due_at)),
                ("late_allowed", Value::Int(i64::from(self.late_allowed))),
                ("status", Value::Text(self.status.code().to_owned())),
                ("paid_items", Value::Int(self.paid_items as i64)),
                ("paid_amount", Value::Int(self.paid_amount)),
                ("version", Value::Int(self.version)),
                ("created_at", uint(self.created_at)),
            ],
            on_conflict,
        }
    }

    /// Only what a payment changes, for an update under the version guard.
    pub(crate) fn payment_row(&self) -> ServiceRow {
        ServiceRow {
            table: "bills",
            key: vec![("id", uint(self.id))],
            columns: vec![
                ("status", Value::Text(self.status.code().to_owned())),
                ("paid_items", Value::Int(self.paid_items as i64)),
                ("paid_amount", Value::Int(self.paid_amount)),
                ("version", Value::Int(self.version)),
            ],
            on_conflict: OnConflict::UpdateOnly,
        }
    }

    pub(crate) fn from_row(row: &[Value]) -> Result<Bill, BillError> {
        let bad = |what: &str| BillError::Directory(DirectoryError::Storage(format!("bill row: {what}")));
        let uint = |i: usize| int_at(row, i).and_then(|v| u64::try_from(v).map_err(|_| DirectoryError::Storage("negative".into())));
        let items: Vec<Item> = serde_json::from_str(&text_at(row, 9)?).map_err(|_| bad("items"))?;
        Ok(Bill {
            id: uint(0)?,
            biller_id: uint(1)?,
            city: u32::try_from(uint(2)?).map_err(|_| bad("city"))?,
            category: Category::from_code(&text_at(row, 3)?).ok_or_else(|| bad("category"))?,
            out_bill_no: text_at(row, 4)?,
            payer_kind: PayerKind::from_code(&text_at(row, 5)?).ok_or_else(|| bad("payer kind"))?,
            payer_key: blob_at(row, 6)?,
            payer_masked: text_at(row, 7)?,
            title: text_at(row, 8)?,
            items,
            pick_items: int_at(row, 10)? != 0,
            total: int_at(row, 11)?,
            insured: int_at(row, 12)?,
            due_at: uint(13)?,
            late_allowed: int_at(row, 14)? != 0,
            status: BillStatus::from_code(&text_at(row, 15)?).ok_or_else(|| bad("status"))?,
            paid_items: int_at(row, 16)? as u64,
            paid_amount: int_at(row, 17)?,
            version: int_at(row, 18)?,
            created_at: uint(19)?,
        })
    }
}
