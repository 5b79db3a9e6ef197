//! `citypay bench statement`: what a page of a resident's wallet statement costs with a big
//! journal. The journal is filled through the writer with `--rows` transfers among `--wallets`
//! wallets and a bank's custody account (top-ups, withdrawals and transfers between wallets,
//! each one journal row), then random wallets' first pages and the pages after them are read
//! through the wallet service, as the API reads them. Latency is each page's wall time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use citypay_directory::{AccountKind, PasswordPolicy, Resident, account_id};
use citypay_identity::AccountClass;
use citypay_ledger::{AccountFlags, Currency, Event, EventId, Leg, Limits, NewAccount, Status, Transfer};
use citypay_shard::{Command, ShardHandle};
use citypay_store::DbUrl;
use citypay_wallet::StatementQuery;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Options of `citypay bench statement`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatementBenchArgs {
    /// Database (must be new); default: a fresh SQLite file in a temporary directory.
    #[arg(long)]
    db: Option<DbUrl>,
    /// Journal rows to store.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Wallets the rows are spread over (each has about 4/3 × rows / wallets lines).
    #[arg(long, default_value_t = 100_000)]
    wallets: u64,
    /// Pages to read.
    #[arg(long, default_value_t = 2_000)]
    pages: u64,
    /// Lines per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct StatementBenchReport {
    backend: &'static str,
    journal_rows: u64,
    wallets: u64,
    lines_per_wallet: u64,
    fill_seconds: f64,
    fill_rows_per_second: f64,
    pages: u64,
    limit: usize,
    first_page_p50_us: u64,
    first_page_p99_us: u64,
    next_page_p50_us: u64,
    next_page_p99_us: u64,
    max_us: u64,
}

/// A bank's custody account (kind 3): the other side of top-ups and withdrawals.
const CUSTODY: u64 = account_id(AccountKind::Custody, 9_999);

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &StatementBenchArgs) -> anyhow::Result<()> {
    if args.wallets < 2 || args.rows < args.wallets || args.pages == 0 {
        bail!("need at least 2 wallets, a row per wallet and a page");
    }
    let scratch = tempfile::Builder::new().prefix("citypay-bench-statement").tempdir()?;
    let db = args.db.clone().unwrap_or_else(|| DbUrl::Sqlite(scratch.path().join("city.db")));
    let keys = scratch.path().join("keys");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let city = crate::city::open_from_files(&db, Some(&keys), PasswordPolicy::FAST_INSECURE).await?;
        let handle = city.state.directory.shard().clone();
        eprintln!("opening {} wallets...", args.wallets);
        open_wallets(&handle, args.wallets).await?;
        eprintln!("storing {} journal rows...", args.rows);
        let filled = Instant::now();
        fill(&handle, args.wallets, args.rows - args.wallets).await?;
        let fill_seconds = filled.elapsed().as_secs_f64();
        let mut first = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut next = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..args.pages.div_ceil(2) {
            let owner = rng.u64(1..=args.wallets);
            let resident = Resident { id: owner, city: 330100, wallet: account_id(AccountKind::Wallet, owner), id_masked: String::new(), class: AccountClass::III };
            let mut query = StatementQuery { limit: args.limit, ..StatementQuery::default() };
            let started = Instant::now();
            let page = city.state.wallet.statement(&resident, &query).await?;
            first.saturating_record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            if page.lines.is_empty() {
                bail!("wallet {owner} has no lines");
            }
            query.before = page.next;
            let started = Instant::now();
            city.state.wallet.statement(&resident, &query).await?;
            next.saturating_record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        tokio::task::spawn_blocking(move || city.shard.shutdown()).await?;
        anyhow::Ok(StatementBenchReport {
            backend: match db {
                DbUrl::Sqlite(_) => "sqlite",
                DbUrl::Postgres(_) => "postgres",
            },
            journal_rows: args.rows,
            wallets: args.wallets,
            // A top-up or withdrawal is a line of one wallet, a payment between wallets of two.
            lines_per_wallet: 4 * args.rows / 3 / args.wallets,
            fill_seconds,
            fill_rows_per_second: (args.rows - args.wallets) as f64 / fill_seconds.max(1e-9),
            pages: args.pages,
            limit: args.limit,
            first_page_p50_us: first.value_at_quantile(0.5),
            first_page_p99_us: first.value_at_quantile(0.99),
            next_page_p50_us: next.value_at_quantile(0.5),
            next_page_p99_us: next.value_at_quantile(0.99),
            max_us: first.max().max(next.max()),
        })
    })?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "statement pages of {} lines, {} journal rows on {} ({} lines a wallet): first page p50 {} µs, p99 {} µs; the next page p50 {} µs, p99 {} µs",
            report.limit,
            report.journal_rows,
            report.backend,
            report.lines_per_wallet,
            report.first_page_p50_us,
            report.first_page_p99_us,
            report.next_page_p50_us,
            report.next_page_p99_us
        )?;
    }
    Ok(())
}

