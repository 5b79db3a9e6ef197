//! `citypay serve`: the HTTP API over a city, with the background jobs it needs (notifications
//! and the closing of expired trades).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use citypay_api::routes::{TrustedProxies, business_routes, dashboard_pages, gateway_pages, people_pages};
use citypay_api::{Api, ApiConfig};
use citypay_checkout::notify::{Answered, DEFAULT_SCHEDULE_S, Deliver, Dispatcher};
use citypay_directory::PasswordPolicy;
use citypay_store::DbUrl;
use std::sync::Arc;

use crate::cluster_serve::{ClusterOptions, Membership, WriterParts};

/// Posts notifications over HTTP or HTTPS. HTTPS certificates are checked against the
/// system's trusted roots, and the PEM certificates in the file `CITYPAY_WEBHOOK_CA` when set
/// (a merchant's private CA, or a test's). Unless private addresses are allowed, a URL's host
/// must be a public address, and a name is connected to only at the public addresses it
/// resolves to (so a name that resolves to 127.0.0.1 or 10.x is refused when it is used, not
/// only when it is registered).
#[derive(Clone, Debug)]
pub(crate) struct HttpDeliver {
    client: Client<HttpsConnector<HttpConnector<PublicResolver>>, Full<Bytes>>,
    allow_private: bool,
}

type Bytes = hyper::body::Bytes;

/// Resolves names with the system's resolver, keeping only public addresses unless private
/// ones are allowed.
#[derive(Clone, Debug)]
struct PublicResolver {
    allow_private: bool,
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found.into_iter().filter(|a| allow_private || citypay_checkout::notify::public_address(a.ip())).collect();
            if kept.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("{name} has no public address; notifications go to public addresses")));
            }
            Ok(kept.into_iter())
        })
    }
}

/// An error and its causes, `outer: inner: ...` (hyper's "client error (Connect)" alone does
/// not say that the address was refused, or why).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl HttpDeliver {
    pub(crate) fn new(allow_private: bool) -> anyhow::Result<HttpDeliver> {
        let mut roots = rustls::RootCertStore::empty();
        // Machines without a CA bundle still reach plain HTTP and the CAs given below.
        let (added, _ignored) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        tracing::debug!(added, "trusted roots for notifications");
        if let Ok(path) = std::env::var("CITYPAY_WEBHOOK_CA") {
            use rustls::pki_types::pem::PemObject;
            let certificates = rustls::pki_types::CertificateDer::pem_file_iter(&path).with_context(|| format!("reading CITYPAY_WEBHOOK_CA {path}"))?;
            for certificate in certificates {
                roots.add(certificate.with_context(|| format!("{path}: a PEM certificate"))?).with_context(|| format!("{path}: a CA certificate"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(PublicResolver { allow_private });
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
        Ok(HttpDeliver { client: Client::builder(TokioExecutor::new()).build(connector), allow_private })
    }
}

impl Deliver for HttpDeliver {
    fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: String) -> impl Future<Output = Result<Answered, String>> + Send {
        let url = citypay_checkout::notify::without_user_part(url);
        let mut request = hyper::Request::post(url.as_ref());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string());
        // An address written in the URL is connected to without resolving: check it here.
        let literal = url.parse::<hyper::Uri>().ok().and_then(|u| u.host().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok()));
        let refused = !self.allow_private && literal.is_some_and(|ip| !citypay_checkout::notify::public_address(ip));
        let client = self.client.clone();
        async move {
            if refused {
                return Err("the URL names a private address; notifications go to public addresses".to_owned());
            }
            let sent = tokio::time::timeout(Duration::from_secs(10), client.request(request?)).await;
            let response = sent.map_err(|_| "timed out after 10 s".to_owned())?.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            // Only the start of the body matters (Alipay's `success`); never read a huge one.
            let limited = http_body_util::Limited::new(response.into_body(), 4096);
            let body = match tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::collect(limited)).await {
                Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).chars().take(64).collect(),
                _ => String::new(),
            };
            Ok(Answered { status, body })
        }
    }
}

