//! `/gateway.do` through merchants' real Alipay SDKs, installed from the registries by
//! `scripts/gateway-sdks.sh` (PyPI python-alipay-sdk 3.4.0 and alipay-sdk-python 3.7.1411, npm
//! alipay-sdk 4.14.0 with `validateSign: true`), each driven one operation per run by its
//! client in `tests/gateway_sdks/`. The official Python SDK cannot use a URL with a port, so
//! the city's server listens on 127.0.0.1:80 (CI runs as root). Also: requests signed here
//! byte by byte, for the protocol's refusals; notifications kept off private addresses.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, City, Target, admin, payment_code, signed_call, start_at, uscc};

const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "4111111111111111";

/// Where the SDKs are, or why the test cannot run (a failure under CI, a skip elsewhere).
fn sdks() -> Option<PathBuf> {
    let dir = std::env::var_os("CITYPAY_GATEWAY_SDKS").map(PathBuf::from);
    match dir.filter(|d| d.join("node/node_modules/alipay-sdk").exists() && d.join("fzlee/bin/python").exists() && d.join("official/bin/python").exists()) {
        Some(dir) => Some(dir),
        None if std::env::var_os("CI").is_some() => panic!("CITYPAY_GATEWAY_SDKS has no SDKs: run scripts/gateway-sdks.sh"),
        None => {
            eprintln!("skipped: the merchant SDKs are not installed (scripts/gateway-sdks.sh, then CITYPAY_GATEWAY_SDKS)");
            None
        }
    }
}

/// An RSA key pair made with `openssl`: (PKCS#1 private PEM, as the SDKs take it; SPKI
/// public PEM; the pair, to sign with here).
fn rsa_key(dir: &Path, name: &str) -> (String, String, citypay_gateway::PlatformKey) {
    let pem = dir.join(format!("{name}.pem"));
    let run = |args: &[&str]| {
        let output = Command::new("openssl").args(args).output().unwrap();
        assert!(output.status.success(), "openssl {args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    std::fs::write(&pem, run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])).unwrap();
    let pem = pem.to_str().unwrap();
    let pkcs1 = run(&["rsa", "-in", pem, "-traditional"]);
    let public = run(&["pkey", "-in", pem, "-pubout"]);
    use base64::Engine;
    let pkcs8: String = std::fs::read_to_string(pem).unwrap().lines().filter(|l| !l.starts_with("-----")).collect();
    let pair = citypay_gateway::PlatformKey::from_pkcs8(1, &base64::engine::general_purpose::STANDARD.decode(pkcs8).unwrap()).unwrap();
    (pkcs1, public, pair)
}

/// One SDK and what it is configured with.
struct Sdk {
    name: &'static str,
    program: Vec<PathBuf>,
    sdks: PathBuf,
}

impl Sdk {
    fn new(sdks: &Path, name: &'static str) -> Sdk {
        let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_sdks");
        let program = match name {
            "fzlee" => vec![sdks.join("fzlee/bin/python"), clients.join("fzlee_client.py")],
            "official" => vec![sdks.join("official/bin/python"), clients.join("official_client.py")],
            _ => vec![PathBuf::from("node"), clients.join("node_client.mjs")],
        };
        Sdk { name, program, sdks: sdks.to_owned() }
    }

    /// Runs one operation; the client's JSON answer.
    fn run(&self, request: &Value) -> Value {
        let mut child = Command::new(&self.program[0])
            .args(&self.program[1..])
            .env("CITYPAY_GATEWAY_SDKS", &self.sdks)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{} client failed: {stdout}{}", self.name, String::from_utf8_lossy(&output.stderr));
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| panic!("{}: {stdout}", self.name))
    }

    /// A field of an answer: Node's SDK camelCases them (`sub_code` → `subCode`).
    fn field<'a>(&self, response: &'a Value, snake: &str) -> &'a Value {
        if self.name != "node" {
            return &response[snake];
        }
        let mut camel = String::new();
        let mut upper = false;
        for c in snake.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                camel.push(c.to_ascii_uppercase());
                upper = false;
            } else {
                camel.push(c);
            }
        }
        &response[camel]
    }
}

