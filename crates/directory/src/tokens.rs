//! Short-lived bearer tokens for residents and operators: a signed statement of who the caller
//! is, of which session, and until when. The signature is checked without a database read; the
//! session behind it is checked against its record (see `sessions.rs`), so a token can be ended
//! before it expires. The same keys sign the known-client tickets that sign-in limits use.

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
    /// A merchant's cashier at the till.
    Cashier {
        /// Cashier number.
        id: u64,
        /// Whose till.
        merchant: u64,
    },
}

/// The keys that sign tokens (HMAC-SHA256 with key ids, so they rotate like the vault's).
#[derive(Debug)]
pub struct TokenKeys(IndexKeys);

const PURPOSE: &str = "citypay bearer token v2";
const TICKET_PURPOSE: &str = "citypay known client v1";

impl TokenKeys {
    /// From a key configuration in the vault's format (`ID:HEX[,...];active=ID`).
    pub fn from_config(config: &str) -> Result<TokenKeys, KeyConfigError> {
        IndexKeys::from_config(config).map(TokenKeys)
    }

    /// A token for `principal` in session `session` (URL-safe characters only), valid until
    /// `expires_unix_s`.
    pub fn issue(&self, principal: Principal, session: &str, expires_unix_s: u64) -> String {
        self.sign(PURPOSE, &format!("{}:{session}", encode(principal, expires_unix_s)))
    }

    /// The principal and session of a token that is genuine and not expired at `now_unix_s`.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> Option<(Principal, String)> {
        let payload = self.open(PURPOSE, token)?;
        let (payload, session) = payload.rsplit_once(':')?;
        let (principal, expires) = decode(payload)?;
        (now_unix_s < expires && !session.is_empty()).then(|| (principal, session.to_owned()))
    }

    /// A ticket saying that `client` signed in to the account `subject` (hex) successfully,
    /// valid until `expires_unix_s`.
    pub(crate) fn issue_ticket(&self, subject: &str, client: &str, expires_unix_s: u64) -> String {
        self.sign(TICKET_PURPOSE, &format!("{subject}:{client}:{expires_unix_s}"))
    }

    /// The client of a genuine, current ticket for the account `subject`.
    pub(crate) fn verify_ticket(&self, ticket: &str, subject: &str, now_unix_s: u64) -> Option<String> {
        let payload = self.open(TICKET_PURPOSE, ticket)?;
        let mut fields = payload.split(':');
        let (for_subject, client, expires) = (fields.next()?, fields.next()?, fields.next()?.parse::<u64>().ok()?);
        (fields.next().is_none() && for_subject == subject && now_unix_s < expires).then(|| client.to_owned())
    }

    fn sign(&self, purpose: &str, payload: &str) -> String {
        let mac = self.0.index(purpose, payload);
        URL_SAFE_NO_PAD.encode(format!("{payload}|{}|{}", mac.key_id.0, mac.to_hex()))
    }

    /// The payload of a genuine token signed for `purpose`.
    fn open(&self, purpose: &str, token: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        let signed = String::from_utf8(bytes).ok()?;
        let mut parts = signed.rsplitn(3, '|');
        let (mac_hex, key_id, payload) = (parts.next()?, parts.next()?, parts.next()?);
        let key_id = KeyId(key_id.parse().ok()?);
        let genuine = self
            .0
            .candidates(purpose, payload)
            .into_iter()
            .any(|c| c.key_id == key_id && bool::from(c.to_hex().as_bytes().ct_eq(mac_hex.as_bytes())));
        genuine.then(|| payload.to_owned())
    }
}

fn encode(principal: Principal, expires: u64) -> String {
    match principal {
        Principal::Resident { id, city } => format!("r:{id}:{city}:{expires}"),
        Principal::Operator { id, role, city } => {
            format!("o:{id}:{}:{}:{expires}", role.code(), city.unwrap_or(0))
        }
        Principal::Cashier { id, merchant } => format!("c:{id}:{merchant}:{expires}"),
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
        ["c", id, merchant, expires] => Some((Principal::Cashier { id: id.parse().ok()?, merchant: merchant.parse().ok()? }, expires.parse().ok()?)),
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
        let token = k.issue(who, "s1", 1_000);
        assert_eq!(k.verify(&token, 999), Some((who, "s1".to_owned())));
        assert_eq!(k.verify(&token, 1_000), None, "expired");
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap().replace("r:42:", "r:43:"),
        );
        assert_eq!(k.verify(&forged, 10), None);
        assert_eq!(k.verify("garbage", 10), None);
        assert_eq!(k.verify("", 10), None);
        let op = Principal::Operator { id: 7, role: Role::CityOperator, city: Some(120000) };
        assert_eq!(k.verify(&k.issue(op, "s2", 50), 10), Some((op, "s2".to_owned())));
        let cashier = Principal::Cashier { id: 12_345_678, merchant: 9 };
        assert_eq!(k.verify(&k.issue(cashier, "s3", 50), 10), Some((cashier, "s3".to_owned())));
        // After rotation a token signed by key 1 still verifies; new ones use key 2.
        let rotated = keys(K12);
        assert_eq!(rotated.verify(&token, 10), Some((who, "s1".to_owned())));
        let other = keys("1:0303030303030303030303030303030303030303030303030303030303030303;active=1");
        assert_eq!(other.verify(&token, 10), None, "another key does not verify it");
        // A ticket is not a token, and holds only for its account until it expires.
        let ticket = k.issue_ticket("ab12", "c9", 100);
        assert_eq!(k.verify(&ticket, 10), None);
        assert_eq!(k.verify_ticket(&token, "ab12", 10), None);
        assert_eq!(k.verify_ticket(&ticket, "ab12", 10).as_deref(), Some("c9"));
        assert_eq!(k.verify_ticket(&ticket, "ab13", 10), None);
        assert_eq!(k.verify_ticket(&ticket, "ab12", 100), None);
    }
}
