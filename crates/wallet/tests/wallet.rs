//! Top-ups and withdrawals through the sandbox bank, on the embedded store: every movement is
//! balanced against custody, retries never move money twice, refusals move nothing.

use std::sync::Arc;

use citypay_directory::{
    Directory, DirectoryKeys, NewResident, PasswordPolicy, PlatformAccounts, Resident, SandboxBank, TokenKeys,
};
use citypay_identity::AccountClass;
use citypay_shard::{Shard, ShardConfig, SystemClock};
use citypay_store::Migration;
use citypay_store_sqlite::{SqliteReader, SqliteStore};
use citypay_vault::{IndexKeys, SealingKeys};
use citypay_wallet::{Card, Wallet, WalletError};

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    shard: Shard,
    directory: Directory,
    wallet: Wallet,
    /// The sandbox bank's register (the wallet's bank unless a test brings its own).
    sandbox: SandboxBank,
    runtime: tokio::runtime::Runtime,
}

fn world() -> World {
    let sandbox = SandboxBank::new();
    World { sandbox: sandbox.clone(), ..world_with(Arc::new(sandbox)) }
}

fn world_with(bank: Arc<dyn citypay_directory::BankConnector>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.db");
    let migrations: Vec<Migration> = citypay_directory::MIGRATIONS.iter().chain(citypay_wallet::MIGRATIONS).copied().collect();
    let store = SqliteStore::open_writer(&path, &migrations).unwrap();
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, SystemClock).unwrap();
    let keys = DirectoryKeys {
        sealing: SealingKeys::from_config(SealingKeys::generate_config().expose()).unwrap(),
        index: IndexKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
        tokens: TokenKeys::from_config(IndexKeys::generate_config().expose()).unwrap(),
    };
    let reader = Arc::new(SqliteReader::open(&path).unwrap());
    let directory = Directory::new(shard.handle(), reader, keys, Arc::new(SystemClock), PasswordPolicy::FAST_INSECURE);
    let wallet = Wallet::new(directory.clone(), bank);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        directory.onboard_city(330100, "Hangzhou").await.unwrap();
        directory.open_platform_accounts().await.unwrap();
    });
    World { _dir: dir, path, shard, directory, wallet, sandbox: SandboxBank::new(), runtime }
}

/// Links `pan` to `me` after the sandbox bank issued it to them.
async fn link(w: &World, me: &Resident, pan: &str) -> Result<Card, WalletError> {
    let (name, id_number) = w.directory.resident_identity(me.id).await.unwrap();
    let id_number = citypay_identity::ResidentId::parse(id_number.expose(), w.directory.today()).unwrap();
    if let Ok(parsed) = citypay_identity::CardNumber::parse(pan) {
        w.sandbox.register_holder(&parsed.card, name.expose(), &id_number).unwrap();
    }
    Ok(w.wallet.link_card(me, pan).await?.0)
}

fn register(w: &World, id_number: &str, mobile: &str) -> Resident {
    let new = NewResident {
        city: 330100,
        name: "Li Si".into(),
        mobile: mobile.into(),
        id_number: id_number.into(),
        password: "correct horse".into(),
    };
    w.runtime.block_on(w.directory.register_resident(&new)).unwrap()
}

/// Custody mirrors the wallets: the books balance and custody holds exactly the wallets' money.
fn check_books(w: &World, wallets: &[&Resident]) {
    w.runtime.block_on(async {
        let custody = w.directory.shard().account(PlatformAccounts::CNY.sandbox_custody).await.unwrap().unwrap();
        let mut held = 0;
        for r in wallets {
            held += w.wallet.account(r).await.unwrap().balance.net_posted();
        }
        assert_eq!(-custody.balance.net_posted(), held, "custody equals client money");
    });
}

