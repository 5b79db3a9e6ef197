//! Money that crosses shards. A payment, refund or transfer whose two sides live on different
//! shards moves as two local halves joined by a clearing account per pair of shards
//! (`../shared/guide/scale-out.md` §4.3, after TigerBeetle's pending transfers and Mojaloop):
//!
//! 1. The payer's shard **reserves** ([`reserve`]): in one local transaction, a pending transfer
//!    payer → its clearing account for the payee's shard, and its outbox row, [`Prepared`].
//!    The reservation has no timeout of its own: only the payee's shard decides.
//! 2. The payee's shard **decides** ([`decide`]), once: one row per transfer id (the writer
//!    guards it `Absent`), [`Decision::Posted`] with the posted transfer clearing account for
//!    the payer's shard → payee, or [`Decision::Rejected`] with its reason. The first decision
//!    written is the commit point; every later ask is answered with it.
//! 3. The payer's shard **applies** the decision ([`apply`]): posts the reservation or voids it.
//!
//! A resolver on the payer's shard asks again about every reservation left [`Prepared`] for
//! [`RESOLVE_AFTER_MS`] ([`due`]); asked by the resolver, a payee's shard that has not decided
//! yet decides `Rejected(Timeout)`. Asking twice, or from two servers, is harmless: a decision
//! is written once, and applying it again changes nothing.
//!
//! The steps are pure functions of what each shard has stored. The writers run them inside
//! their local transactions, and the model check (`tests/model.rs`, with `stateright`) drives
//! these same functions through crashes, lost, duplicated and reordered messages.
//!
//! [`Prepared`]: PayerStatus::Prepared

/// A transfer's id, chosen by the client (a retry carries the same one).
pub type TransferId = u128;

/// A shard's number.
pub type ShardId = u16;

/// How long a reservation waits for its decision before the resolver asks for it.
pub const RESOLVE_AFTER_MS: u64 = 5_000;

/// A transfer whose payer and payee live on different shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Crossing {
    /// The transfer's id.
    pub id: TransferId,
    /// The payer's shard.
    pub payer_shard: ShardId,
    /// The payee's shard.
    pub payee_shard: ShardId,
    /// The payer's account.
    pub payer: u64,
    /// The payee's account.
    pub payee: u64,
    /// In minor units, more than zero.
    pub amount: i64,
}

/// An account a step moves money on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// The payer's account (on the payer's shard).
    Payer(u64),
    /// The payee's account (on the payee's shard).
    Payee(u64),
    /// The clearing account that shard `on` keeps for its peer `peer`.
    Clearing {
        /// The shard that keeps it.
        on: ShardId,
        /// The shard it clears with.
        peer: ShardId,
    },
}

/// One local ledger movement a step asks its shard's writer to make, in the same transaction
/// as the step's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Movement {
    /// A pending transfer of `amount` from `from` to `to`: it counts against `from`'s
    /// available balance until it is posted or voided.
    Reserve {
        /// Debited.
        from: Account,
        /// Credited.
        to: Account,
        /// Minor units.
        amount: i64,
    },
    /// The transfer's reservation, posted.
    PostReserved,
    /// The transfer's reservation, voided (the payer gets it back).
    VoidReserved,
    /// A posted transfer of `amount` from `from` to `to`.
    Post {
        /// Debited.
        from: Account,
        /// Credited.
        to: Account,
        /// Minor units.
        amount: i64,
    },
}

/// Why the payee's shard refused a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// The resolver asked before any decision: the transfer is given up.
    Timeout,
    /// The payee's account does not exist there.
    PayeeUnknown,
    /// The payee's account is frozen.
    PayeeFrozen,
    /// The payee would go past a limit of their account class.
    OverLimit,
    /// The payee's service refused what the transfer is for (a trade no longer waiting for
    /// its payment).
    Refused,
}

impl Rejection {
    /// Stable text code, as the decision row stores it.
    pub const fn code(self) -> &'static str {
        match self {
            Rejection::Timeout => "timeout",
            Rejection::PayeeUnknown => "payee_unknown",
            Rejection::PayeeFrozen => "payee_frozen",
            Rejection::OverLimit => "over_limit",
            Rejection::Refused => "refused",
        }
    }

    /// Inverse of [`Rejection::code`].
    pub fn from_code(code: &str) -> Option<Rejection> {
        [Rejection::Timeout, Rejection::PayeeUnknown, Rejection::PayeeFrozen, Rejection::OverLimit, Rejection::Refused].into_iter().find(|r| r.code() == code)
    }
}

