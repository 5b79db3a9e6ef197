//! A seeded cashless-city simulation. It builds the preset cities' people and businesses from
//! a seed and runs their days through the same services the HTTP API uses (directory, wallet,
//! checkout): registrations, top-ups, payment-code and QR payments, cash at the counter,
//! refunds.
//!
//! Replays are exact. Ids and secrets come from the seed (a seeded [`Directory`]), the clock is
//! a [`ManualClock`] that moves in five-minute slots, and a person acts at most once per slot,
//! with their own actions in order. So no outcome depends on how the writer batched the
//! concurrent actions of a slot: a wallet is only touched by its owner's actions (and refunds
//! of its owner's payments), and a merchant's balance only grows until a refund of a payment it
//! already holds.

mod day;
mod presets;
mod tally;
mod world;

use std::collections::HashMap;
use std::sync::Arc;

use citypay_checkout::Checkout;
use citypay_directory::{Directory, DirectoryError, Resident};
use citypay_shard::ManualClock;
use citypay_wallet::Wallet;

pub use presets::{CityPreset, PRESETS, preset, split_residents};
pub use citypay_dashboard::Counter;
pub use tally::Tally;

use world::{BusinessKind, Person, Registration};

/// The services a simulation drives, over one clock it controls.
#[derive(Clone, Debug)]
pub struct Services {
    /// Built with [`Directory::seeded`] for exact replays.
    pub directory: Directory,
    /// Top-ups.
    pub wallet: Wallet,
    /// Payments and refunds.
    pub checkout: Checkout,
    /// The clock the shard and the directory read.
    pub clock: ManualClock,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The cities.
    pub cities: Vec<&'static CityPreset>,
    /// Simulated residents, over all cities (split by population).
    pub residents: u64,
    /// Days to run.
    pub days: u32,
    /// The seed.
    pub seed: u64,
}

/// The first simulated day: 2017-08-01, the first day of the "No Cash City Week".
pub const START_DATE: (i64, i64, i64) = (2017, 8, 1);

/// Most actions in flight at once during set-up.
const SETUP_WAVE: usize = 4_096;

/// Where the simulation reports progress (a progress bar, or nothing).
pub trait Progress: Send + Sync {
    /// A phase with `total` steps begins.
    fn start(&self, phase: &str, total: u64);
    /// `n` more steps are done.
    fn advance(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A service was unavailable (the writer stopped, storage failed): the run cannot go on.
    #[error("{action}: {message}")]
    Service {
        /// What the simulation was doing.
        action: &'static str,
        /// The service's error.
        message: String,
    },
    /// A task panicked or was cancelled.
    #[error("a simulated action failed to run: {0}")]
    Task(String),
}

/// A business the simulation onboarded.
#[derive(Clone, Debug)]
struct Business {
    id: u64,
    static_qr: Arc<str>,
}

/// A registered person's wallet, as the simulation knows it.
#[derive(Clone, Debug)]
struct Account {
    resident: Resident,
    card: u64,
    device: Option<(u32, Arc<[u8]>)>,
    /// What the wallet should hold: only its owner's actions change it.
    balance: i64,
}

/// What every action of a run can see.
#[derive(Debug)]
struct Context {
    services: Services,
    seed: u64,
    cities: Vec<&'static CityPreset>,
    businesses: Vec<HashMap<BusinessKind, Vec<Business>>>,
}

/// A simulation in progress.
#[derive(Debug)]
pub struct Simulation {
    context: Arc<Context>,
    config: SimConfig,
    people: Vec<Person>,
    accounts: Vec<Option<Account>>,
    residents_per_city: Vec<u64>,
}

impl Simulation {
    /// Draws the cities' people from the seed; nothing is written yet.
    pub fn new(services: Services, config: SimConfig) -> Simulation {
        let residents_per_city = split_residents(&config.cities, config.residents);
        let mut people = Vec::new();
        for (city, (preset, count)) in config.cities.iter().zip(&residents_per_city).enumerate() {
            people.extend((0..*count).map(|index| Person::draw(config.seed, city, preset, index, config.days)));
        }
        let accounts = vec![None; people.len()];
        let context = Arc::new(Context { services, seed: config.seed, cities: config.cities.clone(), businesses: Vec::new() });
        Simulation { context, config, people, accounts, residents_per_city }
    }

