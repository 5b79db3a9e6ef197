//! A simulated client: a resident who tops up, withdraws, pays shops by payment code and by
//! QR, asks for refunds, pays hospital bills and their social-security contribution, and the
//! till and the hospital acting for them. Each request's keys are fixed when it is drawn, so a
//! retry is the same request; what each answer says the wallet gained or lost is kept, and
//! the ledger must agree.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use citypay_checkout::NewTrade;
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::Resident;

use crate::city::{CONTRIBUTION_YEAR, Services};

/// A request in flight: a future the harness polls.
pub(crate) type Job = Pin<Box<dyn Future<Output = Answer>>>;

/// Where a client shops and is treated.
#[derive(Clone, Debug)]
pub(crate) struct Places {
    pub(crate) shops: Vec<u64>,
    pub(crate) hospital: u64,
    pub(crate) city: u32,
}

/// One request, with every key it carries.
#[derive(Clone, Debug)]
pub(crate) enum Intent {
    TopUp { amount: i64, key: String },
    Withdraw { amount: i64, key: String },
    PayByCode { merchant: u64, amount: i64, out_trade_no: String, code: String },
    PayByQr { merchant: u64, amount: i64, out_trade_no: String },
    Refund { merchant: u64, out_trade_no: String, out_request_no: String, amount: i64 },
    Bill { hospital: u64, out_bill_no: String, amount: i64 },
    /// `attempt` only tells one drawn request from the next (in the request's name): the
    /// service has no key for it.
    Contribute {
        #[allow(dead_code)]
        attempt: u64,
    },
    /// Fares the wallet could not pay. Keyless like a contribution.
    PayArrears {
        #[allow(dead_code)]
        attempt: u64,
    },
    /// A new ride credential for the phone's key. Keyless.
    Renew {
        #[allow(dead_code)]
        attempt: u64,
    },
}

impl Intent {
    /// Whether the request carries a key of its own. A bill's payment and a contribution are
    /// asked for again by what they pay: after a refusal, asking again is a new request (the
    /// wallet may have been topped up since), so only their successes are repeated.
    fn keyed(&self) -> bool {
        !matches!(self, Intent::Bill { .. } | Intent::Contribute { .. } | Intent::PayArrears { .. } | Intent::Renew { .. })
    }

    /// Whether a success may be asked for again and must answer the same: paying arrears
    /// again pays what is owed now, a renewal issues a new credential.
    fn repeatable(&self) -> bool {
        !matches!(self, Intent::PayArrears { .. } | Intent::Renew { .. })
    }

    /// What the request can move into (positive) or out of the wallet at most.
    fn reach(&self) -> i64 {
        match self {
            Intent::TopUp { amount, .. } | Intent::Refund { amount, .. } => *amount,
            Intent::Withdraw { amount, .. } | Intent::PayByCode { amount, .. } | Intent::PayByQr { amount, .. } | Intent::Bill { amount, .. } => -amount,
            Intent::Contribute { .. } => -crate::city::CONTRIBUTION_FEN,
            Intent::PayArrears { .. } | Intent::Renew { .. } => 0,
        }
    }
}

/// What a request's answer told the client.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// Nothing known: the request may or may not have happened.
    Unknown,
    /// A known answer: its words (every repeat must say the same), what it moved in the
    /// wallet, and the record it leaves.
    Known { words: String, moved: i64, record: Option<Record>, credential: Option<Box<citypay_ride::Credential>> },
}

/// A record the database must hold once the client was told of it.
#[derive(Clone, Debug)]
pub(crate) enum Record {
    Trade { merchant: u64, out_trade_no: String, amount: i64 },
    Refund { merchant: u64, out_trade_no: String, out_request_no: String, amount: i64 },
    Bill { hospital: u64, out_bill_no: String, amount: i64 },
}

