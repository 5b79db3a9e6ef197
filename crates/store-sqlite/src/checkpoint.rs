//! Checkpoints off the writer's thread. SQLite's automatic checkpoint runs inside the commit
//! that crosses the threshold, so the single writer would stop taking batches while it copies
//! the WAL into the database file and fsyncs it (a fifth of the writer's time at a million
//! transactions a day). A second connection checkpoints in the background instead (PASSIVE:
//! it never blocks the writer or readers). A WAL that is fully copied still only starts over
//! when no new frames came meanwhile, which under steady load is never; so once the WAL is past
//! [`RESTART_FRAMES`], a RESTART checkpoint copies the few frames the passive one missed and
//! makes the writer start the WAL over, a pause of milliseconds. The writer keeps a high
//! automatic threshold only as a safety net should this thread fall behind.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use citypay_store::StoreError;

use crate::backend;

/// How often the background connection checkpoints.
const INTERVAL: Duration = Duration::from_millis(200);
/// WAL frames (pages) past which the WAL is made to start over: 64 MiB of 4 KiB pages.
const RESTART_FRAMES: i64 = 16_384;

/// The background checkpointer; stops (and is joined) when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = crate::open(path, rusqlite::OpenFlags::default())?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").map_err(backend)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let Ok(mut stopped) = lock.lock() else { return };
                while !*stopped {
                    // A failed checkpoint is retried at the next tick; the writer's own
                    // automatic checkpoint bounds the WAL meanwhile.
                    let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1));
                    if frames.as_ref().is_ok_and(|f| *f > RESTART_FRAMES) {
                        let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
                    }
                    match wake.wait_timeout(stopped, INTERVAL) {
                        Ok((guard, _)) => stopped = guard,
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
