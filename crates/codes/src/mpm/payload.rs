//! Decoding a whole payload: framing and CRC ([`RawPayload`]), then meaning ([`Payload`]).

use super::amount::{Amount, currency_exponent};
use super::crc::checksum_hex;
use super::error::{MpmError, MpmWarning};
use super::scheme::{self, Scheme};
use super::tlv::{self, DataObject, Span};

/// The longest payload citypay reads, in characters.
///
/// This is citypay's own bound, about twice the EMVCo example (248 characters), so that a
/// hostile scan costs little to refuse.
pub const MAX_PAYLOAD_CHARS: usize = 512;

/// ID of the CRC, which must be the last data object.
const CRC_ID: u8 = 63;

/// A payload whose framing and CRC are right, before any field is interpreted.
///
/// This is enough to tell which schemes a payload offers, even for national profiles that
/// leave out fields EMVCo makes mandatory (PromptPay's personal codes carry no merchant name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPayload {
    objects: Vec<DataObject>,
    schemes: Vec<Scheme>,
}

impl RawPayload {
    /// Checks the format indicator, the TLV framing (templates included), duplicates, the
    /// position and value of the CRC, and the merchant account templates.
    pub fn decode(text: &str) -> Result<RawPayload, MpmError> {
        check_size(text)?;
        check_format_indicator(text)?;
        let spans = tlv::split(text, 0)?;
        check_crc(text, &spans)?;
        let objects = spans
            .iter()
            .map(decode_object)
            .collect::<Result<Vec<_>, _>>()?;
        let accounts = objects
            .iter()
            .filter(|o| scheme::is_merchant_account(o.id()));
        let schemes = accounts
            .map(scheme::of_account)
            .collect::<Result<Vec<_>, _>>()?;
        let raw = RawPayload { objects, schemes };
        raw.check_one_citypay_template()?;
        Ok(raw)
    }

    /// Every root data object in payload order, the CRC last.
    pub fn objects(&self) -> &[DataObject] {
        &self.objects
    }

    /// The root data object with ID `id`, if present.
    pub fn get(&self, id: u8) -> Option<&DataObject> {
        self.objects.iter().find(|object| object.id() == id)
    }

    /// The value of the root data object with ID `id`, if present.
    pub fn value(&self, id: u8) -> Option<&str> {
        self.get(id).map(DataObject::value)
    }

    /// The merchant account information data objects (IDs 02–51), in payload order.
    pub fn merchant_accounts(&self) -> impl Iterator<Item = &DataObject> {
        self.objects
            .iter()
            .filter(|object| scheme::is_merchant_account(object.id()))
    }

    /// The scheme of each merchant account, in the order of [`RawPayload::merchant_accounts`].
    pub fn schemes(&self) -> &[Scheme] {
        &self.schemes
    }

    /// The citypay merchant id, when the payload carries citypay's template.
    pub fn citypay_merchant(&self) -> Option<&str> {
        self.schemes.iter().find_map(|scheme| match scheme {
            Scheme::Citypay { merchant_id } => Some(merchant_id.as_str()),
            _ => None,
        })
    }

    /// The CRC as written (four upper-case hex digits).
    pub fn crc(&self) -> &str {
        self.objects
            .last()
            .map(DataObject::value)
            .unwrap_or_default()
    }

    /// Writes the payload again, with a freshly computed CRC.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for object in self.objects.iter().filter(|object| object.id() != CRC_ID) {
            tlv::push(&mut out, object.id(), object.value());
        }
        finish_with_crc(out)
    }

    fn check_one_citypay_template(&self) -> Result<(), MpmError> {
        let mut citypay = self
            .merchant_accounts()
            .zip(&self.schemes)
            .filter(|(_, s)| s.is_citypay());
        match (citypay.next(), citypay.next()) {
            (Some((first, _)), Some((second, _))) => Err(MpmError::DuplicateCitypay {
                first: first.id(),
                second: second.id(),
            }),
            _ => Ok(()),
        }
    }
}

/// Appends data object 63 to `body`: `6304` and the CRC over everything before it.
pub(crate) fn finish_with_crc(mut body: String) -> String {
    body.push_str("6304");
    let crc = checksum_hex(&body);
    body.push_str(&crc);
    body
}

fn check_size(text: &str) -> Result<(), MpmError> {
    let chars = text.chars().count();
    if chars > MAX_PAYLOAD_CHARS {
        return Err(MpmError::TooLong {
            chars,
            max: MAX_PAYLOAD_CHARS,
        });
    }
    Ok(())
}

fn check_format_indicator(text: &str) -> Result<(), MpmError> {
    if text.starts_with("000201") {
        return Ok(());
    }
    Err(MpmError::FormatIndicator {
        found: text.chars().take(6).collect(),
    })
}

