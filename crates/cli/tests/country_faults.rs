//! The kills of `scale-out.md` §5 scenario 5 that `country.rs` leaves out, through the real
//! servers of two PostgreSQL shards (Hangzhou on 1, Fuzhou on 2), money sent from Hangzhou:
//! - the payer's server killed right after applying the decision, before answering: the
//!   retry under the same key answers the completed transfer, credited once;
//! - the resolver killed right after hearing the payee shard's decision on transfers left
//!   undecided (the payee's shard was down when they were sent), before applying it: the
//!   payer's server back, and two `citypay country resolve` run at once beside its own
//!   resolver, each transfer ends returned, once, with one decision on the payee's shard;
//! - every request replayed under its key answers as the first did, and moves nothing.
//!
//! Then each shard balances, the clearing accounts mirror, nothing is left undecided, and the
//! country's audit is clean. One round in CI; five under `CITYPAY_CHAOS=long`. Skipped without
//! `CITYPAY_TEST_PG`, except under CI.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::country::{Family, balance, cny, family, listed, settled, two_shards};
use support::{Api, BIN, GATEWAY_TEST_KEY, Running};


/// How many times the servers logging to `log` said they stop after `step` (several tasks
/// may reach it at once, each saying so before the process ends).
fn stops(log: &std::path::Path, step: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(&format!("stopping after {step}")).count()
}

/// Waits (at most 30 s) for a server told to stop after `step` to stop there: its log says so
/// more often than the `before` times it had (it did not stop for another reason).
fn stopped(server: &mut Running, log: &std::path::Path, step: &str, before: usize) {
    let started = Instant::now();
    while server.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "the server did not stop where it was told to");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stops(log, step) > before, "the server stopped, but not after {step}");
}