pub(crate) struct Client {
    pub(crate) index: usize,
    rng: fastrand::Rng,
    pub(crate) resident: Resident,
    card: u64,
    device: (u32, Vec<u8>),
    id_number: String,
    /// The seed of the phone's ride key.
    rider_key: [u8; 32],
    places: Places,
    /// The request being made, or last made.
    pub(crate) intent: Option<Intent>,
    /// Whether the request's answer is known.
    pub(crate) known: bool,
    pub(crate) job: Option<Job>,
    /// The first answer of each request, by its name.
    first: BTreeMap<String, String>,
    /// What the wallet holds, by the answers.
    pub(crate) balance: i64,
    records: Vec<Record>,
    /// Paid trades and what is left to refund of each.
    refundable: Vec<(u64, String, i64)>,
    contributed: bool,
    /// The phone's ride-code app, and when its last trip ended.
    pub(crate) rider: Option<citypay_ride::RiderDevice>,
    pub(crate) riding_until: u64,
    count: u64,
    answered: u64,
    pub(crate) broken: Option<String>,
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(index: usize, seed: u64, resident: Resident, card: u64, device: (u32, Vec<u8>), id_number: String, balance: i64, places: Places) -> Client {
        Client {
            index,
            rng: fastrand::Rng::with_seed(seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(u64::try_from(index).unwrap_or(0) + 1))),
            resident,
            card,
            device,
            id_number,
            rider_key: crate::transit::key_seed(seed, 2, u64::try_from(index).unwrap_or(0)),
            places,
            intent: None,
            known: false,
            job: None,
            first: BTreeMap::new(),
            balance,
            records: Vec::new(),
            refundable: Vec::new(),
            contributed: false,
            rider: None,
            riding_until: 0,
            count: 0,
            answered: 0,
            broken: None,
        }
    }

    /// Draws a new request and starts it.
    pub(crate) fn start(&mut self, _shared: &mut fastrand::Rng, now: u64, services: &Services) {
        self.count += 1;
        let n = self.count;
        let who = self.index;
        let rng = &mut self.rng;
        let amount = rng.i64(100..20_000);
        let intent = match rng.u32(0..100) {
            0..15 => Intent::TopUp { amount: rng.i64(1_000..50_000), key: format!("t{who}-{n}") },
            15..22 => Intent::Withdraw { amount, key: format!("w{who}-{n}") },
            22..45 => {
                let merchant = self.places.shops[rng.usize(..self.places.shops.len())];
                let code = PaymentCode::generate(self.device.0, &self.device.1, now);
                Intent::PayByCode { merchant, amount, out_trade_no: format!("c{who}x{n}"), code }
            }
            45..68 => {
                let merchant = self.places.shops[rng.usize(..self.places.shops.len())];
                Intent::PayByQr { merchant, amount, out_trade_no: format!("q{who}x{n}") }
            }
            68..85 if !self.refundable.is_empty() => {
                let pick = rng.usize(..self.refundable.len());
                let (merchant, out_trade_no, left) = self.refundable[pick].clone();
                // Now and then more than is left, which must be refused.
                let amount = if rng.u32(0..10) == 0 { left + 1 } else { rng.i64(1..=left) };
                Intent::Refund { merchant, out_trade_no, out_request_no: format!("r{who}x{n}"), amount }
            }
            85..95 => Intent::Bill { hospital: self.places.hospital, out_bill_no: format!("b{who}x{n}"), amount },
            95..97 if !self.contributed => Intent::Contribute { attempt: n },
            97..99 => Intent::PayArrears { attempt: n },
            99..100 => Intent::Renew { attempt: n },
            _ => Intent::TopUp { amount: rng.i64(1_000..50_000), key: format!("t{who}-{n}") },
        };
        self.intent = Some(intent);
        self.known = false;
        self.resume(services);
    }

    /// (Re)sends the current request, as it was first drawn.
    pub(crate) fn resume(&mut self, services: &Services) {
        let Some(intent) = self.intent.clone() else { return };
        let (services, resident, card) = (services.clone(), self.resident.clone(), self.card);
        let (id_number, city, rider_key) = (self.id_number.clone(), self.places.city, self.rider_key);
        self.job = Some(Box::pin(async move { perform(&services, &resident, card, &id_number, city, rider_key, &intent).await }));
    }

    /// Polls the request in flight once; takes in its answer when there is one. An error is a
    /// broken invariant.
    pub(crate) fn poll(&mut self) -> Result<(), String> {
        let Some(job) = self.job.as_mut() else { return Ok(()) };
        let Poll::Ready(answer) = job.as_mut().poll(&mut Context::from_waker(Waker::noop())) else { return Ok(()) };
        self.job = None;
        let Answer::Known { words, moved, record, credential } = answer else { return Ok(()) };
        let intent = self.intent.as_ref().expect("an answer belongs to a request");
        let name = format!("{intent:?}");
        self.answered += 1;
        match self.first.get(&name) {
            // A success is final: every repeat answers it.
            Some(first) if !first.starts_with("refused ") => {
                if *first != words {
                    return Err(format!("client {}: a repeat of {name} answered \"{words}\", the first answer was \"{first}\"", self.index));
                }
                return Ok(());
            }
            Some(first) if *first == words => return Ok(()),
            // A refusal is decided anew when the request comes again (the wallet may have
            // been topped up, a code may have expired): its new answer counts from now on.
            _ => {}
        }
        self.first.insert(name, words);
        self.known = true;
        if let (Some(phone), Some(credential)) = (self.rider.as_mut(), credential) {
            phone.set_credential(*credential);
        }
        self.balance += moved;
        match (intent, &record) {
            (Intent::PayByCode { merchant, amount, out_trade_no, .. } | Intent::PayByQr { merchant, amount, out_trade_no }, Some(_)) => {
                self.refundable.push((*merchant, out_trade_no.clone(), *amount));
            }
            (Intent::Refund { out_trade_no, amount, .. }, Some(_)) => {
                if let Some(entry) = self.refundable.iter_mut().find(|(_, no, _)| no == out_trade_no) {
                    entry.2 -= amount;
                }
                self.refundable.retain(|(_, _, left)| *left > 0);
            }
            (Intent::Contribute { .. }, _) if moved != 0 => self.contributed = true,
            _ => {}
        }
        self.records.extend(record);
        Ok(())
    }

    /// Whether the request that has its answer may be sent again and must answer the same.
    pub(crate) fn may_repeat(&self) -> bool {
        self.known && self.intent.as_ref().is_some_and(|intent| intent.repeatable()) && self.intent.as_ref().is_some_and(|intent| intent.keyed() || self.first.get(&format!("{intent:?}")).is_some_and(|w| !w.starts_with("refused")))
    }

    /// Answers taken in since the last call.
    pub(crate) fn take_answered(&mut self) -> u64 {
        std::mem::take(&mut self.answered)
    }

    /// The wallet holds what the answers say, or that plus what the request whose answer is
    /// not known yet would move.
    /// While the fare run is in doubt (`fares_in_doubt`), or arrears are being paid, up to a
    /// day's fares may be gone as well.
    pub(crate) fn check_balance(&self, held: i64, fares_in_doubt: bool) -> Result<(), String> {
        let doubt = self.intent.as_ref().filter(|_| !self.known);
        let unknown = doubt.map_or(0, Intent::reach);
        let arrears = matches!(doubt, Some(Intent::PayArrears { .. }));
        let slack = if fares_in_doubt || arrears { crate::transit::FARES_DAY_MAX } else { 0 };
        let within = |expected: i64| held <= expected && held >= expected - slack;
        if within(self.balance) || (unknown != 0 && within(self.balance + unknown)) {
            return Ok(());
        }
        Err(format!(
            "client {}'s wallet holds {held}; its answers say {} (request in doubt: {:?})",
            self.index,
            self.balance,
            self.intent.as_ref().filter(|_| !self.known)
        ))
    }

    /// What this client was told, to look for in the database.
    pub(crate) fn known(&self) -> Known {
        Known { index: self.index, records: self.records.clone(), in_doubt: self.intent.clone().filter(|_| !self.known) }
    }
}

