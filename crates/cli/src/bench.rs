//! `citypay bench ledger`: many concurrent clients submit single transfers to the shard writer,
//! which coalesces them into durable batches; optionally against a naive ledger that commits one
//! SQL transaction per transfer on the same backend, in the same run.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::bench_gateway::CpuSplit;

use anyhow::{Context, bail};
use citypay_ledger::{AccountFlags, Currency, Event, EventId, Leg, Limits, NewAccount, Status, Transfer};
use citypay_shard::{Command, Shard, ShardConfig, ShardHandle, SystemClock};
use citypay_store::DbUrl;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Options of `citypay bench ledger`.
#[derive(Debug, clap::Args)]
pub(crate) struct LedgerBenchArgs {
    /// Database (sqlite:PATH, a path, or postgres://...); it must be empty. Default: a fresh
    /// SQLite file in a temporary directory.
    #[arg(long)]
    db: Option<DbUrl>,
    /// Number of wallet accounts.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Number of transfers in the measured run.
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Every transfer credits the same account (a bus company at rush hour).
    #[arg(long)]
    hot: bool,
    /// Concurrent clients, each submitting one transfer at a time.
    #[arg(long, default_value_t = 4_096)]
    clients: usize,
    /// Offered load in transfers per second (open loop); unlimited when absent.
    #[arg(long)]
    rate: Option<u64>,
    /// Also run the naive one-transaction-per-transfer ledger and report the ratio.
    #[arg(long)]
    baseline: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Most transfers per batch.
    #[arg(long, default_value_t = citypay_ledger::limits::BATCH_EVENTS_MAX,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=citypay_ledger::limits::BATCH_EVENTS_MAX as u64))]
    batch_max: usize,
    /// Threads running the clients (the writer has its own).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub(crate) struct LedgerBenchReport {
    backend: &'static str,
    accounts: u64,
    clients: usize,
    hot: bool,
    rate: Option<u64>,
    transfers: u64,
    failed: u64,
    seconds: f64,
    transfers_per_second: f64,
    /// The rate of each window of [`WINDOW`] transfers in completion order, the first
    /// included (the last may be shorter), and the slowest of them: a run's average hides a
    /// slow start or a stall.
    window_transfers: u64,
    windows_per_second: Vec<f64>,
    slowest_window_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    /// CPU time per transfer (from each thread's run time, so it holds however busy the
    /// machine is): the writer thread's, the clients' (the runtime's worker threads) and the
    /// whole process's.
    writer_cpu_us_per_transfer: f64,
    clients_cpu_us_per_transfer: f64,
    process_cpu_us_per_transfer: f64,
    batches: u64,
    mean_batch: f64,
    audit_clean: bool,
    baseline_transfers: Option<u64>,
    baseline_seconds: Option<f64>,
    baseline_transfers_per_second: Option<f64>,
    ratio: Option<f64>,
}

const FUNDING: i64 = 1_000_000_000_000;

/// The threads whose CPU time the report gives apart: the shard's writer, and the runtime's
/// workers that run the clients.
const WRITER_THREAD: &str = "shard-writer";
const CLIENT_THREADS: &str = "bench-client";

/// Transfers in each window whose rate the report gives.
const WINDOW: u64 = 100_000;

pub(crate) fn run(args: &LedgerBenchArgs) -> anyhow::Result<LedgerBenchReport> {
    let scratch = tempfile::Builder::new().prefix("citypay-bench").tempdir()?;
    let db = args.db.clone().unwrap_or_else(|| DbUrl::Sqlite(scratch.path().join("ledger.db")));
    let report = measure(args, &db, scratch.path())?;
    print(&report, args.json)?;
    Ok(report)
}

