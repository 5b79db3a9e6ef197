//! What the end-to-end tests share: a city on disk, `citypay admin`, the real server on a
//! loopback port, and a small JSON client. Each test binary uses the parts it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_citypay");

/// A server process, killed when the test ends, passed or not (a frozen one is woken first).
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
pub(crate) mod country;

pub(crate) const OPERATOR_PASSWORD: &str = "operator secret";

/// A running `citypay serve`, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the city lives: a database URL and its key file.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) db: String,
    pub(crate) keys: PathBuf,
}

impl Target {
    /// A fresh embedded city in `dir`.
    pub(crate) fn sqlite(dir: &Path) -> Target {
        Target { db: dir.join("city.db").display().to_string(), keys: dir.join("keys") }
    }

    /// A fresh database on the PostgreSQL server in `CITYPAY_TEST_PG`, or `None` outside it
    /// (under `CI=true` a missing server fails instead).
    pub(crate) fn postgres(dir: &Path, name: &str) -> Option<Target> {
        let Ok(server) = std::env::var("CITYPAY_TEST_PG") else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CITYPAY_TEST_PG is not set and CI=true: run through scripts/with-postgres.sh");
            eprintln!("skipping: CITYPAY_TEST_PG not set (run through scripts/with-postgres.sh)");
            return None;
        };
        let name = format!("{name}_{}", std::process::id());
        let create = format!("CREATE DATABASE {name}");
        let admin_url = server.clone();
        // The synchronous client runs on its own thread: callers may be inside a runtime.
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
            client.batch_execute(&create).unwrap();
        })
        .join()
        .unwrap();
        let db = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("CITYPAY_TEST_PG has no database part: {server}"),
        };
        Some(Target { db, keys: dir.join("keys") })
    }

    /// `citypay` with `args` then `--db` and `--keys` of this city.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).args(["--db", &self.db, "--keys"]).arg(&self.keys).env("CITYPAY_OPERATOR_PASSWORD", OPERATOR_PASSWORD);
        command.env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim());
        command
    }

    /// `citypay audit` of this city succeeds.
    pub(crate) fn assert_audit_clean(&self) {
        let audit = self.command(&["audit"]).output().unwrap();
        assert!(audit.status.success(), "audit: {}{}", String::from_utf8_lossy(&audit.stdout), String::from_utf8_lossy(&audit.stderr));
    }
}

/// `citypay admin ARGS` on the city, which must succeed.
pub(crate) fn admin(target: &Target, args: &[&str]) {
    let mut full = vec!["admin"];
    full.extend_from_slice(args);
    let status = target.command(&full).status().unwrap();
    assert!(status.success(), "admin {args:?}");
}

pub(crate) fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports for servers a test starts. They are drawn below the kernel's
/// ephemeral ports (32768 up by default), from 20000 to 26999 (`scripts/city-cluster.sh`
/// takes 27000 up): a port of the ephemeral range, free when drawn, can be handed to an
/// outgoing connection (the test's, or another server's, to PostgreSQL) before the server
/// meant for it binds it, and that server then fails to start. Each process starts at an
/// offset of its own and never draws a port twice; a port in use is skipped.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    static DRAWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 7_000;
    let offset = std::process::id().wrapping_mul(97) % COUNT;
    let mut found = Vec::new();
    while found.len() < n {
        let k = DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(k < COUNT, "no free port left for the test's servers");
        let port = u16::try_from(FIRST + (offset + k) % COUNT).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            found.push(port);
        }
    }
    found
}

pub(crate) async fn start(target: &Target, log: &Path) -> Server {
    start_with(target, log, &[]).await
}

/// The gateway's platform key every test server signs with (made once with `openssl genpkey`,
/// so servers need not make one each), as base64 PKCS#8.
pub(crate) const GATEWAY_TEST_KEY: &str = include_str!("../../../gateway/tests/test-key.pk8.b64");

