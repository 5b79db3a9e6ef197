//! Public-service bills: a hospital, a school, the social-security bureau or a utility bills a
//! payer it knows by PRC ID number (matched through the identity vault's blind index, never
//! kept in clear), student number or account number. Residents see the bills addressed to them
//! and to family members whose links stand (the member approved it, or the biller recorded the
//! resident as guardian), and pay in full or by chosen items from the wallet; cash paid at the
//! biller's counter is recorded against the same bill. A hospital bill's medical-insurance part
//! is paid by the city's insurance fund in the same ledger entry as the patient's part, so both
//! move or neither does, and only on the patient's word (paying from the phone, or consenting
//! to a cash payment from it). Every payment gets a signed receipt.
//!
//! Exactly once: a payment commits only under a compare-and-swap guard on the bill's version,
//! checked by the single writer, so of two payers racing for a bill one wins and no money moves
//! for the other; a retry finds the payment its first attempt made.

mod bill;
mod receipt;
mod schema;

use std::sync::Arc;

use citypay_directory::{
    AccountKind, BALANCE_PAYMENT, Category, Directory, DirectoryError, Merchant, PlatformAccounts, Resident, account_id, derived_event_id, int_at,
    text_at, transfer_codes,
};
use citypay_ledger::{AccountFlags, Currency, Entry, Event, Leg, Limits, LocalDate, NewAccount, Status, Timestamp, Transfer};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{OnConflict, ServiceRow, Value};

pub use bill::{Bill, BillStatus, Item, PayerKind};
use bill::uint;
pub use receipt::{Receipt, ReceiptError, ReceiptPublicKey, ReceiptSigner, verify_receipt};
pub use schema::MIGRATIONS;

/// Items a bill may have.
pub const ITEMS_MAX: usize = 32;
/// The most of a bill the insurance fund pays: the patient always pays a part, and confirms
/// the claim by paying it from the phone.
pub const INSURED_SHARE_MAX_PERCENT: i64 = 90;
/// The most the fund pays on one bill, in fen (100,000 yuan).
pub const INSURED_MAX_FEN: i64 = 10_000_000;
/// Who may issue bills.
pub const BILLER_CATEGORIES: [Category; 4] = [Category::Hospital, Category::School, Category::SocialSecurity, Category::Utility];
/// Bills listed at once.
pub const LIST_MAX: u32 = 100;
/// Unanswered links to ID numbers a resident may have asked for within
/// [`LINK_REQUESTS_WINDOW_S`]: a stranger cannot flood residents with requests.
pub const LINK_REQUESTS_MAX: i64 = 10;
/// The window [`LINK_REQUESTS_MAX`] counts over (a week).
pub const LINK_REQUESTS_WINDOW_S: u64 = 7 * 86_400;
/// Refused payments of one bill by one payer that a new attempt steps over.
const REFUSALS_MAX: u32 = 64;
/// Times a payment is retried when another change of the bill won the race.
const CAS_ATTEMPTS_MAX: usize = 4;

/// What went wrong, with a stable code for the API.
#[derive(Debug, thiserror::Error)]
pub enum BillError {
    /// From the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A field is missing or malformed.
    #[error("{field}: {message}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such bill for this biller or payer.
    #[error("bill not found")]
    BillNotFound,
    /// The biller's reference was used with a different bill.
    #[error("out_bill_no was used for a different bill")]
    OutBillNoReused,
    /// Paid already (by someone else, or these items).
    #[error("the bill is already paid")]
    AlreadyPaid,
    /// Past its due date, and late payment is not allowed.
    #[error("the bill is past its due date and cannot be paid late")]
    Overdue,
    /// Cash at the counter must pay exactly what is outstanding.
    #[error("cash must pay exactly the {0} fen outstanding")]
    AmountMismatch(i64),
    /// No contribution window is open for that city and year.
    #[error("the contribution window is not open")]
    WindowClosed,
    /// The ledger refused (insufficient funds in the wallet, a cap).
    #[error("refused: {0}")]
    Refused(Status),
    /// The city's medical-insurance fund cannot pay its part now (never funded, or short).
    #[error("the city's medical-insurance fund cannot pay its part ({0} fen) now; nothing was charged")]
    FundShort(i64),
    /// The bill is not an insured one paid wholly in cash, so the fund owes the patient nothing.
    #[error("only an insured bill paid wholly in cash is claimed from the fund")]
    NothingToClaim,
    /// Too many unanswered link requests to ID numbers this week.
    #[error("at most {LINK_REQUESTS_MAX} unanswered link requests to ID numbers a week")]
    TooManyLinkRequests,
    /// No such link request to the caller's own ID number.
    #[error("link request not found")]
    LinkNotFound,
    /// A payment to a biller of another shard was sent and its end not heard: it is not
    /// acknowledged; the resolver finishes it one way, and asking again with the same
    /// idempotency key answers it.
    #[error("the payment's end is not known yet; ask again with the same idempotency key")]
    OutcomeUnknown,
    /// The biller's shard returned a payment sent to it (the reason's code); nothing was
    /// charged.
    #[error("the payment was returned ({0}); nothing was charged")]
    Returned(&'static str),
    /// Unavailable; retrying is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl BillError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            BillError::Directory(e) => e.code(),
            BillError::InvalidField { .. } => "invalid_field",
            BillError::BillNotFound => "bill_not_found",
            BillError::OutBillNoReused => "out_bill_no_reused",
            BillError::AlreadyPaid => "bill_already_paid",
            BillError::Overdue => "bill_overdue",
            BillError::AmountMismatch(_) => "amount_mismatch",
            BillError::WindowClosed => "contribution_window_closed",
            BillError::Refused(status) => status.name(),
            BillError::FundShort(_) => "insurance_fund_short",
            BillError::LinkNotFound => "link_not_found",
            BillError::NothingToClaim => "nothing_to_claim",
            BillError::TooManyLinkRequests => "too_many_link_requests",
            BillError::OutcomeUnknown => "outcome_unknown",
            BillError::Returned(_) => "payment_returned",
            BillError::Unavailable(_) => "unavailable",
        }
    }
}

/// The blind indexes a resident's bills are found by (read on the resident's shard; in a
/// country, bills are also found by them on the billers' shards).
#[derive(Clone, Debug)]
pub struct PayerKeys {
    /// Their own ID number's (one per index key).
    own: Vec<Vec<u8>>,
    /// The family members' whose links stand.
    linked: Vec<Vec<u8>>,
}

impl PayerKeys {
    fn contains(&self, key: &[u8]) -> bool {
        self.own.iter().chain(&self.linked).any(|k| k.as_slice() == key)
    }
}

/// Who a bill is addressed to, as the biller knows them.
#[derive(Clone)]
pub struct Payer {
    /// How.
    pub kind: PayerKind,
    /// The ID, student or account number.
    pub identifier: String,
}

impl std::fmt::Debug for Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payer").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// Where a link to a family member's bills stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// Shows nothing yet: the person has not answered, or the biller has not confirmed.
    Pending,
    /// Shows the bills, which the linked resident may pay.
    Approved,
    /// The person declined (or withdrew an approval); shows nothing.
    Declined,
}

impl LinkStatus {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            LinkStatus::Pending => "pending",
            LinkStatus::Approved => "approved",
            LinkStatus::Declined => "declined",
        }
    }

    /// Inverse of [`LinkStatus::code`].
    pub fn from_code(code: &str) -> Option<LinkStatus> {
        [LinkStatus::Pending, LinkStatus::Approved, LinkStatus::Declined].into_iter().find(|s| s.code() == code)
    }
}

/// A resident's link to a family member's bills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayerLink {
    /// How the family member is known.
    pub payer_kind: PayerKind,
    /// Their identifier, masked.
    pub payer_masked: String,
    /// The linking resident's name for it (`mother`, `son`, `home`).
    pub label: String,
    /// Where it stands.
    pub status: LinkStatus,
    /// Unix seconds.
    pub created_at: u64,
}

