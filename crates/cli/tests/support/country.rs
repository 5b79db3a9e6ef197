//! What the tests of a country of shards share: a shard's server, its books, and a resident's
//! wallet and transfers as the API shows them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Api, BIN, GATEWAY_TEST_KEY, OPERATOR_PASSWORD, PatroniCluster, Running, Target, free_ports};

/// One shard: its database, its key file (a copy of the country's), its server's ports; on a
/// Patroni cluster, that cluster (the database is its primary, whichever node that is).
pub(crate) struct Shard {
    pub(crate) number: u16,
    pub(crate) target: Target,
    pub(crate) port: u16,
    pub(crate) cluster_port: u16,
    pub(crate) log: PathBuf,
    pub(crate) patroni: Option<std::sync::Arc<PatroniCluster>>,
}

impl Shard {
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn api(&self) -> Api {
        Api { client: reqwest::Client::new(), base: self.base() }
    }

    pub(crate) fn spawn(&self, catalog: &str, crash_after: Option<&str>) -> Running {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{}", self.port), "--db", &self.target.db, "--keys"])
            .arg(&self.target.keys)
            .args(["--cluster-listen", &format!("127.0.0.1:{}", self.cluster_port), "--lease-ttl-ms", "1000"])
            .args(["--catalog", catalog, "--shard", &self.number.to_string()])
            .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
            .env("CITYPAY_OPERATOR_PASSWORD", OPERATOR_PASSWORD)
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap());
        if let Some(step) = crash_after {
            command.env("CITYPAY_TEST_CRASH_AFTER", step);
        }
        if let Some(cluster) = &self.patroni {
            command.args(["--etcd", &cluster.env["CITYPAY_ETCD"], "--patroni-scope", "/service/citypay"]);
        }
        Running(command.spawn().unwrap())
    }

    /// The database's URL now: on Patroni, its leader's.
    pub(crate) fn db_now(&self) -> String {
        match &self.patroni {
            Some(cluster) => cluster.url_of(&cluster.leader()),
            None => self.target.db.clone(),
        }
    }

    pub(crate) async fn is_writer(&self) -> bool {
        match reqwest::get(format!("{}/health", self.base())).await {
            Ok(response) => response.json::<Value>().await.is_ok_and(|health| health["role"] == "writer"),
            Err(_) => false,
        }
    }

    pub(crate) async fn wait_writer(&self) {
        let started = Instant::now();
        loop {
            if self.is_writer().await {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "shard {} has no writer", self.number);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `sql` on this shard's database (on a thread of its own: the synchronous client
    /// must not run on the test's runtime).
    pub(crate) fn query(&self, sql: &str) -> Vec<Vec<i64>> {
        let (url, sql) = (self.db_now(), sql.to_owned());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let rows = client.query(&sql, &[]).unwrap();
            rows.iter().map(|row| (0..row.len()).map(|i| row.get::<_, i64>(i)).collect()).collect()
        })
        .join()
        .unwrap()
    }

    /// The text column of `sql`'s rows.
    pub(crate) fn names(&self, sql: &'static str) -> Vec<String> {
        let url = self.db_now();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.query(sql, &[]).unwrap().iter().map(|row| row.get::<_, String>(0)).collect()
        })
        .join()
        .unwrap()
    }

    /// Σ credits − debits over every account (zero: the shard's books balance), what is
    /// pending, and the clearing account's net for `peer`.
    pub(crate) fn books(&self, peer: u16) -> (i64, i64, i64) {
        let total = self.query("SELECT COALESCE(SUM(credits_posted - debits_posted), 0)::BIGINT, COALESCE(SUM(debits_pending + credits_pending), 0)::BIGINT FROM accounts");
        let clearing: i64 = (6 << 56) | i64::from(peer);
        let rows = {
            let url = self.db_now();
            std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client.query_one("SELECT credits_posted - debits_posted FROM accounts WHERE id = $1", &[&clearing]).unwrap().get::<_, i64>(0)
            })
            .join()
            .unwrap()
        };
        (total[0][0], total[0][1], rows)
    }
}

