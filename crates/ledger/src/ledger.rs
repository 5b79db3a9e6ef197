//! The state machine: accounts and open pending transfers in memory, batches applied with an
//! undo log so that a batch whose commit fails can be taken back exactly.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::account::{Account, AccountFlags, WindowUsage};
use crate::event::{
    AccountId, CarryUsage, Entry, Event, EventId, Leg, NewAccount, PostPending, SetLimits, Transfer,
};
use crate::limits::{BATCH_EVENTS_MAX, ENTRY_LEGS_MAX, EXPIRIES_PER_BATCH_MAX, RECENT_IDS_DEFAULT};
use crate::recent::RecentIds;
use crate::{Currency, Outcome, Status, Timestamp};

/// Sizing of a ledger's in-memory structures.
#[derive(Clone, Copy, Debug)]
pub struct LedgerConfig {
    /// How many recent event ids are kept in memory for replay checks.
    pub recent_ids_max: usize,
}

impl LedgerConfig {
    /// The defaults from [`crate::limits`].
    pub const DEFAULT: LedgerConfig = LedgerConfig { recent_ids_max: RECENT_IDS_DEFAULT };
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PendingState {
    /// Reserved, waiting for a post or a void.
    Open = 1,
    /// Posted (in full or for less).
    Posted = 2,
    /// Voided.
    Voided = 3,
    /// Released at its deadline.
    Expired = 4,
}

impl PendingState {
    /// Inverse of `as u8`.
    pub fn from_code(code: u8) -> Option<PendingState> {
        match code {
            1 => Some(PendingState::Open),
            2 => Some(PendingState::Posted),
            3 => Some(PendingState::Voided),
            4 => Some(PendingState::Expired),
            _ => None,
        }
    }
}

/// The kind of a journal row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum JournalKind {
    /// A posted transfer or an entry's leg: moves posted balances.
    Posted = 0,
    /// A reservation: moves pending balances while its state is open.
    Pending = 1,
    /// Posts the pending transfer `pending_id` for `amount`.
    PostPending = 2,
    /// Voids the pending transfer `pending_id`; moves nothing.
    VoidPending = 3,
}

impl JournalKind {
    /// Inverse of `as u8`.
    pub fn from_code(code: u8) -> Option<JournalKind> {
        match code {
            0 => Some(JournalKind::Posted),
            1 => Some(JournalKind::Pending),
            2 => Some(JournalKind::PostPending),
            3 => Some(JournalKind::VoidPending),
            _ => None,
        }
    }
}

/// One row of the journal: what a store appends for every applied movement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalRow {
    /// The event's id; an entry's legs share it.
    pub id: EventId,
    /// Leg index within the event (0 for everything but an entry's later legs).
    pub leg_index: u16,
    /// What the row does.
    pub kind: JournalKind,
    /// Accounts, amount and references.
    pub leg: Leg,
    /// For posts and voids: the pending transfer's id; else 0.
    pub pending_id: EventId,
    /// For pending rows: when the reservation expires.
    pub deadline: Option<Timestamp>,
    /// Ledger time of the batch that applied it.
    pub timestamp: Timestamp,
    /// The event's body hash (same on every leg of an entry).
    pub hash: u64,
}

/// A change of state of a pending transfer, to be written onto its journal row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingUpdate {
    /// The pending transfer's id.
    pub pending_id: EventId,
    /// Its new state.
    pub state: PendingState,
}

/// A rejected event, kept so that a retry gets the same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The event's id.
    pub id: EventId,
    /// Its body hash.
    pub hash: u64,
    /// Why it was rejected.
    pub status: Status,
    /// Ledger time of the batch.
    pub timestamp: Timestamp,
}

/// What storage knows about an id the ledger could not decide from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The body hash stored with the id.
    pub hash: u64,
    /// Its first status.
    pub status: Status,
    /// For a pending transfer: its state.
    pub pending_state: Option<PendingState>,
}

/// An open pending transfer, as reloaded from storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenPending {
    /// The pending transfer's id.
    pub id: EventId,
    /// What it reserves.
    pub leg: Leg,
    /// When it was applied.
    pub created_at: Timestamp,
    /// When it expires, if ever.
    pub deadline: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    leg: Leg,
    deadline: Option<Timestamp>,
    /// Keys of the debit account's cap windows when the reservation was made.
    windows: [u32; 3],
}

