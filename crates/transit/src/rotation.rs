//! The city's ride-key schedule, for a city on several servers: a rotation or a revocation is
//! written once, in the database (`ride_keys`: ids, public halves, windows, revocations), and
//! every server picks it up at its next [`Transit::refresh_keys`]. No secret travels: a new
//! key's seed is derived by each server from the key set they all share, and a server whose
//! derivation gives another public key than the schedule's refuses the schedule (keeping its
//! keys) rather than sign with a key validators do not know.
//!
//! Until the first rotation through it the table is empty and the key file's keys stand; the
//! first rotation copies them in.

use std::sync::Arc;

use citypay_directory::{DirectoryError, blob_at, int_at};
use citypay_ride::{PlatformKey, Validity};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{Transit, TransitError};

/// The seed of ride key `id` as every server of the city derives it from the shared key set;
/// `None` where the key set has nothing to derive from.
pub type DeriveSeed = Arc<dyn Fn(u16) -> Option<[u8; 32]> + Send + Sync>;

/// Longest overlap a rotation leaves the previous key: 30 days.
pub const MAX_OVERLAP_S: u32 = 30 * 86_400;

/// One key of the schedule, public half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledKey {
    /// The id credentials carry.
    pub key_id: u16,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// When it may sign.
    pub validity: Validity,
    /// Validators refuse what it signed.
    pub revoked: bool,
}

impl Transit {
    /// Makes this server able to take part in city-wide rotations: `derive` gives the seed of
    /// a new key id.
    #[must_use]
    pub fn with_derived_keys(mut self, derive: DeriveSeed) -> Transit {
        self.derive = Some(derive);
        self
    }

    /// The keys this server signs and verifies with now, public halves.
    pub fn key_schedule(&self) -> Vec<ScheduledKey> {
        let keys = self.ride_keys();
        keys.keys
            .iter()
            .map(|k| ScheduledKey { key_id: k.key_id(), public_key: k.public().to_bytes(), validity: k.validity(), revoked: keys.revoked.contains(&k.key_id()) })
            .collect()
    }

    /// Reads the city's schedule and, when it differs from the keys in use, takes it: answers
    /// whether the keys changed. An empty schedule leaves the key file's keys.
    pub async fn refresh_keys(&self) -> Result<bool, TransitError> {
        let schedule = self.stored_schedule().await?;
        if schedule.is_empty() || schedule == self.key_schedule() {
            return Ok(false);
        }
        let current = self.ride_keys();
        let mut keys = Vec::with_capacity(schedule.len());
        for entry in &schedule {
            let known = current.keys.iter().find(|k| k.key_id() == entry.key_id).map(|k| k.with_validity(entry.validity));
            let key = known.or_else(|| self.derive.as_ref().and_then(|d| d(entry.key_id)).map(|seed| PlatformKey::from_seed(entry.key_id, seed, entry.validity)));
            match key {
                Some(key) if key.public().to_bytes() == entry.public_key => keys.push(key),
                _ => {
                    return Err(TransitError::RideKeysNotShared(format!(
                        "ride key {} of the city's schedule is not one this server's key set holds or derives",
                        entry.key_id
                    )));
                }
            }
        }
        let revoked = schedule.iter().filter(|e| e.revoked).map(|e| e.key_id).collect();
        self.set_keys(keys, revoked);
        Ok(true)
    }

    /// Rotates the city's ride key: a new key (the next id, derived from the shared key set)
    /// signs from now on, and the previous one verifies for `overlap_s` more seconds. Two
    /// rotations at once: one is refused (`KeyScheduleChanged`). `answer`'s rows for the new
    /// key are written in the rotation's own transaction (the API keeps its answer there: a
    /// retry after an unheard outcome must not rotate again).
    pub async fn rotate_key(&self, overlap_s: u32, answer: impl Fn(&ScheduledKey) -> Vec<ServiceRow>) -> Result<ScheduledKey, TransitError> {
        if overlap_s > MAX_OVERLAP_S {
            return Err(TransitError::InvalidField { field: "overlap_hours", message: format!("at most {} hours", MAX_OVERLAP_S / 3_600) });
        }
        self.refresh_keys().await?;
        let now = u32::try_from(self.now_s()).map_err(|_| TransitError::Unavailable("clock beyond 2106".into()))?;
        let current = self.key_schedule();
        let newest = current.iter().map(|k| k.key_id).max().ok_or_else(|| TransitError::Unavailable("no ride key".into()))?;
        let next = newest.checked_add(1).ok_or_else(|| TransitError::RideKeysNotShared("no ride key id left".into()))?;
        let seed = self.derive.as_ref().and_then(|d| d(next));
        let seed = seed.ok_or_else(|| TransitError::RideKeysNotShared("this server's key set derives no ride keys (no journal key)".into()))?;
        let validity = Validity::new(now, u32::MAX).map_err(|e| TransitError::Unavailable(e.to_string()))?;
        let key = PlatformKey::from_seed(next, seed, validity);
        let added = ScheduledKey { key_id: next, public_key: key.public().to_bytes(), validity, revoked: false };
        let mut rows = copied(&current);
        if let Some(previous) = current.iter().find(|k| k.key_id == newest) {
            let until = previous.validity.not_after.min(now.saturating_add(overlap_s)).max(previous.validity.not_before);
            rows.push(update(newest, "not_after", Value::Int(i64::from(until))));
        }
        rows.push(row(&added, OnConflict::Fail));
        rows.extend(answer(&added));
        let guard = Guard::Absent { table: "ride_keys", key: vec![("key_id", Value::Int(i64::from(next)))] };
        self.write_schedule(rows, vec![guard]).await?;
        tracing::info!(key_id = next, overlap_s, "ride key rotated for the city");
        self.refresh_keys().await?;
        Ok(added)
    }

