//! Ledger account ids: the kind of account in the top byte, the owner below it, so an id says
//! whose account it is without a lookup.

use citypay_identity::{AccountClass, LimitWindow};
use citypay_ledger::{
    AccountFlags, AccountId, Currency, Event, Limits, NewAccount, Window, WindowCap,
};

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccountKind {
    /// A resident's wallet: never below zero; balance payments capped by the account class.
    Wallet = 1,
    /// A merchant's balance, owed to the merchant until settled.
    Merchant = 2,
    /// The platform's custody (reserve) account at a bank: the mirror of client money held
    /// there. Its owner number is the bank's.
    Custody = 3,
    /// The platform's fee revenue, per currency (owner: ISO 4217 numeric code).
    FeeRevenue = 4,
    /// A city's medical-insurance fund, the part of hospital bills it pays (owner: the city's
    /// code). Funded by the insurance bureau's deposits; never below zero.
    InsuranceFund = 5,
    /// A shard's clearing account for a peer shard (owner: the peer's shard number): what
    /// crossed between the two. It may go either way; with its mirror on the peer it sums to
    /// what is decided and not yet applied.
    Clearing = 6,
}

// The routing layer puts wallets and merchant accounts in buckets by their kind's number.
const _: () = assert!(citypay_routing::BUCKETED_KINDS[0] == AccountKind::Wallet as u64 && citypay_routing::BUCKETED_KINDS[1] == AccountKind::Merchant as u64);

/// Ledger transfer class of balance payments (a wallet paying a shop or a bill). The PBOC
/// account-class caps count only these; a top-up or a refund is not one.
pub const BALANCE_PAYMENT: u8 = 1;

/// The ledger account code of each kind, for reports.
impl AccountKind {
    /// The code stored on the ledger account.
    pub const fn code(self) -> u16 {
        self as u16
    }
}

const OWNER_BITS: u32 = 56;

/// The id of `kind`'s account owned by `owner` (below 2^56).
pub const fn account_id(kind: AccountKind, owner: u64) -> AccountId {
    assert!(owner < (1 << OWNER_BITS));
    ((kind as u64) << OWNER_BITS) | owner
}

/// The owner number inside an account id.
pub const fn entity_of(account: AccountId) -> u64 {
    account & ((1 << OWNER_BITS) - 1)
}

/// A wallet's limits at account class `class`: its balance payments capped since opening
/// (class I) in slot 0 and over the year in slot 1. Class I counts its year too, under its own
/// amount (which its since-opening cap reaches first), so the yearly cap of a later class
/// keeps counting the year's payments when the class rises.
pub(crate) fn wallet_limits(class: AccountClass) -> Limits {
    let limit = class.balance_payment_limit();
    let cap = |window| Some(WindowCap { window, classes: BALANCE_PAYMENT, amount_max: limit.amount_fen });
    let since_opening = match limit.window {
        LimitWindow::SinceOpening => cap(Window::Lifetime),
        LimitWindow::Year => None,
    };
    Limits { transfer_cap: None, window_caps: [since_opening, cap(Window::Year), None] }
}

/// The account-opening event of a resident's wallet: every wallet opens at class I.
pub(crate) fn wallet_account(owner: u64) -> Event {
    Event::CreateAccount(NewAccount {
        id: account_id(AccountKind::Wallet, owner),
        currency: Currency::CNY,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        code: AccountKind::Wallet.code(),
        limits: wallet_limits(AccountClass::I),
    })
}

/// The account-opening event of a merchant: its balance can never go below zero, so a refund
/// can never take more than the merchant holds.
pub(crate) fn merchant_account(owner: u64) -> Event {
    Event::CreateAccount(NewAccount {
        id: account_id(AccountKind::Merchant, owner),
        currency: Currency::CNY,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        code: AccountKind::Merchant.code(),
        limits: Limits::NONE,
    })
}

/// The platform's own accounts in CNY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformAccounts {
    /// Custody account at the sandbox bank.
    pub sandbox_custody: AccountId,
    /// Fee revenue.
    pub fee_revenue: AccountId,
}

/// The sandbox bank's number.
pub const SANDBOX_BANK: u64 = 1;

impl PlatformAccounts {
    /// The ids (fixed by construction).
    pub const CNY: PlatformAccounts = PlatformAccounts {
        sandbox_custody: account_id(AccountKind::Custody, SANDBOX_BANK),
        fee_revenue: account_id(AccountKind::FeeRevenue, 156),
    };

    /// The events that open them; opening again is a replay.
    pub fn opening_events(&self) -> Vec<Event> {
        let spec = |id, kind: AccountKind| {
            Event::CreateAccount(NewAccount {
                id,
                currency: Currency::CNY,
                flags: AccountFlags::NONE,
                code: kind.code(),
                limits: Limits::NONE,
            })
        };
        vec![spec(self.sandbox_custody, AccountKind::Custody), spec(self.fee_revenue, AccountKind::FeeRevenue)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_kind_and_owner() {
        let id = account_id(AccountKind::Wallet, 42);
        assert_eq!(id >> 56, 1);
        assert_eq!(entity_of(id), 42);
        assert_ne!(account_id(AccountKind::Merchant, 42), id);
    }
}
