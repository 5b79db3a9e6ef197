//! Assembling a city from a database: the migrations of every component, the shard writer, a
//! reader, the keys, and the services over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use citypay_api::routes::AppState;
use citypay_checkout::Checkout;
use citypay_directory::{Directory, DirectoryKeys, PasswordPolicy, SandboxBank, TokenKeys};
use citypay_shard::{Clock, Shard, ShardConfig, SystemClock};
use citypay_store::{DbUrl, Migration, ServiceReader};
use citypay_store_postgres::PostgresReader;
use citypay_store_sqlite::SqliteReader;
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::Wallet;

/// Every component's schema, in dependency order.
pub(crate) fn migrations() -> Vec<Migration> {
    citypay_directory::MIGRATIONS
        .iter()
        .chain(citypay_wallet::MIGRATIONS)
        .chain(citypay_checkout::MIGRATIONS)
        .chain(citypay_transit::MIGRATIONS)
        .chain(citypay_api::routes::MIGRATIONS)
        .copied()
        .collect()
}

/// A running city: its writer and the services over it.
pub(crate) struct City {
    pub(crate) shard: Shard,
    pub(crate) state: AppState,
}

/// Where the keys live by default: beside an embedded database, else `./citypay.keys`.
pub(crate) fn default_keys_path(db: &DbUrl) -> PathBuf {
    match db {
        DbUrl::Sqlite(path) => {
            let mut keys = path.as_os_str().to_owned();
            keys.push(".keys");
            PathBuf::from(keys)
        }
        DbUrl::Postgres(_) => PathBuf::from("citypay.keys"),
    }
}

/// The vault, index and token keys: from `CITYPAY_SEALING_KEYS`, `CITYPAY_INDEX_KEYS` and
/// `CITYPAY_TOKEN_KEYS` when set, else from the key file, which is created (mode 0600) with
/// fresh keys on first use. Losing the file loses the sealed personal data: back it up apart
/// from the database.
pub(crate) fn load_keys(path: &Path) -> anyhow::Result<DirectoryKeys> {
    let from_env = |name: &str| std::env::var(name).ok();
    if let (Some(s), Some(i), Some(t)) = (from_env("CITYPAY_SEALING_KEYS"), from_env("CITYPAY_INDEX_KEYS"), from_env("CITYPAY_TOKEN_KEYS")) {
        return build_keys(&s, &i, &t);
    }
    if !path.exists() {
        let text = format!(
            "sealing={}\nindex={}\ntokens={}\n",
            SealingKeys::generate_config().expose(),
            IndexKeys::generate_config().expose(),
            IndexKeys::generate_config().expose()
        );
        write_private(path, &text).with_context(|| format!("writing keys to {}", path.display()))?;
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading keys from {}", path.display()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .with_context(|| format!("{} has no {name}= line", path.display()))
    };
    build_keys(&field("sealing")?, &field("index")?, &field("tokens")?)
}

fn build_keys(sealing: &str, index: &str, tokens: &str) -> anyhow::Result<DirectoryKeys> {
    Ok(DirectoryKeys {
        sealing: SealingKeys::from_config(sealing).context("sealing keys")?,
        index: IndexKeys::from_config(index).context("index keys")?,
        tokens: TokenKeys::from_config(tokens).context("token keys")?,
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// The platform's ride-code signing key: `CITYPAY_RIDE_KEY` (64 hex digits, the Ed25519 seed)
/// when set, else the `ride=` line of the key file beside the other keys, added on first use.
pub(crate) fn load_ride_key(path: &Path) -> anyhow::Result<citypay_ride::PlatformKey> {
    let seed = match std::env::var("CITYPAY_RIDE_KEY") {
        Ok(hex) => hex,
        Err(_) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            match text.lines().find_map(|l| l.strip_prefix("ride=")) {
                Some(hex) => hex.to_owned(),
                None => {
                    use std::io::Write;
                    let hex: String = citypay_directory::random_bytes::<32>().iter().map(|b| format!("{b:02x}")).collect();
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut file = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("adding the ride key to {}", path.display()))?;
                    writeln!(file, "ride={hex}")?;
                    hex
                }
            }
        }
    };
    let bytes: Vec<u8> = (0..seed.len() / 2).filter_map(|i| u8::from_str_radix(seed.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    let seed: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("the ride key must be 64 hex digits"))?;
    let validity = citypay_ride::Validity::new(0, u32::MAX).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(citypay_ride::PlatformKey::from_seed(1, seed, validity))
}

/// Opens the database as its writer and assembles the services. Storage is opened on a
/// blocking thread: the PostgreSQL client runs its own runtime, which must not start inside
/// an async task.
pub(crate) async fn open(db: &DbUrl, keys: DirectoryKeys, ride_key: citypay_ride::PlatformKey, passwords: PasswordPolicy) -> anyhow::Result<City> {
    open_with(db, keys, ride_key, passwords, Arc::new(SystemClock), Arc::new(SystemClock), None).await
}

/// [`open`] with the writer's and the services' clocks and, for seeded simulations, a seed
/// for ids and secrets.
pub(crate) async fn open_with(
    db: &DbUrl,
    keys: DirectoryKeys,
    ride_key: citypay_ride::PlatformKey,
    passwords: PasswordPolicy,
    shard_clock: Arc<dyn Clock + Sync>,
    clock: Arc<dyn Clock + Sync>,
    seed: Option<[u8; 32]>,
) -> anyhow::Result<City> {
    let db = db.clone();
    let (shard, reader) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Shard, Arc<dyn ServiceReader>)> {
        let store = crate::open::writer(&db, &migrations())?;
        let shard = Shard::start(store, ShardConfig::DEFAULT, shard_clock)?;
        let reader: Arc<dyn ServiceReader> = match &db {
            DbUrl::Sqlite(path) => Arc::new(SqliteReader::open(path)?),
            DbUrl::Postgres(url) => Arc::new(PostgresReader::connect(url)?),
        };
        Ok((shard, reader))
    })
    .await??;
    let mut directory = Directory::new(shard.handle(), reader, keys, clock, passwords);
    if let Some(seed) = seed {
        directory = directory.seeded(seed);
    }
    directory.open_platform_accounts().await?;
    let state = AppState {
        wallet: Wallet::new(directory.clone(), Arc::new(SandboxBank)),
        checkout: Checkout::new(directory.clone()),
        transit: citypay_transit::Transit::new(directory.clone(), citypay_fares::Feed::tianjin(), ride_key),
        directory,
        token_ttl_s: 3_600,
    };
    Ok(City { shard, state })
}
