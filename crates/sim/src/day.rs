//! A simulated day: what each person does and when (drawn from the seed), and doing it
//! through the services.

use citypay_bills::{BillError, Item, NewBill, Payer, PayerKind};
use std::sync::Arc;

use citypay_checkout::{CheckoutError, NewTrade};
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::{Category, Resident};
use citypay_wallet::WalletError;

use crate::tally::Outcome;
use crate::transit::RideLeg;
use crate::world::{BusinessKind, Person, Registration, rng_for, tag};
use crate::{Account, Context, SimError, service};

/// Length of a slot: the most often one person acts (more than a payment code's 30 seconds).
pub(crate) const SLOT_SECONDS: u64 = 300;
const SLOTS: u16 = 288;

/// Relative weight of each hour of the day, per kind of visit.
const SHOP_HOURS: [u32; 24] = [0, 0, 0, 0, 0, 0, 1, 3, 5, 4, 4, 5, 7, 5, 4, 4, 5, 7, 9, 9, 7, 4, 2, 1];
const MEAL_HOURS: [u32; 24] = [0, 0, 0, 0, 0, 0, 1, 4, 3, 1, 1, 8, 12, 5, 1, 1, 1, 4, 10, 8, 3, 1, 1, 0];
const OFFICE_HOURS: [u32; 24] = [0, 0, 0, 0, 0, 0, 0, 0, 9, 10, 9, 6, 2, 5, 8, 7, 5, 2, 0, 0, 0, 0, 0, 0];
const MORNING_RUSH: [u32; 24] = [0, 0, 0, 0, 0, 0, 3, 10, 8, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const EVENING_RUSH: [u32; 24] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 8, 10, 5, 2, 1, 0, 0];
const SIGN_UP_HOURS: [u32; 24] = [0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2, 3, 4, 4, 3, 2, 1];

/// How a purchase is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tender {
    Cash,
    /// The merchant scans the person's payment code.
    Code,
    /// The person scans the QR code of a trade the till just created.
    DynamicQr,
    /// The person scans the counter sticker and types the amount.
    StaticQr,
}

/// Something a person does.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Register,
    Purchase { kind: BusinessKind, business: usize, amount: i64, tender: Tender, number: u32 },
    /// The merchant refunds (part of) an earlier payment of this person.
    Refund { kind: BusinessKind, business: usize, amount: i64, number: u32 },
    /// To work or back, by bus and metro: by ride code, or with cash.
    Journey { legs: Vec<RideLeg>, by_phone: bool, number: u32 },
    /// The year's social-security contribution, for oneself or (by proxy) a relative.
    Contribute { for_relative: bool },
    /// A parent pays the child's tuition bill: one item, or all that is left.
    PayTuition { item: Option<usize> },
    /// A traveller buys at a shop or restaurant of city number `city` (another than theirs).
    Travel { city: usize, kind: BusinessKind, business: usize, amount: i64, tender: Tender, number: u32 },
    /// Money sent to a relative in city number `city`, found by their mobile number.
    SendMoney { city: usize, mobile: String, amount: i64, number: u32 },
}

/// Per thousand registered people a day: how many pay at a shop of another city.
const TRAVEL_PER_MILLE: u32 = 30;
/// Per thousand registered people a day: how many send money to a relative in another city.
const FAMILY_PER_MILLE: u32 = 40;

/// What a day's plan draws from besides the people: the run's seed and, per city, how many
/// businesses of each kind and which transit lines there are.
#[derive(Debug)]
pub(crate) struct Shape<'a> {
    pub(crate) seed: u64,
    pub(crate) cities: &'a [&'static crate::CityPreset],
    pub(crate) businesses: Vec<std::collections::HashMap<BusinessKind, usize>>,
    pub(crate) lines: Vec<Lines>,
}

/// A city's transit lines: how many bus lines, and the stations of each metro line.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    pub(crate) buses: usize,
    pub(crate) metro: Vec<usize>,
}

/// An action at its slot.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub(crate) slot: u16,
    pub(crate) action: Action,
}

/// Lives one person's day: their actions in order, each at its own time.
pub(crate) async fn live(
    context: &Context,
    person: &Person,
    account: Option<Account>,
    actions: Vec<Planned>,
    day: u32,
) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let mut account = account;
    let mut outcomes = Vec::new();
    for planned in actions {
        let at = crate::day_start(day) + u64::from(planned.slot) * SLOT_SECONDS;
        let (after, done) = crate::clock::at(at, act(context, person, account, planned.action, day)).await;
        account = after;
        outcomes.extend(done);
    }
    (account, outcomes)
}

