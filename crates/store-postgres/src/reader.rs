//! Connections for the services' own queries, pooled, beside the writer's.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use citypay_store::{ServiceReader, StoreError, Value, rewrite_placeholders};
use postgres::types::{ToSql, Type};
use postgres::{Client, Row};

use crate::{backend, connect, describe};

/// Whether a failed query says the database cannot be reached now rather than that the query
/// is wrong: the connection closed or broke, the server is shutting down or starting, or the
/// node is no longer the primary (it refuses writes).
fn unreachable(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW, SqlState::READ_ONLY_SQL_TRANSACTION].contains(code)
        }
        None => std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>()),
    }
}

/// Where the database is now: one fixed URL, or the URL of a cluster's current primary (a
/// Patroni leader), `None` while there is none.
pub type Locate = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// A small pool of connections to one database for reads. Each query runs on its own
/// (autocommit), so it sees everything committed before it started. Located on a cluster, it
/// reads only from the current primary: a connection to a node that is no longer it is
/// closed rather than used. At most `OPEN_MAX` (24) are open: a burst of reads waits for one
/// rather than opening connections until PostgreSQL refuses everyone ("too many clients"),
/// the writer's reconnection included.
pub struct PostgresReader {
    locate: Locate,
    pool: Mutex<Pool>,
    /// Signalled when a connection is given back or closed.
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<(String, Client)>,
    /// Idle and in use.
    open: usize,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReader").finish_non_exhaustive()
    }
}

/// Connections open at most, per reader (one per server): three servers stay well under
/// PostgreSQL's default `max_connections` of 100. All of them are kept once opened.
const OPEN_MAX: usize = 24;

/// How long a read waits for a connection before it is answered unavailable.
const WAIT_MAX: Duration = Duration::from_secs(10);

impl PostgresReader {
    /// A reader of the database at `url`.
    pub fn connect(url: &str) -> Result<PostgresReader, StoreError> {
        let url = url.to_owned();
        let reader = PostgresReader::located(Arc::new(move || Some(url.clone())));
        let taken = reader.take()?;
        reader.give_back(taken);
        Ok(reader)
    }

    /// A reader of whatever database `locate` names at each query (the current primary).
    pub fn located(locate: Locate) -> PostgresReader {
        PostgresReader { locate, pool: Mutex::new(Pool::default()), freed: Condvar::new() }
    }

    fn take(&self) -> Result<(String, Client), StoreError> {
        let url = (self.locate)().ok_or_else(|| StoreError::Unavailable("no primary database now".into()))?;
        let deadline = Instant::now() + WAIT_MAX;
        let poisoned = || StoreError::Backend("reader pool poisoned".into());
        let mut pool = self.pool.lock().map_err(|_| poisoned())?;
        loop {
            // Connections to a node that stopped being the primary are closed, not read from,
            // and outside the lock (closing one talks to its server).
            let stale: Vec<(String, Client)> = pool.idle.extract_if(.., |(at, client)| *at != url || client.is_closed()).collect();
            if !stale.is_empty() {
                pool.open -= stale.len();
                drop(pool);
                drop(stale);
                self.freed.notify_all();
                pool = self.pool.lock().map_err(|_| poisoned())?;
                continue;
            }
            if let Some(found) = pool.idle.pop() {
                return Ok(found);
            }
            if pool.open < OPEN_MAX {
                pool.open += 1;
                drop(pool);
                let opened = connect(&url).map_err(|error| StoreError::Unavailable(error.to_string())).and_then(primary_only);
                return opened.map(|client| (url, client)).inspect_err(|_| self.closed());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!("all {OPEN_MAX} read connections busy for {} s", WAIT_MAX.as_secs())));
            }
            pool = self.freed.wait_timeout(pool, left).map_err(|_| poisoned())?.0;
        }
    }

    fn give_back(&self, (url, client): (String, Client)) {
        if client.is_closed() {
            // Its connection is gone: dropping it sends nothing.
            drop(client);
            self.closed();
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            pool.idle.push((url, client));
        }
        self.freed.notify_one();
    }

    /// One connection fewer is open.
    fn closed(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.open = pool.open.saturating_sub(1);
        }
        self.freed.notify_one();
    }
}

