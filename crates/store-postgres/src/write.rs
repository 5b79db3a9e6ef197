//! The writer's commit: one transaction per batch, with one statement per kind of change
//! (rows passed as arrays and expanded with `unnest`), so a batch costs a handful of round
//! trips however many events it holds.

use citypay_ledger::{Account, Effects, EventId, JournalRow, Rejection, Timestamp};
use citypay_store::{
    ACCOUNT_COLUMNS, ACCOUNT_LIMIT_COLUMNS, ACCOUNT_UPDATE_COLUMNS, AccountColumns, BatchWrite, JOURNAL_COLUMNS, ServiceRow, StoreError,
    Value, id_to_bytes, u64_to_column,
};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Statement, Transaction};
use rustc_hash::FxHashMap;

use crate::{backend, describe, lease, read};

type Param<'a> = &'a (dyn ToSql + Sync);

/// The type of each of [`JOURNAL_COLUMNS`], as binary COPY writes it.
const JOURNAL_TYPES: [Type; 16] = [
    Type::BYTEA, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::INT8,
    Type::INT8, Type::INT8, Type::BYTEA, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::INT8,
];

/// `INSERT INTO transfers (...) SELECT ... FROM unnest(...)`: one array per column but
/// `batch`, in [`JOURNAL_COLUMNS`] order (`$1`..`$15`), and the batch as `$16`.
fn insert_journal_sql() -> String {
    let unnested: Vec<(&str, &Type)> = JOURNAL_COLUMNS.iter().zip(&JOURNAL_TYPES).filter(|(c, _)| **c != "batch").map(|(c, t)| (*c, t)).collect();
    let arrays: Vec<String> = unnested.iter().enumerate().map(|(i, (_, t))| format!("${}::{}[]", i + 1, t.name())).collect();
    let names: Vec<&str> = unnested.iter().map(|(c, _)| *c).collect();
    let select: Vec<String> = JOURNAL_COLUMNS
        .iter()
        .map(|c| if *c == "batch" { format!("${}::int8", unnested.len() + 1) } else { format!("u.{c}") })
        .collect();
    format!(
        "INSERT INTO transfers ({}) SELECT {} FROM unnest({}) AS u({})",
        JOURNAL_COLUMNS.join(", "),
        select.join(", "),
        arrays.join(", "),
        names.join(", ")
    )
}

/// The same rows by binary COPY, for batches of at least [`COPY_ROWS_MIN`] rows: the server
/// reads them straight into the table where `unnest` materialised every array first. Fewer
/// rows go by INSERT, which answers in one round trip where COPY takes two.
fn copy_journal_sql() -> String {
    format!("COPY transfers ({}) FROM STDIN (FORMAT binary)", JOURNAL_COLUMNS.join(", "))
}
const COPY_ROWS_MIN: usize = 64;

const UPDATE_PENDING: &str = "UPDATE transfers AS t SET state = u.state \
    FROM unnest($1::bytea[], $2::int8[]) AS u(id, state) \
    WHERE t.id = u.id AND t.leg = 0 AND t.kind = 1";

const INSERT_REJECTIONS: &str = "INSERT INTO rejections (id, hash, status, timestamp, batch) \
    SELECT u.id, u.hash, u.status, u.timestamp, $5::int8 \
    FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[]) AS u(id, hash, status, timestamp)";

const ADVANCE_META: &str =
    "UPDATE ledger_meta SET last_batch = $1::int8, last_timestamp = $2::int8 WHERE last_batch = $1::int8 - 1";

/// `INSERT INTO accounts (...) SELECT * FROM unnest(...)`, one array per column.
fn insert_accounts_sql() -> String {
    let arrays: Vec<String> = ACCOUNT_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, if *c == "currency" { "text" } else { "int8" }))
        .collect();
    format!("INSERT INTO accounts ({}) SELECT * FROM unnest({})", ACCOUNT_COLUMNS.join(", "), arrays.join(", "))
}