/// Starts `citypay serve` with extra environment variables and waits for `/health`. Test
/// servers may notify loopback addresses and sign gateway answers with [`GATEWAY_TEST_KEY`]
/// unless `env` says otherwise.
pub(crate) async fn start_with(target: &Target, log: &Path, env: &[(&str, &Path)]) -> Server {
    start_at(target, log, free_port(), env).await
}

/// [`start_with`] on a given port of 127.0.0.1.
pub(crate) async fn start_at(target: &Target, log: &Path, port: u16, env: &[(&str, &Path)]) -> Server {
    let child = Command::new(BIN)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--db", &target.db, "--keys"])
        .arg(&target.keys)
        .env("CITYPAY_ALLOW_PRIVATE_NOTIFY", "1")
        .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let base = if port == 80 { "http://127.0.0.1".to_owned() } else { format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/health")).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

/// A JSON client of one server.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) base: String,
}

impl Api {
    pub(crate) fn new(server: &Server) -> Api {
        Api { client: Client::new(), base: server.base.clone() }
    }

    /// One call: `(status, JSON body or Null, whether it was an idempotent replay)`.
    pub(crate) async fn call(&self, method: &str, path: &str, auth: Option<&str>, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value, bool) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            "PUT" => self.client.put(url),
            "PATCH" => self.client.patch(url),
            _ => self.client.post(url),
        };
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, value, replayed)
    }

    /// One call with any headers (a cookie, an `Origin`): `(status, JSON body or Null)`.
    pub(crate) async fn call_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// The error code of a body, or "" when it has none.
    pub(crate) fn code(body: &Value) -> &str {
        body["error"]["code"].as_str().unwrap_or("")
    }

    /// Signs in the operator `root` (see [`City::start`]) and returns its `Bearer` header.
    pub(crate) async fn operator(&self) -> String {
        let (status, session, _) = self.call("POST", "/v1/operator-sessions", None, None, Some(json!({"username": "root", "password": OPERATOR_PASSWORD}))).await;
        assert_eq!(status, StatusCode::OK, "{session}");
        format!("Bearer {}", session["token"].as_str().unwrap())
    }

    /// Onboards a merchant of `category` in Hangzhou and returns (its record, its `ApiKey` header).
    pub(crate) async fn merchant(&self, operator: &str, uscc: &str, category: &str, notify_url: Option<&str>) -> (Value, String) {
        let mcc = match category {
            "hospital" => "8062",
            "school" => "8211",
            "transit" => "4111",
            "social_security" => "9311",
            "utility" => "4900",
            _ => "5812",
        };
        let body = json!({"city": 330100, "name": format!("Merchant {uscc}"), "uscc": uscc, "mcc": mcc, "category": category,
                          "settlement_account": "6222020200112233446", "notify_url": notify_url});
        let (status, merchant, _) = self.call("POST", "/v1/merchants", Some(operator), None, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{merchant}");
        let key = format!("ApiKey {}:{}", merchant["api_key_id"].as_str().unwrap(), merchant["api_key_secret"].as_str().unwrap());
        (merchant, key)
    }

    /// Registers a resident of Hangzhou and signs them in; returns their `Bearer` header.
    pub(crate) async fn resident(&self, name: &str, mobile: &str, id_number: &str, password: &str) -> String {
        let body = json!({"city": 330100, "name": name, "mobile": mobile, "id_number": id_number, "password": password, "account_class": "I"});
        let (status, me, _) = self.call("POST", "/v1/residents", None, Some(&format!("reg-{mobile}")), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{me}");
        self.sign_in(mobile, password).await
    }

    /// Signs a resident in; returns their `Bearer` header.
    pub(crate) async fn sign_in(&self, mobile: &str, password: &str) -> String {
        let (status, session, _) = self.call("POST", "/v1/sessions", None, None, Some(json!({"mobile": mobile, "password": password}))).await;
        assert_eq!(status, StatusCode::OK, "{session}");
        format!("Bearer {}", session["token"].as_str().unwrap())
    }
}

/// A city with Hangzhou onboarded and the platform operator `root`, its server running.
pub(crate) struct City {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) target: Target,
    pub(crate) server: Server,
    pub(crate) api: Api,
    pub(crate) log: PathBuf,
}