fn minute_in(rng: &mut fastrand::Rng, hours: &[u32; 24]) -> u32 {
    let total: u32 = hours.iter().sum();
    let mut pick = rng.u32(0..total);
    for (hour, weight) in (0u32..).zip(hours) {
        if pick < *weight {
            return hour * 60 + rng.u32(0..60);
        }
        pick -= weight;
    }
    12 * 60
}

/// Successes in `n` tries of `per_mille`.
fn binomial(rng: &mut fastrand::Rng, n: u32, per_mille: u32) -> u32 {
    (0..n).filter(|_| rng.u32(0..1000) < per_mille).count().try_into().unwrap_or(0)
}

/// Each person's actions of day `day`, in time order (people without any are left out). Each
/// person's draws come from their own generator, so the plan does not depend on the order
/// people are visited in.
pub(crate) fn plan(shape: &Shape<'_>, people: &[Person], day: u32) -> Vec<(usize, Vec<Planned>)> {
    let mut everyone = Vec::new();
    // Each city's people, by index (they are drawn city by city).
    let mut of_city = vec![0..0; shape.cities.len()];
    for (index, person) in people.iter().enumerate() {
        let range = &mut of_city[person.city];
        *range = if range.end == range.start { index..index + 1 } else { range.start..index + 1 };
    }
    for (index, person) in people.iter().enumerate() {
        let mut planned = Vec::new();
        let preset = shape.cities[person.city];
        let mut rng = rng_for(shape.seed, &[tag::DAY, u64::from(day), u64::from(preset.code), person.index]);
        let mut actions: Vec<(u32, Action)> = Vec::new();
        let registered_from = match person.registration {
            Registration::Before => Some(0),
            Registration::OnDay(d) if d < day => Some(0),
            Registration::OnDay(d) if d == day => {
                let minute = minute_in(&mut rng, &SIGN_UP_HOURS);
                actions.push((minute, Action::Register));
                Some(minute + 1)
            }
            Registration::OnDay(_) | Registration::Never => None,
        };
        let businesses = &shape.businesses[person.city];
        let mut number = 0;
        let mut visit = |rng: &mut fastrand::Rng, kind: BusinessKind, minute: u32, amount: i64, actions: &mut Vec<(u32, Action)>| {
            let Some(&count) = businesses.get(&kind).filter(|n| **n > 0) else { return };
            let business = rng.usize(..count);
            let can_pay_by_phone = registered_from.is_some_and(|from| minute >= from);
            let tender = if !can_pay_by_phone || rng.u32(0..1000) < person.cash_per_mille {
                Tender::Cash
            } else if person.shows_code {
                Tender::Code
            } else if kind == BusinessKind::Restaurant && rng.bool() {
                Tender::StaticQr
            } else {
                Tender::DynamicQr
            };
            number += 1;
            actions.push((minute, Action::Purchase { kind, business, amount, tender, number }));
            // A few shop purchases come back, in full or in part, later that day.
            let refundable = matches!(tender, Tender::Code | Tender::DynamicQr) && kind == BusinessKind::Shop;
            if refundable && rng.u32(0..1000) < 25 {
                let later = minute + 30 + rng.u32(0..150);
                let refund = if rng.bool() { amount } else { amount / 2 };
                actions.push((later, Action::Refund { kind, business, amount: refund, number }));
            }
        };
        for _ in 0..binomial(&mut rng, 4, 400) {
            let minute = minute_in(&mut rng, &SHOP_HOURS);
            let amount = if rng.u32(0..10) < 8 { rng.i64(300..6_000) } else { rng.i64(6_000..50_000) };
            visit(&mut rng, BusinessKind::Shop, minute, amount, &mut actions);
        }
        for _ in 0..binomial(&mut rng, 2, 400) {
            let minute = minute_in(&mut rng, &MEAL_HOURS);
            let amount = rng.i64(1_500..12_000);
            visit(&mut rng, BusinessKind::Restaurant, minute, amount, &mut actions);
        }
        if rng.u32(0..1000) < 15 {
            let minute = minute_in(&mut rng, &OFFICE_HOURS);
            let amount = rng.i64(2_000..80_000);
            visit(&mut rng, BusinessKind::Hospital, minute, amount, &mut actions);
        }
        // Contributions are paid from the phone, in office hours, a few a day.
        if rng.u32(0..1000) < 3 {
            let minute = minute_in(&mut rng, &OFFICE_HOURS);
            if registered_from.is_some_and(|from| minute >= from) {
                actions.push((minute, Action::Contribute { for_relative: rng.u32(0..10) < 3 }));
            }
        }
        // Parents pay the term's tuition over the first weeks, an item or all at once.
        if crate::world::is_parent(shape.seed, preset, person.index) && rng.u32(0..1000) < 20 {
            let minute = minute_in(&mut rng, &OFFICE_HOURS);
            if registered_from.is_some_and(|from| minute >= from) {
                let item = rng.bool().then(|| rng.usize(..crate::TUITION_ITEMS.len()));
                actions.push((minute, Action::PayTuition { item }));
            }
        }
        if person.commutes {
            let network = &shape.lines[person.city];
            let legs = match rng.u32(0..100) {
                _ if network.metro.is_empty() && network.buses == 0 => Vec::new(),
                0..40 if network.buses > 0 => vec![RideLeg::Bus { line: rng.usize(..network.buses) }],
                roll if !network.metro.is_empty() => {
                    let line = rng.usize(..network.metro.len());
                    let stations = network.metro[line];
                    let from = rng.usize(..stations);
                    let mut to = rng.usize(..stations);
                    if to == from {
                        to = (from + 1 + rng.usize(..stations - 1)) % stations;
                    }
                    let metro = RideLeg::Metro { line, from, to };
                    match roll {
                        80.. if network.buses > 0 => vec![RideLeg::Bus { line: rng.usize(..network.buses) }, metro],
                        _ => vec![metro],
                    }
                }
                _ => vec![RideLeg::Bus { line: rng.usize(..network.buses.max(1)) }],
            };
            for (rush, chance) in [(&MORNING_RUSH, 800), (&EVENING_RUSH, 750)] {
                if legs.is_empty() || rng.u32(0..1000) >= chance {
                    continue;
                }
                let minute = minute_in(&mut rng, rush);
                let can_pay_by_phone = registered_from.is_some_and(|from| minute >= from);
                let by_phone = can_pay_by_phone && rng.u32(0..1000) >= person.cash_per_mille;
                // The way back takes the same legs in reverse.
                let legs: Vec<RideLeg> = if std::ptr::eq(rush, &EVENING_RUSH) {
                    legs.iter().rev().map(|leg| match *leg {
                        RideLeg::Metro { line, from, to } => RideLeg::Metro { line, from: to, to: from },
                        bus => bus,
                    }).collect()
                } else {
                    legs.clone()
                };
                number += 1;
                actions.push((minute, Action::Journey { legs, by_phone, number }));
            }
        }
        // Travellers and family elsewhere, drawn apart from the rest of the day (adding them
        // changed no one's other draws, though they take slots of the day): a few pay at a shop
        // or restaurant of another city, a few send money to a relative there (a class I
        // wallet, drawn by the seed).
        if shape.cities.len() > 1 && registered_from == Some(0) {
            let mut away = rng_for(shape.seed, &[tag::AWAY, u64::from(day), u64::from(preset.code), person.index]);
            let others = shape.cities.len() - 1;
            let elsewhere = |rng: &mut fastrand::Rng| (person.city + 1 + rng.usize(..others)) % shape.cities.len();
            if away.u32(0..1000) < TRAVEL_PER_MILLE {
                let city = elsewhere(&mut away);
                let (kind, hours) = if away.bool() { (BusinessKind::Shop, &SHOP_HOURS) } else { (BusinessKind::Restaurant, &MEAL_HOURS) };
                if let Some(&count) = shape.businesses[city].get(&kind).filter(|n| **n > 0) {
                    let business = away.usize(..count);
                    let minute = minute_in(&mut away, hours);
                    let amount = away.i64(1_500..20_000);
                    let tender = if away.u32(0..1000) < person.cash_per_mille {
                        Tender::Cash
                    } else if person.shows_code {
                        Tender::Code
                    } else {
                        Tender::DynamicQr
                    };
                    number += 1;
                    actions.push((minute, Action::Travel { city, kind, business, amount, tender, number }));
                }
            }
            if away.u32(0..1000) < FAMILY_PER_MILLE {
                let city = elsewhere(&mut away);
                let range = of_city[city].clone();
                if range.end > range.start {
                    let relative = &people[range.start + away.usize(..range.len())];
                    if relative.registration == Registration::Before && relative.class == citypay_identity::AccountClass::I {
                        let minute = minute_in(&mut away, &SHOP_HOURS);
                        number += 1;
                        actions.push((minute, Action::SendMoney { city, mobile: relative.mobile(), amount: 100 * away.i64(50..500), number }));
                    }
                }
            }
        }
        // One action per slot, in the order drawn by time; what no longer fits the day is dropped.
        actions.sort_by_key(|(minute, _)| *minute);
        let mut next_free = 0u16;
        for (minute, action) in actions {
            let wanted = u16::try_from(u64::from(minute) * 60 / SLOT_SECONDS).unwrap_or(SLOTS);
            let slot = wanted.max(next_free);
            if slot >= SLOTS {
                break;
            }
            next_free = slot + 1;
            planned.push(Planned { slot, action });
        }
        if !planned.is_empty() {
            everyone.push((index, planned));
        }
    }
    everyone
}

