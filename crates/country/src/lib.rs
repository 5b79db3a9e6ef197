//! A server's view of a country of shards (`../shared/guide/scale-out.md` §4): its own shard,
//! the bucket map from the [`Catalog`], and every other shard, reached through that shard's
//! writer (commands forwarded over the cluster's mutual TLS) and its database (reads). Money
//! sent to a resident of another shard crosses through `citypay-clearing` with the transfer's
//! record written on both shards in the same local transactions as the money; registrations
//! claim what must be unique in the country at its home shard; the resolver finishes what a
//! crash or a partition left undecided.
//!
//! Every step runs in one shard's writer, so it does not matter which server runs it: a step
//! run twice, or by two servers at once, is answered once (the clearing's guards).

pub mod catalog;
pub mod moving;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use citypay_clearing::{ClaimAnswer, ClaimPeer, ClaimRequest, Claims, Clearing, ClearingError, Peer, Purpose};
use citypay_crossshard::{Crossing, Decision, Message, PayerStatus, Refusal};
use citypay_directory::{BALANCE_PAYMENT, Directory, DirectoryError, NewResident, Resident, transfer_codes};
use citypay_ledger::Status;
use citypay_routing::{BucketMap, ShardId};
use citypay_bills::{Bill, BillError, BillPayment, Bills};
use citypay_checkout::{Checkout, CheckoutError, Trade};
use citypay_wallet::{Direction, Recipient, TransferLine, TransferStatus, Wallet, WalletError};

pub use catalog::{Catalog, CatalogError, Patroni, ShardDatabase};

/// One shard as this server reaches it.
struct Side {
    directory: Directory,
    clearing: Clearing,
    claims: Claims,
    checkout: Checkout,
}

impl Side {
    fn new(directory: Directory, shard: ShardId) -> Side {
        Side { clearing: Clearing::new(directory.clone(), shard), claims: Claims::new(directory.clone()), checkout: Checkout::new(directory.clone()), directory }
    }
}

/// A step of a transfer between shards, as this server sends it or its resolver finishes it:
/// what a fault test stops the server after ([`Country::after_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The reservation is durable on this shard; the other shard not yet asked.
    Reserved,
    /// The other shard's decision was heard; not yet applied here.
    Decided,
    /// The decision is applied here; the client not yet answered.
    Applied,
    /// The resolver heard the other shard's decision on a transfer left undecided; not yet
    /// applied here.
    Heard,
}

type StepHook = Arc<dyn Fn(Step) + Send + Sync>;

/// Transfers the resolver finishes at once.
pub const RESOLVING_AT_ONCE: usize = 64;

struct Inner {
    shard: ShardId,
    catalog: String,
    after_step: std::sync::OnceLock<StepHook>,
    /// Shared, not copied: the router reads it on every request.
    map: RwLock<Arc<BucketMap>>,
    here: Side,
    peers: BTreeMap<ShardId, Side>,
}

/// This server's country (cheap to clone).
#[derive(Clone)]
pub struct Country(Arc<Inner>);

impl std::fmt::Debug for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Country").field("shard", &self.0.shard).field("peers", &self.0.peers.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

fn unknown(error: impl std::fmt::Display) -> String {
    error.to_string()
}

impl Country {
    /// A country on one machine with no catalog (a simulation, a benchmark): shard `i + 1`
    /// over `directories[i]`; each city of `cities` (code, name, the index of its shard's
    /// directory) onboarded there with the next group of buckets; each shard's writer holding
    /// its buckets; a `Country` per shard, its clearing accounts open. Nothing moves.
    pub async fn on_one_machine(directories: &[Directory], cities: &[(u32, &str, usize)]) -> Result<Vec<Country>, DirectoryError> {
        let number = |i: usize| ShardId::try_from(i + 1).unwrap_or(ShardId::MAX);
        let mut map = BucketMap::single(1);
        for (i, (code, name, on)) in cities.iter().enumerate() {
            let group = u16::try_from(i).ok().and_then(citypay_routing::city_group).ok_or_else(|| DirectoryError::InvalidField { field: "cities", message: format!("no group of buckets for city {i}") })?;
            let directory = directories.get(*on).ok_or_else(|| DirectoryError::InvalidField { field: "cities", message: format!("no shard {on} for city {code}") })?;
            directory.onboard_city_in(*code, name, Some(group.clone())).await?;
            map = map.moved(group.map(citypay_routing::Bucket), number(*on));
        }
        let all: Vec<(ShardId, Directory)> = directories.iter().enumerate().map(|(i, d)| (number(i), d.clone())).collect();
        let mut countries = Vec::new();
        for (i, directory) in directories.iter().enumerate() {
            directory.shard().hold_buckets(Some(map.owned_by(number(i))));
            let country = Country::new(number(i), String::new(), map.clone(), directory.clone(), all.clone());
            country.open_clearing_accounts().await.map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
            countries.push(country);
        }
        Ok(countries)
    }

    /// Shard `shard` over `here` (this server's directory), with the map and every shard's
    /// directory (its own among them is left out). `catalog` is the catalog's URL.
    pub fn new(shard: ShardId, catalog: String, map: BucketMap, here: Directory, peers: Vec<(ShardId, Directory)>) -> Country {
        let peers = peers.into_iter().filter(|(id, _)| *id != shard).map(|(id, directory)| (id, Side::new(directory, id))).collect();
        Country(Arc::new(Inner { shard, catalog, after_step: std::sync::OnceLock::new(), map: RwLock::new(Arc::new(map)), here: Side::new(here, shard), peers }))
    }

