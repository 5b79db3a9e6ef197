//! The resident's wallet: linked bank cards, top-ups and withdrawals through the bank
//! connector, and the balance. Every movement is a balanced ledger transfer against the bank's
//! custody account: a top-up debits custody and credits the wallet; a withdrawal holds the
//! money (a pending transfer), asks the bank to pay out, then posts or voids the hold.
//!
//! Idempotency: a request is keyed by the caller's scope and `Idempotency-Key`. Its ledger ids
//! and the bank reference derive from that key, so a retry never moves money twice, even when
//! the first attempt died between the bank and the ledger; the same key with another body is
//! refused as a conflict.

mod statement;
mod transfers;

pub use statement::{Cursor, Hold, PAGE_MAX, Statement, StatementLine, StatementQuery, statement_in};
pub use transfers::{
    Direction, LOOKUPS_PER_HOUR, NOTE_MAX_CHARS, Recipient, TRANSFERS_LISTED_MAX, TransferLine, TransferStatus, check_transfer, mask_name, transfer_id, transfer_key,
    transfer_row,
};

use std::sync::Arc;

use citypay_directory::{BankConnector, BankError, CardHolder, Directory, DirectoryError, Resident, SandboxBank, Verification};
use citypay_identity::{AccountClass, ResidentId};
use citypay_identity::{CardNumber, CardWarning};
use citypay_ledger::{Account, Currency, Event, EventId, Leg, PostPending, Status, Transfer, VoidPending};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{Migration, OnConflict, ServiceRow, Value};
use sha2::{Digest, Sha256};

/// The wallet's tables.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "wallet",
        version: 1,
        name: "linked cards and request records",
        sqlite: "CREATE TABLE cards (id BIGINT PRIMARY KEY, resident_id BIGINT NOT NULL, card_index BLOB NOT NULL,
        card_sealed BLOB NOT NULL, masked TEXT NOT NULL, brand TEXT NOT NULL, luhn_warning BIGINT NOT NULL,
        created_at BIGINT NOT NULL, UNIQUE (resident_id, card_index));
        CREATE TABLE wallet_requests (scope TEXT NOT NULL, idem_key TEXT NOT NULL, fingerprint BLOB NOT NULL,
        kind TEXT NOT NULL, amount BIGINT NOT NULL, card_id BIGINT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (scope, idem_key));",
        postgres: "CREATE TABLE cards (id BIGINT PRIMARY KEY, resident_id BIGINT NOT NULL, card_index BYTEA NOT NULL,
        card_sealed BYTEA NOT NULL, masked TEXT NOT NULL, brand TEXT NOT NULL, luhn_warning BIGINT NOT NULL,
        created_at BIGINT NOT NULL, UNIQUE (resident_id, card_index));
        CREATE TABLE wallet_requests (scope TEXT NOT NULL, idem_key TEXT NOT NULL, fingerprint BYTEA NOT NULL,
        kind TEXT NOT NULL, amount BIGINT NOT NULL, card_id BIGINT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (scope, idem_key));",
    },
    // How the bank answered a request, once its hold is closed: a retry answers from it
    // instead of asking the bank again about a hold that is already posted or voided.
    Migration {
        component: "wallet",
        version: 2,
        name: "the bank's answer on each request",
        sqlite: "ALTER TABLE wallet_requests ADD COLUMN outcome TEXT;",
        postgres: "ALTER TABLE wallet_requests ADD COLUMN outcome TEXT;",
    },
    // The sweeper finishes requests a crash or a lost client left open: only those are indexed.
    Migration {
        component: "wallet",
        version: 3,
        name: "requests without the bank's answer, by age",
        // Requests from before the answer was recorded (their holds had other ids) are never
        // retried by the sweeper: a retry would be a new hold and a new bank reference.
        sqlite: "UPDATE wallet_requests SET outcome = 'legacy' WHERE outcome IS NULL;
            CREATE INDEX wallet_requests_open ON wallet_requests (created_at) WHERE outcome IS NULL;",
        postgres: "UPDATE wallet_requests SET outcome = 'legacy' WHERE outcome IS NULL;
            CREATE INDEX wallet_requests_open ON wallet_requests (created_at) WHERE outcome IS NULL;",
    },
    // One attempt of a request talks to the bank at a time: it claims the request until
    // `claimed_until`, under a compare-and-swap on `attempt`.
    Migration {
        component: "wallet",
        version: 4,
        name: "the attempt that holds a request, and until when",
        sqlite: "ALTER TABLE wallet_requests ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
            ALTER TABLE wallet_requests ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;",
        postgres: "ALTER TABLE wallet_requests ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
            ALTER TABLE wallet_requests ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;",
    },
    Migration { component: "wallet", version: 5, name: "each wallet's journal lines in time order", sqlite: statement::INDEXES, postgres: statement::INDEXES },
    Migration {
        component: "wallet",
        version: 6,
        name: "money residents send each other; recipient lookups per sender and hour",
        sqlite: transfers::TRANSFERS_TABLE,
        postgres: transfers::TRANSFERS_TABLE,
    },
    // A transfer between residents of two shards is recorded on both, each naming the other
    // resident, whose name lives on the other shard.
    Migration {
        component: "wallet",
        version: 7,
        name: "transfers between shards: the other resident's masked name",
        sqlite: "ALTER TABLE p2p_transfers ADD COLUMN sender_name TEXT; ALTER TABLE p2p_transfers ADD COLUMN recipient_name TEXT;",
        postgres: "ALTER TABLE p2p_transfers ADD COLUMN sender_name TEXT; ALTER TABLE p2p_transfers ADD COLUMN recipient_name TEXT;",
    },
];

