//! `citypay bench load`: a load generator in a process of its own, so the server's process
//! spends CPU only on serving. It reads a file of HTTP requests, opens its connections, says
//! `ready`, waits for `go` on standard input, sends the requests to `--target` and prints what
//! it measured as JSON. `bench gateway` and `bench payments --rate` run it as a child; it runs
//! as well against any server (its requests made beforehand).
//!
//! Two ways to send:
//! - closed loop (default): `--clients` tills, each taking the next pair of requests and
//!   sending them in order (a resident's two payments never race), paced with `--rate`;
//! - open loop (`--open-loop --rate R`): request i is sent at start + i/R on a task of its own,
//!   however many are still waiting for their answer, as real tills would.
//!
//! Either way a paced request's latency counts from its scheduled send, so a slow server is
//! not hidden by requests that were sent late.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Options of `citypay bench load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// A JSON file of requests (`path`, `content_type`, `authorization`, `body`); in the
    /// closed loop in pairs (each resident pays twice, in order).
    #[arg(long)]
    requests: std::path::PathBuf,
    /// Concurrent tills (the closed loop), or connections opened before the start (the open
    /// loop).
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Requests per second to pace at; as fast as possible without.
    #[arg(long)]
    rate: Option<f64>,
    /// Send each request at its time whatever the others' answers (needs --rate).
    #[arg(long, requires = "rate")]
    open_loop: bool,
}

/// One request of a load run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LoadRequest {
    /// Path on the server.
    pub(crate) path: String,
    pub(crate) content_type: String,
    /// An `Authorization` header (the JSON API's merchants).
    pub(crate) authorization: Option<String>,
    pub(crate) body: String,
}

/// What one load run measured.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LoadResult {
    /// Of the requests answered with success.
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) failed: u64,
    pub(crate) seconds: f64,
    /// The generator's own CPU time over the run.
    pub(crate) cpu_seconds: f64,
}

/// How the child sends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pacing {
    /// `--clients` tills, paced at the rate if one is given.
    Closed(Option<f64>),
    /// Each request at its time, at this rate.
    Open(f64),
}

/// Runs the load generator as a child over `bodies` against `url`; what it measured and this
/// process's CPU time while it ran (the server's).
pub(crate) async fn load(dir: &std::path::Path, url: &str, bodies: &[LoadRequest], clients: u64, pacing: Pacing) -> anyhow::Result<(LoadResult, Duration)> {
    let file = dir.join("requests.json");
    std::fs::write(&file, serde_json::to_vec(bodies)?)?;
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["bench", "load", "--target", url, "--clients", &clients.to_string(), "--requests"]).arg(&file);
    match pacing {
        Pacing::Closed(None) => {}
        Pacing::Closed(Some(rate)) => {
            command.args(["--rate", &format!("{rate:.1}")]);
        }
        Pacing::Open(rate) => {
            command.args(["--open-loop", "--rate", &format!("{rate:.1}")]);
        }
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut ready = String::new();
    // The child says "ready" when its requests are loaded and its connections open.
    let (ready, stdout) = tokio::task::spawn_blocking(move || stdout.read_line(&mut ready).map(|_| (ready, stdout))).await??;
    if ready.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("the load generator said {ready:?}");
    }
    let started = crate::bench_gateway::cpu_time();
    child.stdin.take().context("stdin")?.write_all(b"go\n")?;
    let (output, child) = tokio::task::spawn_blocking(move || {
        let mut stdout = stdout;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| (text, child))
    })
    .await??;
    let cpu = crate::bench_gateway::cpu_time() - started;
    let mut child = child;
    anyhow::ensure!(child.wait()?.success(), "the load generator failed");
    Ok((serde_json::from_str(&output).context("the load generator's answer")?, cpu))
}

