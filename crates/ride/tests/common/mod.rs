//! Shared fixtures for the ride tests.
#![allow(dead_code, unreachable_pub)]

use citypay_ride::{
    Credential, CredentialTerms, Direction, Gate, PlatformKey, PlatformKeyring, Policy, RiderKey,
    UnixTime, Validator, Validity, issue_credential,
};

pub const T0: UnixTime = 1_800_000_000;
pub const DAY: UnixTime = 86_400;
pub const ACCOUNT: u64 = 0x0123_4567_89ab_cdef;

pub const GATE: Gate = Gate {
    validator_id: 7,
    stop_or_route: 301,
    direction: Direction::In,
};

pub fn platform_key(key_id: u16, not_before: UnixTime, not_after: UnixTime) -> PlatformKey {
    let seed = [u8::try_from(key_id % 251).unwrap_or(0).wrapping_add(1); 32];
    PlatformKey::from_seed(key_id, seed, Validity::new(not_before, not_after).unwrap())
}

pub fn rider(n: u8) -> RiderKey {
    RiderKey::from_seed([n.wrapping_add(100); 32])
}

pub fn terms(rider: &RiderKey, account_ref: u64, valid_from: UnixTime) -> CredentialTerms {
    CredentialTerms {
        rider_key: rider.public_bytes(),
        account_ref,
        valid_from,
        valid_until: valid_from + DAY,
        ceiling_fen: 20_000,
    }
}

pub fn credential(key: &PlatformKey, rider: &RiderKey, valid_from: UnixTime) -> Credential {
    issue_credential(key, terms(rider, ACCOUNT, valid_from)).unwrap()
}

pub fn validator_with(keys: &[&PlatformKey]) -> Validator {
    let mut ring = PlatformKeyring::new();
    for k in keys {
        ring.insert(k.public());
    }
    Validator::new(ring, Policy::default())
}

/// One platform key valid for 30 days from T0, a rider, its credential and a validator.
pub struct World {
    pub key: PlatformKey,
    pub rider: RiderKey,
    pub credential: Credential,
    pub validator: Validator,
}

pub fn world() -> World {
    let key = platform_key(1, T0, T0 + 30 * DAY);
    let rider = rider(1);
    let credential = credential(&key, &rider, T0);
    let validator = validator_with(&[&key]);
    World {
        key,
        rider,
        credential,
        validator,
    }
}
