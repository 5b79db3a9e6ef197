//! The feed model and its loader.

use crate::FeedError;
use crate::money::parse_fen;
use crate::table::{Row, Table};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file the loader reads; any other file in a directory is ignored.
pub const FILES: [&str; 12] = [
    "networks.txt",
    "routes.txt",
    "route_networks.txt",
    "stops.txt",
    "areas.txt",
    "stop_areas.txt",
    "route_stops.txt",
    "fare_media.txt",
    "fare_products.txt",
    "fare_leg_rules.txt",
    "fare_transfer_rules.txt",
    "fare_caps.txt",
];

/// `fare_media_type` of GTFS-Fares v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// 0: no medium, cash paid to the driver.
    Cash,
    /// 1: paper ticket.
    Paper,
    /// 2: physical transit card.
    Card,
    /// 3: contactless bank card or phone wallet (cEMV).
    Cemv,
    /// 4: mobile app (e.g. an Alipay or WeChat ride code).
    App,
}

/// A fare medium from `fare_media.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medium {
    /// `fare_media_type`.
    pub kind: MediaType,
}

/// A fare product's price for one medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Price {
    pub(crate) fen: i64,
    /// Extension `discount_percent`: taken off after any transfer discount.
    pub(crate) discount_percent: u8,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Route {
    pub(crate) network_id: Option<String>,
    /// Stops in order (extension `route_stops.txt`).
    pub(crate) stops: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct LegRule {
    pub(crate) leg_group_id: Option<String>,
    pub(crate) network_id: Option<String>,
    pub(crate) from_area_id: Option<String>,
    pub(crate) to_area_id: Option<String>,
    pub(crate) min_stations: Option<i64>,
    pub(crate) max_stations: Option<i64>,
    pub(crate) product_id: String,
    pub(crate) priority: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct TransferRule {
    pub(crate) from_group: Option<String>,
    pub(crate) to_group: Option<String>,
    pub(crate) transfer_count: Option<i64>,
    pub(crate) duration_limit: Option<(i64, i64)>,
    pub(crate) transfer_type: i64,
    pub(crate) product_id: Option<String>,
}

/// A loaded GTFS feed with its Fares v2 rules. Immutable; share it freely.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    pub(crate) networks: BTreeMap<String, bool>,
    pub(crate) routes: BTreeMap<String, Route>,
    pub(crate) stops: BTreeSet<String>,
    pub(crate) areas: BTreeSet<String>,
    pub(crate) stop_areas: BTreeSet<(String, String)>,
    pub(crate) media: BTreeMap<String, Medium>,
    pub(crate) products: BTreeMap<(String, String), Price>,
    pub(crate) leg_rules: Vec<LegRule>,
    pub(crate) transfer_rules: Vec<TransferRule>,
    pub(crate) day_cap: Option<String>,
}

type Files<'a> = BTreeMap<&'a str, &'a str>;

impl Feed {
    /// Loads a feed from `dir`, reading the files in [`FILES`] that exist.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Feed, FeedError> {
        let mut texts = Vec::new();
        for name in FILES {
            let path = dir.as_ref().join(name);
            if !path.exists() {
                continue;
            }
            let read = |what: String| FeedError::Read {
                file: name.to_string(),
                what,
            };
            let bytes = std::fs::read(&path).map_err(|e| read(e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|e| read(e.to_string()))?;
            texts.push((name, text));
        }
        let files: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
        Feed::from_strs(&files)
    }

    /// Loads a feed from `(file name, contents)` pairs, e.g. `("routes.txt", "route_id\n1\n")`.
    /// Names not in [`FILES`] are ignored; a later pair with the same name wins.
    pub fn from_strs(files: &[(&str, &str)]) -> Result<Feed, FeedError> {
        let files: Files<'_> = files.iter().copied().collect();
        let mut feed = Feed::default();
        feed.load_network_files(&files)?;
        feed.load_stop_files(&files)?;
        feed.load_fare_media(&table(&files, "fare_media.txt")?)?;
        feed.load_products(&table(&files, "fare_products.txt")?)?;
        feed.load_leg_rules(&table(&files, "fare_leg_rules.txt")?)?;
        if let Some(t) = optional(&files, "fare_transfer_rules.txt")? {
            feed.load_transfer_rules(&t)?;
        }
        if let Some(t) = optional(&files, "fare_caps.txt")? {
            feed.load_caps(&t)?;
        }
        Ok(feed)
    }

    /// The built-in Tianjin-like feed (`feeds/tianjin/`).
    pub fn tianjin() -> Feed {
        // The shipped feed is checked by the tests; an empty feed would price nothing.
        Feed::from_strs(&Feed::tianjin_files()).unwrap_or_default()
    }

    /// The files of the built-in Tianjin-like feed, by name.
    pub fn tianjin_files() -> Vec<(&'static str, &'static str)> {
        macro_rules! file {
            ($name:literal) => {
                ($name, include_str!(concat!("../feeds/tianjin/", $name)))
            };
        }
        vec![
            file!("networks.txt"),
            file!("routes.txt"),
            file!("stops.txt"),
            file!("route_stops.txt"),
            file!("fare_media.txt"),
            file!("fare_products.txt"),
            file!("fare_leg_rules.txt"),
            file!("fare_transfer_rules.txt"),
            file!("fare_caps.txt"),
        ]
    }

    /// The type of the medium `id`, if the feed defines it.
    pub fn medium_kind(&self, id: &str) -> Option<MediaType> {
        self.media.get(id).map(|m| m.kind)
    }

    /// Every route: its id, its network and whether that network needs a tap-out (gates).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.routes.iter().filter_map(|(id, route)| {
            let network = route.network_id.as_deref()?;
            Some((id.as_str(), network, self.networks.get(network).copied().unwrap_or(false)))
        })
    }

    /// The stops of a route in order (`route_stops.txt`), empty for an unknown route.
    pub fn route_stops(&self, route_id: &str) -> &[String] {
        self.routes.get(route_id).map_or(&[], |r| r.stops.as_slice())
    }

    /// The medium `id`, if the feed has it.
    pub fn medium(&self, id: &str) -> Option<&Medium> {
        self.media.get(id)
    }

    /// The daily cap in fen (extension `fare_caps.txt`), if the feed has one.
    pub fn day_cap_fen(&self) -> Option<i64> {
        self.day_cap
            .as_ref()
            .and_then(|p| self.product(p, ""))
            .map(|p| p.fen)
    }

    /// The amount of `product_id` for `media_id`: the row for that medium, else the row
    /// with an empty `fare_media_id`.
    pub(crate) fn product(&self, product_id: &str, media_id: &str) -> Option<Price> {
        let key = |m: &str| (product_id.to_string(), m.to_string());
        self.products
            .get(&key(media_id))
            .or_else(|| self.products.get(&key("")))
            .copied()
    }

    pub(crate) fn in_area(&self, stop_id: &str, area: Option<&String>) -> bool {
        area.is_none_or(|a| self.stop_areas.contains(&(a.clone(), stop_id.to_string())))
    }

    fn load_network_files(&mut self, files: &Files<'_>) -> Result<(), FeedError> {
        let has_networks = files.contains_key("networks.txt");
        if let Some(t) = optional(files, "networks.txt")? {
            self.load_networks(&t)?;
        }
        self.load_routes(&table(files, "routes.txt")?, has_networks)?;
        if let Some(t) = optional(files, "route_networks.txt")? {
            self.load_route_networks(&t, has_networks)?;
        }
        Ok(())
    }

    fn load_stop_files(&mut self, files: &Files<'_>) -> Result<(), FeedError> {
        self.load_stops(&table(files, "stops.txt")?)?;
        if let Some(t) = optional(files, "areas.txt")? {
            self.load_areas(&t)?;
        }
        if let Some(t) = optional(files, "stop_areas.txt")? {
            self.load_stop_areas(&t)?;
        }
        if let Some(t) = optional(files, "route_stops.txt")? {
            self.load_route_stops(&t)?;
        }
        Ok(())
    }

    fn load_networks(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["network_id"])?;
        for row in t.rows() {
            let id = row.req("network_id")?;
            let tap_out = match row.int("tap_out_required")? {
                None | Some(0) => false,
                Some(1) => true,
                Some(_) => return Err(row.error("tap_out_required", "must be 0 or 1")),
            };
            unique(
                &row,
                "network_id",
                self.networks.insert(id.to_string(), tap_out).is_none(),
            )?;
        }
        Ok(())
    }

    fn network_ref(&mut self, row: &Row<'_>, col: &str, strict: bool) -> Result<String, FeedError> {
        let id = row.req(col)?;
        if strict && !self.networks.contains_key(id) {
            return Err(row.error(col, &format!("unknown network `{id}`")));
        }
        self.networks.entry(id.to_string()).or_insert(false);
        Ok(id.to_string())
    }

    fn load_routes(&mut self, t: &Table, strict: bool) -> Result<(), FeedError> {
        t.require_columns(&["route_id"])?;
        for row in t.rows() {
            let id = row.req("route_id")?.to_string();
            let network_id = match row.opt("network_id") {
                Some(_) => Some(self.network_ref(&row, "network_id", strict)?),
                None => None,
            };
            let fresh = self
                .routes
                .insert(
                    id,
                    Route {
                        network_id,
                        stops: Vec::new(),
                    },
                )
                .is_none();
            unique(&row, "route_id", fresh)?;
        }
        Ok(())
    }

    fn load_route_networks(&mut self, t: &Table, strict: bool) -> Result<(), FeedError> {
        t.require_columns(&["network_id", "route_id"])?;
        for row in t.rows() {
            let network = self.network_ref(&row, "network_id", strict)?;
            let route_id = row.req("route_id")?;
            let route = self.routes.get_mut(route_id);
            let route = route.ok_or_else(|| row.error("route_id", "unknown route"))?;
            if route.network_id.is_some() {
                return Err(row.error("route_id", "route already has a network"));
            }
            route.network_id = Some(network);
        }
        Ok(())
    }

    fn load_stops(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["stop_id"])?;
        for row in t.rows() {
            let fresh = self.stops.insert(row.req("stop_id")?.to_string());
            unique(&row, "stop_id", fresh)?;
        }
        Ok(())
    }

    fn load_areas(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["area_id"])?;
        for row in t.rows() {
            let fresh = self.areas.insert(row.req("area_id")?.to_string());
            unique(&row, "area_id", fresh)?;
        }
        Ok(())
    }

    fn load_stop_areas(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["area_id", "stop_id"])?;
        for row in t.rows() {
            let area = known(&row, "area_id", &self.areas)?;
            let stop = known(&row, "stop_id", &self.stops)?;
            self.stop_areas.insert((area, stop));
        }
        Ok(())
    }

    fn load_route_stops(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["route_id", "stop_id", "stop_sequence"])?;
        let mut ordered: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
        for row in t.rows() {
            let route_id = row.req("route_id")?;
            if !self.routes.contains_key(route_id) {
                return Err(row.error("route_id", "unknown route"));
            }
            let stop = known(&row, "stop_id", &self.stops)?;
            let seq = row.int("stop_sequence")?;
            let seq = seq.ok_or_else(|| row.error("stop_sequence", "required value is empty"))?;
            let line = ordered.entry(route_id.to_string()).or_default();
            unique(&row, "stop_sequence", line.insert(seq, stop).is_none())?;
        }
        for (route_id, stops) in ordered {
            if let Some(route) = self.routes.get_mut(&route_id) {
                route.stops = stops.into_values().collect();
            }
        }
        Ok(())
    }

    fn load_fare_media(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["fare_media_id", "fare_media_type"])?;
        for row in t.rows() {
            let id = row.req("fare_media_id")?;
            let kind = match row.int("fare_media_type")? {
                Some(0) => MediaType::Cash,
                Some(1) => MediaType::Paper,
                Some(2) => MediaType::Card,
                Some(3) => MediaType::Cemv,
                Some(4) => MediaType::App,
                _ => return Err(row.error("fare_media_type", "must be 0, 1, 2, 3 or 4")),
            };
            let fresh = self.media.insert(id.to_string(), Medium { kind });
            unique(&row, "fare_media_id", fresh.is_none())?;
        }
        Ok(())
    }

    fn load_products(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["fare_product_id", "amount", "currency"])?;
        for row in t.rows() {
            let id = row.req("fare_product_id")?.to_string();
            let media = match row.opt("fare_media_id") {
                Some(m) if !self.media.contains_key(m) => {
                    return Err(row.error("fare_media_id", &format!("unknown medium `{m}`")));
                }
                m => m.unwrap_or("").to_string(),
            };
            if row.req("currency")? != "CNY" {
                return Err(row.error("currency", "only CNY is supported"));
            }
            let fen = parse_fen(row.req("amount")?).map_err(|w| row.error("amount", &w))?;
            let pct = row.int("discount_percent")?.unwrap_or(0);
            let pct = u8::try_from(pct).ok().filter(|p| *p <= 100);
            let discount_percent =
                pct.ok_or_else(|| row.error("discount_percent", "must be 0..=100"))?;
            let price = Price {
                fen,
                discount_percent,
            };
            unique(
                &row,
                "fare_media_id",
                self.products.insert((id, media), price).is_none(),
            )?;
        }
        Ok(())
    }

    fn product_ref(&self, row: &Row<'_>, col: &str) -> Result<String, FeedError> {
        let id = row.req(col)?;
        match self
            .products
            .range((id.to_string(), String::new())..)
            .next()
        {
            Some(((found, _), _)) if found == id => Ok(id.to_string()),
            _ => Err(row.error(col, &format!("unknown fare product `{id}`"))),
        }
    }

    fn load_leg_rules(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["fare_product_id"])?;
        for row in t.rows() {
            for col in ["from_timeframe_group_id", "to_timeframe_group_id"] {
                if row.opt(col).is_some() {
                    return Err(row.error(col, "timeframes are not supported"));
                }
            }
            let rule = self.leg_rule(&row)?;
            self.leg_rules.push(rule);
        }
        Ok(())
    }

    fn leg_rule(&self, row: &Row<'_>) -> Result<LegRule, FeedError> {
        let network_id = row.opt("network_id").map(str::to_string);
        if let Some(n) = network_id
            .as_ref()
            .filter(|n| !self.networks.contains_key(*n))
        {
            return Err(row.error("network_id", &format!("unknown network `{n}`")));
        }
        let area = |col| {
            row.opt(col)
                .map(|_| known(row, col, &self.areas))
                .transpose()
        };
        let (min_stations, max_stations) = (row.int("min_stations")?, row.int("max_stations")?);
        if min_stations
            .zip(max_stations)
            .is_some_and(|(lo, hi)| lo > hi)
        {
            return Err(row.error("max_stations", "is below min_stations"));
        }
        Ok(LegRule {
            leg_group_id: row.opt("leg_group_id").map(str::to_string),
            network_id,
            from_area_id: area("from_area_id")?,
            to_area_id: area("to_area_id")?,
            min_stations,
            max_stations,
            product_id: self.product_ref(row, "fare_product_id")?,
            priority: row.int("rule_priority")?.unwrap_or(0),
        })
    }

    fn load_transfer_rules(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["fare_transfer_type"])?;
        for row in t.rows() {
            let rule = self.transfer_rule(&row)?;
            self.transfer_rules.push(rule);
        }
        Ok(())
    }

    fn transfer_rule(&self, row: &Row<'_>) -> Result<TransferRule, FeedError> {
        let group = |col: &str| -> Result<Option<String>, FeedError> {
            let Some(g) = row.opt(col) else {
                return Ok(None);
            };
            let exists = self
                .leg_rules
                .iter()
                .any(|r| r.leg_group_id.as_deref() == Some(g));
            if !exists {
                return Err(row.error(col, &format!("unknown leg group `{g}`")));
            }
            Ok(Some(g.to_string()))
        };
        let duration_limit = match (row.int("duration_limit")?, row.int("duration_limit_type")?) {
            (None, None) => None,
            (Some(limit), Some(kind)) if (0..=3).contains(&kind) && limit > 0 => {
                Some((limit, kind))
            }
            _ => {
                return Err(row.error(
                    "duration_limit_type",
                    "needs a positive duration_limit and a type 0..=3",
                ));
            }
        };
        let transfer_type = row
            .int("fare_transfer_type")?
            .filter(|k| (0..=2).contains(k));
        let transfer_type =
            transfer_type.ok_or_else(|| row.error("fare_transfer_type", "must be 0, 1 or 2"))?;
        Ok(TransferRule {
            from_group: group("from_leg_group_id")?,
            to_group: group("to_leg_group_id")?,
            transfer_count: row.int("transfer_count")?,
            duration_limit,
            transfer_type,
            product_id: row
                .opt("fare_product_id")
                .map(|_| self.product_ref(row, "fare_product_id"))
                .transpose()?,
        })
    }

    fn load_caps(&mut self, t: &Table) -> Result<(), FeedError> {
        t.require_columns(&["fare_product_id", "cap_period"])?;
        for row in t.rows() {
            let product = self.product_ref(&row, "fare_product_id")?;
            if row.req("cap_period")? != "service_day" {
                return Err(row.error("cap_period", "only `service_day` is supported"));
            }
            unique(
                &row,
                "fare_product_id",
                self.day_cap.replace(product).is_none(),
            )?;
        }
        Ok(())
    }
}

fn table(files: &Files<'_>, name: &str) -> Result<Table, FeedError> {
    let text = files.get(name).ok_or_else(|| FeedError::Missing {
        file: name.to_string(),
    })?;
    Table::parse(name, text)
}

fn optional(files: &Files<'_>, name: &str) -> Result<Option<Table>, FeedError> {
    files
        .get(name)
        .map(|text| Table::parse(name, text))
        .transpose()
}

fn unique(row: &Row<'_>, col: &str, fresh: bool) -> Result<(), FeedError> {
    if fresh {
        Ok(())
    } else {
        Err(row.error(col, "duplicate"))
    }
}

fn known(row: &Row<'_>, col: &str, set: &BTreeSet<String>) -> Result<String, FeedError> {
    let id = row.req(col)?;
    if set.contains(id) {
        Ok(id.to_string())
    } else {
        Err(row.error(col, &format!("unknown id `{id}`")))
    }
}
