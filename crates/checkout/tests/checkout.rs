//! Paying shops end to end at the service level, on the embedded store: QR and payment codes,
//! races, refunds, close and cancel, cash, expiry, isolation, limits; the books balance after.

use std::sync::Arc;

use citypay_checkout::{Checkout, CheckoutError, DEFAULT_REFUND_PERIOD_S, Method, NewTrade, RefundStatus, TradeStatus};
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::{
    Category, Directory, DirectoryKeys, NewMerchant, NewResident, PasswordPolicy, PlatformAccounts, Resident,
    SandboxBank, TokenKeys,
};
use citypay_identity::AccountClass;
use citypay_shard::{Command, Shard, ShardConfig, SystemClock};
use citypay_store::{Migration, OnConflict, ServiceRow, Value};
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::Wallet;

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    shard: Shard,
    directory: Directory,
    wallet: Wallet,
    checkout: Checkout,
    bank: SandboxBank,
    rt: tokio::runtime::Runtime,
}

fn world() -> World {
    world_in(tempfile::tempdir().unwrap())
}

/// Every component's migrations, the checkout's up to `checkout_version`.
fn migrations(checkout_version: i64) -> Vec<Migration> {
    citypay_directory::MIGRATIONS
        .iter()
        .chain(citypay_wallet::MIGRATIONS)
        .chain(citypay_checkout::MIGRATIONS.iter().filter(|m| m.version <= checkout_version))
        .copied()
        .collect()
}

/// A world on the database `city.db` in `dir`, made or brought up to date.
fn world_in(dir: tempfile::TempDir) -> World {
    let path = dir.path().join("city.db");
    let migrations = migrations(i64::MAX);
    let store = SqliteStore::open_writer(&path, &migrations).unwrap();
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, SystemClock).unwrap();
    let keys = DirectoryKeys {
        sealing: SealingKeys::from_config(SealingKeys::generate_config().expose()).unwrap(),
        index: IndexKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
        tokens: TokenKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
    };
    let reader = Arc::new(SqliteReader::open(&path).unwrap());
    let directory = Directory::new(shard.handle(), reader, keys, Arc::new(SystemClock), PasswordPolicy::FAST_INSECURE);
    let bank = SandboxBank::new();
    let wallet = Wallet::new(directory.clone(), Arc::new(bank.clone()));
    let checkout = Checkout::new(directory.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        directory.onboard_city(330100, "Hangzhou").await.unwrap();
        directory.open_platform_accounts().await.unwrap();
    });
    World { _dir: dir, path, shard, directory, wallet, checkout, bank, rt }
}

/// A resident of `class` (reached by linking cards of one, three or five banks) with `yuan` in
/// their wallet.
fn resident(w: &World, id_number: &str, mobile: &str, class: AccountClass, yuan: i64) -> Resident {
    resident_in(w, 330100, id_number, mobile, class, yuan)
}

/// [`resident`] of `city` (onboarded).
fn resident_in(w: &World, city: u32, id_number: &str, mobile: &str, class: AccountClass, yuan: i64) -> Resident {
    w.rt.block_on(async {
        let new = NewResident {
            city,
            name: "Wang Wu".into(),
            mobile: mobile.into(),
            id_number: id_number.into(),
            password: "correct horse".into(),
        };
        let r = w.directory.register_resident(&new).await.unwrap();
        let banks = match class {
            AccountClass::I => 1,
            AccountClass::II => 3,
            AccountClass::III => 5,
        };
        let (cards, reached) = w.wallet.link_sandbox_cards(&w.bank, &r, banks).await.unwrap();
        assert_eq!(reached, class);
        if yuan > 0 {
            w.wallet.top_up(&r, cards[0].id, yuan * 100, &format!("fund-{mobile}")).await.unwrap();
        }
        Resident { class, ..r }
    })
}

fn merchant(w: &World, uscc: &str) -> (u64, u64) {
    let (m, _) = w
        .rt
        .block_on(w.directory.onboard_merchant(&NewMerchant {
            city: 330100,
            name: "West Lake Noodles".into(),
            uscc: uscc.into(),
            mcc: "5812".into(),
            category: Category::Restaurant,
            settlement_account: "6222020200112233446".into(),
            notify_url: Some("https://noodles.example/notify".into()),
        }))
        .unwrap();
    (m.id, m.account)
}

fn order(no: &str, fen: i64) -> NewTrade {
    NewTrade { out_trade_no: no.into(), amount: fen, subject: "beef noodles".into(), timeout_s: None, notify: None, cashier: None }
}

/// Wrong codes are counted per hour: a check of the counts waits out an hour about to end.
fn inside_one_hour() {
    let left = 3600 - citypay_shard::Clock::now(&SystemClock).unix_seconds() % 3600;
    if left < 20 {
        std::thread::sleep(std::time::Duration::from_secs(left + 1));
    }
}

async fn bal(d: &Directory, account: u64) -> i64 {
    d.shard().account(account).await.unwrap().unwrap().balance.net_posted()
}

/// The books balance, and custody holds exactly the wallets' and merchants' money and the
/// platform's fees.
fn check_books(w: &World, accounts: &[u64]) {
    w.rt.block_on(async {
        let mut held = bal(&w.directory, PlatformAccounts::CNY.fee_revenue).await;
        for a in accounts {
            held += bal(&w.directory, *a).await;
        }
        let custody = bal(&w.directory, PlatformAccounts::CNY.sandbox_custody).await;
        assert_eq!(-custody, held, "custody equals client money");
    });
}

