//! The worked examples of the brief and of `domain.md` 3.3, on the shipped Tianjin-like feed.

mod common;

use citypay_fares::{DayFares, Direction, Feed, Tap, fare_day, service_day};
use common::{M1, M2, MIN, T0, bus, m1_ride};

fn price(taps: &[Tap]) -> DayFares {
    fare_day(&Feed::tianjin(), taps)
}

fn charges(day: &DayFares) -> Vec<i64> {
    day.trips
        .iter()
        .flat_map(|t| t.legs.iter().map(|l| l.charged_fen))
        .collect()
}

#[test]
fn the_shipped_feed_loads_from_the_directory_too() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/feeds/tianjin");
    let loaded = Feed::load_dir(dir).expect("feed loads");
    assert_eq!(loaded.day_cap_fen(), Some(1500));
    assert_eq!(Feed::tianjin().day_cap_fen(), Some(1500));
    let taps = m1_ride(0, 8, T0, "ride_code");
    assert_eq!(fare_day(&loaded, &taps), price(&taps));
}

#[test]
fn bus_only_is_two_yuan() {
    let day = price(&[bus("8", "B_TIANTA", T0, "ride_code")]);
    assert_eq!(day.total_fen, 200);
    assert_eq!(day.trips.len(), 1);
    assert!(day.unpriced.is_empty());
}

#[test]
fn metro_fares_by_stations() {
    for (to, fen) in [
        (3, 200),
        (5, 200),
        (6, 300),
        (8, 300),
        (10, 300),
        (11, 400),
        (12, 400),
        (16, 400),
        (17, 500),
        (20, 500),
    ] {
        let day = price(&m1_ride(0, to, T0, "ride_code"));
        assert_eq!(day.total_fen, fen, "{to} stations");
        assert_eq!(
            day.trips[0].legs[0].stations,
            Some(i64::try_from(to).unwrap())
        );
    }
    // Backwards along the line counts the same.
    assert_eq!(price(&m1_ride(20, 12, T0, "ride_code")).total_fen, 300);
}

#[test]
fn metro_across_the_interchange() {
    // M1 index 0 -> XNJ (9 stations) -> M2 index 10 (4 more): 13 stations, 4 yuan.
    let taps = [
        Tap::new(M1[0], "M1", T0, Direction::In, "ride_code"),
        Tap::new(M2[10], "M2", T0 + 40 * MIN, Direction::Out, "ride_code"),
    ];
    let day = price(&taps);
    assert_eq!(day.trips[0].legs[0].stations, Some(13));
    assert_eq!(day.total_fen, 400);
}

#[test]
fn bus_then_metro_within_90_minutes_gets_one_yuan_off() {
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "ride_code")];
    taps.extend(m1_ride(0, 8, T0 + 30 * MIN, "ride_code"));
    let day = price(&taps);
    assert_eq!(charges(&day), [200, 200]);
    assert_eq!(day.trips.len(), 1, "the transfer joins one trip");
    assert_eq!(day.trips[0].discount_fen, 100);
    assert_eq!(day.total_fen, 400);
}

#[test]
fn bus_then_metro_after_90_minutes_pays_full() {
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "ride_code")];
    taps.extend(m1_ride(0, 8, T0 + 91 * MIN, "ride_code"));
    let day = price(&taps);
    assert_eq!(charges(&day), [200, 300]);
    assert_eq!(day.trips.len(), 2);
    // Exactly 90 minutes still counts.
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "ride_code")];
    taps.extend(m1_ride(0, 8, T0 + 90 * MIN, "ride_code"));
    assert_eq!(price(&taps).total_fen, 400);
}

#[test]
fn metro_then_bus_counts_from_the_exit() {
    // Enter at T0, exit after 16 min; the bus 85 min after the exit (101 after the entry).
    let mut taps = m1_ride(0, 8, T0, "ride_code").to_vec();
    taps.push(bus("8", "B_XIZHAN", T0 + 16 * MIN + 85 * MIN, "ride_code"));
    assert_eq!(charges(&price(&taps)), [300, 100]);
}

#[test]
fn transfers_chain_bus_metro_bus() {
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "ride_code")];
    taps.extend(m1_ride(0, 8, T0 + 10 * MIN, "ride_code"));
    taps.push(bus("600", "B_GULOU", T0 + 40 * MIN, "ride_code"));
    let day = price(&taps);
    assert_eq!(charges(&day), [200, 200, 100]);
    assert_eq!(day.trips.len(), 1);
}

#[test]
fn stored_value_card_takes_the_transfer_before_its_discount() {
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "city_card")];
    taps.extend(m1_ride(0, 8, T0 + 30 * MIN, "city_card"));
    let day = price(&taps);
    // (3 - 1) x 0.9 = 1.80
    assert_eq!(charges(&day), [200, 180]);
    let metro = &day.trips[0].legs[1];
    assert_eq!((metro.transfer_fen, metro.media_discount_fen), (100, 20));
    // Alone, the same ride is 3 x 0.9 = 2.70.
    assert_eq!(price(&m1_ride(0, 8, T0, "city_card")).total_fen, 270);
}