/// What a request's `outcome` holds once the bank accepted it.
const POSTED: &str = "posted";
/// What it holds when the ledger refused the hold, so the bank was never asked (a retry
/// replays the ledger's refusal).
const HOLD_REFUSED: &str = "hold_refused";
/// Requests without an answer for this long are finished by the sweeper: their client has
/// had time to retry.
pub const SWEEP_AFTER_S: i64 = 300;
/// How long an attempt holds its request: longer than any attempt lives (the API gives up on a
/// request after 10 s, which drops its attempt; a bank call repeated under the request's
/// reference moves nothing twice), shorter than the sweep. A retry after an attempt that died
/// with its server (a takeover) goes ahead after this long.
const CLAIM_S: i64 = 30;

/// Ledger transfer codes of wallet movements.
pub mod codes {
    pub use citypay_directory::transfer_codes::{TOP_UP, WITHDRAWAL};
}

/// Holds never expire by themselves (0): the bank may have moved the money, so only its answer
/// (post) or refusal (void) closes a hold. A retry with the same key finishes an interrupted
/// one; a sweeper that asks the bank about old open holds is still to be built.
const HOLD_TIMEOUT_S: u32 = 0;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// From the directory (unknown resident, storage, ...).
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The card number is not valid.
    #[error("invalid card number: {0}")]
    InvalidCard(String),
    /// Not a card of this resident.
    #[error("card not found")]
    CardNotFound,
    /// Zero, negative or too large.
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// The bank refused.
    #[error("the bank refused: {0}")]
    Bank(#[from] BankError),
    /// The ledger refused (insufficient funds, a cap, ...).
    #[error("refused: {0}")]
    Refused(Status),
    /// The idempotency key was used before with another request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// The writer is unavailable; retrying with the same key is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// No resident has this mobile number.
    #[error("no resident has this mobile number")]
    RecipientNotFound,
    /// Money sent to one's own wallet.
    #[error("this is your own wallet")]
    OwnWallet,
    /// Too many recipients looked up this hour.
    #[error("too many recipients looked up this hour; try again in {retry_after_s} s")]
    TooManyLookups {
        /// Seconds until the next hour.
        retry_after_s: u64,
    },
    /// The note is too long or holds control characters.
    #[error("note: {0}")]
    InvalidNote(String),
    /// The recipient's shard refused the transfer (the reason's code): the money stayed with
    /// the sender.
    #[error("the recipient's wallet did not take the transfer ({0}); nothing was sent")]
    Returned(&'static str),
    /// Sent to another shard and its answer not heard: it will be completed or returned, never
    /// both; asking again with the same Idempotency-Key tells which.
    #[error("the transfer's outcome is not known yet; retry with the same Idempotency-Key")]
    OutcomeUnknown,
}

impl WalletError {
    /// The stable snake_case code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            WalletError::Directory(e) => e.code(),
            WalletError::InvalidCard(_) => "invalid_card",
            WalletError::CardNotFound => "card_not_found",
            WalletError::InvalidAmount(_) => "invalid_amount",
            WalletError::Bank(e) => e.code(),
            WalletError::Refused(status) => status.name(),
            WalletError::KeyReused => "idempotency_key_reused",
            WalletError::Unavailable(_) => "unavailable",
            WalletError::RecipientNotFound => "recipient_not_found",
            WalletError::OwnWallet => "own_wallet",
            WalletError::TooManyLookups { .. } => "rate_limited",
            WalletError::InvalidNote(_) => "invalid_field",
            WalletError::Returned(_) => "transfer_returned",
            WalletError::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// A linked card, as the resident sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// Card id.
    pub id: u64,
    /// `622202*********3446`.
    pub masked: String,
    /// Network.
    pub brand: String,
    /// A UnionPay number that fails Luhn was accepted with a warning.
    pub luhn_warning: bool,
}

/// The answer to a top-up or withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Movement {
    /// The amount moved, in fen.
    pub amount: i64,
    /// The wallet's balance afterwards.
    pub balance: i64,
    /// Whether this answer repeats an earlier request with the same key.
    pub replay: bool,
}

