//! What must be unique in the country (an ID number's blind index, a mobile number's, a USCC,
//! a gateway app id) has a **home shard**, chosen by the key's bucket in the map, and is
//! claimed there before a shard uses it: one row per (kind, key), guarded `Absent`, so of two
//! shards that claim one ID number at once, one gets it. A claim names its owner (the request
//! that made it): the same owner claiming again is granted again (a retry), and only the owner
//! releases it (a registration that failed after claiming).
//!
//! The key is the blind index under the active index key, which every shard of the country
//! shares. Not handled yet: rotating that key (claims would have to be re-keyed with it).

use std::future::Future;
use std::pin::Pin;

use citypay_directory::{Directory, DirectoryError, int_at};
use citypay_routing::{Bucket, BucketMap, ShardId};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::ClearingError;

/// The claims table, every shard's (each is home to some keys).
pub(crate) const CLAIMS_TABLE: &str = "CREATE TABLE unique_claims (kind TEXT NOT NULL, claim_key TEXT NOT NULL, shard BIGINT NOT NULL,
        owner TEXT NOT NULL, claimed_at BIGINT NOT NULL, released_at BIGINT, PRIMARY KEY (kind, claim_key));";

/// A request to a key's home shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRequest {
    /// Claim `key` of `kind` for `owner` on `shard`.
    Claim {
        /// What kind of key (`resident_id`, `mobile`, ...).
        kind: String,
        /// The key (hex).
        key: String,
        /// The shard that will use it.
        shard: ShardId,
        /// The request that claims it.
        owner: String,
    },
    /// Give back a claim `owner` holds.
    Release {
        /// What kind of key.
        kind: String,
        /// The key (hex).
        key: String,
        /// Its owner.
        owner: String,
    },
}

/// The home shard's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The key is the caller's (now, or already).
    Granted,
    /// Another owner holds it.
    Held {
        /// Where it is used.
        shard: ShardId,
    },
    /// Released (or it was never claimed).
    Released,
}

/// How a shard reaches a key's home shard.
pub trait ClaimPeer: Send + Sync {
    /// Sends `request` to `home`; `Err` when it could not be reached.
    fn ask(&self, home: ShardId, request: ClaimRequest) -> Pin<Box<dyn Future<Output = Result<ClaimAnswer, String>> + Send + '_>>;
}

/// The home shard of a key: the shard its bucket is on (the key's first two bytes pick the
/// bucket, and blind indexes are uniform).
pub fn home_of(key: &[u8], map: &BucketMap) -> ShardId {
    let spread = u16::from_be_bytes([key.first().copied().unwrap_or(0), key.get(1).copied().unwrap_or(0)]);
    map.shard_of(Bucket(spread % citypay_routing::BUCKETS))
}

/// A shard as the home of some keys.
#[derive(Clone)]
pub struct Claims {
    directory: Directory,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims").finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Claims {
    /// The claims this shard is home to, over its directory.
    pub fn new(directory: Directory) -> Claims {
        Claims { directory }
    }

    /// The holder of a claim: (shard, owner, released).
    async fn holder(&self, kind: &str, key: &str) -> Result<Option<(ShardId, String, bool)>, ClearingError> {
        let rows = self
            .directory
            .read("SELECT shard, owner, released_at FROM unique_claims WHERE kind = ?1 AND claim_key = ?2", vec![Value::Text(kind.to_owned()), Value::Text(key.to_owned())])
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let shard = ShardId::try_from(int_at(row, 0)?).map_err(|_| DirectoryError::Storage("unique_claims: shard".into()))?;
        let Some(Value::Text(owner)) = row.get(1) else { return Err(DirectoryError::Storage("unique_claims: owner".into()).into()) };
        Ok(Some((shard, owner.clone(), !matches!(row.get(2), Some(Value::Null) | None))))
    }

