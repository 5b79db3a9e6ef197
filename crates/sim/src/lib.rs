//! A seeded cashless-city simulation. It builds the preset cities' people and businesses from
//! a seed and runs their days through the same services the HTTP API uses (directory, wallet,
//! checkout): registrations, top-ups, payment-code and QR payments, cash at the counter,
//! refunds.
//!
//! Replays are exact. Ids and secrets come from the seed (a seeded [`Directory`]). Each person's
//! day is planned in five-minute slots and lived in order by one task; the services read the
//! time from an [`ActionClock`], which answers the planned time of the action asking, while the
//! writer's [`ManualClock`] shows the day. People live their days concurrently, and no outcome
//! depends on how the writer batched them: a wallet is debited only by its owner's actions
//! (and credited by refunds of its owner's payments and by money sent to them, which only add
//! to what its payments find), a merchant's balance only shrinks by a refund of a payment it
//! already holds, and the ledger's day windows are the day's.

mod clock;
mod day;
mod presets;
mod server;
mod tally;
mod transit;
mod world;

use std::collections::HashMap;
use std::sync::Arc;

use citypay_checkout::Checkout;
use citypay_directory::{Directory, DirectoryError, Resident};
use citypay_shard::ManualClock;
use citypay_wallet::Wallet;

pub use clock::ActionClock;
pub use presets::{CityPreset, PRESETS, preset, split_residents};
pub use citypay_dashboard::Counter;
pub use server::{ServerRun, ServerTarget, drive as drive_server, personal_data as server_personal_data};
pub use tally::Tally;

use world::{BusinessKind, Person, Registration};

/// The people and businesses of a simulated city, drawn from the seed, for other harnesses
/// that drive the services (the fault simulator).
pub mod people {
    pub use crate::world::{BusinessKind, Person, Registration, new_merchant, resident_id_number, transit_uscc};
}

/// The services a simulation drives, over one clock it controls.
#[derive(Clone, Debug)]
pub struct Services {
    /// Built with [`Directory::seeded`] for exact replays, over an [`ActionClock`] of `clock`.
    pub directory: Directory,
    /// Top-ups.
    pub wallet: Wallet,
    /// The wallet's bank: it issues each person their cards before they link them.
    pub bank: citypay_directory::SandboxBank,
    /// Payments and refunds.
    pub checkout: Checkout,
    /// Ride credentials, taps, fares.
    pub transit: citypay_transit::Transit,
    /// Hospital bills and the insurance funds.
    pub bills: citypay_bills::Bills,
    /// The merchants' payouts of each day.
    pub settlement: citypay_settlement::Settlement,
    /// The writer's clock: the simulation sets it to the day being simulated (every shard's
    /// services share one).
    pub clock: ManualClock,
    /// This shard's view of a country of shards (`None`: one database holds every city).
    /// Payments and transfers whose other side lives on another shard go through it.
    pub country: Option<citypay_country::Country>,
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
    /// Days already simulated on the database by an earlier run of the same seed, cities and
    /// residents (0: a fresh database). The run picks up that city: it finds the businesses,
    /// validators and wallets instead of creating them, and lives days `continues_after + 1`
    /// onwards.
    pub continues_after: u32,
}

/// The year of the social-security contributions residents pay, and what one costs: 180 yuan,
/// the 2017 residents' medical insurance of many cities. The window is the rest of the year.
pub(crate) const CONTRIBUTION_YEAR: u16 = 2017;
pub(crate) const CONTRIBUTION_FEN: i64 = 18_000;

/// A term's tuition bill: the parent picks which items to pay.
pub(crate) const TUITION_ITEMS: [(&str, i64); 3] = [("学费", 150_000), ("书本费", 30_000), ("校服费", 20_000)];

/// The first simulated day: 2017-08-01, the first day of the "No Cash City Week".
pub const START_DATE: (i64, i64, i64) = (2017, 8, 1);

