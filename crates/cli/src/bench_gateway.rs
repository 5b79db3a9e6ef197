//! `citypay bench gateway`: `alipay.trade.pay` through `/gateway.do` over HTTP on loopback, as a
//! merchant's SDK sends it (a signed form post; each answer signed with the platform's
//! RSA-2048 key), against a bare RSA-2048 signing loop in the same run: signing every answer
//! is the gateway's floor.
//!
//! The server runs in this process; the load comes from a child process (`citypay bench
//! load`) whose requests are signed before timing starts, so this process's CPU clock
//! (CLOCK_PROCESS_CPUTIME_ID: getrusage's user + system time) counts only the server. Two runs:
//! as fast as `--clients` tills can go (the maximum rate, and the server's CPU time per
//! payment), then paced at half that rate (the latency a till sees under a steady load).

use std::time::Duration;

use anyhow::Context;
use crate::bench_load::{LoadRequest, Pacing, load};
use citypay_api::routes::{AppState, business_routes, gateway_pages};
use citypay_api::{Api, ApiConfig};
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::PasswordPolicy;
use citypay_gateway::{AppKey, PlatformKey, Request};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Options of `citypay bench gateway`.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayBenchArgs {
    /// Payments in each of the two runs.
    #[arg(long, default_value_t = 2_000)]
    payments: u64,
    /// Merchants (one gateway app each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    merchants: u64,
    /// Concurrent tills in the maximum-rate run.
    #[arg(long, default_value_t = 32)]
    clients: u64,
    /// Signatures in the bare signing loop.
    #[arg(long, default_value_t = 2_000)]
    signatures: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub(crate) struct GatewayBenchReport {
    payments: u64,
    failed: u64,
    /// The bare loop: CPU microseconds per RSA-2048 signature on one thread.
    bare_signature_us: f64,
    /// Payments per second at the maximum rate.
    max_payments_per_second: f64,
    /// The server's CPU microseconds per payment at the maximum rate.
    server_cpu_us_per_payment: f64,
    /// That over the bare signature time; the target is at most 1/0.7 (1.43).
    cpu_per_payment_vs_signature: f64,
    max_p50_us: u64,
    max_p99_us: u64,
    /// The paced run, at half the maximum rate.
    half_rate_payments_per_second: f64,
    half_rate_p50_us: u64,
    half_rate_p99_us: u64,
    /// The same payments through the JSON API (`POST /v1/trades/pay`, nothing signed), paced
    /// at the gateway's maximum rate: what a payment costs without the protocol.
    json_payments_per_second: f64,
    json_server_cpu_us_per_payment: f64,
    /// (JSON payment + bare signature) over the bare signature: the ratio the gateway would
    /// reach if its own work (verifying, parsing, answering) cost nothing.
    json_plus_signature_vs_signature: f64,
    audit_clean: bool,
}

/// This process's CPU time so far (every thread, user and system).
pub(crate) fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// CPU time of this process's threads, split: those named `load` (a prefix of their
/// names), those named `writer`, and the whole process. Threads are read from
/// `/proc/self/task` (their run time in nanoseconds, `schedstat`); a thread that ended is not
/// counted in its part, only in the process's.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuSplit {
    pub(crate) process: Duration,
    pub(crate) load: Duration,
    pub(crate) writer: Duration,
}

impl CpuSplit {
    pub(crate) fn now(load: &str, writer: &str) -> CpuSplit {
        let mut split = CpuSplit { process: cpu_time(), ..CpuSplit::default() };
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return split };
        for task in tasks.flatten() {
            let path = task.path();
            let (Ok(name), Ok(stat)) = (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("schedstat"))) else { continue };
            let ran = Duration::from_nanos(stat.split_whitespace().next().and_then(|ns| ns.parse().ok()).unwrap_or(0));
            let name = name.trim_end();
            if name.starts_with(load) {
                split.load += ran;
            } else if name == writer {
                split.writer += ran;
            }
        }
        split
    }

    /// What was spent since `before`.
    pub(crate) fn since(self, before: CpuSplit) -> CpuSplit {
        CpuSplit { process: self.process.saturating_sub(before.process), load: self.load.saturating_sub(before.load), writer: self.writer.saturating_sub(before.writer) }
    }

    /// The process's time less the load's: what the server spent.
    pub(crate) fn server(self) -> Duration {
        self.process.saturating_sub(self.load)
    }
}

fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

fn histogram(values: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for v in values {
        h.saturating_record((*v).max(1));
    }
    h
}

/// `alipay.trade.pay` for `app_id` as a form post, signed with `key` as an SDK signs it.
fn signed_pay(app_id: u64, key: &PlatformKey, out_trade_no: &str, code: &str, fen: u64) -> LoadRequest {
    let timestamp = citypay_ledger::Timestamp::from_unix_seconds(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())).local_date_time();
    let biz = serde_json::json!({
        "out_trade_no": out_trade_no,
        "scene": "bar_code",
        "auth_code": code,
        "subject": "bench",
        "total_amount": citypay_gateway::money::yuan(i64::try_from(fen).unwrap_or(1)),
    })
    .to_string();
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("app_id", &app_id.to_string())
        .append_pair("method", "alipay.trade.pay")
        .append_pair("charset", "utf-8")
        .append_pair("sign_type", "RSA2")
        .append_pair("timestamp", &timestamp)
        .append_pair("version", "1.0")
        .append_pair("biz_content", &biz);
    let unsigned = form.finish();
    let signature = key.sign(Request::parse(b"", unsigned.as_bytes()).sign_content().as_bytes());
    let mut form = form_urlencoded::Serializer::new(unsigned);
    form.append_pair("sign", &signature);
    LoadRequest { path: "/gateway.do".into(), content_type: "application/x-www-form-urlencoded;charset=utf-8".into(), authorization: None, body: form.finish() }
}

