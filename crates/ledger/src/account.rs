//! Accounts: one currency each, posted and pending balances, flags and limits.

use crate::{Currency, Timestamp, event::AccountId};

/// Which side of an account may not outgrow the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccountFlags(pub u16);

impl AccountFlags {
    /// No constraint: a clearing or custody account may go either way.
    pub const NONE: AccountFlags = AccountFlags(0);
    /// Posted and pending debits may never exceed posted credits (a wallet never goes below zero).
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: AccountFlags = AccountFlags(1);
    /// Posted and pending credits may never exceed posted debits (the mirror, for liability-side
    /// accounts such as a bank's reserve seen from the platform).
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: AccountFlags = AccountFlags(2);
    const KNOWN: u16 = 3;

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: AccountFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether only defined flags are set and not both sides at once.
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::KNOWN == 0 && self.0 != Self::KNOWN
    }
}

/// The four running totals of an account, in minor units. All are non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Balance {
    /// Sum of posted transfers debiting the account.
    pub debits_posted: i64,
    /// Sum of open pending transfers debiting the account.
    pub debits_pending: i64,
    /// Sum of posted transfers crediting the account.
    pub credits_posted: i64,
    /// Sum of open pending transfers crediting the account.
    pub credits_pending: i64,
}

impl Balance {
    /// Credits minus debits, posted only: what a wallet holder owns.
    pub const fn net_posted(&self) -> i64 {
        self.credits_posted - self.debits_posted
    }

    /// What may still be debited: posted credits minus posted and pending debits.
    pub const fn available(&self) -> i64 {
        self.credits_posted - self.debits_posted - self.debits_pending
    }
}

/// A calendar window that a cap is counted over, in the city's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Window {
    /// The local calendar day; resets at local midnight.
    Day,
    /// The local calendar year; resets at local new year.
    Year,
    /// Since the account was opened; never resets.
    Lifetime,
}

impl Window {
    /// The key of the window that `now` falls in; usage with another key is stale.
    pub fn key(self, now: Timestamp) -> u32 {
        match self {
            Window::Day => now.local_day_number(),
            Window::Year => u32::try_from(now.local_date().year).unwrap_or(0),
            Window::Lifetime => 0,
        }
    }

    /// Stable code for storage.
    pub const fn code(self) -> u8 {
        match self {
            Window::Day => 1,
            Window::Year => 2,
            Window::Lifetime => 3,
        }
    }

    /// Inverse of [`Window::code`].
    pub const fn from_code(code: u8) -> Option<Window> {
        match code {
            1 => Some(Window::Day),
            2 => Some(Window::Year),
            3 => Some(Window::Lifetime),
            _ => None,
        }
    }
}

/// A cap on single debits from an account, counting transfers whose class shares a bit with
/// `classes` (e.g. balance payments, not top-ups).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Cap {
    /// Transfer classes the cap counts.
    pub classes: u8,
    /// Largest amount one such transfer may have, in minor units.
    pub amount_max: i64,
}

/// A cap on the sum of debits over a calendar window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WindowCap {
    /// The window the sum is counted over.
    pub window: Window,
    /// Transfer classes the cap counts.
    pub classes: u8,
    /// Largest sum, posted and pending, within one window, in minor units.
    pub amount_max: i64,
}

/// Limits on debits from an account, checked in the same step that applies a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Limits {
    /// Cap per transfer.
    pub transfer_cap: Option<Cap>,
    /// Up to three window caps (a day, a year, since opening).
    pub window_caps: [Option<WindowCap>; 3],
}

impl Limits {
    /// No limits at all.
    pub const NONE: Limits = Limits { transfer_cap: None, window_caps: [None; 3] };

    /// Whether every cap has a positive amount and a non-empty class mask.
    pub fn is_valid(&self) -> bool {
        let cap_ok = self.transfer_cap.is_none_or(|c| c.amount_max > 0 && c.classes != 0);
        let windows_ok = self
            .window_caps
            .iter()
            .flatten()
            .all(|c| c.amount_max > 0 && c.classes != 0);
        cap_ok && windows_ok
    }
}

/// How much of a window cap has been used in the window with key `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WindowUsage {
    /// The key of the window this usage belongs to ([`Window::key`]).
    pub window: u32,
    /// Posted plus pending debits counted by the cap within that window.
    pub used: i64,
}

/// An account: a fixed-size record kept in memory for every account of the shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Account {
    /// Chosen by the caller; never 0.
    pub id: AccountId,
    /// Every transfer touching the account is in this currency.
    pub currency: Currency,
    /// Which side may not exceed the other.
    pub flags: AccountFlags,
    /// Caller-defined kind (wallet, merchant, custody, fee revenue, ...).
    pub code: u16,
    /// Debit limits.
    pub limits: Limits,
    /// When the account was created (ledger time).
    pub opened_at: Timestamp,
    /// Running totals.
    pub balance: Balance,
    /// Usage of each window cap, index for index with `limits.window_caps`.
    pub usage: [WindowUsage; 3],
}

impl Account {
    /// Describes how an account breaks its flags or has a negative total, if it does.
    pub fn flag_violation(&self) -> Option<String> {
        let b = &self.balance;
        let totals = [b.debits_posted, b.debits_pending, b.credits_posted, b.credits_pending];
        if totals.iter().any(|t| *t < 0) {
            return Some(format!("negative total in {b:?}"));
        }
        let debits = i128::from(b.debits_posted) + i128::from(b.debits_pending);
        let credits = i128::from(b.credits_posted) + i128::from(b.credits_pending);
        if self.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && debits > i128::from(b.credits_posted)
        {
            return Some(format!("debits exceed credits: {b:?}"));
        }
        if self.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && credits > i128::from(b.debits_posted)
        {
            return Some(format!("credits exceed debits: {b:?}"));
        }
        None
    }
}
