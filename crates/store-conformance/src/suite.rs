//! The cases every backend must pass. A backend's test file implements [`Backend`] and invokes
//! [`crate::conformance_tests!`], which makes one test per case.

use citypay_ledger::{
    AccountFlags, Cap, Currency, Entry, Event, EventId, Leg, Ledger, LedgerConfig, Limits,
    NewAccount, Outcome, PostPending, SetLimits, Status, Timestamp, Transfer, VoidPending, Window, WindowCap,
};
use citypay_store::{
    BatchWrite, JournalSource, LedgerStore, Migration, OnConflict, ServiceReader, ServiceRow,
    StoreError, Value, audit,
};

/// A store the suite can both write and audit.
pub trait TestStore: LedgerStore + JournalSource {}
impl<T: LedgerStore + JournalSource> TestStore for T {}

/// What a backend provides to the suite.
pub trait Backend {
    /// A new, empty database, opened as its writer with the ledger's and `extra` migrations.
    fn fresh(&mut self, extra: &[Migration]) -> Box<dyn TestStore>;
    /// The current database opened again as its writer.
    fn reopen(&mut self, extra: &[Migration]) -> Result<Box<dyn TestStore>, StoreError>;
    /// Runs SQL on the current database through a separate connection (to tamper with it).
    fn execute(&mut self, sql: &str);
    /// Runs a query that returns one integer.
    fn query_i64(&mut self, sql: &str) -> i64;
    /// A service reader of the current database.
    fn reader(&mut self) -> Box<dyn ServiceReader>;
}

/// One conformance case.
pub type Case = fn(&mut dyn Backend);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("round_trip_restores_the_ledger", round_trip_restores_the_ledger),
    ("lookup_answers_for_old_ids", lookup_answers_for_old_ids),
    ("a_wide_batch_round_trips", a_wide_batch_round_trips),
    ("audit_is_clean_and_catches_tampering", audit_is_clean_and_catches_tampering),
    ("service_rows_commit_with_their_batch", service_rows_commit_with_their_batch),
    ("failed_commit_writes_nothing", failed_commit_writes_nothing),
    ("second_writer_is_refused", second_writer_is_refused),
    ("batches_must_follow_in_sequence", batches_must_follow_in_sequence),
    ("newer_schema_is_refused", newer_schema_is_refused),
    ("service_reader_sees_committed_rows", service_reader_sees_committed_rows),
];

/// Runs every case against `backend`, naming each as it goes.
pub fn run_all(backend: &mut dyn Backend) {
    for (name, case) in CASES {
        eprintln!("conformance: {name}");
        case(backend);
    }
}

const NOTES: Migration = Migration {
    component: "conformance",
    version: 1,
    name: "a service table",
    sqlite: "CREATE TABLE conformance_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL, n BIGINT);",
    postgres: "CREATE TABLE conformance_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL, n BIGINT);",
};

/// A ledger and a store driven together, as the shard drives them.
struct Driver {
    ledger: Ledger,
    store: Box<dyn TestStore>,
    batch: u64,
    now: Timestamp,
}

impl Driver {
    fn new(store: Box<dyn TestStore>, recent_ids_max: usize) -> Driver {
        let mut store = store;
        let snapshot = store.load().expect("load");
        let ledger = Ledger::restore(
            LedgerConfig { recent_ids_max },
            snapshot.accounts,
            snapshot.open_pending,
            snapshot.stored_id_max,
            snapshot.last_timestamp,
        );
        let now = Timestamp::from_unix_seconds(1_795_500_000).max(snapshot.last_timestamp);
        Driver { ledger, store, batch: snapshot.last_batch, now }
    }

    fn run(&mut self, events: &[Event], rows: &[ServiceRow]) -> Result<Vec<Outcome>, StoreError> {
        let ids = self.ledger.ids_to_look_up(events);
        let stored = self.store.lookup(&ids)?;
        let fx = self.ledger.apply(events, self.now, &stored);
        let write = BatchWrite { batch: self.batch + 1, effects: &fx, rows };
        match self.store.commit(&write) {
            Ok(()) => {
                let outcomes = fx.outcomes.clone();
                self.ledger.commit(fx);
                self.batch += 1;
                Ok(outcomes)
            }
            Err(error) => {
                self.ledger.rollback(fx);
                Err(error)
            }
        }
    }

    fn statuses(&mut self, events: &[Event]) -> Vec<Status> {
        self.run(events, &[]).expect("commit").iter().map(|o| o.status).collect()
    }
}