fn check_crc(text: &str, spans: &[Span<'_>]) -> Result<(), MpmError> {
    let Some(position) = spans.iter().position(|span| span.id == CRC_ID) else {
        return Err(MpmError::CrcMissing);
    };
    if let Some(next) = spans.get(position + 1) {
        return Err(MpmError::CrcNotLast {
            next: next.id,
            offset: next.offset,
        });
    }
    let crc = &spans[position];
    let length = crc.value.chars().count();
    if length != 4 {
        return Err(MpmError::CrcLength { length });
    }
    // The CRC covers everything up to and including "6304": the object's ID and length. Hex
    // digits in lower case are the same check value (some generators write them so); the
    // payload reports it as a warning.
    let expected = checksum_hex(&text[..crc.byte_offset + 4]);
    if !crc.value.eq_ignore_ascii_case(&expected) {
        return Err(MpmError::CrcMismatch {
            expected,
            found: crc.value.to_owned(),
        });
    }
    Ok(())
}

/// Whether a root ID is a template whose value holds sub-objects.
pub fn is_template(id: u8) -> bool {
    matches!(id, 26..=51 | 62 | 64 | 80..=99)
}

fn decode_object(span: &Span<'_>) -> Result<DataObject, MpmError> {
    if is_template(span.id) {
        DataObject::template(span)
    } else {
        Ok(DataObject::primitive(span))
    }
}

/// Data object 01: whether the QR is reused or made for one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiation {
    /// `11`: the same QR for every payment (a counter sticker); the customer types the amount.
    Static,
    /// `12`: a QR for one payment, usually with its amount.
    Dynamic,
}

impl Initiation {
    /// The two-digit value of data object 01.
    pub fn code(self) -> &'static str {
        match self {
            Initiation::Static => "11",
            Initiation::Dynamic => "12",
        }
    }

    fn parse(value: &str) -> Result<Initiation, MpmError> {
        match value {
            "11" => Ok(Initiation::Static),
            "12" => Ok(Initiation::Dynamic),
            _ => Err(MpmError::PointOfInitiation {
                found: value.to_owned(),
            }),
        }
    }
}

/// The sub-objects of the additional data field template (ID 62) that citypay reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdditionalData {
    /// 01: bill number.
    pub bill_number: Option<String>,
    /// 02: mobile number.
    pub mobile_number: Option<String>,
    /// 03: store label.
    pub store_label: Option<String>,
    /// 04: loyalty number.
    pub loyalty_number: Option<String>,
    /// 05: reference label; citypay's dynamic QRs carry the order number here.
    pub reference_label: Option<String>,
    /// 06: customer label.
    pub customer_label: Option<String>,
    /// 07: terminal label.
    pub terminal_label: Option<String>,
    /// 08: purpose of transaction.
    pub purpose: Option<String>,
}

impl AdditionalData {
    fn from_template(template: &DataObject) -> AdditionalData {
        let text = |id: u8| template.child_value(id).map(str::to_owned);
        AdditionalData {
            bill_number: text(1),
            mobile_number: text(2),
            store_label: text(3),
            loyalty_number: text(4),
            reference_label: text(5),
            customer_label: text(6),
            terminal_label: text(7),
            purpose: text(8),
        }
    }
}

/// The merchant information language template (ID 64): name and city in a second language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageTemplate {
    /// 00: language preference, two letters of ISO 639-1 (`ZH`).
    pub preference: String,
    /// 01: merchant name in that language, up to 25 characters of any script.
    pub name: String,
    /// 02: merchant city in that language, up to 15 characters of any script.
    pub city: Option<String>,
}

impl LanguageTemplate {
    fn from_template(template: &DataObject) -> Result<LanguageTemplate, MpmError> {
        let preference = sub_field(template, &LANGUAGE_PREFERENCE)?;
        let name = sub_field(template, &ALTERNATE_NAME)?;
        let city = optional_sub_field(template, &ALTERNATE_CITY)?;
        Ok(LanguageTemplate {
            preference,
            name,
            city,
        })
    }
}

/// The format of one data object citypay interprets.
struct Rule {
    id: u8,
    name: &'static str,
    check: fn(&str) -> bool,
    rule: &'static str,
}

fn digits(value: &str, count: usize) -> bool {
    value.len() == count && value.bytes().all(|b| b.is_ascii_digit())
}

fn letters(value: &str, count: usize) -> bool {
    value.len() == count && value.bytes().all(|b| b.is_ascii_alphabetic())
}

fn at_most(value: &str, max: usize) -> bool {
    value.chars().count() <= max
}