/// Another resident's request to see one's bills, as the person named sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRequest {
    /// The requesting resident.
    pub requester: u64,
    /// Their ID number, masked.
    pub requester_masked: String,
    /// Their name for the link.
    pub label: String,
    /// Where it stands.
    pub status: LinkStatus,
    /// Unix seconds.
    pub requested_at: u64,
}

/// A bill as the biller issues it.
#[derive(Clone, Debug)]
pub struct NewBill {
    /// The biller's reference: 1 to 64 letters, digits, `-` or `_`, unique per biller.
    pub out_bill_no: String,
    /// Who pays.
    pub payer: Payer,
    /// What for (1 to 128 characters).
    pub title: String,
    /// 1 to 32 items.
    pub items: Vec<Item>,
    /// The payer picks items (else all are due together).
    pub pick_items: bool,
    /// The insurance fund's part (hospital bills whose items are all due together).
    pub insured: i64,
    /// Due date (unix seconds).
    pub due_at: u64,
    /// Whether it may be paid after the due date.
    pub late_allowed: bool,
}

/// How a bill was paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaidBy {
    /// From a resident's wallet.
    Wallet,
    /// Cash at the biller's counter.
    Cash,
}

impl PaidBy {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            PaidBy::Wallet => "wallet",
            PaidBy::Cash => "cash",
        }
    }
}

/// One payment of a bill, with its receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillPayment {
    /// The payment's number (the receipt's number).
    pub id: u64,
    /// The bill after the payment.
    pub bill: Bill,
    /// Items paid (bits).
    pub items: u64,
    /// Amount paid, the fund's part included, in fen.
    pub amount: i64,
    /// The insurance fund's part.
    pub insured: i64,
    /// The platform's fee, in fen.
    pub fee: i64,
    /// How.
    pub method: PaidBy,
    /// Unix seconds.
    pub paid_at: u64,
    /// The signed receipt.
    pub receipt: Receipt,
}

/// What a biller's shard writes when a payer of another shard pays one of its bills (see
/// [`Bills::payment_from_elsewhere`]).
#[derive(Clone, Debug)]
pub struct BillPaymentHere {
    /// The payment as it is made.
    pub payment: BillPayment,
    /// What crosses from the payer's wallet: the bill's amount less the fund's part.
    pub payer_part: i64,
    /// The biller's account, credited.
    pub biller_account: u64,
    /// That the bill is still the one read.
    pub guards: Vec<Guard>,
    /// The bill paid, and the payment with its receipt.
    pub rows: Vec<ServiceRow>,
    /// The fund's part and the fee, in the credit's entry.
    pub legs: Vec<Leg>,
    /// The bill's version the payment was made against.
    pub bill_version: i64,
}

/// Sorts bills newest first, each once, and keeps the first `limit` (at most [`LIST_MAX`]).
pub fn newest_first(bills: &mut Vec<Bill>, limit: u32) {
    bills.sort_by(|a, b| (b.created_at, b.id).cmp(&(a.created_at, a.id)));
    // A key both one's own and linked (one's own number linked) lists its bills once.
    bills.dedup_by_key(|b| b.id);
    bills.truncate(limit.clamp(1, LIST_MAX) as usize);
}

/// The fund's part of a bill paid wholly in cash, paid to the patient's wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FundClaim {
    /// The bill.
    pub bill_id: u64,
    /// Paid into the wallet, in fen.
    pub amount: i64,
    /// Unix seconds.
    pub claimed_at: u64,
}

/// A yearly window in which a city's residents pay their social-security contribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContributionWindow {
    /// The city.
    pub city: u32,
    /// The contribution year.
    pub year: u16,
    /// The social-security bureau (a biller) that collects it.
    pub bureau_id: u64,
    /// The contribution per person, in fen.
    pub amount: i64,
    /// Opens (unix seconds).
    pub opens_at: u64,
    /// Closes (unix seconds).
    pub closes_at: u64,
}

/// The bills service.
#[derive(Clone)]
pub struct Bills {
    directory: Directory,
    signer: Arc<ReceiptSigner>,
}

impl std::fmt::Debug for Bills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bills").finish_non_exhaustive()
    }
}

/// The ledger id of a city's medical-insurance fund.
pub fn insurance_fund(city: u32) -> u64 {
    account_id(AccountKind::InsuranceFund, u64::from(city))
}

fn check_reference(field: &'static str, text: &str) -> Result<(), BillError> {
    if text.is_empty() || text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(BillError::InvalidField { field, message: "1 to 64 letters, digits, - or _".into() });
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), BillError> {
    let chars = text.chars().count();
    if chars == 0 || chars > max || text.chars().any(char::is_control) {
        return Err(BillError::InvalidField { field, message: format!("1 to {max} characters") });
    }
    Ok(())
}

/// A low id below 2^63 from a derived event id.
fn derived_id(parts: &[&str]) -> u64 {
    ((derived_event_id(parts) as u64) >> 1).max(1)
}

impl Bills {
    /// The bills service over the directory, signing receipts with `signer`.
    pub fn new(directory: Directory, signer: ReceiptSigner) -> Bills {
        Bills { directory, signer: Arc::new(signer) }
    }

    /// The same service on another shard's `directory` (in a country: a biller's shard),
    /// signing receipts with the same key.
    pub fn on(&self, directory: Directory) -> Bills {
        Bills { directory, signer: self.signer.clone() }
    }

    /// The public key receipts are verified with.
    pub fn receipt_key(&self) -> ReceiptPublicKey {
        self.signer.public()
    }

    fn now_s(&self) -> u64 {
        self.directory.clock().now().unix_seconds()
    }

