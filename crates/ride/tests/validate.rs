//! Validator behaviour: happy path, every refusal, cache, rotation, tampering, batch.

mod common;

use citypay_ride::{
    CODE_LEN, Direction, Gate, IssueError, PlatformKeyring, Policy, Refusal, RideCode, RiderDevice,
    RiderKey, Validator, issue_credential,
};
use common::*;

fn code_at(w: &World, ts: u32, counter: u32) -> Vec<u8> {
    RideCode::sign(w.credential, &w.rider, ts, counter).encode()
}

#[test]
fn happy_path_records_a_tap() {
    let mut w = world();
    let bytes = code_at(&w, T0 + 100, 1);
    assert_eq!(bytes.len(), CODE_LEN);
    let tap = w.validator.validate(&bytes, T0 + 105, GATE).unwrap();
    assert_eq!(tap.validator_id, 7);
    assert_eq!(tap.sequence, 1);
    assert_eq!(tap.stop_or_route, 301);
    assert_eq!(tap.direction, Direction::In);
    assert_eq!(tap.time, T0 + 105);
    assert_eq!(tap.account_ref, ACCOUNT);
    assert_eq!(tap.code_hash, RideCode::decode(&bytes).unwrap().code_hash());
    assert_eq!(w.validator.pending_taps(), &[tap]);
    assert_eq!(w.validator.drain_taps(), vec![tap]);
    assert!(w.validator.pending_taps().is_empty());
}

#[test]
fn sequences_are_monotonic_per_validator() {
    let mut w = world();
    let other = Gate {
        validator_id: 8,
        direction: Direction::Out,
        ..GATE
    };
    let seqs: Vec<(u32, u64)> = (1..=5)
        .map(|i| {
            let gate = if i % 2 == 0 { other } else { GATE };
            let tap = w
                .validator
                .validate(&code_at(&w, T0 + 100, i), T0 + 100, gate)
                .unwrap();
            (tap.validator_id, tap.sequence)
        })
        .collect();
    assert_eq!(seqs, vec![(7, 1), (8, 1), (7, 2), (8, 2), (7, 3)]);
}

#[test]
fn rider_device_counter_makes_distinct_codes() {
    let mut w = world();
    let mut device = RiderDevice::new(rider(1), w.credential);
    let a = device.next_code(T0 + 10);
    let b = device.next_code(T0 + 10);
    assert_eq!((a.counter, b.counter), (1, 2));
    assert!(w.validator.validate(&a.encode(), T0 + 10, GATE).is_ok());
    assert!(w.validator.validate(&b.encode(), T0 + 10, GATE).is_ok());
}

#[test]
fn refuses_malformed_and_unknown_version() {
    let mut w = world();
    let good = code_at(&w, T0 + 100, 1);
    let v = &mut w.validator;
    assert_eq!(
        v.validate(&[], T0, GATE),
        Err(Refusal::Malformed {
            expected: CODE_LEN,
            actual: 0
        })
    );
    assert_eq!(
        v.validate(&good[..190], T0, GATE),
        Err(Refusal::Malformed {
            expected: CODE_LEN,
            actual: 190
        })
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        v.validate(&long, T0, GATE),
        Err(Refusal::Malformed {
            expected: CODE_LEN,
            actual: 192
        })
    );
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        v.validate(&v2, T0, GATE),
        Err(Refusal::UnsupportedVersion { version: 2 })
    );
    assert_eq!(v.signature_checks(), 0);
}

#[test]
fn refuses_unknown_and_revoked_keys() {
    let mut w = world();
    let bytes = code_at(&w, T0 + 100, 1);
    let mut empty = Validator::new(PlatformKeyring::new(), Policy::default());
    assert_eq!(
        empty.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::UnknownKey { key_id: 1 })
    );
    w.validator.revoke_key(1);
    assert_eq!(
        w.validator.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::RevokedKey { key_id: 1 })
    );
}

#[test]
fn revocation_applies_to_cached_credentials() {
    let mut w = world();
    assert!(
        w.validator
            .validate(&code_at(&w, T0 + 100, 1), T0 + 100, GATE)
            .is_ok()
    );
    w.validator.revoke_key(1);
    let again = code_at(&w, T0 + 100, 2);
    assert_eq!(
        w.validator.validate(&again, T0 + 100, GATE),
        Err(Refusal::RevokedKey { key_id: 1 })
    );
}

