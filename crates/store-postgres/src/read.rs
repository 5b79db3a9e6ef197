//! Queries that read the ledger back, and the decoding of their rows. Every integer column is
//! a BIGINT; narrower fields are range-checked on the way out.

use citypay_ledger::{
    Account, Currency, EventId, JournalKind, JournalRow, Leg, OpenPending, PendingState, Status,
    StoredEvent, Timestamp,
};
use citypay_store::{
    ACCOUNT_COLUMNS, AccountColumns, Snapshot, StoreError, StoredRow, id_from_bytes,
    u64_from_column,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Row, RowIter, ToStatement};
use rustc_hash::FxHashMap;

use crate::backend;

/// The leg-0 journal row and the rejection of each id in `$1`: `(id, hash, kind, state,
/// status)`, with `kind` NULL on rejections.
pub(crate) const LOOKUP: &str = "SELECT id, hash, kind, state, NULL::int8 FROM transfers \
    WHERE id = ANY($1::bytea[]) AND leg = 0 \
    UNION ALL SELECT id, hash, NULL, NULL, status FROM rejections WHERE id = ANY($1::bytea[])";

const OPEN_PENDING: &str = "SELECT id, debit_account, credit_account, amount, currency, code, \
    class, user_data, timestamp, deadline FROM transfers WHERE kind = 1 AND state = 1 ORDER BY id";

const META: &str = "SELECT (SELECT id FROM transfers ORDER BY id DESC LIMIT 1), \
    (SELECT id FROM rejections ORDER BY id DESC LIMIT 1), last_batch, last_timestamp FROM ledger_meta";

const JOURNAL: &str = "SELECT id, leg, kind, debit_account, credit_account, amount, currency, \
    code, class, user_data, pending_id, deadline, state, timestamp, batch, hash \
    FROM transfers ORDER BY id, leg";

/// Everything the writer rebuilds its memory from.
pub(crate) fn snapshot(client: &mut Client) -> Result<Snapshot, StoreError> {
    let accounts = accounts(client)?;
    let open_pending = open_pending(client)?;
    let meta = client.query_one(META, &[]).map_err(backend)?;
    let max_transfer = opt_id(&meta, 0)?.unwrap_or(0);
    let max_rejection = opt_id(&meta, 1)?.unwrap_or(0);
    Ok(Snapshot {
        accounts,
        open_pending,
        stored_id_max: max_transfer.max(max_rejection),
        last_batch: u64_from_column(int(&meta, 2)?),
        last_timestamp: timestamp(&meta, 3)?,
    })
}

/// Every account, by id.
pub(crate) fn accounts(client: &mut Client) -> Result<Vec<Account>, StoreError> {
    let sql = format!("SELECT {} FROM accounts ORDER BY id", ACCOUNT_COLUMNS.join(", "));
    let mut rows = stream(client, sql.as_str())?;
    let mut accounts = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        accounts.push(account(&row)?);
    }
    Ok(accounts)
}

fn account(row: &Row) -> Result<Account, StoreError> {
    let mut ints = [None; 25];
    // Column 1 is the currency; integer column i > 0 sits at i + 1.
    ints[0] = opt_int(row, 0)?;
    for (i, slot) in ints.iter_mut().enumerate().skip(1) {
        *slot = opt_int(row, i + 1)?;
    }
    AccountColumns { currency: row.try_get(1).map_err(backend)?, ints }.decode()
}

fn open_pending(client: &mut Client) -> Result<Vec<OpenPending>, StoreError> {
    let mut rows = stream(client, OPEN_PENDING)?;
    let mut open = Vec::new();
    let mut currencies = Currencies::default();
    while let Some(r) = rows.next().map_err(backend)? {
        open.push(OpenPending {
            id: id(&r, 0)?,
            leg: leg(&r, 1, &mut currencies)?,
            created_at: timestamp(&r, 8)?,
            deadline: opt_int(&r, 9)?.map(|d| Timestamp(u64_from_column(d))),
        });
    }
    Ok(open)
}

/// What storage holds for each of `ids`, with one query.
pub(crate) fn lookup<T: ToStatement + ?Sized>(
    client: &mut Client,
    statement: &T,
    ids: &[EventId],
) -> Result<FxHashMap<EventId, StoredEvent>, StoreError> {
    let mut found = FxHashMap::default();
    if ids.is_empty() {
        return Ok(found);
    }
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| crate::write::key(*id)).collect();
    for row in client.query(statement, &[&keys]).map_err(backend)? {
        let id = id(&row, 0)?;
        let hash = u64_from_column(int(&row, 1)?);
        match opt_int(&row, 2)? {
            // A journal row wins over a rejection (there should never be both).
            Some(kind) => {
                let pending_state = stored_pending_state(kind, opt_int(&row, 3)?)?;
                found.insert(id, StoredEvent { hash, status: Status::Ok, pending_state });
            }
            None => {
                let status = narrow(&row, 4, "rejection status")?;
                let status = Status::from_code(status).ok_or_else(|| corrupt(format!("rejection status {status}")))?;
                found.entry(id).or_insert(StoredEvent { hash, status, pending_state: None });
            }
        }
    }
    Ok(found)
}

