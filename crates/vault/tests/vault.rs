//! The public API: sealing, rotation, blind indexes, key configs, and what Debug may print.

use citypay_vault::{
    BlindIndex, IndexKeys, KeyConfigError, KeyId, Sealed, SealingKeys, Secret, VaultError,
};

const KEY_1: &str = "5e3a9c07d1f24b8896a0c3e7f15d2b4a8c9e0f1726354a5b6c7d8e9fa0b1c2d3";
const KEY_2: &str = "c4d5e6f708192a3b4c5d6e7f8091a2b3d0e1f2031425364758697a8b9cadbecf";
const CONTEXT: &[u8] = b"resident:42:id_number";
const PLAINTEXT: &[u8] = b"11010519491231002X";

fn config(entries: &[(u32, &str)], active: u32) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(id, key)| format!("{id}:{key}"))
        .collect();
    format!("{};active={active}", entries.join(","))
}

fn sealing(entries: &[(u32, &str)], active: u32) -> SealingKeys {
    SealingKeys::from_config(&config(entries, active)).expect("valid config")
}

fn indexing(entries: &[(u32, &str)], active: u32) -> IndexKeys {
    IndexKeys::from_config(&config(entries, active)).expect("valid config")
}

#[test]
fn seal_then_open_round_trips() {
    let keys = sealing(&[(1, KEY_1)], 1);
    let sealed = keys.seal(PLAINTEXT, CONTEXT);
    assert_eq!(sealed.key_id(), KeyId(1));
    assert_eq!(
        keys.open(&sealed, CONTEXT).expect("opens").expose(),
        PLAINTEXT
    );
    let bytes = sealed.to_bytes();
    assert_eq!(bytes.len(), 1 + 4 + 12 + PLAINTEXT.len() + 16);
    let back = Sealed::from_bytes(&bytes).expect("parses");
    assert_eq!(back, sealed);
    assert_eq!(
        keys.open(&back, CONTEXT).expect("opens").expose(),
        PLAINTEXT
    );
}

#[test]
fn empty_plaintext_and_context_round_trip() {
    let keys = sealing(&[(1, KEY_1)], 1);
    let sealed = keys.seal(b"", b"");
    assert_eq!(sealed.to_bytes().len(), 33);
    assert!(keys.open(&sealed, b"").expect("opens").expose().is_empty());
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let keys = sealing(&[(1, KEY_1)], 1);
    assert_ne!(keys.seal(PLAINTEXT, CONTEXT), keys.seal(PLAINTEXT, CONTEXT));
}

#[test]
fn wrong_context_fails() {
    let keys = sealing(&[(1, KEY_1)], 1);
    let sealed = keys.seal(PLAINTEXT, CONTEXT);
    for other in [&b"resident:43:id_number"[..], b"resident:42:name", b""] {
        assert_eq!(keys.open(&sealed, other).err(), Some(VaultError::Tampered));
    }
}

#[test]
fn flipping_any_byte_fails() {
    let keys = sealing(&[(1, KEY_1), (2, KEY_2)], 1);
    let bytes = keys.seal(PLAINTEXT, CONTEXT).to_bytes();
    for position in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut altered = bytes.clone();
            altered[position] ^= flip;
            let outcome = Sealed::from_bytes(&altered).and_then(|s| keys.open(&s, CONTEXT));
            let err = outcome.expect_err("an altered blob must not open");
            match position {
                0 => assert_eq!(err, VaultError::UnknownVersion(1 ^ flip)),
                1..=4 => assert!(matches!(
                    err,
                    VaultError::UnknownKey(_) | VaultError::Tampered
                )),
                _ => assert_eq!(err, VaultError::Tampered),
            }
        }
    }
}

#[test]
fn a_blob_relabelled_with_another_configured_key_fails() {
    let keys = sealing(&[(1, KEY_1), (3, KEY_2)], 1);
    let mut bytes = keys.seal(PLAINTEXT, CONTEXT).to_bytes();
    bytes[4] = 3;
    let relabelled = Sealed::from_bytes(&bytes).expect("parses");
    assert_eq!(relabelled.key_id(), KeyId(3));
    assert_eq!(
        keys.open(&relabelled, CONTEXT).err(),
        Some(VaultError::Tampered)
    );
}

