//! One process's worth of a city over its database file: the stepped writer over the real
//! SQLite store in its faulty twin, and the services over it. A restart drops all of it and
//! opens the file again; only the bank (another institution) and the keys (the key file)
//! outlive it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use citypay_checkout::Checkout;
use citypay_directory::{Directory, DirectoryKeys, PasswordPolicy, SandboxBank, TokenKeys};
use citypay_ledger::Timestamp;
use citypay_shard::{ManualClock, ShardConfig, SteppedShard};
use citypay_sim::people::{BusinessKind, Person, new_merchant};
use citypay_store::Migration;
use citypay_store_conformance::{CommitFault, FaultyStore};
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::Wallet;

use crate::client::{Client, Places};

/// 2017-08-01 09:00 in Hangzhou, the first day of the "No Cash City Week".
pub(crate) const START: Timestamp = Timestamp::from_unix_seconds(1_501_549_200);

/// The social-security year clients contribute for, and what it costs.
pub(crate) const CONTRIBUTION_YEAR: u16 = 2017;
pub(crate) const CONTRIBUTION_FEN: i64 = 18_000;

/// Small queue and batches, so that a step's pick matters and backpressure happens.
const CONFIG: ShardConfig = ShardConfig {
    queue_max: 256,
    batch_max: 64,
    recent_ids_max: 4_096,
    // Never reached: the timer is never driven. Time is the harness's.
    reply_timeout: Duration::from_secs(86_400),
};

/// The services, as one process holds them.
#[derive(Clone, Debug)]
pub(crate) struct Services {
    pub(crate) directory: Directory,
    pub(crate) wallet: Wallet,
    pub(crate) checkout: Checkout,
    pub(crate) bills: citypay_bills::Bills,
    pub(crate) settlement: citypay_settlement::Settlement,
    pub(crate) transit: citypay_transit::Transit,
}

pub(crate) struct City {
    pub(crate) shard: SteppedShard,
    pub(crate) faults: Arc<Mutex<Vec<CommitFault>>>,
    pub(crate) services: Services,
}

fn migrations() -> Vec<Migration> {
    citypay_directory::MIGRATIONS
        .iter()
        .chain(citypay_wallet::MIGRATIONS)
        .chain(citypay_checkout::MIGRATIONS)
        .chain(citypay_bills::MIGRATIONS)
        .chain(citypay_settlement::MIGRATIONS)
        .chain(citypay_transit::MIGRATIONS)
        .copied()
        .collect()
}

/// A key ring of one key drawn from the seed, in the vault's config form.
fn key_config(seed: u64, purpose: u64) -> String {
    let mut hex = String::new();
    for part in 0..4u64 {
        let word = xxhash_rust::xxh3::xxh3_64(&[seed.to_le_bytes(), purpose.to_le_bytes(), part.to_le_bytes()].concat());
        hex.push_str(&format!("{word:016x}"));
    }
    format!("1:{hex};active=1")
}

fn keys(seed: u64) -> DirectoryKeys {
    DirectoryKeys {
        sealing: SealingKeys::from_config(&key_config(seed, 1)).expect("a sealing key"),
        index: IndexKeys::from_config(&key_config(seed, 2)).expect("an index key"),
        tokens: TokenKeys::from_config(&key_config(seed, 3)).expect("a token key"),
    }
}

/// The platform's ride-code signing key, from the seed, valid for ever.
fn ride_key(seed: u64) -> citypay_ride::PlatformKey {
    let forever = citypay_ride::Validity::new(0, u32::MAX).expect("a validity");
    citypay_ride::PlatformKey::from_seed(1, crate::transit::key_seed(seed, 3, 0), forever)
}

