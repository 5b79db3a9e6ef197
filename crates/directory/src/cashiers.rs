//! A merchant's cashiers: a credential the merchant makes for each person at its tills, never
//! its API secret. A plain cashier refunds up to the limit the merchant set; a manager refunds
//! any amount and downloads the settlement file. A cashier signs in at the till with their
//! 8-digit cashier number and password, under the sign-in limits; a disabled cashier's
//! sessions end at once and they cannot sign in again.

use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::sessions::SignedIn;
use crate::sign_in_limits::SignInFrom;
use crate::tokens::Principal;
use crate::{Directory, DirectoryError, int, text, uint};

/// Most cashiers per merchant.
pub const CASHIERS_MAX: usize = 1_000;

/// What a cashier may do at the till.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TillRole {
    /// Takes payments and cash; refunds up to the merchant's limit.
    Cashier,
    /// Also refunds any amount and downloads the settlement file.
    Manager,
}

impl TillRole {
    /// Stable text code.
    pub const fn code(self) -> &'static str {
        match self {
            TillRole::Cashier => "cashier",
            TillRole::Manager => "manager",
        }
    }

    /// Inverse of [`TillRole::code`].
    pub fn from_code(code: &str) -> Option<TillRole> {
        match code {
            "cashier" => Some(TillRole::Cashier),
            "manager" => Some(TillRole::Manager),
            _ => None,
        }
    }
}

/// A cashier's record (never their password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cashier {
    /// The 8-digit cashier number they sign in with.
    pub id: u64,
    /// Whose till.
    pub merchant: u64,
    /// Their name, as the till and the merchant's records show it.
    pub name: String,
    /// Cashier or manager.
    pub role: TillRole,
    /// The largest refund a plain cashier may make, in fen (managers have none).
    pub refund_limit: i64,
    /// Unix seconds.
    pub created_at: u64,
    /// Whether the merchant disabled the credential.
    pub disabled: bool,
}

/// `SELECT` a cashier's columns (`directory.read` takes static SQL), then `$tail`.
macro_rules! select_cashiers {
    ($extra:literal, $tail:literal) => {
        concat!("SELECT id, merchant_id, name, role, refund_limit, created_at, disabled_at", $extra, " FROM cashiers ", $tail)
    };
}

fn cashier_from_row(row: &[Value]) -> Result<Cashier, DirectoryError> {
    let bad = |what: &str| DirectoryError::Storage(format!("cashier row: {what}"));
    let unsigned = |i: usize| int(&row[i]).and_then(|v| u64::try_from(v).map_err(|_| bad("negative")));
    Ok(Cashier {
        id: unsigned(0)?,
        merchant: unsigned(1)?,
        name: text(&row[2])?,
        role: TillRole::from_code(&text(&row[3])?).ok_or_else(|| bad("role"))?,
        refund_limit: int(&row[4])?,
        created_at: unsigned(5)?,
        disabled: !matches!(row[6], Value::Null),
    })
}

fn check_name(name: &str) -> Result<String, DirectoryError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(DirectoryError::InvalidField { field: "name", message: "1 to 64 characters, none of them control characters".into() });
    }
    Ok(name.to_owned())
}

fn check_limit(refund_limit: i64) -> Result<i64, DirectoryError> {
    if !(0..=100_000_000).contains(&refund_limit) {
        return Err(DirectoryError::InvalidField { field: "refund_limit", message: "0 to 1,000,000.00 yuan, in fen".into() });
    }
    Ok(refund_limit)
}

