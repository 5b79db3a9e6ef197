//! `citypay serve --cluster-listen ADDR`: one of several servers of a city on PostgreSQL.
//! Every server takes requests; the one that holds the database's writer lease runs the
//! writer and the background jobs, and the others forward their commands to it (see
//! `citypay-cluster`). Each server watches the lease; when it runs out, or its holder's
//! session is gone, one of them takes over: it ends the old writer's session, takes the next
//! epoch, loads the ledger and carries on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use citypay_api::WriterRole;
use citypay_cluster::{ClusterTls, CommandListener, Forwarder, LocalWriter, Route};
use citypay_shard::{Shard, ShardConfig, SystemClock};
use citypay_store::{ServiceReader, StoreError};
use citypay_store_postgres::{LeaseTerms, PostgresStore};
use tokio::sync::watch;

/// How often a server looks at the lease.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// How a server joins its city's cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterOptions {
    /// Where this server takes the other servers' commands while it is the writer.
    pub(crate) listen: std::net::SocketAddr,
    /// The address the others reach it at (default: `listen`).
    pub(crate) advertise: String,
    /// The writer lease's time to live.
    pub(crate) lease_ttl: Duration,
}

/// What the background jobs and the API see of this server's part.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) role: WriterRole,
    local: watch::Receiver<LocalWriter>,
}

impl Membership {
    /// Whether this server is the writer now (it runs the jobs then).
    pub(crate) fn is_writer(&self) -> bool {
        self.local.borrow().is_some()
    }
}

/// Everything a writer needs that the lease does not give: the database, the migrations,
/// the journal's seal key and head.
pub(crate) struct WriterParts {
    pub(crate) url: String,
    pub(crate) reader: Arc<dyn ServiceReader>,
    pub(crate) journal: Option<[u8; 32]>,
    pub(crate) head: Option<std::path::PathBuf>,
}

/// Starts the transport and the watch of the lease; answers the handle the services submit
/// to and this server's membership. `on_writer` runs each time this server becomes the
/// writer (opening the platform's accounts, which is idempotent).
pub(crate) async fn join(
    options: &ClusterOptions,
    tls: &ClusterTls,
    parts: WriterParts,
    on_writer: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<(citypay_shard::ShardHandle, Membership)> {
    let (handle, relay) = citypay_shard::relay(ShardConfig::DEFAULT.queue_max, ShardConfig::DEFAULT.reply_timeout);
    let (routes, route) = watch::channel(Route::Nowhere);
    let (local, local_rx) = watch::channel::<LocalWriter>(None);
    citypay_cluster::router(relay, route, Arc::new(Forwarder::new(tls)));
    let listener = tokio::net::TcpListener::bind(options.listen).await.with_context(|| format!("listening for the cluster on {}", options.listen))?;
    CommandListener::spawn(listener, tls, local_rx.clone());
    let role = WriterRole::default();
    role.set("no_writer", None);
    let membership = Membership { role: role.clone(), local: local_rx };
    let terms = LeaseTerms { ttl: options.lease_ttl, address: options.advertise.clone() };
    tokio::spawn(watch_lease(parts, terms, routes, local, role, Arc::new(on_writer)));
    Ok((handle, membership))
}

/// The loop every server runs: follow the writer, or become it.
async fn watch_lease(
    parts: WriterParts,
    terms: LeaseTerms,
    routes: watch::Sender<Route>,
    local: watch::Sender<LocalWriter>,
    role: WriterRole,
    on_writer: Arc<dyn Fn() + Send + Sync>,
) {
    let parts = Arc::new(parts);
    let mut writer: Option<Shard> = None;
    let mut watcher: Option<PostgresStore> = None;
    loop {
        if let Some(shard) = &writer {
            if shard.is_running() {
                tokio::time::sleep(WATCH_EVERY).await;
                continue;
            }
            // Fenced, its lease lost, or its database gone: it acknowledges nothing more.
            tracing::warn!("this server's writer stopped; looking for the next writer");
            metrics::counter!("citypay_writer_stops_total").increment(1);
            local.send_replace(None);
            routes.send_replace(Route::Nowhere);
            role.set("no_writer", None);
            if let Some(shard) = writer.take() {
                let _ = tokio::task::spawn_blocking(move || drop(shard)).await;
            }
        }
        let url = parts.url.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut store = match watcher.take() {
                Some(store) => store,
                None => match PostgresStore::open_lease_reader(&url) {
                    Ok(store) => store,
                    Err(error) => return (None, Err(error)),
                },
            };
            let lease = store.lease();
            // A failed read may have broken the connection: connect afresh next time.
            (lease.is_ok().then_some(store), lease)
        })
        .await;
        let Ok((kept, lease)) = read else { return };
        watcher = kept;
        let lease = match lease {
            Ok(lease) => lease,
            Err(error) => {
                // The database cannot be reached from here: keep forwarding where we did (the
                // writer may well be fine), and try again.
                tracing::debug!(%error, "reading the writer lease failed");
                tokio::time::sleep(WATCH_EVERY).await;
                continue;
            }
        };
        if lease.locked && lease.live && lease.address != terms.address {
            let route = Route::Remote { address: lease.address.clone(), epoch: lease.epoch };
            routes.send_if_modified(|now| {
                let changed = !matches!(now, Route::Remote { address, epoch } if *address == lease.address && *epoch == lease.epoch);
                if changed {
                    tracing::info!(writer = %lease.address, epoch = lease.epoch, "forwarding commands to the writer");
                    *now = route.clone();
                }
                changed
            });
            role.set("forwarding", Some(lease.epoch));
            tokio::time::sleep(WATCH_EVERY).await;
            continue;
        }
        // No writer whose lease runs: take over.
        let started = std::time::Instant::now();
        let (taking, terms_now) = (parts.clone(), terms.clone());
        let taken = tokio::task::spawn_blocking(move || -> anyhow::Result<(Shard, i64)> {
            let store = PostgresStore::take_over(&taking.url, &crate::city::migrations(), &terms_now)?;
            let epoch = store.epoch().context("a writer has an epoch")?;
            let shard = crate::city::start_writer(Box::new(store), taking.reader.as_ref(), taking.journal, taking.head.clone(), Arc::new(SystemClock))?;
            Ok((shard, epoch))
        })
        .await;
        match taken {
            Ok(Ok((shard, epoch))) => {
                tracing::info!(epoch, took_ms = started.elapsed().as_millis() as u64, "this server is the writer");
                metrics::counter!("citypay_writer_takeovers_total").increment(1);
                metrics::gauge!("citypay_writer_epoch").set(epoch as f64);
                local.send_replace(Some((shard.handle(), epoch)));
                routes.send_replace(Route::Local { handle: shard.handle(), epoch });
                role.set("writer", Some(epoch));
                writer = Some(shard);
                on_writer();
            }
            Ok(Err(error)) if error.chain().any(|e| matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked { .. }))) => {}
            Ok(Err(error)) => tracing::warn!(error = %format!("{error:#}"), "taking over as the writer failed"),
            Err(_) => return,
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}
