//! `citypay simulate`: a seeded cashless-city simulation on a fresh database, an audit of the
//! books after every day, and the report (summary JSON and the dashboard page).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use citypay_dashboard::{Report, ReportDay};
use citypay_directory::PasswordPolicy;
use citypay_shard::ManualClock;
use citypay_sim::{ActionClock, Progress, Services, SimConfig, Simulation, Tally};
use citypay_store::{DbUrl, Value};
use serde::Serialize;
use sha2::Digest;

/// Options of `citypay simulate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimulateArgs {
    /// A preset city (Hangzhou, Wuhan, Fuzhou, Tianjin); repeat for several. Default: all four.
    #[arg(long = "city")]
    cities: Vec<String>,
    /// Simulated residents over all cities, split by population.
    #[arg(long, default_value_t = 20_000)]
    residents: u64,
    /// Days to simulate.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// The seed: the same seed builds the same city and the same books.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Database (must hold no data); with --shards, one per shard, comma-separated. Default: a
    /// fresh embedded database in the report directory (`city.db`, or `shardN.db` each).
    #[arg(long, conflicts_with = "server", value_delimiter = ',')]
    db: Vec<DbUrl>,
    /// Run the cities on this many shards, a database and writer each, in this process (a
    /// country: the cities placed on the shards in turn; travellers' payments and money sent
    /// to family between cities of two shards cross them through the clearing).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4), conflicts_with_all = ["server", "continue_run"])]
    shards: u16,
    /// Drive a running `citypay serve` over its HTTP API instead (its live dashboard shows the
    /// city), as the platform operator `--operator` whose password is in
    /// CITYPAY_OPERATOR_PASSWORD. Days are lived now, back to back; journeys, contributions and
    /// tuition are left out (the fare run and settlement are the server operator's).
    #[arg(long)]
    server: Option<String>,
    /// The platform operator who onboards the cities and businesses on `--server`.
    #[arg(long, default_value = "root", requires = "server")]
    operator: String,
    /// Continue the simulation that `--report` holds (its database, seed, cities and
    /// residents, from its `summary.json`): `--days` more days after its last.
    #[arg(long = "continue", conflicts_with_all = ["server", "seed", "residents", "cities"])]
    continue_run: bool,
    /// Where to write the report (`index.html`, `summary.json`).
    #[arg(long, default_value = "citypay-report")]
    report: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl SimulateArgs {
    /// The demo's run: the four preset cities for one day.
    pub(crate) fn demo(report: PathBuf) -> SimulateArgs {
        SimulateArgs { cities: Vec::new(), residents: 50_000, days: 1, seed: 42, db: Vec::new(), shards: 1, server: None, operator: "root".into(), continue_run: false, report, json: false }
    }
}

/// The end-of-day audit.
#[derive(Debug, Serialize)]
struct DayAudit {
    day: u32,
    date: String,
    clean: bool,
    accounts: usize,
    journal_rows: usize,
    violations: Vec<String>,
}

/// How long things took; the only part of the summary that differs between runs.
#[derive(Debug, Serialize)]
struct Timing {
    setup_seconds: f64,
    seconds: f64,
    transactions_per_second: f64,
    audit_seconds: f64,
    /// Writer batches (durable commits) and commands over the whole run, set-up included.
    writer_batches: u64,
    writer_commands: u64,
    /// Seconds of the simulated days by phase: planning, people's days, tap uploads, fare runs.
    phases: std::collections::BTreeMap<&'static str, f64>,
}

/// What a run prints and writes as `summary.json`.
#[derive(Debug, Serialize)]
struct Summary {
    seed: u64,
    /// Days this run simulated: `first_day` to `first_day + days - 1`.
    days: u32,
    first_day: u32,
    cities: Vec<SummaryCity>,
    /// Payments (phone and cash), refunds and top-ups made during the simulated days.
    transactions: u64,
    /// Seconds the simulated days took (set-up excluded; see `timing`).
    seconds: f64,
    set_up: Tally,
    simulated: Tally,
    audits: Vec<DayAudit>,
    /// SHA-256 over every account's balances, in id order (shard by shard): equal runs have
    /// equal books.
    books_digest: String,
    /// The shards the cities ran on (1: one database).
    shards: u16,
    report: String,
    timing: Timing,
}

