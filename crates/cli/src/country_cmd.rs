//! `citypay country`: the country's catalog (see `citypay_country::catalog`): its shards,
//! where each city lives, the bucket map.

use anyhow::Context;
use citypay_country::Catalog;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CountryCommand {
    /// Adds a shard (its database's URL) to the catalog, made on first use.
    AddShard {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// The shard's number.
        #[arg(long)]
        shard: u16,
        /// Its database (the URL its servers' --db names).
        #[arg(long)]
        db: String,
    },
    /// Places a city on a shard: gives it a group of buckets under the next map version. Then
    /// onboard it (`POST /v1/cities`) on a server of that shard.
    PlaceCity {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
        /// The city's GB/T 2260 code.
        #[arg(long)]
        city: u32,
        /// The shard it lives on.
        #[arg(long)]
        shard: u16,
    },
    /// Prints the shards, the map's version and how many buckets each shard holds.
    Show {
        /// The catalog's PostgreSQL URL.
        #[arg(long, env = "CITYPAY_CATALOG")]
        catalog: String,
    },
}

fn open(url: &str) -> anyhow::Result<Catalog> {
    Catalog::open(url).context("opening the country's catalog")
}

pub(crate) fn run(what: &CountryCommand) -> anyhow::Result<()> {
    match what {
        CountryCommand::AddShard { catalog, shard, db } => {
            open(catalog)?.add_shard(*shard, db)?;
            say!("shard {shard} is in the catalog")?;
        }
        CountryCommand::PlaceCity { catalog, city, shard } => {
            let group = open(catalog)?.place_city(*city, *shard)?;
            say!("city {city} lives on shard {shard}, in buckets {}..{}", group.start, group.end)?;
        }
        CountryCommand::Show { catalog } => {
            let mut catalog = open(catalog)?;
            let map = catalog.map()?;
            say!("map version {}", map.version)?;
            for (shard, db) in catalog.shards()? {
                let held = (0..citypay_routing::BUCKETS).filter(|b| map.shard_of(citypay_routing::Bucket(*b)) == shard).count();
                say!("shard {shard}: {held} buckets, {}", citypay_store::DbUrl::parse(&db).map_or_else(|_| "(a URL that does not parse)".to_owned(), |url| url.redacted()))?;
            }
        }
    }
    Ok(())
}
