//! Key construction.

use citypay_ride::{KeyError, PlatformKey, PlatformKeyring, PlatformPublicKey, RiderKey, Validity};

#[test]
fn generated_keys_differ_and_round_trip() {
    let validity = Validity::new(10, 20).unwrap();
    let a = PlatformKey::generate(1, validity).unwrap();
    let b = PlatformKey::generate(2, validity).unwrap();
    assert_ne!(a.public().to_bytes(), b.public().to_bytes());
    let again = PlatformPublicKey::from_bytes(1, a.public().to_bytes(), validity).unwrap();
    assert_eq!(again, a.public());
    assert_ne!(
        RiderKey::generate().unwrap().public_bytes(),
        RiderKey::generate().unwrap().public_bytes()
    );
}

#[test]
fn rejects_bad_public_keys_and_windows() {
    let validity = Validity::new(10, 20).unwrap();
    assert_eq!(
        PlatformPublicKey::from_bytes(1, [0; 32], validity),
        Err(KeyError::InvalidPublicKey)
    );
    assert_eq!(Validity::new(20, 10), Err(KeyError::EmptyValidity));
    assert!(validity.contains(10) && validity.contains(20) && !validity.contains(21));
}

#[test]
fn keyring_holds_keys_by_id() {
    let validity = Validity::new(10, 20).unwrap();
    let key = PlatformKey::from_seed(5, [3; 32], validity);
    let mut ring = PlatformKeyring::new();
    assert!(ring.is_empty());
    ring.insert(key.public());
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.get(5).map(PlatformPublicKey::key_id), Some(5));
    assert!(ring.remove(5).is_some() && ring.get(5).is_none());
    assert!(
        !format!("{key:?}").contains("signing"),
        "Debug must not print the secret"
    );
}
