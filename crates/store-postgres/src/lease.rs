//! The writer lease: a session-level advisory lock (one writer per database, released by the
//! server when the session ends) and a fencing epoch that every commit checks.

use citypay_store::StoreError;
use postgres::{Client, Statement, Transaction};

use crate::backend;

/// Advisory lock key of a ledger's writer ("citypay" + 1). Advisory locks are per database,
/// so one fixed key serves every ledger database on a server.
const WRITER_LOCK_KEY: i64 = 0x6369_7479_7061_7901;

/// Reads this writer's row of the lease and locks it until the commit ends, so a new writer
/// cannot take over in the middle of a batch.
pub(crate) const FENCE: &str = "SELECT epoch FROM writer_lease WHERE singleton = 1 FOR UPDATE";

/// Takes the writer lock, or says who holds it.
pub(crate) fn acquire(client: &mut Client) -> Result<(), StoreError> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY]).map_err(backend)?;
    let locked: bool = row.try_get(0).map_err(backend)?;
    if locked { Ok(()) } else { Err(StoreError::Locked { holder: recorded_holder(client) }) }
}

/// Releases the writer lock.
pub(crate) fn release(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK_KEY]).map(drop)
}

/// Who the lease names. A writer records itself right after migrating, so a holder caught
/// before that (or a database without the table yet) is described generically.
fn recorded_holder(client: &mut Client) -> String {
    let recorded = client
        .query_opt("SELECT holder FROM writer_lease WHERE singleton = 1", &[])
        .ok()
        .flatten()
        .and_then(|row| row.try_get::<_, String>(0).ok())
        .filter(|holder| !holder.is_empty());
    recorded.unwrap_or_else(|| "another writer that has not recorded its pid yet".to_owned())
}

/// Records this process as the holder and takes the next epoch, superseding any earlier
/// writer.
pub(crate) fn take_epoch(client: &mut Client) -> Result<i64, StoreError> {
    let row = client
        .query_opt(
            "UPDATE writer_lease SET epoch = epoch + 1, holder = $1 WHERE singleton = 1 RETURNING epoch",
            &[&citypay_store::writer_description()],
        )
        .map_err(backend)?;
    let row = row.ok_or_else(|| StoreError::Corrupt("writer_lease has no row".into()))?;
    row.try_get(0).map_err(backend)
}

/// Checks, inside the commit's transaction, that no later writer has taken the lease.
pub(crate) fn check(tx: &mut Transaction<'_>, fence: &Statement, ours: i64) -> Result<(), StoreError> {
    let row = tx.query_opt(fence, &[]).map_err(backend)?;
    let row = row.ok_or_else(|| StoreError::Corrupt("writer_lease has no row".into()))?;
    let current: i64 = row.try_get(0).map_err(backend)?;
    if current == ours { Ok(()) } else { Err(StoreError::Fenced { ours, current }) }
}
