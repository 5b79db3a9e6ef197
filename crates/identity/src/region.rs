//! GB/T 2260 administrative division codes: every code issued since 1980, with the years it
//! was in use (`data/gbt2260.tsv`, compiled in; its header names the source and licence).
//!
//! An ID number keeps the county code it was first issued under after the county is merged
//! away, so a retired code is still a valid region for an ID number; a code never issued is
//! not.

use std::sync::OnceLock;

/// The table: `code<TAB>first year<TAB>last year` (empty while in use), sorted by code.
const TABLE: &str = include_str!("../data/gbt2260.tsv");

/// The municipalities directly under the central government (Beijing, Tianjin, Shanghai,
/// Chongqing): province-level codes that are cities themselves.
const MUNICIPALITIES: [u32; 4] = [110000, 120000, 310000, 500000];

/// A GB/T 2260 code and the years it was in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// The six-digit code.
    pub code: u32,
    /// The first year in use (1980 for codes already in use then).
    pub first_year: u16,
    /// The last year in use, or `None` while it is.
    pub last_year: Option<u16>,
}

impl Region {
    /// The region with this code, if it was ever issued since 1980.
    #[must_use]
    pub fn find(code: u32) -> Option<Self> {
        let table = table();
        table.binary_search_by_key(&code, |region| region.code).ok().map(|i| table[i])
    }

    /// Every code issued since 1980, by code.
    #[must_use]
    pub fn all() -> &'static [Self] {
        table()
    }

    /// Whether the code is still in use.
    #[must_use]
    pub const fn in_use(&self) -> bool {
        self.last_year.is_none()
    }

    /// Whether it is a city: a prefecture-level division (`PPCC00`, `CC` not `00`) or one of
    /// the four municipalities.
    #[must_use]
    pub fn is_city(&self) -> bool {
        let prefecture = self.code.is_multiple_of(100) && !(self.code / 100).is_multiple_of(100);
        prefecture || MUNICIPALITIES.contains(&self.code)
    }
}

fn table() -> &'static [Region] {
    static PARSED: OnceLock<Vec<Region>> = OnceLock::new();
    PARSED.get_or_init(|| TABLE.lines().filter(|line| !line.starts_with('#')).filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Region> {
    let mut fields = line.split('\t');
    let code = fields.next()?.parse().ok()?;
    let first_year = fields.next()?.parse().ok()?;
    let last_year = fields.next().filter(|year| !year.is_empty()).and_then(|year| year.parse().ok());
    Some(Region { code, first_year, last_year })
}

#[cfg(test)]
mod tests {
    use super::{Region, TABLE, table};

    #[test]
    fn every_line_parses_and_codes_are_sorted_and_unique() {
        let lines = TABLE.lines().filter(|line| !line.starts_with('#')).count();
        assert_eq!(table().len(), lines);
        assert!(table().windows(2).all(|pair| pair[0].code < pair[1].code));
    }

    #[test]
    fn hangzhou_keeps_its_retired_districts() {
        let retired = Region::find(330103).unwrap();
        assert_eq!((retired.first_year, retired.last_year), (1980, Some(2021)));
        assert!(Region::find(330113).unwrap().in_use());
        assert_eq!(Region::find(330199), None);
        assert_eq!(Region::find(999999), None);
    }

    #[test]
    fn cities_are_prefectures_and_municipalities() {
        for code in [330100, 420100, 350100, 120000, 110000] {
            assert!(Region::find(code).unwrap().is_city(), "{code}");
        }
        for code in [330106, 330000, 110105] {
            assert!(!Region::find(code).unwrap().is_city(), "{code}");
        }
    }
}
