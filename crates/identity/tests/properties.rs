//! Property tests: no parser panics, generated valid numbers parse, any one-character change is
//! refused, and personal numbers never print in full.
//!
//! The check characters here are computed by reference implementations written from the
//! standards' formulas (powers of 2 mod 11, powers of 3 mod 31), independent of the crate's tables.

use citypay_identity::{
    AccountClass, CardBrand, CardError, CardNumber, CardWarning, CivilDate, ResidentId, Uscc,
};
use proptest::prelude::*;
use proptest::sample::select;

const USCC_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

fn today() -> CivilDate {
    CivilDate::new(2025, 6, 1).expect("a real date")
}

/// ISO 7064 MOD 11-2: weights 2^(17-i) mod 11, check value (12 − S mod 11) mod 11, 10 is `X`.
fn reference_id_check(first17: &str) -> char {
    let sum: u32 = first17
        .chars()
        .zip(0_u32..)
        .map(|(c, i)| c.to_digit(10).expect("digit") * (2_u32.pow(17 - i) % 11))
        .sum();
    match (12 - sum % 11) % 11 {
        10 => 'X',
        value => char::from_digit(value, 10).expect("0-9"),
    }
}

/// GB 11714: weights 3 7 9 10 5 8 4 2, C = 11 − S mod 11, 10 is `X`, 11 is `0`.
fn reference_organization_check(body: &str) -> char {
    let weights = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .chars()
        .zip(weights)
        .map(|(c, w)| c.to_digit(36).expect("0-9A-Z") * w)
        .sum();
    match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        value => char::from_digit(value, 10).expect("1-9"),
    }
}

/// GB 32100: weights 3^(i-1) mod 31, check value (31 − S mod 31) mod 31 in the alphabet.
fn reference_uscc_check(first17: &str) -> char {
    let value = |c: char| USCC_ALPHABET.find(c).expect("in the alphabet");
    let sum: usize = first17
        .chars()
        .zip(0_u32..)
        .map(|(c, i)| value(c) * (3_usize.pow(i) % 31))
        .sum();
    USCC_ALPHABET
        .chars()
        .nth((31 - sum % 31) % 31)
        .expect("index below 31")
}

fn reference_luhn_digit(payload: &str) -> char {
    let sum: u32 = payload
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).expect("digit");
            if i % 2 == 0 {
                (d * 2) / 10 + (d * 2) % 10
            } else {
                d
            }
        })
        .sum();
    char::from_digit((10 - sum % 10) % 10, 10).expect("0-9")
}

/// Arbitrary text: any Unicode, near misses of every format, and long input.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9xX]{14,19}",
        "[0-9A-Za-z]{16,20}",
        "[0-9 \\-]{0,30}",
        "[0-9é１٣\u{0}]{0,20}",
        proptest::collection::vec(any::<char>(), 0..4096).prop_map(String::from_iter),
    ]
}

fn any_date() -> impl Strategy<Value = CivilDate> {
    (1_u16..=9999, 1_u8..=12, 1_u8..=31)
        .prop_filter_map("a real date", |(y, m, d)| CivilDate::new(y, m, d))
}

/// A valid resident ID number born 1900-01-01 ..= 2024-12-31.
fn valid_resident_id() -> impl Strategy<Value = String> {
    (
        select(citypay_identity::Region::all().iter().map(|region| region.code).collect::<Vec<_>>()),
        1900_u16..=2024,
        1_u8..=12,
        1_u8..=31,
        0_u32..1000,
    )
        .prop_filter("a real birth date", |(_, y, m, d, _)| CivilDate::new(*y, *m, *d).is_some())
        .prop_map(|(region, y, m, d, sequence)| {
            let first17 = format!("{region:06}{y:04}{m:02}{d:02}{sequence:03}");
            format!("{first17}{}", reference_id_check(&first17))
        })
}

fn valid_uscc() -> impl Strategy<Value = String> {
    let symbol = || select(USCC_ALPHABET.chars().collect::<Vec<_>>());
    (
        symbol(),
        symbol(),
        "[0-9]{6}",
        proptest::collection::vec(symbol(), 8),
    )
        .prop_map(|(authority, category, region, body)| {
            let body = String::from_iter(body);
            let first17 = format!(
                "{authority}{category}{region}{body}{}",
                reference_organization_check(&body)
            );
            format!("{first17}{}", reference_uscc_check(&first17))
        })
}

/// A Luhn-valid card number of 12 to 19 digits with a prefix of every brand.
fn valid_card() -> impl Strategy<Value = String> {
    let prefixes = vec![
        "4", "51", "55", "2221", "2720", "34", "37", "3528", "3589", "62", "81", "9", "30",
    ];
    (
        select(prefixes),
        12_usize..=19,
        proptest::collection::vec(0_u8..10, 19),
    )
        .prop_map(|(prefix, length, digits)| {
            let mut payload = prefix.to_owned();
            payload.extend(
                digits
                    .iter()
                    .take(length - 1 - prefix.len())
                    .map(|d| char::from(b'0' + d)),
            );
            format!("{payload}{}", reference_luhn_digit(&payload))
        })
}

/// `text` with the character at `index` (modulo the length) replaced by another symbol of
/// `alphabet`, `shift` places further on (`shift` is never a multiple of the alphabet's size).
fn change_one(text: &str, index: usize, alphabet: &str, shift: usize) -> String {
    let index = index % text.chars().count();
    let symbols: Vec<char> = alphabet.chars().collect();
    assert_ne!(shift % symbols.len(), 0);
    let replace = |c: char| {
        let position = symbols
            .iter()
            .position(|s| *s == c)
            .expect("in the alphabet");
        symbols[(position + shift) % symbols.len()]
    };
    text.chars()
        .enumerate()
        .map(|(i, c)| if i == index { replace(c) } else { c })
        .collect()
}

