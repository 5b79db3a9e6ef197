//! The writer end to end on the embedded store: concurrent clients, durability across a
//! restart, injected commit failures, service rows, expiry and the one-writer rule.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use citypay_ledger::{
    AccountFlags, Currency, Event, EventId, Leg, Limits, NewAccount, Status, Transfer,
};
use citypay_shard::{Command, Guard, Shard, ShardConfig, SubmitError, SystemClock};
use citypay_store::{Migration, OnConflict, ServiceRow, StoreError, Value, audit};
use citypay_store_conformance::{CommitFault, FaultyStore};
use citypay_store_sqlite::SqliteStore;

const CUSTODY: u64 = 1;
const WALLETS: u64 = 20;

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open_writer(path, &[NOTES]).unwrap()
}

fn config() -> ShardConfig {
    ShardConfig { batch_max: 64, queue_max: 256, ..ShardConfig::DEFAULT }
}

fn account(id: u64, flags: AccountFlags) -> Command {
    Event::CreateAccount(NewAccount { id, currency: Currency::CNY, flags, code: 1, limits: Limits::NONE }).into()
}

fn transfer(id: EventId, debit: u64, credit: u64, amount: i64) -> Command {
    let leg = Leg { debit, credit, amount, currency: Currency::CNY, code: 1, class: 1, user_data: 0 };
    Event::Transfer(Transfer { id, leg, pending_timeout_s: None }).into()
}

/// Custody account 1 and wallets 2..=WALLETS+1, each funded with 10,000.
fn set_up(shard: &Shard) {
    let handle = shard.handle();
    assert_eq!(handle.submit_blocking(account(CUSTODY, AccountFlags::NONE)).unwrap().status, Status::Ok);
    for wallet in 2..WALLETS + 2 {
        let created = handle.submit_blocking(account(wallet, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS));
        assert_eq!(created.unwrap().status, Status::Ok);
        let funded = handle.submit_blocking(transfer(EventId::from(wallet), CUSTODY, wallet, 10_000));
        assert_eq!(funded.unwrap().status, Status::Ok);
    }
}

fn audit_clean(path: &Path) {
    let mut reader = SqliteStore::open_reader(path).unwrap();
    let report = audit(&mut reader).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[test]
fn concurrent_clients_are_batched_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    set_up(&shard);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let handle = shard.handle();
    let outcomes = runtime.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..50u128 {
            let handle = handle.clone();
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..40u128 {
                    let n = client * 40 + i;
                    let debit = 2 + u64::try_from(n % u128::from(WALLETS)).unwrap();
                    let credit = 2 + u64::try_from((n * 7 + 3) % u128::from(WALLETS)).unwrap();
                    let reply = handle.submit(transfer(1_000 + n, debit, credit, 300)).await.unwrap();
                    statuses.push(reply.status);
                }
                statuses
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    assert_eq!(outcomes.len(), 2_000);
    assert!(outcomes.iter().all(|s| matches!(s, Status::Ok | Status::InsufficientFunds | Status::SameAccount)));
    let batches = shard.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches < 2_000 + 41, "commands were coalesced into batches ({batches})");
    let before: Vec<_> = (1..WALLETS + 2).map(|id| handle.account_blocking(id).unwrap().unwrap()).collect();
    shard.shutdown();
    audit_clean(&path);
    // After a restart the same balances come back and every id answers its first result.
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    let handle = shard.handle();
    let after: Vec<_> = (1..WALLETS + 2).map(|id| handle.account_blocking(id).unwrap().unwrap()).collect();
    assert_eq!(before, after);
    let replay = handle.submit_blocking(transfer(1_000, 2, 2 + 3, 300)).unwrap();
    assert!(replay.replay);
    assert_eq!(replay.status, outcomes[0]);
    shard.shutdown();
}

