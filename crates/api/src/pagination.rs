//! Cursor pagination: opaque cursors and the `cursor`/`limit` query parameters.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// Page size when the request names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size a request may ask for.
pub const MAX_LIMIT: u32 = 200;

const CURSOR_VERSION: u8 = 1;
/// The longest id a cursor carries, in bytes.
pub const CURSOR_ID_MAX_LEN: usize = 128;
/// Version byte, sort key, id; base64 makes 4 characters of 3 bytes.
const CURSOR_ENCODED_MAX_LEN: usize = (1 + 8 + CURSOR_ID_MAX_LEN).div_ceil(3) * 4;

/// Where a page starts: the sort key and id of the last item of the previous page.
///
/// On the wire it is base64url (no padding) of a version byte, the sort key as 8 big-endian
/// bytes and the id's UTF-8 bytes. Clients treat it as opaque. It is not signed: a client can
/// forge one, so a query must still be scoped to what the caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The sort key of the last item returned (a time, a sequence number).
    pub sort_key: i64,
    /// The id of the last item returned, which breaks ties between equal sort keys.
    pub id: String,
}

impl Cursor {
    /// A cursor after the item `(sort_key, id)`.
    ///
    /// # Panics
    ///
    /// If `id` is longer than [`CURSOR_ID_MAX_LEN`] bytes: ids are the server's own, so that
    /// is a programming error.
    pub fn new(sort_key: i64, id: impl Into<String>) -> Self {
        let id = id.into();
        assert!(
            id.len() <= CURSOR_ID_MAX_LEN,
            "cursor id of {} bytes",
            id.len()
        );
        Self { sort_key, id }
    }

    /// The opaque string for `next_cursor`.
    pub fn encode(&self) -> String {
        let mut payload = Vec::with_capacity(1 + 8 + self.id.len());
        payload.push(CURSOR_VERSION);
        payload.extend_from_slice(&self.sort_key.to_be_bytes());
        payload.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// Reads a cursor a client sent back; anything else is 400 `invalid_cursor`.
    pub fn decode(encoded: &str) -> Result<Self, ApiError> {
        Self::try_decode(encoded).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
        })
    }

    fn try_decode(encoded: &str) -> Option<Self> {
        if encoded.len() > CURSOR_ENCODED_MAX_LEN {
            return None;
        }
        let payload = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let (&version, rest) = payload.split_first()?;
        if version != CURSOR_VERSION || rest.len() < 8 || rest.len() > 8 + CURSOR_ID_MAX_LEN {
            return None;
        }
        let (sort_key, id) = rest.split_at(8);
        let sort_key = i64::from_be_bytes(sort_key.try_into().ok()?);
        let id = String::from_utf8(id.to_vec()).ok()?;
        Some(Self { sort_key, id })
    }
}

/// The query parameters of a list endpoint; document a route with `params(PageQuery)`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page; absent (or empty) for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200; 50 when absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// A checked page request: the decoded cursor (none for the first page) and the page size.
///
/// As an extractor it reads `?cursor=...&limit=...`: a bad cursor is 400 `invalid_cursor`, a
/// limit that is not a number from 1 to [`MAX_LIMIT`] is 400 `invalid_limit`. Other query
/// parameters are left to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Where to start; `None` for the first page.
    pub cursor: Option<Cursor>,
    /// How many items to return at most.
    pub limit: u32,
}

impl PageRequest {
    /// Checks raw query parameters.
    pub fn from_query(query: &PageQuery) -> Result<Self, ApiError> {
        let limit = parse_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
        let cursor = match query.cursor.as_deref() {
            None | Some("") => None,
            Some(encoded) => Some(Cursor::decode(encoded)?),
        };
        Ok(Self { cursor, limit })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<PageQuery>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::bad_request("invalid_query", "the query string is malformed"))?;
        Self::from_query(&query)
    }
}

/// Parses a `limit` parameter: `default` when absent, else a whole number from 1 to `max`.
pub fn parse_limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    debug_assert!((1..=max).contains(&default));
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<u32>() {
        Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
        _ => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be a whole number from 1 to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let longest_id = "é".repeat(CURSOR_ID_MAX_LEN / 2);
        for (sort_key, id) in [
            (0, ""),
            (-1, "a"),
            (i64::MIN, "tx_1"),
            (i64::MAX, &*longest_id),
        ] {
            let cursor = Cursor::new(sort_key, id);
            let encoded = cursor.encode();
            assert!(encoded.len() <= CURSOR_ENCODED_MAX_LEN);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(Cursor::decode(&encoded).unwrap(), cursor);
        }
    }

    #[test]
    fn garbage_cursors_are_invalid() {
        let wrong_version = URL_SAFE_NO_PAD.encode([2, 0, 0, 0, 0, 0, 0, 0, 1]);
        let too_short = URL_SAFE_NO_PAD.encode([CURSOR_VERSION, 0, 0]);
        let bad_utf8 = URL_SAFE_NO_PAD.encode([CURSOR_VERSION, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]);
        let too_long = "A".repeat(CURSOR_ENCODED_MAX_LEN + 4);
        let padded = format!("{}=", Cursor::new(1, "x").encode());
        for garbage in [
            "!!",
            "a",
            &wrong_version,
            &too_short,
            &bad_utf8,
            &too_long,
            &padded,
        ] {
            let error = Cursor::decode(garbage).unwrap_err();
            assert_eq!(error.code(), "invalid_cursor", "{garbage}");
        }
    }

    #[test]
    fn limits_default_and_stay_in_bounds() {
        assert_eq!(
            parse_limit(None, DEFAULT_LIMIT, MAX_LIMIT),
            Ok(DEFAULT_LIMIT)
        );
        assert_eq!(parse_limit(Some("1"), DEFAULT_LIMIT, MAX_LIMIT), Ok(1));
        assert_eq!(
            parse_limit(Some("200"), DEFAULT_LIMIT, MAX_LIMIT),
            Ok(MAX_LIMIT)
        );
        for bad in ["0", "201", "-1", "ten", "", "1.5", "99999999999"] {
            let error = parse_limit(Some(bad), DEFAULT_LIMIT, MAX_LIMIT).unwrap_err();
            assert_eq!(error.code(), "invalid_limit", "{bad}");
        }
    }
}
