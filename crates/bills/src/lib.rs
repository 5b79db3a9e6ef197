//! Public-service bills: a hospital, a school, the social-security bureau or a utility bills a
//! payer it knows by PRC ID number (matched through the identity vault's blind index, never
//! kept in clear), student number or account number. Residents see the bills addressed to them
//! and to family members they have linked, and pay in full or by chosen items from the wallet;
//! cash paid at the biller's counter is recorded against the same bill. A hospital bill's
//! medical-insurance part is paid by the city's insurance fund in the same ledger entry as the
//! patient's part, so both move or neither does. Every payment gets a signed receipt.
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
    /// The ledger refused (insufficient funds in the wallet or the insurance fund, a cap).
    #[error("refused: {0}")]
    Refused(Status),
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
            BillError::Unavailable(_) => "unavailable",
        }
    }
}

/// The blind indexes a resident's bills are found by.
struct PayerKeys {
    /// Their own ID number's (one per index key).
    own: Vec<Vec<u8>>,
    /// The family members' they linked.
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
            Ok(_) => Ok(bill),
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
    /// the family members they linked.
    async fn keys_of(&self, resident: &Resident) -> Result<PayerKeys, BillError> {
        let own = self.directory.resident_id_keys(resident.id).await?;
        let rows = self.directory.read("SELECT payer_key FROM payer_links WHERE resident_id = ?1", vec![uint(resident.id)]).await?;
        let linked = rows.iter().map(|row| citypay_directory::blob_at(row, 0)).collect::<Result<_, _>>()?;
        Ok(PayerKeys { own, linked })
    }

