//! Where an account lives in a country of shards (`../shared/guide/scale-out.md` §4.1–4.2).
//!
//! An account id is a `u64`: its kind in the top byte, its owner below. The owner number of a
//! resident or a merchant carries a **logical bucket** (one of [`BUCKETS`]) in its bits 46 to
//! 55 and a serial number below, fixed for life:
//!
//! ```text
//!  63      56 55        46 45                                  0
//! +----------+------------+-------------------------------------+
//! |   kind   |   bucket   |               serial                |
//! +----------+------------+-------------------------------------+
//! ```
//!
//! Buckets are grouped by home city: a city gets a group of [`CITY_BUCKETS`] buckets when it
//! is onboarded, and its residents and merchants are spread over them. A versioned
//! [`BucketMap`] says which shard holds each bucket; a shard's writer refuses a command that
//! touches an account of a bucket it does not hold ([`OwnedBuckets`]), so a server with a stale
//! map never writes on the wrong shard.
//!
//! Ids drawn before buckets (48 random bits) read as buckets 0 to 3, the [`LEGACY_BUCKETS`]:
//! a city's database from then opens unchanged as shard 0, which keeps them.

/// Logical buckets in a country.
pub const BUCKETS: u16 = 1024;
/// Where the bucket sits in an owner number.
pub const BUCKET_SHIFT: u32 = 46;
/// The serial number's bits below the bucket.
pub const SERIAL_MASK: u64 = (1 << BUCKET_SHIFT) - 1;
/// The buckets that ids drawn before buckets read as; never given to a city.
pub const LEGACY_BUCKETS: std::ops::Range<u16> = 0..4;
/// Buckets a city gets when it is onboarded.
pub const CITY_BUCKETS: u16 = 4;
/// The account kinds that live in buckets (residents' wallets, merchants' accounts); the
/// platform's own accounts (custody, fees, funds, clearing) are each shard's own.
pub const BUCKETED_KINDS: [u64; 2] = [1, 2];

/// A shard's number.
pub type ShardId = u16;

/// A logical bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(pub u16);

/// The bucket an owner number (a resident's or merchant's id) carries.
pub const fn bucket_of_owner(owner: u64) -> Bucket {
    Bucket(((owner >> BUCKET_SHIFT) & (BUCKETS as u64 - 1)) as u16)
}

/// The bucket of an account, when its kind lives in buckets.
pub fn bucket_of_account(account: u64) -> Option<Bucket> {
    let kind = account >> 56;
    BUCKETED_KINDS.contains(&kind).then(|| bucket_of_owner(account & ((1 << 56) - 1)))
}

/// An owner number in `bucket` from random bits (`drawn`): the serial is never zero.
pub const fn owner_in(bucket: Bucket, drawn: u64) -> u64 {
    let serial = drawn & SERIAL_MASK;
    ((bucket.0 as u64) << BUCKET_SHIFT) | if serial == 0 { 1 } else { serial }
}

/// The group of buckets the `index`-th onboarded city gets (0-based), or `None` past the last.
pub fn city_group(index: u16) -> Option<std::ops::Range<u16>> {
    let first = LEGACY_BUCKETS.end.checked_add(index.checked_mul(CITY_BUCKETS)?)?;
    let end = first.checked_add(CITY_BUCKETS)?;
    (end <= BUCKETS).then_some(first..end)
}

/// The bucket of a city's group that an entity falls in, spread by `spread` (a hash of what
/// makes the entity unique: an ID number, a USCC).
pub fn bucket_in(group: std::ops::Range<u16>, spread: u64) -> Bucket {
    let size = u64::from(group.end - group.start).max(1);
    Bucket(group.start + u16::try_from(spread % size).unwrap_or(0))
}

/// Which shard holds each bucket, and the version of that answer. A bucket being moved is
/// **frozen**: it stays on its shard in the map, names the shard it moves to, and neither
/// shard's writer takes a command that touches it, except the move's own
/// ([`OwnedBuckets::holds_for_move`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketMap {
    /// Raised by every change.
    pub version: u64,
    shards: Vec<ShardId>,
    moving: Vec<Option<ShardId>>,
}

