//! Who lives in a simulated city: people and businesses, drawn from the seed. Everything here
//! is a pure function of (seed, city, index), so the same seed builds the same city whatever
//! order things are built in.

use citypay_directory::{Category, NewMerchant, NewResident};
use citypay_identity::AccountClass;

use citypay_dashboard::dates::{civil_from_days, days_from_civil};

use crate::presets::CityPreset;

/// A generator for one purpose, seeded from the run's seed and the parts that name it.
pub(crate) fn rng_for(seed: u64, parts: &[u64]) -> fastrand::Rng {
    let mut bytes = Vec::with_capacity(8 * (parts.len() + 1));
    bytes.extend_from_slice(&seed.to_le_bytes());
    for part in parts {
        bytes.extend_from_slice(&part.to_le_bytes());
    }
    fastrand::Rng::with_seed(xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// Tags that keep the generators of different purposes apart.
pub(crate) mod tag {
    pub(crate) const PERSON: u64 = 1;
    pub(crate) const DAY: u64 = 2;
    pub(crate) const VALIDATOR_KEY: u64 = 3;
    pub(crate) const RIDER_KEY: u64 = 4;
    pub(crate) const PARENT: u64 = 5;
    pub(crate) const AWAY: u64 = 6;
}

/// Per hundred people, how many have a child at school.
const PARENTS_PER_CENT: u32 = 15;

/// Whether the `index`-th person of a city has a child at school (drawn apart from the
/// person, so adding it changed no one else).
pub(crate) fn is_parent(seed: u64, preset: &CityPreset, index: u64) -> bool {
    rng_for(seed, &[tag::PARENT, u64::from(preset.code), index]).u32(0..100) < PARENTS_PER_CENT
}

/// The school's number of that person's child.
pub(crate) fn student_number(preset: &CityPreset, index: u64) -> String {
    format!("S{}{index:08}", preset.code)
}

/// When a person opens a real-name wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Before the simulation starts.
    Before,
    /// During day `n` (1-based).
    OnDay(u32),
    /// Never: pays cash.
    Never,
}

/// A simulated person.
#[derive(Clone, Debug)]
pub struct Person {
    pub(crate) city: usize,
    pub(crate) index: u64,
    pub(crate) registration: Registration,
    pub(crate) class: AccountClass,
    /// How often (per thousand purchases) they choose cash although they could pay by phone.
    pub(crate) cash_per_mille: u32,
    /// Shows a payment code at the till; otherwise scans the merchant's QR code.
    pub(crate) shows_code: bool,
    /// Goes to work and back by bus or metro.
    pub(crate) commutes: bool,
}

/// Per thousand real-name users, how many register during the simulated days rather than before.
const REGISTER_DURING_PER_MILLE: u32 = 40;

impl Person {
    /// The `index`-th person of city number `city`.
    pub fn draw(seed: u64, city: usize, preset: &CityPreset, index: u64, days: u32) -> Person {
        let mut rng = rng_for(seed, &[tag::PERSON, u64::from(preset.code), index]);
        let roll = rng.u32(0..1000);
        let registration = if roll >= preset.real_name_per_mille {
            Registration::Never
        } else if rng.u32(0..1000) < REGISTER_DURING_PER_MILLE {
            Registration::OnDay(rng.u32(1..=days.max(1)))
        } else {
            Registration::Before
        };
        // The class their verifications will earn: most link cards of three banks (class II),
        // a quarter one bank's (class I), a few five banks' (class III).
        let class = match rng.u32(0..100) {
            0..25 => AccountClass::I,
            25..85 => AccountClass::II,
            _ => AccountClass::III,
        };
        // One in ten prefers cash most of the time; the others now and then.
        let cash_per_mille = if rng.u32(0..10) == 0 { 800 } else { 40 };
        let shows_code = rng.bool();
        Person { city, index, registration, class, cash_per_mille, shows_code, commutes: rng.u32(0..100) < 55 }
    }

    /// What this person registers with: a valid resident ID of the city, a unique mobile.
    pub fn new_resident(&self, preset: &CityPreset, seed: u64) -> NewResident {
        let mut rng = rng_for(seed, &[tag::PERSON, u64::from(preset.code), self.index, 1]);
        const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡"];
        const GIVEN: &[&str] = &["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀兰", "霞"];
        let name = format!("{}{}", SURNAMES[rng.usize(..SURNAMES.len())], GIVEN[rng.usize(..GIVEN.len())]);
        NewResident {
            city: preset.code,
            name,
            mobile: self.mobile(),
            id_number: resident_id_number(preset.code, self.index),
            password: format!("sim-{:08}", self.index),
        }
    }

    /// Their mobile number, unique in the country.
    pub fn mobile(&self) -> String {
        format!("1{}{:09}", 3 + self.city % 7, self.index)
    }

    /// How many banks' cards they link: the verifications that earn their class (one external
    /// channel: I; three: II; five: III).
    pub fn banks(&self) -> usize {
        match self.class {
            AccountClass::I => 1,
            AccountClass::II => 3,
            AccountClass::III => 5,
        }
    }

    /// A UnionPay debit card number (Luhn-valid) of this person at the sandbox's `bank`-th
    /// issuer.
    pub fn card_number(&self, bank: usize) -> String {
        let issuer = citypay_directory::SandboxBank::ISSUERS[bank % citypay_directory::SandboxBank::ISSUERS.len()];
        for variant in 0..10u64 {
            let payload = format!("{issuer}{}{:011}", self.city % 10, (self.index * 10 + variant) % 100_000_000_000);
            let Some(check) = citypay_identity::card::luhn_check_digit(&payload) else { continue };
            let pan = format!("{payload}{check}");
            // The sandbox bank declines cards ending 0002.
            if !pan.ends_with("0002") {
                return pan;
            }
        }
        unreachable!("one of ten consecutive payloads does not end in 0002")
    }
}

/// A GB 11643 number: a district of the city, a birth date between 1950 and 2004, and a
/// sequence, chosen so that `index` below 20 million maps to a distinct number.
pub fn resident_id_number(city_code: u32, index: u64) -> String {
    // Born 1950 to 1999: adults on every simulated day, so none is too young to register.
    const BIRTH_DAYS: u64 = 18_000;
    // A county of the city (GB/T 2260): a municipality's first district, a city's second.
    let region = if city_code.is_multiple_of(10_000) { city_code + 101 } else { city_code + 2 };
    let days = (index / 1000 * 7_919) % BIRTH_DAYS;
    let (y, m, d) = civil_from_days(days_from_civil(1950, 1, 1) + i64::try_from(days).unwrap_or(0));
    let first17 = format!("{region:06}{y:04}{m:02}{d:02}{:03}", index % 1000);
    let check = citypay_identity::resident_id::check_character(&first17).unwrap_or('0');
    format!("{first17}{check}")
}

/// The civil date `n` days after `(y, m, d)`.
pub(crate) fn add_days((y, m, d): (i64, i64, i64), n: i64) -> (i64, i64, i64) {
    civil_from_days(days_from_civil(y, m, d) + n)
}

/// Kinds of business in a simulated city.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BusinessKind {
    /// A shop.
    Shop,
    /// A restaurant.
    Restaurant,
    /// A hospital, which bills its patients.
    Hospital,
    /// The city's social-security bureau, which collects contributions.
    Bureau,
    /// Schools, which bill tuition by student number.
    School,
}

