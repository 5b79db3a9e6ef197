//! Each shard's half of moving money across shards. The steps are `citypay-crossshard`'s (the
//! model-checked state machine); this crate runs them in this shard's local transactions:
//!
//! - on the payer's shard, [`Clearing::reserve`] writes the pending transfer payer → the
//!   clearing account for the payee's shard (no timeout of its own) and the `crossings_out`
//!   row, and [`Clearing::apply`] posts or voids it under a guard on that row's status;
//! - on the payee's shard, [`Clearing::decide`] writes the decision row (`crossings_in`,
//!   guarded `Absent` on the transfer id: the first decision is the only one) with the credit
//!   from the clearing account for the payer's shard, or the rejection;
//! - [`Clearing::send`] does all three through a [`Peer`] and answers once the decision is
//!   durable; a peer that cannot be reached leaves the outcome unknown, never acknowledged;
//! - [`Clearing::resolve_once`] (the resolver, on every payer's shard) asks again about every
//!   reservation left prepared for `RESOLVE_AFTER_MS`; running it twice, or on two servers at
//!   once, is harmless.
//!
//! Every movement is a balanced transfer inside one shard, so each shard's books balance on
//! their own; across shards, each pair's clearing accounts mirror each other up to what is
//! decided and not yet applied.

mod claims;

pub use claims::{ClaimAnswer, ClaimPeer, ClaimRequest, Claims, USCC_KIND, home_of, onboard_merchant_in_country, register_in_country, register_in_country_with};

use std::future::Future;
use std::pin::Pin;

use citypay_crossshard::{Crossing, Decision, Message, Movement, PayerStatus, Rejection, ShardId, TransferId};
use citypay_directory::{AccountKind, Directory, DirectoryError, account_id, derived_event_id, int_at, transfer_codes};
use citypay_ledger::{AccountFlags, Currency, Event, Leg, Limits, NewAccount, PostPending, Status, Transfer, VoidPending};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{Migration, OnConflict, ServiceRow, Value, u64_from_column, u64_to_column};

/// The clearing tables: what this shard sent (as the payer's) and what it decided (as the
/// payee's).
pub const MIGRATIONS: &[Migration] = &[
    Migration { component: "clearing", version: 1, name: "cross-shard transfers sent and decided", sqlite: TABLES, postgres: TABLES },
    Migration { component: "clearing", version: 2, name: "claims of what is unique in the country", sqlite: claims::CLAIMS_TABLE, postgres: claims::CLAIMS_TABLE },
];

const TABLES: &str = "CREATE TABLE crossings_out (id TEXT PRIMARY KEY, payee_shard BIGINT NOT NULL, payer BIGINT NOT NULL,
        payee BIGINT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL, reserved_at BIGINT NOT NULL, decision TEXT);
    CREATE INDEX crossings_out_prepared ON crossings_out (reserved_at) WHERE status = 'prepared';
    CREATE TABLE crossings_in (id TEXT PRIMARY KEY, payer_shard BIGINT NOT NULL, payee BIGINT NOT NULL,
        amount BIGINT NOT NULL, decision TEXT NOT NULL, decided_at BIGINT NOT NULL);";

/// Why a cross-shard step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClearingError {
    /// From the directory (storage).
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Refused before anything was written.
    #[error("refused: {0:?}")]
    Refused(citypay_crossshard::Refusal),
    /// The ledger refused the reservation (the funds, a cap).
    #[error("the ledger refused: {}", .0.name())]
    Ledger(Status),
    /// A decision contradicts what this shard did: an alarm, never applied.
    #[error("a decision contradicts what was done: {0:?}")]
    Conflict(citypay_crossshard::Conflict),
    /// The peer could not be reached: the transfer is reserved and its outcome unknown until
    /// the resolver finishes it (the client must not be told it happened, or that it did not).
    #[error("the outcome is not known yet: {0}")]
    Unknown(String),
    /// The writer is unavailable; retrying is safe.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// No such transfer here.
    #[error("no such cross-shard transfer")]
    NotFound,
    /// A guard of the [`Purpose`] failed (its index there): nothing was reserved.
    #[error("the purpose's guard {0} failed")]
    Guard(usize),
}

