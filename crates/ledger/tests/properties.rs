//! Property tests: random batches of events against the ledger, with an independent model of
//! what the books must look like. Small id windows force the storage-lookup path, and random
//! commit failures exercise rollback.

use std::collections::HashMap;

use citypay_ledger::{
    Account, AccountFlags, Cap, CarryUsage, Currency, Effects, Entry, Event, EventId, JournalKind, Leg, Ledger,
    LedgerConfig, Limits, NewAccount, PendingState, PostPending, SetLimits, Status, StoredEvent, Timestamp,
    Transfer, VoidPending, Window, WindowCap, WindowUsage,
};
use proptest::prelude::*;
use rustc_hash::FxHashMap;

const CLASS_PAYMENT: u8 = 1;
const CLASS_TOP_UP: u8 = 2;

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

/// Accounts 1..=5 exist from the start; 6 can be created by an event; 7 never exists.
fn initial_accounts() -> Vec<NewAccount> {
    let capped = Limits {
        transfer_cap: Some(Cap { classes: CLASS_PAYMENT, amount_max: 500 }),
        window_caps: [
            Some(WindowCap { window: Window::Day, classes: CLASS_PAYMENT, amount_max: 1_000 }),
            Some(WindowCap { window: Window::Year, classes: CLASS_PAYMENT, amount_max: 3_000 }),
            Some(WindowCap { window: Window::Lifetime, classes: CLASS_TOP_UP, amount_max: 9_000 }),
        ],
    };
    let wallet = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    vec![
        new_account(1, Currency::CNY, AccountFlags::NONE, Limits::NONE),
        new_account(2, Currency::CNY, wallet, capped),
        new_account(3, Currency::CNY, wallet, Limits::NONE),
        new_account(4, Currency::CNY, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS, Limits::NONE),
        new_account(5, usd(), AccountFlags::NONE, Limits::NONE),
    ]
}

fn new_account(id: u64, currency: Currency, flags: AccountFlags, limits: Limits) -> NewAccount {
    NewAccount { id, currency, flags, code: 1, limits }
}

#[derive(Clone, Debug)]
enum Op {
    Transfer { id: u8, debit: u8, credit: u8, amount: i64, usd: bool, class: u8, pending: Option<u32> },
    Entry { id: u8, legs: Vec<(u8, u8, i64)> },
    Post { id: u8, pending: u8, amount: Option<i64> },
    Void { id: u8, pending: u8 },
    CreateSix { usd: bool },
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 1i64..700,
        1 => -5i64..=0,
        1 => Just(i64::MAX - 3),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let account = 1u8..=7;
    // Below 200: a fresh id; otherwise reuse an earlier id (a replay or a conflict).
    let id = 0u8..=255;
    prop_oneof![
        6 => (id.clone(), prop_oneof![2 => Just(2u8), 3 => 1u8..=7], account.clone(), amount(), prop::bool::weighted(0.1),
              0u8..4, prop::option::weighted(0.3, prop_oneof![Just(0u32), 1u32..7200]))
            .prop_map(|(id, debit, credit, amount, usd, class, pending)| Op::Transfer {
                id, debit, credit, amount, usd, class, pending
            }),
        2 => (id.clone(), prop::collection::vec((account.clone(), account.clone(), amount()), 0..4))
            .prop_map(|(id, legs)| Op::Entry { id, legs }),
        3 => (id.clone(), id.clone(), prop::option::of(amount()))
            .prop_map(|(id, pending, amount)| Op::Post { id, pending, amount }),
        1 => (id.clone(), id).prop_map(|(id, pending)| Op::Void { id, pending }),
        1 => prop::bool::ANY.prop_map(|usd| Op::CreateSix { usd }),
    ]
}

/// Turns generated choices into ids: fresh ids grow like time-ordered ones; a reuse picks an
/// id seen before, so replays, conflicts and posts of real pending transfers happen often.
#[derive(Default)]
struct Ids {
    used: Vec<EventId>,
    next: EventId,
}

impl Ids {
    fn event(&mut self, choice: u8) -> EventId {
        if choice < 200 || self.used.is_empty() {
            self.next += 1;
            self.used.push(self.next);
            self.next
        } else {
            self.used[usize::from(choice) % self.used.len()]
        }
    }

    fn target(&self, choice: u8) -> EventId {
        if self.used.is_empty() { 9_999 } else { self.used[usize::from(choice) % self.used.len()] }
    }
}

