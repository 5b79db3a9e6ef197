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
