//! Deterministic simulation of the write path and the services under faults.
//!
//! One seed fixes a whole run: the people (drawn by `citypay-sim` from the seed), what each of
//! the clients does and when, which waiting commands make each batch and in what order, which
//! commits fail (refused, or committed and reported lost), when a batch is held back, and when
//! the process is torn down and started again from its database file. Nothing runs on another
//! thread and nothing reads the wall clock: the harness polls the clients' futures itself, steps
//! the writer ([`citypay_shard::SteppedShard`]) one batch at a time over the real SQLite store
//! wrapped in its faulty twin, and moves a manual clock. So a seed that fails replays bit for
//! bit, and [`Report::digest`] (a hash of every batch and its answers) proves it.
//!
//! After every step it checks what must always hold: the books balance with pending amounts
//! counted, no wallet is below zero, and each client's wallet holds what the answers it was
//! given say (the work of a request whose answer it has not had yet either happened or did
//! not). At every restart and at the end, everything acknowledged is found in the reopened
//! database, and every trade, refund and bill a client was told about agrees with it. A
//! client retries a request whose outcome it does not know under the same keys, and now and
//! then repeats one it knows: every repeat of a success must answer that success. A refusal
//! is decided anew by the services when the same request comes again (a QR payment refused
//! for want of money pays once the wallet is topped up; the HTTP API's `Idempotency-Key`
//! store is what makes a refusal final for its callers), so a repeat after one may answer
//! otherwise, and what it moves then counts.

mod city;
mod client;
mod transit;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use citypay_shard::{Clock, ManualClock, SubmitError};
use citypay_store_conformance::CommitFault;

use city::City;
use client::Client;

/// What to simulate.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The seed: the same seed runs the same simulation.
    pub seed: u64,
    /// Clients acting at once (at least 8).
    pub clients: usize,
    /// Writer steps (batches, held-back batches included).
    pub steps: u32,
    /// Plants a deliberate bug in the writer (answers before the commit), to show the
    /// simulator finds one.
    pub plant_ack_before_commit: bool,
}

impl Config {
    /// The configuration CI runs for `seed`: 8 to 15 clients, 300 steps.
    pub fn for_seed(seed: u64) -> Config {
        Config { seed, clients: 8 + usize::try_from(seed % 8).unwrap_or(0), steps: 300, plant_ack_before_commit: false }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Writer steps taken.
    pub steps: u32,
    /// Batches committed (as the writer counts them, lost ones that did commit included).
    pub batches: u64,
    /// Commands answered with a ledger outcome or an error.
    pub commands: u64,
    /// Client requests that got a known answer (first answers and repeats).
    pub operations: u64,
    /// Repeats of a request that already had its answer, each checked against it.
    pub repeats: u64,
    /// Retries of a request whose outcome was unknown.
    pub retries: u64,
    /// Commits refused.
    pub refused: u64,
    /// Commits that committed and were reported lost.
    pub lost: u64,
    /// Batches held back.
    pub held: u64,
    /// Restarts.
    pub restarts: u64,
    /// Trips by ride code.
    pub rides: u64,
    /// Days ended (taps uploaded, fares run, the day settled).
    pub days: u64,
    /// A hash of every batch and its answers, in order.
    pub digest: u64,
}

impl Report {
    /// Adds another run's counts to these (the digest is not summed).
    pub fn add(&mut self, other: &Report) {
        self.steps += other.steps;
        self.batches += other.batches;
        self.commands += other.commands;
        self.operations += other.operations;
        self.repeats += other.repeats;
        self.retries += other.retries;
        self.refused += other.refused;
        self.lost += other.lost;
        self.held += other.held;
        self.restarts += other.restarts;
        self.rides += other.rides;
        self.days += other.days;
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps, {} batches, {} commands, {} operations ({} repeats, {} retries), {} commits refused, {} lost, {} batches held, {} restarts, {} rides, {} days ended",
            self.steps, self.batches, self.commands, self.operations, self.repeats, self.retries, self.refused, self.lost, self.held, self.restarts, self.rides, self.days
        )
    }
}

