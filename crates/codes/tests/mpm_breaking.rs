//! Payloads that must be refused, each with its precise error.

use citypay_codes::mpm::{
    AmountError, MAX_PAYLOAD_CHARS, MpmError, MpmWarning, Payload, RawPayload, Scheme, checksum_hex,
};

/// The EMVCo specification's example payload (see `mpm_vectors.rs` for the source).
const EMVCO_EXAMPLE: &str = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001\
030812345678520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.72\
53031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A";

/// citypay's merchant account template for merchant M-0001.
const ACCOUNT: &str = "26240010cn.citypay0106M-0001";
/// MCC 5812 and currency 156 (CNY).
const REST: &str = "520458125303156";
/// Country, name and city.
const PLACE: &str = "5802CN5909CITY CAFE6008SHANGHAI";

/// `body` followed by data object 63 with the right CRC.
fn with_crc(body: &str) -> String {
    let covered = format!("{body}6304");
    let crc = checksum_hex(&covered);
    covered + &crc
}

/// A valid payload made of `objects` after `000201` and before the CRC.
fn payload(objects: &[&str]) -> String {
    with_crc(&(String::from("000201") + &objects.concat()))
}

/// The mandatory fields after the merchant account.
fn rest() -> String {
    String::from(REST) + PLACE
}

fn decode(text: &str) -> Result<Payload, MpmError> {
    Payload::decode(text)
}

#[test]
fn minimal_payload_is_fine() {
    let payload = decode(&payload(&[ACCOUNT, &rest()])).unwrap();
    assert_eq!(payload.citypay_merchant(), Some("M-0001"));
}

#[test]
fn wrong_crc_names_both_values() {
    let text = EMVCO_EXAMPLE.replace("6304A13A", "63041234");
    let error = decode(&text).unwrap_err();
    assert_eq!(
        error,
        MpmError::CrcMismatch {
            expected: "A13A".into(),
            found: "1234".into()
        }
    );
    assert_eq!(error.to_string(), "CRC should be A13A, found 1234");
}

#[test]
fn a_lower_case_crc_is_read_with_a_warning() {
    // The same check value in lower-case hex, as some generators write it: read, flagged,
    // and not complete enough for citypay's own template.
    let text = EMVCO_EXAMPLE.replace("6304A13A", "6304a13a");
    let payload = decode(&text).unwrap();
    let found = String::from("a13a");
    let warning = MpmWarning::CrcLowerCase {
        found: found.clone(),
    };
    assert_eq!(payload.warnings(), [warning]);
    let error = MpmError::CrcLowerCase { found };
    assert_eq!(payload.require_complete(), Err(error));
    assert_eq!(
        payload.encode(),
        EMVCO_EXAMPLE,
        "written again in upper case"
    );
    // A wrong CRC stays wrong in any case.
    let text = EMVCO_EXAMPLE.replace("6304A13A", "6304a13b");
    assert!(matches!(decode(&text), Err(MpmError::CrcMismatch { .. })));
}

#[test]
fn changed_content_breaks_the_crc() {
    let text = EMVCO_EXAMPLE.replace("23.72", "93.72");
    assert!(matches!(decode(&text), Err(MpmError::CrcMismatch { .. })));
}

#[test]
fn every_prefix_of_a_valid_payload_fails() {
    for sample in [EMVCO_EXAMPLE.to_owned(), payload(&[ACCOUNT, &rest()])] {
        for (end, _) in sample.char_indices() {
            let prefix = &sample[..end];
            assert!(
                RawPayload::decode(prefix).is_err(),
                "prefix {prefix:?} was accepted"
            );
        }
    }
    let cut = &EMVCO_EXAMPLE[..EMVCO_EXAMPLE.len() - 2];
    let offset = cut.chars().count() - 6;
    let error = MpmError::ValueOverrun {
        id: 63,
        offset,
        declared: 4,
        available: 2,
    };
    assert_eq!(decode(cut), Err(error));
    let cut = &EMVCO_EXAMPLE[..EMVCO_EXAMPLE.len() - 6];
    let error = MpmError::TruncatedHeader {
        offset: cut.chars().count() - 2,
        remaining: 2,
    };
    assert_eq!(decode(cut), Err(error));
    let cut = &EMVCO_EXAMPLE[..EMVCO_EXAMPLE.len() - 8];
    assert_eq!(decode(cut), Err(MpmError::CrcMissing));
}