fn audit_clean(w: World) {
    w.shard.shutdown();
    let mut reader = SqliteStore::open_reader(&w.path).unwrap();
    let report = citypay_store::audit(&mut reader).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

const ALICE: (&str, &str) = ("11010519491231002X", "13800138000");
const BOB: (&str, &str) = ("440524198001010013", "13900139000");
const SHOP_A: &str = "91350100M000100Y43";
const SHOP_B: &str = "91110000600037341L";

#[test]
fn qr_payments_refunds_close_and_cancel() {
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 100);
    let bob = resident(&w, BOB.0, BOB.1, AccountClass::II, 100);
    let (shop, shop_account) = merchant(&w, SHOP_A);
    w.rt.block_on(async {
        let c = &w.checkout;
        let d = &w.directory;
        let (trade, payload) = c.create_trade(shop, &order("T1", 2_372)).await.unwrap();
        assert_eq!(trade.status, TradeStatus::WaitBuyerPay);
        // Creating it again is idempotent; another amount under the same number is refused.
        assert_eq!(c.create_trade(shop, &order("T1", 2_372)).await.unwrap().0, trade);
        assert!(matches!(c.create_trade(shop, &order("T1", 1)).await, Err(CheckoutError::OutTradeNoReused)));
        let paid = c.pay_qr(&alice, &payload, None, "k").await.unwrap();
        assert_eq!((paid.status, paid.payer_resident), (TradeStatus::TradeSuccess, Some(alice.id)));
        // Alice's retry answers the same; Bob cannot pay it again.
        assert_eq!(c.pay_qr(&alice, &payload, None, "k").await.unwrap().id, trade.id);
        assert!(matches!(c.pay_qr(&bob, &payload, None, "k").await, Err(CheckoutError::AlreadyPaid)));
        assert_eq!(bal(d, alice.wallet).await, 10_000 - 2_372);
        // A restaurant pays 0.6%: 14.232 fen rounds to 14; the shop is credited the net.
        assert_eq!(paid.fee, 14);
        assert_eq!(bal(d, shop_account).await, 2_372 - 14);
        assert_eq!(bal(d, PlatformAccounts::CNY.fee_revenue).await, 14);
        // Two partial refunds, a replay, a reused number, and one too many.
        let first = c.refund(shop, "T1", "R1", 1_000).await.unwrap();
        assert!(first.fund_change);
        let after = c.refund(shop, "T1", "R2", 372).await.unwrap().trade;
        assert_eq!((after.refunded, after.status), (1_372, TradeStatus::TradeSuccess));
        // The repeat answers the first refund's record, the total now, and that nothing moved.
        let again = c.refund(shop, "T1", "R1", 1_000).await.unwrap();
        assert_eq!((again.trade.refunded, &again.refund, again.fund_change), (1_372, &first.refund, false));
        assert_eq!(c.refund_query(shop, "T1", "R1").await.unwrap(), again);
        assert!(matches!(c.refund_query(shop, "T1", "R9").await, Err(CheckoutError::RefundNotFound)));
        // The fee comes back in proportion, rounded down: floor(14 * 1372 / 2372) = 8.
        assert_eq!(bal(d, PlatformAccounts::CNY.fee_revenue).await, 14 - 8);
        assert!(matches!(c.refund(shop, "T1", "R1", 999).await, Err(CheckoutError::RefundRequestReused)));
        assert!(matches!(c.refund(shop, "T1", "R3", 1_001).await, Err(CheckoutError::RefundExceedsPaid)));
        assert!(matches!(c.refund(shop, "T1", "R4", i64::MAX).await, Err(CheckoutError::RefundExceedsPaid)), "no overflow");
        // Cancel refunds the rest and closes the trade.
        let cancelled = c.cancel(shop, "T1").await.unwrap();
        assert_eq!((cancelled.refunded, cancelled.status), (2_372, TradeStatus::TradeClosed));
        assert_eq!(bal(d, alice.wallet).await, 10_000);
        // All of the fee came back, and the shop holds nothing of the trade.
        assert_eq!(bal(d, PlatformAccounts::CNY.fee_revenue).await, 0);
        assert_eq!(bal(d, shop_account).await, 0);
        // An unpaid trade closes, and cannot be paid after.
        let (_, payload) = c.create_trade(shop, &order("T2", 500)).await.unwrap();
        assert_eq!(c.close(shop, "T2").await.unwrap().status, TradeStatus::TradeClosed);
        assert!(matches!(c.pay_qr(&bob, &payload, None, "k").await, Err(CheckoutError::TradeClosed)));
        assert!(matches!(c.refund(shop, "T2", "R1", 1).await, Err(CheckoutError::TradeClosed)));
        // A static counter QR with the amount the payer typed.
        let sticker = c.static_qr(shop).await.unwrap();
        let counter = c.pay_qr(&bob, &sticker, Some(1_500), "sticker-1").await.unwrap();
        assert_eq!((counter.amount, counter.method), (1_500, Method::Qr));
        assert!(matches!(c.pay_qr(&bob, &sticker, None, "k").await, Err(CheckoutError::InvalidField { .. })));
        // More than the wallet holds: refused, trade still waiting.
        let (_, payload) = c.create_trade(shop, &order("T3", 1_000_000)).await.unwrap();
        match c.pay_qr(&bob, &payload, None, "k").await {
            Err(CheckoutError::Refused(status)) => assert_eq!(status.name(), "insufficient_funds"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.trade(shop, "T3").await.unwrap().status, TradeStatus::WaitBuyerPay);
        // Topped up, Bob pays it after all: a refusal does not stick to the trade.
        let card = w.wallet.cards(&bob).await.unwrap()[0].id;
        w.wallet.top_up(&bob, card, 1_000_000, "more").await.unwrap();
        assert_eq!(c.pay_qr(&bob, &payload, None, "k").await.unwrap().status, TradeStatus::TradeSuccess);
        // Cash at the counter is recorded; no wallet moves.
        let cash = c.record_cash_sale(shop, &order("C1", 800)).await.unwrap();
        assert_eq!((cash.method, cash.status, cash.payer_resident), (Method::Cash, TradeStatus::TradeSuccess, None));
        // Its refund is recorded (the cash goes back over the counter; no wallet moves).
        let shop_before = bal(d, shop_account).await;
        let refunded = c.refund(shop, "C1", "CR1", 300).await.unwrap();
        assert_eq!((refunded.trade.refunded, refunded.trade.status, refunded.fund_change), (300, TradeStatus::TradeSuccess, true));
        assert_eq!(c.refund(shop, "C1", "CR2", 500).await.unwrap().trade.status, TradeStatus::TradeClosed);
        assert_eq!(bal(d, shop_account).await, shop_before);
        // Every change wrote an outbox event.
        assert!(c.pending_events(shop, 100).await.unwrap().len() >= 8);
    });
    check_books(&w, &[alice.wallet, bob.wallet, shop_account]);
    audit_clean(w);
}

#[test]
fn a_chinese_merchant_name_goes_in_the_language_template() {
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 10);
    w.rt.block_on(async {
        w.directory.onboard_city(350100, "福州").await.unwrap();
        let (m, _) = w
            .directory
            .onboard_merchant(&NewMerchant {
                city: 350100,
                name: "西湖面馆".into(),
                uscc: SHOP_A.into(),
                mcc: "5812".into(),
                category: Category::Restaurant,
                settlement_account: "6222020200112233446".into(),
                notify_url: None,
            })
            .await
            .unwrap();
        let (_, payload) = w.checkout.create_trade(m.id, &order("Z1", 300)).await.unwrap();
        let decoded = citypay_codes::mpm::Payload::decode(&payload).unwrap();
        let language = decoded.language().unwrap();
        assert_eq!((language.name.as_str(), language.city.as_deref()), ("西湖面馆", Some("福州")));
        assert!(decoded.name().is_some_and(str::is_ascii));
        w.checkout.pay_qr(&alice, &payload, None, "k").await.unwrap();
        // Without a notification URL there is nothing to deliver, so nothing is queued.
        assert!(w.checkout.pending_events(m.id, 100).await.unwrap().is_empty());
    });
}