/// Everything a batch changed: the outcomes to answer, the rows to persist, and how to undo it.
#[derive(Debug, Default)]
pub struct Effects {
    /// One per event, in order.
    pub outcomes: Vec<Outcome>,
    /// Rows to append to the journal.
    pub journal: Vec<JournalRow>,
    /// State changes of pending transfers (posted, voided, expired).
    pub pending_updates: Vec<PendingUpdate>,
    /// Accounts opened by this batch, in their final state.
    pub accounts_created: Vec<Account>,
    /// Existing accounts this batch touched, in their final state (each once).
    pub accounts_updated: Vec<Account>,
    /// Those of `accounts_updated` whose limits changed ([`Event::SetLimits`]): a store writes
    /// their limits too.
    pub limits_updated: Vec<Account>,
    /// Rejected events to remember.
    pub rejections: Vec<Rejection>,
    /// Ledger time of the batch.
    pub timestamp: Timestamp,
    undo: Undo,
}

#[derive(Debug, Default)]
struct Undo {
    accounts: Vec<(AccountId, Option<Account>)>,
    accounts_seen: FxHashSet<AccountId>,
    pending: Vec<(EventId, Option<Pending>)>,
    pending_seen: FxHashSet<EventId>,
    /// Pending transfers resolved in this batch, so later events of the batch see it.
    resolved: FxHashMap<EventId, PendingState>,
    recent_pushed: usize,
}

/// The ledger state machine.
#[derive(Debug)]
pub struct Ledger {
    accounts: FxHashMap<AccountId, Account>,
    pending: FxHashMap<EventId, Pending>,
    deadlines: BTreeSet<(Timestamp, EventId)>,
    recent: RecentIds,
    /// Last batch time; batches never go back in time.
    clock: Timestamp,
    in_flight: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(config: LedgerConfig) -> Ledger {
        Ledger::restore(config, Vec::new(), Vec::new(), 0, Timestamp(0))
    }

    /// A ledger reloaded from storage: every account, every open pending transfer, the largest
    /// event id storage holds (every id up to it is looked up there) and the last batch time.
    pub fn restore(
        config: LedgerConfig,
        accounts: Vec<Account>,
        open_pending: Vec<OpenPending>,
        stored_id_max: EventId,
        clock: Timestamp,
    ) -> Ledger {
        let mut ledger = Ledger {
            accounts: accounts.into_iter().map(|a| (a.id, a)).collect(),
            pending: FxHashMap::default(),
            deadlines: BTreeSet::new(),
            recent: RecentIds::new(config.recent_ids_max, stored_id_max),
            clock,
            in_flight: false,
        };
        for open in open_pending {
            let windows = ledger
                .accounts
                .get(&open.leg.debit)
                .map_or([0; 3], |a| window_keys(a, open.created_at));
            let pending = Pending { leg: open.leg, deadline: open.deadline, windows };
            if let Some(deadline) = open.deadline {
                ledger.deadlines.insert((deadline, open.id));
            }
            ledger.pending.insert(open.id, pending);
        }
        ledger
    }

    /// An account's current state.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Every account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Number of open pending transfers.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Number of event ids answered from memory.
    pub fn recent_ids_len(&self) -> usize {
        self.recent.len()
    }

    /// The earliest deadline of an open pending transfer: the writer should run a batch then,
    /// even an empty one, so the reservation is released on time.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// The ids in `events` that only storage can answer for: possibly-old event ids and pending
    /// transfers that are not open in memory. The caller looks them up and passes them to
    /// [`Ledger::apply`].
    pub fn ids_to_look_up(&self, events: &[Event]) -> Vec<EventId> {
        let mut ids = Vec::new();
        for event in events {
            let id = event.id();
            let is_account = matches!(event, Event::CreateAccount(_) | Event::SetLimits(_) | Event::CarryUsage(_));
            if !is_account && self.recent.must_look_up(id) {
                ids.push(id);
            }
            let target = match event {
                Event::PostPending(p) => p.pending_id,
                Event::VoidPending(v) => v.pending_id,
                _ => continue,
            };
            if !self.pending.contains_key(&target) {
                ids.push(target);
            }
        }
        ids
    }

