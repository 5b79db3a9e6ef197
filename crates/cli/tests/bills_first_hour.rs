//! Bills as a resident, a cashier and a stranger meet them in their first hour, through the
//! real server: a link to someone else's bills shows nothing until that person approves it or
//! the school confirms the parent; a linked parent sees what the school billed for; a bill
//! that could never be paid is refused, and a fund that cannot pay says so; an insured bill
//! is paid in cash, the fund paying its part with the patient's consent or to the patient
//! afterwards; the biller's files share one time convention and tie out. One server for the
//! file; the books are audited after.

use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{Api, City};

const ALICE: &str = "11010519491231002X";
const STRANGER: &str = "440524198001010013";
const PUPIL: &str = "S2026001";

fn cny(fen: i64) -> Value {
    json!({"amount": fen, "currency": "CNY"})
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn bill(no: &str, kind: &str, payer: &str, items: &[(&str, i64)], insured: i64, pick: bool) -> Value {
    json!({"out_bill_no": no, "payer_kind": kind, "payer": payer, "title": format!("bill {no}"),
           "items": items.iter().map(|(n, a)| json!({"name": n, "amount": cny(*a)})).collect::<Vec<_>>(),
           "pick_items": pick, "insured": cny(insured), "due_at": now() + 30 * 86_400})
}

/// A valid PRC ID number (GB 11643) of someone born in Beijing on 1980-01-01, the `n`th.
fn id_number(n: u32) -> String {
    let body = format!("11010519800101{n:03}");
    let check = citypay_identity::resident_id::check_character(&body).unwrap();
    format!("{body}{check}")
}

/// The bill numbers a resident's list shows.
async fn listed(api: &Api, token: &str) -> Vec<String> {
    let (status, mine, _) = api.call("GET", "/v1/my/bills", Some(token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    mine["bills"].as_array().unwrap().iter().map(|b| b["out_bill_no"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_in_the_first_hour() {
    let city = City::start().await;
    let api = &city.api;
    let operator = api.operator().await;
    let (_, hospital) = api.merchant(&operator, "91350100M000100Y43", "hospital", None).await;
    let (school_record, school) = api.merchant(&operator, "12330100470001235F", "school", None).await;
    let school_id = school_record["merchant_id"].as_str().map_or_else(|| school_record["merchant_id"].to_string(), str::to_owned);
    let alice = api.resident("Alice", "13800138000", ALICE, "alice's secret").await;
    let stranger = api.resident("Mallory", "13900139000", STRANGER, "mallory's secret").await;

    // A stranger who knows alice's ID number asks for her bills: the request is made, and
    // shows nothing until she approves it.
    let (status, h1, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-1", "id_number", ALICE, &[("psychiatry", 30_000)], 0, false))).await;
    assert_eq!(status, StatusCode::CREATED, "{h1}");
    let link = json!({"payer_kind": "id_number", "payer": ALICE, "label": "sister"});
    let (status, asked, _) = api.call("POST", "/v1/my/payer-links", Some(&stranger), Some("link-1"), Some(link)).await;
    assert_eq!((status, asked["status"].as_str()), (StatusCode::CREATED, Some("pending")), "{asked}");
    assert!(listed(api, &stranger).await.is_empty(), "a pending link shows nothing");
    let pay = format!("/v1/my/bills/{}/payments", h1["bill_no"].as_str().unwrap());
    assert_eq!(api.call("POST", &pay, Some(&stranger), Some("pay-1"), Some(json!({}))).await.0, StatusCode::NOT_FOUND);
    let (_, links, _) = api.call("GET", "/v1/my/payer-links", Some(&stranger), None, None).await;
    assert_eq!(links["links"][0]["status"], "pending", "{links}");
    // Alice sees the request and who made it (masked), approves it, then withdraws it.
    let (status, requests, _) = api.call("GET", "/v1/my/payer-link-requests", Some(&alice), None, None).await;
    assert_eq!(status, StatusCode::OK, "{requests}");
    let request = &requests["requests"][0];
    assert_eq!((request["requester_id_number"].as_str(), request["label"].as_str()), (Some("4405**********0013"), Some("sister")), "{requests}");
    let requester = request["requester"].as_str().unwrap();
    let (_, stranger_requests, _) = api.call("GET", "/v1/my/payer-link-requests", Some(&stranger), None, None).await;
    assert_eq!(stranger_requests["requests"], json!([]), "the requester cannot answer their own request");
    let answer = |verb: &str| format!("/v1/my/payer-link-requests/{requester}/{verb}");
    assert_eq!(api.call("POST", &answer("approve"), Some(&stranger), None, None).await.0, StatusCode::NOT_FOUND);
    let (status, approved, _) = api.call("POST", &answer("approve"), Some(&alice), None, None).await;
    assert_eq!((status, approved["status"].as_str()), (StatusCode::OK, Some("approved")), "{approved}");
    assert_eq!(listed(api, &stranger).await, ["H-1"], "approved: she chose to share them");
    let (status, declined, _) = api.call("POST", &answer("decline"), Some(&alice), None, None).await;
    assert_eq!((status, declined["status"].as_str()), (StatusCode::OK, Some("declined")));
    assert!(listed(api, &stranger).await.is_empty(), "withdrawn");
    let again = json!({"payer_kind": "id_number", "payer": ALICE, "label": "please"});
    let (_, asked, _) = api.call("POST", "/v1/my/payer-links", Some(&stranger), Some("link-2"), Some(again)).await;
    assert_eq!(asked["status"], "declined", "asking again does not undo her answer");
    assert!(listed(api, &stranger).await.is_empty());
    // Nor can the stranger flood others with requests: ten unanswered a week.
    for n in 1..=11 {
        let link = json!({"payer_kind": "id_number", "payer": id_number(n), "label": "cousin"});
        let (status, body, _) = api.call("POST", "/v1/my/payer-links", Some(&stranger), Some(&format!("flood-{n}")), Some(link)).await;
        let expected = if n <= 10 { (StatusCode::CREATED, "") } else { (StatusCode::TOO_MANY_REQUESTS, "too_many_link_requests") };
        assert_eq!((status, Api::code(&body)), expected, "{n}: {body}");
    }

    // A pupil's tuition by items: a parent's link shows nothing until the school records the
    // parent as the pupil's guardian; then the parent sees what each item is for. The school
    // confirming alice confirms nobody else.
    let tuition = bill("T-1", "student_number", PUPIL, &[("tuition", 300_000), ("lunch", 60_000), ("uniform", 25_000)], 0, true);
    assert_eq!(api.call("POST", "/v1/bills", Some(&school), None, Some(tuition)).await.0, StatusCode::CREATED);
    for (token, key) in [(&alice, "link-pupil-a"), (&stranger, "link-pupil-m")] {
        let link = json!({"payer_kind": "student_number", "payer": PUPIL, "biller_id": school_id, "label": "son"});
        let (status, linked, _) = api.call("POST", "/v1/my/payer-links", Some(token), Some(key), Some(link)).await;
        assert_eq!((status, linked["status"].as_str()), (StatusCode::CREATED, Some("pending")), "{linked}");
    }
    assert_eq!(listed(api, &alice).await, ["H-1"], "only her own bill");
    let guardian = json!({"payer_kind": "student_number", "payer": PUPIL, "guardian_id_number": ALICE});
    let (status, recorded, _) = api.call("POST", "/v1/payer-guardians", Some(&school), None, Some(guardian.clone())).await;
    assert_eq!((status, recorded["payer"].as_str(), recorded["guardian"].as_str()), (StatusCode::CREATED, Some("****6001"), Some("1101**********002X")), "{recorded}");
    assert_eq!(api.call("POST", "/v1/payer-guardians", Some(&hospital), None, Some(guardian)).await.0, StatusCode::CREATED, "the hospital's numbers are its own");
    let not_for_ids = json!({"payer_kind": "id_number", "payer": STRANGER, "guardian_id_number": ALICE});
    assert_eq!(api.call("POST", "/v1/payer-guardians", Some(&school), None, Some(not_for_ids)).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.call("POST", "/v1/payer-guardians", Some(&alice), None, Some(json!({}))).await.0, StatusCode::FORBIDDEN, "billers only");
    let (_, links, _) = api.call("GET", "/v1/my/payer-links", Some(&alice), None, None).await;
    assert_eq!(links["links"][0]["status"], "approved", "{links}");
    let (_, mine, _) = api.call("GET", "/v1/my/bills", Some(&alice), None, None).await;
    let t1 = mine["bills"].as_array().unwrap().iter().find(|b| b["out_bill_no"] == "T-1").unwrap_or_else(|| panic!("{mine}")).clone();
    let names: Vec<&str> = t1["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!((t1["title"].as_str(), names), (Some("bill T-1"), vec!["tuition", "lunch", "uniform"]), "she sees what she is choosing");
    assert!(listed(api, &stranger).await.is_empty(), "the school did not confirm the stranger");
    let pay = format!("/v1/my/bills/{}/payments", t1["bill_no"].as_str().unwrap());
    let (status, _, _) = api.call("POST", &pay, Some(&stranger), Some("pay-t1"), Some(json!({"items": [1]}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A bill already past its due date, not payable late, could never be paid: refused.
    let mut ancient = bill("H-2", "id_number", ALICE, &[("x-ray", 8_000)], 0, false);
    ancient["due_at"] = json!(1);
    let (status, refused, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(ancient.clone())).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().starts_with("due_at"), "{refused}");
    ancient["late_allowed"] = json!(true);
    assert_eq!(api.call("POST", "/v1/bills", Some(&hospital), None, Some(ancient)).await.0, StatusCode::CREATED, "a late bill the biller lets be paid late");

    // An insured bill while the city's fund holds nothing: the answer names the fund.
    let (_, h3, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-3", "id_number", ALICE, &[("ward", 10_000)], 4_000, false))).await;
    let pay = format!("/v1/my/bills/{}/payments", h3["bill_no"].as_str().unwrap());
    let (status, refused, _) = api.call("POST", &pay, Some(&alice), Some("pay-h3"), Some(json!({}))).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "insurance_fund_short"), "{refused}");

    // Cash for an insured bill. Without the patient's consent the counter takes it all in
    // cash and the fund moves only when the patient claims its part from the app, once.
    let deposit = |fen: i64, reference: &str| json!({"amount": cny(fen), "reference": reference});
    let (status, fund, _) = api.call("POST", "/v1/insurance-funds/330100/deposits", Some(&operator), None, Some(deposit(100_000, "NHSA-1"))).await;
    assert_eq!((status, fund["balance"]["amount"].as_i64()), (StatusCode::OK, Some(100_000)), "{fund}");
    let (_, h4, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-4", "id_number", ALICE, &[("surgery", 10_000)], 4_000, false))).await;
    let counter = |amount: i64| json!({"amount": cny(amount)});
    let (status, refused, _) = api.call("POST", "/v1/bills/H-4/cash-payments", Some(&hospital), Some("cash-h4a"), Some(counter(6_000))).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "amount_mismatch"), "{refused}");
    let (status, cash, _) = api.call("POST", "/v1/bills/H-4/cash-payments", Some(&hospital), Some("cash-h4b"), Some(counter(10_000))).await;
    assert_eq!((status, cash["insured"]["amount"].as_i64(), cash["method"].as_str()), (StatusCode::CREATED, Some(0), Some("cash")), "{cash}");
    let claim = format!("/v1/my/bills/{}/fund-claims", h4["bill_no"].as_str().unwrap());
    assert_eq!(api.call("POST", &claim, Some(&stranger), None, None).await.0, StatusCode::NOT_FOUND, "only the patient claims");
    let (status, claimed, _) = api.call("POST", &claim, Some(&alice), None, None).await;
    assert_eq!((status, claimed["amount"]["amount"].as_i64()), (StatusCode::CREATED, Some(4_000)), "{claimed}");
    let (status, again, _) = api.call("POST", &claim, Some(&alice), None, None).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &claimed), "a second claim answers the first");
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&alice), None, None).await;
    assert_eq!(wallet["balance"]["amount"].as_i64(), Some(4_000), "{wallet}");
    // With her consent from her own account, the counter takes her part and the fund pays the
    // hospital the rest; there is then nothing to claim.
    let (_, h5, _) = api.call("POST", "/v1/bills", Some(&hospital), None, Some(bill("H-5", "id_number", ALICE, &[("surgery", 10_000)], 4_000, false))).await;
    let consent = format!("/v1/my/bills/{}/fund-consent", h5["bill_no"].as_str().unwrap());
    assert_eq!(api.call("POST", &consent, Some(&stranger), None, None).await.0, StatusCode::NOT_FOUND, "only the patient consents");
    let (status, consented, _) = api.call("POST", &consent, Some(&alice), None, None).await;
    assert_eq!((status, consented["cash_due"]["amount"].as_i64()), (StatusCode::OK, Some(6_000)), "{consented}");
    let (status, cash, _) = api.call("POST", "/v1/bills/H-5/cash-payments", Some(&hospital), Some("cash-h5"), Some(counter(6_000))).await;
    assert_eq!((status, cash["insured"]["amount"].as_i64(), cash["amount"]["amount"].as_i64()), (StatusCode::CREATED, Some(4_000), Some(10_000)), "{cash}");
    let claim = format!("/v1/my/bills/{}/fund-claims", h5["bill_no"].as_str().unwrap());
    let (status, nothing, _) = api.call("POST", &claim, Some(&alice), None, None).await;
    assert_eq!((status, Api::code(&nothing)), (StatusCode::CONFLICT, "nothing_to_claim"), "{nothing}");
    let (_, fund, _) = api.call("POST", "/v1/insurance-funds/330100/deposits", Some(&operator), None, Some(deposit(1, "NHSA-2"))).await;
    assert_eq!(fund["balance"]["amount"].as_i64(), Some(100_000 - 4_000 - 4_000 + 1), "the claim and the consented part, nothing else");

    // The hospital's files of that day: both give times in the city's local time, and what
    // the reconciliation file says settles is what the settlement file's lines moved.
    let day = citypay_ledger::Timestamp::from_unix_seconds(cash["paid_at"].as_u64().unwrap()).local_date().to_string();
    let download = |path: String| {
        let request = api.client.get(format!("{}{path}", api.base)).header("authorization", &hospital).send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    let reconciliation = download(format!("/v1/reconciliation-files/{day}")).await;
    let settlement = download(format!("/v1/settlement-files/{day}")).await;
    let local_time = |t: &str| t.len() == 19 && t.starts_with(&day) && t.as_bytes()[10] == b' ' && t[11..].split(':').all(|p| p.len() == 2 && p.parse::<u8>().is_ok());
    let column = |line: &str, i: usize| line.split(',').nth(i).unwrap().to_owned();
    let last = |line: &str| line.rsplit(',').next().unwrap().parse::<i64>().unwrap();
    assert_eq!(reconciliation.lines().count(), 3, "two cash payments:\n{reconciliation}");
    assert!(reconciliation.lines().skip(1).all(|l| local_time(&column(l, 2))), "{reconciliation}");
    let moves: Vec<&str> = settlement.lines().skip(1).filter(|l| !column(l, 2).is_empty()).collect();
    assert!(!moves.is_empty() && moves.iter().all(|l| local_time(&column(l, 2))), "{settlement}");
    let balance = |name: &str| settlement.lines().find(|l| l.contains(name)).map(last).unwrap();
    let moved: i64 = moves.iter().map(|l| last(l)).sum();
    assert_eq!(balance("opening_balance") + moved, balance("closing_balance"), "{settlement}");
    assert_eq!(reconciliation.lines().skip(1).map(last).sum::<i64>(), moved, "the fund's part settles, the cash stays at the counter");

    city.finish(&[ALICE, STRANGER, PUPIL]);
}
