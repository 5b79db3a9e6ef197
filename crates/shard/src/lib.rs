//! The single writer of a shard. Clients put commands on a bounded queue; one thread drains up
//! to a bounded batch, applies it to the in-memory ledger, writes the whole batch in one storage
//! transaction, commits durably and only then answers. A failed commit takes the batch back out
//! of memory and answers every command in it with an error. Nothing is acknowledged before it
//! is durable.


pub mod seal;
mod stepped;
#[cfg(feature = "serde")]
mod wire;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use citypay_ledger::limits::BATCH_EVENTS_MAX;
use citypay_ledger::{Account, AccountId, Event, Ledger, LedgerConfig, Outcome, Status, Timestamp};
use citypay_store::{BatchWrite, LedgerStore, ServiceRow, StoreError, Value};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};

pub use stepped::{Step, SteppedShard};

/// Where the writer gets the time it hands the ledger.
pub trait Clock: Send + 'static {
    /// Now, UTC.
    fn now(&self) -> Timestamp;
}

/// The host's clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let nanos = since.map(|d| d.as_nanos()).unwrap_or(0);
        Timestamp(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl<C: Clock + Sync + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// A clock that moves only when told: for simulations and tests, so that a run replays
/// exactly from its seed. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(start.0)))
    }

    /// Sets the time; it never goes back (an earlier time is ignored).
    pub fn set(&self, to: Timestamp) {
        self.0.fetch_max(to.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Bounds of a shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// Commands that may wait in the queue; senders wait (backpressure) when it is full.
    pub queue_max: usize,
    /// Most commands in one batch.
    pub batch_max: usize,
    /// Event ids kept in memory for replay checks.
    pub recent_ids_max: usize,
    /// How long a client waits for its answer before giving up with "outcome unknown".
    pub reply_timeout: Duration,
}

impl ShardConfig {
    /// Defaults sized for one city on one machine.
    pub const DEFAULT: ShardConfig = ShardConfig {
        queue_max: 65_536,
        batch_max: BATCH_EVENTS_MAX,
        recent_ids_max: LedgerConfig::DEFAULT.recent_ids_max,
        reply_timeout: Duration::from_secs(30),
    };
}

const _: () = assert!(ShardConfig::DEFAULT.batch_max <= BATCH_EVENTS_MAX);
const _: () = assert!(ShardConfig::DEFAULT.batch_max <= ShardConfig::DEFAULT.queue_max);

/// One unit of work for the writer: an optional ledger event, the guards that must hold for
/// it to run, and the service rows to write if it succeeds.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Command {
    /// The ledger event; `None` for a command that only writes rows.
    pub event: Option<Event>,
    /// Checked in the writer, in order, before the event is applied; if one fails nothing of
    /// the command is applied and it is answered with [`SubmitError::GuardFailed`].
    pub guards: Vec<Guard>,
    /// Rows committed in the same transaction, only when the guards hold and the event (if
    /// any) is `ok` and not a replay.
    pub rows: Vec<ServiceRow>,
    /// Rows committed whenever the guards hold, whatever the event's status (an idempotency
    /// record that names the event, so a retry can replay it and get its first answer).
    pub always_rows: Vec<ServiceRow>,
}

impl From<Event> for Command {
    fn from(event: Event) -> Command {
        Command { event: Some(event), guards: Vec::new(), rows: Vec::new(), always_rows: Vec::new() }
    }
}