/// Errors that stop the run: a service down, or a payment across shards whose outcome is not
/// known (in one process only a writer that did not answer in time leaves one; counted as
/// refused, and paid in cash, it could still be posted by the resolver).
fn fatal(code: &'static str) -> bool {
    matches!(code, "unavailable" | "outcome_unknown")
}

fn wallet_outcome(what: &'static str, error: &WalletError) -> Result<Outcome, SimError> {
    if fatal(error.code()) {
        return Err(service(what, error));
    }
    Ok(Outcome::Refused { what, code: error.code() })
}

fn checkout_outcome(what: &'static str, error: &CheckoutError) -> Result<Outcome, SimError> {
    if fatal(error.code()) {
        return Err(service(what, error));
    }
    Ok(Outcome::Refused { what, code: error.code() })
}

/// Registers a person: a real-name wallet, a linked card, a phone for payment codes if they
/// use them, and a first top-up.
pub(crate) async fn register(context: &Context, person: &Person) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let services = context.at(person.city);
    let preset = context.cities[person.city];
    let mut outcomes = Vec::new();
    let resident = match services.directory.register_resident(&person.new_resident(preset, context.seed)).await {
        Ok(resident) => resident,
        Err(e) if fatal(e.code()) => return (None, vec![Err(service("registering", &e))]),
        Err(e) => return (None, vec![Ok(Outcome::Refused { what: "register", code: e.code() })]),
    };
    outcomes.push(Ok(Outcome::Registered));
    let card = match link_cards(context, person, &resident).await {
        Ok(card) => card,
        Err(e) => {
            outcomes.push(wallet_outcome("link card", &e));
            return (None, outcomes);
        }
    };
    let device = enrol_phone(context, person, &resident, &mut outcomes).await;
    let mut account = Account { resident, home: person.city, card, device, balance: 0, rider: None, rider_seed: None, ride_until: 0, account_ref: 0 };
    let first = first_top_up(context.seed, preset, person.index);
    outcomes.push(top_up(context, &mut account, first, "first").await);
    if person.commutes {
        outcomes.push(crate::transit::enrol(context, &mut account, preset, person.index).await);
    }
    (Some(account), outcomes)
}

