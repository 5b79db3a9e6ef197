//! Property tests: no panics on arbitrary bytes; encode/decode round trip.

mod common;

use citypay_ride::{CODE_LEN, CODE_VERSION, Credential, CredentialTerms, RideCode};
use common::*;
use proptest::prelude::*;

fn sig() -> impl Strategy<Value = [u8; 64]> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        s
    })
}

fn ride_code() -> impl Strategy<Value = RideCode> {
    let terms = (
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(rider_key, account_ref, valid_from, valid_until, ceiling_fen)| CredentialTerms {
                rider_key,
                account_ref,
                valid_from,
                valid_until,
                ceiling_fen,
            },
        );
    let credential =
        (terms, any::<u16>(), sig()).prop_map(|(terms, key_id, signature)| Credential {
            terms,
            key_id,
            signature,
        });
    (credential, any::<u32>(), any::<u32>(), sig()).prop_map(
        |(credential, timestamp, counter, signature)| RideCode {
            credential,
            timestamp,
            counter,
            signature,
        },
    )
}

proptest! {
    #[test]
    fn validate_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400), now in any::<u32>()) {
        let mut v = world().validator;
        let _ = v.validate(&bytes, now, GATE);
        let _ = v.validate_batch(&[&bytes, &bytes], now, GATE);
    }

    #[test]
    fn validate_never_panics_on_well_shaped_bytes(mut bytes in prop::collection::vec(any::<u8>(), CODE_LEN), key_id in 0u16..3, now in any::<u32>()) {
        bytes[0] = CODE_VERSION;
        bytes[53..55].copy_from_slice(&key_id.to_be_bytes());
        let mut v = world().validator;
        prop_assert!(v.validate(&bytes, now, GATE).is_err());
    }

    #[test]
    fn mutated_valid_codes_never_panic(pos in 0usize..CODE_LEN, val in any::<u8>(), cut in 0usize..=CODE_LEN) {
        let w = world();
        let mut bytes = RideCode::sign(w.credential, &w.rider, T0 + 5, 1).encode();
        bytes[pos] = val;
        bytes.truncate(cut);
        let mut v = w.validator;
        let _ = v.validate(&bytes, T0 + 5, GATE);
    }

    #[test]
    fn codes_round_trip(code in ride_code()) {
        let bytes = code.encode();
        prop_assert_eq!(bytes.len(), CODE_LEN);
        prop_assert_eq!(bytes[0], CODE_VERSION);
        prop_assert_eq!(RideCode::decode(&bytes), Ok(code));
        let credential = code.credential.to_bytes();
        prop_assert_eq!(&bytes[1..119], credential.as_slice());
    }
}
