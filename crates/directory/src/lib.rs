//! Who is who in a city: cities, residents (their real names in the identity vault), merchants,
//! operators, their ledger accounts, sign-in, and the bank behind top-ups and withdrawals.
//!
//! Every write goes through the shard writer as a [`Command`]: a ledger event (opening an
//! account) with guards that keep identities unique, and the directory's own rows, so a
//! resident and their wallet appear together or not at all. Reads go through a
//! [`ServiceReader`].

mod accounts;
mod bank;
mod cashiers;
mod cities;
mod error;
mod fees;
mod gateway_apps;
mod merchants;
mod operators;
mod passwords;
mod residents;
mod schema;
mod sessions;
mod sign_in_limits;
mod tokens;
pub mod transfer_codes;
mod verifications;

use std::sync::Arc;

use citypay_shard::{Clock, Command, ShardHandle, SubmitError};
use citypay_store::{ServiceReader, Value};
use citypay_vault::{IndexKeys, SealingKeys};

pub use accounts::{AccountKind, BALANCE_PAYMENT, PlatformAccounts, SANDBOX_BANK, account_id, entity_of};
pub use bank::{BankConnector, BankError, BankReceipt, CardHolder, CardIssuedToAnother, HolderConfirmed, SandboxBank};
pub use cashiers::{CASHIERS_MAX, Cashier, TillRole};
pub use cities::{City, PRESET_CITIES};
pub use error::DirectoryError;
pub use fees::{RATE_MAX_BP, fee_for, fee_returned};
pub use gateway_apps::{GATEWAY_APP_CACHE_TTL, GATEWAY_APPS_MAX, GatewayApp, GatewayAppChange, app_id_in, bucket_of_app};
pub use merchants::{API_KEY_CACHE_TTL, Category, MERCHANT_CACHE_TTL, Merchant, MerchantCredentials, NewMerchant};
pub use operators::{Operator, Role};
pub use passwords::PasswordPolicy;
pub use residents::{AGE_MAX, NewResident, REGISTRATION_AGE_MIN, Resident};
pub use schema::MIGRATIONS;
pub use sessions::{SESSION_CACHE_TTL, SessionInfo, SignedIn};
pub use sign_in_limits::{ACCOUNT_FAILURES_MAX, ADDRESS_FAILURES_MAX, CLIENT_FAILURES_MAX, SIGN_IN_WINDOW_S, SignInFrom, TICKET_TTL_S};
pub use tokens::{Principal, TokenKeys};
pub use verifications::{ClassCap, Verification};
pub use citypay_vault::{Secret, hex};

/// The directory's keys: the vault's sealing and index keys and the token key.
#[derive(Debug)]
pub struct DirectoryKeys {
    /// Seals personal data at rest.
    pub sealing: SealingKeys,
    /// Blind indexes to find records by ID number or mobile without decrypting.
    pub index: IndexKeys,
    /// Signs the residents' and operators' bearer tokens and known-client tickets.
    pub tokens: TokenKeys,
}

/// The directory service. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    shard: ShardHandle,
    reader: Arc<dyn ServiceReader>,
    keys: Arc<DirectoryKeys>,
    clock: Arc<dyn Clock + Sync>,
    passwords: PasswordPolicy,
    entropy: Entropy,
    /// Merchants as recently read: every payment reads its merchant, which rarely changes.
    merchants: Arc<std::sync::RwLock<std::collections::HashMap<u64, (Merchant, std::time::Instant)>>>,
    /// API keys checked lately: key id → (merchant, secret hash, when read).
    api_keys: Arc<std::sync::RwLock<std::collections::HashMap<String, (u64, Vec<u8>, std::time::Instant)>>>,
    /// Sessions checked lately: session id → (live, when read).
    sessions: Arc<std::sync::RwLock<std::collections::HashMap<String, (bool, std::time::Instant)>>>,
    /// Gateway apps read lately: app id → (the app, or none such; when read).
    gateway_apps: Arc<std::sync::RwLock<std::collections::HashMap<u64, (Option<GatewayApp>, std::time::Instant)>>>,
    /// Cities as read (they never change).
    cities: Arc<std::sync::RwLock<std::collections::HashMap<u32, City>>>,
}

/// Where new ids and secrets come from: the OS, or (in a seeded simulation only) a keyed hash
/// of the seed and what the value is for, so the same seed builds the same city.
#[derive(Clone)]
enum Entropy {
    Os,
    Seeded(Arc<[u8; 32]>),
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory over a running shard (whose store was opened with [`MIGRATIONS`]) and a
    /// reader of the same database.
    pub fn new(
        shard: ShardHandle,
        reader: Arc<dyn ServiceReader>,
        keys: DirectoryKeys,
        clock: Arc<dyn Clock + Sync>,
        passwords: PasswordPolicy,
    ) -> Directory {
        Directory { shard, reader, keys: Arc::new(keys), clock, passwords, entropy: Entropy::Os, merchants: Arc::default(), api_keys: Arc::default(), sessions: Arc::default(), gateway_apps: Arc::default(), cities: Arc::default() }
    }