    /// Applies a batch at time `now` (UTC) and returns its effects. `stored` answers the ids of
    /// [`Ledger::ids_to_look_up`]. The caller must then call [`Ledger::commit`] or
    /// [`Ledger::rollback`] before the next batch.
    pub fn apply(
        &mut self,
        events: &[Event],
        now: Timestamp,
        stored: &FxHashMap<EventId, StoredEvent>,
    ) -> Effects {
        assert!(!self.in_flight, "commit or roll back the previous batch first");
        self.in_flight = true;
        // Time never goes backwards, even if the host clock does.
        let now = now.max(self.clock);
        let mut fx = Effects { timestamp: now, ..Effects::default() };
        if events.len() > BATCH_EVENTS_MAX {
            fx.outcomes = vec![Outcome::new(Status::BatchTooLarge); events.len()];
            return fx;
        }
        fx.outcomes.reserve(events.len());
        self.expire_due(now, &mut fx);
        for (i, event) in events.iter().enumerate() {
            let first_row = fx.journal.len();
            let outcome = self.apply_event(event, now, stored, &mut fx);
            fx.outcomes.push(outcome);
            // Each event's rows carry their own instant, a nanosecond apart in the batch's
            // order, so the journal orders a batch's events as they were applied (a wallet
            // statement's balance after each line). The ledger's logic keeps the batch's time.
            let at = Timestamp(now.0.saturating_add(i as u64));
            for row in &mut fx.journal[first_row..] {
                row.timestamp = at;
            }
        }
        self.collect_accounts(&mut fx);
        assert_eq!(fx.outcomes.len(), events.len());
        fx
    }

    /// The batch is durable: forget its undo log and trim the id window.
    pub fn commit(&mut self, effects: Effects) {
        assert!(self.in_flight);
        self.in_flight = false;
        self.clock = effects.timestamp;
        self.recent.evict();
    }

    /// The batch did not commit: restore every account, pending transfer and id it changed.
    pub fn rollback(&mut self, effects: Effects) {
        assert!(self.in_flight);
        self.in_flight = false;
        let undo = effects.undo;
        self.recent.pop_back(undo.recent_pushed);
        for (id, prior) in undo.accounts.into_iter().rev() {
            match prior {
                Some(account) => self.accounts.insert(id, account),
                None => self.accounts.remove(&id),
            };
        }
        for (id, prior) in undo.pending.into_iter().rev() {
            if let Some(deadline) = self.pending.remove(&id).and_then(|p| p.deadline) {
                self.deadlines.remove(&(deadline, id));
            }
            if let Some(pending) = prior {
                if let Some(deadline) = pending.deadline {
                    self.deadlines.insert((deadline, id));
                }
                self.pending.insert(id, pending);
            }
        }
    }

    fn apply_event(
        &mut self,
        event: &Event,
        now: Timestamp,
        stored: &FxHashMap<EventId, StoredEvent>,
        fx: &mut Effects,
    ) -> Outcome {
        match event {
            Event::CreateAccount(spec) => return self.create_account(spec, now, fx),
            Event::SetLimits(set) => return self.set_limits(set, fx),
            Event::CarryUsage(carry) => return self.carry_usage(carry, fx),
            _ => {}
        }
        let id = event.id();
        if id == 0 {
            return Outcome::new(Status::InvalidId);
        }
        let hash = event.body_hash();
        let first = self.recent.get(id).or_else(|| {
            stored.get(&id).filter(|_| self.recent.must_look_up(id)).map(|s| (s.hash, s.status))
        });
        if let Some((first_hash, first_status)) = first {
            if first_hash != hash {
                return Outcome::new(Status::ConflictingReplay);
            }
            return Outcome { status: first_status, replay: true };
        }
        let status = match event {
            Event::Transfer(t) => self.transfer(t, hash, now, fx),
            Event::Entry(e) => self.entry(e, hash, now, fx),
            Event::PostPending(p) => self.resolve(p, hash, now, stored, fx, PendingState::Posted),
            Event::VoidPending(v) => {
                let as_post = PostPending { id: v.id, pending_id: v.pending_id, amount: None };
                self.resolve(&as_post, hash, now, stored, fx, PendingState::Voided)
            }
            Event::CreateAccount(_) | Event::SetLimits(_) | Event::CarryUsage(_) => unreachable!("handled above"),
        };
        if status != Status::Ok {
            fx.rejections.push(Rejection { id, hash, status, timestamp: now });
        }
        self.recent.push(id, hash, status);
        fx.undo.recent_pushed += 1;
        Outcome::new(status)
    }