/// The same payment through the JSON API.
pub(crate) fn json_pay(api_key: &str, out_trade_no: &str, code: &str, fen: u64) -> LoadRequest {
    let body = serde_json::json!({"out_trade_no": out_trade_no, "amount": {"amount": fen, "currency": "CNY"}, "subject": "bench", "auth_code": code});
    LoadRequest { path: "/v1/trades/pay".into(), content_type: "application/json".into(), authorization: Some(api_key.to_owned()), body: body.to_string() }
}

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &GatewayBenchArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("citypay-bench-gateway").tempdir()?;
    let db = citypay_store::DbUrl::Sqlite(scratch.path().join("city.db"));
    let keys = scratch.path().join("keys");
    let app_key = PlatformKey::from_pkcs8(1, &crate::city::generate_rsa_key()?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (bare_us, max, half, max_cpu, json, json_cpu) = runtime.block_on(async {
        let city = crate::city::open_from_files(&db, Some(&keys), PasswordPolicy::FAST_INSECURE).await?;
        let state = city.state.clone();
        // The three runs' payers: each pays twice (this 30-second step's code, then the next's).
        let per_run = args.payments.div_ceil(2).max(1);
        let residents = 3 * per_run;
        eprintln!("setting up {} merchants with gateway apps and {residents} residents with devices...", args.merchants);
        let (merchants, payers) = crate::bench_payments::set_up(&state, args.merchants, residents).await?;
        let apps = register_apps(&state, &merchants, app_key.public()).await?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let mut bodies = Vec::new();
        for (p, payer) in payers.iter().enumerate() {
            for step in 0..2u64 {
                let i = 2 * p as u64 + step;
                let merchant = usize::try_from(i).unwrap_or(0) % apps.len();
                let code = PaymentCode::generate(payer.device, &payer.secret, now + 30 * step).to_string();
                let fen = 100 + i % 900;
                bodies.push(if p as u64 >= 2 * per_run { json_pay(&merchants[merchant].1, &format!("J{i}"), &code, fen) } else { signed_pay(apps[merchant], &app_key, &format!("G{i}"), &code, fen) });
            }
        }
        let run = usize::try_from(2 * per_run)?;
        let (first, rest) = bodies.split_at(run);
        let (second, third) = rest.split_at(run);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let api = Api::new(ApiConfig::new(env!("CARGO_PKG_VERSION")))?.routes(business_routes(state.clone())).pages(gateway_pages(state.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(citypay_api::serve_until(listener, api.into_router(), async move {
            let _ = stopped.await;
        }));
        let bare_us = bare_signature_us(&state, args.signatures)?;
        let (max, max_cpu) = load(scratch.path(), &url, first, args.clients, Pacing::Closed(None)).await?;
        let rate = max.latencies_us.len() as f64 / max.seconds / 2.0;
        let (half, _) = load(scratch.path(), &url, second, args.clients, Pacing::Closed(Some(rate))).await?;
        // Paced at the gateway's maximum rate: the writer batches as it did for the gateway.
        let (json, json_cpu) = load(scratch.path(), &url, third, args.clients, Pacing::Closed(Some(2.0 * rate))).await?;
        let _ = stop.send(());
        server.await??;
        city.shard.shutdown();
        anyhow::Ok((bare_us, max, half, max_cpu, json, json_cpu))
    })?;
    let mut source = crate::open::reader(&db)?;
    let audit_clean = citypay_store::audit(source.as_mut())?.is_clean();
    let paid = max.latencies_us.len() as u64;
    let cpu_us = max_cpu.as_secs_f64() * 1e6 / paid.max(1) as f64;
    let (m, h) = (histogram(&max.latencies_us), histogram(&half.latencies_us));
    let json_cpu_us = json_cpu.as_secs_f64() * 1e6 / (json.latencies_us.len() as u64).max(1) as f64;
    let report = GatewayBenchReport {
        payments: paid + half.latencies_us.len() as u64 + json.latencies_us.len() as u64,
        failed: max.failed + half.failed + json.failed,
        bare_signature_us: bare_us,
        max_payments_per_second: paid as f64 / max.seconds,
        server_cpu_us_per_payment: cpu_us,
        cpu_per_payment_vs_signature: cpu_us / bare_us,
        max_p50_us: m.value_at_quantile(0.5),
        max_p99_us: m.value_at_quantile(0.99),
        half_rate_payments_per_second: half.latencies_us.len() as f64 / half.seconds,
        half_rate_p50_us: h.value_at_quantile(0.5),
        half_rate_p99_us: h.value_at_quantile(0.99),
        json_payments_per_second: json.latencies_us.len() as f64 / json.seconds,
        json_server_cpu_us_per_payment: json_cpu_us,
        json_plus_signature_vs_signature: (json_cpu_us + bare_us) / bare_us,
        audit_clean,
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "alipay.trade.pay over HTTP: {:.0}/s at most, {:.0} µs of server CPU each, {:.2}× a bare RSA-2048 signature ({:.0} µs); at half that rate p50 {} µs, p99 {} µs; the JSON API's payment {:.0} µs of CPU ({:.2}× with a signature added); {} failed; audit {}",
            report.max_payments_per_second,
            report.server_cpu_us_per_payment,
            report.cpu_per_payment_vs_signature,
            report.bare_signature_us,
            report.half_rate_p50_us,
            report.half_rate_p99_us,
            report.json_server_cpu_us_per_payment,
            report.json_plus_signature_vs_signature,
            report.failed,
            if report.audit_clean { "clean" } else { "VIOLATIONS" }
        )?;
    }
    Ok(())
}

/// One gateway app per merchant, all with the same public key (the load generator signs).
async fn register_apps(state: &AppState, merchants: &[(u64, String)], key: &AppKey) -> anyhow::Result<Vec<u64>> {
    let platform_key = state.gateway.keys.newest().context("no gateway key")?.id();
    let mut apps = Vec::new();
    for (merchant, _) in merchants {
        apps.push(state.directory.register_gateway_app(*merchant, key, None, platform_key).await?.app_id);
    }
    Ok(apps)
}

/// CPU microseconds per RSA-2048 signature of an answer-sized text, on one thread.
#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn bare_signature_us(state: &AppState, signatures: u64) -> anyhow::Result<f64> {
    let key = state.gateway.keys.newest().context("no gateway key")?;
    let text = r#"{"code":"10000","msg":"Success","trade_no":"123456789012345","out_trade_no":"G123","total_amount":"1.23","receipt_amount":"1.23","buyer_pay_amount":"1.23","invoice_amount":"1.23","point_amount":"0.00","gmt_payment":"2026-12-02 12:00:00","fund_bill_list":[{"fund_channel":"ALIPAYACCOUNT","amount":"1.23"}]}"#;
    let signatures = signatures.max(1);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let started = thread_cpu_time();
                for _ in 0..signatures {
                    std::hint::black_box(key.sign(text.as_bytes()));
                }
                (thread_cpu_time() - started).as_secs_f64() * 1e6 / signatures as f64
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the signing loop panicked"))
    })
}