fn leg(debit: u64, credit: u64, amount: i64) -> Leg {
    Leg { debit, credit, amount, currency: Currency::CNY, code: 9, class: 1, user_data: 42 }
}

fn transfer(id: EventId, debit: u64, credit: u64, amount: i64) -> Event {
    Event::Transfer(Transfer { id, leg: leg(debit, credit, amount), pending_timeout_s: None })
}

fn pending(id: EventId, debit: u64, credit: u64, amount: i64, timeout_s: u32) -> Event {
    Event::Transfer(Transfer { id, leg: leg(debit, credit, amount), pending_timeout_s: Some(timeout_s) })
}

fn accounts() -> Vec<Event> {
    let wallet_limits = Limits {
        transfer_cap: Some(Cap { classes: 1, amount_max: 100_000 }),
        window_caps: [
            Some(WindowCap { window: Window::Day, classes: 1, amount_max: 500_000 }),
            Some(WindowCap { window: Window::Year, classes: 1, amount_max: 10_000_000 }),
            None,
        ],
    };
    let spec = |id, flags, limits| {
        Event::CreateAccount(NewAccount { id, currency: Currency::CNY, flags, code: 1, limits })
    };
    vec![
        spec(1, AccountFlags::NONE, Limits::NONE),
        spec(2, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS, wallet_limits),
        spec(3, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS, Limits::NONE),
        spec(u64::MAX, AccountFlags::NONE, Limits::NONE),
    ]
}

/// A history with every kind of row: accounts, transfers, an entry, pending transfers that are
/// posted for less, voided, expired and left open, and rejections.
fn write_history(d: &mut Driver) {
    assert!(d.statuses(&accounts()).iter().all(|s| *s == Status::Ok));
    let ok = Status::Ok;
    assert_eq!(d.statuses(&[transfer(10, 1, 2, 50_000), transfer(11, 1, 3, 20_000)]), vec![ok, ok]);
    let entry = Event::Entry(Entry { id: 12, legs: vec![leg(2, 3, 1_000), leg(2, u64::MAX, 30)] });
    assert_eq!(d.statuses(&[entry, transfer(13, 3, 2, 1_000_000)]), vec![ok, Status::InsufficientFunds]);
    let held = [pending(20, 2, 3, 5_000, 0), pending(21, 2, 3, 6_000, 60), pending(22, 3, 1, 700, 3_600)];
    assert_eq!(d.statuses(&held), vec![ok, ok, ok]);
    let post = Event::PostPending(PostPending { id: 23, pending_id: 20, amount: Some(4_000) });
    let void = Event::VoidPending(VoidPending { id: 24, pending_id: 22 });
    assert_eq!(d.statuses(&[post, void]), vec![ok, ok]);
    // Two minutes later pending 21 has expired.
    d.now = d.now.plus_seconds(120);
    let late = Event::PostPending(PostPending { id: 25, pending_id: 21, amount: None });
    let open = pending(26, 3, 1, 100, 0);
    assert_eq!(d.statuses(&[late, open]), vec![Status::PendingExpired, ok]);
    // A wallet's limits raised (its year's usage kept) and an account given limits.
    let raised = Limits {
        transfer_cap: None,
        window_caps: [None, Some(WindowCap { window: Window::Year, classes: 1, amount_max: 20_000_000 }), None],
    };
    let raise = Event::SetLimits(SetLimits { account: 2, limits: raised });
    let capped = Event::SetLimits(SetLimits { account: 3, limits: raised });
    assert_eq!(d.statuses(&[raise, capped]), vec![ok, ok]);
    assert_eq!(d.ledger.account(2).map(|a| a.usage[1].used), Some(1_030 + 4_000));
    assert!(d.ledger.check_invariants().is_empty());
}

