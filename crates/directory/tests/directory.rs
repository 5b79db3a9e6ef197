//! The directory end to end on the embedded store: cities, real-name residents, merchants with
//! API keys, operators; identities stay unique under races and never reach the disk in clear.

use std::sync::Arc;

use citypay_directory::{
    Category, Directory, DirectoryError, DirectoryKeys, NewMerchant, NewResident, PasswordPolicy, Principal, Role,
    SignInFrom, TokenKeys, account_id, AccountKind, ACCOUNT_FAILURES_MAX, ADDRESS_FAILURES_MAX, MIGRATIONS,
};
use citypay_identity::AccountClass;
use citypay_ledger::Window;
use citypay_shard::{Shard, ShardConfig, SystemClock};
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_vault::{IndexKeys, SealingKeys};

const ID_NUMBER: &str = "11010519491231002X";
const NAME: &str = "Zhang Sanfeng";

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    shard: Shard,
    directory: Directory,
    runtime: tokio::runtime::Runtime,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.db");
    let store = SqliteStore::open_writer(&path, MIGRATIONS).unwrap();
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, SystemClock).unwrap();
    let reader = Arc::new(SqliteReader::open(&path).unwrap());
    let keys = DirectoryKeys {
        sealing: SealingKeys::from_config(SealingKeys::generate_config().expose()).unwrap(),
        index: IndexKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
        tokens: TokenKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
    };
    let directory = Directory::new(shard.handle(), reader, keys, Arc::new(SystemClock), PasswordPolicy::FAST_INSECURE);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(directory.onboard_city(330100, "Hangzhou")).unwrap();
    World { _dir: dir, path, shard, directory, runtime }
}

fn resident(id_number: &str, mobile: &str) -> NewResident {
    NewResident {
        city: 330100,
        name: NAME.into(),
        mobile: mobile.into(),
        id_number: id_number.into(),
        password: "correct horse".into(),
    }
}

#[test]
fn cities_are_onboarded_once() {
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        assert!(matches!(d.onboard_city(330100, "Hangzhou").await, Err(DirectoryError::CityExists(330100))));
        d.onboard_city(120000, "Tianjin").await.unwrap();
        let codes: Vec<u32> = d.cities().await.unwrap().iter().map(|c| c.code).collect();
        assert_eq!(codes, vec![120000, 330100]);
        assert!(matches!(d.city(420100).await, Err(DirectoryError::UnknownCity(420100))));
        assert!(matches!(d.onboard_city(12, "x").await, Err(DirectoryError::InvalidField { .. })));
    });
}

#[test]
fn a_city_s_residents_and_merchants_live_in_its_buckets() {
    use citypay_routing::{bucket_of_account, bucket_of_owner};
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        // Hangzhou was onboarded first, Tianjin second: the first two groups past the legacy ones.
        d.onboard_city(120000, "Tianjin").await.unwrap();
        assert_eq!(d.bucket_group(330100).await.unwrap(), 4..8);
        assert_eq!(d.bucket_group(120000).await.unwrap(), 8..12);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..12u32 {
            let body = format!("11010519800101{n:03}");
            let id = format!("{body}{}", citypay_identity::resident_id::check_character(&body).unwrap());
            let city = if n % 2 == 0 { 330100 } else { 120000 };
            let r = d.register_resident(&NewResident { city, ..resident(&id, &format!("1380013{n:04}")) }).await.unwrap();
            let bucket = bucket_of_owner(r.id).0;
            assert!(d.bucket_group(city).await.unwrap().contains(&bucket), "{n}: bucket {bucket} is not the city's");
            assert_eq!(bucket_of_account(r.wallet).map(|b| b.0), Some(bucket), "the wallet is where its owner is");
            seen.insert(bucket);
        }
        assert!(seen.len() >= 4, "residents spread over the cities' buckets: {seen:?}");
        let (merchant, _) = d.onboard_merchant(&shop()).await.unwrap();
        assert!((4..8).contains(&bucket_of_owner(merchant.id).0));
    });
}

