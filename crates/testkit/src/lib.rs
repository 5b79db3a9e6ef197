//! A city for the services' tests: a fresh embedded database with the migrations a test names,
//! a shard and a directory on one manual clock, and helpers for residents with money and for
//! merchants. Every service test used to build this by hand.

use std::path::PathBuf;
use std::sync::Arc;

use citypay_directory::{
    Category, Directory, DirectoryKeys, NewMerchant, NewResident, PasswordPolicy, PlatformAccounts, Resident, SandboxBank, TokenKeys,
};
use citypay_identity::AccountClass;
use citypay_ledger::Timestamp;
use citypay_shard::{ManualClock, Shard, ShardConfig};
use citypay_store::Migration;
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::Wallet;

/// 2026-11-24 09:00 in Hangzhou: where the clock starts.
pub const START: Timestamp = Timestamp::from_unix_seconds(1_795_482_000);

/// A test city.
pub struct TestCity {
    _dir: tempfile::TempDir,
    /// The database file.
    pub path: PathBuf,
    /// The writer.
    pub shard: Shard,
    /// The directory (Hangzhou, 330100, is onboarded).
    pub directory: Directory,
    /// The wallet service, for top-ups.
    pub wallet: Wallet,
    /// The clock of the shard and every service.
    pub clock: ManualClock,
    /// A runtime to drive the services from a plain test.
    pub rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for TestCity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCity").field("path", &self.path).finish_non_exhaustive()
    }
}

impl TestCity {
    /// A city with the directory's and wallet's tables and those of `migrations`.
    pub fn new(migrations: &[&[Migration]]) -> TestCity {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("city.db");
        let all: Vec<Migration> = [citypay_directory::MIGRATIONS, citypay_wallet::MIGRATIONS]
            .iter()
            .chain(migrations)
            .flat_map(|m| m.iter().copied())
            .collect();
        let store = SqliteStore::open_writer(&path, &all).expect("the store opens");
        let clock = ManualClock::new(START);
        let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, clock.clone()).expect("the shard starts");
        let keys = DirectoryKeys {
            sealing: SealingKeys::from_config(SealingKeys::generate_config().expose()).expect("sealing keys"),
            index: IndexKeys::from_config(IndexKeys::generate_config().expose()).expect("index keys"),
            tokens: TokenKeys::from_config(IndexKeys::generate_config().expose()).expect("token keys"),
        };
        let reader = Arc::new(SqliteReader::open(&path).expect("a reader"));
        let directory = Directory::new(shard.handle(), reader, keys, Arc::new(clock.clone()), PasswordPolicy::FAST_INSECURE);
        let wallet = Wallet::new(directory.clone(), Arc::new(SandboxBank));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        rt.block_on(async {
            directory.onboard_city(330100, "Hangzhou").await.expect("the city");
            directory.open_platform_accounts().await.expect("the platform's accounts");
        });
        TestCity { _dir: dir, path, shard, directory, wallet, clock, rt }
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.clock.set(self.clock_now().plus_seconds(seconds));
    }

    fn clock_now(&self) -> Timestamp {
        use citypay_shard::Clock;
        self.clock.now()
    }

    /// A class II resident with a card and `fen` in their wallet.
    pub async fn resident(&self, id_number: &str, mobile: &str, fen: i64) -> Resident {
        let new = NewResident {
            city: 330100,
            name: "Wang Wu".into(),
            mobile: mobile.into(),
            id_number: id_number.into(),
            password: "correct horse".into(),
            class: AccountClass::II,
        };
        let resident = self.directory.register_resident(&new).await.expect("registered");
        let card = self.wallet.link_card(&resident, "4111111111111111").await.expect("a card");
        if fen > 0 {
            self.wallet.top_up(&resident, card.id, fen, &format!("fund-{mobile}")).await.expect("topped up");
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
        let mut reader = SqliteStore::open_reader(&self.path).expect("a reader");
        let report = citypay_store::audit(&mut reader).expect("the audit runs");
        assert!(report.is_clean(), "{:?}", report.violations);
    }
}