/// Links the person's cards, one per bank their class takes (the sandbox bank issues each to
/// them first; linking a card again changes nothing); answers the first card's id.
async fn link_cards(context: &Context, person: &Person, resident: &Resident) -> Result<u64, WalletError> {
    let services = context.at(person.city);
    let (name, id_number) = services.directory.resident_identity(resident.id).await?;
    let id_number = citypay_identity::ResidentId::parse(id_number.expose(), services.directory.today())
        .map_err(|e| WalletError::Directory(citypay_directory::DirectoryError::InvalidResidentId(e.to_string())))?;
    let mut first = None;
    for bank in 0..person.banks() {
        let parsed = citypay_identity::CardNumber::parse(&person.card_number(bank)).map_err(|e| WalletError::InvalidCard(e.to_string()))?;
        services.bank.register_holder(&parsed.card, name.expose(), &id_number).map_err(|e| WalletError::InvalidCard(e.to_string()))?;
        let (card, _) = services.wallet.link_card(resident, parsed.card.digits()).await?;
        first.get_or_insert(card.id);
    }
    first.ok_or(WalletError::CardNotFound)
}

/// A phone for payment codes, for those who show one at the till.
async fn enrol_phone(context: &Context, person: &Person, resident: &Resident, outcomes: &mut Vec<Result<Outcome, SimError>>) -> Option<(u32, Arc<[u8]>)> {
    if !person.shows_code {
        return None;
    }
    match context.at(person.city).checkout.enroll_device(resident).await {
        Ok((slot, secret)) => Some((slot, Arc::from(secret.expose().as_slice()))),
        Err(e) => {
            outcomes.push(checkout_outcome("enrol device", &e));
            None
        }
    }
}