fn to_event(op: &Op, ids: &mut Ids) -> Event {
    let leg = |debit: u8, credit: u8, amount: i64, usd_leg: bool, class: u8| Leg {
        debit: u64::from(debit),
        credit: u64::from(credit),
        amount,
        currency: if usd_leg { usd() } else { Currency::CNY },
        code: 7,
        class,
        user_data: 0,
    };
    match op.clone() {
        Op::Transfer { id, debit, credit, amount, usd, class, pending } => Event::Transfer(Transfer {
            id: ids.event(id),
            leg: leg(debit, credit, amount, usd, class),
            pending_timeout_s: pending,
        }),
        Op::Entry { id, legs } => Event::Entry(Entry {
            id: ids.event(id),
            legs: legs.into_iter().map(|(d, c, a)| leg(d, c, a, false, CLASS_PAYMENT)).collect(),
        }),
        Op::Post { id, pending, amount } => Event::PostPending(PostPending {
            pending_id: ids.target(pending),
            id: ids.event(id),
            amount,
        }),
        Op::Void { id, pending } => Event::VoidPending(VoidPending {
            pending_id: ids.target(pending),
            id: ids.event(id),
        }),
        Op::CreateSix { usd: u } => Event::CreateAccount(new_account(
            6,
            if u { usd() } else { Currency::CNY },
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            Limits::NONE,
        )),
    }
}

/// What a store would hold: enough to answer the ledger's lookups and to recheck the caps.
#[derive(Default)]
struct FakeStore {
    events: FxHashMap<EventId, StoredEvent>,
    journal: Vec<citypay_ledger::JournalRow>,
    pending_state: HashMap<EventId, PendingState>,
}

impl FakeStore {
    fn persist(&mut self, fx: &Effects) {
        for row in &fx.journal {
            if row.leg_index == 0 {
                let pending_state = (row.kind == JournalKind::Pending).then_some(PendingState::Open);
                self.events.insert(row.id, StoredEvent { hash: row.hash, status: Status::Ok, pending_state });
            }
            if row.kind == JournalKind::Pending {
                self.pending_state.insert(row.id, PendingState::Open);
            }
            self.journal.push(*row);
        }
        for update in &fx.pending_updates {
            self.pending_state.insert(update.pending_id, update.state);
            self.events.get_mut(&update.pending_id).unwrap().pending_state = Some(update.state);
        }
        for r in &fx.rejections {
            self.events.insert(r.id, StoredEvent { hash: r.hash, status: r.status, pending_state: None });
        }
    }

    fn answer(&self, ids: &[EventId]) -> FxHashMap<EventId, StoredEvent> {
        ids.iter().filter_map(|id| self.events.get(id).map(|e| (*id, *e))).collect()
    }

    /// Sum of class-matching debits from `account` per window key, counted independently of
    /// the ledger's own usage counters.
    fn window_sums(&self, account: u64, cap: &WindowCap) -> HashMap<u32, i64> {
        let mut sums = HashMap::new();
        let mut created: HashMap<EventId, (u32, i64)> = HashMap::new();
        for row in &self.journal {
            if row.leg.debit != account || row.leg.class & cap.classes == 0 {
                continue;
            }
            let key = cap.window.key(row.timestamp);
            match row.kind {
                JournalKind::Posted => *sums.entry(key).or_insert(0) += row.leg.amount,
                JournalKind::Pending => {
                    created.insert(row.id, (key, row.leg.amount));
                    if self.pending_state[&row.id] == PendingState::Open {
                        *sums.entry(key).or_insert(0) += row.leg.amount;
                    }
                }
                JournalKind::PostPending => {
                    let (key, _) = created[&row.pending_id];
                    *sums.entry(key).or_insert(0) += row.leg.amount;
                }
                JournalKind::VoidPending => {}
            }
        }
        sums
    }
}

fn snapshot(ledger: &Ledger) -> Vec<Account> {
    let mut accounts: Vec<Account> = ledger.accounts().copied().collect();
    accounts.sort_by_key(|a| a.id);
    accounts
}

/// 2026-12-31T15:00:00Z: an hour before new year's midnight in Shanghai.
const START_S: u64 = 1_798_729_200;

fn time_step() -> impl Strategy<Value = u64> {
    prop_oneof![4 => Just(0u64), 1 => Just(1), 1 => Just(60), 1 => Just(1_800), 1 => Just(3_600), 1 => Just(21_600), 1 => Just(86_400)]
}

