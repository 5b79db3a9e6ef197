//! A city on several servers under faults: etcd, a Patroni cluster of three PostgreSQL nodes
//! (`scripts/city-cluster.sh`, each node in a network namespace of its own) and three
//! `citypay serve`, under a load of top-ups, QR and payment-code payments and refunds from
//! clients that pick any server and retry under the same keys. The faults: the writer killed
//! (SIGKILL), the PostgreSQL primary killed (agent and postmaster), Patroni alone killed (the
//! orphan postgres must acknowledge nothing), the writer frozen past its lease and woken, and
//! the primary cut off from its peers and etcd. Every request is recorded as ok, failed or
//! unknown, and afterwards: every acknowledged operation is there exactly once (the wallets
//! and trades say so), the audit is clean, every repeat got its first answer, no answer carries
//! an epoch already superseded when it was sent, and none of the woken writer's commands in
//! hand was acknowledged under its old epoch. It fails if fewer than 1,000 operations were
//! acknowledged or if no retry crossed a takeover.
//!
//! CI runs 3 writer kills, 1 primary kill, 1 Patroni kill, 1 freeze and 1 partition;
//! `CITYPAY_CHAOS=long` runs 20 of each. Needs root (namespaces), patroni and etcd (which
//! `scripts/test.sh` installs); skipped without them, except under `CI=true`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{BIN, GATEWAY_TEST_KEY, PatroniCluster as Cluster, city_cluster as cluster, free_ports, installed};

const SERVERS: usize = 3;
const RESIDENTS: usize = 12;
const LEASE_TTL_MS: u64 = 2_000;

/// One `citypay serve` of the city.
struct Node {
    child: Option<Child>,
    base: String,
    port: u16,
    cluster_port: u16,
    log: PathBuf,
}

impl Node {
    fn spawn(&mut self, cluster: &Cluster, keys: &Path) {
        let template = cluster.template();
        let child = Command::new(BIN)
            .args(["serve", "--addr", &format!("127.0.0.1:{}", self.port), "--db", &template, "--keys"])
            .arg(keys)
            .args(["--cluster-listen", &format!("127.0.0.1:{}", self.cluster_port), "--lease-ttl-ms", &LEASE_TTL_MS.to_string()])
            .args(["--etcd", &cluster.env["CITYPAY_ETCD"], "--patroni-scope", "/service/citypay"])
            .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
            .env("CITYPAY_ALLOW_PRIVATE_NOTIFY", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap())
            .spawn()
            .unwrap();
        std::fs::write(cluster.dir.join("pids").join(format!("serve-{}.pid", self.port)), child.id().to_string()).unwrap();
        self.child = Some(child);
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap().success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn health(http: &reqwest::Client, base: &str) -> Option<Value> {
    let response = http.get(format!("{base}/health")).timeout(Duration::from_millis(500)).send().await.ok()?;
    response.json().await.ok()
}

/// What happened to one request.
#[derive(Debug, Clone)]
struct Attempt {
    server: usize,
    sent: Instant,
    answered: Instant,
    /// `None`: no answer (connection failed, timed out): outcome unknown.
    status: Option<StatusCode>,
    epoch: Option<i64>,
    body: Value,
}

/// One operation as its client saw it.
#[derive(Debug, Clone)]
struct Operation {
    kind: &'static str,
    resident: usize,
    amount: i64,
    attempts: Vec<Attempt>,
}

impl Operation {
    /// The first success, if any.
    fn ok(&self) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.status.is_some_and(|s| s.is_success()))
    }

    /// Whether it ended without a known outcome.
    fn unknown(&self) -> bool {
        self.ok().is_none() && self.attempts.last().is_none_or(|a| a.status.is_none_or(|s| s.is_server_error()))
    }
}

/// A resident of the load, with a wallet, a card, a payment device and a merchant to pay.
#[derive(Debug, Clone)]
struct Resident {
    token: String,
    card: String,
    secret: Vec<u8>,
    device: u32,
}