#[test]
fn refuses_bad_credential_signature() {
    let mut w = world();
    let other_key = platform_key(1, T0, T0 + 30 * DAY);
    let mut forged = w.credential;
    forged.signature = issue_credential(&platform_key(2, T0, T0 + DAY), forged.terms)
        .unwrap()
        .signature;
    let bytes = RideCode::sign(forged, &w.rider, T0 + 100, 1).encode();
    assert_eq!(
        w.validator.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::BadCredentialSignature)
    );
    // A credential whose terms were raised after signing is refused too.
    let mut raised = issue_credential(&other_key, w.credential.terms).unwrap();
    raised.terms.ceiling_fen = u32::MAX;
    let bytes = RideCode::sign(raised, &w.rider, T0 + 100, 2).encode();
    assert_eq!(
        w.validator.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::BadCredentialSignature)
    );
}

#[test]
fn refuses_expired_and_not_yet_valid_credentials() {
    let mut w = world();
    let end = T0 + DAY;
    let bytes = code_at(&w, end + 1, 1);
    assert_eq!(
        w.validator.validate(&bytes, end + 1, GATE),
        Err(Refusal::CredentialExpired)
    );
    let late = credential(&w.key, &w.rider, T0 + 1000);
    let bytes = RideCode::sign(late, &w.rider, T0 + 900, 2).encode();
    assert_eq!(
        w.validator.validate(&bytes, T0 + 900, GATE),
        Err(Refusal::CredentialNotYetValid)
    );
    // Within the 10 s skew tolerance it is accepted.
    let bytes = RideCode::sign(late, &w.rider, T0 + 995, 3).encode();
    assert!(w.validator.validate(&bytes, T0 + 995, GATE).is_ok());
}

#[test]
fn refuses_denied_accounts_until_allowed() {
    let mut w = world();
    w.validator.deny_account(ACCOUNT);
    let bytes = code_at(&w, T0 + 100, 1);
    assert_eq!(
        w.validator.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::Denied {
            account_ref: ACCOUNT
        })
    );
    w.validator.allow_account(ACCOUNT);
    assert!(w.validator.validate(&bytes, T0 + 100, GATE).is_ok());
}

#[test]
fn refuses_code_signed_by_another_rider() {
    let mut w = world();
    let thief = rider(2);
    let bytes = RideCode::sign(w.credential, &thief, T0 + 100, 1).encode();
    assert_eq!(
        w.validator.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::BadCodeSignature)
    );
}

#[test]
fn refuses_invalid_rider_key() {
    let mut w = world();
    let mut t = terms(&w.rider, ACCOUNT, T0);
    t.rider_key = [0; 32]; // small-order point: weak
    let cred = issue_credential(&w.key, t).unwrap();
    let bytes = RideCode::sign(cred, &w.rider, T0 + 100, 1).encode();
    assert_eq!(
        w.validator.validate(&bytes, T0 + 100, GATE),
        Err(Refusal::BadRiderKey)
    );
}

#[test]
fn refuses_stale_and_future_codes_with_window_edges() {
    let mut w = world();
    let now = T0 + 1000;
    assert_eq!(
        w.validator.validate(&code_at(&w, now - 61, 1), now, GATE),
        Err(Refusal::Stale)
    );
    assert!(
        w.validator
            .validate(&code_at(&w, now - 60, 2), now, GATE)
            .is_ok()
    );
    assert_eq!(
        w.validator.validate(&code_at(&w, now + 11, 3), now, GATE),
        Err(Refusal::FromTheFuture)
    );
    assert!(
        w.validator
            .validate(&code_at(&w, now + 10, 4), now, GATE)
            .is_ok()
    );
}

#[test]
fn refuses_replay_on_the_same_device() {
    let mut w = world();
    let bytes = code_at(&w, T0 + 100, 1);
    assert!(w.validator.validate(&bytes, T0 + 100, GATE).is_ok());
    assert_eq!(
        w.validator.validate(&bytes, T0 + 101, GATE),
        Err(Refusal::Replayed)
    );
    let other_gate = Gate {
        validator_id: 9,
        ..GATE
    };
    assert_eq!(
        w.validator.validate(&bytes, T0 + 101, other_gate),
        Err(Refusal::Replayed)
    );
    assert_eq!(w.validator.pending_taps().len(), 1);
}

