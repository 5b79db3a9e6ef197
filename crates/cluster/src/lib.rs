//! Many servers, one writer. Every `citypay serve` of a city takes requests; at most one at a
//! time is the city's writer (it holds the database's lease). The services of every server
//! submit their commands to a [`relay`](citypay_shard::relay) handle, and the [`router`]
//! sends each where the writer is: to the writer thread of this process, or over the
//! [`Forwarder`] to the server that holds the lease, whose [`CommandListener`] submits it to
//! its writer and sends the answer back. Servers talk over TLS 1.3, both ends showing a
//! certificate of the city's cluster CA ([`ClusterTls`]).
//!
//! A command whose answer was lost on the way (the connection broke after it was sent) is
//! answered "outcome unknown, retry with the same id": it is never retried here, since only
//! the caller knows the ids to retry it under, and never acknowledged.

mod forward;
mod frame;
mod listen;
mod route;
mod tls;

pub use forward::Forwarder;
pub use listen::{CommandListener, LocalWriter};
pub use route::{Route, router};
pub use tls::{ClusterError, ClusterTls};