impl City {
    /// Opens the file (creating the schema the first time) and starts the writer and the
    /// services with nothing in memory but what the file holds.
    pub(crate) fn open(path: &Path, clock: ManualClock, bank: SandboxBank, seed: u64) -> Result<City, String> {
        let store = SqliteStore::open_writer(path, &migrations()).map_err(|e| e.to_string())?;
        let (store, faults) = FaultyStore::new(store);
        let reader = Arc::new(SqliteReader::open(path).map_err(|e| e.to_string())?);
        let shard = SteppedShard::open(Box::new(store), CONFIG, clock.clone(), None).map_err(|e| e.to_string())?;
        let mut draw = [0u8; 32];
        draw[..8].copy_from_slice(&seed.to_le_bytes());
        let directory = Directory::new(shard.handle(), reader, keys(seed), Arc::new(clock.clone()), PasswordPolicy::FAST_INSECURE).seeded(draw);
        let connector: Arc<dyn citypay_directory::BankConnector> = Arc::new(bank.clone());
        let services = Services {
            wallet: Wallet::new(directory.clone(), connector.clone()),
            checkout: Checkout::new(directory.clone()),
            bills: citypay_bills::Bills::new(directory.clone(), citypay_bills::ReceiptSigner::from_seed(1, draw)),
            settlement: citypay_settlement::Settlement::new(directory.clone(), connector),
            transit: citypay_transit::Transit::new(directory.clone(), citypay_fares::Feed::tianjin(), ride_key(seed)),
            directory,
        };
        Ok(City { shard, faults, services })
    }
}

/// The evening before: the city, its shops, a hospital and the social-security bureau, and
/// one resident per client with cards linked, a phone enrolled for payment codes and money.
pub(crate) async fn set_up(services: Services, seed: u64, clients: usize, bank: SandboxBank) -> Result<(Vec<Client>, crate::transit::Network), String> {
    let preset = &citypay_sim::PRESETS[0];
    let services = &services;
    let error = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    services.directory.open_platform_accounts().await.map_err(|e| error("platform accounts", &e))?;
    services.directory.onboard_city(preset.code, preset.name).await.map_err(|e| error("the city", &e))?;
    let onboard = async |kind, index| {
        let new = new_merchant(preset, 0, kind, index);
        services.directory.onboard_merchant(&new).await.map(|(m, _)| m.id).map_err(|e| error("a merchant", &e))
    };
    let places = Places {
        shops: vec![onboard(BusinessKind::Shop, 0).await?, onboard(BusinessKind::Restaurant, 0).await?, onboard(BusinessKind::Shop, 1).await?],
        hospital: onboard(BusinessKind::Hospital, 0).await?,
        city: preset.code,
    };
    let bureau = onboard(BusinessKind::Bureau, 0).await?;
    let window = citypay_bills::ContributionWindow {
        city: preset.code,
        year: CONTRIBUTION_YEAR,
        bureau_id: bureau,
        amount: CONTRIBUTION_FEN,
        opens_at: START.unix_seconds() - 86_400,
        closes_at: START.unix_seconds() + 365 * 86_400,
    };
    services.bills.open_contribution_window(window).await.map_err(|e| error("the contribution window", &e))?;
    let network = crate::transit::build(&services.transit, &services.directory, seed, preset.code).await?;
    let today = citypay_identity::CivilDate::new(2017, 8, 1).expect("a date");
    let mut list = Vec::new();
    for index in 0..clients {
        let person = Person::draw(seed, 0, preset, u64::try_from(index).unwrap_or(0), 1);
        let new = person.new_resident(preset, seed);
        let mut resident = services.directory.register_resident(&new).await.map_err(|e| error("a resident", &e))?;
        let id_number = citypay_identity::ResidentId::parse(&new.id_number, today).map_err(|e| error("an ID number", &e))?;
        let mut card = None;
        for issuer in 0..person.banks() {
            let parsed = citypay_identity::CardNumber::parse(&person.card_number(issuer)).map_err(|e| error("a card", &e))?;
            bank.register_holder(&parsed.card, &new.name, &id_number).map_err(|e| error("a card holder", &e))?;
            let (linked, class) = services.wallet.link_card(&resident, parsed.card.digits()).await.map_err(|e| error("linking a card", &e))?;
            resident.class = class;
            card.get_or_insert(linked.id);
        }
        let card = card.ok_or("no card")?;
        let (slot, secret) = services.checkout.enroll_device(&resident).await.map_err(|e| error("a phone", &e))?;
        let first = 50_000 + 1_000 * i64::try_from(index).unwrap_or(0);
        services.wallet.top_up(&resident, card, first, "first").await.map_err(|e| error("the first top-up", &e))?;
        let rider = crate::transit::enrol(&services.transit, &resident, seed, u64::try_from(index).unwrap_or(0)).await?;
        let mut client = Client::new(index, seed, resident, card, (slot, secret.expose().clone()), new.id_number, first, places.clone());
        client.rider = Some(rider);
        list.push(client);
    }
    Ok((list, network))
}
