//! Moving a city to another shard (`../shared/guide/scale-out.md` §4.5), under load:
//!
//! 1. **Freeze.** The catalog marks the city's buckets as moving, under the next map version.
//!    Neither shard's writer takes a command that touches them from then on, except the move's
//!    own (`Guard::DuringMove`); the servers refuse the city's callers' writes with a
//!    retryable `503 city_moving`. The move waits until the writer it leaves refuses, and the
//!    writer it goes to takes the move's commands.
//! 2. **Drain.** It waits until no transfer between shards that touches the city is half done
//!    (its reservation open, or its decision not yet applied by the payer's shard), and no
//!    account of the city holds a pending transfer.
//! 3. **Copy.** The city's rows (residents, merchants, trades, bills, sessions, ... every
//!    table in [`MOVED`]) are copied to the target shard with PostgreSQL's `COPY`, in one
//!    transaction that also records the copy.
//! 4. **Balances.** Each account of the city is opened on the target shard, and its balance
//!    crosses through the clearing protocol like any transfer between shards: reserved on the
//!    shard it leaves, decided on the shard it goes to, applied. Both shards' books balance at
//!    every moment.
//! 5. **Verify.** Each account holds nothing on the shard it left, and what it held on the
//!    shard it goes to.
//! 6. **Flip.** The catalog points the buckets at the target shard under the next version;
//!    the city's rows on the shard it left are deleted.
//!
//! Each step can be run again: a move stopped anywhere (its coordinator killed, a writer
//! killed) is finished by running it again, which picks up the same move (the freezing's map
//! version numbers its transfers).
//!
//! The servers read the map every 250 ms; after the writer's fence the move waits one more
//! second before copying, so that no server still lets a write without money (a session, a
//! key) through to the shard the city leaves.
//!
//! A balance's history stays on the shard it left; the new shard's statement starts with the
//! balance carried over (`transfer_codes::MOVED`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citypay_clearing::{Clearing, ClearingError, PayeeSide, Peer, Purpose};
use citypay_crossshard::{Crossing, Decision, Message, PayerStatus};
use citypay_directory::{Directory, derived_event_id, int_at, transfer_codes};
use citypay_ledger::{Currency, Event, Leg, NewAccount, Status, Transfer};
use citypay_routing::ShardId;
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::Value;

use crate::catalog::{Catalog, CatalogError, Freezing};

/// The tables a city's rows are moved from, and which rows are the city's: `{G:col}` stands
/// for "the id in `col` is in one of the city's buckets", `{C}` for the city's code. Parents
/// before children (the rows are deleted from the shard the city leaves in reverse order).
pub const MOVED: &[(&str, &str)] = &[
    ("cities", "code = {C}"),
    ("bucket_groups", "city = {C}"),
    ("residents", "{G:id}"),
    ("merchants", "{G:id}"),
    ("api_keys", "{G:merchant_id}"),
    ("operators", "city_code = {C}"),
    ("cashiers", "{G:merchant_id}"),
    (
        "sessions",
        "principal IN (SELECT 'resident:' || id FROM residents WHERE {G:id}) OR principal IN (SELECT 'cashier:' || id FROM cashiers WHERE {G:merchant_id}) \
         OR principal IN (SELECT 'operator:' || id FROM operators WHERE city_code = {C})",
    ),
    ("gateway_apps", "{G:merchant_id}"),
    ("resident_verifications", "{G:resident_id}"),
    ("trades", "{G:merchant_id}"),
    ("refunds", "trade_id IN (SELECT id FROM trades WHERE {G:merchant_id})"),
    ("payment_devices", "{G:resident_id}"),
    ("outbox", "{G:merchant_id}"),
    ("refund_periods", "{G:merchant_id}"),
    ("code_failures", "{G:merchant_id}"),
    ("device_code_failures", "{G:merchant_id}"),
    ("cards", "{G:resident_id}"),
    ("wallet_requests", "{SCOPE}"),
    ("p2p_transfers", "{G:sender} OR {G:recipient}"),
    ("recipient_lookups", "{G:sender}"),
    ("bills", "{G:biller_id}"),
    ("bill_payments", "{G:biller_id}"),
    ("payer_links", "{G:resident_id}"),
    ("contribution_windows", "city_code = {C}"),
    ("payer_guardians", "{G:biller_id}"),
    ("fund_consents", "{G:resident_id}"),
    ("fund_claims", "{G:resident_id}"),
    ("contributions", "city_code = {C}"),
    ("ride_accounts", "{G:resident_id}"),
    ("validators", "{G:operator_id}"),
    ("taps", "validator_id IN (SELECT id FROM validators WHERE {G:operator_id})"),
    ("transit_charges", "account_ref IN (SELECT account_ref FROM ride_accounts WHERE {G:resident_id})"),
    ("arrears", "account_ref IN (SELECT account_ref FROM ride_accounts WHERE {G:resident_id})"),
    ("transit_shares", "account_ref IN (SELECT account_ref FROM ride_accounts WHERE {G:resident_id})"),
    ("payouts", "{G:merchant_id}"),
    ("idempotency_keys", "{SCOPE}"),
    // The decisions on payments to the city's accounts: a late or repeated ask is answered
    // by the decision already made, on whichever shard it arrives.
    ("crossings_in", "(payee >> 56) IN (1, 2) AND {G:payee}"),
    // What the city's accounts sent (all applied once drained): a transfer's status, a
    // refund's or a retry's answer, read where the sender now is.
    ("crossings_out", "(payer >> 56) IN (1, 2) AND {G:payer}"),
];