impl City {
    /// A fresh embedded city and its server.
    pub(crate) async fn start() -> City {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::sqlite(dir.path());
        City::start_on(dir, target).await
    }

    /// A fresh city on `target` (in `dir`) and its server.
    pub(crate) async fn start_on(dir: tempfile::TempDir, target: Target) -> City {
        admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
        admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
        let log = dir.path().join("serve.log");
        let server = start(&target, &log).await;
        let api = Api::new(&server);
        City { dir, target, server, api, log }
    }

    /// Stops the server, then checks the books and that the log holds none of `secrets`.
    pub(crate) fn finish(self, secrets: &[&str]) {
        let City { dir, target, server, log, .. } = self;
        drop(server);
        target.assert_audit_clean();
        let found = secrets_in_log(&log, secrets);
        assert!(found.is_empty(), "the log holds secrets: numbers {found:?} of the {} checked", secrets.len());
        drop(dir);
    }
}

pub(crate) fn hmac_hex(key: &str, message: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex to bytes (the API gives secrets in hex).
pub(crate) fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap()).collect()
}

/// The current payment code of an enrolled device (`POST /v1/payment-devices`'s answer).
pub(crate) fn payment_code(device: &Value) -> String {
    let secret = unhex(device["secret"].as_str().unwrap());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    citypay_codes::payment_code::PaymentCode::generate(u32::try_from(device["device"].as_u64().unwrap()).unwrap(), &secret, now).to_string()
}