impl BusinessKind {
    fn category(self) -> Category {
        match self {
            BusinessKind::Shop => Category::Retail,
            BusinessKind::Restaurant => Category::Restaurant,
            BusinessKind::Hospital => Category::Hospital,
            BusinessKind::Bureau => Category::SocialSecurity,
            BusinessKind::School => Category::School,
        }
    }

    fn mcc(self) -> &'static str {
        match self {
            BusinessKind::Shop => "5411",
            BusinessKind::Restaurant => "5812",
            BusinessKind::Hospital => "8062",
            BusinessKind::Bureau => "9311",
            BusinessKind::School => "8211",
        }
    }

    fn name_zh(self) -> &'static str {
        match self {
            BusinessKind::Shop => "便利店",
            BusinessKind::Restaurant => "餐馆",
            BusinessKind::Hospital => "人民医院",
            BusinessKind::Bureau => "社会保险事业管理局",
            BusinessKind::School => "中学",
        }
    }

    /// Registration authority and category of the USCC: companies (9, 1), public
    /// institutions (1, 2) and government bodies (1, 1).
    fn uscc_prefix(self) -> &'static str {
        match self {
            BusinessKind::Bureau => "11",
            BusinessKind::Hospital | BusinessKind::School => "12",
            BusinessKind::Shop | BusinessKind::Restaurant => "91",
        }
    }

    fn code(self) -> u64 {
        match self {
            BusinessKind::Shop => 1,
            BusinessKind::Restaurant => 2,
            BusinessKind::Hospital => 3,
            BusinessKind::Bureau => 4,
            BusinessKind::School => 5,
        }
    }
}