/// The wallet service.
#[derive(Clone)]
pub struct Wallet {
    directory: Directory,
    bank: Arc<dyn BankConnector>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").finish_non_exhaustive()
    }
}

/// An id derived from the request's scope, key and purpose: the same on every retry.
fn derived_id(scope: &str, key: &str, purpose: &str) -> EventId {
    citypay_directory::derived_event_id(&[scope, key, purpose])
}

fn check_amount(amount: i64) -> Result<(), WalletError> {
    // 50,000 yuan per movement is far above any top-up a resident makes at once.
    if amount <= 0 || amount > 5_000_000 {
        return Err(WalletError::InvalidAmount("between 1 fen and 50,000 yuan".into()));
    }
    Ok(())
}

fn cny_leg(debit: u64, credit: u64, amount: i64, code: u16, user_data: u64) -> Leg {
    Leg { debit, credit, amount, currency: Currency::CNY, code, class: 0, user_data }
}

impl Wallet {
    /// The wallet service over the directory and a bank.
    pub fn new(directory: Directory, bank: Arc<dyn BankConnector>) -> Wallet {
        Wallet { directory, bank }
    }

    fn now_s(&self) -> i64 {
        i64::try_from(self.directory.clock().now().unix_seconds()).unwrap_or(i64::MAX)
    }

    /// The wallet's ledger account.
    pub async fn account(&self, resident: &Resident) -> Result<Account, WalletError> {
        let account = self.directory.shard().account(resident.wallet).await;
        account.map_err(|e| WalletError::Unavailable(e.to_string()))?.ok_or(WalletError::Directory(DirectoryError::NotFound))
    }

    /// Links a bank card to a resident (once per card), once its bank confirms that it issued
    /// the card to the resident's registered name and ID number; the confirmation is recorded
    /// as a verification and may raise the resident's account class, answered beside the card.
    pub async fn link_card(&self, resident: &Resident, pan: &str) -> Result<(Card, AccountClass), WalletError> {
        let parsed = CardNumber::parse(pan).map_err(|e| WalletError::InvalidCard(e.to_string()))?;
        let card = &parsed.card;
        let index = self.directory.blind_index("card", card.digits());
        let existing = self.card_by_index(resident.id, &index).await?;
        if let Some(existing) = existing {
            // A retry also finishes a class raise that an interruption left undone.
            return Ok((existing, self.directory.refresh_class(resident.id).await?));
        }
        let (name, id_number) = self.directory.resident_identity(resident.id).await?;
        let holder = CardHolder { name: name.expose(), id_number: id_number.expose() };
        let confirmed = self.bank.confirm_holder(card, &holder)?;
        // The same card linked again gets the same id (48 bits, so it fits every column).
        let id = u64::try_from(derived_id(&resident.id.to_string(), card.digits(), "card") >> 80).unwrap_or(1);
        let warning = parsed.warnings.contains(&CardWarning::UnionPayLuhn);
        let linked = Card { id, masked: card.masked(), brand: card.brand().to_string(), luhn_warning: warning };
        let row = ServiceRow {
            table: "cards",
            key: vec![("id", Value::Int(i64::try_from(id).unwrap_or(i64::MAX)))],
            columns: vec![
                ("resident_id", Value::Int(i64::try_from(resident.id).unwrap_or(-1))),
                ("card_index", Value::Blob(index)),
                ("card_sealed", Value::Blob(self.directory.seal(card.digits().as_bytes(), &format!("card:{id}")))),
                ("masked", Value::Text(linked.masked.clone())),
                ("brand", Value::Text(linked.brand.clone())),
                ("luhn_warning", Value::Int(i64::from(warning))),
                ("created_at", Value::Int(self.now_s())),
            ],
            on_conflict: OnConflict::Ignore,
        };
        let verified = self.directory.verification_row(resident.id, &Verification::BankCard { issuer: confirmed.issuer });
        let command = Command { event: None, guards: Vec::new(), rows: vec![row, verified], always_rows: Vec::new() };
        self.directory.shard().submit(command).await.map_err(|e| WalletError::Unavailable(e.to_string()))?;
        tracing::debug!(resident = resident.id, card_id = id, brand = %linked.brand, "card linked");
        Ok((linked, self.directory.refresh_class(resident.id).await?))
    }