/// How one shard's clearing reaches another's: asks a [`Message::Decide`] or
/// [`Message::Resolve`] and gets the [`Message::Decided`] answer, or cannot reach it.
pub trait Peer: Send + Sync {
    /// Asks the peer, with the rows a posted decision writes there (a [`Purpose`]'s
    /// `payee_rows`; none from the resolver, whose asks never post); `Err` when it could not
    /// be reached (the ask may or may not have arrived).
    fn ask(&self, message: Message, payee: PayeeSide) -> Pin<Box<dyn Future<Output = Result<Message, String>> + Send + '_>>;
}

/// What a posted decision writes on the payee's shard beyond the credit: a service's rows, the
/// guards they need (one that fails makes the decision `Rejected(Refused)`, with nothing
/// moved), and more legs in the same entry (a fee).
#[derive(Clone, Debug, Default)]
pub struct PayeeSide {
    /// Written with a posted decision.
    pub rows: Vec<ServiceRow>,
    /// Checked before posting.
    pub guards: Vec<Guard>,
    /// More legs of the credit's entry (on the payee's shard's accounts).
    pub legs: Vec<Leg>,
    /// The credit's ledger code (0: `TRANSFER`) and `user_data` (a trade's number).
    pub credit_code: u16,
    /// See `credit_code`.
    pub credit_user_data: u64,
}

/// What a crossing is for, beyond the money: the service's own rows and checks, written in the
/// same local transaction as each side's step (a transfer between residents records itself on
/// both shards this way).
#[derive(Clone, Debug, Default)]
pub struct Purpose {
    /// The ledger code of the payer's reservation (0: `TRANSFER`).
    pub code: u16,
    /// Its class, which the payer's caps count.
    pub class: u8,
    /// Checked with the reservation, after the crossing's own guard: one that fails refuses
    /// the reservation ([`ClearingError::Guard`] names which).
    pub payer_guards: Vec<Guard>,
    /// Written with the reservation.
    pub payer_rows: Vec<ServiceRow>,
    /// The ledger's `user_data` of the reservation (a trade's number).
    pub user_data: u64,
    /// What a posted decision writes on the payee's shard.
    pub payee: PayeeSide,
}

/// A shard's half of the cross-shard protocol.
#[derive(Clone)]
pub struct Clearing {
    directory: Directory,
    shard: ShardId,
}

impl std::fmt::Debug for Clearing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clearing").field("shard", &self.shard).finish_non_exhaustive()
    }
}

fn id_text(id: TransferId) -> String {
    format!("{id:032x}")
}

fn decision_text(decision: Decision) -> String {
    match decision {
        Decision::Posted => "posted".into(),
        Decision::Rejected(reason) => format!("rejected:{}", reason.code()),
    }
}

fn decision_of(text: &str) -> Option<Decision> {
    match text.split_once(':') {
        None if text == "posted" => Some(Decision::Posted),
        Some(("rejected", reason)) => Rejection::from_code(reason).map(Decision::Rejected),
        _ => None,
    }
}

fn status_text(status: PayerStatus) -> &'static str {
    match status {
        PayerStatus::Prepared => "prepared",
        PayerStatus::Posted => "posted",
        PayerStatus::Voided => "voided",
    }
}

fn status_of(text: &str) -> Option<PayerStatus> {
    [PayerStatus::Prepared, PayerStatus::Posted, PayerStatus::Voided].into_iter().find(|s| status_text(*s) == text)
}

fn event_id(id: TransferId, step: &str) -> citypay_ledger::EventId {
    derived_event_id(&["crossing", &id_text(id), step])
}

