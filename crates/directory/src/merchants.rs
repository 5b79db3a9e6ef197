//! Merchants and billers: onboarding (USCC, MCC, category, settlement account), their ledger
//! account, and API keys (stored hashed, with a key id, rotatable).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use citypay_identity::Uscc;
use citypay_ledger::{AccountId, Status};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};
use citypay_vault::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::accounts::{AccountKind, account_id, merchant_account};
use crate::{Directory, DirectoryError, blob, int, text};

/// What a merchant or biller does, for fees and for the city's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// Shops.
    Retail,
    /// Restaurants.
    Restaurant,
    /// Bus and metro operators.
    Transit,
    /// Hospitals.
    Hospital,
    /// Schools.
    School,
    /// The social-security bureau.
    SocialSecurity,
    /// Water, power, gas.
    Utility,
    /// Anything else.
    Other,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 8] = [
        Category::Retail,
        Category::Restaurant,
        Category::Transit,
        Category::Hospital,
        Category::School,
        Category::SocialSecurity,
        Category::Utility,
        Category::Other,
    ];

    /// Stable snake_case code.
    pub const fn code(self) -> &'static str {
        match self {
            Category::Retail => "retail",
            Category::Restaurant => "restaurant",
            Category::Transit => "transit",
            Category::Hospital => "hospital",
            Category::School => "school",
            Category::SocialSecurity => "social_security",
            Category::Utility => "utility",
            Category::Other => "other",
        }
    }

    /// Inverse of [`Category::code`].
    pub fn from_code(code: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// How long a valid API key is served from the cache.
pub const API_KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// Most API keys cached; past it, expired entries are dropped.
const API_KEY_CACHE_MAX: usize = 100_000;

/// How long a merchant's record is served from the cache.
pub const MERCHANT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// What a merchant is onboarded with.
#[derive(Clone, Debug)]
pub struct NewMerchant {
    /// City where it trades.
    pub city: u32,
    /// Trading name.
    pub name: String,
    /// Unified Social Credit Code.
    pub uscc: String,
    /// ISO 18245 merchant category code (4 digits).
    pub mcc: String,
    /// Category.
    pub category: Category,
    /// Bank account number that settlements are paid to.
    pub settlement_account: String,
    /// Where signed notifications go.
    pub notify_url: Option<String>,
}

/// An onboarded merchant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    /// Merchant id.
    pub id: u64,
    /// City.
    pub city: u32,
    /// Trading name.
    pub name: String,
    /// Unified Social Credit Code.
    pub uscc: String,
    /// Merchant category code.
    pub mcc: String,
    /// Category.
    pub category: Category,
    /// Its ledger account.
    pub account: AccountId,
    /// The settlement bank account, masked.
    pub settlement_account_masked: String,
    /// Notification URL.
    pub notify_url: Option<String>,
    /// Its category's fee rate now, in basis points.
    pub fee_rate_bp: u32,
}

/// An API key as issued: shown once; only a hash of the secret is stored.
#[derive(Debug)]
pub struct MerchantCredentials {
    /// Public key id, e.g. `mk_3f2a...`.
    pub key_id: String,
    /// The secret, for the `Authorization` header.
    pub secret: Secret<String>,
    /// At onboarding: the secret that signs the merchant's notifications (HMAC-SHA256).
    pub webhook_secret: Option<Secret<String>>,
}

fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn mask_account(account: &str) -> String {
    let digits: Vec<char> = account.chars().collect();
    let keep = digits.len().min(4);
    let hidden = digits.len() - keep;
    "*".repeat(hidden) + &digits[hidden..].iter().collect::<String>()
}

