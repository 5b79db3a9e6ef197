//! The numbers: per city, over a window of time, read from the services' own tables (trades,
//! refunds, bills and their payments, transit charges, payouts, residents, merchants), so the
//! dashboard shows what the books show.

use std::collections::BTreeMap;

use citypay_directory::{Directory, DirectoryError, int_at, text_at};
use citypay_store::Value;
use serde::{Deserialize, Serialize};

/// A count and an amount in fen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// How many.
    pub count: u64,
    /// How much, in fen.
    pub amount: i64,
}

impl Counter {
    /// Counts one more of `amount`.
    pub fn add(&mut self, amount: i64) {
        self.count += 1;
        self.amount += amount;
    }

    /// Adds another counter.
    pub fn merge(&mut self, other: Counter) {
        self.count += other.count;
        self.amount += other.amount;
    }
}

/// Payment methods that are not cash.
pub const MOBILE_METHODS: &[&str] = &["qr", "payment_code", "ride_code", "bill"];

/// How one city paid during a window (a day, usually).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CityStats {
    /// GB/T 2260 code.
    pub city_code: u32,
    /// Name.
    pub city: String,
    /// Payments made in the window: category → method → counter (refunds not deducted).
    pub payments: BTreeMap<String, BTreeMap<String, Counter>>,
    /// Refunds made in the window.
    pub refunds: Counter,
    /// Real-name residents registered by the end of the window.
    pub real_name_residents: u64,
    /// The same, by PBOC account class (`I`, `II`, `III`).
    pub residents_by_class: BTreeMap<String, u64>,
    /// Residents who paid by phone at least once in the window.
    pub active_payers: u64,
    /// Merchants and billers onboarded by the end of the window.
    pub merchants: u64,
    /// Of those, how many were paid by phone in the window.
    pub merchants_paid_by_phone: u64,
    /// Merchants that recorded a cash sale in the window.
    pub merchants_taking_cash: u64,
    /// Transit trips by ride code of the service days in the window (fared the morning after;
    /// their fares are the payments of category `transit`, method `ride_code`).
    pub transit_trips: u64,
    /// Riders who travelled by ride code in the window.
    pub transit_riders: u64,
    /// Bills paid in the window, by phone or in cash (their payments are also counted in
    /// `payments`, method `bill` or `cash`; the amount includes the insurance fund's part).
    pub bills_paid: Counter,
    /// Merchants' payouts of the days in the window (settled the morning after).
    pub settled: Counter,
}

impl CityStats {
    /// Payments by method, over all categories.
    pub fn by_method(&self) -> BTreeMap<String, Counter> {
        let mut methods: BTreeMap<String, Counter> = BTreeMap::new();
        for by_method in self.payments.values() {
            for (method, counter) in by_method {
                methods.entry(method.clone()).or_default().merge(*counter);
            }
        }
        methods
    }

    /// Payments by category, over all methods.
    pub fn by_category(&self) -> BTreeMap<String, Counter> {
        self.payments
            .iter()
            .map(|(category, methods)| {
                let mut total = Counter::default();
                methods.values().for_each(|c| total.merge(*c));
                (category.clone(), total)
            })
            .collect()
    }

    /// All payments.
    pub fn total(&self) -> Counter {
        let mut total = Counter::default();
        self.by_method().values().for_each(|c| total.merge(*c));
        total
    }

    /// Payments by phone (every method but cash).
    pub fn mobile(&self) -> Counter {
        let mut mobile = Counter::default();
        self.by_method().iter().filter(|(m, _)| MOBILE_METHODS.contains(&m.as_str())).for_each(|(_, c)| mobile.merge(*c));
        mobile
    }

    /// Share of payments made by phone, by count, in basis points (1/100 of a percent).
    pub fn cashless_share_by_count_bp(&self) -> u64 {
        basis_points(self.mobile().count, self.total().count)
    }

    /// Share of payments made by phone, by value, in basis points.
    pub fn cashless_share_by_value_bp(&self) -> u64 {
        basis_points(u64::try_from(self.mobile().amount).unwrap_or(0), u64::try_from(self.total().amount).unwrap_or(0))
    }

