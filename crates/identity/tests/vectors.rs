//! Published examples from the standards and the card networks, and their near misses.

use citypay_identity::card::luhn_check_digit;
use citypay_identity::{
    AccountClass, CardBrand, CardError, CardNumber, CardWarning, CivilDate, LimitWindow,
    ResidentId, ResidentIdError, Sex, Uscc, UsccError,
};

fn date(year: u16, month: u8, day: u8) -> CivilDate {
    CivilDate::new(year, month, day).expect("a real date")
}

fn today() -> CivilDate {
    date(2025, 6, 1)
}

fn id_error(input: &str) -> ResidentIdError {
    ResidentId::parse(input, today()).expect_err("must be refused")
}

// GB 11643-1999 Annex A and B examples.

#[test]
fn standard_example_beijing_chaoyang() {
    let id = ResidentId::parse("11010519491231002X", today()).expect("valid");
    assert_eq!(id.birth_date(), date(1949, 12, 31));
    assert_eq!(id.region_code(), "110105");
    assert_eq!(id.sex(), Sex::Female);
    assert_eq!(id.normalized(), "11010519491231002X");
    assert_eq!(id.masked(), "1101**********002X");
    assert_eq!(id.to_string(), "1101**********002X");
    assert_eq!(format!("{id:?}"), "ResidentId(\"1101**********002X\")");
}

/// The standard's second Annex A example, born in 1880, is valid.
#[test]
fn standard_example_guangdong_shantou_born_1880() {
    assert_eq!(check("44052418800101001"), '4');
    let id = ResidentId::parse("440524188001010014", today()).expect("GB 11643 Annex A example");
    assert_eq!(id.birth_date(), date(1880, 1, 1));
}

#[test]
fn annex_b_worked_example() {
    // The worked example's check character is right, but its region code 340524 was never
    // issued (GB/T 2260 since 1980): the standard made it up.
    assert_eq!(citypay_identity::resident_id::check_character("34052419800101001"), Some('X'));
    assert_eq!(
        ResidentId::parse("34052419800101001X", today()),
        Err(ResidentIdError::UnknownRegion { code: 340524 })
    );
}

#[test]
fn region_codes_ever_issued_are_accepted_and_others_refused() {
    let with_check = |first17: &str| format!("{first17}{}", citypay_identity::resident_id::check_character(first17).unwrap());
    // Hangzhou's 下城区 (330103) was merged away in 2021; its numbers stay valid.
    let retired = ResidentId::parse(&with_check("33010319800101001"), today()).expect("a retired county");
    assert_eq!(retired.region_code(), "330103");
    assert_eq!(retired.sex(), Sex::Male);
    assert!(ResidentId::parse(&with_check("33011319800101002"), today()).is_ok(), "临平区, 2021");
    assert_eq!(
        ResidentId::parse(&with_check("33019919800101001"), today()),
        Err(ResidentIdError::UnknownRegion { code: 330199 })
    );
}

#[test]
fn lower_case_x_is_normalised() {
    let id = ResidentId::parse("11010519491231002x", today()).expect("valid");
    assert_eq!(id.normalized(), "11010519491231002X");
    assert_eq!(
        id,
        ResidentId::parse("11010519491231002X", today()).expect("valid")
    );
}

#[test]
fn one_character_off_fails_the_check_character() {
    assert_eq!(
        id_error("11010519491231002Y"),
        ResidentIdError::Character {
            position: 18,
            found: 'Y'
        }
    );
    assert_eq!(
        id_error("110105194912310021"),
        ResidentIdError::CheckCharacter {
            expected: 'X',
            found: '1'
        }
    );
    assert_eq!(
        id_error("11010519491231003X"),
        ResidentIdError::CheckCharacter {
            expected: '8',
            found: 'X'
        }
    );
    assert_eq!(
        id_error("440524188001010015"),
        ResidentIdError::CheckCharacter {
            expected: '4',
            found: '5'
        }
    );
    assert_eq!(
        id_error("440524188001010114"),
        ResidentIdError::CheckCharacter {
            expected: '0',
            found: '4'
        }
    );
    assert_eq!(
        id_error("36042619910102009X"),
        ResidentIdError::CheckCharacter {
            expected: '3',
            found: 'X'
        }
    );
}