fn measure(args: &LedgerBenchArgs, db: &DbUrl, scratch: &Path) -> anyhow::Result<LedgerBenchReport> {
    if args.accounts < 2 || args.clients == 0 || args.transfers == 0 {
        bail!("need at least 2 accounts, 1 client and 1 transfer");
    }
    let mut store = crate::open::writer(db, &[])?;
    if !store.load()?.accounts.is_empty() {
        bail!("{} already holds accounts; the benchmark needs an empty database", db.redacted());
    }
    let config = ShardConfig {
        batch_max: args.batch_max,
        queue_max: args.batch_max.max(args.clients).max(1 << 16),
        ..ShardConfig::DEFAULT
    };
    let shard = Shard::start(store, config, SystemClock)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    runtime.block_on(open_accounts(&shard.handle(), args.accounts))?;
    let batches_before = shard.stats().batches.load(Ordering::Relaxed);
    let cpu_before = CpuSplit::now(CLIENT_THREADS, WRITER_THREAD);
    let (histogram, failed, seconds, windows) = runtime.block_on(drive(args, shard.handle()))?;
    let cpu = CpuSplit::now(CLIENT_THREADS, WRITER_THREAD).since(cpu_before);
    let per_transfer = |spent: std::time::Duration| spent.as_secs_f64() * 1e6 / args.transfers as f64;
    let batches = shard.stats().batches.load(Ordering::Relaxed) - batches_before;
    shard.shutdown();
    let mut source = crate::open::reader(db)?;
    let audit = citypay_store::audit(source.as_mut())?;
    drop(source);
    let mut report = LedgerBenchReport {
        backend: match db {
            DbUrl::Sqlite(_) => "sqlite",
            DbUrl::Postgres(_) => "postgres",
        },
        accounts: args.accounts,
        clients: args.clients,
        hot: args.hot,
        rate: args.rate,
        transfers: args.transfers,
        failed,
        seconds,
        transfers_per_second: per_second(args.transfers, seconds),
        window_transfers: WINDOW,
        slowest_window_per_second: windows.iter().copied().reduce(f64::min).unwrap_or(0.0),
        windows_per_second: windows,
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        writer_cpu_us_per_transfer: per_transfer(cpu.writer),
        clients_cpu_us_per_transfer: per_transfer(cpu.load),
        process_cpu_us_per_transfer: per_transfer(cpu.process),
        batches,
        mean_batch: ratio_of(args.transfers, batches),
        audit_clean: audit.is_clean(),
        baseline_transfers: None,
        baseline_seconds: None,
        baseline_transfers_per_second: None,
        ratio: None,
    };
    if !audit.is_clean() {
        bail!("the audit found violations after the run: {:?}", audit.violations);
    }
    if args.baseline {
        let naive = crate::naive::run(db, scratch, args.accounts, args.hot)?;
        let naive_tps = per_second(naive.transfers, naive.seconds);
        report.baseline_transfers = Some(naive.transfers);
        report.baseline_seconds = Some(naive.seconds);
        report.baseline_transfers_per_second = Some(naive_tps);
        report.ratio = Some(ratio_of_rates(report.transfers_per_second, naive_tps));
    }
    Ok(report)
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn ratio_of(count: u64, of: u64) -> f64 {
    if of > 0 { count as f64 / of as f64 } else { 0.0 }
}

#[allow(clippy::float_arithmetic)]
fn ratio_of_rates(rate: f64, baseline: f64) -> f64 {
    if baseline > 0.0 { rate / baseline } else { 0.0 }
}

fn wallet_leg(debit: u64, credit: u64, amount: i64) -> Leg {
    Leg { debit, credit, amount, currency: Currency::CNY, code: 1, class: 1, user_data: 0 }
}

/// Wallets 1..=n and a custody account n+1 that funds them.
async fn open_accounts(handle: &ShardHandle, n: u64) -> anyhow::Result<()> {
    let custody = n + 1;
    let spec = |id, flags| {
        Command::from(Event::CreateAccount(NewAccount { id, currency: Currency::CNY, flags, code: 1, limits: Limits::NONE }))
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(spec(custody, AccountFlags::NONE)).await }
    }));
    for id in 1..=n {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            handle.submit(spec(id, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)).await
        }));
    }
    expect_ok(tasks).await?;
    let mut tasks = Vec::new();
    for id in 1..=n {
        let handle = handle.clone();
        let funding = Event::Transfer(Transfer {
            id: EventId::from(id),
            leg: Leg { class: 0, ..wallet_leg(custody, id, FUNDING) },
            pending_timeout_s: None,
        });
        tasks.push(tokio::spawn(async move { handle.submit(funding.into()).await }));
    }
    expect_ok(tasks).await
}

async fn expect_ok(tasks: Vec<tokio::task::JoinHandle<citypay_shard::Reply>>) -> anyhow::Result<()> {
    for task in tasks {
        let outcome = task.await?.context("setting up accounts")?;
        if outcome.status != Status::Ok {
            bail!("setting up accounts: {}", outcome.status);
        }
    }
    Ok(())
}

