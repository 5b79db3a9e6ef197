//! Riding in a simulated city: each city's transit operator with a validator at every station
//! of the fare feed's lines, riders' phones showing ride codes, validators checking them
//! offline and uploading the taps at night, and the fare run the morning after.

use std::sync::Mutex;

use citypay_checkout::NewTrade;
use citypay_directory::{Category, NewMerchant};
use citypay_ride::{Direction, Gate, Policy, RiderDevice, RiderKey, Validator};
use citypay_transit::{TransitError, ValidatorInfo};

use crate::presets::CityPreset;
use crate::tally::Outcome;
use crate::world::rng_for;
use crate::{Account, Context, SimError, service};

/// A bus fare paid in cash, in fen (flat, as on Tianjin's city buses).
pub(crate) const BUS_CASH_FEN: i64 = 200;
/// Minutes between two metro stations.
const MINUTES_PER_STATION: u32 = 3;

/// A validator: its registration and the device state (replay memory, queued taps).
#[derive(Debug)]
pub(crate) struct SimValidator {
    pub(crate) info: ValidatorInfo,
    device: Mutex<Validator>,
}

/// A line of the feed and the validators along it, in stop order.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) validators: Vec<usize>,
}

/// One city's transit.
#[derive(Debug)]
pub(crate) struct CityTransit {
    pub(crate) operator: u64,
    pub(crate) buses: Vec<Line>,
    pub(crate) metro: Vec<Line>,
    pub(crate) validators: Vec<SimValidator>,
}

/// One leg of a journey.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RideLeg {
    Bus { line: usize },
    Metro { line: usize, from: usize, to: usize },
}

/// Onboards the city's transit operator and a validator at every stop of every line.
pub(crate) async fn build(context: &Context, city: usize, preset: &CityPreset) -> Result<CityTransit, SimError> {
    let services = context.at(city);
    let transit = &services.transit;
    let new = crate::world::new_merchant(preset, city, crate::world::BusinessKind::Shop, 999_999);
    let operator = NewMerchant {
        name: format!("{}公交地铁集团", preset.name_zh),
        mcc: "4111".into(),
        category: Category::Transit,
        uscc: crate::world::transit_uscc(preset, city),
        ..new
    };
    let operator_id = crate::onboard_or_find(&services.directory, &operator).await?;
    let mut out = CityTransit { operator: operator_id, buses: Vec::new(), metro: Vec::new(), validators: Vec::new() };
    let routes: Vec<(String, bool)> = transit.feed().routes().map(|(route, _, gated)| (route.to_owned(), gated)).collect();
    for (route, gated) in routes {
        let stops: Vec<String> = transit.feed().route_stops(&route).to_vec();
        let mut line = Line { validators: Vec::new() };
        for stop in &stops {
            let key = RiderKey::from_seed(seed_bytes(context.seed, &[crate::world::tag::VALIDATOR_KEY, u64::from(preset.code), out.validators.len() as u64]));
            // A continued run finds the validators of the first and numbers on from its taps.
            let found = transit.validator_by_device_key(key.public_bytes()).await.map_err(|e| service("finding a validator", &e))?;
            let (info, uploaded) = match found {
                Some(found) => found,
                None => {
                    let info = transit.register_validator(operator_id, &route, stop, key.public_bytes()).await;
                    (info.map_err(|e| service("registering a validator", &e))?, 0)
                }
            };
            line.validators.push(out.validators.len());
            let policy = Policy { fare_estimate_fen: transit.fare_estimate(&route, stop), ..Policy::default() };
            let mut device = Validator::new(transit.keyring(), policy);
            device.continue_sequence(info.id, uploaded);
            out.validators.push(SimValidator { info, device: Mutex::new(device) });
            if !gated {
                break; // a bus has one validator, at the door
            }
        }
        if gated { out.metro.push(line) } else { out.buses.push(line) }
    }
    Ok(out)
}

