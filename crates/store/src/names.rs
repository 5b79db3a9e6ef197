//! Table and column names read from the wire (a command another server of the city forwards)
//! become the `&'static str` the services' constants are: each distinct name is kept once for
//! the life of the process. Only SQL identifiers are accepted, and only so many of them, since
//! they end up in statements.

use std::sync::{Mutex, OnceLock};

use rustc_hash::FxHashSet;
use crate::{OnConflict, ServiceRow, Value};

/// More distinct names than every service's tables and columns together.
const NAMES_MAX: usize = 4_096;

/// The `&'static str` for `name`: the same one every time.
pub fn intern(name: &str) -> Result<&'static str, String> {
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!("{name:?} is not a table or column name"));
    }
    static NAMES: OnceLock<Mutex<FxHashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock().map_err(|_| "the name table is poisoned".to_owned())?;
    if let Some(known) = names.get(name) {
        return Ok(known);
    }
    if names.len() >= NAMES_MAX {
        return Err(format!("more than {NAMES_MAX} distinct table and column names"));
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(kept);
    Ok(kept)
}

/// Interns every name of `pairs`.
pub fn columns(pairs: Vec<(String, Value)>) -> Result<Vec<(&'static str, Value)>, String> {
    pairs.into_iter().map(|(name, value)| Ok((intern(&name)?, value))).collect()
}

/// A [`ServiceRow`] as it comes off the wire, names not yet interned: the same fields in the
/// same order.
#[derive(Debug, serde::Deserialize)]
struct WireRow {
    table: String,
    key: Vec<(String, Value)>,
    columns: Vec<(String, Value)>,
    on_conflict: OnConflict,
}

impl TryFrom<WireRow> for ServiceRow {
    type Error = String;
    fn try_from(row: WireRow) -> Result<ServiceRow, String> {
        Ok(ServiceRow { table: intern(&row.table)?, key: columns(row.key)?, columns: columns(row.columns)?, on_conflict: row.on_conflict })
    }
}

/// Through [`WireRow`]: a derived impl would borrow the `&'static str` names from the input.
impl<'de> serde::Deserialize<'de> for ServiceRow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ServiceRow, D::Error> {
        <WireRow as serde::Deserialize>::deserialize(deserializer)?.try_into().map_err(serde::de::Error::custom)
    }
}
