//! `citypay bench payments --servers N --db postgres://...`: the same payments, with the city
//! on N `citypay serve` processes of a city on several servers and this process only the load
//! generator. Payments go by turns to the writer (direct) and to a server that forwards them
//! to the writer, in rounds of equal size, so that both paths see the same machine; the
//! report gives each path's rate and latency and their ratio.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use citypay_directory::PasswordPolicy;
use citypay_store::DbUrl;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bench_payments::{PaymentsBenchArgs, drive_payments, set_up};

/// Rounds of direct then forwarded payments.
const ROUNDS: usize = 3;

#[derive(Debug, Serialize)]
struct PathReport {
    payments: u64,
    failed: u64,
    seconds: f64,
    payments_per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

#[derive(Debug, Serialize)]
struct ServersReport {
    servers: u64,
    rounds: usize,
    direct: PathReport,
    forwarded: PathReport,
    forwarded_vs_direct: f64,
}

/// Kills the servers however the benchmark ends.
pub(crate) struct Servers(pub(crate) Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn path_report(runs: &[(Vec<u64>, u64, f64)]) -> PathReport {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for value in runs.iter().flat_map(|r| &r.0) {
        histogram.saturating_record((*value).max(1));
    }
    let payments: u64 = runs.iter().map(|r| r.0.len() as u64).sum();
    let seconds: f64 = runs.iter().map(|r| r.2).sum();
    PathReport {
        payments,
        failed: runs.iter().map(|r| r.1).sum(),
        seconds,
        payments_per_second: payments as f64 / seconds.max(1e-9),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
    }
}

pub(crate) async fn role(http: &reqwest::Client, base: &str) -> Option<String> {
    let health: serde_json::Value = http.get(format!("{base}/health")).send().await.ok()?.json().await.ok()?;
    health["role"].as_str().map(str::to_owned)
}

/// Ports that were free all at once: `n` distinct ones.
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// One server of a city on several servers, logging (warnings and up) to `log` (appended).
pub(crate) fn spawn_server(bin: &std::path::Path, url: &str, keys: &std::path::Path, port: u16, cluster: u16, log: &std::path::Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(bin)
        .args(["serve", "--db", url, "--keys"])
        .arg(keys)
        .args(["--addr", &format!("127.0.0.1:{port}"), "--cluster-listen", &format!("127.0.0.1:{cluster}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting citypay serve")
}

#[allow(clippy::float_arithmetic)]
pub(crate) fn run(args: &PaymentsBenchArgs, servers: u64) -> anyhow::Result<()> {
    let Some(DbUrl::Postgres(url)) = args.db.clone() else { anyhow::bail!("--servers needs --db postgres://... (a new database)") };
    let scratch = tempfile::Builder::new().prefix("citypay-bench-servers").tempdir()?;
    // Kept when asked, for the servers' logs.
    let scratch_path = if std::env::var_os("CITYPAY_BENCH_KEEP").is_some() { scratch.keep() } else { scratch.path().to_path_buf() };
    let keys = scratch_path.as_path().join("keys");
    crate::city::new_key_set(&keys)?;
    let db = DbUrl::Postgres(url.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let city = crate::city::open_from_files(&db, Some(&keys), PasswordPolicy::FAST_INSECURE).await?;
        let residents = args.payments.div_ceil(2).max(2 * ROUNDS as u64);
        eprintln!("setting up {} merchants and {residents} residents with devices...", args.merchants);
        let (merchants, payers) = set_up(&city.state, args.merchants, residents).await?;
        tokio::task::spawn_blocking(move || city.shard.shutdown()).await?;

        let bin = std::env::current_exe()?;
        let mut children = Servers(Vec::new());
        let mut bases = Vec::new();
        let ports = free_ports(2 * usize::try_from(servers)?)?;
        for i in 0..servers {
            let index = usize::try_from(i)?;
            let (port, cluster) = (ports[2 * index], ports[2 * index + 1]);
            children.0.push(spawn_server(&bin, &url, &keys, port, cluster, &scratch_path.as_path().join(format!("serve-{i}.log")))?);
            bases.push(format!("http://127.0.0.1:{port}"));
        }
        let http = reqwest::Client::new();
        let started = Instant::now();
        let (writer, forwarder) = loop {
            let mut roles = Vec::new();
            for base in &bases {
                roles.push(role(&http, base).await);
            }
            let writer = roles.iter().position(|r| r.as_deref() == Some("writer"));
            let forwarder = roles.iter().position(|r| r.as_deref() == Some("forwarding"));
            if let (Some(w), Some(f)) = (writer, forwarder)
                && roles.iter().all(Option::is_some)
            {
                break (w, f);
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the servers did not start (logs in {})", scratch_path.as_path().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Equal shares of the payers for each path and round.
        let share = payers.len() / (2 * ROUNDS);
        let mut payers = payers.into_iter();
        let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            for (base, runs) in [(&bases[writer], &mut direct), (&bases[forwarder], &mut forwarded)] {
                let chunk: Vec<_> = payers.by_ref().take(share).collect();
                let pairs = chunk.len() as u64;
                eprintln!("round {}: {} payments at {base}", round + 1, 2 * pairs);
                runs.push(drive_payments(base, &merchants, chunk, pairs, args.clients).await?);
            }
        }
        drop(children);
        let (direct, forwarded) = (path_report(&direct), path_report(&forwarded));
        let ratio = forwarded.payments_per_second / direct.payments_per_second.max(1e-9);
        anyhow::Ok(ServersReport { servers, rounds: ROUNDS, direct, forwarded, forwarded_vs_direct: ratio })
    })?;
    let mut source = crate::open::reader(&db)?;
    let clean = citypay_store::audit(source.as_mut())?.is_clean();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["audit_clean"] = serde_json::Value::Bool(clean);
        say!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        say!(
            "payment-code payments on {} servers: direct to the writer {:.0}/s (p50 {} µs, p99 {} µs); forwarded {:.0}/s (p50 {} µs, p99 {} µs): {:.0}% of direct; audit {}",
            report.servers,
            report.direct.payments_per_second,
            report.direct.p50_us,
            report.direct.p99_us,
            report.forwarded.payments_per_second,
            report.forwarded.p50_us,
            report.forwarded.p99_us,
            report.forwarded_vs_direct * 100.0,
            if clean { "clean" } else { "VIOLATIONS" }
        )?;
    }
    Ok(())
}