    /// Has the sandbox bank issue the resident a card at each of its first `banks` issuers and
    /// links them (for simulations, benchmarks and tests: three banks earn class II, five class
    /// III). Answers the cards and the class afterwards.
    pub async fn link_sandbox_cards(&self, sandbox: &SandboxBank, resident: &Resident, banks: usize) -> Result<(Vec<Card>, AccountClass), WalletError> {
        let (name, id_number) = self.directory.resident_identity(resident.id).await?;
        let id_number = ResidentId::parse(id_number.expose(), self.directory.today()).map_err(|e| DirectoryError::InvalidResidentId(e.to_string()))?;
        let mut cards = Vec::new();
        let mut class = resident.class;
        for issuer in SandboxBank::ISSUERS.iter().take(banks) {
            let card = sandbox.issue_card(issuer, name.expose(), &id_number).map_err(|e| WalletError::InvalidCard(e.to_string()))?;
            let (linked, now) = self.link_card(resident, card.digits()).await?;
            cards.push(linked);
            class = now;
        }
        Ok((cards, class))
    }

    async fn card_by_index(&self, resident: u64, index: &[u8]) -> Result<Option<Card>, WalletError> {
        let rows = self
            .directory
            .read(
                "SELECT id, masked, brand, luhn_warning FROM cards WHERE resident_id = ?1 AND card_index = ?2",
                vec![Value::Int(i64::try_from(resident).unwrap_or(-1)), Value::Blob(index.to_vec())],
            )
            .await?;
        rows.first().map(|row| card_from_row(row)).transpose()
    }

    /// The resident's linked cards.
    pub async fn cards(&self, resident: &Resident) -> Result<Vec<Card>, WalletError> {
        let rows = self
            .directory
            .read(
                "SELECT id, masked, brand, luhn_warning FROM cards WHERE resident_id = ?1 ORDER BY id",
                vec![Value::Int(i64::try_from(resident.id).unwrap_or(-1))],
            )
            .await?;
        rows.iter().map(|row| card_from_row(row)).collect()
    }

    /// The card's number, unsealed, if it is this resident's.
    async fn card_number(&self, resident: &Resident, card_id: u64) -> Result<CardNumber, WalletError> {
        let rows = self
            .directory
            .read(
                "SELECT card_sealed FROM cards WHERE id = ?1 AND resident_id = ?2",
                vec![Value::Int(i64::try_from(card_id).unwrap_or(-1)), Value::Int(i64::try_from(resident.id).unwrap_or(-1))],
            )
            .await?;
        let Some(Value::Blob(sealed)) = rows.first().and_then(|row| row.first()) else {
            return Err(WalletError::CardNotFound);
        };
        let digits = self.directory.unseal(sealed, &format!("card:{card_id}"))?;
        let digits = String::from_utf8_lossy(digits.expose()).into_owned();
        Ok(CardNumber::parse(&digits).map_err(|e| WalletError::InvalidCard(e.to_string()))?.card)
    }