/// The state of a leg-0 row of `kind`: required on pending rows, ignored on others.
fn stored_pending_state(kind: i64, state: Option<i64>) -> Result<Option<PendingState>, StoreError> {
    if kind != JournalKind::Pending as i64 {
        return Ok(None);
    }
    let state = state.and_then(|s| u8::try_from(s).ok()).and_then(PendingState::from_code);
    state.map(Some).ok_or_else(|| corrupt(format!("pending state {state:?}")))
}

/// Calls `visit` with every journal row, in (id, leg) order, streaming.
pub(crate) fn scan_journal(client: &mut Client, visit: &mut dyn FnMut(StoredRow)) -> Result<(), StoreError> {
    let mut rows = stream(client, JOURNAL)?;
    let mut currencies = Currencies::default();
    while let Some(r) = rows.next().map_err(backend)? {
        let kind = narrow(&r, 2, "journal kind")?;
        let row = JournalRow {
            id: id(&r, 0)?,
            leg_index: narrow(&r, 1, "leg index")?,
            kind: JournalKind::from_code(kind).ok_or_else(|| corrupt(format!("journal kind {kind}")))?,
            leg: leg(&r, 3, &mut currencies)?,
            pending_id: opt_id(&r, 10)?.unwrap_or(0),
            deadline: opt_int(&r, 11)?.map(|d| Timestamp(u64_from_column(d))),
            timestamp: timestamp(&r, 13)?,
            hash: u64_from_column(int(&r, 15)?),
        };
        let state = match opt_int(&r, 12)? {
            None => None,
            Some(code) => {
                let code = u8::try_from(code).ok().and_then(PendingState::from_code);
                Some(code.ok_or_else(|| corrupt(format!("pending state on {}", row.id)))?)
            }
        };
        visit(StoredRow { row, state, batch: u64_from_column(int(&r, 14)?) });
    }
    Ok(())
}

/// Calls `visit` with the id of every rejection, in order, streaming.
pub(crate) fn scan_rejections(client: &mut Client, visit: &mut dyn FnMut(EventId)) -> Result<(), StoreError> {
    let mut rows = stream(client, "SELECT id FROM rejections ORDER BY id")?;
    while let Some(r) = rows.next().map_err(backend)? {
        visit(id(&r, 0)?);
    }
    Ok(())
}

/// Runs a query without parameters and streams its rows.
fn stream<'a>(client: &'a mut Client, sql: &str) -> Result<RowIter<'a>, StoreError> {
    client.query_raw(sql, std::iter::empty::<i64>()).map_err(backend)
}

/// A leg stored in seven columns from `at`: debit, credit, amount, currency, code, class,
/// user data.
fn leg(row: &Row, at: usize, currencies: &mut Currencies) -> Result<Leg, StoreError> {
    Ok(Leg {
        debit: u64_from_column(int(row, at)?),
        credit: u64_from_column(int(row, at + 1)?),
        amount: int(row, at + 2)?,
        currency: currencies.parse(row.try_get(at + 3).map_err(backend)?)?,
        code: narrow(row, at + 4, "transfer code")?,
        class: narrow(row, at + 5, "transfer class")?,
        user_data: u64_from_column(int(row, at + 6)?),
    })
}

/// Parses currency codes, remembering the last one (a journal is mostly one currency).
#[derive(Default)]
struct Currencies(Option<Currency>);

impl Currencies {
    fn parse(&mut self, code: &str) -> Result<Currency, StoreError> {
        match self.0 {
            Some(last) if last.code() == code => Ok(last),
            _ => {
                let currency = Currency::parse(code).map_err(|e| corrupt(e.to_string()))?;
                self.0 = Some(currency);
                Ok(currency)
            }
        }
    }
}

fn int(row: &Row, i: usize) -> Result<i64, StoreError> {
    row.try_get(i).map_err(backend)
}

fn opt_int(row: &Row, i: usize) -> Result<Option<i64>, StoreError> {
    row.try_get(i).map_err(backend)
}

/// A BIGINT column that holds a narrower integer.
fn narrow<T: TryFrom<i64>>(row: &Row, i: usize, what: &str) -> Result<T, StoreError> {
    let value = int(row, i)?;
    T::try_from(value).map_err(|_| corrupt(format!("{what} {value} out of range")))
}

fn timestamp(row: &Row, i: usize) -> Result<Timestamp, StoreError> {
    Ok(Timestamp(u64_from_column(int(row, i)?)))
}

fn id(row: &Row, i: usize) -> Result<EventId, StoreError> {
    id_from_bytes(row.try_get::<_, &[u8]>(i).map_err(backend)?)
}

fn opt_id(row: &Row, i: usize) -> Result<Option<EventId>, StoreError> {
    row.try_get::<_, Option<&[u8]>>(i).map_err(backend)?.map(id_from_bytes).transpose()
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(message)
}