#[test]
fn truncated_blobs_fail() {
    let keys = sealing(&[(1, KEY_1)], 1);
    let bytes = keys.seal(PLAINTEXT, CONTEXT).to_bytes();
    for len in 0..bytes.len() {
        let outcome = Sealed::from_bytes(&bytes[..len]).and_then(|s| keys.open(&s, CONTEXT));
        assert!(outcome.is_err(), "{len} bytes opened");
    }
}

#[test]
fn unknown_key_id() {
    let old = sealing(&[(1, KEY_1), (2, KEY_2)], 2);
    let sealed = old.seal(PLAINTEXT, CONTEXT);
    let without_2 = sealing(&[(1, KEY_1)], 1);
    assert_eq!(
        without_2.open(&sealed, CONTEXT).err(),
        Some(VaultError::UnknownKey(KeyId(2)))
    );
}

#[test]
fn from_bytes_errors() {
    assert_eq!(
        Sealed::from_bytes(&[]).err(),
        Some(VaultError::TooShort { len: 0, min: 33 })
    );
    assert_eq!(
        Sealed::from_bytes(&[1; 32]).err(),
        Some(VaultError::TooShort { len: 32, min: 33 })
    );
    assert_eq!(
        Sealed::from_bytes(&[2; 40]).err(),
        Some(VaultError::UnknownVersion(2))
    );
    assert_eq!(
        Sealed::from_bytes(&[0]).err(),
        Some(VaultError::UnknownVersion(0))
    );
    let minimal = Sealed::from_bytes(&[1; 33]).expect("parses");
    assert_eq!(minimal.key_id(), KeyId(0x0101_0101));
}

#[test]
fn rotation_keeps_old_data_open_and_reseal_moves_it() {
    let before = sealing(&[(1, KEY_1)], 1);
    let sealed = before.seal(PLAINTEXT, CONTEXT);
    let after = sealing(&[(1, KEY_1), (2, KEY_2)], 2);
    assert_eq!(after.active_id(), KeyId(2));
    assert_eq!(after.ids(), vec![KeyId(1), KeyId(2)]);
    assert_eq!(
        after
            .open(&sealed, CONTEXT)
            .expect("old blob opens")
            .expose(),
        PLAINTEXT
    );

    let moved = after.reseal(&sealed, CONTEXT).expect("reseals");
    assert_eq!(moved.key_id(), KeyId(2));
    assert_eq!(
        after.open(&moved, CONTEXT).expect("opens").expose(),
        PLAINTEXT
    );
    assert_eq!(
        after.reseal(&sealed, b"elsewhere").err(),
        Some(VaultError::Tampered)
    );

    let only_2 = sealing(&[(2, KEY_2)], 2);
    assert_eq!(
        only_2.open(&moved, CONTEXT).expect("opens").expose(),
        PLAINTEXT
    );
    assert_eq!(
        only_2.open(&sealed, CONTEXT).err(),
        Some(VaultError::UnknownKey(KeyId(1)))
    );
}

#[test]
fn same_key_under_another_id_does_not_open() {
    let as_1 = sealing(&[(1, KEY_1)], 1);
    let as_9 = sealing(&[(9, KEY_1)], 9);
    let mut bytes = as_1.seal(PLAINTEXT, CONTEXT).to_bytes();
    bytes[4] = 9;
    let relabelled = Sealed::from_bytes(&bytes).expect("parses");
    assert_eq!(
        as_9.open(&relabelled, CONTEXT).err(),
        Some(VaultError::Tampered)
    );
}