/// A client's records, checked against a reopened database.
pub(crate) struct Known {
    index: usize,
    records: Vec<Record>,
    /// The request whose outcome the client does not know: it may or may not be there.
    in_doubt: Option<Intent>,
}

impl Known {
    pub(crate) async fn check(&self, services: &Services) -> Result<(), String> {
        let mut refunded: BTreeMap<&str, i64> = BTreeMap::new();
        for record in &self.records {
            if let Record::Refund { out_trade_no, amount, .. } = record {
                *refunded.entry(out_trade_no.as_str()).or_default() += amount;
            }
        }
        for record in &self.records {
            let lost = |what: &str, e: &dyn std::fmt::Display| format!("client {}: {what} it was told of: {e}", self.index);
            match record {
                Record::Trade { merchant, out_trade_no, amount } => {
                    let trade = services.checkout.trade(*merchant, out_trade_no).await.map_err(|e| lost("the trade", &e))?;
                    let want = refunded.get(out_trade_no.as_str()).copied().unwrap_or(0);
                    let maybe = match &self.in_doubt {
                        Some(Intent::Refund { out_trade_no: no, amount, .. }) if no == out_trade_no => want + amount,
                        _ => want,
                    };
                    if trade.paid_at.is_none() || trade.amount != *amount || (trade.refunded != want && trade.refunded != maybe) {
                        return Err(lost("the trade", &format!("{trade:?} (refunded {want} by the answers)")));
                    }
                }
                Record::Refund { merchant, out_trade_no, out_request_no, amount } => {
                    let answer = services.checkout.refund_query(*merchant, out_trade_no, out_request_no).await.map_err(|e| lost("the refund", &e))?;
                    if answer.refund.amount != *amount {
                        return Err(lost("the refund", &format!("{:?}", answer.refund)));
                    }
                }
                Record::Bill { hospital, out_bill_no, amount } => {
                    let bill = services.bills.bill(*hospital, out_bill_no).await.map_err(|e| lost("the bill", &e))?;
                    if bill.paid_amount != *amount {
                        return Err(lost("the bill", &format!("paid {} of {}", bill.paid_amount, bill.total)));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An error's answer: "unavailable" (and storage trouble) leaves the outcome unknown; any
/// other is a refusal, which every repeat must give again.
fn refused(code: &str) -> Answer {
    if matches!(code, "unavailable" | "storage_error") {
        return Answer::Unknown;
    }
    Answer::Known { words: format!("refused {code}"), moved: 0, record: None, credential: None }
}

async fn perform(services: &Services, resident: &Resident, card: u64, id_number: &str, city: u32, rider_key: [u8; 32], intent: &Intent) -> Answer {
    match intent {
        Intent::TopUp { amount, key } => match services.wallet.top_up(resident, card, *amount, key).await {
            Ok(m) => Answer::Known { words: format!("topped up {}", m.amount), moved: m.amount, record: None, credential: None },
            Err(e) => refused(e.code()),
        },
        Intent::Withdraw { amount, key } => match services.wallet.withdraw(resident, card, *amount, key).await {
            Ok(m) => Answer::Known { words: format!("withdrew {}", m.amount), moved: -m.amount, record: None, credential: None },
            Err(e) => refused(e.code()),
        },
        Intent::PayByCode { merchant, amount, out_trade_no, code } => {
            let new = new_trade(out_trade_no, *amount);
            match services.checkout.pay_with_code(*merchant, &new, code).await {
                Ok(trade) => paid(*merchant, &trade),
                Err(e) => refused(e.code()),
            }
        }
        Intent::PayByQr { merchant, amount, out_trade_no } => {
            let new = new_trade(out_trade_no, *amount);
            let payload = match services.checkout.create_trade(*merchant, &new).await {
                Ok((_, payload)) => payload,
                Err(e) => return refused(e.code()),
            };
            match services.checkout.pay_qr(resident, &payload, None, &format!("k{out_trade_no}")).await {
                Ok(trade) => paid(*merchant, &trade),
                Err(e) => refused(e.code()),
            }
        }
        Intent::Refund { merchant, out_trade_no, out_request_no, amount } => {
            match services.checkout.refund(*merchant, out_trade_no, out_request_no, *amount).await {
                Ok(answer) => Answer::Known {
                    words: format!("refunded {} {}", answer.refund.amount, answer.refund.status.code()),
                    moved: answer.refund.amount,
                    record: Some(Record::Refund { merchant: *merchant, out_trade_no: out_trade_no.clone(), out_request_no: out_request_no.clone(), amount: answer.refund.amount }),
                    credential: None,
                },
                Err(e) => refused(e.code()),
            }
        }
        Intent::Bill { hospital, out_bill_no, amount } => {
            let new = citypay_bills::NewBill {
                out_bill_no: out_bill_no.clone(),
                payer: citypay_bills::Payer { kind: citypay_bills::PayerKind::IdNumber, identifier: id_number.to_owned() },
                title: "门诊".into(),
                items: vec![citypay_bills::Item { name: "诊疗费".into(), amount: *amount }],
                pick_items: false,
                insured: 0,
                due_at: crate::city::START.unix_seconds() + 30 * 86_400,
                late_allowed: true,
            };
            let bill = match services.bills.issue(*hospital, &new).await {
                Ok(bill) => bill,
                Err(e) => return refused(e.code()),
            };
            match services.bills.pay(resident, bill.id, None).await {
                Ok(payment) => Answer::Known {
                    words: format!("bill paid {} {}", payment.id, payment.amount),
                    moved: -payment.amount,
                    record: Some(Record::Bill { hospital: *hospital, out_bill_no: out_bill_no.clone(), amount: payment.amount }),
                    credential: None,
                },
                Err(e) => refused(e.code()),
            }
        }
        Intent::Contribute { .. } => match services.bills.contribute(resident, city, id_number, CONTRIBUTION_YEAR).await {
            Ok(payment) => Answer::Known { words: format!("contributed {} {}", payment.id, payment.amount), moved: -payment.amount, record: None, credential: None },
            Err(e) => refused(e.code()),
        },
        Intent::PayArrears { .. } => match services.transit.pay_arrears(resident).await {
            Ok(fen) => Answer::Known { words: format!("arrears paid {fen}"), moved: -fen, record: None, credential: None },
            Err(e) => refused(e.code()),
        },
        Intent::Renew { .. } => {
            let key = citypay_ride::RiderKey::from_seed(rider_key);
            match services.transit.issue_credential(resident, key.public_bytes()).await {
                Ok(credential) => Answer::Known { words: "renewed".into(), moved: 0, record: None, credential: Some(Box::new(credential)) },
                Err(e) => refused(e.code()),
            }
        }
    }
}

fn new_trade(out_trade_no: &str, amount: i64) -> NewTrade {
    NewTrade { out_trade_no: out_trade_no.to_owned(), amount, subject: "goods".into(), timeout_s: None, notify: None, cashier: None }
}

/// A payment's answer: paid (it moved the amount), or a trade that is not paid.
fn paid(merchant: u64, trade: &citypay_checkout::Trade) -> Answer {
    if trade.paid_at.is_none() {
        return Answer::Known { words: format!("trade {} unpaid {}", trade.id, trade.status.code()), moved: 0, record: None, credential: None };
    }
    Answer::Known {
        words: format!("paid {} {}", trade.id, trade.amount),
        moved: -trade.amount,
        record: Some(Record::Trade { merchant, out_trade_no: trade.out_trade_no.clone(), amount: trade.amount }),
        credential: None,
    }
}
