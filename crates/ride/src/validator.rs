//! The offline validator a gate or bus embeds.

use std::collections::{HashMap, HashSet, VecDeque};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::code::RideCode;
use crate::keys::{PlatformKeyring, UnixTime};

/// Why a code was refused. Checks run in the order of the variants below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The input has the wrong length (or is empty).
    #[error("malformed code: expected {expected} bytes, got {actual}")]
    Malformed {
        /// The layout length.
        expected: usize,
        /// The input length.
        actual: usize,
    },
    /// The version byte is not [`crate::CODE_VERSION`].
    #[error("unsupported code version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// No platform key with this id in the keyring.
    #[error("unknown platform key {key_id}")]
    UnknownKey {
        /// The credential's key id.
        key_id: u16,
    },
    /// The platform key was revoked.
    #[error("platform key {key_id} is revoked")]
    RevokedKey {
        /// The credential's key id.
        key_id: u16,
    },
    /// The credential's `valid_from` (issue time) is outside the key's validity window.
    #[error("platform key {key_id} was not valid when the credential was issued")]
    KeyNotValidAtIssue {
        /// The credential's key id.
        key_id: u16,
    },
    /// The platform key's `not_after` has passed.
    #[error("platform key {key_id} has expired")]
    KeyExpired {
        /// The credential's key id.
        key_id: u16,
    },
    /// `now` is before the credential's `valid_from` (beyond the skew tolerance).
    #[error("credential not yet valid")]
    CredentialNotYetValid,
    /// `now` is after the credential's `valid_until`.
    #[error("credential expired")]
    CredentialExpired,
    /// The account is on the deny list.
    #[error("account {account_ref} is denied")]
    Denied {
        /// The credential's account reference.
        account_ref: u64,
    },
    /// The rider public key in the credential is not a usable Ed25519 key.
    #[error("rider key is not a valid Ed25519 public key")]
    BadRiderKey,
    /// The platform signature over the credential does not verify.
    #[error("bad credential signature")]
    BadCredentialSignature,
    /// The rider signature over the code does not verify.
    #[error("bad code signature")]
    BadCodeSignature,
    /// The code's timestamp is older than the freshness window.
    #[error("code is stale")]
    Stale,
    /// The code's timestamp is further ahead than the skew tolerance.
    #[error("code is from the future")]
    FromTheFuture,
    /// This validator has already accepted this code.
    #[error("code already used")]
    Replayed,
    /// The taps this validator accepted under the credential, at its fare estimate, would go
    /// over the credential's deferred-debit ceiling.
    #[error("the credential's spending ceiling of {ceiling_fen} fen is reached on this validator")]
    CeilingReached {
        /// The credential's ceiling.
        ceiling_fen: u32,
    },
}

/// Travel direction at the scan point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Boarding or entering.
    In,
    /// Alighting or exiting.
    Out,
}

/// Where a scan happens: the device, its stop or route, and the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// The validator device id.
    pub validator_id: u32,
    /// The stop (metro gate) or route (bus) id.
    pub stop_or_route: u32,
    /// In or out.
    pub direction: Direction,
}

/// An accepted scan, to be uploaded later and debited afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tap {
    /// The validator device id.
    pub validator_id: u32,
    /// Monotonic per validator id, starting at 1.
    pub sequence: u64,
    /// The stop or route id.
    pub stop_or_route: u32,
    /// In or out.
    pub direction: Direction,
    /// Validator time of the scan.
    pub time: UnixTime,
    /// The credential's account reference.
    pub account_ref: u64,
    /// [`RideCode::code_hash`] of the code.
    pub code_hash: [u8; 32],
}