fn cny(debit: u64, credit: u64, amount: i64) -> Leg {
    Leg { debit, credit, amount, currency: Currency::CNY, code: transfer_codes::TRANSFER, class: 0, user_data: 0 }
}

impl Clearing {
    /// Shard `shard`'s half, over its directory.
    pub fn new(directory: Directory, shard: ShardId) -> Clearing {
        Clearing { directory, shard }
    }

    /// The shard this half is.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// This shard's clearing account for `peer`.
    pub const fn clearing_account(peer: ShardId) -> u64 {
        account_id(AccountKind::Clearing, peer as u64)
    }

    fn now_ms(&self) -> u64 {
        self.directory.clock().now().0 / 1_000_000
    }

    async fn submit(&self, command: Command) -> Result<Result<citypay_ledger::Outcome, usize>, ClearingError> {
        match self.directory.shard().submit(command).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(SubmitError::GuardFailed { guard }) => Ok(Err(guard)),
            Err(other) => Err(ClearingError::Unavailable(other.to_string())),
        }
    }

    /// Opens this shard's clearing account for `peer` (again: a replay).
    pub async fn open_clearing_account(&self, peer: ShardId) -> Result<(), ClearingError> {
        let open = Event::CreateAccount(NewAccount {
            id: Self::clearing_account(peer),
            currency: Currency::CNY,
            flags: AccountFlags::NONE,
            code: AccountKind::Clearing.code(),
            limits: Limits::NONE,
        });
        match self.submit(open.into()).await? {
            Ok(outcome) if outcome.status == Status::Ok => Ok(()),
            Ok(outcome) => Err(ClearingError::Ledger(outcome.status)),
            Err(_) => Err(ClearingError::Unavailable("guard".into())),
        }
    }

    /// The payer's shard's first step: reserves `crossing` (idempotent by its id) and returns
    /// the ask to send the payee's shard.
    pub async fn reserve(&self, crossing: &Crossing) -> Result<Message, ClearingError> {
        self.reserve_for(crossing, &Purpose::default()).await
    }

    /// [`Clearing::reserve`], with `purpose`'s code, class, guards and rows.
    pub async fn reserve_for(&self, crossing: &Crossing, purpose: &Purpose) -> Result<Message, ClearingError> {
        if crossing.payer_shard != self.shard {
            return Err(ClearingError::Unavailable(format!("shard {} reserves only for payers of its own", self.shard)));
        }
        // Written at once, with no read first: a retry's guard fails (reserved already, and
        // perhaps decided: the ask is the same), and the ledger refuses what the payer's
        // available balance does not cover, in the same transaction.
        let reserved = citypay_crossshard::reserve(crossing, i64::MAX).map_err(ClearingError::Refused)?;
        let Movement::Reserve { amount, .. } = reserved.movement else { unreachable!("a reservation reserves") };
        let key = vec![("id", Value::Text(id_text(crossing.id)))];
        let row = ServiceRow {
            table: "crossings_out",
            key: key.clone(),
            columns: vec![
                ("payee_shard", Value::Int(i64::from(crossing.payee_shard))),
                ("payer", Value::Int(u64_to_column(crossing.payer))),
                ("payee", Value::Int(u64_to_column(crossing.payee))),
                ("amount", Value::Int(amount)),
                ("status", Value::Text(status_text(reserved.status).into())),
                ("reserved_at", Value::Int(i64::try_from(self.now_ms()).unwrap_or(i64::MAX))),
                ("decision", Value::Null),
            ],
            on_conflict: OnConflict::Fail,
        };
        let mut leg = cny(crossing.payer, Self::clearing_account(crossing.payee_shard), amount);
        if purpose.code != 0 {
            leg.code = purpose.code;
        }
        leg.class = purpose.class;
        leg.user_data = purpose.user_data;
        let hold = Transfer {
            id: event_id(crossing.id, "reserve"),
            leg,
            // A reservation has no timeout of its own: only the payee's shard decides.
            pending_timeout_s: Some(0),
        };
        let guards = std::iter::once(Guard::Absent { table: "crossings_out", key }).chain(purpose.payer_guards.iter().cloned()).collect();
        let rows = std::iter::once(row).chain(purpose.payer_rows.iter().cloned()).collect();
        let command = Command { event: Some(Event::Transfer(hold)), guards, rows, always_rows: Vec::new() };
        match self.submit(command).await? {
            Ok(outcome) if outcome.status == Status::Ok => Ok(reserved.send),
            Ok(outcome) if outcome.status == Status::InsufficientFunds => Err(ClearingError::Refused(citypay_crossshard::Refusal::InsufficientFunds)),
            Ok(outcome) => Err(ClearingError::Ledger(outcome.status)),
            // Reserved before, or meanwhile, by a retry of the same transfer: the ask again, or
            // the decision when it was applied already (the payee's shard need not be asked:
            // its rows may have moved on with its city).
            Err(0) => {
                tracing::debug!(transfer = %id_text(crossing.id), "reserved already");
                match self.sent(crossing.id).await? {
                    Some((_, status, Some(decision))) if status != PayerStatus::Prepared => Ok(Message::Decided { id: crossing.id, decision }),
                    _ => Ok(Message::Decide(*crossing)),
                }
            }
            Err(guard) => Err(ClearingError::Guard(guard - 1)),
        }
    }

    /// What this shard sent under `id`: the crossing, its status, its decision.
    async fn sent(&self, id: TransferId) -> Result<Option<(Crossing, PayerStatus, Option<Decision>)>, ClearingError> {
        let rows = self
            .directory
            .read("SELECT payee_shard, payer, payee, amount, status, decision FROM crossings_out WHERE id = ?1", vec![Value::Text(id_text(id))])
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        Ok(Some(self.sent_row(id, row)?))
    }

    fn sent_row(&self, id: TransferId, row: &[Value]) -> Result<(Crossing, PayerStatus, Option<Decision>), ClearingError> {
        let bad = |what: &str| ClearingError::Directory(DirectoryError::Storage(format!("crossings_out: {what}")));
        let text = |i: usize| match row.get(i) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let crossing = Crossing {
            id,
            payer_shard: self.shard,
            payee_shard: ShardId::try_from(int_at(row, 0)?).map_err(|_| bad("payee_shard"))?,
            payer: u64_from_column(int_at(row, 1)?),
            payee: u64_from_column(int_at(row, 2)?),
            amount: int_at(row, 3)?,
        };
        let status = text(4).as_deref().and_then(status_of).ok_or_else(|| bad("status"))?;
        Ok((crossing, status, text(5).as_deref().and_then(decision_of)))
    }

    /// The decision this shard stored for `id`, as the payee's shard.
    async fn decided(&self, id: TransferId) -> Result<Option<Decision>, ClearingError> {
        let rows = self.directory.read("SELECT decision FROM crossings_in WHERE id = ?1", vec![Value::Text(id_text(id))]).await?;
        match rows.first().and_then(|row| row.first()) {
            Some(Value::Text(text)) => decision_of(text).map(Some).ok_or_else(|| ClearingError::Directory(DirectoryError::Storage("crossings_in: decision".into()))),
            _ => Ok(None),
        }
    }

    /// Whether the payee's account can be credited here: it exists on this shard.
    async fn receivable(&self, crossing: &Crossing) -> Result<Result<(), Rejection>, ClearingError> {
        let account = self.directory.shard().account(crossing.payee).await.map_err(|e| ClearingError::Unavailable(e.to_string()))?;
        Ok(if account.is_some() { Ok(()) } else { Err(Rejection::PayeeUnknown) })
    }

    /// The payee's shard's step: answers `ask` with the decision, writing it first if this is
    /// the first ask (the decision row is unique on the transfer id, so of two asks at once
    /// one writes and both answer what it wrote).
    pub async fn decide(&self, ask: Message) -> Result<Message, ClearingError> {
        self.decide_with(ask, PayeeSide::default()).await
    }

    /// [`Clearing::decide`], writing `payee`'s rows and legs with a posted decision (never with
    /// a rejection), under its guards.
    pub async fn decide_with(&self, ask: Message, payee: PayeeSide) -> Result<Message, ClearingError> {
        let (Message::Decide(crossing) | Message::Resolve(crossing)) = ask else { return Err(ClearingError::NotFound) };
        if crossing.payee_shard != self.shard {
            return Err(ClearingError::NotFound);
        }
        for round in 0..4 {
            // The first round writes at once, as if nothing were decided and the payee could be
            // credited: the guard on the decision row and the ledger check both in the same
            // transaction (a decision stored before fails the guard; a payee not here fails the
            // credit). Later rounds read first.
            let (stored, receivable) = if round == 0 {
                (None, Ok(()))
            } else {
                let stored = self.decided(crossing.id).await?;
                let receivable = if stored.is_some() { Ok(()) } else { self.receivable(&crossing).await? };
                (stored, receivable)
            };
            let step = citypay_crossshard::decide(stored, &ask, receivable).ok_or(ClearingError::NotFound)?;
            let Some((decision, movement)) = step.write else { return Ok(step.send) };
            let key = vec![("id", Value::Text(id_text(crossing.id)))];
            let row = |decision| ServiceRow {
                table: "crossings_in",
                key: key.clone(),
                columns: vec![
                    ("payer_shard", Value::Int(i64::from(crossing.payer_shard))),
                    ("payee", Value::Int(u64_to_column(crossing.payee))),
                    ("amount", Value::Int(crossing.amount)),
                    ("decision", Value::Text(decision_text(decision))),
                    ("decided_at", Value::Int(i64::try_from(self.now_ms()).unwrap_or(i64::MAX))),
                ],
                on_conflict: OnConflict::Fail,
            };
            let event = movement.map(|movement| {
                let Movement::Post { amount, .. } = movement else { unreachable!("a decision posts") };
                let mut leg = cny(Self::clearing_account(crossing.payer_shard), crossing.payee, amount);
                if payee.credit_code != 0 {
                    leg.code = payee.credit_code;
                }
                leg.user_data = payee.credit_user_data;
                let id = event_id(crossing.id, "credit");
                if payee.legs.is_empty() {
                    Event::Transfer(Transfer { id, leg, pending_timeout_s: None })
                } else {
                    Event::Entry(citypay_ledger::Entry { id, legs: std::iter::once(leg).chain(payee.legs.iter().cloned()).collect() })
                }
            });
            let guards = vec![Guard::Absent { table: "crossings_in", key: key.clone() }];
            let mut rows = vec![row(decision)];
            let mut all_guards = guards.clone();
            if decision == Decision::Posted {
                rows.extend(payee.rows.iter().cloned());
                all_guards.extend(payee.guards.iter().cloned());
            }
            let submitted = match self.directory.shard().submit(Command { event, guards: all_guards, rows, always_rows: Vec::new() }).await {
                Ok(outcome) => Ok(outcome.status),
                Err(SubmitError::GuardFailed { guard }) => Err(guard),
                // The payee's bucket left this shard (its city moved on): this shard, the
                // transfer's one decider, cannot credit it, and never will.
                Err(SubmitError::NotOwned { moving: false, .. }) => Ok(Status::AccountNotFound),
                Err(other) => return Err(ClearingError::Unavailable(other.to_string())),
            };
            match submitted {
                Ok(Status::Ok) => {
                    tracing::debug!(transfer = %id_text(crossing.id), decision = %decision_text(decision), "decided");
                    return Ok(step.send);
                }
                // The ledger would not credit the payee (no such account here, a cap): that is
                // the decision, and it is written as such.
                Ok(status) => {
                    tracing::debug!(transfer = %id_text(crossing.id), status = status.name(), "the credit was refused");
                    let reason = if status == Status::AccountNotFound { Rejection::PayeeUnknown } else { Rejection::OverLimit };
                    let rejected = Decision::Rejected(reason);
                    if self.submit(Command { event: None, guards, rows: vec![row(rejected)], always_rows: Vec::new() }).await?.is_ok() {
                        return Ok(Message::Decided { id: crossing.id, decision: rejected });
                    }
                }
                // The service's guard failed: refused, and written as such.
                Err(guard) if guard > 0 => {
                    tracing::debug!(transfer = %id_text(crossing.id), guard, "the payee's service refused it");
                    let rejected = Decision::Rejected(Rejection::Refused);
                    if self.submit(Command { event: None, guards, rows: vec![row(rejected)], always_rows: Vec::new() }).await?.is_ok() {
                        return Ok(Message::Decided { id: crossing.id, decision: rejected });
                    }
                }
                // Decided meanwhile by another ask: its decision is the answer (next round).
                Err(_) => {}
            }
        }
        Err(ClearingError::Unavailable("the decision kept changing; retry".into()))
    }

    /// The payer's shard's last step: posts or voids the reservation as `answer` decides (a
    /// decision applied before is applied once). The transfer's status after it.
    pub async fn apply(&self, answer: Message) -> Result<PayerStatus, ClearingError> {
        self.apply_expecting(answer, None).await
    }

    /// [`Clearing::apply`] from the status `expected` without reading it first (the sender,
    /// which has just reserved, knows it is `Prepared`); the guard checks it, and a status
    /// changed meanwhile is read as `apply` reads it.
    pub async fn apply_expecting(&self, answer: Message, expected: Option<PayerStatus>) -> Result<PayerStatus, ClearingError> {
        let Message::Decided { id, decision } = answer else { return Err(ClearingError::NotFound) };
        for round in 0..4 {
            let status = match expected.filter(|_| round == 0) {
                Some(status) => status,
                None => self.sent(id).await?.ok_or(ClearingError::NotFound)?.1,
            };
            let Some((next, movement)) = citypay_crossshard::apply(status, decision).map_err(ClearingError::Conflict)? else { return Ok(status) };
            let event = match movement {
                Movement::PostReserved => Event::PostPending(PostPending { id: event_id(id, "post"), pending_id: event_id(id, "reserve"), amount: None }),
                Movement::VoidReserved => Event::VoidPending(VoidPending { id: event_id(id, "void"), pending_id: event_id(id, "reserve") }),
                other => unreachable!("the payer's shard posts or voids, not {other:?}"),
            };
            let key = vec![("id", Value::Text(id_text(id)))];
            let row = ServiceRow {
                table: "crossings_out",
                key: key.clone(),
                columns: vec![("status", Value::Text(status_text(next).into())), ("decision", Value::Text(decision_text(decision)))],
                on_conflict: OnConflict::UpdateOnly,
            };
            let guard = Guard::Matches { table: "crossings_out", key, expect: vec![("status", Value::Text(status_text(status).into()))] };
            match self.submit(Command { event: Some(event), guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await? {
                Ok(outcome) if outcome.status == Status::Ok => {
                    tracing::debug!(transfer = %id_text(id), status = status_text(next), "applied");
                    return Ok(next);
                }
                Ok(outcome) => return Err(ClearingError::Ledger(outcome.status)),
                // Applied meanwhile (the resolver and the sender at once): read it again.
                Err(_) => {}
            }
        }
        Err(ClearingError::Unavailable("the transfer kept changing; retry".into()))
    }

    /// Sends `crossing` through `peer`: reserve, ask, apply. Answers the decision once it is
    /// durable on the payee's shard; when the peer cannot be reached the outcome is unknown
    /// (the resolver finishes it), and so is the answer.
    pub async fn send(&self, crossing: &Crossing, peer: &dyn Peer) -> Result<Decision, ClearingError> {
        self.send_for(crossing, Purpose::default(), peer).await
    }

    /// [`Clearing::send`] for `purpose`.
    pub async fn send_for(&self, crossing: &Crossing, purpose: Purpose, peer: &dyn Peer) -> Result<Decision, ClearingError> {
        let ask = self.reserve_for(crossing, &purpose).await?;
        // A transfer finished before answers its decision, applied already, without asking
        // again.
        if let Message::Decided { decision, .. } = ask {
            return Ok(decision);
        }
        let answer = peer.ask(ask, purpose.payee).await.map_err(ClearingError::Unknown)?;
        let Message::Decided { decision, .. } = answer else { return Err(ClearingError::Unknown("the peer answered something else".into())) };
        self.apply(answer).await?;
        Ok(decision)
    }

    /// Transfers this shard sent that are still prepared and due for the resolver (at most
    /// `limit`, oldest first).
    pub async fn due(&self, limit: u32) -> Result<Vec<Crossing>, ClearingError> {
        let now = self.now_ms();
        let before = now.saturating_sub(citypay_crossshard::RESOLVE_AFTER_MS);
        let rows = self
            .directory
            .read(
                "SELECT payee_shard, payer, payee, amount, status, decision, id FROM crossings_out WHERE status = 'prepared' AND reserved_at <= ?1 ORDER BY reserved_at LIMIT ?2",
                vec![Value::Int(i64::try_from(before).unwrap_or(i64::MAX)), Value::Int(i64::from(limit))],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let Some(Value::Text(id)) = row.get(6) else { return Err(ClearingError::Directory(DirectoryError::Storage("crossings_out: id".into()))) };
                let id = u128::from_str_radix(id, 16).map_err(|_| ClearingError::Directory(DirectoryError::Storage("crossings_out: id".into())))?;
                Ok(self.sent_row(id, row)?.0)
            })
            .collect()
    }

    /// The resolver, once: asks `peer` about every due transfer and applies the answers. How
    /// many it finished; a peer that cannot be reached is asked again next time.
    pub async fn resolve_once(&self, peer: &dyn Peer, limit: u32) -> Result<usize, ClearingError> {
        let mut finished = 0;
        for crossing in self.due(limit).await? {
            if self.resolve_one(&crossing, peer).await? {
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// The resolver's step for one due transfer: asks the payee's shard and applies the
    /// answer. Whether it finished (false: the payee's shard did not answer; asked again
    /// later).
    pub async fn resolve_one(&self, crossing: &Crossing, peer: &dyn Peer) -> Result<bool, ClearingError> {
        match peer.ask(citypay_crossshard::resolve(crossing), PayeeSide::default()).await {
            Ok(answer) => {
                self.apply(answer).await?;
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(transfer = %id_text(crossing.id), %error, "the payee's shard did not answer; asking again later");
                Ok(false)
            }
        }
    }

    /// The transfer this shard sent under `id`, its status and its decision.
    pub async fn crossing(&self, id: TransferId) -> Result<(Crossing, PayerStatus, Option<Decision>), ClearingError> {
        self.sent(id).await?.ok_or(ClearingError::NotFound)
    }

    /// The transfer this shard sent under `id`: its status and decision (for a client asking
    /// how it ended).
    pub async fn status(&self, id: TransferId) -> Result<(PayerStatus, Option<Decision>), ClearingError> {
        let (_, status, decision) = self.sent(id).await?.ok_or(ClearingError::NotFound)?;
        Ok((status, decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_statuses_read_back() {
        for decision in [Decision::Posted, Decision::Rejected(Rejection::Timeout), Decision::Rejected(Rejection::PayeeUnknown)] {
            assert_eq!(decision_of(&decision_text(decision)), Some(decision));
        }
        assert_eq!(decision_of("rejected:nonsense"), None);
        for status in [PayerStatus::Prepared, PayerStatus::Posted, PayerStatus::Voided] {
            assert_eq!(status_of(status_text(status)), Some(status));
        }
        assert_eq!(Clearing::clearing_account(2) >> 56, AccountKind::Clearing as u64);
    }
}
