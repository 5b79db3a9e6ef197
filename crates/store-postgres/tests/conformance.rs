//! The shared store conformance suite, on PostgreSQL, and checks of what is particular to it.
//! Needs a server: run through `scripts/with-postgres.sh` (skipped without one, except under
//! `CI=true`).

mod common;

use citypay_ledger::Effects;
use citypay_store::{BatchWrite, JournalSource, LedgerStore, Migration, StoreError};
use citypay_store_conformance::{Backend, TestStore, conformance_tests};
use citypay_store_postgres::PostgresStore;
use common::Server;

/// Each `fresh` database is a new one on the server.
struct PgBackend {
    server: Server,
    url: Option<String>,
}

impl PgBackend {
    /// `None` when the tests are skipped (see `common::pg_url`).
    fn new() -> Option<PgBackend> {
        Some(PgBackend { server: Server::connect()?, url: None })
    }

    fn url(&self) -> &str {
        self.url.as_deref().expect("fresh() first")
    }
}

impl Backend for PgBackend {
    fn fresh(&mut self, extra: &[Migration]) -> Box<dyn TestStore> {
        let url = self.server.create_database("citypay_conf");
        let store = PostgresStore::open_writer(&url, extra).unwrap();
        self.url = Some(url);
        Box::new(store)
    }

    fn reopen(&mut self, extra: &[Migration]) -> Result<Box<dyn TestStore>, StoreError> {
        Ok(Box::new(PostgresStore::open_writer(self.url(), extra)?))
    }

    fn execute(&mut self, sql: &str) {
        common::client(self.url()).batch_execute(sql).unwrap();
    }

    fn query_i64(&mut self, sql: &str) -> i64 {
        common::client(self.url()).query_one(sql, &[]).unwrap().get(0)
    }

    fn reader(&mut self) -> Box<dyn citypay_store::ServiceReader> {
        Box::new(citypay_store_postgres::PostgresReader::connect(self.url()).unwrap())
    }
}

// Every generated test returns at once (after a notice) when there is no server to test.
conformance_tests!(match PgBackend::new() {
    Some(backend) => backend,
    None => return,
});

#[test]
fn commits_wait_for_the_disk() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_sync");
    let mut store = PostgresStore::open_writer(&url, &[]).unwrap();
    let row = store.client().query_one("SHOW synchronous_commit", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
}

#[test]
fn a_reader_sees_one_snapshot_and_cannot_write() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_reader");
    let writer = PostgresStore::open_writer(&url, &[]).unwrap();
    let mut reader = PostgresStore::open_reader(&url).unwrap();
    assert_eq!(reader.epoch(), None);
    // A change committed after the reader opened is invisible to it.
    common::client(&url)
        .batch_execute(
            "INSERT INTO rejections VALUES ('\\x00000000000000000000000000000007', 1, 2, 3, 1);
             UPDATE ledger_meta SET last_batch = 1",
        )
        .unwrap();
    let mut rejections = Vec::new();
    reader.scan_rejections(&mut |id| rejections.push(id)).unwrap();
    assert!(rejections.is_empty());
    assert_eq!(reader.load().unwrap().last_batch, 0);
    let nothing = Effects::default();
    let refused = reader.commit(&BatchWrite { batch: 1, effects: &nothing, rows: &[] });
    assert!(matches!(refused, Err(StoreError::Backend(_))), "{refused:?}");
    drop(reader);
    let mut fresh = PostgresStore::open_reader(&url).unwrap();
    assert_eq!(fresh.load().unwrap().stored_id_max, 7);
    assert!(fresh.accounts().unwrap().is_empty());
    drop(writer);
}

#[test]
fn a_reader_needs_a_ledger() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_empty");
    assert!(matches!(PostgresStore::open_reader(&url), Err(StoreError::Backend(_))));
}

#[test]
fn urls_switch_database() {
    use common::with_database;
    assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    assert_eq!(with_database("postgres://h/db?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
}

#[test]
fn out_of_range_integers_are_corrupt_not_truncated() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_range");
    drop(PostgresStore::open_writer(&url, &[]).unwrap());
    common::client(&url)
        .batch_execute(
            "INSERT INTO transfers VALUES ('\\x00000000000000000000000000000009', 0, 0, 1, 2, 5, 'CNY', \
             9, 256, 0, NULL, NULL, NULL, 1, 1, 7)",
        )
        .unwrap();
    let mut reader = PostgresStore::open_reader(&url).unwrap();
    match reader.scan_journal(&mut |_| {}) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("class 256"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