const MCC: Rule = Rule {
    id: 52,
    name: "merchant category code",
    check: |v| digits(v, 4),
    rule: "4 digits (ISO 18245)",
};
const CURRENCY: Rule = Rule {
    id: 53,
    name: "transaction currency",
    check: |v| digits(v, 3),
    rule: "3 digits (ISO 4217 numeric)",
};
const COUNTRY: Rule = Rule {
    id: 58,
    name: "country code",
    check: |v| letters(v, 2),
    rule: "2 letters (ISO 3166-1 alpha-2)",
};
const NAME: Rule = Rule {
    id: 59,
    name: "merchant name",
    check: |v| at_most(v, 25),
    rule: "at most 25 characters",
};
const CITY: Rule = Rule {
    id: 60,
    name: "merchant city",
    check: |v| at_most(v, 15),
    rule: "at most 15 characters",
};
const POSTAL_CODE: Rule = Rule {
    id: 61,
    name: "postal code",
    check: |v| at_most(v, 10),
    rule: "at most 10 characters",
};
const LANGUAGE_PREFERENCE: Rule = Rule {
    id: 0,
    name: "language preference",
    check: |v| letters(v, 2),
    rule: "2 letters (ISO 639-1)",
};
const ALTERNATE_NAME: Rule = Rule {
    id: 1,
    name: "alternate merchant name",
    check: |v| at_most(v, 25),
    rule: "at most 25 characters",
};
const ALTERNATE_CITY: Rule = Rule {
    id: 2,
    name: "alternate merchant city",
    check: |v| at_most(v, 15),
    rule: "at most 15 characters",
};

/// A mandatory root data object: its value, or `None` and a warning when it is absent.
fn mandatory_field(
    raw: &RawPayload,
    rule: &Rule,
    warnings: &mut Vec<MpmWarning>,
) -> Result<Option<String>, MpmError> {
    let value = optional_field(raw, rule)?;
    if value.is_none() {
        warnings.push(MpmWarning::MissingField {
            id: rule.id,
            name: rule.name,
        });
    }
    Ok(value)
}

fn optional_field(raw: &RawPayload, rule: &Rule) -> Result<Option<String>, MpmError> {
    let Some(value) = raw.value(rule.id) else {
        return Ok(None);
    };
    if !(rule.check)(value) {
        let (id, name, rule) = (rule.id, rule.name, rule.rule);
        return Err(MpmError::InvalidField {
            id,
            name,
            value: value.to_owned(),
            rule,
        });
    }
    Ok(Some(value.to_owned()))
}

fn sub_field(template: &DataObject, rule: &Rule) -> Result<String, MpmError> {
    let missing = MpmError::MissingSubField {
        template: template.id(),
        id: rule.id,
        name: rule.name,
    };
    optional_sub_field(template, rule)?.ok_or(missing)
}

fn optional_sub_field(template: &DataObject, rule: &Rule) -> Result<Option<String>, MpmError> {
    let Some(value) = template.child_value(rule.id) else {
        return Ok(None);
    };
    if !(rule.check)(value) {
        let (id, name, rule, template) = (rule.id, rule.name, rule.rule, template.id());
        let value = value.to_owned();
        return Err(MpmError::InvalidSubField {
            template,
            id,
            name,
            value,
            rule,
        });
    }
    Ok(Some(value.to_owned()))
}

/// A decoded merchant-presented payload: framing, CRC and the fields citypay reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    raw: RawPayload,
    initiation: Option<Initiation>,
    mcc: Option<String>,
    currency: Option<String>,
    amount: Option<Amount>,
    amount_minor: Option<u64>,
    country: Option<String>,
    name: Option<String>,
    city: Option<String>,
    postal_code: Option<String>,
    additional_data: Option<AdditionalData>,
    language: Option<LanguageTemplate>,
    warnings: Vec<MpmWarning>,
}

impl Payload {
    /// Decodes and checks a payload: everything [`RawPayload::decode`] checks, then a
    /// merchant account (02–51) and the format of every field citypay interprets.
    ///
    /// Real payloads are read as banks' apps read them: a missing mandatory field (52, 53,
    /// 58, 59 or 60; PromptPay's and VietQR's generators leave out 52, 59 and 60) and a CRC
    /// in lower-case hex are listed in [`Payload::warnings`] rather than refused. What cannot
    /// be read safely is still refused: framing, lengths, a wrong CRC, malformed fields. Use
    /// [`Payload::require_complete`] where the strict template matters.
    pub fn decode(text: &str) -> Result<Payload, MpmError> {
        Payload::from_raw(RawPayload::decode(text)?)
    }