/// Tables whose rows are shared by every city of a shard: copied where missing, never
/// deleted (the ride-code keys: one key set in the country).
pub const MERGED: &[&str] = &["ride_keys"];

/// Moved tables whose rows the target shard may hold already, the same: a transfer between
/// residents of two shards is recorded on both; a decision copied by an earlier move.
const SHARED_ROWS: &[&str] = &["p2p_transfers", "crossings_in", "crossings_out"];

/// What is deleted from the shard a city left, where it differs from what was copied: a
/// transfer's record stays while the other resident is still there.
const KEPT_BEHIND: &[(&str, &str)] = &[(
    "p2p_transfers",
    "({G:sender} OR sender NOT IN (SELECT id FROM residents)) AND ({G:recipient} OR recipient NOT IN (SELECT id FROM residents))",
)];

/// Tables that stay with their shard: the ledger (a balance moves by a transfer; its history
/// stays), the shard's own accounts and rates, the claims (at their home shard by hash),
/// failed sign-ins (windows of minutes), the writer's and seal's own
/// records, the key-set check and the migrations.
pub const STAYING: &[&str] = &[
    "accounts",
    "transfers",
    "rejections",
    "ledger_meta",
    "writer_lease",
    "platform_accounts",
    "fee_rates",
    "unique_claims",
    "sign_in_failures",
    "city_key_set",
    "moved_in",
    "schema_migrations",
    "journal_seals",
];

/// The rows of `table` that are the city's, as a `WHERE` clause (numbers only: `COPY` takes no
/// parameters).
fn rows_of(filter: &str, group: &std::ops::Range<u16>, city: u32) -> String {
    let scope = "CASE WHEN scope ~ '^(resident|merchant):[0-9]{1,17}$' THEN {G:split_part(scope, ':', 2)::bigint} \
                 WHEN scope ~ '^operator:[0-9]{1,17}$' THEN split_part(scope, ':', 2)::bigint IN (SELECT id FROM operators WHERE city_code = {C}) \
                 ELSE false END";
    let mut sql = filter.replace("{SCOPE}", scope).replace("{C}", &city.to_string());
    while let Some(start) = sql.find("{G:") {
        let Some(len) = sql[start..].find('}') else { break };
        let column = sql[start + 3..start + len].to_string();
        let bucket = format!("((({column}) >> {}) & {})", citypay_routing::BUCKET_SHIFT, citypay_routing::BUCKETS - 1);
        sql.replace_range(start..=start + len, &format!("({bucket} >= {} AND {bucket} < {})", group.start, group.end));
    }
    sql
}

