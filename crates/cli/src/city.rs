//! Assembling a city from a database: the migrations of every component, the shard writer, a
//! reader, the keys, and the services over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
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
        .chain(citypay_shard::seal::MIGRATIONS)
        .chain(citypay_transit::MIGRATIONS)
        .chain(citypay_bills::MIGRATIONS)
        .chain(citypay_settlement::MIGRATIONS)
        .chain(citypay_api::routes::MIGRATIONS)
        .chain(citypay_clearing::MIGRATIONS)
        .chain(&[KEY_SET_MIGRATION])
        .copied()
        .collect()
}

/// Which key set the city's data was written under: the check value of its journal key,
/// which every key set has, never rotates, and does not reveal the key.
const KEY_SET_MIGRATION: Migration = Migration {
    component: "city",
    version: 1,
    name: "the key set's check value",
    sqlite: "CREATE TABLE city_key_set (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), journal_check TEXT NOT NULL);",
    postgres: "CREATE TABLE city_key_set (singleton BIGINT PRIMARY KEY CHECK (singleton = 1), journal_check TEXT NOT NULL);",
};

/// Every line a city's key set holds, by its start: a server of a city on several servers
/// takes them all from the one key file and mints none.
const KEY_SET_LINES: [(&str, &str); 8] = [
    ("sealing=", "the vault's sealing keys"),
    ("index=", "the blind-index keys"),
    ("tokens=", "the token keys"),
    ("ride", "the ride-code key"),
    ("receipt=", "the receipt key"),
    ("journal=", "the journal's seal key"),
    ("gateway.", "the gateway's RSA key"),
    ("cluster=", "the cluster CA key"),
];

/// Writes a city's whole key set to `path`, which must not exist: every server of the city
/// gets a copy of this one file.
pub(crate) fn new_key_set(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!path.exists(), "{} exists already: a city has one key set", path.display());
    load_keys(path)?;
    load_ride_keys(path)?;
    anyhow::ensure!(load_gateway_keys(path)?.newest().is_some(), "no gateway key: install openssl");
    let ca = citypay_cluster::ClusterTls::new_ca_key()?;
    append_private(path, &format!("cluster={}\n", base64::engine::general_purpose::STANDARD.encode(ca))).with_context(|| format!("adding the cluster key to {}", path.display()))?;
    Ok(())
}

/// A city's key set for one of several servers: read from `path`, never minted; a key set
/// that lacks a key is refused, naming it.
pub(crate) fn load_key_set(path: &Path) -> anyhow::Result<(DirectoryKeys, SigningKeys, Vec<u8>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the city's key set {} (make one with `citypay keys new`, and give every server a copy)", path.display()))?;
    for (start, what) in KEY_SET_LINES {
        // The gateway's key may come from the environment instead, as on a single server.
        if start == "gateway." && std::env::var_os("CITYPAY_GATEWAY_KEY").is_some() {
            continue;
        }
        anyhow::ensure!(text.lines().any(|l| l.starts_with(start)), "{} has no {what}: every server of a city needs the whole key set (`citypay keys new`)", path.display());
    }
    let cluster = text.lines().find_map(|l| l.strip_prefix("cluster=")).context("no cluster key")?;
    let cluster = base64::engine::general_purpose::STANDARD.decode(cluster.trim()).context("the cluster key must be base64")?;
    Ok((load_keys(path)?, load_ride_keys(path)?, cluster))
}

/// Whether the database holds a ledger with anything in it (a server must not mint keys for
/// such a database: the data was sealed and indexed under keys it would not have).
pub(crate) fn holds_data(db: &DbUrl) -> bool {
    let has_file = match db {
        DbUrl::Sqlite(path) => path.exists(),
        DbUrl::Postgres(_) => true,
    };
    has_file
        && open_reader(db)
            .and_then(|reader| Ok(reader.query("SELECT last_batch FROM ledger_meta", &[])?))
            .is_ok_and(|rows| rows.first().and_then(|r| r.first()).is_some_and(|v| matches!(v, citypay_store::Value::Int(n) if *n > 0)))
}

