//! Money across two real shards (two databases, two writers), through this crate's steps and
//! a peer that loses asks, loses answers and delivers twice: a transfer posted, one rejected
//! (no such payee there), one whose ask was lost and one whose answer was lost (both finished
//! by the resolver, one each way), a late ask after the resolver gave up, a duplicate ask,
//! two resolvers at once, a retry of a finished transfer, a payer without the funds. After
//! each step every shard's books balance on their own and the two clearing accounts mirror
//! each other up to what is decided and not yet applied; at the end nothing is left prepared.
//! On SQLite, and on PostgreSQL under `CITYPAY_TEST_PG`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use citypay_clearing::{Clearing, ClearingError, Peer};
use citypay_crossshard::{Crossing, Decision, Message, PayerStatus, Refusal, Rejection, ShardId};
use citypay_directory::{AccountKind, account_id};
use citypay_testkit::TestCity;

const PAYER_SHARD: ShardId = 1;
const PAYEE_SHARD: ShardId = 2;

/// How the next ask fares on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Delivered,
    AskLost,
    AnswerLost,
    Twice,
}

/// The payee's shard, reached in this process, with the next asks' fates.
struct Link {
    payee: Clearing,
    fates: Mutex<Vec<Fate>>,
}

impl Peer for Link {
    fn ask(&self, message: Message, payee: citypay_clearing::PayeeSide) -> Pin<Box<dyn Future<Output = Result<Message, String>> + Send + '_>> {
        Box::pin(async move {
            let fate = self.fates.lock().unwrap().pop().unwrap_or(Fate::Delivered);
            match fate {
                Fate::AskLost => Err("connection reset before the ask arrived".into()),
                Fate::Delivered => self.payee.decide_with(message, payee.clone()).await.map_err(|e| e.to_string()),
                Fate::AnswerLost => {
                    self.payee.decide_with(message, payee.clone()).await.map_err(|e| e.to_string())?;
                    Err("connection reset before the answer arrived".into())
                }
                Fate::Twice => {
                    let first = self.payee.decide_with(message, payee.clone()).await.map_err(|e| e.to_string())?;
                    let second = self.payee.decide_with(message, payee.clone()).await.map_err(|e| e.to_string())?;
                    assert_eq!(first, second, "a second ask gets the first answer");
                    Ok(second)
                }
            }
        })
    }
}

struct Country {
    payer_city: TestCity,
    payee_city: TestCity,
    payer: Clearing,
    link: Link,
    payer_account: u64,
    payee_account: u64,
}

impl Country {
    fn next(&self, fate: Fate) {
        self.link.fates.lock().unwrap().push(fate);
    }

    fn crossing(&self, id: u128, amount: i64) -> Crossing {
        Crossing { id, payer_shard: PAYER_SHARD, payee_shard: PAYEE_SHARD, payer: self.payer_account, payee: self.payee_account, amount }
    }

    /// (payer posted, payer available, payee posted, clearing on the payer's shard, clearing on
    /// the payee's shard).
    async fn money(&self) -> (i64, i64, i64, i64, i64) {
        let payer = self.payer_city.directory.shard().account(self.payer_account).await.unwrap().unwrap();
        (
            payer.balance.net_posted(),
            payer.balance.available(),
            self.payee_city.balance(self.payee_account).await,
            self.payer_city.balance(Clearing::clearing_account(PAYEE_SHARD)).await,
            self.payee_city.balance(Clearing::clearing_account(PAYER_SHARD)).await,
        )
    }

    /// The clearing accounts mirror each other, but for what `in_flight` says is decided on
    /// the payee's shard and not yet applied on the payer's.
    async fn assert_mirror(&self, in_flight: i64) {
        let (_, _, _, clearing_payer, clearing_payee) = self.money().await;
        assert_eq!(clearing_payer + in_flight, -clearing_payee, "the clearing accounts drifted apart");
    }
}

fn country(backend: impl Fn() -> Option<TestCity>) -> Option<Country> {
    let payer_city = backend()?;
    let payee_city = backend()?;
    let payer = Clearing::new(payer_city.directory.clone(), PAYER_SHARD);
    let payee = Clearing::new(payee_city.directory.clone(), PAYEE_SHARD);
    let (payer_account, payee_account) = payer_city.rt.block_on(async {
        payer.open_clearing_account(PAYEE_SHARD).await.unwrap();
        payee.open_clearing_account(PAYER_SHARD).await.unwrap();
        let daughter = payer_city.resident("11010519491231002X", "13800138000", 100_000).await;
        let mother = payee_city.resident("350102195501010022", "13700137000", 0).await;
        (daughter.wallet, mother.wallet)
    });
    Some(Country { payer_city, payee_city, payer, link: Link { payee, fates: Mutex::new(Vec::new()) }, payer_account, payee_account })
}