fn round_trip_restores_the_ledger(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[]), 1 << 10);
    write_history(&mut d);
    let mut expected: Vec<_> = d.ledger.accounts().copied().collect();
    expected.sort_by_key(|a| a.id);
    let (pending_count, batch, now) = (d.ledger.pending_count(), d.batch, d.now);
    drop(d);
    let mut store = backend.reopen(&[]).expect("reopen");
    let snapshot = store.load().expect("load");
    assert_eq!(snapshot.last_batch, batch);
    assert_eq!(snapshot.last_timestamp, now);
    assert_eq!(snapshot.stored_id_max, 26);
    let mut ids: Vec<_> = snapshot.open_pending.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![26u128], "only pending 26 is still open");
    let mut d = Driver::new(store, 4);
    let mut restored: Vec<_> = d.ledger.accounts().copied().collect();
    restored.sort_by_key(|a| a.id);
    assert_eq!(restored, expected);
    assert_eq!(d.ledger.pending_count(), pending_count);
    // Replays after a restart come from storage and answer the first result.
    let again = d.run(&[transfer(10, 1, 2, 50_000), transfer(13, 3, 2, 1_000_000)], &[]).unwrap();
    assert_eq!(again[0], Outcome { status: Status::Ok, replay: true });
    assert_eq!(again[1], Outcome { status: Status::InsufficientFunds, replay: true });
    let conflict = d.run(&[transfer(10, 1, 2, 50_001)], &[]).unwrap();
    assert_eq!(conflict[0].status, Status::ConflictingReplay);
    let closed = [
        Event::PostPending(PostPending { id: 30, pending_id: 20, amount: None }),
        Event::VoidPending(VoidPending { id: 31, pending_id: 22 }),
        Event::PostPending(PostPending { id: 32, pending_id: 21, amount: None }),
        Event::PostPending(PostPending { id: 33, pending_id: 10, amount: None }),
        Event::PostPending(PostPending { id: 34, pending_id: 26, amount: Some(60) }),
    ];
    let statuses = d.statuses(&closed);
    assert_eq!(
        statuses,
        vec![Status::AlreadyPosted, Status::AlreadyVoided, Status::PendingExpired, Status::NotPending, Status::Ok]
    );
    let report = audit(d.store.as_mut()).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

fn lookup_answers_for_old_ids(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[]), 1 << 10);
    write_history(&mut d);
    let found = d.store.lookup(&[10, 12, 13, 20, 21, 22, 26, 999]).unwrap();
    assert_eq!(found.len(), 7, "{found:?}");
    assert_eq!(found[&10].status, Status::Ok);
    assert_eq!(found[&10].hash, transfer(10, 1, 2, 50_000).body_hash());
    assert_eq!(found[&10].pending_state, None);
    assert_eq!(found[&13].status, Status::InsufficientFunds);
    use citypay_ledger::PendingState;
    assert_eq!(found[&20].pending_state, Some(PendingState::Posted));
    assert_eq!(found[&21].pending_state, Some(PendingState::Expired));
    assert_eq!(found[&22].pending_state, Some(PendingState::Voided));
    assert_eq!(found[&26].pending_state, Some(PendingState::Open));
    assert!(!found.contains_key(&999));
}

/// One batch of more journal rows than a store writes in one statement (stores may write many
/// rows per statement, and the rest one by one): every row's columns survive, whatever kind.
fn a_wide_batch_round_trips(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[]), 1 << 10);
    write_history(&mut d);
    // 101 events, 104 journal rows: transfers, pending transfers with and without a deadline,
    // an entry of three legs, a post and a void, in one batch.
    let mut events = Vec::new();
    for i in 0..90u64 {
        let event = match i % 3 {
            0 => transfer(EventId::from(100 + i), 1, 3, 1 + i as i64),
            1 => pending(EventId::from(100 + i), 1, 3, 1 + i as i64, 3_600),
            _ => pending(EventId::from(100 + i), 1, 3, 1 + i as i64, 0),
        };
        events.push(event);
    }
    events.push(Event::Entry(Entry { id: 300, legs: vec![leg(1, 3, 7), leg(3, 1, 2), leg(1, u64::MAX, 1)] }));
    events.push(Event::PostPending(PostPending { id: 301, pending_id: 101, amount: Some(1) }));
    events.push(Event::VoidPending(VoidPending { id: 302, pending_id: 104 }));
    for i in 0..8u64 {
        events.push(transfer(EventId::from(310 + i), 3, 1, 10));
    }
    assert!(d.statuses(&events).iter().all(|s| *s == Status::Ok));
    let mut expected: Vec<_> = d.ledger.accounts().copied().collect();
    expected.sort_by_key(|a| a.id);
    let open = d.ledger.pending_count();
    drop(d);
    let store = backend.reopen(&[]).expect("reopen");
    let mut d = Driver::new(store, 4);
    let mut restored: Vec<_> = d.ledger.accounts().copied().collect();
    restored.sort_by_key(|a| a.id);
    assert_eq!(restored, expected);
    assert_eq!(d.ledger.pending_count(), open);
    let ids: Vec<EventId> = events.iter().map(|e| e.id()).collect();
    let found = d.store.lookup(&ids).unwrap();
    for event in &events {
        let stored = &found[&event.id()];
        assert_eq!((stored.hash, stored.status), (event.body_hash(), Status::Ok), "event {}", event.id());
    }
    let report = audit(d.store.as_mut()).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

