//! GTFS fare feeds (`citypay-fares`).

use std::collections::BTreeMap;

use citypay_fares::{Direction, Feed, Tap, fare_day};

/// The line that starts each file of a feed in the input: `--- <file name>`.
const FILE_MARK: &str = "--- ";
/// The media a rider may use (the Tianjin feed's).
const MEDIA: [&str; 3] = ["cash", "city_card", "ride_code"];
/// 2026-12-02 08:00 in Beijing.
const MORNING: i64 = 1_796_169_600;

/// A feed's files, each after a line `--- <file name>`, as `Feed::load_dir` reads a folder.
///
/// A feed that loads prices a day of each medium (every route ridden end to end, one after
/// another, so transfers and the cap come into play) and the fares add up: no leg charges
/// less than nothing, each trip is the sum of its legs and the day the sum of its trips, and a
/// day's card and code fares stay under the daily cap.
pub fn gtfs_feed(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let files = files(text);
    let Ok(feed) = Feed::from_strs(&files) else { return };
    for medium in MEDIA {
        let taps = day_of_rides(&feed, medium);
        let fares = fare_day(&feed, &taps);
        let mut by_day: BTreeMap<i64, i64> = BTreeMap::new();
        for trip in &fares.trips {
            assert_eq!(trip.charged_fen, trip.legs.iter().map(|l| l.charged_fen).sum::<i64>());
            assert_eq!(trip.base_fen, trip.legs.iter().map(|l| l.base_fen).sum::<i64>());
            assert_eq!(trip.discount_fen, trip.base_fen - trip.charged_fen);
            for leg in &trip.legs {
                assert!(leg.charged_fen >= 0, "a leg charged {} fen", leg.charged_fen);
                if !leg.cash {
                    *by_day.entry(trip.service_day).or_default() += leg.charged_fen;
                }
            }
        }
        assert_eq!(fares.total_fen, fares.trips.iter().map(|t| t.charged_fen).sum::<i64>());
        if let Some(cap) = feed.day_cap_fen() {
            for spent in by_day.values() {
                assert!(*spent <= cap.max(0), "{spent} fen charged in a day capped at {cap}");
            }
        }
    }
}

fn files(text: &str) -> Vec<(&str, &str)> {
    let mut files = Vec::new();
    let mut rest = text;
    while let Some(after) = rest.strip_prefix(FILE_MARK) {
        let (name, body) = after.split_once('\n').unwrap_or((after, ""));
        let end = body.find(&format!("\n{FILE_MARK}")).map_or(body.len(), |i| i + 1);
        files.push((name, &body[..end]));
        rest = &body[end..];
    }
    files
}

/// Every route ridden from its first stop to its last (at most 20 routes), half an hour apart.
fn day_of_rides(feed: &Feed, medium: &str) -> Vec<Tap> {
    let mut taps = Vec::new();
    let mut time = MORNING;
    for (route, _network, gated) in feed.routes().take(20) {
        let stops = feed.route_stops(route);
        let (Some(first), Some(last)) = (stops.first(), stops.last()) else { continue };
        taps.push(Tap::new(first, route, time, Direction::In, medium));
        if gated {
            taps.push(Tap::new(last, route, time + 900, Direction::Out, medium));
        }
        time += 1800;
    }
    taps
}
