//! Transit: riders show offline-verifiable ride codes, validators accept them offline and
//! upload the taps later, and the fare run debits each rider's service day afterwards.
//!
//! - A rider enrols a device key and gets a platform-signed [`Credential`] (the `ride` crate's
//!   format) naming an opaque account reference, not their wallet.
//! - A transit operator (a merchant of category `transit`) registers validators: a route and
//!   stop of the fare feed and the device's Ed25519 key, which signs its uploads.
//! - Uploads are idempotent per (validator, sequence); a code already seen on another tap is
//!   stored flagged and not fared. A tap that cannot be true is refused on its own (another
//!   tap under a stored sequence number, a time after the upload or before the validator was
//!   registered, a rider never credentialed); the batch's other taps are kept.
//! - [`Transit::fare_day`] prices every rider's taps of a closed service day with the GTFS-Fares
//!   engine and moves, for each operator whose lines the rider used, the difference between
//!   what its legs are due (after transfers and the cap) and what it was paid, with a ledger id
//!   derived from (rider, day, revision of the day): a re-run, or one after late taps, never
//!   charges a trip twice, and a late tap that lowers the day's fare is refunded. A wallet that
//!   cannot pay gets an arrears record, which puts the rider on the deny list that validators
//!   download until [`Transit::pay_arrears`] settles it.

mod rotation;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use citypay_directory::{
    AccountKind, BALANCE_PAYMENT, Category, Directory, DirectoryError, Resident, account_id, blob_at, derived_event_id, int_at, ordered_event_id, text_at, uint,
};
use citypay_fares::Feed;
use citypay_ledger::{Currency, Entry, Event, Leg, Status, Transfer};
use citypay_ride::{Credential, CredentialTerms, PlatformKey, PlatformKeyring};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{OnConflict, ServiceRow, Value};

pub use rotation::{DeriveSeed, MAX_OVERLAP_S, ScheduledKey};
pub use schema::MIGRATIONS;

/// Ledger transfer codes of transit movements.
pub mod codes {
    pub use citypay_directory::transfer_codes::{ARREARS, FARE, FARE_REFUND};
}

/// How long a ride credential is valid.
pub const CREDENTIAL_TTL_S: u32 = 24 * 3600;
/// The highest deferred-debit ceiling written in a credential, in fen: a funded wallet's.
pub const CREDENTIAL_CEILING_FEN: u32 = 5_000;
/// The credit the platform extends beyond a wallet's balance, in fen: one ride at the dearest
/// fare of the shipped feed. A credential's ceiling is the wallet's available balance, at least this, at most
/// [`CREDENTIAL_CEILING_FEN`]; validators refuse entries beyond it.
pub const CREDENTIAL_CREDIT_FEN: u32 = 500;
/// The fare medium of ride codes in the feed.
pub const RIDE_CODE_MEDIUM: &str = "ride_code";
/// A service day is fared this long after it ends, so late uploads are in.
pub const FARE_CUTOFF_S: i64 = 2 * 3600;
/// How far a validator's clock may be from the platform's: its signed calls and its taps'
/// times are judged with this much slack.
pub const CLOCK_SKEW_S: u64 = 300;

/// Why a transit request failed.
#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    /// From the directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A field is invalid.
    #[error("{field}: {message}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The merchant is not a transit operator.
    #[error("only transit operators register validators")]
    NotTransitOperator,
    /// No such validator.
    #[error("unknown validator")]
    UnknownValidator,
    /// The device key is registered for another validator already: a key names one device.
    #[error("this device key is registered for validator {0} already")]
    DeviceKeyRegistered(u32),
    /// The rider owes fares: no credential until the arrears are paid.
    #[error("the rider has unpaid fares")]
    InArrears,
    /// The service day is not over yet (with the cut-off for late uploads).
    #[error("service day {0} is not closed yet")]
    DayNotClosed(i64),
    /// The ledger refused a movement.
    #[error("refused: {}", .0.name())]
    Refused(Status),
    /// The writer is unavailable; retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The city's ride keys cannot be rotated or used here (see the message).
    #[error("{0}")]
    RideKeysNotShared(String),
    /// Another rotation changed the city's ride keys first; read them again.
    #[error("another rotation changed the ride keys first")]
    KeyScheduleChanged,
    /// No such ride key.
    #[error("no ride key {0}")]
    UnknownRideKey(u16),
    /// Revoking this key would leave no key to sign credentials with: rotate first.
    #[error("ride key {0} is the only one that can sign now: rotate first, then revoke it")]
    LastRideKey(u16),
}

impl TransitError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TransitError::Directory(e) => e.code(),
            TransitError::InvalidField { .. } => "invalid_field",
            TransitError::NotTransitOperator => "not_transit_operator",
            TransitError::UnknownValidator => "unknown_validator",
            TransitError::DeviceKeyRegistered(_) => "device_key_registered",
            TransitError::InArrears => "in_arrears",
            TransitError::DayNotClosed(_) => "day_not_closed",
            TransitError::Refused(status) => status.name(),
            TransitError::Unavailable(_) => "unavailable",
            TransitError::RideKeysNotShared(_) => "ride_keys_not_shared",
            TransitError::KeyScheduleChanged => "key_schedule_changed",
            TransitError::UnknownRideKey(_) => "unknown_ride_key",
            TransitError::LastRideKey(_) => "last_ride_key",
        }
    }
}

/// A registered validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorInfo {
    /// Its id (what its taps carry).
    pub id: u32,
    /// The transit operator (merchant) it belongs to.
    pub operator: u64,
    /// Route (bus line or metro line) of the feed.
    pub route_id: String,
    /// Stop (metro station, or the bus line's first stop) of the feed.
    pub stop_id: String,
    /// When it was registered, Unix seconds: it made no tap before.
    pub registered_at: u64,
}

/// Why an uploaded tap was refused: it cannot be true. The batch's other taps are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapRefusal {
    /// Another tap is stored under this (validator, sequence).
    SequenceConflict,
    /// Dated after its upload, beyond the clock skew.
    DatedAfterUpload,
    /// Dated before its validator was registered, beyond the clock skew.
    DatedBeforeRegistration,
    /// For an account reference the platform never issued a credential to.
    UnknownRider,
}

impl TapRefusal {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            TapRefusal::SequenceConflict => "sequence_conflict",
            TapRefusal::DatedAfterUpload => "dated_after_upload",
            TapRefusal::DatedBeforeRegistration => "dated_before_registration",
            TapRefusal::UnknownRider => "unknown_rider",
        }
    }

    /// What is wrong, for people.
    pub fn message(self) -> &'static str {
        match self {
            TapRefusal::SequenceConflict => "another tap was uploaded under this sequence number",
            TapRefusal::DatedAfterUpload => "the tap is dated after its upload (more than five minutes of clock skew)",
            TapRefusal::DatedBeforeRegistration => "the tap is dated before its validator was registered",
            TapRefusal::UnknownRider => "no ride credential was ever issued for this account reference",
        }
    }
}

/// What an upload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// New taps stored.
    pub stored: u64,
    /// Taps this validator had uploaded before (a retried upload).
    pub already: u64,
    /// Taps refused, by sequence number (nothing of them is stored).
    pub refused: Vec<(u64, TapRefusal)>,
}

/// Most taps written by one command.
const UPLOAD_ROWS_MAX: usize = 1_000;
/// Most riders looked up by one query (its parameters).
const RIDERS_LOOKED_UP_MAX: usize = 500;

/// A tap as the upload compares it with one stored under the same sequence number.
#[derive(Debug, PartialEq, Eq)]
struct StoredTap {
    account_ref: i64,
    inbound: bool,
    at: i64,
    code_hash: Vec<u8>,
}