/// Most people acting at once: enough that the writer's batches stay full while it waits on
/// its fsync (a million-transaction day took 73 s with 2,048, 52 s with 16,384).
const PEOPLE_IN_FLIGHT: usize = 16_384;

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
#[derive(Debug)]
struct Account {
    resident: Resident,
    /// The person's city (its index): their wallet lives on that city's shard.
    home: usize,
    card: u64,
    device: Option<(u32, Arc<[u8]>)>,
    /// What the wallet holds at least: what its owner's actions (and the fare run) leave, the
    /// money sent to them by family not counted (the owner tops up by this figure).
    balance: i64,
    /// The phone's ride-code app, for commuters.
    rider: Option<citypay_ride::RiderDevice>,
    rider_seed: Option<[u8; 32]>,
    /// When the ride credential expires.
    ride_until: u32,
    /// The ride account reference (0: none).
    account_ref: u64,
}

/// What every action of a run can see.
#[derive(Debug)]
struct Context {
    /// Each shard's services (one: every city in one database).
    shards: Vec<Services>,
    /// The shard of each city of the run, by its index.
    city_shard: Vec<usize>,
    seed: u64,
    cities: Vec<&'static CityPreset>,
    businesses: Vec<HashMap<BusinessKind, Vec<Business>>>,
    transit: Vec<transit::CityTransit>,
    /// The deny list each city's validators were last given, by city.
    denied: std::sync::Mutex<HashMap<usize, Vec<u64>>>,
    /// Each parent's child's tuition bill: (city, person) → bill.
    tuition: std::sync::Mutex<HashMap<(usize, u64), u64>>,
}

impl Context {
    /// The services of the shard city number `city` lives on.
    fn at(&self, city: usize) -> &Services {
        &self.shards[self.city_shard.get(city).copied().unwrap_or(0)]
    }

    /// Whether two cities live on different shards.
    fn apart(&self, a: usize, b: usize) -> bool {
        self.city_shard.get(a) != self.city_shard.get(b)
    }

    /// The clock every shard's services read.
    fn clock(&self) -> &ManualClock {
        &self.shards[0].clock
    }
}

/// A simulation in progress.
#[derive(Debug)]
pub struct Simulation {
    context: Arc<Context>,
    config: SimConfig,
    people: Vec<Person>,
    accounts: Vec<Option<Account>>,
    residents_per_city: Vec<u64>,
    /// Wall-clock seconds per phase (people's days, tap uploads, fare runs), for reports.
    phase_seconds: std::collections::BTreeMap<&'static str, f64>,
}

impl Simulation {
    /// Draws the cities' people from the seed; nothing is written yet.
    pub fn new(services: Services, config: SimConfig) -> Simulation {
        let cities = config.cities.len();
        Simulation::on_shards(vec![services], vec![0; cities], config)
    }

    /// A simulation of a country of shards: `shards` holds each shard's services (sharing one
    /// clock), `city_shard` the shard of each city of `config`, by index. Travellers' payments
    /// and transfers to family between cities of two shards cross them.
    pub fn on_shards(shards: Vec<Services>, city_shard: Vec<usize>, config: SimConfig) -> Simulation {
        let residents_per_city = split_residents(&config.cities, config.residents);
        let mut people = Vec::new();
        // People are drawn as the first run drew them (over its days).
        let drawn_days = if config.continues_after > 0 { config.continues_after } else { config.days };
        for (city, (preset, count)) in config.cities.iter().zip(&residents_per_city).enumerate() {
            people.extend((0..*count).map(|index| Person::draw(config.seed, city, preset, index, drawn_days)));
        }
        let accounts = (0..people.len()).map(|_| None).collect();
        let context = Arc::new(Context {
            shards,
            city_shard,
            seed: config.seed,
            cities: config.cities.clone(),
            businesses: Vec::new(),
            transit: Vec::new(),
            denied: std::sync::Mutex::new(HashMap::new()),
            tuition: std::sync::Mutex::new(HashMap::new()),
        });
        Simulation { context, config, people, accounts, residents_per_city, phase_seconds: std::collections::BTreeMap::new() }
    }