/// Why a move stopped. Run it again to finish it.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The catalog refused, or could not be reached.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A shard's database.
    #[error("shard {0}'s database: {1}")]
    Database(ShardId, String),
    /// A step of the clearing.
    #[error("moving account {0:#x}: {1}")]
    Clearing(u64, ClearingError),
    /// Waited too long for a step (the message says which).
    #[error("{0}")]
    Waited(String),
    /// The sums do not match: the city stays frozen; nothing is flipped.
    #[error("the sums differ after the move: {0}")]
    Sums(String),
}

/// What a move did, and how long each step took.
#[derive(Clone, Debug, Default)]
pub struct MoveReport {
    /// The shard the city left (equal to `to` when it was there already).
    pub from: ShardId,
    /// The shard it is on now.
    pub to: ShardId,
    /// Accounts whose balance crossed.
    pub accounts: usize,
    /// What they held together, in fen.
    pub amount: i64,
    /// Rows copied.
    pub rows: u64,
    /// Each step and its milliseconds.
    pub steps: Vec<(&'static str, u64)>,
    /// From the freeze to the target's writer taking the city's payments.
    pub frozen_ms: u64,
}

/// A shard as the move reaches it: its services (through its writer) and its database.
#[derive(Clone)]
pub struct MovingShard {
    /// The shard's directory (commands go to its writer).
    pub directory: Directory,
    /// Its database's URL.
    pub db: String,
}

impl std::fmt::Debug for MovingShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("MovingShard").finish_non_exhaustive()
    }
}

/// The steps a fault test stops the move after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveStep {
    /// The buckets are frozen and fenced.
    Frozen,
    /// The rows are on the target shard.
    Copied,
    /// The balances crossed.
    Crossed,
    /// The map points at the target shard.
    Flipped,
}

const WAIT_MAX: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);
/// Servers read the map this often (see `serve`); the move waits past it after the fence.
pub const MAP_POLL: Duration = Duration::from_millis(250);
/// Balances crossing at once.
const CROSSING_AT_ONCE: usize = 32;

fn blocking_error(shard: ShardId) -> impl Fn(tokio::task::JoinError) -> MoveError {
    move |e| MoveError::Database(shard, e.to_string())
}

/// Moves `city` to shard `to`; `shards` reaches every shard of the country. `after` is told
/// each step as it is done.
pub async fn move_city(catalog: &str, city: u32, to: ShardId, shards: &BTreeMap<ShardId, MovingShard>, after: &(dyn Fn(MoveStep) + Sync)) -> Result<MoveReport, MoveError> {
    let url = catalog.to_string();
    let lock = tokio::task::spawn_blocking(move || Catalog::open(&url)?.lock_move(city)).await.map_err(|e| MoveError::Waited(e.to_string()))??;
    let moved = move_city_locked(catalog, city, to, shards, after).await;
    drop(lock);
    moved
}

