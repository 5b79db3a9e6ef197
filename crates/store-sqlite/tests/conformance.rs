//! The shared store conformance suite, on SQLite.

use std::path::PathBuf;

use citypay_store::{Migration, StoreError};
use citypay_store_conformance::{Backend, TestStore, conformance_tests};
use citypay_store_sqlite::SqliteStore;

struct SqliteBackend {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SqliteBackend {
    fn new() -> SqliteBackend {
        SqliteBackend { dir: tempfile::tempdir().unwrap(), generation: 0 }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(format!("ledger-{}.db", self.generation))
    }
}

impl Backend for SqliteBackend {
    fn fresh(&mut self, extra: &[Migration]) -> Box<dyn TestStore> {
        self.generation += 1;
        Box::new(SqliteStore::open_writer(&self.path(), extra).unwrap())
    }

    fn reopen(&mut self, extra: &[Migration]) -> Result<Box<dyn TestStore>, StoreError> {
        Ok(Box::new(SqliteStore::open_writer(&self.path(), extra)?))
    }

    fn execute(&mut self, sql: &str) {
        rusqlite::Connection::open(self.path()).unwrap().execute_batch(sql).unwrap();
    }

    fn query_i64(&mut self, sql: &str) -> i64 {
        rusqlite::Connection::open(self.path()).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn reader(&mut self) -> Box<dyn citypay_store::ServiceReader> {
        Box::new(citypay_store_sqlite::SqliteReader::open(&self.path()).unwrap())
    }
}

conformance_tests!(SqliteBackend::new());

#[test]
fn the_file_is_in_wal_mode_with_full_sync() {
    let backend = SqliteBackend::new();
    let path = backend.dir.path().join("x.db");
    let store = SqliteStore::open_writer(&path, &[]).unwrap();
    let mode: String = store.connection().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let sync: i64 = store.connection().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

#[test]
fn the_store_runs_on_the_wrapped_page_cache() {
    let backend = SqliteBackend::new();
    let path = backend.dir.path().join("x.db");
    let store = SqliteStore::open_writer(&path, &[]).unwrap();
    // Opening a store installs it before SQLite first initialises; it then stays installed.
    assert!(citypay_store_sqlite::page_cache::install());
    let before = citypay_store_sqlite::page_cache::truncates();
    store.connection().execute_batch("CREATE TABLE t (k BLOB PRIMARY KEY); INSERT INTO t VALUES (x'01');").unwrap();
    assert!(citypay_store_sqlite::page_cache::truncates().skipped > before.skipped);
}

#[test]
fn a_batchs_reads_share_one_transaction_that_a_failed_read_or_a_load_ends() {
    use citypay_store::{LedgerStore, Value};
    let backend = SqliteBackend::new();
    let mut store = SqliteStore::open_writer(&backend.dir.path().join("x.db"), &[]).unwrap();
    let key = [("component", Value::Text("ledger".into()))];
    assert!(store.connection().is_autocommit());
    assert!(store.read_row("schema_migrations", &key, &["version"]).unwrap().is_some());
    assert!(store.lookup(&[7]).unwrap().is_empty());
    assert!(!store.connection().is_autocommit(), "the reads' transaction stays open for the commit");
    store.load().unwrap();
    assert!(store.connection().is_autocommit(), "a load reads the committed state afresh");
    assert!(store.read_row("schema_migrations", &key, &["version"]).unwrap().is_some());
    assert!(store.read_row("no_such_table", &key, &[]).is_err());
    assert!(store.connection().is_autocommit(), "a failed read ends the transaction");
}

#[test]
fn a_checkpoint_restarting_the_log_while_a_batch_reads_waits_for_its_commit() {
    use citypay_ledger::{AccountFlags, Currency, Event, Ledger, LedgerConfig, Limits, NewAccount, Timestamp};
    use citypay_store::{BatchWrite, LedgerStore, Value};
    let backend = SqliteBackend::new();
    let path = backend.dir.path().join("x.db");
    let mut store = SqliteStore::open_writer(&path, &[]).unwrap();
    let snapshot = store.load().unwrap();
    let mut ledger = Ledger::restore(
        LedgerConfig { recent_ids_max: 64 },
        snapshot.accounts,
        snapshot.open_pending,
        snapshot.stored_id_max,
        snapshot.last_timestamp,
    );
    // Rounds, because the store's own checkpointer sometimes holds the checkpoint lock and
    // the restart then gives up at once instead of waiting.
    for round in 1..=5 {
        // The batch's first read (a guard) opens its transaction.
        store.read_row("schema_migrations", &[("component", Value::Text("ledger".into()))], &["version"]).unwrap();
        // Meanwhile a checkpoint restarts the log from a connection of its own, as the
        // store's checkpointer does when the log has grown.
        let (started, checkpointing) = std::sync::mpsc::channel();
        let log = path.clone();
        let restart = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&log).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            started.send(()).unwrap();
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)).unwrap()
        });
        checkpointing.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The batch holds the write lock from its first read, so the restart waits for the
        // commit; a transaction that took it only at its first write would be refused at once.
        let account =
            NewAccount { id: round, currency: Currency::CNY, flags: AccountFlags::NONE, code: 1, limits: Limits::NONE };
        let now = Timestamp::from_unix_seconds(1_795_500_000 + round);
        let effects = ledger.apply(&[Event::CreateAccount(account)], now, &Default::default());
        store.commit(&BatchWrite { batch: snapshot.last_batch + round, effects: &effects, rows: &[] }).unwrap();
        ledger.commit(effects);
        restart.join().unwrap();
    }
    assert!(store.connection().is_autocommit());
}
