//! Transit's first hour through the real server and the real binary: an arrears payment
//! refused for want of money goes through after a top-up; uploaded taps that cannot be true
//! are refused one by one while the good ones are kept; a device key names one validator;
//! `citypay transit` checks a real ride code and refuses what it cannot do.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{Api, BIN, City, Target, admin, validator_authorization};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "4111111111111111";
const TRANSIT_USCC: &str = "91350100M000100Y43";

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn date_of(unix: u64) -> String {
    let day = citypay_fares::service_day(i64::try_from(unix).unwrap());
    let (y, m, d) = citypay_dashboard::dates::civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Uploads `taps` as validator `id`, signed with its device key now.
async fn upload(api: &Api, device: &citypay_ride::DeviceKey, id: u32, taps: Value) -> (StatusCode, Value) {
    let path = format!("/v1/validators/{id}/taps");
    let body = json!({ "taps": taps }).to_string();
    let response = api
        .client
        .post(format!("{}{path}", api.base))
        .header("authorization", validator_authorization(device, id, "POST", &path, now(), &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

fn tap(sequence: u64, account_ref: &str, time: u64, code_byte: u8) -> Value {
    json!({"sequence": sequence, "account_ref": account_ref, "direction": "in", "time": time, "code_hash": citypay_vault::hex::encode(&[code_byte; 32])})
}

/// The rider owes a metro fare of 5.00 with an empty wallet: the arrears payment is refused,
/// then, after a top-up, paid under a new idempotency key (the same key answers its first
/// refusal), which lifts the deny list and lets the rider get a credential again. Taps: a
/// sequence number uploaded again with another time, a tap dated 2033, one dated before its
/// validator was registered and one for a rider never credentialed are each refused, the good
/// tap of the same batch is kept; a device key registered twice is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrears_are_paid_after_a_top_up_and_taps_that_cannot_be_true_are_refused() {
    let city = City::start().await;
    let api = &city.api;
    let operator = api.operator().await;
    let (_, transit) = api.merchant(&operator, TRANSIT_USCC, "transit", None).await;
    let device = citypay_ride::DeviceKey::from_seed([8; 32]);
    let register = |key: &'static str, stop: &'static str, device_key: String| {
        let body = json!({"route_id": "M1", "stop_id": stop, "device_key": device_key});
        api.call("POST", "/v1/validators", Some(&transit), Some(key), Some(body))
    };
    let (status, validator, _) = register("v-1", "M1_LIUYUAN", citypay_vault::hex::encode(&device.public_bytes())).await;
    assert_eq!((status, validator["fare_estimate"]["amount"].as_i64()), (StatusCode::CREATED, Some(500)), "{validator}");
    let id = u32::try_from(validator["validator_id"].as_u64().unwrap()).unwrap();
    // One device key, one validator: its signature is what speaks for the validator.
    let (status, body, _) = register("v-2", "M1_XIBEIJIAO", citypay_vault::hex::encode(&device.public_bytes())).await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "device_key_registered"), "{body}");

    let resident = api.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    let rider = citypay_ride::RiderKey::from_seed([9; 32]);
    let credential = |key: &'static str| {
        api.call("POST", "/v1/ride-credentials", Some(&resident), Some(key), Some(json!({"rider_key": citypay_vault::hex::encode(&rider.public_bytes())})))
    };
    let (status, issued, _) = credential("cred-1").await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let account_ref = issued["account_ref"].as_str().unwrap().to_owned();

    // The validator has been at its gate for three days.
    support::sqlite_execute(&city.target, "UPDATE validators SET created_at = created_at - 259200");
    let now = now();
    let entered = now - 2 * 86_400;
    let taps = json!([
        tap(1, &account_ref, entered, 1),
        tap(2, &account_ref, 1_999_999_999, 2),
        tap(3, &account_ref, now - 4 * 86_400, 3),
        tap(4, "12345", entered + 60, 4),
        tap(5, &account_ref, now + 3_600, 5),
    ]);
    let (status, report) = upload(api, &device, id, taps).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!((report["stored"].as_u64(), report["already"].as_u64()), (Some(1), Some(0)), "{report}");
    let refused: Vec<(u64, &str)> = report["refused"].as_array().unwrap().iter().map(|r| (r["sequence"].as_u64().unwrap(), r["code"].as_str().unwrap())).collect();
    assert_eq!(
        refused,
        vec![(2, "dated_after_upload"), (3, "dated_before_registration"), (4, "unknown_rider"), (5, "dated_after_upload")],
        "{report}"
    );
    // The stored tap again, as it was: already there; with another time: a conflict.
    let (_, again) = upload(api, &device, id, json!([tap(1, &account_ref, entered, 1)])).await;
    assert_eq!(again, json!({"stored": 0, "already": 1, "refused": []}));
    let (_, moved) = upload(api, &device, id, json!([tap(1, &account_ref, entered + 600, 1)])).await;
    assert_eq!(moved["refused"][0]["code"], "sequence_conflict", "{moved}");

    // The day is fared: an entry with no exit costs the line's dearest fare, 5.00, and the
    // empty wallet owes it.
    let day = date_of(entered);
    let (status, run, _) = api.call("POST", "/v1/transit/fare-runs", Some(&operator), Some("run-1"), Some(json!({"date": day}))).await;
    assert_eq!((status, run["trips"].as_u64(), run["arrears"]["amount"].as_i64()), (StatusCode::OK, Some(1), Some(500)), "{run}");
    let (status, body, _) = credential("cred-owing").await;
    assert_eq!((status, Api::code(&body)), (StatusCode::CONFLICT, "in_arrears"), "{body}");
    let pay = |key: &'static str| api.call("POST", "/v1/transit/arrears-payments", Some(&resident), Some(key), None);
    let (status, body, _) = pay("arrears-1").await;
    assert_eq!((status, Api::code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"), "{body}");
    api.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
    let (_, card, _) = api.call("POST", "/v1/wallet/cards", Some(&resident), Some("card-1"), Some(json!({"card_number": CARD}))).await;
    let top_up = json!({"card_id": card["card_id"], "amount": {"amount": 5_000, "currency": "CNY"}});
    let (status, body, _) = api.call("POST", "/v1/wallet/top-ups", Some(&resident), Some("top-1"), Some(top_up)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The first key keeps its first answer; a new request pays.
    let (status, _, replayed) = pay("arrears-1").await;
    assert_eq!((status, replayed), (StatusCode::UNPROCESSABLE_ENTITY, true));
    let (status, paid, _) = pay("arrears-2").await;
    assert_eq!((status, paid["paid"]["amount"].as_i64()), (StatusCode::OK, Some(500)), "{paid}");
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident), None, None).await;
    assert_eq!(wallet["balance"]["amount"].as_i64(), Some(4_500), "{wallet}");
    let path = format!("/v1/validators/{id}/deny-list");
    let list: Value = api
        .client
        .get(format!("{}{path}", api.base))
        .header("authorization", validator_authorization(&device, id, "GET", &path, now, ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"accounts": []}));
    let (status, issued, _) = credential("cred-2").await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let (_, again, _) = pay("arrears-3").await;
    assert_eq!(again["paid"]["amount"].as_i64(), Some(0), "nothing is owed twice: {again}");
    // The per-tap answers and the conflict are in the API's document.
    let (_, spec, _) = api.call("GET", "/openapi.json", None, None, None).await;
    assert!(spec["components"]["schemas"]["RefusedTap"]["properties"]["code"].is_object(), "{}", spec["components"]["schemas"]["UploadView"]);
    assert!(spec["paths"]["/v1/validators"]["post"]["responses"]["409"].is_object());
    city.finish(&[ID_NUMBER]);
}

