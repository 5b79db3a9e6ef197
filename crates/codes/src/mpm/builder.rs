//! Writing citypay's own merchant-presented payloads.
//!
//! Layout, in this order: 00 `01`; 01 `11` (static) or `12` (dynamic); 26 citypay's template
//! (00 `cn.citypay`, 01 the merchant id); 52 MCC; 53 currency; 54 amount (dynamic only); 58
//! country; 59 name; 60 city; 61 postal code (optional); 62 additional data with 05 the order
//! number (dynamic only); 64 language template (optional); 63 CRC.
//!
//! Names and cities in 59/60 are EMVCo format "ans" (printable ASCII); Chinese names go in the
//! language template 64, whose fields may hold any script.

use super::amount::{Amount, AmountError, currency_exponent};
use super::payload::{Initiation, LanguageTemplate, finish_with_crc};
use super::scheme::{CITYPAY_GUI, CITYPAY_MERCHANT_ID, is_valid_merchant_id};
use super::tlv;

/// The merchant account information ID citypay writes its template under.
pub const CITYPAY_TEMPLATE_ID: u8 = 26;

/// What the QR asks the customer to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// A counter sticker: point of initiation 11, no amount; the customer types it.
    Static,
    /// One order: point of initiation 12, the amount, and the order number in the reference
    /// label (62/05).
    Dynamic {
        /// The amount in minor units of the currency (fen for CNY); greater than zero.
        amount_minor: u64,
        /// The order number, 1 to 25 printable ASCII characters.
        order_number: String,
    },
}

/// A citypay merchant QR to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitypayQr {
    /// The merchant id (1 to 32 ASCII letters, digits, `-` or `_`).
    pub merchant_id: String,
    /// Merchant category code, 4 digits (ISO 18245).
    pub mcc: String,
    /// ISO 4217 numeric currency code (`156` for CNY); its exponent must be known to
    /// [`super::currency_exponent`].
    pub currency: String,
    /// ISO 3166-1 alpha-2 country code, two upper-case letters (`CN`).
    pub country: String,
    /// Merchant name, 1 to 25 printable ASCII characters.
    pub name: String,
    /// Merchant city, 1 to 15 printable ASCII characters.
    pub city: String,
    /// Postal code, 1 to 10 printable ASCII characters.
    pub postal_code: Option<String>,
    /// Name and city in a second language (any script).
    pub language: Option<LanguageTemplate>,
    /// Static or dynamic.
    pub charge: Charge,
}

/// Why a citypay QR could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A field breaks its format.
    #[error("{field} {value:?} is invalid: it must be {rule}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The format it must have.
        rule: &'static str,
    },
    /// The currency's exponent is not in citypay's table.
    #[error("currency {currency} is not one citypay can write amounts for")]
    UnknownCurrency {
        /// The code given.
        currency: String,
    },
    /// A dynamic QR for nothing.
    #[error("a dynamic QR needs an amount greater than zero")]
    ZeroAmount,
    /// The amount does not fit the 13 characters of data object 54.
    #[error("amount of {amount_minor} minor units cannot be written: {reason}")]
    Amount {
        /// The amount given.
        amount_minor: u64,
        /// Why.
        reason: AmountError,
    },
}

/// Checks one field with `check`, naming it in the error.
fn require(
    field: &'static str,
    value: &str,
    rule: &'static str,
    check: impl Fn(&str) -> bool,
) -> Result<(), BuildError> {
    if check(value) {
        return Ok(());
    }
    Err(BuildError::Invalid {
        field,
        value: value.to_owned(),
        rule,
    })
}