/// A broken invariant, with the seed that replays it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("seed {seed}, step {step}: {message} (replay with CITYPAY_SIM_SEED={seed})")]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step after which the check failed.
    pub step: u32,
    /// What did not hold.
    pub message: String,
}

/// Runs one seed.
pub fn run(config: Config) -> Result<Report, Failure> {
    assert!(config.clients >= 8, "at least 8 clients act at once");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    // Futures are polled here, not spawned; the runtime only lends them its timer, which never
    // fires because it is never driven.
    let _entered = runtime.enter();
    Simulation::new(config, &runtime)?.run()
}

/// Per mille: how often things happen in a step.
mod odds {
    /// A batch is held back (nothing committed this step).
    pub(crate) const HOLD: u32 = 60;
    /// A commit is refused.
    pub(crate) const REFUSE: u32 = 50;
    /// A commit goes through and is reported lost.
    pub(crate) const LOSE: u32 = 50;
    /// The process is torn down and started again after a step.
    pub(crate) const RESTART: u32 = 15;
    /// The process is torn down right after a commit reported lost.
    pub(crate) const RESTART_AFTER_LOSS: u32 = 300;
    /// The city's day ends: the clock moves to the next morning and the back office settles
    /// the day that closed.
    pub(crate) const NEXT_DAY: u32 = 6;
    /// A client with a phone takes the metro, if not already on it.
    pub(crate) const RIDE: u32 = 30;
    /// An idle client starts a request.
    pub(crate) const START: u32 = 700;
    /// A client whose request's outcome is unknown retries it now (else later).
    pub(crate) const RETRY: u32 = 600;
    /// A client repeats a request that has its answer.
    pub(crate) const REPEAT: u32 = 150;
}

/// The end of a day, each stage retried until its answer is known: the validators upload
/// the day's taps, the fare run debits the riders, and the day is settled.
struct Office {
    date: citypay_ledger::LocalDate,
    service_day: i64,
    /// Each gate's taps of the day, drained from the device when the day ended.
    taps: Vec<Vec<citypay_ride::Tap>>,
    stage: Stage,
    job: Option<StageJob>,
}

/// A stage in flight: its answer, or why not (empty: unknown, try again).
type StageJob = Pin<Box<dyn Future<Output = Result<Done, String>>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Upload(usize),
    Fares,
    Settle,
    Done,
}

/// What a finished stage says.
enum Done {
    Stage,
    /// What the fare run took from each client's wallet.
    Fared(Vec<i64>),
}

struct Simulation<'r> {
    runtime: &'r tokio::runtime::Runtime,
    office: Option<Office>,
    network: transit::Network,
    config: Config,
    rng: fastrand::Rng,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: ManualClock,
    bank: citypay_directory::SandboxBank,
    city: Option<City>,
    clients: Vec<Client>,
    report: Report,
    hasher: xxhash_rust::xxh3::Xxh3,
    step: u32,
}

impl<'r> Simulation<'r> {
    fn new(config: Config, runtime: &'r tokio::runtime::Runtime) -> Result<Simulation<'r>, Failure> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("city.db");
        let clock = ManualClock::new(city::START);
        let bank = citypay_directory::SandboxBank::new();
        let mut simulation = Simulation {
            runtime,
            office: None,
            network: transit::Network { gates: Vec::new() },
            config,
            rng: fastrand::Rng::with_seed(config.seed),
            _dir: dir,
            path,
            clock,
            bank,
            city: None,
            clients: Vec::new(),
            report: Report { seed: config.seed, ..Report::default() },
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            step: 0,
        };
        simulation.open()?;
        let city = simulation.city.as_ref().expect("just opened").services.clone();
        let setup = city::set_up(city, config.seed, config.clients, simulation.bank.clone());
        let (clients, network) = simulation.settle(Box::pin(setup))?.map_err(|message| simulation.failure(format!("set-up: {message}")))?;
        simulation.clients = clients;
        simulation.network = network;
        Ok(simulation)
    }

