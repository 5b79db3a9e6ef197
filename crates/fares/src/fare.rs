//! Pricing a rider's taps: pair them into legs, price each leg, chain transfers, cap the day.

use crate::feed::{Feed, LegRule, MediaType, Price, TransferRule};
use crate::money::format_fen;
use crate::tap::{DayFares, Direction, Leg, Tap, TripFare, Unpriced, service_day};
use std::collections::BTreeMap;

/// A leg before pricing.
struct Raw {
    tap_in: Tap,
    tap_out: Option<Tap>,
    network_id: String,
    gated: bool,
}

/// A priced leg and the state a transfer to the next leg needs.
struct Priced {
    leg: Leg,
    group: Option<String>,
    /// The medium's discount on this product.
    percent: u8,
    /// Transfers already taken in this leg's chain.
    chain_transfers: i64,
}

/// Prices a rider's taps. Taps may come in any order: they are sorted first, so the same taps
/// always give the same fares. Several service days may be mixed; the cap applies per day.
pub fn fare_day(feed: &Feed, rider_taps: &[Tap]) -> DayFares {
    let mut taps = rider_taps.to_vec();
    taps.sort();
    let mut out = DayFares::default();
    let raws = pair_taps(feed, &taps, &mut out.unpriced);
    let mut legs = Vec::new();
    for raw in raws {
        match price_leg(feed, raw) {
            Ok(leg) => legs.push(leg),
            Err(unpriced) => out.unpriced.push(unpriced),
        }
    }
    out.trips = chain_and_cap(feed, legs);
    out.total_fen = out.trips.iter().map(|t| t.charged_fen).sum();
    out
}

/// The tap's network, or why the tap cannot be priced.
fn network_of(feed: &Feed, tap: &Tap) -> Result<String, String> {
    if !feed.stops.contains(&tap.stop_id) {
        return Err(format!("unknown stop `{}`", tap.stop_id));
    }
    if feed.medium(&tap.media.0).is_none() {
        return Err(format!("unknown fare medium `{}`", tap.media.0));
    }
    let route = feed.routes.get(&tap.route_id);
    let route = route.ok_or_else(|| format!("unknown route `{}`", tap.route_id))?;
    route
        .network_id
        .clone()
        .ok_or_else(|| format!("route `{}` has no network", tap.route_id))
}

fn unpriced(tap: &Tap, reason: impl Into<String>) -> Unpriced {
    Unpriced {
        tap: tap.clone(),
        reason: reason.into(),
    }
}

/// Turns sorted taps into legs: single taps stand alone; on networks with
/// `tap_out_required` a tap-in is paired with the next tap-out on the same network and service
/// day. Any other tap in between, or the end of the service day, leaves it without a tap-out.
fn pair_taps(feed: &Feed, taps: &[Tap], unpriced_taps: &mut Vec<Unpriced>) -> Vec<Raw> {
    let mut raws = Vec::new();
    let mut open: Option<Raw> = None;
    for tap in taps {
        let network_id = match network_of(feed, tap) {
            Ok(n) => n,
            Err(why) => {
                unpriced_taps.push(unpriced(tap, why));
                continue;
            }
        };
        let gated = feed.networks.get(&network_id) == Some(&true);
        let closes = |o: &mut Raw| {
            let same_day = service_day(o.tap_in.time_unix_s) == service_day(tap.time_unix_s);
            !(same_day && gated && tap.direction == Direction::Out && o.network_id == network_id)
        };
        raws.extend(open.take_if(closes));
        let raw = Raw {
            tap_in: tap.clone(),
            tap_out: None,
            network_id,
            gated,
        };
        match (gated, tap.direction) {
            (true, Direction::In) => open = Some(raw),
            (false, Direction::In) => raws.push(raw),
            (true, Direction::Out) => match open.take() {
                Some(o) => raws.push(Raw {
                    tap_out: Some(tap.clone()),
                    ..o
                }),
                None => unpriced_taps.push(unpriced(tap, "tap-out without a tap-in")),
            },
            (false, Direction::Out) => {
                unpriced_taps.push(unpriced(tap, "tap-out on a network without tap-out"));
            }
        }
    }
    raws.extend(open);
    raws
}

fn position(feed: &Feed, route_id: &str, stop_id: &str) -> Option<usize> {
    feed.routes
        .get(route_id)?
        .stops
        .iter()
        .position(|s| s == stop_id)
}

/// Stations from `a` to `b`: on one line, the difference of their positions; across lines,
/// the shortest way through a stop both lines share (an interchange).
fn stations(feed: &Feed, a: &Tap, b: &Tap) -> Option<i64> {
    let from = position(feed, &a.route_id, &a.stop_id)?;
    if let Some(to) = position(feed, &a.route_id, &b.stop_id) {
        return i64::try_from(from.abs_diff(to)).ok();
    }
    let to = position(feed, &b.route_id, &b.stop_id)?;
    let line_a = &feed.routes.get(&a.route_id)?.stops;
    let via = line_a.iter().enumerate().filter_map(|(i, stop)| {
        let j = position(feed, &b.route_id, stop)?;
        Some(from.abs_diff(i) + j.abs_diff(to))
    });
    via.min().and_then(|n| i64::try_from(n).ok())
}