/// The payee's shard's decision: the commit point of a transfer, one per id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// The payee was credited.
    Posted,
    /// Nothing moved on the payee's shard.
    Rejected(Rejection),
}

/// Where a transfer stands on the payer's shard (its outbox row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayerStatus {
    /// Reserved, waiting for the decision.
    Prepared,
    /// Decided `Posted`, and the reservation posted.
    Posted,
    /// Decided `Rejected`, and the reservation voided.
    Voided,
}

/// What one shard sends another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Message {
    /// The payer's shard asks for the decision, right after reserving.
    Decide(Crossing),
    /// The payer's resolver asks again about a reservation still prepared.
    Resolve(Crossing),
    /// The payee's shard answers with its decision.
    Decided {
        /// The transfer.
        id: TransferId,
        /// Its decision.
        decision: Decision,
    },
}

/// Why the payer's shard refuses to start a transfer (nothing is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The amount is not more than zero.
    InvalidAmount,
    /// Payer and payee are on the same shard: a local transfer, not this protocol.
    SameShard,
    /// The payer's available balance does not cover it.
    InsufficientFunds,
}

/// The payer's shard's first step: what to write in one local transaction (the outbox row's
/// status and the reservation) and what to send once it is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The outbox row's status.
    pub status: PayerStatus,
    /// The reservation.
    pub movement: Movement,
    /// The message to send the payee's shard once committed.
    pub send: Message,
}

/// Reserves `crossing` on the payer's shard, whose payer has `available` to spend.
pub fn reserve(crossing: &Crossing, available: i64) -> Result<Reserved, Refusal> {
    if crossing.amount <= 0 {
        return Err(Refusal::InvalidAmount);
    }
    if crossing.payer_shard == crossing.payee_shard {
        return Err(Refusal::SameShard);
    }
    if available < crossing.amount {
        return Err(Refusal::InsufficientFunds);
    }
    let movement = Movement::Reserve {
        from: Account::Payer(crossing.payer),
        to: Account::Clearing { on: crossing.payer_shard, peer: crossing.payee_shard },
        amount: crossing.amount,
    };
    Ok(Reserved { status: PayerStatus::Prepared, movement, send: Message::Decide(*crossing) })
}

/// The payee's shard's step: what to write (a decision and its movement, when none is stored
/// yet) and the answer to send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The decision row to insert (guarded `Absent` on the id) and its movement; `None` when a
    /// decision is stored already.
    pub write: Option<(Decision, Option<Movement>)>,
    /// The answer.
    pub send: Message,
}

/// Decides about the transfer `ask` names, given the decision the payee's shard has stored
/// for its id (if any) and whether the payee can receive it now (`receivable`). A stored
/// decision is the answer, whoever asks. Without one, the relay's ask is decided on its merits
/// and the resolver's is rejected as timed out. `None` when `ask` asks nothing.
pub fn decide(stored: Option<Decision>, ask: &Message, receivable: Result<(), Rejection>) -> Option<Decided> {
    let (crossing, from_resolver) = match *ask {
        Message::Decide(crossing) => (crossing, false),
        Message::Resolve(crossing) => (crossing, true),
        Message::Decided { .. } => return None,
    };
    let answer = |decision| Message::Decided { id: crossing.id, decision };
    if let Some(decision) = stored {
        return Some(Decided { write: None, send: answer(decision) });
    }
    let (decision, movement) = match (from_resolver, receivable) {
        (true, _) => (Decision::Rejected(Rejection::Timeout), None),
        (false, Err(rejection)) => (Decision::Rejected(rejection), None),
        (false, Ok(())) => {
            let credit = Movement::Post {
                from: Account::Clearing { on: crossing.payee_shard, peer: crossing.payer_shard },
                to: Account::Payee(crossing.payee),
                amount: crossing.amount,
            };
            (Decision::Posted, Some(credit))
        }
    };
    Some(Decided { write: Some((decision, movement)), send: answer(decision) })
}

/// A decision that contradicts what the payer's shard already did: it cannot come from a
/// payee's shard that decides once, and the writer refuses it (and it is an alarm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// What the payer's shard did.
    pub status: PayerStatus,
    /// What the answer says.
    pub decision: Decision,
}