/// Validator tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How old a code's timestamp may be, in seconds.
    pub max_age_s: u32,
    /// Clock-skew tolerance: how far ahead of `now` a code's timestamp (or a credential's
    /// `valid_from`) may be, in seconds.
    pub max_ahead_s: u32,
    /// How many accepted code hashes are remembered for replay detection (oldest evicted first).
    /// Size it above the taps expected within `max_age_s + max_ahead_s`.
    pub seen_capacity: usize,
    /// How many verified credentials are cached (oldest evicted first); as many credentials'
    /// spending are counted.
    pub cache_capacity: usize,
    /// The most one boarding or gate entry here can cost, in fen (the platform's fare estimate
    /// for this route and stop); 0 counts nothing. Entries are counted per credential, and
    /// one that would take the count over the credential's ceiling is refused.
    pub fare_estimate_fen: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_age_s: 60,
            max_ahead_s: 10,
            seen_capacity: 8192,
            cache_capacity: 4096,
            fare_estimate_fen: 0,
        }
    }
}

/// A map from 32-byte hashes with first-in-first-out eviction (a set when `V` is `()`).
#[derive(Debug, Clone)]
struct Bounded<V> {
    map: HashMap<[u8; 32], V>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl<V> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn contains(&self, h: &[u8; 32]) -> bool {
        self.map.contains_key(h)
    }

    fn get(&self, h: &[u8; 32]) -> Option<&V> {
        self.map.get(h)
    }