/// Checks that `journal` is the key set the database's data was written under, recording it
/// (through the directory's shard) when none is recorded yet and `record` is set: the writer
/// records. A mismatch is an error: this server would not open what the others sealed, nor
/// find what they indexed.
pub(crate) async fn check_key_set(directory: &Directory, record: bool, journal: Option<[u8; 32]>) -> anyhow::Result<()> {
    let Some(journal) = journal else { return Ok(()) };
    let ours = citypay_vault::hex::encode(&citypay_shard::seal::SealKey::new(journal).check_value());
    // A database not yet migrated has no record: nothing to compare with.
    let recorded = directory.read("SELECT journal_check FROM city_key_set WHERE singleton = 1", Vec::new()).await.unwrap_or_default();
    match recorded.first().and_then(|r| r.first()) {
        Some(citypay_store::Value::Text(theirs)) if *theirs == ours => Ok(()),
        Some(_) => anyhow::bail!("this key set is not the one the city's data was written under: give every server the same key file"),
        None => {
            if !record {
                return Ok(());
            }
            let key = vec![("singleton", citypay_store::Value::Int(1))];
            let row = citypay_store::ServiceRow {
                table: "city_key_set",
                key: key.clone(),
                columns: vec![("journal_check", citypay_store::Value::Text(ours))],
                on_conflict: citypay_store::OnConflict::Ignore,
            };
            let command = citypay_shard::Command { event: None, guards: vec![citypay_shard::Guard::Absent { table: "city_key_set", key }], rows: vec![row], always_rows: Vec::new() };
            match directory.shard().submit(command).await {
                // Recorded now, or by another server meanwhile: check again.
                Ok(_) | Err(citypay_shard::SubmitError::GuardFailed { .. }) => Box::pin(check_key_set(directory, false, Some(journal))).await,
                Err(error) => Err(error).context("recording the key set's check value"),
            }
        }
    }
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

/// The platform's signing keys: the ride-code keys with the revoked key ids, and the seed of
/// the key that signs receipts.
#[derive(Debug)]
pub(crate) struct SigningKeys {
    pub(crate) keys: Vec<citypay_ride::PlatformKey>,
    pub(crate) revoked: Vec<u16>,
    pub(crate) receipt: [u8; 32],
    /// Seals the journal (see `citypay_shard::seal`); `None` leaves it unsealed.
    pub(crate) journal: Option<[u8; 32]>,
    /// Where the newest seal is kept, outside the database.
    pub(crate) head: Option<crate::seal_head::HeadStore>,
    /// The Alipay-compatible gateway's RSA key pairs.
    pub(crate) gateway: Arc<citypay_gateway::PlatformKeys>,
}

impl SigningKeys {
    /// The key that signs now (the newest).
    pub(crate) fn newest(&self) -> anyhow::Result<&citypay_ride::PlatformKey> {
        self.keys.iter().max_by_key(|k| k.key_id()).context("no ride key")
    }
}

fn parse_seed(hex: &str) -> anyhow::Result<[u8; 32]> {
    citypay_vault::hex::decode(hex).context("a ride key must be 64 hex digits")
}

fn hex32(bytes: &[u8; 32]) -> String {
    citypay_vault::hex::encode(bytes)
}

fn forever() -> anyhow::Result<citypay_ride::Validity> {
    citypay_ride::Validity::new(0, u32::MAX).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The signing keys from the environment: `CITYPAY_RIDE_KEY`, `CITYPAY_RECEIPT_KEY` and
/// `CITYPAY_JOURNAL_KEY` (64 hex digits each), all three or none; some without the others is
/// an error, never a silent fall back to the key file (which would mint new keys).
fn env_signing_keys() -> anyhow::Result<Option<[[u8; 32]; 3]>> {
    const NAMES: [&str; 3] = ["CITYPAY_RIDE_KEY", "CITYPAY_RECEIPT_KEY", "CITYPAY_JOURNAL_KEY"];
    let found = NAMES.map(|name| std::env::var(name).ok());
    match found {
        [None, None, None] => Ok(None),
        [Some(ride), Some(receipt), Some(journal)] => Ok(Some([parse_seed(&ride)?, parse_seed(&receipt)?, parse_seed(&journal)?])),
        _ => anyhow::bail!("set all of {} or none of them", NAMES.join(", ")),
    }
}

/// The platform's signing keys. Ride keys: `CITYPAY_RIDE_KEY` (see [`env_signing_keys`]) when
/// set, else the key file's lines `ride=SEED` (key 1, valid forever; added on first use) and,
/// after rotations, `ride.ID=NOT_BEFORE:NOT_AFTER:SEED`, with `ride.revoked=ID,ID`. The receipt
/// key: `CITYPAY_RECEIPT_KEY`, else the line `receipt=SEED` (added on first use). The journal
/// seal key: `CITYPAY_JOURNAL_KEY`, else the line `journal=SEED` (added on first use); the
/// newest seal goes to the file beside the key file ([`seal_head_path`]).
pub(crate) fn load_ride_keys(path: &Path) -> anyhow::Result<SigningKeys> {
    let head = Some(crate::seal_head::HeadStore::File(seal_head_path(path)));
    if let Some([seed, receipt, journal]) = env_signing_keys()? {
        let keys = vec![citypay_ride::PlatformKey::from_seed(1, seed, forever()?)];
        let gateway = load_gateway_keys(path)?;
        return Ok(SigningKeys { keys, revoked: Vec::new(), receipt, journal: Some(journal), head, gateway });
    }
    // A missing file is a new one; any other read error must not be taken for "no keys".
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let Parsed { mut keys, revoked, receipt, journal } = parse_key_file(&text)?;
    if keys.is_empty() {
        let seed = citypay_directory::random_bytes::<32>();
        append_private(path, &format!("ride={}\n", hex32(&seed))).with_context(|| format!("adding the ride key to {}", path.display()))?;
        keys.push(citypay_ride::PlatformKey::from_seed(1, seed, forever()?));
    }
    let added = |name: &str, found: Option<[u8; 32]>| -> anyhow::Result<[u8; 32]> {
        if let Some(seed) = found {
            return Ok(seed);
        }
        let seed = citypay_directory::random_bytes::<32>();
        append_private(path, &format!("{name}={}\n", hex32(&seed))).with_context(|| format!("adding the {name} key to {}", path.display()))?;
        Ok(seed)
    };
    let receipt = added("receipt", receipt)?;
    let journal = added("journal", journal)?;
    let gateway = load_gateway_keys(path)?;
    Ok(SigningKeys { keys, revoked, receipt, journal: Some(journal), head, gateway })
}

/// Whether notifications may go to loopback, private and link-local addresses:
/// `CITYPAY_ALLOW_PRIVATE_NOTIFY=1` (tests; a closed network whose merchants are inside it).
/// Off by default: a notification URL makes the server call an address of the merchant's
/// choosing, and Patroni's REST API and etcd listen on private addresses.
pub(crate) fn allow_private_notify() -> bool {
    std::env::var("CITYPAY_ALLOW_PRIVATE_NOTIFY").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A new 2048-bit RSA key pair, PKCS#8 DER, from OpenSSL's key generator (`openssl genpkey`,
/// Debian's `openssl` package): `ring` cannot generate RSA keys, and the pure-Rust `rsa`
/// crate's key generation is not as widely reviewed.
pub(crate) fn generate_rsa_key() -> anyhow::Result<Vec<u8>> {
    let output = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .stderr(std::process::Stdio::null())
        .output()
        .context("running openssl genpkey for the gateway's RSA key (install Debian's openssl package)")?;
    anyhow::ensure!(output.status.success(), "openssl genpkey failed");
    let pem = String::from_utf8(output.stdout).context("openssl's output")?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).context("openssl's PKCS#8 key")
}

/// The gateway's platform keys: `CITYPAY_GATEWAY_KEY` (base64 PKCS#8, key 1) when set, so
/// every server of a city signs with the same key; else the key file's lines
/// `gateway.ID=BASE64` (key 1 made with [`generate_rsa_key`] and added on first use).
pub(crate) fn load_gateway_keys(path: &Path) -> anyhow::Result<Arc<citypay_gateway::PlatformKeys>> {
    let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text.trim()).context("a gateway key must be base64 of a PKCS#8 RSA key");
    let key = |id: u32, der: &[u8]| citypay_gateway::PlatformKey::from_pkcs8(id, der).with_context(|| format!("gateway key {id}"));
    if let Ok(text) = std::env::var("CITYPAY_GATEWAY_KEY") {
        return Ok(Arc::new(citypay_gateway::PlatformKeys::new(vec![key(1, &decode(&text)?)?])));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut keys = Vec::new();
    for line in text.lines() {
        if let Some((id, value)) = line.strip_prefix("gateway.").and_then(|l| l.split_once('=')) {
            let id: u32 = id.parse().context("gateway key id")?;
            keys.push(key(id, &decode(value)?)?);
        }
    }
    if keys.is_empty() {
        // Without openssl the rest of the city still opens; the gateway then answers that it
        // has no key, until `citypay gateway add-key` runs where openssl is.
        match generate_rsa_key() {
            Ok(der) => {
                let line = format!("gateway.1={}\n", base64::engine::general_purpose::STANDARD.encode(&der));
                append_private(path, &line).with_context(|| format!("adding the gateway key to {}", path.display()))?;
                keys.push(key(1, &der)?);
            }
            Err(error) => eprintln!("warning: no gateway key: {error:#}"),
        }
    }
    Ok(Arc::new(citypay_gateway::PlatformKeys::new(keys)))
}

/// Adds a gateway key: the next id, made by [`generate_rsa_key`]. New apps are signed for by
/// it; existing apps keep theirs until moved (`PATCH /v1/gateway/apps/{app_id}`). Answers the
/// new key id. A running server reads it on restart.
pub(crate) fn add_gateway_key(path: &Path) -> anyhow::Result<u32> {
    anyhow::ensure!(std::env::var_os("CITYPAY_GATEWAY_KEY").is_none(), "the gateway key comes from CITYPAY_GATEWAY_KEY; add keys to the key file instead");
    let keys = load_gateway_keys(path)?;
    let next = keys.newest().map_or(1, |k| k.id() + 1);
    let line = format!("gateway.{next}={}\n", base64::engine::general_purpose::STANDARD.encode(generate_rsa_key()?));
    append_private(path, &line).with_context(|| format!("adding a gateway key to {}", path.display()))?;
    Ok(next)
}

/// The signing keys a key file holds, as written.
struct Parsed {
    keys: Vec<citypay_ride::PlatformKey>,
    revoked: Vec<u16>,
    receipt: Option<[u8; 32]>,
    journal: Option<[u8; 32]>,
}

fn parse_key_file(text: &str) -> anyhow::Result<Parsed> {
    let mut keys = Vec::new();
    let mut revoked = Vec::new();
    let mut receipt = None;
    let mut journal = None;
    for line in text.lines() {
        if let Some(seed) = line.strip_prefix("receipt=") {
            receipt = Some(parse_seed(seed)?);
        } else if let Some(seed) = line.strip_prefix("journal=") {
            journal = Some(parse_seed(seed)?);
        } else if let Some(seed) = line.strip_prefix("ride=") {
            keys.push(citypay_ride::PlatformKey::from_seed(1, parse_seed(seed)?, forever()?));
        } else if let Some(ids) = line.strip_prefix("ride.revoked=") {
            revoked = ids.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<_, _>>().context("ride.revoked")?;
        } else if let Some((id, rest)) = line.strip_prefix("ride.").and_then(|l| l.split_once('=')) {
            let mut parts = rest.splitn(3, ':');
            let (Some(from), Some(until), Some(seed)) = (parts.next(), parts.next(), parts.next()) else { anyhow::bail!("ride.{id}: NOT_BEFORE:NOT_AFTER:SEED") };
            let validity = citypay_ride::Validity::new(from.parse()?, until.parse()?).map_err(|e| anyhow::anyhow!("{e}"))?;
            keys.push(citypay_ride::PlatformKey::from_seed(id.parse().context("ride key id")?, parse_seed(seed)?, validity));
        }
    }
    Ok(Parsed { keys, revoked, receipt, journal })
}

/// The ride keys and revocations the key file holds now, for a running server to reload:
/// read only (nothing is added to the file), and refused unless some key can sign at `now`.
pub(crate) fn reload_ride_keys(path: &Path, now: u32) -> anyhow::Result<(Vec<citypay_ride::PlatformKey>, Vec<u16>)> {
    if env_signing_keys()?.is_some() {
        anyhow::bail!("the ride key comes from CITYPAY_RIDE_KEY; restart the server to change it");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let Parsed { keys, revoked, .. } = parse_key_file(&text)?;
    if !keys.iter().any(|k| k.validity().contains(now) && !revoked.contains(&k.key_id())) {
        anyhow::bail!("{} holds no ride key that can sign now", path.display());
    }
    Ok((keys, revoked))
}

/// The journal's seal key, read only (`CITYPAY_JOURNAL_KEY`, else the key file's `journal=`
/// line), for the audit, which must not add keys.
pub(crate) fn journal_key(keys: &Path) -> anyhow::Result<Option<[u8; 32]>> {
    // The environment counts as the writer counts it.
    if let Some([_, _, journal]) = env_signing_keys()? {
        return Ok(Some(journal));
    }
    let text = match std::fs::read_to_string(keys) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", keys.display())),
    };
    text.lines().find_map(|l| l.strip_prefix("journal=")).map(parse_seed).transpose()
}

/// The file beside the key file that holds the journal's newest seal.
pub(crate) fn seal_head_path(keys: &Path) -> PathBuf {
    let mut path = keys.as_os_str().to_owned();
    path.push(".head");
    PathBuf::from(path)
}

/// Which of the database's journal seals to read.
pub(crate) enum Seals {
    All,
    Newest,
    Oldest,
}

/// Journal seals stored in the database, by batch.
pub(crate) fn stored_seals(reader: &dyn ServiceReader, which: Seals) -> anyhow::Result<Vec<citypay_shard::seal::Seal>> {
    let sql = match which {
        Seals::All => "SELECT batch, rows, mac FROM journal_seals ORDER BY batch",
        Seals::Newest => "SELECT batch, rows, mac FROM journal_seals ORDER BY batch DESC LIMIT 1",
        Seals::Oldest => "SELECT batch, rows, mac FROM journal_seals ORDER BY batch LIMIT 1",
    };
    reader
        .query(sql, &[])?
        .iter()
        .map(|row| match row.as_slice() {
            [citypay_store::Value::Int(batch), citypay_store::Value::Int(rows), citypay_store::Value::Blob(mac)] => Ok(citypay_shard::seal::Seal {
                batch: u64::try_from(*batch)?,
                rows: u64::try_from(*rows)?,
                mac: mac.as_slice().try_into().context("a seal's MAC")?,
            }),
            _ => anyhow::bail!("a journal seal row"),
        })
        .collect()
}

fn append_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// Rotates the ride key: a new key signs from `now`; the previous one keeps verifying for
/// `overlap_s` more seconds (credentials it signed live a day at most). Rewrites the key file's
/// ride lines; the other lines stay as they are. Answers the new key id.
pub(crate) fn rotate_ride_key(path: &Path, now: u32, overlap_s: u32) -> anyhow::Result<u16> {
    let current = load_ride_keys(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seeds = ride_seeds(&text)?;
    let newest = current.newest()?.key_id();
    let next = newest.checked_add(1).context("no ride key id left")?;
    // Every line but the ride keys (rewritten below) stays; the revocation list stays too.
    let is_ride_key = |l: &str| l.starts_with("ride=") || (l.starts_with("ride.") && !l.starts_with("ride.revoked="));
    let mut lines: Vec<String> = text.lines().filter(|l| !is_ride_key(l)).map(str::to_owned).collect();
    for key in &current.keys {
        let validity = key.validity();
        let until = if key.key_id() == newest { validity.not_after.min(now.saturating_add(overlap_s)) } else { validity.not_after };
        let seed = seeds.get(&key.key_id()).context("a ride key without its seed")?;
        lines.push(format!("ride.{}={}:{}:{}", key.key_id(), validity.not_before, until, seed));
    }
    lines.push(format!("ride.{next}={now}:{}:{}", u32::MAX, hex32(&citypay_directory::random_bytes::<32>())));
    replace_key_file(path, &lines)?;
    Ok(next)
}

/// Revokes ride key `id`: validators refuse what it signed from their next download.
pub(crate) fn revoke_ride_key(path: &Path, id: u16) -> anyhow::Result<()> {
    let current = load_ride_keys(path)?;
    if !current.keys.iter().any(|k| k.key_id() == id) {
        anyhow::bail!("no ride key {id}");
    }
    let mut revoked = current.revoked;
    if !revoked.contains(&id) {
        revoked.push(id);
    }
    let text = std::fs::read_to_string(path)?;
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with("ride.revoked=")).map(str::to_owned).collect();
    lines.push(format!("ride.revoked={}", revoked.iter().map(u16::to_string).collect::<Vec<_>>().join(",")));
    replace_key_file(path, &lines)
}

/// Replaces the key file with `lines`, all or nothing: a private temporary file, synced to
/// disk, then renamed over it (the file also holds the sealing keys).
fn replace_key_file(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("replacing");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all((lines.join("\n") + "\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

/// The seed (hex) of every ride key line, by key id.
fn ride_seeds(text: &str) -> anyhow::Result<std::collections::HashMap<u16, String>> {
    let mut seeds = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(seed) = line.strip_prefix("ride=") {
            seeds.insert(1, seed.to_owned());
        } else if let Some((id, rest)) = line.strip_prefix("ride.").and_then(|l| l.split_once('='))
            && id != "revoked"
        {
            seeds.insert(id.parse()?, rest.rsplit(':').next().unwrap_or_default().to_owned());
        }
    }
    Ok(seeds)
}

/// A city's keys from `keys` (default: beside the database): the directory's and the ride keys.
pub(crate) fn load_city_keys(db: &DbUrl, keys: Option<&Path>) -> anyhow::Result<(DirectoryKeys, SigningKeys)> {
    let path = keys.map_or_else(|| default_keys_path(db), Path::to_path_buf);
    Ok((load_keys(&path)?, load_ride_keys(&path)?))
}

/// [`open`] with the keys read from `keys` (default: beside the database).
pub(crate) async fn open_from_files(db: &DbUrl, keys: Option<&Path>, passwords: PasswordPolicy) -> anyhow::Result<City> {
    let (directory_keys, ride_keys) = load_city_keys(db, keys)?;
    open(db, directory_keys, ride_keys, passwords).await
}

/// Where a one-shot command finds its city: the database and its key file.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CityArgs {
    /// Database: sqlite:PATH, a file path, or postgres://...
    #[arg(long, default_value = "citypay.db")]
    pub(crate) db: DbUrl,
    /// Key file (default: beside the database).
    #[arg(long)]
    pub(crate) keys: Option<PathBuf>,
}

impl CityArgs {
    /// Opens the city on a runtime of its own, runs `work` on it, and shuts the writer down
    /// whatever `work` answered.
    pub(crate) fn with_city<T>(&self, work: impl AsyncFnOnce(&City) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async {
            let city = open_from_files(&self.db, self.keys.as_deref(), PasswordPolicy::PRODUCTION).await.map_err(|error| {
                // A running server is the database's writer: say how to reach the city through it.
                if error.chain().any(|e| matches!(e.downcast_ref::<citypay_store::StoreError>(), Some(citypay_store::StoreError::Locked { .. }))) {
                    error.context("a running `citypay serve` holds this database: send the command through it (`--server URL` for settle and transit fare-run) or use its API")
                } else {
                    error
                }
            })?;
            let result = work(&city).await;
            city.shard.shutdown();
            result
        })
    }
}

/// Opens the database as its writer and assembles the services. Storage is opened on a
/// blocking thread: the PostgreSQL client runs its own runtime, which must not start inside
/// an async task.
pub(crate) async fn open(db: &DbUrl, keys: DirectoryKeys, ride_keys: SigningKeys, passwords: PasswordPolicy) -> anyhow::Result<City> {
    open_with(db, keys, ride_keys, passwords, Arc::new(SystemClock), Arc::new(SystemClock), None).await
}

/// [`open`] with the writer's and the services' clocks and, for seeded simulations, a seed
/// for ids and secrets.
pub(crate) async fn open_with(
    db: &DbUrl,
    keys: DirectoryKeys,
    ride_keys: SigningKeys,
    passwords: PasswordPolicy,
    shard_clock: Arc<dyn Clock + Sync>,
    clock: Arc<dyn Clock + Sync>,
    seed: Option<[u8; 32]>,
) -> anyhow::Result<City> {
    let db = db.clone();
    let (journal, head) = (ride_keys.journal, ride_keys.head.clone());
    let (shard, reader) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Shard, Arc<dyn ServiceReader>)> {
        let store = crate::open::writer(&db, &migrations())?;
        let reader = open_reader(&db)?;
        let shard = start_writer(store, reader.as_ref(), journal, head, shard_clock)?;
        Ok((shard, reader))
    })
    .await??;
    let state = services(shard.handle(), reader, keys, ride_keys, passwords, clock, seed);
    state.directory.open_platform_accounts().await?;
    Ok(City { shard, state })
}