/// A typo anywhere is caught by the check character first.
#[test]
fn typos_in_the_body_fail_the_check_character() {
    assert_eq!(
        id_error("11010519491331002X"),
        ResidentIdError::CheckCharacter {
            expected: '1',
            found: 'X'
        }
    );
    assert_eq!(
        id_error("10010519491231002X"),
        ResidentIdError::CheckCharacter {
            expected: '8',
            found: 'X'
        }
    );
}

#[test]
fn impossible_birth_dates_with_a_correct_check_character() {
    assert_eq!(
        id_error("360426199113010079"),
        ResidentIdError::InvalidBirthDate {
            year: 1991,
            month: 13,
            day: 1
        }
    );
    assert_eq!(
        id_error(&with_check("11010519491331002")),
        ResidentIdError::InvalidBirthDate {
            year: 1949,
            month: 13,
            day: 31
        }
    );
    assert_eq!(
        id_error(&with_check("11010519490001002")),
        ResidentIdError::InvalidBirthDate {
            year: 1949,
            month: 0,
            day: 1
        }
    );
    assert_eq!(
        id_error(&with_check("11010517991231002")),
        ResidentIdError::BirthBefore1800 {
            birth_date: date(1799, 12, 31)
        }
    );
    assert!(ResidentId::parse(&with_check("11010518000101002"), today()).is_ok());
}

#[test]
fn birth_date_after_today_is_refused() {
    let born_tomorrow = with_check("11010520250602002");
    assert_eq!(
        id_error(&born_tomorrow),
        ResidentIdError::BirthAfterToday {
            birth_date: date(2025, 6, 2),
            today: today()
        }
    );
    let born_today = with_check("11010520250601002");
    assert!(ResidentId::parse(&born_today, today()).is_ok());
}

#[test]
fn leap_day_birth_dates() {
    let leap = with_check("11010520000229002");
    assert!(ResidentId::parse(&leap, today()).is_ok());
    let not_leap = with_check("11010519000229002");
    assert_eq!(
        id_error(&not_leap),
        ResidentIdError::InvalidBirthDate {
            year: 1900,
            month: 2,
            day: 29
        }
    );
}

#[test]
fn one_character_off_in_the_province() {
    let unknown = with_check("10010519491231002");
    assert_eq!(
        id_error(&unknown),
        ResidentIdError::UnknownProvince { code: 10 }
    );
    let unknown = with_check("91010519491231002");
    assert_eq!(
        id_error(&unknown),
        ResidentIdError::UnknownProvince { code: 91 }
    );
    let macao = with_check("82000019900101002");
    assert!(ResidentId::parse(&macao, today()).is_ok());
}

#[test]
fn fifteen_digit_legacy_numbers_are_refused() {
    assert_eq!(
        id_error("110105491231002"),
        ResidentIdError::LegacyFifteenDigits
    );
    assert_eq!(
        id_error("11010549123100X"),
        ResidentIdError::Length { found: 15 }
    );
}

#[test]
fn wrong_length_and_characters() {
    assert_eq!(id_error(""), ResidentIdError::Length { found: 0 });
    assert_eq!(
        id_error("11010519491231002"),
        ResidentIdError::Length { found: 17 }
    );
    assert_eq!(
        id_error(" 11010519491231002X"),
        ResidentIdError::Length { found: 19 }
    );
    assert_eq!(
        id_error("1101051949123100XX"),
        ResidentIdError::Character {
            position: 17,
            found: 'X'
        }
    );
    assert_eq!(
        id_error("１1010519491231002X"),
        ResidentIdError::Character {
            position: 1,
            found: '１'
        }
    );
}

#[test]
fn resident_id_errors_read_well() {
    assert_eq!(
        id_error("110105194912310023").to_string(),
        "check character should be 'X', found '3'"
    );
    assert_eq!(
        id_error(&with_check("11010519491331002")).to_string(),
        "birth date 1949-13-31 is not a real calendar date"
    );
}

fn check(first17: &str) -> char {
    citypay_identity::resident_id::check_character(first17).expect("17 digits")
}