#[test]
fn qr_payloads_of_other_schemes_and_bad_ones_are_refused() {
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 10);
    let (shop, _) = merchant(&w, SHOP_A);
    w.rt.block_on(async {
        let pix = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D";
        assert!(matches!(w.checkout.pay_qr(&alice, pix, Some(100), "k").await, Err(CheckoutError::SchemeNotAccepted(_))));
        assert!(matches!(w.checkout.pay_qr(&alice, &pix[..40], Some(100), "k").await, Err(CheckoutError::InvalidQr(_))));
        // A citypay payload in another currency: its amounts are not yuan, so it pays nothing.
        let bahrain = citypay_codes::mpm::CitypayQr {
            merchant_id: shop.to_string(),
            mcc: "5812".into(),
            currency: "048".into(),
            country: "CN".into(),
            name: "Noodles".into(),
            city: "Fuzhou".into(),
            postal_code: None,
            language: None,
            charge: citypay_codes::mpm::Charge::Static,
        };
        let payload = bahrain.encode().unwrap();
        assert!(matches!(w.checkout.pay_qr(&alice, &payload, Some(100), "k").await, Err(CheckoutError::InvalidQr(_))));
        assert_eq!(bal(&w.directory, alice.wallet).await, 1_000, "nothing moved");
    });
}

