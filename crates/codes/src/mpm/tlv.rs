//! The TLV layer of EMVCo MPM: `ID (2 digits) + length (2 digits) + value`.
//!
//! # Lengths count characters, not bytes
//!
//! EMV QRCPS Merchant-Presented Mode (v1.0, July 2017, and v1.1, November 2020) defines a data
//! object as an ID field (two digits, "00" to "99"), a length field (two digits, "01" to "99")
//! "that explicitly indicates the number of characters included in the third field, i.e. the
//! value field", and a value of 1 to 99 characters. Fields of format S (the merchant
//! information language template, ID 64) may hold any Unicode character, and UnionPay
//! International's MPM encoding specification spells out the consequence: "A character in
//! UTF-8 can be one to four byte long. The length must be equal to the number of characters in
//! the value, not the number of bytes." The specification's own example payload agrees:
//! `64200002ZH0104最佳运输0202北京` declares 20 for a value of 20 characters (32 UTF-8 bytes),
//! and its CRC `A13A` verifies only when computed over the UTF-8 bytes.
//!
//! Sources: the EMV text quoted in Cambodia's KHQR specification
//! (apis.payon.com.kh/khqrcode-lib/2.-khqr-code-spec); UnionPay International, "Merchant
//! Presented QR Code Encoding Specification", developer.unionpayintl.com/cjweb/support/file/
//! online/0/6/54 ("Data Element Format Conventions"); `../shared/guide/domain.md` section 4.1.
//!
//! So this module measures lengths and offsets in Unicode scalar values (Rust `char`s), and
//! the CRC (in `crc.rs`) is computed over bytes.

use super::error::MpmError;

/// The most characters a two-digit length can declare.
pub const MAX_VALUE_CHARS: usize = 99;

/// One decoded data object.
///
/// Templates (root IDs 26–51, 62, 64 and 80–99) also carry their decoded sub-objects in
/// [`DataObject::children`]; for any other data object the list is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObject {
    id: u8,
    value: String,
    offset: usize,
    children: Vec<DataObject>,
}

impl DataObject {
    /// The ID, 0 to 99.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The value exactly as written (for a template, its encoded sub-objects).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Where the data object starts, in characters from the start of the payload.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The decoded sub-objects of a template, in payload order; empty for a primitive.
    pub fn children(&self) -> &[DataObject] {
        &self.children
    }

    /// The sub-object with ID `id`, if any.
    pub fn child(&self, id: u8) -> Option<&DataObject> {
        self.children.iter().find(|child| child.id == id)
    }

    /// The value of the sub-object with ID `id`, if any.
    pub fn child_value(&self, id: u8) -> Option<&str> {
        self.child(id).map(DataObject::value)
    }

    pub(crate) fn primitive(span: &Span<'_>) -> DataObject {
        DataObject {
            id: span.id,
            value: span.value.to_owned(),
            offset: span.offset,
            children: Vec::new(),
        }
    }

    /// Decodes a template's value into sub-objects; errors name the template.
    pub(crate) fn template(span: &Span<'_>) -> Result<DataObject, MpmError> {
        let value_offset = span.offset + 4;
        let spans =
            split(span.value, value_offset).map_err(|e| MpmError::in_template(span.id, e))?;
        let mut object = DataObject::primitive(span);
        object.children = spans.iter().map(DataObject::primitive).collect();
        Ok(object)
    }
}

/// A data object located in its text, before it is copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span<'a> {
    pub(crate) id: u8,
    pub(crate) value: &'a str,
    /// Character offset of the ID from the start of the payload.
    pub(crate) offset: usize,
    /// Byte offset of the ID from the start of the split text.
    pub(crate) byte_offset: usize,
}

/// Decodes one level of data objects (no nesting), as a flat list in text order.
///
/// Offsets in the objects and in errors count characters from the start of `text`.
pub fn decode(text: &str) -> Result<Vec<DataObject>, MpmError> {
    let spans = split(text, 0)?;
    Ok(spans.iter().map(DataObject::primitive).collect())
}

/// Encodes one data object; `None` when `id` is over 99 or the value is not 1 to 99
/// characters long.
pub fn encode(id: u8, value: &str) -> Option<String> {
    let chars = value.chars().count();
    if id > 99 || chars == 0 || chars > MAX_VALUE_CHARS {
        return None;
    }
    Some(format!("{id:02}{chars:02}{value}"))
}

/// Appends one data object whose ID and value the caller has already checked.
pub(crate) fn push(out: &mut String, id: u8, value: &str) {
    // Callers validate first; an invalid object here is a bug in this crate.
    match encode(id, value) {
        Some(encoded) => out.push_str(&encoded),
        None => panic!("data object {id:02} with value {value:?} is not encodable"),
    }
}

