//! `citypay bench payments`: residents pay shops with payment codes over HTTP on loopback, one
//! request per payment as at a real till (the merchant submits code and amount), through the
//! real server in this process: real sockets, JSON, API-key authentication, durable commits. In
//! the same run the same generator measures the server's no-op endpoint, as the HTTP ceiling.
//! Every resident has an enrolled device and pays at most twice (the current and the next
//! 30-second code), so codes stay valid and unused without touching the clock.
//!
//! The load generator runs on a runtime of its own (threads `bench-load`), so the CPU the
//! server spends per payment, and its writer's (thread `shard-writer`), are told apart from
//! the generator's and do not depend on how busy the machine is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::bench_gateway::CpuSplit;
use citypay_api::routes::{AppState, business_routes};
use citypay_api::{Api, ApiConfig};
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::{Category, NewMerchant, NewResident, PasswordPolicy};
use citypay_store::DbUrl;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Options of `citypay bench payments`.
#[derive(Debug, clap::Args)]
pub(crate) struct PaymentsBenchArgs {
    /// Database (must be new); default: a fresh SQLite file in a temporary directory.
    #[arg(long)]
    pub(crate) db: Option<DbUrl>,
    /// Payments to make (at most twice the residents).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) payments: u64,
    /// Merchants.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) merchants: u64,
    /// Concurrent HTTP clients (tills).
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: u64,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Run the city on this many `citypay serve` processes of a city on several servers (a
    /// PostgreSQL --db), this process only the load generator: payments go by turns to the
    /// writer (direct) and to another server (forwarded to the writer), in rounds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=8), requires = "db")]
    servers: Option<u64>,
    /// Offer the payments at this rate (per second) from a load generator in a process of its
    /// own (`bench load --open-loop`): each is sent at its time whatever the others' answers,
    /// its latency timed from then. Without it, `--clients` tills in this process pay as fast
    /// as they can.
    #[arg(long, conflicts_with = "servers")]
    rate: Option<f64>,
}

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub(crate) struct PaymentsBenchReport {
    payments: u64,
    failed: u64,
    seconds: f64,
    payments_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    noop_requests: u64,
    noop_requests_per_second: f64,
    noop_p99_us: u64,
    payments_vs_noop: f64,
    /// The rate offered by the open-loop generator (`--rate`); none when tills went as fast
    /// as they could.
    offered_per_second: Option<f64>,
    /// CPU per payment: the server's (everything but the load generator), its writer
    /// thread's, the generator's.
    server_cpu_us_per_payment: f64,
    writer_cpu_us_per_payment: f64,
    load_cpu_us_per_payment: f64,
    /// The server's CPU per no-op request.
    noop_server_cpu_us_per_request: f64,
    audit_clean: bool,
}

/// The load generator's threads, and the writer's, as named.
const LOAD_THREADS: &str = "bench-load";
const WRITER_THREAD: &str = "shard-writer";

#[derive(Clone)]
pub(crate) struct Payer {
    pub(crate) device: u32,
    pub(crate) secret: Vec<u8>,
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &PaymentsBenchArgs) -> anyhow::Result<()> {
    if let Some(servers) = args.servers {
        return crate::bench_servers::run(args, servers);
    }
    let scratch = tempfile::Builder::new().prefix("citypay-bench-payments").tempdir()?;
    let db = args.db.clone().unwrap_or_else(|| DbUrl::Sqlite(scratch.path().join("city.db")));
    let keys = scratch.path().join("keys");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(LOAD_THREADS).enable_all().build()?;
    let (payments, noop, cpu, load_process_cpu) = runtime.block_on(async {
        let city = crate::city::open_from_files(&db, Some(&keys), PasswordPolicy::FAST_INSECURE).await?;
        let state = city.state.clone();
        let residents = args.payments.div_ceil(2).max(1);
        eprintln!("setting up {} merchants and {residents} residents with devices...", args.merchants);
        let (merchants, payers) = set_up(&state, args.merchants, residents).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let api = Api::new(ApiConfig::new(env!("CARGO_PKG_VERSION")))?.routes(business_routes(state.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(citypay_api::serve_until(listener, api.into_router(), async move {
            let _ = stopped.await;
        }));
        let base = format!("http://{addr}");
        let (pairs, clients) = (args.payments.div_ceil(2), args.clients);
        let before = CpuSplit::now(LOAD_THREADS, WRITER_THREAD);
        let (payments, load_cpu) = match args.rate {
            Some(rate) => {
                let bodies = open_loop_requests(&merchants, &payers, pairs)?;
                let (result, _) = crate::bench_load::load(scratch.path(), &base, &bodies, clients, crate::bench_load::Pacing::Open(rate)).await?;
                anyhow::ensure!(!result.latencies_us.is_empty(), "no payment succeeded");
                ((result.latencies_us, result.failed, result.seconds), Some(std::time::Duration::from_secs_f64(result.cpu_seconds)))
            }
            None => {
                let driven = load.spawn({
                    let base = base.clone();
                    async move { drive_payments(&base, &merchants, payers, pairs, clients).await }
                });
                (driven.await??, None)
            }
        };
        let between = CpuSplit::now(LOAD_THREADS, WRITER_THREAD);
        let requests = payments.0.len().max(1_000) as u64;
        let noop = load.spawn(async move { drive_noop(&base, clients, requests).await }).await??;
        let after = CpuSplit::now(LOAD_THREADS, WRITER_THREAD);
        let _ = stop.send(());
        server.await??;
        city.shard.shutdown();
        anyhow::Ok((payments, noop, (between.since(before), after.since(between)), load_cpu))
    })?;
    drop(load);
    // Off the runtime: the PostgreSQL client blocks on a runtime of its own.
    let mut source = crate::open::reader(&db)?;
    let mut report = report(payments, noop, cpu, citypay_store::audit(source.as_mut())?.is_clean());
    report.offered_per_second = args.rate;
    if let Some(spent) = load_process_cpu {
        // The generator ran in its own process: all of this one's CPU was the server's.
        report.load_cpu_us_per_payment = spent.as_secs_f64() * 1e6 / report.payments.max(1) as f64;
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "{} payment-code payments over HTTP: {:.0}/s (p50 {} µs, p99 {} µs), {} failed; no-op endpoint {:.0}/s (p99 {} µs); payments are {:.0}% of the no-op rate; CPU per payment: server {:.0} µs, its writer {:.0} µs, load generator {:.0} µs; audit {}",
            report.payments,
            report.payments_per_second,
            report.p50_us,
            report.p99_us,
            report.failed,
            report.noop_requests_per_second,
            report.noop_p99_us,
            report.payments_vs_noop * 100.0,
            report.server_cpu_us_per_payment,
            report.writer_cpu_us_per_payment,
            report.load_cpu_us_per_payment,
            if report.audit_clean { "clean" } else { "VIOLATIONS" }
        )?;
    }
    Ok(())
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn report(payments: (Vec<u64>, u64, f64), noop: (Vec<u64>, f64), cpu: (CpuSplit, CpuSplit), audit_clean: bool) -> PaymentsBenchReport {
    let histogram = |values: &[u64]| {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for v in values {
            h.saturating_record((*v).max(1));
        }
        h
    };
    let per = |spent: std::time::Duration, count: u64| spent.as_secs_f64() * 1e6 / count.max(1) as f64;
    let (latencies, failed, seconds) = payments;
    let ok = latencies.len() as u64;
    let h = histogram(&latencies);
    let n = histogram(&noop.0);
    let pps = if seconds > 0.0 { ok as f64 / seconds } else { 0.0 };
    let nps = if noop.1 > 0.0 { noop.0.len() as f64 / noop.1 } else { 0.0 };
    PaymentsBenchReport {
        payments: ok,
        failed,
        seconds,
        payments_per_second: pps,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        noop_requests: noop.0.len() as u64,
        noop_requests_per_second: nps,
        noop_p99_us: n.value_at_quantile(0.99),
        payments_vs_noop: if nps > 0.0 { pps / nps } else { 0.0 },
        offered_per_second: None,
        server_cpu_us_per_payment: per(cpu.0.server(), ok),
        writer_cpu_us_per_payment: per(cpu.0.writer, ok),
        load_cpu_us_per_payment: per(cpu.0.load, ok),
        noop_server_cpu_us_per_request: per(cpu.1.server(), noop.0.len() as u64),
        audit_clean,
    }
}

/// Merchants (their API keys) and residents with money and an enrolled device.
pub(crate) async fn set_up(state: &AppState, merchants: u64, residents: u64) -> anyhow::Result<(Vec<(u64, String)>, Vec<Payer>)> {
    let d = &state.directory;
    d.onboard_city(330100, "Hangzhou").await?;
    let mut keys = Vec::new();
    for i in 0..merchants {
        let organization = format!("MA{:06}", i);
        let org_check = citypay_identity::uscc::organization_check_character(&organization).context("org code")?;
        let body = format!("91330100{organization}{org_check}");
        let code = format!("{body}{}", citypay_identity::uscc::check_character(&body).context("uscc")?);
        let (m, credentials) = d
            .onboard_merchant(&NewMerchant {
                city: 330100,
                name: format!("Shop {i}"),
                uscc: code,
                mcc: "5411".into(),
                category: Category::Retail,
                settlement_account: "6222020200112233446".into(),
                notify_url: None,
            })
            .await?;
        keys.push((m.id, format!("ApiKey {}:{}", credentials.key_id, credentials.secret.expose())));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut payers = Vec::new();
    for i in 0..residents {
        let state = state.clone();
        tasks.spawn(async move { enrol(&state, i).await });
        while tasks.len() >= 256 {
            payers.push(tasks.join_next().await.context("task")???);
        }
    }
    while let Some(payer) = tasks.join_next().await {
        payers.push(payer??);
    }
    Ok((keys, payers))
}

async fn enrol(state: &AppState, i: u64) -> anyhow::Result<Payer> {
    // Region 330106, born on 1 January of 1950..1999, sequence 000..999: 50,000 identities.
    let body = format!("330106{}0101{:03}", 1950 + (i / 1_000) % 50, i % 1_000);
    let id = format!("{body}{}", citypay_identity::resident_id::check_character(&body).context("check")?);
    let resident = state
        .directory
        .register_resident(&NewResident {
            city: 330100,
            name: format!("Resident {i}"),
            mobile: format!("13{:09}", i),
            id_number: id,
            password: "bench password".into(),
        })
        .await?;
    payer(state, &resident).await
}

/// `resident` made a payer: a linked card, 10,000 yuan topped up, an enrolled device.
pub(crate) async fn payer(state: &AppState, resident: &citypay_directory::Resident) -> anyhow::Result<Payer> {
    let card = crate::city::bench_wallet(state, resident).await?;
    state.wallet.top_up(resident, card, 1_000_000, "bench").await?;
    let (device, secret) = state.checkout.enroll_device(resident).await?;
    Ok(Payer { device, secret: secret.expose().clone() })
}

/// The payments of the open loop: every payer's first (this 30-second step's code), then every
/// payer's second (the next step's), so a resident's two payments are far apart in time and
/// never race for the device.
fn open_loop_requests(merchants: &[(u64, String)], payers: &[Payer], pairs: u64) -> anyhow::Result<Vec<crate::bench_load::LoadRequest>> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let payers = &payers[..usize::try_from(pairs)?.min(payers.len())];
    let mut bodies = Vec::with_capacity(2 * payers.len());
    for step in 0..2u64 {
        for payer in payers {
            let i = bodies.len();
            let (_, key) = &merchants[i % merchants.len()];
            let code = PaymentCode::generate(payer.device, &payer.secret, now + 30 * step).to_string();
            bodies.push(crate::bench_gateway::json_pay(key, &format!("B{}_{step}", payer.device), &code, 100 + u64::try_from(i % 900)?));
        }
    }
    Ok(bodies)
}

/// Each client takes the next resident and pays twice with them, with the code of this step and
/// then of the next, so no two requests race for one device.
pub(crate) async fn drive_payments(base: &str, merchants: &[(u64, String)], payers: Vec<Payer>, pairs: u64, clients: u64) -> anyhow::Result<(Vec<u64>, u64, f64)> {
    let payers = Arc::new(payers);
    let merchants = Arc::new(merchants.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = pairs.min(payers.len() as u64);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (payers, merchants, next, failed, base) = (payers.clone(), merchants.clone(), next.clone(), failed.clone(), base.to_owned());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= total {
                    return latencies;
                }
                let payer = &payers[usize::try_from(p).unwrap_or(0)];
                for step in 0..2u64 {
                    let i = 2 * p + step;
                    let (_, key) = &merchants[usize::try_from(i).unwrap_or(0) % merchants.len()];
                    let code = PaymentCode::generate(payer.device, &payer.secret, now + 30 * step);
                    let body = serde_json::json!({
                        "out_trade_no": format!("B{}_{i}", payer.device),
                        "amount": {"amount": 100 + i64::try_from(i % 900).unwrap_or(0), "currency": "CNY"},
                        "subject": "bench",
                        "auth_code": code,
                    });
                    let sent = Instant::now();
                    let response = client.post(format!("{base}/v1/trades/pay")).header("authorization", key).json(&body).send().await;
                    match response {
                        Ok(r) if r.status().is_success() => latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)),
                        answered => {
                            // The first failure says why, for whoever reads the benchmark.
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                let why = match answered {
                                    Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                                    Err(e) => e.to_string(),
                                };
                                eprintln!("a payment failed: {why}");
                            }
                        }
                    }
                }
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    let seconds = start.elapsed().as_secs_f64();
    if latencies.is_empty() {
        bail!("no payment succeeded");
    }
    Ok((latencies, failed.load(Ordering::Relaxed), seconds))
}

async fn drive_noop(base: &str, clients: u64, requests: u64) -> anyhow::Result<(Vec<u64>, f64)> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (next, url) = (next.clone(), format!("{base}/health"));
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let sent = Instant::now();
                if client.get(&url).send().await.is_ok() {
                    latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    Ok((latencies, start.elapsed().as_secs_f64()))
}
