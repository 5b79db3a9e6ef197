//! Settling days end to end on the embedded store: fees and partial refunds settle to the exact
//! payouts, a re-run pays once, a refused payout returns to the balance and is paid later, a
//! negative day is absorbed, and the files tie out to the payouts and the ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use citypay_checkout::{Checkout, NewTrade};
use citypay_directory::{AccountKind, BankConnector, BankError, BankReceipt, Category, PlatformAccounts, SandboxBank, account_id};
use citypay_identity::CardNumber;
use citypay_ledger::{AccountId, LocalDate};
use citypay_settlement::{PayoutStatus, Settlement, SettlementError, SettlementFile};
use citypay_testkit::TestCity;

/// The sandbox bank, with one account it cannot pay while `down` is set.
struct FlakyBank {
    account: &'static str,
    down: AtomicBool,
}

impl BankConnector for FlakyBank {
    fn custody_account(&self) -> AccountId {
        SandboxBank::new().custody_account()
    }
    fn debit_card(&self, card: &CardNumber, amount: i64, reference: &str) -> Result<BankReceipt, BankError> {
        SandboxBank::new().debit_card(card, amount, reference)
    }
    fn credit_account(&self, account: &str, amount: i64, reference: &str) -> Result<BankReceipt, BankError> {
        SandboxBank::new().credit_account(account, amount, reference)
    }
    fn pay_merchant(&self, account: &str, amount: i64, reference: &str) -> Result<BankReceipt, BankError> {
        if account == self.account && self.down.load(Ordering::SeqCst) {
            return Err(BankError::Unavailable);
        }
        SandboxBank::new().pay_merchant(account, amount, reference)
    }
}

fn order(no: &str, fen: i64) -> NewTrade {
    NewTrade { out_trade_no: no.into(), amount: fen, subject: "goods".into(), timeout_s: None, notify: None, cashier: None }
}