/// 1 to `max` printable ASCII characters (EMVCo "ans").
fn ans(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

/// 1 to `max` characters of any script, none of them a control character.
fn any_script(value: &str, max: usize) -> bool {
    let chars = value.chars().count();
    chars > 0 && chars <= max && !value.chars().any(char::is_control)
}

fn fixed(value: &str, count: usize, kind: fn(&u8) -> bool) -> bool {
    value.len() == count && value.bytes().all(|b| kind(&b))
}

impl CitypayQr {
    /// Encodes the QR payload, CRC included. The result decodes with
    /// [`super::Payload::decode`] to the same fields.
    pub fn encode(&self) -> Result<String, BuildError> {
        self.check()?;
        let amount = self.amount()?;
        let mut out = String::new();
        tlv::push(&mut out, 0, "01");
        tlv::push(&mut out, 1, self.initiation().code());
        tlv::push(&mut out, CITYPAY_TEMPLATE_ID, &self.account_template());
        tlv::push(&mut out, 52, &self.mcc);
        tlv::push(&mut out, 53, &self.currency);
        if let Some(amount) = &amount {
            tlv::push(&mut out, 54, amount.as_str());
        }
        tlv::push(&mut out, 58, &self.country);
        tlv::push(&mut out, 59, &self.name);
        tlv::push(&mut out, 60, &self.city);
        if let Some(postal_code) = &self.postal_code {
            tlv::push(&mut out, 61, postal_code);
        }
        if let Charge::Dynamic { order_number, .. } = &self.charge {
            tlv::push(&mut out, 62, &tlv_string(5, order_number));
        }
        if let Some(language) = &self.language {
            tlv::push(&mut out, 64, &language_template(language));
        }
        Ok(finish_with_crc(out))
    }

    /// Point of initiation for this charge.
    pub fn initiation(&self) -> Initiation {
        match self.charge {
            Charge::Static => Initiation::Static,
            Charge::Dynamic { .. } => Initiation::Dynamic,
        }
    }

    fn check(&self) -> Result<(), BuildError> {
        let id_rule = "1 to 32 ASCII letters, digits, '-' or '_'";
        require(
            "merchant id",
            &self.merchant_id,
            id_rule,
            is_valid_merchant_id,
        )?;
        require("MCC", &self.mcc, "4 digits", |v| {
            fixed(v, 4, u8::is_ascii_digit)
        })?;
        require("currency", &self.currency, "3 digits", |v| {
            fixed(v, 3, u8::is_ascii_digit)
        })?;
        let country_rule = "2 upper-case letters";
        require("country", &self.country, country_rule, |v| {
            fixed(v, 2, u8::is_ascii_uppercase)
        })?;
        let ascii = |max| move |v: &str| ans(v, max);
        require(
            "merchant name",
            &self.name,
            "1 to 25 printable ASCII characters",
            ascii(25),
        )?;
        require(
            "merchant city",
            &self.city,
            "1 to 15 printable ASCII characters",
            ascii(15),
        )?;
        if let Some(postal_code) = &self.postal_code {
            require(
                "postal code",
                postal_code,
                "1 to 10 printable ASCII characters",
                ascii(10),
            )?;
        }
        if let Charge::Dynamic { order_number, .. } = &self.charge {
            let rule = "1 to 25 printable ASCII characters";
            require("order number", order_number, rule, ascii(25))?;
        }
        if let Some(language) = &self.language {
            check_language(language)?;
        }
        Ok(())
    }

    /// Data object 54's text, for a dynamic charge.
    fn amount(&self) -> Result<Option<Amount>, BuildError> {
        let Charge::Dynamic { amount_minor, .. } = self.charge else {
            return Ok(None);
        };
        if amount_minor == 0 {
            return Err(BuildError::ZeroAmount);
        }
        let Some(exponent) = currency_exponent(&self.currency) else {
            return Err(BuildError::UnknownCurrency {
                currency: self.currency.clone(),
            });
        };
        let amount = Amount::from_minor_units(amount_minor, exponent).map_err(|reason| {
            BuildError::Amount {
                amount_minor,
                reason,
            }
        })?;
        Ok(Some(amount))
    }

    fn account_template(&self) -> String {
        tlv_string(0, CITYPAY_GUI) + &tlv_string(CITYPAY_MERCHANT_ID, &self.merchant_id)
    }
}

fn check_language(language: &LanguageTemplate) -> Result<(), BuildError> {
    let preference = &language.preference;
    let letters = |v: &str| fixed(v, 2, u8::is_ascii_alphabetic);
    require(
        "language preference",
        preference,
        "2 letters (ISO 639-1)",
        letters,
    )?;
    let rule = "1 to 25 characters, no control characters";
    require("alternate name", &language.name, rule, |v| {
        any_script(v, 25)
    })?;
    if let Some(city) = &language.city {
        let rule = "1 to 15 characters, no control characters";
        require("alternate city", city, rule, |v| any_script(v, 15))?;
    }
    Ok(())
}

fn language_template(language: &LanguageTemplate) -> String {
    let mut out = tlv_string(0, &language.preference) + &tlv_string(1, &language.name);
    if let Some(city) = &language.city {
        out.push_str(&tlv_string(2, city));
    }
    out
}

fn tlv_string(id: u8, value: &str) -> String {
    let mut out = String::new();
    tlv::push(&mut out, id, value);
    out
}
