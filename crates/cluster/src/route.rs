//! Where this server's commands go now.

use std::sync::Arc;

use citypay_shard::{Relay, ShardHandle};
use tokio::sync::{Semaphore, watch};

use crate::Forwarder;
use crate::forward::refuse;

/// Commands forwarded and not yet answered, at most; past that the services wait
/// (backpressure), and past their own timeout they answer "unavailable".
const FORWARDED_IN_FLIGHT: usize = 16_384;

/// How long a command waits for room in this process's writer's queue.
const LOCAL_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where commands go.
#[derive(Debug, Clone)]
pub enum Route {
    /// This process is the writer.
    Local {
        /// Its writer thread.
        handle: ShardHandle,
        /// Its epoch.
        epoch: i64,
    },
    /// Another server is the writer.
    Remote {
        /// Where it takes members' commands.
        address: String,
        /// Its epoch, as the lease records it.
        epoch: i64,
    },
    /// No writer is known now (a takeover is under way): commands are refused as
    /// unavailable, and callers retry.
    Nowhere,
}

impl Route {
    /// The epoch of the writer commands go to, if any.
    pub fn epoch(&self) -> Option<i64> {
        match self {
            Route::Local { epoch, .. } | Route::Remote { epoch, .. } => Some(*epoch),
            Route::Nowhere => None,
        }
    }
}

/// Takes every request of `relay` and sends it where `routes` says at that moment.
pub fn router(mut relay: Relay, routes: watch::Receiver<Route>, forwarder: Arc<Forwarder>) -> tokio::task::JoinHandle<()> {
    let permits = Arc::new(Semaphore::new(FORWARDED_IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(request) = relay.next().await {
            let route = routes.borrow().clone();
            match route {
                // A writer stuck in a COMMIT stops taking commands; the router must not stop
                // with it. A command it did not take in time was never sent: unavailable.
                Route::Local { handle, .. } => {
                    let _ = tokio::time::timeout(LOCAL_QUEUE_WAIT, request.pass_to(&handle)).await;
                }
                Route::Remote { address, epoch } => {
                    metrics::counter!("citypay_forwarded_commands_total").increment(1);
                    let Ok(permit) = permits.clone().acquire_owned().await else { return };
                    let (forwarder, routes) = (forwarder.clone(), routes.clone());
                    tokio::spawn(async move {
                        // Routed before a takeover, sent after it: refused (nothing was sent)
                        // rather than sent to the old writer, which would end the connection to
                        // the new one.
                        let still = matches!(&*routes.borrow(), Route::Remote { address: now, epoch: e } if *now == address && *e == epoch);
                        if still { forwarder.forward(&address, request, permit).await } else { refuse(request) }
                    });
                }
                Route::Nowhere => refuse(request),
            }
        }
    })
}