    /// The shard where `key` (bytes) of `kind` is used, as its home shard holds it (none when
    /// not claimed, or released).
    pub async fn used_on(&self, kind: &str, key: &[u8]) -> Result<Option<ShardId>, ClearingError> {
        Ok(self.holder(kind, &hex(key)).await?.and_then(|(shard, _, released)| (!released).then_some(shard)))
    }

    /// Answers a request, as the key's home shard.
    pub async fn answer(&self, request: ClaimRequest) -> Result<ClaimAnswer, ClearingError> {
        let now = Value::Int(i64::try_from(self.directory.clock().now().unix_seconds()).unwrap_or(i64::MAX));
        for _ in 0..3 {
            match &request {
                ClaimRequest::Claim { kind, key, shard, owner } => {
                    let held = self.holder(kind, key).await?;
                    let guard = match &held {
                        Some((_, holder, false)) if holder == owner => return Ok(ClaimAnswer::Granted),
                        Some((shard, _, false)) => return Ok(ClaimAnswer::Held { shard: *shard }),
                        // Released: claimed anew, as long as it stays released until then.
                        Some((_, holder, true)) => Guard::Matches { table: "unique_claims", key: claim_key(kind, key), expect: vec![("owner", Value::Text(holder.clone()))] },
                        None => Guard::Absent { table: "unique_claims", key: claim_key(kind, key) },
                    };
                    let row = ServiceRow {
                        table: "unique_claims",
                        key: claim_key(kind, key),
                        columns: vec![
                            ("shard", Value::Int(i64::from(*shard))),
                            ("owner", Value::Text(owner.clone())),
                            ("claimed_at", now.clone()),
                            ("released_at", Value::Null),
                        ],
                        on_conflict: OnConflict::Update,
                    };
                    if self.submit(Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await? {
                        return Ok(ClaimAnswer::Granted);
                    }
                }
                ClaimRequest::Release { kind, key, owner } => {
                    match self.holder(kind, key).await? {
                        Some((_, holder, false)) if holder == *owner => {}
                        Some((shard, _, false)) => return Ok(ClaimAnswer::Held { shard }),
                        _ => return Ok(ClaimAnswer::Released),
                    }
                    let guard = Guard::Matches { table: "unique_claims", key: claim_key(kind, key), expect: vec![("owner", Value::Text(owner.clone())), ("released_at", Value::Null)] };
                    let row = ServiceRow { table: "unique_claims", key: claim_key(kind, key), columns: vec![("released_at", now.clone())], on_conflict: OnConflict::UpdateOnly };
                    if self.submit(Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await? {
                        return Ok(ClaimAnswer::Released);
                    }
                }
            }
        }
        Err(ClearingError::Unavailable("the claim kept changing; retry".into()))
    }

    /// Whether the command was applied (false: its guard failed, read again).
    async fn submit(&self, command: Command) -> Result<bool, ClearingError> {
        match self.directory.shard().submit(command).await {
            Ok(_) => Ok(true),
            Err(citypay_shard::SubmitError::GuardFailed { .. }) => Ok(false),
            Err(other) => Err(ClearingError::Unavailable(other.to_string())),
        }
    }
}

fn claim_key(kind: &str, key: &str) -> Vec<(&'static str, Value)> {
    vec![("kind", Value::Text(kind.to_owned())), ("claim_key", Value::Text(key.to_owned()))]
}

/// Registers a resident on `directory`'s shard (`shard`) once the country grants its ID
/// number and mobile number to this registration (`owner`, the request's id): claimed at their
/// home shards first, released again if the registration then fails. Of two shards that
/// register one ID number at once, one does.
pub async fn register_in_country(
    directory: &Directory,
    shard: ShardId,
    map: &BucketMap,
    peer: &dyn ClaimPeer,
    new: &citypay_directory::NewResident,
    owner: &str,
) -> Result<citypay_directory::Resident, ClearingError> {
    register_in_country_with(directory, shard, map, peer, new, owner, || directory.register_resident(new)).await
}

/// [`register_in_country`], registering with `register` once the keys are granted (the API
/// keeps its answer with the registration).
pub async fn register_in_country_with<F>(
    directory: &Directory,
    shard: ShardId,
    map: &BucketMap,
    peer: &dyn ClaimPeer,
    new: &citypay_directory::NewResident,
    owner: &str,
    register: impl FnOnce() -> F,
) -> Result<citypay_directory::Resident, ClearingError>
where
    F: Future<Output = Result<citypay_directory::Resident, DirectoryError>>,
{
    let keys = directory.uniqueness_keys(new)?;
    let mut granted = Vec::new();
    for (kind, key) in &keys {
        let request = ClaimRequest::Claim { kind: (*kind).to_owned(), key: hex(key), shard, owner: owner.to_owned() };
        let home = home_of(key, map);
        match peer.ask(home, request).await.map_err(ClearingError::Unknown)? {
            ClaimAnswer::Granted => granted.push((home, *kind, hex(key))),
            ClaimAnswer::Held { .. } | ClaimAnswer::Released => {
                release(peer, owner, &granted).await;
                return Err(if *kind == keys[0].0 { DirectoryError::IdentityTaken } else { DirectoryError::MobileTaken }.into());
            }
        }
    }
    match register().await {
        Ok(resident) => Ok(resident),
        // Refused before anything was written: the keys go back. Any other failure keeps
        // them: the registration may have been made (an outcome not heard), or be this
        // owner's own (a retry), and the owner's retry claims them again.
        Err(error @ (DirectoryError::InvalidField { .. } | DirectoryError::InvalidResidentId(_) | DirectoryError::BelowMinimumAge { .. } | DirectoryError::UnknownCity(_))) => {
            release(peer, owner, &granted).await;
            Err(error.into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Gives back what `owner` was granted (best effort: a claim left behind is released by its
/// owner's retry).
async fn release(peer: &dyn ClaimPeer, owner: &str, granted: &[(ShardId, &str, String)]) {
    for (home, kind, key) in granted {
        let request = ClaimRequest::Release { kind: (*kind).to_owned(), key: key.clone(), owner: owner.to_owned() };
        if let Err(error) = peer.ask(*home, request).await {
            tracing::warn!(%error, "a claim could not be released now");
        }
    }
}

/// Onboards a merchant on `directory`'s shard (`shard`) once the country grants its USCC to
/// this shard: claimed at its home shard first (the claim's owner is the shard and the USCC,
/// so a retry on this shard is granted again and onboarding on another is refused), given back
/// if the onboarding was refused before writing anything.
pub async fn onboard_merchant_in_country(
    directory: &Directory,
    shard: ShardId,
    map: &BucketMap,
    peer: &dyn ClaimPeer,
    new: &citypay_directory::NewMerchant,
) -> Result<(citypay_directory::Merchant, citypay_directory::MerchantCredentials), ClearingError> {
    let uscc = new.uscc.trim().to_ascii_uppercase();
    let key = directory.blind_index(USCC_KIND, &uscc);
    let owner = format!("merchant:{shard}:{uscc}");
    let home = home_of(&key, map);
    let request = ClaimRequest::Claim { kind: USCC_KIND.to_owned(), key: hex(&key), shard, owner: owner.clone() };
    match peer.ask(home, request).await.map_err(ClearingError::Unknown)? {
        ClaimAnswer::Granted => {}
        ClaimAnswer::Held { .. } | ClaimAnswer::Released => return Err(DirectoryError::MerchantExists.into()),
    }
    match directory.onboard_merchant(new).await {
        Ok(onboarded) => Ok(onboarded),
        Err(error @ (DirectoryError::InvalidField { .. } | DirectoryError::InvalidUscc(_) | DirectoryError::UnknownCity(_))) => {
            release(peer, &owner, &[(home, USCC_KIND, hex(&key))]).await;
            Err(error.into())
        }
        Err(error) => Err(error.into()),
    }
}

/// The claims' kind for a merchant's Unified Social Credit Code.
pub const USCC_KIND: &str = "uscc";
