//! A resident's account safety through the real server: a lost phone is shut off (its payment
//! device revoked, its sessions ended, the password changed, the wallet frozen and unfrozen);
//! wrong passwords are limited per account and client address without locking the owner's
//! known client out, `X-Forwarded-For` counts only from a configured proxy; and strangers'
//! wrong payment codes cool a device down per shop instead of locking it.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{Api, City, OPERATOR_PASSWORD, Target, admin, payment_code, start_with};

const CARD: &str = "4111111111111111";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Counts of fixed windows must not reset in the middle of a check: when fewer than `needed_s`
/// seconds of the current `window_s` window are left, wait for the next one.
async fn fresh_window(window_s: u64, needed_s: u64) {
    let left = window_s - now_s() % window_s;
    if left < needed_s {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn cny(fen: i64) -> Value {
    json!({"amount": fen, "currency": "CNY"})
}

/// A resident with `fen` in the wallet; returns their `Bearer` header and their card's id.
async fn funded_resident(api: &Api, name: &str, mobile: &str, id_number: &str, fen: i64) -> (String, String) {
    let me = api.resident(name, mobile, id_number, "correct horse").await;
    api.issue_card(&api.operator().await, CARD, name, id_number).await;
    let (status, card, _) = api.call("POST", "/v1/wallet/cards", Some(&me), Some(&format!("card-{mobile}")), Some(json!({"card_number": CARD}))).await;
    assert_eq!(status, StatusCode::CREATED, "{card}");
    let top_up = json!({"card_id": card["card_id"], "amount": cny(fen)});
    let (status, body, _) = api.call("POST", "/v1/wallet/top-ups", Some(&me), Some(&format!("top-{mobile}")), Some(top_up)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (me, card["card_id"].as_str().unwrap().to_owned())
}

async fn enroll(api: &Api, me: &str) -> Value {
    let (status, device, _) = api.call("POST", "/v1/payment-devices", Some(me), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    device
}

/// The shop charges `code`: (status, body).
async fn charge(api: &Api, shop: &str, order: &str, code: &str) -> (StatusCode, Value) {
    let body = json!({"out_trade_no": order, "amount": cny(500), "subject": "tea", "auth_code": code});
    let (status, body, _) = api.call("POST", "/v1/trades/pay", Some(shop), None, Some(body)).await;
    (status, body)
}

/// Signs in with `mobile` and `password` (and a client ticket): the raw answer.
async fn sign_in(api: &Api, mobile: &str, password: &str, ticket: Option<&str>) -> (StatusCode, Value) {
    let (status, body, _) = api.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": mobile, "password": password, "client_ticket": ticket}))).await;
    (status, body)
}

fn bearer(session: &Value) -> String {
    format!("Bearer {}", session["token"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_phone_is_shut_off_guessing_is_bounded_and_strangers_cannot_lock_a_phone() {
    // Every count below is of one hour (and one 3-hour window): the test starts well inside one.
    fresh_window(3600, 30).await;
    // The server trusts 127.0.0.2 as a proxy: its X-Forwarded-For names the client.
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let log = dir.path().join("serve.log");
    let server = start_with(&target, &log, &[("CITYPAY_TRUSTED_PROXIES", Path::new("127.0.0.2"))]).await;
    let api = Api::new(&server);
    let city = City { dir, target, server, api, log };
    let api = &city.api;

    let operator = api.operator().await;
    let (_, shop) = api.merchant(&operator, "91350100M000100Y43", "restaurant", None).await;
    let mut strangers = Vec::new();
    for (uscc, category) in [("91110000600037341L", "restaurant"), ("12330100470001235F", "restaurant"), ("11330100002345678T", "utility")] {
        strangers.push(api.merchant(&operator, uscc, category, None).await.1);
    }

    // 1. Li Lei loses a phone. Three devices; the oldest is revoked and its code pays nothing.
    let (old_phone, card_id) = funded_resident(api, "Li Lei", "13800138000", "11010519491231002X", 10_000).await;
    let lost = enroll(api, &old_phone).await;
    let current = enroll(api, &old_phone).await;
    let spare = enroll(api, &old_phone).await;
    let (status, listed, _) = api.call("GET", "/v1/payment-devices", Some(&old_phone), None, None).await;
    assert_eq!((status, listed["devices"].as_array().unwrap().len()), (StatusCode::OK, 3), "{listed}");
    let revoke = format!("/v1/payment-devices/{}", lost["device"]);
    let (status, revoked, _) = api.call("DELETE", &revoke, Some(&old_phone), None, None).await;
    assert!(status == StatusCode::OK && revoked["revoked_at"].is_u64(), "{status} {revoked}");
    let (status, body) = charge(api, &shop, "LOST1", &payment_code(&lost)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_payment_code"), "{body}");
    let (status, paid) = charge(api, &shop, "NEW1", &payment_code(&current)).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");
    // Another resident cannot revoke his devices.
    let other = api.resident("Han Meimei", "13900139000", "440524198001010013", "correct horse").await;
    let spare_path = format!("/v1/payment-devices/{}", spare["device"]);
    assert_eq!(api.call("DELETE", &spare_path, Some(&other), None, None).await.0, StatusCode::NOT_FOUND);

    // Sessions: from a new phone he ends every other session; the old token stops at once.
    let (_, new_session) = sign_in(api, "13800138000", "correct horse", None).await;
    let new_phone = bearer(&new_session);
    let (status, sessions, _) = api.call("GET", "/v1/my/sessions", Some(&new_phone), None, None).await;
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!((status, sessions.len()), (StatusCode::OK, 2));
    assert!(sessions.iter().any(|s| s["current"] == true && s["session_id"] == new_session["session_id"]));
    let (status, ended, _) = api.call("POST", "/v1/my/sessions/end-others", Some(&new_phone), None, None).await;
    assert_eq!((status, ended["ended_sessions"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(api.call("GET", "/v1/wallet", Some(&old_phone), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/v1/wallet", Some(&new_phone), None, None).await.0, StatusCode::OK);
    // Signing out ends that session only.
    let (_, tablet) = sign_in(api, "13800138000", "correct horse", None).await;
    let sign_out = format!("/v1/my/sessions/{}", tablet["session_id"].as_str().unwrap());
    assert_eq!(api.call("DELETE", &sign_out, Some(&bearer(&tablet)), None, None).await.0, StatusCode::OK);
    assert_eq!(api.call("GET", "/v1/wallet", Some(&bearer(&tablet)), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("DELETE", &sign_out, Some(&other), None, None).await.0, StatusCode::NOT_FOUND, "not hers to end");

    // A password change needs the current password and ends the other sessions.
    let (_, laptop) = sign_in(api, "13800138000", "correct horse", None).await;
    let change = |current: &str| json!({"current_password": current, "new_password": "battery staple"});
    assert_eq!(api.call("POST", "/v1/my/password", Some(&new_phone), None, Some(change("wrong horse"))).await.0, StatusCode::UNAUTHORIZED);
    let (status, changed, _) = api.call("POST", "/v1/my/password", Some(&new_phone), None, Some(change("correct horse"))).await;
    assert_eq!((status, changed["ended_sessions"].as_u64()), (StatusCode::OK, Some(1)), "{changed}");
    assert_eq!(api.call("GET", "/v1/wallet", Some(&bearer(&laptop)), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(api, "13800138000", "correct horse", None).await.0, StatusCode::UNAUTHORIZED);
    let (status, owner) = sign_in(api, "13800138000", "battery staple", None).await;
    assert_eq!(status, StatusCode::OK);
    let owner_ticket = owner["client_ticket"].as_str().unwrap().to_owned();

    // Frozen, the wallet pays nothing (code, QR, withdrawal, ride credential, bill) but takes top-ups
    // and refunds; unfreezing needs the password.
    let (status, frozen, _) = api.call("POST", "/v1/wallet/freeze", Some(&new_phone), None, None).await;
    assert_eq!((status, frozen["frozen"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = charge(api, &shop, "FROZEN1", &payment_code(&spare)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{body}");
    let (_, trade, _) = api.call("POST", "/v1/trades", Some(&shop), None, Some(json!({"out_trade_no": "QR1", "amount": cny(300), "subject": "tea"}))).await;
    let pay_qr = json!({"payload": trade["qr_payload"]});
    let (status, body, _) = api.call("POST", "/v1/payments/qr", Some(&new_phone), Some("qr-1"), Some(pay_qr.clone())).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{body}");
    let movement = |fen: i64| json!({"card_id": card_id, "amount": cny(fen)});
    let (status, body, _) = api.call("POST", "/v1/wallet/withdrawals", Some(&new_phone), Some("out-1"), Some(movement(100))).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{body}");
    let rider_key = json!({"rider_key": "11".repeat(32)});
    let (status, body, _) = api.call("POST", "/v1/ride-credentials", Some(&new_phone), Some("ride-1"), Some(rider_key)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{body}");
    let due = now_s() + 30 * 86_400;
    let water = json!({"out_bill_no": "W-1", "payer_kind": "id_number", "payer": "11010519491231002X", "title": "water",
                       "items": [{"name": "water", "amount": cny(800)}], "pick_items": false, "insured": cny(0), "due_at": due});
    let (status, bill, _) = api.call("POST", "/v1/bills", Some(&strangers[2]), None, Some(water)).await;
    assert_eq!(status, StatusCode::CREATED, "{bill}");
    let pay_bill = format!("/v1/my/bills/{}/payments", bill["bill_no"].as_str().unwrap());
    let (status, body, _) = api.call("POST", &pay_bill, Some(&new_phone), Some("bill-1"), Some(json!({}))).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{body}");
    assert_eq!(api.call("POST", "/v1/wallet/top-ups", Some(&new_phone), Some("top-frozen"), Some(movement(100))).await.0, StatusCode::CREATED);
    let refund = json!({"out_request_no": "R1", "amount": cny(200)});
    assert_eq!(api.call("POST", "/v1/trades/NEW1/refunds", Some(&shop), None, Some(refund)).await.0, StatusCode::OK);
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&new_phone), None, None).await;
    assert_eq!(wallet["balance"]["amount"], 10_000 - 500 + 100 + 200);
    let unfreeze = |password: &str| json!({"password": password});
    assert_eq!(api.call("POST", "/v1/wallet/unfreeze", Some(&new_phone), None, Some(unfreeze("correct horse"))).await.0, StatusCode::UNAUTHORIZED);
    let (status, thawed, _) = api.call("POST", "/v1/wallet/unfreeze", Some(&new_phone), None, Some(unfreeze("battery staple"))).await;
    assert_eq!((status, thawed["frozen"].as_bool()), (StatusCode::OK, Some(false)));
    let (status, body, _) = api.call("POST", "/v1/payments/qr", Some(&new_phone), Some("qr-2"), Some(pay_qr)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{body}");

    // 2. Guessing passwords. This address has 3 failures so far (password, unfreeze, sign-in).
    // Han Meimei's phone signed in once and keeps its ticket; a stranger guesses her password.
    let (_, hers) = sign_in(api, "13900139000", "correct horse", None).await;
    let her_ticket = hers["client_ticket"].as_str().unwrap().to_owned();
    let mut answers = Vec::new();
    for _ in 0..12 {
        let (status, body) = sign_in(api, "13900139000", "guess guess", None).await;
        answers.push((status, Api::code(&body).to_owned()));
    }
    assert!(answers[..5].iter().all(|(s, _)| *s == StatusCode::UNAUTHORIZED), "{answers:?}");
    assert!(answers[5..].iter().all(|(s, c)| *s == StatusCode::TOO_MANY_REQUESTS && c == "rate_limited"), "{answers:?}");
    let response = api.client.post(format!("{}/v1/sessions", api.base)).json(&json!({"mobile": "13900139000", "password": "correct horse"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "a stranger's client is refused even with the right password");
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3 * 3600).contains(&retry_after), "{retry_after}");
    // Her phone, known by its ticket, still gets in; another account's ticket does not help.
    assert_eq!(sign_in(api, "13900139000", "correct horse", Some(&her_ticket)).await.0, StatusCode::OK);
    assert_eq!(sign_in(api, "13900139000", "correct horse", Some(&owner_ticket)).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Operators too.
    let mut operator_answers = Vec::new();
    for _ in 0..8 {
        let (status, _, _) = api.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": "guess guess"}))).await;
        operator_answers.push(status);
    }
    assert_eq!(operator_answers, [[StatusCode::UNAUTHORIZED; 5].as_slice(), &[StatusCode::TOO_MANY_REQUESTS; 3]].concat());
    let right = json!({"username": "root", "password": OPERATOR_PASSWORD});
    assert_eq!(api.call("POST", "/v1/operator-sessions", None, None, Some(right)).await.0, StatusCode::TOO_MANY_REQUESTS);
    // 13 failures from 127.0.0.1 now. Its X-Forwarded-For is not believed (it is no proxy): 37
    // more wrong passwords for other accounts, each claiming another address, spend its budget.
    let claiming = |n: usize| {
        let body = json!({"mobile": format!("1370000{n:04}"), "password": "guess guess"});
        api.client.post(format!("{}/v1/sessions", api.base)).header("x-forwarded-for", format!("198.51.100.{n}")).json(&body)
    };
    for n in 0..37 {
        assert_eq!(claiming(n).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(claiming(37).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // Through the configured proxy, the forwarded address is the client's.
    let proxy = reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let via_proxy = |forwarded: &str| {
        let body = json!({"mobile": "13700009999", "password": "guess guess"});
        proxy.post(format!("{}/v1/sessions", api.base)).header("x-forwarded-for", forwarded).json(&body)
    };
    assert_eq!(via_proxy("203.0.113.9").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(via_proxy("203.0.113.10, 127.0.0.1").send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS, "the proxy says 127.0.0.1");

    // 3. Strangers' shops send 100 wrong codes for Li Lei's current device: each shop's are
    // refused after 3 an hour, the device is never locked, and his next genuine code pays.
    let slot = current["device"].as_u64().unwrap();
    let mut refused = [0usize; 3];
    for n in 0..100usize {
        let guess = format!("88{slot:08}{:08}", n * 7_919);
        let (status, body) = charge(api, &strangers[n % 3], &format!("GUESS{n}"), &guess).await;
        match (status, Api::code(&body)) {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_payment_code") => {}
            (StatusCode::TOO_MANY_REQUESTS, "payment_device_cooling_down") => refused[n % 3] += 1,
            other => panic!("{other:?} {body}"),
        }
    }
    assert_eq!(refused, [34 - 3, 33 - 3, 33 - 3]);
    // (The code of the next 30-second step: this step's was spent on NEW1.)
    let (status, paid) = charge(api, &shop, "GENUINE", &payment_code_at(&current, now_s() + 30)).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");
    // He can see someone is guessing.
    let (_, listed, _) = api.call("GET", "/v1/payment-devices", Some(&new_phone), None, None).await;
    let device = listed["devices"].as_array().unwrap().iter().find(|d| d["device"] == current["device"]).unwrap().clone();
    assert_eq!((device["wrong_codes_this_hour"].as_i64(), device["cooling_down_until"].is_null()), (Some(9), true), "{device}");

    city.finish(&["battery staple", "correct horse", "11010519491231002X", &owner_ticket]);
}

/// The same records on PostgreSQL: sessions end, failures are counted, a revoked device and a
/// frozen wallet pay nothing, strangers' wrong codes cool down without locking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_limits_devices_and_freezing_hold_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = Target::postgres(dir.path(), "account_safety") else { return };
    fresh_window(3600, 30).await;
    let city = City::start_on(dir, target).await;
    let api = &city.api;
    let operator = api.operator().await;
    let (_, shop) = api.merchant(&operator, "91350100M000100Y43", "restaurant", None).await;
    let (_, stranger) = api.merchant(&operator, "91110000600037341L", "restaurant", None).await;
    let (old_phone, _) = funded_resident(api, "Li Lei", "13800138000", "11010519491231002X", 10_000).await;
    let lost = enroll(api, &old_phone).await;
    let kept = enroll(api, &old_phone).await;
    assert_eq!(api.call("DELETE", &format!("/v1/payment-devices/{}", lost["device"]), Some(&old_phone), None, None).await.0, StatusCode::OK);
    assert_eq!(charge(api, &shop, "LOST1", &payment_code(&lost)).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let slot = kept["device"].as_u64().unwrap();
    let wrong: Vec<StatusCode> = wrong_codes(api, &stranger, slot).await;
    assert_eq!(wrong, [[StatusCode::UNPROCESSABLE_ENTITY; 3].as_slice(), &[StatusCode::TOO_MANY_REQUESTS; 2]].concat());
    let (status, paid) = charge(api, &shop, "KEPT1", &payment_code(&kept)).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let (_, new_session) = sign_in(api, "13800138000", "correct horse", None).await;
    let new_phone = bearer(&new_session);
    let (status, ended, _) = api.call("POST", "/v1/my/sessions/end-others", Some(&new_phone), None, None).await;
    assert_eq!((status, ended["ended_sessions"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(api.call("GET", "/v1/wallet", Some(&old_phone), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/v1/my/sessions", Some(&new_phone), None, None).await.1["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(api.call("POST", "/v1/wallet/freeze", Some(&new_phone), None, None).await.0, StatusCode::OK);
    let (status, body) = charge(api, &shop, "FROZEN1", &payment_code_at(&kept, now_s() + 30)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{body}");
    for _ in 0..5 {
        assert_eq!(sign_in(api, "13800138000", "guess guess", None).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sign_in(api, "13800138000", "correct horse", None).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sign_in(api, "13800138000", "correct horse", new_session["client_ticket"].as_str()).await.0, StatusCode::OK);
    city.finish(&["correct horse", "11010519491231002X"]);
}

/// Five wrong codes for `slot` from one shop, one after another: their statuses.
async fn wrong_codes(api: &Api, shop: &str, slot: u64) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for n in 0..5u64 {
        statuses.push(charge(api, shop, &format!("GUESS{n}"), &format!("88{slot:08}{:08}", n * 7_919)).await.0);
    }
    statuses
}

/// A device's code at `unix_s`.
fn payment_code_at(device: &Value, unix_s: u64) -> String {
    let secret = support::unhex(device["secret"].as_str().unwrap());
    let slot = u32::try_from(device["device"].as_u64().unwrap()).unwrap();
    citypay_codes::payment_code::PaymentCode::generate(slot, &secret, unix_s).to_string()
}
