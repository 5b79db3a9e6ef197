//! Read-only connections for the services' own queries, pooled, beside the writer's.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use citypay_store::{ServiceReader, StoreError, Value};
use rusqlite::{Connection, OpenFlags, types::ValueRef};

/// A small pool of read-only connections to one database file. In WAL mode each query sees
/// everything the writer committed before it started.
#[derive(Debug)]
pub struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Connections kept idle; more are opened under load and closed after use.
const IDLE_MAX: usize = 8;

impl SqliteReader {
    /// A reader of the database at `path` (which must exist).
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        let reader = SqliteReader { path: path.to_owned(), idle: Mutex::new(Vec::new()) };
        let conn = reader.connect()?;
        reader.give_back(conn);
        Ok(reader)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = crate::open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        // Every commit of the writer empties a reader's private page cache at its next read,
        // and emptying walks the whole cache; so the cache stays small and pages come from a
        // memory map of the file (the OS cache) instead.
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = 64; PRAGMA mmap_size = 17179869184;")
            .map_err(crate::backend)?;
        crate::stable_plans(&conn)?;
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().map_err(|_| StoreError::Backend("reader pool poisoned".into()))?.pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_MAX
        {
            idle.push(conn);
        }
    }
}

fn to_sql(value: &Value) -> rusqlite::types::ToSqlOutput<'_> {
    use rusqlite::types::ToSqlOutput::Borrowed;
    match value {
        Value::Null => Borrowed(ValueRef::Null),
        Value::Int(v) => Borrowed(ValueRef::Integer(*v)),
        Value::Text(s) => Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Blob(b) => Borrowed(ValueRef::Blob(b)),
    }
}

fn from_sql(value: ValueRef<'_>) -> Result<Value, StoreError> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(_) => return Err(StoreError::Corrupt("a floating-point column".into())),
    })
}

impl ServiceReader for SqliteReader {
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        let conn = self.take()?;
        let rows = run(&conn, sql, params);
        self.give_back(conn);
        rows
    }

    fn may_block(&self) -> bool {
        false
    }
}

pub(crate) fn run(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(crate::backend)?;
    let columns = stmt.column_count();
    let bound: Vec<_> = params.iter().map(to_sql).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(bound)).map_err(crate::backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(crate::backend)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(from_sql(row.get_ref(i).map_err(crate::backend)?)?);
        }
        out.push(values);
    }
    Ok(out)
}
