//! Loading feeds: precise errors for bad input.

use citypay_fares::{Direction, Feed, FeedError, Tap, fare_day};

const NETWORKS: &str = "network_id,tap_out_required\nbus,0\nrail,1\n";
const ROUTES: &str = "route_id,network_id\nR1,bus\nL1,rail\n";
const STOPS: &str = "stop_id,stop_name\nA,Alpha\nB,Beta\nC,Gamma\n";
const MEDIA: &str = "fare_media_id,fare_media_type\napp,4\n";
const PRODUCTS: &str =
    "fare_product_id,amount,currency\nflat,1.5,CNY\nshort,2,CNY\nlong,3.50,CNY\n";
const LEG_RULES: &str = "leg_group_id,network_id,fare_product_id,min_stations,max_stations\n\
                         b,bus,flat,,\nr,rail,short,0,1\nr,rail,long,2,\n";
const ROUTE_STOPS: &str = "route_id,stop_id,stop_sequence\nL1,A,1\nL1,B,2\nL1,C,3\n";

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("networks.txt", NETWORKS),
        ("routes.txt", ROUTES),
        ("stops.txt", STOPS),
        ("fare_media.txt", MEDIA),
        ("fare_products.txt", PRODUCTS),
        ("fare_leg_rules.txt", LEG_RULES),
        ("route_stops.txt", ROUTE_STOPS),
    ]
}

fn with(name: &'static str, text: &'static str) -> Result<Feed, FeedError> {
    let mut files = files();
    files.retain(|(n, _)| *n != name);
    files.push((name, text));
    Feed::from_strs(&files)
}

fn bad(result: Result<Feed, FeedError>) -> (String, u64, String) {
    match result {
        Err(FeedError::Bad {
            file, line, column, ..
        }) => (file, line, column),
        other => panic!("expected a Bad error, got {other:?}"),
    }
}

#[test]
fn a_minimal_feed_prices_from_strings() {
    let feed = Feed::from_strs(&files()).expect("loads");
    let taps = [
        Tap::new("A", "R1", 0, Direction::In, "app"),
        Tap::new("A", "L1", 100, Direction::In, "app"),
        Tap::new("C", "L1", 200, Direction::Out, "app"),
    ];
    let day = fare_day(&feed, &taps);
    assert_eq!(day.total_fen, 150 + 350);
    assert_eq!(feed.day_cap_fen(), None);
}

#[test]
fn route_networks_txt_assigns_networks() {
    let mut files = files();
    files.retain(|(n, _)| *n != "routes.txt");
    files.push(("routes.txt", "route_id\nR1\nL1\n"));
    files.push((
        "route_networks.txt",
        "network_id,route_id\nbus,R1\nrail,L1\n",
    ));
    let feed = Feed::from_strs(&files).expect("loads");
    let day = fare_day(&feed, &[Tap::new("B", "R1", 0, Direction::In, "app")]);
    assert_eq!(day.total_fen, 150);
}

#[test]
fn missing_required_files_are_named() {
    let mut files = files();
    files.retain(|(n, _)| *n != "stops.txt");
    assert_eq!(
        Feed::from_strs(&files).unwrap_err(),
        FeedError::Missing {
            file: "stops.txt".into()
        }
    );
}

#[test]
fn bad_amounts_point_at_line_and_column() {
    let products = "fare_product_id,amount,currency\nflat,1.5,CNY\nshort,2.005,CNY\nlong,3,CNY\n";
    assert_eq!(
        bad(with("fare_products.txt", products)),
        ("fare_products.txt".into(), 3, "amount".into())
    );
    let products = "fare_product_id,amount,currency\nflat,1.5,USD\n";
    assert_eq!(bad(with("fare_products.txt", products)).2, "currency");
}

#[test]
fn dangling_references_are_refused() {
    let rules = "fare_product_id,network_id\nnope,bus\n";
    assert_eq!(
        bad(with("fare_leg_rules.txt", rules)),
        ("fare_leg_rules.txt".into(), 2, "fare_product_id".into())
    );
    let rules = "fare_product_id,network_id\nflat,tram\n";
    assert_eq!(bad(with("fare_leg_rules.txt", rules)).2, "network_id");
    let route_stops = "route_id,stop_id,stop_sequence\nL1,A,1\nL1,Z,2\n";
    assert_eq!(
        bad(with("route_stops.txt", route_stops)),
        ("route_stops.txt".into(), 3, "stop_id".into())
    );
    let routes = "route_id,network_id\nR1,ferry\n";
    assert_eq!(bad(with("routes.txt", routes)).2, "network_id");
}

#[test]
fn malformed_rows_and_headers_are_refused() {
    assert_eq!(
        bad(with("stops.txt", "stop_id\nA\nA\n")),
        ("stops.txt".into(), 3, "stop_id".into())
    );
    assert_eq!(
        bad(with("stops.txt", "stop_name\nA\n")),
        ("stops.txt".into(), 1, "stop_id".into())
    );
    let (file, line, column) = bad(with("stops.txt", "stop_id,stop_name\nA,x\nB,y,extra\n"));
    assert_eq!((file.as_str(), line, column.as_str()), ("stops.txt", 3, ""));
    assert_eq!(
        bad(with(
            "fare_media.txt",
            "fare_media_id,fare_media_type\napp,9\n"
        ))
        .2,
        "fare_media_type"
    );
    let rules = "fare_product_id,from_timeframe_group_id\nflat,peak\n";
    assert_eq!(
        bad(with("fare_leg_rules.txt", rules)).2,
        "from_timeframe_group_id"
    );
    let transfers = "from_leg_group_id,to_leg_group_id,fare_transfer_type\nb,zz,1\n";
    assert_eq!(
        bad(with("fare_transfer_rules.txt", transfers)).2,
        "to_leg_group_id"
    );
    let transfers = "from_leg_group_id,duration_limit,fare_transfer_type\nb,60,1\n";
    assert_eq!(
        bad(with("fare_transfer_rules.txt", transfers)).2,
        "duration_limit_type"
    );
}

#[test]
fn errors_print_file_line_and_column() {
    let err = with("stops.txt", "stop_id\nA\nA\n").unwrap_err();
    assert_eq!(err.to_string(), "stops.txt:3: column `stop_id`: duplicate");
}

#[test]
fn a_byte_order_mark_and_blank_lines_are_accepted() {
    let stops = "\u{feff}stop_id,stop_name\nA,Alpha\n\nB,Beta\nC,Gamma\n";
    assert!(with("stops.txt", stops).is_ok());
}

#[test]
fn load_dir_reports_a_missing_directory_as_missing_files() {
    let err = Feed::load_dir("/nonexistent/feed").unwrap_err();
    assert_eq!(
        err,
        FeedError::Missing {
            file: "routes.txt".into()
        }
    );
}
