//! The cities that ship as presets: the four "cashless cities" of 2017.

/// A city the simulator can build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CityPreset {
    /// GB/T 2260 code.
    pub code: u32,
    /// Name.
    pub name: &'static str,
    /// Name in Chinese, for shop names.
    pub name_zh: &'static str,
    /// Resident population.
    pub population: u64,
    /// Real-name mobile-payment users per thousand residents.
    pub real_name_per_mille: u32,
}

/// The presets. Populations are the 2016 year-end resident populations from the cities'
/// statistical bulletins. Real-name shares: Tianjin 6.9 of 15.5 million (Yicai, 2017);
/// Fuzhou about 5 of 7.66 million (Fuzhou government press, 2017). Hangzhou and Wuhan have no
/// published count; they are set from their CMPI ranks (2nd and 4th in 2018, ahead of Tianjin
/// at 6th) and are estimates.
pub const PRESETS: &[CityPreset] = &[
    CityPreset { code: 330100, name: "Hangzhou", name_zh: "杭州", population: 9_188_000, real_name_per_mille: 780 },
    CityPreset { code: 420100, name: "Wuhan", name_zh: "武汉", population: 10_766_000, real_name_per_mille: 620 },
    CityPreset { code: 350100, name: "Fuzhou", name_zh: "福州", population: 7_660_000, real_name_per_mille: 653 },
    CityPreset { code: 120000, name: "Tianjin", name_zh: "天津", population: 15_500_000, real_name_per_mille: 445 },
];

/// The preset named `name` (case-insensitive), by English name or code.
pub fn preset(name: &str) -> Option<&'static CityPreset> {
    let name = name.trim();
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name) || p.code.to_string() == name || p.name_zh == name)
}

/// Splits `total` simulated residents over `cities` in proportion to their populations (at
/// least one each); the shares add up to `total` exactly when `total` is at least the city count.
pub fn split_residents(cities: &[&CityPreset], total: u64) -> Vec<u64> {
    let population: u64 = cities.iter().map(|c| c.population).sum::<u64>().max(1);
    let mut shares: Vec<u64> =
        cities.iter().map(|c| u64::try_from(u128::from(total) * u128::from(c.population) / u128::from(population)).unwrap_or(0)).collect();
    let mut left = total.saturating_sub(shares.iter().sum());
    for share in shares.iter_mut() {
        if left == 0 {
            break;
        }
        *share += 1;
        left -= 1;
    }
    shares.iter().map(|s| (*s).max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_found_by_name_or_code() {
        assert_eq!(preset("tianjin").map(|p| p.code), Some(120000));
        assert_eq!(preset("330100").map(|p| p.name), Some("Hangzhou"));
        assert_eq!(preset("武汉").map(|p| p.code), Some(420100));
        assert!(preset("Atlantis").is_none());
    }

    #[test]
    fn residents_split_in_proportion_and_add_up() {
        let all: Vec<&CityPreset> = PRESETS.iter().collect();
        let shares = split_residents(&all, 10_000);
        assert_eq!(shares.iter().sum::<u64>(), 10_000);
        assert!(shares[3] > shares[0] && shares[0] > shares[2], "{shares:?}");
        assert_eq!(split_residents(&all[..1], 7), vec![7]);
    }
}