#[test]
fn residents_register_once_under_their_real_name() {
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        let r = d.register_resident(&resident(ID_NUMBER, "13800138000")).await.unwrap();
        assert_eq!(r.id_masked, "1101**********002X");
        assert_eq!(r.wallet, account_id(AccountKind::Wallet, r.id));
        // The wallet opens at class I: 1,000 yuan of balance payments since opening (the year
        // counted too, for a later class's yearly cap).
        assert_eq!(r.class, AccountClass::I);
        let wallet = d.shard().account(r.wallet).await.unwrap().unwrap();
        let caps = wallet.limits.window_caps.map(|c| c.map(|c| (c.window, c.amount_max)));
        assert_eq!(caps, [Some((Window::Lifetime, 100_000)), Some((Window::Year, 100_000)), None]);
        // An operator checks the ID card in person: the name must be the registered one, a city
        // operator sees only their city, and the check makes the class III with its caps.
        assert!(matches!(d.verify_in_person(9, None, ID_NUMBER, "Someone Else").await, Err(DirectoryError::IdentityMismatch)));
        assert!(matches!(d.verify_in_person(9, Some(120000), ID_NUMBER, NAME).await, Err(DirectoryError::NotFound)));
        assert!(matches!(d.verify_in_person(9, None, "440524198001010013", NAME).await, Err(DirectoryError::NotFound)));
        assert_eq!(d.resident(r.id).await.unwrap().class, AccountClass::I);
        let (verified, class) = d.verify_in_person(9, Some(330100), ID_NUMBER, NAME).await.unwrap();
        assert_eq!((verified.id, class), (r.id, AccountClass::III));
        let wallet = d.shard().account(r.wallet).await.unwrap().unwrap();
        let caps = wallet.limits.window_caps.map(|c| c.map(|c| (c.window, c.amount_max)));
        assert_eq!(caps, [None, Some((Window::Year, 20_000_000)), None]);
        let r = d.resident(r.id).await.unwrap();
        assert_eq!(r.class, AccountClass::III);
        // Same identity (lower-case x), another mobile: refused. Same mobile: refused.
        let again = d.register_resident(&resident("11010519491231002x", "13900139000")).await;
        assert!(matches!(again, Err(DirectoryError::IdentityTaken)), "{again:?}");
        let same_mobile = d.register_resident(&resident("440524198001010013", "+86 138-0013-8000")).await;
        assert!(matches!(same_mobile, Err(DirectoryError::MobileTaken)), "{same_mobile:?}");
        // Bad input says why.
        match d.register_resident(&resident("110105194912310021", "13700137000")).await {
            Err(DirectoryError::InvalidResidentId(why)) => assert!(why.contains("check character"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.register_resident(&resident(ID_NUMBER, "2380013800")).await, Err(DirectoryError::InvalidField { field: "mobile", .. })));
        let mut weak = resident("440524198001010013", "13700137000");
        weak.password = "short".into();
        assert!(matches!(d.register_resident(&weak).await, Err(DirectoryError::InvalidField { field: "password", .. })));
        // Sign-in, tokens, lookups.
        let anywhere = SignInFrom::default();
        let (me, signed_in) = d.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.unwrap();
        assert_eq!(me, r);
        let who = Principal::Resident { id: r.id, city: 330100 };
        assert_eq!(d.authenticate_token(signed_in.token.expose()).await.unwrap(), Some((who, signed_in.session.clone())));
        assert!(matches!(d.sign_in_resident("13800138000", "wrong horse!", 600, &anywhere).await, Err(DirectoryError::WrongCredentials)));
        assert!(matches!(d.sign_in_resident("13100131000", "correct horse", 600, &anywhere).await, Err(DirectoryError::WrongCredentials)));
        assert_eq!(d.resident_by_id_number(ID_NUMBER).await.unwrap(), Some(r.clone()));
        assert_eq!(d.resident_by_id_number("440524198001010013").await.unwrap(), None);
        assert_eq!(d.resident_name(r.id).await.unwrap().expose(), NAME);
        assert_eq!(d.resident(r.id).await.unwrap(), r);
    });
    w.shard.shutdown();
    // Neither the ID number, nor the name, nor the mobile number is on disk in clear.
    let mut bytes = std::fs::read(&w.path).unwrap();
    bytes.extend(std::fs::read(w.path.with_extension("db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    for secret in [ID_NUMBER, "11010519491231002", NAME, "13800138000"] {
        assert!(!text.contains(secret), "{secret} is stored in clear");
    }
    let mut reader = SqliteStore::open_reader(&w.path).unwrap();
    assert!(citypay_store::audit(&mut reader).unwrap().is_clean());
}

#[test]
fn racing_registrations_of_one_identity_open_one_wallet() {
    let w = world();
    let results = w.runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let d = w.directory.clone();
                tokio::spawn(async move { d.register_resident(&resident(ID_NUMBER, &format!("1380013800{i}"))).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    let winners = results.iter().filter(|r| r.is_ok()).count();
    let taken = results.iter().filter(|r| matches!(r, Err(DirectoryError::IdentityTaken))).count();
    assert_eq!((winners, taken), (1, 7), "{results:?}");
}

fn shop() -> NewMerchant {
    NewMerchant {
        city: 330100,
        name: "Xihu Grocer".into(),
        uscc: "91350100M000100Y43".into(),
        mcc: "5411".into(),
        category: Category::Retail,
        settlement_account: "6222020200112233446".into(),
        notify_url: Some("http://127.0.0.1:9/notify".into()),
    }
}

#[test]
fn merchants_have_one_onboarding_and_rotatable_api_keys() {
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        let (m, first) = d.onboard_merchant(&shop()).await.unwrap();
        assert_eq!(m.settlement_account_masked, "***************3446");
        assert_eq!(d.merchant(m.id).await.unwrap(), m);
        assert!(d.shard().account(m.account).await.unwrap().is_some());
        assert!(matches!(d.onboard_merchant(&shop()).await, Err(DirectoryError::MerchantExists)));
        let mut bad = shop();
        bad.uscc = "91350100M000100Y44".into();
        assert!(matches!(d.onboard_merchant(&bad).await, Err(DirectoryError::InvalidUscc(_))));
        assert_eq!(d.authenticate_api_key(&first.key_id, first.secret.expose()).await.unwrap(), m.id);
        assert!(d.authenticate_api_key(&first.key_id, "sk_wrong").await.is_err());
        assert!(d.authenticate_api_key("mk_unknown", first.secret.expose()).await.is_err());
        let second = d.issue_api_key(m.id).await.unwrap();
        assert_eq!(d.authenticate_api_key(&second.key_id, second.secret.expose()).await.unwrap(), m.id);
        d.revoke_api_key(m.id, &first.key_id).await.unwrap();
        assert!(d.authenticate_api_key(&first.key_id, first.secret.expose()).await.is_err());
        assert!(d.authenticate_api_key(&second.key_id, second.secret.expose()).await.is_ok());
        // Another merchant cannot revoke this merchant's key.
        assert!(matches!(d.revoke_api_key(m.id + 1, &second.key_id).await, Err(DirectoryError::NotFound)));
        assert!(format!("{second:?}").contains("***") && !format!("{second:?}").contains(second.secret.expose()));
    });
}

#[test]
fn operators_sign_in_with_their_role() {
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        let root = d.create_operator("root", "platform secret", Role::PlatformOperator, None).await.unwrap();
        assert!(matches!(d.create_operator("root", "another secret", Role::PlatformOperator, None).await, Err(DirectoryError::UsernameTaken)));
        assert!(d.create_operator("hz", "city secret!", Role::CityOperator, None).await.is_err());
        assert!(matches!(d.create_operator("wh", "city secret!", Role::CityOperator, Some(420100)).await, Err(DirectoryError::UnknownCity(_))));
        let hz = d.create_operator("hz", "city secret!", Role::CityOperator, Some(330100)).await.unwrap();
        let anywhere = SignInFrom::default();
        let (_, signed_in) = d.sign_in_operator("root", "platform secret", 60, &anywhere).await.unwrap();
        let principal = d.authenticate_token(signed_in.token.expose()).await.unwrap().map(|(p, _)| p);
        assert_eq!(principal, Some(Principal::Operator { id: root.id, role: Role::PlatformOperator, city: None }));
        let (_, signed_in) = d.sign_in_operator("hz", "city secret!", 60, &anywhere).await.unwrap();
        let principal = d.authenticate_token(signed_in.token.expose()).await.unwrap().map(|(p, _)| p);
        assert_eq!(principal, Some(Principal::Operator { id: hz.id, role: Role::CityOperator, city: Some(330100) }));
        assert!(d.sign_in_operator("hz", "wrong", 60, &anywhere).await.is_err());
        assert_eq!(d.open_platform_accounts().await.unwrap(), d.open_platform_accounts().await.unwrap());
    });
}