/// `citypay bench load`.
#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let bodies: Arc<Vec<LoadRequest>> = Arc::new(serde_json::from_slice(&std::fs::read(&args.requests)?).context("the requests file")?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let clients = usize::try_from(args.clients.max(1))?;
        let (client_pool, open) = match (args.open_loop, args.rate) {
            (true, Some(rate)) => (vec![reqwest::Client::builder().pool_max_idle_per_host(clients).build()?], Some(rate)),
            _ => ((0..clients).map(|_| reqwest::Client::new()).collect(), None),
        };
        // Connections opened before timing starts: the open loop's pool gets `clients`.
        let mut warm = tokio::task::JoinSet::new();
        for client in client_pool.iter().cycle().take(clients) {
            let health = client.get(format!("{}/health", args.target));
            warm.spawn(async move { health.send().await.is_ok() });
        }
        warm.join_all().await;
        say!("ready")?;
        let mut go = String::new();
        std::io::stdin().read_line(&mut go)?;
        anyhow::ensure!(go.trim() == "go", "expected \"go\" on standard input");
        let cpu_before = crate::bench_gateway::cpu_time();
        let start = Instant::now();
        let (latencies, failed) = match open {
            Some(rate) => open_loop(&client_pool[0], &args.target, &bodies, rate, start).await?,
            None => closed_loop(client_pool, &args.target, &bodies, args.rate, start).await?,
        };
        let seconds = start.elapsed().as_secs_f64();
        let cpu_seconds = (crate::bench_gateway::cpu_time() - cpu_before).as_secs_f64();
        anyhow::Ok(LoadResult { latencies_us: latencies, failed, seconds, cpu_seconds })
    })?;
    say!("{}", serde_json::to_string(&result)?)?;
    Ok(())
}

/// Sends one request; whether it succeeded. A gateway answer is HTTP 200 whatever happened:
/// its code says.
async fn send(client: &reqwest::Client, target: &str, request: &LoadRequest) -> bool {
    let mut post = client.post(format!("{target}{}", request.path)).header("content-type", &request.content_type).body(request.body.clone());
    if let Some(authorization) = &request.authorization {
        post = post.header("authorization", authorization);
    }
    match post.send().await {
        Ok(response) if response.status().is_success() => response.text().await.is_ok_and(|t| request.authorization.is_some() || t.contains("\"code\":\"10000\"")),
        answered => {
            // The first failure says why, for whoever reads the benchmark.
            if !FAILURE_SHOWN.swap(true, Ordering::Relaxed) {
                let why = match answered {
                    Ok(response) => format!("{} {}", response.status(), response.text().await.unwrap_or_default()),
                    Err(error) => error.to_string(),
                };
                eprintln!("a request failed: {why}");
            }
            false
        }
    }
}

static FAILURE_SHOWN: AtomicBool = AtomicBool::new(false);

fn micros_since(instant: Instant) -> u64 {
    u64::try_from(instant.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
async fn closed_loop(clients: Vec<reqwest::Client>, target: &str, bodies: &Arc<Vec<LoadRequest>>, rate: Option<f64>, start: Instant) -> anyhow::Result<(Vec<u64>, u64)> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let pairs = bodies.len() as u64 / 2;
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (bodies, next, failed, target) = (bodies.clone(), next.clone(), failed.clone(), target.to_owned());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= pairs {
                    return latencies;
                }
                for step in 0..2u64 {
                    let i = 2 * p + step;
                    // Paced: each payment has its time; its latency counts from then.
                    let due = match rate {
                        Some(rate) => {
                            let due = start + Duration::from_secs_f64(i as f64 / rate);
                            tokio::time::sleep_until(due.into()).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    if send(&client, &target, &bodies[usize::try_from(i).unwrap_or(0)]).await {
                        latencies.push(micros_since(due));
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    Ok((latencies, failed.load(Ordering::Relaxed)))
}

/// Each request on a task of its own at start + i/rate; the answers are gathered as they come.
#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
async fn open_loop(client: &reqwest::Client, target: &str, bodies: &Arc<Vec<LoadRequest>>, rate: f64, start: Instant) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut tasks = tokio::task::JoinSet::new();
    let (mut latencies, mut failed) = (Vec::with_capacity(bodies.len()), 0u64);
    let mut gather = |answer: Option<u64>| match answer {
        Some(micros) => latencies.push(micros),
        None => failed += 1,
    };
    for i in 0..bodies.len() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, bodies, target) = (client.clone(), bodies.clone(), target.to_owned());
        tasks.spawn(async move { send(&client, &target, &bodies[i]).await.then(|| micros_since(due)) });
        while let Some(done) = tasks.try_join_next() {
            gather(done?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        gather(done?);
    }
    Ok((latencies, failed))
}