pub(crate) fn run(
    db: &DbUrl,
    addr: SocketAddr,
    keys: Option<PathBuf>,
    trusted_proxies: &str,
    tls: Option<citypay_api::TlsFiles>,
    cluster: Option<ClusterOptions>,
) -> anyhow::Result<()> {
    let trusted_proxies = TrustedProxies::parse(trusted_proxies).map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?;
    // Read before anything is opened, so a wrong path fails at once.
    let tls = tls.map(|files| files.server_config()).transpose().context("--tls-cert/--tls-key")?;
    init_logs();
    let keys_path = keys.clone().unwrap_or_else(|| crate::city::default_keys_path(db));

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (state, peer_states, shard, membership) = match cluster {
            None => {
                // Keys are minted only for a new city: never beside data sealed under others.
                let from_env = std::env::var_os("CITYPAY_INDEX_KEYS").is_some();
                if !from_env && !keys_path.exists() && crate::city::holds_data(db) {
                    anyhow::bail!("{} holds a city's data but its key set {} is missing: restore the key file (new keys would not open it)", db.redacted(), keys_path.display());
                }
                let city = crate::city::open_from_files(db, keys.as_deref(), PasswordPolicy::PRODUCTION).await?;
                crate::city::check_key_set(&city.state.directory, true, crate::city::journal_key(&keys_path)?).await?;
                (city.state, Vec::new(), Some(city.shard), None)
            }
            Some(options) => {
                let (state, peer_states, membership) = join_cluster(db, &keys_path, &options).await?;
                (state, peer_states, None, Some(membership))
            }
        };
        let dispatcher = Dispatcher::new(state.directory.clone(), HttpDeliver::new(state.gateway.allow_private_notify)?, DEFAULT_SCHEDULE_S.to_vec())
            .with_gateway_keys(state.gateway.keys.clone());
        let checkout = state.checkout.clone();
        let wallet = state.wallet.clone();
        let country = state.country.get().cloned();
        let jobs_here = membership.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                // On a city on several servers only the writer runs the jobs. A deposed one
                // notices here within a second; until then its commands are guarded (each
                // notification is claimed through the writer before it is posted).
                if jobs_here.as_ref().is_some_and(|m| !m.is_writer()) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                tick += 1;
                if let Some(country) = &country {
                    resolve(country, tick).await;
                    // Refunds to other shards whose end a request did not hear.
                    match checkout.finish_refunds_elsewhere(100).await {
                        Ok(0) => {}
                        Ok(finished) => tracing::info!(finished, "finished refunds to other shards"),
                        Err(error) => tracing::warn!(%error, "finishing refunds to other shards failed"),
                    }
                }
                if tick % 60 == 0
                    && let Err(error) = wallet.finish_interrupted(200).await
                {
                    tracing::warn!(%error, "finishing interrupted top-ups and withdrawals failed");
                }
                match dispatcher.run_once(200).await {
                    Ok(report) => count_notifications(&report),
                    Err(error) => tracing::warn!(%error, "notification dispatch failed"),
                }
                if let Err(error) = checkout.close_expired(500).await {
                    tracing::warn!(%error, "closing expired trades failed");
                }
                if let Err(error) = checkout.finish_ended(500).await {
                    tracing::warn!(%error, "finishing trades past their refund period failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        reload_ride_keys_on_hangup(state.transit.clone(), keys_path);
        follow_ride_key_schedule(state.transit.clone());
        let mut config = ApiConfig::new(env!("CARGO_PKG_VERSION"));
        config.role = membership.as_ref().map(|m| m.role.clone());
        config.https = tls.is_some();
        let router = |state: citypay_api::routes::AppState| -> anyhow::Result<axum::Router> {
            let api = Api::new(config.clone())?.routes(business_routes(state.clone())).pages(dashboard_pages(state.clone())).pages(gateway_pages(state)).pages(people_pages());
            Ok(api.into_router())
        };
        let router = match state.country.get().cloned() {
            None => router(state)?,
            // A shard of a country: each caller's requests go to their shard's services.
            Some(country) => {
                let mut routes = vec![citypay_api::shards::ShardRoute { shard: country.shard(), state: state.clone(), router: router(state)? }];
                for (shard, peer_state) in peer_states {
                    routes.push(citypay_api::shards::ShardRoute { shard, state: peer_state.clone(), router: router(peer_state)? });
                }
                citypay_api::shards::by_caller(routes, Arc::new(move || country.map()))
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("citypay serving {} on {scheme}://{addr} (OpenAPI at /openapi.json, the dashboard at /dashboard, the resident's app at /app/, the till at /till/)", db.redacted());
        citypay_api::serve(addr, router.layer(trusted_proxies.extension()), tls).await?;
        if let Some(shard) = shard {
            shard.shutdown();
        }
        anyhow::Ok(())
    })
}

/// The services of one of a city's several servers: the whole key set from the key file (never
/// minted), the database's reader, and the cluster's transport and lease watch.
/// This server's shard's services, every other shard's (a shard of a country), and its part in
/// the cluster.
type Joined = (citypay_api::routes::AppState, Vec<(u16, citypay_api::routes::AppState)>, Membership);

async fn join_cluster(db: &DbUrl, keys_path: &std::path::Path, options: &ClusterOptions) -> anyhow::Result<Joined> {
    let DbUrl::Postgres(url) = db else { anyhow::bail!("a city on several servers keeps its data in PostgreSQL (--db postgres://...)") };
    let (directory_keys, signing_keys, cluster_key) = crate::city::load_key_set(keys_path)?;
    let tls = citypay_cluster::ClusterTls::from_ca_key(&cluster_key).context("the key set's cluster key")?;
    let etcd = options.etcd.as_deref().map(crate::etcd::Etcd::new).transpose()?;
    let locate: citypay_store_postgres::Locate = match (&etcd, &options.patroni_scope) {
        (Some(etcd), Some(scope)) => {
            let primary = crate::patroni::Primary::follow(etcd.clone(), scope, url).await?;
            Arc::new(move || primary.url())
        }
        _ => {
            let url = url.clone();
            Arc::new(move || Some(url.clone()))
        }
    };
    let reader: Arc<dyn citypay_store::ServiceReader> = Arc::new(citypay_store_postgres::PostgresReader::located(locate.clone()));
    let journal = signing_keys.journal;
    let head = match etcd {
        Some(etcd) => Some(crate::seal_head::HeadStore::etcd(etcd, url)),
        None => signing_keys.head.clone(),
    };
    // A shard of a country: the catalog's shards and map, read before anything starts.
    let country = match &options.country {
        Some((catalog, shard)) => {
            let url = catalog.clone();
            let (shards, map) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut catalog = citypay_country::Catalog::open(&url)?;
                Ok((catalog.shards()?, catalog.map()?))
            })
            .await??;
            anyhow::ensure!(shards.iter().any(|s| s.shard == *shard), "shard {shard} is not in the catalog (`citypay country add-shard`)");
            Some((catalog.clone(), *shard, shards, Arc::new(std::sync::RwLock::new(map))))
        }
        None => None,
    };
    let buckets = country.as_ref().map(|(_, shard, _, map)| {
        let (map, shard) = (map.clone(), *shard);
        Arc::new(move || map.read().unwrap_or_else(std::sync::PoisonError::into_inner).owned_by(shard)) as Arc<dyn Fn() -> citypay_routing::OwnedBuckets + Send + Sync>
    });
    let parts = WriterParts { locate, reader: reader.clone(), journal, head, buckets };
    // The services, once made: the transport runs first, and a first takeover may come first.
    let made: Arc<std::sync::OnceLock<citypay_api::routes::AppState>> = Arc::default();
    let found = made.clone();
    let on_writer = move || {
        let found = found.clone();
        tokio::spawn(async move {
            let state = loop {
                if let Some(state) = found.get() {
                    break state.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            // Idempotent: the first writer of the city opened them; each new one checks.
            if let Err(error) = state.directory.open_platform_accounts().await {
                tracing::warn!(%error, "opening the platform's accounts failed");
            }
            if let Err(error) = crate::city::check_key_set(&state.directory, true, journal).await {
                tracing::error!(error = %format!("{error:#}"), "the key set does not match the city's data");
            }
            // A shard's clearing accounts, before the first transfer between shards needs them.
            if let Some(country) = state.country.get()
                && let Err(error) = country.open_clearing_accounts().await
            {
                tracing::warn!(%error, "opening the clearing accounts failed; the resolver's round tries again");
            }
        });
    };
    let (handle, membership) = crate::cluster_serve::join(options, &tls, parts, on_writer).await?;
    let clock: Arc<dyn citypay_shard::Clock + Sync> = Arc::new(citypay_shard::SystemClock);
    let state = crate::city::services(handle, reader, directory_keys, signing_keys, PasswordPolicy::PRODUCTION, clock.clone(), None);
    let mut peer_states = Vec::new();
    if let Some((catalog, shard, shards, map)) = country {
        // Every other shard's services in this server, over that shard's writer (followed) and
        // database: a caller of any shard is answered here (`citypay_api::shards`). Every shard
        // of a country shares the key set: its seals, indexes and cluster CA.
        for peer in shards.iter().filter(|peer| peer.shard != shard) {
            let (keys, signing, _) = crate::city::load_key_set(keys_path)?;
            let locate = crate::patroni::locate(peer)?;
            let handle = crate::cluster_serve::follow(locate.clone(), &tls);
            let reader: Arc<dyn citypay_store::ServiceReader> = Arc::new(citypay_store_postgres::PostgresReader::located(locate));
            peer_states.push((peer.shard, crate::city::services(handle, reader, keys, signing, PasswordPolicy::PRODUCTION, clock.clone(), None)));
        }
        let now = map.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let directories: Vec<(u16, citypay_directory::Directory)> =
            std::iter::once((shard, state.directory.clone())).chain(peer_states.iter().map(|(peer, s)| (*peer, s.directory.clone()))).collect();
        let view = |of: u16, here: &citypay_directory::Directory| {
            citypay_country::Country::new(of, catalog.clone(), now.clone(), here.clone(), directories.clone())
        };
        let country = view(shard, &state.directory);
        // A fault test stops this server after a step of a transfer between shards.
        if let Ok(at) = std::env::var("CITYPAY_TEST_CRASH_AFTER") {
            country.after_step(move |step| {
                if format!("{step:?}").eq_ignore_ascii_case(&at) {
                    eprintln!("citypay: stopping after {step:?}, as CITYPAY_TEST_CRASH_AFTER asks");
                    std::process::abort();
                }
            });
        }
        let mut views = vec![country.clone()];
        state.checkout.refund_elsewhere_through(Arc::new(country.clone()));
        for (peer, peer_state) in &peer_states {
            let peer_view = view(*peer, &peer_state.directory);
            let _ = peer_state.country.set(peer_view.clone());
            peer_state.checkout.refund_elsewhere_through(Arc::new(peer_view.clone()));
            views.push(peer_view);
        }
        let _ = state.country.set(country.clone());
        follow_the_map(views, map, membership.clone());
        eprintln!("citypay: shard {shard} of a country");
    }
    // Made whole (with its country, if any): the writer's first tasks may run.
    let _ = made.set(state.clone());
    crate::city::check_key_set(&state.directory, false, journal).await?;
    eprintln!("citypay: one of the city's servers; taking the other servers' commands on {} while the writer", options.listen);
    Ok((state, peer_states, membership))
}

/// Reads the catalog's map version every [`citypay_country::moving::MAP_POLL`] (one row, on
/// one connection kept open; the whole map only when it changed): a newer map routes this
/// server's requests from then on, and a writer here holds the buckets it gives the shard. A
/// city being moved waits on this: its pause is the move plus one poll.
fn follow_the_map(views: Vec<citypay_country::Country>, held: Arc<std::sync::RwLock<citypay_routing::BucketMap>>, membership: Membership) {
    let Some(country) = views.first().cloned() else { return };
    let (maps, mut changed) = tokio::sync::watch::channel(country.map());
    let url = country.catalog_url().to_owned();
    let mut known = country.map().version;
    std::thread::spawn(move || {
        let (mut catalog, mut said) = (None, false);
        loop {
            std::thread::sleep(citypay_country::moving::MAP_POLL);
            if catalog.is_none() {
                // Said once per outage, not at every poll.
                catalog = match citypay_country::Catalog::open(&url) {
                    Ok(open) => Some(open),
                    Err(error) if !said => {
                        tracing::warn!(%error, "the country's catalog is out of reach; routing by the last map");
                        said = true;
                        None
                    }
                    Err(_) => None,
                };
                said &= catalog.is_none();
            }
            let Some(open) = catalog.as_mut() else { continue };
            let read = open.version().and_then(|version| if version > known { open.map().map(Some) } else { Ok(None) });
            match read {
                Ok(Some(map)) => {
                    known = map.version;
                    if maps.send(Arc::new(map)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "reading the country's map failed; routing by the last one");
                    catalog = None;
                }
            }
        }
    });
    tokio::spawn(async move {
        while changed.changed().await.is_ok() {
            let map = changed.borrow_and_update().clone();
            if !country.set_map(map.clone()) {
                continue;
            }
            tracing::info!(version = map.version, "the country's map changed");
            for view in &views[1..] {
                view.set_map(map.clone());
            }
            *held.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (*map).clone();
            if let Some(writer) = membership.writer() {
                writer.hold_buckets(Some(map.owned_by(country.shard())));
            }
        }
    });
}

/// Logs to stderr: structured (JSON, one object per line, with each event's target) for log
/// collectors, readable text on a terminal. `RUST_LOG` picks the levels (`info` when unset),
/// as `citypay_wallet=trace,info`; see [`log_filter`].
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, refused) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(std::io::stderr);
    if terminal {
        logs.finish().with(filter).init();
    } else {
        logs.json().flatten_event(true).with_current_span(true).finish().with(filter).init();
    }
    if let Some(error) = refused {
        tracing::warn!(%error, "RUST_LOG is not a list of target=level directives; logging at info");
    }
}