#[test]
fn sessions_end_on_sign_out_and_password_change_and_freezing_needs_the_password_to_undo() {
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        let r = d.register_resident(&resident(ID_NUMBER, "13800138000")).await.unwrap();
        let who = Principal::Resident { id: r.id, city: 330100 };
        let anywhere = SignInFrom::default();
        let (_, old) = d.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.unwrap();
        let (_, other) = d.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.unwrap();
        let (_, new) = d.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.unwrap();
        assert_eq!(d.sessions(who).await.unwrap().len(), 3);
        // Signing out ends that token only; another resident cannot end it.
        assert!(matches!(d.end_session(Principal::Resident { id: r.id + 1, city: 330100 }, &old.session).await, Err(DirectoryError::NotFound)));
        d.end_session(who, &old.session).await.unwrap();
        assert_eq!(d.authenticate_token(old.token.expose()).await.unwrap(), None);
        assert!(d.authenticate_token(other.token.expose()).await.unwrap().is_some());
        // A password change needs the current password and ends every other session.
        let change = d.change_password(r.id, &new.session, "wrong horse!", "battery staple", &anywhere).await;
        assert!(matches!(change, Err(DirectoryError::WrongCredentials)), "{change:?}");
        assert_eq!(d.change_password(r.id, &new.session, "correct horse", "battery staple", &anywhere).await.unwrap(), 1);
        assert_eq!(d.authenticate_token(other.token.expose()).await.unwrap(), None);
        assert!(d.authenticate_token(new.token.expose()).await.unwrap().is_some());
        assert!(d.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.is_err());
        d.sign_in_resident("13800138000", "battery staple", 600, &anywhere).await.unwrap();
        // Freezing is one call; unfreezing needs the password.
        assert!(!d.wallet_frozen(r.id).await.unwrap());
        d.freeze_wallet(r.id).await.unwrap();
        assert!(d.wallet_frozen(r.id).await.unwrap());
        assert!(matches!(d.unfreeze_wallet(r.id, "correct horse", &anywhere).await, Err(DirectoryError::WrongCredentials)));
        d.unfreeze_wallet(r.id, "battery staple", &anywhere).await.unwrap();
        assert!(!d.wallet_frozen(r.id).await.unwrap());
    });
}