impl Api {
    /// Has the sandbox bank issue `card` to `name` and `id_number` (a platform operator fills
    /// its register), so that resident can link it.
    pub(crate) async fn issue_card(&self, operator: &str, card: &str, name: &str, id_number: &str) {
        let body = json!({"card_number": card, "name": name, "id_number": id_number});
        let (status, issued, _) = self.call("POST", "/v1/sandbox-bank/card-holders", Some(operator), Some(&format!("issue-{card}")), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
    }

    /// Links `card` to a resident's wallet and tops it up by `amount` fen.
    pub(crate) async fn top_up(&self, resident: &str, card: &str, amount: i64) {
        let (status, linked, _) = self.call("POST", "/v1/wallet/cards", Some(resident), Some(&format!("card-{card}")), Some(json!({"card_number": card}))).await;
        assert_eq!(status, StatusCode::CREATED, "{linked}");
        let top_up = json!({"card_id": linked["card_id"], "amount": {"amount": amount, "currency": "CNY"}});
        let (status, wallet, _) = self.call("POST", "/v1/wallet/top-ups", Some(resident), Some(&format!("top-up-{card}-{amount}")), Some(top_up)).await;
        assert_eq!(status, StatusCode::CREATED, "{wallet}");
    }
}

/// Runs SQL on the city's embedded database beside its running server, for what a test cannot
/// wait for (a validator installed days ago). The server reads those rows afresh each time.
pub(crate) fn sqlite_execute(target: &Target, sql: &str) {
    let connection = rusqlite::Connection::open(&target.db).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    connection.execute_batch(sql).unwrap();
}

/// A validator's signed call: `Authorization: Validator <id>:<time>:<signature>` over
/// `"<METHOD> <path>\n<time>\n<body>"` with its device key.
pub(crate) fn validator_authorization(device: &citypay_ride::DeviceKey, id: u32, method: &str, path: &str, time: u64, body: &str) -> String {
    let signature = device.sign(format!("{method} {path}\n{time}\n{body}").as_bytes());
    format!("Validator {id}:{time}:{}", citypay_vault::hex::encode(&signature))
}

/// A signed call as an SDK makes it (everything in the query string, as python-alipay-sdk
/// sends it); answers the object under `<method>_response`, after checking the answer's
/// signature against the platform key.
pub(crate) async fn signed_call(base: &str, app_id: &str, key: &citypay_gateway::PlatformKey, params: &[(&str, &str)]) -> Value {
    let mut all: Vec<(&str, String)> = vec![("app_id", app_id.to_owned()), ("charset", "utf-8".into()), ("sign_type", "RSA2".into()), ("version", "1.0".into())];
    let now = citypay_ledger::Timestamp::from_unix_seconds(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    all.push(("timestamp", now.local_date_time()));
    for (k, v) in params {
        all.retain(|(key, _)| key != k);
        all.push((k, (*v).to_owned()));
    }
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &all {
        form.append_pair(k, v);
    }
    let query = form.finish();
    let request = citypay_gateway::Request::parse(query.as_bytes(), b"");
    let mut query = query;
    if !params.iter().any(|(k, _)| *k == "sign") {
        query.push_str(&format!("&sign={}", urlencode(&key.sign(request.sign_content().as_bytes()))));
    }
    let response = reqwest::get(format!("{base}/gateway.do?{query}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let method = params.iter().find(|(k, _)| *k == "method").map(|(_, v)| v.replace('.', "_")).unwrap_or_else(|| "error".into());
    let prefix = format!("{{\"{method}_response\":");
    assert!(text.starts_with(&prefix), "{text}");
    let sign_at = text.rfind(",\"sign\":\"").unwrap();
    let platform = citypay_gateway::PlatformKey::from_pkcs8(1, &base64_decode(GATEWAY_TEST_KEY)).unwrap();
    assert!(platform.public().verify(&text.as_bytes()[prefix.len()..sign_at], &text[sign_at + 9..text.len() - 2]), "unsigned: {text}");
    serde_json::from_str::<Value>(&text).unwrap()[format!("{method}_response")].clone()
}

pub(crate) fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub(crate) fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap()
}

/// Which of `secrets` the log file holds, as their places in `secrets` (never the secrets
/// themselves: the answer is printed). The one check of logs for secrets: [`City::finish`]
/// asserts that it finds none.
pub(crate) fn secrets_in_log(log: &Path, secrets: &[&str]) -> Vec<usize> {
    let logs = std::fs::read_to_string(log).unwrap();
    secrets.iter().enumerate().filter(|(_, secret)| !secret.is_empty() && logs.contains(*secret)).map(|(i, _)| i).collect()
}

/// A valid Unified Social Credit Code of Hangzhou with this 8-character organisation code.
pub(crate) fn uscc(organization: &str) -> String {
    let check = citypay_identity::uscc::organization_check_character(organization).unwrap();
    let body = format!("91330100{organization}{check}");
    format!("{body}{}", citypay_identity::uscc::check_character(&body).unwrap())
}

/// A test certificate authority and a server certificate it issued for `host`, written as PEM
/// files in `dir`: `(CA certificate PEM, server certificate path, server key path)`.
pub(crate) fn test_certificates(dir: &Path, host: &str) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "citypay test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&server_key, &issuer).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, server.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    // What Chromium's --ignore-certificate-errors-spki-list names: base64 SHA-256 of the key.
    use base64::Engine;
    use sha2::Digest;
    let spki = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&server_key)));
    std::fs::write(dir.join("server.spki"), spki).unwrap();
    (ca.pem(), cert, key)
}

/// A client of a server that answers HTTPS at `host` (a name that is not localhost) on
/// 127.0.0.1: the certificate is checked against the test CA alone and must name `host`, and
/// every request carries `Host: host:port`, as a browser's would.
pub(crate) struct HttpsApi {
    client: hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, http_body_util::Full<hyper::body::Bytes>>,
    /// `https://127.0.0.1:port`.
    pub(crate) base: String,
    /// `host:port`.
    pub(crate) authority: String,
}

impl HttpsApi {
    pub(crate) fn new(ca_pem: &str, host: &str, port: u16) -> HttpsApi {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        HttpsApi { client, base: format!("https://127.0.0.1:{port}"), authority: format!("{host}:{port}") }
    }