#[test]
fn format_indicator_must_come_first() {
    let text = with_crc(&(String::from("010212000201") + ACCOUNT + &rest()));
    assert_eq!(
        decode(&text),
        Err(MpmError::FormatIndicator {
            found: "010212".into()
        })
    );
    assert_eq!(
        decode(""),
        Err(MpmError::FormatIndicator {
            found: String::new()
        })
    );
    let text = with_crc(&(String::from("000202") + ACCOUNT + &rest()));
    assert_eq!(
        decode(&text),
        Err(MpmError::FormatIndicator {
            found: "000202".into()
        })
    );
}

#[test]
fn crc_must_come_last() {
    let text = payload(&[ACCOUNT, &rest()]) + "9903abc";
    let offset = text.chars().count() - 7;
    assert_eq!(
        decode(&text),
        Err(MpmError::CrcNotLast { next: 99, offset })
    );
}

#[test]
fn crc_must_have_length_four() {
    let body = String::from("000201") + ACCOUNT + &rest() + "6305";
    let text = body.clone() + &checksum_hex(&body) + "0";
    assert_eq!(decode(&text), Err(MpmError::CrcLength { length: 5 }));
}

#[test]
fn duplicate_ids_are_refused() {
    let text = payload(&[ACCOUNT, &rest(), "5802CN"]);
    let offset = text.chars().count() - 14;
    assert_eq!(decode(&text), Err(MpmError::DuplicateId { id: 58, offset }));
    let text = payload(&[ACCOUNT, &rest(), "62140503A010503A02"]);
    let error = decode(&text).unwrap_err();
    let MpmError::InTemplate {
        template: 62,
        error: inner,
    } = &error
    else {
        panic!("expected an error in template 62, got {error:?}");
    };
    assert!(
        matches!(**inner, MpmError::DuplicateId { id: 5, .. }),
        "{inner:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("in template 62: data object 05 appears twice")
    );
}

#[test]
fn lengths_running_past_the_end_are_refused() {
    let text = String::from("0002015920BEST");
    let error = MpmError::ValueOverrun {
        id: 59,
        offset: 6,
        declared: 20,
        available: 4,
    };
    assert_eq!(decode(&text), Err(error));
    // A template whose inner length runs past the template's own end.
    let text = payload(&[ACCOUNT, &rest(), "62070599ABC"]);
    let error = decode(&text).unwrap_err();
    assert!(matches!(
        error,
        MpmError::InTemplate { template: 62, ref error }
            if matches!(**error, MpmError::ValueOverrun { id: 5, declared: 99, available: 3, .. })
    ));
}

#[test]
fn ids_and_lengths_must_be_digits() {
    let text = String::from("000201AB02xx");
    assert_eq!(
        decode(&text),
        Err(MpmError::NonDigitId {
            offset: 6,
            found: "AB".into()
        })
    );
    let text = String::from("0002015A02xx");
    assert_eq!(
        decode(&text),
        Err(MpmError::NonDigitId {
            offset: 6,
            found: "5A".into()
        })
    );
    let text = String::from("00020159x2xx");
    let error = MpmError::NonDigitLength {
        id: 59,
        offset: 6,
        found: "x2".into(),
    };
    assert_eq!(decode(&text), Err(error));
    let text = String::from("00020159 2xx");
    assert!(matches!(
        decode(&text),
        Err(MpmError::NonDigitLength { .. })
    ));
    let text = String::from("0002015900");
    assert_eq!(
        decode(&text),
        Err(MpmError::ZeroLength { id: 59, offset: 6 })
    );
}

#[test]
fn non_ascii_lengths_count_characters_not_bytes() {
    // The EMVCo example measured in bytes (the common bug) no longer frames.
    let by_bytes = EMVCO_EXAMPLE
        .replace(
            "64200002ZH0104最佳运输0202北京",
            "64320002ZH0112最佳运输0206北京",
        )
        .replace("6304A13A", "6304");
    let by_bytes = with_crc(by_bytes.strip_suffix("6304").unwrap());
    // Template 64 now swallows 12 characters of what follows, so the framing falls apart.
    let error = decode(&by_bytes).unwrap_err();
    assert!(!matches!(error, MpmError::CrcMismatch { .. }), "{error}");
    // A UTF-8 merchant name: 11 characters, 13 bytes.
    let name = "Café Zürich";
    assert_eq!((name.chars().count(), name.len()), (11, 13));
    let rest = rest().replace("5909CITY CAFE", "5911Café Zürich");
    let payload_text = payload(&[ACCOUNT, &rest]);
    assert_eq!(decode(&payload_text).unwrap().name(), Some(name));
    let rest = rest.replace("5911Café", "5913Café");
    assert!(decode(&payload(&[ACCOUNT, &rest])).is_err());
}