fn audit_is_clean_and_catches_tampering(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[]), 1 << 10);
    write_history(&mut d);
    let report = audit(d.store.as_mut()).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    assert_eq!(report.accounts, 4);
    assert_eq!(report.rejections, 2);
    assert_eq!(report.currency_sums.get("CNY"), Some(&0));
    drop(d);
    backend.execute("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = 3");
    let mut store = backend.reopen(&[]).unwrap();
    let report = audit(store.as_mut()).unwrap();
    assert!(report.violations.iter().any(|v| v.contains("account 3: stored")), "{:?}", report.violations);
    assert!(report.violations.iter().any(|v| v.contains("CNY: balances sum to 1")), "{:?}", report.violations);
    drop(store);
    backend.execute("UPDATE accounts SET credits_posted = credits_posted - 1 WHERE id = 3");
    backend.execute("DELETE FROM transfers WHERE kind = 1 AND amount = 5000");
    let mut store = backend.reopen(&[]).unwrap();
    let report = audit(store.as_mut()).unwrap();
    assert!(report.violations.iter().any(|v| v.contains("missing pending transfer 20")), "{:?}", report.violations);
}

fn note(id: i64, body: &str, on_conflict: OnConflict) -> ServiceRow {
    ServiceRow {
        table: "conformance_notes",
        key: vec![("id", Value::Int(id))],
        columns: vec![("body", Value::Text(body.into())), ("n", Value::Null)],
        on_conflict,
    }
}

fn service_rows_commit_with_their_batch(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[NOTES]), 1 << 10);
    d.run(&accounts(), &[note(1, "first", OnConflict::Fail)]).unwrap();
    d.run(&[transfer(10, 1, 2, 5)], &[note(1, "second", OnConflict::Update), note(2, "x", OnConflict::Ignore)])
        .unwrap();
    d.run(&[transfer(11, 1, 2, 5)], &[note(2, "ignored", OnConflict::Ignore)]).unwrap();
    // A partial update of an existing row, and of a missing one (which stays missing).
    let partial = |id: i64| ServiceRow {
        table: "conformance_notes",
        key: vec![("id", Value::Int(id))],
        columns: vec![("n", Value::Int(5))],
        on_conflict: OnConflict::UpdateOnly,
    };
    d.run(&[transfer(12, 1, 2, 5)], &[partial(2), partial(77)]).unwrap();
    drop(d);
    assert_eq!(backend.query_i64("SELECT n FROM conformance_notes WHERE id = 2"), 5);
    assert_eq!(backend.query_i64("SELECT count(*) FROM conformance_notes WHERE id = 77"), 0);
    assert_eq!(backend.query_i64("SELECT count(*) FROM conformance_notes"), 2);
    assert_eq!(backend.query_i64("SELECT count(*) FROM conformance_notes WHERE body = 'second'"), 1);
    assert_eq!(backend.query_i64("SELECT count(*) FROM conformance_notes WHERE body = 'x'"), 1);
    // The migration is applied once: opening again with it is fine.
    drop(backend.reopen(&[NOTES]).unwrap());
    assert_eq!(backend.query_i64("SELECT count(*) FROM schema_migrations WHERE component = 'conformance'"), 1);
}

fn failed_commit_writes_nothing(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[NOTES]), 1 << 10);
    d.run(&accounts(), &[note(1, "first", OnConflict::Fail)]).unwrap();
    d.run(&[transfer(10, 1, 2, 5)], &[]).unwrap();
    let before: Vec<_> = d.ledger.accounts().copied().collect();
    // A duplicate key in a service row fails the whole batch, transfers included.
    let failed = d.run(&[transfer(11, 1, 2, 7), transfer(12, 2, 3, 1)], &[note(1, "again", OnConflict::Fail)]);
    assert!(failed.is_err());
    let after: Vec<_> = d.ledger.accounts().copied().collect();
    assert_eq!(before, after, "memory rolled back");
    drop(d);
    assert_eq!(backend.query_i64("SELECT count(*) FROM transfers"), 1);
    assert_eq!(backend.query_i64("SELECT last_batch FROM ledger_meta"), 2);
    assert_eq!(backend.query_i64("SELECT credits_posted FROM accounts WHERE id = 2"), 5);
    let mut store = backend.reopen(&[NOTES]).unwrap();
    assert!(audit(store.as_mut()).unwrap().is_clean());
    // The same ids go through once the conflict is gone.
    let mut d = Driver::new(store, 1 << 10);
    let statuses = d.statuses(&[transfer(11, 1, 2, 7), transfer(12, 2, 3, 1)]);
    assert_eq!(statuses, vec![Status::Ok, Status::Ok]);
}