    /// Wall-clock seconds spent per phase so far (not part of any outcome).
    pub fn phase_seconds(&self) -> &std::collections::BTreeMap<&'static str, f64> {
        &self.phase_seconds
    }

    #[allow(clippy::float_arithmetic)]
    fn timed(&mut self, phase: &'static str, started: std::time::Instant) {
        *self.phase_seconds.entry(phase).or_default() += started.elapsed().as_secs_f64();
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
    ///
    /// A continued run (see [`SimConfig::continues_after`]) finds what the first run created,
    /// and picks up every wallet it opened (cards as linked, phones enrolled anew).
    pub async fn set_up(&mut self, progress: &dyn Progress) -> Result<Tally, SimError> {
        let first_day = self.config.continues_after + 1;
        self.context.clock().set(citypay_ledger::Timestamp::from_unix_seconds(day_start(first_day) - 3_600));
        let mut businesses = Vec::new();
        for (city, (preset, residents)) in self.config.cities.iter().zip(&self.residents_per_city).enumerate() {
            let services = self.context.at(city);
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
                    let id = onboard_or_find(&services.directory, &new).await?;
                    let static_qr = services.checkout.static_qr(id).await.map_err(|e| service("a static QR", &e))?;
                    list.push(Business { id, static_qr: static_qr.into() });
                    progress.advance(1);
                }
                by_kind.insert(kind, list);
            }
            progress.finish();
            businesses.push(by_kind);
        }
        // Each city's medical-insurance fund, funded by the bureau for the whole run: about
        // twenty yuan a resident a day (hospital bills' insured parts come out of it).
        for (city, (preset, residents)) in self.config.cities.iter().zip(&self.residents_per_city).enumerate() {
            let services = self.context.at(city);
            services.bills.open_insurance_fund(preset.code).await.map_err(|e| service("opening an insurance fund", &e))?;
            let amount = fund_deposit(*residents, self.config.days);
            // Each run's deposit covers its own days.
            let reference = if first_day == 1 { format!("sim-fund-{}", preset.code) } else { format!("sim-fund-{}-{first_day}", preset.code) };
            services.bills.deposit_to_fund(preset.code, amount, &reference).await.map_err(|e| service("funding an insurance fund", &e))?;
        }
        for (city, (preset, kinds)) in self.config.cities.iter().zip(&businesses).enumerate() {
            let services = self.context.at(city);
            let Some(bureau) = kinds.get(&BusinessKind::Bureau).and_then(|b| b.first()) else { continue };
            let window = citypay_bills::ContributionWindow {
                city: preset.code,
                year: CONTRIBUTION_YEAR,
                bureau_id: bureau.id,
                amount: CONTRIBUTION_FEN,
                opens_at: day_start(1) - 86_400,
                closes_at: citypay_dashboard::dates::local_midnight(i64::from(CONTRIBUTION_YEAR) + 1, 1, 1),
            };
            services.bills.open_contribution_window(window).await.map_err(|e| service("opening a contribution window", &e))?;
        }
        let mut networks = Vec::new();
        for (city, preset) in self.config.cities.iter().enumerate() {
            networks.push(transit::build(&self.context, city, preset).await?);
        }
        let context = Arc::get_mut(&mut self.context).expect("no action runs during set-up");
        context.businesses = businesses;
        context.transit = networks;

        let at = day_start(first_day) - 3_600;
        let continuing = first_day > 1;
        // A continued run picks up everyone the first run registered, on the eve or during it.
        let wanted = |r: Registration| if continuing { r != Registration::Never } else { r == Registration::Before };
        let before: Vec<usize> = (0..self.people.len()).filter(|i| wanted(self.people[*i].registration)).collect();
        progress.start(if continuing { "picking up residents" } else { "registering residents" }, u64::try_from(before.len()).unwrap_or(0));
        let jobs: Vec<_> = before.into_iter().map(|index| (index, self.context.clone(), self.people[index].clone())).collect();
        let tally = self
            .run_people(jobs, progress, move |(index, context, person)| async move {
                let done = if continuing { clock::at(at, day::adopt(&context, &person)).await } else { clock::at(at, day::register(&context, &person)).await };
                (index, None, done)
            })
            .await?;
        progress.finish();
        clock::at(at, self.bill_tuition(continuing)).await?;
        Ok(tally)
    }

    /// Each school bills the term's tuition to its pupils by student number and records the
    /// parent as guardian, and each parent with a wallet links their child's number.
    async fn bill_tuition(&self, continuing: bool) -> Result<(), SimError> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, person) in self.people.iter().enumerate() {
            let preset = self.context.cities[person.city];
            let Some(account) = self.accounts[index].as_ref() else { continue };
            let Some(schools) = self.context.businesses[person.city].get(&BusinessKind::School).filter(|s| !s.is_empty()) else { continue };
            if !world::is_parent(self.context.seed, preset, person.index) {
                continue;
            }
            let school = schools[usize::try_from(person.index).unwrap_or(0) % schools.len()].id;
            let (context, resident, key) = (self.context.clone(), account.resident.clone(), (person.city, person.index));
            let payer = citypay_bills::Payer { kind: citypay_bills::PayerKind::StudentNumber, identifier: world::student_number(preset, person.index) };
            let due_at = day_start(1) + 30 * 86_400;
            tasks.spawn(async move {
                let bills = &context.at(key.0).bills;
                let new = citypay_bills::NewBill {
                    out_bill_no: format!("T{CONTRIBUTION_YEAR}-{}-{}", preset.code, key.1),
                    payer: payer.clone(),
                    title: format!("{CONTRIBUTION_YEAR}秋季学期"),
                    items: TUITION_ITEMS.iter().map(|(name, fen)| citypay_bills::Item { name: (*name).into(), amount: *fen }).collect(),
                    pick_items: true,
                    insured: 0,
                    due_at,
                    late_allowed: true,
                };
                // A continued run finds the bill the first run issued (none for a parent who
                // registered during it: the school bills them now).
                let bill = match continuing {
                    true => match bills.bill(school, &new.out_bill_no).await {
                        Err(citypay_bills::BillError::BillNotFound) => bills.issue(school, &new).await,
                        found => found,
                    },
                    false => bills.issue(school, &new).await,
                };
                let bill = bill.map_err(|e| service("billing tuition", &e))?;
                // The school's enrolment record names the parent: that confirms the parent's link.
                let parent = world::resident_id_number(preset.code, key.1);
                bills.add_guardian(school, &payer, &parent).await.map_err(|e| service("recording a guardian", &e))?;
                bills.link_payer(&resident, &payer, Some(school), "孩子").await.map_err(|e| service("linking a child", &e))?;
                if let Ok(mut tuition) = context.tuition.lock() {
                    tuition.insert(key, bill.id);
                }
                Ok::<(), SimError>(())
            });
            while tasks.len() >= 512 {
                tasks.join_next().await.map(|r| r.map_err(|e| SimError::Task(e.to_string()))).transpose()?.transpose()?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| SimError::Task(e.to_string()))??;
        }
        Ok(())
    }

    /// Runs day `day` (1-based): everyone lives their planned day, concurrently.
    pub async fn run_day(&mut self, day: u32, progress: &dyn Progress) -> Result<Tally, SimError> {
        self.context.clock().set(citypay_ledger::Timestamp::from_unix_seconds(day_start(day)));
        clock::at(day_start(day) + 5 * 3_600, transit::download_deny_list(&self.context)).await?;
        let started = std::time::Instant::now();
        let shape = day::Shape {
            seed: self.context.seed,
            cities: &self.context.cities,
            businesses: self.context.businesses.iter().map(|kinds| kinds.iter().map(|(kind, list)| (*kind, list.len())).collect()).collect(),
            lines: self
                .context
                .transit
                .iter()
                .map(|network| day::Lines { buses: network.buses.len(), metro: network.metro.iter().map(|line| line.validators.len()).collect() })
                .collect(),
        };
        let plan = day::plan(&shape, &self.people, day);
        self.timed("plan", started);
        let started = std::time::Instant::now();
        progress.start(&format!("day {day}"), plan.iter().map(|(_, a)| u64::try_from(a.len()).unwrap_or(0)).sum());
        let jobs: Vec<_> = plan
            .into_iter()
            .map(|(index, actions)| (index, self.context.clone(), self.people[index].clone(), self.accounts[index].take(), actions))
            .collect();
        let tally = self
            .run_people(jobs, progress, move |(index, context, person, account, actions)| async move {
                let count = u64::try_from(actions.len()).unwrap_or(0);
                (index, Some(count), day::live(&context, &person, account, actions, day).await)
            })
            .await?;
        progress.finish();
        self.timed("people", started);
        let mut tally = tally;
        self.close_transit_day(day, &mut tally).await?;
        self.settle_day(day, &mut tally).await?;
        self.drain_crossings().await?;
        Ok(tally)
    }

    /// Each shard's resolver finishes what crosses shards and is still undecided (nothing,
    /// unless a shard failed to answer in time): the books of the day are final.
    async fn drain_crossings(&self) -> Result<(), SimError> {
        for services in &self.context.shards {
            let Some(country) = &services.country else { continue };
            country.drain(1_000).await.map_err(|e| service("resolving crossings", &e))?;
        }
        Ok(())
    }

    /// After the fare run, every merchant's day is paid out to its bank account.
    async fn settle_day(&mut self, day: u32, tally: &mut Tally) -> Result<(), SimError> {
        let started = std::time::Instant::now();
        let at = day_start(day + 1) + 6 * 3_600 + 30 * 60;
        self.context.clock().set(citypay_ledger::Timestamp::from_unix_seconds(at));
        let (y, m, d) = world::add_days(START_DATE, i64::from(day) - 1);
        let date = citypay_ledger::LocalDate::parse(&citypay_dashboard::dates::format_date((y, m, d))).ok_or_else(|| service("the settlement date", &"not a date"))?;
        let mut payouts = Vec::new();
        for services in &self.context.shards {
            let settlement = &services.settlement;
            clock::at(at, settlement.settle(date)).await.map_err(|e| service("the settlement run", &e))?;
            payouts.extend(settlement.payouts(date).await.map_err(|e| service("reading payouts", &e))?);
        }
        let city_of: HashMap<u64, &str> = self
            .context
            .businesses
            .iter()
            .zip(&self.context.cities)
            .flat_map(|(kinds, preset)| kinds.values().flatten().map(move |b| (b.id, preset.name)))
            .chain(self.context.transit.iter().zip(&self.context.cities).map(|(network, preset)| (network.operator, preset.name)))
            .collect();
        for payout in payouts.iter().filter(|p| p.status == citypay_settlement::PayoutStatus::Paid) {
            if let Some(city) = city_of.get(&payout.merchant_id) {
                tally.add(city, tally::Outcome::Settled { amount: payout.amount });
            }
        }
        self.timed("settlement", started);
        Ok(())
    }

    /// At night the validators upload their taps; the next morning, after the cut-off for late
    /// uploads, the fare run debits every rider's day.
    async fn close_transit_day(&mut self, day: u32, tally: &mut Tally) -> Result<(), SimError> {
        let started = std::time::Instant::now();
        clock::at(day_start(day + 1) - 60, transit::upload_taps(&self.context)).await?;
        self.timed("tap_upload", started);
        let started = std::time::Instant::now();
        let fare_time = day_start(day + 1) + 6 * 3_600 + 60;
        self.context.clock().set(citypay_ledger::Timestamp::from_unix_seconds(fare_time));
        let service_day = i64::try_from((day_start(day) + 8 * 3_600) / 86_400).unwrap_or(0);
        // Each shard fares its own riders (their account references are its own).
        let mut days = Vec::new();
        for (shard, services) in self.context.shards.iter().enumerate() {
            let run = clock::at(fare_time, services.transit.fare_day(service_day)).await.map_err(|e| service("the fare run", &e))?;
            days.extend(run.days.into_iter().map(|rider| (shard, rider)));
        }
        self.timed("fare_run", started);
        let riders: HashMap<(usize, u64), usize> = self
            .accounts
            .iter()
            .enumerate()
            .filter_map(|(index, account)| {
                let shard = self.context.city_shard.get(self.people[index].city).copied().unwrap_or(0);
                account.as_ref().filter(|a| a.account_ref != 0).map(|a| ((shard, a.account_ref), index))
            })
            .collect();
        for (shard, rider) in &days {
            let Some(&index) = riders.get(&(*shard, rider.account_ref)) else { continue };
            let city = self.context.cities[self.people[index].city].name;
            tally.add(city, tally::Outcome::Fares { count: rider.trips, amount: rider.due });
            if rider.in_arrears {
                tally.add(city, tally::Outcome::Refused { what: "fares", code: "in_arrears" });
            }
            if let Some(account) = self.accounts[index].as_mut() {
                account.balance -= rider.moved;
            }
        }
        Ok(())
    }

    /// Runs one task per job, at most [`PEOPLE_IN_FLIGHT`] at once; each answers its person,
    /// how many steps it did (one when `None`), their wallet afterwards and the outcomes.
    async fn run_people<J, F, Fut>(&mut self, jobs: Vec<J>, progress: &dyn Progress, mut start: F) -> Result<Tally, SimError>
    where
        F: FnMut(J) -> Fut,
        Fut: std::future::Future<Output = (usize, Option<u64>, (Option<Account>, Vec<Result<tally::Outcome, SimError>>))>
            + Send
            + 'static,
    {
        let mut tally = Tally::default();
        let mut jobs = jobs.into_iter();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < PEOPLE_IN_FLIGHT {
                let Some(job) = jobs.next() else { break };
                tasks.spawn(start(job));
            }
            let Some(joined) = tasks.join_next().await else { return Ok(tally) };
            let (index, steps, (account, outcomes)) = joined.map_err(|e| SimError::Task(e.to_string()))?;
            let city = self.context.cities[self.people[index].city].name;
            for outcome in outcomes {
                tally.add(city, outcome?);
            }
            self.accounts[index] = account;
            progress.advance(steps.unwrap_or(1));
        }
    }

    /// Unix seconds of the start (local midnight) of day `day`.
    pub fn day_start(day: u32) -> u64 {
        day_start(day)
    }

    /// The date of day `day`, `YYYY-MM-DD`.
    pub fn date(day: u32) -> String {
        citypay_dashboard::dates::format_date(world::add_days(START_DATE, i64::from(day) - 1))
    }
}

