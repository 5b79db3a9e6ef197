//! Counting what a simulation did.

use std::collections::BTreeMap;

use citypay_dashboard::Counter;
use serde::Serialize;

/// What happened, per city (by name). Sums only, so it does not depend on the order in
/// which concurrent actions finished.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Successful payments: city → category → method (`qr`, `payment_code`, `cash`).
    pub payments: BTreeMap<String, BTreeMap<String, BTreeMap<String, Counter>>>,
    /// Refunds: city → counter.
    pub refunds: BTreeMap<String, Counter>,
    /// Top-ups from bank cards: city → counter.
    pub top_ups: BTreeMap<String, Counter>,
    /// New real-name wallets: city → count.
    pub registrations: BTreeMap<String, u64>,
    /// Refused actions: city → "what: error code" → count.
    pub refused: BTreeMap<String, BTreeMap<String, u64>>,
    /// Bus boardings and metro rides by ride code, validated offline: city → count.
    pub rides: BTreeMap<String, u64>,
    /// Riders with a ride credential (enrolled phones): city → count.
    pub riders_enrolled: BTreeMap<String, u64>,
    /// Arrears paid: city → counter.
    pub arrears_paid: BTreeMap<String, Counter>,
    /// Bills paid (by phone or in cash; the amount includes the insurance fund's part):
    /// city → counter. Their payments are in `payments` too.
    pub bills_paid: BTreeMap<String, Counter>,
    /// Merchants' payouts: city → counter.
    pub settled: BTreeMap<String, Counter>,
    /// Payments of travellers at shops of another city, by their home city: city → counter.
    /// (Their payments are in `payments` under the shop's city.)
    pub paid_away: BTreeMap<String, Counter>,
    /// Money sent to family in another city: sender's city → counter.
    pub sent_to_family: BTreeMap<String, Counter>,
    /// Payments and transfers whose two sides live on different shards, by the payer's city:
    /// city → counter.
    pub across_shards: BTreeMap<String, Counter>,
}

/// The outcome of one step of a simulated action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Payment { category: &'static str, method: &'static str, amount: i64 },
    Refund { amount: i64 },
    TopUp { amount: i64 },
    Registered,
    Refused { what: &'static str, code: &'static str },
    Ride,
    Enrolled,
    ArrearsPaid { amount: i64 },
    /// A rider's fared day: `count` trips costing `amount`.
    Fares { count: u64, amount: i64 },
    /// A bill paid by `method` (`bill` by phone, or `cash`).
    BillPaid { category: &'static str, method: &'static str, amount: i64 },
    /// A merchant's payout.
    Settled { amount: i64 },
    /// A payment at a shop of city `city`, by a traveller.
    PaidAway { city: &'static str, category: &'static str, method: &'static str, amount: i64 },
    /// Money sent to family in another city.
    SentToFamily { amount: i64 },
    /// A payment or transfer that crossed shards.
    AcrossShards { amount: i64 },
}

impl Tally {
    pub(crate) fn add(&mut self, city: &str, outcome: Outcome) {
        match outcome {
            Outcome::Payment { category, method, amount } => self
                .payments
                .entry(city.to_owned())
                .or_default()
                .entry(category.to_owned())
                .or_default()
                .entry(method.to_owned())
                .or_default()
                .add(amount),
            Outcome::Refund { amount } => self.refunds.entry(city.to_owned()).or_default().add(amount),
            Outcome::TopUp { amount } => self.top_ups.entry(city.to_owned()).or_default().add(amount),
            Outcome::Registered => *self.registrations.entry(city.to_owned()).or_default() += 1,
            Outcome::Ride => *self.rides.entry(city.to_owned()).or_default() += 1,
            Outcome::Enrolled => *self.riders_enrolled.entry(city.to_owned()).or_default() += 1,
            Outcome::ArrearsPaid { amount } => self.arrears_paid.entry(city.to_owned()).or_default().add(amount),
            Outcome::Fares { count, amount } => self
                .payments
                .entry(city.to_owned())
                .or_default()
                .entry("transit".to_owned())
                .or_default()
                .entry("ride_code".to_owned())
                .or_default()
                .merge(Counter { count, amount }),
            Outcome::BillPaid { category, method, amount } => {
                self.bills_paid.entry(city.to_owned()).or_default().add(amount);
                self.add(city, Outcome::Payment { category, method, amount });
            }
            Outcome::Settled { amount } => self.settled.entry(city.to_owned()).or_default().add(amount),
            Outcome::PaidAway { city: shop_city, category, method, amount } => {
                self.paid_away.entry(city.to_owned()).or_default().add(amount);
                self.add(shop_city, Outcome::Payment { category, method, amount });
            }
            Outcome::SentToFamily { amount } => self.sent_to_family.entry(city.to_owned()).or_default().add(amount),
            Outcome::AcrossShards { amount } => self.across_shards.entry(city.to_owned()).or_default().add(amount),
            Outcome::Refused { what, code } => {
                *self.refused.entry(city.to_owned()).or_default().entry(format!("{what}: {code}")).or_default() += 1;
            }
        }
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        for (city, categories) in &other.payments {
            for (category, methods) in categories {
                for (method, counter) in methods {
                    self.payments
                        .entry(city.clone())
                        .or_default()
                        .entry(category.clone())
                        .or_default()
                        .entry(method.clone())
                        .or_default()
                        .merge(*counter);
                }
            }
        }
        for (city, counter) in &other.refunds {
            self.refunds.entry(city.clone()).or_default().merge(*counter);
        }
        for (city, counter) in &other.top_ups {
            self.top_ups.entry(city.clone()).or_default().merge(*counter);
        }
        for (city, n) in &other.registrations {
            *self.registrations.entry(city.clone()).or_default() += n;
        }
        for (city, n) in &other.rides {
            *self.rides.entry(city.clone()).or_default() += n;
        }
        for (city, n) in &other.riders_enrolled {
            *self.riders_enrolled.entry(city.clone()).or_default() += n;
        }
        for (city, counter) in &other.arrears_paid {
            self.arrears_paid.entry(city.clone()).or_default().merge(*counter);
        }
        for (city, counter) in &other.bills_paid {
            self.bills_paid.entry(city.clone()).or_default().merge(*counter);
        }
        for (field, theirs) in [(&mut self.settled, &other.settled), (&mut self.paid_away, &other.paid_away), (&mut self.sent_to_family, &other.sent_to_family), (&mut self.across_shards, &other.across_shards)] {
            for (city, counter) in theirs {
                field.entry(city.clone()).or_default().merge(*counter);
            }
        }
        for (city, codes) in &other.refused {
            for (code, n) in codes {
                *self.refused.entry(city.clone()).or_default().entry(code.clone()).or_default() += n;
            }
        }
    }

    /// Money movements and cash sales recorded: payments (shop, cash, and fared ride-code trips),
    /// refunds and top-ups.
    pub fn transactions(&self) -> u64 {
        let payments: u64 = self.payments.values().flat_map(|c| c.values()).flat_map(|m| m.values()).map(|c| c.count).sum();
        payments
            + self.refunds.values().map(|c| c.count).sum::<u64>()
            + self.top_ups.values().map(|c| c.count).sum::<u64>()
            + self.sent_to_family.values().map(|c| c.count).sum::<u64>()
    }
}