#[test]
fn racing_payers_pay_a_trade_once_and_racing_refunds_never_exceed_it() {
    let w = world();
    let payers: Vec<Resident> = (0..6)
        .map(|i| {
            let body = format!("11010519900101{:03}", 100 + i);
            let id = format!("{body}{}", citypay_identity::resident_id::check_character(&body).unwrap());
            resident(&w, &id, &format!("1380000000{i}"), AccountClass::III, 100)
        })
        .collect();
    let (shop, shop_account) = merchant(&w, SHOP_A);
    let (_, payload) = w.rt.block_on(w.checkout.create_trade(shop, &order("RACE", 5_000))).unwrap();
    let results = w.rt.block_on(async {
        let tasks: Vec<_> = payers
            .iter()
            .map(|p| {
                let (c, p, payload) = (w.checkout.clone(), p.clone(), payload.clone());
                tokio::spawn(async move { c.pay_qr(&p, &payload, None, "k").await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(r, Err(CheckoutError::AlreadyPaid))));
    // The net of 0.6%: 5,000 less 30 fen.
    assert_eq!(w.rt.block_on(bal(&w.directory, shop_account)), 5_000 - 30);
    // Ten refund requests of 1,000 race for a 5,000 trade: exactly five succeed.
    let refunds = w.rt.block_on(async {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let c = w.checkout.clone();
                tokio::spawn(async move { c.refund(shop, "RACE", &format!("R{i}"), 1_000).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    assert_eq!(refunds.iter().filter(|r| r.is_ok()).count(), 5, "{refunds:?}");
    assert_eq!(w.rt.block_on(bal(&w.directory, shop_account)), 0);
    let accounts: Vec<u64> = payers.iter().map(|p| p.wallet).chain([shop_account]).collect();
    check_books(&w, &accounts);
    audit_clean(w);
}

#[test]
fn payment_codes_work_once_and_guessing_is_limited() {
    inside_one_hour();
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 100);
    let (shop, shop_account) = merchant(&w, SHOP_A);
    let (other_shop, _) = merchant(&w, SHOP_B);
    w.rt.block_on(async {
        let c = &w.checkout;
        let (slot, secret) = c.enroll_device(&alice).await.unwrap();
        let now = citypay_shard::Clock::now(&SystemClock).unix_seconds();
        let code = PaymentCode::generate(slot, secret.expose(), now);
        let paid = c.pay_with_code(shop, &order("P1", 1_234), &code).await.unwrap();
        assert_eq!((paid.method, paid.payer_resident), (Method::PaymentCode, Some(alice.id)));
        // The till retries the same order: the same answer, no second payment.
        assert_eq!(c.pay_with_code(shop, &order("P1", 1_234), &code).await.unwrap().id, paid.id);
        // Retried much later, its code long expired: still the same answer, and the phone is
        // not charged with wrong codes for it (only real wrong codes are counted against it below).
        let expired = PaymentCode::generate(slot, secret.expose(), now - 600);
        for _ in 0..6 {
            assert_eq!(c.pay_with_code(shop, &order("P1", 1_234), &expired).await.unwrap().id, paid.id);
        }
        // The same code for another order is refused.
        assert!(matches!(c.pay_with_code(shop, &order("P2", 100), &code).await, Err(CheckoutError::CodeUsed)));
        assert_eq!(bal(&w.directory, shop_account).await, 1_234 - 7);
        // Merchant isolation: another merchant does not see, refund or close this trade.
        assert!(matches!(c.trade(other_shop, "P1").await, Err(CheckoutError::TradeNotFound)));
        assert!(matches!(c.refund(other_shop, "P1", "R1", 1).await, Err(CheckoutError::TradeNotFound)));
        assert!(matches!(c.close(other_shop, "P1").await, Err(CheckoutError::TradeNotFound)));
        // Wrong codes: each merchant gets 3 an hour at one device, then cools down for it; they
        // never lock the device, and the owner's next genuine code pays elsewhere.
        let wrong = format!("{}{:08}{:08}", citypay_codes::payment_code::PREFIX, slot, 0);
        for i in 0..3 {
            let r = c.pay_with_code(other_shop, &order(&format!("G{i}"), 100), &wrong).await;
            assert!(matches!(r, Err(CheckoutError::InvalidCode(_))), "{r:?}");
        }
        let fresh = PaymentCode::generate(slot, secret.expose(), now + 30);
        let r = c.pay_with_code(other_shop, &order("G8", 100), &fresh).await;
        assert!(matches!(r, Err(CheckoutError::DeviceCoolingDown { retry_after_s: 1..=3600 })), "{r:?}");
        assert_eq!(c.pay_with_code(shop, &order("G9", 100), &fresh).await.unwrap().payer_resident, Some(alice.id));
        assert_eq!(c.devices(&alice).await.unwrap()[0].wrong_codes_this_hour, 3);
        for i in 0..20 {
            let unknown = format!("{}{:08}{:08}", citypay_codes::payment_code::PREFIX, (slot + 1 + i) % 99_999_999, 0);
            let _ = c.pay_with_code(shop, &order(&format!("U{i}"), 100), &unknown).await;
        }
        assert!(matches!(c.pay_with_code(shop, &order("U99", 100), &wrong).await, Err(CheckoutError::TooManyAttempts)));
        // Another API server shares the budget through the database: it lets one more wrong
        // code through (which tells it the budget is spent), then refuses too.
        let other_server = citypay_checkout::Checkout::new(w.directory.clone());
        let unknown = |i: u32| format!("{}{:08}{:08}", citypay_codes::payment_code::PREFIX, (slot + 40 + i) % 99_999_999, 0);
        let first = other_server.pay_with_code(shop, &order("V0", 100), &unknown(0)).await;
        assert!(matches!(first, Err(CheckoutError::InvalidCode(_))), "{first:?}");
        let second = other_server.pay_with_code(shop, &order("V1", 100), &unknown(1)).await;
        assert!(matches!(second, Err(CheckoutError::TooManyAttempts)), "{second:?}");
    });
    check_books(&w, &[alice.wallet, shop_account]);
    audit_clean(w);
}

/// In a country a device's slot names its resident's bucket, and a slot that a device
/// enrolled before slots carried buckets has on another shard is drawn again: a code names
/// one device. Such a device is told apart by its slot naming another bucket.
#[test]
fn a_device_slot_taken_elsewhere_is_drawn_again() {
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 0);
    w.rt.block_on(async {
        let c = &w.checkout;
        let asked = std::sync::Mutex::new(Vec::new());
        let first_taken = |slot| {
            let mut asked = asked.lock().unwrap();
            asked.push(slot);
            std::future::ready(Ok(asked.len() == 1))
        };
        let (slot, _) = c.enroll_device_avoiding(&alice, first_taken).await.unwrap();
        let asked = asked.into_inner().unwrap();
        assert_eq!((asked.len(), slot), (2, asked[1]), "the second slot drawn: {asked:?}");
        assert_eq!(citypay_checkout::bucket_of_device(slot), citypay_routing::bucket_of_owner(alice.id));
        assert_eq!(c.device_from_before_buckets(slot).await.unwrap(), None, "it carries its bucket");
        // Every slot drawn taken: refused, nothing enrolled.
        let always = |_| std::future::ready(Ok(true));
        assert!(matches!(c.enroll_device_avoiding(&alice, always).await, Err(CheckoutError::Unavailable(_))));
        assert_eq!(c.devices(&alice).await.unwrap().len(), 1);
        // A device from before: its slot names a bucket its resident is not in.
        let old_slot = slot + 1;
        let row = ServiceRow {
            table: "payment_devices",
            key: vec![("id", Value::Int(i64::from(old_slot)))],
            columns: vec![
                ("resident_id", Value::Int(i64::try_from(alice.id).unwrap())),
                ("secret_sealed", Value::Blob(vec![0; 48])),
                ("last_step", Value::Int(0)),
                ("failures", Value::Int(0)),
                ("created_at", Value::Int(0)),
            ],
            on_conflict: OnConflict::Fail,
        };
        w.shard.handle().submit(Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() }).await.unwrap();
        assert_eq!(c.device_from_before_buckets(old_slot).await.unwrap(), Some(alice.id));
        assert_eq!(c.device_from_before_buckets(old_slot + 1).await.unwrap(), None, "no such device");
    });
}

#[test]
fn account_class_caps_limit_balance_payments() {
    let w = world();
    // Class I: 1,000 yuan of balance payments since opening.
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::I, 2_000);
    let (shop, _) = merchant(&w, SHOP_A);
    w.rt.block_on(async {
        let c = &w.checkout;
        let (_, payload) = c.create_trade(shop, &order("BIG", 100_001)).await.unwrap();
        match c.pay_qr(&alice, &payload, None, "k").await {
            Err(CheckoutError::Refused(status)) => assert_eq!(status.name(), "exceeds_window_cap"),
            other => panic!("{other:?}"),
        }
        let (_, payload) = c.create_trade(shop, &order("OK", 100_000)).await.unwrap();
        c.pay_qr(&alice, &payload, None, "k").await.unwrap();
    });
}

#[test]
fn unpaid_trades_close_themselves_when_their_time_is_up() {
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 10);
    let (shop, _) = merchant(&w, SHOP_A);
    w.rt.block_on(async {
        let c = &w.checkout;
        let mut quick = order("Q1", 100);
        quick.timeout_s = Some(1);
        let (_, payload) = c.create_trade(shop, &quick).await.unwrap();
        c.create_trade(shop, &NewTrade { out_trade_no: "Q2".into(), ..quick.clone() }).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        assert!(matches!(c.pay_qr(&alice, &payload, None, "k").await, Err(CheckoutError::TradeClosed)));
        assert_eq!(c.close_expired(100).await.unwrap(), 1, "the sweeper closes the other");
        assert_eq!(c.trade(shop, "Q2").await.unwrap().status, TradeStatus::TradeClosed);
    });
}

/// One recorded post: URL, headers, body.
type Post = (String, Vec<(&'static str, String)>, String);

/// Records what the dispatcher posts and answers with a scripted status.
#[derive(Clone, Default)]
struct Recorder {
    posts: Arc<std::sync::Mutex<Vec<Post>>>,
    statuses: Arc<std::sync::Mutex<Vec<u16>>>,
}

impl citypay_checkout::notify::Deliver for Recorder {
    fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: String) -> impl std::future::Future<Output = Result<citypay_checkout::notify::Answered, String>> + Send {
        self.posts.lock().unwrap().push((url.to_owned(), headers, body));
        let status = self.statuses.lock().unwrap().pop().unwrap_or(200);
        async move { Ok(citypay_checkout::notify::Answered { status, body: String::new() }) }
    }
}

/// A shop with a notification URL, and `alice`'s payment of its trade `out_trade_no` (its
/// events are due).
async fn notified_shop_paid(w: &World, alice: &Resident, out_trade_no: &str) -> (citypay_directory::Merchant, citypay_directory::MerchantCredentials) {
    let (m, credentials) = w
        .directory
        .onboard_merchant(&NewMerchant {
            city: 330100,
            name: "Notified Shop".into(),
            uscc: SHOP_A.into(),
            mcc: "5411".into(),
            category: Category::Retail,
            settlement_account: "6222020200112233446".into(),
            notify_url: Some("http://127.0.0.1:9/hook".into()),
        })
        .await
        .unwrap();
    let (_, payload) = w.checkout.create_trade(m.id, &order(out_trade_no, 700)).await.unwrap();
    w.checkout.pay_qr(alice, &payload, None, "k").await.unwrap();
    (m, credentials)
}

#[test]
fn notifications_are_signed_retried_and_stop_at_2xx() {
    use citypay_checkout::notify::{Dispatcher, signature};
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 100);
    w.rt.block_on(async {
        let (m, credentials) = notified_shop_paid(&w, &alice, "N1").await;
        let recorder = Recorder::default();
        // The first post of each event fails with 500, the retry (later) succeeds.
        recorder.statuses.lock().unwrap().extend([200, 200, 500, 500]);
        let dispatcher = Dispatcher::new(w.directory.clone(), recorder.clone(), vec![0, 0]);
        let first = dispatcher.run_once(100).await.unwrap();
        assert_eq!((first.delivered, first.retried), (0, 2), "{first:?}");
        // Each failure is reported for the log, with its attempt and the wait before the next.
        assert_eq!(first.failures.len(), 2);
        assert!(first.failures.iter().all(|f| f.merchant == m.id && f.attempt == 1 && f.reason == "HTTP 500" && f.retry_in_s == Some(0)), "{first:?}");
        let second = dispatcher.run_once(100).await.unwrap();
        assert_eq!((second.delivered, second.retried), (2, 0), "{second:?}");
        assert_eq!(dispatcher.run_once(100).await.unwrap().delivered, 0, "delivered events are not sent again");
        let posts = recorder.posts.lock().unwrap().clone();
        assert_eq!(posts.len(), 4);
        let secret = credentials.webhook_secret.unwrap();
        for (url, headers, body) in &posts {
            assert_eq!(url, "http://127.0.0.1:9/hook");
            let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap();
            let sig = header("citypay-signature");
            let t: u64 = sig.trim_start_matches("t=").split(',').next().unwrap().parse().unwrap();
            assert_eq!(sig, signature(secret.expose(), t, body), "signed with the merchant's secret");
            let event: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(event["event_id"], header("citypay-event-id"));
        }
        // The same event is posted again with the same id after a failure (dedup by id).
        assert_eq!(posts[0].2, posts[2].2);
    });
}

/// Answers 200 after a while, counting each event's posts in flight at once.
#[derive(Clone, Default)]
struct SlowReceiver {
    posts: Arc<std::sync::atomic::AtomicUsize>,
    in_flight: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    most_at_once: Arc<std::sync::atomic::AtomicUsize>,
}

impl citypay_checkout::notify::Deliver for SlowReceiver {
    fn post(&self, _url: &str, headers: Vec<(&'static str, String)>, _body: String) -> impl std::future::Future<Output = Result<citypay_checkout::notify::Answered, String>> + Send {
        use std::sync::atomic::Ordering::SeqCst;
        let this = self.clone();
        let event = headers.into_iter().find(|(name, _)| *name == "citypay-event-id").map(|(_, id)| id).unwrap_or_default();
        async move {
            this.posts.fetch_add(1, SeqCst);
            let now = {
                let mut in_flight = this.in_flight.lock().unwrap();
                let count = in_flight.entry(event.clone()).or_default();
                *count += 1;
                *count
            };
            this.most_at_once.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            *this.in_flight.lock().unwrap().get_mut(&event).unwrap() -= 1;
            Ok(citypay_checkout::notify::Answered { status: 200, body: String::new() })
        }
    }
}

#[test]
fn two_dispatchers_never_send_one_event_at_once() {
    use citypay_checkout::notify::Dispatcher;
    use std::sync::atomic::Ordering::SeqCst;
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 100);
    w.rt.block_on(async {
        notified_shop_paid(&w, &alice, "D1").await;
        // Two dispatchers (a deposed writer's and the new one's) read the same due events.
        let receiver = SlowReceiver::default();
        let one = Dispatcher::new(w.directory.clone(), receiver.clone(), vec![0]);
        let two = Dispatcher::new(w.directory.clone(), receiver.clone(), vec![0]);
        let (a, b) = tokio::join!(one.run_once(100), two.run_once(100));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(receiver.most_at_once.load(SeqCst), 1, "{a:?} {b:?}");
        assert_eq!(a.delivered + b.delivered, receiver.posts.load(SeqCst), "each event sent by one of them: {a:?} {b:?}");
        assert!(a.delivered + b.delivered >= 1);
        // Delivered, the events are not due to either again.
        assert_eq!(one.run_once(100).await.unwrap().delivered + two.run_once(100).await.unwrap().delivered, 0);
    });
}

#[test]
fn an_old_database_gets_refund_records_and_refund_periods() {
    // A trade paid and partly refunded before refunds had records and trades had periods.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_writer(&dir.path().join("city.db"), &migrations(5)).unwrap();
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, SystemClock).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (paid_at, merchant) = (i64::try_from(now).unwrap() - 86_400, 7_i64);
    let text = |v: &str| Value::Text(v.to_owned());
    let trade = ServiceRow {
        table: "trades",
        key: vec![("id", Value::Int(11))],
        columns: vec![
            ("merchant_id", Value::Int(merchant)),
            ("city_code", Value::Int(330100)),
            ("out_trade_no", text("OLD1")),
            ("amount", Value::Int(1_000)),
            ("subject", text("tea")),
            ("status", text("TRADE_SUCCESS")),
            ("method", text("qr")),
            ("payer_resident", Value::Int(3)),
            ("refunded", Value::Int(400)),
            ("version", Value::Int(3)),
            ("created_at", Value::Int(paid_at)),
            ("expires_at", Value::Int(paid_at + 900)),
            ("paid_at", Value::Int(paid_at)),
            ("fee", Value::Int(6)),
        ],
        on_conflict: OnConflict::Fail,
    };
    let refund = ServiceRow {
        table: "refunds",
        key: vec![("trade_id", Value::Int(11)), ("out_request_no", text("R1"))],
        columns: vec![("amount", Value::Int(400)), ("created_at", Value::Int(paid_at + 60))],
        on_conflict: OnConflict::Fail,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let command = Command { event: None, guards: Vec::new(), rows: vec![trade, refund], always_rows: Vec::new() };
    rt.block_on(shard.handle().submit(command)).unwrap();
    // The ledger's record of the fee that refund gave back: 2 fen, under the trade's id.
    let platform = PlatformAccounts::CNY;
    let leg = |id: u128, debit, credit, amount, code, user_data| {
        let leg = citypay_ledger::Leg { debit, credit, amount, currency: citypay_ledger::Currency::CNY, code, class: 0, user_data };
        citypay_ledger::Event::Transfer(citypay_ledger::Transfer { id, leg, pending_timeout_s: None })
    };
    let fee_returned = citypay_directory::transfer_codes::FEE_RETURNED;
    let events = platform.opening_events().into_iter().chain([
        leg(1, platform.sandbox_custody, platform.fee_revenue, 6, citypay_directory::transfer_codes::FEE, 11),
        leg(2, platform.fee_revenue, platform.sandbox_custody, 2, fee_returned, 11),
    ]);
    for event in events {
        assert_eq!(rt.block_on(shard.handle().submit(event.into())).unwrap().status, citypay_ledger::Status::Ok);
    }
    shard.shutdown();
    drop(rt);

    // Brought up to date: the refund is a record, and the trade finishes 90 days after it
    // was paid.
    let w = world_in(dir);
    w.rt.block_on(async {
        let answer = w.checkout.refund_query(7, "OLD1", "R1").await.unwrap();
        assert_eq!((answer.refund.amount, answer.refund.status, answer.fund_change), (400, RefundStatus::RefundSuccess, false));
        assert_eq!(answer.trade.finishes_at, Some(now - 86_400 + DEFAULT_REFUND_PERIOD_S));
        assert_eq!((answer.trade.status, answer.trade.refunded), (TradeStatus::TradeSuccess, 400));
        // What it gave back, as the ledger has it.
        assert_eq!(answer.trade.fee_returned, 2);
    });
}

/// The wallet's shard, as the checkout sees it through [`citypay_checkout::RefundsElsewhere`]:
/// each hold is written (its guards and rows, no money: the wallet is not on this shard) and
/// answered as the test says, one answer per `send`; `outcome` answers what the test set.
struct WalletShard {
    directory: Directory,
    answers: std::sync::Mutex<std::collections::VecDeque<Option<citypay_checkout::SentRefund>>>,
    outcomes: std::sync::Mutex<std::collections::HashMap<u128, bool>>,
    /// When set, a posted hold's crossing is finished by the resolver's round before `send`
    /// answers (the race of a resolver that saw the crossing posted first).
    resolver_first: std::sync::OnceLock<citypay_checkout::Checkout>,
}

impl citypay_checkout::RefundsElsewhere for WalletShard {
    fn send(&self, hold: citypay_checkout::RefundHold) -> citypay_checkout::RefundFuture<'_, citypay_checkout::SentRefund> {
        Box::pin(async move {
            if !hold.rows.is_empty() {
                let command = Command { event: None, guards: hold.guards, rows: hold.rows, always_rows: Vec::new() };
                match self.directory.shard().submit(command).await {
                    Ok(_) => {}
                    Err(citypay_shard::SubmitError::GuardFailed { guard }) => return Ok(citypay_checkout::SentRefund::Guard(guard)),
                    Err(other) => panic!("{other}"),
                }
            }
            let answer = self.answers.lock().unwrap().pop_front().expect("an answer for every send");
            if let (Some(checkout), Some(citypay_checkout::SentRefund::Posted)) = (self.resolver_first.get(), &answer) {
                self.outcomes.lock().unwrap().insert(hold.id, true);
                assert_eq!(checkout.finish_refunds_elsewhere(10).await.unwrap(), 1, "the resolver finished it first");
            }
            answer.ok_or(CheckoutError::OutcomeUnknown)
        })
    }

    fn outcome(&self, id: u128) -> citypay_checkout::RefundFuture<'_, Option<bool>> {
        Box::pin(async move { Ok(self.outcomes.lock().unwrap().get(&id).copied()) })
    }
}

/// Refunds to a wallet of another shard, one of them returned after a later one went
/// through: the fee the returned one held is given back once in all, by the refunds that
/// stand, never twice (it was when each refund's part was worked out from the amount
/// refunded, which counted the one still crossing).
#[test]
fn a_refund_returned_by_another_shard_gives_no_fee_back_twice() {
    use citypay_checkout::SentRefund;
    let w = world();
    // Alice lives in Fuzhou (its own group of buckets), the shop is in Hangzhou.
    w.rt.block_on(w.directory.onboard_city(350100, "Fuzhou")).unwrap();
    let alice = resident_in(&w, 350100, ALICE.0, ALICE.1, AccountClass::II, 100);
    let (shop, shop_account) = merchant(&w, SHOP_A);
    let buckets = |account| citypay_routing::bucket_of_account(account).unwrap();
    assert_ne!(buckets(alice.wallet), buckets(shop_account));
    let wallet_shard = Arc::new(WalletShard { directory: w.directory.clone(), answers: Default::default(), outcomes: Default::default(), resolver_first: Default::default() });
    w.checkout.refund_elsewhere_through(wallet_shard.clone());
    let answer = |a: Option<SentRefund>| wallet_shard.answers.lock().unwrap().push_back(a);
    w.rt.block_on(async {
        let c = &w.checkout;
        let d = &w.directory;
        let (_, payload) = c.create_trade(shop, &order("T1", 2_372)).await.unwrap();
        assert_eq!(c.pay_qr(&alice, &payload, None, "k").await.unwrap().fee, 14);
        // Alice's wallet leaves this shard: her bucket is held elsewhere from now on.
        let mut map = citypay_routing::BucketMap::single(1);
        map = map.moved([buckets(alice.wallet)], 2);
        w.shard.handle().hold_buckets(Some(map.owned_by(1)));
        // A: 1 fen, its answer lost (its part of the fee: floor(14 / 2372) = 0).
        answer(None);
        assert!(matches!(c.refund(shop, "T1", "A", 1).await, Err(CheckoutError::OutcomeUnknown)));
        // B: the rest, through: all of the fee back.
        answer(Some(SentRefund::Posted));
        let b = c.refund(shop, "T1", "B", 2_371).await.unwrap();
        assert_eq!((b.trade.refunded, b.trade.fee_returned), (2_372, 14));
        assert_eq!(bal(d, PlatformAccounts::CNY.fee_revenue).await, 0);
        // A is returned by the wallet's shard: 1 fen is refundable again, no fee is owed.
        let a_id = citypay_directory::derived_event_id(&["trade", &b.trade.id.to_string(), "refund", "A", "crossing"]);
        wallet_shard.outcomes.lock().unwrap().insert(a_id, false);
        assert_eq!(c.finish_refunds_elsewhere(10).await.unwrap(), 1);
        let a = c.refund_query(shop, "T1", "A").await.unwrap();
        assert_eq!((a.refund.status, a.trade.refunded, a.trade.fee_returned), (RefundStatus::RefundFailed, 2_371, 14));
        // C: that fen again, through: no fee back (before, it gave 1 fen more than was charged).
        answer(Some(SentRefund::Posted));
        let c_ = c.refund(shop, "T1", "C", 1).await.unwrap();
        assert_eq!((c_.trade.refunded, c_.trade.fee_returned, c_.trade.status), (2_372, 14, TradeStatus::TradeClosed));
        assert_eq!(bal(d, PlatformAccounts::CNY.fee_revenue).await, 0, "the fee given back once");
        w.shard.handle().hold_buckets(None);
    });
    check_books(&w, &[alice.wallet, shop_account]);
    audit_clean(w);
}

/// A refund to a wallet of another shard whose crossing the resolver's round finished before
/// the request that made it heard the answer: that request moved the money, so it answers
/// `fund_change` true; asked again, false.
#[test]
fn a_refund_the_resolver_finished_first_still_answers_its_fund_change() {
    use citypay_checkout::SentRefund;
    let w = world();
    w.rt.block_on(w.directory.onboard_city(350100, "Fuzhou")).unwrap();
    let alice = resident_in(&w, 350100, ALICE.0, ALICE.1, AccountClass::II, 100);
    let (shop, shop_account) = merchant(&w, SHOP_A);
    let buckets = |account| citypay_routing::bucket_of_account(account).unwrap();
    let wallet_shard = Arc::new(WalletShard { directory: w.directory.clone(), answers: Default::default(), outcomes: Default::default(), resolver_first: Default::default() });
    let _ = wallet_shard.resolver_first.set(w.checkout.clone());
    w.checkout.refund_elsewhere_through(wallet_shard.clone());
    w.rt.block_on(async {
        let c = &w.checkout;
        let (_, payload) = c.create_trade(shop, &order("T1", 2_372)).await.unwrap();
        c.pay_qr(&alice, &payload, None, "k").await.unwrap();
        let map = citypay_routing::BucketMap::single(1).moved([buckets(alice.wallet)], 2);
        w.shard.handle().hold_buckets(Some(map.owned_by(1)));
        wallet_shard.answers.lock().unwrap().push_back(Some(SentRefund::Posted));
        let first = c.refund(shop, "T1", "R1", 500).await.unwrap();
        assert_eq!((first.refund.status, first.trade.refunded, first.fund_change), (RefundStatus::RefundSuccess, 500, true));
        let again = c.refund(shop, "T1", "R1", 500).await.unwrap();
        assert_eq!((again.refund.status, again.trade.refunded, again.fund_change), (RefundStatus::RefundSuccess, 500, false));
        w.shard.handle().hold_buckets(None);
    });
    check_books(&w, &[alice.wallet, shop_account]);
    audit_clean(w);
}

/// A refund refused while the merchant's balance was paid out is retried with the same
/// `out_request_no` (as Alipay asks) and succeeds once the merchant holds money again: the
/// ledger's stored refusal of the first attempt does not stick to the request.
#[test]
fn a_refund_refused_while_the_merchant_is_short_succeeds_when_retried() {
    let w = world();
    let alice = resident(&w, ALICE.0, ALICE.1, AccountClass::II, 100);
    let bob = resident(&w, BOB.0, BOB.1, AccountClass::II, 100);
    let (shop, shop_account) = merchant(&w, SHOP_A);
    w.rt.block_on(async {
        let c = &w.checkout;
        let (_, payload) = c.create_trade(shop, &order("T1", 2_000)).await.unwrap();
        c.pay_qr(&alice, &payload, None, "k").await.unwrap();
        // The day's balance is paid out to the merchant's bank.
        let payout = citypay_ledger::Transfer {
            id: 77,
            leg: citypay_ledger::Leg {
                debit: shop_account,
                credit: PlatformAccounts::CNY.sandbox_custody,
                amount: bal(&w.directory, shop_account).await,
                currency: citypay_ledger::Currency::CNY,
                code: 1,
                class: 0,
                user_data: 0,
            },
            pending_timeout_s: None,
        };
        assert_eq!(w.directory.shard().submit(citypay_ledger::Event::Transfer(payout).into()).await.unwrap().status, citypay_ledger::Status::Ok);
        match c.refund(shop, "T1", "R1", 1_000).await {
            Err(CheckoutError::Refused(status)) => assert_eq!(status.name(), "insufficient_funds"),
            other => panic!("{other:?}"),
        }
        // A new sale; the same refund request is tried again and goes through.
        let (_, payload) = c.create_trade(shop, &order("T2", 5_000)).await.unwrap();
        c.pay_qr(&bob, &payload, None, "k").await.unwrap();
        assert_eq!(c.refund(shop, "T1", "R1", 1_000).await.unwrap().trade.refunded, 1_000);
        assert!(!c.refund(shop, "T1", "R1", 1_000).await.unwrap().fund_change, "and once only");
        assert_eq!(bal(&w.directory, alice.wallet).await, 10_000 - 2_000 + 1_000);
    });
    check_books(&w, &[alice.wallet, bob.wallet, shop_account]);
    audit_clean(w);
}