    /// Carries window usage from another ledger ([`CarryUsage`]): each slot keeps the later
    /// window, and of the same window the larger use. Idempotent by state; no journal row.
    fn carry_usage(&mut self, carry: &CarryUsage, fx: &mut Effects) -> Outcome {
        let Some(existing) = self.accounts.get(&carry.account) else {
            return Outcome::new(Status::AccountNotFound);
        };
        if carry.usage.iter().any(|u| u.used < 0) {
            return Outcome::new(Status::InvalidAccount);
        }
        let mut account = *existing;
        for (slot, carried) in account.usage.iter_mut().zip(&carry.usage) {
            if carried.window > slot.window || (carried.window == slot.window && carried.used > slot.used) {
                *slot = *carried;
            }
        }
        if account.usage == existing.usage {
            return Outcome { status: Status::Ok, replay: true };
        }
        self.touch_account(carry.account, fx);
        self.accounts.insert(carry.account, account);
        Outcome::new(Status::Ok)
    }

    /// Replaces an account's limits; like account creation it is idempotent by state and
    /// leaves no journal row (limits are the account's state, stored with it).
    fn set_limits(&mut self, set: &SetLimits, fx: &mut Effects) -> Outcome {
        let Some(existing) = self.accounts.get(&set.account) else {
            return Outcome::new(Status::AccountNotFound);
        };
        if existing.limits == set.limits {
            return Outcome { status: Status::Ok, replay: true };
        }
        if !set.limits.is_valid() {
            return Outcome::new(Status::InvalidAccount);
        }
        let mut account = *existing;
        // A new cap keeps the usage of an old cap over the same window and classes, whatever
        // slot it was in (a wallet opened with its year cap first keeps its year when a day
        // cap is put before it); a cap with no such predecessor starts from nothing.
        for (slot, new) in account.usage.iter_mut().zip(&set.limits.window_caps) {
            let kept = new.and_then(|new| {
                existing.limits.window_caps.iter().position(|old| old.is_some_and(|old| old.window == new.window && old.classes == new.classes))
            });
            *slot = kept.map_or_else(WindowUsage::default, |old| existing.usage[old]);
        }
        account.limits = set.limits;
        self.touch_account(set.account, fx);
        self.accounts.insert(set.account, account);
        Outcome::new(Status::Ok)
    }

    fn create_account(&mut self, spec: &NewAccount, now: Timestamp, fx: &mut Effects) -> Outcome {
        if spec.id == 0 {
            return Outcome::new(Status::InvalidId);
        }
        if let Some(existing) = self.accounts.get(&spec.id) {
            let same = existing.currency == spec.currency
                && existing.flags == spec.flags
                && existing.code == spec.code
                && existing.limits == spec.limits;
            return if same {
                Outcome { status: Status::Ok, replay: true }
            } else {
                Outcome::new(Status::ConflictingReplay)
            };
        }
        if !spec.flags.is_valid() || !spec.limits.is_valid() {
            return Outcome::new(Status::InvalidAccount);
        }
        self.touch_account(spec.id, fx);
        let account = Account {
            id: spec.id,
            currency: spec.currency,
            flags: spec.flags,
            code: spec.code,
            limits: spec.limits,
            opened_at: now,
            balance: Default::default(),
            usage: [WindowUsage::default(); 3],
        };
        self.accounts.insert(spec.id, account);
        Outcome::new(Status::Ok)
    }