    fn failure(&self, message: String) -> Failure {
        Failure { seed: self.config.seed, step: self.step, message }
    }

    /// Opens the database file and starts a fresh process's worth of memory over it.
    fn open(&mut self) -> Result<(), Failure> {
        let city = City::open(&self.path, self.clock.clone(), self.bank.clone(), self.config.seed).map_err(|e| self.failure(format!("reopening: {e}")))?;
        self.city = Some(city);
        if self.config.plant_ack_before_commit {
            self.city_mut().shard.plant_ack_before_commit();
        }
        Ok(())
    }

    fn city_mut(&mut self) -> &mut City {
        self.city.as_mut().expect("the city is open")
    }

    /// Runs a future to its end with no faults, every waiting command committed each step:
    /// for the set-up and the final checks.
    fn settle<T>(&mut self, mut future: Pin<Box<dyn Future<Output = T>>>) -> Result<T, Failure> {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..100_000 {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return Ok(value);
            }
            self.step_everything()?;
        }
        Err(self.failure("a fault-free future never finished".into()))
    }

    /// A fault-free step: every waiting command in one batch, in the order it came.
    fn step_everything(&mut self) -> Result<citypay_shard::Step, Failure> {
        let city = self.city.as_mut().expect("the city is open");
        let waiting = city.shard.collect();
        let pick: Vec<usize> = (0..waiting).collect();
        let step = city.shard.step(&pick);
        // Tasks the services spawned (the settlement's payouts) take in their answers.
        self.runtime.block_on(tokio::task::yield_now());
        if !step.running {
            return Err(self.failure("the writer stopped without a fault".into()));
        }
        Ok(step)
    }

    fn run(mut self) -> Result<Report, Failure> {
        for _ in 0..self.config.steps {
            self.step += 1;
            self.act()?;
            self.write()?;
            self.check_step()?;
            self.clock.set(self.clock.now().plus_seconds(self.rng.u64(0..4)));
        }
        self.finish()?;
        self.report.digest = self.hasher.digest();
        Ok(self.report)
    }

    /// Each client, in an order the seed picks, starts, retries, repeats or goes on with its
    /// request.
    fn act(&mut self) -> Result<(), Failure> {
        if self.office.as_ref().is_none_or(|o| o.stage == Stage::Done) && self.rng.u32(0..1000) < odds::NEXT_DAY {
            let now = self.clock.now();
            let (date, service_day) = (now.local_date(), citypay_fares::service_day(i64::try_from(now.unix_seconds()).unwrap_or(0)));
            let taps = self.network.gates.iter_mut().map(|g| g.device.drain_taps()).collect();
            self.clock.set(date.next().start().plus_seconds(6 * 3_600 + 1_800));
            self.office = Some(Office { date, service_day, taps, stage: Stage::Upload(0), job: None });
        }
        self.office()?;
        self.ride();
        let mut order: Vec<usize> = (0..self.clients.len()).collect();
        self.rng.shuffle(&mut order);
        let services = self.city.as_ref().expect("the city is open").services.clone();
        let now = self.clock.now().unix_seconds();
        for index in order {
            let rng = &mut self.rng;
            let client = &mut self.clients[index];
            if client.job.is_none() {
                match (&client.intent, client.known) {
                    (None, _) => {
                        if rng.u32(0..1000) < odds::START {
                            client.start(rng, now, &services);
                        }
                    }
                    (Some(_), false) => {
                        if rng.u32(0..1000) < odds::RETRY {
                            self.report.retries += 1;
                            client.resume(&services);
                        }
                    }
                    (Some(_), true) => {
                        if client.may_repeat() && rng.u32(0..1000) < odds::REPEAT {
                            self.report.repeats += 1;
                            client.resume(&services);
                        } else {
                            client.intent = None;
                        }
                    }
                }
            }
            if let Err(message) = client.poll() {
                // Kept for the check after the step.
                client.broken.get_or_insert(message);
            }
        }
        Ok(())
    }

    /// Now and then a client rides the metro between two gates with their phone's code.
    fn ride(&mut self) {
        let now = self.clock.now().unix_seconds();
        let gates = self.network.gates.len();
        for client in &mut self.clients {
            let Some(phone) = client.rider.as_mut() else { continue };
            if now < client.riding_until || gates < 2 || self.rng.u32(0..1000) >= odds::RIDE {
                continue;
            }
            let from = self.rng.usize(..gates);
            let to = (from + 1 + self.rng.usize(..gates - 1)) % gates;
            if self.network.ride(phone, from, to, u32::try_from(now).unwrap_or(u32::MAX)) {
                self.report.rides += 1;
            }
            client.riding_until = now + 121;
        }
    }

    /// Whether the fare run may have debited wallets the clients' books do not show yet.
    fn fares_in_doubt(&self) -> bool {
        self.office.as_ref().is_some_and(|o| o.stage == Stage::Fares)
    }

    /// Starts, retries or goes on with the end of the closed day.
    fn office(&mut self) -> Result<(), Failure> {
        let Some(office) = self.office.as_mut().filter(|o| o.stage != Stage::Done) else { return Ok(()) };
        if office.job.is_none() {
            let services = self.city.as_ref().expect("the city is open").services.clone();
            let unknown = |code: &str, e: &dyn std::fmt::Display| if code == "unavailable" { String::new() } else { e.to_string() };
            office.job = Some(match office.stage {
                Stage::Upload(gate) => {
                    let (info, taps) = (self.network.gates[gate].info.clone(), office.taps[gate].clone());
                    Box::pin(async move {
                        let report = services.transit.upload_taps(&info, &taps).await.map_err(|e| unknown(e.code(), &e))?;
                        match report.refused.first() {
                            // Every tap is a real one: a refusal is the platform's bug.
                            Some((sequence, refusal)) => Err(format!("tap {sequence} of validator {} refused: {}", info.id, refusal.code())),
                            None => Ok(Done::Stage),
                        }
                    })
                }
                Stage::Fares => {
                    let (residents, day) = (self.clients.iter().map(|c| c.resident.clone()).collect::<Vec<_>>(), office.service_day);
                    Box::pin(async move {
                        let run = services.transit.fare_day(day).await.map_err(|e| unknown(e.code(), &e))?;
                        if run.failed > 0 {
                            return Err(String::new());
                        }
                        let mut charged = Vec::new();
                        for resident in &residents {
                            let fared = services.transit.rider_day(resident, day).await.map_err(|e| unknown(e.code(), &e))?;
                            charged.push(fared.map_or(0, |(_, _, charged, _)| charged));
                        }
                        Ok(Done::Fared(charged))
                    })
                }
                Stage::Settle | Stage::Done => {
                    let date = office.date;
                    Box::pin(async move { services.settlement.settle(date).await.map(|_| Done::Stage).map_err(|e| unknown(e.code(), &e)) })
                }
            });
        }
        let job = office.job.as_mut().expect("just started");
        let Poll::Ready(done) = job.as_mut().poll(&mut Context::from_waker(Waker::noop())) else { return Ok(()) };
        office.job = None;
        match done {
            Ok(done) => {
                if let Done::Fared(charged) = done {
                    for (client, charged) in self.clients.iter_mut().zip(charged) {
                        client.balance -= charged;
                    }
                }
                office.stage = match office.stage {
                    Stage::Upload(gate) if gate + 1 < office.taps.len() => Stage::Upload(gate + 1),
                    Stage::Upload(_) => Stage::Fares,
                    Stage::Fares => Stage::Settle,
                    Stage::Settle | Stage::Done => {
                        self.report.days += 1;
                        Stage::Done
                    }
                };
            }
            Err(message) if message.is_empty() => {}
            Err(message) => {
                let message = format!("the settlement of {}: {message}", office.date);
                return Err(self.failure(message));
            }
        }
        Ok(())
    }

    /// One writer step: the seed picks the batch from what waits, may hold it back or make
    /// its commit fail, and may tear the process down after it.
    fn write(&mut self) -> Result<(), Failure> {
        let city = self.city.as_mut().expect("the city is open");
        let waiting = city.shard.collect();
        let roll = self.rng.u32(0..1000);
        let mut pick: Vec<usize> = (0..waiting).collect();
        self.rng.shuffle(&mut pick);
        pick.truncate(self.rng.usize(0..=waiting.min(64)));
        if roll < odds::HOLD {
            pick.clear();
            self.report.held += 1;
        }
        let fault_roll = self.rng.u32(0..1000);
        let fault = if pick.is_empty() {
            None
        } else if fault_roll < odds::REFUSE {
            Some(CommitFault::Refuse)
        } else if fault_roll < odds::REFUSE + odds::LOSE {
            Some(CommitFault::CommitThenLose)
        } else {
            None
        };
        if let Some(fault) = fault {
            city.faults.lock().expect("the fault queue").push(fault);
            match fault {
                CommitFault::Refuse => self.report.refused += 1,
                CommitFault::CommitThenLose => self.report.lost += 1,
            }
        }
        let step = city.shard.step(&pick);
        // Tasks the services spawned (the settlement's payouts) take in their answers.
        self.runtime.block_on(tokio::task::yield_now());
        // An injected fault the batch never reached (an empty batch) is dropped.
        city.faults.lock().expect("the fault queue").clear();
        self.hasher.update(&step.last_batch.to_le_bytes());
        for (id, answer) in &step.answers {
            self.hasher.update(&id.unwrap_or(0).to_le_bytes());
            self.hasher.update(reply_code(answer).as_bytes());
        }
        self.report.commands += u64::try_from(step.answers.len()).unwrap_or(0);
        self.report.batches = step.last_batch;
        let restart_odds = if fault == Some(CommitFault::CommitThenLose) { odds::RESTART_AFTER_LOSS } else { odds::RESTART };
        if !step.running || self.rng.u32(0..1000) < restart_odds {
            self.restart()?;
        }
        Ok(())
    }

    /// Tears the process down (every client's request in flight is cut off: its outcome is
    /// unknown to it) and opens the database file again.
    fn restart(&mut self) -> Result<(), Failure> {
        self.report.restarts += 1;
        for client in &mut self.clients {
            client.job = None;
        }
        if let Some(office) = self.office.as_mut() {
            office.job = None;
        }
        self.city = None;
        self.open()?;
        self.check_durable()
    }

    /// What must hold after every step.
    fn check_step(&mut self) -> Result<(), Failure> {
        // Answers that arrived in this step.
        for index in 0..self.clients.len() {
            if let Err(message) = self.clients[index].poll() {
                self.clients[index].broken.get_or_insert(message);
            }
            let client = &mut self.clients[index];
            self.report.operations += client.take_answered();
            if let Some(message) = client.broken.take() {
                return Err(self.failure(message));
            }
        }
        let city = self.city.as_ref().expect("the city is open");
        let ledger = city.shard.ledger();
        let violations = ledger.check_invariants();
        if !violations.is_empty() {
            return Err(self.failure(format!("the books do not balance: {violations:?}")));
        }
        for account in ledger.accounts() {
            let wallet = account.code == citypay_directory::AccountKind::Wallet.code();
            if wallet && (account.balance.net_posted() < 0 || account.balance.available() < 0) {
                return Err(self.failure(format!("wallet {} is below zero: {:?}", account.id, account.balance)));
            }
        }
        let fares_in_doubt = self.fares_in_doubt();
        for client in &self.clients {
            let held = city.shard.account(client.resident.wallet).map_or(0, |a| a.balance.net_posted());
            if let Err(message) = client.check_balance(held, fares_in_doubt) {
                return Err(self.failure(message));
            }
        }
        Ok(())
    }

    /// After a restart: everything a client was told is in the reopened database.
    fn check_durable(&mut self) -> Result<(), Failure> {
        self.check_step()?;
        let services = self.city.as_ref().expect("the city is open").services.clone();
        let clients: Vec<client::Known> = self.clients.iter().map(Client::known).collect();
        let check = async move {
            for known in &clients {
                known.check(&services).await?;
            }
            Ok::<(), String>(())
        };
        match self.settle(Box::pin(check))? {
            Ok(()) => Ok(()),
            Err(message) => Err(self.failure(format!("after a restart: {message}"))),
        }
    }

    /// The end: faults stop, every client finishes what it started, a last restart, and every
    /// balance and record is checked once more.
    fn finish(&mut self) -> Result<(), Failure> {
        for _ in 0..1_000 {
            if self.clients.iter().all(|c| c.intent.is_none() || c.known) && self.office.as_ref().is_none_or(|o| o.stage == Stage::Done) {
                break;
            }
            self.step += 1;
            let services = self.city.as_ref().expect("the city is open").services.clone();
            for client in &mut self.clients {
                if client.job.is_none() && client.intent.is_some() && !client.known {
                    self.report.retries += 1;
                    client.resume(&services);
                }
                if let Err(message) = client.poll() {
                    client.broken.get_or_insert(message);
                }
            }
            let step = self.step_everything()?;
            self.report.commands += u64::try_from(step.answers.len()).unwrap_or(0);
            self.report.batches = step.last_batch;
            self.office()?;
            self.check_step()?;
            self.clock.set(self.clock.now().plus_seconds(1));
        }
        if self.office.as_ref().is_some_and(|o| o.stage != Stage::Done) {
            return Err(self.failure("the settlement never finished".into()));
        }
        if let Some(stuck) = self.clients.iter().find(|c| c.intent.is_some() && !c.known) {
            return Err(self.failure(format!("client {} never learnt the outcome of {:?}", stuck.index, stuck.intent)));
        }
        self.restart()?;
        self.report.steps = self.step;
        // The books recomputed from the journal alone agree with the accounts.
        let mut journal = citypay_store_sqlite::SqliteStore::open_reader(&self.path).map_err(|e| self.failure(format!("the journal: {e}")))?;
        let audit = citypay_store::audit(&mut journal).map_err(|e| self.failure(format!("the audit: {e}")))?;
        if !audit.is_clean() {
            return Err(self.failure(format!("the audit of the journal: {:?}", audit.violations)));
        }
        for client in &self.clients {
            let city = self.city.as_ref().expect("the city is open");
            let held = city.shard.account(client.resident.wallet).map_or(0, |a| a.balance.net_posted());
            if held != client.balance {
                return Err(self.failure(format!("client {}'s wallet holds {held}, its answers say {}", client.index, client.balance)));
            }
        }
        Ok(())
    }
}

/// A stable word for a writer's answer, for the run's digest (error messages may name paths).
fn reply_code(reply: &citypay_shard::Reply) -> String {
    match reply {
        Ok(outcome) => format!("{outcome:?}"),
        Err(SubmitError::CommitFailed(_)) => "commit_failed".into(),
        Err(SubmitError::Timeout(_)) => "timeout".into(),
        Err(SubmitError::Unavailable) => "unavailable".into(),
        Err(SubmitError::GuardFailed { guard }) => format!("guard {guard}"),
        Err(SubmitError::NotOwned { bucket, map_version, .. }) => format!("bucket {bucket} not held (map {map_version})"),
    }
}