/// The shared state of the clients.
struct Load {
    http: reqwest::Client,
    bases: Vec<String>,
    shop: String,
    residents: Vec<Resident>,
    operations: Mutex<Vec<Operation>>,
    next: AtomicU64,
    stop: AtomicBool,
    /// The last TOTP step each resident's device paid with (a code works once).
    code_steps: Mutex<HashMap<usize, u64>>,
}

impl Load {
    /// Sends one request to server `server`; records the attempt.
    async fn send(&self, server: usize, method: &str, path: &str, auth: &str, key: Option<&str>, body: &Value) -> Attempt {
        let url = format!("{}{path}", self.bases[server]);
        let mut request = if method == "GET" { self.http.get(url) } else { self.http.post(url).json(body) };
        if !auth.is_empty() {
            request = request.header("authorization", auth);
        }
        request = request.timeout(Duration::from_secs(15));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let sent = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let epoch = response.headers().get("citypay-writer-epoch").and_then(|v| v.to_str().ok()?.parse().ok());
                let body = response.json().await.unwrap_or(Value::Null);
                Attempt { server, sent, answered: Instant::now(), status: Some(status), epoch, body }
            }
            Err(_) => Attempt { server, sent, answered: Instant::now(), status: None, epoch: None, body: Value::Null },
        }
    }

    /// Sends a request until its outcome is known (a success or a refusal that is not 5xx),
    /// at a random server each time, for at most 90 s; then repeats a success once at another
    /// server, which must answer the same.
    async fn until_known(&self, op: &mut Operation, method: &str, path: &str, auth: &str, key: Option<&str>, body: &Value) {
        let started = Instant::now();
        loop {
            let server = fastrand::usize(..self.bases.len());
            let attempt = self.send(server, method, path, auth, key, body).await;
            let known = attempt.status.is_some_and(|s| !s.is_server_error());
            op.attempts.push(attempt);
            if known || started.elapsed() > Duration::from_secs(90) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..200))).await;
        }
        if op.ok().is_some() {
            // The repeat, at another server each time, until it has an answer.
            let started = Instant::now();
            let mut server = op.attempts.last().unwrap().server;
            loop {
                server = (server + 1) % self.bases.len();
                let repeat = self.send(server, method, path, auth, key, body).await;
                let known = repeat.status.is_some_and(|s| !s.is_server_error());
                op.attempts.push(repeat);
                if known || started.elapsed() > Duration::from_secs(90) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..200))).await;
            }
        }
    }

    async fn top_up(&self, who: usize, n: u64) -> Operation {
        let amount = 1_000 + i64::try_from(n % 50).unwrap();
        let mut op = Operation { kind: "top_up", resident: who, amount, attempts: Vec::new() };
        let body = json!({"card_id": self.residents[who].card, "amount": {"amount": amount, "currency": "CNY"}});
        self.until_known(&mut op, "POST", "/v1/wallet/top-ups", &self.residents[who].token, Some(&format!("t{n}")), &body).await;
        op
    }

    /// A registration of an identity and mobile number no other operation uses: any refusal
    /// means an earlier attempt registered it and the retry was not given the first answer.
    async fn register(&self, who: usize, n: u64) -> Operation {
        let body = format!("330102{}0505{:03}", 1960 + (n / 1_000) % 40, n % 1_000);
        let id_number = format!("{body}{}", citypay_identity::resident_id::check_character(&body).unwrap());
        let request = json!({"city": 330100, "name": "Chaos Rider", "mobile": format!("17{n:09}"), "id_number": id_number, "password": "chaos password", "account_class": "I"});
        let mut op = Operation { kind: "registration", resident: who, amount: 0, attempts: Vec::new() };
        self.until_known(&mut op, "POST", "/v1/residents", "", Some(&format!("r{n}")), &request).await;
        op
    }

    async fn qr_payment(&self, who: usize, n: u64) -> Option<(Operation, String)> {
        let amount = 100 + i64::try_from(n % 90).unwrap();
        let order = format!("Q{n}");
        let trade = json!({"out_trade_no": order, "amount": {"amount": amount, "currency": "CNY"}, "subject": "noodles"});
        let mut made = Operation { kind: "trade", resident: who, amount: 0, attempts: Vec::new() };
        self.until_known(&mut made, "POST", "/v1/trades", &self.shop, None, &trade).await;
        let payload = made.ok()?.body["qr_payload"].as_str()?.to_owned();
        let mut op = Operation { kind: "qr", resident: who, amount, attempts: Vec::new() };
        self.until_known(&mut op, "POST", "/v1/payments/qr", &self.residents[who].token, Some(&format!("p{n}")), &json!({"payload": payload})).await;
        Some((op, order))
    }

    async fn code_payment(&self, who: usize, n: u64) -> Option<(Operation, String)> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        {
            let mut steps = self.code_steps.lock().unwrap();
            if steps.get(&who) == Some(&(now / 30)) {
                return None;
            }
            steps.insert(who, now / 30);
        }
        let resident = &self.residents[who];
        let code = citypay_codes::payment_code::PaymentCode::generate(resident.device, &resident.secret, now).to_string();
        let amount = 100 + i64::try_from(n % 90).unwrap();
        let order = format!("C{n}");
        let body = json!({"out_trade_no": order, "amount": {"amount": amount, "currency": "CNY"}, "subject": "tea", "auth_code": code});
        let mut op = Operation { kind: "code", resident: who, amount, attempts: Vec::new() };
        self.until_known(&mut op, "POST", "/v1/trades/pay", &self.shop, None, &body).await;
        Some((op, order))
    }

    async fn refund(&self, who: usize, order: &str, n: u64) -> Operation {
        let amount = 50;
        let mut op = Operation { kind: "refund", resident: who, amount, attempts: Vec::new() };
        let body = json!({"out_request_no": format!("R{n}"), "amount": {"amount": amount, "currency": "CNY"}});
        self.until_known(&mut op, "POST", &format!("/v1/trades/{order}/refunds"), &self.shop, None, &body).await;
        op
    }

    /// One client: operations one after another until told to stop.
    async fn client(self: Arc<Load>, who: usize) {
        while !self.stop.load(Ordering::SeqCst) {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let mut done = Vec::new();
            match n % 4 {
                0 => done.push(self.top_up(who, n).await),
                1 | 2 => {
                    let paid = if n % 4 == 2 { self.code_payment(who, n).await } else { None };
                    let paid = match paid {
                        Some(paid) => Some(paid),
                        None => self.qr_payment(who, n).await,
                    };
                    if let Some((op, order)) = paid {
                        let refund = op.ok().is_some() && n % 3 == 0;
                        done.push(op);
                        if refund {
                            done.push(self.refund(who, &order, n).await);
                        }
                    }
                }
                _ if n % 8 == 3 => done.push(self.register(who, n).await),
                _ => done.push(self.top_up(who, n).await),
            }
            self.operations.lock().unwrap().extend(done);
        }
    }
}