    fn transfer(&mut self, t: &Transfer, hash: u64, now: Timestamp, fx: &mut Effects) -> Status {
        let pending = t.pending_timeout_s.is_some();
        let status = self.check_and_apply_leg(&t.leg, pending, now, fx);
        if status != Status::Ok {
            return status;
        }
        let deadline = match t.pending_timeout_s {
            Some(s) if s > 0 => Some(now.plus_seconds(u64::from(s))),
            _ => None,
        };
        let kind = if pending { JournalKind::Pending } else { JournalKind::Posted };
        fx.journal.push(JournalRow {
            id: t.id,
            leg_index: 0,
            kind,
            leg: t.leg,
            pending_id: 0,
            deadline,
            timestamp: now,
            hash,
        });
        if pending {
            let debit = &self.accounts[&t.leg.debit];
            let record = Pending { leg: t.leg, deadline, windows: window_keys(debit, now) };
            self.touch_pending(t.id, fx);
            self.pending.insert(t.id, record);
            if let Some(deadline) = deadline {
                self.deadlines.insert((deadline, t.id));
            }
        }
        Status::Ok
    }

    fn entry(&mut self, e: &Entry, hash: u64, now: Timestamp, fx: &mut Effects) -> Status {
        if e.legs.is_empty() || e.legs.len() > ENTRY_LEGS_MAX {
            return Status::InvalidEntry;
        }
        // Legs apply one by one; on the first failure the earlier legs are taken back from
        // these snapshots, so a failed entry leaves every balance exactly as it was.
        let mut before: Vec<Account> = Vec::with_capacity(e.legs.len() * 2);
        for (index, leg) in e.legs.iter().enumerate() {
            for id in [leg.debit, leg.credit] {
                if let Some(account) = self.accounts.get(&id) {
                    before.push(*account);
                }
            }
            let status = self.check_and_apply_leg(leg, false, now, fx);
            if status != Status::Ok {
                for account in before.into_iter().rev() {
                    self.accounts.insert(account.id, account);
                }
                fx.journal.truncate(fx.journal.len() - index);
                return status;
            }
            let leg_index = u16::try_from(index).expect("ENTRY_LEGS_MAX fits u16");
            fx.journal.push(JournalRow {
                id: e.id,
                leg_index,
                kind: JournalKind::Posted,
                leg: *leg,
                pending_id: 0,
                deadline: None,
                timestamp: now,
                hash,
            });
        }
        Status::Ok
    }

    /// Posts (`to` = Posted) or voids (`to` = Voided) an open pending transfer.
    fn resolve(
        &mut self,
        p: &PostPending,
        hash: u64,
        now: Timestamp,
        stored: &FxHashMap<EventId, StoredEvent>,
        fx: &mut Effects,
        to: PendingState,
    ) -> Status {
        let Some(pending) = self.pending.get(&p.pending_id).copied() else {
            return self.closed_pending_status(p.pending_id, stored, fx);
        };
        if pending.deadline.is_some_and(|d| d <= now) {
            self.release(p.pending_id, pending, 0, PendingState::Expired, fx);
            return Status::PendingExpired;
        }
        let amount = match (to, p.amount) {
            (PendingState::Posted, Some(amount)) => amount,
            _ => pending.leg.amount,
        };
        if amount <= 0 {
            return Status::InvalidAmount;
        }
        if amount > pending.leg.amount {
            return Status::PostExceedsPending;
        }
        let posted = if to == PendingState::Posted { amount } else { 0 };
        if !self.can_post(&pending.leg, posted) {
            return Status::Overflow;
        }
        self.release(p.pending_id, pending, posted, to, fx);
        let kind = if to == PendingState::Posted {
            JournalKind::PostPending
        } else {
            JournalKind::VoidPending
        };
        fx.journal.push(JournalRow {
            id: p.id,
            leg_index: 0,
            kind,
            leg: Leg { amount, ..pending.leg },
            pending_id: p.pending_id,
            deadline: None,
            timestamp: now,
            hash,
        });
        Status::Ok
    }

    /// Why a pending transfer that is not open in memory cannot be posted or voided: it was
    /// closed earlier in this batch, storage knows its final state, or it never was pending.
    fn closed_pending_status(
        &self,
        pending_id: EventId,
        stored: &FxHashMap<EventId, StoredEvent>,
        fx: &Effects,
    ) -> Status {
        if let Some(state) = fx.undo.resolved.get(&pending_id) {
            return closed_status(*state);
        }
        if let Some(record) = stored.get(&pending_id) {
            return match (record.status, record.pending_state) {
                (Status::Ok, Some(state)) => closed_status(state),
                (Status::Ok, None) => Status::NotPending,
                _ => Status::PendingNotFound,
            };
        }
        // Not in storage: it can only have been applied earlier in this very batch.
        match self.recent.get(pending_id) {
            Some((_, Status::Ok)) => Status::NotPending,
            _ => Status::PendingNotFound,
        }
    }