impl Directory {
    /// Makes a cashier credential for `merchant`.
    pub async fn create_cashier(&self, merchant: u64, name: &str, role: TillRole, refund_limit: i64, password: &str) -> Result<Cashier, DirectoryError> {
        let name = check_name(name)?;
        let refund_limit = check_limit(refund_limit)?;
        if self.cashiers(merchant).await?.len() >= CASHIERS_MAX {
            return Err(DirectoryError::InvalidField { field: "merchant", message: format!("at most {CASHIERS_MAX} cashiers per merchant") });
        }
        let hash = self.passwords.hash(password)?;
        let now = self.now().unix_seconds();
        for attempt in 0..5 {
            let drawn = u64::from_le_bytes(self.draw(&["cashier", &merchant.to_string(), &name, &now.to_string(), &attempt.to_string()]));
            let id = 10_000_000 + drawn % 90_000_000;
            let key = vec![("id", uint(id))];
            let row = ServiceRow {
                table: "cashiers",
                key: key.clone(),
                columns: vec![
                    ("merchant_id", uint(merchant)),
                    ("name", Value::Text(name.clone())),
                    ("role", Value::Text(role.code().to_owned())),
                    ("refund_limit", Value::Int(refund_limit)),
                    ("password_hash", Value::Text(hash.clone())),
                    ("created_at", uint(now)),
                    ("disabled_at", Value::Null),
                ],
                on_conflict: OnConflict::Fail,
            };
            let command = Command { event: None, guards: vec![Guard::Absent { table: "cashiers", key }], rows: vec![row], always_rows: Vec::new() };
            if self.submit(command).await?.is_ok() {
                tracing::debug!(merchant, cashier = id, role = role.code(), "cashier created");
                return Ok(Cashier { id, merchant, name, role, refund_limit, created_at: now, disabled: false });
            }
        }
        Err(DirectoryError::Unavailable("could not draw a free cashier number".into()))
    }

    /// A merchant's cashiers, oldest first.
    pub async fn cashiers(&self, merchant: u64) -> Result<Vec<Cashier>, DirectoryError> {
        let rows = self.read(select_cashiers!("", "WHERE merchant_id = ?1 ORDER BY created_at, id"), vec![uint(merchant)]).await?;
        rows.iter().map(|row| cashier_from_row(row)).collect()
    }

    /// One cashier.
    pub async fn cashier(&self, id: u64) -> Result<Cashier, DirectoryError> {
        let rows = self.read(select_cashiers!("", "WHERE id = ?1"), vec![uint(id)]).await?;
        cashier_from_row(rows.first().ok_or(DirectoryError::NotFound)?)
    }

    /// Changes a cashier of `merchant`: their refund limit, or whether they are disabled.
    /// Disabling ends every session of theirs.
    pub async fn update_cashier(&self, merchant: u64, id: u64, refund_limit: Option<i64>, disabled: Option<bool>) -> Result<Cashier, DirectoryError> {
        let current = self.cashier(id).await.ok().filter(|c| c.merchant == merchant).ok_or(DirectoryError::NotFound)?;
        let mut columns = Vec::new();
        if let Some(limit) = refund_limit {
            columns.push(("refund_limit", Value::Int(check_limit(limit)?)));
        }
        match disabled {
            Some(true) if !current.disabled => columns.push(("disabled_at", uint(self.now().unix_seconds()))),
            Some(false) => columns.push(("disabled_at", Value::Null)),
            _ => {}
        }
        if !columns.is_empty() {
            let key = vec![("id", uint(id))];
            let row = ServiceRow { table: "cashiers", key: key.clone(), columns, on_conflict: OnConflict::UpdateOnly };
            let guard = Guard::Matches { table: "cashiers", key, expect: vec![("merchant_id", uint(merchant))] };
            self.submit(Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await?.map_err(|_| DirectoryError::NotFound)?;
        }
        if disabled == Some(true) {
            self.end_other_sessions(Principal::Cashier { id, merchant }, "").await?;
        }
        self.cashier(id).await
    }

    /// Signs a cashier in, under the sign-in limits: a new session whose token is valid
    /// `ttl_s` seconds. A disabled cashier is refused as a wrong password would be.
    pub async fn sign_in_cashier(&self, cashier_number: &str, password: &str, ttl_s: u64, from: &SignInFrom) -> Result<(Cashier, SignedIn), DirectoryError> {
        let number = cashier_number.trim();
        let id = number.parse::<u64>().ok().filter(|id| (10_000_000..100_000_000).contains(id));
        let rows = match id {
            Some(id) => self.read(select_cashiers!(", password_hash", "WHERE id = ?1"), vec![uint(id)]).await?,
            None => Vec::new(),
        };
        let stored = rows.first().filter(|row| matches!(row[6], Value::Null)).map(|row| text(&row[7])).transpose()?;
        let ticket = self.password_checked(&format!("cashier:{number}"), from, stored.as_deref(), password).await?;
        let cashier = cashier_from_row(rows.first().ok_or(DirectoryError::WrongCredentials)?)?;
        let (session, token) = self.open_session(Principal::Cashier { id: cashier.id, merchant: cashier.merchant }, ttl_s).await?;
        tracing::debug!(merchant = cashier.merchant, cashier = cashier.id, "cashier signed in");
        Ok((cashier, SignedIn { token, session, ticket }))
    }
}
