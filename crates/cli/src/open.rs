//! Opening storage from a `--db` URL: the one place that knows every backend.

use anyhow::Context;
use citypay_store::{DbUrl, JournalSource, LedgerStore, Migration};
use citypay_store_postgres::PostgresStore;
use citypay_store_sqlite::SqliteStore;

/// Opens the database as its single writer.
pub(crate) fn writer(db: &DbUrl, extra: &[Migration]) -> anyhow::Result<Box<dyn LedgerStore>> {
    let store: Box<dyn LedgerStore> = match db {
        DbUrl::Sqlite(path) => Box::new(SqliteStore::open_writer(path, extra)?),
        DbUrl::Postgres(url) => Box::new(PostgresStore::open_writer(url, extra)?),
    };
    Ok(store)
}

/// Opens a consistent read-only view of the database.
pub(crate) fn reader(db: &DbUrl) -> anyhow::Result<Box<dyn JournalSource>> {
    let source: Box<dyn JournalSource> = match db {
        DbUrl::Sqlite(path) => Box::new(SqliteStore::open_reader(path).with_context(|| db.redacted())?),
        DbUrl::Postgres(url) => Box::new(PostgresStore::open_reader(url).with_context(|| db.redacted())?),
    };
    Ok(source)
}