#[derive(Clone, Debug)]
struct Batch {
    ops: Vec<Op>,
    step_s: u64,
    commit_fails: bool,
    one_by_one: bool,
}

fn batch() -> impl Strategy<Value = Batch> {
    (prop::collection::vec(op(), 0..10), time_step(), prop::bool::weighted(0.15), prop::bool::weighted(0.3))
        .prop_map(|(ops, step_s, commit_fails, one_by_one)| Batch { ops, step_s, commit_fails, one_by_one })
}

struct Harness {
    ledger: Ledger,
    store: FakeStore,
    /// Model of idempotency: id -> (body hash, first status) of committed events.
    first: HashMap<EventId, (u64, Status)>,
    now: Timestamp,
    ids: Ids,
}

impl Harness {
    fn new(recent_ids_max: usize) -> Harness {
        let mut h = Harness {
            ledger: Ledger::new(LedgerConfig { recent_ids_max }),
            store: FakeStore::default(),
            first: HashMap::new(),
            now: Timestamp::from_unix_seconds(START_S),
            ids: Ids { used: Vec::new(), next: 2_000 },
        };
        let events: Vec<Event> = initial_accounts().into_iter().map(Event::CreateAccount).collect();
        let fx = h.ledger.apply(&events, h.now, &FxHashMap::default());
        assert!(fx.outcomes.iter().all(|o| o.status == Status::Ok));
        h.store.persist(&fx);
        h.ledger.commit(fx);
        // Fund the wallets from the custody account.
        let funding = Event::Entry(Entry {
            id: 1_000,
            legs: vec![
                Leg { debit: 1, credit: 2, amount: 5_000, currency: Currency::CNY, code: 1, class: 0, user_data: 0 },
                Leg { debit: 1, credit: 3, amount: 5_000, currency: Currency::CNY, code: 1, class: 0, user_data: 0 },
                Leg { debit: 1, credit: 4, amount: 1, currency: Currency::CNY, code: 1, class: 0, user_data: 0 },
            ],
        });
        let fx = h.ledger.apply(&[funding], h.now, &FxHashMap::default());
        assert_eq!(fx.outcomes[0].status, Status::ExceedsDebits, "4 may not hold more credits than debits");
        h.ledger.rollback(fx);
        let funding = Event::Entry(Entry {
            id: 1_001,
            legs: vec![
                Leg { debit: 1, credit: 2, amount: 5_000, currency: Currency::CNY, code: 1, class: 0, user_data: 0 },
                Leg { debit: 1, credit: 3, amount: 5_000, currency: Currency::CNY, code: 1, class: 0, user_data: 0 },
                Leg { debit: 4, credit: 1, amount: 2_000, currency: Currency::CNY, code: 1, class: 0, user_data: 0 },
            ],
        });
        let fx = h.ledger.apply(&[funding], h.now, &FxHashMap::default());
        assert_eq!(fx.outcomes[0].status, Status::Ok);
        h.store.persist(&fx);
        h.ledger.commit(fx);
        h
    }

    fn run(&mut self, batch: &Batch) -> Result<(), TestCaseError> {
        self.now = self.now.plus_seconds(batch.step_s);
        let events: Vec<Event> = batch.ops.iter().map(|op| to_event(op, &mut self.ids)).collect();
        if batch.one_by_one {
            // Expire what is due first, so each single-event batch below changes only what
            // its own event changes.
            self.apply(&[], batch.commit_fails)?;
            for event in &events {
                let before = snapshot(&self.ledger);
                let fx = self.apply(std::slice::from_ref(event), batch.commit_fails)?;
                let outcome = fx[0];
                if outcome.status != Status::Ok || outcome.replay || batch.commit_fails {
                    prop_assert_eq!(&before, &snapshot(&self.ledger), "{:?} moved money", outcome);
                }
            }
        } else {
            self.apply(&events, batch.commit_fails)?;
        }
        Ok(())
    }

