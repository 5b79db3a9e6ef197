//! `citypay simulate` through the real binary: the same seed gives the same summary and the
//! same books, the books are clean after every day, the dashboard's numbers (read from the
//! database) agree with what the simulation counted, and a used database is refused.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn simulate(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .arg("simulate")
        .args(["--report", dir.to_str().unwrap(), "--json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let summary = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap(), summary, stderr)
}

/// The summary without what may differ between equal runs: timings and the report's path.
fn outcome(summary: &Value) -> Value {
    let mut summary = summary.clone();
    let object = summary.as_object_mut().unwrap();
    for key in ["timing", "seconds", "report"] {
        object.remove(key);
    }
    summary
}

#[test]
fn the_same_seed_gives_the_same_city_and_books() {
    let scratch = tempfile::tempdir().unwrap();
    let args = ["--residents", "900", "--days", "2", "--seed", "7"];
    let (code, first, stderr) = simulate(&scratch.path().join("a"), &args);
    assert_eq!(code, 0, "{stderr}");
    let (code, second, stderr) = simulate(&scratch.path().join("b"), &args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcome(&first), outcome(&second));
    assert!(first["transactions"].as_u64().unwrap() > 1_000, "{first}");
    let audits = first["audits"].as_array().unwrap();
    assert_eq!(audits.len(), 2);
    assert!(audits.iter().all(|a| a["clean"] == true), "{audits:?}");
    // Some of every kind of thing happened.
    let tianjin = &first["simulated"]["payments"]["Tianjin"];
    let kinds = [("retail", "cash"), ("retail", "qr"), ("retail", "payment_code"), ("restaurant", "qr"), ("transit", "ride_code"), ("transit", "cash")];
    for (category, method) in kinds {
        assert!(tianjin[category][method]["count"].as_u64().unwrap() > 0, "{category} {method}: {tianjin}");
    }
    assert!(first["simulated"]["refunds"]["Tianjin"]["count"].as_u64().unwrap() > 0);
    assert!(first["simulated"]["registrations"]["Tianjin"].as_u64().unwrap() > 0, "people register during the days");
    assert!(first["simulated"]["rides"]["Tianjin"].as_u64().unwrap() > 0, "ride codes validated offline");

    let (code, other, _) = simulate(&scratch.path().join("c"), &["--residents", "900", "--days", "2", "--seed", "8"]);
    assert_eq!(code, 0);
    assert_ne!(other["books_digest"], first["books_digest"], "another seed, another city");
}

#[test]
fn the_report_shows_what_the_simulation_did() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("report");
    let (code, summary, stderr) = simulate(&dir, &["--residents", "600", "--city", "Hangzhou", "--city", "Tianjin"]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let cities = report["days"][0]["cities"].as_array().unwrap();
    assert_eq!(cities.len(), 2);
    for city in cities {
        let name = city["city"].as_str().unwrap();
        // Payments read back from the trades table equal the payments the simulation made.
        let counted = &summary["simulated"]["payments"][name];
        for (category, methods) in counted.as_object().unwrap() {
            for (method, counter) in methods.as_object().unwrap() {
                assert_eq!(&city["payments"][category][method], counter, "{name} {category} {method}");
            }
        }
        assert_eq!(city["refunds"], summary["simulated"]["refunds"][name], "{name} refunds");
        let registered = summary["set_up"]["registrations"][name].as_u64().unwrap_or(0)
            + summary["simulated"]["registrations"][name].as_u64().unwrap_or(0);
        assert_eq!(city["real_name_residents"].as_u64().unwrap(), registered, "{name}");
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("Hangzhou") && html.contains("id=\"chart-methods\""));
    let first_day_payments = cities[0]["payments"].clone();

    // The database now holds a city: a second run on it is refused, and changes nothing.
    let db = format!("sqlite:{}", dir.join("city.db").display());
    let (code, _, stderr) = simulate(&scratch.path().join("again"), &["--residents", "600", "--db", &db]);
    assert_ne!(code, 0);
    assert!(stderr.contains("fresh database"), "{stderr}");

    // Told to continue, it lives the next day of the same city on the same database: the
    // report holds both days, the books are clean after it.
    let first_summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["simulate", "--continue", "--days", "1", "--json", "--report", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let next: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((next["first_day"].as_u64(), next["days"].as_u64(), next["seed"].as_u64()), (Some(2), Some(1), summary["seed"].as_u64()));
    assert_eq!(next["audits"][0]["date"], "2017-08-02");
    assert!(next["audits"].as_array().unwrap().iter().all(|a| a["clean"] == true), "{}", next["audits"]);
    assert!(next["transactions"].as_u64().unwrap() > summary["transactions"].as_u64().unwrap() / 2, "a day like the first");
    assert_eq!(next["simulated"]["registrations"], serde_json::json!({}), "everyone who registers did so in the first run");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let dates: Vec<&str> = report["days"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2017-08-01", "2017-08-02"]);
    // The first day as the report shows it is unchanged by the second.
    assert_eq!(report["days"][0]["cities"][0]["payments"], first_day_payments);
    // A stale summary (as after a continued run that stopped part-way) would live day 2
    // again: refused.
    std::fs::write(dir.join("summary.json"), &first_summary).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["simulate", "--continue", "--json", "--report", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already holds day 2"), "{}", String::from_utf8_lossy(&output.stderr));
    // What to continue comes from the report; a seed of its own is refused.
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["simulate", "--continue", "--seed", "9", "--report", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// The four cities on two shards (placed on them in turn): travellers paying at shops of
/// other cities and money sent to family elsewhere cross the shards. The same seed gives the
/// same books; the country's audit (each shard, the sums across shards, the clearing accounts)
/// is clean after every day; everything that happened is what happens on one database, and
/// some of it crossed shards; the dashboard counts a traveller's payment in the shop's city.
#[test]
fn the_cities_on_two_shards_do_what_they_do_on_one_database() {
    let scratch = tempfile::tempdir().unwrap();
    let args = ["--residents", "900", "--days", "2", "--seed", "7"];
    let (code, one, stderr) = simulate(&scratch.path().join("one"), &args);
    assert_eq!(code, 0, "{stderr}");
    let on_two: Vec<&str> = args.iter().copied().chain(["--shards", "2"]).collect();
    let (code, first, stderr) = simulate(&scratch.path().join("a"), &on_two);
    assert_eq!(code, 0, "{stderr}");
    let (code, second, stderr) = simulate(&scratch.path().join("b"), &on_two);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcome(&first), outcome(&second), "the same seed, the same books on two shards");
    assert_eq!(first["shards"], 2);
    assert!(scratch.path().join("a").join("shard2.db").exists());
    let audits = first["audits"].as_array().unwrap();
    assert!(audits.len() == 2 && audits.iter().all(|a| a["clean"] == true), "{audits:?}");
    let count = |summary: &Value, what: &str| -> u64 { summary["simulated"][what].as_object().unwrap().values().map(|c| c["count"].as_u64().unwrap()).sum() };
    assert!(count(&first, "across_shards") > 0, "some payments and transfers crossed shards: {}", first["simulated"]);
    assert!(count(&first, "paid_away") > 0 && count(&first, "sent_to_family") > 0, "{}", first["simulated"]);
    assert_eq!(count(&one, "across_shards"), 0, "nothing crosses on one database");
    for part in ["set_up", "simulated"] {
        let (mut a, mut b) = (one[part].clone(), first[part].clone());
        a.as_object_mut().unwrap().remove("across_shards");
        b.as_object_mut().unwrap().remove("across_shards");
        assert_eq!(a, b, "{part}: what happened on two shards happens on one database");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(scratch.path().join("a").join("report.json")).unwrap()).unwrap();
    for day in report["days"].as_array().unwrap() {
        assert_eq!(day["cities"].as_array().unwrap().len(), 4, "every shard's cities are in the report");
    }
}

/// The same seed on PostgreSQL gives the same summary and the same books as on SQLite.
/// Skipped without `CITYPAY_TEST_PG`, except under CI.
#[test]
fn the_same_seed_gives_the_same_books_on_postgres() {
    let Ok(server) = std::env::var("CITYPAY_TEST_PG") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CITYPAY_TEST_PG is not set and CI=true: run through scripts/with-postgres.sh");
        eprintln!("skipping: CITYPAY_TEST_PG not set (run through scripts/with-postgres.sh)");
        return;
    };
    let name = format!("citypay_sim_{}", std::process::id());
    let mut client = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = server.rsplit_once('/').expect("CITYPAY_TEST_PG names a database");
    let db = format!("{base}/{name}");
    let scratch = tempfile::tempdir().unwrap();
    let args = ["--residents", "800", "--seed", "11", "--city", "Fuzhou", "--city", "Wuhan"];
    let (code, on_sqlite, stderr) = simulate(&scratch.path().join("sqlite"), &args);
    assert_eq!(code, 0, "{stderr}");
    let with_db: Vec<&str> = args.iter().copied().chain(["--db", db.as_str()]).collect();
    let (code, on_postgres, stderr) = simulate(&scratch.path().join("postgres"), &with_db);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcome(&on_postgres), outcome(&on_sqlite));
}
