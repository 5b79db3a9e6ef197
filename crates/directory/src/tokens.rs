//! Short-lived bearer tokens for residents and operators: a signed statement of who the caller
//! is and until when, checked without a database read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use citypay_vault::{IndexKeys, KeyId, KeyConfigError};
use subtle::ConstantTimeEq;

use crate::operators::Role;

/// Who a verified token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A resident, by id, in their home city.
    Resident {
        /// Resident id.
        id: u64,
        /// Home city (GB/T 2260 code).
        city: u32,
    },
    /// An operator with a role; city operators are bound to one city.
    Operator {
        /// Operator id.
        id: u64,
        /// Platform or city operator.
        role: Role,
        /// The city of a city operator.
        city: Option<u32>,
    },
}

/// The keys that sign tokens (HMAC-SHA256 with key ids, so they rotate like the vault's).
#[derive(Debug)]
pub struct TokenKeys(IndexKeys);

const PURPOSE: &str = "citypay bearer token v1";

impl TokenKeys {
    /// From a key configuration in the vault's format (`ID:HEX[,...];active=ID`).
    pub fn from_config(config: &str) -> Result<TokenKeys, KeyConfigError> {
        IndexKeys::from_config(config).map(TokenKeys)
    }

    /// A token for `principal`, valid until `expires_unix_s`.
    pub fn issue(&self, principal: Principal, expires_unix_s: u64) -> String {
        let payload = encode(principal, expires_unix_s);
        let mac = self.0.index(PURPOSE, &payload);
        let signed = format!("{payload}|{}|{}", mac.key_id.0, mac.to_hex());
        URL_SAFE_NO_PAD.encode(signed)
    }

    /// The principal of a token that is genuine and not expired at `now_unix_s`.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> Option<Principal> {
        let bytes = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        let signed = String::from_utf8(bytes).ok()?;
        let mut parts = signed.rsplitn(3, '|');
        let (mac_hex, key_id, payload) = (parts.next()?, parts.next()?, parts.next()?);
        let key_id = KeyId(key_id.parse().ok()?);
        let genuine = self
            .0
            .candidates(PURPOSE, payload)
            .into_iter()
            .any(|c| c.key_id == key_id && bool::from(c.to_hex().as_bytes().ct_eq(mac_hex.as_bytes())));
        if !genuine {
            return None;
        }
        let (principal, expires) = decode(payload)?;
        (now_unix_s < expires).then_some(principal)
    }
}

fn encode(principal: Principal, expires: u64) -> String {
    match principal {
        Principal::Resident { id, city } => format!("r:{id}:{city}:{expires}"),
        Principal::Operator { id, role, city } => {
            format!("o:{id}:{}:{}:{expires}", role.code(), city.unwrap_or(0))
        }
    }
}

fn decode(payload: &str) -> Option<(Principal, u64)> {
    let fields: Vec<&str> = payload.split(':').collect();
    match fields.as_slice() {
        ["r", id, city, expires] => {
            Some((Principal::Resident { id: id.parse().ok()?, city: city.parse().ok()? }, expires.parse().ok()?))
        }
        ["o", id, role, city, expires] => {
            let city: u32 = city.parse().ok()?;
            let principal = Principal::Operator {
                id: id.parse().ok()?,
                role: Role::from_code(role)?,
                city: (city != 0).then_some(city),
            };
            Some((principal, expires.parse().ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(config: &str) -> TokenKeys {
        TokenKeys::from_config(config).unwrap()
    }

    const K1: &str = "1:0101010101010101010101010101010101010101010101010101010101010101;active=1";
    const K12: &str = "1:0101010101010101010101010101010101010101010101010101010101010101,2:0202020202020202020202020202020202020202020202020202020202020202;active=2";

    #[test]
    fn tokens_verify_expire_and_resist_tampering() {
        let k = keys(K1);
        let who = Principal::Resident { id: 42, city: 330100 };
        let token = k.issue(who, 1_000);
        assert_eq!(k.verify(&token, 999), Some(who));
        assert_eq!(k.verify(&token, 1_000), None, "expired");
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap().replace("r:42:", "r:43:"),
        );
        assert_eq!(k.verify(&forged, 10), None);
        assert_eq!(k.verify("garbage", 10), None);
        assert_eq!(k.verify("", 10), None);
        let op = Principal::Operator { id: 7, role: Role::CityOperator, city: Some(120000) };
        assert_eq!(k.verify(&k.issue(op, 50), 10), Some(op));
        // After rotation a token signed by key 1 still verifies; new ones use key 2.
        let rotated = keys(K12);
        assert_eq!(rotated.verify(&token, 10), Some(who));
        let other = keys("1:0303030303030303030303030303030303030303030303030303030303030303;active=1");
        assert_eq!(other.verify(&token, 10), None, "another key does not verify it");
    }
}
