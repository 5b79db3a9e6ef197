//! The bank behind top-ups and withdrawals. The platform's money at a bank sits in its custody
//! account there; each bank movement is mirrored by a balanced ledger transfer against the
//! bank's custody account in the ledger. A real bank implements [`BankConnector`]; the sandbox
//! bank built in here approves everything except its documented test cases, and confirms a
//! card's holder against its own register of card holders.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use citypay_identity::{CardNumber, ResidentId};
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
    /// The bank does not confirm that the card is issued to this name and ID number. The
    /// same answer whether the card is unknown or someone else's: nothing more leaks.
    #[error("the bank does not confirm that this card is issued to your name and ID number")]
    HolderMismatch,
}

impl BankError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BankError::Declined => "card_declined",
            BankError::OverLimit => "bank_limit_exceeded",
            BankError::Unavailable => "bank_unavailable",
            BankError::HolderMismatch => "card_holder_mismatch",
        }
    }

    /// Inverse of [`BankError::code`].
    pub fn from_code(code: &str) -> Option<BankError> {
        [BankError::Declined, BankError::OverLimit, BankError::Unavailable, BankError::HolderMismatch].into_iter().find(|e| e.code() == code)
    }
}

/// Who the platform asks a bank to confirm as a card's holder: the resident's real name and
/// ID number, as registered.
pub struct CardHolder<'a> {
    /// Legal name.
    pub name: &'a str,
    /// The ID number, as registered (normalised, upper-case `X`).
    pub id_number: &'a str,
}

impl std::fmt::Debug for CardHolder<'_> {
    /// Personal data: neither the name nor the ID number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardHolder").finish_non_exhaustive()
    }
}

/// A bank's confirmation that a card is issued to the holder asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderConfirmed {
    /// The issuing bank (its identification number): each issuer that confirms a holder is
    /// one external verification channel.
    pub issuer: String,
}

/// A bank the platform holds custody money at.
pub trait BankConnector: Send + Sync {
    /// The ledger account mirroring the platform's custody account at this bank.
    fn custody_account(&self) -> AccountId;

    /// Confirms, before a card is linked, that the bank issued it to this name and ID number
    /// (the card issuer's own real-name record). Refuses with [`BankError::HolderMismatch`]
    /// otherwise, whether the card is unknown or someone else's. A connector that cannot ask
    /// refuses every card.
    fn confirm_holder(&self, _card: &CardNumber, _holder: &CardHolder<'_>) -> Result<HolderConfirmed, BankError> {
        Err(BankError::HolderMismatch)
    }

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
/// fen (100 million yuan). A card's holder is confirmed only when the card is in its register
/// of card holders ([`SandboxBank::register_holder`]) under the same name and ID number; the
/// card's first six digits stand for its issuer. Clones share one register.
#[derive(Default, Clone)]
pub struct SandboxBank {
    /// Card number -> (name, normalised ID number).
    holders: Arc<RwLock<HashMap<String, (String, String)>>>,
}

impl std::fmt::Debug for SandboxBank {
    /// The register holds names and ID numbers: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holders = self.holders.read().map_or(0, |h| h.len());
        f.debug_struct("SandboxBank").field("holders", &holders).finish()
    }
}

/// The sandbox bank already has this card under another holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sandbox bank already issued this card to someone else")]
pub struct CardIssuedToAnother;

impl SandboxBank {
    /// The first six digits of the sandbox's issuing banks, one per bank: cards confirmed by
    /// three of them earn class II, by all five class III.
    pub const ISSUERS: [&'static str; 5] = ["622202", "622848", "621700", "622588", "621226"];

    /// An empty register.
    pub fn new() -> SandboxBank {
        SandboxBank::default()
    }

    /// Issues a new 16-digit card of `issuer` (six digits, e.g. `622202`) to a person and
    /// registers it: what a branch does when it opens an account. The number derives from the
    /// issuer and the ID number, so issuing again gives the same card.
    pub fn issue_card(&self, issuer: &str, name: &str, id_number: &ResidentId) -> Result<CardNumber, CardIssuedToAnother> {
        use sha2::{Digest, Sha256};
        // Another person's card under the same derived number is vanishingly rare: draw again.
        for attempt in 0..8 {
            let digest = Sha256::digest(format!("{issuer}:{}:{attempt}", id_number.normalized()).as_bytes());
            let account = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default()) % 1_000_000_000;
            let payload = format!("{issuer}{account:09}");
            let Some(check) = citypay_identity::card::luhn_check_digit(&payload) else { continue };
            let Ok(parsed) = CardNumber::parse(&format!("{payload}{check}")) else { continue };
            // The sandbox declines cards ending in 0002: not one to issue.
            if parsed.card.last_four() == "0002" {
                continue;
            }
            let card = parsed.card;
            if self.register_holder(&card, name, id_number).is_ok() {
                return Ok(card);
            }
        }
        Err(CardIssuedToAnother)
    }

    /// Issues `card` to `name` and `id_number` in the register (what a bank's branch records
    /// when it opens the account). Issuing it again to the same holder changes nothing; a card
    /// already issued to someone else is refused.
    pub fn register_holder(&self, card: &CardNumber, name: &str, id_number: &ResidentId) -> Result<(), CardIssuedToAnother> {
        let holder = (name.trim().to_owned(), id_number.normalized().to_owned());
        let mut holders = self.holders.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match holders.get(card.digits()) {
            Some(existing) if *existing != holder => Err(CardIssuedToAnother),
            Some(_) => Ok(()),
            None => {
                holders.insert(card.digits().to_owned(), holder);
                Ok(())
            }
        }
    }
}

const SANDBOX_LIMIT_FEN: i64 = 5_000_000;
const SANDBOX_SETTLEMENT_LIMIT_FEN: i64 = 10_000_000_000;

impl BankConnector for SandboxBank {
    fn custody_account(&self) -> AccountId {
        PlatformAccounts::CNY.sandbox_custody
    }

    fn confirm_holder(&self, card: &CardNumber, holder: &CardHolder<'_>) -> Result<HolderConfirmed, BankError> {
        let holders = self.holders.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match holders.get(card.digits()) {
            Some((name, id_number)) if name == holder.name.trim() && id_number.eq_ignore_ascii_case(holder.id_number.trim()) => {
                Ok(HolderConfirmed { issuer: card.digits()[..6].to_owned() })
            }
            _ => Err(BankError::HolderMismatch),
        }
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