fn leg(debit: u64, credit: u64, amount: i64) -> Leg {
    Leg { debit, credit, amount, currency: Currency::CNY, code: citypay_directory::transfer_codes::TOP_UP, class: 0, user_data: 0 }
}

/// The wallets and the custody account, each wallet funded with a top-up (one row each).
async fn open_wallets(handle: &ShardHandle, wallets: u64) -> anyhow::Result<()> {
    let spec = |id, flags| Command::from(Event::CreateAccount(NewAccount { id, currency: Currency::CNY, flags, code: 1, limits: Limits::NONE }));
    submit_all(handle, std::iter::once(spec(CUSTODY, AccountFlags::NONE))).await?;
    submit_all(handle, (1..=wallets).map(|i| spec(account_id(AccountKind::Wallet, i), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS))).await?;
    let funding = (1..=wallets).map(|i| Command::from(Event::Transfer(Transfer { id: EventId::from(i), leg: leg(CUSTODY, account_id(AccountKind::Wallet, i), 1_000_000), pending_timeout_s: None })));
    submit_all(handle, funding).await
}

/// Submits every command with 4,096 in flight; each must succeed.
async fn submit_all(handle: &ShardHandle, commands: impl Iterator<Item = Command>) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for command in commands {
        let handle = handle.clone();
        tasks.spawn(async move { handle.submit(command).await });
        while tasks.len() >= 4_096 {
            expect_ok(tasks.join_next().await.context("a task")??)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        expect_ok(done?)?;
    }
    Ok(())
}

fn expect_ok(reply: citypay_shard::Reply) -> anyhow::Result<()> {
    match reply {
        Ok(outcome) if outcome.status == Status::Ok => Ok(()),
        Ok(outcome) => bail!("refused: {}", outcome.status),
        Err(error) => bail!("{error}"),
    }
}

/// `rows` transfers: a third top-ups, a third withdrawals, a third between two wallets, of
/// small amounts (every wallet holds 10,000 yuan; none runs dry).
async fn fill(handle: &ShardHandle, wallets: u64, rows: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..4_096u64 {
        let (handle, next) = (handle.clone(), next.clone());
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(client);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rows {
                    return anyhow::Ok(());
                }
                let wallet = account_id(AccountKind::Wallet, rng.u64(1..=wallets));
                let other = account_id(AccountKind::Wallet, rng.u64(1..=wallets));
                let (debit, credit, code) = match i % 3 {
                    0 => (CUSTODY, wallet, citypay_directory::transfer_codes::TOP_UP),
                    1 => (wallet, CUSTODY, citypay_directory::transfer_codes::WITHDRAWAL),
                    _ if other != wallet => (wallet, other, citypay_directory::transfer_codes::PAYMENT),
                    _ => (CUSTODY, wallet, citypay_directory::transfer_codes::TOP_UP),
                };
                let amount = rng.i64(1..=100);
                let transfer = Transfer { id: EventId::from(wallets + 1 + i), leg: Leg { code, ..leg(debit, credit, amount) }, pending_timeout_s: None };
                expect_ok(handle.submit(Event::Transfer(transfer).into()).await)?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
