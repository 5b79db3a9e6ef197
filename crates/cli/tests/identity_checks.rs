//! Identity through the real server: the account class follows recorded verifications (never
//! what the registrant asks for), a card links only to the person its bank issued it to, ID
//! numbers are checked against the GB/T 2260 codes ever issued and the age rules, and a city is
//! a known prefecture-level code.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::{Api, City};

const ALICE_ID: &str = "11010519491231002X";
const BOB_ID: &str = "440524198001010013";
const ALICE_CARD: &str = "6222020200112233446";
const NO_SUCH_COUNTY: &str = "330199198001010017";
const BORN_1800: &str = "110105180001010010";
const SIX_YEARS_OLD: &str = "330106202001010012";
const RETIRED_COUNTY: &str = "330103198001010014";

fn registration(name: &str, mobile: &str, id_number: &str) -> serde_json::Value {
    json!({"city": 330100, "name": name, "mobile": mobile, "id_number": id_number, "password": "correct horse"})
}

/// The class a resident's wallet reports.
async fn class_of(api: &Api, resident: &str) -> String {
    let (status, wallet, _) = api.call("GET", "/v1/wallet", Some(resident), None, None).await;
    assert_eq!(status, StatusCode::OK, "{wallet}");
    wallet["account_class"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_checked_and_the_class_follows_verification() {
    let city = City::start().await;
    let api = &city.api;
    let operator = api.operator().await;

    // Asking for class III is refused with a reason; without it (or with I) the account opens
    // at class I.
    let mut asks = registration("Li Lei", "13800138000", ALICE_ID);
    asks["account_class"] = json!("III");
    let (status, body, _) = api.call("POST", "/v1/residents", None, Some("reg-iii"), Some(asks)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "account_class_not_verified"), "{body}");
    let (status, me, _) = api.call("POST", "/v1/residents", None, Some("reg-a"), Some(registration("Li Lei", "13800138000", ALICE_ID))).await;
    assert_eq!((status, me["account_class"].as_str()), (StatusCode::CREATED, Some("I")), "{me}");
    let alice = api.sign_in("13800138000", "correct horse").await;
    let bob = api.resident("Han Meimei", "13900139000", BOB_ID, "correct horse").await;
    assert_eq!(class_of(api, &alice).await, "I");

    // The bank issued the card to Alice: Bob cannot link it, nor a card it never issued, and
    // both refusals read the same (nothing says whose the card is).
    api.issue_card(&operator, ALICE_CARD, "Li Lei", ALICE_ID).await;
    let (status, taken, _) = api.call("POST", "/v1/wallet/cards", Some(&bob), Some("b-1"), Some(json!({"card_number": ALICE_CARD}))).await;
    assert_eq!((status, Api::code(&taken)), (StatusCode::UNPROCESSABLE_ENTITY, "card_holder_mismatch"), "{taken}");
    let (status, unknown, _) = api.call("POST", "/v1/wallet/cards", Some(&bob), Some("b-2"), Some(json!({"card_number": "4111111111111111"}))).await;
    assert_eq!((status, &unknown), (StatusCode::UNPROCESSABLE_ENTITY, &taken));
    let top_up = json!({"card_id": "1", "amount": {"amount": 100, "currency": "CNY"}});
    assert_eq!(api.call("POST", "/v1/wallet/top-ups", Some(&bob), Some("b-3"), Some(top_up)).await.0, StatusCode::NOT_FOUND);
    // The register keeps one holder per card.
    let again = json!({"card_number": ALICE_CARD, "name": "Han Meimei", "id_number": BOB_ID});
    let (status, body, _) = api.call("POST", "/v1/sandbox-bank/card-holders", Some(&operator), Some("issue-to-bob"), Some(again)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "card_issued_to_another"), "{body}");
    // Only platform operators fill it.
    let forged = json!({"card_number": "5555555555554444", "name": "Han Meimei", "id_number": BOB_ID});
    assert_eq!(api.call("POST", "/v1/sandbox-bank/card-holders", Some(&bob), Some("forge"), Some(forged)).await.0, StatusCode::FORBIDDEN);

    // Alice links her card: class I still (one bank). Cards of two more banks: class II.
    let (status, card, _) = api.call("POST", "/v1/wallet/cards", Some(&alice), Some("a-1"), Some(json!({"card_number": ALICE_CARD}))).await;
    assert_eq!((status, card["account_class"].as_str()), (StatusCode::CREATED, Some("I")), "{card}");
    for (key, number) in [("a-2", "6228480000000000003"), ("a-3", "6217000000000000003")] {
        let number = with_luhn(number);
        api.issue_card(&operator, &number, "Li Lei", ALICE_ID).await;
        let (status, card, _) = api.call("POST", "/v1/wallet/cards", Some(&alice), Some(key), Some(json!({"card_number": number}))).await;
        assert_eq!(status, StatusCode::CREATED, "{card}");
    }
    assert_eq!(class_of(api, &alice).await, "II");

    // An operator checks Bob's ID card in person: the name must match; then class III.
    let wrong = json!({"id_number": BOB_ID, "name": "Li Lei"});
    let (status, body, _) = api.call("POST", "/v1/in-person-verifications", Some(&operator), Some("f-1"), Some(wrong)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "identity_mismatch"), "{body}");
    assert_eq!(class_of(api, &bob).await, "I");
    let right = json!({"id_number": BOB_ID, "name": "Han Meimei"});
    let (status, body, _) = api.call("POST", "/v1/in-person-verifications", Some(&operator), Some("f-2"), Some(right.clone())).await;
    assert_eq!((status, body["account_class"].as_str()), (StatusCode::CREATED, Some("III")), "{body}");
    assert_eq!(class_of(api, &bob).await, "III");
    // Residents cannot verify anyone.
    assert_eq!(api.call("POST", "/v1/in-person-verifications", Some(&alice), Some("f-3"), Some(right)).await.0, StatusCode::FORBIDDEN);

    // ID numbers: a county code never issued, a birth date no living resident has and a child
    // are refused, each saying why; a county merged away (下城区 330103, 2021) still registers.
    let cases = [
        (NO_SUCH_COUNTY, "invalid_resident_id", "never issued"),
        (BORN_1800, "invalid_resident_id", "no living resident"),
        (SIX_YEARS_OLD, "below_minimum_age", "16"),
    ];
    for (i, (id_number, code, says)) in cases.into_iter().enumerate() {
        let body = registration("Wang Wu", &format!("1370013700{i}"), id_number);
        let (status, refused, _) = api.call("POST", "/v1/residents", None, Some(&format!("bad-{i}")), Some(body)).await;
        assert_eq!((status, Api::code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, code), "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains(says), "{refused}");
    }
    let (status, retired, _) = api.call("POST", "/v1/residents", None, Some("retired"), Some(registration("Wang Wu", "13700137009", RETIRED_COUNTY))).await;
    assert_eq!(status, StatusCode::CREATED, "{retired}");

    // A class I wallet pays at most 1,000 yuan from its balance; a refusal says which cap and
    // how much of it is left.
    let wang = api.sign_in("13700137009", "correct horse").await;
    let wang_card = with_luhn("6222020000000000000");
    api.issue_card(&operator, &wang_card, "Wang Wu", RETIRED_COUNTY).await;
    let (_, card, _) = api.call("POST", "/v1/wallet/cards", Some(&wang), Some("w-1"), Some(json!({"card_number": wang_card}))).await;
    let top_up = json!({"card_id": card["card_id"], "amount": {"amount": 150_000, "currency": "CNY"}});
    assert_eq!(api.call("POST", "/v1/wallet/top-ups", Some(&wang), Some("w-2"), Some(top_up)).await.0, StatusCode::CREATED);
    let (_, shop) = api.merchant(&operator, "91350100M000100Y43", "retail", None).await;
    let pay = |out_trade_no: &'static str, fen: i64| {
        let (shop, wang) = (shop.clone(), wang.clone());
        async move {
            let order = json!({"out_trade_no": out_trade_no, "amount": {"amount": fen, "currency": "CNY"}, "subject": "goods"});
            let (status, trade, _) = api.call("POST", "/v1/trades", Some(&shop), Some(out_trade_no), Some(order)).await;
            assert_eq!(status, StatusCode::CREATED, "{trade}");
            let payload = json!({"payload": trade["qr_payload"]});
            api.call("POST", "/v1/payments/qr", Some(&wang), Some(out_trade_no), Some(payload)).await
        }
    };
    let (status, refused, _) = pay("T1", 110_000).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "exceeds_window_cap"), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("class I ") && message.contains("1000.00 yuan") && message.contains("since the account opened") && message.contains("1000.00 yuan left"), "{message}");
    assert_eq!(pay("T2", 90_000).await.0, StatusCode::OK);
    let (_, refused, _) = pay("T3", 20_000).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("100.00 yuan left"), "{refused}");

    // A city is a prefecture-level city or a municipality with a code in use.
    for (code, expected) in [(999999, StatusCode::UNPROCESSABLE_ENTITY), (330106, StatusCode::UNPROCESSABLE_ENTITY), (420100, StatusCode::CREATED)] {
        let (status, body, _) = api.call("POST", "/v1/cities", Some(&operator), Some(&format!("city-{code}")), Some(json!({"code": code, "name": "a city"}))).await;
        assert_eq!(status, expected, "{code}: {body}");
    }

    city.finish(&[ALICE_ID, BOB_ID, ALICE_CARD, "Han Meimei", RETIRED_COUNTY]);
}

/// `prefix` with its last digit replaced by the Luhn check digit.
fn with_luhn(prefix: &str) -> String {
    let body = &prefix[..prefix.len() - 1];
    let check = citypay_identity::card::luhn_check_digit(body).unwrap();
    format!("{body}{check}")
}
