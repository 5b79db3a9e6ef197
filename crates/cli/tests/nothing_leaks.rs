//! Nothing secret reaches the server's log, even at its most verbose level. `citypay serve`
//! runs with `RUST_LOG=trace` through a simulated day (`citypay simulate --server`) and calls
//! that carry every kind of secret the platform handles: ID numbers, card numbers, names,
//! mobile numbers, passwords, bearer tokens, merchant API keys and webhook secrets, payment
//! codes and device secrets, a gateway call's signature and `auth_code` in a GET query, a
//! notification URL's token. Every service must have logged (so the log really was written at
//! that level), and none of the secrets may be in it; the same check must find a secret
//! planted in a copy of that log. Authenticated answers, refusals included, say `no-store`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, BIN, City, OPERATOR_PASSWORD, Target, admin, payment_code, secrets_in_log, signed_call, start_with, uscc};

/// The services, by the target their events are logged under.
const SERVICES: [&str; 8] = [
    "citypay_directory",
    "citypay_wallet",
    "citypay_checkout",
    "citypay_transit",
    "citypay_bills",
    "citypay_settlement",
    "citypay_shard",
    "citypay_api::routes::gateway",
];

/// Residents of the simulated day: enough for every kind of action, few enough for a minute.
const RESIDENTS: &str = "40";
const SEED: u64 = 17;

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A PRC resident ID number of Hangzhou's Xihu district with its check character.
fn id_number(first17: &str) -> String {
    format!("{first17}{}", citypay_identity::resident_id::check_character(first17).unwrap())
}

