//! Where the journal's newest seal is kept, outside the database (see `citypay_shard::seal`):
//! a file beside the key file for a city on one server, or etcd for a city on several, so
//! that whichever server writes next, and the audit, find it.

use std::path::PathBuf;

use anyhow::Context;
use citypay_shard::seal::{Head, Seal, SealHead};

use crate::etcd::Etcd;

/// A place for the head.
#[derive(Debug, Clone)]
pub(crate) enum HeadStore {
    /// A file, replaced whole after every batch.
    File(PathBuf),
    /// A key of etcd, set after batches (the newest one, when several are waiting), and only
    /// forward: a deposed writer never sets an earlier head over a later one.
    Etcd { etcd: Etcd, key: String },
}

impl std::fmt::Display for HeadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadStore::File(path) => write!(f, "{}", path.display()),
            HeadStore::Etcd { key, .. } => write!(f, "etcd {key}"),
        }
    }
}

/// `BATCH ROWS MAC FIRST CHECK`: MAC in hex, FIRST the first sealed batch, CHECK the key's
/// check value in hex.
fn text(seal: &Seal, first: u64, key_check: &[u8; 8]) -> String {
    format!("{} {} {} {first} {}\n", seal.batch, seal.rows, citypay_vault::hex::encode(&seal.mac), citypay_vault::hex::encode(key_check))
}

fn parse(text: &str, place: &HeadStore) -> anyhow::Result<Head> {
    let mut parts = text.split_whitespace();
    let (Some(batch), Some(rows), Some(mac), Some(first), Some(check)) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("{place}: BATCH ROWS MAC FIRST CHECK")
    };
    let seal = Seal { batch: batch.parse()?, rows: rows.parse()?, mac: citypay_vault::hex::decode(mac).context("the head's MAC")? };
    Ok(Head { seal, first: first.parse()?, key_check: citypay_vault::hex::decode(check).context("the head's key check")? })
}

/// Runs `work` to its end from synchronous code: on the current runtime from one of its
/// blocking threads, else on a runtime of its own.
fn block_on<T>(work: impl Future<Output = T>) -> anyhow::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(tokio::task::block_in_place(|| handle.block_on(work))),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(work)),
    }
}

impl HeadStore {
    /// The head of the database `db` in etcd.
    pub(crate) fn etcd(etcd: Etcd, db: &str) -> HeadStore {
        let name = db.rsplit('/').next().unwrap_or(db).split('?').next().unwrap_or_default();
        HeadStore::Etcd { etcd, key: format!("/citypay/seal-head/{name}") }
    }

    /// The head kept here, if any. Blocking.
    pub(crate) fn read(&self) -> anyhow::Result<Option<Head>> {
        let text = match self {
            HeadStore::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            },
            HeadStore::Etcd { etcd, key } => match block_on(etcd.get(key))?? {
                Some(bytes) => String::from_utf8(bytes).context("the head in etcd")?,
                None => return Ok(None),
            },
        };
        parse(&text, self).map(Some)
    }

    /// What the writer hands each batch's seal to. For etcd, call it on a runtime's thread:
    /// the head is set by a task of that runtime, off the writer's thread.
    pub(crate) fn writer(&self, key_check: [u8; 8]) -> Box<dyn SealHead> {
        match self {
            HeadStore::File(path) => Box::new(HeadFile::new(path.clone(), key_check)),
            HeadStore::Etcd { etcd, key } => {
                let (latest, mut waiting) = tokio::sync::watch::channel::<Option<(u64, String)>>(None);
                let (etcd, key) = (etcd.clone(), key.clone());
                let guard = format!("{key}/batch");
                tokio::runtime::Handle::current().spawn(async move {
                    while waiting.changed().await.is_ok() {
                        let Some((batch, text)) = waiting.borrow_and_update().clone() else { continue };
                        // Zero-padded, so that etcd's byte order is the batches' order.
                        if let Err(error) = etcd.put_if_before(&key, text.as_bytes(), &guard, &format!("{batch:020}")).await {
                            // The audit reports a head that lags; the batch is committed.
                            tracing::warn!(error = %format!("{error:#}"), "setting the journal's seal head in etcd failed");
                        }
                    }
                });
                Box::new(EtcdHead { latest, key_check })
            }
        }
    }
}

/// Replaced whole after batches (written, then renamed over the old one) by a thread of its
/// own, so the writer never waits on the file system: it hands the text over and goes on, and
/// when several wait only the newest is written. The first head is written before the writer
/// goes on, so a sealed journal is never without one; dropping the head writes the last.
/// Not synced: after a power cut it may name an earlier batch than the database holds, never
/// a later one.
struct HeadFile {
    path: PathBuf,
    temporary: PathBuf,
    key_check: [u8; 8],
    /// The head thread, once the first head is written.
    thread: Option<(std::sync::mpsc::Sender<String>, std::thread::JoinHandle<()>)>,
}

impl HeadFile {
    fn new(path: PathBuf, key_check: [u8; 8]) -> HeadFile {
        HeadFile { temporary: path.with_extension("head-new"), path, key_check, thread: None }
    }

    fn start_thread(&self) -> Option<(std::sync::mpsc::Sender<String>, std::thread::JoinHandle<()>)> {
        let (send, receive) = std::sync::mpsc::channel::<String>();
        let (path, temporary) = (self.path.clone(), self.temporary.clone());
        let thread = std::thread::Builder::new()
            .name("seal-head".into())
            .spawn(move || {
                while let Ok(mut text) = receive.recv() {
                    while let Ok(newer) = receive.try_recv() {
                        text = newer;
                    }
                    replace(&path, &temporary, &text);
                }
            })
            .ok()?;
        Some((send, thread))
    }
}

/// A head that cannot be written is reported by the audit as a mismatch, never silently
/// trusted; the batch itself is committed already.
fn replace(path: &std::path::Path, temporary: &std::path::Path, text: &str) {
    if std::fs::write(temporary, text).is_ok() {
        let _ = std::fs::rename(temporary, path);
    }
}

impl SealHead for HeadFile {
    fn sealed(&mut self, seal: &Seal, first: u64) {
        let text = text(seal, first, &self.key_check);
        match &self.thread {
            Some((send, _)) => {
                if let Err(unsent) = send.send(text) {
                    replace(&self.path, &self.temporary, &unsent.0);
                }
            }
            None => {
                replace(&self.path, &self.temporary, &text);
                self.thread = self.start_thread();
            }
        }
    }
}

impl Drop for HeadFile {
    fn drop(&mut self) {
        if let Some((send, thread)) = self.thread.take() {
            drop(send);
            let _ = thread.join();
        }
    }
}

/// Hands the newest seal to the task that sets it in etcd; never waits.
struct EtcdHead {
    latest: tokio::sync::watch::Sender<Option<(u64, String)>>,
    key_check: [u8; 8],
}

impl SealHead for EtcdHead {
    fn sealed(&mut self, seal: &Seal, first: u64) {
        self.latest.send_replace(Some((seal.batch, text(seal, first, &self.key_check))));
    }
}
