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
    /// etcd's endpoints: the seal head, and the Patroni leader. `None`: the head stays in the
    /// file beside the key file (servers on one machine).
    pub(crate) etcd: Option<String>,
    /// The Patroni cluster's prefix in etcd. `None`: the `--db` URL is the primary.
    pub(crate) patroni_scope: Option<String>,
    /// The country's catalog and this server's shard, when the city is a shard of a country.
    pub(crate) country: Option<(String, u16)>,
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

    /// This server's writer, while it is the writer.
    pub(crate) fn writer(&self) -> Option<citypay_shard::ShardHandle> {
        self.local.borrow().as_ref().map(|(handle, _)| handle.clone())
    }
}

/// Everything a writer needs that the lease does not give: where the database's primary is
/// now, the journal's seal key and head.
pub(crate) struct WriterParts {
    pub(crate) locate: citypay_store_postgres::Locate,
    pub(crate) reader: Arc<dyn ServiceReader>,
    pub(crate) journal: Option<[u8; 32]>,
    pub(crate) head: Option<crate::seal_head::HeadStore>,
    /// What a writer of a shard of a country holds, asked at each takeover (`None`: every
    /// bucket, a city on its own).
    pub(crate) buckets: Option<Arc<dyn Fn() -> citypay_routing::OwnedBuckets + Send + Sync>>,
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
    // This server's writer, its epoch, and the primary it writes to.
    let mut writer: Option<(Shard, i64, String)> = None;
    let mut watcher = Watcher(None);
    loop {
        let Some(url) = (parts.locate)() else {
            // No primary now (a failover under way): a writer here cannot commit either.
            tokio::time::sleep(WATCH_EVERY).await;
            continue;
        };
        let lease = read_lease(&mut watcher.0, &url).await;
        if let Some((shard, epoch, at)) = &writer {
            // Deposed: fenced or its lease lost (the thread stopped), a later epoch on the
            // primary, or the primary moved (this writer's commits cannot be acknowledged there).
            let superseded = lease.as_ref().is_ok_and(|l| l.epoch > *epoch);
            if shard.is_running() && !superseded && *at == url {
                tokio::time::sleep(WATCH_EVERY).await;
                continue;
            }
            tracing::warn!(epoch, superseded, moved = *at != url, "this server's writer stopped or was deposed; looking for the next writer");
            metrics::counter!("citypay_writer_stops_total").increment(1);
            local.send_replace(None);
            routes.send_replace(Route::Nowhere);
            // Answers read from storage meanwhile name the last writer known.
            role.set("no_writer", Some(*epoch));
            if let Some((shard, _, _)) = writer.take() {
                // Its thread may be stuck in a COMMIT that never returns (an isolated primary):
                // nothing waits for it.
                std::thread::spawn(move || drop(shard));
            }
            continue;
        }
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
        let (taking, terms_now, primary) = (parts.clone(), terms.clone(), url.clone());
        let taken = tokio::task::spawn_blocking(move || -> anyhow::Result<(Shard, i64)> {
            let store = PostgresStore::take_over(&primary, &crate::city::migrations(), &terms_now)?;
            let epoch = store.epoch().context("a writer has an epoch")?;
            let shard = crate::city::start_writer(Box::new(store), taking.reader.as_ref(), taking.journal, taking.head.clone(), Arc::new(SystemClock))?;
            shard.set_epoch(epoch);
            // Before it takes a command: a writer of a shard holds only the shard's buckets.
            shard.handle().hold_buckets(taking.buckets.as_ref().map(|held| held()));
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
                writer = Some((shard, epoch, url));
                on_writer();
            }
            Ok(Err(error)) if error.chain().any(|e| matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked { .. }))) => {}
            Ok(Err(error)) => tracing::warn!(error = %format!("{error:#}"), "taking over as the writer failed"),
            // A panic while taking over: logged, and tried again.
            Err(error) => tracing::error!(%error, "taking over as the writer panicked"),
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Reads the lease on the primary at `url`, keeping one connection for it (a new one when the
/// primary moves, or after an error).
async fn read_lease(watcher: &mut Option<(String, PostgresStore)>, url: &str) -> Result<citypay_store_postgres::LeaseState, StoreError> {
    let kept = watcher.take();
    let url = url.to_owned();
    // Connections open and close on a blocking thread: the synchronous client runs a runtime.
    let read = tokio::task::spawn_blocking(move || {
        let mut store = match kept.filter(|(at, _)| *at == url) {
            Some((_, store)) => store,
            None => match PostgresStore::open_lease_reader(&url) {
                Ok(store) => store,
                Err(error) => return (None, Err(error)),
            },
        };
        let lease = store.lease();
        // A failed read may have broken the connection: connect afresh next time.
        (lease.is_ok().then_some((url, store)), lease)
    })
    .await;
    match read {
        Ok((kept, lease)) => {
            *watcher = kept;
            lease
        }
        Err(error) => Err(StoreError::Backend(format!("reading the lease: {error}"))),
    }
}

/// The connection that reads the lease. The synchronous client closes on a runtime of its own,
/// which must not happen on the async threads: when the task ends (the server stops), it is
/// dropped on a thread of its own.
struct Watcher(Option<(String, PostgresStore)>);

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(kept) = self.0.take() {
            std::thread::spawn(move || drop(kept));
        }
    }
}

/// A handle on another shard's writer, from this server: the commands go wherever that shard's
/// lease says its writer is (over the cluster's mutual TLS), and are refused as unavailable
/// while it has none. This server never becomes that shard's writer.
pub(crate) fn follow(locate: citypay_store_postgres::Locate, tls: &ClusterTls) -> citypay_shard::ShardHandle {
    let (handle, relay) = citypay_shard::relay(ShardConfig::DEFAULT.queue_max, ShardConfig::DEFAULT.reply_timeout);
    let (routes, route) = watch::channel(Route::Nowhere);
    citypay_cluster::router(relay, route, Arc::new(Forwarder::new(tls)));
    tokio::spawn(async move {
        let mut watcher = Watcher(None);
        loop {
            // No primary known now (its Patroni cluster fails over): the route stays.
            let Some(url) = locate() else {
                tokio::time::sleep(WATCH_EVERY).await;
                continue;
            };
            let next = match read_lease(&mut watcher.0, &url).await {
                Ok(lease) if lease.locked && lease.live => Route::Remote { address: lease.address.clone(), epoch: lease.epoch },
                Ok(_) => Route::Nowhere,
                // Not reachable from here now: keep the route (the writer may well be fine).
                Err(_) => {
                    tokio::time::sleep(WATCH_EVERY).await;
                    continue;
                }
            };
            routes.send_if_modified(|now| {
                let changed = match (&*now, &next) {
                    (Route::Remote { address, epoch }, Route::Remote { address: a, epoch: e }) => address != a || epoch != e,
                    (Route::Nowhere, Route::Nowhere) => false,
                    _ => true,
                };
                if changed {
                    *now = next.clone();
                }
                changed
            });
            tokio::time::sleep(WATCH_EVERY).await;
        }
    });
    handle
}