#[test]
fn top_ups_and_withdrawals_move_money_once() {
    let w = world();
    let me = register(&w, "11010519491231002X", "13800138000");
    let card = w.runtime.block_on(link(&w, &me, "6222 0202 0011 2233 446")).unwrap();
    assert_eq!(card.masked, "622202*********3446");
    assert!(!card.luhn_warning);
    // Linking the same card again gives the same card.
    assert_eq!(w.runtime.block_on(link(&w, &me, "6222020200112233446")).unwrap(), card);
    w.runtime.block_on(async {
        let first = w.wallet.top_up(&me, card.id, 10_000, "key-1").await.unwrap();
        assert_eq!((first.balance, first.replay), (10_000, false));
        // A retry with the same key answers the first result and moves nothing.
        let again = w.wallet.top_up(&me, card.id, 10_000, "key-1").await.unwrap();
        assert_eq!((again.balance, again.replay), (10_000, true));
        // The same key with another amount is a conflict.
        assert!(matches!(w.wallet.top_up(&me, card.id, 9_999, "key-1").await, Err(WalletError::KeyReused)));
        let out = w.wallet.withdraw(&me, card.id, 2_500, "key-2").await.unwrap();
        assert_eq!(out.balance, 7_500);
        assert!(w.wallet.withdraw(&me, card.id, 2_500, "key-2").await.unwrap().replay);
        assert_eq!(w.wallet.account(&me).await.unwrap().balance.net_posted(), 7_500);
        // More than the balance is refused by the ledger, and nothing moves.
        match w.wallet.withdraw(&me, card.id, 7_501, "key-3").await {
            Err(WalletError::Refused(status)) => assert_eq!(status.name(), "insufficient_funds"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.wallet.account(&me).await.unwrap().balance.debits_pending, 0);
        assert!(matches!(w.wallet.top_up(&me, card.id, 0, "key-4").await, Err(WalletError::InvalidAmount(_))));
        assert!(matches!(w.wallet.top_up(&me, 12345, 100, "key-5").await, Err(WalletError::CardNotFound)));
    });
    check_books(&w, &[&me]);
}

#[test]
fn bank_refusals_move_nothing() {
    let w = world();
    let me = register(&w, "11010519491231002X", "13800138000");
    // The sandbox declines cards ending in 0002 and cannot pay accounts ending in 0009.
    let declined = w.runtime.block_on(link(&w, &me, "4000000000000002")).unwrap();
    let unpayable = w.runtime.block_on(link(&w, &me, "6200000000000009")).unwrap();
    let good = w.runtime.block_on(link(&w, &me, "4111111111111111")).unwrap();
    w.runtime.block_on(async {
        assert!(matches!(w.wallet.top_up(&me, declined.id, 1_000, "a").await, Err(WalletError::Bank(_))));
        assert_eq!(w.wallet.account(&me).await.unwrap().balance.net_posted(), 0);
        assert_eq!(w.wallet.account(&me).await.unwrap().balance.credits_pending, 0, "the hold was voided");
        w.wallet.top_up(&me, good.id, 5_000, "b").await.unwrap();
        // The payout fails, so the hold is voided and the money stays in the wallet.
        assert!(matches!(w.wallet.withdraw(&me, unpayable.id, 1_000, "c").await, Err(WalletError::Bank(_))));
        let account = w.wallet.account(&me).await.unwrap();
        assert_eq!((account.balance.net_posted(), account.balance.debits_pending), (5_000, 0));
        assert!(matches!(link(&w, &me, "4111111111111112").await, Err(WalletError::InvalidCard(_))));
        // A UnionPay number that fails Luhn links with a warning.
        assert!(link(&w, &me, "6222020200112233441").await.unwrap().luhn_warning);
        assert_eq!(w.wallet.cards(&me).await.unwrap().len(), 4);
    });
    check_books(&w, &[&me]);
    w.shard.shutdown();
    let mut reader = SqliteStore::open_reader(&w.path).unwrap();
    let report = citypay_store::audit(&mut reader).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    // Card numbers are sealed, never stored in clear.
    let bytes = std::fs::read(&w.path).unwrap();
    let wal = std::fs::read(w.path.with_extension("db-wal")).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes) + String::from_utf8_lossy(&wal);
    assert!(!text.contains("4111111111111111"));
}

