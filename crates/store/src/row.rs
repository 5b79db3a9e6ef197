//! Rows that services write in the same transaction as their transfers, and the migrations
//! that create their tables.

/// A column value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// What to do when a row with the same key exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum OnConflict {
    /// Fail the whole batch (a bug in the caller: the key should be new).
    Fail,
    /// Keep the existing row.
    Ignore,
    /// Overwrite the non-key columns.
    Update,
    /// Only update an existing row (`UPDATE ... WHERE key`); a missing row stays missing.
    /// For partial updates of rows a guard has shown to exist.
    UpdateOnly,
}

/// One row of a service's own table (a trade's new state, an outbox event, a bill marked
/// paid), written in the transaction that commits the event it rides on, and only if that
/// event succeeded. Table and column names are compile-time constants of the service, never
/// user input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ServiceRow {
    /// Table name.
    pub table: &'static str,
    /// Key columns and values (the conflict target).
    pub key: Vec<(&'static str, Value)>,
    /// Other columns and values.
    pub columns: Vec<(&'static str, Value)>,
    /// Behaviour on an existing key.
    pub on_conflict: OnConflict,
}

impl ServiceRow {
    /// The `INSERT ... ON CONFLICT` statement for this row's shape, with `$1..$n` or `?`
    /// placeholders as `placeholder` renders them. Both SQLite and PostgreSQL accept it.
    pub fn upsert_sql(&self, placeholder: impl Fn(usize) -> String) -> String {
        let names: Vec<&str> = self.key.iter().chain(&self.columns).map(|(n, _)| *n).collect();
        let marks: Vec<String> = (1..=names.len()).map(placeholder).collect();
        let keys: Vec<&str> = self.key.iter().map(|(n, _)| *n).collect();
        if self.on_conflict == OnConflict::UpdateOnly {
            let (key_marks, column_marks) = marks.split_at(keys.len());
            let sets: Vec<String> =
                self.columns.iter().zip(column_marks).map(|((n, _), m)| format!("{n} = {m}")).collect();
            let wheres: Vec<String> = keys.iter().zip(key_marks).map(|(n, m)| format!("{n} = {m}")).collect();
            return format!("UPDATE {} SET {} WHERE {}", self.table, sets.join(", "), wheres.join(" AND "));
        }
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.table,
            names.join(", "),
            marks.join(", ")
        );
        match self.on_conflict {
            OnConflict::Fail => {}
            OnConflict::Ignore => sql += &format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", ")),
            OnConflict::Update if self.columns.is_empty() => {
                sql += &format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "));
            }
            OnConflict::UpdateOnly => unreachable!("handled above"),
            OnConflict::Update => {
                let sets: Vec<String> =
                    self.columns.iter().map(|(n, _)| format!("{n} = excluded.{n}")).collect();
                sql += &format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), sets.join(", "));
            }
        }
        sql
    }

    /// What this row's statement depends on: rows of one shape share one statement, so a
    /// store can keep its text rather than build it for every row.
    pub fn shape(&self) -> RowShape {
        RowShape {
            table: self.table,
            names: self.key.iter().chain(&self.columns).map(|(n, _)| *n).collect(),
            keys: self.key.len(),
            on_conflict: self.on_conflict,
        }
    }

    /// Key then column values, in placeholder order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.key.iter().chain(&self.columns).map(|(_, v)| v)
    }
}

/// A [`ServiceRow`]'s table, column names (key first), key count and conflict rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowShape {
    table: &'static str,
    names: Vec<&'static str>,
    keys: usize,
    on_conflict: OnConflict,
}

/// A schema change of one component (the ledger itself, or a service), applied once, in
/// version order, inside a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The component whose schema this changes (`"ledger"`, `"checkout"`, ...).
    pub component: &'static str,
    /// 1, 2, 3, ... within the component.
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// The SQLite statements.
    pub sqlite: &'static str,
    /// The PostgreSQL statements.
    pub postgres: &'static str,
}