fn money_crosses_two_shards(country: Country) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let c = &country;
        // Posted.
        assert_eq!(c.payer.send(&c.crossing(1, 10_000), &c.link).await.unwrap(), Decision::Posted);
        assert_eq!(c.money().await, (90_000, 90_000, 10_000, 10_000, -10_000));
        // No such payee on that shard: rejected, the reservation voided.
        let nobody = Crossing { payee: account_id(AccountKind::Wallet, 999_999), ..c.crossing(2, 5_000) };
        assert_eq!(c.payer.send(&nobody, &c.link).await.unwrap(), Decision::Rejected(Rejection::PayeeUnknown));
        assert_eq!(c.money().await.1, 90_000, "the reservation was given back");

        // The ask is lost: reserved, the outcome unknown, never acknowledged.
        c.next(Fate::AskLost);
        assert!(matches!(c.payer.send(&c.crossing(3, 5_000), &c.link).await, Err(ClearingError::Unknown(_))));
        assert_eq!(c.money().await.1, 85_000, "held while undecided");
        assert_eq!(c.payer.resolve_once(&c.link, 10).await.unwrap(), 0, "not due yet: the resolver waits its 5 s");
        // The answer is lost: decided and credited there, still prepared here.
        c.next(Fate::AnswerLost);
        assert!(matches!(c.payer.send(&c.crossing(4, 7_000), &c.link).await, Err(ClearingError::Unknown(_))));
        assert_eq!(c.money().await.2, 17_000);
        c.assert_mirror(7_000).await;
        // The resolver finishes both, each the way its payee's shard decided.
        c.payer_city.advance(6);
        assert_eq!(c.payer.resolve_once(&c.link, 10).await.unwrap(), 2);
        assert_eq!(c.payer.status(3).await.unwrap(), (PayerStatus::Voided, Some(Decision::Rejected(Rejection::Timeout))));
        assert_eq!(c.payer.status(4).await.unwrap(), (PayerStatus::Posted, Some(Decision::Posted)));
        c.assert_mirror(0).await;
        // The lost ask arrives after all: it gets the resolver's decision, and nothing moves.
        let late = c.link.payee.decide(Message::Decide(c.crossing(3, 5_000))).await.unwrap();
        assert_eq!(late, Message::Decided { id: 3, decision: Decision::Rejected(Rejection::Timeout) });
        assert_eq!(c.payer.apply(late).await.unwrap(), PayerStatus::Voided);
        assert_eq!(c.money().await, (83_000, 83_000, 17_000, 17_000, -17_000));

        // Delivered twice: credited once.
        c.next(Fate::Twice);
        assert_eq!(c.payer.send(&c.crossing(5, 3_000), &c.link).await.unwrap(), Decision::Posted);
        assert_eq!(c.money().await.2, 20_000);
        // Two resolvers at once on one lost ask: one decision, applied once.
        c.next(Fate::AskLost);
        assert!(c.payer.send(&c.crossing(6, 1_000), &c.link).await.is_err());
        c.payer_city.advance(6);
        let second = c.payer.clone();
        let (one, two) = tokio::join!(c.payer.resolve_once(&c.link, 10), second.resolve_once(&c.link, 10));
        assert!(one.unwrap() + two.unwrap() >= 1);
        assert_eq!(c.payer.status(6).await.unwrap().0, PayerStatus::Voided);

        // A retry of a finished transfer answers its decision and moves nothing.
        assert_eq!(c.payer.send(&c.crossing(1, 10_000), &c.link).await.unwrap(), Decision::Posted);
        // Without the funds: refused before anything is written.
        assert!(matches!(c.payer.send(&c.crossing(7, 1_000_000), &c.link).await, Err(ClearingError::Refused(Refusal::InsufficientFunds))));
        assert!(matches!(c.payer.status(7).await, Err(ClearingError::NotFound)));

        assert_eq!(c.money().await, (80_000, 80_000, 20_000, 20_000, -20_000));
        assert!(c.payer.due(10).await.unwrap().is_empty(), "nothing is left prepared");
    });
    let Country { payer_city, payee_city, .. } = country;
    payer_city.assert_books_balance();
    payee_city.assert_books_balance();
}

#[test]
fn money_crosses_two_shards_on_sqlite() {
    money_crosses_two_shards(country(|| Some(TestCity::new(&[citypay_clearing::MIGRATIONS]))).unwrap());
}

#[test]
fn money_crosses_two_shards_on_postgres() {
    let Some(country) = country(|| TestCity::postgres(&[citypay_clearing::MIGRATIONS])) else { return };
    money_crosses_two_shards(country);
}