    fn apply(&mut self, events: &[Event], fail: bool) -> Result<Vec<citypay_ledger::Outcome>, TestCaseError> {
        let before = snapshot(&self.ledger);
        let pending_before = self.ledger.pending_count();
        let ids = self.ledger.ids_to_look_up(events);
        let stored = self.store.answer(&ids);
        let fx = self.ledger.apply(events, self.now, &stored);
        // The model's expectation for every id it has seen committed.
        let mut tentative = self.first.clone();
        for (event, outcome) in events.iter().zip(&fx.outcomes) {
            if matches!(event, Event::CreateAccount(_) | Event::SetLimits(_) | Event::CarryUsage(_)) || outcome.status == Status::BatchTooLarge {
                continue;
            }
            let hash = event.body_hash();
            match tentative.get(&event.id()) {
                Some(&(first_hash, first_status)) if first_hash == hash => {
                    prop_assert!(outcome.replay, "{:?} should be a replay", event);
                    prop_assert_eq!(outcome.status, first_status);
                }
                Some(_) => prop_assert_eq!(outcome.status, Status::ConflictingReplay),
                None => {
                    prop_assert!(!outcome.replay);
                    tentative.insert(event.id(), (hash, outcome.status));
                }
            }
        }
        let outcomes = fx.outcomes.clone();
        if fail {
            self.ledger.rollback(fx);
            prop_assert_eq!(before, snapshot(&self.ledger), "rollback must restore every account");
            prop_assert_eq!(pending_before, self.ledger.pending_count());
        } else {
            self.check_effects(&fx)?;
            self.store.persist(&fx);
            self.ledger.commit(fx);
            self.first = tentative;
        }
        let violations = self.ledger.check_invariants();
        prop_assert!(violations.is_empty(), "{:?}", violations);
        self.check_caps()?;
        Ok(outcomes)
    }

    /// The effects carry each touched account once, and the rows balance per currency.
    fn check_effects(&self, fx: &Effects) -> Result<(), TestCaseError> {
        let mut ids: Vec<u64> = fx.accounts_updated.iter().chain(&fx.accounts_created).map(|a| a.id).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(n, ids.len(), "an account is written once per batch");
        for account in fx.accounts_updated.iter().chain(&fx.accounts_created) {
            prop_assert_eq!(Some(account), self.ledger.account(account.id));
        }
        Ok(())
    }

    fn check_caps(&self) -> Result<(), TestCaseError> {
        for account in self.ledger.accounts() {
            for cap in account.limits.window_caps.iter().flatten() {
                for (key, sum) in self.store.window_sums(account.id, cap) {
                    prop_assert!(sum <= cap.amount_max, "account {} window {key}: {sum} > {cap:?}", account.id);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_keep_the_books(batches in prop::collection::vec(batch(), 1..25), window in prop_oneof![Just(2usize), Just(1 << 20)]) {
        let mut h = Harness::new(window);
        for batch in &batches {
            h.run(batch)?;
        }
        // Restoring from the store's view gives the same ledger.
        let open: Vec<_> = h.store.pending_state.iter().filter(|(_, s)| **s == PendingState::Open).map(|(id, _)| *id).collect();
        prop_assert_eq!(open.len(), h.ledger.pending_count());
    }
}

fn cny_leg(debit: u64, credit: u64, amount: i64, class: u8) -> Leg {
    Leg { debit, credit, amount, currency: Currency::CNY, code: 1, class, user_data: 0 }
}

fn apply_one(h: &mut Harness, event: Event) -> Status {
    let fx = h.apply(&[event], false).unwrap();
    fx[0].status
}

#[test]
fn day_cap_rolls_over_at_local_midnight_and_year_cap_at_new_year() {
    let mut h = Harness::new(1 << 20);
    // 15:00Z on 31 Dec is 23:00 in Shanghai. Spend the day cap (1,000) in two payments.
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 1, leg: cny_leg(2, 1, 500, CLASS_PAYMENT), pending_timeout_s: None })), Status::Ok);
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 2, leg: cny_leg(2, 1, 500, CLASS_PAYMENT), pending_timeout_s: None })), Status::Ok);
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 3, leg: cny_leg(2, 1, 1, CLASS_PAYMENT), pending_timeout_s: None })), Status::ExceedsWindowCap);
    // A top-up-class debit is not a payment: the payment caps do not count it.
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 4, leg: cny_leg(2, 1, 600, CLASS_TOP_UP), pending_timeout_s: None })), Status::Ok);
    // Above the per-transfer cap.
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 5, leg: cny_leg(2, 1, 501, CLASS_PAYMENT), pending_timeout_s: None })), Status::ExceedsTransferCap);
    // 15:59:59Z is still the same local day.
    h.now = Timestamp::from_unix_seconds(START_S + 3_599);
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 6, leg: cny_leg(2, 1, 1, CLASS_PAYMENT), pending_timeout_s: None })), Status::ExceedsWindowCap);
    // 16:00:00Z is midnight, 1 January, in Shanghai: a new day and a new year.
    h.now = Timestamp::from_unix_seconds(START_S + 3_600);
    for id in 7..9 {
        assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id, leg: cny_leg(2, 1, 500, CLASS_PAYMENT), pending_timeout_s: None })), Status::Ok);
    }
    // The next days spend the year cap (3,000): 1,000 on 1 Jan, 1,000 on 2 Jan, 1,000 on 3 Jan.
    h.now = h.now.plus_seconds(86_400);
    for id in 9..11 {
        assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id, leg: cny_leg(2, 1, 500, CLASS_PAYMENT), pending_timeout_s: None })), Status::Ok);
    }
    h.now = h.now.plus_seconds(86_400);
    // A pending payment counts against the year cap until it is voided.
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 11, leg: cny_leg(2, 1, 500, CLASS_PAYMENT), pending_timeout_s: Some(60) })), Status::Ok);
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 12, leg: cny_leg(2, 1, 500, CLASS_PAYMENT), pending_timeout_s: None })), Status::Ok);
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 13, leg: cny_leg(2, 1, 1, CLASS_PAYMENT), pending_timeout_s: None })), Status::ExceedsWindowCap);
    assert_eq!(apply_one(&mut h, Event::VoidPending(VoidPending { id: 14, pending_id: 11 })), Status::Ok);
    assert_eq!(apply_one(&mut h, Event::Transfer(Transfer { id: 15, leg: cny_leg(2, 1, 1, CLASS_PAYMENT), pending_timeout_s: None })), Status::Ok);
    assert_eq!(apply_one(&mut h, Event::VoidPending(VoidPending { id: 16, pending_id: 11 })), Status::AlreadyVoided);
}

