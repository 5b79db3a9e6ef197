//! Where this server's commands go now.

use std::sync::Arc;

use citypay_shard::{Relay, ShardHandle};
use tokio::sync::{Semaphore, watch};

use crate::Forwarder;
use crate::forward::refuse;

/// Commands forwarded and not yet answered, at most; past that the services wait
/// (backpressure), and past their own timeout they answer "unavailable".
const FORWARDED_IN_FLIGHT: usize = 16_384;

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
                Route::Local { handle, .. } => request.pass_to(&handle).await,
                Route::Remote { address, .. } => {
                    metrics::counter!("citypay_forwarded_commands_total").increment(1);
                    let Ok(permit) = permits.clone().acquire_owned().await else { return };
                    let forwarder = forwarder.clone();
                    tokio::spawn(async move { forwarder.forward(&address, request, permit).await });
                }
                Route::Nowhere => refuse(request),
            }
        }
    })
}
