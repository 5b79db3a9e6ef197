//! A store that wraps a real one and fails commits when told to.

use std::sync::{Arc, Mutex};

use citypay_ledger::EventId;
use citypay_ledger::StoredEvent;
use citypay_store::{BatchWrite, LedgerStore, Snapshot, StoreError, Value};
use rustc_hash::FxHashMap;

/// How the next commit fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFault {
    /// The commit errors and nothing reaches the real store.
    Refuse,
    /// The real store commits, then the caller is told the outcome is unknown (a connection
    /// that broke during COMMIT).
    CommitThenLose,
}

/// A faulty twin of a store: behaves like `inner` except for the faults queued in `faults`.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Mutex<Vec<CommitFault>>>,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner`; push faults onto the returned queue (popped from the front, one per
    /// commit) to make the next commits fail.
    pub fn new(inner: S) -> (FaultyStore<S>, Arc<Mutex<Vec<CommitFault>>>) {
        let faults = Arc::new(Mutex::new(Vec::new()));
        (FaultyStore { inner, faults: faults.clone() }, faults)
    }
}

impl<S: LedgerStore> LedgerStore for FaultyStore<S> {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn lookup(&mut self, ids: &[EventId]) -> Result<FxHashMap<EventId, StoredEvent>, StoreError> {
        self.inner.lookup(ids)
    }

    fn keep_alive(&mut self) -> Result<(), StoreError> {
        self.inner.keep_alive()
    }

    fn keep_alive_every(&self) -> Option<std::time::Duration> {
        self.inner.keep_alive_every()
    }

    fn read_row(
        &mut self,
        table: &'static str,
        key: &[(&'static str, Value)],
        columns: &[&'static str],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        self.inner.read_row(table, key, columns)
    }

    fn commit(&mut self, batch: &BatchWrite<'_>) -> Result<(), StoreError> {
        let fault = {
            let mut faults = self.faults.lock().expect("fault queue");
            if faults.is_empty() { None } else { Some(faults.remove(0)) }
        };
        match fault {
            None => self.inner.commit(batch),
            Some(CommitFault::Refuse) => Err(StoreError::Backend("injected commit failure".into())),
            Some(CommitFault::CommitThenLose) => {
                self.inner.commit(batch)?;
                Err(StoreError::OutcomeUnknown("injected: connection lost after COMMIT".into()))
            }
        }
    }
}