impl BucketMap {
    /// Every bucket on `shard` (a country of one shard, or a city's database from before).
    pub fn single(shard: ShardId) -> BucketMap {
        BucketMap { version: 1, shards: vec![shard; usize::from(BUCKETS)], moving: vec![None; usize::from(BUCKETS)] }
    }

    /// A map of `version` from each bucket's shard (`None` unless there is one for every
    /// bucket).
    pub fn from_shards(version: u64, shards: Vec<ShardId>) -> Option<BucketMap> {
        (shards.len() == usize::from(BUCKETS)).then_some(BucketMap { version, shards, moving: vec![None; usize::from(BUCKETS)] })
    }

    /// This map with `bucket` frozen, moving to `to` (same version: the catalog's reading).
    #[must_use]
    pub fn with_moving(mut self, bucket: Bucket, to: ShardId) -> BucketMap {
        self.moving[usize::from(bucket.0 % BUCKETS)] = Some(to);
        self
    }

    /// Where `bucket` is moving, while it is frozen.
    pub fn moving_to(&self, bucket: Bucket) -> Option<ShardId> {
        self.moving[usize::from(bucket.0 % BUCKETS)]
    }

    /// The map with `buckets` frozen, moving to `shard`: the next version.
    #[must_use]
    pub fn frozen(&self, buckets: impl IntoIterator<Item = Bucket>, shard: ShardId) -> BucketMap {
        let mut next = self.clone();
        for bucket in buckets {
            next.moving[usize::from(bucket.0 % BUCKETS)] = Some(shard);
        }
        next.version += 1;
        next
    }

    /// Every shard named in the map.
    pub fn shards(&self) -> std::collections::BTreeSet<ShardId> {
        self.shards.iter().copied().collect()
    }

    /// The shard that holds `bucket`.
    pub fn shard_of(&self, bucket: Bucket) -> ShardId {
        self.shards[usize::from(bucket.0 % BUCKETS)]
    }

    /// The shard that holds `account` (the platform's accounts are every shard's own: `None`).
    pub fn shard_of_account(&self, account: u64) -> Option<ShardId> {
        bucket_of_account(account).map(|bucket| self.shard_of(bucket))
    }

    /// The map after `buckets` moved to `shard`: the next version.
    #[must_use]
    pub fn moved(&self, buckets: impl IntoIterator<Item = Bucket>, shard: ShardId) -> BucketMap {
        let mut next = self.clone();
        for bucket in buckets {
            next.shards[usize::from(bucket.0 % BUCKETS)] = shard;
            next.moving[usize::from(bucket.0 % BUCKETS)] = None;
        }
        next.version += 1;
        next
    }

    /// What `shard` holds in this map: its buckets, less the frozen ones, which both the
    /// shard they leave and the shard they move to hold for the move's commands only.
    pub fn owned_by(&self, shard: ShardId) -> OwnedBuckets {
        let owned = self.shards.iter().zip(&self.moving).map(|(s, moving)| *s == shard && moving.is_none()).collect();
        let frozen = self.shards.iter().zip(&self.moving).map(|(s, moving)| moving.is_some_and(|to| to == shard || *s == shard)).collect();
        OwnedBuckets { version: self.version, owned, frozen }
    }
}

/// The buckets one shard holds, as its writer checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedBuckets {
    /// The map version this comes from.
    pub version: u64,
    owned: Vec<bool>,
    frozen: Vec<bool>,
}

impl OwnedBuckets {
    /// Whether `bucket` is held here.
    pub fn holds(&self, bucket: Bucket) -> bool {
        self.owned.get(usize::from(bucket.0)).copied().unwrap_or(false)
    }

    /// Whether `bucket` is frozen here: moving to or from this shard.
    pub fn is_frozen(&self, bucket: Bucket) -> bool {
        self.frozen.get(usize::from(bucket.0)).copied().unwrap_or(false)
    }

    /// Whether a command of a move may touch `bucket` here: held, or frozen here.
    pub fn holds_for_move(&self, bucket: Bucket) -> bool {
        self.holds(bucket) || self.is_frozen(bucket)
    }

    /// The first bucket of `accounts` not held here, if any (the platform's accounts are
    /// always held).
    pub fn first_foreign(&self, accounts: impl IntoIterator<Item = u64>) -> Option<Bucket> {
        accounts.into_iter().filter_map(bucket_of_account).find(|bucket| !self.holds(*bucket))
    }