/// A condition on a service row, checked by the single writer, so it cannot race: against the
/// committed rows and the rows of earlier commands in the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Guard {
    /// No row of `table` has this key (one real-name identity, one wallet).
    Absent {
        /// Table name.
        table: &'static str,
        /// Key columns and values.
        key: Vec<(&'static str, Value)>,
    },
    /// The row of `table` with this key exists and has these values (compare-and-swap on a
    /// version column, or a state such as `WAIT_BUYER_PAY`).
    Matches {
        /// Table name.
        table: &'static str,
        /// Key columns and values.
        key: Vec<(&'static str, Value)>,
        /// Columns and the values they must have.
        expect: Vec<(&'static str, Value)>,
    },
    /// The command belongs to a move of the buckets it touches between shards: the writer
    /// takes it while those buckets are frozen here (and only a move's commands then). It
    /// always holds.
    DuringMove,
}

/// Why a command got no outcome. In every case retrying with the same id is safe.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SubmitError {
    /// The batch could not be committed, or the store lost the answer to its commit (the
    /// writer then reloads from storage). Either way a retry with the same ids answers the
    /// first result, so nothing moves twice.
    #[error("commit failed; retry with the same id: {0}")]
    CommitFailed(String),
    /// No answer in time; the command may or may not have been applied.
    #[error("outcome unknown after {0:?}; retry with the same id")]
    Timeout(Duration),
    /// The writer is not running (stopped, fenced by another writer, or crashed).
    #[error("the shard writer is not running")]
    Unavailable,
    /// Guard number `guard` of the command did not hold; nothing of it was applied. Read the
    /// rows again and decide anew.
    #[error("guard {guard} did not hold; nothing was applied")]
    GuardFailed {
        /// Index of the failed guard in [`Command::guards`].
        guard: usize,
    },
    /// The command touches an account of a bucket this shard does not hold (the sender's map
    /// is older than `map_version`, or the bucket is moving): nothing was applied; send it to
    /// the bucket's shard.
    #[error("bucket {bucket} is not on this shard (map version {map_version}): nothing was applied; send it to its shard")]
    NotOwned {
        /// The bucket.
        bucket: u16,
        /// The version of the map this shard holds its buckets by.
        map_version: u64,
        /// The bucket is frozen for a move: it will be held again (here or on the shard it
        /// moves to) in seconds, so a retry will succeed.
        moving: bool,
    },
}

/// The answer to one command.
pub type Reply = Result<Outcome, SubmitError>;

/// A reply and the fencing epoch of the writer that gave it (0 for a writer without one).
pub(crate) type Answered = (Reply, i64);

tokio::task_local! {
    /// The largest epoch of the writers that answered this task's commands, while a caller
    /// watches ([`watch_epoch`]).
    static ANSWERED_EPOCH: std::cell::Cell<Option<i64>>;
}

/// Runs `work`, answering also the largest fencing epoch of the writers that answered its
/// commands (`None` when none did): the API puts it on every answer, so a client can tell
/// which writer committed what it was told.
pub async fn watch_epoch<T>(work: impl Future<Output = T>) -> (T, Option<i64>) {
    ANSWERED_EPOCH
        .scope(std::cell::Cell::new(None), async move {
            let out = work.await;
            (out, ANSWERED_EPOCH.with(std::cell::Cell::get))
        })
        .await
}

/// Notes that a writer of `epoch` answered a command of this task.
fn answered_by(epoch: i64) {
    let _ = ANSWERED_EPOCH.try_with(|seen| seen.set(Some(seen.get().map_or(epoch, |e| e.max(epoch)))));
}

enum Request {
    Command(Command, oneshot::Sender<Answered>),
    Account(AccountId, oneshot::Sender<Option<Account>>),
    Stop,
}

/// Counters the writer keeps, readable at any time.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Commands answered with an outcome.
    pub commands: AtomicU64,
    /// Commits that failed.
    pub commit_failures: AtomicU64,
}

/// A cheap, cloneable way to send commands to a running shard.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    sender: mpsc::Sender<Request>,
    reply_timeout: Duration,
    owned: Owned,
}

/// The buckets this shard's writer holds; `None`: every bucket (one shard, or a city's
/// database from before buckets).
pub(crate) type Owned = Arc<std::sync::RwLock<Option<citypay_routing::OwnedBuckets>>>;

/// A running shard writer.
#[derive(Debug)]
pub struct Shard {
    handle: ShardHandle,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ShardStats>,
    epoch: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Command(c, _) => f.debug_tuple("Command").field(&c.event.as_ref().map(Event::id)).finish(),
            Request::Account(id, _) => f.debug_tuple("Account").field(id).finish(),
            Request::Stop => f.write_str("Stop"),
        }
    }
}

impl Shard {
    /// Loads the ledger from `store`, checks that the books balance, and starts the writer.
    pub fn start(store: Box<dyn LedgerStore>, config: ShardConfig, clock: impl Clock) -> Result<Shard, StoreError> {
        Shard::start_with(store, config, clock, None)
    }

    /// [`Shard::start`] sealing every batch's journal rows (see [`seal`]): the seal's row is
    /// committed with the batch, then handed to the sealer's head.
    pub fn start_sealed(store: Box<dyn LedgerStore>, config: ShardConfig, clock: impl Clock, sealer: seal::Sealer) -> Result<Shard, StoreError> {
        Shard::start_with(store, config, clock, Some(sealer))
    }