#[test]
fn failed_sign_ins_are_limited_per_account_and_address_but_the_owners_known_client_still_gets_in() {
    wait_out_a_closing_window();
    let w = world();
    let d = &w.directory;
    w.runtime.block_on(async {
        d.register_resident(&resident(ID_NUMBER, "13800138000")).await.unwrap();
        let owner = SignInFrom { address: Some("10.0.0.1".parse().unwrap()), ticket: None };
        let (_, first) = d.sign_in_resident("13800138000", "correct horse", 600, &owner).await.unwrap();
        let owner = SignInFrom { ticket: Some(first.ticket.expose().clone()), ..owner };
        // A stranger spends the account's budget, then is refused, even with the right password.
        let stranger = SignInFrom { address: Some("192.0.2.7".parse().unwrap()), ticket: None };
        for _ in 0..ACCOUNT_FAILURES_MAX {
            assert!(matches!(d.sign_in_resident("13800138000", "guess guess", 600, &stranger).await, Err(DirectoryError::WrongCredentials)));
        }
        match d.sign_in_resident("13800138000", "correct horse", 600, &stranger).await {
            Err(DirectoryError::RateLimited { retry_after_s }) => assert!((1..=3 * 3600).contains(&retry_after_s)),
            other => panic!("{other:?}"),
        }
        // The owner's client, known by its ticket, has its own budget and gets in.
        d.sign_in_resident("13800138000", "correct horse", 600, &owner).await.unwrap();
        // A ticket of another account does not help.
        d.register_resident(&resident("440524198001010013", "13700137000")).await.unwrap();
        let borrowed = SignInFrom { ticket: Some(first.ticket.expose().clone()), ..stranger.clone() };
        for _ in 0..ACCOUNT_FAILURES_MAX {
            assert!(d.sign_in_resident("13700137000", "guess guess", 600, &borrowed).await.is_err());
        }
        assert!(matches!(d.sign_in_resident("13700137000", "guess guess", 600, &borrowed).await, Err(DirectoryError::RateLimited { .. })));
        // One address guessing across many accounts is stopped too (10 failures so far).
        let mut limited = false;
        for n in 0..ADDRESS_FAILURES_MAX {
            let mobile = format!("1390000{n:04}");
            if matches!(d.sign_in_resident(&mobile, "guess guess", 600, &stranger).await, Err(DirectoryError::RateLimited { .. })) {
                limited = true;
                break;
            }
        }
        assert!(limited, "the address's budget ran out");
        // Operators are limited the same way.
        d.create_operator("root", "platform secret", Role::PlatformOperator, None).await.unwrap();
        for _ in 0..ACCOUNT_FAILURES_MAX {
            assert!(matches!(d.sign_in_operator("root", "guess guess", 60, &SignInFrom::default()).await, Err(DirectoryError::WrongCredentials)));
        }
        assert!(matches!(d.sign_in_operator("root", "platform secret", 60, &SignInFrom::default()).await, Err(DirectoryError::RateLimited { .. })));
    });
}