/// Records notification posts and answers `success`.
#[derive(Clone, Default)]
struct Receiver {
    forms: Arc<Mutex<Vec<String>>>,
}

/// Reads one HTTP/1.1 request: (head, body).
fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buffer).ok()?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buffer[..n]);
            }
            return Some((head, data[end + 4..].to_vec()));
        }
    }
}

impl Receiver {
    fn start() -> (Receiver, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/notify", listener.local_addr().unwrap().port());
        let receiver = Receiver::default();
        let forms = receiver.forms.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some((_, body)) = read_request(&mut stream) {
                    forms.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nsuccess");
                }
            }
        });
        (receiver, url)
    }

    /// The first notification whose form holds all of `needles`, waiting up to 15 s.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(form) = self.forms.lock().unwrap().iter().find(|f| needles.iter().all(|n| f.contains(n))) {
                return form.clone();
            }
            assert!(Instant::now() < deadline, "no notification with {needles:?}: {:?}", self.forms.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A proxy to the gateway that changes one byte of each answer's body after the server
/// signed it (`"code":"10000"` becomes `"code":"10001"`). On 127.0.0.2:80 when it can bind
/// there: the official Python SDK fails before sending anything to a URL with a port.
fn tampering_proxy(upstream: &str) -> String {
    let (listener, url) = match TcpListener::bind("127.0.0.2:80") {
        Ok(listener) => (listener, "http://127.0.0.2/gateway.do".to_owned()),
        Err(_) => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://127.0.0.1:{}/gateway.do", listener.local_addr().unwrap().port());
            (listener, url)
        }
    };
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let upstream = if upstream.contains(':') { upstream } else { format!("{upstream}:80") };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((head, body)) = read_request(&mut stream) else { continue };
            let mut server = std::net::TcpStream::connect(&upstream).unwrap();
            let head = head.lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect::<Vec<_>>().join("\r\n");
            server.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
            server.write_all(&body).unwrap();
            let mut answer = Vec::new();
            server.read_to_end(&mut answer).unwrap();
            let text = String::from_utf8_lossy(&answer).replace("\"code\":\"10000\"", "\"code\":\"10001\"");
            let _ = stream.write_all(text.as_bytes());
        }
    });
    url
}

/// The city's server on port 80 when it is free (the official SDK needs it), else another.
async fn city_on_port_80() -> (City, bool) {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let log = dir.path().join("serve.log");
    let on_80 = std::net::TcpListener::bind("127.0.0.1:80").is_ok();
    let server = start_at(&target, &log, if on_80 { 80 } else { support::free_port() }, &[]).await;
    let api = Api::new(&server);
    (City { dir, target, server, api, log }, on_80)
}

