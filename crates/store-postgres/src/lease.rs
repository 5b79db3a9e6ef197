//! The writer lease. Three things together make one writer per database:
//! - a session-level advisory lock, which the server drops when the writer's session ends;
//! - a time bound (`expires_at`, on the database's clock), which the writer renews in every
//!   commit and while idle: a writer that stops renewing (frozen, or cut off) has its session
//!   ended by whoever takes over, which frees the lock;
//! - a fencing epoch that every commit checks in its own transaction, so a writer that was
//!   superseded cannot write another batch, and which crosses a failover (advisory locks do not
//!   replicate; the row does).

use std::time::{Duration, Instant};

use citypay_store::StoreError;
use postgres::{Client, Statement, Transaction};

use crate::backend;

/// Advisory lock key of a ledger's writer ("citypay" + 1). Advisory locks are per database,
/// so one fixed key serves every ledger database on a server.
const WRITER_LOCK_KEY: i64 = 0x6369_7479_7061_7901;

/// Renews this writer's lease and locks its row until the commit ends, so a new writer cannot
/// take over in the middle of a batch. No row means another writer took a later epoch.
pub(crate) const RENEW: &str = "UPDATE writer_lease SET expires_at = clock_timestamp() + $2::int8 * interval '1 millisecond' \
    WHERE singleton = 1 AND epoch = $1::int8 RETURNING epoch";

/// The session holding the writer lock of this database, if any.
const LOCK_HOLDER: &str = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
    AND ((classid::int8 << 32) | objid::int8) = $1 AND pid <> pg_backend_pid()";

/// How long the first lease of a new writer lasts, at least: long enough to load a city's
/// ledger (a frozen new writer holds the city that long; one that dies, not at all).
const LOAD_GRACE_MS: i64 = 60_000;

/// What a writer asks of its lease.
#[derive(Debug, Clone)]
pub struct LeaseTerms {
    /// How long the lease lasts unless renewed. A writer renews it at every commit and, when
    /// idle, every quarter of it.
    pub ttl: Duration,
    /// Where other servers reach this writer to hand it their commands (empty: nowhere).
    pub address: String,
}

impl LeaseTerms {
    /// The lease of a one-process deployment or a one-shot command: 2 s, reachable nowhere.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(2);

    /// Terms with the default time to live and no address.
    pub fn local() -> LeaseTerms {
        LeaseTerms { ttl: LeaseTerms::DEFAULT_TTL, address: String::new() }
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The lease as the database records it, for servers that are not the writer: whom to
/// forward to, and whether it ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The epoch of the newest writer.
    pub epoch: i64,
    /// How it described itself (process, host, start).
    pub holder: String,
    /// Where it takes commands from other servers.
    pub address: String,
    /// Whether its lease still runs, on the database's clock.
    pub live: bool,
    /// Whether a session holds the writer lock now.
    pub locked: bool,
}

/// Reads the lease.
pub(crate) fn state(client: &mut Client) -> Result<LeaseState, StoreError> {
    let row = client
        .query_opt(
            "SELECT epoch, holder, address, coalesce(expires_at > clock_timestamp(), false) FROM writer_lease WHERE singleton = 1",
            &[],
        )
        .map_err(backend)?
        .ok_or_else(|| StoreError::Corrupt("writer_lease has no row".into()))?;
    let locked = lock_holder(client)?.is_some();
    Ok(LeaseState {
        epoch: row.try_get(0).map_err(backend)?,
        holder: row.try_get(1).map_err(backend)?,
        address: row.try_get(2).map_err(backend)?,
        live: row.try_get(3).map_err(backend)?,
        locked,
    })
}

fn lock_holder(client: &mut Client) -> Result<Option<i32>, StoreError> {
    let row = client.query_opt(LOCK_HOLDER, &[&WRITER_LOCK_KEY]).map_err(backend)?;
    row.map(|r| r.try_get(0)).transpose().map_err(backend)
}

/// Taken by a would-be writer while it looks at the lease and claims it, so that another
/// never sees a claim half made (the lock taken, the lease not yet renewed) and ends it
/// ("citypay" + 3).
const CLAIM_LOCK_KEY: i64 = 0x6369_7479_7061_7903;

/// Takes the writer lock: at once when no session holds it; after ending the holder's session
/// when its lease ran out; never while it runs ([`StoreError::Locked`], naming the holder).
/// Then takes the next epoch with a lease on `terms`; answers the epoch.
pub(crate) fn acquire(client: &mut Client, terms: &LeaseTerms) -> Result<i64, StoreError> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&CLAIM_LOCK_KEY]).map_err(backend)?;
    if !row.try_get::<_, bool>(0).map_err(backend)? {
        return Err(StoreError::Locked { holder: "another server taking over at this moment".to_owned() });
    }
    let claimed = claim(client, terms);
    let released = client.execute("SELECT pg_advisory_unlock($1)", &[&CLAIM_LOCK_KEY]).map_err(backend);
    let epoch = claimed?;
    released?;
    Ok(epoch)
}