/// `citypay transit` with a real code: the validator reads the `ride.png` that `ride-code`
/// wrote and the hex it printed (on standard input), accepts them, and refuses a code with a
/// changed signature (exit 1). A missing key file is refused unless `--create-keys`; a closed
/// pipe ends the output quietly; an unknown operator's legs are an error.
#[test]
fn the_cli_checks_a_real_ride_code_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let png = dir.path().join("ride.png");
    let transit = |args: &[&str], input: Option<&str>| {
        let mut child = Command::new(BIN)
            .arg("transit")
            .args(args)
            .arg("--keys")
            .arg(&keys)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.unwrap_or_default().as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let ride_code = ["ride-code", "--out", png.to_str().unwrap()];
    let (status, _, error) = transit(&ride_code, None);
    assert_eq!(status, Some(2));
    assert!(error.contains("no key file") && error.contains("--create-keys"), "{error}");
    assert!(!keys.exists(), "a missing key file is not created unless asked");
    let (status, _, error) = transit(&["validator"], None);
    assert!(status == Some(2) && error.contains("no key file"), "{error}");

    let (status, printed, error) = transit(&[&ride_code[..], &["--create-keys"]].concat(), None);
    assert_eq!(status, Some(0), "{error}");
    let (status, out, error) = transit(&["validator", "--code", png.to_str().unwrap()], None);
    assert_eq!((status, out.starts_with("ACCEPT")), (Some(0), true), "{out}{error}");
    let (status, out, _) = transit(&["validator", "--code", "-"], Some(&printed));
    assert_eq!((status, out.starts_with("ACCEPT")), (Some(0), true), "{out}");
    let hex = printed.lines().last().unwrap();
    let last = if hex.ends_with('0') { "1" } else { "0" };
    let (status, out, _) = transit(&["validator", "--code", "-"], Some(&format!("{}{last}", &hex[..hex.len() - 1])));
    assert_eq!(status, Some(1), "{out}");
    assert!(out.starts_with("REFUSE") && out.contains("bad code signature"), "{out}");

    // A reader that stops reading: no panic, a quiet end.
    let mut child = Command::new(BIN).args(["transit", "validator", "--keys"]).arg(&keys).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !error.contains("panicked"), "{:?}: {error}", output.status);

    let city = tempfile::tempdir().unwrap();
    let target = Target::sqlite(city.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    let legs = target.command(&["transit", "legs", "--date", "2026-11-24", "--operator", "12345"]).output().unwrap();
    let error = String::from_utf8_lossy(&legs.stderr);
    assert!(!legs.status.success() && error.contains("no merchant 12345"), "{:?}: {error}", legs.status);
}