#[test]
fn a_card_links_only_to_its_holder_and_confirming_banks_raise_the_class() {
    let w = world();
    let alice = register(&w, "11010519491231002X", "13800138000");
    let bob = register(&w, "440524198001010013", "13900139000");
    assert_eq!(alice.class, AccountClass::I);
    w.runtime.block_on(async {
        let (name, id_number) = w.directory.resident_identity(alice.id).await.unwrap();
        let id_number = citypay_identity::ResidentId::parse(id_number.expose(), w.directory.today()).unwrap();
        let issue = |issuer: &str| w.sandbox.issue_card(issuer, name.expose(), &id_number).unwrap();
        let first = issue(SandboxBank::ISSUERS[0]);
        // Bob cannot link Alice's card, nor a card the bank never issued: one answer for both.
        for pan in [first.digits(), "6222021234567890128"] {
            match w.wallet.link_card(&bob, pan).await {
                Err(error @ WalletError::Bank(citypay_directory::BankError::HolderMismatch)) => assert_eq!(error.code(), "card_holder_mismatch"),
                other => panic!("{other:?}"),
            }
        }
        assert!(w.wallet.cards(&bob).await.unwrap().is_empty());
        // Alice links her cards: one bank keeps class I, three make it II, five III, and
        // each class's caps come with it.
        assert_eq!(w.wallet.link_card(&alice, first.digits()).await.unwrap().1, AccountClass::I);
        // A second card of the same bank is not another channel.
        let same_bank = w.sandbox.issue_card(SandboxBank::ISSUERS[0], name.expose(), &citypay_identity::ResidentId::parse("11010519491231002X", w.directory.today()).unwrap());
        assert_eq!(same_bank.unwrap(), first);
        assert_eq!(w.wallet.link_card(&alice, issue(SandboxBank::ISSUERS[1]).digits()).await.unwrap().1, AccountClass::I);
        assert_eq!(w.wallet.link_card(&alice, issue(SandboxBank::ISSUERS[2]).digits()).await.unwrap().1, AccountClass::II);
        assert_eq!(w.directory.resident(alice.id).await.unwrap().class, AccountClass::II);
        let caps = w.wallet.account(&alice).await.unwrap().limits.window_caps;
        assert_eq!((caps[0], caps[1].map(|c| c.amount_max)), (None, Some(10_000_000)));
        assert_eq!(w.wallet.link_card(&alice, issue(SandboxBank::ISSUERS[3]).digits()).await.unwrap().1, AccountClass::II);
        assert_eq!(w.wallet.link_card(&alice, issue(SandboxBank::ISSUERS[4]).digits()).await.unwrap().1, AccountClass::III);
        let caps = w.wallet.account(&alice).await.unwrap().limits.window_caps;
        assert_eq!(caps[1].map(|c| c.amount_max), Some(20_000_000));
    });
    check_books(&w, &[&alice, &bob]);
}

#[test]
fn racing_retries_of_one_top_up_credit_it_once() {
    let w = world();
    let me = register(&w, "11010519491231002X", "13800138000");
    let card = w.runtime.block_on(link(&w, &me, "4111111111111111")).unwrap();
    let results = w.runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (wallet, me) = (w.wallet.clone(), me.clone());
                tokio::spawn(async move { wallet.top_up(&me, card.id, 3_000, "same-key").await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    // One attempt talks to the bank; the others answer its result, or are told to retry
    // while it is under way.
    let done: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(done.iter().filter(|m| !m.replay).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(WalletError::Unavailable(_)))), "{results:?}");
    let retry = w.runtime.block_on(w.wallet.top_up(&me, card.id, 3_000, "same-key")).unwrap();
    assert_eq!((retry.replay, retry.balance), (true, 3_000));
    assert_eq!(w.runtime.block_on(w.wallet.account(&me)).unwrap().balance.net_posted(), 3_000);
    check_books(&w, &[&me]);
}

/// A bank that is unreachable for the first call, then works, and counts its calls.
#[derive(Default)]
struct FlakyBank {
    calls: std::sync::atomic::AtomicU32,
}