    /// Records the request under its key, or says it was seen: `Ok((true, outcome))` for a
    /// retry of the same request (with the bank's answer once its hold was closed),
    /// `Err(KeyReused)` for another request under the same key.
    async fn remember(&self, scope: &str, key: &str, kind: &str, amount: i64, card_id: u64) -> Result<(Option<Claim>, Option<String>, ServiceRow), WalletError> {
        let fingerprint = Sha256::digest(format!("{kind}\u{0}{amount}\u{0}{card_id}").as_bytes()).to_vec();
        let rows = self
            .directory
            .read(
                "SELECT fingerprint, outcome, attempt, claimed_until FROM wallet_requests WHERE scope = ?1 AND idem_key = ?2",
                vec![Value::Text(scope.to_owned()), Value::Text(key.to_owned())],
            )
            .await?;
        let (seen, outcome) = match rows.first().map(Vec::as_slice) {
            Some([Value::Blob(stored), outcome, Value::Int(attempt), Value::Int(claimed_until)]) if *stored == fingerprint => {
                (Some(Claim { attempt: *attempt, claimed_until: *claimed_until }), if let Value::Text(t) = outcome { Some(t.clone()) } else { None })
            }
            Some(_) => return Err(WalletError::KeyReused),
            None => (None, None),
        };
        let row = ServiceRow {
            table: "wallet_requests",
            key: vec![("scope", Value::Text(scope.to_owned())), ("idem_key", Value::Text(key.to_owned()))],
            columns: vec![
                ("fingerprint", Value::Blob(fingerprint)),
                ("kind", Value::Text(kind.to_owned())),
                ("amount", Value::Int(amount)),
                ("card_id", Value::Int(i64::try_from(card_id).unwrap_or(-1))),
                ("created_at", Value::Int(self.now_s())),
                ("attempt", Value::Int(1)),
                ("claimed_until", Value::Int(self.now_s() + CLAIM_S)),
            ],
            on_conflict: OnConflict::Ignore,
        };
        Ok((seen, outcome, row))
    }