    /// Adds a later window's flows; stocks (residents, merchants) take the later value, and
    /// active counts the most active window.
    pub fn merge(&mut self, later: &CityStats) {
        for (category, methods) in &later.payments {
            for (method, counter) in methods {
                self.payments.entry(category.clone()).or_default().entry(method.clone()).or_default().merge(*counter);
            }
        }
        self.refunds.merge(later.refunds);
        self.real_name_residents = later.real_name_residents;
        self.residents_by_class = later.residents_by_class.clone();
        self.merchants = later.merchants;
        self.active_payers = self.active_payers.max(later.active_payers);
        self.merchants_paid_by_phone = self.merchants_paid_by_phone.max(later.merchants_paid_by_phone);
        self.merchants_taking_cash = self.merchants_taking_cash.max(later.merchants_taking_cash);
        self.transit_trips += later.transit_trips;
        self.transit_riders = self.transit_riders.max(later.transit_riders);
        self.bills_paid.merge(later.bills_paid);
        self.settled.merge(later.settled);
    }
}

/// `part / whole` in basis points, rounded down; 0 of 0 is 0.
pub fn basis_points(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    u64::try_from(u128::from(part) * 10_000 / u128::from(whole)).unwrap_or(10_000)
}

const PAYMENTS: &str = "SELECT t.city_code, m.category, t.method, COUNT(*), CAST(SUM(t.amount) AS BIGINT)
    FROM trades t JOIN merchants m ON m.id = t.merchant_id
    WHERE t.paid_at >= ?1 AND t.paid_at < ?2
    GROUP BY t.city_code, m.category, t.method";
const REFUNDS: &str = "SELECT t.city_code, COUNT(*), CAST(SUM(r.amount) AS BIGINT)
    FROM refunds r JOIN trades t ON t.id = r.trade_id
    WHERE r.created_at >= ?1 AND r.created_at < ?2 AND r.status = 'REFUND_SUCCESS'
    GROUP BY t.city_code";
const RESIDENTS: &str = "SELECT city_code, account_class, COUNT(*) FROM residents WHERE created_at < ?1
    GROUP BY city_code, account_class";
const ACTIVE: &str = "SELECT city_code, COUNT(DISTINCT payer) FROM (
        SELECT city_code, payer_resident AS payer FROM trades WHERE paid_at >= ?1 AND paid_at < ?2 AND payer_resident IS NOT NULL
        UNION ALL
        SELECT b.city_code, p.payer_resident FROM bill_payments p JOIN bills b ON b.id = p.bill_id
         WHERE p.paid_at >= ?1 AND p.paid_at < ?2 AND p.payer_resident IS NOT NULL
    ) paying GROUP BY city_code";
const MERCHANTS: &str = "SELECT city_code, COUNT(*) FROM merchants WHERE created_at < ?1 GROUP BY city_code";
const ACCEPTING: &str = "SELECT city_code, cash, COUNT(DISTINCT merchant) FROM (
        SELECT city_code, CASE WHEN method = 'cash' THEN 1 ELSE 0 END AS cash, merchant_id AS merchant FROM trades
         WHERE paid_at >= ?1 AND paid_at < ?2
        UNION ALL
        SELECT b.city_code, CASE WHEN p.method = 'cash' THEN 1 ELSE 0 END, p.biller_id FROM bill_payments p JOIN bills b ON b.id = p.bill_id
         WHERE p.paid_at >= ?1 AND p.paid_at < ?2
    ) taking GROUP BY city_code, cash";

const BILLS: &str = "SELECT b.city_code, b.category, CASE WHEN p.method = 'cash' THEN 'cash' ELSE 'bill' END, COUNT(*), CAST(SUM(p.amount) AS BIGINT)
    FROM bill_payments p JOIN bills b ON b.id = p.bill_id
    WHERE p.paid_at >= ?1 AND p.paid_at < ?2
    GROUP BY b.city_code, b.category, CASE WHEN p.method = 'cash' THEN 'cash' ELSE 'bill' END";
const SETTLED: &str = "SELECT m.city_code, COUNT(*), CAST(SUM(p.amount) AS BIGINT)
    FROM payouts p JOIN merchants m ON m.id = p.merchant_id
    WHERE p.day >= ?1 AND p.day < ?2 AND p.status = 'paid' GROUP BY m.city_code";

