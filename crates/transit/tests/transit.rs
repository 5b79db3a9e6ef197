//! Transit end to end at the service level, on the embedded store: credentials, offline
//! validation, idempotent uploads, duplicate codes flagged, the fare run (re-run, late taps),
//! arrears and the deny list; the books balance after.

use std::sync::Arc;

use citypay_directory::{
    Category, Directory, DirectoryKeys, NewMerchant, NewResident, PasswordPolicy, PlatformAccounts, Resident, SandboxBank, TokenKeys,
};
use citypay_identity::AccountClass;
use citypay_ledger::Timestamp;
use citypay_ride::{Gate, PlatformKey, Policy, RiderDevice, RiderKey, Validator, Validity};
use citypay_shard::{ManualClock, Shard, ShardConfig};
use citypay_store::{Migration, OnConflict, ServiceRow, Value};
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_transit::{Transit, TransitError, ValidatorInfo};
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::Wallet;

/// 2025-03-03 07:00 in Tianjin.
const MORNING: u64 = 1_740_956_400;
/// 19:00 that day, when the validators upload (a tap is never dated after its upload).
const EVENING: u64 = MORNING + 12 * 3_600;

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    shard: Shard,
    clock: ManualClock,
    directory: Directory,
    wallet: Wallet,
    transit: Transit,
    bank: SandboxBank,
    rt: tokio::runtime::Runtime,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.db");
    let migrations: Vec<Migration> =
        citypay_directory::MIGRATIONS.iter().chain(citypay_wallet::MIGRATIONS).chain(citypay_transit::MIGRATIONS).copied().collect();
    let store = SqliteStore::open_writer(&path, &migrations).unwrap();
    let clock = ManualClock::new(Timestamp::from_unix_seconds(MORNING));
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, clock.clone()).unwrap();
    let keys = DirectoryKeys {
        sealing: SealingKeys::from_config(SealingKeys::generate_config().expose()).unwrap(),
        index: IndexKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
        tokens: TokenKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
    };
    let reader = Arc::new(SqliteReader::open(&path).unwrap());
    let directory = Directory::new(shard.handle(), reader, keys, Arc::new(clock.clone()), PasswordPolicy::FAST_INSECURE);
    let bank = SandboxBank::new();
    let wallet = Wallet::new(directory.clone(), Arc::new(bank.clone()));
    let key = PlatformKey::from_seed(1, [7; 32], Validity::new(0, u32::MAX).unwrap());
    let transit = Transit::new(directory.clone(), citypay_fares::Feed::tianjin(), key);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        directory.onboard_city(120000, "Tianjin").await.unwrap();
        directory.open_platform_accounts().await.unwrap();
    });
    World { _dir: dir, path, shard, clock, directory, wallet, transit, bank, rt }
}

fn resident(w: &World, id_number: &str, mobile: &str, yuan: i64) -> (Resident, u64) {
    w.rt.block_on(async {
        let new = NewResident {
            city: 120000,
            name: "Zhang San".into(),
            mobile: mobile.into(),
            id_number: id_number.into(),
            password: "correct horse".into(),
        };
        let r = w.directory.register_resident(&new).await.unwrap();
        // Cards of three banks: class II.
        let (cards, class) = w.wallet.link_sandbox_cards(&w.bank, &r, 3).await.unwrap();
        assert_eq!(class, AccountClass::II);
        let card = &cards[0];
        if yuan > 0 {
            w.wallet.top_up(&r, card.id, yuan * 100, &format!("fund-{mobile}")).await.unwrap();
        }
        (Resident { class, ..r }, card.id)
    })
}

/// The city's transit operator: (merchant id, its account).
fn transit_operator(w: &World) -> (u64, u64) {
    operator_named(w, "天津公交地铁", "91350100M000100Y43")
}

/// A second operator (the metro company, when the first runs the buses).
fn metro_operator(w: &World) -> (u64, u64) {
    let organization = "MA000027";
    let body = format!("91120000{organization}{}", citypay_identity::uscc::organization_check_character(organization).unwrap());
    let uscc = format!("{body}{}", citypay_identity::uscc::check_character(&body).unwrap());
    operator_named(w, "天津轨道交通", &uscc)
}