/// The payer's shard's last step: the new status and the movement to make, or `None` when the
/// decision was applied already.
pub fn apply(status: PayerStatus, decision: Decision) -> Result<Option<(PayerStatus, Movement)>, Conflict> {
    match (status, decision) {
        (PayerStatus::Prepared, Decision::Posted) => Ok(Some((PayerStatus::Posted, Movement::PostReserved))),
        (PayerStatus::Prepared, Decision::Rejected(_)) => Ok(Some((PayerStatus::Voided, Movement::VoidReserved))),
        (PayerStatus::Posted, Decision::Posted) | (PayerStatus::Voided, Decision::Rejected(_)) => Ok(None),
        (status, decision) => Err(Conflict { status, decision }),
    }
}

/// Whether the resolver asks about a transfer now: still prepared, reserved at
/// `reserved_at_ms`, and `now_ms` is [`RESOLVE_AFTER_MS`] later or more.
pub fn due(status: PayerStatus, reserved_at_ms: u64, now_ms: u64) -> bool {
    status == PayerStatus::Prepared && now_ms.saturating_sub(reserved_at_ms) >= RESOLVE_AFTER_MS
}

/// The resolver's ask about a prepared transfer.
pub fn resolve(crossing: &Crossing) -> Message {
    Message::Resolve(*crossing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: Crossing = Crossing { id: 7, payer_shard: 1, payee_shard: 2, payer: 10, payee: 20, amount: 500 };

    #[test]
    fn a_transfer_reserves_then_posts_once() {
        let reserved = reserve(&X, 500).unwrap();
        assert_eq!(reserved.status, PayerStatus::Prepared);
        assert_eq!(reserved.movement, Movement::Reserve { from: Account::Payer(10), to: Account::Clearing { on: 1, peer: 2 }, amount: 500 });
        let decided = decide(None, &reserved.send, Ok(())).unwrap();
        let credit = Movement::Post { from: Account::Clearing { on: 2, peer: 1 }, to: Account::Payee(20), amount: 500 };
        assert_eq!(decided.write, Some((Decision::Posted, Some(credit))));
        assert_eq!(apply(PayerStatus::Prepared, Decision::Posted), Ok(Some((PayerStatus::Posted, Movement::PostReserved))));
        // Asked again (a duplicate, or the resolver), the stored decision answers.
        let again = decide(Some(Decision::Posted), &resolve(&X), Ok(())).unwrap();
        assert_eq!(again, Decided { write: None, send: Message::Decided { id: 7, decision: Decision::Posted } });
        assert_eq!(apply(PayerStatus::Posted, Decision::Posted), Ok(None));
    }

    #[test]
    fn refusals_and_rejections() {
        assert_eq!(reserve(&X, 499), Err(Refusal::InsufficientFunds));
        assert_eq!(reserve(&Crossing { amount: 0, ..X }, 500), Err(Refusal::InvalidAmount));
        assert_eq!(reserve(&Crossing { payee_shard: 1, ..X }, 500), Err(Refusal::SameShard));
        let frozen = decide(None, &Message::Decide(X), Err(Rejection::PayeeFrozen)).unwrap();
        assert_eq!(frozen.write, Some((Decision::Rejected(Rejection::PayeeFrozen), None)));
        // The resolver's ask before any decision gives the transfer up, whatever the payee.
        let late = decide(None, &resolve(&X), Ok(())).unwrap();
        assert_eq!(late.write, Some((Decision::Rejected(Rejection::Timeout), None)));
        assert_eq!(apply(PayerStatus::Prepared, Decision::Rejected(Rejection::Timeout)), Ok(Some((PayerStatus::Voided, Movement::VoidReserved))));
        // A contradiction is refused, never applied.
        assert!(apply(PayerStatus::Voided, Decision::Posted).is_err());
        assert!(apply(PayerStatus::Posted, Decision::Rejected(Rejection::Timeout)).is_err());
        assert_eq!(decide(None, &Message::Decided { id: 7, decision: Decision::Posted }, Ok(())), None);
        for rejection in [Rejection::Timeout, Rejection::PayeeUnknown, Rejection::PayeeFrozen, Rejection::OverLimit, Rejection::Refused] {
            assert_eq!(Rejection::from_code(rejection.code()), Some(rejection));
        }
    }

    #[test]
    fn the_resolver_waits_for_its_time() {
        assert!(!due(PayerStatus::Prepared, 1_000, 1_000 + RESOLVE_AFTER_MS - 1));
        assert!(due(PayerStatus::Prepared, 1_000, 1_000 + RESOLVE_AFTER_MS));
        assert!(!due(PayerStatus::Posted, 0, u64::MAX));
    }
}