/// The services' pooled reader of the database.
pub(crate) fn open_reader(db: &DbUrl) -> anyhow::Result<Arc<dyn ServiceReader>> {
    Ok(match db {
        DbUrl::Sqlite(path) => Arc::new(SqliteReader::open(path)?),
        DbUrl::Postgres(url) => Arc::new(PostgresReader::connect(url)?),
    })
}

/// Starts the writer on `store`, sealing the journal under `journal` with the head in `head`
/// when both are given, chained to the newest seal the database holds. Blocking (and, for a
/// head in etcd, on a thread of a runtime).
pub(crate) fn start_writer(
    store: Box<dyn citypay_store::LedgerStore>,
    reader: &dyn ServiceReader,
    journal: Option<[u8; 32]>,
    head: Option<crate::seal_head::HeadStore>,
    shard_clock: Arc<dyn Clock + Sync>,
) -> anyhow::Result<Shard> {
    Ok(match (journal, head) {
        (Some(key), Some(head)) => {
            let last = stored_seals(reader, Seals::Newest)?.pop();
            let first = stored_seals(reader, Seals::Oldest)?.pop().map(|s| s.batch);
            let key = citypay_shard::seal::SealKey::new(key);
            // Never seal under another key than the journal's: a key file that lost its
            // journal key would make every later seal fail the audit.
            if let Some(newest) = head.read()?
                && newest.key_check != key.check_value()
            {
                anyhow::bail!("the key file's journal key is not the one that sealed this database ({head}): restore the key file");
            }
            let writer = head.writer(key.check_value());
            let sealer = citypay_shard::seal::Sealer::new(key, last, first, writer);
            Shard::start_sealed(store, ShardConfig::DEFAULT, shard_clock, sealer)?
        }
        _ => Shard::start(store, ShardConfig::DEFAULT, shard_clock)?,
    })
}

