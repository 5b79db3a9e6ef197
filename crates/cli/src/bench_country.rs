//! `citypay bench country`: money sent between residents on a country of `--shards` shards
//! (1 to 4 databases, one writer each, in this process; a city each), at several shares of
//! transfers that cross shards (`--cross`, in percent; a transfer across goes to another shard
//! than its sender's, spread evenly). Each run reports transfers per second and the CPU time per transfer,
//! summed over this process (both writers and the services) and every PostgreSQL process (from
//! `/proc`); from the 0% and 100% runs, what a transfer across shards costs against a local one.
//! Senders are on both shards; a transfer across shards runs the clearing's three steps
//! (reserve, decide, apply) as `citypay-country` sends it, the peer reached in this process.
//! Last, `--backlog` transfers are left undecided behind a cut link (shard 2's writer out of
//! reach) and the resolver's time to finish them, once the link is back, is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use citypay_directory::{NewResident, PasswordPolicy, Resident};
use citypay_store::DbUrl;
use serde::Serialize;

/// Options of `citypay bench country`.
#[derive(Debug, clap::Args)]
pub(crate) struct CountryBenchArgs {
    /// Shards (each a city: Hangzhou, Fuzhou, Wuhan, Tianjin).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=4))]
    shards: u16,
    /// Each shard's database (new), comma-separated, one per shard; default: a fresh SQLite
    /// file each in a temporary directory.
    #[arg(long, value_delimiter = ',')]
    db: Vec<DbUrl>,
    /// Residents on each shard.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(2..=5_000))]
    residents: u64,
    /// Transfers per run.
    #[arg(long, default_value_t = 2_000)]
    transfers: u64,
    /// Concurrent senders.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// The shares of transfers across shards to run, in percent.
    #[arg(long, value_delimiter = ',', default_value = "0,5,20,100")]
    cross: Vec<u32>,
    /// Transfers to leave undecided behind a cut link (shard 1 → shard 2) before timing how
    /// long the resolver takes to finish them once the link is back (0: none; none on one
    /// shard).
    #[arg(long, default_value_t = 2_000)]
    backlog: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One run.
#[derive(Debug, Serialize)]
struct Run {
    cross_percent: u32,
    transfers: u64,
    across_shards: u64,
    failed: u64,
    seconds: f64,
    transfers_per_second: f64,
    cpu_us_per_transfer: f64,
    process_cpu_us_per_transfer: f64,
    postgres_cpu_us_per_transfer: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    shards: u32,
    residents_per_shard: u64,
    clients: u64,
    runs: Vec<Run>,
    /// CPU of a transfer across shards over a local one (from the 0% and 100% runs).
    cross_vs_local_cpu: Option<f64>,
    /// Transfers left undecided behind the cut link, and how fast the resolver finished them.
    backlog: u64,
    backlog_drain_seconds: f64,
    backlog_drained_per_second: f64,
    books_clean: bool,
    clearing_mirrors: bool,
}

/// CPU time of every PostgreSQL process (`/proc/PID/stat`, user and system, in clock ticks of
/// 10 ms, Linux's `USER_HZ`).
fn postgres_cpu() -> Duration {
    let mut ticks = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if !stat[open + 1..close].starts_with("postgres") {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3; utime and stime are fields 14 and 15.
        ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_millis(ticks * 10)
}

struct ShardSide {
    state: citypay_api::routes::AppState,
    country: citypay_country::Country,
    residents: Vec<(Resident, String)>,
}

async fn residents(state: &citypay_api::routes::AppState, city: u32, region: &str, mobile_prefix: &str, n: u64) -> anyhow::Result<Vec<(Resident, String)>> {
    let mut made = Vec::new();
    for i in 0..n {
        let body = format!("{region}{}0101{:03}", 1950 + (i / 1_000) % 50, i % 1_000);
        let id = format!("{body}{}", citypay_identity::resident_id::check_character(&body).context("check")?);
        let mobile = format!("{mobile_prefix}{i:09}");
        let resident = state
            .directory
            .register_resident(&NewResident { city, name: format!("居民{i}"), mobile: mobile.clone(), id_number: id, password: "bench password".into() })
            .await?;
        let card = crate::city::bench_wallet(state, &resident).await?;
        state.wallet.top_up(&resident, card, 1_000_000, "bench").await?;
        made.push((resident, mobile));
    }
    Ok(made)
}

/// `n` transfers of 1 fen from `clients` senders spread over the shards, `cross` percent of
/// them to another shard: (latencies are not kept) transfers made, across shards, failed,
/// seconds.
async fn drive(sides: &Arc<Vec<ShardSide>>, n: u64, clients: u64, cross: u32) -> (u64, u64, u64, f64) {
    let (next, across, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let shards = sides.len() as u64;
    for client in 0..clients {
        let (sides, next, across, failed) = (sides.clone(), next.clone(), across.clone(), failed.clone());
        tasks.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return;
                }
                // A fixed spread (no random source): which side sends, who, to whom.
                let mix = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                let from = client % shards;
                let goes_across = shards > 1 && mix % 100 < u64::from(cross);
                let to = if goes_across { (from + 1 + (mix >> 20) % (shards - 1)) % shards } else { from };
                let (from, to) = (usize::try_from(from).unwrap_or(0), usize::try_from(to).unwrap_or(0));
                let senders = &sides[from].residents;
                let recipients = &sides[to].residents;
                let sender = usize::try_from(k % senders.len() as u64).unwrap_or(0);
                let mut recipient = usize::try_from((mix >> 8) % recipients.len() as u64).unwrap_or(0);
                if to == from && recipient == sender {
                    recipient = (recipient + 1) % recipients.len();
                }
                let side = &sides[from];
                let key = format!("bench-{cross}-{k}");
                match side.country.send(&side.state.wallet, &senders[sender].0, &recipients[recipient].1, 1, "", &key).await {
                    Ok(_) if goes_across => {
                        across.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("a transfer failed: {error}");
                        }
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let failed = failed.load(Ordering::Relaxed);
    (n - failed, across.load(Ordering::Relaxed), failed, started.elapsed().as_secs_f64())
}

/// The cities of the campaign, a shard each: code, name, region of its residents' ID numbers,
/// first digits of their mobile numbers.
const CITIES: [(u32, &str, &str, &str); 4] = [(330100, "Hangzhou", "330106", "13"), (350100, "Fuzhou", "350102", "15"), (420100, "Wuhan", "420102", "17"), (120000, "Tianjin", "120101", "18")];

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &CountryBenchArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("citypay-bench-country").tempdir()?;
    let count = usize::from(args.shards);
    anyhow::ensure!(args.db.is_empty() || args.db.len() == count, "--db names {} databases for {count} shards", args.db.len());
    let dbs: Vec<DbUrl> = (0..count).map(|i| args.db.get(i).cloned().unwrap_or_else(|| DbUrl::Sqlite(scratch.path().join(format!("shard{}.db", i + 1))))).collect();
    let keys = scratch.path().join("keys");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (runs, mirrors, backlog, drain_seconds) = runtime.block_on(async {
        // One key set for the country; each shard its own database, writer and city.
        let mut cities = Vec::new();
        for db in &dbs {
            cities.push(crate::city::open_from_files(db, Some(&keys), PasswordPolicy::FAST_INSECURE).await?);
        }
        let directories: Vec<citypay_directory::Directory> = cities.iter().map(|c| c.state.directory.clone()).collect();
        let placed: Vec<(u32, &str, usize)> = (0..count).map(|i| (CITIES[i].0, CITIES[i].1, i)).collect();
        let countries = citypay_country::Country::on_one_machine(&directories, &placed).await?;
        let mut sides = Vec::new();
        for (i, (city, country)) in cities.iter().zip(countries).enumerate() {
            let shard = country.shard();
            let (code, _, region, mobile) = CITIES[i];
            eprintln!("setting up {} residents on shard {shard}...", args.residents);
            let people = residents(&city.state, code, region, mobile, args.residents).await?;
            sides.push(ShardSide { state: city.state.clone(), country, residents: people });
        }
        let sides = Arc::new(sides);
        // A warm-up at the first share, not counted.
        drive(&sides, args.transfers.min(500), args.clients, args.cross.first().copied().unwrap_or(0)).await;
        let mut runs = Vec::new();
        for cross in args.cross.iter().filter(|c| count > 1 || **c == 0) {
            let (cpu, pg) = (crate::bench_gateway::cpu_time(), postgres_cpu());
            let (made, across, failed, seconds) = drive(&sides, args.transfers, args.clients, *cross).await;
            let (cpu, pg) = (crate::bench_gateway::cpu_time().saturating_sub(cpu), postgres_cpu().saturating_sub(pg));
            let per = |d: Duration| d.as_secs_f64() * 1e6 / made.max(1) as f64;
            runs.push(Run {
                cross_percent: *cross,
                transfers: made,
                across_shards: across,
                failed,
                seconds,
                transfers_per_second: made as f64 / seconds.max(1e-9),
                cpu_us_per_transfer: per(cpu + pg),
                process_cpu_us_per_transfer: per(cpu),
                postgres_cpu_us_per_transfer: per(pg),
            });
        }
        // A cut link: shard 2's writer unreachable from shard 1 (its reads still work), so each
        // transfer across it is reserved and its outcome unknown. Then the link is back and the
        // resolver finishes them all, once they are due.
        let backlog = if count > 1 { args.backlog } else { 0 };
        let (dead, relay) = citypay_shard::relay(16, Duration::from_secs(1));
        drop(relay);
        let cut = citypay_country::Country::new(1, String::new(), (*sides[0].country.map()).clone(), sides[0].state.directory.clone(), vec![(2, sides[sides.len().min(2) - 1].state.directory.through(dead))]);
        let mut left = 0u64;
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..backlog {
            let (cut, sides) = (cut.clone(), sides.clone());
            tasks.spawn(async move {
                let (from, to) = (&sides[0].residents, &sides[1].residents);
                let sender = &from[usize::try_from(k % from.len() as u64).unwrap_or(0)].0;
                let recipient = &to[usize::try_from((k * 7) % to.len() as u64).unwrap_or(0)].1;
                matches!(cut.send(&sides[0].state.wallet, sender, recipient, 1, "", &format!("cut-{k}")).await, Err(citypay_wallet::WalletError::OutcomeUnknown))
            });
            while tasks.len() >= usize::try_from(args.clients).unwrap_or(16) {
                left += u64::from(tasks.join_next().await.is_some_and(|r| r.unwrap_or(false)));
            }
        }
        while let Some(r) = tasks.join_next().await {
            left += u64::from(r.unwrap_or(false));
        }
        if left > 0 {
            tokio::time::sleep(Duration::from_millis(citypay_crossshard::RESOLVE_AFTER_MS + 200)).await;
        }
        let drain = Instant::now();
        let finished = sides[0].country.drain(1_000).await? as u64;
        anyhow::ensure!(finished == left, "the resolver finished {finished} of {left} transfers");
        let drain_seconds = drain.elapsed().as_secs_f64();
        let clearing = |state: &citypay_api::routes::AppState, peer| {
            let directory = state.directory.clone();
            async move { directory.shard().account(citypay_clearing::Clearing::clearing_account(peer)).await.ok().flatten().map_or(0, |a| a.balance.net_posted()) }
        };
        let mut mirrors = true;
        for i in 0..sides.len() {
            for j in i + 1..sides.len() {
                let (a, b) = (u16::try_from(i + 1)?, u16::try_from(j + 1)?);
                mirrors &= clearing(&sides[i].state, b).await + clearing(&sides[j].state, a).await == 0;
            }
        }
        drop(sides);
        for city in cities {
            city.shard.shutdown();
        }
        anyhow::Ok((runs, mirrors, left, drain_seconds))
    })?;
    // Off the runtime: the PostgreSQL client blocks on a runtime of its own.
    let mut clean = true;
    for db in &dbs {
        let mut source = crate::open::reader(db)?;
        clean &= citypay_store::audit(source.as_mut())?.is_clean();
    }
    let cost = |percent| runs.iter().find(|r| r.cross_percent == percent).map(|r| r.cpu_us_per_transfer);
    let report = Report {
        shards: u32::from(args.shards),
        residents_per_shard: args.residents,
        clients: args.clients,
        cross_vs_local_cpu: cost(100).zip(cost(0)).map(|(cross, local)| cross / local.max(1e-9)),
        runs,
        backlog,
        backlog_drain_seconds: drain_seconds,
        backlog_drained_per_second: if drain_seconds > 0.0 { backlog as f64 / drain_seconds } else { 0.0 },
        books_clean: clean,
        clearing_mirrors: mirrors,
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for r in &report.runs {
            say!(
                "{} shards, {:>3}% across shards: {:.0} transfers/s, {:.0} µs CPU each ({:.0} this process, {:.0} PostgreSQL), {} failed",
                report.shards, r.cross_percent, r.transfers_per_second, r.cpu_us_per_transfer, r.process_cpu_us_per_transfer, r.postgres_cpu_us_per_transfer, r.failed
            )?;
        }
        if report.backlog > 0 {
            say!("{} transfers left undecided behind a cut link: the resolver finished them in {:.2} s ({:.0}/s)", report.backlog, report.backlog_drain_seconds, report.backlog_drained_per_second)?;
        }
        if let Some(ratio) = report.cross_vs_local_cpu {
            say!("a transfer across shards costs {ratio:.2} local ones in CPU")?;
        }
        say!("books {}, clearing accounts {}", if report.books_clean { "clean" } else { "NOT CLEAN" }, if report.clearing_mirrors { "mirror each other" } else { "DO NOT MIRROR" })?;
    }
    Ok(())
}