    fn insert(&mut self, h: [u8; 32], value: V) {
        if self.capacity == 0 || self.map.insert(h, value).is_some() {
            return;
        }
        self.order.push_back(h);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A decoded code that passed every check but the signatures, freshness and replay.
#[derive(Debug)]
struct Pending {
    code: RideCode,
    platform_key: VerifyingKey,
    rider_key: VerifyingKey,
    credential_hash: [u8; 32],
}

impl Pending {
    fn credential_triple(&self) -> (Vec<u8>, Signature, VerifyingKey) {
        let c = &self.code.credential;
        (
            c.signed_message(),
            Signature::from_bytes(&c.signature),
            self.platform_key,
        )
    }

    fn code_triple(&self) -> (Vec<u8>, Signature, VerifyingKey) {
        (
            self.code.signed_message(),
            Signature::from_bytes(&self.code.signature),
            self.rider_key,
        )
    }
}

fn verify(triple: &(Vec<u8>, Signature, VerifyingKey)) -> bool {
    let (msg, sig, key) = triple;
    key.verify_strict(msg, sig).is_ok()
}

/// The offline validator: keyring, revocations, deny list, replay memory and credential cache.
#[derive(Debug, Clone)]
pub struct Validator {
    keyring: PlatformKeyring,
    revoked: HashSet<u16>,
    denied: HashSet<u64>,
    seen: Bounded<()>,
    /// Credentials verified, by hash, with their rider key already decompressed.
    credential_cache: Bounded<VerifyingKey>,
    policy: Policy,
    /// Fare estimates of the entries accepted per credential (by its hash), oldest first out.
    spent: Bounded<u32>,
    sequences: HashMap<u32, u64>,
    signature_checks: u64,
    taps: Vec<Tap>,
}

impl Validator {
    /// A validator holding `keyring`, tuned by `policy`.
    pub fn new(keyring: PlatformKeyring, policy: Policy) -> Self {
        Self {
            keyring,
            revoked: HashSet::new(),
            denied: HashSet::new(),
            seen: Bounded::new(policy.seen_capacity),
            credential_cache: Bounded::new(policy.cache_capacity),
            policy,
            spent: Bounded::new(policy.cache_capacity.max(1)),
            sequences: HashMap::new(),
            signature_checks: 0,
            taps: Vec::new(),
        }
    }

    /// The keyring, e.g. to add a newly distributed key.
    pub fn keyring_mut(&mut self) -> &mut PlatformKeyring {
        &mut self.keyring
    }

    /// Revokes a platform key: every credential it signed is refused from now on.
    pub fn revoke_key(&mut self, key_id: u16) {
        self.revoked.insert(key_id);
    }

    /// Puts an account on the deny list (e.g. in arrears).
    pub fn deny_account(&mut self, account_ref: u64) {
        self.denied.insert(account_ref);
    }

    /// Takes an account off the deny list.
    pub fn allow_account(&mut self, account_ref: u64) {
        self.denied.remove(&account_ref);
    }

    /// Continues a device's tap numbering after `sequence` (a replaced or restored device
    /// picks up where the platform's last upload from it ended, so no new tap reuses a number
    /// the platform already holds).
    pub fn continue_sequence(&mut self, validator_id: u32, sequence: u64) {
        let next = self.sequences.entry(validator_id).or_insert(0);
        *next = (*next).max(sequence);
    }

    /// Ed25519 signatures checked so far (a batch counts each signature in it).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks
    }

    /// Number of credentials currently cached as verified.
    pub fn cached_credentials(&self) -> usize {
        self.credential_cache.len()
    }

    /// Accepted taps not yet taken for upload.
    pub fn pending_taps(&self) -> &[Tap] {
        &self.taps
    }

    /// Takes the accepted taps for upload, leaving the queue empty.
    pub fn drain_taps(&mut self) -> Vec<Tap> {
        std::mem::take(&mut self.taps)
    }

    /// Validates one scanned code at validator time `now`; on success records and returns the tap.
    pub fn validate(&mut self, bytes: &[u8], now: UnixTime, gate: Gate) -> Result<Tap, Refusal> {
        let pending = self.precheck(bytes, now)?;
        self.verify_one(&pending)?;
        self.finish(&pending, now, gate)
    }

    /// Validates several codes scanned at the same gate, using one Ed25519 batch verification
    /// for all their signatures. If the batch fails, falls back to checking each code alone,
    /// so each result is the same as [`Validator::validate`] would give, in order.
    pub fn validate_batch(
        &mut self,
        codes: &[&[u8]],
        now: UnixTime,
        gate: Gate,
    ) -> Vec<Result<Tap, Refusal>> {
        let prechecked: Vec<Result<Pending, Refusal>> =
            codes.iter().map(|b| self.precheck(b, now)).collect();
        let pending: Vec<&Pending> = prechecked.iter().filter_map(|p| p.as_ref().ok()).collect();
        let batch_ok = self.verify_batch(&pending);
        prechecked
            .into_iter()
            .map(|p| {
                let p = p?;
                if !batch_ok {
                    self.verify_one(&p)?;
                }
                self.finish(&p, now, gate)
            })
            .collect()
    }

    /// Layout, key, credential period, deny list and rider-key checks: no signature work.
    fn precheck(&self, bytes: &[u8], now: UnixTime) -> Result<Pending, Refusal> {
        let code = RideCode::decode(bytes)?;
        let platform_key = self.check_platform_key(&code, now)?;
        self.check_credential_terms(&code, now)?;
        let credential_hash: [u8; 32] = Sha256::digest(code.credential.to_bytes()).into();
        // A credential seen before has its rider key decompressed already.
        let rider_key = match self.credential_cache.get(&credential_hash) {
            Some(key) => *key,
            None => VerifyingKey::from_bytes(&code.credential.terms.rider_key)
                .ok()
                .filter(|k| !k.is_weak())
                .ok_or(Refusal::BadRiderKey)?,
        };
        Ok(Pending {
            code,
            platform_key,
            rider_key,
            credential_hash,
        })
    }

    fn check_platform_key(&self, code: &RideCode, now: UnixTime) -> Result<VerifyingKey, Refusal> {
        let key_id = code.credential.key_id;
        let key = self
            .keyring
            .get(key_id)
            .ok_or(Refusal::UnknownKey { key_id })?;
        if self.revoked.contains(&key_id) {
            return Err(Refusal::RevokedKey { key_id });
        }
        if !key.validity().contains(code.credential.terms.valid_from) {
            return Err(Refusal::KeyNotValidAtIssue { key_id });
        }
        if now > key.validity().not_after {
            return Err(Refusal::KeyExpired { key_id });
        }
        Ok(*key.verifying_key())
    }

    fn check_credential_terms(&self, code: &RideCode, now: UnixTime) -> Result<(), Refusal> {
        let terms = &code.credential.terms;
        let now = u64::from(now);
        if u64::from(terms.valid_from) > now + u64::from(self.policy.max_ahead_s) {
            return Err(Refusal::CredentialNotYetValid);
        }
        if now > u64::from(terms.valid_until) {
            return Err(Refusal::CredentialExpired);
        }
        if self.denied.contains(&terms.account_ref) {
            return Err(Refusal::Denied {
                account_ref: terms.account_ref,
            });
        }
        Ok(())
    }

    /// Checks the credential signature (unless cached) then the rider signature. A first sight
    /// of a credential checks both signatures in one batch verification (cheaper than two);
    /// only when that fails are they checked one by one, to name the bad one.
    fn verify_one(&mut self, p: &Pending) -> Result<(), Refusal> {
        if !self.credential_cache.contains(&p.credential_hash) && self.verify_batch(&[p]) {
            return Ok(());
        }
        if !self.credential_cache.contains(&p.credential_hash) {
            self.signature_checks += 1;
            if !verify(&p.credential_triple()) {
                return Err(Refusal::BadCredentialSignature);
            }
            self.credential_cache.insert(p.credential_hash, p.rider_key);
        }
        self.signature_checks += 1;
        if !verify(&p.code_triple()) {
            return Err(Refusal::BadCodeSignature);
        }
        Ok(())
    }

    /// One batch verification of every needed signature; caches the credentials on success.
    fn verify_batch(&mut self, pending: &[&Pending]) -> bool {
        let mut triples = Vec::with_capacity(pending.len() * 2);
        let mut new_credentials = HashMap::new();
        for p in pending {
            let cached = self.credential_cache.contains(&p.credential_hash);
            if !cached && new_credentials.insert(p.credential_hash, p.rider_key).is_none() {
                triples.push(p.credential_triple());
            }
            triples.push(p.code_triple());
        }
        if triples.is_empty() {
            return true;
        }
        self.signature_checks += triples.len() as u64;
        let messages: Vec<&[u8]> = triples.iter().map(|t| t.0.as_slice()).collect();
        let signatures: Vec<Signature> = triples.iter().map(|t| t.1).collect();
        let keys: Vec<VerifyingKey> = triples.iter().map(|t| t.2).collect();
        let ok = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
        if ok {
            new_credentials
                .into_iter()
                .for_each(|(h, key)| self.credential_cache.insert(h, key));
        }
        ok
    }

    /// Freshness and replay checks, then records the tap.
    fn finish(&mut self, p: &Pending, now: UnixTime, gate: Gate) -> Result<Tap, Refusal> {
        let ts = u64::from(p.code.timestamp);
        let now64 = u64::from(now);
        if ts + u64::from(self.policy.max_age_s) < now64 {
            return Err(Refusal::Stale);
        }
        if ts > now64 + u64::from(self.policy.max_ahead_s) {
            return Err(Refusal::FromTheFuture);
        }
        let code_hash = p.code.code_hash();
        if self.seen.contains(&code_hash) {
            return Err(Refusal::Replayed);
        }
        self.spend(p, gate)?;
        self.seen.insert(code_hash, ());
        Ok(self.record(gate, now, p.code.credential.terms.account_ref, code_hash))
    }

    /// Counts an entry's fare estimate against the credential's ceiling (exits cost nothing
    /// more: the entry was counted at its line's dearest fare).
    fn spend(&mut self, p: &Pending, gate: Gate) -> Result<(), Refusal> {
        let estimate = self.policy.fare_estimate_fen;
        if estimate == 0 || gate.direction == Direction::Out {
            return Ok(());
        }
        let ceiling_fen = p.code.credential.terms.ceiling_fen;
        let spent = self.spent.get(&p.credential_hash).copied().unwrap_or(0);
        let total = spent.saturating_add(estimate);
        if total > ceiling_fen {
            return Err(Refusal::CeilingReached { ceiling_fen });
        }
        self.spent.insert(p.credential_hash, total);
        Ok(())
    }

    fn record(&mut self, gate: Gate, now: UnixTime, account_ref: u64, code_hash: [u8; 32]) -> Tap {
        let seq = self.sequences.entry(gate.validator_id).or_insert(0);
        *seq += 1;
        let tap = Tap {
            validator_id: gate.validator_id,
            sequence: *seq,
            stop_or_route: gate.stop_or_route,
            direction: gate.direction,
            time: now,
            account_ref,
            code_hash,
        };
        self.taps.push(tap);
        tap
    }
}