/// Runs the clients; returns the latency histogram (µs), the count of non-ok outcomes, the
/// wall time of the run and the rate of each window of [`WINDOW`] transfers.
#[allow(clippy::float_arithmetic)]
async fn drive(args: &LedgerBenchArgs, handle: ShardHandle) -> anyhow::Result<(Histogram<u64>, u64, f64, Vec<f64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    // When each window's last transfer was answered: (transfers done, seconds since start).
    let window_ends = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.transfers, done.clone());
    let start = tokio::time::Instant::now();
    let first_id = EventId::from(args.accounts) + 1;
    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let (handle, next, done, failed, window_ends) = (handle.clone(), next.clone(), done.clone(), failed.clone(), window_ends.clone());
        let (total, accounts, hot, rate) = (args.transfers, args.accounts, args.hot, args.rate);
        tasks.push(tokio::spawn(async move {
            // A plain vector per client: a histogram each would cost more than the clients.
            let mut latencies_us: Vec<u64> = Vec::new();
            let mut rng = fastrand::Rng::with_seed(client as u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let sent = match rate {
                    Some(rate) => {
                        let at = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate.max(1));
                        tokio::time::sleep_until(at).await;
                        at
                    }
                    None => tokio::time::Instant::now(),
                };
                let debit = rng.u64(1..=accounts);
                let credit = if hot { 1 } else { rng.u64(1..=accounts) };
                let credit = if credit == debit { debit % accounts + 1 } else { credit };
                let transfer = Event::Transfer(Transfer {
                    id: first_id + EventId::from(i),
                    leg: wallet_leg(debit, credit, rng.i64(1..=1_000)),
                    pending_timeout_s: None,
                });
                let reply = handle.submit(transfer.into()).await;
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latencies_us.push(micros.max(1));
                if !matches!(reply, Ok(o) if o.status == Status::Ok) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished % WINDOW == 0 || finished == total {
                    window_ends.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((finished, start.elapsed().as_secs_f64()));
                }
            }
            latencies_us
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    for micros in latencies.into_iter().flatten() {
        histogram.saturating_record(micros);
    }
    if let Some(bar) = progress {
        bar.abort();
    }
    let mut ends = std::mem::take(&mut *window_ends.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    ends.sort_by_key(|(finished, _)| *finished);
    let mut windows = Vec::new();
    let mut last = (0, 0.0);
    for (finished, at) in ends {
        windows.push(per_second(finished - last.0, at - last.1));
        last = (finished, at);
    }
    Ok((histogram, failed.load(Ordering::Relaxed), seconds, windows))
}

/// A progress bar on stderr, only when stderr is a terminal.
fn progress_bar(total: u64, done: Arc<AtomicU64>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} transfers {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(tokio::spawn(async move {
        loop {
            bar.set_position(done.load(Ordering::Relaxed));
            if done.load(Ordering::Relaxed) >= total {
                bar.finish_and_clear();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }))
}

fn print(report: &LedgerBenchReport, json: bool) -> anyhow::Result<()> {
    if json {
        say!("{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    say!(
        "{} transfers on {} over {} accounts{} from {} clients: {:.0} transfers/s durable ({:.2} s)",
        report.transfers,
        report.backend,
        report.accounts,
        if report.hot { ", every one crediting one hot account" } else { "" },
        report.clients,
        report.transfers_per_second,
        report.seconds
    )?;
    say!(
        "  latency p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs; {} batches of {:.0} on average; {} not ok",
        report.p50_us, report.p99_us, report.p999_us, report.max_us, report.batches, report.mean_batch, report.failed
    )?;
    say!("  the slowest window of {} transfers: {:.0} transfers/s", report.window_transfers, report.slowest_window_per_second)?;
    say!(
        "  CPU per transfer: writer {:.2} µs, clients {:.2} µs, the whole process {:.2} µs",
        report.writer_cpu_us_per_transfer, report.clients_cpu_us_per_transfer, report.process_cpu_us_per_transfer
    )?;
    say!("  audit: {}", if report.audit_clean { "the books are clean" } else { "VIOLATIONS" })?;
    if let (Some(tps), Some(ratio)) = (report.baseline_transfers_per_second, report.ratio) {
        say!("  naive ledger (one SQL transaction per transfer, same backend and durability): {tps:.0} transfers/s; citypay is {ratio:.1}x faster")?;
    }
    Ok(())
}