#[test]
fn replay_memory_is_bounded() {
    let w = world();
    let policy = Policy {
        seen_capacity: 2,
        ..Policy::default()
    };
    let mut ring = PlatformKeyring::new();
    ring.insert(w.key.public());
    let mut v = Validator::new(ring, policy);
    let codes: Vec<Vec<u8>> = (1..=3).map(|i| code_at(&w, T0 + 100, i)).collect();
    codes
        .iter()
        .for_each(|c| assert!(v.validate(c, T0 + 100, GATE).is_ok()));
    assert_eq!(
        v.validate(&codes[2], T0 + 100, GATE),
        Err(Refusal::Replayed)
    );
    // The oldest entry was evicted: the freshness window must cover what the capacity cannot.
    assert!(v.validate(&codes[0], T0 + 100, GATE).is_ok());
}

#[test]
fn credential_cache_saves_a_verification() {
    let mut w = world();
    assert!(
        w.validator
            .validate(&code_at(&w, T0 + 100, 1), T0 + 100, GATE)
            .is_ok()
    );
    assert_eq!(
        w.validator.signature_checks(),
        2,
        "first tap: credential + code"
    );
    assert_eq!(w.validator.cached_credentials(), 1);
    assert!(
        w.validator
            .validate(&code_at(&w, T0 + 110, 2), T0 + 110, GATE)
            .is_ok()
    );
    assert_eq!(w.validator.signature_checks(), 3, "second tap: code only");
    println!("verifications: first tap 2, later taps 1");
}

#[test]
fn credential_cache_is_bounded() {
    let w = world();
    let policy = Policy {
        cache_capacity: 1,
        ..Policy::default()
    };
    let mut ring = PlatformKeyring::new();
    ring.insert(w.key.public());
    let mut v = Validator::new(ring, policy);
    let (r2, r3) = (rider(2), rider(3));
    let c2 = credential(&w.key, &r2, T0);
    let c3 = credential(&w.key, &r3, T0);
    assert!(
        v.validate(&RideCode::sign(c2, &r2, T0 + 5, 1).encode(), T0 + 5, GATE)
            .is_ok()
    );
    assert!(
        v.validate(&RideCode::sign(c3, &r3, T0 + 5, 1).encode(), T0 + 5, GATE)
            .is_ok()
    );
    assert!(
        v.validate(&RideCode::sign(c2, &r2, T0 + 5, 2).encode(), T0 + 5, GATE)
            .is_ok()
    );
    assert_eq!(v.cached_credentials(), 1);
    assert_eq!(
        v.signature_checks(),
        6,
        "c2 was evicted by c3, so it is verified again"
    );
}

#[test]
fn key_rotation_with_overlap() {
    let old = platform_key(1, T0, T0 + 10 * DAY);
    let new = platform_key(2, T0 + 7 * DAY, T0 + 40 * DAY);
    let mut v = validator_with(&[&old, &new]);
    let r = rider(1);
    let overlap = T0 + 8 * DAY;
    let c_old = credential(&old, &r, overlap);
    let c_new = credential(&new, &r, overlap);
    assert!(
        v.validate(
            &RideCode::sign(c_old, &r, overlap, 1).encode(),
            overlap,
            GATE
        )
        .is_ok()
    );
    assert!(
        v.validate(
            &RideCode::sign(c_new, &r, overlap, 2).encode(),
            overlap,
            GATE
        )
        .is_ok()
    );
    // A credential from the old key issued at the end of its window, still within its own period:
    let c_old_late = credential(&old, &r, T0 + 10 * DAY - 60);
    let after = T0 + 10 * DAY + 1;
    let late_old = RideCode::sign(c_old_late, &r, after, 3).encode();
    assert_eq!(
        v.validate(&late_old, after, GATE),
        Err(Refusal::KeyExpired { key_id: 1 })
    );
    let c_new_later = credential(&new, &r, after);
    assert!(
        v.validate(
            &RideCode::sign(c_new_later, &r, after, 4).encode(),
            after,
            GATE
        )
        .is_ok()
    );
}

#[test]
fn credential_issued_outside_key_window_is_refused() {
    let key = platform_key(1, T0, T0 + DAY);
    let r = rider(1);
    let t = terms(&r, ACCOUNT, T0 + 2 * DAY);
    assert_eq!(
        issue_credential(&key, t),
        Err(IssueError::KeyNotValid { key_id: 1 })
    );
    // The validator enforces it too, even for a credential signed with the key regardless.
    let wide = platform_key(1, T0, T0 + 5 * DAY);
    let cred = issue_credential(&wide, t).unwrap();
    let mut v = validator_with(&[&key]);
    let now = T0 + 2 * DAY;
    let bytes = RideCode::sign(cred, &r, now, 1).encode();
    assert_eq!(
        v.validate(&bytes, now, GATE),
        Err(Refusal::KeyNotValidAtIssue { key_id: 1 })
    );
    let mut bad = t;
    bad.valid_until = bad.valid_from - 1;
    assert_eq!(issue_credential(&wide, bad), Err(IssueError::EmptyPeriod));
}