fn day_start(day: u32) -> u64 {
    let (y, m, d) = world::add_days(START_DATE, i64::from(day) - 1);
    citypay_dashboard::dates::local_midnight(y, m, d)
}

/// What the bureau deposits in a city's insurance fund for a run: about twenty yuan a
/// resident a day.
pub(crate) fn fund_deposit(residents: u64, days: u32) -> i64 {
    i64::try_from(residents).unwrap_or(0).saturating_mul(2_000).saturating_mul(i64::from(days)).max(1)
}

/// Onboards a business, or finds it by its USCC when a continued run meets it again.
pub(crate) async fn onboard_or_find(directory: &Directory, new: &citypay_directory::NewMerchant) -> Result<u64, SimError> {
    match directory.onboard_merchant(new).await {
        Ok((merchant, _)) => Ok(merchant.id),
        Err(DirectoryError::MerchantExists) => {
            let rows = directory
                .read("SELECT id FROM merchants WHERE uscc = ?1", vec![citypay_store::Value::Text(new.uscc.clone())])
                .await
                .map_err(|e| service("finding a merchant", &e))?;
            let id = rows.first().map(|row| citypay_directory::int_at(row, 0)).transpose().map_err(|e| service("finding a merchant", &e))?;
            id.and_then(|id| u64::try_from(id).ok()).ok_or_else(|| service("finding a merchant", &new.uscc))
        }
        Err(e) => Err(service("onboarding a merchant", &e)),
    }
}

fn service(action: &'static str, error: &dyn std::fmt::Display) -> SimError {
    SimError::Service { action, message: error.to_string() }
}
