//! The country's catalog: which shards there are (and their databases), which city has which
//! group of buckets, and the versioned bucket → shard map. A small PostgreSQL database: the
//! map and the cities change together in one transaction (placing a city gives it a group and
//! points the group's buckets at its shard under the next version), it is durable and
//! replicated like any shard, and the servers already speak PostgreSQL. (etcd, which Patroni
//! uses, would do too; it would add a second store with its own client for no gain.)
//!
//! The synchronous client: call it on a blocking thread, never an async one.

use citypay_routing::{BUCKETS, Bucket, BucketMap, ShardId, city_group};

/// Made on first use. The columns added since are added only where missing: an `ALTER TABLE`
/// locks its table exclusively even when it changes nothing, and servers open the catalog
/// while others read the map (two tables locked in opposite orders: a deadlock).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS catalog_shards (shard INT PRIMARY KEY, db TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS catalog_map (singleton INT PRIMARY KEY CHECK (singleton = 1), version BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS catalog_buckets (bucket INT PRIMARY KEY, shard INT NOT NULL);
    CREATE TABLE IF NOT EXISTS catalog_cities (city INT PRIMARY KEY, first_bucket INT NOT NULL UNIQUE, buckets INT NOT NULL);
    INSERT INTO catalog_map (singleton, version) VALUES (1, 1) ON CONFLICT DO NOTHING;
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'catalog_buckets' AND column_name = 'moving_since') THEN
            ALTER TABLE catalog_buckets ADD COLUMN IF NOT EXISTS moving_to INT;
            ALTER TABLE catalog_buckets ADD COLUMN IF NOT EXISTS moving_since BIGINT;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'catalog_shards' AND column_name = 'patroni_scope') THEN
            ALTER TABLE catalog_shards ADD COLUMN IF NOT EXISTS patroni_etcd TEXT;
            ALTER TABLE catalog_shards ADD COLUMN IF NOT EXISTS patroni_scope TEXT;
        END IF;
    END $$;";

/// A shard and where its database is: at `db`, or, on a Patroni cluster, on whichever node
/// is its primary now (`db`'s host and port then stand for it and are replaced by the
/// leader's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDatabase {
    pub shard: ShardId,
    pub db: String,
    pub patroni: Option<Patroni>,
}

/// A Patroni cluster: its etcd's endpoints (comma-separated) and its scope's prefix there
/// (`/service/citypay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patroni {
    pub etcd: String,
    pub scope: String,
}

/// Why the catalog could not answer.
#[derive(Debug)]
pub enum CatalogError {
    /// PostgreSQL's error.
    Database(postgres::Error),
    /// The catalog refuses: the message says why.
    Refused(String),
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogError::Database(error) => write!(f, "the catalog's database: {error}"),
            CatalogError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CatalogError {}

impl From<postgres::Error> for CatalogError {
    fn from(error: postgres::Error) -> CatalogError {
        CatalogError::Database(error)
    }
}

/// A city frozen for a move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freezing {
    /// The city's buckets.
    pub group: std::ops::Range<u16>,
    /// The shard it leaves.
    pub from: ShardId,
    /// The map version that froze it: the move's number (a resumed move keeps it).
    pub since: u64,
}

/// A connection to the catalog.
pub struct Catalog {
    client: postgres::Client,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

fn shard_database(row: &postgres::Row) -> Result<ShardDatabase, CatalogError> {
    let patroni = match (row.get::<_, Option<String>>(2), row.get::<_, Option<String>>(3)) {
        (Some(etcd), Some(scope)) => Some(Patroni { etcd, scope }),
        _ => None,
    };
    Ok(ShardDatabase { shard: shard_id(row.get(0))?, db: row.get(1), patroni })
}

fn shard_id(value: i32) -> Result<ShardId, CatalogError> {
    ShardId::try_from(value).map_err(|_| CatalogError::Refused(format!("shard {value} is out of range")))
}

/// The advisory lock class of moves (its second key is the city's code).
const MOVE_LOCK: i32 = 0x6d6f7665;

/// A city's move lock, held while this lives: see [`Catalog::lock_move`].
#[derive(Debug)]
pub struct MoveLock(Option<Catalog>);

impl Drop for MoveLock {
    fn drop(&mut self) {
        // A blocking connection is closed off the async runtime's threads, wherever the move
        // ends (done, failed, or cancelled).
        if let Some(catalog) = self.0.take() {
            std::thread::spawn(move || drop(catalog));
        }
    }
}

impl Catalog {
    /// Connects to the catalog at `url`, creating its tables the first time.
    pub fn open(url: &str) -> Result<Catalog, CatalogError> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(SCHEMA)?;
        Ok(Catalog { client })
    }

