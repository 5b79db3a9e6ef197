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
    /// Database (must hold no data). Default: a fresh embedded database in the report directory.
    #[arg(long, conflicts_with = "server")]
    db: Option<DbUrl>,
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
        SimulateArgs { cities: Vec::new(), residents: 50_000, days: 1, seed: 42, db: None, server: None, operator: "root".into(), continue_run: false, report, json: false }
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
    /// SHA-256 over every account's balances, in id order: equal runs have equal books.
    books_digest: String,
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
    let db = args.db.clone().unwrap_or_else(|| DbUrl::Sqlite(args.report.join("city.db")));
    // The keys live with the report: beside an embedded database, else in the report directory.
    let key_file = match &db {
        DbUrl::Sqlite(_) => crate::city::default_keys_path(&db),
        DbUrl::Postgres(_) => args.report.join("citypay.keys"),
    };
    let keys = crate::city::load_keys(&key_file)?;
    // The ride and receipt keys come from the seed, so runs replay exactly; the journal's seal
    // key and head live beside the database, as `citypay audit` expects.
    let stored = crate::city::load_ride_keys(&key_file)?;
    let first_day = through + 1;
    let clock = ManualClock::new(citypay_ledger::Timestamp::from_unix_seconds(Simulation::day_start(first_day) - 7_200));
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&sha2::Sha256::digest(format!("citypay simulate {}", args.seed).as_bytes()));
    let bars = Bars { bar: Mutex::new(None), visible: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = runtime.block_on(async {
        let city = crate::city::open_with(
            &db,
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
            Some(seed),
        ).await?;
        let directory = city.state.directory.clone();
        let already = directory.read("SELECT COUNT(*) FROM residents", Vec::new()).await?;
        let fresh = already.first().and_then(|r| r.first()) == Some(&Value::Int(0));
        if !fresh && through == 0 {
            bail!("{} already holds residents; simulate needs a fresh database (pass another --db or --report, or --continue)", db.redacted());
        }
        if fresh && through > 0 {
            bail!("{} holds no simulated city to continue", db.redacted());
        }
        if through > 0 {
            // A continued run that stopped part-way left the next day's payments and rides
            // behind: living that day again would ride and pay twice.
            let latest = directory
                .read("SELECT COALESCE((SELECT MAX(created_at) FROM trades), 0), COALESCE((SELECT MAX(at) FROM taps), 0)", Vec::new())
                .await?;
            let row = latest.first().context("no answer")?;
            let lived = citypay_directory::int_at(row, 0)?.max(citypay_directory::int_at(row, 1)?);
            if u64::try_from(lived).unwrap_or(0) >= Simulation::day_start(first_day) {
                bail!("{} already holds day {first_day} (a continued run that did not finish?); its report's summary.json is older than the database", db.redacted());
            }
        }
        let services = Services {
            wallet: city.state.wallet.clone(),
            bank: city.state.sandbox_bank.clone().context("the simulator needs the sandbox bank")?,
            checkout: city.state.checkout.clone(),
            transit: city.state.transit.clone(),
            bills: city.state.bills.clone(),
            settlement: city.state.settlement.clone(),
            directory: directory.clone(),
            clock: clock.clone(),
        };
        let config = SimConfig { cities: cities.clone(), residents: args.residents, days: args.days, seed: args.seed, continues_after: through };
        let mut simulation = Simulation::new(services, config);
        if !args.json {
            eprintln!(
                "simulating {} for {} day(s) with {} residents, seed {}",
                cities.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
                args.days,
                args.residents,
                args.seed
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
            let from = Simulation::day_start(day);
            let stats = citypay_dashboard::collect(&directory, from, from + 86_400, None).await?;
            report.days.push(ReportDay { date: Simulation::date(day), cities: stats });
        }
        for day in first_day..first_day + args.days {
            let started = Instant::now();
            let tally = simulation.run_day(day, &bars).await?;
            seconds += started.elapsed().as_secs_f64();
            simulated.merge(&tally);
            let started = Instant::now();
            audits.push(audit_day(&db, day).await?);
            audit_seconds += started.elapsed().as_secs_f64();
            let from = Simulation::day_start(day);
            let stats = citypay_dashboard::collect(&directory, from, from + 86_400, None).await?;
            report.days.push(ReportDay { date: Simulation::date(day), cities: stats });
        }
        let books_digest = books_digest(&directory).await?;
        let transactions = simulated.transactions();
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
            report: args.report.join("index.html").display().to_string(),
            timing: Timing {
                setup_seconds,
                seconds,
                transactions_per_second: if seconds > 0.0 { transactions as f64 / seconds } else { 0.0 },
                audit_seconds,
                writer_batches: city.shard.stats().batches.load(std::sync::atomic::Ordering::Relaxed),
                writer_commands: city.shard.stats().commands.load(std::sync::atomic::Ordering::Relaxed),
                phases: simulation.phase_seconds().clone(),
            },
        };
        write_report(&args.report, &report, &summary)?;
        drop(city);
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

async fn audit_day(db: &DbUrl, day: u32) -> anyhow::Result<DayAudit> {
    let db = db.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<citypay_store::AuditReport> {
        let mut source = crate::open::reader(&db)?;
        Ok(citypay_store::audit(source.as_mut())?)
    })
    .await??;
    Ok(DayAudit {
        day,
        date: Simulation::date(day),
        clean: report.is_clean(),
        accounts: report.accounts,
        journal_rows: report.journal_rows,
        violations: report.violations.iter().map(ToString::to_string).collect(),
    })
}

async fn books_digest(directory: &citypay_directory::Directory) -> anyhow::Result<String> {
    let rows = directory
        .read("SELECT id, debits_posted, debits_pending, credits_posted, credits_pending FROM accounts ORDER BY id", Vec::new())
        .await?;
    let mut hash = sha2::Sha256::new();
    for row in rows {
        for value in row {
            if let Value::Int(v) = value {
                hash.update(v.to_le_bytes());
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
    for audit in &summary.audits {
        say!("audit after {}: {} ({} accounts, {} journal rows)", audit.date, if audit.clean { "clean" } else { "VIOLATIONS" }, audit.accounts, audit.journal_rows)?;
    }
    say!("books digest {}", summary.books_digest)?;
    say!("the dashboard: {}", summary.report)
}