#[test]
fn a_refused_commit_is_never_acknowledged_and_memory_matches_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let (store, faults) = FaultyStore::new(open(&path));
    let shard = Shard::start(Box::new(store), config(), SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    faults.lock().unwrap().push(CommitFault::Refuse);
    let failed = handle.submit_blocking(transfer(500, 2, 3, 1_000));
    assert!(matches!(failed, Err(SubmitError::CommitFailed(_))), "{failed:?}");
    assert_eq!(handle.account_blocking(2).unwrap().unwrap().balance.net_posted(), 10_000, "memory rolled back");
    // The same id goes through once the store is healthy, exactly once.
    assert_eq!(handle.submit_blocking(transfer(500, 2, 3, 1_000)).unwrap().status, Status::Ok);
    let again = handle.submit_blocking(transfer(500, 2, 3, 1_000)).unwrap();
    assert!(again.replay);
    // A commit that reached the disk but was reported lost: the writer reloads from disk, and
    // the retry is answered as a replay, so the money moved once.
    faults.lock().unwrap().push(CommitFault::CommitThenLose);
    let lost = handle.submit_blocking(transfer(501, 2, 3, 1_000));
    assert!(matches!(lost, Err(SubmitError::CommitFailed(_))), "{lost:?}");
    let retry = handle.submit_blocking(transfer(501, 2, 3, 1_000)).unwrap();
    assert_eq!((retry.status, retry.replay), (Status::Ok, true));
    let memory = handle.account_blocking(2).unwrap().unwrap();
    assert_eq!(memory.balance.net_posted(), 8_000);
    shard.shutdown();
    let mut reader = SqliteStore::open_reader(&path).unwrap();
    let disk = citypay_store::JournalSource::accounts(&mut reader).unwrap();
    assert_eq!(disk.iter().find(|a| a.id == 2), Some(&memory), "memory and disk agree");
    audit_clean(&path);
}

const NOTES: Migration = Migration {
    component: "shard_test",
    version: 1,
    name: "notes",
    sqlite: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    postgres: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL);",
};

#[test]
fn service_rows_are_written_only_with_a_successful_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    let note = |id: i64| ServiceRow {
        table: "notes",
        key: vec![("id", Value::Int(id))],
        columns: vec![("body", Value::Text(format!("trade {id}")))],
        on_conflict: OnConflict::Fail,
    };
    let mut paid = transfer(700, 2, 3, 100);
    paid.rows.push(note(1));
    let mut refused = transfer(701, 2, 3, 1_000_000);
    refused.rows.push(note(2));
    assert_eq!(handle.submit_blocking(paid.clone()).unwrap().status, Status::Ok);
    assert_eq!(handle.submit_blocking(refused).unwrap().status, Status::InsufficientFunds);
    // A replay does not write its rows again (OnConflict::Fail would fail the batch).
    assert!(handle.submit_blocking(paid).unwrap().replay);
    shard.shutdown();
    let reader = SqliteStore::open_reader(&path).unwrap();
    let ids: Vec<i64> = reader
        .connection()
        .prepare("SELECT id FROM notes")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, vec![1]);
}

#[test]
fn pending_transfers_expire_on_time_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    let leg = Leg { debit: 2, credit: 3, amount: 4_000, currency: Currency::CNY, code: 1, class: 0, user_data: 0 };
    let hold = Event::Transfer(Transfer { id: 900, leg, pending_timeout_s: Some(1) });
    assert_eq!(handle.submit_blocking(hold.into()).unwrap().status, Status::Ok);
    assert_eq!(handle.account_blocking(2).unwrap().unwrap().balance.debits_pending, 4_000);
    std::thread::sleep(Duration::from_millis(1_300));
    assert_eq!(handle.account_blocking(2).unwrap().unwrap().balance.debits_pending, 0);
    shard.shutdown();
    audit_clean(&path);
}

#[test]
fn a_second_writer_is_refused_with_the_holder_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    match SqliteStore::open_writer(&path, &[]) {
        Err(StoreError::Locked { holder }) => assert!(holder.contains(&std::process::id().to_string())),
        other => panic!("expected Locked, got {other:?}"),
    }
    shard.shutdown();
    assert!(SqliteStore::open_writer(&path, &[]).is_ok());
}

