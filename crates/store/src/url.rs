//! `--db URL`: which backend, from the URL alone.

use std::path::PathBuf;

/// Where the ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    /// An embedded SQLite file: `sqlite:PATH`, `sqlite://PATH` or a bare path.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://...` or `postgresql://...`.
    Postgres(String),
}

/// A `--db` value that names no backend citypay has.
#[derive(Debug, thiserror::Error)]
#[error("unsupported database URL scheme {scheme:?}: use sqlite:PATH, a file path, or postgres://...")]
pub struct DbUrlError {
    /// The scheme that was given.
    pub scheme: String,
}

impl DbUrl {
    /// The embedded default, `./citypay.db`.
    pub fn default_embedded() -> DbUrl {
        DbUrl::Sqlite(PathBuf::from("citypay.db"))
    }

    /// Parses a `--db` value.
    pub fn parse(value: &str) -> Result<DbUrl, DbUrlError> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(value.to_owned()));
        }
        if let Some(path) = value.strip_prefix("sqlite://").or_else(|| value.strip_prefix("sqlite:")) {
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        // Anything else with a scheme is a mistake, not a file name.
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(DbUrlError { scheme: scheme.to_owned() });
        }
        Ok(DbUrl::Sqlite(PathBuf::from(value)))
    }

    /// The URL with any password removed, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DbUrl::Postgres(url) => redact_password(url),
        }
    }
}

impl std::str::FromStr for DbUrl {
    type Err = DbUrlError;
    fn from_str(s: &str) -> Result<DbUrl, DbUrlError> {
        DbUrl::parse(s)
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_comes_from_the_url() {
        assert_eq!(DbUrl::parse("sqlite:a.db").unwrap(), DbUrl::Sqlite("a.db".into()));
        assert_eq!(DbUrl::parse("sqlite:///tmp/a.db").unwrap(), DbUrl::Sqlite("/tmp/a.db".into()));
        assert_eq!(DbUrl::parse("./x/citypay.db").unwrap(), DbUrl::Sqlite("./x/citypay.db".into()));
        let pg = "postgresql://u:secret@127.0.0.1:5432/db";
        assert_eq!(DbUrl::parse(pg).unwrap(), DbUrl::Postgres(pg.into()));
        assert!(DbUrl::parse("postgres://h/db").is_ok());
        assert!(DbUrl::parse("mysql://h/db").is_err());
        assert_eq!(DbUrl::parse(pg).unwrap().redacted(), "postgresql://u:***@127.0.0.1:5432/db");
    }
}
