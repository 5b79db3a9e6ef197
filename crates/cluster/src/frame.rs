//! What servers send each other: length-prefixed postcard frames over one TLS stream.

use citypay_ledger::{Account, AccountId};
use citypay_shard::{Command, Reply};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The largest frame either side accepts (a batch-sized command is far smaller).
const FRAME_MAX: usize = 16 << 20;

/// From a forwarding server to the writer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ask {
    /// Submit this command; answer with [`Tell::Reply`] under the same id.
    Command { id: u64, command: Command },
    /// Read this account's committed state.
    Account { id: u64, account: AccountId },
}

/// From the writer to a forwarding server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Tell {
    /// First frame of a connection: the writer's fencing epoch.
    Hello { epoch: i64 },
    /// The answer to a command, and the epoch of the writer that gave it.
    Reply { id: u64, reply: Reply, epoch: i64 },
    /// The answer to an account read.
    Account { id: u64, account: Option<Account> },
}

/// Appends one frame to `out` (a buffer flushed when the queue runs dry).
pub(crate) fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> std::io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let body = postcard::to_extend(value, std::mem::take(out)).map_err(std::io::Error::other)?;
    *out = body;
    let length = u32::try_from(out.len() - start - 4).map_err(std::io::Error::other)?;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Frames written in one go when several are waiting.
const WRITE_BUFFER: usize = 64 << 10;

/// Writes every frame that comes from `queue` until it closes, those waiting at once in one
/// write, so a busy connection costs few system calls.
pub(crate) async fn write_all<W: AsyncWrite + Unpin, T: Serialize>(queue: &mut mpsc::Receiver<T>, writer: &mut W) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(WRITE_BUFFER);
    while let Some(first) = queue.recv().await {
        buffer.clear();
        encode(&first, &mut buffer)?;
        while buffer.len() < WRITE_BUFFER {
            let Ok(more) = queue.try_recv() else { break };
            encode(&more, &mut buffer)?;
        }
        writer.write_all(&buffer).await?;
        writer.flush().await?;
    }
    Ok(())
}

/// Reads one frame; `None` at a clean end of the stream.
pub(crate) async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(reader: &mut R, buffer: &mut Vec<u8>) -> std::io::Result<Option<T>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > FRAME_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {length} bytes")));
    }
    buffer.resize(length, 0);
    reader.read_exact(buffer).await?;
    postcard::from_bytes(buffer).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