/// `citypay country resolve` of the catalog, on a thread.
fn resolve(catalog: &str, keys: &std::path::Path) -> std::thread::JoinHandle<std::process::Output> {
    let mut command = Command::new(BIN);
    command.args(["country", "resolve", "--catalog", catalog, "--keys"]).arg(keys).env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim());
    std::thread::spawn(move || command.output().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_a_kill_leaves_between_two_shards_ends_one_way() {
    let dir = tempfile::tempdir().unwrap();
    let Some((shards, catalog)) = two_shards(dir.path(), "citypay_faults") else { return };
    let [hangzhou, fuzhou] = &shards;
    let mut payer = Some(hangzhou.spawn(&catalog, None));
    let mut payee = Some(fuzhou.spawn(&catalog, None));
    hangzhou.wait_writer().await;
    fuzhou.wait_writer().await;
    let (a, b) = (hangzhou.api(), fuzhou.api());
    let Family { daughter, mother, .. } = family(&a, &b, &b, 100_000).await;

    let rounds: usize = if std::env::var("CITYPAY_CHAOS").as_deref() == Ok("long") { 5 } else { 1 };
    let mut sent = 0;
    let mut answers: Vec<(String, Value, StatusCode, Value)> = Vec::new();
    let mut crossed = 0;
    for round in 0..rounds {
        // The payer's server dies right after applying the decision: no answer. Back, the
        // same key answers the completed transfer; it was credited once.
        drop(payer.take());
        let before = stops(&hangzhou.log, "Applied");
        let mut dying = hangzhou.spawn(&catalog, Some("applied"));
        hangzhou.wait_writer().await;
        let (key, amount) = (format!("applied-{round}"), 1_000 + 100 * i64::try_from(round).unwrap());
        let body = json!({"mobile": "13700137000", "amount": cny(amount)});
        let cut = a.client.post(format!("{}/v1/transfers", a.base)).header("authorization", &daughter).header("idempotency-key", &key).json(&body).send().await;
        assert!(cut.is_err(), "the server stopped before answering: {cut:?}");
        stopped(&mut dying, &hangzhou.log, "Applied", before);
        payer = Some(hangzhou.spawn(&catalog, None));
        hangzhou.wait_writer().await;
        let (status, done, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some(&key), Some(body.clone())).await;
        assert_eq!((status, done["status"].as_str()), (StatusCode::CREATED, Some("completed")), "{done}");
        assert_eq!(listed(&b, &mother, done["transfer_id"].as_str().unwrap()).await["amount"]["amount"].as_i64(), Some(amount), "credited");
        answers.push((key, body, status, done));
        sent += amount;
        crossed += 1;

        // The payee's shard is down: five transfers are held, their outcome unknown.
        drop(payee.take());
        let mut held = Vec::new();
        for k in 0..5 {
            let (key, body) = (format!("held-{round}-{k}"), json!({"mobile": "13700137000", "amount": cny(100 + k)}));
            let (status, unknown, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some(&key), Some(body.clone())).await;
            assert_eq!((status, Api::code(&unknown)), (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"), "{unknown}");
            held.push((key, body));
        }
        let (_, mine, _) = a.call("GET", "/v1/transfers?limit=5", Some(&daughter), None, None).await;
        let ids: Vec<String> = mine["items"].as_array().unwrap().iter().map(|t| t["transfer_id"].as_str().unwrap().to_owned()).collect();
        crossed += ids.len();
        // The payee's shard back, the payer's resolver dies right after hearing its decision.
        drop(payer.take());
        payee = Some(fuzhou.spawn(&catalog, None));
        fuzhou.wait_writer().await;
        let before = stops(&hangzhou.log, "Heard");
        let mut dying = hangzhou.spawn(&catalog, Some("heard"));
        stopped(&mut dying, &hangzhou.log, "Heard", before);
        // The payer's server back, and two more resolvers at once beside its own.
        payer = Some(hangzhou.spawn(&catalog, None));
        let more = [resolve(&catalog, &hangzhou.target.keys), resolve(&catalog, &hangzhou.target.keys)];
        hangzhou.wait_writer().await;
        for handle in more {
            let output = handle.join().unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
        for id in &ids {
            assert_eq!(settled(&a, &daughter, id).await, "returned", "undecided when asked: returned");
            assert!(listed(&b, &mother, id).await.is_null(), "never credited");
        }
        for (key, body) in held {
            let (status, returned, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some(&key), Some(body.clone())).await;
            assert_eq!((status, Api::code(&returned)), (StatusCode::CONFLICT, "transfer_returned"), "{returned}");
            answers.push((key, body, status, returned));
        }
        assert_eq!(balance(&a, &daughter).await, (100_000 - sent, 100_000 - sent), "round {round}: given back, nothing held");
        assert_eq!(balance(&b, &mother).await, (sent, sent), "round {round}");
    }

    // Every request replayed under its key answers as the first did, and moves nothing.
    for (key, body, status, first) in &answers {
        let (again, answer, _) = a.call("POST", "/v1/transfers", Some(&daughter), Some(key), Some(body.clone())).await;
        assert_eq!((again, &answer), (*status, first), "{key}");
    }
    assert_eq!(balance(&a, &daughter).await.0, 100_000 - sent);
    assert_eq!(balance(&b, &mother).await.0, sent);

    // One decision on the payee's shard per transfer that crossed; each shard balances, the
    // clearing accounts mirror, nothing is undecided, and the country's audit is clean.
    let decided = fuzhou.query("SELECT COUNT(*) FROM crossings_in")[0][0];
    assert_eq!(decided, i64::try_from(crossed).unwrap(), "one decision per transfer");
    let (total_one, pending_one, clearing_one) = hangzhou.books(2);
    let (total_two, pending_two, clearing_two) = fuzhou.books(1);
    assert_eq!((total_one, total_two, pending_one, pending_two), (0, 0, 0, 0), "each shard's books balance, nothing pending");
    assert_eq!(clearing_one, -clearing_two, "the clearing accounts mirror each other");
    assert_eq!(hangzhou.query("SELECT COUNT(*) FROM crossings_out WHERE status = 'prepared'")[0][0], 0);
    drop((payer, payee));
    let audit = Command::new(BIN).args(["country", "audit", "--catalog", &catalog]).output().unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    for shard in [hangzhou, fuzhou] {
        shard.target.assert_audit_clean();
    }
}
