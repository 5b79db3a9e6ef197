//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a commit is on
//! disk before it returns. One writer per file, enforced by an exclusive lock on `PATH.lock`
//! that also records who holds it; readers (the audit) need no lock. The WAL is checkpointed by
//! a background connection, not by the writer's commits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use citypay_ledger::{
    Currency, EventId, JournalKind, JournalRow, Leg, OpenPending, PendingState, Status, StoredEvent,
    Timestamp,
};
use citypay_store::{
    ACCOUNT_COLUMNS, ACCOUNT_LIMIT_COLUMNS, ACCOUNT_UPDATE_COLUMNS, AccountColumns, BatchWrite, JOURNAL_COLUMNS, JournalColumns, JournalSource,
    LEDGER_MIGRATIONS, LedgerStore, Migration, RowShape, ServiceRow, Snapshot, StoreError, StoredRow, Value,
    id_from_bytes, id_to_bytes, u64_from_column, u64_to_column,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, types::ToSqlOutput};

mod checkpoint;
mod reader;
pub use citypay_sqlite_page_cache as page_cache;
pub use reader::SqliteReader;
use rustc_hash::FxHashMap;

/// A SQLite ledger store. Open it with [`SqliteStore::open_writer`] for the shard's writer or
/// [`SqliteStore::open_reader`] for a consistent read-only view.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The writer's background checkpoints; stopped before the lock is released.
    _checkpointer: Option<checkpoint::Checkpointer>,
    /// Held for as long as the store lives; dropping it (or dying) releases the writer lock.
    _lock: Option<File>,
    texts: StatementTexts,
    /// A batch's reads (its guards, its lookups) run in the transaction its commit ends: one
    /// read lock for the batch, where each read in autocommit took and dropped its own.
    batch_open: bool,
}

/// The text of the writer's per-row statements, by shape: a batch of thousands of service
/// rows and guards would otherwise format each one's SQL before the statement cache could look
/// it up. Shapes are the services' constants, so the maps stay small; a map that passes
/// [`SHAPES_MAX`] anyway (commands forwarded by other servers name their own columns) starts
/// again empty.
const SHAPES_MAX: usize = 4_096;

#[derive(Debug)]
struct StatementTexts {
    insert_transfers: String,
    insert_transfer: String,
    upserts: FxHashMap<RowShape, String>,
    reads: FxHashMap<(&'static str, Vec<&'static str>, Vec<&'static str>), String>,
}

impl Default for StatementTexts {
    fn default() -> StatementTexts {
        StatementTexts {
            insert_transfers: insert_transfers_sql(JOURNAL_ROWS_PER_INSERT),
            insert_transfer: insert_transfers_sql(1),
            upserts: FxHashMap::default(),
            reads: FxHashMap::default(),
        }
    }
}

pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// One plan per statement, whatever is bound to it: without this SQLite prepares a cached
/// statement again whenever the value bound to its `LIMIT` changes (about 3% of a simulated
/// day's CPU went to re-preparing), and every query here is by key, so no value would change
/// its plan.
pub(crate) fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ()).map_err(backend)
}

/// Journal rows written by one statement: a statement per row cost the writer as much in
/// stepping and resetting as in the rows themselves. The rest of a batch (fewer than this)
/// goes one row per statement, so only two statement texts are ever cached.
const JOURNAL_ROWS_PER_INSERT: usize = 32;

/// Statements the writer keeps compiled (rusqlite keeps 16 by default).
const WRITER_STATEMENTS_CACHED: usize = 512;

/// Opens a connection to the database at `path`; every connection of the store opens here,
/// so SQLite's page cache wrapper is installed before SQLite first initialises.
pub(crate) fn open(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    page_cache::install();
    Connection::open_with_flags(path, flags).map_err(backend)
}