#[test]
fn four_byte_characters_count_once() {
    let rest = rest().replace("5909CITY CAFE", "5903🍜🍜🍜");
    let payload = decode(&payload(&[ACCOUNT, &rest])).unwrap();
    assert_eq!(payload.name(), Some("🍜🍜🍜"));
}

#[test]
fn missing_mandatory_fields_are_warnings_and_not_complete() {
    let cases = [
        (52, "merchant category code", "52045812"),
        (53, "transaction currency", "5303156"),
        (58, "country code", "5802CN"),
        (59, "merchant name", "5909CITY CAFE"),
        (60, "merchant city", "6008SHANGHAI"),
    ];
    for (id, name, object) in cases {
        let rest = rest().replace(object, "");
        let text = payload(&[ACCOUNT, &rest]);
        let payload = decode(&text).unwrap();
        assert_eq!(payload.warnings(), [MpmWarning::MissingField { id, name }]);
        let error = MpmError::MissingField { id, name };
        assert_eq!(payload.require_complete(), Err(error));
    }
    // Without a currency an amount is read as written, with no minor units.
    let no_currency = rest().replace("5303156", "") + "54042.50";
    let read = decode(&payload(&[ACCOUNT, &no_currency])).unwrap();
    assert_eq!(read.amount().unwrap().as_str(), "2.50");
    assert_eq!(read.amount_minor_units(), None);
    // A malformed field is still refused.
    let bad_mcc = rest().replace("52045812", "5204581X");
    let error = decode(&payload(&[ACCOUNT, &bad_mcc])).unwrap_err();
    assert!(
        matches!(error, MpmError::InvalidField { id: 52, .. }),
        "{error}"
    );
    let text = payload(&[&rest()]);
    assert_eq!(decode(&text), Err(MpmError::NoMerchantAccount));
}

#[test]
fn amounts_follow_the_emvco_format() {
    let cases = [
        ("54051,000", AmountError::BadChar { found: ',' }),
        ("54051.0.0", AmountError::TwoDots),
        ("54141234567890.123", AmountError::TooLong { chars: 14 }),
        ("5401.", AmountError::NoDigits),
        (
            "54051.234",
            AmountError::TooManyDecimals {
                found: 3,
                exponent: 2,
            },
        ),
    ];
    for (object, reason) in cases {
        let text = payload(&[ACCOUNT, &rest(), object]);
        let value = object[4..].to_owned();
        assert_eq!(
            decode(&text),
            Err(MpmError::InvalidAmount { value, reason })
        );
    }
    // JPY has no minor units (the dongri sample's 999.123 JPY is refused the same way).
    let rest = rest().replace("5303156", "5303392");
    let text = payload(&[ACCOUNT, &rest, "5407999.123"]);
    let reason = AmountError::TooManyDecimals {
        found: 3,
        exponent: 0,
    };
    assert_eq!(
        decode(&text),
        Err(MpmError::InvalidAmount {
            value: "999.123".into(),
            reason
        })
    );
    let text = payload(&[ACCOUNT, &rest, "5403999"]);
    assert_eq!(decode(&text).unwrap().amount_minor_units(), Some(999));
}

#[test]
fn unknown_currency_keeps_the_amount_text() {
    let rest = rest().replace("5303156", "5303999");
    let payload = decode(&payload(&[ACCOUNT, &rest, "54051.234"])).unwrap();
    assert_eq!(payload.amount().unwrap().as_str(), "1.234");
    assert_eq!(payload.amount_minor_units(), None);
    assert_eq!(payload.amount().unwrap().to_minor_units(3), Ok(1234));
}

#[test]
fn point_of_initiation_is_11_or_12() {
    let text = payload(&["010213", ACCOUNT, &rest()]);
    assert_eq!(
        decode(&text),
        Err(MpmError::PointOfInitiation { found: "13".into() })
    );
}