fn rule_matches(feed: &Feed, rule: &LegRule, raw: &Raw, to_stop: &str, count: Option<i64>) -> bool {
    let network_ok = rule
        .network_id
        .as_ref()
        .is_none_or(|n| *n == raw.network_id);
    let banded = rule.min_stations.is_some() || rule.max_stations.is_some();
    let band_ok = match count {
        Some(c) => {
            rule.min_stations.is_none_or(|lo| c >= lo) && rule.max_stations.is_none_or(|hi| c <= hi)
        }
        None => !banded,
    };
    network_ok
        && band_ok
        && feed.in_area(&raw.tap_in.stop_id, rule.from_area_id.as_ref())
        && feed.in_area(to_stop, rule.to_area_id.as_ref())
}

/// The highest-priority matching rule whose product has a price for the medium (the first in
/// file order among equals), with that price.
fn best_rule<'f>(
    feed: &'f Feed,
    raw: &Raw,
    to_stop: &str,
    count: Option<i64>,
) -> Option<(&'f LegRule, Price)> {
    let mut best: Option<(&LegRule, Price)> = None;
    for rule in &feed.leg_rules {
        if !rule_matches(feed, rule, raw, to_stop, count) {
            continue;
        }
        let Some(price) = feed.product(&rule.product_id, &raw.tap_in.media.0) else {
            continue;
        };
        if best.is_none_or(|(b, _)| rule.priority > b.priority) {
            best = Some((rule, price));
        }
    }
    best
}

/// A missing tap-out: the dearest fare from the tap-in stop to any stop of its line.
fn line_maximum<'f>(feed: &'f Feed, raw: &Raw) -> Option<(&'f LegRule, Price)> {
    let from = position(feed, &raw.tap_in.route_id, &raw.tap_in.stop_id)?;
    let line = &feed.routes.get(&raw.tap_in.route_id)?.stops;
    let fares = line.iter().enumerate().filter_map(|(i, stop)| {
        let count = i64::try_from(from.abs_diff(i)).ok();
        best_rule(feed, raw, stop, count)
    });
    fares.fold(None, |best, (rule, price)| match best {
        Some((_, b)) if b.fen >= price.fen => best,
        _ => Some((rule, price)),
    })
}

fn price_leg(feed: &Feed, raw: Raw) -> Result<Priced, Unpriced> {
    let (count, found) = match (&raw.tap_out, raw.gated) {
        (Some(out), _) => {
            let count = stations(feed, &raw.tap_in, out);
            let count = count.ok_or_else(|| unpriced(out, "stations not on a line of the feed"))?;
            (
                Some(count),
                best_rule(feed, &raw, &out.stop_id, Some(count)),
            )
        }
        (None, true) => (None, line_maximum(feed, &raw)),
        (None, false) => (None, best_rule(feed, &raw, &raw.tap_in.stop_id, None)),
    };
    let (rule, price) =
        found.ok_or_else(|| unpriced(&raw.tap_in, "no fare rule for this leg and medium"))?;
    let leg = Leg {
        tap_out_missing: raw.gated && raw.tap_out.is_none(),
        tap_in: raw.tap_in,
        tap_out: raw.tap_out,
        network_id: raw.network_id,
        stations: count,
        product_id: rule.product_id.clone(),
        base_fen: price.fen,
        transfer_fen: 0,
        media_discount_fen: 0,
        cap_fen: 0,
        charged_fen: price.fen,
        cash: false,
    };
    let group = rule.leg_group_id.clone();
    Ok(Priced {
        leg,
        group,
        percent: price.discount_percent,
        chain_transfers: 0,
    })
}

fn departure(leg: &Leg) -> Option<i64> {
    Some(leg.tap_in.time_unix_s)
}

fn arrival(leg: &Leg) -> Option<i64> {
    match &leg.tap_out {
        Some(out) => Some(out.time_unix_s),
        None if leg.tap_out_missing => None,
        None => Some(leg.tap_in.time_unix_s),
    }
}

fn within_limit(rule: &TransferRule, prev: &Leg, next: &Leg) -> bool {
    let Some((limit, kind)) = rule.duration_limit else {
        return true;
    };
    let start = if kind <= 1 {
        departure(prev)
    } else {
        arrival(prev)
    };
    let end = if kind == 1 || kind == 2 {
        departure(next)
    } else {
        arrival(next)
    };
    start
        .zip(end)
        .is_some_and(|(s, e)| e >= s && e - s <= limit)
}