    fn can_post(&self, leg: &Leg, posted: i64) -> bool {
        let debit = &self.accounts[&leg.debit].balance;
        let credit = &self.accounts[&leg.credit].balance;
        debit.debits_posted.checked_add(posted).is_some()
            && credit.credits_posted.checked_add(posted).is_some()
    }

    /// Takes a pending reservation off both accounts, posting `posted` of it, and gives back
    /// the cap usage it held in windows that are still current.
    fn release(
        &mut self,
        id: EventId,
        pending: Pending,
        posted: i64,
        to: PendingState,
        fx: &mut Effects,
    ) {
        let leg = pending.leg;
        self.touch_account(leg.debit, fx);
        self.touch_account(leg.credit, fx);
        self.touch_pending(id, fx);
        let unused = leg.amount - posted;
        {
            let debit = self.accounts.get_mut(&leg.debit).expect("pending accounts exist");
            debit.balance.debits_pending -= leg.amount;
            debit.balance.debits_posted += posted;
            for (i, cap) in debit.limits.window_caps.iter().enumerate() {
                let counts = cap.is_some_and(|c| c.classes & leg.class != 0);
                if counts && debit.usage[i].window == pending.windows[i] {
                    debit.usage[i].used = (debit.usage[i].used - unused).max(0);
                }
            }
        }
        let credit = self.accounts.get_mut(&leg.credit).expect("pending accounts exist");
        credit.balance.credits_pending -= leg.amount;
        credit.balance.credits_posted += posted;
        self.pending.remove(&id);
        if let Some(deadline) = pending.deadline {
            self.deadlines.remove(&(deadline, id));
        }
        fx.undo.resolved.insert(id, to);
        fx.pending_updates.push(PendingUpdate { pending_id: id, state: to });
    }

    fn expire_due(&mut self, now: Timestamp, fx: &mut Effects) {
        for _ in 0..EXPIRIES_PER_BATCH_MAX {
            let Some(&(deadline, id)) = self.deadlines.first() else { break };
            if deadline > now {
                break;
            }
            let pending = self.pending[&id];
            self.release(id, pending, 0, PendingState::Expired, fx);
        }
    }

