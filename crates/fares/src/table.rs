//! A parsed CSV file with named columns and errors that point at file, line and column.

use crate::FeedError;
use csv::{ReaderBuilder, StringRecord, Trim};

/// One GTFS file: its header and rows with their line numbers.
#[derive(Debug)]
pub(crate) struct Table {
    file: String,
    headers: Vec<String>,
    rows: Vec<(u64, StringRecord)>,
}

/// One row of a [`Table`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'t> {
    table: &'t Table,
    line: u64,
    record: &'t StringRecord,
}

impl Table {
    /// Parses `text` as a CSV file with a header row.
    pub(crate) fn parse(file: &str, text: &str) -> Result<Table, FeedError> {
        let mut reader = ReaderBuilder::new()
            .trim(Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| csv_error(file, &e))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(file, &e))?;
            let line = record.position().map_or(0, csv::Position::line);
            if record.iter().all(str::is_empty) {
                continue;
            }
            rows.push((line, record));
        }
        Ok(Table {
            file: file.to_string(),
            headers,
            rows,
        })
    }

    /// The rows, in file order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|(line, record)| Row {
            table: self,
            line: *line,
            record,
        })
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// Fails unless the header has every one of `names`.
    pub(crate) fn require_columns(&self, names: &[&str]) -> Result<(), FeedError> {
        match names.iter().find(|n| self.column(n).is_none()) {
            Some(name) => Err(self.error(1, name, "required column is missing")),
            None => Ok(()),
        }
    }

    fn error(&self, line: u64, column: &str, what: &str) -> FeedError {
        FeedError::Bad {
            file: self.file.clone(),
            line,
            column: column.to_string(),
            what: what.to_string(),
        }
    }
}

impl<'t> Row<'t> {
    /// The value of `column`, or `None` when the column is absent or the field empty.
    pub(crate) fn opt(&self, column: &str) -> Option<&'t str> {
        let index = self.table.column(column)?;
        self.record.get(index).filter(|v| !v.is_empty())
    }

    /// The value of `column`; an error when absent or empty.
    pub(crate) fn req(&self, column: &str) -> Result<&'t str, FeedError> {
        self.opt(column)
            .ok_or_else(|| self.error(column, "required value is empty"))
    }

    /// Parses an optional integer field.
    pub(crate) fn int(&self, column: &str) -> Result<Option<i64>, FeedError> {
        self.opt(column)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.error(column, &format!("`{v}` is not an integer")))
            })
            .transpose()
    }

    /// An error about this row and `column`.
    pub(crate) fn error(&self, column: &str, what: &str) -> FeedError {
        self.table.error(self.line, column, what)
    }
}

fn csv_error(file: &str, err: &csv::Error) -> FeedError {
    let line = err.position().map_or(0, csv::Position::line);
    FeedError::Bad {
        file: file.to_string(),
        line,
        column: String::new(),
        what: err.to_string(),
    }
}