fn with_check(first17: &str) -> String {
    format!("{first17}{}", check(first17))
}

// GB 32100-2015 Unified Social Credit Codes.

fn uscc_error(input: &str) -> UsccError {
    Uscc::parse(input).expect_err("must be refused")
}

#[test]
fn published_uscc_examples() {
    let fuzhou = Uscc::parse("91350100M000100Y43").expect("valid");
    assert_eq!(fuzhou.registration_authority(), '9');
    assert_eq!(fuzhou.organization_category(), '1');
    assert_eq!(fuzhou.region_code(), "350100");
    assert_eq!(fuzhou.organization_code(), "M000100Y4");
    assert_eq!(fuzhou.check_character(), '3');
    assert_eq!(fuzhou.to_string(), "91350100M000100Y43");

    let beijing = Uscc::parse("91110000600037341L").expect("valid");
    assert_eq!(beijing.region_code(), "110000");
    assert_eq!(beijing.organization_code(), "600037341");
    assert_eq!(beijing.check_character(), 'L');

    let institution = Uscc::parse("121200004013590816").expect("valid");
    assert_eq!(institution.registration_authority(), '1');
    assert_eq!(institution.organization_category(), '2');
}

#[test]
fn lower_case_uscc_is_normalised() {
    let code = Uscc::parse("91350100m000100y43").expect("valid");
    assert_eq!(code.as_str(), "91350100M000100Y43");
}

#[test]
fn wrong_uscc_check_character() {
    assert_eq!(
        uscc_error("91350100M000100Y44"),
        UsccError::CheckCharacter {
            expected: '3',
            found: '4'
        }
    );
    assert_eq!(
        uscc_error("91110000600037341M"),
        UsccError::CheckCharacter {
            expected: 'L',
            found: 'M'
        }
    );
    assert_eq!(
        uscc_error("92350100M000100Y43"),
        UsccError::CheckCharacter {
            expected: '0',
            found: '3'
        }
    );
}

#[test]
fn letters_the_alphabet_leaves_out_are_refused() {
    for (letter, code) in [
        ('I', "91350100M000100I43"),
        ('O', "91350100M000100O43"),
        ('Z', "91350100M000100Z43"),
        ('S', "91350100M000100S43"),
        ('V', "91350100M000100V43"),
    ] {
        assert_eq!(
            uscc_error(code),
            UsccError::Character {
                position: 16,
                found: letter
            }
        );
    }
    assert_eq!(
        uscc_error("91350100M000100y4é"),
        UsccError::Character {
            position: 18,
            found: 'é'
        }
    );
}

#[test]
fn letter_in_the_region_code_is_refused() {
    assert_eq!(
        uscc_error("9135A100M000100Y43"),
        UsccError::RegionNotDigit {
            position: 5,
            found: 'A'
        }
    );
}

#[test]
fn wrong_embedded_organization_check_is_refused() {
    // Position 17 changed from 4 to 5 and the final check recomputed, so only GB 11714 fails.
    let first17 = "91350100M000100Y5";
    let code = format!("{first17}{}", uscc_check(first17));
    assert_eq!(
        uscc_error(&code),
        UsccError::OrganizationCheck {
            expected: '4',
            found: '5'
        }
    );
    assert_eq!(
        uscc_error(&code).to_string(),
        "the organisation code (positions 9 to 17) is wrong: \
         its check character should be '4', found '5'"
    );
}

#[test]
fn uscc_lengths() {
    assert_eq!(uscc_error(""), UsccError::Length { found: 0 });
    assert_eq!(
        uscc_error("91350100M000100Y4"),
        UsccError::Length { found: 17 }
    );
    assert_eq!(
        uscc_error("91350100M000100Y433"),
        UsccError::Length { found: 19 }
    );
}

fn uscc_check(first17: &str) -> char {
    citypay_identity::uscc::check_character(first17).expect("17 symbols")
}

// Bank cards.

fn card_error(input: &str) -> CardError {
    CardNumber::parse(input).expect_err("must be refused")
}

fn clean_card(input: &str) -> CardNumber {
    let parsed = CardNumber::parse(input).expect("valid");
    assert!(parsed.warnings.is_empty(), "{input}: {:?}", parsed.warnings);
    parsed.card
}