    /// Runs `work` on the catalog, on a blocking thread.
    pub async fn with_catalog<T: Send + 'static>(&self, work: impl FnOnce(&mut Catalog) -> Result<T, CatalogError> + Send + 'static) -> Result<T, CatalogError> {
        let url = self.0.catalog.clone();
        tokio::task::spawn_blocking(move || {
            let mut catalog = Catalog::open(&url)?;
            let answer = work(&mut catalog);
            drop(catalog);
            answer
        })
        .await
        .map_err(|e| CatalogError::Refused(format!("the catalog's thread: {e}")))?
    }

    /// The group of buckets the catalog gave `city`, which must live on this shard.
    pub async fn city_group(&self, city: u32) -> Result<std::ops::Range<u16>, DirectoryError> {
        let placed = self.with_catalog(move |catalog| catalog.city(city)).await.map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        match placed {
            Some((group, shard)) if shard == self.0.shard => Ok(group),
            Some((_, shard)) => Err(DirectoryError::InvalidField { field: "code", message: format!("this city lives on shard {shard}: onboard it on a server of that shard") }),
            None => Err(DirectoryError::InvalidField { field: "code", message: "this city is not placed in the country's catalog yet (`citypay country place-city`)".into() }),
        }
    }

    /// Calls `hook` after each [`Step`] of every transfer this server sends to another shard
    /// (a fault test stops the process there); set once.
    pub fn after_step(&self, hook: impl Fn(Step) + Send + Sync + 'static) {
        let _ = self.0.after_step.set(Arc::new(hook));
    }

    fn reached(&self, step: Step) {
        if let Some(hook) = self.0.after_step.get() {
            hook(step);
        }
    }

    /// Reserve here, ask the payee's shard, apply its answer here: the clearing's
    /// [`Clearing::send_for`], step by step.
    async fn cross(&self, crossing: &Crossing, purpose: Purpose) -> Result<Decision, ClearingError> {
        let clearing = &self.0.here.clearing;
        let ask = clearing.reserve_for(crossing, &purpose).await?;
        if let Message::Decided { decision, .. } = ask {
            // A retry of a transfer finished before: its decision, applied already.
            return Ok(decision);
        }
        self.reached(Step::Reserved);
        let answer = Peer::ask(self, ask, purpose.payee).await.map_err(ClearingError::Unknown)?;
        let Message::Decided { decision, .. } = answer else { return Err(ClearingError::Unknown("the peer answered something else".into())) };
        self.reached(Step::Decided);
        clearing.apply_expecting(answer, Some(PayerStatus::Prepared)).await?;
        self.reached(Step::Applied);
        Ok(decision)
    }

    /// This server's shard.
    pub fn shard(&self) -> ShardId {
        self.0.shard
    }

    /// The catalog's URL.
    pub fn catalog_url(&self) -> &str {
        &self.0.catalog
    }

    /// The bucket map this server routes by.
    pub fn map(&self) -> Arc<BucketMap> {
        self.0.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes `map` when it is newer than the one held; whether it was.
    pub fn set_map(&self, map: Arc<BucketMap>) -> bool {
        let mut held = self.0.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = map.version > held.version;
        if newer {
            *held = map;
        }
        newer
    }

    /// The shard the map places `bucket` on now; while it moves, why not (`whose` city is
    /// moving), for a retryable answer: nothing is sent to a frozen bucket.
    fn shard_now(&self, bucket: citypay_routing::Bucket, whose: &str) -> Result<ShardId, String> {
        let map = self.map();
        match map.moving_to(bucket) {
            Some(_) => Err(format!("{whose} city is moving to another shard; retry in a few seconds with the same key")),
            None => Ok(map.shard_of(bucket)),
        }
    }

    /// The other shards.
    pub fn peers(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.0.peers.keys().copied()
    }

    /// Every shard's directory, this one's first (a national view reads them all).
    pub fn directories(&self) -> Vec<Directory> {
        std::iter::once(&self.0.here).chain(self.0.peers.values()).map(|side| side.directory.clone()).collect()
    }

    /// This shard's half of the clearing.
    pub fn clearing(&self) -> &Clearing {
        &self.0.here.clearing
    }

    /// Opens this shard's clearing account for every other shard (again: a replay).
    pub async fn open_clearing_accounts(&self) -> Result<(), ClearingError> {
        for peer in self.0.peers.keys() {
            self.0.here.clearing.open_clearing_account(*peer).await?;
        }
        Ok(())
    }

    fn side(&self, shard: ShardId) -> Option<&Side> {
        if shard == self.0.shard { Some(&self.0.here) } else { self.0.peers.get(&shard) }
    }

    /// Registers a resident on this shard once the country grants its ID number and mobile
    /// number to the request `owner`; `register` writes it (keeping the API's answer with it).
    pub async fn register<F>(&self, new: &NewResident, owner: &str, register: impl FnOnce() -> F) -> Result<Resident, ClearingError>
    where
        F: Future<Output = Result<Resident, DirectoryError>>,
    {
        let map = self.map();
        citypay_clearing::register_in_country_with(&self.0.here.directory, self.0.shard, &map, self, new, owner, register).await
    }

    /// Onboards a merchant on this shard once the country grants its USCC to it.
    pub async fn onboard_merchant(&self, new: &citypay_directory::NewMerchant) -> Result<(citypay_directory::Merchant, citypay_directory::MerchantCredentials), ClearingError> {
        let map = self.map();
        citypay_clearing::onboard_merchant_in_country(&self.0.here.directory, self.0.shard, &map, self, new).await
    }

    /// The resident `mobile` reaches, and their shard: this shard's first; then the shard the
    /// number's claim names at its home shard (two reads, however many shards); then, for
    /// residents registered before their shard joined the country (who hold no claim), every
    /// other shard.
    /// The resident a mobile number reaches, and the shard the map places them on now (a
    /// claim names the shard they registered on; their city may have moved since).
    async fn resident_by_mobile(&self, mobile: &str) -> Result<Option<(ShardId, Resident)>, WalletError> {
        let Some(found) = self.find_by_mobile(mobile).await? else { return Ok(None) };
        let shard = self.shard_now(citypay_routing::bucket_of_owner(found.id), "the recipient's").map_err(WalletError::Unavailable)?;
        Ok(Some((shard, found)))
    }

    async fn find_by_mobile(&self, mobile: &str) -> Result<Option<Resident>, WalletError> {
        if let Some(found) = self.0.here.directory.resident_by_mobile(mobile).await? {
            return Ok(Some(found));
        }
        if let Some((kind, key)) = self.0.here.directory.mobile_key(mobile)
            && let Some(home) = self.side(citypay_clearing::home_of(&key, &self.map()))
            && let Some(shard) = home.claims.used_on(kind, &key).await.map_err(|e| WalletError::Unavailable(e.to_string()))?
            && let Some(side) = self.side(shard)
            && let Some(found) = side.directory.resident_by_mobile(mobile).await?
        {
            return Ok(Some(found));
        }
        for side in self.0.peers.values() {
            if let Some(found) = side.directory.resident_by_mobile(mobile).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    async fn masked_name(&self, shard: ShardId, resident: u64) -> Result<String, WalletError> {
        let side = self.side(shard).ok_or_else(|| WalletError::Unavailable(format!("shard {shard} is not known here")))?;
        Ok(citypay_wallet::mask_name(side.directory.resident_name(resident).await?.expose()))
    }

    /// [`Wallet::find_recipient`] across the country.
    pub async fn find_recipient(&self, wallet: &Wallet, sender: &Resident, mobile: &str) -> Result<Recipient, WalletError> {
        wallet.count_lookup(sender.id).await?;
        let (shard, found) = self.resident_by_mobile(mobile).await?.ok_or(WalletError::RecipientNotFound)?;
        if found.id == sender.id {
            return Err(WalletError::OwnWallet);
        }
        Ok(Recipient { resident: found.id, masked_name: self.masked_name(shard, found.id).await?, city: found.city })
    }

    /// [`Wallet::send`] across the country: to a resident of this shard, as the wallet sends;
    /// to one of another, through the clearing, answered once the other shard's decision is
    /// durable. A retry with the same key answers the first transfer (and finishes it, when
    /// its answer was not heard).
    pub async fn send(&self, wallet: &Wallet, sender: &Resident, mobile: &str, amount: i64, note: &str, idempotency_key: &str) -> Result<TransferLine, WalletError> {
        let note = citypay_wallet::check_transfer(amount, note)?;
        let id = citypay_wallet::transfer_id(sender.id, idempotency_key);
        let id_text = format!("{id:032x}");
        let recipient = match wallet.transfer(sender, &id_text).await? {
            Some(done) if !done.crosses_shards => return Ok(done),
            Some(_) => None,
            None => match self.resident_by_mobile(mobile).await? {
                Some((shard, found)) if shard == self.0.shard && found.id != sender.id => return wallet.send_found(sender, &found, amount, note, id).await,
                Some((shard, found)) if found.id != sender.id => Some((shard, found)),
                found => {
                    wallet.count_lookup(sender.id).await?;
                    return Err(if found.is_some() { WalletError::OwnWallet } else { WalletError::RecipientNotFound });
                }
            },
        };
        let crossing = match recipient {
            // A retry of a transfer sent before: the same crossing, from what was stored.
            None => {
                let (crossing, _, _) = self.sent(id).await?;
                crossing
            }
            Some((shard, found)) => {
                let now = self.0.here.directory.clock().now().0;
                let names = (self.masked_name(self.0.shard, sender.id).await?, self.masked_name(shard, found.id).await?);
                let row = citypay_wallet::transfer_row(id, sender.id, found.id, amount, &note, now, Some((&names.0, &names.1)));
                let crossing = Crossing { id, payer_shard: self.0.shard, payee_shard: shard, payer: sender.wallet, payee: found.wallet, amount };
                let purpose = Purpose {
                    code: transfer_codes::TRANSFER,
                    class: BALANCE_PAYMENT,
                    payer_guards: vec![Directory::wallet_not_frozen(sender.id)],
                    payer_rows: vec![row.clone()],
                    user_data: 0,
                    payee: citypay_clearing::PayeeSide { rows: vec![row], ..Default::default() },
                };
                return self.finish(wallet, sender, &id_text, self.cross(&crossing, purpose).await).await;
            }
        };
        // Reserved before (the first try's rows are there): ask again, apply what is decided.
        let answer = self.cross(&crossing, Purpose::default()).await;
        self.finish(wallet, sender, &id_text, answer).await
    }

    async fn sent(&self, id: u128) -> Result<(Crossing, PayerStatus, Option<Decision>), WalletError> {
        self.0.here.clearing.crossing(id).await.map_err(|e| WalletError::Unavailable(e.to_string()))
    }

    async fn finish(&self, wallet: &Wallet, sender: &Resident, id: &str, sent: Result<Decision, ClearingError>) -> Result<TransferLine, WalletError> {
        match sent {
            Ok(Decision::Posted) => {
                let mut line = wallet.transfer(sender, id).await?.ok_or_else(|| WalletError::Unavailable("the transfer's record is missing".into()))?;
                line.status = TransferStatus::Completed;
                Ok(line)
            }
            Ok(Decision::Rejected(reason)) => Err(WalletError::Returned(reason.code())),
            Err(ClearingError::Refused(Refusal::InsufficientFunds)) => Err(WalletError::Refused(Status::InsufficientFunds)),
            Err(ClearingError::Refused(_)) => Err(WalletError::InvalidAmount("more than zero".into())),
            Err(ClearingError::Ledger(status)) => {
                wallet.count_lookup(sender.id).await?;
                Err(WalletError::Refused(status))
            }
            Err(ClearingError::Guard(_)) => {
                wallet.count_lookup(sender.id).await?;
                Err(DirectoryError::WalletFrozen.into())
            }
            Err(ClearingError::Unknown(error)) => {
                tracing::warn!(transfer = id, %error, "the recipient's shard did not answer; the resolver will finish the transfer");
                Err(WalletError::OutcomeUnknown)
            }
            Err(ClearingError::Directory(error)) => Err(error.into()),
            Err(other) => Err(WalletError::Unavailable(other.to_string())),
        }
    }

    /// The checkout of the shard of the merchant a QR payload names (`here` for this shard's).
    pub fn checkout_for<'a>(&'a self, here: &'a Checkout, payload: &str) -> Result<&'a Checkout, CheckoutError> {
        let shard = self.merchant_shard(payload)?;
        Ok(self.0.peers.get(&shard).map_or(here, |side| &side.checkout))
    }

    /// The shard of the merchant a QR payload names; a merchant whose city is moving is paid
    /// once it has moved.
    fn merchant_shard(&self, payload: &str) -> Result<ShardId, CheckoutError> {
        let bucket = citypay_routing::bucket_of_owner(citypay_checkout::payload_merchant(payload)?);
        self.shard_now(bucket, "the shop's").map_err(CheckoutError::Unavailable)
    }

    /// The resident of device `slot` if it was enrolled before slots carried buckets. Such a
    /// device is with its resident: on this shard (looked for first, as it costs one local
    /// read), or with a resident of the legacy buckets, on the shards that hold them (most
    /// often one). A legacy shard out of reach is passed over (logged): the slot's bucket
    /// still names where a device enrolled since is.
    async fn device_from_before_buckets(&self, checkout: &Checkout, slot: u32, map: &BucketMap) -> Result<Option<u64>, CheckoutError> {
        if let Some(resident) = checkout.device_from_before_buckets(slot).await? {
            return Ok(Some(resident));
        }
        let shards: std::collections::BTreeSet<ShardId> = citypay_routing::LEGACY_BUCKETS.map(|b| map.shard_of(citypay_routing::Bucket(b))).collect();
        for shard in shards.into_iter().filter(|s| *s != self.0.shard) {
            let Some(side) = self.0.peers.get(&shard) else { continue };
            match side.checkout.device_from_before_buckets(slot).await {
                Ok(Some(resident)) => return Ok(Some(resident)),
                Ok(None) => {}
                Err(error) => tracing::warn!(shard, %error, "a shard of the legacy buckets could not be asked about a device"),
            }
        }
        Ok(None)
    }

    /// [`Checkout::enroll_device`] in a country: a slot drawn that a device enrolled before
    /// slots carried buckets has, on any shard, is drawn again, so a code always names one
    /// device in the country.
    pub async fn enroll_device(&self, checkout: &Checkout, resident: &Resident) -> Result<(u32, citypay_directory::Secret<Vec<u8>>), CheckoutError> {
        let map = self.map();
        let map = &map;
        checkout.enroll_device_avoiding(resident, |slot| async move { Ok(self.device_from_before_buckets(checkout, slot, map).await?.is_some()) }).await
    }

    /// [`Checkout::pay_with_code`] across the country: a code of a device enrolled on another
    /// shard (its slot names its resident's bucket) is checked there, and the payment crosses
    /// from that shard's wallet to this shard's merchant as [`Country::pay_qr`]'s does, the code
    /// spent with the hold and the order made paid with the credit. The crossing's id and the
    /// trade's derive from the order: a till's retry finishes the same payment.
    pub async fn pay_with_code(&self, checkout: &Checkout, merchant_id: u64, new: &citypay_checkout::NewTrade, code: &str) -> Result<Trade, CheckoutError> {
        let Some(slot) = citypay_checkout::code_device(code) else { return checkout.pay_with_code(merchant_id, new, code).await };
        let map = self.map();
        // A device whose slot names a bucket of this shard is paid here, as on one shard,
        // with no read elsewhere first.
        if map.shard_of(citypay_checkout::bucket_of_device(slot)) == self.0.shard {
            return checkout.pay_with_code(merchant_id, new, code).await;
        }
        // A device enrolled before slots carried buckets lives with its resident.
        let bucket = match self.device_from_before_buckets(checkout, slot, &map).await? {
            Some(resident) => citypay_routing::bucket_of_owner(resident),
            None => citypay_checkout::bucket_of_device(slot),
        };
        let shard = map.shard_of(bucket);
        let Some(side) = self.0.peers.get(&shard) else { return checkout.pay_with_code(merchant_id, new, code).await };
        self.shard_now(bucket, "the payer's").map_err(CheckoutError::Unavailable)?;
        // The till's retry of an order paid before: answered from it.
        match checkout.trade(merchant_id, &new.out_trade_no).await {
            Ok(existing) => return citypay_checkout::answer_existing_order(existing, new),
            Err(CheckoutError::TradeNotFound) => {}
            Err(other) => return Err(other),
        }
        let trade = citypay_checkout::code_trade_id(merchant_id, &new.out_trade_no);
        let id = citypay_directory::derived_event_id(&["code order", &merchant_id.to_string(), &new.out_trade_no, "crossing"]);
        let (payer, here, crossing) = match side.clearing.crossing(id).await {
            // Held before (the till retrying): the same crossing, asked again with the same
            // order (a posting must make it).
            Ok((crossing, _, _)) => {
                if crossing.amount != new.amount {
                    return Err(CheckoutError::OutTradeNoReused);
                }
                let here = checkout.code_payment_from_elsewhere(merchant_id, new, citypay_directory::entity_of(crossing.payer), trade).await?;
                (None, Some(here), crossing)
            }
            Err(ClearingError::NotFound) => {
                let payer = match side.checkout.code_for_elsewhere(merchant_id, new, code, trade).await? {
                    Ok(payer) => payer,
                    Err(paid) => return Ok(paid),
                };
                let here = checkout.code_payment_from_elsewhere(merchant_id, new, payer.resident, trade).await?;
                let crossing = Crossing { id, payer_shard: shard, payee_shard: self.0.shard, payer: payer.wallet, payee: here.merchant_account, amount: here.trade.amount };
                (Some(payer), Some(here), crossing)
            }
            Err(error) => return Err(CheckoutError::Unavailable(error.to_string())),
        };
        let purpose = Purpose {
            code: citypay_checkout::codes::PAYMENT,
            class: BALANCE_PAYMENT,
            payer_guards: payer.as_ref().map(|p| p.guards.clone()).unwrap_or_default(),
            payer_rows: payer.map(|p| p.rows).unwrap_or_default(),
            user_data: trade,
            payee: here.map_or_else(Default::default, |here| citypay_clearing::PayeeSide {
                rows: here.rows,
                guards: here.guards,
                legs: here.legs,
                credit_code: citypay_checkout::codes::PAYMENT,
                credit_user_data: trade,
            }),
        };
        // Reserved on the payer's shard, decided here, applied there.
        match side.clearing.send_for(&crossing, purpose, self).await {
            Ok(Decision::Posted) => checkout.trade_numbered(trade).await,
            // The order was made meanwhile (another attempt): answered from it.
            Ok(Decision::Rejected(citypay_crossshard::Rejection::Refused)) => match checkout.trade(merchant_id, &new.out_trade_no).await {
                Ok(existing) => citypay_checkout::answer_existing_order(existing, new),
                Err(_) => Err(CheckoutError::OutTradeNoReused),
            },
            Ok(Decision::Rejected(reason)) => Err(CheckoutError::Returned(reason.code())),
            // The device changed since it was read (its code spent meanwhile).
            Err(ClearingError::Guard(0)) => Err(CheckoutError::CodeUsed),
            // The code may be spent with a hold: its end is the resolver's to find.
            Err(ClearingError::Unavailable(error)) => Err(not_finished(ClearingError::Unknown(error), "a payment code's payment", trade)),
            Err(error) => Err(not_finished(error, "a payment code's payment", trade)),
        }
    }

    /// [`Checkout::pay_qr`] across the country: a merchant of this shard is paid as checkout
    /// pays; one of another shard through the clearing, the trade's change going with the
    /// credit there (under the guard that the trade still waits), answered once that shard's
    /// decision is durable. The crossing's id derives from the trade, the payer and the
    /// idempotency key: a retry with the same key finishes the same crossing; of two crossings
    /// for one trade, the trade's guard lets one pay.
    pub async fn pay_qr(&self, checkout: &Checkout, payer: &Resident, payload: &str, typed_amount: Option<i64>, idempotency_key: &str) -> Result<Trade, CheckoutError> {
        let shard = self.merchant_shard(payload)?;
        let Some(side) = self.0.peers.get(&shard) else { return checkout.pay_qr(payer, payload, typed_amount, idempotency_key).await };
        let here = match side.checkout.payment_from_elsewhere(payer.id, payload, typed_amount, idempotency_key).await? {
            Ok(here) => here,
            Err(paid) => return Ok(paid),
        };
        let trade = here.trade.id;
        let id = citypay_directory::derived_event_id(&["trade", &trade.to_string(), "crossing", &payer.id.to_string(), idempotency_key]);
        let crossing = Crossing { id, payer_shard: self.0.shard, payee_shard: shard, payer: payer.wallet, payee: here.merchant_account, amount: here.trade.amount };
        let purpose = Purpose {
            code: citypay_checkout::codes::PAYMENT,
            class: BALANCE_PAYMENT,
            payer_guards: vec![Directory::wallet_not_frozen(payer.id)],
            payer_rows: Vec::new(),
            user_data: trade,
            payee: citypay_clearing::PayeeSide {
                rows: here.rows,
                guards: here.guards,
                legs: here.legs,
                credit_code: citypay_checkout::codes::PAYMENT,
                credit_user_data: trade,
            },
        };
        match self.cross(&crossing, purpose).await {
            Ok(Decision::Posted) => side.checkout.trade_numbered(trade).await,
            // The trade changed before the money arrived: paid by someone else, or closed.
            Ok(Decision::Rejected(citypay_crossshard::Rejection::Refused)) => {
                let now = side.checkout.trade_numbered(trade).await?;
                Err(if now.status == citypay_checkout::TradeStatus::TradeClosed { CheckoutError::TradeClosed } else { CheckoutError::AlreadyPaid })
            }
            Ok(Decision::Rejected(reason)) => Err(CheckoutError::Returned(reason.code())),
            Err(error) => Err(not_finished(error, "a payment", trade)),
        }
    }

    /// [`Wallet::statement`] across the country. A wallet moved between shards has lines on
    /// each shard it lived on (the ledger's history stays where it was written, and each
    /// shard's lines carry the balance there): they are read from every shard and merged,
    /// newest first. A wallet that never moved (no `moved` line here) is read here only.
    pub async fn statement(&self, wallet: &Wallet, resident: &Resident, query: &citypay_wallet::StatementQuery) -> Result<citypay_wallet::Statement, WalletError> {
        let here = wallet.statement(resident, query).await?;
        let moved = citypay_wallet::StatementQuery { codes: vec![transfer_codes::MOVED], limit: 1, ..Default::default() };
        if self.0.peers.is_empty() || wallet.statement(resident, &moved).await?.lines.is_empty() {
            return Ok(here);
        }
        let citypay_wallet::Statement { balance, available, holds, mut lines, next } = here;
        let mut more = next.is_some();
        for side in self.0.peers.values() {
            let there = citypay_wallet::statement_in(&side.directory, resident, query).await?;
            more |= there.next.is_some();
            lines.extend(there.lines);
        }
        let order = |line: &citypay_wallet::StatementLine| (line.cursor.timestamp, line.cursor.transfer, line.cursor.leg);
        lines.sort_by(|a, b| order(b).cmp(&order(a)));
        let limit = query.limit.clamp(1, citypay_wallet::PAGE_MAX);
        more |= lines.len() > limit;
        lines.truncate(limit);
        let next = if more { lines.last().map(|line| line.cursor.clone()) } else { None };
        Ok(citypay_wallet::Statement { balance, available, holds, lines, next })
    }

    /// [`Wallet::transfers`], with where each transfer sent to another shard stands.
    pub async fn transfers(&self, wallet: &Wallet, resident: &Resident, before: Option<(u64, String)>, limit: u32) -> Result<Vec<TransferLine>, WalletError> {
        let mut lines = wallet.transfers(resident, before, limit).await?;
        for line in &mut lines {
            self.mark(line).await?;
        }
        Ok(lines)
    }

    /// Sets where `line` stands, when it was sent to another shard.
    pub async fn mark(&self, line: &mut TransferLine) -> Result<(), WalletError> {
        if !(line.crosses_shards && line.direction == Direction::Sent) {
            return Ok(());
        }
        let Ok(id) = u128::from_str_radix(&line.id, 16) else { return Ok(()) };
        line.status = match self.0.here.clearing.status(id).await {
            Ok((PayerStatus::Posted, _)) => TransferStatus::Completed,
            Ok((PayerStatus::Voided, _)) => TransferStatus::Returned,
            Ok((PayerStatus::Prepared, _)) => TransferStatus::Pending,
            Err(ClearingError::NotFound) => TransferStatus::Pending,
            Err(error) => return Err(WalletError::Unavailable(error.to_string())),
        };
        Ok(())
    }

    /// The resolver's rounds until one finishes nothing (a shard that does not answer leaves
    /// its transfers for later); how many they finished.
    pub async fn drain(&self, limit: u32) -> Result<usize, ClearingError> {
        let mut finished = 0;
        loop {
            match self.resolve_once(limit).await? {
                0 => return Ok(finished),
                round => finished += round,
            }
        }
    }

    /// The resolver, once: asks the payee's shard about every transfer this shard sent that is
    /// still undecided past its time, and applies the answers. How many it finished.
    /// Up to [`RESOLVING_AT_ONCE`] at a time: each is two commits, one per shard, and the
    /// writers batch what arrives together.
    pub async fn resolve_once(&self, limit: u32) -> Result<usize, ClearingError> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut finished = 0;
        let mut count = |joined: Option<Result<Result<bool, ClearingError>, tokio::task::JoinError>>| match joined {
            Some(Ok(Ok(true))) => finished += 1,
            Some(Ok(Err(error))) => tracing::warn!(%error, "the resolver could not finish a transfer; it asks again later"),
            _ => {}
        };
        for crossing in self.0.here.clearing.due(limit).await? {
            let country = self.clone();
            tasks.spawn(async move { country.0.here.clearing.resolve_one(&crossing, &country).await });
            while tasks.len() >= RESOLVING_AT_ONCE {
                count(tasks.join_next().await);
            }
        }
        while !tasks.is_empty() {
            count(tasks.join_next().await);
        }
        Ok(finished)
    }
}

impl Country {
    /// [`Bills::bills_of`] across the country: the bills addressed to the resident and to the
    /// family members whose links stand, from billers of every shard (the resident's payer
    /// keys are read on their own shard, the bills where their billers are).
    pub async fn bills_of(&self, bills: &Bills, resident: &Resident, limit: u32) -> Result<Vec<Bill>, BillError> {
        let keys = bills.payer_keys(resident).await?;
        let mut all = bills.bills_with_keys(&keys, limit).await?;
        for side in self.0.peers.values() {
            all.extend(bills.on(side.directory.clone()).bills_with_keys(&keys, limit).await?);
        }
        citypay_bills::newest_first(&mut all, limit);
        Ok(all)
    }

    /// A receipt for the resident of a payment made on any shard (a bill of another shard's
    /// biller is paid there).
    pub async fn receipt_for(&self, bills: &Bills, resident: &Resident, number: u64) -> Result<citypay_bills::Receipt, BillError> {
        let keys = bills.payer_keys(resident).await?;
        let peers = self.0.peers.values().map(|side| bills.on(side.directory.clone()));
        for there in std::iter::once(bills.clone()).chain(peers) {
            match there.receipt_with_keys(resident, &keys, number).await {
                Err(BillError::BillNotFound) => {}
                found => return found,
            }
        }
        Err(BillError::BillNotFound)
    }

    /// [`Bills::pay`] across the country: a bill of this shard's biller is paid as the bills
    /// service pays it; one of another shard's through the clearing, the payer's part held on
    /// the wallet's shard and credited to the biller with the bill's change, the fund's part
    /// and the fee on the biller's (under the guard that the bill is still the one read),
    /// answered once that shard's decision is durable. The crossing's id derives from the
    /// bill's version, the payer, the items and the idempotency key: a retry with the same key
    /// finishes the same crossing; of two crossings for the same items, the bill's guard lets
    /// one pay.
    pub async fn pay_bill(&self, bills: &Bills, payer: &Resident, bill_id: u64, items: Option<&[usize]>, idempotency_key: &str) -> Result<BillPayment, BillError> {
        let keys = bills.payer_keys(payer).await?;
        match bills.pay_with_keys(&keys, payer, bill_id, items).await {
            Err(BillError::BillNotFound) => {}
            paid => return paid,
        }
        for (shard, side) in &self.0.peers {
            let there = bills.on(side.directory.clone());
            let here = match there.payment_from_elsewhere(&keys, payer, bill_id, items).await {
                Ok(Ok(here)) => here,
                // Paid before by this payer (a retry after the crossing ended).
                Ok(Err(done)) => return Ok(done),
                Err(BillError::BillNotFound) => continue,
                Err(other) => return Err(other),
            };
            // Nothing is sent to a biller whose city is moving; a copy left on the shard its
            // city moved from (until the move cleans it up) is passed over.
            let biller_bucket = citypay_routing::bucket_of_owner(here.payment.bill.biller_id);
            if self.shard_now(biller_bucket, "the biller's").map_err(BillError::Unavailable)? != *shard {
                continue;
            }
            let items_paid = here.payment.items.to_string();
            let id = citypay_directory::derived_event_id(&["bill", &bill_id.to_string(), "crossing", &here.bill_version.to_string(), &payer.id.to_string(), &items_paid, idempotency_key]);
            let crossing = Crossing { id, payer_shard: self.0.shard, payee_shard: *shard, payer: payer.wallet, payee: here.biller_account, amount: here.payer_part };
            let purpose = Purpose {
                code: transfer_codes::BILL,
                class: BALANCE_PAYMENT,
                payer_guards: vec![Directory::wallet_not_frozen(payer.id)],
                payer_rows: Vec::new(),
                user_data: bill_id,
                payee: citypay_clearing::PayeeSide { rows: here.rows, guards: here.guards, legs: here.legs, credit_code: transfer_codes::BILL, credit_user_data: bill_id },
            };
            return match self.cross(&crossing, purpose).await {
                Ok(Decision::Posted) => Ok(here.payment),
                // The bill changed before the money arrived: paid meanwhile (by someone, or these
                // items).
                Ok(Decision::Rejected(citypay_crossshard::Rejection::Refused)) => Err(BillError::AlreadyPaid),
                // The biller's shard refused the fund's part (never opened, or short).
                Ok(Decision::Rejected(citypay_crossshard::Rejection::OverLimit | citypay_crossshard::Rejection::PayeeUnknown)) if here.payment.insured > 0 => {
                    Err(BillError::FundShort(here.payment.insured))
                }
                Ok(Decision::Rejected(reason)) => Err(BillError::Returned(reason.code())),
                Err(error) => Err(match not_finished(error, "a bill's payment", bill_id) {
                    CheckoutError::Refused(status) => BillError::Refused(status),
                    CheckoutError::OutcomeUnknown => BillError::OutcomeUnknown,
                    CheckoutError::Directory(error) => BillError::Directory(error),
                    other => BillError::Unavailable(other.to_string()),
                }),
            };
        }
        Err(BillError::BillNotFound)
    }
}

/// How a payment or a refund of `trade` across shards that got no decision answers: refused
/// here with nothing held, or not heard (the resolver finishes it; never acknowledged).
fn not_finished(error: ClearingError, what: &str, trade: u64) -> CheckoutError {
    match error {
        ClearingError::Refused(Refusal::InsufficientFunds) => CheckoutError::Refused(Status::InsufficientFunds),
        ClearingError::Ledger(status) => CheckoutError::Refused(status),
        // A guard of the wallet's: it is frozen.
        ClearingError::Guard(_) => DirectoryError::WalletFrozen.into(),
        ClearingError::Unknown(error) => {
            tracing::warn!(trade, %error, "{what} across shards was not heard back; the resolver will finish it");
            CheckoutError::OutcomeUnknown
        }
        ClearingError::Directory(error) => error.into(),
        other => CheckoutError::Unavailable(other.to_string()),
    }
}

impl Peer for Country {
    fn ask(&self, message: Message, payee: citypay_clearing::PayeeSide) -> Pin<Box<dyn Future<Output = Result<Message, String>> + Send + '_>> {
        Box::pin(async move {
            let (Message::Decide(crossing) | Message::Resolve(crossing)) = &message else { return Err("only asks are sent".into()) };
            let resolving = matches!(message, Message::Resolve(_));
            let side = self.side(crossing.payee_shard).ok_or_else(|| format!("shard {} is not known here", crossing.payee_shard))?;
            let answer = side.clearing.decide_with(message, payee).await.map_err(unknown)?;
            if resolving {
                self.reached(Step::Heard);
            }
            Ok(answer)
        })
    }
}

