//! A country of two shards, each a PostgreSQL database with its own server and writer, and a
//! catalog: cities placed on shards and onboarded there, one ID number registered once in the
//! country, money sent from a resident of Hangzhou (shard 1) to one of Fuzhou (shard 2) through
//! the real servers. Then the faults of `scale-out.md` §5 scenario 5 that processes can show:
//! the payee's writer killed (the answer unknown, never acknowledged; the resolver returns the
//! money), the payer's server killed right after the reservation and right after the decision
//! (the resolver finishes each the way the payee's shard decided), a partition between the
//! payer's server and the payee's writer (nftables), duplicate asks (retries
//! with the same key). Either shard's server answers any caller. A resident pays a shop of the other shard by its order's QR code, with the
//! shop's shard down once, and the shop refunds her across shards (once with her shard down: the
//! resolver returns it); her payment code pays at that shop's till. After all, every transfer ended one way on both shards, each shard's
//! books balance, the two clearing accounts mirror each other, nothing is left undecided, and
//! `citypay audit` of each shard and `citypay country audit` are clean (and the latter finds a
//! transfer left undecided). Skipped without `CITYPAY_TEST_PG`, except under CI.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::country::{DAUGHTER_CARD as CARD, DAUGHTER_ID, MOTHER_ID, Shard, balance, cny, listed, settled, two_shards, wait_exit};
use support::{Api, BIN, GATEWAY_TEST_KEY, free_ports};


/// Packets to a local port dropped (nftables, as root): a partition between the servers that
/// reach that port and what listens there. Healed when dropped. `None` where nftables cannot be
/// used (not root), except under CI, where it must.
struct Cut(String);