fn claim(client: &mut Client, terms: &LeaseTerms) -> Result<i64, StoreError> {
    let lease = state(client)?;
    if let Some(pid) = lock_holder(client)? {
        if lease.live {
            return Err(StoreError::Locked { holder: described(&lease.holder) });
        }
        // A writer whose commit waits for the synchronous standby is not frozen: the primary
        // lost its standby (cut off, say). Ending that session would make its batch visible
        // here though no standby has it, and a failover would then lose what was read. Patroni
        // fails over or the standby comes back; either ends the wait. (A commit that begins
        // its wait between this check and the end of the session is not seen: the window is a
        // few milliseconds, and its writer still reports it unknown, never done.)
        let row = client.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'", &[&pid]).map_err(backend)?;
        if row.try_get::<_, i64>(0).map_err(backend)? > 0 {
            return Err(StoreError::Locked { holder: format!("{} (its last commit waits for the synchronous standby)", described(&lease.holder)) });
        }
        // Frozen, or cut off from the database: its lease ran out, so it may not write any
        // more, and ending its session frees the lock (and rolls back a batch it had begun).
        client.execute("SELECT pg_terminate_backend($1)", &[&pid]).map_err(backend)?;
        wait_gone(client, pid)?;
    }
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY]).map_err(backend)?;
    let locked: bool = row.try_get(0).map_err(backend)?;
    if !locked {
        return Err(StoreError::Locked { holder: described(&state(client)?.holder) });
    }
    take_epoch(client, terms)
}

/// Waits (at most 5 s) until session `pid` has ended.
fn wait_gone(client: &mut Client, pid: i32) -> Result<(), StoreError> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let row = client.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).map_err(backend)?;
        if row.try_get::<_, i64>(0).map_err(backend)? == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(StoreError::Backend(format!("the previous writer's session {pid} did not end within 5 s")))
}

fn described(holder: &str) -> String {
    if holder.is_empty() { "another writer that has not recorded itself yet".to_owned() } else { holder.to_owned() }
}

/// Releases the writer lock.
pub(crate) fn release(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK_KEY]).map(drop)
}

/// Records this process as the holder and takes the next epoch, superseding any earlier
/// writer, with a lease on `terms`.
fn take_epoch(client: &mut Client, terms: &LeaseTerms) -> Result<i64, StoreError> {
    // The first lease covers loading the ledger, which can take longer than a renewal lasts;
    // the writer renews at its own time to live as soon as it runs. A new writer that dies
    // while loading frees the lock with its session at once.
    let first_ms = terms.ttl_ms().max(LOAD_GRACE_MS);
    let row = client
        .query_opt(
            "UPDATE writer_lease SET epoch = epoch + 1, holder = $1, address = $2, \
             expires_at = clock_timestamp() + $3::int8 * interval '1 millisecond' WHERE singleton = 1 RETURNING epoch",
            &[&citypay_store::writer_description(), &terms.address, &first_ms],
        )
        .map_err(backend)?;
    let row = row.ok_or_else(|| StoreError::Corrupt("writer_lease has no row".into()))?;
    row.try_get(0).map_err(backend)
}

/// Renews the lease inside the commit's transaction, which also checks that no later writer
/// has taken it.
pub(crate) fn check(tx: &mut Transaction<'_>, renew: &Statement, ours: i64, ttl_ms: i64) -> Result<(), StoreError> {
    if tx.query_opt(renew, &[&ours, &ttl_ms]).map_err(backend)?.is_some() {
        return Ok(());
    }
    let row = tx.query_one("SELECT epoch FROM writer_lease WHERE singleton = 1", &[]).map_err(backend)?;
    Err(StoreError::Fenced { ours, current: row.try_get(0).map_err(backend)? })
}

/// Renews the lease of an idle writer.
pub(crate) fn renew(client: &mut Client, renew: &Statement, ours: i64, ttl_ms: i64) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(backend)?;
    check(&mut tx, renew, ours, ttl_ms)?;
    tx.commit().map_err(backend)
}
