//! Storage for the ledger, as narrow traits: [`LedgerStore`] for the one writer of a shard and
//! [`JournalSource`] for readers such as the audit. Backends live in their own crates
//! (`citypay-store-sqlite`, `citypay-store-postgres`) and pass one conformance suite.

mod audit;
mod codec;
#[cfg(feature = "serde")]
pub mod names;
mod row;
mod url;

use citypay_ledger::{Account, Effects, EventId, JournalRow, OpenPending, PendingState, StoredEvent, Timestamp};
use rustc_hash::FxHashMap;

pub use audit::{AuditReport, audit};
pub use codec::{
    ACCOUNT_COLUMNS, ACCOUNT_LIMIT_COLUMNS, ACCOUNT_UPDATE_COLUMNS, AccountColumns, JOURNAL_COLUMNS, JournalColumns,
    u64_from_column, u64_to_column,
};
pub use row::{Migration, OnConflict, RowShape, ServiceRow, Value};
pub use url::{DbUrl, DbUrlError};

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the writer lock of this database.
    #[error("the database is already open for writing by {holder}; stop it or send requests through it")]
    Locked {
        /// Who holds it (process id, host, since when), as recorded by the holder.
        holder: String,
    },
    /// Another writer took the database over; this one must stop writing.
    #[error("fenced: writer epoch {ours} was superseded by epoch {current}")]
    Fenced {
        /// This writer's epoch.
        ours: i64,
        /// The epoch now recorded in the database.
        current: i64,
    },
    /// The database schema is newer than this binary understands.
    #[error("schema of {component} is at version {found}, newer than this binary's {known}")]
    SchemaTooNew {
        /// Which part of the schema.
        component: String,
        /// Version found in the database.
        found: i64,
        /// Latest version this binary knows.
        known: i64,
    },
    /// A stored row that cannot be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The commit may or may not have reached the disk (the connection broke during COMMIT).
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The database cannot be reached now (a connection lost or refused, a node shutting down or
    /// no longer the primary): nothing was done, and the same request may succeed in a moment.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Any other backend error.
    #[error("storage error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether a failed commit might nonetheless be durable, so memory must be reloaded from
    /// storage rather than rolled back.
    pub fn may_have_committed(&self) -> bool {
        matches!(self, StoreError::OutcomeUnknown(_))
    }
}

/// Everything a writer needs to rebuild its in-memory state after a restart.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every account.
    pub accounts: Vec<Account>,
    /// Every open pending transfer.
    pub open_pending: Vec<OpenPending>,
    /// The largest event id stored (transfers and rejections); 0 when empty.
    pub stored_id_max: EventId,
    /// Ledger time of the last committed batch.
    pub last_timestamp: Timestamp,
    /// Sequence number of the last committed batch; 0 when none.
    pub last_batch: u64,
}

/// One batch to commit: the ledger's effects and the service rows of its successful events.
#[derive(Debug)]
pub struct BatchWrite<'a> {
    /// Sequence number of this batch (the previous one plus one).
    pub batch: u64,
    /// What the ledger changed.
    pub effects: &'a Effects,
    /// Rows of the calling services, written in the same transaction.
    pub rows: &'a [ServiceRow],
}

/// The storage of one shard, owned by its single writer.
pub trait LedgerStore: Send {
    /// Loads the state the writer rebuilds its memory from.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Answers for ids the ledger cannot decide from memory: their stored hash, first status
    /// and pending state. Ids storage does not hold are absent from the map.
    fn lookup(&mut self, ids: &[EventId]) -> Result<FxHashMap<EventId, StoredEvent>, StoreError>;