#[test]
fn raised_limits_keep_the_usage_of_windows_they_keep() {
    let mut h = Harness::new(1 << 20);
    let pay = |id, amount| Event::Transfer(Transfer { id, leg: cny_leg(2, 1, amount, CLASS_PAYMENT), pending_timeout_s: None });
    assert_eq!(apply_one(&mut h, pay(1, 500)), Status::Ok);
    assert_eq!(apply_one(&mut h, pay(2, 500)), Status::Ok);
    assert_eq!(apply_one(&mut h, pay(3, 1)), Status::ExceedsWindowCap);
    // The day cap doubles and the year cap is dropped: the day's 1,000 still count.
    let raised = Limits {
        transfer_cap: None,
        window_caps: [Some(WindowCap { window: Window::Day, classes: CLASS_PAYMENT, amount_max: 2_000 }), None, None],
    };
    let set = Event::SetLimits(SetLimits { account: 2, limits: raised });
    let fx = h.apply(std::slice::from_ref(&set), false).unwrap();
    assert_eq!(fx[0], citypay_ledger::Outcome { status: Status::Ok, replay: false });
    assert_eq!(h.ledger.account(2).unwrap().usage[0].used, 1_000);
    assert_eq!(h.ledger.account(2).unwrap().usage[1].used, 0);
    assert_eq!(h.apply(&[set], false).unwrap()[0], citypay_ledger::Outcome { status: Status::Ok, replay: true });
    assert_eq!(apply_one(&mut h, pay(4, 1_000)), Status::Ok);
    assert_eq!(apply_one(&mut h, pay(5, 1)), Status::ExceedsWindowCap);
    // A failed commit restores the old limits; unknown accounts and invalid limits are refused.
    let lower = Limits { transfer_cap: None, window_caps: [Some(WindowCap { window: Window::Day, classes: CLASS_PAYMENT, amount_max: 10 }), None, None] };
    h.apply(&[Event::SetLimits(SetLimits { account: 2, limits: lower })], true).unwrap();
    assert_eq!(h.ledger.account(2).unwrap().limits, raised);
    assert_eq!(apply_one(&mut h, Event::SetLimits(SetLimits { account: 7, limits: raised })), Status::AccountNotFound);
    let invalid = Limits { transfer_cap: Some(Cap { classes: 0, amount_max: 1 }), window_caps: [None; 3] };
    assert_eq!(apply_one(&mut h, Event::SetLimits(SetLimits { account: 2, limits: invalid })), Status::InvalidAccount);
    // A cap that moves to another slot keeps its usage (a wallet's year cap moving behind a
    // new day cap must not open a fresh year).
    let moved = Limits { transfer_cap: None, window_caps: [None, Some(WindowCap { window: Window::Day, classes: CLASS_PAYMENT, amount_max: 3_000 }), None] };
    assert_eq!(apply_one(&mut h, Event::SetLimits(SetLimits { account: 2, limits: moved })), Status::Ok);
    assert_eq!(h.ledger.account(2).unwrap().usage[1].used, 2_000);
    assert_eq!(h.ledger.account(2).unwrap().usage[0].used, 0);
    assert_eq!(apply_one(&mut h, pay(6, 1_001)), Status::ExceedsWindowCap);
}

