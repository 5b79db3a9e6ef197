//! Every `citypay` command that takes `--db` runs against PostgreSQL: the synchronous
//! PostgreSQL client blocks on a runtime of its own, so a command that opens it inside its
//! async runtime panics there and only there. Skipped without `CITYPAY_TEST_PG`, except under CI.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::{Api, BIN, Target, admin, start};

fn run(mut command: Command) -> Output {
    let started = std::time::Instant::now();
    let output = command.output().unwrap();
    eprintln!("{:?}: {:.1} s", command.get_args().take(2).collect::<Vec<_>>(), started.elapsed().as_secs_f64());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("panicked"), "{command:?}: {}\n{stderr}", output.status);
    output
}

/// `citypay ARGS --db DB`, with nothing else.
fn on(db: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).args(["--db", db]);
    command
}

fn query_one(db: &str, sql: &str) -> i64 {
    let (db, sql) = (db.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
        client.query_one(sql.as_str(), &[]).unwrap().get::<_, i64>(0)
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_with_a_database_runs_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(city) = Target::postgres(dir.path(), "citypay_cmd_city") else { return };

    // admin, serve and audit on one city.
    admin(&city, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&city, &["create-operator", "--username", "root", "--role", "platform"]);
    admin(&city, &["fee-rate", "--category", "retail", "--rate-bp", "60"]);
    admin(&city, &["fee-rate"]);
    let server = start(&city, &dir.path().join("serve.log")).await;
    Api::new(&server).operator().await;
    drop(server);
    run(city.command(&["audit"]));

    // The benchmarks, each on a database of its own.
    let fresh = |name: &str| Target::postgres(dir.path(), name).unwrap().db;
    run(on(&fresh("citypay_cmd_ledger"), &["bench", "ledger", "--accounts", "100", "--transfers", "2000", "--clients", "64", "--json"]));
    run(on(&fresh("citypay_cmd_payments"), &["bench", "payments", "--payments", "200", "--merchants", "2", "--clients", "8", "--json"]));
    run(on(&fresh("citypay_cmd_transit"), &["bench", "transit", "--taps", "400", "--verifications", "200", "--json"]));
    run(on(&fresh("citypay_cmd_settlement"), &["bench", "settlement", "--payments", "2000", "--merchants", "20", "--bills", "200", "--json"]));

    // The writer of the crash test.
    let mut child = on(&fresh("citypay_cmd_crash"), &["crash-child"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"ACCOUNT 1\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ready"), "{}", String::from_utf8_lossy(&output.stdout));

    // A simulated day, then the one-shot commands of a day on it.
    let report = dir.path().join("report");
    // A simulation on PostgreSQL keeps its keys in its report directory.
    let sim = Target { keys: report.join("citypay.keys"), ..Target::postgres(dir.path(), "citypay_cmd_sim").unwrap() };
    let mut simulate = Command::new(BIN);
    simulate.args(["simulate", "--residents", "300", "--city", "Hangzhou", "--db", &sim.db, "--report"]).arg(&report);
    run(simulate);
    let operator = query_one(&sim.db, "SELECT id FROM merchants WHERE category = 'transit' ORDER BY id LIMIT 1").to_string();
    run(sim.command(&["settle", "--date", "2017-08-01"]));
    run(sim.command(&["transit", "fare-run", "--date", "2017-08-01"]));
    run(sim.command(&["transit", "legs", "--date", "2017-08-01", "--operator", &operator]));
    run(sim.command(&["audit"]));
}
