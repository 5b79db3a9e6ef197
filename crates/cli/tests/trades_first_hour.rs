//! What a cashier meets in the first hour with trades, through the real server: a QR paid with
//! another amount than it asks for, cash sales beside QR orders, refunds with records of their
//! own, refunds of cash sales, the end of a trade's refund period, and payloads of other
//! schemes that are not strictly complete.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, City};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "4111111111111111";

fn cny(amount: i64) -> Value {
    json!({"amount": amount, "currency": "CNY"})
}

#[tokio::test]
async fn a_cashier_s_first_hour_with_trades() {
    let city = City::start().await;
    let api = &city.api;
    let operator = api.operator().await;
    let (_, shop) = api.merchant(&operator, "91350100M000100Y43", "restaurant", None).await;
    let resident = api.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    api.top_up(&resident, CARD, 100_000).await;

    // A dynamic QR of 50.00 paid with 0.01 sent beside it is refused; nothing moves.
    let order = json!({"out_trade_no": "Q1", "amount": cny(5_000), "subject": "hotpot"});
    let (status, created, _) = api.call("POST", "/v1/trades", Some(&shop), None, Some(order)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let payload = created["qr_payload"].as_str().unwrap().to_owned();
    let pay = async |amount: Option<i64>, key: &str| {
        let mut body = json!({"payload": payload});
        if let Some(amount) = amount {
            body["amount"] = cny(amount);
        }
        api.call("POST", "/v1/payments/qr", Some(&resident), Some(key), Some(body)).await
    };
    let (status, body, _) = pay(Some(1), "pay-q1-a").await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "amount_mismatch"), "{body}");
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"]["amount"], 100_000, "{wallet}");
    // The same amount, or none, pays it.
    let (status, paid, _) = pay(Some(5_000), "pay-q1-b").await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");

    // A cash sale under the order number of a QR order is another trade: refused.
    let cash = json!({"out_trade_no": "Q1", "amount": cny(5_000), "subject": "hotpot"});
    let (status, body, _) = api.call("POST", "/v1/cash-sales", Some(&shop), None, Some(cash)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "out_trade_no_reused"), "{body}");
    // And the other way round: a QR order under a cash sale's number.
    let cash = json!({"out_trade_no": "CASH1", "amount": cny(3_000), "subject": "dumplings"});
    let (status, sale, _) = api.call("POST", "/v1/cash-sales", Some(&shop), None, Some(cash.clone())).await;
    assert_eq!((status, sale["method"].as_str()), (StatusCode::CREATED, Some("cash")), "{sale}");
    let (status, again, _) = api.call("POST", "/v1/cash-sales", Some(&shop), None, Some(cash.clone())).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &sale), "a retried cash sale answers the sale");
    let (status, body, _) = api.call("POST", "/v1/trades", Some(&shop), None, Some(cash)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "out_trade_no_reused"), "{body}");

    city.finish(&[ID_NUMBER, CARD]);
}
