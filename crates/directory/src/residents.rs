//! Residents: real-name registration (one identity, one wallet), sign-in, and their records.
//! The ID number, name and mobile number are sealed in the vault; they are found by blind
//! index and shown masked.

use citypay_identity::{AccountClass, CivilDate, ResidentId};
use citypay_ledger::{AccountId, Status};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};
use citypay_vault::BlindIndex;

use crate::accounts::{AccountKind, account_id, wallet_account};
use crate::sessions::SignedIn;
use crate::sign_in_limits::SignInFrom;
use crate::tokens::Principal;
use crate::{Directory, DirectoryError, blob, int, text};

/// What a resident registers with.
#[derive(Clone)]
pub struct NewResident {
    /// Home city (GB/T 2260 code).
    pub city: u32,
    /// Legal name.
    pub name: String,
    /// Mobile number (11 digits, optionally +86).
    pub mobile: String,
    /// PRC resident ID number.
    pub id_number: String,
    /// Sign-in password.
    pub password: String,
}

impl std::fmt::Debug for NewResident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewResident").field("city", &self.city).finish_non_exhaustive()
    }
}

/// A registered resident, as anyone but the vault sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resident {
    /// Resident id.
    pub id: u64,
    /// Home city.
    pub city: u32,
    /// Their wallet's ledger account.
    pub wallet: AccountId,
    /// The ID number, masked (`1101**********002X`).
    pub id_masked: String,
    /// Account class.
    pub class: AccountClass,
}

/// The youngest age at which a resident opens a wallet on their own: the Civil Code (arts.
/// 17-19) gives full capacity at 18, or at 16 to one who lives on their own labour income, and
/// Alipay and WeChat Pay let a resident complete real-name verification alone from 16; a
/// younger child's account needs a guardian, which is not built.
pub const REGISTRATION_AGE_MIN: u16 = 16;
/// No living resident is older: the longest verified human life was 122 years.
pub const AGE_MAX: u16 = 122;

const ID_KIND: &str = "resident_id";
const MOBILE_KIND: &str = "mobile";
/// Tries with a fresh random id when the drawn one is taken (vanishingly rare).
const ID_ATTEMPTS_MAX: usize = 3;

/// A blind index as stored: key id then digest, so digests under different keys never meet.
pub(crate) fn index_bytes(index: &BlindIndex) -> Vec<u8> {
    let mut bytes = index.key_id.0.to_be_bytes().to_vec();
    bytes.extend_from_slice(&index.digest);
    bytes
}

/// Mobile numbers as stored: 11 digits starting with 1, without +86 or separators.
fn normalize_mobile(mobile: &str) -> Result<String, DirectoryError> {
    let digits: String = mobile.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = digits.strip_prefix("+86").unwrap_or(&digits).to_owned();
    if digits.len() == 11 && digits.starts_with('1') && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(DirectoryError::InvalidField { field: "mobile", message: "11 digits starting with 1".into() })
    }
}

/// The account a resident's password checks count against: their mobile number.
pub(crate) fn account_subject(mobile: &str) -> String {
    format!("resident:{mobile}")
}

fn check_name(name: &str) -> Result<String, DirectoryError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(DirectoryError::InvalidField { field: "name", message: "1 to 64 characters".into() });
    }
    Ok(name.to_owned())
}

impl Directory {
    /// Today in Asia/Shanghai, by the directory's clock.
    pub fn today(&self) -> CivilDate {
        let date = self.now().local_date();
        let year = u16::try_from(date.year).unwrap_or(u16::MAX);
        CivilDate::new(year, date.month, date.day).unwrap_or_else(|| CivilDate::new(2000, 1, 1).expect("a date"))
    }

    /// Registers a resident under their real name and opens their wallet, atomically, at
    /// account class I: a higher class follows recorded verifications
    /// ([`Directory::record_verification`]). One identity (and one mobile number) has one
    /// wallet.
    pub async fn register_resident(&self, new: &NewResident) -> Result<Resident, DirectoryError> {
        self.register_resident_keeping(new, |_| Vec::new()).await
    }