/// `UPDATE accounts ... FROM unnest(...)`: the id and the update columns, one array each.
fn update_accounts_sql() -> String {
    let sets: Vec<String> = ACCOUNT_UPDATE_COLUMNS.iter().map(|c| format!("{c} = u.{c}")).collect();
    let arrays: Vec<String> = (1..=ACCOUNT_UPDATE_COLUMNS.len() + 1).map(|i| format!("${i}::int8[]")).collect();
    format!(
        "UPDATE accounts AS a SET {} FROM unnest({}) AS u(id, {}) WHERE a.id = u.id",
        sets.join(", "),
        arrays.join(", "),
        ACCOUNT_UPDATE_COLUMNS.join(", ")
    )
}

/// The writer's statements, prepared once per connection.
pub(crate) struct Statements {
    /// See [`read::LOOKUP`].
    pub(crate) lookup: Statement,
    renew: Statement,
    journal: Statement,
    copy_journal: Statement,
    pending: Statement,
    insert_accounts: Statement,
    update_accounts: Statement,
    rejections: Statement,
    meta: Statement,
}

/// What only the writer has: its fencing epoch and its prepared statements.
pub(crate) struct Writer {
    /// The epoch this writer took; every commit checks it is still the current one.
    pub(crate) epoch: i64,
    /// How long each renewal of the lease lasts.
    pub(crate) ttl_ms: i64,
    /// Warnings of a cancelled wait for the synchronous standby seen on this connection.
    cancelled: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) statements: Statements,
    /// Prepared upserts of service rows, by SQL text.
    service: FxHashMap<String, Statement>,
}

