//! A city for the services' tests: a fresh database with the migrations a test names (embedded,
//! or a new PostgreSQL database on the server `CITYPAY_TEST_PG` names), a shard and a directory
//! on one manual clock, and helpers for residents with money and for merchants.

use std::path::PathBuf;
use std::sync::Arc;

use citypay_directory::{
    Category, Directory, DirectoryKeys, NewMerchant, NewResident, PasswordPolicy, PlatformAccounts, Resident, SandboxBank, TokenKeys,
};
use citypay_identity::AccountClass;
use citypay_ledger::Timestamp;
use citypay_shard::{ManualClock, Shard, ShardConfig};
use citypay_store::{JournalSource, LedgerStore, Migration, ServiceReader};
use citypay_store_postgres::{PostgresReader, PostgresStore};
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::Wallet;

/// 2026-11-24 09:00 in Hangzhou: where the clock starts.
pub const START: Timestamp = Timestamp::from_unix_seconds(1_795_482_000);

/// A test city.
pub struct TestCity {
    _dir: tempfile::TempDir,
    /// The database.
    pub db: Backend,
    /// The writer.
    pub shard: Shard,
    /// The directory (Hangzhou, 330100, is onboarded).
    pub directory: Directory,
    /// The wallet service, for top-ups.
    pub wallet: Wallet,
    /// The wallet's bank: its register of card holders issues residents their cards.
    pub bank: SandboxBank,
    /// The clock of the shard and every service.
    pub clock: ManualClock,
    /// A runtime to drive the services from a plain test.
    pub rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for TestCity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCity").field("db", &self.db).finish_non_exhaustive()
    }
}

impl TestCity {
    /// A city on a fresh embedded database with the directory's and wallet's tables and those
    /// of `migrations`.
    pub fn new(migrations: &[&[Migration]]) -> TestCity {
        TestCity::sharing(migrations, &KeyConfigs::generate())
    }

    /// A shard of a country, on a fresh embedded database, with the key set `keys` that every
    /// shard of the country shares (blind indexes must agree across shards).
    pub fn sharing(migrations: &[&[Migration]], keys: &KeyConfigs) -> TestCity {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("city.db");
        TestCity::on(Backend::Sqlite(path), dir, migrations, keys)
    }