fn check_new(new: &NewMerchant) -> Result<Uscc, DirectoryError> {
    let uscc = Uscc::parse(new.uscc.trim()).map_err(|e| DirectoryError::InvalidUscc(e.to_string()))?;
    let name_ok = !new.name.trim().is_empty() && new.name.trim().chars().count() <= 64;
    if !name_ok {
        return Err(DirectoryError::InvalidField { field: "name", message: "1 to 64 characters".into() });
    }
    if new.mcc.len() != 4 || !new.mcc.chars().all(|c| c.is_ascii_digit()) {
        return Err(DirectoryError::InvalidField { field: "mcc", message: "4 digits (ISO 18245)".into() });
    }
    let account = &new.settlement_account;
    if !(8..=34).contains(&account.len()) || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(DirectoryError::InvalidField { field: "settlement_account", message: "8 to 34 letters or digits".into() });
    }
    if let Some(url) = &new.notify_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(DirectoryError::InvalidField { field: "notify_url", message: "an http(s) URL".into() });
    }
    Ok(uscc)
}

impl Directory {
    /// Onboards a merchant, opens its ledger account and issues its first API key.
    pub async fn onboard_merchant(&self, new: &NewMerchant) -> Result<(Merchant, MerchantCredentials), DirectoryError> {
        let uscc = check_new(new)?;
        self.city(new.city).await?;
        let fee_rate_bp = self.fee_rate(new.category).await?;
        let id = self.entity_id_in(new.city, &["merchant", uscc.as_str()]).await?;
        let key = vec![("id", Value::Int(i64::try_from(id).unwrap_or(i64::MAX)))];
        let context = format!("merchant:{id}:settlement_account");
        let sealed = self.keys.sealing.seal(new.settlement_account.as_bytes(), context.as_bytes()).to_bytes();
        let merchant = Merchant {
            id,
            city: new.city,
            name: new.name.trim().to_owned(),
            uscc: uscc.as_str().to_owned(),
            mcc: new.mcc.clone(),
            category: new.category,
            account: account_id(AccountKind::Merchant, id),
            settlement_account_masked: mask_account(&new.settlement_account),
            notify_url: new.notify_url.clone(),
            fee_rate_bp,
        };
        let row = ServiceRow {
            table: "merchants",
            key: key.clone(),
            columns: vec![
                ("city_code", Value::Int(i64::from(new.city))),
                ("name", Value::Text(merchant.name.clone())),
                ("uscc", Value::Text(merchant.uscc.clone())),
                ("mcc", Value::Text(merchant.mcc.clone())),
                ("category", Value::Text(new.category.code().to_owned())),
                ("settlement_account_sealed", Value::Blob(sealed)),
                ("settlement_account_masked", Value::Text(merchant.settlement_account_masked.clone())),
                ("account", Value::Int(citypay_store::u64_to_column(merchant.account))),
                ("notify_url", merchant.notify_url.clone().map_or(Value::Null, Value::Text)),
                ("created_at", Value::Int(i64::try_from(self.now().unix_seconds()).unwrap_or(0))),
            ],
            on_conflict: OnConflict::Fail,
        };
        let (mut credentials, key_row) = self.new_api_key(id, "first");
        let webhook_secret = format!("whsec_{}", URL_SAFE_NO_PAD.encode(self.draw::<32>(&["webhook-secret", uscc.as_str()])));
        let webhook_context = format!("merchant:{id}:webhook_secret");
        let mut row = row;
        row.columns.push((
            "webhook_secret_sealed",
            Value::Blob(self.keys.sealing.seal(webhook_secret.as_bytes(), webhook_context.as_bytes()).to_bytes()),
        ));
        credentials.webhook_secret = Some(Secret::new(webhook_secret));
        let command = Command {
            event: Some(merchant_account(id)),
            guards: vec![
                Guard::Absent { table: "merchants", key: vec![("uscc", Value::Text(merchant.uscc.clone()))] },
                Guard::Absent { table: "merchants", key },
            ],
            rows: vec![row, key_row],
            always_rows: Vec::new(),
        };
        match self.submit(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(merchant = merchant.id, city = merchant.city, category = merchant.category.code(), "merchant onboarded");
                Ok((merchant, credentials))
            }
            Ok(outcome) => Err(DirectoryError::Ledger(outcome.status)),
            Err(0) => Err(DirectoryError::MerchantExists),
            Err(_) => Err(DirectoryError::Unavailable("merchant id taken; retry".into())),
        }
    }

    /// A new API key; `nth` tells a seeded draw which of the merchant's keys this is.
    fn new_api_key(&self, merchant: u64, nth: &str) -> (MerchantCredentials, ServiceRow) {
        let merchant_text = merchant.to_string();
        let key_id = format!("mk_{}", URL_SAFE_NO_PAD.encode(self.draw::<12>(&["api-key-id", &merchant_text, nth])));
        let secret = format!("sk_{}", URL_SAFE_NO_PAD.encode(self.draw::<32>(&["api-key-secret", &merchant_text, nth])));
        let row = ServiceRow {
            table: "api_keys",
            key: vec![("key_id", Value::Text(key_id.clone()))],
            columns: vec![
                ("merchant_id", Value::Int(i64::try_from(merchant).unwrap_or(i64::MAX))),
                ("secret_hash", Value::Blob(secret_hash(&secret))),
                ("created_at", Value::Int(i64::try_from(self.now().unix_seconds()).unwrap_or(0))),
                ("revoked_at", Value::Null),
            ],
            on_conflict: OnConflict::Fail,
        };
        (MerchantCredentials { key_id, secret: Secret::new(secret), webhook_secret: None }, row)
    }

    /// Issues another API key for a merchant (rotation: both work until the old is revoked).
    pub async fn issue_api_key(&self, merchant: u64) -> Result<MerchantCredentials, DirectoryError> {
        self.merchant(merchant).await?;
        let (credentials, row) = self.new_api_key(merchant, &self.now().0.to_string());
        let command = Command {
            event: None,
            guards: vec![Guard::Absent { table: "api_keys", key: row.key.clone() }],
            rows: vec![row],
            always_rows: Vec::new(),
        };
        match self.submit(command).await? {
            Ok(_) => Ok(credentials),
            Err(_) => Err(DirectoryError::Unavailable("key id taken; retry".into())),
        }
    }

    /// Revokes an API key of `merchant`.
    pub async fn revoke_api_key(&self, merchant: u64, key_id: &str) -> Result<(), DirectoryError> {
        let key = vec![("key_id", Value::Text(key_id.to_owned()))];
        let owner = Value::Int(i64::try_from(merchant).unwrap_or(-1));
        let command = Command {
            event: None,
            guards: vec![Guard::Matches { table: "api_keys", key: key.clone(), expect: vec![("merchant_id", owner)] }],
            rows: vec![ServiceRow {
                table: "api_keys",
                key,
                columns: vec![("revoked_at", Value::Int(i64::try_from(self.now().unix_seconds()).unwrap_or(0)))],
                on_conflict: OnConflict::UpdateOnly,
            }],
            always_rows: Vec::new(),
        };
        let revoked = match self.submit(command).await? {
            Ok(_) => Ok(()),
            Err(_) => Err(DirectoryError::NotFound),
        };
        if let Ok(mut cache) = self.api_keys.write() {
            cache.remove(key_id);
        }
        revoked
    }

    /// The merchant whose API key this is, if the key exists, is not revoked and the secret
    /// matches (compared in constant time).
    /// A key's row is served from a cache for [`API_KEY_CACHE_TTL`] after each read: revoking
    /// it takes effect at once on this server, within that time on the others.
    pub async fn authenticate_api_key(&self, key_id: &str, secret: &str) -> Result<u64, DirectoryError> {
        let hash = secret_hash(secret);
        let cached = self.api_keys.read().ok().and_then(|cache| cache.get(key_id).filter(|(_, _, at)| at.elapsed() < API_KEY_CACHE_TTL).cloned());
        let (merchant, stored) = match cached {
            Some((merchant, stored, _)) => (merchant, stored),
            None => {
                let rows = self
                    .read(
                        "SELECT merchant_id, secret_hash FROM api_keys WHERE key_id = ?1 AND revoked_at IS NULL",
                        vec![Value::Text(key_id.to_owned())],
                    )
                    .await?;
                let row = rows.first().ok_or(DirectoryError::WrongCredentials)?;
                let merchant = u64::try_from(int(&row[0])?).map_err(|_| DirectoryError::Storage("merchant id".into()))?;
                let stored = blob(&row[1])?;
                // Kept as read (valid or not: the secret is checked on every call).
                if let Ok(mut cache) = self.api_keys.write() {
                    if cache.len() >= API_KEY_CACHE_MAX {
                        cache.retain(|_, (_, _, at)| at.elapsed() < API_KEY_CACHE_TTL);
                    }
                    cache.insert(key_id.to_owned(), (merchant, stored.clone(), std::time::Instant::now()));
                }
                (merchant, stored)
            }
        };
        if !bool::from(stored.as_slice().ct_eq(&hash)) {
            return Err(DirectoryError::WrongCredentials);
        }
        Ok(merchant)
    }

    /// The secret that signs a merchant's notifications, unsealed (never log it).
    pub async fn webhook_secret(&self, merchant: u64) -> Result<Secret<String>, DirectoryError> {
        self.unsealed_text(merchant, "SELECT webhook_secret_sealed FROM merchants WHERE id = ?1", "webhook_secret").await
    }

    /// The bank account a merchant's settlements are paid to, unsealed (never log it).
    pub async fn settlement_account(&self, merchant: u64) -> Result<Secret<String>, DirectoryError> {
        self.unsealed_text(merchant, "SELECT settlement_account_sealed FROM merchants WHERE id = ?1", "settlement_account").await
    }

    async fn unsealed_text(&self, merchant: u64, sql: &'static str, field: &str) -> Result<Secret<String>, DirectoryError> {
        let rows = self.read(sql, vec![Value::Int(i64::try_from(merchant).unwrap_or(-1))]).await?;
        let sealed = blob(rows.first().and_then(|r| r.first()).ok_or(DirectoryError::NotFound)?)?;
        let plain = self.unseal(&sealed, &format!("merchant:{merchant}:{field}"))?;
        let text = String::from_utf8(plain.expose().clone()).map_err(|_| DirectoryError::Storage(field.to_owned()))?;
        Ok(Secret::new(text))
    }

    /// A merchant's record, from a cache kept for [`MERCHANT_CACHE_TTL`] (so a fee-rate change
    /// reaches other servers within it; this server's cache is cleared at once).
    pub async fn merchant(&self, id: u64) -> Result<Merchant, DirectoryError> {
        if let Ok(cache) = self.merchants.read()
            && let Some((merchant, read_at)) = cache.get(&id)
            && read_at.elapsed() < MERCHANT_CACHE_TTL
        {
            return Ok(merchant.clone());
        }
        let merchant = self.merchant_uncached(id).await?;
        if let Ok(mut cache) = self.merchants.write() {
            cache.insert(id, (merchant.clone(), std::time::Instant::now()));
        }
        Ok(merchant)
    }

    pub(crate) fn forget_merchants(&self) {
        if let Ok(mut cache) = self.merchants.write() {
            cache.clear();
        }
    }

    async fn merchant_uncached(&self, id: u64) -> Result<Merchant, DirectoryError> {
        let rows = self
            .read(
                "SELECT id, city_code, name, uscc, mcc, category, account, settlement_account_masked, notify_url,
                    COALESCE((SELECT rate_bp FROM fee_rates WHERE fee_rates.category = merchants.category), 0)
                 FROM merchants WHERE id = ?1",
                vec![Value::Int(i64::try_from(id).unwrap_or(-1))],
            )
            .await?;
        let row = rows.first().ok_or(DirectoryError::NotFound)?;
        Ok(Merchant {
            id,
            city: u32::try_from(int(&row[1])?).map_err(|_| DirectoryError::Storage("city".into()))?,
            name: text(&row[2])?,
            uscc: text(&row[3])?,
            mcc: text(&row[4])?,
            category: Category::from_code(&text(&row[5])?).ok_or_else(|| DirectoryError::Storage("category".into()))?,
            account: citypay_store::u64_from_column(int(&row[6])?),
            settlement_account_masked: text(&row[7])?,
            notify_url: match &row[8] {
                Value::Null => None,
                v => Some(text(v)?),
            },
            fee_rate_bp: u32::try_from(int(&row[9])?).map_err(|_| DirectoryError::Storage("fee rate".into()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlement_accounts_are_masked() {
        assert_eq!(mask_account("6222020200112233446"), "***************3446");
        assert_eq!(mask_account("123"), "123");
    }
}