fn operator_named(w: &World, name: &str, uscc: &str) -> (u64, u64) {
    w.rt.block_on(async {
        let (m, _) = w
            .directory
            .onboard_merchant(&NewMerchant {
                city: 120000,
                name: name.into(),
                uscc: uscc.into(),
                mcc: "4111".into(),
                category: Category::Transit,
                settlement_account: "6222020200112233446".into(),
                notify_url: None,
            })
            .await
            .unwrap();
        (m.id, m.account)
    })
}

fn balance(w: &World, account: u64) -> i64 {
    w.rt.block_on(async {
        let rows = w
            .directory
            .read(
                "SELECT credits_posted - debits_posted FROM accounts WHERE id = ?1",
                vec![Value::Int(citypay_store::u64_to_column(account))],
            )
            .await
            .unwrap();
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        }
    })
}

fn device(w: &World, resident: &Resident, seed: u8) -> RiderDevice {
    let key = RiderKey::from_seed([seed; 32]);
    let credential = w.rt.block_on(w.transit.issue_credential(resident, key.public_bytes())).unwrap();
    RiderDevice::new(key, credential)
}

fn gate(v: &ValidatorInfo, direction: citypay_ride::Direction) -> Gate {
    Gate { validator_id: v.id, stop_or_route: 0, direction }
}

const ALICE: (&str, &str) = ("11010519491231002X", "13800138000");
const BOB: (&str, &str) = ("440524198001010013", "13900139000");