    /// Simulated residents per city, in the order of the configuration.
    pub fn residents_per_city(&self) -> &[u64] {
        &self.residents_per_city
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The evening before day 1: onboards the cities and their businesses and registers the
    /// residents who already have a real-name wallet (each links a card, enrols a phone if
    /// they pay with codes, and tops up).
    pub async fn set_up(&mut self, progress: &dyn Progress) -> Result<Tally, SimError> {
        let services = &self.context.services;
        services.clock.set(citypay_ledger::Timestamp::from_unix_seconds(day_start(1) - 3_600));
        let mut businesses = Vec::new();
        for (city, (preset, residents)) in self.config.cities.iter().zip(&self.residents_per_city).enumerate() {
            match services.directory.onboard_city(preset.code, preset.name).await {
                Ok(_) | Err(DirectoryError::CityExists(_)) => {}
                Err(e) => return Err(service("onboarding a city", &e)),
            }
            let plan = world::businesses(*residents);
            progress.start(&format!("{}: businesses", preset.name), plan.iter().map(|(_, n)| n).sum());
            let mut by_kind = HashMap::new();
            for (kind, count) in plan {
                let mut list = Vec::new();
                for index in 0..count {
                    let new = world::new_merchant(preset, city, kind, index);
                    let (merchant, _) =
                        services.directory.onboard_merchant(&new).await.map_err(|e| service("onboarding a merchant", &e))?;
                    let static_qr = services.checkout.static_qr(merchant.id).await.map_err(|e| service("a static QR", &e))?;
                    list.push(Business { id: merchant.id, static_qr: static_qr.into() });
                    progress.advance(1);
                }
                by_kind.insert(kind, list);
            }
            progress.finish();
            businesses.push(by_kind);
        }
        Arc::get_mut(&mut self.context).expect("no action runs during set-up").businesses = businesses;

        let before: Vec<usize> =
            (0..self.people.len()).filter(|i| self.people[*i].registration == Registration::Before).collect();
        progress.start("registering residents", u64::try_from(before.len()).unwrap_or(0));
        let mut tally = Tally::default();
        for wave in before.chunks(SETUP_WAVE) {
            let mut tasks = tokio::task::JoinSet::new();
            for &index in wave {
                let context = self.context.clone();
                let person = self.people[index].clone();
                tasks.spawn(async move { (index, day::register(&context, &person).await) });
            }
            while let Some(joined) = tasks.join_next().await {
                let (index, (account, outcomes)) = joined.map_err(|e| SimError::Task(e.to_string()))?;
                let city = self.context.cities[self.people[index].city].name;
                for outcome in outcomes {
                    tally.add(city, outcome?);
                }
                self.accounts[index] = account;
                progress.advance(1);
            }
        }
        progress.finish();
        Ok(tally)
    }

    /// Runs day `day` (1-based) slot by slot and returns what happened.
    pub async fn run_day(&mut self, day: u32, progress: &dyn Progress) -> Result<Tally, SimError> {
        let plan = day::plan(&self.context, &self.people, day);
        progress.start(&format!("day {day}"), u64::try_from(plan.len()).unwrap_or(0));
        let mut tally = Tally::default();
        let mut start = 0;
        while start < plan.len() {
            let slot = plan[start].slot;
            let end = start + plan[start..].iter().take_while(|a| a.slot == slot).count();
            let now = day_start(day) + u64::from(slot) * day::SLOT_SECONDS;
            self.context.services.clock.set(citypay_ledger::Timestamp::from_unix_seconds(now));
            let mut tasks = tokio::task::JoinSet::new();
            for planned in &plan[start..end] {
                let index = planned.person;
                let context = self.context.clone();
                let person = self.people[index].clone();
                let account = self.accounts[index].take();
                let action = planned.action.clone();
                tasks.spawn(async move {
                    let (account, outcomes) = day::act(&context, &person, account, action, day).await;
                    (index, account, outcomes)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let (index, account, outcomes) = joined.map_err(|e| SimError::Task(e.to_string()))?;
                let city = self.context.cities[self.people[index].city].name;
                for outcome in outcomes {
                    tally.add(city, outcome?);
                }
                self.accounts[index] = account;
            }
            progress.advance(u64::try_from(end - start).unwrap_or(0));
            start = end;
        }
        progress.finish();
        // Close the day: the clock moves to the last second of it.
        self.context.services.clock.set(citypay_ledger::Timestamp::from_unix_seconds(day_start(day + 1) - 1));
        Ok(tally)
    }

    /// Unix seconds of the start (local midnight) of day `day`.
    pub fn day_start(day: u32) -> u64 {
        day_start(day)
    }

    /// The date of day `day`, `YYYY-MM-DD`.
    pub fn date(day: u32) -> String {
        let (y, m, d) = world::add_days(START_DATE, i64::from(day) - 1);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

fn day_start(day: u32) -> u64 {
    let (y, m, d) = world::add_days(START_DATE, i64::from(day) - 1);
    world::local_midnight_unix(y, m, d)
}

fn service(action: &'static str, error: &dyn std::fmt::Display) -> SimError {
    SimError::Service { action, message: error.to_string() }
}