#[test]
fn carried_usage_counts_against_the_caps_of_an_account_that_moved() {
    let pay = |id, amount| Event::Transfer(Transfer { id, leg: cny_leg(2, 1, amount, CLASS_PAYMENT), pending_timeout_s: None });
    let mut there = Harness::new(1 << 20);
    assert_eq!(apply_one(&mut there, pay(1, 500)), Status::Ok);
    let used = there.ledger.account(2).unwrap().usage;
    // The same account on another ledger: what it used there counts here, once.
    let mut here = Harness::new(1 << 20);
    let carry = Event::CarryUsage(CarryUsage { account: 2, usage: used });
    assert_eq!(here.apply(std::slice::from_ref(&carry), false).unwrap()[0], citypay_ledger::Outcome { status: Status::Ok, replay: false });
    assert_eq!(here.apply(std::slice::from_ref(&carry), false).unwrap()[0], citypay_ledger::Outcome { status: Status::Ok, replay: true });
    assert_eq!(here.ledger.account(2).unwrap().usage, used);
    assert_eq!(apply_one(&mut here, pay(2, 500)), Status::Ok);
    assert_eq!(apply_one(&mut here, pay(3, 1)), Status::ExceedsWindowCap, "the day's 1,000 are spent over both ledgers");
    // An older window, or less of the same, changes nothing; a failed commit undoes a carry.
    let mut older = used;
    older[0] = WindowUsage { window: used[0].window - 1, used: 10_000 };
    older[1].used = 0;
    assert_eq!(here.apply(&[Event::CarryUsage(CarryUsage { account: 2, usage: older })], false).unwrap()[0].replay, true);
    let mut other = Harness::new(1 << 20);
    other.apply(std::slice::from_ref(&carry), true).unwrap();
    assert_eq!(other.ledger.account(2).unwrap().usage, [WindowUsage::default(); 3]);
    // Unknown accounts and negative usage are refused.
    assert_eq!(apply_one(&mut here, Event::CarryUsage(CarryUsage { account: 7, usage: used })), Status::AccountNotFound);
    let mut negative = used;
    negative[0].used = -1;
    negative[0].window += 1;
    assert_eq!(apply_one(&mut here, Event::CarryUsage(CarryUsage { account: 2, usage: negative })), Status::InvalidAccount);
}