impl citypay_directory::BankConnector for FlakyBank {
    fn custody_account(&self) -> u64 {
        PlatformAccounts::CNY.sandbox_custody
    }

    fn debit_card(
        &self,
        _: &citypay_identity::CardNumber,
        _: i64,
        reference: &str,
    ) -> Result<citypay_directory::BankReceipt, citypay_directory::BankError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(citypay_directory::BankError::Unavailable);
        }
        Ok(citypay_directory::BankReceipt { bank_reference: reference.to_owned() })
    }

    fn credit_account(&self, _: &str, _: i64, reference: &str) -> Result<citypay_directory::BankReceipt, citypay_directory::BankError> {
        Ok(citypay_directory::BankReceipt { bank_reference: reference.to_owned() })
    }

    fn confirm_holder(&self, card: &citypay_identity::CardNumber, _: &citypay_directory::CardHolder<'_>) -> Result<citypay_directory::HolderConfirmed, citypay_directory::BankError> {
        Ok(citypay_directory::HolderConfirmed { issuer: card.digits()[..6].to_owned() })
    }
}

#[test]
fn a_retry_after_the_bank_failed_answers_the_failure_without_asking_the_bank_again() {
    let bank = Arc::new(FlakyBank::default());
    let w = world_with(bank.clone());
    let me = register(&w, "11010519491231002X", "13800138000");
    let card = w.runtime.block_on(link(&w, &me, "4111111111111111")).unwrap();
    w.runtime.block_on(async {
        let first = w.wallet.top_up(&me, card.id, 1_000, "t1").await;
        assert!(matches!(first, Err(WalletError::Bank(citypay_directory::BankError::Unavailable))));
        // The hold is voided; the same key must not make the bank move money that the ledger
        // would then refuse to post.
        let again = w.wallet.top_up(&me, card.id, 1_000, "t1").await;
        assert!(matches!(again, Err(WalletError::Bank(citypay_directory::BankError::Unavailable))), "{again:?}");
        assert_eq!(bank.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A new key is a new request: it goes through, once.
        assert_eq!(w.wallet.top_up(&me, card.id, 1_000, "t2").await.unwrap().balance, 1_000);
        assert!(w.wallet.top_up(&me, card.id, 1_000, "t2").await.unwrap().replay);
        assert_eq!(bank.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "a retry after success does not call the bank");
    });
    check_books(&w, &[&me]);
}

/// A bank that fails the way a crash does: the task dies after the ledger held the money and
/// before the bank's answer was recorded.
struct CrashingBank;

impl citypay_directory::BankConnector for CrashingBank {
    fn custody_account(&self) -> u64 {
        SandboxBank::new().custody_account()
    }
    fn debit_card(&self, _: &citypay_identity::CardNumber, _: i64, _: &str) -> Result<citypay_directory::BankReceipt, citypay_directory::BankError> {
        panic!("the process died here")
    }
    fn credit_account(&self, _: &str, _: i64, _: &str) -> Result<citypay_directory::BankReceipt, citypay_directory::BankError> {
        panic!("the process died here")
    }
}

#[test]
fn the_sweeper_finishes_requests_a_crash_left_open() {
    let city = citypay_testkit::TestCity::new(&[]);
    let crashing = Wallet::new(city.directory.clone(), Arc::new(CrashingBank));
    let (alice, card) = city.rt.block_on(async {
        let alice = city.resident("11010519491231002X", "13800138000", 0).await;
        let card = city.wallet.cards(&alice).await.unwrap()[0].id;
        (alice, card)
    });
    // The top-up dies between the hold and the bank's answer; a withdrawal beyond the balance
    // is refused by the ledger before the bank is asked. While the dead attempt's claim lasts,
    // a retry is told to come back; the claim runs out well before the sweep.
    let died = {
        let (crashing, alice) = (crashing.clone(), alice.clone());
        city.rt.block_on(city.rt.spawn(async move { crashing.top_up(&alice, card, 5_000, "crash-1").await }))
    };
    assert!(died.is_err(), "the task died");
    assert!(matches!(city.rt.block_on(city.wallet.withdraw(&alice, card, 9_999, "too-much")), Err(WalletError::Refused(_))));
    city.rt.block_on(async {
        assert!(matches!(city.wallet.top_up(&alice, card, 5_000, "crash-1").await, Err(WalletError::Unavailable(_))));
        assert_eq!(city.balance(alice.wallet).await, 0, "the held top-up is not in the balance");
        assert_eq!(city.wallet.finish_interrupted(100).await.unwrap(), 0, "too young to sweep: the client may still retry");
    });
    city.advance(citypay_wallet::SWEEP_AFTER_S as u64 + 1);
    city.rt.block_on(async {
        assert_eq!(city.wallet.finish_interrupted(100).await.unwrap(), 1, "the crashed top-up; the refused withdrawal was settled on the spot");
        assert_eq!(city.balance(alice.wallet).await, 5_000, "the bank was asked again under the same reference, and the hold posted");
        assert_eq!(city.wallet.finish_interrupted(100).await.unwrap(), 0, "nothing left to finish");
        // The client's own retry answers the same, and moves nothing more.
        assert_eq!(city.wallet.top_up(&alice, card, 5_000, "crash-1").await.unwrap().balance, 5_000);
        assert!(matches!(city.wallet.withdraw(&alice, card, 9_999, "too-much").await, Err(WalletError::Refused(_))));
    });
    city.assert_books_balance();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, ..proptest::prelude::ProptestConfig::default() })]

    /// The statement always adds up: each line's balance after is the older line's plus its
    /// amount, the newest is the balance now, and paging (any page size) and filters (a kind)
    /// see the same lines with the same balances.
    #[test]
    fn the_statement_always_adds_up(moves in proptest::collection::vec((proptest::bool::ANY, 1i64..5_000), 1..40), page in 1usize..7) {
        let w = world();
        let me = register(&w, "11010519491231002X", "13800138000");
        let card = w.runtime.block_on(link(&w, &me, "6222020200112233446")).unwrap();
        let mut expected = 0;
        let mut moved = 0;
        w.runtime.block_on(async {
            for (i, (top_up, amount)) in moves.iter().enumerate() {
                let key = format!("k{i}");
                let done = if *top_up { w.wallet.top_up(&me, card.id, *amount, &key).await } else { w.wallet.withdraw(&me, card.id, *amount, &key).await };
                if done.is_ok() {
                    expected += if *top_up { *amount } else { -*amount };
                    moved += 1;
                }
            }
        });
        let all = statement(&w, &me, &[], page);
        proptest::prop_assert_eq!(all.len(), moved);
        proptest::prop_assert_eq!(all.first().map_or(0, |l| l.balance_after), expected);
        for pair in all.windows(2) {
            proptest::prop_assert_eq!(pair[0].balance_after, pair[1].balance_after + pair[0].amount);
        }
        proptest::prop_assert_eq!(all.last().map_or(0, |l| l.balance_after - l.amount), 0, "the oldest line starts from an empty wallet");
        proptest::prop_assert_eq!(all.iter().map(|l| l.amount).sum::<i64>(), expected);
        let top_ups = statement(&w, &me, &[citypay_directory::transfer_codes::TOP_UP], page);
        let expected_top_ups: Vec<_> = all.iter().filter(|l| l.code == citypay_directory::transfer_codes::TOP_UP).cloned().collect();
        proptest::prop_assert_eq!(top_ups, expected_top_ups);
        check_books(&w, &[&me]);
    }
}

/// The whole statement of `me`, read `page` lines at a time.
fn statement(w: &World, me: &Resident, codes: &[u16], page: usize) -> Vec<citypay_wallet::StatementLine> {
    w.runtime.block_on(async {
        let mut lines = Vec::new();
        let mut before = None;
        loop {
            let query = citypay_wallet::StatementQuery { codes: codes.to_vec(), before, limit: page, ..Default::default() };
            let got = w.wallet.statement(me, &query).await.unwrap();
            assert!(got.lines.len() <= page);
            lines.extend(got.lines);
            match got.next {
                Some(next) => before = Some(next),
                None => return lines,
            }
        }
    })
}