/// Picks up a wallet an earlier run opened: the resident found by ID number, the card as
/// linked, a phone enrolled anew for payment codes (the old phone's secret was not kept), the
/// balance from the ledger, and a ride credential for commuters.
pub(crate) async fn adopt(context: &Context, person: &Person) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let services = context.at(person.city);
    let preset = context.cities[person.city];
    let id_number = crate::world::resident_id_number(preset.code, person.index);
    let resident = match services.directory.resident_by_id_number(&id_number).await {
        Ok(Some(resident)) => resident,
        // Their registration was refused in the first run: they still pay cash.
        Ok(None) => return (None, Vec::new()),
        Err(e) => return (None, vec![Err(service("finding a resident", &e))]),
    };
    let mut outcomes = Vec::new();
    let card = match link_cards(context, person, &resident).await {
        Ok(card) => card,
        Err(e) => return (None, vec![wallet_outcome("link card", &e)]),
    };
    let balance = match services.wallet.account(&resident).await {
        Ok(account) => account.balance.net_posted(),
        Err(e) => return (None, vec![wallet_outcome("read the wallet", &e)]),
    };
    let device = enrol_phone(context, person, &resident, &mut outcomes).await;
    let mut account = Account { resident, home: person.city, card, device, balance, rider: None, rider_seed: None, ride_until: 0, account_ref: 0 };
    if person.commutes {
        outcomes.push(crate::transit::enrol(context, &mut account, preset, person.index).await);
    }
    (Some(account), outcomes)
}

pub(crate) async fn top_up(context: &Context, account: &mut Account, amount: i64, key: &str) -> Result<Outcome, SimError> {
    let key = format!("sim-top-up-{key}");
    match context.at(account.home).wallet.top_up(&account.resident, account.card, amount, &key).await {
        Ok(movement) => {
            account.balance += movement.amount;
            Ok(Outcome::TopUp { amount: movement.amount })
        }
        Err(e) => wallet_outcome("top up", &e),
    }
}

/// Does one planned action of `person` and returns their wallet as it is afterwards.
pub(crate) async fn act(
    context: &Context,
    person: &Person,
    account: Option<Account>,
    action: Action,
    day: u32,
) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    match action {
        Action::Register => register(context, person).await,
        Action::Purchase { kind: BusinessKind::Hospital, business, amount, tender, number } => {
            hospital_visit(context, person, account, business, amount, tender, day, number).await
        }
        Action::Purchase { kind, business, amount, tender, number } => {
            let out_trade_no = format!("d{day}c{}p{}n{number}", person.city, person.index);
            purchase(context, person, account, (person.city, kind, business), amount, tender, out_trade_no, (day, number)).await
        }
        Action::Journey { legs, by_phone, number } => {
            let mut account = account;
            let now = context.at(person.city).directory.clock().now().unix_seconds();
            let prefix = format!("d{day}c{}p{}j{number}", person.city, person.index);
            let outcomes = crate::transit::journey(context, person.city, &mut account, by_phone, &legs, now, &prefix).await;
            (account, outcomes)
        }
        Action::Contribute { for_relative } => contribute(context, person, account, for_relative, day).await,
        Action::PayTuition { item } => pay_tuition(context, person, account, item, day).await,
        Action::Travel { city, kind, business, amount, tender, number } => {
            let out_trade_no = format!("d{day}c{}p{}t{number}", person.city, person.index);
            purchase(context, person, account, (city, kind, business), amount, tender, out_trade_no, (day, number)).await
        }
        Action::SendMoney { city, mobile, amount, number } => send_to_family(context, person, account, city, &mobile, amount, (day, number)).await,
        Action::Refund { kind, business, amount, number } => {
            let mut account = account;
            let merchant = &context.businesses[person.city][&kind][business];
            let out_trade_no = format!("d{day}c{}p{}n{number}", person.city, person.index);
            let outcome = match context.at(person.city).checkout.refund(merchant.id, &out_trade_no, "r1", amount).await {
                Ok(_) => {
                    if let Some(account) = account.as_mut() {
                        account.balance += amount;
                    }
                    Ok(Outcome::Refund { amount })
                }
                Err(e) => checkout_outcome("refund", &e),
            };
            (account, vec![outcome])
        }
    }
}