#[test]
fn tampering_any_byte_is_refused() {
    let w = world();
    let bytes = code_at(&w, T0 + 100, 1);
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut v = world().validator;
            let mut t = bytes.clone();
            t[i] ^= flip;
            let r = v.validate(&t, T0 + 100, GATE);
            assert!(r.is_err(), "byte {i} flip {flip:#x} accepted");
        }
    }
}

#[test]
fn batch_accepts_good_codes_with_one_batch() {
    let mut w = world();
    let r2: RiderKey = rider(2);
    let c2 = credential(&w.key, &r2, T0);
    let codes = [
        code_at(&w, T0 + 100, 1),
        code_at(&w, T0 + 100, 2),
        RideCode::sign(c2, &r2, T0 + 100, 1).encode(),
    ];
    let refs: Vec<&[u8]> = codes.iter().map(Vec::as_slice).collect();
    let results = w.validator.validate_batch(&refs, T0 + 100, GATE);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let seqs: Vec<u64> = results.iter().flatten().map(|t| t.sequence).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(
        w.validator.signature_checks(),
        5,
        "3 codes + 2 distinct credentials"
    );
    assert_eq!(w.validator.cached_credentials(), 2);
}

#[test]
fn batch_isolates_bad_codes_and_duplicates() {
    let mut w = world();
    let good = code_at(&w, T0 + 100, 1);
    let forged = RideCode::sign(w.credential, &rider(9), T0 + 100, 2).encode();
    let stale = code_at(&w, T0, 3);
    let codes: [&[u8]; 5] = [&good, &forged, &good, &stale, &[1, 2, 3]];
    let results = w.validator.validate_batch(&codes, T0 + 100, GATE);
    assert!(results[0].is_ok());
    assert_eq!(results[1], Err(Refusal::BadCodeSignature));
    assert_eq!(results[2], Err(Refusal::Replayed));
    assert_eq!(results[3], Err(Refusal::Stale));
    assert_eq!(
        results[4],
        Err(Refusal::Malformed {
            expected: CODE_LEN,
            actual: 3
        })
    );
}

#[test]
fn empty_batch_is_empty() {
    let mut w = world();
    assert!(w.validator.validate_batch(&[], T0, GATE).is_empty());
    assert_eq!(w.validator.signature_checks(), 0);
}

#[test]
fn batch_falls_back_to_find_a_bad_credential() {
    let mut w = world();
    let mut forged = w.credential;
    forged.terms.ceiling_fen += 1;
    let good = code_at(&w, T0 + 100, 1);
    let bad = RideCode::sign(forged, &w.rider, T0 + 100, 2).encode();
    let results = w.validator.validate_batch(&[&bad, &good], T0 + 100, GATE);
    assert_eq!(results[0], Err(Refusal::BadCredentialSignature));
    assert_eq!(results[1].map(|t| t.sequence), Ok(1));
}

#[test]
fn entries_beyond_the_credentials_ceiling_are_refused() {
    let w = world();
    let policy = Policy {
        fare_estimate_fen: 200,
        ..Policy::default()
    };
    let mut ring = PlatformKeyring::new();
    ring.insert(w.key.public());
    let mut v = Validator::new(ring, policy);
    let low = issue_credential(
        &w.key,
        citypay_ride::CredentialTerms {
            ceiling_fen: 500,
            ..terms(&w.rider, ACCOUNT, T0)
        },
    )
    .unwrap();
    let code = |counter: u32| RideCode::sign(low, &w.rider, T0 + 100, counter).encode();
    let exit = Gate {
        direction: Direction::Out,
        ..GATE
    };
    assert!(v.validate(&code(1), T0 + 100, GATE).is_ok());
    assert!(v.validate(&code(2), T0 + 100, GATE).is_ok());
    // Exits cost nothing more; a third entry (600 fen) would pass the 500-fen ceiling.
    assert!(v.validate(&code(3), T0 + 100, exit).is_ok());
    assert_eq!(
        v.validate(&code(4), T0 + 100, GATE),
        Err(Refusal::CeilingReached { ceiling_fen: 500 })
    );
    // The refused code was not used up, and another credential has its own count.
    assert_eq!(v.pending_taps().len(), 3);
    let other = RideCode::sign(w.credential, &w.rider, T0 + 100, 5).encode();
    assert!(v.validate(&other, T0 + 100, GATE).is_ok());
}