#[test]
fn blind_index_is_stable_and_separated() {
    let keys = indexing(&[(1, KEY_1), (2, KEY_2)], 2);
    let a = keys.index("resident_id", "11010519491231002X");
    assert_eq!(a, keys.index("resident_id", "11010519491231002X"));
    assert_eq!(a.key_id, KeyId(2));
    assert_eq!(a.to_hex().len(), 64);
    assert!(
        a.to_hex()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_ne!(a, keys.index("resident_id", "11010519491231002x"));
    assert_ne!(a.digest, keys.index("phone", "11010519491231002X").digest);
    // The kind is length-prefixed, so moving bytes between kind and value changes the digest.
    assert_ne!(keys.index("ab", "c").digest, keys.index("a", "bc").digest);

    let same_key_other_config = indexing(&[(2, KEY_2)], 2);
    assert_eq!(
        a,
        same_key_other_config.index("resident_id", "11010519491231002X")
    );
    let other_key = indexing(&[(2, KEY_1)], 2);
    assert_ne!(a, other_key.index("resident_id", "11010519491231002X"));
}

#[test]
fn blind_index_differs_across_keys_and_ids() {
    let keys = indexing(&[(1, KEY_1), (2, KEY_2)], 1);
    let under_1 = keys.index("resident_id", "X");
    let rotated = indexing(&[(1, KEY_1), (2, KEY_2)], 2);
    let under_2 = rotated.index("resident_id", "X");
    assert_ne!(under_1.digest, under_2.digest);
    let relabelled = BlindIndex {
        key_id: KeyId(2),
        ..under_1
    };
    assert_ne!(relabelled, under_1);
}

#[test]
fn candidates_cover_every_key_active_first() {
    let keys = indexing(&[(1, KEY_1), (2, KEY_2), (7, KEY_1)], 2);
    let candidates = keys.candidates("resident_id", "11010519491231002X");
    let ids: Vec<KeyId> = candidates.iter().map(|c| c.key_id).collect();
    assert_eq!(ids, vec![KeyId(2), KeyId(7), KeyId(1)]);
    assert_eq!(
        candidates[0],
        keys.index("resident_id", "11010519491231002X")
    );
    let old = indexing(&[(1, KEY_1)], 1).index("resident_id", "11010519491231002X");
    assert!(candidates.contains(&old));
    // Ids 1 and 7 share a key: same digest, different index.
    assert_eq!(candidates[1].digest, candidates[2].digest);
    assert_ne!(candidates[1], candidates[2]);
}

#[test]
fn config_accepts_spaces_and_either_case() {
    let text = format!(" 3 : {} , 2:{} ; active = 3 ", KEY_1.to_uppercase(), KEY_2);
    // `active = 3` has a space before `=`, which the format does not allow.
    assert_eq!(
        SealingKeys::from_config(&text).err(),
        Some(KeyConfigError::BadActive)
    );
    let text = format!(" 3 : {} , 2:{} ; active=3 ", KEY_1.to_uppercase(), KEY_2);
    let keys = SealingKeys::from_config(&text).expect("valid config");
    assert_eq!(keys.ids(), vec![KeyId(2), KeyId(3)]);
    assert_eq!(keys.active_id(), KeyId(3));
    let lower = sealing(&[(3, KEY_1)], 3);
    let sealed = keys.seal(PLAINTEXT, CONTEXT);
    assert_eq!(
        lower.open(&sealed, CONTEXT).expect("opens").expose(),
        PLAINTEXT
    );
}

#[test]
fn config_errors_are_precise() {
    use KeyConfigError::*;
    let bad_hex = format!("{}g", &KEY_1[..63]);
    let cases: Vec<(String, KeyConfigError)> = vec![
        (format!("1:{KEY_1}"), MissingActive),
        (String::new(), MissingActive),
        (";active=1".into(), NoKeys),
        (format!("1:{KEY_1};"), BadActive),
        (format!("1:{KEY_1};active="), BadActive),
        (format!("1:{KEY_1};active=+1"), BadActive),
        (format!("1:{KEY_1};active=1;x"), BadActive),
        (format!("1:{KEY_1};primary=1"), BadActive),
        (format!("1:{KEY_1},;active=1"), BadEntry { position: 2 }),
        (format!("{KEY_1};active=1"), BadEntry { position: 1 }),
        (format!("x:{KEY_1};active=1"), BadId { position: 1 }),
        (
            format!("1:{KEY_1},-2:{KEY_2};active=1"),
            BadId { position: 2 },
        ),
        (
            format!("4294967296:{KEY_1};active=1"),
            BadId { position: 1 },
        ),
        (format!("7:{bad_hex};active=7"), BadHex { id: KeyId(7) }),
        (
            format!("7:{}é;active=7", &KEY_1[..62]),
            BadHex { id: KeyId(7) },
        ),
        (
            format!("7:{};active=7", &KEY_1[..62]),
            WrongLength {
                id: KeyId(7),
                found: 62,
            },
        ),
        (
            format!("7:{KEY_1}00;active=7"),
            WrongLength {
                id: KeyId(7),
                found: 66,
            },
        ),
        (
            format!("1:{KEY_1},1:{KEY_2};active=1"),
            DuplicateId(KeyId(1)),
        ),
        (
            format!("1:{KEY_1},2:{KEY_2};active=3"),
            ActiveMissing(KeyId(3)),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            SealingKeys::from_config(&text).err(),
            Some(expected.clone()),
            "{text:?}"
        );
        assert_eq!(
            IndexKeys::from_config(&text).err(),
            Some(expected),
            "{text:?}"
        );
    }
    let max = format!("4294967295:{KEY_1};active=4294967295");
    assert_eq!(
        SealingKeys::from_config(&max).expect("valid").active_id(),
        KeyId(u32::MAX)
    );
}

#[test]
fn generated_configs_parse_and_differ() {
    let a = SealingKeys::generate_config();
    let b = SealingKeys::generate_config();
    assert_ne!(a.expose(), b.expose());
    assert!(a.expose().starts_with("1:") && a.expose().ends_with(";active=1"));
    let keys = SealingKeys::from_config(a.expose()).expect("valid config");
    let sealed = keys.seal(PLAINTEXT, CONTEXT);
    assert_eq!(
        keys.open(&sealed, CONTEXT).expect("opens").expose(),
        PLAINTEXT
    );
    let index = IndexKeys::from_config(IndexKeys::generate_config().expose()).expect("valid");
    assert_eq!(index.ids(), vec![KeyId(1)]);
    assert_eq!(format!("{a:?}"), "Secret(***)");
}

/// Every case-variant of the key hex, and the plaintext, must stay out of Debug and Display.
fn assert_hides_secrets(text: &str) {
    for key in [KEY_1, KEY_2] {
        for variant in [key.to_string(), key.to_uppercase()] {
            assert!(!text.contains(&variant), "key material in {text:?}");
            assert!(!text.contains(&variant[..16]), "key material in {text:?}");
        }
    }
    assert!(
        !text.contains("11010519491231002X"),
        "plaintext in {text:?}"
    );
    assert!(!text.contains("49 49 48"), "plaintext bytes in {text:?}");
    assert!(!text.contains("[49, 49"), "plaintext bytes in {text:?}");
}

#[test]
fn debug_never_shows_keys_or_plaintext() {
    let sealing_keys = sealing(&[(1, KEY_1), (2, KEY_2)], 2);
    let index_keys = indexing(&[(1, KEY_1), (2, KEY_2)], 2);
    let sealed = sealing_keys.seal(PLAINTEXT, CONTEXT);
    let opened = sealing_keys.open(&sealed, CONTEXT).expect("opens");
    let as_string = Secret::new(String::from("11010519491231002X"));
    let texts = [
        format!("{sealing_keys:?}"),
        format!("{sealing_keys:#?}"),
        format!("{index_keys:?}"),
        format!("{sealed:?}"),
        format!("{opened:?}"),
        format!("{as_string:?}"),
        format!(
            "{:?}",
            index_keys.index("resident_id", "11010519491231002X")
        ),
    ];
    for text in &texts {
        assert_hides_secrets(text);
    }
    assert_eq!(
        texts[0],
        "SealingKeys { ids: [KeyId(1), KeyId(2)], active: KeyId(2) }"
    );
    assert_eq!(texts[4], "Secret(***)");
    assert_eq!(texts[5], "Secret(***)");
}

#[test]
fn errors_never_show_keys_or_plaintext() {
    let configs = [
        format!("1:{KEY_1},1:{KEY_2};active=1"),
        format!("1:{KEY_1},2:{KEY_2};active=3"),
        format!("1:{}z,2:{KEY_2};active=1", &KEY_1[..63]),
        format!("1:{KEY_1}{KEY_2};active=1"),
        format!("{KEY_1}:{KEY_2};active=1"),
        format!("1:{KEY_1};active={KEY_2}"),
        format!("1:{KEY_1},{KEY_2}"),
    ];
    for text in &configs {
        let err = SealingKeys::from_config(text).expect_err("invalid");
        assert_hides_secrets(&format!("{err} {err:?}"));
        let err = IndexKeys::from_config(text).expect_err("invalid");
        assert_hides_secrets(&format!("{err} {err:?}"));
    }
    let keys = sealing(&[(1, KEY_1)], 1);
    let sealed = keys.seal(PLAINTEXT, CONTEXT);
    let err = keys.open(&sealed, b"other").expect_err("wrong context");
    assert_hides_secrets(&format!("{err} {err:?}"));
    let err = sealing(&[(2, KEY_2)], 2)
        .open(&sealed, CONTEXT)
        .expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        "sealed data uses key id 1, which is not configured (was it removed too early?)"
    );
}