/// A purchase at a business (`at`: city, kind, index), at home or by a traveller in another
/// city: paid by phone (across shards when that city lives on another) when the person can
/// and will, else in cash at the till, which always takes it. A traveller's payment counts
/// in the shop's city.
#[allow(clippy::too_many_arguments)]
async fn purchase(
    context: &Context,
    person: &Person,
    account: Option<Account>,
    at: (usize, BusinessKind, usize),
    amount: i64,
    tender: Tender,
    out_trade_no: String,
    (day, number): (u32, u32),
) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let (city, kind, business) = at;
    let mut account = account;
    let mut outcomes = Vec::new();
    let merchant = &context.businesses[city][&kind][business];
    let category = category_code(kind);
    let paid = |method: &'static str| {
        if city == person.city {
            Outcome::Payment { category, method, amount }
        } else {
            Outcome::PaidAway { city: context.cities[city].name, category, method, amount }
        }
    };
    let new = NewTrade { out_trade_no, amount, subject: subject(kind).to_owned(), timeout_s: None, notify: None, cashier: None };
    let paid_by_phone = match (tender, account.as_mut()) {
        (Tender::Cash, _) | (_, None) => false,
        (tender, Some(account)) => {
            if let Some(topped) = top_up_for(context, account, amount, &format!("d{day}n{number}")).await {
                outcomes.push(topped);
            }
            match pay(context, city, account, merchant, &new, tender).await {
                Ok(()) => {
                    account.balance -= amount;
                    outcomes.push(Ok(paid(method_code(tender))));
                    if context.apart(person.city, city) {
                        outcomes.push(Ok(Outcome::AcrossShards { amount }));
                    }
                    true
                }
                Err(e) => {
                    outcomes.push(checkout_outcome("pay", &e));
                    false
                }
            }
        }
    };
    if !paid_by_phone {
        let cash = NewTrade { out_trade_no: format!("{}x", new.out_trade_no), ..new };
        match context.at(city).checkout.record_cash_sale(merchant.id, &cash).await {
            Ok(_) => outcomes.push(Ok(paid("cash"))),
            Err(e) => outcomes.push(checkout_outcome("cash sale", &e)),
        }
    }
    (account, outcomes)
}

/// Money sent to a relative in city number `city` by their mobile number, as the app sends it
/// (`POST /v1/transfers`): across shards when that city lives on another.
async fn send_to_family(
    context: &Context,
    person: &Person,
    account: Option<Account>,
    city: usize,
    mobile: &str,
    amount: i64,
    (day, number): (u32, u32),
) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let Some(mut account) = account else { return (None, Vec::new()) };
    let mut outcomes = Vec::new();
    if let Some(topped) = top_up_for(context, &mut account, amount, &format!("d{day}n{number}")).await {
        outcomes.push(topped);
    }
    let services = context.at(person.city);
    let key = format!("sim-family-d{day}n{number}");
    let sent = match &services.country {
        Some(country) => country.send(&services.wallet, &account.resident, mobile, amount, "家用", &key).await,
        None => services.wallet.send(&account.resident, mobile, amount, "家用", &key).await,
    };
    match sent {
        Ok(_) => {
            account.balance -= amount;
            outcomes.push(Ok(Outcome::SentToFamily { amount }));
            if context.apart(person.city, city) {
                outcomes.push(Ok(Outcome::AcrossShards { amount }));
            }
        }
        Err(e) => outcomes.push(wallet_outcome("send to family", &e)),
    }
    (Some(account), outcomes)
}

