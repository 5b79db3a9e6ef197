//! Which payment scheme a merchant account information data object (IDs 02–51) belongs to.
//!
//! IDs 02–25 are primitives reserved for card networks and EMVCo: 02–03 Visa, 04–05
//! Mastercard, 06–08 EMVCo, 09–10 Discover, 11–12 American Express, 13–14 JCB, 15–16
//! UnionPay, 17–25 EMVCo. IDs 26–51 are templates for any other network, identified by their
//! sub-object 00, a globally unique identifier (GUI): an AID or a reverse domain name.
//! Sources: EMV QRCPS MPM v1.1 merchant account information table as reproduced in
//! `../shared/guide/domain.md` section 4.1 (and in many public MPM libraries).
//!
//! The crate only identifies schemes. The checkout service accepts citypay's own and refuses
//! the rest with "scheme not accepted".

use super::error::MpmError;
use super::tlv::DataObject;

/// The GUI of citypay's own merchant account template (sub-object 00 of a template 26–51).
pub const CITYPAY_GUI: &str = "cn.citypay";

/// Sub-object 01 of citypay's template: the merchant id.
pub const CITYPAY_MERCHANT_ID: u8 = 1;

/// The most characters a citypay merchant id has.
pub const MAX_MERCHANT_ID_CHARS: usize = 32;

/// The payment scheme of one merchant account information data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// citypay's own template: GUI `cn.citypay`, sub-object 01 the merchant id.
    Citypay {
        /// The merchant id from sub-object 01.
        merchant_id: String,
    },
    /// Brazil's Pix (GUI `br.gov.bcb.pix`, any case).
    Pix,
    /// Thailand's PromptPay (an AID under the RID `A000000677`, such as `A000000677010111`).
    PromptPay,
    /// Singapore's PayNow (GUI `SG.PAYNOW`, any case).
    PayNow,
    /// UnionPay: the reserved IDs 15–16, or a template whose GUI is an AID under the RID
    /// `A000000333`.
    UnionPay,
    /// A reserved primitive ID (02–14, 17–25) of a card network or EMVCo.
    Reserved {
        /// The ID.
        id: u8,
        /// Who the ID is reserved for.
        network: &'static str,
    },
    /// Any other template; carries its GUI.
    Other(String),
}

impl Scheme {
    /// Whether this is citypay's own scheme.
    pub fn is_citypay(&self) -> bool {
        matches!(self, Scheme::Citypay { .. })
    }
}

/// Whether `id` is a merchant account information ID (02–51).
pub fn is_merchant_account(id: u8) -> bool {
    (2..=51).contains(&id)
}

/// Whether `merchant_id` is a well-formed citypay merchant id: 1 to 32 ASCII letters, digits,
/// `-` or `_`.
pub fn is_valid_merchant_id(merchant_id: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    !merchant_id.is_empty()
        && merchant_id.len() <= MAX_MERCHANT_ID_CHARS
        && merchant_id.chars().all(allowed)
}

/// The scheme of a merchant account information data object (ID 02–51).
pub(crate) fn of_account(account: &DataObject) -> Result<Scheme, MpmError> {
    let id = account.id();
    debug_assert!(is_merchant_account(id));
    if id <= 25 {
        return Ok(reserved(id));
    }
    let Some(gui) = account.child_value(0) else {
        let name = "globally unique identifier";
        return Err(MpmError::MissingSubField {
            template: id,
            id: 0,
            name,
        });
    };
    if gui.eq_ignore_ascii_case(CITYPAY_GUI) {
        return citypay(account);
    }
    Ok(of_gui(gui))
}

/// The scheme a primitive ID 02–25 is reserved for.
fn reserved(id: u8) -> Scheme {
    let network = match id {
        2..=3 => "Visa",
        4..=5 => "Mastercard",
        9..=10 => "Discover",
        11..=12 => "American Express",
        13..=14 => "JCB",
        15..=16 => return Scheme::UnionPay,
        _ => "EMVCo",
    };
    Scheme::Reserved { id, network }
}

/// The scheme named by a template's GUI, citypay's aside.
fn of_gui(gui: &str) -> Scheme {
    let has_prefix = |prefix: &str| {
        gui.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if gui.eq_ignore_ascii_case("br.gov.bcb.pix") {
        Scheme::Pix
    } else if has_prefix("A000000677") {
        Scheme::PromptPay
    } else if gui.eq_ignore_ascii_case("SG.PAYNOW") {
        Scheme::PayNow
    } else if has_prefix("A000000333") {
        Scheme::UnionPay
    } else {
        Scheme::Other(gui.to_owned())
    }
}

/// citypay's template: the merchant id must be present and well formed.
fn citypay(account: &DataObject) -> Result<Scheme, MpmError> {
    let template = account.id();
    let id = CITYPAY_MERCHANT_ID;
    let name = "citypay merchant id";
    let Some(merchant_id) = account.child_value(id) else {
        return Err(MpmError::MissingSubField { template, id, name });
    };
    if !is_valid_merchant_id(merchant_id) {
        let rule = "1 to 32 ASCII letters, digits, '-' or '_'";
        let value = merchant_id.to_owned();
        return Err(MpmError::InvalidSubField {
            template,
            id,
            name,
            value,
            rule,
        });
    }
    Ok(Scheme::Citypay {
        merchant_id: merchant_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_guis() {
        assert_eq!(of_gui("BR.GOV.BCB.PIX"), Scheme::Pix);
        assert_eq!(of_gui("A000000677010112"), Scheme::PromptPay);
        assert_eq!(of_gui("sg.paynow"), Scheme::PayNow);
        assert_eq!(of_gui("A000000333010101"), Scheme::UnionPay);
        assert_eq!(of_gui("D15600000000"), Scheme::Other("D15600000000".into()));
        assert_eq!(of_gui("é"), Scheme::Other("é".into()));
    }

    #[test]
    fn names_reserved_ids() {
        assert_eq!(
            reserved(2),
            Scheme::Reserved {
                id: 2,
                network: "Visa"
            }
        );
        assert_eq!(reserved(15), Scheme::UnionPay);
        assert_eq!(reserved(16), Scheme::UnionPay);
        assert_eq!(
            reserved(17),
            Scheme::Reserved {
                id: 17,
                network: "EMVCo"
            }
        );
    }

    #[test]
    fn checks_merchant_ids() {
        assert!(is_valid_merchant_id("M-0001_a"));
        assert!(!is_valid_merchant_id(""));
        assert!(!is_valid_merchant_id("a b"));
        assert!(!is_valid_merchant_id(&"m".repeat(33)));
        assert!(!is_valid_merchant_id("商户"));
    }
}