    /// Validates one leg against both accounts, limits and flags, then applies it.
    fn check_and_apply_leg(
        &mut self,
        leg: &Leg,
        pending: bool,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Status {
        if leg.amount <= 0 {
            return Status::InvalidAmount;
        }
        if leg.debit == leg.credit {
            return Status::SameAccount;
        }
        let (Some(debit), Some(credit)) =
            (self.accounts.get(&leg.debit), self.accounts.get(&leg.credit))
        else {
            return Status::AccountNotFound;
        };
        if debit.currency != leg.currency || credit.currency != leg.currency {
            return Status::CurrencyMismatch;
        }
        let usage = match check_limits(debit, leg, now) {
            Ok(usage) => usage,
            Err(status) => return status,
        };
        let (debit_balance, credit_balance) = match balances_after(debit, credit, leg, pending) {
            Ok(balances) => balances,
            Err(status) => return status,
        };
        self.touch_account(leg.debit, fx);
        self.touch_account(leg.credit, fx);
        let debit = self.accounts.get_mut(&leg.debit).expect("checked above");
        debit.balance = debit_balance;
        debit.usage = usage;
        self.accounts.get_mut(&leg.credit).expect("checked above").balance = credit_balance;
        Status::Ok
    }

    fn touch_account(&mut self, id: AccountId, fx: &mut Effects) {
        if fx.undo.accounts_seen.insert(id) {
            fx.undo.accounts.push((id, self.accounts.get(&id).copied()));
        }
    }

    fn touch_pending(&mut self, id: EventId, fx: &mut Effects) {
        if fx.undo.pending_seen.insert(id) {
            fx.undo.pending.push((id, self.pending.get(&id).copied()));
        }
    }

    fn collect_accounts(&self, fx: &mut Effects) {
        for (id, prior) in &fx.undo.accounts {
            let Some(account) = self.accounts.get(id) else { continue };
            match prior {
                None => fx.accounts_created.push(*account),
                Some(before) if before != account => {
                    if before.limits != account.limits {
                        fx.limits_updated.push(*account);
                    }
                    fx.accounts_updated.push(*account);
                }
                Some(_) => {}
            }
        }
    }

    /// Checks the books: each currency's balances sum to zero, pending included, and no
    /// account breaks its flags. Returns a description of every violation.
    pub fn check_invariants(&self) -> Vec<String> {
        let mut sums: FxHashMap<Currency, (i128, i128)> = FxHashMap::default();
        let mut violations = Vec::new();
        for account in self.accounts.values() {
            let b = &account.balance;
            let sum = sums.entry(account.currency).or_default();
            sum.0 += i128::from(b.credits_posted) - i128::from(b.debits_posted);
            sum.1 += i128::from(b.credits_pending) - i128::from(b.debits_pending);
            if let Some(problem) = account.flag_violation() {
                violations.push(format!("account {}: {problem}", account.id));
            }
        }
        for (currency, (posted, pending)) in sums {
            if posted != 0 || pending != 0 {
                violations.push(format!("{currency}: posted sum {posted}, pending sum {pending}"));
            }
        }
        violations
    }
}

fn closed_status(state: PendingState) -> Status {
    match state {
        PendingState::Posted => Status::AlreadyPosted,
        PendingState::Voided => Status::AlreadyVoided,
        PendingState::Expired => Status::PendingExpired,
        // An open pending is always in memory; storage saying otherwise is stale.
        PendingState::Open => Status::PendingNotFound,
    }
}

fn window_keys(account: &Account, at: Timestamp) -> [u32; 3] {
    let mut keys = [0; 3];
    for (key, cap) in keys.iter_mut().zip(&account.limits.window_caps) {
        if let Some(cap) = cap {
            *key = cap.window.key(at);
        }
    }
    keys
}

/// The debit account's cap usage after `leg`, or the cap it would break.
fn check_limits(debit: &Account, leg: &Leg, now: Timestamp) -> Result<[WindowUsage; 3], Status> {
    if let Some(cap) = debit.limits.transfer_cap
        && cap.classes & leg.class != 0
        && leg.amount > cap.amount_max
    {
        return Err(Status::ExceedsTransferCap);
    }
    let mut usage = debit.usage;
    for (slot, cap) in usage.iter_mut().zip(&debit.limits.window_caps) {
        let Some(cap) = cap else { continue };
        if cap.classes & leg.class == 0 {
            continue;
        }
        let key = cap.window.key(now);
        let used = if slot.window == key { slot.used } else { 0 };
        let total = used.checked_add(leg.amount).ok_or(Status::Overflow)?;
        if total > cap.amount_max {
            return Err(Status::ExceedsWindowCap);
        }
        *slot = WindowUsage { window: key, used: total };
    }
    Ok(usage)
}

/// Both accounts' balances after `leg`, or the flag or bound it would break.
fn balances_after(
    debit: &Account,
    credit: &Account,
    leg: &Leg,
    pending: bool,
) -> Result<(crate::Balance, crate::Balance), Status> {
    let amount = leg.amount;
    let mut d = debit.balance;
    let mut c = credit.balance;
    let add = |total: i64| total.checked_add(amount).ok_or(Status::Overflow);
    if pending {
        d.debits_pending = add(d.debits_pending)?;
        c.credits_pending = add(c.credits_pending)?;
    } else {
        d.debits_posted = add(d.debits_posted)?;
        c.credits_posted = add(c.credits_posted)?;
    }
    let d_debits = d.debits_posted.checked_add(d.debits_pending).ok_or(Status::Overflow)?;
    let c_credits = c.credits_posted.checked_add(c.credits_pending).ok_or(Status::Overflow)?;
    if debit.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) && d_debits > d.credits_posted
    {
        return Err(Status::InsufficientFunds);
    }
    if credit.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && c_credits > c.debits_posted
    {
        return Err(Status::ExceedsDebits);
    }
    Ok((d, c))
}
