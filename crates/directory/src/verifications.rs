//! How a resident's identity was verified, and the PBOC account class that follows from it.
//! Every wallet opens at class I; each recorded verification can raise the class (never lower
//! it), and the wallet's balance-payment caps rise with it in the same commit.

use citypay_identity::AccountClass;
use citypay_ledger::{Event, SetLimits, Status};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::accounts::{AccountKind, account_id, wallet_limits};
use crate::{Directory, DirectoryError, text};

/// One way a resident's identity was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// A bank confirmed that it issued a card to the resident's name and ID number. Each
    /// issuing bank that confirms is one external channel (it verified the holder itself when
    /// it opened the account).
    BankCard {
        /// The issuer's identification number.
        issuer: String,
    },
    /// An operator checked the resident's ID card in person.
    FaceToFace {
        /// The operator's id.
        operator: u64,
    },
}

/// Channel names as stored.
const BANK_CARD: &str = "bank_card";
const FACE_TO_FACE: &str = "face_to_face";
/// Tries when another verification raised the class at the same time.
const RAISE_ATTEMPTS_MAX: usize = 5;

impl Verification {
    fn channel_and_reference(&self) -> (&'static str, String) {
        match self {
            Verification::BankCard { issuer } => (BANK_CARD, issuer.clone()),
            Verification::FaceToFace { operator } => (FACE_TO_FACE, operator.to_string()),
        }
    }
}

fn resident_key(resident: u64) -> Value {
    Value::Int(i64::try_from(resident).unwrap_or(-1))
}

impl Directory {
    /// The row that records `verification` of `resident` (recording one again changes nothing),
    /// for a service to commit beside its own rows; then call [`Directory::refresh_class`].
    pub fn verification_row(&self, resident: u64, verification: &Verification) -> ServiceRow {
        let (channel, reference) = verification.channel_and_reference();
        ServiceRow {
            table: "resident_verifications",
            key: vec![("resident_id", resident_key(resident)), ("channel", Value::Text(channel.into())), ("reference", Value::Text(reference))],
            columns: vec![("verified_at", Value::Int(i64::try_from(self.now().unix_seconds()).unwrap_or(0)))],
            on_conflict: OnConflict::Ignore,
        }
    }

    /// Records a verification of `resident` and answers their class afterwards.
    pub async fn record_verification(&self, resident: u64, verification: &Verification) -> Result<AccountClass, DirectoryError> {
        let row = self.verification_row(resident, verification);
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| DirectoryError::Unavailable("guard".into()))?;
        self.refresh_class(resident).await
    }

    /// The class `resident`'s recorded verifications earn: (distinct banks that confirmed a card,
    /// whether an operator checked them in person).
    pub async fn earned_class(&self, resident: u64) -> Result<AccountClass, DirectoryError> {
        let rows = self
            .read("SELECT channel, COUNT(*) FROM resident_verifications WHERE resident_id = ?1 GROUP BY channel", vec![resident_key(resident)])
            .await?;
        let (mut banks, mut face_to_face) = (0, false);
        for row in &rows {
            let count = usize::try_from(crate::int(&row[1])?).unwrap_or(0);
            match text(&row[0])?.as_str() {
                BANK_CARD => banks = count,
                FACE_TO_FACE => face_to_face = count > 0,
                _ => {}
            }
        }
        Ok(AccountClass::for_verifications(banks, face_to_face))
    }

    /// Raises `resident`'s class to what their verifications earn, with their wallet's caps in
    /// the same commit, and answers the class. A class never falls. A compare-and-swap on the
    /// stored class keeps two verifications recorded at once from lowering it.
    pub async fn refresh_class(&self, resident: u64) -> Result<AccountClass, DirectoryError> {
        for _ in 0..RAISE_ATTEMPTS_MAX {
            let current = self.resident(resident).await?.class;
            let earned = self.earned_class(resident).await?;
            if earned <= current {
                return Ok(current);
            }
            let key = vec![("id", resident_key(resident))];
            let wallet = account_id(AccountKind::Wallet, resident);
            let command = Command {
                event: Some(Event::SetLimits(SetLimits { account: wallet, limits: wallet_limits(earned) })),
                guards: vec![Guard::Matches { table: "residents", key: key.clone(), expect: vec![("account_class", Value::Text(current.code().into()))] }],
                rows: vec![ServiceRow {
                    table: "residents",
                    key,
                    columns: vec![("account_class", Value::Text(earned.code().into()))],
                    on_conflict: OnConflict::UpdateOnly,
                }],
                always_rows: Vec::new(),
            };
            match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => return Ok(earned),
                Ok(outcome) => return Err(DirectoryError::Ledger(outcome.status)),
                Err(_) => continue,
            }
        }
        Err(DirectoryError::Unavailable("the account class changed under us; retry".into()))
    }
}

