//! The bank behind top-ups and withdrawals. The platform's money at a bank sits in its custody
//! account there; each bank movement is mirrored by a balanced ledger transfer against the
//! bank's custody account in the ledger. A real bank implements [`BankConnector`]; the sandbox
//! bank built in here approves everything except its documented test cases.

use citypay_identity::CardNumber;
use citypay_ledger::AccountId;

use crate::accounts::PlatformAccounts;

/// A bank's answer to a movement it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankReceipt {
    /// The bank's own reference for the movement.
    pub bank_reference: String,
}

/// Why a bank refused a movement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// The card issuer declined the debit.
    #[error("the card issuer declined the payment")]
    Declined,
    /// The amount is over what the bank allows in one movement.
    #[error("the amount is over the bank's single-movement limit")]
    OverLimit,
    /// The bank could not be reached; the movement did not happen.
    #[error("the bank is unavailable")]
    Unavailable,
}

impl BankError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BankError::Declined => "card_declined",
            BankError::OverLimit => "bank_limit_exceeded",
            BankError::Unavailable => "bank_unavailable",
        }
    }

    /// Inverse of [`BankError::code`].
    pub fn from_code(code: &str) -> Option<BankError> {
        [BankError::Declined, BankError::OverLimit, BankError::Unavailable].into_iter().find(|e| e.code() == code)
    }
}

/// A bank the platform holds custody money at.
pub trait BankConnector: Send + Sync {
    /// The ledger account mirroring the platform's custody account at this bank.
    fn custody_account(&self) -> AccountId;

    /// Pulls `amount_fen` from a card into the platform's custody account (a top-up).
    /// `reference` is the platform's idempotency reference: the same reference never moves
    /// money twice.
    fn debit_card(&self, card: &CardNumber, amount_fen: i64, reference: &str) -> Result<BankReceipt, BankError>;

    /// Pays `amount_fen` from the custody account to a bank account (a withdrawal or a
    /// settlement payout).
    fn credit_account(&self, account_number: &str, amount_fen: i64, reference: &str) -> Result<BankReceipt, BankError>;

    /// Pays a merchant's settlement from the custody account to its business account. Banks
    /// allow businesses larger single movements than people; by default it is a credit like
    /// any other.
    fn pay_merchant(&self, account_number: &str, amount_fen: i64, reference: &str) -> Result<BankReceipt, BankError> {
        self.credit_account(account_number, amount_fen, reference)
    }
}

/// The built-in sandbox bank. Test cases: a card whose number ends in `0002` is declined;
/// an account number ending in `0009` is unavailable; any movement above 5,000,000 fen
/// (50,000 yuan) is over limit, except a merchant's settlement, whose limit is 10,000,000,000
/// fen (100 million yuan).
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxBank;

const SANDBOX_LIMIT_FEN: i64 = 5_000_000;
const SANDBOX_SETTLEMENT_LIMIT_FEN: i64 = 10_000_000_000;

impl BankConnector for SandboxBank {
    fn custody_account(&self) -> AccountId {
        PlatformAccounts::CNY.sandbox_custody
    }

    fn debit_card(&self, card: &CardNumber, amount_fen: i64, reference: &str) -> Result<BankReceipt, BankError> {
        if amount_fen > SANDBOX_LIMIT_FEN {
            return Err(BankError::OverLimit);
        }
        if card.last_four() == "0002" {
            return Err(BankError::Declined);
        }
        Ok(BankReceipt { bank_reference: format!("SBX-D-{reference}") })
    }

    fn credit_account(&self, account_number: &str, amount_fen: i64, reference: &str) -> Result<BankReceipt, BankError> {
        if amount_fen > SANDBOX_LIMIT_FEN {
            return Err(BankError::OverLimit);
        }
        if account_number.ends_with("0009") {
            return Err(BankError::Unavailable);
        }
        Ok(BankReceipt { bank_reference: format!("SBX-C-{reference}") })
    }

    fn pay_merchant(&self, account_number: &str, amount_fen: i64, reference: &str) -> Result<BankReceipt, BankError> {
        if amount_fen > SANDBOX_SETTLEMENT_LIMIT_FEN {
            return Err(BankError::OverLimit);
        }
        if account_number.ends_with("0009") {
            return Err(BankError::Unavailable);
        }
        Ok(BankReceipt { bank_reference: format!("SBX-S-{reference}") })
    }
}
