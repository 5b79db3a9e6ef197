//! The writer with no thread of its own, stepped by its caller: for deterministic simulation.
//! The caller decides when clients' commands are taken in, which of them make each batch and in
//! what order, and when a batch runs; everything else (guards, the ledger, the one durable
//! commit, answers only after it) is the threaded writer's own code.

use citypay_ledger::EventId;

use super::{
    Account, AccountId, Batch, Clock, Command, Event, Ledger, LedgerStore, Reply, Request, ShardConfig, ShardHandle, ShardStats, StoreError,
    SubmitError, Writer, load, seal,
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A shard writer run one batch at a time by its caller, on the caller's thread.
pub struct SteppedShard {
    writer: Writer,
    receiver: mpsc::Receiver<Request>,
    waiting: Vec<(Command, oneshot::Sender<crate::Answered>)>,
    handle: ShardHandle,
}

impl std::fmt::Debug for SteppedShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteppedShard").field("last_batch", &self.writer.last_batch).field("waiting", &self.waiting.len()).finish_non_exhaustive()
    }
}

/// What one step did.
#[derive(Debug)]
pub struct Step {
    /// The number of the newest committed batch after the step.
    pub last_batch: u64,
    /// Each command of the batch, in batch order: its event's id (none for a rows-only
    /// command) and its answer.
    pub answers: Vec<(Option<EventId>, Reply)>,
    /// False when the writer must stop: another writer owns the database, or memory and disk
    /// may disagree and the disk could not be read back.
    pub running: bool,
}

impl SteppedShard {
    /// Loads the ledger from `store` and checks the books, like [`super::Shard::start`], with
    /// no thread: nothing happens until [`SteppedShard::step`].
    pub fn open(mut store: Box<dyn LedgerStore>, config: ShardConfig, clock: impl Clock, sealer: Option<seal::Sealer>) -> Result<SteppedShard, StoreError> {
        assert!(config.batch_max > 0 && config.queue_max >= config.batch_max);
        let (ledger, last_batch) = load(store.as_mut(), config)?;
        let (sender, receiver) = mpsc::channel(config.queue_max);
        let stats = Arc::new(ShardStats::default());
        let owned = crate::Owned::default();
        let writer = Writer { store, ledger, last_batch, config, clock: Box::new(clock), stats, sealer, ack_before_commit: false, epoch: Default::default(), owned: owned.clone(), answerer: None };
        Ok(SteppedShard { writer, receiver, waiting: Vec::new(), handle: ShardHandle { sender, reply_timeout: config.reply_timeout, owned } })
    }

    /// A handle for sending commands, as a running shard's.
    pub fn handle(&self) -> ShardHandle {
        self.handle.clone()
    }

    /// Takes in what clients sent since the last call: reads of an account are answered at
    /// once from the committed state, commands wait for a step. Answers how many wait.
    pub fn collect(&mut self) -> usize {
        while let Ok(request) = self.receiver.try_recv() {
            match request {
                Request::Command(command, reply) => self.waiting.push((command, reply)),
                Request::Account(id, reply) => {
                    let _ = reply.send(self.account(id));
                }
                Request::Stop => {}
            }
        }
        self.waiting.len()
    }

    /// Commands waiting for a batch.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Runs one batch of the waiting commands that `pick` names (indexes into the waiting
    /// list, in batch order; repeated or unknown indexes are skipped, and at most the batch
    /// bound are taken), and answers them. An empty pick still runs the batch that expires
    /// pending transfers when one is due.
    pub fn step(&mut self, pick: &[usize]) -> Step {
        let mut slots: Vec<Option<(Command, oneshot::Sender<crate::Answered>)>> = self.waiting.drain(..).map(Some).collect();
        let mut batch = Batch::default();
        let (mut ids, mut answers, mut clients) = (Vec::new(), Vec::new(), Vec::new());
        for &index in pick {
            if batch.commands.len() == self.writer.config.batch_max {
                break;
            }
            let Some((command, reply)) = slots.get_mut(index).and_then(Option::take) else { continue };
            ids.push(command.event.as_ref().map(Event::id));
            let (tx, rx) = oneshot::channel();
            batch.commands.push(command);
            batch.replies.push(tx);
            answers.push(rx);
            clients.push(reply);
        }
        self.waiting = slots.into_iter().flatten().collect();
        let running = self.writer.process(&mut batch);
        let answers = ids
            .into_iter()
            .zip(answers)
            .zip(clients)
            .map(|((id, mut answer), client)| {
                let (answer, epoch) = answer.try_recv().unwrap_or((Err(SubmitError::Unavailable), 0));
                let _ = client.send((answer.clone(), epoch));
                (id, answer)
            })
            .collect();
        Step { last_batch: self.writer.last_batch, answers, running }
    }

    /// The writer's ledger: what is committed.
    pub fn ledger(&self) -> &Ledger {
        &self.writer.ledger
    }

    /// An account's committed state.
    pub fn account(&self, id: AccountId) -> Option<Account> {
        self.writer.ledger.account(id).copied()
    }

    /// Plants a deliberate bug, to prove that a simulation finds it: from now on each batch's
    /// answers go out before its commit, so a commit that fails leaves acknowledged work undone.
    pub fn plant_ack_before_commit(&mut self) {
        self.writer.ack_before_commit = true;
    }
}