/// The log levels from `RUST_LOG` (`info` when unset or unreadable, with the parse error).
/// Whatever the levels, the framework's rejection events are never logged (their text quotes
/// what was sent: a path segment or query value that did not parse, such as an ID number),
/// nor its accepted connections (each names the client's address).
fn log_filter(rust_log: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let (targets, refused) = match rust_log.map(str::trim).filter(|s| !s.is_empty()).map(str::parse::<Targets>) {
        None => (Targets::new().with_default(LevelFilter::INFO), None),
        Some(Ok(targets)) => (targets, None),
        Some(Err(error)) => (Targets::new().with_default(LevelFilter::INFO), Some(error.to_string())),
    };
    (targets.with_target("axum::rejection", LevelFilter::OFF).with_target("axum::serve", LevelFilter::DEBUG), refused)
}

/// Logs each failed notification (never its URL, which can carry a token) and counts every
/// outcome in `citypay_notifications_total{outcome}`: delivered, retried, given_up, skipped.
/// A shard's writer's part of the country, each second: its clearing accounts for every other
/// shard opened (at the first tick and each minute: a replay), and the resolver's round.
async fn resolve(country: &citypay_country::Country, tick: u64) {
    if tick % 60 == 0
        && let Err(error) = country.open_clearing_accounts().await
    {
        tracing::warn!(%error, "opening the clearing accounts failed");
    }
    match country.resolve_once(500).await {
        Ok(0) => {}
        Ok(finished) => tracing::info!(finished, "the resolver finished transfers between shards"),
        Err(error) => tracing::warn!(%error, "the resolver's round failed"),
    }
}

