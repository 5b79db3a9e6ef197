//! What must be unique in the country is claimed at its home shard: one ID number registered in
//! two cities on two shards at once is registered once; a mobile number held on one shard
//! refuses a registration on another, whose ID number claim is given back; a retry of the
//! winner is granted again and keeps its claims.

use std::future::Future;
use std::pin::Pin;

use citypay_clearing::{ClaimAnswer, ClaimPeer, ClaimRequest, Claims, ClearingError, home_of, register_in_country};
use citypay_directory::{DirectoryError, NewResident};
use citypay_routing::{Bucket, BucketMap, ShardId};
use citypay_testkit::{KeyConfigs, TestCity};

/// Both shards' claims, reached in this process.
struct Homes(Vec<Claims>);

impl ClaimPeer for Homes {
    fn ask(&self, home: ShardId, request: ClaimRequest) -> Pin<Box<dyn Future<Output = Result<ClaimAnswer, String>> + Send + '_>> {
        Box::pin(async move { self.0[usize::from(home) - 1].answer(request).await.map_err(|e| e.to_string()) })
    }
}

fn resident(city: u32, id_number: &str, mobile: &str) -> NewResident {
    NewResident { city, name: "李雷".into(), mobile: mobile.into(), id_number: id_number.into(), password: "correct horse".into() }
}

#[test]
fn one_id_number_registers_once_in_the_country() {
    let keys = KeyConfigs::generate();
    let hangzhou = TestCity::sharing(&[citypay_clearing::MIGRATIONS], &keys);
    let wuhan = TestCity::sharing(&[citypay_clearing::MIGRATIONS], &keys);
    // Shard 1 holds the first half of the buckets, shard 2 the second.
    let map = BucketMap::single(1).moved((512..1024).map(Bucket), 2);
    let homes = Homes(vec![Claims::new(hangzhou.directory.clone()), Claims::new(wuhan.directory.clone())]);
    hangzhou.rt.block_on(async {
        wuhan.directory.onboard_city(420100, "Wuhan").await.unwrap();
        // The same ID number, in Hangzhou on shard 1 and in Wuhan on shard 2, at once.
        let first = resident(330100, "11010519491231002X", "13800138000");
        let second = resident(420100, "11010519491231002X", "13900139000");
        let (one, two) = tokio::join!(
            register_in_country(&hangzhou.directory, 1, &map, &homes, &first, "reg-hz"),
            register_in_country(&wuhan.directory, 2, &map, &homes, &second, "reg-wh"),
        );
        let won = usize::from(one.is_ok()) + usize::from(two.is_ok());
        assert_eq!(won, 1, "exactly one registration wins: {one:?} {two:?}");
        let lost = if one.is_ok() { two } else { one };
        assert!(matches!(lost, Err(ClearingError::Directory(DirectoryError::IdentityTaken))), "{lost:?}");
        let (winner, winner_shard, owner, new) = if lost.is_err() && hangzhou.directory.resident_by_id_number("11010519491231002X").await.unwrap().is_some() {
            (&hangzhou, 1, "reg-hz", first)
        } else {
            (&wuhan, 2, "reg-wh", second)
        };
        // The key's home shard holds the claim for the winner's shard.
        let [(kind, key), _] = winner.directory.uniqueness_keys(&new).unwrap();
        let home = home_of(&key, &map);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let again = ClaimRequest::Claim { kind: kind.into(), key: hex.clone(), shard: 9, owner: "someone-else".into() };
        assert_eq!(homes.ask(home, again).await.unwrap(), ClaimAnswer::Held { shard: winner_shard });
        // The winner's retry is granted again, and (already registered) keeps its claims.
        let retry = register_in_country(&winner.directory, winner_shard, &map, &homes, &new, owner).await;
        assert!(matches!(retry, Err(ClearingError::Directory(DirectoryError::IdentityTaken))), "{retry:?}");
        let mine = ClaimRequest::Claim { kind: kind.into(), key: hex, shard: winner_shard, owner: owner.into() };
        assert_eq!(homes.ask(home, mine).await.unwrap(), ClaimAnswer::Granted);
        // The mobile number's home says where it is used (how a sender finds the recipient).
        let (mobile_kind, mobile_key) = winner.directory.mobile_key(&new.mobile).unwrap();
        let mobile_home = usize::from(home_of(&mobile_key, &map) - 1);
        assert_eq!(homes.0[mobile_home].used_on(mobile_kind, &mobile_key).await.unwrap(), Some(winner_shard));
        assert_eq!(homes.0[mobile_home].used_on(mobile_kind, &[0xAB; 32]).await.unwrap(), None);

        // A mobile number held elsewhere refuses the registration; its ID number is given
        // back, and registers with another number.
        let taken_mobile = resident(420100, "350102195501010022", &new.mobile);
        let refused = register_in_country(&wuhan.directory, 2, &map, &homes, &taken_mobile, "reg-3").await;
        assert!(matches!(refused, Err(ClearingError::Directory(DirectoryError::MobileTaken))), "{refused:?}");
        let fresh = resident(420100, "350102195501010022", "13700137000");
        register_in_country(&wuhan.directory, 2, &map, &homes, &fresh, "reg-4").await.unwrap();
    });
    hangzhou.assert_books_balance();
    wuhan.assert_books_balance();
}
