//! A [`Guard`] as it comes off the wire (a command another server forwards), its names not
//! yet interned: the same variants and fields in the same order.

use citypay_store::Value;
use citypay_store::names::{columns, intern};

use crate::Guard;

#[derive(serde::Deserialize)]
pub(crate) enum WireGuard {
    Absent { table: String, key: Vec<(String, Value)> },
    Matches { table: String, key: Vec<(String, Value)>, expect: Vec<(String, Value)> },
    DuringMove,
}

impl TryFrom<WireGuard> for Guard {
    type Error = String;
    fn try_from(guard: WireGuard) -> Result<Guard, String> {
        Ok(match guard {
            WireGuard::Absent { table, key } => Guard::Absent { table: intern(&table)?, key: columns(key)? },
            WireGuard::Matches { table, key, expect } => Guard::Matches { table: intern(&table)?, key: columns(key)?, expect: columns(expect)? },
            WireGuard::DuringMove => Guard::DuringMove,
        })
    }
}

/// Through [`WireGuard`]: a derived impl would borrow the `&'static str` names from the input.
impl<'de> serde::Deserialize<'de> for Guard {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Guard, D::Error> {
        <WireGuard as serde::Deserialize>::deserialize(deserializer)?.try_into().map_err(serde::de::Error::custom)
    }
}
