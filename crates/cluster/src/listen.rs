//! The writer's side: members' connections, each command submitted to this process's writer
//! and its answer sent back on the same connection.

use std::sync::Arc;

use citypay_shard::ShardHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::ClusterTls;
use crate::frame::{self, Ask, Tell};

/// Commands of one connection in the writer at once; past that the connection is not read
/// (TCP pushes back on the member).
const IN_FLIGHT_PER_CONNECTION: usize = 8_192;

/// Connections served at once (members are a handful of servers, each with one).
const CONNECTIONS_MAX: usize = 256;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves members' commands while this process is the writer.
#[derive(Debug)]
pub struct CommandListener;

/// This process's writer and its epoch, while it is the city's writer.
pub type LocalWriter = Option<(ShardHandle, i64)>;

impl CommandListener {
    /// Accepts members on `listener` from now on. A connection is served while this process
    /// is the writer with the epoch it had when the connection came; when that ends, the
    /// connection is closed (its member then answers the commands in flight "outcome
    /// unknown"). A connection that comes while this process is not the writer is closed.
    pub fn spawn(listener: TcpListener, tls: &ClusterTls, writer: watch::Receiver<LocalWriter>) -> tokio::task::JoinHandle<()> {
        let acceptor = TlsAcceptor::from(tls.server.clone());
        let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = connections.clone().acquire_owned().await else { return };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a member's connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let writer = writer.clone();
                tokio::spawn(async move {
                    // Without a member's certificate in time, the connection is dropped.
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve(stream, writer).await,
                        Ok(Err(error)) => tracing::warn!(%error, %peer, "a member's TLS handshake failed"),
                        Err(_) => tracing::warn!(%peer, "a member's TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
        })
    }
}

async fn serve(stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>, mut writer: watch::Receiver<LocalWriter>) {
    let Some((handle, epoch)) = writer.borrow_and_update().clone() else { return };
    let (mut reading, mut writing) = tokio::io::split(stream);
    let (answers, mut to_write) = mpsc::channel::<Tell>(IN_FLIGHT_PER_CONNECTION);
    let sending = tokio::spawn(async move { frame::write_all(&mut to_write, &mut writing).await });
    if answers.send(Tell::Hello { epoch }).await.is_err() {
        return;
    }
    let permits = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    let mut buffer = Vec::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            _ = writer.changed() => break,
        };
        let Ok(permit) = permit else { break };
        let asked = tokio::select! {
            asked = frame::read::<_, Ask>(&mut reading, &mut buffer) => asked,
            _ = writer.changed() => break,
        };
        let ask = match asked {
            Ok(Some(ask)) => ask,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "a member's connection failed");
                break;
            }
        };
        let (handle, answers) = (handle.clone(), answers.clone());
        tokio::spawn(async move {
            let tell = match ask {
                Ask::Command { id, command } => {
                    let (reply, answered) = citypay_shard::watch_epoch(handle.submit(command)).await;
                    Tell::Reply { id, reply, epoch: answered.unwrap_or(epoch) }
                }
                Ask::Account { id, account } => match handle.account(account).await {
                    Ok(account) => Tell::Account { id, account },
                    // The writer stopped: the member sees the connection end.
                    Err(_) => return,
                },
            };
            let _ = answers.send(tell).await;
            drop(permit);
        });
    }
    sending.abort();
}
