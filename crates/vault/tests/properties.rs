//! Property tests: parsers never panic, and sealing round-trips anything.

use citypay_vault::{IndexKeys, Sealed, SealingKeys};
use proptest::prelude::*;

const CONFIG: &str = "4:5e3a9c07d1f24b8896a0c3e7f15d2b4a8c9e0f1726354a5b6c7d8e9fa0b1c2d3,\
                      9:c4d5e6f708192a3b4c5d6e7f8091a2b3d0e1f2031425364758697a8b9cadbecf;active=9";

proptest! {
    #[test]
    fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let keys = SealingKeys::from_config(CONFIG).expect("valid config");
        if let Ok(sealed) = Sealed::from_bytes(&bytes) {
            prop_assert_eq!(sealed.to_bytes(), bytes);
            // Random bytes never authenticate.
            prop_assert!(keys.open(&sealed, b"").is_err());
        }
    }

    #[test]
    fn config_parser_never_panics_on_any_string(text in any::<String>()) {
        let _ = SealingKeys::from_config(&text);
        let _ = IndexKeys::from_config(&text);
    }

    #[test]
    fn config_parser_never_panics_on_near_misses(text in "[0-9a-fA-F:,; =activeé]{0,160}") {
        let _ = SealingKeys::from_config(&text);
        let _ = IndexKeys::from_config(&text);
    }

    #[test]
    fn config_parser_never_panics_on_mutated_configs(
        position in 0..CONFIG.len(),
        replacement in "[0-9a-z:,;= ]{0,3}",
    ) {
        let mut text = CONFIG.to_string();
        text.replace_range(position..=position, &replacement);
        let _ = SealingKeys::from_config(&text);
        let _ = IndexKeys::from_config(&text);
    }

    #[test]
    fn seal_open_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        context in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let keys = SealingKeys::from_config(CONFIG).expect("valid config");
        let sealed = keys.seal(&plaintext, &context);
        let parsed = Sealed::from_bytes(&sealed.to_bytes()).expect("parses");
        let opened = keys.open(&parsed, &context).expect("opens");
        prop_assert_eq!(opened.expose(), &plaintext);
        let mut other = context.clone();
        other.push(0);
        prop_assert!(keys.open(&parsed, &other).is_err());
    }
}