fn seed_bytes(seed: u64, parts: &[u64]) -> [u8; 32] {
    let mut rng = rng_for(seed, parts);
    let mut bytes = [0u8; 32];
    bytes.iter_mut().for_each(|b| *b = rng.u8(..));
    bytes
}

/// A phone for a registered commuter: a key from the seed and a credential for it.
pub(crate) async fn enrol(context: &Context, account: &mut Account, city: &CityPreset, index: u64) -> Result<Outcome, SimError> {
    let seed = seed_bytes(context.seed, &[crate::world::tag::RIDER_KEY, u64::from(city.code), index]);
    let key = RiderKey::from_seed(seed);
    account.rider_seed = Some(seed);
    match context.at(account.home).transit.issue_credential(&account.resident, key.public_bytes()).await {
        Ok(credential) => {
            account.ride_until = credential.terms.valid_until;
            account.account_ref = credential.terms.account_ref;
            account.rider = Some(RiderDevice::new(key, credential));
            Ok(Outcome::Enrolled)
        }
        Err(e) => transit_outcome("enrol rider", &e),
    }
}

fn transit_outcome(what: &'static str, error: &TransitError) -> Result<Outcome, SimError> {
    if error.code() == "unavailable" {
        return Err(service(what, error));
    }
    Ok(Outcome::Refused { what, code: error.code() })
}

/// Makes sure the rider's credential covers the day: renews it, paying arrears first.
async fn renew(context: &Context, account: &mut Account, now: u32, outcomes: &mut Vec<Result<Outcome, SimError>>) {
    if account.ride_until > now.saturating_add(16 * 3600) {
        return;
    }
    let transit = &context.at(account.home).transit;
    let Some(key_seed) = account.rider_seed else { return };
    let key = RiderKey::from_seed(key_seed);
    let mut issued = transit.issue_credential(&account.resident, key.public_bytes()).await;
    if matches!(issued, Err(TransitError::InArrears)) {
        // Pay what is owed, topping up if the wallet is short.
        let mut paid = transit.pay_arrears(&account.resident).await;
        if matches!(paid, Err(TransitError::Refused(_))) {
            outcomes.push(crate::day::top_up(context, account, 10_000, &format!("arrears-{now}")).await);
            paid = transit.pay_arrears(&account.resident).await;
        }
        match paid {
            Ok(fen) if fen > 0 => outcomes.push(Ok(Outcome::ArrearsPaid { amount: fen })),
            Ok(_) => {}
            Err(e) => outcomes.push(transit_outcome("pay arrears", &e)),
        }
        issued = transit.issue_credential(&account.resident, key.public_bytes()).await;
    }
    match issued {
        Ok(credential) => {
            account.ride_until = credential.terms.valid_until;
            account.account_ref = credential.terms.account_ref;
            match account.rider.as_mut() {
                Some(device) => device.set_credential(credential),
                // Refused at enrolment (in arrears, in a continued run): the phone gets it now.
                None => account.rider = Some(RiderDevice::new(key, credential)),
            }
        }
        Err(e) => outcomes.push(transit_outcome("renew ride credential", &e)),
    }
}

fn metro_cash_fen(stations: usize) -> i64 {
    match stations {
        0..=5 => 200,
        6..=10 => 300,
        11..=16 => 400,
        _ => 500,
    }
}

