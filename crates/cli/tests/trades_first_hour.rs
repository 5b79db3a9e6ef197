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
    api.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
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

    refunds_have_records_and_a_period(api, &operator, &shop, &resident).await;
    qr_payloads_are_read_as_banks_read_them(api, &shop, &resident).await;
    city.finish(&[ID_NUMBER, CARD]);
}

/// PromptPay's generators leave out 52, 59 and 60 (dtinth/promptpay-qr's test vector: phone
/// 000-000-0000, 4.22 baht).
const PROMPTPAY: &str = "00020101021229370016A000000677010111011300660000000005802TH530376454044.226304E469";

/// `payload` without its data object `id`, with the CRC made right again.
fn without(payload: &str, id: u8) -> String {
    use citypay_codes::mpm::{RawPayload, checksum_hex, tlv};
    let raw = RawPayload::decode(payload).unwrap();
    let body: String = raw.objects().iter().filter(|o| o.id() != id && o.id() != 63).map(|o| tlv::encode(o.id(), o.value()).unwrap()).collect();
    let covered = format!("{body}6304");
    let crc = checksum_hex(&covered);
    covered + &crc
}

/// Another scheme's payload, complete or not, is another scheme's; citypay's own must be
/// complete; a scanner's line ending is no part of a payload.
async fn qr_payloads_are_read_as_banks_read_them(api: &Api, shop: &str, resident: &str) {
    let pay = async |payload: &str, key: &str| {
        let body = json!({"payload": payload, "amount": cny(100)});
        api.call("POST", "/v1/payments/qr", Some(resident), Some(key), Some(body)).await
    };
    for (i, payload) in [PROMPTPAY.to_owned(), format!("{PROMPTPAY}\r\n")].iter().enumerate() {
        let (status, body, _) = pay(payload, &format!("pp-{i}")).await;
        assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "scheme_not_accepted"), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("PromptPay"), "{body}");
    }
    let (_, sticker, _) = api.call("GET", "/v1/merchant/qr", Some(shop), None, None).await;
    let sticker = sticker["qr_payload"].as_str().unwrap();
    let (status, body, _) = pay(&without(sticker, 59), "no-name").await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_qr"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("59 (merchant name) is missing"), "{body}");
    let (status, paid, _) = pay(&format!("{sticker}\r\n"), "sticker-crlf").await;
    assert_eq!((status, &paid["amount"]), (StatusCode::OK, &cny(100)), "{paid}");
}

#[test]
fn inspect_reads_an_incomplete_promptpay_payload_with_warnings() {
    let output = std::process::Command::new(support::BIN).args(["inspect", "qr", PROMPTPAY, "--json"]).output().unwrap();
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((output.status.code(), &value["valid"]), (Some(0), &json!(true)), "{value}");
    assert_eq!((&value["fields"]["schemes"], &value["fields"]["amount"]), (&json!(["PromptPay"]), &json!("4.22")), "{value}");
    assert_eq!(value["fields"]["merchant_name"], Value::Null);
    let warnings: Vec<&str> = value["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(
        warnings[..3],
        [
            "mandatory data object 52 (merchant category code) is missing",
            "mandatory data object 59 (merchant name) is missing",
            "mandatory data object 60 (merchant city) is missing",
        ],
        "{value}"
    );
    assert!(warnings[3].contains("scheme not accepted"), "{value}");
}

