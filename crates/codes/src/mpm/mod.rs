//! EMVCo merchant-presented mode (MPM) QR payloads.
//!
//! A payload is a string of data objects `ID (2 digits) + length (2 digits) + value`; lengths
//! count characters, not bytes (see [`tlv`] for the sources). Some root IDs are templates
//! whose value is itself a string of data objects: 26–51 (merchant account information), 62
//! (additional data), 64 (merchant information in a second language) and 80–99 (unreserved).
//!
//! Decoding happens in two layers:
//!
//! - [`RawPayload::decode`] checks the framing: the payload format indicator `000201` first,
//!   well-formed IDs and lengths, no duplicate IDs, templates that decode, the CRC (ID 63,
//!   length 04) last and matching, and well-formed merchant account templates. It tells which
//!   [`Scheme`]s the payload offers.
//! - [`Payload::decode`] adds the meaning: at least one merchant account 02–51, the point of
//!   initiation, the amount, and the formats of the fields it reads. A missing mandatory field
//!   (52, 53, 58, 59, 60) or a lower-case CRC is a warning, not a refusal, since real payloads
//!   in circulation have them and banks' apps read them; [`Payload::require_complete`] is
//!   the strict check.
//!
//! [`CitypayQr`] writes citypay's own payloads, static (a counter sticker) or dynamic (one
//! order, with amount and order number).
//!
//! Data objects may come in any order apart from 00 first and 63 last: the EMVCo example puts
//! 64 before 54.

mod amount;
mod builder;
mod crc;
mod error;
mod payload;
mod scheme;
pub mod tlv;

pub use amount::{Amount, AmountError, MAX_AMOUNT_CHARS, currency_exponent};
pub use builder::{BuildError, CITYPAY_TEMPLATE_ID, Charge, CitypayQr};
pub use crc::{checksum, checksum_hex};
pub use error::{MpmError, MpmWarning};
pub use payload::{
    AdditionalData, Initiation, LanguageTemplate, MAX_PAYLOAD_CHARS, Payload, RawPayload,
    is_template,
};
pub use scheme::{
    CITYPAY_GUI, CITYPAY_MERCHANT_ID, MAX_MERCHANT_ID_CHARS, Scheme, is_merchant_account,
    is_valid_merchant_id,
};
pub use tlv::DataObject;
