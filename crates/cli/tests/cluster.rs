//! A city on several servers, on one PostgreSQL database: the server holding the writer lease
//! writes, the others forward their commands to it, and when it is killed or frozen past its
//! lease another takes over; a retry under the same key gets the first answer, never a second
//! payment. Skipped without `CITYPAY_TEST_PG`, except under CI. The Patroni cluster and its
//! faults are the chaos test's (`tests/chaos.rs`).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, BIN, GATEWAY_TEST_KEY, Running, Server, Target, admin, free_ports};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "6222021234567890128";

/// One server of the city, with its cluster port.
fn spawn(target: &Target, log: &Path, port: u16, cluster_port: u16) -> Running {
    Running(Command::new(BIN)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--db", &target.db, "--keys"])
        .arg(&target.keys)
        .args(["--cluster-listen", &format!("127.0.0.1:{cluster_port}"), "--lease-ttl-ms", "1000"])
        .env("CITYPAY_ALLOW_PRIVATE_NOTIFY", "1")
        .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap())
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

/// A merchant's endpoint that holds every notification until released, counting each event's
/// posts in flight at once: `(url, arrivals, most posts of one event at once, release)`.
async fn holding_receiver() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (arrived, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (release, released) = tokio::sync::watch::channel(false);
    let (arrived_, most_) = (arrived.clone(), most.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (arrived, most, in_flight, mut released) = (arrived_.clone(), most_.clone(), in_flight.clone(), released.clone());
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let event = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end].lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            break text[..end].lines().find_map(|l| l.strip_prefix("citypay-event-id:")).unwrap_or("").trim().to_owned();
                        }
                    }
                };
                arrived.fetch_add(1, SeqCst);
                let now = {
                    let mut in_flight = in_flight.lock().unwrap();
                    let count = in_flight.entry(event.clone()).or_default();
                    *count += 1;
                    *count
                };
                most.fetch_max(now, SeqCst);
                let _ = released.wait_for(|r| *r).await;
                *in_flight.lock().unwrap().get_mut(&event).unwrap() -= 1;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (url, arrived, most, release)
}

fn signal(server: &Running, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &server.0.id().to_string()]).status().unwrap().success());
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
    let _ = a.0.wait();
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

    // Two servers never send one notification at once. A, the writer, posts one and freezes
    // while the merchant's endpoint holds it; B takes over and runs the jobs, and leaves the
    // event alone while A's attempt may still be answered.
    let (hook, arrived, most_at_once, release) = holding_receiver().await;
    let (_, notified) = api_a.merchant(&operator, &support::uscc("M0000002"), "retail", Some(&hook)).await;
    let trade = json!({"out_trade_no": "N1", "amount": {"amount": 100, "currency": "CNY"}, "subject": "water"});
    let (_, created, _) = api_a.call("POST", "/v1/trades", Some(&notified), None, Some(trade)).await;
    let (status, paid, _) = pay(&base[1], &resident, "pay-3", created["qr_payload"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let posted = Instant::now();
    while arrived.load(SeqCst) == 0 {
        assert!(posted.elapsed() < Duration::from_secs(10), "the writer posted no notification");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&a, "STOP");
    wait_role(&base[1], "writer", Duration::from_secs(10)).await;
    // B's dispatcher runs every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (seen, most) = (arrived.load(SeqCst), most_at_once.load(SeqCst));
    release.send(true).unwrap();
    signal(&a, "CONT");
    assert_eq!(most, 1, "an event was posted again while its first post was in flight ({seen} posts)");

    // A ride-key rotation sent to one server reaches every server of the city: each signs
    // riders' credentials with the new key within seconds, and no key file changed.
    let keys_before = std::fs::read(&target.keys).unwrap();
    let rotated = Command::new(BIN)
        .args(["transit", "rotate-key", "--server", &base[0], "--overlap-hours", "24"])
        .env("CITYPAY_OPERATOR_PASSWORD", support::OPERATOR_PASSWORD)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    eprintln!("{}", String::from_utf8_lossy(&rotated.stdout).trim());
    for (i, base) in base.iter().enumerate() {
        let asked = Instant::now();
        loop {
            let (status, issued, _) = Api::new(&Server { child: Command::new("true").spawn().unwrap(), base: base.clone() })
                .call("POST", "/v1/ride-credentials", Some(&resident), Some(&format!("ride-{i}-{}", asked.elapsed().as_millis())), Some(json!({"rider_key": "ab".repeat(32)})))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{issued}");
            let credential = citypay_ride::Credential::from_bytes(&support::unhex(issued["credential"].as_str().unwrap())).unwrap();
            if credential.key_id == 2 {
                eprintln!("{base} signs with the new ride key {:?} after the rotation", asked.elapsed());
                break;
            }
            assert!(asked.elapsed() < Duration::from_secs(5), "{base} still signs with key {} 5 s after the rotation", credential.key_id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(std::fs::read(&target.keys).unwrap(), keys_before);

    drop((a, b));
    target.assert_audit_clean();
}
