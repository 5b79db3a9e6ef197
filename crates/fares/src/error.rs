//! Errors raised while loading a feed.

use thiserror::Error;

/// Why a feed could not be loaded. Every variant names the file; row errors also give the
/// 1-based line and the column.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FeedError {
    /// A required file is absent.
    #[error("{file}: required file is missing")]
    Missing {
        /// The file name, e.g. `routes.txt`.
        file: String,
    },
    /// The file could not be read (I/O error or not UTF-8).
    #[error("{file}: cannot read: {what}")]
    Read {
        /// The file name.
        file: String,
        /// What went wrong.
        what: String,
    },
    /// A row or a field is malformed, or refers to something that does not exist.
    #[error("{file}:{line}: column `{column}`: {what}")]
    Bad {
        /// The file name.
        file: String,
        /// 1-based line of the file (the header is line 1).
        line: u64,
        /// The column name; empty when the whole row is wrong.
        column: String,
        /// What is wrong.
        what: String,
    },
}
