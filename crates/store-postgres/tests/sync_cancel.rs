//! A COMMIT whose wait for the synchronous standby is cancelled answers success with only a
//! warning, yet the batch may exist on this node only: the writer reports its outcome as
//! unknown, never as done; and a writer whose commit waits for its standby is never ended by
//! the next. Their own test binary, one test at a time: they set the server's
//! `synchronous_standby_names` (to a standby that never comes) for the time of each test.
//! Needs a server (`scripts/with-postgres.sh`).

mod common;

use std::time::{Duration, Instant};

use citypay_ledger::{AccountFlags, Currency, Event, Ledger, LedgerConfig, Limits, NewAccount, Timestamp};
use citypay_store::{BatchWrite, LedgerStore, StoreError};
use citypay_store_postgres::PostgresStore;
use common::Server;
use rustc_hash::FxHashMap;

/// Commits the next batch of `writer`: it opens account 1.
fn open_account(writer: &mut PostgresStore) -> Result<(), StoreError> {
    let snapshot = writer.load()?;
    let mut ledger = Ledger::restore(LedgerConfig::DEFAULT, snapshot.accounts, snapshot.open_pending, snapshot.stored_id_max, snapshot.last_timestamp);
    let account = NewAccount { id: 1, currency: Currency::CNY, flags: AccountFlags::NONE, code: 1, limits: Limits::NONE };
    let fx = ledger.apply(&[Event::CreateAccount(account)], Timestamp::from_unix_seconds(1_795_500_000), &FxHashMap::default());
    writer.commit(&BatchWrite { batch: snapshot.last_batch + 1, effects: &fx, rows: &[] })
}

/// The tests here change one server-wide setting: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Puts the server's standby setting back however the test ends.
struct Standbys(String);

impl Standbys {
    /// From now until the guard goes, every commit waits for a standby that never comes.
    fn required(url: &str) -> Standbys {
        let mut settings = common::client(url);
        settings.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'").unwrap();
        settings.batch_execute("SELECT pg_reload_conf()").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Standbys(url.to_owned())
    }
}

impl Drop for Standbys {
    fn drop(&mut self) {
        let mut client = common::client(&self.0);
        client.batch_execute("ALTER SYSTEM RESET synchronous_standby_names").unwrap();
        client.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
}

#[test]
fn a_commit_whose_wait_for_the_standby_was_cancelled_is_not_acknowledged() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_sync_cancel");
    let mut writer = PostgresStore::open_writer(&url, &[]).unwrap();
    let _reset = Standbys::required(&url);

    let committing = std::thread::spawn(move || open_account(&mut writer));
    // The commit waits for the standby; an operator (or a failover tool) cancels the wait.
    let mut admin = common::client(&url);
    let started = Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'SyncRep'", &[])
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the commit never waited for the standby");
        std::thread::sleep(Duration::from_millis(20));
    }
    admin.batch_execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'SyncRep'").unwrap();
    let outcome = committing.join().unwrap();
    assert!(matches!(outcome, Err(StoreError::OutcomeUnknown(_))), "{outcome:?}");
    // It did commit here, which is why it must be reported as unknown rather than failed.
    let accounts: i64 = admin.query_one("SELECT count(*) FROM accounts", &[]).unwrap().get(0);
    assert_eq!(accounts, 1);
}

/// A writer whose commit waits for the synchronous standby has a lease that runs out (it
/// cannot renew), yet nobody ends its session: that would make its batch visible on this node
/// only. The next writer is refused until the wait ends.
#[test]
fn a_writer_waiting_for_its_standby_is_not_ended() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_sync_wait");
    let short = citypay_store_postgres::LeaseTerms { ttl: Duration::from_millis(200), address: String::new() };
    let mut writer = PostgresStore::take_over(&url, &[], &short).unwrap();
    // Renewed once, as a running writer does at once: from here the lease lasts 200 ms.
    writer.keep_alive().unwrap();
    let _reset = Standbys::required(&url);
    let committing = std::thread::spawn(move || open_account(&mut writer));
    std::thread::sleep(Duration::from_millis(600));
    // The lease ran out while the commit waits: still refused, and the batch still unseen.
    match PostgresStore::open_writer(&url, &[]) {
        Err(StoreError::Locked { holder }) => assert!(holder.contains("synchronous standby"), "{holder}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    let mut admin = common::client(&url);
    let accounts: i64 = admin.query_one("SELECT count(*) FROM accounts", &[]).unwrap().get(0);
    assert_eq!(accounts, 0, "a batch waiting for its standby is not visible");
    // The standby requirement goes (a failover tool, or the standby back): the commit ends.
    drop(_reset);
    assert!(committing.join().unwrap().is_ok());
}