#[derive(Debug, Serialize)]
struct SummaryCity {
    name: String,
    code: u32,
    simulated_residents: u64,
    population: u64,
}

/// A progress bar on a terminal; nothing otherwise.
struct Bars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    visible: bool,
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        if !self.visible {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} {per_sec}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(phase.to_owned());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish();
        }
    }
}

#[allow(clippy::float_arithmetic)]
pub(crate) fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    if args.continue_run {
        let path = args.report.join("summary.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("--continue reads the earlier run's {}", path.display()))?;
        let earlier: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not a summary", path.display()))?;
        let number = |field: &str| earlier[field].as_u64().with_context(|| format!("{}: no {field}", path.display()));
        anyhow::ensure!(earlier["shards"].as_u64().unwrap_or(1) == 1, "--continue lives on a run of one database; {} ran on several shards", path.display());
        let through = u32::try_from(number("first_day").unwrap_or(1) + number("days")? - 1)?;
        let cities = earlier["cities"].as_array().map(Vec::as_slice).unwrap_or_default();
        let continued = SimulateArgs {
            cities: cities.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect(),
            residents: cities.iter().filter_map(|c| c["simulated_residents"].as_u64()).sum(),
            seed: number("seed")?,
            continue_run: false,
            ..args.clone()
        };
        return simulate(&continued, through);
    }
    simulate(args, 0)
}

