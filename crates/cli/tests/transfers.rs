//! Sending money to someone through the real server: a resident in Wuhan finds her mother in
//! Fuzhou by mobile number (the name masked), sends with a note, retries safely; her own
//! number, an unknown one, more than she has, a frozen wallet and a long note are refused;
//! both see the transfer in their lists and statements; looking recipients up is limited per
//! sender. The books balance afterwards, on SQLite and on PostgreSQL.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, City, Target};

fn cny(fen: i64) -> Value {
    json!({"amount": fen, "currency": "CNY"})
}

async fn sends_money_to_family(city: City) {
    let api = &city.api;
    let operator = api.operator().await;
    for (code, name) in [(420100, "Wuhan"), (350100, "Fuzhou")] {
        let (status, onboarded, _) = api.call("POST", "/v1/cities", Some(&operator), Some(&format!("city-{code}")), Some(json!({"code": code, "name": name}))).await;
        assert_eq!(status, StatusCode::CREATED, "{onboarded}");
    }
    let register = |name: &str, mobile: &str, id: &str, city: u32| {
        json!({"city": city, "name": name, "mobile": mobile, "id_number": id, "password": "correct horse"})
    };
    for (body, key) in [(register("李娜", "13800138000", "11010519491231002X", 420100), "r1"), (register("王秀英", "13700137000", "350102195501010022", 350100), "r2")] {
        let (status, made, _) = api.call("POST", "/v1/residents", None, Some(key), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
    }
    let daughter = api.sign_in("13800138000", "correct horse").await;
    let mother = api.sign_in("13700137000", "correct horse").await;
    api.issue_card(&operator, "4111111111111111", "李娜", "11010519491231002X").await;
    api.top_up(&daughter, "4111111111111111", 50_000).await;

    // Found by mobile number, the name masked.
    let (status, found, _) = api.call("POST", "/v1/transfer-recipients", Some(&daughter), None, Some(json!({"mobile": "137 0013 7000"}))).await;
    assert_eq!((status, found["masked_name"].as_str(), found["city"].as_u64()), (StatusCode::OK, Some("**英"), Some(350100)), "{found}");
    assert!(!found.to_string().contains("王秀英") && !found.to_string().contains("350102"), "{found}");
    for (mobile, code) in [("13900139000", "recipient_not_found"), ("13800138000", "own_wallet"), ("12345", "recipient_not_found")] {
        let (status, refused, _) = api.call("POST", "/v1/transfer-recipients", Some(&daughter), None, Some(json!({"mobile": mobile}))).await;
        assert_eq!(Api::code(&refused), code, "{mobile}: {status} {refused}");
    }

    // Sent once, however often it is retried.
    let send = json!({"mobile": "13700137000", "amount": cny(20_000), "note": "生日快乐"});
    let (status, sent, _) = api.call("POST", "/v1/transfers", Some(&daughter), Some("gift-1"), Some(send.clone())).await;
    assert_eq!((status, sent["direction"].as_str(), sent["counterparty"].as_str()), (StatusCode::CREATED, Some("sent"), Some("**英")), "{sent}");
    let (status, again, replayed) = api.call("POST", "/v1/transfers", Some(&daughter), Some("gift-1"), Some(send.clone())).await;
    assert_eq!((status, &again, replayed), (StatusCode::CREATED, &sent, true));
    // More than she has, to herself, to nobody, with a long note: refused, nothing moves.
    let refusals = [
        (json!({"mobile": "13700137000", "amount": cny(30_001)}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"mobile": "13800138000", "amount": cny(100)}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"mobile": "13900139000", "amount": cny(100)}), StatusCode::NOT_FOUND),
        (json!({"mobile": "13700137000", "amount": cny(100), "note": "长".repeat(51)}), StatusCode::BAD_REQUEST),
        (json!({"mobile": "13700137000", "amount": cny(0)}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (n, (body, expected)) in refusals.into_iter().enumerate() {
        let (status, refused, _) = api.call("POST", "/v1/transfers", Some(&daughter), Some(&format!("bad-{n}")), Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {refused}");
    }
    // Money sent counts against the sender's class cap as any balance payment does: a class I
    // wallet pays at most 1,000.00 yuan from its balance since opening, 200.00 of it sent.
    let (_, cards, _) = api.call("GET", "/v1/wallet/cards", Some(&daughter), None, None).await;
    let top_up = json!({"card_id": cards["cards"][0]["card_id"], "amount": cny(100_000)});
    let (status, topped, _) = api.call("POST", "/v1/wallet/top-ups", Some(&daughter), Some("top-2"), Some(top_up)).await;
    assert_eq!(status, StatusCode::CREATED, "{topped}");
    let over = json!({"mobile": "13700137000", "amount": cny(80_001)});
    let (status, capped, _) = api.call("POST", "/v1/transfers", Some(&daughter), Some("over-cap"), Some(over)).await;
    assert_eq!((status, Api::code(&capped)), (StatusCode::UNPROCESSABLE_ENTITY, "exceeds_window_cap"), "{capped}");
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&daughter), None, None).await;
    assert_eq!(wallet["balance"]["amount"], 130_000, "nothing moved: {wallet}");

    // A frozen wallet sends nothing; the mother can still receive and send back.
    api.call("POST", "/v1/wallet/freeze", Some(&daughter), None, None).await;
    let (status, frozen, _) = api.call("POST", "/v1/transfers", Some(&daughter), Some("gift-2"), Some(json!({"mobile": "13700137000", "amount": cny(100)}))).await;
    assert_eq!((status, Api::code(&frozen)), (StatusCode::FORBIDDEN, "wallet_frozen"), "{frozen}");
    let (status, back, _) = api.call("POST", "/v1/transfers", Some(&mother), Some("back-1"), Some(json!({"mobile": "13800138000", "amount": cny(500), "note": "收到"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{back}");

    // Both lists, both statements.
    let (_, mine, _) = api.call("GET", "/v1/transfers", Some(&daughter), None, None).await;
    let directions: Vec<&str> = mine["items"].as_array().unwrap().iter().map(|t| t["direction"].as_str().unwrap()).collect();
    assert_eq!(directions, ["received", "sent"], "{mine}");
    let (_, hers, _) = api.call("GET", "/v1/transfers?limit=1", Some(&mother), None, None).await;
    assert_eq!((hers["items"][0]["direction"].as_str(), hers["items"][0]["note"].as_str()), (Some("sent"), Some("收到")), "{hers}");
    let cursor = hers["next_cursor"].as_str().unwrap();
    let (_, older, _) = api.call("GET", &format!("/v1/transfers?limit=1&cursor={cursor}"), Some(&mother), None, None).await;
    assert_eq!((older["items"][0]["direction"].as_str(), older["items"][0]["counterparty"].as_str()), (Some("received"), Some("*娜")), "{older}");
    let (_, statement, _) = api.call("GET", "/v1/wallet/statement?kind=transfer", Some(&mother), None, None).await;
    let lines = statement["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{statement}");
    assert_eq!((lines[1]["amount"]["amount"].as_i64(), lines[1]["counterparty"].as_str()), (Some(20_000), Some("*娜")), "{statement}");
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&mother), None, None).await;
    assert_eq!(wallet["balance"]["amount"], 19_500, "{wallet}");

    // Lookups are limited per sender: 20 an hour, then 429 with Retry-After. The count is of
    // the clock's hour: never start it in an hour's last seconds.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if 3600 - now % 3600 < 20 {
        tokio::time::sleep(std::time::Duration::from_secs(3600 - now % 3600 + 1)).await;
    }
    let mut limited = None;
    for n in 0..25 {
        let (status, body, _) = api.call("POST", "/v1/transfer-recipients", Some(&mother), None, Some(json!({"mobile": format!("1390013{n:04}")}))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((n, body));
            break;
        }
    }
    let (n, body) = limited.expect("lookups are limited");
    assert_eq!((n, Api::code(&body)), (20, "rate_limited"), "{body}");
    // Sending to a number tells whether it is registered as a lookup would: past the limit, a
    // send that would move nothing is refused the same way.
    let probe = json!({"mobile": "13900139999", "amount": cny(100)});
    let (status, body, _) = api.call("POST", "/v1/transfers", Some(&mother), Some("probe-1"), Some(probe)).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"), "{body}");
    city.finish(&["correct horse", "11010519491231002X", "350102195501010022"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_sends_money_to_family_on_sqlite() {
    sends_money_to_family(City::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_sends_money_to_family_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = Target::postgres(dir.path(), "transfers") else { return };
    sends_money_to_family(City::start_on(dir, target).await).await;
}