    /// The same directory (keys, reader, clock) with its commands going to `shard` instead: a
    /// link cut off in a benchmark, a writer reached another way.
    #[must_use]
    pub fn through(&self, shard: ShardHandle) -> Directory {
        Directory { shard, ..self.clone() }
    }

    /// The same directory drawing ids and secrets from `seed` instead of the OS. For seeded
    /// simulations only: anyone who knows the seed knows every secret drawn from it.
    #[must_use]
    pub fn seeded(mut self, seed: [u8; 32]) -> Directory {
        self.entropy = Entropy::Seeded(Arc::new(seed));
        self
    }

    /// `N` fresh bytes for what `purpose` names (its parts identify the value, e.g. a kind and
    /// a natural key): random, or derived from the seed and `purpose` when seeded.
    pub fn draw<const N: usize>(&self, purpose: &[&str]) -> [u8; N] {
        match &self.entropy {
            Entropy::Os => random_bytes(),
            Entropy::Seeded(seed) => {
                use hmac::{KeyInit, Mac};
                let mut bytes = [0u8; N];
                for (counter, chunk) in (0u32..).zip(bytes.chunks_mut(32)) {
                    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(seed.as_slice()).expect("HMAC takes any key length");
                    mac.update(&counter.to_be_bytes());
                    for part in purpose {
                        mac.update(part.as_bytes());
                        mac.update(&[0]);
                    }
                    let digest = mac.finalize().into_bytes();
                    chunk.copy_from_slice(&digest[..chunk.len()]);
                }
                bytes
            }
        }
    }

    /// A new id below 2^48 and above 0, for operators (who own no account).
    pub(crate) fn entity_id(&self, purpose: &[&str]) -> u64 {
        (u64::from_le_bytes(self.draw(purpose)) & ((1 << 48) - 1)).max(1)
    }

    /// A new id for a resident or merchant of `city`: in one of the city's buckets (spread by
    /// the draw), so that its accounts live where the city's do (`citypay-routing`).
    pub(crate) async fn entity_id_in(&self, city: u32, purpose: &[&str]) -> Result<u64, DirectoryError> {
        let drawn = u64::from_le_bytes(self.draw(purpose));
        let group = self.bucket_group(city).await?;
        let bucket = citypay_routing::bucket_in(group, drawn >> citypay_routing::BUCKET_SHIFT);
        Ok(citypay_routing::owner_in(bucket, drawn))
    }

    /// The shard this directory writes through.
    pub fn shard(&self) -> &ShardHandle {
        &self.shard
    }

    /// Runs a read query (`?N` placeholders) off the async threads.
    pub async fn read(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Vec<Value>>, DirectoryError> {
        if !self.reader.may_block() {
            return Ok(self.reader.query(sql, &params)?);
        }
        let reader = self.reader.clone();
        let rows = tokio::task::spawn_blocking(move || reader.query(sql, &params)).await;
        Ok(rows.map_err(|e| DirectoryError::Storage(e.to_string()))??)
    }

    /// Submits a command; a guard failure is returned as the guard's index.
    pub(crate) async fn submit(&self, command: Command) -> Result<Result<citypay_ledger::Outcome, usize>, DirectoryError> {
        match self.shard.submit(command).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(SubmitError::GuardFailed { guard }) => Ok(Err(guard)),
            Err(other) => Err(DirectoryError::Unavailable(other.to_string())),
        }
    }

    /// Opens the platform's own accounts (custody at the sandbox bank, fee revenue); opening
    /// them again is a replay.
    pub async fn open_platform_accounts(&self) -> Result<PlatformAccounts, DirectoryError> {
        let accounts = PlatformAccounts::CNY;
        for event in accounts.opening_events() {
            let outcome = self.submit(event.into()).await?.map_err(|_| DirectoryError::Unavailable("guard".into()))?;
            if outcome.status != citypay_ledger::Status::Ok {
                return Err(DirectoryError::Ledger(outcome.status));
            }
        }
        Ok(accounts)
    }

