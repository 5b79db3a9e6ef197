//! Cities: where residents live and merchants trade, each its own unit of onboarding,
//! measurement and, later, sharding.

use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{Directory, DirectoryError, int, text};

/// A city, by its GB/T 2260 administrative division code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct City {
    /// GB/T 2260 code (Hangzhou 330100).
    pub code: u32,
    /// Name.
    pub name: String,
}

/// The cities of the 2017 cashless-city campaigns.
pub const PRESET_CITIES: &[(u32, &str)] =
    &[(330100, "Hangzhou"), (420100, "Wuhan"), (350100, "Fuzhou"), (120000, "Tianjin")];

impl Directory {
    /// Onboards a city: a prefecture-level city or a municipality, by its GB/T 2260 code in use.
    pub async fn onboard_city(&self, code: u32, name: &str) -> Result<City, DirectoryError> {
        self.onboard_city_in(code, name, None).await
    }

    /// [`Directory::onboard_city`] with the city's group of buckets given (a country's catalog
    /// allocates them, so no two shards give one group to two cities); `None`: the next free
    /// one of this database.
    pub async fn onboard_city_in(&self, code: u32, name: &str, given: Option<std::ops::Range<u16>>) -> Result<City, DirectoryError> {
        let name = name.trim();
        let is_city = citypay_identity::Region::find(code).is_some_and(|region| region.in_use() && region.is_city());
        if !is_city {
            return Err(DirectoryError::InvalidField {
                field: "code",
                message: "a GB/T 2260 code in use of a prefecture-level city (e.g. 330100) or a municipality (e.g. 120000)".into(),
            });
        }
        if name.is_empty() || name.chars().count() > 64 {
            return Err(DirectoryError::InvalidField { field: "name", message: "1 to 64 characters".into() });
        }
        let key = vec![("code", Value::Int(i64::from(code)))];
        let now = i64::try_from(self.now().unix_seconds()).unwrap_or(0);
        // The city's group of buckets: the next free one (of two cities onboarded at once,
        // one takes it and the other the one after).
        for _ in 0..5 {
            let group = match &given {
                Some(group) => group.clone(),
                None => {
                    let rows = self.read("SELECT COUNT(*) FROM bucket_groups", Vec::new()).await?;
                    let taken = rows.first().map(|row| int(&row[0])).transpose()?.unwrap_or(0);
                    u16::try_from(taken)
                        .ok()
                        .and_then(citypay_routing::city_group)
                        .ok_or_else(|| DirectoryError::InvalidField { field: "code", message: "every bucket is given to a city: no room for another".into() })?
                }
            };
            let group_key = vec![("first_bucket", Value::Int(i64::from(group.start)))];
            let command = Command {
                event: None,
                guards: vec![Guard::Absent { table: "cities", key: key.clone() }, Guard::Absent { table: "bucket_groups", key: group_key.clone() }],
                rows: vec![
                    ServiceRow {
                        table: "cities",
                        key: key.clone(),
                        columns: vec![("name", Value::Text(name.to_owned())), ("created_at", Value::Int(now))],
                        on_conflict: OnConflict::Fail,
                    },
                    ServiceRow {
                        table: "bucket_groups",
                        key: group_key,
                        columns: vec![("city", Value::Int(i64::from(code))), ("buckets", Value::Int(i64::from(group.end - group.start)))],
                        on_conflict: OnConflict::Fail,
                    },
                ],
                always_rows: Vec::new(),
            };
            match self.submit(command).await? {
                Ok(_) => return Ok(City { code, name: name.to_owned() }),
                Err(0) => return Err(DirectoryError::CityExists(code)),
                Err(_) if given.is_some() => return Err(DirectoryError::Storage("the group of buckets the catalog gave this city is another city's here".into())),
                Err(_) => continue,
            }
        }
        Err(DirectoryError::Unavailable("cities kept being onboarded at once; retry".into()))
    }

    /// The buckets of `city`'s residents and merchants.
    pub async fn bucket_group(&self, city: u32) -> Result<std::ops::Range<u16>, DirectoryError> {
        let rows = self.read("SELECT first_bucket, buckets FROM bucket_groups WHERE city = ?1", vec![Value::Int(i64::from(city))]).await?;
        let row = rows.first().ok_or(DirectoryError::NotFound)?;
        let first = u16::try_from(int(&row[0])?).map_err(|_| DirectoryError::Storage("bucket group".into()))?;
        let count = u16::try_from(int(&row[1])?).map_err(|_| DirectoryError::Storage("bucket group".into()))?;
        Ok(first..first + count)
    }

    /// An onboarded city (cities never change once onboarded, so each is read once).
    pub async fn city(&self, code: u32) -> Result<City, DirectoryError> {
        if let Some(city) = self.cities.read().ok().and_then(|c| c.get(&code).cloned()) {
            return Ok(city);
        }
        let rows = self.read("SELECT code, name FROM cities WHERE code = ?1", vec![Value::Int(i64::from(code))]).await?;
        let row = rows.first().ok_or(DirectoryError::UnknownCity(code))?;
        let city = City { code, name: text(&row[1])? };
        if let Ok(mut cities) = self.cities.write() {
            cities.insert(code, city.clone());
        }
        Ok(city)
    }

    /// Every onboarded city, by code.
    pub async fn cities(&self) -> Result<Vec<City>, DirectoryError> {
        let rows = self.read("SELECT code, name FROM cities ORDER BY code", Vec::new()).await?;
        rows.iter()
            .map(|row| {
                let code = u32::try_from(int(&row[0])?).map_err(|_| DirectoryError::Storage("city code".into()))?;
                Ok(City { code, name: text(&row[1])? })
            })
            .collect()
    }
}