proptest! {
    #[test]
    fn parsers_never_panic(input in any_text(), today in any_date()) {
        let _ = ResidentId::parse(&input, today);
        let _ = Uscc::parse(&input);
        let _ = CardNumber::parse(&input);
        let _ = AccountClass::from_code(&input);
        let _ = citypay_identity::resident_id::check_character(&input);
        let _ = citypay_identity::uscc::check_character(&input);
        let _ = citypay_identity::uscc::organization_check_character(&input);
        let _ = citypay_identity::card::luhn_check_digit(&input);
    }

    #[test]
    fn generated_resident_ids_parse(number in valid_resident_id()) {
        let id = ResidentId::parse(&number, today()).expect("valid");
        prop_assert_eq!(id.normalized(), number.as_str());
        let lower = number.to_ascii_lowercase();
        prop_assert_eq!(ResidentId::parse(&lower, today()), Ok(id));
    }

    /// Any 17-digit body with its check character passes every structural check: only the
    /// province, the region or the birth date may refuse it.
    #[test]
    fn random_bodies_with_their_check_character_only_fail_on_meaning(first17 in "[0-9]{17}") {
        let number = format!("{first17}{}", reference_id_check(&first17));
        prop_assert_eq!(citypay_identity::resident_id::check_character(&first17), number.chars().last());
        if let Err(error) = ResidentId::parse(&number, today()) {
            let meaning = matches!(
                error,
                citypay_identity::ResidentIdError::UnknownProvince { .. }
                    | citypay_identity::ResidentIdError::UnknownRegion { .. }
                    | citypay_identity::ResidentIdError::InvalidBirthDate { .. }
                    | citypay_identity::ResidentIdError::BirthBefore1800 { .. }
                    | citypay_identity::ResidentIdError::BirthAfterToday { .. }
            );
            prop_assert!(meaning, "{error:?}");
        }
    }

    #[test]
    fn any_one_character_change_to_a_resident_id_is_refused(
        number in valid_resident_id(), index in 0_usize..18, shift in 1_usize..11,
    ) {
        let changed = change_one(&number, index, "0123456789X", shift);
        let error = ResidentId::parse(&changed, today()).expect_err("one character changed");
        prop_assert!(!error.to_string().contains(&changed));
    }

    #[test]
    fn resident_ids_never_print_in_full(number in valid_resident_id()) {
        let id = ResidentId::parse(&number, today()).expect("valid");
        let printed = [format!("{id:?}"), format!("{id:#?}"), id.to_string()];
        prop_assert!(printed.iter().all(|text| !text.contains(&number)), "{printed:?}");
        prop_assert_eq!(id.masked().len(), 18);
    }

    #[test]
    fn generated_usccs_parse(code in valid_uscc()) {
        let uscc = Uscc::parse(&code).expect("valid");
        prop_assert_eq!(uscc.as_str(), code.as_str());
        prop_assert_eq!(Uscc::parse(&code.to_ascii_lowercase()), Ok(uscc));
    }

    #[test]
    fn any_one_symbol_change_to_a_uscc_is_refused(
        code in valid_uscc(), index in 0_usize..18, shift in 1_usize..31,
    ) {
        prop_assert!(Uscc::parse(&change_one(&code, index, USCC_ALPHABET, shift)).is_err());
    }

    #[test]
    fn generated_cards_parse_without_warnings(number in valid_card()) {
        let parsed = CardNumber::parse(&number).expect("valid");
        prop_assert!(parsed.warnings.is_empty());
        prop_assert_eq!(parsed.card.digits(), number.as_str());
        let grouped: String = number
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
            .collect();
        prop_assert_eq!(CardNumber::parse(&grouped).expect("valid").card, parsed.card);
    }

    /// Luhn catches every one-digit change: UnionPay numbers get a warning, others are refused.
    #[test]
    fn any_one_digit_change_to_a_card_fails_luhn(
        number in valid_card(), index in 0_usize..19, shift in 1_usize..10,
    ) {
        let changed = change_one(&number, index, "0123456789", shift);
        match CardNumber::parse(&changed) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.card.brand(), CardBrand::UnionPay);
                prop_assert_eq!(parsed.warnings, vec![CardWarning::UnionPayLuhn]);
            }
            Err(error) => {
                let is_luhn = matches!(error, CardError::Luhn { brand } if brand != CardBrand::UnionPay);
                prop_assert!(is_luhn, "{error:?}");
            }
        }
    }

    #[test]
    fn cards_never_print_in_full(number in valid_card()) {
        let parsed = CardNumber::parse(&number).expect("valid");
        let card = &parsed.card;
        let printed = [format!("{parsed:?}"), format!("{card:#?}"), card.to_string()];
        prop_assert!(printed.iter().all(|text| !text.contains(&number)), "{printed:?}");
        prop_assert_eq!(parsed.card.masked().len(), number.len());
    }
}

#[test]
fn very_long_input_is_refused_by_length() {
    let digits = "1".repeat(1_000_000);
    let wide = "é".repeat(1_000_000);
    assert!(ResidentId::parse(&digits, today()).is_err());
    assert!(ResidentId::parse(&wide, today()).is_err());
    assert!(Uscc::parse(&wide).is_err());
    assert_eq!(
        CardNumber::parse(&digits),
        Err(CardError::Length { digits: 1_000_000 })
    );
}