    /// Seals personal data for another service's table; `context` names the record and field.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        self.keys.sealing.seal(plaintext, context.as_bytes()).to_bytes()
    }

    /// Unseals what [`Directory::seal`] sealed under the same context.
    pub fn unseal(&self, sealed: &[u8], context: &str) -> Result<citypay_vault::Secret<Vec<u8>>, DirectoryError> {
        let sealed = citypay_vault::Sealed::from_bytes(sealed).map_err(|e| DirectoryError::Storage(e.to_string()))?;
        self.keys.sealing.open(&sealed, context.as_bytes()).map_err(|e| DirectoryError::Storage(e.to_string()))
    }

    /// The blind index of a normalised value under the active key, as stored (key id first).
    pub fn blind_index(&self, kind: &str, normalized: &str) -> Vec<u8> {
        residents::index_bytes(&self.keys.index.index(kind, normalized))
    }

    /// The blind index under every key, for lookups while keys rotate.
    pub fn blind_index_candidates(&self, kind: &str, normalized: &str) -> Vec<Vec<u8>> {
        self.keys.index.candidates(kind, normalized).iter().map(residents::index_bytes).collect()
    }

    /// The clock the directory reads.
    pub fn clock(&self) -> &Arc<dyn Clock + Sync> {
        &self.clock
    }

    pub(crate) fn now(&self) -> citypay_ledger::Timestamp {
        self.clock.now()
    }
}

/// A ledger event id derived from a request's parts (scope, key, purpose; or a trade and what
/// happens to it): the same on every retry, so a retry is a replay, never a second movement.
pub fn derived_event_id(parts: &[&str]) -> citypay_ledger::EventId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(parts.join("\u{0}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    citypay_ledger::EventId::from_be_bytes(bytes).max(1)
}

/// [`derived_event_id`] with `order` in its top 64 bits and the digest's first 64 below it.
/// The journal is keyed by id: ids written together (a day's fares, in account order) then
/// land on a few pages of it, where digest-only ids dirty a page each. Two ids collide only
/// with the same `order` and the same 64-bit digest prefix.
pub fn ordered_event_id(order: u64, parts: &[&str]) -> citypay_ledger::EventId {
    ((citypay_ledger::EventId::from(order) << 64) | (derived_event_id(parts) >> 64)).max(1)
}

/// Random bytes from the OS. A failing OS random source is fatal: nothing here can be keyed
/// or sealed without it.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

/// A service id or amount as a column value (ids and amounts stay below 2^63; anything above
/// is clamped, so it can never alias a small one).
pub fn uint(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Column `i` of a row read with [`Directory::read`], as an integer.
pub fn int_at(row: &[Value], i: usize) -> Result<i64, DirectoryError> {
    int(row.get(i).ok_or_else(|| DirectoryError::Storage(format!("no column {i}")))?)
}

/// Column `i` of a row, as text.
pub fn text_at(row: &[Value], i: usize) -> Result<String, DirectoryError> {
    text(row.get(i).ok_or_else(|| DirectoryError::Storage(format!("no column {i}")))?)
}

/// Column `i` of a row, as bytes.
pub fn blob_at(row: &[Value], i: usize) -> Result<Vec<u8>, DirectoryError> {
    blob(row.get(i).ok_or_else(|| DirectoryError::Storage(format!("no column {i}")))?)
}

/// Reads an integer column.
pub(crate) fn int(value: &Value) -> Result<i64, DirectoryError> {
    match value {
        Value::Int(v) => Ok(*v),
        other => Err(DirectoryError::Storage(format!("expected an integer, found {other:?}"))),
    }
}

/// Reads a text column.
pub(crate) fn text(value: &Value) -> Result<String, DirectoryError> {
    match value {
        Value::Text(v) => Ok(v.clone()),
        other => Err(DirectoryError::Storage(format!("expected text, found {other:?}"))),
    }
}

/// Reads a bytes column.
pub(crate) fn blob(value: &Value) -> Result<Vec<u8>, DirectoryError> {
    match value {
        Value::Blob(v) => Ok(v.clone()),
        other => Err(DirectoryError::Storage(format!("expected bytes, found {other:?}"))),
    }
}

#[cfg(test)]
mod ordered_ids {
    use super::{derived_event_id, ordered_event_id};

    #[test]
    fn an_ordered_id_sorts_by_its_order_and_keeps_the_digest_below() {
        let early = ordered_event_id(7, &["transit-day", "1", "2"]);
        let late = ordered_event_id(8, &["transit-day", "0", "0"]);
        assert!(early < late, "ids follow their order whatever the parts");
        assert_eq!(early >> 64, 7);
        assert_eq!(early & u128::from(u64::MAX), derived_event_id(&["transit-day", "1", "2"]) >> 64);
        assert_ne!(ordered_event_id(7, &["transit-day", "1", "3"]), early, "other parts, another id");
        assert_eq!(ordered_event_id(0, &[""]).max(1), ordered_event_id(0, &[""]), "never zero");
    }
}