/// Splits one level of data objects, refusing duplicates.
///
/// `base_offset` is the character offset of `text` within the payload, so that errors inside
/// templates point into the whole payload.
pub(crate) fn split(text: &str, base_offset: usize) -> Result<Vec<Span<'_>>, MpmError> {
    let mut spans: Vec<Span<'_>> = Vec::new();
    let mut seen = [false; 100];
    let mut cursor = Cursor {
        rest: text,
        offset: base_offset,
        byte_offset: 0,
    };
    while !cursor.rest.is_empty() {
        let span = cursor.next_object()?;
        let slot = usize::from(span.id);
        if seen[slot] {
            return Err(MpmError::DuplicateId {
                id: span.id,
                offset: span.offset,
            });
        }
        seen[slot] = true;
        spans.push(span);
    }
    Ok(spans)
}

/// Reads data objects off the front of a text.
struct Cursor<'a> {
    rest: &'a str,
    offset: usize,
    byte_offset: usize,
}

impl<'a> Cursor<'a> {
    fn next_object(&mut self) -> Result<Span<'a>, MpmError> {
        let (id, declared) = self.header()?;
        // The header is four ASCII digits, so it is four bytes.
        let after_header = &self.rest[4..];
        let Some(value_bytes) = byte_len_of_chars(after_header, declared) else {
            let available = after_header.chars().count();
            return Err(MpmError::ValueOverrun {
                id,
                offset: self.offset,
                declared,
                available,
            });
        };
        let span = Span {
            id,
            value: &after_header[..value_bytes],
            offset: self.offset,
            byte_offset: self.byte_offset,
        };
        self.rest = &after_header[value_bytes..];
        self.offset += 4 + declared;
        self.byte_offset += 4 + value_bytes;
        Ok(span)
    }

    /// Reads and checks the ID and length; leaves the cursor where it was.
    fn header(&self) -> Result<(u8, usize), MpmError> {
        let mut chars = self.rest.chars();
        let header: [Option<char>; 4] = std::array::from_fn(|_| chars.next());
        let [Some(i0), Some(i1), Some(l0), Some(l1)] = header else {
            let remaining = self.rest.chars().count();
            return Err(MpmError::TruncatedHeader {
                offset: self.offset,
                remaining,
            });
        };
        let Some(id) = two_digits(i0, i1) else {
            return Err(MpmError::NonDigitId {
                offset: self.offset,
                found: [i0, i1].iter().collect(),
            });
        };
        let Some(length) = two_digits(l0, l1) else {
            let found = [l0, l1].iter().collect();
            return Err(MpmError::NonDigitLength {
                id,
                offset: self.offset,
                found,
            });
        };
        if length == 0 {
            return Err(MpmError::ZeroLength {
                id,
                offset: self.offset,
            });
        }
        Ok((id, usize::from(length)))
    }
}

/// The number formed by two ASCII digits.
fn two_digits(tens: char, ones: char) -> Option<u8> {
    Some(digit(tens)? * 10 + digit(ones)?)
}

/// The value of an ASCII digit (`to_digit` accepts no other script's digits).
fn digit(c: char) -> Option<u8> {
    u8::try_from(c.to_digit(10)?).ok()
}

/// How many bytes the first `chars` characters of `text` take; `None` when it is shorter.
fn byte_len_of_chars(text: &str, chars: usize) -> Option<usize> {
    match text.char_indices().nth(chars) {
        Some((byte, _)) => Some(byte),
        None if text.chars().count() == chars => Some(text.len()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_characters() {
        let objects = decode("0104最佳运输0202北京").unwrap();
        assert_eq!(objects[0].value(), "最佳运输");
        assert_eq!(objects[1].value(), "北京");
        assert_eq!(objects[1].offset(), 8);
    }

    #[test]
    fn encode_counts_characters() {
        assert_eq!(encode(1, "最佳运输").as_deref(), Some("0104最佳运输"));
        assert_eq!(encode(100, "x"), None);
        assert_eq!(encode(1, ""), None);
        assert_eq!(encode(1, &"x".repeat(100)), None);
    }

    #[test]
    fn header_errors_are_precise() {
        assert_eq!(
            decode("010"),
            Err(MpmError::TruncatedHeader {
                offset: 0,
                remaining: 3
            })
        );
        assert_eq!(
            decode("0x02ab"),
            Err(MpmError::NonDigitId {
                offset: 0,
                found: "0x".into()
            })
        );
        assert_eq!(
            decode("01٠2ab"),
            Err(MpmError::NonDigitLength {
                id: 1,
                offset: 0,
                found: "٠2".into()
            })
        );
        assert_eq!(
            decode("0100"),
            Err(MpmError::ZeroLength { id: 1, offset: 0 })
        );
        assert_eq!(
            decode("0105abc"),
            Err(MpmError::ValueOverrun {
                id: 1,
                offset: 0,
                declared: 5,
                available: 3
            })
        );
        assert_eq!(
            decode("0101a0101b"),
            Err(MpmError::DuplicateId { id: 1, offset: 5 })
        );
    }
}
