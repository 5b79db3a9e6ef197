//! Connections for the services' own queries, pooled, beside the writer's.

use std::sync::{Arc, Mutex};

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
/// closed rather than used.
pub struct PostgresReader {
    locate: Locate,
    idle: Mutex<Vec<(String, Client)>>,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReader").finish_non_exhaustive()
    }
}

/// Connections kept idle; more are opened under load and closed after use.
const IDLE_MAX: usize = 8;

impl PostgresReader {
    /// A reader of the database at `url`.
    pub fn connect(url: &str) -> Result<PostgresReader, StoreError> {
        let url = url.to_owned();
        let reader = PostgresReader { locate: Arc::new(move || Some(url.clone())), idle: Mutex::new(Vec::new()) };
        let taken = reader.take()?;
        reader.give_back(taken);
        Ok(reader)
    }

    /// A reader of whatever database `locate` names at each query (the current primary).
    pub fn located(locate: Locate) -> PostgresReader {
        PostgresReader { locate, idle: Mutex::new(Vec::new()) }
    }

    fn take(&self) -> Result<(String, Client), StoreError> {
        let url = (self.locate)().ok_or_else(|| StoreError::Unavailable("no primary database now".into()))?;
        let mut idle = self.idle.lock().map_err(|_| StoreError::Backend("reader pool poisoned".into()))?;
        // Connections to a node that stopped being the primary are dropped, not read from.
        let stale: Vec<(String, Client)> = idle.extract_if(.., |(at, client)| *at != url || client.is_closed()).collect();
        let found = idle.pop();
        drop(idle);
        drop(stale);
        match found {
            Some(taken) => Ok(taken),
            None => match connect(&url) {
                Ok(client) => Ok((url, primary_only(client)?)),
                Err(error) => Err(StoreError::Unavailable(error.to_string())),
            },
        }
    }

    fn give_back(&self, (url, client): (String, Client)) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_MAX
            && !client.is_closed()
        {
            idle.push((url, client));
        }
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
        let idle = self.idle.get_mut().map(std::mem::take).unwrap_or_default();
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