    /// Links a family member's bills to a resident: a relative's ID number, or a child's
    /// student number at a school (`biller_id`), or an account number at a utility.
    pub async fn link_payer(&self, resident: &Resident, payer: &Payer, biller_id: Option<u64>, label: &str) -> Result<String, BillError> {
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
        let row = ServiceRow {
            table: "payer_links",
            key: vec![("resident_id", uint(resident.id)), ("payer_key", Value::Blob(key))],
            columns: vec![
                ("payer_kind", Value::Text(payer.kind.code().to_owned())),
                ("payer_masked", Value::Text(masked.clone())),
                ("label", Value::Text(label.to_owned())),
                ("created_at", uint(self.now_s())),
            ],
            on_conflict: OnConflict::Update,
        };
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| BillError::Unavailable("link".into()))?;
        Ok(masked)
    }

    /// The bills addressed to a resident and to the family members they linked, newest first.
    /// A linked member's bills show what is due but not what it is for: a link needs no consent
    /// yet, so it must not reveal a relative's hospital items.
    pub async fn bills_of(&self, resident: &Resident, limit: u32) -> Result<Vec<Bill>, BillError> {
        let limit = limit.clamp(1, LIST_MAX);
        let keys = self.keys_of(resident).await?;
        let mut bills = Vec::new();
        for (key, own) in keys.own.into_iter().map(|k| (k, true)).chain(keys.linked.into_iter().map(|k| (k, false))) {
            let rows = self.directory.read(bill::SELECT_BY_PAYER, vec![Value::Blob(key), Value::Int(i64::from(limit))]).await?;
            for row in &rows {
                let bill = Bill::from_row(row)?;
                bills.push(if own { bill } else { bill.redacted() });
            }
        }
        bills.sort_by(|a, b| (b.created_at, b.id).cmp(&(a.created_at, a.id)));
        // A key both one's own and linked (one's own number linked) lists its bills once, in full.
        bills.dedup_by_key(|b| b.id);
        bills.truncate(limit as usize);
        Ok(bills)
    }

    /// A bill a resident may see (theirs, or a linked family member's, redacted); else not found.
    pub async fn bill_for(&self, resident: &Resident, bill_id: u64) -> Result<Bill, BillError> {
        let (bill, redact) = self.seen_by(resident, bill_id).await?;
        Ok(if redact { bill.redacted() } else { bill })
    }

    /// A bill in full, and whether `resident` may see it only redacted (a linked member's).
    async fn seen_by(&self, resident: &Resident, bill_id: u64) -> Result<(Bill, bool), BillError> {
        let bill = self.bill_by_id(bill_id).await?;
        let keys = self.keys_of(resident).await?;
        if !keys.contains(&bill.payer_key) {
            return Err(BillError::BillNotFound);
        }
        let redact = !keys.own.contains(&bill.payer_key);
        Ok((bill, redact))
    }

    /// Pays a bill from the resident's wallet: all of it, or (when the payer picks) the items
    /// `items` names (indexes). The fund's part of a hospital bill moves in the same entry.
    /// A linked family member's bill is paid without learning what it is for: the answer and
    /// the receipt show it redacted.
    pub async fn pay(&self, payer: &Resident, bill_id: u64, items: Option<&[usize]>) -> Result<BillPayment, BillError> {
        let (mut bill, redact) = self.seen_by(payer, bill_id).await?;
        let shown = |mut payment: BillPayment| {
            if redact {
                payment.bill = payment.bill.redacted();
            }
            payment
        };
        for _ in 0..CAS_ATTEMPTS_MAX {
            let mask = self.chosen(&bill, items)?;
            if let Some(done) = self.paid_before(&bill, payer, mask).await? {
                return Ok(shown(done));
            }
            if bill.paid_items & mask != 0 {
                return Err(BillError::AlreadyPaid);
            }
            if !bill.late_allowed && self.now_s() > bill.due_at {
                return Err(BillError::Overdue);
            }
            match self.try_pay_with(&bill, Some(payer), mask, redact, Vec::new(), Vec::new()).await? {
                Some(result) => return result.map(shown),
                None => bill = self.bill_by_id(bill_id).await?,
            }
        }
        Err(BillError::Unavailable("the bill kept changing; retry".into()))
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

    /// One attempt: `None` when the bill changed meanwhile.
    async fn try_pay(&self, bill: &Bill, payer: Option<&Resident>, mask: u64) -> Result<Option<Result<BillPayment, BillError>>, BillError> {
        self.try_pay_with(bill, payer, mask, false, Vec::new(), Vec::new()).await
    }

    /// [`Bills::try_pay`] with more guards and rows in the same command.
    async fn try_pay_with(
        &self,
        bill: &Bill,
        payer: Option<&Resident>,
        mask: u64,
        redact: bool,
        guards: Vec<Guard>,
        extra_rows: Vec<ServiceRow>,
    ) -> Result<Option<Result<BillPayment, BillError>>, BillError> {
        let biller = self.directory.merchant(bill.biller_id).await?;
        let amount = bill.amount_of(mask);
        let whole = mask | bill.paid_items == bill.all_items() && bill.paid_items == 0;
        let insured = if whole { bill.insured } else { 0 };
        let method = if payer.is_some() { PaidBy::Wallet } else { PaidBy::Cash };
        let fee = if payer.is_some() { citypay_directory::fee_for(amount, biller.fee_rate_bp) } else { 0 };
        let after = bill.paid(mask);
        let now = self.now_s();
        let payment_id = derived_id(&["bill-payment", &bill.id.to_string(), &bill.version.to_string()]);
        let receipt = self.receipt(payment_id, &biller, &if redact { after.redacted() } else { after.clone() }, mask, amount, insured, method, now);

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
        let rows: Vec<ServiceRow> = [after.payment_row(), payment_row].into_iter().chain(extra_rows).collect();
        // A frozen wallet pays nothing: the writer checks it in the payment's own batch.
        let frozen_guard = payer.map(|p| Directory::wallet_not_frozen(p.id));
        let guards: Vec<Guard> = [bill.version_guard()].into_iter().chain(frozen_guard).chain(guards).collect();
        let payment = BillPayment { id: payment_id, bill: after, items: mask, amount, insured, fee, method, paid_at: now, receipt };
        // The version guard makes a payment happen once. The entry's id is numbered by attempt:
        // the ledger answers a refused id again with its first refusal (a replay), and a refusal
        // (the wallet was short) must not stop a later payment, so a replayed refusal moves on
        // to the next number. The numbers are the same on every run, so replays stay exact.
        for attempt in 0..REFUSALS_MAX {
            let event = self.payment_entry(bill, &biller, payer, amount, insured, fee, attempt);
            let command = Command { event, guards: guards.clone(), rows: rows.clone(), always_rows: Vec::new() };
            return Ok(match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => Some(Ok(payment)),
                Ok(outcome) if outcome.replay => continue,
                Ok(outcome) => Some(Err(BillError::Refused(outcome.status))),
                Err(1) if payer.is_some() => Some(Err(DirectoryError::WalletFrozen.into())),
                Err(_) => None,
            });
        }
        Err(BillError::Unavailable("too many refused attempts at this bill; retry later".into()))
    }

    /// The payment's entry: the payer's part from the wallet (none for cash), the fund's part
    /// from the city's insurance fund, the fee to the platform; all or nothing. `None` when
    /// nothing moves in the ledger (cash for a bill without an insured part).
    #[allow(clippy::too_many_arguments)]
    fn payment_entry(&self, bill: &Bill, biller: &Merchant, payer: Option<&Resident>, amount: i64, insured: i64, fee: i64, attempt: u32) -> Option<Event> {
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

    #[allow(clippy::too_many_arguments)]
    fn receipt(&self, id: u64, biller: &Merchant, bill: &Bill, mask: u64, amount: i64, insured: i64, method: PaidBy, now: u64) -> Receipt {
        let items: Vec<&Item> = bill.items.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, item)| item).collect();
        let at = Timestamp::from_unix_seconds(now);
        let seconds = (now + 8 * 3_600) % 86_400;
        let text = serde_json::json!({
            "receipt_no": id.to_string(),
            "key_id": self.signer.key_id(),
            "issued_by": "citypay",
            "paid_at": format!("{} {:02}:{:02}:{:02} +08:00", at.local_date(), seconds / 3_600, seconds / 60 % 60, seconds % 60),
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

    /// Records cash paid at the biller's counter: exactly what is outstanding. No wallet moves;
    /// the bill is paid and a receipt issued. A bill with an insured part is paid from the
    /// phone, where the patient confirms the claim: a biller alone never moves the fund.
    pub async fn pay_cash(&self, biller_id: u64, out_bill_no: &str, amount: i64) -> Result<BillPayment, BillError> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            let bill = self.bill(biller_id, out_bill_no).await?;
            if bill.status == BillStatus::Paid {
                return Err(BillError::AlreadyPaid);
            }
            if bill.insured > 0 {
                return Err(BillError::InvalidField { field: "amount", message: "an insured bill is paid from the patient's phone".into() });
            }
            if amount != bill.outstanding() {
                return Err(BillError::AmountMismatch(bill.outstanding()));
            }
            let mask = bill.all_items() & !bill.paid_items;
            if let Some(result) = self.try_pay(&bill, None, mask).await? {
                return result;
            }
        }
        Err(BillError::Unavailable("the bill kept changing; retry".into()))
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
        let (payment, payer) = self.payment_and_payer(number).await?;
        if payer != Some(resident.id) && !self.keys_of(resident).await?.own.contains(&payment.bill.payer_key) {
            return Err(BillError::BillNotFound);
        }
        Ok(payment.receipt)
    }

    /// A biller's reconciliation file of a day (CSV): every payment of its bills, by receipt,
    /// with what the platform settles for it (cash stays at the counter).
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
        let mut csv = String::from("receipt_no,out_bill_no,paid_at,method,amount,insured,paid_by_payer,fee,settled\n");
        for row in &rows {
            let method = text_at(row, 3)?;
            let (amount, insured, fee) = (int_at(row, 4)?, int_at(row, 5)?, int_at(row, 6)?);
            // Cash stays at the counter.
            let settled = if method == "cash" { 0 } else { amount - fee };
            csv.push_str(&format!(
                "{},{},{},{method},{amount},{insured},{},{fee},{settled}\n",
                int_at(row, 0)?,
                text_at(row, 1)?,
                int_at(row, 2)?,
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
            Ok(outcome) if outcome.status == Status::Ok => Ok(()),
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
            if let Some(result) = self.try_pay_with(&bill, Some(payer), bill.all_items() & !bill.paid_items, false, guards, vec![row]).await? {
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
