//! One writer per database: the lease refuses a second writer while it runs, the next writer
//! ends a writer whose lease ran out, and the fencing epoch stops a writer that was superseded. Needs a server: run through
//! `scripts/with-postgres.sh` (skipped without one, except under `CI=true`).

mod common;

use citypay_ledger::{AccountFlags, Currency, Event, Ledger, LedgerConfig, Limits, NewAccount, Timestamp};
use citypay_store::{BatchWrite, LedgerStore, StoreError};
use std::time::Duration;

use citypay_store_postgres::{LeaseTerms, PostgresStore};
use common::Server;
use rustc_hash::FxHashMap;

/// Commits the next batch of `store`: it opens account `id`.
fn open_account(store: &mut PostgresStore, id: u64) -> Result<(), StoreError> {
    let snapshot = store.load()?;
    let mut ledger = Ledger::restore(
        LedgerConfig::DEFAULT,
        snapshot.accounts,
        snapshot.open_pending,
        snapshot.stored_id_max,
        snapshot.last_timestamp,
    );
    let account = NewAccount { id, currency: Currency::CNY, flags: AccountFlags::NONE, code: 1, limits: Limits::NONE };
    let now = Timestamp::from_unix_seconds(1_795_500_000).max(snapshot.last_timestamp);
    let fx = ledger.apply(&[Event::CreateAccount(account)], now, &FxHashMap::default());
    store.commit(&BatchWrite { batch: snapshot.last_batch + 1, effects: &fx, rows: &[] })
}

fn count(url: &str, sql: &str) -> i64 {
    common::client(url).query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_second_writer_is_told_who_holds_the_database() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_fence");
    let first = PostgresStore::open_writer(&url, &[]).unwrap();
    match PostgresStore::open_writer(&url, &[]) {
        Err(StoreError::Locked { holder }) => {
            assert!(holder.contains(&format!("pid {}", std::process::id())), "holder named: {holder}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
}

#[test]
fn a_superseded_writer_is_fenced_and_writes_nothing() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_fence");
    let mut a = PostgresStore::open_writer(&url, &[]).unwrap();
    open_account(&mut a, 1).unwrap();
    let ours = a.epoch().unwrap();
    // What a new writer does once A's session is gone: take the next epoch.
    common::client(&url).batch_execute("UPDATE writer_lease SET epoch = epoch + 1").unwrap();
    match open_account(&mut a, 2) {
        Err(StoreError::Fenced { ours: o, current }) => assert_eq!((o, current), (ours, ours + 1)),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(count(&url, "SELECT count(*) FROM accounts"), 1);
    assert_eq!(count(&url, "SELECT last_batch FROM ledger_meta"), 1);
    // It stays fenced.
    assert!(matches!(open_account(&mut a, 2), Err(StoreError::Fenced { .. })));
}

#[test]
fn the_next_writer_takes_a_larger_epoch() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_fence");
    let mut a = PostgresStore::open_writer(&url, &[]).unwrap();
    let epoch_a = a.epoch().unwrap();
    open_account(&mut a, 1).unwrap();
    drop(a);
    let mut b = PostgresStore::open_writer(&url, &[]).unwrap();
    assert!(b.epoch().unwrap() > epoch_a);
    open_account(&mut b, 2).unwrap();
    assert_eq!(count(&url, "SELECT count(*) FROM accounts"), 2);
    let holder: String = common::client(&url).query_one("SELECT holder FROM writer_lease", &[]).unwrap().get(0);
    assert!(holder.contains("pid"), "{holder}");
}

#[test]
fn concurrent_writers_exactly_one_wins() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_fence");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open_writer(&url, &[]))
        })
        .collect();
    let attempts: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    let opened = attempts.iter().filter(|a| a.is_ok()).count();
    let locked = attempts.iter().filter(|a| matches!(a, Err(StoreError::Locked { .. }))).count();
    assert_eq!((opened, locked), (1, 3), "{attempts:?}");
}

#[test]
fn a_writer_whose_lease_ran_out_is_ended_and_replaced() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_fence");
    let short = LeaseTerms { ttl: Duration::from_millis(300), address: "10.0.0.1:7000".into() };
    let mut a = PostgresStore::take_over(&url, &[], &short).unwrap();
    // A new writer's first lease covers its load: held even past its time to live.
    std::thread::sleep(Duration::from_millis(400));
    assert!(matches!(PostgresStore::take_over(&url, &[], &short), Err(StoreError::Locked { .. })));
    open_account(&mut a, 1).unwrap();
    // A renews while B tries: B is refused each time, and told who writes and where.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(100));
        a.keep_alive().unwrap();
        assert!(matches!(PostgresStore::take_over(&url, &[], &short), Err(StoreError::Locked { .. })));
    }
    let mut watcher = PostgresStore::open_lease_reader(&url).unwrap();
    let lease = watcher.lease().unwrap();
    assert!(lease.live && lease.locked, "{lease:?}");
    assert_eq!((lease.epoch, lease.address.as_str()), (a.epoch().unwrap(), "10.0.0.1:7000"));
    // A stops renewing (frozen, or cut off): once its lease runs out, B ends A's session and
    // takes the next epoch.
    std::thread::sleep(Duration::from_millis(400));
    assert!(!watcher.lease().unwrap().live);
    let mut b = PostgresStore::take_over(&url, &[], &LeaseTerms { ttl: Duration::from_secs(2), address: "10.0.0.2:7000".into() }).unwrap();
    assert_eq!(b.epoch().unwrap(), a.epoch().unwrap() + 1);
    // A wakes up: its session is gone, and nothing it sends is stored.
    assert!(open_account(&mut a, 2).is_err());
    assert!(a.keep_alive().is_err());
    open_account(&mut b, 3).unwrap();
    assert_eq!(count(&url, "SELECT count(*) FROM accounts"), 2);
    let lease = watcher.lease().unwrap();
    assert_eq!((lease.epoch, lease.address.as_str(), lease.live), (b.epoch().unwrap(), "10.0.0.2:7000", true));
}

#[test]
fn a_writer_whose_session_ended_is_replaced_at_once() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_fence");
    let a = PostgresStore::take_over(&url, &[], &LeaseTerms { ttl: Duration::from_secs(60), address: String::new() }).unwrap();
    let epoch = a.epoch().unwrap();
    // A process killed outright: its connection closes and the server drops its lock, well
    // before the lease would run out.
    std::mem::forget(a);
    common::client(&url)
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .unwrap();
    let b = PostgresStore::open_writer(&url, &[]).unwrap();
    assert_eq!(b.epoch().unwrap(), epoch + 1);
}
