//! Properties: the decoders never panic, mutations of valid payloads are refused, and
//! citypay's own payloads always decode to what was encoded.

use citypay_codes::mpm::{
    Charge, CitypayQr, Initiation, LanguageTemplate, Payload, RawPayload, checksum_hex,
};
use citypay_codes::payment_code::{PaymentCode, STEP_SECONDS};
use proptest::prelude::*;

/// The EMVCo specification's example payload (see `mpm_vectors.rs` for the source).
const EMVCO_EXAMPLE: &str = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001\
030812345678520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.72\
53031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A";

fn language() -> impl Strategy<Value = Option<LanguageTemplate>> {
    // Han, emoji (4-byte UTF-8), accented Latin, digits and spaces.
    let text = |max| {
        let pattern = format!("[一-龥😀-🙏éa-z0-9 ]{{1,{max}}}");
        proptest::string::string_regex(&pattern).expect("a valid pattern")
    };
    let template = ("[A-Z]{2}", text(25), proptest::option::of(text(15))).prop_map(
        |(preference, name, city)| LanguageTemplate {
            preference,
            name,
            city,
        },
    );
    proptest::option::of(template)
}

fn charge() -> impl Strategy<Value = Charge> {
    let dynamic =
        (1u64..100_000_000_000, "[ -~]{1,25}").prop_map(|(amount_minor, order_number)| {
            Charge::Dynamic {
                amount_minor,
                order_number,
            }
        });
    prop_oneof![Just(Charge::Static), dynamic]
}

fn citypay_qr() -> impl Strategy<Value = CitypayQr> {
    let merchant = (
        "[A-Za-z0-9_-]{1,32}",
        "[0-9]{4}",
        prop::sample::select(&["156", "392", "414"][..]),
    );
    let place = (
        "[A-Z]{2}",
        "[ -~]{1,25}",
        "[ -~]{1,15}",
        proptest::option::of("[ -~]{1,10}"),
    );
    (merchant, place, language(), charge()).prop_map(
        |((merchant_id, mcc, currency), (country, name, city, postal_code), language, charge)| {
            CitypayQr {
                merchant_id,
                mcc,
                currency: currency.to_owned(),
                country,
                name,
                city,
                postal_code,
                language,
                charge,
            }
        },
    )
}

/// Checks that `payload` holds exactly what `qr` asked for.
fn assert_same_fields(qr: &CitypayQr, payload: &Payload) {
    assert_eq!(payload.citypay_merchant(), Some(qr.merchant_id.as_str()));
    assert_eq!(payload.schemes().len(), 1);
    assert_eq!(payload.mcc(), Some(qr.mcc.as_str()));
    assert_eq!(payload.currency(), Some(qr.currency.as_str()));
    assert_eq!(payload.country(), Some(qr.country.as_str()));
    assert_eq!(payload.name(), Some(qr.name.as_str()));
    assert_eq!(payload.city(), Some(qr.city.as_str()));
    assert!(payload.warnings().is_empty() && payload.require_complete().is_ok());
    assert_eq!(payload.postal_code(), qr.postal_code.as_deref());
    assert_eq!(payload.language(), qr.language.as_ref());
    assert_eq!(payload.initiation(), Some(qr.initiation()));
    match &qr.charge {
        Charge::Static => {
            assert_eq!(payload.initiation(), Some(Initiation::Static));
            assert_eq!(payload.amount(), None);
            assert_eq!(payload.additional_data(), None);
        }
        Charge::Dynamic {
            amount_minor,
            order_number,
        } => {
            assert_eq!(payload.amount_minor_units(), Some(*amount_minor));
            let reference = payload
                .additional_data()
                .and_then(|d| d.reference_label.as_deref());
            assert_eq!(reference, Some(order_number.as_str()));
        }
    }
}

/// Text that looks like TLV: digit pairs with runs of value characters.
fn tlv_like() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        "[0-9]{2}",
        prop::sample::select(&["26", "52", "53", "54", "62", "64"][..]).prop_map(str::to_owned)
    ];
    let object = (id, "[0-9]{2}", "[0-9A-Z.*最北 ]{0,12}").prop_map(|(i, l, v)| i + &l + &v);
    proptest::collection::vec(object, 0..12)
        .prop_map(|objects| String::from("000201") + &objects.concat())
}

