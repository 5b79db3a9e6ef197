//! The events a ledger applies, and the idempotency hash of each.

use crate::{AccountFlags, Currency, Limits};

/// An account's id, chosen by the caller. 0 is never a valid id.
pub type AccountId = u64;

/// A client-chosen event id. Ids that grow with time (UUIDv7-like) keep replay checks in
/// memory; any other id is still correct but may cost a storage lookup. 0 is never valid.
pub type EventId = u128;

/// Opens an account. Idempotent by account id: the same spec again is a replay, another
/// spec under the same id is a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NewAccount {
    /// The new account's id.
    pub id: AccountId,
    /// Its one currency.
    pub currency: Currency,
    /// Balance constraints.
    pub flags: AccountFlags,
    /// Caller-defined kind.
    pub code: u16,
    /// Debit limits.
    pub limits: Limits,
}

/// Replaces an existing account's limits (a wallet whose holder was verified further). Idempotent
/// by state: the same limits again are a replay. Each window cap keeps its usage when its slot
/// keeps its window; a slot whose window changes starts counting anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SetLimits {
    /// The account.
    pub account: AccountId,
    /// Its new limits.
    pub limits: Limits,
}

/// Carries an account's window usage from another ledger: the account moved here (its city
/// moved to this shard) and its caps go on counting what it used there. Slot for slot with the
/// account's window caps; a slot keeps the later window, and of the same window the larger
/// use, so the same usage again changes nothing (idempotent by state, like [`SetLimits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CarryUsage {
    /// The account.
    pub account: AccountId,
    /// What it used, index for index with its limits' window caps.
    pub usage: [crate::WindowUsage; 3],
}

/// One movement of `amount` from `debit` to `credit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Leg {
    /// The account debited.
    pub debit: AccountId,
    /// The account credited.
    pub credit: AccountId,
    /// Positive amount in minor units of `currency`.
    pub amount: i64,
    /// Must equal both accounts' currency.
    pub currency: Currency,
    /// Caller-defined kind (fare, top-up, fee, ...).
    pub code: u16,
    /// Limit classes this movement belongs to; caps count the classes they name.
    pub class: u8,
    /// Caller's reference (an order id, a trip id).
    pub user_data: u64,
}

/// A single transfer, posted at once or held as pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Transfer {
    /// Idempotency id.
    pub id: EventId,
    /// What moves.
    pub leg: Leg,
    /// `Some(timeout_s)`: reserve now, post or void later; the reservation expires
    /// `timeout_s` seconds after it was applied (0: never).
    pub pending_timeout_s: Option<u32>,
}

/// Several legs that commit together or not at all (a bill split between an insurance fund and
/// a wallet, a payment with its fee).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Entry {
    /// Idempotency id of the whole entry.
    pub id: EventId,
    /// Between 1 and [`crate::limits::ENTRY_LEGS_MAX`] legs, applied in order.
    pub legs: Vec<Leg>,
}

/// Posts a pending transfer, in full (`amount: None`) or for less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PostPending {
    /// Idempotency id of this post.
    pub id: EventId,
    /// The pending transfer's id.
    pub pending_id: EventId,
    /// Amount to post; at most the pending amount.
    pub amount: Option<i64>,
}

/// Releases a pending transfer without moving money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VoidPending {
    /// Idempotency id of this void.
    pub id: EventId,
    /// The pending transfer's id.
    pub pending_id: EventId,
}

/// Anything a ledger applies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Event {
    /// Opens an account.
    CreateAccount(NewAccount),
    /// A single transfer, posted or pending.
    Transfer(Transfer),
    /// Several legs, all or nothing.
    Entry(Entry),
    /// Posts a pending transfer.
    PostPending(PostPending),
    /// Voids a pending transfer.
    VoidPending(VoidPending),
    /// Replaces an account's limits.
    SetLimits(SetLimits),
    /// Carries an account's window usage from another ledger.
    CarryUsage(CarryUsage),
}

impl Event {
    /// The idempotency id of the event (an account's id widened, for account creation and limits).
    pub fn id(&self) -> EventId {
        match self {
            Event::CreateAccount(a) => EventId::from(a.id),
            Event::Transfer(t) => t.id,
            Event::Entry(e) => e.id,
            Event::PostPending(p) => p.id,
            Event::VoidPending(v) => v.id,
            Event::SetLimits(s) => EventId::from(s.account),
            Event::CarryUsage(c) => EventId::from(c.account),
        }
    }