/// A journey of `legs` starting at `start` (Unix seconds): by ride code where the person can,
/// else with cash (bus fare, metro single-journey token).
pub(crate) async fn journey(
    context: &Context,
    city: usize,
    account: &mut Option<Account>,
    by_phone: bool,
    legs: &[RideLeg],
    start: u64,
    trade_prefix: &str,
) -> Vec<Result<Outcome, SimError>> {
    let mut outcomes = Vec::new();
    let network = &context.transit[city];
    let mut t = u32::try_from(start).unwrap_or(u32::MAX);
    if by_phone && let Some(account) = account.as_mut() {
        renew(context, account, t, &mut outcomes).await;
    }
    for (n, leg) in legs.iter().enumerate() {
        let phone = account.as_mut().filter(|_| by_phone).and_then(|a| a.rider.as_mut());
        let (validated, cash_fen, minutes) = match *leg {
            RideLeg::Bus { line } => {
                let validator = &network.validators[network.buses[line].validators[0]];
                let ok = phone.is_some_and(|device| tap(validator, device, t, Direction::In));
                (ok, BUS_CASH_FEN, 25)
            }
            RideLeg::Metro { line, from, to } => {
                let stations = from.abs_diff(to);
                let minutes = MINUTES_PER_STATION * u32::try_from(stations).unwrap_or(1) + 4;
                let gates = &network.metro[line].validators;
                let ok = match phone {
                    Some(device) => {
                        let entered = tap(&network.validators[gates[from]], device, t, Direction::In);
                        entered && tap(&network.validators[gates[to]], device, t + minutes * 60, Direction::Out)
                    }
                    None => false,
                };
                (ok, metro_cash_fen(stations), minutes)
            }
        };
        if validated {
            outcomes.push(Ok(Outcome::Ride));
        } else {
            let sale = NewTrade {
                out_trade_no: format!("{trade_prefix}l{n}"),
                amount: cash_fen,
                subject: "车票".into(),
                timeout_s: None,
                notify: None,
                cashier: None,
            };
            match context.at(city).checkout.record_cash_sale(network.operator, &sale).await {
                Ok(_) => outcomes.push(Ok(Outcome::Payment { category: "transit", method: "cash", amount: cash_fen })),
                Err(e) => outcomes.push(Ok(Outcome::Refused { what: "cash fare", code: e.code() })),
            }
        }
        t += (minutes + 8) * 60;
    }
    outcomes
}

/// Shows a fresh code to a validator at `t`.
fn tap(validator: &SimValidator, device: &mut RiderDevice, t: u32, direction: Direction) -> bool {
    let code = device.next_code(t).encode();
    let gate = Gate { validator_id: validator.info.id, stop_or_route: 0, direction };
    match validator.device.lock() {
        Ok(mut device) => device.validate(&code, t, gate).is_ok(),
        Err(_) => false,
    }
}

/// Gives every validator of every city its shard's current deny list (they download it each
/// morning).
pub(crate) async fn download_deny_list(context: &Context) -> Result<(), SimError> {
    for (index, city) in context.transit.iter().enumerate() {
        let denied = context.at(index).transit.deny_list().await.map_err(|e| service("the deny list", &e))?;
        let Ok(mut lists) = context.denied.lock() else { return Ok(()) };
        let before = lists.entry(index).or_default();
        for validator in &city.validators {
            if let Ok(mut device) = validator.device.lock() {
                // Riders who paid since the last list travel again.
                for account in before.iter().filter(|a| !denied.contains(a)) {
                    device.allow_account(*account);
                }
                for account in &denied {
                    device.deny_account(*account);
                }
            }
        }
        *before = denied;
    }
    Ok(())
}

/// At night: every validator uploads the taps it queued.
pub(crate) async fn upload_taps(context: &Context) -> Result<u64, SimError> {
    let mut stored = 0;
    for (index, city) in context.transit.iter().enumerate() {
        for validator in &city.validators {
            let taps = match validator.device.lock() {
                Ok(mut device) => device.drain_taps(),
                Err(_) => Vec::new(),
            };
            if taps.is_empty() {
                continue;
            }
            let report = context.at(index).transit.upload_taps(&validator.info, &taps).await.map_err(|e| service("uploading taps", &e))?;
            // A simulated validator's taps are all true: a refusal is the platform's bug.
            if let Some((sequence, refusal)) = report.refused.first() {
                return Err(SimError::Service { action: "uploading taps", message: format!("tap {sequence} refused: {}", refusal.code()) });
            }
            stored += report.stored;
        }
    }
    Ok(stored)
}