#[test]
fn rides_are_fared_once_per_day_and_arrears_deny_the_rider() {
    let w = world();
    let (alice, _) = resident(&w, ALICE.0, ALICE.1, 100);
    let (bob, bob_card) = resident(&w, BOB.0, BOB.1, 0);
    let (operator, operator_account) = transit_operator(&w);
    let register = |route: &str, stop: &str, seed: u8| {
        w.rt.block_on(w.transit.register_validator(operator, route, stop, RiderKey::from_seed([seed; 32]).public_bytes())).unwrap()
    };
    let bus = register("824", "B_XIZHAN", 100);
    let gate_in = register("M1", "M1_LIUYUAN", 101);
    let gate_out = register("M1", "M1_XIBEIJIAO", 102);
    // Only stops of the feed, only transit operators.
    assert!(matches!(
        w.rt.block_on(w.transit.register_validator(operator, "M1", "B_XIZHAN", [9; 32])),
        Err(TransitError::InvalidField { field: "stop_id", .. })
    ));

    // Validators work offline with the platform keys only.
    let mut bus_device = Validator::new(w.transit.keyring(), Policy::default());
    let mut in_device = Validator::new(w.transit.keyring(), Policy::default());
    let mut out_device = Validator::new(w.transit.keyring(), Policy::default());
    let mut alice_phone = device(&w, &alice, 1);
    let mut bob_phone = device(&w, &bob, 2);
    // The credit a credential carries follows the wallet: Alice's 100 yuan get the full
    // ceiling, Bob's empty wallet one ride at the dearest fare.
    assert_eq!(alice_phone.credential().terms.ceiling_fen, citypay_transit::CREDENTIAL_CEILING_FEN);
    assert_eq!(bob_phone.credential().terms.ceiling_fen, citypay_transit::CREDENTIAL_CREDIT_FEN);
    assert_eq!(w.transit.fare_estimate("824", "B_XIZHAN"), 200, "a bus line's flat fare");
    assert_eq!(w.transit.fare_estimate("M1", "M1_LIUYUAN"), 500, "the line's dearest fare from the station");
    let t0 = u32::try_from(MORNING + 3_600).unwrap();
    let in_ = citypay_ride::Direction::In;
    let out = citypay_ride::Direction::Out;
    bus_device.validate(&alice_phone.next_code(t0).encode(), t0, gate(&bus, in_)).unwrap();
    in_device.validate(&alice_phone.next_code(t0 + 1_800).encode(), t0 + 1_800, gate(&gate_in, in_)).unwrap();
    out_device.validate(&alice_phone.next_code(t0 + 2_800).encode(), t0 + 2_800, gate(&gate_out, out)).unwrap();
    let bob_code = bob_phone.next_code(t0 + 60).encode();
    bus_device.validate(&bob_code, t0 + 60, gate(&bus, in_)).unwrap();
    // The same code shown at the metro gate too (a copied screenshot): the gate does not know.
    in_device.validate(&bob_code, t0 + 61, gate(&gate_in, in_)).unwrap();

    let bus_taps = bus_device.drain_taps();
    let in_taps = in_device.drain_taps();
    let out_taps = out_device.drain_taps();
    w.clock.set(Timestamp::from_unix_seconds(EVENING));
    w.rt.block_on(async {
        let t = &w.transit;
        assert_eq!(t.upload_taps(&bus, &bus_taps).await.unwrap().stored, 2);
        assert_eq!(t.upload_taps(&gate_in, &in_taps).await.unwrap().stored, 2);
        t.upload_taps(&gate_out, &out_taps).await.unwrap();
        // A retried upload stores nothing twice; taps of another validator are refused.
        assert_eq!(t.upload_taps(&bus, &bus_taps).await.unwrap().already, 2);
        assert!(t.upload_taps(&gate_in, &bus_taps).await.is_err());
    });

    let day = citypay_fares::service_day(i64::from(t0));
    assert!(matches!(w.rt.block_on(w.transit.fare_day(day)), Err(TransitError::DayNotClosed(_))));
    w.clock.set(Timestamp::from_unix_seconds(MORNING + 24 * 3_600));
    let alice_before = balance(&w, alice.wallet);
    let run = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    // Alice's day, priced by the fare engine from the same taps.
    let expected = citypay_fares::fare_day(
        w.transit.feed(),
        &[
            citypay_fares::Tap::new("B_XIZHAN", "824", i64::from(t0), citypay_fares::Direction::In, "ride_code"),
            citypay_fares::Tap::new("M1_LIUYUAN", "M1", i64::from(t0) + 1_800, citypay_fares::Direction::In, "ride_code"),
            citypay_fares::Tap::new("M1_XIBEIJIAO", "M1", i64::from(t0) + 2_800, citypay_fares::Direction::Out, "ride_code"),
        ],
    )
    .total_fen;
    assert!(expected > 0);
    assert_eq!(alice_before - balance(&w, alice.wallet), expected);
    assert_eq!((run.riders, run.arrears, run.arrears_amount), (2, 1, 200), "Bob's bus fare is owed");
    assert_eq!(run.charged, expected);
    assert_eq!(run.duplicates, 1, "the copied code is flagged, not fared");

    // Bob is denied until he pays; he cannot get a new credential meanwhile.
    w.rt.block_on(async {
        let bob_ref = w.transit.account_ref(&bob).await.unwrap();
        assert_eq!(w.transit.deny_list().await.unwrap(), vec![bob_ref]);
        assert!(matches!(w.transit.issue_credential(&bob, [5; 32]).await, Err(TransitError::InArrears)));
    });
    let mut denied = Validator::new(w.transit.keyring(), Policy::default());
    for account in w.rt.block_on(w.transit.deny_list()).unwrap() {
        denied.deny_account(account);
    }
    let later = t0 + 24 * 3_600;
    assert!(denied.validate(&bob_phone.next_code(later).encode(), later, gate(&bus, in_)).is_err());

    // A re-run charges nothing more.
    let again = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!((again.charged, again.unchanged, again.arrears, again.duplicates), (0, 2, 0, 1));

    // A late tap (uploaded after the run) changes Alice's day: only the difference moves.
    let mut late_bus = Validator::new(w.transit.keyring(), Policy::default());
    let t_late = t0 + 5 * 3_600;
    late_bus.validate(&alice_phone.next_code(t_late).encode(), t_late, gate(&bus, in_)).unwrap();
    let mut late_taps = late_bus.drain_taps();
    late_taps[0].sequence = 100; // this device's own numbering continues after the first upload
    w.rt.block_on(w.transit.upload_taps(&bus, &late_taps)).unwrap();
    let before_late = balance(&w, alice.wallet);
    let rerun = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!(rerun.charged, 200, "one more bus ride");
    assert_eq!(before_late - balance(&w, alice.wallet), 200);

    // Bob tops up and pays: off the deny list, a new credential is issued.
    w.rt.block_on(async {
        w.wallet.top_up(&bob, bob_card, 1_000, "bob-1").await.unwrap();
        // A frozen wallet's rider is denied at the gates (a lost phone rides no more), until it thaws.
        let owing = w.transit.deny_list().await.unwrap();
        assert_eq!(owing.len(), 1, "Bob owes");
        w.directory.freeze_wallet(alice.id).await.unwrap();
        assert_eq!(w.transit.deny_list().await.unwrap().len(), 2, "Alice's frozen wallet is denied too");
        w.directory.unfreeze_wallet(alice.id, "correct horse", &citypay_directory::SignInFrom::default()).await.unwrap();
        assert_eq!(w.transit.deny_list().await.unwrap(), owing);
        // Frozen, his wallet pays no arrears and gets no credential; unfrozen, it does.
        w.directory.freeze_wallet(bob.id).await.unwrap();
        let frozen = |r: Result<_, TransitError>| matches!(r, Err(TransitError::Directory(citypay_directory::DirectoryError::WalletFrozen)));
        assert!(frozen(w.transit.pay_arrears(&bob).await));
        assert!(frozen(w.transit.issue_credential(&bob, [5; 32]).await.map(|_| 0)));
        w.directory.unfreeze_wallet(bob.id, "correct horse", &citypay_directory::SignInFrom::default()).await.unwrap();
        assert_eq!(w.transit.pay_arrears(&bob).await.unwrap(), 200);
        assert!(w.transit.deny_list().await.unwrap().is_empty());
        w.transit.issue_credential(&bob, [5; 32]).await.unwrap();
        assert_eq!(w.transit.pay_arrears(&bob).await.unwrap(), 0, "nothing left to pay");
        let (trips, revenue) = w.transit.revenue(operator, day).await.unwrap();
        assert_eq!(revenue, expected + 200 + 200);
        assert!(trips >= 3);
    });
    assert_eq!(balance(&w, operator_account), expected + 200 + 200);
    // The books: client money equals custody.
    let held = balance(&w, alice.wallet) + balance(&w, bob.wallet) + balance(&w, operator_account);
    assert_eq!(-balance(&w, PlatformAccounts::CNY.sandbox_custody), held);
    w.shard.shutdown();
    let mut reader = SqliteStore::open_reader(&w.path).unwrap();
    let report = citypay_store::audit(&mut reader).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[test]
fn taps_uploaded_in_pieces_out_of_order_and_twice_are_fared_once() {
    let w = world();
    let (alice, _) = resident(&w, ALICE.0, ALICE.1, 100);
    let (operator, operator_account) = transit_operator(&w);
    let bus = w.rt.block_on(w.transit.register_validator(operator, "824", "B_XIZHAN", [3; 32])).unwrap();
    let mut device = Validator::new(w.transit.keyring(), Policy::default());
    let mut phone = device_for(&w, &alice);
    let t0 = u32::try_from(MORNING + 3_600).unwrap();
    // Six boardings through the day: 12 yuan, under the 15-yuan daily cap.
    for i in 0..6 {
        let t = t0 + i * 7_200;
        device.validate(&phone.next_code(t).encode(), t, gate(&bus, citypay_ride::Direction::In)).unwrap();
    }
    let taps = device.drain_taps();
    w.clock.set(Timestamp::from_unix_seconds(EVENING));
    w.rt.block_on(async {
        // Later taps first, then everything again, then the first ones.
        assert_eq!(w.transit.upload_taps(&bus, &taps[3..]).await.unwrap().stored, 3);
        let again = w.transit.upload_taps(&bus, &taps).await.unwrap();
        assert_eq!((again.stored, again.already), (3, 3));
        assert_eq!(w.transit.upload_taps(&bus, &taps[..2]).await.unwrap().already, 2);
    });
    w.clock.set(Timestamp::from_unix_seconds(MORNING + 24 * 3_600));
    let day = citypay_fares::service_day(i64::from(t0));
    let before = balance(&w, alice.wallet);
    let run = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!((run.trips, run.charged), (6, 1_200));
    let rerun = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!(rerun.charged, 0);
    assert_eq!(w.rt.block_on(w.transit.rider_day(&alice, day)).unwrap(), Some((6, 1_200, 1_200, 0)));
    let trips = w.rt.block_on(w.transit.rider_trips(&alice, day)).unwrap();
    assert_eq!(trips.len(), 6);
    assert!(trips.iter().all(|(fen, reason)| *fen == 200 && !reason.is_empty()), "{trips:?}");
    assert_eq!(before - balance(&w, alice.wallet), 1_200);
    assert_eq!(balance(&w, operator_account), 1_200);
    assert_eq!(-balance(&w, PlatformAccounts::CNY.sandbox_custody), balance(&w, alice.wallet) + balance(&w, operator_account));
}

fn device_for(w: &World, resident: &Resident) -> RiderDevice {
    device(w, resident, 1)
}

#[test]
fn the_newest_valid_key_signs_and_revoked_keys_leave_the_keyring() {
    let w = world();
    let (alice, _) = resident(&w, ALICE.0, ALICE.1, 0);
    let now = u32::try_from(MORNING).unwrap();
    let keys = || {
        vec![
            PlatformKey::from_seed(1, [7; 32], Validity::new(0, now + 3_600).unwrap()),
            PlatformKey::from_seed(2, [8; 32], Validity::new(now - 60, u32::MAX).unwrap()),
        ]
    };
    let rotated = Transit::with_keys(w.directory.clone(), citypay_fares::Feed::tianjin(), keys(), Vec::new());
    let credential = w.rt.block_on(rotated.issue_credential(&alice, [5; 32])).unwrap();
    assert_eq!(credential.key_id, 2, "the newest key signs");
    assert_eq!(rotated.keyring().len(), 2, "both verify during the overlap");
    let revoked = Transit::with_keys(w.directory.clone(), citypay_fares::Feed::tianjin(), keys(), vec![2]);
    let credential = w.rt.block_on(revoked.issue_credential(&alice, [5; 32])).unwrap();
    assert_eq!(credential.key_id, 1, "a revoked key never signs");
    assert_eq!(credential.terms.valid_until, now + 3_600, "a credential never outlives its key");
    assert_eq!((revoked.keyring().len(), revoked.revoked_keys()), (1, vec![2u16]));
    // Reloaded without a restart: every clone signs with the new set.
    let clone = rotated.clone();
    rotated.set_keys(keys(), vec![2]);
    assert_eq!(w.rt.block_on(clone.issue_credential(&alice, [5; 32])).unwrap().key_id, 1);
    assert_eq!(clone.revoked_keys(), vec![2]);
}

/// Derives new ride keys as every server of one city does (any function of the id will do).
fn derive(city: u8) -> citypay_transit::DeriveSeed {
    Arc::new(move |id: u16| Some([city ^ u8::try_from(id % 256).unwrap(); 32]))
}

#[test]
fn a_rotation_made_on_one_server_reaches_the_others_and_a_stranger_key_set_is_refused() {
    let w = world();
    let (alice, _) = resident(&w, ALICE.0, ALICE.1, 0);
    let first_key = || PlatformKey::from_seed(1, [7; 32], Validity::new(0, u32::MAX).unwrap());
    // Two servers of one city: the same key file, the same derivation.
    let server = |d| Transit::new(w.directory.clone(), citypay_fares::Feed::tianjin(), first_key()).with_derived_keys(d);
    let (a, b) = (server(derive(40)), server(derive(40)));
    assert!(!w.rt.block_on(b.refresh_keys()).unwrap(), "no schedule yet: the key file's keys stand");
    let added = w.rt.block_on(a.rotate_key(24 * 3_600, |_| Vec::new())).unwrap();
    assert_eq!(added.key_id, 2);
    assert_eq!(w.rt.block_on(a.issue_credential(&alice, [5; 32])).unwrap().key_id, 2);
    // B signs with the old key until it reads the schedule, then with the new one.
    assert_eq!(w.rt.block_on(b.issue_credential(&alice, [5; 32])).unwrap().key_id, 1);
    assert!(w.rt.block_on(b.refresh_keys()).unwrap());
    assert_eq!(w.rt.block_on(b.issue_credential(&alice, [5; 32])).unwrap().key_id, 2);
    assert_eq!(a.key_schedule(), b.key_schedule());
    let old = b.key_schedule().into_iter().find(|k| k.key_id == 1).unwrap();
    assert_eq!(old.validity.not_after, u32::try_from(MORNING).unwrap() + 24 * 3_600, "the previous key verifies for the overlap");
    assert_eq!(b.keyring().len(), 2);
    assert!(!w.rt.block_on(b.refresh_keys()).unwrap(), "nothing new");

    // A revocation through B reaches A: A signs with the previous key again.
    w.rt.block_on(b.revoke_key(2)).unwrap();
    assert!(w.rt.block_on(a.refresh_keys()).unwrap());
    assert_eq!((a.revoked_keys(), a.keyring().len()), (vec![2], 1));
    assert_eq!(w.rt.block_on(a.issue_credential(&alice, [5; 32])).unwrap().key_id, 1);
    assert!(matches!(w.rt.block_on(a.revoke_key(9)), Err(TransitError::UnknownRideKey(9))));
    assert!(matches!(w.rt.block_on(a.revoke_key(1)), Err(TransitError::LastRideKey(1))), "no city is left without a key that signs");

    // A server whose key set derives other keys refuses the schedule and keeps its keys.
    let stranger = server(derive(99));
    let next = w.rt.block_on(a.rotate_key(0, |_| Vec::new())).unwrap();
    assert_eq!(next.key_id, 3);
    assert!(matches!(w.rt.block_on(stranger.refresh_keys()), Err(TransitError::RideKeysNotShared(_))));
    assert_eq!(w.rt.block_on(stranger.issue_credential(&alice, [5; 32])).unwrap().key_id, 1);
    // Two rotations from one schedule: the second finds key 4 taken and is refused.
    let (c, d) = (server(derive(40)), server(derive(40)));
    w.rt.block_on(async {
        assert!(c.refresh_keys().await.unwrap() && d.refresh_keys().await.unwrap());
        // Each rotation's answer rows (here a row naming the server) commit with it, or not at all.
        let answer = |server: i64| {
            move |_: &citypay_transit::ScheduledKey| {
                vec![ServiceRow {
                    table: "ride_accounts",
                    key: vec![("account_ref", Value::Int(900 + server))],
                    columns: vec![("resident_id", Value::Int(server)), ("created_at", Value::Int(0))],
                    on_conflict: OnConflict::Fail,
                }]
            }
        };
        let (one, two) = tokio::join!(c.rotate_key(3_600, answer(1)), d.rotate_key(3_600, answer(2)));
        let ids: Vec<_> = [&one, &two].iter().map(|r| r.as_ref().map(|k| k.key_id).map_err(TransitError::code)).collect();
        assert!(ids.contains(&Ok(4)) && ids.iter().filter(|r| r.is_ok()).count() >= 1, "{ids:?}");
        assert!(ids.iter().all(|r| matches!(r, Ok(4 | 5) | Err("key_schedule_changed"))), "{ids:?}");
        let kept = w.directory.read("SELECT resident_id FROM ride_accounts WHERE account_ref IN (901, 902) ORDER BY resident_id", Vec::new()).await.unwrap();
        let rotated: Vec<Vec<Value>> = [(1, &one), (2, &two)].into_iter().filter(|(_, r)| r.is_ok()).map(|(s, _)| vec![Value::Int(s)]).collect();
        assert_eq!(kept, rotated, "answer rows only for the rotations that happened");
    });
    // Without a way to derive keys a server cannot rotate for the city.
    let alone = Transit::new(w.directory.clone(), citypay_fares::Feed::tianjin(), first_key());
    assert!(matches!(w.rt.block_on(alone.rotate_key(0, |_| Vec::new())), Err(TransitError::RideKeysNotShared(_))));
}

#[test]
fn each_operator_is_paid_for_its_own_legs_and_arrears_are_split_the_same_way() {
    let w = world();
    let (alice, _) = resident(&w, ALICE.0, ALICE.1, 100);
    let (bob, bob_card) = resident(&w, BOB.0, BOB.1, 0);
    let (buses, bus_account) = transit_operator(&w);
    let (metro, metro_account) = metro_operator(&w);
    let bus = w.rt.block_on(w.transit.register_validator(buses, "824", "B_XIZHAN", [3; 32])).unwrap();
    let gate_in = w.rt.block_on(w.transit.register_validator(metro, "M1", "M1_LIUYUAN", [4; 32])).unwrap();
    let gate_out = w.rt.block_on(w.transit.register_validator(metro, "M1", "M1_XIBEIJIAO", [5; 32])).unwrap();
    let mut devices = [&bus, &gate_in, &gate_out].map(|_| Validator::new(w.transit.keyring(), Policy::default()));
    let (in_, out) = (citypay_ride::Direction::In, citypay_ride::Direction::Out);
    let t0 = u32::try_from(MORNING + 3_600).unwrap();
    // Bus, then the metro within 90 minutes: the transfer's yuan off comes off the metro leg.
    for (phone, shift) in [(&mut device(&w, &alice, 1), 0), (&mut device(&w, &bob, 2), 5)] {
        let t = t0 + shift;
        devices[0].validate(&phone.next_code(t).encode(), t, gate(&bus, in_)).unwrap();
        devices[1].validate(&phone.next_code(t + 1_800).encode(), t + 1_800, gate(&gate_in, in_)).unwrap();
        devices[2].validate(&phone.next_code(t + 2_800).encode(), t + 2_800, gate(&gate_out, out)).unwrap();
    }
    let legs = [
        citypay_fares::Tap::new("B_XIZHAN", "824", i64::from(t0), citypay_fares::Direction::In, "ride_code"),
        citypay_fares::Tap::new("M1_LIUYUAN", "M1", i64::from(t0) + 1_800, citypay_fares::Direction::In, "ride_code"),
        citypay_fares::Tap::new("M1_XIBEIJIAO", "M1", i64::from(t0) + 2_800, citypay_fares::Direction::Out, "ride_code"),
    ];
    let priced = citypay_fares::fare_day(w.transit.feed(), &legs);
    let legs: Vec<&citypay_fares::Leg> = priced.trips.iter().flat_map(|t| &t.legs).collect();
    let (bus_fare, metro_fare) = (legs[0].charged_fen, legs[1].charged_fen);
    assert_eq!((bus_fare, legs[1].transfer_fen), (200, 100), "the transfer discount is on the metro leg");
    w.clock.set(Timestamp::from_unix_seconds(EVENING));
    w.rt.block_on(async {
        for (validator, device) in [&bus, &gate_in, &gate_out].into_iter().zip(devices.iter_mut()) {
            w.transit.upload_taps(validator, &device.drain_taps()).await.unwrap();
        }
    });
    w.clock.set(Timestamp::from_unix_seconds(MORNING + 24 * 3_600));
    let day = citypay_fares::service_day(i64::from(t0));
    let run = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!((run.charged, run.arrears, run.arrears_amount), (bus_fare + metro_fare, 1, bus_fare + metro_fare));
    assert_eq!((balance(&w, bus_account), balance(&w, metro_account)), (bus_fare, metro_fare), "Alice paid each operator its leg");
    w.rt.block_on(async {
        // Revenue counts what is due, Bob's owed legs included.
        assert_eq!(w.transit.revenue(buses, day).await.unwrap(), (2, 2 * bus_fare));
        assert_eq!(w.transit.revenue(metro, day).await.unwrap(), (2, 2 * metro_fare));
        // Each operator lists its own legs, a page at a time.
        let metro_legs = w.transit.operator_legs(metro, day, None, 10).await.unwrap();
        assert_eq!(metro_legs.len(), 2);
        assert!(metro_legs.iter().all(|l| l.route_id == "M1" && l.to_stop.as_deref() == Some("M1_XIBEIJIAO") && l.fare_fen == metro_fare), "{metro_legs:?}");
        let first = w.transit.operator_legs(buses, day, None, 1).await.unwrap();
        let cursor = (first[0].account_ref, first[0].from_time);
        let second = w.transit.operator_legs(buses, day, Some(cursor), 1).await.unwrap();
        assert_eq!(w.transit.operator_legs(buses, day, Some((second[0].account_ref, second[0].from_time)), 1).await.unwrap(), vec![]);
        assert_ne!(first[0].account_ref, second[0].account_ref);
        assert!([&first[0], &second[0]].iter().all(|l| l.route_id == "824" && l.to_stop.is_none() && l.fare_fen == bus_fare));
        w.wallet.top_up(&bob, bob_card, 1_000, "bob-1").await.unwrap();
        assert_eq!(w.transit.pay_arrears(&bob).await.unwrap(), bus_fare + metro_fare);
    });
    assert_eq!((balance(&w, bus_account), balance(&w, metro_account)), (2 * bus_fare, 2 * metro_fare), "Bob's arrears reach both");
    // A re-run moves nothing; the books balance.
    assert_eq!(w.rt.block_on(w.transit.fare_day(day)).unwrap().charged, 0);
    let held = balance(&w, alice.wallet) + balance(&w, bob.wallet) + balance(&w, bus_account) + balance(&w, metro_account);
    assert_eq!(-balance(&w, PlatformAccounts::CNY.sandbox_custody), held);
    w.shard.shutdown();
    let mut reader = SqliteStore::open_reader(&w.path).unwrap();
    let report = citypay_store::audit(&mut reader).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[test]
fn an_operator_short_of_a_refund_does_not_put_the_rider_in_arrears() {
    let w = world();
    let (alice, _) = resident(&w, ALICE.0, ALICE.1, 100);
    let (buses, _) = transit_operator(&w);
    let (metro, metro_account) = metro_operator(&w);
    let bus = w.rt.block_on(w.transit.register_validator(buses, "824", "B_XIZHAN", [3; 32])).unwrap();
    let gate_in = w.rt.block_on(w.transit.register_validator(metro, "M1", "M1_LIUYUAN", [4; 32])).unwrap();
    let gate_out = w.rt.block_on(w.transit.register_validator(metro, "M1", "M1_XIBEIJIAO", [5; 32])).unwrap();
    let mut phone = device(&w, &alice, 1);
    let (in_, out) = (citypay_ride::Direction::In, citypay_ride::Direction::Out);
    let t0 = u32::try_from(MORNING + 3_600).unwrap();
    let mut metro_in = Validator::new(w.transit.keyring(), Policy::default());
    let mut metro_out = Validator::new(w.transit.keyring(), Policy::default());
    metro_in.validate(&phone.next_code(t0 + 1_800).encode(), t0 + 1_800, gate(&gate_in, in_)).unwrap();
    metro_out.validate(&phone.next_code(t0 + 2_800).encode(), t0 + 2_800, gate(&gate_out, out)).unwrap();
    w.clock.set(Timestamp::from_unix_seconds(EVENING));
    w.rt.block_on(async {
        w.transit.upload_taps(&gate_in, &metro_in.drain_taps()).await.unwrap();
        w.transit.upload_taps(&gate_out, &metro_out.drain_taps()).await.unwrap();
    });
    w.clock.set(Timestamp::from_unix_seconds(MORNING + 24 * 3_600));
    let day = citypay_fares::service_day(i64::from(t0));
    let metro_fare = w.rt.block_on(w.transit.fare_day(day)).unwrap().charged;
    // The metro company's money is paid out to its bank.
    w.rt.block_on(async {
        let payout = citypay_ledger::Transfer {
            id: 77,
            leg: citypay_ledger::Leg {
                debit: metro_account,
                credit: PlatformAccounts::CNY.sandbox_custody,
                amount: metro_fare,
                currency: citypay_ledger::Currency::CNY,
                code: 1,
                class: 0,
                user_data: 0,
            },
            pending_timeout_s: None,
        };
        let outcome = w.directory.shard().submit(citypay_ledger::Event::Transfer(payout).into()).await.unwrap();
        assert_eq!(outcome.status, citypay_ledger::Status::Ok);
    });
    // A bus boarding before the metro, uploaded late: the bus is due its fare, and the metro
    // leg gets the transfer's yuan off, which the metro company can no longer give back.
    let mut late = Validator::new(w.transit.keyring(), Policy::default());
    late.validate(&phone.next_code(t0).encode(), t0, gate(&bus, in_)).unwrap();
    w.rt.block_on(w.transit.upload_taps(&bus, &late.drain_taps())).unwrap();
    let run = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!((run.failed, run.arrears), (1, 0), "the operator's shortfall is an error, not the rider's debt");
    assert!(w.rt.block_on(w.transit.deny_list()).unwrap().is_empty());
    // Once the metro company holds money again, the next run moves the day: the refusal
    // does not stick to it.
    w.rt.block_on(async {
        let sale = citypay_ledger::Transfer {
            id: 78,
            leg: citypay_ledger::Leg {
                debit: PlatformAccounts::CNY.sandbox_custody,
                credit: metro_account,
                amount: 1_000,
                currency: citypay_ledger::Currency::CNY,
                code: 1,
                class: 0,
                user_data: 0,
            },
            pending_timeout_s: None,
        };
        assert_eq!(w.directory.shard().submit(citypay_ledger::Event::Transfer(sale).into()).await.unwrap().status, citypay_ledger::Status::Ok);
    });
    let run = w.rt.block_on(w.transit.fare_day(day)).unwrap();
    assert_eq!((run.failed, run.arrears, run.charged), (0, 0, 200 - 100), "the bus fare, less the metro's transfer discount given back");
    assert_eq!(w.rt.block_on(w.transit.fare_day(day)).unwrap().unchanged, 1, "and once only");
}