/// Refunds of this shard's merchants to wallets of other shards: the merchant's money crosses
/// like any transfer (the hold with the refund's rows on this shard, the credit on the
/// wallet's), started by the merchant's request and finished by it or by the resolver.
impl citypay_checkout::RefundsElsewhere for Country {
    fn send(&self, hold: citypay_checkout::RefundHold) -> citypay_checkout::RefundFuture<'_, citypay_checkout::SentRefund> {
        Box::pin(async move {
            use citypay_checkout::SentRefund;
            let clearing = &self.0.here.clearing;
            // Sent before: the same crossing as stored (the wallet's city may have moved since).
            let crossing = match clearing.crossing(hold.id).await {
                Ok((crossing, _, _)) => crossing,
                Err(ClearingError::NotFound) => {
                    let bucket = citypay_routing::bucket_of_account(hold.wallet).ok_or(CheckoutError::AccountElsewhere)?;
                    let payee_shard = self.shard_now(bucket, "the payer's").map_err(CheckoutError::Unavailable)?;
                    Crossing { id: hold.id, payer_shard: self.0.shard, payee_shard, payer: hold.merchant_account, payee: hold.wallet, amount: hold.amount }
                }
                Err(error) => return Err(CheckoutError::Unavailable(error.to_string())),
            };
            let purpose = Purpose {
                code: citypay_checkout::codes::REFUND,
                class: 0,
                payer_guards: hold.guards,
                payer_rows: hold.rows,
                user_data: hold.trade,
                payee: citypay_clearing::PayeeSide { credit_code: citypay_checkout::codes::REFUND, credit_user_data: hold.trade, ..Default::default() },
            };
            match self.cross(&crossing, purpose).await {
                Ok(Decision::Posted) => Ok(SentRefund::Posted),
                Ok(Decision::Rejected(reason)) => Ok(SentRefund::Returned(reason.code())),
                Err(ClearingError::Guard(guard)) => Ok(SentRefund::Guard(guard)),
                Err(error) => Err(not_finished(error, "a refund", hold.trade)),
            }
        })
    }

    fn outcome(&self, id: u128) -> citypay_checkout::RefundFuture<'_, Option<bool>> {
        Box::pin(async move {
            match self.0.here.clearing.crossing(id).await {
                Ok((_, PayerStatus::Posted, _)) => Ok(Some(true)),
                Ok((_, PayerStatus::Voided, _)) => Ok(Some(false)),
                Ok((_, PayerStatus::Prepared, _)) | Err(ClearingError::NotFound) => Ok(None),
                Err(error) => Err(CheckoutError::Unavailable(error.to_string())),
            }
        })
    }
}

impl ClaimPeer for Country {
    fn ask(&self, home: ShardId, request: ClaimRequest) -> Pin<Box<dyn Future<Output = Result<ClaimAnswer, String>> + Send + '_>> {
        Box::pin(async move {
            let side = self.side(home).ok_or_else(|| format!("shard {home} is not known here"))?;
            side.claims.answer(request).await.map_err(unknown)
        })
    }
}