/// The services over `shard` (a writer of this process, or a relay to the city's writer).
pub(crate) fn services(
    shard: citypay_shard::ShardHandle,
    reader: Arc<dyn ServiceReader>,
    keys: DirectoryKeys,
    ride_keys: SigningKeys,
    passwords: PasswordPolicy,
    clock: Arc<dyn Clock + Sync>,
    seed: Option<[u8; 32]>,
) -> AppState {
    let mut directory = Directory::new(shard, reader, keys, clock, passwords);
    if let Some(seed) = seed {
        directory = directory.seeded(seed);
    }
    let sandbox = SandboxBank::new();
    let bank: Arc<dyn citypay_directory::BankConnector> = Arc::new(sandbox.clone());
    let receipt_signer = citypay_bills::ReceiptSigner::from_seed(1, ride_keys.receipt);
    AppState::new(citypay_api::routes::AppServices {
        wallet: Wallet::new(directory.clone(), bank.clone()),
        settlement: citypay_settlement::Settlement::new(directory.clone(), bank),
        bills: citypay_bills::Bills::new(directory.clone(), receipt_signer),
        checkout: Checkout::new(directory.clone()),
        transit: {
            let transit = citypay_transit::Transit::with_keys(directory.clone(), citypay_fares::Feed::tianjin(), ride_keys.keys, ride_keys.revoked);
            match ride_keys.journal {
                Some(journal) => transit.with_derived_keys(Arc::new(move |id| Some(derived_ride_seed(&journal, id)))),
                None => transit,
            }
        },
        directory,
        token_ttl_s: 3_600,
        sandbox_bank: Some(sandbox),
        gateway: citypay_api::routes::GatewaySettings { keys: ride_keys.gateway, allow_private_notify: allow_private_notify() },
        country: std::sync::OnceLock::new(),
    })
}

