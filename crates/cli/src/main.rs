//! `citypay`: the one binary. It is the only place that picks a storage backend.

/// `println!` that answers an error instead of panicking when stdout is gone (`| head`);
/// `main` ends quietly on a broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

/// The reader of the standard output went away (`| head`): the command ends quietly.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line to the standard output; a closed pipe is [`StdoutClosed`], and only that
/// (a lost connection to a server or a database also carries a broken pipe, and is an error).
fn stdout_line(line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        written => Ok(written?),
    }
}

mod admin;
mod audit_cmd;
mod bench;
mod bench_country;
mod bench_gateway;
mod bench_load;
mod bench_payments;
mod bench_servers;
mod bench_statement;
mod bench_takeover;
mod bench_settlement;
mod bench_transit;
mod city;
mod cluster_serve;
mod country_cmd;
mod etcd;
mod crash_child;
mod gateway_cmd;
mod inspect;
mod naive;
mod open;
mod patroni;
mod remote;
mod seal_head;
mod serve;
mod settle_cmd;
mod simulate;
mod transit_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The writer and the services allocate small rows and values by the million; mimalloc's
/// per-thread free lists cost less than glibc's arenas for that (measured with the simulation).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use citypay_store::DbUrl;

/// citypay: a city's payments on one double-entry ledger.
#[derive(Debug, Parser)]
#[command(name = "citypay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `citypay keys` does.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Makes a city's whole key set (vault, indexes, tokens, ride, receipt, journal, gateway,
    /// cluster CA) in a new file, mode 0600.
    New {
        /// The file to write; it must not exist.
        path: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Recomputes the books from the journal and checks them; exits 1 on any violation.
    Audit {
        /// Database: sqlite:PATH, a file path, or postgres://...
        #[arg(long, default_value = "citypay.db")]
        db: DbUrl,
        /// Key file holding the journal's seal key (default: beside the database); its seal
        /// head is the file beside it.
        #[arg(long)]
        keys: Option<std::path::PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The seal head of a city on several servers is in etcd: its endpoints.
        #[arg(long, env = "CITYPAY_ETCD")]
        etcd: Option<String>,
    },
    /// Serves the HTTP API (and delivers notifications, closes expired trades).
    Serve {
        /// Database: sqlite:PATH, a file path, or postgres://...
        #[arg(long, default_value = "citypay.db")]
        db: DbUrl,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Key file (default: beside the database, created on first use).
        #[arg(long)]
        keys: Option<std::path::PathBuf>,
        /// Proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the
        /// client; from any other peer the header is ignored. Also CITYPAY_TRUSTED_PROXIES.
        #[arg(long, env = "CITYPAY_TRUSTED_PROXIES", default_value = "")]
        trusted_proxies: String,
        /// Answer HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. The
        /// resident's app and the till work only over HTTPS (or behind a proxy that ends TLS).
        #[arg(long, env = "CITYPAY_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, env = "CITYPAY_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Serve as one of several servers of a city on PostgreSQL: take the other servers'
        /// commands here (TLS, the key set's cluster CA) while this server is the writer, and
        /// forward to the writer while another is. Needs the whole key set (`citypay keys new`).
        #[arg(long, env = "CITYPAY_CLUSTER_LISTEN")]
        cluster_listen: Option<std::net::SocketAddr>,
        /// The address the other servers reach --cluster-listen at (default: the same).
        #[arg(long, env = "CITYPAY_CLUSTER_ADVERTISE")]
        cluster_advertise: Option<String>,
        /// The writer lease's time to live, in milliseconds: a writer that stops renewing it is
        /// replaced this long after its last renewal.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..=2000))]
        lease_ttl_ms: u64,
        /// With --cluster-listen: etcd's endpoints (comma-separated), where the servers keep
        /// the journal's seal head (and Patroni its leader).
        #[arg(long, env = "CITYPAY_ETCD", requires = "cluster_listen")]
        etcd: Option<String>,
        /// The database is a Patroni cluster with this prefix in etcd (its namespace and scope,
        /// such as /service/citypay): its leader's address replaces --db's host and port.
        #[arg(long, env = "CITYPAY_PATRONI_SCOPE", requires = "etcd")]
        patroni_scope: Option<String>,
        /// With --cluster-listen: the country's catalog (PostgreSQL URL) this shard is part of
        /// (see `citypay country`); needs --shard.
        #[arg(long, env = "CITYPAY_CATALOG", requires_all = ["cluster_listen", "shard"])]
        catalog: Option<String>,
        /// This server's shard of the country (its database is --db).
        #[arg(long, env = "CITYPAY_SHARD", requires = "catalog")]
        shard: Option<u16>,
    },
    /// A country of shards: its catalog, its shards, where each city lives, moving a city
    /// (`citypay cluster move` is `citypay country move`).
    #[command(alias = "cluster")]
    Country {
        #[command(subcommand)]
        what: country_cmd::CountryCommand,
    },
    /// A city's key set: `keys new FILE` makes one, to copy to every server of the city.
    Keys {
        #[command(subcommand)]
        what: KeysCommand,
    },
    /// Transit: a ride code as a picture, an offline validator, the fare run of a day.
    Transit {
        #[command(subcommand)]
        what: transit_cmd::Transit,
    },
    /// The Alipay-compatible gateway: platform keys, merchants' apps.
    Gateway {
        #[command(subcommand)]
        what: gateway_cmd::Gateway,
    },
    /// Administration: operators and cities.
    Admin {
        #[command(subcommand)]
        what: admin::Admin,
    },
    /// Says what a number or payload is, or exactly why it is invalid (exit 0 valid, 1 invalid).
    Inspect {
        #[command(subcommand)]
        what: inspect::Inspect,
    },
    /// Pays each merchant's balance of a closed day to its bank account (idempotent: a re-run
    /// pays nothing twice and retries what the bank refused).
    Settle(settle_cmd::SettleArgs),
    /// Simulates cashless cities day by day on a fresh database and writes the dashboard.
    Simulate(simulate::SimulateArgs),
    /// A writer that takes transfers on stdin, for the crash test.
    #[command(hide = true)]
    CrashChild {
        /// Database.
        #[arg(long)]
        db: DbUrl,
    },
    /// The tour: the four preset cities simulated for one day, the books audited, and the
    /// dashboard written to a report directory.
    Demo {
        /// Where to write the report (removed first if it exists).
        #[arg(long, default_value = "citypay-demo")]
        report: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Durable transfers per second through the shard writer.
    Ledger(bench::LedgerBenchArgs),
    /// Payment-code payments per second over HTTP, against the server's no-op endpoint.
    Payments(bench_payments::PaymentsBenchArgs),
    /// Ride-code verifications per second on one core, and the morning rush: taps uploaded,
    /// fared and debited through the durable ledger.
    Transit(bench_transit::TransitBenchArgs),
    /// A day of a million payments across ten thousand merchants settled through the durable
    /// ledger and the bank; a resident's bills listed with a million bills in the store.
    Settlement(bench_settlement::SettlementBenchArgs),
    /// alipay.trade.pay through /gateway.do over HTTP (every answer RSA-2048 signed), against a
    /// bare RSA-2048 signing loop: the server's CPU per payment, the maximum rate, the latency
    /// at half of it.
    Gateway(bench_gateway::GatewayBenchArgs),
    /// A page of a resident's wallet statement with a big journal (10 million rows).
    Statement(bench_statement::StatementBenchArgs),
    /// Writer takeover on a city of several servers: two servers on the city's PostgreSQL
    /// database, the writer killed again and again under payments, each time from the kill to
    /// the first payment the new writer acknowledges.
    Takeover(bench_takeover::TakeoverBenchArgs),
    /// Money sent between residents on a country of two shards, at several shares across
    /// shards: transfers per second, CPU per transfer (this process and PostgreSQL), and what a
    /// transfer across shards costs against a local one.
    Country(bench_country::CountryBenchArgs),
    /// A load generator in a process of its own: sends a file of HTTP requests to a server,
    /// in a closed loop of tills or an open loop at a rate, and prints the latencies as JSON
    /// (`bench gateway` and `bench payments --rate` run it as a child).
    Load(bench_load::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { what: BenchCommand::Ledger(args) } => bench::run(&args).map(|_| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Payments(args) } => bench_payments::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Country(args) } => bench_country::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Transit(args) } => bench_transit::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Settlement(args) } => bench_settlement::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Gateway(args) } => bench_gateway::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Statement(args) } => bench_statement::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Takeover(args) } => bench_takeover::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench { what: BenchCommand::Load(args) } => bench_load::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Audit { db, keys, json, etcd } => audit_cmd::run(&db, keys.as_deref(), etcd.as_deref(), json),
        Command::Serve { db, addr, keys, trusted_proxies, tls_cert, tls_key, cluster_listen, cluster_advertise, lease_ttl_ms, etcd, patroni_scope, catalog, shard } => {
            let cluster = cluster_listen.map(|listen| cluster_serve::ClusterOptions {
                listen,
                advertise: cluster_advertise.unwrap_or_else(|| listen.to_string()),
                lease_ttl: std::time::Duration::from_millis(lease_ttl_ms),
                etcd,
                patroni_scope,
                country: catalog.zip(shard),
            });
            let tls = tls_cert.zip(tls_key).map(|(cert, key)| citypay_api::TlsFiles { cert, key });
            serve::run(&db, addr, keys, &trusted_proxies, tls, cluster).map(|()| ExitCode::SUCCESS)
        }
        Command::Keys { what: KeysCommand::New { path } } => city::new_key_set(&path)
            .and_then(|()| say!("wrote a new key set to {} (mode 0600): copy it to every server of the city, and back it up apart from the database", path.display()))
            .map(|()| ExitCode::SUCCESS),
        Command::Admin { what } => admin::run(&what).map(|()| ExitCode::SUCCESS),
        Command::Country { what } => country_cmd::run(&what),
        Command::Transit { what } => transit_cmd::run(&what),
        Command::Gateway { what } => gateway_cmd::run(&what),
        Command::Inspect { what } => inspect::run(&what),
        Command::CrashChild { db } => crash_child::run(&db).map(|()| ExitCode::SUCCESS),
        Command::Settle(args) => settle_cmd::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Simulate(args) => simulate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Demo { report } => simulate::demo(report).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader of the output went away (`| head`): nothing is wrong, nothing to say.
        Err(error) if error.chain().any(|e| e.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