/// A fault and when its service came back.
#[derive(Debug)]
struct Window {
    fault: &'static str,
    at: Instant,
    /// The first acknowledged operation sent after the fault.
    back: Option<Instant>,
}

/// The writer's index and epoch, as the servers' health says.
async fn writer(http: &reqwest::Client, bases: &[String]) -> Option<(usize, i64)> {
    for (i, base) in bases.iter().enumerate() {
        if let Some(h) = health(http, base).await
            && h["role"] == "writer"
        {
            return Some((i, h["writer_epoch"].as_i64()?));
        }
    }
    None
}

async fn wait_writer(http: &reqwest::Client, bases: &[String], newer_than: i64, within: Duration) -> (usize, i64) {
    let started = Instant::now();
    loop {
        if let Some((i, epoch)) = writer(http, bases).await
            && epoch > newer_than
        {
            return (i, epoch);
        }
        assert!(started.elapsed() < within, "no new writer within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records when each epoch was first seen (its takeover), polling every server's health.
async fn watch_epochs(http: reqwest::Client, bases: Vec<String>, seen: Arc<Mutex<BTreeMap<i64, Instant>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        for base in &bases {
            if let Some(h) = health(&http, base).await
                && h["role"] == "writer"
                && let Some(epoch) = h["writer_epoch"].as_i64()
            {
                seen.lock().unwrap().entry(epoch).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn id_number(index: usize) -> String {
    citypay_sim::people::resident_id_number(330_100, 9_000 + index as u64)
}

fn card_number(index: usize) -> String {
    let payload = format!("622202{:09}", 700_000 + index);
    format!("{payload}{}", citypay_identity::card::luhn_check_digit(&payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_city_keeps_its_books_through_kills_freezes_failovers_and_partitions() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !(installed("patroni") && installed("etcd") && root) {
        assert!(!ci, "the chaos test needs patroni, etcd (scripts/test.sh installs them) and root (network namespaces)");
        eprintln!("skipping: the chaos test needs patroni, etcd and root");
        return;
    }
    let long = std::env::var("CITYPAY_CHAOS").as_deref() == Ok("long");
    let rounds = if long { 20 } else { 1 };
    let writer_kills = if long { 20 } else { 3 };

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cluster");
    let started = Instant::now();
    let city = Cluster::start(&dir, &["--fast", "--netns"]);
    eprintln!("cluster up in {:.1} s", started.elapsed().as_secs_f64());
    let keys = work.path().join("keys");
    let made = Command::new(BIN).args(["keys", "new"]).arg(&keys).env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    for args in [&["admin", "onboard-city", "--code", "330100", "--name", "Hangzhou"][..], &["admin", "create-operator", "--username", "root", "--role", "platform"]] {
        let output = city.citypay(&keys, args);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    // The servers' logs outlive the run, for a failure's reading.
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos");
    std::fs::create_dir_all(&logs).unwrap();
    let ports = free_ports(2 * SERVERS);
    let mut nodes: Vec<Node> = (0..SERVERS)
        .map(|i| {
            let (port, cluster_port) = (ports[2 * i], ports[2 * i + 1]);
            let log = logs.join(format!("serve-{i}.log"));
            let _ = std::fs::remove_file(&log);
            Node { child: None, base: format!("http://127.0.0.1:{port}"), port, cluster_port, log }
        })
        .collect();
    eprintln!("chaos: the servers log to {}", logs.display());
    for node in &mut nodes {
        node.spawn(&city, &keys);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let http = reqwest::Client::new();
    let (_, first_epoch) = wait_writer(&http, &bases, 0, Duration::from_secs(60)).await;
    for base in &bases {
        let started = Instant::now();
        while health(&http, base).await.is_none_or(|h| h["role"] != "writer" && h["role"] != "forwarding") {
            assert!(started.elapsed() < Duration::from_secs(60), "{base} did not join");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The residents, each class III with a card, money and a payment device; one shop.
    let api = support::Api { client: http.clone(), base: bases[1].clone() };
    let operator = api.operator().await;
    let (_, shop) = api.merchant(&operator, &support::uscc("M0000007"), "restaurant", None).await;
    let mut residents = Vec::new();
    for i in 0..RESIDENTS {
        let (id, card, mobile) = (id_number(i), card_number(i), format!("1390000{i:04}"));
        let token = api.resident(&format!("Resident {i}"), &mobile, &id, "correct horse").await;
        let (status, body, _) = api.call("POST", "/v1/in-person-verifications", Some(&operator), Some(&format!("f{i}")), Some(json!({"id_number": id, "name": format!("Resident {i}")}))).await;
        assert!(status.is_success(), "{body}");
        api.issue_card(&operator, &card, &format!("Resident {i}"), &id).await;
        let (status, linked, _) = api.call("POST", "/v1/wallet/cards", Some(&token), Some(&format!("card-{i}")), Some(json!({"card_number": card}))).await;
        assert_eq!(status, StatusCode::CREATED, "{linked}");
        let card_id = linked["card_id"].as_str().unwrap().to_owned();
        let top_up = json!({"card_id": card_id, "amount": {"amount": 100_000, "currency": "CNY"}});
        let (status, body, _) = api.call("POST", "/v1/wallet/top-ups", Some(&token), Some(&format!("first-{i}")), Some(top_up)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, device, _) = api.call("POST", "/v1/payment-devices", Some(&token), None, None).await;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        residents.push(Resident {
            token,
            card: card_id,
            secret: support::unhex(device["secret"].as_str().unwrap()),
            device: u32::try_from(device["device"].as_u64().unwrap()).unwrap(),
        });
    }

    let load = Arc::new(Load {
        http: http.clone(),
        bases: bases.clone(),
        shop,
        residents,
        operations: Mutex::new(Vec::new()),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        code_steps: Mutex::new(HashMap::new()),
    });
    let epochs: Arc<Mutex<BTreeMap<i64, Instant>>> = Arc::default();
    epochs.lock().unwrap().insert(first_epoch, Instant::now());
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_epochs(http.clone(), bases.clone(), epochs.clone(), watching.clone()));
    let clients: Vec<_> = (0..RESIDENTS).map(|who| tokio::spawn(load.clone().client(who))).collect();

    let mut windows: Vec<Window> = Vec::new();
    // The requests a frozen writer had in hand, and its old epoch.
    let mut frozen_in_hand: Vec<(i64, tokio::task::JoinHandle<Attempt>)> = Vec::new();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dir_arg = dir.to_str().unwrap().to_owned();
    for round in 0..rounds.max(writer_kills) {
        if round < writer_kills {
            let (index, epoch) = wait_writer(&http, &bases, 0, Duration::from_secs(60)).await;
            nodes[index].signal("KILL");
            windows.push(Window { fault: "writer SIGKILL", at: Instant::now(), back: None });
            nodes[index].kill();
            wait_writer(&http, &bases, epoch, Duration::from_secs(30)).await;
            nodes[index].spawn(&city, &keys);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if round >= rounds {
            continue;
        }
        // Frozen past the lease, with requests in hand, then woken.
        let (index, epoch) = wait_writer(&http, &bases, 0, Duration::from_secs(60)).await;
        nodes[index].signal("STOP");
        windows.push(Window { fault: "writer SIGSTOP", at: Instant::now(), back: None });
        for k in 0..3u64 {
            let load = load.clone();
            frozen_in_hand.push((
                epoch,
                tokio::spawn(async move {
                    let n = load.next.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"card_id": load.residents[0].card, "amount": {"amount": 1_000 + k, "currency": "CNY"}});
                    let mut op = Operation { kind: "top_up", resident: 0, amount: 1_000 + i64::try_from(k).unwrap(), attempts: Vec::new() };
                    let attempt = load.send(index, "POST", "/v1/wallet/top-ups", &load.residents[0].token, Some(&format!("t{n}")), &body).await;
                    op.attempts.push(attempt.clone());
                    // Then as a client would: retried until known, recorded with the rest.
                    load.until_known(&mut op, "POST", "/v1/wallet/top-ups", &load.residents[0].token, Some(&format!("t{n}")), &body).await;
                    load.operations.lock().unwrap().push(op);
                    attempt
                }),
            ));
        }
        wait_writer(&http, &bases, epoch, Duration::from_secs(30)).await;
        nodes[index].signal("CONT");
        tokio::time::sleep(Duration::from_secs(3)).await;

        // The primary's machine lost: agent and postmaster; the node rejoins.
        let (_, epoch) = wait_writer(&http, &bases, 0, Duration::from_secs(60)).await;
        let killed = cluster(&["kill-primary", &dir_arg]);
        windows.push(Window { fault: "primary killed", at: Instant::now(), back: None });
        wait_writer(&http, &bases, epoch, Duration::from_secs(90)).await;
        cluster(&["rejoin", &dir_arg, &killed, "120"]);

        // Patroni alone: its postgres lives on as an orphan, and must acknowledge nothing once
        // another node leads.
        let (_, epoch) = wait_writer(&http, &bases, 0, Duration::from_secs(60)).await;
        let leader = city.leader();
        cluster(&["kill-patroni", &dir_arg, &leader]);
        windows.push(Window { fault: "Patroni killed", at: Instant::now(), back: None });
        wait_writer(&http, &bases, epoch, Duration::from_secs(90)).await;
        cluster(&["rejoin", &dir_arg, &leader, "120"]);

        // The primary cut off from etcd and its peers (not from the servers).
        let (_, epoch) = wait_writer(&http, &bases, 0, Duration::from_secs(60)).await;
        let leader = city.leader();
        cluster(&["partition", &dir_arg, &leader]);
        windows.push(Window { fault: "primary partitioned", at: Instant::now(), back: None });
        wait_writer(&http, &bases, epoch, Duration::from_secs(90)).await;
        cluster(&["heal", &dir_arg, &leader]);
        cluster(&["wait-healthy", &dir_arg, "120"]);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let in_hand: Vec<(i64, Attempt)> = {
        let mut found = Vec::new();
        for (epoch, task) in frozen_in_hand {
            found.push((epoch, task.await.unwrap()));
        }
        found
    };
    watching.store(true, Ordering::SeqCst);
    watcher.await.unwrap();

    // The record.
    let operations = load.operations.lock().unwrap().clone();
    let epochs = epochs.lock().unwrap().clone();
    let acked: Vec<&Operation> = operations.iter().filter(|o| o.ok().is_some()).collect();
    let unknown = operations.iter().filter(|o| o.unknown()).count();
    let failed = operations.len() - acked.len() - unknown;
    let mut problems = Vec::new();
    for window in &mut windows {
        window.back = operations
            .iter()
            .filter_map(|o| o.ok())
            .filter(|a| a.sent >= window.at)
            .map(|a| a.answered)
            .min();
    }
    // Every repeat of a success answered it again, word for word.
    let mut repeats = 0;
    for op in &acked {
        let first = op.ok().unwrap();
        for later in op.attempts.iter().skip_while(|a| !std::ptr::eq(*a, first)).skip(1) {
            // A repeat may find no writer or no server (a 5xx or no answer: it is sent again),
            // never another answer. Alipay's `fund_change` says whether this call moved money:
            // only the first one did.
            if later.status.is_none_or(|s| s.is_server_error()) {
                continue;
            }
            repeats += 1;
            let without_fund_change = |body: &Value| {
                let mut body = body.clone();
                if let Some(fields) = body.as_object_mut() {
                    fields.remove("fund_change");
                }
                body
            };
            if later.status != first.status || without_fund_change(&later.body) != without_fund_change(&first.body) {
                problems.push(format!("{} repeated {:?} {} after {:?} {}", op.kind, later.status, later.body, first.status, first.body));
            }
        }
    }
    // Retries that crossed a takeover: an attempt without a known answer, then the success
    // under a later epoch.
    let crossed = acked
        .iter()
        .filter(|o| {
            let first = o.ok().unwrap();
            o.attempts.iter().take_while(|a| !std::ptr::eq(*a, first)).any(|a| a.status.is_none_or(|s| s.is_server_error()))
                && o.attempts.iter().filter_map(|a| a.epoch).min() < first.epoch
        })
        .count();
    // No success carries an epoch that a later writer had superseded before it was sent. Only
    // an operation whose first attempt succeeded was surely committed by that attempt (a retry
    // may be answered from what an earlier attempt committed, as a repeat is).
    let mut epoch_checked = 0;
    for op in &acked {
        if let Some(attempt) = op.attempts.first().filter(|a| a.status.is_some_and(|s| s.is_success())) {
            epoch_checked += 1;
            let Some(epoch) = attempt.epoch else {
                problems.push(format!("{} answered without an epoch", op.kind));
                continue;
            };
            let superseded = epochs.range(epoch + 1..).any(|(_, seen)| *seen + Duration::from_millis(500) < attempt.sent);
            if superseded {
                problems.push(format!("{} acknowledged under epoch {epoch}, superseded before it was sent", op.kind));
            }
        }
    }
    // A registration of a fresh identity is never refused: a refusal means an attempt that
    // went unanswered registered it, and the retry did not get that attempt's answer.
    for op in operations.iter().filter(|o| o.kind == "registration" && o.ok().is_none()) {
        if let Some(refused) = op.attempts.iter().find(|a| a.status.is_some_and(|s| s.is_client_error())) {
            problems.push(format!("a registration was refused after {} attempts: {}", op.attempts.len(), refused.body));
        }
    }
    // The frozen writer acknowledged nothing of what it had in hand under its old epoch.
    for (old, attempt) in &in_hand {
        if attempt.status.is_some_and(|s| s.is_success()) && attempt.epoch <= Some(*old) {
            problems.push(format!("the frozen writer acknowledged a command under its old epoch {old}: {}", attempt.body));
        }
    }
    // Exactly once: each wallet holds its acknowledged top-ups less its acknowledged payments
    // plus its refunds, to the fen (an unknown operation fails the test below).
    let api = support::Api { client: http.clone(), base: bases[0].clone() };
    for (who, resident) in load.residents.iter().enumerate() {
        let expected: i64 = 100_000
            + acked
                .iter()
                .filter(|o| o.resident == who)
                .map(|o| match o.kind {
                    "top_up" | "refund" => o.amount,
                    "qr" | "code" => -o.amount,
                    _ => 0,
                })
                .sum::<i64>();
        let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(&resident.token), None, None).await;
        if wallet["balance"]["amount"].as_i64() != Some(expected) {
            problems.push(format!("resident {who}'s wallet holds {} fen; the acknowledged operations say {expected}", wallet["balance"]));
            for op in operations.iter().filter(|o| o.resident == who) {
                let attempts: Vec<String> = op.attempts.iter().map(|a| format!("{}:{:?}@{:?} {}", a.server, a.status.map(|s| s.as_u16()), a.epoch, a.body)).collect();
                eprintln!("chaos: resident {who}: {} {} fen: {}", op.kind, op.amount, attempts.join(" | "));
            }
        }
    }
    let by_kind = |kind: &str| acked.iter().filter(|o| o.kind == kind).count();
    eprintln!(
        "chaos: {} operations: {} acknowledged (top-ups {}, QR {}, code {}, refunds {}, registrations {}), {failed} refused, {unknown} unknown; {repeats} repeats answered as first; {epoch_checked} epochs checked; {crossed} retries crossed a takeover; epochs {:?}",
        operations.len(),
        acked.len(),
        by_kind("top_up"),
        by_kind("qr"),
        by_kind("code"),
        by_kind("refund"),
        by_kind("registration"),
        epochs.keys().collect::<Vec<_>>()
    );
    for window in &windows {
        let gap = window.back.map(|b| format!("{:.2} s", b.saturating_duration_since(window.at).as_secs_f64()));
        eprintln!("chaos: {}: without service for {}", window.fault, gap.unwrap_or_else(|| "ever".into()));
    }
    for (old, attempt) in &in_hand {
        eprintln!("chaos: in the frozen writer's hands (epoch {old}): {:?} under epoch {:?}", attempt.status, attempt.epoch);
    }

    for node in &mut nodes {
        node.kill();
    }
    let audit = city.citypay(&keys, &["audit", "--etcd", &city.env["CITYPAY_ETCD"]]);
    if !audit.status.success() {
        problems.push(format!("audit: {}{}", String::from_utf8_lossy(&audit.stdout), String::from_utf8_lossy(&audit.stderr)));
    }
    let unknowns: Vec<String> = operations.iter().filter(|o| o.unknown()).map(|o| format!("{} {:?}", o.kind, o.attempts.iter().map(|a| (a.server, a.status, a.epoch, a.body.to_string())).collect::<Vec<_>>())).collect();
    assert!(problems.is_empty() && unknowns.is_empty(), "{} problems:\n{}\n{} operations whose outcome stayed unknown:\n{}", problems.len(), problems.join("\n"), unknowns.len(), unknowns.join("\n"));
    assert!(acked.len() >= 1_000, "only {} operations acknowledged", acked.len());
    assert!(crossed > 0, "no retry crossed a takeover");
}