const TRANSIT: &str = "SELECT r.city_code, COUNT(*), CAST(SUM(c.trips) AS BIGINT), CAST(SUM(c.due) AS BIGINT)
    FROM transit_charges c JOIN ride_accounts a ON a.account_ref = c.account_ref JOIN residents r ON r.id = a.resident_id
    WHERE c.service_day >= ?1 AND c.service_day < ?2 GROUP BY r.city_code";

fn uint(row: &[Value], i: usize) -> Result<u64, DirectoryError> {
    u64::try_from(int_at(row, i)?).map_err(|_| DirectoryError::Storage("negative count".into()))
}

fn code(row: &[Value], i: usize) -> Result<u32, DirectoryError> {
    u32::try_from(int_at(row, i)?).map_err(|_| DirectoryError::Storage("city code".into()))
}

/// Every onboarded city's statistics for `[from, to)` (Unix seconds), in city-code order;
/// `only` restricts them to one city.
pub async fn collect(directory: &Directory, from: u64, to: u64, only: Option<u32>) -> Result<Vec<CityStats>, DirectoryError> {
    let window = || vec![Value::Int(i64::try_from(from).unwrap_or(i64::MAX)), Value::Int(i64::try_from(to).unwrap_or(i64::MAX))];
    let end = || vec![Value::Int(i64::try_from(to).unwrap_or(i64::MAX))];
    let mut cities: BTreeMap<u32, CityStats> = directory
        .cities()
        .await?
        .into_iter()
        .filter(|c| only.is_none_or(|o| o == c.code))
        .map(|c| (c.code, CityStats { city_code: c.code, city: c.name, ..CityStats::default() }))
        .collect();
    for row in directory.read(PAYMENTS, window()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            let counter = Counter { count: uint(&row, 3)?, amount: int_at(&row, 4)? };
            city.payments.entry(text_at(&row, 1)?).or_default().insert(text_at(&row, 2)?, counter);
        }
    }
    for row in directory.read(REFUNDS, window()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            city.refunds = Counter { count: uint(&row, 1)?, amount: int_at(&row, 2)? };
        }
    }
    for row in directory.read(RESIDENTS, end()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            let n = uint(&row, 2)?;
            city.real_name_residents += n;
            city.residents_by_class.insert(text_at(&row, 1)?, n);
        }
    }
    for row in directory.read(ACTIVE, window()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            city.active_payers = uint(&row, 1)?;
        }
    }
    for row in directory.read(MERCHANTS, end()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            city.merchants = uint(&row, 1)?;
        }
    }
    for row in directory.read(ACCEPTING, window()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            if int_at(&row, 1)? == 0 {
                city.merchants_paid_by_phone = uint(&row, 2)?;
            } else {
                city.merchants_taking_cash = uint(&row, 2)?;
            }
        }
    }
    for row in directory.read(BILLS, window()).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            let counter = Counter { count: uint(&row, 3)?, amount: int_at(&row, 4)? };
            city.payments.entry(text_at(&row, 1)?).or_default().entry(text_at(&row, 2)?).or_default().merge(counter);
            city.bills_paid.merge(counter);
        }
    }
    // Service and settlement days are numbered by their local date.
    let local_day = |t: u64| Value::Int(i64::try_from((t + 8 * 3_600) / 86_400).unwrap_or(i64::MAX));
    for row in directory.read(SETTLED, vec![local_day(from), local_day(to)]).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            city.settled = Counter { count: uint(&row, 1)?, amount: int_at(&row, 2)? };
        }
    }
    for row in directory.read(TRANSIT, vec![local_day(from), local_day(to)]).await? {
        if let Some(city) = cities.get_mut(&code(&row, 0)?) {
            city.transit_riders = uint(&row, 1)?;
            city.transit_trips = uint(&row, 2)?;
            let fares = Counter { count: city.transit_trips, amount: int_at(&row, 3)? };
            if fares.count > 0 {
                city.payments.entry("transit".into()).or_default().insert("ride_code".into(), fares);
            }
        }
    }
    Ok(cities.into_values().collect())
}
