//! End to end through the real server: `citypay admin` sets up, `citypay serve` runs on a
//! loopback port, a client registers, tops up, pays by QR and by code, refunds, closes and
//! cancels, replays with its idempotency keys; merchants are isolated; the merchant's signed
//! notifications arrive; the books are clean after; the logs hold no personal data.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{Api, BIN, Target, admin, hmac_hex, start, start_with};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "4111111111111111";

/// A notification receiver on loopback that answers 200 and keeps (headers, body).
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    receiver_with(None).await
}

/// A notification receiver on loopback, over TLS when given an acceptor.
async fn receiver_with(tls: Option<tokio_rustls::TlsAcceptor>) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let kept = kept.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            answer_one(stream, &kept).await;
                        }
                    }
                    None => answer_one(socket, &kept).await,
                }
            });
        }
    });
    (url, seen)
}

/// Reads one request, keeps (lower-cased head, body), answers 200.
async fn answer_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut socket: S, kept: &Mutex<Vec<(String, String)>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_lowercase();
            let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if data.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
                kept.lock().unwrap().push((head, body));
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                let _ = socket.shutdown().await;
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_pays_through_the_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.db").display().to_string();
    a_city_pays_through_the_api(Target { db, keys: dir.path().join("keys") }, dir.path()).await;
}

/// The same city on PostgreSQL: skipped without `CITYPAY_TEST_PG`, except under CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_pays_through_the_api_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = Target::postgres(dir.path(), "citypay_http") else { return };
    a_city_pays_through_the_api(target, dir.path()).await;
}

