//! Resident ID numbers, Unified Social Credit Codes and bank card numbers (`citypay-identity`).

use citypay_identity::resident_id::check_character as id_check_character;
use citypay_identity::uscc::check_character as uscc_check_character;
use citypay_identity::{CardNumber, CardWarning, CivilDate, ResidentId, Uscc};

/// The day ID numbers are checked on.
const TODAY: CivilDate = match CivilDate::new(2026, 12, 2) {
    Some(date) => date,
    None => panic!("2026-12-02 is a real date"),
};

/// The same text as a resident ID number, a USCC and a card number, as registration, merchant
/// onboarding, card linking and `citypay inspect` read them.
///
/// Whatever is accepted is accepted again in its normal form, its check character is the one
/// computed, and what prints (masked forms, `Debug`, `Display`) never holds a whole ID or
/// card number.
pub fn identity(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = ResidentId::parse(text, TODAY) {
        let number = id.normalized().to_owned();
        assert_eq!(number, text.replace('x', "X"));
        assert_eq!(id_check_character(&number[..17]), number.chars().last());
        assert!(id.birth_date() <= TODAY);
        assert_eq!(ResidentId::parse(&number, TODAY).as_ref(), Ok(&id));
        for shown in [id.masked(), format!("{id}"), format!("{id:?}")] {
            assert!(!shown.contains(&number), "a resident ID number printed whole");
        }
    }
    if let Ok(uscc) = Uscc::parse(text) {
        let code = uscc.as_str();
        assert_eq!(code, text.to_ascii_uppercase());
        assert_eq!(uscc_check_character(&code[..17]), Some(uscc.check_character()));
        assert_eq!(Uscc::parse(code).as_ref(), Ok(&uscc));
    }
    if let Ok(parsed) = CardNumber::parse(text) {
        let card = &parsed.card;
        let digits = card.digits();
        assert!(digits.len() >= 12 && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit()));
        let unionpay_warning = parsed.warnings.contains(&CardWarning::UnionPayLuhn);
        assert_eq!(card.passes_luhn(), !unionpay_warning);
        for shown in [card.masked(), format!("{card}"), format!("{card:?}")] {
            assert!(!shown.contains(digits), "a card number printed whole");
            assert!(shown.bytes().filter(u8::is_ascii_digit).count() <= 10, "a masked card shows at most 10 digits");
        }
        assert_eq!(CardNumber::parse(digits).map(|p| p.card), Ok(card.clone()));
    }
}
