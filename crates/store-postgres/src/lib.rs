//! The server store: one PostgreSQL database per ledger, written with
//! `synchronous_commit = on` so a commit is durable before it returns.
//!
//! One writer per database, enforced by a session-level advisory lock that the server drops
//! when the writer's session ends, and a lease with a time bound that the writer renews: a
//! writer that stops renewing has its session ended by the next one (see `lease.rs`). Each
//! writer also takes a larger fencing epoch in `writer_lease`, and every commit checks it in
//! its own transaction, so a writer that was superseded cannot write another batch.
//! Readers (the audit) see one `REPEATABLE READ` snapshot and take no lock.

mod lease;
mod migrate;
mod read;
mod reader;
mod write;

use citypay_ledger::{Account, EventId, StoredEvent};
use citypay_store::{
    BatchWrite, JournalSource, LEDGER_MIGRATIONS, LedgerStore, Migration, Snapshot, StoreError,
    StoredRow, Value,
};
use postgres::{Client, NoTls};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use rustc_hash::FxHashMap;

pub use lease::{LeaseState, LeaseTerms};
pub use reader::{Locate, PostgresReader};

/// A PostgreSQL ledger store. Open it with [`PostgresStore::open_writer`] for the shard's
/// writer or [`PostgresStore::open_reader`] for a consistent read-only view.
pub struct PostgresStore {
    client: Client,
    /// Present on the writer: its epoch and prepared statements.
    writer: Option<write::Writer>,
    /// Whether this session holds the writer lock (released on drop).
    holds_lock: bool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("epoch", &self.epoch())
            .field("holds_lock", &self.holds_lock)
            .finish_non_exhaustive()
    }
}

/// Wraps any driver error that is not about the outcome of a COMMIT.
fn backend(error: postgres::Error) -> StoreError {
    StoreError::Backend(describe(&error))
}

/// The driver's error with its causes (its own text is only the kind, as in "db error").
fn describe(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls).map_err(|e| StoreError::Backend(format!("cannot connect: {}", describe(&e))))
}