/// The file adds up: opening plus lines is the closing balance.
fn ties_out(file: &SettlementFile) {
    let lines: i64 = file.lines.iter().map(|l| l.amount).sum();
    assert_eq!(file.opening_balance + lines, file.closing_balance, "{file:?}");
    let csv = file.to_csv();
    let body: i64 = csv
        .lines()
        .skip(1)
        .filter(|l| !l.contains("closing_balance") && !l.contains(",payout_") && !l.contains("counted_after_close"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(body, file.closing_balance, "the CSV's opening and lines add up to its closing balance:\n{csv}");
    // The payout comes from the closing balance and what the file shows was counted after it.
    if let Some(payout) = &file.payout {
        let amount = |name: &str| csv.lines().find(|l| l.contains(name)).map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap());
        assert_eq!(file.closing_balance + amount("counted_after_close").unwrap_or(0), payout.amount, "{csv}");
        assert_eq!(amount(",payout_"), Some(payout.amount), "{csv}");
    }
}

const MIGRATIONS: &[&[citypay_store::Migration]] = &[citypay_checkout::MIGRATIONS, citypay_settlement::MIGRATIONS];

#[test]
fn a_day_settles_to_the_exact_payouts_once_and_the_files_tie_out() {
    a_day_settles(TestCity::new(MIGRATIONS));
}

#[test]
fn a_day_settles_the_same_on_postgres() {
    if let Some(city) = TestCity::postgres(MIGRATIONS) {
        a_day_settles(city);
    }
}

fn a_day_settles(city: TestCity) {
    let bank = Arc::new(FlakyBank { account: "6222020200112230017", down: AtomicBool::new(true) });
    let checkout = Checkout::new(city.directory.clone());
    let settlement = Settlement::new(city.directory.clone(), bank.clone());
    let day = LocalDate::parse("2026-11-24").unwrap();
    let (shop, hospital, flaky, alice) = city.rt.block_on(async {
        let shop = city.merchant("91350100M000100Y43", Category::Retail, "6222020200112233446").await;
        let hospital = city.merchant("91110000600037341L", Category::Hospital, "6222020200112233453").await;
        let flaky = city.merchant("91330100MA27XL0E96", Category::Restaurant, bank.account).await;
        let alice = city.resident("11010519491231002X", "13800138000", 200_000).await;
        (shop, hospital, flaky, alice)
    });
    let paid = |merchant: u64, no: &str, fen: i64| {
        let (trade, payload) = city.rt.block_on(checkout.create_trade(merchant, &order(no, fen))).unwrap();
        city.rt.block_on(checkout.pay_qr(&alice, &payload, None, no)).unwrap();
        trade
    };
    // Day one. The shop: 100.00 (fee 0.60) and 23.72 (fee 0.14), 10.00 of the second refunded
    // (0.05 of its fee back). The hospital pays no fee. The restaurant's bank is down.
    paid(shop, "T1", 10_000);
    paid(shop, "T2", 2_372);
    city.rt.block_on(checkout.refund(shop, "T2", "R1", 1_000)).unwrap();
    paid(hospital, "H1", 50_000);
    paid(flaky, "F1", 3_000);
    let shop_owed = 10_000 - 60 + 2_372 - 14 - 1_000 + 5;
    assert!(matches!(city.rt.block_on(settlement.settle(day)), Err(SettlementError::DayNotClosed(_))));

    // After midnight a payment belongs to the next day.
    city.advance(16 * 3_600);
    paid(shop, "T3", 500);
    city.advance(3_600);
    let run = city.rt.block_on(settlement.settle(day)).unwrap();
    assert_eq!((run.paid, run.paid_amount, run.failed), (2, shop_owed + 50_000, 1), "{run:?}");
    let shop_account = account_id(AccountKind::Merchant, shop);
    let flaky_account = account_id(AccountKind::Merchant, flaky);
    city.rt.block_on(async {
        assert_eq!(city.balance(shop_account).await, 500 - 3, "only the next day's payment is left");
        assert_eq!(city.balance(account_id(AccountKind::Merchant, hospital)).await, 0);
        assert_eq!(city.balance(flaky_account).await, 3_000 - 18, "a refused payout is back in the balance");
        let failed = settlement.payout(flaky, day).await.unwrap().unwrap();
        assert_eq!((failed.status, failed.error.as_deref()), (PayoutStatus::Failed, Some("bank_unavailable")));
    });
    // Running the day again pays nothing twice; the refused payout is tried again.
    let again = city.rt.block_on(settlement.settle(day)).unwrap();
    assert_eq!((again.paid, again.already_settled, again.failed), (0, 2, 1), "{again:?}");
    assert_eq!(city.rt.block_on(city.balance(shop_account)), 500 - 3);
    assert_eq!(city.rt.block_on(settlement.payout(flaky, day)).unwrap().unwrap().attempts, 2);

    // The shop's file: its day, line by line, and the payout.
    let file = city.rt.block_on(settlement.file(shop, day)).unwrap();
    ties_out(&file);
    assert_eq!((file.opening_balance, file.closing_balance), (0, shop_owed));
    assert_eq!(file.lines.len(), 6, "two payments, two fees, a refund, a fee returned");
    let payout = file.payout.clone().unwrap();
    assert_eq!((payout.status, payout.amount), (PayoutStatus::Paid, file.closing_balance));
    let csv = file.to_csv();
    assert!(csv.contains(&format!("{shop},2026-11-24,,payout_paid,SBX-S-{shop}-2026-11-24-1,{shop_owed}")), "{csv}");

    // Day two: the restaurant refunds 10.00 and sells nothing (a negative day); its bank is
    // back. Its payout is the first day's money less the second day's refund.
    city.rt.block_on(checkout.refund(flaky, "F1", "R1", 1_000)).unwrap();
    bank.down.store(false, Ordering::SeqCst);
    city.advance(24 * 3_600);
    let next = day.next();
    let run = city.rt.block_on(settlement.settle(next)).unwrap();
    let flaky_owed = 3_000 - 18 - 1_000 + 6;
    assert_eq!((run.paid, run.paid_amount), (2, 497 + flaky_owed), "{run:?}");
    let flaky_file = city.rt.block_on(settlement.file(flaky, next)).unwrap();
    ties_out(&flaky_file);
    assert_eq!((flaky_file.opening_balance, flaky_file.closing_balance), (3_000 - 18, flaky_owed));
    // The first day's failed payout now has nothing left to pay: carried, never paid twice.
    city.rt.block_on(settlement.settle(day)).unwrap();
    let first = city.rt.block_on(settlement.payout(flaky, day)).unwrap().unwrap();
    assert_eq!((first.status, first.amount), (PayoutStatus::Carried, 0));
    let first_file = city.rt.block_on(settlement.file(flaky, day)).unwrap();
    ties_out(&first_file);
    assert_eq!(first_file.counted_after_close(), Some(-(3_000 - 18)), "the next day's payout took it");
    // The day before any of this, settled only now: nobody is owed anything, and no payout of
    // a later day is carried against it (it was: opening 0, closing 0, a negative carry).
    let earlier = LocalDate::parse("2026-11-23").unwrap();
    let run = city.rt.block_on(settlement.settle(earlier)).unwrap();
    assert_eq!((run.paid, run.carried, run.failed), (0, 0, 0), "{run:?}");
    for merchant in [shop, hospital, flaky] {
        let file = city.rt.block_on(settlement.file(merchant, earlier)).unwrap();
        ties_out(&file);
        assert_eq!((file.opening_balance, file.closing_balance, file.lines.len(), &file.payout), (0, 0, 0, &None));
    }
    // The shop's second file starts where the first ended and lists the first payout.
    let second = city.rt.block_on(settlement.file(shop, next)).unwrap();
    ties_out(&second);
    assert_eq!(second.opening_balance, shop_owed);
    assert_eq!(second.lines.iter().filter(|l| l.code == citypay_directory::transfer_codes::PAYOUT).count(), 1);

    city.rt.block_on(async {
        // Every merchant is paid out; custody holds exactly the wallets and the fees.
        for account in [shop_account, flaky_account, account_id(AccountKind::Merchant, hospital)] {
            assert_eq!(city.balance(account).await, 0);
        }
        let held = city.balance(alice.wallet).await + city.balance(PlatformAccounts::CNY.fee_revenue).await;
        assert_eq!(-city.balance(PlatformAccounts::CNY.sandbox_custody).await, held);
    });
    city.assert_books_balance();
}