/// Runs the simulation; `through` days were simulated on the database before (0: it must be
/// fresh).
#[allow(clippy::float_arithmetic, clippy::too_many_lines)]
fn simulate(args: &SimulateArgs, through: u32) -> anyhow::Result<()> {
    let cities: Vec<&'static citypay_sim::CityPreset> = if args.cities.is_empty() {
        citypay_sim::PRESETS.iter().collect()
    } else {
        args.cities
            .iter()
            .map(|name| citypay_sim::preset(name).with_context(|| format!("no preset city {name:?}; the presets are Hangzhou, Wuhan, Fuzhou, Tianjin")))
            .collect::<anyhow::Result<_>>()?
    };
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    if args.residents < u64::try_from(cities.len()).unwrap_or(1) {
        bail!("--residents must be at least one per city");
    }
    if let Some(server) = &args.server {
        return run_on_server(args, server, cities);
    }
    std::fs::create_dir_all(&args.report).with_context(|| format!("creating {}", args.report.display()))?;
    let shards = usize::from(args.shards);
    anyhow::ensure!(args.db.is_empty() || args.db.len() == shards, "--db names {} databases for {shards} shard(s)", args.db.len());
    let dbs: Vec<DbUrl> = (0..shards)
        .map(|i| args.db.get(i).cloned().unwrap_or_else(|| DbUrl::Sqlite(args.report.join(if shards == 1 { "city.db".to_owned() } else { format!("shard{}.db", i + 1) }))))
        .collect();
    // The keys live with the report: beside an embedded database, else in the report directory.
    // The shards of a country share one key set; each has its own file for its journal's seal
    // head.
    let key_files: Vec<PathBuf> = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| match db {
            DbUrl::Sqlite(_) => crate::city::default_keys_path(db),
            DbUrl::Postgres(_) if i == 0 => args.report.join("citypay.keys"),
            DbUrl::Postgres(_) => args.report.join(format!("shard{}.keys", i + 1)),
        })
        .collect();
    crate::city::load_keys(&key_files[0])?;
    // The ride and receipt keys come from the seed, so runs replay exactly; the journal's seal
    // key and head live beside the database, as `citypay audit` expects.
    let mut stored = vec![crate::city::load_ride_keys(&key_files[0])?];
    for file in &key_files[1..] {
        if !file.exists() {
            std::fs::copy(&key_files[0], file).with_context(|| format!("writing {}", file.display()))?;
        }
        stored.push(crate::city::load_ride_keys(file)?);
    }
    let first_day = through + 1;
    let clock = ManualClock::new(citypay_ledger::Timestamp::from_unix_seconds(Simulation::day_start(first_day) - 7_200));
    // Each shard draws its ids from a seed of its own (the first as one database does).
    let shard_seed = |shard: usize| {
        let text = if shard == 0 { format!("citypay simulate {}", args.seed) } else { format!("citypay simulate {} shard {}", args.seed, shard + 1) };
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&sha2::Sha256::digest(text.as_bytes()));
        seed
    };
    let bars = Bars { bar: Mutex::new(None), visible: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = runtime.block_on(async {
        let mut opened = Vec::new();
        for (shard, (db, stored)) in dbs.iter().zip(stored).enumerate() {
            let keys = crate::city::load_keys(&key_files[shard])?;
            let city = crate::city::open_with(
                db,
                keys,
                crate::city::SigningKeys {
                    keys: vec![ride_key(args.seed)?],
                    revoked: Vec::new(),
                    receipt: seed_key("receipt", args.seed),
                    journal: stored.journal,
                    head: stored.head,
                    gateway: std::sync::Arc::default(),
                },
                PasswordPolicy::FAST_INSECURE,
                Arc::new(clock.clone()),
                Arc::new(ActionClock::new(clock.clone())),
                Some(shard_seed(shard)),
            )
            .await?;
            check_fresh(&city.state.directory, db, through, first_day).await?;
            opened.push(city);
        }
        let city_shard: Vec<usize> = (0..cities.len()).map(|i| i % shards).collect();
        let countries = if shards > 1 { place_cities(&opened, &cities, &city_shard).await? } else { vec![None] };
        let services = opened
            .iter()
            .zip(countries)
            .map(|(city, country)| {
                Ok(Services {
                    wallet: city.state.wallet.clone(),
                    bank: city.state.sandbox_bank.clone().context("the simulator needs the sandbox bank")?,
                    checkout: city.state.checkout.clone(),
                    transit: city.state.transit.clone(),
                    bills: city.state.bills.clone(),
                    settlement: city.state.settlement.clone(),
                    directory: city.state.directory.clone(),
                    clock: clock.clone(),
                    country,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let directories: Vec<citypay_directory::Directory> = opened.iter().map(|c| c.state.directory.clone()).collect();
        let config = SimConfig { cities: cities.clone(), residents: args.residents, days: args.days, seed: args.seed, continues_after: through };
        let mut simulation = Simulation::on_shards(services, city_shard, config);
        if !args.json {
            eprintln!(
                "simulating {} for {} day(s) with {} residents, seed {}{}",
                cities.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
                args.days,
                args.residents,
                args.seed,
                if shards > 1 { format!(", on {shards} shards") } else { String::new() }
            );
        }
        let started = Instant::now();
        let set_up = simulation.set_up(&bars).await?;
        let setup_seconds = started.elapsed().as_secs_f64();
        let mut simulated = Tally::default();
        let mut seconds = 0.0;
        let mut audit_seconds = 0.0;
        let mut audits = Vec::new();
        let mut report = Report {
            title: "citypay: how the cities pay".into(),
            subtitle: format!(
                "Simulation, seed {}, {} day(s) from {}, {} simulated residents",
                args.seed,
                through + args.days,
                Simulation::date(1),
                citypay_dashboard::thousands(args.residents)
            ),
            residents: cities.iter().zip(simulation.residents_per_city()).map(|(c, n)| (c.name.to_owned(), *n)).collect(),
            ..Report::default()
        };
        // The report shows the earlier run's days too, read back from the database.
        for day in 1..first_day {
            report.days.push(ReportDay { date: Simulation::date(day), cities: day_stats(&directories, day).await? });
        }
        for day in first_day..first_day + args.days {
            let started = Instant::now();
            let tally = simulation.run_day(day, &bars).await?;
            seconds += started.elapsed().as_secs_f64();
            simulated.merge(&tally);
            let started = Instant::now();
            audits.push(audit_day(&dbs, day).await?);
            audit_seconds += started.elapsed().as_secs_f64();
            report.days.push(ReportDay { date: Simulation::date(day), cities: day_stats(&directories, day).await? });
        }
        let books_digest = books_digest(&directories).await?;
        let transactions = simulated.transactions();
        let writer = |count: fn(&citypay_shard::ShardStats) -> u64| opened.iter().map(|c| count(c.shard.stats())).sum::<u64>();
        let summary = Summary {
            seed: args.seed,
            days: args.days,
            first_day,
            cities: cities
                .iter()
                .zip(simulation.residents_per_city())
                .map(|(c, n)| SummaryCity { name: c.name.to_owned(), code: c.code, simulated_residents: *n, population: c.population })
                .collect(),
            transactions,
            seconds,
            set_up,
            simulated,
            audits,
            books_digest,
            shards: args.shards,
            report: args.report.join("index.html").display().to_string(),
            timing: Timing {
                setup_seconds,
                seconds,
                transactions_per_second: if seconds > 0.0 { transactions as f64 / seconds } else { 0.0 },
                audit_seconds,
                writer_batches: writer(|stats| stats.batches.load(std::sync::atomic::Ordering::Relaxed)),
                writer_commands: writer(|stats| stats.commands.load(std::sync::atomic::Ordering::Relaxed)),
                phases: simulation.phase_seconds().clone(),
            },
        };
        write_report(&args.report, &report, &summary)?;
        drop(opened);
        anyhow::Ok(summary)
    })?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        print_summary(&summary)?;
    }
    if summary.audits.iter().any(|a| !a.clean) {
        bail!("the audit found violations");
    }
    Ok(())
}

/// What `simulate --server` prints.
#[derive(Debug, Serialize)]
struct ServerSummary {
    server: String,
    seed: u64,
    days: u32,
    cities: Vec<String>,
    /// Payments (phone and cash), refunds and top-ups made during the days.
    transactions: u64,
    seconds: f64,
    #[serde(flatten)]
    run: citypay_sim::ServerRun,
    /// Where the server shows the city.
    dashboard: String,
}

/// `simulate --server`: the same people and plans, each action a call of the server's API.
#[allow(clippy::float_arithmetic)]
fn run_on_server(args: &SimulateArgs, server: &str, cities: Vec<&'static citypay_sim::CityPreset>) -> anyhow::Result<()> {
    let password = std::env::var("CITYPAY_OPERATOR_PASSWORD").context("--server needs the operator's password in CITYPAY_OPERATOR_PASSWORD")?;
    let target = citypay_sim::ServerTarget { base: server.trim_end_matches('/').to_owned(), username: args.operator.clone(), password };
    let config = SimConfig { cities: cities.clone(), residents: args.residents, days: args.days, seed: args.seed, continues_after: 0 };
    let bars = Bars { bar: Mutex::new(None), visible: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    let run = runtime.block_on(citypay_sim::drive_server(&target, &config, &bars))?;
    let summary = ServerSummary {
        server: target.base.clone(),
        seed: args.seed,
        days: args.days,
        cities: cities.iter().map(|c| c.name.to_owned()).collect(),
        transactions: run.simulated.transactions(),
        seconds: started.elapsed().as_secs_f64(),
        run,
        dashboard: format!("{}/dashboard", target.base),
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        say!(
            "{} transactions on {} for {} in {:.1} s; skipped (the server's own runs): {:?}",
            summary.transactions,
            summary.server,
            summary.cities.join(", "),
            summary.seconds,
            summary.run.skipped
        )?;
        say!("The city is on the server's dashboard: {} (sign in as an operator)", summary.dashboard)?;
    }
    Ok(())
}

/// The platform's ride-code signing key of a simulation, drawn from its seed.
fn ride_key(seed: u64) -> anyhow::Result<citypay_ride::PlatformKey> {
    let validity = citypay_ride::Validity::new(0, u32::MAX).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(citypay_ride::PlatformKey::from_seed(1, seed_key("ride", seed), validity))
}

/// A simulation's key for `purpose`, from its seed (the run is public: so are its keys).
fn seed_key(purpose: &str, seed: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(&sha2::Sha256::digest(format!("citypay simulate {purpose} key {seed}").as_bytes()));
    key
}

/// `citypay demo`: a fresh report directory, then [`run`] with the demo's settings.
pub(crate) fn demo(report: PathBuf) -> anyhow::Result<()> {
    if report.join("city.db").exists() {
        std::fs::remove_dir_all(&report).with_context(|| format!("removing the previous demo in {}", report.display()))?;
    }
    run(&SimulateArgs::demo(report.clone()))?;
    say!("open {} in a browser to see the dashboard", report.join("index.html").display())?;
    Ok(())
}

/// Refuses a database that holds residents for a fresh run, or none to continue, or the next
/// day already (a continued run that stopped part-way left its payments and rides behind:
/// living that day again would ride and pay twice).
async fn check_fresh(directory: &citypay_directory::Directory, db: &DbUrl, through: u32, first_day: u32) -> anyhow::Result<()> {
    let already = directory.read("SELECT COUNT(*) FROM residents", Vec::new()).await?;
    let fresh = already.first().and_then(|r| r.first()) == Some(&Value::Int(0));
    if !fresh && through == 0 {
        bail!("{} already holds residents; simulate needs a fresh database (pass another --db or --report, or --continue)", db.redacted());
    }
    if fresh && through > 0 {
        bail!("{} holds no simulated city to continue", db.redacted());
    }
    if through > 0 {
        let latest = directory
            .read("SELECT COALESCE((SELECT MAX(created_at) FROM trades), 0), COALESCE((SELECT MAX(at) FROM taps), 0)", Vec::new())
            .await?;
        let row = latest.first().context("no answer")?;
        let lived = citypay_directory::int_at(row, 0)?.max(citypay_directory::int_at(row, 1)?);
        if u64::try_from(lived).unwrap_or(0) >= Simulation::day_start(first_day) {
            bail!("{} already holds day {first_day} (a continued run that did not finish?); its report's summary.json is older than the database", db.redacted());
        }
    }
    Ok(())
}

/// A country of the opened shards: city number `i` gets the `i`-th group of buckets on shard
/// `city_shard[i]` (onboarded there), each writer holds its shard's buckets, and each shard's
/// country view reaches the others in this process; answers each shard's view.
async fn place_cities(opened: &[crate::city::City], cities: &[&'static citypay_sim::CityPreset], city_shard: &[usize]) -> anyhow::Result<Vec<Option<citypay_country::Country>>> {
    let directories: Vec<citypay_directory::Directory> = opened.iter().map(|c| c.state.directory.clone()).collect();
    let placed: Vec<(u32, &str, usize)> = cities.iter().zip(city_shard).map(|(preset, shard)| (preset.code, preset.name, *shard)).collect();
    let countries = citypay_country::Country::on_one_machine(&directories, &placed).await?;
    for (city, country) in opened.iter().zip(&countries) {
        city.state.checkout.refund_elsewhere_through(Arc::new(country.clone()));
    }
    Ok(countries.into_iter().map(Some).collect())
}

/// The dashboard's numbers of day `day`, read from every shard (each city lives on one).
async fn day_stats(directories: &[citypay_directory::Directory], day: u32) -> anyhow::Result<Vec<citypay_dashboard::CityStats>> {
    let from = Simulation::day_start(day);
    let mut cities = Vec::new();
    for directory in directories {
        cities.extend(citypay_dashboard::collect(directory, from, from + 86_400, None).await?);
    }
    cities.sort_by_key(|city| city.city_code);
    Ok(cities)
}

/// The audit after day `day`: of the one database, or of the country (each shard's books and
/// custody, every currency summing to zero across the shards, the clearing accounts mirroring
/// each other, nothing left undecided).
async fn audit_day(dbs: &[DbUrl], day: u32) -> anyhow::Result<DayAudit> {
    let dbs = dbs.to_vec();
    let (accounts, journal_rows, violations) = tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, usize, Vec<String>)> {
        if let [db] = dbs.as_slice() {
            let mut source = crate::open::reader(db)?;
            let report = citypay_store::audit(source.as_mut())?;
            return Ok((report.accounts, report.journal_rows, report.violations.iter().map(ToString::to_string).collect()));
        }
        let url = |db: &DbUrl| match db {
            DbUrl::Postgres(url) => url.clone(),
            DbUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        };
        let shards: Vec<(u16, String)> = dbs.iter().enumerate().map(|(i, db)| (u16::try_from(i + 1).unwrap_or(u16::MAX), url(db))).collect();
        let (books, violations) = crate::country_cmd::read_country(&shards)?;
        Ok((books.iter().map(|b| b.accounts).sum(), books.iter().map(|b| b.journal_rows).sum(), violations))
    })
    .await??;
    Ok(DayAudit { day, date: Simulation::date(day), clean: violations.is_empty(), accounts, journal_rows, violations })
}

/// SHA-256 over every account's balances, shard by shard, in id order.
async fn books_digest(directories: &[citypay_directory::Directory]) -> anyhow::Result<String> {
    let mut hash = sha2::Sha256::new();
    for directory in directories {
        let rows = directory
            .read("SELECT id, debits_posted, debits_pending, credits_posted, credits_pending FROM accounts ORDER BY id", Vec::new())
            .await?;
        for row in rows {
            for value in row {
                if let Value::Int(v) = value {
                    hash.update(v.to_le_bytes());
                }
            }
        }
    }
    Ok(citypay_directory::hex::encode(&hash.finalize()))
}

fn write_report(dir: &Path, report: &Report, summary: &Summary) -> anyhow::Result<()> {
    std::fs::write(dir.join("index.html"), citypay_dashboard::render(report))?;
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(summary)?)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}

fn print_summary(summary: &Summary) -> anyhow::Result<()> {
    use citypay_dashboard::{thousands, yuan};
    say!("seed {}, {} day(s), {} transactions in {:.1} s ({:.0}/s; set-up {:.1} s)",
        summary.seed, summary.days, thousands(summary.transactions), summary.seconds, summary.timing.transactions_per_second, summary.timing.setup_seconds)?;
    for city in &summary.cities {
        let payments = summary.simulated.payments.get(&city.name);
        let mut mobile = citypay_dashboard::Counter::default();
        let mut cash = citypay_dashboard::Counter::default();
        for methods in payments.into_iter().flat_map(|c| c.values()) {
            for (method, counter) in methods {
                if method == "cash" { cash.merge(*counter) } else { mobile.merge(*counter) }
            }
        }
        let registered = summary.set_up.registrations.get(&city.name).copied().unwrap_or(0)
            + summary.simulated.registrations.get(&city.name).copied().unwrap_or(0);
        say!(
            "  {:<9} {:>7} residents ({:>7} real-name): {:>8} phone payments ({:>14} yuan), {:>7} cash ({:>12} yuan)",
            city.name, thousands(city.simulated_residents), thousands(registered), thousands(mobile.count), yuan(mobile.amount), thousands(cash.count), yuan(cash.amount)
        )?;
    }
    let total = |counters: &std::collections::BTreeMap<String, citypay_dashboard::Counter>| {
        counters.values().fold(citypay_dashboard::Counter::default(), |mut all, c| {
            all.merge(*c);
            all
        })
    };
    let (away, family, across) = (total(&summary.simulated.paid_away), total(&summary.simulated.sent_to_family), total(&summary.simulated.across_shards));
    say!("  travellers paid {} times in another city ({} yuan); {} sums sent to family elsewhere ({} yuan)", thousands(away.count), yuan(away.amount), thousands(family.count), yuan(family.amount))?;
    if summary.shards > 1 {
        say!("  on {} shards: {} payments and transfers crossed shards ({} yuan)", summary.shards, thousands(across.count), yuan(across.amount))?;
    }
    for audit in &summary.audits {
        say!("audit after {}: {} ({} accounts, {} journal rows)", audit.date, if audit.clean { "clean" } else { "VIOLATIONS" }, audit.accounts, audit.journal_rows)?;
    }
    say!("books digest {}", summary.books_digest)?;
    say!("the dashboard: {}", summary.report)
}
