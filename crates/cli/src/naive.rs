//! The baseline: a naive ledger that commits one SQL transaction per transfer (read the
//! balance, check it, update both accounts, insert the transfer), on the same backend with the
//! same durability, for at most 20,000 transfers or 10 seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use citypay_store::DbUrl;

const TRANSFERS_MAX: u64 = 20_000;
const TIME_MAX: Duration = Duration::from_secs(10);
const FUNDING: i64 = 1_000_000_000_000;

/// How far the naive ledger got.
#[derive(Debug)]
pub(crate) struct NaiveRun {
    pub(crate) transfers: u64,
    pub(crate) seconds: f64,
}

pub(crate) fn run(db: &DbUrl, scratch: &Path, accounts: u64, hot: bool) -> anyhow::Result<NaiveRun> {
    let accounts = i64::try_from(accounts)?;
    match db {
        // A separate file beside the benchmark's, on the same disk.
        DbUrl::Sqlite(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(scratch);
            let file = tempfile::Builder::new().prefix("naive-").suffix(".db").tempfile_in(dir)?;
            sqlite(file.path(), accounts, hot)
        }
        DbUrl::Postgres(url) => postgres(url, accounts, hot),
    }
}

fn pick(rng: &mut fastrand::Rng, accounts: i64, hot: bool) -> (i64, i64, i64) {
    let debit = rng.i64(1..=accounts);
    let credit = if hot { 1 } else { rng.i64(1..=accounts) };
    let credit = if credit == debit { debit % accounts + 1 } else { credit };
    (debit, credit, rng.i64(1..=1_000))
}

fn sqlite(path: &Path, accounts: i64, hot: bool) -> anyhow::Result<NaiveRun> {
    // The same page cache as the ledger's store, whichever opens SQLite first.
    citypay_store_sqlite::page_cache::install();
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE naive_accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE naive_transfers (id INTEGER PRIMARY KEY, debit INTEGER NOT NULL,
             credit INTEGER NOT NULL, amount INTEGER NOT NULL);",
    )?;
    {
        let tx = conn.transaction()?;
        for id in 1..=accounts {
            tx.execute("INSERT INTO naive_accounts VALUES (?1, ?2)", [id, FUNDING])?;
        }
        tx.commit()?;
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let start = Instant::now();
    let mut done = 0u64;
    while done < TRANSFERS_MAX && start.elapsed() < TIME_MAX {
        let (debit, credit, amount) = pick(&mut rng, accounts, hot);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let balance: i64 = tx.query_row("SELECT balance FROM naive_accounts WHERE id = ?1", [debit], |r| r.get(0))?;
        if balance >= amount {
            tx.execute("UPDATE naive_accounts SET balance = balance - ?2 WHERE id = ?1", [debit, amount])?;
            tx.execute("UPDATE naive_accounts SET balance = balance + ?2 WHERE id = ?1", [credit, amount])?;
            tx.execute("INSERT INTO naive_transfers (debit, credit, amount) VALUES (?1, ?2, ?3)", [debit, credit, amount])?;
        }
        tx.commit()?;
        done += 1;
    }
    Ok(NaiveRun { transfers: done, seconds: start.elapsed().as_secs_f64() })
}

fn postgres(url: &str, accounts: i64, hot: bool) -> anyhow::Result<NaiveRun> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(
        "SET synchronous_commit = on;
         DROP TABLE IF EXISTS naive_accounts, naive_transfers;
         CREATE TABLE naive_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL);
         CREATE TABLE naive_transfers (id BIGSERIAL PRIMARY KEY, debit BIGINT NOT NULL,
             credit BIGINT NOT NULL, amount BIGINT NOT NULL);",
    )?;
    client.execute(
        "INSERT INTO naive_accounts SELECT g, $2 FROM generate_series(1, $1::bigint) AS g",
        &[&accounts, &FUNDING],
    )?;
    let select = client.prepare("SELECT balance FROM naive_accounts WHERE id = $1 FOR UPDATE")?;
    let update = client.prepare("UPDATE naive_accounts SET balance = balance + $2 WHERE id = $1")?;
    let insert = client.prepare("INSERT INTO naive_transfers (debit, credit, amount) VALUES ($1, $2, $3)")?;
    let mut rng = fastrand::Rng::with_seed(7);
    let start = Instant::now();
    let mut done = 0u64;
    while done < TRANSFERS_MAX && start.elapsed() < TIME_MAX {
        let (debit, credit, amount) = pick(&mut rng, accounts, hot);
        let mut tx = client.transaction()?;
        let balance: i64 = tx.query_one(&select, &[&debit])?.get(0);
        if balance >= amount {
            tx.execute(&update, &[&debit, &-amount])?;
            tx.execute(&update, &[&credit, &amount])?;
            tx.execute(&insert, &[&debit, &credit, &amount])?;
        }
        tx.commit()?;
        done += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    client.batch_execute("DROP TABLE naive_accounts, naive_transfers")?;
    Ok(NaiveRun { transfers: done, seconds })
}
