//! `citypay country`: the country's catalog (see `citypay_country::catalog`): its shards,
//! where each city lives, the bucket map.

use anyhow::Context;
use citypay_country::Catalog;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CountryCommand {
    /// Adds a shard (its database's URL) to the catalog, made on first use.
    AddShard {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// The shard's number.
        #[arg(long)]
        shard: u16,
        /// Its database (the URL its servers' --db names; on Patroni, the URL whose host and
        /// port are replaced by the leader's).
        #[arg(long)]
        db: String,
        /// The shard is a Patroni cluster: its etcd's endpoints (comma-separated).
        #[arg(long, requires = "patroni_scope")]
        etcd: Option<String>,
        /// The Patroni cluster's prefix in etcd (its namespace and scope: /service/citypay).
        #[arg(long, requires = "etcd")]
        patroni_scope: Option<String>,
    },
    /// Places a city on a shard: gives it a group of buckets under the next map version. Then
    /// onboard it (`POST /v1/cities`) on a server of that shard.
    PlaceCity {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// The city's GB/T 2260 code.
        #[arg(long)]
        city: u32,
        /// The shard it lives on.
        #[arg(long)]
        shard: u16,
    },
    /// Audits the country: each shard's books and custody; across shards, that every
    /// currency's balances sum to zero, that each pair's clearing accounts mirror each other
    /// (up to what is decided and not yet applied), and that no transfer between shards is left
    /// undecided. (Each shard's journal seals: `citypay audit` on it.) Exit status 1 when not
    /// clean.
    Audit {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Moves a city to another shard, under load: freezes its buckets (its callers' writes
    /// answer a retryable 503 meanwhile), drains what crosses shards, copies its rows, sends
    /// each balance across through the clearing protocol, checks the sums and flips the map.
    /// A move stopped anywhere is finished by running it again.
    Move {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// The country's key set (the servers' --keys): the move reaches each shard's writer
        /// over the cluster's mutual TLS.
        #[arg(long, env = "CITYPAY_KEYS")]
        keys: std::path::PathBuf,
        /// The city's GB/T 2260 code.
        #[arg(long)]
        city: u32,
        /// The shard it moves to.
        #[arg(long)]
        to: u16,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Finishes now what crosses shards and is left undecided past its time: each shard's
    /// resolver round, run from here as each writer runs it every second (running it beside
    /// them, or twice at once, is harmless: each transfer has one decision). Prints how many
    /// it finished on each shard.
    Resolve {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// The country's key set (the servers' --keys): each shard's writer is reached over
        /// the cluster's mutual TLS.
        #[arg(long, env = "CITYPAY_KEYS")]
        keys: std::path::PathBuf,
    },
    /// Prints the shards, the map's version and how many buckets each shard holds.
    Show {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
    },
}

fn open(url: &str) -> anyhow::Result<Catalog> {
    Catalog::open(url).context("opening the country's catalog")
}

pub(crate) fn run(what: &CountryCommand) -> anyhow::Result<std::process::ExitCode> {
    match what {
        CountryCommand::Audit { catalog, json } => return audit(catalog, *json),
        CountryCommand::Move { catalog, keys, city, to, json } => return move_city(catalog, keys, *city, *to, *json),
        CountryCommand::Resolve { catalog, keys } => return resolve(catalog, keys),
        CountryCommand::AddShard { catalog, shard, db, etcd, patroni_scope } => {
            let patroni = etcd.clone().zip(patroni_scope.clone()).map(|(etcd, scope)| citypay_country::Patroni { etcd, scope });
            open(catalog)?.add_shard(&citypay_country::ShardDatabase { shard: *shard, db: db.clone(), patroni })?;
            say!("shard {shard} is in the catalog")?;
        }
        CountryCommand::PlaceCity { catalog, city, shard } => {
            let group = open(catalog)?.place_city(*city, *shard)?;
            say!("city {city} lives on shard {shard}, in buckets {}..{}", group.start, group.end)?;
        }
        CountryCommand::Show { catalog } => {
            let mut catalog = open(catalog)?;
            let map = catalog.map()?;
            say!("map version {}", map.version)?;
            for place in catalog.shards()? {
                let shard = place.shard;
                let held = (0..citypay_routing::BUCKETS).filter(|b| map.shard_of(citypay_routing::Bucket(*b)) == shard).count();
                let db = citypay_store::DbUrl::parse(&place.db).map_or_else(|_| "(a URL that does not parse)".to_owned(), |url| url.redacted());
                let patroni = place.patroni.map(|p| format!(", the primary of Patroni cluster {} (etcd {})", p.scope, p.etcd)).unwrap_or_default();
                say!("shard {shard}: {held} buckets, {db}{patroni}")?;
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Every shard of the catalog, reached from this process: its directory, over its writer
/// (followed, over the cluster's mutual TLS) and its database, and its database's URL now (a
/// Patroni shard's primary as it is now: a failover meanwhile fails the command, which is run
/// again).
async fn reach(catalog: &str, keys: &std::path::Path) -> anyhow::Result<std::collections::BTreeMap<u16, citypay_country::moving::MovingShard>> {
    use std::sync::Arc;
    let (_, _, cluster_key) = crate::city::load_key_set(keys)?;
    let tls = citypay_cluster::ClusterTls::from_ca_key(&cluster_key).context("the key set's cluster key")?;
    let url = catalog.to_string();
    let shards = tokio::task::spawn_blocking(move || open(&url)?.shards().context("reading the catalog's shards")).await??;
    let clock: Arc<dyn citypay_shard::Clock + Sync> = Arc::new(citypay_shard::SystemClock);
    let mut reached = std::collections::BTreeMap::new();
    for place in shards {
        let (directory_keys, signing, _) = crate::city::load_key_set(keys)?;
        let db = crate::patroni::primary_now(&place).await?;
        let located = db.clone();
        let locate: citypay_store_postgres::Locate = Arc::new(move || Some(located.clone()));
        let handle = crate::cluster_serve::follow(locate.clone(), &tls);
        let reader: Arc<dyn citypay_store::ServiceReader> = Arc::new(citypay_store_postgres::PostgresReader::located(locate));
        let state = crate::city::services(handle, reader, directory_keys, signing, citypay_directory::PasswordPolicy::PRODUCTION, clock.clone(), None);
        reached.insert(place.shard, citypay_country::moving::MovingShard { directory: state.directory.clone(), db });
    }
    Ok(reached)
}

/// `citypay country resolve`: each shard's resolver round, until a round finishes nothing.
fn resolve(catalog: &str, keys: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let finished = runtime.block_on(async {
        let reached = reach(catalog, keys).await?;
        let url = catalog.to_string();
        let map = tokio::task::spawn_blocking(move || open(&url)?.map().context("reading the catalog's map")).await??;
        let mut finished = Vec::new();
        let every: Vec<_> = reached.iter().map(|(s, r)| (*s, r.directory.clone())).collect();
        for (shard, here) in &reached {
            let country = citypay_country::Country::new(*shard, catalog.to_owned(), map.clone(), here.directory.clone(), every.clone());
            let total = country.drain(1_000).await.with_context(|| format!("the resolver's round on shard {shard}"))?;
            finished.push((*shard, total));
        }
        anyhow::Ok(finished)
    })?;
    for (shard, total) in finished {
        say!("shard {shard}: {total} transfers finished")?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `citypay country move` (or `citypay cluster move`).
fn move_city(catalog: &str, keys: &std::path::Path, city: u32, to: u16, json: bool) -> anyhow::Result<std::process::ExitCode> {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let reached = reach(catalog, keys).await?;
        // A fault test stops the move after a step; running it again finishes it.
        let stop_after = std::env::var("CITYPAY_TEST_MOVE_STOP_AFTER").ok();
        let after = move |step: citypay_country::moving::MoveStep| {
            eprintln!("citypay: the move is past {step:?}");
            if stop_after.as_deref().is_some_and(|at| format!("{step:?}").eq_ignore_ascii_case(at)) {
                eprintln!("citypay: stopping after {step:?}, as CITYPAY_TEST_MOVE_STOP_AFTER asks");
                std::process::abort();
            }
        };
        citypay_country::moving::move_city(catalog, city, to, &reached, &after).await.context("moving the city (run the move again to finish it)")
    })?;
    if json {
        let steps: serde_json::Map<String, serde_json::Value> = report.steps.iter().map(|(name, ms)| ((*name).to_owned(), (*ms).into())).collect();
        say!(
            "{}",
            serde_json::json!({"city": city, "from": report.from, "to": report.to, "accounts": report.accounts, "amount_fen": report.amount,
                "rows": report.rows, "frozen_ms": report.frozen_ms, "steps_ms": steps})
        )?;
    } else if report.from == report.to {
        say!("city {city} is on shard {to}; {} of its rows left elsewhere were deleted", report.rows)?;
    } else {
        say!(
            "city {city} moved from shard {} to shard {to}: {} accounts holding {} fen, {} rows; frozen {} ms ({})",
            report.from,
            report.accounts,
            report.amount,
            report.rows,
            report.frozen_ms,
            report.steps.iter().map(|(name, ms)| format!("{name} {ms} ms")).collect::<Vec<_>>().join(", ")
        )?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A transfer between shards a payer's shard still holds undecided: older than this is one
/// the resolver should have finished (it asks after `RESOLVE_AFTER_MS`, every second).
const UNRESOLVED_AFTER_MS: u64 = citypay_crossshard::RESOLVE_AFTER_MS + 55_000;

/// What one shard holds of the country's money.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ShardBooks {
    shard: u16,
    pub(crate) accounts: usize,
    pub(crate) journal_rows: usize,
    currency_sums: std::collections::BTreeMap<String, i128>,
    custody: crate::audit_cmd::Custody,
    /// Net of its clearing account for each other shard.
    clearing: std::collections::BTreeMap<u16, i128>,
    /// Transfers it sent still undecided here: (id, payee's shard, amount, reserved at ms).
    #[serde(skip)]
    prepared: Vec<(String, u16, i64, u64)>,
    in_flight: usize,
    violations: Vec<String>,
}

fn int(value: Option<&citypay_store::Value>) -> i64 {
    match value {
        Some(citypay_store::Value::Int(n)) => *n,
        _ => 0,
    }
}

fn shard_books(shard: u16, db: &str) -> anyhow::Result<(ShardBooks, Box<dyn citypay_store::ServiceReader>)> {
    let url = citypay_store::DbUrl::parse(db).with_context(|| format!("shard {shard}'s database URL"))?;
    let mut source = crate::open::reader(&url)?;
    let report = citypay_store::audit(source.as_mut())?;
    let accounts = source.accounts()?;
    let custody = crate::audit_cmd::custody(&accounts);
    let mut violations: Vec<String> = report.violations.iter().map(|v| format!("shard {shard}: {v}")).collect();
    if custody.difference != 0 {
        violations.push(format!("shard {shard}: custody differs from what is held against it by {} fen", custody.difference));
    }
    let clearing = accounts
        .iter()
        .filter(|a| a.code == citypay_directory::AccountKind::Clearing.code())
        .map(|a| (u16::try_from(a.id & 0xFFFF).unwrap_or(u16::MAX), i128::from(a.balance.net_posted())))
        .collect();
    let reader: Box<dyn citypay_store::ServiceReader> = match &url {
        citypay_store::DbUrl::Postgres(url) => Box::new(citypay_store_postgres::PostgresReader::connect(url)?),
        citypay_store::DbUrl::Sqlite(path) => Box::new(citypay_store_sqlite::SqliteReader::open(path)?),
    };
    let rows = reader.query("SELECT id, payee_shard, amount, reserved_at FROM crossings_out WHERE status = 'prepared'", &[])?;
    let prepared = rows
        .iter()
        .map(|row| {
            let id = match row.first() {
                Some(citypay_store::Value::Text(id)) => id.clone(),
                _ => String::new(),
            };
            (id, u16::try_from(int(row.get(1))).unwrap_or(u16::MAX), int(row.get(2)), u64::try_from(int(row.get(3))).unwrap_or(0))
        })
        .collect();
    let books = ShardBooks {
        shard,
        accounts: report.accounts,
        journal_rows: report.journal_rows,
        currency_sums: report.currency_sums,
        custody,
        clearing,
        prepared,
        in_flight: 0,
        violations,
    };
    Ok((books, reader))
}

/// One reading of the whole country: each shard's books, and what is wrong across them.
pub(crate) fn read_country(shards: &[(u16, String)]) -> anyhow::Result<(Vec<ShardBooks>, Vec<String>)> {
    let mut books = Vec::new();
    let mut readers = std::collections::BTreeMap::new();
    for (shard, db) in shards {
        let (read, reader) = shard_books(*shard, db)?;
        books.push(read);
        readers.insert(*shard, reader);
    }
    let mut problems: Vec<String> = books.iter().flat_map(|b| b.violations.clone()).collect();
    let mut sums: std::collections::BTreeMap<String, i128> = std::collections::BTreeMap::new();
    for b in &books {
        for (currency, sum) in &b.currency_sums {
            *sums.entry(currency.clone()).or_default() += sum;
        }
    }
    for (currency, sum) in &sums {
        if *sum != 0 {
            problems.push(format!("{currency}: balances across the shards sum to {sum}, not zero"));
        }
    }
    let now_ms = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis()).unwrap_or(u64::MAX);
    // What each payer's shard holds prepared that its payee's shard decided posted: credited
    // there, not yet applied here (the mirror's allowance).
    let mut decided_posted: std::collections::BTreeMap<(u16, u16), i128> = std::collections::BTreeMap::new();
    for b in &mut books {
        b.in_flight = b.prepared.len();
        for (id, payee, amount, reserved_at) in &b.prepared {
            let Some(reader) = readers.get(payee) else {
                problems.push(format!("shard {}: transfer {id} names shard {payee}, which is not in the catalog", b.shard));
                continue;
            };
            let decision = reader.query("SELECT decision FROM crossings_in WHERE id = ?1", &[citypay_store::Value::Text(id.clone())])?;
            if matches!(decision.first().and_then(|r| r.first()), Some(citypay_store::Value::Text(d)) if d == "posted") {
                *decided_posted.entry((b.shard, *payee)).or_default() += i128::from(*amount);
            }
            if now_ms.saturating_sub(*reserved_at) > UNRESOLVED_AFTER_MS {
                problems.push(format!("shard {}: transfer {id} to shard {payee} is undecided after {} s", b.shard, now_ms.saturating_sub(*reserved_at) / 1000));
            }
        }
    }
    for (i, a) in books.iter().enumerate() {
        for b in &books[i + 1..] {
            let here = a.clearing.get(&b.shard).copied().unwrap_or(0);
            let there = b.clearing.get(&a.shard).copied().unwrap_or(0);
            let allowance = decided_posted.get(&(a.shard, b.shard)).copied().unwrap_or(0) + decided_posted.get(&(b.shard, a.shard)).copied().unwrap_or(0);
            if here + there + allowance != 0 {
                problems.push(format!(
                    "shards {} and {}: the clearing accounts do not mirror ({here} and {there}, {allowance} decided and not yet applied)",
                    a.shard, b.shard
                ));
            }
        }
    }
    Ok((books, problems))
}

fn audit(catalog: &str, json: bool) -> anyhow::Result<std::process::ExitCode> {
    let shards = crate::patroni::primaries_now(&open(catalog)?.shards()?)?;
    anyhow::ensure!(!shards.is_empty(), "the catalog has no shard");
    // The shards are read one after the other while money may be moving: a difference is
    // reported only if it is still there on a second and a third reading.
    let mut reading = read_country(&shards)?;
    for _ in 0..2 {
        if reading.1.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        reading = read_country(&shards)?;
    }
    let (books, problems) = reading;
    if json {
        say!("{}", serde_json::to_string_pretty(&serde_json::json!({"clean": problems.is_empty(), "shards": books, "violations": problems}))?)?;
    } else {
        for b in &books {
            let sums: Vec<String> = b.currency_sums.iter().map(|(c, s)| format!("{c} {s}")).collect();
            let clearing: Vec<String> = b.clearing.iter().map(|(peer, net)| format!("for shard {peer} {net}")).collect();
            say!(
                "shard {}: {} accounts, {} journal rows, balances sum to {}; clearing {}; {} transfers in flight",
                b.shard, b.accounts, b.journal_rows, sums.join(", "), if clearing.is_empty() { "none".into() } else { clearing.join(", ") }, b.in_flight
            )?;
        }
        if problems.is_empty() {
            say!("the country's books are clean: every shard balances, the clearing accounts mirror each other, nothing is left undecided")?;
        } else {
            say!("{} violations:", problems.len())?;
            for p in &problems {
                say!("  {p}")?;
            }
        }
    }
    Ok(if problems.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}
