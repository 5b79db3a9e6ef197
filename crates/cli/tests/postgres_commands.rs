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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_with_a_database_runs_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(city) = Target::postgres(dir.path(), "citypay_cmd_city") else { return };

    // admin, serve and audit on one city, and the one-shot commands of a closed day on it
    // (`simulate` runs on PostgreSQL in `simulate.rs`).
    admin(&city, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&city, &["create-operator", "--username", "root", "--role", "platform"]);
    admin(&city, &["fee-rate", "--category", "retail", "--rate-bp", "60"]);
    admin(&city, &["fee-rate"]);
    let server = start(&city, &dir.path().join("serve.log")).await;
    let api = Api::new(&server);
    let operator = api.operator().await;
    let (transit, _) = api.merchant(&operator, "91350100M000100Y43", "transit", None).await;
    drop(server);
    let transit = transit["merchant_id"].as_str().unwrap().to_owned();
    run(city.command(&["settle", "--date", "2017-08-01"]));
    run(city.command(&["transit", "fare-run", "--date", "2017-08-01"]));
    run(city.command(&["transit", "legs", "--date", "2017-08-01", "--operator", &transit]));
    run(city.command(&["audit"]));

    // The benchmarks, each on a database of its own.
    let fresh = |name: &str| Target::postgres(dir.path(), name).unwrap().db;
    run(on(&fresh("citypay_cmd_ledger"), &["bench", "ledger", "--accounts", "100", "--transfers", "2000", "--clients", "64", "--json"]));
    run(on(&fresh("citypay_cmd_payments"), &["bench", "payments", "--payments", "200", "--merchants", "2", "--clients", "8", "--json"]));
    run(on(&fresh("citypay_cmd_transit"), &["bench", "transit", "--taps", "400", "--verifications", "200", "--json"]));
    run(on(&fresh("citypay_cmd_settlement"), &["bench", "settlement", "--payments", "400", "--merchants", "4", "--bills", "100", "--json"]));

    // The writer of the crash test.
    let mut child = on(&fresh("citypay_cmd_crash"), &["crash-child"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"ACCOUNT 1\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ready"), "{}", String::from_utf8_lossy(&output.stdout));
}