impl Cut {
    fn port(port: u16) -> Option<Cut> {
        let table = format!("citypay_country_cut_{}", std::process::id());
        let rules = format!("table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n  tcp dport {port} drop;\n }}\n}}\n");
        let applied = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok().and_then(|mut nft| {
            use std::io::Write;
            nft.stdin.take()?.write_all(rules.as_bytes()).ok()?;
            nft.wait().ok().filter(std::process::ExitStatus::success)
        });
        if applied.is_none() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "nftables is needed for the partition under CI=true (run as root)");
            eprintln!("skipping the partition: nftables cannot be used here (run as root)");
            return None;
        }
        Some(Cut(table))
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_crosses_two_shards_through_the_servers_and_survives_their_deaths() {
    let dir = tempfile::tempdir().unwrap();
    let Some((shards, catalog)) = two_shards(dir.path(), "citypay_country") else { return };
    let [hangzhou, fuzhou] = &shards;
    let mut servers = [Some(hangzhou.spawn(&catalog, None)), Some(fuzhou.spawn(&catalog, None))];
    hangzhou.wait_writer().await;
    fuzhou.wait_writer().await;
    let (a, b) = (hangzhou.api(), fuzhou.api());

    // Each city is onboarded on its shard, with the group of buckets the catalog gave it; a
    // city of another shard is refused.
    let (operator_a, operator_b) = (a.operator().await, b.operator().await);
    let (status, city, _) = a.call("POST", "/v1/cities", Some(&operator_a), Some("city-hz"), Some(json!({"code": 330100, "name": "Hangzhou"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{city}");
    let (status, city, _) = b.call("POST", "/v1/cities", Some(&operator_b), Some("city-fz"), Some(json!({"code": 350100, "name": "Fuzhou"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{city}");
    let (status, refused, _) = a.call("POST", "/v1/cities", Some(&operator_a), Some("city-fz-a"), Some(json!({"code": 350100, "name": "Fuzhou"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");

    // One ID number, one registration in the country: the same person in the other city is
    // refused, and of two registrations of one new number at once, on the two shards, one wins.
    let register = |city: u32, name: &str, mobile: &str, id: &str| {
        json!({"city": city, "name": name, "mobile": mobile, "id_number": id, "password": "correct horse", "account_class": "I"})
    };
    let (status, daughter_me, _) = a.call("POST", "/v1/residents", None, Some("reg-d"), Some(register(330100, "李娜", "13800138000", DAUGHTER_ID))).await;
    assert_eq!(status, StatusCode::CREATED, "{daughter_me}");
    let (status, mother_me, _) = b.call("POST", "/v1/residents", None, Some("reg-m"), Some(register(350100, "王秀英", "13700137000", MOTHER_ID))).await;
    assert_eq!(status, StatusCode::CREATED, "{mother_me}");
    let (status, taken, _) = b.call("POST", "/v1/residents", None, Some("reg-d2"), Some(register(350100, "李娜", "13900139000", DAUGHTER_ID))).await;
    assert_eq!((status, Api::code(&taken)), (StatusCode::CONFLICT, "identity_already_registered"), "{taken}");
    let twice = "110105194912310038";
    let (first, second) = tokio::join!(
        a.call("POST", "/v1/residents", None, Some("reg-t1"), Some(register(330100, "张伟", "13600136000", twice))),
        b.call("POST", "/v1/residents", None, Some("reg-t2"), Some(register(350100, "张伟", "13500135000", twice))),
    );
    let created = [first.0, second.0].iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(created, 1, "one of two registrations at once: {first:?} {second:?}");

    let daughter = a.sign_in("13800138000", "correct horse").await;
    let mother = b.sign_in("13700137000", "correct horse").await;
    a.issue_card(&operator_a, CARD, "李娜", DAUGHTER_ID).await;
    a.top_up(&daughter, CARD, 50_000).await;

    // Found across the country, masked; sent; both see it.
    let (status, found, _) = a.call("POST", "/v1/transfer-recipients", Some(&daughter), None, Some(json!({"mobile": "13700137000"}))).await;
    assert_eq!((status, found["masked_name"].as_str(), found["city"].as_u64()), (StatusCode::OK, Some("**英"), Some(350100)), "{found}");
    let gift = json!({"mobile": "13700137000", "amount": cny(10_000), "note": "妈妈生日快乐"});
    let (status, sent, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some("gift-1"), Some(gift.clone())).await;
    assert_eq!((status, sent["status"].as_str(), sent["counterparty"].as_str()), (StatusCode::CREATED, Some("completed"), Some("**英")), "{sent}");
    let (status, again, replayed) = a.call("POST", "/v1/transfers", Some(&daughter), Some("gift-1"), Some(gift)).await;
    assert_eq!((status, &again, replayed), (StatusCode::CREATED, &sent, true), "a retry answers the first transfer");
    assert_eq!(balance(&a, &daughter).await, (40_000, 40_000));
    assert_eq!(balance(&b, &mother).await.0, 10_000);
    let received = listed(&b, &mother, sent["transfer_id"].as_str().unwrap()).await;
    assert_eq!((received["direction"].as_str(), received["counterparty"].as_str(), received["note"].as_str()), (Some("received"), Some("*娜"), Some("妈妈生日快乐")), "{received}");
    // And back the other way.
    let (status, back, _) = b.call("POST", "/v1/transfers", Some(&mother), Some("back-1"), Some(json!({"mobile": "13800138000", "amount": cny(1_000)}))).await;
    assert_eq!((status, back["status"].as_str()), (StatusCode::CREATED, Some("completed")), "{back}");
    assert_eq!(balance(&a, &daughter).await.0, 41_000);
    let (_, statement, _) = b.call("GET", "/v1/wallet/statement?kind=transfer", Some(&mother), None, None).await;
    let lines = statement["lines"].as_array().unwrap();
    let amounts: Vec<i64> = lines.iter().map(|l| l["amount"]["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [-1_000, 10_000], "{statement}");
    assert!(lines.iter().all(|l| l["counterparty"] == "another city"), "{statement}");

    // The payee's writer is dead: the answer is not known, so it is not given; the money is
    // held; the resolver returns it once the payee's shard is back (it decides "timeout").
    drop(servers[1].take());
    let (status, unknown, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some("gift-2"), Some(json!({"mobile": "13700137000", "amount": cny(2_000)}))).await;
    assert_eq!((status, Api::code(&unknown)), (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"), "{unknown}");
    assert_eq!(balance(&a, &daughter).await, (41_000, 39_000), "held while undecided");
    servers[1] = Some(fuzhou.spawn(&catalog, None));
    fuzhou.wait_writer().await;
    let (_, mine, _) = a.call("GET", "/v1/transfers?limit=1", Some(&daughter), None, None).await;
    let pending = mine["items"][0]["transfer_id"].as_str().unwrap().to_owned();
    assert_eq!(settled(&a, &daughter, &pending).await, "returned");
    assert_eq!(balance(&a, &daughter).await, (41_000, 41_000), "given back");
    let (status, returned, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some("gift-2"), Some(json!({"mobile": "13700137000", "amount": cny(2_000)}))).await;
    assert_eq!((status, Api::code(&returned)), (StatusCode::CONFLICT, "transfer_returned"), "{returned}");

    // The payer's server dies right after the reservation, then right after hearing the
    // decision: no answer either time; the resolver finishes each as the payee's shard decided
    // (nothing decided yet: returned; posted: completed, credited once).
    for (step, key, amount, ends) in [("reserved", "gift-3", 3_000, "returned"), ("decided", "gift-4", 4_000, "completed")] {
        drop(servers[0].take());
        let mut crashing = hangzhou.spawn(&catalog, Some(step));
        hangzhou.wait_writer().await;
        let body = json!({"mobile": "13700137000", "amount": cny(amount)});
        let cut = a.client.post(format!("{}/v1/transfers", a.base)).header("authorization", &daughter).header("idempotency-key", key).json(&body).send().await;
        assert!(cut.is_err(), "{step}: the server stopped before answering: {cut:?}");
        wait_exit(&mut crashing);
        servers[0] = Some(hangzhou.spawn(&catalog, None));
        hangzhou.wait_writer().await;
        let (_, mine, _) = a.call("GET", "/v1/transfers?limit=1", Some(&daughter), None, None).await;
        let id = mine["items"][0]["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(mine["items"][0]["amount"]["amount"].as_i64(), Some(amount), "{mine}");
        assert_eq!(settled(&a, &daughter, &id).await, ends, "{step}");
        // The retry of the same key answers the same end.
        let (status, retried, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some(key), Some(body)).await;
        let expected = if ends == "completed" { StatusCode::CREATED } else { StatusCode::CONFLICT };
        assert_eq!(status, expected, "{step}: {retried}");
    }
    assert_eq!(balance(&a, &daughter).await, (37_000, 37_000));
    assert_eq!(balance(&b, &mother).await, (13_000, 13_000), "credited once");

    // A partition: the packets from Hangzhou's server to Fuzhou's writer are dropped (both run,
    // and both databases answer). The send is not answered in time (503), and the money is
    // held. Healed, the asks held in the network arrive late or the resolver's does first:
    // the transfer ends one way or the other, on both shards alike.
    let mut crossed = 0;
    if let Some(cut) = Cut::port(fuzhou.cluster_port) {
        let body = json!({"mobile": "13700137000", "amount": cny(600)});
        let (status, cut_off, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some("gift-6"), Some(body)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{cut_off}");
        assert!(["timeout", "outcome_unknown"].contains(&Api::code(&cut_off)), "{cut_off}");
        assert_eq!(balance(&a, &daughter).await, (37_000, 36_400), "held while cut off");
        drop(cut);
        let (_, mine, _) = a.call("GET", "/v1/transfers?limit=1", Some(&daughter), None, None).await;
        let id = mine["items"][0]["transfer_id"].as_str().unwrap().to_owned();
        let ended = settled(&a, &daughter, &id).await;
        let received = listed(&b, &mother, &id).await;
        crossed = if ended == "completed" { 600 } else { 0 };
        assert_eq!(received.is_null(), crossed == 0, "{ended} on the sender's side, {received} on the recipient's");
        eprintln!("the partitioned transfer ended {ended}");
    }
    assert_eq!(balance(&a, &daughter).await, (37_000 - crossed, 37_000 - crossed));
    assert_eq!(balance(&b, &mother).await, (13_000 + crossed, 13_000 + crossed));

    // The daughter, in Fuzhou, buys fish balls from a Fuzhou shop (shard 2) by scanning its
    // order's code: previewed and paid through her own shard's server, the trade paid on the
    // merchant's shard with the money. With the shop's shard down the answer is not known and
    // not given; the resolver gives the money back, the same key's retry says so, and a new
    // key pays.
    let shop = json!({"city": 350100, "name": "鱼丸店", "uscc": support::uscc("M0000001"), "mcc": "5812", "category": "restaurant",
                      "settlement_account": "6222020200112233446", "notify_url": null});
    let (status, shop, _) = b.call("POST", "/v1/merchants", Some(&operator_b), Some("shop-1"), Some(shop)).await;
    assert_eq!(status, StatusCode::CREATED, "{shop}");
    let shop_key = format!("ApiKey {}:{}", shop["api_key_id"].as_str().unwrap(), shop["api_key_secret"].as_str().unwrap());
    // One USCC, one merchant in the country: the same company onboarded in Hangzhou is refused.
    let again = json!({"city": 330100, "name": "鱼丸店", "uscc": support::uscc("M0000001"), "mcc": "5812", "category": "restaurant",
                       "settlement_account": "6222020200112233446", "notify_url": null});
    let (status, refused, _) = a.call("POST", "/v1/merchants", Some(&operator_a), None, Some(again)).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::CONFLICT, "merchant_already_onboarded"), "{refused}");
    let order = json!({"out_trade_no": "F1", "amount": cny(2_372), "subject": "鱼丸"});
    let (status, created, _) = b.call("POST", "/v1/trades", Some(&shop_key), None, Some(order)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let scanned = json!({"payload": created["qr_payload"]});
    let (status, shown, _) = a.call("POST", "/v1/payments/qr/preview", Some(&daughter), None, Some(scanned.clone())).await;
    assert_eq!((status, shown["merchant_name"].as_str(), shown["amount"]["amount"].as_i64()), (StatusCode::OK, Some("鱼丸店"), Some(2_372)), "{shown}");
    drop(servers[1].take());
    let (status, unknown, _) = a.call("POST", "/v1/payments/qr", Some(&daughter), Some("fish-1"), Some(scanned.clone())).await;
    assert_eq!((status, Api::code(&unknown)), (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"), "{unknown}");
    assert_eq!(balance(&a, &daughter).await, (37_000 - crossed, 37_000 - crossed - 2_372), "held while undecided");
    servers[1] = Some(fuzhou.spawn(&catalog, None));
    fuzhou.wait_writer().await;
    let started = Instant::now();
    while balance(&a, &daughter).await.1 != 37_000 - crossed {
        assert!(started.elapsed() < Duration::from_secs(30), "the resolver did not give the money back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, returned, _) = a.call("POST", "/v1/payments/qr", Some(&daughter), Some("fish-1"), Some(scanned.clone())).await;
    assert_eq!((status, Api::code(&returned)), (StatusCode::CONFLICT, "payment_returned"), "{returned}");
    let (status, paid, _) = a.call("POST", "/v1/payments/qr", Some(&daughter), Some("fish-2"), Some(scanned.clone())).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");
    let (_, seen, _) = b.call("GET", "/v1/trades/F1", Some(&shop_key), None, None).await;
    assert_eq!(seen["status"], "TRADE_SUCCESS", "the shop sees it paid: {seen}");
    let (status, again, _) = a.call("POST", "/v1/payments/qr", Some(&daughter), Some("fish-3"), Some(scanned)).await;
    assert_eq!(status, StatusCode::OK, "paid already by her: the same trade, not a second payment: {again}");
    assert_eq!(balance(&a, &daughter).await, (37_000 - crossed - 2_372, 37_000 - crossed - 2_372), "paid once");
    // The shop refunds part of it: the money crosses back to her wallet on her shard, with the
    // fee's part back to the shop; asked again, the same refund is answered, nothing moved.
    let (held_before, _) = balance(&a, &daughter).await;
    let refund = json!({"out_request_no": "R1", "amount": cny(500)});
    let (status, refunded, _) = b.call("POST", "/v1/trades/F1/refunds", Some(&shop_key), None, Some(refund.clone())).await;
    assert!(status.is_success() && refunded["refund"]["status"] == "REFUND_SUCCESS" && refunded["fund_change"] == true, "{status} {refunded}");
    assert_eq!(balance(&a, &daughter).await.0, held_before + 500);
    let (status, again, _) = b.call("POST", "/v1/trades/F1/refunds", Some(&shop_key), None, Some(refund)).await;
    assert!(status.is_success() && again["fund_change"] == false, "{again}");
    // With her shard's server down the refund's end is not known (503), and not given. Her
    // shard back, nobody asking again, the shop's resolver asks it past the reservation's time:
    // undecided, it is decided returned; the refund ends REFUND_FAILED, the same request says
    // so, and the amount is refundable again under a new number.
    servers[0] = None;
    let refund = json!({"out_request_no": "R2", "amount": cny(300)});
    let (status, unknown, _) = b.call("POST", "/v1/trades/F1/refunds", Some(&shop_key), None, Some(refund.clone())).await;
    assert_eq!((status, Api::code(&unknown)), (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"), "{unknown}");
    let (_, processing, _) = b.call("GET", "/v1/trades/F1/refunds/R2", Some(&shop_key), None, None).await;
    assert_eq!(processing["refund"]["status"], "REFUND_PROCESSING", "{processing}");
    servers[0] = Some(hangzhou.spawn(&catalog, None));
    hangzhou.wait_writer().await;
    let started = Instant::now();
    loop {
        let (_, seen, _) = b.call("GET", "/v1/trades/F1/refunds/R2", Some(&shop_key), None, None).await;
        if seen["refund"]["status"] != "REFUND_PROCESSING" {
            assert_eq!(seen["refund"]["status"], "REFUND_FAILED", "{seen}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the resolver did not end the refund: {seen}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, ended, _) = b.call("POST", "/v1/trades/F1/refunds", Some(&shop_key), None, Some(refund)).await;
    assert_eq!((status, Api::code(&ended)), (StatusCode::CONFLICT, "refund_returned"), "{ended}");
    let refund = json!({"out_request_no": "R3", "amount": cny(300)});
    let (status, refunded, _) = b.call("POST", "/v1/trades/F1/refunds", Some(&shop_key), None, Some(refund)).await;
    assert!(status.is_success() && refunded["trade"]["refunded"]["amount"] == 800, "{status} {refunded}");
    let refunded_late = 300;
    assert_eq!(balance(&a, &daughter).await.0, held_before + 500 + refunded_late);
    // The shop's counter code: she types 8.00; her retry pays nothing more.
    let (_, counter, _) = b.call("GET", "/v1/merchant/qr", Some(&shop_key), None, None).await;
    let typed = json!({"payload": counter["qr_payload"], "amount": cny(800)});
    let (status, paid, _) = a.call("POST", "/v1/payments/qr", Some(&daughter), Some("tea-1"), Some(typed.clone())).await;
    assert_eq!((status, paid["status"].as_str(), paid["amount"]["amount"].as_i64()), (StatusCode::OK, Some("TRADE_SUCCESS"), Some(800)), "{paid}");
    let (status, again, _) = a.call("POST", "/v1/payments/qr", Some(&daughter), Some("tea-1"), Some(typed)).await;
    assert_eq!((status, &again["trade_no"]), (StatusCode::OK, &paid["trade_no"]), "{again}");
    // Her payment code at the Fuzhou shop's till: its device is on her shard (the slot names
    // her bucket); the code is checked and spent there with the hold, and the order made paid
    // here with the credit. The till's retry answers the same trade; the code works once.
    let (status, device, _) = a.call("POST", "/v1/payment-devices", Some(&daughter), Some("phone"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let code = support::payment_code(&device);
    let order = json!({"out_trade_no": "F2", "amount": cny(1_200), "subject": "茶", "auth_code": code});
    let (status, by_code, _) = b.call("POST", "/v1/trades/pay", Some(&shop_key), None, Some(order.clone())).await;
    assert_eq!((status, by_code["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{by_code}");
    let (status, again, _) = b.call("POST", "/v1/trades/pay", Some(&shop_key), None, Some(order)).await;
    assert_eq!((status, &again["trade_no"]), (StatusCode::OK, &by_code["trade_no"]), "{again}");
    let reused = json!({"out_trade_no": "F3", "amount": cny(100), "subject": "茶", "auth_code": code});
    let (status, used, _) = b.call("POST", "/v1/trades/pay", Some(&shop_key), None, Some(reused)).await;
    assert_eq!((status.is_client_error(), Api::code(&used)), (true, "payment_code_used"), "{used}");
    assert_eq!(balance(&a, &daughter).await.0, 37_000 - crossed - 2_372 - 800 + 500 + refunded_late - 1_200);
    // A Fuzhou hospital bills her (by her ID number): she sees the bill among hers through her
    // own shard's server, and pays it from her wallet there; the money crosses to the
    // hospital with the bill's change. Her retry, under the same key or a new one, answers
    // the same payment; its receipt reads from where the hospital is.
    let hospital = json!({"city": 350100, "name": "福州市第一医院", "uscc": support::uscc("M0000003"), "mcc": "8062", "category": "hospital",
                          "settlement_account": "6222020200112233446", "notify_url": null});
    let (status, hospital, _) = b.call("POST", "/v1/merchants", Some(&operator_b), Some("hospital-1"), Some(hospital)).await;
    assert_eq!(status, StatusCode::CREATED, "{hospital}");
    let hospital_key = format!("ApiKey {}:{}", hospital["api_key_id"].as_str().unwrap(), hospital["api_key_secret"].as_str().unwrap());
    let due = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 30 * 86_400;
    let bill = json!({"out_bill_no": "H-1", "payer_kind": "id_number", "payer": DAUGHTER_ID, "title": "门诊",
                      "items": [{"name": "门诊", "amount": cny(1_500)}], "pick_items": false, "insured": cny(0), "due_at": due});
    let (status, bill, _) = b.call("POST", "/v1/bills", Some(&hospital_key), None, Some(bill)).await;
    assert_eq!(status, StatusCode::CREATED, "{bill}");
    let bill_no = bill["bill_no"].as_str().unwrap();
    let (status, mine, _) = a.call("GET", "/v1/my/bills", Some(&daughter), None, None).await;
    assert_eq!((status, mine["bills"][0]["bill_no"].as_str()), (StatusCode::OK, Some(bill_no)), "{mine}");
    let pay = format!("/v1/my/bills/{bill_no}/payments");
    let (status, paid, _) = a.call("POST", &pay, Some(&daughter), Some("bill-1"), Some(json!({}))).await;
    assert_eq!((status, paid["bill"]["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{paid}");
    for key in ["bill-1", "bill-2"] {
        let (status, again, _) = a.call("POST", &pay, Some(&daughter), Some(key), Some(json!({}))).await;
        assert_eq!((status, &again["receipt_no"]), (StatusCode::CREATED, &paid["receipt_no"]), "{again}");
    }
    let (status, receipt, _) = a.call("GET", &format!("/v1/receipts/{}", paid["receipt_no"].as_str().unwrap()), Some(&daughter), None, None).await;
    assert_eq!((status, &receipt["text"]), (StatusCode::OK, &paid["receipt"]["text"]), "{receipt}");
    let (_, seen, _) = b.call("GET", "/v1/bills/H-1", Some(&hospital_key), None, None).await;
    assert_eq!(seen["status"], "paid", "{seen}");
    assert_eq!(balance(&a, &daughter).await.0, 37_000 - crossed - 2_372 - 800 + 500 + refunded_late - 1_200 - 1_500, "paid once");
    // A bill more than her wallet holds: refused on her shard, nothing held or paid.
    let ward = json!({"out_bill_no": "H-2", "payer_kind": "id_number", "payer": DAUGHTER_ID, "title": "住院",
                      "items": [{"name": "住院", "amount": cny(50_000)}], "pick_items": false, "insured": cny(0), "due_at": due});
    let (_, ward, _) = b.call("POST", "/v1/bills", Some(&hospital_key), None, Some(ward)).await;
    let (status, short, _) = a.call("POST", &format!("/v1/my/bills/{}/payments", ward["bill_no"].as_str().unwrap()), Some(&daughter), Some("ward-1"), Some(json!({}))).await;
    assert_eq!((status, Api::code(&short)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"), "{short}");
    let (_, seen, _) = b.call("GET", "/v1/bills/H-2", Some(&hospital_key), None, None).await;
    assert_eq!(seen["status"], "open", "{seen}");
    // A bill the medical-insurance fund pays part of, with Fuzhou's fund never opened: the
    // hospital's shard refuses it, her hold comes back, the bill stays open.
    let insured = json!({"out_bill_no": "H-3", "payer_kind": "id_number", "payer": DAUGHTER_ID, "title": "检查",
                         "items": [{"name": "检查", "amount": cny(1_000)}], "pick_items": false, "insured": cny(500), "due_at": due});
    let (_, insured, _) = b.call("POST", "/v1/bills", Some(&hospital_key), None, Some(insured)).await;
    let (status, short, _) = a.call("POST", &format!("/v1/my/bills/{}/payments", insured["bill_no"].as_str().unwrap()), Some(&daughter), Some("scan-1"), Some(json!({}))).await;
    assert_eq!((status, Api::code(&short)), (StatusCode::UNPROCESSABLE_ENTITY, "insurance_fund_short"), "{short}");
    let (_, seen, _) = b.call("GET", "/v1/bills/H-3", Some(&hospital_key), None, None).await;
    assert_eq!(seen["status"], "open", "{seen}");
    assert_eq!(balance(&a, &daughter).await, (37_000 - crossed - 2_372 - 800 + 500 + refunded_late - 1_200 - 1_500, 37_000 - crossed - 2_372 - 800 + 500 + refunded_late - 1_200 - 1_500), "nothing held");

    // One national view: an operator of either shard sees both cities, each with its own
    // shard's payments (the fish balls and the hospital's bill in Fuzhou, where the shop and
    // the hospital are).
    let (status, stats, _) = a.call("GET", "/v1/city-stats", Some(&operator_a), None, None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let cities = stats["days"][0]["cities"].as_array().unwrap();
    let codes: Vec<u64> = cities.iter().map(|c| c["city_code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [330100, 350100], "{stats}");
    let paid_in = |city: &Value| -> i64 {
        city["payments"].as_object().unwrap().values().flat_map(|methods| methods.as_object().unwrap().values()).map(|c| c["amount"].as_i64().unwrap()).sum()
    };
    assert_eq!((paid_in(&cities[0]), paid_in(&cities[1])), (0, 2_372 + 800 + 1_200 + 1_500), "{stats}");
    assert_eq!(cities[1]["bills_paid"]["amount"], 1_500, "the hospital's bill, in Fuzhou: {stats}");

    // Any server answers any caller, with the services of the caller's shard: a Fuzhou
    // resident registers and signs in through Hangzhou's server; the mother, the shop and
    // Fuzhou's operator are answered there too.
    let (status, niece, _) = a.call("POST", "/v1/residents", None, Some("reg-n"), Some(register(350100, "陈静", "13300133000", "350102199001010024"))).await;
    assert_eq!((status, niece["city"].as_u64()), (StatusCode::CREATED, Some(350100)), "{niece}");
    let niece = a.sign_in("13300133000", "correct horse").await;
    for api in [&a, &b] {
        let (status, wallet, _) = api.call("GET", "/v1/wallet", Some(&niece), None, None).await;
        assert_eq!((status, wallet["balance"]["amount"].as_i64()), (StatusCode::OK, Some(0)), "{wallet}");
    }
    let (status, hers, _) = a.call("GET", "/v1/transfers", Some(&mother), None, None).await;
    assert_eq!((status, hers["items"][0]["direction"].as_str()), (StatusCode::OK, Some("received")), "{hers}");
    let (status, seen, _) = a.call("GET", "/v1/trades/F1", Some(&shop_key), None, None).await;
    assert_eq!((status, seen["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{seen}");
    let (status, stats, _) = a.call("GET", "/v1/city-stats", Some(&operator_b), None, None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    // The shop's Alipay SDK code, pointed at Hangzhou's server, reaches its app in Fuzhou.
    let public = include_str!("../../gateway/tests/test-key.pub.pem");
    let (status, app, _) = b.call("POST", "/v1/gateway/apps", Some(&shop_key), None, Some(json!({"public_key": public}))).await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app_key = citypay_gateway::PlatformKey::from_pkcs8(1, &support::base64_decode(GATEWAY_TEST_KEY)).unwrap();
    let query = [("method", "alipay.trade.query"), ("biz_content", r#"{"out_trade_no":"F1"}"#)];
    let queried = support::signed_call(&a.base, app["app_id"].as_str().unwrap(), &app_key, &query).await;
    assert_eq!((queried["code"].as_str(), queried["trade_status"].as_str()), (Some("10000"), Some("TRADE_SUCCESS")), "{queried}");

    // Every transfer ended one way on both shards; each shard's books balance; the clearing
    // accounts mirror each other; nothing is left undecided.
    drop(servers);
    let (total_one, pending_one, clearing_one) = hangzhou.books(2);
    let (total_two, pending_two, clearing_two) = fuzhou.books(1);
    assert_eq!((total_one, total_two, pending_one, pending_two), (0, 0, 0, 0), "each shard's books balance, nothing pending");
    assert_eq!(clearing_one, -clearing_two, "the clearing accounts mirror each other");
    assert_eq!(clearing_one, 14_000 + crossed + 2_372 + 800 - 1_000 - 500 - refunded_late + 1_200 + 1_500, "what crossed from shard 1 to shard 2, net");
    for shard in &shards {
        let undecided = shard.query("SELECT COUNT(*) FROM crossings_out WHERE status = 'prepared'");
        assert_eq!(undecided[0][0], 0);
    }
    for shard in &shards {
        shard.target.assert_audit_clean();
    }
    let audit = Command::new(BIN).args(["country", "audit", "--catalog", &catalog]).output().unwrap();
    let said = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(audit.status.success() && said.contains("the country's books are clean"), "{said}{}", String::from_utf8_lossy(&audit.stderr));
    // Two cities placed: the map's third version; each shard holds its city's four buckets
    // (the first shard also every bucket no city holds).
    let shown = Command::new(BIN).args(["country", "show", "--catalog", &catalog]).output().unwrap();
    let said = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(said.contains("map version 3") && said.contains("shard 1: 1020 buckets") && said.contains("shard 2: 4 buckets"), "{said}");
    // A transfer left undecided (its row set back, long ago) is what the country's audit finds.
    hangzhou.query("UPDATE crossings_out SET status = 'prepared', reserved_at = 0 WHERE decision LIKE 'rejected%' RETURNING 0::BIGINT");
    let audit = Command::new(BIN).args(["country", "audit", "--catalog", &catalog]).output().unwrap();
    let said = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(!audit.status.success() && said.contains("undecided after"), "{said}");
    let log = std::fs::read_to_string(&hangzhou.log).unwrap();
    assert!(!log.contains(DAUGHTER_ID) && !log.contains(MOTHER_ID), "no ID number in the log");
}

/// An ID number of the test's Fuzhou residents (GB 11643's check character).
fn fuzhou_id(i: u32) -> String {
    let body = format!("35010219800101{i:03}");
    format!("{body}{}", citypay_identity::resident_id::check_character(&body).unwrap())
}

/// A card number with its Luhn digit.
fn card(i: u32) -> String {
    let payload = format!("622202000000{i:06}");
    format!("{payload}{}", citypay_identity::card::luhn_check_digit(&payload).unwrap())
}

/// What one stream of the load saw: each request's answer and how long its retries took.
#[derive(Default)]
struct Seen {
    acknowledged: i64,
    returned: i64,
    slowest: Duration,
}

/// Sends one fen after another until `stop`, each retried under its key while the answer is a
/// 503 (the city moving, a writer away, the outcome not known yet), as a client does.
async fn stream(api: Api, token: String, path: &'static str, body: Value, name: &'static str, flags: Flags) -> Seen {
    let Flags { stop, measure } = flags;
    let mut seen = Seen::default();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let key = format!("{name}-{n}");
        let started = Instant::now();
        let measured = measure.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let (status, answer, _) = api.call("POST", path, Some(&token), Some(&key), Some(body.clone())).await;
            match status {
                StatusCode::CREATED | StatusCode::OK => seen.acknowledged += 1,
                StatusCode::CONFLICT => seen.returned += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(started.elapsed() < Duration::from_secs(60), "{name}: no answer for a minute: {answer}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                other => panic!("{name}: {other} {answer}"),
            }
            break;
        }
        if measured {
            seen.slowest = seen.slowest.max(started.elapsed());
        }
    }
    seen
}

/// When the load stops, and whether its requests' time counts (not while writers are killed).
#[derive(Clone)]
struct Flags {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    measure: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Runs `sql` on the database at `url` (on a thread of its own).
fn execute(url: &str, sql: String) {
    let url = url.to_owned();
    std::thread::spawn(move || postgres::Client::connect(&url, postgres::NoTls).unwrap().batch_execute(&sql).unwrap()).join().unwrap();
}

/// Runs `citypay country move`; its JSON report.
fn move_city(catalog: &str, keys: &std::path::Path, to: u16, stop_after: Option<&str>) -> Option<Value> {
    let mut command = Command::new(BIN);
    command.args(["cluster", "move", "--catalog", catalog, "--city", "350100", "--to", &to.to_string(), "--json", "--keys"]).arg(keys);
    command.env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim());
    if let Some(step) = stop_after {
        command.env("CITYPAY_TEST_MOVE_STOP_AFTER", step);
    }
    let output = command.output().unwrap();
    if stop_after.is_some() {
        assert!(!output.status.success(), "the move stopped after {stop_after:?}: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

/// A city moves between shards under load, three times, then four more times with the move's
/// coordinator killed after each of its steps (`CITYPAY_CHAOS=long`: nine, then twenty), a writer killed there (shard 2's, or shard 1's
/// once, which its second server takes over), and the move run again: payments to, from and
/// within the moving city pause for at most 5 s in the plain moves; none is lost or doubled;
/// both shards' books balance, the clearing accounts mirror, every table of a shard is either
/// moved or the shard's own, and the city's residents, shop and keys work on the shard it
/// moved to. First, a move that meets a conflicting row on the target stops and thaws the city.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_moves_between_shards_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let Some((shards, catalog)) = two_shards(dir.path(), "citypay_move") else { return };
    let [hangzhou, fuzhou] = &shards;
    // Shard 1 has a second server, the load's way in: its writer can die under the load.
    let ports = free_ports(2);
    let entry = Shard { number: 1, target: hangzhou.target.clone(), port: ports[0], cluster_port: ports[1], log: dir.path().join("one-entry.log"), patroni: None };
    let mut servers = [Some(hangzhou.spawn(&catalog, None)), Some(fuzhou.spawn(&catalog, None))];
    hangzhou.wait_writer().await;
    fuzhou.wait_writer().await;
    let _entry = entry.spawn(&catalog, None);
    let (a, b) = (hangzhou.api(), fuzhou.api());
    let (operator_a, operator_b) = (a.operator().await, b.operator().await);
    for (api, operator, code, name) in [(&a, &operator_a, 330100, "Hangzhou"), (&b, &operator_b, 350100, "Fuzhou")] {
        let (status, city, _) = api.call("POST", "/v1/cities", Some(operator), Some(name), Some(json!({"code": code, "name": name}))).await;
        assert_eq!(status, StatusCode::CREATED, "{city}");
    }
    // A daughter in Hangzhou; in Fuzhou her mother, a friend of hers and a shop.
    let people = [(330100, "李娜", "13800138000", DAUGHTER_ID.to_owned()), (350100, "王秀英", "13700137000", MOTHER_ID.to_owned()), (350100, "陈静", "13300133000", fuzhou_id(1))];
    let (mut tokens, mut wallets) = (Vec::new(), Vec::new());
    for (i, (city, name, mobile, id)) in people.iter().enumerate() {
        let body = json!({"city": city, "name": name, "mobile": mobile, "id_number": id, "password": "correct horse", "account_class": "I"});
        let (status, made, _) = a.call("POST", "/v1/residents", None, Some(&format!("reg-{i}")), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        wallets.push(citypay_directory::account_id(citypay_directory::AccountKind::Wallet, made["resident_id"].as_str().unwrap().parse().unwrap()));
        let token = a.sign_in(mobile, "correct horse").await;
        let number = card(u32::try_from(i).unwrap());
        // The sandbox bank's register is in its shard's server, the resident's.
        let (api, operator) = if *city == 330100 { (&a, &operator_a) } else { (&b, &operator_b) };
        api.issue_card(operator, &number, name, id).await;
        api.top_up(&token, &number, 100_000).await;
        tokens.push(token);
    }
    let shop = json!({"city": 350100, "name": "鱼丸店", "uscc": support::uscc("M0000002"), "mcc": "5812", "category": "restaurant",
                      "settlement_account": "6222020200112233446", "notify_url": null});
    let (status, shop, _) = b.call("POST", "/v1/merchants", Some(&operator_b), Some("shop"), Some(shop)).await;
    assert_eq!(status, StatusCode::CREATED, "{shop}");
    let shop_key = format!("ApiKey {}:{}", shop["api_key_id"].as_str().unwrap(), shop["api_key_secret"].as_str().unwrap());
    let (_, counter, _) = a.call("GET", "/v1/merchant/qr", Some(&shop_key), None, None).await;
    // The shop's Alipay SDK code: its app, and an order made through it.
    let public = include_str!("../../gateway/tests/test-key.pub.pem");
    let (status, app, _) = b.call("POST", "/v1/gateway/apps", Some(&shop_key), None, Some(json!({"public_key": public}))).await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let (app_id, app_key) = (app["app_id"].as_str().unwrap().to_owned(), citypay_gateway::PlatformKey::from_pkcs8(1, &support::base64_decode(GATEWAY_TEST_KEY)).unwrap());
    let precreate = |no: &str| [("method", "alipay.trade.precreate"), ("biz_content", Box::leak(format!(r#"{{"out_trade_no":"{no}","total_amount":"1.00","subject":"鱼丸"}}"#).into_boxed_str()))];
    let made = support::signed_call(&a.base, &app_id, &app_key, &precreate("sdk_1")).await;
    assert_eq!(made["code"].as_str(), Some("10000"), "{made}");
    let query = [("method", "alipay.trade.query"), ("biz_content", r#"{"out_trade_no":"sdk_1"}"#)];

    // The load, through shard 1's second server: money into the city, out of it, within it,
    // and a shop of the city paid by its counter code.
    let flags = Flags { stop: std::sync::Arc::default(), measure: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)) };
    let way_in = entry.api();
    let fen = |mobile: &str| json!({"mobile": mobile, "amount": cny(1)});
    let streams = [
        tokio::spawn(stream(way_in.clone(), tokens[0].clone(), "/v1/transfers", fen("13700137000"), "in", flags.clone())),
        tokio::spawn(stream(way_in.clone(), tokens[1].clone(), "/v1/transfers", fen("13800138000"), "out", flags.clone())),
        tokio::spawn(stream(way_in.clone(), tokens[1].clone(), "/v1/transfers", fen("13300133000"), "within", flags.clone())),
        tokio::spawn(stream(way_in.clone(), tokens[2].clone(), "/v1/payments/qr", json!({"payload": counter["qr_payload"], "amount": cny(1)}), "shop", flags.clone())),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A move that meets a row already on the target under the same key (the shop's key id,
    // planted there) stops before any money crossed, copies nothing and thaws the city.
    let key_id = shop["api_key_id"].as_str().unwrap().to_owned();
    execute(&hangzhou.target.db, format!("INSERT INTO api_keys (key_id, merchant_id, secret_hash, created_at) VALUES ('{key_id}', 1, '\\x00', 0)"));
    let conflicted = {
        let (catalog, keys) = (catalog.clone(), hangzhou.target.keys.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["cluster", "move", "--catalog", &catalog, "--city", "350100", "--to", "1", "--keys"])
                .arg(&keys)
                .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let said = String::from_utf8_lossy(&conflicted.stderr).into_owned();
    assert!(!conflicted.status.success() && said.contains("there already under the same key"), "{said}");
    let frozen_left = {
        let url = catalog.clone();
        std::thread::spawn(move || postgres::Client::connect(&url, postgres::NoTls).unwrap().query_one("SELECT COUNT(*) FROM catalog_buckets WHERE moving_to IS NOT NULL", &[]).unwrap().get::<_, i64>(0))
            .join()
            .unwrap()
    };
    assert_eq!(frozen_left, 0, "the city is thawed");
    assert_eq!(fuzhou.query("SELECT COUNT(*) FROM residents")[0][0], 2, "nothing left the city's shard");
    execute(&hangzhou.target.db, format!("DELETE FROM api_keys WHERE key_id = '{key_id}'"));
    // A move of the city run while another runs (here: holds its lock) is refused, and leaves
    // the city as it was.
    let beside = {
        let (catalog, keys) = (catalog.clone(), hangzhou.target.keys.clone());
        tokio::task::spawn_blocking(move || {
            let mut running = postgres::Client::connect(&catalog, postgres::NoTls).unwrap();
            running.execute("SELECT pg_advisory_lock(1836021349, 350100)", &[]).unwrap();
            let refused = Command::new(BIN)
                .args(["cluster", "move", "--catalog", &catalog, "--city", "350100", "--to", "1", "--keys"])
                .arg(&keys)
                .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
                .output()
                .unwrap();
            let frozen: i64 = running.query_one("SELECT COUNT(*) FROM catalog_buckets WHERE moving_to IS NOT NULL", &[]).unwrap().get(0);
            (refused, frozen)
        })
        .await
        .unwrap()
    };
    let said = String::from_utf8_lossy(&beside.0.stderr).into_owned();
    assert!(!beside.0.status.success() && said.contains("being moved by another run"), "{said}");
    assert_eq!(beside.1, 0, "nothing frozen");

    // Three moves, back and forth; then four, each stopped after one of its steps and run again
    // (under CITYPAY_CHAOS=long, nine plain moves and five rounds of the four stops). An odd
    // number of moves: the city ends on shard 1.
    let long = std::env::var("CITYPAY_CHAOS").as_deref() == Ok("long");
    let (plain, rounds) = if long { (9, 5) } else { (3, 1) };
    let stops = [Some("frozen"), Some("copied"), Some("crossed"), Some("flipped")];
    let plan: Vec<Option<&str>> = std::iter::repeat_n(None, plain).chain((0..rounds).flat_map(|_| stops)).collect();
    let keys = hangzhou.target.keys.clone();
    let mut frozen = Vec::new();
    let mut to = 1;
    for stop_after in plan {
        if let Some(step) = stop_after {
            flags.measure.store(false, std::sync::atomic::Ordering::Relaxed);
            let (catalog_url, keys_path) = (catalog.clone(), keys.clone());
            tokio::task::spawn_blocking(move || move_city(&catalog_url, &keys_path, to, Some(step))).await.unwrap();
            // A writer dies there too, and comes back: shard 1's once (its second server takes
            // over), shard 2's otherwise.
            let dies = usize::from(step != "copied");
            servers[dies] = None;
            servers[dies] = Some(shards[dies].spawn(&catalog, None));
            if dies == 1 {
                fuzhou.wait_writer().await;
            } else {
                // Either of shard 1's servers takes the lease.
                let started = Instant::now();
                while !(hangzhou.is_writer().await || entry.is_writer().await) {
                    assert!(started.elapsed() < Duration::from_secs(30), "shard 1 has no writer");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // Frozen, the city's shop's SDK calls that write are refused in Alipay's form (the
            // SDK queries, then retries), once the server has read the map; its queries are
            // answered.
            if step == "frozen" {
                let started = Instant::now();
                loop {
                    let refused = support::signed_call(&a.base, &app_id, &app_key, &precreate("sdk_frozen")).await;
                    if refused["sub_code"] == "ACQ.SYSTEM_ERROR" {
                        break;
                    }
                    assert!(started.elapsed() < Duration::from_secs(10), "a write went through while the city was frozen: {refused}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let queried = support::signed_call(&a.base, &app_id, &app_key, &query).await;
                assert_eq!((queried["code"].as_str(), queried["trade_status"].as_str()), (Some("10000"), Some("WAIT_BUYER_PAY")), "{queried}");
            }
        }
        let (catalog_url, keys_path) = (catalog.clone(), keys.clone());
        let report = tokio::task::spawn_blocking(move || move_city(&catalog_url, &keys_path, to, None).unwrap()).await.unwrap();
        if stop_after.is_none() {
            assert_eq!((report["from"].as_u64(), report["to"].as_u64()), (Some(u64::from(3 - to)), Some(u64::from(to))), "{report}");
            assert!(report["accounts"].as_u64().unwrap() >= 3, "{report}");
            frozen.push(report["frozen_ms"].as_u64().unwrap());
        }
        eprintln!("move to shard {to} (stopped after {stop_after:?} first): {report}");
        // After the first move, on shard 1, the friend is verified in person (class III, new
        // limits): the next move meets her old account on shard 2 with the old ones, and
        // gives it the new.
        if frozen.len() == 1 && stop_after.is_none() {
            let (_, name, _, id) = &people[2];
            let (status, verified, _) = a.call("POST", "/v1/in-person-verifications", Some(&operator_a), Some("in-person-friend"), Some(json!({"id_number": id, "name": name}))).await;
            assert!(status.is_success(), "{verified}");
        }
        to = 3 - to;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    flags.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = Vec::new();
    for s in streams {
        seen.push(s.await.unwrap());
    }
    let slowest = seen.iter().map(|s| s.slowest).max().unwrap();
    eprintln!("moves frozen for {frozen:?} ms; the slowest payment took {slowest:?}; acknowledged {:?}", seen.iter().map(|s| s.acknowledged).collect::<Vec<_>>());
    assert!(slowest < Duration::from_secs(5), "a payment waited {slowest:?} for a plain move");
    assert!(seen.iter().all(|s| s.acknowledged > 10), "every stream paid through the moves");

    // The city is on shard 1 (an odd number of moves from 2). Nothing was lost or doubled: each
    // resident holds what the acknowledged payments left.
    let [inward, out, within, paid] = &seen[..] else { unreachable!() };
    let (daughter, _) = balance(&a, &tokens[0]).await;
    let (mother, _) = balance(&a, &tokens[1]).await;
    let (friend, _) = balance(&a, &tokens[2]).await;
    assert_eq!(daughter, 100_000 - inward.acknowledged + out.acknowledged);
    assert_eq!(mother, 100_000 + inward.acknowledged - out.acknowledged - within.acknowledged);
    assert_eq!(friend, 100_000 + within.acknowledged - paid.acknowledged);
    // The shop of the city takes payments, and answers for them, on the shard it moved to;
    // its SDK too.
    let made = support::signed_call(&a.base, &app_id, &app_key, &precreate("sdk_frozen")).await;
    assert_eq!(made["code"].as_str(), Some("10000"), "{made}");
    let queried = support::signed_call(&b.base, &app_id, &app_key, &query).await;
    assert_eq!(queried["trade_status"].as_str(), Some("WAIT_BUYER_PAY"), "{queried}");
    let (status, sold, _) = a.call("POST", "/v1/trades", Some(&shop_key), None, Some(json!({"out_trade_no": "after_moves", "amount": cny(100), "subject": "鱼丸"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{sold}");
    let (status, paid_again, _) = a.call("POST", "/v1/payments/qr", Some(&tokens[2]), Some("after-moves"), Some(json!({"payload": sold["qr_payload"]}))).await;
    assert_eq!((status, paid_again["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid_again}");
    // What she sent across shards before the moves reads as it ended, where she is now.
    let (_, sent, _) = a.call("GET", "/v1/transfers?limit=100", Some(&tokens[1]), None, None).await;
    let items = sent["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.iter().all(|t| t["status"] != "pending"), "{sent}");
    // A newcomer to the city registers on the shard it moved to.
    let newcomer = json!({"city": 350100, "name": "林峰", "mobile": "13600136000", "id_number": fuzhou_id(2), "password": "correct horse", "account_class": "I"});
    let (status, made, _) = b.call("POST", "/v1/residents", None, Some("reg-new"), Some(newcomer)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    // The mother's statement on the shard her city moved to carries her balance over (the
    // lines before each move stay in the ledger of the shard she left).
    let (_, statement, _) = a.call("GET", "/v1/wallet/statement?kind=moved", Some(&tokens[1]), None, None).await;
    let carried = statement["lines"].as_array().unwrap();
    assert!(!carried.is_empty() && carried.iter().all(|l| l["kind"] == "moved"), "{statement}");
    // Her whole statement reads from every shard she lived on, newest first: her top-up on
    // shard 2 before the moves is there, every line once (pages of 7 give what one page of
    // 200 does), and the lines add up to her balance (each move's line out and line in cancel).
    let pages = |limit: usize| {
        let (a, token) = (a.clone(), tokens[1].clone());
        async move {
            let (mut lines, mut cursor) = (Vec::new(), String::new());
            loop {
                let path = format!("/v1/wallet/statement?limit={limit}{cursor}");
                let (status, page, _) = a.call("GET", &path, Some(&token), None, None).await;
                assert_eq!(status, StatusCode::OK, "{page}");
                lines.extend(page["lines"].as_array().unwrap().iter().map(|l| (l["reference"].as_str().unwrap().to_owned() + " " + l["kind"].as_str().unwrap(), l["amount"]["amount"].as_i64().unwrap())));
                let Some(next) = page["next_cursor"].as_str() else { break };
                cursor = format!("&cursor={next}");
            }
            lines
        }
    };
    let (whole, paged) = (pages(200).await, pages(7).await);
    assert_eq!(whole, paged, "pages across shards");
    assert!(whole.iter().any(|(line, _)| line.ends_with(" top_up")), "her first top-up, on shard 2: {whole:?}");
    assert_eq!(whole.iter().map(|(_, amount)| amount).sum::<i64>(), mother, "the lines add up to her balance");
    // Her wallet's cap on the year's balance payments counts every one she made, on whichever
    // shard: each move carried what the caps had counted.
    let counted = hangzhou.query(&format!("SELECT cap2_used FROM accounts WHERE id = {}", i64::try_from(wallets[1]).unwrap()))[0][0];
    assert_eq!(counted, out.acknowledged + within.acknowledged, "her year's balance payments, counted across the moves");
    // The friend's wallet has her class III's limits on both shards (on shard 2 her account of
    // before took them on the way back), not the class I limits the daughter's still has.
    let limits = |wallet: u64| format!("SELECT COALESCE(cap1_window, -1), COALESCE(cap1_max, -1), COALESCE(cap2_window, -1), COALESCE(cap2_max, -1) FROM accounts WHERE id = {}", i64::try_from(wallet).unwrap());
    let (friend_here, friend_there, daughter) = (hangzhou.query(&limits(wallets[2])), fuzhou.query(&limits(wallets[2])), hangzhou.query(&limits(wallets[0])));
    assert_eq!(friend_here, friend_there, "the friend's limits on both shards");
    assert_ne!(friend_here, daughter, "class III's limits are not class I's");
    // Every table of a shard is moved with its city or stays with the shard.
    let tables = hangzhou.names("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'");
    let moving = citypay_country::moving::MOVED.iter().map(|(t, _)| *t).chain(citypay_country::moving::MERGED.iter().copied()).chain(citypay_country::moving::STAYING.iter().copied());
    let known: std::collections::BTreeSet<&str> = moving.collect();
    let unknown: Vec<&String> = tables.iter().filter(|t| !known.contains(t.as_str())).collect();
    assert!(unknown.is_empty(), "tables neither moved nor the shard's own: {unknown:?}");
    drop(servers);
    drop(_entry);
    let (total_one, pending_one, clearing_one) = hangzhou.books(2);
    let (total_two, pending_two, clearing_two) = fuzhou.books(1);
    assert_eq!((total_one, total_two, pending_one, pending_two), (0, 0, 0, 0), "each shard's books balance, nothing pending");
    assert_eq!(clearing_one, -clearing_two, "the clearing accounts mirror each other");
    let shown = Command::new(BIN).args(["country", "show", "--catalog", &catalog]).output().unwrap();
    let said = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(said.contains("shard 1: 1024 buckets") && said.contains("shard 2: 0 buckets"), "{said}");
    let residents = |shard: &Shard| shard.query("SELECT COUNT(*) FROM residents")[0][0];
    assert_eq!((residents(hangzhou), residents(fuzhou)), (4, 0), "the city's rows are on its shard only");
    for shard in &shards {
        shard.target.assert_audit_clean();
    }
    let audit = Command::new(BIN).args(["country", "audit", "--catalog", &catalog]).output().unwrap();
    let said = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(audit.status.success() && said.contains("the country's books are clean"), "{said}{}", String::from_utf8_lossy(&audit.stderr));
}