#[test]
fn bad_input_gets_a_status_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    let cases = [
        (transfer(800, 2, 999, 5), Status::AccountNotFound),
        (transfer(801, 2, 3, 0), Status::InvalidAmount),
        (transfer(802, 2, 3, -1), Status::InvalidAmount),
        (transfer(803, CUSTODY, 3, i64::MAX), Status::Overflow),
        (transfer(0, 2, 3, 5), Status::InvalidId),
    ];
    for (command, status) in cases {
        assert_eq!(handle.submit_blocking(command).unwrap().status, status);
    }
    let mut usd = transfer(804, 2, 3, 5);
    if let Some(Event::Transfer(t)) = &mut usd.event {
        t.leg.currency = Currency::parse("USD").unwrap();
    }
    assert_eq!(handle.submit_blocking(usd).unwrap().status, Status::CurrencyMismatch);
    shard.shutdown();
    audit_clean(&path);
}

fn note_row(id: i64, body: &str) -> ServiceRow {
    ServiceRow {
        table: "notes",
        key: vec![("id", Value::Int(id))],
        columns: vec![("body", Value::Text(body.into()))],
        on_conflict: OnConflict::Update,
    }
}

fn absent(id: i64) -> Guard {
    Guard::Absent { table: "notes", key: vec![("id", Value::Int(id))] }
}

fn body_is(id: i64, body: &str) -> Guard {
    Guard::Matches { table: "notes", key: vec![("id", Value::Int(id))], expect: vec![("body", Value::Text(body.into()))] }
}

#[test]
fn guards_let_exactly_one_of_racing_commands_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    // Many clients race to create row 1 (one identity, one wallet): exactly one wins, and only
    // the winner's transfer moves money.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let results = runtime.block_on(async {
        let tasks: Vec<_> = (0..16u128)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut command = transfer(2_000 + i, 2, 3, 10);
                    command.guards.push(absent(1));
                    command.rows.push(note_row(1, &format!("winner {i}")));
                    handle.submit(command).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    let winners = results.iter().filter(|r| matches!(r, Ok(o) if o.status == Status::Ok)).count();
    let refused = results.iter().filter(|r| matches!(r, Err(SubmitError::GuardFailed { guard: 0 }))).count();
    assert_eq!((winners, refused), (1, 15), "{results:?}");
    assert_eq!(handle.account_blocking(3).unwrap().unwrap().balance.net_posted(), 10_010);
    // Compare-and-swap: two updates that both expect the same old body; the second fails, in
    // the same batch or a later one. A rows-only command needs no ledger event.
    let winner = (0..16).find(|i| results[*i].is_ok()).unwrap();
    let old = format!("winner {winner}");
    let cas = |new: &str| Command {
        event: None,
        guards: vec![body_is(1, &old)],
        rows: vec![note_row(1, new)],
        always_rows: Vec::new(),
    };
    let first = handle.submit_blocking(cas("second"));
    assert_eq!(first.unwrap().status, Status::Ok);
    assert_eq!(handle.submit_blocking(cas("third")), Err(SubmitError::GuardFailed { guard: 0 }));
    // A guard on a row that does not exist fails; a failed guard applies nothing.
    let mut missing = transfer(3_000, 2, 3, 10);
    missing.guards.push(body_is(42, "anything"));
    assert_eq!(handle.submit_blocking(missing), Err(SubmitError::GuardFailed { guard: 0 }));
    assert_eq!(handle.account_blocking(3).unwrap().unwrap().balance.net_posted(), 10_010);
    // An idempotency record is written even when the event is refused, but only once.
    let mut broke = transfer(3_001, 2, 3, 1_000_000);
    broke.guards.push(absent(7));
    broke.always_rows.push(note_row(7, "event 3001"));
    broke.rows.push(note_row(8, "only on success"));
    assert_eq!(handle.submit_blocking(broke.clone()).unwrap().status, Status::InsufficientFunds);
    assert_eq!(handle.submit_blocking(broke), Err(SubmitError::GuardFailed { guard: 0 }));
    shard.shutdown();
    let reader = citypay_store_sqlite::SqliteReader::open(&path).unwrap();
    let rows = citypay_store::ServiceReader::query(&reader, "SELECT id, body FROM notes WHERE id <> 1 OR body = ?1 ORDER BY id", &[Value::Text("second".into())]).unwrap();
    assert_eq!(
        rows,
        vec![vec![Value::Int(1), Value::Text("second".into())], vec![Value::Int(7), Value::Text("event 3001".into())]]
    );
    audit_clean(&path);
}