    /// One call with `headers`: (status, answer headers, JSON body or Null).
    pub(crate) async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Result<(StatusCode, reqwest::header::HeaderMap, Value), String> {
        let mut request = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base)).header("host", &self.authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                serde_json::to_vec(&body).unwrap()
            }
            None => Vec::new(),
        };
        let response = self.client.request(request.body(http_body_util::Full::new(hyper::body::Bytes::from(bytes))).unwrap()).await.map_err(|e| format!("{e:?}"))?;
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let mut answer_headers = reqwest::header::HeaderMap::new();
        for (name, value) in response.headers() {
            answer_headers.append(reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(), reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap());
        }
        let collected = http_body_util::BodyExt::collect(response.into_body()).await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, answer_headers, serde_json::from_slice(&collected).unwrap_or(Value::Null)))
    }
}

/// `citypay serve` over HTTPS on 127.0.0.1:`port` with `cert` and `key`, once `/health` answers
/// through `api`.
pub(crate) async fn start_https(target: &Target, log: &Path, cert: &Path, key: &Path, api: &HttpsApi, port: u16) -> Server {
    let child = Command::new(BIN)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--db", &target.db, "--keys"])
        .arg(&target.keys)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.send("GET", "/health", &[], None).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start over HTTPS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base: api.base.clone() }
}

const CITY_CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/city-cluster.sh");

/// Whether `program` is on the path.
pub(crate) fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `scripts/city-cluster.sh ARGS`, which must succeed; answers its standard output.
pub(crate) fn city_cluster(args: &[&str]) -> String {
    let output = Command::new("bash").arg(CITY_CLUSTER).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "city-cluster {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A Patroni cluster of three PostgreSQL nodes and etcd (`scripts/city-cluster.sh`), stopped
/// (with the servers recorded in its pids) however the test ends.
pub(crate) struct PatroniCluster {
    pub(crate) dir: PathBuf,
    pub(crate) env: std::collections::HashMap<String, String>,
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(CITY_CLUSTER).arg("stop").arg(&self.dir).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl PatroniCluster {
    /// Starts one in `dir` (`options`: `--fast`, `--netns`), waiting until it is healthy.
    pub(crate) fn start(dir: &Path, options: &[&str]) -> PatroniCluster {
        let mut args = vec!["start", dir.to_str().unwrap()];
        args.extend_from_slice(options);
        city_cluster(&args);
        // The environment file's `export` lines, as a map.
        let text = std::fs::read_to_string(dir.join("cluster.env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(|c| c == '\'' || c == '"').to_owned()))
            .collect();
        PatroniCluster { dir: dir.to_owned(), env }
    }

    /// The URL of the database on the node named `name`.
    pub(crate) fn url_of(&self, name: &str) -> String {
        let names: Vec<&str> = self.env["CITYPAY_PATRONI_NAMES"].split(',').collect();
        let nodes: Vec<&str> = self.env["CITYPAY_PG_NODES"].split(',').collect();
        let node = nodes[names.iter().position(|n| *n == name).unwrap()];
        self.env["CITYPAY_PG_URL_TEMPLATE"].replace("{node}", node)
    }

    /// The database URL that stands for whichever node leads (its host is replaced).
    pub(crate) fn template(&self) -> String {
        self.env["CITYPAY_PG_URL_TEMPLATE"].replace("{node}", "leader")
    }

    /// The leader's name.
    pub(crate) fn leader(&self) -> String {
        city_cluster(&["leader", self.dir.to_str().unwrap()]).split_whitespace().next().unwrap().to_owned()
    }

    /// `citypay ARGS` on the current primary.
    pub(crate) fn citypay(&self, keys: &Path, args: &[&str]) -> std::process::Output {
        let url = self.url_of(&self.leader());
        Command::new(BIN)
            .args(args)
            .args(["--db", &url, "--keys"])
            .arg(keys)
            .env("CITYPAY_OPERATOR_PASSWORD", OPERATOR_PASSWORD)
            .env("CITYPAY_GATEWAY_KEY", GATEWAY_TEST_KEY.trim())
            .output()
            .unwrap()
    }
}