pub(crate) fn country_command(args: &[&str]) {
    let output = Command::new(BIN).arg("country").args(args).output().unwrap();
    assert!(output.status.success(), "country {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

pub(crate) fn cny(amount: i64) -> Value {
    json!({"amount": amount, "currency": "CNY"})
}

pub(crate) async fn balance(api: &Api, resident: &str) -> (i64, i64) {
    let (_, wallet, _) = api.call("GET", "/v1/wallet", Some(resident), None, None).await;
    (wallet["balance"]["amount"].as_i64().unwrap(), wallet["available"]["amount"].as_i64().unwrap_or(-1))
}

/// The status of transfer `id` in `resident`'s list.
pub(crate) async fn listed(api: &Api, resident: &str, id: &str) -> Value {
    let (_, list, _) = api.call("GET", "/v1/transfers?limit=100", Some(resident), None, None).await;
    list["items"].as_array().unwrap().iter().find(|t| t["transfer_id"] == id).cloned().unwrap_or(Value::Null)
}

/// Waits until `resident`'s transfer `id` is no longer pending; answers its status.
pub(crate) async fn settled(api: &Api, resident: &str, id: &str) -> String {
    let started = Instant::now();
    loop {
        let line = listed(api, resident, id).await;
        if let Some(status) = line["status"].as_str().filter(|s| *s != "pending") {
            return status.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "transfer {id} stayed pending: {line}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn wait_exit(server: &mut Running) {
    let started = Instant::now();
    while server.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "the server did not stop where it was told to");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two shards and a catalog (`{prefix}_one`, `_two`, `_catalog`), sharing one key set:
/// Hangzhou placed on shard 1 and Fuzhou on shard 2, a platform operator on each. `None`
/// where PostgreSQL is not to be used.
pub(crate) fn two_shards(dir: &std::path::Path, prefix: &str) -> Option<([Shard; 2], String)> {
    let (Some(one), Some(two), Some(catalog)) = (
        Target::postgres(&dir.join("one"), &format!("{prefix}_one")),
        Target::postgres(&dir.join("two"), &format!("{prefix}_two")),
        Target::postgres(dir, &format!("{prefix}_catalog")),
    ) else {
        return None;
    };
    // One key set for the country; each shard's servers keep their own copy (and the journal's
    // seal head beside it).
    for sub in ["one", "two"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let made = Command::new(BIN).args(["keys", "new"]).arg(&one.keys).env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::copy(&one.keys, &two.keys).unwrap();
    let catalog = catalog.db;
    country_command(&["add-shard", "--catalog", &catalog, "--shard", "1", "--db", &one.db]);
    country_command(&["add-shard", "--catalog", &catalog, "--shard", "2", "--db", &two.db]);
    country_command(&["place-city", "--catalog", &catalog, "--city", "330100", "--shard", "1"]);
    country_command(&["place-city", "--catalog", &catalog, "--city", "350100", "--shard", "2"]);
    for target in [&one, &two] {
        super::admin(target, &["create-operator", "--username", "root", "--role", "platform"]);
    }
    let ports = free_ports(4);
    let shards = [
        Shard { number: 1, target: one, port: ports[0], cluster_port: ports[1], log: dir.join("one.log"), patroni: None },
        Shard { number: 2, target: two, port: ports[2], cluster_port: ports[3], log: dir.join("two.log"), patroni: None },
    ];
    Some((shards, catalog))
}

pub(crate) const DAUGHTER_ID: &str = "11010519491231002X";
pub(crate) const MOTHER_ID: &str = "350102195501010022";
pub(crate) const DAUGHTER_CARD: &str = "6222021234567890128";

/// The country's people: each shard's operator, a daughter in Hangzhou and her mother in
/// Fuzhou (their `Bearer` headers).
pub(crate) struct Family {
    pub(crate) operator_a: String,
    pub(crate) operator_b: String,
    pub(crate) daughter: String,
    pub(crate) mother: String,
}

/// Hangzhou onboarded through `a` (shard 1's server) and Fuzhou through `b` (shard 2's); the
/// daughter registered in Hangzhou through `a`, the mother in Fuzhou through `mother_via`;
/// both signed in; the daughter's card issued and `top_up` fen topped up from it.
pub(crate) async fn family(a: &Api, b: &Api, mother_via: &Api, top_up: i64) -> Family {
    let (operator_a, operator_b) = (a.operator().await, b.operator().await);
    for (api, operator, code, name) in [(a, &operator_a, 330100, "Hangzhou"), (b, &operator_b, 350100, "Fuzhou")] {
        let (status, city, _) = api.call("POST", "/v1/cities", Some(operator), Some(name), Some(json!({"code": code, "name": name}))).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{city}");
    }
    let register = |city: u32, name: &str, mobile: &str, id: &str| {
        json!({"city": city, "name": name, "mobile": mobile, "id_number": id, "password": "correct horse", "account_class": "I"})
    };
    let (status, body, _) = a.call("POST", "/v1/residents", None, Some("reg-d"), Some(register(330100, "李娜", "13800138000", DAUGHTER_ID))).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let (status, body, _) = mother_via.call("POST", "/v1/residents", None, Some("reg-m"), Some(register(350100, "王秀英", "13700137000", MOTHER_ID))).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let daughter = a.sign_in("13800138000", "correct horse").await;
    let mother = b.sign_in("13700137000", "correct horse").await;
    a.issue_card(&operator_a, DAUGHTER_CARD, "李娜", DAUGHTER_ID).await;
    a.top_up(&daughter, DAUGHTER_CARD, top_up).await;
    Family { operator_a, operator_b, daughter, mother }
}