/// The seed of ride key `id` of a city-wide rotation: every server derives it from the key set
/// they share (HMAC-SHA256 under the journal key, which every server of a city holds and the
/// database checks), so a rotation sends no secret anywhere.
pub(crate) fn derived_ride_seed(journal: &[u8; 32], id: u16) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(journal).expect("HMAC takes any key length");
    mac.update(b"citypay ride key ");
    mac.update(&id.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// A benchmark's resident made class III (checked at a counter by the set-up, operator 0) with
/// a card the sandbox bank issued them, linked; answers the card's id.
pub(crate) async fn bench_wallet(state: &AppState, resident: &citypay_directory::Resident) -> anyhow::Result<u64> {
    state.directory.record_verification(resident.id, &citypay_directory::Verification::FaceToFace { operator: 0 }).await?;
    let sandbox = state.sandbox_bank.as_ref().context("benchmarks need the sandbox bank")?;
    let (cards, _) = state.wallet.link_sandbox_cards(sandbox, resident, 1).await?;
    Ok(cards.first().context("the sandbox bank issued no card")?.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ride_keys_rotate_with_an_overlap_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "sealing=x\n").unwrap();
        let first = load_ride_keys(&path).unwrap();
        assert_eq!((first.keys.len(), first.newest().unwrap().key_id()), (1, 1));
        assert_eq!(rotate_ride_key(&path, 1_000, 86_400).unwrap(), 2);
        assert_eq!(load_ride_keys(&path).unwrap().receipt, first.receipt, "the receipt key is kept");
        let rotated = load_ride_keys(&path).unwrap();
        let old = rotated.keys.iter().find(|k| k.key_id() == 1).unwrap();
        assert_eq!(old.validity().not_after, 87_400, "the old key verifies for the overlap");
        assert_eq!(old.public().to_bytes(), first.keys[0].public().to_bytes(), "the same key, with a shorter validity");
        assert_eq!(rotated.newest().unwrap().validity().not_before, 1_000);
        revoke_ride_key(&path, 1).unwrap();
        assert_eq!(load_ride_keys(&path).unwrap().revoked, vec![1]);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("sealing=x\n"), "other keys untouched");
        assert!(revoke_ride_key(&path, 9).is_err());

        // A running server's reload reads, never writes, and refuses a set that cannot sign.
        let before = std::fs::read_to_string(&path).unwrap();
        let (keys, revoked) = reload_ride_keys(&path, 2_000).unwrap();
        assert_eq!((keys.len(), revoked), (2, vec![1]));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        revoke_ride_key(&path, 2).unwrap();
        assert!(reload_ride_keys(&path, 2_000).is_err(), "every key revoked");
        assert!(reload_ride_keys(&dir.path().join("missing"), 2_000).is_err());
        assert!(!dir.path().join("missing").exists(), "a missing file is not created");
    }
}
