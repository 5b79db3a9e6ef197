//! Bills end to end at the service level, on both backends: a hospital bill with the insurance
//! fund's part (all or nothing), tuition paid by chosen items for a linked child, two payers
//! racing for one bill, late payment, cash at the counter, social-security contributions for
//! oneself and a relative, signed receipts, and the hospital's money in the next settlement
//! with a reconciliation file that ties out. The books balance after.

use std::sync::Arc;

use citypay_bills::{
    BillError, BillStatus, Bills, ContributionWindow, Item, LinkStatus, NewBill, PaidBy, Payer, PayerKind, ReceiptSigner, insurance_fund, verify_receipt,
};
use citypay_directory::{AccountKind, Category, PlatformAccounts, SandboxBank, account_id};
use citypay_ledger::LocalDate;
use citypay_settlement::{PayoutStatus, Settlement};
use citypay_testkit::{START, TestCity};

const MIGRATIONS: &[&[citypay_store::Migration]] = &[citypay_bills::MIGRATIONS, citypay_settlement::MIGRATIONS];
const ALICE: &str = "11010519491231002X";
const ALICES_MOTHER: &str = "330106195203150045";
const ALICES_SON: &str = "330106201005010031";
const BOB: &str = "440524198001010013";

fn bill(no: &str, payer: Payer, items: &[(&str, i64)], insured: i64, pick_items: bool) -> NewBill {
    NewBill {
        out_bill_no: no.into(),
        payer,
        title: format!("bill {no}"),
        items: items.iter().map(|(name, amount)| Item { name: (*name).into(), amount: *amount }).collect(),
        pick_items,
        insured,
        due_at: START.unix_seconds() + 30 * 86_400,
        late_allowed: false,
    }
}

fn by_id(number: &str) -> Payer {
    Payer { kind: PayerKind::IdNumber, identifier: number.into() }
}

#[test]
fn bills_are_paid_once_with_receipts_and_settle() {
    residents_pay_their_bills(TestCity::new(MIGRATIONS));
}

#[test]
fn bills_are_paid_the_same_on_postgres() {
    if let Some(city) = TestCity::postgres(MIGRATIONS) {
        residents_pay_their_bills(city);
    }
}