#[test]
fn test_cards_of_each_brand() {
    assert_eq!(clean_card("4111111111111111").brand(), CardBrand::Visa);
    assert_eq!(
        clean_card("5500000000000004").brand(),
        CardBrand::Mastercard
    );
    assert_eq!(
        clean_card("2221000000000009").brand(),
        CardBrand::Mastercard
    );
    assert_eq!(clean_card("378282246310005").brand(), CardBrand::Amex);
    assert_eq!(clean_card("3530111333300000").brand(), CardBrand::Jcb);
    assert_eq!(clean_card("6200000000000005").brand(), CardBrand::UnionPay);
    assert_eq!(
        clean_card("6205500000000000004").brand(),
        CardBrand::UnionPay
    );
    assert_eq!(clean_card("8100010000000142").brand(), CardBrand::UnionPay);
}

#[test]
fn unionpay_19_digits_with_computed_luhn_digit() {
    let payload = "622202020011223344";
    assert_eq!(luhn_check_digit(payload), Some('6'));
    let card = clean_card("6222 0202 0011 2233 446");
    assert_eq!(card.digits(), "6222020200112233446");
    assert_eq!(card.masked(), "622202*********3446");
    assert_eq!(card.last_four(), "3446");
}

#[test]
fn unionpay_failing_luhn_is_accepted_with_a_warning() {
    for number in ["6222020200112233441", "6222040000030012"] {
        let parsed = CardNumber::parse(number).expect("accepted");
        assert_eq!(parsed.warnings, vec![CardWarning::UnionPayLuhn]);
        assert_eq!(parsed.card.brand(), CardBrand::UnionPay);
        assert!(!parsed.card.passes_luhn());
    }
}

#[test]
fn other_brands_failing_luhn_are_refused() {
    assert_eq!(
        card_error("4111111111111112"),
        CardError::Luhn {
            brand: CardBrand::Visa
        }
    );
    assert_eq!(
        card_error("4242424242424241"),
        CardError::Luhn {
            brand: CardBrand::Visa
        }
    );
    assert_eq!(
        card_error("5500000000000005"),
        CardError::Luhn {
            brand: CardBrand::Mastercard
        }
    );
    assert_eq!(
        card_error("4111111111111112").to_string(),
        "card number fails the Luhn check (Visa): a digit is probably mistyped"
    );
}

#[test]
fn separators_and_masking() {
    let card = clean_card("4111-1111-1111-1111");
    assert_eq!(card.digits(), "4111111111111111");
    assert_eq!(card.masked(), "411111******1111");
    assert_eq!(card.to_string(), "411111******1111");
    assert_eq!(format!("{card:?}"), "CardNumber(\"411111******1111\")");
    let parsed = CardNumber::parse("6222 0202 0011 2233 446").expect("valid");
    assert!(!format!("{parsed:?}").contains("6222020200112233446"));
}

#[test]
fn card_characters_and_lengths() {
    assert_eq!(
        card_error("4111.1111.1111.1111"),
        CardError::Character {
            position: 5,
            found: '.'
        }
    );
    assert_eq!(
        card_error("４111111111111111"),
        CardError::Character {
            position: 1,
            found: '４'
        }
    );
    assert_eq!(card_error(""), CardError::Length { digits: 0 });
    assert_eq!(card_error("41111111111"), CardError::Length { digits: 11 });
    assert_eq!(
        card_error("41111111111111111111"),
        CardError::Length { digits: 20 }
    );
}

// PBOC account classes.

#[test]
fn account_class_limits() {
    let class_one = AccountClass::I.balance_payment_limit();
    assert_eq!(class_one.window, LimitWindow::SinceOpening);
    assert_eq!(class_one.amount_fen, 1_000 * 100);
    assert_eq!(
        AccountClass::II.balance_payment_limit().amount_fen,
        100_000 * 100
    );
    assert_eq!(
        AccountClass::III.balance_payment_limit().window,
        LimitWindow::Year
    );
    assert_eq!(AccountClass::from_code("III"), Some(AccountClass::III));
}