/// A Luhn-valid UnionPay card number.
fn card_number(payload: &str) -> String {
    format!("{payload}{}", citypay_identity::card::luhn_check_digit(payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_at_the_most_verbose_level_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let log = dir.path().join("serve.log");
    let server = start_with(&target, &log, &[("RUST_LOG", Path::new("trace"))]).await;
    let api = Api::new(&server);
    let city = City { dir, target, server, api, log };
    let mut secrets: Vec<String> = vec![OPERATOR_PASSWORD.to_owned()];

    // The simulated day, and the personal data its people send.
    let simulated = Command::new(BIN)
        .args(["simulate", "--server", &city.server.base, "--residents", RESIDENTS, "--city", "Hangzhou", "--seed", &SEED.to_string(), "--json"])
        .env("CITYPAY_OPERATOR_PASSWORD", OPERATOR_PASSWORD)
        .output()
        .unwrap();
    assert!(simulated.status.success(), "{}", String::from_utf8_lossy(&simulated.stderr));
    let summary: Value = serde_json::from_slice(&simulated.stdout).unwrap();
    assert!(summary["transactions"].as_u64().unwrap() > 10, "{summary}");
    let config = citypay_sim::SimConfig { cities: vec![citypay_sim::preset("Hangzhou").unwrap()], residents: RESIDENTS.parse().unwrap(), days: 1, seed: SEED, continues_after: 0 };
    for (person, cards) in citypay_sim::server_personal_data(&config).unwrap() {
        secrets.extend([person.name, person.mobile, person.id_number, person.password]);
        secrets.extend(cards);
    }

    let secret = plant_secrets(&city).await;
    secrets.extend(secret);

    // Every service logged at the level asked for.
    let logs = std::fs::read_to_string(&city.log).unwrap();
    let targets: BTreeSet<String> =
        logs.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).filter_map(|line| line["target"].as_str().map(str::to_owned)).collect();
    for service in SERVICES {
        assert!(targets.iter().any(|t| t == service || t.starts_with(&format!("{service}::"))), "no event of {service} in the log; targets: {targets:?}");
    }
    assert!(logs.lines().any(|line| line.contains("\"level\":\"TRACE\"")), "nothing logged at trace level");

    // The check finds a secret planted in a copy of the log, then finds none in the log.
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let planted = city.dir.path().join("planted.log");
    let leaked_line = format!("{{\"level\":\"DEBUG\",\"message\":\"paid\",\"auth_code\":\"{}\"}}\n", secrets[secrets.len() - 1]);
    std::fs::write(&planted, logs.clone() + &leaked_line).unwrap();
    assert_eq!(secrets_in_log(&planted, &secrets), vec![secrets.len() - 1], "the planted secret is found, and only it");
    city.finish(&secrets);
}

/// Calls that carry every kind of secret, touching every service; answers the secrets sent.
/// The last one is the payment code sent to the gateway in a GET query.
async fn plant_secrets(city: &City) -> Vec<String> {
    let api = &city.api;
    let mut secrets = Vec::new();
    let operator = api.operator().await;
    secrets.push(operator.trim_start_matches("Bearer ").to_owned());

    // A merchant whose notification URL carries a password and a token, with nothing
    // listening there: every delivery fails and is logged.
    let hook = format!("http://planted-user:planted-url-password-3J@127.0.0.1:{}/hook?token=planted-notify-token-7Q2", support::free_port());
    let (shop, shop_key) = api.merchant(&operator, &uscc("MA0LK101"), "restaurant", Some(&hook)).await;
    secrets.extend(["planted-notify-token-7Q2".to_owned(), "planted-url-password-3J".to_owned(), shop["api_key_secret"].as_str().unwrap().to_owned(), shop["webhook_secret"].as_str().unwrap().to_owned()]);
    let (_, hospital_key) = api.merchant(&operator, &uscc("MA0LK102"), "hospital", None).await;
    let (_, transit_key) = api.merchant(&operator, &uscc("MA0LK103"), "transit", None).await;

    // A resident: name, mobile, ID number, password, card, token, a payment device.
    let id = id_number("33010619850312457");
    let (name, mobile, password) = ("Planted Leakwell", "15987654321", "planted-password-Zx81");
    let resident = api.resident(name, mobile, &id, password).await;
    secrets.extend([id.clone(), name.to_owned(), mobile.to_owned(), password.to_owned(), resident.trim_start_matches("Bearer ").to_owned()]);
    let card = card_number("622202123456789012");
    api.issue_card(&operator, &card, name, &id).await;
    api.top_up(&resident, &card, 50_000).await;
    secrets.push(card);
    let (status, verified, _) = api.call("POST", "/v1/in-person-verifications", Some(&operator), Some("in-person-1"), Some(json!({"id_number": id, "name": name}))).await;
    assert!(status.is_success(), "{verified}");
    // Two phones: a code works once in its 30 seconds, and the gateway takes one too.
    let mut devices = Vec::new();
    for key in ["device-1", "device-2"] {
        let (status, device, _) = api.call("POST", "/v1/payment-devices", Some(&resident), Some(key), Some(json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        secrets.push(device["secret"].as_str().unwrap().to_owned());
        devices.push(device);
    }

    // Authenticated answers, refusals included, are never stored by a cache.
    for (path, auth) in [("/v1/wallet", resident.as_str()), ("/v1/wallet", "Bearer not-a-token"), ("/v1/trades?limit=x", shop_key.as_str())] {
        let response = api.client.get(format!("{}{path}", api.base)).header("authorization", auth).send().await.unwrap();
        assert_eq!(response.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{path}: {}", response.status());
    }

    // A wrong password, an ID number where a number is expected in a path, and one in a query.
    let (status, _, _) = api.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": mobile, "password": "planted-wrong-password-4k"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    secrets.push("planted-wrong-password-4k".to_owned());
    let (status, _, _) = api.call("DELETE", &format!("/v1/payment-devices/{id}"), Some(&resident), None, None).await;
    assert!(status.is_client_error(), "{status}");
    let (status, _, _) = api.call("GET", &format!("/v1/trades?cursor={id}&limit=x{id}"), Some(&shop_key), None, None).await;
    assert!(status.is_client_error(), "{status}");

    // The till takes a payment code; the checkout refunds part of it.
    let code = payment_code(&devices[0]);
    let pay = json!({"out_trade_no": "LEAK_1", "amount": {"amount": 1200, "currency": "CNY"}, "subject": "noodles", "auth_code": code});
    let (status, paid, _) = api.call("POST", "/v1/trades/pay", Some(&shop_key), None, Some(pay)).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    secrets.push(code);
    let refund = json!({"out_request_no": "R1", "amount": {"amount": 200, "currency": "CNY"}});
    let (status, refunded, _) = api.call("POST", "/v1/trades/LEAK_1/refunds", Some(&shop_key), None, Some(refund)).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");

    // A hospital bill addressed to the ID number, paid from the wallet.
    let bill = json!({"out_bill_no": "LEAK_B1", "payer_kind": "id_number", "payer": id, "title": "门诊",
        "items": [{"name": "挂号费", "amount": {"amount": 500, "currency": "CNY"}}], "pick_items": false, "due_at": now_s() + 86_400});
    let (status, issued, _) = api.call("POST", "/v1/bills", Some(&hospital_key), None, Some(bill)).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let bill_no = issued["bill_no"].as_str().unwrap();
    let (status, paid, _) = api.call("POST", &format!("/v1/my/bills/{bill_no}/payments"), Some(&resident), Some("bill-1"), Some(json!({}))).await;
    assert!(status.is_success(), "{paid}");

    // Transit: a ride credential, a validator, and the fare run and settlement of a closed day.
    let rider = citypay_ride::RiderKey::from_seed([9; 32]);
    let (status, credential, _) = api
        .call("POST", "/v1/ride-credentials", Some(&resident), Some("cred-1"), Some(json!({"rider_key": citypay_vault::hex::encode(&rider.public_bytes())})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{credential}");
    let device_key = citypay_ride::DeviceKey::from_seed([8; 32]);
    let validator = json!({"route_id": "824", "stop_id": "B_XIZHAN", "device_key": citypay_vault::hex::encode(&device_key.public_bytes())});
    let (status, validator, _) = api.call("POST", "/v1/validators", Some(&transit_key), Some("validator-1"), Some(validator)).await;
    assert_eq!(status, StatusCode::CREATED, "{validator}");
    let closed_day = citypay_ledger::Timestamp::from_unix_seconds(now_s() - 2 * 86_400).local_date().to_string();
    for (path, key) in [("/v1/transit/fare-runs", "fares-1"), ("/v1/settlement-runs", "settle-1")] {
        let (status, run, _) = api.call("POST", path, Some(&operator), Some(key), Some(json!({"date": closed_day}))).await;
        assert!(status.is_success(), "{path}: {run}");
    }

    // The merchant's Alipay SDK pays by payment code through `/gateway.do` in a GET query,
    // signed with the app's private key (here the test platform key's pair).
    let app_key = citypay_gateway::PlatformKey::from_pkcs8(1, &support::base64_decode(support::GATEWAY_TEST_KEY)).unwrap();
    let (status, app, _) = api.call("POST", "/v1/gateway/apps", Some(&shop_key), None, Some(json!({"public_key": app_key.public().to_pem()}))).await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app_id = app["app_id"].as_str().unwrap();
    let code = payment_code(&devices[1]);
    let biz = json!({"out_trade_no": "LEAK_G1", "scene": "bar_code", "auth_code": code, "subject": "tea", "total_amount": "3.00"}).to_string();
    let timestamp = citypay_ledger::Timestamp::from_unix_seconds(now_s()).local_date_time();
    let params = [("method", "alipay.trade.pay"), ("timestamp", timestamp.as_str()), ("biz_content", biz.as_str())];
    let answer = signed_call(&city.server.base, app_id, &app_key, &params).await;
    assert_eq!(answer["code"], "10000", "{answer}");
    // The signature the call carried (RSA PKCS#1 v1.5 signs deterministically), as sent and raw.
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in [("app_id", app_id), ("charset", "utf-8"), ("sign_type", "RSA2"), ("version", "1.0")].into_iter().chain(params) {
        form.append_pair(key, value);
    }
    let signature = app_key.sign(citypay_gateway::Request::parse(form.finish().as_bytes(), b"").sign_content().as_bytes());
    secrets.extend([support::urlencode(&signature), signature, support::GATEWAY_TEST_KEY.trim()[100..160].to_owned()]);
    secrets.push(code);
    secrets
}
