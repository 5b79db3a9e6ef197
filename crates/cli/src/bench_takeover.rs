//! `citypay bench takeover --db postgres://... --keys FILE`: how long a city on several servers
//! is without a writer after its writer is killed, on the city's own database (the one a
//! simulated day leaves, say). Two servers serve the city and clients pay with payment codes
//! through the one that is not the writer; the writer is killed (SIGKILL) and the time from the
//! kill to the first payment acknowledged under a later writer epoch is one sample. The killed
//! server is started again (it forwards), and the next kill is of the new writer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use citypay_api::routes::AppState;
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::{Category, DirectoryError, NewMerchant, NewResident, PasswordPolicy};
use citypay_store::DbUrl;
use serde::Serialize;

use crate::bench_payments::Payer;
use crate::bench_servers::{Servers, free_ports, role, spawn_server};

/// Options of `citypay bench takeover`.
#[derive(Debug, clap::Args)]
pub(crate) struct TakeoverBenchArgs {
    /// The city's PostgreSQL database (it keeps what the benchmark adds: a shop, residents and
    /// their payments).
    #[arg(long)]
    db: DbUrl,
    /// The city's key set (`citypay keys new`), which the servers share.
    #[arg(long)]
    keys: std::path::PathBuf,
    /// Writer kills.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Residents paying meanwhile (each pays at most twice a 30-second step).
    #[arg(long, default_value_t = 600)]
    payers: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct TakeoverReport {
    accounts: i64,
    residents: i64,
    /// Opening the city in this process before the servers start: the ledger's load.
    load_s: f64,
    kills: usize,
    /// Kill → first payment acknowledged under a later epoch, each kill, in order.
    takeover_ms: Vec<u64>,
    p50_ms: u64,
    p99_ms: u64,
    max_ms: u64,
    payments_acknowledged: u64,
    payments_failed: u64,
    audit_clean: bool,
}

/// Acknowledged payments: when, and under which writer epoch.
type Acks = Arc<Mutex<Vec<(Instant, i64)>>>;

#[allow(clippy::float_arithmetic)]
pub(crate) fn run(args: &TakeoverBenchArgs) -> anyhow::Result<()> {
    let DbUrl::Postgres(url) = args.db.clone() else { anyhow::bail!("--db postgres://... (a city on several servers keeps its data in PostgreSQL)") };
    anyhow::ensure!(args.keys.exists(), "{}: no key set (citypay keys new FILE)", args.keys.display());
    let scratch = tempfile::Builder::new().prefix("citypay-bench-takeover").tempdir()?;
    let scratch_path = if std::env::var_os("CITYPAY_BENCH_KEEP").is_some() { scratch.keep() } else { scratch.path().to_path_buf() };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut report = runtime.block_on(async {
        let opened = Instant::now();
        let city = crate::city::open_from_files(&args.db, Some(&args.keys), PasswordPolicy::FAST_INSECURE).await?;
        let load_s = opened.elapsed().as_secs_f64();
        let count = |sql: &'static str| {
            let directory = city.state.directory.clone();
            async move { directory.read(sql, Vec::new()).await.map(|rows| rows.first().and_then(|r| r.first()).and_then(|v| match v {
                citypay_store::Value::Int(n) => Some(*n),
                _ => None,
            }).unwrap_or(0)) }
        };
        let (accounts, residents) = (count("SELECT COUNT(*) FROM accounts").await?, count("SELECT COUNT(*) FROM residents").await?);
        eprintln!("the city: {accounts} accounts, {residents} residents; opened in {load_s:.1} s; enrolling {} payers...", args.payers);
        let (shop, payers) = set_up(&city.state, args.payers).await?;
        tokio::task::spawn_blocking(move || city.shard.shutdown()).await?;

        let bin = std::env::current_exe()?;
        let ports = free_ports(4)?;
        let logs: Vec<_> = (0..2).map(|i| scratch_path.join(format!("serve-{i}.log"))).collect();
        let mut servers = Servers(Vec::new());
        let bases: Vec<String> = (0..2).map(|i| format!("http://127.0.0.1:{}", ports[2 * i])).collect();
        for i in 0..2 {
            servers.0.push(spawn_server(&bin, &url, &args.keys, ports[2 * i], ports[2 * i + 1], &logs[i])?);
        }
        let http = reqwest::Client::new();
        let mut writer = wait_for(&http, &bases, |roles| roles.iter().position(|r| r == "writer").filter(|_| roles.iter().any(|r| r == "forwarding")), 180).await?;

        // Clients pay through whichever server `target` names: the one not about to be killed.
        let target = Arc::new(Mutex::new(bases[1 - writer].clone()));
        let acks: Acks = Arc::default();
        let (stop, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let clients: Vec<_> = payers
            .chunks(payers.len().div_ceil(2).max(1))
            .enumerate()
            .map(|(client, chunk)| tokio::spawn(pay_continuously(client, chunk.to_vec(), shop.clone(), target.clone(), acks.clone(), stop.clone(), failed.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;

        let mut takeover_ms = Vec::new();
        for kill in 0..args.kills {
            let survivor = 1 - writer;
            *target.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = bases[survivor].clone();
            let old_epoch = epoch(&http, &bases[writer]).await.context("the writer's epoch")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let killed = Instant::now();
            servers.0[writer].kill()?;
            let acknowledged = loop {
                let first = acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().find(|(at, e)| *e > old_epoch && *at >= killed).map(|(at, _)| *at);
                if let Some(at) = first {
                    break at;
                }
                anyhow::ensure!(killed.elapsed() < Duration::from_secs(120), "no payment acknowledged 120 s after kill {} (logs in {})", kill + 1, scratch_path.display());
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let took = u64::try_from(acknowledged.duration_since(killed).as_millis()).unwrap_or(u64::MAX);
            eprintln!("kill {}: a payment acknowledged by the new writer {took} ms after the kill", kill + 1);
            takeover_ms.push(took);
            servers.0[writer].wait()?;
            servers.0[writer] = spawn_server(&bin, &url, &args.keys, ports[2 * writer], ports[2 * writer + 1], &logs[writer])?;
            let roles_wanted = |roles: &[String]| (roles[survivor] == "writer" && roles[1 - survivor] == "forwarding").then_some(survivor);
            writer = wait_for(&http, &bases, roles_wanted, 180).await?;
            acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = 0;
        for client in clients {
            acknowledged += client.await?;
        }
        drop(servers);
        let mut sorted = takeover_ms.clone();
        sorted.sort_unstable();
        // Nearest rank.
        let rank = |q: f64| sorted.get(((q * sorted.len() as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
        anyhow::Ok(TakeoverReport {
            accounts,
            residents,
            load_s,
            kills: args.kills,
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: sorted.last().copied().unwrap_or(0),
            takeover_ms,
            payments_acknowledged: acknowledged,
            payments_failed: failed.load(Ordering::Relaxed),
            audit_clean: false,
        })
    })?;
    let mut source = crate::open::reader(&args.db)?;
    report.audit_clean = citypay_store::audit(source.as_mut())?.is_clean();
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "writer takeover on a city of {} accounts over {} kills: p50 {} ms, p99 {} ms, max {} ms; {} payments acknowledged, {} failed (in flight at a kill); audit {}",
            report.accounts,
            report.kills,
            report.p50_ms,
            report.p99_ms,
            report.max_ms,
            report.payments_acknowledged,
            report.payments_failed,
            if report.audit_clean { "clean" } else { "VIOLATIONS" }
        )?;
    }
    Ok(())
}

/// Polls the servers' roles until `found` picks a server; answers it.
async fn wait_for(http: &reqwest::Client, bases: &[String], found: impl Fn(&[String]) -> Option<usize>, within_s: u64) -> anyhow::Result<usize> {
    let started = Instant::now();
    loop {
        let mut roles = Vec::new();
        for base in bases {
            roles.push(role(http, base).await.unwrap_or_default());
        }
        if let Some(i) = found(&roles) {
            return Ok(i);
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(within_s), "the servers did not reach the roles wanted within {within_s} s: {roles:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn epoch(http: &reqwest::Client, base: &str) -> Option<i64> {
    let health: serde_json::Value = http.get(format!("{base}/health")).send().await.ok()?.json().await.ok()?;
    health["writer_epoch"].as_i64()
}

/// A shop and `payers` residents with enrolled devices and funds, new to the city (residents
/// whose identity or mobile the city holds already are skipped).
async fn set_up(state: &AppState, payers: u64) -> anyhow::Result<(String, Vec<Payer>)> {
    let d = &state.directory;
    match d.onboard_city(330100, "Hangzhou").await {
        Ok(_) | Err(DirectoryError::CityExists(_)) => {}
        Err(other) => return Err(other.into()),
    }
    let run = fastrand::u64(0..1_000_000);
    let organization = format!("T{run:07}");
    let org_check = citypay_identity::uscc::organization_check_character(&organization).context("org code")?;
    let body = format!("91330100{organization}{org_check}");
    let uscc = format!("{body}{}", citypay_identity::uscc::check_character(&body).context("uscc")?);
    let (_, credentials) = d
        .onboard_merchant(&NewMerchant {
            city: 330100,
            name: format!("Takeover shop {run}"),
            uscc,
            mcc: "5411".into(),
            category: Category::Retail,
            settlement_account: "6222020200112233446".into(),
            notify_url: None,
        })
        .await?;
    let shop = format!("ApiKey {}:{}", credentials.key_id, credentials.secret.expose());
    let mut enrolled = Vec::new();
    let first = fastrand::u64(0..40_000);
    for i in first.. {
        if enrolled.len() as u64 >= payers {
            break;
        }
        anyhow::ensure!(i < first + 4 * payers + 100, "too many identities taken");
        // Region 330108, born on 3 March of 1950..1999, sequence 000..999: 50,000 identities.
        let body = format!("330108{}0303{:03}", 1950 + (i / 1_000) % 50, i % 1_000);
        let id_number = format!("{body}{}", citypay_identity::resident_id::check_character(&body).context("check")?);
        let new = NewResident { city: 330100, name: format!("Rider {i}"), mobile: format!("19{i:09}"), id_number, password: "bench password".into() };
        let resident = match d.register_resident(&new).await {
            Ok(resident) => resident,
            Err(DirectoryError::IdentityTaken | DirectoryError::MobileTaken) => continue,
            Err(other) => return Err(other.into()),
        };
        enrolled.push(crate::bench_payments::payer(state, &resident).await?);
    }
    Ok((shop, enrolled))
}

/// Pays 1 yuan after 1 yuan through `target`, each payer at most twice a 30-second step (the
/// step's code and the next), until `stop`; records each acknowledgement. Answers how many.
async fn pay_continuously(client: usize, payers: Vec<Payer>, shop: String, target: Arc<Mutex<String>>, acks: Acks, stop: Arc<AtomicBool>, failed: Arc<AtomicU64>) -> u64 {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap_or_default();
    let mut used: std::collections::HashSet<(usize, u64)> = std::collections::HashSet::new();
    let (mut next, mut n, mut acknowledged) = (0usize, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let step = now / 30;
        used.retain(|(_, s)| *s >= step);
        // The next payer with a code left in this step or the next.
        let mut chosen = None;
        for _ in 0..payers.len() {
            let p = next % payers.len();
            next += 1;
            if let Some(s) = [step, step + 1].into_iter().find(|s| !used.contains(&(p, *s))) {
                chosen = Some((p, s));
                break;
            }
        }
        let Some((p, s)) = chosen else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        used.insert((p, s));
        n += 1;
        let payer = &payers[p];
        let code = PaymentCode::generate(payer.device, &payer.secret, s * 30);
        let body = serde_json::json!({"out_trade_no": format!("K{client}_{}_{n}", payer.device), "amount": {"amount": 100, "currency": "CNY"}, "subject": "takeover", "auth_code": code});
        let base = target.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match http.post(format!("{base}/v1/trades/pay")).header("authorization", &shop).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                let epoch = response.headers().get("citypay-writer-epoch").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
                acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((Instant::now(), epoch));
                acknowledged += 1;
            }
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged
}
