//! The merchant's till through the real server: the merchant makes cashier and manager
//! credentials; a cashier signs in (the session in the pages' cookie), rings up a QR sale that a
//! resident pays, charges a resident's payment code, records cash, lists the shift, and refunds
//! within their limit; beyond it a manager refunds; only a manager downloads the settlement
//! file; every trade and refund names its cashier; a disabled cashier is out at once; a
//! cashier's session speaks for nobody else. The books balance afterwards.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, City, payment_code, uscc};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "4111111111111111";

fn cny(amount: i64) -> Value {
    json!({"amount": amount, "currency": "CNY"})
}

/// A till session: its cookie and the page's own origin.
struct Till {
    cookie: String,
    origin: String,
}

impl Till {
    async fn sign_in(api: &Api, number: u64, password: &str) -> Result<Till, (StatusCode, Value)> {
        let response = api.client.post(format!("{}/v1/till/sessions", api.base)).json(&json!({"cashier_number": number.to_string(), "password": password})).send().await.unwrap();
        if response.status() != StatusCode::OK {
            let status = response.status();
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
        Ok(Till { cookie, origin: api.base.clone() })
    }

    async fn call(&self, api: &Api, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        api.call_with(method, path, &[("cookie", &self.cookie), ("origin", &self.origin)], body).await
    }
}

async fn cashier(api: &Api, shop: &str, name: &str, role: &str, limit: i64) -> u64 {
    let body = json!({"name": name, "role": role, "refund_limit": cny(limit), "password": "till password"});
    let (status, made, _) = api.call("POST", "/v1/cashiers", Some(shop), None, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let number = made["cashier_number"].as_u64().unwrap();
    assert!((10_000_000..100_000_000).contains(&number), "{made}");
    number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cashier_takes_and_refunds_payments_within_their_limit() {
    let city = City::start().await;
    let api = &city.api;
    let operator = api.operator().await;
    let (_, shop) = api.merchant(&operator, &uscc("TL000001"), "retail", None).await;
    let (_, other_shop) = api.merchant(&operator, &uscc("TL000002"), "retail", None).await;
    let resident = api.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    api.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
    api.top_up(&resident, CARD, 100_000).await;

    let wang = cashier(api, &shop, "Wang Fang", "cashier", 1_000).await;
    let boss = cashier(api, &shop, "Zhao Min", "manager", 0).await;
    let (status, listed, _) = api.call("GET", "/v1/cashiers", Some(&shop), None, None).await;
    assert_eq!((status, listed["cashiers"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{listed}");
    assert!(!listed.to_string().contains("till password"), "{listed}");
    let (status, body, _) = api.call("POST", "/v1/cashiers", Some(&shop), None, Some(json!({"name": "x", "role": "owner", "refund_limit": cny(1), "password": "till password"}))).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::BAD_REQUEST, "invalid_field"), "{body}");
    // Another merchant cannot touch this merchant's cashier.
    let (status, _, _) = api.call("PATCH", &format!("/v1/cashiers/{wang}"), Some(&other_shop), None, Some(json!({"disabled": true}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The wrong password is refused; the right one opens a till session.
    let (status, _) = Till::sign_in(api, wang, "wrong password").await.err().unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let till = Till::sign_in(api, wang, "till password").await.unwrap();
    let (status, me) = till.call(api, "GET", "/v1/till/me", None).await;
    assert_eq!((status, me["cashier"]["name"].as_str(), me["merchant_name"].as_str()), (StatusCode::OK, Some("Wang Fang"), Some(format!("Merchant {}", uscc("TL000001")).as_str())), "{me}");

    // A QR sale the resident scans and pays.
    let order = json!({"out_trade_no": format!("T{wang}001"), "amount": cny(2_500), "subject": "groceries"});
    let (status, created) = till.call(api, "POST", "/v1/till/trades", Some(order.clone())).await;
    assert_eq!((status, created["trade"]["cashier_number"].as_u64()), (StatusCode::CREATED, Some(wang)), "{created}");
    let (status, again) = till.call(api, "POST", "/v1/till/trades", Some(order)).await;
    assert_eq!((status, &again["trade"]), (StatusCode::CREATED, &created["trade"]), "a retried sale is the same sale");
    // The resident's app shows whom the code pays (the registered name) and how much first.
    let preview = json!({"payload": created["qr_payload"]});
    let (status, shown, _) = api.call("POST", "/v1/payments/qr/preview", Some(&resident), None, Some(preview.clone())).await;
    assert_eq!((status, shown["amount"]["amount"].as_i64()), (StatusCode::OK, Some(2_500)), "{shown}");
    assert_eq!(shown["merchant_name"], format!("Merchant {}", uscc("TL000001")), "{shown}");
    let (status, paid, _) = api.call("POST", "/v1/payments/qr", Some(&resident), Some("pay-1"), Some(json!({"payload": created["qr_payload"]}))).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let (status, body, _) = api.call("POST", "/v1/payments/qr/preview", Some(&resident), None, Some(preview)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "trade_closed"), "a paid order's code pays nothing more: {body}");
    let (status, cards, _) = api.call("GET", "/v1/wallet/cards", Some(&resident), None, None).await;
    assert_eq!((status, cards["cards"][0]["masked"].as_str().map(|m| m.ends_with("1111"))), (StatusCode::OK, Some(true)), "{cards}");
    let (status, seen) = till.call(api, "GET", &format!("/v1/till/trades/T{wang}001"), None).await;
    assert_eq!((status, seen["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{seen}");

    // The customer's payment code, typed at the till.
    let (status, device, _) = api.call("POST", "/v1/payment-devices", Some(&resident), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let charge = json!({"out_trade_no": format!("T{wang}002"), "amount": cny(4_000), "subject": "rice", "auth_code": payment_code(&device)});
    let (status, charged) = till.call(api, "POST", "/v1/till/code-payments", Some(charge)).await;
    assert_eq!((status, charged["status"].as_str(), charged["cashier_number"].as_u64()), (StatusCode::OK, Some("TRADE_SUCCESS"), Some(wang)), "{charged}");

    // Cash.
    let cash = json!({"out_trade_no": format!("T{wang}003"), "amount": cny(700), "subject": "eggs"});
    let (status, sale) = till.call(api, "POST", "/v1/till/cash-sales", Some(cash)).await;
    assert_eq!((status, sale["method"].as_str()), (StatusCode::CREATED, Some("cash")), "{sale}");

    // A refund within the limit; one beyond it is refused and left to a manager.
    let refund = |no: &str, amount: i64| json!({"out_request_no": no, "amount": cny(amount)});
    let (status, refunded) = till.call(api, "POST", &format!("/v1/till/trades/T{wang}002/refunds"), Some(refund("R1", 1_000))).await;
    assert_eq!((status, refunded["refund"]["cashier_number"].as_u64()), (StatusCode::OK, Some(wang)), "{refunded}");
    let (status, refused) = till.call(api, "POST", &format!("/v1/till/trades/T{wang}002/refunds"), Some(refund("R2", 1_001))).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::FORBIDDEN, "refund_over_limit"), "{refused}");
    let manager = Till::sign_in(api, boss, "till password").await.unwrap();
    let (status, refunded) = manager.call(api, "POST", &format!("/v1/till/trades/T{wang}002/refunds"), Some(refund("R2", 2_000))).await;
    assert_eq!((status, refunded["refund"]["cashier_number"].as_u64()), (StatusCode::OK, Some(boss)), "{refunded}");
    // The cashier retrying the manager's refund gets its answer, not a refusal.
    let (status, repeat) = till.call(api, "POST", &format!("/v1/till/trades/T{wang}002/refunds"), Some(refund("R2", 2_000))).await;
    assert_eq!((status, repeat["fund_change"].as_bool()), (StatusCode::OK, Some(false)), "{repeat}");

    // The shift: three trades, what was taken.
    let (status, shift) = till.call(api, "GET", "/v1/till/shift", None).await;
    assert_eq!((status, shift["trades"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "{shift}");
    assert_eq!(shift["taken_electronically"]["amount"], 2_500 + 4_000 - 3_000, "{shift}");
    assert_eq!(shift["taken_in_cash"]["amount"], 700, "{shift}");
    let (status, shift) = manager.call(api, "GET", "/v1/till/shift", None).await;
    assert_eq!((status, shift["trades"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "the manager rang nothing up: {shift}");

    // The settlement file: managers only.
    let (status, body) = till.call(api, "GET", "/v1/till/settlement-files/2026-01-05", None).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::FORBIDDEN, "managers_only"), "{body}");
    let response = api.client.get(format!("{}/v1/till/settlement-files/2026-01-05", api.base)).header("cookie", &manager.cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));

    // The merchant's own list names the cashier of each till trade.
    let (_, trades, _) = api.call("GET", "/v1/trades", Some(&shop), None, None).await;
    let named = trades["items"].as_array().unwrap().iter().filter(|t| t["cashier_number"].as_u64() == Some(wang)).count();
    assert_eq!(named, 3, "{trades}");

    // A cashier's session is nobody else's: not a resident's, not the merchant's.
    let (status, _) = till.call(api, "GET", "/v1/wallet", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = till.call(api, "GET", "/v1/trades", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nor does a resident's or the merchant's credential open the till.
    let (status, _, _) = api.call("GET", "/v1/till/me", Some(&resident), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api.call("GET", "/v1/till/me", Some(&shop), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Disabled: out at once, and no new sign-in.
    let (status, disabled, _) = api.call("PATCH", &format!("/v1/cashiers/{wang}"), Some(&shop), None, Some(json!({"disabled": true}))).await;
    assert_eq!((status, disabled["disabled"].as_bool()), (StatusCode::OK, Some(true)), "{disabled}");
    let (status, _) = till.call(api, "GET", "/v1/till/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = Till::sign_in(api, wang, "till password").await.err().unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"]["amount"], 100_000 - 2_500 - 4_000 + 1_000 + 2_000, "{wallet}");
    let bearer = resident.trim_start_matches("Bearer ").to_owned();
    let cookie = till.cookie.split_once('=').unwrap().1.to_owned();
    city.finish(&["till password", "correct horse", &bearer, &cookie]);
}