    fn from_raw(raw: RawPayload) -> Result<Payload, MpmError> {
        let initiation = raw.value(1).map(Initiation::parse).transpose()?;
        if raw.merchant_accounts().next().is_none() {
            return Err(MpmError::NoMerchantAccount);
        }
        let mut warnings = Vec::new();
        let mcc = mandatory_field(&raw, &MCC, &mut warnings)?;
        let currency = mandatory_field(&raw, &CURRENCY, &mut warnings)?;
        let (amount, amount_minor) = amount(&raw, currency.as_deref())?;
        let country = mandatory_field(&raw, &COUNTRY, &mut warnings)?;
        let name = mandatory_field(&raw, &NAME, &mut warnings)?;
        let city = mandatory_field(&raw, &CITY, &mut warnings)?;
        if raw.crc().bytes().any(|b| b.is_ascii_lowercase()) {
            warnings.push(MpmWarning::CrcLowerCase {
                found: raw.crc().to_owned(),
            });
        }
        let postal_code = optional_field(&raw, &POSTAL_CODE)?;
        let additional_data = raw.get(62).map(AdditionalData::from_template);
        let language = raw
            .get(64)
            .map(LanguageTemplate::from_template)
            .transpose()?;
        Ok(Payload {
            raw,
            initiation,
            mcc,
            currency,
            amount,
            amount_minor,
            country,
            name,
            city,
            postal_code,
            additional_data,
            language,
            warnings,
        })
    }

    /// What the payload leaves out or bends, in the order found; empty for a strictly
    /// complete payload.
    pub fn warnings(&self) -> &[MpmWarning] {
        &self.warnings
    }

    /// The payload is strictly complete: every mandatory field present and the CRC in upper
    /// case, as citypay writes its own. Otherwise the first departure, as an error.
    pub fn require_complete(&self) -> Result<(), MpmError> {
        match self.warnings.first() {
            None => Ok(()),
            Some(MpmWarning::MissingField { id, name }) => {
                Err(MpmError::MissingField { id: *id, name })
            }
            Some(MpmWarning::CrcLowerCase { found }) => Err(MpmError::CrcLowerCase {
                found: found.clone(),
            }),
        }
    }

    /// The framing layer: every data object, and the schemes.
    pub fn raw(&self) -> &RawPayload {
        &self.raw
    }

    /// Data object 01, when present.
    pub fn initiation(&self) -> Option<Initiation> {
        self.initiation
    }

    /// The scheme of each merchant account, in payload order.
    pub fn schemes(&self) -> &[Scheme] {
        self.raw.schemes()
    }

    /// The citypay merchant id, when the payload carries citypay's template.
    pub fn citypay_merchant(&self) -> Option<&str> {
        self.raw.citypay_merchant()
    }

    /// 52: merchant category code (ISO 18245), four digits, when present.
    pub fn mcc(&self) -> Option<&str> {
        self.mcc.as_deref()
    }

    /// 53: transaction currency, the ISO 4217 numeric code (`156` for CNY), when present.
    pub fn currency(&self) -> Option<&str> {
        self.currency.as_deref()
    }

    /// 54: the amount as written, when present.
    pub fn amount(&self) -> Option<&Amount> {
        self.amount.as_ref()
    }

    /// The amount in minor units, when present and the currency's exponent is known to
    /// [`super::currency_exponent`]; otherwise use [`Amount::to_minor_units`].
    pub fn amount_minor_units(&self) -> Option<u64> {
        self.amount_minor
    }

    /// 58: country code (ISO 3166-1 alpha-2), when present.
    pub fn country(&self) -> Option<&str> {
        self.country.as_deref()
    }

    /// 59: merchant name, when present.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// 60: merchant city, when present.
    pub fn city(&self) -> Option<&str> {
        self.city.as_deref()
    }

    /// 61: postal code, when present.
    pub fn postal_code(&self) -> Option<&str> {
        self.postal_code.as_deref()
    }

    /// 62: additional data, when present.
    pub fn additional_data(&self) -> Option<&AdditionalData> {
        self.additional_data.as_ref()
    }

    /// 64: merchant information in a second language, when present.
    pub fn language(&self) -> Option<&LanguageTemplate> {
        self.language.as_ref()
    }

    /// Writes the payload again, data objects in their decoded order, with a fresh CRC.
    pub fn encode(&self) -> String {
        self.raw.encode()
    }
}

/// Data object 54, checked against the currency's exponent when it is known.
fn amount(
    raw: &RawPayload,
    currency: Option<&str>,
) -> Result<(Option<Amount>, Option<u64>), MpmError> {
    let Some(value) = raw.value(54) else {
        return Ok((None, None));
    };
    let invalid = |reason| MpmError::InvalidAmount {
        value: value.to_owned(),
        reason,
    };
    let amount = Amount::parse(value).map_err(invalid)?;
    let Some(exponent) = currency.and_then(currency_exponent) else {
        return Ok((Some(amount), None));
    };
    let minor = amount.to_minor_units(exponent).map_err(invalid)?;
    Ok((Some(amount), Some(minor)))
}