    fn start_with(
        mut store: Box<dyn LedgerStore>,
        config: ShardConfig,
        clock: impl Clock,
        sealer: Option<seal::Sealer>,
    ) -> Result<Shard, StoreError> {
        assert!(config.batch_max > 0 && config.batch_max <= BATCH_EVENTS_MAX);
        assert!(config.queue_max >= config.batch_max);
        let (ledger, last_batch) = load(store.as_mut(), config)?;
        let (sender, receiver) = mpsc::channel(config.queue_max);
        let stats = Arc::new(ShardStats::default());
        let epoch = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let owned = Owned::default();
        let writer = Writer {
            store,
            ledger,
            last_batch,
            config,
            clock: Box::new(clock),
            stats: stats.clone(),
            sealer,
            ack_before_commit: false,
            epoch: epoch.clone(),
            owned: owned.clone(),
            answerer: Some(Answerer::start()?),
        };
        let thread = std::thread::Builder::new()
            .name("shard-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        let handle = ShardHandle { sender, reply_timeout: config.reply_timeout, owned };
        Ok(Shard { handle, thread: Some(thread), stats, epoch })
    }

    /// A handle for sending commands.
    pub fn handle(&self) -> ShardHandle {
        self.handle.clone()
    }

    /// Names the fencing epoch of the writer's store, which every reply then carries (see
    /// [`watch_epoch`]).
    pub fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Whether the writer still runs. It stops when told to, or on its own when it may no
    /// longer write: fenced by a later writer, its lease lost, or memory and disk in doubt.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The writer's counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Finishes the commands already queued, then stops the writer and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        // Sent from a plain thread so that stopping works from async code too. A writer that
        // already stopped has dropped its receiver; nothing to tell it then.
        let sender = self.handle.sender.clone();
        let _ = std::thread::spawn(move || sender.blocking_send(Request::Stop).is_ok()).join();
        let _ = thread.join();
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ShardHandle {
    /// From now on the writer holds only the buckets of `owned` (a shard of a country, by the
    /// map version it names); `None`: every bucket.
    pub fn hold_buckets(&self, owned: Option<citypay_routing::OwnedBuckets>) {
        *self.owned.write().unwrap_or_else(std::sync::PoisonError::into_inner) = owned;
    }

    /// Submits one command and waits for its durable outcome, at most the reply timeout.
    pub async fn submit(&self, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        let wait = async {
            self.sender.send(Request::Command(command, tx)).await.map_err(|_| SubmitError::Unavailable)?;
            let (reply, epoch) = rx.await.map_err(|_| SubmitError::Unavailable)?;
            if reply.is_ok() {
                answered_by(epoch);
            }
            reply
        };
        match tokio::time::timeout(self.reply_timeout, wait).await {
            Ok(reply) => reply,
            Err(_) => Err(SubmitError::Timeout(self.reply_timeout)),
        }
    }

    /// Submits one command from a thread that is not async; blocks until the outcome.
    pub fn submit_blocking(&self, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.sender.blocking_send(Request::Command(command, tx)).map_err(|_| SubmitError::Unavailable)?;
        rx.blocking_recv().map_err(|_| SubmitError::Unavailable)?.0
    }

    /// An account's committed state, read in order with the commands before it.
    pub async fn account(&self, id: AccountId) -> Result<Option<Account>, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.sender.send(Request::Account(id, tx)).await.map_err(|_| SubmitError::Unavailable)?;
        rx.await.map_err(|_| SubmitError::Unavailable)
    }

    /// Blocking twin of [`ShardHandle::account`].
    pub fn account_blocking(&self, id: AccountId) -> Result<Option<Account>, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.sender.blocking_send(Request::Account(id, tx)).map_err(|_| SubmitError::Unavailable)?;
        rx.blocking_recv().map_err(|_| SubmitError::Unavailable)
    }
}

/// Creates a handle served by no writer of its own: its requests come out of the [`Relay`]
/// one by one, to be passed to a writer of this process ([`Relayed::pass_to`]) or forwarded
/// to the writer of another. The services hold the handle and never know which.
pub fn relay(queue_max: usize, reply_timeout: Duration) -> (ShardHandle, Relay) {
    let (sender, receiver) = mpsc::channel(queue_max);
    // A relay's handle holds nothing itself: the writer it forwards to checks the buckets.
    (ShardHandle { sender, reply_timeout, owned: Owned::default() }, Relay { receiver })
}

/// Where the requests sent to a [`relay`] handle come out.
#[derive(Debug)]
pub struct Relay {
    receiver: mpsc::Receiver<Request>,
}

/// A request taken from a [`Relay`]: to pass on, or to answer.
#[derive(Debug)]
pub enum Relayed {
    /// A command, and where its reply goes.
    Command(Command, Responder<Reply>),
    /// A read of an account's committed state, and where it goes.
    Account(AccountId, Responder<Result<Option<Account>, SubmitError>>),
}

/// Where one answer goes. Dropping it unanswered tells the caller the writer is unavailable.
#[derive(Debug)]
pub struct Responder<T>(ResponderKind<T>);