    /// Revokes ride key `id` for the city: validators refuse what it signed from their next
    /// download, and no server signs with it.
    pub async fn revoke_key(&self, id: u16) -> Result<(), TransitError> {
        self.refresh_keys().await?;
        let current = self.key_schedule();
        if !current.iter().any(|k| k.key_id == id) {
            return Err(TransitError::UnknownRideKey(id));
        }
        let now = u32::try_from(self.now_s()).unwrap_or(u32::MAX);
        if !current.iter().any(|k| k.key_id != id && !k.revoked && k.validity.contains(now)) {
            return Err(TransitError::LastRideKey(id));
        }
        let mut rows = copied(&current);
        rows.push(update(id, "revoked", Value::Int(1)));
        self.write_schedule(rows, Vec::new()).await?;
        tracing::info!(key_id = id, "ride key revoked for the city");
        self.refresh_keys().await?;
        Ok(())
    }

    async fn write_schedule(&self, rows: Vec<ServiceRow>, guards: Vec<Guard>) -> Result<(), TransitError> {
        let command = Command { event: None, guards, rows, always_rows: Vec::new() };
        match self.submit(command).await? {
            Ok(_) => Ok(()),
            Err(_) => Err(TransitError::KeyScheduleChanged),
        }
    }

    async fn stored_schedule(&self) -> Result<Vec<ScheduledKey>, TransitError> {
        let rows = self.directory.read("SELECT key_id, public_key, not_before, not_after, revoked FROM ride_keys ORDER BY key_id", Vec::new()).await?;
        let bad = |what: &str| TransitError::Directory(DirectoryError::Storage(format!("ride_keys: {what}")));
        rows.iter()
            .map(|row| {
                let key_id = u16::try_from(int_at(row, 0)?).map_err(|_| bad("key_id"))?;
                let public_key: [u8; 32] = blob_at(row, 1)?.as_slice().try_into().map_err(|_| bad("public_key"))?;
                let window = |i| u32::try_from(int_at(row, i)?).map_err(|_| bad("window"));
                let validity = Validity::new(window(2)?, window(3)?).map_err(|_| bad("window"))?;
                Ok(ScheduledKey { key_id, public_key, validity, revoked: int_at(row, 4)? != 0 })
            })
            .collect()
    }
}

/// The keys in use, written where the schedule lacks them (the first rotation copies the key
/// file's keys in; later ones change nothing this way).
fn copied(current: &[ScheduledKey]) -> Vec<ServiceRow> {
    current.iter().map(|k| row(k, OnConflict::Ignore)).collect()
}

fn row(key: &ScheduledKey, on_conflict: OnConflict) -> ServiceRow {
    ServiceRow {
        table: "ride_keys",
        key: vec![("key_id", Value::Int(i64::from(key.key_id)))],
        columns: vec![
            ("public_key", Value::Blob(key.public_key.to_vec())),
            ("not_before", Value::Int(i64::from(key.validity.not_before))),
            ("not_after", Value::Int(i64::from(key.validity.not_after))),
            ("revoked", Value::Int(i64::from(key.revoked))),
        ],
        on_conflict,
    }
}

/// One column of a key's row, the others as they are (a rotation and a revocation at once
/// each change their own column).
fn update(key_id: u16, column: &'static str, value: Value) -> ServiceRow {
    ServiceRow { table: "ride_keys", key: vec![("key_id", Value::Int(i64::from(key_id)))], columns: vec![(column, value)], on_conflict: OnConflict::UpdateOnly }
}
