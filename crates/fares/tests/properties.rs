//! Property tests: totals are bounded and order-free; the loader never panics.

mod common;

use citypay_fares::{Direction, FILES, Feed, Tap, fare_day};
use common::{M1, M2, T0};
use proptest::prelude::*;

const BUS_STOPS: [&str; 4] = ["B_TIANTA", "B_XIZHAN", "B_GULOU", "NOWHERE"];
const ROUTES: [&str; 6] = ["8", "600", "824", "M1", "M2", "X9"];
const MEDIA: [&str; 4] = ["ride_code", "city_card", "cash", "gold_card"];

fn tap() -> impl Strategy<Value = Tap> {
    // Times within one service day (04:00 to 03:59 local): T0 is 08:00.
    (
        0..6usize,
        0..30usize,
        -4 * 3600..20 * 3600i64,
        any::<bool>(),
        0..4usize,
    )
        .prop_map(|(route, stop, dt, out, media)| {
            let stop = match ROUTES[route] {
                "M1" => M1[stop % M1.len()],
                "M2" => M2[stop % M2.len()],
                _ => BUS_STOPS[stop % BUS_STOPS.len()],
            };
            let direction = if out { Direction::Out } else { Direction::In };
            Tap::new(stop, ROUTES[route], T0 + dt, direction, MEDIA[media])
        })
}

fn taps_and_shuffle() -> impl Strategy<Value = (Vec<Tap>, Vec<Tap>)> {
    prop::collection::vec(tap(), 0..24)
        .prop_flat_map(|taps| (Just(taps.clone()), Just(taps).prop_shuffle()))
}

proptest! {
    #[test]
    fn totals_are_bounded_and_order_free((taps, shuffled) in taps_and_shuffle()) {
        let feed = Feed::tianjin();
        let day = fare_day(&feed, &taps);
        prop_assert!(day.total_fen >= 0);
        let legs = day.trips.iter().flat_map(|t| &t.legs);
        let non_cash: i64 = legs.filter(|l| !l.cash).map(|l| l.charged_fen).sum();
        prop_assert!(non_cash <= 1500, "non-cash total {non_cash}");
        for trip in &day.trips {
            prop_assert!(trip.charged_fen >= 0 && trip.charged_fen <= trip.base_fen);
        }
        prop_assert_eq!(fare_day(&feed, &shuffled), day);
    }

    #[test]
    fn the_loader_never_panics(file in 0..FILES.len(), text in any::<String>()) {
        let mut files = shipped_files();
        files.retain(|(n, _)| *n != FILES[file]);
        files.push((FILES[file], text.as_str()));
        let _ = Feed::from_strs(&files);
    }

    #[test]
    fn the_loader_never_panics_on_csv_like_text(
        file in 0..FILES.len(),
        text in "[a-z_,.\"0-9 \n-]{0,300}",
    ) {
        let mut files = shipped_files();
        files.retain(|(n, _)| *n != FILES[file]);
        files.push((FILES[file], text.as_str()));
        let _ = Feed::from_strs(&files);
    }

    #[test]
    fn the_loader_never_panics_on_mangled_rows(file in 0..FILES.len(), cut in 0..400usize, junk in "[,\"0-9a-z-.]{0,8}") {
        let mut files = shipped_files();
        let (name, text) = files.iter().find(|(n, _)| *n == FILES[file]).copied().unwrap_or((FILES[file], ""));
        let cut = (0..=cut.min(text.len())).rev().find(|c| text.is_char_boundary(*c)).unwrap_or(0);
        let mangled = format!("{}{junk}{}", &text[..cut], &text[cut..]);
        files.retain(|(n, _)| *n != name);
        files.push((name, mangled.as_str()));
        let _ = Feed::from_strs(&files);
    }
}

fn shipped_files() -> Vec<(&'static str, &'static str)> {
    Feed::tianjin_files()
}