impl Writer {
    /// Prepares the writer's statements on `client`, whose schema is migrated.
    pub(crate) fn prepare(client: &mut Client, epoch: i64, ttl_ms: i64, cancelled: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Result<Writer, StoreError> {
        let mut prepare = |sql: &str| client.prepare(sql).map_err(backend);
        let statements = Statements {
            lookup: prepare(read::LOOKUP)?,
            renew: prepare(lease::RENEW)?,
            journal: prepare(&insert_journal_sql())?,
            copy_journal: prepare(&copy_journal_sql())?,
            pending: prepare(UPDATE_PENDING)?,
            insert_accounts: prepare(&insert_accounts_sql())?,
            update_accounts: prepare(&update_accounts_sql())?,
            rejections: prepare(INSERT_REJECTIONS)?,
            meta: prepare(ADVANCE_META)?,
        };
        Ok(Writer { epoch, ttl_ms, cancelled, statements, service: FxHashMap::default() })
    }

    /// Renews the lease of an idle writer (a commit renews it too).
    pub(crate) fn renew(&mut self, client: &mut Client) -> Result<(), StoreError> {
        lease::renew(client, &self.statements.renew, self.epoch, self.ttl_ms)
    }

    /// Writes `batch` in one transaction after checking the fence; nothing is stored on error.
    pub(crate) fn commit(&mut self, client: &mut Client, batch: &BatchWrite<'_>) -> Result<(), StoreError> {
        // Dropping `tx` on an error path rolls it back.
        let mut tx = client.transaction().map_err(backend)?;
        lease::check(&mut tx, &self.statements.renew, self.epoch, self.ttl_ms)?;
        self.write(&mut tx, batch)?;
        let before = self.cancelled.load(std::sync::atomic::Ordering::SeqCst);
        tx.commit().map_err(commit_failed)?;
        // Committed here, but its wait for the standby was cancelled: it may be lost in a
        // failover, so it is not acknowledged (the writer reloads and the callers retry).
        if self.cancelled.load(std::sync::atomic::Ordering::SeqCst) != before {
            return Err(StoreError::OutcomeUnknown("the commit's wait for the synchronous standby was cancelled".into()));
        }
        Ok(())
    }

    fn write(&mut self, tx: &mut Transaction<'_>, batch: &BatchWrite<'_>) -> Result<(), StoreError> {
        let fx: &Effects = batch.effects;
        let s = &self.statements;
        let batch_column = u64_to_column(batch.batch);
        if fx.journal.len() >= COPY_ROWS_MIN {
            copy_journal(tx, &s.copy_journal, &fx.journal, batch_column)?;
        } else if !fx.journal.is_empty() {
            JournalArrays::of(&fx.journal).insert(tx, &s.journal, batch_column)?;
        }
        update_pending(tx, &s.pending, fx)?;
        if !fx.accounts_created.is_empty() {
            insert_accounts(tx, &s.insert_accounts, &fx.accounts_created)?;
        }
        update_accounts(tx, &s.update_accounts, &fx.accounts_updated)?;
        update_limits(tx, &fx.limits_updated)?;
        if !fx.rejections.is_empty() {
            insert_rejections(tx, &s.rejections, &fx.rejections, batch_column)?;
        }
        for row in batch.rows {
            self.write_service_row(tx, row)?;
        }
        advance_meta(tx, &self.statements.meta, batch.batch, fx.timestamp)
    }

    fn write_service_row(&mut self, tx: &mut Transaction<'_>, row: &ServiceRow) -> Result<(), StoreError> {
        let (sql, params) = service_row(row);
        let statement = match self.service.get(&sql) {
            Some(statement) => statement.clone(),
            None => {
                // Statements prepared in a transaction outlive it, even if it rolls back.
                let statement = tx.prepare(&sql).map_err(backend)?;
                self.service.insert(sql, statement.clone());
                statement
            }
        };
        tx.execute(&statement, &params).map_err(backend)?;
        Ok(())
    }
}

/// A COMMIT that failed on the connection (rather than being refused by the server) may have
/// been applied.
fn commit_failed(error: postgres::Error) -> StoreError {
    if error.is_closed() || error.code().is_none() {
        StoreError::OutcomeUnknown(format!("the connection failed during COMMIT: {}", describe(&error)))
    } else {
        backend(error)
    }
}

/// The journal rows of a batch as one array per column.
struct JournalArrays<'a> {
    id: Vec<Vec<u8>>,
    leg: Vec<i64>,
    kind: Vec<i64>,
    debit: Vec<i64>,
    credit: Vec<i64>,
    amount: Vec<i64>,
    currency: Vec<&'a str>,
    code: Vec<i64>,
    class: Vec<i64>,
    user_data: Vec<i64>,
    pending_id: Vec<Option<Vec<u8>>>,
    deadline: Vec<Option<i64>>,
    state: Vec<Option<i64>>,
    timestamp: Vec<i64>,
    hash: Vec<i64>,
}

