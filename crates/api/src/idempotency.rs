//! The `Idempotency-Key` header and the fingerprint that tells a replay from a conflict.

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

use crate::error::ApiError;
use crate::json::{json_body_bytes, parse_json};

/// The request header that carries the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The longest key accepted, in bytes.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;

/// A client-chosen key that makes a mutating request safe to retry.
///
/// 1 to 255 printable ASCII characters (space to `~`). As an extractor: no header is 400
/// `idempotency_key_required`; an empty, too long, non-printable or repeated header is 400
/// `invalid_idempotency_key`. Document it on a route with `params(IdempotencyKey)`.
///
/// Keys belong to the caller: scope them by the authenticated principal before looking them
/// up, so two clients that pick the same key never see each other's results.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let printable = raw.iter().all(|b| (0x20..=0x7e).contains(b));
        if raw.is_empty() || raw.len() > IDEMPOTENCY_KEY_MAX_LEN || !printable {
            let message = "Idempotency-Key must be 1 to 255 printable ASCII characters";
            return Err(ApiError::bad_request("invalid_idempotency_key", message));
        }
        Ok(Self(raw.iter().copied().map(char::from).collect()))
    }

    /// Reads the key from request headers.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
        let Some(value) = values.next() else {
            let message = "this request changes state and needs an Idempotency-Key header";
            return Err(ApiError::bad_request("idempotency_key_required", message));
        };
        if values.next().is_some() {
            let message = "send exactly one Idempotency-Key header";
            return Err(ApiError::bad_request("invalid_idempotency_key", message));
        }
        Self::parse(value.as_bytes())
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers)
    }
}

impl IntoParams for IdempotencyKey {
    fn into_params(_parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(IDEMPOTENCY_KEY_MAX_LEN))
            .pattern(Some("^[\\x20-\\x7E]{1,255}$"));
        let description = "Client-chosen key, unique per operation: a retry with the same key \
                           and body answers the first result; the same key with another body \
                           is 409 `idempotency_key_reused`.";
        let parameter = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(description))
            .schema(Some(schema));
        vec![parameter.build()]
    }
}

/// SHA-256 over the method, the path and the body, each length-prefixed so that no two
/// different requests share an encoding.
///
/// Store it with the key's first result: a retry whose fingerprint differs reuses the key for
/// another request, which is 409 `idempotency_key_reused`.
pub fn request_fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [method.as_str().as_bytes(), path.as_bytes(), body] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// A mutating JSON request: its [`IdempotencyKey`], its fingerprint (method, full path without
/// the query, and the raw body bytes, see [`request_fingerprint`]) and its parsed body.
///
/// Rejects like [`IdempotencyKey`] first, then like [`AppJson`](crate::AppJson).
#[derive(Debug, Clone)]
pub struct Idempotent<T> {
    /// The client's key.
    pub key: IdempotencyKey,
    /// What the key must keep meaning on a retry.
    pub fingerprint: [u8; 32],
    /// The parsed body.
    pub body: T,
}

impl<T, S> FromRequest<S> for Idempotent<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let key = IdempotencyKey::from_headers(request.headers())?;
        let method = request.method().clone();
        // Inside a nested router the URI lost its prefix; the original one still has it.
        let uri = request
            .extensions()
            .get::<OriginalUri>()
            .map_or(request.uri(), |o| &o.0);
        let path = uri.path().to_owned();
        let bytes = json_body_bytes(request, state).await?;
        let fingerprint = request_fingerprint(&method, &path, &bytes);
        let body = parse_json(&bytes)?;
        Ok(Self {
            key,
            fingerprint,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_printable_ascii_up_to_255_are_accepted() {
        assert_eq!(IdempotencyKey::parse(b"a").unwrap().as_str(), "a");
        let longest = "~".repeat(IDEMPOTENCY_KEY_MAX_LEN);
        assert!(IdempotencyKey::parse(longest.as_bytes()).is_ok());
        assert!(IdempotencyKey::parse(b"order 42/retry-1").is_ok());
    }

    #[test]
    fn empty_long_and_unprintable_keys_are_refused() {
        let too_long = "k".repeat(IDEMPOTENCY_KEY_MAX_LEN + 1);
        for raw in [
            &b""[..],
            too_long.as_bytes(),
            b"tab\tkey",
            b"\x7f",
            "ключ".as_bytes(),
        ] {
            let error = IdempotencyKey::parse(raw).unwrap_err();
            assert_eq!(error.code(), "invalid_idempotency_key");
        }
    }

    #[test]
    fn fingerprints_separate_method_path_and_body() {
        let base = request_fingerprint(&Method::POST, "/payments", b"{}");
        assert_eq!(base, request_fingerprint(&Method::POST, "/payments", b"{}"));
        assert_ne!(base, request_fingerprint(&Method::PUT, "/payments", b"{}"));
        assert_ne!(base, request_fingerprint(&Method::POST, "/payment", b"s{}"));
        assert_ne!(
            base,
            request_fingerprint(&Method::POST, "/payments", b"{ }")
        );
    }
}