#[test]
fn a_second_api_server_sees_ended_sessions_and_failed_sign_ins_through_the_database() {
    wait_out_a_closing_window();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.db");
    let store = SqliteStore::open_writer(&path, MIGRATIONS).unwrap();
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, SystemClock).unwrap();
    let configs = [SealingKeys::generate_config(), IndexKeys::generate_config(), IndexKeys::generate_config()];
    let server = || {
        let keys = DirectoryKeys {
            sealing: SealingKeys::from_config(configs[0].expose()).unwrap(),
            index: IndexKeys::from_config(configs[1].expose()).unwrap(),
            tokens: TokenKeys::from_config(configs[2].expose()).unwrap(),
        };
        let reader = Arc::new(SqliteReader::open(&path).unwrap());
        Directory::new(shard.handle(), reader, keys, Arc::new(SystemClock), PasswordPolicy::FAST_INSECURE)
    };
    let (a, b) = (server(), server());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        a.onboard_city(330100, "Hangzhou").await.unwrap();
        let r = a.register_resident(&resident(ID_NUMBER, "13800138000")).await.unwrap();
        let anywhere = SignInFrom::default();
        let (_, kept) = a.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.unwrap();
        let (_, ended) = a.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await.unwrap();
        assert!(b.authenticate_token(kept.token.expose()).await.unwrap().is_some(), "B honours A's tokens");
        a.end_session(Principal::Resident { id: r.id, city: 330100 }, &ended.session).await.unwrap();
        assert_eq!(b.authenticate_token(ended.token.expose()).await.unwrap(), None, "B reads the ended session");
        // Failures on A count on B.
        for _ in 0..ACCOUNT_FAILURES_MAX {
            assert!(a.sign_in_resident("13800138000", "guess guess", 600, &anywhere).await.is_err());
        }
        assert!(matches!(b.sign_in_resident("13800138000", "correct horse", 600, &anywhere).await, Err(DirectoryError::RateLimited { .. })));
    });
    shard.shutdown();
}

/// Failures are counted per window: a test of the counts waits out a window about to end.
fn wait_out_a_closing_window() {
    let left = citypay_directory::SIGN_IN_WINDOW_S - citypay_shard::Clock::now(&SystemClock).unix_seconds() % citypay_directory::SIGN_IN_WINDOW_S;
    if left < 20 {
        std::thread::sleep(std::time::Duration::from_secs(left + 1));
    }
}