impl<'a> JournalArrays<'a> {
    fn of(rows: &'a [JournalRow]) -> JournalArrays<'a> {
        let rows: Vec<citypay_store::JournalColumns<'a>> = rows.iter().map(citypay_store::JournalColumns::of).collect();
        let column = |f: &dyn Fn(&citypay_store::JournalColumns<'a>) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        JournalArrays {
            id: rows.iter().map(|c| c.id.to_vec()).collect(),
            leg: column(&|c| c.leg),
            kind: column(&|c| c.kind),
            debit: column(&|c| c.debit),
            credit: column(&|c| c.credit),
            amount: column(&|c| c.amount),
            currency: rows.iter().map(|c| c.currency).collect(),
            code: column(&|c| c.code),
            class: column(&|c| c.class),
            user_data: column(&|c| c.user_data),
            pending_id: rows.iter().map(|c| c.pending_id.map(|id| id.to_vec())).collect(),
            deadline: rows.iter().map(|c| c.deadline).collect(),
            state: rows.iter().map(|c| c.state).collect(),
            timestamp: column(&|c| c.timestamp),
            hash: column(&|c| c.hash),
        }
    }

    fn insert(&self, tx: &mut Transaction<'_>, statement: &Statement, batch: i64) -> Result<(), StoreError> {
        let params: [Param<'_>; 16] = [
            &self.id, &self.leg, &self.kind, &self.debit, &self.credit, &self.amount, &self.currency,
            &self.code, &self.class, &self.user_data, &self.pending_id, &self.deadline, &self.state,
            &self.timestamp, &self.hash, &batch,
        ];
        let inserted = tx.execute(statement, &params).map_err(backend)?;
        expect_rows(inserted, self.id.len(), "journal rows inserted")
    }
}

/// Writes `rows` by binary COPY ([`copy_journal_sql`]).
fn copy_journal(tx: &mut Transaction<'_>, statement: &Statement, rows: &[JournalRow], batch: i64) -> Result<(), StoreError> {
    let mut writer = BinaryCopyInWriter::new(tx.copy_in(statement).map_err(backend)?, &JOURNAL_TYPES);
    for row in rows {
        let c = citypay_store::JournalColumns::of(row);
        let values: [Param<'_>; 16] = citypay_store::journal_values!(c, batch);
        writer.write(&values).map_err(backend)?;
    }
    let copied = writer.finish().map_err(backend)?;
    expect_rows(copied, rows.len(), "journal rows copied")
}

fn update_pending(tx: &mut Transaction<'_>, statement: &Statement, fx: &Effects) -> Result<(), StoreError> {
    if fx.pending_updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<Vec<u8>> = fx.pending_updates.iter().map(|u| key(u.pending_id)).collect();
    let states: Vec<i64> = fx.pending_updates.iter().map(|u| u.state as i64).collect();
    let updated = tx.execute(statement, &[&ids, &states]).map_err(backend)?;
    expect_rows(updated, ids.len(), "stored pending transfers updated")
}

fn insert_accounts(tx: &mut Transaction<'_>, statement: &Statement, accounts: &[Account]) -> Result<(), StoreError> {
    let rows: Vec<AccountColumns> = accounts.iter().map(AccountColumns::of).collect();
    let currency: Vec<&str> = rows.iter().map(|c| c.currency.as_str()).collect();
    let ints: Vec<Vec<Option<i64>>> = (0..25).map(|i| rows.iter().map(|c| c.ints[i]).collect()).collect();
    // Column order of ACCOUNT_COLUMNS: the id, the currency, then the other integers.
    let mut params: Vec<Param<'_>> = Vec::with_capacity(ACCOUNT_COLUMNS.len());
    params.push(&ints[0]);
    params.push(&currency);
    params.extend(ints[1..].iter().map(|column| column as Param<'_>));
    let inserted = tx.execute(statement, &params).map_err(backend)?;
    expect_rows(inserted, accounts.len(), "accounts inserted")
}

/// Writes each touched account's balances and window usage; every one must exist.
fn update_accounts(tx: &mut Transaction<'_>, statement: &Statement, accounts: &[Account]) -> Result<(), StoreError> {
    if accounts.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = accounts.iter().map(|a| u64_to_column(a.id)).collect();
    let values: Vec<[i64; 10]> = accounts.iter().map(AccountColumns::update_values).collect();
    let columns: Vec<Vec<i64>> = (0..10).map(|i| values.iter().map(|v| v[i]).collect()).collect();
    let mut params: Vec<Param<'_>> = Vec::with_capacity(11);
    params.push(&ids);
    params.extend(columns.iter().map(|column| column as Param<'_>));
    let updated = tx.execute(statement, &params).map_err(backend)?;
    expect_rows(updated, accounts.len(), "stored accounts updated")
}

/// Writes the limits of accounts whose limits changed (rare: a wallet's class was raised), one
/// statement per account.
fn update_limits(tx: &mut Transaction<'_>, accounts: &[Account]) -> Result<(), StoreError> {
    if accounts.is_empty() {
        return Ok(());
    }
    let sets: Vec<String> = ACCOUNT_LIMIT_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ${}", i + 2)).collect();
    let statement = tx.prepare(&format!("UPDATE accounts SET {} WHERE id = $1", sets.join(", "))).map_err(backend)?;
    for account in accounts {
        let id = u64_to_column(account.id);
        let values = AccountColumns::limit_values(account);
        let mut params: Vec<Param<'_>> = Vec::with_capacity(12);
        params.push(&id);
        params.extend(values.iter().map(|v| v as Param<'_>));
        let updated = tx.execute(&statement, &params).map_err(backend)?;
        expect_rows(updated, 1, "account limits updated")?;
    }
    Ok(())
}

fn insert_rejections(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    rejections: &[Rejection],
    batch: i64,
) -> Result<(), StoreError> {
    let ids: Vec<Vec<u8>> = rejections.iter().map(|r| key(r.id)).collect();
    let hashes: Vec<i64> = rejections.iter().map(|r| u64_to_column(r.hash)).collect();
    let statuses: Vec<i64> = rejections.iter().map(|r| i64::from(r.status.code())).collect();
    let timestamps: Vec<i64> = rejections.iter().map(|r| u64_to_column(r.timestamp.0)).collect();
    let inserted = tx.execute(statement, &[&ids, &hashes, &statuses, &timestamps, &batch]).map_err(backend)?;
    expect_rows(inserted, ids.len(), "rejections inserted")
}

/// Records the batch as the last one; it must follow the stored one.
fn advance_meta(tx: &mut Transaction<'_>, statement: &Statement, batch: u64, at: Timestamp) -> Result<(), StoreError> {
    let updated = tx.execute(statement, &[&u64_to_column(batch), &u64_to_column(at.0)]).map_err(backend)?;
    if updated != 1 {
        return Err(StoreError::Corrupt(format!("batch {batch} does not follow the stored one")));
    }
    Ok(())
}

/// An event id as a BYTEA parameter.
pub(crate) fn key(id: EventId) -> Vec<u8> {
    id_to_bytes(id).to_vec()
}

fn expect_rows(affected: u64, expected: usize, what: &str) -> Result<(), StoreError> {
    if usize::try_from(affected).ok() == Some(expected) {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("{affected} {what}, expected {expected}")))
    }
}

/// The upsert of a service row and its parameters. Every value is bound with an explicit
/// type (`$n::int8`, `::text`, `::bytea`), which the column's assignment cast converts, and
/// NULL is written as a literal, so no parameter needs its type guessed from the column.
fn service_row(row: &ServiceRow) -> (String, Vec<Param<'_>>) {
    let mut params: Vec<Param<'_>> = Vec::new();
    let marks: Vec<String> = row
        .values()
        .map(|value| {
            let (param, cast): (Param<'_>, &str) = match value {
                Value::Null => return "NULL".to_owned(),
                Value::Int(v) => (v, "int8"),
                Value::Text(s) => (s, "text"),
                Value::Blob(b) => (b, "bytea"),
            };
            params.push(param);
            format!("${}::{cast}", params.len())
        })
        .collect();
    let sql = row.upsert_sql(|i| marks.get(i - 1).cloned().unwrap_or_default());
    (sql, params)
}

#[cfg(test)]
mod tests {
    /// The journal's statements come from its column list; this is the text they replace.
    #[test]
    fn the_journal_statements_name_every_column_in_order() {
        assert_eq!(
            super::insert_journal_sql(),
            "INSERT INTO transfers (id, leg, kind, debit_account, credit_account, amount, currency, code, class, \
             user_data, pending_id, deadline, state, timestamp, batch, hash) \
             SELECT u.id, u.leg, u.kind, u.debit_account, u.credit_account, u.amount, u.currency, u.code, \
             u.class, u.user_data, u.pending_id, u.deadline, u.state, u.timestamp, $16::int8, u.hash \
             FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
             $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::bytea[], $12::int8[], $13::int8[], \
             $14::int8[], $15::int8[]) AS u(id, leg, kind, debit_account, credit_account, amount, \
             currency, code, class, user_data, pending_id, deadline, state, timestamp, hash)"
        );
        assert_eq!(
            super::copy_journal_sql(),
            "COPY transfers (id, leg, kind, debit_account, credit_account, amount, currency, code, class, \
             user_data, pending_id, deadline, state, timestamp, batch, hash) FROM STDIN (FORMAT binary)"
        );
    }
}