async fn a_city_pays_through_the_api(target: Target, dir: &Path) {
    let log = dir.join("serve.log");
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let server = start(&target, &log).await;
    let api = Api { client: Client::new(), base: server.base.clone() };
    let (hook, notifications) = receiver().await;

    // An operator onboards two merchants.
    let (status, session, _) = api.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": "operator secret"}))).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let operator = format!("Bearer {}", session["token"].as_str().unwrap());
    let onboard = |uscc: &str, url: Option<&str>| {
        json!({"city": 330100, "name": "West Lake Noodles", "uscc": uscc, "mcc": "5812", "category": "restaurant",
               "settlement_account": "6222020200112233446", "notify_url": url})
    };
    let (status, shop, _) = api.call("POST", "/v1/merchants", Some(&operator), None, Some(onboard("91350100M000100Y43", Some(&hook)))).await;
    assert_eq!(status, StatusCode::CREATED, "{shop}");
    let shop_key = format!("ApiKey {}:{}", shop["api_key_id"].as_str().unwrap(), shop["api_key_secret"].as_str().unwrap());
    let (_, other, _) = api.call("POST", "/v1/merchants", Some(&operator), None, Some(onboard("91110000600037341L", None))).await;
    let other_key = format!("ApiKey {}:{}", other["api_key_id"].as_str().unwrap(), other["api_key_secret"].as_str().unwrap());

    // A resident registers; the same key answers the same; another body under it is refused.
    let registration = json!({"city": 330100, "name": "Li Lei", "mobile": "13800138000", "id_number": ID_NUMBER,
                              "password": "correct horse"});
    let (status, me, replayed) = api.call("POST", "/v1/residents", None, Some("reg-1"), Some(registration.clone())).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{me}");
    assert_eq!(me["id_masked"], "1101**********002X");
    let (status, again, replayed) = api.call("POST", "/v1/residents", None, Some("reg-1"), Some(registration.clone())).await;
    assert_eq!((status, replayed, &again), (StatusCode::CREATED, true, &me));
    let mut changed = registration.clone();
    changed["name"] = json!("Han Meimei");
    let (status, body, _) = api.call("POST", "/v1/residents", None, Some("reg-1"), Some(changed)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let (status, body, _) = api.call("POST", "/v1/residents", None, Some("reg-2"), Some(registration)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("identity_already_registered")));

    let (_, session, _) = api.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": "13800138000", "password": "correct horse"}))).await;
    let resident = format!("Bearer {}", session["token"].as_str().unwrap());

    // Unauthenticated and wrong-kind callers are refused.
    assert_eq!(api.call("GET", "/v1/wallet", None, None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/v1/wallet", Some("Bearer forged"), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/v1/wallet", Some(&shop_key), None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.call("GET", "/v1/trades/X", Some(&resident), None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.call("POST", "/v1/cities", Some(&resident), Some("c"), Some(json!({"code": 420100, "name": "Wuhan"}))).await.0, StatusCode::FORBIDDEN);

    // Link a card (the bank issued it to Li Lei) and top up 100 yuan, twice with the same key:
    // moved once.
    api.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
    let (status, card, _) = api.call("POST", "/v1/wallet/cards", Some(&resident), Some("card-1"), Some(json!({"card_number": CARD}))).await;
    assert_eq!(status, StatusCode::CREATED, "{card}");
    let top_up = json!({"card_id": card["card_id"], "amount": {"amount": 10_000, "currency": "CNY"}});
    for _ in 0..2 {
        let (status, body, _) = api.call("POST", "/v1/wallet/top-ups", Some(&resident), Some("top-1"), Some(top_up.clone())).await;
        assert_eq!((status, body["balance"]["amount"].as_i64()), (StatusCode::CREATED, Some(10_000)), "{body}");
    }
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"], json!({"amount": 10_000, "currency": "CNY"}));

    // Pay a dynamic QR.
    let trade = json!({"out_trade_no": "T1", "amount": {"amount": 2_372, "currency": "CNY"}, "subject": "beef noodles"});
    let (status, created, _) = api.call("POST", "/v1/trades", Some(&shop_key), None, Some(trade)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let payload = created["qr_payload"].as_str().unwrap().to_owned();
    let (status, paid, _) = api.call("POST", "/v1/payments/qr", Some(&resident), Some("pay-1"), Some(json!({"payload": payload}))).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");
    let (_, replay, replayed) = api.call("POST", "/v1/payments/qr", Some(&resident), Some("pay-1"), Some(json!({"payload": payload}))).await;
    assert!(replayed && replay == paid);

    // Refund partly twice (each replayable by its out_request_no), then cancel the rest.
    for (no, amount, refunded) in [("R1", 1_000, 1_000), ("R2", 372, 1_372), ("R1", 1_000, 1_372)] {
        let body = json!({"out_request_no": no, "amount": {"amount": amount, "currency": "CNY"}});
        let (status, t, _) = api.call("POST", "/v1/trades/T1/refunds", Some(&shop_key), None, Some(body)).await;
        assert_eq!((status, t["trade"]["refunded"]["amount"].as_i64()), (StatusCode::OK, Some(refunded)), "{t}");
    }
    let too_much = json!({"out_request_no": "R3", "amount": {"amount": 1_001, "currency": "CNY"}});
    let (status, body, _) = api.call("POST", "/v1/trades/T1/refunds", Some(&shop_key), None, Some(too_much)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("refund_exceeds_paid")));

    // Merchant isolation: the other merchant cannot see, refund or close T1.
    assert_eq!(api.call("GET", "/v1/trades/T1", Some(&other_key), None, None).await.0, StatusCode::NOT_FOUND);
    let refund = json!({"out_request_no": "X", "amount": {"amount": 1, "currency": "CNY"}});
    assert_eq!(api.call("POST", "/v1/trades/T1/refunds", Some(&other_key), None, Some(refund)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.call("POST", "/v1/trades/T1/close", Some(&other_key), None, None).await.0, StatusCode::NOT_FOUND);
    let (status, cancelled, _) = api.call("POST", "/v1/trades/T1/cancel", Some(&shop_key), None, None).await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("TRADE_CLOSED")));

    // Pay by payment code at the till; the till's retry answers the same.
    let (status, device, _) = api.call("POST", "/v1/payment-devices", Some(&resident), None, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let secret: Vec<u8> = (0..device["secret"].as_str().unwrap().len() / 2)
        .map(|i| u8::from_str_radix(&device["secret"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let code = citypay_codes::payment_code::PaymentCode::generate(u32::try_from(device["device"].as_u64().unwrap()).unwrap(), &secret, now);
    let charge = json!({"out_trade_no": "P1", "amount": {"amount": 1_500, "currency": "CNY"}, "subject": "tea", "auth_code": code});
    let (status, by_code, _) = api.call("POST", "/v1/trades/pay", Some(&shop_key), None, Some(charge.clone())).await;
    assert_eq!((status, by_code["method"].as_str()), (StatusCode::OK, Some("payment_code")), "{by_code}");
    assert_eq!(api.call("POST", "/v1/trades/pay", Some(&shop_key), None, Some(charge)).await.1, by_code);

    // Close an unpaid trade; record a cash sale.
    let unpaid = json!({"out_trade_no": "T2", "amount": {"amount": 100, "currency": "CNY"}, "subject": "x"});
    api.call("POST", "/v1/trades", Some(&shop_key), None, Some(unpaid)).await;
    assert_eq!(api.call("POST", "/v1/trades/T2/close", Some(&shop_key), None, None).await.1["status"], "TRADE_CLOSED");
    let cash = json!({"out_trade_no": "C1", "amount": {"amount": 800, "currency": "CNY"}, "subject": "cash"});
    assert_eq!(api.call("POST", "/v1/cash-sales", Some(&shop_key), None, Some(cash)).await.1["method"], "cash");

    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"]["amount"], 10_000 - 1_500);

    // The statement: every movement newest first with the balance after it, the shop named;
    // a page at a time; by kind; a period as CSV. It is the resident's alone.
    let (status, statement, _) = api.call("GET", "/v1/wallet/statement", Some(&resident), None, None).await;
    assert_eq!(status, StatusCode::OK, "{statement}");
    let lines = statement["lines"].as_array().unwrap();
    let seen: Vec<(&str, i64, i64)> = lines.iter().map(|l| (l["kind"].as_str().unwrap(), l["amount"]["amount"].as_i64().unwrap(), l["balance_after"]["amount"].as_i64().unwrap())).collect();
    // The cancel refunded what the two refunds left.
    let expected = vec![("payment", -1_500, 8_500), ("refund", 1_000, 10_000), ("refund", 372, 9_000), ("refund", 1_000, 8_628), ("payment", -2_372, 7_628), ("top_up", 10_000, 10_000)];
    assert_eq!(seen, expected, "{statement}");
    assert_eq!(lines[0]["counterparty"], "West Lake Noodles");
    assert_eq!(lines[5]["counterparty"], "bank card");
    assert_eq!((statement["balance"]["amount"].as_i64(), statement["available"]["amount"].as_i64()), (Some(8_500), Some(8_500)));
    let mut paged = Vec::new();
    let mut path = "/v1/wallet/statement?limit=2".to_owned();
    loop {
        let (status, page, _) = api.call("GET", &path, Some(&resident), None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(page["lines"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/wallet/statement?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(&paged, lines);
    let (_, refunds, _) = api.call("GET", "/v1/wallet/statement?kind=refund,top_up", Some(&resident), None, None).await;
    assert_eq!(refunds["lines"].as_array().unwrap().iter().map(|l| l["balance_after"]["amount"].as_i64().unwrap()).collect::<Vec<_>>(), vec![10_000, 9_000, 8_628, 10_000]);
    // Yesterday to tomorrow: the test may cross midnight in Beijing.
    let yesterday = citypay_ledger::Timestamp::from_unix_seconds(now - 86_400).local_date();
    let tomorrow = citypay_ledger::Timestamp::from_unix_seconds(now + 86_400).local_date();
    let csv = api.client.get(format!("{}/v1/wallet/statement?format=csv&from={yesterday}&to={tomorrow}", api.base)).header("authorization", &resident).send().await.unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 7, "{csv}");
    assert!(rows[1].contains(",top_up,100.00,100.00,bank card,") && rows[6].contains(",payment,-15.00,85.00,West Lake Noodles,"), "{csv}");
    for bad in ["kind=lottery", "from=2026-13-01", "format=pdf", "cursor=garbage", "from=2026-12-02&to=2026-12-01"] {
        assert_eq!(api.call("GET", &format!("/v1/wallet/statement?{bad}"), Some(&resident), None, None).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(api.call("GET", "/v1/wallet/statement", Some(&shop_key), None, None).await.0, StatusCode::FORBIDDEN);

    // The merchant lists its trades a page at a time; the other merchant sees none of them.
    let mut seen = Vec::new();
    let mut path = "/v1/trades?limit=2".to_owned();
    loop {
        let (status, page, _) = api.call("GET", &path, Some(&shop_key), None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|t| t["out_trade_no"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/trades?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["C1", "P1", "T1", "T2"]);
    let (_, other_page, _) = api.call("GET", "/v1/trades", Some(&other_key), None, None).await;
    assert_eq!(other_page["items"], json!([]));
    assert_eq!(api.call("GET", "/v1/trades?cursor=garbage", Some(&shop_key), None, None).await.0, StatusCode::BAD_REQUEST);

    // A merchant that lost its keys gets a new one from an operator; a resident cannot.
    let other_id = other["merchant_id"].as_str().unwrap();
    let (status, recovered, _) = api.call("POST", &format!("/v1/merchants/{other_id}/api-keys"), Some(&operator), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{recovered}");
    let recovered_key = format!("ApiKey {}:{}", recovered["api_key_id"].as_str().unwrap(), recovered["api_key_secret"].as_str().unwrap());
    assert_eq!(api.call("GET", "/v1/trades", Some(&recovered_key), None, None).await.0, StatusCode::OK);
    assert_eq!(api.call("POST", &format!("/v1/merchants/{other_id}/api-keys"), Some(&resident), None, None).await.0, StatusCode::FORBIDDEN);

    // Key rotation: a second key works; once the first is revoked it is refused.
    let (status, second, _) = api.call("POST", "/v1/api-keys", Some(&shop_key), None, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let second_key = format!("ApiKey {}:{}", second["api_key_id"].as_str().unwrap(), second["api_key_secret"].as_str().unwrap());
    let first_id = shop["api_key_id"].as_str().unwrap();
    assert_eq!(api.call("POST", &format!("/v1/api-keys/{first_id}/revoke"), Some(&other_key), None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.call("POST", &format!("/v1/api-keys/{first_id}/revoke"), Some(&second_key), None, None).await.0, StatusCode::OK);
    assert_eq!(api.call("GET", "/v1/trades/T1", Some(&shop_key), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/v1/trades/T1", Some(&second_key), None, None).await.0, StatusCode::OK);

    // Every documented route is a real route: without credentials it answers 401/4xx, never
    // the router's own 404 or 405.
    let (_, spec, _) = api.call("GET", "/openapi.json", None, None, None).await;
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path.replace("{out_trade_no}", "T1").replace("{key_id}", "mk_x");
            let (status, body, _) = api.call(&method.to_uppercase(), &concrete, None, None, Some(json!({}))).await;
            let code = body["error"]["code"].as_str().unwrap_or("");
            assert!(!matches!(code, "not_found" | "method_not_allowed"), "{method} {path}: {status} {body}");
        }
    }

    // The merchant's notifications arrive, signed with its webhook secret.
    let deadline = Instant::now() + Duration::from_secs(10);
    while notifications.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "notifications did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let webhook_secret = shop["webhook_secret"].as_str().unwrap();
    for (head, body) in notifications.lock().unwrap().iter() {
        let signature = head.lines().find_map(|l| l.strip_prefix("citypay-signature:")).unwrap().trim().to_owned();
        let t = signature.trim_start_matches("t=").split(',').next().unwrap();
        assert_eq!(signature, format!("t={t},v1={}", hmac_hex(webhook_secret, &format!("{t}.{body}"))));
        assert!(head.contains("citypay-event-id:"));
    }

    drop(server);
    // The books are clean, and the logs hold no ID number, card number or secret.
    let audit = Command::new(BIN).args(["audit", "--db", &target.db, "--keys"]).arg(&target.keys).output().unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("/v1/payments/qr"), "the server logged its requests: {logs}");
    let requests: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        requests.iter().any(|r| r["span"]["route"] == "/v1/payments/qr" && r["span"]["status"] == 200),
        "request logs are JSON objects with the route and status: {logs}"
    );
    for secret in [ID_NUMBER, "11010519491231002", CARD, "correct horse", shop["api_key_secret"].as_str().unwrap(), webhook_secret] {
        assert!(!logs.contains(secret), "the logs contain a secret");
    }
}

/// The live dashboard over a simulated day: operators sign in with the form and get a cookie;
/// the page shows the day's numbers as the simulation counted them; a city operator sees only
/// their city, also as JSON; nobody else sees anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_dashboard_shows_a_simulated_day_to_operators() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let output = Command::new(BIN)
        .args(["simulate", "--residents", "600", "--city", "Hangzhou", "--city", "Tianjin", "--json", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let target = Target { db: report.join("city.db").display().to_string(), keys: report.join("city.db.keys") };
    admin(&target, &["create-operator", "--username", "root"]);
    admin(&target, &["create-operator", "--username", "tianjin", "--role", "city", "--city", "120000"]);
    let server = start(&target, &dir.path().join("server.log")).await;
    let api = &server.base;
    let client = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Signed out: sent to the sign-in form; a wrong password stays there.
    let response = client.get(format!("{api}/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/dashboard/sign-in");
    let form = |user: &str, password: &str| format!("username={user}&password={}", password.replace(' ', "+"));
    let sign_in = |body: String| {
        client
            .post(format!("{api}/dashboard/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(sign_in(form("root", "wrong password")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let forged = client.get(format!("{api}/dashboard")).header("cookie", "citypay_dashboard=forged").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);

    // The platform operator sees both cities, with the simulation's numbers.
    let response = sign_in(form("root", "operator secret")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/dashboard"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = client.get(format!("{api}/dashboard?date=2017-08-01")).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    for city in ["Hangzhou", "Tianjin"] {
        let payments: u64 = summary["simulated"]["payments"][city]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|methods| methods.as_object().unwrap().values())
            .map(|counter| counter["count"].as_u64().unwrap())
            .sum();
        let cell = format!("<td class=\"name\">{city}</td><td data-metric=\"payments\" data-value=\"{payments}\">");
        assert!(html.contains(&cell), "{city}: {payments} payments not on the page");
    }
    assert!(html.contains("http-equiv=\"refresh\""), "the live page reloads itself");
    let bad_date = client.get(format!("{api}/dashboard?date=2017-02-30")).header("cookie", &session).send().await.unwrap();
    assert_eq!(bad_date.status(), StatusCode::BAD_REQUEST);

    // A city operator's page and JSON hold only their city.
    let response = sign_in(form("tianjin", "operator secret")).await.unwrap();
    let session = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = client.get(format!("{api}/dashboard?date=2017-08-01")).header("cookie", &session).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Tianjin") && !html.contains("Hangzhou"));
    let token = client
        .post(format!("{api}/v1/operator-sessions"))
        .json(&json!({"username": "tianjin", "password": "operator secret"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let stats: Value = client
        .get(format!("{api}/v1/city-stats?date=2017-08-01"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cities = stats["days"][0]["cities"].as_array().unwrap();
    assert_eq!(cities.len(), 1);
    assert_eq!(cities[0]["payments"], summary["simulated"]["payments"]["Tianjin"]);
    let anonymous = client.get(format!("{api}/v1/city-stats")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// A merchant's notification URL may be HTTPS: the certificate is checked against the trusted
/// roots (here a test CA given in CITYPAY_WEBHOOK_CA), and the signed event arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_an_https_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let (hook, seen) = receiver_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    assert!(hook.starts_with("https://"));

    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root"]);
    let server = start_with(&target, &dir.path().join("serve.log"), &[("CITYPAY_WEBHOOK_CA", &ca)]).await;
    let api = Api { client: Client::new(), base: server.base.clone() };
    let (_, session, _) = api.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": "operator secret"}))).await;
    let operator = format!("Bearer {}", session["token"].as_str().unwrap());
    let (status, shop, _) = api
        .call("POST", "/v1/merchants", Some(&operator), None, Some(json!({"city": 330100, "name": "Shop", "uscc": "91350100M000100Y43", "mcc": "5411",
            "category": "retail", "settlement_account": "6222020200112233446", "notify_url": hook})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{shop}");
    let key = format!("ApiKey {}:{}", shop["api_key_id"].as_str().unwrap(), shop["api_key_secret"].as_str().unwrap());
    let sale = json!({"out_trade_no": "cash1", "amount": {"amount": 500, "currency": "CNY"}, "subject": "tea"});
    assert_eq!(api.call("POST", "/v1/cash-sales", Some(&key), None, Some(sale)).await.0, StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no notification over HTTPS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (head, body) = seen.lock().unwrap()[0].clone();
    assert!(body.contains("cash1"), "{body}");
    let signature = head.lines().find_map(|l| l.strip_prefix("citypay-signature:")).unwrap().trim().to_owned();
    let t = signature.trim_start_matches("t=").split(',').next().unwrap();
    assert_eq!(signature, format!("t={t},v1={}", hmac_hex(shop["webhook_secret"].as_str().unwrap(), &format!("{t}.{body}"))));
}

/// `simulate --server` drives a running server through its API: the server's own statistics
/// (what its live dashboard shows) hold exactly the payments the simulation made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulation_drives_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["create-operator", "--username", "root"]);
    let server = start(&target, &dir.path().join("serve.log")).await;
    let simulate = |seed: &str| {
        Command::new(BIN)
            .args(["simulate", "--server", &server.base, "--residents", "400", "--city", "Hangzhou", "--city", "Tianjin", "--seed", seed, "--json"])
            .env("CITYPAY_OPERATOR_PASSWORD", "operator secret")
            .output()
            .unwrap()
    };
    let output = simulate("5");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(summary["transactions"].as_u64().unwrap() > 100, "{summary}");
    assert!(summary["skipped"]["journey"].as_u64().unwrap() > 0, "journeys are the server's fare run's: {summary}");
    assert_eq!(summary["simulated"]["refused"], json!({}), "{summary}");

    let api = Api { client: Client::new(), base: server.base.clone() };
    let (_, session, _) = api.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": "operator secret"}))).await;
    let operator = format!("Bearer {}", session["token"].as_str().unwrap());
    let (status, stats, _) = api.call("GET", "/v1/city-stats", Some(&operator), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let cities = stats["days"][0]["cities"].as_array().unwrap();
    for city in ["Hangzhou", "Tianjin"] {
        let shown = cities.iter().find(|c| c["city"] == city).unwrap_or_else(|| panic!("{city} not in {stats}"));
        assert_eq!(shown["payments"], summary["simulated"]["payments"][city], "{city}");
        let registered = summary["set_up"]["registrations"][city].as_u64().unwrap() + summary["simulated"]["registrations"][city].as_u64().unwrap_or(0);
        assert_eq!(shown["real_name_residents"].as_u64(), Some(registered), "{city}");
    }
    // Another seed is another population on the same server; the same seed again is refused.
    assert!(simulate("6").status.success());
    let again = simulate("5");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds this seed's city"));
}

fn hex(bytes: &[u8]) -> String {
    citypay_vault::hex::encode(bytes)
}

/// A GET by validator `id`, signed with its device key at `now`.
async fn signed_get(api: &Api, device: &citypay_ride::DeviceKey, id: u32, path: &str, now: u32) -> Value {
    let request = api.client.get(format!("{}{path}", api.base)).header("authorization", support::validator_authorization(device, id, "GET", path, u64::from(now), ""));
    request.send().await.unwrap().json().await.unwrap()
}

/// Transit through the real server: a transit operator registers a validator, a rider gets a
/// credential, the validator checks a code offline and uploads the tap signed with its device
/// key (a wrong signature, a stale time or another validator's id are refused), downloads the
/// deny list, and an open service day cannot be fared yet. (Fares and arrears over closed days
/// are tested at the service level, where the clock can move.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "120000", "--name", "Tianjin"]);
    admin(&target, &["create-operator", "--username", "root"]);
    let server = start(&target, &dir.path().join("serve.log")).await;
    let api = Api { client: Client::new(), base: server.base.clone() };
    let (_, session, _) = api.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": "operator secret"}))).await;
    let operator = format!("Bearer {}", session["token"].as_str().unwrap());
    let (status, transit_operator, _) = api
        .call("POST", "/v1/merchants", Some(&operator), Some("m-1"), Some(json!({"city": 120000, "name": "天津地铁", "uscc": "91350100M000100Y43",
            "mcc": "4111", "category": "transit", "settlement_account": "6222020200112233446"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{transit_operator}");
    let operator_key = format!("ApiKey {}:{}", transit_operator["api_key_id"].as_str().unwrap(), transit_operator["api_key_secret"].as_str().unwrap());

    let device = citypay_ride::DeviceKey::from_seed([8; 32]);
    let (status, validator, _) = api
        .call("POST", "/v1/validators", Some(&operator_key), Some("v-1"),
            Some(json!({"route_id": "824", "stop_id": "B_XIZHAN", "device_key": hex(&device.public_bytes())})))
        .await;
    assert_eq!((status, validator["fare_estimate"]["amount"].as_i64()), (StatusCode::CREATED, Some(200)), "{validator}");
    let id = u32::try_from(validator["validator_id"].as_u64().unwrap()).unwrap();
    let (status, body, _) = api
        .call("POST", "/v1/validators", Some(&operator_key), Some("v-2"), Some(json!({"route_id": "824", "stop_id": "M1_XIZHAN", "device_key": hex(&[1; 32])})))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")));

    let registration = json!({"city": 120000, "name": "Li Lei", "mobile": "13800138000", "id_number": ID_NUMBER, "password": "correct horse"});
    api.call("POST", "/v1/residents", None, Some("reg-1"), Some(registration)).await;
    let (_, session, _) = api.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": "13800138000", "password": "correct horse"}))).await;
    let resident = format!("Bearer {}", session["token"].as_str().unwrap());
    let rider = citypay_ride::RiderKey::from_seed([9; 32]);
    let rider_after = citypay_ride::RiderKey::from_seed([10; 32]);
    let (status, issued, _) = api
        .call("POST", "/v1/ride-credentials", Some(&resident), Some("cred-1"), Some(json!({"rider_key": hex(&rider.public_bytes())})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let bytes: [u8; 118] = citypay_vault::hex::decode(issued["credential"].as_str().unwrap()).unwrap();
    let credential = citypay_ride::Credential::from_bytes(&bytes).unwrap();
    assert_eq!(credential.terms.account_ref.to_string(), issued["account_ref"].as_str().unwrap());
    assert_eq!(issued["ceiling"]["amount"].as_i64(), Some(500), "an empty wallet gets one ride of credit");

    // The bus validator checks the code offline with the platform key it was given.
    let now = u32::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let keys = signed_get(&api, &device, id, &format!("/v1/validators/{id}/ride-keys"), now).await;
    assert_eq!(keys["revoked"], json!([]), "{keys}");
    let key = &keys["keys"][0];
    let public: [u8; 32] = citypay_vault::hex::decode(key["public_key"].as_str().unwrap()).unwrap();
    let validity = citypay_ride::Validity::new(u32::try_from(key["not_before"].as_u64().unwrap()).unwrap(), u32::try_from(key["not_after"].as_u64().unwrap()).unwrap()).unwrap();
    let mut keyring = citypay_ride::PlatformKeyring::new();
    keyring.insert(citypay_ride::PlatformPublicKey::from_bytes(u16::try_from(key["key_id"].as_u64().unwrap()).unwrap(), public, validity).unwrap());
    let policy = citypay_ride::Policy { fare_estimate_fen: 200, ..citypay_ride::Policy::default() };
    let mut bus = citypay_ride::Validator::new(keyring, policy);
    let mut phone = citypay_ride::RiderDevice::new(rider, credential);
    let gate = citypay_ride::Gate { validator_id: id, stop_or_route: 0, direction: citypay_ride::Direction::In };
    let tap = bus.validate(&phone.next_code(now).encode(), now, gate).unwrap();

    // Upload, signed by the device.
    let body = json!({"taps": [{"sequence": tap.sequence, "account_ref": tap.account_ref.to_string(), "direction": "in",
        "time": tap.time, "code_hash": hex(&tap.code_hash)}]})
    .to_string();
    let path = format!("/v1/validators/{id}/taps");
    let signed = |path: &str, time: u64, body: &str, key: &citypay_ride::DeviceKey| support::validator_authorization(key, id, "POST", path, time, body);
    let post = |authorization: String| {
        api.client.post(format!("{}{path}", api.base)).header("authorization", authorization).header("content-type", "application/json").body(body.clone()).send()
    };
    let time = u64::from(now);
    let answer = post(signed(&path, time, &body, &device)).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"stored": 1, "already": 0, "refused": []}));
    let again = post(signed(&path, time, &body, &device)).await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(again, json!({"stored": 0, "already": 1, "refused": []}), "a replayed upload stores nothing twice");
    for refused in [
        signed(&path, time, &body, &citypay_ride::DeviceKey::from_seed([7; 32])),
        signed(&path, time - 3_600, &body, &device),
        signed(&path, time, "{\"taps\": []}", &device),
        format!("Validator {}:{time}:00", id + 1),
    ] {
        let status = post(refused).await.unwrap().status();
        assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN, "{status}");
    }

    // The deny list, also signed; nobody owes anything yet.
    let list = signed_get(&api, &device, id, &format!("/v1/validators/{id}/deny-list"), now).await;
    assert_eq!(list, json!({"accounts": []}));

    // Today cannot be fared before it is over; only platform operators run fares. Today is
    // the service day (04:00 to 04:00 in the city), not the calendar day: from midnight to
    // 04:00 they differ.
    let today = {
        let (y, m, d) = citypay_dashboard::dates::civil_from_days(citypay_fares::service_day(i64::from(now)));
        format!("{y:04}-{m:02}-{d:02}")
    };
    let (status, body, _) = api.call("POST", "/v1/transit/fare-runs", Some(&operator), Some("run-1"), Some(json!({"date": today}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("day_not_closed")), "{body}");
    let (status, _, _) = api.call("POST", "/v1/transit/fare-runs", Some(&resident), Some("run-2"), Some(json!({"date": today}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, revenue, _) = api.call("GET", &format!("/v1/transit/revenue?date={today}"), Some(&operator_key), None, None).await;
    assert_eq!((status, revenue["legs"].as_u64()), (StatusCode::OK, Some(0)), "{revenue}");
    // Today's legs are priced as they stand, before the fare run.
    let (status, legs, _) = api.call("GET", &format!("/v1/transit/legs?date={today}&limit=10"), Some(&operator_key), None, None).await;
    assert_eq!((status, legs["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{legs}");
    let (status, _, _) = api.call("GET", &format!("/v1/transit/my-day?date={today}"), Some(&resident), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not fared yet");

    // A bus ride two days ago, uploaded late: its day is closed, so it is fared now. The
    // wallet is empty, so the fare is owed and the rider denied until it is paid. (The
    // validator was at its stop then: a tap from before its registration is refused.)
    support::sqlite_execute(&target, "UPDATE validators SET created_at = created_at - 259200");
    let past = now - 2 * 86_400;
    let day = {
        let (y, m, d) = citypay_dashboard::dates::civil_from_days(citypay_fares::service_day(i64::from(past)));
        format!("{y:04}-{m:02}-{d:02}")
    };
    let late = json!({"taps": [{"sequence": tap.sequence + 1, "account_ref": tap.account_ref.to_string(), "direction": "in",
        "time": past, "code_hash": hex(&[3; 32])}]})
    .to_string();
    let answer = api.client.post(format!("{}{path}", api.base)).header("authorization", support::validator_authorization(&device, id, "POST", &path, time, &late))
        .header("content-type", "application/json").body(late).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let (status, run, _) = api.call("POST", "/v1/transit/fare-runs", Some(&operator), Some("run-3"), Some(json!({"date": day}))).await;
    assert_eq!((status, run["riders_in_arrears"].as_u64(), run["arrears"]["amount"].as_i64()), (StatusCode::OK, Some(1), Some(200)), "{run}");
    let list = signed_get(&api, &device, id, &format!("/v1/validators/{id}/deny-list"), now).await;
    assert_eq!(list, json!({"accounts": [tap.account_ref.to_string()]}));
    let (_, my_day, _) = api.call("GET", &format!("/v1/transit/my-day?date={day}"), Some(&resident), None, None).await;
    assert_eq!((my_day["trips"].as_u64(), my_day["owed"]["amount"].as_i64()), (Some(1), Some(200)), "{my_day}");
    // The operator sees the leg and the fare it is due.
    let (_, revenue, _) = api.call("GET", &format!("/v1/transit/revenue?date={day}"), Some(&operator_key), None, None).await;
    assert_eq!(revenue, json!({"legs": 1, "fares": {"amount": 200, "currency": "CNY"}}));
    let (_, legs, _) = api.call("GET", &format!("/v1/transit/legs?date={day}"), Some(&operator_key), None, None).await;
    assert_eq!(legs["items"][0]["route_id"], "824", "{legs}");
    assert_eq!((legs["items"][0]["fare"]["amount"].as_i64(), legs["next_cursor"].is_null()), (Some(200), true), "{legs}");
    // Top up, pay what is owed: off the deny list, and the fare has left the wallet.
    api.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
    let (_, card, _) = api.call("POST", "/v1/wallet/cards", Some(&resident), Some("card-1"), Some(json!({"card_number": CARD}))).await;
    let top_up = json!({"card_id": card["card_id"], "amount": {"amount": 1_000, "currency": "CNY"}});
    assert_eq!(api.call("POST", "/v1/wallet/top-ups", Some(&resident), Some("top-1"), Some(top_up)).await.0, StatusCode::CREATED);
    let (status, paid, _) = api.call("POST", "/v1/transit/arrears-payments", Some(&resident), Some("arrears-1"), None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"]["amount"].as_i64(), Some(800));
    let list = signed_get(&api, &device, id, &format!("/v1/validators/{id}/deny-list"), now).await;
    assert_eq!(list, json!({"accounts": []}));
    let (status, body, _) = api.call("GET", &format!("/v1/transit/legs?date={day}"), Some(&resident), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // A key rotated in the key file reaches the running server on SIGHUP: validators get
    // both keys, and the new one signs the next credential.
    let rotated = Command::new(BIN).args(["transit", "rotate-key", "--keys"]).arg(&target.keys).output().unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = signed_get(&api, &device, id, &format!("/v1/validators/{id}/ride-keys"), now).await;
        if keys["keys"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the keys were not reloaded: {keys}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, issued, _) = api
        .call("POST", "/v1/ride-credentials", Some(&resident), Some("cred-2"), Some(json!({"rider_key": hex(&rider_after.public_bytes())})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let bytes: [u8; 118] = citypay_vault::hex::decode(issued["credential"].as_str().unwrap()).unwrap();
    assert_eq!(citypay_ride::Credential::from_bytes(&bytes).unwrap().key_id, 2, "the rotated key signs");
    assert_eq!(issued["ceiling"]["amount"].as_i64(), Some(800), "the ceiling follows the wallet");
}

/// Bills end to end through the server: a hospital bill with the insurance fund's part (all
/// or nothing), tuition by chosen items for a linked child, a bill of a linked relative, two
/// payers racing for one bill, late payment refused, cash at the counter, a social-security
/// contribution by proxy, signed receipts checked with the published key, the biller's files;
/// the books are clean after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_through_the_api() {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    const MOTHER: &str = "330106195203150045";
    const BOB: &str = "440524198001010013";
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let log = dir.path().join("serve.log");
    let server = start(&target, &log).await;
    let api = Api { client: Client::new(), base: server.base.clone() };
    let (_, session, _) = api.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": "operator secret"}))).await;
    let operator = format!("Bearer {}", session["token"].as_str().unwrap());
    let mut billers = Vec::new();
    for (uscc, category) in [("91350100M000100Y43", "hospital"), ("12330100470001235F", "school"), ("11330100002345678T", "social_security"), ("91110000600037341L", "utility")] {
        let body = json!({"city": 330100, "name": format!("{category} biller"), "uscc": uscc, "mcc": "8062", "category": category,
                          "settlement_account": "6222020200112233446"});
        let (status, merchant, _) = api.call("POST", "/v1/merchants", Some(&operator), None, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{merchant}");
        let key = format!("ApiKey {}:{}", merchant["api_key_id"].as_str().unwrap(), merchant["api_key_secret"].as_str().unwrap());
        billers.push((merchant["merchant_id"].as_str().map(str::to_owned).unwrap_or_else(|| merchant["merchant_id"].to_string()), key));
    }
    let [(_, hospital), (school_id, school), (bureau_id, _), (utility_id, utility)] = <[(String, String); 4]>::try_from(billers).unwrap();
    let mut residents = Vec::new();
    for (id_number, mobile, fen, card) in [(ID_NUMBER, "13800138000", 500_000, CARD), (BOB, "13900139000", 1_000, "5555555555554444")] {
        let registration = json!({"city": 330100, "name": "Li Lei", "mobile": mobile, "id_number": id_number, "password": "correct horse"});
        assert_eq!(api.call("POST", "/v1/residents", None, Some(mobile), Some(registration)).await.0, StatusCode::CREATED);
        let (_, session, _) = api.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": mobile, "password": "correct horse"}))).await;
        let token = format!("Bearer {}", session["token"].as_str().unwrap());
        api.issue_card(&operator, card, "Li Lei", id_number).await;
        let (_, card, _) = api.call("POST", "/v1/wallet/cards", Some(&token), Some("card"), Some(json!({"card_number": card}))).await;
        let top_up = json!({"card_id": card["card_id"], "amount": {"amount": fen, "currency": "CNY"}});
        assert_eq!(api.call("POST", "/v1/wallet/top-ups", Some(&token), Some("top"), Some(top_up)).await.0, StatusCode::CREATED);
        residents.push(token);
    }
    let [alice, bob] = <[String; 2]>::try_from(residents).unwrap();
    let balance = |token: &str| {
        let token = token.to_owned();
        let api = &api;
        async move { api.call("GET", "/v1/wallet", Some(&token), None, None).await.1["balance"]["amount"].as_i64().unwrap() }
    };
    let cny = |fen: i64| json!({"amount": fen, "currency": "CNY"});
    let due = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 30 * 86_400;
    let bill = |no: &str, kind: &str, payer: &str, items: &[(&str, i64)], insured: i64, pick: bool| {
        json!({"out_bill_no": no, "payer_kind": kind, "payer": payer, "title": format!("bill {no}"),
               "items": items.iter().map(|(n, a)| json!({"name": n, "amount": cny(*a)})).collect::<Vec<_>>(),
               "pick_items": pick, "insured": cny(insured), "due_at": due})
    };

    // A hospital bill of 170.00, 100.00 of it insured. The fund is short: nothing moves.
    let deposit = |amount: i64, reference: &str| json!({"amount": cny(amount), "reference": reference});
    let (status, fund, _) = api.call("POST", "/v1/insurance-funds/330100/deposits", Some(&operator), None, Some(deposit(5_000, "NHSA-1"))).await;
    assert_eq!((status, fund["balance"]["amount"].as_i64()), (StatusCode::OK, Some(5_000)), "{fund}");
    let h1 = bill("H-1", "id_number", ID_NUMBER, &[("consultation", 5_000), ("medicine", 12_000)], 10_000, false);
    let (status, visit, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(h1)).await;
    assert_eq!((status, visit["payer"].as_str()), (StatusCode::CREATED, Some("1101**********002X")), "{visit}");
    let (_, mine, _) = api.call("GET", "/v1/my/bills", Some(&alice), None, None).await;
    assert_eq!(mine["bills"][0]["bill_no"], visit["bill_no"]);
    let pay_path = |bill: &Value| format!("/v1/my/bills/{}/payments", bill["bill_no"].as_str().unwrap_or_else(|| panic!("{bill}")));
    let (status, refused, _) = api.call("POST", &pay_path(&visit), Some(&alice), Some("pay-h1"), Some(json!({}))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("insurance_fund_short")));
    assert_eq!(balance(&alice).await, 500_000);
    api.call("POST", "/v1/insurance-funds/330100/deposits", Some(&operator), None, Some(deposit(200_000, "NHSA-2"))).await;
    let (status, paid, _) = api.call("POST", &pay_path(&visit), Some(&alice), Some("pay-h1b"), Some(json!({}))).await;
    assert_eq!((status, paid["insured"]["amount"].as_i64()), (StatusCode::CREATED, Some(10_000)), "{paid}");
    assert_eq!(balance(&alice).await, 500_000 - 7_000);
    let (status, again, replayed) = api.call("POST", &pay_path(&visit), Some(&alice), Some("pay-h1b"), Some(json!({}))).await;
    assert_eq!((status, replayed, &again["receipt_no"]), (StatusCode::CREATED, true, &paid["receipt_no"]));
    // The receipt verifies with the published key; an altered one does not.
    let (status, keys, _) = api.call("GET", "/v1/receipt-keys", None, None, None).await;
    assert_eq!(status, StatusCode::OK, "public");
    let public: [u8; 32] = (0..32).map(|i| u8::from_str_radix(&keys[0]["public_key"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<_>>().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&public).unwrap();
    let (_, receipt, _) = api.call("GET", &format!("/v1/receipts/{}", paid["receipt_no"].as_str().unwrap()), Some(&alice), None, None).await;
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD.decode(receipt["signature"].as_str().unwrap()).unwrap();
    let signature = Signature::from_slice(&signature).unwrap();
    let text = receipt["text"].as_str().unwrap();
    assert!(key.verify(text.as_bytes(), &signature).is_ok());
    assert!(key.verify(text.replace("17000", "17001").as_bytes(), &signature).is_err());
    assert_eq!(api.call("GET", &format!("/v1/receipts/{}", paid["receipt_no"].as_str().unwrap()), Some(&bob), None, None).await.0, StatusCode::NOT_FOUND);
    // Bob's wallet is short: the fund's part of his bill does not move either.
    let (_, bobs, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-2", "id_number", BOB, &[("x-ray", 30_000)], 20_000, false))).await;
    assert_eq!(api.call("POST", &pay_path(&bobs), Some(&bob), Some("pay-h2"), Some(json!({}))).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, fund, _) = api.call("POST", "/v1/insurance-funds/330100/deposits", Some(&operator), None, Some(deposit(200_000, "NHSA-2"))).await;
    assert_eq!(fund["balance"]["amount"].as_i64(), Some(205_000 - 10_000), "the deposit counted once, bob's part never moved");

    // Tuition for alice's son, by items, once she links his student number.
    let t1 = bill("T-1", "student_number", "S2026001", &[("tuition", 300_000), ("books", 20_000)], 0, true);
    let (_, tuition, _) = api.call("POST", "/v1/bills", Some(&school), None, Some(t1)).await;
    assert_eq!(api.call("POST", &pay_path(&tuition), Some(&alice), Some("pay-t1"), Some(json!({"items": [1]}))).await.0, StatusCode::NOT_FOUND);
    let link = json!({"payer_kind": "student_number", "payer": "S2026001", "biller_id": school_id, "label": "son"});
    assert_eq!(api.call("POST", "/v1/my/payer-links", Some(&alice), Some("link-son"), Some(link)).await.0, StatusCode::CREATED);
    let guardian = json!({"payer_kind": "student_number", "payer": "S2026001", "guardian_id_number": ID_NUMBER});
    assert_eq!(api.call("POST", "/v1/payer-guardians", Some(&school), None, Some(guardian)).await.0, StatusCode::CREATED);
    let (status, books, _) = api.call("POST", &pay_path(&tuition), Some(&alice), Some("pay-t1b"), Some(json!({"items": [1]}))).await;
    assert_eq!((status, books["bill"]["status"].as_str(), books["amount"]["amount"].as_i64()), (StatusCode::CREATED, Some("partly_paid"), Some(20_000)), "{books}");

    // Her mother's hospital bill, paid by alice once linked.
    let (_, mothers, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-4", "id_number", MOTHER, &[("checkup", 8_000)], 0, false))).await;
    let link = json!({"payer_kind": "id_number", "payer": MOTHER, "label": "mother"});
    let (_, linked, _) = api.call("POST", "/v1/my/payer-links", Some(&alice), Some("link-mother"), Some(link)).await;
    assert_eq!((linked["payer"].as_str(), linked["status"].as_str()), (Some("3301**********0045"), Some("pending")));
    // Her mother approves the link from her own account.
    let registration = json!({"city": 330100, "name": "Li Mei", "mobile": "13700137000", "id_number": MOTHER, "password": "correct horse", "account_class": "I"});
    assert_eq!(api.call("POST", "/v1/residents", None, Some("mother"), Some(registration)).await.0, StatusCode::CREATED);
    let (_, session, _) = api.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": "13700137000", "password": "correct horse"}))).await;
    let mother = format!("Bearer {}", session["token"].as_str().unwrap());
    let (_, requests, _) = api.call("GET", "/v1/my/payer-link-requests", Some(&mother), None, None).await;
    let approve = format!("/v1/my/payer-link-requests/{}/approve", requests["requests"][0]["requester"].as_str().unwrap());
    assert_eq!(api.call("POST", &approve, Some(&mother), None, None).await.0, StatusCode::OK);
    assert_eq!(api.call("POST", &pay_path(&mothers), Some(&alice), Some("pay-h4"), Some(json!({}))).await.0, StatusCode::CREATED);

    // Two payers race for one water bill: one wins, the other is told, no money moves for it.
    let (_, water, _) = api.call("POST", "/v1/bills", Some(&utility), None, Some(bill("W-1", "account_number", "ACC-778899", &[("water", 800)], 0, false))).await;
    for (token, key) in [(&alice, "link-w-a"), (&bob, "link-w-b")] {
        let link = json!({"payer_kind": "account_number", "payer": "ACC-778899", "biller_id": utility_id, "label": "home"});
        assert_eq!(api.call("POST", "/v1/my/payer-links", Some(token), Some(key), Some(link)).await.0, StatusCode::CREATED);
    }
    for id_number in [ID_NUMBER, BOB] {
        let guardian = json!({"payer_kind": "account_number", "payer": "ACC-778899", "guardian_id_number": id_number});
        assert_eq!(api.call("POST", "/v1/payer-guardians", Some(&utility), None, Some(guardian)).await.0, StatusCode::CREATED);
    }
    let before = balance(&alice).await + balance(&bob).await;
    let path = pay_path(&water);
    let (a, b) = tokio::join!(
        api.call("POST", &path, Some(&alice), Some("race-a"), Some(json!({}))),
        api.call("POST", &path, Some(&bob), Some("race-b"), Some(json!({})))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "{a:?} {b:?}");
    let loser = if a.0 == StatusCode::CONFLICT { &a.1 } else { &b.1 };
    assert_eq!(loser["error"]["code"], "bill_already_paid");
    assert_eq!(balance(&alice).await + balance(&bob).await, before - 800);

    // A bill already past its due date that may not be paid late could never be paid.
    let mut late = bill("W-2", "account_number", "ACC-778899", &[("water", 500)], 0, false);
    late["due_at"] = json!(1_000_000_000);
    let (status, body, _) = api.call("POST", "/v1/bills", Some(&utility), None, Some(late)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")), "{body}");

    // Cash at the counter, then the bill cannot be paid again.
    let (_, counter, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-3", "id_number", ID_NUMBER, &[("dressing", 2_500)], 0, false))).await;
    let (status, cash, _) = api.call("POST", "/v1/bills/H-3/cash-payments", Some(&hospital), Some("cash-1"), Some(json!({"amount": cny(2_500)}))).await;
    assert_eq!((status, cash["method"].as_str()), (StatusCode::CREATED, Some("cash")), "{cash}");
    assert_eq!(api.call("POST", &pay_path(&counter), Some(&alice), Some("pay-h3"), Some(json!({}))).await.0, StatusCode::CONFLICT);

    // A social-security contribution for her mother, by proxy; once a year.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let window = json!({"city": 330100, "year": 2027, "bureau_id": bureau_id, "amount": cny(38_000), "opens_at": now - 60, "closes_at": now + 86_400});
    assert_eq!(api.call("POST", "/v1/contribution-windows", Some(&operator), None, Some(window)).await.0, StatusCode::NO_CONTENT);
    let contribution = json!({"city": 330100, "id_number": MOTHER, "year": 2027});
    let (status, paid, _) = api.call("POST", "/v1/social-security/contributions", Some(&alice), Some("ss-1"), Some(contribution.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert_eq!(api.call("POST", "/v1/social-security/contributions", Some(&bob), Some("ss-2"), Some(contribution)).await.0, StatusCode::CONFLICT);

    // The hospital's files of today: its reconciliation file and its settlement file agree
    // with what was paid through the platform; the day cannot be settled before it ends.
    let today = citypay_ledger::Timestamp::from_unix_seconds(now).local_date().to_string();
    let file = |path: String, key: &str| {
        let request = api.client.get(format!("{}{path}", api.base)).header("authorization", key).send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    let reconciliation = file(format!("/v1/reconciliation-files/{today}"), &hospital).await;
    let settled: i64 = reconciliation.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(settled, 17_000 + 8_000, "{reconciliation}");
    let settlement = file(format!("/v1/settlement-files/{today}"), &hospital).await;
    let closing = settlement.lines().find(|l| l.contains("closing_balance")).unwrap().rsplit(',').next().unwrap().parse::<i64>().unwrap();
    assert_eq!(closing, settled, "{settlement}");
    let run = json!({"date": today});
    let (status, body, _) = api.call("POST", "/v1/settlement-runs", Some(&operator), Some("settle-today"), Some(run)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("day_not_closed")));

    drop(server);
    let audit = Command::new(BIN).args(["audit", "--db", &target.db, "--keys"]).arg(&target.keys).output().unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    let logs = std::fs::read_to_string(&log).unwrap();
    for secret in [ID_NUMBER, MOTHER, BOB, "S2026001", "ACC-778899"] {
        assert!(!logs.contains(secret), "the logs contain a payer's identifier");
    }
}
