//! A country whose Fuzhou shard is a Patroni cluster (etcd and three PostgreSQL nodes,
//! `scripts/city-cluster.sh`), beside a Hangzhou shard on plain PostgreSQL. The catalog names
//! the cluster's etcd and scope, so every server finds that shard's primary through etcd, as
//! its own servers do. Money crosses both ways; then the cluster's primary is killed (agent and
//! postmaster): a transfer sent meanwhile is never acknowledged before its outcome is known,
//! and is retried under its key until it is; Hangzhou's server finds the new primary alone.
//! Afterwards each shard balances, the clearing accounts mirror, nothing is left undecided,
//! and `citypay country audit` (which finds the primary through the catalog) and `citypay
//! audit` of the cluster are clean. Needs patroni and etcd (`scripts/test.sh` installs them)
//! and `CITYPAY_TEST_PG`; skipped without them, except under `CI=true`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::country::{Family, Shard, balance, cny, country_command, family};
use support::{Api, BIN, GATEWAY_TEST_KEY, PatroniCluster, Target, city_cluster, free_ports, installed};


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_crosses_to_a_shard_on_patroni_through_its_failover() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if !(installed("patroni") && installed("etcd")) {
        assert!(!ci, "this test needs patroni and etcd (scripts/test.sh installs them)");
        eprintln!("skipping: this test needs patroni and etcd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (Some(one), Some(catalog)) = (
        Target::postgres(&dir.path().join("one"), "citypay_patroni_country_one"),
        Target::postgres(dir.path(), "citypay_patroni_country_catalog"),
    ) else {
        return;
    };
    let started = Instant::now();
    let cluster = Arc::new(PatroniCluster::start(&dir.path().join("cluster"), &["--fast"]));
    eprintln!("the Patroni cluster is up in {:.1} s", started.elapsed().as_secs_f64());
    std::fs::create_dir_all(dir.path().join("one")).unwrap();
    std::fs::create_dir_all(dir.path().join("two")).unwrap();
    let made = Command::new(BIN).args(["keys", "new"]).arg(&one.keys).env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let two = Target { db: cluster.template(), keys: dir.path().join("two").join("keys") };
    std::fs::copy(&one.keys, &two.keys).unwrap();

    let catalog = catalog.db;
    let etcd = cluster.env["CITYPAY_ETCD"].clone();
    country_command(&["add-shard", "--catalog", &catalog, "--shard", "1", "--db", &one.db]);
    country_command(&["add-shard", "--catalog", &catalog, "--shard", "2", "--db", &two.db, "--etcd", &etcd, "--patroni-scope", "/service/citypay"]);
    country_command(&["place-city", "--catalog", &catalog, "--city", "330100", "--shard", "1"]);
    country_command(&["place-city", "--catalog", &catalog, "--city", "350100", "--shard", "2"]);
    let shown = Command::new(BIN).args(["country", "show", "--catalog", &catalog]).output().unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("Patroni cluster /service/citypay"), "{}", String::from_utf8_lossy(&shown.stdout));
    support::admin(&one, &["create-operator", "--username", "root", "--role", "platform"]);
    let made = cluster.citypay(&two.keys, &["admin", "create-operator", "--username", "root", "--role", "platform"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let ports = free_ports(4);
    let hangzhou = Shard { number: 1, target: one, port: ports[0], cluster_port: ports[1], log: dir.path().join("one.log"), patroni: None };
    let fuzhou = Shard { number: 2, target: two, port: ports[2], cluster_port: ports[3], log: dir.path().join("two.log"), patroni: Some(cluster.clone()) };
    let _servers = [hangzhou.spawn(&catalog, None), fuzhou.spawn(&catalog, None)];
    hangzhou.wait_writer().await;
    fuzhou.wait_writer().await;
    let (a, b) = (hangzhou.api(), fuzhou.api());
    // The mother registers through Hangzhou's server: her ID number's and mobile's claims are
    // made on their home shards, and her rows on Fuzhou's, over its primary found through etcd.
    let Family { daughter, mother, .. } = family(&a, &b, &a, 50_000).await;

    let send = |api: &Api, from: &str, key: &str, mobile: &str, amount: i64| {
        let (api, from, key, body) = (api.clone(), from.to_owned(), key.to_owned(), json!({"mobile": mobile, "amount": cny(amount)}));
        async move { api.call("POST", "/v1/transfers", Some(&from), Some(&key), Some(body)).await }
    };
    let (status, sent, _) = send(&a, &daughter, "gift-1", "13700137000", 10_000).await;
    assert_eq!((status, sent["status"].as_str()), (StatusCode::CREATED, Some("completed")), "{sent}");
    let (status, back, _) = send(&b, &mother, "back-1", "13800138000", 1_000).await;
    assert_eq!((status, back["status"].as_str()), (StatusCode::CREATED, Some("completed")), "{back}");

    // The primary of Fuzhou's cluster is lost. A transfer to Fuzhou sent meanwhile is retried
    // under its key: every answer until the outcome is known is a 503, never a success.
    let killed = city_cluster(&["kill-primary", cluster.dir.to_str().unwrap()]);
    let lost = Instant::now();
    let mut unknown = 0;
    let during = loop {
        let (status, answer, _) = send(&a, &daughter, "gift-2", "13700137000", 2_000).await;
        match status {
            StatusCode::CREATED | StatusCode::CONFLICT => break (status, answer),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => unknown += 1,
            other => panic!("{other} during the failover: {answer}"),
        }
        // Hangzhou's own wallets answer throughout.
        assert_eq!(balance(&a, &daughter).await.0, 41_000, "Hangzhou answers while Fuzhou fails over");
        assert!(lost.elapsed() < Duration::from_secs(90), "Fuzhou's shard did not come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let new_leader = cluster.leader();
    assert_ne!(new_leader, killed, "another node leads");
    eprintln!("{killed} killed, {new_leader} leads; the transfer sent meanwhile was known after {:.1} s and {unknown} unknown answers: {}", lost.elapsed().as_secs_f64(), during.0);
    let crossed = if during.0 == StatusCode::CREATED {
        assert_eq!(during.1["status"], "completed", "{}", during.1);
        2_000
    } else {
        assert_eq!(Api::code(&during.1), "transfer_returned", "{}", during.1);
        0
    };
    // The new primary, found by every server: money crosses both ways again.
    let (status, found, _) = a.call("POST", "/v1/transfer-recipients", Some(&daughter), None, Some(json!({"mobile": "13700137000"}))).await;
    assert_eq!((status, found["masked_name"].as_str()), (StatusCode::OK, Some("**英")), "{found}");
    let (status, sent, _) = send(&a, &daughter, "gift-3", "13700137000", 3_000).await;
    assert_eq!((status, sent["status"].as_str()), (StatusCode::CREATED, Some("completed")), "{sent}");
    let (status, back, _) = send(&b, &mother, "back-2", "13800138000", 500).await;
    assert_eq!((status, back["status"].as_str()), (StatusCode::CREATED, Some("completed")), "{back}");
    assert_eq!(balance(&a, &daughter).await, (50_000 - 10_000 + 1_000 - crossed - 3_000 + 500, 50_000 - 10_000 + 1_000 - crossed - 3_000 + 500));
    assert_eq!(balance(&b, &mother).await, (10_000 - 1_000 + crossed + 3_000 - 500, 10_000 - 1_000 + crossed + 3_000 - 500));

    // The books: each shard balances with nothing pending, the clearing accounts mirror,
    // nothing is left undecided, and the audits (the country's through the catalog's etcd)
    // are clean.
    let started = Instant::now();
    loop {
        let (total_one, pending_one, clearing_one) = hangzhou.books(2);
        let (total_two, pending_two, clearing_two) = fuzhou.books(1);
        let undecided = hangzhou.query("SELECT COUNT(*) FROM crossings_out WHERE status = 'prepared'")[0][0]
            + fuzhou.query("SELECT COUNT(*) FROM crossings_out WHERE status = 'prepared'")[0][0];
        if (pending_one, pending_two, undecided) == (0, 0, 0) {
            assert_eq!((total_one, total_two), (0, 0), "each shard's books balance");
            assert_eq!(clearing_one + clearing_two, 0, "the clearing accounts mirror: {clearing_one} and {clearing_two}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "left undecided: {undecided}, pending {pending_one} and {pending_two}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = Command::new(BIN).args(["country", "audit", "--catalog", &catalog]).output().unwrap();
    assert!(audit.status.success(), "{}{}", String::from_utf8_lossy(&audit.stdout), String::from_utf8_lossy(&audit.stderr));
    let audit = cluster.citypay(&fuzhou.target.keys, &["audit", "--etcd", &etcd]);
    assert!(audit.status.success(), "{}{}", String::from_utf8_lossy(&audit.stdout), String::from_utf8_lossy(&audit.stderr));
}
