//! Shared by the PostgreSQL tests: the server to test against (`CITYPAY_TEST_PG`, set by
//! `scripts/with-postgres.sh`) and fresh databases on it.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};

use postgres::{Client, NoTls};

/// Databases made by this test process so far, for unique names.
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The server's URL. Without `CITYPAY_TEST_PG` the tests are skipped with a notice, except
/// under `CI=true`, where skipping would hide that nothing was tested, so they fail.
pub fn pg_url() -> Option<String> {
    match std::env::var("CITYPAY_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "CITYPAY_TEST_PG is not set and CI=true, so the PostgreSQL tests cannot be skipped: \
             run them through scripts/with-postgres.sh"
        ),
        _ => {
            eprintln!("skipping: CITYPAY_TEST_PG not set (run through scripts/with-postgres.sh)");
            None
        }
    }
}

/// A connection to the server that creates databases, and drops them when dropped.
pub struct Server {
    url: String,
    admin: Client,
    created: Vec<String>,
}

impl Server {
    /// Connects to the server, or `None` when the tests are skipped.
    pub fn connect() -> Option<Server> {
        let url = pg_url()?;
        let admin = Client::connect(&url, NoTls).unwrap_or_else(|e| panic!("cannot connect to CITYPAY_TEST_PG: {e}"));
        Some(Server { url, admin, created: Vec::new() })
    }

    /// Creates an empty database named `{prefix}_{pid}_{n}` and returns its URL.
    pub fn create_database(&mut self, prefix: &str) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
        self.admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.created.push(name.clone());
        with_database(&self.url, &name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for name in &self.created {
            let _ = self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// `url` with its database replaced by `name` (any `?options` kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let host = rest.split_once('/').map_or(rest, |(host, _)| host);
    format!("{scheme}://{host}/{name}{query}")
}

/// A separate connection to the database at `url`.
pub fn client(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap()
}