#[derive(Debug)]
enum ResponderKind<T> {
    Reply(oneshot::Sender<Answered>, std::marker::PhantomData<T>),
    Account(oneshot::Sender<Option<Account>>),
}

impl Responder<Reply> {
    /// Sends the reply of the writer of `epoch`.
    pub fn answer(self, reply: Reply, epoch: i64) {
        if let ResponderKind::Reply(sender, _) = self.0 {
            let _ = sender.send((reply, epoch));
        }
    }
}

impl Responder<Result<Option<Account>, SubmitError>> {
    /// Sends the account; an error drops the request, which its caller sees as unavailable.
    pub fn answer(self, account: Result<Option<Account>, SubmitError>) {
        if let (ResponderKind::Account(sender), Ok(account)) = (self.0, account) {
            let _ = sender.send(account);
        }
    }
}

impl Relay {
    /// The next request; `None` once every handle is gone.
    pub async fn next(&mut self) -> Option<Relayed> {
        loop {
            match self.receiver.recv().await? {
                Request::Command(command, reply) => {
                    return Some(Relayed::Command(command, Responder(ResponderKind::Reply(reply, std::marker::PhantomData))));
                }
                Request::Account(id, reply) => return Some(Relayed::Account(id, Responder(ResponderKind::Account(reply)))),
                // Only a shard's own handle stops its writer.
                Request::Stop => {}
            }
        }
    }
}

impl Relayed {
    /// Hands the request to a writer of this process, which answers it directly; waits while
    /// its queue is full. A writer that stopped answers nothing: the caller sees it as
    /// unavailable.
    pub async fn pass_to(self, writer: &ShardHandle) {
        let request = match self {
            Relayed::Command(command, Responder(ResponderKind::Reply(reply, _))) => Request::Command(command, reply),
            Relayed::Account(id, Responder(ResponderKind::Account(reply))) => Request::Account(id, reply),
            _ => return,
        };
        let _ = writer.sender.send(request).await;
    }
}

/// Rebuilds the ledger from storage and checks the books before serving anything.
fn load(store: &mut dyn LedgerStore, config: ShardConfig) -> Result<(Ledger, u64), StoreError> {
    let snapshot = store.load()?;
    let ledger = Ledger::restore(
        LedgerConfig { recent_ids_max: config.recent_ids_max },
        snapshot.accounts,
        snapshot.open_pending,
        snapshot.stored_id_max,
        snapshot.last_timestamp,
    );
    let violations = ledger.check_invariants();
    if !violations.is_empty() {
        return Err(StoreError::Corrupt(format!("the stored books do not balance: {violations:?}")));
    }
    Ok((ledger, snapshot.last_batch))
}

struct Writer {
    store: Box<dyn LedgerStore>,
    ledger: Ledger,
    last_batch: u64,
    config: ShardConfig,
    clock: Box<dyn Clock>,
    stats: Arc<ShardStats>,
    sealer: Option<seal::Sealer>,
    /// A deliberate bug that only [`SteppedShard::plant_ack_before_commit`] sets: answers go
    /// out before the commit, so a failed commit leaves acknowledged work undone. The
    /// simulator must find it.
    ack_before_commit: bool,
    /// The fencing epoch this writer's store took (set once it is known; 0 without one).
    epoch: Arc<std::sync::atomic::AtomicI64>,
    /// The buckets it holds (see [`ShardHandle::hold_buckets`]).
    owned: Owned,
    /// Sends a committed batch's answers off the writer's thread (a running shard's); without
    /// it, the writer sends them itself (a stepped shard, whose answers arrive with its step).
    answerer: Option<Answerer>,
}

/// The largest batch the writer answers itself: a small one (light load) is answered sooner
/// without a hand-over, a larger one (the writer saturated) frees the writer sooner with it.
const ANSWERED_HERE_MAX: usize = 128;

/// A committed batch's callers, each with its answer.
type AnsweredBatch = Vec<(oneshot::Sender<Answered>, Answered)>;

/// A thread that sends committed batches' answers, in order: waking each caller of a large
/// batch costs the writer's thread more than handing the batch over once.
struct Answerer {
    /// Taken when the answerer is dropped, which ends the thread once it has sent the rest.
    batches: Option<std::sync::mpsc::Sender<AnsweredBatch>>,
    thread: Option<JoinHandle<()>>,
}