/// A store whose commits wait while its gate is shut, so callers queue up meanwhile.
struct GatedStore {
    inner: SqliteStore,
    shut: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl citypay_store::LedgerStore for GatedStore {
    fn load(&mut self) -> Result<citypay_store::Snapshot, StoreError> {
        self.inner.load()
    }

    fn lookup(&mut self, ids: &[EventId]) -> Result<rustc_hash::FxHashMap<EventId, citypay_ledger::StoredEvent>, StoreError> {
        self.inner.lookup(ids)
    }

    fn commit(&mut self, batch: &citypay_store::BatchWrite<'_>) -> Result<(), StoreError> {
        let (shut, opened) = &*self.shut;
        let mut shut = shut.lock().unwrap();
        while *shut {
            shut = opened.wait(shut).unwrap();
        }
        drop(shut);
        self.inner.commit(batch)
    }

    fn read_row(&mut self, table: &'static str, key: &[(&'static str, Value)], columns: &[&'static str]) -> Result<Option<Vec<Value>>, StoreError> {
        self.inner.read_row(table, key, columns)
    }
}

#[test]
fn large_batches_are_answered_in_full_off_the_writers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shut = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let store = GatedStore { inner: open(&path), shut: shut.clone() };
    let config = ShardConfig { batch_max: 1_024, queue_max: 4_096, ..ShardConfig::DEFAULT };
    let shard = Shard::start(Box::new(store), config, SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // 2,000 callers queue up while the writer's commit waits on the gate; then the writer
    // takes them in batches of up to 1,024, whose answers a thread of their own sends. Every
    // caller gets its own answer.
    *shut.0.lock().unwrap() = true;
    let plug = handle.clone();
    let plugged = std::thread::spawn(move || plug.submit_blocking(transfer(4_999, 2, CUSTODY, 1)));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..2_000u128)
        .map(|n| {
            let (handle, sent) = (handle.clone(), sent.clone());
            let debit = 2 + u64::try_from(n % u128::from(WALLETS)).unwrap();
            let amount = if n % 10 == 0 { 1_000_000 } else { 3 };
            runtime.spawn(async move {
                // Polled once, the command is in the writer's queue (it has room for all).
                let mut reply = std::pin::pin!(handle.submit(transfer(5_000 + n, debit, CUSTODY, amount)));
                let first = std::future::poll_fn(|cx| std::task::Poll::Ready(reply.as_mut().poll(cx))).await;
                sent.fetch_add(1, Ordering::SeqCst);
                match first {
                    std::task::Poll::Ready(done) => (n, done),
                    std::task::Poll::Pending => (n, reply.await),
                }
            })
        })
        .collect();
    while sent.load(Ordering::SeqCst) < 2_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (batches, commands) = (shard.stats().batches.load(Ordering::Relaxed), shard.stats().commands.load(Ordering::Relaxed));
    *shut.0.lock().unwrap() = false;
    shut.1.notify_all();
    assert_eq!(plugged.join().unwrap().unwrap().status, Status::Ok);
    for task in tasks {
        let (n, reply) = runtime.block_on(task).unwrap();
        let expected = if n % 10 == 0 { Status::InsufficientFunds } else { Status::Ok };
        assert_eq!(reply.unwrap().status, expected, "transfer {n}");
    }
    let batched = shard.stats().batches.load(Ordering::Relaxed) - batches;
    assert_eq!(shard.stats().commands.load(Ordering::Relaxed) - commands, 2_001);
    assert!(batched <= 4, "{batched} batches for 2,001 queued commands");
    // The plug's 1 and 1,800 transfers of 3 went back from the 20 wallets to custody.
    assert_eq!(handle.account_blocking(CUSTODY).unwrap().unwrap().balance.net_posted(), -(10_000 * 20) + 1 + 1_800 * 3);
    shard.shutdown();
    audit_clean(&path);
}