/// A hospital visit: the hospital bills the patient by ID number (a registration fee and the
/// medicine); a patient paying from the wallet claims half the medicine from the city's
/// insurance fund, one paying cash at the counter pays it all.
#[allow(clippy::too_many_arguments)]
async fn hospital_visit(
    context: &Context,
    person: &Person,
    account: Option<Account>,
    business: usize,
    amount: i64,
    tender: Tender,
    day: u32,
    number: u32,
) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let mut account = account;
    let mut outcomes = Vec::new();
    let bills = &context.at(person.city).bills;
    let hospital = &context.businesses[person.city][&BusinessKind::Hospital][business];
    let preset = context.cities[person.city];
    let by_phone = tender != Tender::Cash && account.is_some();
    let (registration, medicine, insured) = visit_parts(amount, by_phone);
    let out_bill_no = format!("d{day}c{}p{}n{number}", person.city, person.index);
    let now = context.at(person.city).directory.clock().now().unix_seconds();
    let new = NewBill {
        out_bill_no: out_bill_no.clone(),
        payer: Payer { kind: PayerKind::IdNumber, identifier: crate::world::resident_id_number(preset.code, person.index) },
        title: "门诊".into(),
        items: vec![Item { name: "挂号费".into(), amount: registration }, Item { name: "药费".into(), amount: medicine }],
        pick_items: false,
        insured,
        due_at: now + 30 * 86_400,
        late_allowed: true,
    };
    let bill = match bills.issue(hospital.id, &new).await {
        Ok(bill) => bill,
        Err(e) => return (account, vec![bill_outcome("issue a bill", &e)]),
    };
    let category = Category::Hospital.code();
    let own_part = amount - insured;
    let paid_by_phone = match (tender, account.as_mut()) {
        (Tender::Cash, _) | (_, None) => false,
        (_, Some(account)) => {
            if let Some(topped) = top_up_for(context, account, own_part, &format!("d{day}n{number}")).await {
                outcomes.push(topped);
            }
            match bills.pay(&account.resident, bill.id, None).await {
                Ok(_) => {
                    account.balance -= own_part;
                    outcomes.push(Ok(Outcome::BillPaid { category, method: "bill", amount }));
                    true
                }
                Err(e) => {
                    outcomes.push(bill_outcome("pay a bill", &e));
                    false
                }
            }
        }
    };
    if !paid_by_phone {
        match bills.pay_cash(hospital.id, &out_bill_no, own_part).await {
            Ok(_) => outcomes.push(Ok(Outcome::BillPaid { category, method: "cash", amount })),
            Err(e) => outcomes.push(bill_outcome("pay a bill in cash", &e)),
        }
    }
    (account, outcomes)
}

/// Tops the wallet up before paying `amount` when it holds less: to a round hundred yuan
/// above what is needed.
async fn top_up_for(context: &Context, account: &mut Account, amount: i64, key: &str) -> Option<Result<Outcome, SimError>> {
    let top = top_up_needed(account.balance, amount)?;
    Some(top_up(context, account, top, key).await)
}

/// What a wallet holding `balance` tops up before paying `amount`: nothing when it covers it,
/// else to a round hundred yuan above what is needed.
pub(crate) fn top_up_needed(balance: i64, amount: i64) -> Option<i64> {
    let needed = (balance < amount).then(|| amount - balance + 20_000)?;
    Some((needed + 9_999) / 10_000 * 10_000)
}

/// A new wallet's first top-up: 200 to 1,000 yuan, drawn for the person.
pub(crate) fn first_top_up(seed: u64, preset: &crate::CityPreset, index: u64) -> i64 {
    10_000 * (2 + rng_for(seed, &[tag::PERSON, u64::from(preset.code), index, 2]).i64(0..9))
}

/// A hospital visit costing `amount`: (registration fee, medicine, the insurance fund's part).
/// The fund's part, half the medicine, is claimed only from the patient's phone; at the
/// counter they pay it all.
pub(crate) fn visit_parts(amount: i64, by_phone: bool) -> (i64, i64, i64) {
    let registration = 1_000.min(amount / 2);
    let medicine = amount - registration;
    (registration, medicine, if by_phone { medicine / 2 } else { 0 })
}

/// A social-security contribution of the simulated year, from the wallet: one's own, or a
/// relative's (the next person of the city).
async fn contribute(context: &Context, person: &Person, account: Option<Account>, for_relative: bool, day: u32) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let Some(mut account) = account else { return (None, Vec::new()) };
    let preset = context.cities[person.city];
    let mut outcomes = Vec::new();
    let insured = crate::world::resident_id_number(preset.code, person.index + u64::from(for_relative));
    if let Some(topped) = top_up_for(context, &mut account, crate::CONTRIBUTION_FEN, &format!("d{day}ss")).await {
        outcomes.push(topped);
    }
    match context.at(person.city).bills.contribute(&account.resident, preset.code, &insured, crate::CONTRIBUTION_YEAR).await {
        Ok(payment) => {
            account.balance -= payment.amount;
            outcomes.push(Ok(Outcome::BillPaid { category: Category::SocialSecurity.code(), method: "bill", amount: payment.amount }));
        }
        Err(e) => outcomes.push(bill_outcome("contribute", &e)),
    }
    (Some(account), outcomes)
}