/// `INSERT INTO transfers (...) VALUES (...), ...` of `rows` rows.
fn insert_transfers_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; JOURNAL_COLUMNS.len()].join(", "));
    format!("INSERT INTO transfers ({}) VALUES {}", JOURNAL_COLUMNS.join(", "), vec![row; rows].join(", "))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` as its one writer, applying the
    /// ledger's migrations and then `extra` (the services' own), each at most once.
    pub fn open_writer(path: &Path, extra: &[Migration]) -> Result<SqliteStore, StoreError> {
        let lock = acquire_writer_lock(path)?;
        let conn = open(path, OpenFlags::default())?;
        // WAL with synchronous=FULL: a commit returns only after the WAL is fsynced.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA cache_size = -262144;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 65536;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        stable_plans(&conn)?;
        // The writer runs a few dozen statements (the ledger's, each service row's upsert,
        // each guard's read): past the cache, each would be compiled again every batch.
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS_CACHED);
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("journal_mode is {mode}, WAL is required")));
        }
        let mut store = SqliteStore { conn, path: path.to_owned(), _checkpointer: None, _lock: Some(lock), texts: StatementTexts::default(), batch_open: false };
        store.migrate(LEDGER_MIGRATIONS)?;
        store.migrate(extra)?;
        store._checkpointer = Some(checkpoint::Checkpointer::start(path)?);
        Ok(store)
    }

    /// Opens an existing database read-only, inside one read transaction so every query sees
    /// the same snapshot even while a writer commits.
    pub fn open_reader(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::Backend(format!("{} does not exist", path.display())));
        }
        let conn = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; BEGIN;").map_err(backend)?;
        conn.query_row("SELECT count(*) FROM ledger_meta", [], |r| r.get::<_, i64>(0))
            .map_err(backend)?;
        Ok(SqliteStore { conn, path: path.to_owned(), _checkpointer: None, _lock: None, texts: StatementTexts::default(), batch_open: false })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the batch's transaction at its first read (a reader's connection is in one
    /// already). Immediate: it takes the write lock now, waiting (the busy timeout) while a
    /// checkpoint restarts the log; a read transaction that wanted it only at its first write
    /// would get SQLITE_BUSY at once.
    fn begin_batch(&mut self) -> Result<(), StoreError> {
        if !self.batch_open && self.conn.is_autocommit() {
            self.conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut begin| begin.execute([])).map_err(backend)?;
            self.batch_open = true;
        }
        Ok(())
    }

    /// Ends the batch's transaction, if one is open, without writing: after a read failed
    /// (the writer answers the batch with the error and commits nothing) and before a load.
    fn abandon_batch(&mut self) {
        if std::mem::take(&mut self.batch_open) && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// `read` inside the batch's transaction; a failed read ends it.
    fn in_batch<T>(&mut self, read: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.begin_batch()?;
        let result = read(self);
        if result.is_err() {
            self.abandon_batch();
        }
        result
    }

    /// Direct access for service queries that read their own tables.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn migrate(&mut self, migrations: &[Migration]) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
                    PRIMARY KEY (component, version))",
            )
            .map_err(backend)?;
        for migration in migrations {
            let applied: Option<i64> = self
                .conn
                .query_row(
                    "SELECT max(version) FROM schema_migrations WHERE component = ?1",
                    [migration.component],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            let applied = applied.unwrap_or(0);
            if applied >= migration.version {
                continue;
            }
            let tx = self.conn.transaction().map_err(backend)?;
            tx.execute_batch(migration.sqlite).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (component, version, name) VALUES (?1, ?2, ?3)",
                params![migration.component, migration.version, migration.name],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        check_not_newer(&self.conn, migrations)
    }
}

fn check_not_newer(conn: &Connection, migrations: &[Migration]) -> Result<(), StoreError> {
    for component in migrations.iter().map(|m| m.component) {
        let known = migrations.iter().filter(|m| m.component == component).map(|m| m.version).max();
        let found: Option<i64> = conn
            .query_row("SELECT max(version) FROM schema_migrations WHERE component = ?1", [component], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        if let (Some(found), Some(known)) = (found, known)
            && found > known
        {
            return Err(StoreError::SchemaTooNew { component: component.to_owned(), found, known });
        }
    }
    Ok(())
}

/// Takes the exclusive lock on `PATH.lock` and writes who holds it; fails with the holder's
/// description if another process has it. The OS drops the lock when the process dies.
fn acquire_writer_lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", Path::new(&lock_path).display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = if holder.trim().is_empty() { "another process".to_owned() } else { holder.trim().to_owned() };
            return Err(StoreError::Locked { holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::Backend(format!("lock: {e}"))),
    }
    let holder = citypay_store::writer_description();
    let write = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(holder.as_bytes()));
    write.map_err(|e| StoreError::Backend(format!("lock file: {e}")))?;
    Ok(file)
}

fn value_to_sql(value: &Value) -> ToSqlOutput<'_> {
    use rusqlite::types::ValueRef;
    match value {
        Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
        Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
    }
}

fn write_service_row(tx: &Connection, texts: &mut FxHashMap<RowShape, String>, row: &ServiceRow) -> Result<(), StoreError> {
    if texts.len() >= SHAPES_MAX {
        texts.clear();
    }
    let sql = texts.entry(row.shape()).or_insert_with(|| row.upsert_sql(|i| format!("?{i}")));
    let mut stmt = tx.prepare_cached(sql).map_err(backend)?;
    let values: Vec<ToSqlOutput<'_>> = row.values().map(value_to_sql).collect();
    stmt.execute(rusqlite::params_from_iter(values)).map_err(backend)?;
    Ok(())
}

impl LedgerStore for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.abandon_batch();
        let accounts = read_accounts(&self.conn)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, debit_account, credit_account, amount, currency, code, class, user_data, \
                 timestamp, deadline FROM transfers WHERE kind = 1 AND state = 1",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        let mut open_pending = Vec::new();
        while let Some(r) = rows.next().map_err(backend)? {
            let leg = Leg {
                debit: u64_from_column(r.get(1).map_err(backend)?),
                credit: u64_from_column(r.get(2).map_err(backend)?),
                amount: r.get(3).map_err(backend)?,
                currency: currency(&r.get::<_, String>(4).map_err(backend)?)?,
                code: r.get(5).map_err(backend)?,
                class: r.get(6).map_err(backend)?,
                user_data: u64_from_column(r.get(7).map_err(backend)?),
            };
            open_pending.push(OpenPending {
                id: id_from_bytes(&r.get::<_, Vec<u8>>(0).map_err(backend)?)?,
                leg,
                created_at: Timestamp(u64_from_column(r.get(8).map_err(backend)?)),
                deadline: r.get::<_, Option<i64>>(9).map_err(backend)?.map(|d| Timestamp(u64_from_column(d))),
            });
        }
        let max_id = |table: &str| -> Result<EventId, StoreError> {
            let bytes: Option<Vec<u8>> = self
                .conn
                .query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))
                .map_err(backend)?;
            bytes.map_or(Ok(0), |b| id_from_bytes(&b))
        };
        let stored_id_max = max_id("transfers")?.max(max_id("rejections")?);
        let (last_batch, last_timestamp): (i64, i64) = self
            .conn
            .query_row("SELECT last_batch, last_timestamp FROM ledger_meta", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        Ok(Snapshot {
            accounts,
            open_pending,
            stored_id_max,
            last_timestamp: Timestamp(u64_from_column(last_timestamp)),
            last_batch: u64_from_column(last_batch),
        })
    }

    fn lookup(&mut self, ids: &[EventId]) -> Result<FxHashMap<EventId, StoredEvent>, StoreError> {
        self.in_batch(|store| lookup(&store.conn, ids))
    }

    fn commit(&mut self, batch: &BatchWrite<'_>) -> Result<(), StoreError> {
        self.begin_batch()?;
        let written = write_batch(&self.conn, &mut self.texts, batch)
            .and_then(|()| self.conn.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([])).map(drop).map_err(backend));
        if written.is_err() {
            self.abandon_batch();
        }
        self.batch_open = false;
        written
    }

    fn read_row(
        &mut self,
        table: &'static str,
        key: &[(&'static str, Value)],
        columns: &[&'static str],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        self.in_batch(|store| {
            if store.texts.reads.len() >= SHAPES_MAX {
                store.texts.reads.clear();
            }
            let shape = (table, key.iter().map(|(n, _)| *n).collect(), columns.to_vec());
            let sql = store.texts.reads.entry(shape).or_insert_with(|| citypay_store::read_row_query(table, key, columns).0);
            let values: Vec<Value> = key.iter().map(|(_, v)| v.clone()).collect();
            Ok(reader::run(&store.conn, sql, &values)?.into_iter().next())
        })
    }
}

/// The stored answers for `ids` (see [`LedgerStore::lookup`]).
fn lookup(conn: &Connection, ids: &[EventId]) -> Result<FxHashMap<EventId, StoredEvent>, StoreError> {
    let mut found = FxHashMap::default();
    let mut transfer =
        conn.prepare_cached("SELECT hash, kind, state FROM transfers WHERE id = ?1 AND leg = 0").map_err(backend)?;
    let mut rejection = conn.prepare_cached("SELECT hash, status FROM rejections WHERE id = ?1").map_err(backend)?;
    for id in ids {
        let key = id_to_bytes(*id);
        let row = transfer
            .query_row([&key[..]], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u8>(1)?, r.get::<_, Option<u8>>(2)?)))
            .optional()
            .map_err(backend)?;
        if let Some((hash, kind, state)) = row {
            let pending_state = if kind == JournalKind::Pending as u8 {
                Some(state.and_then(PendingState::from_code).ok_or_else(|| corrupt("pending state"))?)
            } else {
                None
            };
            found.insert(*id, StoredEvent { hash: u64_from_column(hash), status: Status::Ok, pending_state });
            continue;
        }
        let row = rejection
            .query_row([&key[..]], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u8>(1)?)))
            .optional()
            .map_err(backend)?;
        if let Some((hash, status)) = row {
            let status = Status::from_code(status).ok_or_else(|| corrupt("rejection status"))?;
            found.insert(*id, StoredEvent { hash: u64_from_column(hash), status, pending_state: None });
        }
    }
    Ok(found)
}

/// Every write of a batch, in the transaction the caller opened and commits.
fn write_batch(tx: &Connection, texts: &mut StatementTexts, batch: &BatchWrite<'_>) -> Result<(), StoreError> {
    let fx = batch.effects;
    let batch_column = u64_to_column(batch.batch);
    let chunks = fx.journal.chunks_exact(JOURNAL_ROWS_PER_INSERT);
    let rest = chunks.remainder();
    if chunks.len() > 0 {
        let mut insert = tx.prepare_cached(&texts.insert_transfers).map_err(backend)?;
        for chunk in chunks {
            for (i, row) in chunk.iter().enumerate() {
                bind_journal_row(&mut insert, i * JOURNAL_COLUMNS.len(), row, batch_column)?;
            }
            insert.raw_execute().map_err(backend)?;
        }
    }
    if !rest.is_empty() {
        let mut insert = tx.prepare_cached(&texts.insert_transfer).map_err(backend)?;
        for row in rest {
            bind_journal_row(&mut insert, 0, row, batch_column)?;
            insert.raw_execute().map_err(backend)?;
        }
    }
    let mut update = tx
        .prepare_cached("UPDATE transfers SET state = ?2 WHERE id = ?1 AND leg = 0 AND kind = 1")
        .map_err(backend)?;
    for u in &fx.pending_updates {
        let changed = update.execute(params![&id_to_bytes(u.pending_id)[..], u.state as u8]).map_err(backend)?;
        if changed != 1 {
            return Err(StoreError::Corrupt(format!("pending transfer {} not stored", u.pending_id)));
        }
    }
    write_accounts(tx, fx)?;
    let mut reject = tx
        .prepare_cached("INSERT INTO rejections (id, hash, status, timestamp, batch) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(backend)?;
    for r in &fx.rejections {
        reject
            .execute(params![
                &id_to_bytes(r.id)[..],
                u64_to_column(r.hash),
                r.status.code(),
                u64_to_column(r.timestamp.0),
                batch_column
            ])
            .map_err(backend)?;
    }
    for row in batch.rows {
        write_service_row(tx, &mut texts.upserts, row)?;
    }
    let meta = tx
        .prepare_cached("UPDATE ledger_meta SET last_batch = ?1, last_timestamp = ?2 WHERE last_batch = ?1 - 1")
        .and_then(|mut meta| meta.execute(params![batch_column, u64_to_column(fx.timestamp.0)]))
        .map_err(backend)?;
    if meta != 1 {
        return Err(StoreError::Corrupt(format!("batch {} does not follow the stored one", batch.batch)));
    }
    Ok(())
}

/// Binds `row` to the sixteen parameters after `offset` of a journal insert.
fn bind_journal_row(stmt: &mut rusqlite::CachedStatement<'_>, offset: usize, row: &JournalRow, batch: i64) -> Result<(), StoreError> {
    let c = JournalColumns::of(row);
    let values: [&dyn rusqlite::ToSql; JOURNAL_COLUMNS.len()] = citypay_store::journal_values!(c, batch);
    for (i, value) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(offset + i + 1, value).map_err(backend)?;
    }
    Ok(())
}

fn write_accounts(tx: &Connection, fx: &citypay_ledger::Effects) -> Result<(), StoreError> {
    if !fx.accounts_created.is_empty() {
        let marks: Vec<String> = (1..=ACCOUNT_COLUMNS.len()).map(|i| format!("?{i}")).collect();
        let sql = format!("INSERT INTO accounts ({}) VALUES ({})", ACCOUNT_COLUMNS.join(", "), marks.join(", "));
        let mut insert = tx.prepare_cached(&sql).map_err(backend)?;
        for account in &fx.accounts_created {
            let c = AccountColumns::of(account);
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(26);
            values.push(&c.ints[0]);
            values.push(&c.currency);
            values.extend(c.ints[1..].iter().map(|v| v as &dyn rusqlite::ToSql));
            insert.execute(values.as_slice()).map_err(backend)?;
        }
    }
    let sets: Vec<String> = ACCOUNT_UPDATE_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 2)).collect();
    let sql = format!("UPDATE accounts SET {} WHERE id = ?1", sets.join(", "));
    let mut update = tx.prepare_cached(&sql).map_err(backend)?;
    for account in &fx.accounts_updated {
        let v = AccountColumns::update_values(account);
        let changed = update
            .execute(params![u64_to_column(account.id), v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]])
            .map_err(backend)?;
        if changed != 1 {
            return Err(StoreError::Corrupt(format!("account {} not stored", account.id)));
        }
    }
    if !fx.limits_updated.is_empty() {
        let sets: Vec<String> = ACCOUNT_LIMIT_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 2)).collect();
        let sql = format!("UPDATE accounts SET {} WHERE id = ?1", sets.join(", "));
        let mut update = tx.prepare_cached(&sql).map_err(backend)?;
        for account in &fx.limits_updated {
            let v = AccountColumns::limit_values(account);
            let id = u64_to_column(account.id);
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(12);
            values.push(&id);
            values.extend(v.iter().map(|v| v as &dyn rusqlite::ToSql));
            if update.execute(values.as_slice()).map_err(backend)? != 1 {
                return Err(StoreError::Corrupt(format!("account {} not stored", account.id)));
            }
        }
    }
    Ok(())
}

fn read_accounts(conn: &Connection) -> Result<Vec<citypay_ledger::Account>, StoreError> {
    let sql = format!("SELECT {} FROM accounts ORDER BY id", ACCOUNT_COLUMNS.join(", "));
    let mut stmt = conn.prepare(&sql).map_err(backend)?;
    let mut rows = stmt.query([]).map_err(backend)?;
    let mut accounts = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        let mut ints = [None; 25];
        ints[0] = r.get(0).map_err(backend)?;
        for (i, slot) in ints.iter_mut().enumerate().skip(1) {
            *slot = r.get(i + 1).map_err(backend)?;
        }
        let columns = AccountColumns { currency: r.get(1).map_err(backend)?, ints };
        accounts.push(columns.decode()?);
    }
    Ok(accounts)
}

fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::parse(code).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

impl JournalSource for SqliteStore {
    fn accounts(&mut self) -> Result<Vec<citypay_ledger::Account>, StoreError> {
        read_accounts(&self.conn)
    }

    fn scan_journal(&mut self, visit: &mut dyn FnMut(StoredRow)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, leg, kind, debit_account, credit_account, amount, currency, code, class, \
                 user_data, pending_id, deadline, state, timestamp, batch, hash FROM transfers ORDER BY id, leg",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        let mut last_currency = (String::new(), Currency::CNY);
        while let Some(r) = rows.next().map_err(backend)? {
            let code: String = r.get(6).map_err(backend)?;
            if code != last_currency.0 {
                last_currency = (code.clone(), currency(&code)?);
            }
            let kind = r.get::<_, u8>(2).map_err(backend)?;
            let kind = JournalKind::from_code(kind).ok_or_else(|| corrupt("journal kind"))?;
            let pending_id: Option<Vec<u8>> = r.get(10).map_err(backend)?;
            let state: Option<u8> = r.get(12).map_err(backend)?;
            let row = JournalRow {
                id: id_from_bytes(&r.get::<_, Vec<u8>>(0).map_err(backend)?)?,
                leg_index: r.get(1).map_err(backend)?,
                kind,
                leg: Leg {
                    debit: u64_from_column(r.get(3).map_err(backend)?),
                    credit: u64_from_column(r.get(4).map_err(backend)?),
                    amount: r.get(5).map_err(backend)?,
                    currency: last_currency.1,
                    code: r.get(7).map_err(backend)?,
                    class: r.get(8).map_err(backend)?,
                    user_data: u64_from_column(r.get(9).map_err(backend)?),
                },
                pending_id: pending_id.map_or(Ok(0), |b| id_from_bytes(&b))?,
                deadline: r.get::<_, Option<i64>>(11).map_err(backend)?.map(|d| Timestamp(u64_from_column(d))),
                timestamp: Timestamp(u64_from_column(r.get(13).map_err(backend)?)),
                hash: u64_from_column(r.get(15).map_err(backend)?),
            };
            let state = match state {
                None => None,
                Some(code) => Some(PendingState::from_code(code).ok_or_else(|| corrupt("pending state"))?),
            };
            visit(StoredRow { row, state, batch: u64_from_column(r.get(14).map_err(backend)?) });
        }
        Ok(())
    }

    fn scan_rejections(&mut self, visit: &mut dyn FnMut(EventId)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("SELECT id FROM rejections ORDER BY id").map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            visit(id_from_bytes(&r.get::<_, Vec<u8>>(0).map_err(backend)?)?);
        }
        Ok(())
    }
}