/// The next leg's amount after the first transfer rule that applies, if any.
fn transfer(feed: &Feed, prev: &Priced, next: &Priced) -> Option<i64> {
    let (p, n) = (&prev.leg, &next.leg);
    let same_day = service_day(p.tap_in.time_unix_s) == service_day(n.tap_in.time_unix_s);
    if p.cash || n.cash || p.tap_in.media != n.tap_in.media || !same_day {
        return None;
    }
    feed.transfer_rules.iter().find_map(|rule| {
        let group_ok =
            |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        let count_ok = rule
            .transfer_count
            .is_none_or(|c| c < 0 || prev.chain_transfers < c);
        if !(group_ok(&rule.from_group, &prev.group)
            && group_ok(&rule.to_group, &next.group)
            && count_ok)
        {
            return None;
        }
        if !within_limit(rule, p, n) {
            return None;
        }
        let ab = match &rule.product_id {
            Some(id) => feed.product(id, &n.tap_in.media.0)?.fen,
            None => 0,
        };
        let amount = match rule.transfer_type {
            0 => ab,
            1 => n.base_fen + ab,
            _ => ab - p.base_fen,
        };
        Some(amount.max(0))
    })
}

/// Applies transfers, media discounts and the daily cap in time order, and groups legs into
/// trips.
fn chain_and_cap(feed: &Feed, legs: Vec<Priced>) -> Vec<TripFare> {
    let cap = feed.day_cap_fen();
    let mut spent: BTreeMap<i64, i64> = BTreeMap::new();
    let mut trips: Vec<TripFare> = Vec::new();
    let mut prev: Option<Priced> = None;
    for mut next in legs {
        let medium = feed.medium(&next.leg.tap_in.media.0);
        next.leg.cash = medium.is_none_or(|m| m.kind == MediaType::Cash);
        let joined = prev
            .as_ref()
            .and_then(|p| transfer(feed, p, &next).map(|a| (a, p.chain_transfers)));
        if !next.leg.cash {
            let after = joined.map_or(next.leg.base_fen, |(a, _)| a);
            discount(&mut next.leg, after, next.percent);
            let day = service_day(next.leg.tap_in.time_unix_s);
            apply_cap(&mut next.leg, cap, spent.entry(day).or_default());
        }
        if let (Some((_, n)), Some(trip)) = (joined, trips.last_mut()) {
            next.chain_transfers = n + 1;
            add_leg(trip, next.leg.clone());
        } else {
            let mut trip = new_trip(&next.leg);
            add_leg(&mut trip, next.leg.clone());
            trips.push(trip);
        }
        prev = Some(next);
    }
    trips
}

fn discount(leg: &mut Leg, after_transfer: i64, percent: u8) {
    leg.transfer_fen = leg.base_fen - after_transfer;
    // Rounded down to the fen, in the rider's favour.
    let charged = after_transfer * (100 - i64::from(percent)) / 100;
    leg.media_discount_fen = after_transfer - charged;
    leg.charged_fen = charged;
}

fn apply_cap(leg: &mut Leg, cap: Option<i64>, spent: &mut i64) {
    if let Some(cap) = cap {
        let charged = leg.charged_fen.min((cap - *spent).max(0));
        leg.cap_fen = leg.charged_fen - charged;
        leg.charged_fen = charged;
    }
    *spent += leg.charged_fen;
}

fn new_trip(leg: &Leg) -> TripFare {
    TripFare {
        legs: Vec::new(),
        service_day: service_day(leg.tap_in.time_unix_s),
        base_fen: 0,
        discount_fen: 0,
        charged_fen: 0,
        reason: String::new(),
    }
}

fn add_leg(trip: &mut TripFare, leg: Leg) {
    trip.base_fen += leg.base_fen;
    trip.charged_fen += leg.charged_fen;
    trip.discount_fen = trip.base_fen - trip.charged_fen;
    if !trip.reason.is_empty() {
        trip.reason.push_str("; then ");
    }
    trip.reason.push_str(&leg_reason(&leg));
    trip.legs.push(leg);
}

fn leg_reason(leg: &Leg) -> String {
    let what = match (leg.stations, leg.tap_out_missing) {
        (Some(n), _) => format!("{} {n} stations", leg.network_id),
        (None, true) => format!("{} no tap-out, line maximum", leg.network_id),
        (None, false) => leg.network_id.clone(),
    };
    let mut reason = format!("{what} {} ({})", format_fen(leg.base_fen), leg.product_id);
    if leg.cash {
        reason.push_str(", cash: no discounts, not capped");
    }
    for (label, fen) in [
        ("transfer", leg.transfer_fen),
        ("medium", leg.media_discount_fen),
        ("daily cap", leg.cap_fen),
    ] {
        if fen != 0 {
            reason.push_str(&format!(", {label} -{}", format_fen(fen)));
        }
    }
    reason
}
