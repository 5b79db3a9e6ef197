//! The country's catalog: which shards there are (and their databases), which city has which
//! group of buckets, and the versioned bucket → shard map. A small PostgreSQL database: the
//! map and the cities change together in one transaction (placing a city gives it a group and
//! points the group's buckets at its shard under the next version), it is durable and
//! replicated like any shard, and the servers already speak PostgreSQL. (etcd, which Patroni
//! uses, would do too; it would add a second store with its own client for no gain.)
//!
//! The synchronous client: call it on a blocking thread, never an async one.

use citypay_routing::{BUCKETS, Bucket, BucketMap, LEGACY_BUCKETS, ShardId, city_group};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS catalog_shards (shard INT PRIMARY KEY, db TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS catalog_map (singleton INT PRIMARY KEY CHECK (singleton = 1), version BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS catalog_buckets (bucket INT PRIMARY KEY, shard INT NOT NULL);
    CREATE TABLE IF NOT EXISTS catalog_cities (city INT PRIMARY KEY, first_bucket INT NOT NULL UNIQUE, buckets INT NOT NULL);
    INSERT INTO catalog_map (singleton, version) VALUES (1, 1) ON CONFLICT DO NOTHING;";

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

/// A connection to the catalog.
pub struct Catalog {
    client: postgres::Client,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

fn shard_id(value: i32) -> Result<ShardId, CatalogError> {
    ShardId::try_from(value).map_err(|_| CatalogError::Refused(format!("shard {value} is out of range")))
}

impl Catalog {
    /// Connects to the catalog at `url`, creating its tables the first time.
    pub fn open(url: &str) -> Result<Catalog, CatalogError> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(SCHEMA)?;
        Ok(Catalog { client })
    }

    /// Adds shard `shard` with its database at `db` (again: the same answer; another
    /// database for it is refused).
    pub fn add_shard(&mut self, shard: ShardId, db: &str) -> Result<(), CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_shards IN EXCLUSIVE MODE", &[])?;
        let known = tx.query_opt("SELECT db FROM catalog_shards WHERE shard = $1", &[&i32::from(shard)])?;
        match known {
            Some(row) if row.get::<_, String>(0) == db => return Ok(()),
            Some(_) => return Err(CatalogError::Refused(format!("shard {shard} has another database already"))),
            None => {}
        }
        tx.execute("INSERT INTO catalog_shards (shard, db) VALUES ($1, $2)", &[&i32::from(shard), &db])?;
        tx.commit()?;
        Ok(())
    }

    /// Every shard and its database.
    pub fn shards(&mut self) -> Result<Vec<(ShardId, String)>, CatalogError> {
        let rows = self.client.query("SELECT shard, db FROM catalog_shards ORDER BY shard", &[])?;
        rows.iter().map(|row| Ok((shard_id(row.get(0))?, row.get(1)))).collect()
    }

    /// The bucket map now. Buckets no city was given (the legacy ones among them) are on the
    /// first shard.
    pub fn map(&mut self) -> Result<BucketMap, CatalogError> {
        let mut tx = self.client.build_transaction().read_only(true).isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
        let first = tx.query_one("SELECT MIN(shard) FROM catalog_shards", &[])?.get::<_, Option<i32>>(0);
        let first = shard_id(first.ok_or_else(|| CatalogError::Refused("the catalog has no shard yet".into()))?)?;
        let version = tx.query_one("SELECT version FROM catalog_map WHERE singleton = 1", &[])?.get::<_, i64>(0);
        let mut shards = vec![first; usize::from(BUCKETS)];
        for row in tx.query("SELECT bucket, shard FROM catalog_buckets", &[])? {
            let bucket = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
            if let Some(slot) = shards.get_mut(bucket) {
                *slot = shard_id(row.get(1))?;
            }
        }
        tx.commit()?;
        BucketMap::from_shards(u64::try_from(version).unwrap_or(0), shards).ok_or_else(|| CatalogError::Refused("the map has the wrong size".into()))
    }

    /// Places `city` on `shard`: gives it the next free group of buckets and points them at the
    /// shard under the next map version. Placing it again answers its group; a city placed on
    /// another shard is refused (moving it is `move_buckets`'s).
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

    /// Points `buckets` at `shard` under the next map version, if the map is still at
    /// `expected` (a move that raced another is refused, not applied twice). The new map.
    pub fn move_buckets(&mut self, buckets: &[Bucket], shard: ShardId, expected: u64) -> Result<BucketMap, CatalogError> {
        let mut tx = self.client.transaction()?;
        tx.execute("LOCK TABLE catalog_buckets, catalog_map IN EXCLUSIVE MODE", &[])?;
        let version = tx.query_one("SELECT version FROM catalog_map WHERE singleton = 1", &[])?.get::<_, i64>(0);
        if u64::try_from(version).ok() != Some(expected) {
            return Err(CatalogError::Refused(format!("the map is at version {version}, not {expected}")));
        }
        for bucket in buckets {
            if LEGACY_BUCKETS.contains(&bucket.0) {
                return Err(CatalogError::Refused("the legacy buckets stay on the first shard".into()));
            }
            tx.execute(
                "INSERT INTO catalog_buckets (bucket, shard) VALUES ($1, $2) ON CONFLICT (bucket) DO UPDATE SET shard = EXCLUDED.shard",
                &[&i32::from(bucket.0), &i32::from(shard)],
            )?;
        }
        tx.execute("UPDATE catalog_map SET version = version + 1 WHERE singleton = 1", &[])?;
        tx.commit()?;
        self.map()
    }
}
