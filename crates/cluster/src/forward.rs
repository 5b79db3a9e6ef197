//! The member's side: commands forwarded to the writer over one connection, answers matched
//! back by id.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use citypay_ledger::Account;
use citypay_shard::{Relayed, Reply, Responder, SubmitError};
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};
use tokio_rustls::TlsConnector;

use crate::ClusterTls;
use crate::frame::{self, Ask, Tell};

/// How long connecting to the writer (TCP and TLS) may take before its commands are refused
/// as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a command whose answer was lost is told.
const LOST: &str = "the connection to the writer was lost before its answer came: the outcome is unknown; retry with the same id";

/// Forwards commands to the writer on another server, over one connection at a time.
pub struct Forwarder {
    connector: TlsConnector,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarder")
    }
}

enum Waiting {
    Reply(Responder<Reply>),
    Account(Responder<Result<Option<Account>, SubmitError>>),
}

struct Connection {
    address: String,
    /// The writer's epoch, from its hello.
    epoch: i64,
    /// Taken out when the connection closes, which ends its sending task.
    asks: std::sync::Mutex<Option<mpsc::Sender<Ask>>>,
    waiting: std::sync::Mutex<FxHashMap<u64, (Waiting, OwnedSemaphorePermit)>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl Connection {
    /// Answers everything still waiting: "unknown" for commands, unavailable for reads.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.asks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (_, (waiting, _permit)) in waiting {
            if let Waiting::Reply(responder) = waiting {
                responder.answer(Err(SubmitError::CommitFailed(LOST.to_owned())), self.epoch);
            }
        }
    }
}

impl Forwarder {
    /// A forwarder that connects with `tls`.
    pub fn new(tls: &ClusterTls) -> Forwarder {
        Forwarder { connector: TlsConnector::from(tls.client.clone()), connection: Mutex::new(None) }
    }

    /// Sends `request` to the writer at `address` (connecting first if needed); its answer
    /// goes to its responder when it comes. `permit` is held until then, bounding what is in
    /// flight. A writer that cannot be reached answers unavailable: nothing was sent. Once the
    /// request is on its way, a lost connection answers it "outcome unknown".
    pub async fn forward(&self, address: &str, request: Relayed, permit: OwnedSemaphorePermit) {
        let connection = match self.connection(address).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, address, "the writer cannot be reached");
                refuse(request);
                return;
            }
        };
        let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
        let (ask, waiting) = match request {
            Relayed::Command(command, responder) => (Ask::Command { id, command }, Waiting::Reply(responder)),
            Relayed::Account(account, responder) => (Ask::Account { id, account }, Waiting::Account(responder)),
        };
        connection.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, (waiting, permit));
        // A connection that closed meanwhile has answered (or will answer) what waits on it.
        let asks = connection.asks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let sent = match asks {
            Some(asks) => asks.send(ask).await.is_ok(),
            None => false,
        };
        if !sent || connection.closed.load(Ordering::SeqCst) {
            connection.close();
        }
    }

    /// The epoch of the writer this forwarder is connected to, if it is.
    pub async fn epoch(&self) -> Option<i64> {
        self.connection.lock().await.as_ref().filter(|c| !c.closed.load(Ordering::SeqCst)).map(|c| c.epoch)
    }

    async fn connection(&self, address: &str) -> std::io::Result<Arc<Connection>> {
        let mut current = self.connection.lock().await;
        if let Some(connection) = current.as_ref()
            && connection.address == address
            && !connection.closed.load(Ordering::SeqCst)
        {
            return Ok(connection.clone());
        }
        if let Some(old) = current.take() {
            old.close();
        }
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(address))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to the writer at {address}")))??;
        *current = Some(connection.clone());
        Ok(connection)
    }

    async fn connect(&self, address: &str) -> std::io::Result<Arc<Connection>> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let stream = self.connector.connect(ClusterTls::member_name(), tcp).await?;
        let (mut reading, mut writing) = tokio::io::split(stream);
        let mut buffer = Vec::new();
        let Some(Tell::Hello { epoch }) = frame::read::<_, Tell>(&mut reading, &mut buffer).await? else {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the server is not the writer"));
        };
        let (asks, mut to_send) = mpsc::channel::<Ask>(1_024);
        let connection = Arc::new(Connection {
            address: address.to_owned(),
            epoch,
            asks: std::sync::Mutex::new(Some(asks)),
            waiting: std::sync::Mutex::new(FxHashMap::default()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        let sender = Arc::downgrade(&connection);
        tokio::spawn(async move {
            if let Err(error) = frame::write_all(&mut to_send, &mut writing).await {
                tracing::warn!(%error, "sending to the writer failed");
            }
            // Closing our side tells the writer, which closes its side: the reading task ends.
            let _ = writing.shutdown().await;
            if let Some(connection) = sender.upgrade() {
                connection.close();
            }
        });
        let receiver = connection.clone();
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            loop {
                match frame::read::<_, Tell>(&mut reading, &mut buffer).await {
                    Ok(Some(Tell::Reply { id, reply, epoch })) => {
                        if let Some((Waiting::Reply(responder), _permit)) = receiver.take(id) {
                            responder.answer(reply, epoch);
                        }
                    }
                    Ok(Some(Tell::Account { id, account })) => {
                        if let Some((Waiting::Account(responder), _permit)) = receiver.take(id) {
                            responder.answer(Ok(account));
                        }
                    }
                    Ok(Some(Tell::Hello { .. })) => {}
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, "the writer's connection failed");
                        break;
                    }
                }
            }
            receiver.close();
        });
        Ok(connection)
    }
}

impl Connection {
    fn take(&self, id: u64) -> Option<(Waiting, OwnedSemaphorePermit)> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id)
    }
}

/// Answers a request that was never sent: the writer is unavailable.
pub(crate) fn refuse(request: Relayed) {
    match request {
        Relayed::Command(_, responder) => responder.answer(Err(SubmitError::Unavailable), 0),
        Relayed::Account(_, responder) => responder.answer(Err(SubmitError::Unavailable)),
    }
}
