//! A city on several servers, on one PostgreSQL database: the server holding the writer lease
//! writes, the others forward their commands to it, and when it is killed or frozen past its
//! lease another takes over; a retry under the same key gets the first answer, never a second
//! payment. Skipped without `CITYPAY_TEST_PG`, except under CI. The Patroni cluster and its
//! faults are the chaos test's (`tests/chaos.rs`).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, BIN, GATEWAY_TEST_KEY, Server, Target, admin, free_ports};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "6222021234567890128";

/// One server of the city, with its cluster port.
fn spawn(target: &Target, log: &Path, port: u16, cluster_port: u16) -> Child {
    Command::new(BIN)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--db", &target.db, "--keys"])
        .arg(&target.keys)
        .args(["--cluster-listen", &format!("127.0.0.1:{cluster_port}"), "--lease-ttl-ms", "1000"])
        .env("CITYPAY_ALLOW_PRIVATE_NOTIFY", "1")
        .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap()
}

async fn health(base: &str) -> Option<Value> {
    let response = reqwest::get(format!("{base}/health")).await.ok()?;
    response.json().await.ok()
}

/// Waits until the server at `base` reports `role`; answers its health and how long it took.
async fn wait_role(base: &str, role: &str, within: Duration) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        if let Some(health) = health(base).await
            && health["role"] == role
        {
            return (health, started.elapsed());
        }
        assert!(started.elapsed() < within, "{base} did not become {role} within {within:?}: {:?}", health(base).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A QR payment: `(status, body, the writer epoch header)`.
async fn pay(base: &str, resident: &str, key: &str, payload: &str) -> (StatusCode, Value, Option<i64>) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/payments/qr"))
        .header("authorization", resident)
        .header("idempotency-key", key)
        .json(&json!({"payload": payload}))
        .send()
        .await
        .unwrap();
    let epoch = response.headers().get("citypay-writer-epoch").and_then(|v| v.to_str().ok()?.parse().ok());
    (response.status(), response.json().await.unwrap_or(Value::Null), epoch)
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_forward_to_the_writer_and_take_over_when_it_dies_or_freezes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = Target::postgres(dir.path(), "citypay_cluster") else { return };
    let made = Command::new(BIN).args(["keys", "new"]).arg(&target.keys).env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);

    let free = free_ports(4);
    let (ports, cluster_ports) = ([free[0], free[1]], [free[2], free[3]]);
    let base = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let mut a = spawn(&target, &logs[0], ports[0], cluster_ports[0]);
    let (writer, _) = wait_role(&base[0], "writer", Duration::from_secs(30)).await;
    let first_epoch = writer["writer_epoch"].as_i64().unwrap();
    let b = spawn(&target, &logs[1], ports[1], cluster_ports[1]);
    let (forwarding, _) = wait_role(&base[1], "forwarding", Duration::from_secs(30)).await;
    assert_eq!(forwarding["writer_epoch"].as_i64(), Some(first_epoch));

    // Everything through B, which forwards to A; the merchant reads through A.
    let api_b = Api::new(&Server { child: Command::new("true").spawn().unwrap(), base: base[1].clone() });
    let api_a = Api::new(&Server { child: Command::new("true").spawn().unwrap(), base: base[0].clone() });
    let operator = api_b.operator().await;
    let (_, shop) = api_b.merchant(&operator, &support::uscc("M0000001"), "restaurant", None).await;
    let resident = api_b.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    api_b.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
    api_b.top_up(&resident, CARD, 10_000).await;
    let trade = json!({"out_trade_no": "T1", "amount": {"amount": 2_372, "currency": "CNY"}, "subject": "beef noodles"});
    let (status, created, _) = api_a.call("POST", "/v1/trades", Some(&shop), None, Some(trade)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let payload = created["qr_payload"].as_str().unwrap().to_owned();
    let (status, paid, epoch) = pay(&base[1], &resident, "pay-1", &payload).await;
    assert_eq!((status, paid["status"].as_str(), epoch), (StatusCode::OK, Some("TRADE_SUCCESS"), Some(first_epoch)), "{paid}");
    // The merchant, told TRADE_SUCCESS, sees it paid through the other server.
    let (_, seen, _) = api_a.call("GET", "/v1/trades/T1", Some(&shop), None, None).await;
    assert_eq!(seen["status"], "TRADE_SUCCESS", "{seen}");

    // A dies: B takes over within the lease's bound, and the retry gets the first answer.
    signal(&a, "KILL");
    let _ = a.wait();
    let (writer, took) = wait_role(&base[1], "writer", Duration::from_secs(5)).await;
    let second_epoch = writer["writer_epoch"].as_i64().unwrap();
    assert!(second_epoch > first_epoch);
    eprintln!("takeover after SIGKILL: {took:?}");
    let (status, again, epoch) = pay(&base[1], &resident, "pay-1", &payload).await;
    assert_eq!((status, &again, epoch), (StatusCode::OK, &paid, Some(second_epoch)));

    // A comes back and forwards to B.
    a = spawn(&target, &logs[0], ports[0], cluster_ports[0]);
    wait_role(&base[0], "forwarding", Duration::from_secs(30)).await;

    // B freezes past its lease: A takes over. Woken, B forwards to A; nothing it had in hand
    // is acknowledged under its old epoch.
    let trade = json!({"out_trade_no": "T2", "amount": {"amount": 500, "currency": "CNY"}, "subject": "tea"});
    let (_, created, _) = api_a.call("POST", "/v1/trades", Some(&shop), None, Some(trade)).await;
    let payload = created["qr_payload"].as_str().unwrap().to_owned();
    signal(&b, "STOP");
    let frozen = Instant::now();
    let in_hand = tokio::spawn({
        let (base, resident, payload) = (base[1].clone(), resident.clone(), payload.clone());
        async move { pay(&base, &resident, "pay-2", &payload).await }
    });
    let (writer, took) = wait_role(&base[0], "writer", Duration::from_secs(10)).await;
    let third_epoch = writer["writer_epoch"].as_i64().unwrap();
    assert!(third_epoch > second_epoch);
    eprintln!("takeover after SIGSTOP: {:?} after the freeze ({took:?} of waiting)", frozen.elapsed());
    signal(&b, "CONT");
    let (status, body, epoch) = in_hand.await.unwrap();
    eprintln!("the frozen server's request in hand: {status} {body} epoch {epoch:?}");
    if status.is_success() {
        assert_eq!(epoch, Some(third_epoch), "an acknowledgement carries the epoch that committed it");
    }
    wait_role(&base[1], "forwarding", Duration::from_secs(10)).await;
    // Whatever happened, the retry through either server gets one answer, and one payment.
    let (status, first, _) = pay(&base[1], &resident, "pay-2", &payload).await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{first}");
    let (_, second, _) = pay(&base[0], &resident, "pay-2", &payload).await;
    assert_eq!(first, second);
    let (_, wallet, _) = api_a.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"]["amount"].as_i64(), Some(10_000 - 2_372 - 500), "{wallet}");

    for mut server in [a, b] {
        let _ = server.kill();
        let _ = server.wait();
    }
    target.assert_audit_clean();
}