    /// A stable 64-bit hash of the event's body, stored with its id to tell a replay (same
    /// body) from a conflict (another body under the same id). Stable across releases: it
    /// hashes a fixed little-endian encoding with XXH3.
    pub fn body_hash(&self) -> u64 {
        let mut buf = Encoder::default();
        match self {
            Event::CreateAccount(a) => {
                buf.u8(1).u64(a.id).bytes(a.currency.code().as_bytes());
                buf.u16(a.flags.0).u16(a.code);
                encode_limits(&mut buf, &a.limits);
            }
            Event::Transfer(t) => {
                buf.u8(2).u128(t.id);
                encode_leg(&mut buf, &t.leg);
                match t.pending_timeout_s {
                    None => buf.u8(0),
                    Some(s) => buf.u8(1).u64(u64::from(s)),
                };
            }
            Event::Entry(e) => {
                buf.u8(3).u128(e.id).u64(e.legs.len() as u64);
                for leg in &e.legs {
                    encode_leg(&mut buf, leg);
                }
            }
            Event::PostPending(p) => {
                buf.u8(4).u128(p.id).u128(p.pending_id);
                match p.amount {
                    None => buf.u8(0),
                    Some(a) => buf.u8(1).i64(a),
                };
            }
            Event::VoidPending(v) => {
                buf.u8(5).u128(v.id).u128(v.pending_id);
            }
            Event::SetLimits(s) => {
                buf.u8(6).u64(s.account);
                encode_limits(&mut buf, &s.limits);
            }
            Event::CarryUsage(c) => {
                buf.u8(7).u64(c.account);
                for used in &c.usage {
                    buf.u64(u64::from(used.window)).i64(used.used);
                }
            }
        }
        buf.finish()
    }
}

fn encode_leg(buf: &mut Encoder, leg: &Leg) {
    buf.u64(leg.debit).u64(leg.credit).i64(leg.amount);
    buf.bytes(leg.currency.code().as_bytes()).u16(leg.code).u8(leg.class).u64(leg.user_data);
}

fn encode_limits(buf: &mut Encoder, limits: &Limits) {
    match limits.transfer_cap {
        None => buf.u8(0),
        Some(c) => buf.u8(1).u8(c.classes).i64(c.amount_max),
    };
    for cap in &limits.window_caps {
        match cap {
            None => buf.u8(0),
            Some(c) => buf.u8(c.window.code()).u8(c.classes).i64(c.amount_max),
        };
    }
}

/// Hashes a canonical encoding with no allocation: an event that fits one chunk (every one
/// but long entries) is hashed in one call, longer ones stream through XXH3 chunk by chunk
/// (the same digest: XXH3's streaming form equals its one-shot form).
struct Encoder {
    chunk: [u8; 256],
    len: usize,
    /// Started when the first chunk fills.
    stream: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder { chunk: [0; 256], len: 0, stream: None }
    }
}

impl Encoder {
    fn bytes(&mut self, bytes: &[u8]) -> &mut Encoder {
        if self.len + bytes.len() > self.chunk.len() {
            self.stream.get_or_insert_with(|| Box::new(xxhash_rust::xxh3::Xxh3::new())).update(&self.chunk[..self.len]);
            self.len = 0;
        }
        self.chunk[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }
    fn u8(&mut self, v: u8) -> &mut Encoder {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> &mut Encoder {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Encoder {
        self.bytes(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) -> &mut Encoder {
        self.bytes(&v.to_le_bytes())
    }
    fn u128(&mut self, v: u128) -> &mut Encoder {
        self.bytes(&v.to_le_bytes())
    }
    fn finish(self) -> u64 {
        match self.stream {
            None => xxhash_rust::xxh3::xxh3_64(&self.chunk[..self.len]),
            Some(mut stream) => {
                stream.update(&self.chunk[..self.len]);
                stream.digest()
            }
        }
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(n: u64) -> Leg {
        Leg { debit: n, credit: n + 1, amount: 1_000 + n as i64, currency: Currency::CNY, code: 20, class: 1, user_data: 7 }
    }

    /// Stored hashes must stay what they were: a short event (hashed in one call) and an entry
    /// too long for the encoder's chunk (streamed), pinned to the values of earlier releases.
    #[test]
    fn body_hashes_are_stable() {
        let transfer = Event::Transfer(Transfer { id: 42, leg: leg(3), pending_timeout_s: Some(60) });
        let entry = Event::Entry(Entry { id: 43, legs: (0..64).map(leg).collect() });
        assert_eq!((transfer.body_hash(), entry.body_hash()), (6_393_113_600_207_108_355, 7_324_893_518_551_250_930));
    }
}