impl Answerer {
    fn start() -> Result<Answerer, StoreError> {
        let (batches, receive) = std::sync::mpsc::channel::<AnsweredBatch>();
        let thread = std::thread::Builder::new()
            .name("shard-answers".into())
            .spawn(move || {
                for batch in receive {
                    for (reply, answer) in batch {
                        let _ = reply.send(answer);
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the answering thread: {e}")))?;
        Ok(Answerer { batches: Some(batches), thread: Some(thread) })
    }

    /// Hands the answers over; sends them here if the thread is gone.
    fn answer(&self, answers: AnsweredBatch) {
        let unsent = match &self.batches {
            Some(batches) => batches.send(answers).err().map(|e| e.0),
            None => Some(answers),
        };
        for (reply, answer) in unsent.into_iter().flatten() {
            let _ = reply.send(answer);
        }
    }
}

impl Drop for Answerer {
    /// Every answer handed over is sent before the writer's thread ends.
    fn drop(&mut self) {
        drop(self.batches.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One batch being processed: the commands, and where to answer.
#[derive(Default)]
struct Batch {
    commands: Vec<Command>,
    replies: Vec<oneshot::Sender<Answered>>,
    reads: Vec<(AccountId, oneshot::Sender<Option<Account>>)>,
}

/// The rows written by earlier commands of a batch, findable by the columns of any guard's
/// key (not only a table's key: a guard on a unique column sees them too). Each row is indexed
/// under every key shape the batch's guards look up in its table, by the values of those
/// columns, so a guard finds the latest such row in one lookup however many rows share a
/// column with it (a busy shop's trades share its merchant id).
#[derive(Default)]
struct WrittenRows<'a> {
    rows: Vec<&'a ServiceRow>,
    /// Each key shape (table, column names) some guard of the batch looks rows up by.
    shapes: Vec<(&'static str, Vec<&'static str>)>,
    /// (shape, the row's values of its columns) → the latest row with them.
    latest: FxHashMap<(usize, Vec<&'a Value>), usize>,
}

impl<'a> WrittenRows<'a> {
    fn new(commands: &[Command]) -> WrittenRows<'a> {
        let mut shapes: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for guard in commands.iter().flat_map(|c| &c.guards) {
            let (Guard::Absent { table, key } | Guard::Matches { table, key, .. }) = guard else { continue };
            let names: Vec<&'static str> = key.iter().map(|(name, _)| *name).collect();
            if !names.is_empty() && !shapes.iter().any(|(t, n)| t == table && *n == names) {
                shapes.push((table, names));
            }
        }
        WrittenRows { rows: Vec::new(), shapes, latest: FxHashMap::default() }
    }

    fn add(&mut self, row: &'a ServiceRow) {
        let index = self.rows.len();
        let mut indexed = false;
        for (shape, (table, names)) in self.shapes.iter().enumerate() {
            if *table != row.table {
                continue;
            }
            let values: Option<Vec<&'a Value>> = names
                .iter()
                .map(|name| row.key.iter().chain(&row.columns).find(|(n, _)| n == name).map(|(_, value)| value))
                .collect();
            if let Some(values) = values {
                self.latest.insert((shape, values), index);
                indexed = true;
            }
        }
        // Rows no guard of the batch can find are not kept.
        if indexed {
            self.rows.push(row);
        }
    }

    /// The latest written row of `table` whose columns include all of `key`.
    fn latest(&self, table: &'static str, key: &[(&'static str, Value)]) -> Option<&'a ServiceRow> {
        let shape = self.shapes.iter().position(|(t, names)| *t == table && names.len() == key.len() && names.iter().zip(key).all(|(n, (name, _))| n == name))?;
        let values: Vec<&Value> = key.iter().map(|(_, value)| value).collect();
        self.latest.get(&(shape, values)).map(|index| self.rows[*index])
    }
}

impl Writer {
    fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build();
        let Ok(runtime) = runtime else { return };
        let mut batch = Batch::default();
        let keep_alive_every = self.store.keep_alive_every();
        // Renewed at once: a new writer's first lease covered its load, not its time to live.
        let mut renewed = keep_alive_every.and_then(|every| std::time::Instant::now().checked_sub(every)).unwrap_or_else(std::time::Instant::now);
        loop {
            let deadline = self.ledger.next_deadline().map(|deadline| {
                let now = self.clock.now();
                Duration::from_nanos(deadline.0.saturating_sub(now.0))
            });
            let renewal = keep_alive_every.map(|every| every.saturating_sub(renewed.elapsed()));
            let wait = match (deadline, renewal) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = runtime.block_on(async {
                match wait {
                    None => Some(receiver.recv().await),
                    Some(wait) => tokio::time::timeout(wait, receiver.recv()).await.ok(),
                }
            });
            let mut stop = match first {
                // Woken by a deadline: run an empty batch so the ledger expires what is due.
                None => false,
                Some(None) => true,
                Some(Some(request)) => batch.push(request),
            };
            while !stop && batch.commands.len() < self.config.batch_max {
                match receiver.try_recv() {
                    Ok(request) => stop = batch.push(request),
                    Err(_) => break,
                }
            }
            let committed = self.stats.batches.load(Ordering::Relaxed);
            if !self.process(&mut batch) || stop {
                return;
            }
            if self.stats.batches.load(Ordering::Relaxed) != committed {
                // A commit renews the lease too.
                renewed = std::time::Instant::now();
            } else if keep_alive_every.is_some_and(|every| renewed.elapsed() >= every) {
                if let Err(error) = self.store.keep_alive() {
                    // Without its lease this writer may no longer be the database's: stop,
                    // so that nothing more is acknowledged; another writer takes over.
                    tracing::warn!(%error, "the writer's lease could not be renewed; stopping");
                    return;
                }
                renewed = std::time::Instant::now();
            }
        }
    }

    /// Applies, commits and answers one batch. Returns false when the writer must stop.
    fn process(&mut self, batch: &mut Batch) -> bool {
        let keep_running = self.commit_batch(batch);
        for (id, reply) in batch.reads.drain(..) {
            let _ = reply.send(self.ledger.account(id).copied());
        }
        keep_running
    }

    /// Answers, and takes out of the batch, every command that touches an account of a bucket
    /// this shard does not hold: a server with a stale map never writes on the wrong shard.
    fn refuse_foreign(&self, batch: &mut Batch) {
        let owned = self.owned.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(owned) = owned.as_ref() else { return };
        let mut i = 0;
        while i < batch.commands.len() {
            let command = &batch.commands[i];
            // A move's own command may touch the buckets frozen here; only it looks.
            let foreign = command.event.as_ref().and_then(|event| {
                let accounts = accounts_named(event);
                owned.first_foreign(accounts.iter().copied())?;
                owned.first_foreign_for(accounts, command.guards.contains(&Guard::DuringMove))
            });
            match foreign {
                Some(bucket) => {
                    batch.commands.remove(i);
                    let reply = batch.replies.remove(i);
                    let moving = owned.is_frozen(bucket);
                    let _ = reply.send((Err(SubmitError::NotOwned { bucket: bucket.0, map_version: owned.version, moving }), self.epoch()));
                }
                None => i += 1,
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Batch) -> bool {
        self.refuse_foreign(batch);
        if batch.commands.is_empty() && self.ledger.next_deadline().is_none_or(|d| d > self.clock.now()) {
            return true;
        }
        let verdicts = match self.check_guards(&batch.commands) {
            Ok(verdicts) => verdicts,
            Err(error) => return self.fail(batch, &error),
        };
        let has_event: Vec<bool> = batch.commands.iter().map(|c| c.event.is_some()).collect();
        // The events of the commands whose guards held, in order.
        let events: Vec<Event> = batch
            .commands
            .iter_mut()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_none())
            .filter_map(|(command, _)| command.event.take())
            .collect();
        let ids = self.ledger.ids_to_look_up(&events);
        let stored = match self.store.lookup(&ids) {
            Ok(stored) => stored,
            Err(error) => return self.fail(batch, &error),
        };
        let effects = self.ledger.apply(&events, self.clock.now(), &stored);
        let answers = answers(&has_event, &verdicts, &effects.outcomes);
        let mut rows: Vec<ServiceRow> = Vec::new();
        for (command, answer) in batch.commands.iter_mut().zip(&answers) {
            let Ok(outcome) = answer else { continue };
            if !outcome.replay {
                rows.append(&mut command.always_rows);
            }
            if outcome.status == Status::Ok && !outcome.replay {
                rows.append(&mut command.rows);
            }
        }
        let batch_number = self.last_batch + 1;
        let seal = self.sealer.as_ref().map(|s| s.key.seal_rows(&s.previous_mac(), batch_number, &effects.journal));
        rows.extend(seal.as_ref().map(seal::seal_row));
        let write = BatchWrite { batch: batch_number, effects: &effects, rows: &rows };
        if self.ack_before_commit {
            for (reply, answer) in batch.replies.drain(..).zip(answers.iter().cloned()) {
                let _ = reply.send((answer, self.epoch()));
            }
        }
        let committing = std::time::Instant::now();
        let committed = self.store.commit(&write);
        metrics::histogram!("citypay_commit_seconds").record(committing.elapsed().as_secs_f64());
        match committed {
            Ok(()) => {
                tracing::trace!(batch = batch_number, commands = batch.replies.len(), events = events.len(), rows = rows.len(), "batch committed");
                self.last_batch += 1;
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.commands.fetch_add(batch.replies.len() as u64, Ordering::Relaxed);
                let epoch = self.epoch();
                let answered = batch.replies.drain(..).zip(answers.into_iter().map(|answer| (answer, epoch)));
                match &self.answerer {
                    Some(answerer) if batch.commands.len() > ANSWERED_HERE_MAX => answerer.answer(answered.collect()),
                    _ => answered.for_each(|(reply, answer)| {
                        let _ = reply.send(answer);
                    }),
                }
                // The head outside the database may lag a batch (the audit allows that); the
                // answers need not wait for it.
                self.sealed(seal);
                self.ledger.commit(effects);
                batch.clear();
                true
            }
            Err(error) => {
                tracing::debug!(batch = batch_number, commands = batch.replies.len(), %error, may_have_committed = error.may_have_committed(), "batch commit failed");
                self.ledger.rollback(effects);
                if error.may_have_committed() {
                    // Memory cannot know what the disk has now: reload it from the disk.
                    match load(self.store.as_mut(), self.config) {
                        Ok((ledger, last_batch)) => {
                            (self.ledger, self.last_batch) = (ledger, last_batch);
                            // The batch did commit after all: its seal is the newest.
                            if last_batch == batch_number {
                                self.sealed(seal);
                            }
                        }
                        Err(reload) => {
                            // Memory and disk may disagree and the disk cannot say how: stop
                            // rather than go on from a guess.
                            self.fail(batch, &reload);
                            return false;
                        }
                    }
                }
                self.fail(batch, &error)
            }
        }
    }

    /// A committed batch's seal becomes the one the next chains to, and the head.
    fn sealed(&mut self, seal: Option<seal::Seal>) {
        if let (Some(sealer), Some(seal)) = (self.sealer.as_mut(), seal) {
            sealer.committed(seal);
        }
    }

    /// For each command, the index of its first guard that does not hold, if any. Rows of
    /// earlier commands in the batch count as written, even if their event later fails: a
    /// guard may fail needlessly (the caller retries), never pass wrongly. Only rows of tables
    /// that some guard of the batch reads are tracked, commands with no guards included.
    fn check_guards(&mut self, commands: &[Command]) -> Result<Vec<Option<usize>>, StoreError> {
        let mut written = WrittenRows::new(commands);
        let mut verdicts = Vec::with_capacity(commands.len());
        for command in commands {
            let mut verdict = None;
            for (index, guard) in command.guards.iter().enumerate() {
                if !self.guard_holds(guard, &written)? {
                    verdict = Some(index);
                    break;
                }
            }
            if verdict.is_none() {
                for row in command.rows.iter().chain(&command.always_rows) {
                    written.add(row);
                }
            }
            verdicts.push(verdict);
        }
        Ok(verdicts)
    }

    fn guard_holds(&mut self, guard: &Guard, written: &WrittenRows) -> Result<bool, StoreError> {
        match guard {
            Guard::Absent { table, key } => {
                if written.latest(table, key).is_some() {
                    return Ok(false);
                }
                Ok(self.store.read_row(table, key, &[])?.is_none())
            }
            Guard::Matches { table, key, expect } => {
                let in_batch = written.latest(table, key);
                let in_batch: Option<Vec<&(&'static str, Value)>> = in_batch.map(|row| row.key.iter().chain(&row.columns).collect());
                let names: Vec<&'static str> = expect.iter().map(|(n, _)| *n).collect();
                let mut stored: Option<Vec<Value>> = None;
                for (i, (name, want)) in expect.iter().enumerate() {
                    let from_batch = in_batch.as_ref().and_then(|cols| cols.iter().find(|(n, _)| n == name));
                    let have = match from_batch {
                        Some((_, value)) => Some(value.clone()),
                        None => {
                            if stored.is_none() {
                                stored = Some(self.store.read_row(table, key, &names)?.unwrap_or_default());
                            }
                            stored.as_ref().and_then(|row| row.get(i).cloned())
                        }
                    };
                    if have.as_ref() != Some(want) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Guard::DuringMove => Ok(true),
        }
    }

    /// Answers every command of the batch with an error. Returns false when the error means
    /// this writer must stop (another writer owns the database).
    fn fail(&mut self, batch: &mut Batch, error: &StoreError) -> bool {
        self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
        let message = error.to_string();
        for reply in batch.replies.drain(..) {
            let _ = reply.send((Err(SubmitError::CommitFailed(message.clone())), self.epoch()));
        }
        batch.clear();
        !matches!(error, StoreError::Fenced { .. } | StoreError::Locked { .. } | StoreError::Corrupt(_))
    }
}

/// The accounts an event names. A post or void names none: its pending transfer was checked
/// when it was made (a bucket moves only once its pending transfers are drained).
fn accounts_named(event: &Event) -> Vec<AccountId> {
    match event {
        Event::CreateAccount(account) => vec![account.id],
        Event::Transfer(transfer) => vec![transfer.leg.debit, transfer.leg.credit],
        Event::Entry(entry) => entry.legs.iter().flat_map(|leg| [leg.debit, leg.credit]).collect(),
        Event::SetLimits(limits) => vec![limits.account],
        Event::CarryUsage(carry) => vec![carry.account],
        Event::PostPending(_) | Event::VoidPending(_) => Vec::new(),
    }
}

impl Batch {
    /// Adds a request; returns true when it asks the writer to stop.
    fn push(&mut self, request: Request) -> bool {
        match request {
            Request::Command(command, reply) => {
                self.commands.push(command);
                self.replies.push(reply);
                false
            }
            Request::Account(id, reply) => {
                self.reads.push((id, reply));
                false
            }
            Request::Stop => true,
        }
    }

    fn clear(&mut self) {
        self.commands.clear();
        self.replies.clear();
    }
}

/// Each command's answer: its guard failure, its ledger outcome, or `ok` for a rows-only
/// command. `outcomes` has one entry per command that reached the ledger, in order.
fn answers(has_event: &[bool], verdicts: &[Option<usize>], outcomes: &[Outcome]) -> Vec<Reply> {
    let mut outcomes = outcomes.iter();
    let answers: Vec<Reply> = has_event
        .iter()
        .zip(verdicts)
        .map(|(has_event, verdict)| match (verdict, has_event) {
            (Some(guard), _) => Err(SubmitError::GuardFailed { guard: *guard }),
            (None, true) => Ok(*outcomes.next().expect("one outcome per applied event")),
            (None, false) => Ok(Outcome::new(Status::Ok)),
        })
        .collect();
    assert!(outcomes.next().is_none(), "every outcome belongs to a command");
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypay_store::OnConflict;

    fn trade(id: i64, merchant: i64, number: &str, status: &str) -> ServiceRow {
        ServiceRow {
            table: "trades",
            key: vec![("id", Value::Int(id))],
            columns: vec![("merchant_id", Value::Int(merchant)), ("out_trade_no", Value::Text(number.into())), ("status", Value::Text(status.into()))],
            on_conflict: OnConflict::Update,
        }
    }

    fn guarded(guard: Guard) -> Command {
        Command { event: None, guards: vec![guard], rows: Vec::new(), always_rows: Vec::new() }
    }

    fn by_number(merchant: i64, number: &str) -> Vec<(&'static str, Value)> {
        vec![("merchant_id", Value::Int(merchant)), ("out_trade_no", Value::Text(number.into()))]
    }

    #[test]
    fn written_rows_are_found_by_every_guard_key_the_batch_uses() {
        let commands = [
            guarded(Guard::Absent { table: "trades", key: by_number(1, "x") }),
            guarded(Guard::Matches { table: "trades", key: vec![("id", Value::Int(1_002))], expect: Vec::new() }),
        ];
        // A busy shop: many rows share its merchant id, one of them has the number asked for.
        let rows: Vec<ServiceRow> = (0..500)
            .map(|i| trade(i, 1, &format!("n{i}"), "WAIT"))
            .chain([trade(1_002, 1, "ab", "WAIT"), trade(1_002, 1, "ab", "PAID"), trade(2_002, 2, "ab", "WAIT")])
            .collect();
        let notes = ServiceRow { table: "notes", key: vec![("id", Value::Int(1))], columns: Vec::new(), on_conflict: OnConflict::Fail };
        let mut written = WrittenRows::new(&commands);
        for row in rows.iter().chain([&notes]) {
            written.add(row);
        }
        // The latest row with both columns, of the right merchant, however many share one.
        let found = written.latest("trades", &by_number(1, "ab")).unwrap();
        assert_eq!(found.columns[2].1, Value::Text("PAID".into()));
        assert_eq!(written.latest("trades", &by_number(2, "ab")).unwrap().columns[2].1, Value::Text("WAIT".into()));
        assert!(written.latest("trades", &by_number(1, "nope")).is_none());
        assert!(written.latest("trades", &by_number(3, "ab")).is_none());
        // By the table's key too; a key shape no guard of the
        // batch uses, and a table none reads, are not indexed.
        assert_eq!(written.latest("trades", &[("id", Value::Int(1_002))]).unwrap().columns[2].1, Value::Text("PAID".into()));
        assert!(written.latest("trades", &[("out_trade_no", Value::Text("ab".into()))]).is_none());
        assert!(written.latest("notes", &[("id", Value::Int(1))]).is_none());
        assert!(written.latest("trades", &[]).is_none());
    }
}
