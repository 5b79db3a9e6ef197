//! Taps in, fares out: the public input and output types.

use std::cmp::Ordering;

/// Offset of local time (Asia/Shanghai, no daylight saving) from UTC, in seconds.
pub const UTC_OFFSET_S: i64 = 8 * 3600;
/// A service day starts at 04:00 local time: taps after midnight and before 04:00 belong to
/// the previous service day.
pub const SERVICE_DAY_START_S: i64 = 4 * 3600;

/// The service day of a Unix time: days since 1970-01-01 (local), shifted by
/// [`SERVICE_DAY_START_S`].
pub fn service_day(time_unix_s: i64) -> i64 {
    (time_unix_s + UTC_OFFSET_S - SERVICE_DAY_START_S).div_euclid(86_400)
}

/// Tap direction at a validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Boarding or entering the gates.
    In,
    /// Leaving the gates (networks with `tap_out_required`).
    Out,
}

/// A fare medium id (`fare_media.fare_media_id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaId(pub String);

/// One validation by a rider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tap {
    /// `stops.stop_id` of the validator.
    pub stop_id: String,
    /// `routes.route_id`: the bus route, or the metro line of the gate.
    pub route_id: String,
    /// When, in Unix seconds.
    pub time_unix_s: i64,
    /// In or out.
    pub direction: Direction,
    /// The medium used.
    pub media: MediaId,
}

impl Tap {
    /// A tap with these fields.
    pub fn new(
        stop_id: &str,
        route_id: &str,
        time_unix_s: i64,
        direction: Direction,
        media: &str,
    ) -> Tap {
        Tap {
            stop_id: stop_id.to_string(),
            route_id: route_id.to_string(),
            time_unix_s,
            direction,
            media: MediaId(media.to_string()),
        }
    }

    fn key(&self) -> (i64, u8, &str, &str, &str) {
        // At the same second, a tap-out comes before a tap-in (leave, then enter again).
        let dir = match self.direction {
            Direction::Out => 0,
            Direction::In => 1,
        };
        (
            self.time_unix_s,
            dir,
            &self.route_id,
            &self.stop_id,
            &self.media.0,
        )
    }
}

impl Ord for Tap {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Tap {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One priced leg: a bus boarding or a metro ride from gate to gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The boarding (or gate-in) tap.
    pub tap_in: Tap,
    /// The gate-out tap; `None` for single-tap networks and for a missing tap-out.
    pub tap_out: Option<Tap>,
    /// The route's network.
    pub network_id: String,
    /// True for a tap-in with no tap-out by the end of the service day (charged the line's
    /// maximum fare).
    pub tap_out_missing: bool,
    /// Stations travelled (metro), `None` for single-tap legs.
    pub stations: Option<i64>,
    /// The fare product applied.
    pub product_id: String,
    /// The product's amount before any discount.
    pub base_fen: i64,
    /// Taken off by a transfer rule (first, before the medium's discount).
    pub transfer_fen: i64,
    /// Taken off by the medium's percentage discount.
    pub media_discount_fen: i64,
    /// Taken off because the daily cap was reached.
    pub cap_fen: i64,
    /// What the rider pays for this leg.
    pub charged_fen: i64,
    /// True when paid with a cash medium (`fare_media_type` 0).
    pub cash: bool,
}

/// A trip: one leg, or a chain of legs joined by transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripFare {
    /// The legs in time order.
    pub legs: Vec<Leg>,
    /// Service day of the first leg (see [`service_day`]).
    pub service_day: i64,
    /// Sum of the legs' base fares.
    pub base_fen: i64,
    /// `base_fen - charged_fen`: transfers, media discounts and the cap.
    pub discount_fen: i64,
    /// What the rider pays.
    pub charged_fen: i64,
    /// Human-readable explanation, one clause per leg.
    pub reason: String,
}

/// A tap that could not be priced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpriced {
    /// The tap.
    pub tap: Tap,
    /// Why it was not priced.
    pub reason: String,
}

/// The fares of a rider's taps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DayFares {
    /// Trips in time order.
    pub trips: Vec<TripFare>,
    /// Taps that were not priced (unknown stop, route or medium, a tap-out with no tap-in...).
    pub unpriced: Vec<Unpriced>,
    /// Sum of the trips' charges.
    pub total_fen: i64,
}