    /// Writes a whole batch in one transaction and commits it durably: journal rows, pending
    /// state changes, each touched account once, rejections, service rows. On error nothing of
    /// the batch is stored (unless the error says the outcome is unknown).
    fn commit(&mut self, batch: &BatchWrite<'_>) -> Result<(), StoreError>;

    /// Renews the writer's lease, when the store has one (the writer calls it when idle for
    /// [`LedgerStore::keep_alive_every`]; every commit renews it too). An error means this
    /// writer may have lost the database: it must stop.
    fn keep_alive(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How often an idle writer must call [`LedgerStore::keep_alive`]; `None`: never.
    fn keep_alive_every(&self) -> Option<std::time::Duration> {
        None
    }

    /// The committed values of `columns` in the row of service table `table` whose key
    /// columns equal `key`; `None` when there is no such row. The writer uses it to check a
    /// command's guards. Table and column names are the services' constants.
    fn read_row(
        &mut self,
        table: &'static str,
        key: &[(&'static str, Value)],
        columns: &[&'static str],
    ) -> Result<Option<Vec<Value>>, StoreError>;
}

/// The `SELECT` of [`LedgerStore::read_row`], with `?N` placeholders, and the key values to
/// bind to them.
pub fn read_row_query(table: &str, key: &[(&'static str, Value)], columns: &[&'static str]) -> (String, Vec<Value>) {
    let conditions: Vec<String> = key.iter().enumerate().map(|(i, (c, _))| format!("{c} = ?{}", i + 1)).collect();
    let columns = if columns.is_empty() { "1".to_owned() } else { columns.join(", ") };
    let sql = format!("SELECT {columns} FROM {table} WHERE {}", conditions.join(" AND "));
    (sql, key.iter().map(|(_, v)| v.clone()).collect())
}

/// A journal row as stored, with the pending state that storage keeps on pending rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredRow {
    /// The row as the ledger produced it.
    pub row: JournalRow,
    /// For pending rows: the current state.
    pub state: Option<PendingState>,
    /// The batch that wrote it.
    pub batch: u64,
}

/// Read access to a whole journal, for the audit and for reports.
pub trait JournalSource {
    /// Every account as stored.
    fn accounts(&mut self) -> Result<Vec<Account>, StoreError>;
    /// Calls `visit` with every journal row, in (id, leg) order.
    fn scan_journal(&mut self, visit: &mut dyn FnMut(StoredRow)) -> Result<(), StoreError>;
    /// Calls `visit` with the id of every stored rejection.
    fn scan_rejections(&mut self, visit: &mut dyn FnMut(EventId)) -> Result<(), StoreError>;
}

/// Read access for services to their own tables, on connections separate from the writer's.
/// Writes never come through here: they ride on the writer's batches ([`ServiceRow`]).
pub trait ServiceReader: Send + Sync {
    /// Runs one read-only query. Placeholders are `?1`, `?2`, ... in every backend (each
    /// rewrites them to its own form); every column comes back as a [`Value`] (integers,
    /// text, bytes or NULL; no floats).
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError>;

    /// Whether a query may wait on the network, so async callers should run it on a blocking
    /// thread. Local reads from the page cache return in microseconds, cheaper than the
    /// hand-off to another thread.
    fn may_block(&self) -> bool {
        true
    }
}

/// Rewrites the `?N` placeholders of `sql` with `mark(N)`, leaving quoted literals alone.
pub fn rewrite_placeholders(sql: &str, mark: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    let mut quoted = false;
    while let Some((_, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
            digits.push(d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&mark(n)),
            Err(_) => out.push('?'),
        }
    }
    out
}

/// How a writer names itself to a second process that it refuses: process id, host and start
/// time. Both backends record it where a refused writer can read it.
pub fn writer_description() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("citypay pid {} on {} since unix time {since}", std::process::id(), host.trim())
}

/// The 16-byte big-endian form of an event id, so byte order is numeric order.
pub fn id_to_bytes(id: EventId) -> [u8; 16] {
    id.to_be_bytes()
}

/// Inverse of [`id_to_bytes`].
pub fn id_from_bytes(bytes: &[u8]) -> Result<EventId, StoreError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("event id of {} bytes", bytes.len())))?;
    Ok(EventId::from_be_bytes(array))
}

/// The ledger's own schema, for every backend.
pub const LEDGER_MIGRATIONS: &[Migration] = &[
    Migration {
        component: "ledger",
        version: 1,
        name: "accounts, journal, rejections, metadata",
        sqlite: include_str!("schema/ledger_v1.sqlite.sql"),
        postgres: include_str!("schema/ledger_v1.postgres.sql"),
    },
    Migration {
        component: "ledger",
        version: 2,
        name: "the writer lease's time bound and address",
        sqlite: "-- SQLite has one writer process, held by its lock file: nothing to lease.\n",
        postgres: include_str!("schema/ledger_v2.postgres.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        let sql = "SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?2, ?10) AND e = ?";
        let rewritten = rewrite_placeholders(sql, |n| format!("${n}"));
        assert_eq!(rewritten, "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($2, $10) AND e = ?");
    }
}
