//! How ledger records map to columns, shared by every backend so they cannot drift apart.

use citypay_ledger::{
    Account, AccountFlags, Balance, Cap, Currency, JournalKind, JournalRow, Limits, PendingState, Timestamp, Window,
    WindowCap, WindowUsage,
};

use crate::StoreError;

/// The transfers table's columns, in the order of [`JournalColumns`] (`batch` is the batch's).
pub const JOURNAL_COLUMNS: [&str; 16] = [
    "id", "leg", "kind", "debit_account", "credit_account", "amount", "currency", "code", "class",
    "user_data", "pending_id", "deadline", "state", "timestamp", "batch", "hash",
];

/// A journal row's column values, as every backend stores them.
#[derive(Debug, Clone, Copy)]
pub struct JournalColumns<'a> {
    pub id: [u8; 16],
    pub leg: i64,
    pub kind: i64,
    pub debit: i64,
    pub credit: i64,
    pub amount: i64,
    pub currency: &'a str,
    pub code: i64,
    pub class: i64,
    pub user_data: i64,
    pub pending_id: Option<[u8; 16]>,
    pub deadline: Option<i64>,
    /// A pending row starts open; storage keeps its state from then on.
    pub state: Option<i64>,
    pub timestamp: i64,
    pub hash: i64,
}

impl<'a> JournalColumns<'a> {
    pub fn of(r: &'a JournalRow) -> JournalColumns<'a> {
        JournalColumns {
            id: crate::id_to_bytes(r.id),
            leg: i64::from(r.leg_index),
            kind: r.kind as i64,
            debit: u64_to_column(r.leg.debit),
            credit: u64_to_column(r.leg.credit),
            amount: r.leg.amount,
            currency: r.leg.currency.code(),
            code: i64::from(r.leg.code),
            class: i64::from(r.leg.class),
            user_data: u64_to_column(r.leg.user_data),
            pending_id: (r.pending_id != 0).then(|| crate::id_to_bytes(r.pending_id)),
            deadline: r.deadline.map(|d| u64_to_column(d.0)),
            state: (r.kind == JournalKind::Pending).then_some(PendingState::Open as i64),
            timestamp: u64_to_column(r.timestamp.0),
            hash: u64_to_column(r.hash),
        }
    }
}

/// References to the values of `$c` (a [`JournalColumns`]) and of `$batch`, in
/// [`JOURNAL_COLUMNS`] order: an array of whichever parameter type the backend binds.
#[macro_export]
macro_rules! journal_values {
    ($c:expr, $batch:expr) => {
        [
            &&$c.id[..], &$c.leg, &$c.kind, &$c.debit, &$c.credit, &$c.amount, &$c.currency, &$c.code,
            &$c.class, &$c.user_data, &$c.pending_id.as_ref().map(|b| &b[..]), &$c.deadline, &$c.state,
            &$c.timestamp, &$batch, &$c.hash,
        ]
    };
}

/// The accounts table's columns, in the order of [`AccountColumns`] (`currency` second).
pub const ACCOUNT_COLUMNS: [&str; 26] = [
    "id", "currency", "flags", "code", "opened_at",
    "debits_posted", "debits_pending", "credits_posted", "credits_pending",
    "transfer_cap_classes", "transfer_cap_max",
    "cap1_window", "cap1_classes", "cap1_max", "cap1_key", "cap1_used",
    "cap2_window", "cap2_classes", "cap2_max", "cap2_key", "cap2_used",
    "cap3_window", "cap3_classes", "cap3_max", "cap3_key", "cap3_used",
];

/// The columns an account's balance update writes, after `id`.
pub const ACCOUNT_UPDATE_COLUMNS: [&str; 10] = [
    "debits_posted", "debits_pending", "credits_posted", "credits_pending",
    "cap1_key", "cap1_used", "cap2_key", "cap2_used", "cap3_key", "cap3_used",
];

/// The columns of an account's limits, written when they change.
pub const ACCOUNT_LIMIT_COLUMNS: [&str; 11] = [
    "transfer_cap_classes", "transfer_cap_max",
    "cap1_window", "cap1_classes", "cap1_max",
    "cap2_window", "cap2_classes", "cap2_max",
    "cap3_window", "cap3_classes", "cap3_max",
];

/// An account as column values: `currency` and the integer columns (all but `currency`, in
/// [`ACCOUNT_COLUMNS`] order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountColumns {
    /// ISO 4217 code.
    pub currency: String,
    /// The 25 integer columns; `None` is SQL NULL.
    pub ints: [Option<i64>; 25],
}