#[test]
fn field_formats_are_checked() {
    let rest_with = |from: &str, to: &str| rest().replace(from, to);
    let text = payload(&[ACCOUNT, &rest_with("52045812", "5204581A")]);
    assert!(matches!(
        decode(&text),
        Err(MpmError::InvalidField { id: 52, .. })
    ));
    let text = payload(&[ACCOUNT, &rest_with("5802CN", "5803CHN")]);
    assert!(matches!(
        decode(&text),
        Err(MpmError::InvalidField { id: 58, .. })
    ));
    let long_name = "5926ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let text = payload(&[ACCOUNT, &rest_with("5909CITY CAFE", long_name)]);
    let error = decode(&text).unwrap_err();
    assert!(matches!(error, MpmError::InvalidField { id: 59, .. }));
    assert!(
        error.to_string().contains("at most 25 characters"),
        "{error}"
    );
}

#[test]
fn language_template_needs_preference_and_name() {
    let text = payload(&[ACCOUNT, &rest(), "64080104最佳运输"]);
    let error = MpmError::MissingSubField {
        template: 64,
        id: 0,
        name: "language preference",
    };
    assert_eq!(decode(&text), Err(error));
    let text = payload(&[ACCOUNT, &rest(), "64060002ZH"]);
    let error = MpmError::MissingSubField {
        template: 64,
        id: 1,
        name: "alternate merchant name",
    };
    assert_eq!(decode(&text), Err(error));
}

#[test]
fn merchant_account_templates_are_checked() {
    let text = payload(&["26080104ABCD", &rest()]);
    let name = "globally unique identifier";
    assert_eq!(
        decode(&text),
        Err(MpmError::MissingSubField {
            template: 26,
            id: 0,
            name
        })
    );
    let text = payload(&["26140010cn.citypay", &rest()]);
    let name = "citypay merchant id";
    assert_eq!(
        decode(&text),
        Err(MpmError::MissingSubField {
            template: 26,
            id: 1,
            name
        })
    );
    let text = payload(&["26210010cn.citypay0103a b", &rest()]);
    assert!(matches!(
        decode(&text),
        Err(MpmError::InvalidSubField {
            template: 26,
            id: 1,
            ..
        })
    ));
    let second = ACCOUNT.replacen("26", "27", 1);
    let text = payload(&[ACCOUNT, &second, &rest()]);
    assert_eq!(
        decode(&text),
        Err(MpmError::DuplicateCitypay {
            first: 26,
            second: 27
        })
    );
}

#[test]
fn schemes_are_identified() {
    let accounts = [
        "26180014BR.GOV.BCB.PIX",
        "29200016A000000677010112",
        "30130009SG.PAYNOW",
        "15081234ABCD",
        "31200016A000000333010101",
        "0204VISA",
        "32120008COM.TEST",
        "33240010CN.CityPay0106M-0002",
    ];
    let payload = decode(&payload(&[&accounts.concat(), &rest()])).unwrap();
    let expected = [
        Scheme::Pix,
        Scheme::PromptPay,
        Scheme::PayNow,
        Scheme::UnionPay,
        Scheme::UnionPay,
        Scheme::Reserved {
            id: 2,
            network: "Visa",
        },
        Scheme::Other("COM.TEST".into()),
        Scheme::Citypay {
            merchant_id: "M-0002".into(),
        },
    ];
    // Schemes follow payload order.
    let order: Vec<u8> = payload.raw().merchant_accounts().map(|a| a.id()).collect();
    assert_eq!(order, [26, 29, 30, 15, 31, 2, 32, 33]);
    assert_eq!(payload.schemes(), expected);
    assert_eq!(payload.citypay_merchant(), Some("M-0002"));
}

#[test]
fn oversized_payloads_are_refused_early() {
    let text = "0".repeat(MAX_PAYLOAD_CHARS + 1);
    let error = MpmError::TooLong {
        chars: MAX_PAYLOAD_CHARS + 1,
        max: MAX_PAYLOAD_CHARS,
    };
    assert_eq!(decode(&text), Err(error));
    let huge = "字".repeat(10_000);
    assert!(matches!(decode(&huge), Err(MpmError::TooLong { .. })));
}

#[test]
fn every_single_byte_change_of_the_emvco_example_fails() {
    // Or reads as the very same payload, a CRC letter in lower case, which the strict check
    // still refuses.
    let same =
        |payload: Payload| payload.encode() == EMVCO_EXAMPLE && payload.require_complete().is_err();
    let bytes = EMVCO_EXAMPLE.as_bytes();
    for index in 0..bytes.len() {
        for mask in 1..=255u8 {
            let mut mutated = bytes.to_vec();
            mutated[index] ^= mask;
            let text = String::from_utf8_lossy(&mutated);
            assert!(
                decode(&text).map_or(true, same),
                "byte {index} ^ {mask:#04x} was accepted: {text}"
            );
        }
    }
}