    /// [`Directory::register_resident`], writing `answer`'s rows for the new resident in the
    /// registration's own transaction: the API keeps its answer to the request there, so a
    /// retry after an outcome that was never heard (a failover mid-commit) gets the first
    /// answer, not "identity registered".
    pub async fn register_resident_keeping(&self, new: &NewResident, answer: impl Fn(&Resident) -> Vec<ServiceRow>) -> Result<Resident, DirectoryError> {
        self.city(new.city).await?;
        let today = self.today();
        let id_number = ResidentId::parse(new.id_number.trim(), today).map_err(|e| DirectoryError::InvalidResidentId(e.to_string()))?;
        let age = id_number.age_on(today);
        if age > AGE_MAX {
            let born = id_number.birth_date();
            return Err(DirectoryError::InvalidResidentId(format!("birth date {born}: no living resident is older than {AGE_MAX}")));
        }
        if age < REGISTRATION_AGE_MIN {
            return Err(DirectoryError::BelowMinimumAge { minimum: REGISTRATION_AGE_MIN });
        }
        let name = check_name(&new.name)?;
        let mobile = normalize_mobile(&new.mobile)?;
        let password_hash = self.passwords.hash(&new.password)?;
        for attempt in 0..ID_ATTEMPTS_MAX {
            let id = self.entity_id_in(new.city, &["resident", id_number.normalized(), &attempt.to_string()]).await?;
            let resident = Resident { id, city: new.city, wallet: account_id(AccountKind::Wallet, id), id_masked: id_number.masked(), class: AccountClass::I };
            let mut command = self.registration(id, new, &id_number, &name, &mobile, &password_hash);
            command.rows.extend(answer(&resident));
            let identity_guards = self.keys.index.ids().len();
            match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => {
                    tracing::debug!(resident = id, city = new.city, "resident registered");
                    return Ok(resident);
                }
                Ok(outcome) => return Err(DirectoryError::Ledger(outcome.status)),
                Err(guard) if guard < identity_guards => {
                    tracing::debug!(city = new.city, "registration refused: the identity is registered");
                    return Err(DirectoryError::IdentityTaken);
                }
                Err(guard) if guard < 2 * identity_guards => {
                    tracing::debug!(city = new.city, "registration refused: the mobile number is registered");
                    return Err(DirectoryError::MobileTaken);
                }
                Err(_) => continue,
            }
        }
        Err(DirectoryError::Unavailable("could not draw a free resident id".into()))
    }

    fn registration(
        &self,
        id: u64,
        new: &NewResident,
        id_number: &ResidentId,
        name: &str,
        mobile: &str,
        password_hash: &str,
    ) -> Command {
        let index = &self.keys.index;
        let mut guards: Vec<Guard> = Vec::new();
        for (kind, column, value) in [(ID_KIND, "identity_index", id_number.normalized()), (MOBILE_KIND, "mobile_index", mobile)] {
            for candidate in index.candidates(kind, value) {
                guards.push(Guard::Absent { table: "residents", key: vec![(column, Value::Blob(index_bytes(&candidate)))] });
            }
        }
        let key = vec![("id", Value::Int(i64::try_from(id).unwrap_or(i64::MAX)))];
        guards.push(Guard::Absent { table: "residents", key: key.clone() });
        let seal = |field: &str, plain: &str| {
            let context = format!("resident:{id}:{field}");
            Value::Blob(self.keys.sealing.seal(plain.as_bytes(), context.as_bytes()).to_bytes())
        };
        let wallet = account_id(AccountKind::Wallet, id);
        let row = ServiceRow {
            table: "residents",
            key,
            columns: vec![
                ("city_code", Value::Int(i64::from(new.city))),
                ("identity_index", Value::Blob(index_bytes(&index.index(ID_KIND, id_number.normalized())))),
                ("mobile_index", Value::Blob(index_bytes(&index.index(MOBILE_KIND, mobile)))),
                ("id_number_sealed", seal("id_number", id_number.normalized())),
                ("name_sealed", seal("name", name)),
                ("mobile_sealed", seal("mobile", mobile)),
                ("id_masked", Value::Text(id_number.masked())),
                ("account_class", Value::Text(AccountClass::I.code().to_owned())),
                ("wallet_account", Value::Int(citypay_store::u64_to_column(wallet))),
                ("password_hash", Value::Text(password_hash.to_owned())),
                ("created_at", Value::Int(i64::try_from(self.now().unix_seconds()).unwrap_or(0))),
            ],
            on_conflict: OnConflict::Fail,
        };
        Command { event: Some(wallet_account(id)), guards, rows: vec![row], always_rows: Vec::new() }
    }

    /// Signs a resident in with mobile number and password, under the sign-in limits: a new
    /// session whose token is valid `ttl_s`.
    pub async fn sign_in_resident(&self, mobile: &str, password: &str, ttl_s: u64, from: &SignInFrom) -> Result<(Resident, SignedIn), DirectoryError> {
        let normalized = normalize_mobile(mobile).ok();
        let mut found = None;
        for candidate in normalized.iter().flat_map(|m| self.keys.index.candidates(MOBILE_KIND, m)) {
            let rows = self
                .read(
                    "SELECT id, city_code, wallet_account, id_masked, account_class, password_hash FROM residents WHERE mobile_index = ?1",
                    vec![Value::Blob(index_bytes(&candidate))],
                )
                .await?;
            if let Some(row) = rows.into_iter().next() {
                found = Some(row);
                break;
            }
        }
        let account = account_subject(normalized.as_deref().unwrap_or(mobile.trim()));
        let stored = found.as_ref().map(|row| text(&row[5])).transpose()?;
        let ticket = self.password_checked(&account, from, stored.as_deref(), password).await?;
        let resident = resident_from_row(found.as_ref().ok_or(DirectoryError::WrongCredentials)?)?;
        let (session, token) = self.open_session(Principal::Resident { id: resident.id, city: resident.city }, ttl_s).await?;
        tracing::debug!(resident = resident.id, "resident signed in");
        Ok((resident, SignedIn { token, session, ticket }))
    }

    /// A resident's record (masked).
    pub async fn resident(&self, id: u64) -> Result<Resident, DirectoryError> {
        let rows = self
            .read(
                "SELECT id, city_code, wallet_account, id_masked, account_class FROM residents WHERE id = ?1",
                vec![Value::Int(i64::try_from(id).unwrap_or(-1))],
            )
            .await?;
        resident_from_row(rows.first().ok_or(DirectoryError::NotFound)?)
    }

    /// What makes `new` unique in the country, as blind indexes under the active key: its ID
    /// number's and its mobile number's (refused as registration refuses them when invalid).
    pub fn uniqueness_keys(&self, new: &NewResident) -> Result<[(&'static str, Vec<u8>); 2], DirectoryError> {
        let id_number = ResidentId::parse(new.id_number.trim(), self.today()).map_err(|e| DirectoryError::InvalidResidentId(e.to_string()))?;
        let mobile = normalize_mobile(&new.mobile)?;
        Ok([(ID_KIND, self.blind_index(ID_KIND, id_number.normalized())), (MOBILE_KIND, self.blind_index(MOBILE_KIND, &mobile))])
    }

    /// A mobile number's key in the country's claims (its blind index under the active key,
    /// as [`Directory::uniqueness_keys`] gives it, with its kind); `None` for a number that is
    /// not a mobile number.
    pub fn mobile_key(&self, mobile: &str) -> Option<(&'static str, Vec<u8>)> {
        let mobile = normalize_mobile(mobile).ok()?;
        Some((MOBILE_KIND, self.blind_index(MOBILE_KIND, &mobile)))
    }

    /// The resident a mobile number reaches, found by blind index (someone sending money), if
    /// registered; `None` for a number that is not a mobile number.
    pub async fn resident_by_mobile(&self, mobile: &str) -> Result<Option<Resident>, DirectoryError> {
        let Ok(mobile) = normalize_mobile(mobile) else { return Ok(None) };
        self.resident_by_index(MOBILE_KIND, &mobile, "SELECT id, city_code, wallet_account, id_masked, account_class FROM residents WHERE mobile_index = ?1").await
    }

    /// The resident found under any key's blind index of `normalized` (of `kind`), by `sql`.
    async fn resident_by_index(&self, kind: &str, normalized: &str, sql: &'static str) -> Result<Option<Resident>, DirectoryError> {
        for candidate in self.keys.index.candidates(kind, normalized) {
            let rows = self.read(sql, vec![Value::Blob(index_bytes(&candidate))]).await?;
            if let Some(row) = rows.first() {
                return resident_from_row(row).map(Some);
            }
        }
        Ok(None)
    }

    /// The resident whose ID number is `id_number`, found by blind index (a biller addressing
    /// a bill by ID number), if registered.
    pub async fn resident_by_id_number(&self, id_number: &str) -> Result<Option<Resident>, DirectoryError> {
        let id_number = ResidentId::parse(id_number.trim(), self.today())
            .map_err(|e| DirectoryError::InvalidResidentId(e.to_string()))?;
        self.resident_by_index(ID_KIND, id_number.normalized(), "SELECT id, city_code, wallet_account, id_masked, account_class FROM residents WHERE identity_index = ?1").await
    }

    /// The blind index under which a PRC ID number is found (as residents store it, under the
    /// active key) and the number masked: how a bill addressed by ID number names its payer
    /// without keeping the number.
    pub fn id_number_key(&self, id_number: &str) -> Result<(Vec<u8>, String), DirectoryError> {
        let id_number = ResidentId::parse(id_number.trim(), self.today())
            .map_err(|e| DirectoryError::InvalidResidentId(e.to_string()))?;
        Ok((index_bytes(&self.keys.index.index(ID_KIND, id_number.normalized())), id_number.masked()))
    }

    /// The blind indexes of a PRC ID number under every index key (while keys rotate).
    pub fn id_number_keys(&self, id_number: &str) -> Result<Vec<Vec<u8>>, DirectoryError> {
        let id_number = ResidentId::parse(id_number.trim(), self.today())
            .map_err(|e| DirectoryError::InvalidResidentId(e.to_string()))?;
        Ok(self.keys.index.candidates(ID_KIND, id_number.normalized()).iter().map(index_bytes).collect())
    }

    /// Every blind index of a resident's own ID number (one per index key, while keys rotate):
    /// what bills addressed to them are found by.
    pub async fn resident_id_keys(&self, id: u64) -> Result<Vec<Vec<u8>>, DirectoryError> {
        let rows = self
            .read("SELECT id_number_sealed FROM residents WHERE id = ?1", vec![Value::Int(i64::try_from(id).unwrap_or(-1))])
            .await?;
        let sealed = blob(&rows.first().ok_or(DirectoryError::NotFound)?[0])?;
        let plain = self.unseal(&sealed, &format!("resident:{id}:id_number"))?;
        let normalized = std::str::from_utf8(plain.expose()).map_err(|_| DirectoryError::Storage("ID number".into()))?;
        Ok(self.keys.index.candidates(ID_KIND, normalized).iter().map(index_bytes).collect())
    }

    /// A resident's legal name and ID number, unsealed: what a bank is asked to confirm as a
    /// card's holder. Personal data: never log it.
    pub async fn resident_identity(&self, id: u64) -> Result<(citypay_vault::Secret<String>, citypay_vault::Secret<String>), DirectoryError> {
        let rows = self
            .read("SELECT id_number_sealed FROM residents WHERE id = ?1", vec![Value::Int(i64::try_from(id).unwrap_or(-1))])
            .await?;
        let sealed = blob(&rows.first().ok_or(DirectoryError::NotFound)?[0])?;
        let plain = self.unseal(&sealed, &format!("resident:{id}:id_number"))?;
        // As registered (normalised then), not checked again: rules added since must not
        // make an existing resident's record unreadable.
        let number = String::from_utf8(plain.expose().clone()).map_err(|_| DirectoryError::Storage("ID number".into()))?;
        Ok((self.resident_name(id).await?, citypay_vault::Secret::new(number)))
    }

    /// The legal name of a resident, unsealed (for a receipt or a KYC officer; never log it).
    pub async fn resident_name(&self, id: u64) -> Result<citypay_vault::Secret<String>, DirectoryError> {
        let rows = self
            .read("SELECT name_sealed FROM residents WHERE id = ?1", vec![Value::Int(i64::try_from(id).unwrap_or(-1))])
            .await?;
        let sealed = blob(&rows.first().ok_or(DirectoryError::NotFound)?[0])?;
        let sealed = citypay_vault::Sealed::from_bytes(&sealed).map_err(|e| DirectoryError::Storage(e.to_string()))?;
        let context = format!("resident:{id}:name");
        let plain = self.keys.sealing.open(&sealed, context.as_bytes()).map_err(|e| DirectoryError::Storage(e.to_string()))?;
        let name = String::from_utf8(plain.expose().clone()).map_err(|_| DirectoryError::Storage("name is not UTF-8".into()))?;
        Ok(citypay_vault::Secret::new(name))
    }
}

fn resident_from_row(row: &[Value]) -> Result<Resident, DirectoryError> {
    let id = u64::try_from(int(&row[0])?).map_err(|_| DirectoryError::Storage("resident id".into()))?;
    let city = u32::try_from(int(&row[1])?).map_err(|_| DirectoryError::Storage("city code".into()))?;
    let class = AccountClass::from_code(&text(&row[4])?).ok_or_else(|| DirectoryError::Storage("account class".into()))?;
    Ok(Resident {
        id,
        city,
        wallet: citypay_store::u64_from_column(int(&row[2])?),
        id_masked: text(&row[3])?,
        class,
    })
}