proptest! {
    #[test]
    fn decode_never_panics_on_any_text(text in any::<String>()) {
        let _ = Payload::decode(&text);
        let _ = RawPayload::decode(&format!("000201{text}"));
    }

    #[test]
    fn decode_never_panics_on_tlv_like_text(text in tlv_like()) {
        let _ = Payload::decode(&text);
        // With a correct CRC the decoder gets past framing into templates and fields.
        let covered = format!("{text}6304");
        let _ = Payload::decode(&format!("{covered}{}", checksum_hex(&covered)));
    }

    #[test]
    fn citypay_payloads_decode_to_the_same_fields(qr in citypay_qr()) {
        let text = qr.encode().unwrap();
        let payload = Payload::decode(&text).unwrap();
        assert_same_fields(&qr, &payload);
        prop_assert_eq!(payload.encode(), text);
    }

    #[test]
    fn every_truncation_fails(qr in citypay_qr(), cut in any::<prop::sample::Index>()) {
        let text = qr.encode().unwrap();
        let ends: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let end = ends[cut.index(ends.len())];
        prop_assert!(Payload::decode(&text[..end]).is_err());
    }

    #[test]
    fn substituting_one_ascii_character_fails(
        qr in citypay_qr(),
        at in any::<prop::sample::Index>(),
        with in proptest::char::range(' ', '~'),
    ) {
        // One changed byte is a burst of at most 8 bits, which CRC-16 always detects; a change
        // inside the CRC itself cannot match either, except a hex letter written in lower case,
        // which is read (as banks' apps read it) with a warning and refused by the strict check.
        let text = qr.encode().unwrap();
        let (index, old) = text.char_indices().nth(at.index(text.chars().count())).unwrap();
        prop_assume!(old != with && old.is_ascii());
        let mut mutated = text.clone();
        mutated.replace_range(index..index + 1, &with.to_string());
        let in_crc = index >= text.len() - 4;
        if in_crc && old.is_ascii_hexdigit() && with == old.to_ascii_lowercase() {
            let payload = Payload::decode(&mutated).unwrap();
            prop_assert!(!payload.warnings().is_empty());
            prop_assert!(payload.require_complete().is_err());
        } else {
            prop_assert!(Payload::decode(&mutated).is_err());
        }
    }

    #[test]
    fn byte_flips_and_insertions_never_panic(
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        inserted in any::<char>(),
    ) {
        let mut bytes = EMVCO_EXAMPLE.as_bytes().to_vec();
        let index = at.index(bytes.len());
        let old = bytes[index];
        bytes[index] ^= mask;
        let flipped = String::from_utf8_lossy(&bytes);
        // As with a substitution: a CRC hex letter flipped to lower case (mask 0x20) is read
        // with a warning and refused by the strict check; every other flip fails to decode.
        let in_crc = index >= bytes.len() - 4;
        let lowered = old.is_ascii_uppercase() && bytes[index] == old.to_ascii_lowercase();
        if in_crc && old.is_ascii_hexdigit() && lowered {
            let payload = Payload::decode(&flipped).unwrap();
            prop_assert!(!payload.warnings().is_empty());
            prop_assert!(payload.require_complete().is_err());
        } else {
            prop_assert!(Payload::decode(&flipped).is_err());
        }
        let boundaries: Vec<usize> = EMVCO_EXAMPLE.char_indices().map(|(i, _)| i).collect();
        let mut inserted_text = EMVCO_EXAMPLE.to_owned();
        inserted_text.insert(boundaries[at.index(boundaries.len())], inserted);
        let _ = Payload::decode(&inserted_text);
    }

    #[test]
    fn parse_never_panics(text in any::<String>(), digits in "[0-9]{16,20}") {
        let _ = PaymentCode::parse(&text);
        let _ = PaymentCode::parse(&digits);
    }

    #[test]
    fn generated_codes_parse_and_verify(
        device in 0u32..100_000_000,
        secret in proptest::collection::vec(any::<u8>(), 16..64),
        now in 0u64..4_000_000_000,
    ) {
        let code = PaymentCode::generate(device, &secret, now);
        let parsed = PaymentCode::parse(&code).unwrap();
        prop_assert_eq!(parsed.device, device);
        let step = now / STEP_SECONDS;
        prop_assert_eq!(PaymentCode::verify(&parsed, &secret, now, 2), Some(step));
    }
}