fn second_writer_is_refused(backend: &mut dyn Backend) {
    let first = backend.fresh(&[]);
    match backend.reopen(&[]) {
        Err(StoreError::Locked { holder }) => assert!(holder.contains("pid"), "holder named: {holder}"),
        Err(other) => panic!("expected a lock error, got {other}"),
        Ok(_) => panic!("a second writer opened the same database"),
    }
    drop(first);
    drop(backend.reopen(&[]).expect("the lock is released with the first writer"));
}

fn batches_must_follow_in_sequence(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[]), 1 << 10);
    d.run(&accounts(), &[]).unwrap();
    d.batch += 5;
    assert!(d.run(&[transfer(10, 1, 2, 5)], &[]).is_err(), "a gap in batch numbers is refused");
    d.batch -= 5;
    assert_eq!(d.statuses(&[transfer(10, 1, 2, 5)]), vec![Status::Ok]);
}

fn newer_schema_is_refused(backend: &mut dyn Backend) {
    drop(backend.fresh(&[]));
    backend.execute("INSERT INTO schema_migrations (component, version, name) VALUES ('ledger', 99, 'future')");
    match backend.reopen(&[]) {
        Err(StoreError::SchemaTooNew { found: 99, .. }) => {}
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("opened a database from the future"),
    }
}

fn service_reader_sees_committed_rows(backend: &mut dyn Backend) {
    let mut d = Driver::new(backend.fresh(&[NOTES]), 1 << 10);
    let reader = backend.reader();
    d.run(&accounts(), &[note(1, "first", OnConflict::Fail), note(2, "second", OnConflict::Fail)]).unwrap();
    let mut blob_row = note(3, "\u{4e2d}\u{6587} it's", OnConflict::Fail);
    blob_row.columns[1] = ("n", Value::Int(-7));
    d.run(&[transfer(10, 1, 2, 5)], &[blob_row]).unwrap();
    let rows = reader
        .query("SELECT id, body, n FROM conformance_notes WHERE id >= ?1 AND body <> ?2 ORDER BY id", &[Value::Int(2), Value::Text("?1".into())])
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(2), Value::Text("second".into()), Value::Null],
            vec![Value::Int(3), Value::Text("\u{4e2d}\u{6587} it's".into()), Value::Int(-7)],
        ]
    );
    // A placeholder used twice, a NULL parameter, a literal with a question mark, bytes.
    let rows = reader
        .query("SELECT count(*) FROM conformance_notes WHERE (id = ?1 OR id = ?1 + 1) AND n IS NULL AND ?2 IS NULL AND body <> '?'", &[Value::Int(1), Value::Null])
        .unwrap();
    assert_eq!(rows, vec![vec![Value::Int(2)]]);
    let rows = reader.query("SELECT id FROM transfers WHERE id = ?1", &[Value::Blob(citypay_store::id_to_bytes(10).to_vec())]).unwrap();
    assert_eq!(rows, vec![vec![Value::Blob(citypay_store::id_to_bytes(10).to_vec())]]);
    // A bad query is an error, not a panic.
    assert!(reader.query("SELECT nothing FROM nowhere", &[]).is_err());
    // The writer reads single rows for guards.
    let row = d.store.read_row("conformance_notes", &[("id", Value::Int(3))], &["n", "body"]).unwrap();
    assert_eq!(row, Some(vec![Value::Int(-7), Value::Text("\u{4e2d}\u{6587} it's".into())]));
    assert_eq!(d.store.read_row("conformance_notes", &[("id", Value::Int(9))], &["n"]).unwrap(), None);
    assert_eq!(d.store.read_row("conformance_notes", &[("id", Value::Int(1))], &[]).unwrap(), Some(vec![Value::Int(1)]));
}