/// Refunds of Q1 (paid 50.00 by QR) and CASH1 (30.00 in cash), then the end of a period.
async fn refunds_have_records_and_a_period(api: &Api, operator: &str, shop: &str, resident: &str) {
    let refund = async |trade: &str, no: &str, amount: i64| {
        let body = json!({"out_request_no": no, "amount": cny(amount)});
        api.call("POST", &format!("/v1/trades/{trade}/refunds"), Some(shop), None, Some(body)).await
    };
    let balance = async || api.call("GET", "/v1/wallet", Some(resident), None, None).await.1["balance"]["amount"].as_i64().unwrap();

    // A refund answers its record, the trade's total refunded and that money moved; the same
    // request again answers the same record, the total now, and that nothing moved.
    let (status, first, _) = refund("Q1", "R1", 2_000).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!((&first["refund"]["out_request_no"], &first["refund"]["amount"], &first["refund"]["status"]), (&json!("R1"), &cny(2_000), &json!("REFUND_SUCCESS")));
    assert_eq!((&first["trade"]["refunded"], &first["fund_change"]), (&cny(2_000), &json!(true)), "{first}");
    let (status, second, _) = refund("Q1", "R2", 1_000).await;
    assert_eq!((status, &second["trade"]["refunded"]), (StatusCode::OK, &cny(3_000)), "{second}");
    let (status, again, _) = refund("Q1", "R1", 2_000).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!((&again["refund"], &again["trade"]["refunded"], &again["fund_change"]), (&first["refund"], &cny(3_000), &json!(false)), "{again}");
    assert_eq!(balance().await, 100_000 - 5_000 + 3_000, "the repeat moved nothing");
    let (status, queried, _) = api.call("GET", "/v1/trades/Q1/refunds/R1", Some(shop), None, None).await;
    assert_eq!((status, &queried), (StatusCode::OK, &again));
    let (status, body, _) = api.call("GET", "/v1/trades/Q1/refunds/R9", Some(shop), None, None).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::NOT_FOUND, "refund_not_found"), "{body}");
    let (status, body, _) = refund("Q1", "R1", 1_999).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "out_request_no_reused"), "{body}");
    // Another merchant sees none of it.
    let (_, other) = api.merchant(operator, "91110000600037341L", "retail", None).await;
    let (status, _, _) = api.call("GET", "/v1/trades/Q1/refunds/R1", Some(&other), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A cash sale's refund is recorded like any other; no wallet moves.
    let (status, cash, _) = refund("CASH1", "CR1", 1_000).await;
    assert_eq!((status, &cash["trade"]["refunded"], &cash["trade"]["status"], &cash["fund_change"]), (StatusCode::OK, &cny(1_000), &json!("TRADE_SUCCESS"), &json!(true)), "{cash}");
    let (status, rest, _) = refund("CASH1", "CR2", 2_000).await;
    assert_eq!((status, &rest["trade"]["status"]), (StatusCode::OK, &json!("TRADE_CLOSED")), "fully refunded closes: {rest}");
    assert_eq!(balance().await, 98_000);

    // The merchant's refund period: 90 days unless set; a shorter one for trades paid after.
    let period = async |body: Option<Value>| {
        let method = if body.is_some() { "PUT" } else { "GET" };
        api.call(method, "/v1/merchant/refund-period", Some(shop), None, body).await
    };
    assert_eq!(period(None).await.1, json!({"refund_period_s": 7_776_000}));
    let (status, body, _) = period(Some(json!({"refund_period_s": 0}))).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"), "{body}");
    // Payment times are whole seconds: a period of 3 s leaves at least 2 s to refund in, even
    // on a loaded machine (a period of 1 s could end a moment after the payment).
    assert_eq!(period(Some(json!({"refund_period_s": 3}))).await, (StatusCode::OK, json!({"refund_period_s": 3}), false));
    for no in ["F1", "F2"] {
        let order = json!({"out_trade_no": no, "amount": cny(1_000), "subject": "tea"});
        let (_, created, _) = api.call("POST", "/v1/trades", Some(shop), None, Some(order)).await;
        let body = json!({"payload": created["qr_payload"]});
        let (status, paid, _) = api.call("POST", "/v1/payments/qr", Some(resident), Some(&format!("pay-{no}")), Some(body)).await;
        assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");
        if no == "F1" {
            let (status, early, _) = refund("F1", "R1", 100).await;
            assert_eq!(status, StatusCode::OK, "{early}");
        }
    }
    // F2 is never read: the sweeper finishes it; F1 finishes when next read.
    tokio::time::sleep(std::time::Duration::from_millis(4_100)).await;
    let (_, page, _) = api.call("GET", "/v1/trades?limit=10", Some(shop), None, None).await;
    let f2 = page["items"].as_array().unwrap().iter().find(|t| t["out_trade_no"] == "F2").unwrap();
    assert_eq!(f2["status"], "TRADE_FINISHED", "{page}");
    let (status, body, _) = refund("F1", "R2", 100).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "trade_finished"), "{body}");
    let (_, f1, _) = api.call("GET", "/v1/trades/F1", Some(shop), None, None).await;
    assert_eq!((&f1["status"], &f1["refunded"]), (&json!("TRADE_FINISHED"), &cny(100)));
    let (status, body, _) = api.call("POST", "/v1/trades/F2/cancel", Some(shop), None, None).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "trade_finished"), "{body}");
    // Its refund made in time is still answered; Q1 keeps the 90 days it was paid under.
    let (status, repeat, _) = refund("F1", "R1", 100).await;
    assert_eq!((status, &repeat["fund_change"], &repeat["trade"]["status"]), (StatusCode::OK, &json!(false), &json!("TRADE_FINISHED")), "{repeat}");
    let (status, late, _) = refund("Q1", "R3", 500).await;
    assert_eq!((status, &late["trade"]["refunded"]), (StatusCode::OK, &cny(3_500)), "{late}");
    assert_eq!(balance().await, 98_000 - 2_000 + 100 + 500);
}