    /// Records that the ledger refused a request's hold (the bank was never asked), which also
    /// releases the request for retries.
    async fn mark_hold_refused(&self, request_key: &[(&'static str, Value)]) -> Result<(), WalletError> {
        let row = ServiceRow {
            table: "wallet_requests",
            key: request_key.to_vec(),
            columns: vec![("outcome", Value::Text(HOLD_REFUSED.to_owned())), ("claimed_until", Value::Int(0))],
            on_conflict: OnConflict::UpdateOnly,
        };
        self.submit(Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() }).await.map(|_| ())
    }

    /// Claims a request seen before for this attempt: refused while another attempt holds it.
    async fn claim(&self, request_key: &[(&'static str, Value)], seen: Claim) -> Result<(), WalletError> {
        if seen.claimed_until > self.now_s() {
            return Err(WalletError::Unavailable("another attempt of this request is under way; retry in a minute".into()));
        }
        let row = ServiceRow {
            table: "wallet_requests",
            key: request_key.to_vec(),
            columns: vec![("attempt", Value::Int(seen.attempt + 1)), ("claimed_until", Value::Int(self.now_s() + CLAIM_S))],
            on_conflict: OnConflict::UpdateOnly,
        };
        let guard = Guard::Matches { table: "wallet_requests", key: request_key.to_vec(), expect: vec![("attempt", Value::Int(seen.attempt))] };
        let command = Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() };
        match self.directory.shard().submit(command).await {
            Ok(_) => Ok(()),
            Err(SubmitError::GuardFailed { .. }) => Err(WalletError::Unavailable("another attempt of this request is under way; retry in a minute".into())),
            Err(other) => Err(WalletError::Unavailable(other.to_string())),
        }
    }

    async fn submit(&self, command: Command) -> Result<citypay_ledger::Outcome, WalletError> {
        self.answer(self.directory.shard().submit(command).await)
    }

    fn answer(&self, answer: citypay_shard::Reply) -> Result<citypay_ledger::Outcome, WalletError> {
        match answer {
            Ok(outcome) => Ok(outcome),
            Err(SubmitError::GuardFailed { .. }) => Err(WalletError::Unavailable("another attempt of this request is under way; retry in a minute".into())),
            Err(other) => Err(WalletError::Unavailable(other.to_string())),
        }
    }

    /// Tops the wallet up from one of the resident's cards: the ledger holds the credit first
    /// (so nothing it would refuse reaches the bank), the bank debits the card, then the hold
    /// is posted (or voided when the bank refuses).
    pub async fn top_up(&self, resident: &Resident, card_id: u64, amount: i64, idempotency_key: &str) -> Result<Movement, WalletError> {
        let custody = self.bank.custody_account();
        let leg = cny_leg(custody, resident.wallet, amount, codes::TOP_UP, card_id);
        let request = Request { resident, card_id, amount, key: idempotency_key, kind: "top_up" };
        self.through_bank(request, leg, |bank, card, reference| bank.debit_card(card, amount, reference)).await
    }

    /// Withdraws to one of the resident's cards: hold, pay out, then post (or void the hold
    /// when the bank refuses).
    pub async fn withdraw(&self, resident: &Resident, card_id: u64, amount: i64, idempotency_key: &str) -> Result<Movement, WalletError> {
        let custody = self.bank.custody_account();
        let leg = cny_leg(resident.wallet, custody, amount, codes::WITHDRAWAL, card_id);
        let request = Request { resident, card_id, amount, key: idempotency_key, kind: "withdraw" };
        self.through_bank(request, leg, |bank, card, reference| bank.credit_account(card.digits(), amount, reference)).await
    }

    /// The one path of money between a card and a wallet: hold `leg` as a pending transfer,
    /// ask the bank, then post the hold or void it. Every id and the bank reference derive
    /// from the idempotency key, so a retry (even after a crash between the steps) replays.
    /// Holds never expire by themselves: the bank may have moved the money.
    async fn through_bank(
        &self,
        request: Request<'_>,
        leg: Leg,
        bank_call: impl FnOnce(&dyn BankConnector, &CardNumber, &str) -> Result<citypay_directory::BankReceipt, BankError>,
    ) -> Result<Movement, WalletError> {
        let Request { resident, card_id, amount, key, kind } = request;
        check_amount(amount)?;
        let scope = format!("resident:{}", resident.id);
        let (seen, outcome, record) = self.remember(&scope, key, kind, amount, card_id).await?;
        let request_key = vec![("scope", Value::Text(scope.clone())), ("idem_key", Value::Text(key.to_owned()))];
        // A retry of a request whose hold is closed answers as the bank did, without asking
        // it again: the hold is posted or voided, so the bank must not move money anew.
        match outcome.as_deref() {
            Some(HOLD_REFUSED) | None => {}
            Some(POSTED) => {
                let balance = self.account(resident).await?.balance.net_posted();
                return Ok(Movement { amount, balance, replay: true });
            }
            Some(code) => return Err(BankError::from_code(code).map_or_else(|| WalletError::Unavailable(code.to_owned()), WalletError::Bank)),
        }
        let card = self.card_number(resident, card_id).await?;
        // Ids derive from the key alone, not the kind: a top-up and a withdrawal racing under
        // one key meet in the ledger as a conflicting replay, and only the first moves money.
        let hold_id = derived_id(&scope, key, "hold");
        let hold = Event::Transfer(Transfer { id: hold_id, leg, pending_timeout_s: Some(HOLD_TIMEOUT_S) });
        // Only one attempt talks to the bank at a time: two that got different answers for
        // one reference (one timed out) must not both close the hold. A first attempt claims
        // the request by recording it; a retry claims it once no other attempt holds it.
        // A new withdrawal pays out of the wallet: a frozen one refuses it in the writer (a
        // retry of one begun before the freeze finishes it).
        let paying_out = kind == "withdraw" && seen.is_none();
        let hold_command = match seen {
            None => Command {
                event: Some(hold),
                guards: [Guard::Absent { table: "wallet_requests", key: request_key.clone() }]
                    .into_iter()
                    .chain(paying_out.then(|| Directory::wallet_not_frozen(resident.id)))
                    .collect(),
                rows: Vec::new(),
                always_rows: vec![record],
            },
            Some(claim) => {
                // A refused hold replays its refusal: the bank is not asked, nothing to claim.
                if outcome.as_deref() != Some(HOLD_REFUSED) {
                    self.claim(&request_key, claim).await?;
                }
                Command { event: Some(hold), guards: Vec::new(), rows: Vec::new(), always_rows: Vec::new() }
            }
        };
        let held = match self.directory.shard().submit(hold_command).await {
            Err(SubmitError::GuardFailed { guard: 1 }) if paying_out => return Err(DirectoryError::WalletFrozen.into()),
            answer => self.answer(answer)?,
        };
        match held.status {
            Status::Ok => {}
            Status::ConflictingReplay => return Err(WalletError::KeyReused),
            status => {
                if outcome.is_none() {
                    self.mark_hold_refused(&request_key).await?;
                }
                tracing::debug!(resident = resident.id, kind, amount, status = status.name(), "the ledger refused the hold");
                return Err(WalletError::Refused(status));
            }
        }
        let answer = bank_call(self.bank.as_ref(), &card, &format!("{hold_id:032x}"));
        let close = match &answer {
            Ok(_) => Event::PostPending(PostPending { id: derived_id(&scope, key, "post"), pending_id: hold_id, amount: None }),
            Err(_) => Event::VoidPending(VoidPending { id: derived_id(&scope, key, "void"), pending_id: hold_id }),
        };
        let outcome = ServiceRow {
            table: "wallet_requests",
            key: request_key,
            columns: vec![
                ("outcome", Value::Text(answer.as_ref().map_or_else(BankError::code, |_| POSTED).to_owned())),
                ("claimed_until", Value::Int(0)),
            ],
            on_conflict: OnConflict::UpdateOnly,
        };
        // The answer is kept only with a close that took effect.
        let closed = self.submit(Command { event: Some(close), guards: Vec::new(), rows: vec![outcome], always_rows: Vec::new() }).await?;
        if let Err(refused) = &answer {
            tracing::debug!(resident = resident.id, kind, card_id, amount, reason = refused.code(), "the bank refused; hold voided");
        }
        answer?;
        if closed.status != Status::Ok {
            return Err(WalletError::Unavailable(format!("closing the hold: {}", closed.status.name())));
        }
        let balance = self.account(resident).await?.balance.net_posted();
        let replay = seen.is_some() || held.replay;
        tracing::debug!(resident = resident.id, kind, card_id, amount, balance, replay, "money moved between card and wallet");
        Ok(Movement { amount, balance, replay })
    }
}

impl Wallet {
    /// Finishes top-ups and withdrawals that a crash, or a client that never retried, left
    /// without the bank's answer for [`SWEEP_AFTER_S`]: each is retried under its own key, so
    /// the bank (which dedupes by the reference) answers once and the hold is posted or voided.
    /// Answers how many were finished.
    pub async fn finish_interrupted(&self, limit: u32) -> Result<usize, WalletError> {
        let cutoff = self.now_s() - SWEEP_AFTER_S;
        let rows = self
            .directory
            .read(
                "SELECT scope, idem_key, kind, amount, card_id FROM wallet_requests WHERE outcome IS NULL AND created_at < ?1 ORDER BY attempt, created_at LIMIT ?2",
                vec![Value::Int(cutoff), Value::Int(i64::from(limit))],
            )
            .await?;
        let mut finished = 0;
        for row in &rows {
            let [Value::Text(scope), Value::Text(key), Value::Text(kind), Value::Int(amount), Value::Int(card)] = row.as_slice() else {
                return Err(WalletError::Directory(DirectoryError::Storage("wallet request row".into())));
            };
            let Some(resident) = scope.strip_prefix("resident:").and_then(|id| id.parse().ok()) else { continue };
            // One request that cannot be finished now must not hold up the others: it is
            // tried again next time (behind them: each attempt counts).
            let Ok(resident) = self.directory.resident(resident).await else { continue };
            let card = u64::try_from(*card).unwrap_or(0);
            let result = match kind.as_str() {
                "withdraw" => self.withdraw(&resident, card, *amount, key).await,
                _ => self.top_up(&resident, card, *amount, key).await,
            };
            match result {
                Ok(_) | Err(WalletError::Bank(_)) => finished += 1,
                // The ledger refused the hold (recorded by `through_bank`): the bank was never asked.
                Err(WalletError::Refused(_)) => finished += 1,
                Err(_) => {}
            }
        }
        if !rows.is_empty() {
            tracing::debug!(interrupted = rows.len(), finished, "interrupted top-ups and withdrawals retried");
        }
        Ok(finished)
    }
}

/// Which attempt of a request holds it, and until when.
#[derive(Clone, Copy, Debug)]
struct Claim {
    attempt: i64,
    claimed_until: i64,
}

/// What a top-up or withdrawal asks for.
struct Request<'a> {
    resident: &'a Resident,
    card_id: u64,
    amount: i64,
    key: &'a str,
    kind: &'static str,
}

fn card_from_row(row: &[Value]) -> Result<Card, WalletError> {
    let storage = |what: &str| WalletError::Directory(DirectoryError::Storage(what.into()));
    match row {
        [Value::Int(id), Value::Text(masked), Value::Text(brand), Value::Int(warning)] => Ok(Card {
            id: u64::try_from(*id).map_err(|_| storage("card id"))?,
            masked: masked.clone(),
            brand: brand.clone(),
            luhn_warning: *warning != 0,
        }),
        _ => Err(storage("card row")),
    }
}