impl StoredTap {
    fn of(tap: &citypay_ride::Tap) -> StoredTap {
        StoredTap {
            account_ref: i64::try_from(tap.account_ref).unwrap_or(i64::MAX),
            inbound: tap.direction == citypay_ride::Direction::In,
            at: i64::from(tap.time),
            code_hash: tap.code_hash.to_vec(),
        }
    }
}

/// One rider's service day, as the fare run left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiderDay {
    /// The rider's account reference.
    pub account_ref: u64,
    /// Trips priced (a chain of legs joined by transfers is one trip).
    pub trips: u64,
    /// Legs (bus boardings, metro rides gate to gate).
    pub legs: u64,
    /// What the day costs, in fen.
    pub due: i64,
    /// What this run moved for it (negative: refunded; 0 when already charged or owed).
    pub moved: i64,
    /// Part of it is owed: the wallet could not pay.
    pub in_arrears: bool,
}

/// What a fare run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FareRun {
    /// Every rider's day.
    pub days: Vec<RiderDay>,
    /// Riders with taps that day.
    pub riders: u64,
    /// Trips priced.
    pub trips: u64,
    /// Fen charged now (net of refunds of earlier charges).
    pub charged: i64,
    /// Riders whose wallet could not pay: now in arrears.
    pub arrears: u64,
    /// Fen of the new arrears.
    pub arrears_amount: i64,
    /// Riders whose day was already charged as due (a re-run).
    pub unchanged: u64,
    /// Taps with a code already used on an earlier tap: flagged, not fared.
    pub duplicates: u64,
    /// Riders whose day could not be charged this time (the next run retries them).
    pub failed: u64,
}

/// The platform's credential-signing keys, oldest first, and the ids of revoked ones.
struct RideKeys {
    keys: Vec<PlatformKey>,
    revoked: Vec<u16>,
}

/// The transit service. Cheap to clone; clones share the keys, so a reload reaches them all.
#[derive(Clone)]
pub struct Transit {
    directory: Directory,
    feed: Arc<Feed>,
    /// Replaced whole by [`Transit::set_keys`]; readers take the current set.
    keys: Arc<RwLock<Arc<RideKeys>>>,
    /// New keys' seeds for city-wide rotations (see [`Transit::with_derived_keys`]).
    derive: Option<DeriveSeed>,
}

impl std::fmt::Debug for Transit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.ride_keys();
        let ids: Vec<u16> = keys.keys.iter().map(PlatformKey::key_id).collect();
        f.debug_struct("Transit").field("key_ids", &ids).field("revoked", &keys.revoked).finish_non_exhaustive()
    }
}

fn int(v: i64) -> Value {
    Value::Int(v)
}


/// Riders fared at once by a fare run.
const RIDERS_IN_FLIGHT: usize = 16_384;

/// What charging one rider's day did.
enum Charged {
    /// Fen moved (negative: refunded).
    Moved(i64),
    /// The wallet could not pay this many fen.
    Arrears(i64),
    /// Already charged as due.
    Unchanged,
}

/// A service day's taps of the riders whose account references are in a range, with each
/// rider's resident and each validator's operator.
const DAY_TAPS: &str = "SELECT t.account_ref, t.route_id, t.stop_id, t.direction, t.at, t.code_hash, t.validator_id,
        t.sequence, t.flagged, r.resident_id, v.operator_id
    FROM taps t JOIN ride_accounts r ON r.account_ref = t.account_ref JOIN validators v ON v.id = t.validator_id
    WHERE t.service_day = ?1 AND t.account_ref BETWEEN ?2 AND ?3 ORDER BY t.account_ref, t.at, t.validator_id, t.sequence";

/// The fare run reads a day's taps in this many ranges of account references: the next range
/// is read while the riders of one are debited, where reading the whole day first left the
/// writer idle (about a fifth of the run).
const FARE_RANGES: i64 = 32;

/// The ranges of account references the fare run reads in turn, in order, covering every value
/// (references are drawn below 2^63; the first range takes any other).
fn fare_ranges() -> Vec<(i64, i64)> {
    let step = i64::MAX / FARE_RANGES;
    let mut ranges = vec![(i64::MIN, -1)];
    ranges.extend((0..FARE_RANGES).map(|k| (k * step, if k == FARE_RANGES - 1 { i64::MAX } else { (k + 1) * step - 1 })));
    ranges
}

/// [`DAY_TAPS`] for one rider.
const RIDER_DAY_TAPS: &str = "SELECT t.account_ref, t.route_id, t.stop_id, t.direction, t.at, t.code_hash, t.validator_id,
        t.sequence, t.flagged, r.resident_id, v.operator_id
    FROM taps t JOIN ride_accounts r ON r.account_ref = t.account_ref JOIN validators v ON v.id = t.validator_id
    WHERE t.service_day = ?1 AND t.account_ref = ?2 ORDER BY t.at, t.validator_id, t.sequence";

/// The day's taps of the riders (after a cursor) who tapped at an operator's validators.
const OPERATOR_RIDERS: &str = "SELECT DISTINCT t.account_ref FROM taps t JOIN validators v ON v.id = t.validator_id
    WHERE t.service_day = ?1 AND v.operator_id = ?2 AND t.account_ref >= ?3 ORDER BY t.account_ref LIMIT ?4";

/// [`DAY_TAPS`] for the riders of [`OPERATOR_RIDERS`]: all their taps, whichever operator's.
const RIDERS_DAY_TAPS: &str = "SELECT t.account_ref, t.route_id, t.stop_id, t.direction, t.at, t.code_hash, t.validator_id,
        t.sequence, t.flagged, r.resident_id, v.operator_id
    FROM taps t JOIN ride_accounts r ON r.account_ref = t.account_ref JOIN validators v ON v.id = t.validator_id
    WHERE t.service_day = ?1 AND t.account_ref IN (SELECT DISTINCT t2.account_ref FROM taps t2 JOIN validators v2 ON v2.id = t2.validator_id
        WHERE t2.service_day = ?1 AND v2.operator_id = ?2 AND t2.account_ref >= ?3 ORDER BY t2.account_ref LIMIT ?4)
    ORDER BY t.account_ref, t.at, t.validator_id, t.sequence";

/// A leg on an operator's lines, as the fare run prices it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorLeg {
    /// The rider's opaque account reference.
    pub account_ref: u64,
    /// The route (bus or metro line).
    pub route_id: String,
    /// Where the rider boarded or entered.
    pub from_stop: String,
    /// When, in Unix seconds.
    pub from_time: i64,
    /// Where they left the metro (none for a bus, or a missing tap-out).
    pub to_stop: Option<String>,
    /// When they left.
    pub to_time: Option<i64>,
    /// Charged the line's maximum: no tap-out by the end of the service day.
    pub tap_out_missing: bool,
    /// The fare before discounts, in fen.
    pub base_fen: i64,
    /// The leg's fare after transfers, discounts and the daily cap, in fen: the operator's due.
    pub fare_fen: i64,
}

/// One rider's taps of a day, in the fare engine's terms.
struct RiderTaps {
    account_ref: u64,
    resident: u64,
    taps: Vec<citypay_fares::Tap>,
    /// The operator of each tap's validator, in the order of `taps`.
    operators: Vec<u64>,
}

impl RiderTaps {
    /// Each operator's part of the day: the legs that began at its validators and what they
    /// were charged after transfers and the cap. The parts add up to the day's total.
    fn shares(&self, fares: &citypay_fares::DayFares) -> BTreeMap<u64, Share> {
        let operator_of = self.operator_of();
        let mut shares: BTreeMap<u64, Share> = BTreeMap::new();
        for leg in fares.trips.iter().flat_map(|t| &t.legs) {
            let share = shares.entry(operator_of(&leg.tap_in)).or_default();
            share.legs += 1;
            share.due += leg.charged_fen;
        }
        shares
    }
}