/// A writer's connection, whose warnings that a commit stopped waiting for its synchronous
/// standby ("canceling wait for synchronous replication ... already committed locally") are
/// counted: such a COMMIT answers success, yet the batch may exist on this node only.
fn connect_writer(url: &str) -> Result<(Client, Arc<AtomicU64>), StoreError> {
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| StoreError::Backend(format!("the database URL: {}", describe(&e))))?;
    let cancelled = Arc::new(AtomicU64::new(0));
    let seen = cancelled.clone();
    config.notice_callback(move |notice| {
        if notice.message().contains("synchronous replication") {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let client = config.connect(NoTls).map_err(|e| StoreError::Backend(format!("cannot connect: {}", describe(&e))))?;
    Ok((client, cancelled))
}

impl PostgresStore {
    /// Connects to the database at `url` as its one writer, on a lease of
    /// [`LeaseTerms::local`]: see [`PostgresStore::take_over`].
    pub fn open_writer(url: &str, extra: &[Migration]) -> Result<PostgresStore, StoreError> {
        PostgresStore::take_over(url, extra, &LeaseTerms::local())
    }

    /// Connects to the database at `url` as its one writer: applies the ledger's migrations
    /// and then `extra` (the services' own), each at most once; takes the writer lock (or
    /// fails with [`StoreError::Locked`] while another writer's lease runs), ending the
    /// session of a writer whose lease ran out; and takes a new fencing epoch, with a lease on
    /// `terms`.
    pub fn take_over(url: &str, extra: &[Migration], terms: &LeaseTerms) -> Result<PostgresStore, StoreError> {
        let (mut client, cancelled) = connect_writer(url)?;
        client.batch_execute("SET synchronous_commit = on").map_err(backend)?;
        migrate::run(&mut client, LEDGER_MIGRATIONS)?;
        migrate::run(&mut client, extra)?;
        let epoch = lease::acquire(&mut client, terms)?;
        // From here on, dropping the store releases the lock, on error paths too.
        let mut store = PostgresStore { client, writer: None, holds_lock: true };
        store.writer = Some(write::Writer::prepare(&mut store.client, epoch, terms.ttl_ms(), cancelled)?);
        Ok(store)
    }

    /// The lease as recorded now: who writes, where it takes commands, whether it runs.
    pub fn lease(&mut self) -> Result<LeaseState, StoreError> {
        lease::state(&mut self.client)
    }

    /// Connects only to read the lease (a server that forwards to the writer, or waits to
    /// take over). Fails if the database has no ledger yet.
    pub fn open_lease_reader(url: &str) -> Result<PostgresStore, StoreError> {
        let client = connect(url)?;
        Ok(PostgresStore { client, writer: None, holds_lock: false })
    }

    /// Connects read-only, inside one `REPEATABLE READ READ ONLY` transaction so every query
    /// sees the same snapshot even while the writer commits.
    pub fn open_reader(url: &str) -> Result<PostgresStore, StoreError> {
        let mut client = connect(url)?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(backend)?;
        // The first query fixes the snapshot, and fails if there is no ledger here.
        client.query_one("SELECT last_batch FROM ledger_meta", &[]).map_err(backend)?;
        Ok(PostgresStore { client, writer: None, holds_lock: false })
    }

    /// The fencing epoch this writer took; `None` for a reader.
    pub fn epoch(&self) -> Option<i64> {
        self.writer.as_ref().map(|w| w.epoch)
    }

    /// Direct access for service queries that read their own tables. Leave no transaction
    /// open: the store runs its own on this connection.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Drop for PostgresStore {
    /// Releases the writer lock before the connection closes, so a writer opened right after
    /// this one does not race the server's cleanup of this session.
    fn drop(&mut self) {
        // A closed connection has lost the lock already; do not wait on it.
        if self.holds_lock && !self.client.is_closed() {
            let _ = lease::release(&mut self.client);
        }
    }
}

impl LedgerStore for PostgresStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        read::snapshot(&mut self.client)
    }

    fn lookup(&mut self, ids: &[EventId]) -> Result<FxHashMap<EventId, StoredEvent>, StoreError> {
        match &self.writer {
            Some(writer) => read::lookup(&mut self.client, &writer.statements.lookup, ids),
            None => read::lookup(&mut self.client, read::LOOKUP, ids),
        }
    }

    fn commit(&mut self, batch: &BatchWrite<'_>) -> Result<(), StoreError> {
        let Some(writer) = &mut self.writer else {
            return Err(StoreError::Backend("this store was opened read-only".into()));
        };
        writer.commit(&mut self.client, batch)
    }

    fn keep_alive(&mut self) -> Result<(), StoreError> {
        match &mut self.writer {
            Some(writer) => writer.renew(&mut self.client),
            None => Ok(()),
        }
    }

    fn keep_alive_every(&self) -> Option<std::time::Duration> {
        self.writer.as_ref().map(|w| std::time::Duration::from_millis(u64::try_from(w.ttl_ms / 4).unwrap_or(500).max(1)))
    }

    fn read_row(
        &mut self,
        table: &'static str,
        key: &[(&'static str, Value)],
        columns: &[&'static str],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        let (sql, values) = citypay_store::read_row_query(table, key, columns);
        Ok(reader::run(&mut self.client, &sql, &values)?.into_iter().next())
    }
}

impl JournalSource for PostgresStore {
    fn accounts(&mut self) -> Result<Vec<Account>, StoreError> {
        read::accounts(&mut self.client)
    }

    fn scan_journal(&mut self, visit: &mut dyn FnMut(StoredRow)) -> Result<(), StoreError> {
        read::scan_journal(&mut self.client, visit)
    }

    fn scan_rejections(&mut self, visit: &mut dyn FnMut(EventId)) -> Result<(), StoreError> {
        read::scan_rejections(&mut self.client, visit)
    }
}