    /// [`OwnedBuckets::first_foreign`] for a command of a move (`during_move`), which frozen
    /// buckets take too.
    pub fn first_foreign_for(&self, accounts: impl IntoIterator<Item = u64>, during_move: bool) -> Option<Bucket> {
        let held = |bucket: &Bucket| if during_move { self.holds_for_move(*bucket) } else { self.holds(*bucket) };
        accounts.into_iter().filter_map(bucket_of_account).find(|bucket| !held(bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_number_carries_its_bucket() {
        let owner = owner_in(Bucket(517), 0xFFFF_FFFF_FFFF_FFFF);
        assert_eq!(bucket_of_owner(owner), Bucket(517));
        assert!(owner < 1 << 56, "the owner fits below the kind");
        assert_eq!(bucket_of_account((1 << 56) | owner), Some(Bucket(517)));
        assert_eq!(bucket_of_account((3 << 56) | owner), None, "custody is every shard's own");
        assert_eq!(owner_in(Bucket(9), 0) & SERIAL_MASK, 1, "never a zero serial");
        // An id drawn before buckets (48 random bits) reads as a legacy bucket.
        for drawn in [1u64, (1 << 48) - 1, 0xABCD_EF01_2345] {
            assert!(LEGACY_BUCKETS.contains(&bucket_of_owner(drawn).0));
        }
    }

    #[test]
    fn cities_get_groups_past_the_legacy_buckets() {
        assert_eq!(city_group(0), Some(4..8));
        assert_eq!(city_group(1), Some(8..12));
        assert_eq!(city_group(254), Some(1020..1024));
        assert_eq!(city_group(255), None);
        let group = city_group(3).unwrap();
        for spread in 0..100 {
            assert!(group.contains(&bucket_in(group.clone(), spread).0));
        }
    }

    #[test]
    fn a_map_moves_buckets_and_says_what_each_shard_holds() {
        let map = BucketMap::single(0);
        assert_eq!(map.shard_of(Bucket(700)), 0);
        let moved = map.moved([Bucket(4), Bucket(5)], 1);
        assert_eq!((moved.version, moved.shard_of(Bucket(4)), moved.shard_of(Bucket(6))), (2, 1, 0));
        let zero = moved.owned_by(0);
        let wallet_in_4 = (1 << 56) | owner_in(Bucket(4), 77);
        let wallet_in_6 = (1 << 56) | owner_in(Bucket(6), 77);
        assert_eq!(zero.first_foreign([wallet_in_6, wallet_in_4]), Some(Bucket(4)));
        assert_eq!(moved.owned_by(1).first_foreign([wallet_in_4, 3 << 56]), None);
        assert_eq!(moved.shard_of_account(wallet_in_4), Some(1));
    }

    #[test]
    fn a_frozen_bucket_takes_only_the_move_s_commands_on_both_shards() {
        let map = BucketMap::single(0).moved([Bucket(8)], 1);
        let frozen = map.frozen([Bucket(8)], 2);
        assert_eq!((frozen.version, frozen.shard_of(Bucket(8)), frozen.moving_to(Bucket(8))), (map.version + 1, 1, Some(2)));
        let wallet = (1 << 56) | owner_in(Bucket(8), 5);
        for shard in [1, 2] {
            let held = frozen.owned_by(shard);
            assert_eq!(held.first_foreign([wallet]), Some(Bucket(8)), "shard {shard} takes no payment");
            assert_eq!(held.first_foreign_for([wallet], true), None, "shard {shard} takes the move's commands");
        }
        assert_eq!(frozen.owned_by(0).first_foreign_for([wallet], true), Some(Bucket(8)), "a third shard takes nothing");
        let done = frozen.moved([Bucket(8)], 2);
        assert_eq!((done.shard_of(Bucket(8)), done.moving_to(Bucket(8))), (2, None));
        assert_eq!(done.owned_by(1).first_foreign_for([wallet], true), Some(Bucket(8)), "the shard it left takes nothing more");
        assert_eq!(done.owned_by(2).first_foreign([wallet]), None);
    }
}