impl RiderTaps {
    /// The operator of the validator that made a tap (the fare engine's legs carry copies of
    /// the taps, without the validator).
    fn operator_of(&self) -> impl Fn(&citypay_fares::Tap) -> u64 + '_ {
        let operators: HashMap<(i64, &str, &str), u64> =
            self.taps.iter().zip(&self.operators).map(|(t, op)| ((t.time_unix_s, t.route_id.as_str(), t.stop_id.as_str()), *op)).collect();
        let first = self.operators.first().copied().unwrap_or(0);
        move |tap| operators.get(&(tap.time_unix_s, tap.route_id.as_str(), tap.stop_id.as_str())).copied().unwrap_or(first)
    }
}

/// An operator's part of a rider's day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Share {
    /// Legs begun on its lines.
    legs: i64,
    /// Their fares, in fen.
    due: i64,
    /// What it has been paid for them, in fen.
    charged: i64,
}

/// What the fare run charges for one rider's day.
struct DayCharge {
    account_ref: u64,
    resident: u64,
    service_day: i64,
    trips: i64,
    due: i64,
    /// Per operator (only `legs` and `due` are set).
    shares: BTreeMap<u64, Share>,
}

/// The legs that bring each operator from what it was paid to what it is due: refunds first,
/// so a wallet short of the new charges can still take back an old one.
fn movement_legs(wallet: u64, account_ref: u64, shares: &BTreeMap<u64, Share>, charge_code: u16) -> Vec<Leg> {
    let leg = |debit, credit, amount, code, class| Leg { debit, credit, amount, currency: Currency::CNY, code, class, user_data: account_ref };
    let accounts = shares.iter().map(|(operator, share)| (account_id(AccountKind::Merchant, *operator), share.due - share.charged));
    let refunds = accounts.clone().filter(|(_, d)| *d < 0).map(|(op, d)| leg(op, wallet, -d, codes::FARE_REFUND, 0));
    let charges = accounts.filter(|(_, d)| *d > 0).map(|(op, d)| leg(wallet, op, d, charge_code, BALANCE_PAYMENT));
    refunds.chain(charges).collect()
}

/// One transfer for one leg, an all-or-nothing entry for several.
fn movement(id: citypay_ledger::EventId, mut legs: Vec<Leg>) -> Option<Event> {
    match legs.len() {
        0 => None,
        1 => legs.pop().map(|leg| Event::Transfer(Transfer { id, leg, pending_timeout_s: None })),
        _ => Some(Event::Entry(Entry { id, legs })),
    }
}

/// Raises a day's revision without changing what it charged: a refused movement is recorded,
/// so the next try derives a new ledger id instead of replaying the refusal.
fn refused_attempt(key: Vec<(&'static str, Value)>, revision: i64, now: u64) -> ServiceRow {
    ServiceRow {
        table: "transit_charges",
        key,
        columns: vec![("revision", int(revision + 1)), ("updated_at", uint(now))],
        on_conflict: OnConflict::UpdateOnly,
    }
}

fn share_row(account_ref: u64, service_day: i64, operator: u64, share: &Share) -> ServiceRow {
    ServiceRow {
        table: "transit_shares",
        key: vec![("account_ref", uint(account_ref)), ("service_day", int(service_day)), ("operator_id", uint(operator))],
        columns: vec![("legs", int(share.legs)), ("due", int(share.due)), ("charged", int(share.charged))],
        on_conflict: OnConflict::Update,
    }
}

/// Where a rider's fare entries of a day go in the journal: by day, then account (the fare
/// run's order), so a run's entries fill pages of the journal one after another.
fn fare_order(service_day: i64, account_ref: u64) -> u64 {
    (u64::try_from(service_day).unwrap_or(0) << 48) | (account_ref >> 16)
}

/// Groups [`DAY_TAPS`] rows (ordered by rider, then time) by rider. A code is good for one
/// tap: its first use counts; later ones are copies (a screenshot shown at another gate),
/// answered as (validator, sequence, already flagged) and never fared. A code belongs to one rider, so
/// the first row seen with it is its first use.
fn riders_of(rows: &[Vec<Value>]) -> Result<(Vec<RiderTaps>, Vec<(i64, i64, bool)>), TransitError> {
    let mut riders: Vec<RiderTaps> = Vec::new();
    let mut copies = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        if !seen.insert(blob_at(row, 5)?) {
            copies.push((int_at(row, 6)?, int_at(row, 7)?, int_at(row, 8)? != 0));
            continue;
        }
        let account_ref = u64::try_from(int_at(row, 0)?).unwrap_or(0);
        let operator = u64::try_from(int_at(row, 10)?).unwrap_or(0);
        let direction = if text_at(row, 3)? == "out" { citypay_fares::Direction::Out } else { citypay_fares::Direction::In };
        let tap = citypay_fares::Tap::new(&text_at(row, 2)?, &text_at(row, 1)?, int_at(row, 4)?, direction, RIDE_CODE_MEDIUM);
        match riders.last_mut() {
            Some(rider) if rider.account_ref == account_ref => {
                rider.taps.push(tap);
                rider.operators.push(operator);
            }
            _ => riders.push(RiderTaps {
                account_ref,
                resident: u64::try_from(int_at(row, 9)?).unwrap_or(0),
                taps: vec![tap],
                operators: vec![operator],
            }),
        }
    }
    Ok((riders, copies))
}

impl Transit {
    /// The transit service over the directory, pricing with `feed` and signing credentials
    /// with `key`.
    pub fn new(directory: Directory, feed: Feed, key: PlatformKey) -> Transit {
        Transit::with_keys(directory, feed, vec![key], Vec::new())
    }

    /// The transit service with several platform keys (a rotation: the newest key valid now
    /// signs, the older ones still verify until their validity ends) and the ids of revoked
    /// keys, which validators refuse.
    pub fn with_keys(directory: Directory, feed: Feed, keys: Vec<PlatformKey>, revoked: Vec<u16>) -> Transit {
        let transit = Transit { directory, feed: Arc::new(feed), keys: Arc::new(RwLock::new(Arc::new(RideKeys { keys: Vec::new(), revoked: Vec::new() }))), derive: None };
        transit.set_keys(keys, revoked);
        transit
    }

    /// Replaces the platform keys and the revocations, without a restart (a rotation or a
    /// revocation in the key file, reloaded): credentials are signed with the new set from
    /// the next request, and validators get it at their next download.
    pub fn set_keys(&self, mut keys: Vec<PlatformKey>, revoked: Vec<u16>) {
        keys.sort_by_key(PlatformKey::key_id);
        let new = Arc::new(RideKeys { keys, revoked });
        // A writer that panicked left a whole set behind (it only ever swaps the pointer).
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }

    fn ride_keys(&self) -> Arc<RideKeys> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The platform keys validators need (public halves, revoked ones left out).
    pub fn keyring(&self) -> PlatformKeyring {
        let keys = self.ride_keys();
        let mut keyring = PlatformKeyring::new();
        for key in keys.keys.iter().filter(|k| !keys.revoked.contains(&k.key_id())) {
            keyring.insert(key.public());
        }
        keyring
    }

    /// Every platform public key, for validators.
    pub fn platform_public_keys(&self) -> Vec<citypay_ride::PlatformPublicKey> {
        self.ride_keys().keys.iter().map(PlatformKey::public).collect()
    }

    /// Ids of revoked platform keys: validators refuse the credentials they signed.
    pub fn revoked_keys(&self) -> Vec<u16> {
        self.ride_keys().revoked.clone()
    }

