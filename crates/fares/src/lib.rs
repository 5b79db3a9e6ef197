//! Fares from a GTFS feed with Fares v2: a rider's day of taps in, the fare of every trip out.
//!
//! Load a [`Feed`] ([`Feed::load_dir`], [`Feed::from_strs`], or the built-in
//! [`Feed::tianjin`]) and price a rider's taps with [`fare_day`]. Amounts are integer fen
//! (1 yuan = 100 fen); the feed's decimal `amount` is converted exactly, without floats. The
//! crate reads no clock and does no I/O other than [`Feed::load_dir`].
//!
//! ```
//! use citypay_fares::{Direction, Feed, Tap, fare_day};
//!
//! let feed = Feed::tianjin();
//! let t0 = 1_740_960_000; // 2025-03-03 08:00 in Tianjin
//! let taps = [
//!     Tap::new("B_XIZHAN", "824", t0, Direction::In, "city_card"),
//!     Tap::new("M1_LIUYUAN", "M1", t0 + 1800, Direction::In, "city_card"),
//!     Tap::new("M1_XIBEIJIAO", "M1", t0 + 2800, Direction::Out, "city_card"),
//! ];
//! let day = fare_day(&feed, &taps);
//! // Bus 2.00, then metro 8 stations: (3.00 - 1.00 transfer) x 0.9 = 1.80.
//! assert_eq!(day.total_fen, 200 + 180);
//! ```
//!
//! # What is read
//!
//! Standard GTFS / GTFS-Fares v2: `networks.txt`, `routes.txt` (`route_id`, `network_id`),
//! `route_networks.txt`, `stops.txt`, `areas.txt`, `stop_areas.txt`, `fare_media.txt`,
//! `fare_products.txt` (`fare_product_id`, `fare_media_id`, `amount`, `currency`; only `CNY`),
//! `fare_leg_rules.txt` (`leg_group_id`, `network_id`, `from_area_id`, `to_area_id`,
//! `fare_product_id`, `rule_priority`) and `fare_transfer_rules.txt` (`from_leg_group_id`,
//! `to_leg_group_id`, `transfer_count`, `duration_limit`, `duration_limit_type`,
//! `fare_transfer_type`, `fare_product_id`). Timeframes are not supported (a rule that uses one
//! is refused). Empty leg-rule fields always mean "any" (the `rule_priority` reading); the
//! highest `rule_priority` wins, then the first rule in file order.
//!
//! # citypay extensions (GTFS has no standard field for these)
//!
//! - `route_stops.txt` (`route_id`, `stop_id`, `stop_sequence`): the stations of a line in
//!   order. Standard GTFS derives this from `trips.txt`/`stop_times.txt`; a fare engine needs
//!   only the order, so the feed states it directly.
//! - `networks.txt` column `tap_out_required` (0/1): legs on the network are a tap-in paired
//!   with a tap-out (metro gates); otherwise every tap-in is a leg on its own (buses).
//! - `fare_leg_rules.txt` columns `min_stations`, `max_stations` (inclusive): a station-count
//!   band, counted as |index(out) − index(in)| on the line (through an interchange, the
//!   shortest sum of the two parts). A banded rule never matches a single-tap leg.
//! - `fare_products.txt` column `discount_percent` (0–100, on a product row for one medium): the
//!   medium's own discount on that product (e.g. metro on a stored-value card, 10 % off),
//!   applied AFTER any transfer discount, rounded down to the fen. GTFS can only give a
//!   medium its own fixed amount, which cannot express "(3 − 1) × 0.9".
//! - `fare_caps.txt` (`fare_product_id`, `cap_period` = `service_day`): a daily cap whose
//!   amount is that product's (the row with an empty `fare_media_id`). Change the amount in
//!   `fare_products.txt`.
//!
//! # Choices
//!
//! - A service day runs from 04:00 to 04:00 Asia/Shanghai time ([`service_day`]).
//! - A gated tap-in with no matching tap-out on the same network and service day (another tap
//!   came first, or the day ended) is charged the dearest fare from its station to any
//!   station of its line.
//! - Cash (`fare_media_type` 0): the product row for the cash medium is charged as is: no
//!   transfer, no media discount, not counted in the cap and never capped, because cash is
//!   paid to the driver and cannot be linked to the rider's other taps.
//! - Transfers need the same medium on both legs (Tianjin: "the same app for the whole
//!   chain"); the first rule in file order that applies is used; a leg joined by a transfer
//!   belongs to the previous leg's trip. `duration_limit_type` 2 measures from the bus tap or
//!   the metro exit to the next tap-in; a leg with no tap-out has no arrival time, so no
//!   transfer is measured from it.
//! - Taps that cannot be priced (unknown stop, route or medium, a tap-out with no tap-in, no
//!   product for the medium) are listed in [`DayFares::unpriced`], never charged.

mod error;
mod fare;
mod feed;
mod money;
mod table;
mod tap;

pub use error::FeedError;
pub use fare::fare_day;
pub use feed::{FILES, Feed, MediaType, Medium};
pub use money::format_fen;
pub use tap::{
    DayFares, Direction, Leg, MediaId, SERVICE_DAY_START_S, Tap, TripFare, UTC_OFFSET_S, Unpriced,
    service_day,
};
