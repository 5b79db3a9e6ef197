//! Ride codes as validators scan them (`citypay-ride`).

use std::sync::OnceLock;

use citypay_ride::{CODE_LEN, Credential, Direction, Gate, PlatformKey, PlatformKeyring, Policy, RideCode, UnixTime, Validator, Validity};

/// The validator's clock: 2026-12-02 00:00:00 UTC.
const NOW: UnixTime = 1_796_169_600;
const GATE: Gate = Gate { validator_id: 7, stop_or_route: 101, direction: Direction::In };

/// The platform key the validator trusts (the corpus's codes are signed under it).
fn platform_key() -> PlatformKey {
    let validity = Validity::new(NOW - 86_400, NOW + 86_400).expect("a day either side of now");
    PlatformKey::from_seed(1, [7; 32], validity)
}

/// A fresh validator, made once and cloned: deriving the platform key costs more than a check.
fn validator() -> Validator {
    static FRESH: OnceLock<Validator> = OnceLock::new();
    FRESH.get_or_init(new_validator).clone()
}

fn new_validator() -> Validator {
    let mut keyring = PlatformKeyring::new();
    keyring.insert(platform_key().public());
    // A ceiling of 5 yuan at 2 yuan an entry: the third entry of a credential is refused.
    // Replay and credential memories sized for the 8 codes an input holds.
    let policy = Policy { fare_estimate_fen: 200, seen_capacity: 16, cache_capacity: 16, ..Policy::default() };
    Validator::new(keyring, policy)
}

/// Ride codes, [`CODE_LEN`] bytes each, scanned one after another at one gate.
///
/// A code that decodes encodes back to its bytes (so does a credential); a batch is answered
/// exactly as the same codes checked one by one are (the validator's documented promise); an
/// accepted code is the one scanned, and scanning it again is refused as a replay.
pub fn ride_code(data: &[u8]) {
    if let Ok(code) = RideCode::decode(data) {
        assert_eq!(code.encode(), data, "a decoded code encodes back to its bytes");
    }
    if let Some(credential) = Credential::from_bytes(data) {
        assert_eq!(credential.to_bytes(), data, "a decoded credential encodes back to its bytes");
    }
    let codes: Vec<&[u8]> = data.chunks(CODE_LEN).take(8).collect();
    let mut batch = validator();
    let batched = batch.validate_batch(&codes, NOW, GATE);
    let mut single = validator();
    let one_by_one: Vec<_> = codes.iter().map(|code| single.validate(code, NOW, GATE)).collect();
    assert_eq!(batched, one_by_one, "a batch answers as one-by-one checks do");
    for (bytes, result) in codes.iter().zip(&one_by_one) {
        let Ok(tap) = result else { continue };
        let code = RideCode::decode(bytes).expect("an accepted code decodes");
        assert_eq!(tap.account_ref, code.credential.terms.account_ref);
        assert_eq!(tap.code_hash, code.code_hash());
        assert!(single.validate(bytes, NOW, GATE).is_err(), "a code accepted once is refused again");
    }
}

#[cfg(test)]
mod tests {
    use citypay_ride::{CredentialTerms, Refusal, RiderKey, issue_credential};

    use super::*;

    /// A code the validator accepts at [`NOW`]: rider `seed`'s `counter`th code, `age_s` old.
    fn signed_code(seed: u8, counter: u32, age_s: u32) -> Vec<u8> {
        let rider = RiderKey::from_seed([seed; 32]);
        let terms = CredentialTerms {
            rider_key: rider.public_bytes(),
            account_ref: u64::from(seed),
            valid_from: NOW - 3600,
            valid_until: NOW + 3600,
            ceiling_fen: 500,
        };
        let credential = issue_credential(&platform_key(), terms).expect("the key is valid now");
        RideCode::sign(credential, &rider, NOW - age_s, counter).encode()
    }

    fn corpus(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../fuzz/corpus/ride_code/{name}", env!("CARGO_MANIFEST_DIR"))).expect("a corpus file")
    }

    // The corpus's codes are signed under the target's platform key at its clock, so the
    // fuzzer starts from codes the validator accepts, not only from refusals.
    #[test]
    fn the_corpus_codes_are_accepted_as_signed() {
        assert_eq!(corpus("accepted"), signed_code(3, 1, 0));
        assert!(validator().validate(&corpus("accepted"), NOW, GATE).is_ok());
        let three = corpus("over-the-ceiling");
        let results = validator().validate_batch(&three.chunks(CODE_LEN).collect::<Vec<_>>(), NOW, GATE);
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(Refusal::CeilingReached { .. })), "{:?}", results[2]);
        assert_eq!(validator().validate(&corpus("too-old"), NOW, GATE), Err(Refusal::Stale));
    }
}