/// A parent pays their child's tuition bill (linked at set-up) from the wallet.
async fn pay_tuition(context: &Context, person: &Person, account: Option<Account>, item: Option<usize>, day: u32) -> (Option<Account>, Vec<Result<Outcome, SimError>>) {
    let Some(mut account) = account else { return (None, Vec::new()) };
    let bill = context.tuition.lock().ok().and_then(|bills| bills.get(&(person.city, person.index)).copied());
    let Some(bill) = bill else { return (Some(account), Vec::new()) };
    let mut outcomes = Vec::new();
    let most: i64 = crate::TUITION_ITEMS.iter().map(|(_, fen)| fen).sum();
    if let Some(topped) = top_up_for(context, &mut account, most, &format!("d{day}t")).await {
        outcomes.push(topped);
    }
    let items = item.map(|i| [i]);
    match context.at(person.city).bills.pay(&account.resident, bill, items.as_ref().map(|i| i.as_slice())).await {
        Ok(payment) => {
            account.balance -= payment.amount;
            outcomes.push(Ok(Outcome::BillPaid { category: Category::School.code(), method: "bill", amount: payment.amount }));
        }
        Err(e) => outcomes.push(bill_outcome("pay tuition", &e)),
    }
    (Some(account), outcomes)
}

fn bill_outcome(what: &'static str, error: &BillError) -> Result<Outcome, SimError> {
    if fatal(error.code()) {
        return Err(service(what, error));
    }
    Ok(Outcome::Refused { what, code: error.code() })
}

/// Pays `merchant` of city number `city` from `account`'s wallet (of its own city, on its own
/// shard): at the merchant's till by payment code, or by scanning a QR code on the phone. Across
/// shards, through the country (`citypay-country`), as the API pays.
async fn pay(
    context: &Context,
    city: usize,
    account: &Account,
    merchant: &crate::Business,
    new: &NewTrade,
    tender: Tender,
) -> Result<(), CheckoutError> {
    let (home, till) = (context.at(account.home), context.at(city));
    let key = format!("sim-pay-{}", new.out_trade_no);
    let scan = |payload: &str, typed: Option<i64>| {
        let (payload, resident) = (payload.to_owned(), account.resident.clone());
        async move {
            match &home.country {
                Some(country) => country.pay_qr(&home.checkout, &resident, &payload, typed, &key).await,
                None => home.checkout.pay_qr(&resident, &payload, typed, &key).await,
            }
        }
    };
    match tender {
        Tender::Code => {
            let Some((device, secret)) = &account.device else {
                return Err(CheckoutError::InvalidCode("no enrolled phone".into()));
            };
            let now = till.directory.clock().now().unix_seconds();
            let code = PaymentCode::generate(*device, secret, now);
            match &till.country {
                Some(country) => country.pay_with_code(&till.checkout, merchant.id, new, &code).await.map(|_| ()),
                None => till.checkout.pay_with_code(merchant.id, new, &code).await.map(|_| ()),
            }
        }
        Tender::DynamicQr => {
            let (_, payload) = till.checkout.create_trade(merchant.id, new).await?;
            scan(&payload, None).await.map(|_| ())
        }
        Tender::StaticQr => scan(&merchant.static_qr, Some(new.amount)).await.map(|_| ()),
        Tender::Cash => Ok(()),
    }
}

pub(crate) fn category_code(kind: BusinessKind) -> &'static str {
    match kind {
        BusinessKind::Shop => Category::Retail.code(),
        BusinessKind::Restaurant => Category::Restaurant.code(),
        BusinessKind::Hospital => Category::Hospital.code(),
        BusinessKind::Bureau => Category::SocialSecurity.code(),
        BusinessKind::School => Category::School.code(),
    }
}

pub(crate) fn method_code(tender: Tender) -> &'static str {
    match tender {
        Tender::Code => "payment_code",
        Tender::DynamicQr | Tender::StaticQr => "qr",
        Tender::Cash => "cash",
    }
}

pub(crate) fn subject(kind: BusinessKind) -> &'static str {
    match kind {
        BusinessKind::Shop => "购物",
        BusinessKind::Restaurant => "餐饮",
        BusinessKind::Hospital => "挂号及药费",
        BusinessKind::Bureau => "社会保险费",
        BusinessKind::School => "学费",
    }
}