#[test]
fn a_guard_sees_the_rows_of_an_unguarded_command_earlier_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    set_up(&shard);
    let handle = shard.handle();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Sent back to back, so they usually share a batch; in a later batch the guard reads the
    // committed row instead. Either way the second must see the first's row.
    let (first, second) = runtime.block_on(async {
        let unguarded = Command { event: None, guards: Vec::new(), rows: vec![note_row(7, "first")], always_rows: Vec::new() };
        let guarded = Command { event: None, guards: vec![absent(7)], rows: vec![note_row(7, "second")], always_rows: Vec::new() };
        tokio::join!(handle.submit(unguarded), handle.submit(guarded))
    });
    assert!(first.is_ok(), "{first:?}");
    assert!(matches!(second, Err(SubmitError::GuardFailed { guard: 0 })), "{second:?}");
    shard.shutdown();
}

#[test]
fn a_writer_refuses_what_touches_a_bucket_it_does_not_hold() {
    use citypay_routing::{Bucket, BucketMap, owner_in};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let shard = Shard::start(Box::new(open(&path)), config(), SystemClock).unwrap();
    let handle = shard.handle();
    // Custody is the shard's own; two wallets (kind 1) in buckets 4 and 8.
    let here = (1 << 56) | owner_in(Bucket(4), 11);
    let there = (1 << 56) | owner_in(Bucket(8), 12);
    assert_eq!(handle.submit_blocking(account(CUSTODY, AccountFlags::NONE)).unwrap().status, Status::Ok);
    for wallet in [here, there] {
        assert_eq!(handle.submit_blocking(account(wallet, AccountFlags::NONE)).unwrap().status, Status::Ok);
    }
    // Bucket 8 moves to shard 1: this writer, shard 0, holds everything else.
    let map = BucketMap::single(0).moved([Bucket(8)], 1);
    handle.hold_buckets(Some(map.owned_by(0)));
    assert_eq!(handle.submit_blocking(transfer(EventId::from(100u64), CUSTODY, here, 500)).unwrap().status, Status::Ok);
    let refused = handle.submit_blocking(transfer(EventId::from(101u64), here, there, 100));
    assert_eq!(refused, Err(SubmitError::NotOwned { bucket: 8, map_version: map.version, moving: false }));
    let refused = handle.submit_blocking(account((1 << 56) | owner_in(Bucket(8), 13), AccountFlags::NONE));
    assert!(matches!(refused, Err(SubmitError::NotOwned { bucket: 8, .. })), "{refused:?}");
    // Nothing of a refused command was applied; the next one goes through.
    assert_eq!(handle.submit_blocking(transfer(EventId::from(102u64), here, CUSTODY, 200)).unwrap().status, Status::Ok);
    assert_eq!(handle.account_blocking(here).unwrap().unwrap().balance.net_posted(), 300);
    assert_eq!(handle.account_blocking(there).unwrap().unwrap().balance.net_posted(), 0);
    // Holding every bucket again (a one-shard city), the transfer goes.
    handle.hold_buckets(None);
    assert_eq!(handle.submit_blocking(transfer(EventId::from(101u64), here, there, 100)).unwrap().status, Status::Ok);
    shard.shutdown();
    audit_clean(&path);
}
