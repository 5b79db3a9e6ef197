//! The API's JSON request bodies and `/gateway.do`'s form (`citypay-api`, `citypay-gateway`).

use citypay_api::routes::inputs::{REQUEST_BODIES, gateway_amount, gateway_timeout, gateway_timestamp};
use citypay_gateway::money::{MAX_FEN, fen, parse_yuan, yuan};
use citypay_gateway::{Request, parse_biz_content};
use serde_json::Value;

/// The largest body tried: the server's limit is larger, but line and column numbers of a body
/// this size have at most 5 digits, which the check on values below relies on.
const MAX_BODY: usize = 64 * 1024;

/// A JSON request body: the first byte picks the route's body type, the rest is the body.
///
/// A refusal is a 4xx `ApiError` with a snake_case code whose message never quotes a value
/// sent (a run of 6 or more digits from a value, an ID, card or mobile number, is never in it;
/// keys the client sent may be named).
pub fn json_bodies(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    if body.len() > MAX_BODY {
        return;
    }
    let (_, read) = REQUEST_BODIES[usize::from(pick) % REQUEST_BODIES.len()];
    let Err(error) = read(body) else { return };
    assert!(error.status().is_client_error(), "{} for a request body", error.status());
    assert!(error.code().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    let Ok(json) = serde_json::from_slice::<Value>(body) else { return };
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    collect(&json, &mut keys, &mut values);
    for value in values {
        if value.len() >= 6 && value.bytes().all(|b| b.is_ascii_digit()) && !keys.iter().any(|k| k.contains(&value)) {
            assert!(!error.message().contains(&value), "the message {:?} quotes a value sent", error.message());
        }
    }
}

/// Every key, and every string and number as text, of a JSON value.
fn collect(json: &Value, keys: &mut Vec<String>, values: &mut Vec<String>) {
    match json {
        Value::String(s) => values.push(s.clone()),
        Value::Number(n) => values.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|item| collect(item, keys, values)),
        Value::Object(map) => {
            for (key, item) in map {
                keys.push(key.clone());
                collect(item, keys, values);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Parameters every SDK signs.
const COMMON: [&str; 8] = ["app_id", "method", "charset", "sign_type", "timestamp", "version", "notify_url", "biz_content"];

/// A `/gateway.do` call: the query string, a newline, the form body.
///
/// The form reads the same from the query as from the body; the signing string holds every
/// common parameter as received; a timestamp read is the time written; every amount read is
/// within Alipay's bounds and written back as read; `timeout_express` stays within 2 hours.
pub fn gateway_do(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (query, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let request = Request::parse(query, body);
    let joined = [query, b"&", body].concat();
    assert_eq!(Request::parse(&joined, b""), request, "a parameter reads the same from the query and the body");
    let content = request.sign_content();
    for key in COMMON {
        if let Some(value) = request.get(key) {
            assert!(content.contains(&format!("{key}={value}")), "{key} left out of the signing string");
            amount_read_back(parse_yuan(value));
        }
    }
    if let Some(time) = request.get("timestamp").and_then(|t| gateway_timestamp(t).map(|s| (t, s))) {
        let (text, seconds) = time;
        let clock: Vec<i64> = text[text.len() - 8..].split(':').map(|p| p.parse().unwrap_or(-1)).collect();
        assert_eq!(seconds.rem_euclid(86_400), clock[0] * 3600 + clock[1] * 60 + clock[2]);
    }
    let Some(Ok(biz)) = request.get("biz_content").map(parse_biz_content) else { return };
    for value in biz.values() {
        amount_read_back(fen(value));
    }
    for name in ["total_amount", "refund_amount"] {
        if let Ok(fen) = gateway_amount(&biz, name) {
            assert!(fen >= 1);
            amount_read_back(Ok(fen));
        }
    }
    if let Ok(Some(seconds)) = gateway_timeout(&biz) {
        assert!((60..=7200).contains(&seconds), "timeout_express of {seconds} s");
    }
}

fn amount_read_back(read: Result<i64, String>) {
    if let Ok(fen) = read {
        assert!((0..=MAX_FEN).contains(&fen), "{fen} fen read");
        assert_eq!(parse_yuan(&yuan(fen)), Ok(fen));
    }
}