async fn move_city_locked(catalog: &str, city: u32, to: ShardId, shards: &BTreeMap<ShardId, MovingShard>, after: &(dyn Fn(MoveStep) + Sync)) -> Result<MoveReport, MoveError> {
    let started = Instant::now();
    let mut report = MoveReport { to, ..MoveReport::default() };
    let mut lap = Instant::now();
    let mut step = |report: &mut MoveReport, name: &'static str| {
        report.steps.push((name, u64::try_from(lap.elapsed().as_millis()).unwrap_or(u64::MAX)));
        lap = Instant::now();
    };
    let catalog = catalog.to_string();
    let url = catalog.clone();
    let placed = tokio::task::spawn_blocking(move || -> Result<Result<Freezing, std::ops::Range<u16>>, CatalogError> {
        let mut catalog = Catalog::open(&url)?;
        let map = catalog.map()?;
        match catalog.city(city)? {
            Some((group, on)) if on == to && map.moving_to(citypay_routing::Bucket(group.start)).is_none() => Ok(Err(group)),
            _ => catalog.freeze_city(city, to).map(Ok),
        }
    })
    .await
    .map_err(|e| MoveError::Waited(e.to_string()))??;
    let side = |shard: ShardId| shards.get(&shard).ok_or_else(|| MoveError::Waited(format!("shard {shard} is not reached from here")));
    let Freezing { group, from, since } = match placed {
        Ok(freezing) => freezing,
        Err(group) => {
            // There already: finish what a stopped move may have left on the other shards.
            for (shard, moving) in shards.iter().filter(|(s, _)| **s != to) {
                report.rows += delete_rows(*shard, &moving.db, &group, city).await?;
            }
            report.from = to;
            return Ok(report);
        }
    };
    report.from = from;
    let (source, target) = (side(from)?, side(to)?);
    step(&mut report, "freeze");

    // The writer the city leaves refuses its commands; the one it goes to takes the move's.
    let probe = probe_account(&group);
    let reach = Reach(Arc::new(shards.clone()));
    wait_for(&format!("shard {from}'s writer to refuse the city"), || async {
        matches!(probe_writer(&source.directory, probe, false).await, Err(SubmitError::NotOwned { moving: true, map_version, .. }) if map_version >= since)
    })
    .await?;
    wait_for(&format!("shard {to}'s writer to take the move"), || takes(&target.directory, probe, true)).await?;
    step(&mut report, "fence");
    after(MoveStep::Frozen);

    wait_for("the transfers between shards that touch the city to finish", || drained(&reach, &group)).await?;
    let accounts = accounts_of(source, from, &group).await?;
    step(&mut report, "drain");

    if !copied(target, to, city, since).await? {
        // No server still routes a write by the map from before the freeze.
        tokio::time::sleep(MAP_POLL * 4).await;
        match copy_rows(from, &source.db, to, &target.db, &group, city, since).await {
            Ok(rows) => report.rows = rows,
            // Nothing copied and no money crossed yet: the city stays where it is, unfrozen.
            // (Unless the copy did commit and only its answer was lost: then the move goes on
            // when run again.)
            Err(error) if copied(target, to, city, since).await? => return Err(error),
            Err(error) => {
                let url = catalog.clone();
                tokio::task::spawn_blocking(move || Catalog::open(&url)?.thaw_city(city, since)).await.map_err(|e| MoveError::Waited(e.to_string()))??;
                return Err(error);
            }
        }
    }
    step(&mut report, "copy");
    after(MoveStep::Copied);

    report.amount = cross_balances(source, from, target, to, &reach, city, since, &accounts).await?;
    report.accounts = accounts.len();
    step(&mut report, "balances");
    after(MoveStep::Crossed);

    let url = catalog.clone();
    tokio::task::spawn_blocking(move || Catalog::open(&url)?.finish_move(city)).await.map_err(|e| MoveError::Waited(e.to_string()))??;
    after(MoveStep::Flipped);
    wait_for(&format!("shard {to}'s writer to take the city's payments"), || takes(&target.directory, probe, false)).await?;
    report.frozen_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    step(&mut report, "flip");

    report.rows += delete_rows(from, &source.db, &group, city).await?;
    step(&mut report, "clean");
    Ok(report)
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) -> Result<(), MoveError> {
    let deadline = Instant::now() + WAIT_MAX;
    while !done().await {
        if Instant::now() > deadline {
            return Err(MoveError::Waited(format!("waited {WAIT_MAX:?} for {what}; run the move again")));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// An account id in the city's first bucket that no one holds (serial 0): what the fence's
/// probes name.
fn probe_account(group: &std::ops::Range<u16>) -> u64 {
    (1 << 56) | (u64::from(group.start) << citypay_routing::BUCKET_SHIFT)
}

/// Sends a writer a transfer that moves nothing (from an account that does not exist to
/// itself: the ledger refuses it, if the writer takes it at all), to learn what it holds.
async fn probe_writer(directory: &Directory, account: u64, during_move: bool) -> Result<citypay_ledger::Outcome, SubmitError> {
    let nonce = citypay_directory::random_bytes::<16>();
    let leg = Leg { debit: account, credit: account, amount: 1, currency: Currency::CNY, code: 0, class: 0, user_data: 0 };
    let event = Event::Transfer(Transfer { id: u128::from_le_bytes(nonce).max(1), leg, pending_timeout_s: None });
    let guards = if during_move { vec![Guard::DuringMove] } else { Vec::new() };
    directory.shard().submit(Command { event: Some(event), guards, rows: Vec::new(), always_rows: Vec::new() }).await
}

/// Whether the writer takes a probe (of the move, or any command) for the city's buckets.
async fn takes(directory: &Directory, account: u64, during_move: bool) -> bool {
    !matches!(probe_writer(directory, account, during_move).await, Err(SubmitError::NotOwned { .. } | SubmitError::Unavailable | SubmitError::Timeout(_)))
}

const GROUP_ACCOUNTS: &str =
    "SELECT id FROM accounts WHERE (id >> 56) IN (1, 2) AND ((id >> 46) & 1023) >= ?1 AND ((id >> 46) & 1023) < ?2 ORDER BY id";
const SENT_BY_GROUP: &str = "SELECT id FROM crossings_out WHERE status = 'prepared' AND (payer >> 56) IN (1, 2) \
    AND ((payer >> 46) & 1023) >= ?1 AND ((payer >> 46) & 1023) < ?2";
const SENT_TO_GROUP: &str = "SELECT id FROM crossings_out WHERE status = 'prepared' AND (payee >> 56) IN (1, 2) \
    AND ((payee >> 46) & 1023) >= ?1 AND ((payee >> 46) & 1023) < ?2";

fn range_params(group: &std::ops::Range<u16>) -> Vec<Value> {
    vec![Value::Int(i64::from(group.start)), Value::Int(i64::from(group.end))]
}

fn ids(rows: Vec<Vec<Value>>) -> Vec<u128> {
    rows.iter().filter_map(|row| match row.first() {
        Some(Value::Text(id)) => u128::from_str_radix(id, 16).ok(),
        _ => None,
    }).collect()
}

/// Finishes every transfer between shards that touches the city, as its resolver would, but
/// now: the payee's shard decides (a transfer not decided yet is decided `Rejected(Timeout)`,
/// never posted: only the sender has the rows a posting writes), and the payer's shard
/// applies. Deciding and applying name no account a freeze holds back. Whether none is left.
async fn drained(reach: &Reach, group: &std::ops::Range<u16>) -> bool {
    let mut open = 0;
    for (shard, side) in reach.0.iter() {
        let payer = Clearing::new(side.directory.clone(), *shard);
        let (Ok(by), Ok(to)) = (side.directory.read(SENT_BY_GROUP, range_params(group)).await, side.directory.read(SENT_TO_GROUP, range_params(group)).await) else {
            return false;
        };
        for id in ids(by).into_iter().chain(ids(to)) {
            open += 1;
            let Ok((crossing, PayerStatus::Prepared, _)) = payer.crossing(id).await else { continue };
            if let Err(error) = payer.resolve_one(&crossing, reach).await {
                tracing::warn!(%error, "finishing a transfer for the move failed; trying again");
            }
        }
    }
    open == 0
}

/// The city's accounts on the shard it leaves; none may hold a pending transfer.
async fn accounts_of(source: &MovingShard, from: ShardId, group: &std::ops::Range<u16>) -> Result<Vec<citypay_ledger::Account>, MoveError> {
    let rows = source.directory.read(GROUP_ACCOUNTS, range_params(group)).await.map_err(|e| MoveError::Database(from, e.to_string()))?;
    let mut accounts = Vec::with_capacity(rows.len());
    for row in rows {
        let id = u64::try_from(int_at(&row, 0).map_err(|e| MoveError::Database(from, e.to_string()))?).unwrap_or(0);
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let account = source.directory.shard().account(id).await.map_err(|e| MoveError::Database(from, e.to_string()))?;
            let Some(account) = account else { break };
            if account.balance.debits_pending == 0 && account.balance.credits_pending == 0 {
                accounts.push(account);
                break;
            }
            if Instant::now() > deadline {
                return Err(MoveError::Waited(format!("account {id:#x} still holds a pending transfer; run the move again")));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(accounts)
}

/// Whether the city's rows were copied to `target` for the move numbered `since`.
async fn copied(target: &MovingShard, to: ShardId, city: u32, since: u64) -> Result<bool, MoveError> {
    let db = target.db.clone();
    tokio::task::spawn_blocking(move || -> Result<bool, postgres::Error> {
        let mut client = postgres::Client::connect(&db, postgres::NoTls)?;
        client.batch_execute(MOVED_IN)?;
        let row = client.query_opt("SELECT 1 FROM moved_in WHERE city = $1 AND since = $2", &[&i64::from(city), &i64::try_from(since).unwrap_or(i64::MAX)])?;
        Ok(row.is_some())
    })
    .await
    .map_err(blocking_error(to))?
    .map_err(|e| MoveError::Database(to, e.to_string()))
}

const MOVED_IN: &str = "CREATE TABLE IF NOT EXISTS moved_in (city BIGINT NOT NULL, since BIGINT NOT NULL, copied_rows BIGINT NOT NULL, \
    copied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (city, since))";

/// Copies the city's rows to the target shard in one transaction, with the record that they
/// were. A row that is there already under the same key is a conflict the move cannot settle
/// (an id drawn on both shards): it stops, nothing copied (and the move thaws the city).
async fn copy_rows(from: ShardId, source: &str, to: ShardId, target: &str, group: &std::ops::Range<u16>, city: u32, since: u64) -> Result<u64, MoveError> {
    let (source, target, group) = (source.to_string(), target.to_string(), group.clone());
    tokio::task::spawn_blocking(move || -> Result<u64, MoveError> {
        let mut out = postgres::Client::connect(&source, postgres::NoTls).map_err(|e| MoveError::Database(from, e.to_string()))?;
        let mut into = postgres::Client::connect(&target, postgres::NoTls).map_err(|e| MoveError::Database(to, e.to_string()))?;
        let db_in = |e: postgres::Error| MoveError::Database(to, e.to_string());
        let db_out = |e: postgres::Error| MoveError::Database(from, e.to_string());
        let mut tx = into.transaction().map_err(db_in)?;
        let mut total = 0u64;
        let tables = MOVED.iter().map(|(t, f)| (*t, rows_of(f, &group, city), false)).chain(MERGED.iter().map(|t| (*t, "true".to_string(), true)));
        for (table, filter, merged) in tables {
            let mut bytes = Vec::new();
            out.copy_out(&format!("COPY (SELECT * FROM {table} WHERE {filter}) TO STDOUT (FORMAT binary)"))
                .map_err(db_out)?
                .read_to_end(&mut bytes)
                .map_err(|e| MoveError::Database(from, e.to_string()))?;
            tx.batch_execute(&format!("CREATE TEMP TABLE moving_rows (LIKE {table}) ON COMMIT DROP")).map_err(db_in)?;
            let mut writer = tx.copy_in("COPY moving_rows FROM STDIN (FORMAT binary)").map_err(db_in)?;
            writer.write_all(&bytes).map_err(|e| MoveError::Database(to, e.to_string()))?;
            let rows = writer.finish().map_err(db_in)?;
            let inserted = tx.execute(&format!("INSERT INTO {table} SELECT * FROM moving_rows ON CONFLICT DO NOTHING"), &[]).map_err(db_in)?;
            tx.batch_execute("DROP TABLE moving_rows").map_err(db_in)?;
            if inserted != rows && !merged && !SHARED_ROWS.contains(&table) {
                return Err(MoveError::Database(to, format!("{} of the city's {rows} rows of {table} are there already under the same key", rows - inserted)));
            }
            total += inserted;
        }
        tx.batch_execute(MOVED_IN).map_err(db_in)?;
        tx.execute(
            "INSERT INTO moved_in (city, since, copied_rows) VALUES ($1, $2, $3)",
            &[&i64::from(city), &i64::try_from(since).unwrap_or(i64::MAX), &i64::try_from(total).unwrap_or(i64::MAX)],
        )
        .map_err(db_in)?;
        tx.commit().map_err(db_in)?;
        Ok(total)
    })
    .await
    .map_err(blocking_error(to))?
}

/// Deletes the city's rows from a shard it is not on (children first), in one transaction.
async fn delete_rows(shard: ShardId, db: &str, group: &std::ops::Range<u16>, city: u32) -> Result<u64, MoveError> {
    let (db, group) = (db.to_string(), group.clone());
    tokio::task::spawn_blocking(move || -> Result<u64, postgres::Error> {
        let mut client = postgres::Client::connect(&db, postgres::NoTls)?;
        let mut tx = client.transaction()?;
        let mut total = 0;
        for (table, filter) in MOVED.iter().rev() {
            let filter = KEPT_BEHIND.iter().find(|(t, _)| t == table).map_or(*filter, |(_, kept)| *kept);
            total += tx.execute(&format!("DELETE FROM {table} WHERE {}", rows_of(filter, &group, city)), &[])?;
        }
        tx.commit()?;
        Ok(total)
    })
    .await
    .map_err(blocking_error(shard))?
    .map_err(|e| MoveError::Database(shard, e.to_string()))
}

/// The shards as the clearing's [`Peer`]: an ask goes to its payee's shard's writer.
#[derive(Clone)]
struct Reach(Arc<BTreeMap<ShardId, MovingShard>>);

impl Peer for Reach {
    fn ask(&self, message: Message, payee: PayeeSide) -> Pin<Box<dyn Future<Output = Result<Message, String>> + Send + '_>> {
        Box::pin(async move {
            let (Message::Decide(crossing) | Message::Resolve(crossing)) = &message else { return Err("only asks are sent".into()) };
            let shard = crossing.payee_shard;
            let side = self.0.get(&shard).ok_or_else(|| format!("shard {shard} is not reached from here"))?;
            Clearing::new(side.directory.clone(), shard).decide_with(message, payee).await.map_err(|e| e.to_string())
        })
    }
}

/// What `account` holds on `directory`'s shard (nothing when it is not there).
async fn held(directory: &Directory, shard: ShardId, account: u64) -> Result<Option<citypay_ledger::Account>, MoveError> {
    directory.shard().account(account).await.map_err(|e| MoveError::Database(shard, e.to_string()))
}

/// Opens each account on the target shard and sends its balance across; checks that each
/// left nothing behind and that the target holds what both shards held before. The amount.
async fn cross_balances(source: &MovingShard, from: ShardId, target: &MovingShard, to: ShardId, reach: &Reach, city: u32, since: u64, accounts: &[citypay_ledger::Account]) -> Result<i64, MoveError> {
    // Before: what each account holds on both shards (a move run again finds some moved).
    let mut before = 0i64;
    for account in accounts {
        before += net(account) + held(&target.directory, to, account.id).await?.as_ref().map_or(0, net);
    }
    let leaving = Clearing::new(source.directory.clone(), from);
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for account in accounts.iter().cloned() {
        let (leaving, reach, source, target) = (leaving.clone(), reach.clone(), source.directory.clone(), target.directory.clone());
        tasks.spawn(async move {
            let id = account.id;
            cross_one(&leaving, &reach, &source, (&target, to), city, since, account).await.map_err(|e| MoveError::Clearing(id, e))
        });
        while tasks.len() >= CROSSING_AT_ONCE {
            results.push(tasks.join_next().await);
        }
    }
    while !tasks.is_empty() {
        results.push(tasks.join_next().await);
    }
    for result in results.into_iter().flatten() {
        result.map_err(|e| MoveError::Waited(e.to_string()))??;
    }
    let mut arrived = 0i64;
    for account in accounts {
        let (Some(left), Some(now)) = (held(&source.directory, from, account.id).await?, held(&target.directory, to, account.id).await?) else {
            return Err(MoveError::Sums(format!("account {:#x} is missing", account.id)));
        };
        if net(&left) != 0 || left.balance.debits_pending != 0 {
            return Err(MoveError::Sums(format!("account {:#x} still holds {} on shard {from}", account.id, net(&left))));
        }
        arrived += net(&now);
    }
    if arrived != before {
        return Err(MoveError::Sums(format!("{arrived} fen arrived of {before}")));
    }
    Ok(before)
}

fn net(account: &citypay_ledger::Account) -> i64 {
    account.balance.credits_posted - account.balance.debits_posted
}

/// Submits one of the move's account events to `target`'s writer; its status (account
/// creation may answer `ConflictingReplay`, which the caller handles).
async fn during_move(target: &Directory, event: Event) -> Result<Status, ClearingError> {
    let command = Command { event: Some(event), guards: vec![Guard::DuringMove], rows: Vec::new(), always_rows: Vec::new() };
    match target.shard().submit(command).await {
        Ok(outcome) if matches!(outcome.status, Status::Ok | Status::ConflictingReplay) => Ok(outcome.status),
        Ok(outcome) => Err(ClearingError::Ledger(outcome.status)),
        Err(error) => Err(ClearingError::Unavailable(error.to_string())),
    }
}

/// Attempts at one balance's crossing (a crossing returned, by a stop in the middle and the
/// drain of the move run again, is sent again under the next number).
const CROSSING_ATTEMPTS: u32 = 8;

/// One account: opened on the target shard as it is on the source, then its balance sent
/// across as a crossing of the move (reserved there, decided here, applied there).
async fn cross_one(leaving: &Clearing, reach: &Reach, source: &Directory, (target, to): (&Directory, ShardId), city: u32, since: u64, account: citypay_ledger::Account) -> Result<(), ClearingError> {
    let open = NewAccount { id: account.id, currency: account.currency, flags: account.flags, code: account.code, limits: account.limits };
    // An account that lived here before (the city moved away and back) has the limits it had
    // then: it takes today's.
    if during_move(target, Event::CreateAccount(open)).await? == Status::ConflictingReplay {
        let limits = citypay_ledger::SetLimits { account: account.id, limits: account.limits };
        match during_move(target, Event::SetLimits(limits)).await? {
            Status::Ok => {}
            status => return Err(ClearingError::Ledger(status)),
        }
    }
    // Its caps go on counting what it used on the shard it leaves (again: nothing changes).
    if account.usage.iter().any(|usage| usage.used > 0) {
        let carry = citypay_ledger::CarryUsage { account: account.id, usage: account.usage };
        match during_move(target, Event::CarryUsage(carry)).await? {
            Status::Ok => {}
            status => return Err(ClearingError::Ledger(status)),
        }
    }
    for attempt in 0..CROSSING_ATTEMPTS {
        let id = derived_event_id(&["move", &city.to_string(), &since.to_string(), &account.id.to_string(), &attempt.to_string()]);
        let crossing = match leaving.crossing(id).await {
            Ok((_, PayerStatus::Posted, _)) => return Ok(()),
            Ok((_, PayerStatus::Voided, _)) => continue,
            Ok((crossing, PayerStatus::Prepared, _)) => crossing,
            Err(ClearingError::NotFound) => {
                let now = source.shard().account(account.id).await.map_err(|e| ClearingError::Unavailable(e.to_string()))?;
                let amount = now.as_ref().map_or(0, net);
                if amount <= 0 {
                    return Ok(());
                }
                Crossing { id, payer_shard: leaving.shard(), payee_shard: to, payer: account.id, payee: account.id, amount }
            }
            Err(error) => return Err(error),
        };
        let purpose = Purpose {
            code: transfer_codes::MOVED,
            payer_guards: vec![Guard::DuringMove],
            payee: PayeeSide { guards: vec![Guard::DuringMove], credit_code: transfer_codes::MOVED, ..PayeeSide::default() },
            ..Purpose::default()
        };
        match leaving.send_for(&crossing, purpose, reach).await? {
            Decision::Posted => return Ok(()),
            Decision::Rejected(reason) => tracing::warn!(account = account.id, reason = reason.code(), "a balance's crossing was returned; sending it again"),
        }
    }
    Err(ClearingError::Unknown(format!("the balance's crossing was returned {CROSSING_ATTEMPTS} times")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_city_s_rows_are_chosen_by_its_buckets_and_code() {
        let sql = rows_of("{G:merchant_id} OR city_code = {C}", &(8..12), 350100);
        assert_eq!(sql, "((((merchant_id) >> 46) & 1023) >= 8 AND (((merchant_id) >> 46) & 1023) < 12) OR city_code = 350100");
        let scope = rows_of("{SCOPE}", &(8..12), 350100);
        assert!(scope.contains("split_part(scope, ':', 2)::bigint) >> 46) & 1023) >= 8"), "{scope}");
        for (table, filter) in MOVED {
            let sql = rows_of(filter, &(8..12), 1);
            assert!(!sql.contains("{G:") && !sql.contains("{C}") && !sql.contains("{SCOPE}"), "{table}: {sql}");
        }
    }
}