    /// The fare feed.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    fn now_s(&self) -> u64 {
        self.directory.clock().now().unix_seconds()
    }

    async fn submit(&self, command: Command) -> Result<Result<citypay_ledger::Outcome, usize>, TransitError> {
        match self.directory.shard().submit(command).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(SubmitError::GuardFailed { guard }) => Ok(Err(guard)),
            Err(other) => Err(TransitError::Unavailable(other.to_string())),
        }
    }

    /// The rider's opaque account reference, created on first use.
    pub async fn account_ref(&self, resident: &Resident) -> Result<u64, TransitError> {
        if let Some(existing) = self.existing_account_ref(resident).await? {
            return Ok(existing);
        }
        let drawn = u64::from_le_bytes(self.directory.draw(&["ride-account", &resident.id.to_string()])) >> 1;
        let account_ref = drawn.max(1);
        let row = ServiceRow {
            table: "ride_accounts",
            key: vec![("account_ref", uint(account_ref))],
            columns: vec![("resident_id", uint(resident.id)), ("created_at", uint(self.now_s()))],
            on_conflict: OnConflict::Fail,
        };
        let command = Command {
            event: None,
            guards: vec![
                Guard::Absent { table: "ride_accounts", key: vec![("resident_id", uint(resident.id))] },
                Guard::Absent { table: "ride_accounts", key: row.key.clone() },
            ],
            rows: vec![row],
            always_rows: Vec::new(),
        };
        match self.submit(command).await? {
            Ok(_) => Ok(account_ref),
            // Created meanwhile by another request: read it.
            Err(0) => Box::pin(self.account_ref(resident)).await,
            Err(_) => Err(TransitError::Unavailable("account reference taken; retry".into())),
        }
    }

    /// Issues a ride credential for the rider device's public key: valid for a day from now,
    /// refused while the rider is in arrears.
    pub async fn issue_credential(&self, resident: &Resident, rider_key: [u8; 32]) -> Result<Credential, TransitError> {
        let account_ref = self.account_ref(resident).await?;
        // One read: whether the rider owes fares, what the wallet can spend now, and whether
        // its owner froze it (a credential promises fares; a frozen wallet promises nothing).
        let rows = self
            .directory
            .read(
                "SELECT (SELECT COUNT(*) FROM arrears WHERE account_ref = ?1 AND paid_at IS NULL),
                        (SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE id = ?2),
                        (SELECT wallet_frozen FROM residents WHERE id = ?3)",
                vec![uint(account_ref), Value::Int(citypay_store::u64_to_column(resident.wallet)), uint(resident.id)],
            )
            .await?;
        let row = rows.first().ok_or_else(|| DirectoryError::Storage("no answer".into()))?;
        if matches!(row.get(2), Some(Value::Int(frozen)) if *frozen != 0) {
            return Err(DirectoryError::WalletFrozen.into());
        }
        if int_at(row, 0)? > 0 {
            return Err(TransitError::InArrears);
        }
        let available = if matches!(row.get(1), Some(Value::Null) | None) { 0 } else { int_at(row, 1)? };
        let now = u32::try_from(self.now_s()).map_err(|_| TransitError::Unavailable("clock beyond 2106".into()))?;
        let keys = self.ride_keys();
        // The newest valid, unrevoked key signs.
        let key = keys.keys.iter().rev().find(|k| k.validity().contains(now) && !keys.revoked.contains(&k.key_id()));
        let key = key.ok_or_else(|| TransitError::Unavailable("no platform ride key is valid now".into()))?;
        let ceiling_fen = u32::try_from(available.clamp(i64::from(CREDENTIAL_CREDIT_FEN), i64::from(CREDENTIAL_CEILING_FEN))).unwrap_or(CREDENTIAL_CREDIT_FEN);
        let terms = CredentialTerms {
            rider_key,
            account_ref,
            valid_from: now,
            // Never beyond the signing key: validators refuse what an expired key signed.
            valid_until: now.saturating_add(CREDENTIAL_TTL_S).min(key.validity().not_after),
            ceiling_fen,
        };
        let credential = citypay_ride::issue_credential(key, terms).map_err(|e| TransitError::Unavailable(e.to_string()))?;
        tracing::debug!(resident = resident.id, key_id = key.key_id(), ceiling_fen, "ride credential issued");
        Ok(credential)
    }

    /// Registers a validator of transit operator `operator` at a route and stop of the feed,
    /// with the Ed25519 key its device signs uploads with.
    pub async fn register_validator(&self, operator: u64, route_id: &str, stop_id: &str, device_key: [u8; 32]) -> Result<ValidatorInfo, TransitError> {
        if self.directory.merchant(operator).await?.category != Category::Transit {
            return Err(TransitError::NotTransitOperator);
        }
        let stops = self.feed.route_stops(route_id);
        if stops.is_empty() {
            return Err(TransitError::InvalidField { field: "route_id", message: format!("no route {route_id:?} in the fare feed") });
        }
        if !stops.iter().any(|s| s == stop_id) {
            return Err(TransitError::InvalidField { field: "stop_id", message: format!("route {route_id} does not stop at {stop_id:?}") });
        }
        let key_text = citypay_directory::hex::encode(&device_key);
        let registered = || async {
            let found = self.validator_by_device_key(device_key).await?;
            Ok::<_, TransitError>(found.map(|(info, _)| TransitError::DeviceKeyRegistered(info.id)))
        };
        if let Some(taken) = registered().await? {
            return Err(taken);
        }
        let now = self.now_s();
        for attempt in 0..3u8 {
            let drawn: [u8; 4] = self.directory.draw(&["validator", &key_text, &attempt.to_string()]);
            let id = u32::from_le_bytes(drawn).max(1);
            let row = ServiceRow {
                table: "validators",
                key: vec![("id", int(i64::from(id)))],
                columns: vec![
                    ("operator_id", uint(operator)),
                    ("route_id", Value::Text(route_id.to_owned())),
                    ("stop_id", Value::Text(stop_id.to_owned())),
                    ("device_key", Value::Blob(device_key.to_vec())),
                    ("created_at", uint(now)),
                ],
                on_conflict: OnConflict::Fail,
            };
            // A device key names one validator: its signature is what authenticates the uploads.
            let guards = vec![
                Guard::Absent { table: "validators", key: row.key.clone() },
                Guard::Absent { table: "validators", key: vec![("device_key", Value::Blob(device_key.to_vec()))] },
            ];
            match self.submit(Command { event: None, guards, rows: vec![row], always_rows: Vec::new() }).await? {
                Ok(_) => {
                    tracing::debug!(operator, validator = id, route_id, stop_id, "validator registered");
                    return Ok(ValidatorInfo { id, operator, route_id: route_id.to_owned(), stop_id: stop_id.to_owned(), registered_at: now });
                }
                // Registered meanwhile by a racing request.
                Err(1) => return Err(registered().await?.unwrap_or_else(|| TransitError::Unavailable("the device key changed meanwhile; retry".into()))),
                Err(_) => {}
            }
        }
        Err(TransitError::Unavailable("no free validator id drawn; retry".into()))
    }

    /// The most an entry at `stop_id` on `route_id` can cost with a ride code, in fen: a bus
    /// line's fare, or the metro line's dearest fare from that station (what a missing tap-out
    /// is charged). Validators count it against the credential's ceiling.
    pub fn fare_estimate(&self, route_id: &str, stop_id: &str) -> u32 {
        let entry = citypay_fares::Tap::new(stop_id, route_id, 12 * 3_600, citypay_fares::Direction::In, RIDE_CODE_MEDIUM);
        // Beyond u32 (never in a real feed) the estimate refuses rather than counts nothing.
        u32::try_from(citypay_fares::fare_day(&self.feed, &[entry]).total_fen).unwrap_or(u32::MAX)
    }

    /// The validator registered with a device key, if any (a device set up again finds its
    /// registration), and the last tap sequence number uploaded from it (0: none).
    pub async fn validator_by_device_key(&self, device_key: [u8; 32]) -> Result<Option<(ValidatorInfo, u64)>, TransitError> {
        let rows = self
            .directory
            .read(
                "SELECT v.id, v.operator_id, v.route_id, v.stop_id, COALESCE((SELECT MAX(t.sequence) FROM taps t WHERE t.validator_id = v.id), 0), v.created_at
                 FROM validators v WHERE v.device_key = ?1 ORDER BY v.created_at, v.id",
                vec![Value::Blob(device_key.to_vec())],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let info = ValidatorInfo {
            id: u32::try_from(int_at(row, 0)?).unwrap_or(0),
            operator: u64::try_from(int_at(row, 1)?).unwrap_or(0),
            route_id: text_at(row, 2)?,
            stop_id: text_at(row, 3)?,
            registered_at: u64::try_from(int_at(row, 5)?).unwrap_or(0),
        };
        Ok(Some((info, u64::try_from(int_at(row, 4)?).unwrap_or(0))))
    }

    /// A validator and its device key.
    pub async fn validator(&self, id: u32) -> Result<(ValidatorInfo, [u8; 32]), TransitError> {
        let rows = self
            .directory
            .read("SELECT operator_id, route_id, stop_id, device_key, created_at FROM validators WHERE id = ?1", vec![int(i64::from(id))])
            .await?;
        let row = rows.first().ok_or(TransitError::UnknownValidator)?;
        let key: [u8; 32] = blob_at(row, 3)?.try_into().map_err(|_| DirectoryError::Storage("device key".into()))?;
        let info = ValidatorInfo {
            id,
            operator: u64::try_from(int_at(row, 0)?).unwrap_or(0),
            route_id: text_at(row, 1)?,
            stop_id: text_at(row, 2)?,
            registered_at: u64::try_from(int_at(row, 4)?).unwrap_or(0),
        };
        Ok((info, key))
    }

    /// Stores a validator's taps. The caller has authenticated the device (its signature over
    /// the upload). Idempotent per (validator, sequence): a tap stored before is answered as
    /// already there; another tap under its number is refused, and so is a tap that cannot be
    /// true (dated after the upload or before the validator was registered, beyond the clock
    /// skew, or for a rider never credentialed). Each tap is answered on its own: the good ones
    /// are written together. A code used on two taps is found by the fare run.
    pub async fn upload_taps(&self, validator: &ValidatorInfo, taps: &[citypay_ride::Tap]) -> Result<UploadReport, TransitError> {
        if taps.iter().any(|t| t.validator_id != validator.id) {
            return Err(TransitError::InvalidField { field: "validator_id", message: "a tap of another validator".into() });
        }
        // Both are stored in signed 64-bit columns.
        if taps.iter().any(|t| i64::try_from(t.sequence).is_err() || i64::try_from(t.account_ref).is_err()) {
            return Err(TransitError::InvalidField { field: "sequence", message: "sequence and account_ref fit in 63 bits".into() });
        }
        let (Some(low), Some(high)) = (taps.iter().map(|t| t.sequence).min(), taps.iter().map(|t| t.sequence).max()) else {
            return Ok(UploadReport::default());
        };
        let rows = self
            .directory
            .read(
                "SELECT sequence, account_ref, direction, at, code_hash FROM taps WHERE validator_id = ?1 AND sequence >= ?2 AND sequence <= ?3",
                vec![int(i64::from(validator.id)), uint(low), uint(high)],
            )
            .await?;
        let mut first: HashMap<u64, StoredTap> = HashMap::with_capacity(rows.len() + taps.len());
        for row in &rows {
            let tap = StoredTap { account_ref: int_at(row, 1)?, inbound: text_at(row, 2)? == "in", at: int_at(row, 3)?, code_hash: blob_at(row, 4)? };
            first.insert(u64::try_from(int_at(row, 0)?).unwrap_or(u64::MAX), tap);
        }
        let credentialed = self.credentialed(taps).await?;
        let now = self.now_s();
        let mut report = UploadReport::default();
        let mut new = Vec::new();
        for tap in taps {
            let this = StoredTap::of(tap);
            if let Some(stored) = first.get(&tap.sequence) {
                if *stored == this {
                    report.already += 1;
                } else {
                    report.refused.push((tap.sequence, TapRefusal::SequenceConflict));
                }
                continue;
            }
            let time = u64::from(tap.time);
            let refusal = if time > now.saturating_add(CLOCK_SKEW_S) {
                Some(TapRefusal::DatedAfterUpload)
            } else if time.saturating_add(CLOCK_SKEW_S) < validator.registered_at {
                Some(TapRefusal::DatedBeforeRegistration)
            } else if !credentialed.contains(&tap.account_ref) {
                Some(TapRefusal::UnknownRider)
            } else {
                None
            };
            match refusal {
                Some(refusal) => report.refused.push((tap.sequence, refusal)),
                None => {
                    first.insert(tap.sequence, this);
                    new.push(tap);
                }
            }
        }
        for chunk in new.chunks(UPLOAD_ROWS_MAX) {
            let rows = chunk.iter().map(|tap| self.tap_row(validator, tap, now)).collect();
            // Ignore: a concurrent upload of the same taps wrote them first.
            let command = Command { event: None, guards: Vec::new(), rows, always_rows: Vec::new() };
            self.submit(command).await?.map_err(|_| TransitError::Unavailable("tap upload".into()))?;
        }
        report.stored = u64::try_from(new.len()).unwrap_or(0);
        tracing::debug!(validator = validator.id, taps = taps.len(), stored = report.stored, already = report.already, refused = report.refused.len(), "taps uploaded");
        Ok(report)
    }

    /// The account references of `taps` that the platform issued a credential to (each has a
    /// ride account from its first credential on).
    async fn credentialed(&self, taps: &[citypay_ride::Tap]) -> Result<std::collections::HashSet<u64>, TransitError> {
        let wanted: std::collections::BTreeSet<u64> = taps.iter().map(|t| t.account_ref).collect();
        let wanted: Vec<u64> = wanted.into_iter().collect();
        let mut found = std::collections::HashSet::with_capacity(wanted.len());
        // One statement for every chunk: a short chunk repeats its last reference.
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            let placeholders: Vec<String> = (1..=RIDERS_LOOKED_UP_MAX).map(|i| format!("?{i}")).collect();
            format!("SELECT account_ref FROM ride_accounts WHERE account_ref IN ({})", placeholders.join(", "))
        });
        for chunk in wanted.chunks(RIDERS_LOOKED_UP_MAX) {
            let last = chunk.last().copied().unwrap_or(0);
            let params = chunk.iter().copied().chain(std::iter::repeat(last)).take(RIDERS_LOOKED_UP_MAX).map(uint).collect();
            for row in self.directory.read(sql, params).await? {
                found.insert(u64::try_from(int_at(&row, 0)?).unwrap_or(0));
            }
        }
        Ok(found)
    }

    fn tap_row(&self, validator: &ValidatorInfo, tap: &citypay_ride::Tap, now: u64) -> ServiceRow {
        ServiceRow {
            table: "taps",
            key: vec![("validator_id", int(i64::from(validator.id))), ("sequence", uint(tap.sequence))],
            columns: vec![
                ("account_ref", uint(tap.account_ref)),
                ("route_id", Value::Text(validator.route_id.clone())),
                ("stop_id", Value::Text(validator.stop_id.clone())),
                ("direction", Value::Text(match tap.direction {
                    citypay_ride::Direction::In => "in".into(),
                    citypay_ride::Direction::Out => "out".into(),
                })),
                ("at", int(i64::from(tap.time))),
                ("service_day", int(citypay_fares::service_day(i64::from(tap.time)))),
                ("code_hash", Value::Blob(tap.code_hash.to_vec())),
                ("flagged", int(0)),
                ("uploaded_at", uint(now)),
            ],
            on_conflict: OnConflict::Ignore,
        }
    }

    /// Prices and debits every rider's taps of `service_day` (see [`citypay_fares::service_day`]),
    /// once the day and its cut-off for late uploads are over.
    pub async fn fare_day(&self, service_day: i64) -> Result<FareRun, TransitError> {
        let day_end = (service_day + 1) * 86_400 + citypay_fares::SERVICE_DAY_START_S - citypay_fares::UTC_OFFSET_S;
        if i64::try_from(self.now_s()).unwrap_or(i64::MAX) < day_end + FARE_CUTOFF_S {
            return Err(TransitError::DayNotClosed(service_day));
        }
        let mut run = FareRun::default();
        let read = |(low, high): (i64, i64)| {
            let this = self.clone();
            tokio::spawn(async move { this.directory.read(DAY_TAPS, vec![int(service_day), int(low), int(high)]).await })
        };
        let mut ranges = fare_ranges().into_iter();
        let mut reading = ranges.next().map(read);
        let mut riders = std::collections::VecDeque::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut stopped = None;
        loop {
            while tasks.len() < RIDERS_IN_FLIGHT {
                if let Some(rider) = riders.pop_front() {
                    let this = self.clone();
                    tasks.spawn(async move { this.fare_rider(service_day, rider).await });
                    continue;
                }
                let Some(range) = reading.take() else { break };
                let next = async {
                    let rows = range.await.map_err(|e| TransitError::Unavailable(format!("reading the day's taps: {e}")))??;
                    let (more, copies) = riders_of(&rows)?;
                    self.flag_copies(&copies).await?;
                    Ok::<_, TransitError>((more, copies.len()))
                };
                match next.await {
                    Ok((more, copies)) => {
                        run.duplicates += u64::try_from(copies).unwrap_or(0);
                        riders.extend(more);
                        reading = ranges.next().map(read);
                    }
                    // No more riders are started; those in flight finish (and are counted)
                    // before the error is answered, so nothing is cut off half-way.
                    Err(error) => stopped = Some(error),
                }
            }
            let Some(joined) = tasks.join_next().await else { break };
            // One rider's failure (a conflicting run, storage trouble) must not stop the others;
            // the next run picks that rider up again.
            let Ok(Ok((day, charged))) = joined else {
                run.failed += 1;
                continue;
            };
            run.riders += 1;
            run.trips += day.trips;
            match charged {
                Charged::Moved(fen) => run.charged += fen,
                Charged::Arrears(fen) => {
                    run.arrears += 1;
                    run.arrears_amount += fen;
                }
                Charged::Unchanged => run.unchanged += 1,
            }
            run.days.push(day);
        }
        if let Some(error) = stopped {
            return Err(error);
        }
        run.days.sort_by_key(|d| d.account_ref);
        tracing::debug!(service_day, riders = run.riders, trips = run.trips, charged = run.charged, arrears = run.arrears, failed = run.failed, "fare run");
        Ok(run)
    }

    /// Marks copied codes' taps (they are never fared).
    async fn flag_copies(&self, copies: &[(i64, i64, bool)]) -> Result<(), TransitError> {
        let unflagged: Vec<&(i64, i64, bool)> = copies.iter().filter(|(_, _, flagged)| !flagged).collect();
        for chunk in unflagged.chunks(UPLOAD_ROWS_MAX) {
            let rows = chunk
                .iter()
                .map(|(validator, sequence, _)| ServiceRow {
                    table: "taps",
                    key: vec![("validator_id", int(*validator)), ("sequence", int(*sequence))],
                    columns: vec![("flagged", int(1))],
                    on_conflict: OnConflict::UpdateOnly,
                })
                .collect();
            let command = Command { event: None, guards: Vec::new(), rows, always_rows: Vec::new() };
            self.submit(command).await?.map_err(|_| TransitError::Unavailable("flagging copied codes".into()))?;
        }
        Ok(())
    }

    async fn fare_rider(&self, service_day: i64, rider: RiderTaps) -> Result<(RiderDay, Charged), TransitError> {
        let fares = citypay_fares::fare_day(&self.feed, &rider.taps);
        let trips = i64::try_from(fares.trips.len()).unwrap_or(0);
        let shares = rider.shares(&fares);
        let charge = DayCharge { account_ref: rider.account_ref, resident: rider.resident, service_day, trips, due: fares.total_fen, shares };
        let (charged, in_arrears) = self.charge_day(&charge).await?;
        let day = RiderDay {
            account_ref: rider.account_ref,
            trips: u64::try_from(trips).unwrap_or(0),
            legs: fares.trips.iter().map(|t| u64::try_from(t.legs.len()).unwrap_or(0)).sum(),
            due: fares.total_fen,
            moved: if let Charged::Moved(fen) = charged { fen } else { 0 },
            in_arrears,
        };
        Ok((day, charged))
    }

    /// Moves, for each operator of a rider's day, what its legs are due minus what it was paid
    /// before. Every write to the day's row raises its revision, and the ledger id derives
    /// from the revision it creates, so a due that returns to an earlier value is a new
    /// movement, never a replay of an old one; a refused movement raises it too, so the next
    /// run tries again under a new id. Answers what it did and whether fares of the day are
    /// still owed.
    async fn charge_day(&self, c: &DayCharge) -> Result<(Charged, bool), TransitError> {
        let key = vec![("account_ref", uint(c.account_ref)), ("service_day", int(c.service_day))];
        let existing = self
            .directory
            .read(
                "SELECT c.charged, c.revision, a.amount, s.operator_id, s.legs, s.due, s.charged FROM transit_charges c
                 LEFT JOIN arrears a ON a.account_ref = c.account_ref AND a.service_day = c.service_day AND a.paid_at IS NULL
                 LEFT JOIN transit_shares s ON s.account_ref = c.account_ref AND s.service_day = c.service_day
                 WHERE c.account_ref = ?1 AND c.service_day = ?2",
                vec![uint(c.account_ref), int(c.service_day)],
            )
            .await?;
        let (charged, revision, arrears_open) = match existing.first() {
            Some(row) => (int_at(row, 0)?, int_at(row, 1)?, !matches!(row.get(2), Some(Value::Null) | None)),
            None => (0, 0, false),
        };
        let mut shares = BTreeMap::new();
        for row in existing.iter().filter(|row| !matches!(row.get(3), Some(Value::Null) | None)) {
            let share = Share { legs: int_at(row, 4)?, due: int_at(row, 5)?, charged: int_at(row, 6)? };
            shares.insert(u64::try_from(int_at(row, 3)?).unwrap_or(0), share);
        }
        let due_before = shares.iter().filter(|(_, s)| s.due != 0 || s.legs != 0).map(|(op, s)| (*op, s.legs, s.due));
        let due_now = c.shares.iter().map(|(op, s)| (*op, s.legs, s.due));
        if !existing.is_empty() && due_before.eq(due_now) {
            return Ok((Charged::Unchanged, arrears_open));
        }
        // An operator no longer in the day is due nothing: what it was paid goes back.
        for share in shares.values_mut() {
            *share = Share { legs: 0, due: 0, charged: share.charged };
        }
        for (operator, share) in &c.shares {
            let before = shares.entry(*operator).or_default();
            *before = Share { charged: before.charged, ..*share };
        }
        let delta = c.due - charged;
        let wallet = account_id(AccountKind::Wallet, c.resident);
        let now = self.now_s();
        // One operator named on the day's row and its arrears (the lowest id; each operator's
        // part is in `transit_shares`).
        let first_operator = c.shares.keys().next().or_else(|| shares.keys().next()).copied().unwrap_or(0);
        let rows_at = |paid: bool| {
            let charge_row = ServiceRow {
                table: "transit_charges",
                key: key.clone(),
                columns: vec![
                    ("operator_id", uint(first_operator)),
                    ("trips", int(c.trips)),
                    ("due", int(c.due)),
                    ("charged", int(if paid { c.due } else { charged })),
                    ("revision", int(revision + 1)),
                    ("updated_at", uint(now)),
                ],
                on_conflict: OnConflict::Update,
            };
            let mut rows = vec![charge_row];
            for (operator, share) in &shares {
                let share = if paid { Share { charged: share.due, ..*share } } else { *share };
                rows.push(share_row(c.account_ref, c.service_day, *operator, &share));
            }
            rows
        };
        let guard = match existing.first() {
            None => Guard::Absent { table: "transit_charges", key: key.clone() },
            Some(_) => Guard::Matches { table: "transit_charges", key: key.clone(), expect: vec![("revision", int(revision))] },
        };
        let id = ordered_event_id(fare_order(c.service_day, c.account_ref), &["transit-day", &c.account_ref.to_string(), &c.service_day.to_string(), &(revision + 1).to_string()]);
        let event = movement(id, movement_legs(wallet, c.account_ref, &shares, codes::FARE));
        let mut rows = rows_at(true);
        if arrears_open {
            // Charged in full now: what was owed for the day is settled with it.
            rows.push(ServiceRow { table: "arrears", key: key.clone(), columns: vec![("paid_at", uint(now))], on_conflict: OnConflict::UpdateOnly });
        }
        let command = Command { event, guards: vec![guard.clone()], rows, always_rows: Vec::new() };
        let changed = || TransitError::Unavailable("the rider's day changed meanwhile; run again".into());
        match self.submit(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => Ok((Charged::Moved(delta), false)),
            // Only a wallet that cannot pay makes arrears; any other refusal is an error (an
            // operator already paid out cannot give back a refund leg: that is not the rider's).
            Ok(outcome) if delta > 0 && self.wallet_refused(outcome.status, wallet, &shares).await? => {
                // The day is recorded as due, the difference as arrears; nothing moves, not
                // even an operator's refund, until the arrears are paid.
                let arrears = ServiceRow {
                    table: "arrears",
                    key: key.clone(),
                    columns: vec![("operator_id", uint(first_operator)), ("amount", int(delta)), ("created_at", uint(now)), ("paid_at", Value::Null)],
                    on_conflict: OnConflict::Update,
                };
                let mut rows = rows_at(false);
                rows.push(arrears);
                let record = Command { event: None, guards: vec![guard], rows, always_rows: Vec::new() };
                match self.submit(record).await? {
                    Ok(_) => Ok((Charged::Arrears(delta), true)),
                    Err(_) => Err(changed()),
                }
            }
            Ok(outcome) => {
                // Recorded as a refused attempt (nothing charged, a new revision), so the next
                // run moves under a new id rather than replaying this refusal for good.
                let record = match existing.first() {
                    Some(_) => refused_attempt(key, revision, now),
                    // A first charge: the day's row with nothing charged and no operator's part
                    // yet, so the next run moves the whole day.
                    None => rows_at(false).swap_remove(0),
                };
                self.submit(Command { event: None, guards: vec![guard], rows: vec![record], always_rows: Vec::new() }).await?.ok();
                Err(TransitError::Refused(outcome.status))
            }
            Err(_) => Err(changed()),
        }
    }

    /// Whether a refused fare movement was the wallet's doing: over its caps (operators have
    /// none), or short of funds even with the refunds in the same entry credited first.
    async fn wallet_refused(&self, status: Status, wallet: u64, shares: &BTreeMap<u64, Share>) -> Result<bool, TransitError> {
        match status {
            Status::ExceedsTransferCap | Status::ExceedsWindowCap => Ok(true),
            Status::InsufficientFunds => {
                let charges: i64 = shares.values().map(|s| (s.due - s.charged).max(0)).sum();
                let refunds: i64 = shares.values().map(|s| (s.charged - s.due).max(0)).sum();
                // From the writer, so it is the balance the refused entry met.
                let account = self.directory.shard().account(wallet).await.map_err(|e| TransitError::Unavailable(e.to_string()))?;
                let available = account.map_or(0, |a| a.balance.available());
                Ok(available + refunds < charges)
            }
            _ => Ok(false),
        }
    }

    /// Account references in arrears or of a frozen wallet: validators refuse their codes.
    pub async fn deny_list(&self) -> Result<Vec<u64>, TransitError> {
        // Riders who owe, and riders whose wallet is frozen: a lost phone's credential stops
        // at the gates from each validator's next download, not only when it expires.
        let rows = self
            .directory
            .read(
                "SELECT account_ref FROM arrears WHERE paid_at IS NULL
                 UNION SELECT a.account_ref FROM ride_accounts a JOIN residents r ON r.id = a.resident_id WHERE r.wallet_frozen <> 0
                 ORDER BY 1",
                Vec::new(),
            )
            .await?;
        rows.iter().map(|r| Ok(u64::try_from(int_at(r, 0)?).unwrap_or(0))).collect()
    }

    /// Pays every open arrears of the rider from their wallet, each operator its part;
    /// returns the fen paid. A refused payment (the wallet was short) raises the day's
    /// revision, so a payment after a top-up is a new ledger entry, not the refusal replayed.
    pub async fn pay_arrears(&self, resident: &Resident) -> Result<i64, TransitError> {
        // Someone who never rode owes nothing (and gets no ride account from asking).
        let Some(account_ref) = self.existing_account_ref(resident).await? else { return Ok(0) };
        let open = self
            .directory
            .read(
                "SELECT a.service_day, a.amount, c.due, c.revision, s.operator_id, s.legs, s.due, s.charged FROM arrears a
                 JOIN transit_charges c ON c.account_ref = a.account_ref AND c.service_day = a.service_day
                 JOIN transit_shares s ON s.account_ref = a.account_ref AND s.service_day = a.service_day
                 WHERE a.account_ref = ?1 AND a.paid_at IS NULL ORDER BY a.service_day, s.operator_id",
                vec![uint(account_ref)],
            )
            .await?;
        let mut days: BTreeMap<i64, (i64, i64, i64, BTreeMap<u64, Share>)> = BTreeMap::new();
        for row in &open {
            let day = days.entry(int_at(row, 0)?).or_insert((int_at(row, 1)?, int_at(row, 2)?, int_at(row, 3)?, BTreeMap::new()));
            let share = Share { legs: int_at(row, 5)?, due: int_at(row, 6)?, charged: int_at(row, 7)? };
            day.3.insert(u64::try_from(int_at(row, 4)?).unwrap_or(0), share);
        }
        let mut paid = 0;
        for (day, (amount, due, revision, shares)) in days {
            let key = vec![("account_ref", uint(account_ref)), ("service_day", int(day))];
            let now = self.now_s();
            let id = derived_event_id(&["transit-arrears", &account_ref.to_string(), &day.to_string(), &(revision + 1).to_string()]);
            let mut rows = vec![
                ServiceRow {
                    table: "transit_charges",
                    key: key.clone(),
                    columns: vec![("charged", int(due)), ("revision", int(revision + 1)), ("updated_at", uint(now))],
                    on_conflict: OnConflict::UpdateOnly,
                },
                ServiceRow { table: "arrears", key: key.clone(), columns: vec![("paid_at", uint(now))], on_conflict: OnConflict::UpdateOnly },
            ];
            rows.extend(shares.iter().map(|(operator, share)| share_row(account_ref, day, *operator, &Share { charged: share.due, ..*share })));
            let command = Command {
                event: movement(id, movement_legs(resident.wallet, account_ref, &shares, codes::ARREARS)),
                // The revision: a fare run that changed the day meanwhile (and the arrears
                // with it) makes this payment fail rather than pay a stale amount.
                // And a frozen wallet pays nothing, arrears included, checked in the same batch.
                guards: vec![
                    Guard::Matches { table: "transit_charges", key: key.clone(), expect: vec![("revision", int(revision))] },
                    Directory::wallet_not_frozen(resident.id),
                ],
                rows,
                // A refused payment raises the revision too: the ledger answers an id it
                // refused with that refusal again, so the next try (after a top-up) needs a
                // new id.
                always_rows: vec![refused_attempt(key, revision, now)],
            };
            match self.submit(command).await? {
                Ok(outcome) if outcome.status == Status::Ok => {
                    tracing::debug!(resident = resident.id, service_day = day, amount, "arrears paid");
                    paid += amount;
                }
                Ok(outcome) => {
                    tracing::debug!(resident = resident.id, service_day = day, status = outcome.status.name(), "arrears payment refused");
                    return Err(TransitError::Refused(outcome.status));
                }
                Err(1) => return Err(DirectoryError::WalletFrozen.into()),
                Err(_) => return Err(TransitError::Unavailable("the arrears changed meanwhile; retry".into())),
            }
        }
        Ok(paid)
    }

    /// The rider's account reference, if they have one (a read; never creates it).
    async fn existing_account_ref(&self, resident: &Resident) -> Result<Option<u64>, TransitError> {
        let rows = self
            .directory
            .read("SELECT account_ref FROM ride_accounts WHERE resident_id = ?1", vec![uint(resident.id)])
            .await?;
        rows.first().map(|row| Ok(u64::try_from(int_at(row, 0)?).unwrap_or(0))).transpose()
    }

    /// A rider's fared service day: (trips, due, charged, still owed), if they travelled.
    pub async fn rider_day(&self, resident: &Resident, service_day: i64) -> Result<Option<(u64, i64, i64, i64)>, TransitError> {
        let Some(account_ref) = self.existing_account_ref(resident).await? else { return Ok(None) };
        let rows = self
            .directory
            .read(
                "SELECT c.trips, c.due, c.charged, COALESCE(a.amount, 0) FROM transit_charges c
                 LEFT JOIN arrears a ON a.account_ref = c.account_ref AND a.service_day = c.service_day AND a.paid_at IS NULL
                 WHERE c.account_ref = ?1 AND c.service_day = ?2",
                vec![uint(account_ref), int(service_day)],
            )
            .await?;
        rows.first()
            .map(|row| Ok((u64::try_from(int_at(row, 0)?).unwrap_or(0), int_at(row, 1)?, int_at(row, 2)?, int_at(row, 3)?)))
            .transpose()
    }

    /// A rider's trips of a service day, priced from their uploaded taps as the fare run
    /// prices them: (fare in fen, how it was reached) per trip, in time order.
    pub async fn rider_trips(&self, resident: &Resident, service_day: i64) -> Result<Vec<(i64, String)>, TransitError> {
        let Some(account_ref) = self.existing_account_ref(resident).await? else { return Ok(Vec::new()) };
        let rows = self.directory.read(RIDER_DAY_TAPS, vec![int(service_day), uint(account_ref)]).await?;
        let (riders, _) = riders_of(&rows)?;
        let taps = riders.into_iter().next().map(|r| r.taps).unwrap_or_default();
        Ok(citypay_fares::fare_day(&self.feed, &taps).trips.into_iter().map(|t| (t.charged_fen, t.reason)).collect())
    }

    /// The legs begun on an operator's lines on a service day, priced as the fare run prices
    /// them, ordered by rider then time: at most `limit`, after `after` (a rider's account
    /// reference and the time of the last leg seen).
    pub async fn operator_legs(&self, operator: u64, service_day: i64, after: Option<(u64, i64)>, limit: usize) -> Result<Vec<OperatorLeg>, TransitError> {
        let (from_rider, after_time) = after.unwrap_or((0, i64::MIN));
        let mut legs = Vec::new();
        let mut next_rider = from_rider;
        while legs.len() < limit {
            let wanted = limit - legs.len();
            let page = vec![int(service_day), uint(operator), uint(next_rider), uint(wanted as u64)];
            let riders = self.directory.read(OPERATOR_RIDERS, page.clone()).await?;
            let Some(last) = riders.last() else { break };
            let last = int_at(last, 0)?;
            let rows = self.directory.read(RIDERS_DAY_TAPS, page).await?;
            let (day_riders, _) = riders_of(&rows)?;
            for rider in &day_riders {
                let fares = citypay_fares::fare_day(&self.feed, &rider.taps);
                let operator_of = rider.operator_of();
                for leg in fares.trips.iter().flat_map(|t| &t.legs) {
                    let tap = &leg.tap_in;
                    let skip = rider.account_ref == from_rider && tap.time_unix_s <= after_time;
                    if skip || operator_of(tap) != operator {
                        continue;
                    }
                    legs.push(OperatorLeg {
                        account_ref: rider.account_ref,
                        route_id: tap.route_id.clone(),
                        from_stop: tap.stop_id.clone(),
                        from_time: tap.time_unix_s,
                        to_stop: leg.tap_out.as_ref().map(|t| t.stop_id.clone()),
                        to_time: leg.tap_out.as_ref().map(|t| t.time_unix_s),
                        tap_out_missing: leg.tap_out_missing,
                        base_fen: leg.base_fen,
                        fare_fen: leg.charged_fen,
                    });
                }
            }
            if riders.len() < wanted {
                break;
            }
            next_rider = u64::try_from(last).unwrap_or(u64::MAX).saturating_add(1);
        }
        legs.truncate(limit);
        Ok(legs)
    }

    /// An operator's legs and fare revenue of a service day: the legs begun on its lines and
    /// their fares after transfers and the cap (charged, plus arrears still owed).
    pub async fn revenue(&self, operator: u64, service_day: i64) -> Result<(u64, i64), TransitError> {
        let rows = self
            .directory
            .read(
                "SELECT CAST(COALESCE(SUM(legs), 0) AS BIGINT), CAST(COALESCE(SUM(due), 0) AS BIGINT) FROM transit_shares WHERE operator_id = ?1 AND service_day = ?2",
                vec![uint(operator), int(service_day)],
            )
            .await?;
        let row = rows.first().ok_or_else(|| DirectoryError::Storage("no sum".into()))?;
        Ok((u64::try_from(int_at(row, 0)?).unwrap_or(0), int_at(row, 1)?))
    }
}

#[cfg(test)]
mod fare_run_ranges {
    use super::fare_ranges;

    #[test]
    fn the_ranges_cover_every_reference_once_in_order() {
        let ranges = fare_ranges();
        assert_eq!(ranges.first().map(|r| r.0), Some(i64::MIN));
        assert_eq!(ranges.last().map(|r| r.1), Some(i64::MAX));
        for pair in ranges.windows(2) {
            assert!(pair[0].0 <= pair[0].1, "{pair:?}");
            assert_eq!(pair[0].1 + 1, pair[1].0, "no gap, no overlap: {pair:?}");
        }
    }
}