    /// The same on a fresh PostgreSQL database of the server in `CITYPAY_TEST_PG`; `None`
    /// without it (a failure instead under `CI=true`).
    pub fn postgres(migrations: &[&[Migration]]) -> Option<TestCity> {
        let Ok(server) = std::env::var("CITYPAY_TEST_PG") else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CITYPAY_TEST_PG is not set and CI=true: run through scripts/with-postgres.sh");
            eprintln!("skipping PostgreSQL: CITYPAY_TEST_PG not set (run through scripts/with-postgres.sh)");
            return None;
        };
        static DATABASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("citypay_kit_{}_{}", std::process::id(), DATABASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let admin = server.clone();
        let create = format!("CREATE DATABASE {name}");
        // The client runs its own runtime: not inside one of ours.
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("the server answers");
            client.batch_execute(&create).expect("a fresh database");
        })
        .join()
        .expect("creating the database");
        let (base, _) = server.rsplit_once('/').expect("CITYPAY_TEST_PG names a database");
        let dir = tempfile::tempdir().expect("a temporary directory");
        Some(TestCity::on(Backend::Postgres(format!("{base}/{name}")), dir, migrations, &KeyConfigs::generate()))
    }

    fn on(db: Backend, dir: tempfile::TempDir, migrations: &[&[Migration]], key_configs: &KeyConfigs) -> TestCity {
        let all: Vec<Migration> = [citypay_directory::MIGRATIONS, citypay_wallet::MIGRATIONS]
            .iter()
            .chain(migrations)
            .flat_map(|m| m.iter().copied())
            .collect();
        let opened = db.clone();
        let (store, reader) = std::thread::spawn(move || -> (Box<dyn LedgerStore>, Arc<dyn ServiceReader>) {
            match &opened {
                Backend::Sqlite(path) => (
                    Box::new(SqliteStore::open_writer(path, &all).expect("the store opens")),
                    Arc::new(SqliteReader::open(path).expect("a reader")),
                ),
                Backend::Postgres(url) => (
                    Box::new(PostgresStore::open_writer(url, &all).expect("the store opens")),
                    Arc::new(PostgresReader::connect(url).expect("a reader")),
                ),
            }
        })
        .join()
        .expect("opening the database");
        let clock = ManualClock::new(START);
        let shard = Shard::start(store, ShardConfig::DEFAULT, clock.clone()).expect("the shard starts");
        let keys = DirectoryKeys {
            sealing: SealingKeys::from_config(&key_configs.sealing).expect("sealing keys"),
            index: IndexKeys::from_config(&key_configs.index).expect("index keys"),
            tokens: TokenKeys::from_config(&key_configs.tokens).expect("token keys"),
        };
        let directory = Directory::new(shard.handle(), reader, keys, Arc::new(clock.clone()), PasswordPolicy::FAST_INSECURE);
        let bank = SandboxBank::new();
        let wallet = Wallet::new(directory.clone(), Arc::new(bank.clone()));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        rt.block_on(async {
            directory.onboard_city(330100, "Hangzhou").await.expect("the city");
            directory.open_platform_accounts().await.expect("the platform's accounts");
        });
        TestCity { _dir: dir, db, shard, directory, wallet, bank, clock, rt }
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.clock.set(self.clock_now().plus_seconds(seconds));
    }

    fn clock_now(&self) -> Timestamp {
        use citypay_shard::Clock;
        self.clock.now()
    }

    /// A class II resident (cards of three banks linked) with `fen` in their wallet.
    pub async fn resident(&self, id_number: &str, mobile: &str, fen: i64) -> Resident {
        let new = NewResident {
            city: 330100,
            name: "Wang Wu".into(),
            mobile: mobile.into(),
            id_number: id_number.into(),
            password: "correct horse".into(),
        };
        let resident = self.directory.register_resident(&new).await.expect("registered");
        let (cards, class) = self.wallet.link_sandbox_cards(&self.bank, &resident, 3).await.expect("cards");
        assert_eq!(class, AccountClass::II);
        let resident = Resident { class, ..resident };
        if fen > 0 {
            self.wallet.top_up(&resident, cards[0].id, fen, &format!("fund-{mobile}")).await.expect("topped up");
        }
        resident
    }

    /// A merchant of `category` paid out to `settlement_account`; its id.
    pub async fn merchant(&self, uscc: &str, category: Category, settlement_account: &str) -> u64 {
        let new = NewMerchant {
            city: 330100,
            name: format!("{} {uscc}", category.code()),
            uscc: uscc.into(),
            mcc: "5812".into(),
            category,
            settlement_account: settlement_account.into(),
            notify_url: None,
        };
        self.directory.onboard_merchant(&new).await.expect("onboarded").0.id
    }

    /// An account's posted balance.
    pub async fn balance(&self, account: u64) -> i64 {
        self.directory.shard().account(account).await.expect("the shard answers").map_or(0, |a| a.balance.net_posted())
    }

    /// Every account's posted balance sums to zero (custody mirrors the client money), and
    /// the audit of the journal is clean. Stops the writer.
    pub fn assert_books_balance(self) {
        let custody = self.rt.block_on(self.balance(PlatformAccounts::CNY.sandbox_custody));
        assert!(custody <= 0, "custody mirrors money held: {custody}");
        self.shard.shutdown();
        let db = self.db.clone();
        let report = std::thread::spawn(move || {
            let mut reader: Box<dyn JournalSource> = match &db {
                Backend::Sqlite(path) => Box::new(SqliteStore::open_reader(path).expect("a reader")),
                Backend::Postgres(url) => Box::new(PostgresStore::open_reader(url).expect("a reader")),
            };
            citypay_store::audit(reader.as_mut()).expect("the audit runs")
        })
        .join()
        .expect("auditing");
        assert!(report.is_clean(), "{:?}", report.violations);
    }
}

/// A directory key set, as configuration text: shards of one country share one.
#[derive(Clone, Debug)]
pub struct KeyConfigs {
    sealing: String,
    index: String,
    tokens: String,
}

impl KeyConfigs {
    /// A fresh key set.
    pub fn generate() -> KeyConfigs {
        KeyConfigs {
            sealing: SealingKeys::generate_config().expose().clone(),
            index: IndexKeys::generate_config().expose().clone(),
            tokens: IndexKeys::generate_config().expose().clone(),
        }
    }
}

/// Where a test city's database lives.
#[derive(Clone, Debug)]
pub enum Backend {
    /// An embedded database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
}