    /// Adds a shard with its database (again: the same answer; another database for it is
    /// refused).
    pub fn add_shard(&mut self, shard: &ShardDatabase) -> Result<(), CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_shards IN EXCLUSIVE MODE", &[])?;
        let number = i32::from(shard.shard);
        let known = tx.query_opt("SELECT shard, db, patroni_etcd, patroni_scope FROM catalog_shards WHERE shard = $1", &[&number])?;
        match known.map(|row| shard_database(&row)).transpose()? {
            Some(known) if known == *shard => return Ok(()),
            Some(_) => return Err(CatalogError::Refused(format!("shard {} has another database already", shard.shard))),
            None => {}
        }
        let (etcd, scope) = (shard.patroni.as_ref().map(|p| &p.etcd), shard.patroni.as_ref().map(|p| &p.scope));
        tx.execute("INSERT INTO catalog_shards (shard, db, patroni_etcd, patroni_scope) VALUES ($1, $2, $3, $4)", &[&number, &shard.db, &etcd, &scope])?;
        tx.commit()?;
        Ok(())
    }

    /// Every shard and its database.
    pub fn shards(&mut self) -> Result<Vec<ShardDatabase>, CatalogError> {
        let rows = self.client.query("SELECT shard, db, patroni_etcd, patroni_scope FROM catalog_shards ORDER BY shard", &[])?;
        rows.iter().map(shard_database).collect()
    }

    /// The bucket map now. Buckets no city was given (the legacy ones among them) are on the
    /// first shard.
    pub fn map(&mut self) -> Result<BucketMap, CatalogError> {
        let mut tx = self.client.build_transaction().read_only(true).isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
        let first = tx.query_one("SELECT MIN(shard) FROM catalog_shards", &[])?.get::<_, Option<i32>>(0);
        let first = shard_id(first.ok_or_else(|| CatalogError::Refused("the catalog has no shard yet".into()))?)?;
        let version = tx.query_one("SELECT version FROM catalog_map WHERE singleton = 1", &[])?.get::<_, i64>(0);
        let mut shards = vec![first; usize::from(BUCKETS)];
        let mut moving = Vec::new();
        for row in tx.query("SELECT bucket, shard, moving_to FROM catalog_buckets", &[])? {
            let bucket = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
            if let Some(slot) = shards.get_mut(bucket) {
                *slot = shard_id(row.get(1))?;
            }
            if let Some(to) = row.get::<_, Option<i32>>(2) {
                moving.push((Bucket(u16::try_from(bucket).unwrap_or(u16::MAX)), shard_id(to)?));
            }
        }
        tx.commit()?;
        let map = BucketMap::from_shards(u64::try_from(version).unwrap_or(0), shards).ok_or_else(|| CatalogError::Refused("the map has the wrong size".into()))?;
        Ok(moving.into_iter().fold(map, |map, (bucket, to)| map.with_moving(bucket, to)))
    }

    /// The map's version now (one row: what a server reads often, the whole map only when it
    /// changed).
    pub fn version(&mut self) -> Result<u64, CatalogError> {
        let version = self.client.query_one("SELECT version FROM catalog_map WHERE singleton = 1", &[])?.get::<_, i64>(0);
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// Freezes `city`'s buckets for a move to shard `to`, under the next map version: neither
    /// shard takes a command touching them from then on but the move's own. Freezing it again
    /// for the same shard (a move resumed) answers the same; a city moving elsewhere, or on
    /// `to` already, is refused. Answers the [`Freezing`].
    pub fn freeze_city(&mut self, city: u32, to: ShardId) -> Result<Freezing, CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_cities, catalog_buckets, catalog_map IN EXCLUSIVE MODE", &[])?;
        if tx.query_opt("SELECT 1 FROM catalog_shards WHERE shard = $1", &[&i32::from(to)])?.is_none() {
            return Err(CatalogError::Refused(format!("no shard {to} in the catalog")));
        }
        let code = i32::try_from(city).map_err(|_| CatalogError::Refused(format!("{city} is no city code")))?;
        let Some(row) = tx.query_opt(
            "SELECT c.first_bucket, c.buckets, b.shard, b.moving_to, b.moving_since FROM catalog_cities c JOIN catalog_buckets b ON b.bucket = c.first_bucket WHERE c.city = $1",
            &[&code],
        )?
        else {
            return Err(CatalogError::Refused(format!("city {city} is not placed in the catalog")));
        };
        let (first, count, from, moving) = (row.get::<_, i32>(0), row.get::<_, i32>(1), shard_id(row.get(2))?, row.get::<_, Option<i32>>(3));
        let group = u16::try_from(first).unwrap_or(0)..u16::try_from(first + count).unwrap_or(0);
        match moving {
            Some(already) if already == i32::from(to) => {
                let since = u64::try_from(row.get::<_, Option<i64>>(4).unwrap_or(0)).unwrap_or(0);
                return Ok(Freezing { group, from, since });
            }
            Some(other) => return Err(CatalogError::Refused(format!("city {city} is moving to shard {other}"))),
            None if from == to => return Err(CatalogError::Refused(format!("city {city} is on shard {to} already"))),
            None => {}
        }
        let since = tx.query_one("UPDATE catalog_map SET version = version + 1 WHERE singleton = 1 RETURNING version", &[])?.get::<_, i64>(0);
        tx.execute(
            "UPDATE catalog_buckets SET moving_to = $1, moving_since = $4 WHERE bucket >= $2 AND bucket < $3",
            &[&i32::from(to), &first, &(first + count), &since],
        )?;
        tx.commit()?;
        Ok(Freezing { group, from, since: u64::try_from(since).unwrap_or(0) })
    }

    /// Ends `city`'s move: its buckets are on the shard they moved to, under the next map
    /// version. A city not moving is left as it is.
    pub fn finish_move(&mut self, city: u32) -> Result<(), CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_cities, catalog_buckets, catalog_map IN EXCLUSIVE MODE", &[])?;
        let code = i32::try_from(city).unwrap_or(i32::MAX);
        let Some(row) = tx.query_opt("SELECT first_bucket, buckets FROM catalog_cities WHERE city = $1", &[&code])? else {
            return Err(CatalogError::Refused(format!("city {city} is not placed in the catalog")));
        };
        let (first, count) = (row.get::<_, i32>(0), row.get::<_, i32>(1));
        let changed = tx.execute(
            "UPDATE catalog_buckets SET shard = moving_to, moving_to = NULL, moving_since = NULL WHERE bucket >= $1 AND bucket < $2 AND moving_to IS NOT NULL",
            &[&first, &(first + count)],
        )?;
        if changed > 0 {
            tx.execute("UPDATE catalog_map SET version = version + 1 WHERE singleton = 1", &[])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Holds `city` for one move at a time: a second `cluster move` of it, run while one
    /// runs, is refused rather than copying, crossing or thawing beside it. The lock is the
    /// connection's: it ends with the move, or with the process that ran it.
    pub fn lock_move(mut self, city: u32) -> Result<MoveLock, CatalogError> {
        let held: bool = self.client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&MOVE_LOCK, &i32::try_from(city).unwrap_or(i32::MAX)])?.get(0);
        if !held {
            return Err(CatalogError::Refused(format!("city {city} is being moved by another run; wait for it to end, then run the move again if it stopped")));
        }
        Ok(MoveLock(Some(self)))
    }

    /// Gives up `city`'s move frozen at map version `since`, before any of its money crossed:
    /// its buckets stay where they are and take commands again, under the next map version.
    /// A later move's freeze is not undone.
    pub fn thaw_city(&mut self, city: u32, since: u64) -> Result<(), CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_cities, catalog_buckets, catalog_map IN EXCLUSIVE MODE", &[])?;
        let changed = tx.execute(
            "UPDATE catalog_buckets SET moving_to = NULL, moving_since = NULL FROM catalog_cities c
             WHERE c.city = $1 AND bucket >= c.first_bucket AND bucket < c.first_bucket + c.buckets AND moving_to IS NOT NULL AND moving_since = $2",
            &[&i32::try_from(city).unwrap_or(i32::MAX), &i64::try_from(since).unwrap_or(i64::MAX)],
        )?;
        if changed > 0 {
            tx.execute("UPDATE catalog_map SET version = version + 1 WHERE singleton = 1", &[])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Places `city` on `shard`: gives it the next free group of buckets and points them at the
    /// shard under the next map version. Placing it again answers its group; a city placed on
    /// another shard is refused (moving it is `freeze_city` and `finish_move`'s).
    pub fn place_city(&mut self, city: u32, shard: ShardId) -> Result<std::ops::Range<u16>, CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_cities, catalog_buckets, catalog_map IN EXCLUSIVE MODE", &[])?;
        if tx.query_opt("SELECT 1 FROM catalog_shards WHERE shard = $1", &[&i32::from(shard)])?.is_none() {
            return Err(CatalogError::Refused(format!("no shard {shard} in the catalog")));
        }
        let code = i32::try_from(city).map_err(|_| CatalogError::Refused(format!("{city} is no city code")))?;
        if let Some(row) = tx.query_opt("SELECT first_bucket, buckets FROM catalog_cities WHERE city = $1", &[&code])? {
            let (first, count) = (row.get::<_, i32>(0), row.get::<_, i32>(1));
            let group = u16::try_from(first).unwrap_or(0)..u16::try_from(first + count).unwrap_or(0);
            let on = tx.query_one("SELECT shard FROM catalog_buckets WHERE bucket = $1", &[&first])?.get::<_, i32>(0);
            if on != i32::from(shard) {
                return Err(CatalogError::Refused(format!("city {city} is on shard {on}")));
            }
            return Ok(group);
        }
        let placed = tx.query_one("SELECT COUNT(*) FROM catalog_cities", &[])?.get::<_, i64>(0);
        let group = u16::try_from(placed).ok().and_then(city_group).ok_or_else(|| CatalogError::Refused("every bucket is given to a city".into()))?;
        tx.execute(
            "INSERT INTO catalog_cities (city, first_bucket, buckets) VALUES ($1, $2, $3)",
            &[&code, &i32::from(group.start), &i32::from(group.end - group.start)],
        )?;
        for bucket in group.clone() {
            tx.execute(
                "INSERT INTO catalog_buckets (bucket, shard) VALUES ($1, $2) ON CONFLICT (bucket) DO UPDATE SET shard = EXCLUDED.shard",
                &[&i32::from(bucket), &i32::from(shard)],
            )?;
        }
        tx.execute("UPDATE catalog_map SET version = version + 1 WHERE singleton = 1", &[])?;
        tx.commit()?;
        Ok(group)
    }

    /// Where `city` was placed: its group and its shard.
    pub fn city(&mut self, city: u32) -> Result<Option<(std::ops::Range<u16>, ShardId)>, CatalogError> {
        let row = self.client.query_opt(
            "SELECT c.first_bucket, c.buckets, b.shard FROM catalog_cities c JOIN catalog_buckets b ON b.bucket = c.first_bucket WHERE c.city = $1",
            &[&i32::try_from(city).unwrap_or(i32::MAX)],
        )?;
        let Some(row) = row else { return Ok(None) };
        let (first, count) = (row.get::<_, i32>(0), row.get::<_, i32>(1));
        let group = u16::try_from(first).unwrap_or(0)..u16::try_from(first + count).unwrap_or(0);
        Ok(Some((group, shard_id(row.get(2))?)))
    }
}