#[test]
fn the_daily_cap_stops_charging_at_15_yuan() {
    let mut taps = Vec::new();
    taps.extend(m1_ride(0, 20, T0, "ride_code")); // 5.00
    taps.extend(m1_ride(20, 0, T0 + 2 * 3600, "ride_code")); // 5.00
    taps.extend(m1_ride(0, 8, T0 + 4 * 3600, "ride_code")); // 3.00, 13.00 so far
    taps.extend(m1_ride(8, 20, T0 + 6 * 3600, "ride_code")); // 4.00, only 2.00 charged
    taps.push(bus("8", "B_TIANTA", T0 + 9 * 3600, "ride_code")); // capped: 0
    let day = price(&taps);
    assert_eq!(charges(&day), [500, 500, 300, 200, 0]);
    assert_eq!(day.trips[3].legs[0].cap_fen, 200);
    assert_eq!(day.total_fen, 1500);
}

#[test]
fn the_cap_resets_with_the_service_day_at_4am() {
    let mut taps = Vec::new();
    for k in 0..3 {
        taps.extend(m1_ride(0, 20, T0 + k * 2 * 3600, "ride_code"));
    }
    // 01:00 the next calendar day is still the same service day; 05:00 is the next one.
    let one_am = T0 + 17 * 3600;
    let five_am = T0 + 21 * 3600;
    assert_eq!(service_day(one_am), service_day(T0));
    assert_eq!(service_day(five_am), service_day(T0) + 1);
    taps.push(bus("8", "B_TIANTA", one_am, "ride_code"));
    taps.push(bus("8", "B_TIANTA", five_am, "ride_code"));
    assert_eq!(charges(&price(&taps)), [500, 500, 500, 0, 200]);
}

#[test]
fn a_missing_tap_out_is_charged_the_line_maximum() {
    let day = price(&[Tap::new(M1[0], "M1", T0, Direction::In, "ride_code")]);
    assert_eq!(day.total_fen, 500);
    assert!(day.trips[0].legs[0].tap_out_missing);
    // From the middle of the line the farthest station is 13 away: 4 yuan.
    let day = price(&[Tap::new(M1[9], "M1", T0, Direction::In, "ride_code")]);
    assert_eq!(day.total_fen, 400);
    // A second tap-in before any tap-out leaves the first without one.
    let mut taps = vec![Tap::new(M1[0], "M1", T0, Direction::In, "ride_code")];
    taps.extend(m1_ride(3, 6, T0 + 3600, "ride_code"));
    assert_eq!(charges(&price(&taps)), [500, 200]);
}

#[test]
fn cash_on_the_bus_is_recorded_without_discounts_or_cap() {
    let mut taps = Vec::new();
    for k in 0..3 {
        taps.extend(m1_ride(0, 20, T0 + k * 2 * 3600, "ride_code"));
    }
    taps.push(bus("8", "B_TIANTA", T0 + 7 * 3600, "cash"));
    // A metro ride within 90 minutes of a cash bus gets no transfer.
    taps.extend(m1_ride(0, 8, T0 + 7 * 3600 + 10 * MIN, "cash"));
    let day = price(&taps);
    assert_eq!(charges(&day), [500, 500, 500, 200]);
    assert!(day.trips[3].legs[0].cash);
    assert_eq!(
        day.unpriced.len(),
        1,
        "no metro product for cash: {:?}",
        day.unpriced
    );
    assert_eq!(day.total_fen, 1700);
}

#[test]
fn out_of_order_taps_give_the_same_fares() {
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "city_card")];
    taps.extend(m1_ride(0, 8, T0 + 30 * MIN, "city_card"));
    taps.extend(m1_ride(9, 21, T0 + 5 * 3600, "ride_code"));
    taps.push(Tap::new(
        M2[3],
        "M2",
        T0 + 8 * 3600,
        Direction::In,
        "ride_code",
    ));
    let sorted = price(&taps);
    taps.reverse();
    assert_eq!(price(&taps), sorted);
    taps.swap(0, 3);
    assert_eq!(price(&taps), sorted);
}

#[test]
fn unpriceable_taps_are_listed_not_charged() {
    let taps = [
        Tap::new("NOWHERE", "8", T0, Direction::In, "ride_code"),
        Tap::new("B_TIANTA", "8", T0, Direction::In, "gold_card"),
        Tap::new(M1[4], "M1", T0 + MIN, Direction::Out, "ride_code"),
        Tap::new("B_TIANTA", "8", T0 + 2 * MIN, Direction::Out, "ride_code"),
    ];
    let day = price(&taps);
    assert_eq!(day.total_fen, 0);
    assert_eq!(day.unpriced.len(), 4);
}

#[test]
fn reasons_explain_the_fare() {
    let mut taps = vec![bus("824", "B_XIZHAN", T0, "city_card")];
    taps.extend(m1_ride(0, 8, T0 + 30 * MIN, "city_card"));
    let reason = &price(&taps).trips[0].reason;
    assert!(reason.contains("metro 8 stations 3.00"), "{reason}");
    assert!(reason.contains("transfer -1.00"), "{reason}");
    assert!(reason.contains("medium -0.20"), "{reason}");
}