fn count_notifications(report: &citypay_checkout::notify::DispatchReport) {
    for failure in &report.failures {
        match failure.retry_in_s {
            Some(retry_in_s) => tracing::warn!(
                merchant = failure.merchant, event_id = %failure.event_id, attempt = failure.attempt, reason = %failure.reason, retry_in_s,
                "notification delivery failed; retrying"
            ),
            None => tracing::warn!(
                merchant = failure.merchant, event_id = %failure.event_id, attempt = failure.attempt, reason = %failure.reason,
                "notification delivery failed; given up"
            ),
        }
    }
    for (outcome, count) in [("delivered", report.delivered), ("retried", report.retried), ("given_up", report.given_up), ("skipped", report.skipped)] {
        if count > 0 {
            metrics::counter!("citypay_notifications_total", "outcome" => outcome).increment(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }
}

/// On SIGHUP, reads the ride keys again from the key file (after `citypay transit rotate-key`
/// or `revoke-key`): the new key signs from the next credential, and validators get the new
/// set and revocations at their next download. A file that cannot be read, or that leaves no
/// key able to sign, leaves the old keys (and is logged).
fn reload_ride_keys_on_hangup(transit: citypay_transit::Transit, path: PathBuf) {
    tokio::spawn(async move {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("no SIGHUP handler: ride keys reload only on restart");
            return;
        };
        while hangups.recv().await.is_some() {
            let now = u32::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())).unwrap_or(u32::MAX);
            match crate::city::reload_ride_keys(&path, now) {
                Ok((keys, revoked)) => {
                    let key_ids: Vec<u16> = keys.iter().map(citypay_ride::PlatformKey::key_id).collect();
                    tracing::info!(?key_ids, ?revoked, "ride keys reloaded");
                    transit.set_keys(keys, revoked);
                }
                Err(error) => tracing::warn!(%error, "reloading the ride keys failed; the previous keys stay"),
            }
        }
    });
}