/// How many of each business a city of `residents` simulated residents has: a shop or
/// restaurant per 150 residents, a hospital per 5,000, a school per 3,000, one social-security
/// bureau.
pub(crate) fn businesses(residents: u64) -> Vec<(BusinessKind, u64)> {
    let trade = (residents / 150).max(2);
    vec![
        (BusinessKind::Shop, (trade * 3 / 5).max(1)),
        (BusinessKind::Restaurant, (trade * 2 / 5).max(1)),
        (BusinessKind::Hospital, (residents / 5_000).max(1)),
        (BusinessKind::Bureau, 1),
        (BusinessKind::School, (residents / 3_000).max(1)),
    ]
}

/// The USCC of a city's transit operator (a company, organisation body 99 + city).
pub fn transit_uscc(preset: &CityPreset, city: usize) -> String {
    let body = format!("99{:06}", city % 1_000_000);
    let organization_check = citypay_identity::uscc::organization_check_character(&body).unwrap_or('0');
    let first17 = format!("91{:06}{body}{organization_check}", preset.code + 2);
    let check = citypay_identity::uscc::check_character(&first17).unwrap_or('0');
    format!("{first17}{check}")
}

/// What the `index`-th business of a kind onboards with.
pub fn new_merchant(preset: &CityPreset, city: usize, kind: BusinessKind, index: u64) -> NewMerchant {
    let region = preset.code + 2;
    let body = format!("{:02}{:06}", (city % 10) * 10 + usize::try_from(kind.code()).unwrap_or(0), index % 1_000_000);
    let organization_check = citypay_identity::uscc::organization_check_character(&body).unwrap_or('0');
    let first17 = format!("{}{region:06}{body}{organization_check}", kind.uscc_prefix());
    let check = citypay_identity::uscc::check_character(&first17).unwrap_or('0');
    NewMerchant {
        city: preset.code,
        name: format!("{}{}{}号", preset.name_zh, kind.name_zh(), index + 1),
        uscc: format!("{first17}{check}"),
        mcc: kind.mcc().to_owned(),
        category: kind.category(),
        settlement_account: format!("6217{:02}{}{:010}", city % 100, kind.code(), index),
        notify_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::PRESETS;

    #[test]
    fn generated_identities_are_valid_and_distinct() {
        let today = citypay_identity::CivilDate::new(2017, 8, 1).unwrap();
        let mut seen = std::collections::HashSet::new();
        for index in (0..5_000u64).chain([999_999, 1_000_000, 19_999_999]) {
            let number = resident_id_number(330100, index);
            citypay_identity::ResidentId::parse(&number, today).unwrap_or_else(|e| panic!("{number}: {e}"));
            assert!(seen.insert(number));
        }
        let person = Person::draw(7, 0, &PRESETS[0], 12, 1);
        assert!(citypay_identity::card::luhn_valid(&person.card_number(0)));
        assert!(citypay_identity::card::luhn_valid(&person.card_number(4)));
        for (city, preset) in PRESETS.iter().enumerate() {
            for kind in [BusinessKind::Shop, BusinessKind::Restaurant, BusinessKind::Hospital] {
                let merchant = new_merchant(preset, city, kind, 41);
                citypay_identity::Uscc::parse(&merchant.uscc).unwrap_or_else(|e| panic!("{}: {e}", merchant.uscc));
            }
        }
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(civil_from_days(days_from_civil(2017, 8, 1)), (2017, 8, 1));
        assert_eq!(add_days((2016, 2, 28), 1), (2016, 2, 29));
        assert_eq!(add_days((2017, 12, 31), 1), (2018, 1, 1));
        // 2017-08-01 00:00 in Beijing is 2017-07-31 16:00 UTC.
        assert_eq!(citypay_dashboard::dates::local_midnight(2017, 8, 1), 1_501_516_800);
    }

    #[test]
    fn the_same_seed_draws_the_same_person() {
        let a = Person::draw(42, 1, &PRESETS[1], 99, 3);
        let b = Person::draw(42, 1, &PRESETS[1], 99, 3);
        assert_eq!((a.registration, a.class, a.cash_per_mille, a.shows_code), (b.registration, b.class, b.cash_per_mille, b.shows_code));
    }
}
