//! A COMMIT whose wait for the synchronous standby is cancelled answers success with only a
//! warning, yet the batch may exist on this node only: the writer reports its outcome as
//! unknown, never as done. Its own test binary: it sets the server's
//! `synchronous_standby_names` (to a standby that never comes) for the time of the test.
//! Needs a server (`scripts/with-postgres.sh`).

mod common;

use std::time::{Duration, Instant};

use citypay_ledger::{AccountFlags, Currency, Event, Ledger, LedgerConfig, Limits, NewAccount, Timestamp};
use citypay_store::{BatchWrite, LedgerStore, StoreError};
use citypay_store_postgres::PostgresStore;
use common::Server;
use rustc_hash::FxHashMap;

/// Puts the server's standby setting back however the test ends.
struct Standbys(String);

impl Drop for Standbys {
    fn drop(&mut self) {
        let mut client = common::client(&self.0);
        client.batch_execute("ALTER SYSTEM RESET synchronous_standby_names").unwrap();
        client.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
}

#[test]
fn a_commit_whose_wait_for_the_standby_was_cancelled_is_not_acknowledged() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_sync_cancel");
    let mut writer = PostgresStore::open_writer(&url, &[]).unwrap();
    let _reset = Standbys(url.clone());
    let mut settings = common::client(&url);
    settings.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'").unwrap();
    settings.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let committing = std::thread::spawn(move || {
        let snapshot = writer.load().unwrap();
        let mut ledger = Ledger::restore(LedgerConfig::DEFAULT, snapshot.accounts, snapshot.open_pending, snapshot.stored_id_max, snapshot.last_timestamp);
        let account = NewAccount { id: 1, currency: Currency::CNY, flags: AccountFlags::NONE, code: 1, limits: Limits::NONE };
        let fx = ledger.apply(&[Event::CreateAccount(account)], Timestamp::from_unix_seconds(1_795_500_000), &FxHashMap::default());
        writer.commit(&BatchWrite { batch: snapshot.last_batch + 1, effects: &fx, rows: &[] })
    });
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