fn residents_pay_their_bills(city: TestCity) {
    let bills = Bills::new(city.directory.clone(), ReceiptSigner::from_seed(1, [9; 32]));
    let settlement = Settlement::new(city.directory.clone(), Arc::new(SandboxBank::new()));
    let keys = [bills.receipt_key()];
    city.rt.block_on(async {
        let hospital = city.merchant("91350100M000100Y43", Category::Hospital, "6222020200112233446").await;
        let school = city.merchant("12330100470001235F", Category::School, "6222020200112233453").await;
        let bureau = city.merchant("11330100002345678T", Category::SocialSecurity, "6222020200112233461").await;
        let utility = city.merchant("91110000600037341L", Category::Utility, "6222020200112233479").await;
        let alice = city.resident(ALICE, "13800138000", 500_000).await;
        let bob = city.resident(BOB, "13900139000", 1_000).await;
        let fund = bills.open_insurance_fund(330100).await.unwrap();
        assert_eq!(fund, insurance_fund(330100));

        // A hospital bill of 170.00, of which the insurance fund pays 100.00.
        let visit = bills.issue(hospital, &bill("H-1", by_id(ALICE), &[("consultation", 5_000), ("medicine", 12_000)], 10_000, false)).await.unwrap();
        assert_eq!(visit.payer_masked, "1101**********002X", "the bill keeps the number masked only");
        assert_eq!(bills.issue(hospital, &bill("H-1", by_id(ALICE), &[("consultation", 5_000), ("medicine", 12_000)], 10_000, false)).await.unwrap().id, visit.id);
        assert!(matches!(bills.issue(hospital, &bill("H-1", by_id(BOB), &[("x", 1)], 0, false)).await, Err(BillError::OutBillNoReused)));
        // The fund holds too little: nothing moves, for the patient either, and the answer
        // names the fund.
        bills.deposit_to_fund(330100, 5_000, "NHSA-1").await.unwrap();
        assert!(matches!(bills.pay(&alice, visit.id, None).await, Err(BillError::FundShort(10_000))));
        assert_eq!((city.balance(alice.wallet).await, city.balance(fund).await), (500_000, 5_000));
        assert_eq!(bills.bill(hospital, "H-1").await.unwrap().status, BillStatus::Open);
        bills.deposit_to_fund(330100, 100_000, "NHSA-2").await.unwrap();
        bills.deposit_to_fund(330100, 100_000, "NHSA-2").await.unwrap();
        let paid = bills.pay(&alice, visit.id, None).await.unwrap();
        assert_eq!((paid.amount, paid.insured, paid.fee, paid.method), (17_000, 10_000, 0, PaidBy::Wallet));
        assert_eq!(city.balance(alice.wallet).await, 500_000 - 7_000);
        assert_eq!(city.balance(fund).await, 105_000 - 10_000, "the second deposit with the same reference counted once");
        assert_eq!(city.balance(account_id(AccountKind::Merchant, hospital)).await, 17_000);
        // A retry answers the same payment; the receipt verifies, and a forged one does not.
        assert_eq!(bills.pay(&alice, visit.id, None).await.unwrap().id, paid.id);
        verify_receipt(&paid.receipt.text, &paid.receipt.signature, &keys).unwrap();
        assert!(verify_receipt(&paid.receipt.text.replace("17000", "1700"), &paid.receipt.signature, &keys).is_err());
        assert!(paid.receipt.text.contains("1101**********002X") && !paid.receipt.text.contains(ALICE));
        assert_eq!(bills.receipt_for(&alice, paid.id).await.unwrap(), paid.receipt);
        assert!(matches!(bills.receipt_for(&bob, paid.id).await, Err(BillError::BillNotFound)), "bob cannot read alice's receipt");

        // The wallet holds too little: the fund's part does not move either.
        let bobs = bills.issue(hospital, &bill("H-2", by_id(BOB), &[("x-ray", 30_000)], 20_000, false)).await.unwrap();
        assert!(matches!(bills.pay(&bob, bobs.id, None).await, Err(BillError::Refused(_))));
        assert_eq!((city.balance(bob.wallet).await, city.balance(fund).await), (1_000, 95_000));

        // Tuition by student number, an hour later: alice links her son's number and pays by
        // items.
        city.advance(3_600);
        let tuition = bills
            .issue(school, &bill("T-1", Payer { kind: PayerKind::StudentNumber, identifier: "S2026001".into() }, &[("tuition", 300_000), ("books", 20_000), ("trip", 15_000)], 0, true))
            .await
            .unwrap();
        assert!(matches!(bills.bill_for(&alice, tuition.id).await, Err(BillError::BillNotFound)), "not linked yet");
        let son = Payer { kind: PayerKind::StudentNumber, identifier: "S2026001".into() };
        let link = bills.link_payer(&alice, &son, Some(school), "son").await.unwrap();
        assert_eq!(link.status, LinkStatus::Pending, "the school has not confirmed her");
        assert!(matches!(bills.bill_for(&alice, tuition.id).await, Err(BillError::BillNotFound)), "a pending link shows nothing");
        assert!(matches!(bills.add_guardian(school, &by_id(ALICE), ALICE).await, Err(BillError::InvalidField { .. })), "an ID number's person consents");
        bills.add_guardian(school, &son, ALICE).await.unwrap();
        assert_eq!(bills.links_of(&alice).await.unwrap()[0].status, LinkStatus::Approved);
        let listed = bills.bills_of(&alice, 10).await.unwrap();
        assert_eq!(listed.iter().map(|b| b.id).collect::<Vec<_>>(), vec![tuition.id, visit.id], "newest first: hers and her son's");
        assert_eq!((listed[0].title.as_str(), listed[0].items[1].name.as_str()), ("bill T-1", "books"), "a confirmed link shows what she chooses");
        assert!(bills.bills_of(&bob, 10).await.unwrap().iter().all(|b| b.id == bobs.id));
        // Bob knows alice's ID number: his link shows nothing until she approves it, and
        // nothing again once she withdraws it.
        let asked = bills.link_payer(&bob, &by_id(ALICE), None, "friend").await.unwrap();
        assert_eq!((asked.status, asked.payer_masked.as_str()), (LinkStatus::Pending, "1101**********002X"));
        assert!(bills.bills_of(&bob, 10).await.unwrap().iter().all(|b| b.id == bobs.id), "a stranger's link shows nothing");
        assert!(matches!(bills.pay(&bob, visit.id, None).await, Err(BillError::BillNotFound)));
        let requests = bills.link_requests(&alice).await.unwrap();
        assert_eq!((requests.len(), requests[0].requester, requests[0].requester_masked.as_str()), (1, bob.id, "4405**********0013"));
        assert!(matches!(bills.answer_link_request(&bob, alice.id, true).await, Err(BillError::LinkNotFound)), "only the person named answers");
        bills.answer_link_request(&alice, bob.id, true).await.unwrap();
        assert!(bills.bills_of(&bob, 10).await.unwrap().iter().any(|b| b.id == visit.id), "approved");
        assert_eq!(bills.answer_link_request(&alice, bob.id, false).await.unwrap().status, LinkStatus::Declined);
        assert!(bills.bills_of(&bob, 10).await.unwrap().iter().all(|b| b.id == bobs.id), "withdrawn");
        assert_eq!(bills.link_payer(&bob, &by_id(ALICE), None, "again").await.unwrap().status, LinkStatus::Declined, "asking again does not undo her answer");
        let books = bills.pay(&alice, tuition.id, Some(&[1])).await.unwrap();
        assert!(books.receipt.text.contains("books"), "the receipt says what was paid");
        assert_eq!((books.amount, books.bill.status), (20_000, BillStatus::PartlyPaid));
        assert_eq!(bills.pay(&alice, tuition.id, Some(&[1])).await.unwrap().id, books.id, "a retry is the same payment");
        assert!(matches!(bills.pay(&alice, tuition.id, Some(&[1, 2])).await, Err(BillError::AlreadyPaid)));
        assert!(matches!(bills.pay(&alice, tuition.id, Some(&[7])).await, Err(BillError::InvalidField { .. })));
        let rest = bills.pay(&alice, tuition.id, Some(&[0, 2])).await.unwrap();
        assert_eq!((rest.amount, rest.bill.status, rest.bill.paid_amount), (315_000, BillStatus::Paid, 335_000));

        // Two payers race for one water bill: one wins, no money moves for the other.
        let account = Payer { kind: PayerKind::AccountNumber, identifier: "ACC-778899".into() };
        let water = bills.issue(utility, &bill("W-1", account.clone(), &[("water", 800)], 0, false)).await.unwrap();
        for (resident, id_number) in [(&alice, ALICE), (&bob, BOB)] {
            bills.link_payer(resident, &account, Some(utility), "home").await.unwrap();
            bills.add_guardian(utility, &account, id_number).await.unwrap();
        }
        let before = city.balance(alice.wallet).await + city.balance(bob.wallet).await;
        let (a, b) = tokio::join!(bills.pay(&alice, water.id, None), bills.pay(&bob, water.id, None));
        assert_eq!([&a, &b].iter().filter(|r| r.is_ok()).count(), 1, "{a:?} {b:?}");
        assert!([&a, &b].iter().any(|r| matches!(r, Err(BillError::AlreadyPaid))), "{a:?} {b:?}");
        // Who wins depends on scheduling (PostgreSQL's reads run on other threads).
        let alice_won_water = a.is_ok();
        assert_eq!(city.balance(alice.wallet).await + city.balance(bob.wallet).await, before - 800);

        // Late: refused unless the biller allows it; a bill that could never be paid is not
        // issued.
        let mut late = bill("W-2", account.clone(), &[("water", 500)], 0, false);
        late.due_at = START.unix_seconds() + 3_600 + 60;
        let overdue = bills.issue(utility, &late).await.unwrap();
        city.advance(120);
        assert!(matches!(bills.pay(&alice, overdue.id, None).await, Err(BillError::Overdue)));
        late.out_bill_no = "W-2b".into();
        assert!(matches!(bills.issue(utility, &late).await, Err(BillError::InvalidField { field: "due_at", .. })));
        late.due_at = 1;
        assert!(matches!(bills.issue(utility, &late).await, Err(BillError::InvalidField { field: "due_at", .. })));
        late.out_bill_no = "W-3".into();
        late.late_allowed = true;
        let allowed = bills.issue(utility, &late).await.unwrap();
        bills.pay(&alice, allowed.id, None).await.unwrap();

        // Cash at the counter: exactly what is outstanding; the bill is then paid.
        let counter = bills.issue(hospital, &bill("H-3", by_id(ALICE), &[("dressing", 2_500)], 0, false)).await.unwrap();
        assert!(matches!(bills.pay_cash(hospital, "H-3", 2_000).await, Err(BillError::AmountMismatch(2_500))));
        let cash = bills.pay_cash(hospital, "H-3", 2_500).await.unwrap();
        assert_eq!((cash.method, cash.bill.status), (PaidBy::Cash, BillStatus::Paid));
        verify_receipt(&cash.receipt.text, &cash.receipt.signature, &keys).unwrap();
        assert!(matches!(bills.pay(&alice, counter.id, None).await, Err(BillError::AlreadyPaid)));
        assert!(matches!(bills.pay_cash(hospital, "H-3", 2_500).await, Err(BillError::AlreadyPaid)));
        // A biller alone never moves the fund: without the patient's consent the counter takes
        // an insured bill wholly in cash, and the patient claims the fund's part afterwards,
        // once, into the wallet.
        let fund_before = city.balance(fund).await;
        let ward = bills.issue(hospital, &bill("H-5", by_id(ALICE), &[("ward", 10_000)], 4_000, false)).await.unwrap();
        assert!(matches!(bills.pay_cash(hospital, "H-5", 6_000).await, Err(BillError::AmountMismatch(10_000))));
        assert!(matches!(bills.claim_from_fund(&alice, ward.id).await, Err(BillError::NothingToClaim)), "not paid yet");
        let all_cash = bills.pay_cash(hospital, "H-5", 10_000).await.unwrap();
        assert_eq!((all_cash.amount, all_cash.insured), (10_000, 0));
        assert_eq!(city.balance(fund).await, fund_before);
        assert!(matches!(bills.claim_from_fund(&bob, ward.id).await, Err(BillError::BillNotFound)), "only the patient claims");
        let wallet_before = city.balance(alice.wallet).await;
        let claim = bills.claim_from_fund(&alice, ward.id).await.unwrap();
        assert_eq!(bills.claim_from_fund(&alice, ward.id).await.unwrap(), claim, "once");
        assert_eq!((claim.amount, city.balance(alice.wallet).await, city.balance(fund).await), (4_000, wallet_before + 4_000, fund_before - 4_000));
        // With her consent from her own account, the counter takes her part and the fund pays
        // the hospital its part; nothing is left to claim.
        let consented = bills.issue(hospital, &bill("H-8", by_id(ALICE), &[("ward", 10_000)], 4_000, false)).await.unwrap();
        assert!(matches!(bills.consent_to_fund(&bob, consented.id).await, Err(BillError::BillNotFound)), "only the patient consents");
        bills.consent_to_fund(&alice, consented.id).await.unwrap();
        assert!(matches!(bills.pay_cash(hospital, "H-8", 5_000).await, Err(BillError::AmountMismatch(6_000))));
        let split = bills.pay_cash(hospital, "H-8", 6_000).await.unwrap();
        assert_eq!((split.amount, split.insured, split.method), (10_000, 4_000, PaidBy::Cash));
        assert_eq!(city.balance(fund).await, fund_before - 8_000);
        assert!(matches!(bills.claim_from_fund(&alice, consented.id).await, Err(BillError::NothingToClaim)));
        assert!(matches!(bills.consent_to_fund(&alice, consented.id).await, Err(BillError::AlreadyPaid)));
        assert!(matches!(bills.issue(hospital, &bill("H-6", by_id(ALICE), &[("ward", 10_000)], 9_001, false)).await, Err(BillError::InvalidField { .. })));
        assert!(matches!(bills.issue(hospital, &bill("H-7", by_id(ALICE), &[("ward", 10_000)], i64::MAX, false)).await, Err(BillError::InvalidField { .. })), "no overflow");
        let shop = city.merchant("91330100MA27XL0E96", Category::Retail, "6222020200112233487").await;
        assert!(matches!(bills.issue(shop, &bill("S-1", by_id(ALICE), &[("goods", 100)], 0, false)).await, Err(BillError::InvalidField { field: "biller", .. })));

        // Social security: a window for 2027; alice pays for herself and, by proxy, her mother.
        let window = ContributionWindow { city: 330100, year: 2027, bureau_id: bureau, amount: 38_000, opens_at: START.unix_seconds() - 60, closes_at: START.unix_seconds() + 86_400 };
        assert!(matches!(bills.contribute(&alice, 330100, ALICE, 2027).await, Err(BillError::WindowClosed)), "no window yet");
        bills.open_contribution_window(window).await.unwrap();
        let own = bills.contribute(&alice, 330100, ALICE, 2027).await.unwrap();
        let proxy = bills.contribute(&alice, 330100, ALICES_MOTHER, 2027).await.unwrap();
        assert_ne!(own.bill.id, proxy.bill.id);
        assert!(proxy.receipt.text.contains("3301**********0045"), "{}", proxy.receipt.text);
        assert_eq!(bills.contribute(&alice, 330100, ALICES_MOTHER, 2027).await.unwrap().id, proxy.id, "a retry");
        assert!(matches!(bills.contribute(&bob, 330100, ALICES_MOTHER, 2027).await, Err(BillError::AlreadyPaid)), "once a year");
        // The bureau raises the year's amount: who paid has paid.
        bills.open_contribution_window(ContributionWindow { amount: 40_000, ..window }).await.unwrap();
        assert!(matches!(bills.contribute(&bob, 330100, ALICES_MOTHER, 2027).await, Err(BillError::AlreadyPaid)));
        assert_eq!(bills.contribute(&alice, 330100, ALICES_MOTHER, 2027).await.unwrap().id, proxy.id, "a retry still answers the payment");
        assert!(matches!(bills.contribute(&alice, 330100, ALICES_SON, 2028).await, Err(BillError::WindowClosed)));
        // Hers: the visit, the books, the rest of the tuition, the late water bill, the two
        // contributions, and the first water bill if she won the race.
        assert_eq!(bills.receipts_of(&alice, 20).await.unwrap().len(), 6 + usize::from(alice_won_water));

        // The next day: the hospital's online money settles; its file and its reconciliation
        // file tie out to the payout.
        city.advance(86_400);
        let day = LocalDate::parse("2026-11-24").unwrap();
        settlement.settle(day).await.unwrap();
        let payout = settlement.payout(hospital, day).await.unwrap().unwrap();
        assert_eq!((payout.status, payout.amount), (PayoutStatus::Paid, 17_000 + 4_000), "the wallet payment and the fund's part of a cash one");
        let reconciliation = bills.reconciliation(hospital, day).await.unwrap();
        let settled: i64 = reconciliation.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap()).sum();
        assert_eq!(settled, payout.amount, "{reconciliation}");
        assert_eq!(reconciliation.lines().count(), 5, "the wallet payment and three cash ones:\n{reconciliation}");
        let file = settlement.file(hospital, day).await.unwrap();
        assert_eq!(file.closing_balance, payout.amount);
        for biller in [school, bureau, utility] {
            let paid = settlement.payout(biller, day).await.unwrap().unwrap();
            assert_eq!(paid.status, PayoutStatus::Paid);
            let reconciliation = bills.reconciliation(biller, day).await.unwrap();
            let settled: i64 = reconciliation.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap()).sum();
            assert_eq!(settled, paid.amount, "{reconciliation}");
        }

        // Custody holds exactly the wallets, the fund and the fees; merchants are paid out.
        let held = city.balance(alice.wallet).await
            + city.balance(bob.wallet).await
            + city.balance(fund).await
            + city.balance(PlatformAccounts::CNY.fee_revenue).await;
        assert_eq!(-city.balance(PlatformAccounts::CNY.sandbox_custody).await, held);
    });
    city.assert_books_balance();
}