/// Stores a `u64` in a signed 64-bit column, bit for bit.
pub const fn u64_to_column(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// Inverse of [`u64_to_column`].
pub const fn u64_from_column(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

impl AccountColumns {
    /// The columns of `account`.
    pub fn of(a: &Account) -> AccountColumns {
        let b = &a.balance;
        let mut ints = [None; 25];
        let head = [
            u64_to_column(a.id),
            i64::from(a.flags.0),
            i64::from(a.code),
            u64_to_column(a.opened_at.0),
            b.debits_posted,
            b.debits_pending,
            b.credits_posted,
            b.credits_pending,
        ];
        for (slot, v) in ints.iter_mut().zip(head) {
            *slot = Some(v);
        }
        if let Some(cap) = a.limits.transfer_cap {
            ints[8] = Some(i64::from(cap.classes));
            ints[9] = Some(cap.amount_max);
        }
        for i in 0..3 {
            let base = 10 + 5 * i;
            if let Some(cap) = a.limits.window_caps[i] {
                ints[base] = Some(i64::from(cap.window.code()));
                ints[base + 1] = Some(i64::from(cap.classes));
                ints[base + 2] = Some(cap.amount_max);
            }
            ints[base + 3] = Some(i64::from(a.usage[i].window));
            ints[base + 4] = Some(a.usage[i].used);
        }
        AccountColumns { currency: a.currency.code().to_owned(), ints }
    }

    /// The values of [`ACCOUNT_LIMIT_COLUMNS`] for `account` (`None` is SQL NULL: no cap).
    pub fn limit_values(a: &Account) -> [Option<i64>; 11] {
        let ints = AccountColumns::of(a).ints;
        let mut values = [None; 11];
        values[..2].copy_from_slice(&ints[8..10]);
        for i in 0..3 {
            values[2 + 3 * i..5 + 3 * i].copy_from_slice(&ints[10 + 5 * i..13 + 5 * i]);
        }
        values
    }

    /// The values of [`ACCOUNT_UPDATE_COLUMNS`] for `account`.
    pub fn update_values(a: &Account) -> [i64; 10] {
        let b = &a.balance;
        let u = &a.usage;
        [
            b.debits_posted, b.debits_pending, b.credits_posted, b.credits_pending,
            i64::from(u[0].window), u[0].used, i64::from(u[1].window), u[1].used,
            i64::from(u[2].window), u[2].used,
        ]
    }

    /// Decodes an account, checking every value.
    pub fn decode(&self) -> Result<Account, StoreError> {
        let int = |i: usize| self.ints[i].ok_or_else(|| corrupt(format!("{} is NULL", ACCOUNT_COLUMNS[col(i)])));
        let small = |i: usize| -> Result<u16, StoreError> {
            u16::try_from(int(i)?).map_err(|_| corrupt(format!("{} out of range", ACCOUNT_COLUMNS[col(i)])))
        };
        let byte = |v: i64| u8::try_from(v).map_err(|_| corrupt(format!("class mask {v}")));
        let currency = Currency::parse(&self.currency).map_err(|e| corrupt(e.to_string()))?;
        let transfer_cap = match (self.ints[8], self.ints[9]) {
            (Some(classes), Some(amount_max)) => Some(Cap { classes: byte(classes)?, amount_max }),
            _ => None,
        };
        let mut window_caps = [None; 3];
        let mut usage = [WindowUsage::default(); 3];
        for i in 0..3 {
            let base = 10 + 5 * i;
            if let (Some(w), Some(classes), Some(amount_max)) =
                (self.ints[base], self.ints[base + 1], self.ints[base + 2])
            {
                let window = u8::try_from(w).ok().and_then(Window::from_code);
                let window = window.ok_or_else(|| corrupt(format!("window code {w}")))?;
                window_caps[i] = Some(WindowCap { window, classes: byte(classes)?, amount_max });
            }
            let key = u32::try_from(int(base + 3)?).map_err(|_| corrupt("window key".into()))?;
            usage[i] = WindowUsage { window: key, used: int(base + 4)? };
        }
        Ok(Account {
            id: u64_from_column(int(0)?),
            currency,
            flags: AccountFlags(small(1)?),
            code: small(2)?,
            limits: Limits { transfer_cap, window_caps },
            opened_at: Timestamp(u64_from_column(int(3)?)),
            balance: Balance {
                debits_posted: int(4)?,
                debits_pending: int(5)?,
                credits_posted: int(6)?,
                credits_pending: int(7)?,
            },
            usage,
        })
    }
}

/// Index into [`ACCOUNT_COLUMNS`] of integer column `i` (currency sits at 1).
fn col(i: usize) -> usize {
    if i == 0 { 0 } else { i + 1 }
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(format!("account row: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_round_trip_through_columns() {
        let account = Account {
            id: u64::MAX - 1,
            currency: Currency::CNY,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            code: 3,
            limits: Limits {
                transfer_cap: Some(Cap { classes: 1, amount_max: 50_000 }),
                window_caps: [
                    Some(WindowCap { window: Window::Year, classes: 1, amount_max: 10_000_000 }),
                    None,
                    Some(WindowCap { window: Window::Lifetime, classes: 3, amount_max: 100_000 }),
                ],
            },
            opened_at: Timestamp(1_795_535_999_000_000_000),
            balance: Balance { debits_posted: 1, debits_pending: 2, credits_posted: 30, credits_pending: 4 },
            usage: [WindowUsage { window: 2026, used: 3 }, WindowUsage::default(), WindowUsage { window: 0, used: 9 }],
        };
        let columns = AccountColumns::of(&account);
        assert_eq!(columns.decode().unwrap(), account);
        let mut broken = columns.clone();
        broken.ints[10] = Some(9);
        assert!(broken.decode().is_err());
    }
}
