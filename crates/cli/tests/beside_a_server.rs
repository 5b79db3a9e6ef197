//! The README's one-shot commands beside a running server: `settle` and `transit fare-run`
//! go through it with `--server`; without it they say why they cannot open the database.

mod support;

use support::City;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_go_through_a_running_server() {
    let city = City::start().await;
    // Two days ago in Asia/Shanghai: closed for settlement and for the fare run at any hour.
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let day = citypay_ledger::Timestamp::from_unix_seconds(seconds - 2 * 86_400).local_date().to_string();

    for args in [vec!["settle", "--date", &day], vec!["transit", "fare-run", "--date", &day]] {
        let output = city.target.command(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} opened a database the server holds");
        assert!(stderr.contains("--server URL"), "{args:?}: {stderr}");

        let mut through = city.target.command(&args);
        through.args(["--server", &city.server.base]);
        let output = through.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?} --server: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.starts_with(&day), "{stdout}");
    }
    // A wrong password is the server's refusal, said plainly.
    let mut wrong = city.target.command(&["settle", "--date", &day, "--server", &city.server.base]);
    let output = wrong.env("CITYPAY_OPERATOR_PASSWORD", "wrong").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"), "{}", String::from_utf8_lossy(&output.stderr));
    city.finish(&["operator secret"]);
}