#[test]
fn pending_transfers_post_for_less_void_and_expire() {
    let mut h = Harness::new(4);
    let pending = |id, amount, timeout| Event::Transfer(Transfer { id, leg: cny_leg(3, 1, amount, 0), pending_timeout_s: Some(timeout) });
    assert_eq!(apply_one(&mut h, pending(1, 4_000, 60)), Status::Ok);
    assert_eq!(h.ledger.account(3).unwrap().balance.available(), 1_000);
    // Pending debits count against the balance.
    assert_eq!(apply_one(&mut h, pending(2, 1_001, 60)), Status::InsufficientFunds);
    assert_eq!(apply_one(&mut h, Event::PostPending(PostPending { id: 3, pending_id: 1, amount: Some(4_001) })), Status::PostExceedsPending);
    assert_eq!(apply_one(&mut h, Event::PostPending(PostPending { id: 4, pending_id: 1, amount: Some(2_500) })), Status::Ok);
    assert_eq!(h.ledger.account(3).unwrap().balance.net_posted(), 2_500);
    assert_eq!(h.ledger.account(3).unwrap().balance.debits_pending, 0);
    assert_eq!(apply_one(&mut h, Event::PostPending(PostPending { id: 5, pending_id: 1, amount: None })), Status::AlreadyPosted);
    assert_eq!(apply_one(&mut h, Event::VoidPending(VoidPending { id: 6, pending_id: 1 })), Status::AlreadyPosted);
    assert_eq!(apply_one(&mut h, Event::VoidPending(VoidPending { id: 7, pending_id: 99 })), Status::PendingNotFound);
    // A posted (not pending) transfer cannot be posted again.
    assert_eq!(apply_one(&mut h, Event::PostPending(PostPending { id: 8, pending_id: 1_001, amount: None })), Status::NotPending);
    // Expiry: the ledger releases the reservation once the deadline passes.
    assert_eq!(apply_one(&mut h, pending(9, 2_000, 60)), Status::Ok);
    assert_eq!(h.ledger.next_deadline(), Some(h.now.plus_seconds(60)));
    h.now = h.now.plus_seconds(60);
    h.apply(&[], false).unwrap();
    assert_eq!(h.ledger.account(3).unwrap().balance.debits_pending, 0);
    assert_eq!(apply_one(&mut h, Event::PostPending(PostPending { id: 10, pending_id: 9, amount: None })), Status::PendingExpired);
    // Replays answer the first result, even from storage (the window holds only 4 ids).
    for _ in 0..8 {
        h.apply(&[], false).unwrap();
    }
    let fx = h.apply(&[Event::PostPending(PostPending { id: 4, pending_id: 1, amount: Some(2_500) })], false).unwrap();
    assert!(fx[0].replay);
    assert_eq!(fx[0].status, Status::Ok);
    let fx = h.apply(&[Event::PostPending(PostPending { id: 4, pending_id: 1, amount: Some(2_400) })], false).unwrap();
    assert_eq!(fx[0].status, Status::ConflictingReplay);
    let fx = h.apply(&[pending(2, 1_001, 60)], false).unwrap();
    assert_eq!((fx[0].status, fx[0].replay), (Status::InsufficientFunds, true));
}

#[test]
fn bad_input_gets_a_status() {
    let mut h = Harness::new(16);
    let t = |id, leg| Event::Transfer(Transfer { id, leg, pending_timeout_s: None });
    assert_eq!(apply_one(&mut h, t(1, cny_leg(3, 1, 0, 0))), Status::InvalidAmount);
    assert_eq!(apply_one(&mut h, t(2, cny_leg(3, 1, -5, 0))), Status::InvalidAmount);
    assert_eq!(apply_one(&mut h, t(3, cny_leg(3, 3, 5, 0))), Status::SameAccount);
    assert_eq!(apply_one(&mut h, t(4, cny_leg(3, 77, 5, 0))), Status::AccountNotFound);
    assert_eq!(apply_one(&mut h, t(5, cny_leg(3, 5, 5, 0))), Status::CurrencyMismatch);
    assert_eq!(apply_one(&mut h, t(6, cny_leg(1, 3, i64::MAX - 20_000, 0))), Status::Ok);
    assert_eq!(apply_one(&mut h, t(7, cny_leg(1, 3, 20_000, 0))), Status::Overflow);
    assert_eq!(apply_one(&mut h, t(0, cny_leg(1, 3, 1, 0))), Status::InvalidId);
    assert_eq!(apply_one(&mut h, Event::Entry(Entry { id: 8, legs: vec![] })), Status::InvalidEntry);
    let too_many = vec![cny_leg(1, 3, 1, 0); citypay_ledger::limits::ENTRY_LEGS_MAX + 1];
    assert_eq!(apply_one(&mut h, Event::Entry(Entry { id: 9, legs: too_many })), Status::InvalidEntry);
    let both_flags = AccountFlags(3);
    assert_eq!(apply_one(&mut h, Event::CreateAccount(new_account(9, Currency::CNY, both_flags, Limits::NONE))), Status::InvalidAccount);
    assert_eq!(apply_one(&mut h, Event::CreateAccount(new_account(1, usd(), AccountFlags::NONE, Limits::NONE))), Status::ConflictingReplay);
    assert_eq!(apply_one(&mut h, Event::CreateAccount(initial_accounts()[0])), Status::Ok);
    let before = snapshot(&h.ledger);
    let oversized = vec![t(10, cny_leg(1, 3, 1, 0)); citypay_ledger::limits::BATCH_EVENTS_MAX + 1];
    let outcomes = h.apply(&oversized, false).unwrap();
    assert!(outcomes.iter().all(|o| o.status == Status::BatchTooLarge));
    assert_eq!(before, snapshot(&h.ledger), "an oversized batch changes nothing");
}