impl Directory {
    /// An operator's in-person check of a resident's ID card, recorded as a face-to-face
    /// verification: the resident registered under `id_number` must have the name on the card.
    /// A city operator (`operator_city`) checks residents of their own city only; others are
    /// not found. Answers the resident and their class afterwards.
    pub async fn verify_in_person(
        &self,
        operator: u64,
        operator_city: Option<u32>,
        id_number: &str,
        name: &str,
    ) -> Result<(crate::Resident, AccountClass), DirectoryError> {
        let resident = self.resident_by_id_number(id_number).await?.ok_or(DirectoryError::NotFound)?;
        if operator_city.is_some_and(|city| city != resident.city) {
            return Err(DirectoryError::NotFound);
        }
        let registered = self.resident_name(resident.id).await?;
        if registered.expose().as_str() != name.trim() {
            return Err(DirectoryError::IdentityMismatch);
        }
        let class = self.record_verification(resident.id, &Verification::FaceToFace { operator }).await?;
        Ok((crate::Resident { class, ..resident }, class))
    }
}

/// A wallet's balance-payment cap at its class, and what is left of it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassCap {
    /// The wallet's class.
    pub class: AccountClass,
    /// Over which period the cap counts.
    pub window: citypay_identity::LimitWindow,
    /// The cap, in fen.
    pub limit_fen: i64,
    /// What is left of it now, in fen.
    pub left_fen: i64,
}

impl std::fmt::Display for ClassCap {
    /// "class I wallets pay at most 1000.00 yuan from the balance since opening; 12.34 yuan left".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yuan = |fen: i64| format!("{}.{:02}", fen / 100, fen % 100);
        let window = match self.window {
            citypay_identity::LimitWindow::SinceOpening => "since the account opened",
            citypay_identity::LimitWindow::Year => "a calendar year",
        };
        write!(
            f,
            "class {} wallets pay at most {} yuan from the balance {window}; {} yuan left (cards of more banks, or an ID card checked in person, raise the class)",
            self.class,
            yuan(self.limit_fen),
            yuan(self.left_fen.max(0)),
        )
    }
}

impl Directory {
    /// The cap on `resident`'s balance payments that binds first now, and what is left of it:
    /// what a refusal at the class limit tells the resident.
    pub async fn class_cap(&self, resident: u64) -> Result<Option<ClassCap>, DirectoryError> {
        let resident = self.resident(resident).await?;
        let account = self.shard().account(resident.wallet).await.map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        let Some(account) = account else { return Ok(None) };
        let now = self.now();
        let tightest = account
            .limits
            .window_caps
            .iter()
            .zip(&account.usage)
            .filter_map(|(cap, usage)| {
                let cap = cap.as_ref()?;
                let used = if usage.window == cap.window.key(now) { usage.used } else { 0 };
                Some((cap, cap.amount_max - used))
            })
            .min_by_key(|(_, left)| *left);
        Ok(tightest.map(|(cap, left)| ClassCap {
            class: resident.class,
            window: match cap.window {
                citypay_ledger::Window::Lifetime => citypay_identity::LimitWindow::SinceOpening,
                _ => citypay_identity::LimitWindow::Year,
            },
            limit_fen: cap.amount_max,
            left_fen: left,
        }))
    }
}