    async fn submit(&self, command: Command) -> Result<Result<citypay_ledger::Outcome, usize>, BillError> {
        match self.directory.shard().submit(command).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(SubmitError::GuardFailed { guard }) => Ok(Err(guard)),
            Err(other) => Err(BillError::Unavailable(other.to_string())),
        }
    }

    /// The blind index and masked form of a payer identifier: an ID number is found wherever
    /// the resident is (the vault's own index); a student or account number only at its biller.
    fn payer_key(&self, payer: &Payer, biller_id: u64) -> Result<(Vec<u8>, String), BillError> {
        let identifier = payer.identifier.trim();
        match payer.kind {
            PayerKind::IdNumber => Ok(self.directory.id_number_key(identifier)?),
            PayerKind::StudentNumber | PayerKind::AccountNumber => {
                check_reference("identifier", identifier)?;
                let scoped = format!("{biller_id}:{}:{identifier}", payer.kind.code());
                let keep = identifier.len().min(4);
                let masked = "*".repeat(identifier.len() - keep) + &identifier[identifier.len() - keep..];
                Ok((self.directory.blind_index("bill_payer", &scoped), masked))
            }
        }
    }

    /// Issues a bill. Idempotent by `out_bill_no`: the same bill again returns it.
    pub async fn issue(&self, biller_id: u64, new: &NewBill) -> Result<Bill, BillError> {
        check_reference("out_bill_no", &new.out_bill_no)?;
        check_text("title", &new.title, 128)?;
        if new.items.is_empty() || new.items.len() > ITEMS_MAX {
            return Err(BillError::InvalidField { field: "items", message: format!("1 to {ITEMS_MAX} items") });
        }
        for item in &new.items {
            check_text("items.name", &item.name, 64)?;
            if item.amount <= 0 || item.amount > 10_000_000_000 {
                return Err(BillError::InvalidField { field: "items.amount", message: "between 1 fen and 100,000,000 yuan".into() });
            }
        }
        let total: i64 = new.items.iter().map(|i| i.amount).sum();
        if total > 10_000_000_000 {
            return Err(BillError::InvalidField { field: "items", message: "at most 100,000,000 yuan in all".into() });
        }
        let biller = self.directory.merchant(biller_id).await?;
        if !BILLER_CATEGORIES.contains(&biller.category) {
            return Err(BillError::InvalidField { field: "biller", message: "only hospitals, schools, the social-security bureau and utilities issue bills".into() });
        }
        // The cap first: it bounds `insured` before it is multiplied.
        if !(0..=INSURED_MAX_FEN).contains(&new.insured) || new.insured * 100 > total * INSURED_SHARE_MAX_PERCENT {
            return Err(BillError::InvalidField {
                field: "insured",
                message: format!("at most {INSURED_SHARE_MAX_PERCENT}% of the bill and {} yuan", INSURED_MAX_FEN / 100),
            });
        }
        if new.insured > 0 && (biller.category != Category::Hospital || new.pick_items) {
            return Err(BillError::InvalidField { field: "insured", message: "only hospital bills whose items are all due together".into() });
        }
        if !new.late_allowed && new.due_at <= self.now_s() {
            return Err(BillError::InvalidField { field: "due_at", message: "already past, and late payment is not allowed: it could never be paid".into() });
        }
        let (payer_key, payer_masked) = self.payer_key(&new.payer, biller_id)?;
        let bill = Bill {
            id: u64::from_le_bytes(self.directory.draw(&["bill", &biller_id.to_string(), &new.out_bill_no])) >> 1,
            biller_id,
            city: biller.city,
            category: biller.category,
            out_bill_no: new.out_bill_no.clone(),
            payer_kind: new.payer.kind,
            payer_key,
            payer_masked,
            title: new.title.clone(),
            items: new.items.clone(),
            pick_items: new.pick_items,
            total,
            insured: new.insured,
            due_at: new.due_at,
            late_allowed: new.late_allowed,
            status: BillStatus::Open,
            paid_items: 0,
            paid_amount: 0,
            version: 1,
            created_at: self.now_s(),
        };
        let command = Command { event: None, guards: vec![bill.absent_guard()], rows: vec![bill.row(OnConflict::Fail)], always_rows: Vec::new() };
        match self.submit(command).await? {
            Ok(_) => {
                // The payer (an ID or student number) stays out of the log.
                tracing::debug!(biller = biller_id, bill = bill.id, total = bill.total, insured = bill.insured, "bill issued");
                Ok(bill)
            }
            Err(_) => {
                let existing = self.bill(biller_id, &new.out_bill_no).await?;
                let same = existing.items == bill.items
                    && existing.title == bill.title
                    && existing.payer_key == bill.payer_key
                    && existing.insured == bill.insured
                    && existing.pick_items == bill.pick_items;
                if same { Ok(existing) } else { Err(BillError::OutBillNoReused) }
            }
        }
    }

    /// A biller's bill by its reference (another biller's bills are not found).
    pub async fn bill(&self, biller_id: u64, out_bill_no: &str) -> Result<Bill, BillError> {
        let rows = self.directory.read(bill::SELECT_BY_BILLER, vec![uint(biller_id), Value::Text(out_bill_no.to_owned())]).await?;
        rows.first().map(|row| Bill::from_row(row)).transpose()?.ok_or(BillError::BillNotFound)
    }

    async fn bill_by_id(&self, id: u64) -> Result<Bill, BillError> {
        let rows = self.directory.read(bill::SELECT_BY_ID, vec![uint(id)]).await?;
        rows.first().map(|row| Bill::from_row(row)).transpose()?.ok_or(BillError::BillNotFound)
    }

    /// The payer keys a resident may see and pay bills of: their own ID number's, and those of
    /// the links that were consented to (an ID number's) or confirmed by the biller (a student
    /// or account number's).
    pub async fn payer_keys(&self, resident: &Resident) -> Result<PayerKeys, BillError> {
        let own = self.directory.resident_id_keys(resident.id).await?;
        let links = self.links_with_keys(resident.id, &own).await?;
        let linked = links.into_iter().filter(|(_, link)| link.status == LinkStatus::Approved).map(|(key, _)| key).collect();
        Ok(PayerKeys { own, linked })
    }

    /// A resident's links with their payer keys. An ID number's link stands as its person
    /// answered it; a student or account number's is approved while its biller lists the
    /// resident as a guardian.
    async fn links_with_keys(&self, resident_id: u64, own: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, PayerLink)>, BillError> {
        let rows = self
            .directory
            .read(
                "SELECT payer_key, payer_kind, payer_masked, label, status, created_at FROM payer_links WHERE resident_id = ?1 ORDER BY created_at, payer_key",
                vec![uint(resident_id)],
            )
            .await?;
        let bad = |what: &str| BillError::Directory(DirectoryError::Storage(format!("payer link: {what}")));
        let mut guarded: Vec<Vec<u8>> = Vec::new();
        if rows.iter().any(|row| text_at(row, 1).is_ok_and(|kind| kind != PayerKind::IdNumber.code())) {
            for key in own {
                let found = self.directory.read("SELECT payer_key FROM payer_guardians WHERE guardian_key = ?1", vec![Value::Blob(key.clone())]).await?;
                for row in &found {
                    guarded.push(citypay_directory::blob_at(row, 0)?);
                }
            }
        }
        rows.iter()
            .map(|row| {
                let key = citypay_directory::blob_at(row, 0)?;
                let payer_kind = PayerKind::from_code(&text_at(row, 1)?).ok_or_else(|| bad("kind"))?;
                let status = match payer_kind {
                    PayerKind::IdNumber => LinkStatus::from_code(&text_at(row, 4)?).ok_or_else(|| bad("status"))?,
                    _ if guarded.contains(&key) => LinkStatus::Approved,
                    _ => LinkStatus::Pending,
                };
                let link = PayerLink {
                    payer_kind,
                    payer_masked: text_at(row, 2)?,
                    label: text_at(row, 3)?,
                    status,
                    created_at: u64::try_from(int_at(row, 5)?).unwrap_or(0),
                };
                Ok((key, link))
            })
            .collect()
    }

    /// A resident's links to family members' bills, oldest first, with where each stands.
    pub async fn links_of(&self, resident: &Resident) -> Result<Vec<PayerLink>, BillError> {
        let own = self.directory.resident_id_keys(resident.id).await?;
        Ok(self.links_with_keys(resident.id, &own).await?.into_iter().map(|(_, link)| link).collect())
    }

    /// Asks to see and pay a family member's bills: a relative's ID number, a child's student
    /// number at a school (`biller_id`), or an account number at a utility. The link shows
    /// nothing until the relative approves it from their own account, or, for a student or
    /// account number, until the biller lists the resident as its guardian
    /// ([`Bills::add_guardian`]). The answer is the same whether or not anyone holds that
    /// number, so a link tells a stranger nothing. Asking again changes only the label: a
    /// declined request stays declined.
    pub async fn link_payer(&self, resident: &Resident, payer: &Payer, biller_id: Option<u64>, label: &str) -> Result<PayerLink, BillError> {
        check_text("label", label, 32)?;
        let scope = match (payer.kind, biller_id) {
            (PayerKind::IdNumber, _) => 0,
            (_, Some(biller)) => {
                self.directory.merchant(biller).await?;
                biller
            }
            (_, None) => return Err(BillError::InvalidField { field: "biller_id", message: "a student or account number belongs to a biller".into() }),
        };
        let (key, masked) = self.payer_key(payer, scope)?;
        if payer.kind == PayerKind::IdNumber {
            let since = self.now_s().saturating_sub(LINK_REQUESTS_WINDOW_S);
            let asked = self
                .directory
                .read(
                    "SELECT COUNT(*) FROM payer_links WHERE resident_id = ?1 AND payer_kind = 'id_number' AND status = 'pending' AND created_at > ?2 AND payer_key <> ?3",
                    vec![uint(resident.id), uint(since), Value::Blob(key.clone())],
                )
                .await?;
            if asked.first().map(|row| int_at(row, 0)).transpose()?.unwrap_or(0) >= LINK_REQUESTS_MAX {
                return Err(BillError::TooManyLinkRequests);
            }
        }
        // No status column: a new link takes the table's default (pending), an existing one
        // keeps its answer.
        let row = ServiceRow {
            table: "payer_links",
            key: vec![("resident_id", uint(resident.id)), ("payer_key", Value::Blob(key.clone()))],
            columns: vec![
                ("payer_kind", Value::Text(payer.kind.code().to_owned())),
                ("payer_masked", Value::Text(masked)),
                ("label", Value::Text(label.to_owned())),
                ("created_at", uint(self.now_s())),
            ],
            on_conflict: OnConflict::Update,
        };
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| BillError::Unavailable("link".into()))?;
        let own = self.directory.resident_id_keys(resident.id).await?;
        let links = self.links_with_keys(resident.id, &own).await?;
        links.into_iter().find(|(k, _)| *k == key).map(|(_, link)| link).ok_or_else(|| BillError::Unavailable("link".into()))
    }

    /// The requests of others to see a resident's bills (links to the resident's own ID
    /// number), newest first (at most [`LIST_MAX`]), with the requester's masked ID number.
    pub async fn link_requests(&self, resident: &Resident) -> Result<Vec<LinkRequest>, BillError> {
        let mut requests = Vec::new();
        for key in self.directory.resident_id_keys(resident.id).await? {
            let rows = self
                .directory
                .read(
                    "SELECT resident_id, label, status, created_at FROM payer_links WHERE payer_key = ?1 AND payer_kind = 'id_number'
                      ORDER BY created_at DESC, resident_id LIMIT ?2",
                    vec![Value::Blob(key), Value::Int(i64::from(LIST_MAX))],
                )
                .await?;
            for row in &rows {
                let requester = u64::try_from(int_at(row, 0)?).unwrap_or(0);
                if requester == resident.id {
                    continue;
                }
                requests.push(LinkRequest {
                    requester,
                    requester_masked: self.directory.resident(requester).await?.id_masked,
                    label: text_at(row, 1)?,
                    status: LinkStatus::from_code(&text_at(row, 2)?).unwrap_or(LinkStatus::Pending),
                    requested_at: u64::try_from(int_at(row, 3)?).unwrap_or(0),
                });
            }
        }
        Ok(requests)
    }

    /// Approves or declines (which also withdraws an approval) `requester`'s link to the
    /// resident's own ID number.
    pub async fn answer_link_request(&self, resident: &Resident, requester: u64, approve: bool) -> Result<LinkRequest, BillError> {
        let status = if approve { LinkStatus::Approved } else { LinkStatus::Declined };
        for key in self.directory.resident_id_keys(resident.id).await? {
            let link_key = vec![("resident_id", uint(requester)), ("payer_key", Value::Blob(key))];
            let found = self
                .directory
                .read(
                    "SELECT label, created_at FROM payer_links WHERE resident_id = ?1 AND payer_key = ?2 AND payer_kind = 'id_number'",
                    link_key.iter().map(|(_, v)| v.clone()).collect(),
                )
                .await?;
            let Some(row) = found.first() else { continue };
            if requester == resident.id {
                break;
            }
            let row_change = ServiceRow {
                table: "payer_links",
                key: link_key,
                columns: vec![("status", Value::Text(status.code().to_owned()))],
                on_conflict: OnConflict::UpdateOnly,
            };
            let command = Command { event: None, guards: Vec::new(), rows: vec![row_change], always_rows: Vec::new() };
            self.submit(command).await?.map_err(|_| BillError::Unavailable("link".into()))?;
            return Ok(LinkRequest {
                requester,
                requester_masked: self.directory.resident(requester).await?.id_masked,
                label: text_at(row, 0)?,
                status,
                requested_at: u64::try_from(int_at(row, 1)?).unwrap_or(0),
            });
        }
        Err(BillError::LinkNotFound)
    }

    /// A biller lists a guardian of one of its student or account numbers by the guardian's
    /// ID number (a school's enrolment record, a utility's account holder): a link that
    /// resident makes to that number is then approved. Listing again changes nothing.
    /// Returns the masked number and the masked guardian.
    pub async fn add_guardian(&self, biller_id: u64, payer: &Payer, guardian_id_number: &str) -> Result<(String, String), BillError> {
        if payer.kind == PayerKind::IdNumber {
            return Err(BillError::InvalidField { field: "payer_kind", message: "a student or account number (an ID number's person consents from their own account)".into() });
        }
        let biller = self.directory.merchant(biller_id).await?;
        if !BILLER_CATEGORIES.contains(&biller.category) {
            return Err(BillError::InvalidField { field: "biller", message: "only hospitals, schools, the social-security bureau and utilities issue bills".into() });
        }
        let (payer_key, payer_masked) = self.payer_key(payer, biller_id)?;
        let (guardian_key, guardian_masked) = self.directory.id_number_key(guardian_id_number)?;
        let row = ServiceRow {
            table: "payer_guardians",
            key: vec![("payer_key", Value::Blob(payer_key)), ("guardian_key", Value::Blob(guardian_key))],
            columns: vec![("biller_id", uint(biller_id)), ("created_at", uint(self.now_s()))],
            on_conflict: OnConflict::Ignore,
        };
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| BillError::Unavailable("guardian".into()))?;
        Ok((payer_masked, guardian_masked))
    }

    /// The bills addressed to a resident and to the family members whose links stand (their
    /// consent, or the biller's confirmation), newest first, in full: the payer sees what
    /// they are choosing.
    pub async fn bills_of(&self, resident: &Resident, limit: u32) -> Result<Vec<Bill>, BillError> {
        let keys = self.payer_keys(resident).await?;
        let mut bills = self.bills_with_keys(&keys, limit).await?;
        newest_first(&mut bills, limit);
        Ok(bills)
    }

    /// The bills of this shard addressed to `keys` (at most `limit` per key).
    pub async fn bills_with_keys(&self, keys: &PayerKeys, limit: u32) -> Result<Vec<Bill>, BillError> {
        let limit = limit.clamp(1, LIST_MAX);
        let mut bills = Vec::new();
        for key in keys.own.iter().chain(&keys.linked) {
            let rows = self.directory.read(bill::SELECT_BY_PAYER, vec![Value::Blob(key.clone()), Value::Int(i64::from(limit))]).await?;
            for row in &rows {
                bills.push(Bill::from_row(row)?);
            }
        }
        Ok(bills)
    }

    /// A bill a resident may see (theirs, or a linked family member's); else not found.
    pub async fn bill_for(&self, resident: &Resident, bill_id: u64) -> Result<Bill, BillError> {
        self.bill_with_keys(&self.payer_keys(resident).await?, bill_id).await
    }

    /// A bill of this shard addressed to `keys`; else not found.
    pub async fn bill_with_keys(&self, keys: &PayerKeys, bill_id: u64) -> Result<Bill, BillError> {
        let bill = self.bill_by_id(bill_id).await?;
        if !keys.contains(&bill.payer_key) {
            return Err(BillError::BillNotFound);
        }
        Ok(bill)
    }

    /// Pays a bill from the resident's wallet: all of it, or (when the payer picks) the items
    /// `items` names (indexes). The fund's part of a hospital bill moves in the same entry.
    pub async fn pay(&self, payer: &Resident, bill_id: u64, items: Option<&[usize]>) -> Result<BillPayment, BillError> {
        self.pay_with_keys(&self.payer_keys(payer).await?, payer, bill_id, items).await
    }

    /// [`Bills::pay`] of a bill of this shard addressed to `keys` (the payer's, read on
    /// their shard); not found when none is.
    pub async fn pay_with_keys(&self, keys: &PayerKeys, payer: &Resident, bill_id: u64, items: Option<&[usize]>) -> Result<BillPayment, BillError> {
        let mut bill = self.bill_with_keys(keys, bill_id).await?;
        for _ in 0..CAS_ATTEMPTS_MAX {
            let mask = match self.payable(&bill, payer, items).await? {
                Ok(mask) => mask,
                Err(done) => return Ok(done),
            };
            match self.try_pay_with(&bill, Some(payer), mask, true, Vec::new(), Vec::new()).await? {
                Some(result) => return result,
                None => bill = self.bill_by_id(bill_id).await?,
            }
        }
        Err(BillError::Unavailable("the bill kept changing; retry".into()))
    }

    /// The items of `bill` a payment by `payer` covers, if it may pay them now; the payment
    /// this payer made before for them (a retry).
    async fn payable(&self, bill: &Bill, payer: &Resident, items: Option<&[usize]>) -> Result<Result<u64, BillPayment>, BillError> {
        let mask = self.chosen(bill, items)?;
        if let Some(done) = self.paid_before(bill, payer, mask).await? {
            return Ok(Err(done));
        }
        if bill.paid_items & mask != 0 {
            return Err(BillError::AlreadyPaid);
        }
        if !bill.late_allowed && self.now_s() > bill.due_at {
            return Err(BillError::Overdue);
        }
        Ok(Ok(mask))
    }

    /// A bill of this shard paid by a resident of another shard (in a country): its checks as
    /// [`Bills::pay`] makes them, and what its shard writes when the payer's money arrives
    /// through the clearing; or the payment made before (a retry). The payer's wallet is
    /// guarded and debited on its own shard.
    pub async fn payment_from_elsewhere(&self, keys: &PayerKeys, payer: &Resident, bill_id: u64, items: Option<&[usize]>) -> Result<Result<BillPaymentHere, BillPayment>, BillError> {
        let bill = self.bill_with_keys(keys, bill_id).await?;
        let mask = match self.payable(&bill, payer, items).await? {
            Ok(mask) => mask,
            Err(done) => return Ok(Err(done)),
        };
        let biller = self.directory.merchant(bill.biller_id).await?;
        let (payment, rows) = self.payment_rows(&bill, &biller, Some(payer), mask, true);
        // The payer's part arrives as the clearing's credit; the fund's part, then the fee, go
        // with it.
        let legs = self.payment_legs(&bill, &biller, None, payment.amount, payment.insured, payment.fee);
        Ok(Ok(BillPaymentHere { payer_part: payment.amount - payment.insured, biller_account: biller.account, guards: vec![bill.version_guard()], rows, legs, bill_version: bill.version, payment }))
    }

    /// The items a payment covers.
    fn chosen(&self, bill: &Bill, items: Option<&[usize]>) -> Result<u64, BillError> {
        match items {
            None => Ok(bill.all_items() & !bill.paid_items),
            Some(_) if !bill.pick_items => Err(BillError::InvalidField { field: "items", message: "this bill is paid in full".into() }),
            Some([]) => Err(BillError::InvalidField { field: "items", message: "at least one item".into() }),
            Some(list) => list.iter().try_fold(0u64, |mask, &i| {
                if i >= bill.items.len() {
                    return Err(BillError::InvalidField { field: "items", message: format!("no item {i}") });
                }
                Ok(mask | (1 << i))
            }),
        }
    }

    /// A payment this payer already made for exactly these items (a retry), if any.
    async fn paid_before(&self, bill: &Bill, payer: &Resident, mask: u64) -> Result<Option<BillPayment>, BillError> {
        if mask != 0 && bill.paid_items & mask != mask {
            return Ok(None);
        }
        let rows = self
            .directory
            .read(
                "SELECT id FROM bill_payments WHERE bill_id = ?1 AND payer_resident = ?2 AND (items = ?3 OR ?3 = 0)",
                vec![uint(bill.id), uint(payer.id), Value::Int(mask as i64)],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(self.payment(u64::try_from(int_at(row, 0)?).unwrap_or(0)).await?)),
            None if mask == 0 => Err(BillError::AlreadyPaid),
            None => Ok(None),
        }
    }

    /// One attempt: `None` when the bill changed meanwhile. With `fund`, the insurance fund
    /// pays its part of a whole bill.
    async fn try_pay(&self, bill: &Bill, payer: Option<&Resident>, mask: u64, fund: bool) -> Result<Option<Result<BillPayment, BillError>>, BillError> {
        self.try_pay_with(bill, payer, mask, fund, Vec::new(), Vec::new()).await
    }

    /// [`Bills::try_pay`] with more guards and rows in the same command.
    async fn try_pay_with(
        &self,
        bill: &Bill,
        payer: Option<&Resident>,
        mask: u64,
        fund: bool,
        guards: Vec<Guard>,
        extra_rows: Vec<ServiceRow>,
    ) -> Result<Option<Result<BillPayment, BillError>>, BillError> {
        let biller = self.directory.merchant(bill.biller_id).await?;
        let (payment, rows) = self.payment_rows(bill, &biller, payer, mask, fund);
        let rows: Vec<ServiceRow> = rows.into_iter().chain(extra_rows).collect();
        let (amount, insured, fee) = (payment.amount, payment.insured, payment.fee);
        // A frozen wallet pays nothing: the writer checks it in the payment's own batch.
        let frozen_guard = payer.map(|p| Directory::wallet_not_frozen(p.id));
        let guards: Vec<Guard> = [bill.version_guard()].into_iter().chain(frozen_guard).chain(guards).collect();
        // The version guard makes a payment happen once. The entry's id is numbered by attempt:
        // the ledger answers a refused id again with its first refusal (a replay), and a refusal
        // (the wallet was short) must not stop a later payment, so a replayed refusal moves on
        // to the next number. The numbers are the same on every run, so replays stay exact.
        for attempt in 0..REFUSALS_MAX {
            let event = self.payment_entry(bill, &biller, payer, amount, insured, fee, attempt);
            let command = Command { event, guards: guards.clone(), rows: rows.clone(), always_rows: Vec::new() };
            let payer_id = payer.map(|p| p.id);
            return Ok(match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => {
                    tracing::debug!(biller = bill.biller_id, bill = bill.id, payer = payer_id, amount, insured, fee, "bill paid");
                    Some(Ok(payment))
                }
                Ok(outcome) if outcome.replay => continue,
                Ok(outcome) => {
                    tracing::debug!(bill = bill.id, payer = payer_id, amount, insured, status = outcome.status.name(), "bill payment refused");
                    Some(Err(self.refusal(bill.city, insured, outcome.status).await))
                }
                Err(1) if payer.is_some() => Some(Err(DirectoryError::WalletFrozen.into())),
                Err(_) => None,
            });
        }
        Err(BillError::Unavailable("too many refused attempts at this bill; retry later".into()))
    }

    /// A payment of `mask` of `bill` by `payer` (`None`: cash) as it would be made now, and
    /// the rows it writes: the bill paid, the payment with its signed receipt. With `fund`,
    /// the insurance fund pays its part of a whole bill.
    fn payment_rows(&self, bill: &Bill, biller: &Merchant, payer: Option<&Resident>, mask: u64, fund: bool) -> (BillPayment, Vec<ServiceRow>) {
        let amount = bill.amount_of(mask);
        let whole = mask | bill.paid_items == bill.all_items() && bill.paid_items == 0;
        let insured = if whole && fund { bill.insured } else { 0 };
        let method = if payer.is_some() { PaidBy::Wallet } else { PaidBy::Cash };
        let fee = if payer.is_some() { citypay_directory::fee_for(amount, biller.fee_rate_bp) } else { 0 };
        let after = bill.paid(mask);
        let now = self.now_s();
        let payment_id = derived_id(&["bill-payment", &bill.id.to_string(), &bill.version.to_string()]);
        let receipt = self.receipt(payment_id, biller, &after, mask, amount, insured, method, now);

        let payment_row = ServiceRow {
            table: "bill_payments",
            key: vec![("id", uint(payment_id))],
            columns: vec![
                ("bill_id", uint(bill.id)),
                ("biller_id", uint(bill.biller_id)),
                ("payer_resident", payer.map_or(Value::Null, |p| uint(p.id))),
                ("method", Value::Text(method.code().to_owned())),
                ("items", Value::Int(mask as i64)),
                ("amount", Value::Int(amount)),
                ("insured", Value::Int(insured)),
                ("fee", Value::Int(fee)),
                ("paid_at", uint(now)),
                ("receipt", Value::Text(receipt.text.clone())),
                ("signature", Value::Blob(receipt.signature.to_vec())),
            ],
            on_conflict: OnConflict::Fail,
        };
        let rows = vec![after.payment_row(), payment_row];
        (BillPayment { id: payment_id, bill: after, items: mask, amount, insured, fee, method, paid_at: now, receipt }, rows)
    }

    /// Why a payment with a fund part was refused: the ledger's status names no account, so a
    /// fund that was never opened (`account_not_found`) or holds too little is named here.
    async fn refusal(&self, city: u32, insured: i64, status: Status) -> BillError {
        if insured > 0 && matches!(status, Status::AccountNotFound | Status::InsufficientFunds) {
            let short = match self.directory.shard().account(insurance_fund(city)).await {
                Ok(None) => true,
                Ok(Some(fund)) => fund.balance.available() < insured,
                Err(_) => false,
            };
            if short {
                return BillError::FundShort(insured);
            }
        }
        BillError::Refused(status)
    }

    /// The payment's entry: the payer's part from the wallet (none for cash), the fund's part
    /// from the city's insurance fund, the fee to the platform; all or nothing. `None` when
    /// nothing moves in the ledger (cash for a bill without an insured part).
    #[allow(clippy::too_many_arguments)]
    fn payment_entry(&self, bill: &Bill, biller: &Merchant, payer: Option<&Resident>, amount: i64, insured: i64, fee: i64, attempt: u32) -> Option<Event> {
        let legs = self.payment_legs(bill, biller, payer, amount, insured, fee);
        if legs.is_empty() {
            return None;
        }
        let who = payer.map_or_else(|| "cash".to_owned(), |p| p.id.to_string());
        // Everything the entry moves is in its id: a refused attempt's id is never reused for
        // other terms (a changed fee rate), which the ledger would answer as a conflict.
        let terms = [amount, insured, fee].map(|v| v.to_string());
        let id = derived_event_id(&["bill", &bill.id.to_string(), "pay", &bill.version.to_string(), &who, &terms[0], &terms[1], &terms[2], &attempt.to_string()]);
        Some(Event::Entry(Entry { id, legs }))
    }

    /// The payment's legs, in order: the payer's part (none for cash), the fund's part, the
    /// fee.
    fn payment_legs(&self, bill: &Bill, biller: &Merchant, payer: Option<&Resident>, amount: i64, insured: i64, fee: i64) -> Vec<Leg> {
        let leg = |debit, credit, amount, code, class| Leg { debit, credit, amount, currency: Currency::CNY, code, class, user_data: bill.id };
        let mut legs = Vec::new();
        if let Some(payer) = payer
            && amount - insured > 0
        {
            legs.push(leg(payer.wallet, biller.account, amount - insured, transfer_codes::BILL, BALANCE_PAYMENT));
        }
        if insured > 0 {
            legs.push(leg(insurance_fund(bill.city), biller.account, insured, transfer_codes::BILL_INSURED, 0));
        }
        if fee > 0 {
            legs.push(leg(biller.account, PlatformAccounts::CNY.fee_revenue, fee, transfer_codes::FEE, 0));
        }
        legs
    }

    #[allow(clippy::too_many_arguments)]
    fn receipt(&self, id: u64, biller: &Merchant, bill: &Bill, mask: u64, amount: i64, insured: i64, method: PaidBy, now: u64) -> Receipt {
        let items: Vec<&Item> = bill.items.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, item)| item).collect();
        let text = serde_json::json!({
            "receipt_no": id.to_string(),
            "key_id": self.signer.key_id(),
            "issued_by": "citypay",
            "paid_at": format!("{} +08:00", Timestamp::from_unix_seconds(now).local_date_time()),
            "biller": {"id": biller.id.to_string(), "name": biller.name, "uscc": biller.uscc, "category": biller.category.code()},
            "bill": {"bill_no": bill.id.to_string(), "out_bill_no": bill.out_bill_no, "title": bill.title, "payer": bill.payer_masked},
            "items": items,
            "amount": amount,
            "insured": insured,
            "paid_by_payer": amount - insured,
            "method": method.code(),
            "currency": "CNY",
        })
        .to_string();
        let signature = self.signer.sign(&text);
        Receipt { number: id.to_string(), text, signature }
    }

    /// Records cash paid at the biller's counter. No wallet moves; the bill is paid and a
    /// receipt issued. The cash is what is outstanding, or, for an insured bill whose patient
    /// consented from their own account ([`Bills::consent_to_fund`]), the patient's part, and
    /// the fund pays its part in the ledger: a biller alone never moves the fund. An insured
    /// bill paid wholly in cash is claimed from the fund later by the patient
    /// ([`Bills::claim_from_fund`]).
    pub async fn pay_cash(&self, biller_id: u64, out_bill_no: &str, amount: i64) -> Result<BillPayment, BillError> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            let bill = self.bill(biller_id, out_bill_no).await?;
            if bill.status == BillStatus::Paid {
                return Err(BillError::AlreadyPaid);
            }
            let consented = bill.insured > 0 && bill.paid_items == 0 && self.fund_consent(bill.id).await?;
            let patients_part = bill.outstanding() - bill.insured;
            let fund = match amount {
                _ if amount == bill.outstanding() => false,
                _ if consented && amount == patients_part => true,
                _ => return Err(BillError::AmountMismatch(if consented { patients_part } else { bill.outstanding() })),
            };
            let mask = bill.all_items() & !bill.paid_items;
            if let Some(result) = self.try_pay(&bill, None, mask, fund).await? {
                return result;
            }
        }
        Err(BillError::Unavailable("the bill kept changing; retry".into()))
    }

    async fn fund_consent(&self, bill_id: u64) -> Result<bool, BillError> {
        Ok(!self.directory.read("SELECT 1 FROM fund_consents WHERE bill_id = ?1", vec![uint(bill_id)]).await?.is_empty())
    }

    /// The patient's own insured bill (addressed to their own ID number; a linked relative's
    /// is not theirs to consent to or claim).
    async fn own_insured_bill(&self, patient: &Resident, bill_id: u64) -> Result<Bill, BillError> {
        let bill = self.bill_by_id(bill_id).await?;
        if !self.directory.resident_id_keys(patient.id).await?.contains(&bill.payer_key) {
            return Err(BillError::BillNotFound);
        }
        if bill.insured == 0 {
            return Err(BillError::InvalidField { field: "bill", message: "this bill has no insured part".into() });
        }
        Ok(bill)
    }

    /// The patient consents, from their own account, to the fund paying its part of their
    /// bill when it is paid in cash at the counter. Consenting again changes nothing.
    pub async fn consent_to_fund(&self, patient: &Resident, bill_id: u64) -> Result<Bill, BillError> {
        let bill = self.own_insured_bill(patient, bill_id).await?;
        if bill.status == BillStatus::Paid {
            return Err(BillError::AlreadyPaid);
        }
        let row = ServiceRow {
            table: "fund_consents",
            key: vec![("bill_id", uint(bill.id))],
            columns: vec![("resident_id", uint(patient.id)), ("created_at", uint(self.now_s()))],
            on_conflict: OnConflict::Ignore,
        };
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| BillError::Unavailable("consent".into()))?;
        Ok(bill)
    }

    /// The patient claims the fund's part of their insured bill that was paid wholly in cash:
    /// the fund pays it into their wallet, once (a second claim answers the first).
    pub async fn claim_from_fund(&self, patient: &Resident, bill_id: u64) -> Result<FundClaim, BillError> {
        let bill = self.own_insured_bill(patient, bill_id).await?;
        if let Some(claim) = self.fund_claim(bill.id).await? {
            return Ok(claim);
        }
        let payments = self.directory.read("SELECT method, insured FROM bill_payments WHERE bill_id = ?1", vec![uint(bill.id)]).await?;
        let wholly_in_cash = bill.status == BillStatus::Paid
            && payments.len() == 1
            && text_at(&payments[0], 0)? == PaidBy::Cash.code()
            && int_at(&payments[0], 1)? == 0;
        if !wholly_in_cash {
            return Err(BillError::NothingToClaim);
        }
        let claim = FundClaim { bill_id: bill.id, amount: bill.insured, claimed_at: self.now_s() };
        let row = ServiceRow {
            table: "fund_claims",
            key: vec![("bill_id", uint(bill.id))],
            columns: vec![("resident_id", uint(patient.id)), ("amount", Value::Int(claim.amount)), ("claimed_at", uint(claim.claimed_at))],
            on_conflict: OnConflict::Fail,
        };
        let guard = Guard::Absent { table: "fund_claims", key: vec![("bill_id", uint(bill.id))] };
        // Numbered by attempt as payments are: a refusal (the fund was short) must not stick.
        for attempt in 0..REFUSALS_MAX {
            let transfer = Transfer {
                id: derived_event_id(&["fund-claim", &bill.id.to_string(), &patient.id.to_string(), &claim.amount.to_string(), &attempt.to_string()]),
                leg: Leg {
                    debit: insurance_fund(bill.city),
                    credit: patient.wallet,
                    amount: claim.amount,
                    currency: Currency::CNY,
                    code: transfer_codes::FUND_CLAIM,
                    class: 0,
                    user_data: bill.id,
                },
                pending_timeout_s: None,
            };
            let command = Command { event: Some(Event::Transfer(transfer)), guards: vec![guard.clone()], rows: vec![row.clone()], always_rows: Vec::new() };
            return match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => {
                    tracing::debug!(bill = bill.id, resident = patient.id, amount = claim.amount, "claimed from the insurance fund");
                    Ok(claim)
                }
                Ok(outcome) if outcome.replay => continue,
                Ok(outcome) => Err(self.refusal(bill.city, claim.amount, outcome.status).await),
                // Claimed meanwhile (a concurrent retry).
                Err(_) => self.fund_claim(bill.id).await?.ok_or_else(|| BillError::Unavailable("claim".into())),
            };
        }
        Err(BillError::Unavailable("too many refused attempts at this claim; retry later".into()))
    }

    async fn fund_claim(&self, bill_id: u64) -> Result<Option<FundClaim>, BillError> {
        let rows = self.directory.read("SELECT amount, claimed_at FROM fund_claims WHERE bill_id = ?1", vec![uint(bill_id)]).await?;
        rows.first()
            .map(|row| Ok(FundClaim { bill_id, amount: int_at(row, 0)?, claimed_at: u64::try_from(int_at(row, 1)?).unwrap_or(0) }))
            .transpose()
    }

    /// A payment by its number.
    pub async fn payment(&self, id: u64) -> Result<BillPayment, BillError> {
        Ok(self.payment_and_payer(id).await?.0)
    }

    /// A payment and the resident who paid it from their wallet (none for cash).
    async fn payment_and_payer(&self, id: u64) -> Result<(BillPayment, Option<u64>), BillError> {
        let rows = self
            .directory
            .read(
                "SELECT bill_id, items, amount, insured, fee, method, paid_at, receipt, signature, payer_resident FROM bill_payments WHERE id = ?1",
                vec![uint(id)],
            )
            .await?;
        let row = rows.first().ok_or(BillError::BillNotFound)?;
        let payer = int_at(row, 9).ok().and_then(|p| u64::try_from(p).ok());
        let bill = self.bill_by_id(u64::try_from(int_at(row, 0)?).unwrap_or(0)).await?;
        let signature: [u8; 64] =
            citypay_directory::blob_at(row, 8)?.try_into().map_err(|_| DirectoryError::Storage("receipt signature".into()))?;
        let payment = BillPayment {
            id,
            bill,
            items: int_at(row, 1)? as u64,
            amount: int_at(row, 2)?,
            insured: int_at(row, 3)?,
            fee: int_at(row, 4)?,
            method: if text_at(row, 5)? == "cash" { PaidBy::Cash } else { PaidBy::Wallet },
            paid_at: u64::try_from(int_at(row, 6)?).unwrap_or(0),
            receipt: Receipt { number: id.to_string(), text: text_at(row, 7)?, signature },
        };
        Ok((payment, payer))
    }

    /// A receipt a resident may see: they paid it, or the bill is their own.
    pub async fn receipt_for(&self, resident: &Resident, number: u64) -> Result<Receipt, BillError> {
        self.receipt_with_keys(resident, &self.payer_keys(resident).await?, number).await
    }

    /// A receipt of this shard's for `resident`, whose payer keys are `keys`: of a payment
    /// they made, or of a bill addressed to them.
    pub async fn receipt_with_keys(&self, resident: &Resident, keys: &PayerKeys, number: u64) -> Result<Receipt, BillError> {
        let (payment, payer) = self.payment_and_payer(number).await?;
        if payer != Some(resident.id) && !keys.own.contains(&payment.bill.payer_key) {
            return Err(BillError::BillNotFound);
        }
        Ok(payment.receipt)
    }

    /// A biller's reconciliation file of a day (CSV): every payment of its bills, by receipt,
    /// with what the platform settles for it (cash stays at the counter; the fund's part of a
    /// cash payment settles).
    pub async fn reconciliation(&self, biller_id: u64, date: LocalDate) -> Result<String, BillError> {
        let (start, close) = (date.start().unix_seconds(), date.next().start().unix_seconds());
        let rows = self
            .directory
            .read(
                "SELECT p.id, b.out_bill_no, p.paid_at, p.method, p.amount, p.insured, p.fee FROM bill_payments p JOIN bills b ON b.id = p.bill_id
                  WHERE p.biller_id = ?1 AND p.paid_at >= ?2 AND p.paid_at < ?3 ORDER BY p.paid_at, p.id",
                vec![uint(biller_id), uint(start), uint(close)],
            )
            .await?;
        // Times in the city's local time, as in the settlement file.
        let mut csv = String::from("receipt_no,out_bill_no,paid_at,method,amount,insured,paid_by_payer,fee,settled\n");
        for row in &rows {
            let method = text_at(row, 3)?;
            let (amount, insured, fee) = (int_at(row, 4)?, int_at(row, 5)?, int_at(row, 6)?);
            // Cash stays at the counter; the fund's part came through the platform.
            let settled = if method == "cash" { insured } else { amount - fee };
            csv.push_str(&format!(
                "{},{},{},{method},{amount},{insured},{},{fee},{settled}\n",
                int_at(row, 0)?,
                text_at(row, 1)?,
                Timestamp::from_unix_seconds(u64::try_from(int_at(row, 2)?).unwrap_or(0)).local_date_time(),
                amount - insured
            ));
        }
        Ok(csv)
    }

    /// Opens a city's medical-insurance fund account (opening it again is a replay).
    pub async fn open_insurance_fund(&self, city: u32) -> Result<u64, BillError> {
        self.directory.city(city).await?;
        let id = insurance_fund(city);
        let event = Event::CreateAccount(NewAccount {
            id,
            currency: Currency::CNY,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            code: AccountKind::InsuranceFund.code(),
            limits: Limits::NONE,
        });
        match self.submit(event.into()).await? {
            Ok(outcome) if outcome.status == Status::Ok => Ok(id),
            Ok(outcome) => Err(BillError::Refused(outcome.status)),
            Err(_) => Err(BillError::Unavailable("guard".into())),
        }
    }

    /// The insurance bureau's deposit into the platform's custody account, credited to the
    /// city's fund. Idempotent by the bureau's `reference`.
    pub async fn deposit_to_fund(&self, city: u32, amount: i64, reference: &str) -> Result<(), BillError> {
        check_reference("reference", reference)?;
        if amount <= 0 {
            return Err(BillError::InvalidField { field: "amount", message: "greater than zero".into() });
        }
        let transfer = Transfer {
            id: derived_event_id(&["fund-deposit", &city.to_string(), reference]),
            leg: Leg {
                debit: PlatformAccounts::CNY.sandbox_custody,
                credit: insurance_fund(city),
                amount,
                currency: Currency::CNY,
                code: transfer_codes::FUND_DEPOSIT,
                class: 0,
                user_data: u64::from(city),
            },
            pending_timeout_s: None,
        };
        match self.submit(Event::Transfer(transfer).into()).await? {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(city, amount, replay = outcome.replay, "insurance fund deposit");
                Ok(())
            }
            Ok(outcome) => Err(BillError::Refused(outcome.status)),
            Err(_) => Err(BillError::Unavailable("guard".into())),
        }
    }

    /// Opens (or changes) a city's contribution window for a year; `bureau_id` collects it.
    pub async fn open_contribution_window(&self, window: ContributionWindow) -> Result<(), BillError> {
        let bureau = self.directory.merchant(window.bureau_id).await?;
        if bureau.category != Category::SocialSecurity || bureau.city != window.city {
            return Err(BillError::InvalidField { field: "bureau_id", message: "the city's social-security bureau".into() });
        }
        if window.amount <= 0 || window.opens_at >= window.closes_at {
            return Err(BillError::InvalidField { field: "window", message: "a positive amount and an opening before the closing".into() });
        }
        let row = ServiceRow {
            table: "contribution_windows",
            key: vec![("city_code", Value::Int(i64::from(window.city))), ("year", Value::Int(i64::from(window.year)))],
            columns: vec![
                ("bureau_id", uint(window.bureau_id)),
                ("amount", Value::Int(window.amount)),
                ("opens_at", uint(window.opens_at)),
                ("closes_at", uint(window.closes_at)),
            ],
            on_conflict: OnConflict::Update,
        };
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| BillError::Unavailable("window".into()))?;
        Ok(())
    }

    async fn window(&self, city: u32, year: u16) -> Result<Option<ContributionWindow>, BillError> {
        let rows = self
            .directory
            .read(
                "SELECT bureau_id, amount, opens_at, closes_at FROM contribution_windows WHERE city_code = ?1 AND year = ?2",
                vec![Value::Int(i64::from(city)), Value::Int(i64::from(year))],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(ContributionWindow {
                    city,
                    year,
                    bureau_id: u64::try_from(int_at(row, 0)?).unwrap_or(0),
                    amount: int_at(row, 1)?,
                    opens_at: u64::try_from(int_at(row, 2)?).unwrap_or(0),
                    closes_at: u64::try_from(int_at(row, 3)?).unwrap_or(0),
                })
            })
            .transpose()
    }

    /// Pays a year's social-security contribution for `insured_id_number`: the payer's own, or
    /// a relative's (proxy payment). One contribution per person, city and year; outside the
    /// city's window it is refused. The bureau's bill is made on the spot, addressed to the
    /// insured person's ID number, and paid.
    pub async fn contribute(&self, payer: &Resident, city: u32, insured_id_number: &str, year: u16) -> Result<BillPayment, BillError> {
        let window = self.window(city, year).await?.ok_or(BillError::WindowClosed)?;
        let now = self.now_s();
        if now < window.opens_at || now >= window.closes_at {
            return Err(BillError::WindowClosed);
        }
        let (key, _) = self.directory.id_number_key(insured_id_number)?;
        let keys = self.directory.id_number_keys(insured_id_number)?;
        // The bureau's reference names the person without their number: a blind index.
        let person = citypay_directory::hex::encode(&key[key.len().saturating_sub(10)..]);
        let new = NewBill {
            out_bill_no: format!("SS{year}-{person}"),
            payer: Payer { kind: PayerKind::IdNumber, identifier: insured_id_number.to_owned() },
            title: format!("{year} residents' social insurance"),
            items: vec![Item { name: format!("{year} contribution"), amount: window.amount }],
            pick_items: false,
            insured: 0,
            due_at: window.closes_at,
            late_allowed: false,
        };
        // Once per person, city and year, whichever bureau bill or index key it was paid
        // under: a row per contribution, absent under every key of the person's number.
        let contribution_key = |k: &Vec<u8>| vec![("city_code", Value::Int(i64::from(city))), ("year", Value::Int(i64::from(year))), ("person_key", Value::Blob(k.clone()))];
        for _ in 0..CAS_ATTEMPTS_MAX {
            for k in &keys {
                let rows = self
                    .directory
                    .read("SELECT bill_id FROM contributions WHERE city_code = ?1 AND year = ?2 AND person_key = ?3", contribution_key(k).into_iter().map(|(_, v)| v).collect())
                    .await?;
                if let Some(row) = rows.first() {
                    let bill = self.bill_by_id(u64::try_from(int_at(row, 0)?).unwrap_or(0)).await?;
                    return match self.paid_before(&bill, payer, 0).await {
                        Ok(Some(done)) => Ok(done),
                        _ => Err(BillError::AlreadyPaid),
                    };
                }
            }
            let bill = match self.issue(window.bureau_id, &new).await {
                Ok(bill) => bill,
                // The window's amount changed since this person's bill was made: it is theirs.
                Err(BillError::OutBillNoReused) => self.bill(window.bureau_id, &new.out_bill_no).await?,
                Err(e) => return Err(e),
            };
            if bill.status == BillStatus::Paid {
                return match self.paid_before(&bill, payer, 0).await {
                    Ok(Some(done)) => Ok(done),
                    _ => Err(BillError::AlreadyPaid),
                };
            }
            let guards = keys.iter().map(|k| Guard::Absent { table: "contributions", key: contribution_key(k) }).collect();
            let row = ServiceRow { table: "contributions", key: contribution_key(&key), columns: vec![("bill_id", uint(bill.id))], on_conflict: OnConflict::Fail };
            if let Some(result) = self.try_pay_with(&bill, Some(payer), bill.all_items() & !bill.paid_items, true, guards, vec![row]).await? {
                return result;
            }
        }
        Err(BillError::Unavailable("the bill kept changing; retry".into()))
    }

    /// The receipts of payments a resident made, newest first.
    pub async fn receipts_of(&self, resident: &Resident, limit: u32) -> Result<Vec<Receipt>, BillError> {
        let rows = self
            .directory
            .read(
                "SELECT id, receipt, signature FROM bill_payments WHERE payer_resident = ?1 ORDER BY paid_at DESC, id DESC LIMIT ?2",
                vec![uint(resident.id), Value::Int(i64::from(limit.clamp(1, LIST_MAX)))],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let signature: [u8; 64] =
                    citypay_directory::blob_at(row, 2)?.try_into().map_err(|_| DirectoryError::Storage("receipt signature".into()))?;
                Ok(Receipt { number: int_at(row, 0)?.to_string(), text: text_at(row, 1)?, signature })
            })
            .collect()
    }
}