/// `client` if its node is a primary. A node that Patroni demoted (it lost etcd, and restarts
/// as a standby, every connection closed) may still be named the leader for a while, and still
/// show rows it committed locally that never reached a standby and will be rewound away: never
/// read those. Checked once per connection: a demotion ends every connection.
fn primary_only(mut client: Client) -> Result<Client, StoreError> {
    let row = client.query_one("SELECT pg_is_in_recovery()", &[]).map_err(|e| StoreError::Unavailable(describe(&e)))?;
    if row.try_get::<_, bool>(0).map_err(backend)? {
        // Closed off the caller's thread for the same reason as in `drop`.
        std::thread::spawn(move || drop(client));
        return Err(StoreError::Unavailable("the node named the primary is a standby now".into()));
    }
    Ok(client)
}

impl Drop for PostgresReader {
    /// The synchronous client blocks on its own runtime when it closes, which panics inside an
    /// async task: close the idle connections on a plain thread instead.
    fn drop(&mut self) {
        let idle = self.pool.get_mut().map(|pool| std::mem::take(&mut pool.idle)).unwrap_or_default();
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// `?N` becomes `$N` with the type of the value bound to it, so PostgreSQL never has to guess
/// a parameter's type; NULL is written as a literal.
fn typed_sql<'a>(sql: &str, params: &'a [Value]) -> (String, Vec<Param<'a>>) {
    let mut bound: Vec<Param<'a>> = Vec::new();
    let mut numbers = vec![0usize; params.len()];
    for (i, value) in params.iter().enumerate() {
        let param: Param<'a> = match value {
            Value::Null => continue,
            Value::Int(v) => v,
            Value::Text(s) => s,
            Value::Blob(b) => b,
        };
        bound.push(param);
        numbers[i] = bound.len();
    }
    let sql = rewrite_placeholders(sql, |n| match params.get(n.wrapping_sub(1)) {
        Some(Value::Null) => "NULL".to_owned(),
        Some(Value::Int(_)) => format!("${}::int8", numbers[n - 1]),
        Some(Value::Text(_)) => format!("${}::text", numbers[n - 1]),
        Some(Value::Blob(_)) => format!("${}::bytea", numbers[n - 1]),
        // A placeholder with no value: let the server report it.
        None => format!("${n}"),
    });
    (sql, bound)
}

fn value(row: &Row, i: usize) -> Result<Value, StoreError> {
    let ty = row.columns()[i].type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i).map_err(backend)?.map(Value::Int)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i).map_err(backend)?.map(|v| Value::Int(i64::from(v)))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i).map_err(backend)?.map(|v| Value::Int(i64::from(v)))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i).map_err(backend)?.map(|v| Value::Int(i64::from(v)))
    } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
        row.try_get::<_, Option<String>>(i).map_err(backend)?.map(Value::Text)
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i).map_err(backend)?.map(Value::Blob)
    } else {
        return Err(StoreError::Backend(format!("column {} has type {ty}, not integer, text or bytes", i + 1)));
    };
    Ok(value.unwrap_or(Value::Null))
}

impl ServiceReader for PostgresReader {
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        let (url, mut client) = self.take()?;
        let rows = run(&mut client, sql, params);
        self.give_back((url, client));
        rows
    }
}

/// Runs one query with `?N` placeholders on `client`.
pub(crate) fn run(client: &mut Client, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
    let (sql, bound) = typed_sql(sql, params);
    let rows = client.query(sql.as_str(), &bound).map_err(|e| if unreachable(&e) { StoreError::Unavailable(describe(&e)) } else { backend(e) })?;
    rows.iter().map(|row| (0..row.len()).map(|i| value(row, i)).collect()).collect()
}