/// Every 2 s, takes the city's ride-key schedule (a rotation or revocation made through any
/// server) from the database.
fn follow_ride_key_schedule(transit: citypay_transit::Transit) {
    tokio::spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match transit.refresh_keys().await {
                Ok(true) => {
                    let keys = transit.key_schedule();
                    let key_ids: Vec<u16> = keys.iter().map(|k| k.key_id).collect();
                    let revoked: Vec<u16> = keys.iter().filter(|k| k.revoked).map(|k| k.key_id).collect();
                    tracing::info!(?key_ids, ?revoked, "ride keys taken from the city's schedule");
                    last_error.clear();
                }
                Ok(false) => last_error.clear(),
                // Said once, not every 2 s, until it changes.
                Err(error) if error.to_string() != last_error => {
                    last_error = error.to_string();
                    tracing::warn!(%error, "the city's ride-key schedule was not taken; the previous keys stay");
                }
                Err(_) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn rust_log_picks_the_levels_but_never_the_frameworks_rejections() {
        let (unset, refused) = log_filter(None);
        assert!(refused.is_none());
        assert!(unset.would_enable("citypay_api::trace", &Level::INFO));
        assert!(!unset.would_enable("citypay_wallet", &Level::DEBUG));
        let (everything, _) = log_filter(Some("trace"));
        assert!(everything.would_enable("citypay_wallet", &Level::TRACE));
        assert!(!everything.would_enable("axum::rejection", &Level::ERROR));
        assert!(!everything.would_enable("axum::serve", &Level::TRACE) && everything.would_enable("axum::serve", &Level::ERROR));
        let (some, _) = log_filter(Some("citypay_wallet=trace,warn"));
        assert!(some.would_enable("citypay_wallet", &Level::TRACE));
        assert!(!some.would_enable("citypay_checkout", &Level::INFO));
        let (asked, _) = log_filter(Some("axum::rejection=trace"));
        assert!(!asked.would_enable("axum::rejection", &Level::TRACE));
        let (fallback, refused) = log_filter(Some("citypay_wallet=loud"));
        assert!(refused.is_some());
        assert!(fallback.would_enable("citypay_wallet", &Level::INFO));
    }
}