#[tokio::test(flavor = "multi_thread")]
async fn merchants_unchanged_sdk_code_takes_and_refunds_payments() {
    let Some(sdks) = sdks() else { return };
    let (city, on_80) = city_on_port_80().await;
    let api = &city.api;
    let operator = api.operator().await;
    let (_, merchant) = api.merchant(&operator, "91350100M000100Y43", "restaurant", None).await;
    let resident = api.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    api.issue_card(&operator, CARD, "Li Lei", ID_NUMBER).await;
    api.top_up(&resident, CARD, 100_000).await;

    let (app_private, app_public, _) = rsa_key(city.dir.path(), "app");
    let (stranger_private, _, _) = rsa_key(city.dir.path(), "stranger");
    let (receiver, notify_url) = Receiver::start();
    let (status, app, _) = api.call("POST", "/v1/gateway/apps", Some(&merchant), None, Some(json!({"public_key": app_public, "notify_url": notify_url}))).await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app_id = app["app_id"].as_str().unwrap().to_owned();
    let platform_public = app["platform_public_key"].as_str().unwrap().to_owned();
    let gateway = format!("{}/gateway.do", city.server.base);
    let tampering = tampering_proxy(&city.server.base);

    let mut names = vec!["fzlee", "node"];
    if on_80 {
        names.push("official");
    } else {
        assert!(std::env::var_os("CI").is_none(), "port 80 is taken: the official SDK cannot be tested");
        eprintln!("port 80 is taken: the official Python SDK (which cannot use another port) is skipped");
    }
    for name in names {
        let sdk = Sdk::new(&sdks, name);
        // A phone of its own: a code works once per 30-second step of its device.
        let (status, device, _) = api.call("POST", "/v1/payment-devices", Some(&resident), None, None).await;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        let config = |gateway: &str, private: &str, app_id: &str| json!({"gateway": gateway, "app_id": app_id, "app_private_key": private, "platform_public_key": platform_public});
        let call = |method: &str, biz: Value| {
            let mut request = config(&gateway, &app_private, &app_id);
            request["op"] = json!("call");
            request["method"] = json!(method);
            request["biz"] = biz;
            let answer = sdk.run(&request);
            assert_eq!(answer["ok"], true, "{name} {method}: {answer}");
            answer["response"].clone()
        };
        let code = |r: &Value| sdk.field(r, "code").as_str().unwrap_or_default().to_owned();
        let sub_code = |r: &Value| sdk.field(r, "sub_code").as_str().unwrap_or_default().to_owned();

        // A QR order, paid by the resident's app.
        let qr_order = format!("{name}_qr_1");
        let created = call("alipay.trade.precreate", json!({"out_trade_no": qr_order, "total_amount": "88.88", "subject": "咖啡 {大杯}"}));
        assert_eq!(code(&created), "10000", "{name}: {created}");
        let qr = sdk.field(&created, "qr_code").as_str().unwrap().to_owned();
        let (status, paid, _) = api.call("POST", "/v1/payments/qr", Some(&resident), Some(&format!("pay-{qr_order}")), Some(json!({"payload": qr}))).await;
        assert_eq!(status, StatusCode::OK, "{paid}");
        let queried = call("alipay.trade.query", json!({"out_trade_no": qr_order}));
        assert_eq!(sdk.field(&queried, "trade_status"), "TRADE_SUCCESS", "{name}: {queried}");
        assert_eq!(sdk.field(&queried, "total_amount"), "88.88");
        // The same trade through the JSON API.
        let (_, trade, _) = api.call("GET", &format!("/v1/trades/{qr_order}"), Some(&merchant), None, None).await;
        assert_eq!(trade["status"], "TRADE_SUCCESS");

        // A payment code at the till; the amount as a number.
        let code_order = format!("{name}_code_1");
        // One code for both calls: computed again it may fall in the next 30-second step, a
        // new code that would rightly pay.
        let auth_code = payment_code(&device);
        let charged = call("alipay.trade.pay", json!({"out_trade_no": code_order, "scene": "bar_code", "auth_code": auth_code, "subject": "noodles", "total_amount": 20}));
        assert_eq!(code(&charged), "10000", "{name}: {charged}");
        assert_eq!(sdk.field(&charged, "total_amount"), "20.00");
        // The same code again is refused as used.
        let again = call("alipay.trade.pay", json!({"out_trade_no": format!("{name}_code_2"), "scene": "bar_code", "auth_code": auth_code, "subject": "noodles", "total_amount": "1.00"}));
        assert_eq!((code(&again).as_str(), sub_code(&again).as_str()), ("40004", "ACQ.PAYMENT_AUTH_CODE_INVALID"), "{name}: {again}");

        // Two partial refunds, a repeat, a repeat with another amount, too much.
        let refund = |no: &str, amount: &str| call("alipay.trade.refund", json!({"out_trade_no": qr_order, "refund_amount": amount, "out_request_no": no}));
        let first = refund("r1", "10.00");
        assert_eq!((code(&first).as_str(), sdk.field(&first, "fund_change").as_str(), sdk.field(&first, "refund_fee").as_str()), ("10000", Some("Y"), Some("10.00")), "{name}: {first}");
        let second = refund("r2", "5.50");
        assert_eq!(sdk.field(&second, "refund_fee"), "15.50", "{name}: {second}");
        let repeat = refund("r1", "10.00");
        assert_eq!((sdk.field(&repeat, "fund_change").as_str(), sdk.field(&repeat, "refund_fee").as_str()), (Some("N"), Some("15.50")), "{name}: {repeat}");
        assert_eq!(sub_code(&refund("r1", "11.00")), "ACQ.DISCORDANT_REPEAT_REQUEST");
        assert_eq!(sub_code(&refund("r3", "80.00")), "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL");
        let refund_query = call("alipay.trade.fastpay.refund.query", json!({"out_trade_no": qr_order, "out_request_no": "r2"}));
        assert_eq!(sdk.field(&refund_query, "refund_amount"), "5.50", "{name}: {refund_query}");

        // Close an unpaid order; cancel the paid one (refunded in full).
        let unpaid = format!("{name}_qr_2");
        assert_eq!(code(&call("alipay.trade.precreate", json!({"out_trade_no": unpaid, "total_amount": 1.5, "subject": "tea"}))), "10000");
        assert_eq!(code(&call("alipay.trade.close", json!({"out_trade_no": unpaid}))), "10000");
        assert_eq!(sdk.field(&call("alipay.trade.query", json!({"out_trade_no": unpaid})), "trade_status"), "TRADE_CLOSED");
        let cancelled = call("alipay.trade.cancel", json!({"out_trade_no": code_order}));
        assert_eq!((code(&cancelled).as_str(), sdk.field(&cancelled, "action").as_str()), ("10000", Some("refund")), "{name}: {cancelled}");
        assert_eq!(sdk.field(&call("alipay.trade.query", json!({"out_trade_no": code_order})), "trade_status"), "TRADE_CLOSED");

        // A request signed with a key the app does not have; an app that does not exist.
        let mut stranger = config(&gateway, &stranger_private, &app_id);
        stranger["op"] = json!("call");
        stranger["method"] = json!("alipay.trade.query");
        stranger["biz"] = json!({"out_trade_no": qr_order});
        let refused = sdk.run(&stranger);
        assert_eq!(sub_code(&refused["response"]), "isv.invalid-signature", "{name}: {refused}");
        let mut unknown = config(&gateway, &app_private, "2021000000000001");
        unknown["op"] = json!("call");
        unknown["method"] = json!("alipay.trade.query");
        unknown["biz"] = json!({"out_trade_no": qr_order});
        assert_eq!(sub_code(&sdk.run(&unknown)["response"]), "isv.invalid-app-id", "{name}");

        // An answer changed on the way is rejected by the SDK itself.
        let mut tampered = config(&tampering, &app_private, &app_id);
        tampered["op"] = json!("call");
        tampered["method"] = json!("alipay.trade.query");
        tampered["biz"] = json!({"out_trade_no": qr_order});
        let answer = sdk.run(&tampered);
        assert_eq!(answer["ok"], false, "{name} took a tampered answer: {answer}");
        // Refused for its signature, not for failing to connect.
        assert_ne!(answer["error"], "TypeError", "{name}: {answer}");

        // The notification of the QR payment, checked with the SDK's own verify function; the
        // same with one field changed fails.
        let form = receiver.wait_for(&[&format!("out_trade_no={qr_order}"), "trade_status=TRADE_SUCCESS"]);
        let mut verify = config(&gateway, &app_private, &app_id);
        verify["op"] = json!("verify_notification");
        verify["form"] = json!(form);
        let checked = sdk.run(&verify);
        assert_eq!(checked["verified"], true, "{name}: {checked}");
        assert_eq!(checked["fields"]["total_amount"], "88.88");
        verify["form"] = json!(form.replace("total_amount=88.88", "total_amount=8.88"));
        assert_eq!(sdk.run(&verify)["verified"], false, "{name} verified a changed notification");
    }
    city.finish(&[ID_NUMBER, CARD]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_refuses_as_alipay_does_and_never_calls_private_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let log = dir.path().join("serve.log");
    // As in production: notifications to private addresses are refused.
    let server = start_at(&target, &log, support::free_port(), &[("CITYPAY_ALLOW_PRIVATE_NOTIFY", Path::new("0"))]).await;
    let api = Api::new(&server);
    let operator = api.operator().await;
    let (shop, merchant) = api.merchant(&operator, "91350100M000100Y43", "restaurant", None).await;
    let (_, app_public, app_key) = rsa_key(dir.path(), "app");

    // Patroni's switchover endpoint on the same machine is not a notification URL.
    let switchover = "http://127.0.0.1:8008/switchover";
    let (status, refused, _) = api.call("POST", "/v1/gateway/apps", Some(&merchant), None, Some(json!({"public_key": app_public, "notify_url": switchover}))).await;
    assert_eq!((status, Api::code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_notify_url"), "{refused}");
    let (status, short, _) = api.call("POST", "/v1/gateway/apps", Some(&merchant), None, Some(json!({"public_key": include_str!("../../gateway/tests/rsa1024.pub.pem")}))).await;
    assert_eq!((status, Api::code(&short)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_public_key"), "{short}");
    let (status, app, _) = api.call("POST", "/v1/gateway/apps", Some(&merchant), None, Some(json!({"public_key": app_public}))).await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app_id = app["app_id"].as_str().unwrap().to_owned();
    assert_eq!(app_id.len(), 16);
    let base = &server.base;
    let call = |params: Vec<(&'static str, String)>| {
        let app_id = app_id.clone();
        let key = &app_key;
        async move {
            let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            signed_call(base, &app_id, key, &borrowed).await
        }
    };
    let precreate = |biz: Value| vec![("method", "alipay.trade.precreate".to_owned()), ("biz_content", biz.to_string())];

    let sub = |r: &Value| (r["code"].as_str().unwrap_or_default().to_owned(), r["sub_code"].as_str().unwrap_or_default().to_owned());
    // A notify_url naming a private address.
    let mut params = precreate(json!({"out_trade_no": "p1", "total_amount": "1.00", "subject": "tea"}));
    params.push(("notify_url", switchover.to_owned()));
    assert_eq!(sub(&call(params).await), ("40004".into(), "ACQ.INVALID_PARAMETER".into()));
    // Amounts with 3 decimals, or a float's noise; biz_content that is not JSON.
    assert_eq!(sub(&call(precreate(json!({"out_trade_no": "p1", "total_amount": "1.001", "subject": "tea"}))).await).1, "ACQ.INVALID_PARAMETER");
    assert_eq!(sub(&call(precreate(json!({"out_trade_no": "p1", "total_amount": 0.30000000000000004, "subject": "tea"}))).await).1, "ACQ.INVALID_PARAMETER");
    assert_eq!(sub(&call(vec![("method", "alipay.trade.precreate".into()), ("biz_content", "{not json".into())]).await).1, "ACQ.INVALID_PARAMETER");
    // Methods not served, alipay.trade.create among them.
    assert_eq!(sub(&call(vec![("method", "alipay.trade.create".into()), ("biz_content", "{}".into())]).await), ("40002".into(), "isv.invalid-method".into()));
    // Protocol errors: no signature, another signature type, a bad signature, a stale time.
    assert_eq!(sub(&call(vec![("method", "alipay.trade.query".into()), ("sign", String::new())]).await), ("40001".into(), "isv.missing-signature".into()));
    assert_eq!(sub(&call(vec![("method", "alipay.trade.query".into()), ("sign_type", "RSA".into())]).await), ("40002".into(), "isv.invalid-signature-type".into()));
    assert_eq!(sub(&call(vec![("method", "alipay.trade.query".into()), ("sign", "AAAA".into())]).await), ("40002".into(), "isv.invalid-signature".into()));
    assert_eq!(sub(&call(vec![("method", "alipay.trade.query".into()), ("timestamp", "2020-01-01 00:00:00".into())]).await), ("40002".into(), "isv.invalid-timestamp".into()));
    // The machine's local time in UTC, 8 hours behind Beijing, as Python and Node SDKs stamp it.
    let utc = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        citypay_ledger::Timestamp::from_unix_seconds(now - 8 * 3600).local_date_time()
    };
    let mut params = precreate(json!({"out_trade_no": "p2", "total_amount": "1.00", "subject": "tea"}));
    params.push(("timestamp", utc));
    assert_eq!(sub(&call(params).await).0, "10000");
    // A trade of the JSON API answers through the gateway and the other way round.
    assert_eq!(call(vec![("method", "alipay.trade.query".into()), ("biz_content", json!({"out_trade_no": "p2"}).to_string())]).await["trade_status"], "WAIT_BUYER_PAY");
    let (_, trade, _) = api.call("GET", "/v1/trades/p2", Some(&merchant), None, None).await;
    assert_eq!(trade["amount"]["amount"], 100, "{trade}");
    // A cancelled order that never arrived cannot be paid late: the till gave up on it.
    let cancelled = call(vec![("method", "alipay.trade.cancel".into()), ("biz_content", json!({"out_trade_no": "ghost"}).to_string())]).await;
    assert_eq!((cancelled["code"].as_str(), cancelled["action"].as_str()), (Some("10000"), Some("close")), "{cancelled}");
    let resident = api.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    let (_, device, _) = api.call("POST", "/v1/payment-devices", Some(&resident), None, None).await;
    let late = json!({"out_trade_no": "ghost", "scene": "bar_code", "auth_code": payment_code(&device), "subject": "tea", "total_amount": "1.00"});
    assert_eq!(sub(&call(vec![("method", "alipay.trade.pay".into()), ("biz_content", late.to_string())]).await).1, "ACQ.TRADE_HAS_CLOSE");
    // A disabled app is refused.
    let (status, _, _) = api.call("PATCH", &format!("/v1/gateway/apps/{app_id}"), Some(&merchant), None, Some(json!({"disabled": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sub(&call(vec![("method", "alipay.trade.query".into()), ("biz_content", json!({"out_trade_no": "p2"}).to_string())]).await).1, "isv.invalid-app-id");
    // Another merchant does not see the app.
    let (_, stranger) = api.merchant(&operator, "91110000600037341L", "restaurant", None).await;
    let (status, _, _) = api.call("PATCH", &format!("/v1/gateway/apps/{app_id}"), Some(&stranger), None, Some(json!({"disabled": false}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The platform key merchants configure.
    let pem = reqwest::get(format!("{base}/v1/gateway/public-key")).await.unwrap().text().await.unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    assert_eq!(pem, app["platform_public_key"]);
    // Notifications are not sent to private addresses, written in the URL or resolved from a
    // name, even when an operator registered such a URL.
    let (receiver, url) = Receiver::start();
    let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/notify").to_owned();
    let (_, literal) = api.merchant(&operator, &uscc("MA000001"), "restaurant", Some(&url)).await;
    let (_, named) = api.merchant(&operator, &uscc("MA000002"), "restaurant", Some(&format!("http://localhost:{port}/notify"))).await;
    for key in [&literal, &named] {
        let body = json!({"out_trade_no": "hook1", "amount": {"amount": 100, "currency": "CNY"}, "subject": "tea"});
        let (status, created, _) = api.call("POST", "/v1/trades", Some(key), None, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let logs = std::fs::read_to_string(&log).unwrap();
        if logs.matches("notifications go to public addresses").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no refused delivery logged:\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(receiver.forms.lock().unwrap().is_empty(), "a notification reached a private address");
    // An operator's `citypay gateway` commands on the running server.
    let shop_id = shop["merchant_id"].as_str().unwrap().to_owned();
    let key_file = dir.path().join("app.pub.pem");
    std::fs::write(&key_file, &app_public).unwrap();
    let gateway = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_citypay")).arg("gateway").args(args).env("CITYPAY_OPERATOR_PASSWORD", support::OPERATOR_PASSWORD).output().unwrap();
        assert!(output.status.success(), "gateway {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let registered = gateway(&["register", "--server", base, "--merchant", &shop_id, "--public-key", key_file.to_str().unwrap()]);
    assert!(registered.contains("-----BEGIN PUBLIC KEY-----"), "{registered}");
    let new_app = registered.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_owned();
    let disabled = gateway(&["update", "--server", base, "--merchant", &shop_id, "--app", &new_app, "--disable"]);
    assert!(disabled.contains("disabled"), "{disabled}");
    let listed = gateway(&["apps", "--server", base, "--merchant", &shop_id]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // A platform key added to a key file of its own (made on first use, then the next id).
    let keys = dir.path().join("gateway.keys");
    let added = Command::new(env!("CARGO_BIN_EXE_citypay")).args(["gateway", "add-key", "--keys"]).arg(&keys).output().unwrap();
    assert!(String::from_utf8_lossy(&added.stdout).contains("gateway key 2 added"), "{}", String::from_utf8_lossy(&added.stderr));
    assert_eq!(std::fs::read_to_string(&keys).unwrap().lines().filter(|l| l.starts_with("gateway.")).count(), 2);
    drop(server);
    target.assert_audit_clean();
}
